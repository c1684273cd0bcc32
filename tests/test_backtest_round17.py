"""A levered book that loses all its capital stays bust (its capital below 0 turned the next loss into a
gain, and a loss of exactly 100% divided the next drift by 0); the Pearson IC of forecasts far from 1 in
size (a diverging model's 1e160, or 1e-170) is the correlation scipy computes, not 0 or no date at all."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from test_backtest_round13 import _ev, _forecasts  # noqa: E402

from hftraining.eval.backtest import Simulation, backtest_forecasts, performance  # noqa: E402
from hftraining.eval.metrics import cross_sectional_ic_series, mean_cross_sectional_ic  # noqa: E402

GROSS = 2.5


def _crash_panel(T: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """One symbol, daily: a fall of 45% on date 10 (a 2.5× long book loses 112.5% over it), 40% on date 15."""
    dates = pd.date_range("2024-01-01", periods=T, freq="B", tz="UTC").as_unit("ns").asi8
    R = np.random.default_rng(0).normal(0.0, 0.01, (T, 1))
    R[10, 0], R[15, 0] = np.log(0.55), np.log(0.6)
    return dates, R


def _no_costs(*more: str):
    return _ev(f"backtest_max_gross={GROSS}", "backtest_cost_bps=0", "backtest_slippage_bps=0", *more)


def test_a_levered_book_that_loses_its_capital_stays_bust():
    """Held long at 2.5× gross (the forecast is always up), without costs, each period earns 2.5 times the
    symbol's simple return: the reference compounds those to the period that takes the capital below 0 and
    stops there. The book read "—" for total return, Sharpe and drawdown (its equity went from -13% to
    -inf through a 100% loss, with numpy warnings), and a book compounded past its ruin read a total of
    -76% after a second crash "made" money."""
    dates, R = _crash_panel()
    fc = _forecasts(dates, R, np.ones((len(dates), 1, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by 0 past the ruin
        res = backtest_forecasts(fc, _no_costs())
    each = GROSS * np.expm1(R[1:, 0])  # period k: opened at dates[k], earns the return of dates[k + 1]
    bust = int(np.flatnonzero(1.0 + each <= 0)[0])
    assert bust == 9
    expected_total = float(np.prod(1.0 + each[: bust + 1]) - 1.0)
    assert expected_total < -1.0  # the book owes more than it had
    for key in ("model", "equal_weight"):  # equal_weight: the universe at the same 2.5× gross
        m = res["strategies"][key]
        curve = res["curves"][key][1]
        np.testing.assert_allclose(curve[: bust + 1], each[: bust + 1], rtol=1e-12)
        assert np.all(curve[bust + 1:] == 0.0)  # nothing held, traded or earned after the ruin
        assert m["total_return"] == pytest.approx(expected_total, rel=1e-12)
        assert m["annual_return"] == -1.0
        equity = np.cumprod(1.0 + each[: bust + 1])
        assert m["max_drawdown"] == pytest.approx(equity[-1] / equity.max() - 1.0, rel=1e-12)
        for name in ("annual_volatility", "sharpe", "sortino", "calmar", "turnover"):
            assert np.isfinite(m[name]), (key, name, m)
        assert "lost all its capital in the period from 2024-01-12" in m["warning"], m
        assert "20 later periods read 0" not in m["warning"] and "19 later periods read 0" in m["warning"]
    # after a restart (a walk-forward fold cut by evaluation.max_test_windows) a bust book has nothing to start with
    res = backtest_forecasts(fc, _no_costs(), starts=[int(dates[20])])
    curve = res["curves"]["model"][1]
    assert np.all(curve[bust + 1:] == 0.0) and len(curve) == len(dates) - 2
    assert res["strategies"]["model"]["total_return"] == pytest.approx(expected_total, rel=1e-12)


def test_performance_does_not_compound_past_a_ruin():
    """Returns of +15%, -120%, -150%, +60%: the capital is -23% after the second period. Compounded on, the
    -150% turned it into +11.5% and the book read a total of -76% and a drawdown from a "recovered" peak."""
    r = np.array([0.15, -1.2, -1.5, 0.6])
    m = performance(Simulation(np.arange(4), r, r, np.zeros(4), 0, 0), 252)
    assert m["total_return"] == pytest.approx(1.15 * (1 - 1.2) - 1.0)  # -1.23: frozen at the ruin
    assert m["max_drawdown"] == pytest.approx(-0.23 / 1.15 - 1.0)
    assert m["annual_return"] == -1.0
    assert "2 later periods read 0" in m["warning"]


@pytest.mark.parametrize("scale", [1e160, 1e200, 1e-160, 1e-170])
def test_pearson_ic_of_forecasts_far_from_one_in_size(scale):
    """The Pearson IC per date (the report's IC series, the training's neg_ic) of forecasts 1e160 in size
    was 0 on every date (their squares overflowed), and of forecasts 1e-170 in size no date counted at all
    (their squares underflowed to 0, read as a constant forecast): scipy's pearsonr of each date's values."""
    rng = np.random.default_rng(0)
    D, N = 6, 15
    dates = np.repeat(np.arange(D), N)
    x = rng.normal(size=D * N)
    y = 0.5 * x + rng.normal(size=D * N)
    ref = np.array([stats.pearsonr(x[dates == d], y[dates == d])[0] for d in range(D)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        used, ic = cross_sectional_ic_series(x * scale, y, dates)
        np.testing.assert_array_equal(used, np.arange(D))
        np.testing.assert_allclose(ic, ref, rtol=1e-12)
        # the realisations far from 1 too, and the (N, K) form the trainer scores a validation split by
        used, ic = cross_sectional_ic_series(x, y * scale, dates)
        np.testing.assert_allclose(ic, ref, rtol=1e-12)
        two = np.stack([x, -x], axis=1) * scale
        truth = np.stack([y, y], axis=1)
        assert mean_cross_sectional_ic(two, truth, dates) == pytest.approx(0.0, abs=1e-12)
        assert mean_cross_sectional_ic(two[:, :1], truth[:, :1], dates) == pytest.approx(ref.mean(), rel=1e-12)
