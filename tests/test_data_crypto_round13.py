"""Crypto and intraday downloads as the sites write them, built by hand from the bundled sample (no
network): Coinbase's candles (``time, low, high, open, close, volume``), Kraken's OHLCVT files and
OHLC API rows (a ``vwap`` before the volume), all without a header line; CryptoDataDownload's
``Volume BTC``/``Volume USDT``; Dukascopy's ``Gmt time`` and ``Local time``; Kaggle's Bitcoin
history (epoch seconds as floats) and TradingView's export with indicator columns. Each is read to
the bars it holds, or refused in one line that says what to do, and following that line reads it
right: a header that named a Coinbase file's low its open read every bar wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import io
from hftraining.data.sources import load_and_validate

N = 300


def _minute_bars() -> pd.DataFrame:
    """``N`` bars of a bundled file's prices and volumes, a minute apart from 2024-03-01 00:00 UTC
    (``ts``), oldest first."""
    raw = pd.read_csv(io.sample_data_dir() / "AEM.csv").tail(N).reset_index(drop=True)
    raw["ts"] = pd.date_range("2024-03-01", periods=N, freq="1min", tz="UTC").as_unit("ns")
    return raw


def _seconds(raw: pd.DataFrame) -> np.ndarray:
    return raw["ts"].array.asi8 // 10**9


def _load(path):
    frames, report = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    (frame,) = frames.values()
    (rep,) = report["files"]
    return frame, rep


def _same_bars(frame: pd.DataFrame, rep: dict, raw: pd.DataFrame) -> None:
    """Every bar read as written: its minute, each price in its place, its volume; no row dropped or repaired."""
    assert rep["rows_in"] == rep["rows_kept"] == N and rep["rows_dropped"] == 0, rep["rules"]
    assert not any(r.get("repaired") for r in rep["rules"].values()), rep["rules"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, raw["ts"].array.asi8)
    for col in io.OHLCV:
        np.testing.assert_allclose(frame[col], raw[col], rtol=1e-12, err_msg=col)


def _one_line_error(capsys, path) -> str:
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def _suggested_header(capsys, path) -> str:
    err = _one_line_error(capsys, path)
    assert "line 1 holds numbers, not column names" in err
    return err.split("e.g. ")[1].split(" (")[0]


def test_a_coinbase_candle_file_without_a_header_is_told_its_own_column_order(tmp_path, capsys):
    """Coinbase's candles are ``[time, low, high, open, close, volume]``. Saved as CSV (no header), the
    error suggested ``timestamp,open,high,low,close,volume``: with that header every bar's low was read
    as its open and its open as its low, and the OHLC rule "repaired" each row (exit 0). The header
    suggested now is the file's own order, and with it the file reads as written."""
    raw = _minute_bars()
    path = tmp_path / "BTC-USD.csv"
    pd.DataFrame({"t": _seconds(raw), "l": raw["low"], "h": raw["high"], "o": raw["open"], "c": raw["close"],
                  "v": raw["volume"]}).iloc[::-1].to_csv(path, index=False, header=False)  # newest first, as Coinbase
    header = _suggested_header(capsys, path)
    assert header == "timestamp,low,high,open,close,volume"
    path.write_text(header + "\n" + path.read_text())
    frame, rep = _load(path)
    assert rep["rules"]["unsorted_timestamp"]["repaired"] == N - 1  # read in reverse: moved, not changed
    rep["rules"].pop("unsorted_timestamp")
    _same_bars(frame, rep, raw)


@pytest.mark.parametrize("fields", ["ohlcvt", "api"])
def test_a_kraken_file_without_a_header_is_told_a_name_for_every_field(tmp_path, capsys, fields):
    """Kraken's OHLCVT downloads (``time, open, high, low, close, volume, trades``) were told six names
    for their seven fields, and that header was the next error; rows of its OHLC API (``time, open,
    high, low, close, vwap, volume, count``) were told to read the vwap as the volume."""
    raw = _minute_bars()
    bars = {"t": _seconds(raw), "o": raw["open"], "h": raw["high"], "l": raw["low"], "c": raw["close"]}
    if fields == "api":
        bars["vwap"] = (raw["high"] + raw["low"] + raw["close"]) / 3
    path = tmp_path / "XBTUSD_1.csv"
    pd.DataFrame({**bars, "v": raw["volume"], "n": 17}).to_csv(path, index=False, header=False)
    header = _suggested_header(capsys, path)
    assert header == ("timestamp,open,high,low,close,vwap,volume,trades" if fields == "api" else
                      "timestamp,open,high,low,close,volume,trades")
    path.write_text(header + "\n" + path.read_text())
    _same_bars(*_load(path), raw)


def test_cryptodatadownload_s_volumes_are_named_in_the_error(tmp_path, capsys):
    """CryptoDataDownload writes ``unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount``,
    newest first: the error was "missing column 'volume' ... data without volume (FX, an index): add an
    empty volume column", which threw the volumes away. It names the two columns now; with one renamed
    the file reads whole."""
    raw = _minute_bars()
    cdd = pd.DataFrame({"unix": raw["ts"].array.asi8 // 10**6, "date": raw["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"),
                        "symbol": "BTC/USDT", "open": raw["open"], "high": raw["high"], "low": raw["low"],
                        "close": raw["close"], "Volume BTC": raw["volume"], "Volume USDT": raw["volume"] * raw["close"],
                        "tradecount": 40}).iloc[::-1]
    path = tmp_path / "Binance_BTCUSDT_1m.csv"
    cdd.to_csv(path, index=False)
    err = _one_line_error(capsys, path)
    assert f"{path}: no column is named volume, but 'Volume BTC' and 'Volume USDT' name volumes" in err
    assert "rename the one to read 'volume'" in err and "add an empty volume column" not in err
    cdd.rename(columns={"Volume BTC": "volume"}).to_csv(path, index=False)
    frame, rep = _load(path)
    rep["rules"].pop("unsorted_timestamp")
    _same_bars(frame, rep, raw)


def test_dukascopy_s_gmt_and_local_times_are_read(tmp_path, capsys):
    """Dukascopy's ``Gmt time`` (``01.03.2024 00:00:00.000``) and ``Local time`` (``... GMT+0100``,
    here across the change to summer time) were "missing column 'timestamp'". A ``Local time`` column
    without its offset is refused: read as UTC it would be an hour or two off."""
    raw = _minute_bars()
    raw["ts"] = pd.date_range("2024-03-31 00:00", periods=N, freq="1min", tz="UTC").as_unit("ns")  # Zurich: +01:00, then +02:00
    prices = {"Open": raw["open"], "High": raw["high"], "Low": raw["low"], "Close": raw["close"], "Volume": raw["volume"]}
    path = tmp_path / "BTCUSD.csv"
    pd.DataFrame({"Gmt time": raw["ts"].dt.strftime("%d.%m.%Y %H:%M:%S.000"), **prices}).to_csv(path, index=False)
    _same_bars(*_load(path), raw)
    local = raw["ts"].dt.tz_convert("Europe/Zurich")
    assert set(local.dt.strftime("%z")) == {"+0100", "+0200"}
    pd.DataFrame({"Local time": local.dt.strftime("%d.%m.%Y %H:%M:%S.000 GMT%z"), **prices}).to_csv(path, index=False)
    _same_bars(*_load(path), raw)
    pd.DataFrame({"Local time": local.dt.strftime("%d.%m.%Y %H:%M:%S.000"), **prices}).to_csv(path, index=False)
    err = _one_line_error(capsys, path)
    assert f"{path}: column 'Local time' holds local times without a UTC offset (e.g. '31.03.2024 01:00:00.000')" in err


@pytest.mark.parametrize("source", ["kaggle", "tradingview"])
def test_downloads_that_read_right_stay_so(tmp_path, source):
    """Kaggle's Bitcoin history (``Timestamp`` in epoch seconds written as floats, ``1709251200.0``) and
    TradingView's chart export (``time`` with its offset, indicator columns such as ``Volume MA``,
    ``Basis``, ``Upper``, ``Lower``) are read as the bars they hold, in seconds, not milliseconds."""
    raw = _minute_bars()
    prices = {"Open": raw["open"], "High": raw["high"], "Low": raw["low"], "Close": raw["close"]}
    if source == "kaggle":
        out = pd.DataFrame({"Timestamp": _seconds(raw).astype(float), **prices, "Volume": raw["volume"]})
    else:
        out = pd.DataFrame({"time": raw["ts"].dt.tz_convert("America/New_York").map(pd.Timestamp.isoformat),
                            **{k.lower(): v for k, v in prices.items()}, "Volume": raw["volume"],
                            "Volume MA": raw["volume"].rolling(20).mean(), "Basis": raw["close"],
                            "Upper": raw["high"] * 1.1, "Lower": raw["low"] * 0.9})
    out.to_csv(tmp_path / "BTCUSD.csv", index=False)
    _same_bars(*_load(tmp_path / "BTCUSD.csv"), raw)


def test_binance_s_monthly_files_of_one_symbol_are_refused_as_two_symbols(tmp_path, capsys):
    """data.binance.vision gives a symbol's klines a month (or a day) a file: ``BTCUSDT-1m-2024-03.csv``,
    ``BTCUSDT-1m-2024-04.csv``. Each was read as a symbol of its own, alone at its dates, and training
    and ``data check`` said nothing; it is an error naming both files and the one file to write.
    Another interval of the symbol, or another symbol's month, is another history."""
    raw = _minute_bars()
    ms = raw["ts"].array.asi8 // 10**6
    klines = pd.DataFrame({"open_time": ms, **{c: raw[c] for c in io.OHLCV}, "close_time": ms + 59_999,
                           "quote_volume": raw["volume"] * raw["close"], "count": 9, "taker_buy_volume": 1.0,
                           "taker_buy_quote_volume": 2.0, "ignore": 0})
    klines.iloc[: N // 2].to_csv(tmp_path / "BTCUSDT-1m-2024-03.csv", index=False)
    klines.iloc[N // 2 :].to_csv(tmp_path / "ETHUSDT-1m-2024-03.csv", index=False)
    klines.to_csv(tmp_path / "BTCUSDT-1h-2024-03.csv", index=False)
    assert cli.main(["data", "check", str(tmp_path)]) == 0
    klines.iloc[N // 2 :].to_csv(tmp_path / "BTCUSDT-1m-2024-04.csv", index=False)
    assert cli.main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hftraining: error: {tmp_path / 'BTCUSDT-1m-2024-04.csv'}: symbol 'BTCUSDT-1m-2024-04' and symbol "
                   f"'BTCUSDT-1m-2024-03' of {tmp_path / 'BTCUSDT-1m-2024-03.csv'} are one history's periods (Binance's "
                   "monthly or daily files), read as two symbols: join them into one file per symbol (BTCUSDT.csv)"]
    with pytest.raises(DataError, match="one history's periods"):
        load_and_validate(DataConfig(data_dir=str(tmp_path), cache_dir=None))
