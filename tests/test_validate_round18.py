"""Ingest of Parquet files as other tools write them: a long file's symbols padded with blanks (a database's
fixed-width column) name the same symbols as the same rows in a long CSV file; a hive dataset written by
pandas (``partition_cols``) names its symbols as pandas reads them back (``symbol=BTC%2FUSDT`` is ``BTC/USDT``);
the files of one ``symbol=`` folder with other columns from one another are a one-line error, not a later
file's columns dropped; a timestamp column of durations (timedelta) is a one-line error, not rows dated 1970."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.sources import load_and_validate

SYMBOLS = ("AEM", "ALNY")


def bars(n: int = 120, seed: int = 0, start: str = "2021-01-04") -> pd.DataFrame:
    """``n`` daily bars of a random walk: Date, Open, High, Low, Close, Volume."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"Date": pd.date_range(start, periods=n, freq="B"), "Open": close * 1.001,
                         "High": close * 1.01, "Low": close * 0.99, "Close": close,
                         "Volume": rng.integers(1_000, 9_000, n)})


def long_table() -> pd.DataFrame:
    return pd.concat([bars(seed=i).assign(symbol=s) for i, s in enumerate(SYMBOLS)], ignore_index=True)


def load(path: Path, **settings) -> tuple[dict[str, pd.DataFrame], dict]:
    return load_and_validate(DataConfig(data_dir=str(path), **settings))


@pytest.mark.parametrize("pad", ["fixed", "some"])
def test_long_parquet_symbols_padded_with_blanks_are_the_csv_symbols(tmp_path, pad):
    df = long_table()
    if pad == "fixed":  # CHAR(8): every symbol padded
        df["symbol"] = df["symbol"].str.ljust(8)
    else:  # a few rows of AEM written as "AEM " by another export
        df.loc[df.index[10:20], "symbol"] = "AEM "
    df.to_parquet(tmp_path / "long.parquet", index=False)
    df.to_csv(tmp_path / "long.csv", index=False)
    pq_frames, pq_rep = load(tmp_path / "long.parquet")
    csv_frames, _ = load(tmp_path / "long.csv")
    assert sorted(pq_frames) == sorted(csv_frames) == list(SYMBOLS)
    for s in SYMBOLS:  # every row of each symbol, in one history
        assert len(pq_frames[s]) == 120
        pd.testing.assert_frame_equal(pq_frames[s].reset_index(drop=True), csv_frames[s].reset_index(drop=True))
    assert pq_rep["rows_in"] == pq_rep["rows_kept"] == 240 and not pq_rep["too_few_rows"]
    picked, _ = load(tmp_path / "long.parquet", symbols=["AEM"])
    assert list(picked) == ["AEM"] and len(picked["AEM"]) == 120


def test_pandas_hive_dataset_names_symbols_as_pandas_reads_them(tmp_path):
    df = long_table().replace({"symbol": {"AEM": "BTC/USDT", "ALNY": "BRK B"}})
    df.to_parquet(tmp_path / "ds", partition_cols=["symbol"])
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["symbol=BRK%20B", "symbol=BTC%2FUSDT"]
    frames, _ = load(tmp_path / "ds")
    assert sorted(frames) == sorted(pd.read_parquet(tmp_path / "ds")["symbol"].astype(str).unique()) \
        == ["BRK B", "BTC/USDT"]
    picked, _ = load(tmp_path / "ds", symbols=["BTC/USDT"])
    assert list(picked) == ["BTC/USDT"] and len(picked["BTC/USDT"]) == 120


def test_partition_files_with_other_columns_are_one_line_naming_them(tmp_path, capsys):
    data = tmp_path / "ds"
    whole = bars(200)
    (data / "symbol=AEM").mkdir(parents=True)
    # the first file of prices without open/high/low, the appended one with them and Adj Close
    whole.iloc[:100][["Date", "Close", "Volume"]].to_parquet(data / "symbol=AEM" / "part-0.parquet", index=False)
    whole.iloc[100:].assign(**{"Adj Close": whole["Close"].iloc[100:] * 0.5}).to_parquet(
        data / "symbol=AEM" / "part-1.parquet", index=False)
    (data / "symbol=ALNY").mkdir()
    bars(150, seed=3).to_parquet(data / "symbol=ALNY" / "part-0.parquet", index=False)
    with pytest.raises(DataError, match=r"part-1\.parquet: its columns differ from those of part-0\.parquet") as e:
        load(data)
    assert "'Adj Close', 'High', 'Low', 'Open'" in str(e.value) and "\n" not in str(e.value)
    code = cli.main(["data", "check", str(data), "--json", "--set", "min_rows=1"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "symbol=AEM/part-1.parquet" in lines[0] and "'High'" in lines[0]
    reports = json.loads(out)["files"]  # the other symbol is checked whole
    assert [(Path(r["file"]).name, r["rows_kept"]) for r in reports] == [("symbol=ALNY", 150)]


def test_partition_files_with_the_same_columns_read_together(tmp_path):
    whole = bars(200)
    (tmp_path / "ds" / "symbol=AEM").mkdir(parents=True)
    whole.iloc[:100].to_parquet(tmp_path / "ds" / "symbol=AEM" / "part-0.parquet", index=False)
    # the same columns in another order and volume as floats: one table
    whole.iloc[100:].astype({"Volume": float})[["Date", "Close", "Open", "High", "Low", "Volume"]].to_parquet(
        tmp_path / "ds" / "symbol=AEM" / "part-1.parquet", index=False)
    frames, rep = load(tmp_path / "ds")
    assert len(frames["AEM"]) == 200 and rep["files"][0]["derived_columns"] == []
    np.testing.assert_allclose(frames["AEM"]["open"].to_numpy(), whole["Open"].to_numpy())


@pytest.mark.parametrize("layout", ["alone", "beside_date"])
def test_timestamps_of_durations_are_one_line(tmp_path, capsys, layout):
    df = bars(150)
    if layout == "alone":  # "0 days", "1 days", ...: no date at all
        df["Date"] = pd.to_timedelta(np.arange(len(df)), unit="D")
    else:  # a Date and a Time of day that pandas keeps as a timedelta (a MySQL TIME read by read_sql)
        hours = pd.date_range("2024-03-04 09:30", periods=len(df), freq="h")
        df["Date"], df["Time"] = hours.date, hours - hours.normalize()
    path = tmp_path / "AEM.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(DataError, match="timestamp column holds durations"):
        load(path)
    code = cli.main(["data", "check", str(path), "--set", "min_rows=1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "AEM.parquet: the timestamp column holds durations (timedelta)" in err
