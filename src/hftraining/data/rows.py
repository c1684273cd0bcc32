"""Feature rows: one symbol's validated frame → float32 feature rows, and all symbols' rows in one block.

:func:`symbol_rows` is the one conversion of a frame into model rows (features with their warm-up
dropped, the 1-step log return of each row, its time and close). :func:`build_rows` writes them
into one in-memory block; the feature store (:mod:`hftraining.data.store`) writes the same rows
into memory-mapped files. Either way the result is a :class:`Rows`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Union

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.features import (
    OWN_SPACING_GAPS, PANEL_FEATURES, bar_spacing, build_features, date_stamps, feature_columns, feature_settle,
    feature_warmup, panel_specs, parse_spec, symbol_specs, utc_stamps,
)


def min_history(d: DataConfig) -> int:
    """Fewest real rows in an input window (``data.min_history``, default ``data.sequence_length``)."""
    return d.sequence_length if d.min_history is None else d.min_history


@dataclass(frozen=True)
class RowsNeeded:
    """How many validated rows a symbol needs, and why: the one rule, :meth:`of`. The validator
    skips a symbol with fewer (``rows``); the rows it builds are those after the features' warm-up
    (``usable``, what :func:`build_rows` and the feature store count)."""

    rows: int
    why: str  # e.g. "feature warm-up 33 + data.sequence_length 60 + data.prediction_horizon 5"
    warmup: int = 0  # rows the features (and the first return) consume before the first usable row

    @property
    def usable(self) -> int:
        """The rows left after the warm-up."""
        return self.rows - self.warmup

    @classmethod
    def of(cls, d: DataConfig, targets: bool = True) -> "RowsNeeded":
        """The features' warm-up rows (at least one: the first row has no return), then one input
        window of ``min_history`` real rows, and with ``targets`` the ``prediction_horizon`` rows it
        forecasts, at least ``data.min_rows`` of them. ``targets=False``: a forecast of the future
        (no target rows)."""
        warmup = feature_warmup(d.features)
        hist = min_history(d)
        key = "data.sequence_length" if d.min_history is None else "data.min_history"
        parts = [f"feature warm-up {warmup}" if warmup else "1 (the first row has no return)", f"{key} {hist}"]
        usable = hist
        if targets:
            usable += d.prediction_horizon
            parts.append(f"data.prediction_horizon {d.prediction_horizon}")
        why = " + ".join(parts)
        if targets and d.min_rows > usable:
            usable = d.min_rows
            why = f"{parts[0]} + data.min_rows {d.min_rows}"  # the parts add up to the rows, as above
        return cls(max(warmup, 1) + usable, why, max(warmup, 1))

    @classmethod
    def settled(cls, d: DataConfig) -> "RowsNeeded | None":
        """The rows a forecast needs for every row of its input window to have settled features
        (:func:`~hftraining.data.features.feature_settle`): then it is within the features' tolerance
        of the forecast from a symbol's full history. Fewer rows (but at least :meth:`of`'s) still
        give a forecast, one that recursive indicators (RSI, MACD, ATR) make differ from that.
        None when a feature does not settle within the rows that can be measured
        (:func:`~hftraining.data.features.settle_unknown`): no number of rows is known to be enough."""
        settle = feature_settle(d.features)
        if settle is None:
            return None
        settle = max(settle, 1)
        rows = max(settle + d.sequence_length, cls.of(d, targets=False).rows)
        why = f"features settled after {settle} rows + data.sequence_length {d.sequence_length}"
        return cls(rows, why, settle)


ANY_ROWS = RowsNeeded(1, "at least one row")


@dataclass
class Rows:
    """All symbols' feature rows (unscaled) in one float32 block; a symbol's rows are adjacent.

    ``features`` is (N, F), ``returns`` (N,) the log return of each row over the previous row.
    Symbol k owns rows ``starts[k] : starts[k] + lengths[k]``. The arrays are in memory or
    memory-mapped read-only from the feature store; nothing writes to them after they are built.
    """

    symbols: list[str]
    starts: np.ndarray  # (S,) int64
    lengths: np.ndarray  # (S,) int64
    features: np.ndarray  # (N, F) float32
    returns: np.ndarray  # (N,) float32
    times: np.ndarray  # (N,) int64 ns UTC
    close: np.ndarray  # (N,) float64
    spacings: list[float] | None = None
    """(S,) each symbol's bar spacing in seconds, of all the rows of its frame (:attr:`SymbolRows.spacing`);
    None where the rows were made otherwise."""
    dates: np.ndarray | None = None
    """(N,) bool: the rows that are dates, not instants (:attr:`SymbolRows.dates`): a date and an instant at one
    stamp (a daily bar of UTC midnight beside the hourly bar of 00:00) are two dates of the panel features and of
    the labels taken across symbols (:func:`~hftraining.data.labels.row_labels`); None: every row an instant."""

    def rows(self, k: int) -> slice:
        return slice(int(self.starts[k]), int(self.starts[k] + self.lengths[k]))

    def symbol_times(self) -> list[np.ndarray]:
        return [self.times[self.rows(k)] for k in range(len(self.symbols))]


@dataclass
class SymbolRows:
    """One symbol's rows, as :func:`symbol_rows` makes them."""

    features: np.ndarray  # (n, F) float32
    returns: np.ndarray  # (n,) float32
    times: np.ndarray  # (n,) int64 ns UTC
    close: np.ndarray  # (n,) float64
    spacing: float | None = None
    """The spacing in seconds of the frame's last bars (:func:`~hftraining.data.features.bar_spacing` of its
    last :data:`~hftraining.data.features.OWN_SPACING_GAPS` gaps, fewer in a shorter frame): the one by
    which :func:`~hftraining.data.features.date_stamps`, given no ``bar_seconds``, read its last row, so the
    first rows of a later frame of the symbol, which have fewer gaps before them, are read by it."""
    dates: np.ndarray | None = None
    """(n,) bool: the rows that are dates, not instants (:func:`~hftraining.data.features.date_stamps` of the
    frame's stamps, each read by the gaps up to it): the panel features order a date beside instants by the end
    of its day (:func:`~hftraining.data.features.market_columns`)."""

    def __len__(self) -> int:
        return len(self.returns)


def symbol_rows(frame: pd.DataFrame, specs: list[str], symbol: str, min_rows: int = 1,
                values: np.ndarray | None = None, *, tz: str, bar_seconds: float | None = None) -> SymbolRows | None:
    """A validated frame → its rows after the feature warm-up (and the first row, which has no
    previous close), or None when fewer than ``min_rows`` are left. ``values``: precomputed
    (n, F) features of the frame. ``tz``: ``data.timezone``, the zone of the time features;
    ``bar_seconds``: a model's recorded bar spacing, which says whether a stamp at UTC midnight is a
    date in the frame's first rows, those with fewer gaps before them than the rule reads
    (:func:`~hftraining.data.features.date_stamps`; None, as in training: the gaps they have)."""
    if len(frame) < 2:
        return None
    block, first = build_features(frame, specs, symbol, values, tz, bar_seconds)
    c_all = frame["close"].to_numpy(np.float64)
    start = max(first, 1)
    n = len(frame) - start
    if n < max(min_rows, 1):
        return None
    with np.errstate(over="ignore", under="ignore", divide="ignore"):  # said below, not as a numpy warning
        r = np.log(c_all[start:] / c_all[start - 1 : -1])
    if not np.isfinite(r).all():
        # named by its timestamp, as the features' errors are: the validated frame's row numbers are not the file's lines
        bad = start + int(np.flatnonzero(~np.isfinite(r))[0])
        when = pd.Timestamp(frame["timestamp"].iloc[bad]).isoformat()
        raise DataError(f"{symbol}: the log return at {when} is not finite (close {c_all[bad]:.6g} after "
                        f"{c_all[bad - 1]:.6g}: their ratio is beyond float64's range): the prices are too extreme "
                        "to compute it from")
    block = block.iloc[start - first :]
    ts = pd.DatetimeIndex(block["timestamp"])
    # in ns whatever the frame's unit (pandas 3 parses text to microseconds): the rows' times are ns
    ts = (ts.tz_convert("UTC") if ts.tz is not None else ts.tz_localize("UTC")).as_unit("ns")
    # a date or an instant by the gaps up to each row in the whole frame (the warm-up rows' included), as the
    # time features read it
    dates = date_stamps(utc_stamps(frame["timestamp"]).asi8, bar_seconds)[start:]
    return SymbolRows(
        features=np.ascontiguousarray(block.iloc[:, 2:].to_numpy(np.float32)),
        returns=r.astype(np.float32),
        times=np.asarray(ts.asi8, dtype=np.int64),
        close=np.ascontiguousarray(c_all[start:]),
        spacing=_frame_spacing(frame),
        dates=np.ascontiguousarray(dates),
    )


def _frame_spacing(frame: pd.DataFrame) -> float | None:
    """The spacing in seconds of ``frame``'s last stamps (:attr:`SymbolRows.spacing`), or None for fewer than two."""
    ts = utc_stamps(frame["timestamp"][-OWN_SPACING_GAPS - 1:])
    spacing = bar_spacing(np.diff(ts.asi8))
    return None if spacing is None else spacing / 1e9


FrameSource = Union[Mapping[str, pd.DataFrame], Iterable[tuple[str, pd.DataFrame]]]


def build_rows(
    frames: FrameSource, specs: list[str], min_rows: int = 1, capacity: int | None = None,
    precomputed: Mapping[str, np.ndarray] | None = None, *, tz: str, bar_seconds: float | None = None,
    symbol_bar_seconds: Mapping[str, float] | None = None,
) -> tuple[Rows, list[str]]:
    """:func:`symbol_rows` of every frame written into one in-memory block → (rows, skipped symbols).

    ``frames`` is a mapping or an iterable of (symbol, frame) pairs; with an iterable and
    ``capacity`` (an upper bound of the rows in all), frames can be produced one at a time and
    released after use, so memory never holds all input frames and the block together.
    Symbols left with fewer than ``min_rows`` rows are skipped.
    ``precomputed``: {symbol: (n, F) features}, used instead of computing them. ``tz``:
    ``data.timezone``, the zone of the time features (``calendar``, ``hour``). ``bar_seconds``: see
    :func:`symbol_rows` (a forecast's few rows are read as the model's training bars were).
    ``symbol_bar_seconds``: {symbol: the spacing of its own last training bars}, used for that symbol instead
    of ``bar_seconds`` (a panel may mix daily symbols with intraday ones: each was read by its own bars).
    """
    if isinstance(frames, Mapping):
        capacity, frames = sum(len(f) for f in frames.values()), frames.items()
    elif capacity is None:
        frames = list(frames)
        capacity = sum(len(f) for _, f in frames)
    all_specs, specs = specs, symbol_specs(specs)
    F = len(feature_columns(all_specs))  # the per-symbol columns, then the panel features' (filled at the end)
    Fs = len(feature_columns(specs))
    feats = np.empty((capacity, F), dtype=np.float32)
    rets = np.empty(capacity, dtype=np.float32)
    times = np.empty(capacity, dtype=np.int64)
    close = np.empty(capacity, dtype=np.float64)
    dates = np.zeros(capacity, dtype=bool)
    symbols, starts, lengths, spacings, skipped = [], [], [], [], []
    off = 0
    for sym, frame in frames:
        if off + len(frame) > capacity:
            raise ValueError(f"build_rows: more rows than capacity={capacity}")  # a caller's bug, not user input
        own = bar_seconds if symbol_bar_seconds is None else symbol_bar_seconds.get(sym, bar_seconds)
        got = symbol_rows(frame, specs, sym, min_rows, None if precomputed is None else precomputed.get(sym), tz=tz,
                          bar_seconds=own)
        if got is None:
            skipped.append(sym)
            continue
        n = len(got)
        feats[off : off + n, :Fs], rets[off : off + n] = got.features, got.returns
        times[off : off + n], close[off : off + n] = got.times, got.close
        dates[off : off + n] = got.dates
        symbols.append(sym)
        spacings.append(got.spacing)
        starts.append(off)
        lengths.append(n)
        off += n
    # views of the first ``off`` rows: the unused tail (warm-up rows) is a few rows per symbol
    fill_panel_features(feats[:off], rets[:off], times[:off], all_specs, dates=dates[:off])
    rows = Rows(symbols, np.asarray(starts, np.int64), np.asarray(lengths, np.int64),
                feats[:off], rets[:off], times[:off], close[:off], spacings, dates[:off])
    return rows, skipped


def fill_panel_features(features: np.ndarray, returns: np.ndarray, times: np.ndarray, specs: list[str],
                        chunk: int = 1 << 22, *, dates: np.ndarray) -> None:
    """Write the columns of the panel features among ``specs`` (:data:`PANEL_FEATURES`, e.g. ``market``)
    into the last columns of ``features`` (N, F) in place (an array, or a writable memmap of a store
    entry being built), computed across the symbols of each date from the rows' ``returns`` and
    ``times`` (N,) and which rows are dates (``dates`` (N,), :attr:`SymbolRows.dates`: a date beside
    instants is known at the end of its day); ``chunk`` rows are written at a time. Nothing to do
    without a panel feature."""
    panel = panel_specs(specs)
    if not panel:
        return
    cols: dict[str, np.ndarray] = {}
    for spec in panel:
        name, params = parse_spec(spec)
        cols.update(PANEL_FEATURES[name](np.asarray(returns), np.asarray(times), params, np.asarray(dates)))
    block = np.column_stack(list(cols.values())).astype(np.float32)  # (N, P)
    P = block.shape[1]
    for a in range(0, len(block), chunk):
        features[a : a + chunk, -P:] = block[a : a + chunk]
