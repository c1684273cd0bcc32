"""A panel of daily bars beside hourly ones, cut by calendar: the cut dates are hourly stamps, so a cut
can fall inside a day, and the daily bar stamped at that midnight closes hours after it. A bar's span is
[its stamp, its stamp + its bar length): under every split scheme no training target's span reaches into
the span of a validation or test target of any symbol (nor a validation target's into a test target's);
a panel of one bar length is cut as before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import prepare, split_bars
from hftraining.data.splits import Fold, calendar_split, rows_closed_by
from hftraining.data.synth import synth_ohlcv

DAY, HOUR = 86_400 * 10**9, 3_600 * 10**9
BARS = {"DAY": DAY, "HR": HOUR}


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    """DAY: daily bars every day, stamped at midnight; HR: hourly bars around the clock, the same days."""
    return {"DAY": synth_ohlcv(150, seed=1, start="2026-01-01", freq="D"),
            "HR": synth_ohlcv(150 * 24, seed=2, start="2026-01-01", freq="h", session="24h")}


def _spans(ws) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) ns of every target bar of windows ``ws``, flattened."""
    rows = ws.ends[:, None] + np.arange(1, ws.horizon + 1)
    start = ws.row_times[rows]
    bar = np.array([BARS[s] for s in ws.symbols])[ws.symbol_ids][:, None]
    return start.ravel(), (start + bar).ravel()


def _check(train, later: dict) -> None:
    s, e = _spans(train)
    for name, ws in later.items():
        if not len(ws):
            continue
        ls, le = _spans(ws)
        lo, hi = ls.min(), le.max()
        inside = (s < hi) & (e > lo)  # a training bar's span meets the later split's period
        assert not inside.any(), (name, pd.to_datetime(s[inside][:3]), pd.to_datetime(lo))


SCHEMES = [(None, 0)] + [(s, k) for s in ("expanding", "rolling") for k in range(3)] + [("purged_kfold", k) for k in range(4)]


@pytest.mark.parametrize("scheme,k", SCHEMES)
def test_no_training_bar_closes_inside_a_later_period_of_a_mixed_panel(panel, scheme, k):
    for horizon, embargo in ((1, 0), (3, 2)):
        d = DataConfig(sequence_length=8, prediction_horizon=horizon, features=["log_return_1"], embargo=embargo, train_ratio=0.65,
                       val_ratio=0.15, cache_dir=None)
        p = prepare(d, panel, fold=None if scheme is None else Fold(k, 4 if scheme == "purged_kfold" else 3, scheme))
        assert len(p.train) and len(p.test)
        if scheme is None:
            cut = [pd.Timestamp(p.report["split"][key]) for key in ("val_from", "test_from")]
            assert all(c.hour for c in cut), cut  # the cuts fall inside a day: the case at stake
            _check(p.train, {"val": p.val, "test": p.test})
            _check(p.val, {"test": p.test})
        elif scheme == "purged_kfold":
            _check(p.train.join(p.val) if len(p.val) else p.train, {"test": p.test})
        else:
            _check(p.train, {"val": p.val, "test": p.test})
            _check(p.val, {"test": p.test})


def test_the_straddling_daily_bar_is_left_out_and_hourly_rows_keep_their_cut(panel):
    """Only the daily bar the cut falls inside leaves training (it is no validation target either, as it
    starts before the cut); the hourly symbol is cut where it was."""
    times = [pd.DatetimeIndex(f["timestamp"]).as_unit("ns").asi8 for f in panel.values()]
    assert split_bars(times) == [DAY, HOUR]
    assert split_bars([times[0], times[0][:1]]) == [DAY, 0]  # a single row: no bar length known, cut by its date
    day = times[0]
    cut = int(pd.Timestamp("2026-03-10 14:00", tz="UTC").value)
    test = int(pd.Timestamp("2026-04-10 09:00", tz="UTC").value)
    old = calendar_split(day, cut, test)
    new = calendar_split(day, cut, test, bar_ns=DAY)
    assert new["train"].stop == old["train"].stop - 1 and new["val"].start == old["val"].start
    assert new["val"].stop == old["val"].stop - 1 and new["test"] == old["test"]
    assert pd.Timestamp(day[new["train"].stop]) == pd.Timestamp("2026-03-10")  # the bar of the cut's day
    hour = times[1]
    assert calendar_split(hour, cut, test, bar_ns=HOUR) == calendar_split(hour, cut, test)
    # a cut at midnight falls inside no daily bar
    midnight = int(pd.Timestamp("2026-03-10", tz="UTC").value)
    assert rows_closed_by(day, midnight, DAY) == rows_closed_by(day, midnight)


def test_a_one_length_panel_is_cut_as_before(panel):
    d = DataConfig(sequence_length=8, features=["log_return_1"], cache_dir=None)
    p = prepare(d, {"DAY": panel["DAY"], "DAY2": synth_ohlcv(150, seed=3, start="2026-01-01", freq="D")})
    cut = pd.Timestamp(p.report["split"]["val_from"]).value
    last = p.train.row_times[p.train.ends + p.train.horizon].max()
    assert last == cut - DAY  # the last daily bar before the cut still trains
