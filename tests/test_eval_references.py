"""The statistics the verdict rests on, pinned to independent computations: scipy's paired and
one-sample t tests, statsmodels' HAC standard errors (when statsmodels is importable), scipy's
binomial likelihood and G-test of independence, pandas' drawdown, and a backtest kept in dollars."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hftraining.eval import metrics as M
from hftraining.eval.backtest import hold, performance, simulate
from hftraining.eval.forecasts import _ic_p_value
from hftraining.eval.intervals import christoffersen, kupiec


# --------------------------------------------------------------------------------------------
# Diebold–Mariano (Diebold & Mariano 1995; Harvey, Leybourne & Newbold 1997)


def test_dm_at_lag_0_is_scipys_paired_t_test():
    """One-step forecasts: the HLN-corrected DM statistic with the lag-0 variance is exactly the
    paired t statistic (ddof 1), and its p-value the same Student t with T − 1 degrees of freedom."""
    rng = np.random.default_rng(0)
    la, lb = rng.gamma(2.0, 1.0, size=25), rng.gamma(2.0, 1.1, size=25)
    dm = M.diebold_mariano(la, lb, lag=0)
    ref = stats.ttest_rel(la, lb)
    assert dm["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert dm["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_dm_long_run_variances_are_the_textbook_sums():
    """The rectangular LRV is γ0 + 2 Σ_{k≤lag} γk (autocovariances with divisor T, as
    Diebold–Mariano and HLN); the Bartlett one weights γk by 1 − k/(lag + 1) (Newey–West); the
    statistic is mean / √(LRV / T) × √((T + 1 − 2H + H(H − 1)/T) / T), H = lag + 1, read against t(T − 1)."""
    rng = np.random.default_rng(1)
    T, lag = 40, 4
    d = np.convolve(rng.normal(size=T + lag), np.ones(lag + 1), mode="valid") + 0.3  # an MA(4), mean 0.3
    e = d - d.mean()
    gamma = np.array([np.sum(e[k:] * e[: T - k]) / T for k in range(lag + 1)])
    rect = gamma[0] + 2 * gamma[1:].sum()
    bart = gamma[0] + 2 * sum((1 - k / (lag + 1)) * gamma[k] for k in range(1, lag + 1))
    assert M.newey_west_variance(d, lag) == pytest.approx(bart, rel=1e-12)
    lrv, kernel = M.dm_long_run_variance(d, lag)
    assert lrv == pytest.approx(max(rect, bart), rel=1e-12) and kernel == ("rectangular" if rect >= bart else "bartlett")
    H = lag + 1
    stat = d.mean() / math.sqrt(max(rect, bart) / T) * math.sqrt((T + 1 - 2 * H + H * (H - 1) / T) / T)
    out = M.diebold_mariano(d, np.zeros(T), lag=lag)
    assert out["statistic"] == pytest.approx(stat, rel=1e-12)
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(abs(stat), df=T - 1), rel=1e-10)


def test_newey_west_variance_is_statsmodels_hac_of_the_mean():
    """T · Var_HAC(mean) of statsmodels (OLS on a constant, Bartlett kernel, maxlags = lag, no
    small-sample correction) is the Newey–West long-run variance."""
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(2)
    x = rng.normal(0.1, 1.0, size=60).cumsum() * 0.1 + rng.normal(size=60)
    for lag in (0, 1, 3, 7):
        fit = sm.OLS(x, np.ones((x.size, 1))).fit(cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False})
        assert M.newey_west_variance(x, lag) == pytest.approx(x.size * fit.bse[0] ** 2, rel=1e-10)


# --------------------------------------------------------------------------------------------
# IC summary: the t statistic that the cross-section verdict reads against Student's t


def test_ic_t_stat_at_lag_0_is_the_one_sample_t_test():
    """Per-date ICs of 1-step forecasts are tested at lag 0 against t(T − 1): the statistic must be
    the one-sample t statistic (sample std, ddof 1), for which that reference is exact; with the
    population std it is √(T/(T − 1)) too large and a true null is rejected too often."""
    rng = np.random.default_rng(3)
    x = rng.normal(0.02, 0.1, size=15)
    s = M.ic_summary(x, lag=0)
    ref = stats.ttest_1samp(x, 0.0)
    assert s["t_stat"] == pytest.approx(ref.statistic, rel=1e-12)
    assert _ic_p_value(s) == pytest.approx(ref.pvalue, rel=1e-10)


def test_ic_t_test_holds_its_level_over_a_short_split():
    """10 dates of pure-noise ICs: the share of p < 0.05 is 5% within simulation error (10,000 draws:
    se 0.22%); the population-std statistic rejected 5.8–6% of the time here."""
    rng = np.random.default_rng(4)
    p = np.array([_ic_p_value(M.ic_summary(rng.normal(size=10), lag=0)) for _ in range(10000)])
    assert abs(np.mean(p < 0.05) - 0.05) < 0.006


def test_ic_t_stat_is_statsmodels_hac_t_with_the_small_sample_correction():
    """At any lag: mean / √(LRV / (T − 1)), statsmodels' HAC t of the mean with ``use_correction``."""
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(5)
    x = rng.normal(0.03, 0.1, size=30)
    for lag in (0, 1, 4):
        fit = sm.OLS(x, np.ones((x.size, 1))).fit(cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": True})
        assert M.ic_summary(x, lag)["t_stat"] == pytest.approx(fit.tvalues[0], rel=1e-10)


def test_paired_ic_difference_is_the_paired_t_test_of_the_two_ic_series():
    """The paired test of the model's rank IC against a baseline's is the t test of the per-date
    differences: scipy's ttest_rel on the two per-date rank IC series."""
    rng = np.random.default_rng(6)
    dates = np.repeat(np.arange(20), 8)
    true = rng.normal(size=dates.size)
    a, b = true + rng.normal(0, 2, size=dates.size), rng.normal(size=dates.size)
    _, ia = M.cross_sectional_ic_series(a, true, dates, rank=True)
    _, ib = M.cross_sectional_ic_series(b, true, dates, rank=True)
    s = M.ic_summary(ia - ib, lag=0)
    ref = stats.ttest_rel(ia, ib)
    assert s["t_stat"] == pytest.approx(ref.statistic, rel=1e-12) and _ic_p_value(s) == pytest.approx(ref.pvalue, rel=1e-10)
    assert s["icir"] == pytest.approx((ia - ib).mean() / (ia - ib).std(ddof=1), rel=1e-12)


# --------------------------------------------------------------------------------------------
# Directional accuracy and pooled metrics


def test_directional_accuracy_is_the_share_of_matching_signs():
    rng = np.random.default_rng(7)
    p, t = rng.normal(size=500), rng.normal(size=500)
    assert M.directional_accuracy(p, t) == pytest.approx(np.mean(np.sign(p) == np.sign(t)), abs=0)
    assert M.mse_ratio(M.mse(p, t), M.mse(np.zeros(500), t)) == pytest.approx(np.mean((p - t) ** 2) / np.mean(t ** 2))


# --------------------------------------------------------------------------------------------
# Interval coverage tests (Kupiec 1995; Christoffersen 1998)


def test_kupiec_is_the_binomial_likelihood_ratio():
    """LR = 2 [log Binom(x; n, x/n) − log Binom(x; n, p)] (the binomial coefficient cancels); its p-value,
    of independent draws, the exact P(LR(X) ≥ LR(x)) with X ~ Binomial(n, p)."""
    for x, n, p in ((3, 250, 0.01), (17, 200, 0.1), (0, 50, 0.05), (50, 50, 0.2)):
        lr = 2 * (stats.binom.logpmf(x, n, x / n) - stats.binom.logpmf(x, n, p))
        every = np.arange(n + 1)
        lrs = 2 * (stats.binom.logpmf(every, n, every / n) - stats.binom.logpmf(every, n, p))
        exact = stats.binom.pmf(every, n, p)[lrs >= lr - 1e-9 * max(1.0, lr)].sum()
        k = kupiec(x, n, p)
        assert k["lr"] == pytest.approx(lr, rel=1e-10, abs=1e-12) and k["p_value"] == pytest.approx(exact, rel=1e-9)


def test_christoffersen_of_one_sequence_is_the_pearson_test_of_its_transition_table():
    """For one sequence, the independence statistic of a first-order Markov chain of misses is the
    Pearson chi-square test of independence of its 2×2 table of (previous, current) miss, without
    continuity correction (the score test, first-order equal to Christoffersen's LR)."""
    rng = np.random.default_rng(8)
    s = rng.random(300) < 0.1
    c = christoffersen([s])
    chi2, p, dof, _ = stats.chi2_contingency(np.array(c["transitions"]), correction=False)
    assert dof == 1 and c["lr"] == pytest.approx(chi2, rel=1e-10) and c["p_value"] == pytest.approx(p, rel=1e-8)


def test_design_effect_undoes_a_panel_of_identical_copies():
    """m symbols whose misses are the same on every date carry the information of one: the
    Rao–Scott design effect is m and the corrected LR is the LR of one series."""
    rng = np.random.default_rng(9)
    miss = rng.random(120) < 0.2
    dates = np.arange(120)
    one_k, one_c = kupiec(int(miss.sum()), 120, 0.1), christoffersen([miss])
    m = 5
    panel_miss, panel_dates = np.tile(miss, m), np.tile(dates, m)
    k = kupiec(int(panel_miss.sum()), 120 * m, 0.1, panel_miss, panel_dates)
    c = christoffersen([miss] * m, [dates] * m)
    assert k["design_effect"] == pytest.approx(m) and k["lr"] == pytest.approx(one_k["lr"], rel=1e-10)
    assert c["design_effect"] == pytest.approx(m) and c["lr"] == pytest.approx(one_c["lr"], rel=1e-10)


# --------------------------------------------------------------------------------------------
# Backtest: a book kept in dollars, and pandas' drawdown


def _dollar_book(target: np.ndarray, R: np.ndarray, every: int, cost: float) -> tuple[np.ndarray, np.ndarray]:
    """An independent book: capital V and dollar holdings; on a rebalancing date t the holdings go to
    target[t]·V (paying ``cost`` per dollar traded, bought or sold), in between nothing trades; the
    holdings of t earn the simple return of t + 1. → (net returns (T − 1,), turnover (T − 1,))."""
    simple = np.expm1(R)
    T, N = target.shape
    V, h = 1.0, np.zeros(N)
    rets, turns = [], []
    for t in range(T - 1):
        new = target[t] * V if t % every == 0 else h
        traded = np.abs(new - h).sum()
        pnl = (new * simple[t + 1]).sum() - cost * traded
        turns.append(traded / V)
        rets.append(pnl / V)
        h, V = new * (1 + simple[t + 1]), V + pnl
    return np.array(rets), np.array(turns)


@pytest.mark.parametrize("every", [1, 3])
def test_simulate_matches_a_book_kept_in_dollars(every):
    """Weights of t earn the return of t + 1; between rebalancing dates the holdings drift and
    nothing trades; turnover is Σ|traded dollars| / capital (one side: a buy and a sell each count)."""
    rng = np.random.default_rng(10)
    T, N = 30, 4
    R = rng.normal(0, 0.02, size=(T, N))
    target = rng.normal(size=(T, N))
    target /= np.abs(target).sum(axis=1, keepdims=True)  # gross 1, long-short
    w = hold(target, R, every)
    sim = simulate(w, R, np.arange(T))
    ref_r, ref_turn = _dollar_book(target, R, every, 0.0)
    np.testing.assert_allclose(sim.returns, ref_r, rtol=0, atol=1e-14)
    np.testing.assert_allclose(sim.turnover, ref_turn, rtol=0, atol=1e-12)
    # with costs, the book pays them out of its capital, so between rebalancing dates its holdings are a
    # share (1 + gross) / (1 + net) larger of it than the simulation's drifted weights: a difference of
    # cost × turnover × the period's return (second order, here under 5% of the cost rate)
    c = 10e-4
    sim_c = simulate(w, R, np.arange(T), cost_bps=7, slippage_bps=3)
    ref_c, _ = _dollar_book(target, R, every, c)
    np.testing.assert_allclose(sim_c.returns, ref_c, rtol=0, atol=c * 0.05)
    np.testing.assert_allclose(sim_c.gross_returns - sim_c.returns, c * sim_c.turnover, rtol=1e-12)


def test_a_round_trip_pays_the_cost_on_each_side():
    """Bought at the first close, sold at the second: two trades of the whole capital, each paying
    cost + slippage bps (the book is marked, not sold, on the last date)."""
    w = np.array([[1.0], [0.0], [0.0]])
    R = np.zeros((3, 1))
    sim = simulate(w, R, np.arange(3), cost_bps=4, slippage_bps=1)
    np.testing.assert_allclose(sim.turnover, [1.0, 1.0])
    assert float((sim.gross_returns - sim.returns).sum()) == pytest.approx(2 * 5e-4)


def test_performance_matches_pandas():
    """Sharpe and volatility annualised by √periods_per_year (ddof 1), maximum drawdown from the
    running peak of the equity curve (the starting capital included), the compound annual return."""
    rng = np.random.default_rng(11)
    r = rng.normal(0.0005, 0.01, size=300)
    sim = simulate(np.ones((301, 1)), np.r_[0.0, np.log1p(r)][:, None], np.arange(301))
    np.testing.assert_allclose(sim.returns, r, rtol=0, atol=1e-15)
    m = performance(sim, 252)
    s = pd.Series(r)
    equity = pd.concat([pd.Series([1.0]), (1 + s).cumprod()], ignore_index=True)
    assert m["max_drawdown"] == pytest.approx((equity / equity.cummax() - 1).min(), rel=1e-12)
    assert m["sharpe"] == pytest.approx(s.mean() / s.std() * math.sqrt(252), rel=1e-12)
    assert m["annual_volatility"] == pytest.approx(s.std() * math.sqrt(252), rel=1e-12)
    assert m["annual_return"] == pytest.approx(equity.iloc[-1] ** (252 / 300) - 1, rel=1e-12)
