"""Kaggle's Facial Keypoints Detection files: constants, loaders, validation, cache, submissions.

Coordinates are pixels in the 96x96 frame, pixel centres at integer coordinates, x to the right,
y down. "Left" is the subject's left, which appears on the image's right. A horizontal flip maps
x to ``95 - x`` and swaps left/right names (see :data:`FLIP_PERMUTATION`).

The data directory is, in order: the ``data_dir`` argument, ``$FKP_DATA_DIR``, ``./data/``. When
none of them holds Kaggle's files, the loaders fall back to a small synthetic set in Kaggle's exact
format (:mod:`fkp_helpers.synthetic`) and say so once.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SIZE = 96
"""Images are IMAGE_SIZE x IMAGE_SIZE pixels."""
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
"""The 15 keypoints in Kaggle's column order."""

N_KEYPOINTS = len(KEYPOINT_NAMES)

KEYPOINT_COLUMNS: tuple[str, ...] = tuple(f"{n}_{a}" for n in KEYPOINT_NAMES for a in ("x", "y"))
"""The 30 coordinate columns in Kaggle's order: ``left_eye_center_x, left_eye_center_y, ...``."""

CORE_KEYPOINTS: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "nose_tip",
    "mouth_center_bottom_lip",
)
"""The 4 keypoints labelled on (almost) every row; about 70% of rows carry only these."""

CORE_INDICES: tuple[int, ...] = tuple(KEYPOINT_NAMES.index(n) for n in CORE_KEYPOINTS)


def _flip_pairs() -> tuple[tuple[int, int], ...]:
    pairs = []
    for i, name in enumerate(KEYPOINT_NAMES):
        if "left" in name:
            twin = name.replace("left", "right")
            pairs.append((i, KEYPOINT_NAMES.index(twin)))
    return tuple(pairs)


FLIP_PAIRS: tuple[tuple[int, int], ...] = _flip_pairs()
"""(left, right) keypoint index pairs, e.g. ``(0, 1)`` for the eye centres."""


def _flip_permutation() -> np.ndarray:
    perm = np.arange(N_KEYPOINTS)
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERMUTATION: np.ndarray = _flip_permutation()
"""Keypoint ``k`` of a mirrored face is keypoint ``FLIP_PERMUTATION[k]`` of the original."""

FLIP_X_CONSTANT = IMAGE_SIZE - 1
"""A horizontal flip maps x to ``FLIP_X_CONSTANT - x`` (pixel centres at integers: 95 - x)."""

TRAINING_NAMES = ("training.csv", "training.zip")
TEST_NAMES = ("test.csv", "test.zip")
COMPETITION_ZIP = "facial-keypoints-detection.zip"
LOOKUP_NAME = "IdLookupTable.csv"
SAMPLE_SUBMISSION_NAME = "SampleSubmission.csv"


class FKPDataError(ValueError):
    """A data file is missing or malformed. The message names the file, row and column."""


def where(path: str | os.PathLike, row: int | None = None, column: str | None = None) -> str:
    """Format a location as ``file, row R, column C`` (rows are 1-based data rows, header excluded)."""
    parts = [Path(path).name]
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column {column}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Containers


@dataclass(frozen=True)
class TrainingSet:
    """Kaggle's training table.

    images: uint8 (N, 96, 96), grey levels 0-255.
    keypoints: float32 (N, 30) in pixels, Kaggle's column order, NaN where missing.
    row_ids: int64 (N,), the 1-based data row of each face in the source file.
    source: where the data came from: ``"kaggle"``, ``"stand-in"`` or ``"synthetic"``.
    path: the file that was read.
    """

    images: np.ndarray
    keypoints: np.ndarray
    row_ids: np.ndarray
    source: str
    path: Path

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class TestSet:
    """Kaggle's test images: uint8 (N, 96, 96) and their int64 ``image_ids`` (from 1)."""

    images: np.ndarray
    image_ids: np.ndarray
    source: str
    path: Path

    def __len__(self) -> int:
        return len(self.images)


# --------------------------------------------------------------------------------------------
# Where the data is

_announced: set[str] = set()


def _has_kaggle_files(d: Path) -> bool:
    return any((d / n).is_file() for n in (*TRAINING_NAMES, COMPETITION_ZIP))


def default_cache_dir() -> Path:
    """Where parsed arrays and the synthetic set live: ``$FKP_CACHE_DIR``, else ``~/.cache/fkp``."""
    env = os.environ.get("FKP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "fkp"


def data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory in force.

    Order: the argument, ``$FKP_DATA_DIR``, ``./data/`` (when it holds Kaggle's files), else the
    synthetic default, generated on first use. A directory named explicitly (argument or variable)
    must exist: we never fall back silently from a directory the user asked for.
    """
    explicit = data_dir if data_dir is not None else os.environ.get("FKP_DATA_DIR") or None
    if explicit is not None:
        d = Path(explicit).expanduser()
        if not d.is_dir():
            raise FKPDataError(
                f"data directory {d} does not exist (set by "
                f"{'argument' if data_dir is not None else 'FKP_DATA_DIR'}); "
                "download Kaggle's files there with `fkp data download`, or unset it to use "
                "the built-in synthetic set"
            )
        return d
    local = Path("data")
    if local.is_dir() and _has_kaggle_files(local):
        return local
    from fkp_helpers import synthetic

    d = synthetic.default_dir()
    if str(d) not in _announced:
        _announced.add(str(d))
        print(
            "fkp: no Kaggle data found ($FKP_DATA_DIR unset, ./data/ empty); using the built-in "
            f"SYNTHETIC faces in {d}. Figures on them are not Kaggle results.",
            file=sys.stderr,
        )
    synthetic.ensure(d)
    return d


def data_source(directory: str | os.PathLike | None = None) -> str:
    """Say what a data directory holds: ``"synthetic"``, ``"stand-in"`` or ``"kaggle"``."""
    d = data_dir(directory)
    if (d / "SYNTHETIC.md").exists():
        return "synthetic"
    readme = d / "README.md"
    if readme.exists() and "stand-in" in readme.read_text(errors="replace").lower():
        return "stand-in"
    return "kaggle"


def find_file(names: tuple[str, ...], directory: Path) -> Path:
    """The first of ``names`` present in ``directory`` (or inside Kaggle's competition zip)."""
    for n in names:
        if (directory / n).is_file():
            return directory / n
    outer = directory / COMPETITION_ZIP
    if outer.is_file():
        return outer
    raise FKPDataError(
        f"none of {', '.join(names)} found in {directory}; get Kaggle's files with "
        "`kaggle competitions download -c facial-keypoints-detection` (see `fkp data download`)"
    )


# --------------------------------------------------------------------------------------------
# Reading bytes out of csv / zip / the outer competition zip


def read_member_bytes(path: Path, member: str) -> bytes:
    """Bytes of ``member`` (e.g. ``training.csv``) from a csv file, its zip, or the outer zip."""
    if path.suffix == ".csv":
        data = path.read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if member in names:
                    data = z.read(member)
                elif member.replace(".csv", ".zip") in names:  # the outer competition zip
                    inner = io.BytesIO(z.read(member.replace(".csv", ".zip")))
                    with zipfile.ZipFile(inner) as zi:
                        data = zi.read(member)
                else:
                    csvs = [n for n in names if n.endswith(".csv")]
                    if len(csvs) == 1 and path.name != COMPETITION_ZIP:
                        data = z.read(csvs[0])
                    else:
                        raise FKPDataError(f"{path.name}: no {member} inside (found {names})")
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
            raise FKPDataError(
                f"{path.name}: not a readable zip file ({e}); it may be truncated or corrupt: "
                "download it again"
            ) from e
        except (OSError, ValueError) as e:  # CRC errors and short reads surface as these
            if isinstance(e, FKPDataError):
                raise
            raise FKPDataError(
                f"{path.name}: the zip is corrupt or truncated ({e}); download it again"
            ) from e
    if not data.strip():
        raise FKPDataError(f"{path.name}: the file is empty (expected a header and rows)")
    return data


# --------------------------------------------------------------------------------------------
# Parsing: vectorised over all pixels, no Python loop per pixel


def parse_pixels(fields: list[bytes], path: Path, column: str = "Image") -> np.ndarray:
    """Parse ``Image`` fields (9216 space-separated integers 0-255 each) into uint8 (N, 96, 96).

    One vectorised pass over all bytes; raises :class:`FKPDataError` naming the first bad row.
    """
    n = len(fields)
    if n == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    buf = np.frombuffer(b" ".join(fields) + b" ", dtype=np.uint8)
    # Row of every byte, to locate errors: field i spans [starts[i], starts[i]+len_i) plus a space.
    lengths = np.fromiter((len(f) + 1 for f in fields), dtype=np.int64, count=n)
    row_end = np.cumsum(lengths)

    def row_of(byte_index: int) -> int:
        return int(np.searchsorted(row_end, byte_index, side="right")) + 1

    is_digit = (buf >= 48) & (buf <= 57)
    is_space = (buf == 32) | (buf == 9) | (buf == 13)
    bad = ~(is_digit | is_space)
    if bad.any():
        i = int(np.argmax(bad))
        r = row_of(i)
        tok_start = buf[:i].tobytes().rfind(b" ") + 1
        tok_end = buf.tobytes().find(b" ", i)
        token = buf[tok_start:tok_end].tobytes().decode("latin-1")
        raise FKPDataError(
            f"{where(path, r, column)}: pixel value {token!r} is not an integer 0-255"
        )
    prev = np.concatenate(([False], is_digit[:-1]))
    nxt = np.concatenate((is_digit[1:], [False]))
    starts = np.flatnonzero(is_digit & ~prev)
    ends = np.flatnonzero(is_digit & ~nxt) + 1
    tok_len = ends - starts
    # Count tokens per row and check 9216 each.
    tok_row = np.searchsorted(row_end, starts, side="right")
    counts = np.bincount(tok_row, minlength=n)
    wrong = np.flatnonzero(counts != N_PIXELS)
    if wrong.size:
        r = int(wrong[0])
        raise FKPDataError(
            f"{where(path, r + 1, column)}: expected {N_PIXELS} pixels, found {int(counts[r])}"
        )
    long = tok_len > 3
    d0 = buf[starts].astype(np.int32) - 48
    d1 = buf[np.minimum(starts + 1, buf.size - 1)].astype(np.int32) - 48
    d2 = buf[np.minimum(starts + 2, buf.size - 1)].astype(np.int32) - 48
    values = np.where(
        tok_len == 1, d0, np.where(tok_len == 2, d0 * 10 + d1, d0 * 100 + d1 * 10 + d2)
    )
    over = long | (values > 255)
    if over.any():
        t = int(np.argmax(over))
        token = buf[starts[t] : ends[t]].tobytes().decode()
        raise FKPDataError(
            f"{where(path, int(tok_row[t]) + 1, column)}: pixel value {token} is out of range 0-255"
        )
    return values.astype(np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE)


def _split_table(data: bytes, path: Path) -> tuple[list[str], list[list[bytes]]]:
    """Split CSV bytes into a header and rows of fields. Kaggle's files hold no quoted commas."""
    text = data.replace(b"\r\n", b"\n")
    lines = text.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FKPDataError(f"{path.name}: the file is empty (expected a header and rows)")
    header = [h.strip().strip(b'"').decode("utf-8", "replace") for h in lines[0].split(b",")]
    rows = []
    for i, line in enumerate(lines[1:], start=1):
        fields = [f.strip(b'"') for f in line.split(b",")]
        if len(fields) != len(header):
            raise FKPDataError(
                f"{where(path, i)}: expected {len(header)} fields ({', '.join(header[:3])}, ...), "
                f"found {len(fields)}"
            )
        rows.append(fields)
    if not rows:
        raise FKPDataError(f"{path.name}: the file has a header but no rows")
    return header, rows


def _check_columns(header: list[str], expected: list[str], path: Path) -> None:
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    dup = sorted({c for c in header if header.count(c) > 1})
    if missing or extra or dup:
        msg = []
        if missing:
            msg.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            msg.append(f"unexpected column(s) {', '.join(extra)}")
        if dup:
            msg.append(f"duplicate column(s) {', '.join(dup)}")
        raise FKPDataError(f"{path.name}, header: {'; '.join(msg)}")


def parse_keypoints(rows: list[list[bytes]], header: list[str], path: Path) -> np.ndarray:
    """Parse the 30 coordinate columns into float32 (N, 30) pixels, NaN where empty.

    Checks that every value is a number in [0, 96) and that x and y come in pairs.
    """
    idx = [header.index(c) for c in KEYPOINT_COLUMNS]
    out = np.empty((len(rows), len(idx)), np.float64)
    for r, fields in enumerate(rows):
        for j, k in enumerate(idx):
            f = fields[k]
            if not f.strip():
                out[r, j] = np.nan
                continue
            try:
                out[r, j] = float(f)
            except ValueError:
                raise FKPDataError(
                    f"{where(path, r + 1, KEYPOINT_COLUMNS[j])}: "
                    f"{f.decode('utf-8', 'replace')!r} is not a number"
                ) from None
    nan = np.isnan(out)
    bad = ~nan & ~((out >= 0) & (out < IMAGE_SIZE))
    if bad.any():
        r, j = np.argwhere(bad)[0]
        raise FKPDataError(
            f"{where(path, int(r) + 1, KEYPOINT_COLUMNS[j])}: {out[r, j]:g} is outside the "
            f"96x96 frame [0, {IMAGE_SIZE})"
        )
    unpaired = nan[:, 0::2] != nan[:, 1::2]
    if unpaired.any():
        r, k = np.argwhere(unpaired)[0]
        have, lack = ("x", "y") if not nan[r, 2 * k] else ("y", "x")
        raise FKPDataError(
            f"{where(path, int(r) + 1, f'{KEYPOINT_NAMES[k]}_{lack}')}: "
            f"{KEYPOINT_NAMES[k]}_{have} is given but {KEYPOINT_NAMES[k]}_{lack} is missing"
        )
    return out.astype(np.float32)


def parse_training_bytes(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse training.csv bytes into (images uint8 (N,96,96), keypoints float32 (N,30))."""
    header, rows = _split_table(data, path)
    _check_columns(header, [*KEYPOINT_COLUMNS, "Image"], path)
    keypoints = parse_keypoints(rows, header, path)
    img = header.index("Image")
    images = parse_pixels([r[img] for r in rows], path)
    return images, keypoints


def parse_test_bytes(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse test.csv bytes into (images uint8 (N,96,96), image_ids int64 (N,))."""
    header, rows = _split_table(data, path)
    _check_columns(header, ["ImageId", "Image"], path)
    k = header.index("ImageId")
    ids = np.empty(len(rows), np.int64)
    for r, fields in enumerate(rows):
        try:
            ids[r] = int(fields[k])
        except ValueError:
            raise FKPDataError(
                f"{where(path, r + 1, 'ImageId')}: {fields[k].decode('utf-8', 'replace')!r} "
                "is not an integer id"
            ) from None
    _, first = np.unique(ids, return_index=True)
    if len(first) != len(ids):
        dup_rows = np.setdiff1d(np.arange(len(ids)), first)
        r = int(dup_rows[0])
        raise FKPDataError(
            f"{where(path, r + 1, 'ImageId')}: ImageId {ids[r]} appears more than once"
        )
    img = header.index("Image")
    images = parse_pixels([r[img] for r in rows], path)
    return images, ids


# --------------------------------------------------------------------------------------------
# The cache: parsed arrays in .npz, keyed by the source's path, size and mtime, written atomically

CACHE_VERSION = 1


def _cache_path(source: Path, member: str) -> Path:
    st = source.stat()
    key = f"{source.resolve()}|{member}|{st.st_size}|{st.st_mtime_ns}|v{CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return default_cache_dir() / "parsed" / f"{member.replace('.csv', '')}-{digest}.npz"


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except Exception:  # a stale or damaged cache is rebuilt, never trusted
        return None


def _load_parsed(source: Path, member: str, parse, keys: tuple[str, ...], use_cache: bool):
    cache = _cache_path(source, member) if use_cache else None
    if cache is not None:
        hit = _load_cached(cache, keys)
        if hit is not None:
            return tuple(hit[k] for k in keys)
    shown = Path(member) if source.name == COMPETITION_ZIP else source
    arrays = parse(read_member_bytes(source, member), shown)
    if cache is not None:
        try:
            _save_atomic(cache, **dict(zip(keys, arrays)))
        except OSError:
            pass  # a read-only cache dir costs speed, not correctness
    return arrays


# --------------------------------------------------------------------------------------------
# Public loaders


def load_training(data_dir: str | os.PathLike | None = None, *, cache: bool = True) -> TrainingSet:
    """Load ``training.csv`` (or ``training.zip``) from the data directory in force.

    Returns a :class:`TrainingSet`: images uint8 (N, 96, 96), keypoints float32 (N, 30) in pixels
    with NaN for missing, and the 1-based row ids. No row is dropped.
    """
    d = globals()["data_dir"](data_dir)
    src = find_file(TRAINING_NAMES, d)
    images, keypoints = _load_parsed(
        src, "training.csv", parse_training_bytes, ("images", "keypoints"), cache
    )
    return TrainingSet(
        images=images,
        keypoints=keypoints,
        row_ids=np.arange(1, len(images) + 1, dtype=np.int64),
        source=data_source(d),
        path=src,
    )


def load_test(data_dir: str | os.PathLike | None = None, *, cache: bool = True) -> TestSet:
    """Load ``test.csv`` (or ``test.zip``): images uint8 (N, 96, 96) and their ImageIds."""
    d = globals()["data_dir"](data_dir)
    src = find_file(TEST_NAMES, d)
    images, ids = _load_parsed(src, "test.csv", parse_test_bytes, ("images", "image_ids"), cache)
    return TestSet(images=images, image_ids=ids, source=data_source(d), path=src)


def load_lookup(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load ``IdLookupTable.csv``: columns RowId, ImageId, FeatureName (Location is empty)."""
    d = globals()["data_dir"](data_dir)
    path = find_file((LOOKUP_NAME,), d)
    data = read_member_bytes(path, LOOKUP_NAME)
    shown = Path(LOOKUP_NAME)
    df = pd.read_csv(io.BytesIO(data), dtype={"FeatureName": str})
    _check_columns(list(df.columns), ["RowId", "ImageId", "FeatureName", "Location"], shown)
    for col in ("RowId", "ImageId"):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() | (vals != vals.round())
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise FKPDataError(f"{where(shown, r + 1, col)}: {df[col].iloc[r]!r} is not an integer")
        df[col] = vals.astype(np.int64)
    unknown = ~df["FeatureName"].isin(KEYPOINT_COLUMNS)
    if unknown.any():
        r = int(np.flatnonzero(unknown.to_numpy())[0])
        raise FKPDataError(
            f"{where(shown, r + 1, 'FeatureName')}: unknown feature {df['FeatureName'].iloc[r]!r}"
        )
    dup = df["RowId"].duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise FKPDataError(f"{where(shown, r + 1, 'RowId')}: RowId {df['RowId'].iloc[r]} repeats")
    return df


def load_sample_submission(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load ``SampleSubmission.csv``: columns RowId, Location."""
    d = globals()["data_dir"](data_dir)
    path = find_file((SAMPLE_SUBMISSION_NAME,), d)
    df = pd.read_csv(io.BytesIO(read_member_bytes(path, SAMPLE_SUBMISSION_NAME)))
    _check_columns(list(df.columns), ["RowId", "Location"], Path(SAMPLE_SUBMISSION_NAME))
    return df


# --------------------------------------------------------------------------------------------
# Submissions


def write_submission(
    predictions: np.ndarray,
    lookup: pd.DataFrame,
    path: str | os.PathLike,
    image_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """Write Kaggle's ``RowId,Location`` submission for the rows that ``lookup`` asks for.

    predictions: float (N, 30) pixels for N test images, in ``image_ids`` order (default: ImageId
    1..N). Values are clipped to [0, 96]. Every RowId of the lookup is written exactly once.
    Returns the written table.
    """
    pred = np.asarray(predictions, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] != len(KEYPOINT_COLUMNS):
        raise ValueError(f"predictions must have shape (N, 30), got {pred.shape}")
    ids = np.arange(1, len(pred) + 1) if image_ids is None else np.asarray(image_ids)
    if len(ids) != len(pred):
        raise ValueError(f"{len(ids)} image ids for {len(pred)} prediction rows")
    pos = pd.Series(np.arange(len(ids)), index=ids)
    if not pos.index.is_unique:
        raise ValueError("image_ids repeat")
    missing = ~lookup["ImageId"].isin(pos.index)
    if missing.any():
        r = int(np.flatnonzero(missing.to_numpy())[0])
        raise FKPDataError(
            f"{where(LOOKUP_NAME, r + 1, 'ImageId')}: ImageId {lookup['ImageId'].iloc[r]} "
            "has no prediction"
        )
    if lookup["RowId"].duplicated().any():
        r = int(np.flatnonzero(lookup["RowId"].duplicated().to_numpy())[0])
        raise FKPDataError(f"{where(LOOKUP_NAME, r + 1, 'RowId')}: RowId repeats")
    col = {c: i for i, c in enumerate(KEYPOINT_COLUMNS)}
    rows = pos.loc[lookup["ImageId"]].to_numpy()
    cols = lookup["FeatureName"].map(col).to_numpy()
    values = np.clip(pred[rows, cols], 0, IMAGE_SIZE)
    if not np.isfinite(values).all():
        r = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"prediction for RowId {lookup['RowId'].iloc[r]} "
            f"({lookup['FeatureName'].iloc[r]}) is not finite"
        )
    out = pd.DataFrame({"RowId": lookup["RowId"].to_numpy(), "Location": values})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return out
