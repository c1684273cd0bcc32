"""The bar a cross-sectional verdict names when the baselines rank on different dates, per-symbol MSE beside the
pooled one when the squares' sum overflows, and the bagging fraction a LightGBM fit drew, in its log line."""

import math

import numpy as np
import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.eval.forecasts import Forecasts, score
from hftraining.models import build_model

from test_models_round16 import lightgbm_windows  # noqa: E402

D, N = 40, 5
DAY = 86_400 * 10**9


def _forecasts(pred, true, dates, ids, target):
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=ids, symbols=[f"S{i}" for i in range(N)],
                     last_return=np.zeros(len(true)), past_vol=np.full(len(true), 0.01),
                     last_close=np.full(len(true), 100.0), target=target)


@pytest.mark.parametrize("drift_ranks_the_few_dates", [True, False])
def test_a_baseline_ranking_on_a_few_dates_does_not_hand_the_bar_to_a_weaker_baseline(drift_ranks_the_few_dates):
    """fitted:lightgbm ranks on 2 of the 40 dates (the same forecast for every symbol on the others), where
    naive:repeat happens to rank perfectly and fitted:ridge backwards; on the other 38 ridge ranks far better
    than the model. Compared over the dates every baseline ranks (those 2), repeat was named the bar and the
    model "ranks better than the strongest baseline", though ridge beats it; with naive:drift the same for every
    symbol on those 2 dates, no date was ranked by all and no bar was named by rank IC at all."""
    rng = np.random.default_rng(1)
    dates = np.repeat(np.arange(D, dtype=np.int64) * DAY, N)
    ids = np.tile(np.arange(N), D)
    true = rng.normal(0, 0.01, (D * N, 1))
    few = np.isin(dates // DAY, [3, 17])[:, None]
    drift = rng.normal(0, 0.01, true.shape)
    if not drift_ranks_the_few_dates:
        drift = np.where(few, 0.0, drift)
    pred = {"model": true + rng.normal(0, 0.015, true.shape), "zero": np.zeros_like(true),
            "repeat": np.where(few, true, rng.normal(0, 0.01, true.shape)), "drift": drift,
            "seasonal_naive": rng.normal(0, 0.01, true.shape),
            "ridge": np.where(few, -true, true + rng.normal(0, 0.004, true.shape)),
            "lightgbm": np.where(few, true + rng.normal(0, 0.01, true.shape), 0.001)}
    r = score(_forecasts(pred, true, dates, ids, "cs_rank"))
    own = {k: v["cross_section"]["rank_ic"] for k, v in r["baselines"].items()}
    assert own["lightgbm"]["n_dates"] == 2 and own["ridge"]["n_dates"] == D  # the set-up
    assert own["ridge"]["mean"] > r["model"]["cross_section"]["rank_ic"]["mean"] > own["repeat"]["mean"]
    assert r["cross_section_strongest"]["name"] == "ridge"
    assert "fitted:ridge ranks significantly better, so the model is not worth its cost" in r["verdict"]
    assert "the model ranks better than the strongest baseline" not in r["verdict"]
    common = r["baselines_rank_ic_common"]
    assert common["n_dates"] == D and r["cross_section_strongest"]["compared_on_dates"] == D
    # a baseline counts 0 on a date where it ranks nothing: lightgbm's 2 dates weigh 2 of the 40
    ic = own["lightgbm"]["mean"] * 2 / D
    assert common["rank_ic"]["lightgbm"] == pytest.approx(ic) and common["rank_ic"]["ridge"] == own["ridge"]["mean"]
    assert f"strongest baseline by rank IC fitted:ridge = {own['ridge']['mean']:.4f}" in r["verdict"]
    # the dates it was chosen over are said where they changed the choice (over its own dates lightgbm's 2 won)
    first = max((k for k in own if math.isfinite(own[k]["mean"])), key=lambda k: own[k]["mean"])
    said = (f"strongest baseline by rank IC fitted:ridge = {own['ridge']['mean']:.4f} (the highest mean over the {D} "
            "dates a baseline ranks, counting 0 where one ranks nothing: ") in r["verdict"]
    assert said == (first != "ridge"), (first, r["verdict"])


def test_per_symbol_mse_is_the_pooled_mse_when_the_sum_of_squares_overflows():
    """Squared errors of about 1e306 are finite and their sum is not: the pooled MSE is their mean, found
    without overflowing, and the per-symbol MSE of a panel of one symbol read inf beside it."""
    rng = np.random.default_rng(0)
    W = 60
    dates = np.arange(W, dtype=np.int64) * DAY
    ids = np.zeros(W, np.int64)
    true = rng.normal(0, 0.01, (W, 2))
    big = np.full_like(true, 1e154)  # each square about 1e308, finite; two of them are not
    pred = {"model": big, "zero": np.zeros_like(true), "repeat": true, "drift": true, "seasonal_naive": true}
    fc = Forecasts(pred=pred, true=true, dates=dates, symbol_ids=ids, symbols=["S0"], last_return=np.zeros(W),
                   past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0))
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum((big - true) ** 2)) and np.isfinite((big - true) ** 2).all()  # the set-up
        r = score(fc)  # the DM tests' loss differences overflow: said by their NaN p-values
    pooled = r["model"]["mse"]
    assert math.isfinite(pooled)
    assert r["per_symbol"]["model"]["S0"]["mse"] == pooled
    for h in range(2):  # each step alone, pooled and per symbol
        assert r["per_symbol"]["model"]["S0"]["per_step"][h]["mse"] == r["per_step"]["model"][h]["mse"]
        assert math.isfinite(r["per_step"]["model"][h]["mse"])


@pytest.mark.parametrize("windows, fraction, drawn", [(1, 0.8, 1.0), (150, 0.005, 0.01), (150, 0.8, 0.8)])
def test_lightgbm_fit_says_the_bagging_fraction_it_drew(windows, fraction, drawn):
    """Fewer training windows than 1 / model.lightgbm_bagging_fraction: each round draws one window, a higher
    fraction than the setting, and the fit's log line (its returned figures) said nothing of it. A fit that
    draws at least one window keeps the setting, in the boosters too."""
    pytest.importorskip("lightgbm")
    train, val, seq_len, horizon = lightgbm_windows(windows)
    m = build_model(ModelConfig(type="lightgbm", ridge_lags=5, lightgbm_bagging_fraction=fraction), 2, horizon, seq_len)
    fit = m.fit_windows(train, val)
    assert fit["bagging_fraction"] == pytest.approx(drawn)
    assert int(fit["bagging_fraction"] * windows) >= 1
    text = bytes(m.booster_0.numpy()).decode("utf-8")
    if drawn < 1.0:  # a fraction of 1 draws every window: LightGBM does not bag
        assert f"[bagging_fraction: {drawn:g}]" in text
    with torch.no_grad():
        b = val.batch(np.arange(len(val)))
        assert torch.isfinite(m(b["x"], None, b["past"]).prediction).all()
