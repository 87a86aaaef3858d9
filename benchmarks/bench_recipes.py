"""Recipe changes measured on one split and one budget (issue: "better use of each minute").

Each row trains the residual heatmap network once, from the same seed, on the course's grouped
split of the data in force, for the same wall-time budget (``FKP_RECIPE_MINUTES``, default 4
minutes a row, the schedule fitted to it by ``training.MinutesBudget``), changing one thing
against the first row. Test-time augmentation rows, and the second look
(``training.predict_second_look``), reuse the first row's model. Prints a table
(Markdown) with seconds, epochs, validation RMSE (flip-averaged) and the ratio to the first row,
plus the spread of the first row over a second seed: read only gaps larger than that.

The labels' offset (chapter 6) is subtracted from the reference's flip-averaged and second-look
predictions in two more rows: measured once on the training faces, it costs nothing a face.

Where the reference's error comes from (:func:`error_sources`, no extra training): the average of
the reference and its second seed (an ensemble of two), how far apart the two models' predictions
are (``recipes_models_disagree_px``), the error they share (``recipes_shared_error_px``: what
averaging many such models would keep) and the reference's RMSE on its own training faces
without augmentation (``recipes_reference_train_rmse_px``). When the shared error is close to
the reference's, the error is not run-to-run variance, and averaging (an ensemble, EMA, more
test-time views) cannot remove it.

Not part of ``make bench`` (13 rows of ``FKP_RECIPE_MINUTES`` each: about an hour at the default
4 minutes): ``make bench-recipes``.
``FKP_RECIPE_WIDTHS=24,48,96,192`` sets the base widths (default: the compare profile's).
``FKP_RECIPE_ROWS="weight decay 0.05,full-strength augmentation"`` trains only those rows beside
the reference and its second seed (names as in :data:`CHANGES`); with
``FKP_RECIPE_MINUTES=18 FKP_RECIPE_WIDTHS=24,48,96,192`` (the full profile's widths) a row is one
full-profile run, and ``FKP_RECIPE_MINUTES=18 FKP_RECIPE_WIDTHS=32,64,128,256
FKP_RECIPE_ROWS="full-profile widths"`` measures the full profile's widths against the network's
default ones. A row whose widths are the base's is left out (it would repeat the reference).
"""

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO.parent / "shared" / "data" / "fkd-standin"
if "FKP_DATA_DIR" not in os.environ and STANDIN.is_dir():
    os.environ["FKP_DATA_DIR"] = str(STANDIN)

from fkp_helpers import augment, data, experiments, training  # noqa: E402
from fkp_helpers.keypoints import masked_rmse, mean_offset  # noqa: E402

MINUTES = float(os.environ.get("FKP_RECIPE_MINUTES", "4"))
BASE_WIDTHS = tuple(int(w) for w in os.environ.get("FKP_RECIPE_WIDTHS", "16,32,64,128").split(","))
FULL_WIDTHS = experiments.PROFILES["full"].widths
REFERENCE_LOSS = experiments.REFERENCE_LOSS
HEATMAP_LOSS_WEIGHT = 0.5
"""The weight of the heatmap loss in the row "heatmap loss" (models.heatmap_kl, in nats, beside the
coordinate loss in pixels)."""
WIDE_WIDTHS = tuple(2 * w for w in BASE_WIDTHS)
NARROW_WIDTHS = tuple(w // 2 for w in BASE_WIDTHS)
TRAINING_AUGMENT = training.training_augment_config()

# name -> (what changes, train_model keyword arguments, profile changes)
CHANGES = {
    "reference": (
        f"the reference model's recipe: masked {REFERENCE_LOSS} loss, AdamW, warm-up + cosine",
        {},
        {},
    ),
    "reference, seed + 1": ("the same, another seed (the noise)", {"seed": 1}, {}),
    "squared-error loss": ("masked MSE on the coordinates (chapter 5's loss)", {"loss": "mse"}, {}),
    "L1 loss": ("masked L1 on the coordinates", {"loss": "l1"}, {}),
    "Wing loss": ("masked Wing loss (w = 4 px, eps = 1 px)", {"loss": "wing"}, {}),
    "heatmap loss": (
        f"plus {HEATMAP_LOSS_WEIGHT:g} x a loss on the heatmaps (models.heatmap_kl: a Gaussian of "
        "one cell around each label)",
        {"heatmap_loss": HEATMAP_LOSS_WEIGHT},
        {},
    ),
    "EMA 0.99": ("evaluate an exponential moving average of the weights", {"ema": 0.99}, {}),
    "weight decay 0.05": (
        "AdamW's decoupled weight decay 0.05 instead of 1e-4",
        {},
        {"weight_decay": 0.05},
    ),
    "full-strength augmentation": (
        "chapter 4's full ranges (augment.AugmentConfig()) instead of 50-70% of them, the "
        "wide tail kept",
        {"augment_config": replace(augment.AugmentConfig(), wide_p=TRAINING_AUGMENT.wide_p)},
        {},
    ),
    "no wide tail": (
        f"no wide tail: none of the faces ({TRAINING_AUGMENT.wide_p:.0%} in the reference) "
        f"warped by up to {TRAINING_AUGMENT.wide_rotation_deg:g} degrees, "
        f"{TRAINING_AUGMENT.wide_translate_px:g} px, zoom {TRAINING_AUGMENT.wide_scale}",
        {"augment_config": replace(TRAINING_AUGMENT, wide_p=0.0)},
        {},
    ),
    "wider": (
        f"twice the base widths, {WIDE_WIDTHS} (fewer epochs fit)",
        {},
        {"widths": WIDE_WIDTHS},
    ),
    "narrower": (
        f"half the base widths, {NARROW_WIDTHS} (more epochs fit)",
        {},
        {"widths": NARROW_WIDTHS},
    ),
    "full-profile widths": (
        f"the full profile's widths, {FULL_WIDTHS}",
        {},
        {"widths": FULL_WIDTHS},
    ),
    "pseudo-labels": (
        "two rounds (training.self_train): half the budget, then the rest on the training "
        "labels filled with its predictions",
        {"self_train": True},
        {},
    ),
}

# test-time augmentation on the reference model: name -> views (scale, tx, ty)
TTA = {
    "TTA: flip": ((1.0, 0.0, 0.0),),
    "TTA: flip + 4 shifts of 1 px": (
        (1.0, 0.0, 0.0),
        (1.0, 1.0, 0.0),
        (1.0, -1.0, 0.0),
        (1.0, 0.0, 1.0),
        (1.0, 0.0, -1.0),
    ),
    "TTA: flip + scales 0.95, 1.05": ((1.0, 0.0, 0.0), (0.95, 0.0, 0.0), (1.05, 0.0, 0.0)),
}


def selected_changes() -> dict:
    """:data:`CHANGES`, or the reference, its second seed and the rows named in
    ``$FKP_RECIPE_ROWS`` (comma-separated)."""
    names = [n.strip() for n in os.environ.get("FKP_RECIPE_ROWS", "").split(",") if n.strip()]
    unknown = [n for n in names if n not in CHANGES]
    if unknown:
        raise SystemExit(
            f"FKP_RECIPE_ROWS: unknown rows {unknown}; expected some of {list(CHANGES)}"
        )
    keep = {"reference", "reference, seed + 1", *names} if names else set(CHANGES)
    kept = {n: c for n, c in CHANGES.items() if n in keep}
    left_out = [n for n, c in kept.items() if _repeats_reference(c)]
    if left_out:  # e.g. "L1 loss" while the reference's loss is L1
        print(
            f"recipes_rows_left_out: {', '.join(left_out)} (each would train the reference again)"
        )
    return {n: c for n, c in kept.items() if n not in left_out}


def _repeats_reference(change) -> bool:
    """Whether a row would train the reference again: its widths are the base's, or its loss
    is the reference's."""
    _, kwargs, prof = change
    return prof.get("widths") == BASE_WIDTHS or kwargs.get("loss") == REFERENCE_LOSS


def error_sources(pred_a, pred_b, y) -> dict:
    """How much of two models' error is their disagreement. ``pred_a``, ``pred_b``: the two
    models' predictions ``(N, 30)`` in pixels for the faces labelled ``y`` (NaN = missing).
    Returns, in pixels: ``ensemble_rmse`` (the RMSE of their average), ``disagreement_rms``
    (the root mean square of ``pred_a - pred_b`` over the labelled coordinates) and
    ``shared_rmse``, the error the two share: what an average of many such models would keep,
    if each model's own part of the error is independent with the same spread,
    ``sqrt(ensemble^2 - disagreement^2 / 4)`` (floored at 0)."""
    pred_a, pred_b, y = (np.asarray(a, np.float64) for a in (pred_a, pred_b, y))
    ensemble = masked_rmse(y, (pred_a + pred_b) / 2)
    disagreement = masked_rmse(np.where(np.isnan(y), np.nan, pred_a), pred_b)
    shared = float(np.sqrt(max(ensemble**2 - disagreement**2 / 4, 0.0)))
    return {"ensemble_rmse": ensemble, "disagreement_rms": disagreement, "shared_rmse": shared}


def main() -> int:
    changes = selected_changes()
    train_set = data.load_training()
    tr, va, _ = experiments.course_split(train_set)
    base = replace(experiments.PROFILES["full"], minutes=MINUTES, widths=BASE_WIDTHS)
    y_val = train_set.keypoints[va]
    print(f"data: {train_set.path}; {len(tr)} train, {len(va)} validation faces")
    print(f"budget: {MINUTES:g} minutes a row; base widths {BASE_WIDTHS}")
    rows, ref_model, ref_rmse, seed_model = [], None, None, None
    for name, (what, kwargs, prof_changes) in changes.items():
        prof = replace(base, **prof_changes)
        kwargs = {"seed": 0, "loss": REFERENCE_LOSS, **kwargs}
        fit = training.self_train if kwargs.pop("self_train", False) else training.train_model
        t0 = time.time()
        run = fit(
            train_set.images,
            train_set.keypoints,
            tr,
            va,
            profile=prof,
            verbose=0,
            started=t0,
            **kwargs,
        )
        m = run.metrics
        rmse = m["val_rmse_flip_average"]
        if name == "reference":
            ref_model, ref_rmse = run.model, rmse
        if name == "reference, seed + 1":
            seed_model = run.model
        epochs = m["epochs_run"] + m.get("teacher_epochs_run", 0)  # both rounds of self_train
        rows.append((name, what, time.time() - t0, epochs, m["val_rmse"], rmse, rmse / ref_rmse))
        print(f"  {name}: {rows[-1][2]:.0f} s, {epochs} epochs, {rmse:.3f} px", flush=True)
        sys.stdout.flush()
    x = train_set.images[va]
    looks = {name: (2 * len(views), views) for name, views in TTA.items()}
    looks["second look (aligned on the predicted eyes)"] = (4, None)
    looked = {}  # predictions of the reference model by row name
    for name, (passes, views) in looks.items():
        t0 = time.perf_counter()
        if views is None:  # the whole second look, the first look included
            pred = training.predict_second_look(ref_model, x)
        else:
            pred = training.predict_tta(ref_model, x, views)
        looked[name] = pred
        ms = 1000 * (time.perf_counter() - t0) / len(x)
        rmse = float(masked_rmse(y_val, pred))
        rows.append(
            (
                name,
                f"{passes} passes a face, {ms:.2f} ms a face",
                0.0,
                0,
                rmse,
                rmse,
                rmse / ref_rmse,
            )
        )
    sources = error_sources(
        looked["TTA: flip"],  # the reference, flip-averaged
        training.predict_keypoints(seed_model, x, flip_average=True),
        y_val,
    )
    ens = sources["ensemble_rmse"]
    rows.append(
        (
            "ensemble: reference + seed + 1",
            "the average of the two models' flip-averaged predictions (4 passes a face)",
            0.0,
            0,
            ens,
            ens,
            ens / ref_rmse,
        )
    )
    train_pred = training.predict_keypoints(ref_model, train_set.images[tr], flip_average=True)
    train_rmse = float(masked_rmse(train_set.keypoints[tr], train_pred))
    offset = mean_offset(train_set.keypoints[tr], train_pred)  # the labels' offset (chapter 6)
    for name, look in (
        ("TTA: flip, minus the labels' offset", "TTA: flip"),
        ("second look, minus the labels' offset", "second look (aligned on the predicted eyes)"),
    ):
        rmse = float(masked_rmse(y_val, looked[look] - offset))
        what = "one constant per coordinate, measured on the training faces (no extra pass)"
        rows.append((name, what, 0.0, 0, rmse, rmse, rmse / ref_rmse))
    print()
    print("| change | what | seconds | epochs | val RMSE (px) | flip-averaged (px) | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, what, sec, ep, r, rf, ratio in rows:
        print(f"| {name} | {what} | {sec:.0f} | {ep} | {r:.3f} | {rf:.3f} | {ratio:.3f} |")
    spread = abs(rows[1][5] - rows[0][5])
    print(f"\nrecipes_seed_spread_px: {spread:.3f}")
    print(f"recipes_models_disagree_px: {sources['disagreement_rms']:.3f}")
    print(f"recipes_shared_error_px: {sources['shared_rmse']:.3f}")
    print(f"recipes_reference_train_rmse_px: {train_rmse:.3f}")
    if len(changes) > 2:
        best = min(rows[2 : len(changes)], key=lambda r: r[5])
        gain = ref_rmse - best[5]
        verdict = "a win" if gain > spread else "not a win: within the seed spread or worse"
        print(
            f"recipes_best_change: {best[0]} ({best[5]:.3f} px vs {ref_rmse:.3f}; "
            f"gain {gain:+.3f} px against a spread of {spread:.3f}: {verdict})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
