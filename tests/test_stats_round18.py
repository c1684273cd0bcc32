"""Significance statistics against reference values: a Diebold–Mariano loss differential that is the same on
every date has no variance to test it by, and reads the exact sign test's p (scipy.stats.binomtest)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, score


def _sign_test_p(m: int) -> float:
    """Two-sided exact sign test of m dates all of one sign (scipy's binomial test)."""
    return float(stats.binomtest(m, m, 0.5).pvalue)


def _panel(true: np.ndarray, S: int, **pred: np.ndarray) -> Forecasts:
    W = len(true)
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(W // S, dtype=np.int64) * 86_400 * 10**9, S),
                     symbol_ids=np.tile(np.arange(S), W // S), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


@pytest.mark.parametrize("value", [0.1, 0.3, 1 / 3, 0.7])
@pytest.mark.parametrize("T", [3, 4, 7, 10])
def test_dm_same_difference_on_every_date_reads_the_sign_test(T, value):
    """A loss lower by the same amount on every date: its long-run variance is 0 (or the 1e-33 of the mean's
    rounding), and the statistic read p = 0 (or 1e-32) from Student's t over 3 dates. The exact sign test of
    T dates of one sign is 2^(1 − T): 0.25 over 3 dates."""
    out = M.diebold_mariano(np.zeros(T), np.full(T, value), lag=0)
    assert out["statistic"] == -math.inf
    assert out["p_value"] == pytest.approx(_sign_test_p(T), rel=1e-12)
    assert out["mean_diff"] < 0 and out["kernel"].startswith("none (the same difference")


@pytest.mark.parametrize("T, H", [(10, 3), (12, 4), (9, 2)])
def test_dm_same_difference_of_h_step_losses_counts_the_dates_h_apart(T, H):
    """H-step losses of consecutive dates share realised returns: the signs that count as independent are
    those of the dates H apart, ⌈T/H⌉ of them."""
    out = M.diebold_mariano(np.full(T, 0.5), np.full(T, 0.2), lag=H - 1)
    m = -(-T // H)
    assert out["statistic"] == math.inf and out["p_value"] == pytest.approx(_sign_test_p(m), rel=1e-12)


def test_dm_difference_with_a_spread_is_the_student_t_test():
    """A difference that varies by more than rounding keeps the HLN-corrected t statistic (a reference
    computed here from its definition)."""
    rng = np.random.default_rng(5)
    T = 12
    la, lb = rng.normal(1.0, 0.2, T), rng.normal(1.3, 0.2, T)
    out = M.diebold_mariano(la, lb, lag=0)
    d = la - lb
    dm = d.mean() / math.sqrt(d.var() / T) * math.sqrt((T - 1) / T)
    assert out["statistic"] == pytest.approx(dm, rel=1e-12)
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(abs(dm), T - 1), rel=1e-9)


def test_verdict_does_not_claim_a_constant_gain_over_four_dates():
    """A model whose error is a constant 0.001 beside a baseline whose error is a constant 0.002: the loss
    difference is −3e-6 on each of 4 dates, which read DM p = 0 and "the model beats the strongest baseline
    (significant at 0.05)"; four dates of one sign are p = 0.125 by the sign test: no claim."""
    S, T = 3, 4
    true = np.random.default_rng(0).normal(0, 0.01, (S * T, 1))
    fc = _panel(true, S, model=true + 0.001, zero=np.zeros_like(true), repeat=true + 0.002)
    res = score(fc)
    dm = res["strongest_baseline"]["dm"]
    assert res["strongest_baseline"]["name"] == "repeat"
    assert dm["statistic"] == -math.inf and dm["p_value"] == pytest.approx(_sign_test_p(T))
    assert "beats the strongest baseline" not in res["verdict"]
    assert res["verdict"].endswith("no significant difference, so the model is not worth its cost over naive:repeat")


def test_verdict_constant_gain_over_enough_dates_is_significant():
    """The same constant gain over 8 dates: every date of one sign is p = 2^-7 by the sign test, a real claim."""
    S, T = 3, 8
    true = np.random.default_rng(1).normal(0, 0.01, (S * T, 1))
    fc = _panel(true, S, model=true + 0.001, zero=np.zeros_like(true), repeat=true + 0.002)
    res = score(fc)
    assert res["strongest_baseline"]["dm"]["p_value"] == pytest.approx(_sign_test_p(T))
    assert "the model beats the strongest baseline (significant at 0.05)" in res["verdict"]


def test_class_head_log_loss_the_same_on_every_date_reads_the_sign_test():
    """A buy/hold/sell head with constant probabilities on windows that are all "hold": its log loss is
    −log p(hold) on every date against the shares' 0, and the head read "significantly WORSE" at p = 0 over
    3 dates."""
    W, H, T = 9, 1, 3
    probs = np.tile([0.2, 0.6, 0.2], (W, H, 1))
    out = M.class_scores(probs, np.zeros((W, H)), np.repeat(np.arange(T), W // T), threshold=0.01)
    assert out["dm"]["statistic"] == math.inf
    assert out["dm"]["p_value"] == pytest.approx(_sign_test_p(T))
