"""Conformal intervals by simulation: split's finite-sample coverage k/(n + 1) per step (k the rank
⌈(n + 1)(1 − α)⌉), CQR's with heads that cross, and what a NaN forecast does. A NaN residual in the
calibration counts as a score above every bound (the window's interval covers nothing), so a rank
that lands on one is unbounded, not NaN; and ACI counts a NaN forecast's interval as the miss the
report counts it, never as a hit that narrows the later intervals."""

from __future__ import annotations

import math

import numpy as np

from hftraining.eval.intervals import interval_report
from hftraining.models.intervals import Calibration, aci_bounds


def _mean_coverage(method: str, n: int, level: float, reps: int, rng, **kw) -> np.ndarray:
    """Coverage per step, averaged over ``reps`` calibrations of n iid windows, each scored on 50 new ones."""
    H, m = 2, 50
    cov = np.zeros(H)
    for _ in range(reps):
        pred = rng.normal(size=(n + m, H))
        true = pred + rng.standard_t(3, size=(n + m, H))
        q = None
        if method == "cqr":  # a head of random width, narrower than nothing on some windows (crossing)
            w = rng.uniform(-0.5, 2.0, size=(n + m, H))
            q = np.stack([pred - w, pred, pred + w], -1)
            kw = {"quantiles": q[:n], "q_levels": [(1 - level) / 2, 0.5, (1 + level) / 2]}
        cal = Calibration.fit(pred[:n], true[:n], [level], method, **kw)
        lo, hi = cal.bounds(pred[n:], None if q is None else q[n:])[level]
        cov += ((true[n:] >= lo) & (true[n:] <= hi)).mean(axis=0)
    return cov / reps


def test_split_and_cqr_cover_exactly_their_finite_sample_rank_per_step():
    """On exchangeable (continuous) scores a new one ranks uniformly among the n + 1, so the mean
    coverage is k/(n + 1): at least the level, at most the level + 1/(n + 1); and 1 (unbounded)
    when k > n (fewer windows than the level needs)."""
    rng = np.random.default_rng(0)
    reps = 600  # sd of the mean ≈ sqrt(k(n+1-k)/((n+1)²(n+2))/reps) < 0.007
    for method in ("split", "cqr"):
        for n, level in ((4, 0.8), (10, 0.8), (19, 0.9), (8, 0.9)):
            k = math.ceil((n + 1) * level - 1e-12)
            cov = _mean_coverage(method, n, level, reps, rng)
            if k > n:
                np.testing.assert_array_equal(cov, 1.0)
            else:
                expect = k / (n + 1)
                assert level <= expect <= level + 1 / (n + 1)
                np.testing.assert_allclose(cov, expect, atol=0.025, err_msg=f"{method} n={n} level={level}")


def test_a_rank_landing_on_a_nan_residual_is_unbounded_not_nan():
    rng = np.random.default_rng(1)
    n = 20  # 90%: the 19th smallest of 20
    pred, true = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    pred[:1, 0] = np.nan  # one NaN: the 19th smallest is still the largest finite score
    pred[:2, 1] = np.nan  # two: the 19th is a NaN window's, above every finite bound
    for method in ("split", "aci"):
        cal = Calibration.fit(pred, true, [0.9], method, gamma=0.05)
        ok = ~np.isnan(pred[:, 0])
        assert cal.radius[0, 0] == np.sort(np.abs(true - pred)[ok, 0])[-1]
        assert cal.radius[0, 1] == math.inf, cal.radius
        # saved and loaded: the same radius (a NaN was written as null and read back as inf)
        back = Calibration.from_dict(cal.to_dict())
        np.testing.assert_array_equal(back.radius, cal.radius)
        lo, hi = cal.bounds(np.zeros((3, 2)))[0.9]
        assert not np.isnan(lo).any() and not np.isnan(hi).any()
    # ACI's other ranks, read from the saved grid, stay finite and never below their order statistic
    cal = Calibration.fit(pred, true, [0.9], "aci", gamma=0.05)
    s = np.sort(np.where(np.isnan(pred[:, 1]), np.inf, np.abs(true[:, 1] - pred[:, 1])))
    for a in (0.2, 0.3, 0.5, 0.8):
        k = math.ceil((n + 1) * (1 - a) - 1e-12)
        r = float(cal.radius_at(np.array(a), 1))
        assert math.isfinite(r) and r >= s[k - 1], (a, r, s[k - 1])
        assert r <= s[k]  # no wider than the next order statistic
    assert not np.isnan(cal.grid).any()  # one NaN made the whole grid NaN
    np.testing.assert_array_equal(np.isinf(cal.grid[1]), np.linspace(0, 1, cal.grid.shape[1]) > (n - 3) / (n - 1))


def test_aci_counts_a_nan_forecasts_interval_as_a_miss():
    """Every step-1 forecast NaN: every date's miss share is 1, so α moves by γ(α − 1) per date,
    as the report counts those intervals (coverage 0); counted as hits, α rose by γα a date and the
    finite forecasts' intervals narrowed."""
    rng = np.random.default_rng(2)
    D, S, H, gamma, level = 30, 4, 2, 0.01, 0.9
    cal = Calibration.fit(np.zeros((200, H)), rng.normal(size=(200, H)), [level], "aci", gamma=gamma)
    d = np.repeat(np.arange(D), S)
    pred, true = rng.normal(size=(D * S, H)) * 0.1, rng.normal(size=(D * S, H))
    pred[:, 0] = np.nan
    known = d[:, None] + np.arange(1, H + 1)
    bounds, alpha = aci_bounds(cal, pred, true, d, known)
    np.testing.assert_allclose(alpha[0, 0], (1 - level) + gamma * D * ((1 - level) - 1))
    rep = interval_report(bounds, true, d, np.tile(np.arange(S), D), "aci")
    assert rep["levels"]["0.9"]["coverage_per_step"][0] == 0.0
    # step 2 is untouched by step 1's NaNs
    _, clean = aci_bounds(cal, np.nan_to_num(pred), true, d, known)
    assert alpha[0, 1] == clean[0, 1]


def test_aci_past_intervals_do_not_move_when_a_later_outcome_turns_nan():
    rng = np.random.default_rng(3)
    D, S, H = 40, 3, 2
    cal = Calibration.fit(np.zeros((100, H)), rng.normal(size=(100, H)), [0.8], "aci", gamma=0.05)
    d = np.repeat(np.arange(D), S)
    pred, true = rng.normal(size=(D * S, H)) * 0.1, rng.normal(size=(D * S, H))
    known = d[:, None] + np.arange(1, H + 1)
    base, _ = aci_bounds(cal, pred, true, d, known)
    changed = true.copy()
    changed[known > 20] = np.nan  # every outcome realised after date 20
    got, _ = aci_bounds(cal, pred, changed, d, known)
    upto = d <= 20
    for k in (0, 1):
        np.testing.assert_array_equal(got[0.8][k][upto], base[0.8][k][upto])
