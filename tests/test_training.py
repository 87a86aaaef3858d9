"""Splits, the training loop, saved runs and the command line, at the quick profile."""

import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fkp_helpers import augment, cli, data, experiments, keypoints, models, splits, training
from fkp_helpers.data import FLIP_PERMUTATION

TEMPLATE = np.array(
    [
        66,
        38,
        30,
        38,
        59,
        38,
        73,
        38,
        37,
        38,
        22,
        38,
        56,
        29,
        80,
        30,
        39,
        29,
        16,
        30,
        48,
        63,
        63,
        76,
        33,
        76,
        48,
        73,
        48,
        79,
    ],
    np.float32,
)  # Kaggle's mean face, pixels


def _faces(n=64, seed=0):
    """Faces made of dots at the 15 keypoints, shifted per face: learnable in seconds.

    Even rows carry all 15 labels; odd rows only the 4 core keypoints, as in Kaggle's file.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    images = np.zeros((n, 96, 96), np.uint8)
    kp = np.tile(TEMPLATE, (n, 1)) + np.repeat(rng.uniform(-8, 8, (n, 1, 2)), 15, 1).reshape(n, 30)
    for i in range(n):
        d2 = (xx[None] - kp[i, 0::2, None, None]) ** 2 + (yy[None] - kp[i, 1::2, None, None]) ** 2
        images[i] = (255 * np.exp(-d2 / 4).max(0)).astype(np.uint8)
    core = np.zeros(30, bool)
    for k in (0, 1, 10, 14):
        core[2 * k : 2 * k + 2] = True
    kp[1::2, ~core] = np.nan
    return images, kp.astype(np.float32)


def test_random_split_is_a_seeded_partition():
    a_tr, a_val = splits.random_split(100, 0.2, seed=1)
    b_tr, b_val = splits.random_split(100, 0.2, seed=1)
    np.testing.assert_array_equal(a_val, b_val)
    assert len(a_val) == 20 and sorted(np.concatenate([a_tr, a_val])) == list(range(100))
    assert not np.array_equal(a_val, splits.random_split(100, 0.2, seed=2)[1])


def test_grouped_split_keeps_near_duplicates_on_one_side():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (20, 96, 96)).astype(np.float32)
    # 20 "people", 5 near-identical frames each
    images = np.clip(np.repeat(base, 5, 0) + rng.normal(0, 4, (100, 96, 96)), 0, 255).astype(
        np.uint8
    )
    kp = np.tile(np.array([66, 38, 30, 38] + [np.nan] * 26, np.float32), (100, 1))
    groups = splits.near_duplicate_groups(images, kp)
    assert len(np.unique(groups)) == 20
    tr, val = splits.grouped_split(images, kp, val_fraction=0.2, seed=3)
    person = np.arange(100) // 5
    assert not set(person[tr]) & set(person[val])
    assert len(val) == 20
    tr2, val2 = splits.grouped_split(images, kp, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(val, val2)


def test_three_way_split_keeps_people_apart_and_hits_its_fractions():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 96, 96)).astype(np.float32)
    images = np.clip(np.repeat(base, 5, 0) + rng.normal(0, 4, (200, 96, 96)), 0, 255).astype(
        np.uint8
    )
    kp = np.tile(np.array([66, 38, 30, 38] + [np.nan] * 26, np.float32), (200, 1))
    tr, val, test = splits.three_way_split(images, kp, 0.15, 0.15, seed=5)
    person = np.arange(200) // 5
    parts = [set(person[i]) for i in (tr, val, test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted(np.concatenate([tr, val, test]).tolist()) == list(range(200))
    assert len(val) == 30 and len(test) == 30
    again = splits.three_way_split(images, kp, 0.15, 0.15, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((tr, val, test), again, strict=True))


def test_unflip_undoes_a_flip_of_the_labels():
    kp = np.random.default_rng(0).uniform(0, 95, (4, 30)).astype(np.float32)
    flipped = kp.reshape(4, 15, 2)[:, FLIP_PERMUTATION].copy()
    flipped[..., 0] = 95 - flipped[..., 0]
    np.testing.assert_allclose(keypoints.flip_keypoints(flipped.reshape(4, 30)), kp, atol=1e-5)


def test_masked_rmse_skips_missing_labels():
    y = np.array([[1.0, np.nan], [3.0, 4.0]])
    p = np.array([[2.0, 100.0], [3.0, 6.0]])
    assert keypoints.masked_rmse(y, p) == pytest.approx(np.sqrt(5 / 3))


TINY = replace(
    experiments.PROFILES["quick"], name="tiny", epochs=1, widths=(16, 16, 32, 32), batch_size=16
)


def test_same_seed_gives_the_same_first_epoch_loss():
    images, kp = _faces(48)

    def first_loss(seed):
        run = training.train_model(
            images,
            kp,
            np.arange(32),
            np.arange(32, 48),
            profile=TINY,
            seed=seed,
            verbose=0,
            precision="float32",
            deterministic_ops=True,
        )
        return run.history["loss"][0]

    # Same data, same augmentation, same initial weights: the same loss up to oneDNN's round-off
    # (its kernels may sum in a different order from run to run on some CPUs).
    a, b, other = first_loss(7), first_loss(7), first_loss(8)
    assert a == pytest.approx(b, rel=1e-5)
    assert abs(other - a) > 1e-3 * a


@pytest.mark.slow
def test_model_overfits_32_samples_to_under_half_a_pixel():
    images, kp = _faces(32, seed=1)
    prof = replace(
        TINY,
        epochs=80,
        batch_size=8,
        learning_rate=3e-3,
        warmup_epochs=2,
        weight_decay=0.0,
        max_train_rows=None,
        max_val_rows=None,
    )
    run = training.train_model(
        images,
        kp,
        np.arange(32),
        np.arange(32),
        profile=prof,
        seed=0,
        verbose=0,
        augment_config=None,
        precision="float32",
    )
    assert run.metrics["val_rmse"] < 0.5, run.metrics["val_rmse"]


def test_train_model_writes_every_promised_output(tmp_path):
    images, kp = _faces(56)
    run = training.train_model(
        images,
        kp,
        np.arange(32),
        np.arange(32, 48),
        np.arange(48, 56),
        profile=TINY,
        verbose=0,
        out_dir=tmp_path,
        augment_config=augment.AugmentConfig(),
    )
    for name in ("model.keras", "history.csv", "history.json", "metrics.json"):
        assert (tmp_path / name).is_file()
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "val_rmse",
        "val_rmse_per_keypoint",
        "baseline_val_rmse",
        "train_seconds",
        "peak_rss_mb",
        "seed",
        "profile",
        "test_rmse",
        "test_rmse_flip_average",
        "test_rmse_second_look",
        "baseline_test_rmse",
        "flip_average",
        "second_look",
        "offset",
        "test_rmse_flip_average_offset",
        "test_rmse_second_look_offset",
    ):
        assert key in m
    # the labels' offset: flip-averaged on the training rows, as measure_label_offset does
    np.testing.assert_allclose(
        m["label_offset"],
        training.measure_label_offset(run.model, images[:32], kp[:32]),
        atol=2e-4,
    )
    # the test figure quoted as chosen is the one the validation faces chose
    look = training.chosen_look(m)
    assert m["test_rmse_chosen"] == m[f"test_rmse{training.LOOK_SUFFIX[look]}"]
    chosen = training.predict_as_chosen(run.model, images[48:], m)
    assert m["test_rmse_chosen"] == pytest.approx(keypoints.masked_rmse(kp[48:], chosen), rel=1e-4)
    second = training.predict_second_look(run.model, images[48:])
    assert m["test_rmse_second_look"] == pytest.approx(
        keypoints.masked_rmse(kp[48:], second), rel=1e-4
    )
    assert m["n_train"] == 32 and m["n_val"] == 16 and m["n_test"] == 8
    # the test figure is the masked RMSE of the saved model on the test rows, as promised
    pred = training.predict_keypoints(run.model, images[48:])
    assert m["test_rmse"] == pytest.approx(keypoints.masked_rmse(kp[48:], pred), rel=1e-5)
    assert not np.isnan(m["val_rmse_per_keypoint"]["nose_tip"])
    saved = models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(
        training.predict_keypoints(saved, images[:4]),
        training.predict_keypoints(run.model, images[:4]),
    )


def test_train_model_with_the_heatmap_loss_saves_and_scores_the_plain_network(tmp_path):
    images, kp = _faces(48)

    def run(heatmap_loss, out_dir=None):
        return training.train_model(
            images,
            kp,
            np.arange(32),
            np.arange(32, 48),
            profile=TINY,
            seed=3,
            verbose=0,
            precision="float32",
            deterministic_ops=True,
            heatmap_loss=heatmap_loss,
            out_dir=out_dir,
        )

    plain, with_heat = run(None), run(0.5, tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["heatmap_loss"] == 0.5 and plain.metrics["heatmap_loss"] is None
    # same data, draws and initial weights: the training loss adds the heatmap loss (> 0)...
    assert with_heat.history["loss"][0] > plain.history["loss"][0] + 0.05
    # ...validation still scores the coordinates alone, with the same metric
    assert "val_rmse" in with_heat.history and "val_loss" in with_heat.history
    # the run's model, saved and reloaded, is the plain network, scored as promised
    assert with_heat.model.name == "keypoint_resnet"
    saved = models.load_model(tmp_path / "model.keras")
    assert saved.name == "keypoint_resnet" and len(saved.weights) == len(plain.model.weights)
    pred = training.predict_keypoints(saved, images[32:48])
    assert m["val_rmse"] == pytest.approx(keypoints.masked_rmse(kp[32:48], pred), rel=1e-5)
    with pytest.raises(ValueError, match="heatmap_loss needs the residual heatmap network"):
        training.train_model(
            images,
            kp,
            np.arange(32),
            np.arange(32, 48),
            profile=TINY,
            model="baseline",
            heatmap_loss=0.5,
            verbose=0,
        )


def test_saved_run_is_reused_for_the_same_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FKP_RUNS_DIR", str(tmp_path))
    images, kp = _faces(48)
    calls = []

    def fit(out_dir):
        calls.append(out_dir)
        return training.train_model(
            images, kp, np.arange(32), np.arange(32, 48), profile=TINY, verbose=0, out_dir=out_dir
        )

    first = experiments.saved_run("t", {"seed": 1}, fit)
    again = experiments.saved_run("t", {"seed": 1}, fit)
    assert len(calls) == 1 and not first["reused"] and again["reused"]
    assert again["val_rmse"] == first["val_rmse"]
    experiments.saved_run("t", {"seed": 2}, fit)
    assert len(calls) == 2


def test_data_fingerprint_follows_the_bytes_not_the_path(tmp_path):
    """A saved run survives its data being moved or downloaded again, not being changed."""
    content = b"left_eye_center_x,Image\n66.0,1 2 3\n"
    first, moved = tmp_path / "data" / "training.csv", tmp_path / "elsewhere" / "training.csv"
    for path in (first, moved):
        path.parent.mkdir()
        path.write_bytes(content)
    stamp = first.stat().st_mtime_ns
    os.utime(moved, ns=(stamp, stamp + 10**9))  # a later download of the same bytes
    expected = "sha256:" + hashlib.sha256(content).hexdigest()
    assert experiments.data_fingerprint(first) == experiments.data_fingerprint(moved) == expected
    moved.write_bytes(content.replace(b"66.0", b"66.5"))  # same size, one value changed
    os.utime(moved, ns=(stamp, stamp + 2 * 10**9))
    assert experiments.data_fingerprint(moved) != expected
    keys = {experiments.run_key({"data": experiments.data_fingerprint(p)}) for p in (first, moved)}
    assert len(keys) == 2


@pytest.mark.parametrize("name", experiments.STRATEGY_NAMES)
def test_every_missing_label_strategy_trains_and_scores_on_true_labels(name):
    images, kp = _faces(48)
    profile = replace(TINY, epochs=2) if name == "pseudo" else TINY  # one epoch a round
    run = experiments.train_strategy(
        name, images, kp, np.arange(32), np.arange(32, 48), profile=profile, verbose=0
    )
    assert np.isfinite(run.metrics["val_rmse"]) and run.metrics["val_rmse"] > 0
    # the score is the masked RMSE against the TRUE validation labels (NaN skipped), never the
    # filled-in ones: recompute it from the model's own predictions
    val = np.arange(32, 48)
    pred = training.predict_keypoints(run.model, images[val])
    if name == "separate":
        core = training.predict_keypoints(run.extra["core_model"], images[val])
        pred[:, keypoints.CORE_COLUMNS] = core[:, keypoints.CORE_COLUMNS]
    assert run.metrics["val_rmse"] == pytest.approx(keypoints.masked_rmse(kp[val], pred), rel=1e-5)


def test_fkp_train_and_submit_from_the_command_line(tmp_path, synthetic_dir, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            ["train", "--data-dir", str(synthetic_dir), "--profile", "quick", "--out", str(out)]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["profile"] == "quick" and m["baseline_val_rmse"] > 0 and m["baseline_test_rmse"] > 0
    assert m["loss"] == experiments.REFERENCE_LOSS == "l1"  # the reference model's loss
    assert np.isfinite(m["test_rmse"]) and m["n_test"] > 0
    sub = tmp_path / "submission.csv"
    assert (
        cli.main(
            [
                "submit",
                "--model",
                str(out / "model.keras"),
                "--data-dir",
                str(synthetic_dir),
                "--out",
                str(sub),
            ]
        )
        == 0
    )
    table = pd.read_csv(sub)
    lookup = pd.read_csv(synthetic_dir / "IdLookupTable.csv")
    assert list(table.columns) == ["RowId", "Location"]
    assert table.RowId.tolist() == lookup.RowId.tolist()
    assert table.Location.between(0, 96).all()
    assert training.chosen_look(m) in capsys.readouterr().err  # it says how it predicted
    # --second-look and --no-offset override the run's choice: the file holds the second look's
    again = tmp_path / "second.csv"
    args = ["submit", "--model", str(out / "model.keras"), "--data-dir", str(synthetic_dir)]
    assert cli.main([*args, "--out", str(again), "--second-look", "--no-offset"]) == 0
    assert "(second look)" in capsys.readouterr().err
    test = data.load_test(synthetic_dir)
    pred = training.predict_second_look(models.load_model(out / "model.keras"), test.images)
    expected = data.write_submission(
        pred, data.load_lookup(synthetic_dir), tmp_path / "x.csv", image_ids=test.image_ids
    )
    np.testing.assert_allclose(pd.read_csv(again).Location, expected.Location, atol=1e-3)
    assert np.abs(pd.read_csv(again).Location - table.Location).max() > 1e-3 or (
        m["second_look"] and not m["offset"]
    )
    # --offset subtracts the labels' offset that the run measured on its training faces
    shifted = tmp_path / "offset.csv"
    assert cli.main([*args, "--out", str(shifted), "--second-look", "--offset"]) == 0
    assert "(second look + offset)" in capsys.readouterr().err
    expected = data.write_submission(
        pred - np.asarray(m["label_offset"], np.float32),
        data.load_lookup(synthetic_dir),
        tmp_path / "y.csv",
        image_ids=test.image_ids,
    )
    np.testing.assert_allclose(pd.read_csv(shifted).Location, expected.Location, atol=1e-3)
    assert np.abs(pd.read_csv(shifted).Location - pd.read_csv(again).Location).max() > 1e-3
    # --no-flip is one look, whatever the run chose (its second look is flip-averaged)
    metrics = {**m, "flip_average": True, "second_look": True, "offset": True}
    (out / "metrics.json").write_text(json.dumps(metrics))
    single = tmp_path / "single.csv"
    assert cli.main([*args, "--out", str(single), "--no-flip"]) == 0
    assert "(one look)" in capsys.readouterr().err
    one_look = training.predict_keypoints(models.load_model(out / "model.keras"), test.images)
    expected = data.write_submission(
        one_look, data.load_lookup(synthetic_dir), tmp_path / "z.csv", image_ids=test.image_ids
    )
    np.testing.assert_allclose(pd.read_csv(single).Location, expected.Location, atol=1e-3)
    assert cli.main([*args, "--out", str(single), "--no-flip", "--second-look"]) == 2
    assert "the second look is flip-averaged" in capsys.readouterr().err


def test_fkp_submit_without_a_model_is_a_clear_error(tmp_path, capsys, synthetic_dir):
    assert (
        cli.main(
            ["submit", "--model", str(tmp_path / "none.keras"), "--data-dir", str(synthetic_dir)]
        )
        == 2
    )
    assert "no such model file" in capsys.readouterr().err


def test_fkp_submit_offset_without_one_to_subtract_is_a_clear_error(tmp_path, capsys):
    """An explicit --offset needs the run's label_offset, and a flip-averaged look to go with."""
    model = tmp_path / "model.keras"
    model.write_bytes(b"")  # never loaded: the choice is checked first
    args = ["submit", "--model", str(model), "--data-dir", str(tmp_path), "--offset"]
    (tmp_path / "metrics.json").write_text(json.dumps({"flip_average": True}))
    assert cli.main(args) == 2
    assert "no label_offset" in capsys.readouterr().err
    metrics = {"flip_average": True, "label_offset": [0.0] * 30}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert cli.main([*args, "--no-flip"]) == 2
    assert "use it with --flip" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{not json")
    assert cli.main(args) == 2
    assert "metrics.json: not the metrics.json of a run" in capsys.readouterr().err
    (tmp_path / "metrics.json").unlink()
    assert cli.main(args) == 2
    assert "metrics.json: no such file, so no label offset" in capsys.readouterr().err


def test_fkp_submit_names_a_file_that_is_not_a_model(tmp_path, capsys, synthetic_dir):
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"PK\x03\x04 not a whole zip")
    args = ["submit", "--model", str(broken), "--data-dir", str(synthetic_dir)]
    assert cli.main(args) == 2
    assert f"{broken}: not a Keras model saved by `fkp train`" in capsys.readouterr().err


def test_a_distribution_strategy_goes_through_the_same_code_path():
    import tensorflow as tf

    images, kp = _faces(48)
    run = training.train_model(
        images,
        kp,
        np.arange(32),
        np.arange(32, 48),
        profile=TINY,
        verbose=0,
        distribute=tf.distribute.MirroredStrategy(["/cpu:0"]),
    )
    assert np.isfinite(run.metrics["val_rmse"])
    assert run.model.distribute_strategy.__class__.__name__ == "MirroredStrategy"


# ---------------------------------------------------------------------------------------------
# A budget in minutes


def test_budgeted_schedule_is_warmup_cosine_once_its_length_is_known():
    fixed = training.warmup_cosine(2e-3, 400, 40)
    budgeted = training.BudgetedWarmupCosine(2e-3, 1000, 40)
    budgeted.set_total_steps(400)
    steps = [0, 1, 20, 39, 40, 41, 100, 250, 399, 400, 500]
    np.testing.assert_allclose(
        [float(budgeted(s)) for s in steps], [float(fixed(s)) for s in steps], rtol=1e-5
    )
    assert float(budgeted(400)) == pytest.approx(2e-5, rel=1e-5)  # fully decayed: peak / 100
    # a budget shorter than twice the warm-up: the warm-up shrinks, the decay still ends
    budgeted.set_total_steps(30)
    assert float(budgeted(15)) == pytest.approx(2e-3, rel=1e-5)
    assert float(budgeted(30)) == pytest.approx(2e-5, rel=1e-5)


def test_a_tiny_budget_finishes_on_time_with_the_learning_rate_decayed(tmp_path):
    images, kp = _faces(200)
    minutes = 1.0  # tracing alone takes 10-20 s on 2 busy cores
    # 2000 epochs would take about 1000 s here: only the budget ends this run within minutes
    profile = replace(TINY, epochs=2000, minutes=minutes, batch_size=16)
    run = training.train_model(
        images,
        kp,
        np.arange(160),
        np.arange(160, 184),
        np.arange(184, 200),
        profile=profile,
        verbose=0,
        out_dir=tmp_path,
        precision="float32",
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["train_end_seconds"] <= 60 * minutes  # the plan ended training on time
    assert m["train_end_seconds"] >= 0.5 * 60 * minutes  # and used the budget
    # predictions and saving come after it; a clean-clone CI run here once stalled 41 s between
    # the last epoch and the end of fit, outside anything the plan can see
    assert m["wall_seconds"] <= 2 * 60 * minutes
    assert m["epochs_run"] == m["planned_epochs"] >= 1  # stopped where it planned to
    assert m["budget_minutes"] == minutes and len(m["epoch_seconds"]) == m["epochs_run"]
    # the schedule ended exactly at the last planned step, fully decayed
    assert int(run.model.optimizer.iterations) == m["planned_epochs"] * (160 // 16)
    assert m["final_learning_rate"] == pytest.approx(profile.learning_rate / 100, rel=1e-4)


def test_minutes_and_epochs_replace_the_profiles_length():
    full = experiments.PROFILES["full"]
    assert full.minutes and experiments.resolve_profile("full").minutes == full.minutes
    assert experiments.resolve_profile("full", minutes=3).minutes == 3
    exact = experiments.resolve_profile("full", epochs=5)
    assert exact.epochs == 5 and exact.minutes is None
    with pytest.raises(ValueError, match="not both"):
        experiments.resolve_profile("quick", minutes=1, epochs=2)
    with pytest.raises(ValueError, match="positive"):
        experiments.resolve_profile("quick", minutes=0)
    assert cli.main(["train", "--profile", "quick", "--out", "x", "--epochs", "0"]) == 2


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _budget(deadline, steps=10):
    """A fake clock, a budgeted schedule and a :class:`MinutesBudget` of ``deadline`` seconds."""
    clock = _Clock()
    schedule = training.BudgetedWarmupCosine(1e-3, 10_000, 10)
    budget = training.MinutesBudget(schedule, deadline, steps, 500, verbose=False, clock=clock)
    return clock, schedule, budget


def _simulate(budget, clock, epoch_train_s, val_s, first_batch_extra_s, epochs, first_epoch=0):
    """Drive ``budget`` as ``fit`` would, on a fake clock, from epoch index ``first_epoch``;
    returns the epochs that ran."""

    class _Model:
        stop_training = False

    budget.set_model(_Model())
    ran = 0
    for epoch in range(first_epoch, first_epoch + epochs):
        budget.on_epoch_begin(epoch)
        for b in range(budget.steps):
            clock.now += epoch_train_s / budget.steps + (
                first_batch_extra_s if ran == b == 0 else 0
            )
            budget.on_train_batch_end(b)
        budget.on_test_begin()
        clock.now += val_s
        budget.on_test_end()
        budget.on_epoch_end(epoch)
        ran += 1
        if budget.model.stop_training:
            break
    return ran


def test_the_budget_plans_from_the_pace_after_tracing_not_the_first_epochs_wall_time():
    # 100 s: 20 s of tracing in the first batch, then 4 s of training + 1 s validation per epoch
    clock, schedule, budget = _budget(100.0, steps=50)
    ran = _simulate(budget, clock, 4.0, 1.0, 20.0, 500)
    # after tracing: 100 - 20 - 15 s reserve (10 val passes + 5 s) = 65 s: the epoch that traced
    # and 11 more of 5 s planned with a 1.05 margin (60 s after the first epoch's end at 25 s)
    assert ran == budget.planned_epochs == 12
    assert float(schedule.total_steps.numpy()) == 12 * 50
    assert clock.now <= 100.0 - budget.reserve_s()
    assert budget.shortened == 0
    # planning from the first epoch's wall time (25 s) would have given 3 epochs
    assert budget.epoch_seconds[0] == pytest.approx(25.0)


def test_a_slower_machine_shortens_the_plan_and_still_ends_decayed():
    clock, schedule, budget = _budget(100.0)
    assert _simulate(budget, clock, 4.0, 1.0, 0.0, 2) == 2  # plan from two 5 s epochs
    first_plan = budget.planned_epochs
    # then every epoch takes twice as long
    ran = 2 + _simulate(budget, clock, 8.0, 2.0, 0.0, 500, first_epoch=2)
    assert ran == budget.planned_epochs < first_plan and budget.shortened >= 1
    assert clock.now <= 100.0  # never past the deadline
    assert float(schedule.total_steps.numpy()) == ran * 10  # the decay ends with the last epoch


def test_a_slowdown_that_passes_gives_its_time_back_to_the_plan():
    clock, schedule, budget = _budget(200.0)
    assert _simulate(budget, clock, 4.0, 1.0, 0.0, 2) == 2  # plan from two 5 s epochs
    first_plan = budget.planned_epochs
    # another program takes half the CPU for two epochs
    assert _simulate(budget, clock, 8.0, 2.0, 0.0, 2, first_epoch=2) == 2
    cut = budget.planned_epochs
    assert cut < first_plan and budget.shortened >= 1 and budget.regrown == 0
    ran = 4 + _simulate(budget, clock, 4.0, 1.0, 0.0, 500, first_epoch=4)  # and is gone
    assert budget.regrown >= 1 and cut < ran == budget.planned_epochs <= first_plan
    # the slow epochs cost 10 s of training: two 5 s epochs at most (the plan's 5% margin may
    # absorb them), not the epochs that the cut gave up
    assert ran >= first_plan - 2 and cut <= first_plan - 6
    assert clock.now <= 200.0 - budget.reserve_s()  # still on time
    assert float(schedule.total_steps.numpy()) == ran * 10  # the decay ends with the last epoch


def test_a_slow_second_epoch_does_not_cap_the_plan():
    clock, schedule, budget = _budget(200.0)
    assert _simulate(budget, clock, 4.0, 1.0, 0.0, 1) == 1
    # the second epoch: 8 s, not 5
    assert _simulate(budget, clock, 7.0, 1.0, 0.0, 1, first_epoch=1) == 1
    second_plan = budget.planned_epochs
    ran = 2 + _simulate(budget, clock, 4.0, 1.0, 0.0, 500, first_epoch=2)
    # planned from 8 s epochs, run at 5 s: about 1.5 times the epochs fit
    assert budget.regrown >= 1 and ran == budget.planned_epochs > 1.4 * second_plan
    assert clock.now <= 200.0 - budget.reserve_s()
    assert float(schedule.total_steps.numpy()) == ran * 10


def test_a_budget_too_small_for_a_second_epoch_runs_one():
    clock, schedule, budget = _budget(20.0)
    assert _simulate(budget, clock, 8.0, 1.0, 0.0, 500) == 1 == budget.planned_epochs
    assert float(schedule(10)) == pytest.approx(1e-5, rel=1e-4)  # decayed at its only epoch's end


def test_on_cpus_the_profile_is_kept_and_on_gpus_the_batch_fills_each_gpu():
    full = experiments.PROFILES["full"]
    same, why = experiments.fit_to_hardware(full, gpus=[])
    assert same == full and "no GPU" in why
    t4 = {"device_name": "Tesla T4", "compute_capability": (7, 5)}
    one, why = experiments.fit_to_hardware(full, gpus=[t4])
    ratio = experiments.GPU_BATCH_PER_DEVICE / full.batch_size
    assert one.batch_size == experiments.GPU_BATCH_PER_DEVICE and "1 GPU" in why
    assert one.learning_rate == pytest.approx(full.learning_rate * ratio**0.5)
    # the budget may plan as many optimiser steps as on a CPU
    assert one.epochs == full.epochs * ratio and one.minutes == full.minutes
    two, _ = experiments.fit_to_hardware(full, gpus=[t4, t4])
    assert two.batch_size == 2 * experiments.GPU_BATCH_PER_DEVICE
    exact = experiments.resolve_profile("full", epochs=5)
    assert experiments.fit_to_hardware(exact, gpus=[t4])[0].epochs == 5  # exact epochs stay exact


def test_self_training_fills_only_training_gaps_and_starts_the_student_from_the_teacher(
    tmp_path, monkeypatch
):
    images, kp = _faces(56)
    train, val, test = np.arange(32), np.arange(32, 48), np.arange(48, 56)
    seen = []
    real_train_model = training.train_model

    def spy(images_, keypoints_, *args, **kwargs):
        seen.append((keypoints_.copy(), kwargs.get("initial_weights"), kwargs["profile"]))
        return real_train_model(images_, keypoints_, *args, **kwargs)

    monkeypatch.setattr(training, "train_model", spy)
    run = training.self_train(
        images, kp, train, val, test, profile=replace(TINY, epochs=3), verbose=0, out_dir=tmp_path
    )
    (teacher_kp, teacher_init, p1), (student_kp, student_init, p2) = seen
    assert teacher_init is None and (p1.epochs, p2.epochs) == (2, 1)  # half the epochs, rounded
    np.testing.assert_array_equal(teacher_kp, kp)  # round 1: the labels as given
    # round 2: every gap of the training rows filled, every label kept; validation and test
    # rows untouched (they are scored on their true labels, NaNs included)
    lab = ~np.isnan(kp)
    assert not np.isnan(student_kp[train]).any()
    np.testing.assert_array_equal(student_kp[lab], kp[lab])
    np.testing.assert_array_equal(student_kp[32:], kp[32:])
    # the fill is the teacher's flip-averaged prediction
    teacher = run.extra["teacher"].model
    pred = training.predict_keypoints(teacher, images[train], flip_average=True)
    gaps = np.isnan(kp[train])
    np.testing.assert_allclose(student_kp[train][gaps], pred[gaps], atol=1e-4)
    # the student started from the teacher's (best-epoch) weights
    for a, b in zip(student_init, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["pseudo_labels"] == int(gaps.sum() // 2) == 16 * 11  # odd rows lack 11 keypoints
    assert m["teacher_epochs_run"] == 2 and m["epochs_run"] == 1
    assert m["seed"] == training.DEFAULT_SEED and m["student_seed"] == training.DEFAULT_SEED + 1
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["val_rmse"]) == 3  # both rounds' epochs
    csv = pd.read_csv(tmp_path / "history.csv")
    assert list(csv["epoch"]) == [0, 1, 2]
    np.testing.assert_allclose(csv["val_rmse"], history["val_rmse"])
    val_pred = training.predict_keypoints(run.model, images[val])
    assert m["val_rmse"] == pytest.approx(keypoints.masked_rmse(kp[val], val_pred), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 epochs"):
        training.self_train(images, kp, train, val, profile=TINY)


def test_self_training_splits_a_budget_in_minutes_and_keeps_its_deadline(monkeypatch):
    seen = []

    def fake(*args, profile, started, **kwargs):
        seen.append((profile.minutes, started))
        raise RuntimeError("stop after the first round")

    monkeypatch.setattr(training, "train_model", fake)
    images, kp = _faces(8)
    with pytest.raises(RuntimeError):
        training.self_train(
            images, kp, np.arange(4), np.arange(4, 8), profile=replace(TINY, minutes=10.0),
            started=123.0, teacher_share=0.4,
        )  # fmt: skip
    assert seen == [(4.0, 123.0)]  # the teacher's share of the budget, from the same start


@pytest.mark.parametrize(
    "one, flip, second, flip_off, second_off, chosen",
    [
        (1.0, 0.9, 0.8, 0.85, 0.81, "second look"),
        (1.0, 0.9, 0.95, 0.91, 0.96, "flip-averaged"),
        (0.8, 0.9, 0.85, 0.82, 0.83, "one look"),
        (1.0, 0.9, 0.8, 0.85, 0.79, "second look + offset"),
        (1.0, 0.9, 0.8, 0.78, 0.79, "flip-averaged + offset"),
        (1.0, 0.9, 0.8, None, None, "second look"),  # a run without a label offset
    ],
)
def test_validation_chooses_the_way_to_predict(one, flip, second, flip_off, second_off, chosen):
    val = {"val_rmse": one, "val_rmse_flip_average": flip, "val_rmse_second_look": second}
    if flip_off is not None:
        val.update(val_rmse_flip_average_offset=flip_off, val_rmse_second_look_offset=second_off)
    choice = training.choose_looks(val)
    assert training.chosen_look(choice) == chosen
    assert choice["second_look"] == chosen.startswith("second look")
    assert choice["flip_average"] == (chosen != "one look")
    assert choice["offset"] == chosen.endswith("+ offset")


def test_a_run_saved_before_the_second_look_predicts_as_it_chose():
    assert training.chosen_look({"flip_average": False}) == "one look"
    assert training.chosen_look({"flip_average": True}) == "flip-averaged"
    assert training.chosen_look({}) == "flip-averaged"
    assert training.chosen_look({"second_look": True}) == "second look"


class _Constant:
    """A model-shaped stub answering ``points`` (pixels; default Kaggle's mean face) for any
    input, mirrored or not."""

    def __init__(self, points=keypoints.KAGGLE_MEAN_SHAPE):
        self.points = np.asarray(points, np.float32)

    def predict(self, x, batch_size=None, verbose=0):
        return np.tile(self.points, (len(x), 1))

    predict_on_batch = predict


def test_the_label_offset_is_measured_flip_averaged_and_subtracted_as_chosen():
    """Labels with a one-sided habit (every nose tip marked 0.3 px to the image's right of a
    mirror-symmetric face) and a model that answers them 0.6 px right and down: the flip
    average keeps the downward shift and loses both x offsets, and the label offset measured on
    those faces is what takes the flip-averaged answer back to the labels."""
    mean = keypoints.KAGGLE_MEAN_SHAPE.astype(np.float32)
    face = (mean + keypoints.flip_keypoints(mean[None])[0]) / 2  # mirror-symmetric
    nose_x = 2 * keypoints.NOSE_TIP
    labels = np.repeat(face[None], 3, axis=0)
    labels[:, nose_x] += 0.3  # the labeller's habit
    labels[0, 4:] = np.nan  # a 4-point row
    model = _Constant(labels[1] + 0.6)
    images = np.zeros((3, 96, 96), np.uint8)
    offset = training.measure_label_offset(model, images, labels)
    expected = np.zeros(30, np.float32)
    expected[1::2] = 0.6  # the shift down survives the mirror
    expected[nose_x] = -0.3  # the habit does not: the mirror put the nose back on the axis
    np.testing.assert_allclose(offset, expected, atol=1e-4)
    metrics = {"flip_average": True, "offset": True, "label_offset": offset.tolist()}
    assert training.chosen_look(metrics) == "flip-averaged + offset"
    chosen = training.predict_as_chosen(model, images, metrics)
    flip = training.predict_keypoints(model, images, flip_average=True)
    np.testing.assert_allclose(chosen, np.repeat(labels[1][None], 3, axis=0), atol=1e-4)
    assert keypoints.masked_rmse(labels, chosen) < 1e-4 < keypoints.masked_rmse(labels, flip)


@settings(max_examples=60, deadline=None)
@given(angle=st.floats(-30, 30), zoom=st.floats(0.6, 1.6))
def test_beyond_training_range_is_the_augmentations_rotation_and_zoom(angle, zoom):
    """Kaggle's mean face rotated by ``angle`` degrees and zoomed by ``zoom`` about the frame's
    centre is beyond the training range exactly when the augmentation could not have made it."""
    cfg = training.training_augment_config()
    assume(abs(abs(angle) - cfg.rotation_deg) > 1e-6)
    assume(min(abs(zoom - cfg.scale[0]), abs(zoom - cfg.scale[1])) > 1e-6)
    t = np.radians(angle)
    rot = zoom * np.array(
        [[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]
    )  # y down: ccw on screen
    pts = (keypoints.KAGGLE_MEAN_SHAPE.reshape(15, 2) - 47.5) @ rot.T + 47.5
    expected = abs(angle) > cfg.rotation_deg or not cfg.scale[0] <= zoom <= cfg.scale[1]
    assert training.beyond_training_range(pts.reshape(1, 30))[0] == expected


def test_the_second_look_changes_only_the_faces_beyond_the_range():
    """Face 0 is upright: its first look stands. Face 1's first look is Kaggle's mean face
    tilted by 20 degrees about the frame's centre, its nose tip 5 px off. The second look's
    alignment by the eyes is that tilt undone, the stub answers the same there (flip-averaged:
    the mean face made mirror-symmetric), and carried back that answer is tilted by 20 degrees:
    the nose tip's error is gone."""
    t = np.radians(20)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])

    def tilt(shape):
        return ((np.reshape(shape, (15, 2)) - 47.5) @ rot.T + 47.5).ravel()

    mean = keypoints.KAGGLE_MEAN_SHAPE
    off = tilt(mean)
    off[20] += 5.0  # nose tip x
    first = np.stack([mean + 1.0, off]).astype(np.float32)
    out = training.predict_second_look(_Constant(), np.zeros((2, 96, 96), np.uint8), first)
    assert out.dtype == np.float32 and out.shape == (2, 30)
    np.testing.assert_array_equal(out[0], first[0])
    symmetric = (mean + keypoints.flip_keypoints(mean)) / 2
    np.testing.assert_allclose(out[1], tilt(symmetric), atol=1e-3)


# Package files that training.py and experiments.py import but that cannot change a saved run's
# numbers: figures only, and synthetic data that reach a run as a file fingerprinted by its bytes.
NOT_RUN_CODE = {"viz.py": "figures only", "synthetic.py": "its data are hashed as a file"}


def _package_imports(module: str) -> set[str]:
    import ast

    tree = ast.parse((Path(experiments.__file__).parent / module).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "fkp_helpers":
            found |= {f"{alias.name}.py" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fkp_helpers."):
            found.add(node.module.split(".")[1] + ".py")
    return found


def test_every_module_a_run_imports_is_in_its_code_fingerprint():
    """A saved run is reused while its code is unchanged, so every package file that training
    and the saved-run bookkeeping import (directly or not) must be in TRAINING_SOURCES."""
    reached, todo = set(), ["training.py", "experiments.py"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += sorted(_package_imports(module))
    missing = reached - set(experiments.TRAINING_SOURCES) - set(NOT_RUN_CODE)
    assert not missing, f"saved runs would not notice changes to {sorted(missing)}"
    assert "photo.py" in reached  # the second look, which every run measures


def test_the_quick_profile_draws_the_same_faces_from_the_seed_alone():
    """Every quick run on the same validation rows and seed scores the same subset (whatever its
    training rows), so a table's mean-shape baseline can be scored on those faces too."""
    val = np.arange(100, 400)
    drawn = training.profile_rows(val, 128, seed=7)
    assert len(drawn) == 128 and np.all(np.diff(drawn) > 0) and np.isin(drawn, val).all()
    np.testing.assert_array_equal(drawn, training.profile_rows(val, 128, seed=7))
    assert not np.array_equal(drawn, training.profile_rows(val, 128, seed=8))
    np.testing.assert_array_equal(training.profile_rows(val, None, seed=7), val)
    np.testing.assert_array_equal(training.profile_rows(val, 300, seed=7), val)
