"""Alpha158 (Qlib's definitions, full windows): every column against a direct reference computed
window by window with numpy/scipy on random data, warm-up NaNs included; no look-ahead; and the
table through the pipeline and the feature store."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hftraining.core.config import DataConfig
from hftraining.data.alpha158 import COLUMNS, ROLLING, WINDOWS, alpha158
from hftraining.data.features import build_features, feature_columns, feature_warmup
from hftraining.data.pipeline import prepare

EPS = 1e-12


def _frame(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    c[40:46] = c[39]  # a flat stretch: constant windows (correlation undefined) and ties in the rank
    o = c * np.exp(rng.normal(0, 0.01, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    v = np.round(rng.lognormal(10, 0.5, n))
    v[50] = 0.0  # a day without trades
    return {"open": o, "high": h, "low": lo, "close": c, "volume": v}


def _corr0(a, b):
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant side (decided exactly): no correlation
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def reference(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every column, one row and one window at a time (no rolling machinery)."""
    o, h, lo, c, v = (f[k] for k in ("open", "high", "low", "close", "volume"))
    n = len(c)
    out = {"KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / (h - lo + EPS),
           "KUP": (h - np.maximum(o, c)) / o, "KUP2": (h - np.maximum(o, c)) / (h - lo + EPS),
           "KLOW": (np.minimum(o, c) - lo) / o, "KLOW2": (np.minimum(o, c) - lo) / (h - lo + EPS),
           "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / (h - lo + EPS),
           "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": (h + lo + c) / 3 / c}
    for name in ROLLING:
        for d in WINDOWS:
            out[f"{name}{d}"] = np.full(n, np.nan)
    for t in range(n):
        for d in WINDOWS:
            if t < d - 1:
                continue
            s = slice(t - d + 1, t + 1)
            C, H, L, V = c[s], h[s], lo[s], v[s]
            x = np.arange(1, d + 1)
            slope, intercept = np.polyfit(x, C, 1)
            fit = intercept + slope * x
            ss = float(((C - C.mean()) ** 2).sum())
            per_v = V.mean() if v[t] == 0 and V.mean() > 0 else v[t] + EPS  # no trades: the window's mean volume
            r = {"MA": C.mean() / c[t], "STD": C.std(ddof=1) / c[t], "BETA": slope / c[t],
                 "RSQR": 0.0 if np.ptp(C) == 0 else 1 - float(((C - fit) ** 2).sum()) / ss,
                 "RESI": (C[-1] - fit[-1]) / c[t], "MAX": H.max() / c[t], "MIN": L.min() / c[t],
                 "QTLU": np.quantile(C, 0.8) / c[t], "QTLD": np.quantile(C, 0.2) / c[t],
                 "RANK": stats.rankdata(C)[-1] / d, "RSV": (c[t] - L.min()) / (H.max() - L.min() + EPS),
                 "IMAX": (np.argmax(H) + 1) / d, "IMIN": (np.argmin(L) + 1) / d,
                 "IMXD": (np.argmax(H) - np.argmin(L)) / d, "CORR": _corr0(C, np.log(V + 1)),
                 "VMA": V.mean() / per_v, "VSTD": V.std(ddof=1) / per_v}
            if t >= d:  # the operators of 1-row changes need the row before the window too
                P, PV = c[t - d : t], v[t - d : t]  # each row's previous row
                ret = C / P
                with np.errstate(divide="ignore"):
                    lv = np.log(V / PV + 1)
                lv[~np.isfinite(lv)] = 0.0
                move, vmove = np.abs(C - P).sum() + EPS, np.abs(V - PV).sum() + EPS
                wv = np.abs(C / P - 1) * V
                r.update({
                    "ROC": c[t - d] / c[t], "CORD": _corr0(ret, lv),
                    "CNTP": np.mean(C > P), "CNTN": np.mean(C < P), "CNTD": np.mean(C > P) - np.mean(C < P),
                    "SUMP": np.maximum(C - P, 0).sum() / move, "SUMN": np.maximum(P - C, 0).sum() / move,
                    "SUMD": (np.maximum(C - P, 0).sum() - np.maximum(P - C, 0).sum()) / move,
                    "WVMA": wv.std(ddof=1) / (wv.mean() + EPS),
                    "VSUMP": np.maximum(V - PV, 0).sum() / vmove, "VSUMN": np.maximum(PV - V, 0).sum() / vmove,
                    "VSUMD": (np.maximum(V - PV, 0).sum() - np.maximum(PV - V, 0).sum()) / vmove,
                })
            for name, val in r.items():
                out[f"{name}{d}"][t] = val
    return out


def test_the_table_has_qlibs_158_columns_in_order():
    assert len(COLUMNS) == 158 == len(set(COLUMNS))
    assert COLUMNS[:13] == ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2",
                            "OPEN0", "HIGH0", "LOW0", "VWAP0"]
    assert COLUMNS[13:18] == ["ROC5", "ROC10", "ROC20", "ROC30", "ROC60"] and COLUMNS[-1] == "VSUMD60"
    assert feature_columns(["alpha158"]) == COLUMNS
    assert feature_warmup(["alpha158"]) == 60


def test_every_column_equals_the_window_by_window_reference_warm_up_included():
    f = _frame(150)
    got, want = alpha158(*(f[k] for k in ("open", "high", "low", "close", "volume"))), reference(f)
    assert list(got) == COLUMNS
    for name in COLUMNS:
        g, w = got[name], want[name]
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{name}: warm-up rows differ")
        np.testing.assert_allclose(g[~np.isnan(g)], w[~np.isnan(w)], rtol=1e-7, atol=1e-9, err_msg=name)
    after = np.column_stack([got[c] for c in COLUMNS])[60:]
    assert np.isfinite(after).all()  # constant windows and a zero volume included: nothing non-finite


@pytest.mark.parametrize("seed", range(4))
def test_a_flat_stretch_after_a_long_history_is_exact_and_never_stops_training(seed):
    """A halted or illiquid stretch (a constant close) long after the warm-up: every column equals the
    window-by-window reference (CORR/CORD/RSQR 0, STD and WVMA 0), not pandas' running-sum residue
    of the earlier rows (CORR and CORD were NaN, which stopped the feature build, WVMA5 was 2.5e7)."""
    f = _frame(200, seed)
    f["close"][120:135] = f["close"][119]
    f["open"][120:135] = f["close"][119]
    got, want = alpha158(*(f[k] for k in ("open", "high", "low", "close", "volume"))), reference(f)
    for name in COLUMNS:
        np.testing.assert_allclose(got[name][60:], want[name][60:], rtol=1e-7, atol=1e-9, err_msg=name)
    frame = pd.DataFrame({"timestamp": pd.date_range("2001-01-01", periods=200, freq="D", tz="UTC"), **f})
    block, first = build_features(frame, ["alpha158"], "FLAT")  # raised "non-finite feature value" before
    assert first == 60 and np.isfinite(block.iloc[:, 2:].to_numpy()).all()


@pytest.mark.parametrize("cut", [61, 90, 149])
def test_no_look_ahead_a_row_never_changes_when_later_rows_change_or_go(cut):
    f = _frame(200, seed=1)
    full = alpha158(*(f[k] for k in ("open", "high", "low", "close", "volume")))
    rng = np.random.default_rng(cut)
    changed = {k: a.copy() for k, a in f.items()}
    for k in changed:
        changed[k][cut:] *= np.exp(rng.normal(0, 0.2, len(changed[k]) - cut))
    changed["high"][cut:] = np.maximum.reduce([changed[k][cut:] for k in ("high", "open", "close")])
    changed["low"][cut:] = np.minimum.reduce([changed[k][cut:] for k in ("low", "open", "close")])
    for other in (alpha158(*(changed[k] for k in ("open", "high", "low", "close", "volume"))),
                  alpha158(*(f[k][:cut] for k in ("open", "high", "low", "close", "volume")))):
        for name in COLUMNS:
            np.testing.assert_array_equal(full[name][:cut], other[name][:cut], err_msg=name)


def test_alpha158_trains_through_the_pipeline_and_the_store(tmp_path):
    d = DataConfig(symbols=["AEM", "WPM"], features=["alpha158"], sequence_length=20, prediction_horizon=3,
                   cache_dir=str(tmp_path / "cache"))
    data = prepare(d)
    assert data.preprocessing.feature_columns == COLUMNS
    assert data.train.features.shape[1] == 158 and np.isfinite(np.asarray(data.train.features)).all()
    again = prepare(d)
    assert again.report["cache"] == "hit"
    b = data.train.batch(np.arange(8))
    assert b["x"].shape == (8, 20, 158) and bool(np.isfinite(b["x"].numpy()).all())
