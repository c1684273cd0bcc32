"""The backtest counts the symbols of the split it trades: a panel symbol with no window in the split (delisted
before the test period) is not one of them, as eval.json's ``n_symbols`` and the report say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from test_backtest_round13 import _ev, _forecasts  # noqa: E402

from hftraining.eval.backtest import backtest_forecasts  # noqa: E402


def test_a_symbol_without_a_window_in_the_split_is_not_counted():
    dates = pd.date_range("2024-01-01", periods=60, freq="B", tz="UTC").as_unit("ns").asi8
    rng = np.random.default_rng(0)
    R = rng.normal(0, 0.01, (60, 5))
    R[:, 4] = np.nan  # S4: in the panel, no window in this split
    res = backtest_forecasts(_forecasts(dates, R, rng.normal(0, 1, (60, 5, 1))), _ev())
    assert res["settings"]["n_symbols"] == 4
    one = R.copy()
    one[:, 1:] = np.nan  # a top-k book of one symbol with a window holds nothing, said of that one symbol
    s = backtest_forecasts(_forecasts(dates, one, np.ones((60, 5, 1))), _ev("backtest_portfolio=topk"))["settings"]
    assert s["n_symbols"] == 1 and "1 symbol with a forecast" in s["warning"], s
