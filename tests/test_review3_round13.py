"""A file without open/high/low: with Close and Adj Close it keeps the rows whose Close cell is empty (their
close is Adj Close, which nothing needs to scale), and a bad close is named in column 'close' (not in the
open taken from it). ``bench ett`` refuses a dataset or horizon named twice before any cell runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import DataConfig
from hftraining.data.rows import RowsNeeded
from hftraining.data.sources import load_and_validate
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows import ett


def close_only(path: Path, n: int = 200) -> pd.DataFrame:
    """Date, Close, Adj Close, Volume (no open/high/low), the Close cell of line 12 empty."""
    f = synth_ohlcv(n, seed=3, start="2020-01-06")
    table = pd.DataFrame({"Date": f["timestamp"].dt.strftime("%Y-%m-%d"), "Close": f["close"].astype(object),
                          "Adj Close": f["close"] * 0.9, "Volume": f["volume"]})
    table.loc[10, "Close"] = ""
    table.to_csv(path, index=False)
    return table


@pytest.mark.parametrize("policy", ["drop", "ffill", "error"])
def test_an_empty_close_beside_its_adj_close_in_a_file_without_open_high_low_is_kept(tmp_path, policy, capsys):
    """Under price_adjustment=adjusted the close is Adj Close; without open/high/low there is no ratio to take,
    so the row of an empty Close is a whole bar. It was dropped (``drop``), given the day before's close
    (``ffill``) or refused (``error``) as a NaN of the close."""
    table = close_only(tmp_path / "AEM.csv")
    d = DataConfig(data_dir=str(tmp_path), cache_dir=None, invalid_values=policy)
    frames, report = load_and_validate(d, RowsNeeded.of(d))
    (rep,) = report["files"]
    assert rep["rules"] == {} and rep["rows_kept"] == 200
    assert rep["close_column"]["used"] == "Adj Close"
    np.testing.assert_allclose(frames["AEM"]["close"], table["Adj Close"], rtol=1e-12)
    assert frames["AEM"]["close"].iloc[10] == pytest.approx(table["Adj Close"].iloc[10], rel=1e-12)
    assert main(["data", "check", str(tmp_path / "AEM.csv"), "--set", f"invalid_values={policy}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == [] and out["files"][0]["rows_kept"] == 200


def test_an_empty_adj_close_in_a_file_without_open_high_low_is_still_the_close_s_defect(tmp_path, capsys):
    """The close is Adj Close: its empty cell is dropped and named as Adj Close's, whatever Close holds."""
    table = close_only(tmp_path / "AEM.csv")
    table.loc[10, "Close"] = 101.0
    table = table.astype({"Adj Close": object})
    table.loc[20, "Adj Close"] = ""
    table.to_csv(tmp_path / "AEM.csv", index=False)
    d = DataConfig(data_dir=str(tmp_path), cache_dir=None)
    _, report = load_and_validate(d, RowsNeeded.of(d))
    assert report["files"][0]["rules"]["nan_or_inf"]["rows"] == [22]
    assert main(["data", "check", str(tmp_path / "AEM.csv"), "--set", "invalid_values=error"]) == 2
    assert capsys.readouterr().err.strip() == (f"hftraining: error: {tmp_path / 'AEM.csv'}: line 22: nan or inf: empty "
                                               "cell in column 'adj_close' (data.invalid_values=error)")


@pytest.mark.parametrize("cell, said", [("abc", " 'abc'"), ("", ": empty cell"), ("-5", " -5.0")])
def test_a_bad_close_of_a_file_without_open_high_low_is_named_in_column_close(tmp_path, capsys, cell, said):
    """A file of Date, Close, Volume (an index, a fund) takes its open/high/low from the close. A bad close
    under ``invalid_values=error`` was named in column 'open', which the file does not have, and a close
    holding 'abc' was called an "empty cell" there."""
    f = synth_ohlcv(200, seed=3, start="2020-01-06")
    table = pd.DataFrame({"Date": f["timestamp"].dt.strftime("%Y-%m-%d"), "Close": f["close"].astype(object),
                          "Volume": f["volume"]})
    table.loc[10, "Close"] = cell
    path = tmp_path / "SPX.csv"
    table.to_csv(path, index=False)
    assert main(["data", "check", str(path), "--set", "invalid_values=error"]) == 2
    rule = {"abc": "non numeric", "": "nan or inf", "-5": "non positive price"}[cell]
    assert capsys.readouterr().err.strip() == (f"hftraining: error: {path}: line 12: {rule}{said} in column 'close' "
                                               "(data.invalid_values=error)")


def write_ett(path: Path, rows: int = 14400) -> None:
    """An hourly ETT-shaped file from 2016-07-01 00:00: a daily cycle plus a random walk in each channel."""
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    values = np.sin(2 * np.pi * t / 24)[:, None] + 0.05 * rng.normal(size=(rows, 7)).cumsum(0)
    dates = np.datetime64("2016-07-01T00:00", "s") + t * np.timedelta64(1, "h")
    lines = [",".join(ett.COLUMNS)]
    lines += [f"{str(d).replace('T', ' ')}," + ",".join(f"{v:.4f}" for v in row) for d, row in zip(dates, values)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "ETTh1", "ETTh1", "--horizon", "24"], "--dataset: ETTh1 given twice"),
    (["--dataset", "ETTh1", "--horizon", "24", "48", "24"], "--horizon: 24 given twice"),
])
def test_bench_ett_refuses_a_cell_named_twice_before_any_cell_runs(tmp_path, capsys, flags, message):
    """``--dataset ETTh1 ETTh1`` ran every cell of ETTh1 twice (a trained model's twice as long, its run
    folder overwritten) and printed two rows of one cell."""
    write_ett(tmp_path / "ETTh1.csv")
    out = tmp_path / "res" / "ett.json"
    rc = main(["bench", "ett", "--data", str(tmp_path), *flags, "--seq-len", "48", "--model", "linear",
               "--threads", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.strip() == f"hftraining: error: {message}; name each once"
    assert "ETTh1 H=24" not in captured.out and not out.exists()
