"""Files as the readers meet them: a yfinance download reset into columns before it was saved as Parquet, a
joined Investing.com export whose second header names its ``Price`` the ``Close``, and ``Close`` beside Yahoo's
footnoted ``Close*``."""

from __future__ import annotations

import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.io import read_table
from hftraining.data.sources import Unit, read_unit


def _read(path, **kw):
    cfg = DataConfig(sequence_length=20, prediction_horizon=2, features=["log_return_1"], cache_dir=None, **kw)
    return read_unit(Unit("file", str(path)), cfg)


def _download(tickers: list[str], price_first: bool = True, n: int = 8) -> pd.DataFrame:
    """``yf.download(tickers)`` as it comes: a Date index, columns of (price, ticker) or (ticker, price)."""
    days = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=n), name="Date")
    one = pd.DataFrame({"Close": [101.25 + i for i in range(n)], "High": [102.0 + i for i in range(n)],
                        "Low": [99.0 + i for i in range(n)], "Open": [100.5 + i for i in range(n)],
                        "Volume": [1000 * (i + 1) for i in range(n)]}, index=days)
    out = pd.concat({t: one for t in tickers}, axis=1)
    out.columns.names = ["Ticker", "Price"]
    return out.swaplevel(0, 1, axis=1) if price_first else out


@pytest.mark.parametrize("price_first", [True, False])
def test_a_yfinance_download_reset_before_it_was_saved_as_parquet_is_read_for_its_ticker(tmp_path, price_first):
    """``yf.download("AEM").reset_index().to_parquet(...)`` holds the dates in a column named in one level only,
    ``('Date', '')``: it was "a yfinance download of 2 tickers (, AEM)", with ``df.xs('', ...)`` as the fix."""
    _download(["AEM"], price_first).to_parquet(tmp_path / "KEPT.parquet")
    _download(["AEM"], price_first).reset_index().to_parquet(tmp_path / "AEM.parquet")
    want, _ = _read(tmp_path / "KEPT.parquet")
    got, rep = _read(tmp_path / "AEM.parquet")
    assert rep["rules"] == {} and rep["rows_kept"] == 8
    pd.testing.assert_frame_equal(got["AEM"], want["KEPT"])
    assert got["AEM"]["timestamp"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert got["AEM"][["open", "close", "volume"]].iloc[1].tolist() == [101.5, 102.25, 2000.0]


def test_a_reset_download_of_several_tickers_names_the_tickers_only(tmp_path):
    _download(["AEM", "WPM"]).reset_index().to_parquet(tmp_path / "BOTH.parquet")
    with pytest.raises(DataError, match=r"BOTH\.parquet: a yfinance download of 2 tickers \(AEM, WPM\): write one "
                                        r"file per ticker, e\.g\. df\.set_index\('Date'\)\.xs\('AEM', axis=1, level="):
        read_table(tmp_path / "BOTH.parquet")


def test_a_repeated_investing_header_that_names_its_price_the_close_is_the_same_order(tmp_path):
    """Investing.com's ``Price`` is the close beside Open, High and Low: a second header ``Date,Close,Open,...``
    names the same columns in the same order, so its line is dropped as before and every row is read (it was
    refused as "a header line naming the columns in another order")."""
    days = pd.bdate_range("2024-01-02", periods=10)
    rows = [f"{d:%Y-%m-%d},{101 + i}.25,{100 + i}.5,{102 + i},{99 + i},{1000 * (i + 1)}\n" for i, d in enumerate(days)]
    (tmp_path / "GOLD.csv").write_text("Date,Price,Open,High,Low,Vol.\n" + "".join(rows[:5])
                                       + "Date,Close,Open,High,Low,Volume\n" + "".join(rows[5:]), newline="")
    frames, rep = _read(tmp_path / "GOLD.csv")
    assert rep["rules"] == {"bad_timestamp": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [7]}}
    f = frames["GOLD"]
    assert len(f) == 10 and f["close"].tolist() == [101.25 + i for i in range(10)]
    assert f["open"].iloc[-1] == 109.5
    # a Price column moved to another place is still another order
    (tmp_path / "MOVED.csv").write_text("Date,Price,Open,High,Low,Vol.\n" + "".join(rows[:5])
                                        + "Date,Open,Price,High,Low,Vol.\n" + "".join(rows[5:]), newline="")
    with pytest.raises(DataError, match=r"MOVED\.csv: line 7 is a header line naming the columns in another order"):
        _read(tmp_path / "MOVED.csv")


def test_close_beside_a_footnoted_close_names_both_columns(tmp_path):
    """``Close*`` is read as the close (Yahoo Finance's footnote mark): beside a ``Close`` the error named one
    column twice, "two columns are named 'Close*'", though no two columns are."""
    days = pd.bdate_range("2024-01-02", periods=5)
    (tmp_path / "X.csv").write_text("Date,Open,High,Low,Close,Close*,Volume\n" + "".join(
        f"{d:%Y-%m-%d},1,2,0.5,1.5,1.4,10\n" for d in days), newline="")
    with pytest.raises(DataError, match=r"X\.csv: two columns are named 'Close\*' and 'Close': which one to read "
                                        r"cannot be told"):
        read_table(tmp_path / "X.csv")
