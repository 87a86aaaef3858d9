"""Data where the learner is: Kaggle's mounted competition input, and the Kaggle token in Colab.

A Kaggle notebook mounts the competition's files read-only and zipped under
``/kaggle/input/facial-keypoints-detection/``. ``$FKP_KAGGLE_INPUT`` points the loaders at a
temporary copy of a small synthetic set laid out the same way.
"""

from __future__ import annotations

import os
import stat
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fkp_helpers import data

KAGGLE_ENV = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR")


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(d.rglob("*"))
    }


@pytest.fixture
def kaggle_mount(tmp_path, synthetic_dir, monkeypatch) -> Path:
    """The synthetic set as Kaggle mounts the competition: two zips, two csv files, read-only."""
    mount = tmp_path / "kaggle" / "input" / "facial-keypoints-detection"
    mount.mkdir(parents=True)
    for name in ("training", "test"):
        with zipfile.ZipFile(mount / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.write(synthetic_dir / f"{name}.csv", f"{name}.csv")
    for name in ("IdLookupTable.csv", "SampleSubmission.csv"):
        (mount / name).write_bytes((synthetic_dir / name).read_bytes())
    for p in mount.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    mount.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH)
    # A Kaggle notebook: no FKP_DATA_DIR, a working directory without data/, and (on a machine
    # that has one) the repository's own data/ out of the way.
    monkeypatch.delenv("FKP_DATA_DIR", raising=False)
    monkeypatch.setenv("FKP_KAGGLE_INPUT", str(mount))
    work = tmp_path / "working"
    work.mkdir()
    monkeypatch.chdir(work)
    repo_data = (Path(data.__file__).resolve().parents[1] / "data").resolve()
    has = data._has_kaggle_files
    monkeypatch.setattr(
        data, "_has_kaggle_files", lambda d: Path(d).resolve() != repo_data and has(d)
    )
    yield mount
    mount.chmod(stat.S_IRWXU)


def test_data_dir_finds_kaggle_input(kaggle_mount):
    assert data.kaggle_input_dir() == kaggle_mount
    assert data.data_dir() == kaggle_mount
    assert data.data_source() == "kaggle"  # no synthetic marker: it is laid out as Kaggle's


def test_loaders_read_the_zips_in_place_and_write_nothing_there(
    kaggle_mount, synthetic_dir, isolated_cache
):
    before = _snapshot(kaggle_mount)
    train = data.load_training()
    assert train.path == kaggle_mount / "training.zip"
    ref = data.load_training(synthetic_dir, cache=False)
    np.testing.assert_array_equal(train.images, ref.images)
    np.testing.assert_array_equal(train.keypoints, ref.keypoints)
    test = data.load_test()
    assert len(test) == len(data.load_test(synthetic_dir, cache=False))
    assert len(data.load_lookup()) > 0 and len(data.load_sample_submission()) > 0
    # the parsed arrays went to the cache (a second load reads them), not into the input
    assert list((isolated_cache / "parsed").glob("training-*.npz"))
    assert data.load_training().images.shape == ref.images.shape
    assert _snapshot(kaggle_mount) == before
    assert not list(Path.cwd().iterdir())  # nor into the working directory


def test_order_argument_env_local_then_kaggle(kaggle_mount, synthetic_dir, monkeypatch):
    assert data.data_dir(synthetic_dir) == synthetic_dir  # the argument first
    monkeypatch.setenv("FKP_DATA_DIR", str(synthetic_dir))
    assert data.data_dir() == synthetic_dir  # then $FKP_DATA_DIR
    monkeypatch.delenv("FKP_DATA_DIR")
    local = Path("data")
    local.mkdir()
    (local / "training.csv").write_bytes((synthetic_dir / "training.csv").read_bytes())
    assert data.data_dir() == local  # then ./data
    (local / "training.csv").unlink()
    assert data.data_dir() == kaggle_mount  # then Kaggle's input


def test_no_kaggle_input_falls_through(tmp_path, monkeypatch):
    monkeypatch.delenv("FKP_KAGGLE_INPUT", raising=False)
    monkeypatch.setattr(data, "KAGGLE_INPUT", tmp_path / "absent")
    assert data.kaggle_input_dir() is None
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FKP_KAGGLE_INPUT", str(empty))
    with pytest.raises(data.FKPDataError, match="FKP_KAGGLE_INPUT"):
        data.kaggle_input_dir()


def test_download_in_a_kaggle_notebook_downloads_nothing(kaggle_mount, capsys):
    before = _snapshot(kaggle_mount)
    assert data.download() == 0
    assert "nothing to download" in capsys.readouterr().out
    assert _snapshot(kaggle_mount) == before
    assert not Path("data").exists()


def test_default_cache_dir_is_writable(monkeypatch, tmp_path):
    monkeypatch.delenv("FKP_CACHE_DIR", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "fkp"
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # a read-only home
    assert data.default_cache_dir().parent == Path(data.tempfile.gettempdir())


# ---------------------------------------------------------------------------------------------
# The Kaggle token: the message when it is missing names both of Colab's routes


@pytest.fixture
def no_token(tmp_path, monkeypatch):
    for k in KAGGLE_ENV:  # set, then removed: whatever a test sets is undone afterwards
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.delenv("FKP_DATA_DIR", raising=False)
    monkeypatch.delenv("FKP_KAGGLE_INPUT", raising=False)
    monkeypatch.setattr(data, "KAGGLE_INPUT", tmp_path / "absent")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_token_message_names_both_routes(no_token, capsys):
    assert data.download(no_token / "d") == 1
    out = capsys.readouterr().out
    assert "no Kaggle API token was found" in out
    # Colab's secrets, read with google.colab.userdata ...
    assert "KAGGLE_USERNAME" in out and "KAGGLE_KEY" in out
    assert "secrets" in out and "google.colab.userdata" in out
    # ... or kaggle.json uploaded to ~/.kaggle/
    assert "upload" in out and "~/.kaggle/" in out and "kaggle.json" in out
    assert not (no_token / "d").exists()


def test_colab_secrets_are_read(no_token, monkeypatch, capsys):
    secrets = {"KAGGLE_USERNAME": "learner", "KAGGLE_KEY": "0123"}
    userdata = types.ModuleType("google.colab.userdata")
    userdata.get = secrets.__getitem__
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    google = types.ModuleType("google")
    google.__path__ = []
    google.colab = colab
    for name, mod in (("google", google), ("google.colab", colab)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: name != "kaggle" or None)
    assert data._colab_secrets() == "Colab secrets KAGGLE_USERNAME/KAGGLE_KEY"
    assert os.environ["KAGGLE_USERNAME"] == "learner" and os.environ["KAGGLE_KEY"] == "0123"
    # The token is there, the kaggle package is not: the message names only what is missing.
    monkeypatch.delenv("KAGGLE_USERNAME")
    assert data.download(no_token / "d") == 1
    out = capsys.readouterr().out
    assert "`kaggle` package is not installed" in out and "token was found" not in out
