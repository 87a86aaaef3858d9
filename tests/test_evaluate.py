"""Metrics against hand-computed values, pose proxies, and Kaggle's submission scoring."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fkp_helpers import cli, data, evaluate

NAN = np.nan


def _blank(n):
    return np.full((n, 30), NAN)


@pytest.fixture
def two_faces():
    """Face 0: left eye centre labelled at (10, 20), predicted (13, 24): squared errors 9, 16.
    Face 1: left eye centre labelled at (50, 50), predicted (50, 52): squared errors 0, 4.
    Every other coordinate is unlabelled and predicted absurdly (1000)."""
    y = _blank(2)
    y[0, :2] = [10, 20]
    y[1, :2] = [50, 50]
    p = np.full((2, 30), 1000.0)
    p[0, :2] = [13, 24]
    p[1, :2] = [50, 52]
    return y, p


def test_mse_and_rmse_use_only_labelled_coordinates(two_faces):
    y, p = two_faces
    assert evaluate.mse(y, p) == pytest.approx((9 + 16 + 0 + 4) / 4)
    assert evaluate.rmse(y, p) == pytest.approx(math.sqrt(7.25))


def test_per_keypoint_and_per_face_errors_by_hand(two_faces):
    y, p = two_faces
    per_kp = evaluate.per_keypoint_rmse(y, p)
    assert per_kp["left_eye_center"] == pytest.approx(math.sqrt(7.25))
    assert per_kp.drop("left_eye_center").isna().all()
    np.testing.assert_allclose(evaluate.face_rmse(y, p), [math.sqrt(12.5), math.sqrt(2)])
    d = evaluate.point_errors(y, p)
    np.testing.assert_allclose(d[:, 0], [5.0, 2.0])
    assert np.isnan(d[:, 1:]).all()


def test_a_face_without_labels_has_nan_error_not_zero():
    y = _blank(1)
    assert np.isnan(evaluate.face_rmse(y, np.zeros((1, 30))))[0]
    assert np.isnan(evaluate.rmse(y, np.zeros((1, 30))))


def _face(eye_left=(68, 38), eye_right=(28, 38), nose=(48, 60), lip=(48, 80)):
    k = _blank(1)[0]
    k[0:2], k[2:4], k[20:22], k[28:30] = eye_left, eye_right, nose, lip
    return k


def test_population_tells_core_rows_from_complete_rows():
    core = _face()
    full = np.arange(30, dtype=float) + 10
    other = core.copy()
    other[28:30] = NAN  # lost the bottom lip
    pop = evaluate.population(np.stack([core, full, other]))
    assert list(pop) == ["4 keypoints", "15 keypoints", "other"]
    assert list(evaluate.n_labelled(np.stack([core, full, other]))) == [4, 15, 3]


def test_normalised_error_divides_by_the_eye_distance_and_pck_counts_within():
    y = _face()[None]  # eyes 40 px apart
    p = y.copy()
    p[0, 20] += 2.0  # nose 2 px off: 0.05 eye distances
    p[0, 28] += 8.0  # lip 8 px off: 0.2 eye distances
    assert evaluate.normaliser_distance(y)[0] == pytest.approx(40.0)
    ne = evaluate.normalised_errors(y, p)[0]
    assert ne[10] == pytest.approx(0.05) and ne[14] == pytest.approx(0.2) and ne[0] == 0
    assert np.isnan(ne[2])  # unlabelled keypoint
    assert evaluate.nme(y, p) == pytest.approx((0 + 0 + 0.05 + 0.2) / 4)
    assert evaluate.pck(y, p, (0.01, 0.05, 0.1, 0.2)) == {
        0.01: 0.5,
        0.05: 0.75,
        0.1: 0.75,
        0.2: 1.0,
    }


def test_evaluation_table_starts_with_the_mean_shape_baseline():
    y = np.stack([_face(), _face(nose=(50, 62))])
    y[1, 4:20] = np.arange(16) + 30  # second face: all 15 keypoints
    y[1, 22:28] = np.arange(6) + 60
    train_kp = np.stack([y[1] - 1.0, y[1] + 3.0])  # the mean shape has every keypoint
    good = y + 1.0
    table = evaluate.evaluation_table(y, {"model": good}, train_keypoints=train_kp)
    assert list(table.index) == ["mean shape", "model"]
    assert table.loc["model", "RMSE (px)"] == pytest.approx(1.0)
    assert table.loc["model", "MSE (px²)"] == pytest.approx(1.0)
    assert table.loc["model", "RMSE, 4 keypoints rows (px)"] == pytest.approx(1.0)
    assert table.loc["model", "RMSE, 15 keypoints rows (px)"] == pytest.approx(1.0)
    assert table.loc["model", "PCK@0.05"] == 1.0  # sqrt(2) px < 2 px
    mean = evaluate.mean_shape_predictions(train_kp, 2)
    assert table.loc["mean shape", "RMSE (px)"] == pytest.approx(evaluate.rmse(y, mean))
    per_kp = evaluate.per_keypoint_table(y, {"model": good}, train_keypoints=train_kp)
    assert list(per_kp.columns) == ["mean shape", "model", "n"]
    assert per_kp.loc["nose_tip", "n"] == 2 and per_kp.loc["left_eye_inner_corner", "n"] == 1


def test_pose_features_of_a_frontal_a_turned_and_a_tilted_face():
    frontal = _face()
    turned = _face(nose=(58, 60))  # 10 px towards the subject's left eye: 0.25 eye distances
    tilted = _face(eye_left=(68, 78), eye_right=(28, 38))  # left eye lower in the image
    f = evaluate.pose_features(np.stack([frontal, turned, tilted]))
    assert f["yaw"].tolist()[:2] == pytest.approx([0.0, 0.25])
    assert f["tilt_deg"].tolist() == pytest.approx([0.0, 0.0, -45.0])  # counter-clockwise positive
    assert f["iod_px"].tolist() == pytest.approx([40, 40, 40 * math.sqrt(2)])


def test_binned_error_has_equal_count_bins_and_their_means():
    feature = np.arange(10.0)
    errors = np.r_[np.ones(5), 3 * np.ones(5)]
    t = evaluate.binned_error(feature, errors, bins=2)
    assert t["n"].tolist() == [5, 5]
    assert t["mean"].tolist() == [1.0, 3.0]
    t3 = evaluate.binned_error(np.r_[feature, NAN], np.r_[errors, 1.0], bins=[0, 4.5, 9])
    assert t3["n"].tolist() == [5, 5]


# ---------------------------------------------------------------------------------------------
# Submissions


def _labels(n=12, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(10, 86, (n, 30))
    y[n // 2 :, 4:20] = NAN  # half the faces: 4 core keypoints only
    y[n // 2 :, 22:28] = NAN
    return y


def test_submission_round_trip_scores_the_direct_rmse(tmp_path):
    y = _labels()
    pred = y + np.random.default_rng(1).normal(0, 2, y.shape)
    pred = np.clip(np.nan_to_num(pred, nan=48.0), 0, 96)
    lookup = evaluate.make_lookup(y)
    assert len(lookup) == np.isfinite(y).sum()
    data.write_submission(pred, lookup, tmp_path / "submission.csv")
    solution = evaluate.solution_from_keypoints(y, lookup)
    solution.to_csv(tmp_path / "solution.csv", index=False)
    score = evaluate.score_submission_files(tmp_path / "submission.csv", tmp_path / "solution.csv")
    assert score == pytest.approx(evaluate.rmse(y, pred), rel=1e-6)
    assert (
        cli.main(["score", str(tmp_path / "submission.csv"), str(tmp_path / "solution.csv")]) == 0
    )


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0, 96, allow_nan=False), min_size=1, max_size=40),
    st.floats(-5, 5, allow_nan=False),
    st.randoms(use_true_random=False),
)
def test_score_is_rmse_whatever_the_row_order(values, offset, rnd):
    sol = pd.DataFrame({"RowId": np.arange(1, len(values) + 1), "Location": values})
    sub = sol.assign(Location=sol["Location"] + offset)
    order = list(range(len(sub)))
    rnd.shuffle(order)
    score = evaluate.score_submission(sub.iloc[order], sol)
    assert score == pytest.approx(abs(offset), abs=1e-9)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def solution(tmp_path):
    return _write(tmp_path / "solution.csv", "RowId,Location\n1,10.0\n2,20.0\n3,30.0\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RowId,Location\n1,10\n2,20\n", "1 RowId(s) of solution.csv are missing (3)"),
        ("RowId,Location\n1,10\n2,20\n3,30\n4,40\n", "1 RowId(s) are not in solution.csv (4)"),
        ("RowId,Location\n1,10\n2,20\n2,20\n3,30\n", "row 3, column RowId: RowId 2 repeats"),
        ("RowId,Location\n1,10\n2,abc\n3,30\n", "row 2, column Location: 'abc' is not a number"),
        ("RowId,Location\n1,10\n2,\n3,30\n", "row 2, column Location: is empty"),
        ("RowId,Location\n1,10\n2.5,20\n3,30\n", "row 2, column RowId: '2.5' is not an integer"),
        ("RowId,Value\n1,10\n2,20\n3,30\n", "missing column(s) Location"),
        ("RowId,Location,Extra\n1,10,a\n2,20,b\n3,30,c\n", "unexpected column(s) Extra"),
        ("", "the file is empty"),
        ("RowId,Location\n", "has a header but no rows"),
    ],
)
def test_bad_submissions_are_named_clearly(tmp_path, solution, capsys, text, expected):
    sub = _write(tmp_path / "submission.csv", text)
    with pytest.raises(data.FKPDataError) as err:
        evaluate.score_submission_files(sub, solution)
    assert expected in str(err.value)
    assert str(err.value).startswith("submission.csv")
    assert cli.main(["score", str(sub), str(solution)]) == 2
    stderr = capsys.readouterr().err
    assert expected in stderr and "Traceback" not in stderr


def test_missing_files_give_a_clear_error(tmp_path, solution, capsys):
    with pytest.raises(FileNotFoundError, match="nowhere.csv: no such file"):
        evaluate.score_submission_files(tmp_path / "nowhere.csv", solution)
    assert cli.main(["score", str(tmp_path / "nowhere.csv"), str(solution)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_solution_may_carry_kaggles_usage_column(tmp_path):
    sol = _write(tmp_path / "sol.csv", "RowId,Location,Usage\n1,10,Public\n2,20,Private\n")
    sub = _write(tmp_path / "sub.csv", "RowId,Location\n2,23\n1,14\n")
    assert evaluate.score_submission_files(sub, sol) == pytest.approx(math.sqrt((16 + 9) / 2))


def test_check_submission_format_against_the_sample(tmp_path):
    sample = pd.DataFrame({"RowId": [1, 2, 3], "Location": [0, 0, 0]})
    ok = pd.DataFrame({"RowId": [3, 1, 2], "Location": [5.0, 6.0, 7.0]})
    assert len(evaluate.check_submission_format(ok, sample)) == 3
    with pytest.raises(data.FKPDataError, match="1 RowId\\(s\\) of SampleSubmission.csv"):
        evaluate.check_submission_format(ok.iloc[:2], sample)
    with pytest.raises(data.FKPDataError, match="outside the 96x96 frame"):
        evaluate.check_submission_format(ok.assign(Location=[5.0, 97.0, 7.0]), sample)


# ---------------------------------------------------------------------------------------------
# How precise are the labels: near-identical faces laid over each other by their pixels


@pytest.fixture(scope="module")
def faces():
    from fkp_helpers import synthetic

    images, kp, _ = synthetic.make_faces(6, seed=3)
    return images, kp.astype(np.float64)


def _similarity(scale, angle_deg, tx, ty):
    """A 2x3 similarity about the frame's centre (pixels)."""
    from fkp_helpers import keypoints as K

    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.full(2, K.CENTRE)
    return np.concatenate([r, (c - r @ c + [tx, ty])[:, None]], axis=1)


def _moved(image, keypoints, to_fixed):
    """The face seen through ``to_fixed`` (moved face's pixels -> the original's), and its
    exactly carried labels."""
    from fkp_helpers import augment
    from fkp_helpers import keypoints as K

    moved = augment.warp(image[None].astype(np.float32), to_fixed[None])[0]
    return np.round(moved).astype(np.uint8), K.apply_affine(keypoints, K.invert_affine(to_fixed))


@settings(max_examples=12, deadline=None)
@given(
    scale=st.floats(0.94, 1.06),
    angle=st.floats(-6, 6),
    tx=st.floats(-3, 3),
    ty=st.floats(-3, 3),
    which=st.integers(0, 5),
)
def test_registration_recovers_a_known_similarity_from_the_pixels(
    faces, scale, angle, tx, ty, which
):
    from fkp_helpers import keypoints as K

    images, kp = faces
    to_fixed = _similarity(scale, angle, tx, ty)
    moving, _ = _moved(images[which], kp[which], to_fixed)
    # start from no motion at all: the pixels alone must find it
    matrix, corr = evaluate.register_faces(moving, images[which], np.eye(2, 3))
    assert corr > 0.98
    found = K.apply_affine(kp[which], K.invert_affine(matrix))  # fixed face's points, carried
    exact = K.apply_affine(kp[which], K.invert_affine(K.invert_affine(to_fixed)))
    assert np.abs(found - exact).max() < 0.15  # pixels


def test_label_disagreement_is_zero_for_exact_labels_and_finds_a_moved_label(faces):
    images, kp = faces
    moving, carried = _moved(images[2], kp[2], _similarity(1.03, 4.0, 1.5, -1.0))
    imgs = np.stack([images[2], moving, images[4]])
    labels = np.stack([kp[2], carried, kp[4]])
    corr, diff = evaluate.label_disagreement(imgs, labels, [[1, 0]])
    assert corr.shape == (1,) and diff.shape == (1, 30) and corr[0] > 0.98
    assert np.abs(diff).max() < 0.15
    nose = 2 * list(evaluate.K.KEYPOINT_NAMES).index("nose_tip")
    shifted_only, shifted_labels = _moved(images[2], kp[2], _similarity(1.0, 0.0, 2.0, 1.0))
    shifted_labels[nose] += 1.0  # the nose tip labelled 1 px further right
    labels[1] = shifted_labels
    imgs[1] = shifted_only
    _, diff = evaluate.label_disagreement(imgs, labels, [[1, 0]])
    assert diff[0, nose] == pytest.approx(1.0, abs=0.15)
    others = np.delete(diff[0], nose)
    assert np.abs(others).max() < 0.15
    with pytest.raises(ValueError, match="outside 0..2"):
        evaluate.label_disagreement(imgs, labels, [[0, 3]])


def test_near_identical_pairs_finds_a_moved_copy_and_skips_faces_without_eyes(faces):
    images, kp = faces
    moving, carried = _moved(images[1], kp[1], _similarity(1.0, 0.0, 1.0, 0.0))
    imgs = np.concatenate([images, moving[None], images[3][None]])
    labels = np.concatenate([kp, carried[None], kp[3][None]])
    labels[-1, :4] = np.nan  # the copy of face 3 has no eye centres: never paired
    pairs = evaluate.near_identical_pairs(imgs, labels)
    assert pairs.tolist() == [[1, 6]]
    assert evaluate.near_identical_pairs(imgs, labels, threshold=1.01).shape == (0, 2)
    with pytest.raises(ValueError, match="8 images but 7 rows"):
        evaluate.near_identical_pairs(imgs, labels[:7])


def test_label_noise_and_its_floor_follow_their_formulas():
    diff = np.zeros((3, 30))
    diff[:, 0::2] = 1.0  # every x off by 1 px, every y exact
    diff[:, 2:4] = np.nan  # right eye centre never labelled by a pair
    diff[2] = 5.0  # a pair whose faces did not lay over well: left out
    noise = evaluate.label_noise(diff, np.array([0.99, 0.985, 0.5]))
    assert list(noise.index) == list(evaluate.K.KEYPOINT_NAMES)
    assert noise.loc["left_eye_center", "label noise"] == pytest.approx(0.5)  # sqrt(0.5 / 2)
    assert np.isnan(noise.loc["right_eye_center", "label noise"])
    assert noise["pairs"].tolist() == [2, 0, *[2] * 13]
    y = np.full((4, 30), np.nan)
    y[:, :4] = 40.0  # both eye centres on 4 faces
    y[:2, 20:22] = 50.0  # the nose tip (keypoint 10) on 2
    sigma = noise["label noise"].copy()
    sigma["nose_tip"] = 2.0
    floor = evaluate.noise_floor(noise.assign(**{"label noise": sigma}), y)
    assert floor == pytest.approx(np.sqrt((4 * 0.5**2 + 2 * 2.0**2) / 6))  # right eye: no estimate
    with pytest.raises(ValueError, match="no labelled keypoint"):
        evaluate.noise_floor(noise, np.full((2, 30), np.nan))
