"""Selection-bias-aware statistics: how much of a chosen configuration's Sharpe ratio survives the
search that chose it.

When N configurations (hyper-parameters, features, trading rules) are backtested and the best one
is kept, its Sharpe ratio is the maximum of N noisy estimates: even if every configuration is pure
noise, that maximum grows like √(2 log N) standard errors, and a plain "is SR > 0?" test is fooled.
Two corrections are provided, both pure numpy/scipy functions of return arrays (no model, no file):

* **Deflated Sharpe ratio** (DSR): the probabilistic Sharpe ratio (PSR) of the chosen series against
  the Sharpe ratio that the best of N null trials would reach by luck, rather than against 0. PSR
  accounts for the sample length and for non-normal returns (skewness, fat tails).
  - D. H. Bailey, M. López de Prado (2012), "The Sharpe Ratio Efficient Frontier", Journal of
    Risk 15(2): PSR = Φ((SR − SR*)·√(n−1) / √(1 − γ3·SR + (γ4−1)/4·SR²)).
  - D. H. Bailey, M. López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5): the
    benchmark SR0 = √V·((1−γ)·Φ⁻¹(1−1/N) + γ·Φ⁻¹(1−1/(N·e))), V the variance of the N trials'
    Sharpe ratios, γ the Euler–Mascheroni constant.
* **Probability of backtest overfitting** (PBO) by combinatorially symmetric cross-validation
  (CSCV): how often the configuration that is best in one half of the data ranks in the bottom
  half of the configurations in the other half.
  - D. H. Bailey, J. M. Borwein, M. López de Prado, Q. J. Zhu (2017), "The Probability of Backtest
    Overfitting", Journal of Computational Finance 20(4).

Units: every Sharpe ratio here is **per period** (the periods of the return series: days, bars),
because the PSR standard error is expressed in periods; only :func:`sharpe_ratio` annualises, and
only on request. Sample skewness and kurtosis are the biased (moment) estimators, for which
kurtosis ≥ 1 + skewness² holds exactly, so the PSR variance term can never go negative.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np
from scipy import stats

from hftraining.core.fmt import fmt, fmt_time

EULER_GAMMA = float(np.euler_gamma)
CSCV_MAX_SPLITS = 16  # the CSCV blocks of the PBO: at most 16 (12,870 combinations) ...
CSCV_MIN_BLOCK = 4  # ... of at least 4 periods each
FLAT_RTOL = 1e-12  # a set whose std is below this share of |mean| has no spread (pbo_cscv)
TIE_RTOL = 1e-10  # in-sample Sharpe ratios this close (relative) tie for the selection in pbo_cscv


def _series(returns: Any, name: str, min_len: int = 2) -> np.ndarray:
    """``returns`` as a finite 1-D float64 array of at least ``min_len`` values, else ValueError."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {r.shape}")
    if r.size < min_len:
        raise ValueError(f"{name} needs at least {min_len} values, got {r.size}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return r


def sharpe_ratio(returns: np.ndarray, periods_per_year: float | None = None) -> float:
    """Sharpe ratio (risk-free rate 0) of a (T,) return series: mean / std with ddof = 1.

    Per period unless ``periods_per_year`` is given, then × √periods_per_year (annualised). NaN
    when T < 2 or the series is constant (no spread: the ratio is undefined; "constant" is within
    ``FLAT_RTOL`` of the mean, as in :func:`_set_sharpe`: 0.3 and 0.1 + 0.2 are one return), as in
    :func:`hftraining.eval.backtest.performance`.
    """
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size < 2:
        return float("nan")
    sd = float(r.std(ddof=1))
    # equal values: the rounding of the mean leaves a spread of ~1e-18, and values equal but for their
    # last bits (sums in another order) one of ~1e-17: a Sharpe ratio of 1e16 either way
    if float(np.ptp(r)) <= FLAT_RTOL * abs(float(r.mean())) or not sd > 0:
        return float("nan")
    sr = float(r.mean()) / sd
    return sr * math.sqrt(periods_per_year) if periods_per_year is not None else sr


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n: int, skew: float, kurtosis: float) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark``, given an estimate ``sr``.

    ``sr``, ``sr_benchmark``: per-period Sharpe ratios; ``n``: number of return observations behind
    ``sr``; ``skew``: γ3 of the returns; ``kurtosis``: γ4, the plain (non-excess) kurtosis, 3 for a
    normal. Bailey & López de Prado (2012): Φ((SR − SR*)·√(n−1) / √(1 − γ3·SR + (γ4−1)/4·SR²)).
    Exactly 0.5 when ``sr == sr_benchmark``.
    """
    if not n >= 2:
        raise ValueError(f"n must be at least 2 observations, got {n}")
    if not all(math.isfinite(float(x)) for x in (sr, sr_benchmark, skew, kurtosis)):
        raise ValueError("sr, sr_benchmark, skew and kurtosis must be finite")
    var_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not var_term > 0:
        # Real distributions have γ4 ≥ 1 + γ3², which keeps this quadratic in SR non-negative.
        raise ValueError(f"1 − skew·SR + (kurtosis − 1)/4·SR² = {var_term:.3g} is not positive: inconsistent "
                         "moments (kurtosis must be the non-excess kurtosis, and kurtosis ≥ 1 + skew²)")
    z = (sr - sr_benchmark) * math.sqrt(n - 1.0) / math.sqrt(var_term)
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: float, var_sr: float) -> float:
    """Expected maximum of ``n_trials`` independent per-period Sharpe estimates whose true value is 0.

    ``var_sr``: the variance of the estimates across trials (per-period Sharpe units squared).
    Bailey & López de Prado (2014): √V·((1−γ)·Φ⁻¹(1−1/N) + γ·Φ⁻¹(1−1/(N·e))), an extreme-value
    approximation (8% low at N = 2, about 2% high at N = 10, under 1% from N = 100). ``n_trials`` may be a
    non-integer effective number of independent trials. N = 1 gives 0 (the formula tends to −∞
    there; the expected value of a single null estimate is 0), and the result is floored at 0 for
    N just above 1, since the maximum of mean-zero draws has a non-negative expectation.
    """
    if not (math.isfinite(n_trials) and n_trials >= 1):
        raise ValueError(f"n_trials must be a finite number ≥ 1, got {n_trials}")
    if not (math.isfinite(var_sr) and var_sr >= 0):
        raise ValueError(f"var_sr must be a finite variance ≥ 0, got {var_sr}")
    if n_trials == 1 or var_sr == 0:
        return 0.0
    z = (1.0 - EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n_trials) + EULER_GAMMA * stats.norm.ppf(
        1.0 - 1.0 / (n_trials * math.e))
    return max(0.0, math.sqrt(var_sr) * float(z))


def deflated_sharpe_ratio(returns: np.ndarray, trial_sharpes: np.ndarray,
                          n_trials: float | None = None) -> dict[str, Any]:
    """Deflated Sharpe ratio of the chosen configuration (Bailey & López de Prado 2014).

    ``returns``: (T,) per-period returns of the chosen configuration. ``trial_sharpes``: (N,) the
    per-period Sharpe ratios of every configuration tried, the chosen one included (same periods).
    ``n_trials``: the effective number of independent trials when the N trials are correlated
    (defaults to N). DSR = PSR of the chosen series with SR* = :func:`expected_max_sharpe` (N,
    V), V the ddof = 1 variance of ``trial_sharpes`` (0 when N = 1, so DSR is then PSR against 0),
    with the chosen series' own length, skewness and kurtosis.

    Returns {"sharpe": its per-period Sharpe, "sr0": the benchmark, "dsr": the probability that the
    true Sharpe exceeds sr0, "psr_zero": PSR against 0 (the undeflated test), "n_trials",
    "var_trial_sharpe", "n_periods", "skew", "kurtosis" (non-excess)}.
    """
    r = _series(returns, "returns", min_len=2)
    trials = _series(trial_sharpes, "trial_sharpes", min_len=1)
    sd = float(r.std(ddof=1))
    if float(np.ptp(r)) <= FLAT_RTOL * abs(float(r.mean())) or not sd > 0:  # as sharpe_ratio
        raise ValueError("returns are constant: the Sharpe ratio is undefined")
    n_eff = float(trials.size) if n_trials is None else float(n_trials)
    var_trials = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    sr = float(r.mean()) / sd
    skew = float(stats.skew(r, bias=True))
    kurt = float(stats.kurtosis(r, fisher=False, bias=True))
    sr0 = expected_max_sharpe(n_eff, var_trials)
    return {
        "sharpe": sr,
        "sr0": sr0,
        "dsr": probabilistic_sharpe_ratio(sr, sr0, r.size, skew, kurt),
        "psr_zero": probabilistic_sharpe_ratio(sr, 0.0, r.size, skew, kurt),
        "n_trials": n_eff,
        "var_trial_sharpe": var_trials,
        "n_periods": int(r.size),
        "skew": skew,
        "kurtosis": kurt,
    }


# --------------------------------------------------------------------------------------------
# Probability of backtest overfitting (CSCV)


def _set_sharpe(total: np.ndarray, sq: np.ndarray, cnt: np.ndarray, col_mean: np.ndarray) -> np.ndarray:
    """Per-period Sharpe of row subsets from their sums of centred returns ``total`` and centred squares
    ``sq`` (C, N), row counts ``cnt`` (C, 1) and each column's full-sample mean ``col_mean`` (N,).

    Centring by the column mean first keeps the variance free of the cancellation that raw sums of
    squares suffer; the mean is shifted back for the numerator. A subset with no spread gets
    +inf / −inf by the sign of its mean and 0 when the mean is 0 too, so a riskless gain ranks above
    every risky trial and a flat do-nothing trial ranks as Sharpe 0, instead of NaN breaking the order.
    "No spread" is std ≤ ``FLAT_RTOL`` · |mean|.
    """
    m_c = total / cnt
    var = np.maximum(sq - cnt * m_c * m_c, 0.0) / (cnt - 1.0)
    mean = col_mean + m_c
    sd = np.sqrt(var)
    # A constant column leaves a spread of rounding error (its float mean is not exactly the
    # constant), hence a relative threshold rather than sd == 0.
    flat = sd <= FLAT_RTOL * np.abs(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(flat, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)), mean / sd)
    return sr


def pbo_cscv(matrix: np.ndarray, n_splits: int = 16) -> dict[str, Any]:
    """Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2017).

    ``matrix``: (T periods × N trials) per-period returns, one column per configuration, rows in time
    order. The rows are cut into ``n_splits`` = S contiguous blocks (``np.array_split``: sizes differ
    by at most one row when S does not divide T). For each of the C(S, S/2) ways to pick S/2 blocks
    as the in-sample set (the rest is out-of-sample), the trial with the best in-sample Sharpe is
    "selected", and its out-of-sample Sharpe is ranked among the N trials: relative rank
    ω̄ = rank / (N + 1) (rank 1 = worst), logit λ = log(ω̄ / (1 − ω̄)). PBO = share of combinations
    with λ ≤ 0, i.e. where the in-sample winner is at or below the out-of-sample median.

    Ties: out-of-sample ties get the average rank (as ``scipy.stats.rankdata``), so ω̄ stays in
    (0, 1) and λ finite. When several trials tie for the best in-sample Sharpe (duplicated
    configurations; "tied" is within ``TIE_RTOL`` relative), ω̄ is the mean of their relative
    ranks, the expected rank of a pick at random among them, instead of favouring whichever column
    comes first. Sharpe ratios of sets with no spread follow :func:`_set_sharpe` (±inf or 0).

    Cost: O(C(S, S/2) · N) memory and time from per-block sums (S = 16: 12,870 combinations).

    Returns {"pbo", "n_combinations", "n_splits", "n_trials", "n_periods", "logits": λ per
    combination in ``itertools.combinations(range(S), S/2)`` order of the in-sample blocks,
    "prob_oos_loss": share of combinations whose selected trial has an out-of-sample Sharpe < 0
    (tied winners count pro rata)}.
    """
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"matrix must be 2-D (T periods × N trials), got shape {x.shape}")
    T, N = x.shape
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)):
        raise ValueError(f"n_splits must be an integer, got {n_splits!r}")
    S = int(n_splits)
    if S < 2 or S % 2:
        raise ValueError(f"n_splits must be even and ≥ 2, got {S}")
    if T < max(S, 4):
        # Every block needs a row, and each half needs two rows for a standard deviation.
        raise ValueError(f"matrix has {T} periods: needs at least max(n_splits, 4) = {max(S, 4)}")
    if N < 2:
        raise ValueError(f"matrix needs at least 2 trials (columns) to rank, got {N}")
    if not np.all(np.isfinite(x)):
        raise ValueError("matrix contains NaN or infinite values")

    col_mean = x.mean(axis=0)
    c = x - col_mean
    blocks = np.array_split(np.arange(T), S)
    b_sum = np.stack([c[idx].sum(axis=0) for idx in blocks])  # (S, N)
    b_sq = np.stack([(c[idx] ** 2).sum(axis=0) for idx in blocks])  # (S, N)
    b_cnt = np.array([len(idx) for idx in blocks], dtype=np.float64)  # (S,)

    combos = np.array(list(itertools.combinations(range(S), S // 2)), dtype=np.intp)  # (C, S/2)
    C = len(combos)
    member = np.zeros((C, S), dtype=np.float64)
    member[np.arange(C)[:, None], combos] = 1.0
    # In-sample sums are the member blocks' sums; out-of-sample sums are the totals minus those.
    is_sum, is_sq, is_cnt = member @ b_sum, member @ b_sq, (member @ b_cnt)[:, None]
    oos_sum, oos_sq, oos_cnt = b_sum.sum(0) - is_sum, b_sq.sum(0) - is_sq, T - is_cnt
    sr_is = _set_sharpe(is_sum, is_sq, is_cnt, col_mean)  # (C, N)
    sr_oos = _set_sharpe(oos_sum, oos_sq, oos_cnt, col_mean)  # (C, N)

    # The in-sample winners, ties included. "Tied" means within 1e-10 relative: trials with equal
    # in-sample data reach their Sharpe through different roundings (their column means differ).
    top = sr_is.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        threshold = np.where(np.isfinite(top), top - TIE_RTOL * np.abs(top), top)
    best = sr_is >= threshold  # (C, N)
    # Average ranks (ties share the mean of their positions); ±inf Sharpe ratios rank as extremes.
    ranks = stats.rankdata(sr_oos, axis=1, method="average")  # (C, N), 1 = worst
    n_best = best.sum(axis=1)
    omega = np.where(best, ranks, 0.0).sum(axis=1) / n_best / (N + 1.0)  # (C,)
    logits = np.log(omega / (1.0 - omega))
    loss = np.where(best, sr_oos < 0, False).sum(axis=1) / n_best  # share of the winners losing OOS
    return {
        "pbo": float(np.mean(logits <= 0)),
        "n_combinations": int(C),
        "n_splits": S,
        "n_trials": int(N),
        "n_periods": int(T),
        "logits": [float(v) for v in logits],
        "prob_oos_loss": float(np.mean(loss)),
    }


# --------------------------------------------------------------------------------------------
# The statistics of a selection among trials (tune's trials, walk-forward's candidate strategies)


def cscv_splits(n_periods: int) -> int:
    """The CSCV block count for ``n_periods`` rows: the largest even S ≤ 16 with at least 4 periods
    per block (0 when not even 2 blocks fit)."""
    s = min(CSCV_MAX_SPLITS, max(0, int(n_periods)) // CSCV_MIN_BLOCK)
    return s - s % 2


def align_series(series: dict[Any, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """{name: (dates (T_i,) int64 ns, each date once; returns (T_i,))} → (the dates common to every
    series, ascending (T,); the (T × N) matrix of their returns on those dates, columns in the
    dict's order)."""
    if not series:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    dated = [(np.asarray(d, dtype=np.int64), np.asarray(r, dtype=np.float64)) for d, r in series.values()]
    common = functools.reduce(np.intersect1d, [d for d, _ in dated])
    cols = []
    for d, r in dated:
        order = np.argsort(d, kind="stable")
        cols.append(r[order[np.searchsorted(d[order], common)]])
    return common, np.stack(cols, axis=1) if len(common) else np.zeros((0, len(dated)))


def selection_stats(series: dict[Any, tuple[np.ndarray, np.ndarray]], chosen: Any, trials_are: str,
                    n_tried: int | None = None) -> dict[str, Any]:
    """The selection-bias statistics of picking ``chosen`` among the trials ``series`` ({name:
    (dates, per-period returns)}, aligned on their common dates by :func:`align_series`).

    ``dsr``: the Deflated Sharpe Ratio of ``chosen``'s series given the per-period Sharpe ratios of
    all N trials (:func:`hftraining.eval.selection.deflated_sharpe_ratio`, n_trials = ``n_tried``, default
    N); ``n_tried`` ≥ N counts every configuration the choice was made among, also those without a
    series (a tuner's pruned trials: they were judged on the same data and dropped, so the best of
    them all is what chance had to beat; their Sharpe ratios being unknown, the variance across
    trials is that of the N series); ``pbo``:
    the probability of backtest overfitting by CSCV (:func:`~hftraining.eval.selection.pbo_cscv`,
    n_splits = :func:`cscv_splits` of the common dates). A flat series (no position on any date)
    counts as Sharpe 0. Either is None with ``dsr_skipped`` / ``pbo_skipped`` saying why (PBO: fewer
    than 2 trials, trials whose series are all identical (no choice was made), or fewer than 2 blocks
    of 4 common dates; DSR: ``chosen`` has no series, fewer than 2 common dates, or constant returns).
    ``trials_are`` says what the trials are."""
    names = list(series)
    dates, m = align_series(series)
    T, N = m.shape
    if n_tried is None:
        n_tried = N
    elif isinstance(n_tried, bool) or not isinstance(n_tried, (int, np.integer)) or n_tried < N:
        raise ValueError(f"n_tried must be an integer ≥ the {N} trial(s) with a series, got {n_tried!r}")
    sharpes = [sharpe_ratio(m[:, j]) for j in range(N)]
    sharpes = [0.0 if not np.isfinite(v) and T >= 2 and np.all(m[:, j] == 0) else v for j, v in enumerate(sharpes)]
    out: dict[str, Any] = {
        "trials_are": trials_are, "chosen": chosen, "trials": names, "n_trials": N, "n_tried": int(n_tried),
        "n_periods": int(T),
        "from": fmt_time(dates[0]) if T else None, "to": fmt_time(dates[-1]) if T else None,
        "trial_sharpes": dict(zip(names, sharpes)),
        "dsr": None, "dsr_skipped": None, "deflated_sharpe": None,
        "pbo": None, "pbo_skipped": None, "pbo_cscv": None,
    }
    if chosen is None:
        out["dsr_skipped"] = "no trial was chosen"
    elif chosen not in series:
        out["dsr_skipped"] = f"the chosen trial {chosen} has no out-of-sample series"
    elif N == 1 and n_tried > 1:
        out["dsr_skipped"] = (f"1 of the {n_tried} trials has an out-of-sample series: the spread of the trials' "
                              "Sharpe ratios, which sets the best of them by chance, is unknown")
    elif n_tried > N and T and np.all(m == m[:, :1]):  # as one series among n_tried: no spread to deflate by
        out["dsr_skipped"] = (f"the {N} trials with an out-of-sample series have identical series and {n_tried - N} "
                              "others have none: the spread of the trials' Sharpe ratios, which sets the best of them "
                              "by chance, is unknown")
    elif T < 2:
        out["dsr_skipped"] = f"{T} date(s) common to the {N} trials' series: a Sharpe ratio needs at least 2"
    elif not all(np.isfinite(sharpes)):
        bad = [n for n, v in zip(names, sharpes) if not np.isfinite(v)]
        out["dsr_skipped"] = f"constant non-zero returns on the common dates (trial(s) {', '.join(map(str, bad))}): Sharpe undefined"
    elif np.all(m[:, names.index(chosen)] == m[0, names.index(chosen)]):
        out["dsr_skipped"] = f"the chosen trial {chosen} has constant returns on the common dates: its Sharpe ratio is undefined"
    else:
        out["deflated_sharpe"] = deflated_sharpe_ratio(m[:, names.index(chosen)], np.asarray(sharpes), int(n_tried))
        out["dsr"] = out["deflated_sharpe"]["dsr"]
    splits = cscv_splits(T)
    if N < 2:
        out["pbo_skipped"] = f"{N} trial(s) with an out-of-sample series: CSCV ranks at least 2"
    elif T and np.all(m == m[:, :1]):
        # every trial ties in and out of sample at the median rank, λ = 0, which pbo_cscv counts as
        # overfit: PBO 1 for a search that selected nothing
        out["pbo_skipped"] = (f"the {N} trials' series are identical on the {T} common dates: there was no choice "
                              "among them, so no overfitting of one to assess")
    elif splits < 2:
        out["pbo_skipped"] = (f"{T} date(s) common to the trials' series: CSCV needs at least 2 blocks of "
                              f"{CSCV_MIN_BLOCK} ({2 * CSCV_MIN_BLOCK} dates)")
    else:
        res = pbo_cscv(m, splits)
        res.pop("logits")  # one per combination (up to 12,870): not for a report
        out["pbo_cscv"], out["pbo"] = res, res["pbo"]
    return out


def format_selection(sel: dict[str, Any], chosen_label: str) -> str:
    """Two lines: the Deflated Sharpe Ratio of the chosen trial and the PBO (or why not computed)."""
    n, tried = sel["n_trials"], sel.get("n_tried", sel["n_trials"])
    over = f"{n} trial(s)" if tried == n else f"{tried} trial(s), {n} with an out-of-sample series"
    head = f"selection bias over {over} ({sel['trials_are']}), {sel['n_periods']} common periods:"
    d = sel.get("deflated_sharpe")
    if d is not None:
        dsr = (f"  deflated Sharpe ratio of {chosen_label}: {fmt(d['dsr'], '.3f')} (per-period Sharpe {fmt(d['sharpe'], '.4f')} "
               f"vs {fmt(d['sr0'], '.4f')} expected of the best of {d['n_trials']:g} null trials; PSR vs 0 {fmt(d['psr_zero'], '.3f')})")
    else:
        dsr = f"  deflated Sharpe ratio of {chosen_label}: not computed ({sel['dsr_skipped']})"
    p = sel.get("pbo_cscv")
    if p is not None:
        pbo = (f"  probability of backtest overfitting (CSCV): {fmt(p['pbo'], '.3f')} ({p['n_splits']} blocks, "
               f"{p['n_combinations']} combinations; the in-sample best loses out of sample in {fmt(p['prob_oos_loss'], '.1%')})")
    else:
        pbo = f"  probability of backtest overfitting (CSCV): not computed ({sel['pbo_skipped']})"
    return "\n".join([head, dsr, pbo])
