"""The data flow of training: frames → features → chronological split → scaler fit on train →
windows. ``prepare`` fits; ``apply`` and ``latest_windows`` reuse a saved :class:`Preprocessing`
so that evaluation and prediction see exactly what training saw.

:func:`rows_needed` is the one rule for how many rows a symbol needs; the validator, the feature
cache, training, evaluation and prediction all apply it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig, section_from_dict, split_date_ns
from hftraining.core.errors import DataError
from hftraining.data.cache import feature_tables
from hftraining.data.features import build_features, check_specs, feature_columns, feature_warmup
from hftraining.data.scaling import Scaler
from hftraining.data.splits import (
    SPLITS, Segment, calendar_cuts, calendar_split, chronological_split, union_calendar, window_ends,
)
from hftraining.data.validate import RowsNeeded, load_and_validate
from hftraining.data.windows import WindowSet

log = logging.getLogger(__name__)


@dataclass
class Preprocessing:
    """Everything needed to turn raw frames into model inputs; saved as preprocessing.json."""

    features: list[str]
    feature_columns: list[str]
    scaler: Scaler
    target_scale: float  # std of the training log returns; targets are returns / target_scale
    seq_len: int
    horizon: int
    data: dict[str, Any]  # the data section used for training (split ratios, embargo, ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "feature_columns": self.feature_columns,
            "scaler": self.scaler.to_dict(),
            "target_scale": self.target_scale,
            "seq_len": self.seq_len,
            "horizon": self.horizon,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        data = dict(d["data"])
        data.setdefault("split", "per_symbol")  # written before calendar splits: it was cut by rows
        return cls(
            features=list(d["features"]),
            feature_columns=list(d["feature_columns"]),
            scaler=Scaler.from_dict(d["scaler"]),
            target_scale=float(d["target_scale"]),
            seq_len=int(d["seq_len"]),
            horizon=int(d["horizon"]),
            data=data,
        )

    def data_config(self) -> DataConfig:
        """The data section the preprocessing was fit with (keys of newer versions take their defaults)."""
        return section_from_dict(DataConfig, self.data, "data")


@dataclass
class PreparedData:
    train: WindowSet
    val: WindowSet
    test: WindowSet
    preprocessing: Preprocessing
    report: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> WindowSet:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass
class Rows:
    """All symbols' feature rows in one contiguous float32 block (rows of a symbol are adjacent).

    ``features`` is (N, F), ``returns`` (N,) the log return of each row over the previous row.
    Symbol k owns rows ``starts[k] : starts[k] + lengths[k]``.
    """

    symbols: list[str]
    starts: np.ndarray  # (S,) int64
    lengths: np.ndarray  # (S,) int64
    features: np.ndarray  # (N, F) float32
    returns: np.ndarray  # (N,) float32
    times: np.ndarray  # (N,) int64 ns UTC
    close: np.ndarray  # (N,) float64

    def rows(self, k: int) -> slice:
        return slice(int(self.starts[k]), int(self.starts[k] + self.lengths[k]))


FrameSource = Union[Mapping[str, pd.DataFrame], Iterable[tuple[str, pd.DataFrame]]]


def build_rows(
    frames: FrameSource, specs: list[str], min_rows: int = 1, capacity: int | None = None,
    precomputed: Mapping[str, np.ndarray] | None = None,
) -> tuple[Rows, list[str]]:
    """Features of every symbol written straight into one float32 block → (rows, skipped symbols).

    ``frames`` is a mapping or an iterable of (symbol, frame) pairs; with an iterable and
    ``capacity`` (an upper bound of the rows in all), frames can be produced one at a time and
    released after use, so memory never holds all input frames and the block together.
    Warm-up rows (and the first row, which has no previous close) are dropped; symbols left with
    fewer than ``min_rows`` rows are skipped. Only one symbol's float64 features exist at a time.
    ``precomputed``: {symbol: (n, F) features} from the feature cache, used instead of computing them.
    """
    if isinstance(frames, Mapping):
        capacity, frames = sum(len(f) for f in frames.values()), frames.items()
    elif capacity is None:
        frames = list(frames)
        capacity = sum(len(f) for _, f in frames)
    total = capacity
    F = len(feature_columns(specs))
    feats = np.empty((total, F), dtype=np.float32)
    rets = np.empty(total, dtype=np.float32)
    times = np.empty(total, dtype=np.int64)
    close = np.empty(total, dtype=np.float64)
    symbols, starts, lengths, skipped = [], [], [], []
    off = 0
    for sym, frame in frames:
        if off + len(frame) > total:
            raise ValueError(f"build_rows: more rows than capacity={total}")  # a caller's bug, not user input
        if len(frame) < 2:
            skipped.append(sym)
            continue
        values, first = build_features(frame, specs, sym, None if precomputed is None else precomputed.get(sym))
        # values: (n - first, F+2) frame: timestamp, close, features
        c_all = frame["close"].to_numpy(np.float64)
        start = max(first, 1)  # row 0 of the frame has no previous close
        n = len(frame) - start
        if n < min_rows:
            skipped.append(sym)
            continue
        r = np.log(c_all[start:] / c_all[start - 1 : -1])
        if not np.isfinite(r).all():
            bad = start + int(np.flatnonzero(~np.isfinite(r))[0])
            raise DataError(f"{sym}: non-finite log return at row {bad} (close {c_all[bad]!r})")
        block = values.iloc[start - first :]
        feats[off : off + n] = block.iloc[:, 2:].to_numpy(np.float64)
        rets[off : off + n] = r
        ts = pd.DatetimeIndex(block["timestamp"])
        times[off : off + n] = (ts.tz_convert("UTC") if ts.tz is not None else ts.tz_localize("UTC")).asi8
        close[off : off + n] = c_all[start:]
        symbols.append(sym)
        starts.append(off)
        lengths.append(n)
        off += n
    # views of the first ``off`` rows: the unused tail (warm-up rows) is a few rows per symbol
    rows = Rows(symbols, np.asarray(starts, np.int64), np.asarray(lengths, np.int64),
                feats[:off], rets[:off], times[:off], close[:off])
    return rows, skipped


SegmentFn = Callable[[np.ndarray, np.ndarray], dict[str, Segment]]
"""(one symbol's row times, the panel's calendar) → {"train": Segment, "val": ..., "test": ...} in
the symbol's own row numbers (times are int64 ns UTC, the calendar their sorted union)."""


def resolve_cuts(d: DataConfig, calendar: np.ndarray) -> tuple[int, int] | None:
    """(first validation date, first test date) in ns of a calendar split: ``data.split_dates``, or
    the dates at the ratios' shares of ``calendar``. None for ``data.split=per_symbol``."""
    if d.split == "per_symbol":
        return None
    if d.split_dates is not None:
        return (split_date_ns(d.split_dates["val"], "data.split_dates.val"),
                split_date_ns(d.split_dates["test"], "data.split_dates.test"))
    if len(calendar) == 0:
        return None
    return calendar_cuts(calendar, d.train_ratio, d.val_ratio)


def split_segments(d: DataConfig, cuts: tuple[int, int] | None) -> SegmentFn:
    """The train/val/test segments of ``d``: at the shared ``cuts`` (calendar) or at each symbol's
    row shares (per_symbol)."""
    if cuts is None:
        return lambda times, calendar: chronological_split(len(times), d.train_ratio, d.val_ratio, d.embargo)
    return lambda times, calendar: calendar_split(times, cuts[0], cuts[1], d.embargo)


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat()


def _symbol_times(rows: Rows) -> list[np.ndarray]:
    return [rows.times[rows.rows(k)] for k in range(len(rows.symbols))]


def _split_report(d: DataConfig, cuts: tuple[int, int] | None, rows: Rows, segs: list[dict[str, Segment]]) -> dict[str, Any]:
    """The cut of the data for data_report.json: the mode, the shared cut dates (calendar) and each
    symbol's first and last date per split."""
    out: dict[str, Any] = {"mode": d.split, "embargo_rows": d.embargo}
    if cuts is not None:
        out.update(val_from=_iso(cuts[0]), test_from=_iso(cuts[1]))
    per = {}
    for k, sym in enumerate(rows.symbols):
        t = rows.times[rows.rows(k)]
        per[sym] = {name: ([_iso(t[seg.start]), _iso(t[seg.stop - 1])] if len(seg) else None) for name, seg in segs[k].items()}
    out["symbols"] = per
    return out


def _scale_in_place(rows: Rows, pre: Preprocessing) -> None:
    """Scale features and returns in place (float32), so no second copy of the block exists."""
    for k, sym in enumerate(rows.symbols):
        center, scale = pre.scaler.stats(sym)
        block = rows.features[rows.rows(k)]
        block -= center.astype(np.float32)
        block /= scale.astype(np.float32)
    rows.returns /= np.float32(pre.target_scale)


def _window_set(rows: Rows, segments: list[Segment], pre: Preprocessing, stride: int, min_history: int) -> WindowSet:
    """Index the windows of one split: each window's inputs and targets lie in one symbol's segment.

    ``segments[k]`` is in symbol k's own row numbers. With ``min_history`` < L, windows may start
    up to L - min_history rows before the segment; those steps are masked (left padding)."""
    L, H = pre.seq_len, pre.horizon
    ends, ids = [], []
    seg_first = rows.starts.copy()
    for k, seg in enumerate(segments):
        seg_first[k] += seg.start
        if len(seg) == 0:
            continue
        padded = Segment(seg.start - (L - min_history), seg.stop)
        e = np.asarray(window_ends(padded, L, H, stride), dtype=np.int64)
        if len(e) == 0:
            continue
        ends.append(e + int(rows.starts[k]))
        ids.append(np.full(len(e), k, dtype=np.int32))
    return WindowSet(
        features=rows.features, returns=rows.returns,
        ends=np.concatenate(ends) if ends else np.zeros(0, np.int64),
        symbol_ids=np.concatenate(ids) if ids else np.zeros(0, np.int32),
        segment_first=seg_first, row_times=rows.times, row_close=rows.close,
        symbols=rows.symbols, seq_len=L, horizon=H,
    )


def min_history(d: DataConfig) -> int:
    """Fewest real rows in an input window (``data.min_history``, default ``data.sequence_length``)."""
    return d.sequence_length if d.min_history is None else d.min_history


def rows_needed(d: DataConfig, targets: bool = True) -> RowsNeeded:
    """The one rule for the validated rows a symbol needs: the features' warm-up rows (at least one:
    the first row has no return), then one input window of ``min_history`` real rows, and with
    ``targets`` the ``prediction_horizon`` rows it forecasts, at least ``data.min_rows`` of them.

    ``targets=False`` is a forecast of the future (:func:`latest_windows`): no target rows."""
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
        why = f"feature warm-up {warmup} + data.min_rows {d.min_rows}"
    return RowsNeeded(max(warmup, 1) + usable, why)


def usable_rows(needed: RowsNeeded, d: DataConfig) -> int:
    """The rows of ``needed`` that are left after the feature warm-up (what :func:`build_rows` counts)."""
    return needed.rows - max(feature_warmup(d.features), 1)


def read_frames(d: DataConfig, targets: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read and validate the frames of ``d``, skipping symbols shorter than :func:`rows_needed`
    (the validation report is the second item). No feature is computed here."""
    return load_and_validate(d, rows_needed(d, targets))


def read_feature_tables(d: DataConfig) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray], dict[str, Any]]:
    """Validated frames and their feature matrices through the feature cache (``data.cache_dir``)
    → ({symbol: frame}, {symbol: (n, F) features}, report)."""
    tables, report = feature_tables(d, rows_needed(d))
    cols = feature_columns(d.features)
    frames = {sym: t.drop(columns=cols) for sym, t in tables.items()}
    values = {sym: t[cols].to_numpy(np.float64) for sym, t in tables.items()}
    return frames, values, report


def prepare(
    d: DataConfig,
    frames: FrameSource | None = None,
    segments: SegmentFn | None = None,
    capacity: int | None = None,
) -> PreparedData:
    """Fit the preprocessing on the training split and index the windows of all three splits.

    ``frames``: a mapping or iterable of (symbol, frame) (default: read and validate ``d.data_dir``);
    ``capacity``: an upper bound of their rows, for streaming (see :func:`build_rows`).
    ``segments`` (a :data:`SegmentFn`) overrides the split of ``data.split`` (walk-forward and tune
    folds use it); the scaler is always fit on the "train" rows only. A calendar split's cut dates
    are saved in the preprocessing, so evaluation and prediction cut new data at the same dates.
    """
    check_specs(d.features)
    report: dict[str, Any] = {}
    precomputed = None
    if frames is None:
        frames, precomputed, report = read_feature_tables(d)
    min_hist = min_history(d)
    needed = rows_needed(d)
    rows, skipped = build_rows(frames, d.features, usable_rows(needed, d), capacity, precomputed)
    del frames  # a streamed source is released as it is consumed; a mapping stays with its owner
    if skipped:
        log.warning("skipped %d symbol(s) with too few usable rows: %s", len(skipped), ", ".join(skipped))
    report["skipped_symbols"] = skipped
    if not rows.symbols:
        raise DataError(f"data: no symbol has the {needed.rows} rows one window needs ({needed.why})")
    times = _symbol_times(rows)
    calendar = union_calendar(times)
    cuts = resolve_cuts(d, calendar) if segments is None else None
    seg_fn = segments or split_segments(d, cuts)
    segs = [seg_fn(t, calendar) for t in times]
    data_section = {k: v for k, v in vars(d).items()}
    if cuts is not None:  # the dates, not the ratios: new data is cut where the training data was
        data_section["split_dates"] = {"val": _iso(cuts[0]), "test": _iso(cuts[1])}
    report["split"] = _split_report(d, cuts, rows, segs)
    if d.scale_per_symbol:
        bare = next((sym for sym, seg in zip(rows.symbols, segs) if len(seg["train"]) == 0), None)
        if bare is not None:
            when = f" (its rows start on or after the first validation date {_iso(cuts[0])[:10]})" if cuts else ""
            raise DataError(f"{bare}: no training rows to fit its own scaler{when}; drop it from data.symbols "
                            "or set data.scale_per_symbol=false")
    train_slices = {
        sym: slice(int(rows.starts[k]) + seg["train"].start, int(rows.starts[k]) + seg["train"].stop)
        for k, (sym, seg) in enumerate(zip(rows.symbols, segs))
    }
    train_rets = np.concatenate([rows.returns[sl] for sl in train_slices.values()]).astype(np.float64)
    target_scale = float(train_rets.std()) if train_rets.size > 1 and train_rets.std() > 0 else 1.0
    pre = Preprocessing(
        features=list(d.features),
        feature_columns=feature_columns(d.features),
        scaler=Scaler(kind=d.scaler, per_symbol=d.scale_per_symbol).fit_rows(rows.features, train_slices),
        target_scale=target_scale,
        seq_len=d.sequence_length,
        horizon=d.prediction_horizon,
        data=data_section,
    )
    _scale_in_place(rows, pre)
    sets = {
        name: _window_set(rows, [seg[name] for seg in segs], pre, d.stride if name == "train" else 1, min_hist)
        for name in SPLITS
    }
    if len(sets["train"]) == 0:
        raise DataError("data: the training split yields no window; lower data.sequence_length or add rows")
    report["windows"] = {name: len(ws) for name, ws in sets.items()}
    report["symbols"] = rows.symbols
    return PreparedData(sets["train"], sets["val"], sets["test"], pre, report)


def training_frames(pre: Preprocessing) -> dict[str, pd.DataFrame]:
    """The validated frames of the data ``pre`` was fit on (its ``data_dir`` and validation rules)."""
    return read_frames(pre.data_config())[0]


def apply(pre: Preprocessing, frames: dict[str, pd.DataFrame] | None = None, split: str = "test") -> WindowSet:
    """Windows of ``split`` (or ``"all"``) of ``frames`` with the saved preprocessing (nothing refit);
    ``frames=None``: the data the preprocessing was fit on (:func:`training_frames`)."""
    if frames is None:
        frames = training_frames(pre)
    d = pre.data_config()
    min_hist = min_history(d)
    needed = rows_needed(d)
    rows, _ = build_rows(frames, pre.features, usable_rows(needed, d))
    if not rows.symbols:
        raise DataError(f"data: no symbol has the {needed.rows} rows one window needs ({needed.why})")
    _scale_in_place(rows, pre)
    if split == "all":
        segs = [Segment(0, int(n)) for n in rows.lengths]
    else:
        times = _symbol_times(rows)
        calendar = union_calendar(times)
        seg_fn = split_segments(d, resolve_cuts(d, calendar))
        segs = [seg_fn(t, calendar)[split] for t in times]
    return _window_set(rows, segs, pre, 1, min_hist)


def latest_windows(pre: Preprocessing, frames: dict[str, pd.DataFrame]) -> WindowSet:
    """The most recent input window of each symbol (no targets: they lie in the future); a symbol
    with fewer rows than :func:`rows_needed` (``targets=False``) is a DataError naming it."""
    d = pre.data_config()
    needed = rows_needed(d, targets=False)
    if not frames:
        raise DataError("data: no symbol to forecast")
    for sym, frame in frames.items():
        if len(frame) < needed.rows:
            raise DataError(f"{sym}: {len(frame)} usable rows, the model needs {needed.rows} ({needed.why})")
    rows, skipped = build_rows(frames, pre.features, usable_rows(needed, d))
    if skipped:  # only a frame whose features fail (too short for them) gets here
        raise DataError(f"{skipped[0]}: fewer rows than the {needed.rows} one input window needs ({needed.why})")
    _scale_in_place(rows, pre)
    ends = rows.starts + rows.lengths - 1
    return WindowSet(
        features=rows.features, returns=rows.returns, ends=ends,
        symbol_ids=np.arange(len(rows.symbols), dtype=np.int32), segment_first=rows.starts.copy(),
        row_times=rows.times, row_close=rows.close, symbols=rows.symbols, seq_len=pre.seq_len, horizon=0,
    )
