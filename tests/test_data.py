"""fkp_helpers.data: parsing Kaggle's files, validation, the cache, submissions, downloading."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fkp_helpers import data, synthetic

N_ROWS = 4


def _faces(n=N_ROWS, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 96, 96), dtype=np.uint8)
    keypoints = rng.uniform(0, 95.9, (n, 30)).astype(np.float32)
    keypoints[1:, 4:20] = np.nan  # rows 2.. carry only some keypoints, in x/y pairs
    return images, keypoints


def _lines(kaggle_csv, n=N_ROWS):
    images, keypoints = _faces(n)
    return kaggle_csv.training(images, keypoints).decode().splitlines()


def _write(directory: Path, name: str, lines_or_bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(lines_or_bytes, bytes):
        path.write_bytes(lines_or_bytes)
    else:
        path.write_text("\n".join(lines_or_bytes) + "\n")
    return path


def _zip(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, payload)
    return path


def _set_field(line: str, column: str, value: str) -> str:
    fields = line.split(",")
    fields[data.TRAINING_COLUMNS.index(column)] = value
    return ",".join(fields)


def _load_training_error(tmp_path, lines) -> str:
    _write(tmp_path / "d", "training.csv", lines)
    with pytest.raises(data.FKPDataError) as e:
        data.load_training(tmp_path / "d", cache=False)
    assert isinstance(e.value, ValueError)
    return str(e.value)


# ---------------------------------------------------------------------------------------------
# Constants


def test_flip_permutation_swaps_left_and_right_names_and_is_its_own_inverse():
    perm = data.FLIP_PERMUTATION
    assert np.array_equal(perm[perm], np.arange(data.N_KEYPOINTS))
    for k, name in enumerate(data.KEYPOINT_NAMES):
        twin = data.KEYPOINT_NAMES[perm[k]]
        assert twin == name.replace("left", "@").replace("right", "left").replace("@", "right")


def test_columns_are_kaggles_thirty_in_x_y_pairs_and_core_indices_name_the_core_points():
    assert len(data.KEYPOINT_COLUMNS) == 30
    assert data.KEYPOINT_COLUMNS[:3] == (
        "left_eye_center_x",
        "left_eye_center_y",
        "right_eye_center_x",
    )
    assert [data.KEYPOINT_NAMES[i] for i in data.CORE_INDICES] == list(data.CORE_KEYPOINTS)


# ---------------------------------------------------------------------------------------------
# Parsing: round trips


pixel_pools = st.one_of(
    st.none(),  # fully random images
    st.lists(st.integers(0, 255), min_size=1, max_size=6),  # few values: 1-, 2-, 3-digit runs
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    pool=pixel_pools,
    keypoints=hnp.arrays(np.float32, (4, 30), elements=st.floats(0, 95.5, width=32)),
    missing=hnp.arrays(bool, (4, 15)),
    chunk=st.sampled_from([4096, 50_000, 1 << 21]),
)
def test_training_csv_round_trips_exactly(
    kaggle_csv, monkeypatch, n, seed, pool, keypoints, missing, chunk
):
    rng = np.random.default_rng(seed)
    if pool is None:
        images = rng.integers(0, 256, (n, 96, 96), dtype=np.uint8)
    else:
        images = rng.choice(np.array(pool, np.uint8), (n, 96, 96))
    kp = keypoints[:n].copy()
    kp[np.repeat(missing[:n], 2, axis=1)] = np.nan
    monkeypatch.setattr(data, "_CHUNK_BYTES", chunk)
    got_images, got_kp = data.parse_training_bytes(kaggle_csv.training(images, kp), "training.csv")
    assert got_images.dtype == np.uint8 and got_images.shape == (n, 96, 96)
    assert np.array_equal(got_images, images)
    assert got_kp.dtype == np.float32
    assert np.array_equal(got_kp, kp, equal_nan=True)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), first_id=st.integers(1, 10**6))
def test_test_csv_round_trips_images_and_ids(kaggle_csv, n, seed, first_id):
    images = np.random.default_rng(seed).integers(0, 256, (n, 96, 96), dtype=np.uint8)
    ids = np.arange(first_id, first_id + n)[::-1]
    got_images, got_ids = data.parse_test_bytes(kaggle_csv.test(images, ids), "test.csv")
    assert np.array_equal(got_images, images)
    assert np.array_equal(got_ids, ids) and got_ids.dtype == np.int64


@pytest.mark.parametrize(
    "variant",
    [
        "crlf",
        "quoted",
        "double_spaces",
        "tabs",
        "trailing_spaces",
        "no_final_newline",
        "bom",
        "blank_end",
    ],
)
def test_harmless_layout_variations_parse_to_the_same_arrays(kaggle_csv, variant):
    images, keypoints = _faces()
    text = kaggle_csv.training(images, keypoints).decode()
    if variant == "crlf":
        text = text.replace("\n", "\r\n")
    elif variant == "quoted":
        lines = text.splitlines()
        text = (
            "\n".join(
                [lines[0]]
                + [ln.rsplit(",", 1)[0] + ',"' + ln.rsplit(",", 1)[1] + '"' for ln in lines[1:]]
            )
            + "\n"
        )
    elif variant == "double_spaces":
        text = text.replace(" ", "  ")
    elif variant == "tabs":
        text = text.replace(" ", "\t")
    elif variant == "trailing_spaces":
        text = text.replace("\n", "  \n")
    elif variant == "no_final_newline":
        text = text.rstrip("\n")
    elif variant == "bom":
        text = "\ufeff" + text
    elif variant == "blank_end":
        text += "\n\n"
    got_images, got_kp = data.parse_training_bytes(text.encode("utf-8"), "training.csv")
    assert np.array_equal(got_images, images)
    assert np.array_equal(got_kp, keypoints, equal_nan=True)


def test_parse_pixels_agrees_with_numpy_fromstring():
    rng = np.random.default_rng(3)
    fields = [" ".join(map(str, rng.integers(0, 256, 9216))).encode() for _ in range(3)]
    expected = np.stack([np.array(f.split(), np.uint8) for f in fields]).reshape(3, 96, 96)
    assert np.array_equal(data.parse_pixels(fields, "x.csv"), expected)


def test_columns_in_another_order_are_read_by_name(kaggle_csv):
    images, keypoints = _faces()
    df = pd.read_csv(
        io.BytesIO(kaggle_csv.training(images, keypoints)), dtype=str, keep_default_na=False
    )
    shuffled = df[["Image", *reversed(data.KEYPOINT_COLUMNS)]]
    got_images, got_kp = data.parse_training_bytes(
        shuffled.to_csv(index=False).encode(), "training.csv"
    )
    assert np.array_equal(got_images, images)
    assert np.array_equal(got_kp, keypoints, equal_nan=True)


def test_every_row_is_kept_even_one_without_any_keypoint(kaggle_csv):
    images, keypoints = _faces()
    keypoints[2] = np.nan
    got_images, got_kp = data.parse_training_bytes(kaggle_csv.training(images, keypoints), "t.csv")
    assert len(got_images) == len(got_kp) == N_ROWS
    assert np.isnan(got_kp[2]).all()


# ---------------------------------------------------------------------------------------------
# Containers: csv, zip, Kaggle's competition zip


def test_csv_zip_and_competition_zip_load_the_same_arrays(tmp_path, synthetic_dir):
    plain = data.load_training(synthetic_dir, cache=False)
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    _zip(zipped / "training.zip", "training.csv", (synthetic_dir / "training.csv").read_bytes())
    outer = tmp_path / "outer"
    outer.mkdir()
    with zipfile.ZipFile(outer / data.COMPETITION_ZIP, "w") as z:
        for name in ("training", "test"):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zi:
                zi.write(synthetic_dir / f"{name}.csv", f"{name}.csv")
            z.writestr(f"{name}.zip", buf.getvalue())
        for name in (data.LOOKUP_NAME, data.SAMPLE_SUBMISSION_NAME):
            z.write(synthetic_dir / name, name)
    for d in (zipped, outer):
        got = data.load_training(d, cache=False)
        assert np.array_equal(got.images, plain.images)
        assert np.array_equal(got.keypoints, plain.keypoints, equal_nan=True)
    test = data.load_test(outer, cache=False)
    assert np.array_equal(test.images, data.load_test(synthetic_dir, cache=False).images)
    pd.testing.assert_frame_equal(data.load_lookup(outer), data.load_lookup(synthetic_dir))
    pd.testing.assert_frame_equal(
        data.load_sample_submission(outer), data.load_sample_submission(synthetic_dir)
    )


def test_errors_inside_the_competition_zip_name_both_files(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines[2] = _set_field(lines[2], "nose_tip_x", "oops")
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zi:
        zi.writestr("training.csv", "\n".join(lines) + "\n")
    (tmp_path / "d").mkdir()
    with zipfile.ZipFile(tmp_path / "d" / data.COMPETITION_ZIP, "w") as z:
        z.writestr("training.zip", inner.getvalue())
    with pytest.raises(
        data.FKPDataError,
        match=r"training\.csv in training\.zip in facial-keypoints-detection\.zip, row 2, column nose_tip_x",
    ):
        data.load_training(tmp_path / "d", cache=False)


# ---------------------------------------------------------------------------------------------
# Validation: every error names the file, the 1-based row and the column


def test_missing_column_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    k = data.TRAINING_COLUMNS.index("nose_tip_y")
    lines = [",".join(f for i, f in enumerate(ln.split(",")) if i != k) for ln in lines]
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, header row" in msg and "missing column(s) nose_tip_y" in msg


def test_extra_column_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines = [lines[0] + ",Comment"] + [ln + ",hello" for ln in lines[1:]]
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, header row" in msg and "unexpected column(s) 'Comment'" in msg


def test_row_with_an_extra_field_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines[3] = "1.0," + lines[3]
    msg = _load_training_error(tmp_path, lines)
    assert (
        "training.csv, row 3" in msg and "expected 31 fields, found 32" in msg and "column" in msg
    )


def test_row_with_a_missing_field_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines[2] = lines[2].split(",", 1)[1]
    msg = _load_training_error(tmp_path, lines)
    assert (
        "training.csv, row 2, column Image" in msg
        and "expected 31 fields" in msg
        and "found 30" in msg
    )


@pytest.mark.parametrize("count", [9215, 9217, 0])
def test_image_with_the_wrong_number_of_pixels_is_named(tmp_path, kaggle_csv, count):
    lines = _lines(kaggle_csv)
    lines[4] = _set_field(lines[4], "Image", " ".join(["7"] * count))
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, row 4, column Image" in msg
    assert f"expected 9216 pixels (96x96), found {count}" in msg


@pytest.mark.parametrize("token", ["12.5", "abc", "-1", "0x1f", "1e2"])
def test_non_integer_pixel_is_named(tmp_path, kaggle_csv, token):
    lines = _lines(kaggle_csv)
    pixels = ["10"] * 9216
    pixels[100] = token
    lines[1] = _set_field(lines[1], "Image", " ".join(pixels))
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, row 1, column Image: pixel 101" in msg
    assert repr(token) in msg and "not an integer 0-255" in msg


@pytest.mark.parametrize("token", ["256", "999", "1000"])
def test_out_of_range_pixel_is_named(tmp_path, kaggle_csv, token):
    lines = _lines(kaggle_csv)
    pixels = ["255"] * 9216
    pixels[9215] = token
    lines[2] = _set_field(lines[2], "Image", " ".join(pixels))
    msg = _load_training_error(tmp_path, lines)
    assert (
        "training.csv, row 2, column Image: pixel 9216" in msg and "outside the range 0-255" in msg
    )


def test_non_numeric_keypoint_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines[3] = _set_field(lines[3], "nose_tip_x", "left")
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, row 3, column nose_tip_x: 'left' is not a number" in msg


@pytest.mark.parametrize("value", ["96.01", "-1.01", "1e9", "inf", "-inf"])
def test_keypoint_outside_the_frame_is_named(tmp_path, kaggle_csv, value):
    lines = _lines(kaggle_csv)
    lines[2] = _set_field(lines[2], "mouth_center_bottom_lip_y", value)
    msg = _load_training_error(tmp_path, lines)
    assert (
        "training.csv, row 2, column mouth_center_bottom_lip_y" in msg
        and "outside the 96x96 frame" in msg
    )


@pytest.mark.parametrize("value", ["95.94", "-0.9", "96.0"])
def test_labels_half_a_pixel_past_the_frame_are_kept(tmp_path, kaggle_csv, value):
    # Kaggle's own labels reach 95.94: the loader keeps them as the annotator gave them
    lines = _lines(kaggle_csv)
    lines[2] = _set_field(lines[2], "mouth_center_bottom_lip_y", value)
    _write(tmp_path / "d", "training.csv", lines)
    train = data.load_training(tmp_path / "d", cache=False)
    column = data.KEYPOINT_COLUMNS.index("mouth_center_bottom_lip_y")
    assert train.keypoints[1, column] == pytest.approx(float(value))


def test_x_without_its_y_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines[1] = _set_field(lines[1], "nose_tip_y", "")
    msg = _load_training_error(tmp_path, lines)
    assert (
        "training.csv, row 1, column nose_tip_y" in msg
        and "nose_tip_x is given but nose_tip_y is missing" in msg
    )


def test_duplicate_image_ids_are_named(tmp_path, kaggle_csv):
    images, _ = _faces()
    _write(tmp_path / "d", "test.csv", kaggle_csv.test(images, [1, 2, 3, 2]))
    with pytest.raises(
        data.FKPDataError,
        match=r"test\.csv, row 4, column ImageId: ImageId 2 appears more than once \(also in row 2\)",
    ):
        data.load_test(tmp_path / "d", cache=False)


def test_non_integer_image_id_is_named(tmp_path, kaggle_csv):
    images, _ = _faces()
    text = kaggle_csv.test(images, [1, 2, 3, 4]).decode().replace("\n3,", "\nthree,")
    _write(tmp_path / "d", "test.csv", text.encode())
    with pytest.raises(
        data.FKPDataError, match=r"test\.csv, row 3, column ImageId: 'three' is not an integer id"
    ):
        data.load_test(tmp_path / "d", cache=False)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    _write(tmp_path / "d", "training.csv", content)
    with pytest.raises(data.FKPDataError, match=r"training\.csv: the file is empty"):
        data.load_training(tmp_path / "d", cache=False)


def test_header_without_rows_is_an_error(tmp_path):
    _write(tmp_path / "d", "training.csv", [",".join(data.TRAINING_COLUMNS)])
    with pytest.raises(
        data.FKPDataError, match=r"training\.csv: the file has a header but no rows"
    ):
        data.load_training(tmp_path / "d", cache=False)


def test_empty_line_between_rows_is_named(tmp_path, kaggle_csv):
    lines = _lines(kaggle_csv)
    lines.insert(3, "")
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, row 3: the line is empty but more rows follow" in msg


def test_truncated_zip_is_an_error(tmp_path, synthetic_dir):
    d = tmp_path / "d"
    d.mkdir()
    payload = (synthetic_dir / "training.csv").read_bytes()
    full = _zip(tmp_path / "full.zip", "training.csv", payload).read_bytes()
    (d / "training.zip").write_bytes(full[: len(full) // 2])
    with pytest.raises(data.FKPDataError, match=r"training\.zip: the zip is truncated or corrupt"):
        data.load_training(d, cache=False)


def test_corrupt_zip_data_is_an_error(tmp_path, synthetic_dir):
    d = tmp_path / "d"
    d.mkdir()
    payload = (synthetic_dir / "training.csv").read_bytes()
    raw = bytearray(_zip(d / "training.zip", "training.csv", payload).read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)  # zeros in the middle of the deflate stream
    (d / "training.zip").write_bytes(bytes(raw))
    with pytest.raises(
        data.FKPDataError, match=r"training\.csv in training\.zip: the zip is truncated or corrupt"
    ):
        data.load_training(d, cache=False)


def test_errors_far_into_the_file_name_the_right_row(tmp_path, kaggle_csv, monkeypatch):
    monkeypatch.setattr(data, "_CHUNK_BYTES", 50_000)  # about one row per block
    lines = _lines(kaggle_csv, n=12)
    pixels = lines[11].rsplit(",", 1)[1].split()
    pixels[5000] = "300"
    lines[11] = _set_field(lines[11], "Image", " ".join(pixels))
    msg = _load_training_error(tmp_path, lines)
    assert "training.csv, row 11, column Image: pixel 5001 is 300" in msg


def test_missing_training_file_says_how_to_get_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.FKPDataError, match="kaggle competitions download"):
        data.load_training(tmp_path / "empty")


def test_lookup_errors_name_file_row_and_column(synthetic_copy):
    path = synthetic_copy / data.LOOKUP_NAME
    original = path.read_text()
    lines = original.splitlines()
    cases = {
        "FeatureName": (3, lambda ln: ln.replace("right_eye_center_x", "chin_x")),
        "RowId": (5, lambda ln: "x" + ln),
    }
    for column, (row, change) in cases.items():
        changed = lines.copy()
        changed[row] = change(changed[row])
        path.write_text("\r\n".join(changed) + "\r\n")
        with pytest.raises(
            data.FKPDataError, match=rf"IdLookupTable\.csv, row {row}, column {column}"
        ):
            data.load_lookup(synthetic_copy)
    changed = lines.copy()
    changed[4] = "1" + changed[4][1:]  # RowId 4 becomes RowId 1 again
    path.write_text("\r\n".join(changed) + "\r\n")
    with pytest.raises(
        data.FKPDataError, match=r"IdLookupTable\.csv, row 4, column RowId: RowId 1 repeats"
    ):
        data.load_lookup(synthetic_copy)


def test_lookup_loads_kaggles_layout(synthetic_dir):
    lookup = data.load_lookup(synthetic_dir)
    assert list(lookup.columns) == ["RowId", "ImageId", "FeatureName", "Location"]
    assert lookup["RowId"].dtype == np.int64 and lookup["Location"].isna().all()
    assert lookup["RowId"].tolist() == list(range(1, len(lookup) + 1))


# ---------------------------------------------------------------------------------------------
# The data directory


def test_named_directory_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(data.FKPDataError, match="does not exist"):
        data.data_dir()


def test_fkp_data_dir_then_local_data_dir_are_used(tmp_path, monkeypatch, synthetic_dir):
    monkeypatch.setenv("FKP_DATA_DIR", str(synthetic_dir))
    assert data.data_dir() == synthetic_dir
    monkeypatch.delenv("FKP_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "training.csv").write_bytes((synthetic_dir / "training.csv").read_bytes())
    assert data.data_dir() == Path("data")
    assert data.data_source() == "kaggle"


def test_without_data_the_synthetic_set_is_used_and_announced_once(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FKP_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "_announced", set())
    d = data.data_dir()
    first = capsys.readouterr().err
    assert d == data.synthetic_dir() and synthetic.is_complete(d)
    assert "SYNTHETIC" in first and str(d) in first
    train = data.load_training()
    assert capsys.readouterr().err == ""
    assert train.source == "synthetic" and len(train) == synthetic.DEFAULT_N_TRAIN


def test_data_source_recognises_the_stand_in(tmp_path, synthetic_dir):
    (tmp_path / "training.csv").write_bytes((synthetic_dir / "training.csv").read_bytes())
    assert data.data_source(tmp_path) == "kaggle"
    (tmp_path / "README.md").write_text("# FKD stand-in\n")
    assert data.data_source(tmp_path) == "stand-in"


# ---------------------------------------------------------------------------------------------
# The cache


def _cache_files(cache_dir: Path, pattern="*.npz"):
    return sorted((cache_dir / "parsed").glob(pattern)) if (cache_dir / "parsed").exists() else []


def test_second_load_comes_from_the_cache(isolated_cache, synthetic_dir, monkeypatch):
    first = data.load_training(synthetic_dir)
    assert len(_cache_files(isolated_cache)) == 1

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again despite a valid cache")

    monkeypatch.setattr(data, "_parse_source", no_parse)
    second = data.load_training(synthetic_dir)
    assert np.array_equal(second.images, first.images)
    assert np.array_equal(second.keypoints, first.keypoints, equal_nan=True)


def test_cache_is_rebuilt_when_the_source_changes(isolated_cache, synthetic_copy):
    before = data.load_training(synthetic_copy)
    path = synthetic_copy / "training.csv"
    text = path.read_bytes()
    i = text.rindex(b" ") + 1  # the last pixel of the last row
    digit = text[i : i + 1]
    new_digit = b"1" if digit != b"1" else b"2"
    path.write_bytes(text[:i] + new_digit + text[i + 1 :])  # same size
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = data.load_training(synthetic_copy)
    assert after.images[-1, -1, -1] != before.images[-1, -1, -1]
    assert len(_cache_files(isolated_cache)) == 1  # the stale entry is gone


def test_cache_false_neither_reads_nor_writes(isolated_cache, synthetic_dir):
    data.load_training(synthetic_dir, cache=False)
    assert _cache_files(isolated_cache) == []


def test_interrupted_cache_write_leaves_nothing_that_is_trusted(
    isolated_cache, synthetic_dir, monkeypatch
):
    real_savez = np.savez

    def savez_then_interrupt(file, **arrays):
        file.write(b"PK\x03\x04 half an npz")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.load_training(synthetic_dir)
    assert _cache_files(isolated_cache) == [] and _cache_files(isolated_cache, "*.tmp") == []
    monkeypatch.setattr(np, "savez", real_savez)
    fresh = data.load_training(synthetic_dir)
    assert np.array_equal(fresh.images, data.load_training(synthetic_dir, cache=False).images)


def test_failing_cache_write_warns_and_still_returns_the_data(
    isolated_cache, synthetic_dir, monkeypatch
):
    def savez_disk_full(file, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_disk_full)
    monkeypatch.setattr(data, "_warned_cache", False)
    with pytest.warns(UserWarning, match="could not write the parsed-data cache"):
        train = data.load_training(synthetic_dir)
    assert len(train) == 40 and _cache_files(isolated_cache) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_damaged_or_foreign_cache_file_is_ignored_and_replaced(
    isolated_cache, synthetic_dir, damage
):
    good = data.load_training(synthetic_dir, cache=False)
    path = data.cache_path(synthetic_dir / "training.csv", "training.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    if damage == "truncated":
        data.load_training(synthetic_dir)
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:  # a valid npz made from another file
        np.savez(
            path,
            source_key=np.array("another file"),
            images=good.images[:1],
            keypoints=good.keypoints[:1],
        )
    got = data.load_training(synthetic_dir)
    assert np.array_equal(got.images, good.images)
    with np.load(path, allow_pickle=False) as z:
        assert np.array_equal(z["images"], good.images)


def test_stray_temporary_file_is_ignored(isolated_cache, synthetic_dir):
    path = data.cache_path(synthetic_dir / "training.csv", "training.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / (path.name + ".abc123.tmp")).write_bytes(b"PK partial")
    got = data.load_training(synthetic_dir)
    assert len(got) == 40 and path.is_file()


def test_killed_cache_write_leaves_no_cache_entry(isolated_cache, synthetic_dir):
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from fkp_helpers import data
        def savez_then_die(file, **arrays):
            file.write(b"PK\\x03\\x04 half")
            file.flush()
            os._exit(9)  # killed: no cleanup runs
        np.savez = savez_then_die
        data.load_training({str(synthetic_dir)!r})
        """
    )
    env = {**os.environ, "FKP_CACHE_DIR": str(isolated_cache)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == 9, result.stderr.decode()
    assert _cache_files(isolated_cache) == []  # only a stray .tmp may remain
    assert len(_cache_files(isolated_cache, "*.tmp")) == 1
    got = data.load_training(synthetic_dir)
    assert np.array_equal(got.images, data.load_training(synthetic_dir, cache=False).images)


# ---------------------------------------------------------------------------------------------
# Submissions


def _lookup(image_ids=(1, 2, 3), features=data.KEYPOINT_COLUMNS[:4]):
    rows = [(i, f) for i in image_ids for f in features]
    return pd.DataFrame(
        {
            "RowId": np.arange(1, len(rows) + 1),
            "ImageId": [r[0] for r in rows],
            "FeatureName": [r[1] for r in rows],
        }
    )


def test_submission_round_trips_every_rowid_once(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 96, (3, 30))
    lookup = _lookup()
    data.write_submission(pred, lookup, tmp_path / "sub.csv")
    assert (tmp_path / "sub.csv").read_text().startswith("RowId,Location\n")
    back = pd.read_csv(tmp_path / "sub.csv")
    assert back["RowId"].tolist() == lookup["RowId"].tolist()
    cols = [data.KEYPOINT_COLUMNS.index(f) for f in lookup["FeatureName"]]
    assert np.allclose(back["Location"], pred[lookup["ImageId"] - 1, cols], rtol=0, atol=1e-9)


def test_submission_clips_to_the_frame(tmp_path):
    pred = np.full((3, 30), 50.0)
    pred[0, 0], pred[1, 1] = -4.0, 120.0
    out = data.write_submission(pred, _lookup(), tmp_path / "sub.csv")
    values = out.set_index("RowId")["Location"]
    assert values[1] == -0.5 and values[4 + 2] == 95.5 and values.between(-0.5, 95.5).all()


def test_submission_follows_image_ids_order(tmp_path):
    pred = np.arange(3)[:, None] * np.ones((3, 30))  # row r predicts r everywhere
    out = data.write_submission(pred, _lookup(), tmp_path / "sub.csv", image_ids=[3, 1, 2])
    by_image = out.assign(ImageId=_lookup()["ImageId"]).groupby("ImageId")["Location"].first()
    assert by_image.to_dict() == {1: 1.0, 2: 2.0, 3: 0.0}


def test_submission_without_a_prediction_for_a_lookup_image_is_an_error(tmp_path):
    with pytest.raises(
        data.FKPDataError,
        match=r"IdLookupTable\.csv, row 9, column ImageId: ImageId 3 has no prediction",
    ):
        data.write_submission(np.zeros((2, 30)), _lookup(), tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()


def test_submission_rejects_repeated_rowids_and_unrequested_nan_is_fine(tmp_path):
    lookup = _lookup()
    lookup.loc[5, "RowId"] = 1
    with pytest.raises(data.FKPDataError, match="RowId 1 repeats"):
        data.write_submission(np.zeros((3, 30)), lookup, tmp_path / "sub.csv")
    pred = np.zeros((3, 30))
    pred[:, 10:] = np.nan  # not asked for
    data.write_submission(pred, _lookup(), tmp_path / "sub.csv")
    pred[0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        data.write_submission(pred, _lookup(), tmp_path / "sub.csv")


def test_true_keypoints_reproduce_the_synthetic_solution(tmp_path, synthetic_dir):
    lookup = data.load_lookup(synthetic_dir)
    solution = pd.read_csv(synthetic_dir / "solution.csv")
    test = data.load_test(synthetic_dir)
    truth = np.full((len(test), 30), np.nan)
    image = lookup["ImageId"].to_numpy() - 1
    col = [data.KEYPOINT_COLUMNS.index(f) for f in lookup["FeatureName"]]
    truth[image, col] = solution["Location"].to_numpy()
    out = data.write_submission(truth, lookup, tmp_path / "sub.csv", image_ids=test.image_ids)
    assert np.allclose(out["Location"], solution["Location"])


# ---------------------------------------------------------------------------------------------
# Downloading


def _no_credentials(monkeypatch, home: Path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "FKP_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))


def test_download_without_credentials_prints_the_steps(tmp_path, monkeypatch, capsys):
    _no_credentials(monkeypatch, tmp_path)
    target = tmp_path / "kdata"
    assert data.download(target) == 1
    out = capsys.readouterr().out
    assert "pip install kaggle" in out
    assert f"kaggle competitions download -c facial-keypoints-detection -p {target}" in out
    assert "rules" in out and "unzip" in out and "kaggle.json" in out
    assert not target.exists()


def test_download_uses_the_kaggle_package_when_credentials_exist(
    tmp_path, monkeypatch, synthetic_dir
):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123")
    calls = []

    class FakeApi:
        def authenticate(self):
            calls.append("authenticate")

        def competition_download_files(self, competition, path, quiet=False):
            calls.append(competition)
            with zipfile.ZipFile(Path(path) / f"{competition}.zip", "w") as z:
                for name in ("training", "test"):
                    buf = io.BytesIO()
                    with zipfile.ZipFile(buf, "w") as zi:
                        zi.write(synthetic_dir / f"{name}.csv", f"{name}.csv")
                    z.writestr(f"{name}.zip", buf.getvalue())
                z.write(synthetic_dir / data.LOOKUP_NAME, data.LOOKUP_NAME)
                z.write(synthetic_dir / data.SAMPLE_SUBMISSION_NAME, data.SAMPLE_SUBMISSION_NAME)

    pkg = types.ModuleType("kaggle")
    pkg.__path__ = []
    api = types.ModuleType("kaggle.api")
    api.__path__ = []
    ext = types.ModuleType("kaggle.api.kaggle_api_extended")
    ext.KaggleApi = FakeApi
    for name, mod in (
        ("kaggle", pkg),
        ("kaggle.api", api),
        ("kaggle.api.kaggle_api_extended", ext),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: object())
    target = tmp_path / "kdata"
    assert data.download(target) == 0
    assert calls == ["authenticate", "facial-keypoints-detection"]
    assert (target / "training.zip").is_file() and (target / data.LOOKUP_NAME).is_file()
    assert len(data.load_training(target, cache=False)) == 40
    assert data.download(target) == 0  # already there: nothing to do
