"""Hive datasets as pandas and pyarrow write them, and the files of one ``symbol=`` folder read as one table:
a padded symbol column written with ``partition_cols`` names the symbols a long file of the same rows names; the
folder pyarrow writes null symbols into (``__HIVE_DEFAULT_PARTITION__``) is rows without a symbol, reported as a long
file's are, not a symbol of that name; a folder name that is not UTF-8 once decoded is a one-line error, as pyarrow
refuses it; a folder's files that differ in a column that is read (a ``Time`` beside ``Date``, Investing.com's
``Price``) or hold dates beside date-times are refused in one line, and int64 volumes beside fractional ones are read
as floats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.sources import load_and_validate


def bars(n: int = 120, seed: int = 0, freq: str = "B", start: str = "2021-01-04") -> pd.DataFrame:
    """``n`` bars of a random walk: Date, Open, High, Low, Close, Volume."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"Date": pd.date_range(start, periods=n, freq=freq), "Open": close * 1.001,
                         "High": close * 1.01, "Low": close * 0.99, "Close": close,
                         "Volume": rng.integers(1_000, 9_000, n)})


def load(path: Path, **settings) -> tuple[dict[str, pd.DataFrame], dict]:
    return load_and_validate(DataConfig(data_dir=str(path), **settings))


def test_padded_symbols_written_with_partition_cols_are_the_long_files_symbols(tmp_path):
    # a database's CHAR(8) symbol column, saved both ways
    df = pd.concat([bars(seed=i).assign(symbol=s.ljust(8)) for i, s in enumerate(["AEM", "ALNY"])], ignore_index=True)
    df.to_parquet(tmp_path / "long.parquet", index=False)
    df.to_parquet(tmp_path / "ds", partition_cols=["symbol"])
    assert "symbol=AEM%20%20%20%20%20" in os.listdir(tmp_path / "ds")
    long_frames, _ = load(tmp_path / "long.parquet")
    ds_frames, _ = load(tmp_path / "ds")
    assert sorted(ds_frames) == sorted(long_frames) == ["AEM", "ALNY"]
    for s in ("AEM", "ALNY"):
        pd.testing.assert_frame_equal(ds_frames[s].reset_index(drop=True), long_frames[s].reset_index(drop=True))
    picked, _ = load(tmp_path / "ds", symbols=["AEM"])
    assert list(picked) == ["AEM"] and len(picked["AEM"]) == 120


def test_null_symbols_written_with_partition_cols_are_rows_without_a_symbol(tmp_path, capsys):
    df = pd.concat([bars(seed=i).assign(symbol=s) for i, s in enumerate(["AEM", "ALNY"])], ignore_index=True)
    df.loc[df.index[:7], "symbol"] = None  # seven rows without a symbol
    df.to_parquet(tmp_path / "long.parquet", index=False)
    df.to_parquet(tmp_path / "ds", partition_cols=["symbol"])
    assert "symbol=__HIVE_DEFAULT_PARTITION__" in os.listdir(tmp_path / "ds")
    frames, rep = load(tmp_path / "ds")
    long_frames, long_rep = load(tmp_path / "long.parquet")
    assert sorted(frames) == sorted(long_frames) == ["AEM", "ALNY"]
    assert rep["rows_in"] == long_rep["rows_in"] == 240 and rep["rows_kept"] == long_rep["rows_kept"] == 233
    nameless = [r for r in rep["files"] if r["file"].endswith("symbol=__HIVE_DEFAULT_PARTITION__")]
    assert len(nameless) == 1 and nameless[0]["rules"]["missing_symbol"]["dropped"] == 7
    assert nameless[0]["rows_kept"] == 0
    # data check: the same, exit 0, no symbol of that name
    code = cli.main(["data", "check", str(tmp_path / "ds"), "--json", "--set", "min_rows=1"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert sum(r["rules"].get("missing_symbol", {}).get("dropped", 0) for r in json.loads(out)["files"]) == 7


@pytest.mark.parametrize("name", ["%20", ""])
def test_blank_partition_folder_names_no_symbol(tmp_path, name):
    (tmp_path / "ds" / "symbol=AEM").mkdir(parents=True)
    bars().to_parquet(tmp_path / "ds" / "symbol=AEM" / "part-0.parquet", index=False)
    (tmp_path / "ds" / f"symbol={name}").mkdir()
    bars(30, seed=2).to_parquet(tmp_path / "ds" / f"symbol={name}" / "part-0.parquet", index=False)
    frames, rep = load(tmp_path / "ds")
    assert list(frames) == ["AEM"]
    assert rep["rows_in"] == 150 and rep["rows_kept"] == 120 and rep["rows_dropped"] == 30


def test_partition_name_not_utf8_once_decoded_is_one_line(tmp_path, capsys):
    (tmp_path / "ds" / "symbol=%E9").mkdir(parents=True)  # Latin-1's é, %-escaped: no UTF-8 text
    bars().to_parquet(tmp_path / "ds" / "symbol=%E9" / "part-0.parquet", index=False)
    with pytest.raises(DataError, match=r"symbol=%E9: the folder's name is not UTF-8 text"):
        load(tmp_path / "ds")
    code = cli.main(["data", "check", str(tmp_path / "ds"), "--set", "min_rows=1"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "symbol=%E9" in err


def _two_files(folder: Path, first: pd.DataFrame, second: pd.DataFrame) -> None:
    folder.mkdir(parents=True)
    first.to_parquet(folder / "part-0.parquet", index=False)
    second.to_parquet(folder / "part-1.parquet", index=False)


@pytest.mark.parametrize("order", ["time_added", "time_dropped"])
def test_partition_files_differing_by_a_time_column_are_refused(tmp_path, order):
    hours = bars(200, freq="h", start="2024-03-04 09:00")
    split = hours.assign(Date=hours["Date"].dt.strftime("%Y-%m-%d"), Time=hours["Date"].dt.strftime("%H:%M:%S"))
    whole = hours.assign(Date=hours["Date"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    a, b = (whole, split) if order == "time_added" else (split, whole)
    _two_files(tmp_path / "ds" / "symbol=AEM", a.iloc[:100], b.iloc[100:])
    with pytest.raises(DataError, match=r"part-1\.parquet: its columns differ from those of part-0\.parquet.*'Time'"):
        load(tmp_path / "ds")


def test_partition_files_differing_by_price_are_refused(tmp_path):
    whole = bars(200)
    _two_files(tmp_path / "ds" / "symbol=AEM", whole.iloc[:100].rename(columns={"Close": "Price"}),
               whole.iloc[100:].drop(columns="Close"))
    with pytest.raises(DataError, match=r"part-1\.parquet: its columns differ .*'Price'"):
        load(tmp_path / "ds")


def test_partition_files_of_dates_beside_date_times_are_refused(tmp_path):
    hours = bars(200, freq="h", start="2024-03-04 09:00")
    _two_files(tmp_path / "ds" / "symbol=AEM", hours.iloc[:100].assign(Date=hours["Date"].iloc[:100].dt.date),
               hours.iloc[100:])
    with pytest.raises(DataError, match=r"part-1\.parquet: column 'Date' holds timestamp.* and date32\[day\] in "
                                        r"part-0\.parquet"):
        load(tmp_path / "ds")


def test_partition_files_of_integer_and_fractional_volumes_read_as_floats(tmp_path):
    whole = bars(200)
    frac = whole.iloc[100:].assign(Volume=whole["Volume"].iloc[100:] + 0.5)
    _two_files(tmp_path / "ds" / "symbol=AEM", whole.iloc[:100], frac)
    frames, rep = load(tmp_path / "ds")
    assert len(frames["AEM"]) == 200 and rep["rows_dropped"] == 0
    np.testing.assert_allclose(frames["AEM"]["volume"].to_numpy(),
                               np.r_[whole["Volume"].iloc[:100].to_numpy(), frac["Volume"].to_numpy()])

