"""What the data report says of two files the rules cannot read as usual: under ``invalid_values: ffill``, a
file whose filled cells keep coming from rows dropped after :data:`UNFILL_PASSES` passes has its filled rows
dropped instead, and its report (``data check``, data_report.json) names that fallback; a CSV file of a header
and blank lines only is refused in one line saying it has no data rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import validate
from hftraining.data.sources import Unit, read_unit

from test_review_validate_round16 import lines  # noqa: E402

HEADER = "Date,Open,High,Low,Close,Volume\n"
FFILL = {"invalid_values": "ffill", "jumps": "drop"}


def spiky_rows(seed: int, n: int = 300, empty_share: float = 0.4) -> str:
    """``n`` daily bars drifting up, spikes of one to five bars (x3, /3) a few bars apart, ``empty_share`` of the
    cells empty after 3 clean rows: the files that need the most passes of the rules under ``ffill``."""
    return HEADER + "".join(lines(np.random.default_rng(seed), n, empty_share, clean_first=3))


def bar(day: int, close: float, volume: str = "1000", empty_close: bool = False) -> str:
    c = "" if empty_close else f"{close:g}"
    return f"2020-01-{day:02d},{close:g},{close * 1.01:g},{close * 0.99:g},{c},{volume}\n"


def test_a_file_that_reaches_the_ffill_fallback_names_it_in_data_check(tmp_path, monkeypatch, capsys):
    """A file of 300 bars, 40% of its cells empty and spikes every few bars: the rules run ``UNFILL_PASSES`` + 2
    times (the fallback's pass and the last), and the report says so, naming the file, the passes and the rows
    dropped instead of filled, in data check's JSON and in its text; a file that needs no fallback says nothing."""
    path = tmp_path / "SPIKY.csv"
    path.write_text(spiky_rows(0))
    calls = []
    value_rules = validate._value_rules
    monkeypatch.setattr(validate, "_value_rules", lambda *a, **k: calls.append(1) or value_rules(*a, **k))
    _, rep = read_unit(Unit("file", str(path)), DataConfig(**FFILL))
    assert len(calls) == validate.UNFILL_PASSES + 2  # the fallback ran
    note = rep["ffill_fallback"]["SPIKY"]
    assert note.startswith(f"{path}: data.invalid_values=ffill: after {validate.UNFILL_PASSES + 1} passes")
    k = int(note.split(" so ")[1].split()[0])
    assert 0 < k <= rep["rules"]["nan_or_inf"]["dropped"]

    # most rows are dropped (too few left for a window: exit 2), and the file's report says why
    code = cli.main(["data", "check", str(path), "--json", "--set", "invalid_values=ffill", "--set", "jumps=drop"])
    assert code == 2
    assert json.loads(capsys.readouterr().out)["files"][0]["ffill_fallback"] == {"SPIKY": note}
    assert cli.main(["data", "check", str(path), "--set", "invalid_values=ffill", "--set", "jumps=drop"]) == 2
    assert f"  ffill fallback: {note}" in capsys.readouterr().out.splitlines()

    calm = tmp_path / "CALM.csv"
    calm.write_text(spiky_rows(1, empty_share=0.1))
    _, rep = read_unit(Unit("file", str(calm)), DataConfig(**FFILL))
    assert "ffill_fallback" not in rep and "ffill fallback" not in validate.format_report(rep)


def test_the_fallback_counts_every_row_it_drops_instead_of_filling(tmp_path, monkeypatch):
    """With the fallback after the first pass: the close of a spike's bar filled the empty close after it, so
    every row with a filled cell (the two after the spikes, and the one whose empty volume a kept row filled) is
    dropped under ``nan_or_inf``, and the report counts those 3 rows as the fallback's."""
    monkeypatch.setattr(validate, "UNFILL_PASSES", 0)
    closes = [100, 101, 102, 300, 300, 103, 104, 105, 106, 107, 330, 330, 108, 109, 110]
    rows = [bar(d, c) for d, c in zip(range(1, 16), closes)]
    rows[4] = bar(5, 300, empty_close=True)  # filled from the spike's first bar
    rows[11] = bar(12, 330, empty_close=True)
    rows[7] = bar(8, 105, volume="")  # filled from a kept bar: dropped all the same
    path = tmp_path / "S.csv"
    path.write_text(HEADER + "".join(rows))
    frames, rep = read_unit(Unit("file", str(path)), DataConfig(**FFILL))
    assert rep["rules"]["nan_or_inf"]["rows"] == [6, 9, 13] and rep["rules"]["nan_or_inf"]["dropped"] == 3
    assert rep["ffill_fallback"] == {"S": f"{path}: data.invalid_values=ffill: after 1 pass a filled cell still "
                                          "came from a row dropped since, so 3 rows were dropped instead of filled "
                                          "(each under its value rule)"}
    assert frames["S"]["close"].tolist() == [100, 101, 102, 103, 104, 106, 107, 108, 109, 110]


@pytest.mark.parametrize("body", ["\n\n\n", ",,,,,\n,,,,,\n", "\n  , ,\n\n"])
def test_a_header_with_blank_lines_only_is_one_line_saying_no_data_rows(tmp_path, capsys, body):
    """A CSV file of a header and blank lines (empty, of delimiters, of white space): one line saying the file
    has no data rows, not "column 'open' holds no value in any row" for each price column; exit 2."""
    path = tmp_path / "BLANK.csv"
    path.write_text(HEADER + body)
    n = len(body.splitlines())
    with pytest.raises(DataError) as e:
        read_unit(Unit("file", str(path)), DataConfig())
    assert str(e.value) == f"{path}: no data rows (header and {n} blank lines only)"
    assert cli.main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no data rows" in err and "holds no value" not in err and len(err.strip().splitlines()) == 1
