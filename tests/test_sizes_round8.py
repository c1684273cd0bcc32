"""Sizes past what a machine or a float can hold: a model too large to build is one config line said
before the earlier run is touched (never the allocator's traceback, never a loop over 2**62 layers),
and an annualised return past the float range is +inf (null in eval.json, a dash in the table), not
an OverflowError after training."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining import cli
from hftraining.core.config import EvaluationConfig, ModelConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.core.jsonio import dumps
from hftraining.eval.backtest import Simulation, backtest_forecasts, format_backtest, performance
from hftraining.eval.forecasts import Forecasts
from hftraining.models import MODELS, build_model
from hftraining.models import folder, registry
from hftraining.workflows.train_run import train
from conftest import tiny

CONFIGS = Path(cli.__file__).resolve().parents[2] / "configs"
BIG = 2**62


def _earlier_run(root: Path) -> list[str]:
    """A finished run's folder (the files output.overwrite would remove)."""
    (root / "final").mkdir(parents=True)
    (root / "final" / "model.safetensors").write_bytes(b"weights")
    (root / "checkpoints" / "checkpoint-30").mkdir(parents=True)
    (root / "eval.json").write_text("{}\n")
    return sorted(p.name for p in root.rglob("*"))


@pytest.mark.parametrize("override, key", [
    ("model.hidden_size=1048576", "model.hidden_size"),  # 13 TB for one attention block: the allocator's traceback
    (f"model.hidden_size={BIG}", "model.hidden_size"),  # "Storage size calculation overflowed"
    (f"model.intermediate_size={BIG}", "model.intermediate_size"),
    (f"data.sequence_length={BIG}", "data.sequence_length"),
    (f"data.prediction_horizon={BIG}", "data.prediction_horizon"),
    (f"model.num_layers={BIG}", "model.num_layers"),  # built layers without end
    ("model.hidden_size=65536", "model.hidden_size=65,536"),  # at the width cap: 5e10 parameters
])
def test_an_oversized_model_is_one_config_error_and_the_earlier_run_stays(tmp_path, override, key):
    root = tmp_path / "run"
    before = _earlier_run(root)
    cfg = load_config(None, tiny(root, "output.overwrite=true", "training.max_steps=2", "model.num_heads=1", override))
    with pytest.raises(ConfigError) as e:
        train(cfg)
    text = str(e.value)
    assert key in text and "\n" not in text and "choose" in text
    assert sorted(p.name for p in root.rglob("*")) == before
    assert (root / "final" / "model.safetensors").read_bytes() == b"weights"


def test_the_typo_on_the_command_line_exits_2_with_one_line(tmp_path, capsys):
    root = tmp_path / "run"
    before = _earlier_run(root)
    code = cli.main(["train", "--config", str(CONFIGS / "quickstart.yaml"), f"output.output_dir={root}",
                     "model.hidden_size=1048576"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("hftraining: error: model.hidden_size: 1,048,576 is more than 65,536")
    assert sorted(p.name for p in root.rglob("*")) == before


def _small(name: str, **kw) -> ModelConfig:
    return ModelConfig(type=name, hidden_size=16, num_heads=2, patch_len=4, patch_stride=2, moving_avg=5,
                       season_length=5, ridge_lags=6, **kw)


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("layers", [1, 3])
def test_the_count_read_off_one_layer_is_the_whole_models_for_every_type(name, layers):
    """The size check counts 0 and 1 layer and extrapolates (no loop over num_layers): exact for every
    registered model, the one a model folder of it holds."""
    heads = MODELS.get(name).heads
    cfg = _small(name, num_layers=layers, quantiles=[0.1, 0.9] if "quantile" in heads else [],
                 classification_threshold=0.01 if "classification" in heads else 0.0)
    with torch.device("meta"):
        model = build_model(cfg, 7, 3, 24)
    n, b = registry.model_size(cfg, 7, 3, 24)
    assert n == model.num_parameters()
    assert b == sum(t.numel() for t in model.buffers())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_type_is_refused_past_the_host_memory_and_kept_at_sensible_sizes(monkeypatch, name):
    cfg = dataclasses.replace(ModelConfig(type=name), patch_len=16, moving_avg=25, season_length=5)
    n, b = registry.model_size(cfg, 1, 5, 60)
    monkeypatch.setattr(registry, "host_memory", lambda: 8 * 2**30)  # a small laptop: the production sizes train
    registry.check_buildable(cfg, 5, 60)
    monkeypatch.setattr(registry, "host_memory", lambda: 2**20)  # 1 MiB
    if registry.TRAINING_BYTES * n + 4 * b <= 2**20:  # the baselines: nothing to hold
        registry.check_buildable(cfg, 5, 60)
    else:
        with pytest.raises(ConfigError, match=rf"{n:,} parameters and {b:,} buffer values, .* GiB to train .* "
                                              r"more than this host's 0.0 GiB of memory; choose smaller sizes"):
            registry.check_buildable(cfg, 5, 60)


@pytest.mark.parametrize("config", ["production.json", "quickstart.yaml", "alpha.yaml"])
@pytest.mark.parametrize("name", ["transformer", "patchtst", "dlinear", "ridge"])
def test_the_shipped_configs_and_the_zoo_are_never_refused(config, name):
    cfg = load_config(str(CONFIGS / config),
                      [f"model.type={name}", "model.patch_len=8", "model.patch_stride=4", "model.moving_avg=5"])
    registry.check_buildable(cfg.model, cfg.data.prediction_horizon, cfg.data.sequence_length,
                             cfg.training.gradient_checkpointing and MODELS.get(name).supports_gradient_checkpointing,
                             n_features=200)


# --------------------------------------------------------------------------------------------
# annualised figures past the float range


def _sim(T: int = 100) -> Simulation:
    r = np.full(T, 0.0005)
    r[::2] += 0.001  # a total return of 10% over T periods
    return Simulation(np.arange(T), r, r, np.full(T, 0.5), hits=10, positions_taken=20)


@pytest.mark.parametrize("ppy", [252 * 6.5 * 3600, 1e308])  # second bars over a short test split; the largest float
def test_an_annual_return_past_the_float_range_is_inf_said_and_null(ppy):
    m = performance(_sim(), ppy)  # OverflowError: (1 + total) ** (ppy / T)
    assert m["annual_return"] == math.inf and math.isnan(m["calmar"])  # no drawdown: no Calmar
    assert "annual return past the float range" in m["warning"]
    assert json.loads(dumps(m))["annual_return"] is None  # the project's non-finite numbers: null
    for k in ("annual_volatility", "sharpe", "annual_turnover"):
        assert math.isfinite(m[k]) and m[k] > 0


def test_the_annual_return_in_logs_is_the_power_where_that_is_finite():
    rng = np.random.default_rng(0)
    for T, ppy in [(4, 252.0), (300, 252.0), (50, 52.0), (1000, 98280.0)]:
        r = rng.normal(0.0002, 0.01, T)
        m = performance(Simulation(np.arange(T), r, r, np.zeros(T), 0, 0), ppy)
        total = float(np.prod(1 + r) - 1)
        assert m["annual_return"] == pytest.approx((1 + total) ** (ppy / T) - 1, rel=1e-11)
        assert "warning" not in m


def test_a_backtest_at_1e308_periods_a_year_prints_its_table():
    T, N = 30, 3
    rng = np.random.default_rng(1)
    R = np.abs(rng.normal(0.01, 0.005, (T, N)))  # every symbol gains: buy-and-hold's annual return overflows
    sig = rng.normal(size=(T, N))
    dates = pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8
    W = T * N
    fc = Forecasts(pred={"model": np.repeat(sig.reshape(W, 1), 2, axis=1)}, true=np.zeros((W, 2)),
                   dates=np.repeat(dates, N), symbol_ids=np.tile(np.arange(N), T), symbols=["A", "B", "C"],
                   last_return=R.reshape(W), past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0))
    res = backtest_forecasts(fc, EvaluationConfig(periods_per_year=1e308))
    assert res["strategies"]["buy_and_hold"]["annual_return"] == math.inf
    table = format_backtest(res)
    rows = [line for line in table.splitlines() if line.startswith(("model", "buy_and_hold", "equal_weight"))]
    assert len(rows) == 3 and all(len(line) < 130 for line in rows)  # no 155-digit volatility
    assert all(" " in line[22:].strip() for line in rows)  # the columns stay apart
    assert "warning (buy_and_hold): annual return past the float range" in table

