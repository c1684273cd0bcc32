"""Feature computation without waste, and the same values bit for bit: Alpha158's window operators
(Numba kernels) against the numpy/pandas formulations they replace, the table framed without a
second copy, no time-zone conversion for features that read no timestamp, the bar spacing's median."""

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from hftraining.data import alpha158 as a158
from hftraining.data import features as F


def _series(n: int, seed: int) -> dict[str, np.ndarray]:
    """Prices with what the window operators must get exactly right: a flat stretch (constant windows,
    ties), a crash of four orders of magnitude, rounded prices (ties in the rank and the quantiles),
    rows without volume, a stretch of one volume, a NaN in each series, and infinities."""
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    c[200:300] = c[199]
    c[600:] *= 1e-4
    c[900:1000] = np.round(c[900:1000], 6)
    v = rng.uniform(0, 1e6, n)
    v[50:150:3] = 0.0
    v[400:480] = 7.0
    c[1200], v[1300] = np.nan, np.nan
    inf = c.copy()  # pandas' rolling max, min and quantile read ±inf as NaN; numpy's argmax and sums do not
    inf[1400], inf[1420:1490], inf[1495] = np.inf, np.inf, -np.inf
    return {"c": c, "v": v, "lv": np.log(v + 1), "r": c / np.r_[np.nan, c[:-1]], "inf": inf}


def _same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal bit for bit, NaN where NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN rows differ"
    ok = ~np.isnan(want)
    assert np.array_equal(got[ok].view(np.int64), want[ok].view(np.int64)), f"{what}: values differ"


def _moments_numpy(x, d, y=None):
    """The moments as numpy computed them: a pass over all windows per position, in position order."""
    n, m = len(x), len(x) - d + 1
    out = {k: np.full(n, np.nan) for k in ("mx", "sxx", "sxt", *(("syy", "sxy") if y is not None else ()))}
    mean = lambda z: sum((z[j : j + m] for j in range(1, d)), z[0:m].copy()) / d  # noqa: E731 - left to right
    mx = mean(x)
    acc = {k: np.zeros(m) for k in out if k != "mx"}
    my = mean(y) if y is not None else None
    for j in range(d):
        dx = x[j : j + m] - mx
        acc["sxx"] += dx * dx
        acc["sxt"] += dx * (j - (d - 1) / 2.0)
        if y is not None:
            dy = y[j : j + m] - my
            acc["syy"] += dy * dy
            acc["sxy"] += dx * dy
    out["mx"][d - 1 :] = mx
    for k, a in acc.items():
        out[k][d - 1 :] = a
    return out


@pytest.mark.parametrize("d", a158.WINDOWS)
def test_the_window_kernels_give_the_bits_of_the_numpy_and_pandas_operators(d):
    s = _series(1500, seed=d)
    for name, x in s.items():
        windows = sliding_window_view(x, d)
        nan = np.isnan(windows).any(axis=1)
        roll = pd.Series(x).rolling(d, min_periods=d)
        # constant windows: max == min, exactly as pandas' rolling max and min decide it
        assert np.array_equal(a158._flat(x, d), roll.max().to_numpy() == roll.min().to_numpy()), name
        hi, lo, rank = a158._sorted_window(x, d, 0.8, 0.2)
        for got, want in ((hi, roll.quantile(0.8)), (lo, roll.quantile(0.2))):
            _same(got, want.to_numpy(), f"{name} quantile {d}")
        for largest, arg, ext in ((True, windows.argmax(axis=1), roll.max()),
                                  (False, windows.argmin(axis=1), roll.min())):
            pos, value = a158._arg_extreme(x, d, largest)
            want = np.r_[np.full(d - 1, np.nan), np.where(nan, np.nan, arg + 1.0)]
            _same(pos, want, f"{name} arg {largest} {d}")
            _same(value, ext.to_numpy(), f"{name} extreme {largest} {d}")
        last = windows[:, -1:]
        want = ((windows < last).sum(axis=1) + ((windows == last).sum(axis=1) + 1) / 2) / d
        _same(rank, np.r_[np.full(d - 1, np.nan), np.where(nan, np.nan, want)], f"{name} rank {d}")
        for y in (None, s["lv"]):
            with np.errstate(invalid="ignore"):  # inf - inf
                got, want = a158._moments(x, d, y), _moments_numpy(x, d, y)
            assert got.keys() == want.keys()
            for k in want:
                _same(got[k], want[k], f"{name} moments {k} {d}")


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    c = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    spread = c * rng.uniform(0.001, 0.01, n)
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-02", periods=n, freq="min", tz="UTC"),
                         "open": c, "high": c + spread, "low": c - spread, "close": c,
                         "volume": np.round(rng.lognormal(8, 1, n))})


def test_the_alpha158_table_is_the_feature_matrix_without_a_second_copy():
    """The table is written once, into the block the feature matrix is (it was built as 158 arrays and
    copied into the matrix: twice its size at the peak, 2.5 GB for a symbol of 1M rows)."""
    frame = _frame(20_000)
    a158.alpha158(*(frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume")))  # compiled first
    table = 158 * len(frame) * 8
    tracemalloc.start()
    try:
        out = F.compute_features(frame, ["alpha158"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert list(out.columns) == a158.COLUMNS
    assert peak < 1.6 * table, f"peak {peak / table:.2f}x the table"
    ref = a158.alpha158(*(frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume")))
    for name in a158.COLUMNS:
        _same(out[name].to_numpy(), ref[name], name)
    both = F.compute_features(frame, ["rsi_14", "alpha158"])  # with another feature: copied, the same values
    _same(both["KMID"].to_numpy(), ref["KMID"], "KMID beside rsi_14")


def test_features_that_read_no_timestamp_skip_the_time_zone_conversion(monkeypatch):
    """Converting the stamps (and finding the bars' spacing) cost 0.15 s a million rows, more than the
    default indicators themselves, for features that never read them."""
    frame = _frame(3000)
    specs = ["log_return_1", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20"]
    want = F.compute_features(frame, specs)
    calls = []
    real = F.local_frame
    monkeypatch.setattr(F, "local_frame", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = F.compute_features(frame, specs, tz="America/New_York")
    assert not calls
    pd.testing.assert_frame_equal(got, want)
    for time_spec in ("calendar", "hour"):  # these read the wall clock: converted as before
        F.compute_features(frame, [*specs, time_spec], tz="America/New_York")
        assert len(calls) == 1, time_spec
        calls.clear()
    # market groups rows by their UTC stamps (as across a panel): no conversion
    pd.testing.assert_frame_equal(F.compute_features(frame, [*specs, "market"], tz="America/New_York"),
                                  F.compute_features(frame, [*specs, "market"]))
    assert not calls
    tokyo = F.compute_features(frame, ["hour"], tz="Asia/Tokyo")["hour_sin"].to_numpy()
    assert not np.array_equal(tokyo, F.compute_features(frame, ["hour"])["hour_sin"].to_numpy())


@pytest.mark.parametrize("gaps", [
    np.r_[np.full(997_435, 60), np.full(2052, 63_060), np.full(493, 235_860)],  # minute bars, nights, weekends
    np.r_[np.full(10, 60), np.full(11, 86_400)],  # the longer gaps the median
    np.r_[np.full(10, 60), np.full(10, 86_400)],  # an even count between two values
    np.random.default_rng(0).integers(1, 10**6, 10_001),
    np.random.default_rng(1).integers(1, 10**6, 10_000),
    np.array([5]), np.array([5, 8]), np.array([3, 1, 2]),
])
def test_the_bar_spacing_median_is_numpys(gaps):
    gaps = (gaps * 10**9).astype(np.int64)
    assert F.exact_median(gaps) == float(np.median(gaps))
    assert F.bar_spacing(gaps) == F.bar_spacing(gaps[::-1])


def test_importing_the_features_imports_no_numba():
    """The kernels compile on the first Alpha158 table: predict and serve, which import the features,
    start without Numba."""
    code = "import sys, hftraining.data.features, hftraining.data.alpha158; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_alpha158_kernel_is_compiled_once_for_a_frame_of_read_only_columns():
    """pandas 3's to_numpy gives read-only columns, another Numba type than the arrays computed inside:
    two kernels were compiled two and three times (4.6 s without a cache, in every process that cannot
    write one)."""
    code = ("import numpy as np, pandas as pd\n"
            "from hftraining.data import alpha158 as a\n"
            "from hftraining.data.features import compute_features\n"
            "c = 100 + np.cumsum(np.random.default_rng(0).normal(size=300))\n"
            "f = pd.DataFrame({'open': c, 'high': c + 1, 'low': c - 1, 'close': c, 'volume': 1000.0})\n"
            "compute_features(f, ['alpha158'])\n"
            "import json; print(json.dumps({k: len(v.signatures) for k, v in a._kernels().items()}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts and all(n == 1 for n in counts.values()), counts
