"""Validation of files with Close and Adj Close, and of files with an empty price column, as a user
meets them in ``hftraining data check``: the report and the error line name the file's row, the rule
and the column that hold the defect, never a column the adjustment derived from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data.validate import validate_frame

N = 200  # data rows (more than one window needs)


def yahoo_rows() -> pd.DataFrame:
    """A Yahoo download: Close and Adj Close (half of Close: a 2:1 split after the last row), all as text."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, N)))
    return pd.DataFrame({
        "Date": pd.date_range("2024-01-01", periods=N, freq="D").strftime("%Y-%m-%d"),
        "Open": close * 0.995, "High": close * 1.01, "Low": close * 0.99,
        "Close": close, "Adj Close": close / 2, "Volume": 1000 + np.arange(N),
    }).astype(str)


def write(tmp_path: Path, df: pd.DataFrame, name: str = "ADJ.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def run(capsys, path: Path, *sets: str) -> tuple[int, dict, str]:
    """``data check --json`` with ``--set`` of each of ``sets`` → (exit code, the file's report or {}, stderr)."""
    args = ["data", "check", str(path), "--json"]
    for s in sets:
        args += ["--set", s]
    code = cli.main(args)
    out, err = capsys.readouterr()
    files = json.loads(out)["files"]
    return code, (files[0] if files else {}), err


def test_empty_adj_close_is_named_as_adj_close_not_open(tmp_path, capsys):
    """An empty Adj Close cell (line 12 of the file) stops ``invalid_values=error`` with that line and the
    column ``adj_close``: it named ``'open'``, whose cell is fine (the ratio Adj Close / Close made it NaN)."""
    df = yahoo_rows()
    df.loc[10, "Adj Close"] = ""
    path = write(tmp_path, df)
    code, rep, err = run(capsys, path, "invalid_values=error")
    assert code == 2 and rep == {}
    (line,) = err.strip().splitlines()
    assert line.startswith(f"hftraining: error: {path}: line 12: nan or inf") and "column 'adj_close'" in line, line
    assert "'open'" not in line


def test_zero_close_beside_adj_close_is_a_non_positive_price_of_close(tmp_path, capsys):
    """A Close of 0 beside a valid Adj Close (line 32) is ``non_positive_price`` of ``close`` in the report and in
    the error line: it was ``nan_or_inf`` of ``open`` (Adj Close / 0 = Inf scaled open/high/low)."""
    df = yahoo_rows()
    df.loc[30, "Close"] = "0"
    path = write(tmp_path, df)
    code, rep, err = run(capsys, path)
    assert code == 0, err
    assert rep["rules"] == {"non_positive_price": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [32]}}
    assert (rep["rows_in"], rep["rows_kept"], rep["rows_dropped"]) == (N, N - 1, 1)
    assert path.read_text().splitlines()[31].split(",")[4] == "0"  # line 32 of the file holds that Close
    code, _, err = run(capsys, path, "invalid_values=error")
    assert code == 2
    assert err.strip() == (f"hftraining: error: {path}: line 32: non positive price 0.0 in column 'close' "
                           "(data.invalid_values=error)")


def test_text_in_adj_close_is_listed_under_adj_close(tmp_path, capsys):
    """The report's ``non_numeric`` columns name the file's column that holds the text: Adj Close's ``n.a.``
    (line 7) under ``adj_close``, Close's ``x`` (line 9) under ``close``; both were listed as ``close``."""
    df = yahoo_rows()
    df.loc[5, "Adj Close"] = "n.a."
    df.loc[7, "Close"] = "x"
    path = write(tmp_path, df)
    code, rep, err = run(capsys, path)
    assert code == 0, err
    e = rep["rules"]["non_numeric"]
    assert (e["dropped"], e["rows"]) == (2, [7, 9])
    assert e["columns"] == {"adj_close": {"count": 1, "line": 7, "value": "n.a."},
                            "close": {"count": 1, "line": 9, "value": "x"}}


def test_ffill_of_a_row_without_both_closes_fills_its_whole_bar():
    """``invalid_values=ffill``: a row whose Adj Close is empty takes the previous kept row's adjusted
    close and its adjusted open/high/low (never its own unadjusted ones), and is listed as repaired."""
    df = yahoo_rows()
    df.loc[10, "Adj Close"] = ""
    frame, rep = validate_frame(df.rename(columns={"Date": "timestamp", "Open": "open", "High": "high",
                                                   "Low": "low", "Close": "close", "Adj Close": "adj_close",
                                                   "Volume": "volume"}),
                                DataConfig(invalid_values="ffill"), "ADJ.csv")
    d = rep.to_dict()
    assert d["rules"] == {"nan_or_inf": {"dropped": 0, "repaired": 1, "flagged": 0, "rows": [12]}}
    assert len(frame) == N
    for col in ("open", "high", "low", "close"):
        assert frame[col].iloc[10] == frame[col].iloc[9], col
    assert frame["close"].iloc[9] == float(df["Adj Close"].iloc[9])


def test_empty_price_column_is_named_when_no_row_is_left(tmp_path, capsys):
    """A file whose Open column holds no value at all: every row is dropped, and the one error line says which
    column is empty (it said ``nan_or_inf 200`` only)."""
    df = yahoo_rows().drop(columns="Adj Close")
    df["Open"] = ""
    path = write(tmp_path, df, "EMPTY.csv")
    code, rep, err = run(capsys, path)
    assert code == 2 and rep == {}
    assert err.strip() == (f"hftraining: error: {path}: no usable rows (all {N} dropped: nan_or_inf {N}); "
                           "column 'open' holds no value in any row")
