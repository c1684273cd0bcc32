"""Evaluation of a forecast that is not finite (NaN, or ±inf where it overflowed): the statistics it
leaves undefined say so (no share of positive IC dates beside a NaN mean IC, no Diebold–Mariano
kernel named for a test that was not run), and scoring it prints none of numpy's warnings."""

import math
import warnings

import numpy as np
import pytest

from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, score

DAY = 86_400 * 10**9


def _panel(S: int, D: int, H: int, bad: float, seed: int = 0) -> Forecasts:
    """S symbols × D dates of H-step forecasts; the model is the realisation plus noise, with ``bad``
    (±inf, NaN) in place of the step-1 forecast of symbol S1 on the first date."""
    rng = np.random.default_rng(seed)
    W = S * D
    true = rng.normal(0, 0.01, size=(W, H))
    model = true + rng.normal(0, 0.01, size=(W, H))
    model[1, 0] = bad  # date 0, symbol 1
    return Forecasts(pred={"model": model, "zero": np.zeros((W, H)), "drift": rng.normal(0, 0.01, size=(W, H))},
                     true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * DAY, S),
                     symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.full(W, 0.01), last_close=np.ones(W))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_forecast_that_is_not_finite_is_scored_as_undefined_without_warnings(bad):
    """One overflowed (or NaN) forecast: its date's IC is NaN, so the mean IC is; the share of positive
    dates beside it is undefined too (it read 0.967, the NaN date counted as not positive), and every
    Diebold–Mariano test of the model names why it has no p-value (its kernel read "bartlett" for a test
    that could not be run). numpy's "invalid value encountered in subtract" from inf − inf inside the
    per-date sums and the DM test no longer reaches the console."""
    fc = _panel(5, 30, 3, bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = score(fc)
    for key in ("ic", "rank_ic"):
        cs = r["model"]["cross_section"][key]
        assert math.isnan(cs["mean"]) and cs["n_dates"] == 30
        assert math.isnan(cs["positive_share"]), (key, cs["positive_share"])
    drift = r["baselines"]["drift"]["cross_section"]["rank_ic"]  # finite forecasts keep their figures
    assert 0 <= drift["positive_share"] <= 1 and math.isfinite(drift["mean"])
    for name in ("zero", "drift"):
        dm = r["dm"][name]
        assert math.isnan(dm["p_value"]) and math.isnan(dm["statistic"])
        assert dm["kernel"] == "none (a loss is not finite)", dm
    step1 = r["dm_vs_zero_per_step"][0]
    assert math.isnan(step1["p_value"]) and step1["kernel"] == "none (a loss is not finite)"
    assert r["dm_vs_zero_per_step"][1]["kernel"] in ("rectangular", "bartlett")  # step 2 is finite: tested
    assert "could not be computed" in r["verdict"]


def test_a_date_without_an_ic_leaves_the_share_of_positive_dates_undefined():
    """ic_summary itself: a NaN among the dates' ICs leaves every statistic but the count undefined."""
    s = M.ic_summary(np.array([0.2, np.nan, 0.1, 0.3]), lag=0)
    assert math.isnan(s["mean"]) and math.isnan(s["positive_share"]) and s["n_dates"] == 4
    assert M.ic_summary(np.array([0.2, -0.1, 0.1, 0.3]), lag=0)["positive_share"] == 0.75


def test_dm_of_an_overflowed_loss_is_undefined_without_a_warning():
    """A date whose two losses are both inf (both forecasts overflowed), or one of them is: no statistic,
    no p-value, the kernel saying why, and no RuntimeWarning from inf − inf."""
    la, lb = np.array([1.0, 2.0, np.inf, 3.0, 1.5]), np.array([1.0, 1.0, np.inf, 2.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = M.diebold_mariano(la, lb, lag=0)
        one = M.diebold_mariano(la, np.ones(5), lag=1)
    assert math.isnan(both["statistic"]) and math.isnan(both["p_value"])
    assert both["kernel"] == one["kernel"] == "none (a loss is not finite)"
    assert math.isnan(one["p_value"]) and one["mean_diff"] == math.inf
