"""The bottom layer: names, the flip, the frame, affine maps, eyes, tilt, mean shape, metric."""

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fkp_helpers import augment
from fkp_helpers import keypoints as K

coords = arrays(np.float64, (3, 30), elements=st.floats(-0.4, 95.4))


def test_names_columns_and_pairs_follow_kaggle():
    assert len(K.KEYPOINT_NAMES) == 15 and K.KEYPOINT_COLUMNS[:2] == (
        "left_eye_center_x",
        "left_eye_center_y",
    )
    assert K.FLIP_PAIRS[0] == (0, 1) and len(K.FLIP_PAIRS) == 6
    assert [K.KEYPOINT_NAMES[i] for i in K.CORE_INDICES] == list(K.CORE_KEYPOINTS)
    assert K.CORE_COLUMNS.tolist() == [0, 1, 2, 3, 20, 21, 28, 29]
    assert K.KAGGLE_MEAN_SHAPE[:2].tolist() == list(K.KAGGLE_MEANS["left_eye_center"])


@given(coords)
def test_flip_is_its_own_inverse_and_swaps_left_and_right(kp):
    f = K.flip_keypoints(kp)
    np.testing.assert_allclose(K.flip_keypoints(f), kp, atol=1e-4)
    # the mirrored face's left eye is the original's right eye, at x -> 95 - x
    np.testing.assert_allclose(f[:, 0], 95 - kp[:, 2], atol=1e-4)
    np.testing.assert_allclose(f[:, 1], kp[:, 3], atol=1e-4)


def test_flip_keeps_the_frame():
    edge = np.full((1, 30), np.nan)
    edge[0, :4] = [-0.5, 10, 95.5, 10]
    assert K.inside_frame(K.flip_keypoints(edge))[0, :2].all()


def test_inside_frame_edges_and_the_label_margin():
    kp = np.full((5, 30), 50.0)
    kp[:, 0] = [-0.5, 95.5, 95.94, -0.51, np.inf]
    assert K.inside_frame(kp)[:, 0].tolist() == [True, True, False, False, False]
    wide = K.inside_frame(kp, margin=K.LABEL_MARGIN)[:, 0]
    assert wide.tolist() == [True, True, True, True, False]
    assert K.LABEL_RANGE == (-1.0, 96.0)


def test_mark_outside_only_touches_the_rows_asked_and_keeps_nan():
    kp = np.full((2, 30), 50.0)
    kp[:, 0] = 96.0  # left eye x off the image on both rows
    kp[:, 5] = np.nan
    out = K.mark_outside(kp, rows=np.array([True, False]))
    assert np.isnan(out[0, :2]).all() and out[1, 0] == 96.0
    assert np.isnan(out[:, 5]).all() and out[0, 2] == 50.0
    assert K.clip_to_frame(kp)[1, 0] == pytest.approx(95.5)


@settings(max_examples=30)
@given(
    coords,
    st.floats(-30, 30),
    st.floats(0.7, 1.4),
    st.floats(-5, 5),
    st.floats(-5, 5),
)
def test_apply_affine_and_its_inverse_round_trip(kp, angle, scale, tx, ty):
    m = augment.affine_matrix(angle, scale, tx, ty)[0]
    back = K.apply_affine(K.apply_affine(kp, m), K.invert_affine(m))
    np.testing.assert_allclose(back, kp, atol=1e-6)
    # a batch of matrices gives the same as one matrix per row
    batch = K.apply_affine(kp, np.repeat(m[None], len(kp), 0))
    np.testing.assert_allclose(batch, K.apply_affine(kp, m), atol=1e-9)


def test_eye_distance_tilt_and_outer_corners_by_hand():
    kp = np.full((2, 30), np.nan)
    kp[0, :4] = [70, 40, 30, 40]  # level eyes 40 px apart
    kp[1, :4] = [60, 30, 30, 60]  # left eye (image right) higher: counter-clockwise on screen
    kp[0, 6:8], kp[0, 10:12] = [78, 40], [22, 40]  # outer corners 56 px apart
    np.testing.assert_allclose(K.eye_distance(kp), [40, np.hypot(30, 30)])
    np.testing.assert_allclose(K.head_tilt_deg(kp), [0, 45])
    assert K.outer_eye_corner_distance(kp)[0] == pytest.approx(56) and np.isnan(
        K.outer_eye_corner_distance(kp)[1]
    )


@settings(max_examples=25)
@given(st.floats(-25, 25))
def test_rotating_a_face_adds_the_angle_to_its_tilt(angle):
    kp = K.KAGGLE_MEAN_SHAPE[None].astype(np.float64)
    m = augment.affine_matrix(angle, 1.0, 0.0, 0.0)[0]
    change = K.head_tilt_deg(K.apply_affine(kp, m)) - K.head_tilt_deg(kp)
    np.testing.assert_allclose(change, angle, atol=1e-6)


def test_mean_shape_and_masked_rmse_skip_missing_labels():
    y = np.array([[1.0, np.nan], [3.0, 4.0]])
    np.testing.assert_allclose(K.mean_shape(y), [2.0, 4.0])
    assert np.isnan(K.mean_shape(np.full((2, 2), np.nan))).all()
    p = np.array([[2.0, 100.0], [3.0, 6.0]])
    assert K.masked_rmse(y, p) == pytest.approx(np.sqrt(5 / 3))
    np.testing.assert_allclose(K.masked_rmse(y, p, axis=0), [np.sqrt(0.5), 2.0])
    assert np.isnan(K.masked_rmse(np.full((1, 2), np.nan), p[:1]))


def test_mean_offset_is_the_mean_signed_error_of_the_labelled_rows():
    y = np.array([[1.0, np.nan, np.nan], [3.0, 4.0, np.nan]])
    p = np.array([[2.0, 100.0, 7.0], [5.0, 3.0, 9.0]])  # wild where unlabelled
    off = K.mean_offset(y, p)
    assert off.dtype == np.float32 and off.shape == (3,)
    # (1 + 2) / 2; the labelled row only (-1); nothing labelled: no offset
    np.testing.assert_allclose(off, [1.5, -1.0, 0.0])


labels_with_gaps = arrays(np.float64, (6, 4), elements=st.one_of(st.floats(0, 95), st.just(np.nan)))


@settings(max_examples=80, deadline=None)
@given(labels_with_gaps, arrays(np.float64, (6, 4), elements=st.floats(-3, 3)), st.floats(-5, 5))
def test_subtracting_the_mean_offset_never_raises_the_rmse(y, noise, shift):
    """A constant ``shift`` added to every prediction is found again (where a column has
    labels), and the predictions minus their offset score at most what they scored before."""
    p = np.nan_to_num(y, nan=48.0) + noise + shift
    off = K.mean_offset(y, p)
    has = ~np.isnan(y).all(axis=0)
    expected = np.array([np.nanmean(p[:, j] - y[:, j]) if has[j] else 0.0 for j in range(4)])
    np.testing.assert_allclose(off, expected, atol=1e-4)
    if has.any():
        assert K.masked_rmse(y, p - off) <= K.masked_rmse(y, p) + 1e-5


def test_per_keypoint_rmse_pools_x_and_y():
    y = np.zeros((1, 30))
    p = np.zeros((1, 30))
    p[0, 0], p[0, 1] = 3.0, 4.0  # left eye centre: errors 3 and 4 px
    r = K.per_keypoint_rmse(y, p)
    assert r["left_eye_center"] == pytest.approx(np.sqrt(12.5)) and r["nose_tip"] == 0.0


def test_validate_keypoints_names_the_problem():
    assert K.validate_keypoints(np.zeros((2, 30))).dtype == np.float32
    with pytest.raises(ValueError, match=r"labels must have shape \(N, 30\)"):
        K.validate_keypoints(np.zeros((2, 29)), "labels")
    with pytest.raises(ValueError, match="row 1 column 3 is infinite"):
        bad = np.zeros((2, 30))
        bad[1, 3] = np.inf
        K.validate_keypoints(bad)


def test_the_bottom_module_imports_only_numpy():
    tree = ast.parse(Path(K.__file__).read_text())
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imported <= {"__future__", "numpy"}, imported


def test_the_package_has_no_import_cycle():
    """Each module's imports of the package, read from the source, form no cycle."""
    pkg = Path(K.__file__).parent
    graph = {}
    for f in pkg.glob("*.py"):
        deps = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("fkp_helpers"):
                if n.module == "fkp_helpers":
                    deps |= {a.name for a in n.names}
                else:
                    deps.add(n.module.split(".")[1])
        graph[f.stem] = deps - {f.stem}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join([*path, m])}"
        state[m] = "open"
        for d in graph.get(m, ()):
            visit(d, [*path, m])
        state[m] = "done"

    for m in graph:
        visit(m, [])


def test_a_missing_prediction_is_an_error_not_a_skipped_coordinate():
    """NaN labels are skipped; a NaN or infinite prediction where a label is given is not."""
    y = np.full((3, 30), 40.0)
    y[1, 4:6] = np.nan  # unlabelled: a NaN prediction there is fine
    pred = y + 1.0
    pred[1, 4:6] = np.nan
    assert K.masked_rmse(y, pred) == pytest.approx(1.0)
    pred[2, 3] = np.nan
    for metric in (K.masked_rmse, K.mean_offset, K.per_keypoint_rmse):
        with pytest.raises(ValueError, match=r"row 2, column right_eye_center_y"):
            metric(y, pred)
    pred[2, 3] = np.inf
    with pytest.raises(ValueError, match="1 prediction"):
        K.masked_rmse(y, pred)
