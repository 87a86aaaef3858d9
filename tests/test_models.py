"""The masked loss, the soft-argmax, the networks, saving and loading."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from fkp_helpers import models, training
from fkp_helpers.data import FLIP_PAIRS, N_KEYPOINTS


def test_masked_mse_equals_hand_computed_value_with_nans():
    y_true = np.array([[1.0, 2.0, np.nan, np.nan], [0.0, np.nan, 3.0, 1.0]], np.float32)
    y_pred = np.array([[2.0, 4.0, 100.0, -7.0], [1.0, 50.0, 3.0, 4.0]], np.float32)
    # labelled errors: 1, 2 | 1, 0, 3 -> squares 1 + 4 + 1 + 0 + 9 = 15 over 5 labels
    per_sample = models.masked_mse(y_true, y_pred)
    assert float(keras.ops.mean(per_sample)) == pytest.approx(15 / 5)
    metric = models.MaskedRMSE()
    metric.update_state(y_true[:1], y_pred[:1])
    metric.update_state(y_true[1:], y_pred[1:])
    assert float(metric.result()) == pytest.approx(np.sqrt(3.0))


def test_masked_mse_of_a_batch_without_labels_is_zero_not_nan():
    y_true = np.full((2, 4), np.nan, np.float32)
    assert float(keras.ops.mean(models.masked_mse(y_true, np.ones((2, 4), np.float32)))) == 0.0


def test_gradients_are_zero_for_missing_keypoints():
    y_true = tf.constant([[10.0, np.nan, 5.0, np.nan]])
    y_pred = tf.Variable([[12.0, 30.0, 4.0, -3.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(models.masked_mse(y_true, y_pred))
    g = tape.gradient(loss, y_pred).numpy()[0]
    assert np.all(np.isfinite(g))
    assert g[1] == 0 and g[3] == 0
    assert g[0] == pytest.approx(2 * 2 / 2) and g[2] == pytest.approx(2 * -1 / 2)


@pytest.mark.parametrize("row,col", [(0, 0), (5, 17), (23, 23), (11, 2)])
def test_soft_argmax_returns_the_exact_peak_location(row, col):
    heat = np.full((1, 24, 24, 2), -1e4, np.float32)
    heat[0, row, col, 0] = 0.0
    heat[0, 23 - row, 23 - col, 1] = 0.0
    out = models.SoftArgmax2D(stride=4)(heat).numpy()[0]
    # cell (i, j) of a stride-4 map is centred on input pixel 4j + 1.5
    np.testing.assert_allclose(out[:2], [4 * col + 1.5, 4 * row + 1.5], atol=1e-4)
    np.testing.assert_allclose(out[2:], [4 * (23 - col) + 1.5, 4 * (23 - row) + 1.5], atol=1e-4)


def test_soft_argmax_centre_of_a_flat_map_is_the_image_centre():
    out = models.SoftArgmax2D(stride=4)(np.zeros((1, 24, 24, 1), np.float32)).numpy()[0]
    np.testing.assert_allclose(out, [47.5, 47.5], atol=1e-4)


@pytest.mark.parametrize(
    "build", [models.baseline_cnn, lambda: models.keypoint_resnet((16, 16, 16, 16))]
)
def test_networks_map_images_to_30_pixel_coordinates(build):
    net = build()
    out = net.predict(np.random.default_rng(0).random((3, 96, 96, 1), np.float32), verbose=0)
    assert out.shape == (3, 2 * N_KEYPOINTS)
    assert np.all(np.isfinite(out))


def test_save_and_load_round_trip_predictions_exactly(tmp_path):
    net = models.keypoint_resnet((16, 16, 32, 32))
    x = np.random.default_rng(1).random((4, 96, 96, 1), np.float32)
    path = tmp_path / "model.keras"
    net.save(path)
    again = models.load_model(path)
    np.testing.assert_array_equal(net.predict(x, verbose=0), again.predict(x, verbose=0))


def test_flip_averaging_of_a_mirror_symmetric_face_gives_symmetric_points():
    rng = np.random.default_rng(3)
    half = rng.integers(0, 256, (2, 96, 48), dtype=np.uint8)
    img = np.concatenate([half, half[:, :, ::-1]], axis=2)  # mirror-symmetric about x = 47.5
    net = models.keypoint_resnet((16, 16, 16, 16))
    k = training.predict_keypoints(net, img, flip_average=True).reshape(2, N_KEYPOINTS, 2)
    for left, right in FLIP_PAIRS:
        np.testing.assert_allclose(k[:, left, 0], 95 - k[:, right, 0], atol=1e-3)
        np.testing.assert_allclose(k[:, left, 1], k[:, right, 1], atol=1e-3)
    np.testing.assert_allclose(k[:, 10, 0], 47.5, atol=1e-3)  # nose tip on the axis
