"""Alpha158 against Qlib's own operator semantics, each operator written out as a loop over one window
(``qlib/data/ops.py``: Ref a shift into the past, Std ddof 1, Quantile linear, Rank the last value's
average-tie percentile, IdxMax/IdxMin 1-based from the oldest row and the first of ties, Slope/Rsquare/
Resi the least-squares line on positions 1..d, Corr pandas' with Qlib's NaN where a side's std is
within 2e-5 of 0) and Qlib's ``Alpha158DL`` expressions composed from them, on full windows (a
comparison with the missing row before the first is NaN here, as the table's warm-up has it; Qlib's
is false). On the bundled files every column equals Qlib's; on edge cases
(a halted stretch, days without trades, a sub-cent close, ratios that barely move) the values differ
only where the module documents a departure, and each departure is exercised."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.data.alpha158 import COLUMNS, WINDOWS, alpha158
from hftraining.data.io import sample_data_dir

OHLCV = ("open", "high", "low", "close", "volume")


# --- Qlib's operators, one window at a time ---------------------------------------------------------

def _rolling(x: np.ndarray, d: int, fn, *more: np.ndarray) -> np.ndarray:
    """``fn`` of every window of d rows of x (and of ``more``), on its last row; NaN where the window
    is not full or holds a NaN (Qlib fills those from partial windows; the table does not)."""
    out = np.full(len(x), np.nan)
    for t in range(d - 1, len(x)):
        ws = [a[t - d + 1 : t + 1] for a in (x, *more)]
        if not any(np.isnan(w).any() for w in ws):
            out[t] = fn(*ws)
    return out


def ref(x, k):
    return np.r_[np.full(k, np.nan), x[:-k]]


def mean(x, d):
    return _rolling(x, d, lambda w: w.sum() / d)


def total(x, d):
    return _rolling(x, d, lambda w: w.sum())


def std(x, d):
    return _rolling(x, d, lambda w: np.sqrt(((w - w.mean()) ** 2).sum() / (d - 1)))


def quantile(x, d, q):
    def f(w):
        s, pos = np.sort(w), q * (d - 1)
        i = int(pos)
        return s[i] + (s[min(i + 1, d - 1)] - s[i]) * (pos - i)
    return _rolling(x, d, f)


def rank(x, d):
    return _rolling(x, d, lambda w: ((w < w[-1]).sum() + ((w == w[-1]).sum() + 1) / 2) / d)


def idxmax(x, d):
    return _rolling(x, d, lambda w: 1 + next(i for i in range(d) if w[i] == w.max()))


def idxmin(x, d):
    return _rolling(x, d, lambda w: 1 + next(i for i in range(d) if w[i] == w.min()))


def _line(w):
    """Least squares of w on positions 1..d: slope, intercept."""
    t = np.arange(1, len(w) + 1.0)
    slope = ((t - t.mean()) * (w - w.mean())).sum() / ((t - t.mean()) ** 2).sum()
    return slope, w.mean() - slope * t.mean()


def slope(x, d):
    return _rolling(x, d, lambda w: _line(w)[0])


def resi(x, d):
    return _rolling(x, d, lambda w: w[-1] - (_line(w)[0] * d + _line(w)[1]))


def _pearson(a, b):
    da, db = a - a.mean(), b - b.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return (da * db).sum() / np.sqrt((da * da).sum() * (db * db).sum())


MISSING = -1.0
"""Stands for a log volume change that is not a number after a row without volume (no log change is
negative): Qlib's Corr (pandas') leaves such a pair out of the window."""


def _qlib_guard(*ws) -> bool:
    """Qlib's NaN for Corr and Rsquare: ``np.isclose(std, 0, atol=2e-05)`` on a side, in its own units."""
    return any(np.isclose(w.std(ddof=1), 0, atol=2e-05) for w in ws)


def rsquare(x, d, guard=True):
    t = np.arange(1.0, d + 1)
    return _rolling(x, d, lambda w: np.nan if guard and _qlib_guard(w) else _pearson(t, w) ** 2)


def corr(a, b, d, guard=True):
    def f(x, y):
        x, y = x[y != MISSING], y[y != MISSING]
        return np.nan if len(x) < 2 or (guard and _qlib_guard(x, y)) else _pearson(x, y)
    return _rolling(a, d, f, b)


def gt(a, b):
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a) | np.isnan(b), np.nan, (a > b).astype(float))


def _constant(x, d):
    return _rolling(x, d, lambda w: float(w.max() == w.min())) == 1.0


# --- Qlib's Alpha158DL expressions, and the table's documented departures ---------------------------

def qlib_alpha158(o, h, lo, c, v, documented: bool = False) -> dict[str, np.ndarray]:
    """Every column as Qlib's expression computes it (VWAP: the typical price, as documented), or with
    ``documented`` the module's other departures applied where they apply."""
    c1, v1 = ref(c, 1), ref(v, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lvchg, log_v, ratio = np.log(v / v1 + 1), np.log(v + 1), c / c1
    # after a row without volume: Qlib leaves the pair out, the table takes the log change as 0
    lvchg = np.where(~np.isfinite(lvchg) & ~np.isnan(v1), 0.0 if documented else MISSING, lvchg)
    wv = np.abs(c / c1 - 1) * v

    def div(num, den):  # Qlib's num / (den + 1e-12); documented: exact, 0 where den is 0
        if not documented:
            return num / (den + 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den == 0, 0.0 * num, num / den)

    out = {"KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": div(c - o, h - lo),
           "KUP": (h - np.maximum(o, c)) / o, "KUP2": div(h - np.maximum(o, c), h - lo),
           "KLOW": (np.minimum(o, c) - lo) / o, "KLOW2": div(np.minimum(o, c) - lo, h - lo),
           "KSFT": (2 * c - h - lo) / o, "KSFT2": div(2 * c - h - lo, h - lo),
           "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": (h + lo + c) / 3 / c}
    for d in WINDOWS:
        up, down, move = total(np.maximum(c - c1, 0), d), total(np.maximum(c1 - c, 0), d), total(np.abs(c - c1), d)
        vup, vdown, vmove = total(np.maximum(v - v1, 0), d), total(np.maximum(v1 - v, 0), d), total(np.abs(v - v1), d)
        hi, low, imax, imin = _rolling(h, d, np.max), _rolling(lo, d, np.min), idxmax(h, d), idxmin(lo, d)
        per_v = v
        r2, cr, cd = rsquare(c, d), corr(c, log_v, d), corr(ratio, lvchg, d)
        if documented:
            per_v = np.where(v == 0, mean(v, d), per_v)  # no trades: the window's mean
            flat_c, flat_v = _constant(c, d), _constant(log_v, d)
            flat_r, flat_l = _constant(ratio, d), _constant(lvchg, d)
            r2 = np.where(flat_c, 0.0, rsquare(c, d, guard=False))  # constant: 0; nearly: the value
            cr = np.where(flat_c | flat_v, 0.0, corr(c, log_v, d, guard=False))
            cd = np.where(flat_r | flat_l, 0.0, corr(ratio, lvchg, d, guard=False))
        values = {
            "ROC": ref(c, d) / c, "MA": mean(c, d) / c, "STD": std(c, d) / c, "BETA": slope(c, d) / c,
            "RSQR": r2, "RESI": resi(c, d) / c, "MAX": hi / c, "MIN": low / c,
            "QTLU": quantile(c, d, 0.8) / c, "QTLD": quantile(c, d, 0.2) / c, "RANK": rank(c, d),
            "RSV": div(c - low, hi - low), "IMAX": imax / d, "IMIN": imin / d, "IMXD": (imax - imin) / d,
            "CORR": cr, "CORD": cd,
            "CNTP": mean(gt(c, c1), d), "CNTN": mean(gt(c1, c), d), "CNTD": mean(gt(c, c1), d) - mean(gt(c1, c), d),
            "SUMP": div(up, move), "SUMN": div(down, move), "SUMD": div(up - down, move),
            "VMA": div(mean(v, d), per_v), "VSTD": div(std(v, d), per_v), "WVMA": div(std(wv, d), mean(wv, d)),
            "VSUMP": div(vup, vmove), "VSUMN": div(vdown, vmove), "VSUMD": div(vup - vdown, vmove),
        }
        for name, x in values.items():
            out[f"{name}{d}"] = x
    names = [*list(out)[:13], *(f"{name}{d}" for name in values for d in WINDOWS)]  # operator by operator
    return {name: out[name] for name in names}


def _file(symbol: str, rows: slice) -> tuple[np.ndarray, ...]:
    f = pd.read_csv(sample_data_dir() / f"{symbol}.csv")
    return tuple(f[k].to_numpy(dtype=np.float64)[rows] for k in OHLCV)


def _assert_equal(got, want, rtol=1e-9, atol=1e-12):
    for name in COLUMNS:
        g, w = got[name], want[name]
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{name}: NaN rows differ")
        np.testing.assert_allclose(g[~np.isnan(g)], w[~np.isnan(w)], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("symbol,rows", [("AEM", slice(0, 260)), ("MSTR", slice(-260, None)), ("NIO", slice(500, 760))])
def test_every_column_equals_qlibs_expression_on_the_bundled_files(symbol, rows):
    """No row of these files has a documented departure (no zero volume, no constant window), so every
    column is Qlib's expression, the 60 warm-up rows (Qlib's partial windows) excepted."""
    bars = _file(symbol, rows)
    got, qlib = alpha158(*bars), qlib_alpha158(*bars)
    assert list(got) == COLUMNS and list(qlib) == COLUMNS
    _assert_equal({k: x[60:] for k, x in got.items()}, {k: x[60:] for k, x in qlib.items()})


def _edges(n: int = 230, seed: int = 3, level: float = 20.0, vol: float = 0.02) -> tuple[np.ndarray, ...]:
    """A close of ``level`` moving ``vol`` a day, with a halted stretch (one price, volume 0 on some of its
    days, a trade of 100 shares on one), days without trades in a row, a stretch of one volume and ties."""
    rng = np.random.default_rng(seed)
    c = level * np.exp(np.cumsum(rng.normal(0, vol, n)))
    o = c * np.exp(rng.normal(0, vol / 2, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, vol / 2, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, vol / 2, n)))
    v = np.round(rng.lognormal(9, 0.8, n))
    for a in (c, o, h, lo):
        a[100:113] = c[99]  # halted: open = high = low = close
    v[[100, 101, 104, 105, 106, 120, 121, 140]] = 0.0
    v[103] = 100.0
    v[150:162] = v[149]  # one volume: log volume constant, its change log 2
    c[170:175] = c[169]  # ties in RANK; a repeated high and low in IMAX/IMIN
    h[180], lo[181] = h[178], lo[179]
    return o, h, lo, c, v


@pytest.mark.parametrize("case", ["halts", "sub-cent close", "ratios that barely move"])
def test_on_edge_cases_the_values_differ_from_qlib_only_where_documented(case):
    bars = {"halts": _edges(), "sub-cent close": _edges(level=0.004, vol=0.002),
            "ratios that barely move": _edges(level=100.0, vol=2e-6)}[case]
    got, qlib, documented = alpha158(*bars), qlib_alpha158(*bars), qlib_alpha158(*bars, documented=True)
    _assert_equal({k: x[60:] for k, x in got.items()}, {k: x[60:] for k, x in documented.items()})
    assert np.isfinite(np.column_stack([got[k] for k in COLUMNS])[60:]).all()  # nothing stops training
    differs = {k for k in COLUMNS
               if not np.allclose(qlib[k][60:], documented[k][60:], rtol=1e-9, atol=1e-12, equal_nan=True)}
    allowed = {f"{n}{d}" for n in ("RSQR", "CORR", "CORD", "VMA", "VSTD") for d in WINDOWS}
    # no 1e-12 guard: a denominator of about 1e-5 (a sub-cent close's range) or less moves these by 1e-7
    allowed |= {"KMID2", "KUP2", "KLOW2", "KSFT2"} | {f"{n}{d}" for n in ("RSV", "SUMP", "SUMN", "SUMD", "WVMA")
                                                     for d in WINDOWS}
    assert differs <= allowed  # every other column is Qlib's expression, row for row
    exercised = {"halts": {"RSQR5", "CORR5", "CORD5", "VMA5", "VSTD5"}, "sub-cent close": {"RSQR5", "CORR60"},
                 "ratios that barely move": {"CORD5", "CORD60"}}[case]
    assert exercised <= differs  # the case reaches the departures it is about


def test_the_operators_read_the_window_as_qlib_does():
    """Hand-worked values on the last 5 rows: IdxMax/IdxMin 1-based from the oldest row, the first of a
    tie; Rank the average rank of tied values over d; Quantile interpolated; Ref from the past; Resi
    the last value minus the line; Std ddof 1."""
    c = np.array([9.0, 10.0, 12.0, 11.0, 12.0, 12.0])
    h = np.array([9.0, 13.0, 15.0, 14.0, 15.0, 12.5])  # maximum 15 at window positions 2 and 4
    lo = np.array([8.0, 9.5, 11.0, 9.5, 11.5, 11.8])  # minimum 9.5 at positions 1 and 3
    out = alpha158(c, h, lo, c, np.full(6, 1000.0))
    t = 5
    assert out["IMAX5"][t] == pytest.approx(2 / 5) and out["IMIN5"][t] == pytest.approx(1 / 5)
    assert out["IMXD5"][t] == pytest.approx((2 - 1) / 5)
    assert out["RANK5"][t] == pytest.approx((2 + (3 + 1) / 2) / 5)  # 10, 11 below; 12 three times: ranks 3, 4, 5
    assert out["ROC5"][t] == pytest.approx(9.0 / 12.0)
    assert out["QTLU5"][t] == pytest.approx(12.0 / 12.0) and out["QTLD5"][t] == pytest.approx(10.8 / 12.0)
    # sorted 10, 11, 12, 12, 12: 0.8 * 4 = 3.2 -> 12; 0.2 * 4 = 0.8 -> 10 + 0.8 * (11 - 10)
    w = c[1:]  # 10, 12, 11, 12, 12: mean 11.4, deviations -1.4 .6 -.4 .6 .6
    assert out["STD5"][t] == pytest.approx(np.sqrt((1.96 + 0.36 + 0.16 + 0.36 + 0.36) / 4) / 12.0)
    b = (-2 * -1.4 + -1 * 0.6 + 0 + 1 * 0.6 + 2 * 0.6) / 10  # slope on positions 1..5 (centred -2..2)
    assert out["BETA5"][t] == pytest.approx(b / 12.0)
    assert out["RESI5"][t] == pytest.approx((12.0 - (w.mean() + 2 * b)) / 12.0)  # the line at position 5


@pytest.mark.parametrize("cut", [75, 140, 229])
def test_no_row_moves_when_later_rows_change_or_go_on_edge_cases(cut):
    bars = _edges()
    full = alpha158(*bars)
    rng = np.random.default_rng(cut)
    changed = [a.copy() for a in bars]
    for a in changed:
        a[cut:] *= np.exp(rng.normal(0, 0.3, len(a) - cut))
    changed[1][cut:] = np.maximum.reduce([changed[i][cut:] for i in (0, 1, 3)])
    changed[2][cut:] = np.minimum.reduce([changed[i][cut:] for i in (0, 2, 3)])
    changed[4][cut::3] = 0.0  # days without trades after the cut
    for other in (alpha158(*changed), alpha158(*(a[:cut] for a in bars))):
        for name in COLUMNS:
            np.testing.assert_array_equal(full[name][:cut], other[name][:cut], err_msg=name)
