"""Qlib's Alpha158 feature table (``Alpha158DL``'s default config), computed per symbol, causally.

158 columns, every one unit-free (prices over today's close, volumes over today's volume):

- 9 candlestick features: KMID, KLEN, KMID2, KUP, KUP2, KLOW, KLOW2, KSFT, KSFT2;
- 4 price ratios: OPEN0, HIGH0, LOW0, VWAP0;
- 29 rolling operators × windows 5, 10, 20, 30, 60 (ROC5 ... VSUMD60).

Declared as data (:data:`ROLLING`: name → formula on a window), as Qlib declares them, with plain
vectorised functions instead of an expression engine. Differences from Qlib, on purpose:

- **Full windows only.** Qlib's rolling operators use ``min_periods=1`` and fill the first rows from
  partial windows. Here a window of d rows needs d rows (a 1-row change needs the row before too),
  so the first 60 rows are warm-up (NaN, dropped by :func:`~hftraining.data.features.build_features`)
  and every value is computed on the same number of rows.
- **VWAP0.** Our files carry no VWAP. The typical price (high + low + close) / 3 stands in for it.
- **Degenerate windows.** CORR, CORD and RSQR are 0 where a window is constant (a correlation is
  undefined there and Qlib yields NaN). A NaN after the warm-up would stop training. "Constant" is
  decided exactly (the window's maximum equals its minimum), never from a rolling variance: pandas'
  running sums leave a residue of earlier rows (3.6e-13 on a flat stretch of a long series) that
  made CORR NaN, RSQR arbitrary and WVMA/STD/BETA/RESI noise; on a constant window the standard
  deviations, the slope and the residual are 0 and the mean is the window's value.

Every value at row t uses rows ≤ t only (``tests/test_data_alpha158.py`` changes and removes later
rows and checks nothing moves).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12
CHUNK = 1 << 20  # windows per block of the O(n·d) operators (rank, arg-max/min): bounded temporaries


def _ref(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k rows down (Qlib's Ref): row t holds x[t - k], NaN for the first k rows."""
    out = np.full_like(x, np.nan)
    out[k:] = x[:-k]
    return out


def _roll(x: np.ndarray, d: int) -> pd.core.window.rolling.Rolling:
    return pd.Series(x).rolling(d, min_periods=d)


def _flat(x: np.ndarray, d: int) -> np.ndarray:
    """Whether each full window of d rows is constant, decided exactly (rolling max == rolling min;
    False in the warm-up and where a window holds a NaN)."""
    r = _roll(x, d)
    return r.max().to_numpy() == r.min().to_numpy()


def _mean(x: np.ndarray, d: int) -> np.ndarray:
    """Rolling mean; a constant window's own value exactly (no residue of earlier rows)."""
    return np.where(_flat(x, d), x, _roll(x, d).mean().to_numpy())


def _std(x: np.ndarray, d: int) -> np.ndarray:
    """Rolling sample std (ddof 1, as Qlib's Std); exactly 0 on a constant window."""
    return np.where(_flat(x, d), 0.0, _roll(x, d).std().to_numpy())


def _windows(x: np.ndarray, d: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` of every full window of ``x`` ((m, d) blocks → (m,)), aligned on each window's last row."""
    out = np.full(len(x), np.nan)
    if len(x) < d:
        return out
    view = sliding_window_view(x, d)
    for a in range(0, len(view), CHUNK):
        out[d - 1 + a : d - 1 + a + len(view[a : a + CHUNK])] = fn(view[a : a + CHUNK])
    return out


def _rank_last(w: np.ndarray) -> np.ndarray:
    """Percentile rank of each window's last value among its d values, ties averaged (pandas'
    ``rank(pct=True)``, as Qlib's Rank). NaN where the window holds a NaN."""
    last = w[:, -1:]
    less = (w < last).sum(axis=1)
    equal = (w == last).sum(axis=1)
    out = (less + (equal + 1) / 2) / w.shape[1]
    out[np.isnan(w).any(axis=1)] = np.nan
    return out


def _argmax1(w: np.ndarray) -> np.ndarray:
    """1-based position of each window's first maximum (Qlib's IdxMax)."""
    out = w.argmax(axis=1).astype(np.float64) + 1
    out[np.isnan(w).any(axis=1)] = np.nan
    return out


def _argmin1(w: np.ndarray) -> np.ndarray:
    out = w.argmin(axis=1).astype(np.float64) + 1
    out[np.isnan(w).any(axis=1)] = np.nan
    return out


def _regression(y: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over each window of d rows, the least-squares line of y on its position 1..d: (slope, R²,
    residual of the last row). R² is 0 on a constant window."""
    t = np.arange(len(y), dtype=np.float64)
    ys, ts = pd.Series(y), pd.Series(t)
    cov = ts.rolling(d, min_periods=d).cov(ys).to_numpy()
    var_t = d * (d + 1) / 12.0  # variance (ddof=1, as pandas' cov) of d consecutive integers
    slope = cov / var_t
    var_y = ys.rolling(d, min_periods=d).var().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(var_y > 0, cov * cov / (var_t * var_y), 0.0)
    r2[np.isnan(var_y)] = np.nan
    mean_y = ys.rolling(d, min_periods=d).mean().to_numpy()
    resi = y - (mean_y + slope * (d - 1) / 2.0)  # the fitted line at the last position, t - mean t = (d - 1)/2
    flat = _flat(y, d)  # a constant window: a flat line through every point
    return np.where(flat, 0.0, slope), np.where(flat, 0.0, np.clip(r2, 0.0, 1.0)), np.where(flat, 0.0, resi)


def _corr(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    """Rolling Pearson correlation; 0 where either side is constant over the window (or so nearly
    constant that the correlation is not a number)."""
    sa, sb = pd.Series(a), pd.Series(b)
    c = sa.rolling(d, min_periods=d).corr(sb).to_numpy()
    full = (sa.rolling(d, min_periods=d).count().to_numpy() == d) & (sb.rolling(d, min_periods=d).count().to_numpy() == d)
    c = np.where(full & (_flat(a, d) | _flat(b, d) | ~np.isfinite(c)), 0.0, c)
    return np.clip(c, -1.0, 1.0)


def alpha158(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             volume: np.ndarray) -> dict[str, np.ndarray]:
    """The 158 Alpha158 columns of one symbol (float64 arrays of its rows), in Qlib's order."""
    o, h, lo, c, v = (np.asarray(x, dtype=np.float64) for x in (open_, high, low, close, volume))
    span = h - lo + EPS
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    out: dict[str, np.ndarray] = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / span,
        "KUP": (h - top) / o, "KUP2": (h - top) / span, "KLOW": (bottom - lo) / o, "KLOW2": (bottom - lo) / span,
        "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / span,
        "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": (h + lo + c) / 3 / c,
    }
    c1, v1 = _ref(c, 1), _ref(v, 1)
    up, down, move = np.maximum(c - c1, 0), np.maximum(c1 - c, 0), np.abs(c - c1)
    vup, vdown, vmove = np.maximum(v - v1, 0), np.maximum(v1 - v, 0), np.abs(v - v1)
    gain, loss = (c > c1).astype(np.float64), (c < c1).astype(np.float64)
    gain[np.isnan(c1)] = loss[np.isnan(c1)] = np.nan
    log_v = np.log(v + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = c / c1
        log_vchg = np.log(v / v1 + 1)
    log_vchg[~np.isfinite(log_vchg) & ~np.isnan(v1)] = 0.0  # a volume change from 0: no information
    wv = np.abs(c / c1 - 1) * v
    per: dict[str, dict[int, np.ndarray]] = {name: {} for name in ROLLING}
    for d in WINDOWS:
        mean_c = _mean(c, d)
        slope, r2, resi = _regression(c, d)
        hi_max, lo_min = _roll(h, d).max().to_numpy(), _roll(lo, d).min().to_numpy()
        imax, imin = _windows(h, d, _argmax1), _windows(lo, d, _argmin1)
        sum_move, sum_vmove = _roll(move, d).sum().to_numpy() + EPS, _roll(vmove, d).sum().to_numpy() + EPS
        sum_up, sum_down = _roll(up, d).sum().to_numpy(), _roll(down, d).sum().to_numpy()
        sum_vup, sum_vdown = _roll(vup, d).sum().to_numpy(), _roll(vdown, d).sum().to_numpy()
        cnt_p, cnt_n = _roll(gain, d).mean().to_numpy(), _roll(loss, d).mean().to_numpy()
        values = {
            "ROC": _ref(c, d) / c,
            "MA": mean_c / c,
            "STD": _std(c, d) / c,
            "BETA": slope / c,
            "RSQR": r2,
            "RESI": resi / c,
            "MAX": hi_max / c,
            "MIN": lo_min / c,
            "QTLU": _roll(c, d).quantile(0.8).to_numpy() / c,
            "QTLD": _roll(c, d).quantile(0.2).to_numpy() / c,
            "RANK": _windows(c, d, _rank_last),
            "RSV": (c - lo_min) / (hi_max - lo_min + EPS),
            "IMAX": imax / d,
            "IMIN": imin / d,
            "IMXD": (imax - imin) / d,
            "CORR": _corr(c, log_v, d),
            "CORD": _corr(ret, log_vchg, d),
            "CNTP": cnt_p,
            "CNTN": cnt_n,
            "CNTD": cnt_p - cnt_n,
            "SUMP": sum_up / sum_move,
            "SUMN": sum_down / sum_move,
            "SUMD": (sum_up - sum_down) / sum_move,
            "VMA": _mean(v, d) / (v + EPS),
            "VSTD": _std(v, d) / (v + EPS),
            "WVMA": _std(wv, d) / (_mean(wv, d) + EPS),
            "VSUMP": sum_vup / sum_vmove,
            "VSUMN": sum_vdown / sum_vmove,
            "VSUMD": (sum_vup - sum_vdown) / sum_vmove,
        }
        for name, x in values.items():
            per[name][d] = x
    for name in ROLLING:  # Qlib's order: operator by operator, each over the windows
        for d in WINDOWS:
            out[f"{name}{d}"] = per[name][d]
    return out


ROLLING = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV", "IMAX", "IMIN", "IMXD",
    "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD",
)
"""The 29 rolling operators, in Qlib's order (each over :data:`WINDOWS`)."""
COLUMNS = ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2", "OPEN0", "HIGH0", "LOW0", "VWAP0",
           *(f"{name}{d}" for name in ROLLING for d in WINDOWS)]
"""The 158 column names, in order."""
