"""Scoring a model whose forecasts overflowed on a whole date: the date is not left out as one of
"constant forecasts" (every value +inf is max == min), so the IC statistics, training's IC validation
metric among them, are undefined rather than computed over the model's finite dates only."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, score

DAY = 86_400 * 10**9


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
@pytest.mark.parametrize("where", ["forecast", "realisation"])
def test_a_date_whose_every_value_overflowed_has_a_nan_ic(bad, where):
    """Every forecast (or realisation) of the first date is ±inf: that date's IC is NaN and kept, as a
    date with one non-finite value is, and the mean IC over the dates is NaN; it was left out as a
    constant cross-section and the mean IC of the other dates read as the model's."""
    rng = np.random.default_rng(0)
    S, D = 5, 12
    true = rng.normal(0, 0.01, size=S * D)
    pred = true + rng.normal(0, 0.01, size=S * D)
    (pred if where == "forecast" else true)[:S] = bad  # date 0, every symbol
    dates = np.repeat(np.arange(D, dtype=np.int64) * DAY, S)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rank in (False, True):
            used, ic = M.cross_sectional_ic_series(pred, true, dates, rank=rank)
            assert len(used) == D and used[0] == 0 and math.isnan(ic[0]) and np.isfinite(ic[1:]).all()
            # trainer's validation metrics neg_ic / neg_rank_ic (checkpoint selection)
            assert math.isnan(M.mean_cross_sectional_ic(pred[:, None], true[:, None], dates, rank=rank))
        assert math.isnan(M.cross_sectional_ic(pred, true, dates)[0])
    # a date whose forecasts are all one finite value is still left out (a correlation is undefined there)
    flat = np.where(np.arange(S * D) < S, 0.5, true + 0.01)
    used, ic = M.cross_sectional_ic_series(flat, np.where(np.isfinite(true), true, 0.0), dates)
    assert len(used) == D - 1 and used[0] == DAY and np.isfinite(ic).all()


def test_the_scored_cross_section_of_a_model_that_overflowed_on_a_date_is_undefined():
    """score(): the model's IC and rank IC over the dates, and the share of positive dates beside them,
    are NaN when every one of its step-1 forecasts on one date is +inf (they read as the finite
    dates' figures, with 29 of the 30 dates counted); a finite baseline keeps its figures."""
    rng = np.random.default_rng(1)
    S, D, H = 5, 30, 2
    W = S * D
    true = rng.normal(0, 0.01, size=(W, H))
    model = true + rng.normal(0, 0.01, size=(W, H))
    model[:S, 0] = math.inf  # date 0: every symbol's step-1 forecast
    fc = Forecasts(pred={"model": model, "zero": np.zeros((W, H)), "drift": rng.normal(0, 0.01, size=(W, H))},
                   true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * DAY, S),
                   symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)],
                   last_return=np.zeros(W), past_vol=np.full(W, 0.01), last_close=np.ones(W))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = score(fc)
    for key in ("ic", "rank_ic"):
        cs = r["model"]["cross_section"][key]
        assert cs["n_dates"] == D, (key, cs)
        assert math.isnan(cs["mean"]) and math.isnan(cs["positive_share"]), (key, cs)
    drift = r["baselines"]["drift"]["cross_section"]["rank_ic"]
    assert drift["n_dates"] == D and math.isfinite(drift["mean"]) and 0 <= drift["positive_share"] <= 1
