"""The report's backtest figures against a hand-computed panel: each equity value is drawn at the close
where its period's return is realised, from a capital of 1 before the first period."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval import report as R
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts

T = 5
DATES = pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8  # Mon 1 Jan .. Fri 5 Jan


def _forecasts(R_: np.ndarray, sig: np.ndarray) -> Forecasts:
    """Forecasts of a full (T, N) panel: ``R_[t]`` the log return that ends at the close of date t, ``sig[t]``
    the model's 1-step forecast made at t, the zero forecast beside it."""
    N = R_.shape[1]
    W = T * N
    return Forecasts(pred={"model": sig.reshape(W, 1), "zero": np.zeros((W, 1))}, true=np.zeros((W, 1)),
                     dates=np.repeat(DATES, N), symbol_ids=np.tile(np.arange(N), T), symbols=[f"S{i}" for i in range(N)],
                     last_return=R_.reshape(W), past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0))


def kept_figures(monkeypatch) -> dict:
    """{name: matplotlib figure} of every figure the reports written from now on draw."""
    figures = {}
    original = R._Doc.figure

    def keep(self, fig, name, caption):
        figures[name] = fig
        return original(self, fig, name, caption)

    monkeypatch.setattr(R._Doc, "figure", keep)
    return figures


def _figures(monkeypatch, tmp_path, bt) -> dict:
    figures = kept_figures(monkeypatch)
    R.write_report(tmp_path, backtest=bt)
    return figures


def _points(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): tuple(map(np.asarray, line.get_data())) for line in ax.get_lines() if not line.get_label().startswith("_")}


@pytest.mark.parametrize("portfolio", ["per_symbol", "topk"])
def test_equity_plots_draw_each_return_at_the_close_that_realises_it(monkeypatch, tmp_path, portfolio):
    # S0 gains 10% over the period that ends at the close of Wed 3 Jan (R[2]) and loses it again over the one
    # that ends at the close of Fri 5 Jan (R[4]); S1 never moves. The model is long S0, short S1 (by halves).
    R_ = np.zeros((T, 2))
    R_[2, 0], R_[4, 0] = np.log(1.1), -np.log(1.1)
    sig = np.tile([1.0, -1.0], (T, 1))
    ev = load_config(None, ["evaluation.backtest_cost_bps=0", "evaluation.backtest_slippage_bps=0",
                            f"evaluation.backtest_portfolio={portfolio}",
                            *(["evaluation.backtest_topk=1"] if portfolio == "topk" else [])]).evaluation
    bt = backtest_forecasts(_forecasts(R_, sig), ev)
    figures = _figures(monkeypatch, tmp_path / portfolio, bt)
    x_dates = R._years(DATES)  # the start at the first date, then the close of each period: every date
    equity = _points(figures["equity_drawdown"].axes[0])
    drawdown = _points(figures["equity_drawdown"].axes[1])
    # the model re-balances to ±0.5 each date: +5% at the close of Wed 3 Jan, then 0.5 × (1/1.1 − 1) on Fri 5 Jan
    x, y = equity["model"]
    np.testing.assert_allclose(x, x_dates, rtol=0, atol=1e-9)
    np.testing.assert_allclose(y, [1.0, 1.0, 1.05, 1.05, 1.05 * (1 + 0.5 * (1 / 1.1 - 1))], rtol=1e-12)
    np.testing.assert_allclose(drawdown["model"][1], [0, 0, 0, 0, 0.5 * (1 / 1.1 - 1)], atol=1e-12)
    # buy-and-hold holds S0 from 0.5: +5%, then back to exactly 1 (a drawdown of 1/21 from the peak of 1.05)
    x, y = equity["buy_and_hold"]
    np.testing.assert_allclose(x, x_dates, rtol=0, atol=1e-9)
    np.testing.assert_allclose(y, [1.0, 1.0, 1.05, 1.05, 1.0], rtol=1e-12)
    np.testing.assert_allclose(drawdown["buy_and_hold"][1], [0, 0, 0, 0, 1 / 1.05 - 1], atol=1e-12)
    if portfolio == "topk":
        cum = _points(figures["topk_portfolio"].axes[0])
        for label, (x, y) in cum.items():
            np.testing.assert_allclose(x, x_dates, rtol=0, atol=1e-9, err_msg=label)
        np.testing.assert_allclose(cum["equal-weight universe"][1], [0, 0, 0.05, 0.05, 1.05 * (1 + 0.5 * (1 / 1.1 - 1)) - 1], atol=1e-12)
