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


@dataclass(frozen=True)
class PurgedFold:
    """One fold of purged k-fold: ``test`` and the (at most two) ``train`` segments around it.

    Windows are cut inside segments with :func:`window_ends`, so these row ranges are the purge:
    no training window's targets overlap a test window's targets, and no training window's targets
    start within ``embargo`` rows after the last test target.
    """

    train: tuple[Segment, ...]
    test: Segment


def purged_kfold(n_rows: int, n_folds: int, seq_len: int, horizon: int, embargo: int = 0) -> list[PurgedFold]:
    """Purged k-fold with embargo over one symbol's ``n_rows`` rows (López de Prado, AFML ch. 7).

    The window ends (origins) t in [L-1, n-1-H] are cut into ``n_folds`` contiguous test blocks.
    A window at t reads inputs t-L+1..t and targets t+1..t+H. For the test block with origins
    u0..u1 (targets u0+1..u1+H), a training window is kept only if its targets end before the
    first test target (t ≤ u0 - H, the purge before) or start more than ``embargo`` rows after the
    last test target (t ≥ u1 + H + embargo, the purge after plus the embargo). The purge removes
    H - 1 windows on each side; the embargo ``embargo`` more after the block (set it ≥ L to keep
    the training inputs, not only the targets, clear of the test period).
    """
    if n_folds < 2:
        raise ValueError(f"purged k-fold needs at least 2 folds, got {n_folds}")
    first, last = seq_len - 1, n_rows - 1 - horizon
    if last - first + 1 < n_folds:
        return []
    edges = [first + (last - first + 1) * k // n_folds for k in range(n_folds + 1)]
    folds = []
    for k in range(n_folds):
        u0, u1 = edges[k], edges[k + 1] - 1
        test = Segment(u0 - seq_len + 1, u1 + horizon + 1)
        # window_ends(Segment(a, b)) yields t in [a+L-1, b-1-H]
        before = Segment(0, u0 + 1)  # last origin u0 - H
        after = Segment(u1 + horizon + embargo - seq_len + 1, n_rows)  # first origin u1 + H + embargo
        folds.append(PurgedFold(tuple(s for s in (before, after) if len(window_ends(s, seq_len, horizon))), test))
    return folds
