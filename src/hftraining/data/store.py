"""The feature store: every symbol's feature rows, computed once, memory-mapped by every run after.

An entry is a folder ``<data.cache_dir>/<key>/`` of four flat binary files and a JSON index::

    features.f32   (N, F) float32, C order   returns.f32  (N,) float32 (1-step log returns)
    times.i64      (N,) int64 ns UTC         close.f64    (N,) float64
    index.json     symbols, starts, lengths, feature columns, the validation report

so a :class:`~hftraining.data.rows.Rows` is four read-only ``np.memmap`` views: nothing is loaded,
and every process that maps the entry (DDP ranks on a node, evaluation after training) shares the
same pages of the page cache instead of holding its own copy.

The key hashes the inputs' contents (each file's blake2b digest, remembered per path, size and
modification time in ``file-digests.json`` so a warm start does not re-read gigabytes), the data
settings that change rows (features, validation policies, symbols, date range), the rows a symbol
needs and the package version. Changing one input byte or one feature parameter builds a new
entry; nothing else does.

Building reads, validates and computes one unit (a file, or one symbol of a Parquet dataset) at a
time, in ``data.num_workers`` processes, and appends each symbol's rows to the files, so memory
holds a few symbols, never the dataset. The entry is written to a temporary folder and renamed
into place; a lock file makes concurrent builders (several ranks, several runs) build it once.
No pickle is written: the files are raw arrays and JSON.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import hftraining
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.core.jsonio import write_json
from hftraining.data.features import feature_columns
from hftraining.data.rows import Rows, SymbolRows, symbol_rows
from hftraining.data.sources import Collector, Unit, input_files, read_unit, units
from hftraining.data.validate import RowsNeeded, check_policy

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the stored layout or a feature's formula changes
# the DataConfig keys that change which rows are read, validated or computed (with the rows needed)
KEYED_FIELDS = (
    "symbols", "features", "invalid_values", "ohlc_violations", "duplicate_timestamps",
    "unsorted_timestamps", "jump_threshold", "jumps", "start_date", "end_date", "price_adjustment",
)
ARRAYS = {"features": np.float32, "returns": np.float32, "times": np.int64, "close": np.float64}
SUFFIX = {"features": "f32", "returns": "f32", "times": "i64", "close": "f64"}
DIGESTS = "file-digests.json"


# ----------------------------------------------------------------------------------------- keys


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def file_digests(files: list[Path], cache_dir: Path | None) -> list[str]:
    """The content digest of each file; remembered under ``cache_dir`` by (path, size, mtime, ctime),
    so an unchanged file is not read again (any write changes its mtime and ctime)."""
    memo: dict[str, Any] = {}
    memo_path = None if cache_dir is None else cache_dir / DIGESTS
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
    out, changed = [], False
    for f in files:
        st = f.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        key = str(f.resolve())
        got = memo.get(key)
        if not (isinstance(got, dict) and got.get("stamp") == stamp):
            got, changed = {"stamp": stamp, "digest": _digest(f)}, True
            memo[key] = got
        out.append(got["digest"])
    if changed and memo_path is not None:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_name(f".{DIGESTS}.{uuid.uuid4().hex}")
            tmp.write_text(json.dumps(memo), encoding="utf-8")
            os.replace(tmp, memo_path)
        except OSError:
            pass  # a read-only cache folder: digests are recomputed next time
    return out


def store_key(us: list[Unit], d: DataConfig, needed: RowsNeeded) -> str:
    """Hex digest of the units, their files' contents, the keyed data settings and ``needed``."""
    files = input_files(us)
    h = hashlib.blake2b(digest_size=16)
    settings = {**{k: getattr(d, k) for k in KEYED_FIELDS}, "rows_needed": needed.rows}
    h.update(json.dumps({"format": FORMAT, "version": hftraining.__version__, **settings}, sort_keys=True).encode())
    h.update(json.dumps([[u.kind, Path(u.path).name, u.symbol] for u in us]).encode())
    cache = None if d.cache_dir is None else Path(d.cache_dir)
    for f, dig in zip(files, file_digests(files, cache)):
        h.update(f"\0{f.parent.name}/{f.name}\0{dig}".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- build


def _job(unit: Unit, d: DataConfig, needed: RowsNeeded, min_rows: int):
    """Read, validate and compute one unit → (unit, {symbol: arrays or None}, report, too-few-rows error)."""
    try:
        frames, report = read_unit(unit, d, needed)
    except DataError as e:
        if "too few rows" not in str(e):
            raise
        return unit, {}, None, str(e)
    got = {}
    for sym, frame in frames.items():
        r = symbol_rows(frame, d.features, sym, min_rows)
        got[sym] = None if r is None else dataclasses.astuple(r)
    return unit, got, report, None


def _results(us: list[Unit], d: DataConfig, needed: RowsNeeded, min_rows: int) -> Iterator[tuple]:
    """:func:`_job` of every unit, in order; ``data.num_workers`` processes, a few units ahead."""
    if d.num_workers <= 0 or len(us) <= 1:
        for u in us:
            yield _job(u, d, needed, min_rows)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    with ProcessPoolExecutor(max_workers=d.num_workers, mp_context=ctx) as pool:
        ahead = 2 * d.num_workers
        pending = [pool.submit(_job, u, d, needed, min_rows) for u in us[:ahead]]
        nxt = len(pending)
        while pending:
            res = pending.pop(0).result()
            if nxt < len(us):
                pending.append(pool.submit(_job, us[nxt], d, needed, min_rows))
                nxt += 1
            yield res


class _Sink:
    """Where built symbols go: appended to the entry's files, or kept in memory."""

    def __init__(self, folder: Path | None, n_features: int):
        self.folder, self.F = folder, n_features
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        self.files = None if folder is None else {k: open(folder / f"{k}.{SUFFIX[k]}", "wb") for k in ARRAYS}
        self.offset, self.where = 0, {}

    def add(self, sym: str, r: SymbolRows) -> None:
        for k in ARRAYS:
            a = np.ascontiguousarray(getattr(r, k), dtype=ARRAYS[k])
            if self.files is None:
                self.parts[k].append(a)
            else:
                self.files[k].write(a.tobytes())
        self.where[sym] = (self.offset, len(r))
        self.offset += len(r)

    def close(self) -> None:
        if self.files is not None:
            for fh in self.files.values():
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for k, dt in ARRAYS.items():
            shape = (0, self.F) if k == "features" else (0,)
            out[k] = np.concatenate(self.parts[k]) if self.parts[k] else np.zeros(shape, dt)
        return out


def _build(d: DataConfig, us: list[Unit], needed: RowsNeeded, min_rows: int, folder: Path | None):
    """Build every symbol's rows into ``folder`` (or memory) → (symbols, starts, lengths, report, skipped, arrays)."""
    col = Collector(d, needed)
    F = len(feature_columns(d.features))
    sink = _Sink(folder, F)
    skipped: list[str] = []
    try:
        for unit, got, report, too_few in _results(us, d, needed, min_rows):
            if too_few is not None:
                col.skip(unit, too_few)
                continue
            col.add(unit, list(got), report)
            for sym, arrays in got.items():
                if arrays is None:
                    skipped.append(sym)
                else:
                    sink.add(sym, SymbolRows(*arrays))
    finally:
        sink.close()
    order = [s for s in col.order() if s in sink.where]
    skipped = [s for s in col.order() if s in skipped]
    starts = [sink.where[s][0] for s in order]
    lengths = [sink.where[s][1] for s in order]
    return order, starts, lengths, col.report(), skipped, (sink.arrays() if folder is None else None)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open(folder: Path) -> tuple[Rows, dict[str, Any]] | None:
    """The entry's rows as read-only memory maps, or None when it is incomplete or damaged."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            return None
        n, F = int(index["n_rows"]), int(index["n_features"])
        arrays = {}
        for k, dt in ARRAYS.items():
            shape = (n, F) if k == "features" else (n,)
            path = folder / f"{k}.{SUFFIX[k]}"
            if path.stat().st_size != int(np.prod(shape)) * np.dtype(dt).itemsize:
                return None
            arrays[k] = np.memmap(path, dtype=dt, mode="r", shape=shape) if n else np.zeros(shape, dt)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    rows = Rows(list(index["symbols"]), np.asarray(index["starts"], np.int64), np.asarray(index["lengths"], np.int64), **arrays)
    return rows, index


def load_rows(d: DataConfig, needed: RowsNeeded, min_rows: int) -> tuple[Rows, dict[str, Any]]:
    """Every symbol's rows of ``d`` → (rows, validation report): mapped from the store entry of
    ``d.cache_dir`` (built first when absent) or, with ``cache_dir=None``, built in memory.

    The report is the validation report of the rows plus ``"cache": "hit" | "miss" | "off"`` and
    ``"skipped_symbols"``: symbols whose features leave fewer than ``min_rows`` rows."""
    check_policy(d)
    us = units(d)
    if d.cache_dir is None:
        return _in_memory(d, us, needed, min_rows, "off")
    root = Path(d.cache_dir)
    key = store_key(us, d, needed)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{key}.lock").touch()
    except OSError as e:
        log.warning("feature store: cannot write to data.cache_dir=%s (%s); features are computed in memory", root, e.strerror)
        return _in_memory(d, us, needed, min_rows, "unwritable")
    folder = root / key
    with _locked(root / f"{key}.lock"):
        hit = _open(folder) if folder.is_dir() else None
        status = "hit"
        if hit is None:
            status = "miss"
            shutil.rmtree(folder, ignore_errors=True)
            tmp = root / f".{key}.{uuid.uuid4().hex}.tmp"
            tmp.mkdir(parents=True)
            try:
                order, starts, lengths, report, skipped, _ = _build(d, us, needed, min_rows, tmp)
                index = {
                    "format": FORMAT, "key": key, "version": hftraining.__version__,
                    "symbols": order, "starts": starts, "lengths": lengths,
                    "n_rows": _total(tmp), "n_features": len(feature_columns(d.features)),
                    "features": list(d.features), "feature_columns": feature_columns(d.features),
                    "report": report, "skipped_symbols": skipped,
                }
                write_json(tmp / "index.json", index, indent=None)
                os.rename(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            hit = _open(folder)
            if hit is None:  # a caller's bug or a disk that lost the files we just wrote
                raise DataError(f"{folder}: the feature store entry just written cannot be read back")
    rows, index = hit
    log.info("feature store %s: %s (%d symbols, %d rows)", status, folder, len(rows.symbols), len(rows.returns))
    return rows, {**index["report"], "skipped_symbols": index["skipped_symbols"], "cache": status, "store": str(folder)}


def _in_memory(d: DataConfig, us: list[Unit], needed: RowsNeeded, min_rows: int, status: str) -> tuple[Rows, dict[str, Any]]:
    order, starts, lengths, report, skipped, arrays = _build(d, us, needed, min_rows, None)
    rows = Rows(order, np.asarray(starts, np.int64), np.asarray(lengths, np.int64), **arrays)
    return rows, {**report, "skipped_symbols": skipped, "cache": status}


def _total(folder: Path) -> int:
    """Rows written to an entry so far (all symbols, including any not in the run's order)."""
    return (folder / "returns.f32").stat().st_size // np.dtype(np.float32).itemsize
