"""Frames and files as practitioners have them, built by hand (no network): what
``yfinance.download`` and ``Ticker.history`` return, Binance klines, ccxt lists, Alpaca and Polygon
bars, TradingView and stooq exports, European CSV files. Each is read to the same bars as the
sample file it was made from (dates, zone, prices), or refused in one line that says what to do.

- ``yfinance.download`` gives columns of two levels (prices × tickers), for one ticker too: such a
  frame is forecast per ticker (it was "missing column 'timestamp'", listing tuples); several
  tickers' frame in a {symbol: frame} dict is refused, naming them.
- Two columns of one name (several tickers' ``Close`` under one name): refused; a CSV file's first
  one was read under the file's symbol, a frame's crashed.
- A timestamp column that mixes stamps with and without a zone: refused, naming the first line
  without one (the zone-less ones were read as UTC, hours away from their neighbours).
- Alpaca's and Polygon's ``t`` is the timestamp; stooq's ``<TIME>`` of HHMMSS numbers is the time of
  day (its 5-minute bars were one a day); a Binance kline file without a header line is told the
  header that reads it, and one of milliseconds and microseconds (Binance's files before and from
  2025, joined) is read whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import io
from hftraining.data.sources import load_and_validate
from hftraining.inference.forecaster import Forecaster

MODEL = Path(__file__).parent / "data" / "model_v0_1"  # trained on AEM and WPM: loads in a moment
N = 200  # past the model's settled rows (172): no warning but the one a test is about


def _bars(sym: str) -> pd.DataFrame:
    """The last ``N`` daily bars of a sample file: Date (YYYY-MM-DD), open, high, low, close, volume."""
    return pd.read_csv(io.sample_data_dir() / f"{sym}.csv").tail(N).reset_index(drop=True)


def _ms(raw: pd.DataFrame) -> np.ndarray:
    return pd.to_datetime(raw["Date"]).to_numpy("datetime64[ms]").astype(np.int64)


def _yahoo(sym: str, adj: bool = False) -> pd.DataFrame:
    """One ticker as yfinance gives it: a tz-naive DatetimeIndex named Date, capitalised columns."""
    raw = _bars(sym)
    out = pd.DataFrame({"Close": raw["close"].to_numpy(), "High": raw["high"].to_numpy(), "Low": raw["low"].to_numpy(),
                        "Open": raw["open"].to_numpy(), "Volume": raw["volume"].to_numpy()},
                       index=pd.DatetimeIndex(pd.to_datetime(raw["Date"]), name="Date"))
    return out.assign(**{"Adj Close": out["Close"] * 0.8}) if adj else out


def _download(syms, group_by: str = "column", adj: bool = False) -> pd.DataFrame:
    """``yfinance.download(syms)``: levels (Price, Ticker), or (Ticker, Price) with group_by="ticker"."""
    wide = pd.concat({s: _yahoo(s, adj) for s in syms}, axis=1, names=["Ticker", "Price"])
    return wide.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False) if group_by == "column" else wide


def _read(path) -> pd.DataFrame:
    frames, report = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    (frame,) = frames.values()
    assert report["rows_dropped"] == 0, report["files"][0]["rules"]
    return frame


def _same(frame: pd.DataFrame, raw: pd.DataFrame, hours: int = 0) -> None:
    """``frame`` holds the bars of ``raw`` at their dates (plus ``hours``, UTC), prices as written."""
    want = pd.DatetimeIndex(pd.to_datetime(raw["Date"])).tz_localize("UTC").as_unit("ns") + pd.Timedelta(hours=hours)
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, want.asi8)
    for col in io.OHLCV:
        np.testing.assert_allclose(frame[col], raw[col], rtol=1e-12)


def _one_line_error(capsys, path) -> str:
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def fc():
    return Forecaster.from_pretrained(MODEL, precision="fp32")


def test_a_yfinance_download_frame_is_forecast_per_ticker(fc):
    """``fc.predict(yf.download(["AEM", "WPM"]))`` and ``fc.predict({"AEM": yf.download("AEM")})``
    (two column levels, also for one ticker since yfinance 0.2.48) forecast as the same bars with
    one level of column names do, in either order of the levels."""
    want = fc.predict({"AEM": _yahoo("AEM"), "WPM": _yahoo("WPM")})
    for group_by in ("column", "ticker"):
        got = fc.predict(_download(["AEM", "WPM"], group_by))
        pd.testing.assert_frame_equal(got, want)
        one = fc.predict({"AEM": _download(["AEM"], group_by)})
        pd.testing.assert_frame_equal(one, want[want["symbol"] == "AEM"].reset_index(drop=True))


def test_a_ticker_s_rows_are_its_own_dates_and_adj_close_is_the_close(fc):
    """A download of tickers of different calendars holds every ticker's dates (NaN on the others'
    holidays): those rows are not the ticker's, never reported as dropped. With auto_adjust=False
    (an ``Adj Close`` level) the close is Adj Close, as data.price_adjustment=adjusted says."""
    wide = _download(["AEM", "WPM"])
    wide.loc[wide.index[-40:-30], (slice(None), "WPM")] = np.nan  # WPM's market closed on ten of AEM's dates
    warnings: list[str] = []
    got = fc.predict(wide, warnings=warnings)
    assert warnings == []
    alone = fc.predict({"WPM": _yahoo("WPM").drop(index=wide.index[-40:-30])})
    pd.testing.assert_frame_equal(got[got["symbol"] == "WPM"].reset_index(drop=True), alone)
    adjusted = fc.load(_download(["AEM"], adj=True))["AEM"]
    np.testing.assert_allclose(adjusted["close"], _bars("AEM")["close"] * 0.8, rtol=1e-12)
    # tickers that are price names themselves (Citigroup's C, Visa's V): the Price level is still the prices
    cv = fc.load(_download(["AEM", "WPM"]).rename(columns={"AEM": "C", "WPM": "V"}, level="Ticker"))
    assert sorted(cv) == ["C", "V"]
    np.testing.assert_allclose(cv["V"]["close"], _bars("WPM")["close"], rtol=1e-12)


def test_several_tickers_under_one_symbol_are_refused_naming_them(fc):
    with pytest.raises(DataError) as e:
        fc.predict({"AEM": _download(["AEM", "WPM"])})
    assert str(e.value) == ("AEM: the frame holds the columns of 2 tickers (AEM, WPM): pass it as it is, not in a dict "
                            "(a forecast for each ticker), or one ticker's columns, e.g. "
                            "frame.xs('AEM', axis=1, level='Ticker')")


def test_columns_of_one_name_are_refused_not_read_as_the_first(fc, tmp_path, capsys):
    """Several tickers' columns with the ticker level dropped (``Close``, ``Close``, ...): a CSV file
    was read as its first ticker under the file's symbol, and a frame crashed (AttributeError)."""
    flat = _download(["AEM", "WPM"])
    flat.columns = flat.columns.get_level_values(0)
    flat.to_csv(tmp_path / "GOLD.csv")
    err = _one_line_error(capsys, tmp_path / "GOLD.csv")
    assert err == (f"hftraining: error: {tmp_path / 'GOLD.csv'}: two columns are named 'Close': which one to read cannot "
                   "be told (several tickers' columns under one name?): keep one column of each name, one file or frame "
                   "per symbol")
    with pytest.raises(DataError, match=r"^<GOLD>: two columns are named 'Close'"):
        fc.predict({"GOLD": flat})


def test_stamps_with_and_without_a_zone_in_one_column_are_refused(fc, tmp_path, capsys):
    """Two thirds of the stamps with their New York offset, one third without: the zone-less ones
    were read as UTC (09:30 New York read five hours early), sorted among the others and half of
    them dropped as duplicates, without a warning (the zone-less warning judges the first cells by
    majority). Now one line names the first zone-less line (CSV), row (Parquet) or position (frame).
    Offsets that change with daylight saving time stay accepted."""
    ny = [t.tz_localize("America/New_York") for d in pd.bdate_range("2024-03-01", periods=30)
          for t in d + pd.to_timedelta([9.5, 10.5, 11.5, 12.5, 13.5, 14.5], unit="h")]
    raw = pd.DataFrame({"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 1000.0}, index=range(len(ny)))
    raw.insert(0, "timestamp", [t.isoformat() for t in ny])  # -05:00, then -04:00 from 11 March
    raw.to_csv(tmp_path / "DST.csv", index=False)
    frame = _read(tmp_path / "DST.csv")
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, pd.DatetimeIndex(ny).tz_convert("UTC").asi8)
    mixed = raw.copy()
    mixed.loc[4::3, "timestamp"] = [t.strftime("%Y-%m-%d %H:%M:%S") for t in ny[4::3]]
    mixed.to_csv(tmp_path / "MIX.csv", index=False)
    err = _one_line_error(capsys, tmp_path / "MIX.csv")
    assert err == (f"hftraining: error: {tmp_path / 'MIX.csv'}: line 6: timestamp '2024-03-01 13:30:00' has no zone or "
                   "UTC offset, but line 2's '2024-03-01T09:30:00-05:00' has one: a column that mixes them cannot be read "
                   "one way (a stamp without one would be taken as UTC): write every timestamp with its offset, or all "
                   "of them in UTC")
    mixed.to_parquet(tmp_path / "MIX.parquet", index=False)
    assert f"{tmp_path / 'MIX.parquet'}: row 5: timestamp '2024-03-01 13:30:00'" in _one_line_error(capsys, tmp_path / "MIX.parquet")
    with pytest.raises(DataError, match=r"^AEM: row 4: timestamp '2024-03-01 13:30:00' has no zone"):
        fc.load({"AEM": mixed})


def test_alpaca_and_polygon_bars_name_their_time_t(tmp_path):
    """``t, o, h, l, c, v, vw, n``: o/h/l/c/v were read, ``t`` was "missing column 'timestamp'". Alpaca
    writes t as RFC 3339 in UTC, Polygon as epoch milliseconds or nanoseconds, and its flat files name
    the time ``window_start`` (nanoseconds)."""
    raw = _bars("AEM")
    t = _ms(raw)
    bars = {"o": raw["open"], "h": raw["high"], "l": raw["low"], "c": raw["close"], "v": raw["volume"], "vw": 1.0, "n": 7}
    alpaca = pd.Series(pd.to_datetime(t + 5 * 3600_000, unit="ms")).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame({"t": alpaca, **bars}).to_csv(tmp_path / "ALPACA.csv", index=False)
    _same(_read(tmp_path / "ALPACA.csv"), raw, hours=5)
    for name, stamp in (("POLY_MS", t), ("POLY_NS", t * 10**6)):
        pd.DataFrame({**bars, "t": stamp}).to_csv(tmp_path / f"{name}.csv", index=False)
        _same(_read(tmp_path / f"{name}.csv"), raw)
    flat = {"ticker": "AEM", "volume": raw["volume"], "open": raw["open"], "close": raw["close"], "high": raw["high"],
            "low": raw["low"], "window_start": t * 10**6, "transactions": 7}  # Polygon's flat files
    pd.DataFrame(flat).to_csv(tmp_path / "2025-01-06.csv", index=False)
    _same(_read(tmp_path / "2025-01-06.csv"), raw)


def test_stooq_files_with_a_time_column_of_hhmmss_numbers(tmp_path):
    """stooq's files (``<TICKER>,<PER>,<DATE>,<TIME>,...``) write the time of day as HHMMSS
    (``093500``, read as the number 93500): 5-minute bars kept one bar a day, the rest dropped as
    duplicate timestamps. Its daily files (``<TIME>`` 000000) read as dates, as before."""
    raw = _bars("AEM")
    stamps = pd.Series(pd.date_range("2025-01-06 09:00", periods=N, freq="5min"))
    prices = {"<OPEN>": raw["open"], "<HIGH>": raw["high"], "<LOW>": raw["low"], "<CLOSE>": raw["close"],
              "<VOL>": raw["volume"], "<OPENINT>": 0}
    pd.DataFrame({"<TICKER>": "AEM.US", "<PER>": 5, "<DATE>": stamps.dt.strftime("%Y%m%d"),
                  "<TIME>": stamps.dt.strftime("%H%M%S"), **prices}).to_csv(tmp_path / "aem_5.csv", index=False)
    _same(_read(tmp_path / "aem_5.csv"), raw.assign(Date=stamps.dt.strftime("%Y-%m-%d %H:%M")))
    day = pd.to_datetime(raw["Date"])
    pd.DataFrame({"<TICKER>": "AEM.US", "<PER>": "D", "<DATE>": day.dt.strftime("%Y%m%d"), "<TIME>": "000000",
                  **prices}).to_csv(tmp_path / "aem_d.csv", index=False)
    _same(_read(tmp_path / "aem_d.csv"), raw)


def test_binance_klines_without_a_header_are_told_the_header_that_reads_them(tmp_path, capsys):
    """The suggested header was six names, which a 12-field kline file refuses in turn; the header
    now suggested reads the file, in milliseconds and in the microseconds of newer files."""
    raw = _bars("AEM")
    for unit, scale in (("ms", 1), ("us", 1000)):
        t = _ms(raw) * scale
        k = pd.DataFrame({0: t, 1: raw["open"], 2: raw["high"], 3: raw["low"], 4: raw["close"], 5: raw["volume"],
                          6: t + 86_399_999 * scale, 7: 1.0, 8: 10, 9: 1.0, 10: 1.0, 11: 0})
        path = tmp_path / f"BTCUSDT-1d-{unit}.csv"
        k.to_csv(path, header=False, index=False)
        header = _one_line_error(capsys, path).split("e.g. ")[1].split(" (Binance's klines)")[0]
        path.write_text(header + "\n" + path.read_text())
        _same(_read(path), raw)


def test_binance_klines_joined_across_the_change_to_microseconds_are_read_whole(tmp_path, fc):
    """Binance's spot klines are in milliseconds until 2024 and in microseconds from 2025: monthly files
    joined into one lost the smaller part as bad_timestamp rows (microseconds read as milliseconds fall
    after 2262, milliseconds read as microseconds in January 1970), the latest bars among them. Each
    cell above 1e11 is read in its own unit; seconds in a milliseconds file are still dropped."""
    raw = _bars("AEM")
    t = _ms(raw)
    for name, cut in (("LATE", N - 20), ("EARLY", 20)):  # microseconds from the cut: a few rows, or most
        open_time = np.where(np.arange(N) >= cut, t * 1000, t)
        k = pd.DataFrame({"open_time": open_time, **{c: raw[c] for c in io.OHLCV}, "close_time": open_time + 1})
        k.to_csv(tmp_path / f"{name}.csv", index=False)
        _same(_read(tmp_path / f"{name}.csv"), raw)
        got = fc.load({name: k})[name]
        np.testing.assert_array_equal(got["timestamp"].array.asi8, _read(tmp_path / f"{name}.csv")["timestamp"].array.asi8)
    seconds = pd.DataFrame({"open_time": np.where(np.arange(N) < 10, t // 1000, t), **{c: raw[c] for c in io.OHLCV}})
    seconds.to_csv(tmp_path / "SEC.csv", index=False)
    _, report = load_and_validate(DataConfig(data_dir=str(tmp_path / "SEC.csv"), cache_dir=None))
    assert report["files"][0]["rules"]["bad_timestamp"]["rows"] == list(range(2, 12))


def _history(raw: pd.DataFrame) -> pd.DataFrame:
    """``Ticker("AEM").history()``: midnight in New York, tz-aware, and Dividends / Stock Splits."""
    idx = pd.DatetimeIndex(pd.to_datetime(raw["Date"]), name="Date").tz_localize("America/New_York")
    return pd.DataFrame({"Open": raw["open"].to_numpy(), "High": raw["high"].to_numpy(), "Low": raw["low"].to_numpy(),
                         "Close": raw["close"].to_numpy(), "Volume": raw["volume"].to_numpy(), "Dividends": 0.25,
                         "Stock Splits": 2.0}, index=idx)


def test_other_exports_read_as_the_bars_they_hold(fc, tmp_path):
    """What already read right, kept so: TradingView (``time`` in epoch seconds), stooq's daily CSV,
    a European export (BOM, ``;``, decimal commas, day-first dates, upper-case names), a ccxt list in
    epoch milliseconds, and ``Ticker.history()`` (New York midnights are their UTC instants; the
    Dividends and Stock Splits columns are not read)."""
    raw = _bars("AEM")
    day = pd.to_datetime(raw["Date"])
    ohlcv = {"open": raw["open"], "high": raw["high"], "low": raw["low"], "close": raw["close"]}
    pd.DataFrame({"time": _ms(raw) // 1000, **ohlcv, "Volume": raw["volume"], "Volume MA": 1.0}).to_csv(
        tmp_path / "TV.csv", index=False)
    pd.DataFrame({"Date": raw["Date"], **{k.title(): v for k, v in ohlcv.items()}, "Volume": raw["volume"]}).to_csv(
        tmp_path / "aem_us_d.csv", index=False)
    pd.DataFrame({"DATE": day.dt.strftime("%d.%m.%Y"), **{k.upper(): v for k, v in ohlcv.items()},
                  "VOLUME": raw["volume"]}).to_csv(tmp_path / "EU.csv", index=False, sep=";", decimal=",",
                                                    encoding="utf-8-sig")
    for name in ("TV", "aem_us_d", "EU"):
        _same(_read(tmp_path / f"{name}.csv"), raw)
    ccxt = [[int(t), *row] for t, row in zip(_ms(raw), raw[list(io.OHLCV)].to_numpy().tolist())]
    _same(fc.load({"AEM": pd.DataFrame(ccxt, columns=["timestamp", *io.OHLCV])})["AEM"], raw)
    hist = _history(raw)
    got = fc.load({"AEM": hist})["AEM"]
    utc = got["timestamp"] - pd.DatetimeIndex(day).tz_localize("UTC").as_unit("ns")
    assert set(utc.dt.total_seconds() / 3600) == {4.0, 5.0}  # 04:00 UTC under EDT, 05:00 under EST: the same date
    np.testing.assert_array_equal(got["timestamp"].array.asi8, hist.index.tz_convert("UTC").as_unit("ns").asi8)
    assert list(got.columns) == ["timestamp", *io.OHLCV]
    hist.to_csv(tmp_path / "HIST.csv")
    np.testing.assert_array_equal(_read(tmp_path / "HIST.csv")["timestamp"].array.asi8, got["timestamp"].array.asi8)
