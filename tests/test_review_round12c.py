"""Warnings the data layer logs while a forecast's windows are built reach that forecast's answer
when the server's predictions run side by side, and a panel mixing bar spacings twice apart is
warned of like one mixing daily and hourly bars.

- The server runs predictions on worker threads at once. A warning logged by one of them while
  another finishes goes to its own answer's ``"warnings"``, never to the log instead, whatever the
  order in which they start and end.
- 30-minute bars beside 60-minute ones under ``market`` features or a cross-sectional label: the
  60-minute bar stamped at 14:30 enters the 14:30 cross-section of the 30-minute bars, whose bar
  closes half an hour before it does. Warned of and reported as daily beside hourly bars are.
"""

import logging
import threading

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import _kept

NY = "America/New_York"


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_warning_of_one_forecast_stays_in_its_answer_while_another_forecast_ends():
    """B's forecast ends (its windows built) at the moment A's data layer logs a warning: the warning is
    A's answer's, not a line of the server's log that A's client never reads."""
    log = logging.getLogger("hftraining.data.pipeline.kept_check")
    log.propagate = False
    handler = _ListHandler()
    log.addHandler(handler)
    b_in, b_may_end, b_done = threading.Event(), threading.Event(), threading.Event()
    a_said: list[str] = []
    b_said: list[str] = []

    def forecast_b():
        with _kept(b_said, log):
            b_in.set()
            b_may_end.wait(10)
        b_done.set()

    def b_ends_now(record):  # B ends while A's warning is on its way through the logger
        if record.thread == threading.get_ident() and threading.current_thread() is not b:
            b_may_end.set()
            b_done.wait(10)
        return True

    def forecast_a():
        with _kept(a_said, log):
            log.warning("warning: data: the bars are 1 minute apart (median), the model trained on bars 1 day apart")

    b = threading.Thread(target=forecast_b)
    try:
        b.start()
        assert b_in.wait(10)
        log.addFilter(b_ends_now)
        a = threading.Thread(target=forecast_a)
        a.start()
        a.join(20)
        b_may_end.set()
        b.join(20)
    finally:
        log.removeFilter(b_ends_now)
        log.removeHandler(handler)
    assert a_said == ["data: the bars are 1 minute apart (median), the model trained on bars 1 day apart"]
    assert handler.lines == [] and b_said == []


def test_a_warning_outside_a_kept_forecast_is_logged_as_ever():
    log = logging.getLogger("hftraining.data.pipeline.kept_check_plain")
    log.propagate = False
    handler = _ListHandler()
    log.addHandler(handler)
    said: list[str] = []
    try:
        with _kept(said, log):
            pass
        with _kept(None, log):
            log.warning("warning: data: once")
        other = threading.Thread(target=lambda: log.warning("warning: data: another thread"))
        with _kept(said, log):
            other.start()
            other.join(10)
            log.warning("warning: data: this thread")
    finally:
        log.removeHandler(handler)
    assert handler.lines == ["warning: data: once", "warning: data: another thread"]
    assert said == ["data: this thread"]


def _bars(freq: str, n: int, seed: int) -> pd.DataFrame:
    return synth_ohlcv(n, seed=seed, start="2024-01-02", freq=freq, session="09:30-16:00", tz=NY)


@pytest.mark.parametrize("short, long, names", [("30min", "1h", "(HALF: 30 minutes; HOUR: 1 hour)"),
                                                 ("1h", "1h", None)])
def test_bars_twice_apart_under_market_features_are_warned_of(short, long, names, caplog):
    frames = {"HALF": _bars(short, 13 * 60, 1), "HOUR": _bars(long, 7 * 60, 2)}
    d = DataConfig(features=["log_return_1", "market_5"], sequence_length=10, prediction_horizon=2, cache_dir=None)
    with caplog.at_level(logging.WARNING):
        p = prepare(d, frames)
    said = [r.getMessage() for r in caplog.records if "mixes bars of other spacings" in r.getMessage()]
    if names is None:
        assert not said and "mixed_spacings" not in p.report
        return
    assert len(said) == 1 and names in said[0], said
    assert p.report["mixed_spacings"] == {"HALF": 1800.0, "HOUR": 3600.0}


def test_a_symbol_trading_on_few_days_beside_daily_bars_is_not_warned_of(caplog):
    """Daily bars on 4 days in 10 (an illiquid stock): its median gap is 3 days, its bars are daily bars."""
    full = synth_ohlcv(600, seed=1, start="2022-01-03", freq="B")
    some = synth_ohlcv(600, seed=2, start="2022-01-03", freq="B")
    some = some[np.random.default_rng(0).random(len(some)) < 0.4].reset_index(drop=True)
    d = DataConfig(features=["log_return_1", "market_5"], target="cs_rank", sequence_length=10, prediction_horizon=2,
                   cache_dir=None)
    with caplog.at_level(logging.WARNING):
        p = prepare(d, {"FULL": full, "SOME": some})
    assert not [r for r in caplog.records if "mixes bars of other spacings" in r.getMessage()]
    assert "mixed_spacings" not in p.report
