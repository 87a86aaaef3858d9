"""Honest splits of the training file: rows of one person stay on one side.

Kaggle's faces, like the stand-in's video frames, include several pictures of the same person.
:func:`grouped_split` links faces whose eye-aligned thumbnails correlate strongly, follows the
links transitively, and keeps every group on one side. :func:`three_way_split` cuts three parts by
the same groups: training, validation (every choice: epochs, strengths, recipes, flip averaging)
and a test part that no choice ever reads.
"""

from __future__ import annotations

import numpy as np

from fkp_helpers.keypoints import (
    KAGGLE_MEANS,
    LEFT_EYE,
    RIGHT_EYE,
    as_points,
    eye_centres,
    eye_distance,
    head_tilt_deg,
)
from fkp_helpers.seeding import DEFAULT_SEED

GROUP_THRESHOLD = 0.85
"""Two faces are near-duplicates when their eye-aligned thumbnails correlate at least this much."""


def random_split(n: int, val_fraction: float = 0.15, seed: int = DEFAULT_SEED):
    """Shuffle row indices and cut: (train_idx, val_idx). Flatters models on near-duplicate data."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def eye_aligned_thumbnails(images: np.ndarray, keypoints: np.ndarray, size: int = 24) -> np.ndarray:
    """Small face thumbnails rotated and scaled so the eye centres land on fixed positions.

    Returns float32 ``(N, size*size)`` rows with zero mean and unit norm, so a dot product is a
    correlation. Faces without both eye labels use Kaggle's mean eye positions.
    """
    img = images.astype(np.float32)
    k = np.array(keypoints, np.float64)  # a copy: missing eyes are filled in below
    points = as_points(k)
    missing = np.isnan(points[:, [LEFT_EYE, RIGHT_EYE]]).any(axis=(1, 2))
    points[missing, LEFT_EYE] = KAGGLE_MEANS["left_eye_center"]
    points[missing, RIGHT_EYE] = KAGGLE_MEANS["right_eye_center"]
    le, re = eye_centres(k)
    centre = (le + re) / 2
    scale = eye_distance(k) / (size * 0.375)
    ang = -np.radians(head_tilt_deg(k))  # the eye line's angle in image axes (y down)
    u, v = np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - size * 0.375)
    u, v = u.ravel()[None], v.ravel()[None]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x = np.clip(centre[:, :1] + scale[:, None] * (c * u - s * v), 0, 95)
    y = np.clip(centre[:, 1:] + scale[:, None] * (s * u + c * v), 0, 95)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, 95), np.minimum(y0 + 1, 95)
    fx, fy, r = x - x0, y - y0, np.arange(len(img))[:, None]
    t = (
        img[r, y0, x0] * (1 - fx) * (1 - fy)
        + img[r, y0, x1] * fx * (1 - fy)
        + img[r, y1, x0] * (1 - fx) * fy
        + img[r, y1, x1] * fx * fy
    )
    t -= t.mean(1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-6
    return t.astype(np.float32)


def thumbnail_correlations(thumbnails: np.ndarray, block: int = 1024):
    """Every thumbnail's correlation with every other, a block of rows at a time (memory stays
    at ``block`` x N): yields ``(rows, correlations)``, the block's row indices ``(b,)`` and its
    rows of the correlation matrix ``(b, N)``. ``thumbnails``: as
    :func:`eye_aligned_thumbnails` gives them."""
    for start in range(0, len(thumbnails), block):
        rows = np.arange(start, min(start + block, len(thumbnails)))
        yield rows, thumbnails[rows] @ thumbnails.T


def near_duplicate_groups(
    images: np.ndarray, keypoints: np.ndarray, threshold: float = GROUP_THRESHOLD
) -> np.ndarray:
    """Group faces whose eye-aligned thumbnails correlate at ``threshold`` or more (linked
    transitively: frames of one video chain together). Returns int group labels ``(N,)``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    t = eye_aligned_thumbnails(images, keypoints)
    n = len(t)
    rows, cols = [], []
    for block, c in thumbnail_correlations(t):
        r, k = np.nonzero(c >= threshold)
        rows.append(block[r])
        cols.append(k)
    r, k = np.concatenate(rows), np.concatenate(cols)
    graph = csr_matrix((np.ones(len(r), np.int8), (r, k)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _draw_groups(groups: np.ndarray, fractions, seed: int) -> list[np.ndarray]:
    """Deal whole groups, in a seeded random order, into parts holding ``fractions`` of the rows
    (the first part takes the rest). A group that would overshoot a part by more than half its
    target goes on to the next part."""
    rng = np.random.default_rng(seed)
    sizes = np.bincount(groups)
    targets = [f * len(groups) for f in fractions]
    counts = [0] * len(fractions)
    part_of_group = np.zeros(len(sizes), int)  # 0: the first part (training)
    for g in rng.permutation(len(sizes)):
        for p in range(1, len(fractions)):
            if counts[p] < targets[p] and counts[p] + sizes[g] <= targets[p] * 1.5:
                part_of_group[g] = p
                counts[p] += sizes[g]
                break
    part = part_of_group[groups]
    return [np.flatnonzero(part == p) for p in range(len(fractions))]


def grouped_split(
    images: np.ndarray,
    keypoints: np.ndarray,
    val_fraction: float = 0.15,
    seed: int = DEFAULT_SEED,
    threshold: float = GROUP_THRESHOLD,
):
    """Two parts, (train_idx, val_idx), that keep each group of near-duplicate faces on one side.

    Groups are drawn in a seeded random order into validation until it holds ``val_fraction`` of
    the rows; a group that would overshoot by more than half the target stays in training.
    """
    groups = near_duplicate_groups(images, keypoints, threshold)
    tr, val = _draw_groups(groups, (1 - val_fraction, val_fraction), seed)
    return tr, val


def three_way_split(
    images: np.ndarray,
    keypoints: np.ndarray,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = DEFAULT_SEED,
    threshold: float = GROUP_THRESHOLD,
):
    """Three parts, (train_idx, val_idx, test_idx), by the same near-duplicate groups.

    Validation makes every choice (the best epoch, augmentation strengths, recipes, flip
    averaging, the second look); the test part is read once, at the end, to report what a new
    face gets.
    """
    groups = near_duplicate_groups(images, keypoints, threshold)
    fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
    tr, val, test = _draw_groups(groups, fractions, seed)
    return tr, val, test
