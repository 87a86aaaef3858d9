"""fkp_helpers.synthetic: drawn faces in Kaggle's format, exact keypoints, Kaggle's gaps."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from fkp_helpers import data, synthetic

N_FACES = 4000  # for statistics over parameters and keypoints (no drawing: fast)


@pytest.fixture(scope="module")
def faces():
    return synthetic.sample_faces(np.random.default_rng(11), N_FACES)


@pytest.fixture(scope="module")
def medium_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic-medium")
    return synthetic.generate(d, n_train=200, n_test=60, seed=3)


def _flip_keypoints(kp: np.ndarray) -> np.ndarray:
    """Kaggle's flip of (N, 30) keypoints: x -> 95 - x, left and right names swapped."""
    pts = kp.reshape(len(kp), 15, 2)[:, data.FLIP_PERMUTATION].copy()
    pts[..., 0] = data.FLIP_X_CONSTANT - pts[..., 0]
    return pts.reshape(len(kp), 30)


# ---------------------------------------------------------------------------------------------
# Files


def test_same_seed_gives_identical_files_and_another_seed_different_ones(tmp_path):
    a = synthetic.generate(tmp_path / "a", n_train=6, n_test=3, seed=5)
    b = synthetic.generate(tmp_path / "b", n_train=6, n_test=3, seed=5)
    c = synthetic.generate(tmp_path / "c", n_train=6, n_test=3, seed=6)
    for name in (*synthetic.FILES, synthetic.MARKER):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "training.csv").read_bytes() != (c / "training.csv").read_bytes()


def test_files_have_kaggles_layout(synthetic_dir):
    training = (synthetic_dir / "training.csv").read_bytes()
    assert training.split(b"\n", 1)[0].decode() == ",".join(data.TRAINING_COLUMNS)
    assert (synthetic_dir / "test.csv").read_bytes().startswith(b"ImageId,Image\n1,")
    lookup = (synthetic_dir / data.LOOKUP_NAME).read_bytes()
    assert lookup.startswith(b"RowId,ImageId,FeatureName,Location\r\n1,1,left_eye_center_x\r\n")
    sample = (synthetic_dir / data.SAMPLE_SUBMISSION_NAME).read_bytes()
    assert sample.startswith(b"RowId,Location\n1,0\n2,0\n")
    assert "not Kaggle data" in (synthetic_dir / synthetic.MARKER).read_text()


def test_the_set_goes_through_the_ordinary_loaders(synthetic_dir):
    train = data.load_training(synthetic_dir)
    test = data.load_test(synthetic_dir)
    lookup = data.load_lookup(synthetic_dir)
    assert (len(train), len(test)) == (40, 12)
    assert train.source == test.source == data.data_source(synthetic_dir) == "synthetic"
    assert test.image_ids.tolist() == list(range(1, 13))
    assert set(lookup["ImageId"]) == set(test.image_ids)
    sample = data.load_sample_submission(synthetic_dir)
    assert sample["RowId"].tolist() == lookup["RowId"].tolist() and (sample["Location"] == 0).all()


def test_missing_labels_follow_kaggles_structure(medium_dir):
    kp = data.load_training(medium_dir).keypoints
    present = ~np.isnan(kp[:, 0::2])
    core = np.zeros(15, bool)
    core[list(data.CORE_INDICES)] = True
    beyond_core = present[:, ~core].any(axis=1)
    assert 0.65 <= 1 - beyond_core.mean() <= 0.75  # about 70% carry only the core points
    first_core_only = int(np.argmin(beyond_core))
    assert beyond_core[:first_core_only].all() and not beyond_core[first_core_only:].any()
    assert present[:, data.KEYPOINT_NAMES.index("nose_tip")].all()
    complete = present.all(axis=1)
    assert complete[:first_core_only].mean() > 0.8


def test_lookup_asks_all_features_for_a_third_and_core_features_for_the_rest(medium_dir):
    lookup = data.load_lookup(medium_dir)
    asked = lookup.groupby("ImageId")["FeatureName"].agg(list)
    core_cols = [c for c in data.KEYPOINT_COLUMNS if c.rsplit("_", 1)[0] in data.CORE_KEYPOINTS]
    n_all = sum(len(a) == 30 for a in asked)
    assert n_all == 20 and all(a == list(data.KEYPOINT_COLUMNS) for a in asked[:n_all])
    assert all(a == core_cols for a in asked[n_all:]) and len(asked) == 60


def test_solution_holds_the_true_keypoints_inside_the_frame(medium_dir):
    solution = pd.read_csv(medium_dir / "solution.csv")
    lookup = data.load_lookup(medium_dir)
    assert solution["RowId"].tolist() == lookup["RowId"].tolist()
    assert solution["Location"].between(synthetic.MARGIN, 95 - synthetic.MARGIN).all()


# ---------------------------------------------------------------------------------------------
# Geometry and drawing


def test_keypoints_stay_inside_the_frame(faces):
    kp = synthetic.keypoints(faces)
    assert kp.min() >= synthetic.MARGIN and kp.max() <= 95 - synthetic.MARGIN


def test_mean_keypoints_are_close_to_kaggles(faces):
    mean = synthetic.keypoints(faces).reshape(-1, 15, 2).mean(axis=0)
    kaggle = np.array([synthetic.KAGGLE_MEANS[n] for n in data.KEYPOINT_NAMES])
    assert np.abs(mean - kaggle).max() < 1.5


def test_parameter_distribution_is_mirror_symmetric(faces):
    m = synthetic.mirror(faces)
    for name in ("cx", "roll", "yaw", "gaze_u", "light_x", "eye_open_l", "brow_raise_l"):
        a, b = getattr(faces, name), getattr(m, name)
        assert abs(a.mean() - b.mean()) < 4 * a.std() / np.sqrt(len(a)) + 1e-9, name
        assert np.allclose(
            np.quantile(a, [0.05, 0.5, 0.95]),
            np.quantile(b, [0.05, 0.5, 0.95]),
            atol=0.1 * a.std() + 1e-9,
        ), name


def test_a_mirrored_face_is_the_flipped_drawing_with_swapped_names():
    f = synthetic.sample_faces(np.random.default_rng(4), 24)
    noise = np.random.default_rng(5).standard_normal((24, 96, 96), np.float32)
    drawn = synthetic.render_float(f, noise)
    mirrored = synthetic.render_float(synthetic.mirror(f), noise[:, :, ::-1])
    assert np.abs(mirrored - drawn[:, :, ::-1]).max() < 1e-4
    assert np.allclose(
        synthetic.keypoints(synthetic.mirror(f)), _flip_keypoints(synthetic.keypoints(f)), atol=1e-9
    )


def test_pupils_are_drawn_at_the_eye_centre_keypoints():
    f = synthetic.sample_faces(np.random.default_rng(8), 40)
    img = synthetic.render_float(f)  # no noise
    kp = synthetic.keypoints(f).reshape(-1, 15, 2)
    for k in (
        data.KEYPOINT_NAMES.index("left_eye_center"),
        data.KEYPOINT_NAMES.index("right_eye_center"),
    ):
        for i in range(len(f)):
            x, y = np.rint(kp[i, k]).astype(int)
            patch = img[i, y - 2 : y + 3, x - 2 : x + 3]
            dy, dx = np.unravel_index(np.argmin(patch), patch.shape)
            assert np.hypot(x - 2 + dx - kp[i, k, 0], y - 2 + dy - kp[i, k, 1]) < 1.6
            surround = img[i, y - 7 : y + 8, x - 7 : x + 8]
            assert patch.min() < surround.mean() - 0.1


def test_lips_lie_between_the_mouth_keypoints():
    f = synthetic.sample_faces(np.random.default_rng(9), 60)
    img = synthetic.render_float(f)
    kp = synthetic.keypoints(f).reshape(-1, 15, 2)
    top, bottom = kp[:, data.KEYPOINT_NAMES.index("mouth_center_top_lip")], kp[:, -1]
    mid = np.rint((top + bottom) / 2).astype(int)
    chin = np.clip(np.rint(bottom + (bottom - top)), 0, 95).astype(int)
    i = np.arange(len(f))
    darker = img[i, mid[:, 1], mid[:, 0]] < img[i, chin[:, 1], chin[:, 0]]
    assert darker.mean() >= 0.95


def test_make_faces_gives_images_and_complete_keypoints():
    images, kp, f = synthetic.make_faces(5, seed=1)
    assert images.shape == (5, 96, 96) and images.dtype == np.uint8
    assert kp.shape == (5, 30) and kp.dtype == np.float32 and not np.isnan(kp).any()
    assert np.allclose(kp, synthetic.keypoints(f))
    assert images.std() > 10  # drawn, not blank


def test_image_field_matches_plain_python_formatting(kaggle_csv):
    image = np.random.default_rng(0).integers(0, 256, (96, 96), dtype=np.uint8)
    image[0, :4] = [0, 9, 10, 255]
    assert synthetic.image_field(image).decode() == kaggle_csv.image(image)


# ---------------------------------------------------------------------------------------------
# ensure(): atomic creation


def test_ensure_creates_once_and_then_leaves_the_set_alone(tmp_path):
    d = synthetic.ensure(tmp_path / "syn", n_train=5, n_test=2)
    assert synthetic.is_complete(d)
    stamp = (d / "training.csv").stat().st_mtime_ns
    synthetic.ensure(d, n_train=5, n_test=2)
    assert (d / "training.csv").stat().st_mtime_ns == stamp


def test_interrupted_generation_leaves_no_partial_set(tmp_path, monkeypatch):
    real = synthetic.generate

    def half_then_fail(out_dir, **kwargs):
        (out_dir / "training.csv").write_text("left_eye_center_x\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure(tmp_path / "syn", n_train=5, n_test=2)
    assert list(tmp_path.iterdir()) == []  # neither the set nor its temporary directory
    monkeypatch.setattr(synthetic, "generate", real)
    assert synthetic.is_complete(synthetic.ensure(tmp_path / "syn", n_train=5, n_test=2))


def test_an_incomplete_set_is_replaced(tmp_path):
    d = synthetic.ensure(tmp_path / "syn", n_train=5, n_test=2)
    (d / "test.csv").unlink()
    synthetic.ensure(d, n_train=5, n_test=2)
    assert synthetic.is_complete(d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_racing_ensures_leave_one_complete_set(tmp_path):
    d = tmp_path / "syn"
    errors = []

    def run():
        try:
            synthetic.ensure(d, n_train=8, n_test=2)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert synthetic.is_complete(d) and sorted(p.name for p in tmp_path.iterdir()) == ["syn"]
    assert len(data.load_training(d, cache=False)) == 8
