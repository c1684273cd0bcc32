"""The evaluation's statistics against independent references (the papers' formulas and worked examples,
written out here), on random and hand-made inputs and their edge cases."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from hftraining.eval import intervals as I
from hftraining.eval import metrics as M
from hftraining.eval import selection as S


def _panel_forecasts(pred: dict[str, np.ndarray], true: np.ndarray, dates: np.ndarray):
    from hftraining.eval.forecasts import Forecasts

    W = len(true)
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=np.arange(W) % 7, symbols=[f"S{i}" for i in range(7)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


# ------------------------------------------------------------------------------------------------
# Diebold–Mariano: forecasts equal to their float32 precision are no different


def test_a_head_equal_to_the_class_shares_in_float32_does_not_beat_them():
    """The head's probabilities are float32: the class shares themselves, rounded to float32, differ from
    the float64 shares by under one float32 digit, the same way on every window. That is no skill: the
    DM test reads no difference (p = 1), not p = 1e-217 and "beats the class shares"."""
    from hftraining.eval.forecasts import class_verdict

    rng = np.random.default_rng(0)
    W, H = 200, 3
    true, dates = rng.normal(0, 0.01, (W, H)), np.arange(W)
    c0 = M.class_scores(rng.dirichlet([1, 1, 1], (W, H)), true, dates, 0.01)
    shares = np.array([c0["shares"][k] for k in M.CLASS_NAMES])
    c = M.class_scores(np.broadcast_to(shares.astype(np.float32), (W, H, 3)), true, dates, 0.01)
    assert c["dm"]["statistic"] == 0.0 and c["dm"]["p_value"] == 1.0, c["dm"]
    assert 0 < abs(c["dm"]["mean_diff"]) < c["dm"]["resolution"] < 2e-7
    text = class_verdict(c)
    assert "beats" not in text and "no significant difference" in text, text
    # a head that knows the classes a little still shows it
    lab = np.where(true > 0.01, 2, np.where(true < -0.01, 0, 1))
    sharper = 0.9 * shares + 0.1 * np.eye(3)[lab]
    c = M.class_scores(sharper.astype(np.float32), true, dates, 0.01)
    assert c["dm"]["statistic"] < 0 and c["dm"]["p_value"] < 1e-6


def test_a_forecast_within_its_float32_rounding_of_the_strongest_baseline_does_not_beat_it():
    """The model's forecast is the strongest baseline's moved by half a float32 digit (what computing it
    once more in float32 does): its MSE is lower by 1e-8 of itself on every date, which the DM test read
    as p ≈ 0, "beats the strongest baseline". It is the same forecast: no significant difference."""
    from hftraining.eval.forecasts import score

    rng = np.random.default_rng(1)
    D, N, H = 120, 7, 2
    dates = np.repeat(np.arange(D), N)
    true = rng.normal(0, 0.02, (D * N, H))
    good = 0.1 * true  # the strongest baseline: it knows a tenth of the return
    model = good * (1 + 2.0**-24)
    pred = {"model": model, "zero": np.zeros_like(true), "repeat": rng.normal(0, 0.02, true.shape),
            "drift": good, "seasonal_naive": rng.normal(0, 0.02, true.shape)}
    r = score(_panel_forecasts(pred, true, dates))
    sb = r["strongest_baseline"]
    assert sb["name"] == "drift" and sb["mse_ratio"] < 1
    assert sb["dm"]["statistic"] == 0.0 and sb["dm"]["p_value"] == 1.0, sb["dm"]
    assert "beats the strongest baseline" not in r["verdict"] and "no significant difference" in r["verdict"], r["verdict"]
    # against zero the model is tested as before
    assert r["dm_vs_zero"]["p_value"] < 1e-6 and r["dm_vs_zero"]["statistic"] < 0
    # a forecast one part in 10^4 better is a difference, and the test still finds it
    out = M.dm_test(good * (1 + 1e-4), good, true, dates)
    assert out["statistic"] < 0 and out["p_value"] < 1e-6


def test_losses_equal_but_for_float64_rounding_are_no_difference():
    """0.1 + 0.2 and 0.3 are one loss: a difference of 5.6e-17 on every date read t = inf, p = 0."""
    out = M.diebold_mariano(np.full(10, 0.1 + 0.2), np.full(10, 0.3), lag=2)
    assert out["mean_diff"] > 0 and out["statistic"] == 0.0 and out["p_value"] == 1.0


def test_dm_resolution_bound_is_the_most_rounding_can_move_a_squared_error():
    """:func:`metrics.squared_error_rounding` bounds the change of a squared error when each forecast moves
    by up to one float32 digit: checked against the forecasts moved by exactly that much, either way."""
    rng = np.random.default_rng(2)
    pred, true = rng.normal(0, 0.01, (50, 3)), rng.normal(0, 0.02, (50, 3))
    bound = M.squared_error_rounding(pred, true)
    for sign in (1.0, -1.0):
        moved = pred * (1 + sign * M.FORECAST_ULP)
        change = np.abs(((moved - true) ** 2).mean(axis=1) - ((pred - true) ** 2).mean(axis=1))
        assert np.all(change <= bound * (1 + 1e-6))  # 1e-6: the float64 cancellation of the two errors
    worst = pred + np.sign(pred - true) * M.FORECAST_ULP * np.abs(pred)  # every step moved away from its realisation
    change = ((worst - true) ** 2).mean(axis=1) - ((pred - true) ** 2).mean(axis=1)
    np.testing.assert_allclose(change, bound, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Diebold–Mariano: the formula, its edge cases and the per-date panel aggregation


def _dm_reference(la: np.ndarray, lb: np.ndarray, lag: int) -> tuple[float, float, str]:
    """Diebold & Mariano (1995) with Harvey, Leybourne & Newbold (1997): the long-run variance the larger of
    the rectangular (the paper's) and the Bartlett sum of autocovariances to ``lag`` (divisor T), the
    statistic times √((T + 1 − 2h + h(h − 1)/T)/T), two-sided p from t(T − 1)."""
    d = la - lb
    T, h = d.size, lag + 1
    gam = [float(np.sum((d[k:] - d.mean()) * (d[: T - k] - d.mean()))) / T for k in range(min(lag, T - 1) + 1)]
    rect = gam[0] + 2 * sum(gam[1:])
    bart = gam[0] + 2 * sum((1 - k / (lag + 1)) * g for k, g in enumerate(gam) if k)
    stat = d.mean() / math.sqrt(max(rect, bart) / T) * math.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T)
    return stat, 2 * stats.t.sf(abs(stat), T - 1), "rectangular" if rect >= bart else "bartlett"


def test_dm_panel_matches_a_loop_over_dates_and_picks_the_larger_variance():
    """:func:`metrics.dm_test` on an unbalanced panel (1 to 6 symbols a date, dates out of order) is the
    reference over per-date mean losses built by a loop; an alternating loss difference (negative
    rectangular sum) takes the Bartlett variance."""
    rng = np.random.default_rng(3)
    seen = set()
    for trial in range(60):
        D, H = int(rng.integers(8, 60)), int(rng.integers(1, 5))
        dates = rng.permutation(np.repeat(np.arange(D) * 86_400, rng.integers(1, 7, D)))
        true = rng.standard_t(3, (dates.size, H)) * 0.02
        a, b = true * rng.uniform(0, 0.3) + rng.normal(0, 0.02, true.shape), rng.normal(0, 0.02, true.shape)
        if trial % 4 == 0:  # alternating dates: a loss difference whose autocovariances are negative
            b = a + np.where((dates // 86_400) % 2 == 0, 0.03, -0.028)[:, None]
        out = M.dm_test(a, b, true, dates)
        if H >= D:
            assert math.isnan(out["p_value"])
            continue
        la = np.array([((a[dates == d] - true[dates == d]) ** 2).mean() for d in np.unique(dates)])
        lb = np.array([((b[dates == d] - true[dates == d]) ** 2).mean() for d in np.unique(dates)])
        stat, p, kernel = _dm_reference(la, lb, H - 1)
        assert out["n"] == D and out["lag"] == H - 1 and out["kernel"].split(";")[0] == kernel
        assert out["statistic"] == pytest.approx(stat, rel=1e-9) and out["p_t"] == pytest.approx(p, rel=1e-8, abs=1e-300)
        # no p below the sign test's smallest over the ⌈D/H⌉ dates H apart
        assert out["p_value"] == pytest.approx(max(p, 2.0 ** (1 - -(-D // H))), rel=1e-8, abs=1e-300)
        seen.add(kernel)
    assert seen == {"rectangular", "bartlett"}


def test_dm_edge_cases():
    assert M.diebold_mariano(np.ones(10), np.ones(10), 2)["p_value"] == 1.0  # identical losses
    one = M.diebold_mariano(np.ones(1), np.zeros(1), 0)  # one date: no test
    assert math.isnan(one["p_value"]) and one["kernel"] == "none (too few dates)"
    gap = M.diebold_mariano(np.array([1.0, np.nan, 2.0, 3.0]), np.zeros(4), 0)  # a NaN loss: undefined, not skipped
    assert math.isnan(gap["p_value"]) and gap["kernel"] == "none (a loss is not finite)"
    two = M.diebold_mariano(np.array([1.0, 2.0]), np.zeros(2), 0)  # 2 dates, step 1: t(1)
    assert two["statistic"] == pytest.approx(1.5 / math.sqrt(0.25 / 2) * math.sqrt(0.5))
    assert two["p_t"] == pytest.approx(2 * stats.t.sf(two["statistic"], 1))
    assert two["p_value"] == two["p_floor"] == 0.5  # 2 dates can say no more than the sign test's 2^(1 − 2)


# ------------------------------------------------------------------------------------------------
# IC t statistic


def test_ic_t_stat_is_the_newey_west_t_written_out():
    rng = np.random.default_rng(4)
    for _ in range(100):
        T, lag = int(rng.integers(2, 80)), int(rng.integers(0, 6))
        ic = np.clip(rng.normal(rng.uniform(-0.1, 0.1), 0.1, T), -1, 1)
        e = ic - ic.mean()
        lrv = e @ e / T + 2 * sum((1 - k / (lag + 1)) * (e[k:] @ e[:-k]) / T for k in range(1, min(lag, T - 1) + 1))
        s = M.ic_summary(ic, lag)
        assert s["std"] == pytest.approx(np.std(ic, ddof=1), rel=1e-12)
        assert s["t_stat"] == pytest.approx(ic.mean() / math.sqrt(lrv / (T - 1)), rel=1e-9)
        assert s["positive_share"] == np.mean(ic > 0) and s["n_dates"] == T


# ------------------------------------------------------------------------------------------------
# DSR and PBO


def test_dsr_reproduces_the_papers_worked_example():
    """Bailey & López de Prado (2014), numerical example: 100 trials whose annualised Sharpe ratios have
    variance 1/2, the best 2.5 annualised over 1,250 daily returns of skewness −3 and kurtosis 10:
    SR0 = 0.1132 per day and DSR = 0.9004."""
    sr0 = S.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert S.probabilistic_sharpe_ratio(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=5e-5)


def _cscv_brute_force(m: np.ndarray, s: int) -> tuple[list[float], float]:
    """CSCV from the rows: each half's Sharpe recomputed; the in-sample winners tied within 1e-10 share the
    mean of their out-of-sample relative ranks."""
    T, N = m.shape
    blocks = np.array_split(np.arange(T), s)
    lam, loss = [], []
    for c in itertools.combinations(range(s), s // 2):
        i = np.concatenate([blocks[b] for b in c])
        o = np.setdiff1d(np.arange(T), i)
        sr_i, sr_o = m[i].mean(0) / m[i].std(0, ddof=1), m[o].mean(0) / m[o].std(0, ddof=1)
        best = sr_i >= sr_i.max() - 1e-10 * abs(sr_i.max())
        w = stats.rankdata(sr_o)[best].mean() / (N + 1)
        lam.append(math.log(w / (1 - w)))
        loss.append(np.mean(sr_o[best] < 0))
    return lam, float(np.mean(loss))


@pytest.mark.parametrize("T,N,s", [(43, 4, 6), (37, 6, 4), (64, 3, 8)])
def test_pbo_matches_a_direct_cscv_on_uneven_blocks_and_duplicated_trials(T, N, s):
    rng = np.random.default_rng(T)
    m = rng.standard_t(3, (T, N)) * 0.01 + rng.normal(0, 0.002, N)
    m[:, -1] = m[:, 0]  # a duplicated configuration: the two tie in and out of sample
    lam, loss = _cscv_brute_force(m, s)
    res = S.pbo_cscv(m, s)
    np.testing.assert_allclose(res["logits"], lam, rtol=1e-9, atol=1e-12)
    assert res["pbo"] == np.mean(np.array(lam) <= 0) and res["prob_oos_loss"] == pytest.approx(loss)
    assert res["n_combinations"] == math.comb(s, s // 2)


# ------------------------------------------------------------------------------------------------
# Kupiec and Christoffersen


@pytest.mark.parametrize("n,p", [(1, 0.1), (50, 0.05), (400, 0.2)])
def test_kupiec_with_no_miss_and_with_every_miss(n, p):
    none, every = I.kupiec(0, n, p), I.kupiec(n, n, p)
    assert none["lr"] == pytest.approx(-2 * n * math.log(1 - p)) and every["lr"] == pytest.approx(-2 * n * math.log(p))
    # no miss: P(X = 0) plus the counts above np at least as unlikely by the LR (exact binomial p-value)
    k = np.arange(n + 1)
    lrs = 2 * (stats.binom.logpmf(k, n, k / n) - stats.binom.logpmf(k, n, p))
    assert none["p_value"] == pytest.approx(stats.binom.pmf(k, n, p)[lrs >= none["lr"] * (1 - 1e-9)].sum(), rel=1e-9)
    # one symbol: one miss per date, so the design effect is 1 and the statistic the classic one
    miss = np.zeros(n, bool)
    assert I.kupiec(0, n, p, miss, np.arange(n)) == none


def test_christoffersen_with_no_miss_every_miss_or_one_element_is_undefined():
    for seqs in ([np.zeros(30, bool)], [np.ones(30, bool)], [np.array([True])], [np.zeros(5, bool), np.ones(5, bool)]):
        c = I.christoffersen(seqs)
        assert math.isnan(c["lr"]) and math.isnan(c["p_value"])


def test_clustered_interval_tests_divide_by_the_rao_scott_design_effect():
    """Misses of 6 symbols over 40 dates, clustered by date: Kupiec's LR and Christoffersen's stratified
    statistic divided by Σ_d (Σ_i s_i)² / Σ_i s_i² of their scores (floored at 1), written out here."""
    rng = np.random.default_rng(5)
    D, K = 40, 6
    shock = rng.random(D) < 0.15  # a market move takes most symbols out at once
    miss = (rng.random((K, D)) < 0.05) | (shock & (rng.random((K, D)) < 0.8))
    dates = np.tile(np.arange(D), (K, 1))
    flat, fd = miss.ravel(), dates.ravel()
    x, n = int(flat.sum()), flat.size
    s = flat - x / n
    deff = max(1.0, sum(s[fd == d].sum() ** 2 for d in range(D)) / (s @ s))
    ph = x / n
    lr = -2 * ((n - x) * math.log(0.9) + x * math.log(0.1) - (n - x) * math.log(1 - ph) - x * math.log(ph))
    k = I.kupiec(x, n, 0.1, flat, fd)
    assert k["design_effect"] == pytest.approx(deff) and k["lr"] == pytest.approx(lr / deff)
    num = var = 0.0
    scores, when = [], []
    for row, d in zip(miss, dates):
        prev, cur = row[:-1].astype(float), row[1:].astype(float)
        t = np.zeros((2, 2))
        np.add.at(t, (row[:-1].astype(int), row[1:].astype(int)), 1)
        m = t.sum()
        num += (t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0]) / m
        var += t[0].sum() * t[1].sum() * t[:, 0].sum() * t[:, 1].sum() / m**3
        scores.append((prev - prev.mean()) * (cur - cur.mean()))
        when.append(d[1:])
    sc, wh = np.concatenate(scores), np.concatenate(when)
    deff_c = max(1.0, sum(sc[wh == d].sum() ** 2 for d in range(D)) / (sc @ sc))
    c = I.christoffersen(list(miss), list(dates))
    assert c["design_effect"] == pytest.approx(deff_c) and c["lr"] == pytest.approx(num * num / var / deff_c)


def test_dm_test_of_one_step_column_is_the_per_step_test():
    """``dm_test(a[:, h:h + 1], b[:, h:h + 1], y[:, h:h + 1], dates, lag=h)``: step h + 1 of an H-step
    forecast alone, its squared errors averaged over each date's symbols, at lag h."""
    rng = np.random.default_rng(6)
    dates = np.repeat(np.arange(50), 4)
    true = rng.normal(0, 0.02, (200, 3))
    a, b = 0.2 * true + rng.normal(0, 0.02, true.shape), np.zeros_like(true)
    for h in range(3):
        out = M.dm_test(a[:, h:h + 1], b[:, h:h + 1], true[:, h:h + 1], dates, lag=h)
        la = M.per_date_mean((a[:, h] - true[:, h]) ** 2, dates)
        lb = M.per_date_mean((b[:, h] - true[:, h]) ** 2, dates)
        stat, p, _ = _dm_reference(la, lb, h)
        assert out["lag"] == h and out["statistic"] == pytest.approx(stat, rel=1e-10)
        assert out["p_value"] == pytest.approx(p, rel=1e-8, abs=1e-300)


def test_clustered_pesaran_timmermann_is_the_paper_over_the_design_effect():
    """Pairs of one date clustered: the paper's S divided by √deff of the score (x − x̄)(y − ȳ) − cov over
    dates (Σ_d (Σ_i s_i)² / Σ_i s_i², floored at 1), upper tail of t with dates − 1 degrees of freedom;
    ``codes`` give the same value as ``cluster``. A zero forecast scores the half-hit."""
    rng = np.random.default_rng(7)
    for _ in range(100):
        D = int(rng.integers(2, 30))
        dates = np.repeat(rng.permutation(D), rng.integers(1, 8, D))
        y = rng.standard_normal(dates.size) + rng.normal(0, 1, D)[np.searchsorted(np.unique(dates), dates)]
        p = np.round(y * rng.uniform(-1, 1) + rng.standard_normal(dates.size))  # zeros among them
        keep = y != 0
        x, z = (np.sign(p[keep]) + 1) / 2, (y[keep] > 0).astype(float)
        if np.ptp(x) == 0 or np.ptp(z) == 0:
            continue
        n = x.size
        cov, vx, vz = np.mean((x - x.mean()) * (z - z.mean())), x.var(), z.var()
        s = 2 * cov / math.sqrt(4 * vx * vz * (n - 1) / n**2)
        sc, dk = (x - x.mean()) * (z - z.mean()) - cov, dates[keep]
        deff = max(1.0, sum(sc[dk == d].sum() ** 2 for d in np.unique(dk)) / (sc @ sc))
        G = np.unique(dk).size
        out = M.pesaran_timmermann(p, y, dates)
        assert out["statistic"] == pytest.approx(s / math.sqrt(deff), rel=1e-9, abs=1e-12)
        assert out["p_value"] == pytest.approx(stats.t.sf(s / math.sqrt(deff), G - 1), rel=1e-8, abs=1e-15)
        assert out["hit_rate"] == pytest.approx(np.mean(np.where(x == 0.5, 0.5, x == z)))
        codes = np.unique(dates, return_inverse=True)[1]
        assert M.pesaran_timmermann(p, y, codes=codes) == out
