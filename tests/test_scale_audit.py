"""Work that grows with the panel: per-symbol metrics, pooled folds, the feature table and thinned
window sets cost no Python call per symbol or per window (nor a hash of every window), and give the
values the plain per-symbol calls give, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hftraining.core.config import DataConfig
from hftraining.data import feature_table as feature_table_module
from hftraining.data.pipeline import PanelRows
from hftraining.data.rows import Rows
from hftraining.data.windows import WindowSet
from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, score

DAY = 86_400 * 10**9


def same(a, b, where="") -> None:
    """Equal bit for bit (NaN equals NaN; 0.0 and -0.0 differ)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    assert a.shape == b.shape, where
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        assert (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y)), \
            f"{where}[{i}]: {x!r} != {y!r}"


def ref_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """One call per segment: scipy's average ranks, then numpy's correlation."""
    if a.size < 3 or not (np.isfinite(a).all() and np.isfinite(b).all()) or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1])


def panel(S: int, D: int, H: int = 3, seed: int = 0) -> Forecasts:
    """S symbols × D dates, values on a coarse grid (ties), a constant forecast and a NaN or two."""
    rng = np.random.default_rng(seed)
    W = S * D
    true = np.round(rng.normal(0, 1, (W, H)), 1)
    pred = {"model": np.round(0.3 * true + rng.normal(0, 1, (W, H)), 1), "zero": np.zeros((W, H)),
            "repeat": np.round(rng.normal(0, 1, (W, H)), 2)}
    pred["model"][rng.random((W, H)) < 0.001] = np.nan
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * DAY, S),
                     symbol_ids=np.tile(np.arange(S, dtype=np.int64), D), symbols=[f"S{i:04d}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def test_segment_rank_ic_equals_one_corrcoef_per_segment():
    """Segments short and long (one past the length whose sums stay exact), with heavy ties, a NaN,
    constant values and fewer than 3 values: each segment's rank IC is that of its own slice."""
    rng = np.random.default_rng(7)
    exact = 1 << 17  # the longest segment whose sums are exact (metrics.EXACT_RANK_SUMS)
    lengths = np.r_[1, 2, 3, 4, 5, 50, 500, rng.integers(3, 400, 200), exact, exact + 1]
    n = int(lengths.sum())
    pred = rng.integers(-3, 4, n).astype(np.float64)  # seven values: every segment is mostly ties
    true = np.round(rng.normal(0, 1, n), 1)
    starts = np.cumsum(lengths) - lengths
    pred[starts[10] : starts[10] + lengths[10]] = 0.5  # a constant forecast
    pred[starts[11] + 1] = np.nan
    true[starts[12] + 2] = np.inf  # an overflow: no rank, the segment's IC is undefined (as the per-date IC)
    with np.errstate(all="ignore"):
        got = M.segment_point_metrics(pred, true, starts, lengths)["ic_pooled"]
        want = [ref_spearman(pred[s:s + L], true[s:s + L]) for s, L in zip(starts, lengths)]
    same(got, want, "ic_pooled")
    assert np.isfinite(got[-2]) and np.isfinite(got[-1])


def test_per_symbol_metrics_make_no_call_per_symbol(monkeypatch):
    """``score()`` of twice the symbols calls ``np.corrcoef`` and the scalar Pesaran–Timmermann test no
    more often (the per-symbol metrics are one pass over all symbols), and its per-symbol rank IC is
    each symbol's own Spearman correlation."""
    counts: dict[str, int] = {}

    def counting(name, f):
        def wrapped(*a, **k):
            counts[name] = counts.get(name, 0) + 1
            return f(*a, **k)
        return wrapped

    monkeypatch.setattr(np, "corrcoef", counting("corrcoef", np.corrcoef))
    monkeypatch.setattr(M, "pesaran_timmermann", counting("pesaran_timmermann", M.pesaran_timmermann))
    calls = []
    for S in (40, 80):
        fc = panel(S, 30)
        counts.clear()
        with np.errstate(all="ignore"):
            result = score(fc)
        calls.append(dict(counts))
        for name, p in fc.pred.items():
            got = [result["per_symbol"][name][s]["ic_pooled"] for s in fc.symbols]
            with np.errstate(all="ignore"):
                want = [ref_spearman(p[fc.symbol_ids == k].ravel(), fc.true[fc.symbol_ids == k].ravel())
                        for k in range(S)]
            same(got, want, f"{S} symbols/{name}")
    assert calls[1] == calls[0], f"calls grow with the symbols: {calls[0]} for 40 symbols, {calls[1]} for 80"


class _NoIteration(np.ndarray):
    """An index array that refuses a Python loop over its elements."""

    def __iter__(self):
        raise AssertionError("a Python loop over every window")


@pytest.mark.parametrize("parts", [2, 3])
def test_pooled_folds_map_symbols_per_symbol_not_per_window(parts):
    """:meth:`Forecasts.concat` of folds whose symbols differ in set and order matches each window's
    symbol by name, without a Python step per window."""
    folds = []
    for i in range(parts):
        fc = panel(5 + i, 4, seed=i)
        fc.symbols = [f"S{(7 * j + 3 * i) % 11:04d}" for j in range(len(fc.symbols))]  # other names, other order
        fc.symbol_ids = fc.symbol_ids.view(_NoIteration)
        folds.append(fc)
    pooled = Forecasts.concat(folds)
    names = [pooled.symbols[k] for k in np.asarray(pooled.symbol_ids).tolist()]
    assert names == [f.symbols[k] for f in folds for k in np.asarray(f.symbol_ids).tolist()]
    assert pooled.symbols == sorted({s for f in folds for s in f.symbols})
    assert pooled.symbol_ids.dtype == np.int64 and type(pooled.symbol_ids) is np.ndarray


def _panel_rows(S: int, gaps: bool) -> PanelRows:
    """The rows of S symbols of unequal lengths; ``gaps``: rows of no symbol between theirs (an entry
    whose skipped symbols' rows stay in its files)."""
    rng = np.random.default_rng(S)
    lengths = rng.integers(1, 40, S).astype(np.int64)
    between = rng.integers(1, 5, S) if gaps else np.zeros(S, np.int64)
    starts = np.cumsum(lengths + between) - lengths
    N = int(starts[-1] + lengths[-1] + (3 if gaps else 0))
    rows = Rows([f"S{k:03d}" for k in range(S)], starts, lengths, rng.normal(0, 1, (N, 2)).astype(np.float32),
                rng.normal(0, 1, N).astype(np.float32), np.arange(N, dtype=np.int64) * DAY + 10**9, np.ones(N))
    d = DataConfig(features=["rsi_14", "atr_14"], cache_dir=None)
    return PanelRows(d, rows, {"rows_in": N}, {})


def _table_per_symbol(rows: Rows, cols: list[str]) -> pd.DataFrame:
    """A frame per symbol, concatenated."""
    parts = []
    for k, sym in enumerate(rows.symbols):
        sl = rows.rows(k)
        part = pd.DataFrame(np.asarray(rows.features[sl], dtype=np.float64), columns=cols)
        part.insert(0, "timestamp", pd.DatetimeIndex(np.asarray(rows.times[sl]).view("datetime64[ns]")).tz_localize("UTC"))
        part.insert(0, "symbol", sym)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("gaps", [False, True])
def test_feature_table_is_one_frame_equal_to_a_frame_per_symbol(monkeypatch, gaps):
    """``data features``' table is the per-symbol frames concatenated, value and dtype for dtype, built
    as one frame: twice the symbols construct no more frames."""
    built = []
    init = pd.DataFrame.__init__

    def counting(self, *a, **k):
        built.append(1)
        init(self, *a, **k)

    frames = []
    for S in (6, 6, 12):  # the first call also builds pandas' one-time frames (run alone, 4 against 1)
        panel_ = _panel_rows(S, gaps)
        want = _table_per_symbol(panel_.rows, ["rsi_14", "atr_14"])
        monkeypatch.setattr(feature_table_module, "panel_rows", lambda cfg, p=panel_: p)
        monkeypatch.setattr(pd.DataFrame, "__init__", counting)
        built.clear()
        table, report = feature_table_module.feature_table(panel_.d)
        monkeypatch.setattr(pd.DataFrame, "__init__", init)
        pd.testing.assert_frame_equal(table, want, check_exact=True)
        assert report == {"rows_in": panel_.report["rows_in"], "dropped_features": {}}
        frames.append(len(built))
    assert frames[2] == frames[1], f"frames built grow with the symbols: {frames[1]} for 6, {frames[2]} for 12"


def _window_set(W: int) -> WindowSet:
    """W windows over W + 4 rows of one symbol."""
    N = W + 4
    return WindowSet(features=np.zeros((N, 1), np.float32), returns=np.zeros(N, np.float32),
                     ends=np.arange(3, 3 + W, dtype=np.int32), symbol_ids=np.zeros(W, np.int32),
                     segment_first=np.zeros(1, np.int64), row_times=np.arange(N, dtype=np.int64),
                     row_close=np.ones(N), symbols=["A"], seq_len=4, horizon=1)


def test_thinned_windows_are_the_evenly_spaced_ones_without_a_sort(monkeypatch):
    """``evaluation.baseline_max_windows`` / ``max_val_windows`` thin a split to the windows at the rounded
    evenly spaced positions, each once, in order; the positions are non-decreasing, so their repeats are
    dropped without np.unique (which hashes a million windows in about a second)."""
    wanted = {}
    for W, m in [(10, 3), (10, 9), (11, 10), (1000, 999), (1000, 501), (1000, 17), (12_345, 6_000), (7, 7), (7, 100)]:
        ws = _window_set(W)
        want = ws.ends if m >= W else ws.ends[np.unique(np.linspace(0, W - 1, m).round().astype(np.int64))]
        wanted[(W, m)] = (ws, want)
    calls = []
    unique = np.unique
    monkeypatch.setattr(np, "unique", lambda *a, **k: calls.append(1) or unique(*a, **k))
    for (W, m), (ws, want) in wanted.items():
        got = ws.thin(m)
        assert np.array_equal(got.ends, want) and got.ends.dtype == want.dtype, (W, m)
        assert len(got) <= m and (np.diff(got.ends) > 0).all()
    assert not calls
