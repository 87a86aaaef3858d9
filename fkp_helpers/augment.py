"""Data augmentation for facial keypoints (chapter 4): transforms that move pixels AND labels.

Every transform works on a batch: images float32 in [0, 1], shape (B, 96, 96) or (B, 96, 96, 1);
keypoints float32 (B, 30) in pixels, Kaggle's column order, NaN where missing. Coordinates follow
:mod:`fkp_helpers.keypoints`, the one home of the frame, the flip and the affine maps: pixel
centres at integer coordinates, x to the right, y down, so the image covers [-0.5, 95.5] on each
axis (``keypoints.FRAME``) and its centre is (47.5, 47.5) (``keypoints.CENTRE``).

Geometry
    * :func:`hflip` mirrors x to ``95 - x`` and swaps left/right names with
      :data:`fkp_helpers.keypoints.FLIP_PERMUTATION` (the mirrored face's left eye was the
      original's right eye). It reverses pixel columns exactly: no resampling.
    * :func:`affine` rotates (degrees, positive = counter-clockwise on screen), scales (factor > 1
      enlarges the face) about the image centre (47.5, 47.5), then translates (pixels, +x right,
      +y down), in ONE bilinear resampling per image.
    * Borders are filled by repeating the edge pixels (``fill_mode="nearest"``). Why not the
      alternatives: ``"reflect"`` can mirror an eye or a mouth corner back into the frame, a face
      part with no label; ``"constant"`` (black) paints straight dark edges that no real photo
      has. Repeated edges only smear the hair or background that is there, and match how the
      stand-in's faces were placed (replicated borders).

Missing and out-of-frame keypoints
    A missing keypoint (NaN) stays missing. After a geometric transform is applied to a face, any
    of its keypoints whose x or y lies outside the image, [-0.5, 95.5], becomes missing (x and y
    both NaN, ``keypoints.mark_outside``): a label that no pixel shows is never passed to the
    loss. Faces that a geometric transform does not touch keep their labels unchanged.

Photometry
    Brightness adds a grey-level offset, contrast scales about the image's own mean, gaussian noise
    adds per-pixel noise and blur convolves with a gaussian (symmetric padding). None of them moves
    a keypoint. Images are clipped to [0, 1] at the end.

Two implementations with the same semantics: NumPy (:func:`augment_batch`, :func:`hflip`,
:func:`affine`) and TensorFlow graph ops for ``tf.data`` (:func:`tf_augment`, :func:`tf_hflip`,
:func:`tf_affine`). Both apply the same :class:`AugmentParams`, so their results can be compared
directly. TensorFlow is imported only when a ``tf_*`` function is called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from fkp_helpers.keypoints import (  # noqa: F401  (flip, frame, tilt and eye distance live there)
    CENTRE,
    FLIP_PERMUTATION,
    FLIP_X_CONSTANT,
    FRAME,
    IMAGE_SIZE,
    N_KEYPOINTS,
    apply_affine,
    eye_distance,
    flip_keypoints,
    head_tilt_deg,
    invert_affine,
    mark_outside,
)

FILL_MODE = "nearest"
"""How pixels that come from outside the image are filled: repeat the nearest edge pixel."""

FILL_MODES = ("nearest", "reflect", "constant")

_SQRT3 = math.sqrt(3.0)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths and probabilities of each transform. Defaults: what chapter 4 recommends.

    The geometric and photometric ranges come from the spread the labels and images already
    show (stand-in data, Kaggle's eye geometry): each range is a uniform draw whose standard
    deviation equals the data's own (``range = sqrt(3) * std``); see :func:`measure_spread` and
    :func:`suggest_config`.

    flip_p: probability of a horizontal flip (with left/right swap).
    rotation_deg: rotation angle drawn uniformly in [-rotation_deg, rotation_deg], degrees.
    scale: (low, high) scale factor, drawn log-uniformly (zoom in and out equally likely).
    translate_px: shift in pixels, drawn uniformly in [-translate_px, translate_px] per axis.
    geometric_p: probability that the (single) affine warp is applied to a face.
    brightness: offset drawn uniformly in [-brightness, brightness], grey levels in [0, 1] units.
    contrast: factor drawn uniformly in [1 - contrast, 1 + contrast], about the image mean.
    photometric_p: probability that brightness and contrast are applied to a face.
    noise_std: standard deviation of additive gaussian noise, grey levels in [0, 1] units.
    noise_p: probability that noise is added to a face.
    blur_sigma: (low, high) standard deviation of the gaussian blur in pixels, drawn uniformly.
    blur_p: probability that a face is blurred.
    wide_p: probability that a face's warp is drawn instead from the wide ranges below (the
        "wide tail"): for the rare faces tilted, zoomed or off-centre far beyond the typical
        spread, which the ranges above never reach. 0 (the default) draws nothing extra, so the
        other draws stay exactly as they were.
    wide_rotation_deg: the wide tail's rotation, uniform in +/- this many degrees.
    wide_scale: the wide tail's (low, high) scale factor, drawn log-uniformly.
    wide_translate_px: the wide tail's shift in pixels, uniform in +/- this many per axis.
    """

    flip_p: float = 0.5
    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.82, 1.22)
    translate_px: float = 4.3
    geometric_p: float = 0.8
    brightness: float = 0.18
    contrast: float = 0.48
    photometric_p: float = 0.8
    noise_std: float = 0.02
    noise_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.2)
    blur_p: float = 0.2
    wide_p: float = 0.0
    wide_rotation_deg: float = 25.0
    wide_scale: tuple[float, float] = (0.75, 1.35)
    wide_translate_px: float = 12.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{f.name} is a probability: got {v}, need 0-1")
        for name in (
            "rotation_deg",
            "translate_px",
            "brightness",
            "contrast",
            "noise_std",
            "wide_rotation_deg",
            "wide_translate_px",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("rotation_deg", "wide_rotation_deg"):
            if getattr(self, name) > 180:
                raise ValueError(f"AugmentConfig.{name} must be <= 180, got {getattr(self, name)}")
        if self.contrast >= 1:
            raise ValueError(
                f"AugmentConfig.contrast must be < 1 (factor 1 +/- it), got {self.contrast}"
            )
        for name in ("scale", "wide_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(
                    f"AugmentConfig.{name} must be (low, high) with 0 < low <= high, "
                    f"got {getattr(self, name)}"
                )
        lo, hi = self.blur_sigma
        if not 0 <= lo <= hi:
            raise ValueError(
                f"AugmentConfig.blur_sigma must be (low, high) with 0 <= low <= high, got {self.blur_sigma}"
            )

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every transform off: :func:`augment_batch` returns its inputs unchanged."""
        return cls(
            flip_p=0.0,
            rotation_deg=0.0,
            scale=(1.0, 1.0),
            translate_px=0.0,
            geometric_p=0.0,
            brightness=0.0,
            contrast=0.0,
            photometric_p=0.0,
            noise_std=0.0,
            noise_p=0.0,
            blur_sigma=(0.0, 0.0),
            blur_p=0.0,
        )

    @property
    def blur_radius(self) -> int:
        """Half-width in pixels of the blur kernel: 3 sigma of the largest blur, 0 if blur is off."""
        if self.blur_p == 0 or self.blur_sigma[1] == 0:
            return 0
        return max(1, math.ceil(3 * self.blur_sigma[1]))

    @property
    def uses_noise(self) -> bool:
        return self.noise_p > 0 and self.noise_std > 0


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one batch, per face (arrays of shape (B,)), ready to apply.

    A face that a transform skips holds that transform's identity value (angle 0, scale 1,
    brightness 0, contrast 1, blur sigma 0, noise std 0). ``noise`` is a unit gaussian field
    (B, 96, 96). ``geometric`` marks faces that get the affine warp. A field is None when the
    transform is off for the whole batch (flip; geometric with its four parameters; brightness
    with contrast; noise), so that the TF graph leaves it out.
    """

    flip: np.ndarray | None
    geometric: np.ndarray | None
    angle_deg: np.ndarray | None
    scale: np.ndarray | None
    tx: np.ndarray | None
    ty: np.ndarray | None
    brightness: np.ndarray | None
    contrast: np.ndarray | None
    blur_sigma: np.ndarray
    noise_std: np.ndarray
    noise: np.ndarray | None
    blur_radius: int


# --------------------------------------------------------------------------------------------
# Shapes and checks


def _as_batch(images: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return float32 images (B, 96, 96), float32 keypoints (B, 30), and whether a channel axis
    was present."""
    images = np.asarray(images)
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(
            f"images must be float in [0, 1], got dtype {images.dtype}; "
            "convert with images.astype(np.float32) / 255"
        )
    channel = images.ndim == 4
    if channel:
        if images.shape[-1] != 1:
            raise ValueError(f"images must be (B, 96, 96) or (B, 96, 96, 1), got {images.shape}")
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be (B, 96, 96) or (B, 96, 96, 1), got {images.shape}")
    if keypoints.shape != (len(images), 2 * N_KEYPOINTS):
        raise ValueError(
            f"keypoints must be (B, 30) for {len(images)} images, got {keypoints.shape}"
        )
    return images.astype(np.float32, copy=False), keypoints, channel


def _restore(images: np.ndarray, channel: bool) -> np.ndarray:
    return images[..., None] if channel else images


def _per_sample(value, n: int, name: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return np.full(n, float(v))
    if v.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {v.shape}")
    return v


# --------------------------------------------------------------------------------------------
# Keypoint geometry (shared by both paths)


def affine_matrix(angle_deg, scale, tx, ty) -> np.ndarray:
    """Forward matrices (B, 2, 3) mapping input pixel coordinates to output ones.

    ``p_out = c + scale * R(angle) (p_in - c) + (tx, ty)`` with c = (47.5, 47.5) and R a
    counter-clockwise rotation as seen on screen (y points down). Parameters are scalars or (B,).
    """
    a, s, tx, ty = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (angle_deg, scale, tx, ty))
    )
    th = np.radians(a)
    cos, sin = np.cos(th) * s, np.sin(th) * s
    m = np.empty((len(a), 2, 3))
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, 0, 2] = CENTRE + tx - cos * CENTRE - sin * CENTRE
    m[:, 1, 2] = CENTRE + ty + sin * CENTRE - cos * CENTRE
    return m


def transform_keypoints(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply forward matrices (B, 2, 3) to keypoints (B, 30) px, float32. NaN stays NaN; no
    frame rule (:func:`~fkp_helpers.keypoints.apply_affine` in float32)."""
    return apply_affine(keypoints, matrix).astype(np.float32)


# --------------------------------------------------------------------------------------------
# NumPy path


def hflip(images: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror faces left-right: pixel columns reversed exactly, x -> 95 - x, left/right swapped.

    images: float32 [0, 1], (B, 96, 96) or (B, 96, 96, 1); keypoints: float32 (B, 30) px, NaN =
    missing. A keypoint beyond 95.5 (off the image) lands below -0.5 and becomes missing.
    Flipping twice gives back the inputs.
    """
    img, kp, channel = _as_batch(images, keypoints)
    return _restore(img[:, :, ::-1].copy(), channel), mark_outside(flip_keypoints(kp))


def _map_coordinate(c: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map sampling coordinates that fall outside [0, n-1] back in, as TensorFlow's fill modes do."""
    if mode == "nearest":
        return np.clip(c, 0, n - 1)
    if mode == "reflect":  # d c b a | a b c d | d c b a, about the pixel edges
        m = np.mod(c, 2 * n)
        m = np.where(m >= n, 2 * n - 1 - m, m)
        return np.clip(m, 0, n - 1)
    return c  # constant: reads outside return 0


_CHUNK = 8
"""Faces per NumPy work chunk: small arrays stay in cache and are reused by the allocator
(whole-batch temporaries of 64 faces were measured 3-5x slower)."""


def warp(images: np.ndarray, inverse: np.ndarray, fill_mode: str = FILL_MODE) -> np.ndarray:
    """Bilinear resampling of images (B, 96, 96) float32 by inverse matrices (B, 2, 3).

    Output pixel (x, y) takes the input's value at ``inverse @ (x, y, 1)``, pixel centres at
    integers, like ``tf.raw_ops.ImageProjectiveTransformV3``. Vectorised over chunks of faces.
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    images = np.asarray(images, np.float32)
    out = np.empty_like(images)
    for i in range(0, len(images), _CHUNK):
        out[i : i + _CHUNK] = _warp_chunk(
            images[i : i + _CHUNK], inverse[i : i + _CHUNK], fill_mode
        )
    return out


def _warp_chunk(images: np.ndarray, inverse: np.ndarray, fill_mode: str) -> np.ndarray:
    b, h, w = images.shape
    inv = inverse.astype(np.float32)[:, :, :, None, None]  # (b, 2, 3, 1, 1)
    gx = np.arange(w, dtype=np.float32)[None, None, :]
    gy = np.arange(h, dtype=np.float32)[None, :, None]
    # A (b,1,w) row term plus a (b,h,1) column term: one full-size operation per coordinate.
    sx = inv[:, 0, 0] * gx + (inv[:, 0, 1] * gy + inv[:, 0, 2])
    sy = inv[:, 1, 0] * gx + (inv[:, 1, 1] * gy + inv[:, 1, 2])
    sx = _map_coordinate(sx, w, fill_mode)
    sy = _map_coordinate(sy, h, fill_mode)
    if fill_mode == "constant":  # neighbours outside the image read as 0
        x0f, y0f = np.floor(sx), np.floor(sy)
        wx, wy = sx - x0f, sy - y0f
        x0, y0 = x0f.astype(np.int32), y0f.astype(np.int32)
        flat = images.reshape(-1)
        base = (np.arange(b, dtype=np.int32) * (h * w))[:, None, None]

        def read(yy, xx):
            inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
            v = flat.take(base + np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1))
            return np.where(inside, v, np.float32(0))

        v00, v01 = read(y0, x0), read(y0, x0 + 1)
        v10, v11 = read(y0 + 1, x0), read(y0 + 1, x0 + 1)
    else:
        # Coordinates are already mapped into [0, n-1], so truncation is floor, and one
        # repeated row and column let every +1 neighbour exist (its weight is 0 at the edge).
        x0, y0 = sx.astype(np.int32), sy.astype(np.int32)
        wx, wy = np.subtract(sx, x0, dtype=np.float32), np.subtract(sy, y0, dtype=np.float32)
        padded = np.empty((b, h + 1, w + 1), np.float32)
        padded[:, :h, :w] = images
        padded[:, h, :w] = images[:, h - 1]
        padded[:, :, w] = padded[:, :, w - 1]
        padded = padded.reshape(-1)
        stride = w + 1
        i00 = y0 * stride
        i00 += x0
        i00 += (np.arange(b, dtype=np.int32) * ((h + 1) * stride))[:, None, None]
        v00, v01 = padded.take(i00), padded.take(i00 + 1)
        v10, v11 = padded.take(i00 + stride), padded.take(i00 + (stride + 1))
    top = v00 + wx * (v01 - v00)
    bottom = v10 + wx * (v11 - v10)
    return top + wy * (bottom - top)


def affine(
    images: np.ndarray,
    keypoints: np.ndarray,
    angle_deg=0.0,
    scale=1.0,
    tx=0.0,
    ty=0.0,
    *,
    fill_mode: str = FILL_MODE,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate, scale and translate faces and their keypoints in one bilinear warp.

    angle_deg: degrees, positive = counter-clockwise on screen; scale: factor (> 1 enlarges);
    tx, ty: pixels (+x right, +y down). Each is a scalar (whole batch) or an array (B,) (per face).
    Rotation and scaling are about the image centre (47.5, 47.5), then the shift is added.
    images: float32 [0, 1], (B, 96, 96) or (B, 96, 96, 1); keypoints: float32 (B, 30) px, NaN =
    missing. Keypoints that leave the image [-0.5, 95.5] become NaN.
    """
    img, kp, channel = _as_batch(images, keypoints)
    n = len(img)
    m = affine_matrix(
        _per_sample(angle_deg, n, "angle_deg"),
        _per_sample(scale, n, "scale"),
        _per_sample(tx, n, "tx"),
        _per_sample(ty, n, "ty"),
    )
    out = warp(img, invert_affine(m), fill_mode)
    return _restore(out, channel), mark_outside(transform_keypoints(kp, m))


def adjust_brightness_contrast(images: np.ndarray, brightness, contrast) -> np.ndarray:
    """``(x - mean) * contrast + mean + brightness`` per face, not clipped. Scalars or (B,)."""
    img = np.asarray(images, dtype=np.float32)
    n = len(img)
    axes = tuple(range(1, img.ndim))
    shape = (n,) + (1,) * (img.ndim - 1)
    c = _per_sample(contrast, n, "contrast").astype(np.float32).reshape(shape)
    b = _per_sample(brightness, n, "brightness").astype(np.float32).reshape(shape)
    mean = img.mean(axis=axes, keepdims=True, dtype=np.float32)
    return img * c + (mean * (1 - c) + b)  # = (img - mean) * c + mean + b, in one full pass


def gaussian_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    """Normalised 1-D gaussian kernels (B, 2*radius+1) for per-face sigmas in pixels; sigma 0
    gives the identity kernel."""
    sigma = np.asarray(sigma, dtype=np.float32)
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    safe = np.maximum(sigma, 1e-3)[:, None]
    k = np.exp(-0.5 * (x[None, :] / safe) ** 2)
    k = np.where(sigma[:, None] > 0, k, (x[None, :] == 0).astype(np.float32))
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def gaussian_blur(images: np.ndarray, sigma, radius: int | None = None) -> np.ndarray:
    """Blur faces (B, 96, 96) float32 with per-face gaussian sigma (pixels; scalar or (B,)).

    Separable, symmetric padding at the borders, kernel half-width ``radius`` (default 3 sigma).
    """
    img = np.asarray(images, dtype=np.float32)
    n = len(img)
    s = _per_sample(sigma, n, "sigma").astype(np.float32)
    if radius is None:
        radius = max(1, math.ceil(3 * float(s.max(initial=0.0))))
    if radius == 0 or not (s > 0).any():
        return img.copy()
    k = gaussian_kernels(s, radius)
    h, w = img.shape[1:3]
    pad = np.pad(img, ((0, 0), (radius, radius), (radius, radius)), mode="symmetric")
    rows = sum(k[:, j, None, None] * pad[:, :, j : j + w] for j in range(2 * radius + 1))
    return sum(k[:, j, None, None] * rows[:, j : j + h, :] for j in range(2 * radius + 1))


def _wide_tail(config: AugmentConfig, u, geo, angle, scale, tx, ty, where, exp):
    """Give the wide tail's faces their wide warp, for both paths (NumPy arrays with np.where
    and np.exp, or tensors with tf.where and tf.exp).

    ``u`` holds five uniform draws in [-1, 1] per face, shape (5, B): the first picks the faces
    (probability ``config.wide_p``), the others their angle, log-scale and shift. Returns the
    new (geo, angle_deg, scale, tx, ty); a wide face is warped whatever its ordinary coin said.
    """
    wide = (u[0] + 1) / 2 < config.wide_p
    lo, hi = (float(v) for v in np.log(config.wide_scale))
    return (
        geo | wide,
        where(wide, config.wide_rotation_deg * u[1], angle),
        where(wide, exp(lo + (hi - lo) * (u[2] + 1) / 2), scale),
        where(wide, config.wide_translate_px * u[3], tx),
        where(wide, config.wide_translate_px * u[4], ty),
    )


def sample_params(config: AugmentConfig, batch_size: int, rng) -> AugmentParams:
    """Draw one batch's parameters from ``rng`` (a NumPy Generator or an int seed).

    The same generator state gives the same parameters; the number of draws depends only on the
    batch size and on which transforms the config switches on.
    """
    rng = np.random.default_rng(rng)
    n = batch_size
    coin = rng.random((5, n))
    flip = coin[0] < config.flip_p
    geo = coin[1] < config.geometric_p
    photo = coin[2] < config.photometric_p
    noisy = coin[3] < config.noise_p
    blurred = coin[4] < config.blur_p
    r = rng.uniform(-1, 1, (5, n))
    lo, hi = np.log(config.scale)
    log_s = lo + (hi - lo) * (r[1] + 1) / 2
    angle = np.where(geo, config.rotation_deg * r[0], 0.0)
    scale = np.where(geo, np.exp(log_s), 1.0)
    tx = np.where(geo, config.translate_px * r[2], 0.0)
    ty = np.where(geo, config.translate_px * r[3], 0.0)
    bright = rng.uniform(-1, 1, n) * config.brightness
    contrast = 1 + rng.uniform(-1, 1, n) * config.contrast
    blo, bhi = config.blur_sigma
    sigma = blo + (bhi - blo) * rng.random(n)
    noise = None
    if config.uses_noise:  # drawn for the noisy faces only; zeros elsewhere
        noise = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        noise[noisy] = rng.standard_normal((int(noisy.sum()), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    if config.wide_p > 0:  # drawn last: with wide_p = 0 every other draw stays as it was
        geo, angle, scale, tx, ty = _wide_tail(
            config, rng.uniform(-1, 1, (5, n)), geo, angle, scale, tx, ty, np.where, np.exp
        )
    return AugmentParams(
        flip=flip,
        geometric=geo,
        angle_deg=angle,
        scale=scale,
        tx=tx,
        ty=ty,
        brightness=np.where(photo, bright, 0.0),
        contrast=np.where(photo, contrast, 1.0),
        blur_sigma=np.where(blurred, sigma, 0.0),
        noise_std=np.where(noisy, config.noise_std, 0.0),
        noise=noise,
        blur_radius=config.blur_radius,
    )


def apply_params(
    images: np.ndarray, keypoints: np.ndarray, params: AugmentParams, *, fill_mode: str = FILL_MODE
) -> tuple[np.ndarray, np.ndarray]:
    """Apply drawn parameters: flip, one affine warp, brightness/contrast, blur, noise, clip.

    Shapes and units as :func:`augment_batch`.
    """
    img, kp, channel = _as_batch(images, keypoints)
    n = len(img)
    flip = np.zeros(n, bool) if params.flip is None else np.asarray(params.flip, bool)
    geo = np.zeros(n, bool) if params.geometric is None else np.asarray(params.geometric, bool)
    m = None
    if flip.any():
        kp = np.where(flip[:, None], flip_keypoints(kp), kp)
    if geo.any():
        m = affine_matrix(params.angle_deg, params.scale, params.tx, params.ty)
        kp = np.where(geo[:, None], transform_keypoints(kp, m), kp)
    if (flip | geo).any():
        kp = mark_outside(kp, flip | geo)
    inv = None if m is None else invert_affine(m)
    out = np.empty_like(img)
    for i in range(0, n, _CHUNK):
        sl = slice(i, i + _CHUNK)
        out[sl] = _apply_to_images(img[sl], params, sl, flip[sl], geo[sl], inv, fill_mode)
    return _restore(out, channel), kp.astype(np.float32, copy=False)


def _apply_to_images(img, params, sl, flip, geo, inv, fill_mode) -> np.ndarray:
    """The image half of :func:`apply_params` for the faces ``sl`` (a chunk of the batch)."""
    img = img.copy()
    if flip.any():
        img[flip] = img[flip, :, ::-1]
    if geo.any():
        img[geo] = _warp_chunk(img[geo], inv[sl][geo], fill_mode)
    if params.brightness is not None:
        b, c = np.asarray(params.brightness)[sl], np.asarray(params.contrast)[sl]
        if ((b != 0) | (c != 1)).any():
            img = adjust_brightness_contrast(img, b, c)
    sigma = np.asarray(params.blur_sigma)[sl]
    if params.blur_radius > 0 and (sigma > 0).any():
        img[sigma > 0] = gaussian_blur(img[sigma > 0], sigma[sigma > 0], params.blur_radius)
    if params.noise is not None:
        std = np.asarray(params.noise_std, np.float32)[sl]
        if (std > 0).any():
            img += params.noise[sl] * std[:, None, None]
    return np.clip(img, 0.0, 1.0, out=img)


def augment_batch(
    images: np.ndarray, keypoints: np.ndarray, config: AugmentConfig, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a batch with NumPy: random flip, affine warp, brightness/contrast, blur, noise.

    images: float32 in [0, 1], (B, 96, 96) or (B, 96, 96, 1) (the shape is kept); keypoints:
    float32 (B, 30) px, NaN = missing. ``rng``: a NumPy Generator (or int seed); the same state
    gives the same batch. Returns new arrays; the inputs are not modified. Missing keypoints stay
    missing; keypoints moved off the image become missing; images are clipped to [0, 1].
    """
    img, kp, channel = _as_batch(images, keypoints)
    params = sample_params(config, len(img), rng)
    out, kp = apply_params(img, kp, params)
    return _restore(out, channel), kp


# --------------------------------------------------------------------------------------------
# TensorFlow path (graph ops; usable inside Dataset.map on batches)


def _tf():
    import tensorflow as tf

    return tf


_TF_FILL = {"nearest": "NEAREST", "reflect": "REFLECT", "constant": "CONSTANT"}


def _tf_images(images):
    tf = _tf()
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank == 3:
        return images[..., None], True
    return images, False


def tf_flip_keypoints(keypoints):
    """TF version of :func:`flip_keypoints`: (B, 30) px -> mirrored, left/right swapped."""
    tf = _tf()
    kp = tf.reshape(tf.convert_to_tensor(keypoints, tf.float32), [-1, N_KEYPOINTS, 2])
    kp = tf.gather(kp, FLIP_PERMUTATION, axis=1)
    kp = tf.stack([FLIP_X_CONSTANT - kp[..., 0], kp[..., 1]], axis=-1)
    return tf.reshape(kp, [-1, 2 * N_KEYPOINTS])


def tf_mark_outside(keypoints, rows=None):
    """TF version of :func:`mark_outside`: keypoints off the image [-0.5, 95.5] become NaN."""
    tf = _tf()
    kp = tf.reshape(tf.convert_to_tensor(keypoints, tf.float32), [-1, N_KEYPOINTS, 2])
    outside = tf.reduce_any((kp < FRAME[0]) | (kp > FRAME[1]), axis=2)
    if rows is not None:
        outside = outside & tf.convert_to_tensor(rows, tf.bool)[:, None]
    kp = tf.where(outside[..., None], tf.constant(np.nan, tf.float32), kp)
    return tf.reshape(kp, [-1, 2 * N_KEYPOINTS])


def tf_hflip(images, keypoints):
    """TF version of :func:`hflip`: images (B, 96, 96, 1) float32, keypoints (B, 30) px."""
    tf = _tf()
    img, squeeze = _tf_images(images)
    img = tf.reverse(img, axis=[2])
    kp = tf_mark_outside(tf_flip_keypoints(keypoints))
    return (img[..., 0] if squeeze else img), kp


def _tf_forward_and_inverse(angle_deg, scale, tx, ty, n):
    """Forward (B, 2, 3) and ImageProjectiveTransform rows (B, 8) for per-face parameters."""
    tf = _tf()

    def vec(v):
        v = tf.cast(tf.convert_to_tensor(v), tf.float32)
        return tf.broadcast_to(v, [n])

    a, s, tx, ty = vec(angle_deg), vec(scale), vec(tx), vec(ty)
    th = a * (math.pi / 180.0)
    cos, sin = tf.cos(th), tf.sin(th)
    c = CENTRE
    # forward: p' = c + s R (p - c) + t, R = [[cos, sin], [-sin, cos]] (counter-clockwise on screen)
    fwd = tf.stack(
        [
            tf.stack([s * cos, s * sin, c + tx - s * (cos + sin) * c], axis=-1),
            tf.stack([-s * sin, s * cos, c + ty + s * (sin - cos) * c], axis=-1),
        ],
        axis=1,
    )
    # inverse: p = c + R^T (p' - c - t) / s
    ux, uy = c + tx, c + ty
    i00, i01, i10, i11 = cos / s, -sin / s, sin / s, cos / s
    zeros = tf.zeros_like(s)
    rows = tf.stack(
        [i00, i01, c - i00 * ux - i01 * uy, i10, i11, c - i10 * ux - i11 * uy, zeros, zeros],
        axis=-1,
    )
    return fwd, rows


def _tf_transform_keypoints(keypoints, fwd):
    tf = _tf()
    kp = tf.reshape(tf.convert_to_tensor(keypoints, tf.float32), [-1, N_KEYPOINTS, 2])
    out = tf.einsum("bij,bkj->bki", fwd[:, :, :2], kp) + fwd[:, None, :, 2]
    return tf.reshape(out, [-1, 2 * N_KEYPOINTS])


def _tf_warp(images, rows, fill_mode):
    tf = _tf()
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=rows,
        output_shape=tf.constant([IMAGE_SIZE, IMAGE_SIZE], tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="BILINEAR",
        fill_mode=_TF_FILL[fill_mode],
    )


def tf_affine(images, keypoints, angle_deg=0.0, scale=1.0, tx=0.0, ty=0.0, *, fill_mode=FILL_MODE):
    """TF version of :func:`affine` (same parameters and conventions), one
    ``ImageProjectiveTransformV3`` call for the batch. images (B, 96, 96, 1) or (B, 96, 96)."""
    tf = _tf()
    img, squeeze = _tf_images(images)
    n = tf.shape(img)[0]
    fwd, rows = _tf_forward_and_inverse(angle_deg, scale, tx, ty, n)
    out = _tf_warp(img, rows, fill_mode)
    kp = tf_mark_outside(_tf_transform_keypoints(keypoints, fwd))
    return (out[..., 0] if squeeze else out), kp


def tf_gaussian_blur(images, sigma, radius: int):
    """TF version of :func:`gaussian_blur`: images (B, 96, 96, 1), per-face sigma (B,) px.

    Each face gets its own kernel via one depthwise convolution with the batch as channels.
    """
    tf = _tf()
    img = tf.convert_to_tensor(images, tf.float32)
    sigma = tf.cast(tf.convert_to_tensor(sigma), tf.float32)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    safe = tf.maximum(sigma, 1e-3)[:, None]
    k = tf.exp(-0.5 * tf.square(x[None, :] / safe))
    k = tf.where(sigma[:, None] > 0, k, tf.cast(tf.equal(x, 0.0), tf.float32)[None, :])
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # (B, K)
    pad = tf.pad(img, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    chans = tf.transpose(pad, [3, 1, 2, 0])  # (1, H+2r, W+2r, B)
    kt = tf.transpose(k)  # (K, B)
    horizontal = tf.reshape(kt, [1, 2 * radius + 1, -1, 1])
    vertical = tf.reshape(kt, [2 * radius + 1, 1, -1, 1])
    out = tf.nn.depthwise_conv2d(chans, horizontal, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "VALID")
    return tf.transpose(out, [3, 1, 2, 0])


def tf_apply_params(images, keypoints, params, *, fill_mode: str = FILL_MODE):
    """TF version of :func:`apply_params`. ``params``: an :class:`AugmentParams` whose arrays may
    be NumPy arrays or tensors. images (B, 96, 96, 1) float32 [0, 1], keypoints (B, 30) px."""
    tf = _tf()
    img, squeeze = _tf_images(images)
    kp = tf.convert_to_tensor(keypoints, tf.float32)
    n = tf.shape(img)[0]
    touched = rows = None
    if params.flip is not None:
        flip = tf.cast(tf.convert_to_tensor(params.flip), tf.bool)
        kp = tf.where(flip[:, None], tf_flip_keypoints(kp), kp)
        touched = flip
    identity = tf.broadcast_to(tf.constant([1, 0, 0, 0, 1, 0, 0, 0], tf.float32), [n, 8])
    if params.geometric is not None:
        geo = tf.cast(tf.convert_to_tensor(params.geometric), tf.bool)
        fwd, rows = _tf_forward_and_inverse(params.angle_deg, params.scale, params.tx, params.ty, n)
        rows = tf.where(geo[:, None], rows, identity)
        kp = tf.where(geo[:, None], _tf_transform_keypoints(kp, fwd), kp)
        touched = geo if touched is None else touched | geo
    if params.flip is not None:  # fold the mirror into the same warp: input x = 95 - x'
        rows = identity if rows is None else rows
        sign = tf.where(flip, -1.0, 1.0)[:, None]
        shift = tf.where(flip, float(FLIP_X_CONSTANT), 0.0)
        rows = tf.concat([rows[:, :2] * sign, rows[:, 2:3] * sign + shift[:, None], rows[:, 3:]], 1)
    if touched is not None:
        # ONE resampling for flip, rotation, scale and shift; faces left alone get the identity
        # (or a pure mirror), which bilinear sampling at integer coordinates copies exactly.
        img = _tf_warp(img, rows, fill_mode)
        kp = tf_mark_outside(kp, touched)
    if params.brightness is not None:
        b = tf.cast(tf.convert_to_tensor(params.brightness), tf.float32)[:, None, None, None]
        c = tf.cast(tf.convert_to_tensor(params.contrast), tf.float32)[:, None, None, None]
        mean = tf.reduce_mean(img, axis=[1, 2, 3], keepdims=True)
        img = (img - mean) * c + mean + b
    if params.blur_radius > 0:  # blur only the faces drawn for it (if any: a conv needs one)
        all_sigma = tf.cast(tf.convert_to_tensor(params.blur_sigma), tf.float32)
        which = tf.where(all_sigma > 0)

        def blur_some(img=img):
            sigma = tf.gather_nd(all_sigma, which)
            blurred = tf_gaussian_blur(tf.gather_nd(img, which), sigma, params.blur_radius)
            return tf.tensor_scatter_nd_update(img, which, blurred)

        img = tf.cond(tf.shape(which)[0] > 0, blur_some, lambda img=img: img)
    if params.noise is not None:
        noise = tf.reshape(tf.cast(tf.convert_to_tensor(params.noise), tf.float32), tf.shape(img))
        std = tf.cast(tf.convert_to_tensor(params.noise_std), tf.float32)
        img = img + noise * std[:, None, None, None]
    img = tf.clip_by_value(img, 0.0, 1.0)
    return (img[..., 0] if squeeze else img), kp


def tf_sample_params(config: AugmentConfig, batch_size, seed) -> AugmentParams:
    """Draw one batch's parameters with stateless TF ops: the same ``seed`` (shape [2] ints)
    gives the same parameters. Arrays are tensors of shape (B,)."""
    tf = _tf()
    seeds = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num=4)
    n = batch_size
    coin = tf.random.stateless_uniform([5, n], seed=seeds[0])
    r = tf.random.stateless_uniform([7, n], seed=seeds[1], minval=-1.0, maxval=1.0)
    u = tf.random.stateless_uniform([n], seed=seeds[2])
    flip = coin[0] < config.flip_p
    geo = coin[1] < config.geometric_p
    photo = coin[2] < config.photometric_p
    noisy = coin[3] < config.noise_p
    blurred = coin[4] < config.blur_p
    lo, hi = (float(v) for v in np.log(config.scale))
    one, zero = tf.ones([n]), tf.zeros([n])
    blo, bhi = config.blur_sigma
    noise = None
    if config.uses_noise:  # drawn for the noisy faces only; zeros elsewhere
        which = tf.cast(tf.where(noisy), tf.int32)
        field = tf.random.stateless_normal(
            tf.stack([tf.shape(which)[0], IMAGE_SIZE, IMAGE_SIZE]), seed=seeds[3]
        )
        noise = tf.scatter_nd(which, field, tf.stack([n, IMAGE_SIZE, IMAGE_SIZE]))
    geometric = config.geometric_p > 0 or config.wide_p > 0
    photometric = config.photometric_p > 0
    angle = tf.where(geo, config.rotation_deg * r[0], zero)
    scale = tf.where(geo, tf.exp(lo + (hi - lo) * (r[1] + 1) / 2), one)
    tx = tf.where(geo, config.translate_px * r[2], zero)
    ty = tf.where(geo, config.translate_px * r[3], zero)
    if config.wide_p > 0:  # its own seed: with wide_p = 0 every other draw stays as it was
        # (a stream apart from the four above: the last of a six-way split of the batch seed)
        wide_seed = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num=6)[5]
        w = tf.random.stateless_uniform([5, n], seed=wide_seed, minval=-1.0, maxval=1.0)
        geo, angle, scale, tx, ty = _wide_tail(
            config, w, geo, angle, scale, tx, ty, tf.where, tf.exp
        )
    return AugmentParams(
        flip=flip if config.flip_p > 0 else None,
        geometric=geo if geometric else None,
        angle_deg=angle if geometric else None,
        scale=scale if geometric else None,
        tx=tx if geometric else None,
        ty=ty if geometric else None,
        brightness=tf.where(photo, config.brightness * r[4], zero) if photometric else None,
        contrast=tf.where(photo, 1 + config.contrast * r[5], one) if photometric else None,
        blur_sigma=tf.where(blurred, blo + (bhi - blo) * u, zero),
        noise_std=tf.where(noisy, config.noise_std * one, zero),
        noise=noise,
        blur_radius=config.blur_radius,
    )


def tf_augment(images, keypoints, config: AugmentConfig, seed):
    """Augment a batch with TF graph ops (for ``Dataset.map`` on batches).

    images: float32 (B, 96, 96, 1) in [0, 1]; keypoints: float32 (B, 30) px, NaN = missing;
    ``seed``: int tensor of shape [2] for the stateless random ops; the same seed gives the same
    batch. Same transforms, order and missing/out-of-frame rules as :func:`augment_batch`.
    Transforms the config switches off cost nothing (they are left out of the graph).
    """
    tf = _tf()
    images = tf.convert_to_tensor(images, tf.float32)
    keypoints = tf.convert_to_tensor(keypoints, tf.float32)
    if config == AugmentConfig.none():
        return images, keypoints
    params = tf_sample_params(config, tf.shape(images)[0], seed)
    return tf_apply_params(images, keypoints, params)


def augmented_dataset(
    images: np.ndarray,
    keypoints: np.ndarray,
    config: AugmentConfig | None,
    *,
    batch_size: int = 64,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = False,
    drop_remainder: bool = False,
):
    """The ``tf.data`` pipeline that chapter 4 measures and training uses: shuffle, batch, scale
    to [0, 1], augment, prefetch. Yields ((B, 96, 96, 1) float32 [0, 1], (B, 30) px) batches.

    images: uint8 0-255 or float [0, 1], (N, 96, 96) or (N, 96, 96, 1); keypoints (N, 30) px with
    NaN for missing. ``config=None`` (or :meth:`AugmentConfig.none`) leaves faces as they are
    (validation). ``repeat=True`` loops forever (pass ``steps_per_epoch`` to ``fit``), reshuffling
    every pass. Each batch gets its own stateless seed from a seeded stream, so two datasets built
    with the same seed give the same batches, epoch after epoch.

    tf.data's autotuner is off: each ``map`` runs as many calls at once as there are cores (at
    most 16) and ``prefetch`` grows its buffer while the consumer waits. With it on, deleting
    the iterator at the end of a long ``fit`` waited for the autotuner's next round, which comes
    up to a minute apart late in a run: time after the last epoch that no budget could see
    (58 s in one chapter 5 build).
    """
    tf = _tf()
    img = np.asarray(images)
    if img.ndim == 3:
        img = img[..., None]
    scale = 255.0 if img.dtype == np.uint8 else 1.0
    ds = tf.data.Dataset.from_tensor_slices((img, np.asarray(keypoints, np.float32)))
    if shuffle:
        ds = ds.shuffle(len(img), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(
        lambda x, y: (tf.cast(x, tf.float32) / scale, y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if config is not None and config != AugmentConfig.none():
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, s: tf_augment(batch[0], batch[1], config, s),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def pipeline_throughput(
    images: np.ndarray,
    keypoints: np.ndarray,
    config: AugmentConfig,
    *,
    batch_size: int = 64,
    passes: int = 2,
) -> float:
    """Images per second (wall clock) through :func:`augmented_dataset`, averaged over
    ``passes`` full passes after one warm-up pass (which traces the graph)."""
    import time

    ds = augmented_dataset(images, keypoints, config, batch_size=batch_size, seed=0)
    for _ in ds:
        pass
    start = time.perf_counter()
    for _ in range(passes):
        for _ in ds:
            pass
    return passes * len(images) / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# How strong? Measure the variation the data already has


@dataclass(frozen=True)
class Spread:
    """How much faces already vary in a data set (standard deviations over faces).

    tilt_deg: head tilt, the angle of the line from the right eye centre to the left eye centre
    (degrees, 0 = level). log_scale: log of the distance between eye centres (a relative
    scale: 0.1 means about 10%). position_px: eye-midpoint position in pixels (mean of the x and y
    spreads). brightness: mean grey level per image ([0, 1] units). contrast: grey-level standard
    deviation per image, relative to its mean. n_faces: faces with both eye centres.
    """

    tilt_deg: float
    log_scale: float
    position_px: float
    brightness: float
    contrast: float
    n_faces: int


def sharpness(images: np.ndarray) -> np.ndarray:
    """Per-image sharpness: mean absolute difference between horizontally neighbouring pixels,
    divided by the image's grey-level standard deviation (so contrast does not count).
    images: (N, 96, 96) uint8 or float; a blur lowers it."""
    img = np.asarray(images, np.float32).reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)
    return np.abs(np.diff(img, axis=2)).mean(axis=(1, 2)) / img.std(axis=(1, 2))


def measure_spread(images: np.ndarray, keypoints: np.ndarray) -> Spread:
    """Measure the spread of tilt, scale, position, brightness and contrast (see :class:`Spread`).

    images: uint8 0-255 or float [0, 1], (N, 96, 96); keypoints (N, 30) px with NaN.
    """
    kp = np.asarray(keypoints, np.float64)
    eyes = ~np.isnan(kp[:, :4]).any(axis=1)
    kp = kp[eyes]
    tilt = head_tilt_deg(kp)
    iod = eye_distance(kp)
    mid = (kp[:, 0:2] + kp[:, 2:4]) / 2
    img = np.asarray(images)
    scale = 255.0 if img.dtype == np.uint8 else 1.0
    flat = img.reshape(len(img), -1)
    mean = flat.mean(axis=1) / scale
    std = flat.std(axis=1) / scale
    return Spread(
        tilt_deg=float(np.std(tilt)),
        log_scale=float(np.std(np.log(iod))),
        position_px=float(np.std(mid, axis=0).mean()),
        brightness=float(np.std(mean)),
        contrast=float(np.std(std) / np.mean(std)),
        n_faces=int(eyes.sum()),
    )


def suggest_config(spread: Spread, base: AugmentConfig | None = None) -> AugmentConfig:
    """Ranges whose uniform draws have the data's own standard deviation: range = sqrt(3) * std.

    Probabilities, noise and blur are taken from ``base`` (default: :class:`AugmentConfig`).
    """
    base = base or AugmentConfig()
    ls = _SQRT3 * spread.log_scale
    return replace(
        base,
        rotation_deg=_SQRT3 * spread.tilt_deg,
        scale=(math.exp(-ls), math.exp(ls)),
        translate_px=_SQRT3 * spread.position_px,
        brightness=_SQRT3 * spread.brightness,
        contrast=min(_SQRT3 * spread.contrast, 0.95),
    )


def strength_table(spread: Spread, config: AugmentConfig):
    """A pandas table, one row per strength (rotation in degrees, log of the upper scale
    factor, shift in pixels, brightness, contrast): the data's standard deviation, the range
    :func:`suggest_config` derives from it (sqrt(3) * std), ``config``'s range, and the ratio."""
    import pandas as pd

    def strengths(c: AugmentConfig) -> list[float]:
        return [c.rotation_deg, math.log(c.scale[1]), c.translate_px, c.brightness, c.contrast]

    table = pd.DataFrame(
        {
            "data σ": [
                spread.tilt_deg,
                spread.log_scale,
                spread.position_px,
                spread.brightness,
                spread.contrast,
            ],
            "suggested √3σ": strengths(suggest_config(spread)),
            "config": strengths(config),
        },
        index=["rotation (deg)", "log scale", "shift (px)", "brightness", "contrast"],
    )
    table["config / suggested"] = table["config"] / table["suggested √3σ"]
    return table
