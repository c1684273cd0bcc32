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
- **No 1e-12 guard.** Qlib adds 1e-12 to the denominators of KMID2, KUP2, KLOW2, KSFT2, RSV, SUMP,
  SUMN, SUMD, VMA, VSTD, WVMA and the VSUM columns, in the data's own units. Here they divide exactly,
  and are 0 where the denominator is 0 (Qlib's value there): the same bars quoted at 1e-10 (a token
  priced in BTC) or 1e10 give the same columns, where Qlib's KMID2 was 1% and SUMP5 0.6% smaller at
  1e-10. On the bundled files the two agree to 1e-9 of the value; a sub-cent close's bars, whose
  range is about 1e-5, move KMID2 by about 1e-7.

Every value at row t uses rows ≤ t only (``tests/test_data_alpha158.py`` changes and removes later
rows and checks nothing moves).
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pandas as pd

WINDOWS = (5, 10, 20, 30, 60)
BLOCK = 256  # windows per step of the moments kernel


# The window operators are serial Numba kernels, compiled on the first table (and cached on disk).
# Numpy over every window at once allocated (n, d) temporaries (an arg-max of 1M rows of 60 copied
# 480 MB), and each constant-window test cost two pandas rolling passes, 110 a table: 1M rows took 15 s
# of CPU, now under 4. The kernels give the same bits as those operators: the moments add in numpy's
# order (positions 0..d-1; no fast-math, so no reassociation and no fused multiply-add), the extremes
# and quantiles are exact order statistics read as pandas' rolling max/min/quantile do (±inf as NaN,
# the same interpolation), the positions and the rank count as numpy did. They are compiled on first
# use, not at import: predict and serve import this module and, without Alpha158, never Numba.

def _moments_kernel(x, y, d, with_y, mx, sxx, sxt, syy, sxy):  # pragma: no cover - compiled
    # blocks of BLOCK windows, each step one operation on every window of the block: the order of
    # numpy's passes over all windows, which the compiler vectorises across the windows
    m = len(x) - d + 1
    half = (d - 1) / 2.0
    a, b = np.empty(BLOCK), np.empty(BLOCK)
    s_xx, s_xt, s_yy, s_xy = np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK)
    for i0 in range(0, m, BLOCK):
        k = min(BLOCK, m - i0)
        for w in range(k):
            a[w] = x[i0 + w]
            b[w] = y[i0 + w]
        for j in range(1, d):
            for w in range(k):
                a[w] += x[i0 + j + w]
        if with_y:
            for j in range(1, d):
                for w in range(k):
                    b[w] += y[i0 + j + w]
        for w in range(k):
            a[w] /= d
            b[w] /= d
            s_xx[w] = 0.0
            s_xt[w] = 0.0
            s_yy[w] = 0.0
            s_xy[w] = 0.0
        for j in range(d):
            tj = j - half
            if with_y:
                for w in range(k):
                    dx = x[i0 + j + w] - a[w]
                    dy = y[i0 + j + w] - b[w]
                    s_xx[w] += dx * dx
                    s_xt[w] += dx * tj
                    s_yy[w] += dy * dy
                    s_xy[w] += dx * dy
            else:
                for w in range(k):
                    dx = x[i0 + j + w] - a[w]
                    s_xx[w] += dx * dx
                    s_xt[w] += dx * tj
        for w in range(k):
            r = i0 + d - 1 + w
            mx[r] = a[w]
            sxx[r] = s_xx[w]
            sxt[r] = s_xt[w]
            if with_y:
                syy[r] = s_yy[w]
                sxy[r] = s_xy[w]


def _runs_kernel(x, out):  # pragma: no cover - compiled
    run = 0
    for i in range(len(x)):
        if not np.isfinite(x[i]):  # in no constant window (pandas' rolling max and min read ±inf as NaN)
            run = 0
        elif i > 0 and x[i] == x[i - 1]:
            run += 1
        else:
            run = 1
        out[i] = run


def _arg_kernel(x, d, largest, pos, best_out):  # pragma: no cover - compiled
    # a monotonic queue of the rows that can still be a window's extreme: values non-increasing
    # (largest) from its head, ties kept in row order, so the head is the window's first extreme
    q = np.empty(d, dtype=np.int64)  # ring buffer of rows
    head, size, last_nan, last_inf = 0, 0, -1, -1
    for t in range(len(x)):
        if size > 0 and q[head] <= t - d:  # the head has left the window
            head = (head + 1) % d
            size -= 1
        v = x[t]
        if v != v:
            last_nan = t
        else:
            if np.isinf(v):
                last_inf = t
            while size > 0:  # drop the rows the new one beats (ties stay: the first is the extreme)
                back = x[q[(head + size - 1) % d]]
                if not ((back < v) if largest else (back > v)):
                    break
                size -= 1
            q[(head + size) % d] = t
            size += 1
        if t >= d - 1:
            if t - last_nan < d:  # a NaN in the window
                pos[t] = np.nan
                best_out[t] = np.nan
            else:
                pos[t] = q[head] - (t - d + 1) + 1.0
                best_out[t] = np.nan if t - last_inf < d else x[q[head]]  # as pandas' rolling max: ±inf is NaN


def _sorted_kernel(x, d, q_hi, q_lo, hi, lo, rank):  # pragma: no cover - compiled
    buf = np.empty(d)  # the window's values that are not NaN, sorted
    size, last_inf = 0, -1
    for t in range(len(x)):
        if np.isinf(x[t]):
            last_inf = t
        if t >= d:  # remove the row that leaves (any copy of its value)
            v = x[t - d]
            if v == v:
                k = np.searchsorted(buf[:size], v)
                for j in range(k, size - 1):
                    buf[j] = buf[j + 1]
                size -= 1
        v = x[t]
        if v == v:  # insert the row that enters
            k = size
            while k > 0 and buf[k - 1] > v:
                buf[k] = buf[k - 1]
                k -= 1
            buf[k] = v
            size += 1
        if size == d:  # a full window without NaN
            for q, out in ((q_hi, hi), (q_lo, lo)):  # pandas' linear interpolation (its roll_quantile)
                at = q * (d - 1)
                idx = int(at)
                if t - last_inf < d:  # pandas' rolling quantile reads ±inf as NaN
                    out[t] = np.nan
                elif at == idx:
                    out[t] = buf[idx]
                else:
                    out[t] = buf[idx] + (buf[idx + 1] - buf[idx]) * (at - idx)
            less = np.searchsorted(buf, v)  # the last value's rank: below it, and equal to it
            equal = np.searchsorted(buf, v, side="right") - less
            rank[t] = (less + (equal + 1) / 2) / d
        else:
            hi[t] = np.nan
            lo[t] = np.nan
            rank[t] = np.nan


@functools.cache
def _kernels() -> dict:
    """The kernels above, compiled (on first use: see above)."""
    njit_cached = importlib.import_module("hftraining.core.jit").njit_cached
    compile_ = njit_cached(nogil=True, error_model="numpy")
    return {fn.__name__: compile_(fn) for fn in (_moments_kernel, _runs_kernel, _arg_kernel, _sorted_kernel)}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (NaN where either is NaN): Qlib's ``num / (den + 1e-12)`` where the
    guard does not change the value. Qlib's 1e-12 is in the data's own units, so it shrank the ratio
    where the denominator is small in them, not in fact: a close of 1e-10 (a token quoted in BTC)
    made KMID2 1% and SUMP5 0.6% smaller than the same bars quoted 1e10 times higher."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, 0.0 * num, num / den)


def _ref(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k rows down (Qlib's Ref): row t holds x[t - k], NaN for the first k rows."""
    out = np.full_like(x, np.nan)
    out[k:] = x[:-k]
    return out


def _roll(x: np.ndarray, d: int) -> pd.core.window.rolling.Rolling:
    return pd.Series(x).rolling(d, min_periods=d)


def _runs(x: np.ndarray) -> np.ndarray:
    """(n,) int64: how many rows up to each row hold its value (0 for a NaN or ±inf): the window of d
    rows ending at a row is constant exactly where this is >= d (:func:`_flat`)."""
    out = np.empty(len(x), dtype=np.int64)
    _kernels()["_runs_kernel"](np.ascontiguousarray(x, dtype=np.float64), out)
    return out


def _flat(x: np.ndarray, d: int, runs: np.ndarray | None = None) -> np.ndarray:
    """Whether each full window of d rows is constant, decided exactly (its maximum equals its
    minimum: every value equals the one before; False in the warm-up and where a window holds a NaN or
    ±inf, which pandas' rolling max and min read as NaN). ``runs``: :func:`_runs` of x, when at hand."""
    return (_runs(x) if runs is None else runs) >= d


def _mean(x: np.ndarray, d: int, runs: np.ndarray | None = None) -> np.ndarray:
    """Rolling mean; a constant window's own value exactly (no residue of earlier rows)."""
    return np.where(_flat(x, d, runs), x, _roll(x, d).mean().to_numpy())


def _moments(x: np.ndarray, d: int, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Centred sums of every full window of d rows, aligned on its last row (NaN before it and where
    a window holds a NaN), each window in two passes: its mean ``mx``, then the deviations from it.
    ``sxx``: the squared deviations of ``x``; ``sxt``: its deviations times the centred positions
    -(d-1)/2..(d-1)/2; with ``y`` also ``syy`` and ``sxy``. Running sums (pandas' rolling var, cov and
    corr) keep a residue of the earlier rows that swamps a window of much smaller values.

    Each sum adds the d positions of a window in order, so a window's value depends on its own rows
    only, in a fixed order, bit for bit (a reduction along a row, as numpy's or BLAS's, may add in
    another order for another length)."""
    n = len(x)
    out = {k: np.full(n, np.nan) for k in ("mx", "sxx", "sxt", *(("syy", "sxy") if y is not None else ()))}
    if n >= d:
        x = np.ascontiguousarray(x, dtype=np.float64)
        yy = x if y is None else np.ascontiguousarray(y, dtype=np.float64)
        _kernels()["_moments_kernel"](x, yy, d, y is not None, out["mx"], out["sxx"], out["sxt"],
                                      out.get("syy", out["sxx"]), out.get("sxy", out["sxt"]))
    return out


def _std(x: np.ndarray, d: int, m: dict[str, np.ndarray] | None = None, runs: np.ndarray | None = None) -> np.ndarray:
    """Rolling sample std (ddof 1, as Qlib's Std), window by window (``m``: :func:`_moments` of x,
    when at hand); exactly 0 on a constant window."""
    m = _moments(x, d) if m is None else m
    return np.where(_flat(x, d, runs), 0.0, np.sqrt(m["sxx"] / (d - 1)))


def _arg_extreme(x: np.ndarray, d: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """(1-based position of each full window's first maximum, that maximum) (Qlib's IdxMax and Max;
    with ``largest`` False: minimum, IdxMin and Min), aligned on the window's last row; NaN in the
    warm-up and where the window holds a NaN; the extreme also where it holds ±inf (pandas' rolling
    max with ``min_periods=d`` reads it as NaN; numpy's arg-max, the position's reference, does not)."""
    pos, value = np.full(len(x), np.nan), np.full(len(x), np.nan)
    _kernels()["_arg_kernel"](np.ascontiguousarray(x, dtype=np.float64), d, largest, pos, value)
    return pos, value


def _sorted_window(x: np.ndarray, d: int, q_hi: float, q_lo: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``q_hi`` quantile, ``q_lo`` quantile, percentile rank of the last value) of every full window,
    aligned on its last row, from a sorted copy of the window kept row by row; NaN in the warm-up and
    where the window holds a NaN (the quantiles also where it holds ±inf, as pandas'). The quantiles
    interpolate linearly between the sorted values as pandas' rolling quantile does (Qlib's Quantile),
    the same bits; the rank averages ties (pandas' ``rank(pct=True)``, Qlib's Rank)."""
    hi, lo, rank = np.empty(len(x)), np.empty(len(x)), np.empty(len(x))
    _kernels()["_sorted_kernel"](np.ascontiguousarray(x, dtype=np.float64), d, q_hi, q_lo, hi, lo, rank)
    return hi, lo, rank


def _regression(y: np.ndarray, d: int, m: dict[str, np.ndarray] | None = None,
                runs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    flat = _flat(y, d, runs)  # a constant window: a flat line through every point
    return np.where(flat, 0.0, slope), np.where(flat, 0.0, np.clip(r2, 0.0, 1.0)), np.where(flat, 0.0, resi)


def _corr(a: np.ndarray, b: np.ndarray, d: int, m: dict[str, np.ndarray] | None = None,
          runs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rolling Pearson correlation, window by window (``m``: :func:`_moments` of a and b, ``runs``:
    :func:`_runs` of each, when at hand); 0 where either side is constant over the window (or so
    nearly constant that the correlation is not a number)."""
    m = _moments(a, d, b) if m is None else m
    ra, rb = runs if runs is not None else (None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = m["sxy"] / np.sqrt(m["sxx"] * m["syy"])
    full = ~np.isnan(m["sxx"]) & ~np.isnan(m["syy"])
    c = np.where(full & (_flat(a, d, ra) | _flat(b, d, rb) | ~np.isfinite(c)), 0.0, c)
    return np.clip(c, -1.0, 1.0)


def alpha158(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             volume: np.ndarray) -> dict[str, np.ndarray]:
    """The 158 Alpha158 columns of one symbol (float64 arrays of its rows), in Qlib's order: the
    columns of one (rows, 158) column-major block, which the feature matrix then is as it stands
    (:func:`hftraining.data.features.compute_features`: no second copy of the table)."""
    # copies, writable: a read-only column (pandas 3's to_numpy) is another Numba type, compiled once more
    o, h, lo, c, v = (np.array(x, dtype=np.float64) for x in (open_, high, low, close, volume))
    block = np.empty((len(COLUMNS), len(c)), dtype=np.float64).T  # column j: contiguous
    where = {name: j for j, name in enumerate(COLUMNS)}

    def put(name: str, x: np.ndarray) -> None:
        block[:, where[name]] = x

    span = h - lo
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    for name, x in (
        ("KMID", (c - o) / o), ("KLEN", (h - lo) / o), ("KMID2", _ratio(c - o, span)),
        ("KUP", (h - top) / o), ("KUP2", _ratio(h - top, span)),
        ("KLOW", (bottom - lo) / o), ("KLOW2", _ratio(bottom - lo, span)),
        ("KSFT", (2 * c - h - lo) / o), ("KSFT2", _ratio(2 * c - h - lo, span)),
        ("OPEN0", o / c), ("HIGH0", h / c), ("LOW0", lo / c), ("VWAP0", (h + lo + c) / 3 / c),
    ):
        put(name, x)
    del span, top, bottom
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
    runs_c, runs_v, runs_wv, runs_lv = _runs(c), _runs(v), _runs(wv), _runs(log_v)  # constant windows, every d
    runs_ret, runs_lvc = _runs(ret), _runs(log_vchg)
    for d in WINDOWS:
        mean_c, m_c = _mean(c, d, runs_c), _moments(c, d, log_v)  # the close's (and log volume's) windows, once
        mean_v = _mean(v, d, runs_v)
        per_v = np.where(v == 0, mean_v, v)  # volume 0: the window's mean (see above); a window without any: 0
        slope, r2, resi = _regression(c, d, m_c, runs_c)
        (imax, hi_max), (imin, lo_min) = _arg_extreme(h, d, True), _arg_extreme(lo, d, False)
        qtlu, qtld, rank = _sorted_window(c, d, 0.8, 0.2)
        sum_move, sum_vmove = _roll(move, d).sum().to_numpy(), _roll(vmove, d).sum().to_numpy()
        sum_up, sum_down = _roll(up, d).sum().to_numpy(), _roll(down, d).sum().to_numpy()
        sum_vup, sum_vdown = _roll(vup, d).sum().to_numpy(), _roll(vdown, d).sum().to_numpy()
        cnt_p, cnt_n = _roll(gain, d).mean().to_numpy(), _roll(loss, d).mean().to_numpy()
        values = {
            "ROC": lambda: _ref(c, d) / c,
            "MA": lambda: mean_c / c,
            "STD": lambda: _std(c, d, m_c, runs_c) / c,
            "BETA": lambda: slope / c,
            "RSQR": lambda: r2,
            "RESI": lambda: resi / c,
            "MAX": lambda: hi_max / c,
            "MIN": lambda: lo_min / c,
            "QTLU": lambda: qtlu / c,
            "QTLD": lambda: qtld / c,
            "RANK": lambda: rank,
            "RSV": lambda: _ratio(c - lo_min, hi_max - lo_min),
            "IMAX": lambda: imax / d,
            "IMIN": lambda: imin / d,
            "IMXD": lambda: (imax - imin) / d,
            "CORR": lambda: _corr(c, log_v, d, m_c, (runs_c, runs_lv)),
            "CORD": lambda: _corr(ret, log_vchg, d, runs=(runs_ret, runs_lvc)),
            "CNTP": lambda: cnt_p,
            "CNTN": lambda: cnt_n,
            "CNTD": lambda: cnt_p - cnt_n,
            "SUMP": lambda: _ratio(sum_up, sum_move),
            "SUMN": lambda: _ratio(sum_down, sum_move),
            "SUMD": lambda: _ratio(sum_up - sum_down, sum_move),
            "VMA": lambda: _ratio(mean_v, per_v),
            "VSTD": lambda: _ratio(_std(v, d, runs=runs_v), per_v),
            "WVMA": lambda: _ratio(_std(wv, d, runs=runs_wv), _mean(wv, d, runs_wv)),
            "VSUMP": lambda: _ratio(sum_vup, sum_vmove),
            "VSUMN": lambda: _ratio(sum_vdown, sum_vmove),
            "VSUMD": lambda: _ratio(sum_vup - sum_vdown, sum_vmove),
        }
        for name, value in values.items():  # one column at a time: its temporaries are freed before the next
            put(f"{name}{d}", value())
    return {name: block[:, j] for j, name in enumerate(COLUMNS)}


ROLLING = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV", "IMAX", "IMIN", "IMXD",
    "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD",
)
"""The 29 rolling operators, in Qlib's order (each over :data:`WINDOWS`)."""
COLUMNS = ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2", "OPEN0", "HIGH0", "LOW0", "VWAP0",
           *(f"{name}{d}" for name in ROLLING for d in WINDOWS)]
"""The 158 column names, in order."""
