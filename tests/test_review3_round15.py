"""Predicting from ``{symbol: frame}`` frames whose ``symbol`` column holds numeric codes, and the pooled
backtest started afresh on given dates: booked as separate backtests of its parts would book them."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts
from hftraining.inference.forecaster import Forecaster
from test_inference_settled_rows import model_dir  # noqa: F401  (an untrained seeded AEM model)


def test_numeric_symbol_codes_read_as_floats_name_their_key(model_dir):  # noqa: F811
    """A frame of a numeric code (Tokyo's 7203) read from a file with a blank symbol cell holds the codes as
    floats (7203.0): under ``{"7203": frame}`` it is that symbol's frame and forecast as the frame without the
    column is, while a column naming another code is still refused, naming it."""
    fc = Forecaster.from_pretrained(model_dir)
    prices = pd.read_csv(sample_data_dir() / "AEM.csv").tail(200).reset_index(drop=True)
    codes = pd.Series([7203.0] * 199 + [np.nan])
    assert codes.dtype == np.float64
    want = fc.predict({"7203": prices})
    got = fc.predict({"7203": prices.assign(symbol=codes)})
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(DataError, match=r"^7203: the frame's 'symbol' column names 7204, not 7203"):
        fc.predict({"7203": prices.assign(symbol=codes.replace(7203.0, 7204.0))})
    with pytest.raises(DataError, match=r"names 7203.5, not 7203"):  # not a whole number: not the code
        fc.predict({"7203": prices.assign(symbol=codes.replace(7203.0, 7203.5))})


def _daily(first: str, n: int, seed: int, absent: tuple[tuple[int, int], ...] = ()) -> Forecasts:
    """Forecasts of four symbols on ``n`` weekdays from ``first``; ``absent``: (date, symbol) without a row."""
    rng = np.random.default_rng(seed)
    t = pd.bdate_range(first, periods=n).values.astype("datetime64[ns]").astype(np.int64)
    r = rng.normal(0.0, 0.01, (n, 4))
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    keep = np.ones((n, 4), dtype=bool)
    for d, s in absent:
        keep[d, s] = False
    d, s = np.nonzero(keep)
    W = len(d)
    return Forecasts(pred={"model": rng.normal(0.0, 1e-3, (W, 2)), "naive:drift": rng.normal(0.0, 1e-3, (W, 2))},
                     true=rng.normal(0.0, 1e-3, (W, 2)), dates=t[d], symbol_ids=s, symbols=["A", "B", "C", "D"],
                     last_return=r[d, s], past_vol=np.abs(rng.normal(0.01, 0.003, W)), last_close=close[d, s])


@pytest.mark.parametrize("overrides", [[], ["evaluation.backtest_rebalance=3"],
                                       ["evaluation.backtest_positions=vol_scaled"],
                                       ["evaluation.backtest_portfolio=topk", "evaluation.backtest_topk=1",
                                        "evaluation.backtest_topk_dropout=1"]])
def test_a_book_started_afresh_is_booked_as_its_parts_alone(overrides):
    """Two parts a year apart (a symbol delisted inside the first, one without rows on the second's first
    dates), the books started afresh on the second's first date (or on a date before it that no row has):
    every curve is the two parts' own backtests one after another (each entry's costs paid, no period across
    the gap), and the counts of untraded forecasts are theirs summed."""
    ev = load_config(None, overrides).evaluation
    a = _daily("2020-01-01", 60, 0, tuple((d, 3) for d in range(40, 60)) + ((10, 2), (11, 2)))
    b = _daily("2022-01-03", 45, 1, tuple((d, 2) for d in range(3)))
    alone = [backtest_forecasts(a, ev), backtest_forecasts(b, ev)]
    for start in (int(b.dates.min()), int(b.dates.min()) - 30 * 86400 * 10**9):
        pooled = backtest_forecasts(Forecasts.concat([a, b]), ev, starts=[start, int(a.dates.min())])
        assert pooled["settings"]["restarts"] == ["2022-01-03"]
        for name, (dates, returns) in pooled["curves"].items():
            np.testing.assert_array_equal(dates, np.concatenate([p["curves"][name][0] for p in alone]))
            np.testing.assert_allclose(returns, np.concatenate([p["curves"][name][1] for p in alone]), rtol=0, atol=1e-14)
        for name, m in pooled["strategies"].items():
            assert m["n_periods"] == sum(p["strategies"][name]["n_periods"] for p in alone)
            for key in ("no_forecast", "no_volatility"):
                if key in m:
                    assert m[key] == sum(p["strategies"][name][key] for p in alone), (name, key)
