"""Reader fuzz: ``hftraining data check`` on random bytes and on random mutations of a valid CSV
(bytes, lines and cells deleted, duplicated, swapped or replaced; other delimiters, a decimal
comma, gzip before or after the damage) always ends in one of two ways: exit 0 with a report whose
``rows_in == rows_kept + rows_dropped``, or exit 2 with exactly one line on stderr naming the file.
Any other exception, or a traceback, fails. Run in-process (``cli.main``), a bounded number of
examples with a fixed seed (``derandomize``), so the figures it prints are the same on every run:

    .venv/bin/python -m pytest -q -s tests/test_data_fuzz.py
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftraining import cli

EXAMPLES = 250
ROWS = 120  # a valid series long enough for one window of the default config
CELLS = ["", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1", "0", "abc", "1,5", "1.234,5", "1 234", "1,234,567",
         "1.234.567", '"', '""', ";", ",", "\t", "|", "2087-06-02", "1987-03-02", "9999-12-31", "0000-00-00",
         "20230230", "1700000000", "\x00", "\ufeff", "é", "🙂", "\r", "\n", "--", "+", "1e", ".", "-0.0"]


def _valid_csv(sep: str, decimal: str, extra: str | None) -> bytes:
    rng = np.random.default_rng(0)
    close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.015, ROWS))), 2)
    df = pd.DataFrame({
        "Date": pd.bdate_range("2021-01-04", periods=ROWS).strftime("%Y-%m-%d"),
        "Open": close, "High": np.round(close * 1.01, 2), "Low": np.round(close * 0.99, 2), "Close": close,
        "Volume": rng.integers(100_000, 2_000_000, ROWS),
    })
    if extra == "adj":
        df.insert(5, "Adj Close", np.round(close * 0.98, 2))
    elif extra == "symbol":  # a long file of two symbols
        df = pd.concat([df.assign(Symbol="AAA"), df.assign(Symbol="BBB", Close=df["Close"] * 2)])
    elif extra == "no_volume":
        df["Volume"] = ""
    return df.to_csv(index=False, sep=sep, decimal=decimal, lineterminator="\n").encode()


def _mutate(data: bytes, draw) -> bytes:
    """One random edit of ``data``: on bytes, on lines or on cells."""
    kind = draw(st.sampled_from(["del_bytes", "dup_bytes", "swap_bytes", "ins_bytes", "del_line", "dup_line",
                                 "swap_lines", "cell", "truncate"]))
    n = len(data)
    if kind in ("del_bytes", "dup_bytes", "swap_bytes", "ins_bytes", "truncate"):
        i = draw(st.integers(0, max(n - 1, 0)))
        j = min(n, i + draw(st.integers(1, 64)))
        if kind == "del_bytes":
            return data[:i] + data[j:]
        if kind == "dup_bytes":
            return data[:j] + data[i:j] + data[j:]
        if kind == "ins_bytes":
            return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
        if kind == "truncate":
            return data[:i]
        k = draw(st.integers(0, max(n - 1, 0)))
        b = bytearray(data)
        if n:
            b[i], b[k] = b[k], b[i]
        return bytes(b)
    lines = data.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "del_line":
        del lines[i]
    elif kind == "dup_line":
        lines.insert(i, lines[i])
    elif kind == "swap_lines":
        k = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[k] = lines[k], lines[i]
    else:
        sep = b";" if b";" in lines[0] else b","
        cells = lines[i].split(sep)
        c = draw(st.integers(0, len(cells) - 1))
        cells[c] = draw(st.sampled_from(CELLS) | st.text(max_size=8)).encode("utf-8", "surrogatepass")
        lines[i] = sep.join(cells)
    return b"\n".join(lines)


@st.composite
def inputs(draw) -> tuple[str, bytes]:
    """(file name, content): random bytes, or a valid CSV with 1-4 random edits (maybe gzipped)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["x.csv", "x.csv.gz", "x.csv.zst", "x.csv.bz2"])), draw(st.binary(max_size=3000))
    sep, decimal = draw(st.sampled_from([(",", "."), (";", "."), (";", ","), ("\t", "."), ("|", ",")]))
    data = _valid_csv(sep, decimal, draw(st.sampled_from([None, None, "adj", "symbol", "no_volume"])))
    gz = draw(st.sampled_from([None, None, None, "before", "after"]))
    if gz == "before":  # damage a compressed file
        data = gzip.compress(data, mtime=0)
    for _ in range(draw(st.integers(1, 4))):
        data = _mutate(data, draw)
    if gz == "after":
        data = gzip.compress(data, mtime=0)
    return ("x.csv.gz" if gz else "x.csv"), data


def _check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["data", "check", str(path), "--json"])
    return code, out.getvalue(), err.getvalue()


def test_data_check_never_crashes_on_damaged_input(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    counts = {"examples": 0, "exit_0": 0, "exit_2": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(inputs())
    def one(example):
        name, data = example
        path = root / name
        path.write_bytes(data)
        code, out, err = _check(path)
        counts["examples"] += 1
        assert "Traceback" not in out + err
        result = json.loads(out)
        if code == 0:
            counts["exit_0"] += 1
            assert err == "" and result["errors"] == []
            (rep,) = result["files"]
            assert rep["rows_in"] == rep["rows_kept"] + rep["rows_dropped"] and rep["rows_kept"] > 0
        else:
            assert code == 2, (code, err)
            counts["exit_2"] += 1
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"hftraining: error: {path}: "), err
            assert all(r["status"] == "skipped" and r["rows_in"] == r["rows_kept"] + r["rows_dropped"] for r in result["files"])

    one()
    print(f"\nfuzz: {counts['examples']} examples, {counts['exit_0']} exit 0 with a report, {counts['exit_2']} exit 2 with one line")
    assert counts["examples"] >= EXAMPLES * 0.9 and counts["exit_0"] and counts["exit_2"]
