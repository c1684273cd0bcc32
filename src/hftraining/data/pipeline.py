"""The data flow of training: frames → features → chronological split → scaler fit on train →
windows. ``prepare`` fits; ``apply`` and ``latest_windows`` reuse a saved :class:`Preprocessing`
so that evaluation and prediction see exactly what training saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hftraining.config import DataConfig
from hftraining.data.features import build_features, check_specs
from hftraining.data.io import load_and_validate
from hftraining.data.scaling import Scaler
from hftraining.data.splits import SPLITS, Segment, chronological_split, window_ends
from hftraining.data.windows import WindowSet
from hftraining.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class SymbolSeries:
    """One symbol after features: row t holds features using rows ≤ t only."""

    symbol: str
    times: np.ndarray  # (n,) int64 ns UTC
    features: np.ndarray  # (n, F) float64, unscaled
    close: np.ndarray  # (n,) float64
    returns: np.ndarray  # (n,) float64 log(close_t / close_{t-1})


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
        return cls(
            features=list(d["features"]),
            feature_columns=list(d["feature_columns"]),
            scaler=Scaler.from_dict(d["scaler"]),
            target_scale=float(d["target_scale"]),
            seq_len=int(d["seq_len"]),
            horizon=int(d["horizon"]),
            data=dict(d["data"]),
        )

    def data_config(self) -> DataConfig:
        from hftraining.config import _build_section

        return _build_section(DataConfig, self.data, "data")


@dataclass
class PreparedData:
    train: WindowSet
    val: WindowSet
    test: WindowSet
    preprocessing: Preprocessing
    report: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> WindowSet:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def series_from_frame(symbol: str, frame: pd.DataFrame, specs: list[str]) -> SymbolSeries:
    """Features for one symbol, warm-up rows (and the first row, which has no return) dropped."""
    feats, first = build_features(frame, specs, symbol)
    close_all = frame["close"].to_numpy(np.float64)
    ret_all = np.full_like(close_all, np.nan)
    ret_all[1:] = np.log(close_all[1:] / close_all[:-1])
    start = 1 if first == 0 else 0  # row 0 of the frame has no previous close
    feats = feats.iloc[start:]
    ret = ret_all[first + start :]
    if not np.isfinite(ret).all():
        bad = first + start + int(np.flatnonzero(~np.isfinite(ret))[0])
        raise DataError(f"{symbol}: non-finite log return at row {bad} (close {close_all[bad]!r})")
    times = pd.to_datetime(feats["timestamp"], utc=True).to_numpy("datetime64[ns]").astype(np.int64)
    cols = [c for c in feats.columns if c not in ("timestamp", "close")]
    return SymbolSeries(symbol, times, feats[cols].to_numpy(np.float64), feats["close"].to_numpy(np.float64), ret)


def _segments(n: int, d: DataConfig) -> dict[str, Segment]:
    return chronological_split(n, d.train_ratio, d.val_ratio, d.embargo)


def _window_set(
    series: list[SymbolSeries],
    segments: list[Segment],
    pre: Preprocessing,
    stride: int,
    symbols: list[str],
) -> WindowSet:
    """Concatenate each symbol's segment rows into one array and index the windows inside them."""
    feats, rets, ends, sym_ids, times, closes = [], [], [], [], [], []
    offset = 0
    sym_index = {s: i for i, s in enumerate(symbols)}
    for s, seg in zip(series, segments):
        if len(seg) == 0:
            continue
        rows = slice(seg.start, seg.stop)
        feats.append(pre.scaler.transform(s.features[rows], s.symbol).astype(np.float32))
        rets.append((s.returns[rows] / pre.target_scale).astype(np.float32))
        e = np.asarray(window_ends(seg, pre.seq_len, pre.horizon, stride), dtype=np.int64)
        ends.append(e - seg.start + offset)
        sym_ids.append(np.full(len(e), sym_index[s.symbol], dtype=np.int32))
        times.append(s.times[e])
        closes.append(s.close[e])
        offset += len(seg)
    F = len(pre.feature_columns)

    def cat(parts: list[np.ndarray], dtype, shape=(0,)) -> np.ndarray:
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(shape, dtype)

    return WindowSet(
        features=np.ascontiguousarray(cat(feats, np.float32, (0, F))),
        returns=cat(rets, np.float32),
        ends=cat(ends, np.int64),
        symbol_ids=cat(sym_ids, np.int32),
        times=cat(times, np.int64),
        last_close=cat(closes, np.float64),
        symbols=symbols,
        seq_len=pre.seq_len,
        horizon=pre.horizon,
    )


def build_series(frames: dict[str, pd.DataFrame], specs: list[str]) -> list[SymbolSeries]:
    return [series_from_frame(sym, frame, specs) for sym, frame in frames.items()]


def read_frames(d: DataConfig) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read (and, where the validating loader is available, validate) the frames of ``d``."""
    return load_and_validate(d)


def prepare(d: DataConfig, frames: dict[str, pd.DataFrame] | None = None) -> PreparedData:
    """Fit the preprocessing on the training split and cut the windows of all three splits."""
    check_specs(d.features)
    report: dict[str, Any] = {}
    if frames is None:
        frames, report = read_frames(d)
    series = build_series(frames, d.features)
    min_rows = max(d.min_rows, d.sequence_length + d.prediction_horizon)
    kept = [s for s in series if len(s.times) >= min_rows]
    skipped = sorted(set(frames) - {s.symbol for s in kept})
    if skipped:
        log.warning("skipped %d symbol(s) with fewer than %d usable rows: %s", len(skipped), min_rows, ", ".join(skipped))
    report["skipped_symbols"] = skipped
    if not kept:
        raise DataError(
            f"data: no symbol has the {min_rows} rows after feature warm-up that one window of "
            f"data.sequence_length={d.sequence_length} + data.prediction_horizon={d.prediction_horizon} needs"
        )
    segs = [_segments(len(s.times), d) for s in kept]
    train_rows = {s.symbol: s.features[seg["train"].start : seg["train"].stop] for s, seg in zip(kept, segs)}
    train_rets = np.concatenate([s.returns[seg["train"].start : seg["train"].stop] for s, seg in zip(kept, segs)])
    target_scale = float(train_rets.std()) if train_rets.size > 1 and train_rets.std() > 0 else 1.0
    from hftraining.data.features import feature_columns

    pre = Preprocessing(
        features=list(d.features),
        feature_columns=feature_columns(d.features),
        scaler=Scaler(kind=d.scaler, per_symbol=d.scale_per_symbol).fit(train_rows),
        target_scale=target_scale,
        seq_len=d.sequence_length,
        horizon=d.prediction_horizon,
        data={k: v for k, v in vars(d).items()},
    )
    symbols = [s.symbol for s in kept]
    sets = {
        name: _window_set(kept, [seg[name] for seg in segs], pre, d.stride if name == "train" else 1, symbols)
        for name in SPLITS
    }
    if len(sets["train"]) == 0:
        raise DataError("data: the training split yields no window; lower data.sequence_length or add rows")
    report["windows"] = {name: len(ws) for name, ws in sets.items()}
    report["symbols"] = symbols
    return PreparedData(sets["train"], sets["val"], sets["test"], pre, report)


def apply(pre: Preprocessing, frames: dict[str, pd.DataFrame], split: str = "test") -> WindowSet:
    """Windows of ``split`` (or ``"all"``) of new frames, with the saved preprocessing (nothing refit)."""
    d = pre.data_config()
    series = [s for s in build_series(frames, pre.features) if len(s.times) >= pre.seq_len + pre.horizon]
    if not series:
        raise DataError(f"data: no symbol has the {pre.seq_len + pre.horizon} rows one window needs")
    if split == "all":
        segs = [Segment(0, len(s.times)) for s in series]
    else:
        segs = [_segments(len(s.times), d)[split] for s in series]
    return _window_set(series, segs, pre, 1, [s.symbol for s in series])


def latest_windows(pre: Preprocessing, frames: dict[str, pd.DataFrame]) -> WindowSet:
    """The most recent input window of each symbol (no targets: they lie in the future)."""
    series = build_series(frames, pre.features)
    short = [s.symbol for s in series if len(s.times) < pre.seq_len]
    if short:
        raise DataError(f"{short[0]}: fewer than data.sequence_length={pre.seq_len} rows after feature warm-up")
    feats, rets, ends, times, closes = [], [], [], [], []
    offset = 0
    for s in series:
        rows = slice(len(s.times) - pre.seq_len, len(s.times))
        feats.append(pre.scaler.transform(s.features[rows], s.symbol).astype(np.float32))
        rets.append((s.returns[rows] / pre.target_scale).astype(np.float32))
        offset += pre.seq_len
        ends.append(offset - 1)
        times.append(s.times[-1])
        closes.append(s.close[-1])
    return WindowSet(
        features=np.ascontiguousarray(np.concatenate(feats)),
        returns=np.concatenate(rets),
        ends=np.asarray(ends, dtype=np.int64),
        symbol_ids=np.arange(len(series), dtype=np.int32),
        times=np.asarray(times, dtype=np.int64),
        last_close=np.asarray(closes, dtype=np.float64),
        symbols=[s.symbol for s in series],
        seq_len=pre.seq_len,
        horizon=0,
    )
