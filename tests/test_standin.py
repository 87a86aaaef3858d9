"""Real files (the stand-in in CI, or Kaggle's download): the loaders agree with pandas.

Runs when ``$FKP_DATA_DIR`` points at real data; skipped otherwise. Counts are taken from the
files themselves with pandas, independently of ``fkp_helpers.data``.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from fkp_helpers import data

pytestmark = pytest.mark.standin


@pytest.fixture(scope="module")
def loaded(standin_dir):
    standin = standin_dir
    train_path = data.find_file(data.TRAINING_NAMES, standin)
    test_path = data.find_file(data.TEST_NAMES, standin)
    return {
        "dir": standin,
        "train": data.load_training(standin),
        "test": data.load_test(standin),
        "lookup": data.load_lookup(standin),
        "train_df": _read(train_path, "training.csv"),
        "test_df": _read(test_path, "test.csv"),
    }


def _read(path, member):
    if path.name == data.COMPETITION_ZIP:
        with (
            zipfile.ZipFile(path) as z,
            zipfile.ZipFile(io.BytesIO(z.read(member.replace(".csv", ".zip")))) as zi,
        ):
            return pd.read_csv(zi.open(member))
    return pd.read_csv(path)


def test_row_and_per_column_counts_match_the_file(loaded):
    train, df = loaded["train"], loaded["train_df"]
    assert len(train) == len(df) and train.images.shape[1:] == (96, 96)
    ours = (~np.isnan(train.keypoints)).sum(axis=0)
    theirs = df[list(data.KEYPOINT_COLUMNS)].notna().sum().to_numpy()
    assert ours.tolist() == theirs.tolist()
    complete = int((~np.isnan(train.keypoints).any(axis=1)).sum())
    assert complete == int(df[list(data.KEYPOINT_COLUMNS)].notna().all(axis=1).sum())


def test_keypoint_values_match_the_file(loaded):
    expected = loaded["train_df"][list(data.KEYPOINT_COLUMNS)].to_numpy(np.float32)
    assert np.array_equal(loaded["train"].keypoints, expected, equal_nan=True)


def test_sampled_images_match_a_plain_parse(loaded):
    df, images = loaded["train_df"], loaded["train"].images
    rows = np.unique(np.r_[0, len(df) - 1, np.random.default_rng(0).integers(0, len(df), 12)])
    for r in rows:
        expected = np.array(df["Image"].iloc[r].split(), np.uint8).reshape(96, 96)
        assert np.array_equal(images[r], expected), f"training row {r + 1}"
    test_df, test = loaded["test_df"], loaded["test"]
    for r in (0, len(test_df) - 1):
        assert np.array_equal(
            test.images[r], np.array(test_df["Image"].iloc[r].split(), np.uint8).reshape(96, 96)
        )


def test_test_ids_match_the_file(loaded):
    assert loaded["test"].image_ids.tolist() == loaded["test_df"]["ImageId"].tolist()


def test_lookup_matches_the_file_and_asks_only_for_test_images(loaded):
    path = data.find_file((data.LOOKUP_NAME,), loaded["dir"])
    if path.name == data.COMPETITION_ZIP:
        pytest.skip("lookup inside the competition zip is covered by the unit tests")
    raw = pd.read_csv(path)
    lookup = loaded["lookup"]
    assert lookup["RowId"].tolist() == raw["RowId"].tolist()
    assert lookup["ImageId"].tolist() == raw["ImageId"].tolist()
    assert lookup["FeatureName"].tolist() == raw["FeatureName"].tolist()
    assert set(lookup["ImageId"]) <= set(loaded["test"].image_ids.tolist())
    sample = data.load_sample_submission(loaded["dir"])
    assert sample["RowId"].tolist() == raw["RowId"].tolist()


def test_source_is_named(loaded):
    assert loaded["train"].source in ("stand-in", "kaggle")
    assert loaded["train"].source == data.data_source(loaded["dir"])
