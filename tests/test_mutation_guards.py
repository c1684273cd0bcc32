"""Defects a careless edit could make and that no other test would notice.

- The cross-sectional verdict: a model that ranks significantly WORSE than the strongest baseline is
  never said to rank better (the sign of the paired difference counts, not only its p-value).
- Walk-forward folds: ``data.embargo`` of a symbol's own rows separate a fold's last training target
  from its first validation target, as they separate validation from the test block.
- The validation score of a cross-sectional label: ``neg_ic`` / ``neg_rank_ic`` are minus the IC
  (lower is better, as early stopping and the best checkpoint read them).
- Conformal intervals are calibrated on the validation windows (never on those trained on).
- The training sampler shuffles every epoch anew (an order that repeats each epoch is not SGD's).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny
from hftraining.core.config import Config, DataConfig, load_config
from hftraining.core.jsonio import read_json
from hftraining.data.pipeline import prepare
from hftraining.data import windows
from hftraining.data.synth import synth_ohlcv
from hftraining.data.windows import EpochSampler
from hftraining.eval import metrics
from hftraining.eval.forecasts import Forecasts, score
from hftraining.eval.intervals import calibrate
from hftraining.inference.forecaster import Forecaster
from hftraining.models.predict import predict_scaled
from hftraining.train.runner import build_trainer
from hftraining.workflows.train_run import train
from hftraining.workflows.walkforward import prepare_fold


def _cross_section(model_noise: float, baseline_noise: float, n_symbols: int = 8, n_dates: int = 40) -> Forecasts:
    """A cs_rank panel: the model and the drift baseline are the realisation plus noise of the given sizes."""
    rng = np.random.default_rng(5)
    W, H = n_symbols * n_dates, 2
    true = rng.normal(0, 0.01, size=(W, H))
    pred = {"model": true + rng.normal(0, model_noise, size=(W, H)), "zero": np.zeros((W, H)),
            "drift": true + rng.normal(0, baseline_noise, size=(W, H))}
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(n_dates, dtype=np.int64) * 86_400 * 10**9, n_symbols),
                     symbol_ids=np.tile(np.arange(n_symbols), n_dates), symbols=[f"S{i}" for i in range(n_symbols)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W), target="cs_rank")


def test_the_cross_section_verdict_reads_the_sign_of_a_significant_difference():
    """A significant paired difference in rank IC is a gain only when it is positive: a model the
    strongest baseline out-ranks is not worth its cost, whatever the p-value."""
    worse = score(_cross_section(model_noise=0.05, baseline_noise=0.001))  # the baseline ranks far better
    diff = worse["cross_section_strongest"]["difference"]
    assert diff["mean"] < 0 and diff["p_value"] < 0.05
    assert "ranks significantly better, so the model is not worth its cost" in worse["verdict"], worse["verdict"]
    assert "the model ranks better" not in worse["verdict"]
    better = score(_cross_section(model_noise=0.001, baseline_noise=0.05))
    assert better["cross_section_strongest"]["difference"]["mean"] > 0
    assert "the model ranks better than the strongest baseline" in better["verdict"], better["verdict"]


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_a_walk_forward_fold_leaves_the_embargo_between_training_and_validation(scheme):
    """With windows that may end at a segment's first row (min_history 1), only the embargo keeps a
    fold's last training target and its first validation target ``data.embargo`` rows apart."""
    emb, H, K = 5, 3, 2
    frames = {"A": synth_ohlcv(360, seed=3), "B": synth_ohlcv(300, seed=4, start="2000-03-01")}
    cfg = Config(data=DataConfig(sequence_length=20, prediction_horizon=H, features=["log_return_1"], cache_dir=None,
                                 embargo=emb, val_ratio=0.2, min_history=1))  # windows end from a segment's first row
    for k in range(K):
        data = prepare_fold(cfg, frames, k, K, scheme)
        fit, val = data.train, data.val
        assert len(fit) and len(val), (k, scheme)
        for s in np.unique(val.symbol_ids):
            first_val_target = int(val.ends[val.symbol_ids == s].min()) + 1
            mine = fit.ends[fit.symbol_ids == s]
            if len(mine):  # rows last + 1 .. first - 1, at least data.embargo of them, belong to no split
                last_train_target = int(mine.max()) + H
                assert first_val_target - last_train_target > emb, (k, scheme, int(s), last_train_target, first_val_target)


@pytest.mark.parametrize("loss", ["rank", "ic"])
def test_the_validation_ic_score_is_minus_the_ic(tmp_path, loss):
    """Early stopping and the best checkpoint keep the lowest score: an IC without its minus would
    keep the model that ranks worst."""
    frames = {f"S{i}": synth_ohlcv(160, seed=20 + i) for i in range(6)}
    cfg = load_config(None, ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
                             "data.sequence_length=5", "data.prediction_horizon=2", "data.features=[log_return_1]",
                             "data.target=cs_rank", f"model.loss={loss}", "data.batching=dates", "output.tensorboard=false",
                             "output.progress_bar=never", f"output.output_dir={tmp_path / 'run'}"])
    data = prepare(cfg.data, frames)
    trainer = build_trainer(cfg, data)
    ws = data.val
    scores = trainer.evaluate(ws)
    pred = predict_scaled(trainer.model, ws, 256).astype(np.float64)
    true = ws.targets().astype(np.float64)
    for key, rank in (("neg_ic", False), ("neg_rank_ic", True)):
        ic = metrics.mean_cross_sectional_ic(pred, true, ws.times, rank=rank)
        assert np.isfinite(ic) and ic != 0
        assert scores[key] == pytest.approx(-ic, rel=1e-6, abs=1e-9), key
    assert scores["loss"] == scores["neg_rank_ic" if loss == "rank" else "neg_ic"]


def test_training_calibrates_the_intervals_on_the_validation_windows(tmp_path):
    """Residuals of the windows trained on are smaller than those of new data: intervals calibrated
    on them would be too narrow. The saved calibration is the validation windows' own."""
    out = tmp_path / "run"
    cfg = load_config(None, tiny(out, "training.max_steps=1", "evaluation.report=false", "evaluation.intervals=[0.8]",
                                 "data.symbols=[AEM]", "evaluation.eval_steps=0"))
    train(cfg)
    saved = read_json(out / "final" / "intervals.json")
    f = Forecaster.from_pretrained(out / "final")
    data = prepare(cfg.data)
    ev, bs = cfg.evaluation, cfg.data.eval_batch_size
    val = calibrate(f.model, data.val, f.preprocessing.target_scale, ev, bs, q_levels=list(cfg.model.quantiles))
    fit = calibrate(f.model, data.train, f.preprocessing.target_scale, ev, bs, q_levels=list(cfg.model.quantiles))
    assert not np.allclose(val.radius, fit.radius)  # the two sets of windows give different radii
    assert saved["n"] == val.n
    np.testing.assert_allclose(np.asarray(saved["radius"], np.float64), val.radius, rtol=1e-6)


@pytest.mark.parametrize("materialized", [True, False])
def test_every_epoch_draws_the_windows_in_a_new_order(monkeypatch, materialized):
    if not materialized:  # the permutation computed on the fly, as for training sets too large to hold one
        monkeypatch.setattr(windows, "MATERIALIZED_MAX", 10)
    n, B = 300, 20
    s = EpochSampler(n, B, seed=7)
    epochs = [np.concatenate([s.next_batch() for _ in range(n // B)]) for _ in range(3)]
    assert s.epoch == 2
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))  # each epoch: every window once
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
