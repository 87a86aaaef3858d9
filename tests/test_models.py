"""The masked loss, the soft-argmax, the networks, saving and loading."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ---------------------------------------------------------------------------------------------
# The heatmap loss


def gaussian_logits(points, sigma=models.HEATMAP_SIGMA, size=24, stride=4):
    """Logits ``(1, size, size, K)`` whose softmax is heatmap_kl's target for ``points`` (K, 2),
    written with NumPy, independently of the package's grid."""
    centres = stride * np.arange(size) + (stride - 1) / 2
    gx, gy = np.meshgrid(centres, centres)  # gx[i, j] = x of cell (i, j)
    maps = [-((gx - x) ** 2 + (gy - y) ** 2) / (2 * sigma**2) for x, y in points]
    return np.stack(maps, axis=-1)[None].astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(st.floats(12.5, 82.5), st.floats(12.5, 82.5))
def test_the_heatmap_target_is_centred_on_its_label(x, y):
    # the soft-argmax of the target reads back the label, 13 px or more from the frame's edges
    # (-0.5 and 95.5)
    # (nearer, the edge cuts the Gaussian: its docstring says by how much)
    logits = gaussian_logits([(x, y)])
    out = models.SoftArgmax2D(stride=4)(logits).numpy()[0]
    np.testing.assert_allclose(out, [x, y], atol=0.01)
    assert float(models.heatmap_kl(np.array([[x, y]], np.float32), logits)) < 1e-5


def test_heatmap_kl_grows_as_the_heatmap_moves_off_the_label():
    label = np.array([[40.0, 52.0]], np.float32)
    kls = [
        float(models.heatmap_kl(label, gaussian_logits([(40.0 + shift, 52.0)])))
        for shift in (0.0, 2.0, 4.0, 8.0)
    ]
    assert kls[0] < 1e-5 and kls[1] > 0.01
    assert kls == sorted(kls) and kls[3] > 3 * kls[1]
    # for two Gaussians of one width the divergence is d^2 / (2 sigma^2): 8 px -> 2 nats
    assert kls[3] == pytest.approx(8.0**2 / (2 * models.HEATMAP_SIGMA**2), rel=0.02)
    flat = np.zeros((1, 24, 24, 1), np.float32)  # a map that says nothing is far from any target
    assert float(models.heatmap_kl(label, flat)) > kls[3]


def test_heatmap_kl_skips_missing_keypoints_and_averages_the_others():
    logits = gaussian_logits([(30.0, 30.0), (60.0, 50.0), (50.0, 70.0)])
    wrong = np.array([[30.0, 30.0, 68.0, 50.0, 50.0, 70.0]], np.float32)  # the 2nd is 8 px off
    both = float(models.heatmap_kl(wrong, logits))
    assert both == pytest.approx(2.0 / 3, rel=0.02)  # 2 nats over three labelled points
    missing = wrong.copy()
    missing[0, 2:4] = np.nan  # the wrong one is missing: nothing left to pay for
    assert float(models.heatmap_kl(missing, logits)) < 1e-5
    none = np.full_like(wrong, np.nan)
    assert float(models.heatmap_kl(none, logits)) == 0.0  # not NaN
    heat = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = models.heatmap_kl(missing, heat)
    g = tape.gradient(loss, heat).numpy()
    assert np.all(np.isfinite(g)) and np.all(g[..., 1] == 0)  # no pull on a missing point's map


def test_the_heatmap_loss_trainer_adds_the_heatmap_loss_while_training_only():
    keras.utils.set_random_seed(0)
    net = models.keypoint_resnet(
        (16, 16, 32, 32)
    )  # a train step at width 8 crashes TF's CPU kernels
    trainer = models.HeatmapLossTrainer(net, weight=0.5)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0), loss=models.masked_l1)
    rng = np.random.default_rng(0)
    x = rng.random((4, 96, 96, 1), np.float32)
    y = rng.uniform(20, 76, (4, 30)).astype(np.float32)
    y[1, 4:] = np.nan
    np.testing.assert_array_equal(trainer.predict(x, verbose=0), net.predict(x, verbose=0))
    assert trainer.trainable_weights and len(trainer.weights) == len(net.weights)
    # the training loss is the compiled loss plus 0.5 x the heatmap loss of the same forward pass
    points, heat = trainer.both(x, training=True)
    expected = float(np.mean(models.masked_l1(y, points))) + 0.5 * float(models.heatmap_kl(y, heat))
    assert float(trainer.train_on_batch(x, y)) == pytest.approx(expected, rel=1e-4)
    # evaluation scores the compiled loss alone (the same the plain network gets)
    plain = float(np.mean(models.masked_l1(y, net.predict(x, verbose=0))))
    assert float(trainer.evaluate(x, y, verbose=0)) == pytest.approx(plain, rel=1e-4)
    with pytest.raises(ValueError, match="baseline_cnn has no heatmaps to train"):
        models.HeatmapLossTrainer(models.baseline_cnn(), weight=0.5)


def test_near_the_edge_the_heatmap_target_moves_inwards_as_documented():
    # labels 10 and 6 px from the frame's left edge (x = -0.5), then 6 px from its right (95.5)
    out = [float(models.SoftArgmax2D()(gaussian_logits([(x, 47.5)]))[0, 0]) for x in (9.5, 5.5)]
    assert out[0] - 9.5 == pytest.approx(0.06, abs=0.005)
    assert out[1] - 5.5 == pytest.approx(0.5, abs=0.02)
    far = float(models.SoftArgmax2D()(gaussian_logits([(95.5 - 6.0, 47.5)]))[0, 0])
    assert far - 89.5 == pytest.approx(-0.5, abs=0.02)  # mirrored at the other edge
