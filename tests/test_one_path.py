"""One path per job: what training scored, what ``evaluate`` scores and what ``predict`` serves are
the same forecasts; one rule for the rows a symbol needs; a model folder written by version 0.1
still loads and forecasts as it did; no model silently drops a head it was asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hftraining.cli import main
from hftraining.core.config import DataConfig, ModelConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.data.rows import RowsNeeded
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

LEGACY = Path(__file__).parent / "data" / "model_v0_1"


@pytest.fixture(scope="module")
def padded_bf16_run(tmp_path_factory):
    """A tiny run trained in bf16 whose windows may hold only ``min_history`` = 5 real rows."""
    run = tmp_path_factory.mktemp("padded") / "run"
    cfg = load_config(None, tiny(
        run, "data.min_history=5", "data.symbols=[AEM, ARM]", "training.max_steps=12", "training.save_steps=0",
        "training.use_mixed_precision=true", "evaluation.eval_steps=6", "evaluation.report=false",
    ))
    train(cfg)
    return run


def test_predict_equals_what_evaluate_and_training_scored_on_padded_windows_in_bf16(padded_bf16_run):
    result, fc = evaluate_model_dir(padded_bf16_run)
    f = Forecaster.from_pretrained(padded_bf16_run)
    assert f.precision == "bf16"  # the run's training precision, not a silent fp32
    ws = f.windows(None, "test")
    padded = [i for i in range(len(ws)) if "mask" in ws.batch(np.array([i]))]
    assert padded, "the test split should hold left-padded windows (min_history < sequence_length)"
    np.testing.assert_array_equal(f.predict_windows(ws), fc.pred["model"])
    # eval.json, written by training from the in-memory model, scored exactly these forecasts
    at_training = json.loads((padded_bf16_run / "eval.json").read_text())
    assert at_training["model"]["mse"] == result["model"]["mse"]
    assert at_training["n_windows"] == result["n_windows"] == len(ws)
    # fp32 forecasts differ (bf16 rounding): the precision is really applied, not ignored
    fp32 = Forecaster.from_pretrained(padded_bf16_run, precision="fp32").predict_windows(ws)
    assert not np.array_equal(fp32, fc.pred["model"])
    np.testing.assert_allclose(fp32, fc.pred["model"], atol=5e-2 * np.abs(fp32).max())


def test_predict_table_comes_from_the_same_forward_in_the_runs_precision(padded_bf16_run):
    f = Forecaster.from_pretrained(padded_bf16_run)
    path = str(sample_data_dir() / "ARM.csv")
    table = f.predict(path)
    latest = f.latest_windows(f.load(path))  # the window ending at the file's last row
    np.testing.assert_array_equal(table["forecast_return"].to_numpy(), f.predict_windows(latest)[0])
    fp32 = Forecaster.from_pretrained(padded_bf16_run, precision="fp32").predict(path)
    assert not np.array_equal(fp32["forecast_return"].to_numpy(), table["forecast_return"].to_numpy())


def test_a_short_symbol_is_kept_when_min_history_plus_horizon_rows_suffice(tmp_path):
    d = DataConfig(data_dir=str(tmp_path), sequence_length=60, prediction_horizon=5, features=["log_return_1", "rsi_14"])
    lead = RowsNeeded.of(d).rows - 60 - 5  # the features' warm-up rows
    full = synth_ohlcv(400, seed=1)
    short = synth_ohlcv(lead + 40, seed=2)  # fewer rows than warm-up + sequence_length + horizon
    for name, frame in (("LONG", full), ("SHORT", short)):
        frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%d")).to_csv(tmp_path / f"{name}.csv", index=False)
    without = prepare(d)
    assert without.report["symbols"] == ["LONG"] and "SHORT" in without.report["too_few_rows"]
    d.min_history = 10  # 10 real rows + 5 targets: a training window fits in SHORT's rows
    assert RowsNeeded.of(d).rows == lead + 15 <= len(short)
    kept = prepare(d)
    assert kept.report["symbols"] == ["LONG", "SHORT"] and not kept.report["too_few_rows"]
    k = kept.train.symbols.index("SHORT")
    assert (kept.train.symbol_ids == k).any()  # it contributes training windows, left-padded
    # the rule is the same one prediction applies (no targets: min_history rows after the warm-up)
    assert RowsNeeded.of(d, targets=False).rows == lead + 10


@pytest.mark.parametrize("model_type", ["patchtst", "dlinear", "zero", "drift"])
@pytest.mark.parametrize("key, value, head", [("quantiles", [0.1, 0.9], "quantile"), ("classification_threshold", 0.01, "classification")])
def test_a_head_the_model_lacks_is_a_config_error_naming_the_key(model_type, key, value, head):
    cfg = ModelConfig(type=model_type, moving_avg=5, patch_len=4, patch_stride=2, **{key: value})
    with pytest.raises(ConfigError, match=rf"^model\.{key}: model.type '{model_type}' has no {head} head \(models with one: transformer\)"):
        build_model(cfg, 4, 3, 20)
    out = build_model(ModelConfig(type="transformer", hidden_size=8, num_heads=2, num_layers=1, **{key: value}), 4, 3, 20)
    assert head in type(out).heads


def test_tune_with_a_baseline_model_type_scores_every_trial(tmp_path, capsys):
    pytest.importorskip("optuna")
    spec = {
        "model": {"type": "seasonal_naive"},
        "data": {"sequence_length": 16, "prediction_horizon": 2, "symbols": ["AEM", "WPM"]},
        "training": {"max_steps": 4},
        "output": {"tensorboard": False},
        "tune": {"seed": 0, "sampler": "random", "search_space": {"model.season_length": {"choices": [2, 5]}}},
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(spec))
    rc = main(["tune", "--config", str(tmp_path / "tune.yaml"), "--trials", "2", "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "2 complete" in out.out and "best: trial" in out.out
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert best["params"]["model.season_length"] in (2, 5) and np.isfinite(best["value"])


def test_a_model_folder_written_by_version_0_1_loads_and_forecasts_as_it_did():
    expected = pd.read_csv(LEGACY.parent / "model_v0_1_forecasts.csv")
    f = Forecaster.from_pretrained(LEGACY)
    assert f.precision == "fp32" and f.quantile_levels == [0.1, 0.5, 0.9] and f.has_classes
    got = f.predict(str(sample_data_dir() / "AEM.csv"))
    assert list(got.columns) == list(expected.columns)
    numeric = [c for c in expected.columns if c not in ("symbol", "as_of")]
    np.testing.assert_allclose(got[numeric].to_numpy(np.float64), expected[numeric].to_numpy(np.float64), rtol=1e-5, atol=1e-7)
    assert (pd.to_datetime(got["as_of"]) == pd.to_datetime(expected["as_of"])).all()


def test_training_reads_its_features_through_the_cache(tmp_path):
    d = DataConfig(symbols=["AEM", "WPM"], sequence_length=20, prediction_horizon=3, cache_dir=str(tmp_path / "cache"))
    first, again = prepare(d), prepare(d)
    assert (first.report["cache"], again.report["cache"]) == ("miss", "hit")
    np.testing.assert_array_equal(first.train.features, again.train.features)
    np.testing.assert_array_equal(first.test.targets(), again.test.targets())
    d.cache_dir = None
    off = prepare(d)
    assert off.report["cache"] == "off"
    np.testing.assert_array_equal(off.train.features, first.train.features)


def test_serve_limits_are_config_keys_checked_before_loading(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "hftraining: error: serve.port: must be in 1..65535, got 70000"
    assert main(["serve", str(tmp_path), "--max-body-bytes", "0"]) == 2
    assert "serve.max_body_bytes: must be > 0" in capsys.readouterr().err
