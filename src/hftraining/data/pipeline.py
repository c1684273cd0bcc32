"""The data flow of training: frames → features → chronological split → scaler fit on train →
windows. ``prepare`` fits; ``apply`` and ``latest_windows`` reuse a saved :class:`Preprocessing`
so that evaluation and prediction see exactly what training saw.

:meth:`~hftraining.data.rows.RowsNeeded.of` is the one rule for how many rows a symbol needs; the
validator, the feature store, training, evaluation and prediction all apply it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from hftraining.core.config import DataConfig, duration_ns, saved_data_section, section_from_dict, shown, split_date_ns
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.features import (
    CALENDAR_VERSION, OWN_SPACING_GAPS, PANEL_FEATURES, SETTLE_MEASURABLE, bar_spacing, calendar_rule_change,
    calendar_rule_matters, EmptyVolume, check_specs, drop_volume_features, feature_columns, panel_specs, parse_spec,
    settle_unknown, utc_stamps, volume_features, volume_is_empty,
)
from hftraining.data.labels import CHANGED_IN, GROUPING_VERSION, LABEL_VERSION, PER_DATE, row_labels
from hftraining.data.provenance import check_source_rows, data_changes, source_rows
from hftraining.data.rows import FrameSource, Rows, RowsNeeded, build_rows, min_history
from hftraining.data.scaling import Scaler, check_own_rows, target_scale
from hftraining.data.sources import (
    load_and_validate, long_gaps_found, long_gaps_listed, panel_gaps, panel_long_gaps, unread_files,
)
from hftraining.data.splits import (
    SPLITS, Fold, Segment, calendar_cuts, calendar_fold, calendar_purged_fold, calendar_split, chronological_split,
    purged_kfold, purged_split, row_fold, rows_before, rows_closed_by, union_calendar, window_ends,
)
from hftraining.data.store import fitted_statistics, load_rows, window_index
from hftraining.data.validate import first_volume
from hftraining.data.windows import DeviceRows, WindowSet, device_rows_for, index_windows, window_runs

__all__ = ["FrameSource", "Rows", "build_rows"]  # re-exported: the rows of a run are built here or in the store

log = logging.getLogger(__name__)


@dataclass
class Preprocessing:
    """Everything needed to turn raw frames into model inputs; saved as preprocessing.json."""

    features: list[str]
    feature_columns: list[str]
    scaler: Scaler
    target_scale: float  # std of the training labels (log returns by default); targets are labels / target_scale
    seq_len: int
    horizon: int
    data: dict[str, Any]  # the data section used for training (split ratios, embargo, ...)
    fold: Fold | None = None  # the walk-forward fold the data was cut as (None: the split of ``data``)
    symbol_split_dates: dict[str, dict[str, str]] | None = None
    """``data.split: per_symbol``: each training symbol's first validation and test dates
    (``{"AEM": {"val": iso, "test": iso}}``; a cut past its last row is that row's time + 1 ns), so
    new data of that symbol is cut at the same dates (:func:`apply`), as a calendar split's
    ``split_dates``; None for a calendar split, a fold, or a folder written before they were kept."""
    source_rows: dict[str, dict[str, Any]] | None = None
    """Each symbol's rows as training read them (:func:`source_rows`): their count, last date and a
    digest of their dates and closes, so that reading ``data.data_dir`` again can say what changed since
    (:func:`data_changes`); None for a folder written before they were kept."""
    bar_seconds: float | None = None
    """The median spacing of the training rows' consecutive bars, in seconds (86,400 for daily bars):
    new data whose bars are spaced otherwise is named in a warning (:func:`check_bar_spacing`); None
    for a folder written before it was kept."""
    symbol_bar_seconds: dict[str, float] | None = None
    """Each training symbol's own bar spacing in seconds, of its frame's last bars
    (:func:`symbol_bar_seconds`): training read a stamp at UTC midnight as a date or an instant by the
    symbol's own bars up to it (:func:`~hftraining.data.features.date_stamps`), so the first rows of a
    forecast's frame of that symbol, which have too few bars before them to tell, are read by its spacing,
    not the panel's pooled ``bar_seconds`` (a daily symbol of a panel of mostly intraday ones); None for a
    folder written before it was kept (the pooled spacing for every symbol, as then; folders of
    calendar_version 2 kept the spacing of all the frame's bars)."""
    calendar_version: int = CALENDAR_VERSION
    """How its time features read a stamp (:data:`~hftraining.data.features.CALENDAR_VERSION`; 1 for a folder
    written before it was kept): a request to a model of version 2 whose rows this version reads otherwise
    is refused (:func:`check_calendar_rule`)."""
    grouping_version: int = GROUPING_VERSION
    """How its labels taken across symbols and its ``market`` features grouped a panel of dates beside
    instants (:data:`~hftraining.data.labels.GROUPING_VERSION`; 1 for a folder written before it was kept): a
    request to a model of version 1 whose rows this version groups otherwise is refused
    (:func:`check_grouping_rule`)."""
    closures: list[list[str]] | None = None
    """The gaps the training panel shared (:func:`~hftraining.data.sources.panel_gaps`: an exchange's
    closure, ``[[last stamp before, first stamp after], ...]`` ISO UTC), which training named for no symbol:
    a forecast is silent on them too, though a request of one symbol cannot tell a closure from a halt
    (:func:`latest_windows`); None without one, or for a folder written before they were kept."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "features": self.features,
            "feature_columns": self.feature_columns,
            "scaler": self.scaler.to_dict(),
            "target_scale": self.target_scale,
            "seq_len": self.seq_len,
            "horizon": self.horizon,
            "data": self.data,
            "label_version": LABEL_VERSION,  # the labels' formulas this model was trained on
            "calendar_version": self.calendar_version,  # how its time features read a stamp (a date: its own day)
            "grouping_version": self.grouping_version,  # how a date beside instants is grouped across symbols
        }
        if self.fold is not None:
            out["fold"] = self.fold.to_dict()
        if self.symbol_split_dates is not None:
            out["symbol_split_dates"] = self.symbol_split_dates
        if self.source_rows is not None:
            out["source_rows"] = self.source_rows
        if self.bar_seconds is not None:
            out["bar_seconds"] = self.bar_seconds
        if self.symbol_bar_seconds is not None:
            out["symbol_bar_seconds"] = self.symbol_bar_seconds
        if self.closures is not None:
            out["closures"] = self.closures
        return out

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
            fold=Fold.from_dict(d["fold"]) if "fold" in d else None,
            symbol_split_dates=d.get("symbol_split_dates"),
            source_rows=d.get("source_rows"),
            bar_seconds=float(d["bar_seconds"]) if isinstance(d.get("bar_seconds"), (int, float)) else None,
            symbol_bar_seconds=(check_symbol_bar_seconds(d["symbol_bar_seconds"], "preprocessing.json")
                                if "symbol_bar_seconds" in d else None),
            calendar_version=d.get("calendar_version", 1),
            grouping_version=check_grouping_version(d.get("grouping_version", 1), "preprocessing.json"),
            closures=[[_iso(a), _iso(b)] for a, b in check_closures(d["closures"], "preprocessing.json")]
            if "closures" in d else None,
        )

    def data_config(self) -> DataConfig:
        """The data section the preprocessing was fit with (keys of newer versions take their defaults)."""
        return section_from_dict(DataConfig, saved_data_section(self.data), "data")


@dataclass
class PreparedData:
    train: WindowSet
    val: WindowSet
    test: WindowSet
    preprocessing: Preprocessing
    report: dict[str, Any] = field(default_factory=dict)
    placement: str = "host"
    """Where batches are made: the host, or what :meth:`on_device` chose."""

    def split(self, name: str) -> WindowSet:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def on_device(self, device, d: DataConfig) -> "PreparedData":
        """The same data with batches made on ``device`` (``data.device_cache``: the rows copied there
        once when they fit under ``data.device_cache_max_gb``; else pinned host batches). On the CPU,
        ``self``. Where the rows went is logged and kept in ``self.placement``."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        rows = device_rows_for(self.train, device, d.device_cache_max_gb * 2**30) if d.device_cache else None
        gib = self.train.features.nbytes / 2**30
        if rows is not None:
            placement = f"rows on {device} ({gib:.2f} GiB)"
        elif not d.device_cache:
            placement = f"rows on the host, batches copied from pinned memory to {device} (data.device_cache=false)"
        else:
            placement = (f"rows on the host, batches copied from pinned memory to {device} "
                         f"({gib:.2f} GiB > data.device_cache_max_gb={d.device_cache_max_gb:g})")
        t = self.train

        def own(ws: WindowSet) -> DeviceRows | None:  # the rows copied from train serve a split that shares them
            same = (ws.features is t.features and ws.label_rows is t.label_rows and ws.target_scale == t.target_scale
                    and all(a is b or (a is not None and b is not None and np.array_equal(a, b))
                            for a, b in ((ws.center, t.center), (ws.scale, t.scale))))
            return rows if same else None

        return PreparedData(t.on_device(device, rows), self.val.on_device(device, own(self.val)),
                            self.test.on_device(device, own(self.test)), self.preprocessing, self.report, placement)


SegmentFn = Callable[[np.ndarray, np.ndarray, int], dict[str, Segment]]
"""(one symbol's row times, the panel's calendar, its bar length (0: unknown):
:func:`split_bars`) → {"train": Segment, "val": ..., "test": ...} in the symbol's own row numbers (times
are int64 ns UTC, the calendar their sorted union)."""


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
        return lambda times, calendar, bar: chronological_split(len(times), d.train_ratio, d.val_ratio, d.embargo)
    return lambda times, calendar, bar: calendar_split(times, cuts[0], cuts[1], d.embargo, bar)


def symbol_split_dates(rows: Rows, segs: list[dict[str, Segment]]) -> dict[str, dict[str, str]]:
    """Each symbol's first validation and test dates of a per-symbol split (the times of the rows
    where its row-share segments cut; the last row's time + 1 ns for a cut past its last row):
    :func:`calendar_split` at these dates gives the same segments of the same rows."""
    out = {}
    for k, sym in enumerate(rows.symbols):
        t = rows.times[rows.rows(k)]
        at = lambda i: int(t[i]) if i < len(t) else int(t[-1]) + 1  # noqa: E731
        out[sym] = {"val": _iso(at(segs[k]["train"].stop)), "test": _iso(at(segs[k]["val"].stop))}
    return out


def check_closures(raw: Any, where: str) -> list[list[int]]:
    """``closures`` of a preprocessing.json (untrusted) → ``[[from ns, to ns], ...]``; a DataError naming
    ``where`` and the entry for anything but pairs of UTC stamps, the first before the second (never
    ignored: a wrong one would silence a forecast's warning of a halt)."""
    if not isinstance(raw, list):
        raise DataError(f"{where}: closures: expected [[from, to], ...], got {shown(raw)}")
    out = []
    for i, pair in enumerate(raw):
        try:
            if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise ValueError
            a, b = (pd.Timestamp(x) for x in pair)
            if a.tz is None or b.tz is None or not a < b:
                raise ValueError
        except ValueError:
            raise DataError(f"{where}: closures[{i}]: expected [from, to] as ISO stamps with a zone, from before to, "
                            f"got {shown(pair)}") from None
        out.append([int(a.value), int(b.value)])
    return out


def check_symbol_split_dates(raw: Any, where: str) -> dict[str, tuple[int, int]]:
    """``symbol_split_dates`` of a preprocessing.json (untrusted) → {symbol: (val ns, test ns)};
    a ConfigError naming ``where`` (when given) and the symbol for anything but dates with val <= test."""
    prefix = f"{where}: symbol_split_dates" if where else "symbol_split_dates"
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected {{symbol: {{val, test}}}}, got {shown(raw)}")
    out = {}
    for sym, cut in raw.items():
        key = f"{prefix}.{sym}"
        if not isinstance(cut, dict) or set(cut) != {"val", "test"}:
            raise ConfigError(f"{key}: expected {{val, test}}, got {shown(cut)}")
        val, test = split_date_ns(cut["val"], f"{key}.val"), split_date_ns(cut["test"], f"{key}.test")
        if val > test:
            raise ConfigError(f"{key}: val {cut['val']} is after test {cut['test']}")
        out[sym] = (val, test)
    return out


def fold_split(d: DataConfig, fold: Fold) -> SegmentFn:
    """The segments of walk-forward ``fold`` for each symbol, cut at shared dates (``data.split:
    calendar``: :func:`~hftraining.data.splits.calendar_fold`,
    :func:`~hftraining.data.splits.calendar_purged_fold`) or in each symbol's own rows
    (:func:`~hftraining.data.splits.row_fold`, :func:`~hftraining.data.splits.purged_kfold`); with
    ``fold.before_test``, of the rows before ``d``'s own test split only (its first test date, or
    each symbol's first test row), so no fold reads or scores a row of it."""
    cut = _folds(d, fold)
    if not fold.before_test:
        return cut
    def before_test(t: np.ndarray, cal: np.ndarray, bar: int) -> dict[str, Segment]:
        cuts = resolve_cuts(d, cal)
        if cuts is None:  # per_symbol: the symbol's first test row, the embargo before it excluded
            n = split_segments(d, None)(t, cal, bar)["val"].stop
            return cut(t[:n], cal, bar)
        return cut(t[:rows_closed_by(t, cuts[1], bar)], cal[cal < cuts[1]], bar)

    return before_test


def _folds(d: DataConfig, fold: Fold) -> SegmentFn:
    """:func:`fold_split` over all of each symbol's rows."""
    L, H, emb, k, n = d.sequence_length, d.prediction_horizon, d.embargo, fold.k, fold.n_folds
    if fold.scheme == "purged_kfold":
        if d.split == "calendar":
            return lambda t, cal, bar: purged_split(calendar_purged_fold(t, cal, k, n, L, H, emb, bar), len(t))

        def per_symbol(t: np.ndarray, cal: np.ndarray, bar: int) -> dict[str, Segment]:
            folds = purged_kfold(len(t), n, L, H, emb)
            return purged_split(folds[k] if folds else None, len(t))

        return per_symbol
    if d.split == "calendar":
        return lambda t, cal, bar: calendar_fold(t, cal, k, n, L, emb, d.train_ratio, d.val_ratio, fold.scheme, bar)
    return lambda t, cal, bar: row_fold(len(t), k, n, L, emb, d.train_ratio, d.val_ratio, fold.scheme)


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat()


TRAIN_AFTER_TEST = "train_after_test"
"""data_report.json's name (``split.symbols.<symbol>``) of a purged k-fold fold's training rows after its test
block: the fold has no validation rows (``val`` is null), as its ``windows.val`` of 0 says."""


def _split_report(d: DataConfig, cuts: tuple[int, int] | None, rows: Rows, segs: list[dict[str, Segment]],
                  purged: bool = False) -> dict[str, Any]:
    """The cut of the data for data_report.json: the mode, the shared cut dates (calendar) and each
    symbol's first and last date per split. ``purged``: the fold of purged k-fold that ``segs`` cut, whose
    "val" segment holds the training rows after the test block (:func:`~hftraining.data.splits.purged_split`,
    joined to the training windows by the walk-forward): said as :data:`TRAIN_AFTER_TEST`, the validation
    split as none (they were listed as ``val``, a validation period of a fold that has none)."""
    out: dict[str, Any] = {"mode": d.split, "embargo_rows": d.embargo}
    if cuts is not None:
        out.update(val_from=_iso(cuts[0]), test_from=_iso(cuts[1]))
    per = {}
    for k, sym in enumerate(rows.symbols):
        t = rows.times[rows.rows(k)]
        per[sym] = {name: ([_iso(t[seg.start]), _iso(t[seg.stop - 1])] if len(seg) else None) for name, seg in segs[k].items()}
        if purged:
            per[sym][TRAIN_AFTER_TEST] = per[sym]["val"]
            per[sym]["val"] = None
    out["symbols"] = per
    return out


def _scaling(rows: Rows, pre: Preprocessing, read: np.ndarray | None = None) -> dict[str, Any]:
    """The per-symbol (center, scale) of ``pre`` as (S, F) float32 arrays and the target scale: the
    windows scale each batch as they gather it (the rows themselves are never written). ``read``: the
    symbol ids the windows read (None: every symbol); a symbol no window reads and whose own scaler was
    not fitted (a walk-forward fold after its last rows: :func:`prepare`) gets the identity, never applied;
    one a window reads without statistics is the scaler's DataError naming it."""
    F = rows.features.shape[1]
    unread = set(range(len(rows.symbols))) - set(np.unique(read).tolist()) if read is not None else set()
    unfitted = lambda k, sym: k in unread and pre.scaler.per_symbol and sym not in pre.scaler.params  # noqa: E731
    stats = [(np.zeros(F), np.ones(F)) if unfitted(k, sym) else pre.scaler.stats(sym) for k, sym in enumerate(rows.symbols)]
    center = np.stack([c for c, _ in stats]).astype(np.float32) if stats else np.zeros((0, F), np.float32)
    scale = np.stack([s for _, s in stats]).astype(np.float32) if stats else np.ones((0, F), np.float32)
    return {"center": center, "scale": scale, "target_scale": pre.target_scale}


def _window_set(rows: Rows, segments: list[Segment], pre: Preprocessing, stride: int, min_history: int,
                max_gap: int | None = None, store: str | None = None, labels: np.ndarray | None = None) -> WindowSet:
    """The windows of one split (:func:`~hftraining.data.windows.index_windows`; remembered in the feature store entry ``store``
    when the rows come from one: :func:`hftraining.data.store.window_index`) with the rows' ``labels``
    (:func:`~hftraining.data.labels.row_labels`; None: the returns)."""
    L, H = pre.seq_len, pre.horizon
    # "segments": the rows windows may read (what the store checks windows against); the first target
    # rows only when they differ, so a split without lookback keeps the key it always had
    spec = {"segments": [[s.read_from, s.stop] for s in segments], "L": L, "H": H, "stride": stride,
            "min_history": min_history, "max_gap": max_gap, "rows": int(len(rows.returns))}
    if any(s.lookback for s in segments):
        spec["targets_from"] = [s.start for s in segments]
    dtype = np.int32 if len(rows.returns) < 2**31 else np.int64
    ends, ids = window_index(store, spec, lambda: index_windows(rows, segments, L, H, stride, min_history, max_gap), dtype)
    return WindowSet(
        features=rows.features, returns=rows.returns, ends=ends, symbol_ids=ids,
        segment_first=rows.starts + np.array([seg.read_from for seg in segments], dtype=np.int64),
        row_times=rows.times, row_close=rows.close,
        symbols=rows.symbols, seq_len=pre.seq_len, horizon=pre.horizon, **_scaling(rows, pre, ids),
        labels=labels, target=pre.data.get("target", DataConfig.target),
        run_starts=window_runs(rows, segments, L, H, min_history, max_gap),
    )


def _labels(rows: Rows, d: DataConfig) -> np.ndarray | None:
    """The label of every row of ``rows`` for ``data.target`` (None: the returns themselves)."""
    return row_labels(rows.returns, rows.times, d.target, rows.dates)


def _max_gap(d: DataConfig) -> int | None:
    return None if d.max_gap is None else duration_ns(d.max_gap, "data.max_gap")


def _fit_statistics(rows: Rows, train_slices: dict[str, slice], d: DataConfig, store: str | None,
                    labels: np.ndarray | None = None, idle: frozenset[str] = frozenset()) -> tuple[Scaler, float, list[str]]:
    """The scaler and the target scale (of ``labels``, or of the returns), fitted on the training rows
    ``train_slices`` of ``rows`` (remembered in the feature store entry ``store`` when the rows come
    from one: :func:`hftraining.data.store.fitted_statistics`). ``idle``: symbols no window reads,
    which get no scaler of their own (``data.scale_per_symbol``; a model given them refuses them). The third
    item: the columns the robust scaler divided by their standard deviation (:attr:`Scaler.by_std`)."""
    spec = {"scaler": d.scaler, "per_symbol": d.scale_per_symbol,
            "train": [[sym, sl.start, sl.stop] for sym, sl in train_slices.items()]}
    if d.target != "return":  # the key of older entries stays as it was
        spec["target"] = d.target
        spec["label_version"] = CHANGED_IN.get(d.target, 1)  # the label's formula: a change refits its scale

    if d.scaler == "robust":  # entries from before the robust scaler recorded its by_std columns are fitted again
        spec["robust_rule"] = 2
    own = {sym: sl for sym, sl in train_slices.items() if sym not in idle} if d.scale_per_symbol else train_slices
    if d.scale_per_symbol:  # also where the store remembers statistics fitted before this check
        check_own_rows({sym: sl.stop - sl.start for sym, sl in own.items() if sl.stop > sl.start})
        if idle:  # the key of other entries stays as it was
            spec["idle"] = sorted(idle)

    def fit() -> dict[str, Any]:
        scaler = Scaler(kind=d.scaler, per_symbol=d.scale_per_symbol).fit_rows(rows.features, own,
                                                                               names=feature_columns(d.features))
        return {"scaler": scaler.to_dict(), "by_std": scaler.by_std,
                "target_scale": target_scale(rows.returns if labels is None else labels, train_slices)}

    stats = fitted_statistics(store, spec, fit)
    return Scaler.from_dict(stats["scaler"]), float(stats["target_scale"]), list(stats.get("by_std") or [])


def read_frames(d: DataConfig, targets: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read and validate the frames of ``d``, skipping symbols shorter than :meth:`RowsNeeded.of`
    (the validation report is the second item). No feature is computed here."""
    return load_and_validate(d, RowsNeeded.of(d, targets))


def data_rows(d: DataConfig) -> tuple[Rows, dict[str, Any]]:
    """The feature rows of ``d.data_dir`` through the feature store (``data.cache_dir``; in memory
    when it is None) → (rows, report with ``skipped_symbols`` and ``cache``)."""
    return load_rows(d, RowsNeeded.of(d))


@dataclass
class PanelRows:
    """A panel's feature rows, read once through the feature store, for several preparations of the
    same data (walk-forward folds, tune trials): each :func:`prepare` cuts its own splits from them
    instead of reading and computing every symbol's features again."""

    d: DataConfig  # the data section, without the volume features when a symbol has no volume
    rows: Rows
    report: dict[str, Any]
    dropped: dict[str, str]  # dropped feature spec → why
    volume_from: dict[str, int | None] | None = None
    """Each symbol's first row with volume, ns (None: no row has volume); None: not known (no check
    of the volume before the first validation date, :func:`prepare`)."""
    lean: "PanelRows | None" = field(default=None, repr=False, compare=False)
    """The same panel without its volume features, once a cut has needed it (shared by the folds)."""


def panel_rows(d: DataConfig) -> PanelRows:
    """The rows of ``d`` (:func:`data_rows`: through the store); a symbol without volume drops the
    volume features for all (:func:`~hftraining.data.features.drop_volume_features`). The store
    remembers which inputs hold one, so only the first run of them reads up to it before the build
    without volume features. A symbol whose volume starts after the first validation date is
    :func:`prepare`'s to find, once the cut is known. Files of a data folder that look like prices but are not
    read (:func:`~hftraining.data.sources.unread_files`: ``BIDU.csv.zip``) are a warning, and ``unread_files``
    in the report."""
    check_specs(d.features)
    try:
        rows, report = data_rows(d)
        dropped: dict[str, str] = {}
    except EmptyVolume as e:
        d, dropped = drop_volume_features(d, [e.symbol])
        rows, report = data_rows(d)
    volume_from = report.pop("volume_from", None)
    unread = unread_files(d.data_dir)  # said each run: the store's key knows only the files read
    if unread is not None:
        report["unread_files"] = unread
        log.warning("%s", unread["why"])
    return PanelRows(d, rows, report, dropped, volume_from)


def _lean_panel(panel: PanelRows, d: DataConfig, dropped: dict[str, str]) -> PanelRows:
    """``panel`` without the volume features (``d``): read once through the store, then kept on ``panel``."""
    if panel.lean is None or panel.lean.d.features != d.features:
        rows, report = data_rows(d)
        report.pop("volume_from", None)
        if "unread_files" in panel.report:  # said once, by panel_rows
            report["unread_files"] = panel.report["unread_files"]
        panel.lean = PanelRows(d, rows, report, {**panel.dropped, **dropped})
    return panel.lean


def no_volume_before_validation(rows: Rows, volume_from: Mapping[str, int | None],
                                segs: list[dict[str, Segment]], purged: bool = False) -> list[str]:
    """The symbols with rows before their first validation row (the rows of ``segs``' training segment
    and those before it; ``purged``: every row the folds read) none of which reports volume
    (``volume_from``: each symbol's first row with volume, :func:`~hftraining.data.validate.first_volume`).
    The "no volume" rule of training reads these rows only, so a volume column that is empty (or 0)
    up to some date in the validation or test period decides alike whether the rows after are there;
    a symbol with no row before it says nothing about the training period."""
    out = []
    for k, sym in enumerate(rows.symbols):
        if sym not in volume_from:
            continue
        seg = segs[k]
        stop = max(s.stop for s in seg.values()) if purged else seg["train"].stop
        if stop <= 0:
            continue
        t = rows.times[rows.rows(k)]
        first = volume_from[sym]
        if first is None or (stop < len(t) and first >= int(t[stop])):
            out.append(sym)
    return out


def prepare(
    d: DataConfig,
    frames: FrameSource | PanelRows | None = None,
    fold: Fold | None = None,
    capacity: int | None = None,
) -> PreparedData:
    """Fit the preprocessing on the training split and index the windows of all three splits.

    ``frames``: the rows of :func:`panel_rows` (the default, through the feature store), or a mapping
    or iterable of (symbol, frame) validated elsewhere;
    ``capacity``: an upper bound of their rows, for streaming (see :func:`build_rows`).
    ``fold``: cut the data as that walk-forward fold (:func:`fold_split`; walk-forward and tune
    folds) instead of by ``data.split``; the scaler is always fit on the "train" rows only.
    ``data.stride`` thins every window trained on (purged k-fold's after its test block too); under
    ``data.batching: dates`` it counts as-of dates (:meth:`WindowSet.every_nth_date`). A
    calendar split's cut dates are saved in the preprocessing, so evaluation and prediction cut new
    data at the same dates; a fold is saved instead, so evaluation scores the fold's own test block.

    A symbol without volume drops the volume features for every symbol: one whose whole volume column
    is empty (validation, :func:`panel_rows`), and one none of whose rows before its first validation
    row reports volume (:func:`no_volume_before_validation`; a walk-forward fold decides on its first
    fold's cut, so the folds keep one feature list; purged k-fold, which trains on rows after its test
    blocks, on every row its folds read), so rows dated in the validation or test period never decide
    the features trained on. A streamed source (neither a mapping nor :class:`PanelRows`) is checked
    for an empty column only. The cut is then made again on the rows without the volume features.
    """
    check_specs(d.features)
    unknown = settle_unknown(d.features)
    if unknown:  # trains all the same; said now, not first at prediction time
        log.warning("data.features: %s do not settle within %d rows: every forecast of this model will depend on "
                    "the whole history it is given (its settled_rows is unknown)", ", ".join(unknown), SETTLE_MEASURABLE)
    dropped: dict[str, str] = {}  # a symbol without volume drops the volume features for all (features.py)
    volume_from: Mapping[str, int | None] | None = None  # each symbol's first row with volume (None: not known)
    if frames is None:
        frames = panel_rows(d)
    if isinstance(frames, Mapping):
        d, dropped = drop_volume_features(d, [s for s, f in frames.items() if volume_is_empty(f)])
        if volume_features(d.features):  # frames of a library caller may have no volume column at all
            volume_from = {s: first_volume(f) for s, f in frames.items()}
    if isinstance(frames, PanelRows):
        d, rows, report, dropped = frames.d, frames.rows, dict(frames.report), dict(frames.dropped)
        volume_from = frames.volume_from
    needed = RowsNeeded.of(d)
    if isinstance(frames, PanelRows):
        skipped = report.pop("skipped_symbols")
    else:
        report = {}
        rows, skipped = build_rows(frames, d.features, needed.usable, capacity, tz=d.timezone)

    def cut(rows: Rows) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int] | None, list[dict[str, Segment]]]:
        times = rows.symbol_times()
        calendar = union_calendar(times)
        cuts = resolve_cuts(d, calendar) if fold is None else None
        seg_fn = split_segments(d, cuts) if fold is None else fold_split(d, fold)
        return times, calendar, cuts, [seg_fn(t, calendar, bar) for t, bar in zip(times, split_bars(times))]

    times, calendar, cuts, segs = cut(rows)
    if volume_from is not None and volume_features(d.features) and rows.symbols:
        # "no volume" is decided on the rows before the first validation date (a walk-forward's: its first
        # fold's, so that every fold keeps one feature list), never on the rows after it
        purged = fold is not None and fold.scheme == "purged_kfold"
        first = segs if fold is None or purged else [fold_split(d, dataclasses.replace(fold, k=0))(t, calendar, bar)
                                                     for t, bar in zip(times, split_bars(times))]
        late = no_volume_before_validation(rows, volume_from, first, purged)
        if late:
            d, more = drop_volume_features(d, late, "no volume before the first validation date")
            dropped.update(more)
            needed = RowsNeeded.of(d)
            if isinstance(frames, PanelRows):
                lean = _lean_panel(frames, d, more)
                rows, report = lean.rows, dict(lean.report)
                skipped = report.pop("skipped_symbols")
            else:
                rows, skipped = build_rows(frames, d.features, needed.usable, capacity, tz=d.timezone)
            times, calendar, cuts, segs = cut(rows)
    del frames  # a streamed source is released as it is consumed; a mapping stays with its owner
    min_hist = min_history(d)
    if skipped:
        log.warning("skipped %d symbol(s) with too few usable rows: %s", len(skipped), ", ".join(skipped))
    unusable = report.get("too_few_rows") or {}
    if unusable:  # left out by validation (too few rows kept, or every row dropped): said, not only in data_report.json
        log.warning("skipped %d symbol(s) that validation left unusable: %s", len(unusable),
                    "; ".join(f"{s}: {why}" for s, why in unusable.items()))
    report["skipped_symbols"] = skipped
    crossed = [what for what, used in (("market features", bool(panel_specs(d.features))),
                                       (f"labels (data.target={d.target})", d.target != "return")) if used]
    mixed = mixed_spacings(rows) if crossed else {}
    if mixed:  # said, not refused: a panel of one spacing per symbol is the supported case
        report["mixed_spacings"] = mixed
        by = sorted(mixed.items(), key=lambda kv: kv[1])
        early = read_early(rows, mixed)
        if early:
            why = (f"a bar is stamped at its start, so the shorter bars stamped during a longer bar stamped at an "
                   f"instant, or during a bar of several days stamped with its date, read its return before it closes "
                   f"({', '.join(early[:5])}{f' and {len(early) - 5} more' if len(early) > 5 else ''})")
        else:  # daily bars stamped with their dates beside shorter bars (instants): none is read before it closes
            why = ("its daily bars are stamped with their dates, which the shorter bars read only once their UTC day is "
                   "over (a date and an instant at one stamp are two cross-sections), so no bar reads a return before "
                   "it closes, but one date's cross-section still holds returns over other spans")
        log.warning("data: the panel mixes bars of other spacings (%s: %s; %s: %s), and its %s are computed across the "
                    "symbols of each timestamp: %s; give every symbol bars of one spacing",
                    by[0][0], span_text(by[0][1]), by[-1][0], span_text(by[-1][1]), " and ".join(crossed), why)
    report["dropped_features"] = dropped
    report["calendar_version"] = CALENDAR_VERSION  # a resumed run's time features must be computed alike
    report["grouping_version"] = GROUPING_VERSION  # and its labels and market features grouped alike
    if not rows.symbols:
        raise DataError(f"data: no symbol has the {needed.rows} rows one window needs ({needed.why})")
    data_section = {k: v for k, v in vars(d).items()}
    if cuts is not None:  # the dates, not the ratios: new data is cut where the training data was
        data_section["split_dates"] = {"val": _iso(cuts[0]), "test": _iso(cuts[1])}
    # per_symbol: each symbol's own dates, so new rows of a symbol are cut where its training rows were
    per_symbol_dates = symbol_split_dates(rows, segs) if cuts is None and fold is None else None
    report["split"] = _split_report(d, cuts, rows, segs, purged=fold is not None and fold.scheme == "purged_kfold")
    # a symbol no window of this cut reads (a walk-forward fold after its last rows: no validation or test
    # rows, too few training rows for a window) is fitted no scaler of its own: the per-symbol minimum
    # refused the fold after the earlier folds had trained
    idle = frozenset(sym for sym, seg in zip(rows.symbols, segs) if d.scale_per_symbol and not len(seg["val"])
                     and not len(seg["test"]) and len(seg["train"]) < min_hist + d.prediction_horizon)
    if d.scale_per_symbol:
        bare = next((sym for sym, seg in zip(rows.symbols, segs) if len(seg["train"]) == 0 and sym not in idle), None)
        if bare is not None:
            # its rows are those after the features' warm-up: a file listed before the cut may have none before it
            k, warm = rows.symbols.index(bare), needed.warmup
            when = (f" (its rows start on or after the first validation date {_iso(cuts[0])[:10]}: the first, after the "
                    f"features' warm-up of {warm} row{'' if warm == 1 else 's'}, is dated "
                    f"{_iso(int(rows.times[rows.starts[k]]))[:10]})" if cuts else "")
            raise DataError(f"{bare}: no training rows to fit its own scaler{when}; drop it from data.symbols "
                            "or set data.scale_per_symbol=false")
    train_slices = {
        sym: slice(int(rows.starts[k]) + seg["train"].start, int(rows.starts[k]) + seg["train"].stop)
        for k, (sym, seg) in enumerate(zip(rows.symbols, segs))
    }
    labels = _labels(rows, d)
    scaler, target_scale, by_std = _fit_statistics(rows, train_slices, d, report.get("store"), labels, idle)
    if by_std:  # robust: columns of IQR 0 that vary (scaled by 1 by the versions before calendar_version)
        report["scaled_by_std"] = by_std
    pre = Preprocessing(
        features=list(d.features),
        feature_columns=feature_columns(d.features),
        scaler=scaler,
        target_scale=target_scale,
        seq_len=d.sequence_length,
        horizon=d.prediction_horizon,
        data=data_section,
        fold=fold,
        symbol_split_dates=per_symbol_dates,
        source_rows=source_rows(rows),
        bar_seconds=bar_seconds(rows),
        symbol_bar_seconds=symbol_bar_seconds(rows),
    )
    gap = _max_gap(d)
    holes, closures = panel_gaps(dict(zip(rows.symbols, times)), gap)  # the panel's closures are no symbol's holes
    if closures:  # kept, so that a forecast of one symbol is as silent on them as training
        pre.closures = [[_iso(a), _iso(b)] for a, b in closures]
    # the windows trained on are strided: purged k-fold's "val" windows (after the test block) join them
    trained = ("train", "val") if fold is not None and fold.scheme == "purged_kfold" else ("train",)
    by_dates = d.batching == "dates"  # the stride counts as-of dates, so each kept date keeps every symbol
    sets = {
        name: _window_set(rows, [seg[name] for seg in segs], pre, d.stride if name in trained and not by_dates else 1,
                          min_hist, gap, report.get("store"), labels)
        for name in SPLITS
    }
    cut_out = gap_cut_symbols(rows, segs, sets, d, min_hist) if gap is not None else {}  # before dates are thinned
    if by_dates:
        sets.update({name: sets[name].every_nth_date(d.stride) for name in trained})
    if len(sets["train"]) == 0:
        if gap is not None:  # the sessions between gaps may be what is short, not the rows
            # the training rows' runs (a long run in the test split trains nothing), and only when the training
            # rows themselves would hold a window: else too few rows is the cause, said below
            runs = [np.diff(np.flatnonzero(np.diff(t, prepend=t[0] - gap - 1, append=t[-1] + gap + 1) > gap))
                    for t in (np.asarray(rows.times[sl]) for sl in train_slices.values()) if len(t)]
            longest = max((int(r.max()) for r in runs if len(r)), default=0)
            most = max((sl.stop - sl.start for sl in train_slices.values()), default=0)
            if longest < d.sequence_length + d.prediction_horizon <= most:
                raise DataError(f"data: the training split yields no window: a window after a gap needs "
                                f"{d.sequence_length + d.prediction_horizon} rows without a gap longer than data.max_gap "
                                f"{d.max_gap}, and the longest run of rows between such gaps holds {longest}; "
                                "raise data.max_gap or lower data.sequence_length")
        raise DataError("data: the training split yields no window; lower data.sequence_length or add rows")
    report["windows"] = {name: len(ws) for name, ws in sets.items()}
    report["symbols"] = rows.symbols
    holes = long_gaps_found(holes, d.max_gap, "data_report.json: long_gaps")
    if holes is not None:  # windows read across a symbol's halt as if its bars were consecutive: said, not refused
        report["long_gaps"] = holes
        log.warning("%s", holes["why"])
    if cut_out:
        report["max_gap_without_windows"] = cut_out
        log.warning("data.max_gap %s leaves %s without windows that their rows hold without it: no run of their "
                    "rows between gaps longer than it holds the %d rows a window needs (an illiquid symbol's "
                    "missing bars, a halt); raise data.max_gap or lower data.sequence_length", d.max_gap,
                    "; ".join(f"{sym} ({', '.join(names)})" for sym, names in list(cut_out.items())[:5])
                    + (f"; and {len(cut_out) - 5} more (data_report.json: max_gap_without_windows)" if len(cut_out) > 5 else ""),
                    d.sequence_length + d.prediction_horizon)
    return PreparedData(sets["train"], sets["val"], sets["test"], pre, report)


def gap_cut_symbols(rows: Rows, segs: list[dict[str, Segment]], sets: dict[str, WindowSet], d: DataConfig,
                    min_hist: int) -> dict[str, list[str]]:
    """{symbol: the splits in which ``data.max_gap`` leaves it no window though its segment holds windows
    without the gap}: a symbol whose bars are too sparse (or too often halted) for a run of a window's rows
    between two gaps is otherwise left out of a split's training or scores without a word."""
    out: dict[str, list[str]] = {}
    for name in SPLITS:
        have = np.bincount(sets[name].symbol_ids, minlength=len(rows.symbols))
        for k, sym in enumerate(rows.symbols):
            if not have[k] and len(window_ends(segs[k][name], d.sequence_length, d.prediction_horizon, 1, min_hist)):
                out.setdefault(sym, []).append(name)
    return out


def training_frames(pre: Preprocessing) -> dict[str, pd.DataFrame]:
    """The validated frames of the data ``pre`` was fit on (its ``data_dir`` and validation rules)."""
    return read_frames(pre.data_config())[0]


def bar_seconds(rows: Rows) -> float | None:
    """The spacing in seconds of consecutive bars of each symbol (every symbol's spacings pooled;
    weekends and holidays are the few long ones; :func:`~hftraining.data.features.bar_spacing`, so
    two bars a session are 4 hours apart, not the overnight 20): 86,400 for daily bars, 60 for minute
    bars; None when no symbol has two rows."""
    return _pooled_seconds(rows.symbol_times())


def _pooled_seconds(times: list[np.ndarray]) -> float | None:
    """:func:`bar_seconds` of the symbols' stamps ``times`` (int64 ns each)."""
    gaps = [np.diff(t) for t in times if len(t) > 1]
    spacing = bar_spacing(np.concatenate(gaps)) if gaps else None
    return spacing / 1e9 if spacing is not None else None


def mixed_spacings(rows: Rows) -> dict[str, float]:
    """Each symbol's bar spacing in seconds (:func:`_bar_ns` of its rows) when the panel holds
    spacings :data:`BAR_SPACING_RATIO` or more apart (daily bars beside hourly ones), else {}. The
    cross-section of a timestamp (``market``, the ``excess_return`` and ``cs_*`` labels) then holds
    returns over other spans, and a longer bar stamped at an instant (or a date of several days) beside
    shorter bars that close before it does (:func:`read_early`; a daily bar stamped with its date is read
    by the hourly bars of the days after it only: beside instants a date is known at the end of its UTC
    day). Twice apart is such a mix too (an hourly bar stamped 14:30 in the cross-section of the 30-minute
    bar of 14:30, which closes half an hour before it), and the commonest (30 and 60 minutes)."""
    own = {sym: ns for sym, ns in zip(rows.symbols, split_bars(rows.symbol_times())) if ns}
    if len(own) < 2 or max(own.values()) < BAR_SPACING_RATIO * min(own.values()):
        return {}
    return {sym: ns / 1e9 for sym, ns in own.items()}


def read_early(rows: Rows, mixed: dict[str, float]) -> list[str]:
    """The symbols of a panel of bars of other spacings (``mixed``: :func:`mixed_spacings`) whose bars the
    shorter bars of another symbol read before they close: a bar :data:`BAR_SPACING_RATIO` times the shortest
    or longer, stamped at an instant (a daily bar at 05:00 UTC, an hourly bar beside half-hour bars), or stamped
    with its date and spanning several days (a weekly bar beside daily ones). A daily bar stamped with its date
    is not: beside instants it is read at the end of its UTC day, after it closed
    (:func:`~hftraining.data.features.market_columns`, :func:`~hftraining.data.labels.cross_sections`)."""
    shortest = min(mixed.values())
    dates = rows.dates
    out = []
    for k, sym in enumerate(rows.symbols):
        spacing = mixed.get(sym)
        if spacing is None or spacing < BAR_SPACING_RATIO * shortest:
            continue
        dated = dates is not None and bool(np.asarray(dates[rows.rows(k)]).all())
        if not dated or spacing >= BAR_SPACING_RATIO * 86_400:
            out.append(sym)
    return out


def split_bars(times: list[np.ndarray]) -> list[int]:
    """Each symbol's bar length in ns (:func:`_bar_ns` of its stamps ``times``; 0 for a symbol without a
    positive gap), for the calendar cuts. A cut date can fall inside a bar: a daily bar beside hourly ones,
    a daily bar stamped at midnight beside daily bars stamped at 05:00, an hourly bar beside bars of the
    half hour. That bar closes after the cut, so it is a target of neither period
    (:func:`~hftraining.data.splits.rows_closed_by`); a symbol whose bars no cut falls inside is cut as by
    its rows' dates alone. Each symbol's own: the same when it is cut alone (a model's data re-cut for
    evaluation or prediction on fewer symbols than it trained on)."""
    return [_bar_ns(t) for t in times]


def _bar_ns(times: np.ndarray) -> int:
    """The ns one bar of a symbol's stamps ``times`` (int64 ns) spans, for :func:`split_bars`: the gap that a
    tenth of its gaps are at most (0 without a positive gap). Not their median: a symbol that trades on half
    the days (or in a few of the minutes) of the others has daily (minute) bars with a median gap of two
    days or more, which is no longer bar; a stray row or two cannot make it shorter."""
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    return int(np.quantile(gaps, 0.1, method="lower")) if len(gaps) else 0


def symbol_bar_seconds(rows: Rows) -> dict[str, float]:
    """Each symbol's own bar spacing in seconds, the one by which training read its last stamp
    (:func:`~hftraining.data.features.date_stamps`, given no spacing): of the last
    :data:`~hftraining.data.features.OWN_SPACING_GAPS` gaps of its frame (``rows.spacings``; rows made
    without them: of the rows' own stamps), which reads the first rows of a later frame of it. A symbol
    without a positive spacing is left out (a short frame of it is read by the pooled spacing)."""
    spacings = rows.spacings
    if spacings is None:
        spacings = [None if len(t) < 2 else bar_spacing(np.diff(t[-OWN_SPACING_GAPS - 1:])) / 1e9
                    for t in rows.symbol_times()]
    return {sym: float(v) for sym, v in zip(rows.symbols, spacings) if v is not None and v > 0}


def check_symbol_bar_seconds(raw: Any, where: str) -> dict[str, float]:
    """``symbol_bar_seconds`` of a preprocessing.json (untrusted) → {symbol: seconds}; a DataError naming
    ``where`` and the symbol for anything but a positive finite number of seconds (never ignored: the
    pooled spacing in its place would read a daily symbol's few rows as intraday bars)."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: symbol_bar_seconds: expected {{symbol: seconds}}, got {shown(raw)}")
    out = {}
    for sym, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise DataError(f"{where}: symbol_bar_seconds.{sym}: expected a positive number of seconds, got {shown(v)}")
        out[str(sym)] = float(v)
    return out


BAR_SPACING_RATIO = 2.0
"""New data whose median bar spacing is more than this many times the training data's (or less than
its inverse) gets :func:`check_bar_spacing`'s warning."""


def check_bar_spacing(pre: Preprocessing, rows: Rows, where: str = "preprocessing.json") -> None:
    """Warn when the bars of ``rows`` are spaced unlike those the model trained on: a model of daily
    bars given minute bars (or weekly) forecasts as if each bar were a day, its indicators and horizon
    spanning other periods, and nothing else says so. A symbol the model trained on is held to its own
    training bars (``symbol_bar_seconds``: a daily symbol of a panel of mostly intraday ones is not
    warned for its daily bars); the others, pooled, to the panel's (``bar_seconds``)."""
    own = pre.symbol_bar_seconds or {}
    times = rows.symbol_times()
    off = lambda now, trained: now / trained > BAR_SPACING_RATIO or now / trained < 1 / BAR_SPACING_RATIO  # noqa: E731
    unlike = [(sym, now, own[sym]) for sym, t in zip(rows.symbols, times) if sym in own  # as recorded: its last bars
              for now in [_pooled_seconds([t[-OWN_SPACING_GAPS - 1:]])] if now is not None and off(now, own[sym])]
    if unlike:
        sym, now, trained = unlike[0]
        more = f" (and {len(unlike) - 1} more symbol(s))" if len(unlike) > 1 else ""
        log.warning("warning: data: the bars are %s apart (median) for %s%s, the model trained on its bars %s "
                    "apart (%s: symbol_bar_seconds): its features and its %d-step horizon span other periods than "
                    "in training; give it bars of its own frequency", span_text(now), sym, more, span_text(trained), where,
                    pre.horizon)
    trained = pre.bar_seconds
    now = _pooled_seconds([t for sym, t in zip(rows.symbols, times) if sym not in own])
    if trained is None or now is None or trained <= 0 or now <= 0:
        return
    if off(now, trained):
        log.warning("warning: data: the bars are %s apart (median), the model trained on bars %s apart (%s: "
                    "bar_seconds): its features and its %d-step horizon span other periods than in training; "
                    "give it bars of its own frequency", span_text(now), span_text(trained), where, pre.horizon)


def span_text(seconds: float) -> str:
    for unit, n in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= n:
            v = seconds / n
            return f"{v:g} {unit}{'' if v == 1 else 's'}" if v == int(v) else f"{v:.2f} {unit}s"
    return f"{seconds:g} s"


def apply(pre: Preprocessing, frames: dict[str, pd.DataFrame] | None = None, split: str = "test",
          where: str = "preprocessing.json", changes: list[str] | None = None) -> WindowSet:
    """Windows of ``split`` (or ``"all"``) of ``frames`` with the saved preprocessing (nothing refit);
    ``frames=None``: the data the preprocessing was fit on, through the feature store.

    Read again, that data may have changed since (rows appended, a bar corrected, a symbol added or
    removed): what differs from the rows training read (:func:`data_changes`) is a warning, and is added
    to ``changes`` when given. The splits are still cut where training cut them.

    The preprocessing of a walk-forward fold (``pre.fold``) gives the windows of that fold's own test
    block of the data it was fit on and nothing else: the rest of that data is the fold's training
    data, and other data has no out-of-sample part that the fold defines. Its blocks are cut at shares
    of the data, so rows read again are cut as training read them (those appended after are left out;
    data that differ before them is a DataError). Any other request is a DataError naming ``where``
    (the preprocessing's file)."""
    d = pre.data_config()
    if pre.fold is not None and (frames is not None or split != "test"):
        asked = f"the {split} split" + (" of other data" if frames is not None else "")
        raise DataError(f"{where}: fold: the model of {pre.fold} is scored only on that fold's test block of the "
                        f"data it was trained on (split test, no other data), not on {asked}: other windows "
                        "may hold targets it trained on")
    min_hist = min_history(d)
    needed = RowsNeeded.of(d)
    found: list[str] = []
    same: dict[str, int] | None = None  # each symbol's rows as training read them (None: not recorded)
    if frames is None:
        check_calendar_rule(pre, None, where)
        rows, _ = data_rows(d)
        if pre.source_rows is not None:
            recorded = check_source_rows(pre.source_rows, where)
            found, same = data_changes(recorded, rows)
            data = d.data_dir if d.data_dir is not None else "the bundled sample"
            listed = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
            if pre.fold is not None and (len(same) < len(recorded) or len(same) < len(rows.symbols)):  # changed, gone or new
                raise DataError(f"{where}: fold: data.data_dir={data} differs from the data the model of {pre.fold} "
                                f"was trained on ({listed}), so its test block cannot be cut again: its blocks are "
                                "shares of those rows")
            if found:
                log.warning("data: data.data_dir=%s differs from the data the model was trained on (%s: source_rows): "
                            "%s; %s", data, where, listed,
                            "its test block is cut from the rows training read, those after are left out"
                            if pre.fold is not None else
                            "the splits are cut where training cut them, but their windows are not those training had")
            if changes is not None:
                changes.extend(found)
    else:
        check_calendar_rule(pre, frames, where)
        rows, _ = build_rows(frames, pre.features, needed.usable, tz=d.timezone, bar_seconds=pre.bar_seconds,
                             symbol_bar_seconds=pre.symbol_bar_seconds)
        check_bar_spacing(pre, rows, where)
    if not rows.symbols:
        raise DataError(f"data: no symbol has the {needed.rows} rows one window needs ({needed.why})")
    if split == "all":
        segs = [Segment(0, int(n)) for n in rows.lengths]
    else:
        times = rows.symbol_times()
        if pre.fold is not None and same is not None:  # the rows training read: the fold's blocks are their shares
            times = [t[:same.get(sym, 0)] for sym, t in zip(rows.symbols, times)]
        calendar = union_calendar(times)
        seg_fn = split_segments(d, resolve_cuts(d, calendar)) if pre.fold is None else fold_split(d, pre.fold)
        # per_symbol: a symbol the model trained on is cut at its own saved dates, so no window of new data
        # it scores holds a target the model trained or validated on; another symbol at its row shares
        own = check_symbol_split_dates(pre.symbol_split_dates, where) if pre.symbol_split_dates is not None else {}
        segs = [(calendar_split(t, *own[sym], d.embargo) if sym in own else seg_fn(t, calendar, bar))[split]
                for sym, t, bar in zip(rows.symbols, times, split_bars(times))]
    out = _window_set(rows, segs, pre, 1, min_hist, _max_gap(d), labels=_labels(rows, d))
    if pre.grouping_version < GROUPING_VERSION:  # the rows these windows read: their inputs and their targets
        check_grouping_rule(pre, rows, where, read=window_rows(out, len(rows.returns)))
    return out


def window_rows(ws: WindowSet, n: int) -> np.ndarray:
    """(n,) bool: the rows of ``n`` that the windows of ``ws`` read: each window's inputs from its segment's first
    readable row on (earlier steps are padding) and its targets."""
    ends = np.asarray(ws.ends, dtype=np.int64)
    first = np.maximum(ends - ws.seq_len + 1, np.asarray(ws.segment_first, dtype=np.int64)[ws.symbol_ids])
    edges = np.bincount(first, minlength=n + 1) - np.bincount(np.minimum(ends + ws.horizon + 1, n), minlength=n + 1)
    return np.cumsum(edges[:n]) > 0


def check_calendar_rule(pre: Preprocessing, frames: Mapping[str, pd.DataFrame] | None,
                        where: str = "preprocessing.json", fix: str = "retrain the model") -> None:
    """A DataError naming ``where``, the symbol and its first such row (and saying ``fix``) when the model of
    ``pre`` computed its time features by calendar_version 2 and this version reads a row of ``frames``
    (None: the data it was trained on, read again as training read it) otherwise
    (:func:`~hftraining.data.features.calendar_rule_change`: a frame that switches from daily to intraday
    bars, or the first rows of one); nothing to check for the other versions (1 is refused where it
    differs, when its folder is loaded) or without ``calendar``/``hour`` features off UTC's clock."""
    d = pre.data_config()
    if pre.calendar_version not in (1, 2) or not calendar_rule_matters(pre.features, d.timezone):
        return
    own = pre.symbol_bar_seconds or {}
    if frames is None:
        frames, own = training_frames(pre), None  # as training computed them: by the frames' own gaps
    for sym, frame in frames.items():
        ts = utc_stamps(frame["timestamp"])
        spacing = None if own is None else own.get(sym, pre.bar_seconds)
        row = calendar_rule_change(ts.asi8, pre.features, d.timezone, spacing, pre.calendar_version)
        if row is not None:
            raise DataError(f"{where}: {sym}: row {row} ({ts[row].isoformat()}): this model's calendar/hour features "
                            f"were computed by calendar_version {pre.calendar_version}, which read a bar at UTC midnight "
                            f"{'as an instant' if pre.calendar_version == 1 else 'by the spacing of its whole frame'}; this version reads it by the bars up to it, and the two differ "
                            f"here (data.timezone={d.timezone}); {fix}")


def check_grouping_version(v: Any, where: str) -> int:
    """A model folder's ``grouping_version`` (1 when absent) → itself; a DataError naming ``where`` when it is
    not a positive integer, or was written by a newer version (:data:`~hftraining.data.labels.GROUPING_VERSION`)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{where}: grouping_version must be a positive integer, got {shown(v)}")
    if v > GROUPING_VERSION:
        raise DataError(f"{where}: grouping_version {v} was written by a newer hftraining (this one groups dates and "
                        f"instants by version {GROUPING_VERSION}); upgrade hftraining to load it")
    return v


def check_grouping_rule(pre: Preprocessing, rows: Rows | None, where: str = "preprocessing.json",
                        fix: str = "retrain the model", read: np.ndarray | None = None) -> None:
    """A DataError naming ``where``, the symbol and the row's stamp (and saying ``fix``) when the model of ``pre``
    grouped a panel of dates beside instants by grouping_version 1 (:data:`~hftraining.data.labels.GROUPING_VERSION`:
    by the stamps alone) and a label taken across symbols (``data.target`` in
    :data:`~hftraining.data.labels.PER_DATE`) or a ``market`` feature of a row of ``rows`` (None: the data it was
    trained on, :func:`data_rows`) that the model reads (``read`` (N,) bool; None: every row) comes out otherwise by
    this version's rule: a date and an instant at one stamp are two cross-sections, and beside instants a date is
    known at the end of its UTC day. Nothing to check for a panel of dates alone or of instants alone (grouped alike
    by both), nor for a model of neither."""
    if pre.grouping_version >= GROUPING_VERSION:
        return
    target = pre.data_config().target
    panel = panel_specs(pre.features)
    if target not in PER_DATE and not panel:
        return
    if rows is None:
        rows, _ = data_rows(pre.data_config())
    marks = rows.dates
    if (target not in PER_DATE and not panel) or marks is None or len(marks) == 0 or marks.all() or not marks.any():
        return
    marks = np.asarray(marks, dtype=bool)
    read = np.ones(len(marks), dtype=bool) if read is None else np.asarray(read, dtype=bool)
    returns, times = np.asarray(rows.returns), np.asarray(rows.times)
    instants = np.zeros(len(marks), dtype=bool)  # every row an instant: grouped by its stamp alone, as version 1 did

    def differ(old: np.ndarray, new: np.ndarray) -> np.ndarray:
        a, b = np.asarray(old, dtype=np.float32), np.asarray(new, dtype=np.float32)
        return read & ~np.isclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True)

    def named(i: int) -> tuple[str, str]:
        k = int(np.searchsorted(rows.starts, i, side="right")) - 1
        return rows.symbols[k], pd.Timestamp(int(times[i]), tz="UTC").isoformat()

    if target in PER_DATE and (read & np.isin(times, np.intersect1d(times[marks], times[~marks]))).any():
        # a label reads its own cross-section alone: it differs only at a stamp that holds a date and an instant
        changed = np.flatnonzero(differ(row_labels(returns, times, target), row_labels(returns, times, target, marks)))
        if len(changed):
            i = int(changed[0])
            sym, when = named(i)
            at = np.flatnonzero(times == times[i])
            other = next((int(j) for j in at if marks[j] != marks[i]), None)
            beside = "" if other is None else f" beside {named(other)[0]}'s {'date' if marks[other] else 'instant'}"
            raise DataError(f"{where}: {sym}: the row at {when} ({'a date' if marks[i] else 'an instant'}{beside} at that "
                            f"stamp): this model's data.target={target} labels (an input of the model too) were grouped by "
                            "grouping_version 1, which put a date (a daily bar stamped at UTC midnight) and an instant at "
                            "one stamp in one cross-section; this version keeps them apart, and its labels differ here; "
                            f"{fix}")
    for spec in panel:
        name, params = parse_spec(spec)
        old = PANEL_FEATURES[name](returns, times, params, instants)
        new = PANEL_FEATURES[name](returns, times, params, marks)
        for col in old:
            changed = np.flatnonzero(differ(old[col], new[col]))
            if len(changed):
                i = int(changed[0])
                sym, when = named(i)
                raise DataError(f"{where}: {sym}: {col} of the row at {when} ({'a date' if marks[i] else 'an instant'} "
                                "of a panel of dates beside instants): this model's market features were computed by "
                                "grouping_version 1, which read a date (a daily bar stamped at UTC midnight) at its stamp, "
                                "before it closed; this version knows a date beside instants at the end of its UTC day, "
                                f"and the two differ here; {fix}")


def latest_windows(pre: Preprocessing, frames: dict[str, pd.DataFrame]) -> WindowSet:
    """The most recent input window of each symbol (no targets: they lie in the future); a symbol
    with fewer rows than :meth:`RowsNeeded.of` (``targets=False``) is a DataError naming it. With
    ``data.max_gap``, a window never reads back over a longer gap, as in training: after one it
    needs ``seq_len`` real rows (a DataError naming the symbol and the gap otherwise). A window that reads
    across a hole in a symbol's rows that ``data.max_gap`` does not keep out
    (:func:`~hftraining.data.sources.long_gaps`: a symbol back from a months-long halt; not a closure the other
    symbols sent share, :func:`~hftraining.data.sources.panel_long_gaps`, nor one the training panel shared,
    :attr:`Preprocessing.closures`, as training named none) is a warning naming
    the symbol and the hole: the forecast reads the bars on either side as consecutive."""
    d = pre.data_config()
    needed = RowsNeeded.of(d, targets=False)
    if not frames:
        raise DataError("data: no symbol to forecast")
    for sym, frame in frames.items():
        if len(frame) < needed.rows:
            raise DataError(f"{sym}: {len(frame)} usable rows, the model needs {needed.rows} ({needed.why})")
    # a stamp at UTC midnight is a date or an instant as in training, however few rows a request sends: by
    # the gaps up to it, and for a frame's first rows by the symbol's own training bars (a symbol the model
    # never saw: the panel's pooled spacing)
    check_calendar_rule(pre, frames)
    rows, skipped = build_rows(frames, pre.features, needed.usable, tz=d.timezone, bar_seconds=pre.bar_seconds,
                               symbol_bar_seconds=pre.symbol_bar_seconds)
    if skipped:  # only a frame whose features fail (too short for them) gets here
        raise DataError(f"{skipped[0]}: fewer rows than the {needed.rows} one input window needs ({needed.why})")
    check_bar_spacing(pre, rows)
    ends = rows.starts + rows.lengths - 1
    read = np.zeros(len(rows.returns), dtype=bool)  # the rows the latest windows read
    for k in range(len(rows.symbols)):
        read[max(int(ends[k]) - pre.seq_len + 1, int(rows.starts[k])):int(ends[k]) + 1] = True
    check_grouping_rule(pre, rows, read=read)
    gap = _max_gap(d)
    if gap is not None:  # the training windows: none spans a longer gap, and after one L real rows
        for k, sym in enumerate(rows.symbols):
            t = rows.times[int(rows.starts[k]):int(ends[k]) + 1]
            cut = np.flatnonzero(np.diff(t) > gap)
            if len(cut) and len(t) - (cut[-1] + 1) < pre.seq_len:
                after = pd.Timestamp(int(t[cut[-1] + 1]), tz="UTC").isoformat()
                raise DataError(f"{sym}: {len(t) - cut[-1] - 1} rows since the gap before {after} (longer than "
                                f"data.max_gap {d.max_gap}); after a gap the model needs {pre.seq_len} rows, as in training")
    # a hole inside the latest window (a symbol back from a halt), which training names too (prepare): the window
    # reads the bars on either side as consecutive; one that starts at the first row after it reads none, as
    # data.max_gap defines a window after a gap
    # (not a closure of the whole market, which the other symbols sent share, or the training panel did: a
    # request of one symbol is silent on the closures training was silent on)
    times = {sym: rows.times[int(rows.starts[k]):int(ends[k]) + 1] for k, sym in enumerate(rows.symbols)}
    holes = {}
    known = check_closures(pre.closures, "preprocessing.json") if pre.closures is not None else None
    for sym, found in panel_long_gaps(times, gap, known).items():
        t = times[sym]
        first = int(t[max(len(t) - pre.seq_len, 0)])
        if found := [h for h in found if h[1] > first]:
            holes[sym] = found
    if holes:
        log.warning("warning: data: the latest window of %s reads across a gap in its rows (%s): the bars on either "
                    "side as consecutive, the return over it as one bar's (data.max_gap %s); a forecast from %d rows "
                    "after the gap reads none", ", ".join(sorted(holes)), long_gaps_listed(holes),
                    "not set" if d.max_gap is None else f"{d.max_gap} is longer", pre.seq_len)
    return WindowSet(
        features=rows.features, returns=rows.returns, ends=ends,
        symbol_ids=np.arange(len(rows.symbols), dtype=np.int32), segment_first=rows.starts.copy(),
        row_times=rows.times, row_close=rows.close, symbols=rows.symbols, seq_len=pre.seq_len, horizon=0,
        **_scaling(rows, pre), labels=_labels(rows, d), target=d.target, row_dates=rows.dates,
    )
