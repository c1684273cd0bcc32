"""Chronological splits of one symbol's rows into train / validation / test.

Splitting happens on rows *before* any window is cut, and a window is only cut inside one
segment, so no input or target ever crosses a split (leakage-free by construction).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    start: int  # first row (inclusive)
    stop: int  # last row + 1

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


SPLITS = ("train", "val", "test")


def chronological_split(n_rows: int, train_ratio: float, val_ratio: float, embargo: int = 0) -> dict[str, Segment]:
    """Row ranges of the three splits; ``embargo`` rows are left out before val and before test."""
    n_train = int(n_rows * train_ratio)
    n_val = int(n_rows * val_ratio)
    train = Segment(0, n_train)
    val = Segment(min(n_train + embargo, n_train + n_val), n_train + n_val)
    test = Segment(min(n_train + n_val + embargo, n_rows), n_rows)
    return {"train": train, "val": val, "test": test}


def window_ends(segment: Segment, seq_len: int, horizon: int, stride: int = 1) -> range:
    """Rows t that can end an input window inside ``segment``: inputs t-L+1..t and targets
    t+1..t+H all lie in the segment."""
    first = segment.start + seq_len - 1
    last = segment.stop - 1 - horizon
    if last < first:
        return range(0)
    # align so that the most recent window is always included
    return range(last - ((last - first) // stride) * stride, last + 1, stride)
