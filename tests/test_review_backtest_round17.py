"""The Pearson IC per date when forecasts and realisations are both far from 1 in size (1e90 each read IC 0
on every date, 1e-90 each read a perfect IC of 1: the product of the two sums of squares left the float
range), and the backtest table of a book that lost more than its capital (a drawdown of -111.91% filled its
column and ran into the Sortino before it: "-3.04-111.91%")."""

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

from hftraining.eval.backtest import backtest_forecasts, format_backtest  # noqa: E402
from hftraining.eval.metrics import cross_sectional_ic_series, mean_cross_sectional_ic  # noqa: E402


@pytest.mark.parametrize("scale", [1e90, 1e99, 1e80, 1e-90, 1e-99, 1e-80])
def test_pearson_ic_when_forecasts_and_realisations_are_both_far_from_one(scale):
    """Both sides 1e90 in size read IC 0 on every date and both 1e-90 read 1 on every date (a perfect
    forecast): scipy's pearsonr of each date's values, as for values near 1."""
    rng = np.random.default_rng(1)
    D, N = 5, 12
    dates = np.repeat(np.arange(D), N)
    x = rng.normal(size=D * N)
    y = 0.3 * x + rng.normal(size=D * N)
    ref = np.array([stats.pearsonr(x[dates == d], y[dates == d])[0] for d in range(D)])
    assert np.all(np.abs(ref) < 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        used, ic = cross_sectional_ic_series(x * scale, y * scale, dates)
        np.testing.assert_array_equal(used, np.arange(D))
        np.testing.assert_allclose(ic, ref, rtol=1e-10)
        # the (N, K) form the trainer's neg_ic scores a validation split by
        two = np.stack([x, y], axis=1) * scale
        truth = np.stack([y, y], axis=1) * scale
        expected = (ref.mean() + 1.0) / 2.0  # step 2: the realisations themselves as forecasts
        assert mean_cross_sectional_ic(two, truth, dates) == pytest.approx(expected, rel=1e-10)
    # values near 1: the same correlations
    used, ic = cross_sectional_ic_series(x, y, dates)
    np.testing.assert_allclose(ic, ref, rtol=1e-12)


def test_the_backtest_table_separates_a_drawdown_past_minus_100_percent():
    """A 2.5× levered long book through a 45% fall loses 112.5% of its capital: its drawdown is past -100%
    and filled its 8 characters, so the console row read "-3.04-111.91%" (Sortino and drawdown as one
    word). Every figure of every row is now its own word, and reads back as the metric it shows."""
    T = 30
    dates = pd.date_range("2024-01-01", periods=T, freq="B", tz="UTC").as_unit("ns").asi8
    R = np.random.default_rng(0).normal(0.0, 0.01, (T, 3))
    R[10, :] = np.log(0.55)
    fc = _forecasts(dates, R, np.ones((T, 3, 1)))
    res = backtest_forecasts(fc, _ev("backtest_max_gross=2.5"))
    assert res["strategies"]["model"]["max_drawdown"] < -1.0
    table = format_backtest(res)
    keys = ["total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "max_drawdown", "calmar",
            "turnover", "hit_rate", "information_ratio"]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()
            if line.split() and line.split()[0] in res["strategies"]}
    assert set(rows) == set(res["strategies"])
    for name, words in rows.items():
        m = res["strategies"][name]
        assert len(words) == len(keys), (name, words)
        for key, word in zip(keys, words):
            if word == "—":
                assert not np.isfinite(m.get(key, np.nan)), (name, key)
                continue
            pct = word.endswith("%")
            digits = word.rstrip("%").partition(".")[2]
            half = 0.5 * 10.0 ** -len(digits) / (100 if pct else 1)  # half a unit of the last digit shown
            shown = float(word[:-1]) / 100 if pct else float(word)
            assert abs(shown - m[key]) <= half * (1 + 1e-9), (name, key, word, m[key])
