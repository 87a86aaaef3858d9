"""Training and inference speed of the course's models, as `name: value` lines.

Training images per second for the residual heatmap network (bfloat16 where the CPU has it, and
float32) and for the classic baseline CNN, measured in one run on the data in force (the
stand-in beside the repository when present); inference faces per second at batch 1 and 64.
Every ratio compares two measurements of the same run (machines here are noisy): the residual
network against the baseline CNN, mixed precision against float32, batch 64 against batch 1.

The full profile is a wall-time budget (``experiments.PROFILES["full"].minutes``): from the
measured training speed this prints how many epochs fit it here. ``FKP_BENCH_FULL=1`` also runs
the full profile itself (minutes) and prints its wall time, epochs and validation RMSE.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO.parent / "shared" / "data" / "fkd-standin"
if "FKP_DATA_DIR" not in os.environ and STANDIN.is_dir():
    os.environ["FKP_DATA_DIR"] = str(STANDIN)

from fkp_helpers import augment, data, experiments, training  # noqa: E402
from fkp_helpers import precision as precision_policy  # noqa: E402

STEPS = int(os.environ.get("FKP_BENCH_STEPS", "30"))


def train_speed(kind: str, precision: str, images, keypoints) -> float:
    precision_policy.set_global_precision_policy(precision, verbose=False)
    prof = experiments.PROFILES["full"]
    net = training.compile_model(training.build_model(kind, prof), 1e-3)
    ds = augment.augmented_dataset(
        images,
        keypoints,
        training.training_augment_config(),
        batch_size=prof.batch_size,
        repeat=True,
        drop_remainder=True,
    )
    net.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)  # warm-up: graph tracing
    t = time.perf_counter()
    net.fit(ds, steps_per_epoch=STEPS, epochs=1, verbose=0)
    return STEPS * prof.batch_size / (time.perf_counter() - t)


def inference_speed(net, images, batch: int, n: int) -> float:
    x = images[:batch].astype(np.float32)[..., None] / 255.0
    f = net.predict_on_batch if hasattr(net, "predict_on_batch") else net.predict
    f(x)
    t = time.perf_counter()
    for _ in range(n):
        f(x)
    return n * batch / (time.perf_counter() - t)


def main() -> int:
    tr = data.load_training()
    print(f"bench_train_data: {tr.source} ({len(tr)} faces)")
    policy, reason = precision_policy.resolve_precision("auto")
    print(f"bench_train_auto_precision: {policy} ({reason})")
    base = train_speed("baseline", "float32", tr.images, tr.keypoints)
    print(f"train_images_per_s_baseline_cnn_float32: {base:.1f}")
    f32 = train_speed("resnet", "float32", tr.images, tr.keypoints)
    print(f"train_images_per_s_resnet_float32: {f32:.1f}")
    auto = train_speed("resnet", "auto", tr.images, tr.keypoints)
    print(f"train_images_per_s_resnet_auto_precision: {auto:.1f}")
    print(f"ratio_resnet_auto_to_float32: {auto / f32:.2f}")
    print(f"ratio_resnet_auto_to_baseline_cnn: {auto / base:.2f}")
    precision_policy.set_global_precision_policy("auto", verbose=False)
    net = training.build_model("resnet", experiments.PROFILES["full"])
    b1 = inference_speed(net, tr.images, 1, 50)
    b64 = inference_speed(net, tr.images, 64, 10)
    print(f"inference_faces_per_s_batch1: {b1:.1f}")
    print(f"inference_ms_per_face_batch1: {1000 / b1:.2f}")
    print(f"inference_faces_per_s_batch64: {b64:.1f}")
    print(f"ratio_inference_batch64_to_batch1: {b64 / b1:.2f}")
    full_profile(tr, auto)
    return 0


def full_profile(tr, images_per_s: float) -> None:
    """The full profile's budget at the measured speed, and (``FKP_BENCH_FULL=1``) the run."""
    prof = experiments.PROFILES["full"]
    n_train = len(experiments.course_split(tr)[0])
    epoch_s = n_train / images_per_s
    print(f"full_profile_budget_minutes: {prof.minutes:g}")
    print(f"full_profile_seconds_per_epoch_at_measured_speed: {epoch_s:.1f}")
    # an upper bound: validation, data loading and the saved model take part of the budget too
    fitting = min(prof.epochs, int(60 * prof.minutes // epoch_s))
    print(f"full_profile_epochs_fitting_the_budget_at_most: {fitting} (the cap: {prof.epochs})")
    if os.environ.get("FKP_BENCH_FULL") != "1":
        return
    with tempfile.TemporaryDirectory() as out:
        m = experiments.train_cli(profile="full", out=out, verbose=0, started=time.time())
    print(f"full_profile_wall_seconds: {m['wall_seconds']:.0f}")
    print(f"full_profile_epochs_run: {m['epochs_run']} (planned {m['planned_epochs']})")
    print(f"full_profile_train_images_per_s: {m['train_images_per_second']:.1f}")
    print(f"full_profile_val_rmse_flip_average_px: {m['val_rmse_flip_average']:.3f}")
    print(f"full_profile_peak_rss_mb: {m['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    sys.exit(main())
