"""A calendar cut is a stamp of one symbol and can fall inside another symbol's bar of the same length:
daily bars stamped at midnight UTC beside daily bars stamped at 05:00 (another exchange's midnight),
hourly bars of the full hour beside hourly bars of the half hour. That bar closes after the cut, so it is
a target of neither period. A bar's span is [its stamp, its stamp + its bar length), or up to the next
row where that comes sooner (the day a clock moves is 23 hours long). A symbol the model trained on is
cut alike when it is evaluated alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import apply, prepare
from hftraining.data.splits import Fold, rows_closed_by, rows_before
from hftraining.data.synth import synth_ohlcv

DAY, HOUR = 86_400 * 10**9, 3_600 * 10**9


def _shifted(frame: pd.DataFrame, ns: int) -> pd.DataFrame:
    out = frame.copy()
    out["timestamp"] = out["timestamp"] + pd.Timedelta(ns, "ns")
    return out


def _spans(ws, bars: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) ns of every target bar of windows ``ws``."""
    rows = ws.ends[:, None] + np.arange(1, ws.horizon + 1)
    start = ws.row_times[rows]
    bar = np.array([bars[s] for s in ws.symbols])[ws.symbol_ids][:, None]
    return start.ravel(), (start + bar).ravel()


def _meets(earlier, later, bars: dict[str, int]) -> list[str]:
    """The stamps of ``earlier``'s target bars whose span reaches into ``later``'s period."""
    if not len(earlier) or not len(later):
        return []
    s, e = _spans(earlier, bars)
    ls, le = _spans(later, bars)
    inside = (s < le.max()) & (e > ls.min())
    return [str(pd.Timestamp(x)) for x in s[inside][:3]]


TWO_MIDNIGHTS = {"UTC": (synth_ohlcv(160, seed=1, start="2026-01-01", freq="D"), DAY),
                 "NY": (_shifted(synth_ohlcv(160, seed=2, start="2026-01-01", freq="D"), 5 * HOUR), DAY)}
HALF_HOURS = {"H00": (synth_ohlcv(1600, seed=3, start="2026-01-01", freq="h", session="24h"), HOUR),
              "H30": (_shifted(synth_ohlcv(1600, seed=4, start="2026-01-01", freq="h", session="24h"), HOUR // 2), HOUR)}


def test_a_daily_bar_of_another_exchanges_midnight_is_no_training_target_after_the_cut():
    """The cut at New York's midnight (05:00 UTC) falls inside the UTC symbol's daily bar of that day: it
    closes 19 hours into the validation period, so it is no training target (nor a validation one)."""
    frames = {sym: f for sym, (f, _) in TWO_MIDNIGHTS.items()}
    bars = {sym: bar for sym, (_, bar) in TWO_MIDNIGHTS.items()}
    d = DataConfig(sequence_length=8, prediction_horizon=1, features=["log_return_1"], cache_dir=None,
                   split_dates={"val": "2026-04-10T05:00:00Z", "test": "2026-05-01T05:00:00Z"})
    p = prepare(d, frames)
    val_from, test_from = (pd.Timestamp(d.split_dates[k]).value for k in ("val", "test"))
    assert _spans(p.train, bars)[1].max() <= val_from  # every training bar has closed by the cut
    assert _spans(p.val, bars)[1].max() <= test_from
    assert not _meets(p.train, p.test, bars)
    # the UTC symbol's last training target is the day before: the bar of 2026-04-10 00:00 is left out
    utc = p.train.symbols.index("UTC")
    last = p.train.row_times[p.train.ends[p.train.symbol_ids == utc] + 1].max()
    assert pd.Timestamp(last, tz="UTC") == pd.Timestamp("2026-04-09", tz="UTC")


@pytest.mark.parametrize("scheme,k", [("expanding", 0), ("expanding", 1), ("rolling", 2)]
                         + [("purged_kfold", k) for k in range(4)])
def test_no_fold_trains_on_an_hourly_bar_that_closes_inside_its_test_block(scheme, k):
    """Hourly bars of the half hour beside those of the full hour: every fold's cut falls inside the
    other symbol's bar."""
    frames = {sym: f for sym, (f, _) in HALF_HOURS.items()}
    bars = {sym: bar for sym, (_, bar) in HALF_HOURS.items()}
    d = DataConfig(sequence_length=8, prediction_horizon=1, features=["log_return_1"], cache_dir=None,
                   train_ratio=0.6, val_ratio=0.15)
    p = prepare(d, frames, fold=Fold(k, 4 if scheme == "purged_kfold" else 3, scheme))
    assert len(p.train) and len(p.test)
    trained = p.train.join(p.val) if scheme == "purged_kfold" and len(p.val) else p.train
    assert not _meets(trained, p.test, bars)
    if scheme != "purged_kfold":
        assert not _meets(p.val, p.test, bars)


def test_a_bar_of_the_day_the_clock_moves_closes_at_the_next_row():
    """Daily bars at New York's midnight: 05:00 UTC in winter, 04:00 in summer; the bar of Sunday
    2026-03-08 (05:00) lasts 23 hours and has closed by the cut at Monday 04:00."""
    stamps = pd.to_datetime(["2026-03-06 05:00", "2026-03-07 05:00", "2026-03-08 05:00", "2026-03-09 04:00",
                             "2026-03-10 04:00"], utc=True).as_unit("ns").asi8
    cut = int(pd.Timestamp("2026-03-09 04:00", tz="UTC").value)
    assert rows_closed_by(stamps, cut, DAY) == rows_before(stamps, cut) == 3
    inside = int(pd.Timestamp("2026-03-09 02:00", tz="UTC").value)  # a cut inside that bar still leaves it out
    assert rows_closed_by(stamps, inside, DAY) == 2


def test_a_symbol_evaluated_alone_is_cut_as_in_training():
    """A model of daily bars beside hourly ones, evaluated on the daily symbol's frame alone: its training
    and validation windows are those it had in training, not the bar the cut falls inside as well."""
    frames = {"DAY": synth_ohlcv(150, seed=1, start="2026-01-01", freq="D"),
              "HR": synth_ohlcv(150 * 24, seed=2, start="2026-01-01", freq="h", session="24h")}
    d = DataConfig(sequence_length=8, prediction_horizon=2, features=["log_return_1"], train_ratio=0.65,
                   val_ratio=0.15, cache_dir=None)
    p = prepare(d, frames)

    def day_ends(ws) -> list[int]:
        return sorted(ws.row_times[ws.ends[np.asarray(ws.symbols)[ws.symbol_ids] == "DAY"]].tolist())

    for split in ("train", "val", "test"):
        alone = apply(p.preprocessing, {"DAY": frames["DAY"]}, split)
        assert day_ends(alone) == day_ends(getattr(p, split)), split
