"""Price files whose dates parse in both orders (day-first and month-first) are read as the file
writes them, and a long file's dates in one order for every symbol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.sources import load_and_validate


def _monthly(n: int = 36) -> pd.DataFrame:
    """``n`` monthly bars dated the first of each month, from January 2019."""
    dates = pd.date_range("2019-01-01", periods=n, freq="MS", tz="UTC", unit="ns")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.05, n)))
    return pd.DataFrame({"Date": dates, "Open": close, "High": close * 1.02, "Low": close * 0.98, "Close": close,
                         "Volume": np.arange(1, n + 1) * 1000})


@pytest.mark.parametrize("fmt, newest_first", [("%d.%m.%Y", True), ("%d/%m/%Y", False)])
def test_monthly_day_first_dates_are_months_not_days_of_january(tmp_path, fmt, newest_first):
    """A monthly download dated the first of each month, day-first (``01.02.2020``: 1 February, as
    European sites write it, often newest first) parses in both orders, in time order either way.
    The reading spanning less time won: month-first, 36 monthly bars became days 1..12 of three
    Januaries (kept, silently wrong dates)."""
    raw = _monthly()
    out = raw.assign(Date=raw["Date"].dt.strftime(fmt))
    (out.iloc[::-1] if newest_first else out).to_csv(tmp_path / "IDX.csv", index=False)
    frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path / "IDX.csv"), cache_dir=None))
    (frame,) = frames.values()
    assert report["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, raw["Date"].array.asi8)
    np.testing.assert_allclose(frame["close"], raw["Close"], rtol=1e-12)


def test_a_long_file_reads_its_dates_in_one_order_for_every_symbol(tmp_path):
    """In one long file ``01/02/2020`` means one day for every symbol. Each symbol's dates were read
    on their own: a daily symbol's 15/01/2020 made its file day-first, while another symbol's twelve
    monthly bars (01/01/2020 ... 01/12/2020, ambiguous on their own) were read month-first, as
    1..12 January."""
    daily = pd.bdate_range("2020-01-02", "2020-03-31", tz="UTC", unit="ns")
    monthly = pd.date_range("2020-01-01", periods=12, freq="MS", tz="UTC", unit="ns")
    when = [*daily, *monthly]
    pd.DataFrame({"symbol": ["A"] * len(daily) + ["B"] * len(monthly),
                  "Date": [t.strftime("%d/%m/%Y") for t in when],
                  "Open": 10.0, "High": 11.0, "Low": 9.0, "Close": 10.0, "Volume": 100}).to_csv(tmp_path / "p.csv",
                                                                                               index=False)
    frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path / "p.csv"), cache_dir=None))
    assert report["rows_dropped"] == 0
    np.testing.assert_array_equal(frames["A"]["timestamp"].array.asi8, daily.asi8)
    np.testing.assert_array_equal(frames["B"]["timestamp"].array.asi8, monthly.asi8)
