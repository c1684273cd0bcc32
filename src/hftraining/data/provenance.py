"""What a model folder records of the rows its training read (``source_rows`` in preprocessing.json:
each symbol's count, last date and a digest of its dates and closes), and what differs when that data
is read again: rows appended since, rows changed up to the last training date, symbols added or gone.
Evaluating on newer data is legitimate; the record lets it say so instead of passing in silence."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from hftraining.core.config import shown, split_date_ns
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.rows import Rows
from hftraining.data.splits import rows_before


def _rows_digest(rows: Rows, sl: slice) -> str:
    """SHA-1 of rows ``sl``'s dates and closes (0.2 s per 10M rows; no adversary here): the prices as read
    and validated, with no arithmetic, so the same on every machine, unlike the features and returns
    computed from them (a last-digit difference of a logarithm would read as a change)."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(np.ascontiguousarray(rows.times[sl], dtype="<i8").data)
    h.update(np.ascontiguousarray(rows.close[sl], dtype="<f8").data)
    return h.hexdigest()


def source_rows(rows: Rows) -> dict[str, dict[str, Any]]:
    """Each symbol's rows ``{"AEM": {"rows": n, "last": iso, "digest": hex}}``, kept in preprocessing.json
    (:attr:`Preprocessing.source_rows`): a digest of its first ``n`` rows read again tells rows appended
    since from rows changed inside the data the model was trained on."""
    out = {}
    for k, sym in enumerate(rows.symbols):
        sl = rows.rows(k)
        last = pd.Timestamp(int(rows.times[sl.stop - 1]), tz="UTC").isoformat()
        out[sym] = {"rows": sl.stop - sl.start, "last": last, "digest": _rows_digest(rows, sl)}
    return out


def check_source_rows(raw: Any, where: str) -> dict[str, tuple[int, int, str]]:
    """``source_rows`` of a preprocessing.json (untrusted) → {symbol: (rows, last ns, digest)}; a
    DataError naming ``where`` and the symbol for anything else."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: source_rows: expected {{symbol: {{rows, last, digest}}}}, got {shown(raw)}")
    out = {}
    for sym, rec in raw.items():
        n = rec.get("rows") if isinstance(rec, dict) else None
        if (not isinstance(rec, dict) or set(rec) != {"rows", "last", "digest"} or type(n) is not int or n < 1
                or not isinstance(rec["digest"], str)):
            raise DataError(f"{where}: source_rows.{sym}: expected {{rows: a count >= 1, last: a date, digest}}, "
                            f"got {shown(rec)}")
        try:
            last = split_date_ns(rec["last"], f"source_rows.{sym}.last")
        except ConfigError as e:
            raise DataError(f"{where}: {e}") from None
        out[sym] = (n, last, rec["digest"])
    return out


DAY = 86400 * 10**9  # ns


def _when(ns: int, times: np.ndarray) -> str:
    """A date as the data show it: the day alone when every stamp of the symbol's ``times`` (int64 ns) is a
    UTC midnight (daily bars written as dates); else the instant, so that an hourly bar at 00:00 is not read
    as its whole day ("5 rows after 2024-01-31" of bars from 01:00 that day on)."""
    t = pd.Timestamp(ns, tz="UTC")
    return t.date().isoformat() if not (np.asarray(times, dtype=np.int64) % DAY).any() else t.isoformat()


def data_changes(recorded: dict[str, tuple[int, int, str]], rows: Rows) -> tuple[list[str], dict[str, int]]:
    """What differs between ``rows`` and the rows training read (``recorded``:
    :func:`check_source_rows`) → (one phrase per symbol that changed, e.g. "AEM: 250 rows after
    2024-10-08"; each recorded symbol whose first rows are those training read → their count). Rows
    appended after a symbol's last date change nothing the model was trained on; rows changed, added or
    removed up to it, and symbols added or removed, change the data its splits were cut from."""
    changes, same = [], {}
    for k, sym in enumerate(rows.symbols):
        sl = rows.rows(k)
        if sym not in recorded:
            changes.append(f"{sym}: new (not in the training data)")
            continue
        n, last, digest = recorded[sym]
        if sl.stop - sl.start >= n and _rows_digest(rows, slice(sl.start, sl.start + n)) == digest:
            same[sym] = n
            if sl.stop - sl.start > n:
                changes.append(f"{sym}: {sl.stop - sl.start - n} rows after {_when(last, rows.times[sl])}")
        else:
            now = rows_before(rows.times[sl], last + 1)
            changes.append(f"{sym}: its rows up to {_when(last, rows.times[sl])} differ from training's ({n} rows then, "
                           f"{now} now)")
    present = set(rows.symbols)
    changes += [f"{sym}: gone (the model was trained on it)" for sym in recorded if sym not in present]
    return changes, same
