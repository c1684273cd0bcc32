"""Indicators against hand-written references on the bars that make them 0 / 0: flat stretches (a
suspension, minute bars without trades, a history that opens before the first trade), zero volume.

The stochastic's fast %K, 100 · (close - lowest low) / (highest high - lowest low), and Wilder's RSI,
100 · gain / (gain + loss), are undefined over a window of one price; they read the middle (50, as
``bbands`` reads 0.5 there), never TA-Lib's 0, the most oversold value an indicator can take.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.data.features import build_features, compute_features, feature_warmup


def _frame(close: np.ndarray, spread: np.ndarray | float = 0.004, volume: np.ndarray | None = None) -> pd.DataFrame:
    """Bars around ``close``; a bar whose ``spread`` is 0 has one price (open = high = low = close)."""
    n = len(close)
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float64), (n,))
    vol = np.random.default_rng(7).uniform(1e5, 1e6, n) if volume is None else volume
    return pd.DataFrame({
        "timestamp": pd.date_range("2021-01-04", periods=n, freq="B", tz="UTC"),
        "open": close, "high": close * (1 + spread), "low": close * (1 - spread), "close": close, "volume": vol,
    })


def _suspended(n: int = 260, seed: int = 0) -> pd.DataFrame:
    """A random walk that opens with 25 one-price bars (listed before its first trade) and is suspended
    twice later (40 and 6 one-price bars at the last close, no volume)."""
    rng = np.random.default_rng(seed)
    close = 30 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    spread = rng.uniform(0.001, 0.01, n)
    vol = rng.uniform(1e5, 1e6, n)
    for a, b in ((0, 25), (100, 140), (200, 206)):
        close[a:b] = close[a - 1] if a else close[b]
        spread[a:b] = 0.0
        vol[a:b] = 0.0 if a else vol[a:b]
    return _frame(close, spread, vol)


def ref_stoch(f: pd.DataFrame, k: int, smooth_k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The slow stochastic by its definition; a fast %K of 50 over a window of one price."""
    hh, ll = f["high"].rolling(k).max(), f["low"].rolling(k).min()
    span = hh - ll
    fast = (100 * (f["close"] - ll) / span.where(span > 0)).where(span > 0, 50.0).where(span.notna())
    slow_k = fast.rolling(smooth_k).mean()
    slow_d = slow_k.rolling(d).mean()
    return slow_k.where(slow_d.notna()).to_numpy(), slow_d.to_numpy()  # both from the first row of %D (TA-Lib's)


def ref_rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI as TA-Lib seeds it (the mean gain and loss of the first n changes, then smoothing
    by 1/n); 50 while the smoothed gain and loss are both 0 (no change yet)."""
    diff = np.diff(close)
    gain, loss = np.maximum(diff, 0.0), np.maximum(-diff, 0.0)
    out = np.full(len(close), np.nan)
    g, lo = gain[:n].mean(), loss[:n].mean()
    for t in range(n, len(close)):
        if t > n:
            g, lo = (g * (n - 1) + gain[t - 1]) / n, (lo * (n - 1) + loss[t - 1]) / n
        out[t] = 100 * g / (g + lo) if g + lo > 0 else 50.0
    return out


def _same_nan(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.isnan(a), np.isnan(b)))


@pytest.mark.parametrize("k, smooth_k, d", [(14, 3, 3), (5, 1, 1), (9, 3, 2), (1, 1, 1), (1, 3, 2)])
def test_stoch_reads_the_middle_over_a_window_of_one_price(k, smooth_k, d):
    f = _suspended()
    got = compute_features(f, [f"stoch_{k}_{smooth_k}_{d}"])
    want_k, want_d = ref_stoch(f, k, smooth_k, d)
    p = f"{k}_{smooth_k}_{d}"
    for col, want in ((f"stoch_k_{p}", want_k), (f"stoch_d_{p}", want_d)):
        have = got[col].to_numpy()
        assert _same_nan(have, want), col  # the same warm-up rows, NaN
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-9, equal_nan=True, err_msg=col)
    inside = got[f"stoch_k_{p}"].to_numpy()[100 + k + smooth_k + d : 140]  # deep inside the 40-row suspension
    assert inside.size and np.all(np.abs(inside - 50.0) < 1e-9)
    # still causal: the rows up to t are the same when the rows after t are cut
    for t in (30, 120, 203):
        cut = compute_features(f.iloc[: t + 1], [f"stoch_{p}"]).to_numpy()
        np.testing.assert_array_equal(cut, got.to_numpy()[: t + 1])


@pytest.mark.parametrize("n", [14, 5, 20])
def test_rsi_of_a_history_that_opens_flat_reads_50_until_the_first_move(n):
    f = _suspended()
    got = compute_features(f, [f"rsi_{n}"])[f"rsi_{n}"].to_numpy()
    want = ref_rsi(f["close"].to_numpy(), n)
    assert _same_nan(got, want)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8, equal_nan=True)
    first = int(np.flatnonzero(np.diff(f["close"].to_numpy()))[0]) + 1  # the first row whose close moved
    assert (got[n:first] == 50.0).all() and got[first] in (0.0, 100.0)
    # a suspension after the first move keeps the RSI it had (the smoothed gain and loss decay alike)
    np.testing.assert_allclose(got[100:140], got[99], rtol=1e-9)
    cut = compute_features(f.iloc[:20], [f"rsi_{n}"])[f"rsi_{n}"].to_numpy()  # rows after t change nothing
    np.testing.assert_array_equal(cut, got[:20])


def test_training_rows_of_a_history_that_opens_flat_carry_no_oversold_reading():
    """The rows training keeps after the warm-up: a symbol listed 25 days before its first trade has
    no stochastic or RSI of 0 on them (every such row was one before; the close never left its low)."""
    f = _suspended()
    specs = ["rsi_14", "stoch_14_3_3"]
    feats, first = build_features(f, specs, "LATE")
    assert first == feature_warmup(specs) < 25
    opening = feats.iloc[: 25 - first]  # the one-price rows kept after the warm-up
    assert len(opening) and np.allclose(opening[["rsi_14", "stoch_k_14_3_3", "stoch_d_14_3_3"]].to_numpy(), 50.0)


def test_every_ratio_indicator_equals_its_definition_over_flat_and_volumeless_stretches():
    """log_return, return, volume_ratio, obv, volatility, dist_high/low and bbands against pandas on the
    suspended history, where a window of one price or no volume makes their divisions degenerate:
    each as documented (bb_pos 0.5, volume_ratio 1 over a window without volume, obv 0), never NaN
    after the warm-up and never shifted by a row."""
    f = _suspended()
    c, h, lo, v = (f[k] for k in ("close", "high", "low", "volume"))
    specs = ["log_return_3", "return_2", "volume_ratio_10", "obv_10", "volatility_10", "dist_high_10",
             "dist_low_10", "bbands_10_2"]
    got = compute_features(f, specs)
    mean_v = v.rolling(10).mean()
    obv = (np.sign(c.diff()).fillna(0) * v).cumsum()
    traded = v.rolling(10).sum()
    mid, sd = c.rolling(10).mean(), c.rolling(10).std(ddof=0)
    span = 4 * sd
    want = {
        "log_return_3": np.log(c / c.shift(3)), "return_2": c / c.shift(2) - 1,
        "volume_ratio_10": (v / mean_v).where(mean_v > 0, 1.0).where(mean_v.notna()),
        "obv_10": ((obv - obv.shift(10)) / traded).where(traded > 0, 0.0).where(obv.shift(10).notna()),
        "volatility_10": np.log(c).diff().rolling(10).std(ddof=0),
        "dist_high_10": c / h.rolling(10).max() - 1, "dist_low_10": c / lo.rolling(10).min() - 1,
        "bb_pos_10_2": ((c - (mid - 2 * sd)) / span).where(span > 1e-12 * mid, 0.5).where(sd.notna()),
        "bb_width_10_2": span / mid,
    }
    for col, ref in want.items():
        have, ref = got[col].to_numpy(), ref.to_numpy(dtype=np.float64)
        assert _same_nan(have, ref), col
        np.testing.assert_allclose(have, ref, rtol=1e-7, atol=1e-7, equal_nan=True, err_msg=col)
    assert (got["volume_ratio_10"].to_numpy()[109:140] == 1.0).all()  # no volume in the window: 1
