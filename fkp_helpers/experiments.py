"""Experiment bookkeeping around the training loop: profiles, the data split in force, saved runs
and their fingerprints, chapter 5's comparison recipes, the reference run and the ``fkp train`` /
``fkp submit`` entry points.

The training itself is :func:`fkp_helpers.training.train_model`, the code chapter 5 writes out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fkp_helpers import data as fdata
from fkp_helpers import missing, splits
from fkp_helpers.keypoints import CORE_COLUMNS, masked_rmse, mean_shape
from fkp_helpers.seeding import DEFAULT_SEED
from fkp_helpers.training import (
    Profile,
    RunResult,
    chosen_look,
    predict_as_chosen,
    predict_keypoints,
    profile_rows,
    read_metrics,
    self_train,
    train_model,
)

# ---------------------------------------------------------------------------------------------
# Profiles

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
    "full": Profile("full", epochs=80, batch_size=32, minutes=18.0, widths=(24, 48, 96, 192)),
}
"""The three budgets of one code path: ``quick`` (what CI and nbval run), ``compare`` (chapter 5's
comparison runs, a few minutes each) and ``full`` (the reference model: a budget of 18 minutes of
wall time, data loading included, with the schedule laid out over the epochs that fit on the
machine, at most 80). ``fkp train --minutes M`` changes the
budget, ``--epochs N`` replaces it with exactly N epochs (repeatable).

The full profile's widths, 24-48-96-192 (about 1.7M parameters), are three quarters of the
network's default 32-256 (3.0M): at the same budget a 2-core CPU trains 1.5-1.6 times the
epochs, and it scored lower validation RMSE on two splits of the stand-in on a float32-only
CPU, and again on the course's split on a 2-core CPU with native bfloat16, which trains either
network nearly three times as many epochs (``FKP_RECIPE_MINUTES=18
FKP_RECIPE_WIDTHS=32,64,128,256 FKP_RECIPE_ROWS="full-profile widths" make bench-recipes``
measures the choice on the data in force, at the full profile's budget)."""


def resolve_profile(
    profile: str | Profile, minutes: float | None = None, epochs: int | None = None
) -> Profile:
    """A profile by name (or as given), with ``minutes`` (a budget, the epochs as its cap) or
    ``epochs`` (exactly that many, no budget) replacing its own length."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    if minutes is not None and epochs is not None:
        raise ValueError("give a budget in minutes or a number of epochs, not both")
    if minutes is not None:
        if minutes <= 0:
            raise ValueError(f"--minutes must be positive, got {minutes}")
        p = replace(p, minutes=float(minutes))
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {epochs}")
        p = replace(p, epochs=int(epochs), minutes=None)
    return p


REFERENCE_LOSS = "l1"
"""The reference model's loss, a name of :data:`fkp_helpers.models.LOSSES`: the masked absolute
error (L1). Chapter 5 teaches and compares recipes with the masked squared error; at the full
profile's budget L1 scored lower validation RMSE on two splits (``FKP_RECIPE_MINUTES=18
FKP_RECIPE_WIDTHS=24,48,96,192 FKP_RECIPE_ROWS="squared-error loss" make bench-recipes``
measures it on the data in force, at the full profile's budget and widths)."""


GPU_BATCH_PER_DEVICE = 128
"""Training faces per step on each GPU (the CPU profiles use 32): enough to keep a GPU busy with
this small network. Chosen by reasoning, not measured: no GPU was available to this course."""


def fit_to_hardware(profile: Profile, gpus: list[dict]) -> tuple[Profile, str]:
    """The profile adapted to the GPUs present (``gpus``: as
    :func:`fkp_helpers.precision.gpu_details` gives them). Returns ``(profile, reason)``.

    On CPUs the profile is returned as it is. On ``n`` GPUs the batch becomes
    :data:`GPU_BATCH_PER_DEVICE` x ``n`` (so each GPU gets a full batch under ``MirroredStrategy``);
    the learning rate grows with the square root of the batch ratio, a common rule for Adam-type
    optimisers, and the most epochs a budget may plan grow with the batch ratio, so the run may
    take as many optimiser steps as on a CPU.
    """
    if not gpus:
        return profile, f"batch {profile.batch_size}: no GPU"
    batch = GPU_BATCH_PER_DEVICE * len(gpus)
    ratio = batch / profile.batch_size
    fitted = replace(
        profile,
        batch_size=batch,
        learning_rate=profile.learning_rate * ratio**0.5,
        epochs=int(round(profile.epochs * ratio)) if profile.minutes else profile.epochs,
    )
    return fitted, (
        f"batch {batch} on {len(gpus)} GPU(s) ({GPU_BATCH_PER_DEVICE} each), learning rate "
        f"{fitted.learning_rate:.2g} (x sqrt({ratio:g})), at most {fitted.epochs} epochs"
    )


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


def course_split(training: fdata.TrainingSet, seed: int = DEFAULT_SEED):
    """The split every chapter uses: (train_idx, val_idx, test_idx) of ``training`` by
    near-duplicate groups (:func:`fkp_helpers.splits.three_way_split`, 70/15/15). Validation makes
    every choice; the test part is only read to report."""
    return splits.three_way_split(training.images, training.keypoints, seed=seed)


# ---------------------------------------------------------------------------------------------
# Missing-label strategies, measured the same way (chapter 5)

STRATEGY_NAMES = (*missing.STRATEGIES, "pseudo")
"""Chapter 3's strategies, and ``pseudo``: self-training, which needs a trained network."""


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
    ``pseudo``: the masked loss for half the budget, then a second round on the training labels
    filled with that network's predictions (:func:`fkp_helpers.training.self_train`).
    """
    train_idx = np.asarray(train_idx)
    if strategy_name == "mask":
        return train_model(images, keypoints, train_idx, val_idx, **kwargs)
    if strategy_name == "pseudo":
        return self_train(images, keypoints, train_idx, val_idx, **kwargs)
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
        core_cols = CORE_COLUMNS
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


def runs_dir() -> Path:
    """Where saved runs live: ``$FKP_RUNS_DIR``, else ``<cache dir>/runs``."""
    env = os.environ.get("FKP_RUNS_DIR")
    return Path(env) if env else fdata.default_cache_dir() / "runs"


TRAINING_SOURCES = (
    "keypoints.py",
    "data.py",
    "augment.py",
    "missing.py",
    "models.py",
    "training.py",
    "experiments.py",
    "splits.py",
    "seeding.py",
    "precision.py",
    "photo.py",
)
"""The package's files whose change invalidates saved runs (``photo.py``: every run measures
and chooses the second look, :func:`fkp_helpers.photo.look_again`)."""


def code_fingerprint() -> str:
    """Hash of the package's training-relevant source: a code change invalidates saved runs."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in TRAINING_SOURCES:
        p = here / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def data_fingerprint(path: Path) -> str:
    """What a saved run knows of its data file: the SHA-256 of its bytes (``sha256:<hex>``).

    The same file moved, copied, unzipped or downloaded again keeps its saved runs; a changed
    byte trains them again. Hashed once per process while the file's size and modification
    time are unchanged (a 60 MB file takes a fraction of a second)."""
    p = Path(path).resolve()
    st = p.stat()
    return _file_sha256(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


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
# The reference run and the command line


def train_reference_run(
    data_dir=None,
    profile: str | Profile = "full",
    out=None,
    seed: int | None = None,
    verbose="auto",
    precision: str = "auto",
    started: float | None = None,
    gpus: list[dict] | None = None,
) -> RunResult:
    """Train the reference run: the residual heatmap network, every label (the masked
    :data:`REFERENCE_LOSS`), the training augmentation, the course's three-way split
    (validation chooses, test reports).
    Writes model.keras, history and metrics.json to ``out`` if given. Behind ``fkp train``.
    ``started``: when the budget's clock started (``time.time()``; default now). On GPUs the
    batch and learning rate follow :func:`fit_to_hardware` (``gpus``: default, asked of
    TensorFlow), and several GPUs train through ``MirroredStrategy``."""
    started = time.time() if started is None else started
    if gpus is None:
        from fkp_helpers.precision import gpu_details

        gpus = gpu_details()
    profile, hardware = fit_to_hardware(resolve_profile(profile), gpus)
    distribute = None
    if len(gpus) > 1:  # several GPUs: one replica each
        import tensorflow as tf

        distribute = tf.distribute.MirroredStrategy()
    seed = DEFAULT_SEED if seed is None else seed
    training = fdata.load_training(data_dir)
    tr_idx, val_idx, test_idx = course_split(training, seed)
    print(
        f"fkp train: {len(training)} faces from {training.path.name} ({training.source}); "
        f"{len(tr_idx)} train / {len(val_idx)} validation / {len(test_idx)} test "
        f"(grouped split); profile {profile.name}, "
        + (
            f"a budget of {profile.minutes:g} minutes"
            if profile.minutes
            else f"{profile.epochs} epochs"
        )
        + f"; {hardware}",
        file=sys.stderr,
    )
    return train_model(
        training.images,
        training.keypoints,
        tr_idx,
        val_idx,
        test_idx,
        profile=profile,
        seed=seed,
        out_dir=out,
        verbose=verbose,
        precision=precision,
        started=started,
        distribute=distribute,
        loss=REFERENCE_LOSS,
    )


def reference_run(data_dir=None, profile: str | None = None, seed: int | None = None) -> dict:
    """The reference run, trained once by :func:`train_reference_run` and reused while code, data
    and settings are unchanged. Returns its metrics plus ``run_dir`` (which holds
    ``model.keras``) and ``reused``."""
    profile = profile or current_profile()
    seed = DEFAULT_SEED if seed is None else seed
    src = fdata.find_file(fdata.TRAINING_NAMES, fdata.data_dir(data_dir))
    settings = {"data": data_fingerprint(src), "profile": profile, "seed": seed}
    return saved_run(
        f"reference-{profile}",
        settings,
        lambda out: train_reference_run(data_dir, profile, out, seed),
    )


def train_cli(
    data_dir=None,
    profile: str = "full",
    out="runs/full",
    seed: int | None = None,
    verbose="auto",
    precision: str = "auto",
    minutes: float | None = None,
    epochs: int | None = None,
    started: float | None = None,
) -> dict:
    """``fkp train``: :func:`train_reference_run` with its outputs written to ``out``.

    ``minutes`` sets the budget, counted from ``started`` (a ``time.time()``; ``fkp train``
    passes the moment it started, so importing TensorFlow and loading the data are inside the
    budget; default: now), ``epochs`` an exact length instead (see :func:`resolve_profile`). Writes
    model.keras, history.csv, history.json and metrics.json (val_rmse and test_rmse with and
    without flip averaging, the mean shape on each part, per-keypoint RMSE, train_seconds,
    wall_seconds, the budget's plan, peak_rss_mb, seed, profile, precision, ...).
    """
    p = resolve_profile(profile, minutes, epochs)
    m = train_reference_run(data_dir, p, out, seed, verbose, precision, started).metrics
    print(
        f"validation RMSE {m['val_rmse']:.3f} px (flip-averaged "
        f"{m['val_rmse_flip_average']:.3f}, {m['val_rmse_flip_average_offset']:.3f} with the "
        f"labels' offset; second look {m['val_rmse_second_look']:.3f}, "
        f"{m['val_rmse_second_look_offset']:.3f} with it; "
        f"mean shape {m['baseline_val_rmse']:.3f}); "
        f"test RMSE {m['test_rmse']:.3f} px (flip-averaged {m['test_rmse_flip_average']:.3f}, "
        f"{m['test_rmse_flip_average_offset']:.3f}; "
        f"second look {m['test_rmse_second_look']:.3f}, "
        f"{m['test_rmse_second_look_offset']:.3f}; "
        f"mean shape {m['baseline_test_rmse']:.3f}); chosen: {chosen_look(m)}; "
        f"{m['train_seconds']:.0f} s; "
        f"{m['wall_seconds']:.0f} s in all, {m['epochs_run']} epochs; "
        f"peak RSS {m['peak_rss_mb']:.0f} MB; written to {out}",
        file=sys.stderr,
    )
    return m


def submit_cli(
    model_path,
    data_dir=None,
    out="submission.csv",
    flip_average=None,
    second_look=None,
    offset=None,
) -> Path:
    """``fkp submit``: predict the test set and write Kaggle's RowId,Location file.

    By default the faces are predicted the way the training run chose on its validation faces
    (``flip_average``, ``second_look`` and ``offset`` in the metrics.json beside the model;
    without one: flip-averaged, no second look, no offset); ``flip_average``, ``second_look`` or
    ``offset`` (booleans) override that choice. The second look is always flip-averaged, so
    ``flip_average=False`` alone means one look, and with ``second_look=True`` it is an error; the
    offset is the run's ``label_offset`` (measured on its training faces) and needs a
    flip-averaged look and a metrics.json that holds it.
    """
    from fkp_helpers import models

    model_path = Path(model_path)
    mfile = model_path.parent / "metrics.json"
    chosen = read_metrics(model_path)
    choice = {
        "flip_average": bool(chosen.get("flip_average", True)),
        "second_look": bool(chosen.get("second_look", False)),
        "offset": bool(chosen.get("offset", False)),
    }
    if flip_average is not None:
        choice["flip_average"] = bool(flip_average)
        if not flip_average and second_look is None:
            choice["second_look"] = False  # --no-flip: one look (the second look is flip-averaged)
    if second_look is not None:
        choice["second_look"] = bool(second_look)
    if choice["second_look"] and flip_average is False:
        raise ValueError("the second look is flip-averaged: use --second-look without --no-flip")
    if offset is not None:
        choice["offset"] = bool(offset)
    if choice["offset"]:  # with one look, chosen_look and predict_as_chosen leave it out
        if not mfile.is_file():
            raise ValueError(f"{mfile}: no such file, so no label offset to subtract")
        if "label_offset" not in chosen:
            raise ValueError(f"{mfile}: no label_offset to subtract (a run saved before it)")
        if offset and not (choice["flip_average"] or choice["second_look"]):
            raise ValueError("the labels' offset is measured flip-averaged: use it with --flip")
        choice["label_offset"] = chosen["label_offset"]
    model = models.load_model(model_path)
    test = fdata.load_test(data_dir)
    lookup = fdata.load_lookup(data_dir)
    pred = predict_as_chosen(model, test.images, choice)
    table = fdata.write_submission(pred, lookup, out, image_ids=test.image_ids)
    print(
        f"fkp submit: {len(table)} rows for {len(test)} test faces written to {out} "
        f"({chosen_look(choice)})",
        file=sys.stderr,
    )
    return Path(out)


# ---------------------------------------------------------------------------------------------
# Chapter 5's comparison: every recipe trained the same way on the same split

COMPARISONS: dict[str, dict] = {
    "original course": {
        "label": "baseline CNN, drop incomplete rows, no augmentation (the original course)",
        "model": "baseline",
        "strategy": "drop",
        "augment": False,
    },
    "baseline CNN, masked": {
        "label": "baseline CNN, masked loss",
        "model": "baseline",
        "strategy": "mask",
    },
    "drop": {
        "label": "residual heatmap net, drop incomplete rows",
        "model": "resnet",
        "strategy": "drop",
    },
    "forward fill": {
        "label": "residual heatmap net, forward fill",
        "model": "resnet",
        "strategy": "ffill",
    },
    "mean imputation": {
        "label": "residual heatmap net, mean imputation",
        "model": "resnet",
        "strategy": "mean",
    },
    "separate models": {
        "label": "residual heatmap net, separate 4- and 15-point models",
        "model": "resnet",
        "strategy": "separate",
    },
    "no augmentation": {
        "label": "residual heatmap net, masked loss, no augmentation",
        "model": "resnet",
        "strategy": "mask",
        "augment": False,
    },
    "geometric augmentation only": {
        "label": "residual heatmap net, masked loss, training augmentation without brightness "
        "and contrast",
        "model": "resnet",
        "strategy": "mask",
        "augment": "geometric-only",
    },
    "full-strength augmentation": {
        "label": "residual heatmap net, masked loss, chapter 4's full-strength augmentation",
        "model": "resnet",
        "strategy": "mask",
        "augment": "full-strength",
    },
    "reference recipe": {
        "label": "residual heatmap net, masked loss, training augmentation (the reference recipe)",
        "model": "resnet",
        "strategy": "mask",
    },
    "pseudo-labels": {
        "label": "the reference recipe in two rounds: half the epochs, then the other half on "
        "training labels filled with its own predictions",
        "model": "resnet",
        "strategy": "pseudo",
    },
}
"""The recipes chapter 5 compares, by name. Every one uses the same split, epochs and optimiser."""


def _augment_for(spec: dict):
    from fkp_helpers import augment, training

    choice = spec.get("augment", True)
    if choice is True:
        return training.training_augment_config()
    if choice is False:
        return None
    from dataclasses import replace

    if choice == "full-strength":  # chapter 4's ranges; the wide tail as in training
        return replace(augment.AugmentConfig(), wide_p=training.training_augment_config().wide_p)
    if choice == "geometric-only":
        return replace(training.training_augment_config(), photometric_p=0.0)
    raise ValueError(f"unknown augmentation choice {choice!r}")


def comparison_run(
    name: str,
    training: fdata.TrainingSet,
    split: tuple[np.ndarray, np.ndarray],
    *,
    split_name: str,
    profile: str,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Train (or reuse) the recipe ``name`` of :data:`COMPARISONS` on ``split`` (train, val);
    returns its metrics and run_dir."""
    spec = COMPARISONS[name]
    settings = {
        "data": data_fingerprint(training.path),
        "spec": {k: v for k, v in spec.items() if k != "label"},
        "split": split_name,
        "profile": profile,
        "seed": seed,
    }

    def fit(out_dir):
        return train_strategy(
            spec["strategy"],
            training.images,
            training.keypoints,
            split[0],
            split[1],
            profile=PROFILES[profile],
            model=spec["model"],
            augment_config=_augment_for(spec),
            seed=seed,
            out_dir=out_dir,
        )

    slug = name.replace(" ", "-").replace(",", "")
    return saved_run(f"compare-{profile}-{slug}", settings, fit)


def compare_recipes(
    training: fdata.TrainingSet,
    split: tuple[np.ndarray, np.ndarray],
    *,
    split_name: str = "grouped",
    profile: str | None = None,
    names=None,
    seed: int = DEFAULT_SEED,
):
    """Run the recipes ``names`` (default: all of :data:`COMPARISONS`) on one (train, val) split;
    returns (table, runs), both keyed by recipe name.

    The table has one row per recipe: its description, validation RMSE with and without
    test-time flip averaging, the ratio to the mean-shape baseline (the mean of the true training
    labels, scored on the validation faces that the runs score: all of them, or the quick
    profile's subset, :func:`~fkp_helpers.training.profile_rows`), training rows and seconds;
    plus the mean shape.
    """
    import pandas as pd

    profile = profile or comparison_profile()
    names = list(COMPARISONS) if names is None else list(names)
    y_val = training.keypoints[profile_rows(split[1], PROFILES[profile].max_val_rows, seed)]
    base = masked_rmse(
        y_val, np.broadcast_to(mean_shape(training.keypoints[split[0]]), y_val.shape)
    )
    runs = {}
    rows = [
        {
            "name": "mean shape",
            "recipe": "the training faces' average, for every face (no training)",
            "val RMSE (px)": base,
            "with flip averaging (px)": base,
            "ratio to mean shape": 1.0,
            "train rows": None,
            "seconds": 0.0,
        }
    ]
    for name in names:
        m = comparison_run(name, training, split, split_name=split_name, profile=profile, seed=seed)
        runs[name] = m
        rows.append(
            {
                "name": name,
                "recipe": COMPARISONS[name]["label"],
                "val RMSE (px)": m["val_rmse"],
                "with flip averaging (px)": m["val_rmse_flip_average"],
                "ratio to mean shape": m["val_rmse"] / base,
                "train rows": m["n_train"],
                "seconds": m["train_seconds"],
            }
        )
    return pd.DataFrame(rows).set_index("name"), runs


def seed_spread(
    training: fdata.TrainingSet,
    split: tuple[np.ndarray, np.ndarray],
    *,
    name: str = "reference recipe",
    seeds=(DEFAULT_SEED, DEFAULT_SEED + 1, DEFAULT_SEED + 2),
    profile: str | None = None,
):
    """The noise of one comparison row: recipe ``name`` trained with each seed (the weights'
    initialisation, the batch order and the augmentation change; the split does not). Returns a
    table with one row per seed (validation RMSE with and without flip averaging, pixels)."""
    import pandas as pd

    profile = profile or comparison_profile()
    rows = {}
    for seed in seeds:
        m = comparison_run(
            name, training, split, split_name="grouped", profile=profile, seed=int(seed)
        )
        rows[int(seed)] = {
            "val RMSE (px)": m["val_rmse"],
            "with flip averaging (px)": m["val_rmse_flip_average"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "seed"
    return table
