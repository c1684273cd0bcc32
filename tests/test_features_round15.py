"""Features on the data a user has: every registered feature causal on random panels (symbols of unequal
lengths listed at other dates, holes, hourly and daily bars, flat prices, days without volume), through
the panel rows training builds; a look-back longer than the warm-up probe is a warm-up like any other;
a missing TA-Lib is one line naming the package."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hftraining.core.errors import ConfigError
from hftraining.data.features import FEATURES, build_features, check_specs, feature_columns, feature_warmup
from hftraining.data.rows import build_rows

ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


# --- causality on panels ---------------------------------------------------------------------------


def _specs(rng: np.random.Generator) -> list[str]:
    """One spec of every registered feature: its defaults, or (half the time) its whole-number defaults
    drawn anew between 2 and themselves, kept when :func:`check_specs` takes them. A feature registered
    later is in the list without a change here."""
    out = []
    for name in FEATURES.names():
        params = [p.default for p in list(inspect.signature(FEATURES.get(name)).parameters.values())[1:]
                  if p.default is not inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
        spec = name
        if params and rng.random() < 0.5:
            drawn = [int(rng.integers(2, p + 1)) if isinstance(p, int) and p > 2 else p for p in params]
            candidate = "_".join([name, *(f"{p:g}" for p in drawn)])
            try:
                check_specs([candidate])
                spec = candidate
            except ConfigError:  # e.g. a MACD whose drawn fast period is not below its slow one
                pass
        out.append(spec)
    return out


def _bars(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` valid bars with flat stretches, bars of one price and runs of zero volume."""
    close = 50 * np.exp(np.cumsum(rng.normal(0, rng.choice([1e-3, 0.02]), n)))
    for _ in range(int(rng.integers(0, 3))):
        a = int(rng.integers(0, n))
        close[a : a + int(rng.integers(2, 70))] = close[a]
    op = close * np.exp(rng.normal(0, 0.005, n))
    hi = np.maximum(op, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    lo = np.minimum(op, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    one = rng.random(n) < 0.1
    op[one] = hi[one] = lo[one] = close[one]
    vol = rng.uniform(1e3, 1e6, n)
    for _ in range(int(rng.integers(0, 3))):
        a = int(rng.integers(0, n))
        vol[a : a + int(rng.integers(1, 25))] = 0.0
    vol[0] = 1e5  # never an empty volume column
    return {"open": op, "high": hi, "low": lo, "close": close, "volume": vol}


def _panel(rng: np.random.Generator, daily: bool) -> dict[str, pd.DataFrame]:
    """3 to 5 symbols on one calendar of daily bars (at UTC midnight: dates, or 21:00) or hourly bars,
    each listed and delisted on its own dates, with holes."""
    if daily:
        calendar = pd.bdate_range("2021-01-04", periods=420, tz="UTC") + pd.Timedelta(hours=int(rng.choice([0, 21])))
    else:
        calendar = pd.date_range("2021-01-04 13:00", periods=420, freq="h", tz="UTC")
    out = {}
    for s in range(int(rng.integers(3, 6))):
        a = 0 if s == 0 else int(rng.integers(0, 200))
        keep = np.arange(a, len(calendar) if s == 0 else int(rng.integers(a + 120, len(calendar) + 1)))
        keep = keep[rng.random(len(keep)) >= rng.choice([0.0, 0.1])]
        out[f"S{s}"] = pd.DataFrame({"timestamp": calendar[keep].as_unit("ns"), **_bars(rng, len(keep))})
    return out


def _rows_by_symbol(frames: dict[str, pd.DataFrame], specs: list[str], tz: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{symbol: (times, features)} of the panel rows training builds (panel features filled across symbols)."""
    rows, skipped = build_rows(frames, specs, tz=tz)
    assert not skipped
    return {s: (rows.times[a : a + n], rows.features[a : a + n])
            for s, a, n in zip(rows.symbols, rows.starts, rows.lengths)}


@pytest.mark.parametrize("seed", range(6))
def test_no_feature_of_any_symbol_moves_when_the_panel_s_later_rows_change_are_cut_or_go(seed):
    """Every registered feature (random parameters), one spec each, on a random panel: the rows dated up
    to a cut of every symbol are the same bits when the rows after the cut are cut off, and when they are
    other bars; the symbols listed after the cut, or with no row past the warm-up before it, are gone."""
    rng = np.random.default_rng(seed)
    specs, tz = _specs(rng), str(rng.choice(ZONES))
    frames = _panel(rng, daily=seed % 2 == 0)
    full = _rows_by_symbol(frames, specs, tz)
    warm = feature_warmup(specs)
    names = feature_columns(specs)
    for cut in np.sort(rng.choice(frames["S0"]["timestamp"].to_numpy()[warm + 30 :], 3, replace=False)):
        cut = pd.Timestamp(cut)
        early = {s: f[f["timestamp"] <= cut].reset_index(drop=True) for s, f in frames.items()}
        early = {s: f for s, f in early.items() if len(f) > warm}
        changed = {}
        for s, f in frames.items():
            f = f.copy()
            later = (f["timestamp"] > cut).to_numpy()
            if later.any():  # a symbol delisted before the cut keeps its bars
                for col, values in _bars(rng, int(later.sum())).items():
                    f.loc[later, col] = values
            changed[s] = f
        for what, other in (("cut after", _rows_by_symbol(early, specs, tz)),
                            ("changed after", _rows_by_symbol(changed, specs, tz))):
            for s, (times, feats) in full.items():
                keep = times <= cut.value
                if not keep.any():
                    assert s not in other or not (other[s][0] <= cut.value).any()
                    continue
                o_times, o_feats = other[s]
                o_keep = o_times <= cut.value
                assert np.array_equal(o_times[o_keep], times[keep]), f"seed {seed}, {s}: rows {what} {cut}"
                a, b = feats[keep], o_feats[o_keep]
                diff = ~((a == b) | (np.isnan(a) & np.isnan(b)))
                assert not diff.any(), (f"seed {seed}, {s}, {specs}: {names[int(np.argmax(diff.any(axis=0)))]} "
                                        f"moves at rows up to {cut} when the rows {what} it")


# --- look-backs longer than the warm-up probe --------------------------------------------------------


def _minutes(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    spread = close * rng.uniform(1e-4, 1e-3, n)
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-02", periods=n, freq="min", tz="UTC"),
                         "open": close, "high": close + spread, "low": close - spread, "close": close,
                         "volume": rng.uniform(10, 1e4, n)})


def test_a_week_of_minute_bars_as_a_window_is_a_warm_up_like_any_other():
    """``volatility_5000`` (3.5 days of minute bars) and ``dist_high_10080`` (a week) need their look-back
    of warm-up rows and no more, and the rows after it equal their definitions; they were a ConfigError
    saying the specs "need more than 4096 rows of warm-up", a probe's length no setting changes."""
    assert feature_warmup(["volatility_5000"]) == 5000
    assert feature_warmup(["dist_high_10080"]) == 10079
    assert feature_warmup(["rsi_14", "volatility_5000", "log_return_1"]) == 5000
    frame = _minutes(5200)
    out, first = build_features(frame, ["volatility_5000", "rsi_14"], symbol="BTC")
    assert first == 5000 and len(out) == 200
    r = np.diff(np.log(frame["close"].to_numpy()))  # r[i - 1]: the log return of row i
    want = [np.std(r[t - 5000 : t]) for t in range(5000, 5200)]  # rows t-4999..t, population std
    np.testing.assert_allclose(out["volatility_5000"].to_numpy(), want, rtol=1e-7)
    frame = _minutes(10100, seed=1)
    out, first = build_features(frame, ["dist_high_10080"], symbol="ETH")
    hi = frame["high"].rolling(10080).max().to_numpy()
    assert first == 10079
    np.testing.assert_allclose(out["dist_high_10080"].to_numpy(), frame["close"].to_numpy()[first:] / hi[first:] - 1,
                               rtol=1e-12)


# --- TA-Lib ----------------------------------------------------------------------------------------


NO_TALIB = """
import sys
sys.modules["talib"] = None  # as on a machine where the package is missing or its library does not load
from hftraining import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["list", "features"], ["train", "training.max_steps=1"]])
def test_a_missing_ta_lib_is_one_line_naming_the_package_with_exit_2(argv, tmp_path):
    """The indicators are TA-Lib's, with no stand-in: without it a command that computes features stops
    in one line that names the package and how to install it (it was a traceback ending in
    ModuleNotFoundError)."""
    done = subprocess.run([sys.executable, "-c", NO_TALIB, *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(err) == 1 and "Traceback" not in done.stderr
    assert "ta-lib" in err[0] and "pip install" in err[0]
