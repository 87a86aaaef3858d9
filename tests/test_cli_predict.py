"""`fkp predict PHOTO --model model.keras --out annotated.png`: JSON, PNG, and clear errors."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fkp_helpers import cli, data, photo

FKP = Path(sys.executable).with_name("fkp")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny untrained network saved as model.keras: the geometry of the output does not need
    a good model."""
    from fkp_helpers import models

    path = tmp_path_factory.mktemp("model") / "model.keras"
    models.keypoint_resnet((8, 8, 8, 8)).save(path)
    return path


@pytest.fixture(scope="module")
def portrait_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "portrait.png"
    Image.fromarray(photo.sample_portrait()).save(path)
    return path


def _predict(capsys, *args):
    rc = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _check_faces(faces, width, height, n=1):
    assert isinstance(faces, list) and len(faces) == n
    for face in faces:
        assert set(face) == {"box", "keypoints"}
        x, y, w, h = face["box"]
        assert all(isinstance(v, int) for v in face["box"])
        assert 0 <= x < width and 0 <= y < height and w > 0 and h > 0
        assert list(face["keypoints"]) == list(data.KEYPOINT_NAMES)
        pts = np.array(list(face["keypoints"].values()), float)
        assert pts.shape == (15, 2) and np.isfinite(pts).all()
        # Whatever the model says, its points lie in the square cut around the face.
        assert (pts[:, 0] > x - w).all() and (pts[:, 0] < x + 2 * w).all()
        assert (pts[:, 1] > y - h).all() and (pts[:, 1] < y + 2 * h).all()


def test_predict_prints_json_and_writes_the_annotated_png(
    capsys, tmp_path, model_path, portrait_png
):
    out = tmp_path / "annotated.png"
    rc, stdout, stderr = _predict(capsys, portrait_png, "--model", model_path, "--out", out)
    assert rc == 0, stderr
    _check_faces(json.loads(stdout), 512, 512)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (512, 512) and im.mode == "RGB"
        drawn = np.asarray(im)
    assert not np.array_equal(drawn, photo.sample_portrait())  # something was drawn


def test_grey_rgba_and_16bit_photos_work_too(capsys, tmp_path, model_path):
    rgb = photo.sample_portrait()
    grey = photo.to_gray(rgb)
    variants = {
        "grey.png": grey,
        "rgba.png": np.dstack([rgb, np.full(grey.shape, 255, np.uint8)]),
        "grey16.png": grey.astype(np.uint16) * 257,
        "photo.jpg": rgb,
    }
    for name, array in variants.items():
        Image.fromarray(array).save(tmp_path / name)
        rc, stdout, stderr = _predict(capsys, tmp_path / name, "--model", model_path)
        assert rc == 0, f"{name}: {stderr}"
        _check_faces(json.loads(stdout), 512, 512)


def test_two_faces_in_one_photo_are_listed_left_to_right(capsys, tmp_path, model_path):
    rgb = photo.sample_portrait()
    Image.fromarray(photo.collage([rgb, rgb[:, ::-1]], height=300)).save(tmp_path / "two.png")
    rc, stdout, _ = _predict(capsys, tmp_path / "two.png", "--model", model_path)
    assert rc == 0
    faces = json.loads(stdout)
    _check_faces(faces, 616, 300, n=2)
    assert faces[0]["box"][0] < faces[1]["box"][0]


def _bad_inputs(tmp_path, model_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    Image.fromarray(np.full((240, 320, 3), 180, np.uint8)).save(tmp_path / "wall.png")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    portrait = tmp_path / "p.png"
    Image.fromarray(photo.sample_portrait()).save(portrait)
    return {
        "missing photo": ([tmp_path / "nowhere.jpg", "--model", model_path], "no such file"),
        "not an image": ([tmp_path / "notes.jpg", "--model", model_path], "not an image file"),
        "no face": ([tmp_path / "wall.png", "--model", model_path], "no face found"),
        "tiny": ([tmp_path / "tiny.png", "--model", model_path], "12 x 10 pixels: too small"),
        "missing model": ([portrait, "--model", tmp_path / "none.keras"], "no such model file"),
        "broken model": ([portrait, "--model", tmp_path / "broken.keras"], "not a Keras model"),
    }


def test_bad_inputs_give_one_clear_line_and_exit_2(capsys, tmp_path, model_path):
    for what, (args, message) in _bad_inputs(tmp_path, model_path).items():
        rc, stdout, stderr = _predict(capsys, *args)
        assert rc == 2, what
        assert stderr.startswith("fkp: error:") and message in stderr, f"{what}: {stderr}"
        assert "Traceback" not in stderr and stdout == "", what


def test_the_console_script_in_a_fresh_process(tmp_path, model_path, portrait_png):
    """The installed `fkp` reloads model.keras on its own (custom layers registered on import)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "a.png"
    ok = subprocess.run(
        [str(FKP), "predict", str(portrait_png), "--model", str(model_path), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert ok.returncode == 0, ok.stderr
    _check_faces(json.loads(ok.stdout), 512, 512)
    assert out.stat().st_size > 0
    bad = subprocess.run(
        [str(FKP), "predict", str(tmp_path / "nowhere.jpg"), "--model", str(model_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no such file" in bad.stderr and "Traceback" not in bad.stderr
