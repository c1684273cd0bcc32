"""A gap the whole panel shares (an exchange's closure) is the calendar, not a hole in each symbol's rows:
found without sorting the panel's stamps together, taken for a closure only where another symbol's own
gap is the same one (not a halt inside another symbol's longer halt), never in a feed that trades every day
(a crypto outage on every symbol is an outage), and a forecast of one symbol is as silent on a closure of
the training panel as training was."""

from __future__ import annotations

import json
import logging
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.pipeline import Preprocessing, latest_windows, prepare
from hftraining.data.sources import long_gaps, panel_long_gaps
from hftraining.data.synth import synth_ohlcv

FEATURES = ["log_return_1", "rsi_14"]
DAY = 86400 * 10**9


def _config(seq: int = 20) -> DataConfig:
    return DataConfig(sequence_length=seq, prediction_horizon=2, features=FEATURES, cache_dir=None)


def _without(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    t = pd.DatetimeIndex(frame["timestamp"])
    return frame[~((t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC")))].reset_index(drop=True)


def _tokyo(symbols, rows: int = 600, start: str = "2024-01-04") -> dict[str, pd.DataFrame]:
    """Hourly bars of Tokyo's session on business days, the exchange closed for a Golden Week from
    27 April to 6 May 2024 (the last bar before it on Friday 26 April)."""
    return {s: _without(synth_ohlcv(rows, seed=k, start=start, freq="1h", session="09:00-15:00", tz="Asia/Tokyo"),
                        "2024-04-27", "2024-05-06") for k, s in enumerate(symbols)}


def _gap_symbols(report) -> list[str]:
    return sorted(report.get("long_gaps", {}).get("symbols", {}))


# ----------------------------------------------------------------------------- the rule, and its cost


def _reference(times: dict[str, np.ndarray], closures=()) -> dict[str, list[list[int]]]:
    """The rule, symbol by symbol: a gap is the calendar when no symbol has a row inside it, another symbol's
    last row before it and first row after it lie within a day of its edges, and its own symbol does not
    trade on every day of the week in the four weeks either side of it."""
    out = {}
    for name, t in times.items():
        out[name] = []
        for a, b in long_gaps(t):
            near = t[((t >= a - 28 * DAY) & (t <= a)) | ((t >= b) & (t <= b + 28 * DAY))]
            days = np.bincount((near // DAY + 3) % 7, minlength=7)
            every_day = days.min() * 4 >= days.max()
            inside = any(((u > a) & (u < b)).any() for u in times.values())
            edged = any(((u <= a) & (u >= a - DAY)).any() and ((u >= b) & (u <= b + DAY)).any()
                        for other, u in times.items() if other != name)
            edged |= any((a - DAY <= c <= a and b <= e <= b + DAY)
                     or (abs(a - c) < DAY and abs(b - e) < DAY and np.sign(a - c) == np.sign(b - e)) for c, e in closures)
            if inside or not edged or every_day:
                out[name].append([a, b])
    return out


def _random_panel(rng) -> dict[str, np.ndarray]:
    """Hourly bars of a weekday session (or around the clock), with closures every symbol shares, halts of
    one symbol (some inside another's), a symbol missing the last bar before a closure, one listed late."""
    start = pd.Timestamp("2023-01-02", tz="UTC").value
    always = rng.random() < 0.25
    hours = np.arange(24 * 200, dtype=np.int64) * 3600 * 10**9 + start
    if not always:
        hours = hours[(((hours // DAY + 3) % 7) < 5) & ((hours // (3600 * 10**9)) % 24 < 7)]
    shared = [(start + int(d) * DAY, start + int(d + rng.integers(8, 15)) * DAY) for d in rng.integers(10, 180, 2)]
    panel = {}
    for k in range(int(rng.integers(1, 6))):
        t = hours
        for a, b in shared:
            t = t[(t < a) | (t >= b)]
        for _ in range(int(rng.integers(0, 3))):  # a halt of its own, some inside a shared closure or another's
            a = start + int(rng.integers(0, 190)) * DAY + int(rng.integers(0, 24)) * 3600 * 10**9
            t = t[(t < a) | (t >= a + int(rng.integers(3, 40)) * DAY)]
        if rng.random() < 0.2:  # the last bar before a closure missing
            a = shared[0][0]
            t = t[t != t[t < a].max()] if (t < a).any() else t
        if rng.random() < 0.2:  # listed late
            t = t[t >= start + int(rng.integers(0, 150)) * DAY]
        panel[f"S{k}"] = t.copy()
    return panel


def test_panel_long_gaps_follows_the_rule_on_random_panels():
    rng = np.random.default_rng(15)
    named = shared = 0
    for _ in range(120):
        panel = _random_panel(rng)
        closures = [] if rng.random() < 0.5 else [[int(c), int(c + 9 * DAY)] for c in rng.choice(
            np.concatenate(list(panel.values())), 2)]
        assert panel_long_gaps(panel) == _reference(panel)
        assert panel_long_gaps(panel, None, closures) == _reference(panel, closures)
        found = panel_long_gaps(panel)
        named += sum(map(len, found.values()))
        shared += sum(len(long_gaps(t)) for t in panel.values()) - sum(map(len, found.values()))
    assert named and shared  # both kinds of gap were drawn


def test_the_panel_s_stamps_are_not_sorted_together():
    """Every prepare (each walk-forward fold, each tune trial) and every predict runs it: 300 symbols of
    20,000 hourly bars with a closure each, within a small share of the memory their stamps take."""
    base = pd.Timestamp("2020-01-06", tz="UTC").value + np.arange(20_000, dtype=np.int64) * 3600 * 10**9
    base = base[((base // DAY + 3) % 7) < 5]
    base[len(base) // 2:] += 14 * DAY
    panel = {f"S{k}": base.copy() for k in range(300)}
    tracemalloc.start()
    try:
        found = panel_long_gaps(panel)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not any(found.values())  # the closure is the calendar
    assert peak < sum(t.nbytes for t in panel.values()) / 20


# ----------------------------------------------------------------------------- what a closure is


def test_golden_week_in_hourly_equity_bars_stays_silent(caplog):
    frames = _tokyo(["AAA", "BBB", "CCC"])
    assert "long_gaps" not in prepare(_config(), frames).report
    # one symbol missing the last bar before it is named (the others traded then); the others stay silent
    frames["CCC"] = _without(frames["CCC"], "2024-04-26 05:00", "2024-04-26 06:00")
    assert _gap_symbols(prepare(_config(), frames).report) == ["CCC"]


def test_a_halt_inside_a_longer_halt_of_the_other_symbol_is_named():
    """Two daily symbols: A halted two months while B was halted four; no other row lies inside A's gap and B's
    rows reach across it, but B's own gap is another one: nothing says the market was closed."""
    a = synth_ohlcv(700, seed=1, start="2020-01-01")
    b = synth_ohlcv(700, seed=2, start="2020-01-01")
    frames = {"A": _without(a, "2021-03-01", "2021-05-01"), "B": _without(b, "2021-02-01", "2021-06-01")}
    assert _gap_symbols(prepare(_config(), frames).report) == ["A", "B"]


def test_an_outage_of_every_symbol_of_a_feed_that_trades_every_day_is_named():
    """Hourly crypto bars around the clock: no exchange closes, so ten days without a row on every symbol
    is the feed's outage, which every window across it reads as one bar."""
    frames = {s: _without(synth_ohlcv(24 * 60, seed=k, start="2024-04-01", freq="1h", session="24h"),
                          "2024-05-01", "2024-05-11") for k, s in enumerate(["BTC", "ETH", "SOL"])}
    report = prepare(_config(), frames).report
    assert _gap_symbols(report) == ["BTC", "ETH", "SOL"]
    assert report["long_gaps"]["symbols"]["BTC"] == [["2024-04-30T23:00:00+00:00", "2024-05-11T00:00:00+00:00"]]


# ----------------------------------------------------------------------------- a forecast, as training


def _reads_across(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reads across a gap" in r.getMessage()]


def test_a_forecast_of_one_symbol_is_silent_on_a_closure_training_shared(caplog):
    """The file training read, sent alone (``predict --data AAA.csv``, ``Forecaster.predict`` of one frame,
    the server): its latest window reads across Golden Week, which training named for no symbol."""
    frames = _tokyo(["AAA", "BBB", "CCC"], rows=540)  # to 9 May: the last 48 rows reach back before the closure
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(seq=48), frames)
    assert "long_gaps" not in p.report and not [r for r in caplog.records if "gaps inside" in r.getMessage()]
    pre = Preprocessing.from_dict(json.loads(json.dumps(p.preprocessing.to_dict())))  # as the model folder keeps it
    assert pre.closures == [["2024-04-26T05:00:00+00:00", "2024-05-06T00:00:00+00:00"]]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        latest_windows(pre, {"AAA": frames["AAA"]})
        latest_windows(pre, {"NEW": frames["BBB"]})  # a symbol training never saw, on that exchange
    assert not _reads_across(caplog)
    # a halt of its own is still named: twelve days without a row, which training's panel traded through
    halted = _without(frames["AAA"], "2024-04-15", "2024-04-24")
    with caplog.at_level(logging.WARNING):
        latest_windows(pre, {"AAA": halted})
    assert _reads_across(caplog)


def test_closures_of_a_preprocessing_json_are_checked():
    frames = _tokyo(["AAA", "BBB"], rows=540)
    saved = prepare(_config(seq=48), frames).preprocessing.to_dict()
    for bad in ({"closures": "2024-04-26"}, {"closures": [["2024-05-06T00:00:00+00:00", "2024-04-26T05:00:00+00:00"]]},
                {"closures": [["2024-04-26 05:00", "2024-05-06 00:00"]]}):
        with pytest.raises(DataError, match=r"preprocessing\.json: closures"):
            Preprocessing.from_dict({**saved, **bad})
