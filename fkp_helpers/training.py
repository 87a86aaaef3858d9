"""The training loop that chapter 5 writes out: schedule, ``compile``, callbacks, ``fit``, measure.

Chapter 5 shows this code cell by cell; this module is the tested copy that ``fkp train``, the
comparison runs and the tests call. The bookkeeping around it (profiles, saved runs, the
comparison recipes, the command-line entry points) lives in :mod:`fkp_helpers.experiments`.

Images are uint8 ``(N, 96, 96)``; keypoints float32 ``(N, 30)`` pixels with NaN for missing
labels (the masked loss skips them). Every run is measured on the validation rows (which choose
the best epoch and the way of predicting: one look, flip-averaged or the second look, with or
without the label offset; :func:`choose_looks`) and, when given, on test rows that no choice
reads.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
from keras import ops

from fkp_helpers import augment, models
from fkp_helpers.keypoints import (
    KAGGLE_MEAN_SHAPE,
    N_KEYPOINTS,
    eye_distance,
    flip_keypoints,
    head_tilt_deg,
    masked_rmse,
    mean_offset,
    mean_shape,
)
from fkp_helpers.keypoints import per_keypoint_rmse as _per_keypoint_rmse
from fkp_helpers.missing import fill_from_predictions
from fkp_helpers.seeding import DEFAULT_SEED, rng, seed_everything

# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Profile:
    """How long and how big a training run is (the named profiles are in
    :data:`fkp_helpers.experiments.PROFILES`; ``quick`` is what CI and nbval run)."""

    name: str
    epochs: int
    batch_size: int = 32
    learning_rate: float = 2e-3  # the peak, reached after the warm-up
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    max_train_rows: int | None = None  # a subset, for the quick profile
    max_val_rows: int | None = None
    minutes: float | None = None  # a wall-time budget: the schedule is fitted to it, see below


def read_metrics(model_path) -> dict:
    """The ``metrics.json`` that ``fkp train`` saves beside ``model_path`` (its choice of looks,
    its label offset, its scores); ``{}`` when there is none. Raises ValueError naming the file
    when it is not a JSON object."""
    mfile = Path(model_path).parent / "metrics.json"
    if not mfile.is_file():
        return {}
    try:
        metrics = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{mfile}: not the metrics.json of a run ({e})") from e
    if not isinstance(metrics, dict):
        raise ValueError(f"{mfile}: not the metrics.json of a run (not a JSON object)")
    return metrics


def profile_rows(idx, max_rows: int | None, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The rows ``idx`` a run uses: all of them, or (the quick profile's ``max_train_rows`` and
    ``max_val_rows``) ``max_rows`` of them, sorted, drawn by a generator of ``seed`` alone. So
    every run with the same rows and seed measures the same faces, whatever its training rows,
    and a table can score its mean-shape baseline on those faces too."""
    idx = np.asarray(idx)
    if not max_rows or len(idx) <= max_rows:
        return idx
    return np.sort(rng(seed).choice(idx, max_rows, replace=False))


def training_augment_config() -> augment.AugmentConfig:
    """The augmentation the course's training uses: chapter 4's measured ranges cut to between
    half and 70% of their strength (rotation 7 of 10 degrees, shift 3 of 4.3 px, brightness 0.12
    of 0.18, contrast 0.3 of 0.48, zoom 0.90-1.11 of 0.82-1.22, about half on a log scale; flip,
    noise and blur as chapter 4's defaults). On a CPU budget of minutes the network
    cannot fit the full ranges; chapter 5 measures both, and the book quotes these numbers from
    this function.

    Plus a wide tail: 5% of the faces are warped instead by up to 25 degrees, a zoom of
    0.75-1.35 and 12 px (``AugmentConfig.wide_p`` and its ranges, chapter 4), for the rare
    faces far beyond the ordinary ranges. Measured with the full profile (18-minute budget, L1)
    on two splits and two seeds: validation RMSE as good as without it, within the seed spread,
    and the held-out test part's largest errors (a face in the frame's corner, a face tilted 25
    degrees) much smaller; ``make bench-recipes`` has the row "no wide tail"."""
    return replace(
        augment.AugmentConfig(),
        rotation_deg=7.0,
        scale=(0.9, 1.11),
        translate_px=3.0,
        brightness=0.12,
        contrast=0.3,
        wide_p=0.05,
    )


def build_model(kind: str, profile: Profile, n_keypoints: int = N_KEYPOINTS) -> keras.Model:
    """``"resnet"`` (the course's residual heatmap network, at the profile's widths) or
    ``"baseline"`` (the classic conv-then-dense regressor)."""
    if kind == "resnet":
        return models.keypoint_resnet(widths=profile.widths, n_keypoints=n_keypoints)
    if kind == "baseline":
        if n_keypoints != N_KEYPOINTS:
            raise ValueError("the baseline CNN predicts all 15 keypoints")
        return models.baseline_cnn()
    raise ValueError(f"unknown model {kind!r}: expected 'resnet' or 'baseline'")


# ---------------------------------------------------------------------------------------------
# The pieces chapter 5 writes out


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int):
    """Learning rate per step: a linear warm-up from ``peak / 10`` to ``peak`` over
    ``warmup_steps``, then a cosine decay to ``peak / 100`` at ``total_steps``."""
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak * 0.1,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak,
        warmup_steps=warmup_steps,
        alpha=0.01,
    )


def compile_model(
    net: keras.Model,
    learning_rate,
    weight_decay: float = 1e-4,
    loss: str = "mse",
    ema: float | None = None,
) -> keras.Model:
    """Compile with AdamW (Adam with decoupled weight decay), the masked loss and the masked
    RMSE metric. ``learning_rate``: a number or a schedule such as :func:`warmup_cosine`.
    ``loss``: a name of :data:`fkp_helpers.models.LOSSES` (``mse``, ``l1``, ``wing``). ``ema``:
    keep an exponential moving average of the weights with this momentum (e.g. 0.99; use
    :func:`ema_callbacks` so that validation and the saved model use the average)."""
    if loss not in models.LOSSES:
        raise ValueError(f"unknown loss {loss!r}: expected one of {', '.join(models.LOSSES)}")
    ema_args = {} if ema is None else {"use_ema": True, "ema_momentum": ema}
    net.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **ema_args),
        loss=models.LOSSES[loss],
        metrics=[models.MaskedRMSE(name="rmse")],
    )
    return net


class KeepBestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the lowest ``monitor`` and restore them at the end
    of training (in memory: no checkpoint file)."""

    def __init__(self, monitor: str = "val_rmse"):
        super().__init__()
        self.monitor = monitor

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights = np.inf, -1, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


# ---------------------------------------------------------------------------------------------
# A budget in minutes: the schedule laid out over the steps that fit on this machine


@keras.saving.register_keras_serializable(package="fkp")
class BudgetedWarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """:func:`warmup_cosine` whose length can be set while training runs.

    The same curve (linear warm-up from ``peak / 10`` to ``peak``, cosine decay to ``peak / 100``
    at ``total_steps``), but ``total_steps`` is a variable: :class:`MinutesBudget` sets it once it
    has measured how many steps fit the budget. When the budget is so small that the warm-up
    would not end before half the run, the warm-up is cut to half the run, so the decay still
    reaches its final value.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, alpha: float = 0.01):
        self.peak, self.warmup_steps, self.alpha = float(peak), int(warmup_steps), float(alpha)
        self.total_steps = keras.Variable(
            float(total_steps), dtype="float32", trainable=False, name="total_steps"
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = ops.convert_to_tensor(self.total_steps)
        warm = ops.minimum(float(self.warmup_steps), 0.5 * total)
        start = 0.1 * self.peak
        rise = start + (self.peak - start) * step / ops.maximum(warm, 1.0)
        frac = ops.clip((step - warm) / ops.maximum(total - warm, 1.0), 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(np.pi * frac))
        decay = self.peak * ((1.0 - self.alpha) * cosine + self.alpha)
        return ops.where(step < warm, rise, decay)

    def set_total_steps(self, total_steps: int) -> None:
        self.total_steps.assign(float(total_steps))

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": int(float(self.total_steps.numpy())),
            "warmup_steps": self.warmup_steps,
            "alpha": self.alpha,
        }


class MinutesBudget(keras.callbacks.Callback):
    """Fit the run to a wall-clock ``deadline`` (seconds on ``clock``, default ``time.time``).

    After each of the first two epochs it estimates what one more epoch costs and plans
    ``planned_epochs``: as many whole epochs as fit before the deadline, at most
    ``max_epochs``, keeping ``reserve_passes`` validation passes (plus 5 s) for the predictions
    and saving after training. The first epoch's wall time includes tracing the graphs, so its
    estimate is the steady pace of its training steps after the first (plus its validation
    pass); the second epoch's measured time corrects the plan. The schedule's ``total_steps``
    is set to the end of the last planned epoch, so the learning rate is fully decayed when
    training stops. From the third epoch on it re-plans after every epoch from the slower of
    the last epoch and the median epoch since the first: when the next epoch would end past
    the deadline (a machine that slowed down), the plan is cut to the epochs that still fit
    and ``total_steps`` with it: the learning rate drops sooner, and the run still ends at its
    plan's end, fully decayed. A slowdown that passes (another program busy for a minute), or
    a second epoch slower than the rest, gives its time back: once the epochs run at their
    usual pace, the plan grows to the epochs that fit and the decay is stretched to the new
    end. Epochs are planned ``margin`` times their expected length.
    """

    def __init__(
        self,
        schedule: BudgetedWarmupCosine,
        deadline: float,
        steps_per_epoch: int,
        max_epochs: int,
        reserve_passes: float = 10.0,
        margin: float = 1.05,
        verbose: bool = True,
        clock=time.time,
    ):
        super().__init__()
        self.schedule, self.deadline, self.clock = schedule, deadline, clock
        self.steps, self.max_epochs = steps_per_epoch, max_epochs
        self.reserve_passes, self.margin, self.verbose = reserve_passes, margin, verbose
        self.planned_epochs = max_epochs
        self.epoch_seconds: list[float] = []
        self.val_seconds = 0.0
        self.shortened = 0  # times the plan was cut after the second epoch
        self.regrown = 0  # times the plan grew after the second epoch
        self.last_epoch_end = float("nan")  # clock() at the end of the last epoch run

    def on_epoch_begin(self, epoch, logs=None):
        self.e0 = self.clock()
        self.batch_ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        if not self.epoch_seconds:  # the first epoch: its pace after tracing
            self.batch_ends.append(self.clock())

    def on_test_begin(self, logs=None):
        self.v0 = self.clock()

    def on_test_end(self, logs=None):
        self.val_seconds = self.clock() - self.v0

    def reserve_s(self) -> float:
        """Seconds kept for after training: the final predictions (validation and test: one
        look, flip-averaged and the second look, up to five passes each) and saving, estimated from
        the last validation pass."""
        return self.reserve_passes * self.val_seconds + 5.0

    def next_epoch_s(self, took: float) -> float:
        """Seconds the next epoch is expected to take, from the epoch that just took ``took``:
        after the first epoch its pace after tracing, after the second ``took``, then the
        slower of ``took`` and the median epoch since the first (one fast epoch never
        lengthens the plan, one slow one shortens it at once)."""
        if len(self.epoch_seconds) == 1 and len(self.batch_ends) > 2:  # the first epoch
            ends = self.batch_ends
            steady = (ends[-1] - ends[0]) / (len(ends) - 1) * self.steps
            return min(took, steady + self.val_seconds)
        if len(self.epoch_seconds) > 2:
            return max(took, float(np.median(self.epoch_seconds[1:])))
        return took

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        took = now - self.e0
        self.epoch_seconds.append(took)
        per_epoch = self.next_epoch_s(took)
        left = self.deadline - now - self.reserve_s()
        fits = epoch + 1 + max(0, int(left // max(self.margin * per_epoch, 1e-6)))
        plan = min(self.max_epochs, fits)
        if epoch >= 2:  # the first two epochs plan; later ones re-plan, in either direction
            self.shortened += plan < self.planned_epochs
            self.regrown += plan > self.planned_epochs
        if plan != self.planned_epochs or epoch < 2:
            self.planned_epochs = max(epoch + 1, plan)
            self.schedule.set_total_steps(self.planned_epochs * self.steps)
            if self.verbose:
                print(
                    f"\nbudget: epoch {epoch + 1} took {took:.1f} s (next ~{per_epoch:.1f} s), "
                    f"{left:.0f} s left for training; planned {self.planned_epochs} epochs",
                    file=sys.stderr,
                )
        if epoch + 1 >= self.planned_epochs:
            self.model.stop_training = True
        self.last_epoch_end = self.clock()


# ---------------------------------------------------------------------------------------------
# Predictions


def predict_tta(
    model,
    images: np.ndarray,
    views=((1.0, 0.0, 0.0),),
    *,
    flip_average: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Test-time augmentation: the mean prediction (float32 ``(N, 30)``, pixels) over ``views``,
    each a ``(scale, tx, ty)`` warp of the faces about the centre (:func:`augment.affine`: scale
    a factor, shifts in pixels) whose predicted points are mapped back through the inverse warp;
    with ``flip_average`` every view is also seen mirrored. ``views=((1, 0, 0),)`` is
    :func:`predict_keypoints`."""
    from fkp_helpers.keypoints import apply_affine, invert_affine

    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    dummy = np.zeros((len(x), 2 * N_KEYPOINTS), np.float32)
    preds = []
    for scale, tx, ty in views:
        if (scale, tx, ty) == (1.0, 0.0, 0.0):
            warped = x
        else:
            warped, _ = augment.affine(x, dummy, 0.0, scale, tx, ty)
        p = predict_keypoints(model, warped, flip_average=flip_average, batch_size=batch_size)
        back = invert_affine(augment.affine_matrix(0.0, scale, tx, ty)[0])
        preds.append(apply_affine(p, back))
    return np.mean(preds, axis=0).astype(np.float32)


def ema_callbacks(net: keras.Model) -> list:
    """``[SwapEMAWeights]`` when ``net``'s optimiser keeps a moving average of the weights, else
    ``[]``. Put it before :class:`KeepBestWeights`: validation then scores the averaged weights,
    and the epoch's snapshot holds them."""
    if getattr(net.optimizer, "use_ema", False):
        return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
    return []


def predict_keypoints(
    model, images: np.ndarray, *, flip_average: bool = False, batch_size: int = 64
) -> np.ndarray:
    """Predict keypoints (float32 ``(N, 30)``, pixels) for uint8 or [0, 1] images ``(N, 96, 96)``.

    With ``flip_average`` the model also sees each mirrored face; the mirror's points are mapped
    back (:func:`~fkp_helpers.keypoints.flip_keypoints`) and averaged with the direct prediction.
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    pred = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)
    if not flip_average:
        return pred
    flipped = np.asarray(model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0), np.float32)
    return (pred + flip_keypoints(flipped)) / 2


# ---------------------------------------------------------------------------------------------
# One run


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (``resource`` on Linux and macOS,
    psutil's peak working set on Windows)."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB on Linux


@dataclass
class RunResult:
    """A finished run: the Keras model, its per-epoch history and its metrics (see metrics.json)."""

    model: object
    history: dict
    metrics: dict
    out_dir: Path | None = None
    extra: dict = field(default_factory=dict)


def beyond_training_range(keypoints, config=None) -> np.ndarray:
    """Faces (bool ``(N,)``) beyond the training augmentation's ordinary ranges, judged from
    their keypoints ``(N, 30)`` (pixels; a first look's prediction): tilted by more than
    ``config.rotation_deg`` degrees against Kaggle's mean eye line, or with an eye distance
    whose ratio to Kaggle's mean is outside ``config.scale``. (The wide tail, ``wide_p``,
    reaches a few training faces further; the gate does not count it.) Default ``config``:
    :func:`training_augment_config`."""
    config = training_augment_config() if config is None else config
    tilt = head_tilt_deg(keypoints) - head_tilt_deg(KAGGLE_MEAN_SHAPE)  # degrees
    size = eye_distance(keypoints) / eye_distance(KAGGLE_MEAN_SHAPE)  # a zoom factor
    return (
        (np.abs(tilt) > config.rotation_deg) | (size < config.scale[0]) | (size > config.scale[1])
    )


def predict_second_look(model, images, first=None, config=None):
    """Keypoints (float32 ``(N, 30)``, pixels) for uint8 faces ``(N, 96, 96)``: the
    flip-averaged first look (``first``, if already predicted), then a second, flip-averaged
    look (:func:`fkp_helpers.photo.look_again`) at the faces that it finds beyond the training
    augmentation's range (:func:`beyond_training_range`). The others keep their first look:
    a warp that hardly moves a face only blurs it."""
    from fkp_helpers.photo import look_again

    x = np.asarray(images)
    if first is None:
        first = predict_keypoints(model, x, flip_average=True)
    out = np.array(first, np.float32)
    again = beyond_training_range(first, config)
    if again.any():
        out[again] = look_again(model, x[again], out[again])[0]
    return out


LOOK_SUFFIX = {
    "one look": "",
    "flip-averaged": "_flip_average",
    "second look": "_second_look",
    "flip-averaged + offset": "_flip_average_offset",
    "second look + offset": "_second_look_offset",
}
"""The ways to predict that a run measures, and the suffix of their RMSE keys in its metrics.
"+ offset": the same prediction minus the run's ``label_offset`` (:func:`measure_label_offset`)."""


def choose_looks(val_metrics: dict) -> dict:
    """What the validation faces choose (``flip_average``, ``second_look`` and ``offset``,
    booleans): the way of predicting with the lowest validation RMSE among :data:`LOOK_SUFFIX`'s
    that ``val_metrics`` holds (a run without a label offset has no "+ offset" scores). The
    second look is always flip-averaged, so choosing it also sets ``flip_average``."""
    scores = {
        k: val_metrics[f"val_rmse{s}"]
        for k, s in LOOK_SUFFIX.items()
        if f"val_rmse{s}" in val_metrics
    }
    best = min(scores, key=scores.get)
    return {
        "flip_average": best != "one look",
        "second_look": best.startswith("second look"),
        "offset": best.endswith("+ offset"),
    }


def chosen_look(metrics: dict) -> str:
    """The key of :data:`LOOK_SUFFIX` that a run's ``flip_average``/``second_look``/``offset``
    choice names (a run saved before the second look or the offset existed has neither: off)."""
    if metrics.get("second_look", False):
        look = "second look"
    else:
        look = "flip-averaged" if metrics.get("flip_average", True) else "one look"
    if metrics.get("offset", False) and look != "one look":
        look += " + offset"
    return look


def predict_as_chosen(model, images: np.ndarray, metrics: dict) -> np.ndarray:
    """Keypoints (float32 ``(N, 30)``, pixels) for uint8 faces ``(N, 96, 96)``, predicted the way
    a run's validation faces chose (:func:`chosen_look` of its ``metrics``): one look,
    flip-averaged, or with a second look, then minus the run's ``label_offset`` if it chose
    "+ offset". What ``fkp submit`` and chapter 6 use."""
    look = chosen_look(metrics)
    if look.startswith("second look"):
        pred = predict_second_look(model, images)
    else:
        pred = predict_keypoints(model, images, flip_average=look != "one look")
    if look.endswith("+ offset"):
        pred = pred - np.asarray(metrics["label_offset"], np.float32)
    return pred


def measure_label_offset(model, images: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """The labels' offset (float32 ``(30,)``, pixels): :func:`~fkp_helpers.keypoints.mean_offset`
    of the flip-averaged predictions on uint8 faces ``(N, 96, 96)`` whose labels are
    ``keypoints`` (the training faces, without augmentation; NaN = unlabelled). Training with
    mirrored faces and averaging with the mirror make the network's answers mirror-symmetric;
    whatever the labels do that is not (a labeller's habit on one side) comes back as a
    constant, which this measures and the "+ offset" looks subtract."""
    return mean_offset(keypoints, predict_keypoints(model, images, flip_average=True))


def measure(model, images, keypoints, idx, train_keypoints, part: str, offset=None) -> dict:
    """RMSE (pixels) of ``model`` on rows ``idx``: one look, flip-averaged, and after a second
    look (:func:`predict_second_look`); with ``offset`` (a label offset, ``(30,)`` pixels) also
    both flip-averaged looks minus it; per keypoint, and the mean shape of ``train_keypoints``
    on the same rows; keys prefixed by ``part``."""
    y = keypoints[idx]
    pred = predict_keypoints(model, images[idx])
    pred_flip = predict_keypoints(model, images[idx], flip_average=True)
    pred_second = predict_second_look(model, images[idx], pred_flip)
    base = np.broadcast_to(mean_shape(train_keypoints), y.shape)
    out = {
        f"{part}_rmse": masked_rmse(y, pred),
        f"{part}_rmse_flip_average": masked_rmse(y, pred_flip),
        f"{part}_rmse_second_look": masked_rmse(y, pred_second),
        f"{part}_second_look_faces": int(beyond_training_range(pred_flip).sum()),
        f"{part}_rmse_per_keypoint": _per_keypoint_rmse(y, pred),
        f"baseline_{part}_rmse": masked_rmse(y, base),
        f"n_{part}": int(len(idx)),
    }
    if offset is not None:
        out[f"{part}_rmse_flip_average_offset"] = masked_rmse(y, pred_flip - offset)
        out[f"{part}_rmse_second_look_offset"] = masked_rmse(y, pred_second - offset)
    return out


def train_model(
    images: np.ndarray,
    keypoints: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray | None = None,
    *,
    profile: Profile,
    model: str = "resnet",
    augment_config="default",
    seed: int = DEFAULT_SEED,
    distribute=None,
    out_dir: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    precision: str = "auto",
    val_keypoints: np.ndarray | None = None,
    deterministic_ops: bool = False,
    started: float | None = None,
    loss: str = "mse",
    heatmap_loss: float | None = None,
    ema: float | None = None,
    initial_weights: list | None = None,
) -> RunResult:
    """Train one model and measure it (the code chapter 5 writes out, in one function).

    images: uint8 (N, 96, 96); keypoints: float32 (N, 30) pixels, NaN = missing (the masked
    loss skips them; a caller who filled them in trains on the filled values). Validation and
    test scores always use ``val_keypoints`` (default: ``keypoints``) with its true NaNs, so
    filled labels never flatter a recipe. The best epoch and the way of predicting (one look,
    flip-averaged or the second look: :func:`choose_looks`) are chosen on the validation
    rows; ``test_idx`` rows are only measured.

    ``augment_config``: ``"default"`` (:func:`training_augment_config`), ``None`` or an
    :class:`~fkp_helpers.augment.AugmentConfig`. ``distribute``: an optional ``tf.distribute``
    strategy (e.g. ``MirroredStrategy()`` for several GPUs); the code path is the same.

    A budget in minutes (``profile.minutes``): the run, from ``started`` (a ``time.time()``;
    default: when this function is called; ``fkp train`` passes its process's start) to the
    saved metrics, is fitted into that many minutes by :class:`MinutesBudget` and
    :class:`BudgetedWarmupCosine`, with ``profile.epochs`` as the most epochs it may plan. The
    plan, the epochs run and the measured throughput go into the metrics. Without a budget the
    run is exactly ``profile.epochs`` epochs (repeatable).

    Global state, set on purpose: ``precision`` sets Keras's global dtype policy
    (:func:`fkp_helpers.precision.set_global_precision_policy`), and ``deterministic_ops=True``
    turns on TensorFlow's op determinism for the rest of the process (bitwise repeatable, slower).

    ``loss``: the coordinate loss (a name of :data:`fkp_helpers.models.LOSSES`).
    ``heatmap_loss``: the weight of :func:`fkp_helpers.models.heatmap_kl` on the residual
    network's heatmaps, added to ``loss`` while training through
    :class:`fkp_helpers.models.HeatmapLossTrainer` (the network alone is measured and saved);
    ``None`` or 0: the coordinate loss alone.

    ``initial_weights``: start from these weights (``model.get_weights()`` of a network of the
    same kind and widths) instead of a random initialisation; :func:`self_train` uses it.
    """
    from fkp_helpers.precision import set_global_precision_policy

    started = time.time() if started is None else started
    if deterministic_ops:
        from fkp_helpers.seeding import enable_op_determinism

        enable_op_determinism()
    seed_everything(seed)
    prec = set_global_precision_policy(precision)
    train_idx = profile_rows(train_idx, profile.max_train_rows, seed)
    val_idx = profile_rows(val_idx, profile.max_val_rows, seed)
    if test_idx is not None:
        test_idx = profile_rows(test_idx, profile.max_val_rows, seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(
            f"training needs rows on both sides: {len(train_idx)} train, {len(val_idx)} validation"
        )
    if heatmap_loss and model != "resnet":
        raise ValueError(f"heatmap_loss needs the residual heatmap network, not {model!r}")
    if augment_config == "default":
        augment_config = training_augment_config()
    y_true = keypoints if val_keypoints is None else val_keypoints
    n_kp = keypoints.shape[1] // 2

    bs = profile.batch_size
    steps = max(1, len(train_idx) // bs)
    train_ds = augment.augmented_dataset(
        images[train_idx],
        keypoints[train_idx],
        augment_config,
        batch_size=bs,
        seed=seed,
        repeat=True,
        drop_remainder=True,
    )
    val_ds = augment.augmented_dataset(
        images[val_idx], y_true[val_idx], None, batch_size=64, shuffle=False
    )
    warmup_steps = int(steps * profile.warmup_epochs)
    if profile.minutes:
        schedule = BudgetedWarmupCosine(profile.learning_rate, steps * profile.epochs, warmup_steps)
    else:
        schedule = warmup_cosine(profile.learning_rate, steps * profile.epochs, warmup_steps)

    def build_and_compile():
        """The network, and what ``fit`` trains: the network itself, or its heatmap-loss
        trainer (which shares its weights)."""
        net = build_model(model, profile, n_kp)
        if initial_weights is not None:
            net.set_weights(initial_weights)
        trainer = models.HeatmapLossTrainer(net, heatmap_loss) if heatmap_loss else net
        compile_model(trainer, schedule, profile.weight_decay, loss=loss, ema=ema)
        return net, trainer

    if distribute is not None:
        with distribute.scope():
            net, trainer = build_and_compile()
    else:
        net, trainer = build_and_compile()

    keep = KeepBestWeights("val_rmse")
    callbacks = [*ema_callbacks(trainer), keep]
    budget = None
    if profile.minutes:
        # ten validation passes for the final predictions, two training passes (flip-averaged)
        # for the label offset, in validation passes
        reserve = 10.0 + 2.0 * len(train_idx) / len(val_idx)
        budget = MinutesBudget(
            schedule, started + 60 * profile.minutes, steps, profile.epochs, reserve_passes=reserve
        )
        callbacks.append(budget)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(out / "history.csv")))
    if verbose == "auto":
        verbose = 2 if "ipykernel" in sys.modules else 1

    t0 = time.perf_counter()
    hist = trainer.fit(
        train_ds,
        epochs=profile.epochs,
        steps_per_epoch=steps,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))

    train_kp = keypoints[train_idx]
    # rounded as metrics.json keeps it, so that the scores are those of the saved offset
    offset = np.round(measure_label_offset(net, images[train_idx], y_true[train_idx]), 4)
    metrics = measure(net, images, y_true, val_idx, train_kp, "val", offset)
    metrics["label_offset"] = offset.tolist()
    metrics.update(choose_looks(metrics))
    if test_idx is not None and len(test_idx):
        metrics.update(measure(net, images, y_true, np.asarray(test_idx), train_kp, "test", offset))
        metrics["test_rmse_chosen"] = metrics[f"test_rmse{LOOK_SUFFIX[chosen_look(metrics)]}"]
    metrics.update(
        {
            "ratio_to_baseline": metrics["val_rmse"] / metrics["baseline_val_rmse"],
            "train_seconds": round(seconds, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "seed": seed,
            "profile": profile.name,
            "model": model,
            "loss": loss,
            "heatmap_loss": heatmap_loss or None,
            "ema": ema,
            "precision": prec,
            "params": int(net.count_params()),
            "epochs_run": epochs_run,
            "best_epoch": int(keep.best_epoch) + 1,
            "n_train": int(len(train_idx)),
            "augment": None if augment_config is None else asdict(augment_config),
            "train_images_per_second": round(steps * bs * epochs_run / seconds, 1),
            "final_learning_rate": float(
                ops.convert_to_numpy(schedule(trainer.optimizer.iterations))
            ),
        }
    )
    if budget is not None:
        metrics.update(
            {
                "budget_minutes": profile.minutes,
                "planned_epochs": int(budget.planned_epochs),
                "plan_shortened": int(budget.shortened),
                "plan_regrown": int(budget.regrown),
                "epoch_seconds": [round(t, 1) for t in budget.epoch_seconds],
                # what the plan controls: the end of the last epoch, from the command's start
                "train_end_seconds": round(budget.last_epoch_end - started, 1),
            }
        )
    if out is not None:
        net.save(out / "model.keras")
        (out / "history.json").write_text(json.dumps(history, indent=1))
    metrics["wall_seconds"] = round(time.time() - started, 1)  # loading and saving included
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return RunResult(net, history, metrics, out)


def self_train(
    images: np.ndarray,
    keypoints: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray | None = None,
    *,
    profile: Profile,
    teacher_share: float = 0.5,
    seed: int = DEFAULT_SEED,
    out_dir: str | os.PathLike | None = None,
    started: float | None = None,
    val_keypoints: np.ndarray | None = None,
    **kwargs,
) -> RunResult:
    """Two rounds of :func:`train_model` (self-training with pseudo-labels, chapter 5):

    1. the **teacher** trains on the labels as given (missing ones skipped by the masked loss)
       for ``teacher_share`` of the profile's budget (of its minutes, or of its epochs);
    2. its flip-averaged predictions fill every missing label of the training rows
       (:func:`fkp_helpers.missing.fill_from_predictions`);
    3. the **student** starts from the teacher's weights and trains on the filled labels, with a
       fresh warm-up and cosine schedule, for the rest of the budget (seed ``seed + 1``).

    Validation and test rows keep their true labels and NaNs throughout: they are scored, never
    filled. A budget in minutes covers both rounds, counted from ``started``. Returns the
    student's run; its metrics add the teacher's figures (``teacher_*``), ``pseudo_labels`` (the
    number of keypoints filled), ``teacher_share`` and ``student_seed`` (``seed`` stays the
    run's); ``train_seconds`` covers both rounds, and the saved history (history.json,
    history.csv) is the teacher's epochs followed by the student's. Other keyword arguments go
    to both :func:`train_model` calls.
    """
    if not 0 < teacher_share < 1:
        raise ValueError(f"teacher_share must be between 0 and 1, got {teacher_share}")
    started = time.time() if started is None else started
    y_true = keypoints if val_keypoints is None else val_keypoints
    if profile.minutes:  # the student keeps the whole budget's deadline
        first = replace(profile, minutes=profile.minutes * teacher_share)
        second = profile
    else:
        if profile.epochs < 2:
            raise ValueError("self-training needs at least 2 epochs: one per round")
        n1 = min(profile.epochs - 1, max(1, round(profile.epochs * teacher_share)))
        first = replace(profile, epochs=n1)
        second = replace(profile, epochs=profile.epochs - n1)
    teacher = train_model(
        images, keypoints, train_idx, val_idx, test_idx, profile=first, seed=seed,
        started=started, val_keypoints=y_true, **kwargs,
    )  # fmt: skip
    train_idx = np.asarray(train_idx)
    pred = predict_keypoints(teacher.model, images[train_idx], flip_average=True)
    filled = np.array(keypoints, dtype=np.float32, copy=True)
    filled[train_idx] = fill_from_predictions(keypoints[train_idx], pred)
    n_filled = int(np.isnan(keypoints[train_idx]).sum() // 2)
    student = train_model(
        images, filled, train_idx, val_idx, test_idx, profile=second, seed=seed + 1,
        out_dir=out_dir, started=started, val_keypoints=y_true,
        initial_weights=teacher.model.get_weights(), **kwargs,
    )  # fmt: skip
    tm = teacher.metrics
    teacher_figures = {
        f"teacher_{k}": tm[k]
        for k in (
            "val_rmse", "val_rmse_flip_average", "test_rmse", "test_rmse_flip_average",
            "epochs_run", "train_seconds", "train_images_per_second",
        )
        if k in tm
    }  # fmt: skip
    metrics = {
        **student.metrics,
        **teacher_figures,
        "teacher_share": teacher_share,
        "pseudo_labels": n_filled,
        "seed": seed,  # the run's; the student's own is seed + 1
        "student_seed": seed + 1,
        "train_seconds": round(tm["train_seconds"] + student.metrics["train_seconds"], 1),
    }
    history = {k: teacher.history.get(k, []) + student.history.get(k, []) for k in student.history}
    if out_dir is not None:
        out = Path(out_dir)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        keys = list(history)  # Keras's order, as CSVLogger writes it
        rows = zip(*history.values(), strict=True)
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(e), *map(repr, r)]) for e, r in enumerate(rows)]
        (out / "history.csv").write_text("\n".join(lines) + "\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return RunResult(student.model, history, metrics, student.out_dir, extra={"teacher": teacher})
