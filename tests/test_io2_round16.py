"""Price files whose header sits below blank lines or whose data lines end in a delimiter read as a plain
file does (two columns of one unread name were "Duplicate names are not allowed"), errors about the header
name its line, the hint for a yfinance download of several tickers writes a file that is read, and rows
below a quoted cell over several lines keep their line numbers in a decimal-comma file."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.io import read_table
from hftraining.data.sources import Unit, check_paths, read_unit

HEADER = "Date,Open,High,Low,Close,Volume"


def _rows(n: int = 8, sep: str = ",") -> list[str]:
    days = pd.bdate_range("2024-01-02", periods=n)
    return [sep.join([f"{d:%Y-%m-%d}", f"{100 + i}.5", f"{102 + i}", f"{99 + i}", f"{101 + i}.25", str(1000 * (i + 1))])
            for i, d in enumerate(days)]


def _read(path):
    return read_unit(Unit("file", str(path)), DataConfig(cache_dir=None))


# ----------------------------------------------------------------------------- names pandas gives a header's


@pytest.mark.parametrize("tail", ["Note,Note", ",", "x,x,x.1", "Note,,Note,"])
@pytest.mark.parametrize("layout", ["blank_above", "trailing", "both"])
def test_columns_of_one_unread_name_are_read_as_in_a_plain_file(tmp_path, layout, tail):
    """Below blank lines, or above data lines that end in a delimiter, two ``Note`` columns made the file "cannot
    read (Duplicate names are not allowed.)"; a plain file reads them as ``Note`` and ``Note.1``."""
    k = tail.count(",") + 1
    body = [r + "," + ",".join(f"c{j}{i}" for j in range(k)) for i, r in enumerate(_rows())]
    (tmp_path / "PLAIN.csv").write_text("\n".join([f"{HEADER},{tail}", *body]) + "\n")
    above = "\n \n" if layout != "trailing" else ""
    lines = [r + "," for r in body] if layout != "blank_above" else body
    (tmp_path / "X.csv").write_text(above + "\n".join([f"{HEADER},{tail}", *lines]) + "\n")
    want, got = read_table(tmp_path / "PLAIN.csv"), read_table(tmp_path / "X.csv")
    assert list(got.columns) == list(want.columns)
    assert list(got.index) == [i + above.count("\n") for i in want.index]  # each row keeps its line
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    frames, rep = _read(tmp_path / "X.csv")
    assert rep["rules"] == {} and frames["X"]["close"].iloc[0] == 101.25


# ----------------------------------------------------------------------------- the header's line in errors


def test_errors_about_the_header_name_its_line_below_blank_lines(tmp_path):
    """Errors that spoke of "line 1" said so with blank lines above the header, where line 1 is blank."""
    above = "\n\t\n"  # the header is line 3
    (tmp_path / "NUMS.csv").write_text(above + "\n".join(r.replace("-", "") for r in _rows()) + "\n")
    with pytest.raises(DataError, match=r"NUMS\.csv: line 3 holds numbers, not column names"):
        read_table(tmp_path / "NUMS.csv")
    (tmp_path / "FIELDS.csv").write_text(above + "Date,Open,High,Low\n" + "\n".join(_rows()) + "\n")
    with pytest.raises(DataError, match=r"FIELDS\.csv: line 3 \('Date,Open,High,Low'\) has 4 field\(s\), the data "
                                        r"rows 6"):
        read_table(tmp_path / "FIELDS.csv")
    rows = [r + "," for r in _rows()]
    rows[4] += "17"  # line 3 + 5
    (tmp_path / "TRAIL.csv").write_text(above + "\n".join([HEADER, *rows]) + "\n")
    with pytest.raises(DataError, match=r"TRAIL\.csv: line 8 has a value \('17'\) in field 7, past the 6 columns "
                                        r"line 3 names .*: name every column in line 3$"):
        read_table(tmp_path / "TRAIL.csv")
    other = "Date,Close,High,Low,Open,Volume"
    (tmp_path / "JOINED.csv").write_text(above + "\n".join([HEADER, *_rows(4), other, *_rows(4)]) + "\n")
    with pytest.raises(DataError, match=r"JOINED\.csv: line 8 is a header line naming the columns in another order "
                                        r"\('Date,Close,High,Low,Open,Volume'\) than line 3 .* read in line 3's order"):
        read_table(tmp_path / "JOINED.csv")


# ----------------------------------------------------------------------------- a yfinance download of several tickers


def _yf_frame(tickers: list[str], price_first: bool = True, n: int = 8) -> pd.DataFrame:
    """What ``yf.download(tickers)`` returns: a Date index, columns of two levels (Price, Ticker), or (Ticker,
    Price) as ``group_by="ticker"`` orders them."""
    days = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=n), name="Date")
    one = pd.DataFrame({"Close": [101.25 + i for i in range(n)], "High": [102.0 + i for i in range(n)],
                        "Low": [99.0 + i for i in range(n)], "Open": [100.5 + i for i in range(n)],
                        "Volume": [1000 * (i + 1) for i in range(n)]}, index=days)
    out = pd.concat({t: one + k for k, t in enumerate(tickers)}, axis=1)
    out.columns.names = ["Ticker", "Price"]
    return out.swaplevel(0, 1, axis=1) if price_first else out


@pytest.mark.parametrize("price_first", [True, False])
@pytest.mark.parametrize("level_names", [True, False])
def test_the_hint_for_several_tickers_reset_into_a_date_column_writes_a_file_that_is_read(tmp_path, monkeypatch,
                                                                                          level_names, price_first):
    """The hint for ``yf.download([...]).reset_index().to_parquet(...)`` was ``df.xs('AEM', axis=1, level=...)``,
    which drops the ``Date`` column: the file it wrote was "missing column 'timestamp'". The command shown is
    run on the frame as pandas reads the file back, and the file it writes is read."""
    frame = _yf_frame(["AEM", "WPM"], price_first).reset_index()
    if not level_names:  # the hint names the level by its number
        frame.columns = frame.columns.set_names([None, None])
    frame.to_parquet(tmp_path / "BOTH.parquet")
    with pytest.raises(DataError, match=r"a yfinance download of 2 tickers \(AEM, WPM\)") as e:
        read_table(tmp_path / "BOTH.parquet")
    command = re.search(r"e\.g\. (df\..*)$", str(e.value)).group(1)
    monkeypatch.chdir(tmp_path)
    eval(command, {"df": pd.read_parquet(tmp_path / "BOTH.parquet")})
    frames, rep = _read(tmp_path / "AEM.parquet")
    f = frames["AEM"]
    assert rep["rules"] == {} and len(f) == 8
    assert f["timestamp"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert f[["open", "close", "volume"]].iloc[1].tolist() == [101.5, 102.25, 2000.0]


# ----------------------------------------------------------------------------- quoted cells over several lines


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("sep", [",", ";"])
def test_rows_below_a_quoted_cell_over_several_lines_keep_their_lines(tmp_path, sep, eol):
    """A ``;`` file of decimal commas reads every price column as text; a note over several lines moves the rows
    below it, in either notation, whatever the line break inside the quotes."""
    rows = [r + sep + "x" for r in _rows(10, sep)]
    if sep == ";":
        rows = [r.replace(".", ",") for r in rows]
    rows[1] = rows[1][:-1] + f'"a note{eol}over{eol}three lines"'  # line 3 ends on line 5
    rows[5] = rows[5][:-1] + f'"two{eol}lines"'  # the 6th row: lines 9 and 10
    cells = rows[7].split(sep)
    rows[7] = sep.join([*cells[:5], "oops", *cells[6:]])  # the 8th row's volume: line 12
    path = tmp_path / "A.csv"
    path.write_bytes(("\n".join([f"{HEADER}{sep}Note".replace(",", sep), *rows]) + "\n").encode())
    assert list(read_table(path).index) == [0, 1, 4, 5, 6, 7, 9, 10, 11, 12]  # line - 2
    reports, errors, _ = check_paths([str(path)], DataConfig(cache_dir=None))
    assert not errors and reports[0]["rules"]["non_numeric"]["rows"] == [12]


@pytest.mark.parametrize("above", ["\x0c\n", "\x0b\n", "\u2028\n", "\x1c\n"])
def test_a_line_break_python_sees_and_pandas_does_not_above_the_header_loses_no_row(tmp_path, above):
    """The lines above the header were counted with ``str.splitlines``, which also breaks at a form feed,
    ``\\x0b``, ``\\x1c``-``\\x1e`` and U+2028; pandas breaks at ``\\n``, ``\\r\\n`` and ``\\r`` only, so it was told
    to skip one line too many: the header was skipped, and the first data row read as the header, lost."""
    rows = _rows()
    path = tmp_path / "X.csv"
    path.write_text(above + "\n" + HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    frames, _ = _read(path)
    frame = frames["X"]
    assert len(frame) == len(rows), frame
    assert float(frame["close"].iloc[0]) == 101.25
