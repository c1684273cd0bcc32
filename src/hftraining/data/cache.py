"""On-disk cache of validated frames with their features (Parquet + a JSON manifest; never pickle).

The key hashes the contents of every input file (and its name), the feature specs, the validation
policy, the rows a symbol needs and the package version, so changing a file or the config
recomputes and nothing else does.
An entry is written to a temporary folder and renamed into place, so a crash never leaves a half
entry behind; an entry that cannot be read back is recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

import hftraining
from hftraining.core.config import DataConfig
from hftraining.core.jsonio import write_json
from hftraining.data import io
from hftraining.data.features import compute_features
from hftraining.data.validate import RowsNeeded, load_and_validate

FORMAT = 2  # bump when the stored layout or a feature's formula changes
# the DataConfig keys that change what is read, validated or computed (with the rows needed)
KEYED_FIELDS = (
    "symbols", "features", "invalid_values", "ohlc_violations", "duplicate_timestamps",
    "unsorted_timestamps", "jump_threshold", "jumps",
)


def cache_key(paths: list[Path], cfg: DataConfig, needed: RowsNeeded) -> str:
    """Hex digest of the input files' names and contents, the keyed config fields and ``needed``."""
    h = hashlib.blake2b(digest_size=16)
    settings = {**{k: getattr(cfg, k) for k in KEYED_FIELDS}, "rows_needed": needed.rows}
    h.update(json.dumps({"format": FORMAT, "version": hftraining.__version__, **settings}, sort_keys=True).encode())
    for p in paths:
        h.update(b"\0" + p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _read_entry(folder: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        tables = {sym: pd.read_parquet(folder / f"{i:05d}.parquet") for i, sym in enumerate(manifest["symbols"])}
        return tables, manifest["report"]
    except (OSError, ValueError, KeyError):
        return None


def _write_entry(folder: Path, tables: dict[str, pd.DataFrame], report: dict[str, Any]) -> None:
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir(parents=True)
    try:
        for i, table in enumerate(tables.values()):
            table.to_parquet(tmp / f"{i:05d}.parquet", index=False)
        manifest = {"format": FORMAT, "symbols": list(tables), "report": report}
        write_json(tmp / "manifest.json", manifest, indent=None)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process wrote the same entry first: theirs is as good as ours
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def feature_tables(cfg: DataConfig, needed: RowsNeeded) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Validated frames with their features → ({symbol: table}, validation report), cached on disk;
    symbols with fewer than ``needed.rows`` kept rows are skipped (see :func:`load_and_validate`).

    Each table has ``timestamp``, ``open`` ... ``volume`` and the feature columns of
    ``cfg.features``, one row per kept input row (the warm-up rows' features are NaN). The report
    says ``"cache": "hit" | "miss" | "off"``.
    """
    paths = io.resolve_paths(cfg.data_dir)
    folder = None
    if cfg.cache_dir is not None:
        folder = Path(cfg.cache_dir) / cache_key(paths, cfg, needed)
        if folder.is_dir():
            hit = _read_entry(folder)
            if hit is not None:
                tables, report = hit
                return tables, {**report, "cache": "hit"}
            shutil.rmtree(folder, ignore_errors=True)
    frames, report = load_and_validate(dataclasses.replace(cfg, data_dir=[str(p) for p in paths]), needed)
    tables = {}
    for sym, frame in frames.items():
        feats = compute_features(frame, cfg.features)
        tables[sym] = pd.concat([frame.reset_index(drop=True), feats.reset_index(drop=True)], axis=1)
    if folder is not None:
        try:
            _write_entry(folder, tables, report)
        except OSError:  # a read-only or full disk must not stop training; the next run recomputes
            pass
    return tables, {**report, "cache": "off" if folder is None else "miss"}
