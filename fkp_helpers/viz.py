"""Pictures of faces and keypoints (chapter 2), used by every chapter.

Images are uint8 ``(N, 96, 96)`` grey levels 0-255 (float32 in [0, 1] works too); keypoints are
float ``(N, 30)`` or ``(30,)`` in pixels of the 96x96 frame, Kaggle's column order, NaN where
missing. Pixel centres sit at integer coordinates, so a face is drawn with ``imshow`` over
``[-0.5, 95.5]`` and a keypoint at ``(x, y)`` lands on the centre of pixel ``(row y, column x)``.

Colours say the side of the face: the subject's left (which appears on the image's right), the
subject's right, and the centre line. Every function returns a matplotlib Figure (or draws on the
Axes it is given) and never calls ``plt.show``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fkp_helpers.keypoints import (
    IMAGE_SIZE,
    KEYPOINT_COLUMNS,
    KEYPOINT_NAMES,
    N_KEYPOINTS,
    as_points,
    eye_distance,
)


def keypoint_side(name: str) -> str:
    """``"left"``, ``"right"`` or ``"centre"``: which side of the face a keypoint is on.

    Left and right are the subject's: ``left_eye_center`` is on the image's right.
    """
    if "left" in name:
        return "left"
    if "right" in name:
        return "right"
    return "centre"


KEYPOINT_SIDES: tuple[str, ...] = tuple(keypoint_side(n) for n in KEYPOINT_NAMES)
"""The side of each of the 15 keypoints, in Kaggle's order."""

SIDE_COLOURS: dict[str, str] = {"left": "#e69f00", "right": "#56b4e9", "centre": "#f0e442"}
"""Orange, sky blue and yellow (Okabe-Ito): distinct for colour-blind readers and on grey faces."""

BOOK_WIDTH = 7.0
"""Inches of figure that the book's page shows at full size; wider figures are shrunk."""

SIDE_LABELS: dict[str, str] = {
    "left": "subject's left",
    "right": "subject's right",
    "centre": "centre line",
}

STYLES: dict[str, dict] = {
    "label": dict(marker="o", s=22, edgecolors="black", linewidths=0.6),
    "prediction": dict(marker="x", s=30, linewidths=1.6),
    "small": dict(marker="o", s=6, edgecolors="none"),
}
"""Marker styles for :func:`draw_keypoints`: labels are dots, predictions crosses."""


def _as_points(keypoints: np.ndarray) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape[-1] != 2 * N_KEYPOINTS:
        raise ValueError(f"keypoints must end in {2 * N_KEYPOINTS} values, got shape {kp.shape}")
    return as_points(kp)


def _show_image(ax: Axes, image: np.ndarray) -> None:
    ax.imshow(
        np.asarray(image).reshape(IMAGE_SIZE, IMAGE_SIZE),
        cmap="gray",
        vmin=0,
        vmax=255 if np.asarray(image).dtype == np.uint8 else 1,
        extent=(-0.5, IMAGE_SIZE - 0.5, IMAGE_SIZE - 0.5, -0.5),
        interpolation="nearest",
    )
    ax.set_axis_off()


def draw_keypoints(
    ax: Axes,
    keypoints: np.ndarray,
    style: str = "label",
    label: bool = True,
    names: bool = False,
    fontsize: float = 7,
    scale: float = 1.0,
) -> list:
    """Draw one face's 15 keypoints (30 values, pixels) on ``ax``; missing (NaN) ones are skipped.

    style: a key of :data:`STYLES` (``"label"`` dots, ``"prediction"`` crosses, ``"small"``).
    label: give the artists legend labels (``"subject's left"`` etc.; with ``style="prediction"``
    the label says so). names: write each keypoint's name beside it. scale: marker size factor.
    Returns the scatter artists, one per side that has a visible point.
    """
    pts = _as_points(keypoints).reshape(N_KEYPOINTS, 2)
    sides = np.array(KEYPOINT_SIDES)
    artists = []
    for side in ("left", "right", "centre"):
        sel = (sides == side) & np.isfinite(pts).all(axis=1)
        if not sel.any():
            continue
        text = SIDE_LABELS[side] + (" (prediction)" if style == "prediction" else "")
        artists.append(
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                color=SIDE_COLOURS[side],
                label=text if label else None,
                zorder=3,
                **{**STYLES[style], "s": STYLES[style]["s"] * scale**2},
            )
        )
    if names:
        for k in np.flatnonzero(np.isfinite(pts).all(axis=1)):
            dx, dy, ha, va = _name_placement(KEYPOINT_NAMES[k])
            ax.annotate(
                KEYPOINT_NAMES[k],
                tuple(pts[k]),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=fontsize,
                color="black",
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
                zorder=4,
                annotation_clip=False,
            )
    return artists


def _name_placement(name: str) -> tuple[float, float, str, str]:
    """Where a keypoint's name goes: offset in points (+y up on screen), and its alignment.

    Chosen so that the 15 names of a frontal face do not overlap: side points are labelled
    outwards (the subject's left is on the image's right), eye centres above, inner eye corners
    below, lip centres above and below.
    """
    side = keypoint_side(name)
    out, ha_out = (1.0, "left") if side == "left" else (-1.0, "right")
    if name.endswith("eye_center") or name == "mouth_center_top_lip":
        return 0.0, 6.0, "center", "bottom"
    if name == "mouth_center_bottom_lip":
        return 0.0, -6.0, "center", "top"
    if name.endswith("eye_inner_corner"):
        return 0.0, -6.0, ha_out, "top"
    if name.endswith("eyebrow_inner_end"):
        return 0.0, 6.0, ha_out, "bottom"
    if side == "centre":  # the nose tip
        return -6.0, 0.0, "right", "center"
    return 6.0 * out, 0.0, ha_out, "center"


def legend_handles(predictions: bool = False, sides: Sequence[str] = ("left", "right", "centre")):
    """Legend handles naming the colours (and, with ``predictions``, dots vs crosses)."""
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=6,
            markerfacecolor=SIDE_COLOURS[s],
            markeredgecolor="black",
            label=SIDE_LABELS[s],
        )
        for s in sides
    ]
    if predictions:
        handles += [
            Line2D([], [], linestyle="none", marker="o", color="grey", label="label"),
            Line2D([], [], linestyle="none", marker="x", color="grey", mew=1.6, label="prediction"),
        ]
    return handles


def show_faces(
    images: np.ndarray,
    keypoints: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    size: float = 2.0,
    predictions: np.ndarray | None = None,
    prediction_name: str = "prediction",
) -> Figure:
    """A grid of faces with their keypoints (dots) and, if given, predictions (crosses).

    images: ``(N, 96, 96)`` uint8 0-255 or float [0, 1]. keypoints, predictions: ``(N, 30)``
    pixels, NaN where missing (not drawn). One Axes per face (``len(fig.axes) == N``), ``size``
    inches each; a legend under the grid names the colours. ``prediction_name`` renames the
    crosses in the legend (e.g. ``"filled in"``).
    """
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise ValueError("no images to show")
    for what, arr in (("keypoints", keypoints), ("predictions", predictions)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{len(arr)} rows of {what} for {n} images")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = ncols * size
    font = max(9.0, 9.0 * width / BOOK_WIDTH)  # stays about 9 pt once shrunk to the page
    title_h = font / 40 if titles is not None else 0.0
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width, nrows * (size + title_h) + font / 25),
        squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            fig.delaxes(ax)
            continue
        _show_image(ax, images[i])
        if keypoints is not None:
            draw_keypoints(ax, keypoints[i], "label", label=False, scale=font / 9)
        if predictions is not None:
            draw_keypoints(ax, predictions[i], "prediction", label=False, scale=font / 9)
        if titles is not None:
            ax.set_title(titles[i], fontsize=font)
    handles = []
    if keypoints is not None and predictions is not None:
        handles = legend_handles(predictions=True)
        handles[-1].set_label(prediction_name)
    elif keypoints is not None or predictions is not None:
        handles = legend_handles()
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            frameon=False,
            fontsize=font,
            markerscale=font / 9,
        )
    return fig


def mean_face_figure(images: np.ndarray, keypoints: np.ndarray, size: float = 6.0) -> Figure:
    """The pixel-wise mean face with every labelled keypoint scattered over it.

    Small dots: each row's keypoints (coloured by side); large dots with black edges: each
    keypoint's mean position over its labelled rows. Pixels, 96x96 frame.
    """
    images = np.asarray(images)
    pts = _as_points(keypoints)
    fig, ax = plt.subplots(figsize=(size, size + 0.4))
    ax.imshow(
        images.astype(np.float64).mean(axis=0),
        cmap="gray",
        extent=(-0.5, IMAGE_SIZE - 0.5, IMAGE_SIZE - 0.5, -0.5),
    )
    sides = np.array(KEYPOINT_SIDES)
    for side in ("left", "right", "centre"):
        p = pts[:, sides == side].reshape(-1, 2)
        p = p[np.isfinite(p).all(axis=1)]
        ax.scatter(p[:, 0], p[:, 1], s=1.5, color=SIDE_COLOURS[side], alpha=0.25, lw=0)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(pts, axis=0)
    draw_keypoints(ax, mean.reshape(-1), "label", label=False)
    ax.set_xlim(-0.5, IMAGE_SIZE - 0.5)
    ax.set_ylim(IMAGE_SIZE - 0.5, -0.5)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    ax.legend(
        handles=legend_handles(),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
        frameon=False,
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def keypoint_frame(keypoints: np.ndarray) -> pd.DataFrame:
    """Long table of the labelled coordinates: columns ``keypoint``, ``axis`` (x/y), ``side``,
    ``value`` (pixels). Missing values are left out."""
    kp = np.asarray(keypoints, dtype=np.float64)
    df = pd.DataFrame(kp, columns=list(KEYPOINT_COLUMNS)).melt(
        var_name="column", value_name="value"
    )
    df = df.dropna(subset=["value"])
    df["keypoint"] = df["column"].str[:-2]
    df["axis"] = df["column"].str[-1]
    df["side"] = df["keypoint"].map(keypoint_side)
    return df[["keypoint", "axis", "side", "value"]].reset_index(drop=True)


def keypoint_distributions(keypoints: np.ndarray, size: float = 3.4) -> Figure:
    """Violin plots of every keypoint's x and y (pixels), one row per keypoint, coloured by side."""
    import seaborn as sns

    df = keypoint_frame(keypoints)
    palette = {n: SIDE_COLOURS[keypoint_side(n)] for n in KEYPOINT_NAMES}
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 2.0, size * 1.8), sharey=True)
    for ax, axis in zip(axes, ("x", "y"), strict=True):
        sns.violinplot(
            data=df[df["axis"] == axis],
            x="value",
            y="keypoint",
            hue="keypoint",
            order=list(KEYPOINT_NAMES),
            palette=palette,
            legend=False,
            cut=0,
            inner="quartile",
            linewidth=0.8,
            density_norm="width",
            ax=ax,
        )
        ax.set_xlim(0, IMAGE_SIZE - 1)
        ax.set_xlabel(f"{axis} (pixels)")
        ax.set_ylabel("")
        ax.grid(axis="x", alpha=0.3)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def correlation_heatmap(keypoints: np.ndarray, size: float = 8.0) -> Figure:
    """Pearson correlation of the 30 coordinates (pairwise over rows where both are labelled)."""
    import seaborn as sns

    corr = pd.DataFrame(np.asarray(keypoints, np.float64), columns=list(KEYPOINT_COLUMNS)).corr()
    fig, ax = plt.subplots(figsize=(size, size * 0.92))
    with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib deprecates
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(
            corr,
            vmin=-1,
            vmax=1,
            center=0,
            cmap="vlag",
            square=True,
            xticklabels=True,
            yticklabels=True,
            cbar_kws={"label": "correlation", "shrink": 0.7},
            ax=ax,
        )
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def intensity_figure(images: np.ndarray, size: float = 3.0) -> Figure:
    """Three histograms: every pixel's grey level, each image's mean, each image's standard
    deviation (contrast). Grey levels 0-255 (float images in [0, 1] are scaled to 0-255)."""
    import seaborn as sns

    x = np.asarray(images, dtype=np.float64)
    if np.asarray(images).dtype != np.uint8:
        x = x * 255.0
    flat = x.reshape(len(x), -1)
    fig, axes = plt.subplots(1, 3, figsize=(3 * size, size))
    counts = np.bincount(np.clip(flat, 0, 255).astype(np.int64).ravel(), minlength=256)
    axes[0].bar(np.arange(256), counts / counts.sum(), width=1.0, color="0.35")
    axes[0].set(xlabel="grey level", ylabel="fraction of pixels", title="all pixels", xlim=(0, 255))
    sns.histplot(flat.mean(axis=1), bins=40, ax=axes[1], color=SIDE_COLOURS["right"])
    axes[1].set(xlabel="mean grey level", ylabel="images", title="brightness per image")
    sns.histplot(flat.std(axis=1), bins=40, ax=axes[2], color=SIDE_COLOURS["left"])
    axes[2].set(xlabel="std of grey levels", ylabel="images", title="contrast per image")
    fig.tight_layout()
    return fig


def keypoint_outliers(keypoints: np.ndarray, n: int = 6) -> pd.DataFrame:
    """The ``n`` rows whose worst keypoint lies farthest from that keypoint's mean position.

    Distance is Euclidean in pixels, divided by the keypoint's RMS distance from its mean (a
    z-like score, so a noisy keypoint like the nose tip is not always the culprit). Columns:
    ``index`` (0-based position in ``keypoints``), ``keypoint``, ``distance_px``, ``score``;
    sorted by score, highest first.
    """
    pts = _as_points(keypoints)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(pts, axis=0)
    dist = np.hypot(*(pts - mean).transpose(2, 0, 1))
    with np.errstate(invalid="ignore"):
        spread = np.sqrt(np.nanmean(dist**2, axis=0))
    score = np.where(np.isfinite(dist), dist / spread, -np.inf)
    worst = np.argmax(score, axis=1)
    best_score = score[np.arange(len(score)), worst]
    order = np.argsort(-best_score, kind="stable")[:n]
    return pd.DataFrame(
        {
            "index": order,
            "keypoint": [KEYPOINT_NAMES[k] for k in worst[order]],
            "distance_px": dist[order, worst[order]],
            "score": best_score[order],
        }
    )


def missing_heatmap(keypoints: np.ndarray, size: float = 7.0) -> Figure:
    """Which keypoints each row has: rows top to bottom in file order, keypoints left to right.

    Dark: labelled; light: missing. Rows are drawn as an image, so thousands of rows stay fast.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    pts = _as_points(keypoints)
    lab = np.isfinite(pts).all(axis=2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(
        lab.astype(np.uint8),
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap(["#f2f2f2", "#1b4f72"]),
        vmin=0,
        vmax=1,
    )
    ax.set_xticks(range(N_KEYPOINTS), KEYPOINT_NAMES, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("row of training.csv")
    ax.legend(
        handles=[
            Patch(color="#1b4f72", label="labelled"),
            Patch(color="#f2f2f2", ec="0.5", label="missing"),
        ],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
        frameon=False,
    )
    fig.tight_layout()
    return fig


def schematic_face(ax: Axes, keypoints: np.ndarray, colour: str = "0.35") -> None:
    """Draw a line-art face through one face's 15 keypoints (pixels): brows, eyes, nose, mouth.

    A schematic, not a photograph: used where the book must show keypoints without a real face.
    Needs all 15 keypoints.
    """
    from matplotlib.patches import Ellipse

    p = dict(zip(KEYPOINT_NAMES, _as_points(keypoints).reshape(N_KEYPOINTS, 2), strict=True))
    if not all(np.isfinite(v).all() for v in p.values()):
        raise ValueError("schematic_face needs all 15 keypoints")
    kw = dict(color=colour, lw=1.5, zorder=1)
    eye_dist = float(eye_distance(np.ravel(keypoints)))
    centre = (p["left_eye_center"] + p["right_eye_center"]) / 2
    chin = p["mouth_center_bottom_lip"][1] + 0.45 * eye_dist
    top = centre[1] - 0.95 * eye_dist
    ax.add_patch(
        Ellipse(
            (centre[0], (top + chin) / 2),
            width=2.1 * eye_dist,
            height=chin - top,
            fill=False,
            **kw,
        )
    )
    for side in ("left", "right"):
        inner, outer = p[f"{side}_eye_inner_corner"], p[f"{side}_eye_outer_corner"]
        c = p[f"{side}_eye_center"]
        w = np.linalg.norm(outer - inner)
        ax.add_patch(Ellipse(tuple(c), width=w, height=0.45 * w, fill=False, **kw))
        ax.add_patch(Ellipse(tuple(c), width=0.3 * w, height=0.3 * w, color=colour, zorder=1))
        brow = np.array([p[f"{side}_eyebrow_inner_end"], p[f"{side}_eyebrow_outer_end"]])
        ax.plot(brow[:, 0], brow[:, 1], **kw)
    nose = p["nose_tip"]
    ax.plot(
        [centre[0], nose[0] - 0.05 * eye_dist, nose[0] + 0.12 * eye_dist],
        [centre[1] + 0.15 * eye_dist, nose[1], nose[1] - 0.05 * eye_dist],
        **kw,
    )
    ml, mr = p["mouth_left_corner"], p["mouth_right_corner"]
    top_lip, bottom_lip = p["mouth_center_top_lip"], p["mouth_center_bottom_lip"]
    for mid in (top_lip, bottom_lip):
        ax.plot([mr[0], mid[0], ml[0]], [mr[1], mid[1], ml[1]], **kw)


def draw_keypoint_map(ax: Axes, keypoints: np.ndarray, title: str | None = None) -> None:
    """A schematic face through the 15 keypoints (pixels), each point named, on the 96x96 frame.

    The axes show pixel coordinates: x to the right, y down, the frame spanning [-0.5, 95.5].
    """
    schematic_face(ax, keypoints)
    draw_keypoints(ax, keypoints, names=True, fontsize=8)
    ax.set_xlim(-0.5, IMAGE_SIZE - 0.5)
    ax.set_ylim(IMAGE_SIZE - 0.5, -0.5)
    ax.set_aspect("equal")
    ticks = np.arange(0, IMAGE_SIZE, 16)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("x (pixels) →")
    ax.set_ylabel("← y (pixels)")
    ax.grid(alpha=0.25)
    ax.axvline((IMAGE_SIZE - 1) / 2, color="0.6", lw=0.8, ls="--")
    if title:
        ax.set_title(title, y=-0.08, va="top")


def pixel_centres_figure(n: int = 5, size: float = 3.6) -> Figure:
    """The top-left ``n`` x ``n`` pixels of an image: each pixel a square, its centre a dot at
    integer coordinates (x = column, y = row), its edges at half-integers."""
    fig, ax = plt.subplots(figsize=(size, size))
    checker = (np.add.outer(np.arange(n), np.arange(n)) % 2) * 60 + 150
    ax.imshow(checker, cmap="gray", vmin=0, vmax=255, extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    xs, ys = np.meshgrid(np.arange(n), np.arange(n))
    ax.scatter(xs, ys, s=12, color="black", zorder=3)
    for x, y in ((0, 0), (n - 1, 1), (2, n - 2)):
        ax.annotate(
            f"({x}, {y})", (x, y), xytext=(x, y - 0.18), ha="center", va="bottom", fontsize=9
        )
    ax.set_xticks(np.arange(-0.5, n, 0.5))
    ax.set_yticks(np.arange(-0.5, n, 0.5))
    ax.tick_params(labelsize=7)
    ax.xaxis.tick_top()
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("x = column")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("y = row")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Chapter 5: learning curves and heatmaps


def learning_curves(
    histories: dict[str, dict], metric: str = "val_rmse", size: float = 4.0
) -> Figure:
    """Per-epoch ``metric`` (default: validation RMSE in pixels) of several runs, one line each.

    histories: run name -> Keras history dict (as saved in a run's history.json).
    """
    import seaborn as sns

    rows = [
        {"epoch": e + 1, metric: v, "run": name}
        for name, h in histories.items()
        for e, v in enumerate(h.get(metric, []))
    ]
    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(2.2 * size, size), layout="constrained")
    sns.lineplot(data=frame, x="epoch", y=metric, hue="run", marker="o", ax=ax)
    ax.set_ylabel("validation RMSE (px)" if metric == "val_rmse" else metric)
    ax.set_yscale("log")
    if len(histories) > 1:
        ax.legend(fontsize="small", loc="upper right")
    else:
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    return fig


def heatmap_figure(model, image: np.ndarray, names: Sequence[str], size: float = 2.8) -> Figure:
    """The face, then for each keypoint in ``names`` its softmax heatmap over the face and the
    soft-argmax point read off it (a cross). ``model`` is a heatmap model from
    :func:`fkp_helpers.models.keypoint_resnet`; ``image`` uint8 (96, 96)."""
    from fkp_helpers import models

    x = image.astype(np.float32)[None, ..., None] / 255.0
    logits = np.asarray(models.heatmap_model(model).predict(x, verbose=0), np.float64)[0]
    points = np.asarray(model.predict(x, verbose=0), np.float64)[0].reshape(-1, 2)
    fig, axes = plt.subplots(
        1, len(names) + 1, figsize=(size * (len(names) + 1), size), layout="constrained"
    )
    _show_image(axes[0], image)
    axes[0].set_title("face", fontsize="small")
    for ax, name in zip(axes[1:], names, strict=True):
        k = KEYPOINT_NAMES.index(name)
        h = logits[..., k]
        p = np.exp(h - h.max())
        p /= p.sum()
        _show_image(ax, image)
        # each 24x24 cell covers 4x4 pixels: extent from -0.5 to 95.5 in pixel coordinates
        ax.imshow(
            p, cmap="magma", alpha=0.6, extent=(-0.5, 95.5, 95.5, -0.5), interpolation="nearest"
        )
        ax.plot(*points[k], marker="+", color="cyan", markersize=14, markeredgewidth=2)
        ax.set_title(f"{name}\npeak p={p.max():.2f}", fontsize="small")
    return fig
