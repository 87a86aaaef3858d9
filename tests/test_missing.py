"""Missing-label helpers: hand-computed examples with NaN, and properties."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fkp_helpers import missing
from fkp_helpers.data import KEYPOINT_NAMES

NAN = np.nan


def row(**points):
    """A (30,) row with the named keypoints set to (x, y) and every other value NaN."""
    out = np.full(30, NAN, np.float32)
    for name, (x, y) in points.items():
        k = KEYPOINT_NAMES.index(name)
        out[2 * k : 2 * k + 2] = x, y
    return out


def full_row(value):
    return np.full(30, value, np.float32)


CORE_ROW = row(
    left_eye_center=(66, 37),
    right_eye_center=(30, 38),
    nose_tip=(48, 62),
    mouth_center_bottom_lip=(48, 79),
)


@pytest.fixture
def kp():
    # row 0: complete (all 10.0); row 1: core only; row 2: complete (all 20.0);
    # row 3: nose tip only (a subset of the core); row 4: core + one eyebrow
    r4 = CORE_ROW.copy()
    r4[2 * 6 : 2 * 6 + 2] = 58, 25  # left_eyebrow_inner_end
    return np.stack([full_row(10), CORE_ROW, full_row(20), row(nose_tip=(50, 60)), r4])


def test_complete_rows_are_the_rows_with_all_30_values(kp):
    assert missing.complete_rows(kp).tolist() == [True, False, True, False, False]


def test_core_only_rows_include_subsets_of_the_core_and_exclude_extra_keypoints(kp):
    assert missing.core_only_rows(kp).tolist() == [False, True, False, True, False]


def test_drop_incomplete_keeps_images_aligned_with_their_rows(kp):
    images = np.arange(5)[:, None, None] * np.ones((5, 96, 96), np.uint8)
    imgs, kept = missing.drop_incomplete(images, kp)
    assert imgs[:, 0, 0].tolist() == [0, 2]
    assert kept[:, 0].tolist() == [10, 20]


def test_drop_incomplete_rejects_mismatched_lengths(kp):
    with pytest.raises(ValueError, match="4 images for 5"):
        missing.drop_incomplete(np.zeros((4, 96, 96)), kp)


def test_forward_fill_copies_each_missing_value_from_the_row_above(kp):
    filled = missing.forward_fill(kp)
    assert filled.dtype == np.float32 and filled.shape == (5, 30)
    eyebrow_outer_x = 2 * KEYPOINT_NAMES.index("left_eyebrow_outer_end")
    # Column by column: row 1 takes row 0's value, rows 3 and 4 take row 2's.
    assert filled[:, eyebrow_outer_x].tolist() == [10, 10, 20, 20, 20]
    # Labelled values are never touched.
    assert filled[1, 0] == 66 and filled[3, 20] == 50


def test_forward_fill_back_fills_leading_nans_and_matches_pandas():
    kp = np.stack([CORE_ROW, full_row(7), CORE_ROW])
    filled = missing.forward_fill(kp)
    eyebrow_x = 2 * KEYPOINT_NAMES.index("right_eyebrow_outer_end")
    assert filled[:, eyebrow_x].tolist() == [7, 7, 7]
    expected = pd.DataFrame(kp).ffill().bfill().to_numpy(np.float32)
    np.testing.assert_array_equal(filled, expected)


def test_mean_impute_uses_the_column_mean_of_labelled_rows(kp):
    filled = missing.mean_impute(kp)
    eyebrow_outer_x = 2 * KEYPOINT_NAMES.index("left_eyebrow_outer_end")
    # Only rows 0 (10) and 2 (20) carry that column: its mean is 15.
    assert filled[:, eyebrow_outer_x].tolist() == [10, 15, 20, 15, 15]
    # nose_tip_x is labelled everywhere: unchanged.
    assert filled[:, 20].tolist() == [10, 48, 20, 50, 48]


def test_mean_impute_with_given_means_never_looks_at_the_rows():
    kp = np.stack([CORE_ROW])
    means = np.arange(30, dtype=np.float32)
    filled = missing.mean_impute(kp, means)
    k = KEYPOINT_NAMES.index("mouth_left_corner")
    assert filled[0, 2 * k : 2 * k + 2].tolist() == [2 * k, 2 * k + 1]
    assert filled[0, 0] == 66


def test_mean_impute_names_a_column_with_no_label():
    with pytest.raises(ValueError, match="left_eye_inner_corner_x"):
        missing.mean_impute(np.stack([CORE_ROW, CORE_ROW]))


def test_label_mask_is_one_where_labelled(kp):
    mask = missing.label_mask(kp)
    assert mask.dtype == np.float32
    assert mask.sum(axis=1).tolist() == [30, 8, 30, 2, 10]
    assert set(np.unique(mask)) <= {0.0, 1.0}


def test_missing_summary_counts_per_keypoint(kp):
    s = missing.missing_summary(kp)
    assert list(s.index) == list(KEYPOINT_NAMES)
    assert s.loc["nose_tip", "labelled"] == 5 and s.loc["nose_tip", "missing"] == 0
    assert s.loc["left_eye_center", "labelled"] == 4
    assert s.loc["left_eyebrow_inner_end", "labelled"] == 3
    assert s.loc["mouth_left_corner", "fraction"] == pytest.approx(2 / 5)


def test_label_patterns_ranks_the_two_populations(kp):
    p = missing.label_patterns(np.concatenate([kp, [CORE_ROW]]))
    # most frequent first; ties broken by more keypoints: complete, then core-only, then singletons
    assert p["rows"].tolist() == [2, 2, 1, 1]
    assert p["n_keypoints"].tolist()[:2] == [15, 4]
    assert p.loc[0, "missing"] == ""
    assert "nose_tip" not in p.loc[1, "missing"] and "mouth_left_corner" in p.loc[1, "missing"]
    assert p["rows"].sum() == 6
    assert p["fraction"].sum() == pytest.approx(1.0)


def test_imputation_error_measures_distance_of_hidden_points():
    truth = np.stack([full_row(10)])
    filled = truth.copy()
    filled[0, 0:2] = [13, 14]  # keypoint 0 off by (3, 4): 5 px
    hidden = np.zeros((1, 15), bool)
    hidden[0, [0, 1]] = True
    rmse, dist = missing.imputation_error(truth, filled, hidden)
    assert dist.tolist() == [5.0, 0.0]
    assert rmse == pytest.approx(np.sqrt((9 + 16) / 4))


def test_compare_imputations_ranks_fills_by_their_distance_to_the_truth():
    truth = np.stack([full_row(10), full_row(20)])
    hidden = np.zeros((2, 15), bool)
    hidden[:, 3] = True
    near, far = truth.copy(), truth.copy()
    near[:, 6:8] += [3, 4]  # 5 px off
    far[:, 6:8] += [6, 8]  # 10 px off
    table = missing.compare_imputations(truth, hidden, {"near": near, "far": far})
    assert list(table.index) == ["near", "far"]
    assert table.loc["near", "median (px)"] == pytest.approx(5.0)
    assert table.loc["far", "90th percentile (px)"] == pytest.approx(10.0)
    assert table.loc["far", "RMSE (px)"] == pytest.approx(np.sqrt((36 + 64) / 2))


def test_apply_strategy_dispatches_and_mask_keeps_nans(kp):
    images = np.zeros((5, 96, 96), np.uint8)
    imgs, k = missing.apply_strategy("drop", images, kp)
    assert len(imgs) == len(k) == 2
    _, k = missing.apply_strategy("ffill", images, kp)
    np.testing.assert_array_equal(k, missing.forward_fill(kp))
    _, k = missing.apply_strategy("mean", images, kp)
    assert not np.isnan(k).any()
    imgs, k = missing.apply_strategy("mask", images, kp)
    assert imgs is images and np.isnan(k).sum() == np.isnan(kp).sum()


def test_apply_strategy_separate_points_to_the_training_code(kp):
    with pytest.raises(ValueError, match="chapter 5"):
        missing.apply_strategy("separate", np.zeros((5, 96, 96)), kp)


def test_apply_strategy_rejects_unknown_names(kp):
    with pytest.raises(ValueError, match="drop, ffill, mean, mask, separate"):
        missing.apply_strategy("median", np.zeros((5, 96, 96)), kp)


def test_every_named_strategy_is_handled(kp):
    for name in missing.STRATEGIES:
        if name != "separate":
            missing.apply_strategy(name, np.zeros((5, 96, 96)), kp)


# Property tests: rows where x and y are missing together, like Kaggle's.
pair_masks = arrays(bool, st.tuples(st.integers(1, 12), st.just(15)))
values = st.floats(0, 95.5, width=32)


def _draw_rows(mask, data):
    """Keypoint rows drawn by hypothesis, NaN where ``mask`` (N, 15) says a keypoint is missing."""
    kp = data.draw(arrays(np.float32, (mask.shape[0], 30), elements=values))
    kp[np.repeat(~mask, 2, axis=1)] = np.nan
    return kp


@settings(max_examples=60, deadline=None)
@given(mask=pair_masks, data=st.data())
def test_fills_leave_labels_alone_and_leave_no_nan_where_the_column_has_a_value(mask, data):
    kp = _draw_rows(mask, data)
    lab = ~np.isnan(kp)
    has_value = lab.any(axis=0)
    filled = missing.forward_fill(kp)
    np.testing.assert_array_equal(filled[lab], kp[lab])
    assert not np.isnan(filled[:, has_value]).any()
    assert np.isnan(filled[:, ~has_value]).all()
    if has_value.all():
        imputed = missing.mean_impute(kp)
        np.testing.assert_array_equal(imputed[lab], kp[lab])
        assert not np.isnan(imputed).any()
    # complete and core-only never overlap; the mask counts the labels
    assert not (missing.complete_rows(kp) & missing.core_only_rows(kp)).any()
    assert missing.label_mask(kp).sum() == lab.sum()
    assert missing.missing_summary(kp)["labelled"].sum() * 2 == lab.sum()


@settings(max_examples=60, deadline=None)
@given(mask=pair_masks, data=st.data())
def test_pseudo_labels_fill_exactly_the_missing_values_from_the_predictions(mask, data):
    kp = _draw_rows(mask, data)
    pred = data.draw(arrays(np.float32, kp.shape, elements=values))
    before = kp.copy()
    filled = missing.fill_from_predictions(kp, pred)
    lab = ~np.isnan(kp)
    np.testing.assert_array_equal(filled[lab], kp[lab])  # labels kept as given
    np.testing.assert_array_equal(filled[~lab], pred[~lab])  # gaps from the network
    assert not np.isnan(filled).any() and filled.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(kp), np.isnan(before))  # the input is not modified


def test_pseudo_labels_refuse_a_shape_mismatch_and_a_non_finite_prediction_they_would_use(kp):
    with pytest.raises(ValueError, match=r"predictions \(5, 28\) for keypoints \(5, 30\)"):
        missing.fill_from_predictions(kp, np.zeros((5, 28), np.float32))
    pred = np.full(kp.shape, 50.0, np.float32)
    pred[0, 0] = np.nan  # row 0 is complete: this prediction is never used
    assert not np.isnan(missing.fill_from_predictions(kp, pred)).any()
    pred[1, 4] = np.inf  # row 1 lacks keypoint 2: this one would be
    with pytest.raises(ValueError, match="not finite"):
        missing.fill_from_predictions(kp, pred)
