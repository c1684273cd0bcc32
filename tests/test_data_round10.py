"""Downloads as the sites and tools write them, built by hand from the bundled sample (no network):
Nasdaq.com's historical quotes (``Close/Last``, ``$`` prices), Investing.com's (``Price``, ``Vol.`` in
``K``/``M``/``B``, quoted ``1,234.50``, ``Mar 18, 2026``), Alpha Vantage's adjusted daily series
(``adjusted_close``) and the IBKR API's stamps ending in a zone name. Each is read to the bars it
holds, every row it reorders in the report; a file that is no table (an API's JSON reply, a site's
HTML page, MetaTrader 4's export without a header line) is a one-line error saying what to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data import io
from hftraining.data.sources import load_and_validate

N = 300


def _bars(sym: str = "AEM", last: str | None = None) -> pd.DataFrame:
    """``N`` daily bars of a bundled file (Date, open, high, low, close, volume), oldest first,
    ending on ``last`` (default: the file's last date)."""
    raw = pd.read_csv(io.sample_data_dir() / f"{sym}.csv")
    if last is not None:
        raw = raw[raw["Date"] <= last]
    return raw.tail(N).reset_index(drop=True)


def _load(path):
    frames, report = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    (frame,) = frames.values()
    (rep,) = report["files"]
    return frame, rep


def _dates(raw: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(raw["Date"])).tz_localize("UTC").as_unit("ns").asi8


def _newest_first_reported(rep: dict) -> None:
    """A newest-first file is read oldest first, every row it moved in the report, none dropped."""
    assert rep["rows_in"] == rep["rows_kept"] == N and rep["rows_dropped"] == 0, rep["rules"]
    assert rep["rules"]["unsorted_timestamp"]["repaired"] == N - 1
    assert rep["rules"]["unsorted_timestamp"]["rows"] == list(range(3, N + 2))


def _one_line_error(capsys, path) -> str:
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_a_nasdaq_com_download_is_read_as_the_bars_it_holds(tmp_path, capsys):
    """``Date,Close/Last,Volume,Open,High,Low``, dates MM/DD/YYYY, newest first, prices as ``$182.52``:
    it was "missing column 'close'", and a ``$`` price was not a number. A row Nasdaq writes ``N/A``
    in is dropped and named."""
    raw = _bars()
    new = raw.iloc[::-1].reset_index(drop=True)
    dollars = {c: new[c].map("${:.2f}".format) for c in ("close", "open", "high", "low")}
    out = pd.DataFrame({"Date": pd.to_datetime(new["Date"]).dt.strftime("%m/%d/%Y"), "Close/Last": dollars["close"],
                        "Volume": new["volume"], "Open": dollars["open"], "High": dollars["high"], "Low": dollars["low"]})
    out.to_csv(tmp_path / "AEM.csv", index=False)
    assert (tmp_path / "AEM.csv").read_text().splitlines()[1].split(",")[1].startswith("$")
    frame, rep = _load(tmp_path / "AEM.csv")
    _newest_first_reported(rep)
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(frame[col], raw[col].round(2), rtol=1e-12)
    np.testing.assert_array_equal(frame["volume"], raw["volume"])
    out.loc[5, "Open"] = "N/A"
    out.to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 1 and rep["rules"]["nan_or_inf"]["rows"] == [7] and len(frame) == N - 1
    assert cli.main(["data", "check", str(tmp_path)]) == 0
    assert f"{tmp_path / 'AEM.csv'}: {N} rows in, {N - 1} kept, 1 dropped" in capsys.readouterr().out


def _volume_text(v: float) -> str:
    """Investing.com's volume: three decimals' worth of K, M or B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if v >= size:
            return f"{v / size:.2f}{suffix}"
    return f"{v:.0f}"


@pytest.mark.parametrize("date_format", ["%m/%d/%Y", "%b %d, %Y"])
def test_an_investing_com_download_is_read_with_its_volume_suffixes(tmp_path, date_format):
    """``"Date","Price","Open","High","Low","Vol.","Change %"``, every cell quoted, newest first
    (here from a day in May: its month name is read in every other month too), prices over 1,000
    written ``"6,070.80"``, volumes ``2.94M``, ``456.70K``, ``1.20B``: it was "missing column 'close'".
    An index's volume of ``-`` is no volume, as an empty column is."""
    raw = _bars(last="2025-05-30")
    raw.loc[[10, 20], "volume"] = [456_700, 1_200_000_000]
    new = raw.iloc[::-1].reset_index(drop=True)
    prices = {c: (new[c] * 30).map("{:,.2f}".format) for c in ("close", "open", "high", "low")}
    vol = new["volume"].map(_volume_text)
    out = pd.DataFrame({"Date": pd.to_datetime(new["Date"]).dt.strftime(date_format), "Price": prices["close"],
                        "Open": prices["open"], "High": prices["high"], "Low": prices["low"], "Vol.": vol,
                        "Change %": (new["close"].pct_change(-1) * 100).map("{:.2f}%".format)})
    out.to_csv(tmp_path / "AEM.csv", index=False, quoting=1)
    text = (tmp_path / "AEM.csv").read_text()
    assert text.startswith('"Date","Price","Open","High","Low","Vol.","Change %"') and '"456.70K"' in text
    assert '"1.20B"' in text and text.splitlines()[1].startswith('"May 30, 2025"' if "%b" in date_format else '"05/30')
    frame, rep = _load(tmp_path / "AEM.csv")
    _newest_first_reported(rep)
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(frame[col], (raw[col] * 30).round(2), rtol=1e-12)
    want = [float(v[:-1]) * {"K": 1e3, "M": 1e6, "B": 1e9}[v[-1]] for v in raw["volume"].map(_volume_text)]
    np.testing.assert_allclose(frame["volume"], want, rtol=1e-12)
    assert frame["volume"].iloc[10] == 456_700 and frame["volume"].iloc[20] == 1_200_000_000

    out.assign(**{"Vol.": "-"}).to_csv(tmp_path / "AEM.csv", index=False, quoting=1)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0 and rep["volume_empty"] == ["AEM"] and frame["volume"].isna().all()


def test_a_price_column_without_the_bars_other_prices_is_no_close(tmp_path, capsys):
    """``Price`` is the close beside Open, High and Low only: a file of trades (time, price, volume)
    is not read as close-only bars, and beside a Close it is an error naming both."""
    raw = _bars()
    pd.DataFrame({"timestamp": raw["Date"], "price": raw["close"], "volume": raw["volume"]}).to_csv(
        tmp_path / "T.csv", index=False)
    assert "missing column 'close'" in _one_line_error(capsys, tmp_path / "T.csv")
    raw.assign(price=raw["close"] * 2).to_csv(tmp_path / "B.csv", index=False)
    assert "columns 'close' and 'price' would both be read as the close" in _one_line_error(capsys, tmp_path / "B.csv")


def test_alpha_vantage_s_adjusted_close_is_the_adjusted_close(tmp_path):
    """Alpha Vantage's ``TIME_SERIES_DAILY_ADJUSTED`` CSV (``timestamp,open,high,low,close,
    adjusted_close,volume,dividend_amount,split_coefficient``, newest first): ``adjusted_close`` was not
    read, so the raw close was the close under the default ``data.price_adjustment=adjusted``, and the
    report said nothing of it."""
    raw = _bars()
    new = raw.iloc[::-1].reset_index(drop=True)
    pd.DataFrame({"timestamp": new["Date"], "open": new["open"], "high": new["high"], "low": new["low"],
                  "close": new["close"], "adjusted_close": new["close"] * 0.8, "volume": new["volume"],
                  "dividend_amount": 0.0, "split_coefficient": 1.0}).to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv")
    _newest_first_reported(rep)
    assert rep["close_column"]["used"] == "Adj Close"
    np.testing.assert_allclose(frame["close"], raw["close"] * 0.8, rtol=1e-12)
    np.testing.assert_allclose(frame["open"], raw["open"] * 0.8, rtol=1e-12)


def test_stamps_ending_in_a_zone_name_are_that_zone_s_local_times(tmp_path, capsys):
    """The IBKR API writes intraday bars as ``20250106 09:30:00 US/Eastern``: every row was a
    bad_timestamp and the file "no usable rows". They are the instants the same times with their UTC
    offsets are (-05:00 in winter, -04:00 in summer); a name that is no zone is a one-line error."""
    raw = _bars()
    local = pd.to_datetime(raw["Date"]) + pd.Timedelta(hours=9, minutes=30)
    bars = {c: raw[c] for c in io.OHLCV}
    pd.DataFrame({"date": local.dt.strftime("%Y%m%d %H:%M:%S") + " US/Eastern", **bars, "average": raw["close"],
                  "barCount": 10}).to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0
    want = local.dt.tz_localize("America/New_York").dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, want.array.asi8)
    assert set((want - pd.to_datetime(raw["Date"]).dt.tz_localize("UTC")).dt.total_seconds() / 3600) == {13.5, 14.5}
    bad = tmp_path / "bad" / "AEM.csv"
    bad.parent.mkdir()
    bad.write_text((tmp_path / "AEM.csv").read_text().replace("US/Eastern", "Wall/Street"))
    assert _one_line_error(capsys, bad) == (
        f"hftraining: error: {bad}: timestamp '{local.iloc[0]:%Y%m%d %H:%M:%S} Wall/Street': 'Wall/Street' is not a "
        "time zone: write an IANA name (America/New_York) or the UTC offset (2024-01-02T09:30:00-05:00)")


def test_a_download_that_is_no_table_says_what_it_is(tmp_path, capsys):
    """An API's JSON reply and a site's HTML page saved as ``.csv`` were "missing column 'timestamp'
    (columns: {)"; MetaTrader 4's history export has no header line and was "missing column
    'timestamp' (columns: 2024.01.02, 00:00, 1.1034, ...)". Its suggested header reads it."""
    av = tmp_path / "AAPL.csv"
    av.write_text('{\n    "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 '
                  'requests per day."\n}\n')
    err = _one_line_error(capsys, av)
    assert err.startswith(f"hftraining: error: {av}: a JSON document, not CSV text ('{{ \"Information\": \"Thank you")
    assert "fetch the data again" in err
    page = tmp_path / "MSFT.csv"
    page.write_text('<!DOCTYPE html>\n<html lang="en">\n<head>\n<title>Access Denied</title>\n</head>\n'
                    "<body>You don't have permission to access this page.</body>\n</html>\n")
    err = _one_line_error(capsys, page)
    assert err.startswith(f"hftraining: error: {page}: an HTML page titled 'Access Denied', not CSV text")
    assert "download the CSV again" in err

    raw = _bars()
    day = pd.to_datetime(raw["Date"])
    mt4 = pd.DataFrame({"d": day.dt.strftime("%Y.%m.%d"), "t": "00:00", **{c: raw[c] for c in io.OHLCV}})
    path = tmp_path / "EURUSD.csv"
    mt4.to_csv(path, index=False, header=False)
    err = _one_line_error(capsys, path)
    assert err.startswith(f"hftraining: error: {path}: line 1 holds a date and numbers, not column names")
    header = err.split("e.g. ")[1]
    assert header == "date,time,open,high,low,close,volume"
    path.write_text(header + "\n" + path.read_text())
    frame, rep = _load(path)
    assert rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    np.testing.assert_allclose(frame["close"], raw["close"], rtol=1e-12)
