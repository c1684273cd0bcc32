"""Validation: under ``invalid_values: ffill`` an empty cell takes the value of the last row kept in the end,
even where that row was dropped by an earlier pass of the rules; a spike on a file's first rows is the row the
``jump`` rule drops (flags, stops at), not the level the rows after it hold; the rows out of order are found
in numpy calls per run of rows in order, with the same rows as one Python step per row."""

from __future__ import annotations

import bisect
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import validate
from hftraining.data.sources import Unit, read_unit

HEADER = "Date,Open,High,Low,Close,Volume\n"


def bar(close: float | None, volume: float | None) -> str:
    """Open/high/low/close cells of one bar (empty for None) and its volume cell."""
    prices = ",,," if close is None else f"{close:.6g},{close * 1.01:.6g},{close * 0.99:.6g},{close:.6g}"
    return prices + "," + ("" if volume is None else f"{volume:.6g}")


def write(path: Path, bars: list[str], start: str = "2020-01-01") -> Path:
    days = pd.date_range(start, periods=len(bars), freq="D")
    path.write_text(HEADER + "".join(f"{d:%Y-%m-%d},{b}\n" for d, b in zip(days, bars)))
    return path


def read(path: Path, **policies) -> tuple[pd.DataFrame, dict]:
    frames, rep = read_unit(Unit("file", str(path)), DataConfig(**policies))
    return frames[path.name.split(".")[0]], rep


# --------------------------------------------------------------------------------------------
# ffill: the last kept row


def test_an_empty_cell_takes_the_value_of_the_last_kept_row_when_an_earlier_pass_dropped_that_row(tmp_path):
    """Line 4 (300) is a one-bar spike. Line 5's prices are empty, filled first with the spike's close and
    dropped as its second bar; the rules then run again without the spike as a source, and line 5 (filled
    with 100) is kept. Line 6's empty volume takes line 5's (1300), the last kept row's; before, line 5 lent
    nothing once an earlier pass had dropped it, and line 6 took line 3's volume (1100)."""
    path = write(tmp_path / "X.csv", [bar(100, 1000), bar(100, 1100), bar(300, 1200), bar(None, 1300),
                                      bar(100, None), bar(100, 1500), bar(100, 1600)])
    f, rep = read(path, invalid_values="ffill", jumps="drop")
    assert f["timestamp"].dt.strftime("%m-%d").tolist() == ["01-01", "01-02", "01-04", "01-05", "01-06", "01-07"]
    assert f["volume"].tolist() == [1000, 1100, 1300, 1300, 1500, 1600]
    assert f["close"].tolist() == [100] * 6
    assert rep["rules"]["jump"]["rows"] == [4] and rep["rules"]["nan_or_inf"]["rows"] == [5, 6]
    assert rep["rows_in"] == rep["rows_kept"] + rep["rows_dropped"] == 7


@pytest.mark.parametrize("ohlc", ["clip", "drop"])
def test_every_filled_cell_holds_the_value_of_the_kept_row_before_it_in_random_files(tmp_path, ohlc):
    """80 files of 60 daily bars with spikes of one to five bars (x3, /3) and a fifth of their cells empty,
    under ``ffill`` and ``jumps: drop``: each kept row's empty open, close or volume cell holds the same
    column's value in the kept row before it (its high and low may be clipped). Before, about a third of
    such files kept a cell filled from an older row than the last kept one."""
    rng = np.random.default_rng(16)
    wrong = []
    for seed in range(80):
        n = 60
        close = 100.0 * 1.002 ** np.arange(n)
        i = 1
        while i < n - 2:
            b = int(rng.integers(1, 6))
            close[i:i + b] *= float(rng.choice([3.0, 1 / 3]))
            i += b + int(rng.integers(1, 12))
        volume = rng.integers(1000, 9999, n).astype(float)
        cells = np.stack([close, close * 1.01, close * 0.99, close, volume], axis=1)
        empty = rng.random((n, 5)) < 0.2
        rows = [",".join("" if empty[r, k] else f"{cells[r, k]:.6g}" for k in range(5)) for r in range(n)]
        f, rep = read(write(tmp_path / "R.csv", rows), invalid_values="ffill", jumps="drop", ohlc_violations=ohlc)
        assert rep["rows_in"] == rep["rows_kept"] + rep["rows_dropped"] == n
        row = (f["timestamp"] - pd.Timestamp("2020-01-01", tz="UTC")).dt.days.to_numpy()
        for k, col in ((0, "open"), (3, "close"), (4, "volume")):
            x = f[col].to_numpy()
            bad = np.flatnonzero(empty[row[1:], k] & (x[1:] != x[:-1])) + 1
            wrong += [(seed, col, int(row[j]) + 2) for j in bad]
    assert wrong == []


# --------------------------------------------------------------------------------------------
# jumps: a spike on the first rows


def drift(n: int = 30) -> np.ndarray:
    return 100.0 * 1.002 ** np.arange(n)


@pytest.mark.parametrize("bars", [1, 2, 3])
@pytest.mark.parametrize("factor", [4.0, 0.25])
def test_a_spike_on_the_first_rows_is_the_row_dropped_not_the_level_after_it(tmp_path, bars, factor):
    """The first one to three bars four times higher (or lower) than the 4 and more rows after them, which
    agree: ``drop`` drops those bars and keeps every other row; ``flag`` lists them; ``error`` stops at line 2
    naming the level's first line. Before, the first row was the level: the three rows after the spike were
    dropped (flagged) and the spike kept."""
    close = drift()
    close[:bars] *= factor
    path = write(tmp_path / "X.csv", [bar(c, 1000) for c in close])
    f, rep = read(path, jumps="drop")
    assert rep["rules"]["jump"]["rows"] == list(range(2, 2 + bars)) and rep["rules"]["jump"]["dropped"] == bars
    np.testing.assert_allclose(f["close"].to_numpy(), close[bars:], rtol=1e-5)
    f, rep = read(path, jumps="flag")
    assert rep["rules"]["jump"]["rows"] == list(range(2, 2 + bars)) and len(f) == len(close)
    with pytest.raises(DataError, match=rf"line 2: close moves from .* in line {2 + bars} and holds there .*"
                                        r"data\.jumps=error"):
        read(path, jumps="error")


def test_a_level_change_after_the_first_four_rows_still_costs_three_rows(tmp_path):
    """Four rows at 100, then 300 from line 6 on: the old level held for four rows, so the new level's first
    three rows are the jumps (lines 6-8), as before; a one-row spike inside the file is dropped alone."""
    close = np.r_[[100.0] * 4, [300.0] * 20]
    close[15] = 900.0
    f, rep = read(write(tmp_path / "X.csv", [bar(c, 1000) for c in close]), jumps="drop")
    assert rep["rules"]["jump"]["rows"] == [6, 7, 8, 17]
    assert validate.jump_rows(np.array([400.0, 100, 100, 100]), 0.5).tolist() == [False, True, True, True]


# --------------------------------------------------------------------------------------------
# out of order: one numpy call per run


def out_of_order_loop(t: np.ndarray) -> np.ndarray:
    """The rows out of order, one Python step per row (patience sorting from the end, then greedily from
    the first row): the reference the numpy version must equal."""
    t = np.asarray(t, dtype=np.int64)
    n = len(t)
    if n < 2 or bool((t[1:] >= t[:-1]).all()):
        return np.zeros(n, dtype=bool)
    tails: list[int] = []
    longest = np.empty(n, dtype=np.int64)
    for j, v in enumerate((-t[::-1]).tolist()):
        k = bisect.bisect_right(tails, v)
        if k == len(tails):
            tails.append(v)
        else:
            tails[k] = v
        longest[n - 1 - j] = k + 1
    need, last = len(tails), None
    keep = np.zeros(n, dtype=bool)
    for i, (v, m) in enumerate(zip(t.tolist(), longest.tolist())):
        if m == need and (last is None or v >= last):
            keep[i], last, need = True, v, need - 1
            if need == 0:
                break
    return ~keep


def random_stamps(rng: np.random.Generator, n: int, kind: int) -> np.ndarray:
    if kind == 0:  # few distinct stamps: many ties
        return rng.integers(0, 10, n)
    if kind == 1:
        return rng.permutation(n)
    if kind == 2:  # a few rows misdated anywhere (ties with the others too)
        t = np.arange(n)
        for _ in range(int(rng.integers(0, 5))):
            if n:
                t[int(rng.integers(n))] = int(rng.integers(-5, n + 5))
        return t
    if kind == 3:  # blocks of rows in order, the blocks in no order
        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 5))))
        blocks = np.split(np.arange(n), cuts)
        return np.concatenate([blocks[k] for k in rng.permutation(len(blocks))])
    return np.sort(rng.integers(0, 20, n))[::-1]  # newest first, with ties


@pytest.mark.parametrize("runs", ["per_run", "chosen", "per_row"])
def test_the_rows_out_of_order_equal_those_of_one_step_per_row(monkeypatch, runs):
    """3,000 random stamp sequences (ties, shuffles, a few misdated rows, blocks out of order, newest first),
    with runs placed one numpy call each (``RUN_ROWS`` 0), as chosen, or one row at a time: the same rows as
    the reference; and so for long files with a few misdated rows."""
    if runs != "chosen":
        monkeypatch.setattr(validate, "RUN_ROWS", 0 if runs == "per_run" else 10**9)
    rng = np.random.default_rng(len(runs))
    for trial in range(3000):
        t = random_stamps(rng, int(rng.integers(0, 80)), trial % 5).astype(np.int64) * 10**9
        np.testing.assert_array_equal(validate.out_of_order(t), out_of_order_loop(t), err_msg=str(t.tolist()))
    for _ in range(20):
        t = np.arange(5000, dtype=np.int64) * 60 * 10**9
        where = rng.choice(5000, int(rng.integers(1, 40)), replace=False)
        t[where] = rng.integers(-10, 5010, len(where)) * 60 * 10**9
        np.testing.assert_array_equal(validate.out_of_order(t), out_of_order_loop(t))


def test_a_file_with_misdated_rows_is_judged_in_numpy_calls_per_run():
    """300,000 minute bars with 300 rows misdated anywhere: the same rows as one Python step per row, in under
    a third of its time (a million rows took about 1.1 s one step per row, 0.1 s in numpy calls per run)."""
    rng = np.random.default_rng(7)
    n = 300_000
    t = np.arange(n, dtype=np.int64) * 60 * 10**9
    where = rng.choice(n, 300, replace=False)
    t[where] = rng.integers(0, n, 300) * 60 * 10**9
    start = time.perf_counter()
    want = out_of_order_loop(t)
    loop = time.perf_counter() - start
    start = time.perf_counter()
    got = validate.out_of_order(t)
    fast = time.perf_counter() - start
    np.testing.assert_array_equal(got, want)
    assert fast * 3 < loop, (fast, loop)


@pytest.mark.parametrize("policy", ["sort", "drop"])
def test_the_report_names_the_same_lines_out_of_order(tmp_path, policy):
    """A 3,000-row daily file with 12 rows moved elsewhere: ``unsorted_timestamp`` lists the lines of the rows
    the reference finds out of order, and the kept rows are in time order."""
    rng = np.random.default_rng(3)
    days = pd.date_range("2000-01-01", periods=3000, freq="D")
    order = np.arange(3000)
    for _ in range(12):
        i, j = rng.integers(0, 3000, 2)
        order = np.insert(np.delete(order, i), j, order[i])
    path = tmp_path / "X.csv"
    path.write_text(HEADER + "".join(f"{days[k]:%Y-%m-%d},{bar(100 + k % 7, 1000)}\n" for k in order))
    f, rep = read(path, unsorted_timestamps=policy)
    late = out_of_order_loop(days.asi8[order])
    assert rep["rules"]["unsorted_timestamp"]["rows"] == (np.flatnonzero(late) + 2).tolist()
    assert f["timestamp"].is_monotonic_increasing and len(f) == 3000 - (policy == "drop") * int(late.sum())
