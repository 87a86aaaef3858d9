"""Shared pytest fixtures for the tests of ``fkp_helpers`` (any test module may use them).

Fixtures
--------
``_session_cache`` (session, automatic)
    Points ``$FKP_CACHE_DIR`` at a fresh temporary directory for the whole session, so no test
    reads or writes the user's cache (parsed arrays, the default synthetic set). Tests that need
    the default synthetic set share the one generated there (once per session).
``isolated_cache``
    A fresh, empty ``$FKP_CACHE_DIR`` for one test (monkeypatched); returns its path.
``synthetic_dir`` (session)
    A tiny synthetic set in Kaggle's format (40 training rows, 12 test images, seed 7), generated
    once per session and made read-only. Do not modify it; use ``synthetic_copy`` for that.
``synthetic_copy``
    A writable copy of ``synthetic_dir`` in the test's ``tmp_path``.
``synthetic_data``
    Sets ``$FKP_DATA_DIR`` to ``synthetic_dir`` for one test (monkeypatched); returns the path.
``standin_dir`` (session)
    The real-data directory ``$FKP_DATA_DIR`` (CI points it at the stand-in); skips the test when
    it is unset or is a synthetic set.
``kaggle_csv``
    Writers of Kaggle-format files in plain Python, independent of ``fkp_helpers.data`` (so
    parser tests do not check the parser against itself): ``kaggle_csv.training(images,
    keypoints)`` and ``kaggle_csv.test(images, image_ids)`` return the csv bytes;
    ``kaggle_csv.image(image)`` returns one ``Image`` field as text.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fkp_helpers import data, synthetic

SYNTHETIC_TINY = {"n_train": 40, "n_test": 12, "seed": 7}


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    old = os.environ.get("FKP_CACHE_DIR")
    os.environ["FKP_CACHE_DIR"] = str(tmp_path_factory.mktemp("fkp-cache"))
    yield Path(os.environ["FKP_CACHE_DIR"])
    if old is None:
        os.environ.pop("FKP_CACHE_DIR", None)
    else:
        os.environ["FKP_CACHE_DIR"] = old


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "fkp-cache"
    d.mkdir()
    monkeypatch.setenv("FKP_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synthetic") / "set"
    synthetic.generate(d, **SYNTHETIC_TINY)
    for p in d.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return d


@pytest.fixture
def synthetic_copy(tmp_path, synthetic_dir) -> Path:
    d = tmp_path / "synthetic-copy"
    shutil.copytree(synthetic_dir, d)
    for p in d.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    return d


@pytest.fixture
def synthetic_data(monkeypatch, synthetic_dir) -> Path:
    monkeypatch.setenv("FKP_DATA_DIR", str(synthetic_dir))
    return synthetic_dir


@pytest.fixture(scope="session")
def standin_dir() -> Path:
    env = os.environ.get("FKP_DATA_DIR")
    if not env:
        pytest.skip("FKP_DATA_DIR is not set (CI points it at the stand-in data)")
    d = Path(env).expanduser()
    if not d.is_dir():
        pytest.fail(f"FKP_DATA_DIR={env} is not a directory")
    if (d / synthetic.MARKER).exists():
        pytest.skip("FKP_DATA_DIR holds a synthetic set, not real data")
    return d


def _image_text(image) -> str:
    return " ".join(str(int(p)) for p in np.asarray(image).ravel())


def _training_bytes(images, keypoints, newline: str = "\n") -> bytes:
    lines = [",".join(data.TRAINING_COLUMNS)]
    for img, kp in zip(images, keypoints, strict=True):
        values = ["" if np.isnan(v) else repr(float(v)) for v in kp]
        lines.append(",".join([*values, _image_text(img)]))
    return (newline.join(lines) + newline).encode()


def _test_bytes(images, image_ids, newline: str = "\n") -> bytes:
    lines = ["ImageId,Image"]
    lines += [f"{int(i)},{_image_text(img)}" for i, img in zip(image_ids, images, strict=True)]
    return (newline.join(lines) + newline).encode()


@pytest.fixture
def kaggle_csv() -> SimpleNamespace:
    return SimpleNamespace(training=_training_bytes, test=_test_bytes, image=_image_text)
