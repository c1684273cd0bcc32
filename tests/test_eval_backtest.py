"""Backtest: hand-computed performance figures, costs, position rules, and the timing discipline
(a planted look-ahead is caught; an alignment off by one period in either direction fails here)."""

import math

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import EvaluationConfig, load_config
from hftraining.data.pipeline import prepare
from hftraining.eval.backtest import (
    Simulation, backtest_forecasts, infer_periods_per_year, performance, positions, simulate,
)
from hftraining.eval.forecasts import collect_forecasts


def test_performance_matches_hand_computation():
    r = np.array([0.01, -0.02, 0.03, 0.0])
    sim = Simulation(np.arange(4), r, r, np.array([1.0, 0.0, 0.5, 0.5]), hits=2, positions_taken=3)
    m = performance(sim, 252)
    total = 1.01 * 0.98 * 1.03 - 1.0  # = 0.019494
    assert m["total_return"] == pytest.approx(0.019494, abs=1e-12)
    assert m["annual_return"] == pytest.approx((1 + total) ** (252 / 4) - 1)
    sd = math.sqrt(((0.005) ** 2 + 0.025**2 + 0.025**2 + 0.005**2) / 3)  # mean 0.005, ddof 1
    assert m["annual_volatility"] == pytest.approx(sd * math.sqrt(252))
    assert m["sharpe"] == pytest.approx(0.005 / sd * math.sqrt(252))
    assert m["sortino"] == pytest.approx(0.005 / math.sqrt(0.02**2 / 4) * math.sqrt(252))  # downside dev 0.01
    assert m["max_drawdown"] == pytest.approx(0.98 - 1.0)  # 1.01 → 0.9898 is the deepest fall: -2%
    assert m["calmar"] == pytest.approx(m["annual_return"] / 0.02)
    assert m["turnover"] == pytest.approx(0.5) and m["hit_rate"] == pytest.approx(2 / 3)


def test_drawdown_counts_from_the_starting_capital():
    sim = Simulation(np.arange(2), np.array([-0.1, 0.05]), np.array([-0.1, 0.05]), np.zeros(2), 0, 0)
    assert performance(sim, 252)["max_drawdown"] == pytest.approx(-0.1)


def test_simulate_timing_and_costs_by_hand():
    # one asset; weights decided at t = 0, 1, 2; returns[t] ends at t
    w = np.array([[1.0], [1.0], [0.0]])
    R = np.log(np.array([[1.0], [1.1], [0.9]]))
    sim = simulate(w, R, np.arange(3), cost_bps=8, slippage_bps=2)
    # period 1 holds w[0] over +10%, paying 10 bps to enter; period 2 holds w[1] (no trade: the
    # weight drifted to exactly 1) over -10%
    np.testing.assert_allclose(sim.gross_returns, [0.1, -0.1])
    np.testing.assert_allclose(sim.turnover, [1.0, 0.0])
    np.testing.assert_allclose(sim.returns, [0.1 - 0.001, -0.1])
    assert sim.hits == 1 and sim.positions_taken == 2


def test_drifted_weights_are_the_base_of_turnover():
    # two assets at 50/50; asset 0 gains 20%, asset 1 is flat: before rebalancing the weights are
    # 0.6/1.1 and 0.5/1.1; going back to 50/50 trades |0.5 - 0.6/1.1| + |0.5 - 0.5/1.1|
    w = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    R = np.log(np.array([[1, 1], [1.2, 1.0], [1.0, 1.0]]))
    sim = simulate(w, R, np.arange(3))
    assert sim.turnover[1] == pytest.approx(abs(0.5 - 0.6 / 1.1) + abs(0.5 - 0.5 / 1.1))


def test_position_rules_respect_the_gross_cap():
    sig = np.array([[0.02, -0.01, np.nan, 0.0], [0.0, 0.0, 0.0, 0.0]])
    vol = np.array([[0.01, 0.02, 0.01, 0.01], [0.01] * 4])
    w = positions(sig, rule="sign", max_gross=1.0)
    np.testing.assert_allclose(w[0], [1 / 3, -1 / 3, 0, 0])  # 3 symbols have a forecast
    w = positions(sig, rule="sign", long_only=True, max_gross=0.5)
    np.testing.assert_allclose(w[0], [0.5 / 3, 0, 0, 0])
    w = positions(sig, vol, rule="vol_scaled", max_gross=2.0)
    np.testing.assert_allclose(w[0], [2 * 2 / 2.5, -2 * 0.5 / 2.5, 0, 0])  # z = 2, -0.5 → |z| sums to 2.5
    assert np.all(w[1] == 0)  # a flat date stays flat
    w = positions(sig, vol, rule="vol_scaled", long_only=True, max_gross=1.0)
    np.testing.assert_allclose(w[0], [1, 0, 0, 0])
    assert np.all(np.abs(w).sum(axis=1) <= 1.0 + 1e-12)


def _random_panel(T=600, N=6, seed=0):
    rng = np.random.default_rng(seed)
    R = rng.normal(0, 0.01, size=(T, N))
    R[0] = np.nan
    return R


def _hit(signal, R):
    w = positions(signal, rule="sign")
    return performance(simulate(w, R, np.arange(len(R))), 252)


def test_planted_lookahead_is_caught_and_alignment_is_exact():
    R = _random_panel()
    nxt = np.full_like(R, np.nan)
    nxt[:-1] = R[1:]  # the return of the NEXT period: only knowable with a look-ahead
    leaked = _hit(nxt, R)
    # the backtest applies the weights of t to the return of t + 1: a signal that IS that return wins
    # every time (a backtest one period late would make this a coin flip), and is flagged
    assert leaked["hit_rate"] == 1.0 and "look-ahead" in leaked.get("warning", "")
    # the return that ends at t is known at t: it must not predict the next return of an i.i.d.
    # series (a backtest one period early would make this a perfect, flagged strategy)
    now = _hit(R, R)
    assert 0.45 < now["hit_rate"] < 0.55 and "warning" not in now
    two = np.full_like(R, np.nan)
    two[:-2] = R[2:]
    assert 0.45 < _hit(two, R)["hit_rate"] < 0.55  # a leak two periods ahead does not help a one-period hold


@pytest.fixture(scope="module")
def forecasts():
    cfg = load_config(None, ["data.symbols=[AEM, WPM, NIO, PDD]", "data.sequence_length=20", "data.prediction_horizon=3"])
    data = prepare(cfg.data)
    ws = data.test
    return collect_forecasts(None, ws, data.preprocessing.target_scale, 256, pred_scaled=np.zeros((len(ws), 3), np.float32))


def test_window_forecasts_timing_through_backtest_forecasts(forecasts):
    fc = forecasts
    ev = EvaluationConfig(backtest_cost_bps=0, backtest_slippage_bps=0)
    # plant the realised future (target step 1) as the model's forecast: perfect and flagged
    fc.pred["model"] = fc.true.copy()
    res = backtest_forecasts(fc, ev)["strategies"]
    assert res["model"]["hit_rate"] == 1.0 and "warning" in res["model"]
    assert res["model"]["sharpe"] > 5
    # the same strategy driven by information of t (the return that just ended) has no such edge
    fc.pred["model"] = np.repeat(fc.last_return[:, None], 3, axis=1)
    res = backtest_forecasts(fc, ev)["strategies"]
    assert res["model"]["hit_rate"] < 0.6 and "warning" not in res["model"]
    # ... and equals the naive "repeat" forecast (last value), which is exactly that signal
    assert res["model"]["total_return"] == pytest.approx(res["naive:repeat"]["total_return"], rel=1e-6)
    assert res["naive:zero"]["total_return"] == 0.0 and res["naive:zero"]["turnover"] == 0.0
    assert res["buy_and_hold"]["hit_rate"] > 0.3  # long every day: the share of up days


def test_costs_lower_returns_by_turnover(forecasts):
    fc = forecasts
    fc.pred["model"] = np.repeat(fc.last_return[:, None], 3, axis=1)
    free = backtest_forecasts(fc, EvaluationConfig(backtest_cost_bps=0, backtest_slippage_bps=0))["strategies"]["model"]
    paid = backtest_forecasts(fc, EvaluationConfig(backtest_cost_bps=10, backtest_slippage_bps=5))["strategies"]["model"]
    assert paid["cost_drag"] == pytest.approx(free["turnover"] * free["n_periods"] * 15e-4, rel=1e-9)
    assert paid["total_return"] < free["total_return"]


def test_periods_per_year_from_timestamps():
    bdays = pd.bdate_range("2024-01-01", periods=300, tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(bdays)[0] == 252
    days = pd.date_range("2024-01-01", periods=300, freq="D", tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(days)[0] == 365  # crypto trades at weekends
    weeks = pd.date_range("2020-01-03", periods=100, freq="W-FRI", tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(weeks)[0] == 52
    hours = pd.date_range("2024-01-01 14:00", periods=7 * 24, freq="h", tz="UTC")
    hours = hours[(hours.day_of_week < 5) & (hours.hour >= 14) & (hours.hour < 21)].as_unit("ns").asi8  # 7 bars a weekday
    assert infer_periods_per_year(hours)[0] == 7 * 252
