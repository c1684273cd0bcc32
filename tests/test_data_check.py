"""``hftraining data check`` on the bad-input corpus (tests/data/bad/, made by
tests/data/make_bad_corpus.py): every file gives exit 0 with the exact report below, or exit 2
with one line naming the file and the problem; never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hftraining import cli

BAD = Path(__file__).parent / "data" / "bad"
N = 110  # rows of each clean series in the corpus


def ok(rows_in=N, kept=N, **rules):
    """Expected report: rule=(dropped, repaired, flagged, [listed rows])."""
    return ("ok", rows_in, kept, rules)


def err(*words):
    return ("error", words)


EXPECTED = {
    # unusable: exit 2
    "empty.csv": err("file is empty"),
    "header_only.csv": err("no data rows"),
    "missing_volume.csv": err("missing column 'volume'", "data without volume (FX, an index): add an empty volume column"),
    "no_price_column.csv": err("missing column 'close'"),
    "no_date_column.csv": err("missing column 'timestamp'"),
    "one_row.csv": err("too few rows", "1 rows kept, 98 needed"),
    "too_short.csv": err("too few rows", "50 rows kept"),
    "binary_garbage.csv": err("not UTF-8"),
    "space_thousands.csv": err("no usable rows", "non_numeric 110", "volume: 110 rows are not numbers (e.g. '265 184' in line 2)"),
    "corrupt_gzip.csv.gz": err("cannot read gzip-compressed file", "ended before the end-of-stream marker"),
    "corrupt_zstd.csv.zst": err("cannot read zstd-compressed file", "zstd decompress error"),
    "corrupt_bzip2.csv.bz2": err("cannot read bzip2-compressed file", "Invalid data stream"),
    "all_dates_garbage.csv": err("no usable rows", "bad_timestamp 110"),
    "corrupt.parquet": err("cannot read Parquet"),
    "ragged_rows.csv": err("cannot read", "line 6"),
    # usable: exit 0 with an exact report
    "semicolon_delimiter.csv": ok(),
    "decimal_comma.csv": ok(),
    "decimal_comma_thousands.csv": ok(),
    "quoted_thousands.csv": ok(),
    "compressed_gzip.csv.gz": ok(),
    "compressed_bzip2.csv.bz2": ok(),
    "compressed_zstd.csv.zst": ok(),
    "empty_volume.csv": ok(),
    "empty_volume_long.csv": ok(2 * N, 2 * N),
    "zero_volume.csv": ok(),
    "adj_close_and_close.csv": ok(),  # the split in Close is not in Adj Close: no jump
    "space_thousands_some_rows.csv": ok(N, N - 3, non_numeric=(3, 0, 0, [6, 32, 79])),
    "outlier_timestamp_late.csv": ok(N, N - 1, outlier_timestamp=(1, 0, 0, [52])),  # not sorted to the end
    "outlier_timestamp_early.csv": ok(N, N - 1, outlier_timestamp=(1, 0, 0, [82])),
    "tab_delimiter.csv": ok(),
    "utf8_bom.csv": ok(),
    "timezone_offsets.csv": ok(),
    "column_aliases.csv": ok(),
    "close_only.csv": ok(),
    "epoch_seconds.csv": ok(),
    "yyyymmdd_one_malformed.csv": ok(N, N - 1, bad_timestamp=(1, 0, 0, [42])),  # not the whole file read as 1970
    "mixed_date_formats.csv": ok(N, N - 3, bad_timestamp=(3, 0, 0, [12, 22, 32])),
    "text_in_numeric.csv": ok(N, N - 1, non_numeric=(1, 0, 0, [42])),
    "inf_value.csv": ok(N, N - 1, nan_or_inf=(1, 0, 0, [27])),
    "overflow_number.csv": ok(N, N - 1, nan_or_inf=(1, 0, 0, [14])),
    "nan_cells.csv": ok(N, N - 2, nan_or_inf=(2, 0, 0, [9, 62])),
    "nan_in_parquet.parquet": ok(N, N - 1, nan_or_inf=(1, 0, 0, [6])),
    "negative_price.csv": ok(N, N - 1, non_positive_price=(1, 0, 0, [35])),
    "zero_price.csv": ok(N, N - 1, non_positive_price=(1, 0, 0, [92])),
    "negative_volume.csv": ok(N, N - 1, negative_volume=(1, 0, 0, [17])),
    "two_defects_one_row.csv": ok(N, N - 1, non_numeric=(1, 0, 0, [46])),
    "high_below_low.csv": ok(N, N, ohlc_inconsistent=(0, 1, 0, [52])),
    "duplicate_rows.csv": ok(N + 2, N, duplicate_timestamp=(2, 0, 0, [32, 73])),
    "unsorted_rows.csv": ok(N, N, unsorted_timestamp=(0, 1, 0, [23])),
    "blank_lines.csv": ok(N + 2, N, blank_line=(2, 0, 0, [41, 81])),
    "split_jump.csv": ok(N, N, jump=(0, 0, 3, [62, 63, 64])),  # a new level: its 4th row kept
    "huge_value.csv": ok(N, N, ohlc_inconsistent=(0, 1, 0, [72]), jump=(0, 0, 1, [72])),
    "long_format.csv": ok(N + 21, N, missing_symbol=(1, 0, 0, [132]), too_few_rows=(20, 0, 0, [])),
}


ADJUSTED = {"used": "Adj Close", "why": "data.price_adjustment=adjusted: the close is Adj Close and open/high/low are "
            "scaled by Adj Close / Close of the row, so returns include splits and dividends"}
# report keys beyond the rules, exactly, where they are not empty (every other file has them empty)
DETAILS = {
    "empty_volume.csv": {"volume_empty": ["empty_volume"], "dropped_features": {"volume_ratio_20": "volume column is empty"}},
    "empty_volume_long.csv": {"volume_empty": ["FXB"], "dropped_features": {"volume_ratio_20": "volume column is empty for FXB"}},
    "zero_volume.csv": {"volume_empty": ["zero_volume"], "dropped_features": {"volume_ratio_20": "volume column is empty"}},
    "adj_close_and_close.csv": {"close_column": ADJUSTED},
    "text_in_numeric.csv": {"non_numeric_columns": {"close": {"count": 1, "line": 42, "value": "abc"}}},
    "two_defects_one_row.csv": {"non_numeric_columns": {"close": {"count": 1, "line": 46, "value": "x"}}},
    "space_thousands_some_rows.csv": {
        "non_numeric_columns": {"volume": {"count": 3, "line": 6, "value": "1 581 757"}}},
}
EMPTY = {"volume_empty": [], "dropped_features": {}, "close_column": None, "non_numeric_columns": None}


def test_corpus_is_complete():
    files = sorted(p.name for p in BAD.iterdir() if p.is_file())
    assert files == sorted(EXPECTED)
    assert len(files) >= 25


def _assert_report(name: str, rep: dict) -> None:
    _, rows_in, kept, rules = EXPECTED[name]
    assert rep["status"] == "ok"
    assert (rep["rows_in"], rep["rows_kept"]) == (rows_in, kept), name
    assert rep["rows_in"] == rep["rows_kept"] + rep["rows_dropped"]
    got = {r: (e["dropped"], e["repaired"], e["flagged"], e["rows"]) for r, e in rep["rules"].items()}
    assert got == {r: (d, rp, f, list(rows)) for r, (d, rp, f, rows) in rules.items()}, name
    details = {**rep, "non_numeric_columns": rep["rules"].get("non_numeric", {}).get("columns")}
    assert {k: details[k] for k in EMPTY} == {**EMPTY, **DETAILS.get(name, {})}, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_each_file(name, capsys):
    code = cli.main(["data", "check", str(BAD / name), "--json"])
    out, errout = capsys.readouterr()
    result = json.loads(out)
    if EXPECTED[name][0] == "ok":
        assert code == 0, errout
        assert errout == "" and result["errors"] == []
        (rep,) = result["files"]
        _assert_report(name, rep)
    else:
        assert code == 2
        # too few rows: the file's report (status skipped) stays beside its error line
        skipped = [r for r in result["files"] if r["status"] == "skipped"]
        assert result["files"] == skipped and len(skipped) == (1 if "too few rows" in EXPECTED[name][1] else 0)
        assert all(r["rows_in"] == r["rows_kept"] + r["rows_dropped"] and r["rows_kept"] == 0 for r in skipped)
        lines = errout.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"hftraining: error: {BAD / name}: ")
        for word in EXPECTED[name][1]:
            assert word in lines[0], (word, lines[0])


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "hftraining", *args], capture_output=True, text=True, env=env, timeout=120)


def test_check_whole_corpus_subprocess():
    """One run over every file: the unusable ones each give one line, the others still get their report."""
    proc = _run("data", "check", str(BAD), "--json")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    reports = {Path(r["file"]).name: r for r in result["files"] if r["status"] == "ok"}
    assert sorted(Path(r["file"]).name for r in result["files"] if r["status"] != "ok") == ["one_row.csv", "too_short.csv"]
    assert sorted(reports) == sorted(n for n, e in EXPECTED.items() if e[0] == "ok")
    for name, rep in reports.items():
        _assert_report(name, rep)
    lines = proc.stderr.strip().splitlines()
    # the folder's daily files stamp a trading day at different times: training's warning, said once
    warned = [line for line in lines if line.startswith("daily bars stamped at different times of day (UTC): ")]
    assert len(warned) == 1 and "timezone_offsets.csv" in warned[0] and "nan_in_parquet.parquet" in warned[0]
    lines = [line for line in lines if line not in warned]
    bad = sorted(n for n, e in EXPECTED.items() if e[0] == "error")
    assert sorted(Path(line.split(": ")[2]).name for line in lines) == bad
    assert all(line.startswith("hftraining: error: ") for line in lines)


def test_check_text_output_subprocess():
    proc = _run("data", "check", str(BAD / "duplicate_rows.csv"), str(BAD / "empty.csv"))
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"{BAD / 'duplicate_rows.csv'}: 112 rows in, 110 kept, 2 dropped",
        "  duplicate_timestamp: 2 dropped (lines 32, 73)",
    ]
    assert proc.stderr == f"hftraining: error: {BAD / 'empty.csv'}: file is empty\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_each_file_subprocess(name):
    proc = _run("data", "check", str(BAD / name))
    assert "Traceback" not in proc.stderr
    if EXPECTED[name][0] == "ok":
        assert proc.returncode == 0 and proc.stderr == ""
        assert proc.stdout.startswith(f"{BAD / name}: {EXPECTED[name][1]} rows in, {EXPECTED[name][2]} kept")
    else:
        assert proc.returncode == 2 and (proc.stdout == "") == ("too few rows" not in EXPECTED[name][1])
        assert len(proc.stderr.strip().splitlines()) == 1


def test_policies_change_the_report(capsys):
    """--set switches a rule's policy: ffill repairs instead of dropping; error stops with the line."""
    code = cli.main(["data", "check", str(BAD / "nan_cells.csv"), "--json", "--set", "invalid_values=ffill"])
    rep = json.loads(capsys.readouterr().out)["files"][0]
    assert code == 0 and rep["rows_kept"] == N
    assert rep["rules"]["nan_or_inf"] == {"dropped": 0, "repaired": 2, "flagged": 0, "rows": [9, 62]}
    code = cli.main(["data", "check", str(BAD / "split_jump.csv"), "--set", "jumps=error"])
    errout = capsys.readouterr().err
    assert code == 2 and "line 62" in errout and "jump_threshold" in errout
    code = cli.main(["data", "check", str(BAD / "utf8_bom.csv"), "--set", "invalid_values=sometimes"])
    assert code == 2 and "data.invalid_values" in capsys.readouterr().err


def test_one_row_is_named_in_the_singular(capsys):
    """"(line 52)" for the one row a rule touched; "(lines 32, 73)" for more."""
    assert cli.main(["data", "check", str(BAD / "outlier_timestamp_late.csv"), str(BAD / "duplicate_rows.csv")]) == 0
    out = capsys.readouterr().out
    assert "  outlier_timestamp: 1 dropped (line 52)" in out.splitlines()
    assert "  duplicate_timestamp: 2 dropped (lines 32, 73)" in out.splitlines()
