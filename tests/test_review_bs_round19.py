"""The backtest's look-ahead warning reads each position against its own symbol's chance: a book long a
Treasury-bill fund beside stocks is not a leak, a future return in the inputs of a few symbols is named even
where the book's pooled hit rate stays near 0.5 (also in a book started afresh, as walk-forward pools its
folds), and a book whose hit rate is above chance by the noise of a hundred positions is not warned. And the
scaler's warning about training rows 1,000+ interquartile ranges out: said again by a run that reads the
statistics from the feature store, once per fit."""

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts


def _ev(*overrides):
    return load_config(None, [f"evaluation.{o}" for o in overrides]).evaluation


def _days(T):
    return pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8


def _forecasts(R, sig):
    T, N = R.shape
    t, i = np.nonzero(np.isfinite(R))
    return Forecasts(pred={"model": sig[t, i][:, None]}, true=np.zeros((len(t), 1)), dates=_days(T)[t], symbol_ids=i,
                     symbols=[f"S{j}" for j in range(N)], last_return=R[t, i], past_vol=np.full(len(t), 0.01),
                     last_close=np.full(len(t), 100.0), prev_time=None)


def _rising(rng, T, N, up):
    """Daily log returns of symbols that rise on ``up`` of their days (small moves: a Treasury-bill fund)."""
    return np.abs(rng.normal(4e-4, 3e-4, (T, N))) * np.where(rng.random((T, N)) < up, 1.0, -1.0)


def _warning(R, sig, *settings, starts=None):
    m = backtest_forecasts(_forecasts(R, sig), _ev(*settings), starts=starts)["strategies"]["model"]
    return m.get("warning", "")


@pytest.mark.parametrize("settings", [("backtest_portfolio=topk", "backtest_topk=2", "backtest_long_only=true"),
                                      ("backtest_long_only=true",)])
def test_a_book_long_a_rising_fund_beside_stocks_is_not_said_to_look_ahead(settings):
    """Two funds that rose on 92% of their days beside ten stocks, and a model that always prefers the funds: the
    book hits 0.9 without forecasting anything, where the panel's pooled share of rising returns (0.57) read it
    as a leak."""
    rng = np.random.default_rng(0)
    T = 300
    R = np.hstack([_rising(rng, T, 2, 0.92), rng.normal(0, 0.02, (T, 10))])
    sig = np.hstack([np.full((T, 2), 1.0), rng.normal(-0.5, 0.1, (T, 10))])  # the stocks: below the funds, negative
    m = backtest_forecasts(_forecasts(R, sig), _ev(*settings))["strategies"]["model"]
    assert m["hit_rate"] > 0.85
    assert "look-ahead" not in m.get("warning", ""), m.get("warning")
    # a look-ahead in the same book is still said
    nxt = np.vstack([R[1:], np.zeros((1, R.shape[1]))])
    assert "check the signal for look-ahead" in _warning(R, np.where(nxt > 0, sig, -1.0), *settings)


@pytest.mark.parametrize("settings", [(), ("backtest_positions=vol_scaled",), ("backtest_long_only=true",)])
@pytest.mark.parametrize("starts", [None, [100, 201]])
def test_a_future_return_in_the_inputs_of_a_few_symbols_is_named(settings, starts):
    """Three of twenty symbols whose signal is the return they are held over: the book's hit rate is about 0.57,
    far from any warning, and the three symbols hit 1.0 each."""
    rng = np.random.default_rng(1)
    T, N = 300, 20
    R = rng.normal(0, 0.02, (T, N))
    sig = rng.normal(0, 1, (T, N))
    sig[:-1, [3, 11, 17]] = R[1:, [3, 11, 17]]
    text = _warning(R, sig, *settings, starts=None if starts is None else _days(T)[starts])
    assert "check their signal for look-ahead" in text, text
    assert "3 symbols" in text and all(f"S{i} 1.00" in text for i in (3, 11, 17)), text
    assert "S0 " not in text
    # an honest book of the same panel is not warned
    assert "look-ahead" not in _warning(R, rng.normal(0, 1, (T, N)), *settings)


def test_a_hit_rate_above_chance_by_the_noise_of_a_hundred_positions_is_not_said_to_look_ahead():
    """Random long-only books, each long a quarter of the time in symbols that rise on 95% of their days: about
    120 positions, hitting 0.95 give or take 0.02; 0.98, more than halfway from 0.95 to 1, comes one book in
    twenty and is no evidence of a look-ahead (the binomial chance of it is 0.1, not the 1e-6 a leak's is)."""
    warned = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        R = _rising(rng, 61, 8, 0.95)
        text = _warning(R, rng.normal(0, 1, R.shape) - 0.67, "backtest_long_only=true")
        if "look-ahead" in text:
            warned.append((seed, text))
    assert not warned, warned[:2]


def test_far_rows_warning_is_said_again_from_the_feature_store(tmp_path, caplog):
    """The statistics read from the feature store (a second run on the same rows) say the warning their fit said."""
    from hftraining.data.pipeline import panel_rows, prepare

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    n = 400
    dates = pd.bdate_range("2020-01-01", periods=n)
    for sym in ("AAA", "BBB"):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        volume = rng.integers(1_000_000, 3_000_000, n).astype(float)
        if sym == "AAA":
            volume[100] = 1.0  # a day of one share beside millions: VMA5 a million of its spreads out
        pd.DataFrame({"Date": dates, "Open": close, "High": close * 1.01, "Low": close * 0.99, "Close": close,
                      "Adj Close": close, "Volume": volume}).to_csv(data / f"{sym}.csv", index=False)
    cfg = load_config(None, [f"data.data_dir={data}", f"data.cache_dir={tmp_path / 'cache'}",
                             "data.features=[alpha158]"]).data
    said = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hftraining"):
            rows = panel_rows(cfg)
            prepare(rows.d, rows)
        said.append([r.getMessage() for r in caplog.records if "interquartile ranges from the median" in r.getMessage()])
    assert len(said[0]) == 1 and "VSTD5: 1 row of AAA" in said[0][0]
    assert said[1] == said[0]
