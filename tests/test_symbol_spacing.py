"""A panel that mixes daily symbols with intraday ones records one pooled bar spacing (``bar_seconds``,
here 4 hours), and training read each symbol's stamps by its own bars: a daily bar stamped at UTC
midnight is its date in ``data.timezone``, an intraday one at 00:00 UTC an instant. A forecast from a
few rows (too few to tell their spacing) reads each symbol the model trained on by its own recorded
spacing (``symbol_bar_seconds``), so a daily symbol's last rows give the features, and the forecast,
of its training rows; a symbol the model never saw, and every symbol of a folder written before the
per-symbol spacings were kept, is read by the pooled spacing, as before.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from hftraining.core.errors import DataError
from hftraining.data.pipeline import apply
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster

NY = "America/New_York"
DAYS = pd.bdate_range("2024-01-01", periods=120)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(model folder, data folder) of a tiny model of 2 daily symbols (plain dates) and 1 of 4-hour bars
    around the clock (from 00:00 UTC), ``data.timezone`` New York, features that read the stamps."""
    from hftraining import cli

    tmp = tmp_path_factory.mktemp("mixed")
    data = tmp / "data"
    data.mkdir()
    for k, sym in enumerate(["D1", "D2"]):
        f = synth_ohlcv(len(DAYS), seed=k)
        f["timestamp"] = [d.strftime("%Y-%m-%d") for d in DAYS]
        f.to_csv(data / f"{sym}.csv", index=False)
    stamps = [d + pd.Timedelta(hours=h) for d in DAYS for h in range(0, 24, 4)]
    f = synth_ohlcv(len(stamps), seed=7)
    f["timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in stamps]
    f.to_csv(data / "H4.csv", index=False)
    run = tmp / "run"
    assert cli.main(["train", "--config", "configs/quickstart.yaml", f"data.data_dir={data}", "data.cache_dir=null",
                     "data.features=[log_return_1,calendar,hour]", f"data.timezone={NY}", "data.sequence_length=8",
                     "data.min_history=1", "data.prediction_horizon=2", "model.type=transformer",
                     "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0",
                     "training.max_steps=3",
                     "evaluation.report=false", "evaluation.baseline_max_windows=200", f"output.output_dir={run}",
                     "output.tensorboard=false", "output.progress_bar=never"]) == 0
    return run / "final", data


def _frame(data, sym: str) -> pd.DataFrame:
    f = pd.read_csv(data / f"{sym}.csv")
    f["timestamp"] = pd.to_datetime(f["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return f


def _spacing_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "apart" in r.getMessage()]


def test_a_daily_symbol_of_a_mixed_panel_forecast_from_a_few_rows_reads_as_in_training(mixed, caplog):
    folder, data = mixed
    pre = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
    assert pre["bar_seconds"] == pytest.approx(4 * 3600)  # pooled: the 4-hour bars outnumber the daily ones
    assert pre["symbol_bar_seconds"] == {"D1": 86_400, "D2": 86_400, "H4": 4 * 3600}
    fc = Forecaster.from_pretrained(folder)
    full = _frame(data, "D1")
    last = full.tail(10).reset_index(drop=True)
    # the input window of its last rows holds the feature rows training built for it
    trained = apply(fc.preprocessing, None, "all")
    k = trained.symbols.index("D1")
    rows = np.asarray(trained.features)[int(trained.segment_first[k]):][: len(full) - 1]
    ws = fc.latest_windows({"D1": last})
    assert np.array_equal(np.asarray(ws.features), rows[-len(ws.features):])
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="hftraining")
    few = fc.predict({"D1": last})["forecast_return"].to_numpy()
    assert _spacing_warnings(caplog) == []  # its daily bars are those it trained on, not the pooled 4 hours
    assert np.array_equal(few, fc.predict({"D1": full})["forecast_return"].to_numpy())  # features without history


def test_a_symbol_the_model_never_saw_is_read_by_the_pooled_spacing(mixed):
    folder, data = mixed
    fc = Forecaster.from_pretrained(folder)
    last = _frame(data, "D1").tail(10).reset_index(drop=True)
    ws = fc.latest_windows({"NEW": last})
    pooled, _ = build_rows({"NEW": last}, fc.preprocessing.features, tz=NY, bar_seconds=4 * 3600)
    own, _ = build_rows({"NEW": last}, fc.preprocessing.features, tz=NY, bar_seconds=86_400)
    assert np.array_equal(np.asarray(ws.features), pooled.features)
    assert not np.array_equal(pooled.features, own.features)  # the pooled reading is another one here


def test_a_folder_without_symbol_bar_seconds_loads_and_predicts_as_before(mixed, tmp_path, caplog):
    folder, data = mixed
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    pre = json.loads((old / "preprocessing.json").read_text(encoding="utf-8"))
    del pre["symbol_bar_seconds"]
    (old / "preprocessing.json").write_text(json.dumps(pre), encoding="utf-8")
    fc = Forecaster.from_pretrained(old)
    assert fc.preprocessing.symbol_bar_seconds is None
    last = _frame(data, "D1").tail(10).reset_index(drop=True)
    pooled, _ = build_rows({"D1": last}, fc.preprocessing.features, tz=NY, bar_seconds=4 * 3600)
    assert np.array_equal(np.asarray(fc.latest_windows({"D1": last}).features), pooled.features)
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="hftraining")
    fc.predict({"D1": last})
    said = _spacing_warnings(caplog)
    assert len(said) == 1 and "1 day apart" in said[0] and "4 hours apart" in said[0], said
    assert "symbol_bar_seconds" not in fc.preprocessing.to_dict()  # written back as it was read


def test_a_malformed_symbol_bar_seconds_is_refused_in_one_line(mixed, tmp_path):
    folder, _ = mixed
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    pre = json.loads((bad / "preprocessing.json").read_text(encoding="utf-8"))
    pre["symbol_bar_seconds"]["D1"] = "daily"
    (bad / "preprocessing.json").write_text(json.dumps(pre), encoding="utf-8")
    with pytest.raises(DataError, match=r"symbol_bar_seconds\.D1: expected a positive number of seconds") as e:
        Forecaster.from_pretrained(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)  # the folder named, not just the file's name


def test_a_symbol_given_bars_unlike_its_own_training_bars_is_named(mixed, caplog):
    """D1 trained on daily bars: 4-hour bars of it are named, though the panel's pooled spacing is 4 hours."""
    folder, _ = mixed
    fc = Forecaster.from_pretrained(folder)
    f = synth_ohlcv(60, seed=3)
    f["timestamp"] = pd.date_range("2024-07-01", periods=60, freq="4h", tz="UTC")
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="hftraining")
    fc.predict({"D1": f})
    said = _spacing_warnings(caplog)
    assert len(said) == 1 and "for D1" in said[0] and "4 hours apart" in said[0] and "1 day apart" in said[0], said


def test_the_spacing_kept_is_the_one_training_read_a_symbol_by_warm_up_rows_included():
    """A file of 100 daily bars, then 40 four-hour bars: training read each stamp by the gaps up to it (a
    4-hour bar at 00:00 UTC after 20 four-hour gaps: an instant), though short gaps are under a third of
    all 140 and the 60-row warm-up reads mostly daily bars. The spacing kept is that of its last bars, so
    its last 10 rows are read as training read them."""
    from hftraining.core.config import DataConfig
    from hftraining.data.features import DAILY_BARS, compute_features
    from hftraining.data.pipeline import prepare

    days = list(pd.bdate_range("2024-01-01", periods=100, tz="UTC"))
    stamps = days + [days[-1] + pd.Timedelta(days=3, hours=4 * h) for h in range(40)]
    x = synth_ohlcv(len(stamps), seed=1)
    x["timestamp"] = pd.DatetimeIndex(stamps).astype("datetime64[ns, UTC]")
    y = synth_ohlcv(len(days), seed=2)
    y["timestamp"] = pd.DatetimeIndex(days).astype("datetime64[ns, UTC]")
    d = DataConfig(features=["log_return_1", "calendar", "hour", "volatility_60"], timezone=NY, sequence_length=5,
                   prediction_horizon=1, min_history=1, cache_dir=None, split="per_symbol")
    pre = prepare(d, frames={"X": x, "Y": y}).preprocessing
    assert pre.symbol_bar_seconds["X"] == 4 * 3600 < DAILY_BARS / 1e9
    specs = ["calendar", "hour"]
    trained = compute_features(x, specs, NY).tail(10).reset_index(drop=True)  # as training read them
    last = x.tail(10).reset_index(drop=True)
    assert (last["timestamp"].dt.hour == 0).any()  # a 4-hour bar at 00:00 UTC: an instant, as training read it
    pd.testing.assert_frame_equal(compute_features(last, specs, NY, bar_seconds=pre.symbol_bar_seconds["X"]), trained)


def test_stamps_in_microseconds_are_rows_of_their_own_dates(mixed, caplog):
    """pandas 3 parses a CSV's dates to microseconds: a frame so read and passed as it is gives the rows of
    its own dates (int64 ns), not stamps a thousand times too small (bars 1.44 minutes apart, in 1970)."""
    folder, data = mixed
    fc = Forecaster.from_pretrained(folder)
    ns = _frame(data, "D1")
    us = ns.assign(timestamp=ns["timestamp"].astype("datetime64[us, UTC]"))
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="hftraining")
    got = fc.latest_windows({"D1": us})
    assert _spacing_warnings(caplog) == []
    want = fc.latest_windows({"D1": ns})
    assert np.array_equal(got.row_times, want.row_times) and np.array_equal(got.features, want.features)
    assert got.row_times[-1] == ns["timestamp"].iloc[-1].value
