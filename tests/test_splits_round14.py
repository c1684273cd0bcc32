"""Panels whose symbols trade on different calendars (crypto every day beside stocks on weekdays, a
late listing, an early delisting) and intraday bars across a daylight-saving change: under every
split scheme no training target is dated inside another split's period, no window reads another
symbol's rows or across a gap longer than ``data.max_gap`` (jittered windows included), and the
scaler's statistics are those of the training rows alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.pipeline import prepare
from hftraining.data.splits import Fold
from hftraining.data.synth import synth_ohlcv

FEATURES = ["log_return_1", "rsi_14"]
END = pd.Timestamp("2026-03-31")


@pytest.fixture(scope="module")
def daily() -> dict[str, pd.DataFrame]:
    """BTC trades every day, OLD and GONE on weekdays (GONE delists before the validation period),
    NEW lists after the first validation date (its first row after the features' warm-up)."""
    bday = lambda n: (END - pd.offsets.BDay(n - 1)).strftime("%Y-%m-%d")  # noqa: E731
    return {
        "BTC": synth_ohlcv(900, seed=1, start=(END - pd.Timedelta(days=899)).strftime("%Y-%m-%d"), freq="D"),
        "GONE": synth_ohlcv(400, seed=4, start=bday(700)),
        "NEW": synth_ohlcv(200, seed=3, start=bday(200)),
        "OLD": synth_ohlcv(700, seed=2, start=bday(700)),
    }


@pytest.fixture(scope="module")
def intraday() -> dict[str, pd.DataFrame]:
    """30-minute bars: SPY in New York's session (its UTC hours move on 2026-03-08), BTC around the
    clock, LATE listed in late March."""
    return {
        "BTC": synth_ohlcv(48 * 50, seed=2, start="2026-02-10", freq="30min", session="24h"),
        "LATE": synth_ohlcv(13 * 20, seed=3, start="2026-03-20", freq="30min"),
        "SPY": synth_ohlcv(13 * 60, seed=1, start="2026-02-02", freq="30min"),
    }


def _targets(ws) -> np.ndarray:
    """(W, H) dates of every window's targets."""
    return ws.row_times[ws.ends[:, None] + np.arange(1, ws.horizon + 1)]


def _splits(d: DataConfig, frames, scheme: str | None, k: int):
    """(training windows, {later split: (windows, [first date, end date) of its period)}) as a run trains
    and scores them: purged k-fold's windows after its test block join the training windows (as
    walkforward.prepare_fold does). The periods are the shares of the panel's calendar (the union of
    its dates) that the splits' docstrings state, worked out here again (``per_symbol`` cuts each symbol
    at its own rows: its periods are then read from its windows, not from these)."""
    n_folds = 4 if scheme == "purged_kfold" else 3
    p = prepare(d, frames, fold=None if scheme is None else Fold(k, n_folds, scheme))
    train, val = p.train, p.val
    cal = np.unique(p.train.row_times)
    date = lambda i: int(cal[i]) if i < len(cal) else np.iinfo(np.int64).max  # noqa: E731
    n, n0 = len(cal), int(len(cal) * d.train_ratio)
    if scheme == "purged_kfold":
        if len(val) and len(train):
            train = train.join(val)
        return train, {"test": (p.test, (date(k * n // n_folds), date((k + 1) * n // n_folds)))}
    if scheme is None:
        cut = [pd.Timestamp(p.report["split"][key]).value for key in ("val_from", "test_from")] if d.split == "calendar" else [0, 0]
        return train, {"val": (val, (cut[0], cut[1])), "test": (p.test, (cut[1], date(n)))}
    b = [n0 + (n - n0) * j // n_folds for j in range(n_folds + 1)]
    start = 0 if scheme == "expanding" else max(0, b[k] - n0)
    v = b[k] - int((b[k] - start) * d.val_ratio)
    return train, {"val": (val, (date(v), date(b[k]))), "test": (p.test, (date(b[k]), date(b[k + 1])))}


def _check_windows(ws, max_gap: int | None) -> None:
    """Every real input row and target of every window is one symbol's, in time order, and (with
    ``max_gap`` ns) no two consecutive rows of it are further apart."""
    if not len(ws):
        return
    rows = ws.ends[:, None].astype(np.int64) + np.arange(-ws.seq_len + 1, ws.horizon + 1)
    first = ws.first_rows[:, None]
    real = rows >= first
    t = ws.row_times[np.maximum(rows, first)]
    step = np.diff(t, axis=1)
    both = real[:, 1:] & real[:, :-1]
    assert (step[both] > 0).all()  # a step back in time: another symbol's rows
    if max_gap is not None:
        assert (step[both] <= max_gap).all()


SCHEMES = [(None, 0)] + [(s, k) for s in ("expanding", "rolling") for k in range(3)] + [("purged_kfold", k) for k in range(4)]


@pytest.mark.parametrize("split", ["calendar", "per_symbol"])
@pytest.mark.parametrize("scheme,k", SCHEMES)
def test_no_training_target_in_a_later_period_on_mixed_calendars(daily, split, scheme, k):
    for embargo, horizon, min_history in ((0, 1, None), (3, 4, 8)):
        d = DataConfig(sequence_length=20, prediction_horizon=horizon, features=FEATURES, embargo=embargo,
                       min_history=min_history, split=split, cache_dir=None)
        train, later = _splits(d, daily, scheme, k)
        assert len(train)
        got = _targets(train)
        for name, (ws, (lo, hi)) in later.items():
            _check_windows(ws, None)
            if split == "calendar":  # no symbol's training target inside any symbol's period
                assert not ((got >= lo) & (got < hi)).any(), name
                if scheme != "purged_kfold":
                    assert got.max() < lo, name
                assert ((_targets(ws) >= lo) & (_targets(ws) < hi)).all(), name
            for sid in np.unique(ws.symbol_ids):  # and each symbol's own: never a training target in it
                own = _targets(ws)[ws.symbol_ids == sid]
                mine = got[train.symbol_ids == sid]
                assert not ((mine >= own.min()) & (mine <= own.max())).any(), (name, train.symbols[sid])
        _check_windows(train, None)


@pytest.mark.parametrize("scheme,k", [(None, 0), ("expanding", 1), ("rolling", 2), ("purged_kfold", 0), ("purged_kfold", 1)])
def test_intraday_windows_across_daylight_saving_stay_in_sessions_and_before_later_periods(intraday, scheme, k):
    gap = pd.Timedelta("1h").value
    d = DataConfig(sequence_length=8, prediction_horizon=3, features=FEATURES, embargo=2, min_history=4,
                   max_gap="1h", augment_jitter=5, cache_dir=None)
    train, later = _splits(d, intraday, scheme, k)
    torch.manual_seed(0)
    shift = torch.randint(0, d.augment_jitter + 1, (len(train),)).numpy()
    jittered = train.subset(np.arange(len(train)))
    jittered.ends = np.maximum(train.ends - shift, train.earliest_ends(np.arange(len(train))))
    for ws in (train, jittered, *(w for w, _ in later.values())):
        _check_windows(ws, gap)
    for ws in (train, jittered):
        got = _targets(ws)
        for name, (_, (lo, hi)) in later.items():
            assert not ((got >= lo) & (got < hi)).any(), name
            if scheme != "purged_kfold":
                assert got.max() < lo, name


def test_scaler_statistics_are_the_training_rows_and_a_symbol_listed_in_the_test_period(daily):
    d = DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, cache_dir=None)
    p = prepare(d, daily)
    val_from = pd.Timestamp(p.report["split"]["val_from"]).value
    rows = p.train.features
    train = p.train.row_times < val_from  # every symbol's rows dated before the first validation date
    center, scale = p.preprocessing.scaler.stats("OLD")
    np.testing.assert_allclose(center, rows[train].astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scale, rows[train].astype(np.float64).std(axis=0), rtol=1e-6)
    # NEW has no training row (it lists after the cut): pooled, it is scaled by the training rows of the others ...
    assert p.report["split"]["symbols"]["NEW"]["train"] is None
    k = p.test.symbols.index("NEW")
    np.testing.assert_array_equal(p.test.center[k], p.test.center[p.test.symbols.index("OLD")])
    # ... and with a scaler of its own it is refused, by name
    with pytest.raises(DataError, match="NEW: no training rows to fit its own scaler"):
        prepare(DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, cache_dir=None,
                           scale_per_symbol=True), daily)
