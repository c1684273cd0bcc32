"""The labels taken across symbols (``excess_return``, ``cs_zscore``, ``cs_rank``) in a panel of dates and instants.

A coin's daily candle stamped 00:00 UTC is a date: it covers that whole UTC day and closes at its end. The hourly
bar of 00:00 closes an hour after it opens. A label is an input too (the past-label channel), so an hourly bar
grouped with the daily candle of its stamp handed the day's return to the hourly rows after it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import _labels, data_rows
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv

DAY = 86400 * 10**9


def _coin_panel(days: int = 40) -> dict[str, pd.DataFrame]:
    """Two coins of hourly bars around the clock and two coins of daily candles stamped 00:00 UTC (dates)."""
    out = {}
    for j, s in enumerate(("H1", "H2")):
        f = synth_ohlcv(24 * days, seed=10 + j, start="2024-01-01", freq="1h")
        f["timestamp"] = pd.date_range("2024-01-01", periods=24 * days, freq="h", tz="UTC")
        out[s] = f
    for j, s in enumerate(("D1", "D2")):
        f = synth_ohlcv(days, seed=20 + j, start="2024-01-01", freq="D")
        f["timestamp"] = pd.date_range("2024-01-01", periods=days, freq="D", tz="UTC")
        out[s] = f
    return out


def _reprice(frames: dict[str, pd.DataFrame], sym: str, i: int, by: float) -> dict[str, pd.DataFrame]:
    f = frames[sym].copy()
    f.loc[i, ["open", "high", "low", "close"]] *= by
    f["high"] = f[["open", "high", "low", "close"]].max(axis=1)
    f["low"] = f[["open", "high", "low", "close"]].min(axis=1)
    return {**frames, sym: f}


@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_an_hourly_label_never_reads_the_daily_candle_of_its_day(target):
    frames = _coin_panel()
    d = dataclasses.replace(DataConfig(), target=target)
    base, _ = build_rows(frames, ["log_return_1"], tz="UTC")
    want = _labels(base, d)
    for i in (12, 25):
        day = int(pd.Timestamp(frames["D1"]["timestamp"].iloc[i]).value)
        rows, _ = build_rows(_reprice(frames, "D1", i, 1.3), ["log_return_1"], tz="UTC")
        got = _labels(rows, d)
        for s in ("H1", "H2"):
            sl = base.rows(base.symbols.index(s))
            before_close = base.times[sl] < day + DAY  # the hourly bars that close by the candle's close
            np.testing.assert_array_equal(got[sl][before_close], want[sl][before_close], err_msg=f"{s} {target}")
        if target == "excess_return":  # the daily candles still form their dates' cross-section
            sl = base.rows(base.symbols.index("D2"))
            assert (got[sl] != want[sl]).any()


def test_the_hourly_bars_of_midnight_form_their_own_cross_section():
    """The hourly bar of 00:00 is ranked among the hourly bars of 00:00, the daily candle among the dates."""
    frames = _coin_panel()
    rows, _ = build_rows(frames, ["log_return_1"], tz="UTC")
    labels = _labels(rows, dataclasses.replace(DataConfig(), target="excess_return"))
    ret = {s: pd.Series(rows.returns[rows.rows(k)].astype(np.float64), index=rows.times[rows.rows(k)])
           for k, s in enumerate(rows.symbols)}
    lab = {s: pd.Series(labels[rows.rows(k)], index=rows.times[rows.rows(k)]) for k, s in enumerate(rows.symbols)}
    t = int(pd.Timestamp("2024-01-20", tz="UTC").value)
    for pair in (("H1", "H2"), ("D1", "D2")):
        r = np.array([ret[s][t] for s in pair])
        uni = np.log(np.exp(r).mean())
        for s, x in zip(pair, r):
            assert lab[s][t] == pytest.approx(x - uni, rel=1e-5, abs=1e-7)


def test_the_feature_store_keeps_which_rows_are_dates(tmp_path):
    """Rows served from a store entry label a mixed panel as the rows built in memory do."""
    folder = tmp_path / "data"
    folder.mkdir()
    for s, f in _coin_panel(100).items():
        f = f.copy()
        f["timestamp"] = [t.strftime("%Y-%m-%d") if s.startswith("D") else t.strftime("%Y-%m-%dT%H:%M:%SZ")
                          for t in f["timestamp"]]
        f.to_csv(folder / f"{s}.csv", index=False)
    d = dataclasses.replace(DataConfig(), data_dir=str(folder), features=["log_return_1"], target="excess_return",
                            cache_dir=str(tmp_path / "c"))
    built, rep = data_rows(d)
    stored, again = data_rows(d)
    memory, _ = data_rows(dataclasses.replace(d, cache_dir=None))
    assert (rep["cache"], again["cache"]) == ("miss", "hit")
    assert memory.dates is not None and memory.dates.any() and not memory.dates.all()
    for rows in (built, stored):
        np.testing.assert_array_equal(np.asarray(rows.dates), memory.dates)
        np.testing.assert_array_equal(_labels(rows, d), _labels(memory, d))
