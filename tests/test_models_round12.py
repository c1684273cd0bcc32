"""Every model type's settings at their edges: a setting the model would bend (more ridge lags than the
window holds), one that makes its forecast a constant (a transformer of width 1) or one it does not read
at all is said before the data are read; a dropout just below 1 trains; a window's forecast is the same
alone or in a batch, padded or not, and eval mode repeats itself."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import tiny
from hftraining.core.config import DataConfig, ModelConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.pipeline import prepare
from hftraining.models import MODELS, build_model
from hftraining.models.registry import EVERY_MODEL, check_buildable, unread_settings, unread_settings_warning
from hftraining.workflows import train_run

SMALL = dict(hidden_size=16, num_heads=2, num_layers=1, dropout=0.1, patch_len=4, patch_stride=2, moving_avg=5,
             season_length=5, ridge_lags=5, lightgbm_rounds=3, lightgbm_early_stopping=2,
             lightgbm_min_data_in_leaf=5, lightgbm_rounds_without_validation=3)
"""Every model type at a size that builds and fits in a moment on windows of 10 rows."""


@pytest.fixture(scope="module")
def padded():
    """Two symbols, windows of 10 rows with as few as 2 real ones (left-padded at each split's start)."""
    return prepare(DataConfig(symbols=["AEM", "WPM"], sequence_length=10, prediction_horizon=3, min_history=2))


def _refused_before_the_data(tmp_path, monkeypatch, *overrides: str) -> str:
    """The one-line ConfigError ``hftraining train`` gives for ``overrides``, checked to come before any
    data are read."""
    monkeypatch.setattr(train_run, "prepare", lambda *a, **k: pytest.fail("the data were read before the refusal"))
    with pytest.raises(ConfigError) as e:
        train_run.train(load_config(None, tiny(tmp_path / "run", "evaluation.report=false", *overrides)))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("model_type", ["ridge", "lightgbm"])
def test_more_ridge_lags_than_the_window_holds_is_refused_by_name(tmp_path, monkeypatch, model_type):
    # the model read the window's 20 returns and no more (min(lags, window)): a run asked for 21 and
    # 50 lags trained the same 20-lag model without a word
    msg = _refused_before_the_data(tmp_path, monkeypatch, f"model.type={model_type}", "model.ridge_lags=21")
    assert msg.startswith("model.ridge_lags: 21") and "data.sequence_length=20" in msg and "at most 20" in msg
    with pytest.raises(ConfigError, match="model.ridge_lags: 20 .*data.sequence_length=10"):  # the default too
        check_buildable(ModelConfig(type=model_type), 3, 10)
    check_buildable(ModelConfig(type=model_type, ridge_lags=20), 3, 20)  # a window's worth is fine
    # the fitted baselines beside a run keep their default 20 lags whatever its window
    assert build_model(ModelConfig(type="ridge"), 5, 3, 10).lags == 10


@pytest.mark.parametrize("model_type", ["transformer", "patchtst"])
def test_a_dropout_just_below_one_trains(model_type):
    # model.dropout=0.999999 passes the config's "in [0, 1)"; its CPU mask rounded it to 65536/65536
    # and divided by zero in the first training step (ZeroDivisionError, a traceback)
    torch.manual_seed(0)
    cfg = ModelConfig(type=model_type, **{**SMALL, "dropout": 0.999999})
    model = build_model(cfg, 3, 2, 10).train()
    x, past = torch.randn(8, 10, 3), torch.randn(8, 10)
    out = model(x, None, past).prediction
    out.square().mean().backward()
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_transformer_one_value_wide_is_refused_by_name(tmp_path, monkeypatch):
    # its layer norms over one value return their bias: every window got the same forecast, trained or not
    msg = _refused_before_the_data(tmp_path, monkeypatch, "model.type=transformer", "model.hidden_size=1",
                                   "model.num_heads=1")
    assert msg.startswith("model.hidden_size: 1")
    torch.manual_seed(0)
    two = build_model(ModelConfig(type="transformer", **{**SMALL, "hidden_size": 2, "num_heads": 2}), 3, 2, 10).eval()
    with torch.no_grad():  # at width 2 the forecast depends on the window
        a, b = two(torch.randn(4, 10, 3)).prediction, two(torch.randn(4, 10, 3)).prediction
    assert not torch.allclose(a, b)
    check_buildable(ModelConfig(type="patchtst", **{**SMALL, "hidden_size": 1, "num_heads": 1}), 3, 10)  # BatchNorm


@pytest.mark.parametrize(("model_type", "key", "value"), [
    ("dlinear", "dropout", 0.3), ("dlinear", "hidden_size", 64), ("patchtst", "pooling", "mean"),
    ("transformer", "patch_len", 4), ("transformer", "moving_avg", 3), ("ridge", "lightgbm_num_leaves", 7),
    ("lightgbm", "ridge_lambdas", [1.0]), ("zero", "season_length", 3), ("seasonal_naive", "num_layers", 2),
])
def test_a_setting_the_model_type_does_not_read_is_said(model_type, key, value):
    cfg = ModelConfig(type=model_type, **{key: value})
    assert unread_settings(cfg) == [f"model.{key}={value}"]
    text = unread_settings_warning(cfg)
    assert text.startswith("warning: ") and f"model.{key}={value}" in text and repr(model_type) in text
    assert unread_settings_warning(ModelConfig(type=model_type)) is None  # the defaults say nothing


def test_the_quickstart_config_run_as_lightgbm_says_which_settings_do_nothing():
    # README: `hftraining train --config configs/quickstart.yaml model.type=lightgbm`; its transformer's
    # sizes do not act on LightGBM, and the run trains (said, not refused)
    cfg = load_config("configs/quickstart.yaml", ["model.type=lightgbm"])
    assert unread_settings(cfg.model) == ["model.hidden_size=64", "model.num_heads=4", "model.num_layers=2",
                                          "model.dropout=0.1"]
    assert unread_settings(load_config("configs/quickstart.yaml", []).model) == []


class _Recording(ModelConfig):
    """A model section that records which of its keys are read."""

    def __getattribute__(self, name):
        if name in ModelConfig.__dataclass_fields__:
            object.__getattribute__(self, "read").add(name)
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("model_type", sorted(MODELS.names()))
def test_each_model_type_declares_the_settings_it_reads(padded, model_type):
    """What :func:`unread_settings` says rests on each type's ``settings``: they are exactly the keys
    its construction, forward passes (training and eval, padded and not) and fit read."""
    cfg = _Recording(type=model_type, **SMALL)
    object.__setattr__(cfg, "read", set())
    ws = padded.train
    model = MODELS.get(model_type)(cfg, ws.features.shape[1], ws.horizon, ws.seq_len)
    if model.fits_on_data:
        model.fit_windows(ws, padded.val)
        model.fit_windows(ws, padded.val.subset(slice(0, 0)))  # the settings of a fit without validation
    b, whole = ws.batch(np.arange(8)), ws.batch(np.arange(len(ws) - 8, len(ws)))
    assert "mask" in b and "mask" not in whole
    for mode in (True, False):
        model.train(mode)
        model(b["x"], b["mask"], b["past"])
        model(whole["x"], None, whole["past"])
    assert cfg.read - EVERY_MODEL == MODELS.get(model_type).settings


@pytest.mark.parametrize("model_type", sorted(MODELS.names()))
def test_a_window_forecasts_the_same_alone_as_in_a_padded_batch(padded, model_type):
    """Eval mode: a window scored alone (no mask when it is unpadded) and in a batch with left-padded
    windows gets the same forecast, quantiles and class logits, and a second pass repeats the first."""
    torch.manual_seed(0)
    extra = {"quantiles": [0.9, 0.1, 0.5], "classification_threshold": 0.01} if model_type == "transformer" else {}
    cfg = ModelConfig(type=model_type, **SMALL, **extra)
    ws = padded.test
    model = build_model(cfg, ws.features.shape[1], ws.horizon, ws.seq_len)
    if model.fits_on_data:
        model.fit_windows(padded.train, padded.val)
    model.eval()
    idx = np.r_[np.arange(6), len(ws) - 3:len(ws)]  # the split's first (padded) windows and its last ones
    b = ws.batch(idx)
    assert bool((~b["mask"]).any())
    with torch.no_grad():
        whole, again = model(b["x"], b["mask"], b["past"]), model(b["x"], b["mask"], b["past"])
        assert whole.prediction.shape == (len(idx), ws.horizon) and torch.isfinite(whole.prediction).all()
        for f in dataclasses.fields(whole):
            a, c = getattr(whole, f.name), getattr(again, f.name)
            assert (a is None) == (c is None) and (a is None or torch.equal(a, c))
        for k, i in enumerate(idx):
            one = ws.batch(np.array([i]))
            alone = model(one["x"], one.get("mask"), one["past"])
            for f in dataclasses.fields(alone):
                a = getattr(alone, f.name)
                if a is not None:
                    torch.testing.assert_close(a[0], getattr(whole, f.name)[k], rtol=1e-5, atol=1e-5)
    if extra:
        assert whole.quantiles.shape == whole.class_logits.shape == (len(idx), ws.horizon, 3)


def test_a_lightgbm_whose_trees_cannot_split_says_so_in_the_training_log(tmp_path, padded):
    # model.lightgbm_min_data_in_leaf above half the windows a round draws: every tree was one leaf and
    # the model forecast one constant per step, logged as "rounds 1, val_mse ..." like any fit
    pytest.importorskip("lightgbm")
    ws = padded.train
    fits = {}
    for leaf in (5, 100_000):
        m = build_model(ModelConfig(type="lightgbm", **{**SMALL, "lightgbm_min_data_in_leaf": leaf}),
                        ws.features.shape[1], ws.horizon, ws.seq_len)
        fits[leaf] = m.fit_windows(ws, padded.val)
        with torch.no_grad():
            b = padded.test.batch(np.arange(len(padded.test)))
            spread = float(m(b["x"], b.get("mask"), b["past"]).prediction.std(dim=0).max())
        assert (fits[leaf]["splits"] == 0) == (spread < 1e-6), (leaf, fits[leaf], spread)
    assert fits[5]["splits"] > 0 and fits[100_000]["splits"] == 0
    run = tmp_path / "run"
    train_run.train(load_config(None, tiny(run, "evaluation.report=false", "model.type=lightgbm", "model.ridge_lags=5",
                                           "model.lightgbm_min_data_in_leaf=100000", "model.lightgbm_rounds=3")))
    assert "splits 0," in (run / "train.log").read_text()


def test_a_run_says_in_its_log_which_settings_its_model_type_does_not_read(tmp_path):
    # the warning reaches the run's console and train.log once, before any data is read
    run = tmp_path / "run"
    train_run.train(load_config(None, tiny(run, "evaluation.report=false", "model.type=dlinear", "model.moving_avg=5",
                                           "model.dropout=0.3", "model.pooling=mean", "training.max_steps=2")))
    lines = [ln for ln in (run / "train.log").read_text().splitlines() if "does not read" in ln]
    assert len(lines) == 1 and "model.type 'dlinear' does not read" in lines[0]
    assert "model.dropout=0.3" in lines[0] and "model.pooling=mean" in lines[0] and "model.moving_avg" not in lines[0]


@pytest.mark.parametrize("model_type", ["dlinear", "ridge", "zero"])
def test_a_model_type_without_heads_is_not_refused_over_them(model_type):
    # hidden_size and num_heads do nothing for these types: their ratio was refused
    cfg = load_config(None, [f"model.type={model_type}", "model.hidden_size=15", "model.num_heads=4"])
    assert "model.hidden_size=15" in unread_settings(cfg.model)
    with pytest.raises(ConfigError, match="model.num_heads: 4 does not divide"):
        load_config(None, ["model.type=transformer", "model.hidden_size=15", "model.num_heads=4"])
