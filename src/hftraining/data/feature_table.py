"""The feature table for inspection (``hftraining data features``): one row per symbol and time."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError, writing
from hftraining.core.files import replace_file
from hftraining.data.features import feature_columns
from hftraining.data.pipeline import panel_rows

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def feature_table(cfg: DataConfig) -> tuple[pd.DataFrame, dict]:
    """All symbols' features (unscaled), warm-up rows dropped → (frame with ``symbol``,
    ``timestamp`` and the feature columns, validation report), from the feature store. The features
    are those training uses: a symbol without volume drops the volume features for every symbol
    (:func:`~hftraining.data.pipeline.panel_rows`; logged, and under ``dropped_features`` in the
    report), where reading the rows of ``cfg.features`` would stop at that symbol."""
    panel = panel_rows(cfg)  # checks the specs first
    cols, rows = feature_columns(panel.d.features), panel.rows
    report = {**panel.report, "dropped_features": dict(panel.dropped)}
    # one frame of every symbol's rows, gathered at once: a frame per symbol and their concatenation took
    # 22 s for 3,000 symbols × 1,500 rows, most of it pandas joining the 3,000 frames
    lengths = np.asarray(rows.lengths, dtype=np.int64)
    starts = np.asarray(rows.starts, dtype=np.int64)
    n = int(lengths.sum())
    if np.array_equal(starts, np.cumsum(lengths) - lengths):  # the symbols' rows back to back from row 0
        take: slice | np.ndarray = slice(0, n)
    else:
        take = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(n)
    table = pd.DataFrame(np.asarray(rows.features[take], dtype=np.float64).reshape(n, len(cols)), columns=cols)
    table.insert(0, "timestamp", pd.DatetimeIndex(np.array(rows.times[take]).view("datetime64[ns]")).tz_localize("UTC"))
    table.insert(0, "symbol", np.repeat(np.array(rows.symbols, dtype=object), lengths))
    return table, report


def write_feature_table(cfg: DataConfig, out: str | Path) -> tuple[int, int]:
    """Write :func:`feature_table` to ``out`` (CSV or Parquet by its extension) → (rows, symbols). The
    table is written beside ``out`` and renamed onto it: a failure or Ctrl-C mid-write leaves an earlier
    ``out`` whole (it was left cut short); an I/O failure is a one-line
    :class:`~hftraining.core.errors.WriteError`."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise DataError(f"{out}: unknown output format {out.suffix!r}; use .csv or .parquet")
    # a link (latest.parquet -> v3.parquet) stays a link: the file it names is replaced, as a write through it did
    dest = Path(os.path.realpath(out)) if out.is_symlink() else out
    if dest.is_dir():  # else the rename onto it failed naming the temporary file beside it, after all the features
        raise DataError(f"--out {out}: is a folder; expected a .csv or .parquet file name")
    table, _ = feature_table(cfg)
    if fmt == "csv":
        ts = table["timestamp"].dt
        whole = bool(((ts.microsecond == 0) & (ts.nanosecond == 0)).all())  # else bars of 500ms wrote each second twice
        table = table.assign(timestamp=ts.strftime("%Y-%m-%dT%H:%M:%SZ" if whole else "%Y-%m-%dT%H:%M:%S.%fZ"))
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    # the format is given, not read from the temporary file's name
    replace_file(dest, partial(table.to_csv if fmt == "csv" else table.to_parquet, index=False))
    return len(table), table["symbol"].nunique()
