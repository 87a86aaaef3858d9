"""Kaggle's Facial Keypoints Detection files: constants, loaders, validation, cache, submissions.

Coordinates, names and the frame come from :mod:`fkp_helpers.keypoints` (re-exported here):
pixels, pixel centres at integer coordinates, x to the right, y down, the image covering
[-0.5, 95.5]; "left" is the subject's left; a horizontal flip maps x to ``95 - x``. A label read
from a file must lie in :data:`~fkp_helpers.keypoints.LABEL_RANGE` (the frame and the half pixel
Kaggle's annotators overhang it); a submission's values are clipped into the frame.

The data directory is, in order (:func:`data_dir`): the ``data_dir`` argument,
``$FKP_DATA_DIR``, ``data/`` (here or at the repository's root), Kaggle's mounted competition
input inside a Kaggle notebook (:func:`kaggle_input_dir`). When none of them holds Kaggle's files,
the loaders fall back to a small synthetic set in Kaggle's exact format
(:mod:`fkp_helpers.synthetic`) and say so once.

Kaggle ships ``training.zip``, ``test.zip``, ``IdLookupTable.csv`` and ``SampleSubmission.csv``,
all four inside ``facial-keypoints-detection.zip``. The loaders read any of these forms as they
are (``training.csv`` or ``training.zip``, or straight from the competition zip), without
unpacking anything to disk.

How the loading stays fast and small: the CSV is streamed (a couple of MB at a time, decompressed
on the fly), the ``Image`` fields of each block are parsed by a handful of vectorised NumPy passes
(no Python work per pixel), and the parsed arrays are cached in ``.npz`` files keyed by the source
file's size and modification time (see :func:`cache_path`). Every malformed value raises
:class:`FKPDataError` naming the file, the row and the column; no row is ever dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import math
import os
import re
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from fkp_helpers import synthetic
from fkp_helpers.keypoints import (  # noqa: F401  (re-exported: the loaders' vocabulary)
    CORE_INDICES,
    CORE_KEYPOINTS,
    FLIP_PAIRS,
    FLIP_PERMUTATION,
    FLIP_X_CONSTANT,
    IMAGE_SIZE,
    KEYPOINT_COLUMNS,
    KEYPOINT_NAMES,
    LABEL_MARGIN,
    LABEL_RANGE,
    N_KEYPOINTS,
    N_PIXELS,
    clip_to_frame,
)

TRAINING_NAMES = ("training.csv", "training.zip")
TEST_NAMES = ("test.csv", "test.zip")
COMPETITION = "facial-keypoints-detection"
COMPETITION_ZIP = f"{COMPETITION}.zip"
LOOKUP_NAME = "IdLookupTable.csv"
SAMPLE_SUBMISSION_NAME = "SampleSubmission.csv"
TRAINING_COLUMNS: tuple[str, ...] = (*KEYPOINT_COLUMNS, "Image")
TEST_COLUMNS: tuple[str, ...] = ("ImageId", "Image")
LOOKUP_COLUMNS: tuple[str, ...] = ("RowId", "ImageId", "FeatureName", "Location")
SUBMISSION_COLUMNS: tuple[str, ...] = ("RowId", "Location")


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

    __test__ = False  # not a pytest test class

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
    """Where parsed arrays and the synthetic set live: ``$FKP_CACHE_DIR``, else ``~/.cache/fkp``.

    Never a data directory: Kaggle's mounted input (:func:`kaggle_input_dir`) is read-only. When
    ``~/.cache`` cannot be written (a read-only home), the cache goes to the system's temporary
    directory instead, so loading still works (Colab's and Kaggle's homes are writable).
    """
    env = os.environ.get("FKP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    try:
        home = Path.home() / ".cache" / "fkp"
    except RuntimeError:  # no home directory at all
        return Path(tempfile.gettempdir()) / "fkp-cache"
    probe = home
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if os.access(probe, os.W_OK):
        return home
    return Path(tempfile.gettempdir()) / "fkp-cache"


def synthetic_dir() -> Path:
    """Where the default synthetic set lives: ``<cache dir>/synthetic-v<VERSION>``."""
    return default_cache_dir() / f"synthetic-v{synthetic.VERSION}"


KAGGLE_INPUT = Path("/kaggle/input") / COMPETITION
"""Where a Kaggle notebook mounts the competition's files; ``$FKP_KAGGLE_INPUT`` overrides it."""


def kaggle_input_dir() -> Path | None:
    """The competition's files as a Kaggle notebook mounts them, else None.

    ``$FKP_KAGGLE_INPUT`` when set (it must then hold Kaggle's files), else
    ``/kaggle/input/facial-keypoints-detection`` when it holds them. The files there are read-only
    and zipped (``training.zip``, ``test.zip``, ``IdLookupTable.csv``, ``SampleSubmission.csv``):
    the loaders read the zips in place and write what they parse to :func:`default_cache_dir`,
    never into the input.
    """
    env = os.environ.get("FKP_KAGGLE_INPUT") or None
    d = Path(env).expanduser() if env else KAGGLE_INPUT
    if d.is_dir() and _has_kaggle_files(d):
        return d
    if env:
        raise FKPDataError(
            f"FKP_KAGGLE_INPUT={env}: no Kaggle files there (expected training.zip or "
            f"training.csv, or {COMPETITION_ZIP}); unset it outside a Kaggle notebook"
        )
    return None


def data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory in force.

    Order: the argument, ``$FKP_DATA_DIR``, ``./data/`` or ``data/`` at the repository's root
    (when it holds Kaggle's files), Kaggle's mounted competition input in a Kaggle notebook
    (:func:`kaggle_input_dir`: ``$FKP_KAGGLE_INPUT``, else
    ``/kaggle/input/facial-keypoints-detection``, read in place), else the
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
    # ./data, then data/ at the repository's root (notebooks run inside notebooks/)
    for local in (Path("data"), Path(__file__).resolve().parents[1] / "data"):
        if local.is_dir() and _has_kaggle_files(local):
            return local
    mounted = kaggle_input_dir()  # a Kaggle notebook: the competition's files, read-only
    if mounted is not None:
        return mounted
    d = synthetic_dir()
    if str(d) not in _announced:
        _announced.add(str(d))
        print(
            "fkp: no Kaggle data found ($FKP_DATA_DIR unset, ./data/ empty, no Kaggle input); "
            "using the built-in "
            f"SYNTHETIC faces in {d}. Figures on them are not Kaggle results "
            "(`fkp data download` says how to get Kaggle's files).",
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
    """The first of ``names`` present in ``directory``, else Kaggle's competition zip there."""
    for n in names:
        if (directory / n).is_file():
            return directory / n
    outer = directory / COMPETITION_ZIP
    if outer.is_file():
        return outer
    raise FKPDataError(
        f"none of {', '.join(names)} found in {directory}; get Kaggle's files with "
        f"`kaggle competitions download -c {COMPETITION}` (see `fkp data download`)"
    )


# --------------------------------------------------------------------------------------------
# Opening a member (training.csv, ...) of a csv file, its zip, or the outer competition zip

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError)


def _corrupt(label: str, e: BaseException) -> FKPDataError:
    return FKPDataError(
        f"{label}: the zip is truncated or corrupt ({e}); download it again "
        f"(`kaggle competitions download -c {COMPETITION}`)"
    )


def _open_member(
    path: Path, member: str, stack: contextlib.ExitStack
) -> tuple[IO[bytes], int, str]:
    """Open ``member`` for streaming. Returns (binary stream, uncompressed size, label for errors).

    ``path`` is the csv itself, a zip holding it (e.g. ``training.zip``), or Kaggle's competition
    zip holding ``training.zip`` (read into memory: compressed, it is a fraction of the csv).
    """
    path = Path(path)
    if path.suffix.lower() != ".zip":
        f = stack.enter_context(open(path, "rb"))
        return f, os.fstat(f.fileno()).st_size, path.name
    try:
        z = stack.enter_context(zipfile.ZipFile(path))
        names = z.namelist()
        inner = member[: -len(".csv")] + ".zip"
        if member in names:
            info = z.getinfo(member)
            return stack.enter_context(z.open(info)), info.file_size, f"{member} in {path.name}"
        if inner in names:
            zi = stack.enter_context(zipfile.ZipFile(io.BytesIO(z.read(inner))))
            if member not in zi.namelist():
                raise FKPDataError(f"{inner} in {path.name}: no {member} inside")
            info = zi.getinfo(member)
            label = f"{member} in {inner} in {path.name}"
            return stack.enter_context(zi.open(info)), info.file_size, label
        csvs = [n for n in names if n.lower().endswith(".csv") and not n.startswith("__MACOSX")]
        if len(csvs) == 1 and path.name != COMPETITION_ZIP:
            info = z.getinfo(csvs[0])
            return stack.enter_context(z.open(info)), info.file_size, f"{csvs[0]} in {path.name}"
        raise FKPDataError(f"{path.name}: no {member} inside (it holds {', '.join(names)})")
    except _ZIP_ERRORS as e:
        raise _corrupt(path.name, e) from e


def _read_member(path: Path, member: str) -> tuple[bytes, str]:
    label = Path(path).name
    try:
        with contextlib.ExitStack() as stack:
            f, _, label = _open_member(Path(path), member, stack)
            data = f.read()
    except _ZIP_ERRORS as e:
        raise _corrupt(label, e) from e
    if not data.strip():
        raise FKPDataError(f"{label}: the file is empty (expected a header and rows)")
    return data, label


def read_member_bytes(path: Path, member: str) -> bytes:
    """All bytes of ``member`` (e.g. ``IdLookupTable.csv``) from a csv, its zip, or the outer zip."""
    return _read_member(path, member)[0]


# --------------------------------------------------------------------------------------------
# Parsing pixels: a few vectorised passes over a block of rows, no Python work per pixel


def _parse_pixel_block(fields: Sequence[bytes | memoryview], out: np.ndarray) -> bool:
    """Fast path: parse well-formed ``Image`` fields into ``out``, uint8 (N, 9216); True if done.

    Well-formed means Kaggle's layout: tokens of 1-3 digits separated by single spaces, 9216 per
    field, values 0-255. Anything else returns False and the caller takes the careful path, which
    accepts harmless variations (runs of spaces, tabs) and names the first real error.

    The fields are joined with spaces (4 spaces in front as padding), the separators found in one
    pass, and each token's value read from the (up to) 3 bytes before its separator.
    """
    n = len(fields)
    lengths = np.fromiter((len(f) for f in fields), dtype=np.int64, count=n)
    joined = b" ".join([b"   ", *fields]) + b" "
    p = np.frombuffer(joined, dtype=np.uint8)
    body = p[4:]
    sep = np.flatnonzero(body == 32)
    if sep.size != n * N_PIXELS:
        return False
    # The last separator of each field must sit right after it: then every field has 9216 tokens.
    field_ends = np.cumsum(lengths + 1) - 1
    if not np.array_equal(sep[N_PIXELS - 1 :: N_PIXELS], field_ends):
        return False
    d1 = p[3:].take(sep)  # last digit of each token
    b2 = p[2:].take(sep)
    b3 = p[1:].take(sep)
    b4 = p.take(sep)
    s2 = b2 == 32  # one-digit token
    s3 = b3 == 32
    s4 = b4 == 32
    d1 -= 48
    b2 -= 48
    b3 -= 48
    # Every byte of every token is a digit and no token is longer than 3 digits.
    ok = (d1 < 10) & (s2 | ((b2 < 10) & (s3 | ((b3 < 10) & s4))))
    if not ok.all():
        return False
    np.logical_or(s2, s3, out=s3)  # s3 now: token shorter than 3 digits
    np.logical_not(s2, out=s2)  # s2 now: token has a tens digit
    np.logical_not(s3, out=s3)  # s3 now: token has a hundreds digit
    b2 *= s2
    b3 *= s3
    value = b3.astype(np.uint16)
    value *= 100
    b2 *= 10
    value += b2
    value += d1
    if value.max(initial=0) > 255:
        return False
    np.copyto(out, value.reshape(n, N_PIXELS), casting="unsafe")
    return True


def _parse_pixel_field(
    field: bytes, label: str, row: int, column: str, ncol: int = 0
) -> np.ndarray | FKPDataError:
    """Careful path for one ``Image`` field: uint8 (9216,) or the error naming row and column.

    Tokens are runs of digits separated by any run of spaces or tabs.
    """
    field = bytes(field)
    here = where(label, row, column)
    if b"," in field and ncol:
        found = ncol + field.count(b",")
        return FKPDataError(
            f"{where(label, row)}: expected {ncol} fields, found {found} "
            f"(an extra field near column {column})"
        )
    a = np.frombuffer(field, dtype=np.uint8)
    digit = (a >= 48) & (a <= 57)
    space = (a == 32) | (a == 9)
    bad = ~(digit | space)
    if bad.any():
        i = int(np.argmax(bad))
        start = max(field.rfind(b" ", 0, i), field.rfind(b"\t", 0, i)) + 1
        ends = [e for e in (field.find(b" ", i), field.find(b"\t", i)) if e >= 0]
        token = field[start : min(ends) if ends else len(field)]
        pixel = len(field[:start].split()) + 1
        return FKPDataError(
            f"{here}: pixel {pixel} is {token.decode('latin-1')!r}, not an integer 0-255"
        )
    prev = np.concatenate(([False], digit[:-1]))
    nxt = np.concatenate((digit[1:], [False]))
    starts = np.flatnonzero(digit & ~prev)
    ends = np.flatnonzero(digit & ~nxt) + 1
    if starts.size != N_PIXELS:
        return FKPDataError(f"{here}: expected {N_PIXELS} pixels (96x96), found {starts.size}")
    tok_len = ends - starts
    values = np.zeros(starts.size, np.int64)
    for k in range(3):  # up to three digits, right-aligned
        has = tok_len > k
        values += np.where(has, (a[np.maximum(ends - 1 - k, 0)].astype(np.int64) - 48), 0) * 10**k
    over = np.flatnonzero((tok_len > 3) | (values > 255))
    if over.size:
        t = int(over[0])
        token = field[starts[t] : ends[t]].decode()
        return FKPDataError(
            f"{here}: pixel {t + 1} is {token}, outside the range 0-255 (at most 3 digits)"
        )
    return values.astype(np.uint8)


def parse_pixels(
    fields: Sequence[bytes], path: str | os.PathLike = "Image", column: str = "Image"
) -> np.ndarray:
    """Parse ``Image`` fields (9216 space-separated integers 0-255 each) into uint8 (N, 96, 96).

    Vectorised over all pixels; raises :class:`FKPDataError` naming the first bad row (1-based)
    and ``column``.
    """
    out = np.empty((len(fields), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    _parse_images_into(out.reshape(len(fields), N_PIXELS), list(fields), Path(path).name, 1, column)
    return out


def _parse_images_into(
    out: np.ndarray, fields: list, label: str, first_row: int, column: str, ncol: int = 0
) -> None:
    """Parse ``fields`` (rows ``first_row``...) into ``out`` (N, 9216): fast path, else careful."""
    if not fields:
        return
    if _parse_pixel_block(fields, out):
        return
    for i, f in enumerate(fields):
        parsed = _parse_pixel_field(bytes(f), label, first_row + i, column, ncol)
        if isinstance(parsed, FKPDataError):
            raise parsed
        out[i] = parsed


# --------------------------------------------------------------------------------------------
# Parsing the table: stream the csv in blocks, locate fields with bytes.find (C speed)

_CHUNK_BYTES = 1 << 21
"""Bytes read per block while streaming a csv (tests lower it to exercise block boundaries)."""


def _parse_header(line: bytes, label: str, expected: Sequence[str]) -> list[str]:
    line = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
    header = [h.strip().strip(b'"').decode("utf-8", "replace") for h in line.split(b",")]
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    dup = sorted({c for c in header if header.count(c) > 1})
    if missing or extra or dup:
        msg = []
        if missing:
            msg.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            msg.append(f"unexpected column(s) {', '.join(repr(c) for c in extra)}")
        if dup:
            msg.append(f"duplicate column(s) {', '.join(dup)}")
        raise FKPDataError(
            f"{label}, header row: {'; '.join(msg)} (expected the {len(expected)} columns "
            f"{expected[0]}, ..., {expected[-1]})"
        )
    return header


@dataclass
class _Table:
    """A parsed image table: header, the other columns' raw fields, images uint8 (N, 96, 96)."""

    header: list[str]
    other_columns: list[str]
    other_fields: list[bytes]  # row-major: N * len(other_columns) raw fields
    images: np.ndarray
    label: str


def _read_image_table(f: IO[bytes], size: int, label: str, expected: Sequence[str]) -> _Table:
    """Stream a Kaggle csv with an ``Image`` column from ``f`` and parse it.

    Memory: the images array (sized from ``size``, the csv's byte count, and trimmed at the end)
    plus one block of text and its temporaries.
    """
    header: list[str] | None = None
    ncol = 0
    other_text: list[bytes] = []  # per row: the non-image fields, comma-joined
    images: np.ndarray | None = None
    n = 0  # rows parsed
    consumed = 0  # bytes of data rows consumed
    blank_row = 0  # row number of a blank line, if one was seen
    parts: list[bytes] = []  # text carried over to the next block
    eof = False
    while not eof:
        block = f.read(_CHUNK_BYTES)
        eof = not block
        if not eof and b"\n" not in block:
            parts.append(block)
            continue
        data = b"".join([*parts, block]) if parts else block
        parts = []
        if header is None:
            nl = data.find(b"\n")
            if nl < 0:
                nl = len(data)
            if not data[:nl].strip():
                if data.strip():
                    raise FKPDataError(f"{label}: the first line is empty (expected the header)")
                raise FKPDataError(f"{label}: the file is empty (expected a header and rows)")
            header = _parse_header(data[:nl], label, expected)
            ncol = len(header)
            data = data[nl + 1 :]
        cut = len(data) if eof else data.rfind(b"\n") + 1
        if cut < len(data):
            parts.append(data[cut:])
        spans, texts, blank_row = _locate_rows(data, cut, label, n, header, blank_row)
        other_text += texts
        k = len(spans)
        if k:
            if images is None or n + k > len(images):
                images = _grow(images, n + k, size, consumed + cut, n + k)
            view = memoryview(data)
            _parse_images_into(
                images[n : n + k].reshape(k, N_PIXELS),
                [view[s:t] for s, t in spans],
                label,
                n + 1,
                "Image",
                ncol,
            )
            del view
        n += k
        consumed += cut
    if header is None:
        raise FKPDataError(f"{label}: the file is empty (expected a header and rows)")
    if n == 0 or images is None:
        raise FKPDataError(f"{label}: the file has a header but no rows")
    if len(images) != n:
        images.resize((n, IMAGE_SIZE, IMAGE_SIZE), refcheck=False)  # in place, no copy
    others = [c for c in header if c != "Image"]
    fields = b",".join(other_text).split(b",") if others else []
    return _Table(header, others, fields, images, label)


def _grow(images: np.ndarray | None, need: int, size: int, seen_bytes: int, seen_rows: int):
    """Allocate or enlarge the images array: room for the rows the file's size suggests."""
    per_row = max(seen_bytes / max(seen_rows, 1), 2 * N_PIXELS)
    upper = size // (2 * N_PIXELS) + 1  # every row holds at least 9216 digits and separators
    estimate = min(upper, math.ceil(size / per_row * 1.02) + 4)
    cap = max(need, estimate, int((len(images) if images is not None else 0) * 1.25) + 8)
    if images is None:
        return np.empty((cap, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    images.resize((cap, IMAGE_SIZE, IMAGE_SIZE), refcheck=False)
    return images


def _locate_rows(
    data: bytes, cut: int, label: str, n: int, header: list[str], blank_row: int
) -> tuple[list[tuple[int, int]], list[bytes], int]:
    """Find each row's Image span and its other fields' text in ``data[:cut]``.

    Python work per row (not per pixel): a few ``find`` calls at C speed. Rows are numbered from
    ``n + 1``. Returns (image spans, the other fields comma-joined per row, the row number of an
    empty line seen so far or 0). An empty line is fine at the end of the file, an error before
    more rows.
    """
    ncol, j = len(header), header.index("Image")
    right = ncol - 1 - j
    spans: list[tuple[int, int]] = []
    texts: list[bytes] = []
    pos = 0
    row = n
    while pos < cut:
        e = data.find(b"\n", pos, cut)
        if e < 0:
            e = cut
        end = e - 1 if e > pos and data[e - 1] == 13 else e
        if end - pos < 64 and not data[pos:end].strip():
            blank_row = blank_row or row + 1
            pos = e + 1
            continue
        row += 1
        if blank_row:
            raise FKPDataError(
                f"{where(label, blank_row)}: the line is empty but more rows follow; remove it"
            )
        # Image starts after the j-th comma and ends before the (ncol-1-j)-th comma from the end.
        s, t, complete = pos, end, True
        for _ in range(j):
            c = data.find(b",", s, end)
            if c < 0:
                complete = False
                break
            s = c + 1
        for _ in range(right if complete else 0):
            c = data.rfind(b",", s, t)
            if c < 0:
                complete = False
                break
            t = c
        if not complete:
            found = data.count(b",", pos, end) + 1
            raise FKPDataError(
                f"{where(label, row, header[found])}: missing; expected {ncol} fields "
                f"({header[0]}, ..., {header[-1]}), found {found}"
            )
        if j and right:
            texts.append(data[pos : s - 1] + b"," + data[t + 1 : end])
        elif j:
            texts.append(data[pos : s - 1])
        elif right:
            texts.append(data[t + 1 : end])
        while s < t and data[s] in (32, 34):  # leading spaces or a quote
            s += 1
        while t > s and data[t - 1] in (32, 34, 9):
            t -= 1
        spans.append((s, t))
        pos = e + 1
    return spans, texts, blank_row


def _parse_column_values(
    table: _Table, columns: Sequence[str], convert: Callable[[bytes], float | int], what: str
) -> list[np.ndarray]:
    """Convert some non-image columns (raw fields) with ``convert``; empty fields become NaN."""
    k = len(table.other_columns)
    out = []
    for col in columns:
        i = table.other_columns.index(col)
        raw = table.other_fields[i::k]
        try:
            vals = [convert(v) if v else math.nan for v in raw]
        except ValueError:
            vals = []
            for r, v in enumerate(raw, start=1):
                t = v.strip().strip(b'"').strip()
                if not t:
                    vals.append(math.nan)
                    continue
                try:
                    vals.append(convert(t))
                except ValueError:
                    raise FKPDataError(
                        f"{where(table.label, r, col)}: {v.decode('utf-8', 'replace')!r} is not "
                        f"{what}"
                    ) from None
        out.append(np.array(vals, dtype=np.float64))
    return out


def parse_keypoints(table: _Table) -> np.ndarray:
    """The 30 coordinate columns as float32 (N, 30) pixels, NaN where empty.

    Checks that every value is a number in :data:`keypoints.LABEL_RANGE` (the frame
    [-0.5, 95.5] and the half pixel annotators overhang it) and that x and y come in pairs.
    """
    cols = _parse_column_values(table, KEYPOINT_COLUMNS, float, "a number")
    out = np.stack(cols, axis=1)
    nan = np.isnan(out)
    low, high = LABEL_RANGE
    bad = ~nan & ~((out >= low) & (out <= high))
    if bad.any():
        r, j = np.argwhere(bad)[0]
        raise FKPDataError(
            f"{where(table.label, int(r) + 1, KEYPOINT_COLUMNS[j])}: {out[r, j]:g} is outside the "
            f"96x96 frame: labels lie in [{low:g}, {high:g}] px (the image's [-0.5, 95.5] and "
            f"{LABEL_MARGIN:g} px around it)"
        )
    unpaired = nan[:, 0::2] != nan[:, 1::2]
    if unpaired.any():
        r, k = np.argwhere(unpaired)[0]
        have, lack = ("x", "y") if not nan[r, 2 * k] else ("y", "x")
        raise FKPDataError(
            f"{where(table.label, int(r) + 1, f'{KEYPOINT_NAMES[k]}_{lack}')}: "
            f"{KEYPOINT_NAMES[k]}_{have} is given but {KEYPOINT_NAMES[k]}_{lack} is missing "
            "(Kaggle gives both coordinates of a keypoint or neither)"
        )
    return out.astype(np.float32)


def _parse_ids(table: _Table, column: str = "ImageId") -> np.ndarray:
    (vals,) = _parse_column_values(table, [column], int, "an integer id")
    if np.isnan(vals).any():
        r = int(np.flatnonzero(np.isnan(vals))[0])
        raise FKPDataError(f"{where(table.label, r + 1, column)}: the id is empty")
    ids = vals.astype(np.int64)
    _, first = np.unique(ids, return_index=True)
    if len(first) != len(ids):
        r = int(np.setdiff1d(np.arange(len(ids)), first)[0])
        r0 = int(np.flatnonzero(ids == ids[r])[0])
        raise FKPDataError(
            f"{where(table.label, r + 1, column)}: {column} {ids[r]} appears more than once "
            f"(also in row {r0 + 1})"
        )
    return ids


def _parse_training_stream(f: IO[bytes], size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    table = _read_image_table(f, size, label, TRAINING_COLUMNS)
    return table.images, parse_keypoints(table)


def _parse_test_stream(f: IO[bytes], size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    table = _read_image_table(f, size, label, TEST_COLUMNS)
    return table.images, _parse_ids(table)


def parse_training_bytes(data: bytes, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse training.csv bytes into (images uint8 (N,96,96), keypoints float32 (N,30) pixels)."""
    return _parse_training_stream(io.BytesIO(data), len(data), Path(path).name)


def parse_test_bytes(data: bytes, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse test.csv bytes into (images uint8 (N,96,96), image_ids int64 (N,))."""
    return _parse_test_stream(io.BytesIO(data), len(data), Path(path).name)


def _parse_source(source: Path, member: str, parse) -> tuple[np.ndarray, np.ndarray]:
    label = source.name
    try:
        with contextlib.ExitStack() as stack:
            f, size, label = _open_member(source, member, stack)
            return parse(f, size, label)
    except _ZIP_ERRORS as e:
        raise _corrupt(label, e) from e


# --------------------------------------------------------------------------------------------
# The cache: parsed arrays in .npz, keyed by the source's path, size and mtime, written atomically

CACHE_VERSION = 2
_warned_cache = False


def _source_key(source: Path, member: str) -> str:
    st = source.stat()
    return f"{source.resolve()}|{member}|{st.st_size}|{st.st_mtime_ns}|v{CACHE_VERSION}"


def cache_path(source: str | os.PathLike, member: str) -> Path:
    """The ``.npz`` holding the parsed arrays of ``member`` of ``source`` (in ``FKP_CACHE_DIR``).

    The name depends on the source's absolute path, its size and its modification time, so a
    changed file gets a new cache entry (older entries for the same path are then removed).
    """
    source = Path(source)
    where_hash = hashlib.sha256(f"{source.resolve()}|{member}".encode()).hexdigest()[:12]
    state_hash = hashlib.sha256(_source_key(source, member).encode()).hexdigest()[:12]
    stem = member.replace(".csv", "")
    return default_cache_dir() / "parsed" / f"{stem}-{where_hash}-{state_hash}.npz"


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (.npz) via a temporary file and a rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, expect: dict[str, tuple[np.dtype, tuple[int, ...]]], key: str):
    """The cached arrays if ``path`` is complete and made from this very source, else None.

    ``expect`` maps each array name to its dtype and trailing shape; all share their first axis.
    """
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            if str(z["source_key"]) != key:
                return None
            out = {k: z[k] for k in expect}
    except Exception:  # truncated, damaged or foreign: rebuilt, never trusted
        return None
    lengths = {len(a) for a in out.values()}
    for k, (dtype, tail) in expect.items():
        if out[k].dtype != dtype or out[k].shape[1:] != tail:
            return None
    if len(lengths) != 1 or 0 in lengths:
        return None
    return out


def _tidy_cache(keep: Path) -> None:
    """Remove older cache entries of the same source and temporary files over an hour old."""
    prefix = keep.name.rsplit("-", 1)[0]
    now = time.time()
    for p in keep.parent.glob(f"{prefix}-*"):
        try:
            if p.suffix == ".npz" and p != keep:
                p.unlink()
            elif p.suffix == ".tmp" and now - p.stat().st_mtime > 3600:
                p.unlink()
        except OSError:
            pass


def _load_parsed(
    source: Path,
    member: str,
    parse,
    expect: dict[str, tuple[np.dtype, tuple[int, ...]]],
    use_cache: bool,
) -> tuple[np.ndarray, ...]:
    global _warned_cache
    cache = cache_path(source, member) if use_cache else None
    key = _source_key(source, member)
    if cache is not None:
        hit = _load_cached(cache, expect, key)
        if hit is not None:
            return tuple(hit[k] for k in expect)
    arrays = _parse_source(source, member, parse)
    if cache is not None:
        try:
            _save_atomic(cache, source_key=np.array(key), **dict(zip(expect, arrays, strict=True)))
            _tidy_cache(cache)
        except Exception as e:  # a read-only or full cache dir costs speed, not correctness
            if not _warned_cache:
                _warned_cache = True
                warnings.warn(
                    f"fkp: could not write the parsed-data cache {cache} ({e}); loading will "
                    "parse the csv every time (set FKP_CACHE_DIR to a writable directory)",
                    stacklevel=3,
                )
    return arrays


# --------------------------------------------------------------------------------------------
# Public loaders

_TRAINING_ARRAYS = {
    "images": (np.dtype(np.uint8), (IMAGE_SIZE, IMAGE_SIZE)),
    "keypoints": (np.dtype(np.float32), (len(KEYPOINT_COLUMNS),)),
}
_TEST_ARRAYS = {
    "images": (np.dtype(np.uint8), (IMAGE_SIZE, IMAGE_SIZE)),
    "image_ids": (np.dtype(np.int64), ()),
}


def load_training(data_dir: str | os.PathLike | None = None, *, cache: bool = True) -> TrainingSet:
    """Load ``training.csv`` (or ``training.zip``, or the competition zip) from the data directory.

    Returns a :class:`TrainingSet`: images uint8 (N, 96, 96), keypoints float32 (N, 30) in pixels
    with NaN for missing, and the 1-based row ids. No row is dropped. ``cache=False`` parses the
    file without reading or writing the cache.
    """
    d = globals()["data_dir"](data_dir)
    src = find_file(TRAINING_NAMES, d)
    images, keypoints = _load_parsed(
        src, "training.csv", _parse_training_stream, _TRAINING_ARRAYS, cache
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
    images, ids = _load_parsed(src, "test.csv", _parse_test_stream, _TEST_ARRAYS, cache)
    return TestSet(images=images, image_ids=ids, source=data_source(d), path=src)


def _read_small_csv(path: Path, member: str, columns: Sequence[str]) -> tuple[pd.DataFrame, str]:
    data, label = _read_member(path, member)
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False).fillna("")
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        row = int(m.group(1)) - 1 if m else None
        raise FKPDataError(f"{where(label, row)}: {e}") from e
    header = [str(c).strip() for c in df.columns]
    df.columns = header
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    if missing or extra:
        msg = "; ".join(
            m
            for m in (
                f"missing column(s) {', '.join(missing)}" if missing else "",
                f"unexpected column(s) {', '.join(extra)}" if extra else "",
            )
            if m
        )
        raise FKPDataError(f"{label}, header row: {msg} (expected {', '.join(columns)})")
    if df.empty:
        raise FKPDataError(f"{label}: the file has a header but no rows")
    return df, label


def _int_column(df: pd.DataFrame, col: str, label: str) -> np.ndarray:
    text = df[col].str.strip()
    ok = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise FKPDataError(f"{where(label, r + 1, col)}: {df[col].iloc[r]!r} is not an integer")
    return text.astype(np.int64).to_numpy()


def load_lookup(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load ``IdLookupTable.csv``: RowId, ImageId (int64), FeatureName (str), Location (empty).

    Checks that RowIds are unique integers, FeatureNames are Kaggle's 30 columns and no image asks
    for the same feature twice.
    """
    d = globals()["data_dir"](data_dir)
    path = find_file((LOOKUP_NAME,), d)
    df, label = _read_small_csv(path, LOOKUP_NAME, LOOKUP_COLUMNS)
    df = df[list(LOOKUP_COLUMNS)].copy()
    for col in ("RowId", "ImageId"):
        df[col] = _int_column(df, col, label)
    df["FeatureName"] = df["FeatureName"].str.strip()
    unknown = ~df["FeatureName"].isin(KEYPOINT_COLUMNS)
    if unknown.any():
        r = int(np.flatnonzero(unknown.to_numpy())[0])
        raise FKPDataError(
            f"{where(label, r + 1, 'FeatureName')}: unknown feature {df['FeatureName'].iloc[r]!r}"
        )
    dup = df["RowId"].duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise FKPDataError(f"{where(label, r + 1, 'RowId')}: RowId {df['RowId'].iloc[r]} repeats")
    dup = df.duplicated(["ImageId", "FeatureName"])
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise FKPDataError(
            f"{where(label, r + 1, 'FeatureName')}: ImageId {df['ImageId'].iloc[r]} asks for "
            f"{df['FeatureName'].iloc[r]} twice"
        )
    df["Location"] = pd.to_numeric(df["Location"], errors="coerce").astype(np.float64)
    return df.reset_index(drop=True)


def load_sample_submission(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load ``SampleSubmission.csv``: RowId (int64), Location (float64)."""
    d = globals()["data_dir"](data_dir)
    path = find_file((SAMPLE_SUBMISSION_NAME,), d)
    df, label = _read_small_csv(path, SAMPLE_SUBMISSION_NAME, SUBMISSION_COLUMNS)
    df = df[list(SUBMISSION_COLUMNS)].copy()
    df["RowId"] = _int_column(df, "RowId", label)
    df["Location"] = pd.to_numeric(df["Location"], errors="coerce").astype(np.float64)
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
    1..N), Kaggle's column order. Values are clipped into the frame [-0.5, 95.5]
    (:func:`keypoints.clip_to_frame`). Every RowId of the lookup is written exactly once, in the
    lookup's order; a requested value that is NaN, or an image of the lookup without a
    prediction, is an error. The file is written atomically. Returns the table.
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
    for col in ("RowId", "ImageId", "FeatureName"):
        if col not in lookup.columns:
            raise FKPDataError(f"{LOOKUP_NAME}, header row: missing column {col}")
    missing = ~lookup["ImageId"].isin(pos.index).to_numpy()
    if missing.any():
        r = int(np.flatnonzero(missing)[0])
        raise FKPDataError(
            f"{where(LOOKUP_NAME, r + 1, 'ImageId')}: ImageId {lookup['ImageId'].iloc[r]} "
            f"has no prediction ({int(missing.sum())} lookup rows lack one)"
        )
    dup = lookup["RowId"].duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise FKPDataError(
            f"{where(LOOKUP_NAME, r + 1, 'RowId')}: RowId {lookup['RowId'].iloc[r]} repeats"
        )
    col = {c: i for i, c in enumerate(KEYPOINT_COLUMNS)}
    cols = lookup["FeatureName"].map(col)
    if cols.isna().any():
        r = int(np.flatnonzero(cols.isna().to_numpy())[0])
        raise FKPDataError(
            f"{where(LOOKUP_NAME, r + 1, 'FeatureName')}: unknown feature "
            f"{lookup['FeatureName'].iloc[r]!r}"
        )
    rows = pos.loc[lookup["ImageId"].to_numpy()].to_numpy()
    values = clip_to_frame(pred[rows, cols.to_numpy(dtype=np.int64)])
    if not np.isfinite(values).all():
        r = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"prediction for RowId {lookup['RowId'].iloc[r]} (ImageId "
            f"{lookup['ImageId'].iloc[r]}, {lookup['FeatureName'].iloc[r]}) is not finite"
        )
    out = pd.DataFrame({"RowId": lookup["RowId"].to_numpy(dtype=np.int64), "Location": values})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            out.to_csv(f, index=False, lineterminator="\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------------------------
# Getting Kaggle's files


def kaggle_credentials() -> str | None:
    """Where Kaggle API credentials are, or None: env vars, ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle").expanduser()
    for name in ("kaggle.json", "access_token"):
        if (config / name).is_file():
            return str(config / name)
    return None


COLAB_TOKEN_HELP = (
    "     In Google Colab, either:\n"
    "     a) add two secrets, KAGGLE_USERNAME and KAGGLE_KEY (the key icon in Colab's left bar;\n"
    "        the two fields of kaggle.json; switch on 'Notebook access'), then run in a cell\n"
    "        `from fkp_helpers import data; data.download()`, which reads them with\n"
    "        google.colab.userdata (a `!fkp ...` shell command cannot read Colab's secrets); or\n"
    "     b) upload kaggle.json to ~/.kaggle/: in a cell, `from google.colab import files;\n"
    "        files.upload()`, then `!mkdir -p ~/.kaggle && mv kaggle.json ~/.kaggle/ &&\n"
    "        chmod 600 ~/.kaggle/kaggle.json`, then `!fkp data download` or data.download().\n"
)
"""How to give Colab the Kaggle API token: Colab's secrets or an uploaded ``kaggle.json``."""


def _colab_secrets() -> str | None:
    """In a Colab notebook, copy the secrets KAGGLE_USERNAME and KAGGLE_KEY into the environment.

    Returns a label when both were found, else None (outside Colab, secrets absent, or this
    notebook not granted access to them).
    """
    if importlib.util.find_spec("google") is None:
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        user, key = userdata.get("KAGGLE_USERNAME"), userdata.get("KAGGLE_KEY")
    except Exception:  # not Colab, no such secret, access not granted, not in the kernel
        return None
    if not (user and key):
        return None
    os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"] = user, key
    return "Colab secrets KAGGLE_USERNAME/KAGGLE_KEY"


def download_steps(directory: str | os.PathLike) -> str:
    """The manual steps to get Kaggle's files into ``directory``."""
    d = str(directory)
    return (
        f"To get Kaggle's Facial Keypoints Detection files into {d}:\n"
        "  1. pip install kaggle\n"
        "  2. create an API token: kaggle.com > Settings > API > Create New Token, save it as\n"
        "     ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY.\n"
        f"{COLAB_TOKEN_HELP}"
        f"  3. accept the competition's rules: https://www.kaggle.com/c/{COMPETITION}/rules\n"
        f"  4. kaggle competitions download -c {COMPETITION} -p {d}\n"
        f"  5. cd {d} && unzip {COMPETITION_ZIP}   (optional: fkp reads the zip as it is)\n"
        f"Then point fkp at it: export FKP_DATA_DIR={d}   (or keep it as ./data)"
    )


def download(data_dir: str | os.PathLike | None = None) -> int:
    """Get Kaggle's files into ``data_dir`` (default ``$FKP_DATA_DIR``, else ``./data``).

    Uses Kaggle's own ``kaggle`` package when it is installed and credentials exist; otherwise
    prints the steps to do it by hand. Returns an exit code: 0 when the files are there.
    """
    if data_dir is None and not os.environ.get("FKP_DATA_DIR"):
        mounted = kaggle_input_dir()
        if mounted is not None:
            print(
                f"Kaggle's files are mounted in {mounted} (a Kaggle notebook): nothing to "
                "download; the loaders read them there, read-only, as they are."
            )
            return 0
    d = Path(data_dir or os.environ.get("FKP_DATA_DIR") or "data").expanduser()
    if _has_kaggle_files(d):
        print(f"Kaggle's files are already in {d}.")
        return 0
    creds = kaggle_credentials() or _colab_secrets()
    have_pkg = importlib.util.find_spec("kaggle") is not None
    if not (have_pkg and creds):
        lack = [] if have_pkg else ["the `kaggle` package is not installed"]
        if not creds:
            lack.append("no Kaggle API token was found")
        print(f"fkp: cannot download: {' and '.join(lack)}.\n{download_steps(d)}")
        return 1
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
        d.mkdir(parents=True, exist_ok=True)
        print(f"Downloading {COMPETITION} into {d} (credentials: {creds})...")
        api.competition_download_files(COMPETITION, path=str(d), quiet=False)
    except Exception as e:  # network, 403 (rules not accepted), bad token: say what to do
        print(f"fkp: the Kaggle download failed: {e}\n{download_steps(d)}")
        return 1
    outer = d / COMPETITION_ZIP
    if not outer.is_file():
        print(f"fkp: the download finished but {outer} is missing.\n{download_steps(d)}")
        return 1
    try:
        with zipfile.ZipFile(outer) as z:
            for name in (*TEST_NAMES, *TRAINING_NAMES, LOOKUP_NAME, SAMPLE_SUBMISSION_NAME):
                if name in z.namelist() and not (d / name).exists():
                    z.extract(name, d)
    except _ZIP_ERRORS as e:
        print(f"fkp: {_corrupt(outer.name, e)}")
        return 1
    print(f"Kaggle's files are in {d}. Use them with: export FKP_DATA_DIR={d}")
    return 0
