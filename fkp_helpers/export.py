"""The model outside Python: ONNX export for ONNX Runtime and the book's in-browser demo.

``fkp export --model RUN/model.keras --out DIR`` writes

* ``DIR/model.onnx``: the network in float32 (a model trained under ``mixed_bfloat16`` is rebuilt
  with float32 layers and the same weights first: its variables are float32 already, and the
  mixed-precision graph converts to an ONNX model that ONNX Runtime refuses);
* ``DIR/fkp-model.json``: what a runtime outside Python needs to use it the way ``fkp predict``
  does: the input (``(N, 96, 96, 1)`` float32, uint8 grey / 255), the keypoint names in Kaggle's
  order, how to undo a mirrored prediction, the crop geometry and the face detector's settings
  (from :mod:`fkp_helpers.photo`), the model's validation figures (from the ``metrics.json``
  beside the model, when there is one) and the figures measured here: file size, the largest
  difference from Keras on a batch (pixels) and the time per face in ONNX Runtime.

The conversion uses Keras 3's ``model.export(format="onnx")``, which goes through ``tf2onnx``;
``onnx`` and ``onnxruntime`` check and time the result. All three are imported only here.

The book's page "Try it in your browser" (``book/demo.md``) loads both files; its build step
(``book/_ext/fkp_demo.py``) calls :func:`export_reference`, which exports the book's own reference
run through the one hook :func:`reference_model_path`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fkp_helpers import data as fdata
from fkp_helpers import keypoints as K

MODEL_FILE = "model.onnx"
INFO_FILE = "fkp-model.json"
INFO_FORMAT = 1
INPUT_NAME = "image"
OUTPUT_NAME = "keypoints"
AGREEMENT_TOLERANCE_PX = 0.01
"""The exported model must agree with the Keras float32 model to this many pixels."""
EXPORT_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
"""What ``fkp export`` needs beyond TensorFlow (the ``export`` extra of pyproject.toml)."""

# ---------------------------------------------------------------------------------------------
# The book's reference model: the one place that knows where it comes from


def reference_model_path() -> Path:
    """``model.keras`` of the book's reference run (trained once, then reused; chapter 5).

    The only function here that knows how the book finds its reference run: adapt it if that
    changes. Honours ``$FKP_PROFILE`` and ``$FKP_DATA_DIR`` like the chapters do.
    """
    from fkp_helpers.experiments import reference_run

    return Path(reference_run()["run_dir"]) / "model.keras"


# ---------------------------------------------------------------------------------------------
# float32 rebuild and ONNX conversion


def _float32_config(obj):
    """A layer config with every dtype policy (``mixed_bfloat16``, ``float16``...) set to float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy"):
            return "float32"
        return {k: _float32_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    if obj in ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16"):
        return "float32"
    return obj


def float32_model(model):
    """The same network and weights with every layer computing in float32.

    Under mixed precision the variables are float32 already, so the weights carry over exactly;
    only the activations' dtype changes. A float32 model is returned rebuilt all the same.
    """
    import keras

    from fkp_helpers import models  # noqa: F401  (registers the custom layers)

    config = _float32_config(model.get_config())
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # layers without a dtype of their own
    try:
        rebuilt = keras.Model.from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(before)
    rebuilt.set_weights(model.get_weights())
    policies = {layer.dtype_policy.name for layer in rebuilt.layers}
    if policies != {"float32"}:  # pragma: no cover - a layer kind this function does not know
        raise ValueError(f"could not rebuild the model in float32: dtype policies {policies}")
    return rebuilt


def _rename_io(path: Path) -> None:
    """Name the graph's input ``image`` and its output ``keypoints`` (tf2onnx says Identity:0)."""
    import onnx

    m = onnx.load(str(path))
    renames = {m.graph.input[0].name: INPUT_NAME, m.graph.output[0].name: OUTPUT_NAME}
    for node in m.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    m.graph.input[0].name = renames[m.graph.input[0].name]
    m.graph.output[0].name = renames[m.graph.output[0].name]
    m.doc_string = "fkp keypoint model: (N, 96, 96, 1) float32 in [0, 1] -> (N, 30) pixels"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_onnx(model, path: str | os.PathLike) -> Path:
    """Write ``model`` (any precision) as a float32 ONNX file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f32 = float32_model(model)
    size = K.IMAGE_SIZE
    f32(np.zeros((1, size, size, 1), np.float32))  # Keras exports only a model that was called
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / MODEL_FILE
        f32.export(str(tmp_file), format="onnx", verbose=False)
        _rename_io(tmp_file)
        shutil.move(tmp_file, path)
    return path


def onnx_session(path: str | os.PathLike):
    """An ONNX Runtime CPU session for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_predict(session, faces: np.ndarray) -> np.ndarray:
    """Keypoints (float32 ``(N, 30)``, 96x96-frame pixels) for uint8 or [0, 1] faces
    ``(N, 96, 96)`` or ``(N, 96, 96, 1)``, as :func:`fkp_helpers.photo.predict_crops` feeds them."""
    x = np.asarray(faces)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0], np.float32)


def agreement(model, session, faces: np.ndarray) -> float:
    """Largest absolute difference (pixels) between Keras (float32 rebuild of ``model``) and the
    ONNX session on the same faces."""
    from fkp_helpers import photo

    keras_pts = photo.predict_crops(float32_model(model), faces)
    return float(np.max(np.abs(keras_pts - onnx_predict(session, faces))))


def ms_per_face(session, repeats: int = 50, warmup: int = 5) -> dict:
    """Median (and 90th percentile) milliseconds for one face in ONNX Runtime."""
    face = np.random.default_rng(0).integers(0, 256, (1, 96, 96), dtype=np.uint8)
    for _ in range(warmup):
        onnx_predict(session, face)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        onnx_predict(session, face)
        times.append(time.perf_counter() - t0)
    ms = 1000 * np.asarray(times)
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.quantile(ms, 0.9))}


def sample_faces(n: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 faces ``(n, 96, 96)`` for agreement checks: training faces of the data in force when
    they can be loaded, else smooth random images (the check needs inputs, not labels)."""
    try:
        images = fdata.load_training().images
        rng = np.random.default_rng(seed)
        return images[np.sort(rng.choice(len(images), min(n, len(images)), replace=False))]
    except Exception:  # no data at hand: any image will do
        import cv2

        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        return np.stack([cv2.resize(s, (96, 96), interpolation=cv2.INTER_CUBIC) for s in small])


# ---------------------------------------------------------------------------------------------
# What a runtime outside Python needs


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def model_info(metrics: dict | None = None) -> dict:
    """The JSON written beside ``model.onnx``: input, names, crop geometry, detector settings."""
    import cv2

    from fkp_helpers import photo, viz

    metrics = metrics or {}
    keep = (
        "val_rmse",
        "val_rmse_flip_average",
        "baseline_val_rmse",
        "test_rmse",
        "baseline_test_rmse",
        "val_rmse_per_keypoint",
        "profile",
        "n_train",
        "n_val",
        "epochs_run",
        "precision",
        "data_source",
    )
    size = K.IMAGE_SIZE
    return {
        "format": INFO_FORMAT,
        "model": MODEL_FILE,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, size, size, 1],
            "dtype": "float32",
            "pixels": "grey uint8 (ITU-R BT.601 luma) divided by 255",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [None, 2 * K.N_KEYPOINTS],
            "units": f"pixels of the {size}x{size} frame, pixel centres at integers, x then y",
        },
        "image_size": size,
        "keypoint_names": list(K.KEYPOINT_NAMES),
        "keypoint_sides": list(viz.KEYPOINT_SIDES),
        "side_colours": dict(viz.SIDE_COLOURS),
        "flip_permutation": [int(i) for i in K.FLIP_PERMUTATION],
        "flip_x_constant": float(K.FLIP_X_CONSTANT),
        "crop": {
            "frame_in_box": list(photo.FRAME_IN_BOX),
            "eyes_96": {k: list(v) for k, v in photo.EYES_96.items()},
            "warp_preshrink_below": 1 / 1.5,
        },
        "detector": {
            "opencv_python": cv2.__version__,
            "cascade": photo.CASCADE,
            "confirm_cascade": photo.CONFIRM_CASCADE,
            "scale_factor": photo.SCALE_FACTOR,
            "min_neighbors": photo.MIN_NEIGHBORS,
            "confirm_min_neighbors": photo.CONFIRM_MIN_NEIGHBORS,
            "confirm_iou": photo.CONFIRM_IOU,
            "min_face_fraction": photo.MIN_FACE_FRACTION,
            "min_face_px": photo.MIN_FACE_PX,
            "detect_max_side": photo.DETECT_MAX_SIDE,
            "pad_fraction": _default(photo.detect_faces, "pad_fraction"),
        },
        "predict": {
            "flip_average": _default(photo.predict_cli, "flip_average"),
            "refine": _default(photo.predict_cli, "refine"),
        },
        "validation": {k: metrics[k] for k in keep if k in metrics},
    }


def export(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    measure: bool = True,
    faces: np.ndarray | None = None,
) -> dict:
    """Export ``model_path`` (a ``model.keras``) to ``out_dir``: ``model.onnx`` and
    ``fkp-model.json``. With ``measure``, check the agreement with Keras on ``faces`` (default
    :func:`sample_faces`; raises ValueError beyond :data:`AGREEMENT_TOLERANCE_PX`) and time one
    face. Returns the JSON written."""
    from fkp_helpers import models
    from fkp_helpers.training import read_metrics

    model_path, out_dir = Path(model_path), Path(out_dir)
    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"fkp export needs {', '.join(missing)}: pip install 'fkp-helpers[export]' (the "
            "course's requirements.txt installs them)"
        )
    model = models.load_model(model_path)
    metrics = read_metrics(model_path)
    onnx_path = export_onnx(model, out_dir / MODEL_FILE)
    info = model_info(metrics)
    measured = {
        "onnx_bytes": onnx_path.stat().st_size,
        "source_dtype_policies": sorted({layer.dtype_policy.name for layer in model.layers}),
        "parameters": int(model.count_params()),
    }
    if measure:
        session = onnx_session(onnx_path)
        faces = sample_faces() if faces is None else faces
        diff = agreement(model, session, faces)
        if not diff <= AGREEMENT_TOLERANCE_PX:
            raise ValueError(
                f"the ONNX model differs from Keras by {diff:.4f} px on {len(faces)} faces "
                f"(more than {AGREEMENT_TOLERANCE_PX} px)"
            )
        from fkp_helpers import photo

        as_saved = photo.predict_crops(model, faces)
        measured.update(
            agreement_faces=len(faces),
            max_abs_diff_px=diff,
            max_abs_diff_vs_saved_model_px=float(
                np.max(np.abs(as_saved - onnx_predict(session, faces)))
            ),
            onnxruntime_ms_per_face=ms_per_face(session)["median_ms"],
        )
    info["measured"] = measured
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(Path(__file__).read_bytes())  # a change here re-exports
    return h.hexdigest()[:16]


def export_cached(model_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """:func:`export`, reused from ``<cache dir>/web/models/<digest>`` while the model file and
    this module are unchanged; copies ``model.onnx`` and ``fkp-model.json`` into ``out_dir``."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    cached = fdata.default_cache_dir() / "web" / "models" / _file_digest(model_path)
    if not (cached / INFO_FILE).is_file():
        tmp = cached.with_name(cached.name + f".partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        export(model_path, tmp)
        if cached.exists():
            shutil.rmtree(cached)
        os.replace(tmp, cached)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, INFO_FILE):
        shutil.copyfile(cached / name, out_dir / name)
    return json.loads((out_dir / INFO_FILE).read_text())


def export_reference(out_dir: str | os.PathLike) -> dict:
    """Export the book's reference model (:func:`reference_model_path`) into ``out_dir``."""
    return export_cached(reference_model_path(), out_dir)


def export_cli(model_path, out_dir) -> dict:
    """``fkp export --model RUN/model.keras --out DIR``: :func:`export`, with a one-line summary
    on stderr. Returns the JSON written."""
    info = export(model_path, out_dir)
    m = info["measured"]
    print(
        f"fkp export: {Path(out_dir) / MODEL_FILE} ({m['onnx_bytes'] / 1e6:.1f} MB), "
        f"max difference from Keras {m['max_abs_diff_px']:.2g} px on {m['agreement_faces']} "
        f"faces, {m['onnxruntime_ms_per_face']:.2f} ms per face in ONNX Runtime",
        file=sys.stderr,
    )
    return info


def main(argv: list[str] | None = None) -> int:
    """``python -m fkp_helpers.export --reference --out DIR`` (the book's build step) or
    ``--model PATH --out DIR``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="python -m fkp_helpers.export")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", action="store_true", help="the book's reference run")
    src.add_argument("--model", help="a model.keras")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    model = reference_model_path() if args.reference else Path(args.model)
    info = export_cached(model, args.out)
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    source = {"model_keras": str(Path(model).resolve()), "sha256": digest}
    print(json.dumps({"source": source, "measured": info["measured"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
