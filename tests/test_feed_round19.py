"""Feeds that trade every day of the week (crypto) have no weekend nor holiday, so a one-day outage of
hourly bars is a hole in a symbol's rows, named by ``data check``, ``train`` and ``predict`` as a
three-month halt of daily bars is; exchanges' data (the sample's daily files, hourly sessions with nights,
weekends and holidays, a week-long closure the panel shares) gets no new warning. Crypto exports' time
columns (CryptoDataDownload's ``unix``, the Binance API's ``openTime``, CoinAPI's ``time_period_start``)
are read to the instants they hold, and two columns that could each be the time but stamp rows apart are
refused, naming both."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data.pipeline import latest_windows, prepare
from hftraining.data.sources import load_and_validate
from hftraining.data.synth import synth_ohlcv

FEATURES = ["log_return_1", "rsi_14"]
YAHOO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yahoo"


def _config(**kw) -> DataConfig:
    return DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, cache_dir=None, **kw)


def _without(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    t = pd.DatetimeIndex(frame["timestamp"])
    return frame[~((t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC")))].reset_index(drop=True)


def _crypto(symbols=("BTC", "ETH"), days: int = 60) -> dict[str, pd.DataFrame]:
    """Hourly bars around the clock from 2024-01-01."""
    return {s: synth_ohlcv(24 * days, seed=k, start="2024-01-01", freq="1h", session="24h") for k, s in enumerate(symbols)}


def _gap_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "gaps inside" in r.getMessage()]


def _write(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir()
    for sym, f in frames.items():
        f.to_csv(folder / f"{sym}.csv", index=False)
    return folder


# ----------------------------------------------------------------------------- a 24/7 feed's outage


def test_a_one_day_outage_of_hourly_crypto_bars_is_named_by_training_and_data_check(tmp_path, capsys, caplog):
    """A day without BTC's hourly bars (a 25-hour gap, 24 bars lost) was read as one bar's return and nothing
    said so (the rule asked for more than 7 days); the max_gap the warning suggests keeps windows out of it
    (it suggested 7D, which kept them across)."""
    frames = _crypto()
    frames["BTC"] = _without(frames["BTC"], "2024-01-20", "2024-01-21")
    hole = [["2024-01-19T23:00:00+00:00", "2024-01-21T00:00:00+00:00"]]
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), frames)
    assert p.report["long_gaps"]["symbols"] == {"BTC": hole}
    (line,) = _gap_warnings(caplog)
    assert "BTC: no row from 2024-01-19 23:00 UTC to 2024-01-21 (25 hours)" in line
    # windows do read across it
    t = p.train.row_times
    after, before = pd.Timestamp("2024-01-21", tz="UTC").value, pd.Timestamp("2024-01-19 23:00", tz="UTC").value
    assert ((t[p.train.ends] >= after) & (t[p.train.ends - 10] <= before)).any()
    hint = re.search(r"set data\.max_gap \(e\.g\. (\w+)\)", line).group(1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(max_gap=hint), frames)
    assert "long_gaps" not in p.report and not _gap_warnings(caplog)
    assert len(p.train) > 0

    folder = _write(tmp_path / "feed", frames)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(folder), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["long_gaps"]
    assert found["symbols"] == {str(folder / "BTC.csv"): hole}


def test_an_outage_of_the_whole_24_7_feed_is_named_for_every_symbol(caplog):
    """The same day missing from every symbol is the feed's outage, not a closure the panel shares."""
    frames = {s: _without(f, "2024-01-20", "2024-01-21") for s, f in _crypto(("BTC", "ETH", "SOL")).items()}
    p = prepare(_config(), frames)
    assert sorted(p.report["long_gaps"]["symbols"]) == ["BTC", "ETH", "SOL"]


def test_a_forecast_whose_24_7_window_reads_across_an_outage_says_so(caplog):
    frames = _crypto()
    pre = prepare(_config(), frames).preprocessing
    btc = frames["BTC"]
    cut = pd.DatetimeIndex(btc["timestamp"])[-10]  # the last 10 bars come after a day without bars
    sent = btc[~((pd.DatetimeIndex(btc["timestamp"]) >= cut - pd.Timedelta("1D"))
                 & (pd.DatetimeIndex(btc["timestamp"]) < cut))].reset_index(drop=True)
    with caplog.at_level(logging.WARNING):
        latest_windows(pre, {"BTC": sent, "ETH": frames["ETH"]})
    (line,) = [r.getMessage() for r in caplog.records if "reads across a gap" in r.getMessage()]
    assert "latest window of BTC reads across a gap in its rows (BTC: no row from" in line and "(25 hours)" in line


def test_short_pauses_of_a_24_7_feed_stay_silent(caplog):
    """A gap of fewer than 20 bars (six hours of maintenance) is no hole; neither are daily crypto bars
    missing a week (fewer than 20 of their bars)."""
    frames = _crypto()
    frames["BTC"] = _without(frames["BTC"], "2024-01-20 02:00", "2024-01-20 08:00")
    daily = {s: synth_ohlcv(400, seed=k, start="2023-01-01", freq="D") for k, s in enumerate(("BTC", "ETH"))}
    daily["BTC"] = _without(daily["BTC"], "2023-05-01", "2023-05-08")
    with caplog.at_level(logging.WARNING):
        assert "long_gaps" not in prepare(_config(), frames).report
        assert "long_gaps" not in prepare(_config(), daily).report
    assert not _gap_warnings(caplog)


# ----------------------------------------------------------------------------- exchanges: nothing new


@pytest.mark.skipif(not YAHOO.is_dir(), reason="the sample data of ../shared/data/yahoo")
def test_the_sample_daily_files_get_no_gap_warning(capsys, caplog):
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(YAHOO), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["files"]) == 52 and "long_gaps" not in out and not _gap_warnings(caplog)


def _fx(start: str = "2024-01-07 22:00", hours: int = 24 * 70) -> pd.DataFrame:
    """Hourly forex bars: Sunday 22:00 to Friday 22:00 UTC (six UTC days, two hours of Sunday)."""
    f = synth_ohlcv(hours, seed=9, start="2024-01-01", freq="1h", session="24h")
    t = pd.date_range(start, periods=hours, freq="1h", tz="UTC")
    f["timestamp"] = t
    day, hour = t.day_of_week, t.hour
    open_ = ((day < 4) | ((day == 4) & (hour < 22)) | ((day == 6) & (hour >= 22)))
    return f[open_].reset_index(drop=True)


def test_exchange_sessions_holidays_and_one_symbol_s_day_off_stay_silent(caplog):
    """Hourly New York sessions (nights, weekends, Independence Day the panel shares), one symbol missing
    a whole session (a day's halt: no 7-day hole), Tokyo's hourly bars with Golden Week shared by the panel,
    and forex's weekend: none of them was named before, none is now."""
    ny = {s: _without(synth_ohlcv(7 * 200, seed=k, start="2024-03-01", freq="1h"), "2024-07-04", "2024-07-05")
          for k, s in enumerate(("AAA", "BBB", "CCC"))}
    ny["CCC"] = _without(ny["CCC"], "2024-06-12", "2024-06-13")
    tokyo = {s: _without(synth_ohlcv(6 * 150, seed=k, start="2024-02-01", freq="1h", session="09:00-15:00",
                                     tz="Asia/Tokyo"), "2024-04-27", "2024-05-06")
             for k, s in enumerate(("T1", "T2"))}
    fx = {"EURUSD": _fx(), "USDJPY": _fx()}
    with caplog.at_level(logging.WARNING):
        for frames in (ny, tokyo, fx):
            assert "long_gaps" not in prepare(_config(), frames).report
    assert not _gap_warnings(caplog)


# ----------------------------------------------------------------------------- crypto exports' time columns


def _bars(n: int = 300) -> pd.DataFrame:
    f = synth_ohlcv(n, seed=3, start="2024-03-01", freq="1h", session="24h")
    f["timestamp"] = pd.DatetimeIndex(f["timestamp"]).as_unit("ns")
    return f


def _load(path: Path) -> pd.DataFrame:
    frames, _ = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    (frame,) = frames.values()
    return frame


def _same(frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, raw["timestamp"].array.asi8)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(frame[col], raw[col], rtol=1e-12, err_msg=col)


@pytest.mark.parametrize("name, unit", [("unix", 10**9), ("unix", 10**6), ("Unix Timestamp", 10**6),
                                        ("openTime", 10**6), ("timestamp", 10**9), ("timestamp", 1)])
def test_epoch_time_columns_of_crypto_exports_are_read(tmp_path, name, unit):
    """``unix`` in seconds or milliseconds (CryptoDataDownload), ``openTime`` in milliseconds (the Binance
    API's klines as JSON keys) were "missing column 'timestamp'"; the unit is told by the numbers' size."""
    raw = _bars()
    prices = raw[["open", "high", "low", "close", "volume"]]
    path = tmp_path / "BTCUSDT.csv"
    pd.DataFrame({name: raw["timestamp"].array.asi8 // unit, **prices}).to_csv(path, index=False)
    _same(_load(path), raw)


def test_coinapi_s_ohlcv_is_read(tmp_path):
    """CoinAPI's OHLCV rows (time_period_start ... price_open ... volume_traded) were refused: no column was
    the timestamp, and its volume column was said to be a volume of some unit."""
    raw = _bars()
    iso = pd.DatetimeIndex(raw["timestamp"]).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    end = (pd.DatetimeIndex(raw["timestamp"]) + pd.Timedelta("1h")).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    path = tmp_path / "BITSTAMP_SPOT_BTC_USD.csv"
    pd.DataFrame({"time_period_start": iso, "time_period_end": end, "time_open": iso, "time_close": end,
                  "price_open": raw["open"], "price_high": raw["high"], "price_low": raw["low"],
                  "price_close": raw["close"], "volume_traded": raw["volume"], "trades_count": 7}).to_csv(path, index=False)
    _same(_load(path), raw)


def test_cryptodatadownload_s_unix_beside_its_date_is_read_where_they_agree(tmp_path):
    """``unix,date,symbol,...``: both stamp the same instants (UTC); the older files' ``2024-03-01 01-AM``
    dates read as none, and their ``Unix Timestamp`` is the time (it was every row a bad_timestamp)."""
    raw = _bars()
    prices = raw[["open", "high", "low", "close", "volume"]]
    t = pd.DatetimeIndex(raw["timestamp"])
    path = tmp_path / "Binance_BTCUSDT_1h.csv"
    pd.DataFrame({"unix": t.asi8 // 10**6, "date": t.strftime("%Y-%m-%d %H:%M:%S"), "symbol": "BTC/USDT",
                  **prices}).to_csv(path, index=False)
    _same(_load(path), raw)
    old = tmp_path / "old" / "Binance_BTCUSDT_1h.csv"
    old.parent.mkdir()
    pd.DataFrame({"Unix Timestamp": t.asi8 // 10**6, "Date": t.strftime("%Y-%m-%d %I-%p"), **prices}).to_csv(old, index=False)
    _same(_load(old), raw)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_two_time_columns_that_stamp_rows_apart_are_refused_naming_both(tmp_path, capsys, fmt):
    """A ``unix`` column beside a ``date`` of local times (New York's, five hours behind): the date was
    read and the unix column ignored without a word; nothing tells which one stamps the bars."""
    raw = _bars()
    t = pd.DatetimeIndex(raw["timestamp"])
    frame = pd.DataFrame({"unix": t.asi8 // 10**9, "date": (t - pd.Timedelta("5h")).strftime("%Y-%m-%d %H:%M:%S"),
                          **raw[["open", "high", "low", "close", "volume"]]})
    path = tmp_path / f"BTCUSD.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    where = "line 2" if fmt == "csv" else "row 1"
    assert err[0].startswith(f"hftraining: error: {path}: columns 'unix' and 'date' could each be the timestamp, and "
                             f"they stamp rows at different instants (unix ")
    assert f"beside date '2024-02-29 19:00:00', {where}): keep the one that stamps the bars" in err[0]
