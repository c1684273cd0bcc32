"""Defects found reviewing the calendar-version, config-refusal and scale changes: older model
folders and runs that must keep loading or be refused in one line, window checks against the folder's
own window, and the max_gap message."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.cli import main
from hftraining.core.config import DataConfig, ModelConfig
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.pipeline import prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.models.folder import model_spec


NY = "America/New_York"


@pytest.mark.parametrize("stamp, refused", [("21:00", False), ("00:00", True)])
def test_an_older_folder_of_daily_bars_not_stamped_at_midnight_loads(tmp_path, stamp, refused):
    """Daily bars stamped at 21:00 UTC (a vendor's close) read the same under both calendar rules, so a
    folder of the older rule with calendar features under America/New_York loads; one of bars stamped at
    UTC midnight (dates) is still refused."""
    data = tmp_path / "data"
    data.mkdir()
    for k, s in enumerate(("A", "B")):
        f = synth_ohlcv(300, seed=k, start="2023-01-02")
        f.assign(timestamp=f["timestamp"].dt.strftime(f"%Y-%m-%dT{stamp}:00Z")).to_csv(data / f"{s}.csv", index=False)
    pre = prepare(DataConfig(data_dir=str(data), cache_dir=None, features=["log_return_1", "calendar"],
                             sequence_length=10, prediction_horizon=2, timezone=NY)).preprocessing.to_dict()
    assert pre["source_rows"]
    del pre["calendar_version"]  # as a version before it wrote the folder
    torch.manual_seed(0)
    folder = tmp_path / "m"
    build_model(ModelConfig(type="dlinear", moving_avg=5), len(pre["feature_columns"]), pre["horizon"],
                pre["seq_len"]).save_pretrained(folder, preprocessing=pre)
    if refused:
        with pytest.raises(DataError, match="retrain"):
            Forecaster.from_pretrained(folder)
    else:
        Forecaster.from_pretrained(folder).predict(str(data))


def test_too_few_training_rows_under_max_gap_is_not_blamed_on_gaps(tmp_path):
    """No gap anywhere, a training split of 14 rows: the error says too few rows, not "raise data.max_gap"
    beside a run of hundreds of rows (of the test split)."""
    for s in ("A", "B"):
        close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 700)))
        pd.DataFrame({"timestamp": pd.bdate_range("2020-01-01", periods=700).strftime("%Y-%m-%d"), "open": close,
                      "high": close, "low": close, "close": close, "volume": 1.0}).to_csv(tmp_path / f"{s}.csv", index=False)
    with pytest.raises(DataError) as e:
        prepare(DataConfig(data_dir=str(tmp_path), cache_dir=None, features=["log_return_1"], sequence_length=20,
                           prediction_horizon=3, train_ratio=0.02, val_ratio=0.5, max_gap="5D"))
    assert "max_gap" not in str(e.value) and "add rows" in str(e.value)


def _mostly_flat(data):
    """Two symbols whose closes move on one day in five: log_return_1 has interquartile range 0."""
    data.mkdir()
    rng = np.random.default_rng(0)
    for s in ("A", "B"):
        r = np.where(rng.random(500) < 0.2, rng.normal(0, 0.02, 500), 0.0)
        close = 100 * np.exp(np.cumsum(r))
        pd.DataFrame({"timestamp": pd.bdate_range("2020-01-01", periods=500).strftime("%Y-%m-%d"), "open": close,
                      "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1000.0}
                     ).to_csv(data / f"{s}.csv", index=False)


def test_a_run_of_the_older_robust_scaling_is_not_resumed_with_other_inputs(tmp_path, capsys):
    """A run started when the robust scaler scaled a varying column of IQR 0 by 1 (its data_report.json
    without calendar_version) is refused on resume when this version scales that column by its std:
    its weights were trained on other inputs."""
    _mostly_flat(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "data.sequence_length=20",
            "data.prediction_horizon=3", f"data.data_dir={tmp_path / 'data'}", "data.cache_dir=null",
            "data.scaler=robust", "data.features=[log_return_1, rsi_14]", "training.max_steps=4",
            "training.save_steps=2", "evaluation.eval_steps=2", "output.tensorboard=false", "output.progress_bar=never",
            f"output.output_dir={run}"]
    assert main(args) == 0
    report = json.loads((run / "data_report.json").read_text())
    del report["calendar_version"]  # as the version before it wrote the report
    (run / "data_report.json").write_text(json.dumps(report))
    capsys.readouterr()
    code = main(args + [f"training.resume_from_checkpoint={run / 'checkpoints' / 'step-00000002'}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot resume" in err and "log_return_1" in err


V0_1 = Path("/work/main/tests/data/model_v0_1")


@pytest.mark.parametrize("key", ["cache_dir", "data_dir", "start_date"])
def test_a_folder_saved_with_empty_text_an_older_version_accepted_still_loads(tmp_path, key):
    """``data.cache_dir: ""`` (the working folder) was accepted in training and saved in preprocessing.json;
    refusing empty text in configs being written does not refuse such a trained model."""
    folder = tmp_path / "m"
    shutil.copytree(V0_1, folder)
    pre = json.loads((folder / "preprocessing.json").read_text())
    pre["data"][key] = ""
    (folder / "preprocessing.json").write_text(json.dumps(pre))
    fc = Forecaster.from_pretrained(folder)
    assert fc.data_config().start_date is None


@pytest.mark.parametrize("kw", [dict(type="patchtst", patch_len=64, patch_stride=32), dict(type="dlinear", moving_avg=75)])
def test_a_model_folder_whose_window_is_longer_than_the_default_loads(tmp_path, kw):
    """model.patch_len / model.moving_avg are checked against the folder's own window (80 rows), not
    the default data.sequence_length (60): a model trained on it loads for predict, evaluate and serve."""
    cfg = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, **kw)
    build_model(cfg, 2, 3, 80).save_pretrained(tmp_path / "m")
    assert model_spec(tmp_path / "m")[1:] == (2, 3, 80)


def test_bench_ett_checks_a_kernel_against_its_own_seq_len(tmp_path):
    """--moving-avg 97 at --seq-len 336 (the default) is a valid DLinear; only the missing data is an error."""
    from hftraining.workflows import ett
    with pytest.raises(Exception) as e:
        ett.run_suite(str(tmp_path), ["ETTh1"], [96], "dlinear", 336, model_overrides={"moving_avg": 97})
    assert "moving_avg" not in str(e.value)


@pytest.mark.parametrize("last", ["2023-12-01", "2023-11-30T19:00:00-05:00"])
def test_source_rows_stamps_without_utc_offset_load_as_they_did(tmp_path, last):
    """source_rows' stamps written as a date without a zone, or at another offset than UTC's (both accepted
    by check_source_rows), crashed the calendar check with a traceback when the folder loaded."""
    data = tmp_path / "data"
    data.mkdir()
    for k, s in enumerate(("A", "B")):
        synth_ohlcv(300, seed=k, start="2023-01-02").to_csv(data / f"{s}.csv", index=False)
    pre = prepare(DataConfig(data_dir=str(data), cache_dir=None, features=["log_return_1", "calendar"],
                             sequence_length=10, prediction_horizon=2)).preprocessing.to_dict()
    pre["source_rows"]["A"]["last"] = last  # B keeps "...+00:00"
    torch.manual_seed(0)
    build_model(ModelConfig(type="dlinear", moving_avg=5), len(pre["feature_columns"]), pre["horizon"],
                pre["seq_len"]).save_pretrained(tmp_path / "m", preprocessing=pre)
    Forecaster.from_pretrained(tmp_path / "m")  # a one-line error or a model, never a TypeError/ValueError
