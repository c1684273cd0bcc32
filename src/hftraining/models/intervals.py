"""Forecast intervals by conformal calibration, for any point forecast (``evaluation.intervals``).

- **split** (Vovk et al.; Lei et al. 2018): per horizon step h, the scores are the absolute
  residuals |y − ŷ| of the validation windows, pooled over symbols and dates; the interval at
  level 1 − α is ŷ ± the ⌈(n + 1)(1 − α)⌉-th smallest score (infinite when that rank exceeds n).
- **aci** (adaptive conformal inference, Gibbs & Candès 2021): the same scores and radius, but at
  the level 1 − α_t of each date, α_{t+1} = α_t + γ (α − err_t), err_t the share of that date's
  intervals that missed (at γ = 0: split). An h-step outcome is known on the date of the symbol's
  own row h steps after the forecast's, so its miss enters α only from that date on, whatever the
  other symbols' calendars (:func:`aci_bounds`).
- **cqr** (conformalised quantile regression, Romano et al. 2019), for a model with a quantile
  head holding both α/2 and 1 − α/2: the score is max(q_lo − y, y − q_hi) and the interval
  [q_lo − Q, q_hi + Q].

Everything is in the label's units (log returns by default). A :class:`Calibration` is saved in a
model folder as ``intervals.json`` (:meth:`Calibration.to_dict`); a folder without one predicts
points only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hftraining.models.predict import predict_outputs

METHODS = ("split", "aci", "cqr")
GRID = 1001
"""Probabilities at which the saved calibration keeps each step's score distribution (0, 0.001, ..., 1):
what ACI reads its changing quantile from after the calibration windows are gone."""


def _missing_as_inf(scores: np.ndarray) -> np.ndarray:
    """``scores`` with NaN (a NaN forecast or quantile) as +inf: such a window's interval covers
    nothing (the report counts it a miss), so it ranks above every bound. Left NaN, it sorted last
    but a rank landing on it gave a NaN radius, every interval of the step NaN (and inf once saved),
    and one NaN made all of ACI's score grid NaN."""
    s = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(s), np.inf, s)


def _grid(s: np.ndarray) -> np.ndarray:
    """(H, GRID) quantiles of the scores ``s`` (n, H) at GRID even probabilities (linear between order
    statistics); where that interpolation meets an infinite score (inf − inf), the higher order
    statistic: the exact value at an order statistic's own probability, inf between it and an inf."""
    q = np.linspace(0, 1, GRID)
    with np.errstate(invalid="ignore"):
        g = np.quantile(s, q, axis=0)
    bad = np.isnan(g)
    if bad.any():
        g[bad] = np.quantile(s, q, axis=0, method="higher")[bad]
    return g.T


def conformal_radius(scores: np.ndarray, level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest of ``scores`` (n,) (inf when that rank exceeds n, or n = 0; a
    NaN score counts as +inf): the split-conformal bound that covers a new exchangeable score with
    probability ≥ ``level``."""
    s = _missing_as_inf(scores).ravel()
    n = s.size
    k = math.ceil((n + 1) * level - 1e-12)
    if n == 0 or k > n:
        return math.inf
    if k < 1:
        return 0.0
    return float(np.partition(s, k - 1)[k - 1])


def cqr_pair(levels: list[float], level: float) -> tuple[int, int] | None:
    """Indices of the quantile levels α/2 and 1 − α/2 of an interval at ``level`` = 1 − α, or None."""
    a = (1.0 - level) / 2
    lo = next((i for i, q in enumerate(levels) if abs(q - a) < 1e-9), None)
    hi = next((i for i, q in enumerate(levels) if abs(q - (1 - a)) < 1e-9), None)
    return None if lo is None or hi is None else (lo, hi)


def scores(pred: np.ndarray, true: np.ndarray, method: str, quantiles: np.ndarray | None = None,
           q_levels: list[float] | None = None, level: float | None = None) -> np.ndarray:
    """(n, H) nonconformity scores: |y − ŷ|, or for ``cqr`` at ``level`` max(q_lo − y, y − q_hi)."""
    if method != "cqr":
        return np.abs(np.asarray(true, np.float64) - np.asarray(pred, np.float64))
    lo, hi = cqr_pair(list(q_levels or []), level)
    return np.maximum(quantiles[..., lo] - true, true - quantiles[..., hi])


@dataclass
class Calibration:
    """A conformal calibration of one model: per level and horizon step, the radius around the
    forecast (split, aci) or around its quantile pair (cqr); for ``aci`` also the step's score
    distribution and the current α of each level and step."""

    method: str
    levels: list[float]  # coverage levels, e.g. [0.8, 0.9]
    radius: np.ndarray  # (K, H) split radius of each level and step (label units; inf: unbounded)
    n: int  # calibration windows
    grid: np.ndarray | None = None  # (H, GRID) score quantiles at GRID even probabilities (aci)
    gamma: float = 0.0  # aci step size
    alpha: np.ndarray | None = None  # (K, H) aci's current miss rate target per level and step
    q_pairs: list[tuple[int, int]] = field(default_factory=list)  # cqr: quantile-head indices per level
    split: str = "val"  # what it was calibrated on

    @classmethod
    def fit(cls, pred: np.ndarray, true: np.ndarray, levels: list[float], method: str = "split", gamma: float = 0.0,
            quantiles: np.ndarray | None = None, q_levels: list[float] | None = None) -> "Calibration":
        """Calibrate on (n, H) forecasts ``pred`` and realisations ``true`` (the validation windows)."""
        if method not in METHODS:
            raise ValueError(f"unknown interval method {method!r}")
        pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
        n, H = true.shape
        # a missing (not finite) label is no score: taken as one, it ranked above every bound like a NaN
        # forecast, and widened the step's radius (a 90% level unbounded with 17 of 20 labels known)
        bad = ~np.isfinite(true)
        if bad.any():
            w, h = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"calibration window {w} has a realised label that is not finite at step {h + 1} "
                             f"({true[w, h]}; {int(bad.any(axis=1).sum())} of the {n} windows): a missing label is "
                             "no calibration score; leave those windows out")
        pairs: list[tuple[int, int]] = []
        radius = np.empty((len(levels), H))
        for k, level in enumerate(levels):
            if method == "cqr":
                pair = cqr_pair(list(q_levels or []), level)
                if quantiles is None or pair is None:
                    raise ValueError(f"cqr at {level:g} needs the quantile levels {(1 - level) / 2:g} and {(1 + level) / 2:g}")
                pairs.append(pair)
            s = scores(pred, true, method, quantiles, q_levels, level)
            radius[k] = [conformal_radius(s[:, h], level) for h in range(H)]
        grid = alpha = None
        if method == "aci":
            grid = _grid(_missing_as_inf(scores(pred, true, "split"))) if n else np.full((H, GRID), np.inf)  # (H, GRID)
            alpha = np.tile(1.0 - np.asarray(levels, np.float64)[:, None], (1, H))
        return cls(method, list(levels), radius, int(n), grid, float(gamma), alpha, pairs)

    def radius_at(self, alpha: np.ndarray, h: int) -> np.ndarray:
        """ACI: the radius of step ``h`` at miss rates ``alpha`` (any shape): the split radius at level
        1 − α, the ⌈(n + 1)(1 − α)⌉-th smallest of the n scores (inf when that rank exceeds n, so at
        α ≤ 0; 0 below rank 1, so at α ≥ 1), read from the saved distribution, where the k-th smallest
        lies at probability (k − 1)/(n − 1). Not the plain score quantile at 1 − α: that is narrower
        than the split radius at the same level (at the nominal α, 0.86 coverage for 0.9 with 20
        windows) and finite with fewer windows than the level needs, so ACI would start below its
        level, and at γ = 0 it would not be split conformal."""
        a = np.asarray(alpha, np.float64)
        n = self.n
        k = np.ceil((n + 1) * (1.0 - a) - 1e-12)  # the rank conformal_radius takes
        p = np.clip((k - 1) / max(n - 1, 1), 0.0, 1.0)
        # the grid holds the scores' quantiles at GRID even probabilities, not every order statistic:
        # a rank a level's split radius holds is read from that radius (exact: at the nominal α, and so
        # throughout at γ = 0); any other from the grid point at or above its probability (never narrower)
        j = np.clip(np.ceil(p * (GRID - 1) - 1e-9), 0, GRID - 1).astype(np.int64)
        r = self.grid[h][j] if n else np.full(a.shape, np.inf)
        for level, exact in zip(self.levels, self.radius[:, h]):
            r = np.where(k == math.ceil((n + 1) * level - 1e-12), exact, r)
        return np.where((k > n) | (n == 0), np.inf, np.where(k < 1, 0.0, r))

    def bounds(self, pred: np.ndarray, quantiles: np.ndarray | None = None) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """{level: (lower, upper)}, each (W, H), for forecasts ``pred`` (W, H) with the calibration as it
        stands (aci: its current α; cqr: around ``quantiles`` (W, H, Q) of the model's head)."""
        out = {}
        for k, level in enumerate(self.levels):
            if self.method == "cqr":
                lo_i, hi_i = self.q_pairs[k]
                lo, hi = quantiles[..., lo_i] - self.radius[k], quantiles[..., hi_i] + self.radius[k]
                # a negative radius (a head wider than it needs) can cross a narrow window's band: an empty
                # interval, given as the point between them (it covers nothing either; width 0, not negative)
                with np.errstate(invalid="ignore"):  # inf radius: −inf + inf, never picked
                    mid = (lo + hi) / 2
                out[level] = (np.where(lo > hi, mid, lo), np.where(lo > hi, mid, hi))
                continue
            r = self.radius[k] if self.method == "split" else np.array(
                [float(self.radius_at(self.alpha[k, h], h)) for h in range(pred.shape[1])])
            out[level] = (pred - r, pred + r)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (inf as None)."""
        def enc(a):
            return None if a is None else [[None if not math.isfinite(v) else float(v) for v in row] for row in np.atleast_2d(a)]

        return {"method": self.method, "levels": list(self.levels), "radius": enc(self.radius), "n": self.n,
                "grid": enc(self.grid), "gamma": self.gamma, "alpha": enc(self.alpha),
                "q_pairs": [list(p) for p in self.q_pairs], "split": self.split}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        def dec(a):
            return None if a is None else np.array([[math.inf if v is None else float(v) for v in row] for row in a])

        return cls(d["method"], [float(x) for x in d["levels"]], dec(d["radius"]), int(d["n"]), dec(d.get("grid")),
                   float(d.get("gamma", 0.0)), dec(d.get("alpha")), [tuple(p) for p in d.get("q_pairs", [])],
                   str(d.get("split", "val")))


def aci_bounds(cal: Calibration, pred: np.ndarray, true: np.ndarray, dates: np.ndarray, known: np.ndarray,
               start: np.ndarray | None = None) -> tuple[dict[float, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """ACI over forecasts ``pred`` (W, H) made on ``dates`` (W,), realised ``true`` (W, H), whose
    outcomes become known at ``known`` (W, H) (the time of the symbol's own row each step lands on,
    :func:`hftraining.eval.intervals.outcome_times`; same units as ``dates``) → ({level: (lower,
    upper) (W, H)}, the α after every outcome of ``true`` (K, H): what the next forecast uses).
    Starts from ``start`` (K, H), by default the nominal 1 − level: scoring a split never starts from
    an α that has already seen its outcomes (the saved ``cal.alpha`` has, when the calibration was
    walked over that split before).

    The miss of step h of a forecast updates α only for the forecasts of the first date at or after
    its ``known``: the intervals of a date never depend on an outcome that is not yet known then,
    also when symbols trade on different calendars (a symbol's next row may be several dates of the
    others later). Each forecast date weighs as one update per step, the share of its n forecasts
    whose interval missed: each interval moves α by γ/n × (1 − level − miss) once its outcome is known
    (n: the forecasts of the date whose label is finite; a missing label is no outcome and moves α neither way).
    """
    dates, known = np.asarray(dates), np.asarray(known)
    W, H = pred.shape
    if known.shape != (W, H):
        raise ValueError(f"aci_bounds: known must be {(W, H)} like pred, got {known.shape}")
    if W and np.any(known <= dates[:, None]):
        raise ValueError("aci_bounds: an outcome is known no later than its forecast (known <= dates)")
    u, inv = np.unique(dates, return_inverse=True)
    inv = inv.reshape(-1)
    K, D = len(cal.levels), len(u)
    target = 1.0 - np.asarray(cal.levels, np.float64)  # (K,)
    alpha = (np.tile(target[:, None], (1, H)) if start is None else np.array(start, dtype=np.float64, copy=True))  # (K, H)
    lo, hi = np.empty((K, W, H)), np.empty((K, W, H))
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(D + 1))
    due = np.searchsorted(u, known, side="left")  # (W, H) first forecast date at or after the outcome (D: after the last)
    pending = np.zeros((D + 1, K, H))  # α updates waiting for each date: the outcomes known by then
    for d in range(D):
        alpha += pending[d]
        rows = order[starts[d] : starts[d + 1]]
        for h in range(H):
            r = cal.radius_at(alpha[:, h], h)  # (K,)
            lo[:, rows, h] = pred[rows, h][None, :] - r[:, None]
            hi[:, rows, h] = pred[rows, h][None, :] + r[:, None]
            y = true[rows, h][None, :]
            # not inside: a NaN forecast's NaN interval is a miss, as the report counts it (``y < NaN`` is
            # False: it moved α as a hit, narrowing every later interval)
            miss = ~((y >= lo[:, rows, h]) & (y <= hi[:, rows, h]))  # (K, n)
            # a missing (not finite) label is no outcome: it moves α neither way, as the report leaves it
            # out of the coverage (it moved α as a miss, widening every later interval)
            seen = np.isfinite(true[rows, h])
            step = pending[:, :, h]  # a view: the updates land in ``pending``
            np.add.at(step, due[rows[seen], h],
                      (cal.gamma / max(int(seen.sum()), 1) * (target[:, None] - miss[:, seen])).T)
    alpha += pending[D]  # every outcome in ``true`` is known once the data ends: the α a new forecast uses
    return {level: (lo[k], hi[k]) for k, level in enumerate(cal.levels)}, alpha


def calibrate_windows(model, val, target_scale: float, levels: list[float], method: str = "split", gamma: float = 0.0,
                      batch_size: int = 256, device="cpu", precision: str = "fp32",
                      q_levels: list[float] | None = None) -> Calibration:
    """:meth:`Calibration.fit` on the forecasts of ``model`` for the windows ``val`` (a WindowSet of
    the validation split), through the one batched forward (:func:`~hftraining.models.predict.predict_outputs`),
    in the label's units (× ``target_scale``)."""
    outs = predict_outputs(model, val, batch_size, device, precision)
    quant = outs.get("quantiles")
    return Calibration.fit(outs["prediction"].astype(np.float64) * target_scale,
                           val.targets().astype(np.float64) * target_scale, list(levels), method, gamma,
                           None if quant is None else quant.astype(np.float64) * target_scale, q_levels)
