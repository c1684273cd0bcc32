"""Feature scalers fit on the training split only; serialised as JSON with the model.

The robust scaler divides by the interquartile range; a column whose IQR is 0 but whose values vary
(minute returns, mostly exactly 0; a volume ratio of a thinly traded symbol) is divided by its
standard deviation instead, and a warning names it: scaled by 1 its values stayed as small as they
are (1e-4 for a minute return) beside columns of unit spread, and the model could not see them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hftraining.core.errors import DataError

GLOBAL = "*"
log = logging.getLogger("hftraining")


def _spread(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(center, spread, fallback) per column of ``x`` (N, F): mean and std, or median and IQR, where
    a column whose IQR is 0 but whose values vary (its std is not 0) has its std as spread instead
    (``fallback``: those columns, all False for the standard scaler)."""
    if kind == "standard":
        return x.mean(axis=0), x.std(axis=0), np.zeros(x.shape[1], dtype=bool)  # population std, as sklearn's
    if kind == "robust":
        q25, center, q75 = np.percentile(x, [25, 50, 75], axis=0)
        iqr = q75 - q25
        fallback = ~(iqr > 1e-12)
        if fallback.any():
            std = x.std(axis=0)
            fallback &= std > 1e-12
            iqr = np.where(fallback, std, iqr)
        return center, iqr, fallback
    raise ValueError(kind)


def _columns(cols: np.ndarray, names: list[str] | None) -> str:
    """Columns ``cols`` (indices) by name (``names``: the feature columns) or number, at most 5, then a count."""
    shown = [names[j] if names is not None and j < len(names) else f"#{j}" for j in cols[:5]]
    return ", ".join(shown) + (f" and {len(cols) - 5} more" if len(cols) > 5 else "")


def _warn_fallback(what: str) -> None:
    log.warning("data.scaler robust: feature columns with interquartile range 0 over %s but that vary (mostly one "
                "value: returns mostly 0, a thinly traded volume) are scaled by their standard deviation instead: "
                "by 1 they would stay too small beside the other columns for the model to see them", what)


def _stats(x: np.ndarray, kind: str, names: list[str] | None = None, by_std: list[str] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) per column of ``x`` (N, F); a constant column gets scale 1; a robust scaler's
    column of IQR 0 that varies, its standard deviation (named in a warning; ``names``: the columns;
    appended to ``by_std``)."""
    center, scale, fallback = _spread(x, kind)
    if fallback.any():
        _warn_fallback(f"the training rows ({_columns(np.flatnonzero(fallback), names)})")
        if by_std is not None:
            by_std.append(_columns(np.flatnonzero(fallback), names))
    return center, np.where(scale > 1e-12, scale, 1.0)


def _own_stats(parts: dict[str, np.ndarray], kind: str, names: list[str] | None = None,
               by_std: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each symbol's (center, scale) from its own training rows ``parts``. A column without spread
    for a symbol gets scale 1, as in :func:`_stats`: harmless where it stays constant (``hour`` of
    daily bars), but where other symbols' rows vary it is usually prices that did not move (a
    suspension, stale quotes), and the symbol's later rows would be fed unscaled (an RSI in points,
    a return that barely moves). A symbol left unscaled in every such column is refused, as one
    training row is (:func:`check_own_rows`); one left unscaled in some of them is named in a warning.
    A robust scaler's column of IQR 0 that varies for a symbol has its standard deviation as scale
    (as in :func:`_stats`), named in a warning with the symbol (and in ``by_std``)."""
    raw = {s: _spread(p.astype(np.float64), kind) for s, p in parts.items()}  # one symbol converted at a time
    fell = [f"{s}: {_columns(np.flatnonzero(fb), names)}" for s, (_, _, fb) in sorted(raw.items()) if fb.any()]
    if by_std is not None:
        by_std.extend(fell)
    if fell:
        more = f" and {len(fell) - 3} more symbols" if len(fell) > 3 else ""
        _warn_fallback(f"a symbol's training rows ({'; '.join(fell[:3])}{more})")
    flat = {s: ~(sp > 1e-12) for s, (_, sp, _) in raw.items() if len(parts[s]) > 1}  # one row: check_own_rows
    varies = ~np.logical_and.reduce(list(flat.values())) if flat else np.zeros(0, bool)
    what = "standard deviation" if kind == "standard" else "interquartile range"
    for s, f in sorted(flat.items()):
        if varies.any() and (f | ~varies).all():
            raise DataError(f"{s}: no feature column varies over its {len(parts[s])} training rows ({what} 0; "
                            "prices that did not move?): its own scaler would leave it unscaled; drop it from "
                            "data.symbols or set data.scale_per_symbol=false")
    named = [f"{s} ({int((f & varies).sum())} of {len(f)} columns, {len(parts[s])} training rows)"
             for s, f in sorted(flat.items()) if (f & varies).any()]
    if named:
        log.warning("data.scale_per_symbol: feature columns with %s 0 over a symbol's training rows but not over "
                    "other symbols' are left unscaled (scale 1) for %s%s: prices that did not move? drop such a symbol "
                    "from data.symbols or set data.scale_per_symbol=false", what, "; ".join(named[:3]),
                    f" and {len(named) - 3} more" if len(named) > 3 else "")
    return {s: (c, np.where(sp > 1e-12, sp, 1.0)) for s, (c, sp, _) in raw.items()}


MIN_OWN_ROWS = 20
"""Training rows a symbol needs to fit its own scaler (``data.scale_per_symbol``). From one row every
column is constant (the symbol would be left unscaled, scale 1 throughout); from a few, the spread of
a few consecutive, strongly autocorrelated rows (an RSI, a moving band) is a small fraction of the
symbol's own, so its later inputs can come out tens of spreads from the centre (from two rows, over 100)."""


def check_own_rows(counts: dict[str, int]) -> None:
    """Refuse a per-symbol fit from fewer than :data:`MIN_OWN_ROWS` training rows (``counts``: symbol →
    its training rows, each > 0), naming the symbol with the fewest."""
    short = {sym: n for sym, n in counts.items() if n < MIN_OWN_ROWS}
    if short:
        sym = min(short, key=lambda s: (short[s], s))
        n = short[sym]
        raise DataError(f"{sym}: {n} training row{'' if n == 1 else 's'} to fit its own scaler (at least {MIN_OWN_ROWS}: "
                        "a spread from fewer scales its later rows far out of range); drop it from data.symbols "
                        "or set data.scale_per_symbol=false")


FAR_IQRS = 1000.0
"""A feature column's training row this many interquartile ranges (of the training rows the scaler is
fit on) from their median is named in a warning at the fit (:func:`check_far_rows`). Alpha158's VMA
and VSTD divide by the row's volume: on the 52 shared daily files (2020-2026) a day of GH with 700
shares beside days of 3 million (2024-05-23) puts VMA10 about 8,000 of them out, HIMS's thin days before
its merger (100-700 shares beside 680,000) its VSTD columns thousands, and a day of one share beside
millions about a million; the package's sample files' (``sample_data_dir``) columns, Alpha158's and the other features', stay under it. Such rows set a standard scaler's spread (the rest of the column then
differs by a small fraction of a unit, and the model hardly sees it), and a robust scaler, whose spread
they leave alone, puts them thousands of units from the model's other inputs."""

SPREAD_SAMPLE = 2_000
"""Most rows (evenly spaced over the training rows of a fit, or of one symbol's under a per-symbol scaler) whose
median and interquartile range :func:`check_far_rows` measures a column's rows against: the maximum and minimum
read every row. A quartile of 2,000 rows is within about 5% of the column's, far inside the factor of
1,000 the check looks for; 200,000 rows made the check as slow as the fit, and a per-symbol fit of 100 symbols
of 14,000 rows × 158 columns several times slower (8.8 s of checks; about 1 s with 2,000, on a 2-core machine)."""


def _name(j: int, names: list[str] | None) -> str:
    return names[j] if names is not None and j < len(names) else f"#{j}"


def check_far_rows(parts: dict[str, np.ndarray], params: dict[str, tuple[np.ndarray, np.ndarray]], kind: str,
                   names: list[str] | None = None) -> list[str]:
    """Name in one warning the feature columns one of whose training rows lies :data:`FAR_IQRS` or
    more interquartile ranges from the median of the rows its scaler was fit on (``parts``: each
    symbol's training rows (N_s, F); ``params``: the fitted (center, scale), per symbol or pooled
    under :data:`GLOBAL`), with the symbol of the farthest row, how many such rows it has, its value,
    what the scaler makes of it and the spread left to the column's middle half. → the columns named
    (``"COLUMN (SYMBOL)"``). A column whose interquartile range is 0 is not measured (the robust
    scaler's own warning names those that vary)."""
    groups = [(GLOBAL, parts)] if GLOBAL in params else [(s, {s: p}) for s, p in parts.items() if s in params]
    found: list[tuple[float, str, str]] = []
    for key, group in groups:
        rows = [p for p in group.values() if len(p)]
        if not rows:
            continue
        center, scale = params[key]
        total = sum(len(p) for p in rows)
        step = max(1, -(-total // SPREAD_SAMPLE))
        sample = np.concatenate([p[::step] for p in rows]).astype(np.float64).T.copy()  # (F, n): each column contiguous
        q25, med, q75 = np.percentile(sample, [25, 50, 75], axis=1)
        iqr = q75 - q25
        measured = iqr > 1e-12
        far = {s: np.maximum(p.max(axis=0).astype(np.float64) - med, med - p.min(axis=0).astype(np.float64))
               for s, p in group.items() if len(p)}
        for j in np.flatnonzero(measured):
            sym = max(far, key=lambda s: far[s][j])
            dist = far[sym][j] / iqr[j]
            if not dist >= FAR_IQRS:
                continue
            col = group[sym][:, j].astype(np.float64)
            value = col[np.argmax(np.abs(col - med[j]))]
            n = int(np.count_nonzero(np.abs(col - med[j]) >= FAR_IQRS * iqr[j]))
            z = abs(value - center[j]) / scale[j]
            squeezed = f", its middle half then spanning {iqr[j] / scale[j]:.2g}" if kind == "standard" else ""
            found.append((dist, f"{_name(j, names)} ({sym})",
                          f"{_name(j, names)}: {n} row{'' if n == 1 else 's'} of {sym} up to {value:.3g}, "
                          f"{dist:.3g} interquartile ranges out, scaled to {z:.3g}{squeezed}"))
    if not found:
        return []
    found.sort(key=lambda f: -f[0])
    more = f"; and {len(found) - 3} more columns" if len(found) > 3 else ""
    what = ("sets the column's standard deviation, and the other rows differ by a fraction of a unit after scaling"
            if kind == "standard" else "leaves the spread alone and puts those rows thousands of units from the "
            "model's other inputs")
    log.warning("data.scaler %s: feature columns with training rows %d or more interquartile ranges from the median "
                "(%s%s): the scaler %s. A volume near 0 beside much larger ones (Alpha158's VMA and VSTD divide by the "
                "row's volume)? Fix those rows, or drop the symbol from data.symbols or the feature from data.features",
                kind, int(FAR_IQRS), "; ".join(f[2] for f in found[:3]), more, what)
    return [f[1] for f in found]


@dataclass
class Scaler:
    kind: str = "standard"
    per_symbol: bool = False
    params: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # the columns (per symbol: "SYM: columns") the fit scaled by their standard deviation (robust, IQR 0 but
    # varying): a run resumed from a version that scaled them by 1 is refused (train.runner.check_same_data)
    by_std: list[str] = field(default_factory=list)

    def fit(self, rows_by_symbol: dict[str, np.ndarray], names: list[str] | None = None) -> "Scaler":
        """``rows_by_symbol``: the training rows (N_s, F) of each symbol, nothing else; ``names``: the
        F feature columns, named in warnings."""
        self.by_std = []
        if self.per_symbol:
            check_own_rows({s: len(x) for s, x in rows_by_symbol.items()})
            self.params = _own_stats(rows_by_symbol, self.kind, names, self.by_std)
        else:
            self.params = {GLOBAL: _stats(np.concatenate(list(rows_by_symbol.values())), self.kind, names, self.by_std)}
        check_far_rows(rows_by_symbol, self.params, self.kind, names)
        return self

    def fit_rows(self, x: np.ndarray, train_rows: dict[str, slice], names: list[str] | None = None) -> "Scaler":
        """Fit on the rows ``x[train_rows[symbol]]`` of one (N, F) block, without copying them all
        (``names``: its F feature columns, named in warnings).

        Standard scaling combines per-symbol float64 means and sums of squared deviations (Chan et
        al.'s parallel update), so only one symbol's rows are ever converted at a time; the robust
        scaler needs every value for its quantiles and gathers the training rows once."""
        parts = {s: x[sl] for s, sl in train_rows.items() if sl.stop > sl.start}
        self.by_std = []
        if not parts:
            raise DataError("data: the training split has no rows to fit the scaler on: the cuts leave it none (give it more "
                            "dates: data.train_ratio or data.split_dates, a walk-forward fold's span, or a smaller data.embargo)")
        if self.per_symbol or self.kind == "robust":
            if self.per_symbol:
                check_own_rows({s: len(p) for s, p in parts.items()})
                self.params = _own_stats(parts, self.kind, names, self.by_std)
            else:
                self.params = {GLOBAL: _stats(np.concatenate(list(parts.values())).astype(np.float64), self.kind, names,
                                             self.by_std)}
            check_far_rows(parts, self.params, self.kind, names)
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
        check_far_rows(parts, self.params, self.kind, names)
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
