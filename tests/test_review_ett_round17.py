"""``bench ett``'s ETT CSV errors name the file's line and column for every field numpy does not read
(a value Python's float reads but numpy's parser does not, '1_000' or full-width digits, was "unreadable
value" with no line, no column, no text), and the line they name is the one an editor shows: a form feed,
NEL or Unicode line separator in the file no longer splits a line in two (the row was refused as one of
3 fields, and every later line number was one too high)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.errors import DataError
from hftraining.workflows import ett


def etth1_lines(rows: int = 30) -> list[str]:
    """The text lines of an ETTh1.csv of ``rows`` hourly rows from 2016-07-01 00:00 (lines[k]: the file's line k + 1)."""
    rng = np.random.default_rng(3)
    dates = np.datetime64("2016-07-01T00:00") + np.arange(rows) * np.timedelta64(1, "h")
    return [",".join(ett.COLUMNS)] + [str(d).replace("T", " ") + ":00," + ",".join(f"{x:.3f}" for x in v)
                                      for d, v in zip(dates, rng.normal(size=(rows, 7)))]


def write(folder: Path, lines: list[str], newline: str = "\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ETTh1.csv").write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return folder


def set_field(lines: list[str], line: int, col: int, text: str) -> list[str]:
    out = list(lines)
    fields = out[line - 1].split(",")
    fields[col] = text
    out[line - 1] = ",".join(fields)
    return out


@pytest.mark.parametrize("text", ["1_000", "１２", "٣"])  # underscores, full-width and Arabic-Indic digits
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_value_numpys_parser_refuses_is_named_by_line_column_and_text(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                       text: str, newline: str) -> None:
    lines = set_field(etth1_lines(), 17, 4, text)  # MULL of the file's line 17 (after the blank line: 18)
    lines.insert(5, "")
    folder = write(tmp_path, lines, newline)
    with pytest.raises(DataError) as e:
        ett.load_ett(folder, "ETTh1")
    assert str(e.value).endswith(f"ETTh1.csv: unreadable value on line 18, column MULL: {text!r} is not a number"), str(e.value)
    assert main(["bench", "ett", "--data", str(folder), "--model", "linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 18, column MULL" in err[0]


def test_the_first_unreadable_field_is_named_when_several_are(tmp_path: Path) -> None:
    lines = set_field(set_field(etth1_lines(), 23, 1, "x"), 9, 7, "1_0")  # numpy refuses both; line 9 comes first
    with pytest.raises(DataError, match=r"line 9, column OT: '1_0' is not a number"):
        ett.load_ett(write(tmp_path, lines), "ETTh1")


@pytest.mark.parametrize("sep", ["\x0c", "\x85", "\u2028", "\x1e"])
def test_line_numbers_count_newlines_alone(tmp_path: Path, sep: str) -> None:
    lines = etth1_lines()
    lines.insert(4, sep)  # the file's line 5: a form feed (or NEL, U+2028, record separator) alone, a blank line
    lines[10] += ",9"  # the file's line 11: 9 fields
    with pytest.raises(DataError) as e:
        ett.load_ett(write(tmp_path, lines), "ETTh1")
    assert "ETTh1.csv: line 11: 9 fields, expected 8" in str(e.value), str(e.value)


@pytest.mark.parametrize("sep", ["\x0c", "\x85", "\u2028"])
def test_a_value_padded_with_a_separator_character_reads_as_numpy_reads_it(tmp_path: Path, sep: str) -> None:
    # numpy's parser takes "0.5\x0c" for 0.5 as it did before rows were checked; the row is not refused as 3 fields
    lines = etth1_lines()
    clean = ett.load_ett(write(tmp_path / "a", set_field(lines, 6, 3, "0.5")), "ETTh1")
    padded = ett.load_ett(write(tmp_path / "b", set_field(lines, 6, 3, "0.5" + sep)), "ETTh1")
    assert padded.shape == (29 + 1, 7) and np.array_equal(padded, clean)
    assert padded[4, 2] == 0.5
