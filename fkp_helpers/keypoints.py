"""The bottom layer: keypoint names, the frame, and every quantity computed from keypoints.

This module imports only NumPy; every other module of the package takes its keypoint geometry
from here, so each quantity has one definition and one convention (written out in the book's
*Conventions* page):

* Coordinates are pixels of the 96x96 frame, pixel centres at integer coordinates, x to the
  right, y down. The frame covers :data:`FRAME` = [-0.5, 95.5] on both axes.
* "Left" is the subject's left (the image's right). A horizontal flip maps x to ``95 - x`` and
  swaps left and right names (:func:`flip_keypoints`).
* Head tilt is **counter-clockwise positive as seen on screen** (:func:`head_tilt_deg`), the same
  sense as the rotation angle of chapter 4's affine warp: rotating a face by ``a`` degrees adds
  ``a`` to its tilt.
* Keypoint arrays are float ``(N, 30)`` in Kaggle's column order (x, y per keypoint), NaN where a
  label is missing; :func:`as_points` views them as ``(N, 15, 2)``.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 96
"""Images are IMAGE_SIZE x IMAGE_SIZE pixels."""
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE

FRAME: tuple[float, float] = (-0.5, IMAGE_SIZE - 0.5)
"""The image's extent on x and on y, in pixels: pixel centres at 0..95, edges at -0.5 and 95.5.
A point outside it is off the image; the loader, the augmentation and the submission all use this
one rule (:func:`inside_frame`)."""

LABEL_MARGIN = 0.5
"""How far, in pixels, an annotator's label may lie outside :data:`FRAME` and still be read as
given: Kaggle's own labels reach x = 95.94 (2 of its labelled coordinates exceed 95.5, none is
below 0), as if the annotators clicked up to the far edge of the last pixel. The loader accepts
labels in ``FRAME`` widened by this margin and names any other value; transforms and predictions
keep to ``FRAME`` itself."""

LABEL_RANGE: tuple[float, float] = (FRAME[0] - LABEL_MARGIN, FRAME[1] + LABEL_MARGIN)
"""The values a label read from a file may take, in pixels: [-1.0, 96.0]."""

CENTRE = (IMAGE_SIZE - 1) / 2
"""The frame's centre on x and on y: 47.5 px (rotations and zooms turn about it)."""

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
"""The 4 keypoints labelled on (almost) every row; about two thirds of Kaggle's rows (4,755 of
7,049) carry only these."""

CORE_INDICES: tuple[int, ...] = tuple(KEYPOINT_NAMES.index(n) for n in CORE_KEYPOINTS)
CORE_COLUMNS: np.ndarray = np.array([2 * k + a for k in CORE_INDICES for a in (0, 1)])
"""The 8 columns (x and y) of the core keypoints in an ``(N, 30)`` array."""

LEFT_EYE = KEYPOINT_NAMES.index("left_eye_center")
RIGHT_EYE = KEYPOINT_NAMES.index("right_eye_center")
LEFT_EYE_OUTER = KEYPOINT_NAMES.index("left_eye_outer_corner")
RIGHT_EYE_OUTER = KEYPOINT_NAMES.index("right_eye_outer_corner")
NOSE_TIP = KEYPOINT_NAMES.index("nose_tip")

FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, KEYPOINT_NAMES.index(n.replace("left", "right")))
    for i, n in enumerate(KEYPOINT_NAMES)
    if "left" in n
)
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

KAGGLE_MEANS: dict[str, tuple[float, float]] = {
    "left_eye_center": (66.36, 37.65),
    "right_eye_center": (30.31, 37.98),
    "left_eye_inner_corner": (59.16, 37.94),
    "left_eye_outer_corner": (73.33, 37.71),
    "right_eye_inner_corner": (36.65, 37.99),
    "right_eye_outer_corner": (22.38, 38.03),
    "left_eyebrow_inner_end": (56.07, 29.33),
    "left_eyebrow_outer_end": (79.48, 29.73),
    "right_eyebrow_inner_end": (39.32, 29.50),
    "right_eyebrow_outer_end": (15.87, 30.43),
    "nose_tip": (48.37, 62.72),
    "mouth_left_corner": (63.29, 75.97),
    "mouth_right_corner": (32.90, 76.18),
    "mouth_center_top_lip": (47.98, 72.92),
    "mouth_center_bottom_lip": (48.57, 78.97),
}
"""Kaggle's mean (x, y) per keypoint in pixels over the rows that have it (from Kaggle's real
labels, which the workplace keeps without pixels). Used to draw synthetic faces, to align a
photo's face the way Kaggle's faces sit, and where a face lacks its eye labels."""

KAGGLE_MEAN_SHAPE: np.ndarray = np.array([KAGGLE_MEANS[n] for n in KEYPOINT_NAMES]).reshape(-1)
""":data:`KAGGLE_MEANS` as one ``(30,)`` row in column order, pixels."""


# ---------------------------------------------------------------------------------------------
# Shapes and validation


def validate_keypoints(
    keypoints, name: str = "keypoints", n_rows: int | None = None, n_keypoints: int | None = None
) -> np.ndarray:
    """Return ``keypoints`` as float32 ``(N, 2K)`` (K = 15 unless ``n_keypoints`` says otherwise),
    or raise ValueError naming ``name``, the shape found and the shape expected. Infinite values
    are refused (NaN means missing)."""
    k = np.asarray(keypoints, dtype=np.float32)
    width = 2 * (N_KEYPOINTS if n_keypoints is None else n_keypoints)
    if k.ndim != 2 or k.shape[1] != width:
        raise ValueError(f"{name} must have shape (N, {width}), got {k.shape}")
    if n_rows is not None and len(k) != n_rows:
        raise ValueError(f"{name} must have {n_rows} rows, got {len(k)}")
    if np.isinf(k).any():
        r, c = np.argwhere(np.isinf(k))[0]
        raise ValueError(f"{name} row {r} column {c} is infinite (missing labels are NaN)")
    return k


def as_points(keypoints) -> np.ndarray:
    """``(..., 30)`` -> ``(..., 15, 2)``: a view with one (x, y) row per keypoint."""
    k = np.asarray(keypoints)
    return k.reshape(*k.shape[:-1], k.shape[-1] // 2, 2)


def as_flat(points) -> np.ndarray:
    """``(..., 15, 2)`` -> ``(..., 30)``: the inverse of :func:`as_points`."""
    p = np.asarray(points)
    return p.reshape(*p.shape[:-2], 2 * p.shape[-2])


def labelled(keypoints) -> np.ndarray:
    """Boolean ``(..., 15)``: True where a keypoint has both x and y."""
    return np.isfinite(as_points(keypoints)).all(axis=-1)


# ---------------------------------------------------------------------------------------------
# The flip and the frame


def flip_keypoints(keypoints) -> np.ndarray:
    """Keypoints of the mirrored faces: x -> 95 - x, and every left keypoint swapped with its
    right twin. Works on ``(..., 30)`` pixels and is its own inverse, so it also maps a
    prediction made on a mirrored face back to the original face. Returns float32."""
    p = as_points(np.asarray(keypoints, np.float32))[..., FLIP_PERMUTATION, :].copy()
    p[..., 0] = FLIP_X_CONSTANT - p[..., 0]
    return as_flat(p)


def inside_frame(keypoints, margin: float = 0.0) -> np.ndarray:
    """Boolean ``(..., 15)``: True where a keypoint lies in :data:`FRAME` on both axes
    (missing keypoints count as inside: there is nothing to move out). ``margin`` (pixels)
    widens the frame on every side; the loader uses :data:`LABEL_MARGIN`."""
    p = as_points(np.asarray(keypoints, np.float64))
    with np.errstate(invalid="ignore"):
        out = ((p < FRAME[0] - margin) | (p > FRAME[1] + margin) | np.isinf(p)).any(axis=-1)
    return ~out


def mark_outside(keypoints, rows=None) -> np.ndarray:
    """Set keypoints outside :data:`FRAME` to NaN (x and y together), float32 ``(N, 30)``.

    ``rows`` (bool ``(N,)``) limits the rule to the faces a geometric transform moved: labels
    that were never moved are kept as the annotator gave them.
    """
    k = np.array(keypoints, dtype=np.float32)
    p = as_points(k)
    outside = ~inside_frame(k)
    if rows is not None:
        outside &= np.asarray(rows, bool)[:, None]
    p[outside] = np.nan
    return k


def clip_to_frame(keypoints) -> np.ndarray:
    """Keypoints clipped into :data:`FRAME` (what a submission must hold), in the input's float
    dtype (float32 for integer input)."""
    k = np.asarray(keypoints)
    if not np.issubdtype(k.dtype, np.floating):
        k = k.astype(np.float32)
    return np.clip(k, FRAME[0], FRAME[1])


# ---------------------------------------------------------------------------------------------
# Affine maps of keypoints (2x3 matrices map input pixels to output pixels)


def apply_affine(keypoints, matrix) -> np.ndarray:
    """Map keypoints ``(..., 30)`` through 2x3 affine matrices: one ``(2, 3)`` matrix for all, or
    ``(B, 2, 3)`` for ``(B, 30)`` keypoints. NaN stays NaN; no frame rule. Returns float64."""
    m = np.asarray(matrix, np.float64)
    p = as_points(np.asarray(keypoints, np.float64))
    if m.ndim == 2:
        out = p @ m[:, :2].T + m[:, 2]
    else:
        out = np.einsum("bij,bkj->bki", m[:, :, :2], p) + m[:, None, :, 2]
    return as_flat(out)


def invert_affine(matrix) -> np.ndarray:
    """The inverse of 2x3 affine matrices, ``(2, 3)`` or ``(B, 2, 3)``."""
    m = np.asarray(matrix, np.float64)
    a_inv = np.linalg.inv(m[..., :2])
    b = -np.einsum("...ij,...j->...i", a_inv, m[..., 2])
    return np.concatenate([a_inv, b[..., None]], axis=-1)


# ---------------------------------------------------------------------------------------------
# Eyes, size and tilt


def eye_centres(keypoints) -> tuple[np.ndarray, np.ndarray]:
    """The subject's left and right eye centres, each float64 ``(..., 2)`` pixels."""
    p = as_points(np.asarray(keypoints, np.float64))
    return p[..., LEFT_EYE, :], p[..., RIGHT_EYE, :]


def eye_distance(keypoints) -> np.ndarray:
    """Distance in pixels between the two eye **centres**, ``(...,)``; NaN if one is missing.
    The face's size in the frame, and the normaliser of the book's NME."""
    left, right = eye_centres(keypoints)
    d = left - right
    return np.hypot(d[..., 0], d[..., 1])


def outer_eye_corner_distance(keypoints) -> np.ndarray:
    """Distance in pixels between the two **outer** eye corners, ``(...,)``: the 300-W
    benchmark's inter-ocular normaliser. NaN where a corner is missing."""
    p = as_points(np.asarray(keypoints, np.float64))
    d = p[..., LEFT_EYE_OUTER, :] - p[..., RIGHT_EYE_OUTER, :]
    return np.hypot(d[..., 0], d[..., 1])


def head_tilt_deg(keypoints) -> np.ndarray:
    """Head tilt in degrees from the eye centres, ``(...,)``; NaN if one is missing.

    The angle of the line from the right eye centre (image left) to the left eye centre (image
    right), **counter-clockwise positive as seen on screen** (y points down, so the sign of the
    y difference is turned round): a face whose left eye (image right) sits higher has a positive
    tilt, and rotating a face by ``a`` degrees with chapter 4's warp adds ``a`` to it.
    """
    left, right = eye_centres(keypoints)
    d = left - right
    return np.degrees(np.arctan2(-d[..., 1], d[..., 0]))


# ---------------------------------------------------------------------------------------------
# The mean shape and the metric


def mean_shape(keypoints) -> np.ndarray:
    """The average face: each column's mean over its labelled rows, float32 ``(30,)`` pixels.

    A column with no label at all gives NaN, without a warning: it has no mean to predict, and a
    masked metric refuses it where that column is labelled (:func:`check_predictions`).
    """
    k = np.asarray(keypoints, np.float64)
    n = np.sum(~np.isnan(k), axis=0)
    total = np.nansum(k, axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)


def check_predictions(y_true, y_pred) -> None:
    """Raise ValueError when a prediction is NaN or infinite where its label is given.

    The masked metrics skip the coordinates a face leaves unlabelled, never a model's missing
    answer: a NaN prediction (a diverged network, a bad file) must not shrink the count it is
    averaged over. ``y_pred`` may be one row, used for every face. The message names the first
    such row (0-based among the rows given) and its column."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    bad = ~np.isfinite(p) & ~np.isnan(t)
    if bad.any():
        where = np.argwhere(np.atleast_2d(bad))[0]
        raise ValueError(
            f"{int(bad.sum())} prediction(s) not finite where a label is given (first: row "
            f"{where[0]}, column {KEYPOINT_COLUMNS[where[1]]})"
        )


def masked_rmse(y_true, y_pred, axis=None):
    """Root mean squared error in pixels over the labelled coordinates (NaN in ``y_true``
    skipped; a prediction that is not finite where a label is given raises ValueError,
    :func:`check_predictions`): Kaggle's metric. ``axis=None``: one float; ``axis=0``: per
    column. NaN where nothing is labelled."""
    check_predictions(y_true, y_pred)
    err = np.square(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))
    n = np.sum(~np.isnan(err), axis=axis)
    total = np.nansum(err, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(np.where(n > 0, total / np.maximum(n, 1), np.nan))
    return float(out) if axis is None else out


def mean_offset(y_true, y_pred) -> np.ndarray:
    """The constant part of an error: ``y_pred - y_true`` averaged over
    the labelled rows of each coordinate (NaN in ``y_true`` skipped),
    float32 ``(30,)``, pixels; 0 where nothing is labelled.

    Subtracting it from predictions of the same rows never raises their
    :func:`masked_rmse`: each column's mean is the constant that
    minimises its squared error. Measured on the training faces, it is
    chapter 6's labels' offset, what flip averaging cannot learn because
    the labels are not exactly mirror-symmetric."""
    check_predictions(y_true, y_pred)
    err = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    n = np.sum(~np.isnan(err), axis=0)  # labelled rows per coordinate
    total = np.nansum(err, axis=0)
    mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
    return mean.astype(np.float32)


def per_keypoint_rmse(y_true, y_pred) -> dict[str, float]:
    """RMSE in pixels of each keypoint (x and y pooled), by name; NaN where none is labelled."""
    check_predictions(y_true, y_pred)
    err = np.square(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))
    out = {}
    for k, name in enumerate(KEYPOINT_NAMES):
        e = err[:, 2 * k : 2 * k + 2]
        e = e[~np.isnan(e)]
        out[name] = float(np.sqrt(e.mean())) if e.size else float("nan")
    return out
