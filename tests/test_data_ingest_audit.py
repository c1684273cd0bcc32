"""What the report says about the rows it touched, where a file's rows and its lines (or a Parquet
symbol's rows and the rows a date range reads) are not one to one, and daily files that stamp one
trading day at different times of day."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.rows import ANY_ROWS
from hftraining.data.sources import check_paths, load_and_validate
from hftraining.data.store import load_rows
from hftraining.data.synth import synth_ohlcv

HEADER = "timestamp,open,high,low,close,volume,note"


def _lines(n: int = 12) -> list[str]:
    return [f"2020-01-{i + 1:02d},{100 + i},{101 + i},{99 + i},{100 + i},1000,x" for i in range(n)]


def _rules(path, **kw) -> dict[str, list[int]]:
    reports, errors, _ = check_paths([str(path)], DataConfig(**kw))
    assert not errors and len(reports) == 1
    return {rule: e["rows"] for rule, e in reports[0]["rules"].items()}


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_quoted_cell_over_two_lines_moves_the_lines_below_it(tmp_path, eol):
    rows = _lines()
    rows[1] = rows[1][:-1] + f'"a note{eol}on two lines"'  # the row of line 3 ends on line 4
    rows[4] = rows[4].replace(",104,1000,", ",oops,1000,")  # the 5th row: line 7 of the file
    path = tmp_path / "A.csv"
    path.write_bytes(("\ufeff" + eol.join([HEADER, *rows]) + eol).encode())
    assert path.read_bytes().decode("utf-8-sig").splitlines()[6].split(",")[4] == "oops"
    assert _rules(path) == {"non_numeric": [7]}


def test_rows_of_a_parquet_symbol_keep_their_numbers_under_a_date_range(tmp_path):
    """A long Parquet file and a dataset are scanned with the range pushed down; the report numbers a
    row among the symbol's rows all the same, as the one-symbol file read whole does."""
    times = pd.date_range("2020-01-01", periods=20, freq="D", tz="UTC")
    c = 100.0 + np.arange(20)
    frame = pd.DataFrame({"timestamp": times, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 10.0})
    clean = frame.assign(symbol="B")
    frame.loc[15, "close"] = -1.0  # the symbol's 16th row
    long = pd.concat([frame.assign(symbol="A"), clean]).sort_values("timestamp", kind="stable")
    long.to_parquet(tmp_path / "long.parquet", index=False)
    (tmp_path / "ds" / "symbol=A").mkdir(parents=True)
    frame.iloc[:8].to_parquet(tmp_path / "ds" / "symbol=A" / "part-0.parquet", index=False)
    frame.iloc[8:].to_parquet(tmp_path / "ds" / "symbol=A" / "part-1.parquet", index=False)
    frame.to_parquet(tmp_path / "A.parquet", index=False)
    for kw in ({}, {"start_date": "2020-01-10"}, {"start_date": "2020-01-05", "end_date": "2020-01-19"}):
        for path in ("A.parquet", "long.parquet", "ds"):
            reports, errors, _ = check_paths([str(tmp_path / path)], DataConfig(**kw))
            assert not errors
            got = [r["rules"]["non_positive_price"]["rows"] for r in reports if "non_positive_price" in r["rules"]]
            assert got == [[16]], (path, kw)


def _daily(folder, name: str, zone: str | None, days: pd.DatetimeIndex, seed: int) -> None:
    """A daily file stamped at local midnight of ``zone`` with its UTC offset (as yfinance writes
    them), or with plain dates (``zone`` None)."""
    f = synth_ohlcv(len(days), seed=seed)
    f["timestamp"] = [d.strftime("%Y-%m-%d") if zone is None else d.tz_localize(zone).isoformat() for d in days]
    f.to_csv(folder / f"{name}.csv", index=False)


def test_daily_files_stamping_a_trading_day_at_different_utc_times_are_named(tmp_path, caplog):
    days = pd.bdate_range("2021-01-04", periods=300)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, (name, zone) in enumerate([("NYA", "America/New_York"), ("NYB", "America/New_York"),
                                      ("DEA", "Europe/Berlin"), ("PLAIN", None)]):
        _daily(mixed, name, zone, days, k)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        frames, report = load_and_validate(DataConfig(data_dir=str(mixed), cache_dir=None))
    stamps = np.unique(np.concatenate([f["timestamp"].to_numpy() for f in frames.values()]))
    assert len(stamps) == 3 * len(days)  # each trading day is three dates of the panel
    mixed_stamps = report["mixed_stamps"]
    assert mixed_stamps["times_utc"] == {"00:00": ["PLAIN.csv"], "04:00/05:00": ["NYA.csv", "NYB.csv"],
                                         "22:00/23:00": ["DEA.csv"]}
    assert mixed_stamps["first_day"] == "2021-01-04"
    warned = [r.getMessage() for r in caplog.records if "different times of day" in r.getMessage()]
    assert len(warned) == 1 and "NYA.csv" in warned[0] and "DEA.csv" in warned[0] and "PLAIN.csv" in warned[0]
    assert all("stamps" not in f for f in report["files"])  # the files' runs are not repeated in the report
    for status in ("miss", "hit"):  # a feature store entry says it to every run it serves, once
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hftraining"):
            _, report = load_rows(DataConfig(data_dir=str(mixed), cache_dir=str(tmp_path / "cache")), ANY_ROWS)
        assert report["cache"] == status and report["mixed_stamps"] == mixed_stamps
        assert sum("different times of day" in r.getMessage() for r in caplog.records) == 1, status


def test_daily_files_stamped_alike_are_not_named(tmp_path, caplog):
    """New York files across daylight saving, one of them listed in the summer only (all at 04:00 UTC):
    every shared day has one stamp. Intraday files are not looked at."""
    same = tmp_path / "same"
    same.mkdir()
    _daily(same, "OLD", "America/New_York", pd.bdate_range("2021-01-04", periods=400), 0)
    _daily(same, "NEW", "America/New_York", pd.bdate_range("2021-05-03", periods=100), 1)
    synth_ohlcv(300, seed=2, freq="30min").to_csv(same / "MINUTES.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        _, report = load_and_validate(DataConfig(data_dir=str(same), cache_dir=None))
    assert "mixed_stamps" not in report
    assert not [r for r in caplog.records if "different times of day" in r.getMessage()]


@pytest.mark.parametrize("first", [43831, 0])
def test_excel_day_numbers_or_a_row_counter_are_refused_not_read_as_seconds_of_1970(tmp_path, capsys, first):
    """A date column saved from a spreadsheet as numbers (43831: 2020-01-01) was read as Unix seconds:
    120 daily bars one second apart on 1 January 1970, with a clean report."""
    from hftraining import cli

    rows = [f"{first + i},{100 + i},{101 + i},{99 + i},{100 + i},1000" for i in range(120)]
    path = tmp_path / "XL.csv"
    path.write_text("\n".join(["Date,Open,High,Low,Close,Volume", *rows]) + "\n")
    assert cli.main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and f"from {first} to {first + 119}" in err[0]
    assert "YYYY-MM-DD" in err[0]
    # epoch seconds of the same days are read as dates
    secs = [f"{1577836800 + 86400 * i},{100 + i},{101 + i},{99 + i},{100 + i},1000" for i in range(120)]
    path.write_text("\n".join(["Date,Open,High,Low,Close,Volume", *secs]) + "\n")
    frames, _ = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    assert frames["XL"]["timestamp"].iloc[0] == pd.Timestamp("2020-01-01", tz="UTC")


def _epoch_file(path, stamps) -> None:
    rows = [f"{t},{100 + i % 50},{101 + i % 50},{99 + i % 50},{100 + i % 50},1000" for i, t in enumerate(stamps)]
    path.write_text("\n".join(["timestamp,open,high,low,close,volume", *rows]) + "\n")


def test_epoch_seconds_in_a_milliseconds_file_are_reported_not_dated_1970(tmp_path):
    """A vendor that moved from seconds to milliseconds: the first 30 of 200 daily rows in seconds
    were read as milliseconds, 30 rows of 19 January 1970 kept with a clean report (the outlier rule
    takes 1% of the rows at most)."""
    days = 1577836800 + 86400 * np.arange(200)
    path = tmp_path / "MIX.csv"
    _epoch_file(path, [int(t) if i < 30 else int(t) * 1000 for i, t in enumerate(days)])
    assert _rules(path) == {"bad_timestamp": list(range(2, 32))}
    frames, _ = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    assert frames["MIX"]["timestamp"].min() == pd.Timestamp(int(days[30]), unit="s", tz="UTC")
    # a history in milliseconds from 1971 (numbers below 1e11 until March 1973) is one span: read whole
    long = pd.bdate_range("1971-01-01", "1980-12-31", tz="UTC")
    _epoch_file(tmp_path / "OLD.csv", [t.value // 10**6 for t in long])
    assert _rules(tmp_path / "OLD.csv") == {}
