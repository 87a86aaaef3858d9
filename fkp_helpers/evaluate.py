"""Measuring keypoint predictions (chapter 6): errors in pixels, normalised errors, PCK, pose
breakdowns, and Kaggle's score of a submission file.

Every function takes ``y_true`` and ``y_pred`` as float ``(N, 30)`` arrays of pixels in the 96x96
frame, Kaggle's column order, and skips the coordinates that ``y_true`` leaves unlabelled (NaN):
a missing label is never scored as an error of zero nor as an error of anything else.

Two kinds of training rows dominate Kaggle's data: rows with the 4 core keypoints (eye centres,
nose tip, bottom lip) and rows with all 15. :func:`population` tells them apart so that a table can
report each separately, since a model can be good on one and poor on the other.

The normalised errors divide each point's distance from its label by the distance between the
face's two labelled eye centres (the 300-W benchmark's "inter-ocular" NME uses the outer eye
corners instead: ``normaliser="outer_corners"``), so that a 2-pixel miss counts more on a
small face than on a large one; PCK ("percentage of correct keypoints") is the fraction of points
within a given fraction of that distance.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fkp_helpers import augment
from fkp_helpers import data as fdata
from fkp_helpers import keypoints as K

PCK_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.2)
"""Default PCK thresholds, as fractions of the eye-centre distance (about 36 px on Kaggle's
faces: 1.8, 3.6 and 7.2 px)."""

POPULATIONS: tuple[str, ...] = ("4 keypoints", "15 keypoints", "other")
"""Labels of :func:`population`: rows with exactly the 4 core keypoints, rows with all 15, rest."""

MEAN_SHAPE = "mean shape"
"""Name of the baseline that predicts the training set's average face for every face."""

NORMALISERS: tuple[str, ...] = ("eye_centres", "outer_corners")
"""What a normalised error divides by: the distance between the eye **centres** (the book's
NME: 7,033 of Kaggle's 7,049 training rows have both; a face without them drops out) or
between the **outer eye corners** (the 300-W benchmark's inter-ocular NME, comparable with
published tables; only rows with both corners)."""


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.ndim == 1:
        t = t[None]
    if p.ndim == 1:
        p = p[None]
    p = np.broadcast_to(p, t.shape) if p.shape[0] == 1 else p
    if t.shape != p.shape or t.shape[-1] != 2 * fdata.N_KEYPOINTS:
        raise ValueError(
            f"y_true and y_pred must both have shape (N, 30); got {t.shape} and {p.shape}"
        )
    K.check_predictions(t, p)
    return t, p


def _points(keypoints: np.ndarray) -> np.ndarray:
    return K.as_points(np.asarray(keypoints, np.float64))


def _labelled_per_keypoint(keypoints: np.ndarray) -> np.ndarray:
    """How many rows label each of the 15 keypoints: int ``(15,)``."""
    return np.isfinite(_points(keypoints)).all(axis=-1).sum(axis=0)


# ---------------------------------------------------------------------------------------------
# Errors in pixels


def squared_errors(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Squared error of every coordinate, pixels², float64 ``(N, 30)``; NaN where unlabelled.

    ``y_pred`` may be one row ``(30,)`` (e.g. the mean shape), used for every face.
    """
    t, p = _pair(y_true, y_pred)
    return np.square(p - t)


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error in pixels² over every labelled coordinate (x and y counted apart)."""
    e = squared_errors(y_true, y_pred)
    return float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error in pixels over every labelled coordinate: Kaggle's metric.

    The same number as :func:`fkp_helpers.keypoints.masked_rmse`, which the training loop reports.
    """
    t, p = _pair(y_true, y_pred)
    return K.masked_rmse(t, p) if np.isfinite(t).any() else float("nan")


def per_keypoint_rmse(y_true: np.ndarray, y_pred: np.ndarray) -> pd.Series:
    """RMSE in pixels of each of the 15 keypoints (x and y pooled), indexed by keypoint name."""
    t, p = _pair(y_true, y_pred)
    return pd.Series(K.per_keypoint_rmse(t, p), name="rmse_px")


def face_rmse(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """RMSE in pixels of each face over its own labelled coordinates, ``(N,)``; NaN if none."""
    e = squared_errors(y_true, y_pred)
    n = np.isfinite(e).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.nansum(e, axis=1) / n)


def point_errors(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Distance in pixels between each predicted keypoint and its label, ``(N, 15)``; NaN where
    the keypoint is unlabelled."""
    t, p = _pair(y_true, y_pred)
    d = _points(p) - _points(t)
    return np.hypot(d[..., 0], d[..., 1])


def n_labelled(keypoints: np.ndarray) -> np.ndarray:
    """Number of labelled keypoints (both x and y present) of each face, int ``(N,)``."""
    return np.isfinite(_points(keypoints)).all(axis=-1).sum(axis=-1)


def population(keypoints: np.ndarray) -> np.ndarray:
    """Which kind of row each face is: ``"4 keypoints"`` (exactly the 4 core ones),
    ``"15 keypoints"`` (all labelled) or ``"other"``, as a string array ``(N,)``."""
    lab = np.isfinite(_points(keypoints)).all(axis=-1)
    core = np.zeros(fdata.N_KEYPOINTS, bool)
    core[list(fdata.CORE_INDICES)] = True
    out = np.full(len(lab), POPULATIONS[2], dtype=object)
    out[(lab == core).all(axis=1)] = POPULATIONS[0]
    out[lab.all(axis=1)] = POPULATIONS[1]
    return out.astype(str)


# ---------------------------------------------------------------------------------------------
# Normalised errors


def normaliser_distance(keypoints: np.ndarray, normaliser: str = "eye_centres") -> np.ndarray:
    """Each face's normalising distance in pixels, ``(N,)``: between the eye centres
    (:func:`~fkp_helpers.keypoints.eye_distance`) or the outer eye corners
    (:func:`~fkp_helpers.keypoints.outer_eye_corner_distance`); NaN where a point is missing."""
    k = np.atleast_2d(np.asarray(keypoints, np.float64))
    if normaliser == "eye_centres":
        return K.eye_distance(k)
    if normaliser == "outer_corners":
        return K.outer_eye_corner_distance(k)
    raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")


def normalised_errors(
    y_true: np.ndarray, y_pred: np.ndarray, normaliser: str = "eye_centres"
) -> np.ndarray:
    """Each point's error divided by the face's :func:`normaliser_distance` (from ``y_true``),
    ``(N, 15)``, unitless; NaN where the point or the normaliser is unlabelled."""
    t, p = _pair(y_true, y_pred)
    d = normaliser_distance(t, normaliser)
    with np.errstate(invalid="ignore", divide="ignore"):
        return point_errors(t, p) / np.where(d > 0, d, np.nan)[:, None]


def nme(y_true: np.ndarray, y_pred: np.ndarray, normaliser: str = "eye_centres") -> float:
    """Normalised mean error: the mean of :func:`normalised_errors` over every labelled point
    (unitless; 0.05 means a typical miss of 5% of the normalising distance). The default divides
    by the eye-centre distance; ``normaliser="outer_corners"`` gives 300-W's inter-ocular NME."""
    e = normalised_errors(y_true, y_pred, normaliser)
    return float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")


def pck(
    y_true: np.ndarray, y_pred: np.ndarray, thresholds: Sequence[float] = PCK_THRESHOLDS
) -> dict[float, float]:
    """Percentage of correct keypoints: for each threshold t, the fraction (0-1) of labelled
    points whose error is at most t eye-centre distances."""
    e = normalised_errors(y_true, y_pred)
    e = e[np.isfinite(e)]
    return {float(t): float((e <= t).mean()) if e.size else float("nan") for t in thresholds}


# ---------------------------------------------------------------------------------------------
# Tables


def mean_shape_predictions(train_keypoints: np.ndarray, n: int) -> np.ndarray:
    """The mean-shape baseline: the training set's average face (pixels) repeated for ``n``
    faces, float32 ``(n, 30)``."""
    with warnings.catch_warnings():  # a column nobody labelled stays NaN, without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        shape = K.mean_shape(train_keypoints)
    return np.broadcast_to(shape, (n, 2 * fdata.N_KEYPOINTS)).copy()


def _with_baseline(
    y_true: np.ndarray, predictions: Mapping[str, np.ndarray], train_keypoints
) -> dict[str, np.ndarray]:
    preds = {}
    if train_keypoints is not None:
        preds[MEAN_SHAPE] = mean_shape_predictions(train_keypoints, len(y_true))
    preds.update(predictions)
    return preds


def evaluation_table(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    train_keypoints: np.ndarray | None = None,
    thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> pd.DataFrame:
    """One row per model: RMSE and MSE (pixels, over all labelled coordinates), RMSE on the rows
    with 4 keypoints and on those with all 15, NME and PCK at each threshold.

    predictions: name -> ``(N, 30)`` pixels for the faces of ``y_true``. With
    ``train_keypoints`` the mean-shape baseline (their average face) is the first row.
    """
    y_true = np.asarray(y_true, np.float64)
    pop = population(y_true)
    rows = {}
    for name, pred in _with_baseline(y_true, predictions, train_keypoints).items():
        row = {"RMSE (px)": rmse(y_true, pred), "MSE (px²)": mse(y_true, pred)}
        for kind in POPULATIONS[:2]:
            sel = pop == kind
            row[f"RMSE, {kind} rows (px)"] = (
                rmse(y_true[sel], np.asarray(pred)[sel]) if sel.any() else float("nan")
            )
        row["NME"] = nme(y_true, pred)
        for t, v in pck(y_true, pred, thresholds).items():
            row[f"PCK@{t:g}"] = v
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def per_keypoint_table(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    train_keypoints: np.ndarray | None = None,
) -> pd.DataFrame:
    """RMSE in pixels per keypoint (rows, Kaggle's order) and model (columns), plus the number of
    labelled faces per keypoint in column ``n``. With ``train_keypoints``, a mean-shape column."""
    y_true = np.asarray(y_true, np.float64)
    cols = {
        name: per_keypoint_rmse(y_true, pred)
        for name, pred in _with_baseline(y_true, predictions, train_keypoints).items()
    }
    table = pd.DataFrame(cols)
    table["n"] = _labelled_per_keypoint(y_true)
    table.index.name = "keypoint"
    return table


# ---------------------------------------------------------------------------------------------
# Pose


def pose_features(keypoints: np.ndarray) -> pd.DataFrame:
    """Head pose proxies from labelled keypoints (pixels), one row per face:

    * ``yaw``: the nose tip's offset from the eye midpoint along the eye line, in eye-centre
      distances; 0 for a frontal face, positive when the nose is nearer the subject's left eye
      (the head turned towards the subject's left, the image's right).
    * ``tilt_deg``: :func:`~fkp_helpers.keypoints.head_tilt_deg`, degrees, counter-clockwise
      positive on screen (the book's one convention).
    * ``iod_px``: the eye-centre distance in pixels, the face's scale.

    NaN where an eye centre (or, for ``yaw``, the nose tip) is missing.
    """
    p = _points(keypoints)
    le, re, nose = p[:, K.LEFT_EYE], p[:, K.RIGHT_EYE], p[:, K.NOSE_TIP]
    d = le - re
    iod = K.eye_distance(keypoints)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = d / iod[:, None]
        yaw = ((nose - (le + re) / 2) * u).sum(axis=1) / iod
    return pd.DataFrame({"yaw": yaw, "tilt_deg": K.head_tilt_deg(keypoints), "iod_px": iod})


def binned_error(
    feature: np.ndarray, errors: np.ndarray, bins: int | Sequence[float] = 5
) -> pd.DataFrame:
    """Mean, median and count of per-face ``errors`` in bins of ``feature`` (equal-count bins
    when ``bins`` is an int, else the given edges). Faces with NaN in either are left out.

    Returns one row per bin: ``low``, ``high``, ``centre`` (the bin's median feature), ``n``,
    ``mean``, ``median``.
    """
    f = np.asarray(feature, np.float64)
    e = np.asarray(errors, np.float64)
    ok = np.isfinite(f) & np.isfinite(e)
    f, e = f[ok], e[ok]
    if f.size == 0:
        raise ValueError("no face has both the feature and an error")
    if isinstance(bins, int):
        edges = np.unique(np.quantile(f, np.linspace(0, 1, bins + 1)))
    else:
        edges = np.asarray(bins, np.float64)
    which = np.clip(np.searchsorted(edges, f, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = which == b
        if not sel.any():
            continue
        rows.append(
            {
                "low": edges[b],
                "high": edges[b + 1],
                "centre": float(np.median(f[sel])),
                "n": int(sel.sum()),
                "mean": float(e[sel].mean()),
                "median": float(np.median(e[sel])),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# How precise are the labels?

NEAR_IDENTICAL = 0.95
"""Two faces count as near-identical frames when their eye-aligned thumbnails
(:func:`fkp_helpers.splits.eye_aligned_thumbnails`) correlate at least this much (the split's
near-duplicate groups link faces from 0.85)."""

REGISTRATION_MARGIN = 16
"""Pixels left out at each edge when two faces are compared: the 64x64 middle holds the face,
the edges mostly background and the replicated border of the stand-in's placement."""

LAID_OVER = 0.98
"""The least correlation of two registered faces' middles for their label difference to count in
:func:`label_noise`: below it the frames differ by more than the labels (a blink, a smile)."""


def near_identical_pairs(
    images: np.ndarray, keypoints: np.ndarray, threshold: float = NEAR_IDENTICAL
) -> np.ndarray:
    """Pairs of near-identical faces: each face with both eye centres labelled, with the other
    such face whose eye-aligned thumbnail correlates most with its own, where that correlation
    is at least ``threshold``. Returns int ``(M, 2)`` row indices, the smaller first, each pair
    once, sorted. ``images``: uint8 ``(N, 96, 96)``; ``keypoints``: ``(N, 30)`` pixels."""
    from fkp_helpers.splits import eye_aligned_thumbnails, thumbnail_correlations

    images, keypoints = np.asarray(images), np.asarray(keypoints, np.float64)
    if len(images) != len(keypoints):
        raise ValueError(f"{len(images)} images but {len(keypoints)} rows of keypoints")
    le, re = K.eye_centres(keypoints)
    rows = np.flatnonzero(np.isfinite(le).all(1) & np.isfinite(re).all(1))
    if len(rows) < 2:
        return np.empty((0, 2), int)
    best, corr = np.empty(len(rows), int), np.empty(len(rows))
    for block, c in thumbnail_correlations(eye_aligned_thumbnails(images[rows], keypoints[rows])):
        c[np.arange(len(c)), block] = -np.inf  # not itself
        best[block], corr[block] = c.argmax(1), c.max(1)
    keep = np.flatnonzero(corr >= threshold)
    pairs = np.sort(np.stack([rows[keep], rows[best[keep]]], axis=1), axis=1)
    return np.unique(pairs, axis=0)


def register_faces(moving, fixed, start, margin=REGISTRATION_MARGIN):
    """Lay ``moving`` over ``fixed`` by their pixels alone: the similarity transform (rotation,
    uniform scale, shift) that makes their middles correlate best. ``start``: a first guess,
    a 2x3 matrix from ``fixed``'s pixels to ``moving``'s. Images: ``(96, 96)``, any grey scale.

    Returns ``(matrix, correlation)``: the fitted 2x3 matrix (``fixed`` pixels -> ``moving``
    pixels) and the correlation of the two middles laid over each other (1: identical up to
    brightness and contrast).
    """
    from scipy import ndimage, optimize

    moving = ndimage.gaussian_filter(np.asarray(moving, np.float32), 1.0)[None]  # smooth: a
    fixed = ndimage.gaussian_filter(np.asarray(fixed, np.float32), 1.0)  # smoother cost
    inner = (slice(margin, -margin),) * 2
    c = K.CENTRE  # rotate and scale about the frame's centre: the shift stays separate

    def to_matrix(p):  # p = (a, b, tx, ty): x' - c = a (x - c) - b (y - c) + tx, ...
        a, b, tx, ty = p
        return np.array([[a, -b, c + tx - a * c + b * c], [b, a, c + ty - b * c - a * c]])

    def cost(p):
        laid = augment.warp(moving, to_matrix(p)[None])[0]
        return -np.corrcoef(laid[inner].ravel(), fixed[inner].ravel())[0, 1]

    s = np.asarray(start, np.float64)
    a, b = s[0, 0], s[1, 0]
    p0 = [a, b, s[0, 2] - c + a * c - b * c, s[1, 2] - c + b * c + a * c]
    fit = optimize.minimize(cost, p0, method="Powell", options={"xtol": 1e-4, "ftol": 1e-7})
    return to_matrix(fit.x), float(-fit.fun)


def registration_start(moving_keypoints: np.ndarray, fixed_keypoints: np.ndarray) -> np.ndarray:
    """The first guess for :func:`register_faces`: the 2x3 similarity from the fixed face's
    pixels to the moving face's that maps the fixed face's labelled eye centres onto the moving
    face's (keypoints: ``(30,)`` pixels, both eye centres labelled)."""
    from fkp_helpers.photo import eye_alignment_matrix

    le, re = K.eye_centres(np.asarray(fixed_keypoints, np.float64)[None])
    eyes = {"left_eye_center": le[0], "right_eye_center": re[0]}
    return K.invert_affine(eye_alignment_matrix(moving_keypoints, eyes=eyes))


def label_disagreement(
    images: np.ndarray, keypoints: np.ndarray, pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each pair ``(i, j)`` of :func:`near_identical_pairs`: lay face ``i`` over face ``j``
    (:func:`register_faces`, starting from :func:`registration_start`), carry ``i``'s labels onto ``j`` and subtract ``j``'s own.

    Returns ``(correlation, differences)``: float ``(M,)`` as :func:`register_faces` gives it,
    and float ``(M, 30)`` pixels of face ``j`` (NaN where either face lacks the label).
    """
    images, keypoints = np.asarray(images), np.asarray(keypoints, np.float64)
    pairs = np.asarray(pairs, int).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= len(images)):
        raise ValueError(f"pairs name rows outside 0..{len(images) - 1}")
    corr, diff = np.empty(len(pairs)), np.empty((len(pairs), keypoints.shape[1]))
    for n, (i, j) in enumerate(pairs):
        start = registration_start(keypoints[i], keypoints[j])
        matrix, corr[n] = register_faces(images[i], images[j], start)
        diff[n] = K.apply_affine(keypoints[i], K.invert_affine(matrix)) - keypoints[j]
    return corr, diff


def label_noise(
    differences: np.ndarray, correlation: np.ndarray, least: float = LAID_OVER
) -> pd.DataFrame:
    """The labels' own error per keypoint, from :func:`label_disagreement`: the RMS of the
    differences of the pairs whose faces correlate at ``least`` or more once laid over each
    other, x and y pooled, divided by sqrt(2) (a difference holds two labels' errors).

    Returns a table indexed by keypoint (Kaggle's order) with ``label noise`` (pixels; NaN where
    no pair labels it) and ``pairs`` (how many pairs label it)."""
    d = np.asarray(differences, np.float64)[np.asarray(correlation) >= least]
    rms = per_keypoint_rmse(d, np.zeros_like(d))  # the differences' RMS, NaN where none
    table = pd.DataFrame({"label noise": rms / np.sqrt(2), "pairs": _labelled_per_keypoint(d)})
    table.index.name = "keypoint"
    return table


def noise_floor(noise: pd.DataFrame, y_true: np.ndarray) -> float:
    """The RMSE that predictions exactly at the true points would score on the labels
    ``y_true`` ``(N, 30)``, if each keypoint's labels carry the error of :func:`label_noise`:
    the labelled coordinates' mean of sigma squared, rooted. Pixels. Keypoints without an
    estimate (NaN) are left out."""
    counts = _labelled_per_keypoint(y_true)
    sigma = noise["label noise"].to_numpy()
    ok = np.isfinite(sigma) & (counts > 0)
    if not ok.any():
        raise ValueError("no labelled keypoint has a noise estimate")
    return float(np.sqrt((counts[ok] * sigma[ok] ** 2).sum() / counts[ok].sum()))


# ---------------------------------------------------------------------------------------------
# Kaggle submissions


def make_lookup(keypoints: np.ndarray, image_ids: np.ndarray | None = None) -> pd.DataFrame:
    """An ``IdLookupTable``-like table asking for every labelled coordinate of ``keypoints``.

    Lets a validation set play Kaggle's test set: RowId from 1, ImageId (default 1..N),
    FeatureName, and Location (empty, as in Kaggle's file). Rows in image order, then Kaggle's
    column order.
    """
    k = np.asarray(keypoints, np.float64)
    ids = np.arange(1, len(k) + 1) if image_ids is None else np.asarray(image_ids)
    r, c = np.nonzero(np.isfinite(k))
    return pd.DataFrame(
        {
            "RowId": np.arange(1, len(r) + 1, dtype=np.int64),
            "ImageId": ids[r].astype(np.int64),
            "FeatureName": np.asarray(fdata.KEYPOINT_COLUMNS, dtype=object)[c],
            "Location": np.full(len(r), np.nan),
        }
    )


def solution_from_keypoints(
    keypoints: np.ndarray, lookup: pd.DataFrame, image_ids: np.ndarray | None = None
) -> pd.DataFrame:
    """The true answers (``RowId, Location``) for the rows ``lookup`` asks, from labels
    ``keypoints`` (pixels) of the images ``image_ids`` (default 1..N). A requested label that
    is missing is an error."""
    k = np.asarray(keypoints, np.float64)
    ids = np.arange(1, len(k) + 1) if image_ids is None else np.asarray(image_ids)
    pos = pd.Series(np.arange(len(ids)), index=ids)
    col = {c: i for i, c in enumerate(fdata.KEYPOINT_COLUMNS)}
    rows = pos.loc[lookup["ImageId"].to_numpy()].to_numpy()
    values = k[rows, lookup["FeatureName"].map(col).to_numpy(dtype=np.int64)]
    if not np.isfinite(values).all():
        r = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"RowId {lookup['RowId'].iloc[r]} asks for {lookup['FeatureName'].iloc[r]} of "
            f"ImageId {lookup['ImageId'].iloc[r]}, which has no label"
        )
    return pd.DataFrame({"RowId": lookup["RowId"].to_numpy(np.int64), "Location": values})


def _as_path_label(source) -> tuple[str, bytes]:
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory, not a CSV file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read it ({e.strerror or e})") from e
    return path.name, raw


def read_submission(
    source: str | os.PathLike | pd.DataFrame,
    *,
    allow_extra_columns: Sequence[str] = (),
    label: str | None = None,
) -> pd.DataFrame:
    """Read and check a ``RowId,Location`` file (a submission, a solution or Kaggle's sample).

    Returns a DataFrame with RowId (int64) and Location (float64, pixels), in the file's order.
    Raises :class:`~fkp_helpers.data.FKPDataError` naming the file, row (1-based data row) and
    column for: an empty file, a missing or unexpected column (``allow_extra_columns`` are
    tolerated, e.g. a solution's ``Usage``), a RowId that is not an integer or repeats, and a
    Location that is empty, not a number, or not finite. ``FileNotFoundError`` for a missing file.
    """
    if isinstance(source, pd.DataFrame):
        name = label or "submission"
        df = source.astype(str).copy()
    else:
        name, raw = _as_path_label(source)
        name = label or name
        if not raw.strip():
            raise fdata.FKPDataError(
                f"{name}: the file is empty (expected a header RowId,Location)"
            )
        try:
            df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise fdata.FKPDataError(f"{name}: not a readable CSV file ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    expected = list(fdata.SUBMISSION_COLUMNS)
    missing = [c for c in expected if c not in df.columns]
    extra = [c for c in df.columns if c not in expected and c not in allow_extra_columns]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(extra)}")
        raise fdata.FKPDataError(
            f"{name}, header row: {'; '.join(parts)} (expected exactly RowId,Location; "
            f"found {','.join(df.columns)})"
        )
    if df.empty:
        raise fdata.FKPDataError(f"{name}: the file has a header but no rows")
    rid = df["RowId"].str.strip()
    bad = ~rid.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise fdata.FKPDataError(
            f"{fdata.where(name, r + 1, 'RowId')}: {df['RowId'].iloc[r]!r} is not an integer"
        )
    rid = rid.astype(np.int64)
    dup = rid.duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((rid == rid.iloc[r]).to_numpy())[0])
        raise fdata.FKPDataError(
            f"{fdata.where(name, r + 1, 'RowId')}: RowId {rid.iloc[r]} repeats (first on row "
            f"{first + 1}; {int(dup.sum())} repeated RowIds in all). Each RowId must appear once"
        )
    text = df["Location"].str.strip()
    loc = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(loc)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        what = "is empty" if text.iloc[r] == "" else f"{df['Location'].iloc[r]!r} is not a number"
        raise fdata.FKPDataError(
            f"{fdata.where(name, r + 1, 'Location')}: {what} "
            f"({int(bad.sum())} row(s) without a finite number in all)"
        )
    return pd.DataFrame({"RowId": rid.to_numpy(np.int64), "Location": loc})


def _id_list(ids: np.ndarray, n: int = 5) -> str:
    ids = np.sort(ids)
    s = ", ".join(str(i) for i in ids[:n])
    return s + (", ..." if len(ids) > n else "")


def check_same_rows(
    submission: pd.DataFrame, reference: pd.DataFrame, sub_name: str, ref_name: str
) -> None:
    """Raise :class:`~fkp_helpers.data.FKPDataError` unless both tables hold the same RowIds:
    names how many are missing from the submission and how many it has that the reference
    lacks, with the first few of each."""
    s, r = submission["RowId"].to_numpy(), reference["RowId"].to_numpy()
    missing = np.setdiff1d(r, s)
    extra = np.setdiff1d(s, r)
    if missing.size or extra.size:
        parts = []
        if missing.size:
            parts.append(f"{missing.size} RowId(s) of {ref_name} are missing ({_id_list(missing)})")
        if extra.size:
            parts.append(f"{extra.size} RowId(s) are not in {ref_name} ({_id_list(extra)})")
        raise fdata.FKPDataError(
            f"{sub_name}: {'; '.join(parts)}. A submission needs exactly one row per RowId of "
            f"{fdata.LOOKUP_NAME}"
        )


def score_submission(
    submission: pd.DataFrame,
    solution: pd.DataFrame,
    sub_name: str = "submission",
    sol_name: str = "the solution",
) -> float:
    """Kaggle's score: RMSE in pixels between the submission's and the solution's Location over
    every RowId of the solution. Both tables are checked as by :func:`read_submission`; the
    RowIds must match exactly (see :func:`check_same_rows`)."""
    sub = read_submission(submission, label=sub_name)
    sol = read_submission(solution, label=sol_name, allow_extra_columns=("Usage",))
    check_same_rows(sub, sol, sub_name, sol_name)
    merged = sol.merge(sub, on="RowId", suffixes=("_true", "_pred"), validate="one_to_one")
    diff = merged["Location_pred"].to_numpy() - merged["Location_true"].to_numpy()
    return float(np.sqrt(np.mean(np.square(diff))))


def score_submission_files(
    submission_path: str | os.PathLike, solution_path: str | os.PathLike
) -> float:
    """``fkp score``: Kaggle's RMSE of a submission file against a solution file, both
    ``RowId,Location`` CSVs (the solution may also have Kaggle's ``Usage`` column)."""
    sub = read_submission(submission_path)
    sol = read_submission(solution_path, allow_extra_columns=("Usage",))
    return score_submission(sub, sol, Path(submission_path).name, Path(solution_path).name)


def check_submission_format(
    submission: str | os.PathLike | pd.DataFrame, sample: str | os.PathLike | pd.DataFrame
) -> pd.DataFrame:
    """Check a submission against Kaggle's ``SampleSubmission.csv``: same two columns, the same
    RowIds exactly once each, a finite number in every Location, and every value within
    :data:`keypoints.LABEL_RANGE`: the 96x96 frame and the half pixel beyond its edges that a
    label may reach. Returns the submission as read; raises FKPDataError with the first
    problem."""
    sub_name = "submission" if isinstance(submission, pd.DataFrame) else Path(submission).name
    ref_name = (
        fdata.SAMPLE_SUBMISSION_NAME if isinstance(sample, pd.DataFrame) else Path(sample).name
    )
    sub = read_submission(submission, label=sub_name)
    ref = read_submission(sample, label=ref_name)
    check_same_rows(sub, ref, sub_name, ref_name)
    low, high = K.LABEL_RANGE
    out = (sub["Location"] < low) | (sub["Location"] > high)
    if out.any():
        r = int(np.flatnonzero(out.to_numpy())[0])
        raise fdata.FKPDataError(
            f"{fdata.where(sub_name, r + 1, 'Location')}: {sub['Location'].iloc[r]} lies outside "
            f"the 96x96 frame and its half-pixel margin ({low:g} to {high:g} px)"
        )
    return sub


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib; each returns a Figure and never calls plt.show)


def per_keypoint_figure(table: pd.DataFrame, size: tuple[float, float] = (8.0, 5.5)):
    """Horizontal bars of RMSE per keypoint (pixels) for each model column of a
    :func:`per_keypoint_table` (the ``n`` column is ignored), keypoints in Kaggle's order."""
    import matplotlib.pyplot as plt

    models = [c for c in table.columns if c != "n"]
    fig, ax = plt.subplots(figsize=size)
    y = np.arange(len(table))
    h = 0.8 / len(models)
    colours = ["0.7", "#0072b2", "#d55e00", "#009e73", "#cc79a7"]
    for i, name in enumerate(models):
        ax.barh(
            y + (i - (len(models) - 1) / 2) * h,
            table[name],
            height=h,
            label=name,
            color=colours[i % len(colours)],
        )
    ax.set_yticks(y, [f"{k} ({n})" for k, n in zip(table.index, table["n"], strict=True)])
    ax.invert_yaxis()
    ax.set_xlabel("RMSE (pixels)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    return fig


def error_distribution_figure(
    y_true: np.ndarray, predictions: Mapping[str, np.ndarray], size: tuple[float, float] = (11, 4)
):
    """Left: histogram of each face's RMSE (pixels) per model. Right: the fraction of labelled
    points within each normalised error (a PCK curve), with :data:`PCK_THRESHOLDS` marked."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=size)
    colours = ["0.6", "#0072b2", "#d55e00", "#009e73"]
    per_face = {n: face_rmse(y_true, p) for n, p in predictions.items()}
    top = np.nanquantile(np.concatenate(list(per_face.values())), 0.99)
    bins = np.linspace(0, top, 40)
    for i, (name, pred) in enumerate(predictions.items()):
        c = colours[i % len(colours)]
        e = per_face[name]
        a.hist(e[np.isfinite(e)], bins=bins, histtype="step", lw=1.8, color=c, label=name)
        ne = normalised_errors(y_true, pred)
        ne = np.sort(ne[np.isfinite(ne)])
        b.plot(ne, np.arange(1, ne.size + 1) / ne.size, color=c, lw=1.8, label=name)
    a.set(xlabel="RMSE of one face (pixels)", ylabel="faces")
    for t in PCK_THRESHOLDS:
        b.axvline(t, color="0.8", lw=0.8, ls="--", zorder=0)
    b.set(
        xlim=(0, 0.4),
        ylim=(0, 1),
        xlabel="point error / eye-centre distance",
        ylabel="fraction of points within",
    )
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def pose_error_figure(
    features: pd.DataFrame,
    errors: Mapping[str, np.ndarray],
    bins: int = 6,
    size: tuple[float, float] = (12, 3.8),
):
    """Mean per-face error against each pose proxy of :func:`pose_features` (|yaw|, |tilt|,
    eye distance), one line per model, in equal-count bins; faces as faint dots."""
    import matplotlib.pyplot as plt

    cols = {
        "|yaw| (eye distances)": np.abs(features["yaw"].to_numpy()),
        "|tilt| (degrees)": np.abs(features["tilt_deg"].to_numpy()),
        "eye-centre distance (pixels)": features["iod_px"].to_numpy(),
    }
    colours = ["0.6", "#0072b2", "#d55e00", "#009e73"]
    fig, axes = plt.subplots(1, 3, figsize=size, sharey=True)
    for ax, (label, f) in zip(axes, cols.items(), strict=True):
        for i, (name, e) in enumerate(errors.items()):
            c = colours[i % len(colours)]
            ax.scatter(f, e, s=3, color=c, alpha=0.15, lw=0)
            t = binned_error(f, e, bins)
            ax.plot(t["centre"], t["mean"], "o-", color=c, lw=1.8, ms=4, label=name)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("RMSE of one face (pixels)")
    top = np.nanquantile(np.concatenate([np.asarray(e) for e in errors.values()]), 0.98)
    axes[0].set_ylim(0, top)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return fig
