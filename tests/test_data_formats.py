"""Input formats users rely on beyond the corpus: compressed CSV named by its symbol, decimal-comma
numbers, the timestamp-outlier rule at both ends, and data without volume: training drops the
volume features for every symbol of the panel, records the features it used, and predicts from
files without volume (a model that needs volume refuses them in one line)."""

from __future__ import annotations

import dataclasses
import gzip
import pickle

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data import io
from hftraining.data.features import EmptyVolume
from hftraining.data.pipeline import prepare
from hftraining.data.sources import load_and_validate
from hftraining.data.validate import _outlier_timestamps
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

DAY = 86400 * 10**9


def _sample(sym: str) -> pd.DataFrame:
    return pd.read_csv(io.sample_data_dir() / f"{sym}.csv")


def _no_volume(tmp_path, sym: str, name: str | None = None):
    path = tmp_path / f"{name or sym}.csv"
    _sample(sym).assign(volume="").to_csv(path, index=False)
    return path


def test_compressed_csv_is_read_under_its_symbol_and_folder_lists_it(tmp_path):
    raw = _sample("AEM")
    (tmp_path / "AEM.csv.gz").write_bytes(gzip.compress(raw.to_csv(index=False).encode()))
    frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path)))
    assert list(frames) == ["AEM"] and len(frames["AEM"]) == len(raw)
    np.testing.assert_allclose(frames["AEM"]["close"], raw["close"])
    frames, _ = load_and_validate(DataConfig(data_dir=str(tmp_path), symbols=["AEM"]))
    assert list(frames) == ["AEM"]


def test_symbol_codes_in_a_long_csv_are_names_not_numbers(tmp_path):
    """Exchange codes such as Shenzhen's 000001 keep their zeros (the CSV reader made them 1), and
    data.symbols selects them as written."""
    raw = _sample("AEM").iloc[:120]
    long = pd.concat([raw.assign(symbol="000001"), raw.assign(symbol="600519")], ignore_index=True)
    long.to_csv(tmp_path / "cn.csv", index=False)
    frames, _ = load_and_validate(DataConfig(data_dir=str(tmp_path / "cn.csv"), cache_dir=None))
    assert sorted(frames) == ["000001", "600519"]
    frames, _ = load_and_validate(DataConfig(data_dir=str(tmp_path / "cn.csv"), cache_dir=None, symbols=["000001"]))
    assert list(frames) == ["000001"] and len(frames["000001"]) == 120


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_timestamps_in_any_unit_are_read_to_the_nanosecond(tmp_path, unit):
    """Epoch integers in seconds, milliseconds, microseconds (Databento, many exchange feeds) or
    nanoseconds: microseconds and nanoseconds were read as milliseconds, every row fell after the
    year 2262 and the file was "no usable rows (all 100 dropped: bad_timestamp 100)"."""
    from hftraining.data.synth import synth_ohlcv

    f = synth_ohlcv(100, seed=1, freq="1min", session="24h")
    ns = f["timestamp"].array.asi8 + (123_456_789 if unit == "ns" else 0)  # sub-microsecond digits survive
    div = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    f.assign(timestamp=ns // div).to_csv(tmp_path / "E.csv", index=False)
    frames, rep = load_and_validate(DataConfig(cache_dir=None, data_dir=str(tmp_path / "E.csv")))
    assert rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frames["E"]["timestamp"].array.asi8, ns // div * div)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_timestamp_split_into_date_and_time_columns_is_one_timestamp(tmp_path, fmt):
    """Intraday exports write ``Date,Time,Open,...``: the Date alone gave all 390 bars of a day one
    timestamp, and 1167 of 1170 rows were dropped as duplicate timestamps."""
    from hftraining.data.synth import synth_ohlcv

    f = synth_ohlcv(390 * 3, seed=1, freq="1min")
    out = pd.DataFrame({"Date": f["timestamp"].dt.strftime("%m/%d/%Y"), "Time": f["timestamp"].dt.strftime("%H:%M"),
                        "Open": f.open, "High": f.high, "Low": f.low, "Close": f.close, "Volume": f.volume})
    if fmt == "csv":
        out.to_csv(tmp_path / "ES.csv", index=False)
    else:
        out.to_parquet(tmp_path / "ES.parquet", index=False)
    frames, rep = load_and_validate(DataConfig(cache_dir=None, data_dir=str(tmp_path), start_date=str(f["timestamp"].iloc[400])))
    assert rep["rows_dropped"] == 0 and rep["rows_in"] == len(frames["ES"]) == len(f) - 400
    np.testing.assert_array_equal(frames["ES"]["timestamp"].array.asi8, f["timestamp"].array.asi8[400:])


def test_decimal_comma_numbers_equal_the_decimal_point_file(tmp_path):
    raw = _sample("WPM").iloc[:150]
    raw.to_csv(tmp_path / "A.csv", index=False)
    raw.to_csv(tmp_path / "B.csv", index=False, sep=";", decimal=",")
    a = load_and_validate(DataConfig(data_dir=str(tmp_path / "A.csv")))[0]["A"]
    b = load_and_validate(DataConfig(data_dir=str(tmp_path / "B.csv")))[0]["B"]
    pd.testing.assert_frame_equal(a, b)


def test_a_mixed_notation_cell_in_a_decimal_comma_file_is_reported_not_misread(tmp_path):
    text = "Date;Close;Volume\n" + "".join(f"2024-01-{d:02d};101,5;1.234\n" for d in range(1, 29))
    text = text.replace("2024-01-05;101,5", "2024-01-05;101.5")  # a decimal point amid decimal commas
    (tmp_path / "X.csv").write_text(text)
    frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path / "X.csv")))
    assert frames["X"]["close"].tolist() == [101.5] * 27 and (frames["X"]["volume"] == 1234).all()
    entry = report["files"][0]["rules"]["non_numeric"]
    assert entry["rows"] == [6] and entry["columns"] == {"close": {"count": 1, "line": 6, "value": "101.5"}}


def test_outlier_rule_at_both_ends_and_not_for_a_weekend():
    daily = pd.bdate_range("2020-01-01", "2024-12-31", unit="ns").asi8
    t = daily.copy()
    t[10] = pd.Timestamp("2087-06-02").value  # far after
    t[500] = pd.Timestamp("1987-03-02").value  # far before
    assert np.flatnonzero(_outlier_timestamps(t)).tolist() == [10, 500]
    assert not _outlier_timestamps(daily).any()
    late = np.r_[daily, pd.Timestamp("2025-06-02").value]  # five months on: the next data, not an outlier
    assert not _outlier_timestamps(late).any()
    # minute bars: ten Friday bars, a weekend, then Monday and Tuesday: the weekend gap is no outlier
    fri = pd.date_range("2024-01-05 15:50", periods=10, freq="1min", unit="ns").asi8
    rest = np.r_[pd.date_range("2024-01-08 09:30", periods=390, freq="1min", unit="ns").asi8,
                 pd.date_range("2024-01-09 09:30", periods=390, freq="1min", unit="ns").asi8]
    assert not _outlier_timestamps(np.r_[fri, rest]).any()
    assert not _outlier_timestamps(np.r_[fri[:3], rest[:297]]).any()


def test_empty_volume_error_crosses_processes():
    e = pickle.loads(pickle.dumps(EmptyVolume("EURUSD", ["obv_20"])))
    assert isinstance(e, DataError) and e.symbol == "EURUSD" and "obv_20" in str(e)


def test_panel_with_one_symbol_without_volume_drops_the_volume_features_for_all(tmp_path):
    _sample("AEM").to_csv(tmp_path / "AEM.csv", index=False)
    _no_volume(tmp_path, "WPM")
    d = DataConfig(data_dir=str(tmp_path), sequence_length=20, prediction_horizon=3, cache_dir=str(tmp_path / "cache"),
                   features=["log_return_1", "rsi_14", "volume_ratio_20", "obv_20"])
    for frames in (None, load_and_validate(d)[0]):  # through the feature store, and from frames
        p = prepare(d, frames)
        assert p.preprocessing.features == ["log_return_1", "rsi_14"]
        assert p.preprocessing.feature_columns == ["log_return_1", "rsi_14"]
        assert p.preprocessing.data["features"] == ["log_return_1", "rsi_14"]
        assert set(p.report["dropped_features"]) == {"volume_ratio_20", "obv_20"}
        assert "WPM" in p.report["dropped_features"]["obv_20"]
        assert p.train.features.shape[1] == 2 and sorted(p.report["symbols"]) == ["AEM", "WPM"] and len(p.train)
    with pytest.raises(DataError, match="every feature .*needs volume"):
        prepare(dataclasses.replace(d, features=["volume_ratio_20"]))


def test_the_store_remembers_a_symbol_without_volume(tmp_path, monkeypatch):
    """A warm run of a panel with a volume-less symbol reads no file: the store remembers that the
    build with volume features stops at it, and maps the entry without them."""
    from hftraining.data import store

    for sym in ("AEM", "NIO"):
        _sample(sym).to_csv(tmp_path / f"{sym}.csv", index=False)
    _no_volume(tmp_path, "WPM")
    d = DataConfig(data_dir=str(tmp_path), sequence_length=20, prediction_horizon=3, cache_dir=str(tmp_path / "cache"),
                   features=["log_return_1", "volume_ratio_20"])
    reads = []
    real = store.read_unit
    monkeypatch.setattr(store, "read_unit", lambda unit, *a, **k: reads.append(unit) or real(unit, *a, **k))
    first = prepare(d)
    assert len(reads) >= 3 and first.preprocessing.features == ["log_return_1"]  # up to WPM, then all without volume
    reads.clear()
    again = prepare(d)
    assert reads == [] and again.report["cache"] == "hit" and again.report["dropped_features"] == first.report["dropped_features"]
    np.testing.assert_array_equal(again.train.targets(), first.train.targets())
    # new inputs are a new key: nothing remembered applies to them
    _sample("WPM").to_csv(tmp_path / "WPM.csv", index=False)
    assert prepare(d).preprocessing.features == ["log_return_1", "volume_ratio_20"]


def test_train_and_predict_without_volume(tmp_path, capsys):
    (tmp_path / "fx").mkdir()
    for sym in ("AEM", "WPM"):
        _no_volume(tmp_path / "fx", sym)
    quick = ["training.max_steps=3", "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false"]
    cfg = load_config(None, tiny(tmp_path / "run", f"data.data_dir={tmp_path / 'fx'}", *quick))
    train(cfg)
    fc = Forecaster.from_pretrained(tmp_path / "run")
    assert "volume_ratio_20" not in fc.preprocessing.features and fc.preprocessing.features
    table = fc.predict(str(tmp_path / "fx" / "AEM.csv"))
    assert len(table) == 3 and np.isfinite(table["forecast_return"]).all()
    assert cli.main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "fx")]) == 0
    capsys.readouterr()
    # a model trained with volume refuses data without it, in one line naming the symbol and the features
    with_vol = load_config(None, tiny(tmp_path / "vol", *quick))
    train(with_vol)
    capsys.readouterr()  # the training run's log, when a console handler is on
    code = cli.main(["predict", str(tmp_path / "vol"), "--data", str(tmp_path / "fx" / "AEM.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "AEM: the volume column is empty, and the features volume_ratio_20 need it" in err[0]


# --------------------------------------------------------------------------------------------
# Files as users download them (yfinance, brokers' and exchanges' exports)


def _ohlcv(n: int = 150) -> pd.DataFrame:
    """The first ``n`` rows of a sample file, with Yahoo's column names."""
    raw = _sample("AEM").iloc[:n]
    return pd.DataFrame({"Date": raw["Date"], "Open": raw["open"], "High": raw["high"], "Low": raw["low"],
                         "Close": raw["close"], "Volume": raw["volume"]})


def _loaded(path) -> tuple[pd.DataFrame, dict]:
    frames, report = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    (frame,) = frames.values()
    return frame, report


def _same_bars(frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    want = pd.to_datetime(raw["Date"], utc=True).astype("datetime64[ns, UTC]").array.asi8
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, want)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(frame[col], raw[col.capitalize()], rtol=1e-12)


def _one_line_error(capsys, path) -> str:
    """``hftraining data check PATH``: exit 2 and one line on stderr, returned."""
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("fmt", ["%d/%m/%Y", "%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y %H:%M"])
def test_day_first_dates_are_read_as_the_file_writes_them(tmp_path, fmt):
    """European exports write 02/01/2020 (or 02.01.2020) for 2 January. They were read month-first:
    days 1..12 became months (kept, silently wrong dates, then "repaired" by sorting) and every
    later day was dropped as bad_timestamp (176 of 300 rows)."""
    raw = _ohlcv(300)
    raw.assign(Date=pd.to_datetime(raw["Date"]).dt.strftime(fmt)).to_csv(tmp_path / "AEM.csv", index=False)
    frame, report = _loaded(tmp_path / "AEM.csv")
    assert report["rows_dropped"] == 0 and report["files"][0]["rules"] == {}
    _same_bars(frame, raw)


@pytest.mark.parametrize("fmt", ["%y/%m/%d", "%y-%m-%d"])
def test_year_first_two_digit_dates_pass_data_check_as_written(tmp_path, capsys, fmt):
    """``hftraining data check`` of a daily file dated 20/01/02 (2 January 2020, year first, as Asian
    exports write it) reports nothing to repair. The dates were read as dd/mm/yy: every bar kept,
    "unsorted_timestamp: 275 repaired" and five "jump" lines, and the bars silently spread over 2001-2031."""
    raw = _ohlcv(300)
    raw.assign(Date=pd.to_datetime(raw["Date"]).dt.strftime(fmt)).to_csv(tmp_path / "AEM.csv", index=False)
    assert cli.main(["data", "check", str(tmp_path / "AEM.csv")]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"{tmp_path / 'AEM.csv'}: 300 rows in, 300 kept, 0 dropped"]
    frame, report = _loaded(tmp_path / "AEM.csv")
    _same_bars(frame, raw)


@pytest.mark.parametrize("group_by", ["column", "ticker"])
def test_a_yfinance_download_is_read_with_its_line_numbers(tmp_path, group_by):
    """``yf.download("AEM").to_csv(...)`` writes three header lines (Price, Ticker, Date); the file
    was "missing column 'timestamp' (columns: Price, close, ...)". A bad cell is reported under the
    line the user sees in the file."""
    raw = _ohlcv()
    prices = raw.set_index(pd.DatetimeIndex(pd.to_datetime(raw["Date"]), name="Date")).drop(columns="Date")
    prices.insert(0, "Adj Close", prices["Close"] / 2)
    levels = [prices.columns, ["AEM"]] if group_by == "column" else [["AEM"], prices.columns]
    names = ["Price", "Ticker"] if group_by == "column" else ["Ticker", "Price"]
    prices.columns = pd.MultiIndex.from_product(levels, names=names)
    prices = prices.astype(object)
    prices.iloc[4, list(prices.columns.get_level_values("Price")).index("Volume")] = "1,2"
    prices.to_csv(tmp_path / "AEM.csv")
    assert (tmp_path / "AEM.csv").read_text().splitlines()[2].startswith("Date,,")
    frame, report = _loaded(tmp_path / "AEM.csv")
    rep = report["files"][0]
    assert rep["rules"]["non_numeric"]["rows"] == [8]  # 3 header lines, then the 5th bar
    assert rep["rules"]["non_numeric"]["columns"]["volume"]["value"] == "1,2"
    assert rep["close_column"]["used"] == "Adj Close"
    keep = raw.drop(index=4)
    np.testing.assert_allclose(frame["close"], keep["Close"] / 2, rtol=1e-12)
    np.testing.assert_allclose(frame["open"], keep["Open"] / 2, rtol=1e-12)
    np.testing.assert_allclose(frame["volume"], keep["Volume"].astype(float))


def test_a_yfinance_download_of_several_tickers_says_how_to_split_it(tmp_path, capsys):
    raw = _ohlcv().set_index("Date")
    pd.concat({"AEM": raw, "WPM": raw}, axis=1, names=["Ticker", "Price"]).to_csv(tmp_path / "both.csv")
    err = _one_line_error(capsys, tmp_path / "both.csv")
    assert f"{tmp_path / 'both.csv'}: a yfinance download of 2 tickers (AEM, WPM): write one file per ticker" in err
    assert "df.xs('AEM', axis=1, level='Ticker').to_csv('AEM.csv')" in err


def test_a_frame_written_with_its_unnamed_datetime_index_is_read(tmp_path):
    """``df.to_csv()`` of a frame indexed by its timestamps writes ``,Open,High,...``: it was "missing
    column 'timestamp' (columns: Unnamed: 0, ...)". A first column of row numbers beside a Date
    column stays ignored."""
    raw = _ohlcv()
    indexed = raw.set_index(pd.DatetimeIndex(pd.to_datetime(raw["Date"]))).drop(columns="Date")
    indexed.rename_axis(None).to_csv(tmp_path / "A.csv")
    assert (tmp_path / "A.csv").read_text().startswith(",Open,")
    _same_bars(_loaded(tmp_path / "A.csv")[0], raw)
    raw.to_csv(tmp_path / "B.csv")  # ,Date,Open,...: 0, 1, 2 ... first
    _same_bars(_loaded(tmp_path / "B.csv")[0], raw)


def test_binance_klines_with_and_without_a_header(tmp_path, capsys):
    """Binance's kline files have no header line: the first bar became the column names and the
    error listed numbers as columns. With the header python-binance users write (``open_time``, in
    ms), the file is read."""
    raw = _ohlcv()
    ms = pd.to_datetime(raw["Date"], utc=True).astype("datetime64[ns, UTC]").array.asi8 // 10**6
    klines = pd.DataFrame({"open_time": ms, "open": raw["Open"], "high": raw["High"], "low": raw["Low"],
                           "close": raw["Close"], "volume": raw["Volume"], "close_time": ms + 86_399_999,
                           "quote_volume": raw["Volume"] * raw["Close"], "count": 10, "taker_buy_volume": 1.0,
                           "taker_buy_quote_volume": 2.0, "ignore": 0})
    klines.to_csv(tmp_path / "BTCUSDT.csv", index=False)
    _same_bars(_loaded(tmp_path / "BTCUSDT.csv")[0], raw)
    klines.to_csv(tmp_path / "BTCUSDT-1d.csv", index=False, header=False)
    err = _one_line_error(capsys, tmp_path / "BTCUSDT-1d.csv")
    assert err.startswith(f"hftraining: error: {tmp_path / 'BTCUSDT-1d.csv'}: line 1 holds numbers, not column names")
    assert err.endswith("add a header line naming the columns, e.g. open_time,open,high,low,close,volume,close_time,"
                        "quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore (Binance's klines)")


@pytest.mark.parametrize("above", ["# exported by the broker", "AEM daily prices", "sep=;"])
def test_a_line_above_the_column_names_is_named_in_the_error(tmp_path, capsys, above):
    raw = _ohlcv()
    sep = ";" if above == "sep=;" else ","
    (tmp_path / "AEM.csv").write_text(above + "\n" + raw.to_csv(index=False, sep=sep))
    err = _one_line_error(capsys, tmp_path / "AEM.csv")
    assert f"line 1 ({above!r}) has" in err and "remove any title, comment or 'sep=' line above the column names" in err


@pytest.mark.parametrize("kind", ["gzip", "parquet", "utf-16", "latin-1"])
def test_a_file_that_is_not_utf8_csv_says_what_it_is(tmp_path, capsys, kind):
    """Each was "not UTF-8 text (is it a CSV file?)", whatever the file was."""
    raw = _ohlcv()
    text = raw.rename(columns={"Open": "Eröffnung"}).to_csv(index=False)
    path = tmp_path / "AEM.csv"
    if kind == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    elif kind == "parquet":
        raw.to_parquet(path)
    else:
        path.write_bytes(text.encode(kind))
    want = {"gzip": "gzip-compressed data: name it .csv.gz", "parquet": "a Parquet file: name it .parquet",
            "utf-16": "UTF-16 text: save it as UTF-8",
            "latin-1": "not UTF-8 text (byte 0xf6 in line 1): save it as UTF-8"}
    assert _one_line_error(capsys, path) == f"hftraining: error: {path}: {want[kind]}"


def test_comma_grouped_volume_beside_whole_prices_in_a_semicolon_file(tmp_path):
    """Whole-number prices (yen, won) and a volume grouped by "," (``1,247,700``) in a ";" file: the
    file was taken for decimal-comma, ``925,600`` read as 925.6 and ``1,247,700`` dropped."""
    raw = _ohlcv()
    for col in ("Open", "High", "Low", "Close"):
        raw[col] = (raw[col] * 100).round().astype(int)
    raw.assign(Volume=raw["Volume"].map("{:,.0f}".format)).to_csv(tmp_path / "AEM.csv", index=False, sep=";")
    frame, report = _loaded(tmp_path / "AEM.csv")
    assert report["rows_dropped"] == 0
    _same_bars(frame, raw)


def test_a_metatrader_export_with_bracketed_names(tmp_path):
    """MetaTrader 5 writes ``<DATE>\\t<TIME>\\t<OPEN>...`` with dates as 2024.01.02: it was "missing
    column 'timestamp' (columns: <DATE>, <TIME>, ...)". Its <VOL> of zeros (FX) is no volume."""
    from hftraining.data.synth import synth_ohlcv

    f = synth_ohlcv(390 * 2, seed=1, freq="1min")
    t = f["timestamp"]
    pd.DataFrame({"<DATE>": t.dt.strftime("%Y.%m.%d"), "<TIME>": t.dt.strftime("%H:%M:%S"), "<OPEN>": f.open,
                  "<HIGH>": f.high, "<LOW>": f.low, "<CLOSE>": f.close, "<TICKVOL>": 7, "<VOL>": 0, "<SPREAD>": 2},
                 ).to_csv(tmp_path / "EURUSD.csv", sep="\t", index=False)
    frame, report = _loaded(tmp_path / "EURUSD.csv")
    assert report["rows_dropped"] == 0 and report["files"][0]["volume_empty"] == ["EURUSD"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, t.array.asi8)
    np.testing.assert_allclose(frame["close"], f.close, rtol=1e-12)
