"""Validation under ``invalid_values: ffill`` and ``jumps: drop``: the rows kept before a row ``m`` (from the
8th on) and their filled values do not change when rows after it are added, however many passes the rules
take; the passes stay bounded on files that need the most; a spike on a file's first rows is judged once the
4 rows after it are in the file, and not before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.data import validate
from hftraining.data.sources import Unit, read_unit

HEADER = "Date,Open,High,Low,Close,Volume\n"
FFILL = {"invalid_values": "ffill", "jumps": "drop"}


def lines(rng: np.random.Generator, n: int, empty_share: float, clean_first: int = 0) -> list[str]:
    """``n`` daily bars drifting up, with spikes of one to five bars (x3, /3) and ``empty_share`` of the cells
    empty (none in the first ``clean_first`` rows)."""
    close = 100.0 * 1.002 ** np.arange(n)
    i = clean_first or 1
    while i < n:
        b = int(rng.integers(1, 6))
        close[i:i + b] *= float(rng.choice([3.0, 1 / 3]))
        i += b + int(rng.integers(1, 10))
    cells = np.stack([close, close * 1.01, close * 0.99, close, rng.integers(1000, 9999, n)], axis=1)
    empty = rng.random((n, 5)) < empty_share
    empty[:clean_first] = False
    days = pd.date_range("2020-01-01", periods=n, freq="D")
    return [f"{d:%Y-%m-%d}," + ",".join("" if empty[r, k] else f"{cells[r, k]:.6g}" for k in range(5)) + "\n"
            for r, d in enumerate(days)]


def read(path: Path, rows: list[str], **policies) -> tuple[pd.DataFrame, dict]:
    path.write_text(HEADER + "".join(rows))
    frames, rep = read_unit(Unit("file", str(path)), DataConfig(**policies))
    return frames[path.stem], rep


def test_the_rows_kept_before_a_row_do_not_change_when_rows_after_it_arrive(tmp_path):
    """30 files of 40 bars, half their cells empty after 9 clean rows, read whole and cut after each row from
    the 10th: the kept rows dated before the cut, and every value in them, are those of the file cut there
    (the rules' passes, and which rows lend, read no row after the row they decide)."""
    rng = np.random.default_rng(16)
    for seed in range(30):
        rows = lines(rng, 40, 0.5, clean_first=9)
        policies = dict(FFILL, ohlc_violations=("clip", "drop")[seed % 2])
        whole, _ = read(tmp_path / "W.csv", rows, **policies)
        for m in range(10, 40, 3):
            cut, rep = read(tmp_path / "C.csv", rows[:m], **policies)
            assert rep["rows_in"] == rep["rows_kept"] + rep["rows_dropped"] == m
            before = whole[whole["timestamp"] < pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=m)]
            pd.testing.assert_frame_equal(before.reset_index(drop=True), cut.reset_index(drop=True),
                                          obj=f"file {seed} cut after row {m}")


def test_the_passes_stay_bounded_on_files_with_most_cells_empty(tmp_path, monkeypatch):
    """Files of 300 bars with 40% of their cells empty and a spike every few bars need the most passes (some
    reach the fallback): the rules run at most ``UNFILL_PASSES`` + 2 times (the fallback's pass and the last),
    and every row is accounted for once."""
    calls = []
    value_rules = validate._value_rules
    monkeypatch.setattr(validate, "_value_rules", lambda *a, **k: calls.append(1) or value_rules(*a, **k))
    rng = np.random.default_rng(3)
    most = 0
    for _ in range(12):
        calls.clear()
        f, rep = read(tmp_path / "B.csv", lines(rng, 300, 0.4, clean_first=3), **FFILL)
        assert rep["rows_in"] == rep["rows_kept"] + rep["rows_dropped"] == 300
        assert rep["rows_dropped"] == sum(e["dropped"] for e in rep["rules"].values()) and len(f) == rep["rows_kept"]
        most = max(most, len(calls))
    assert 10 < most <= validate.UNFILL_PASSES + 2


def test_a_spike_on_the_first_row_is_judged_once_four_rows_after_it_agree(tmp_path):
    """A file that grows a row at a time from a first close of 400 and closes of 100 after it: until 4 rows at
    100 follow it the first row is the level and those rows the jumps; from the 5th row on the first row is
    the jump, and it stays so as rows arrive."""
    rows = [f"2020-01-{d:02d},{c},{c * 1.01:g},{c * 0.99:g},{c},1000\n" for d, c in zip(range(1, 11), [400] + [100] * 9)]
    for m in range(2, 11):
        f, rep = read(tmp_path / "S.csv", rows[:m], jumps="drop")
        want = [3, 4, 5][:m - 1] if m <= 4 else [2]
        assert rep["rules"]["jump"]["rows"] == want, m
        assert f["close"].tolist() == ([400.0] if m <= 4 else [100.0] * (m - 1))
