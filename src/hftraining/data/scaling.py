"""Feature scalers fit on the training split only; serialised as JSON with the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hftraining.core.errors import DataError

GLOBAL = "*"


def _stats(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) per column of ``x`` (N, F); a constant column gets scale 1."""
    if kind == "standard":
        center, scale = x.mean(axis=0), x.std(axis=0)  # population std, as sklearn's StandardScaler
    elif kind == "robust":
        q25, center, q75 = np.percentile(x, [25, 50, 75], axis=0)
        scale = q75 - q25
    else:
        raise ValueError(kind)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return center, scale


def check_own_rows(counts: dict[str, int]) -> None:
    """A symbol scaled by its own statistics needs two training rows: from one, every column is
    constant, so the symbol would be centred on that row and left unscaled (scale 1 throughout)."""
    for sym, n in counts.items():
        if n == 1:
            raise DataError(f"{sym}: 1 training row to fit its own scaler (a spread needs at least 2); drop it from "
                            "data.symbols or set data.scale_per_symbol=false")


@dataclass
class Scaler:
    kind: str = "standard"
    per_symbol: bool = False
    params: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def fit(self, rows_by_symbol: dict[str, np.ndarray]) -> "Scaler":
        """``rows_by_symbol``: the training rows (N_s, F) of each symbol, nothing else."""
        if self.per_symbol:
            check_own_rows({s: len(x) for s, x in rows_by_symbol.items()})
            self.params = {s: _stats(x, self.kind) for s, x in rows_by_symbol.items()}
        else:
            self.params = {GLOBAL: _stats(np.concatenate(list(rows_by_symbol.values())), self.kind)}
        return self

    def fit_rows(self, x: np.ndarray, train_rows: dict[str, slice]) -> "Scaler":
        """Fit on the rows ``x[train_rows[symbol]]`` of one (N, F) block, without copying them all.

        Standard scaling combines per-symbol float64 means and sums of squared deviations (Chan et
        al.'s parallel update), so only one symbol's rows are ever converted at a time; the robust
        scaler needs every value for its quantiles and gathers the training rows once."""
        parts = {s: x[sl] for s, sl in train_rows.items() if sl.stop > sl.start}
        if not parts:
            raise DataError("data: the training split has no rows to fit the scaler on")
        if self.per_symbol or self.kind == "robust":
            if self.per_symbol:
                check_own_rows({s: len(p) for s, p in parts.items()})
                self.params = {s: _stats(p.astype(np.float64), self.kind) for s, p in parts.items()}
            else:
                self.params = {GLOBAL: _stats(np.concatenate(list(parts.values())).astype(np.float64), self.kind)}
            return self
        n, mean, m2 = 0, None, None
        for p in parts.values():
            p64 = p.astype(np.float64)
            nb, mb = len(p64), p64.mean(axis=0)
            m2b = ((p64 - mb) ** 2).sum(axis=0)
            if mean is None:
                n, mean, m2 = nb, mb, m2b
            else:
                delta = mb - mean
                tot = n + nb
                mean = mean + delta * nb / tot
                m2 = m2 + m2b + delta**2 * n * nb / tot
                n = tot
        std = np.sqrt(m2 / n)
        self.params = {GLOBAL: (mean, np.where(std > 1e-12, std, 1.0))}
        return self

    def stats(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """(center, scale) applied to ``symbol``'s rows."""
        key = symbol if self.per_symbol else GLOBAL
        if key not in self.params:
            raise DataError(f"symbol {symbol!r}: the scaler was fit per symbol and has no statistics for it")
        return self.params[key]

    def transform(self, x: np.ndarray, symbol: str) -> np.ndarray:
        center, scale = self.stats(symbol)
        return (x - center) / scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "per_symbol": self.per_symbol,
            "params": {k: {"center": c.tolist(), "scale": s.tolist()} for k, (c, s) in self.params.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaler":
        params = {k: (np.asarray(v["center"]), np.asarray(v["scale"])) for k, v in d["params"].items()}
        return cls(kind=d["kind"], per_symbol=d["per_symbol"], params=params)


def target_scale(returns: np.ndarray, train_slices: dict[str, slice]) -> float:
    """Std of the training log returns (float64, two passes over one symbol at a time); 1 when there is none."""
    parts = [sl for sl in train_slices.values() if sl.stop > sl.start]
    n = sum(sl.stop - sl.start for sl in parts)
    if n < 2:
        return 1.0
    mean = sum(float(returns[sl].astype(np.float64).sum()) for sl in parts) / n
    var = sum(float(((returns[sl].astype(np.float64) - mean) ** 2).sum()) for sl in parts) / n
    return float(np.sqrt(var)) if var > 0 else 1.0
