"""``data.timezone`` end to end: the time features read the exchange's clock in training (in memory
and through the feature store) and in prediction from a saved model folder; a folder written
without the key means UTC."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import DataConfig, ModelConfig
from hftraining.data.pipeline import prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model

NY = "America/New_York"
SPECS = ["log_return_1", "hour", "calendar"]
OPEN = np.float32(np.sin(2 * np.pi * (9 * 60 + 30) / 1440))  # hour_sin of 09:30


@pytest.fixture(scope="module")
def frames():
    """Two symbols of 30-minute bars of the New York session, January to August 2026 (across DST)."""
    return {s: synth_ohlcv(2000, seed=k, start="2026-01-05", freq="30min") for k, s in enumerate(("A", "B"))}


def _open_values(features: np.ndarray, times: np.ndarray, col: int) -> np.ndarray:
    """The feature ``col`` of the rows that are 09:30 in New York."""
    local = pd.to_datetime(times, utc=True).tz_convert(NY)
    return features[(local.hour == 9) & (local.minute == 30), col]


def _config(tmp_path, frames, tz, cache):
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        for s, f in frames.items():
            f.to_csv(data / f"{s}.csv", index=False)
    return DataConfig(data_dir=str(data), cache_dir=str(tmp_path / "cache") if cache else None, features=SPECS,
                      sequence_length=20, prediction_horizon=3, timezone=tz)


@pytest.mark.parametrize("cache", [False, True])
def test_training_reads_the_exchange_clock_in_memory_and_through_the_feature_store(tmp_path, frames, cache):
    ny = prepare(_config(tmp_path, frames, NY, cache))
    col = ny.preprocessing.feature_columns.index("hour_sin")
    opens = _open_values(ny.train.features, ny.train.row_times, col)
    assert len(opens) > 100 and (opens == OPEN).all()  # one value in winter and summer
    assert ny.preprocessing.data["timezone"] == NY  # recorded for prediction
    # the same files under UTC: another store entry, not the New York one, and the open moves with DST
    utc = prepare(_config(tmp_path, frames, "UTC", cache))
    assert len(np.unique(_open_values(utc.train.features, utc.train.row_times, col))) == 2
    if cache:
        assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    # frames given in memory (walk-forward folds, tests) too
    mem = prepare(_config(tmp_path, frames, NY, False), frames=frames)
    np.testing.assert_array_equal(mem.train.features, ny.train.features)


def _history(frame: pd.DataFrame, month: int, n: int = 80) -> pd.DataFrame:
    """The ``n`` rows ending at the last 09:30 New York bar of ``month``."""
    local = frame["timestamp"].dt.tz_convert(NY)
    end = int(np.flatnonzero((local.dt.month == month) & (local.dt.hour == 9) & (local.dt.minute == 30))[-1])
    return frame.iloc[end - n + 1 : end + 1].reset_index(drop=True)


def test_a_folder_trained_with_a_timezone_predicts_with_it_and_an_older_folder_means_utc(tmp_path, frames):
    pre = prepare(DataConfig(features=SPECS, sequence_length=20, prediction_horizon=3, timezone=NY),
                  frames=frames).preprocessing
    torch.manual_seed(0)
    folder = tmp_path / "model"
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(folder, preprocessing=pre.to_dict())
    old = tmp_path / "old"  # the same folder as a version without data.timezone wrote it
    shutil.copytree(folder, old)
    saved = json.loads((old / "preprocessing.json").read_text())
    del saved["data"]["timezone"]
    (old / "preprocessing.json").write_text(json.dumps(saved))

    col = pre.feature_columns.index("hour_sin")
    asked = {"JAN": _history(frames["A"], 1), "JUL": _history(frames["A"], 7)}
    fc, fc_old = Forecaster.from_pretrained(folder), Forecaster.from_pretrained(old)
    assert fc.data_config().timezone == NY and fc_old.data_config().timezone == "UTC"
    last = {}
    for name, f in (("ny", fc), ("old", fc_old)):
        ws = f.latest_windows(f.load(asked))
        last[name] = ws.features[ws.ends, col]
    assert (last["ny"] == OPEN).all()  # January and July: the features of training
    assert last["old"][0] != last["old"][1]  # UTC: the open is 14:30 in January, 13:30 in July
    a, b = fc.predict(asked), fc_old.predict(asked)
    assert not np.allclose(a["forecast_return"], b["forecast_return"])
