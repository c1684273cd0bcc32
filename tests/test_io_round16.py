"""Price files as users have them: a line of spaces or a tab between rows is a blank line (it was a
``bad_timestamp``), and a link that leads back into itself is named as a link loop (it was "a link to X,
which is not there", or a RuntimeError traceback from ``data check`` of its folder or glob)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.data.sources import Unit, read_unit

FEATURES = ["log_return_1", "rsi_14"]
HEADER = "Date,Open,High,Low,Close,Volume\n"


def _config(**kw) -> DataConfig:
    return DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, cache_dir=None, **kw)


def _bars(n: int = 12) -> list[str]:
    days = pd.bdate_range("2024-01-02", periods=n)
    return [f"{d:%Y-%m-%d},{100 + i}.5,{102 + i},{99 + i},{101 + i}.25,{1000 * (i + 1)}\n" for i, d in enumerate(days)]


def _read(path):
    frames, report = read_unit(Unit("file", str(path)), _config())
    return frames, report


# ----------------------------------------------------------------------------- blank lines of white space


@pytest.mark.parametrize("blank", ["   ", "\t", " \t ", " , , ,,,", "\t\r"])
def test_a_line_of_white_space_is_a_blank_line_as_an_empty_one_is(tmp_path, blank):
    """An editor or a script that pads lines leaves ``"   "`` or a tab between rows (and at the end): each is
    dropped and reported as ``blank_line`` on its line, as an empty line is, and the bars read are the same."""
    bars = _bars()
    lines = [HEADER, *bars[:4], "{}\n", *bars[4:], "{}\n"]
    (tmp_path / "EMPTY.csv").write_text("".join(lines).format("", ""), newline="")
    (tmp_path / "SPACES.csv").write_text("".join(lines).format(blank, blank), newline="")
    want, want_rep = _read(tmp_path / "EMPTY.csv")
    got, rep = _read(tmp_path / "SPACES.csv")
    assert want_rep["rules"] == {"blank_line": {"dropped": 2, "repaired": 0, "flagged": 0, "rows": [6, 15]}}
    assert rep["rules"] == want_rep["rules"]
    assert (rep["rows_in"], rep["rows_kept"], rep["rows_dropped"]) == (14, 12, 2)
    pd.testing.assert_frame_equal(got["SPACES"], want["EMPTY"])


def test_a_line_of_white_space_in_a_decimal_comma_file_and_a_long_file_is_a_blank_line(tmp_path):
    """Every column of a decimal-comma file is read as text, and a long file's symbol column is text: a line of
    spaces there is a blank line too, not a row without a symbol or a bad timestamp."""
    german = tmp_path / "DAX.csv"
    german.write_text("Datum;Eröffn.;Hoch;Tief;Zuletzt;Vol.\n02.01.2024;16.750,5;16.800,25;16.700,75;16.780,5;1.234\n"
                      "  \n03.01.2024;16.780,5;16.850;16.760;16.820,5;2.345\n", encoding="utf-8")
    frames, rep = _read(german)
    assert rep["rules"] == {"blank_line": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [3]}}
    assert frames["DAX"]["close"].tolist() == [16780.5, 16820.5]
    long = tmp_path / "panel.csv"
    bars = _bars(3)
    long.write_text("symbol," + HEADER + "".join(f"{s},{b}" for s in ("AAA", "BBB") for b in bars[:2]).replace(
        f"BBB,{bars[0]}", f"BBB,{bars[0]}\t \n"), newline="")
    frames, rep = _read(long)
    assert rep["rules"] == {"blank_line": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [5]}}
    assert {s: len(f) for s, f in frames.items()} == {"AAA": 2, "BBB": 2}


def test_a_cell_of_spaces_in_a_row_of_values_is_still_read_as_before(tmp_path):
    """Only a line of nothing but white space is blank: a row whose date is spaces but that holds prices is a
    bad timestamp, as before."""
    bars = _bars()
    (tmp_path / "X.csv").write_text(HEADER + "".join(bars[:3]) + "   ,1,2,0.5,1.5,10\n" + "".join(bars[3:]), newline="")
    _, rep = _read(tmp_path / "X.csv")
    assert rep["rules"] == {"bad_timestamp": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [5]}}


# ----------------------------------------------------------------------------- link loops


def _prices(folder, *symbols: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sym in symbols:
        shutil.copy(sample_data_dir() / f"{sym}.csv", folder / f"{sym}.csv")


def test_a_link_loop_in_a_price_folder_is_named_as_a_loop(tmp_path, capsys):
    """``a.csv -> b.csv -> a.csv`` (or a link to itself) has no missing target to restore: it was named as
    "a link to b.csv, which is not there"."""
    folder = tmp_path / "prices"
    _prices(folder, "AEM")
    (folder / "NIO.csv").symlink_to("XPEV.csv")
    (folder / "XPEV.csv").symlink_to("NIO.csv")
    (folder / "SELF.csv").symlink_to("SELF.csv")
    assert cli.main(["data", "check", str(folder), "--json"]) == 2
    got = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in got["files"]] == [str(folder / "AEM.csv")]  # the others are still checked
    nio, self_, xpev = (folder / "NIO.csv", folder / "SELF.csv", folder / "XPEV.csv")
    assert got["errors"] == [
        f"{nio}: a link loop ({nio} -> {xpev} -> {nio}): point the link at the file itself, or remove it",
        f"{self_}: a link loop ({self_} -> {self_}): point the link at the file itself, or remove it",
        f"{xpev}: a link loop ({xpev} -> {nio} -> {xpev}): point the link at the file itself, or remove it",
    ]
    with pytest.raises(DataError, match=r"NIO\.csv: a link loop \(.*NIO\.csv -> .*XPEV\.csv -> .*NIO\.csv\)"):
        prepare(_config(data_dir=str(folder)))


@pytest.mark.parametrize("how", ["file", "glob", "folder"])
def test_data_check_of_a_link_loop_is_one_line_whichever_way_it_is_named(tmp_path, capsys, how):
    """``data check`` of a folder or a glob holding a loop stopped with a RuntimeError traceback ("Symlink
    loop from ..."), from telling the files it names apart."""
    folder = tmp_path / "prices"
    folder.mkdir()
    (folder / "LOOP.csv").symlink_to("../prices/LOOP.csv")
    spec = {"file": folder / "LOOP.csv", "glob": folder / "*.csv", "folder": folder}[how]
    assert cli.main(["data", "check", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    loop = folder / "LOOP.csv"
    assert err[-1] == (f"hftraining: error: {loop}: a link loop ({loop} -> {loop}): point the link at the file itself, "
                       "or remove it")


def test_a_link_to_a_missing_file_is_still_named_by_its_target(tmp_path):
    folder = tmp_path / "prices"
    _prices(folder, "AEM")
    (folder / "NIO.csv").symlink_to("ZED.csv")
    (folder / "ZED.csv").symlink_to(tmp_path / "drive" / "NIO.csv")
    with pytest.raises(DataError, match=r"NIO\.csv: a link to ZED\.csv, which is not there"):
        prepare(_config(data_dir=str(folder)))


# ----------------------------------------------------------------------------- exports as they come


def _lines(n: int = 12, sep: str = ",", end: str = "") -> list[str]:
    days = pd.bdate_range("2024-01-02", periods=n)
    return [sep.join([f"{d:%Y-%m-%d}", f"{100 + i}.5", f"{102 + i}", f"{99 + i}", f"{101 + i}.25", str(1000 * (i + 1))])
            + end + "\n" for i, d in enumerate(days)]


@pytest.mark.parametrize("sep", [",", ";"])
def test_data_lines_ending_in_a_delimiter_the_header_lacks_are_read(tmp_path, sep):
    """Exports that write a delimiter after every value but not after the header's last name: pandas took the
    dates for the rows' index and the file was "line 1 has 6 field(s), the data rows 7: remove any title ..."."""
    (tmp_path / "PLAIN.csv").write_text(HEADER.replace(",", sep) + "".join(_lines(sep=sep)), newline="")
    rows = _lines(sep=sep, end=sep)
    rows[5] = rows[5].replace(sep + "\n", "\n")  # a line without it is read too
    (tmp_path / "TRAIL.csv").write_text(HEADER.replace(",", sep) + "".join(rows), newline="")
    want, _ = _read(tmp_path / "PLAIN.csv")
    got, rep = _read(tmp_path / "TRAIL.csv")
    assert rep["rules"] == {} and rep["rows_kept"] == 12
    pd.testing.assert_frame_equal(got["TRAIL"], want["PLAIN"])
    assert got["TRAIL"]["close"].iloc[0] == 101.25 and got["TRAIL"]["volume"].iloc[-1] == 12000


def test_a_value_past_the_named_columns_is_named_by_its_line(tmp_path):
    rows = _lines(end=",")
    rows[7] = rows[7].replace(",\n", ",17\n")
    (tmp_path / "X.csv").write_text(HEADER + "".join(rows), newline="")
    with pytest.raises(DataError, match=r"X\.csv: line 9 has a value \('17'\) in field 7, past the 6 columns line 1 "
                                        r"names .*: name every column in line 1$"):
        _read(tmp_path / "X.csv")


def test_a_header_line_of_another_column_order_in_a_joined_file_is_an_error(tmp_path):
    """``cat a.csv b.csv`` of two exports that order the prices differently: the lines below the second header
    were read in the first one's order (opens as closes), with only the header line dropped as a bad timestamp."""
    first = HEADER + "".join(_lines(6))
    days = pd.bdate_range("2024-02-01", periods=6)
    second = "Date,Close,High,Low,Open,Volume\n" + "".join(
        f"{d:%Y-%m-%d},{101 + i}.25,{102 + i},{99 + i},{100 + i}.5,{1000 * (i + 1)}\n" for i, d in enumerate(days))
    (tmp_path / "JOINED.csv").write_text(first + second, newline="")
    with pytest.raises(DataError, match=r"JOINED\.csv: line 8 is a header line naming the columns in another order "
                                        r"\('Date,Close,High,Low,Open,Volume'\) than line 1 \('Date,Open,High,Low,Close,"
                                        r"Volume'\): .*write every part in one column order$"):
        _read(tmp_path / "JOINED.csv")
    # the same layout repeated (in another case) is dropped as before: its rows are read in their own order
    same = "date,open,high,low,close,volume\n" + "".join(_lines(12)[6:])
    (tmp_path / "SAME.csv").write_text(first + same, newline="")
    got, rep = _read(tmp_path / "SAME.csv")
    assert rep["rules"] == {"bad_timestamp": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [8]}}
    assert len(got["SAME"]) == 12


def test_yahoo_finance_table_names_with_footnote_marks_are_read(tmp_path):
    """Yahoo Finance's page of prices marks ``Close*`` and ``Adj Close**`` with footnotes; copied into a sheet
    and saved, the file was "missing column 'close'"."""
    days = pd.bdate_range("2024-01-02", periods=12)[::-1]
    body = "".join(f'"{d:%b %d, %Y}",{100 + i}.50,{102 + i}.00,{99 + i}.00,{101 + i}.25,{100 + i}.25,"1,{234 + i},567"\n'
                   for i, d in enumerate(days))
    (tmp_path / "AEM.csv").write_text("Date,Open,High,Low,Close*,Adj Close**,Volume\n" + body, newline="")
    frames, rep = read_unit(Unit("file", str(tmp_path / "AEM.csv")), _config(price_adjustment="raw"))
    f = frames["AEM"]
    assert len(f) == 12 and f["timestamp"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert f["close"].iloc[0] == 112.25 and f["volume"].iloc[0] == 1245567
    assert "adj_close" in io_read_columns(tmp_path / "AEM.csv")


def io_read_columns(path) -> list[str]:
    from hftraining.data.io import read_table

    return list(read_table(path).columns)


def _yf_frame(tickers: list[str], n: int = 8) -> pd.DataFrame:
    days = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=n), name="Date")
    one = pd.DataFrame({"Close": [101.25 + i for i in range(n)], "High": [102.0 + i for i in range(n)],
                        "Low": [99.0 + i for i in range(n)], "Open": [100.5 + i for i in range(n)],
                        "Volume": [1000 * (i + 1) for i in range(n)]}, index=days)
    out = pd.concat({t: one for t in tickers}, axis=1).swaplevel(0, 1, axis=1)
    out.columns.names = ["Price", "Ticker"]
    return out


def test_a_yfinance_download_saved_as_parquet_is_read_for_its_ticker(tmp_path):
    """``yf.download("AEM").to_parquet("AEM.parquet")`` keeps yfinance's two levels of columns: it was "missing
    column 'timestamp' (columns: ('Date', ''), ('Close', 'AEM'), ...)", though the same download as CSV is read."""
    _yf_frame(["AEM"]).to_parquet(tmp_path / "AEM.parquet")
    frames, rep = _read(tmp_path / "AEM.parquet")
    f = frames["AEM"]
    assert rep["rules"] == {} and len(f) == 8
    assert f["timestamp"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert f[["open", "close", "volume"]].iloc[1].tolist() == [101.5, 102.25, 2000.0]
    _yf_frame(["AEM", "WPM"]).to_parquet(tmp_path / "BOTH.parquet")
    with pytest.raises(DataError, match=r"BOTH\.parquet: a yfinance download of 2 tickers \(AEM, WPM\): write one file "
                                        r"per ticker, e\.g\. df\.xs\('AEM', axis=1, level='Ticker'\)\.to_parquet"):
        _read(tmp_path / "BOTH.parquet")


@pytest.mark.parametrize("order", ["date_first", "datetime_first"])
def test_a_date_column_beside_the_bars_time_stamps_does_not_merge_the_bars_of_a_day(tmp_path, order):
    """``Date`` (the day) beside ``Datetime`` (each bar's stamp): ``Date`` was read as the timestamp and all but
    each day's first intraday bar were dropped as duplicates."""
    ts = pd.date_range("2024-01-02 14:30", periods=30, freq="30min", tz="UTC")
    cols = ["Date", "Datetime"] if order == "date_first" else ["Datetime", "Date"]
    cells = {"Date": [f"{t:%Y-%m-%d}" for t in ts], "Datetime": [t.isoformat() for t in ts]}
    (tmp_path / "X.csv").write_text(",".join(cols) + ",Open,High,Low,Close,Volume\n" + "".join(
        f"{cells[cols[0]][i]},{cells[cols[1]][i]},{100 + i}.5,{102 + i},{99 + i},{101 + i}.25,{1000 * (i + 1)}\n"
        for i in range(len(ts))), newline="")
    frames, rep = _read(tmp_path / "X.csv")
    assert rep["rules"] == {}
    assert frames["X"]["timestamp"].tolist() == list(ts)


@pytest.mark.parametrize("above", ["\n", "  \n", "\n\t\n"])
def test_blank_lines_above_the_header_are_not_read_and_lines_keep_their_numbers(tmp_path, above):
    """A script that writes a newline before the CSV text: pandas took the empty first line for the header, and
    the file was "line 1 ('') has 0 field(s), the data rows 6: remove any title, comment or 'sep=' line"."""
    rows = _lines(8)
    rows[3] = rows[3].replace("2024-01-05", "2024-13-05")
    (tmp_path / "X.csv").write_text(above + HEADER + "".join(rows), newline="")
    frames, rep = _read(tmp_path / "X.csv")
    line = above.count("\n") + 1 + 4  # the header's line, then the fourth data line
    assert rep["rules"] == {"bad_timestamp": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [line]}}
    assert len(frames["X"]) == 7 and frames["X"]["close"].iloc[0] == 101.25
