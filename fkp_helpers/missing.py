"""Missing keypoints: measure the pattern, and the strategies a practitioner meets (chapter 3).

Keypoints are float32 ``(N, 30)`` in pixels of the 96x96 frame, Kaggle's column order (x, y per
keypoint), NaN where a keypoint is not labelled. In Kaggle's file x and y are always missing
together, so "keypoint k is labelled" means both of its columns hold a number.

Strategies (:data:`STRATEGIES`), all measured in chapter 5:

* ``"drop"``: keep only the rows with all 30 values (:func:`drop_incomplete`).
* ``"ffill"``: copy each missing value from the row above, as ``DataFrame.ffill`` does
  (:func:`forward_fill`). Common in tutorials, and wrong for faces: the copied points belong to
  another face.
* ``"mean"``: replace each missing value by its column's mean (:func:`mean_impute`).
* ``"mask"``: keep every row and every NaN; the loss skips missing labels
  (:func:`label_mask`, and the masked loss in :mod:`fkp_helpers.models`).
* ``"separate"``: one model for the 4 core keypoints on all rows, another for all 15 keypoints
  on the complete rows (:func:`complete_rows`, :func:`core_only_rows`).

And one that needs a trained network, so chapter 5 writes it out: pseudo-labels
(:func:`fill_from_predictions`), each missing value replaced by the network's own prediction
for that face, for a second round of training (:func:`fkp_helpers.training.self_train`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fkp_helpers.keypoints import (
    CORE_INDICES,
    KEYPOINT_COLUMNS,
    KEYPOINT_NAMES,
    N_KEYPOINTS,
    mean_shape,
    validate_keypoints,
)

STRATEGIES: tuple[str, ...] = ("drop", "ffill", "mean", "mask", "separate")
"""Names accepted by :func:`apply_strategy`."""


def _as_keypoints(keypoints: np.ndarray) -> np.ndarray:
    return validate_keypoints(keypoints)


def labelled_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Boolean ``(N, 15)``: True where keypoint k of row i has both x and y."""
    kp = _as_keypoints(keypoints)
    finite = np.isfinite(kp)
    return finite[:, 0::2] & finite[:, 1::2]


def complete_rows(keypoints: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: True for the rows that hold all 30 values."""
    return np.isfinite(_as_keypoints(keypoints)).all(axis=1)


def core_only_rows(keypoints: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: True for rows labelled with the 4 core keypoints only, or a subset of them.

    The core keypoints are :data:`fkp_helpers.data.CORE_KEYPOINTS` (eye centres, nose tip, bottom
    lip). A row is core-only when none of the 11 other keypoints is labelled; complete rows are
    never core-only.
    """
    lab = labelled_keypoints(keypoints)
    others = np.setdiff1d(np.arange(N_KEYPOINTS), CORE_INDICES)
    return ~lab[:, others].any(axis=1)


def drop_incomplete(images: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the rows with all 30 values. Images (any dtype, first axis N) follow their rows."""
    keep = complete_rows(keypoints)
    if len(images) != len(keep):
        raise ValueError(f"{len(images)} images for {len(keep)} keypoint rows")
    return images[keep], _as_keypoints(keypoints)[keep]


def forward_fill(keypoints: np.ndarray) -> np.ndarray:
    """Fill each NaN with the last value above it in its column (then from below for leading NaNs).

    Exactly ``DataFrame(keypoints).ffill().bfill()``: a missing keypoint of row i is copied from
    the nearest earlier row that has it, i.e. from *another face*. Returns float32 ``(N, 30)``
    pixels; a column with no value at all stays NaN.
    """
    kp = _as_keypoints(keypoints)
    return pd.DataFrame(kp).ffill().bfill().to_numpy(dtype=np.float32)


def mean_impute(keypoints: np.ndarray, means: np.ndarray | None = None) -> np.ndarray:
    """Replace each NaN by its column's mean: float32 ``(N, 30)`` pixels.

    ``means`` (30 values, pixels) defaults to the mean shape of ``keypoints`` itself
    (:func:`~fkp_helpers.keypoints.mean_shape`); a column nobody labelled has nothing to impute
    from and raises ValueError naming it. Pass the
    training rows' means when imputing validation rows so that no information leaks across.
    """
    kp = _as_keypoints(keypoints)
    m = mean_shape(kp) if means is None else np.asarray(means, dtype=np.float32)
    if means is None and np.isnan(m).any():
        j = int(np.flatnonzero(np.isnan(m))[0])
        raise ValueError(f"column {KEYPOINT_COLUMNS[j]} has no labelled row to average")
    if m.shape != (kp.shape[1],):
        raise ValueError(f"means must have shape ({kp.shape[1]},), got {m.shape}")
    return np.where(np.isnan(kp), m[None, :], kp).astype(np.float32)


def fill_from_predictions(keypoints, predictions):
    """Pseudo-labels: each missing value (NaN) of ``keypoints`` replaced by the same entry of
    ``predictions``, a network's prediction for that face; labelled values are kept as given.

    Both float32 ``(N, 30)`` pixels, rows in the same order. Returns a new array; raises
    ValueError if the shapes differ or a prediction that would be used is not finite.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.shape != keypoints.shape:
        raise ValueError(f"predictions {predictions.shape} for keypoints {keypoints.shape}")
    missing = np.isnan(keypoints)
    if not np.isfinite(predictions[missing]).all():
        raise ValueError("a prediction that would fill a missing label is not finite")
    return np.where(missing, predictions, keypoints)


def label_mask(keypoints: np.ndarray) -> np.ndarray:
    """Float32 ``(N, 30)``: 1.0 where a value is labelled, 0.0 where it is missing (NaN)."""
    return np.isfinite(_as_keypoints(keypoints)).astype(np.float32)


def missing_summary(keypoints: np.ndarray) -> pd.DataFrame:
    """Per keypoint (15 rows, Kaggle's order): ``labelled`` count, ``missing`` count, ``fraction``.

    ``fraction`` is the labelled fraction of rows, 0-1. Index: the keypoint names.
    """
    lab = labelled_keypoints(keypoints)
    n = len(lab)
    count = lab.sum(axis=0)
    return pd.DataFrame(
        {
            "labelled": count.astype(np.int64),
            "missing": (n - count).astype(np.int64),
            "fraction": count / n if n else np.full(N_KEYPOINTS, np.nan),
        },
        index=pd.Index(KEYPOINT_NAMES, name="keypoint"),
    )


def label_patterns(keypoints: np.ndarray) -> pd.DataFrame:
    """The distinct sets of labelled keypoints, most frequent first.

    Columns: ``n_keypoints`` (how many of the 15 are labelled), ``rows`` (how many rows share the
    set), ``fraction`` (of all rows, 0-1), ``missing`` (the names absent, comma-separated; ``""``
    for complete rows).
    """
    lab = labelled_keypoints(keypoints)
    if len(lab) == 0:
        return pd.DataFrame(columns=["n_keypoints", "rows", "fraction", "missing"])
    patterns, counts = np.unique(lab, axis=0, return_counts=True)
    order = np.lexsort((-patterns.sum(axis=1), -counts))
    rows = []
    for i in order:
        absent = [KEYPOINT_NAMES[k] for k in np.flatnonzero(~patterns[i])]
        rows.append(
            (int(patterns[i].sum()), int(counts[i]), counts[i] / len(lab), ", ".join(absent))
        )
    return pd.DataFrame(rows, columns=["n_keypoints", "rows", "fraction", "missing"])


def imputation_error(
    truth: np.ndarray, filled: np.ndarray, hidden: np.ndarray
) -> tuple[float, np.ndarray]:
    """How far imputed keypoints land from the true ones, in pixels.

    truth, filled: float ``(N, 30)`` pixels; hidden: boolean ``(N, 15)``, the keypoints that were
    hidden and then filled. Returns the root-mean-square error over the hidden coordinates and the
    Euclidean distance (pixels) of each hidden keypoint, as a flat array.
    """
    t = _as_keypoints(truth).reshape(-1, N_KEYPOINTS, 2)
    f = _as_keypoints(filled).reshape(-1, N_KEYPOINTS, 2)
    h = np.asarray(hidden, dtype=bool)
    if h.shape != t.shape[:2]:
        raise ValueError(f"hidden must have shape {t.shape[:2]}, got {h.shape}")
    d = f[h] - t[h]
    if not np.isfinite(d).all():
        raise ValueError("a hidden keypoint is NaN in truth or filled")
    rmse = float(np.sqrt(np.mean(d.astype(np.float64) ** 2))) if d.size else float("nan")
    return rmse, np.hypot(d[:, 0], d[:, 1])


def compare_imputations(
    truth: np.ndarray, hidden: np.ndarray, fills: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per named fill: ``RMSE (px)``, ``median (px)`` and ``90th percentile (px)`` of the
    distance between filled-in and true keypoints, over the ``hidden`` ones (see
    :func:`imputation_error`)."""
    rows = {}
    for name, filled in fills.items():
        rmse, dist = imputation_error(truth, filled, hidden)
        rows[name] = {
            "RMSE (px)": rmse,
            "median (px)": float(np.median(dist)),
            "90th percentile (px)": float(np.percentile(dist, 90)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def apply_strategy(
    name: str, images: np.ndarray, keypoints: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a missing-label strategy by name (one of :data:`STRATEGIES`).

    ``"drop"``, ``"ffill"`` and ``"mean"`` return ``(images, keypoints)`` ready for a plain loss;
    ``"mask"`` returns its inputs unchanged, NaNs kept for the masked loss. ``"separate"`` is not a
    transformation of one data set: it raises, pointing at the training code.
    """
    if name == "drop":
        return drop_incomplete(images, keypoints)
    if name == "ffill":
        return images, forward_fill(keypoints)
    if name == "mean":
        return images, mean_impute(keypoints)
    if name == "mask":
        return images, keypoints
    if name == "separate":
        raise ValueError(
            "strategy 'separate' trains two models, not one data set: split the rows with "
            "complete_rows() (15-keypoint model) and take every row's core keypoints "
            "(4-keypoint model); experiments.train_strategy does both (chapter 5)"
        )
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
