"""Forecast metrics as pure functions of arrays (W windows × H horizon steps, log-return units).

Everything here is a pure function of arrays (numpy/scipy, and the Rao–Scott design effect of
``eval/intervals.py``): no model, no file. ``forecasts.py`` feeds it the forecasts of the model and of
the naive baselines through one prediction path.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import special, stats

from hftraining.data.labels import code_order, segment_ranks
from hftraining.eval.intervals import design_effect, level_labels

MIN_CROSS_SECTION = 3  # fewest symbols on a date for its cross-sectional IC to count


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error; NaN of no value. Infinite only when a squared error is (a forecast or label that
    is not finite, or one too large to square): finite squares whose sum overflows are averaged scaled by
    the largest of them, so such a forecast keeps a finite MSE to be ranked by."""
    if not np.size(true):
        return float("nan")
    with np.errstate(over="ignore", invalid="ignore"):  # said by the result: inf, or NaN
        sq = (pred - true) ** 2
        m = float(np.mean(sq))
    if math.isinf(m) and np.isfinite(sq).all():
        top = float(sq.max())
        m = float(np.mean(sq / top)) * top
    return m


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error; NaN of no value. Infinite only when an absolute error is (a forecast or label that
    is not finite, or a difference too large to hold): finite errors whose sum overflows are averaged scaled by
    the largest of them, as :func:`mse`'s squares are."""
    if not np.size(true):
        return float("nan")
    with np.errstate(over="ignore", invalid="ignore"):  # said by the result: inf, or NaN
        err = np.abs(pred - true)
        m = float(np.mean(err))
    if math.isinf(m) and np.isfinite(err).all():
        top = float(err.max())
        m = float(np.mean(err / top)) * top
    return m


def mse_ratio(a: float, b: float) -> float:
    """MSE ``a`` / MSE ``b`` (below 1: ``a`` is the better forecast); +inf when ``b`` is exactly 0 and ``a``
    is not (a baseline that is exact, e.g. the zero forecast of a universe whose returns are all 0), NaN
    when both are 0 or either is NaN (tables show both as "—")."""
    if b > 0:
        return a / b
    return math.inf if b == 0 and a > 0 else float("nan")


def directional_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of forecasts whose sign matches the realised return's sign.

    Realised returns of exactly 0 are left out; a forecast of exactly 0 states no direction and
    scores 0.5 (a coin flip), so the zero-return forecast scores 0.5 rather than 0. NaN when a
    forecast or a realisation is NaN, as :func:`mse`: a NaN has no sign, and counted as a wrong one
    it made a model that emits NaN score 0 (all NaN) or below its finite forecasts' accuracy.
    """
    if np.isnan(pred).any() or np.isnan(true).any():
        return float("nan")
    keep = true != 0
    if not keep.any():
        return float("nan")
    p, t = np.sign(pred[keep]), np.sign(true[keep])
    score = np.where(p == 0, 0.5, (p == t).astype(np.float64))
    return float(score.mean())


def pesaran_timmermann(pred: np.ndarray, true: np.ndarray, cluster: np.ndarray | None = None, *,
                       codes: np.ndarray | None = None) -> dict[str, Any]:
    """Pesaran–Timmermann (1992) test of directional skill: do the signs of ``pred`` and ``true`` (same
    shape, any) agree more often than their own frequencies give by chance? One-sided (skill means
    a higher hit rate).

    M. H. Pesaran and A. Timmermann, "A simple nonparametric test of predictive performance",
    Journal of Business & Economic Statistics 10(4), 1992, 461–465. With P the hit rate, Px and Py
    the shares of up forecasts and up realisations, P* = Px·Py + (1 − Px)(1 − Py) the hit rate of
    signs drawn independently with those frequencies, V(P*) = (2Py − 1)²Px(1 − Px)/n
    + (2Px − 1)²Py(1 − Py)/n + 4PxPy(1 − Px)(1 − Py)/n² and V(P) = P*(1 − P*)/n, the statistic
    S = (P − P*) / √(V(P) − V(P*)) is standard normal under independence. A binomial test of P
    against 1/2 is wrong here: on a sample whose returns are 53% up, "always up" scores 53% with
    no skill at all (its sign never varies, so S is undefined: no evidence either way).

    The same conventions as :func:`directional_accuracy`, so ``hit_rate`` is exactly that function's
    value: realised returns of exactly 0 are left out and a forecast of exactly 0 states no
    direction. With x = (sign(pred) + 1)/2 ∈ {0, ½, 1} (½: the coin flip) and y the up indicator of
    the realisation, the hit of one pair is xy + (1 − x)(1 − y), so P − P* = 2·cov(x, y) (divisor n)
    and V(P) − V(P*) = 4·var(x)·var(y)·(n − 1)/n² with var(x) = mean((x − x̄)²): for x ∈ {0, 1}
    (no zero forecast) this is the formula above term for term (var(x) = Px(1 − Px)); a zero
    forecast enters as the half-hit the accuracy scores it.

    Panels: the pairs of one date are not independent (a common market move turns most realised
    signs at once, and a forecast that leans on the market turns its signs together), and S assumes
    independent pairs: pooled over a correlated panel it rejects a true null far above its level.
    With ``cluster`` (same shape: the date of each pair), S is divided by √deff, deff the
    first-order Rao–Scott design effect over those clusters (:func:`~hftraining.eval.intervals.design_effect`,
    as the interval tests), of the test's score s_i = (x_i − x̄)(y_i − ȳ) − cov(x, y); exactly 1
    with one pair per date (a single series: the paper's statistic). The clustered statistic is then
    read against Student's t with G − 1 degrees of freedom (G dates), as the Diebold–Mariano and IC
    tests read theirs over the dates (the usual few-cluster reference, Cameron and Miller 2015): the
    design effect is estimated from G cluster sums, and against the normal a true null over 30
    dates of 20 symbols was rejected 6.5% of the time at 5% (5.8% against t; 5.0% either way over
    200 dates). Without ``cluster``: the paper's normal. ``codes`` (same shape, non-negative integers):
    the clusters as integer ids, in place of ``cluster`` (which is then not read), e.g. the
    ``np.unique(dates, return_inverse=True)`` codes of a whole panel, computed once, masked to the
    subset tested: a caller that tests thousands of subsets of one panel (per symbol, per step) then
    counts clusters with ``np.bincount`` instead of sorting its dates on every call; the result is
    bit-identical to passing ``cluster``.

    Returns {"statistic": S (÷ √deff), "p_value": its upper tail (normal, or t with G − 1 degrees of
    freedom), "hit_rate": P, "chance_hit_rate": P*, "n": pairs counted, "design_effect",
    "n_clusters": G (None without ``cluster`` or ``codes``)}; statistic and p-value NaN when undefined:
    fewer than 2 pairs, a forecast whose direction never varies (always up, always down, always 0),
    realisations of one sign, or a non-finite forecast or realisation (``hit_rate`` is still the
    accuracy); the p-value alone also when the pairs counted fall on fewer than 2 clusters (G − 1 = 0
    degrees of freedom).
    """
    pred, true = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    keep = true != 0
    n = int(keep.sum())
    out = {"statistic": math.nan, "p_value": math.nan, "hit_rate": directional_accuracy(pred, true),
           "chance_hit_rate": math.nan, "n": n, "design_effect": 1.0, "n_clusters": None}
    if n == 0 or not (np.isfinite(pred[keep]).all() and np.isfinite(true[keep]).all()):
        return out
    x, y = (np.sign(pred[keep]) + 1.0) / 2.0, (true[keep] > 0).astype(np.float64)  # (n,) each
    mx, my = float(x.mean()), float(y.mean())
    out["chance_hit_rate"] = mx * my + (1.0 - mx) * (1.0 - my)
    if n < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return out
    dx, dy = x - mx, y - my
    cov, var_x, var_y = float(np.mean(dx * dy)), float(np.mean(dx * dx)), float(np.mean(dy * dy))
    stat = 2.0 * cov / math.sqrt(4.0 * var_x * var_y * (n - 1) / n**2)
    if cluster is None and codes is None:
        out["statistic"], out["p_value"] = stat, float(special.ndtr(-stat))  # the normal's upper tail
        return out
    if codes is None:
        kept = np.asarray(cluster).ravel()[keep]
        G = int(np.unique(kept).size)
        out["design_effect"] = design_effect(dx * dy - cov, kept)
    else:
        kept = np.asarray(codes).ravel()[keep]
        G = int(np.count_nonzero(np.bincount(kept)))
        out["design_effect"] = design_effect(dx * dy - cov, codes=kept)
    out["n_clusters"] = G
    stat /= math.sqrt(out["design_effect"])
    out["statistic"] = stat
    out["p_value"] = float(special.stdtr(G - 1, -stat)) if G >= 2 else math.nan  # Student's t upper tail
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two flat arrays (ties get average ranks); NaN when either is constant
    or holds a value that is not finite: an overflowed (±inf) forecast is no rank, as it leaves its
    date's cross-sectional IC NaN (:func:`cross_sectional_ic_series`), so the pooled IC beside it is
    undefined too. The ranks are :func:`scipy.stats.rankdata`'s, value for value (exact half-integers),
    without its per-call overhead: a panel's per-symbol metrics call this thousands of times."""
    a, b = np.ravel(a), np.ravel(b)
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return float(np.corrcoef(_group_ranks(a), _group_ranks(b))[0, 1])


def _group_ranks(values: np.ndarray, codes: np.ndarray | None = None, G: int = 1) -> np.ndarray:
    """Average ranks (1-based, ties share the mean of their ranks) of ``values`` (n,) inside each group
    of ``codes`` (n,) ints 0..G−1 (None: one group), the values of :func:`hftraining.data.labels.group_ranks`
    and of :func:`scipy.stats.rankdata`: exact half-integers, so the sort that finds them does not
    change them. The groups are made contiguous by a stable radix sort of their codes, then ranked
    as segments (:func:`_segment_ranks`): many short sorts instead of a lexsort of (values, codes),
    several times faster. A NaN ranks after every number of its group, in no set order among NaNs (a
    group holding one has no defined correlation whatever its ranks)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if codes is None:
        return _segment_ranks(v, np.array([v.size]))
    codes = np.asarray(codes).reshape(-1)
    order = code_order(codes, G)
    lengths = np.bincount(codes, minlength=G)
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = _segment_ranks(v[order], lengths[lengths > 0])
    return ranks


_RANKED: contextvars.ContextVar[dict[bytes, np.ndarray | None] | None] = contextvars.ContextVar("ranked", default=None)


@contextlib.contextmanager
def reuse_ranks() -> Iterator[None]:
    """Inside the block, values ranked in the same segments a second time keep their ranks for the
    next times (keyed by a digest of the values and the segment lengths, so only equal inputs share):
    ``score()`` ranks the one realised label array once per forecast, and each step's column both
    pooled and alone. Ranks of values seen once are not kept."""
    token = _RANKED.set({})
    try:
        yield
    finally:
        _RANKED.reset(token)


def _segment_ranks(v: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Average ranks of ``v`` (n,) inside each of its consecutive segments of ``lengths`` (Σ = n, each
    ≥ 1). The segments of one length are sorted as the rows of one array (a row sort of a few hundred
    values stays in cache; one sort of all n does not). Within :func:`reuse_ranks`, read-only and
    possibly shared."""
    memo = _RANKED.get()
    if memo is None:
        return segment_ranks(v, lengths)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    key = (hashlib.sha1(np.ascontiguousarray(v, dtype=np.float64), usedforsecurity=False).digest()
           + hashlib.sha1(lengths, usedforsecurity=False).digest())
    if memo.get(key) is not None:
        return memo[key]
    ranks = segment_ranks(v, lengths)
    if key in memo:  # the second time: keep them
        ranks.flags.writeable = False
        memo[key] = ranks
    else:
        memo[key] = None
    return ranks


def cross_sectional_ic_series(
    pred: np.ndarray, true: np.ndarray, dates: np.ndarray, min_size: int = MIN_CROSS_SECTION, rank: bool = False,
    *, date_codes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per date, the correlation across symbols of forecast and realised return: (dates_used, ic).

    ``pred``, ``true``: (W,) one forecast step over W windows; ``dates``: (W,) the forecast origin
    of each window (the windows of different symbols on one date form its cross-section). Pearson
    IC, or with ``rank=True`` the Spearman rank IC (average ranks for ties). Dates with fewer than
    ``min_size`` windows, or with a constant forecast or realisation (a correlation is undefined
    there), are left out. Returns the dates kept, in increasing order, and their IC (both (D,)).
    A date with a non-finite value gets a NaN IC (kept, so it shows rather than vanishes).
    Vectorised: per-date sums of demeaned products by ``np.bincount``. ``date_codes`` (W,):
    ``np.unique(dates, return_inverse=True)[1]`` when the caller has it (the same result without
    sorting the dates again).
    """
    pred, true = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    dates = np.asarray(dates).ravel()
    if pred.size == 0:
        return dates[:0], np.zeros(0, dtype=np.float64)
    inv = _dense_codes(dates, date_codes)
    G = int(inv.max()) + 1
    u = np.empty(G, dtype=dates.dtype)
    u[inv] = dates  # the distinct dates in increasing order, as np.unique gives them
    a, b = (_group_ranks(pred, inv, G), _group_ranks(true, inv, G)) if rank else (pred, true)
    ok, ic = _ic_per_group(pred, true, a, b, inv, G, min_size)
    return u[ok], ic[ok]


def _ic_per_group(pred: np.ndarray, true: np.ndarray, a: np.ndarray, b: np.ndarray, inv: np.ndarray, G: int,
                  min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(G,) which groups count and (G,) the correlation of ``a`` and ``b`` (n,) (``pred`` and ``true``
    themselves, or their ranks) inside each group ``inv`` (n,) ints 0..G−1, every group present:
    :func:`cross_sectional_ic_series` past its grouping."""
    n = np.bincount(inv, minlength=G).astype(np.float64)
    bad = np.bincount(inv, weights=~(np.isfinite(pred) & np.isfinite(true)), minlength=G) > 0
    # constant inside a date: its min equals its max (exact, unlike a variance compared with a tolerance)
    order = code_order(inv, G)
    starts = np.flatnonzero(np.r_[True, inv[order][1:] != inv[order][:-1]])
    # of finite values: every forecast +inf on a date is max == min, but an overflow, not a constant forecast
    const = np.zeros(G, dtype=bool)
    for side in (pred[order], true[order]):
        top = np.maximum.reduceat(side, starts)
        const |= (top == np.minimum.reduceat(side, starts)) & np.isfinite(top)
    # a date of values past 1e50 in size (a diverging model's forecasts) squares past the float range in the
    # product of the two sides' sums of squares, and one below 1e-50 towards its bottom: its values are divided
    # by their largest first (a correlation is the same)
    a, b = _in_range(a, order, starts, inv), _in_range(b, order, starts, inv)
    # a date holding ±inf (an overflowed forecast) is ``bad``: its IC is NaN whatever inf − inf gives here
    with np.errstate(invalid="ignore", divide="ignore"):
        da = a - (np.bincount(inv, weights=a, minlength=G) / n)[inv]  # demeaned per date: no cancellation
        db = b - (np.bincount(inv, weights=b, minlength=G) / n)[inv]
        cov = np.bincount(inv, weights=da * db, minlength=G)
        va, vb = np.bincount(inv, weights=da * da, minlength=G), np.bincount(inv, weights=db * db, minlength=G)
        ic = np.clip(cov / np.sqrt(va * vb), -1.0, 1.0)
    # a date holding a non-finite value counts (NaN) unless a side is constant (a zero forecast has no IC
    # whatever the realisations): a date of +inf forecasts left out scored the model on its finite dates
    ok = (n >= min_size) & ~const & (bad | ((va > 0) & (vb > 0)))
    ic[bad] = np.nan
    return ok, ic


SQUARE_RANGE = 1e50
"""Values larger than this in size, or a group whose largest is smaller than its inverse, are scaled before
their products are summed (:func:`_ic_per_group`): the product of a date's two sums of squares (forecasts and
realisations both far from 1) would pass the float range or lose its digits. At most 1e50 in size, each sum
is at most n·4e100 and their product stays finite; at least 1e-50, a date whose values differ at all (by
1e-16 of their size) keeps it above 1e-280."""


def _in_range(x: np.ndarray, order: np.ndarray, starts: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """``x`` (n,) with each group (``inv``; ``order`` sorts the groups, ``starts`` opens each in that order)
    whose largest finite |value| is beyond :data:`SQUARE_RANGE` (or not 0 and below its inverse) divided by
    that value; ``x`` itself when none is (every other group bit for bit)."""
    size = np.abs(x)
    with np.errstate(invalid="ignore"):  # NaN compares False
        if not ((size > SQUARE_RANGE) | ((size < 1.0 / SQUARE_RANGE) & (size > 0))).any():
            return x  # no value far from 1 (the usual case): no gather and group reduction over every value
        top = np.maximum.reduceat(size[order], starts)  # NaN or inf: a bad group, left as it is
        far = np.isfinite(top) & (top > 0) & ((top > SQUARE_RANGE) | (top < 1.0 / SQUARE_RANGE))
    return x / np.where(far, top, 1.0)[inv] if far.any() else x


def cross_sectional_ic(
    pred: np.ndarray, true: np.ndarray, groups: np.ndarray, min_size: int = MIN_CROSS_SECTION
) -> tuple[float, int]:
    """Mean over groups (dates) of the Spearman correlation of ``pred`` and ``true`` inside each group.

    ``pred``, ``true``, ``groups``: (N,) flat. Groups with fewer than ``min_size`` members or a
    constant forecast/realisation are left out (a rank correlation is undefined there). Returns
    (mean IC, number of groups that counted): the mean of :func:`cross_sectional_ic_series` with
    ``rank=True``.
    """
    _, ic = cross_sectional_ic_series(pred, true, groups, min_size=min_size, rank=True)
    return (float(ic.mean()), int(ic.size)) if ic.size else (float("nan"), 0)


def date_step_groups(dates: np.ndarray, N: int, K: int, *, date_codes: np.ndarray | None = None) -> np.ndarray:
    """(N·K,) one group id per (date, step) of N forecasts of K steps flattened row by row: every id in
    0..D·K−1 occurs (D distinct dates). ``date_codes`` (N,): ``np.unique(dates, return_inverse=True)[1]``
    when the caller has it (the same ids without sorting the dates again)."""
    date_idx = np.unique(np.asarray(dates), return_inverse=True)[1] if date_codes is None else np.asarray(date_codes)
    return np.repeat(date_idx.reshape(-1).astype(np.int64) * K, K) + np.tile(np.arange(K), N)


def _dense_codes(dates: np.ndarray, date_codes: np.ndarray | None) -> np.ndarray:
    """(N,) int64 ``np.unique(dates, return_inverse=True)[1]``: ``date_codes`` itself when given (ids
    0..D−1, each present: those of the same ``dates``), else computed."""
    if date_codes is None:
        return np.unique(np.asarray(dates), return_inverse=True)[1].reshape(-1).astype(np.int64)
    codes = np.asarray(date_codes).reshape(-1).astype(np.int64)
    if codes.size and not np.bincount(codes).all():  # ids of a subset: number the dates present
        codes = np.unique(codes, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return codes


def _date_step_ic(pred: np.ndarray, true: np.ndarray, dates: np.ndarray, rank: bool,
                  date_codes: np.ndarray | None = None) -> np.ndarray:
    """The IC of every (date, step) cross-section of (N, K) ``pred`` and ``true`` that counts (at least
    :data:`MIN_CROSS_SECTION` symbols), in group order: :func:`cross_sectional_ic_series` over
    :func:`date_step_groups` (whose ids are already 0..D·K−1), with the ranks of each step's column
    found on its own (a sort of N values, not of N·K: the same groups, the same ranks)."""
    N, K = pred.shape
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0, dtype=np.float64)
    codes = _dense_codes(dates, date_codes)
    D = int(codes.max()) + 1
    if rank:
        a, b = np.empty((N, K)), np.empty((N, K))
        for h in range(K):
            a[:, h], b[:, h] = _group_ranks(p[:, h], codes, D), _group_ranks(t[:, h], codes, D)
        a, b = a.reshape(-1), b.reshape(-1)
    else:
        a, b = p.reshape(-1), t.reshape(-1)
    groups = date_step_groups(dates, N, K, date_codes=codes)
    ok, ic = _ic_per_group(p.reshape(-1), t.reshape(-1), a, b, groups, D * K, MIN_CROSS_SECTION)
    return ic[ok]


def mean_cross_sectional_ic(pred: np.ndarray, true: np.ndarray, dates: np.ndarray, rank: bool = False) -> float:
    """The mean over every (date, step) cross-section (at least :data:`MIN_CROSS_SECTION` symbols) of
    the Pearson (or with ``rank`` Spearman) IC of (N, K) forecasts ``pred`` and labels ``true`` whose
    origins are ``dates`` (N,); NaN when no cross-section counts, or when one holds a non-finite
    value (as :func:`cross_sectional_ic`: a model that emits NaN must not score on its finite dates)."""
    ic = _date_step_ic(pred, true, dates, rank)
    return float(ic.mean()) if ic.size else float("nan")


SAME_IC = 1e-12
"""Per-date ICs (correlations, at most 1 in size) closer than this differ by rounding alone (:func:`ic_summary`)."""


def ic_summary(ic_series: np.ndarray, lag: int) -> dict[str, Any]:
    """Summary of a per-date IC series (in date order), as in Qlib's IC/ICIR report.

    ``mean``; ``std``: sample standard deviation (ddof = 1, as pandas and Qlib); ``icir``: mean / std;
    ``t_stat``: mean / sqrt(LRV / (T − 1)) with LRV the Newey–West long-run variance
    (:func:`newey_west_variance`, Bartlett weights, truncation ``lag``, divisor T), i.e. the HAC
    variance of the mean with the small-sample factor T / (T − 1) (statsmodels' HAC with
    ``use_correction``): at lag 0 it is the one-sample t statistic mean / (std / √T), exactly Student's
    t with T − 1 degrees of freedom for normal ICs, which is what its p-value reads it against
    (without the factor a true null was rejected 5.6% of the time at 5% over 15 dates). ``lag``:
    H − 1 for an H-step target (consecutive dates' targets share H − 1 returns), 0 for step 1.
    ``positive_share``: the share of dates with IC > 0; ``n_dates``: T. NaN statistics when a value is undefined (no date;
    one date for std, ICIR and t; a NaN IC among the dates for all of them, the share of positive dates included).
    ICs within :data:`SAME_IC` of each other on every date have no spread (std 0, t infinite, or 0 when they are 0),
    whatever their last bits.
    """
    ic = np.asarray(ic_series, dtype=np.float64).ravel()
    T = int(ic.size)
    nan = float("nan")
    out = {"mean": nan, "std": nan, "icir": nan, "t_stat": nan, "positive_share": nan, "n_dates": T, "lag": int(lag)}
    if T == 0:
        return out
    mean = float(ic.mean())
    # a NaN IC (a date holding a non-finite value) has no sign: the share is as undefined as the mean
    out["mean"], out["positive_share"] = mean, float(np.mean(ic > 0)) if math.isfinite(mean) else nan
    if T < 2 or not math.isfinite(mean):
        return out
    # the same value on every date has no spread: exactly 0, not the 1e-17 that the mean's rounding leaves
    # (0.8 on 3 dates read t = 1e16, p = 1e-32, where the sign test's p is 0.25); "the same" up to the
    # rounding of the correlation itself: with ties, √3/2 is 0.8660254037844386 on a date of 5 symbols and
    # ...387 on one of 3 (scipy's spearmanr too), and 5 such dates read p = 4e-65 where the sign test's is 0.0625
    same = float(ic.max() - ic.min()) <= SAME_IC
    if same and abs(mean) <= SAME_IC:  # every date's IC is 0 but for rounding
        mean = 0.0
    std = 0.0 if same else float(ic.std(ddof=1))
    ratio = lambda num, den: num / den if den > 0 else (0.0 if num == 0 else math.copysign(math.inf, num))  # noqa: E731
    out["std"], out["icir"] = std, ratio(mean, std)
    lrv = 0.0 if same else max(newey_west_variance(ic, lag), 0.0)
    out["t_stat"] = ratio(mean, math.sqrt(lrv / (T - 1)))
    return out


def pinball_loss(q_pred: np.ndarray, true: np.ndarray, levels: list[float]) -> list[float]:
    """Mean pinball (quantile) loss per level. ``q_pred``: (W, H, Q); ``true``: (W, H); log-return units."""
    diff = true[..., None] - q_pred  # (W, H, Q)
    lv = np.asarray(levels, dtype=np.float64)
    loss = np.maximum(lv * diff, (lv - 1.0) * diff)
    return [float(x) for x in loss.reshape(-1, len(levels)).mean(axis=0)]


def coverage(q_pred: np.ndarray, true: np.ndarray, levels: list[float]) -> dict[str, float]:
    """Calibration of a quantile forecast: for each level, the share of realisations at or below the
    forecast quantile (ideal: the level itself); for each symmetric pair (q, 1−q), the share inside
    the interval (ideal: 1 − 2q). Every share NaN when a quantile is not finite or a realisation is NaN
    (as :func:`pinball_loss`, NaN or inf there): a NaN quantile compares false, and would count as a
    realisation above it and outside the interval; an infinite one compares true on one side, and a head
    that emits ±inf would read a perfect coverage beside an infinite pinball loss. Keys by
    :func:`intervals.level_labels`, distinct for distinct levels and widths."""
    out: dict[str, float] = {}
    nan = bool((~np.isfinite(q_pred)).any() or np.isnan(true).any())
    below = true[..., None] <= q_pred  # (W, H, Q)
    for i, key in enumerate(level_labels(levels)):
        out[f"below_q{key}"] = math.nan if nan else float(below[..., i].mean())
    pairs = [(i, j) for i, lo in enumerate(levels) for j, hi in enumerate(levels) if lo < 0.5 and abs(lo + hi - 1.0) < 1e-9]
    widths = level_labels([round(levels[j] - levels[i], 12) for i, j in pairs], percent=True)
    for (i, j), key in zip(pairs, widths):
        inside = (true >= q_pred[..., i]) & (true <= q_pred[..., j])
        out[f"interval_{key}"] = math.nan if nan else float(inside.mean())
    return out


CLASS_NAMES = ("sell", "hold", "buy")
"""The buy/hold/sell head's classes, in the order of its probabilities (``models.outputs.SELL, HOLD, BUY``)."""
LOG_LOSS_FLOOR = 1e-15
"""The smallest probability a log loss reads (a class given probability 0 that happens costs ~34.5, not inf)."""


def class_scores(probs: np.ndarray, true: np.ndarray, dates: np.ndarray, threshold: float) -> dict[str, Any]:
    """Scores of (W, H, 3) sell/hold/buy probabilities against the classes of the (W, H) labels cut at
    ± ``threshold`` as the training loss cuts them (sell below −threshold, buy above, hold between and on
    the boundaries): the mean log loss, the mean Brier score (the squared distance of the probabilities
    to the one-hot class, summed over classes) and the accuracy of the most probable class, over windows
    and steps. Beside them, the constant forecast of the scored windows' own class shares: the best
    constant by log loss on these windows, which knows their shares in advance (an oracle no model can
    know), so a model that beats it has skill a class share alone does not give; its accuracy is the
    share of the most common class. ``dm``: the Diebold–Mariano test of the two log losses (each
    window's mean over its steps, averaged over the symbols of each date, lag H − 1; negative: the
    model's loss is lower; a mean difference within the float32 rounding of the probabilities is none,
    p = 1). A probability or label that is not finite leaves every score NaN
    (``not_finite`` counts those windows): a failure to forecast, never a hit."""
    probs, true = np.asarray(probs, dtype=np.float64), np.asarray(true, dtype=np.float64)
    W, H = true.shape
    labels = np.where(true > threshold, 2, np.where(true < -threshold, 0, 1))  # (W, H)
    bad = ~(np.isfinite(probs).all(axis=-1) & np.isfinite(true))  # (W, H)
    n_ok = int((~bad).sum())  # no finite (window, step): no share, not a share of 0
    shares = np.bincount(labels[~bad], minlength=3) / n_ok if n_ok else np.full(3, math.nan)
    out: dict[str, Any] = {
        "threshold": float(threshold), "n": int(W * H),
        "shares": {c: float(v) for c, v in zip(CLASS_NAMES, shares)},
        "not_finite": int(bad.any(axis=1).sum()),
    }
    if bad.any() or W == 0:
        nan = math.nan
        none = np.full(1, nan) if W else np.zeros(0)  # no window: no date to test, not a loss that is not finite
        out.update(log_loss=nan, brier=nan, accuracy=nan, log_loss_shares=nan, brier_shares=nan,
                   accuracy_shares=nan, dm=diebold_mariano(none, none, lag=H - 1))
        return out
    onehot = np.eye(3)[labels]  # (W, H, 3)
    picked = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    ll = -np.log(np.clip(picked, LOG_LOSS_FLOOR, 1.0))  # (W, H)
    ll_shares = -np.log(np.clip(shares[labels], LOG_LOSS_FLOOR, 1.0))
    out.update(
        log_loss=float(ll.mean()), brier=float(((probs - onehot) ** 2).sum(axis=-1).mean()),
        accuracy=float((probs.argmax(axis=-1) == labels).mean()),
        log_loss_shares=float(ll_shares.mean()), brier_shares=float(((shares - onehot) ** 2).sum(axis=-1).mean()),
        accuracy_shares=float(shares.max()),
    )
    # the head's float32 probabilities are known to their last digit: p(1 ± FORECAST_ULP) moves −log p by at
    # most −log(1 − FORECAST_ULP) (the shares are float64 counts, exact to the losses' own rounding)
    out["dm"] = diebold_mariano(per_date_mean(ll.mean(axis=1), dates), per_date_mean(ll_shares.mean(axis=1), dates),
                                lag=H - 1, resolution=-math.log1p(-FORECAST_ULP))
    out["dm"]["loss"] = "log loss, mean over steps and over the symbols of each date"
    return out


def point_metrics(pred: np.ndarray, true: np.ndarray, dates: np.ndarray, *,
                  date_codes: np.ndarray | None = None) -> dict[str, Any]:
    """MSE, MAE, directional accuracy and information coefficients of (N, K) forecasts.

    ``pred``, ``true``: (N, K) with K horizon steps (or K = 1); ``dates``: (N,) forecast origin
    of each row. ``ic``: the per-date cross-sectional Spearman IC, averaged over every (date, step)
    cross-section with at least 3 symbols; ``ic_pooled``: one Spearman correlation over all pairs (NaN
    when a forecast or a realisation is not finite, as the per-date IC of its date).
    ``directional_test``: the :func:`pesaran_timmermann` test of the first column (step 1, as the
    step-1 rank IC; a single step's own column when K = 1), the pairs of one date clustered (its
    Rao–Scott design effect); ``directional_p`` its one-sided p-value (NaN: undefined, e.g. a
    forecast whose sign never varies). The step-1 test is the headline: the realisations of
    consecutive dates' step-1 forecasts are disjoint returns, whereas pooling the K steps would
    pair one realised return with K forecasts made on different dates. Its ``hit_rate`` is the
    step-1 directional accuracy, ``directional_accuracy`` the accuracy over all K steps.
    ``date_codes`` (N,): ``np.unique(dates, return_inverse=True)[1]``, when the caller has it (the
    test's ``codes``: the same result without sorting the dates again).
    """
    ics = _date_step_ic(pred, true, dates, rank=True, date_codes=date_codes)  # cross_sectional_ic's, without re-sorting
    ic, n_ic = (float(ics.mean()), int(ics.size)) if ics.size else (float("nan"), 0)
    pt = pesaran_timmermann(pred[:, 0], true[:, 0], dates, codes=date_codes)
    return {
        "mse": mse(pred, true),
        "mae": mae(pred, true),
        "directional_accuracy": directional_accuracy(pred, true),
        "directional_p": pt["p_value"],
        "directional_test": pt,
        "ic": ic,
        "ic_dates": n_ic,
        "ic_pooled": spearman(pred, true),
    }


def _segment_means(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(S,) ``np.mean(values[s:s + n])`` of each segment (``starts``, ``lengths`` (S,), every length ≥ 1),
    bit for bit: the segments of one length are stacked as the rows of one array and averaged along
    them (numpy sums each contiguous row as it sums a 1-D array, pairwise; ``np.add.reduceat`` does
    not, and a different summation order changes the last bits)."""
    out = np.empty(len(starts), dtype=np.float64)
    for n in np.unique(lengths):
        k = np.flatnonzero(lengths == n)
        out[k] = values[starts[k, None] + np.arange(n)].mean(axis=1)
    return out


def _segment_ids(lengths: np.ndarray) -> np.ndarray:
    """(Σ lengths,) the segment index of each element of consecutive segments of ``lengths``."""
    return np.repeat(np.arange(len(lengths)), lengths)


def segment_point_metrics(pred: np.ndarray, true: np.ndarray, starts: np.ndarray,
                          lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Per segment ``[s, s + n)`` of the flat arrays ``pred`` and ``true``: {"mse", "mae",
    "directional_accuracy", "ic_pooled"} (S,) each, equal bit for bit to :func:`mse`, :func:`mae`,
    :func:`directional_accuracy` and :func:`spearman` of the segment (every length ≥ 1), without a
    call per segment: a panel's per-symbol metrics are thousands of segments."""
    pred, true = np.ascontiguousarray(pred, dtype=np.float64), np.ascontiguousarray(true, dtype=np.float64)
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    S = len(starts)
    seg = _segment_ids(lengths)
    first = np.cumsum(lengths) - lengths
    if np.array_equal(starts, first) and seg.size == pred.size:  # the segments tile the arrays already
        p, t = pred, true
    else:  # the segments back to back (they may overlap or leave gaps in ``pred``)
        sel = starts[seg] + (np.arange(seg.size) - first[seg])
        p, t = pred[sel], true[sel]
    diff = p - t
    with np.errstate(over="ignore", invalid="ignore"):  # said by the result, as mse's
        out = {"mse": _segment_means(diff**2, first, lengths), "mae": _segment_means(np.abs(diff), first, lengths)}
    for j in np.flatnonzero(np.isinf(out["mse"])):  # finite squares whose sum overflows: mse's scaled mean
        out["mse"][j] = mse(p[first[j]:first[j] + lengths[j]], t[first[j]:first[j] + lengths[j]])
    # the accuracy's scores are 0, ½ or 1: their sums are exact in any order, so a bincount is the mean's value
    nan = np.bincount(seg, weights=np.isnan(p) | np.isnan(t), minlength=S) > 0  # segments holding a NaN
    keep = t != 0
    sp = np.sign(p)
    score = np.where(sp == 0, 0.5, (sp == np.sign(t)).astype(np.float64)) * keep
    kept = np.bincount(seg, weights=keep, minlength=S)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["directional_accuracy"] = np.where((kept > 0) & ~nan, np.bincount(seg, weights=score, minlength=S) / kept,
                                               np.nan)
    # Spearman: every segment's ranks in one sort, then np.corrcoef of the segments where it is defined (no
    # value that is not finite: ±inf is no rank, as in :func:`spearman`)
    bad = np.bincount(seg, weights=~(np.isfinite(p) & np.isfinite(t)), minlength=S) > 0
    ok = (lengths >= 3) & ~bad
    if ok.any():
        const = (np.maximum.reduceat(p, first) == np.minimum.reduceat(p, first)) | (
            np.maximum.reduceat(t, first) == np.minimum.reduceat(t, first))
        ok &= ~const
    ic = np.full(S, np.nan)
    if ok.any():
        rp, rt = _segment_ranks(p, lengths), _segment_ranks(t, lengths)
        exact = ok & (lengths <= EXACT_RANK_SUMS)
        if exact.any():
            ic[exact] = _segment_rank_corrcoef(rp, rt, seg, lengths)[exact]
        for k in np.flatnonzero(ok & ~exact):
            a, b = first[k], first[k] + lengths[k]
            ic[k] = float(np.corrcoef(rp[a:b], rt[a:b])[0, 1])
    out["ic_pooled"] = ic
    return out


EXACT_RANK_SUMS = 1 << 17
"""Longest segment whose rank correlation :func:`_segment_rank_corrcoef` computes with sums that are
exact: centred average ranks are multiples of 1/2 below n/2 in size, so every partial sum of their
products is a multiple of 1/4 below n³/4 = 2^49, exactly representable in float64."""


def _segment_rank_corrcoef(rp: np.ndarray, rt: np.ndarray, seg: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(S,) ``np.corrcoef(rp[s], rt[s])[0, 1]`` of every consecutive segment ``s`` (``seg`` (n,): the
    segment of each element; ``lengths`` (S,)) of the average ranks ``rp``, ``rt``, bit for bit where the
    segment is at most :data:`EXACT_RANK_SUMS` long, ≥ 2 and holds no NaN: one ``np.bincount`` per sum
    instead of a call per segment (a panel's per-symbol metrics are thousands of segments). Exact sums do
    not depend on their order, so these are ``np.cov``'s mean, dot products and scale ``1 / (n − 1)``,
    followed by ``np.corrcoef``'s two divisions and clip."""
    S = len(lengths)
    n = np.maximum(lengths, 1).astype(np.float64)
    dp = rp - (np.bincount(seg, weights=rp, minlength=S) / n)[seg]  # exact: half-integers minus (n + 1) / 2
    dt = rt - (np.bincount(seg, weights=rt, minlength=S) / n)[seg]
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.true_divide(1, lengths - 1)  # np.cov: c *= 1 / fact
        c01 = np.bincount(seg, weights=dp * dt, minlength=S) * scale
        c00 = np.bincount(seg, weights=dp * dp, minlength=S) * scale
        c11 = np.bincount(seg, weights=dt * dt, minlength=S) * scale
        return np.clip(c01 / np.sqrt(c00) / np.sqrt(c11), -1.0, 1.0)


def segment_pesaran_timmermann_p(pred: np.ndarray, true: np.ndarray, codes: np.ndarray, starts: np.ndarray,
                                 lengths: np.ndarray) -> np.ndarray:
    """(S,) the ``p_value`` of :func:`pesaran_timmermann` (with ``codes``) of each segment ``[s, s + n)``
    of the flat ``pred``, ``true`` and ``codes``, bit for bit, without a call per segment. Where the
    kept pairs of a segment fall on strictly increasing codes (one pair per date, in date order: a
    symbol's series) each cluster sum is its one score, so the design effect is exactly 1; another
    segment is handed to :func:`pesaran_timmermann` itself."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    codes = np.asarray(codes).reshape(-1)
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    S = len(starts)
    seg = _segment_ids(lengths)
    sel = starts[seg] + (np.arange(seg.size) - (np.cumsum(lengths) - lengths)[seg])
    p, t, c = pred[sel], true[sel], codes[sel]
    keep = t != 0
    n = np.bincount(seg, weights=keep, minlength=S).astype(np.int64)
    finite = np.isfinite(p) & np.isfinite(t)
    bad = np.bincount(seg, weights=keep & ~finite, minlength=S) > 0
    sk, ck = seg[keep], c[keep]
    x, y = (np.sign(p[keep]) + 1.0) / 2.0, (t[keep] > 0).astype(np.float64)  # as pesaran_timmermann
    with np.errstate(invalid="ignore", divide="ignore"):
        # sums of halves and ones: exact in any order, so these are the means x.mean() and y.mean()
        mx, my = np.bincount(sk, weights=x, minlength=S) / n, np.bincount(sk, weights=y, minlength=S) / n
    x_const = np.max([np.bincount(sk, weights=x == v, minlength=S) for v in (0.0, 0.5, 1.0)], axis=0) == n
    y_const = (np.bincount(sk, weights=y, minlength=S) == 0) | (np.bincount(sk, weights=y, minlength=S) == n)
    increasing = np.r_[True, ck[1:] > ck[:-1]] | np.r_[True, sk[1:] != sk[:-1]]
    one_per_cluster = np.bincount(sk, weights=~increasing, minlength=S) == 0
    defined = (n >= 2) & ~bad & ~x_const & ~y_const
    out = np.full(S, np.nan)
    fast = np.flatnonzero(defined & one_per_cluster)
    if fast.size:
        kstart = np.cumsum(n) - n
        dx, dy = x - mx[sk], y - my[sk]
        cov = _segment_means(dx * dy, kstart[fast], n[fast])
        var_x, var_y = _segment_means(dx * dx, kstart[fast], n[fast]), _segment_means(dy * dy, kstart[fast], n[fast])
        m = n[fast]
        stat = 2.0 * cov / np.sqrt(4.0 * var_x * var_y * (m - 1) / m**2)
        out[fast] = special.stdtr(m - 1, -stat)  # G = n clusters, design effect 1
    for k in np.flatnonzero(defined & ~one_per_cluster):
        a, b = starts[k], starts[k] + lengths[k]
        out[k] = pesaran_timmermann(pred[a:b], true[a:b], codes=codes[a:b])["p_value"]
    return out


# --------------------------------------------------------------------------------------------
# Diebold–Mariano

FORECAST_ULP = float(np.finfo(np.float32).eps)
"""2⁻²³: how precisely a forecast is known, relative to its size. Models, their ONNX exports and the window
store compute in float32, so a forecast's last float32 digit differs between devices, batch sizes and export
paths; a loss difference that moving forecasts by that much could make is rounding, not skill."""
LOSS_ULP = float(np.finfo(np.float64).eps)
"""2⁻⁵²: the relative rounding of a loss held in float64 (0.1 + 0.2 and 0.3 are one loss)."""


def newey_west_variance(d: np.ndarray, lag: int) -> float:
    """Long-run variance of the mean-zero part of ``d`` (T,) with Bartlett weights 1 − k/(lag+1).

    Bartlett weights keep the estimate non-negative (the rectangular kernel of the original
    Diebold–Mariano paper can go negative).
    """
    d = np.asarray(d, dtype=np.float64)
    T = d.size
    e = d - d.mean()
    v = float(e @ e) / T
    for k in range(1, min(lag, T - 1) + 1):
        w = 1.0 - k / (lag + 1.0)
        v += 2.0 * w * float(e[k:] @ e[:-k]) / T
    return v


def dm_long_run_variance(d: np.ndarray, lag: int) -> tuple[float, str]:
    """Long-run variance of ``d`` (T,) for the Diebold–Mariano test and the kernel that gave it.

    The loss differential of H-step forecasts is autocorrelated up to lag H − 1 (an MA(H − 1)), and
    Diebold and Mariano sum its autocovariances up to ``lag`` with equal weights (the rectangular
    kernel). Bartlett weights (Newey–West) under-weight them: for overlapping H-step losses the
    test then rejects a true null about twice as often as its level. But in a short sample, negative
    sample autocovariances can drive the rectangular sum towards zero (or below) and the statistic
    towards any size. So the larger of the two is used, and named: a difference is significant only
    when it is significant under both.
    """
    d = np.asarray(d, dtype=np.float64)
    T = d.size
    e = d - d.mean()
    gamma = [float(e @ e) / T] + [float(e[k:] @ e[:-k]) / T for k in range(1, min(lag, T - 1) + 1)]
    rectangular, bartlett = gamma[0] + 2.0 * sum(gamma[1:]), newey_west_variance(d, lag)
    return (rectangular, "rectangular") if rectangular >= bartlett else (bartlett, "bartlett")


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lag: int,
                    resolution: np.ndarray | float = 0.0) -> dict[str, Any]:
    """Diebold–Mariano test of equal expected loss of forecasts a and b, with the small-sample
    correction of Harvey, Leybourne and Newbold (1997).

    ``loss_a``, ``loss_b``: (T,) per-period losses in time order (one value per date). ``lag``:
    H − 1 for H-step forecasts (their errors overlap by H − 1 periods). With d = loss_a − loss_b,
    DM = mean(d) / sqrt(LRV / T) (LRV: :func:`dm_long_run_variance`, the larger of the rectangular
    and the Bartlett estimate), and the statistic reported is
    DM · sqrt((T + 1 − 2H + H(H − 1)/T) / T), two-sided p-value from Student's t with T − 1 degrees
    of freedom. Negative means a has the smaller loss. A loss that is not finite (a NaN or overflowed
    forecast) leaves the test undefined: NaN statistic and p-value, the kernel saying why.

    ``resolution`` ((T,) or a scalar, ≥ 0): per date, how far the rounding of the forecasts behind the
    losses can move d (:func:`squared_error_rounding`; 0: forecasts taken as exact); the float64 rounding
    of the losses themselves, 2⁻⁵²·(|loss_a| + |loss_b|), is added. A mean difference no larger than the
    mean of that bound (``resolution`` in the result) is one rounding alone can make or erase, so it is no
    difference: statistic 0, p = 1, whatever its t: the class shares as a float32 head's probabilities
    are the float64 shares but for ~1e-8 of their log loss, the same way on every date, and read
    p = 1e-217 ("beats the class shares").

    A difference that is the same on every date (each date's within its own rounding of one value, every
    date of one sign) has no variance to test it by: the statistic is ±inf and the p-value the exact sign
    test's, every one of the m = ⌈T/H⌉ dates H apart (whose losses share no realised return) of one sign:
    2^(1 − m), as :func:`ic_summary`'s t for an IC the same on every date.

    No p-value is below that: p = max(Student-t p, 2^(1 − m)) (:func:`dm_p_floor`). Over few dates the t
    p of a fixed gain with a little noise falls without bound as the noise shrinks (1e-11, 1e-44 over 4
    dates) while the same gain without noise reads the sign test's 0.125: the smallest p that m independent
    dates can give without assuming a distribution bounds them all, so a gain reads no more significant for
    its noise, and over 5 dates or fewer no difference is significant at 0.05. ``p_t`` is the Student-t p
    of the statistic reported (0 for ±inf, 1 for 0); ``p_floor`` (2^(1 − m)) is given where it raised p, and
    the kernel says so.
    """
    with np.errstate(invalid="ignore"):  # inf − inf: both forecasts overflowed on a date
        la, lb = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
        d = la - lb
        T, H = d.size, lag + 1
        bound = float(np.mean(resolution + LOSS_ULP * (np.abs(la) + np.abs(lb)))) if T else float("nan")
        if T and not np.isfinite(d).all():
            return {"statistic": float("nan"), "p_value": float("nan"), "mean_diff": float(d.mean()), "n": int(T),
                    "lag": int(lag), "kernel": "none (a loss is not finite)", "resolution": bound}
    correction = (T + 1 - 2 * H + H * (H - 1) / T) / T if T else 0.0
    # H ≥ T: every pair of dates shares realised returns; the long-run variance cannot be estimated and the
    # correction, 0 at H = T and T + 1, grows again beyond (a 200-step forecast over 11 dates read p = 1.5e-35)
    if T < 2 or H >= T or correction <= 0:
        return {"statistic": float("nan"), "p_value": float("nan"), "mean_diff": float(d.mean()) if T else float("nan"),
                "n": int(T), "lag": int(lag), "kernel": "none (too few dates)", "resolution": bound}
    lrv, kernel = dm_long_run_variance(d, lag)
    mean = float(d.mean())
    # how far rounding alone can move each date's d: the dates are one value when each lies within its own
    # rounding of a common one (one date's wide rounding does not make the others' spread rounding), and
    # every one of them is of the mean's sign (the sign test's claim)
    rounding = np.broadcast_to(resolution + LOSS_ULP * (np.abs(la) + np.abs(lb)), d.shape)
    one_value = lrv <= 0 or (float(np.max(d - rounding)) <= float(np.min(d + rounding))
                             and bool(np.all(d * math.copysign(1.0, mean) > 0)))
    if abs(mean) <= bound:  # within rounding (0 included): no difference to test
        return {"statistic": 0.0, "p_value": 1.0, "p_t": 1.0, "mean_diff": mean, "n": int(T), "lag": int(lag),
                "kernel": kernel, "resolution": bound}
    if one_value:
        # the same difference on every date: no spread, t infinite (or the 1e16 of the mean's rounding), which
        # Student's t reads as p = 0 over 4 dates; the exact sign test's p instead, every date of one sign, over
        # the dates H apart (their H-step losses share no realised return)
        stat = math.copysign(math.inf, mean)
        kernel = f"none (the same difference on every date: sign test over {dm_sign_dates(T, lag)} dates)"
    else:
        stat = mean / math.sqrt(lrv / T) * math.sqrt(correction)
    # Student's t (0 for the infinite statistic), then no smaller than the sign test's smallest p over the m dates
    # H apart: a fixed gain with a little noise read 1e-44 over 4 dates, and without noise the sign test's 0.125
    p_t, m = float(2.0 * stats.t.sf(abs(stat), df=T - 1)), dm_sign_dates(T, lag)
    floor = dm_p_floor(T, lag)
    out = {"statistic": float(stat), "p_value": max(p_t, floor), "p_t": p_t, "mean_diff": mean, "n": int(T),
           "lag": int(lag), "kernel": kernel, "resolution": bound}
    if floor > p_t:
        out["p_floor"] = floor
        if math.isfinite(stat):
            out["kernel"] = f"{kernel}; p raised to the sign test's smallest over {m} dates, 2^(1 − {m})"
    return out


def dm_sign_dates(T: int, lag: int) -> int:
    """m = ⌈T/H⌉ (H = ``lag`` + 1): the dates H apart among T, whose H-step losses share no realised return."""
    return (T - 1) // (lag + 1) + 1


def dm_p_floor(T: int, lag: int) -> float:
    """The smallest p-value :func:`diebold_mariano` gives over T dates at ``lag``: the exact sign test's of every
    one of the m = :func:`dm_sign_dates` dates of one sign, 2^(1 − m) (two-sided; 1 for a single date)."""
    return min(1.0, 2.0 ** (1 - dm_sign_dates(T, lag)))


def dm_floor_text(result: dict[str, Any]) -> str:
    """"" or the clause the report and the console add to their description of the Diebold–Mariano tests of
    ``result`` (a :func:`~hftraining.eval.forecasts.score` result, or eval.json's): no p below the sign test's
    smallest over the m = :func:`dm_sign_dates` dates H apart, with this split's m and 2^(1 − m), so that a p
    above the statistic's Student-t p is not read as a misprint. "" for an eval.json written before the floor
    (no ``p_t``: its p-values are Student's t alone) or without a test over the dates."""
    dz, H = result.get("dm_vs_zero") or {}, result.get("horizon")
    n = dz.get("n")
    if "p_t" not in dz or not isinstance(n, int) or not isinstance(H, int) or n <= H:
        return ""
    m = dm_sign_dates(n, H - 1)
    return (f", no p below the exact sign test's smallest over the {m} dates H = {H} apart of the {n} "
            f"(2^(1 − {m}) = {dm_p_floor(n, H - 1):.3g}; step h alone: over the dates h apart)")


def dm_statistic_text(dm: dict[str, Any], spec: str = ".3f") -> str:
    """A Diebold–Mariano statistic (a :func:`diebold_mariano` result, or as eval.json holds it) as the report, the
    model card and the console print it: ``format(statistic, spec)``; "+inf"/"-inf" for the infinite statistic of
    a difference the same on every date (null in eval.json: its sign is the mean difference's, beside a finite
    p); "—" where there is no statistic (no test)."""
    stat, p = dm.get("statistic"), dm.get("p_value")
    if isinstance(stat, (int, float)) and math.isfinite(stat):
        return format(stat, spec)
    if isinstance(stat, float) and math.isinf(stat):
        return "+inf" if stat > 0 else "-inf"
    mean = dm.get("mean_diff")
    if stat is None and isinstance(p, (int, float)) and math.isfinite(p) and isinstance(mean, (int, float)) \
            and math.isfinite(mean) and mean != 0:
        return "+inf" if mean > 0 else "-inf"
    return "—"


def per_date_mean(values: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """(N,) values → (D,) their mean per date, in date order. Averaging across symbols first makes
    the Diebold–Mariano series one observation per date, so the cross-sectional correlation of
    same-day errors cannot inflate the sample size."""
    u, inv = np.unique(np.asarray(dates), return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(u))
    counts = np.bincount(inv, minlength=len(u))
    return sums / counts


def squared_error_rounding(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(W,) per window of (W, H) forecasts ``pred``, the most that moving each forecast by its last float32
    digit (:data:`FORECAST_ULP` of its size) can move its squared error, averaged over the H steps:
    |(f + δ − y)² − (f − y)²| ≤ |δ|·(2|f − y| + |δ|) with |δ| ≤ FORECAST_ULP·|f|."""
    delta = FORECAST_ULP * np.abs(pred)
    return (delta * (2.0 * np.abs(pred - true) + delta)).mean(axis=1)


def dm_test(pred_a: np.ndarray, pred_b: np.ndarray, true: np.ndarray, dates: np.ndarray,
            lag: int | None = None) -> dict[str, Any]:
    """DM test on squared errors of (W, H) forecasts a vs b: the loss of a window is its mean squared
    error over the H steps, averaged over the symbols of each date, then tested at lag H − 1 (the
    H-step paths of consecutive dates share H − 1 realised returns; see :func:`diebold_mariano`), or at
    ``lag`` (one step h of an H-step forecast, passed as a (W, 1) column: h − 1). A mean difference within
    the float32 rounding of the two forecasts (:func:`squared_error_rounding`) is no difference."""
    H = true.shape[1]
    la = per_date_mean(((pred_a - true) ** 2).mean(axis=1), dates)
    lb = per_date_mean(((pred_b - true) ** 2).mean(axis=1), dates)
    with np.errstate(invalid="ignore"):  # a forecast that is not finite: the test is undefined anyway
        res = per_date_mean(squared_error_rounding(pred_a, true) + squared_error_rounding(pred_b, true), dates)
    out = diebold_mariano(la, lb, lag=H - 1 if lag is None else lag, resolution=res)
    out["loss"] = "squared error, mean over steps and over the symbols of each date"
    return out
