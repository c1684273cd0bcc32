"""A daily symbol of a panel of mostly intraday bars reads its dates as in training; a one-letter `t`
column before `Date` is not the timestamp; a typo in an epoch column is not read as a date decades away;
milliseconds then microseconds in one column are read whole."""
from __future__ import annotations

import numpy as np
import pandas as pd

from hftraining.data import io
from hftraining.data.features import OWN_SPACING_GAPS, compute_features


def _daily(n=300):
    days = pd.bdate_range("2023-01-02", periods=n, tz="UTC")
    c = 100 + np.arange(n, dtype=float)
    return pd.DataFrame({"timestamp": days, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1000.0})


def test_a_daily_symbol_of_a_mixed_panel_reads_its_dates_as_training_did():
    # training computes each symbol's time features by its own bars up to each row (bar_seconds None); a
    # panel of mostly intraday bars records an intraday bar_seconds, which evaluate --data and predict pass:
    # it reads only a frame's first OWN_SPACING_GAPS rows (too few bars before them to tell), and the
    # symbol's own recorded spacing (symbol_bar_seconds) is passed for it in their place
    frame = _daily()
    specs = ["calendar", "hour"]
    trained = compute_features(frame, specs, "America/New_York")
    given = compute_features(frame, specs, "America/New_York", bar_seconds=3600.0)
    pd.testing.assert_frame_equal(given.iloc[OWN_SPACING_GAPS:], trained.iloc[OWN_SPACING_GAPS:])
    own = compute_features(frame, specs, "America/New_York", bar_seconds=86400.0)
    pd.testing.assert_frame_equal(own, trained)


def test_a_one_letter_t_column_before_the_date_is_not_the_timestamp(tmp_path):
    p = tmp_path / "A.csv"
    p.write_text("t,Date,Open,High,Low,Close,Volume\n"
                 + "\n".join(f"{k},2024-01-{k + 2:02d},1,1,1,1,1" for k in range(6)) + "\n")
    df = io.read_table(p)
    ts = io.parse_timestamps(df["timestamp"], p)
    assert ts.iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")


def test_a_typo_in_a_seconds_column_is_a_bad_timestamp_not_a_date_of_1975():
    # two cells of a seconds column with two extra digits (above 1e11) were NaT (bad_timestamp); read as
    # milliseconds they are dates of 1975, kept and sorted before the file's 2024 bars
    t = 1704153600 + 86400 * np.arange(120, dtype=np.int64)
    t[60:62] *= 100
    ts = io.parse_timestamps(pd.Series(t), "A.csv")
    assert ts.iloc[60:62].isna().all() and ts.drop(index=[60, 61]).notna().all()


def test_milliseconds_then_microseconds_are_still_read_whole():
    ms = (pd.date_range("2024-10-01", periods=100, freq="D", tz="UTC").asi8 // 10**6)
    us = (pd.date_range("2025-01-09", periods=60, freq="D", tz="UTC").asi8 // 10**3)
    ts = io.parse_timestamps(pd.Series(np.r_[ms, us]), "k.csv")
    assert ts.notna().all() and ts.is_monotonic_increasing
