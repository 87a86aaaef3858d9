"""Training: honest splits, the tf.data pipeline, profiles, runs saved and reused, predictions.

Everything a chapter-5 cell or ``fkp train`` needs goes through :func:`train_model`; the book,
the command line and the tests share that one code path, at different :data:`PROFILES`.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fkp_helpers import data as fdata
from fkp_helpers.seeding import DEFAULT_SEED, seed_everything

# ---------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class Profile:
    """How long and how big a training run is. ``quick`` is what CI and nbval run."""

    name: str
    epochs: int
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    max_train_rows: int | None = None  # a subset, for the quick profile
    max_val_rows: int | None = None
    time_limit_s: float | None = None  # a guard: stop after this many seconds of training
    patience: int | None = None  # early stopping on val RMSE; None: keep the best epoch only


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        epochs=2,
        batch_size=32,
        widths=(16, 32, 64, 128),
        max_train_rows=256,
        max_val_rows=128,
        warmup_epochs=0.5,
    ),
    "compare": Profile("compare", epochs=6, batch_size=32, widths=(16, 32, 64, 128)),
    "full": Profile("full", epochs=36, batch_size=32, time_limit_s=19 * 60),
}


def current_profile(default: str | None = None) -> str:
    """The profile in force: ``$FKP_PROFILE``, else ``default``, else ``full`` on real data and
    ``quick`` on the synthetic default (so the book builds in minutes anywhere)."""
    env = os.environ.get("FKP_PROFILE")
    if env:
        if env not in PROFILES:
            raise ValueError(f"FKP_PROFILE={env!r}: expected one of {', '.join(PROFILES)}")
        return env
    if default:
        return default
    return "quick" if fdata.data_source() == "synthetic" else "full"


def comparison_profile() -> str:
    """Profile for chapter 5's many comparison runs: ``quick`` when the quick profile is in force,
    else ``compare``."""
    return "quick" if current_profile() == "quick" else "compare"


# ---------------------------------------------------------------------------------------------
# Splits


def random_split(n: int, val_fraction: float = 0.15, seed: int = DEFAULT_SEED):
    """Shuffle row indices and cut: (train_idx, val_idx). Flatters models on near-duplicate data."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def eye_aligned_thumbnails(images: np.ndarray, keypoints: np.ndarray, size: int = 24) -> np.ndarray:
    """Small face thumbnails rotated and scaled so the eye centres land on fixed positions.

    Returns float32 ``(N, size*size)`` rows with zero mean and unit norm, so a dot product is a
    correlation. Faces without both eye labels use Kaggle's mean eye positions.
    """
    img = images.astype(np.float32)
    le, re = keypoints[:, 0:2].astype(np.float64), keypoints[:, 2:4].astype(np.float64)
    ok = ~(np.isnan(le).any(1) | np.isnan(re).any(1))
    le = np.where(ok[:, None], le, [66.4, 37.6])
    re = np.where(ok[:, None], re, [30.3, 37.9])
    centre, d = (le + re) / 2, le - re
    scale = np.hypot(d[:, 0], d[:, 1]) / (size * 0.375)
    ang = np.arctan2(d[:, 1], d[:, 0])
    u, v = np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - size * 0.375)
    u, v = u.ravel()[None], v.ravel()[None]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x = np.clip(centre[:, :1] + scale[:, None] * (c * u - s * v), 0, 95)
    y = np.clip(centre[:, 1:] + scale[:, None] * (s * u + c * v), 0, 95)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, 95), np.minimum(y0 + 1, 95)
    fx, fy, r = x - x0, y - y0, np.arange(len(img))[:, None]
    t = (
        img[r, y0, x0] * (1 - fx) * (1 - fy)
        + img[r, y0, x1] * fx * (1 - fy)
        + img[r, y1, x0] * (1 - fx) * fy
        + img[r, y1, x1] * fx * fy
    )
    t -= t.mean(1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-6
    return t.astype(np.float32)


def near_duplicate_groups(
    images: np.ndarray, keypoints: np.ndarray, threshold: float = 0.85
) -> np.ndarray:
    """Group faces whose eye-aligned thumbnails correlate at ``threshold`` or more (linked
    transitively: frames of one video chain together). Returns int group labels ``(N,)``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    t = eye_aligned_thumbnails(images, keypoints)
    n = len(t)
    rows, cols = [], []
    for start in range(0, n, 1024):  # blocks keep memory at 1024 x N
        c = t[start : start + 1024] @ t.T
        r, k = np.nonzero(c >= threshold)
        rows.append(r + start)
        cols.append(k)
    r, k = np.concatenate(rows), np.concatenate(cols)
    graph = csr_matrix((np.ones(len(r), np.int8), (r, k)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def grouped_split(
    images: np.ndarray,
    keypoints: np.ndarray,
    val_fraction: float = 0.15,
    seed: int = DEFAULT_SEED,
    threshold: float = 0.85,
):
    """Validation split that keeps each group of near-duplicate faces on one side.

    Returns (train_idx, val_idx). Groups are drawn in a seeded random order into validation
    until it holds ``val_fraction`` of the rows; a group that would overshoot by more than half
    the target stays in training.
    """
    groups = near_duplicate_groups(images, keypoints, threshold)
    rng = np.random.default_rng(seed)
    sizes = np.bincount(groups)
    target = val_fraction * len(groups)
    val_groups, n_val = [], 0
    for g in rng.permutation(len(sizes)):
        if n_val >= target:
            break
        if n_val + sizes[g] > target * 1.5:
            continue
        val_groups.append(g)
        n_val += sizes[g]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# ---------------------------------------------------------------------------------------------
# tf.data


def make_dataset(
    images: np.ndarray,
    keypoints: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    augment_config=None,
    seed: int = DEFAULT_SEED,
):
    """A ``tf.data`` pipeline: cache, shuffle, batch, augment (training only), prefetch.

    Images uint8 (N, 96, 96) become float32 (B, 96, 96, 1) in [0, 1]; keypoints stay pixels with
    NaN for missing. Training datasets repeat forever (use ``steps_per_epoch``) so that each
    batch gets a distinct, seeded augmentation; the same seed gives the same batches.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images[..., None], keypoints.astype(np.float32)))
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=training)

    def to_float(x, y):
        return tf.cast(x, tf.float32) / 255.0, y

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training and augment_config is not None:
        from fkp_helpers import augment

        def aug(i, batch):
            x, y = batch
            return augment.tf_augment(x, y, augment_config, tf.stack([tf.cast(seed, tf.int64), i]))

        ds = ds.enumerate().map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Precision


def bf16_supported() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX), or a GPU is present."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def set_precision(precision: str = "auto") -> str:
    """Set Keras's global dtype policy: ``mixed_bfloat16`` where it is fast, else ``float32``."""
    import keras

    if precision == "auto":
        precision = "mixed_bfloat16" if bf16_supported() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision


# ---------------------------------------------------------------------------------------------
# Predictions


def predict_keypoints(
    model, images: np.ndarray, *, flip_average: bool = False, batch_size: int = 64
) -> np.ndarray:
    """Predict keypoints (float32 ``(N, 30)``, pixels) for uint8 or [0, 1] images ``(N, 96, 96)``.

    With ``flip_average`` the model also sees each mirrored face; the mirror's points are mapped
    back (x -> 95 - x, left/right names swapped) and averaged with the direct prediction.
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    pred = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)
    if not flip_average:
        return pred
    flipped = np.asarray(model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0), np.float32)
    return (pred + unflip_keypoints(flipped)) / 2


def unflip_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Map keypoints predicted on a mirrored image back to the original: x -> 95 - x and every
    left keypoint swapped with its right twin. Works on ``(..., 30)`` arrays of pixels."""
    k = np.asarray(keypoints, np.float32).reshape(*np.shape(keypoints)[:-1], fdata.N_KEYPOINTS, 2)
    k = k[..., fdata.FLIP_PERMUTATION, :].copy()
    k[..., 0] = fdata.FLIP_X_CONSTANT - k[..., 0]
    return k.reshape(*k.shape[:-2], 2 * fdata.N_KEYPOINTS)


def masked_rmse(y_true: np.ndarray, y_pred: np.ndarray, axis=None) -> np.ndarray | float:
    """RMSE in pixels over labelled coordinates (NaN in ``y_true`` skipped).

    ``axis=None``: one number; ``axis=0``: per column. Returns NaN where nothing is labelled.
    """
    err = np.square(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.nanmean(err, axis=axis))


def per_keypoint_rmse(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE per keypoint name (x and y pooled), pixels."""
    err = np.square(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))
    err = err.reshape(len(err), fdata.N_KEYPOINTS, 2)
    out = {}
    for k, name in enumerate(fdata.KEYPOINT_NAMES):
        e = err[:, k][~np.isnan(err[:, k])]
        out[name] = float(np.sqrt(e.mean())) if e.size else float("nan")
    return out


def mean_shape(keypoints: np.ndarray) -> np.ndarray:
    """The average face: per-column mean of the labelled values, float32 (30,) pixels.

    A column with no label at all gives NaN (which every masked metric skips)."""
    k = np.asarray(keypoints, np.float64)
    n = np.sum(~np.isnan(k), axis=0)
    total = np.nansum(k, axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class RunResult:
    """A finished run: the Keras model, its per-epoch history and its metrics (see metrics.json)."""

    model: object
    history: dict
    metrics: dict
    out_dir: Path | None = None
    extra: dict = field(default_factory=dict)


class _TimeLimit:
    """Keras callback: stop before an epoch that would end past ``limit_s`` seconds."""

    def __new__(cls, limit_s: float):
        import keras

        class TimeLimit(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.perf_counter()
                self.last = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.e0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                self.last = now - self.e0
                if now - self.t0 + self.last > limit_s:
                    print(f"\nstopping: the next epoch would pass the {limit_s:.0f} s time limit")
                    self.model.stop_training = True

        return TimeLimit()


class _KeepBest:
    def __new__(cls, monitor: str = "val_rmse"):
        import keras

        class KeepBest(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.best, self.best_epoch, self.weights = np.inf, -1, None

            def on_epoch_end(self, epoch, logs=None):
                v = (logs or {}).get(monitor)
                if v is not None and v < self.best:
                    self.best, self.best_epoch = float(v), epoch
                    self.weights = self.model.get_weights()

            def on_train_end(self, logs=None):
                if self.weights is not None:
                    self.model.set_weights(self.weights)

        return KeepBest()


def build_model(kind: str, profile: Profile, n_keypoints: int = fdata.N_KEYPOINTS):
    """``"resnet"`` (the course's strong model) or ``"baseline"`` (the classic CNN)."""
    from fkp_helpers import models

    if kind == "resnet":
        return models.keypoint_resnet(widths=profile.widths, n_keypoints=n_keypoints)
    if kind == "baseline":
        if n_keypoints != fdata.N_KEYPOINTS:
            raise ValueError("the baseline CNN predicts all 15 keypoints")
        return models.baseline_cnn()
    raise ValueError(f"unknown model {kind!r}: expected 'resnet' or 'baseline'")


def default_augment_config():
    """The augmentation the course's training uses: chapter 4's measured ranges at about 70%
    strength (rotation 7 degrees, scale 0.90-1.11, shift 3 px, brightness 0.12, contrast 0.3).

    On a 20-minute CPU budget the network cannot fit the full ranges; the lighter ones scored
    better, and chapter 5's comparison table measures both.
    """
    from fkp_helpers import augment

    return augment.AugmentConfig(
        rotation_deg=7.0, scale=(0.9, 1.11), translate_px=3.0, brightness=0.12, contrast=0.3
    )


def train_model(
    images: np.ndarray,
    keypoints: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    profile: str | Profile = "full",
    model: str = "resnet",
    augment_config="default",
    seed: int = DEFAULT_SEED,
    strategy=None,
    out_dir: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    precision: str = "auto",
    val_keypoints: np.ndarray | None = None,
    deterministic: bool = False,
) -> RunResult:
    """Train one model and measure it on the validation rows.

    images: uint8 (N, 96, 96); keypoints: float32 (N, 30) pixels, NaN = missing (the masked
    loss skips them; a caller who filled them in trains on the filled values). The validation
    score always uses ``val_keypoints`` (default: ``keypoints``) with its true NaNs, so filled
    labels never flatter a strategy. ``strategy``: an optional ``tf.distribute`` strategy
    (e.g. ``MirroredStrategy()`` for several GPUs); the code path is the same.
    ``augment_config``: ``"default"``, ``None`` (no augmentation) or an ``AugmentConfig``.
    """
    import keras

    from fkp_helpers import models

    prof = PROFILES[profile] if isinstance(profile, str) else profile
    rng = seed_everything(seed, deterministic=deterministic)
    prec = set_precision(precision)
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    if prof.max_train_rows and len(train_idx) > prof.max_train_rows:
        train_idx = np.sort(rng.choice(train_idx, prof.max_train_rows, replace=False))
    if prof.max_val_rows and len(val_idx) > prof.max_val_rows:
        val_idx = np.sort(rng.choice(val_idx, prof.max_val_rows, replace=False))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(
            f"training needs rows on both sides: {len(train_idx)} train, {len(val_idx)} validation"
        )
    if augment_config == "default":
        augment_config = default_augment_config()
    y_val_true = (keypoints if val_keypoints is None else val_keypoints)[val_idx]
    n_kp = keypoints.shape[1] // 2

    bs = prof.batch_size
    steps = max(1, len(train_idx) // bs)
    train_ds = make_dataset(
        images[train_idx],
        keypoints[train_idx],
        bs,
        training=True,
        augment_config=augment_config,
        seed=seed,
    )
    val_ds = make_dataset(images[val_idx], y_val_true, 64, training=False)

    total = steps * prof.epochs
    warm = int(steps * prof.warmup_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=prof.learning_rate * 0.1,
        decay_steps=max(1, total - warm),
        warmup_target=prof.learning_rate,
        warmup_steps=warm,
        alpha=0.01,
    )

    def compile_model():
        net = build_model(model, prof, n_kp)
        net.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=prof.weight_decay),
            loss=models.masked_mse,
            metrics=[models.MaskedRMSE(name="rmse")],
        )
        return net

    if strategy is not None:
        with strategy.scope():
            net = compile_model()
    else:
        net = compile_model()

    callbacks = [_KeepBest("val_rmse")]
    if prof.time_limit_s:
        callbacks.append(_TimeLimit(prof.time_limit_s))
    if prof.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_rmse", patience=prof.patience, mode="min")
        )
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(out / "history.csv")))
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(out / "checkpoint.keras"), monitor="val_rmse", mode="min", save_best_only=True
            )
        )
    if verbose == "auto":
        verbose = 2 if "ipykernel" in sys.modules else 1

    t0 = time.perf_counter()
    hist = net.fit(
        train_ds,
        epochs=prof.epochs,
        steps_per_epoch=steps,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - t0
    keep = callbacks[0]

    pred = predict_keypoints(net, images[val_idx])
    pred_flip = predict_keypoints(net, images[val_idx], flip_average=True)
    base = np.broadcast_to(mean_shape(keypoints[train_idx]), y_val_true.shape)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    metrics = {
        "val_rmse": float(masked_rmse(y_val_true, pred)),
        "val_rmse_flip_average": float(masked_rmse(y_val_true, pred_flip)),
        "val_rmse_per_keypoint": per_keypoint_rmse(y_val_true, pred),
        "baseline_val_rmse": float(masked_rmse(y_val_true, base)),
        "train_seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seed": seed,
        "profile": prof.name,
        "model": model,
        "precision": prec,
        "params": int(net.count_params()),
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(keep.best_epoch) + 1,
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "augment": None if augment_config is None else asdict(augment_config),
        "train_images_per_second": round(steps * bs * len(history.get("loss", [])) / seconds, 1),
    }
    metrics["ratio_to_baseline"] = metrics["val_rmse"] / metrics["baseline_val_rmse"]
    metrics["flip_average_helps"] = metrics["val_rmse_flip_average"] < metrics["val_rmse"]
    if out is not None:
        net.save(out / "model.keras")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (out / "checkpoint.keras").unlink(missing_ok=True)
    return RunResult(net, history, metrics, out)


# ---------------------------------------------------------------------------------------------
# Missing-label strategies, measured the same way (chapter 5)

STRATEGY_NAMES = ("drop", "ffill", "mean", "mask", "separate")


def train_strategy(
    strategy_name: str,
    images: np.ndarray,
    keypoints: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    **kwargs,
) -> RunResult:
    """Train with one way of handling missing labels; validation always uses the true labels.

    ``drop``: complete training rows only. ``ffill``/``mean``: training labels filled in
    (:mod:`fkp_helpers.missing`). ``mask``: every row, missing labels skipped by the loss.
    ``separate``: one model for the 4 core keypoints on every row and one for all 15 on the
    complete rows; the core points come from the first, the others from the second.
    """
    from fkp_helpers import missing

    train_idx = np.asarray(train_idx)
    if strategy_name == "mask":
        return train_model(images, keypoints, train_idx, val_idx, **kwargs)
    if strategy_name == "drop":
        keep = train_idx[missing.complete_rows(keypoints[train_idx])]
        return train_model(images, keypoints, keep, val_idx, **kwargs)
    if strategy_name in ("ffill", "mean"):
        filled = keypoints.copy()
        filled[train_idx] = (
            missing.forward_fill(keypoints[train_idx])
            if strategy_name == "ffill"
            else missing.mean_impute(keypoints[train_idx])
        )
        return train_model(images, filled, train_idx, val_idx, val_keypoints=keypoints, **kwargs)
    if strategy_name == "separate":
        core_cols = np.array([2 * k + a for k in fdata.CORE_INDICES for a in (0, 1)])
        core_only = np.full_like(keypoints, np.nan)
        core_only[:, core_cols] = keypoints[:, core_cols]
        a = train_model(images, core_only, train_idx, val_idx, **kwargs)
        full_rows = train_idx[missing.complete_rows(keypoints[train_idx])]
        b = train_model(images, keypoints, full_rows, val_idx, **kwargs)
        y = keypoints[val_idx]
        out = {}
        for flip in (False, True):
            pa = predict_keypoints(a.model, images[val_idx], flip_average=flip)
            pb = predict_keypoints(b.model, images[val_idx], flip_average=flip)
            pb[:, core_cols] = pa[:, core_cols]
            out[flip] = float(masked_rmse(y, pb))
        metrics = dict(b.metrics)
        metrics.update(
            val_rmse=out[False],
            val_rmse_flip_average=out[True],
            train_seconds=a.metrics["train_seconds"] + b.metrics["train_seconds"],
            n_train=a.metrics["n_train"],
        )
        metrics["ratio_to_baseline"] = metrics["val_rmse"] / metrics["baseline_val_rmse"]
        return RunResult(b.model, b.history, metrics, None, extra={"core_model": a.model})
    raise ValueError(f"unknown strategy {strategy_name!r}: expected one of {STRATEGY_NAMES}")


# ---------------------------------------------------------------------------------------------
# Runs saved and reused: the book trains once, rebuilds reuse the run


def runs_dir() -> Path:
    """Where saved runs live: ``$FKP_RUNS_DIR``, else ``<cache dir>/runs``."""
    env = os.environ.get("FKP_RUNS_DIR")
    return Path(env) if env else fdata.default_cache_dir() / "runs"


def code_fingerprint() -> str:
    """Hash of the package's training-relevant source: a code change invalidates saved runs."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("data.py", "augment.py", "missing.py", "models.py", "train.py", "seeding.py"):
        p = here / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def data_fingerprint(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"


def run_key(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256((code_fingerprint() + blob).encode()).hexdigest()[:16]


def saved_run(tag: str, settings: dict, train_fn) -> dict:
    """Return the metrics (and the model path) of a saved run with the same code, data and
    settings, or call ``train_fn(out_dir) -> RunResult`` to make one and save it.

    ``settings`` must name everything that changes the result (data fingerprint, profile, seed,
    strategy...). The returned dict is the run's metrics plus ``run_dir`` and ``reused``.
    """
    out = runs_dir() / f"{tag}-{run_key(settings)}"
    mfile = out / "metrics.json"
    if mfile.exists():
        metrics = json.loads(mfile.read_text())
        metrics.update(run_dir=str(out), reused=True)
        return metrics
    tmp = out.with_name(out.name + ".partial")
    result = train_fn(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "model.keras").exists():
        result.model.save(tmp / "model.keras")
    (tmp / "metrics.json").write_text(json.dumps(result.metrics, indent=1))
    (tmp / "history.json").write_text(json.dumps(result.history, indent=1))
    (tmp / "settings.json").write_text(json.dumps(settings, indent=1, default=str))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    metrics = dict(result.metrics)
    metrics.update(run_dir=str(out), reused=False)
    return metrics


def load_history(run_dir: str | os.PathLike) -> dict:
    """Per-epoch history of a saved run (loss, rmse, val_loss, val_rmse, learning rate)."""
    return json.loads((Path(run_dir) / "history.json").read_text())


# ---------------------------------------------------------------------------------------------
# Command line: fkp train / fkp submit


def fit_reference(
    data_dir=None, profile: str = "full", out=None, seed: int | None = None, verbose="auto"
) -> RunResult:
    """The reference run behind ``fkp train`` and chapter 5: the strong model, every label
    (masked loss), default augmentation, grouped validation split. Writes to ``out`` if given."""
    seed = DEFAULT_SEED if seed is None else seed
    train = fdata.load_training(data_dir)
    tr_idx, val_idx = grouped_split(train.images, train.keypoints, seed=seed)
    print(
        f"fkp train: {len(train)} faces from {train.path.name} ({train.source}); "
        f"{len(tr_idx)} train / {len(val_idx)} validation (grouped split); profile {profile}",
        file=sys.stderr,
    )
    return train_model(
        train.images,
        train.keypoints,
        tr_idx,
        val_idx,
        profile=profile,
        seed=seed,
        out_dir=out,
        verbose=verbose,
    )


def reference_run(data_dir=None, profile: str | None = None, seed: int | None = None) -> dict:
    """The reference run, trained once and reused while code, data and settings are unchanged.

    Returns its metrics plus ``run_dir`` (which holds ``model.keras``) and ``reused``.
    """
    profile = profile or current_profile()
    seed = DEFAULT_SEED if seed is None else seed
    src = fdata.find_file(fdata.TRAINING_NAMES, fdata.data_dir(data_dir))
    settings = {"data": data_fingerprint(src), "profile": profile, "seed": seed}
    return saved_run(
        f"reference-{profile}",
        settings,
        lambda out: fit_reference(data_dir, profile, out, seed),
    )


def train_cli(
    data_dir=None, profile: str = "full", out="runs/full", seed: int | None = None, verbose="auto"
) -> dict:
    """``fkp train``: :func:`fit_reference` with its outputs written to ``out``.

    Writes model.keras, history.csv, history.json and metrics.json (val_rmse,
    val_rmse_per_keypoint, baseline_val_rmse, train_seconds, peak_rss_mb, seed, profile, ...).
    """
    m = fit_reference(data_dir, profile, out, seed, verbose).metrics
    print(
        f"val RMSE {m['val_rmse']:.3f} px (flip-averaged {m['val_rmse_flip_average']:.3f}); "
        f"mean shape {m['baseline_val_rmse']:.3f} px; {m['train_seconds']:.0f} s; "
        f"peak RSS {m['peak_rss_mb']:.0f} MB; written to {out}",
        file=sys.stderr,
    )
    return m


def submit_cli(model_path, data_dir=None, out="submission.csv", flip_average=None) -> Path:
    """``fkp submit``: predict the test set and write Kaggle's RowId,Location file.

    ``flip_average=None`` uses what the training run measured (``flip_average_helps`` in the
    metrics.json beside the model), defaulting to on.
    """
    from fkp_helpers import models

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no such model file (train one with `fkp train`)")
    if flip_average is None:
        mfile = model_path.parent / "metrics.json"
        flip_average = (
            bool(json.loads(mfile.read_text()).get("flip_average_helps", True))
            if mfile.exists()
            else True
        )
    test = fdata.load_test(data_dir)
    lookup = fdata.load_lookup(data_dir)
    model = models.load_model(model_path)
    pred = predict_keypoints(model, test.images, flip_average=flip_average)
    table = fdata.write_submission(pred, lookup, out, image_ids=test.image_ids)
    print(
        f"fkp submit: {len(table)} rows for {len(test)} test faces written to {out} "
        f"(flip averaging {'on' if flip_average else 'off'})",
        file=sys.stderr,
    )
    return Path(out)


# ---------------------------------------------------------------------------------------------
# Chapter 5's comparison: every recipe trained the same way on the same split

COMPARISONS: tuple[dict, ...] = (
    {
        "name": "baseline CNN, drop incomplete rows, no augmentation (the original course)",
        "model": "baseline",
        "strategy": "drop",
        "augment": False,
    },
    {"name": "baseline CNN, masked loss", "model": "baseline", "strategy": "mask"},
    {"name": "residual heatmap net, drop incomplete rows", "model": "resnet", "strategy": "drop"},
    {"name": "residual heatmap net, forward fill", "model": "resnet", "strategy": "ffill"},
    {"name": "residual heatmap net, mean imputation", "model": "resnet", "strategy": "mean"},
    {
        "name": "residual heatmap net, separate 4- and 15-point models",
        "model": "resnet",
        "strategy": "separate",
    },
    {
        "name": "residual heatmap net, masked loss, no augmentation",
        "model": "resnet",
        "strategy": "mask",
        "augment": False,
    },
    {
        "name": "residual heatmap net, masked loss, chapter 4's full-strength augmentation",
        "model": "resnet",
        "strategy": "mask",
        "augment": "full-strength",
    },
    {"name": "residual heatmap net, masked loss", "model": "resnet", "strategy": "mask"},
)
"""The recipes chapter 5 compares. Every one uses the same split, epochs and optimiser."""


def comparison_run(
    spec: dict,
    training: fdata.TrainingSet,
    split: tuple[np.ndarray, np.ndarray],
    *,
    split_name: str,
    profile: str,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Train (or reuse) one recipe of :data:`COMPARISONS`; returns its metrics and run_dir."""
    settings = {
        "data": data_fingerprint(training.path),
        "spec": {k: v for k, v in spec.items() if k != "name"},
        "split": split_name,
        "profile": profile,
        "seed": seed,
    }
    aug = {True: "default", False: None}.get(spec.get("augment", True))
    if spec.get("augment") == "full-strength":
        from fkp_helpers import augment

        aug = augment.AugmentConfig()

    def fit(out_dir):
        return train_strategy(
            spec["strategy"],
            training.images,
            training.keypoints,
            split[0],
            split[1],
            profile=profile,
            model=spec["model"],
            augment_config=aug,
            seed=seed,
            out_dir=out_dir,
        )

    tag = f"compare-{profile}-{spec['model']}-{spec['strategy']}"
    return saved_run(tag, settings, fit)


def compare_recipes(
    training: fdata.TrainingSet,
    split: tuple[np.ndarray, np.ndarray],
    *,
    split_name: str = "grouped",
    profile: str | None = None,
    specs: tuple[dict, ...] = COMPARISONS,
    seed: int = DEFAULT_SEED,
):
    """Run every recipe in ``specs`` on one split; returns (table, runs).

    The table has one row per recipe: validation RMSE with and without test-time flip
    averaging, the ratio to the mean-shape baseline (the mean of the true training labels,
    scored on the validation faces), training rows and seconds; plus the mean shape itself.
    """
    import pandas as pd

    profile = profile or comparison_profile()
    y_val = training.keypoints[split[1]]
    mean = np.broadcast_to(mean_shape(training.keypoints[split[0]]), y_val.shape)
    base = float(masked_rmse(y_val, mean))
    runs = {}
    rows = [
        {
            "recipe": "mean shape (no training)",
            "val RMSE (px)": base,
            "with flip averaging (px)": base,
            "ratio to mean shape": 1.0,
            "train rows": None,
            "seconds": 0.0,
        }
    ]
    for spec in specs:
        m = comparison_run(spec, training, split, split_name=split_name, profile=profile, seed=seed)
        runs[spec["name"]] = m
        rows.append(
            {
                "recipe": spec["name"],
                "val RMSE (px)": m["val_rmse"],
                "with flip averaging (px)": m["val_rmse_flip_average"],
                "ratio to mean shape": m["val_rmse"] / base,
                "train rows": m["n_train"],
                "seconds": m["train_seconds"],
            }
        )
    return pd.DataFrame(rows).set_index("recipe"), runs
