"""`fkp export`: the network as a float32 ONNX file that agrees with Keras, and its JSON."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json

import keras
import numpy as np
import pytest

from fkp_helpers import cli, export, models, photo, seeding
from fkp_helpers import keypoints as K

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


def _faces(n: int = 8) -> np.ndarray:
    """Smooth uint8 images (a network's output on them varies by several pixels)."""
    import cv2

    small = seeding.rng(3).integers(0, 256, (n, 12, 12), dtype=np.uint8)
    return np.stack([cv2.resize(s, (96, 96), interpolation=cv2.INTER_CUBIC) for s in small])


def _perturb_batchnorm(net: keras.Model) -> None:
    """Non-trivial moving statistics, as a trained network has (a fresh one has mean 0, var 1)."""
    rng = seeding.rng(1)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    gamma * rng.uniform(0.5, 1.5, gamma.shape),
                    beta + rng.normal(0, 0.1, beta.shape),
                    mean + rng.normal(0, 0.1, mean.shape),
                    var * rng.uniform(0.5, 2.0, var.shape),
                ]
            )


@pytest.fixture(scope="module")
def mixed_model_path(tmp_path_factory):
    """A small residual network built under mixed_bfloat16 (as training builds it on a bf16
    CPU), saved as model.keras, with a metrics.json beside it."""
    seeding.seed_everything(0)
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = models.keypoint_resnet((8, 16, 16, 32))
    finally:
        keras.mixed_precision.set_global_policy(before)
    _perturb_batchnorm(net)
    d = tmp_path_factory.mktemp("run")
    net.save(d / "model.keras")
    (d / "metrics.json").write_text(json.dumps({"val_rmse": 1.5, "profile": "quick", "x": 1}))
    return d / "model.keras"


@pytest.fixture(scope="module")
def exported(mixed_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    info = export.export(mixed_model_path, out, faces=_faces())
    return out, info


def test_float32_rebuild_keeps_the_weights(mixed_model_path):
    net = models.load_model(mixed_model_path)
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in net.layers}
    f32 = export.float32_model(net)
    assert {layer.dtype_policy.name for layer in f32.layers} == {"float32"}
    for a, b in zip(net.get_weights(), f32.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    faces = _faces()
    p32 = photo.predict_crops(f32, faces)
    p16 = photo.predict_crops(net, faces)
    # the same network: bfloat16 activations cost a fraction of a pixel, not more
    assert np.abs(p32 - p16).max() < 1.0
    assert np.abs(p32 - p16).max() > 0  # and the rebuild really computes in float32


def test_onnx_agrees_with_keras_within_a_hundredth_of_a_pixel(mixed_model_path, exported):
    out, info = exported
    session = export.onnx_session(out / export.MODEL_FILE)
    assert session.get_inputs()[0].name == export.INPUT_NAME
    assert session.get_outputs()[0].name == export.OUTPUT_NAME
    faces = _faces(16)
    keras_pts = photo.predict_crops(
        export.float32_model(models.load_model(mixed_model_path)), faces
    )
    onnx_pts = export.onnx_predict(session, faces)
    assert onnx_pts.shape == (16, 2 * K.N_KEYPOINTS)
    assert np.abs(keras_pts - onnx_pts).max() <= export.AGREEMENT_TOLERANCE_PX
    # the points are real predictions (spread over the frame), not a constant
    assert onnx_pts.std(axis=0).max() > 0.05
    assert info["measured"]["max_abs_diff_px"] <= export.AGREEMENT_TOLERANCE_PX
    assert info["measured"]["onnx_bytes"] == (out / export.MODEL_FILE).stat().st_size
    assert info["measured"]["onnxruntime_ms_per_face"] > 0


def test_onnx_takes_uint8_and_unit_floats_alike(exported):
    out, _ = exported
    session = export.onnx_session(out / export.MODEL_FILE)
    faces = _faces(4)
    a = export.onnx_predict(session, faces)
    b = export.onnx_predict(session, faces.astype(np.float32)[..., None] / 255.0)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_json_carries_the_pipeline_constants(exported):
    out, info = exported
    on_disk = json.loads((out / export.INFO_FILE).read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert on_disk["keypoint_names"] == list(K.KEYPOINT_NAMES)
    assert on_disk["flip_x_constant"] == K.FLIP_X_CONSTANT == 95
    # the permutation swaps left and right names, and applying it twice is the identity
    perm = on_disk["flip_permutation"]
    names = on_disk["keypoint_names"]
    assert [perm[p] for p in perm] == list(range(K.N_KEYPOINTS))
    assert names[perm[names.index("left_eye_center")]] == "right_eye_center"
    assert on_disk["crop"]["frame_in_box"] == list(photo.FRAME_IN_BOX)
    d = on_disk["detector"]
    assert (d["cascade"], d["confirm_cascade"]) == (photo.CASCADE, photo.CONFIRM_CASCADE)
    assert d["min_neighbors"] == photo.MIN_NEIGHBORS
    assert d["confirm_min_neighbors"] == photo.CONFIRM_MIN_NEIGHBORS
    assert d["detect_max_side"] == photo.DETECT_MAX_SIDE
    assert on_disk["predict"] == {"flip_average": True, "refine": True}
    # validation figures come from the run's metrics.json; unknown keys stay out
    assert on_disk["validation"] == {"val_rmse": 1.5, "profile": "quick"}


def test_missing_or_foreign_files_are_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        export.export(tmp_path / "nope.keras", tmp_path / "out")
    bad = tmp_path / "model.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a Keras model"):
        export.export(bad, tmp_path / "out")
    rc = cli.main(["export", "--model", str(tmp_path / "nope.keras"), "--out", str(tmp_path)])
    assert rc == 2
    assert "no such model file" in capsys.readouterr().err


def test_export_without_its_packages_says_which_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_PACKAGES", ("onnx", "fkp_no_such_package"))
    rc = cli.main(["export", "--model", str(tmp_path / "model.keras"), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fkp export needs fkp_no_such_package: pip install 'fkp-helpers[export]'" in err


def test_export_cached_reuses_an_unchanged_model(mixed_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FKP_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = export.export

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, measure=False)

    monkeypatch.setattr(export, "export", counting)
    first = export.export_cached(mixed_model_path, tmp_path / "a")
    second = export.export_cached(mixed_model_path, tmp_path / "b")
    assert len(calls) == 1
    assert first == second
    a = (tmp_path / "a" / export.MODEL_FILE).read_bytes()
    assert a == (tmp_path / "b" / export.MODEL_FILE).read_bytes()
