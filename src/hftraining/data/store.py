"""The feature store: every symbol's feature rows, computed once, memory-mapped by every run after.

An entry is a folder ``<data.cache_dir>/<key>/`` of four flat binary files and a JSON index::

    features.f32   (N, F) float32, C order   returns.f32  (N,) float32 (1-step log returns)
    times.i64      (N,) int64 ns UTC         close.f64    (N,) float64
    index.json     symbols, starts, lengths, feature columns, the validation report, the warnings
                   the build logged (said again to each run the entry serves, as a build says them)

(with ``verified.json``), so a :class:`~hftraining.data.rows.Rows` is four read-only ``np.memmap``
views: nothing is loaded,
and every process that maps the entry (DDP ranks on a node, evaluation after training) shares the
same pages of the page cache instead of holding its own copy.

The key hashes the inputs' contents (each file's blake2b digest, remembered per path, size,
modification and change time in ``file-digests.json`` so a warm start does not re-read gigabytes;
any write moves the change time, which user space cannot set back; a file hashed within a clock tick of
its last write is hashed again, :func:`file_digests`) and their paths as written (the
report names each file so), the data settings that change rows (features, validation policies,
symbols, date range), the rows a symbol needs and why (the report gives the reason for a symbol
with fewer), the package version and the versions of the libraries that read and compute the rows
(TA-Lib, NumPy, pandas, PyArrow: an upgrade may change an indicator's values or how a file is
read). Changing one input byte or one feature parameter builds a new entry; nothing else does.

Building reads, validates and computes one unit (a file, or one symbol of a Parquet dataset) at a
time, in ``data.num_workers`` processes, and appends each symbol's rows to the files, so memory
holds a few symbols, never the dataset. The entry is written to a temporary folder and renamed
into place; a lock file makes concurrent builders (several ranks, several runs) build it once.
No pickle is written: the files are raw arrays and JSON. A build that cannot write its files (a
full disk, a quota) is one :class:`~hftraining.core.errors.WriteError` line naming ``data.cache_dir``
and nothing half-written is left. A store that cannot be written at all (a read-only mount, a path
that cannot be made) serves the entries it holds; without one, the rows are computed in memory,
with a warning naming the folder.

Trust: ``index.json`` holds the blake2b digest of each array file (computed as it was written) and
of its own content. ``verified.json`` holds the size, modification and change time of each file
when its digests last matched. Opening an entry compares those stamps (a few ``stat`` calls); a
file whose stamps moved (any write changes its ctime, which user space cannot set back) is hashed
again. An entry that fails (a byte changed, a file cut short, an index edited) is set aside as
``<key>.damaged`` with a warning naming the file, and rebuilt. The window indices and statistics
that later runs add to an entry (:func:`window_index`, :func:`fitted_statistics`) are checked the
same way (their digests in ``windows-<key>.json`` and inside ``stats-<key>.json``, a window index
also against its split's rows): one that fails is computed again and rewritten, with a warning
naming the file; the rows are not touched. Temporary folders of builders that
died are removed by the next build; build workers die with the process that started them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import functools
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import multiprocessing
import os
import pkgutil
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

import hftraining
from hftraining.core.config import DataConfig
from hftraining.core.errors import ConfigError, DataError, WriteError, io_cause
from hftraining.core.logs import handlers_reached, keeps_only
from hftraining.core.jsonio import dumps as json_dumps, write_json
from hftraining.data.features import EmptyVolume, feature_columns, panel_specs, symbol_specs
# after data.features, whose import is one line naming the package where TA-Lib cannot load (not a traceback)
import talib  # noqa: E402
from hftraining.data.rows import Rows, SymbolRows, fill_panel_features, symbol_rows
from hftraining.data.sources import Collector, Unit, input_files, read_unit, units
from hftraining.data.rows import RowsNeeded
from hftraining.data.validate import check_policy, first_volume

log = logging.getLogger(__name__)

FORMAT = 29  # bump when the stored layout or a feature's formula changes (5: an all-zero volume is empty;
# 6: window indices and statistics carry digests; data.symbols selects a long CSV's rows, the date range cuts
# every layout, YYYYMMDD is decided by the bulk of a column; 7: the date range is cut before validation,
# a long file's rows without a symbol are reported, CSV symbols are text, Alpha158 is exact on constant windows;
# 8: the kept validation report lists every row a rule touched, ffill never fills from a dropped row;
# 9: day-first dates, yfinance headers, unnamed date indexes and comma-grouped volumes are read as written;
# 10: monthly day-first dates are months, a long file's dates are read in one order for every symbol;
# 11: two-digit years are read year-first (yy/mm/dd) where the file writes them so, and in one order per file;
# cs_rank labels are centred: their target scale is keyed by the label's formula; a month name is read in
# either spelling when the first cell is in May; 12: Alpha158's window statistics are exact, VMA/VSTD on a
# zero-volume row divide by the window's mean volume, the key holds the TA-Lib/NumPy/pandas/PyArrow versions;
# 13: an entry's symbols are sorted by name, whatever the order of data.symbols or of the files; line numbers
# past a quoted multi-line cell, seconds in a milliseconds column dropped, mixed daily stamps in the report,
# Bollinger bands NaN where TA-Lib's squares of closes below 2^-480 underflow; 14: a daily bar stamped at UTC
# midnight is its own date for the calendar and hour features in data.timezone, the robust scaler divides a
# column of IQR 0 that varies by its std; 15: stooq's HHMMSS times, Alpaca's/Polygon's t, milliseconds and
# microseconds in one epoch column, stamps with and without a zone refused; 16: each symbol's bar spacing, of
# all its frame's stamps, in the index, kept in a model folder so its few rows are read as training read them;
# 17: a bar at UTC midnight is a date by the gaps up to it, not by the whole frame (calendar_version 3), and
# each symbol's spacing in the index is that of its last bars; 18: the early end of the outlier_timestamp rule reads
# the first rows only, the index holds each symbol's first row with volume (volume_from); 19: a row with a bad
# price/volume cell gives way to a clean row of its timestamp, non-ISO dates take the format of the first
# cell ISO 8601 does not read; 20: stoch reads a fast %K of 50 over a window of one price, rsi 50 until the
# close first moves, volume_ratio 1 over a window without volume, decided exactly; 21: Nasdaq.com's Close/Last
# and $ prices, Investing.com's Price and K/M/B volumes, a '-' cell is empty, Alpha Vantage's adjusted_close is
# the adjusted close, stamps ending in a zone's name are that zone's times (a date so ending is its UTC
# midnight, offset stamps among them read as they say); the market features of a date
# whose universe return overflowed exp); 22: a newest-first file is read in reverse under every
# unsorted_timestamps policy, [bracketed] names, zone abbreviations (EST, ET, ...), Investing.com's German and
# Spanish downloads with decimal commas in a comma-delimited file, two columns read as one close or volume refused; 23: of a timestamp's rows in a newest-first
# file the file's first/last is kept, German/Spanish "151,234" is a decimal comma, an empty twin of a price/volume
# column is dropped; 24: the key holds the inputs' paths as written and the reason for the rows needed, which the
# report gives; the index (and a stats file) holds the warnings the build (the fit) logged, said again to each run
# it serves; 25: a bad Close or Adj Close under price_adjustment=adjusted is the close's defect (report and ffill
# values); 26: the rows out of order are the fewest whose removal leaves the rest sorted (one misdated row, not the
# rows after it); a file skipped for too few rows keeps its report (status skipped) in the entry's report; 27: a
# file of Close and Adj Close without open/high/low takes Adj Close alone (a row with an empty Close was dropped or
# filled from the row before), and two of Binance's period files of one symbol are refused (each was a symbol); 28:
# a file whose rows nearly all break the OHLC rule is refused as misnamed, not clipped; 29: each row's date mark,
# dates.b1, for the labels taken across symbols)
# the DataConfig keys that change which rows are read, validated or computed (with the rows needed)
KEYED_FIELDS = (
    "symbols", "features", "invalid_values", "ohlc_violations", "duplicate_timestamps",
    "unsorted_timestamps", "jump_threshold", "jumps", "start_date", "end_date", "price_adjustment", "timezone",
)
ARRAYS = {"features": np.float32, "returns": np.float32, "times": np.int64, "close": np.float64, "dates": np.bool_}
SUFFIX = {"features": "f32", "returns": "f32", "times": "i64", "close": "f64", "dates": "b1"}
DIGESTS = "file-digests.json"
VERIFIED = "verified.json"


# ----------------------------------------------------------------------------------------- keys


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _file_stamp(path: Path) -> list[int]:
    """[size, mtime, ctime] of a file, in bytes and ns: any write moves its ctime."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


# the coarsest clock tick of a file's times (FAT: 2 s; HFS+, ext3 and many NFS servers: 1 s): a file written
# within it of being hashed could be written again with the same times
STAMP_TICK_NS = 2 * 10**9


def file_digests(files: list[Path], cache_dir: Path | None) -> list[str]:
    """The content digest of each file; remembered under ``cache_dir`` by (path, size, mtime, ctime),
    so an unchanged file is not read again (any write changes its mtime and ctime). A remembered digest
    is trusted only when the file's times were a clock tick (:data:`STAMP_TICK_NS`) older than the moment
    it was hashed (``seen``): on a file system that keeps whole seconds, a file rewritten to the same size
    within the second it was hashed in keeps its times, and its old digest would key the new content to
    the entry of the old (git's "racily clean" files); such a file is hashed again."""
    memo: dict[str, Any] = {}
    memo_path = None if cache_dir is None else cache_dir / DIGESTS
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        if not isinstance(memo, dict):  # damaged: every digest is computed again
            memo = {}
    out, changed = [], False
    for f in files:
        now = time.time_ns()  # before the stat: a write after it moves the times past the tick
        try:
            stamp = _file_stamp(f)
            key = str(f.resolve())
            got = memo.get(key)
            if not (isinstance(got, dict) and got.get("stamp") == stamp and isinstance(got.get("digest"), str)
                    and isinstance(got.get("seen"), int) and got["seen"] - max(stamp[1], stamp[2]) >= STAMP_TICK_NS):
                got, changed = {"stamp": stamp, "digest": _digest(f), "seen": now}, True
                memo[key] = got
        except OSError as e:  # removed since it was listed, unreadable: the reader's one line, not a traceback
            raise DataError(f"{f}: cannot read ({e.strerror or type(e).__name__})") from None
        out.append(got["digest"])
    if changed and memo_path is not None:  # a read-only cache folder: digests are recomputed next time
        atomic_write(memo_path, lambda tmp: tmp.write_text(json.dumps(memo), encoding="utf-8"))
    return out


def atomic_write(path: Path, write: Callable[[Path], None]) -> bool:
    """The store's one way to write a file: ``write(tmp)`` a hidden sibling, then rename it over
    ``path``, so a reader sees the old file or the new one, never half of one. False (and nothing
    left behind) when the store cannot be written: it is then computed again next time."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
        return True
    except (OSError, WriteError):  # WriteError: ``write`` used jsonio.write_json
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # never made (its folder is a file, or cannot be made)
        return False


@contextmanager
def _writing_entry(root: Path) -> Iterator[None]:
    """An I/O failure while an entry's files are written (a full disk, a quota) → one WriteError line
    naming ``data.cache_dir`` ``root``, the cause and what to do (the caller removes the temporary entry)."""
    try:
        yield
    except OSError as e:
        room = "free space there or " if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
        raise WriteError(f"data.cache_dir={root}: cannot write the feature store entry ({io_cause(e)}); {room}set "
                         "data.cache_dir to another folder (null: features computed in memory)") from None


def spec_key(spec: Any) -> str:
    """The key of a cached result: blake2b of the JSON of what it depends on."""
    return hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=16).hexdigest()


def _array_digest(a: np.ndarray) -> str:
    """blake2b of an array's bytes as :meth:`numpy.ndarray.tofile` writes them."""
    return hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).hexdigest()


class _Said(logging.Handler):
    """The warnings this thread logs meanwhile, as [logger name, message]. ``shown``: a record that reaches
    no handler but those that keep records (``_hft_keeps``) goes to logging's last resort (a warning on
    stderr), as it would without them: keeping the warnings must not silence them in a library use without
    logging set up. False in a build worker, whose warnings its parent logs (:func:`_results`)."""

    _hft_keeps = True  # holds records, shows none: not a handler that makes the last resort needless

    def __init__(self, shown: bool = True) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.shown = shown
        self.said: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.said.append([record.name, record.getMessage()])
        last = logging.lastResort
        if self.shown and last is not None and record.levelno >= last.level and self._shows(record.name):
            last.handle(record)

    def _shows(self, name: str) -> bool:
        """Whether this handler is the one to show a record of logger ``name``: no handler that is not a keeper
        reaches it (as ``Logger.callHandlers`` walks) and this is the first keeper that does (once, whatever
        the threads keeping records)."""
        reached = handlers_reached(name)
        return bool(reached) and all(keeps_only(h) for h in reached) and reached[0] is self


@contextmanager
def _saying(shown: bool = True) -> Iterator[list[list[str]]]:
    """The warnings logged (under ``hftraining``) while the block runs: what computing a result said,
    kept with it so that each run it is served to says them too (:func:`_say`). ``shown``: see :class:`_Said`."""
    said = _Said(shown)
    root = logging.getLogger("hftraining")
    root.addHandler(said)
    try:
        yield said.said
    finally:
        root.removeHandler(said)


def _say(said: list[list[str]]) -> None:
    """Log again the warnings ``said`` (:func:`_saying`) under their loggers' names."""
    for name, message in said:
        logging.getLogger(name).warning("%s", message)


def _said_pairs(said: Any) -> bool:
    """Whether ``said`` (read from a file) is a list of [logger name, message]."""
    return isinstance(said, list) and all(isinstance(w, list) and len(w) == 2 and all(isinstance(x, str) for x in w)
                                          for w in said)


def _damaged_file(entry: Path, why: str, redo: str) -> None:
    """Warn that a file of the entry ``entry`` is damaged (``why`` names it); it is computed again."""
    log.warning("feature store entry %s: a file is damaged (%s): %s", entry, why, redo)


def window_index(entry: str | None, spec: dict[str, Any], compute: Callable[[], tuple[np.ndarray, np.ndarray]],
                 dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(ends, symbol ids) of a split's windows: ``compute()``, remembered in the store entry ``entry``
    as ``windows-<key>.ends`` / ``.ids`` (key: ``spec``, the segments and window settings) and
    memory-mapped from there by later runs and every rank (a 70M-window split then costs no
    allocation at start, and a node's ranks share its pages). ``entry=None``: computed each time.

    ``windows-<key>.json`` (written last) holds the spec, the count, each file's blake2b digest and
    its stamps when it last matched, and its own digest, as ``index.json`` and ``verified.json`` do
    for the rows: a file whose stamps moved is hashed again, and every window end is checked to lie
    in its symbol's segment of the split (targets included); a file that fails either is damaged:
    a warning names it and the windows are indexed again."""
    if entry is None:
        return compute()
    base = Path(entry) / f"windows-{spec_key(spec)}"
    got = _open_windows(base, spec, dtype)
    if isinstance(got, tuple):
        return got
    if got is not None:
        _damaged_file(base.parent, got, "the windows are indexed again")
    ends, ids = compute()
    files = {".ends": np.ascontiguousarray(ends, dtype), ".ids": np.ascontiguousarray(ids, np.int32)}
    if all(atomic_write(base.with_suffix(sfx), arr.tofile) for sfx, arr in files.items()):
        try:
            stamps = {sfx: _file_stamp(base.with_suffix(sfx)) for sfx in files}
        except OSError:
            return ends, ids
        _write_record(base.with_suffix(".json"), {
            "spec": spec, "dtype": np.dtype(dtype).name, "n": int(len(ends)),
            "digests": {sfx: _array_digest(arr) for sfx, arr in files.items()}, "stamps": stamps})
    return ends, ids


def _write_record(path: Path, body: dict[str, Any]) -> None:
    """Write a JSON record with its own digest (of the content as a reader parses it: strict JSON,
    a non-finite float written as null)."""
    body = json.loads(json_dumps(body, indent=None))
    body["digest"] = _json_digest(body, "digest")
    text = json_dumps(body, indent=None) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))  # an unwritable store: computed again next time


def _read_record(path: Path) -> dict[str, Any] | str | None:
    """A JSON record of :func:`_write_record`; None when absent; else why it cannot be trusted."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path.name}: unreadable ({e.strerror})"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{path.name}: not JSON"
    if not isinstance(body, dict) or body.get("digest") != _json_digest(body, "digest"):
        return f"{path.name}: its content does not match its digest"
    return body


def _open_windows(base: Path, spec: dict[str, Any], dtype: type) -> tuple[np.ndarray, np.ndarray] | str | None:
    """The remembered windows of ``spec`` as read-only memory maps; None when there are none (a
    miss); else why they cannot be used."""
    record = _read_record(base.with_suffix(".json"))
    if not isinstance(record, dict):
        return record
    try:
        n = int(record["n"])
        if record["spec"] != json.loads(json.dumps(spec)) or record["dtype"] != np.dtype(dtype).name or n < 0:
            return f"{base.name}.json: written for other windows"
        sizes = {".ends": n * np.dtype(dtype).itemsize, ".ids": n * 4}
        moved = []
        for sfx, size in sizes.items():
            path = base.with_suffix(sfx)
            stamp = _file_stamp(path)
            if stamp[0] != size:
                return f"{path.name}: {stamp[0]} bytes, its record says {size}"
            if stamp != record["stamps"][sfx]:
                if _digest(path) != record["digests"][sfx]:
                    return f"{path.name}: its content does not match the digest written with it"
                moved.append(sfx)
        if n == 0:  # an empty file cannot be mapped
            return np.zeros(0, dtype), np.zeros(0, np.int32)
        ends = np.memmap(base.with_suffix(".ends"), dtype=dtype, mode="r", shape=(n,))
        ids = np.memmap(base.with_suffix(".ids"), dtype=np.int32, mode="r", shape=(n,))
        if moved:  # not seen since it was last verified: its windows must lie in their segments
            problem = _windows_out_of_bounds(base.parent, spec, ends, ids)
            if problem:
                return f"{base.name}.ends: {problem}"
            stamps = {**record["stamps"], **{sfx: _file_stamp(base.with_suffix(sfx)) for sfx in moved}}
            _write_record(base.with_suffix(".json"), {**{k: v for k, v in record.items() if k != "digest"}, "stamps": stamps})
    except FileNotFoundError as e:
        return f"{Path(e.filename or base).name}: missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return ends, ids


def _windows_out_of_bounds(folder: Path, spec: dict[str, Any], ends: np.ndarray, ids: np.ndarray) -> str | None:
    """Why a window of ``ends``/``ids`` is not one :func:`~hftraining.data.windows.index_windows`
    can give for ``spec`` in the entry ``folder`` (None: every one is): a symbol id out of range, or
    an end outside :func:`~hftraining.data.splits.end_bounds` of its symbol's segment: targets
    before the segment's first target row or past its last row, or fewer than ``min_history`` real
    inputs in its readable rows. ``spec["segments"]``: each symbol's readable rows [from, stop);
    ``spec["targets_from"]`` (when inputs may read rows before the targets' first): that first row."""
    starts = np.asarray(json.loads((folder / "index.json").read_text(encoding="utf-8"))["starts"], np.int64)
    seg = np.asarray(spec["segments"], np.int64).reshape(-1, 2)
    if len(seg) != len(starts):
        return f"the split has {len(seg)} segments for {len(starts)} symbols"
    first_target = np.asarray(spec["targets_from"], np.int64) if "targets_from" in spec else seg[:, 0]
    lo = starts + np.maximum(first_target - 1, seg[:, 0] + int(spec["min_history"]) - 1)  # the first row that can end a window
    hi = starts + seg[:, 1] - 1 - int(spec["H"])  # the last: its targets end on the segment's last row
    for at in range(0, len(ends), 1 << 22):
        k = np.asarray(ids[at : at + (1 << 22)], np.int64)
        e = np.asarray(ends[at : at + (1 << 22)], np.int64)
        if ((k < 0) | (k >= len(starts))).any():
            i = int(np.flatnonzero((k < 0) | (k >= len(starts)))[0])
            return f"window {at + i} has symbol id {int(k[i])} of {len(starts)}"
        bad = (e < lo[k]) | (e > hi[k])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"window {at + i} ends on row {int(e[i])}, outside rows {int(lo[k[i]])}..{int(hi[k[i]])} of its segment"
    return None


def fitted_statistics(entry: str | None, spec: dict[str, Any], fit: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fit()`` (a JSON-able dict: the scaler and target statistics of a split), remembered in the
    store entry ``entry`` as ``stats-<key>.json`` (key: ``spec``, the settings and training rows) so a
    later run on the same rows and split (every rank, every warm start) reads it instead of passing
    over every training row again (7 s at 70 million rows). JSON floats round-trip exactly. The
    warnings the fit logged (a robust scaler's columns scaled by their standard deviation, a symbol
    left unscaled in some columns) are kept with it and said again to each run that reads it. The file
    holds its own digest: one that does not match (or a spec that is not ``spec``) is damaged, a
    warning names it and the statistics are fitted again."""
    path = None if entry is None else Path(entry) / f"stats-{spec_key(spec)}.json"
    if path is not None:
        saved = _read_record(path)
        if isinstance(saved, dict):
            try:
                if (saved["spec"] == json.loads(json.dumps(spec)) and isinstance(saved["stats"], dict)
                        and _said_pairs(saved["said"])):
                    _say(saved["said"])
                    return saved["stats"]
                saved = f"{path.name}: written for other statistics"
            except KeyError as e:
                saved = f"{path.name}: no {e.args[0]!r}"
        if saved is not None:
            _damaged_file(path.parent, saved, "the statistics are fitted again")
    with _saying() as said:
        stats = fit()
    if path is not None:
        _write_record(path, {"spec": spec, "stats": stats, "said": said})
    return stats


def _libraries() -> dict[str, str]:
    """The versions of the libraries that read and compute the rows: an upgrade that changes an indicator's
    values or how a file is parsed builds a new entry (an entry of the old ones would disagree with the rows
    computed in memory, as prediction computes them)."""
    import pyarrow  # imported where files are read (sources), not at start-up

    return {"talib": talib.__version__, "numpy": np.__version__, "pandas": pd.__version__, "pyarrow": pyarrow.__version__}


@functools.lru_cache(maxsize=1)
def _code() -> str:
    """Digest of the data layer's source (every module of ``hftraining.data``, which read, validate and
    compute the stored rows): a checkout whose reading or feature code changed builds new entries, where an
    entry keyed by :data:`FORMAT` alone served rows computed the old way until someone bumped it.
    The modules are those Python imports, read through their loaders: an editor's lock file beside them
    (Emacs's ``.#features.py``, a link to nowhere) failed every build with a traceback, and a package
    imported from a zip archive (or installed without its sources) hashed no file, a constant."""
    h = hashlib.blake2b(digest_size=16)
    names = ["", *sorted(f".{m.name}" for m in pkgutil.iter_modules(importlib.import_module(__package__).__path__))]
    for name in names:
        spec = importlib.util.find_spec(__package__ + name)
        if spec is None or spec.origin is None or not hasattr(spec.loader, "get_data"):
            raise ConfigError(f"data.cache_dir: the code of module {__package__ + name} cannot be read, and the "
                              "store's key holds it; set data.cache_dir=null (rows computed in memory)")
        h.update(name.encode() + b"\0" + spec.loader.get_data(spec.origin))
    return h.hexdigest()


def store_key(us: list[Unit], d: DataConfig, needed: RowsNeeded) -> str:
    """Hex digest of the units, their files' contents, the keyed data settings and ``needed``.

    The units' paths are keyed as written, and ``needed`` with its reason: the entry's validation
    report names each file by that path and gives that reason for a symbol with too few rows, so a
    folder copied or moved elsewhere (or named by a relative path), or another ``sequence_length``
    and ``prediction_horizon`` of the same sum, gets an entry whose report says what a build of it
    says, not what the first build of those contents said."""
    files = input_files(us)
    h = hashlib.blake2b(digest_size=16)
    settings = {**{k: getattr(d, k) for k in KEYED_FIELDS}, "rows_needed": needed.rows, "rows_needed_why": needed.why,
                "libraries": _libraries()}
    h.update(json.dumps({"format": FORMAT, "version": hftraining.__version__, "code": _code(), **settings},
                        sort_keys=True).encode())
    h.update(json.dumps([[u.kind, u.path, u.symbol] for u in us]).encode())
    cache = None if d.cache_dir is None else Path(d.cache_dir)
    for f, dig in zip(files, file_digests(files, cache)):
        h.update(f"\0{f}\0{dig}".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- build


def _job(unit: Unit, d: DataConfig, needed: RowsNeeded, worker: bool = False):
    """Read, validate and compute one unit → (unit, {symbol: arrays or None}, report (a unit with too few
    rows in all: status ``skipped``, no symbol), {symbol: its first row with volume,
    :func:`~hftraining.data.validate.first_volume`}, the warnings logged meanwhile (dates read one of two
    ways, ...): kept in the entry, so each run it serves says them). ``worker``: run in a build worker,
    whose parent logs them (:func:`_results`)."""
    with _saying(shown=not worker) as said:
        frames, report = read_unit(unit, d, needed)
        got, firsts = {}, {}
        for sym, frame in frames.items():
            # panel features: after every symbol
            r = symbol_rows(frame, symbol_specs(d.features), sym, needed.usable, tz=d.timezone)
            got[sym] = None if r is None else dataclasses.astuple(r)
            firsts[sym] = first_volume(frame)
        return unit, got, report, firsts, said


def _results(us: list[Unit], d: DataConfig, needed: RowsNeeded) -> Iterator[tuple]:
    """:func:`_job` of every unit, in order; ``data.num_workers`` processes, a few units ahead (a
    worker's warnings are logged here, where the run's logging is set up)."""
    if d.num_workers <= 0 or len(us) <= 1:
        for u in us:
            yield _job(u, d, needed)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    pool = ProcessPoolExecutor(max_workers=d.num_workers, mp_context=ctx, initializer=_die_with_parent,
                               initargs=(os.getpid(),))
    try:
        ahead = 2 * d.num_workers
        pending = [pool.submit(_job, u, d, needed, True) for u in us[:ahead]]
        nxt = len(pending)
        while pending:
            unit = us[nxt - len(pending)]  # the unit of the first pending job
            try:
                res = pending.pop(0).result()
            except BrokenProcessPool:
                raise DataError(f"data.num_workers={d.num_workers}: a build worker process died while {unit.name} "
                                "and the units after it were read (out of memory? a script run with workers needs its "
                                "code under `if __name__ == \"__main__\":`); set data.num_workers=0 to build in this "
                                "process") from None
            if nxt < len(us):
                pending.append(pool.submit(_job, us[nxt], d, needed, True))
                nxt += 1
            _say(res[-1])
            yield res
        pool.shutdown(wait=True)
    except BaseException:  # Ctrl-C, SIGTERM (``Terminated``), the build's own error, or the caller stopping early
        _stop(pool)
        raise


def _stop(pool: ProcessPoolExecutor) -> None:
    """End a pool whose results are no longer wanted, without waiting on its pipe. A signal sent to the whole
    process group (Ctrl-C in a terminal, Slurm's ``scancel``, systemd stopping a service) reaches the workers
    too, and one stopped while it sent its rows back left part of that message in the pipe: the pool's own
    shutdown, and the interpreter's on the way out, waited for the rest for ever. The workers are killed (the
    queued units with them), and the pipe's last writer, this process's end, closed: the pool's reading thread
    gets end-of-file instead of waiting, and ends."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        try:
            p.kill()
        except (OSError, ValueError, AttributeError):  # gone meanwhile, or closed
            pass
    for p in procs:
        try:
            p.join(5)
        except (OSError, ValueError, AttributeError):
            pass
    results = getattr(pool, "_result_queue", None)
    writer = getattr(results, "_writer", None)
    if writer is not None:
        try:
            writer.close()
        except OSError:
            pass
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    if manager is not None:
        manager.join(5)


def _die_with_parent(parent: int) -> None:
    """Build worker initialiser: the kernel kills this worker when the process that started it dies
    (a SIGKILLed build would otherwise leave its workers blocked on their pipe, holding memory)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # not Linux: the pool's own shutdown is all there is
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(1)


class _Sink:
    """Where built symbols go: appended to the entry's files (each file's digest computed as it is
    written), or kept in memory."""

    def __init__(self, folder: Path | None, n_features: int):
        self.folder, self.F = folder, n_features
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        self.files: dict[str, Any] | None = None
        if folder is not None:
            self.files = {}
            with _writing_entry(folder.parent):
                for k in ARRAYS:
                    self.files[k] = open(folder / f"{k}.{SUFFIX[k]}", "wb")
        self.hashes = {k: hashlib.blake2b(digest_size=16) for k in ARRAYS}
        self.offset, self.where = 0, {}
        self.spacing: dict[str, float | None] = {}  # each symbol's bar spacing (SymbolRows.spacing)
        self.dates: list[np.ndarray] = []  # which rows are dates (SymbolRows.dates), for the panel features

    def add(self, sym: str, r: SymbolRows) -> None:
        for k in ARRAYS:
            a = np.ascontiguousarray(getattr(r, k), dtype=ARRAYS[k])
            if k == "features" and a.shape[1] < self.F:  # room for the panel features, filled after every symbol
                a = np.concatenate([a, np.zeros((len(a), self.F - a.shape[1]), np.float32)], axis=1)
            if self.files is None:
                self.parts[k].append(a)
            else:
                data = a.tobytes()
                self.hashes[k].update(data)
                with _writing_entry(self.folder.parent):
                    self.files[k].write(data)
        self.where[sym] = (self.offset, len(r))
        self.spacing[sym] = r.spacing
        self.dates.append(np.asarray(r.dates, dtype=bool))
        self.offset += len(r)

    def close(self) -> None:
        """Flush, fsync and close every file (all of them closed, also after a failed write)."""
        if self.files is None:
            return
        try:
            with _writing_entry(self.folder.parent):
                for fh in self.files.values():
                    fh.flush()
                    os.fsync(fh.fileno())
        finally:
            for fh in self.files.values():
                try:
                    fh.close()
                except OSError:
                    pass  # its write failed above, or in :meth:`add`: that error is the one raised

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for k, dt in ARRAYS.items():
            shape = (0, self.F) if k == "features" else (0,)
            out[k] = np.concatenate(self.parts[k]) if self.parts[k] else np.zeros(shape, dt)
        return out


def _build(d: DataConfig, us: list[Unit], needed: RowsNeeded, folder: Path | None):
    """Build every symbol's rows into ``folder`` (or memory) → (symbols, starts, lengths, report, skipped,
    arrays (in memory only), the blake2b digest of each file as written, each symbol's bar spacing, each
    symbol's first row with volume, the warnings logged while the units were read (:func:`_job`))."""
    col = Collector(d, needed)
    F = len(feature_columns(d.features))
    sink = _Sink(folder, F)
    skipped: list[str] = []
    firsts: dict[str, int | None] = {}
    said: list[list[str]] = []
    results = _results(us, d, needed)
    try:
        try:
            for unit, got, report, volume_from, warned in results:
                firsts.update(volume_from)
                said += warned
                col.add(unit, list(got), report)
                for sym, arrays in got.items():
                    if arrays is None:
                        skipped.append(sym)
                    else:
                        sink.add(sym, SymbolRows(*arrays))
        finally:
            # stopped here (Ctrl-C, SIGTERM, a unit's error): the build workers end now, not when the traceback
            # that holds this generator is let go (the pool's exit, then, waited on a pipe a stopped worker left
            # half written)
            results.close()
    finally:
        sink.close()
    digests = {k: h.hexdigest() for k, h in sink.hashes.items()}
    arrays = sink.arrays() if folder is None else None
    if panel_specs(d.features):  # across symbols, now that every symbol's rows are there
        dates = np.concatenate(sink.dates) if sink.dates else np.zeros(0, dtype=bool)
        if arrays is not None:
            fill_panel_features(arrays["features"], arrays["returns"], arrays["times"], d.features, dates=dates)
        elif sink.offset:
            with _writing_entry(folder.parent):
                n = sink.offset
                feats = np.memmap(folder / "features.f32", dtype=np.float32, mode="r+", shape=(n, F))
                fill_panel_features(feats, np.memmap(folder / "returns.f32", dtype=np.float32, mode="r", shape=(n,)),
                                    np.memmap(folder / "times.i64", dtype=np.int64, mode="r", shape=(n,)), d.features,
                                    dates=dates)
                feats.flush()
                del feats
                with open(folder / "features.f32", "rb+") as fh:
                    os.fsync(fh.fileno())
                digests["features"] = _digest(folder / "features.f32")  # the file as it now stands
    order = [s for s in col.order() if s in sink.where]
    no_rows = set(skipped)  # a set: thousands of symbols, each looked up once
    skipped = [s for s in col.order() if s in no_rows]
    starts = [sink.where[s][0] for s in order]
    lengths = [sink.where[s][1] for s in order]
    spacings = [sink.spacing[s] for s in order]
    firsts_in_order = [firsts.get(s) for s in order]
    return order, starts, lengths, col.report(), skipped, arrays, digests, spacings, firsts_in_order, said


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _json_digest(record: dict[str, Any], field: str) -> str:
    """blake2b of a JSON record's content without its own digest ``field``."""
    body = {k: v for k, v in record.items() if k != field}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def _index_digest(index: dict[str, Any]) -> str:
    return _json_digest(index, "index_digest")


def _stamps(folder: Path) -> dict[str, list[int]]:
    """(size, mtime, ctime) in ns of the entry's files: any write moves the ctime."""
    return {name: _file_stamp(folder / name) for name in ["index.json", *(f"{k}.{SUFFIX[k]}" for k in ARRAYS)]}


def _record_verified(folder: Path) -> None:
    """Remember the entry's stamps as verified (a read-only store: verified by hashing again next time)."""
    try:
        stamps = _stamps(folder)
    except OSError:
        return
    atomic_write(folder / VERIFIED, lambda tmp: tmp.write_text(json.dumps(stamps), encoding="utf-8"))


def _verify(folder: Path, index: dict[str, Any]) -> str | None:
    """Why the entry's files are not what was written (None: they are). Files whose stamps match
    ``verified.json`` are trusted; the others are hashed against the index's digests."""
    if index.get("index_digest") != _index_digest(index):
        return "index.json: its content does not match its digest"
    try:
        known = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):  # damaged: every file is hashed again
        known = {}
    now = _stamps(folder)
    if known == now:
        return None
    for k in ARRAYS:
        name = f"{k}.{SUFFIX[k]}"
        if known.get(name) == now[name]:
            continue
        if _digest(folder / name) != index["digests"][k]:
            return f"{name}: its content does not match the digest written with it"
    _record_verified(folder)
    return None


def _open(folder: Path) -> tuple[Rows, dict[str, Any]] | str | None:
    """The entry's rows as read-only memory maps; None for an entry of another version's format (it
    is rebuilt like a miss); else why the files cannot be used (incomplete or damaged)."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        if isinstance(index, dict) and index.get("format") != FORMAT:
            return None
        n, F = int(index["n_rows"]), int(index["n_features"])
        arrays = {}
        for k, dt in ARRAYS.items():
            shape = (n, F) if k == "features" else (n,)
            path = folder / f"{k}.{SUFFIX[k]}"
            if path.stat().st_size != int(np.prod(shape)) * np.dtype(dt).itemsize:
                return f"{path.name}: {path.stat().st_size} bytes, the index says {int(np.prod(shape)) * np.dtype(dt).itemsize}"
        problem = _verify(folder, index)
        if problem:
            return problem
        for k, dt in ARRAYS.items():
            shape = (n, F) if k == "features" else (n,)
            path = folder / f"{k}.{SUFFIX[k]}"
            arrays[k] = np.memmap(path, dtype=dt, mode="r", shape=shape) if n else np.zeros(shape, dt)
        spacings = [None if v is None else float(v) for v in index["spacings"]]
        if len(spacings) != len(index["symbols"]):
            return f"index.json: {len(spacings)} spacings for {len(index['symbols'])} symbols"
        if len(index["volume_from"]) != len(index["symbols"]):
            return f"index.json: {len(index['volume_from'])} volume_from for {len(index['symbols'])} symbols"
        if not _said_pairs(index["warnings"]):
            return "index.json: warnings are not [logger, message] pairs"
        rows = Rows(list(index["symbols"]), np.asarray(index["starts"], np.int64), np.asarray(index["lengths"], np.int64),
                    **arrays, spacings=spacings)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return rows, index


def _set_aside(folder: Path, why: str) -> None:
    """Move a damaged entry to ``<key>.damaged`` (replacing an older one) with a warning."""
    aside = folder.with_name(folder.name + ".damaged")
    log.warning("feature store entry %s is damaged (%s): set aside as %s and rebuilt", folder, why, aside)
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(folder, aside)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_temporaries(root: Path, own_key: str) -> None:
    """Remove the temporary folders of builds that died: ``.<key>.<uuid>.tmp`` whose key's lock no
    live builder holds (``own_key``'s lock is held by this process, so its temporaries are stale)."""
    for tmp in root.glob(".*.tmp"):
        key = tmp.name.split(".")[1]
        if key == own_key:
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        try:
            with open(root / f"{key}.lock", "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a builder holds it
                shutil.rmtree(tmp, ignore_errors=True)
                fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError:
            continue


def load_rows(d: DataConfig, needed: RowsNeeded) -> tuple[Rows, dict[str, Any]]:
    """Every symbol's rows of ``d`` → (rows, validation report): mapped from the store entry of
    ``d.cache_dir`` (built first when absent) or, with ``cache_dir=None``, built in memory.

    The report is the validation report of the rows plus ``"cache": "hit" | "miss" | "rebuilt" (a
    damaged entry, set aside) | "off" | "unwritable"`` (a store that cannot be written and holds no
    usable entry: built in memory, with a warning) and
    ``"skipped_symbols"``: symbols whose features leave fewer than ``min_rows`` rows, and ``"volume_from"``:
    each symbol's first row with volume (:func:`~hftraining.data.validate.first_volume`), for the pipeline."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a worker process importing the script that started it (spawn), whose code reads the data at import:
        # the worker would wait for the lock its parent holds while the parent waits for the worker
        raise ConfigError("data.num_workers: a worker process, starting, ran the script that started it, which reads "
                          "the data again; put the script's code under `if __name__ == \"__main__\":` (or set "
                          "data.num_workers=0)")
    check_policy(d)
    us = units(d)
    if d.cache_dir is None:
        return _in_memory(d, us, needed, "off")
    root = Path(d.cache_dir)
    key = store_key(us, d, needed)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{key}.lock").touch()
    except OSError as e:
        # a read-only store (shared, or a copied run's): a complete entry is read as it stands (entries are
        # renamed into place whole, and nothing can set one aside or rebuild it there); else built in memory
        try:
            hit = _open(root / key) if (root / key).is_dir() else None
        except OSError:  # not even readable
            hit = None
        if isinstance(hit, tuple):
            return _served(hit, "hit", root / key)
        damaged = f", its entry {root / key} cannot be used ({hit})" if isinstance(hit, str) else ""
        log.warning("feature store: cannot write to data.cache_dir=%s (%s)%s; features are computed in memory",
                    root, e.strerror, damaged)
        return _in_memory(d, us, needed, "unwritable")
    folder = root / key
    no_volume = root / f"{key}.no-volume.json"  # these inputs hold a symbol without volume (see below)
    with _locked(root / f"{key}.lock"):
        known = _read_no_volume(no_volume)
        if known is not None:  # the build of these inputs and features stopped at it before: do not read again
            raise EmptyVolume(*known)
        hit = _open(folder) if folder.is_dir() else None
        status = "hit"
        if isinstance(hit, str):
            _set_aside(folder, hit)
            status, hit = "rebuilt", None
        if hit is None:
            shutil.rmtree(folder, ignore_errors=True)  # an entry of an older format, if any
            status = "miss" if status == "hit" else status
            _remove_stale_temporaries(root, key)
            tmp = root / f".{key}.{uuid.uuid4().hex}.tmp"
            with _writing_entry(root):
                tmp.mkdir(parents=True)
            try:
                try:
                    order, starts, lengths, report, skipped, _, digests, spacings, firsts, said = _build(d, us, needed, tmp)
                except EmptyVolume as e:  # remembered, so the next run drops the volume features at once
                    atomic_write(no_volume, lambda t: write_json(t, {"symbol": e.symbol, "specs": e.specs}, indent=None))
                    raise
                index = {
                    "format": FORMAT, "key": key, "version": hftraining.__version__,
                    "symbols": order, "starts": starts, "lengths": lengths, "spacings": spacings, "volume_from": firsts,
                    "n_rows": _total(tmp), "n_features": len(feature_columns(d.features)),
                    "features": list(d.features), "feature_columns": feature_columns(d.features),
                    "report": report, "skipped_symbols": skipped, "digests": digests, "warnings": said,
                }
                index["index_digest"] = _index_digest(json.loads(json.dumps(index)))  # as a reader parses it
                with _writing_entry(root):
                    (tmp / "index.json").write_text(json_dumps(index, indent=None) + "\n", encoding="utf-8")
                    _record_verified(tmp)  # just written and hashed as written: trusted as they stand
                    os.rename(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            hit = _open(folder)
            if isinstance(hit, str):  # a disk that lost the files we just wrote
                raise DataError(f"{folder}: the feature store entry just written cannot be read back ({hit})")
    return _served(hit, status, folder)


def _served(hit: tuple[Rows, dict[str, Any]], status: str, folder: Path) -> tuple[Rows, dict[str, Any]]:
    """(rows, report) of the opened entry ``folder``, logged with its ``status``."""
    rows, index = hit
    log.info("feature store %s: %s (%d symbols, %d rows)", status, folder, len(rows.symbols), len(rows.returns))
    if status == "hit":  # said at the build; said again to each run it serves
        _say(index["warnings"])
    for key in ("mixed_stamps", "zoneless_stamps"):  # said at the build; said again to each run it serves
        said = index["report"].get(key)
        if status == "hit" and isinstance(said, dict):
            log.warning("%s", said.get("why"))
    return rows, {**index["report"], "skipped_symbols": index["skipped_symbols"], "cache": status, "store": str(folder),
                  "volume_from": _volume_from(rows.symbols, index["volume_from"])}


def _volume_from(symbols: list[str], firsts: list[Any]) -> dict[str, int | None]:
    """{symbol: ns of its first row with volume (None: no row has volume)}: the report's ``volume_from``,
    which the pipeline takes out (:func:`hftraining.data.pipeline.panel_rows`) to decide "no volume"
    on the rows before the first validation date."""
    return {sym: None if v is None else int(v) for sym, v in zip(symbols, firsts)}


def _read_no_volume(path: Path) -> tuple[str, list[str]] | None:
    """(symbol, volume feature specs) of an entry whose build met a symbol without volume, or None."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return str(raw["symbol"]), [str(x) for x in raw["specs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none (or damaged: then the build finds the symbol again)


def _in_memory(d: DataConfig, us: list[Unit], needed: RowsNeeded, status: str) -> tuple[Rows, dict[str, Any]]:
    order, starts, lengths, report, skipped, arrays, _, spacings, firsts, _ = _build(d, us, needed, None)
    rows = Rows(order, np.asarray(starts, np.int64), np.asarray(lengths, np.int64), **arrays, spacings=spacings)
    return rows, {**report, "skipped_symbols": skipped, "cache": status, "volume_from": _volume_from(order, firsts)}


def _total(folder: Path) -> int:
    """Rows written to an entry so far (all symbols, including any not in the run's order)."""
    return (folder / "returns.f32").stat().st_size // np.dtype(np.float32).itemsize
