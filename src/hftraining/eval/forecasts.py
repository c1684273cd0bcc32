"""Forecasts of a model beside the naive forecasts on the same windows, their scores and the verdict,
in log-return units.

One prediction path for everything: the trained model and the registered baselines (``zero``,
``repeat``, ``drift``, ``seasonal_naive``) all go through :func:`hftraining.models.predict.predict_outputs`,
so a baseline is scored on exactly the windows, inputs and units the model saw.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats

from hftraining.core.config import ModelConfig
from hftraining.core.fmt import fmt as _fmt, fmt_p
from hftraining.data.labels import CROSS_SECTIONAL, UNITS
from hftraining.data.windows import WindowSet
from hftraining.eval import metrics as M
from hftraining.eval.intervals import level_labels
from hftraining.models import ForecastModel, build_model
from hftraining.models.predict import class_threshold as model_class_threshold, predict_outputs, predict_scaled

BASELINES = ("zero", "repeat", "drift", "seasonal_naive")
FITTED_BASELINES = ("ridge", "lightgbm")
"""Baselines fitted on the training windows of the same run, settings chosen on its validation windows (saved under <run>/baselines/)."""
SIGNIFICANCE = 0.05  # two-sided level of the verdict line
CS_MIN_SYMBOLS = M.MIN_CROSS_SECTION  # a date counts in the cross-sectional IC with at least this many symbols
# Newey–West lag of the step-1 IC series: the 1-step targets of consecutive dates are disjoint
# returns (t→t+1, then t+1→t+2), so the IC series has no overlap-induced autocorrelation; an
# H-step target would need lag H − 1 (consecutive targets share H − 1 returns), as in the DM test.
CS_LAG = 0


def baseline_models(n_features: int, horizon: int, seq_len: int) -> dict[str, ForecastModel]:
    """The registered naive forecasts, built like any model (no parameters, no training)."""
    out = {}
    for name in BASELINES:
        # a season longer than the window cannot be looked up; one season = the whole window then
        cfg = ModelConfig(type=name, season_length=min(ModelConfig.season_length, seq_len))
        out[name] = build_model(cfg, n_features, horizon, seq_len)
    return out


def fit_baselines(train: WindowSet, val: WindowSet, max_windows: int | None = None,
                  seconds: dict[str, float] | None = None) -> dict[str, ForecastModel]:
    """The fitted baselines (:data:`FITTED_BASELINES`) fitted on ``train`` with their settings chosen
    on ``val``: the same windows, features and targets the model trained on (at most
    ``max_windows`` of each, evenly spaced: ``evaluation.baseline_max_windows``). ``seconds``:
    filled with each one's fit time."""
    train, val = train.thin(max_windows), val.thin(max_windows)
    n_features = train.features.shape[1]
    out = {}
    for name in FITTED_BASELINES:
        t0 = time.perf_counter()
        m = build_model(ModelConfig(type=name), n_features, train.horizon, train.seq_len)
        m.fit_windows(train, val)
        out[name] = m.eval()
        if seconds is not None:
            seconds[name] = time.perf_counter() - t0
    return out


def label(name: str) -> str:
    """A forecast's name in printed tables: ``model``, ``naive:zero``, ``fitted:ridge``."""
    if name == "model":
        return name
    return f"naive:{name}" if name in BASELINES else f"fitted:{name}"


def head(ws: WindowSet, n: int) -> WindowSet:
    """The first ``n`` windows of ``ws`` (row arrays shared, not copied)."""
    if n >= len(ws):
        return ws
    return ws.subset(slice(0, n))


NO_TIME = np.iinfo(np.int64).min
"""``Forecasts.prev_time`` of a window whose origin row is the first its symbol may read."""


@dataclass
class Forecasts:
    """Forecasts of the model and the baselines for the same W windows, in the label's units (log
    returns for ``data.target: return``); ``last_return``, ``past_vol`` and ``last_close`` are always
    the realised prices and log returns (the backtest trades on them)."""

    pred: dict[str, np.ndarray]  # name → (W, H); "model" first, then the baselines
    true: np.ndarray  # (W, H) realised labels (log returns by default) of steps 1..H after each origin
    dates: np.ndarray  # (W,) int64 ns UTC of each window's last input row (the forecast origin)
    symbol_ids: np.ndarray  # (W,) int index into ``symbols``
    symbols: list[str]
    last_return: np.ndarray  # (W,) realised log return of the period ending at the origin
    past_vol: np.ndarray  # (W,) std of the window's L past log returns (a naive volatility forecast)
    last_close: np.ndarray  # (W,) close at the origin
    quantiles: np.ndarray | None = None  # (W, H, Q) model quantiles, log-return units
    levels: list[float] = field(default_factory=list)  # the Q quantile levels
    target: str = "return"  # what ``pred`` and ``true`` are (``data.target``): their units are UNITS[target]
    intervals: dict[float, tuple[np.ndarray, np.ndarray]] | None = None  # level → model (lower, upper) (W, H)
    prev_time: np.ndarray | None = None  # (W,) int64 ns of the row before each origin's row (NO_TIME: none); the
    # backtest earns rows without a window between two dates through the close (backtest.span_returns)
    class_probs: np.ndarray | None = None  # (W, H, 3) sell/hold/buy probabilities of the model's buy/hold/sell head
    class_threshold: float = 0.0  # the ± label that cuts its classes (model.classification_threshold)

    def __len__(self) -> int:
        return len(self.true)

    @classmethod
    def concat(cls, parts: list["Forecasts"]) -> "Forecasts":
        """Pool the forecasts of several window sets (e.g. walk-forward folds); symbols are matched by name.
        ``quantiles`` and ``intervals`` are pooled when every part has them at the same levels (each part
        keeps the bounds its own calibration gave), None when no part has any; parts whose quantiles or
        intervals differ (some have none, or other levels) raise a ValueError naming each part's levels:
        drop them first (``dataclasses.replace(p, quantiles=None, levels=[])``, ``intervals=None``) and
        say why. The interval method is not recorded here: the caller pools only parts of one method."""
        symbols = sorted({s for p in parts for s in p.symbols})
        index = {s: i for i, s in enumerate(symbols)}
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        has_q = _same_levels("quantiles", [None if p.quantiles is None else tuple(p.levels) for p in parts])
        has_c = _same_levels("class probabilities",
                             [None if p.class_probs is None else (p.class_threshold,) for p in parts])
        return cls(
            pred={k: np.concatenate([p.pred[k] for p in parts]) for k in parts[0].pred},
            true=cat("true"), dates=cat("dates"),
            symbol_ids=np.concatenate([np.array([index[s] for s in p.symbols], dtype=np.int64)[np.asarray(p.symbol_ids, dtype=np.int64)]
                                       for p in parts]),
            symbols=symbols, last_return=cat("last_return"), past_vol=cat("past_vol"), last_close=cat("last_close"),
            quantiles=np.concatenate([p.quantiles for p in parts]) if has_q else None,
            levels=list(parts[0].levels) if has_q else [], target=parts[0].target,
            prev_time=cat("prev_time") if all(p.prev_time is not None for p in parts) else None,
            intervals=_concat_intervals(parts),
            class_probs=np.concatenate([p.class_probs for p in parts]) if has_c else None,
            class_threshold=parts[0].class_threshold if has_c else 0.0,
        )


def _same_levels(what: str, kinds: list[tuple[float, ...] | None]) -> bool:
    """Whether every part has ``what`` (quantiles or intervals) at one set of levels (``kinds``: each
    part's levels, None for a part without any): False when no part has any, a ValueError naming each
    part's levels when they differ (:meth:`Forecasts.concat` pools them or raises, never drops)."""
    if all(k is None for k in kinds):
        return False
    if len(set(kinds)) > 1:
        shown = "; ".join(f"part {i + 1}: " + ("none" if k is None else "levels " + ", ".join(f"{v:g}" for v in k))
                          for i, k in enumerate(kinds))
        raise ValueError(f"Forecasts.concat: the parts' {what} differ ({shown}); pool parts whose {what} "
                         f"have the same levels, or drop every part's {what} first")
    return True


def _concat_intervals(parts: list[Forecasts]) -> dict[float, tuple[np.ndarray, np.ndarray]] | None:
    """The (lower, upper) (ΣW, H) of each level of ``parts`` pooled in order (:meth:`Forecasts.concat`)."""
    if not _same_levels("intervals", [None if p.intervals is None else tuple(sorted(p.intervals)) for p in parts]):
        return None
    return {lv: (np.concatenate([p.intervals[lv][0] for p in parts]), np.concatenate([p.intervals[lv][1] for p in parts]))
            for lv in parts[0].intervals}


def collect_forecasts(
    model: torch.nn.Module | None,
    ws: WindowSet,
    target_scale: float,
    batch_size: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    pred_scaled: np.ndarray | None = None,
    quantiles_scaled: np.ndarray | None = None,
    levels: list[float] | None = None,
    fitted: dict[str, torch.nn.Module] | None = None,
    class_probs: np.ndarray | None = None,
    class_threshold: float = 0.0,
) -> Forecasts:
    """Forecasts of ``model`` (or the given ``pred_scaled`` (n, H), for the first n windows, and
    ``quantiles_scaled`` (n, H, Q) at ``levels``, ``class_probs`` (n, H, 3) of classes cut at
    ± ``class_threshold``), of every naive baseline and of the ``fitted`` baselines
    (:func:`fit_baselines`) on the same windows, converted to log-return units (× ``target_scale``). Given
    forecasts for more windows than ``ws`` holds, or for another number of steps, are a one-line ValueError
    naming both (:func:`_check_given`)."""
    if levels is None:
        levels = list(getattr(getattr(model, "cfg", None), "quantiles", None) or [])
    if pred_scaled is None:
        assert model is not None, "collect_forecasts needs a model or pred_scaled"
        outs = predict_outputs(model, ws, batch_size, device, precision)
        pred_scaled, quantiles_scaled, class_probs = outs["prediction"], outs.get("quantiles"), outs.get("class_probs")
        class_threshold = model_class_threshold(model) if class_probs is not None else 0.0
    n = _check_given(ws, pred_scaled, quantiles_scaled, class_probs)
    sub = head(ws, n)
    preds = {"model": pred_scaled.astype(np.float64) * target_scale}
    n_features = ws.features.shape[1] if ws.features.ndim == 2 else 1
    for name, base in {**baseline_models(n_features, ws.horizon, ws.seq_len), **(fitted or {})}.items():
        preds[name] = predict_scaled(base, sub, batch_size).astype(np.float64) * target_scale
    rows = sub.ends[:, None] + np.arange(-ws.seq_len + 1, 1)  # (n, L)
    real = np.ones(rows.shape, dtype=bool)
    if hasattr(sub, "first_rows"):  # left-padded windows: never read the rows of another symbol
        real = rows >= sub.first_rows[:, None]
        rows = np.maximum(rows, sub.first_rows[:, None])
    past = np.asarray(ws.returns[rows], dtype=np.float64)  # (n, L) realised log returns, whatever the label
    # the volatility of the window's own rows: a padded step repeating the first return would bias it low
    mean = np.where(real, past, 0.0).sum(axis=1) / real.sum(axis=1)
    past_vol = np.sqrt(np.where(real, (past - mean[:, None]) ** 2, 0.0).sum(axis=1) / real.sum(axis=1))
    ends = sub.ends.astype(np.int64)
    first = sub.first_rows.astype(np.int64) if hasattr(sub, "first_rows") else np.zeros_like(ends)
    prev_time = np.where(ends > first, ws.row_times[np.maximum(ends - 1, 0)], NO_TIME).astype(np.int64)
    return Forecasts(
        pred=preds,
        true=sub.targets().astype(np.float64) * target_scale,
        dates=sub.times.astype(np.int64),
        symbol_ids=sub.symbol_ids.astype(np.int64),
        symbols=list(ws.symbols),
        last_return=past[:, -1],
        past_vol=past_vol,
        last_close=sub.last_close.astype(np.float64),
        quantiles=None if quantiles_scaled is None or not levels else quantiles_scaled[:n].astype(np.float64) * target_scale,
        levels=list(levels) if quantiles_scaled is not None and levels else [],
        target=getattr(ws, "target", "return"),
        prev_time=prev_time,
        class_probs=None if class_probs is None else class_probs[:n].astype(np.float64),
        class_threshold=float(class_threshold) if class_probs is not None else 0.0,
    )


def _check_given(ws: WindowSet, pred: np.ndarray, quantiles: np.ndarray | None, probs: np.ndarray | None) -> int:
    """How many windows ``pred`` (n, H) forecasts, the first n of ``ws``: a ValueError naming both lengths when
    it holds more rows than ``ws`` has windows or another number of steps than its horizon, or when the
    quantiles (n, H, Q) or class probabilities (n, H, 3) given with it cover fewer rows or other steps (numpy
    failed on them later with a broadcasting error that named neither)."""
    shape = np.shape(pred)
    if len(shape) != 2 or shape[0] > len(ws) or shape[1] != ws.horizon:
        raise ValueError(f"collect_forecasts: pred_scaled has shape {shape}, for at most the {len(ws)} windows of "
                         f"{ws.horizon} steps given: expected (n, {ws.horizon}) with n ≤ {len(ws)}")
    n = shape[0]
    for what, given in (("quantiles_scaled", quantiles), ("class_probs", probs)):
        if given is not None and (np.ndim(given) != 3 or len(given) < n or np.shape(given)[1] != ws.horizon):
            raise ValueError(f"collect_forecasts: {what} has shape {np.shape(given)}, for the {n} windows of "
                             f"{ws.horizon} steps of pred_scaled: expected ({n}, {ws.horizon}, ...)")
    return n


def date_codes(dates: np.ndarray) -> np.ndarray:
    """(W,) int64 index of each window's date among the sorted distinct ``dates`` (W,): computed once per
    :class:`Forecasts` and handed, masked, to every Pesaran–Timmermann test of a subset of its windows
    (:func:`metrics.pesaran_timmermann`'s ``codes``), which then counts dates without sorting them."""
    return np.unique(np.asarray(dates), return_inverse=True)[1].reshape(-1).astype(np.int64)


def _step_metrics(pred: np.ndarray, true: np.ndarray, dates: np.ndarray, codes: np.ndarray) -> list[dict[str, Any]]:
    return [M.point_metrics(pred[:, h : h + 1], true[:, h : h + 1], dates, date_codes=codes)
            for h in range(true.shape[1])]


def _symbol_metrics(pred: np.ndarray, true: np.ndarray, fc: Forecasts, codes: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per symbol: pooled metrics and per-step ones; the IC of one symbol is its time-series
    Spearman correlation (there is no cross-section inside one symbol). ``directional_p``: the
    one-sided Pesaran–Timmermann p-value (:func:`metrics.pesaran_timmermann`) of the symbol's step-1
    forecasts (of the step itself per step) over its dates, one pair per date: the design effect is 1
    (the reference is Student's t over the dates, as the pooled test's). ``codes``: :func:`date_codes`
    of ``fc.dates``."""
    order = np.argsort(fc.symbol_ids, kind="stable")  # once: each symbol's rows in a slice, in their order
    bounds = np.searchsorted(fc.symbol_ids[order], np.arange(len(fc.symbols) + 1))
    present = np.flatnonzero(bounds[1:] > bounds[:-1])
    lo, n = bounds[present], bounds[present + 1] - bounds[present]
    pred, true, codes = pred[order], true[order], codes[order]
    H = true.shape[1]

    def per_symbol(pp: np.ndarray, tt: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The metrics of every symbol's rows of (rows, k) ``pp``, ``tt``, whose first column is the
        step tested for direction: every symbol at once (:func:`metrics.segment_point_metrics`)."""
        m = M.segment_point_metrics(pp.reshape(-1), tt.reshape(-1), lo * k, n * k)
        m["directional_p"] = M.segment_pesaran_timmermann_p(pp[:, 0], tt[:, 0], codes, lo, n)
        keys = ("mse", "mae", "directional_accuracy", "directional_p", "ic_pooled")
        return [{key: float(m[key][j]) for key in keys} for j in range(len(present))]

    pooled = per_symbol(pred, true, H)
    steps = [per_symbol(pred[:, h : h + 1], true[:, h : h + 1], 1) for h in range(H)]
    return {fc.symbols[i]: {"n_windows": int(n[j]), **pooled[j], "per_step": [s[j] for s in steps]}
            for j, i in enumerate(present)}


def cross_section(pred: np.ndarray, true: np.ndarray, dates: np.ndarray,
                  codes: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Cross-sectional IC of the 1-step forecast (``pred[:, 0]`` vs ``true[:, 0]``, per date across
    symbols): {"ic": Pearson, "rank_ic": Spearman}, each an :func:`metrics.ic_summary` with
    Newey–West lag :data:`CS_LAG`. One symbol (or fewer than :data:`CS_MIN_SYMBOLS` per date) has no
    cross-section: n_dates 0 and NaN statistics. ``codes``: :func:`date_codes` of ``dates`` when the
    caller has them."""
    out = {}
    for key, rank in (("ic", False), ("rank_ic", True)):
        _, ic = M.cross_sectional_ic_series(pred[:, 0], true[:, 0], dates, min_size=CS_MIN_SYMBOLS, rank=rank,
                                              date_codes=codes)
        out[key] = M.ic_summary(ic, lag=CS_LAG)
    return out


def score(fc: Forecasts) -> dict[str, Any]:
    """Every metric of the model and of each baseline (the pooled ones, with the step-1
    cross-sectional IC under "cross_section", see :func:`cross_section`, and the step-1
    Pesaran–Timmermann test of the forecast signs under "directional_test" / "directional_p", see
    :func:`metrics.point_metrics`; per step, each step's), and the Diebold–Mariano tests of the model
    against each baseline (squared error; see :func:`metrics.dm_test`). The directional test is
    reported beside the accuracy; the verdict does not read it."""
    with M.reuse_ranks():  # the labels are ranked once, not once per forecast
        return _score(fc)


def _score(fc: Forecasts) -> dict[str, Any]:
    """:func:`score`."""
    true, dates = fc.true, fc.dates
    codes = date_codes(dates)  # once: every directional test below counts dates with these
    H = true.shape[1]
    result: dict[str, Any] = {
        "n_windows": int(len(fc)), "horizon": int(H),
        "n_symbols": int(len(np.unique(fc.symbol_ids))), "n_dates": int(codes.max()) + 1 if codes.size else 0,
        "target": fc.target, "units": UNITS[fc.target],
    }
    pooled = {name: M.point_metrics(p, true, dates, date_codes=codes) for name, p in fc.pred.items()}
    for name, p in fc.pred.items():
        pooled[name]["cross_section"] = cross_section(p, true, dates, codes)
    if fc.quantiles is not None and len(fc):
        pin = M.pinball_loss(fc.quantiles, true, fc.levels)
        pooled["model"]["pinball"] = {f"q{key}": v for key, v in zip(level_labels(fc.levels), pin)}
        pooled["model"]["pinball_mean"] = float(np.mean(pin))
        pooled["model"]["coverage"] = M.coverage(fc.quantiles, true, fc.levels)
        # windows with a quantile that is not finite: no coverage (NaN), which the table and report say
        pooled["model"]["quantiles_not_finite"] = int((~np.isfinite(fc.quantiles)).any(axis=(1, 2)).sum())
    if fc.class_probs is not None and len(fc):
        pooled["model"]["classes"] = M.class_scores(fc.class_probs, true, dates, fc.class_threshold)
        pooled["model"]["classes"]["verdict"] = class_verdict(pooled["model"]["classes"])
    result["model"] = pooled["model"]
    result["baselines"] = {k: v for k, v in pooled.items() if k != "model"}
    result["mse_vs_zero"] = M.mse_ratio(pooled["model"]["mse"], pooled["zero"]["mse"])
    result["dm"] = {name: M.dm_test(fc.pred["model"], fc.pred[name], true, dates) for name in fc.pred if name != "model"}
    result["dm_vs_zero"] = result["dm"]["zero"]
    result["dm_vs_zero_per_step"] = [  # step h + 1 alone: its paths share h realised returns
        M.dm_test(fc.pred["model"][:, h:h + 1], fc.pred["zero"][:, h:h + 1], true[:, h:h + 1], dates, lag=h)
        for h in range(H)
    ]
    result["per_step"] = {name: _step_metrics(p, true, dates, codes) for name, p in fc.pred.items()}
    result["per_symbol"] = {name: _symbol_metrics(p, true, fc, codes) for name, p in fc.pred.items()}
    finite = {k: v["mse"] for k, v in result["baselines"].items() if math.isfinite(v["mse"])}
    if finite:
        best = min(finite, key=finite.get)  # the bar to clear: the baseline with the lowest test MSE
        result["strongest_baseline"] = {
            "name": best, "mse": finite[best], "dm": result["dm"][best],
            "mse_ratio": M.mse_ratio(pooled["model"]["mse"], finite[best]),
        }
    else:  # no bar to clear: the verdict says why rather than name none without a word
        result["strongest_baseline_note"] = _no_strongest_baseline(fc)
    # a baseline whose forecast, or its squared error (a finite forecast too large to square), is not finite in
    # some windows has no MSE to rank it by: it is left out of the strongest, said with its windows, never ranked
    # on rows other than the model's
    result["baselines_mse_overflow"] = over = _overflow_windows(fc)
    result["baselines_not_finite"] = _not_finite_windows(fc, slice(None), over)
    # windows whose model forecast or realised label is not finite (any step): why a figure is undefined
    result["not_finite"] = {"model": int((~np.isfinite(fc.pred["model"])).any(axis=1).sum()),
                            "label": int((~np.isfinite(true)).any(axis=1).sum())}
    result["mse_verdict"] = verdict(result)
    result["cross_section_dates"] = cross_section_dates(dates)
    result["cross_section_verdict"] = cs_verdict(result, fc)
    # a cross-sectional label is judged on its cross-section first; a return on its MSE
    result["verdict"] = result["cross_section_verdict"] if fc.target in CROSS_SECTIONAL else result["mse_verdict"]
    if fc.target in CROSS_SECTIONAL and "cross_section_strongest" not in result:
        # no baseline to measure by rank IC (no date with a cross-section, no forecast that ranks, or a rank
        # IC that is not finite): the strongest baseline by MSE is then the bar the verdict names
        result["verdict"] += f"; on squared error: {result['mse_verdict']}"
    return result


def _not_finite_windows(fc: Forecasts, steps: slice, over: dict[str, int] | None = None) -> dict[str, int]:
    """Baseline name → how many windows have a forecast that is not finite (NaN or ±inf) at ``steps``, plus
    ``over``'s windows (:func:`_overflow_windows`: a finite forecast whose squared error overflows against a
    finite label), for the baselines that have any: those are left out of the strongest baseline
    (their MSE, or rank IC, is undefined), and the verdict names them (:func:`_left_out`)."""
    over = over or {}
    bad = {k: int((~np.isfinite(p[:, steps])).any(axis=1).sum()) + over.get(k, 0)
           for k, p in fc.pred.items() if k != "model"}
    return {k: n for k, n in bad.items() if n}


def _overflow_windows(fc: Forecasts) -> dict[str, int]:
    """Baseline name → how many windows have a finite forecast and a finite label whose squared error is not
    finite (1e200 squares to inf), for the baselines that have any: their MSE is infinite, so they are left
    out of the strongest by MSE as a forecast that is not finite is."""
    out = {}
    for k, p in fc.pred.items():
        if k == "model":
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            sq_bad = ~np.isfinite((p - fc.true) ** 2) & np.isfinite(fc.true)
        n = int((sq_bad.any(axis=1) & np.isfinite(p).all(axis=1)).sum())
        if n:
            out[k] = n
    return out


def _left_out(bad: dict[str, int], n_windows: int | None, by: str, overflow: dict[str, int] | None = None) -> str:
    """"" or the clause naming the baselines ``bad`` (:func:`_not_finite_windows`) left out of the strongest
    baseline ``by`` a figure (MSE, rank IC) that their forecast leaves undefined; ``overflow``
    (:func:`_overflow_windows`): how many of those windows hold a finite forecast whose squared error is not."""
    if not bad:
        return ""
    overflow = overflow or {}

    def why(k: str, n: int) -> str:
        o = overflow.get(k, 0)
        parts = ([f"whose forecast is not finite in {n - o}"] if n - o else []) + (
            [f"whose squared error overflows (a finite forecast too large to square) in {o}"] if o else [])
        return f"{label(k)}, {' and '.join(parts)} of the {n_windows} windows"

    return f" (left out, its {by} undefined: {'; '.join(why(k, n) for k, n in bad.items())})"


def _no_strongest_baseline(fc: Forecasts) -> str:
    """Why no baseline has a finite test MSE, so that none is the strongest: a realised label that is
    not finite leaves every forecast's MSE undefined (forecasts built by hand through the Python API: the
    data pipeline's labels are finite); otherwise every baseline's forecast is not finite."""
    if not len(fc):
        return "there is no window to score"
    bad = int((~np.isfinite(fc.true)).any(axis=1).sum())
    if bad:
        return (f"{bad} of the {len(fc)} windows {'have' if bad > 1 else 'has'} a realised label that is not finite "
                "(NaN or ±inf): no forecast's MSE is defined, a baseline's no more than the model's")
    return "no baseline's forecast has a finite MSE"


def _ic_difference(fc: Forecasts, a: str, b: str) -> dict[str, Any]:
    """The per-date step-1 rank IC of forecast ``a`` minus that of ``b`` over the dates where either ranks the
    symbols, a forecast counting 0 on a date where it ranks nothing (its forecast the same for every symbol:
    no information on that cross-section, as :func:`_strongest_by_rank_ic` counts a baseline): its
    :func:`metrics.ic_summary` (a paired test: is ``a``'s rank IC higher?) and the two-sided p-value of its t
    statistic (:func:`_ic_p_value`). Over the dates both rank, a model that ranks on a few dates (the same
    forecast for every symbol on the others) was compared on those alone, and its luck there read "ranks
    better" than a baseline that ranks well on every date. ``same_dates``: whether both rank on the same
    dates (then the difference of their own means). A date where one IC is NaN (a value that is not finite)
    counts as a NaN difference: it leaves that forecast's mean rank IC undefined, and a difference over the
    other dates read a gain the verdict does not grant. A forecast ``a`` that ranks on no date has no difference
    (n_dates 0)."""
    da, ia = M.cross_sectional_ic_series(fc.pred[a][:, 0], fc.true[:, 0], fc.dates, min_size=CS_MIN_SYMBOLS, rank=True)
    db, ib = M.cross_sectional_ic_series(fc.pred[b][:, 0], fc.true[:, 0], fc.dates, min_size=CS_MIN_SYMBOLS, rank=True)
    # date order; a date whose realisation is the same for every symbol is in neither. A forecast ``a`` that ranks on
    # no date has no rank IC to compare (the verdict says it ranks nothing): no date, every figure undefined
    union = np.union1d(da, db) if da.size else da
    xa, xb = np.zeros(union.size), np.zeros(union.size)
    if union.size:
        xa[np.searchsorted(union, da)], xb[np.searchsorted(union, db)] = ia, ib
    out = M.ic_summary(xa - xb, lag=CS_LAG)
    out["same_dates"] = bool(da.size == db.size == union.size)
    # each side's mean over those dates (0 where it ranks nothing) and how many it ranks on: the difference is the
    # first minus the second, which the two forecasts' own means (each over its own dates) are not where they differ
    out["mean_a"], out["mean_b"] = (float(xa.mean()), float(xb.mean())) if union.size else (math.nan, math.nan)
    out["n_dates_a"], out["n_dates_b"] = int(da.size), int(db.size)
    out["p_value"] = _ic_p_value(out)
    p_t = _ic_p_value(out, floor=False)
    if math.isfinite(p_t):
        out["p_t"] = p_t
        if out["p_value"] > p_t:
            out["p_floor"] = out["p_value"]
    return out


def _ic_p_value(summary: dict[str, Any], floor: bool = True) -> float:
    """Two-sided p-value of an :func:`metrics.ic_summary` t statistic from Student's t with
    n_dates − 1 degrees of freedom, as the Diebold–Mariano test: over a short test split (tens of
    dates) the normal would reject a true null too often (8% at a nominal 5% with 15 dates).

    As the Diebold–Mariano test's, no p is below the exact sign test's smallest over the m = ⌈n/(lag + 1)⌉
    dates lag + 1 apart, 2^(1 − m) (:func:`metrics.dm_p_floor`): that is the p of an IC the same on every
    date (t infinite), and a rank IC a little below it on each date, or a gain over a baseline a little
    uneven across 4 dates, read p = 1e-9 ("significantly positive", "ranks better") where the perfect one
    read 0.125. ``floor=False``: the Student-t p alone (0 for an infinite t)."""
    t, n = summary["t_stat"], summary["n_dates"]
    if math.isnan(t) or n < 2:
        return float("nan")
    lag = int(summary.get("lag") or 0)
    # an infinite t: the same nonzero value on every date (a perfect ranking, or a leak; or, over a few dates
    # of a few symbols, whose rank ICs take a handful of values, chance: 3 symbols tie on 2 dates 28% of the
    # time): the exact sign test's p, every date of one sign, not p = 0 nor "no claim"
    p_t = 0.0 if math.isinf(t) else float(2 * stats.t.sf(abs(t), df=n - 1))
    return max(p_t, M.dm_p_floor(n, lag)) if floor else p_t


def cross_section_dates(dates: np.ndarray) -> int:
    """How many forecast dates hold at least :data:`CS_MIN_SYMBOLS` windows: the dates that have a
    cross-section (whether a forecast ranks anything on them or not)."""
    _, counts = np.unique(np.asarray(dates), return_counts=True)
    return int((counts >= CS_MIN_SYMBOLS).sum())


def _no_rank_ic(result: dict[str, Any]) -> str:
    """Why the model has no step-1 rank IC: no date with a cross-section, or a forecast that is
    constant across the symbols of every date that has one (it ranks nothing)."""
    n = result.get("cross_section_dates", 0)
    if not n:
        return f"cross-section: no date has {CS_MIN_SYMBOLS} symbols, so no rank IC could be computed"
    return (f"cross-section: the model's step-1 rank IC is undefined on each of the {n} dates with ≥ {CS_MIN_SYMBOLS} "
            "symbols (its forecast, or the realisation, is the same for every symbol there), so it ranks nothing")


def cs_verdict(result: dict[str, Any], fc: Forecasts, level: float = SIGNIFICANCE) -> str:
    """One sentence on the step-1 cross-section: the model's rank IC and its t statistic, then the
    strongest baseline by rank IC and a paired test of the per-date rank IC difference (recorded
    under ``result["cross_section_strongest"]``); "not worth its cost" unless the model's rank IC
    is significantly higher. A model whose forecast is constant across the symbols of every date
    ranks nothing, and one whose rank IC is not finite (a NaN or overflowed forecast) has none: not worth
    its cost over a baseline that does rank."""
    cs = result["model"]["cross_section"]["rank_ic"]
    base = {k: v["cross_section"]["rank_ic"]["mean"] for k, v in result["baselines"].items()
            if math.isfinite(v["cross_section"]["rank_ic"]["mean"])}
    # a baseline whose step-1 forecast is not finite on a date has no rank IC: left out of the strongest, and said
    left = _left_out({k: n for k, n in _not_finite_windows(fc, slice(0, 1)).items() if k not in base}, len(fc), "rank IC")
    if not cs["n_dates"]:
        text = _no_rank_ic(result)
        if not base or not result.get("cross_section_dates"):
            return f"{text}; no baseline to rank against{left}" if left and result.get("cross_section_dates") else text
        return _unranked_verdict(text, result, fc, base, left)
    m, t = cs["mean"], cs["t_stat"]
    p = _ic_p_value(cs)
    num = lambda v, spec: "—" if v is None or math.isnan(v) else format(v, spec)  # noqa: E731 (inf: no spread, shown)
    text = f"step-1 rank IC = {m:.4f} (t = {num(t, '.2f')}, ICIR {num(cs['icir'], '.3f')}, {cs['n_dates']} dates)"
    if not math.isfinite(m):
        text = (f"step-1 rank IC undefined over the {cs['n_dates']} dates: the rank IC could not be computed "
                f"({_step1_not_finite(fc)})")
        if not base:  # the realisation itself: no baseline ranks either (the verdict adds the MSE one's)
            return f"{text}; no baseline to rank against{left}" if left else text
        return _unranked_verdict(text, result, fc, base, left)  # the model's forecast: the bar is still named
    if math.isfinite(p) and p < level:
        text += f": {'significantly positive' if m > 0 else 'significantly NEGATIVE'} (at {level:g})"
    elif not math.isfinite(p):  # one date: a rank IC with no spread to test it against
        text += ": not tested (a t test over the dates needs at least 2)"
    else:
        text += f": not significantly different from 0 (p = {fmt_p(p, level)})"
    if not base:
        return f"{text}; no baseline to rank against{left}" if left else text
    best = _strongest_by_rank_ic(result, fc, base)
    diff = _ic_difference(fc, "model", best)
    result["cross_section_strongest"] = {"name": best, "rank_ic": base[best], "difference": diff,
                                         "compared_on_dates": result["baselines_rank_ic_common"]["n_dates"]}
    name, d, pd_ = label(best), diff["mean"], diff["p_value"]
    gap = (f"model − it = {ic_gap_text(diff, name)} (paired p = {fmt_p(pd_, level)})" if math.isfinite(d) else
           "model − it undefined (no date on which either ranks the symbols)" if not diff["n_dates"] else
           "model − it undefined (a rank IC that is not finite on a date)")
    text += f"; {_strongest_text(result, base, best, left)}, {gap}"
    if not math.isfinite(pd_):  # a test that cannot be computed shows no gain: the model beats nothing
        return f"{text}: the paired test could not be computed, so the model is not worth its cost over {name}"
    if pd_ < level and d > 0:
        return f"{text}: the model ranks better than the strongest baseline (significant at {level:g})"
    if pd_ < level:
        return f"{text}: {name} ranks significantly better, so the model is not worth its cost"
    return f"{text}: no significant difference, so the model is not worth its cost over {name}"


def ic_gap_text(diff: dict[str, Any], name: str) -> str:
    """The paired rank-IC difference ``diff`` (:func:`_ic_difference` of the model and the baseline ``name``, or
    eval.json's ``cross_section_strongest.difference``) as the verdict, and the model card, say it: "X per date",
    and where the two rank on different dates, each one's mean over the dates either ranks (0 where it ranks
    nothing) and how many dates each ranks on: the difference is that subtraction, not one of the two own means
    printed beside it (a model ranking 0.57 on 30 of 120 dates is 0.14 a date over them, below a baseline's 0.41
    on every date). "—" for a mean that is not finite (null in eval.json); an eval.json written before
    ``same_dates`` was recorded: "X per date" alone."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    d = diff.get("mean")
    if not num(d):
        return "— per date"
    if diff.get("same_dates", True):
        return f"{d:.4f} per date"
    a, b = diff.get("mean_a"), diff.get("mean_b")
    over = f" over the {diff.get('n_dates')} dates either ranks, counting 0 where one ranks nothing"
    if not (num(a) and num(b)):
        return f"{d:.4f} per date{over}"
    return (f"{a:.4f} − {b:.4f} = {d:.4f} per date{over}, the model ranking on {diff.get('n_dates_a')} of them and "
            f"{name} on {diff.get('n_dates_b')}")


def _step1_not_finite(fc: Forecasts) -> str:
    """Why a step-1 rank IC is undefined: how many windows' step-1 model forecast, or realised label, is not finite."""
    parts = [f"{what} is not finite in {k} of the {len(fc)} windows" for what, k in (
        ("the realised step-1 label", int((~np.isfinite(fc.true[:, 0])).sum())),
        ("the model's step-1 forecast", int((~np.isfinite(fc.pred["model"][:, 0])).sum()))) if k]
    return " and ".join(parts) or "a forecast or a realisation is not finite"


def _ratio_text(head: str, ratio: float, result: dict[str, Any]) -> str:
    """``head`` = the MSE ratio, or in words why it is undefined: a forecast or a realised label that is not
    finite (``result["not_finite"]``: windows), or two MSEs of 0. An infinite ratio of finite forecasts
    (a zero forecast that is exact) is shown as such."""
    nf = result.get("not_finite") or {}
    if math.isfinite(ratio) or (math.isinf(ratio) and not (nf.get("model") or nf.get("label"))):
        return f"{head} = {ratio:.4f}"
    n = result.get("n_windows")
    why = [f"{what} is not finite in {k} of the {n} windows" for what, k in
           (("a realised label", nf.get("label")), ("the model's forecast", nf.get("model"))) if k]
    return f"{head} is undefined ({' and '.join(why) or 'both MSEs are 0 or not a number'})"


def _unranked_verdict(text: str, result: dict[str, Any], fc: Forecasts, base: dict[str, float], left: str = "") -> str:
    """``text`` on a model with no rank IC of its own, then the strongest baseline by rank IC (``base``:
    the baselines' finite rank ICs; ``left``: :func:`_left_out` of those without one), recorded under
    ``result["cross_section_strongest"]``, which the model does not clear."""
    best = _strongest_by_rank_ic(result, fc, base)
    result["cross_section_strongest"] = {"name": best, "rank_ic": base[best],
                                         "difference": _ic_difference(fc, "model", best),
                                         "compared_on_dates": result["baselines_rank_ic_common"]["n_dates"]}
    return f"{text}; {_strongest_text(result, base, best, left)}, so the model is not worth its cost over {label(best)}"


def _strongest_by_rank_ic(result: dict[str, Any], fc: Forecasts, base: dict[str, float]) -> str:
    """The strongest of the baselines ``base`` (name → its own finite mean step-1 rank IC) by their mean rank
    IC over the dates on which any of them ranks the symbols, a baseline counting 0 on a date where it ranks
    nothing (its forecast the same for every symbol: no information on that cross-section), the first listed on
    a tie. Compared over one set of dates: each over its own dates, a forecast that ranks on a few dates (constant
    on the others) could win by their luck; over the dates every one ranks, such a forecast cut the comparison of
    the others to those few dates, and a baseline that ranks well on all the others lost the bar to a weaker one
    (or, ranking on other dates than it, left no bar at all). Recorded under ``result["baselines_rank_ic_common"]``
    ({"n_dates", "rank_ic": name → mean over them, "same_dates"}; equal to the own means when every baseline
    ranks on the same dates)."""
    series = {k: M.cross_sectional_ic_series(fc.pred[k][:, 0], fc.true[:, 0], fc.dates, min_size=CS_MIN_SYMBOLS,
                                             rank=True) for k in base}
    union = functools.reduce(np.union1d, [d for d, _ in series.values()])
    means = {k: float(ic.mean()) if d.size == union.size else float(ic.sum()) / union.size
             for k, (d, ic) in series.items()}
    result["baselines_rank_ic_common"] = {"n_dates": int(union.size), "rank_ic": means,
                                          "same_dates": all(d.size == union.size for d, _ in series.values())}
    return max(means, key=means.get)


def _strongest_text(result: dict[str, Any], base: dict[str, float], best: str, left: str) -> str:
    """"strongest baseline by rank IC NAME = its mean", saying the dates it was chosen on when the baselines
    rank on different dates and that changed the choice or its figure (:func:`_strongest_by_rank_ic`; a
    baseline chosen alike over its own dates, and ranking on all of them, needs no second figure)."""
    common = result["baselines_rank_ic_common"]
    alike = max(base, key=base.get) == best and common["rank_ic"][best] == base[best]
    over = "" if common["same_dates"] or alike else (
        f" (the highest mean over the {common['n_dates']} dates a baseline ranks, counting 0 where one ranks nothing: "
        f"{common['rank_ic'][best]:.4f})")
    return f"strongest baseline by rank IC {label(best)}{left} = {base[best]:.4f}{over}"


def _disagree(ratio: float, dm: dict[str, Any]) -> bool:
    """Whether the pooled MSE ratio (each window weighs the same) and the DM statistic (each date
    weighs the same) point in opposite directions, as they can on a panel whose dates hold
    different numbers of symbols: then neither direction is claimed."""
    stat = dm.get("statistic", float("nan"))
    return math.isfinite(stat) and not math.isnan(ratio) and ratio != 1 and stat != 0 and (ratio < 1) != (stat < 0)


DISAGREE = ("the pooled MSE and the per-date DM test point in opposite directions (dates hold different "
            "numbers of symbols), so no claim is made")


def verdict(result: dict[str, Any], level: float = SIGNIFICANCE) -> str:
    """One honest sentence: a lower MSE only counts as "beats" when the DM test rejects equality in
    the same direction; against the zero-return forecast, and against the strongest baseline (the
    lowest test MSE of every naive and fitted baseline): a model that does not beat it is not worth
    its cost. A DM test that cannot be computed (fewer dates than the horizon needs, a forecast that
    is not finite) beats nothing: the strongest baseline is still named, and the model is not worth
    its cost over it. With no baseline of finite MSE to name (a realised label that is not finite), it
    says why (``result["strongest_baseline_note"]``) and claims no worth for the model."""
    ratio, dm = result["mse_vs_zero"], result.get("dm_vs_zero") or {}
    p = dm.get("p_value", float("nan"))
    ratio_ = _ratio_text("model MSE / zero-forecast MSE", ratio, result)
    head_ = f"{ratio_}, Diebold–Mariano p = {fmt_p(p, level)}"
    if not math.isfinite(p):
        text = f"{ratio_}; the DM test could not be computed"
    elif p >= level:
        text = f"{head_}: no significant difference from the zero-return forecast (at {level:g})"
    elif _disagree(ratio, dm):
        text = f"{head_}: {DISAGREE}"
    elif dm["statistic"] < 0:
        text = f"{head_}: the model beats the zero-return forecast (significant at {level:g})"
    else:
        text = f"{head_}: the model is significantly WORSE than the zero-return forecast (at {level:g})"
    sb = result.get("strongest_baseline")
    if not sb:
        why = result.get("strongest_baseline_note")
        return f"{text}; no strongest baseline: {why}; the model is not shown to be worth its cost" if why else text
    name, r_b, p_b = label(sb["name"]), sb["mse_ratio"], sb["dm"].get("p_value", float("nan"))
    left = _left_out(result.get("baselines_not_finite") or {}, result.get("n_windows"), "MSE",
                     result.get("baselines_mse_overflow"))
    against = (f"; strongest baseline {name}{left}: {_ratio_text('model MSE / its MSE', r_b, result)}, "
               f"DM p = {fmt_p(p_b, level)}")
    if not math.isfinite(p_b):
        return f"{text}{against}: the DM test could not be computed, so the model is not worth its cost over {name}"
    if p_b < level and _disagree(r_b, sb["dm"]):
        return f"{text}{against}: {DISAGREE}, so the model is not worth its cost over {name}"
    if p_b < level and sb["dm"]["statistic"] < 0:
        return f"{text}{against}: the model beats the strongest baseline (significant at {level:g})"
    if p_b < level:
        return f"{text}{against}: {name} is significantly better, so the model is not worth its cost"
    return f"{text}{against}: no significant difference, so the model is not worth its cost over {name}"


def evaluate_predictions(
    pred_scaled: np.ndarray,
    ws: WindowSet,
    target_scale: float,
    batch_size: int,
    quantiles_scaled: np.ndarray | None = None,
    levels: list[float] | None = None,
) -> dict[str, Any]:
    """Metrics of ``pred_scaled`` (n, H) (the first n windows of ``ws``) beside the baselines."""
    fc = collect_forecasts(None, ws, target_scale, batch_size, pred_scaled=pred_scaled, quantiles_scaled=quantiles_scaled,
                           levels=list(levels or []))
    return score(fc)


DIRECTION_NOTE = ("PT p: Pesaran–Timmermann test that the step-1 forecast signs match the realised signs more often "
                  "than their own up/down frequencies give by chance (one-sided; the pairs of one date clustered: "
                  "Rao–Scott design effect, Student's t over the dates; n/a: undefined: the forecast's or the "
                  "realisation's sign never varies, a value is not finite, or fewer than 2 dates have a non-zero "
                  "realised return)")
"""What the console, the report and the model card say the directional p-value is."""


def direction_p_text(m: dict[str, Any]) -> str:
    """The Pesaran–Timmermann p-value of a forecast's metrics ``m`` as printed: ``fmt_p`` at
    :data:`SIGNIFICANCE`; "n/a" when the test is undefined (``directional_p`` NaN, or null as
    eval.json stores NaN: every case :func:`metrics.pesaran_timmermann` lists, which
    :data:`DIRECTION_NOTE` names); "—" when ``m`` has no such entry (an evaluation written before the
    test was reported)."""
    if "directional_p" not in m:
        return "—"
    p = m["directional_p"]
    return "n/a" if p is None or not math.isfinite(p) else fmt_p(p, SIGNIFICANCE)


def format_table(result: dict[str, Any], title: str = "test") -> str:
    """A small aligned table: the model beside each baseline, the DM tests and the verdict."""
    rows = [("model", result["model"])] + [(label(k), v) for k, v in result["baselines"].items()]
    rows += [(f"member:{k}", v) for k, v in result.get("members", {}).items()]  # an ensemble's members
    cross_sectional = result.get("target") in CROSS_SECTIONAL
    lines = [f"{title}: {result['n_windows']} windows × {result['horizon']} steps ({result.get('units', 'log returns')})"]
    if cross_sectional:  # a cross-sectional label leads with its cross-section
        lines += _cross_section_lines(result) + [result["verdict"], "pooled (the MSE comparisons):"]
    lines += [f"{'forecast':<22}{'MSE':>12}{'MAE':>12}{'dir.acc':>9}{'PT p':>9}{'IC':>9}{'IC pool':>9}{'DM stat':>9}"
              f"{'DM p':>10}"]
    dm = result.get("dm", {})
    for name, m in rows:
        d = dm.get(name.split(":")[-1], {}) if name != "model" else {}
        lines.append(
            f"{name:<22}{_fmt(m['mse'], '>12.6g')}{_fmt(m['mae'], '>12.6g')}{_fmt(m['directional_accuracy'], '>9.4f')}"
            f"{direction_p_text(m):>9}{_fmt(m.get('ic'), '>9.4f')}{_fmt(m.get('ic_pooled'), '>9.4f')}"
            f"{M.dm_statistic_text(d):>9}{fmt_p(d.get('p_value'), SIGNIFICANCE):>10}"
        )
    if not cross_sectional:
        lines += _cross_section_lines(result)
        if result.get("cross_section_verdict") and result["model"].get("cross_section", {}).get("rank_ic", {}).get("n_dates"):
            lines.append(f"  {result['cross_section_verdict']}")
    if "pinball_mean" in result["model"]:
        cov = ", ".join(f"{k} {_fmt(v, '.3f')}" for k, v in result["model"]["coverage"].items())
        lines.append(f"quantile head: mean pinball loss {_fmt(result['model']['pinball_mean'], '.6g')}; coverage {cov}"
                     + quantile_note(result))
    if "classes" in result["model"]:
        lines.append(result["model"]["classes"]["verdict"])
    if any("directional_p" in m for _, m in rows):
        lines.append(DIRECTION_NOTE)
    if dm:
        lines.append("DM: model vs each baseline on squared error (negative: the model's loss is lower); "
                     f"losses averaged over symbols per date, lag {result['horizon'] - 1}, Harvey–Leybourne–Newbold t"
                     f"{M.dm_floor_text(result)}")
    headline = result.get("verdict") or result.get("mse_verdict") or verdict(result)
    if not cross_sectional:  # the verdict is the squared error's, with what evaluate adds to it (a split in sample):
        lines.append(headline)  # printing mse_verdict instead dropped that "not an out-of-sample test"
    elif result.get("mse_verdict") and result["mse_verdict"] not in headline:  # printed above when in it
        lines.append(result["mse_verdict"])
    return "\n".join(lines)


def class_verdict(c: dict[str, Any], level: float = SIGNIFICANCE) -> str:
    """One sentence on the buy/hold/sell head (:func:`metrics.class_scores` ``c``): its log loss against the
    constant forecast of the scored windows' own class shares, "beats" only when the Diebold–Mariano test
    rejects equality in the model's favour and the pooled log losses agree (each window weighs the same there,
    each date in the test: on a panel whose dates hold different numbers of symbols they can point in opposite
    directions, and then no direction is claimed), and its accuracy beside always forecasting the most common
    class."""
    shares = ", ".join(f"{k} {_fmt(v, '.3f')}" for k, v in c["shares"].items())
    head_ = (f"buy/hold/sell head (classes cut at ±{c['threshold']:g}): log loss {_fmt(c['log_loss'], '.4f')} vs "
             f"{_fmt(c['log_loss_shares'], '.4f')} of the windows' own class shares ({shares}; a constant that knows "
             f"them in advance)")
    if c["not_finite"]:
        return (f"{head_}: undefined, a probability or label is not finite in {c['not_finite']} windows; "
                "the head is not shown to have skill")
    p = c["dm"]["p_value"]
    acc = f"; accuracy {_fmt(c['accuracy'], '.4f')} vs {_fmt(c['accuracy_shares'], '.4f')} always the most common class"
    if not math.isfinite(p):
        return f"{head_}, the DM test could not be computed: the head is not shown to have skill{acc}"
    said = f"{head_}, DM p = {fmt_p(p, level)}"
    if p >= level:
        return f"{said}: no significant difference, the head is not shown to have skill{acc}"
    diff, stat = c["log_loss"] - c["log_loss_shares"], c["dm"]["statistic"]
    if diff != 0 and stat != 0 and (diff < 0) != (stat < 0):  # as the MSE verdict's _disagree
        return (f"{said}: the pooled log loss and the per-date DM test point in opposite directions (dates hold "
                f"different numbers of symbols), so no claim is made: the head is not shown to have skill{acc}")
    if stat < 0:
        return f"{said}: the head beats the class shares (significant at {level:g}){acc}"
    return f"{said}: the head is significantly WORSE than the class shares (at {level:g}){acc}"


def quantile_note(result: dict[str, Any]) -> str:
    """"" or why the quantile head's coverage is undefined: how many windows have a quantile that is not
    finite (a failure to forecast, never a hit)."""
    bad = result["model"].get("quantiles_not_finite") or 0
    if not bad:
        return ""
    return (f" (undefined: a quantile is not finite in {bad} of the {result['n_windows']} windows, and a NaN or ±inf "
            "quantile covers nothing)")


def _cross_section_lines(result: dict[str, Any]) -> list[str]:
    """The step-1 cross-sectional IC of the model and of the strongest baseline by rank IC (the verdict's)."""
    cs = result["model"].get("cross_section")
    if not cs:
        return []
    lag = cs["ic"].get("lag", CS_LAG)
    head_ = f"cross-section (step 1, per date across ≥ {CS_MIN_SYMBOLS} symbols, Newey–West lag {lag}):"
    if not cs["rank_ic"]["n_dates"]:
        return [f"{head_} {_no_rank_ic(result).removeprefix('cross-section: ')}"]
    rows = [("model", cs)]
    base = {k: v["cross_section"] for k, v in result["baselines"].items()
            if "cross_section" in v and v["cross_section"]["rank_ic"]["mean"] is not None  # NaN is null in eval.json
            and math.isfinite(v["cross_section"]["rank_ic"]["mean"])}
    chosen = (result.get("cross_section_strongest") or {}).get("name")  # the verdict's (_strongest_by_rank_ic)
    if chosen in base:
        rows.append((label(chosen), base[chosen]))
    elif base and "baselines_rank_ic_common" not in result:  # an evaluation written before it was recorded
        best = max(base, key=lambda k: base[k]["rank_ic"]["mean"])
        rows.append((label(best), base[best]))

    def one(s: dict[str, Any]) -> str:
        return f"mean{_fmt(s['mean'], '>8.4f')} ICIR{_fmt(s['icir'], '>7.3f')} t{_fmt(s['t_stat'], '>7.2f')}"

    return [head_] + [f"  {name:<22}IC {one(c['ic'])} | Rank IC {one(c['rank_ic'])} | {c['rank_ic']['n_dates']} dates"
                      for name, c in rows]
