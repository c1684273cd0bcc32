"""The evaluation's statistics against their reference formulas: each test writes the textbook formula
(or freezes a value of the reference library, named with its version) and compares the project's
function with it on random, heavy-tailed, tied and unequal-panel inputs."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from hftraining.eval import intervals as I
from hftraining.eval import metrics as M
from hftraining.eval import selection as S
from hftraining.eval.backtest import Simulation, performance, simulate
from hftraining.eval.forecasts import _ic_p_value


def _dm_reference(d: np.ndarray, lag: int) -> tuple[float, float]:
    """Diebold–Mariano with the Harvey–Leybourne–Newbold correction, the long-run variance the larger
    of the rectangular and the Bartlett sums of autocovariances (divisor T), Student's t(T − 1)."""
    T, H = d.size, lag + 1
    e = d - d.mean()
    gam = [e[k:] @ e[: T - k] / T for k in range(lag + 1)]
    rect = gam[0] + 2 * sum(gam[1:])
    bart = gam[0] + 2 * sum((1 - k / (lag + 1)) * g for k, g in enumerate(gam) if k)
    dm = d.mean() / math.sqrt(max(rect, bart) / T) * math.sqrt((T + 1 - 2 * H + H * (H - 1) / T) / T)
    return dm, 2 * stats.t.sf(abs(dm), T - 1)


def test_diebold_mariano_matches_the_hln_formula():
    rng = np.random.default_rng(0)
    for trial in range(300):
        T, lag = int(rng.integers(5, 120)), int(rng.integers(0, 6))
        if lag + 1 >= T:
            continue
        if trial % 3 == 0:  # heavy tails
            la, lb = rng.standard_t(2, T) ** 2, rng.standard_t(2, T) ** 2
        elif trial % 3 == 1:  # ties
            la, lb = rng.integers(0, 3, T).astype(float), rng.integers(0, 3, T).astype(float)
        else:  # overlapping H-step losses: an MA(lag)
            la, lb = np.convolve(rng.standard_normal(T + lag), np.ones(lag + 1), "valid") + 0.2, np.zeros(T)
        d = la - lb
        if np.all(d == d[0]):
            continue
        out = M.diebold_mariano(la, lb, lag)
        dm, p = _dm_reference(d, lag)
        floor = 2.0 ** (1 - -(-T // (lag + 1)))  # the sign test's smallest p over the ⌈T/H⌉ dates H apart
        assert out["statistic"] == pytest.approx(dm, rel=1e-10)
        assert out["p_t"] == pytest.approx(p, rel=1e-9, abs=1e-15)
        assert out["p_value"] == pytest.approx(max(p, floor), rel=1e-9, abs=1e-15)
        assert ("p_floor" in out) == (floor > out["p_t"])
        assert 0 < out["p_value"] <= 1


def test_diebold_mariano_frozen_statsmodels_bartlett():
    # statsmodels 0.15.0: cov_hac_simple(OLS(d, 1), nlags=2, use_correction=False) = 0.0009265689300411535, and the
    # uniform-kernel S_hac_simple / T² = −0.00114 (negative), so the Bartlett estimate is the one used
    d = np.array([0.4, -0.1, 0.3, 0.2, -0.3, 0.5, 0.1, 0.0, 0.6, -0.2, 0.3, 0.1])
    out = M.diebold_mariano(d, np.zeros(12), 2)
    assert out["kernel"].startswith("bartlett")
    expected = d.mean() / math.sqrt(0.0009265689300411535) * math.sqrt((12 + 1 - 6 + 6 / 12) / 12)
    assert out["statistic"] == pytest.approx(expected, rel=1e-12)
    assert out["p_t"] == pytest.approx(2 * stats.t.sf(expected, 11), rel=1e-10)
    # 12 dates 3 apart are 4 independent signs: no p below the sign test's 2^(1 − 4)
    assert out["p_value"] == max(out["p_t"], 0.125)


def test_ic_t_stat_is_the_hac_t_with_small_sample_factor():
    # statsmodels 0.15.0: ic.mean() / sqrt(cov_hac_simple(OLS(ic, 1), nlags, use_correction=True))
    ic = np.array([0.12, -0.05, 0.30, 0.08, -0.11, 0.21, 0.04, 0.17, -0.02, 0.09])
    assert M.ic_summary(ic, 0)["t_stat"] == pytest.approx(2.107371408649474, rel=1e-12)
    assert M.ic_summary(ic, 2)["t_stat"] == pytest.approx(4.522590594275881, rel=1e-12)
    assert M.ic_summary(ic, 0)["t_stat"] == pytest.approx(stats.ttest_1samp(ic, 0.0).statistic, rel=1e-12)


def test_per_date_ic_matches_scipy_on_unequal_tied_panels():
    rng = np.random.default_rng(1)
    for trial in range(40):
        D = int(rng.integers(2, 15))
        dates = rng.permutation(np.repeat(np.arange(D), rng.integers(1, 9, D)))
        p, t = np.round(rng.standard_normal(dates.size)), np.round(rng.standard_t(2, dates.size), 1)
        for rank, ref in ((True, stats.spearmanr), (False, stats.pearsonr)):
            got_d, got = M.cross_sectional_ic_series(p, t, dates, rank=rank)
            want_d, want = [], []
            for d in np.unique(dates):
                a, b = p[dates == d], t[dates == d]
                if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
                    want_d.append(d)
                    want.append(ref(a, b)[0])
            assert got_d.tolist() == want_d
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_rank_ic_equal_but_for_rounding_gets_the_sign_test():
    """With ties, a rank IC of √3/2 is 0.8660254037844387 on a date of 3 symbols and ...386 on one of 5
    (scipy's spearmanr gives the same two values): on every date it has no spread, so its p is the exact
    sign test's 2^(1 − dates), not the 1e-65 of a standard deviation of 6e-17."""
    three, five = ([0.0, 0.0, 1.0], [0.0, 1.0, 2.0]), ([0.0, 0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0])
    days = [three, five, three, five, three]
    pred = np.concatenate([p for p, _ in days])
    true = np.concatenate([t for _, t in days])
    dates = np.repeat(np.arange(5), [len(p) for p, _ in days])
    _, ic = M.cross_sectional_ic_series(pred, true, dates, rank=True)
    assert np.allclose(ic, math.sqrt(3) / 2) and len(set(ic.tolist())) == 2  # the same value, two roundings
    s = M.ic_summary(ic, 0)
    assert s["std"] == 0.0 and s["t_stat"] == math.inf
    assert _ic_p_value(s) == pytest.approx(stats.binomtest(5, 5, 0.5).pvalue)  # 0.0625: not significant
    zero = M.ic_summary(np.array([1e-17, -1e-17, 2e-17]), 0)  # ICs of 0 but for rounding: no sign to test
    assert zero["t_stat"] == 0.0 and _ic_p_value(zero) == 1.0


def test_pesaran_timmermann_matches_the_paper():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(5, 200))
        y = rng.standard_normal(n) + rng.uniform(-1, 1)
        p = y * rng.uniform(-1, 1) + rng.standard_normal(n)
        x, z = (p > 0).astype(float), (y > 0).astype(float)
        if np.ptp(x) == 0 or np.ptp(z) == 0:
            continue
        P, px, py = np.mean(x == z), x.mean(), z.mean()
        ps = px * py + (1 - px) * (1 - py)
        v_ps = ((2 * py - 1) ** 2 * px * (1 - px) / n + (2 * px - 1) ** 2 * py * (1 - py) / n
                + 4 * px * py * (1 - px) * (1 - py) / n**2)
        s = (P - ps) / math.sqrt(ps * (1 - ps) / n - v_ps)
        out = M.pesaran_timmermann(p, y)
        assert out["statistic"] == pytest.approx(s, rel=1e-9, abs=1e-12)
        assert out["p_value"] == pytest.approx(stats.norm.sf(s), rel=1e-9, abs=1e-15)


def test_kupiec_and_christoffersen_match_their_formulas():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, p = int(rng.integers(2, 300)), float(rng.choice([0.01, 0.05, 0.1, 0.2]))
        miss = rng.random(n) < p * rng.uniform(0, 3)
        x = int(miss.sum())
        ph = x / n
        ll = lambda q: (n - x) * math.log(1 - q) if x < n else 0.0  # noqa: E731
        lr = -2 * ((ll(p) + (x * math.log(p) if x else 0)) - (ll(ph) + (x * math.log(ph) if x else 0)))
        k = I.kupiec(x, n, p)
        every = np.arange(n + 1)  # independent draws: the exact binomial p-value of the LR
        lrs = 2 * (stats.binom.logpmf(every, n, every / n) - stats.binom.logpmf(every, n, p))
        exact = stats.binom.pmf(every, n, p)[lrs >= lr - 1e-9 * max(1.0, lr)].sum()
        assert k["lr"] == pytest.approx(lr, abs=1e-9) and k["p_value"] == pytest.approx(min(exact, 1.0), rel=1e-9, abs=1e-15)
        t = np.zeros((2, 2))
        np.add.at(t, (miss[:-1].astype(int), miss[1:].astype(int)), 1)
        c = I.christoffersen([miss])
        if (t.sum(0) > 0).all() and (t.sum(1) > 0).all():  # one symbol: the Pearson χ² of its transition table
            assert c["lr"] == pytest.approx(stats.chi2_contingency(t, correction=False)[0], rel=1e-9)
        else:
            assert math.isnan(c["lr"])
    # several symbols: Cochran's stratified statistic, binomial variance n0. n1. n.0 n.1 / n³ per stratum
    seqs = [rng.random(int(rng.integers(20, 80))) < r for r in (0.02, 0.1, 0.3)]
    num = var = 0.0
    for s in seqs:
        t = np.zeros((2, 2))
        np.add.at(t, (s[:-1].astype(int), s[1:].astype(int)), 1)
        m = t.sum()
        num += (t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0]) / m
        var += t[0].sum() * t[1].sum() * t[:, 0].sum() * t[:, 1].sum() / m**3
    assert I.christoffersen(seqs)["lr"] == pytest.approx(num * num / var, rel=1e-12)


def test_psr_dsr_and_pbo_match_bailey_lopez_de_prado():
    rng = np.random.default_rng(4)
    r = rng.standard_t(4, 250) * 0.01 + 0.001
    trials = rng.normal(0, 0.05, 20)
    out = S.deflated_sharpe_ratio(r, trials)
    sr, g3, g4 = r.mean() / r.std(ddof=1), stats.skew(r), stats.kurtosis(r, fisher=False)  # γ4 not excess
    g = np.euler_gamma
    sr0 = trials.std(ddof=1) * ((1 - g) * stats.norm.ppf(1 - 1 / 20) + g * stats.norm.ppf(1 - 1 / (20 * math.e)))
    dsr = stats.norm.cdf((sr - sr0) * math.sqrt(249) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr * sr))
    assert out["sr0"] == pytest.approx(sr0, rel=1e-12) and out["dsr"] == pytest.approx(dsr, rel=1e-10)
    # CSCV by brute force: Sharpe ratios of each half recomputed from the rows
    m = rng.standard_t(3, (40, 5)) * 0.01 + rng.normal(0, 0.002, 5)
    blocks = np.array_split(np.arange(40), 8)
    lam = []
    for c in itertools.combinations(range(8), 4):
        i = np.concatenate([blocks[b] for b in c])
        o = np.setdiff1d(np.arange(40), i)
        sr_i, sr_o = (m[i].mean(0) / m[i].std(0, ddof=1)), (m[o].mean(0) / m[o].std(0, ddof=1))
        w = stats.rankdata(sr_o)[np.argmax(sr_i)] / 6
        lam.append(math.log(w / (1 - w)))
    res = S.pbo_cscv(m, 8)
    np.testing.assert_allclose(res["logits"], lam, rtol=1e-9)
    assert res["pbo"] == np.mean(np.array(lam) <= 0)


def test_backtest_sharpe_drawdown_and_turnover_by_hand():
    rng = np.random.default_rng(5)
    T, N = 30, 3
    w, R = rng.normal(0, 0.5, (T, N)), rng.standard_t(3, (T, N)) * 0.02
    sim = simulate(w, R, np.arange(T), 5, 2)
    s = np.expm1(R)
    cap, val, net, turn = 1.0, np.zeros(N), [], []
    for t in range(T - 1):  # a book in money: trade to w[t] · capital, hold over (t, t + 1]
        tr = np.abs(w[t] * cap - val).sum() / cap
        gross = float(w[t] @ s[t + 1])
        net.append(gross - tr * 7e-4)
        turn.append(tr)
        val, cap = w[t] * cap * (1 + s[t + 1]), cap * (1 + gross)
    np.testing.assert_allclose(sim.returns, net, atol=1e-13)
    np.testing.assert_allclose(sim.turnover, turn, atol=1e-12)
    perf = performance(sim, 252)
    r = np.asarray(net)
    eq = np.cumprod(1 + r)
    assert perf["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-10)
    assert perf["max_drawdown"] == pytest.approx(min(0.0, (eq / np.maximum.accumulate(np.r_[1.0, eq])[1:] - 1).min()))


@pytest.mark.parametrize("returns", [[0.1, 0.1, 0.1], [0.3, 0.1 + 0.2, 0.3, 0.3], [0.001] * 10])
def test_constant_returns_have_no_sharpe_ratio(returns):
    """Returns equal on every period (0.1 + 0.2 and 0.3 are one return) have no spread: volatility 0 and
    no Sharpe ratio, in the backtest and in the selection statistics alike, not the 1e16 to 1e17 that
    the rounding of their mean (or of their last bits) gave."""
    r = np.asarray(returns)
    perf = performance(Simulation(np.arange(r.size), r, r, np.zeros(r.size), 0, 0), 252)
    assert math.isnan(perf["sharpe"]) and perf["annual_volatility"] == 0.0
    assert math.isnan(S.sharpe_ratio(r)) and math.isnan(S.sharpe_ratio(r, 252))
    with pytest.raises(ValueError, match="constant"):
        S.deflated_sharpe_ratio(r, [0.1, 0.2])


def test_a_rank_ic_of_one_date_is_not_called_insignificant():
    """One date with a cross-section has a rank IC but no t test (a spread over dates needs 2): the
    verdict says so, rather than "not significantly different from 0 (p = —)" as if a test had run."""
    from hftraining.eval.forecasts import Forecasts, score

    rng = np.random.default_rng(6)
    W = 5
    pred = {name: rng.normal(size=(W, 1)) for name in ("model", "repeat", "drift", "seasonal_naive")}
    fc = Forecasts(pred={**pred, "zero": np.zeros((W, 1))}, true=rng.normal(size=(W, 1)), dates=np.zeros(W, np.int64),
                   symbol_ids=np.arange(W), symbols=[f"S{i}" for i in range(W)], last_return=np.zeros(W),
                   past_vol=np.ones(W), last_close=np.ones(W), target="cs_rank")
    verdict = score(fc)["verdict"]
    assert "not tested (a t test over the dates needs at least 2)" in verdict, verdict
    assert "not significantly different from 0" not in verdict, verdict
    assert "nan" not in verdict, verdict  # t and ICIR of one date: a dash, not "nan"
