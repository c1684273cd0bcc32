"""A Diebold–Mariano loss differential read by the exact sign test (the same difference on every date): the
sign test is read only when every date it counts is of one sign, each date within its own rounding of the
others, and a seed whose eval.json holds that test's infinite statistic (JSON null) still counts as beating
its baseline where its verdict says so."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from hftraining.core.jsonio import dumps
from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, score
from hftraining.workflows.seeds import beats_strongest, seed_summary


def _panel(true: np.ndarray, S: int, **pred: np.ndarray) -> Forecasts:
    W = len(true)
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(W // S, dtype=np.int64) * 86_400 * 10**9, S),
                     symbol_ids=np.tile(np.arange(S), W // S), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def test_dm_a_date_of_the_other_sign_is_not_read_as_every_date_of_one_sign():
    """One date's forecasts known only to ±1 (a rounding far wider than every other date's) let 59 dates whose
    difference genuinely varies from 0.05 to 1.2, and one date at −0.5, pass for "the same difference on every
    date": the sign test of 60 dates all of one sign (p = 2^-59) was reported while one date has the other sign.
    The dates are each within their own rounding of no common value: the Student t test reads them."""
    T = 60
    d = np.r_[-0.5, np.linspace(0.05, 1.2, T - 1)]
    resolution = np.r_[1.0, np.full(T - 1, 1e-9)]
    out = M.diebold_mariano(d, np.zeros(T), lag=0, resolution=resolution)
    ref = stats.ttest_1samp(d, 0.0)
    assert math.isfinite(out["statistic"]) and out["kernel"].startswith("rectangular")
    assert out["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert out["p_t"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["p_value"] == pytest.approx(max(ref.pvalue, 2.0 ** (1 - T)), rel=1e-9)  # no p below the sign test's


def test_dm_one_wide_rounding_does_not_make_the_other_dates_one_value():
    """Every date of one sign, but the differences 0.2 … 1.2 apart on dates whose rounding is 1e-9: only the first
    date's rounding (0.6) is wide, and 2 × 0.6 covered the whole spread, so the sign test's p (2^-19) was reported
    instead of the t test's; each date's difference is within its own rounding of a common value only when the
    spread is rounding, and here it is not."""
    T = 20
    d = np.linspace(0.2, 1.2, T)
    resolution = np.r_[0.6, np.full(T - 1, 1e-9)]
    out = M.diebold_mariano(d, np.zeros(T), lag=0, resolution=resolution)
    ref = stats.ttest_1samp(d, 0.0)
    assert out["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert out["p_t"] == pytest.approx(ref.pvalue, rel=1e-9)
    # the t p (4.8e-9) is below the sign test's smallest over 20 dates, 2^-19: p is that, and says so
    assert out["p_value"] == out["p_floor"] == 2.0 ** (1 - T) > ref.pvalue
    assert out["kernel"] == "rectangular; p raised to the sign test's smallest over 20 dates, 2^(1 − 20)"


def test_dm_differences_within_their_own_rounding_still_read_the_sign_test():
    """Dates each within their own rounding of one value (one of them rounded more widely) are one value: the sign
    test over the dates H apart, as for an exactly constant difference."""
    T, H = 12, 3
    d = np.r_[0.5 + 0.05, np.full(T - 1, 0.5)]
    out = M.diebold_mariano(d, np.zeros(T), lag=H - 1, resolution=np.r_[0.1, np.full(T - 1, 1e-12)])
    m = -(-T // H)
    assert out["statistic"] == math.inf
    assert out["p_value"] == pytest.approx(float(stats.binomtest(m, m, 0.5).pvalue), rel=1e-12)


def _constant_gain_result(T: int) -> dict:
    S = 3
    true = np.random.default_rng(1).normal(0, 0.01, (S * T, 1))
    return score(_panel(true, S, model=true + 0.001, zero=np.zeros_like(true), repeat=true + 0.002))


def test_seed_whose_verdict_beats_by_the_sign_test_counts_as_significantly_better():
    """A constant gain over 8 dates: the verdict says "the model beats the strongest baseline" (sign test p =
    2^-7, statistic −inf). eval.json writes the infinite statistic as null, and the seeds' summary read that null
    as no direction: the seed was left out of ``significantly_better`` though its verdict claims it."""
    res = _constant_gain_result(8)
    assert "the model beats the strongest baseline (significant at 0.05)" in res["verdict"]
    assert res["strongest_baseline"]["dm"]["statistic"] == -math.inf
    ev = json.loads(dumps(res))  # as eval.json holds it
    assert ev["strongest_baseline"]["dm"]["statistic"] is None
    assert beats_strongest(ev)
    assert seed_summary([ev, ev])["significantly_better"] == [0, 1]


def test_seed_whose_sign_test_is_not_significant_is_not_counted():
    """The same constant gain over 4 dates: p = 0.125, no claim in the verdict, and none in the summary."""
    res = _constant_gain_result(4)
    ev = json.loads(dumps(res))
    assert "beats the strongest baseline" not in res["verdict"]
    assert not beats_strongest(ev)
