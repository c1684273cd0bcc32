"""Holes in a 24/7 feed and the time columns of crypto exports, as a user meets them: an illiquid coin's
1-minute bars (absent in the minutes nothing traded) pause for half an hour many times a day, which is its
trading, not a hole, while an outage of its feed still is; the ``data.max_gap`` a warning suggests keeps
windows out of the holes it names and in every bar of monthly data; a ``date`` column of a clock with
summer time beside ``unix`` is refused, not read an hour late through the summer."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data.pipeline import prepare
from hftraining.data.sources import load_and_validate
from hftraining.data.synth import synth_ohlcv

FEATURES = ["log_return_1", "rsi_14"]


def _config(**kw) -> DataConfig:
    return DataConfig(**{"sequence_length": 30, "prediction_horizon": 2, "features": FEATURES, "cache_dir": None, **kw})


def _gap_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "gaps inside" in r.getMessage()]


def _illiquid(seed: int, days: int = 30, trades_per_minute: float = 0.5) -> pd.DataFrame:
    """1-minute bars of a coin that trades around the clock, a bar only in a minute with a trade: trades
    arrive at a rate that swings over the day (busy afternoons, quiet nights with pauses of 30 to 90
    minutes)."""
    rng = np.random.default_rng(seed)
    n = days * 1440
    rate = trades_per_minute * (1 + 0.9 * np.sin(2 * np.pi * np.arange(n) / 1440))
    traded = rng.random(n) < 1 - np.exp(-rate)
    frame = synth_ohlcv(n, seed=seed, start="2024-01-01", freq="1min", session="24h")
    return frame[traded].reset_index(drop=True)


def _without(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    t = pd.DatetimeIndex(frame["timestamp"])
    return frame[~((t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC")))].reset_index(drop=True)


def test_an_illiquid_coin_s_quiet_stretches_are_no_holes_but_an_outage_of_its_feed_is(caplog):
    """Its nights' pauses over 20 minutes (over 100 in a month) were each a hole, and the warning's
    data.max_gap (20min) cut a tenth of its training windows; a day without its bars is still named,
    as is a liquid coin's 30-minute outage."""
    frames = {"ILLQ": _illiquid(1), "BTC": synth_ohlcv(30 * 1440, seed=2, start="2024-01-01", freq="1min", session="24h")}
    gaps = np.diff(pd.DatetimeIndex(frames["ILLQ"]["timestamp"]).asi8) // (60 * 10**9)
    assert (gaps > 20).sum() > 100 and (gaps == 1).mean() > 0.1  # the coin pauses, and trades minute by minute
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), frames)
    assert "long_gaps" not in p.report and not _gap_warnings(caplog)

    frames["ILLQ"] = _without(frames["ILLQ"], "2024-01-20", "2024-01-21")
    frames["BTC"] = _without(frames["BTC"], "2024-01-10 12:00", "2024-01-10 12:30")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), frames)
    found = p.report["long_gaps"]["symbols"]
    assert found["BTC"] == [["2024-01-10T11:59:00+00:00", "2024-01-10T12:30:00+00:00"]]
    (illq,) = found["ILLQ"]
    assert illq[0] < "2024-01-20" and illq[1] >= "2024-01-21"
    (line,) = _gap_warnings(caplog)
    assert "BTC: no row from 2024-01-10 11:59 UTC to 2024-01-10 12:30 UTC" in line


def _monthly(n: int = 240) -> dict[str, pd.DataFrame]:
    frames = {}
    for k, sym in enumerate(("AAA", "BBB")):
        f = synth_ohlcv(n, seed=k, start="2000-01-01", freq="D")
        f["timestamp"] = pd.date_range("2000-01-01", periods=n, freq="MS", tz="UTC")
        frames[sym] = f
    frames["AAA"] = _without(frames["AAA"], "2005-01-01", "2007-01-01")  # two years without a bar
    return frames


def test_the_suggested_max_gap_keeps_monthly_windows_out_of_the_hole_and_in_every_month():
    """A two-year hole in monthly bars: the warning said "set data.max_gap (e.g. 7D)", under one bar of
    theirs, and training with it stopped: "the training split yields no window"."""
    frames = _monthly()
    p = prepare(_config(sequence_length=12, prediction_horizon=1), frames)
    hint = re.search(r"set data\.max_gap \(e\.g\. (\w+)\)", p.report["long_gaps"]["why"]).group(1)
    kept = prepare(_config(sequence_length=12, prediction_horizon=1, max_gap=hint), frames)
    assert "long_gaps" not in kept.report
    # windows of AAA after the hole start 12 bars after it, BBB keeps every window
    sym = list(kept.train.symbols)
    for split in (kept.train,):
        t = split.row_times
        bbb = split.symbol_ids == sym.index("BBB")
        assert bbb.sum() == (p.train.symbol_ids == list(p.train.symbols).index("BBB")).sum()
        aaa = split.ends[split.symbol_ids == sym.index("AAA")]
        hole_end = pd.Timestamp("2007-01-01", tz="UTC").value
        first = t[aaa - 11]
        assert not ((first < hole_end) & (t[aaa] >= hole_end)).any()


def _london(n: int = 24 * 400, date_first: bool = True):
    raw = synth_ohlcv(n, seed=3, start="2023-01-01", freq="1h", session="24h")
    t = pd.DatetimeIndex(raw["timestamp"]).as_unit("ns")
    cols = {"date": t.tz_convert("Europe/London").strftime("%Y-%m-%d %H:%M:%S"), "unix": t.asi8 // 10**6}
    if not date_first:
        cols = {"unix": cols["unix"], "date": cols["date"]}
    return pd.DataFrame({**cols, **raw[["open", "high", "low", "close", "volume"]]})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_date_of_london_s_clock_beside_unix_is_refused_over_a_whole_year(tmp_path, capsys, fmt):
    """A year of hourly bars from January to January: both columns agree in the first and last thousand
    rows (winter), and the date was read, its summer's bars an hour late, without a word."""
    frame = _london()
    path = tmp_path / f"BTCGBP.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    where = "line 2020" if fmt == "csv" else "row 2019"  # 2023-03-26 02:00 UTC, 03:00 in London
    assert err[0].startswith(f"hftraining: error: {path}: columns 'date' and 'unix' could each be the timestamp, "
                             "and they stamp rows at different instants (date '2023-03-26 03:00:00' beside unix "
                             f"'1679796000000', {where}): keep the one that stamps the bars")


def test_columns_that_agree_on_every_row_of_a_long_file_are_read(tmp_path):
    """CryptoDataDownload's ``unix`` and a UTC ``date`` over a year of hourly bars, newest first."""
    raw = synth_ohlcv(24 * 400, seed=3, start="2023-01-01", freq="1h", session="24h")
    t = pd.DatetimeIndex(raw["timestamp"]).as_unit("ns")
    path = tmp_path / "Binance_BTCUSDT_1h.csv"
    pd.DataFrame({"unix": t.asi8 // 10**6, "date": t.strftime("%Y-%m-%d %H:%M:%S"), "symbol": "BTC/USDT",
                  **raw[["open", "high", "low", "close", "volume"]]}).iloc[::-1].to_csv(path, index=False)
    frames, _ = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    (frame,) = frames.values()
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, t.asi8)
    np.testing.assert_allclose(frame["close"], raw["close"], rtol=1e-12)
