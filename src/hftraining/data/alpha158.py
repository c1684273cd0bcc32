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
  undefined there and Qlib yields NaN). A NaN after the warm-up would stop training. Qlib also yields
  NaN where a side's standard deviation is below 2e-5 in the data's own units (``np.isclose(std, 0,
  atol=2e-05)``: a close of a tenth of a cent, or ratios that move by about 1e-5); here such a window
  keeps its correlation and R², which do not depend on the unit. "Constant" is
  decided exactly (the window's maximum equals its minimum), never from a rolling variance: pandas'
  running sums leave a residue of earlier rows (3.6e-13 on a flat stretch of a long series) that
  made CORR NaN, RSQR arbitrary and WVMA/STD/BETA/RESI noise; on a constant window the standard
  deviations, the slope and the residual are 0 and the mean is the window's value.
  For the same reason the standard deviations, slopes, R² and correlations are computed window by
  window in two passes (the mean, then the deviations from it), never from running sums: once a
  series has fallen by orders of magnitude (a crash, reverse splits, quiet intraday bars after busy
  ones) the residue of the earlier, larger values is beyond float noise in the later ones (a close
  fallen a thousandfold: STD5 0.3% off and RSQR5 by 0.003, ten thousandfold: 9% and 0.09; volumes
  a millionth of the earlier ones: VSTD5 110% off).
- **Zero volume.** On a row without trades (volume 0: a halted day) VMA and VSTD divide by the
  window's mean volume instead of Qlib's ``$volume+1e-12`` (VMA 1, VSTD the coefficient of
  variation). Qlib's value there is about 1e17 and depends on the volume's unit (shares or lots):
  one such row in the training split made the scaler's statistics of all 10 columns about 1e16,
  so every other row scaled to a constant. A window without any volume keeps Qlib's 0.
- **Volume change after no volume.** CORD's ``log(volume / previous volume + 1)`` is infinite (a
  volume after a row without trades) or NaN (two such rows in a row) where the previous volume is 0;
  Qlib's rolling correlation (pandas') leaves such a row out, so its CORD there is over fewer rows.
  Here that row's log change is 0, the value of a fall to no volume, and every window keeps d rows.

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
MOMENT_CHUNK = 1 << 13  # windows per block of the two-pass moments (:func:`_moments`)


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


def _moments(x: np.ndarray, d: int, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Centred sums of every full window of d rows, aligned on its last row (NaN before it and where
    a window holds a NaN), each window in two passes: its mean ``mx``, then the deviations from it.
    ``sxx``: the squared deviations of ``x``; ``sxt``: its deviations times the centred positions
    -(d-1)/2..(d-1)/2; with ``y`` also ``syy`` and ``sxy``. Running sums (pandas' rolling var, cov and
    corr) keep a residue of the earlier rows that swamps a window of much smaller values.

    The sums run over the d positions of a window, each step one elementwise operation on all
    windows at once, so a window's value depends on its own rows only, in a fixed order, bit for bit
    (a reduction along a row, as numpy's or BLAS's, may add in another order for another length)."""
    n = len(x)
    out = {k: np.full(n, np.nan) for k in ("mx", "sxx", "sxt", *(("syy", "sxy") if y is not None else ()))}
    m = n - d + 1  # windows; window i holds rows i..i+d-1, so x[i + j] is position j of window i
    ex, ey, tmp = np.empty(MOMENT_CHUNK), np.empty(MOMENT_CHUNK), np.empty(MOMENT_CHUNK)

    def mean(z: np.ndarray, a: int, k: int, acc: np.ndarray) -> np.ndarray:
        """Into ``acc``: the means of windows a..a+k-1 of z, position by position."""
        acc[:] = z[a : a + k]
        for j in range(1, d):
            acc += z[a + j : a + j + k]
        acc /= d
        return acc

    for a in range(0, max(m, 0), MOMENT_CHUNK):  # blocks of windows: the temporaries stay in the cache
        k = min(MOMENT_CHUNK, m - a)
        blk = {key: col[d - 1 + a : d - 1 + a + k] for key, col in out.items()}  # this block's windows (views)
        mx, my = mean(x, a, k, blk["mx"]), None if y is None else mean(y, a, k, np.empty(k))
        for key in blk.keys() - {"mx"}:
            blk[key][:] = 0.0
        dx, dy, t = ex[:k], ey[:k], tmp[:k]
        for j in range(d):
            np.subtract(x[a + j : a + j + k], mx, out=dx)
            blk["sxx"] += np.multiply(dx, dx, out=t)
            blk["sxt"] += np.multiply(dx, j - (d - 1) / 2.0, out=t)
            if y is not None:
                np.subtract(y[a + j : a + j + k], my, out=dy)
                blk["syy"] += np.multiply(dy, dy, out=t)
                blk["sxy"] += np.multiply(dx, dy, out=t)
    return out


def _std(x: np.ndarray, d: int, m: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Rolling sample std (ddof 1, as Qlib's Std), window by window (``m``: :func:`_moments` of x,
    when at hand); exactly 0 on a constant window."""
    m = _moments(x, d) if m is None else m
    return np.where(_flat(x, d), 0.0, np.sqrt(m["sxx"] / (d - 1)))


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


def _regression(y: np.ndarray, d: int, m: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over each window of d rows, the least-squares line of y on its position 1..d: (slope, R²,
    residual of the last row), window by window (``m``: :func:`_moments` of y, when at hand). R² is 0
    on a constant window."""
    m = _moments(y, d) if m is None else m
    stt = d * (d * d - 1) / 12.0  # squared deviations of the positions 1..d from their mean
    slope = m["sxt"] / stt
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(m["sxx"] > 0, m["sxt"] * m["sxt"] / (stt * m["sxx"]), 0.0)
    r2[np.isnan(m["sxx"])] = np.nan
    resi = y - (m["mx"] + slope * (d - 1) / 2.0)  # the fitted line at the last position, t - mean t = (d - 1)/2
    flat = _flat(y, d)  # a constant window: a flat line through every point
    return np.where(flat, 0.0, slope), np.where(flat, 0.0, np.clip(r2, 0.0, 1.0)), np.where(flat, 0.0, resi)


def _corr(a: np.ndarray, b: np.ndarray, d: int, m: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Rolling Pearson correlation, window by window (``m``: :func:`_moments` of a and b, when at
    hand); 0 where either side is constant over the window (or so nearly constant that the
    correlation is not a number)."""
    m = _moments(a, d, b) if m is None else m
    with np.errstate(divide="ignore", invalid="ignore"):
        c = m["sxy"] / np.sqrt(m["sxx"] * m["syy"])
    full = ~np.isnan(m["sxx"]) & ~np.isnan(m["syy"])
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
    log_vchg[~np.isfinite(log_vchg) & ~np.isnan(v1)] = 0.0  # after a row without volume: 0 (see above)
    wv = np.abs(c / c1 - 1) * v
    per: dict[str, dict[int, np.ndarray]] = {name: {} for name in ROLLING}
    for d in WINDOWS:
        mean_c, m_c = _mean(c, d), _moments(c, d, log_v)  # the close's (and log volume's) windows, once
        mean_v = _mean(v, d)
        per_v = np.where((v == 0) & (mean_v > 0), mean_v, v + EPS)  # volume 0: the window's mean (see above)
        slope, r2, resi = _regression(c, d, m_c)
        hi_max, lo_min = _roll(h, d).max().to_numpy(), _roll(lo, d).min().to_numpy()
        imax, imin = _windows(h, d, _argmax1), _windows(lo, d, _argmin1)
        sum_move, sum_vmove = _roll(move, d).sum().to_numpy() + EPS, _roll(vmove, d).sum().to_numpy() + EPS
        sum_up, sum_down = _roll(up, d).sum().to_numpy(), _roll(down, d).sum().to_numpy()
        sum_vup, sum_vdown = _roll(vup, d).sum().to_numpy(), _roll(vdown, d).sum().to_numpy()
        cnt_p, cnt_n = _roll(gain, d).mean().to_numpy(), _roll(loss, d).mean().to_numpy()
        values = {
            "ROC": _ref(c, d) / c,
            "MA": mean_c / c,
            "STD": _std(c, d, m_c) / c,
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
            "CORR": _corr(c, log_v, d, m_c),
            "CORD": _corr(ret, log_vchg, d),
            "CNTP": cnt_p,
            "CNTN": cnt_n,
            "CNTD": cnt_p - cnt_n,
            "SUMP": sum_up / sum_move,
            "SUMN": sum_down / sum_move,
            "SUMD": (sum_up - sum_down) / sum_move,
            "VMA": mean_v / per_v,
            "VSTD": _std(v, d) / per_v,
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
