"""Synthetic faces in Kaggle's exact file format, for running the course without Kaggle's data.

A seeded generator draws simple faces (head, hair, eyes with iris and pupil, brows, nose, lips)
with varied position, scale, tilt, head turn, expression, lighting and noise, and writes them as
Kaggle ships its files: ``training.csv``, ``test.csv``, ``IdLookupTable.csv`` and
``SampleSubmission.csv``, plus a marker ``SYNTHETIC.md`` (which makes
:func:`fkp_helpers.data.data_source` say ``"synthetic"``) and ``solution.csv``, the true
``RowId,Location`` answers for the test requests (Kaggle keeps those secret).

Geometry. Each face is drawn in its own canonical frame: (u, v) in pixels at scale 1, origin at the
midpoint between the eye centres, u towards the subject's left (the image's right), v down. The
keypoints are points of that drawing (pupil centres, the ends of the almond-shaped eyes, the ends
of the brows' centre lines, the point between the nostrils, the ends and top and bottom of the
lips), so they are exact, not annotated. The frame is placed in the image by a similarity
transform: ``x = cx + s (cos r u - sin r v)``, ``y = cy + s (sin r u + cos r v)``.

Mirror symmetry. The distribution of faces is symmetric under the flip ``x -> 95 - x`` used
throughout the course: :func:`mirror` maps a face's parameters to those of its mirror image, whose
drawing is the flipped drawing (to rounding) and whose keypoints are the flipped keypoints with
left and right names swapped. Every parameter's distribution is symmetric, so a mirrored synthetic
face is as likely as the original.

Labels follow Kaggle's missing-value structure: about 30% of training rows (first in the file,
as in Kaggle's) carry all 15 keypoints, with an occasional gap; the rest carry only the 4 core
keypoints (eye centres, nose tip, bottom lip). The lookup table asks for all 30 features for the
first third of the test images and for the 8 core features for the rest.

Calibration: the mean keypoints are close to Kaggle's (:data:`KAGGLE_MEANS`, from the stand-in's
calibration table), within about 1.5 pixels.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from fkp_helpers import keypoints as _kp

VERSION = 1
"""Bump when the drawing or the files change: the default set lives in ``synthetic-v{VERSION}``."""

DEFAULT_N_TRAIN = 600
DEFAULT_N_TEST = 150
DEFAULT_SEED = 0
FULL_FRACTION = 0.3
"""Fraction of training rows labelled with all 15 keypoints (Kaggle: 2284 of 7049 rows, 32%)."""
ALL_FEATURES_FRACTION = 1 / 3
"""Fraction of test images for which the lookup asks all 30 features (Kaggle: 31%)."""

FILES = ("training.csv", "test.csv", "IdLookupTable.csv", "SampleSubmission.csv", "solution.csv")
MARKER = "SYNTHETIC.md"

KAGGLE_MEANS = _kp.KAGGLE_MEANS
"""Kaggle's mean (x, y) per keypoint in pixels (kept in :mod:`fkp_helpers.keypoints`)."""

# Kaggle's non-missing counts: out of the 2284 rows with more than the 4 core keypoints (non-core
# keypoints), and out of all 7049 rows (core keypoints). They set the rare gaps' frequencies.
_KAGGLE_FULL_ROWS = 2284
_KAGGLE_ROWS = 7049
_KAGGLE_PRESENT = {
    "left_eye_center": 7039,
    "right_eye_center": 7036,
    "left_eye_inner_corner": 2271,
    "left_eye_outer_corner": 2267,
    "right_eye_inner_corner": 2268,
    "right_eye_outer_corner": 2268,
    "left_eyebrow_inner_end": 2270,
    "left_eyebrow_outer_end": 2225,
    "right_eyebrow_inner_end": 2270,
    "right_eyebrow_outer_end": 2236,
    "nose_tip": 7049,
    "mouth_left_corner": 2269,
    "mouth_right_corner": 2270,
    "mouth_center_top_lip": 2275,
    "mouth_center_bottom_lip": 7016,
}

# Canonical geometry (pixels at scale 1, origin between the eyes), matched to Kaggle's means.
EYE_U = 18.0  # eye centres at u = +-18 (Kaggle's inter-ocular distance is about 36 px)
EYE_HALF_WIDTH = 7.2  # corners at 18 -+ 7.2
BROW_INNER_U, BROW_OUTER_U = 8.4, 31.8
BROW_INNER_V, BROW_OUTER_V = -8.4, -7.8
NOSE_V = 24.6
MOUTH_HALF_WIDTH = 15.2
MOUTH_CORNER_V = 38.3
TOP_LIP_V = 35.3
BOTTOM_LIP_V = 40.9
MARGIN = 1.0  # every keypoint lies in [MARGIN, 95 - MARGIN]


@dataclass(frozen=True)
class Faces:
    """Parameters of N synthetic faces, one float64 array (N,) per field.

    Positions are pixels; ``roll`` is radians (positive turns the face clockwise on screen);
    grey levels are in [0, 1]. Fields ending in ``_l``/``_r`` belong to the subject's left/right.
    """

    cx: np.ndarray  # eye midpoint x in the image
    cy: np.ndarray  # eye midpoint y
    scale: np.ndarray
    roll: np.ndarray
    yaw: np.ndarray  # head turn: moves nose and mouth sideways, narrows one eye
    eye_open_l: np.ndarray
    eye_open_r: np.ndarray
    gaze_u: np.ndarray  # pupils' offset from the eye shapes' centres
    gaze_v: np.ndarray
    iris_radius: np.ndarray
    iris_tone: np.ndarray
    brow_raise_l: np.ndarray
    brow_raise_r: np.ndarray
    brow_arch: np.ndarray
    brow_tone: np.ndarray  # brow grey level as a fraction of the skin's
    nose_v: np.ndarray
    smile: np.ndarray
    mouth_open: np.ndarray
    lip_tone: np.ndarray  # lip grey level as a fraction of the skin's
    head_a: np.ndarray  # head half-width
    head_b: np.ndarray  # head half-height
    head_v: np.ndarray  # head centre below the eyes
    skin: np.ndarray
    background: np.ndarray
    hair_tone: np.ndarray
    hairline: np.ndarray  # v of the hairline at the middle of the forehead
    light_x: np.ndarray  # horizontal brightness gradient across the image
    light_y: np.ndarray
    shade: np.ndarray  # darkening towards the head's outline
    contrast: np.ndarray
    brightness: np.ndarray
    blur: np.ndarray  # weight of a 3x3 box blur, 0-0.6
    noise: np.ndarray  # standard deviation of the pixel noise, grey levels / 255

    def __len__(self) -> int:
        return len(self.cx)

    def take(self, index) -> Faces:
        """The faces at ``index`` (an int array or a boolean mask)."""
        return Faces(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


_SWAPPED = (("eye_open_l", "eye_open_r"), ("brow_raise_l", "brow_raise_r"))
_NEGATED = ("roll", "yaw", "gaze_u", "light_x")


def mirror(faces: Faces) -> Faces:
    """The parameters of the mirrored faces (flip x -> 95 - x, left and right swapped)."""
    changes = {name: -getattr(faces, name) for name in _NEGATED}
    changes["cx"] = _kp.FLIP_X_CONSTANT - faces.cx
    for a, b in _SWAPPED:
        changes[a], changes[b] = getattr(faces, b), getattr(faces, a)
    return replace(faces, **changes)


def sample_faces(rng: np.random.Generator, n: int) -> Faces:
    """Draw ``n`` faces whose 15 keypoints all lie inside the frame (1 px margin).

    Every distribution is symmetric under :func:`mirror`. Deterministic for a given ``rng`` state.
    """
    kept: list[Faces] = []
    have = 0
    while have < n:
        batch = _sample_unchecked(rng, max(16, int((n - have) * 1.2)))
        kp = keypoints(batch)
        ok = ((kp >= MARGIN) & (kp <= _kp.FLIP_X_CONSTANT - MARGIN)).all(axis=1)
        kept.append(batch.take(np.flatnonzero(ok)))
        have += int(ok.sum())
    out = Faces(
        **{f.name: np.concatenate([getattr(b, f.name) for b in kept]) for f in fields(Faces)}
    )
    return out.take(np.arange(n))


def _sample_unchecked(rng: np.random.Generator, n: int) -> Faces:
    def normal(mean, sd, lo, hi):
        return np.clip(rng.normal(mean, sd, n), lo, hi)

    def uniform(lo, hi):
        return rng.uniform(lo, hi, n)

    open_base = normal(1.0, 0.15, 0.55, 1.4)
    raise_base = normal(0.0, 1.1, -2.5, 3.0)
    return Faces(
        cx=normal(47.5, 2.0, 41.0, 54.0),
        cy=normal(37.8, 2.6, 30.0, 46.0),
        scale=normal(1.0, 0.075, 0.8, 1.2),
        roll=normal(0.0, 0.07, -0.22, 0.22),
        yaw=normal(0.0, 0.45, -1.2, 1.2),
        eye_open_l=open_base * normal(1.0, 0.06, 0.85, 1.15),
        eye_open_r=open_base * normal(1.0, 0.06, 0.85, 1.15),
        gaze_u=normal(0.0, 0.7, -1.8, 1.8),
        gaze_v=normal(0.0, 0.35, -0.9, 0.9),
        iris_radius=uniform(2.7, 3.5),
        iris_tone=uniform(0.08, 0.45),
        brow_raise_l=raise_base + normal(0.0, 0.35, -1.0, 1.0),
        brow_raise_r=raise_base + normal(0.0, 0.35, -1.0, 1.0),
        brow_arch=uniform(0.5, 3.0),
        brow_tone=uniform(0.25, 0.65),
        nose_v=normal(NOSE_V, 1.6, NOSE_V - 4.5, NOSE_V + 4.5),
        smile=normal(0.0, 0.8, -1.5, 2.0),
        mouth_open=np.clip(np.abs(rng.normal(0.0, 1.6, n)) - 0.6, 0.0, 6.0),
        lip_tone=uniform(0.55, 0.85),
        head_a=uniform(40.0, 46.0),
        head_b=uniform(53.0, 61.0),
        head_v=uniform(9.0, 14.0),
        skin=uniform(0.35, 0.85),
        background=uniform(0.03, 0.97),
        hair_tone=uniform(0.04, 0.7),
        hairline=uniform(-33.0, -20.0),
        light_x=normal(0.0, 0.18, -0.45, 0.45),
        light_y=normal(0.05, 0.1, -0.25, 0.3),
        shade=uniform(0.08, 0.35),
        contrast=uniform(0.75, 1.15),
        brightness=normal(0.0, 0.05, -0.15, 0.15),
        blur=uniform(0.0, 0.6),
        noise=uniform(0.004, 0.03),
    )


# --------------------------------------------------------------------------------------------
# Geometry: canonical keypoints and their place in the image


def _eye_half_widths(f: Faces) -> tuple[np.ndarray, np.ndarray]:
    """Half-widths of the left and right eyes: a turned head narrows the eye it turns towards."""
    return EYE_HALF_WIDTH * (1 - 0.06 * f.yaw), EYE_HALF_WIDTH * (1 + 0.06 * f.yaw)


def _mouth(f: Faces):
    """Mouth centre u, half-width, corners' v, top lip v, bottom lip v."""
    mu = 4.5 * f.yaw
    mw = MOUTH_HALF_WIDTH * (1 + 0.05 * f.smile)
    corner_v = MOUTH_CORNER_V - 1.5 * f.smile
    top_v = TOP_LIP_V - 0.3 * f.mouth_open
    bottom_v = BOTTOM_LIP_V + 0.75 * f.mouth_open
    return mu, mw, corner_v, top_v, bottom_v


def _brow_ends(f: Faces, side: int) -> tuple[np.ndarray, np.ndarray]:
    """v of the inner and outer end of the left (+1) or right (-1) brow."""
    raise_ = f.brow_raise_l if side > 0 else f.brow_raise_r
    return BROW_INNER_V - raise_, BROW_OUTER_V - 0.6 * raise_


def canonical_keypoints(f: Faces) -> np.ndarray:
    """The 15 keypoints in each face's own frame: float64 (N, 15, 2) (u, v), Kaggle's order."""
    ew_l, ew_r = _eye_half_widths(f)
    bl_in, bl_out = _brow_ends(f, +1)
    br_in, br_out = _brow_ends(f, -1)
    mu, mw, corner_v, top_v, bottom_v = _mouth(f)
    zero = np.zeros(len(f))
    pts = {
        "left_eye_center": (EYE_U + f.gaze_u, f.gaze_v),
        "right_eye_center": (-EYE_U + f.gaze_u, f.gaze_v),
        "left_eye_inner_corner": (EYE_U - ew_l, zero),
        "left_eye_outer_corner": (EYE_U + ew_l, zero),
        "right_eye_inner_corner": (-(EYE_U - ew_r), zero),
        "right_eye_outer_corner": (-(EYE_U + ew_r), zero),
        "left_eyebrow_inner_end": (BROW_INNER_U + zero, bl_in),
        "left_eyebrow_outer_end": (BROW_OUTER_U + zero, bl_out),
        "right_eyebrow_inner_end": (-BROW_INNER_U + zero, br_in),
        "right_eyebrow_outer_end": (-BROW_OUTER_U + zero, br_out),
        "nose_tip": (6.0 * f.yaw, f.nose_v),
        "mouth_left_corner": (mu + mw, corner_v),
        "mouth_right_corner": (mu - mw, corner_v),
        "mouth_center_top_lip": (mu, top_v),
        "mouth_center_bottom_lip": (mu, bottom_v),
    }
    return np.stack(
        [np.stack(np.broadcast_arrays(*pts[k]), axis=-1) for k in _kp.KEYPOINT_NAMES], axis=1
    )


def keypoints(f: Faces) -> np.ndarray:
    """The 15 keypoints in the image: float64 (N, 30) pixels, Kaggle's column order (x, y)."""
    uv = canonical_keypoints(f)
    c, s = np.cos(f.roll)[:, None], np.sin(f.roll)[:, None]
    u, v = uv[..., 0], uv[..., 1]
    x = f.cx[:, None] + f.scale[:, None] * (c * u - s * v)
    y = f.cy[:, None] + f.scale[:, None] * (s * u + c * v)
    return np.stack([x, y], axis=-1).reshape(len(f), -1)


# --------------------------------------------------------------------------------------------
# Drawing: every shape is evaluated on all pixels of a batch of faces at once (no pixel loops)

_BATCH = 64


def _coverage(sd: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage 0-1 of a shape from its signed distance (face units, <0 inside)."""
    return np.clip(0.5 - sd * scale, 0.0, 1.0)


def _ellipse_sd(u, v, cu, cv, a, b):
    """Approximate signed distance to an ellipse (exact on the axes), in face units."""
    q = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    return (q - 1.0) * np.minimum(a, b)


def _blend(img, tone, alpha):
    img += alpha * (tone - img)


def render_float(f: Faces, noise: np.ndarray | None = None) -> np.ndarray:
    """Draw the faces: float32 (N, 96, 96) grey levels in [0, 1].

    ``noise``: standard-normal float (N, 96, 96), scaled by each face's ``noise`` level; None
    draws without noise.
    """
    out = np.empty((len(f), _kp.IMAGE_SIZE, _kp.IMAGE_SIZE), np.float32)
    for start in range(0, len(f), _BATCH):
        idx = np.arange(start, min(start + _BATCH, len(f)))
        nz = None if noise is None else noise[idx]
        out[idx] = _render_batch(f.take(idx), nz)
    return out


def render(f: Faces, noise: np.ndarray | None = None) -> np.ndarray:
    """Draw the faces as Kaggle's images: uint8 (N, 96, 96), grey levels 0-255."""
    img = render_float(f, noise)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


class _Window:
    """The same window of pixels in every face of a batch, placed around a point of the face.

    Shapes are drawn only there: a window spans ``anchor +- half`` in face units (for any tilt
    and scale of the batch), so it holds the whole shape, and costs a fraction of the frame.
    """

    def __init__(self, img, p, anchor_u, anchor_v, half_u: float, half_v: float):
        c, s, k = p["cos"], p["sin"], p["scale"]
        ax = p["cx"] + k * (c * anchor_u - s * anchor_v)
        ay = p["cy"] + k * (s * anchor_u + c * anchor_v)
        rx = k * (half_u * np.abs(c) + half_v * np.abs(s))
        ry = k * (half_u * np.abs(s) + half_v * np.abs(c))
        w = int(np.ceil(2 * rx.max())) + 4
        h = int(np.ceil(2 * ry.max())) + 4
        last = _kp.IMAGE_SIZE - 1
        x0 = np.floor(ax - rx).astype(np.int64) - 1
        y0 = np.floor(ay - ry).astype(np.int64) - 1
        self.ix = np.clip(x0 + np.arange(w), 0, last)  # (n, 1, w)
        self.iy = np.clip(y0 + np.arange(h)[:, None], 0, last)  # (n, h, 1)
        self.b = np.arange(len(img))[:, None, None]
        self.img = img[self.b, self.iy, self.ix]
        dx = self.ix.astype(np.float32) - p["cx"]
        dy = self.iy.astype(np.float32) - p["cy"]
        self.u = (c * dx + s * dy) / k
        self.v = (c * dy - s * dx) / k

    def put(self, img) -> None:
        img[self.b, self.iy, self.ix] = self.img


def _bump(r2):
    """A smooth bump: 1 at the centre, 0 from ``r2 >= 1`` on (compact, unlike a Gaussian)."""
    return np.maximum(1.0 - r2, 0.0) ** 2


def _render_batch(f: Faces, noise: np.ndarray | None) -> np.ndarray:
    n = len(f)
    size = _kp.IMAGE_SIZE
    p = {fl.name: getattr(f, fl.name).astype(np.float32)[:, None, None] for fl in fields(f)}
    p["cos"], p["sin"] = np.cos(p["roll"]), np.sin(p["roll"])
    c, s, k = p["cos"], p["sin"], p["scale"]
    coord = np.arange(size, dtype=np.float32)
    dx = coord[None, None, :] - p["cx"]
    dy = coord[None, :, None] - p["cy"]
    u = (c * dx + s * dy) / k  # (n, 96, 96) face coordinates of every pixel
    v = (c * dy - s * dx) / k
    skin, yaw = p["skin"], p["yaw"]

    # Background, neck, head (shaded towards its outline), hair.
    img = np.empty((n, size, size), np.float32)
    img[...] = p["background"]
    neck = np.maximum(np.abs(u - 2.0 * yaw) - 17.0, 30.0 - v)
    _blend(img, 0.78 * skin, _coverage(neck, k))
    hu, hv, ha, hb = 2.5 * yaw, p["head_v"], p["head_a"], p["head_b"]
    q2 = ((u - hu) / ha) ** 2 + ((v - hv) / hb) ** 2
    head = (np.sqrt(q2) - 1.0) * ha
    skin_shaded = skin * (1.0 - p["shade"] * np.minimum(q2, 1.0) ** 2)
    _blend(img, skin_shaded, _coverage(head, k))
    hair_outline = _ellipse_sd(u, v, hu, hv - 2.0, ha + 3.0, hb + 4.0)
    hairline = p["hairline"] + 14.0 * ((u - hu) / ha) ** 2
    hair = np.maximum(hair_outline, v - hairline)
    _blend(img, p["hair_tone"], _coverage(hair, k))

    # Brows: thick arcs from the inner to the outer end, thinning outwards.
    length = BROW_OUTER_U - BROW_INNER_U
    for side, raise_ in ((1, p["brow_raise_l"]), (-1, p["brow_raise_r"])):
        win = _Window(img, p, side * (BROW_INNER_U + BROW_OUTER_U) / 2, -10.0, 13.0, 8.0)
        v_in, v_out = BROW_INNER_V - raise_, BROW_OUTER_V - 0.6 * raise_
        t = (side * win.u - BROW_INNER_U) / length
        tc = np.clip(t, 0.0, 1.0)
        centre = v_in + (v_out - v_in) * tc - p["brow_arch"] * 4.0 * tc * (1.0 - tc)
        brow = np.maximum(np.abs(win.v - centre) - (1.4 - 0.7 * tc), np.abs(t - tc) * length)
        _blend(win.img, p["brow_tone"] * skin, 0.9 * _coverage(brow, k))
        win.put(img)

    # Eyes: almond of sclera between two parabolas, iris, pupil, catch-light, upper lid line.
    ew_l, ew_r = _eye_half_widths(f)
    catch_u = np.clip(3.0 * p["light_x"], -1.0, 1.0) * 0.9
    for side, ew, opening in ((1, ew_l, p["eye_open_l"]), (-1, ew_r, p["eye_open_r"])):
        win = _Window(img, p, side * EYE_U, -1.2, 10.0, 6.0)
        eu, ev = win.u, win.v
        ew = ew.astype(np.float32)[:, None, None]
        du = eu - side * EYE_U
        w = 1.0 - (du / ew) ** 2
        lid_up, lid_lo = -3.3 * opening * w, 2.2 * opening * w
        outside_x = np.abs(du) - ew
        inside = _coverage(np.maximum(np.maximum(lid_up - ev, ev - lid_lo), outside_x), k)
        _blend(win.img, np.minimum(skin + 0.3, 0.97), inside)
        iu, iv = side * EYE_U + p["gaze_u"], p["gaze_v"]
        r = np.sqrt((eu - iu) ** 2 + (ev - iv) ** 2)
        _blend(win.img, p["iris_tone"], inside * _coverage(r - p["iris_radius"], k))
        _blend(win.img, 0.02, inside * _coverage(r - 1.3, k))
        glint = np.sqrt((eu - iu - catch_u) ** 2 + (ev - iv + 0.9) ** 2)
        _blend(win.img, 0.95, 0.8 * inside * _coverage(glint - 0.55, k))
        lid_line = np.maximum(np.abs(ev - lid_up) - 0.55, outside_x)
        _blend(win.img, 0.35 * skin, _coverage(lid_line, k))
        win.put(img)

    # Nose: a highlight on the tip, a shadow under it, two nostrils beside the tip point, and
    # the shadowed flank of the bridge.
    nu, nv = 6.0 * yaw, p["nose_v"]
    win = _Window(img, p, nu / 2, (nv + 4.8) / 2, 10.8, 16.0)
    wu, wv = win.u, win.v
    tip = _bump(((wu - nu) / 5.0) ** 2 + ((wv - nv + 2.2) / 4.0) ** 2)
    _blend(win.img, np.minimum(skin * 1.2 + 0.05, 1.0), 0.55 * tip)
    under = _bump(((wu - nu) / 7.0) ** 2 + ((wv - nv - 1.6) / 1.8) ** 2)
    _blend(win.img, 0.6 * skin, 0.6 * under)
    for side in (1, -1):
        nostril = _ellipse_sd(wu, wv, nu + side * 3.9, nv - 0.4, 1.9, 1.1)
        _blend(win.img, 0.3 * skin, 0.9 * _coverage(nostril, k))
    flank_side = np.where(p["light_x"] >= 0, -1.0, 1.0).astype(np.float32)
    bridge_t = np.clip((wv - 2.0) / (nv - 4.0), 0.0, 1.0)
    flank = np.abs(wu - (nu * bridge_t + flank_side * (2.5 + 1.5 * bridge_t)))
    bridge = np.maximum(flank - 0.8, np.maximum(2.0 - wv, wv - (nv - 3.0)))
    _blend(win.img, 0.8 * skin, 0.35 * _coverage(bridge, k))
    win.put(img)

    # Mouth: lips between two parabolas through the corners, a dark opening or a line between.
    mu, mw, corner_v, top_v, bottom_v = (a.astype(np.float32)[:, None, None] for a in _mouth(f))
    win = _Window(img, p, mu, 39.5, 17.5, 7.0)
    du = win.u - mu
    mv = win.v
    w = np.maximum(1.0 - (du / mw) ** 2, 0.0)
    outside_x = np.abs(du) - mw
    upper = corner_v + (top_v - corner_v) * w
    lower = corner_v + (bottom_v - corner_v) * w
    lips = np.maximum(np.maximum(upper - mv, mv - lower), outside_x)
    _blend(win.img, p["lip_tone"] * skin, _coverage(lips, k))
    gap_top = corner_v + (top_v + 2.6 - corner_v) * w
    gap_bottom = corner_v + (bottom_v - 3.4 - corner_v) * w
    opening = np.maximum(np.maximum(gap_top - mv, mv - gap_bottom), outside_x)
    _blend(win.img, 0.06, _coverage(opening, k))
    line = np.maximum(np.abs(mv - 0.5 * (gap_top + gap_bottom)) - 0.45, outside_x)
    _blend(win.img, 0.3 * skin, _coverage(line, k))
    win.put(img)

    # Lighting and camera: gradient, contrast, a little blur, noise.
    gain_x = 1.0 + p["light_x"] * (coord[None, None, :] - 47.5) / 48.0
    gain_y = 1.0 + p["light_y"] * (coord[None, :, None] - 47.5) / 48.0
    img *= gain_x * gain_y * p["contrast"]
    img += 0.5 - 0.5 * p["contrast"] + p["brightness"]
    padded = np.pad(img, ((0, 0), (1, 1), (0, 0)), mode="edge")
    rows = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3.0
    padded = np.pad(rows, ((0, 0), (0, 0), (1, 1)), mode="edge")
    box = (padded[:, :, :-2] + padded[:, :, 1:-1] + padded[:, :, 2:]) / 3.0
    img += p["blur"] * (box - img)
    if noise is not None:
        img += p["noise"] * noise.astype(np.float32)
    return np.clip(img, 0.0, 1.0, out=img)


def make_faces(
    n: int, seed: int = DEFAULT_SEED, *, noise: bool = True
) -> tuple[np.ndarray, np.ndarray, Faces]:
    """``n`` synthetic faces in memory: images uint8 (N, 96, 96), keypoints float32 (N, 30) px.

    Also returns their parameters. All 15 keypoints are given (no missing values).
    """
    rng = np.random.default_rng([seed, 0])
    f = sample_faces(rng, n)
    nz = (
        np.random.default_rng([seed, 1]).standard_normal((n, 96, 96), np.float32) if noise else None
    )
    return render(f, nz), keypoints(f).astype(np.float32), f


# --------------------------------------------------------------------------------------------
# Kaggle's files

_TOKENS = np.zeros((256, 4), np.uint8)  # "12 " as bytes, zero-padded to 4
for _v in range(256):
    _t = f"{_v} ".encode()
    _TOKENS[_v, : len(_t)] = np.frombuffer(_t, np.uint8)
_TOKENS32 = _TOKENS.view(np.uint32).ravel()


def image_fields(images: np.ndarray) -> list[bytes]:
    """Images (uint8 (N, 96, 96)) as Kaggle's ``Image`` fields: 9216 integers, single spaces."""
    flat = np.asarray(images, np.uint8).reshape(len(images), -1)
    text = _TOKENS32.take(flat).view(np.uint8)  # (N, 4 * 9216) with zero padding
    out = []
    for row in text:
        out.append(row[row != 0].tobytes()[:-1])
    return out


def image_field(image: np.ndarray) -> bytes:
    """One image (uint8 96x96) as Kaggle's ``Image`` field: 9216 integers separated by spaces."""
    return image_fields(np.asarray(image)[None])[0]


def _keypoint_text(values: np.ndarray) -> list[bytes]:
    return [b"" if np.isnan(x) else f"{x:.10f}".rstrip("0").rstrip(".").encode() for x in values]


def _missing_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    """Which keypoints are missing, bool (N, 15): Kaggle's structure, full rows first."""
    n_full = round(FULL_FRACTION * n)
    missing = np.zeros((n, _kp.N_KEYPOINTS), bool)
    core = np.zeros(_kp.N_KEYPOINTS, bool)
    core[list(_kp.CORE_INDICES)] = True
    missing[n_full:, ~core] = True
    for k, name in enumerate(_kp.KEYPOINT_NAMES):
        if core[k]:
            p = 1 - _KAGGLE_PRESENT[name] / _KAGGLE_ROWS
            missing[n_full:, k] |= rng.random(n - n_full) < p * _KAGGLE_ROWS / (
                _KAGGLE_ROWS - _KAGGLE_FULL_ROWS
            )
        else:
            p = 1 - _KAGGLE_PRESENT[name] / _KAGGLE_FULL_ROWS
            missing[:n_full, k] = rng.random(n_full) < p
    return missing


def _write(path: Path, lines: list[bytes], newline: bytes = b"\n") -> None:
    path.write_bytes(newline.join(lines) + newline)


def generate(
    out_dir: str | os.PathLike,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Write a synthetic set in Kaggle's format into ``out_dir`` (created if needed).

    Files: ``training.csv`` (30 keypoint columns + ``Image``; ``n_train`` rows), ``test.csv``
    (``ImageId``, ``Image``; ``n_test`` rows), ``IdLookupTable.csv``, ``SampleSubmission.csv``,
    ``solution.csv`` (true answers for the lookup's rows) and the marker ``SYNTHETIC.md``.
    The same arguments give byte-identical files.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError("n_train and n_test must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = n_train + n_test
    rng = np.random.default_rng([seed, 0])
    faces = sample_faces(rng, n)
    noise = np.random.default_rng([seed, 1]).standard_normal((n, 96, 96), np.float32)
    images = render(faces, noise)
    kp = keypoints(faces)
    missing = _missing_mask(np.random.default_rng([seed, 2]), n_train)

    header = ",".join((*_kp.KEYPOINT_COLUMNS, "Image")).encode()
    labels = kp[:n_train].copy()
    labels[np.repeat(missing, 2, axis=1)] = np.nan
    rows = [header]
    for i, field in enumerate(image_fields(images[:n_train])):
        rows.append(b",".join([*_keypoint_text(labels[i]), field]))
    _write(out / "training.csv", rows)

    test_rows = [b"ImageId,Image"]
    test_rows += [b"%d," % (i + 1) + fld for i, fld in enumerate(image_fields(images[n_train:]))]
    _write(out / "test.csv", test_rows)

    n_all = round(ALL_FEATURES_FRACTION * n_test)
    core_cols = [c for c in _kp.KEYPOINT_COLUMNS if c.rsplit("_", 1)[0] in _kp.CORE_KEYPOINTS]
    lookup, sample, solution = [b"RowId,ImageId,FeatureName,Location"], [], []
    row_id = 0
    for i in range(n_test):
        for col in _kp.KEYPOINT_COLUMNS if i < n_all else core_cols:
            row_id += 1
            lookup.append(b"%d,%d,%s" % (row_id, i + 1, col.encode()))
            sample.append(b"%d,0" % row_id)
            value = kp[n_train + i, _kp.KEYPOINT_COLUMNS.index(col)]
            solution.append(b"%d,%s" % (row_id, _keypoint_text(np.array([value]))[0]))
    _write(out / "IdLookupTable.csv", lookup, b"\r\n")  # Kaggle's file has Windows line ends
    _write(out / "SampleSubmission.csv", [b"RowId,Location", *sample])
    _write(out / "solution.csv", [b"RowId,Location", *solution])
    n_full = round(FULL_FRACTION * n_train)
    (out / MARKER).write_text(
        f"""# Synthetic faces (not Kaggle data)

Generated by `fkp_helpers.synthetic` version {VERSION} with seed {seed}: {n_train} training
rows and {n_test} test images, drawn (head, hair, eyes, brows, nose, lips) with exact keypoints,
in Kaggle's file format. Scores on these faces say nothing about Kaggle's data.

* `training.csv`: the first {n_full} rows carry all 15 keypoints (a few gaps, as in Kaggle's
  file); the others only the 4 core keypoints (eye centres, nose tip, bottom lip).
* `test.csv`, `IdLookupTable.csv` (all 30 features for the first {n_all} images, the 8 core
  features for the rest), `SampleSubmission.csv`: as Kaggle ships them.
* `solution.csv`: the true `RowId,Location` for every lookup row (Kaggle keeps these secret).

Regenerate with `python -c "from fkp_helpers import synthetic; synthetic.generate('DIR')"`.
"""
    )
    return out


def is_complete(d: str | os.PathLike) -> bool:
    """True if ``d`` holds a whole synthetic set (all files and the marker)."""
    d = Path(d)
    return all((d / name).is_file() for name in (*FILES, MARKER))


def ensure(
    d: str | os.PathLike,
    *,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Make sure ``d`` holds a synthetic set; generate it if not.

    The set is written into a temporary directory beside ``d`` and renamed into place, so
    processes racing to create it, or a run killed half-way, never leave a partial set at ``d``.
    """
    d = Path(d)
    if is_complete(d):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(d)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-", dir=d.parent))
    try:
        generate(tmp, n_train=n_train, n_test=n_test, seed=seed)
        try:
            os.rename(tmp, d)  # atomic; replaces an empty d, fails on a non-empty one
        except OSError:
            if is_complete(d):  # another process finished first: keep its set
                return d
            broken = d.with_name(f".{d.name}.broken-{os.getpid()}-{time.time_ns()}")
            os.rename(d, broken)
            os.rename(tmp, d)
            shutil.rmtree(broken, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def _remove_stale_temporaries(d: Path, age_s: float = 3600.0) -> None:
    """Remove temporary directories of killed runs (older than ``age_s``) beside ``d``."""
    now = time.time()
    for p in d.parent.glob(f".{d.name}.*-*"):
        try:
            if now - p.stat().st_mtime > age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
