"""The bar the verdict names: the strongest baseline by rank IC is chosen over the dates every baseline
ranks, a baseline whose squared error overflows is named as left out of the strongest by MSE, and forecasts
given for more windows than there are, or for another horizon, are one line naming both."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.eval.forecasts import Forecasts, collect_forecasts, format_table, score
sys.path.insert(0, str(Path(__file__).parent))
from test_verdict_round15 import _prices  # noqa: E402

D, N = 40, 5


def _by_hand(pred, true, dates, ids, target):
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=ids, symbols=[f"S{i}" for i in range(N)],
                     last_return=np.zeros(len(true)), past_vol=np.full(len(true), 0.01),
                     last_close=np.full(len(true), 100.0), target=target)


def _panel(seed=0):
    rng = np.random.default_rng(seed)
    dates = np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, N)
    ids = np.tile(np.arange(N), D)
    return rng, dates, ids, rng.normal(0, 0.01, (D * N, 1))


def test_the_strongest_baseline_by_rank_ic_is_the_best_on_the_dates_every_baseline_ranks():
    """naive:drift forecasts one value for every symbol on the even dates (it ranks nothing there) and ranks
    fairly on the odd ones; naive:repeat ranks the odd dates perfectly and the even ones at random. Each
    over its own dates, drift's mean was the higher and drift was named the bar, though on every date
    drift ranks, repeat ranks better: the model was measured against the weaker of the two."""
    rng, dates, ids, true = _panel()
    odd = (dates // (86_400 * 10**9)) % 2 == 1
    drift = np.where(odd[:, None], true + rng.normal(0, 0.008, true.shape), 0.0)
    repeat = np.where(odd[:, None], true, rng.normal(0, 0.01, true.shape))
    pred = {"model": true + rng.normal(0, 0.01, true.shape), "zero": np.zeros_like(true), "repeat": repeat,
            "drift": drift, "seasonal_naive": rng.normal(0, 0.01, true.shape)}
    r = score(_by_hand(pred, true, dates, ids, "cs_rank"))
    own = {k: r["baselines"][k]["cross_section"]["rank_ic"] for k in ("repeat", "drift")}
    # the set-up: drift ranks half the dates, and over them alone its mean is the higher of the two
    assert own["drift"]["n_dates"] == D // 2 and own["repeat"]["n_dates"] == D
    assert own["drift"]["mean"] > own["repeat"]["mean"]
    assert r["cross_section_strongest"]["name"] == "repeat"
    common = r["baselines_rank_ic_common"]
    assert common["n_dates"] == D and common["rank_ic"]["repeat"] == own["repeat"]["mean"]
    assert common["rank_ic"]["drift"] == pytest.approx(own["drift"]["mean"] / 2)  # 0 on the dates it ranks nothing
    assert common["rank_ic"]["repeat"] > common["rank_ic"]["drift"]
    assert r["cross_section_strongest"]["compared_on_dates"] == D
    assert (f"strongest baseline by rank IC naive:repeat = {own['repeat']['mean']:.4f} (the highest mean over the {D} "
            f"dates a baseline ranks, counting 0 where one ranks nothing: {own['repeat']['mean']:.4f})") in r["verdict"]
    # the console's cross-section rows show the baseline the verdict names
    lines = format_table(r).splitlines()
    assert any(line.strip().startswith("naive:repeat") and "Rank IC" in line for line in lines)
    assert not any(line.strip().startswith("naive:drift") and "Rank IC" in line for line in lines)


def test_baselines_that_rank_on_disjoint_dates_are_compared_over_all_their_dates():
    """naive:repeat ranks the odd dates alone and naive:drift the even ones: each counts 0 on the dates it ranks
    nothing, so the stronger over all the dates is the bar by rank IC (each over its own dates, the luckier
    half won)."""
    rng, dates, ids, true = _panel()
    odd = (dates // (86_400 * 10**9)) % 2 == 1
    pred = {"model": true + rng.normal(0, 0.01, true.shape), "zero": np.zeros_like(true),
            "repeat": np.where(odd[:, None], true + rng.normal(0, 0.008, true.shape), 0.0),
            "drift": np.where(~odd[:, None], true + rng.normal(0, 0.008, true.shape), 0.0),
            "seasonal_naive": np.zeros_like(true)}
    r = score(_by_hand(pred, true, dates, ids, "cs_rank"))
    own = {k: r["baselines"][k]["cross_section"]["rank_ic"]["mean"] for k in ("repeat", "drift")}
    common = r["baselines_rank_ic_common"]
    assert common["n_dates"] == D and not common["same_dates"]
    assert common["rank_ic"] == pytest.approx({k: own[k] / 2 for k in own})  # each 0 on the other's dates
    assert r["cross_section_strongest"]["name"] == max(own, key=own.get)
    assert "on squared error: " not in r["verdict"]


def test_baselines_ranking_on_the_same_dates_keep_their_own_means_and_the_plain_sentence():
    rng, dates, ids, true = _panel(seed=2)
    noise = lambda s: true + rng.normal(0, s, true.shape)  # noqa: E731
    pred = {"model": noise(0.01), "zero": np.zeros_like(true), "repeat": noise(0.02), "drift": noise(0.005),
            "seasonal_naive": noise(0.03)}
    r = score(_by_hand(pred, true, dates, ids, "cs_rank"))
    own = r["baselines"]["drift"]["cross_section"]["rank_ic"]["mean"]
    assert r["cross_section_strongest"]["name"] == "drift"
    assert f"strongest baseline by rank IC naive:drift = {own:.4f}, model − it" in r["verdict"]
    assert r["baselines_rank_ic_common"]["n_dates"] == D and r["baselines_rank_ic_common"]["rank_ic"]["drift"] == own


def test_a_baseline_whose_squared_error_overflows_is_named_as_left_out_of_the_strongest():
    """A finite forecast of 1e200 squares to inf: its MSE is infinite, and it was passed over without a word
    (``baselines_not_finite`` empty) though it was the best forecast on every other window."""
    rng, dates, ids, true = _panel()
    drift = true + rng.normal(0, 0.001, true.shape)
    drift[7, 0] = 1e200
    pred = {"model": true + rng.normal(0, 0.005, true.shape), "zero": np.zeros_like(true),
            "repeat": true + rng.normal(0, 0.02, true.shape), "drift": drift,
            "seasonal_naive": true + rng.normal(0, 0.02, true.shape)}
    with np.errstate(over="ignore"):
        r = score(_by_hand(pred, true, dates, ids, "return"))
    assert math.isinf(r["baselines"]["drift"]["mse"])
    assert r["strongest_baseline"]["name"] == "zero"
    assert r["baselines_not_finite"] == {"drift": 1}
    assert r["baselines_mse_overflow"] == {"drift": 1}
    assert ("strongest baseline naive:zero (left out, its MSE undefined: naive:drift, whose squared error overflows "
            "(a finite forecast too large to square) in 1 of the 200 windows)") in r["verdict"]


def test_finite_squared_errors_whose_sum_overflows_keep_a_finite_mse():
    """Squared errors of about 1e306 are finite, their sum is not: the MSE read inf and the forecast was left
    out of the ranking, named nowhere. Its MSE is their mean, found without overflowing."""
    rng, dates, ids, true = _panel()
    big = np.full_like(true, 1e153)
    pred = {"model": true + rng.normal(0, 0.005, true.shape), "zero": np.zeros_like(true),
            "repeat": true + rng.normal(0, 0.02, true.shape), "drift": true + rng.normal(0, 0.001, true.shape),
            "seasonal_naive": big}
    with np.errstate(over="ignore"):
        assert np.isinf(np.mean((big - true) ** 2)) and np.isfinite((big - true) ** 2).all()  # the set-up
    r = score(_by_hand(pred, true, dates, ids, "return"))
    expected = float(np.mean(((big - true) / 1e153) ** 2)) * 1e306
    assert r["baselines"]["seasonal_naive"]["mse"] == pytest.approx(expected, rel=1e-12)
    assert r["baselines_not_finite"] == {} and r["strongest_baseline"]["name"] == "drift"


@pytest.fixture(scope="module")
def test_windows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    _prices(folder)
    cfg = load_config(None, [f"data.data_dir={folder}", "data.sequence_length=20", "data.prediction_horizon=3",
                             "data.cache_dir=null"])
    data = prepare(cfg.data)
    return data.test, data.preprocessing.target_scale


@pytest.mark.parametrize("extra, steps", [(5, 3), (0, 2)])
def test_forecasts_for_more_windows_or_other_steps_are_one_line_naming_both(test_windows, extra, steps):
    ws, scale = test_windows
    pred = np.zeros((len(ws) + extra, steps), np.float32)
    with pytest.raises(ValueError) as e:
        collect_forecasts(None, ws, scale, 256, pred_scaled=pred)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"pred_scaled has shape ({len(ws) + extra}, {steps}), for at most the {len(ws)} windows of 3 steps" in msg


def test_forecasts_for_the_first_windows_are_scored_on_those_windows(test_windows):
    ws, scale = test_windows
    fc = collect_forecasts(None, ws, scale, 256, pred_scaled=np.zeros((len(ws) - 5, 3), np.float32))
    assert len(fc) == len(ws) - 5 and all(p.shape == (len(ws) - 5, 3) for p in fc.pred.values())


def test_quantiles_for_fewer_windows_than_the_forecasts_are_one_line(test_windows):
    ws, scale = test_windows
    with pytest.raises(ValueError, match=r"quantiles_scaled has shape \(10, 3, 2\), for the 20 windows of 3 steps"):
        collect_forecasts(None, ws, scale, 256, pred_scaled=np.zeros((20, 3), np.float32),
                          quantiles_scaled=np.zeros((10, 3, 2), np.float32), levels=[0.1, 0.9])
