"""Cross-sectional training end to end: per-date labels, date batches and the IC / ranking losses
learn a signal that only shows across symbols, and a resumed run ends where an uninterrupted one ends."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import initial_weights, one_and_two_processes
from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.eval import metrics
from hftraining.models import build_model
from hftraining.models.predict import predict_scaled
from hftraining.train.runner import training_run


def _write_panel(folder, symbols: int = 12, dates: int = 420, seed: int = 0) -> None:
    """A panel whose next return is minus half of today's return, relative to the day's other
    symbols (a cross-sectional reversal), on top of a common market move that swamps it in MSE."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2015-01-02", periods=dates, tz="UTC")
    r = np.zeros((dates, symbols))
    own = rng.normal(0, 0.01, (dates, symbols))
    market = rng.normal(0, 0.02, dates)
    for t in range(1, dates):
        prev = r[t - 1] - r[t - 1].mean()
        r[t] = market[t] - 0.5 * prev + own[t]
    close = 50 * np.exp(np.cumsum(r, axis=0))
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(symbols):
        c = close[:, s]
        o = np.r_[c[0], c[:-1]]
        pd.DataFrame({"timestamp": days, "open": o, "high": np.maximum(o, c) * 1.002, "low": np.minimum(o, c) * 0.998,
                      "close": c, "volume": rng.integers(1_000, 5_000, dates)}).to_csv(folder / f"S{s:02d}.csv", index=False)


BASE = ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
        "data.sequence_length=5", "data.prediction_horizon=1", "data.features=[log_return_1]",
        "data.target=cs_rank", "data.batching=dates", "data.dates_per_batch=4", "training.learning_rate=0.003",
        "training.logging_steps=10", "evaluation.eval_steps=0", "evaluation.report=false",
        "output.tensorboard=false", "output.progress_bar=never"]


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cs") / "data"
    _write_panel(folder)
    return folder


def _rank_ic(model, ws) -> float:
    pred = predict_scaled(model.cpu().eval(), ws, 256).astype(np.float64)
    return metrics.mean_cross_sectional_ic(pred, ws.targets().astype(np.float64), ws.times, rank=True)


def one_step(tr, batches: list) -> tuple[dict, list, float]:
    """One optimizer step of trainer ``tr`` over the micro-batches of window indices ``batches`` (its sampler's
    draws replaced) → (the weights before it, each parameter's accumulated gradient, the step's logged loss)."""
    draws = iter(batches)
    tr.sampler.next_batch = lambda: next(draws)
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.model.train()
    tr.opt.train()
    tr.train_step()
    tr.read_back()
    return start, [p.grad.clone() for p in tr.model.parameters()], tr._window.losses[-1]


@pytest.mark.parametrize("loss", ["ic", "rank"])
def test_a_cross_sectional_loss_learns_the_cross_section(panel, tmp_path, loss):
    cfg = load_config(None, [*BASE, f"data.data_dir={panel}", f"output.output_dir={tmp_path / 'run'}",
                             f"model.loss={loss}", "training.max_steps=80"])
    data = prepare(cfg.data)
    with initial_weights() as start:
        with training_run(cfg, data) as run:
            model = run.model
    before = build_model(cfg.model, len(data.preprocessing.feature_columns), 1, 5)
    before.load_state_dict(start)
    ic0, ic1 = _rank_ic(before, data.val), _rank_ic(model, data.val)
    assert ic1 > 0.3 and ic1 > ic0 + 0.2, (ic0, ic1)  # the true rank IC of the reversal is about 0.5


def test_date_batches_resume_bit_exactly(panel, tmp_path):
    common = [*BASE, f"data.data_dir={panel}", "model.loss=ic", "training.max_steps=12", "training.save_steps=6",
              "model.dropout=0.1"]
    full = tmp_path / "full"
    with training_run(load_config(None, [*common, f"output.output_dir={full}"])):
        pass
    part = tmp_path / "part"
    shutil.copytree(full / "checkpoints" / "step-00000006", part / "checkpoints" / "step-00000006")
    with training_run(load_config(None, [*common, f"output.output_dir={part}", "training.resume_from_checkpoint=auto"])):
        pass
    assert (part / "final" / "model.safetensors").read_bytes() == (full / "final" / "model.safetensors").read_bytes()


def test_compile_refuses_date_batches(panel, tmp_path):
    from hftraining.core.errors import ConfigError
    from hftraining.train.runner import build_trainer

    cfg = load_config(None, [*BASE, f"data.data_dir={panel}", f"output.output_dir={tmp_path}", "training.compile=default"])
    with pytest.raises(ConfigError, match="data.batching=dates"):
        build_trainer(cfg, prepare(cfg.data))
    assert torch.get_num_threads() >= 1


def test_a_cross_sectional_run_is_judged_on_its_cross_section(panel, tmp_path):
    """eval.json and the table lead with the rank IC and its strongest baseline, the backtest trades
    the top-k book, and predictions come in the label's units (no price path)."""
    import json

    from hftraining.inference.forecaster import Forecaster
    from hftraining.workflows.train_run import train

    out = tmp_path / "run"
    cfg = load_config(None, [*BASE, f"data.data_dir={panel}", f"output.output_dir={out}", "model.loss=rank",
                             "training.max_steps=6"])
    result = train(cfg)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["target"] == "cs_rank" and saved["units"].startswith("per-date ranks")
    assert result["verdict"] == result["cross_section_verdict"] and result["verdict"].startswith("step-1 rank IC")
    assert result["cross_section_strongest"]["name"] in result["baselines"]
    assert result["mse_verdict"].startswith("model MSE / zero-forecast MSE")
    assert saved["backtest"]["settings"]["portfolio"] == "topk"
    assert "auto" in saved["backtest"]["settings"]["portfolio_from"]
    table = Forecaster.from_pretrained(out / "final").predict(str(panel))
    assert "forecast_cs_rank" in table and "forecast_price" not in table and "forecast_return" not in table
    assert len(table) == 12


def _listed_later_panel(folder, always: int = 3, later: int = 4, dates: int = 300, listed: int = 150):
    """``always`` symbols on every business day and ``later`` more listed from day ``listed``: dates of
    ``always`` and of ``always + later`` windows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2015-01-02", periods=dates, tz="UTC")
    for s in range(always + later):
        c = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, dates)))
        df = pd.DataFrame({"timestamp": days, "open": c, "high": c * 1.002, "low": c * 0.998, "close": c,
                           "volume": rng.integers(1000, 5000, dates)})
        (df if s < always else df.iloc[listed:]).to_csv(folder / f"S{s:02d}.csv", index=False)
    return folder


@pytest.mark.parametrize("loss", ["ic", "rank"])
def test_accumulated_date_batches_of_unequal_size_give_the_gradient_of_their_union(tmp_path, loss):
    """With model.loss ic/rank and the quantile and buy/hold/sell heads, two micro-batches of one date each
    (3 and 7 symbols) give the gradient of the loss of both dates in one batch: the IC/rank part a mean over
    dates, the heads' parts means over windows. Weighting every part of a micro-batch 1/accum counted each
    window of the small date 7/3 times as much as one of the large date in the heads' parts."""
    from hftraining.train.runner import build_trainer

    folder = _listed_later_panel(tmp_path / "data")
    weights = f"{{{loss}: 1.0, quantile: 0.5, classification: 2.0}}"
    cfg = load_config(None, [
        "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
        "data.sequence_length=5", "data.prediction_horizon=2", "data.features=[log_return_1]", f"data.data_dir={folder}",
        "data.batching=dates", "data.dates_per_batch=1", f"model.loss={loss}", "model.quantiles=[0.1, 0.5, 0.9]",
        "model.classification_threshold=0.005", f"model.loss_weights={weights}",
        "training.gradient_accumulation_steps=2", "training.optimizer=sgd", "training.max_grad_norm=0",
        "training.max_steps=1", "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
        "output.tensorboard=false", "output.progress_bar=never", f"output.output_dir={tmp_path / 'run'}"])
    tr = build_trainer(cfg)
    ws = tr.data.train
    dates, sizes = np.unique(ws.times, return_counts=True)
    small, large = (np.flatnonzero(ws.times == dates[np.flatnonzero(sizes == n)[0]]) for n in (3, 7))
    start, accumulated, logged = one_step(tr, [small, large])
    parts = tr._window.parts

    tr.model.load_state_dict(start)  # the weights both gradients are taken at
    tr.model.zero_grad(set_to_none=True)
    b = tr._batch(np.concatenate([small, large]))
    union, union_parts = tr.forward_loss(b["x"], b.get("mask"), b["past"], b["y"], b["groups"])
    union.backward()
    tr.close()
    assert set(union_parts) == {loss, "quantile", "classification"}
    for p, a in zip(tr.model.parameters(), accumulated):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)  # float32 sums in another order
    assert logged == pytest.approx(float(union.detach()), rel=1e-5)  # and the logged loss and parts are the union's
    assert parts == pytest.approx({k: float(v.detach()) for k, v in union_parts.items()}, rel=1e-5)


@pytest.mark.slow  # over 20 s of subprocesses here; `make test-all` runs it
def test_uneven_date_batches_with_heads_under_two_processes_equal_one(tmp_path):
    """DDP averages the ranks' gradients: with model.loss ic and the quantile and buy/hold/sell heads, a
    rank holding a date of 3 windows weighed as much in the heads' parts as one holding a date of 7, unlike
    one process holding both dates. Each part is weighted by its term count over all ranks instead."""
    folder = _listed_later_panel(tmp_path / "data")
    common = ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
              "data.sequence_length=5", "data.prediction_horizon=1", "data.features=[log_return_1]",
              f"data.data_dir={folder}", "data.batching=dates", "model.loss=ic", "model.quantiles=[0.1, 0.5, 0.9]",
              "model.classification_threshold=0.005", "training.optimizer=sgd", "training.learning_rate=0.1",
              "training.max_steps=6", "training.save_steps=0", "training.logging_steps=3", "evaluation.eval_steps=0",
              "evaluation.report=false", "training.device=cpu", "output.tensorboard=false", "output.progress_bar=never"]
    one, two = one_and_two_processes(tmp_path, common)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6, msg=k)
