"""Keypoints on your own photos (chapter 7): find faces, crop them the way Kaggle's faces were
cropped, predict, and map the points back onto the photo.

Photos are uint8 RGB arrays ``(H, W, 3)``, 0-255 (:func:`as_rgb` converts grey, RGBA, 16-bit and
float images). Coordinates in a photo are its own pixels, with the same conventions as the 96x96
frame: pixel centres at integers, x to the right, y down, "left" the subject's left.

The pipeline, one function per step:

1. :func:`detect_faces`: OpenCV's Haar cascade (Viola and Jones), keeping faces of at least a
   tenth of the photo's shorter side. Boxes are ``(x, y, width, height)`` in photo pixels, the
   box covering pixels ``x .. x + width - 1``.
2. :func:`crop_square`: the square that the 96x96 frame of a Kaggle face occupies relative to
   the detector's box. :data:`FRAME_IN_BOX` holds that placement, measured by running the same
   detector on training faces (:func:`haar_placement`); on the stand-in the frame is the box.
3. :func:`crop_face`: that square, grey (ITU-R BT.601 luma), resampled to 96x96 uint8.
4. :func:`predict_crops`: the model's keypoints in the 96x96 frame (pixels).
5. :func:`Crop.to_photo`: back to photo pixels.

:func:`predict_faces` runs all five; :func:`predict_cli` is ``fkp predict``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fkp_helpers import data as fdata
from fkp_helpers.keypoints import (  # noqa: F401  (the affine maps live there)
    KAGGLE_MEANS,
    apply_affine,
    eye_centres,
    eye_distance,
    flip_keypoints,
    invert_affine,
)

CASCADE = "haarcascade_frontalface_default.xml"
"""OpenCV's frontal-face Haar cascade (shipped in ``cv2.data.haarcascades``)."""

SCALE_FACTOR = 1.1
"""Step between the detector's window sizes (OpenCV's default)."""

MIN_NEIGHBORS = 5
"""Overlapping detections a face needs to be kept (OpenCV's tutorials use 5)."""

CONFIRM_CASCADE = "haarcascade_frontalface_alt2.xml"
"""A second, differently trained cascade: a face is kept only when this one finds it too (boxes
overlapping by at least :data:`CONFIRM_IOU`). False faces rarely fool both."""

CONFIRM_IOU = 0.5

CONFIRM_MIN_NEIGHBORS = 3
"""``minNeighbors`` of the confirming cascade: lower than :data:`MIN_NEIGHBORS`, since it only
has to agree with a face the first cascade found."""

MIN_FACE_FRACTION = 0.1
"""Faces smaller than this fraction of the photo's shorter side are ignored: on group photos the
cascade also fires on clothes, hands and drum kits, and those false faces are small."""

MIN_FACE_PX = 24
"""The cascade's window: no face smaller than 24 x 24 pixels can be found."""

DETECT_MAX_SIDE = 1280
"""Photos whose longer side exceeds this are shrunk for detection only (speed)."""

FRAME_IN_BOX: tuple[float, float, float] = (-0.0087, 0.0111, 0.9963)
"""Where the 96x96 frame of a Kaggle face lies relative to the Haar box around it:
``(left, top, size)``, the frame's left and top edges measured from the box's left and top edges,
and its side, all in box widths. Medians over the 3410 stand-in training faces (of 3553) in which
the cascade found exactly one face, each face enlarged by a random factor between 2 and 4 and
padded by half its size (:func:`haar_placement` with seed 0; 120 faces gave no detection, 23
more than one). So a Kaggle-placed face is, within about 1%, the detector's box. Per face the
box's size varies (interquartile range 0.92-1.08 of the frame), which the model's zoom
augmentation covers; :func:`predict_faces` with ``refine`` removes most of it."""

EYES_96: dict[str, tuple[float, float]] = {
    k: KAGGLE_MEANS[k] for k in ("left_eye_center", "right_eye_center")
}
"""Kaggle's mean eye centres (from :data:`fkp_helpers.keypoints.KAGGLE_MEANS`) in the 96x96 frame (pixels): where :func:`align_face` puts eyes."""

MARKS_FILE = Path(__file__).with_name("assets") / "portrait_marks.json"
"""Hand marks on the sample portraits (JSON, photo pixels): ``{"portraits": {name: {"note": ...,
"keypoints": {keypoint: [x, y]}}}}``, read by :func:`load_marks`. The file's ``about`` says how
they were marked and how certain they are."""


def load_marks(path: str | os.PathLike = MARKS_FILE) -> dict[str, dict[str, tuple[float, float]]]:
    """Hand-marked keypoints per portrait, ``{portrait: {keypoint: (x, y)}}`` in photo pixels,
    from a JSON file laid out like :data:`MARKS_FILE`. A portrait may leave out keypoints it
    cannot show (hidden, out of the photo). Raises ValueError naming the file, the portrait and
    the keypoint for an unknown keypoint name or a mark that is not two finite numbers."""
    path = Path(path)
    try:
        portraits = json.loads(path.read_text(encoding="utf-8"))["portraits"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a marks file with a 'portraits' object ({e})") from e
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, entry in portraits.items():
        marks = {}
        for key, xy in dict(entry.get("keypoints", {})).items():
            where = f"{path}: portrait {name!r}, keypoint {key!r}"
            if key not in fdata.KEYPOINT_NAMES:
                raise ValueError(f"{where}: not one of Kaggle's 15 keypoint names")
            ok = isinstance(xy, list) and len(xy) == 2
            ok = ok and all(
                isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
                for v in xy
            )
            if not ok:
                raise ValueError(f"{where}: expected [x, y] in pixels, got {xy!r}")
            marks[key] = (float(xy[0]), float(xy[1]))
        if not marks:
            raise ValueError(f"{path}: portrait {name!r} has no marked keypoints")
        out[name] = marks
    return out


PORTRAIT_MARKS: dict[str, tuple[float, float]] = load_marks()["astronaut"]
"""The hand marks of :func:`sample_portrait` ``("astronaut")``, all 15 keypoints (photo pixels;
from :data:`MARKS_FILE`)."""

SAMPLE_PORTRAIT_SOURCES: dict[str, str] = {
    "astronaut": "Eileen Collins, NASA astronaut, official portrait (NASA photo, public domain), "
    "as shipped by scikit-image: skimage.data.astronaut(), 512 x 512 RGB.",
    "hopper": "Rear Admiral Grace Hopper (U.S. Navy photo, public domain), as shipped by "
    "Matplotlib: matplotlib.cbook.get_sample_data('grace_hopper.jpg'), 512 x 600 RGB.",
}
"""Where the portraits of :func:`sample_portrait` come from: both ship inside installed packages
(no download) and are in the public domain."""


def keypoints_from_marks(marks: dict[str, Sequence[float]]) -> np.ndarray:
    """A float ``(30,)`` keypoint row (Kaggle's order) from ``{name: (x, y)}``; NaN elsewhere."""
    k = np.full(2 * fdata.N_KEYPOINTS, np.nan)
    for name, (x, y) in marks.items():
        i = fdata.KEYPOINT_NAMES.index(name)
        k[2 * i : 2 * i + 2] = x, y
    return k


def mark_errors(keypoints: np.ndarray, marks: dict[str, Sequence[float]]) -> dict[str, float]:
    """Distance in pixels from each hand mark ``{name: (x, y)}`` to the same keypoint of
    ``keypoints`` ``(30,)`` (same pixel frame)."""
    pts = np.asarray(keypoints, np.float64).reshape(fdata.N_KEYPOINTS, 2)
    return {
        name: float(np.hypot(*(pts[fdata.KEYPOINT_NAMES.index(name)] - np.asarray(xy))))
        for name, xy in marks.items()
    }


# ---------------------------------------------------------------------------------------------
# Photos in


def sample_portrait(which: str = "astronaut") -> np.ndarray:
    """A real portrait that ships inside an installed package (no download), uint8 RGB.

    ``"astronaut"``: NASA's portrait of Eileen Collins from scikit-image, ``(512, 512, 3)``;
    ``"hopper"``: the U.S. Navy's portrait of Grace Hopper from Matplotlib, ``(600, 512, 3)``.
    Both are public domain (:data:`SAMPLE_PORTRAIT_SOURCES`).
    """
    if which == "astronaut":
        try:
            from skimage import data as skdata
        except ImportError as e:  # pragma: no cover - scikit-image is in requirements.txt
            raise ImportError("the astronaut portrait ships with scikit-image") from e
        return np.ascontiguousarray(skdata.astronaut())
    if which == "hopper":
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    raise ValueError(
        f"unknown portrait {which!r}: expected one of {', '.join(SAMPLE_PORTRAIT_SOURCES)}"
    )


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert an image array to uint8 RGB ``(H, W, 3)``.

    Accepts grey ``(H, W)`` or ``(H, W, 1)``, RGB, and RGBA (composited over white); uint8,
    uint16 (16-bit: divided by 257), other integers (0-255 kept, larger ranges treated as
    16-bit), bool, and floats in [0, 1] (floats above 1 are taken as 0-255). Raises ValueError
    for anything else, naming ``name``.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(
            f"{name}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}"
        )
    if a.size == 0:
        raise ValueError(f"{name}: the image is empty ({a.shape})")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.round(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = np.round(a / 257.0) if a.max() > 255 else a
        a = np.clip(a, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: the image holds NaN or infinite values")
        scale = 255.0 if a.max() <= 1.0 else 1.0
        a = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ValueError(f"{name}: unsupported pixel type {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        rgb = a[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)
        return np.round(rgb).astype(np.uint8)
    return np.ascontiguousarray(a)


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """Read a photo file (JPEG, PNG, TIFF, BMP, WebP...) as uint8 RGB ``(H, W, 3)``.

    The EXIF orientation of phone photos is applied; grey, palette, RGBA (over white), CMYK and
    16-bit images are converted. Raises FileNotFoundError for a missing file and ValueError for
    a file that is not an image Pillow can read.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise FileNotFoundError(f"{p} is a directory, not a photo")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
    except UnidentifiedImageError as e:
        raise ValueError(
            f"{p.name}: not an image file that can be read (expected JPEG, PNG, TIFF, BMP, WebP...)"
        ) from e
    except (OSError, SyntaxError) as e:  # truncated or corrupt image data
        raise ValueError(f"{p.name}: the image data is damaged or truncated ({e})") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"{p.name}: the image is too large to read safely ({e})") from e
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F":
            return as_rgb(a.astype(np.float32), p.name)
        a = a.astype(np.int64)
        if mode.startswith("I;16") or a.max() > 255:
            a = np.round(a / 257.0)
        return as_rgb(np.clip(a, 0, 255).astype(np.uint8), p.name)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        return as_rgb(np.asarray(im.convert("RGBA")), p.name)
    return as_rgb(np.asarray(im.convert("RGB")), p.name)


def to_gray(photo: np.ndarray) -> np.ndarray:
    """uint8 grey ``(H, W)`` of an RGB photo with ITU-R BT.601 luma weights (as the stand-in)."""
    import cv2

    rgb = as_rgb(photo)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


# ---------------------------------------------------------------------------------------------
# Detection


_cascades: dict = {}


def _get_cascade(name: str = CASCADE):
    if name not in _cascades:
        import cv2

        path = os.path.join(cv2.data.haarcascades, name)
        c = cv2.CascadeClassifier(path)
        if c.empty():  # pragma: no cover - a broken OpenCV install
            raise FileNotFoundError(f"cannot load OpenCV's face cascade {path}")
        _cascades[name] = c
    return _cascades[name]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``(x, y, w, h)``: ``(len(a), len(b))``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def check_size(photo: np.ndarray, name: str = "photo") -> None:
    """Raise ValueError when a photo is too small to hold a face the detector can find."""
    h, w = np.asarray(photo).shape[:2]
    if min(h, w) < MIN_FACE_PX:
        raise ValueError(
            f"{name} is {w} x {h} pixels: too small to hold a face the detector can find "
            f"(faces must be at least {MIN_FACE_PX} x {MIN_FACE_PX} pixels)"
        )


def detect_faces(
    photo: np.ndarray,
    min_face_fraction: float = MIN_FACE_FRACTION,
    scale_factor: float = SCALE_FACTOR,
    min_neighbors: int = MIN_NEIGHBORS,
    pad_fraction: float = 0.25,
    confirm: bool = True,
) -> np.ndarray:
    """Faces in a photo, int ``(F, 4)`` boxes ``(x, y, width, height)`` in photo pixels, sorted
    left to right; ``(0, 4)`` when there is none.

    photo: RGB or grey array (see :func:`as_rgb`). The photo is padded by ``pad_fraction`` of its
    shorter side (replicated edges) so that a face filling a tight crop is still found. Faces
    narrower than ``min_face_fraction`` of the shorter side are dropped. With ``confirm``, a
    face must also be found by :data:`CONFIRM_CASCADE`; the boxes are always the main cascade's,
    whose placement :data:`FRAME_IN_BOX` was measured.
    """
    import cv2

    check_size(photo)
    gray = to_gray(photo)
    h, w = gray.shape
    shrink = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = gray
    if shrink < 1.0:
        small = cv2.resize(
            gray,
            (max(1, round(w * shrink)), max(1, round(h * shrink))),
            interpolation=cv2.INTER_AREA,
        )
    sh, sw = small.shape
    pad = int(round(pad_fraction * min(sh, sw)))
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    min_px = max(MIN_FACE_PX, int(np.ceil(min_face_fraction * min(sh, sw))))
    found = _get_cascade().detectMultiScale(
        padded, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_px, min_px)
    )
    boxes = np.asarray(found, np.float64).reshape(-1, 4)
    if len(boxes) and confirm:
        second = _get_cascade(CONFIRM_CASCADE).detectMultiScale(
            padded,
            scaleFactor=scale_factor,
            minNeighbors=CONFIRM_MIN_NEIGHBORS,
            minSize=(min_px, min_px),
        )
        if len(second) == 0:
            boxes = boxes[:0]
        else:
            boxes = boxes[box_iou(boxes, second).max(axis=1) >= CONFIRM_IOU]
    if len(boxes) == 0:
        return np.zeros((0, 4), np.int64)
    boxes[:, :2] -= pad
    # A box over small-image pixels x .. x+w-1 covers edges x-0.5 .. x+w-0.5; scale the edges.
    x0 = (boxes[:, 0] - 0.5 + 0.5) / shrink - 0.5
    y0 = (boxes[:, 1] - 0.5 + 0.5) / shrink - 0.5
    size = boxes[:, 2] / shrink
    out = np.stack([np.round(x0 + 0.5), np.round(y0 + 0.5), np.round(size), np.round(size)], 1)
    # Faces found mostly in the padding are not in the photo.
    cx, cy = out[:, 0] + out[:, 2] / 2, out[:, 1] + out[:, 3] / 2
    keep = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    out = out[keep].astype(np.int64)
    return out[np.argsort(out[:, 0], kind="stable")]


# ---------------------------------------------------------------------------------------------
# Crops


@dataclass(frozen=True)
class Crop:
    """A square of a photo that becomes a 96x96 face: ``left`` and ``top`` are the square's
    outer edges in photo pixel coordinates (pixel centres at integers, so the first pixel's
    edge is at -0.5), ``size`` its side in photo pixels."""

    left: float
    top: float
    size: float

    @property
    def scale(self) -> float:
        """Photo pixels per 96x96-frame pixel."""
        return self.size / fdata.IMAGE_SIZE

    @property
    def matrix(self) -> np.ndarray:
        """The 2x3 affine map from photo pixels to the 96x96 frame (for :func:`warp_face`)."""
        s = self.scale
        return np.array([[1 / s, 0, -self.left / s - 0.5], [0, 1 / s, -self.top / s - 0.5]])

    def to_photo(self, keypoints: np.ndarray) -> np.ndarray:
        """Map keypoints ``(..., 30)`` from the 96x96 frame to photo pixels."""
        k = np.asarray(keypoints, np.float64).copy()
        k[..., 0::2] = self.left + (k[..., 0::2] + 0.5) * self.scale
        k[..., 1::2] = self.top + (k[..., 1::2] + 0.5) * self.scale
        return k

    def to_frame(self, keypoints: np.ndarray) -> np.ndarray:
        """Map keypoints ``(..., 30)`` from photo pixels to the 96x96 frame (inverse of
        :meth:`to_photo`)."""
        k = np.asarray(keypoints, np.float64).copy()
        k[..., 0::2] = (k[..., 0::2] - self.left) / self.scale - 0.5
        k[..., 1::2] = (k[..., 1::2] - self.top) / self.scale - 0.5
        return k


def crop_square(box: Sequence[float], placement: tuple[float, float, float] = FRAME_IN_BOX) -> Crop:
    """The square that a detector box ``(x, y, width, height)`` (photo pixels) maps to the 96x96
    frame, with the frame placed relative to the box as in the training faces (``placement``:
    left, top and size in box widths). Rounded to whole pixels."""
    x, y, w = float(box[0]), float(box[1]), float(box[2])
    fx, fy, fs = placement
    size = max(1, int(round(fs * w)))
    left_px = int(round(x + fx * w))  # first pixel column of the square
    top_px = int(round(y + fy * w))
    return Crop(left_px - 0.5, top_px - 0.5, float(size))


def crop_face(photo: np.ndarray, crop: Crop) -> np.ndarray:
    """The square ``crop`` of a photo as a 96x96 uint8 grey face: area-averaged when shrinking,
    bilinear when enlarging; parts outside the photo repeat its edge pixels."""
    import cv2

    gray = photo if np.asarray(photo).ndim == 2 else to_gray(photo)
    h, w = gray.shape
    x0, y0, s = int(round(crop.left + 0.5)), int(round(crop.top + 0.5)), int(round(crop.size))
    pl, pt = max(0, -x0), max(0, -y0)
    pr, pb = max(0, x0 + s - w), max(0, y0 + s - h)
    if pl or pt or pr or pb:
        gray = cv2.copyMakeBorder(gray, pt, pb, pl, pr, cv2.BORDER_REPLICATE)
    square = gray[y0 + pt : y0 + pt + s, x0 + pl : x0 + pl + s]
    n = fdata.IMAGE_SIZE
    interp = cv2.INTER_AREA if s > n else cv2.INTER_LINEAR
    return cv2.resize(square, (n, n), interpolation=interp)


def warp_face(gray: np.ndarray, matrix: np.ndarray, size: int = fdata.IMAGE_SIZE) -> np.ndarray:
    """Resample a grey photo through a 2x3 affine ``matrix`` (photo pixels to output pixels, pixel
    centres at integers) into a ``size`` x ``size`` uint8 image; edges repeat.

    When the map shrinks by more than 1.5x, the photo is first shrunk with area averaging so that
    the bilinear warp does not alias (skip pixels).
    """
    import cv2

    gray = np.asarray(gray)
    m = np.asarray(matrix, np.float64)
    shrink = np.sqrt(abs(np.linalg.det(m[:, :2])))  # output pixels per photo pixel
    if shrink < 1 / 1.5:
        h, w = gray.shape
        sw, sh = max(1, round(w * shrink)), max(1, round(h * shrink))
        gray = cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_AREA)
        gx, gy = sw / w, sh / h
        # small-image pixel -> photo pixel, then the photo -> output map
        small_to_photo = np.array([[1 / gx, 0, 0.5 / gx - 0.5], [0, 1 / gy, 0.5 / gy - 0.5]])
        m = np.hstack(
            [m[:, :2] @ small_to_photo[:, :2], (m[:, :2] @ small_to_photo[:, 2] + m[:, 2])[:, None]]
        )
    return cv2.warpAffine(
        gray, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


# ---------------------------------------------------------------------------------------------
# Prediction


def predict_crops(model, crops: np.ndarray, flip_average: bool = False) -> np.ndarray:
    """Keypoints (float32 ``(N, 30)``, 96x96-frame pixels) for uint8 faces ``(N, 96, 96)``.

    Uses ``model.predict_on_batch``, which skips ``model.predict``'s per-call set-up (tens of
    milliseconds): what a one-face-at-a-time application wants. With ``flip_average`` the
    mirrored face's prediction is mapped back and averaged in.
    """
    x = np.asarray(crops)
    x = (x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32))[..., None]
    if flip_average:
        x = np.concatenate([x, x[:, :, ::-1]])
    out = []
    for i in range(0, len(x), 64):
        out.append(np.asarray(model.predict_on_batch(x[i : i + 64]), np.float32))
    pred = np.concatenate(out) if out else np.zeros((0, 30), np.float32)
    if not flip_average:
        return pred
    n = len(crops)
    return (pred[:n] + flip_keypoints(pred[n:])) / 2


@dataclass
class Face:
    """One face found in a photo: the detector's ``box`` (x, y, width, height), the ``crop``
    square, the 96x96 grey ``image`` the model saw, its ``keypoints_96`` (pixels in that frame),
    ``keypoints`` in photo pixels (float ``(30,)``, Kaggle's order) and ``matrix``, the 2x3 map
    from photo pixels to the frame of ``image`` (the crop's, or the eye alignment's when the
    prediction was refined)."""

    box: tuple[int, int, int, int]
    crop: Crop
    image: np.ndarray
    keypoints_96: np.ndarray
    keypoints: np.ndarray
    matrix: np.ndarray

    def as_dict(self) -> dict:
        """``{"box": [x, y, w, h], "keypoints": {name: [x, y], ...}}`` in photo pixels."""
        pts = np.asarray(self.keypoints, np.float64).reshape(fdata.N_KEYPOINTS, 2)
        return {
            "box": [int(v) for v in self.box],
            "keypoints": {
                name: [round(float(x), 2), round(float(y), 2)]
                for name, (x, y) in zip(fdata.KEYPOINT_NAMES, pts, strict=True)
            },
        }


def predict_faces(
    model,
    photo: np.ndarray,
    flip_average: bool = True,
    refine: bool = True,
    boxes: np.ndarray | None = None,
    placement: tuple[float, float, float] = FRAME_IN_BOX,
) -> list[Face]:
    """Find the faces of a photo (or use ``boxes``), crop, predict and map the keypoints back.

    With ``refine``, a second look (:func:`look_again`): each face is cut out again with its
    predicted eyes moved onto Kaggle's mean eye positions (:func:`eye_alignment_matrix`: this
    undoes the tilt and the detector's error in scale and position) and predicted again.
    Returns one :class:`Face` per face, left to right; an empty list when none is found.
    """
    rgb = as_rgb(photo, "photo")
    if boxes is None:
        boxes = detect_faces(rgb)
    if len(boxes) == 0:
        return []
    gray = to_gray(rgb)
    crops = [crop_square(b, placement) for b in boxes]
    mats = [c.matrix for c in crops]
    images = np.stack([crop_face(gray, c) for c in crops])
    kp96 = predict_crops(model, images, flip_average=flip_average)
    kp = [c.to_photo(k) for c, k in zip(crops, kp96, strict=True)]
    if refine:
        kp, images, kp96, mats = look_again(
            model, [gray] * len(kp), np.stack(kp), flip_average=flip_average
        )
    return [
        Face(tuple(int(v) for v in b), c, im, k96, k, m)
        for b, c, im, k96, k, m in zip(boxes, crops, images, kp96, kp, mats, strict=True)
    ]


def look_again(model, images, keypoints, flip_average=True):
    """The second look: each face is cut out again with its predicted eye centres moved onto
    Kaggle's mean eye positions (:func:`eye_alignment_matrix`: this undoes its tilt and its
    error in size and position), predicted again, and the new points carried back.

    ``images``: one grey uint8 image per face (a photo, or a 96x96 face itself); ``keypoints``
    ``(N, 30)``: the first look, in each image's pixels. Returns ``(keypoints, crops,
    keypoints_96, matrices)``: the new points in image pixels (float64 ``(N, 30)``), the aligned
    96x96 crops, their points in the crops' pixels and the 2x3 image-to-crop maps.
    """
    mats = np.stack([eye_alignment_matrix(k) for k in keypoints])  # image -> aligned crop
    crops = np.stack([warp_face(image, m) for image, m in zip(images, mats, strict=True)])
    kp96 = predict_crops(model, crops, flip_average=flip_average)  # in the crops' pixels
    return apply_affine(kp96, invert_affine(mats)), crops, kp96, mats


def time_per_face(model, repeats: int = 30, warmup: int = 3, flip_average: bool = False) -> dict:
    """Time :func:`predict_crops` on one 96x96 face, ``repeats`` times after ``warmup`` calls.

    Returns ``{"median_ms", "p90_ms", "min_ms"}`` in milliseconds of wall-clock time.
    """
    face = np.random.default_rng(0).integers(0, 256, (1, 96, 96), dtype=np.uint8)
    for _ in range(warmup):
        predict_crops(model, face, flip_average)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_crops(model, face, flip_average)
        times.append(time.perf_counter() - t0)
    ms = 1000 * np.asarray(times)
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.quantile(ms, 0.9)),
        "min_ms": float(ms.min()),
    }


# ---------------------------------------------------------------------------------------------
# Measuring where Kaggle's frame sits relative to the detector's box


def haar_placement(
    images: np.ndarray,
    keypoints: np.ndarray | None = None,
    n: int | None = None,
    seed: int = 0,
    enlarge: tuple[float, float] = (2.0, 4.0),
) -> pd.DataFrame:  # noqa: F821
    """Run the face detector on 96x96 training faces and say where each face's frame lies
    relative to the detector's box.

    Each face is enlarged by a random factor in ``enlarge`` (so that the detector's discrete
    window sizes, 10% apart, fall differently on each face and average out; it also gives the
    detector the resolution of a photo) and padded by half its size with repeated edge pixels (a
    face filling the whole image is rarely found). ``n`` faces are drawn at random (seeded).

    Returns one row per face in which exactly one face was found: the box in 96x96-frame
    pixels (``box_left``, ``box_top`` edges and ``box_size``), the frame relative to the box
    (``frame_left``, ``frame_top``, ``frame_size`` in box widths, as :data:`FRAME_IN_BOX`) and,
    with ``keypoints``, the eye midpoint (``eyes_x``, ``eyes_y``) and inter-ocular distance
    (``iod``) in box widths from the box's top-left edge. ``attrs["found"]`` counts faces with
    0, 1 and more detections.
    """
    import cv2
    import pandas as pd

    rng = np.random.default_rng(seed)
    idx = np.arange(len(images))
    if n is not None and n < len(images):
        idx = np.sort(rng.choice(len(images), n, replace=False))
    cascade = _get_cascade()
    rows, counts = [], np.zeros(3, int)
    for i in idx:
        s_px = int(round(fdata.IMAGE_SIZE * rng.uniform(*enlarge)))
        s = s_px / fdata.IMAGE_SIZE
        big = cv2.resize(images[i], (s_px, s_px), interpolation=cv2.INTER_LINEAR)
        pad = s_px // 2
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = cascade.detectMultiScale(
            big, SCALE_FACTOR, MIN_NEIGHBORS, minSize=(s_px // 4, s_px // 4)
        )
        counts[min(len(found), 2)] += 1
        if len(found) != 1:
            continue
        x, y, w, _ = (float(v) for v in found[0])
        left, top, size = (x - pad) / s - 0.5, (y - pad) / s - 0.5, w / s
        row = {
            "row": int(i),
            "box_left": left,
            "box_top": top,
            "box_size": size,
            "frame_left": (-0.5 - left) / size,
            "frame_top": (-0.5 - top) / size,
            "frame_size": fdata.IMAGE_SIZE / size,
        }
        if keypoints is not None:
            le, re = eye_centres(keypoints[i])
            mid = (le + re) / 2
            row["eyes_x"] = (mid[0] - left) / size
            row["eyes_y"] = (mid[1] - top) / size
            row["iod"] = float(eye_distance(keypoints[i])) / size
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["found"] = {"none": int(counts[0]), "one": int(counts[1]), "more": int(counts[2])}
    return table


def placement_from(table) -> tuple[float, float, float]:
    """The median ``(frame_left, frame_top, frame_size)`` of a :func:`haar_placement` table."""
    if len(table) == 0:
        raise ValueError("the detector found no face to measure")
    return tuple(float(table[c].median()) for c in ("frame_left", "frame_top", "frame_size"))


# ---------------------------------------------------------------------------------------------
# Using the keypoints


def eye_alignment_matrix(
    keypoints: np.ndarray,
    size: int = fdata.IMAGE_SIZE,
    eyes: dict[str, tuple[float, float]] = EYES_96,
) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, translation) that maps a face's
    eye centres (photo pixels, from ``keypoints`` ``(30,)``) onto ``eyes`` (pixels of a 96x96
    frame, scaled to a ``size`` x ``size`` output). For ``cv2.warpAffine``."""
    k = np.asarray(keypoints, np.float64).reshape(fdata.N_KEYPOINTS, 2)
    src = np.stack([k[0], k[1]])  # left, right eye centres
    f = size / fdata.IMAGE_SIZE
    dst = np.array([eyes["left_eye_center"], eyes["right_eye_center"]], np.float64)
    dst = (dst + 0.5) * f - 0.5
    if not np.isfinite(src).all():
        raise ValueError("both eye centres are needed to align a face")
    # Similarity from two point pairs, as complex numbers: z' = a z + b.
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    if zs[0] == zs[1]:
        raise ValueError("the two eye centres coincide: cannot align")
    a = (zd[0] - zd[1]) / (zs[0] - zs[1])
    b = zd[0] - a * zs[0]
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def align_face(photo: np.ndarray, keypoints: np.ndarray, size: int = 192) -> np.ndarray:
    """The face with the given keypoints (photo pixels), rotated, scaled and shifted so that its
    eye centres land on Kaggle's mean eye positions in a ``size`` x ``size`` RGB image."""
    import cv2

    m = eye_alignment_matrix(keypoints, size)
    return cv2.warpAffine(
        as_rgb(photo),
        m,
        (size, size),
        flags=cv2.INTER_AREA if m[0, 0] ** 2 + m[1, 0] ** 2 < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def collage(photos: Sequence[np.ndarray], height: int = 512, gap: int = 16) -> np.ndarray:
    """Photos side by side, each resized to ``height`` pixels, on a white background, uint8 RGB."""
    import cv2

    parts = []
    for p in photos:
        rgb = as_rgb(p)
        h, w = rgb.shape[:2]
        new_w = max(1, round(w * height / h))
        interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
        parts.append(cv2.resize(rgb, (new_w, height), interpolation=interp))
        parts.append(np.full((height, gap, 3), 255, np.uint8))
    return np.concatenate(parts[:-1], axis=1)


# ---------------------------------------------------------------------------------------------
# Pictures


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))


def annotate(photo: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of the photo (uint8 RGB) with each face's box and keypoints drawn, coloured by side
    as in the book's figures (subject's left orange, right sky blue, centre line yellow)."""
    import cv2

    from fkp_helpers import viz

    out = as_rgb(photo).copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    for face in faces:
        x, y, bw, bh = face.box
        cv2.rectangle(out, (x, y), (x + bw - 1, y + bh - 1), (255, 255, 255), thick, cv2.LINE_AA)
        pts = np.asarray(face.keypoints, np.float64).reshape(fdata.N_KEYPOINTS, 2)
        r = max(2, round(bw / 45))
        for (px, py), side in zip(pts, viz.KEYPOINT_SIDES, strict=True):
            if not np.isfinite([px, py]).all():
                continue
            centre = (int(round(px * 16)), int(round(py * 16)))  # sub-pixel: 4 fractional bits
            cv2.circle(out, centre, r * 16, (0, 0, 0), thick + 1, cv2.LINE_AA, shift=4)
            cv2.circle(out, centre, r * 16, _hex_rgb(viz.SIDE_COLOURS[side]), -1, cv2.LINE_AA, 4)
    return out


def show_photo(
    photo: np.ndarray,
    faces: Sequence[Face] = (),
    boxes: np.ndarray | None = None,
    size: float = 6.0,
    names: bool = False,
):
    """A matplotlib Figure of the photo with each face's box (white) and keypoints (dots
    coloured by side). ``boxes`` ``(F, 4)`` draws detector boxes without keypoints."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from fkp_helpers import viz

    rgb = as_rgb(photo)
    h, w = rgb.shape[:2]
    fig, ax = plt.subplots(figsize=(size, size * h / w + 0.5))
    ax.imshow(rgb, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    all_boxes = [f.box for f in faces] + ([] if boxes is None else [tuple(b) for b in boxes])
    for x, y, bw, bh in all_boxes:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, ec="white", lw=1.5))
    for face in faces:
        viz.draw_keypoints(ax, face.keypoints, "label", label=False, names=names)
    ax.set_axis_off()
    if faces:
        fig.legend(handles=viz.legend_handles(), loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if faces else 0, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------
# Command line


def predict_cli(
    photo_path: str | os.PathLike,
    model_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    flip_average: bool = True,
    refine: bool = True,
) -> list[dict]:
    """``fkp predict PHOTO --model model.keras [--out annotated.png]``.

    Returns one dict per face, left to right: ``box`` ``[x, y, width, height]`` and
    ``keypoints`` ``{name: [x, y]}``, in the photo's own pixels. Writes the annotated PNG when
    ``out`` is given. Raises FileNotFoundError (missing photo or model) or ValueError (not an
    image, too small, no face found) with a message meant for the person at the terminal.
    """
    photo_path, model_path = Path(photo_path), Path(model_path)
    photo = read_photo(photo_path)
    check_size(photo, photo_path.name)
    from fkp_helpers import models

    model = models.load_model(model_path)
    boxes = detect_faces(photo)
    if len(boxes) == 0:
        h, w = photo.shape[:2]
        raise ValueError(
            f"{photo_path.name}: no face found in the {w} x {h} photo. The detector looks for "
            f"upright, roughly frontal faces at least {MIN_FACE_FRACTION:.0%} of the photo's "
            "shorter side; try a closer crop or a better-lit, frontal photo"
        )
    faces = predict_faces(model, photo, flip_average=flip_average, refine=refine, boxes=boxes)
    if out is not None:
        from PIL import Image

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(annotate(photo, faces)).save(out, format="PNG")
    return [f.as_dict() for f in faces]
