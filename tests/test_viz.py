"""Figures: the right number of axes and points, sides in distinct colours, NaN never drawn."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from fkp_helpers import viz
from fkp_helpers.data import KEYPOINT_NAMES

RNG = np.random.default_rng(0)


def faces(n):
    images = RNG.integers(0, 256, size=(n, 96, 96), dtype=np.uint8)
    kp = RNG.uniform(5, 90, size=(n, 30)).astype(np.float32)
    return images, kp


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def scatter_points(ax):
    """(colour hex, offsets (M, 2)) for each scatter collection on ``ax``."""
    out = []
    for c in ax.collections:
        offsets = np.asarray(c.get_offsets())
        if len(offsets):
            out.append(
                (
                    to_hex(
                        c.get_facecolor()[0] if len(c.get_facecolor()) else c.get_edgecolor()[0]
                    ),
                    offsets,
                )
            )
    return out


def test_keypoint_sides_follow_the_names():
    sides = dict(zip(KEYPOINT_NAMES, viz.KEYPOINT_SIDES, strict=True))
    assert sides["left_eye_center"] == "left"
    assert sides["mouth_right_corner"] == "right"
    assert sides["nose_tip"] == "centre"
    assert viz.KEYPOINT_SIDES.count("left") == viz.KEYPOINT_SIDES.count("right") == 6
    assert viz.KEYPOINT_SIDES.count("centre") == 3


def test_side_colours_are_distinct():
    assert len(set(viz.SIDE_COLOURS.values())) == 3


def test_draw_keypoints_colours_left_and_right_differently():
    fig, ax = plt.subplots()
    kp = np.zeros(30, np.float32)
    artists = viz.draw_keypoints(ax, kp + 40)
    colours = {a.get_label(): to_hex(a.get_facecolor()[0]) for a in artists}
    assert colours["subject's left"] == viz.SIDE_COLOURS["left"]
    assert colours["subject's right"] == viz.SIDE_COLOURS["right"]
    assert colours["subject's left"] != colours["subject's right"]
    # 6 left, 6 right, 3 centre points
    assert sorted(len(a.get_offsets()) for a in artists) == [3, 6, 6]


def test_draw_keypoints_skips_missing_points():
    fig, ax = plt.subplots()
    _, kp = faces(1)
    kp = kp[0]
    kp[2:] = np.nan  # only the left eye centre is labelled
    artists = viz.draw_keypoints(ax, kp)
    assert len(artists) == 1
    np.testing.assert_allclose(artists[0].get_offsets(), [kp[:2]])
    assert to_hex(artists[0].get_facecolor()[0]) == viz.SIDE_COLOURS["left"]


def test_draw_keypoints_with_names_writes_one_label_per_visible_point():
    fig, ax = plt.subplots()
    _, kp = faces(1)
    kp = kp[0]
    kp[20:22] = np.nan  # nose tip missing
    viz.draw_keypoints(ax, kp, names=True)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 14 and "nose_tip" not in texts and "left_eye_center" in texts


def test_draw_keypoints_puts_points_at_pixel_coordinates():
    fig, ax = plt.subplots()
    kp = np.full(30, np.nan, np.float32)
    kp[20:22] = [12.0, 70.0]  # nose tip at x=12, y=70
    (art,) = viz.draw_keypoints(ax, kp)
    assert art.get_offsets().tolist() == [[12.0, 70.0]]


def test_show_faces_makes_one_axes_per_face_and_a_legend():
    images, kp = faces(7)
    fig = viz.show_faces(images, kp, ncols=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 7
    assert all(len(ax.images) == 1 for ax in fig.axes)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["subject's left", "subject's right", "centre line"]
    # 15 points on each face, in three colours
    for ax in fig.axes:
        pts = scatter_points(ax)
        assert sum(len(o) for _, o in pts) == 15
        assert {c for c, _ in pts} == set(viz.SIDE_COLOURS.values())


def test_show_faces_draws_the_image_upright_on_pixel_centres():
    images, kp = faces(1)
    fig = viz.show_faces(images, kp)
    im = fig.axes[0].images[0]
    assert im.get_extent() == [-0.5, 95.5, 95.5, -0.5]
    np.testing.assert_array_equal(im.get_array(), images[0])


def test_show_faces_leaves_out_missing_keypoints():
    images, kp = faces(2)
    kp[1, 4:] = np.nan  # second face: only the two eye centres
    fig = viz.show_faces(images, kp)
    counts = [sum(len(o) for _, o in scatter_points(ax)) for ax in fig.axes]
    assert counts == [15, 2]


def test_show_faces_draws_predictions_as_crosses_and_names_them():
    images, kp = faces(3)
    fig = viz.show_faces(images, kp, predictions=kp + 1, prediction_name="filled in")
    for ax in fig.axes:
        markers = [c.get_paths()[0].vertices.shape for c in ax.collections]
        assert len(ax.collections) == 6  # three sides x (labels, predictions)
        assert len(set(markers)) == 2  # dots and crosses are different shapes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-2:] == ["label", "filled in"]


def test_show_faces_without_keypoints_draws_only_images():
    images, _ = faces(4)
    fig = viz.show_faces(images, titles=list("abcd"))
    assert [ax.get_title() for ax in fig.axes] == list("abcd")
    assert all(len(ax.collections) == 0 for ax in fig.axes)
    assert not fig.legends


def test_show_faces_rejects_mismatched_inputs():
    images, kp = faces(3)
    with pytest.raises(ValueError, match="2 rows of keypoints for 3 images"):
        viz.show_faces(images, kp[:2])
    with pytest.raises(ValueError, match="titles"):
        viz.show_faces(images, kp, titles=["a"])


def test_mean_face_figure_shows_the_mean_image_and_every_labelled_point():
    images = np.stack([np.zeros((96, 96), np.uint8), np.full((96, 96), 200, np.uint8)])
    _, kp = faces(2)
    kp[1, 10:] = np.nan
    fig = viz.mean_face_figure(images, kp)
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.images[0].get_array(), 100.0)
    pts = scatter_points(ax)
    # scatter of all rows (15 + 5 labelled points) plus the 15 mean positions
    assert sum(len(o) for _, o in pts) == 20 + 15


def test_keypoint_frame_is_long_and_drops_missing_values():
    _, kp = faces(3)
    kp[0, :4] = np.nan
    df = viz.keypoint_frame(kp)
    assert len(df) == 90 - 4
    assert set(df["axis"]) == {"x", "y"}
    assert set(df["side"]) == {"left", "right", "centre"}
    first = df[(df.keypoint == "left_eye_center") & (df.axis == "x")]
    assert first["value"].tolist() == pytest.approx(kp[1:, 0].tolist())


def test_distribution_correlation_intensity_and_missing_figures_build():
    images, kp = faces(40)
    kp[::2, 4:20] = np.nan
    fig = viz.keypoint_distributions(kp)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(KEYPOINT_NAMES)
    fig = viz.correlation_heatmap(kp)
    assert len(fig.axes[0].get_xticklabels()) == 30
    fig = viz.intensity_figure(images)
    assert len(fig.axes) == 3
    fig = viz.missing_heatmap(kp)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array()[:, 2], [0, 1] * 20)


def test_keypoint_outliers_finds_the_displaced_point():
    _, kp = faces(50)
    kp[:] = 48 + RNG.normal(0, 1, size=kp.shape)
    kp[17, 20:22] = [10, 10]  # nose tip of row 17 far away
    kp[3, :] = np.nan
    table = viz.keypoint_outliers(kp, n=3)
    assert table.loc[0, "index"] == 17
    assert table.loc[0, "keypoint"] == "nose_tip"
    assert table.loc[0, "distance_px"] > 40
    assert 3 not in table["index"].tolist()


def test_schematic_face_needs_all_keypoints_and_draws_lines():
    _, kp = faces(1)
    fig, ax = plt.subplots()
    viz.schematic_face(ax, kp[0])
    assert len(ax.lines) >= 5 and len(ax.patches) >= 5
    kp[0, 0] = np.nan
    with pytest.raises(ValueError, match="all 15"):
        viz.schematic_face(ax, kp[0])
