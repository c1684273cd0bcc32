"""Feature definitions against independent references: Alpha158 against Qlib's expressions written
with pandas' own operators, its window statistics exact after a series falls by orders of magnitude,
every feature family causal under random changes of later rows, and ``data features`` on a panel
with a symbol without volume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data.alpha158 import COLUMNS, WINDOWS, alpha158
from hftraining.data.feature_table import feature_table
from hftraining.data.features import FEATURES, compute_features, feature_columns, parse_spec
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv, write_synth

OHLCV = ("open", "high", "low", "close", "volume")


def _walk(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = 30 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    o = c * np.exp(rng.normal(0, 0.01, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    return {"open": o, "high": h, "low": lo, "close": c, "volume": np.round(rng.lognormal(10, 0.6, n))}


def qlib_alpha158(f: dict[str, np.ndarray]) -> pd.DataFrame:
    """Qlib's ``Alpha158DL`` expressions with pandas' rolling operators as Qlib's ops use them (Std and
    Var ddof 1, Rank the last value's pct rank, IdxMax 1-based, Slope/Rsquare/Resi OLS on 1..d, Corr
    pandas'), full windows; VWAP is the typical price, as the table documents."""
    o, h, lo, c, v = (pd.Series(f[k]) for k in OHLCV)

    def roll(s, d):
        return s.rolling(d, min_periods=d)

    def ols(d, what):
        x = np.arange(1, d + 1)

        def fit(y):
            b, a = np.polyfit(x, y, 1)
            return {"slope": b, "rsq": np.corrcoef(x, y)[0, 1] ** 2, "resi": y[-1] - (a + b * d)}[what]
        return roll(c, d).apply(fit, raw=True)

    def gt(a, b):
        return np.maximum(a, b)

    c1, v1 = c.shift(1), v.shift(1)
    out = {"KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / (h - lo + 1e-12),
           "KUP": (h - gt(o, c)) / o, "KUP2": (h - gt(o, c)) / (h - lo + 1e-12),
           "KLOW": (np.minimum(o, c) - lo) / o, "KLOW2": (np.minimum(o, c) - lo) / (h - lo + 1e-12),
           "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / (h - lo + 1e-12),
           "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": (h + lo + c) / 3 / c}
    ops = {
        "ROC": lambda d: c.shift(d) / c, "MA": lambda d: roll(c, d).mean() / c, "STD": lambda d: roll(c, d).std() / c,
        "BETA": lambda d: ols(d, "slope") / c, "RSQR": lambda d: ols(d, "rsq"), "RESI": lambda d: ols(d, "resi") / c,
        "MAX": lambda d: roll(h, d).max() / c, "MIN": lambda d: roll(lo, d).min() / c,
        "QTLU": lambda d: roll(c, d).quantile(0.8) / c, "QTLD": lambda d: roll(c, d).quantile(0.2) / c,
        "RANK": lambda d: roll(c, d).rank(pct=True),
        "RSV": lambda d: (c - roll(lo, d).min()) / (roll(h, d).max() - roll(lo, d).min() + 1e-12),
        "IMAX": lambda d: roll(h, d).apply(lambda x: x.argmax() + 1, raw=True) / d,
        "IMIN": lambda d: roll(lo, d).apply(lambda x: x.argmin() + 1, raw=True) / d,
        "IMXD": lambda d: (roll(h, d).apply(lambda x: x.argmax() + 1, raw=True)
                           - roll(lo, d).apply(lambda x: x.argmin() + 1, raw=True)) / d,
        "CORR": lambda d: roll(c, d).corr(np.log(v + 1)),
        "CORD": lambda d: roll(c / c1, d).corr(np.log(v / v1 + 1)),
        "CNTP": lambda d: roll((c > c1).astype(float), d).mean(), "CNTN": lambda d: roll((c < c1).astype(float), d).mean(),
        "CNTD": lambda d: roll((c > c1).astype(float), d).mean() - roll((c < c1).astype(float), d).mean(),
        "SUMP": lambda d: roll(gt(c - c1, 0), d).sum() / (roll((c - c1).abs(), d).sum() + 1e-12),
        "SUMN": lambda d: roll(gt(c1 - c, 0), d).sum() / (roll((c - c1).abs(), d).sum() + 1e-12),
        "SUMD": lambda d: (roll(gt(c - c1, 0), d).sum() - roll(gt(c1 - c, 0), d).sum()) / (roll((c - c1).abs(), d).sum() + 1e-12),
        "VMA": lambda d: roll(v, d).mean() / (v + 1e-12), "VSTD": lambda d: roll(v, d).std() / (v + 1e-12),
        "WVMA": lambda d: roll((c / c1 - 1).abs() * v, d).std() / (roll((c / c1 - 1).abs() * v, d).mean() + 1e-12),
        "VSUMP": lambda d: roll(gt(v - v1, 0), d).sum() / (roll((v - v1).abs(), d).sum() + 1e-12),
        "VSUMN": lambda d: roll(gt(v1 - v, 0), d).sum() / (roll((v - v1).abs(), d).sum() + 1e-12),
        "VSUMD": lambda d: (roll(gt(v - v1, 0), d).sum() - roll(gt(v1 - v, 0), d).sum()) / (roll((v - v1).abs(), d).sum() + 1e-12),
    }
    for name, op in ops.items():
        for d in WINDOWS:
            out[f"{name}{d}"] = op(d)
    return pd.DataFrame(out)


def test_every_alpha158_column_equals_qlibs_expression_after_the_warm_up():
    f = _walk(240, seed=11)
    got, want = alpha158(*(f[k] for k in OHLCV)), qlib_alpha158(f)
    assert list(want.columns) == COLUMNS == list(got)
    for name in COLUMNS:
        np.testing.assert_allclose(got[name][60:], want[name].to_numpy()[60:], rtol=1e-9, atol=1e-12, err_msg=name)


def _direct(x: np.ndarray, t: int, d: int) -> np.ndarray:
    return x[t - d + 1 : t + 1]


def test_alpha158_window_statistics_are_exact_after_a_series_falls_by_orders_of_magnitude():
    """A close that falls ten thousandfold and a volume a millionfold (a crash, reverse splits, quiet
    bars after busy ones): the later rows' standard deviations, slopes, R², residuals and correlations
    equal a window-by-window computation, not running sums that carry the earlier, larger values
    (here WVMA10 was 5% off, VSTD30 0.9%, STD5 0.3% and RSQR5 by 0.004)."""
    n, fall = 700, 300
    f = _walk(n, seed=5)
    level = np.exp(np.r_[np.linspace(np.log(1e4), 0.0, fall), np.zeros(n - fall)])
    for k in ("open", "high", "low", "close"):
        f[k] = f[k] / f["close"][0] * level
    f["volume"] = np.round(f["volume"] * np.r_[np.full(fall, 1e6), np.ones(n - fall)])
    got = alpha158(*(f[k] for k in OHLCV))
    c, v = f["close"], f["volume"]
    c1, v1 = np.r_[np.nan, c[:-1]], np.r_[np.nan, v[:-1]]
    ret, lvchg, wv = c / c1, np.log(v / v1 + 1), np.abs(c / c1 - 1) * v
    for t in range(fall + 100, n, 7):
        for d in WINDOWS:
            C, x = _direct(c, t, d), np.arange(1, d + 1)
            b, a = np.polyfit(x, C, 1)
            want = {"STD": C.std(ddof=1) / c[t], "BETA": b / c[t], "RSQR": np.corrcoef(x, C)[0, 1] ** 2,
                    "RESI": (C[-1] - (a + b * d)) / c[t], "CORR": np.corrcoef(C, np.log(_direct(v, t, d) + 1))[0, 1],
                    "CORD": np.corrcoef(_direct(ret, t, d), _direct(lvchg, t, d))[0, 1],
                    "VSTD": _direct(v, t, d).std(ddof=1) / (v[t] + 1e-12),
                    "WVMA": _direct(wv, t, d).std(ddof=1) / (_direct(wv, t, d).mean() + 1e-12)}
            for name, w in want.items():
                np.testing.assert_allclose(got[f"{name}{d}"][t], w, rtol=1e-8, atol=1e-12, err_msg=f"{name}{d} row {t}")


# --- causality, family by family ------------------------------------------------------------------

ONE_SPEC = {"log_return": "log_return_3", "return": "return_2", "rsi": "rsi_9", "macd": "macd_5_13_4",
            "bbands": "bbands_10_1.5", "atr": "atr_7", "stoch": "stoch_9_3_2", "obv": "obv_10",
            "volatility": "volatility_15", "dist_high": "dist_high_12", "dist_low": "dist_low_12",
            "volume_ratio": "volume_ratio_8", "calendar": "calendar", "hour": "hour", "alpha158": "alpha158",
            "market": "market_3_9"}


def _future_changed(frame: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """Valid but different bars after row t: a new level, flat stretches, zero and huge volumes."""
    out = frame.copy()
    n = len(frame) - t - 1
    close = out["close"].to_numpy()[t] * np.exp(np.cumsum(rng.normal(0, 0.05, n)) + rng.normal(0, 1))
    close[rng.random(n) < 0.2] = close[0]  # repeated prices: flat windows
    op = close * np.exp(rng.normal(0, 0.01, n))
    out.loc[t + 1 :, "close"], out.loc[t + 1 :, "open"] = close, op
    out.loc[t + 1 :, "high"] = np.maximum(op, close) * np.exp(np.abs(rng.normal(0, 0.02, n)))
    out.loc[t + 1 :, "low"] = np.minimum(op, close) * np.exp(-np.abs(rng.normal(0, 0.02, n)))
    out.loc[t + 1 :, "volume"] = rng.choice([0.0, 1.0, 1e3, 1e9], n) * rng.uniform(0.5, 1.5, n)
    return out


def test_the_families_cover_the_registry():
    assert sorted(ONE_SPEC) == FEATURES.names() and all(parse_spec(s)[0] == k for k, s in ONE_SPEC.items())


@pytest.mark.parametrize("family", sorted(ONE_SPEC))
def test_no_feature_row_changes_when_later_rows_change_or_are_cut(family):
    spec = ONE_SPEC[family]
    frame = synth_ohlcv(420, seed=9, freq="h")
    base = compute_features(frame, [spec], tz="America/New_York").to_numpy()
    rng = np.random.default_rng(len(family))
    for t in np.r_[0, 1, 59, 60, rng.integers(2, len(frame) - 2, 10)]:
        t = int(t)
        changed = compute_features(_future_changed(frame, t, rng), [spec], tz="America/New_York").to_numpy()
        cut = compute_features(frame.iloc[: t + 1].reset_index(drop=True), [spec], tz="America/New_York").to_numpy()
        np.testing.assert_array_equal(changed[: t + 1], base[: t + 1], err_msg=f"{spec}: rows up to {t}, later rows changed")
        np.testing.assert_array_equal(cut, base[: t + 1], err_msg=f"{spec}: rows up to {t}, later rows cut")


def test_the_market_columns_of_a_date_never_change_with_later_dates_of_any_symbol():
    frames = {s: synth_ohlcv(300, seed=k) for k, s in enumerate(("A", "B", "C"))}
    specs = ["rsi_14", "market"]
    rows, _ = build_rows(frames, specs, tz="UTC")
    rng = np.random.default_rng(3)
    for t in (100, 180, 250):
        cutoff = frames["A"]["timestamp"].iloc[t]
        changed = {s: _future_changed(f, int((f["timestamp"] <= cutoff).sum()) - 1, rng) for s, f in frames.items()}
        other, _ = build_rows(changed, specs, tz="UTC")
        keep = rows.times <= cutoff.value
        assert np.array_equal(rows.times, other.times)
        np.testing.assert_array_equal(other.features[keep], rows.features[keep])
        assert not np.array_equal(other.features[~keep], rows.features[~keep])


# --- the feature table ------------------------------------------------------------------------------


def test_data_features_drops_the_volume_features_for_a_symbol_without_volume_as_training_does(tmp_path, capsys):
    """A panel with an FX symbol (empty volume column): training drops the volume features for every
    symbol; ``data features`` writes the same table, not an error at that symbol."""
    write_synth(tmp_path / "d", 2, 200)
    fx = tmp_path / "d" / "SYN001.csv"
    pd.read_csv(fx).assign(volume="").to_csv(fx, index=False)
    d = DataConfig(data_dir=str(tmp_path / "d"), cache_dir=None, features=["rsi_14", "volume_ratio_20", "atr_14"])
    table, report = feature_table(d)
    assert list(table.columns) == ["symbol", "timestamp", *feature_columns(["rsi_14", "atr_14"])]
    assert sorted(table["symbol"].unique()) == ["SYN000", "SYN001"]
    assert list(report["dropped_features"]) == ["volume_ratio_20"]
    out = tmp_path / "f.csv"
    assert cli.main(["data", "features", str(tmp_path / "d"), "--out", str(out), "--set", "cache_dir=null"]) == 0
    assert "volume_ratio_20" not in pd.read_csv(out).columns and "wrote" in capsys.readouterr().out


# --- parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,says", [
    ("return_-3", "the lag must be >= 1"), ("log_return_-1", "the lag must be >= 1"), ("return_0", "the lag must be >= 1"),
    ("bbands_20_-2", "band width must be > 0"), ("bbands_20_0", "band width must be > 0"),
    ("macd_26_12_9", "fast period must be shorter"), ("macd_12_12_9", "fast period must be shorter"),
])
def test_a_lag_or_band_width_that_means_nothing_is_a_one_line_error_naming_the_key(tmp_path, capsys, spec, says):
    """``return_-3`` gave its value to the last 3 rows only (a value depending on the rows after it)
    and a warm-up of all but 3 rows; ``bbands_20_0`` a constant bb_pos, ``bbands_20_-2`` also a
    negative width, ``macd_26_12_9`` the columns of ``macd_12_26_9`` under another name and
    ``macd_12_12_9`` columns of zeros: accepted, where the key's other mistakes are one line naming it."""
    write_synth(tmp_path / "d", 1, 120)
    code = cli.main(["data", "features", str(tmp_path / "d"), "--out", str(tmp_path / "f.csv"),
                     "--set", f"features=[{spec}]", "--set", "cache_dir=null"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data.features" in err and spec in err and says in err
    assert not (tmp_path / "f.csv").exists()


def test_the_csv_feature_table_keeps_sub_second_timestamps(tmp_path):
    """Bars of 500 ms: every row of the CSV table has its own timestamp (the seconds-only format wrote
    each second twice); whole-second data keeps the short format."""
    (tmp_path / "d").mkdir()
    f = synth_ohlcv(200, seed=1)
    f["timestamp"] = pd.date_range("2024-01-02 14:30", periods=200, freq="500ms", tz="UTC")
    f.assign(timestamp=f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(tmp_path / "d" / "AAA.csv", index=False)
    out = tmp_path / "f.csv"
    assert cli.main(["data", "features", str(tmp_path / "d"), "--out", str(out), "--set", "cache_dir=null"]) == 0
    got = pd.to_datetime(pd.read_csv(out)["timestamp"], utc=True)
    table, _ = feature_table(DataConfig(data_dir=str(tmp_path / "d"), cache_dir=None))
    assert got.is_unique and (got.to_numpy() == table["timestamp"].to_numpy()).all()
    write_synth(tmp_path / "daily", 1, 120)
    assert cli.main(["data", "features", str(tmp_path / "daily"), "--out", str(out), "--set", "cache_dir=null"]) == 0
    assert pd.read_csv(out)["timestamp"].iloc[0].endswith("T00:00:00Z")


def test_synth_writes_sub_second_bars_each_with_its_own_timestamp(tmp_path):
    """``data synth --freq 500ms`` wrote each second twice (the seconds-only format), and validation
    then dropped half the rows as duplicates."""
    (path,) = write_synth(tmp_path / "fast", 1, 300, freq="500ms")
    stamps = pd.to_datetime(pd.read_csv(path)["timestamp"], utc=True)
    assert stamps.is_unique and len(stamps) == 300
    (daily,) = write_synth(tmp_path / "daily", 1, 30)
    assert pd.read_csv(daily)["timestamp"].iloc[0].endswith("T00:00:00Z")  # whole seconds keep the short format
