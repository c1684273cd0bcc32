"""Under ``invalid_values: ffill`` a bad cell takes its value from the previous row kept in the end, however
many passes of the value, OHLC and jump rules that takes."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.data.sources import Unit, read_unit


def test_ffill_keeps_no_close_of_a_dropped_bar_when_levels_alternate_with_empty_bars(tmp_path):
    """A close that moves between 100 and 300 every 37 days and holds, every other bar's prices empty, under
    ``jumps: drop``: each kept empty bar holds the close of the bar kept before it. Stopping after three
    passes kept 108 empty bars filled from a bar the jump rule dropped (a close of the other level)."""
    days = pd.bdate_range("1990-01-01", periods=4000)
    lines = ["Date,Open,High,Low,Close,Volume", f"{days[0]:%Y-%m-%d},100,101,99,100,1000"]
    empty = set()
    for i, d in enumerate(days[1:], 1):
        v = 300 if (i // 37) % 2 == 0 else 100
        if i % 2:
            empty.add(d.strftime("%Y-%m-%d"))
        lines.append(f"{d:%Y-%m-%d}," + (",,,," if i % 2 else f"{v},{v * 1.01},{v * 0.99},{v},") + "1000")
    (tmp_path / "X.csv").write_text("\n".join(lines) + "\n")
    t = time.perf_counter()
    frames, rep = read_unit(Unit("file", str(tmp_path / "X.csv")), DataConfig(invalid_values="ffill", jumps="drop"))
    assert time.perf_counter() - t < 3.0
    f = frames["X"]
    close = f["close"].to_numpy()
    filled = f["timestamp"].dt.strftime("%Y-%m-%d").isin(empty).to_numpy()
    wrong = np.flatnonzero(filled[1:] & (close[1:] != close[:-1])) + 1
    assert not len(wrong), [str(f["timestamp"].iloc[i].date()) for i in wrong[:5]]
    assert rep["rows_kept"] + rep["rows_dropped"] == 4000
    # the kept rows move between the two levels, each from a kept bar of its own level
    assert set(np.unique(close)) == {100.0, 300.0}
