"""Are the forecast intervals calibrated? Coverage, width and the Winkler score per level and step,
and the two tests risk teams backtest a VaR model with (Kupiec 1995; Christoffersen 1998).

- **Kupiec** (unconditional coverage): with x misses in n intervals at nominal miss rate p,
  LR = −2 ln[(1−p)^(n−x) p^x] + 2 ln[(1−x/n)^(n−x) (x/n)^x]. Its p-value is exact where the misses
  are independent draws (design effect 1, below): P(LR(X) ≥ LR(x)) with X ~ Binomial(n, p), since its
  χ²(1) tail over-rejects in small samples (exactly calibrated 90% intervals over 20 windows were
  rejected 13% of the time at 5%, and 0 misses in 30 read p = 0.012 where the exact p is 0.050); with
  a design effect above 1 the χ²(1) tail of the corrected LR (there is no binomial to be exact about).
- **Christoffersen** (independence): from the transition counts n_ij of consecutive misses
  (i → j, 1 = miss) of one series, LR = −2 ln[(1−π)^(n00+n10) π^(n01+n11)] + 2 ln[(1−π0)^n00 π0^n01
  (1−π1)^n10 π1^n11] ~ χ²(1), π0 = n01/(n00+n01), π1 = n11/(n10+n11), π the miss rate. A panel's
  transitions are counted along each symbol's dates, and each symbol is a stratum with its own miss
  rate: pooled into one table, symbols whose rates differ (pooled conformal intervals cover a calm
  symbol more often than a volatile one) make a miss predict a miss with no clustering in time at
  all, and exactly independent misses were rejected 98% of the time at 5% (20 symbols, rates 0–22%).
  So the statistic is Cochran's stratified (Mantel–Haenszel) score statistic of the symbols' tables,
  (Σ_s (n00 n11 − n01 n10)/n)² / Σ_s n0· n1· n·0 n·1 / n³ ~ χ²(1) (per symbol s, n its transitions):
  the score test of b in logit P(miss) = a_s + b·prev with a rate a_s of each symbol's own; for one
  symbol it is the Pearson χ² of its table, the LR's first-order equivalent.

Both tests use the step-1 intervals: consecutive h-step outcomes share h − 1 returns, so misses of
step h > 1 cluster by construction.

The misses of different symbols on one date are not independent (one market move can take every
symbol outside its interval at once), and both tests assume independent draws: pooled over a
correlated panel they reject exactly calibrated intervals far more often than their level (a third
of the time at 5% with 20 symbols sharing half their variance). So each statistic is divided by its
first-order Rao–Scott design effect over date clusters (Rao & Scott 1981): Σ_d (Σ_{i∈d} s_i)² /
Σ_i s_i², s_i each observation's term of the test's score (Kupiec: miss − x/n; Christoffersen:
(prev − p̄_s)(miss − π_s) with the means of the observation's symbol s, the score of b above), floored
at 1 so clustering never adds evidence. One symbol (one observation per date): exactly 1, the classic tests
(Christoffersen's in its Pearson form).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import special, stats

from hftraining.core.fmt import fmt_p
from hftraining.models.intervals import Calibration, aci_bounds, calibrate_windows

SIGNIFICANCE = 0.05
ROLLING_DATES = 20  # coverage over time: step-1 coverage over this many dates


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def design_effect(score: np.ndarray, cluster: np.ndarray | None = None, *, codes: np.ndarray | None = None) -> float:
    """First-order Rao–Scott design effect of a test whose score is Σ_i ``score`` (n,), clustered by
    ``cluster`` (n,) ids: Σ_c (Σ_{i∈c} s_i)² / Σ_i s_i² (the cluster-robust over the unclustered
    variance of the score; exactly 1 with one observation per cluster), floored at 1 (1 when the
    score has no variance). ``codes`` (n,): the clusters as non-negative integer ids instead of
    ``cluster`` (e.g. a subset of one ``np.unique(..., return_inverse=True)`` of a whole panel, so
    many calls need not sort the ids each time); the same value, bit for bit, for such order-keeping ids."""
    s = np.asarray(score, dtype=np.float64)
    den = float(s @ s)
    if not den > 0:
        return 1.0
    if codes is None:
        sums = np.bincount(np.unique(np.asarray(cluster), return_inverse=True)[1].reshape(-1), weights=s)
    else:  # ids without a member dropped, as np.unique drops them: the same sums in the same order
        codes = np.asarray(codes).reshape(-1)
        sums = np.bincount(codes, weights=s)[np.bincount(codes) > 0]
    if sums.size == s.size:  # one observation per cluster: 1 exactly, not 1 + a rounding of the sums' order
        return 1.0
    return max(1.0, float(sums @ sums) / den)


def _binomial_lr(k: np.ndarray, n: int, p: float) -> np.ndarray:
    """Kupiec's LR of k misses in n at nominal miss rate p, for an array of counts k."""
    ph = k / n
    ll0 = special.xlogy(n - k, 1 - p) + special.xlogy(k, p)
    ll1 = special.xlogy(n - k, 1 - ph) + special.xlogy(k, ph)
    return np.maximum(-2.0 * (ll0 - ll1), 0.0)


def kupiec_exact_p(lr: float, n: int, p: float) -> float:
    """P(LR(X) ≥ ``lr``), X ~ Binomial(``n``, ``p``): the exact p-value of Kupiec's LR. The LR falls from
    X = 0 to X = np and rises after it, so the counts at least as far out are two tails, found by
    bisection and summed as a cdf and a survival function; a relative 1e-9 keeps a count whose LR ties
    the observed one (p = 0.5)."""
    thr = lr - 1e-9 * max(1.0, lr)

    def far(k: int) -> bool:
        return bool(_binomial_lr(np.array([float(k)]), n, p)[0] >= thr)

    mid = min(int(math.floor(n * p)), n)  # counts 0..mid: LR non-increasing; mid+1..n: non-decreasing
    tail = 0.0
    if far(0):  # the last count of 0..mid at least as far out
        lo, hi = 0, mid
        while lo < hi:
            m = (lo + hi + 1) // 2
            lo, hi = (m, hi) if far(m) else (lo, m - 1)
        tail += float(stats.binom.cdf(lo, n, p))
    if mid < n and far(n):  # the first count of mid+1..n at least as far out
        lo, hi = mid + 1, n
        while lo < hi:
            m = (lo + hi) // 2
            lo, hi = (lo, m) if far(m) else (m + 1, hi)
        tail += float(stats.binom.sf(lo - 1, n, p))
    return min(1.0, tail)


def kupiec(misses: int, n: int, p: float, miss: np.ndarray | None = None,
           cluster: np.ndarray | None = None) -> dict[str, float]:
    """The Kupiec unconditional-coverage test of ``misses`` in ``n`` at nominal miss rate ``p``.
    With the miss indicators ``miss`` (n,) and their date ids ``cluster`` (n,), the LR is divided by
    its Rao–Scott design effect over dates (module docstring); ``design_effect`` records it. The
    p-value is exact (:func:`kupiec_exact_p`) where the design effect is 1 and the χ²(1) tail of the
    corrected LR otherwise; ``reference`` says which ("exact binomial" or "chi2(1)")."""
    if n == 0:
        return {"lr": math.nan, "p_value": math.nan, "design_effect": 1.0, "reference": "none"}
    x = int(misses)
    phat = x / n
    ll0 = _xlogy(n - x, 1 - p) + _xlogy(x, p)
    ll1 = _xlogy(n - x, 1 - phat) + _xlogy(x, phat)
    deff = 1.0
    if miss is not None and cluster is not None:
        m = np.asarray(miss, dtype=np.float64)
        deff = design_effect(m - phat, cluster)
    lr = max(-2.0 * (ll0 - ll1), 0.0) / deff
    if deff == 1.0:  # independent draws: the binomial is the LR's exact law
        return {"lr": lr, "p_value": kupiec_exact_p(lr, n, p), "design_effect": deff, "reference": "exact binomial"}
    return {"lr": lr, "p_value": float(stats.chi2.sf(lr, 1)), "design_effect": deff, "reference": "chi2(1)"}


def christoffersen(sequences: list[np.ndarray], clusters: list[np.ndarray] | None = None) -> dict[str, float]:
    """The Christoffersen independence test of miss sequences (bool, each in time order; one per
    symbol), each sequence a stratum with its own miss rate (module docstring): ``lr`` is the χ²(1)
    statistic (Cochran's stratified score statistic; for one sequence the Pearson χ² of its
    transition table), ``transitions`` the table pooled over the sequences (for display). Undefined
    (NaN) when no sequence has both a miss and a hit among its earlier and among its later elements.
    ``clusters``: per sequence, the date id of each element (same shapes); a transition belongs to
    the date it ends on, and the statistic is divided by its Rao–Scott design effect over those dates
    (module docstring)."""
    n = np.zeros((2, 2))
    num = var = 0.0
    scores, when = [], []
    for k, s in enumerate(sequences):
        s = np.asarray(s, dtype=np.int64)
        if s.size < 2:
            continue
        prev, cur = s[:-1], s[1:]
        t = np.zeros((2, 2))
        np.add.at(t, (prev, cur), 1)
        n += t
        m = float(prev.size)
        num += (t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0]) / m  # Σ (prev − p̄)(cur − π) of this symbol, from counts
        var += t[0].sum() * t[1].sum() * t[:, 0].sum() * t[:, 1].sum() / m**3
        scores.append((prev - prev.mean()) * (cur - cur.mean()))
        if clusters is not None:
            when.append(np.asarray(clusters[k])[1:])
    transitions = [[int(v) for v in row] for row in n]
    if not var > 0:
        return {"lr": math.nan, "p_value": math.nan, "transitions": transitions, "design_effect": 1.0}
    deff = design_effect(np.concatenate(scores), np.concatenate(when)) if clusters is not None else 1.0
    lr = num * num / var / deff
    return {"lr": float(lr), "p_value": float(stats.chi2.sf(lr, 1)), "transitions": transitions, "design_effect": deff}


def winkler(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, level: float) -> float:
    """Mean Winkler score at ``level`` = 1 − α: width, plus 2/α times the distance by which y falls outside."""
    a = 1.0 - level
    with np.errstate(invalid="ignore"):  # a bound of +inf on both sides (an overflowed forecast): NaN, no warning
        w = (hi - lo) + (2 / a) * np.maximum(lo - y, 0) + (2 / a) * np.maximum(y - hi, 0)
    return float(np.mean(w)) if w.size else math.nan


def rolling_coverage(inside: np.ndarray, dates: np.ndarray, window: int = ROLLING_DATES) -> tuple[np.ndarray, np.ndarray]:
    """(dates (D − window + 1,), coverage over the ``window`` dates ending at each) of step-1 hits
    ``inside`` (W,). Only whole windows: the first ``window`` − 1 dates have no point of their own
    (a coverage over one or two dates is not a ``window``-date coverage); fewer dates than
    ``window``: both empty."""
    u, inv = np.unique(np.asarray(dates), return_inverse=True)
    inv = inv.reshape(-1)
    hits, n = np.bincount(inv, weights=inside.astype(np.float64), minlength=len(u)), np.bincount(inv, minlength=len(u))
    ch, cn = np.r_[0.0, np.cumsum(hits)], np.r_[0, np.cumsum(n)]
    if len(u) < window:
        return u[:0], np.zeros(0)
    return u[window - 1:], (ch[window:] - ch[:-window]) / np.maximum(cn[window:] - cn[:-window], 1)


def level_labels(levels: list[float], percent: bool = False) -> list[str]:
    """One label per level, distinct wherever the levels are: ``f"{level:g}"`` (eval.json's keys, "0.9") or,
    with ``percent``, ``f"{level:.0%}"`` ("90%"), with more digits for every level where two would print
    alike (0.9 and 0.90000001 are "0.9" and "0.90000001", "90.000000%" and "90.000001%"), since one label
    keyed two levels' figures and the second overwrote the first, or where a label would read as another
    level (0.995 is "99.5%", where "100%" claimed intervals that always cover; 0.975 is "97.5%", not "98%").
    Levels equal to the last digit keep their place in the list as a suffix ("0.1", "0.1 #2")."""
    vals = [float(v) for v in levels]
    unit = 100.0 if percent else 1.0
    for digits in (range(0, 16) if percent else range(6, 18)):
        out = [format(v, f".{digits}%" if percent else f".{digits}g") for v in vals]
        if len(set(out)) == len(set(vals)) and all(
                math.isclose(float(t.rstrip("%")) / unit, v, rel_tol=1e-12) for t, v in zip(out, vals)):
            break
    seen: dict[str, int] = {}
    for i, text in enumerate(out):
        seen[text] = seen.get(text, 0) + 1
        out[i] = text if seen[text] == 1 else f"{text} #{seen[text]}"
    return out


def interval_cells(lo: np.ndarray, hi: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Each interval [lo, hi] (any shape) against its realisation ``true`` (same shape), as bools:
    ``scored``: the realisation is finite (a missing label is no test of the interval: neither hit nor
    miss); ``unbounded``: (−inf, +inf), a conformal level with too few calibration windows or ACI at
    α ≤ 0 (it covers); ``nan``: a bound is NaN (a NaN forecast; a miss); ``infinite``: any other bound
    that is not finite (an overflowed forecast or quantile, e.g. a quantile head's +inf upper quantile: a
    failure to forecast, a miss, where ``true <= +inf`` would count it a hit); ``inside``: scored and
    covered by an interval that is finite or unbounded."""
    scored = np.isfinite(true)
    unbounded = (lo == -np.inf) & (hi == np.inf)
    nan = np.isnan(lo) | np.isnan(hi)
    infinite = ~nan & ~unbounded & (np.isinf(lo) | np.isinf(hi))
    with np.errstate(invalid="ignore"):
        inside = scored & ~infinite & (true >= lo) & (true <= hi)
    return {"scored": scored, "unbounded": unbounded, "nan": nan, "infinite": infinite, "inside": inside}


def interval_report(bounds: dict[float, tuple[np.ndarray, np.ndarray]], true: np.ndarray, dates: np.ndarray,
                    symbol_ids: np.ndarray, method: str, level_sig: float = SIGNIFICANCE,
                    in_sample: str | None = None, symbols: list[str] | None = None) -> dict[str, Any]:
    """Coverage, width, Winkler score and the two tests of each level's intervals (W, H) against
    ``true`` (W, H), with a sentence on whether they are calibrated. ``in_sample``: why the scored
    windows are not out of sample (e.g. "the val split holds the windows the intervals were
    calibrated on"), or None: the coverage is then reported but no calibration is claimed either
    way (``calibrated`` is None), since on its own calibration windows split conformal covers by
    construction and on the training windows the residuals are the fit's.

    A realisation that is not finite (a missing label) is left out of every figure but the width, and
    ``no_realisation`` counts the (window, step) intervals left out; a bound that is not finite other
    than an unbounded interval is a miss (:func:`interval_cells`), and ``not_finite`` gives its share.
    The levels are keyed by :func:`level_labels`.

    The coverage and the verdict are marginal over the panel: pooled intervals can cover a calm symbol
    always and a volatile one 3 times in 4 and still cover 90% of the pooled windows. So each level's
    ``per_symbol`` gives the step-1 coverage of each symbol's own windows (:func:`per_symbol_coverage`;
    ``symbols``: the names of ``symbol_ids``, else the ids), and when the symbols' coverage differs beyond
    chance (a symbol's own Kupiec test rejects at ``level_sig`` divided by the number of symbols, a
    Bonferroni bound that holds however the symbols' misses are correlated, and so does a symbol's test
    against the pooled miss rate: symbols all covered alike below or above the level differ by chance
    alone, and the pooled test speaks for them) the sentence says so; the verdict itself stays the pooled
    one."""
    out: dict[str, Any] = {"method": method, "levels": {}}
    true, dates, symbol_ids = np.asarray(true), np.asarray(dates), np.asarray(symbol_ids)
    scored = np.isfinite(true)  # (W, H)
    out["no_realisation"] = int((~scored).sum())
    s1 = scored[:, 0] if true.ndim == 2 and true.shape[1] else np.zeros(len(true), bool)  # step-1 windows scored
    d1, ids1 = dates[s1], symbol_ids[s1]
    order = np.lexsort((d1, ids1))  # by symbol, then date
    # each symbol's run of the (symbol, date) order: split where the symbol changes (a mask per symbol
    # over every window was symbols × windows: 1.25 GB at 2,000 symbols × 160 dates)
    sorted_ids = ids1[order]
    cut = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    keys, pct = level_labels(list(bounds)), level_labels(list(bounds), percent=True)
    sym_u, sym_of = np.unique(ids1, return_inverse=True)  # each scored step-1 window's symbol, 0..S-1
    names = [str(symbols[int(i)]) if symbols is not None else str(int(i)) for i in sym_u]
    bad, unbounded, parts, untested, spread = [], [], [], [], []
    for key, lab, (level, (lo, hi)) in zip(keys, pct, bounds.items()):
        cell = interval_cells(lo, hi, true)
        inside = cell["inside"]  # (W, H)
        miss1 = ~inside[s1, 0]
        k = kupiec(int(miss1.sum()), int(miss1.size), 1 - level, miss1, d1)
        runs = (np.split(miss1[order], cut), np.split(d1[order], cut)) if len(order) else ([], [])
        c = christoffersen(*runs)
        _, roll = rolling_coverage(inside[s1, 0], d1)
        with np.errstate(invalid="ignore"):
            width = np.where(cell["infinite"], np.nan, hi - lo)  # an overflowed bound has no width
        n_scored = scored.sum(axis=0)
        entry = {
            "coverage": float(inside.sum() / scored.sum()) if scored.any() else math.nan,
            "coverage_per_step": [float(inside[:, h].sum() / n_scored[h]) if n_scored[h] else math.nan
                                  for h in range(true.shape[1])],
            "mean_width_per_step": [math.inf if cell["unbounded"][:, h].any() else float(np.mean(width[:, h]))
                                    if len(width) else math.nan for h in range(true.shape[1])],
            "winkler_per_step": [winkler(lo[scored[:, h], h], hi[scored[:, h], h], true[scored[:, h], h], level)
                                 for h in range(true.shape[1])],
            "kupiec": k, "christoffersen": c,
            "rolling_coverage": {"dates": ROLLING_DATES, "min": float(roll.min()) if roll.size else math.nan,
                                 "max": float(roll.max()) if roll.size else math.nan},
            "unbounded": float(cell["unbounded"].mean()) if cell["unbounded"].size else 0.0,  # share with no bound
            "not_finite": float(cell["infinite"].mean()) if cell["infinite"].size else 0.0,  # share overflowed
            "per_symbol": per_symbol_coverage(inside[s1, 0], sym_of.reshape(-1), names, level, level_sig),
        }
        out["levels"][key] = entry
        ps = entry["per_symbol"]
        # beyond chance (Bonferroni): a symbol's own test rejects, and the symbols are not covered alike
        vp = ps.get("vs_pooled") or {}
        if ps["n_symbols"] >= 2 and max(ps["smallest_p"]["p_value"], vp["p_value"]) < level_sig / ps["n_symbols"]:
            spread.append(f"at {lab} from {ps['min']['coverage']:.3f} ({ps['min']['symbol']}) to {ps['max']['coverage']:.3f} "
                          f"({ps['max']['symbol']}) across the {ps['n_symbols']} symbols, {ps['kupiec_rejected']} of "
                          f"which reject their own Kupiec test at {level_sig:g} (the smallest p, "
                          f"{fmt_p(ps['smallest_p']['p_value'], SIGNIFICANCE)} for {ps['smallest_p']['symbol']}, and that "
                          f"of {vp['symbol']}'s {vp['coverage']:.3f} against the pooled {vp['pooled']:.3f}, "
                          f"{fmt_p(vp['p_value'], SIGNIFICANCE)}, are below {level_sig:g}/{ps['n_symbols']}: more than chance)")
        parts.append(f"{lab}: {entry['coverage_per_step'][0]:.3f}" if s1.any() else f"{lab}: undefined")
        if cell["unbounded"].any():
            unbounded.append(f"{lab} unbounded in {cell['unbounded'].mean():.0%} of the intervals "
                             f"({_why_unbounded(method, level, lab)})")
        if cell["infinite"].any():
            unbounded.append(f"{lab} not finite in {cell['infinite'].mean():.0%} of the intervals (a bound is "
                             "±inf there: the forecast or its quantile overflowed; counted as misses, not as covered)")
        if cell["nan"].any():
            unbounded.append(f"{lab} not a number in {cell['nan'].mean():.0%} of the intervals "
                             "(the forecast is NaN there; counted as misses)")
        for name, test in (("Kupiec", k), ("Christoffersen", c)):
            if math.isfinite(test["p_value"]) and test["p_value"] < level_sig:
                bad.append(f"{lab} fails {name} (p = {fmt_p(test['p_value'], SIGNIFICANCE)})")
            elif not math.isfinite(test["p_value"]):
                untested.append(f"{lab} {name}")
    if out["no_realisation"]:
        left = (f"{out['no_realisation']} of the {true.size} intervals left out (their realisation is not finite: "
                "a missing label is neither a hit nor a miss)")
        unbounded.append(left if s1.any() else f"{left}; no step-1 interval has a realisation, so there is no coverage "
                         "to test")
    head = f"{method} conformal intervals, step-1 coverage {', '.join(parts)}" + "".join(f"; {u}" for u in unbounded)
    if in_sample:
        out["in_sample"] = in_sample
        out["sentence"] = (f"{head}: in sample ({in_sample}), so these numbers say nothing about calibration; "
                           "score a split the model neither trained nor was calibrated on (test)")
        out["calibrated"] = None
        return out
    marginal = ("" if not spread else ". The coverage is marginal over the panel, not per symbol: step-1 coverage "
                "runs " + "; ".join(spread))
    if not bad and untested:  # a test that could not be computed (no miss, one date) rejects nothing: no claim
        out["sentence"] = (f"{head}: not shown calibrated ({', '.join(untested)} could not be computed: too few "
                           f"misses or dates; the tests that could do not reject at {level_sig:g}){marginal}")
        out["calibrated"] = None
        return out
    out["sentence"] = (f"{head}: calibrated (Kupiec and Christoffersen do not reject at {level_sig:g})" if not bad
                       else f"{head}: NOT calibrated ({'; '.join(bad)})") + marginal
    out["calibrated"] = not bad
    return out


def per_symbol_coverage(inside: np.ndarray, symbol_of: np.ndarray, names: list[str], level: float,
                        level_sig: float = SIGNIFICANCE) -> dict[str, Any]:
    """Step-1 coverage of each symbol's own windows: ``inside`` (n,) the hits, ``symbol_of`` (n,) each
    window's index into ``names`` → ``n_symbols``, the lowest and highest coverage (``min``, ``max``: symbol,
    coverage, windows), how many symbols' own Kupiec tests reject at ``level_sig`` (``kupiec_rejected``;
    one window per date of a symbol, so each is the exact binomial test) and the smallest of their
    p-values (``smallest_p``). ``vs_pooled``: the symbol whose misses are least likely at the miss rate of
    the windows pooled (the rate every symbol would share if the symbols were covered alike), with its
    coverage, the pooled coverage and that exact binomial p-value. A symbol's own test against the nominal
    rate rejects when every symbol misses alike at a rate the pooled test already rejects (intervals too
    narrow for the whole panel, or a calm test period): that is no difference between symbols, which
    ``vs_pooled`` alone measures. Ties go to the first symbol in ``names``' order."""
    n = np.bincount(symbol_of, minlength=len(names))
    hits = np.bincount(symbol_of, weights=inside.astype(np.float64), minlength=len(names))
    has = np.flatnonzero(n > 0)
    if not has.size:
        return {"n_symbols": 0}
    cov = hits[has] / n[has]
    misses = n[has] - np.rint(hits[has]).astype(np.int64)
    seen: dict[tuple[int, int], float] = {}
    for x, m in zip(misses.tolist(), n[has].tolist()):
        if (x, m) not in seen:
            seen[(x, m)] = kupiec(x, m, 1 - level)["p_value"]
    pv = np.array([seen[(x, m)] for x, m in zip(misses.tolist(), n[has].tolist())])
    rate = float(misses.sum() / n[has].sum())  # the pooled step-1 miss rate
    alike: dict[tuple[int, int], float] = {}
    for x, m in zip(misses.tolist(), n[has].tolist()):  # no miss, or every one missed: all symbols alike
        if (x, m) not in alike:
            alike[(x, m)] = kupiec(x, m, rate)["p_value"] if 0.0 < rate < 1.0 else 1.0
    pa = np.array([alike[(x, m)] for x, m in zip(misses.tolist(), n[has].tolist())])
    lo, hi, sm, sa = int(np.argmin(cov)), int(np.argmax(cov)), int(np.argmin(pv)), int(np.argmin(pa))
    def one(j: int) -> dict[str, Any]:
        return {"symbol": names[has[j]], "coverage": float(cov[j]), "windows": int(n[has[j]])}
    return {"n_symbols": int(has.size), "min": one(lo), "max": one(hi), "kupiec_rejected": int((pv < level_sig).sum()),
            "significance": level_sig,
            "smallest_p": {"symbol": names[has[sm]], "p_value": float(pv[sm])},
            "vs_pooled": {"symbol": names[has[sa]], "coverage": float(cov[sa]), "pooled": 1.0 - rate,
                          "p_value": float(pa[sa])}}


def _why_unbounded(method: str, level: float, label: str) -> str:
    """Why a conformal interval at ``level`` has no bound: the rank it needs exceeds the calibration windows
    with a finite forecast (a NaN forecast's residual ranks above every bound). ``label``: the level as the
    report prints it (:func:`level_labels`)."""
    if method == "aci":
        return "ACI's level asked for a rank beyond the calibration windows"
    need = math.ceil(round(level / (1 - level), 9))  # ⌈(n + 1)·level⌉ <= n  <=>  n >= level / (1 − level)
    return f"calibrated on fewer than the {need} windows a {label} interval needs, counting those with a finite forecast"


def calibrate(model, val, target_scale: float, ev, batch_size: int, device="cpu", precision: str = "fp32",
              q_levels: list[float] | None = None) -> Calibration | None:
    """The conformal calibration (``evaluation.intervals``, ``interval_method``, ``aci_gamma``) of
    ``model`` on the validation windows ``val`` (at most ``evaluation.max_val_windows``, whole dates),
    in the label's units; None without levels or validation windows."""
    if not ev.intervals or len(val) == 0:
        return None
    return calibrate_windows(model, val.last_dates(ev.max_val_windows), target_scale, ev.intervals, ev.interval_method,
                             ev.aci_gamma, batch_size, device, precision, q_levels)


def outcome_times(ws) -> np.ndarray:
    """(W, H) int64 ns UTC at which each step of the windows ``ws`` (a WindowSet) is realised: the
    time of the symbol's own row that step lands on (not the h-th next date of the pooled calendar)."""
    return ws.row_times[ws.ends[:, None] + np.arange(1, ws.horizon + 1)].astype(np.int64)


def forecast_intervals(cal: Calibration, pred: np.ndarray, true: np.ndarray | None, dates: np.ndarray,
                       quantiles: np.ndarray | None = None, *, known: np.ndarray | None = None
                       ) -> tuple[dict[float, tuple[np.ndarray, np.ndarray]], Calibration]:
    """The intervals of forecasts ``pred`` (W, H) made on ``dates``: fixed for split and cqr; for aci
    updated date by date with the outcomes ``true`` as they become known, at ``known`` (W, H)
    (:func:`outcome_times` of the windows; :func:`aci_bounds`) → (bounds, the calibration after them:
    for aci, its α now)."""
    if cal.method == "aci" and true is not None:
        if known is None:
            raise ValueError("forecast_intervals: aci needs the times its outcomes are known (known=outcome_times(ws))")
        bounds, alpha = aci_bounds(cal, pred, true, dates, known)
        return bounds, dataclasses.replace(cal, alpha=alpha)
    return cal.bounds(pred, quantiles), cal


def _num(v: Any, spec: str) -> str:
    """``format(v, spec)``; a dash where the figure is undefined (NaN, or null read back from eval.json), "inf"
    for an unbounded width."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_intervals(rep: dict[str, Any]) -> list[str]:
    """Table lines: coverage per step, mean width and Winkler score of step 1, the two tests' p-values."""
    lines = [f"intervals ({rep['method']} conformal): level, coverage per step, step-1 mean width, Winkler, "
             "Kupiec p, Christoffersen p"]
    for lab, e in zip(level_labels([float(lv) for lv in rep["levels"]], percent=True), rep["levels"].values()):
        cov = " ".join(_num(c, ".3f") for c in e["coverage_per_step"])
        lines.append(f"  {lab}  coverage {cov}  width {_num(e['mean_width_per_step'][0], '.4g')}  "
                     f"Winkler {_num(e['winkler_per_step'][0], '.4g')}  Kupiec p {fmt_p(e['kupiec']['p_value'], SIGNIFICANCE)}  "
                     f"Christoffersen p {fmt_p(e['christoffersen']['p_value'], SIGNIFICANCE)}")
    lines.append(rep["sentence"])
    return lines
