"""Intraday bars end to end: markets whose day is split by a break, and what a user relies on across
sessions, halts and 24/7 trading."""

import numpy as np
import pytest

from hftraining.core.config import load_config
from hftraining.data.synth import bar_times
from hftraining.eval.backtest import backtest_forecasts, infer_periods_per_year
from hftraining.eval.forecasts import Forecasts


def _lunch_market(freq: str, days: int, am: str, pm: str, tz: str, start: str = "2024-03-04") -> np.ndarray:
    """Bars of ``freq`` of a market with a lunch break (``am`` and ``pm`` sessions, HH:MM-HH:MM in ``tz``)
    on ``days`` business days, as int64 ns UTC."""
    a = bar_times(days * _bars(freq, am), freq, start, session=am, tz=tz).asi8
    b = bar_times(days * _bars(freq, pm), freq, start, session=pm, tz=tz).asi8
    return np.sort(np.concatenate([a, b]))


def _bars(freq: str, session: str) -> int:
    h0, m0, h1, m1 = (int(x) for x in session.replace("-", ":").split(":"))
    return ((h1 * 60 + m1) - (h0 * 60 + m0)) // int(freq.rstrip("min"))


def _forecasts(dates: np.ndarray, N: int = 3, seed: int = 0) -> Forecasts:
    rng = np.random.default_rng(seed)
    W = len(dates) * N
    sig = rng.normal(size=W)
    return Forecasts(pred={"model": np.repeat(sig[:, None], 2, axis=1), "zero": np.zeros((W, 2))},
                     true=np.zeros((W, 2)), dates=np.repeat(dates, N), symbol_ids=np.tile(np.arange(N), len(dates)),
                     symbols=[f"S{i}" for i in range(N)], last_return=rng.normal(0, 0.01, W),
                     past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0))


@pytest.mark.parametrize("am, pm, tz", [("09:00-11:30", "12:30-15:00", "Asia/Tokyo"),
                                        ("09:30-12:00", "13:00-16:00", "Asia/Hong_Kong")])
def test_a_short_test_split_of_a_lunch_break_market_counts_the_bars_of_a_day(am, pm, tz):
    """A test split of two weeks of 5-minute bars of Tokyo (09:00-11:30, 12:30-15:00) or Hong Kong: the
    lunch break ends a session, so each day is two sessions. Too short to count sessions over a year,
    the backtest annualised the median bars of a session × 252: half the bars there are (every Sharpe
    × 0.71, the annual return off). The bars of a day × 252."""
    bars = _lunch_market("5min", 10, am, pm, tz)
    per_day = _bars("5min", am) + _bars("5min", pm)  # 60 in Tokyo, 66 in Hong Kong
    ppy, how = infer_periods_per_year(bars)
    assert ppy == per_day * 252, how
    assert "bars per day" in how and "20 sessions on 10 days" in how
    # through the backtest: its Sharpe is annualised with the bars of a day
    res = backtest_forecasts(_forecasts(bars), load_config(None, []).evaluation)
    assert res["settings"]["periods_per_year"] == per_day * 252
    # a day cut by the split's first date (it opens at the lunch break) does not decide it
    assert infer_periods_per_year(bars[_bars("5min", am):])[0] == per_day * 252
    # one day of two sessions is a day, and the warning that its length may be cut names it
    warnings: list[str] = []
    ppy, how = infer_periods_per_year(bars[:per_day], warnings)
    assert ppy == per_day * 252, how
    assert len(warnings) == 1 and "from 1 day of intraday bars" in warnings[0]


def test_a_market_without_a_break_is_counted_as_before():
    """A session a day (New York, 09:30-16:00), and a halt of two hours that splits one day: the median
    session of the days, 78 five-minute bars × 252."""
    bars = bar_times(78 * 10, "5min", "2024-03-04", session="09:30-16:00", tz="America/New_York").asi8
    assert infer_periods_per_year(bars)[0] == 78 * 252
    halted = np.delete(bars, np.arange(78 * 4 + 30, 78 * 4 + 54))  # day 5: 11:00 to 13:00 halted
    ppy, how = infer_periods_per_year(halted)
    assert ppy == 78 * 252, how


def _write(path, stamps: np.ndarray, seed: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, len(stamps))))
    pd.DataFrame({"timestamp": pd.to_datetime(stamps, utc=True), "open": close, "high": close * 1.001,
                  "low": close * 0.999, "close": close, "volume": 1000.0}).to_csv(path, index=False)


def test_a_symbol_that_max_gap_leaves_without_windows_in_a_split_is_named(tmp_path, caplog):
    """An illiquid symbol's 5-minute bars skip two minutes in three: under data.max_gap=10min no run of 15
    rows (a window of 12 + 3) lies between two gaps, so it had no window in any split while its rows
    hold hundreds without the gap, and nothing said so: the scores were silently those of the other
    symbols. A warning names it, its splits and data.max_gap, and data_report.json keeps them."""
    import logging

    from hftraining.data.pipeline import prepare

    bars = bar_times(78 * 40, "5min", "2024-03-04", session="09:30-16:00", tz="America/New_York").asi8
    _write(tmp_path / "AAA.csv", bars, 0)
    _write(tmp_path / "BBB.csv", bars, 1)
    sparse = bars[np.random.default_rng(2).random(len(bars)) < 0.35]
    _write(tmp_path / "DDD.csv", sparse, 3)
    d = load_config(None, [f"data.data_dir={tmp_path}", "data.sequence_length=12", "data.prediction_horizon=3",
                           "data.max_gap=10min", "data.features=[log_return,hour]", "data.cache_dir=null"]).data
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        prep = prepare(d)
    k = prep.report["symbols"].index("DDD")
    assert not any((ws.symbol_ids == k).any() for ws in (prep.train, prep.val, prep.test))
    assert prep.report["max_gap_without_windows"] == {"DDD": ["train", "val", "test"]}
    said = [r.getMessage() for r in caplog.records if "data.max_gap 10min leaves" in r.getMessage()]
    assert len(said) == 1 and "DDD (train, val, test)" in said[0] and "AAA" not in said[0]
    # the symbols whose sessions hold windows are not named, nor is anything without data.max_gap
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        prep = prepare(load_config(None, [f"data.data_dir={tmp_path}", "data.sequence_length=12",
                                          "data.prediction_horizon=3", "data.features=[log_return,hour]",
                                          "data.cache_dir=null"]).data)
    assert "max_gap_without_windows" not in prep.report and not [r for r in caplog.records if "max_gap" in r.getMessage()]


@pytest.mark.parametrize("missing", [0.1, 0.3])
def test_a_short_test_split_of_minute_bars_missing_at_random_counts_the_bars_there_are(missing):
    """Two weeks of an illiquid symbol's minute bars (10% or 30% of the minutes without a trade): three
    missing minutes in a row end a session, so each day is many sessions. Too short to count sessions
    over a year, the backtest took the median of those parts × 252: 0.53 (10%) or 0.08 (30%) times the
    bars there are (Sharpe × 0.73 or × 0.28). The bars of a day × 252."""
    full = bar_times(390 * 10, "1min", "2024-03-04", session="09:30-16:00", tz="America/New_York").asi8
    there = full[np.random.default_rng(0).random(len(full)) >= missing]
    ppy, how = infer_periods_per_year(there)
    assert ppy == pytest.approx(len(there) / len(full) * 390 * 252, rel=0.02), how
