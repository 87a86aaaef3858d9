"""Loading Kaggle's training.zip three ways: speed and peak memory (run by `make bench`).

1. baseline: what tutorials do, ``pd.read_csv`` then ``np.fromstring(x, sep=" ")`` per row;
2. cold: ``fkp_helpers.data.load_training(cache=False)``: read and parse, no cache;
3. cached: ``load_training()`` once the parsed arrays are in the ``.npz`` cache.

Data: ``$FKP_DATA_DIR``, else the stand-in beside the repository (``../shared/data/fkd-standin``),
else a synthetic set of 2000 rows generated for the run. Each measurement runs in a fresh
subprocess, so a way's peak memory is its own: the growth of the process's peak resident memory
over its resident memory after the imports (``ru_maxrss``), and, in a separate run because tracing
slows Python code, the peak of ``tracemalloc``. Ratios are to the decoded arrays' size (images
uint8 + keypoints float32). Times are the best of ``--repeat`` runs (default 1). The cache lives
in a temporary directory, never the user's.

Prints one ``name: value`` line per figure. ``--check`` exits 1 when a target is missed: cold at
least 3x faster than the baseline, cached at least 50x, cold peak memory under 3x the arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "../shared/data/fkd-standin"


def _way(name: str, path: Path):
    import numpy as np

    from fkp_helpers import data

    if name == "baseline":
        import warnings

        import pandas as pd

        warnings.simplefilter("ignore", DeprecationWarning)
        df = pd.read_csv(path)
        df["Image"] = df["Image"].apply(lambda im: np.fromstring(im, sep=" "))
        images = np.vstack(df["Image"].values).reshape(-1, 96, 96)
        keypoints = df[list(data.KEYPOINT_COLUMNS)].to_numpy()
        return images, keypoints
    train = data.load_training(path.parent, cache=name != "cold")
    return train.images, train.keypoints


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(way: str, path: Path, mode: str) -> None:
    """Run one way once in this process; print a JSON line with its figures."""
    import numpy as np  # noqa: F401  (imports are not part of the measurement)
    import pandas as pd  # noqa: F401

    from fkp_helpers import data  # noqa: F401

    if mode == "trace":
        import tracemalloc

        tracemalloc.start()
        images, keypoints = _way(way, path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps({"peak_traced": peak, "rows": len(images)}))
        return
    before = _rss_bytes()
    t0 = time.perf_counter()
    images, keypoints = _way(way, path)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss": max(0, _maxrss_bytes() - before),
                "rows": len(images),
                "decoded": len(images) * (96 * 96 + 30 * 4),
            }
        )
    )


def _run_child(way: str, path: Path, mode: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", way, str(path), mode],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"bench_load: {way} ({mode}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _find_data(tmp: Path) -> tuple[Path, str]:
    """The training file to measure (training.zip or .csv) and what it is."""
    from fkp_helpers import data, synthetic

    env = os.environ.get("FKP_DATA_DIR")
    if env and not Path(env).is_dir():  # never fall back silently from a folder that was named
        raise SystemExit(f"bench_load: FKP_DATA_DIR={env} is not a folder")
    for d in [Path(env)] if env else [STANDIN]:
        if d.is_dir():
            src = data.find_file(data.TRAINING_NAMES, d)
            if src.name == data.COMPETITION_ZIP:  # pandas cannot read a zip in a zip
                with zipfile.ZipFile(src) as z:
                    z.extract("training.zip", tmp / "data")
                src = tmp / "data" / "training.zip"
            return src.resolve(), data.data_source(d)
    syn = synthetic.generate(tmp / "synthetic", n_train=2000, n_test=1)
    with zipfile.ZipFile(tmp / "synthetic" / "training.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(syn / "training.csv", "training.csv")
    (syn / "training.csv").unlink()
    return (syn / "training.zip").resolve(), "synthetic (no stand-in found)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=1, help="best of N runs per way (default 1)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--child", nargs=3, metavar=("WAY", "PATH", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.child[2])
        return 0

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        tmp = Path(tmp)
        path, source = _find_data(tmp)
        env = {**os.environ, "FKP_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(REPO)}
        path.read_bytes()  # the file in the OS cache for every way alike
        results = {}
        for way in ("baseline", "cold", "cached"):
            if way == "cached":
                _run_child("cached", path, "time", env)  # writes the cache
            runs = [_run_child(way, path, "time", env) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_rss"] = max(r["peak_rss"] for r in runs)
            best.update(_run_child(way, path, "trace", env))
            results[way] = best

    rows = results["cold"]["rows"]
    decoded = results["cold"]["decoded"]
    mb = 1e6
    lines = {
        "load_data": f"{path.name} ({source}, {rows} rows)",
        "load_decoded_mb": f"{decoded / mb:.1f}",
        "load_baseline_fromstring_s": f"{results['baseline']['seconds']:.3f}",
        "load_cold_parse_s": f"{results['cold']['seconds']:.3f}",
        "load_cached_s": f"{results['cached']['seconds']:.4f}",
    }
    cold_x = results["baseline"]["seconds"] / results["cold"]["seconds"]
    cached_x = results["baseline"]["seconds"] / results["cached"]["seconds"]
    lines["load_cold_speedup_x"] = f"{cold_x:.1f}"
    lines["load_cached_speedup_x"] = f"{cached_x:.0f}"
    for way in ("baseline", "cold", "cached"):
        for kind in ("rss", "traced"):
            peak = results[way][f"peak_{kind}"]
            lines[f"load_{way}_peak_{kind}_mb"] = f"{peak / mb:.1f}"
            lines[f"load_{way}_peak_{kind}_ratio"] = f"{peak / decoded:.2f}"
    cold_peak = max(results["cold"]["peak_rss"], results["cold"]["peak_traced"]) / decoded
    met = cold_x >= 3 and cached_x >= 50 and cold_peak < 3
    lines["load_targets_met"] = "yes" if met else "no (cold >= 3x, cached >= 50x, peak < 3x)"
    for name, value in lines.items():
        print(f"{name}: {value}")
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
