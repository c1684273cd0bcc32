"""A forecast is as silent on a closure of the training panel as training was when its file stamps the same
daily bars at another hour (05:00 UTC, New York's midnight, for a model trained on dates), and still names
a symbol's own halt and a symbol missing the last bar before the closure."""

from __future__ import annotations

import json
import logging

import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import Preprocessing, latest_windows, prepare
from hftraining.data.synth import synth_ohlcv


def _without(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    t = pd.DatetimeIndex(frame["timestamp"])
    return frame[~((t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC")))].reset_index(drop=True)


def _named(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reads across a gap" in r.getMessage()]


def test_a_forecast_in_stamps_of_another_hour_is_silent_on_a_closure_training_shared(caplog):
    """Daily bars of three symbols, the exchange closed four weeks (28 February to 24 March 2022, across New
    York's clock change of 13 March): training names no gap and keeps the closure; the latest window of one
    symbol reads across it."""
    cfg = DataConfig(sequence_length=40, prediction_horizon=2, features=["log_return_1", "rsi_14"], cache_dir=None)
    frames = {s: _without(synth_ohlcv(700, seed=k, start="2021-01-01"), "2022-02-28", "2022-03-24")
              for k, s in enumerate(["AAA", "BBB", "CCC"])}
    p = prepare(cfg, frames)
    assert "long_gaps" not in p.report
    pre = Preprocessing.from_dict(json.loads(json.dumps(p.preprocessing.to_dict())))
    assert pre.closures == [["2022-02-25T00:00:00+00:00", "2022-03-24T00:00:00+00:00"]]
    latest = frames["AAA"][frames["AAA"]["timestamp"] < pd.Timestamp("2022-04-05", tz="UTC")].reset_index(drop=True)
    stamps = pd.DatetimeIndex(latest["timestamp"])
    shifted = {
        "05:00 UTC": stamps + pd.Timedelta(hours=5),
        "New York's midnight": stamps.tz_localize(None).tz_localize("America/New_York").tz_convert("UTC"),
        "Tokyo's midnight": stamps.tz_localize(None).tz_localize("Asia/Tokyo").tz_convert("UTC"),
    }
    for how, t in [("dates", stamps), *shifted.items()]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            latest_windows(pre, {"AAA": latest.assign(timestamp=t)})
        assert not _named(caplog), how
    # a symbol missing the last bar before the closure is named, as training names it, in stamps of any hour
    short = latest[latest["timestamp"] != pd.Timestamp("2022-02-25", tz="UTC")].reset_index(drop=True)
    for how, t in [("dates", pd.DatetimeIndex(short["timestamp"])),
                   ("05:00 UTC", pd.DatetimeIndex(short["timestamp"]) + pd.Timedelta(hours=5))]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            latest_windows(pre, {"AAA": short.assign(timestamp=t)})
        assert _named(caplog), how
    # and so is a halt of its own that starts within a day of the closure's end and lasts a week past it
    halted = _without(latest, "2022-03-24", "2022-03-31").assign(
        timestamp=lambda f: pd.DatetimeIndex(f["timestamp"]) + pd.Timedelta(hours=5))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        latest_windows(pre, {"AAA": halted})
    assert _named(caplog)


def test_the_report_s_skipped_symbols_row_names_a_few_and_counts_the_rest(tmp_path):
    """The data table joined every skipped symbol into one cell: 5,000 short files made a row of 5,000 names."""
    from hftraining.eval.report import MAX_WARNED, _data_section, _Doc  # noqa: PLC0415

    skipped = [f"S{i:04d}" for i in range(5000)]
    doc = _Doc("t", tmp_path)
    _data_section(doc, {"symbols": ["AEM"], "skipped_symbols": skipped})
    row = next(line for line in doc.md if line.startswith("| skipped symbols |"))
    assert f"S{MAX_WARNED - 1:04d}, and {5000 - MAX_WARNED} more" in row and f"S{MAX_WARNED:04d}" not in row
