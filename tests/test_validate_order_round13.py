"""Rows out of order, and what the report keeps of a file skipped for too few rows, as a user meets them
in ``hftraining data check`` and a run's ``data_report.json``.

The rows ``data.unsorted_timestamps`` judges are the fewest whose removal leaves the others in time
order: one misdated row is that one row, whatever the policy, not the good rows after it. A file with
too few rows is skipped with its whole report (every line it dropped, under its rule), and the
run's totals count its rows. The error lines of ``duplicate_timestamps=error`` and of an empty cell
under ``invalid_values=error`` say what the user must look for in the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.pipeline import prepare
from hftraining.data.rows import RowsNeeded
from hftraining.data.sources import load_and_validate
from hftraining.data.synth import synth_ohlcv

N = 1560  # daily rows, 2020-01-06 to 2025-12-26


def bars(n: int = N, seed: int = 3) -> pd.DataFrame:
    f = synth_ohlcv(n, seed=seed, start="2020-01-06")
    return f.assign(timestamp=f["timestamp"].dt.strftime("%Y-%m-%d"))


def load(path: Path, **policy) -> tuple[pd.DataFrame, dict]:
    d = DataConfig(data_dir=str(path), cache_dir=None, **policy)
    frames, report = load_and_validate(d, RowsNeeded.of(d))
    (frame,) = frames.values()
    (rep,) = report["files"]
    return frame, rep


def dates(df: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(df["timestamp"])).tz_localize("UTC").as_unit("ns").asi8


def with_misdated_row(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The clean bars with one row dated 2031 at line 102 (the header is line 1): within the file's
    span of its other rows, so not an outlier_timestamp."""
    clean = bars()
    misdated = clean.iloc[[0]].assign(timestamp="2031-03-04")
    path = tmp_path / "AEM.csv"
    pd.concat([clean.iloc[:100], misdated, clean.iloc[100:]]).to_csv(path, index=False)
    return path, clean


def test_one_misdated_row_is_the_one_row_out_of_order_under_every_policy(tmp_path, capsys):
    """``drop`` dropped the 1,460 good rows after a row dated 2031 and kept that row; ``sort`` listed
    those 1,460 rows as repaired; ``error`` named line 103. The misdated row at line 102 is the one
    out of order: dropped alone, moved alone, named."""
    path, clean = with_misdated_row(tmp_path)
    frame, rep = load(path, unsorted_timestamps="drop")
    assert rep["rules"]["unsorted_timestamp"] == {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [102]}
    assert "outlier_timestamp" not in rep["rules"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, dates(clean))
    np.testing.assert_allclose(frame["close"], clean["close"], rtol=1e-12)

    frame, rep = load(path, unsorted_timestamps="sort")
    assert rep["rules"]["unsorted_timestamp"] == {"dropped": 0, "repaired": 1, "flagged": 0, "rows": [102]}
    assert rep["rows_kept"] == N + 1 and frame["timestamp"].iloc[-1] == pd.Timestamp("2031-03-04", tz="UTC")
    np.testing.assert_array_equal(frame["timestamp"].array.asi8[:-1], dates(clean))

    assert cli.main(["data", "check", str(path), "--set", "unsorted_timestamps=error"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"hftraining: error: {path}: line 102: timestamp later than a row below it "
                    "(data.unsorted_timestamps=error)")


def test_a_row_moved_up_three_places_is_one_row_out_of_place(tmp_path, capsys):
    """A row moved up before three rows dated earlier than it: that row is out of place (dropped,
    moved, named at its line), not the three rows in order below it."""
    clean = bars(200)
    order = [*range(40), 43, 40, 41, 42, *range(44, 200)]  # line 42 holds the bar of line 45
    path = tmp_path / "AEM.csv"
    clean.iloc[order].to_csv(path, index=False)
    frame, rep = load(path, unsorted_timestamps="drop")
    assert rep["rules"]["unsorted_timestamp"] == {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [42]}
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, np.delete(dates(clean), 43))
    frame, rep = load(path)
    assert rep["rules"]["unsorted_timestamp"] == {"dropped": 0, "repaired": 1, "flagged": 0, "rows": [42]}
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, dates(clean))
    assert cli.main(["data", "check", str(path), "--set", "unsorted_timestamps=error"]) == 2
    assert capsys.readouterr().err.strip() == (f"hftraining: error: {path}: line 42: timestamp later than a row below "
                                               "it (data.unsorted_timestamps=error)")


def test_a_newest_first_file_with_a_misdated_row_is_read_in_reverse_and_loses_that_row_only(tmp_path, capsys):
    """A newest-first file is still read from its end (each row the reversal moves listed as repaired);
    of its rows the policy judges the misdated one only: ``drop`` dropped every row read after it."""
    clean = bars(300)
    new = clean.iloc[::-1]
    misdated = new.iloc[[0]].assign(timestamp="2021-06-01")  # after the file's last date: at line 52, among older rows
    path = tmp_path / "AEM.csv"
    pd.concat([new.iloc[:50], misdated, new.iloc[50:]]).to_csv(path, index=False)
    frame, rep = load(path, unsorted_timestamps="drop")
    assert rep["newest_first"] == ["AEM"] and rep["rows_kept"] == 300
    entry = rep["rules"]["unsorted_timestamp"]
    assert (entry["dropped"], entry["repaired"]) == (1, 299) and 52 in entry["rows"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, dates(clean))
    assert cli.main(["data", "check", str(path), "--set", "unsorted_timestamps=error"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hftraining: error: {path}: line 52: timestamp later than a row above it (the file lists its rows "
        "newest first) (data.unsorted_timestamps=error)")


def short_file(folder: Path) -> Path:
    """A 150-row file whose first 60 dates are "n/a" (lines 2-61): 90 rows kept, fewer than one window needs."""
    raw = bars(150)
    raw.loc[:59, "timestamp"] = "n/a"
    folder.mkdir(exist_ok=True)
    path = folder / "SHORT.csv"
    raw.to_csv(path, index=False)
    return path


def test_data_check_keeps_the_rows_of_a_file_skipped_for_too_few_rows(tmp_path, capsys):
    """``data check --json`` of a file with too few rows gave its error line and no report: which 60
    lines were dropped, and why, was lost. Its entry is there, status ``skipped``, every dropped line
    under its rule, beside the one error line (exit 2)."""
    path = short_file(tmp_path)
    assert cli.main(["data", "check", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"hftraining: error: {path}: too few rows: 90 rows kept (60 dropped: bad_timestamp 60)")
    (rep,) = json.loads(out)["files"]
    assert rep["status"] == "skipped" and rep["file"] == str(path)
    assert rep["rules"]["bad_timestamp"] == {"dropped": 60, "repaired": 0, "flagged": 0, "rows": list(range(2, 62))}
    assert rep["rules"]["too_few_rows"]["dropped"] == 90
    assert (rep["rows_in"], rep["rows_kept"], rep["rows_dropped"]) == (150, 0, 150)
    assert rep["skipped_symbols"] == {"SHORT": "90 rows kept (60 dropped: bad_timestamp 60), 98 needed for one window"}
    assert rep["too_few_rows"] == {"SHORT": line.removeprefix("hftraining: error: ")}


@pytest.mark.parametrize("cache", [False, True])
def test_a_run_s_report_keeps_a_skipped_file_and_its_totals_add_up(tmp_path, cache):
    """A run's data_report.json (the prepared data's report, built through the feature store or in memory)
    listed a skipped file under ``too_few_rows`` only: its rows were missing from ``files`` and from
    the run's ``rows_in``. Now the file is in ``files`` with its rows, and rows_in = kept + dropped."""
    data = tmp_path / "data"
    short_file(data)
    bars(300, seed=4).to_csv(data / "LONG.csv", index=False)
    d = DataConfig(data_dir=str(data), cache_dir=str(tmp_path / "cache") if cache else None)
    report = prepare(d).report
    files = {Path(f["file"]).name: f for f in report["files"]}
    assert sorted(files) == ["LONG.csv", "SHORT.csv"]
    assert files["LONG.csv"]["status"] == "ok" and files["SHORT.csv"]["status"] == "skipped"
    assert files["SHORT.csv"]["rules"]["bad_timestamp"]["rows"] == list(range(2, 62))
    assert report["rows_in"] == 450 and report["rows_kept"] == 300 and report["rows_dropped"] == 150
    assert report["rows_in"] == report["rows_kept"] + report["rows_dropped"]
    assert "98 needed for one window" in report["too_few_rows"]["SHORT"] and str(data / "SHORT.csv") in report["too_few_rows"]["SHORT"]


def test_a_long_file_whose_symbols_are_all_too_short_reports_each_of_them(tmp_path):
    """A long file of two symbols, both too short, beside a usable file: each symbol is named under
    ``too_few_rows`` (only the first was, under the file's name, so ``data.symbols`` naming the other
    was "not found in the data"), and the file's report lists both symbols' rows."""
    a, b = bars(60).assign(symbol="AAA"), bars(50, seed=5).assign(symbol="BBB")
    pd.concat([a, b]).to_csv(tmp_path / "panel.csv", index=False)
    bars(300, seed=4).to_csv(tmp_path / "LONG.csv", index=False)
    d = DataConfig(data_dir=str(tmp_path), cache_dir=None)
    frames, report = load_and_validate(d, RowsNeeded.of(d))
    assert list(frames) == ["LONG"] and sorted(report["too_few_rows"]) == ["AAA", "BBB"]
    assert f"{tmp_path / 'panel.csv'}: too few rows for symbol BBB: 50 rows kept" in report["too_few_rows"]["BBB"]
    panel = next(f for f in report["files"] if f["file"] == str(tmp_path / "panel.csv"))
    assert panel["status"] == "skipped" and panel["rules"]["too_few_rows"]["dropped"] == 110
    assert sorted(panel["skipped_symbols"]) == ["AAA", "BBB"]
    assert report["rows_in"] == 410 == report["rows_kept"] + report["rows_dropped"]
    d = DataConfig(data_dir=str(tmp_path), cache_dir=None, symbols=["BBB", "LONG"])
    frames, report = load_and_validate(d, RowsNeeded.of(d))
    assert list(frames) == ["LONG"] and list(report["too_few_rows"]) == ["BBB"]


def test_the_duplicate_timestamp_error_names_both_lines_and_the_timestamp(tmp_path, capsys):
    """``duplicate_timestamps=error`` said "line 7: duplicate timestamp": of which line, and when? It
    names the line, the line it repeats and their timestamp."""
    raw = bars(150)
    path = tmp_path / "AEM.csv"
    pd.concat([raw.iloc[:5], raw.iloc[[4]].assign(close=raw["close"].iloc[4] * 1.01), raw.iloc[5:]]).to_csv(path, index=False)
    assert cli.main(["data", "check", str(path), "--set", "duplicate_timestamps=error"]) == 2
    stamp = pd.Timestamp(raw["timestamp"].iloc[4], tz="UTC").isoformat()
    assert capsys.readouterr().err.strip() == (f"hftraining: error: {path}: line 7: duplicate timestamp {stamp} of "
                                               "line 6 (data.duplicate_timestamps=error)")


@pytest.mark.parametrize("cell, said", [("", "empty cell"), ("-", "empty cell '-'")])
def test_an_empty_cell_is_called_empty_in_the_error_line(tmp_path, capsys, cell, said):
    """An empty close (line 12) under ``invalid_values=error`` read "nan or inf nan in column 'close'":
    the file holds no "nan" there. A cell that holds a value is quoted as it was."""
    raw = bars(150).astype({"close": object})
    path = tmp_path / "AEM.csv"
    for value, words in ((cell, f": {said}"), ("inf", " inf")):
        raw.loc[10, "close"] = value
        raw.to_csv(path, index=False)
        assert cli.main(["data", "check", str(path), "--set", "invalid_values=error"]) == 2
        assert capsys.readouterr().err.strip() == (f"hftraining: error: {path}: line 12: nan or inf{words} in column "
                                                   "'close' (data.invalid_values=error)")
