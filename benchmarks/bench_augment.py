"""Augmentation throughput: augmented images per second on the training set, batch 64.

Prints ``name: value`` lines. Each path runs twice in the same process, with the recommended
:class:`~fkp_helpers.augment.AugmentConfig` and with every transform off, so the ratio isolates
the cost of augmenting:

* ``tf``: the ``tf.data`` pipeline of :func:`fkp_helpers.augment.augmented_dataset` (shuffle,
  batch, ``tf_augment`` in ``Dataset.map``, prefetch), one full pass per timing.
* ``numpy``: :func:`fkp_helpers.augment.augment_batch` over the same batches in a Python loop.

Data: ``$FKP_DATA_DIR``, else the stand-in at ``../shared/data/fkd-standin`` beside the repository,
else wherever the loaders look (``data/``, a Kaggle notebook's input), else the synthetic set; the
output names the data used. Each figure is the median of ``FKP_BENCH_REPEATS`` passes (default 3)
after one warm-up pass. Target: at least 3000 augmented images per second (wall clock).
``*_per_cpu_s`` divides by the process's CPU time instead: on a machine shared with other work
(see the load average printed) it says what the code costs, where the wall figure says what it
got.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fkp_helpers import augment, data  # noqa: E402

BATCH = 64
TARGET = 3000.0


def data_dir() -> str | None:
    if os.environ.get("FKP_DATA_DIR"):
        return os.environ["FKP_DATA_DIR"]
    standin = ROOT.parent / "shared" / "data" / "fkd-standin"
    return str(standin) if standin.is_dir() else None


def median_rates(run_pass, n_images: int, repeats: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process), medians over
    ``repeats`` passes after a warm-up pass. The CPU figure is what one free core would do and
    hardly moves when other processes share the machine; the wall figure does."""
    run_pass()  # warm-up: tracing, allocation, caches
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run_pass()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return n_images / statistics.median(wall), n_images / statistics.median(cpu)


def tf_pass(images, keypoints, config):
    ds = augment.augmented_dataset(images, keypoints, config, batch_size=BATCH, seed=0)

    def run():
        for _ in ds:
            pass

    return run


def numpy_pass(images, keypoints, config):
    rng = np.random.default_rng(0)
    augmenting = config != augment.AugmentConfig.none()

    def run():
        for i in range(0, len(images), BATCH):
            x = images[i : i + BATCH].astype(np.float32) / 255
            y = keypoints[i : i + BATCH]
            if augmenting:
                x, y = augment.augment_batch(x, y, config, rng)

    return run


def main() -> None:
    repeats = int(os.environ.get("FKP_BENCH_REPEATS", "3"))
    d = data_dir()
    train = data.load_training(d)
    images, keypoints = train.images, train.keypoints
    n = len(images)
    import tensorflow as tf

    print(f"augment_data_source: {train.source}")
    print(f"augment_images: {n}")
    print(f"augment_batch_size: {BATCH}")
    print(f"augment_cpu_threads: {os.cpu_count()}")
    print(f"augment_tensorflow: {tf.__version__}")
    print(f"augment_load_average_1min: {os.getloadavg()[0]:.2f}")
    on, off = augment.AugmentConfig(), augment.AugmentConfig.none()
    results = {}
    for path, make in (("tf", tf_pass), ("numpy", numpy_pass)):
        plain, plain_cpu = median_rates(make(images, keypoints, off), n, repeats)
        augmented, augmented_cpu = median_rates(make(images, keypoints, on), n, repeats)
        results[path] = augmented
        print(f"augment_{path}_none_images_per_s: {plain:.0f}")
        print(f"augment_{path}_augmented_images_per_s: {augmented:.0f}")
        print(f"augment_{path}_ratio: {augmented / plain:.3f}")
        print(f"augment_{path}_augmented_images_per_cpu_s: {augmented_cpu:.0f}")
    print(f"augment_load_average_1min_after: {os.getloadavg()[0]:.2f}")
    print(f"augment_target_images_per_s: {TARGET:.0f}")
    print(f"augment_tf_meets_target: {results['tf'] >= TARGET}")


if __name__ == "__main__":
    main()
