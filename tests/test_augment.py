"""Augmentation moves pixels and labels together, in the NumPy path and the TF path alike.

The geometry tests draw a bright dot at a keypoint, transform image and keypoint, and find the dot
again: its brightest pixel must lie within 1 px of the transformed keypoint and its intensity
centroid within 0.1 px (a half-pixel slip in the centre or the flip constant would fail that).
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fkp_helpers import augment as A
from fkp_helpers.data import FLIP_PERMUTATION, IMAGE_SIZE, KEYPOINT_NAMES, N_KEYPOINTS

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TF_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coord = st.floats(15.0, 80.0, allow_nan=False)
angles = st.floats(-40.0, 40.0, allow_nan=False)
scales = st.floats(0.75, 1.3, allow_nan=False)
shifts = st.floats(-10.0, 10.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)

GEOMETRY_ONLY = A.AugmentConfig(
    flip_p=0.5,
    rotation_deg=30.0,
    scale=(0.8, 1.25),
    translate_px=8.0,
    geometric_p=1.0,
    photometric_p=0.0,
    noise_p=0.0,
    blur_p=0.0,
)
STRONG = A.AugmentConfig(
    flip_p=0.5,
    rotation_deg=45.0,
    scale=(0.6, 1.6),
    translate_px=20.0,
    geometric_p=0.9,
    brightness=0.3,
    contrast=0.5,
    photometric_p=0.8,
    noise_std=0.05,
    noise_p=0.5,
    blur_sigma=(0.5, 1.5),
    blur_p=0.5,
)
PHOTOMETRIC_ONLY = A.AugmentConfig(
    flip_p=0.0,
    geometric_p=0.0,
    brightness=0.3,
    contrast=0.5,
    photometric_p=1.0,
    noise_std=0.05,
    noise_p=1.0,
    blur_sigma=(0.5, 2.0),
    blur_p=1.0,
)


# --------------------------------------------------------------------------------------------
# Helpers


def dot_image(x: float, y: float, sigma: float = 1.5) -> np.ndarray:
    """A blank 96x96 float32 image with a gaussian dot centred at (x, y) px (pixel centres at
    integers)."""
    g = np.arange(IMAGE_SIZE, dtype=np.float64)
    d2 = (g[None, :] - x) ** 2 + (g[:, None] - y) ** 2
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)


def find_dot(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax pixel (x, y), intensity centroid (x, y)) of the brightest dot in a 96x96 image."""
    img = np.asarray(img, np.float64).reshape(IMAGE_SIZE, IMAGE_SIZE)
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    r = 7
    y0, y1 = max(iy - r, 0), min(iy + r + 1, IMAGE_SIZE)
    x0, x1 = max(ix - r, 0), min(ix + r + 1, IMAGE_SIZE)
    win = img[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    centroid = np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])
    return np.array([ix, iy], float), centroid


def one_keypoint(x: float, y: float, k: int = 0, n: int = 1) -> np.ndarray:
    """Keypoints (n, 30) with only keypoint ``k`` labelled at (x, y), the rest missing."""
    kp = np.full((n, 2 * N_KEYPOINTS), np.nan, np.float32)
    kp[:, 2 * k], kp[:, 2 * k + 1] = x, y
    return kp


def labelled(kp_row: np.ndarray) -> np.ndarray:
    """The (x, y) of the only labelled keypoint in a (30,) row."""
    xy = kp_row.reshape(N_KEYPOINTS, 2)
    finite = ~np.isnan(xy[:, 0])
    assert finite.sum() == 1, f"expected exactly one labelled keypoint, got {finite.sum()}"
    return xy[finite][0]


def assert_dot_follows(img: np.ndarray, xy: np.ndarray) -> None:
    pixel, centroid = find_dot(img)
    assert np.abs(pixel - xy).max() <= 1.0, f"dot peak at {pixel}, keypoint at {xy}"
    assert np.abs(centroid - xy).max() <= 0.1, f"dot centroid at {centroid}, keypoint at {xy}"


def inside(xy: np.ndarray, margin: float = 10.0) -> bool:
    """Whether (x, y) is labelled and at least ``margin`` px inside the image."""
    return bool(np.all(xy >= margin) and np.all(xy <= IMAGE_SIZE - 1 - margin))


def at(kp_row: np.ndarray, k: int = 0) -> np.ndarray:
    """(x, y) of keypoint ``k`` in a (30,) row, NaN if missing."""
    return np.asarray(kp_row).reshape(N_KEYPOINTS, 2)[k]


def random_batch(seed: int, n: int = 6, missing: float = 0.4):
    """Random images float32 [0, 1] (n, 96, 96) and keypoints (n, 30) px inside the frame with
    a random missing pattern (x and y together)."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    kp = rng.uniform(-0.5, 95.5, (n, 2 * N_KEYPOINTS)).astype(np.float32)
    gone = rng.random((n, N_KEYPOINTS)) < missing
    kp[np.repeat(gone, 2, axis=1)] = np.nan
    return images, kp


def np_of(t) -> np.ndarray:
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


# --------------------------------------------------------------------------------------------
# Flip


@SETTINGS
@given(seed=seeds)
def test_flip_twice_is_the_identity(seed):
    images, kp = random_batch(seed)
    img2, kp2 = A.hflip(*A.hflip(images, kp))
    np.testing.assert_array_equal(img2, images)
    np.testing.assert_allclose(kp2, kp, atol=1e-5)
    np.testing.assert_array_equal(np.isnan(kp2), np.isnan(kp))


@TF_SETTINGS
@given(seed=seeds)
def test_tf_flip_twice_is_the_identity(seed):
    images, kp = random_batch(seed)
    img1, kp1 = A.tf_hflip(images[..., None], kp)
    img2, kp2 = A.tf_hflip(img1, kp1)
    np.testing.assert_array_equal(np_of(img2)[..., 0], images)
    np.testing.assert_allclose(np_of(kp2), kp, atol=1e-5)


def test_flip_swap_table_maps_every_left_keypoint_to_its_right_twin():
    lefts = [i for i, n in enumerate(KEYPOINT_NAMES) if "left" in n]
    assert len(lefts) == 6
    for i, name in enumerate(KEYPOINT_NAMES):
        twin = KEYPOINT_NAMES[FLIP_PERMUTATION[i]]
        if "left" in name:
            assert twin == name.replace("left", "right")
        elif "right" in name:
            assert twin == name.replace("right", "left")
        else:
            assert twin == name
    np.testing.assert_array_equal(FLIP_PERMUTATION[FLIP_PERMUTATION], np.arange(N_KEYPOINTS))


def test_flip_puts_the_left_eye_label_back_on_the_image_right():
    # Subject's left eye sits on the image's right (x > 47.5). After a correct flip, the label
    # named left_eye_center must again be on the image right, at 95 - (right eye's x).
    kp = np.full((1, 30), np.nan, np.float32)
    kp[0, 0:4] = [66.0, 37.0, 30.0, 38.0]  # left eye (66, 37), right eye (30, 38)
    _, out = A.hflip(np.zeros((1, 96, 96), np.float32), kp)
    np.testing.assert_allclose(out[0, 0:4], [65.0, 38.0, 29.0, 37.0])
    _, out_tf = A.tf_hflip(np.zeros((1, 96, 96, 1), np.float32), kp)
    np.testing.assert_allclose(np_of(out_tf)[0, 0:4], [65.0, 38.0, 29.0, 37.0])


@SETTINGS
@given(x=coord, y=coord, k=st.integers(0, N_KEYPOINTS - 1))
def test_flip_dot_follows_keypoint(x, y, k):
    img, kp = A.hflip(dot_image(x, y)[None], one_keypoint(x, y, k))
    xy = kp.reshape(N_KEYPOINTS, 2)[FLIP_PERMUTATION[k]]
    np.testing.assert_allclose(xy, [95 - x, y], atol=1e-4)
    assert_dot_follows(img[0], xy)


# --------------------------------------------------------------------------------------------
# Affine geometry: the dot follows the keypoint


@pytest.mark.parametrize(
    "angle, scale, tx, ty",
    [(20.0, 1, 0, 0), (0, 1.2, 0, 0), (0, 0.8, 0, 0), (0, 1, 5.5, -3.25), (-25.0, 1.15, -4, 6)],
    ids=["rotation", "zoom-in", "zoom-out", "translation", "all-three"],
)
@SETTINGS
@given(x=coord, y=coord)
def test_affine_dot_follows_keypoint(angle, scale, tx, ty, x, y):
    img, kp = A.affine(dot_image(x, y)[None], one_keypoint(x, y), angle, scale, tx, ty)
    xy = at(kp[0])
    assume(inside(xy))
    assert_dot_follows(img[0], xy)


@SETTINGS
@given(x=coord, y=coord, angle=angles, scale=scales, tx=shifts, ty=shifts)
def test_affine_dot_follows_keypoint_for_any_parameters(x, y, angle, scale, tx, ty):
    img, kp = A.affine(dot_image(x, y)[None], one_keypoint(x, y), angle, scale, tx, ty)
    xy = at(kp[0])
    assume(inside(xy))
    assert_dot_follows(img[0], xy)


@TF_SETTINGS
@given(x=coord, y=coord, angle=angles, scale=scales, tx=shifts, ty=shifts)
def test_tf_affine_dot_follows_keypoint(x, y, angle, scale, tx, ty):
    img, kp = A.tf_affine(
        dot_image(x, y)[None, ..., None], one_keypoint(x, y), angle, scale, tx, ty
    )
    xy = at(np_of(kp)[0])
    assume(inside(xy))
    assert_dot_follows(np_of(img)[0, ..., 0], xy)


def dot_faces(rng, n: int, lo: float, hi: float):
    """``n`` faces with one dot each, at a random keypoint placed uniformly in [lo, hi] px:
    images ``(n, 96, 96)``, keypoints ``(n, 30)`` (the others missing), keypoint indices."""
    xy0 = rng.uniform(lo, hi, (n, 2))
    ks = rng.integers(0, N_KEYPOINTS, n)
    images = np.stack([dot_image(x, y) for x, y in xy0])
    kp = np.concatenate([one_keypoint(x, y, k) for (x, y), k in zip(xy0, ks, strict=True)])
    return images, kp, ks


@SETTINGS
@given(seed=seeds)
def test_pipeline_dot_follows_keypoint_through_flip_and_warp(seed):
    # One dot per face at a random keypoint; the pipeline flips some faces (the label changes
    # name) and warps all of them with random rotation, scale and shift.
    rng = np.random.default_rng(seed)
    n = 8
    images, kp, ks = dot_faces(rng, n, 25, 70)
    params = A.sample_params(GEOMETRY_ONLY, n, rng)
    for name, (img, out) in {
        "numpy": A.apply_params(images, kp, params),
        "tf": A.tf_apply_params(images[..., None], kp, params),
    }.items():
        img, out = np_of(img).reshape(n, 96, 96), np_of(out)
        for i in range(n):
            xy = out[i].reshape(N_KEYPOINTS, 2)
            k = FLIP_PERMUTATION[ks[i]] if params.flip[i] else ks[i]
            assert np.isnan(np.delete(xy, k, axis=0)).all(), name
            if inside(xy[k]):
                assert_dot_follows(img[i], xy[k])


def test_positive_angle_turns_counterclockwise_on_screen():
    # A point 20 px right of the centre, turned by +90 degrees, ends 20 px above it (y down).
    _, kp = A.affine(np.zeros((1, 96, 96), np.float32), one_keypoint(67.5, 47.5), angle_deg=90)
    np.testing.assert_allclose(labelled(kp[0]), [47.5, 27.5], atol=1e-4)
    _, kp_tf = A.tf_affine(np.zeros((1, 96, 96, 1), np.float32), one_keypoint(67.5, 47.5), 90)
    np.testing.assert_allclose(labelled(np_of(kp_tf)[0]), [47.5, 27.5], atol=1e-4)


def test_scale_is_about_the_image_centre():
    kp = one_keypoint(47.5, 47.5)
    kp[0, 2:4] = [57.5, 47.5]  # a second point 10 px right of the centre
    _, out = A.affine(np.zeros((1, 96, 96), np.float32), kp, scale=1.5)
    np.testing.assert_allclose(out[0, :4], [47.5, 47.5, 62.5, 47.5], atol=1e-4)


@SETTINGS
@given(
    r=st.floats(0, 47.0),
    phi=st.floats(0, 2 * np.pi),
    angle=st.floats(-180, 180),
)
def test_rotating_by_a_then_minus_a_returns_keypoints(r, phi, angle):
    x, y = 47.5 + r * np.cos(phi), 47.5 + r * np.sin(phi)  # within the frame at any angle
    kp = one_keypoint(x, y)
    img = np.zeros((1, 96, 96), np.float32)
    _, back = A.affine(*A.affine(img, kp, angle), -angle)
    np.testing.assert_allclose(back, kp, atol=1e-3)
    _, back_tf = A.tf_affine(*A.tf_affine(img[..., None], kp, angle), -angle)
    np.testing.assert_allclose(np_of(back_tf), kp, atol=1e-3)


def test_affine_takes_per_face_parameters():
    img = np.stack([dot_image(40, 50), dot_image(40, 50)])
    kp = one_keypoint(40, 50, n=2)
    out_img, out = A.affine(img, kp, angle_deg=np.array([0.0, 30.0]), tx=np.array([5.0, 0.0]))
    np.testing.assert_allclose(labelled(out[0]), [45, 50], atol=1e-4)
    assert_dot_follows(out_img[0], labelled(out[0]))
    assert_dot_follows(out_img[1], labelled(out[1]))
    assert not np.allclose(labelled(out[1]), [40, 50])


# --------------------------------------------------------------------------------------------
# Missing and out-of-frame keypoints


@SETTINGS
@given(seed=seeds)
def test_missing_keypoints_stay_missing_and_x_y_go_together(seed):
    images, kp = random_batch(seed)
    params = A.sample_params(STRONG, len(images), seed)
    _, out = A.apply_params(images, kp, params)
    was_missing = np.isnan(kp).reshape(-1, N_KEYPOINTS, 2)[..., 0]
    permuted = np.where(params.flip[:, None], was_missing[:, FLIP_PERMUTATION], was_missing)
    now_missing = np.isnan(out).reshape(-1, N_KEYPOINTS, 2)
    assert (now_missing[..., 0] == now_missing[..., 1]).all()
    assert not (permuted & ~now_missing[..., 0]).any(), "a missing keypoint got a value"


@SETTINGS
@given(seed=seeds)
def test_points_leaving_the_frame_become_missing_and_only_those(seed):
    images, kp = random_batch(seed)
    params = A.sample_params(STRONG, len(images), seed)
    _, out = A.apply_params(images, kp, params)
    # Recompute where every point goes, without the frame rule.
    flipped = np.where(params.flip[:, None], A.flip_keypoints(kp), kp)
    m = A.affine_matrix(params.angle_deg, params.scale, params.tx, params.ty)
    moved = A.transform_keypoints(flipped, m).reshape(-1, N_KEYPOINTS, 2)
    off = ((moved < -0.5) | (moved > 95.5)).any(axis=2)
    finite_before = ~np.isnan(moved[..., 0])
    now_missing = np.isnan(out).reshape(-1, N_KEYPOINTS, 2)[..., 0]
    np.testing.assert_array_equal(now_missing, ~finite_before | off)
    kept = ~now_missing
    np.testing.assert_allclose(out.reshape(-1, N_KEYPOINTS, 2)[kept], moved[kept], atol=1e-3)


@SETTINGS
@given(seed=seeds)
def test_no_keypoint_outside_the_frame_reaches_the_loss(seed):
    images, kp = random_batch(seed, n=16)
    _, out = A.augment_batch(images, kp, STRONG, np.random.default_rng(seed))
    finite = out[~np.isnan(out)]
    assert finite.size and finite.min() >= -0.5 and finite.max() <= 95.5


@TF_SETTINGS
@given(seed=seeds)
def test_tf_no_keypoint_outside_the_frame_and_missing_stays_missing(seed):
    images, kp = random_batch(seed, n=16)
    _, out = A.tf_augment(images[..., None], kp, STRONG, tf.constant([seed, 1], tf.int64))
    out = np_of(out)
    finite = out[~np.isnan(out)]
    assert finite.size and finite.min() >= -0.5 and finite.max() <= 95.5
    assert np.isnan(out).sum() >= np.isnan(kp).sum()


def test_faces_left_untouched_keep_labels_just_off_the_last_pixel():
    # Kaggle's files allow x up to 96; only a face that a geometric transform moves loses them.
    kp = one_keypoint(95.8, 40.0, n=2)
    params = A.sample_params(A.AugmentConfig.none(), 2, 0)
    params = A.AugmentParams(**{**params.__dict__, "flip": np.array([True, False])})
    _, out = A.apply_params(np.zeros((2, 96, 96), np.float32), kp, params)
    assert np.isnan(out[0]).all()
    np.testing.assert_array_equal(out[1], kp[1])


# --------------------------------------------------------------------------------------------
# Photometric transforms


@SETTINGS
@given(seed=seeds)
def test_photometric_transforms_never_move_a_keypoint(seed):
    images, kp = random_batch(seed)
    img, out = A.augment_batch(images, kp, PHOTOMETRIC_ONLY, np.random.default_rng(seed))
    np.testing.assert_array_equal(out, kp)
    assert not np.allclose(img, images)
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1


@TF_SETTINGS
@given(seed=seeds)
def test_tf_photometric_transforms_never_move_a_keypoint(seed):
    images, kp = random_batch(seed)
    img, out = A.tf_augment(images[..., None], kp, PHOTOMETRIC_ONLY, tf.constant([seed, 7]))
    np.testing.assert_array_equal(np_of(out), kp)
    img = np_of(img)
    assert img.min() >= 0 and img.max() <= 1 and not np.allclose(img[..., 0], images)


def test_brightness_and_contrast_do_what_they_say():
    img = np.linspace(0.2, 0.6, 96 * 96, dtype=np.float32).reshape(1, 96, 96)
    out = A.adjust_brightness_contrast(img, brightness=0.1, contrast=1.0)
    np.testing.assert_allclose(out, img + 0.1, atol=1e-6)
    out = A.adjust_brightness_contrast(img, brightness=0.0, contrast=2.0)
    np.testing.assert_allclose(out.mean(), img.mean(), atol=1e-5)
    np.testing.assert_allclose(out.std(), 2 * img.std(), rtol=1e-4)


def test_blur_spreads_a_dot_and_keeps_its_total():
    img = dot_image(48, 48, sigma=0.5)[None]
    out = A.gaussian_blur(img, 1.5)
    assert out.max() < 0.5 * img.max()
    np.testing.assert_allclose(out.sum(), img.sum(), rtol=1e-4)
    np.testing.assert_array_equal(A.gaussian_blur(img, 0.0), img)
    out_tf = np_of(A.tf_gaussian_blur(img[..., None], np.array([1.5]), 5))
    np.testing.assert_allclose(out_tf[..., 0], A.gaussian_blur(img, 1.5, 5), atol=1e-6)


# --------------------------------------------------------------------------------------------
# NumPy and TF agree; determinism; the config


@TF_SETTINGS
@given(seed=seeds)
def test_numpy_and_tf_paths_agree_for_the_same_parameters(seed):
    images, kp = random_batch(seed, n=8)
    params = A.sample_params(STRONG, len(images), seed)
    img_np, kp_np = A.apply_params(images, kp, params)
    img_tf, kp_tf = A.tf_apply_params(images[..., None], kp, params)
    np.testing.assert_allclose(np_of(img_tf)[..., 0], img_np, atol=2e-4)
    np.testing.assert_array_equal(np.isnan(np_of(kp_tf)), np.isnan(kp_np))
    np.testing.assert_allclose(np_of(kp_tf), kp_np, atol=1e-3)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant"])
def test_numpy_and_tf_fill_the_borders_alike(fill_mode):
    images, kp = random_batch(3, n=4)
    args = (np.array([30.0, -50, 10, 0]), np.array([0.7, 1.0, 1.3, 0.6]), 12.3, -20.7)
    img_np, _ = A.affine(images, kp, *args, fill_mode=fill_mode)
    img_tf, _ = A.tf_affine(images[..., None], kp, *args, fill_mode=fill_mode)
    np.testing.assert_allclose(np_of(img_tf)[..., 0], img_np, atol=2e-4)


def test_same_seed_gives_the_same_batches_numpy():
    images, kp = random_batch(0, n=16)
    a = A.augment_batch(images, kp, STRONG, np.random.default_rng(42))
    b = A.augment_batch(images, kp, STRONG, np.random.default_rng(42))
    c = A.augment_batch(images, kp, STRONG, np.random.default_rng(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_same_seed_gives_the_same_batches_tf():
    images, kp = random_batch(0, n=16)
    run = tf.function(lambda x, k, s: A.tf_augment(x, k, STRONG, s))
    a = run(images[..., None], kp, tf.constant([5, 6], tf.int64))
    b = run(images[..., None], kp, tf.constant([5, 6], tf.int64))
    c = run(images[..., None], kp, tf.constant([5, 7], tf.int64))
    np.testing.assert_array_equal(np_of(a[0]), np_of(b[0]))
    np.testing.assert_array_equal(np_of(a[1]), np_of(b[1]))
    assert not np.array_equal(np_of(a[0]), np_of(c[0]))


def test_dataset_pipeline_repeats_exactly_and_changes_every_epoch():
    images, kp = random_batch(1, n=40)
    images = (images * 255).astype(np.uint8)

    def two_epochs(seed):
        ds = A.augmented_dataset(images, kp, STRONG, batch_size=16, seed=seed, shuffle=False)
        return [[(np_of(x), np_of(y)) for x, y in ds] for _ in range(2)]

    first, again = two_epochs(9), two_epochs(9)
    for epoch_a, epoch_b in zip(first, again, strict=True):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert [x.shape for x, _ in first[0]] == [(16, 96, 96, 1), (16, 96, 96, 1), (8, 96, 96, 1)]
    assert not np.array_equal(first[0][0][0], first[1][0][0]), "epochs got the same draws"


def test_dataset_pipeline_runs_without_the_autotuner():
    # with tf.data's autotuner on, the iterator that fit deletes at its end waited for the
    # autotuner's next round (up to a minute late in a run, outside any budget)
    images, kp = random_batch(1, n=8)
    for config in (STRONG, None):
        ds = A.augmented_dataset(images, kp, config, batch_size=4, repeat=True)
        assert ds.options().autotune.enabled is False
        assert ds.element_spec[0].shape.as_list() == [None, 96, 96, 1]


def test_none_config_changes_nothing():
    images, kp = random_batch(2)
    img, out = A.augment_batch(images, kp, A.AugmentConfig.none(), np.random.default_rng(0))
    np.testing.assert_array_equal(img, images)
    np.testing.assert_array_equal(out, kp)
    img_tf, out_tf = A.tf_augment(images[..., None], kp, A.AugmentConfig.none(), [1, 2])
    np.testing.assert_array_equal(np_of(img_tf)[..., 0], images)


def test_augment_batch_keeps_shape_dtype_range_and_inputs():
    images, kp = random_batch(4)
    before = images.copy(), kp.copy()
    for x in (images, images[..., None]):
        img, out = A.augment_batch(x, kp, STRONG, np.random.default_rng(1))
        assert img.shape == x.shape and img.dtype == np.float32 and out.dtype == np.float32
        assert img.min() >= 0 and img.max() <= 1
    np.testing.assert_array_equal(images, before[0])
    np.testing.assert_array_equal(kp, before[1])


def test_uint8_images_are_refused_with_a_hint():
    with pytest.raises(TypeError, match="astype"):
        A.hflip(np.zeros((1, 96, 96), np.uint8), np.zeros((1, 30), np.float32))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"flip_p": 1.5}, "flip_p"),
        ({"scale": (1.2, 0.8)}, "scale"),
        ({"rotation_deg": -1}, "rotation_deg"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma"),
        ({"wide_p": -0.1}, "wide_p"),
        ({"wide_scale": (0.0, 1.2)}, "wide_scale"),
        ({"wide_rotation_deg": 190}, "wide_rotation_deg"),
        ({"wide_translate_px": -2}, "wide_translate_px"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        A.AugmentConfig(**kwargs)


# --------------------------------------------------------------------------------------------
# The wide tail: a few faces warped far beyond the ordinary ranges

WIDE = A.AugmentConfig(
    rotation_deg=7.0, scale=(0.9, 1.11), translate_px=3.0, geometric_p=0.8, wide_p=0.05
)
ORDINARY = ("flip", "brightness", "contrast", "blur_sigma", "noise_std")


def tf_params(config, n, seed):
    p = A.tf_sample_params(config, n, tf.constant(seed, tf.int64))
    return {k: None if v is None else np_of(v) for k, v in vars(p).items()}


def wide_faces(p, config):
    """Faces whose warp lies outside the ordinary ranges (so it came from the wide tail)."""
    return (
        (np.abs(p["angle_deg"]) > config.rotation_deg + 1e-4)
        | (np.abs(p["tx"]) > config.translate_px + 1e-4)
        | (np.abs(p["ty"]) > config.translate_px + 1e-4)
        | (p["scale"] < config.scale[0] - 1e-6)
        | (p["scale"] > config.scale[1] + 1e-6)
    )


@given(seed=seeds, wide_p=st.floats(1e-6, 1.0))
@SETTINGS
def test_wide_tail_draws_last_so_the_other_draws_stay_numpy(seed, wide_p):
    n = 64
    off = vars(A.sample_params(replace(WIDE, wide_p=0.0), n, seed))
    on = vars(A.sample_params(replace(WIDE, wide_p=wide_p), n, seed))
    for k in ORDINARY + ("noise",):
        np.testing.assert_array_equal(on[k], off[k])
    # A face the tail passes over keeps its ordinary warp exactly.
    kept = ~wide_faces(on, WIDE) & (on["angle_deg"] == off["angle_deg"])
    for k in ("geometric", "scale", "tx", "ty"):
        np.testing.assert_array_equal(on[k][kept], off[k][kept])


@given(seed=st.lists(st.integers(0, 2**31 - 1), min_size=2, max_size=2), wide_p=st.floats(1e-6, 1))
@TF_SETTINGS
def test_wide_tail_has_its_own_seed_so_the_other_draws_stay_tf(seed, wide_p):
    n = 64
    off = tf_params(replace(WIDE, wide_p=0.0), n, seed)
    on = tf_params(replace(WIDE, wide_p=wide_p), n, seed)
    for k in ORDINARY:
        np.testing.assert_array_equal(on[k], off[k])
    same = (on["angle_deg"] == off["angle_deg"]) & (on["tx"] == off["tx"])
    assert same.mean() >= 1 - wide_p - 0.25  # all but the tail's faces (binomial slack)
    np.testing.assert_array_equal(on["scale"][same], off["scale"][same])


@pytest.mark.parametrize("path", ["numpy", "tf"])
def test_wide_tail_reaches_its_ranges_on_about_wide_p_of_the_faces(path):
    n = 20000
    if path == "numpy":
        p = vars(A.sample_params(WIDE, n, 3))
    else:
        p = tf_params(WIDE, n, [3, 4])
    wide = wide_faces(p, WIDE)
    # A wide draw lands inside all the ordinary ranges 0.6% of the time (0.28 x 0.25 x 0.25 x
    # 0.36), so about 4.97% of the faces show it: 994 of 20000, sd 31; the bounds are 4 sd.
    assert 0.044 * n < wide.sum() < 0.056 * n
    assert p["geometric"][wide].all()
    assert np.abs(p["angle_deg"]).max() <= WIDE.wide_rotation_deg + 1e-4
    assert np.abs(p["angle_deg"]).max() > 0.95 * WIDE.wide_rotation_deg
    for k in ("tx", "ty"):
        assert np.abs(p[k]).max() <= WIDE.wide_translate_px + 1e-4
        assert np.abs(p[k]).max() > 0.95 * WIDE.wide_translate_px
    lo, hi = WIDE.wide_scale
    assert lo - 1e-5 <= p["scale"].min() < 0.8 and 1.3 < p["scale"].max() <= hi + 1e-5


def test_wide_tail_warps_a_face_even_when_the_ordinary_warp_is_off():
    config = replace(A.AugmentConfig.none(), wide_p=1.0)
    p = A.sample_params(config, 200, 0)
    assert p.geometric.all() and np.abs(p.angle_deg).max() > 20
    q = tf_params(config, 200, [0, 1])
    assert q["geometric"].all() and np.abs(q["angle_deg"]).max() > 20


@given(seed=seeds)
@TF_SETTINGS
def test_wide_tail_moves_pixels_and_labels_together(seed):
    # The pipeline's dot test on faces warped by the wide tail alone, with TF's own draws (the
    # path training takes): every dot still inside the frame sits under its keypoint.
    n = 8
    images, kp, ks = dot_faces(np.random.default_rng(seed), n, 35, 60)
    config = replace(A.AugmentConfig.none(), wide_p=1.0)
    params = A.tf_sample_params(config, n, tf.constant([seed, 1], tf.int64))
    img, out = A.tf_apply_params(images[..., None], kp, params)
    img, out = np_of(img).reshape(n, 96, 96), np_of(out)
    assert np.abs(np_of(params.angle_deg)).max() > 7  # beyond the ordinary 7 degrees
    for i in range(n):
        xy = out[i].reshape(N_KEYPOINTS, 2)
        if inside(xy[ks[i]]):
            assert_dot_follows(img[i], xy[ks[i]])


# --------------------------------------------------------------------------------------------
# Measuring the data's spread


def test_rotating_faces_adds_the_angle_to_their_tilt():
    kp = np.full((1, 30), np.nan, np.float32)
    kp[0, 0:4] = [66.0, 37.0, 30.0, 38.0]
    before = A.head_tilt_deg(kp)[0]
    _, out = A.affine(np.zeros((1, 96, 96), np.float32), kp, angle_deg=12.0)
    np.testing.assert_allclose(A.head_tilt_deg(out)[0] - before, 12.0, atol=1e-3)


def test_suggested_ranges_have_the_data_spread():
    # Level faces rotated with a known tilt spread: the suggested range is sqrt(3) * std.
    rng = np.random.default_rng(0)
    n = 2000
    tilt = rng.normal(0, 6.0, n)
    base = np.full((n, 30), np.nan, np.float32)
    base[:, 0:4] = [66.0, 37.5, 30.0, 37.5]
    _, kp = A.affine(np.zeros((n, 96, 96), np.float32), base, angle_deg=tilt)
    images = rng.integers(0, 256, (n, 96, 96), dtype=np.uint8)
    spread = A.measure_spread(images, kp)
    assert spread.n_faces == n
    np.testing.assert_allclose(spread.tilt_deg, tilt.std(), rtol=1e-3)
    cfg = A.suggest_config(spread)
    np.testing.assert_allclose(cfg.rotation_deg, np.sqrt(3) * tilt.std(), rtol=1e-3)
    assert spread.log_scale < 1e-4 and cfg.scale[0] <= 1 <= cfg.scale[1]
    table = A.strength_table(spread, cfg)
    np.testing.assert_allclose(table["config / suggested"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(table["suggested √3σ"], np.sqrt(3) * table["data σ"], rtol=1e-6)


def test_faces_a_transform_skips_are_copied_exactly():
    # The TF path warps the whole batch once; faces drawn for no geometry get the identity (or a
    # pure mirror), which must copy pixels bit for bit.
    images, kp = random_batch(5, n=4)
    params = A.sample_params(GEOMETRY_ONLY, 4, 0)
    params = A.AugmentParams(
        **{
            **params.__dict__,
            "flip": np.array([False, True, False, True]),
            "geometric": np.array([False, False, True, True]),
        }
    )
    for img in (
        A.apply_params(images, kp, params)[0],
        np_of(A.tf_apply_params(images[..., None], kp, params)[0])[..., 0],
    ):
        np.testing.assert_array_equal(img[0], images[0])
        np.testing.assert_array_equal(img[1], images[1, :, ::-1])
        assert not np.allclose(img[2], images[2])


@pytest.mark.parametrize("n_blurred", [0, 1, 4])
def test_tf_blur_copes_with_any_number_of_blurred_faces(n_blurred):
    images, kp = random_batch(6, n=4)
    params = A.sample_params(A.AugmentConfig.none(), 4, 0)
    sigma = np.where(np.arange(4) < n_blurred, 1.0, 0.0)
    params = A.AugmentParams(**{**params.__dict__, "blur_sigma": sigma, "blur_radius": 3})
    img_tf, _ = A.tf_apply_params(images[..., None], kp, params)
    img_np, _ = A.apply_params(images, kp, params)
    np.testing.assert_allclose(np_of(img_tf)[..., 0], img_np, atol=1e-5)
    np.testing.assert_array_equal(img_np[n_blurred:], images[n_blurred:])


def test_eye_distance_scales_with_the_face_and_sharpness_drops_with_blur():
    kp = one_keypoint(66.0, 37.0)
    kp[0, 2:4] = [30.0, 37.0]
    _, zoomed = A.affine(np.zeros((1, 96, 96), np.float32), kp, scale=1.2)
    np.testing.assert_allclose(A.eye_distance(zoomed) / A.eye_distance(kp), 1.2, rtol=1e-5)
    images, _ = random_batch(8, n=3)
    assert (A.sharpness(A.gaussian_blur(images, 1.0)) < A.sharpness(images)).all()


def test_pipeline_throughput_counts_images_per_second():
    images, kp = random_batch(9, n=32)
    rate = A.pipeline_throughput(images, kp, STRONG, batch_size=16, passes=1)
    assert np.isfinite(rate) and rate > 0
