"""Price files whose dates parse in several orders (day-first, month-first, and year-first for a
two-digit year) are read as the file writes them, and a long file's dates in one order for every
symbol, each distinct date parsed once."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data import io
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


def _bars(when: pd.DatetimeIndex, fmt: str, newest_first: bool) -> pd.DataFrame:
    """One bar per time of ``when``, dated in ``fmt``, oldest or newest first."""
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, len(when))))
    out = pd.DataFrame({"Date": when.strftime(fmt), "Open": close, "High": close * 1.01, "Low": close * 0.99,
                        "Close": close, "Volume": 1000.0})
    return out.iloc[::-1] if newest_first else out


@pytest.mark.parametrize("fmt", ["%y/%m/%d", "%y-%m-%d", "%y.%m.%d %H:%M", "%d/%m/%y", "%m/%d/%y"])
def test_a_two_digit_year_is_read_where_the_file_writes_it(tmp_path, fmt):
    """``21/03/15`` is 15 March 2021 in a file written year-first (Chinese, Japanese, Korean exports),
    and 15/03/21 and 03/15/21 are too in files written day- or month-first: daily and monthly bars,
    oldest or newest first. A year-first file was read as dd/mm/yy (2020-01-02 became 2002-01-20: 300
    bars "repaired" by sorting into 30 years), and a daily file written day- or month-first, newest
    first, was read by dateutil cell by cell, swapping day and month wherever both were 12 or less."""
    daily = pd.bdate_range("2020-01-02", periods=300, tz="UTC", unit="ns")
    monthly = pd.date_range("2019-01-01", periods=36, freq="MS", tz="UTC", unit="ns")
    for when, newest_first in [(daily, False), (daily, True), (monthly, False), (monthly, True)]:
        _bars(when, fmt, newest_first).to_csv(tmp_path / "X.csv", index=False)
        frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path / "X.csv"), cache_dir=None))
        assert report["rows_dropped"] == 0
        np.testing.assert_array_equal(frames["X"]["timestamp"].array.asi8, when.asi8,
                                      err_msg=f"{len(when)} bars, newest first: {newest_first}")


def test_dates_that_read_equally_well_in_two_orders_are_named_in_a_warning(caplog):
    """A column whose only date reads as 15 March 2021 day-first and as 21 March 2015 year-first
    (nothing else tells them apart) is read day-first, as before, and the warning names the file, a
    cell and both readings; it was read without a word."""
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ts = io.parse_timestamps(pd.Series(["15/03/21"] * 3), "prices.csv")
    assert (ts == pd.Timestamp("2021-03-15", tz="UTC")).all()
    (msg,) = [r.getMessage() for r in caplog.records]
    assert msg.startswith("prices.csv: ") and "'15/03/21'" in msg
    assert "day-first (2021-03-15)" in msg and "year-first (2015-03-21)" in msg


@pytest.mark.parametrize("fmt", ["%d/%m/%Y", "%y/%m/%d"])
def test_a_long_file_parses_each_distinct_date_once(monkeypatch, fmt):
    """A long file repeats each date once per symbol; its dates were parsed cell by cell in every
    reading (1M rows: 4.4 s of parsing day-first dates, 80 s of two-digit years; pandas' own cache
    gives up on a file sorted by symbol). Each distinct date is parsed once per reading now, with
    the same result."""
    days = pd.bdate_range("2001-01-02", periods=400, tz="UTC", unit="ns")
    cells = pd.Series(np.tile(days.strftime(fmt).to_numpy(), 25), dtype="string")
    seen = []
    to_datetime = pd.to_datetime

    def counting(arg, *a, **k):
        seen.append(len(arg))
        return to_datetime(arg, *a, **k)

    monkeypatch.setattr(pd, "to_datetime", counting)
    ts = io.parse_timestamps(cells, "long.csv")
    monkeypatch.undo()
    np.testing.assert_array_equal(ts.array.asi8, np.tile(days.asi8, 25))
    assert seen and max(seen) <= len(days), seen


@pytest.mark.parametrize("first", ["31/12/", "01/01/"])
def test_annual_bars_with_a_two_digit_year_are_named_when_read_as_days(caplog, first):
    """Annual bars dated 31/12/15 .. 31/12/24 read year-first as ten days of December 2031 and read
    day-first as ten years: both parse and run in time order, and nothing in the file tells ten
    days from ten years. The smaller step is taken (as for any such tie), and a warning now names the
    file and both readings; the days were taken without a word."""
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        io.parse_timestamps(pd.Series([f"{first}{y:02d}" for y in range(15, 25)]), "annual.csv")
    (msg,) = [r.getMessage() for r in caplog.records]
    assert msg.startswith("annual.csv: ") and "year-first" in msg and "YYYY-MM-DD" in msg


def test_a_midnight_bar_written_without_its_time_keeps_its_date():
    """A two-digit-year column with times of day whose midnight bars are written without one (as
    some exports do): the bare date is midnight of that day, not an unparsed row."""
    ts = io.parse_timestamps(pd.Series(["15/03/21 09:30", "16/03/21", "17/03/21 09:30"]), "x.csv")
    assert list(ts) == [pd.Timestamp("2021-03-15 09:30", tz="UTC"), pd.Timestamp("2021-03-16", tz="UTC"),
                        pd.Timestamp("2021-03-17 09:30", tz="UTC")]


@pytest.mark.parametrize("fmt", ["%d-%b-%Y", "%b %d, %Y", "%d %B %Y", "%B %d, %Y"])
@pytest.mark.parametrize("newest_first", [False, True])
def test_month_names_read_whatever_month_the_file_starts_in(fmt, newest_first):
    """"May" is a month's full and short name alike: a file of 19-May-2045, 20-May-2045, ... was read
    in the format guessed from its first cell (%d-%B-%Y), and every row of another month (Jun, Jul,
    ...) was dropped as bad_timestamp: 87 of 100 daily rows. Both spellings are readings now."""
    days = pd.date_range(end="2045-05-19", periods=100, freq="D", tz="UTC", unit="ns")[::-1] if newest_first else \
        pd.date_range("2045-05-19", periods=100, freq="D", tz="UTC", unit="ns")  # the first row in May, either way
    ts = io.parse_timestamps(pd.Series(days.strftime(fmt)), "x.csv")
    assert ts.notna().all()
    np.testing.assert_array_equal(ts.array.asi8, days.asi8)
