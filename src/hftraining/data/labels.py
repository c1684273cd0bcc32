"""Labels: what a model forecasts for each row, from the rows' 1-step log returns (``data.target``).

- ``return``: the row's own log return (the default; no label array is made);
- ``excess_return``: the log return in excess of the equal-weight universe of the same date,
  ``r - log(mean_j exp(r_j))`` over the symbols with a row at that timestamp (a log return too);
- ``cs_zscore``: the per-date z-score of the return across symbols, as Qlib's ``CSZScoreNorm``
  (``(r - mean) / std``, sample std, ddof 1);
- ``cs_rank``: the per-date percentile rank, centred: ``((rank - 0.5) / n - 0.5) * 3.46`` (ties
  share their average rank), which has mean exactly 0 on every date and about unit std. Qlib's
  ``CSRankNorm`` computes ``(rank / n - 0.5) * 3.46``, whose per-date mean is 1.73 / n, not 0: with
  10 symbols every label is shifted by +0.173, so the zero forecast carries a bias any model
  beats by learning a constant, 5 of 9 untied labels are positive and a forecast that is always
  up scores 0.556 directional accuracy. The labels are written as :data:`LABEL_VERSION`.

A date's statistics use only that date's rows (the returns that end at that timestamp), so a label
at row t reads nothing dated after t: the cross-sectional labels of past rows are known at t and
the models' past-return input channel carries them too. A date with fewer than two symbols has no
cross-section: its label is 0 (as is a z-score on a date whose returns are all equal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TARGETS = ("return", "excess_return", "cs_zscore", "cs_rank")
CROSS_SECTIONAL = ("cs_zscore", "cs_rank")
"""Labels that are not returns: evaluation leads with the cross-sectional IC for them."""
PER_DATE = ("excess_return", *CROSS_SECTIONAL)
"""Labels taken across the symbols of each date: a symbol alone on its date has label 0 (its excess
return over itself, its z-score or rank among one), so a panel whose dates never hold two symbols has
every label 0."""
RANK_SCALE = 3.46  # as Qlib's CSRankNorm: a uniform rank in (0, 1) minus 0.5, times ≈ √12, has unit std
LABEL_VERSION = 2
"""The labels' formulas, written in a model folder's preprocessing.json as ``label_version``: 2 centres
``cs_rank`` (1, before 2026-12-05: Qlib's off-centre CSRankNorm). A model of a label whose formula
changed since it was trained is refused, never fed inputs of another formula."""
CHANGED_IN = {"cs_rank": 2}
"""label → the :data:`LABEL_VERSION` that last changed its formula."""
CHANGE_NOTE = {"cs_rank": "centred on every date"}
"""label → what that change did (said when a model of the older formula is refused)."""
GROUPING_VERSION = 2
"""How the rows of a panel that mixes dates (daily bars stamped at UTC midnight) and instants are grouped
into the dates of the labels taken across symbols (:data:`PER_DATE`) and of the ``market`` features, written
in a model folder's preprocessing.json as ``grouping_version``: 2 (since 2026-12-07) keeps a date and an
instant at one stamp apart (:func:`cross_sections`) and knows a date beside instants at the end of its UTC
day (:func:`hftraining.data.features.market_columns`); 1 (a folder without the key) grouped the rows by their
stamps alone. A panel of dates alone, or of instants alone, is grouped alike by both: a model of version 1
is refused only where the labels or market features it reads come out otherwise
(:func:`hftraining.data.pipeline.check_grouping_rule`)."""

UNITS = {
    "return": "log returns",
    "excess_return": "log returns in excess of the equal-weight universe",
    "cs_zscore": "per-date z-scores of the 1-step log return",
    "cs_rank": "per-date ranks of the 1-step log return (centred, unit std)",
}


def is_return(target: str) -> bool:
    """Whether labels of ``target`` are log returns (forecasts then read as returns)."""
    return target in ("return", "excess_return")


def group_ranks(values: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share the mean of their ranks) of ``values`` (N,) inside each group
    ``inv`` (N,) (int labels 0..G−1), as float64 half-integers; a NaN ranks after every number of its
    group, NaNs in row order. The same values, bit for bit, as one lexsort of (values, inv), about 6×
    faster on 500 symbols × 5,000 dates: the rows are gathered group by group by a stable radix sort
    of the group codes, and the groups of one size are ranked as the rows of one (m, size) array,
    whose row sorts stay in cache (as :func:`hftraining.eval.metrics._group_ranks`)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    inv = np.asarray(inv).reshape(-1)
    ranks = np.empty(v.size, dtype=np.float64)
    if v.size == 0:
        return ranks
    G = int(inv.max()) + 1
    order = code_order(inv, G)
    sizes = np.bincount(inv, minlength=G)
    ranks[order] = segment_ranks(v[order], sizes[sizes > 0])
    return ranks


def code_order(codes: np.ndarray, G: int) -> np.ndarray:
    """``np.argsort(codes, kind="stable")`` of int ``codes`` (N,) in 0..G−1, as numpy's radix sort of
    16-bit keys (low half, then high half above 65,536 codes); a stable sort of given keys is unique."""
    if G <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    if G > 1 << 32:
        return np.argsort(codes, kind="stable")
    low = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")]


def segment_ranks(v: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Average ranks of ``v`` (N,) inside each of its consecutive segments of ``sizes`` (Σ = N, each ≥ 1).
    A run of c ties from 0-based position a gets a + 1 + (c − 1) / 2: a half-integer, exact in float64."""
    ranks = np.empty(v.size, dtype=np.float64)
    starts = np.cumsum(sizes) - sizes
    # ties share their rank in any order; NaNs (last, each its own rank) keep their row order as a lexsort's
    kind = "stable" if np.isnan(v).any() else None
    for L in np.unique(sizes):
        whole = bool((sizes == L).all())  # every segment this size: a plain reshape
        rows = None if whole else starts[sizes == L][:, None] + np.arange(L)  # (m, L) positions
        block = v.reshape(-1, L) if whole else v[rows]
        order = np.argsort(block, axis=1, kind=kind)
        s = np.take_along_axis(block, order, axis=1)
        new_run = np.ones(s.shape, dtype=bool)
        new_run[:, 1:] = s[:, 1:] != s[:, :-1]
        run = np.flatnonzero(new_run)  # flat position of each run's first value; no run spans two rows
        count = np.diff(np.append(run, new_run.size))
        r = np.empty(s.shape, dtype=np.float64)
        np.put_along_axis(r, order, np.repeat(run % L + 1 + (count - 1) / 2.0, count).reshape(s.shape), axis=1)
        if whole:
            return r.reshape(-1)
        ranks[rows] = r
    return ranks


def universe_return(returns: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """(D,) float64 log return of the equal-weight universe on each date: ``log(mean_j exp(r_j))`` over
    the finite returns of date ``inv`` (N,) int labels 0..D−1 (a portfolio re-equalised every
    period); NaN for a date without one. A date whose ``exp`` overflows (a return above ~709, a price
    multiplied by more than 1e308 in one bar) is computed about its largest return (log-sum-exp). It
    read +inf: every excess-return label of that date read −inf, and the market features (pandas'
    rolling sums skip an inf) skipped the date. So is a date whose ``exp`` sum underflows below
    float64's normal range (every return below about −708): it read −inf (each label +inf) or lost
    its digits in subnormals. The other dates keep the plain sum, bit for bit."""
    r = np.asarray(returns, dtype=np.float64)
    ok = np.isfinite(r)
    D = int(inv.max()) + 1 if inv.size else 0
    n = np.bincount(inv[ok], minlength=D)
    with np.errstate(over="ignore", under="ignore"):
        total = np.bincount(inv[ok], weights=np.exp(r[ok]), minlength=D)
    with np.errstate(invalid="ignore", divide="ignore", under="ignore"):
        mean = total / np.maximum(n, 1)
        out = np.where(n > 0, np.log(mean), np.nan)
        over = np.isinf(total) | ((n > 0) & (mean < np.finfo(np.float64).tiny))  # overflowed, or under the normals
        if over.any():
            top = np.full(D, -np.inf)
            np.maximum.at(top, inv[ok], r[ok])
            shifted = np.bincount(inv[ok], weights=np.exp(r[ok] - top[inv[ok]]), minlength=D)
            out[over] = top[over] + np.log(shifted[over] / n[over])
    return out


def cross_sections(times: np.ndarray, dates: np.ndarray | None = None) -> np.ndarray:
    """(N,) int64 code of each row's cross-section, numbered in stamp order: the rows of every symbol at one
    timestamp ``times`` (N,), a date and an instant at one stamp apart (``dates`` (N,) marks the dates,
    :attr:`hftraining.data.rows.Rows.dates`; None: none is), the date first. The groups of the labels taken
    across symbols (:func:`row_labels`), and of the check that a forecast's latest row has another symbol in
    its cross-section (:meth:`hftraining.inference.forecaster.Forecaster.check_cross_section`)."""
    t = np.asarray(times).reshape(-1)
    marks = None if dates is None else np.asarray(dates, dtype=bool).reshape(-1)
    if marks is not None and len(marks) != len(t):
        raise ValueError(f"cross_sections: {len(marks)} date marks for {len(t)} rows")  # a caller's bug
    if marks is None or marks.all() or not marks.any():
        return pd.factorize(t, sort=True)[0].astype(np.int64, copy=False)  # np.unique's inverse, ~15× faster (a hash)
    order = np.lexsort((~marks, t))  # by stamp, the date first
    ts, ms = t[order], marks[order]
    inv = np.empty(len(t), dtype=np.int64)
    inv[order] = np.cumsum(np.r_[True, (ts[1:] != ts[:-1]) | (ms[1:] != ms[:-1])]) - 1
    return inv


def row_labels(returns: np.ndarray, times: np.ndarray, target: str,
               dates: np.ndarray | None = None) -> np.ndarray | None:
    """(N,) float32 labels of rows with 1-step log ``returns`` (N,) at ``times`` (N,) int64 ns; rows
    of every symbol sharing a timestamp form that date's cross-section. None for ``return`` (the
    returns are the labels).

    ``dates`` (N,) marks the rows that are dates, not instants (:attr:`hftraining.data.rows.Rows.dates`;
    None: none is): a date and an instant at one stamp are two cross-sections, as in the ``market``
    features (:func:`hftraining.data.features.market_columns`). A daily bar stamped with its date (a coin's
    daily candle at 00:00 UTC) closes at the end of its day, and the hourly bar of 00:00 an hour after it
    opens: in one cross-section the hourly bar's label read the day's return, and the hourly rows after it
    read that label as an input (until 2026-12-07)."""
    if target == "return":
        return None
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")  # the config validates data.target first
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return np.zeros(0, np.float32)
    inv = cross_sections(times, dates)
    n = np.bincount(inv).astype(np.float64)
    alone = (n < 2)[inv]
    if target == "excess_return":
        out = r - universe_return(r, inv)[inv]
    elif target == "cs_zscore":
        mean = np.bincount(inv, weights=r) / n
        dev = r - mean[inv]
        var = np.bincount(inv, weights=dev * dev) / np.maximum(n - 1, 1)
        sd = np.sqrt(var)[inv]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(sd > 0, dev / sd, 0.0)
    else:  # cs_rank
        out = ((group_ranks(r, inv) - 0.5) / n[inv] - 0.5) * RANK_SCALE  # mean 0 on every date
    out[alone] = 0.0
    return out.astype(np.float32)
