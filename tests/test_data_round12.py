"""Causality and leakage on the bundled daily files, and two cases of a panel's symbols.

- Every registered feature (Alpha158; ``calendar`` and ``hour`` under New York; ``market`` across the
  panel) gives each row of the bundled files the same bits from the rows up to it as from the whole
  files, as do the labels of every ``data.target``; a symbol listed late (ARM, RKLB), one ending early
  and one with a hole keep theirs.
- The scaler, the target scale and every training window of the bundled files are the same bits when
  the rows from the first validation date on are replaced by other prices and volumes.
- A symbol whose file starts before the first validation date but whose rows after the features'
  warm-up do not: the per-symbol scaler's error says so, with the date of its first such row.
- A panel of daily and hourly bars under ``market`` features or a cross-sectional label is warned of
  (and listed in data_report.json): a daily bar is stamped with its date, the start of its day, so the
  hourly bars of that day read its close in their market features before it happened.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.features import FEATURES, parse_spec
from hftraining.data.labels import TARGETS, row_labels
from hftraining.data.pipeline import prepare, read_frames
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv

NY = "America/New_York"
SPECS = ["log_return_1", "return_3", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20", "atr_14",
         "stoch_14_3_3", "obv_20", "volatility_20", "dist_high_20", "dist_low_20", "calendar", "hour", "alpha158",
         "market_5_20"]
VAL, TEST = "2024-06-03", "2025-03-03"


def _ns(stamp: str) -> int:
    return pd.Timestamp(stamp, tz="UTC").value


def _times(f: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(f["timestamp"]).as_unit("ns").asi8


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    """Bundled files: AEM with a hole of 40 rows, ARM and RKLB listed late, MSTR ending in August 2024."""
    frames, _ = read_frames(DataConfig(symbols=["AEM", "ARM", "MSTR", "RKLB"], cache_dir=None, features=["log_return_1"]))
    aem, mstr = frames["AEM"], frames["MSTR"]
    frames["AEM"] = aem.drop(index=range(len(aem) - 500, len(aem) - 460)).reset_index(drop=True)
    frames["MSTR"] = mstr[_times(mstr) < _ns("2024-08-15")].reset_index(drop=True)
    return frames


def test_the_sweep_covers_every_registered_feature():
    assert {parse_spec(s)[0] for s in SPECS} == set(FEATURES.names())


@pytest.mark.parametrize("cut", ["2023-12-13", "2024-06-03", "2024-08-14", "2025-03-03"])
def test_every_feature_and_label_of_a_row_is_that_of_the_files_cut_after_it(panel, cut):
    t = _ns(cut)
    full, _ = build_rows(panel, SPECS, 1, tz=NY)
    part, _ = build_rows({s: f[_times(f) <= t].reset_index(drop=True) for s, f in panel.items()}, SPECS, 1, tz=NY)
    assert "ARM" in part.symbols  # listed in September 2023: its rows from the end of its warm-up on
    labels = {target: (row_labels(full.returns, full.times, target), row_labels(part.returns, part.times, target))
              for target in TARGETS}
    for k, sym in enumerate(part.symbols):
        a, b = full.rows(full.symbols.index(sym)), part.rows(k)
        up_to = full.times[a] <= t
        np.testing.assert_array_equal(full.times[a][up_to], part.times[b], err_msg=sym)
        np.testing.assert_array_equal(full.features[a][up_to], part.features[b], err_msg=sym)
        np.testing.assert_array_equal(full.returns[a][up_to], part.returns[b], err_msg=sym)
        for target, (la, lb) in labels.items():
            if la is not None:
                np.testing.assert_array_equal(la[a][up_to], lb[b], err_msg=f"{sym} {target}")


def _moved_from(frames: dict[str, pd.DataFrame], cut: int) -> dict[str, pd.DataFrame]:
    """Every bar dated on or after ``cut`` on another path ten times higher, its volume 0.01-100 times."""
    rng = np.random.default_rng(0)
    out = {}
    for sym, f in frames.items():
        hit, f = _times(f) >= cut, f.copy()
        n = int(hit.sum())
        if n:
            cols = ["open", "high", "low", "close"]
            f.loc[hit, cols] = f.loc[hit, cols].to_numpy() * (10 * np.exp(np.cumsum(rng.normal(0, 0.1, n))))[:, None]
            f.loc[hit, "volume"] = np.round(f.loc[hit, "volume"].to_numpy() * rng.uniform(0.01, 100, n))
        out[sym] = f
    return out


def _trained(p) -> dict[str, np.ndarray]:
    ws = p.train
    b = ws.batch(np.arange(len(ws)))
    return {"symbol": np.asarray(ws.symbols)[ws.symbol_ids], "time": np.asarray(ws.times),
            **{k: v.numpy() for k, v in b.items() if k != "index"}}


@pytest.mark.parametrize("scaler, per_symbol, target, horizon, embargo", [
    ("standard", False, "return", 1, 0), ("robust", False, "cs_rank", 5, 3), ("standard", True, "cs_zscore", 5, 0),
    ("robust", True, "excess_return", 3, 2),
])
def test_nothing_trained_on_moves_when_the_rows_from_the_first_validation_date_change(panel, scaler, per_symbol, target,
                                                                                      horizon, embargo):
    d = DataConfig(features=["log_return_1", "rsi_14", "volume_ratio_20", "calendar", "market_5"], timezone=NY,
                   sequence_length=20, prediction_horizon=horizon, embargo=embargo, scaler=scaler,
                   scale_per_symbol=per_symbol, target=target, cache_dir=None, split_dates={"val": VAL, "test": TEST})
    p = prepare(d, panel)
    ends = p.train.ends.astype(np.int64)[:, None] + np.arange(1, horizon + 1)
    assert p.train.row_times[ends].max() < _ns(VAL)  # every step of every training target
    q = prepare(d, _moved_from(panel, _ns(VAL)))
    assert q.preprocessing.scaler.to_dict() == p.preprocessing.scaler.to_dict()
    assert q.preprocessing.target_scale == p.preprocessing.target_scale
    seen, again = _trained(p), _trained(q)
    for key in seen:
        np.testing.assert_array_equal(seen[key], again[key], err_msg=key)


def test_a_symbol_listed_before_the_cut_with_no_row_after_the_warm_up_before_it_is_told_so(panel):
    """ARM's file starts on 2023-09-14; Alpha158's 60 rows of warm-up end in December, after the cut."""
    d = DataConfig(features=["alpha158"], sequence_length=10, prediction_horizon=1, scale_per_symbol=True, cache_dir=None,
                   split_dates={"val": "2023-11-01", "test": TEST})
    with pytest.raises(DataError, match=r"^ARM: no training rows to fit its own scaler \(its rows start on or after the "
                                        r"first validation date 2023-11-01: the first, after the features' warm-up of 60 "
                                        r"rows, is dated 2023-12-08\)"):
        prepare(d, panel)


def _daily_and_hourly() -> dict[str, pd.DataFrame]:
    return {"DAY": synth_ohlcv(120, seed=1, start="2024-01-02", freq="B"),
            "HOUR": synth_ohlcv(120 * 7, seed=2, start="2024-01-02", freq="1h", session="09:30-16:00", tz=NY)}


def test_an_hourly_bar_reads_the_daily_bar_of_its_day_in_the_market_features_once_the_day_is_over():
    """The daily bar stamped with a date closes hours after the hourly bars of that day: it enters the market
    of the hourly bars of the days after it, never of its own day's (it did until 2026-12-07)."""
    frames = _daily_and_hourly()
    day = frames["DAY"].timestamp.iloc[80]
    moved = frames["DAY"].copy()
    moved.loc[80, ["open", "high", "low", "close"]] *= 1.2  # that day's close
    a, _ = build_rows(frames, ["log_return_1", "market_3"], 1, tz="UTC")
    b, _ = build_rows({**frames, "DAY": moved}, ["log_return_1", "market_3"], 1, tz="UTC")
    k = a.symbols.index("HOUR")
    stamps = pd.DatetimeIndex(a.times[a.rows(k)]).tz_localize("UTC")
    changed = (np.asarray(a.features[a.rows(k)]) != np.asarray(b.features[b.rows(k)])).any(axis=1)
    assert changed.any() and not (stamps[changed].normalize() <= day).any()


@pytest.mark.parametrize("features, target, warned", [
    (["log_return_1", "market_5"], "return", "market features"),
    (["log_return_1"], "cs_rank", "labels (data.target=cs_rank)"),
    (["log_return_1"], "excess_return", "labels (data.target=excess_return)"),
    (["log_return_1"], "return", None),
])
def test_a_panel_of_daily_and_hourly_bars_is_warned_of_under_a_cross_section(features, target, warned, caplog):
    d = DataConfig(features=features, target=target, sequence_length=10, prediction_horizon=2, cache_dir=None)
    with caplog.at_level(logging.WARNING):
        p = prepare(d, _daily_and_hourly())
    said = [r.getMessage() for r in caplog.records if "mixes bars of other spacings" in r.getMessage()]
    if warned is None:
        assert not said and "mixed_spacings" not in p.report
        return
    assert len(said) == 1 and "(HOUR: 1 hour; DAY: 1 day)" in said[0] and warned in said[0]
    assert p.report["mixed_spacings"] == {"DAY": 86400.0, "HOUR": 3600.0}


def test_a_panel_of_one_spacing_is_not_warned_of(panel, caplog):
    """Business days beside calendar days (a crypto symbol), symbols listed late, one with a hole: one spacing."""
    frames = dict(panel, COIN=synth_ohlcv(900, seed=3, start="2022-06-01", freq="D"))
    d = DataConfig(features=["log_return_1", "market_5"], target="cs_rank", sequence_length=10, prediction_horizon=2,
                   cache_dir=None)
    with caplog.at_level(logging.WARNING):
        p = prepare(d, frames)
    assert not [r for r in caplog.records if "mixes bars of other spacings" in r.getMessage()]
    assert "mixed_spacings" not in p.report
