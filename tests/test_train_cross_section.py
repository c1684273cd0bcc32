"""Cross-sectional training end to end: per-date labels, date batches and the IC / ranking losses
learn a signal that only shows across symbols, and a resumed run ends where an uninterrupted one ends."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import initial_weights
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
