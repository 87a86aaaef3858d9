"""Recipe changes measured by ``benchmarks/bench_recipes.py``: the L1 and Wing losses, the moving
average of the weights (EMA), and test-time augmentation beyond the flip."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fkp_helpers import models, seeding, training
from fkp_helpers.keypoints import N_KEYPOINTS


def _np_loss(name, y_true, y_pred):
    """The losses written again in NumPy: the batch mean over labelled coordinates."""
    d = np.abs(y_pred - np.nan_to_num(y_true))
    mask = ~np.isnan(y_true)
    if name == "mse":
        v = d**2
    elif name == "l1":
        v = d
    else:
        w, eps = models.WING_WIDTH, models.WING_CURVATURE
        v = np.where(d < w, w * np.log1p(d / eps), d - (w - w * np.log1p(w / eps)))
    return (v * mask).sum() / max(mask.sum(), 1)


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["mse", "l1", "wing"]),
    st.integers(1, 4),
    st.floats(0.0, 0.9),
    st.integers(0, 2**31 - 1),
)
def test_losses_are_batch_means_over_labelled_coordinates(name, batch, p_missing, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.uniform(0, 95, (batch, 30)).astype(np.float32)
    y_true[rng.random(y_true.shape) < p_missing] = np.nan
    y_pred = (np.nan_to_num(y_true, nan=40.0) + rng.normal(0, 6, y_true.shape)).astype(np.float32)
    got = float(np.mean(models.LOSSES[name](y_true, y_pred)))
    assert got == pytest.approx(_np_loss(name, y_true, y_pred), rel=1e-4, abs=1e-4)


def test_wing_loss_is_continuous_and_steeper_than_l1_near_zero():
    w = models.WING_WIDTH
    y = np.zeros((1, 30), np.float32)

    def at(d):
        return float(np.mean(models.masked_wing(y, np.full((1, 30), d, np.float32))))

    assert at(w - 1e-3) == pytest.approx(at(w + 1e-3), abs=5e-3)  # continuous at w
    assert at(w + 2.0) - at(w + 1.0) == pytest.approx(1.0, abs=1e-4)  # linear beyond w
    assert at(0.2) - at(0.1) > 0.1 * 2  # near 0 the slope is w / eps = 4 per pixel, L1's is 1


def test_unknown_loss_is_a_clear_error():
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(30)])
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        training.compile_model(net, 1e-3, loss="huber")


def test_ema_is_what_validation_scores_and_what_is_kept():
    """With ``ema``, the epoch's validation score and the weights kept at the end are the moving
    average's (not the last step's raw weights, which a fast learning rate moves a lot)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 30)) * 5 + 40).astype(np.float32)
    y[:, 20:] = np.nan

    def fit(ema):
        seeding.seed_everything(0)
        net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(30)])
        training.compile_model(net, 0.5, loss="mse", ema=ema)
        callbacks = [*training.ema_callbacks(net), training.KeepBestWeights("val_rmse")]
        hist = net.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            validation_data=(x, y),
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        )
        return net, callbacks, hist.history

    net, callbacks, hist = fit(0.9)
    assert net.optimizer.use_ema
    assert isinstance(callbacks[0], keras.callbacks.SwapEMAWeights)
    after = net.evaluate(x, y, verbose=0, return_dict=True)["rmse"]
    assert after == pytest.approx(min(hist["val_rmse"]), rel=1e-4)
    _, plain_callbacks, plain = fit(None)
    assert len(plain_callbacks) == 1  # no swap without a moving average
    # the same training steps (the average does not steer them), another validation score
    np.testing.assert_allclose(hist["loss"], plain["loss"], rtol=1e-5)
    assert not np.allclose(hist["val_rmse"], plain["val_rmse"], rtol=1e-3)


def _centroid_model():
    """A 'network' whose 15 keypoints are all the intensity centroid of the face (pixels): it
    moves exactly with the face, as a good keypoint model does."""
    inp = keras.Input((96, 96, 1))
    w = keras.ops.squeeze(inp, -1)
    total = keras.ops.sum(w, axis=(1, 2))
    grid = keras.ops.arange(96, dtype="float32")
    cx = keras.ops.sum(keras.ops.sum(w, axis=1) * grid, axis=1) / total
    cy = keras.ops.sum(keras.ops.sum(w, axis=2) * grid, axis=1) / total
    out = keras.ops.tile(keras.ops.stack([cx, cy], axis=1), (1, N_KEYPOINTS))
    return keras.Model(inp, out)


def _blobs(centres):
    yy, xx = np.mgrid[0:96, 0:96]
    return np.stack(
        [np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0**2)) for cx, cy in centres]
    ).astype(np.float32)


def test_tta_maps_each_view_back_to_the_face():
    model = _centroid_model()
    faces = _blobs([(40.0, 50.0), (55.5, 44.25)])
    direct = training.predict_keypoints(model, faces)
    np.testing.assert_allclose(direct[:, :2], [[40.0, 50.0], [55.5, 44.25]], atol=1e-3)
    views = ((1.0, 0.0, 0.0), (1.0, 2.0, -1.0), (1.05, 0.0, 0.0), (0.95, -1.0, 1.0))
    for v in views:
        one = training.predict_tta(model, faces, (v,), flip_average=False)
        np.testing.assert_allclose(one, direct, atol=0.02, err_msg=str(v))
    both = training.predict_tta(model, faces, views, flip_average=True)
    np.testing.assert_allclose(both, direct, atol=0.02)
    # the identity view alone is predict_keypoints
    np.testing.assert_array_equal(
        training.predict_tta(model, faces, flip_average=True),
        training.predict_keypoints(model, faces, flip_average=True),
    )


@pytest.fixture
def bench(monkeypatch, tmp_path):
    """``benchmarks/bench_recipes.py`` as a module (importing it trains nothing)."""
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path))  # the module's import must not change it
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_recipes.py"
    spec = importlib.util.spec_from_file_location("bench_recipes_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_recipes_trains_the_rows_named_in_fkp_recipe_rows(monkeypatch, bench):
    """``FKP_RECIPE_ROWS`` keeps the reference, its second seed and the rows it names, in the
    table's order; an unknown name stops the benchmark before any training, naming it."""
    monkeypatch.delenv("FKP_RECIPE_ROWS", raising=False)
    every = list(bench.selected_changes())  # every row but those that repeat the reference
    assert every == [n for n in bench.CHANGES if n != "L1 loss"]
    assert bench.CHANGES["reference"][1] == {} and bench.REFERENCE_LOSS == "l1"
    monkeypatch.setenv("FKP_RECIPE_ROWS", "full-strength augmentation, weight decay 0.05")
    assert list(bench.selected_changes()) == [
        "reference",
        "reference, seed + 1",
        "weight decay 0.05",
        "full-strength augmentation",
    ]
    assert bench.CHANGES["weight decay 0.05"][2] == {"weight_decay": 0.05}
    assert bench.CHANGES["heatmap loss"][1] == {"heatmap_loss": bench.HEATMAP_LOSS_WEIGHT}
    monkeypatch.setenv("FKP_RECIPE_ROWS", "weight decay 0.05,no such row")
    with pytest.raises(SystemExit, match="no such row"):
        bench.selected_changes()
    # a row that would train the base widths again is left out; the others keep theirs
    monkeypatch.setenv("FKP_RECIPE_ROWS", "full-profile widths,narrower")
    monkeypatch.setattr(bench, "BASE_WIDTHS", (16, 32, 64, 128))
    assert bench.CHANGES["full-profile widths"][2] == {"widths": (24, 48, 96, 192)}
    assert list(bench.selected_changes())[2:] == ["narrower", "full-profile widths"]
    monkeypatch.setattr(bench, "BASE_WIDTHS", (24, 48, 96, 192))
    assert list(bench.selected_changes())[2:] == ["narrower"]


def test_error_sources_tells_shared_error_from_disagreement(bench):
    """Two models that err in opposite directions average to the labels (all disagreement, no
    shared error); two that make the same error keep it whole when averaged. Missing labels are
    skipped, whatever the models predict there."""
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 76, (40, 2 * N_KEYPOINTS))
    y[rng.random(y.shape[0]) < 0.5, 4:] = np.nan  # half the faces have only 2 keypoints
    d = rng.normal(0, 1.5, y.shape)
    a, b = y + d, y - d
    a[np.isnan(y)], b[np.isnan(y)] = 1000.0, -1000.0  # never labelled: must not count
    s = bench.error_sources(a, b, y)
    labelled = ~np.isnan(y)
    expected = 2 * np.sqrt(np.mean(d[labelled] ** 2))
    assert s["ensemble_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert s["disagreement_rms"] == pytest.approx(expected)
    assert s["shared_rmse"] == pytest.approx(0.0, abs=1e-9)
    same = bench.error_sources(y + d, y + d, y)
    assert same["disagreement_rms"] == 0.0
    assert same["ensemble_rmse"] == pytest.approx(np.sqrt(np.mean(d[labelled] ** 2)))
    assert same["shared_rmse"] == pytest.approx(same["ensemble_rmse"])
