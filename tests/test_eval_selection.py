"""Selection-bias statistics: the probabilistic and deflated Sharpe ratios against the formulas and the
worked example of Bailey & López de Prado (2014), the expected maximum Sharpe against simulation and
exact integration, and PBO by CSCV against hand-built cases, a plain-loop reference and simulations
with and without a real edge. Expected values are computed here from the papers' formulas, never
copied from the module's output."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from hftraining.eval import selection as SEL


def psr_by_hand(sr, sr_star, n, g3, g4):
    """The PSR formula of Bailey & López de Prado (2012), written out again."""
    return stats.norm.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


def sr0_by_hand(n, v):
    g = 0.5772156649015329  # Euler–Mascheroni
    return math.sqrt(v) * ((1 - g) * stats.norm.ppf(1 - 1 / n) + g * stats.norm.ppf(1 - 1 / (n * math.e)))


# --------------------------------------------------------------------------------------------
# Sharpe, PSR, expected maximum, DSR


def test_sharpe_ratio_hand_numbers():
    # mean 2.5; sample variance ((1.5² + 0.5²) · 2) / 3 = 5/3
    assert SEL.sharpe_ratio(np.array([1.0, 2, 3, 4])) == pytest.approx(2.5 / math.sqrt(5 / 3), rel=1e-12)
    assert SEL.sharpe_ratio(np.array([1.0, 2, 3, 4]), periods_per_year=252) == pytest.approx(
        2.5 / math.sqrt(5 / 3) * math.sqrt(252), rel=1e-12)
    assert math.isnan(SEL.sharpe_ratio(np.full(5, 0.01)))  # no spread: undefined
    assert math.isnan(SEL.sharpe_ratio(np.array([0.01])))


def test_psr_matches_formula_and_limits():
    cases = [(0.1, 0.0, 250, 0.0, 3.0), (0.05, 0.02, 1000, -1.2, 7.5), (-0.03, 0.01, 60, 0.4, 4.0)]
    for sr, sr_star, n, g3, g4 in cases:
        assert SEL.probabilistic_sharpe_ratio(sr, sr_star, n, g3, g4) == pytest.approx(
            psr_by_hand(sr, sr_star, n, g3, g4), rel=1e-12)
    assert SEL.probabilistic_sharpe_ratio(0.08, 0.08, 500, -2.0, 9.0) == 0.5  # the estimate at the benchmark
    # For a positive Sharpe, negative skew and fat tails widen its error and lower the PSR;
    # a longer sample raises it.
    base = SEL.probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 3.0)
    assert SEL.probabilistic_sharpe_ratio(0.1, 0.0, 250, -2.0, 3.0) < base
    assert SEL.probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 12.0) < base
    assert SEL.probabilistic_sharpe_ratio(0.1, 0.0, 1000, 0.0, 3.0) > base


def test_dsr_worked_example_of_the_paper():
    # Bailey & López de Prado (2014), numerical example: N = 100 trials, V[SR] = 1/2 (annualised),
    # T = 1250 daily returns, skew −3, kurtosis 10, best annualised SR 2.5; they report SR0 ≈ 0.1132
    # (per day) and DSR ≈ 0.9004, short of 95% confidence.
    sr0 = SEL.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = SEL.probabilistic_sharpe_ratio(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_expected_max_sharpe_formula_and_limits():
    for n, v in [(2, 1.0), (10, 0.3), (1000, 1e-3)]:
        assert SEL.expected_max_sharpe(n, v) == pytest.approx(sr0_by_hand(n, v), rel=1e-12)
    assert SEL.expected_max_sharpe(1, 0.5) == 0.0  # one trial: nothing was selected
    assert SEL.expected_max_sharpe(50, 0.0) == 0.0  # trials that agree exactly: no luck to pick
    grid = [SEL.expected_max_sharpe(n, 0.01) for n in (1, 2, 5, 10, 100, 1000, 10**5)]
    assert all(a < b for a, b in zip(grid, grid[1:]))
    assert SEL.expected_max_sharpe(100, 0.04) == pytest.approx(2 * SEL.expected_max_sharpe(100, 0.01), rel=1e-12)
    assert SEL.expected_max_sharpe(1.05, 1.0) >= 0.0  # floored where the approximation dips below 0


@pytest.mark.parametrize("n, rel", [(10, 0.04), (100, 0.02), (1000, 0.015)])
def test_expected_max_sharpe_against_simulation_and_exact_integral(n, rel):
    v = 0.02
    rng = np.random.default_rng(n)
    draws = rng.normal(0.0, math.sqrt(v), size=(4000, n)).max(axis=1)
    se = draws.std() / math.sqrt(len(draws))
    formula = SEL.expected_max_sharpe(n, v)
    # The formula is an extreme-value approximation: a few percent at N = 10, tighter after.
    assert abs(formula - draws.mean()) < rel * draws.mean() + 3 * se
    # Exact E[max of n standard normals] = ∫ x · n φ(x) Φ(x)^(n−1) dx.
    exact, _ = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -10, 10, limit=200)
    assert formula == pytest.approx(math.sqrt(v) * exact, rel=rel)


def test_dsr_matches_independent_computation():
    rng = np.random.default_rng(3)
    r = 0.002 + 0.01 * (rng.standard_t(4, size=800) - 0.3 * rng.exponential(size=800))  # skewed, fat-tailed
    trials = np.concatenate([rng.normal(0.0, 0.03, size=29), [r.mean() / r.std(ddof=1)]])
    out = SEL.deflated_sharpe_ratio(r, trials)
    sr = r.mean() / r.std(ddof=1)
    m = r - r.mean()
    g3 = np.mean(m**3) / np.mean(m**2) ** 1.5
    g4 = np.mean(m**4) / np.mean(m**2) ** 2
    v = np.var(trials, ddof=1)
    assert out["sharpe"] == pytest.approx(sr, rel=1e-12)
    assert out["skew"] == pytest.approx(g3, rel=1e-10) and out["kurtosis"] == pytest.approx(g4, rel=1e-10)
    assert out["var_trial_sharpe"] == pytest.approx(v, rel=1e-12)
    assert out["sr0"] == pytest.approx(sr0_by_hand(30, v), rel=1e-12)
    assert out["dsr"] == pytest.approx(psr_by_hand(sr, sr0_by_hand(30, v), 800, g3, g4), rel=1e-10)
    assert out["psr_zero"] == pytest.approx(psr_by_hand(sr, 0.0, 800, g3, g4), rel=1e-10)
    assert out["n_trials"] == 30 and out["n_periods"] == 800
    assert out["dsr"] < out["psr_zero"]  # deflation only ever raises the bar
    # Fewer effective trials (correlated configurations) lower the benchmark.
    assert SEL.deflated_sharpe_ratio(r, trials, n_trials=5)["sr0"] == pytest.approx(sr0_by_hand(5, v), rel=1e-12)


def test_dsr_with_one_trial_is_psr_against_zero():
    rng = np.random.default_rng(4)
    r = rng.normal(0.001, 0.01, size=300)
    sr = r.mean() / r.std(ddof=1)
    out = SEL.deflated_sharpe_ratio(r, [sr])
    assert out["sr0"] == 0.0 and out["var_trial_sharpe"] == 0.0
    want = psr_by_hand(sr, 0.0, 300, stats.skew(r), stats.kurtosis(r, fisher=False))
    assert out["dsr"] == pytest.approx(want, rel=1e-10)
    assert out["dsr"] == out["psr_zero"]


# --------------------------------------------------------------------------------------------
# PBO by CSCV


def test_pbo_perfect_overfit_by_hand():
    # Two blocks of two rows. Trial A = [1, 3 | 0, 1]; B = [0, 1 | 1, 3]. A block [1, 3] has Sharpe
    # 2/√2 and [0, 1] has 0.5/√0.5, so whichever trial wins one half is the worse in the other: its
    # OOS rank is 1 of 2, ω̄ = 1/3, λ = log(1/2) in both combinations, PBO = 1.
    m = np.array([[1.0, 0], [3, 1], [0, 1], [1, 3]])
    out = SEL.pbo_cscv(m, n_splits=2)
    assert out["n_combinations"] == 2 and out["n_splits"] == 2
    assert out["logits"] == pytest.approx([math.log(0.5)] * 2)
    assert out["pbo"] == 1.0
    # The same trial best in both halves: rank 2 of 2, ω̄ = 2/3, λ = log 2, PBO = 0.
    good = np.array([[1.0, 0], [3, 1], [1, 0], [3, 1]])
    out = SEL.pbo_cscv(good, n_splits=2)
    assert out["logits"] == pytest.approx([math.log(2.0)] * 2) and out["pbo"] == 0.0
    assert out["prob_oos_loss"] == 0.0


def test_pbo_ties_by_hand():
    # A = [1, 3 | 0, 1], B = [1, 3 | 5, 6], C = [0, 1 | 2, 4].
    # IS = block 0: A and B tie (Sharpe √2); OOS block 1 Sharpe: A 0.5/√0.5 ≈ 0.71, B 5.5/√0.5 ≈ 7.8,
    #   C 3/√2 ≈ 2.1 → ranks A 1, B 3: ω̄ = mean(1/4, 3/4) = 1/2, λ = 0 (counts as overfit).
    # IS = block 1: B wins (7.8); OOS block 0: A = B = √2 tie at ranks 2.5, C 0.71 → ω̄ = 2.5/4, λ = log(5/3).
    m = np.array([[1.0, 1, 0], [3, 3, 1], [0, 5, 2], [1, 6, 4]])
    out = SEL.pbo_cscv(m, n_splits=2)
    assert sorted(out["logits"]) == pytest.approx([0.0, math.log(5 / 3)], abs=1e-12)
    assert out["pbo"] == 0.5
    # Duplicated configurations tie everywhere and share the average rank: three copies of a trial
    # that beats the fourth in every half rank 3 of 4 on average (2, 3, 4) → ω̄ = 3/5, λ = log(3/2).
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, size=(40, 1))
    dup = np.hstack([x + 1.0, x + 1.0, x + 1.0, x])  # same spread, lower mean for the last column
    out = SEL.pbo_cscv(dup, n_splits=4)
    assert out["logits"] == pytest.approx([math.log(1.5)] * 6, abs=1e-12)


def test_pbo_flat_trials_are_ranked_not_nan():
    rng = np.random.default_rng(6)
    m = np.hstack([rng.normal(0, 0.01, size=(80, 5)), np.zeros((80, 1))])
    out = SEL.pbo_cscv(m, n_splits=4)
    assert all(math.isfinite(v) for v in out["logits"])
    # A riskless positive return has an infinite Sharpe in every half: it is always selected and
    # always ranks first out of sample, λ = log(6/7 / (1/7)) = log 6.
    m[:, 5] = 0.001
    out = SEL.pbo_cscv(m, n_splits=4)
    assert out["logits"] == pytest.approx([math.log(6.0)] * 6) and out["pbo"] == 0.0


def pbo_by_loops(m, s):
    """Reference CSCV: explicit row sets, np.std, argmax and scipy's rankdata per combination."""
    t, n = m.shape
    blocks = np.array_split(np.arange(t), s)
    logits = []
    for combo in itertools.combinations(range(s), s // 2):
        ins = np.concatenate([blocks[i] for i in combo])
        oos = np.setdiff1d(np.arange(t), ins)
        sr_in = m[ins].mean(0) / m[ins].std(0, ddof=1)
        sr_out = m[oos].mean(0) / m[oos].std(0, ddof=1)
        w = stats.rankdata(sr_out)[np.argmax(sr_in)] / (n + 1)
        logits.append(math.log(w / (1 - w)))
    return np.array(logits)


def test_pbo_matches_plain_loop_reference():
    rng = np.random.default_rng(7)
    m = rng.normal(0.0005, 0.01, size=(103, 7)) + rng.normal(0, 0.01, size=(103, 1))  # 103 rows: uneven blocks
    want = pbo_by_loops(m, 6)
    out = SEL.pbo_cscv(m, n_splits=6)
    assert out["n_combinations"] == math.comb(6, 3) == len(want)
    assert out["logits"] == pytest.approx(list(want), rel=1e-9, abs=1e-12)
    assert out["pbo"] == pytest.approx(np.mean(want <= 0))


def test_noise_trials_overfit_half_the_time_and_are_not_significant():
    # 50 configurations of pure noise: the in-sample winner is a random draw out of sample, so PBO
    # is about 1/2 (one matrix scatters widely, so average 10 seeds); the best full-sample Sharpe
    # passes the naive PSR test against 0, but not the deflated one.
    pbos, naive = [], []
    for seed in range(10):
        m = np.random.default_rng(100 + seed).normal(0.0, 0.01, size=(1000, 50))
        pbos.append(SEL.pbo_cscv(m, n_splits=16)["pbo"])
        srs = m.mean(0) / m.std(0, ddof=1)
        best = int(np.argmax(srs))
        out = SEL.deflated_sharpe_ratio(m[:, best], srs)
        assert out["dsr"] < 0.95
        naive.append(out["psr_zero"])
    assert 0.35 < np.mean(pbos) < 0.65
    assert np.mean(naive) > 0.95  # what the deflation protects against


def test_real_edge_is_not_overfit_and_is_significant():
    for seed in range(3):
        m = np.random.default_rng(200 + seed).normal(0.0, 0.01, size=(1000, 50))
        m[:, 7] += 0.002  # a per-period Sharpe of 0.2 for trial 7, noise for the rest
        out = SEL.pbo_cscv(m, n_splits=16)
        assert out["pbo"] < 0.1 and out["n_combinations"] == 12870
        srs = m.mean(0) / m.std(0, ddof=1)
        assert int(np.argmax(srs)) == 7
        assert SEL.deflated_sharpe_ratio(m[:, 7], srs)["dsr"] > 0.95


# --------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize("matrix, n_splits, match", [
    (np.zeros((100, 5)), 5, "even"),
    (np.zeros((100, 5)), 0, "even"),
    (np.zeros((100, 5)), 2.0, "integer"),
    (np.zeros((10, 5)), 16, "periods"),
    (np.zeros((3, 5)), 2, "periods"),
    (np.zeros((100, 1)), 4, "2 trials"),
    (np.zeros(100), 4, "2-D"),
    (np.where(np.eye(100, 5) > 0, np.nan, 0.0), 4, "NaN"),
])
def test_pbo_rejects_bad_input(matrix, n_splits, match):
    with pytest.raises(ValueError, match=match):
        SEL.pbo_cscv(matrix, n_splits=n_splits)


def test_sharpe_statistics_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        SEL.probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="inconsistent"):
        SEL.probabilistic_sharpe_ratio(1.0, 0.0, 100, 3.0, 1.5)  # kurtosis < 1 + skew²
    with pytest.raises(ValueError, match="finite"):
        SEL.probabilistic_sharpe_ratio(float("nan"), 0.0, 100, 0.0, 3.0)
    with pytest.raises(ValueError, match="n_trials"):
        SEL.expected_max_sharpe(0, 1.0)
    with pytest.raises(ValueError, match="var_sr"):
        SEL.expected_max_sharpe(10, -1.0)
    with pytest.raises(ValueError, match="constant"):
        SEL.deflated_sharpe_ratio(np.full(10, 0.01), [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 1"):
        SEL.deflated_sharpe_ratio(np.arange(10.0), [])
    with pytest.raises(ValueError, match="NaN"):
        SEL.deflated_sharpe_ratio(np.array([0.1, np.nan, 0.2]), [0.1])
    with pytest.raises(ValueError, match="1-D"):
        SEL.deflated_sharpe_ratio(np.zeros((5, 2)), [0.1])


def test_selection_among_identical_trials_has_no_pbo():
    # three trials with the same series (a searched setting that changes nothing): every combination ties
    # at the median rank, λ = 0, and pbo_cscv's "λ ≤ 0" made that PBO = 1, "certainly overfit", for a
    # search that chose nothing; the DSR is the PSR against 0 (no spread of the trials' Sharpe ratios)
    rng = np.random.default_rng(11)
    x = rng.normal(0.001, 0.01, 64)
    dates = np.arange(64, dtype=np.int64) * 86_400 * 10**9
    sel = SEL.selection_stats({k: (dates, x.copy()) for k in "abc"}, "a", "trials")
    assert sel["pbo"] is None and "identical" in sel["pbo_skipped"]
    assert sel["dsr"] == pytest.approx(sel["deflated_sharpe"]["psr_zero"])
    # one trial that differs: ranked as before
    y = x.copy()
    y[::2] += 0.002
    assert SEL.selection_stats({"a": (dates, x), "b": (dates, x.copy()), "c": (dates, y)}, "c", "trials")["pbo"] is not None
