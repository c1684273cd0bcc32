"""The vectorised metrics of ``score()`` (ranks per date and per symbol, every symbol's metrics at once)
give the values of plain per-date and per-symbol loops over scipy's ranks, bit for bit, on small
random panels with ties, NaNs, infinities, dates with one symbol, symbols with unequal numbers of dates,
rows out of date order and a symbol with two windows on one date."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hftraining.data.labels import group_ranks
from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, score

DAY = 86_400 * 10**9


# ------------------------------------------------------------------------------------------------
# the plain reference: one call per date, per symbol, per step; scipy's ranks


def ref_spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return float(np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1])


def ref_ic_series(pred, true, dates, min_size=M.MIN_CROSS_SECTION, rank=False, lexsort=False):
    """Per date: ranks by scipy on that date's rows (``lexsort``: by the lexsort of (value, date) of
    ``data.labels.group_ranks``), constant test by its min and max; then the per-date sums of demeaned
    products that ``cross_sectional_ic_series`` documents."""
    pred, true = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    u, inv = np.unique(np.asarray(dates).ravel(), return_inverse=True)
    inv = inv.reshape(-1)
    G = len(u)
    a, b = pred.copy(), true.copy()
    const, bad = np.zeros(G, bool), np.zeros(G, bool)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(G + 1))
    for g in range(G):
        m = order[bounds[g]:bounds[g + 1]]  # the rows of date g
        const[g] = pred[m].max() == pred[m].min() or true[m].max() == true[m].min()
        bad[g] = not (np.isfinite(pred[m]).all() and np.isfinite(true[m]).all())
        if rank and not lexsort:
            a[m], b[m] = stats.rankdata(pred[m]), stats.rankdata(true[m])
    if rank and lexsort:
        a, b = group_ranks(pred, inv), group_ranks(true, inv)
    n = np.bincount(inv, minlength=G).astype(np.float64)
    da = a - (np.bincount(inv, weights=a, minlength=G) / n)[inv]
    db = b - (np.bincount(inv, weights=b, minlength=G) / n)[inv]
    cov = np.bincount(inv, weights=da * db, minlength=G)
    va, vb = np.bincount(inv, weights=da * da, minlength=G), np.bincount(inv, weights=db * db, minlength=G)
    ok = (n >= min_size) & ~const & (bad | ((va > 0) & (vb > 0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = np.clip(cov / np.sqrt(va * vb), -1.0, 1.0)
    ic[bad] = np.nan
    return u[ok], ic[ok]


def ref_mean_ic(pred, true, dates, rank):
    """The mean over (date, step) cross-sections, each (date, step) its own group."""
    N, K = pred.shape
    groups = np.repeat(np.unique(dates, return_inverse=True)[1].reshape(-1) * K, K) + np.tile(np.arange(K), N)
    _, ic = ref_ic_series(pred.reshape(-1), true.reshape(-1), groups, rank=rank)
    return (float(ic.mean()), int(ic.size)) if ic.size else (float("nan"), 0)


def ref_symbol_metrics(pred, true, fc):
    """A mask per symbol, one call of each scalar metric per symbol and per step."""
    codes = np.unique(fc.dates, return_inverse=True)[1].reshape(-1)
    out = {}
    for i, sym in enumerate(fc.symbols):
        m = fc.symbol_ids == i
        if not m.any():
            continue
        p, t, d = pred[m], true[m], codes[m]

        def one(pp, tt):
            first = (pp, tt) if pp.ndim == 1 else (pp[:, 0], tt[:, 0])
            return {"mse": M.mse(pp, tt), "mae": M.mae(pp, tt), "directional_accuracy": M.directional_accuracy(pp, tt),
                    "directional_p": M.pesaran_timmermann(*first, codes=d)["p_value"], "ic_pooled": ref_spearman(pp, tt)}

        out[sym] = {"n_windows": int(m.sum()), **one(p, t), "per_step": [one(p[:, h], t[:, h]) for h in range(t.shape[1])]}
    return out


def same(a, b, where="") -> None:
    """Equal bit for bit (NaN equals NaN; 0.0 and -0.0 differ), dict keys in the same order."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), \
            f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------------------------
# random panels


def panel(seed: int, S: int, D: int, H: int, kind: str) -> Forecasts:
    """S symbols (two more named, without a row) × D dates, H steps; values on a coarse grid (ties)."""
    rng = np.random.default_rng(seed)
    rows = [(d, s) for d in range(D) for s in range(S)]
    if kind != "full":  # symbols with unequal numbers of dates, dates with 1, 2, ... symbols
        rows = [r for r in rows if rng.random() < 0.6 or r[1] == 0]
        rows = [r for r in rows if r[0] % 4 or r[1] == 0]  # every fourth date: one symbol only
    if kind == "duplicates":  # a symbol with two windows on one date
        rows = sorted(rows + [rows[i] for i in rng.choice(len(rows), len(rows) // 5)])
    if kind == "shuffled":  # rows out of date order
        rows = [rows[i] for i in rng.permutation(len(rows))]
    dates = np.array([r[0] for r in rows], dtype=np.int64) * DAY
    sid = np.array([r[1] for r in rows], dtype=np.int64)
    W = len(rows)
    true = np.round(rng.normal(0, 1, (W, H)), 1)
    true[rng.random((W, H)) < 0.1] = 0.0  # realised returns of exactly 0 (left out of the directional metrics)
    pred = {"model": np.round(0.3 * true + rng.normal(0, 1, (W, H)), 1), "zero": np.zeros((W, H)),
            "drift": np.full((W, H), 0.003), "repeat": np.round(rng.normal(0, 1, (W, H)), 2)}
    pred["model"][rng.random((W, H)) < 0.1] = -0.0
    if kind == "nan":
        pred["model"][rng.random((W, H)) < 0.02] = np.nan
        true[rng.random((W, H)) < 0.01] = np.nan
        pred["repeat"][rng.random((W, H)) < 0.02] = np.inf
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=sid, symbols=[f"S{i}" for i in range(S + 2)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


CASES = [(1, 8, 30, 3, "full"), (2, 9, 40, 2, "ragged"), (3, 7, 30, 3, "nan"), (4, 6, 30, 2, "shuffled"),
         (5, 6, 25, 3, "duplicates"), (6, 1, 400, 3, "full"), (7, 4, 4, 1, "ragged"), (8, 40, 12, 2, "nan")]


@pytest.mark.parametrize("seed,S,D,H,kind", CASES)
def test_score_per_symbol_and_ic_metrics_equal_the_plain_loops(seed, S, D, H, kind):
    fc = panel(seed, S, D, H, kind)
    with np.errstate(all="ignore"):
        r = score(fc)
        for name, p in fc.pred.items():
            same(r["per_symbol"][name], ref_symbol_metrics(p, fc.true, fc), f"{kind}/{name}/per_symbol")
            m = r["model"] if name == "model" else r["baselines"][name]
            same((m["ic"], m["ic_dates"]), ref_mean_ic(p, fc.true, fc.dates, rank=True), f"{kind}/{name}/ic")
            same(m["ic_pooled"], ref_spearman(p, fc.true), f"{kind}/{name}/ic_pooled")
            for h, step in enumerate(r["per_step"][name]):
                same((step["ic"], step["ic_dates"]), ref_mean_ic(p[:, h:h + 1], fc.true[:, h:h + 1], fc.dates, True))
                same(step["ic_pooled"], ref_spearman(p[:, h], fc.true[:, h]), f"{kind}/{name}/step{h}")
            for key, rank in (("ic", False), ("rank_ic", True)):
                _, ic = ref_ic_series(p[:, 0], fc.true[:, 0], fc.dates, rank=rank)
                same(m["cross_section"][key], M.ic_summary(ic, lag=0), f"{kind}/{name}/cross_section/{key}")


@pytest.mark.parametrize("seed,S,D,H,kind", CASES)
def test_ic_functions_equal_the_per_date_loop(seed, S, D, H, kind):
    fc = panel(seed, S, D, H, kind)
    p, t = fc.pred["model"], fc.true
    with np.errstate(all="ignore"):
        for rank in (False, True):
            same(M.mean_cross_sectional_ic(p, t, fc.dates, rank=rank), ref_mean_ic(p, t, fc.dates, rank)[0])
            for min_size in (1, 2, 3):
                same(M.cross_sectional_ic_series(p[:, 0], t[:, 0], fc.dates, min_size=min_size, rank=rank),
                     ref_ic_series(p[:, 0], t[:, 0], fc.dates, min_size=min_size, rank=rank))
        same(M.spearman(p, t), ref_spearman(p, t))


def test_segment_metrics_equal_one_call_per_segment():
    """Segments of many lengths (1 to past numpy's 8,192-element blocks), overlapping and out of order,
    dates in order and not: each equals the scalar functions on its slice."""
    rng = np.random.default_rng(11)
    n = 30_000
    pred, true = np.round(rng.normal(0, 1, n), 1), np.round(rng.normal(0, 1, n), 1)
    pred[rng.random(n) < 0.05], true[rng.random(n) < 0.05] = 0.0, 0.0
    pred[rng.random(n) < 0.001] = np.nan
    codes = np.arange(n)
    codes[15_000:] = rng.integers(0, 50, n - 15_000)  # past 15,000: dates repeated and out of order
    lengths = np.r_[1, 2, 3, 5, 8, 9, 127, 128, 129, 1_000, 9_000, rng.integers(1, 300, 20), 8_193]
    starts = np.r_[0, 1, 3, 6, 11, 19, 28, 155, 283, 412, 1_412, rng.integers(0, n - 300, 20), 20_000]
    starts[:11] = starts[:11][::-1] * 2  # not in order
    got = M.segment_point_metrics(pred, true, starts, lengths)
    got_p = M.segment_pesaran_timmermann_p(pred, true, codes, starts, lengths)
    with np.errstate(all="ignore"):
        for k, (s, L) in enumerate(zip(starts, lengths)):
            p, t = pred[s:s + L], true[s:s + L]
            same([got["mse"][k], got["mae"][k], got["directional_accuracy"][k], got["ic_pooled"][k], got_p[k]],
                 [M.mse(p, t), M.mae(p, t), M.directional_accuracy(p, t), ref_spearman(p, t),
                  M.pesaran_timmermann(p, t, codes=codes[s:s + L])["p_value"]], f"segment {k} ({s}, {L})")


def test_date_ranks_beyond_65536_dates_equal_a_lexsort():
    """More dates than one 16-bit radix pass holds: the ranks per date are still those of a lexsort."""
    rng = np.random.default_rng(3)
    dates = np.repeat(np.arange(70_000), 3)[rng.permutation(210_000)]
    pred, true = np.round(rng.normal(0, 1, 210_000), 1), rng.normal(0, 1, 210_000)
    same(M.cross_sectional_ic_series(pred, true, dates, rank=True),
         ref_ic_series(pred, true, dates, rank=True, lexsort=True))


def test_reused_ranks_are_those_of_the_same_values_in_the_same_groups_only():
    """Inside ``reuse_ranks`` (as ``score()`` runs) the same values ranked again, grouped by other dates,
    or other values on the same dates, each get their own ranks: the series equal the plain loop."""
    rng = np.random.default_rng(5)
    pred, true = np.round(rng.normal(0, 1, 600), 1), np.round(rng.normal(0, 1, 600), 1)
    groupings = [np.repeat(np.arange(100), 6), np.repeat(np.arange(150), 4), np.tile(np.arange(100), 6),
                 np.sort(rng.integers(0, 90, 600))]
    with M.reuse_ranks():
        for _ in range(3):
            for dates in groupings:
                for p in (pred, true, -pred):
                    same(M.cross_sectional_ic_series(p, true, dates, rank=True),
                         ref_ic_series(p, true, dates, rank=True))
            same(M.spearman(pred, true), ref_spearman(pred, true))
