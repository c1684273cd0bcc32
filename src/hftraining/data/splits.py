"""Chronological splits of one symbol's rows into train / validation / test.

Splitting happens on rows *before* any window is cut, and a window is only cut inside one
segment, so no input or target ever crosses a split (leakage-free by construction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one symbol (its own row numbers): every window of the segment has all
    its targets in them, and its inputs too, except that it may also read the ``lookback`` rows
    before ``start`` (a test block reads its first windows' inputs from the rows before it). Left
    padding for a short history (``data.min_history``) reaches back for inputs only, down to
    :attr:`read_from`: it never moves a window's end, nor so its targets, before ``start``."""

    start: int  # first row (inclusive) a target may lie in
    stop: int  # last row + 1
    lookback: int = 0  # rows before ``start`` that inputs may read (never targets)

    @property
    def read_from(self) -> int:
        """The first row a window of the segment may read."""
        return self.start - self.lookback

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def block(start: int, stop: int, seq_len: int) -> Segment:
    """Rows [start, stop) whose windows may read their first inputs from the ``seq_len`` rows before
    ``start`` (down to row 0): a test block, or the training rows after a purged test block. Every
    target of its windows lies in [start, stop)."""
    return Segment(start, stop, min(seq_len, max(start, 0)))


SPLITS = ("train", "val", "test")


def chronological_split(n_rows: int, train_ratio: float, val_ratio: float, embargo: int = 0) -> dict[str, Segment]:
    """Row ranges of the three splits; ``embargo`` rows are left out before val and before test."""
    n_train = int(n_rows * train_ratio)
    n_val = int(n_rows * val_ratio)
    train = Segment(0, n_train)
    val = Segment(min(n_train + embargo, n_train + n_val), n_train + n_val)
    test = Segment(min(n_train + n_val + embargo, n_rows), n_rows)
    return {"train": train, "val": val, "test": test}


def end_bounds(segment: Segment, seq_len: int, horizon: int, min_history: int | None = None) -> tuple[int, int]:
    """(first, last) row t that may end a window of ``segment`` (none when last < first): its
    targets t+1..t+H lie in [start, stop) and its last ``min_history`` input rows (default all
    ``seq_len``) at or after ``segment.read_from``; its earlier input steps are padding."""
    hist = seq_len if min_history is None else min_history
    return max(segment.start - 1, segment.read_from + hist - 1), segment.stop - 1 - horizon


def window_ends(segment: Segment, seq_len: int, horizon: int, stride: int = 1, min_history: int | None = None) -> range:
    """Rows t that can end an input window of ``segment`` (:func:`end_bounds`): by default inputs
    t-L+1..t lie in the segment's readable rows and targets t+1..t+H in [start, stop)."""
    first, last = end_bounds(segment, seq_len, horizon, min_history)
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
    H - 1 windows on each side; the embargo ``embargo`` more after the block. The training inputs
    are clear of the test period only when ``embargo`` ≥ L plus the rows each input row's features
    read before it (the features' settled rows, at least 1: a return reads the close before its row,
    and every window reads its rows' returns, whatever its features; features and labels across the
    symbols of a date read each symbol's previous row, further back in a panel of mixed calendars):
    with ``embargo`` = L the first window after the block reads a return, or a 20-row indicator, of
    the block's closes (:func:`hftraining.workflows.walkforward.purged_inputs_note`).
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
        test = block(u0 + 1, u1 + horizon + 1, seq_len)  # origins u0..u1: targets from u0 + 1, inputs from u0 - L + 1
        before = Segment(0, u0 + 1)  # last origin u0 - H
        after = block(u1 + horizon + embargo + 1, n_rows, seq_len)  # first origin u1 + H + embargo
        folds.append(PurgedFold(tuple(s for s in (before, after) if len(window_ends(s, seq_len, horizon))), test))
    return folds


SCHEMES = ("expanding", "rolling", "purged_kfold")
"""The walk-forward schemes (:mod:`hftraining.workflows.walkforward`)."""


@dataclass(frozen=True)
class Fold:
    """Walk-forward fold ``k`` (0-based) of ``n_folds`` under ``scheme`` (one of :data:`SCHEMES`).
    A model trained on a fold keeps it in its preprocessing: its out-of-sample data is that fold's
    test block, not the split its data section would cut. ``before_test``: the folds cut only the
    rows before the data's own test split (tune's folds: the configuration they choose is then
    scored on that test split, which no fold has seen)."""

    k: int
    n_folds: int
    scheme: str
    before_test: bool = False

    def __str__(self) -> str:
        within = ", before the test split" if self.before_test else ""
        return f"walk-forward fold {self.k + 1} of {self.n_folds} ({self.scheme}{within})"

    def to_dict(self) -> dict:
        out = {"fold": self.k + 1, "folds": self.n_folds, "scheme": self.scheme}
        return {**out, "before_test": True} if self.before_test else out

    @classmethod
    def from_dict(cls, d) -> "Fold":
        """The fold of :meth:`to_dict` (read from a model folder: untrusted); a ValueError naming the key."""
        if not isinstance(d, dict) or not {"fold", "folds", "scheme"} <= set(d) <= {"fold", "folds", "scheme", "before_test"}:
            raise ValueError(f"fold: expected {{fold, folds, scheme[, before_test]}}, got {d!r:.80}")
        if type(d.get("before_test", False)) is not bool:
            raise ValueError(f"fold.before_test: expected true or false, got {d['before_test']!r:.40}")
        n, k = d["folds"], d["fold"]
        if type(n) is not int or n < 2:
            raise ValueError(f"fold.folds: expected an integer >= 2, got {n!r:.40}")
        if type(k) is not int or not 1 <= k <= n:
            raise ValueError(f"fold.fold: expected an integer in [1, {n}], got {k!r:.40}")
        if d["scheme"] not in SCHEMES:
            raise ValueError(f"fold.scheme: {d['scheme']!r:.40} is not one of {', '.join(SCHEMES)}")
        return cls(k - 1, n, d["scheme"], d.get("before_test", False))


def row_fold(n_rows: int, k: int, n_folds: int, seq_len: int, embargo: int, train_ratio: float, val_ratio: float,
             scheme: str = "expanding") -> dict[str, Segment]:
    """One symbol's segments {"train", "val", "test"} of walk-forward fold ``k`` (0-based) cut in its
    own ``n_rows`` rows (``data.split: per_symbol``; :func:`calendar_fold` cuts at shared dates).

    The first ``train_ratio`` share of the rows is the initial training span, the rest is cut into
    ``n_folds`` test blocks [b_k, b_k+1). Training rows end ``embargo`` rows before b_k; they start
    at row 0 (``expanding``) or as many rows back as the initial span (``rolling``); their last
    ``val_ratio`` share is validation, ``embargo`` rows apart. Test windows read their inputs from
    the ``seq_len`` rows before b_k; their targets lie in [b_k, b_k+1)."""
    n0 = int(n_rows * train_ratio)
    b = [n0 + (n_rows - n0) * j // n_folds for j in range(n_folds + 1)]
    end = max(0, b[k] - embargo)
    start = 0 if scheme == "expanding" else max(0, end - n0)
    n_val = int((end - start) * val_ratio)
    val = Segment(end - n_val, end) if n_val else Segment(end, end)
    train = Segment(start, max(start, end - n_val - (embargo if n_val else 0)))
    return {"train": train, "val": val, "test": block(b[k], b[k + 1], seq_len)}


def purged_split(fold: PurgedFold | None, n_rows: int) -> dict[str, Segment]:
    """A fold of purged k-fold as {"train": before, "val": after, "test"}: the trainer sees both
    training segments (the walk-forward joins the windows after the test block to the training
    windows); the scaler is fit on the "train" rows, before the test block, so no statistic of a
    later row reaches it (after it only where the symbol has no training window before the block: the
    first block, or a symbol listed after the block's start, whose rows after it then enter the scaler's
    statistics; they are training rows of the fold, never rows of its block)."""
    if fold is None:
        return {"train": Segment(0, 0), "val": Segment(0, 0), "test": Segment(0, 0)}
    before = next((s for s in fold.train if s.start == 0), Segment(0, 0))
    after = next((s for s in fold.train if s.start > 0), Segment(n_rows, n_rows))
    if len(before) == 0:  # nothing to train on before the block (the first block, a late listing): the rows after it
        return {"train": after, "val": Segment(n_rows, n_rows), "test": fold.test}
    return {"train": before, "val": after, "test": fold.test}


# --------------------------------------------------------------------------------------------
# Calendar splits of a panel: cut points are dates shared by every symbol


def union_calendar(times: list[np.ndarray]) -> np.ndarray:
    """(D,) sorted distinct timestamps (int64 ns) of all symbols' rows: the panel's calendar.

    Merged one symbol at a time: a symbol whose dates equal the calendar so far, or are all in it
    (the common case of a panel), costs a comparison or a binary search, not a sort of every row
    (100 million rows: 0.1-4 s instead of 30 s for ``np.unique`` of them all)."""
    acc = np.zeros(0, np.int64)
    for t in times:
        t = np.asarray(t, dtype=np.int64)
        if len(t) > 1 and not (t[1:] > t[:-1]).all():
            t = np.unique(t)
        if len(t) == len(acc) and np.array_equal(t, acc):
            continue
        pos = np.searchsorted(acc, t)
        found = pos < len(acc)
        found[found] = acc[pos[found]] == t[found]
        if not found.all():
            acc = np.sort(np.concatenate([acc, t[~found]]), kind="stable")
    return acc


def calendar_date(calendar: np.ndarray, i: int) -> int:
    """Date ``i`` of the calendar; past its end, a date after every row (so nothing is cut off)."""
    return int(calendar[i]) if i < len(calendar) else int(calendar[-1]) + 1


def calendar_cuts(calendar: np.ndarray, train_ratio: float, val_ratio: float) -> tuple[int, int]:
    """(first validation date, first test date) in ns: the dates at the ``train_ratio`` and
    ``train_ratio + val_ratio`` shares of the calendar (the same floor arithmetic as
    :func:`chronological_split`, so one symbol alone is cut exactly as by rows)."""
    n = len(calendar)
    n_train, n_val = int(n * train_ratio), int(n * val_ratio)
    return calendar_date(calendar, n_train), calendar_date(calendar, n_train + n_val)


def rows_before(times: np.ndarray, date: int) -> int:
    """Number of a symbol's rows (sorted ``times``, ns) dated before ``date``."""
    return int(np.searchsorted(times, date, side="left"))


def rows_closed_by(times: np.ndarray, date: int, bar_ns: int = 0) -> int:
    """Number of a symbol's rows (sorted ``times``, ns, each the start of a bar ``bar_ns`` long, or shorter:
    a bar ends at the latest where the next row starts) whose bar has closed by ``date``: dated at most
    ``date - bar_ns``, or followed by a row dated at most ``date``. With ``bar_ns`` 0, the rows dated before
    ``date`` (:func:`rows_before`).

    A cut date of a panel is a stamp of one of its symbols, and can fall inside another symbol's bar:
    inside a daily bar beside hourly ones, inside the daily bar stamped at midnight beside daily bars
    stamped at 05:00 (another exchange's midnight), inside the hourly bar of 14:00 beside bars of 14:30.
    That bar closes after the cut, in the period after it: it is a target of neither the period before the
    cut (it would train on the later period's moves) nor, as it starts before the cut, of the period after
    it: it is left out (purged) of the earlier period. Where the cut falls inside no bar (bars of one
    length on one grid) the count is :func:`rows_before`'s; a bar shorter than ``bar_ns`` (the day a clock
    moves, 23 hours) closes at the next row."""
    if bar_ns <= 0:
        return rows_before(times, date)
    return max(rows_before(times, date - bar_ns + 1), rows_before(times, date + 1) - 1)


def calendar_split(times: np.ndarray, val_from: int, test_from: int, embargo: int = 0,
                   bar_ns: int = 0) -> dict[str, Segment]:
    """One symbol's row segments when the panel is cut at shared dates: training rows are dated
    before ``val_from``, validation rows from ``val_from`` and test rows from ``test_from``;
    ``embargo`` of the symbol's own rows is left out after each cut (as :func:`chronological_split`).
    Windows are cut inside the segments (:func:`window_ends`), so no training target is dated on or
    after ``val_from`` for any symbol. With ``bar_ns`` (the symbol's bar length: a cut
    can fall inside one of its bars), a training or validation bar also closes by the next cut (:func:`rows_closed_by`)."""
    a, b, n = rows_before(times, val_from), rows_before(times, test_from), len(times)
    train_end, val_end = rows_closed_by(times, val_from, bar_ns), rows_closed_by(times, test_from, bar_ns)
    val_start = min(a + embargo, b)
    return {"train": Segment(0, train_end), "val": Segment(val_start, max(val_start, val_end)),
            "test": Segment(min(b + embargo, n), n)}


def calendar_fold(times: np.ndarray, calendar: np.ndarray, k: int, n_folds: int, seq_len: int, embargo: int,
                  train_ratio: float, val_ratio: float, scheme: str = "expanding", bar_ns: int = 0) -> dict[str, Segment]:
    """One symbol's segments of walk-forward fold ``k`` (0-based) with folds cut at shared dates.

    The first ``train_ratio`` share of the calendar is the initial training span; the rest is cut
    into ``n_folds`` test blocks of dates [D_k, D_k+1). Training covers the dates before D_k
    (``expanding``) or as many dates as the initial span (``rolling``); its last ``val_ratio`` share
    of dates is validation. ``embargo`` of the symbol's own rows is left out before validation and
    before the test block; test windows read their inputs from the ``seq_len`` rows before D_k. With
    ``bar_ns`` (the symbol's bar length: a cut can fall inside one of its bars), a training or validation bar
    also closes by the next period's first date (:func:`rows_closed_by`)."""
    n = len(calendar)
    n0 = int(n * train_ratio)
    b = [n0 + (n - n0) * j // n_folds for j in range(n_folds + 1)]
    start = 0 if scheme == "expanding" else max(0, b[k] - n0)
    v = b[k] - int((b[k] - start) * val_ratio)  # first validation date (index into the calendar)
    row = lambda i: rows_before(times, calendar_date(calendar, i))  # noqa: E731
    closed = lambda i: rows_closed_by(times, calendar_date(calendar, i), bar_ns)  # noqa: E731
    first, end = row(start), max(row(start), min(row(b[k]) - embargo, closed(b[k])))
    if v < b[k]:
        val = Segment(min(row(v), end), end)
        train = Segment(first, max(first, min(row(v) - embargo, closed(v))))
    else:
        val, train = Segment(end, end), Segment(first, end)
    return {"train": train, "val": val, "test": block(row(b[k]), row(b[k + 1]), seq_len)}


def calendar_purged_fold(times: np.ndarray, calendar: np.ndarray, k: int, n_folds: int, seq_len: int,
                         horizon: int, embargo: int, bar_ns: int = 0) -> PurgedFold:
    """Purged k-fold with the test blocks cut at shared dates: block ``k`` holds the dates
    [E_k, E_k+1) of ``n_folds`` equal shares of the calendar. A symbol's test windows have all
    their targets in the block; its training windows have every target before E_k, or after the
    block's last row plus ``embargo`` rows, so no training target of any symbol is dated inside
    any symbol's test block. With ``bar_ns`` (the symbol's bar length: a cut can
    fall inside one of its bars), its bars before the block and, but for the last block, in it also close by the next
    block's first date (:func:`rows_closed_by`): no bar's span holds the dates of another period."""
    n = len(calendar)
    date = lambda j: calendar_date(calendar, j * n // n_folds)  # noqa: E731
    a, z = rows_before(times, date(k)), rows_before(times, date(k + 1))
    test_end = z if k + 1 >= n_folds else max(a, rows_closed_by(times, date(k + 1), bar_ns))
    test = block(a, test_end, seq_len)  # targets from row a, inputs from a - L
    before = Segment(0, rows_closed_by(times, date(k), bar_ns))  # last origin a - 1 - H: targets end before row a
    after = block(z + embargo, len(times), seq_len)  # first origin z + embargo - 1: targets from z + embargo
    return PurgedFold(tuple(s for s in (before, after) if len(window_ends(s, seq_len, horizon))), test)
