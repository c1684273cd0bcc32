"""The feature table for inspection (``hftraining data features``): one row per symbol and time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.features import check_specs, feature_columns
from hftraining.data.pipeline import data_rows

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def feature_table(cfg: DataConfig) -> tuple[pd.DataFrame, dict]:
    """All symbols' features (unscaled), warm-up rows dropped → (frame with ``symbol``,
    ``timestamp`` and the feature columns, validation report), from the feature store."""
    check_specs(cfg.features)
    cols = feature_columns(cfg.features)
    rows, report = data_rows(cfg)
    parts = []
    for k, sym in enumerate(rows.symbols):
        sl = rows.rows(k)
        part = pd.DataFrame(np.asarray(rows.features[sl], dtype=np.float64), columns=cols)
        part.insert(0, "timestamp", pd.DatetimeIndex(np.asarray(rows.times[sl]).view("datetime64[ns]")).tz_localize("UTC"))
        part.insert(0, "symbol", sym)
        parts.append(part)
    return pd.concat(parts, ignore_index=True), report


def write_feature_table(cfg: DataConfig, out: str | Path) -> tuple[int, int]:
    """Write :func:`feature_table` to ``out`` (CSV or Parquet by its extension) → (rows, symbols)."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise DataError(f"{out}: unknown output format {out.suffix!r}; use .csv or .parquet")
    table, _ = feature_table(cfg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            table.assign(timestamp=table["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(out, index=False)
        else:
            table.to_parquet(out, index=False)
    except OSError as e:
        raise DataError(f"{out}: cannot write ({e.strerror})") from None
    return len(table), table["symbol"].nunique()
