"""Keypoint networks as plain Keras 3 functions, with the masked loss and metric.

Inputs are float32 images ``(B, 96, 96, 1)`` in [0, 1]; outputs are ``(B, 30)`` keypoints in
pixels of the 96x96 frame, in Kaggle's column order (x, y per keypoint). Labels may hold NaN for
missing keypoints: :func:`masked_mse` and :class:`MaskedRMSE` ignore them, so no fill value ever
reaches the loss.

* :func:`baseline_cnn` is the classic conv-then-dense regressor that the original course (and
  most 2014-2016 tutorials) use.
* :func:`keypoint_resnet` is a small residual network with a heatmap head at 1/4 resolution
  and a soft-argmax ("integral regression", Sun et al. 2018): each keypoint's position is the
  expectation of its softmax-normalised heatmap, so the output stays differentiable and sub-pixel.
* :func:`heatmap_kl` is a second loss on those heatmaps (a Gaussian around each label), and
  :class:`HeatmapLossTrainer` trains a network on both losses.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
from keras import layers, ops

from fkp_helpers.keypoints import IMAGE_SIZE, N_KEYPOINTS

# ---------------------------------------------------------------------------------------------
# Losses and metrics that skip missing labels


def _masked_diff(y_true, y_pred):
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    mask = ops.logical_not(ops.isnan(y_true))
    diff = ops.where(mask, y_pred - ops.where(mask, y_true, 0.0), 0.0)
    return diff, ops.cast(mask, "float32")


@keras.saving.register_keras_serializable(package="fkp")
def masked_mse(y_true, y_pred):
    """Mean squared error in pixels² over the labelled coordinates only (NaN labels are skipped).

    Returned per sample, scaled so that Keras's mean over the batch equals the squared error
    summed over every labelled coordinate in the batch divided by their count: a row with 4
    keypoints weighs 8 coordinates, a row with 15 weighs 30. Missing ones get zero gradient.
    """
    diff, mask = _masked_diff(y_true, y_pred)
    per_row = ops.sum(ops.square(diff), axis=-1)
    batch = ops.cast(ops.shape(mask)[0], "float32")
    return per_row * batch / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="fkp")
def masked_l1(y_true, y_pred):
    """Mean absolute error in pixels over the labelled coordinates only, scaled per sample like
    :func:`masked_mse` (the batch mean is the mean over every labelled coordinate)."""
    diff, mask = _masked_diff(y_true, y_pred)
    per_row = ops.sum(ops.abs(diff), axis=-1)
    batch = ops.cast(ops.shape(mask)[0], "float32")
    return per_row * batch / ops.maximum(ops.sum(mask), 1.0)


WING_WIDTH = 4.0
"""Wing loss's ``w`` in pixels: errors below it are weighed logarithmically (small errors keep a
large gradient), errors above it linearly."""
WING_CURVATURE = 1.0
"""Wing loss's ``epsilon`` in pixels: the curvature of the logarithmic part."""


@keras.saving.register_keras_serializable(package="fkp")
def masked_wing(y_true, y_pred):
    """Wing loss (Feng et al. 2018) in pixels over the labelled coordinates only:
    ``w ln(1 + |d| / eps)`` for ``|d| < w``, ``|d| - C`` beyond, with ``C = w - w ln(1 + w / eps)``
    (continuous at ``w``); ``w`` = :data:`WING_WIDTH`, ``eps`` = :data:`WING_CURVATURE`. Scaled
    per sample like :func:`masked_mse`."""
    diff, mask = _masked_diff(y_true, y_pred)
    w, eps = WING_WIDTH, WING_CURVATURE
    a = ops.abs(diff)
    c = w - w * math.log1p(w / eps)
    wing = ops.where(a < w, w * ops.log1p(a / eps), a - c) * mask
    per_row = ops.sum(wing, axis=-1)
    batch = ops.cast(ops.shape(mask)[0], "float32")
    return per_row * batch / ops.maximum(ops.sum(mask), 1.0)


LOSSES = {"mse": masked_mse, "l1": masked_l1, "wing": masked_wing}
"""The training losses by name (chapter 5's comparisons train with ``mse``, the reference model
with :data:`fkp_helpers.experiments.REFERENCE_LOSS`)."""


@keras.saving.register_keras_serializable(package="fkp")
class MaskedRMSE(keras.metrics.Metric):
    """Root mean squared error in pixels over labelled coordinates, accumulated over batches."""

    def __init__(self, name: str = "rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sq = self.add_variable(shape=(), initializer="zeros", name="sq")
        self.n = self.add_variable(shape=(), initializer="zeros", name="n")

    def update_state(self, y_true, y_pred, sample_weight=None):
        diff, mask = _masked_diff(y_true, y_pred)
        self.sq.assign_add(ops.sum(ops.square(diff)))
        self.n.assign_add(ops.sum(mask))

    def result(self):
        return ops.sqrt(self.sq / ops.maximum(self.n, 1.0))

    def reset_state(self):
        self.sq.assign(0.0)
        self.n.assign(0.0)


# ---------------------------------------------------------------------------------------------
# Layers


@keras.saving.register_keras_serializable(package="fkp")
class Standardize(layers.Layer):
    """Per-image standardisation: zero mean, unit variance. Makes the net blind to lighting."""

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.std(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / (std + 1e-3)


def heatmap_grid(heatmaps, stride: int):
    """Heatmap logits ``(B, H, W, K)`` -> ``(logits, gx, gy)``: the logits as float32
    ``(B, K, H*W)``, each map read row by row, and the pixel centres of its cells in the same
    order, ``gx`` and ``gy`` of shape ``(H*W,)``. Cell ``(i, j)`` covers input pixels
    ``s*j .. s*j + s - 1`` (``s`` = ``stride``), so its centre is at ``x = s*j + (s - 1)/2``
    (pixel centres at integers), and likewise ``y = s*i + (s - 1)/2``."""
    h = ops.cast(heatmaps, "float32")
    shape = ops.shape(h)
    height, width, k = shape[1], shape[2], shape[3]
    logits = ops.reshape(ops.transpose(h, (0, 3, 1, 2)), (-1, k, height * width))
    s = float(stride)
    xs = ops.arange(width, dtype="float32") * s + (s - 1) / 2
    ys = ops.arange(height, dtype="float32") * s + (s - 1) / 2
    gx = ops.reshape(ops.tile(xs[None, :], (height, 1)), (-1,))
    gy = ops.reshape(ops.tile(ys[:, None], (1, width)), (-1,))
    return logits, gx, gy


@keras.saving.register_keras_serializable(package="fkp")
class SoftArgmax2D(layers.Layer):
    """Heatmap logits ``(B, H, W, K)`` -> keypoints ``(B, 2K)`` in input pixels (x, y per point).

    Cell ``(i, j)`` of a heatmap with ``stride`` s covers input pixels ``s*j .. s*j + s - 1``, so
    its centre is at ``x = s*j + (s - 1)/2`` (pixel centres at integers). The output is the
    softmax-weighted mean of these centres: exact for a one-hot heatmap, sub-pixel otherwise.
    """

    def __init__(self, stride: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, heatmaps):
        logits, gx, gy = heatmap_grid(heatmaps, self.stride)
        prob = ops.softmax(logits, axis=-1)
        x = ops.sum(prob * gx, axis=-1)
        y = ops.sum(prob * gy, axis=-1)
        return ops.reshape(ops.stack([x, y], axis=-1), (-1, 2 * ops.shape(logits)[1]))

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


HEATMAP_SIGMA = 4.0
"""Width (standard deviation, pixels) of the Gaussian that :func:`heatmap_kl` asks each heatmap
to match: one cell of the residual network's stride-4 heatmaps."""


def heatmap_kl(y_true, heatmaps, stride: int = 4, sigma: float = HEATMAP_SIGMA):
    """A loss on the heatmaps themselves, in nats: for every labelled keypoint, the
    Kullback-Leibler divergence KL(q || p) from the target ``q``, a Gaussian of ``sigma`` pixels
    centred on the label and sampled at the cell centres (normalised over the map), to ``p``, the
    softmax of the keypoint's heatmap logits. Averaged over the labelled keypoints of the batch
    (NaN labels are skipped; zero when there are none).

    ``y_true``: ``(B, 2K)`` pixels, x and y per keypoint; ``heatmaps``: logits ``(B, H, W, K)``
    at ``stride`` pixels per cell. Zero exactly when the heatmap is the target. The soft-argmax
    of the target is the label to a hundredth of a pixel when the label is at least 13 px from
    the frame's edge (-0.5 or 95.5); nearer, the edge cuts off part of the Gaussian and its
    mean moves inwards (0.06 px at 10 px from the edge, 0.5 px at 6 px, with ``sigma`` = 4).
    """
    logits, gx, gy = heatmap_grid(heatmaps, stride)
    log_p = ops.log_softmax(logits, axis=-1)
    y = ops.cast(y_true, "float32")
    px, py = y[:, 0::2], y[:, 1::2]
    labelled = ops.logical_not(ops.logical_or(ops.isnan(px), ops.isnan(py)))
    px, py = ops.where(labelled, px, 0.0), ops.where(labelled, py, 0.0)
    d2 = ops.square(gx - px[..., None]) + ops.square(gy - py[..., None])
    log_q = ops.log_softmax(-d2 / (2 * sigma**2), axis=-1)
    kl = ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
    mask = ops.cast(labelled, "float32")
    return ops.sum(kl * mask) / ops.maximum(ops.sum(mask), 1.0)


class HeatmapLossTrainer(keras.Model):
    """Trains a heatmap network on its compiled loss plus ``weight`` times :func:`heatmap_kl`.

    ``net``: a network with layers named ``heatmaps`` (the logits) and ``keypoints`` (their
    :class:`SoftArgmax2D`), such as :func:`keypoint_resnet`. Calling the trainer returns the
    network's keypoints (pixels) and keeps the heatmaps of that call; while training,
    :meth:`compute_loss` adds their loss to the compiled one (validation scores the compiled loss
    alone). It holds no weights of its own: train it, then predict with, save and export
    ``net``."""

    def __init__(self, net: keras.Model, weight: float, sigma: float = HEATMAP_SIGMA, **kwargs):
        names = {layer.name for layer in net.layers}
        if not {"heatmaps", "keypoints"} <= names:
            raise ValueError(
                f"{net.name} has no heatmaps to train: HeatmapLossTrainer needs layers named "
                "'heatmaps' and 'keypoints', as keypoint_resnet has"
            )
        super().__init__(name=f"{net.name}_with_heatmap_loss", **kwargs)
        self.both = keras.Model(net.input, [net.output, net.get_layer("heatmaps").output])
        self.stride = net.get_layer("keypoints").stride
        self.weight, self.sigma = float(weight), float(sigma)
        self._heatmaps = None

    def call(self, images, training=False):
        keypoints, self._heatmaps = self.both(images, training=training)
        return keypoints

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if training:
            loss = loss + self.weight * heatmap_kl(y, self._heatmaps, self.stride, self.sigma)
        return loss


# ---------------------------------------------------------------------------------------------
# Networks


def baseline_cnn(dropout: float = 0.2, name: str = "baseline_cnn") -> keras.Model:
    """The classic regressor: three conv+pool stages, then dense layers straight to 30 numbers.

    About 4.8M parameters, most of them in the first dense layer. Outputs pixels (the last layer
    regresses targets scaled to [-1, 1], mapped back to pixels inside the model).
    """
    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = inp
    for ch in (32, 64, 128):
        x = layers.Conv2D(ch, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(2 * N_KEYPOINTS, dtype="float32")(x)  # targets in [-1, 1]
    half = (IMAGE_SIZE - 1) / 2
    out = layers.Rescaling(half, offset=half, dtype="float32", name="keypoints")(x)
    return keras.Model(inp, out, name=name)


BN_MOMENTUM = 0.9
"""Batch-norm running statistics follow the last ~10 batches: weights move fast at our learning
rates, and slow statistics (Keras's default 0.99) make inference lag behind training."""


def conv_bn(x, ch, kernel=3, stride=1, relu=True):
    x = layers.Conv2D(ch, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU()(x) if relu else x


def residual_block(x, ch, stride=1):
    shortcut = x
    y = conv_bn(x, ch, 3, stride)
    y = conv_bn(y, ch, 3, 1, relu=False)
    if stride != 1 or x.shape[-1] != ch:
        shortcut = conv_bn(x, ch, 1, stride, relu=False)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def keypoint_resnet(
    widths: tuple[int, int, int, int] = (32, 64, 128, 256),
    blocks: tuple[int, int, int] = (2, 2, 2),
    n_keypoints: int = N_KEYPOINTS,
    name: str = "keypoint_resnet",
) -> keras.Model:
    """Residual encoder (96 -> 48 -> 24 -> 12 -> 6), a light decoder back to 24x24 with skip
    connections, one heatmap per keypoint at 1/4 resolution, and :class:`SoftArgmax2D`.

    Outputs keypoints in pixels ``(B, 2 * n_keypoints)``. With the default widths: ~3.0M params.
    """
    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = Standardize()(inp)
    x = conv_bn(x, widths[0], 3, 2)  # 48x48
    x = residual_block(x, widths[0])
    x = residual_block(x, widths[1], 2)  # 24x24
    for _ in range(blocks[0] - 1):
        x = residual_block(x, widths[1])
    s24 = x
    x = residual_block(x, widths[2], 2)  # 12x12
    for _ in range(blocks[1] - 1):
        x = residual_block(x, widths[2])
    s12 = x
    x = residual_block(x, widths[3], 2)  # 6x6: sees the whole face
    for _ in range(blocks[2] - 1):
        x = residual_block(x, widths[3])
    x = layers.UpSampling2D(interpolation="bilinear")(x)
    x = layers.Add()([conv_bn(x, widths[2], 1, relu=False), s12])
    x = conv_bn(x, widths[2], 3)
    x = layers.UpSampling2D(interpolation="bilinear")(x)
    x = layers.Add()([conv_bn(x, widths[1], 1, relu=False), s24])
    x = conv_bn(x, widths[1], 3)
    heat = layers.Conv2D(n_keypoints, 1, dtype="float32", name="heatmaps")(x)
    out = SoftArgmax2D(stride=4, dtype="float32", name="keypoints")(heat)
    return keras.Model(inp, out, name=name)


def heatmap_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that outputs its heatmap logits (for figures)."""
    return keras.Model(model.input, model.get_layer("heatmaps").output)


def load_model(path) -> keras.Model:
    """Load a saved ``model.keras`` (custom layers, loss and metric are registered here).

    Raises FileNotFoundError when there is no such file and ValueError, naming the file, when it
    is not a Keras model: one line the ``fkp`` commands print without a traceback."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such model file (train one with `fkp train --out DIR`, then pass "
            "--model DIR/model.keras)"
        )
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:  # a zip without a model, a truncated file, another format
        raise ValueError(f"{path}: not a Keras model saved by `fkp train` ({e})") from e
