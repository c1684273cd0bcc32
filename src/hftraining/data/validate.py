"""Validation rules → (clean frame, report). Every input row is accounted for; nothing is filled
from the future.

Rules, applied in this order to each symbol's rows (``data.*`` keys choose the policy):

=====================  ==========================================================  =======================
rule                   what it catches                                             policy (default first)
=====================  ==========================================================  =======================
``missing_column``     no timestamp, close or volume column                        file unusable
``blank_line``         a line with no value at all                                 dropped
``missing_symbol``     long file: empty ``symbol`` cell                            dropped
``bad_timestamp``      empty or unparseable timestamp                              dropped
``outlier_timestamp``  a timestamp far outside the file's range (see below)        dropped
``unsorted_timestamp`` a row out of time order (the fewest such: see below)        ``unsorted_timestamps``: sort (repaired) | drop | error
``duplicate_timestamp`` a timestamp seen in another row (a row with a bad          ``duplicate_timestamps``: keep first | last | error
                       price/volume cell yields to one without: a dividend row)
``non_numeric``        a price/volume cell that is not a number (the report        ``invalid_values``: drop | ffill | error
                       names each column, its count and a first example)
``nan_or_inf``         a price/volume cell that is empty (or ``-``), NaN or ±Inf   ``invalid_values``
``non_positive_price`` open/high/low/close <= 0                                    ``invalid_values``
``negative_volume``    volume < 0 (0 is allowed)                                   ``invalid_values``
``ohlc_inconsistent``  high < max(open, close) or low > min(open, close)           ``ohlc_violations``: clip | drop | error
``jump``               a close > ``jump_threshold`` (|log return|) from the last   ``jumps``: flag | drop | error
                       kept close, until a new level holds (see below)
``too_few_rows``       fewer kept rows than one window needs                       file/symbol unusable
=====================  ==========================================================  =======================

``outlier_timestamp``: sort the timestamps; at either end, the outermost rows — at most 1% of the
rows, at least one — are outliers when the gap that separates them from the other rows is longer
than (a) the whole time span of those other rows, (b) 100× the median spacing of consecutive rows
and (c) :data:`OUTLIER_MIN_GAP` (7 days, so that a weekend or a holiday in intraday data is never
one). One row dated 2087 (or 1987) in a 2020–2024 file is that one row, dropped, not a row sorted
to the end. The late end is judged by the rows before it; the early end by a bounded look-ahead:
a group of the first ``k`` rows by the first 100·``k`` rows only (their span and median spacing;
:data:`OUTLIER_ROWS_PER`), so the rows of a validation or test period later in the file never
decide whether an early (training) row is dropped. The rule depends on the file only, never on
the clock, so a file's report (and the feature store's entry for it) does not change with the day
it is checked.

An entirely empty volume column (every cell empty, ``-``, NaN or 0: FX, indices) is not a per-row defect:
the rows are kept with NaN volume, the report lists the symbol under ``volume_empty`` and the
features of ``data.features`` that need volume under ``dropped_features`` (training drops them
for every symbol; see :func:`hftraining.data.features.drop_volume_features`). Training also drops
them when a symbol reports no volume in its rows before the first validation date, whatever the
rows after report (:func:`first_volume`, :func:`hftraining.data.pipeline.prepare`); this report,
which knows no split, lists the whole file's ``volume_empty`` only. A missing volume column is
still an error.

Close and Adj Close: with both columns, ``data.price_adjustment`` (default ``adjusted``) takes
the close from Adj Close and multiplies open/high/low by Adj Close / Close of the row (volume is
unchanged), or (``raw``) takes Close and ignores Adj Close; the report's ``close_column`` says
which and why. A file with only Adj Close uses it as the close. Under ``adjusted`` a row whose Close
or Adj Close is bad (empty, text, <= 0) has a bad close: the value rules report it under the close's
rule, in column ``close`` (Close's cell) or ``adj_close`` (Adj Close's, where Close is good), and
never as a NaN or Inf of the open/high/low the ratio could not scale; ``ffill`` fills that row's
whole bar from the previous kept row. A file without open, high and low has nothing to scale: its
close is Adj Close alone, whatever its Close cell holds.

Out of order: the rows ``unsorted_timestamp`` reports are the fewest whose removal leaves the others in
time order (:func:`out_of_order`; of equally few, the later lines): one row dated 2031 in a 2020-2026
file, or a row moved up three places, is that one row, which ``drop`` drops, ``sort`` moves and
``error`` names, not the rows below it that are earlier than it (until 2026-12-06 every row earlier than
a row above it was reported, so one misdated row dropped the rest of the file under ``drop``).

Jumps: a close whose |log return| from the last kept close (not the row before it in the file)
exceeds ``jump_threshold`` (default 0.5: a move of x1.65 or /1.65; 0 checks none) is a jump, until
:data:`JUMP_LEVEL_ROWS` (4) consecutive rows have jumped from that close to a level they agree on (each
within the threshold of the row before it): the 4th is kept and the rows after it are judged by it. So a
spike of one to three bars is dropped whole and the good bar after it is kept, and a level that holds (a
split under ``data.price_adjustment: raw``, a real re-pricing) costs three rows, not the rest of the file.
Whether a row is a jump reads that row and the rows before it only, except on a file's first rows, which no
earlier row judges: one to three first rows that the 4 rows after them jump from, to a level those 4 agree on,
are the spike (dropped), not those 4 rows. ``flag`` lists (and ``error`` stops at the first of) the rows
``drop`` drops. Validated again, the kept rows lose nothing unless a new level
was taken: there its kept row is a jump from the kept row before it, which a rule that reads no later row
cannot tell from the first bar of a spike, so the level costs three rows again.

Too few rows: a file (or Parquet unit) none of whose symbols keeps the rows one window needs is
skipped with its whole report, status ``skipped`` (:class:`TooFewRows` carries it): each rule's rows,
the kept rows counted under ``too_few_rows``, and ``too_few_rows`` naming each symbol's reason in one line.

Newest first: a symbol whose rows the file lists newest first (more steps between consecutive rows
go back in time than forward: Investing.com's and Nasdaq.com's downloads, broker statements) is read
in reverse whatever ``unsorted_timestamps`` says; each row the reversal moves is listed as repaired
under ``unsorted_timestamp`` and the report's ``newest_first`` names the symbol. The policy then
judges the rows out of place in that order (under ``error``, a newest-first file was refused at its
second row; under ``drop``, all its rows but the first were dropped). Of rows sharing a timestamp,
``duplicate_timestamps`` keeps the first or the last in the file, neighbours or not.

Date range: rows dated outside [``data.start_date``, ``data.end_date``) (UTC) are not read. They are
cut right after the timestamps are parsed, before every rule, so the rules see the same rows in
every layout (a Parquet scan that pushes the range down never reads them): a bad cell of the first
row in the range is not forward-filled from a row before it, a jump into the range is not flagged.
``rows_in`` counts the rows in the range and the rows without a usable timestamp (blank lines,
``bad_timestamp``: the rules report them wherever they are).

Repairs: ``sort`` reorders rows by time (stable); ``ffill`` replaces a bad cell by the same column's
value in the previous kept row (a row with no previous kept row — every bad row before the first row
without a bad cell — is dropped: never back-filled, never filled from a dropped row);
``clip`` sets high = max(open, high, close) and low = min(open, low, close). Under ``ffill``, a symbol whose
filled cells still came from rows the rules dropped after :data:`UNFILL_PASSES` passes has every filled row
dropped instead, under its value rule, and the report's ``ffill_fallback`` says so ({symbol: one line}).
A row that breaks several rules is counted as dropped under the first rule that drops it, so
``rows_in == rows_kept + rows_dropped`` holds for every file. Each rule's ``rows`` lists every row it
dropped, repaired or flagged (sorted; :func:`format_report` prints the first :data:`MAX_ROWS_LISTED`).
Row numbers in the report are the file's 1-based line numbers for CSV (the header is line 1) and
1-based row numbers for Parquet.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig, split_date_ns
from hftraining.data import io
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.features import exact_median, volume_features
from hftraining.data.rows import ANY_ROWS, RowsNeeded

MAX_ROWS_LISTED = 5  # row numbers per rule in the printed report (the report itself lists every row)
VALUE_RULES = ("non_numeric", "nan_or_inf", "non_positive_price", "negative_volume")
RULES = (
    "blank_line", "missing_symbol", "bad_timestamp", "outlier_timestamp", "unsorted_timestamp",
    "duplicate_timestamp", *VALUE_RULES, "ohlc_inconsistent", "jump", "too_few_rows",
)
OUTLIER_MIN_GAP = 7 * 86400 * 10**9  # ns: the shortest gap that can make a timestamp an outlier
OUTLIER_SPACINGS = 100  # ... and it must exceed this many median spacings
OUTLIER_ROWS_PER = 100  # rows read per outlier row: at most 1% of the rows are outliers at each end
CLOSE_WHY = {
    "adjusted": {"used": "Adj Close", "why": "data.price_adjustment=adjusted: the close is Adj Close and "
                 "open/high/low are scaled by Adj Close / Close of the row, so returns include splits and dividends"},
    "raw": {"used": "Close", "why": "data.price_adjustment=raw: the close is Close; Adj Close is ignored"},
}


def _union(a, b) -> list[int]:
    """The sorted row numbers of ``a`` and ``b`` (lists or arrays), each once."""
    return np.union1d(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)).tolist()


@dataclass
class Report:
    """What validation did to one file (all symbols of it)."""

    file: str
    row_numbers: str = "line"  # "line" (CSV) or "row" (Parquet)
    rows_in: int = 0
    rows_kept: int = 0
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    symbols: dict[str, int] = field(default_factory=dict)
    derived_columns: list[str] = field(default_factory=list)
    skipped_symbols: dict[str, str] = field(default_factory=dict)
    volume_empty: list[str] = field(default_factory=list)  # symbols whose volume column is empty
    dropped_features: dict[str, str] = field(default_factory=dict)  # spec of data.features → why
    close_column: dict[str, str] | None = None  # with Close and Adj Close: which one is the close, and why
    newest_first: list[str] = field(default_factory=list)  # symbols whose rows the file lists newest first
    status: str = "ok"  # "skipped": no symbol kept the rows one window needs (:class:`TooFewRows`)
    too_few_rows: dict[str, str] = field(default_factory=dict)  # skipped: {symbol: the one-line reason}
    # {symbol: one line}: under ffill, the rows :func:`_bar_rules` dropped instead of filling (:data:`UNFILL_PASSES`)
    ffill_fallback: dict[str, str] = field(default_factory=dict)
    dated: int = 0  # rows with a usable timestamp in the date range (not reported: whether a symbol is empty there)
    # symbol → :func:`stamp_runs` of its daily bars, or :func:`stamp_phases` of its intraday bars
    stamps: dict[str, Any] = field(default_factory=dict)

    def count(self, rule: str, kind: str, rows: np.ndarray) -> None:
        """Record ``len(rows)`` rows (1-based row numbers) as ``kind`` (dropped/repaired/flagged) by ``rule``."""
        if len(rows) == 0:
            return
        entry = self.rules.setdefault(rule, {"dropped": 0, "repaired": 0, "flagged": 0, "rows": []})
        entry[kind] += int(len(rows))
        entry["rows"] = _union(entry["rows"], rows)

    def note_columns(self, rule: str, columns: dict[str, dict[str, Any]]) -> None:
        """Per column of ``rule``'s cells: {column: {"count", "line" (first row number), "value" (its text)}}."""
        if not columns:
            return
        mine = self.rules.setdefault(rule, {"dropped": 0, "repaired": 0, "flagged": 0, "rows": []}).setdefault("columns", {})
        for col, e in columns.items():
            old = mine.get(col)
            if old is None:
                mine[col] = dict(e)
            else:
                first = e if e["line"] < old["line"] else old
                mine[col] = {"count": old["count"] + e["count"], "line": first["line"], "value": first["value"]}

    @property
    def rows_dropped(self) -> int:
        return sum(e["dropped"] for e in self.rules.values())

    def merge_rules(self, other: "Report") -> None:
        """Add ``other``'s rule entries (counts, rows, columns) to this report's."""
        for rule, e in other.rules.items():
            mine = self.rules.setdefault(rule, {"dropped": 0, "repaired": 0, "flagged": 0, "rows": []})
            for k in ("dropped", "repaired", "flagged"):
                mine[k] += e[k]
            mine["rows"] = _union(mine["rows"], e["rows"])
            self.note_columns(rule, e.get("columns", {}))

    def merge(self, other: "Report") -> None:
        self.rows_in += other.rows_in
        self.rows_kept += other.rows_kept
        self.merge_rules(other)
        self.symbols.update(other.symbols)
        self.volume_empty += [s for s in other.volume_empty if s not in self.volume_empty]
        self.newest_first += [s for s in other.newest_first if s not in self.newest_first]
        self.dropped_features.update(other.dropped_features)
        self.close_column = self.close_column or other.close_column
        self.skipped_symbols.update(other.skipped_symbols)
        self.derived_columns = sorted(set(self.derived_columns) | set(other.derived_columns))
        self.stamps.update(other.stamps)
        self.ffill_fallback.update(other.ffill_fallback)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable; rules in their order of application, only those that fired."""
        assert self.rows_in == self.rows_kept + self.rows_dropped, (self.file, self.rows_in, self.rows_kept)
        return {
            "file": self.file,
            "status": self.status,
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "row_numbers": self.row_numbers,
            "rules": {r: self.rules[r] for r in RULES if r in self.rules},
            "symbols": dict(sorted(self.symbols.items())),
            "skipped_symbols": dict(sorted(self.skipped_symbols.items())),
            "derived_columns": self.derived_columns,
            "volume_empty": self.volume_empty,
            "dropped_features": self.dropped_features,
            "close_column": self.close_column,
            "newest_first": self.newest_first,
            **({"too_few_rows": self.too_few_rows} if self.too_few_rows else {}),
            **({"ffill_fallback": self.ffill_fallback} if self.ffill_fallback else {}),
            **({"stamps": self.stamps} if self.stamps else {}),  # read by the panel's check (sources.py), then removed
        }



def _missing_hint(col: str) -> str:
    """What to do about a missing required column: data without volume (FX, an index) is read from an
    empty volume column, which says "no volume" where a missing one could be a misnamed column."""
    return "; data without volume (FX, an index): add an empty volume column" if col == "volume" else ""


def no_durations(values: pd.Series, source: Path | str) -> None:
    """A DataError for a timestamp column of durations (Parquet's duration, pandas' timedelta64: a time of day that
    pandas wrote as ``0 days 09:30:00``, a MySQL TIME read by ``pd.read_sql``), which names no date. Read as numbers,
    its nanoseconds were epoch times: a file of ``0 days``, ``1 days``, ... kept its rows dated 1970 to 1986, and a
    ``Date`` beside such a ``Time`` column was read as that ``Time`` (bars dated 2027 and 2141, the rest dropped)."""
    if pd.api.types.is_timedelta64_dtype(values):
        first = values.dropna()
        example = f" ({str(first.iloc[0])!r}, ...)" if len(first) else ""
        raise DataError(f"{source}: the timestamp column holds durations (timedelta){example}, not dates: write the "
                        "timestamps as dates or date-times (a time of day beside a Date column as HH:MM:SS text)")


def check_policy(cfg: DataConfig) -> None:
    if cfg.jump_threshold < 0:
        raise ConfigError(f"data.jump_threshold: must be >= 0 (0 disables), got {cfg.jump_threshold}")
    if cfg.min_rows < 0:
        raise ConfigError(f"data.min_rows: must be >= 0, got {cfg.min_rows}")


def date_range(cfg: DataConfig) -> tuple[int | None, int | None]:
    """[``data.start_date``, ``data.end_date``) as int64 ns UTC (None: no bound)."""
    lo = None if cfg.start_date is None else split_date_ns(cfg.start_date, "data.start_date")
    hi = None if cfg.end_date is None else split_date_ns(cfg.end_date, "data.end_date")
    return lo, hi


class TooFewRows(DataError):
    """A unit none of whose symbols keeps the rows one window needs (:class:`~hftraining.data.rows.RowsNeeded`):
    skipped and reported by the loop over units, not fatal to the run. ``report``: the unit's report
    (status ``skipped``), every row it read and what became of it, as a usable unit's."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report

    def __reduce__(self):
        return type(self), (str(self), self.report)


class _Rows:
    """The surviving rows of one symbol as parallel numpy arrays."""

    def __init__(self, line: np.ndarray, cols: dict[str, np.ndarray]):
        self.line = line
        self.cols = cols

    def __len__(self) -> int:
        return len(self.line)

    def take(self, idx: np.ndarray) -> None:
        self.line = self.line[idx]
        self.cols = {k: v[idx] for k, v in self.cols.items()}


def _where(where: str, line: int, unit: str) -> str:
    return f"{where}: {unit} {line}"


DAY = 86400 * 10**9  # ns
DAILY_SPACING = 20 * 3600 * 10**9  # ns: a symbol whose rows are this far apart (median) has daily (or longer) bars
MAX_STAMP_RUNS = 200  # more changes of a symbol's time of day than this: stamped at no time in particular


def stamp_runs(t: np.ndarray) -> list[list[int]]:
    """When the UTC time of day daily bars are stamped at holds, for the check that a panel's files
    stamp a trading day alike (:func:`hftraining.data.sources.mixed_stamps`): ``[[first day, last
    day, offset s], ...]`` for the runs of consecutive rows (sorted int64 ns ``t``) at one offset from
    the nearest UTC midnight (``day``: days since 1970-01-01 of that midnight; a local midnight of New
    York is +5 h, of Berlin -1 h, of both in summer an hour less). Empty for bars less than a day
    apart, and for rows stamped at no time in particular (more than :data:`MAX_STAMP_RUNS` runs, or
    rows of one day at two times)."""
    t = np.asarray(t, dtype=np.int64)
    if len(t) < 2 or exact_median(np.diff(t)) < DAILY_SPACING:
        return []
    day = (t + DAY // 2) // DAY
    off = (t - day * DAY) // 10**9
    starts = np.r_[0, np.flatnonzero(off[1:] != off[:-1]) + 1]
    if len(starts) > MAX_STAMP_RUNS or (day[starts[1:]] == day[starts[1:] - 1]).any():
        return []  # no one time of day, or two times on one day: no convention to compare
    ends = np.r_[starts[1:], len(t)] - 1
    return [[int(day[a]), int(day[b]), int(off[a])] for a, b in zip(starts, ends)]


MAX_PHASES = 10  # more phases than this (each at least a tenth of the rows): stamped at no phase in particular


def stamp_phases(t: np.ndarray, zoneless: bool = False) -> dict[str, Any] | None:
    """Where in its bar spacing a symbol's intraday bars fall, for the check that a panel's files stamp
    their bars alike (:func:`hftraining.data.sources.mixed_stamps`): ``{"spacing": ns, "phases": [ns,
    ...], "span": [first ns, last ns], "zoneless": bool}`` for sorted int64 ns ``t`` of bars less than
    :data:`DAILY_SPACING` apart (median). The spacing is the most common step; the phases are the
    UTC times modulo it that hold at least a tenth of the rows (hourly bars at 09:30 and 10:30: 30 min;
    4-hour bars at 09:30/13:30 New York time: 2:30 in winter and 1:30 in summer, both kept), none
    when no phase holds that many or more than :data:`MAX_PHASES` do (irregular stamps). ``zoneless``:
    the file wrote the stamps without a zone or offset (:func:`io.zoneless`). None for daily bars."""
    t = np.asarray(t, dtype=np.int64)
    if len(t) < 2 or exact_median(np.diff(t)) >= DAILY_SPACING:
        return None
    steps, counts = np.unique(np.diff(t), return_counts=True)
    counts[steps <= 0] = 0
    spacing = int(steps[np.argmax(counts)])
    phases: list[int] = []
    if spacing > 0:
        vals, n = np.unique(t % spacing, return_counts=True)
        main = vals[n * 10 >= len(t)]
        phases = [int(v) for v in main] if len(main) <= MAX_PHASES else []
    return {"spacing": spacing, "phases": phases, "span": [int(t[0]), int(t[-1])], "zoneless": bool(zoneless)}


def first_volume(frame: pd.DataFrame) -> int | None:
    """The time (int64 ns UTC) of the first row of a validated frame that reports volume (> 0), None when
    none does. Training decides "no volume" on the rows before the first validation date with it
    (:func:`hftraining.data.pipeline.prepare`), not on the whole file (``volume_empty``), so a volume
    column reported only from some later date on does not decide what training sees."""
    vol = frame["volume"].to_numpy(np.float64)
    has = np.flatnonzero(np.isfinite(vol) & (vol > 0))
    return None if not len(has) else int(pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8[has[0]])


def newest_first(t: np.ndarray) -> bool:
    """Whether rows (int64 ns ``t``, in the file's order) are listed newest first: more steps between
    consecutive rows go back in time than forward. Broker statements and the downloads of
    Investing.com and Nasdaq.com list them so; such a file is a time series read from its end, not a
    file out of order, and ``data.unsorted_timestamps`` judges only the rows out of place in it."""
    steps = np.diff(np.asarray(t, dtype=np.int64))
    return int((steps < 0).sum()) > int((steps > 0).sum())


def reversed_order(t: np.ndarray) -> np.ndarray:
    """(n,) the positions of ``t`` read from the last row to the first, rows of one timestamp that are
    neighbours kept in the file's order (the first of them is still the first for
    ``data.duplicate_timestamps``)."""
    n = len(t)
    back = np.arange(n)[::-1]
    run = np.cumsum(np.r_[True, t[back][1:] != t[back][:-1]])  # runs of one timestamp, read backwards
    return back[np.lexsort((back, run))]


RUN_ROWS = 32
"""Rows per non-decreasing run (on average) from which :func:`_longest_ending` places a run per numpy call; in
a file with shorter runs (rows in no order at all) a Python step per row is cheaper."""


def _short_runs(u: np.ndarray) -> bool:
    """Whether the non-decreasing runs of ``u`` are shorter than :data:`RUN_ROWS` rows on average."""
    return (int(np.count_nonzero(u[1:] < u[:-1])) + 1) * RUN_ROWS > len(u)


def _longest_ending(u: np.ndarray) -> np.ndarray:
    """(n,) int64: the length of a longest non-decreasing subsequence of ``u`` that ends at each position
    (patience sorting; ``tails[k]``: the smallest last value of such a subsequence of length k + 1). A run of
    non-decreasing values is placed at once: its j-th value goes to ``max(k_(j-1) + 1, b_j)``, ``b_j`` the
    place of the value among the tails before the run. A file with rows out of order is a few long runs, so
    its rows are read in one numpy call per run, not in one Python step each (a million minute bars with 1,000
    misdated rows: 0.10 s for :func:`out_of_order`, where a step per row took 1.09 s)."""
    n = len(u)
    out = np.empty(n, dtype=np.int64)
    if _short_runs(u):  # one step per row
        tails: list = []
        places = []
        for v in u.tolist():
            k = bisect.bisect_right(tails, v)
            if k == len(tails):
                tails.append(v)
            else:
                tails[k] = v
            places.append(k)
        out[:] = places
        return out + 1
    array = np.empty(n, dtype=u.dtype)
    size = 0
    cuts = np.r_[0, np.flatnonzero(u[1:] < u[:-1]) + 1, n]
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        run = u[a:b]
        j = np.arange(b - a)
        k = np.maximum.accumulate(np.searchsorted(array[:size], run, side="right") - j) + j
        array[k] = run
        size = max(size, int(k[-1]) + 1)
        out[a:b] = k + 1
    return out


def out_of_order(t: np.ndarray) -> np.ndarray:
    """(n,) bool: the rows of ``t`` (int64 ns, in reading order) that ``unsorted_timestamp`` judges: the
    fewest whose removal leaves the others in time order (non-decreasing: equal stamps are the duplicate
    rule's), the complement of a longest non-decreasing subsequence. Of several such subsequences the
    one that keeps the earliest rows is kept (two neighbours swapped: the second is out of place). One
    misdated row (a 2031 in a 2020-2026 file, a row moved up three places) is that one row, not the rows
    after it that are earlier than it. O(n log n) (:func:`_longest_ending`): with ``after`` the longest
    run that can start at a row and ``before`` the longest that can end there, a row is on a longest run
    when ``before + after - 1`` is its length; rows with one ``after`` stand in falling time order, so the
    earliest rows are taken by keeping, of each ``after``, the first row on a longest run."""
    t = np.asarray(t, dtype=np.int64)
    n = len(t)
    out = np.zeros(n, dtype=bool)
    if n < 2 or bool((t[1:] >= t[:-1]).all()):
        return out
    after = _longest_ending(-t[::-1])[::-1]  # read from the end: a non-decreasing run of -t ending there
    need = int(after.max())
    if _short_runs(t):  # one Python step per row: from the first row, the earliest row a longest run goes on with
        keep, last = np.zeros(n, dtype=bool), None
        for i, (v, m) in enumerate(zip(t.tolist(), after.tolist())):
            if m == need and (last is None or v >= last):
                keep[i], last, need = True, v, need - 1
                if need == 0:
                    break
        return ~keep
    on = np.flatnonzero(_longest_ending(t) + after - 1 == need)
    _, first = np.unique(after[on], return_index=True)
    out[:] = True
    out[on[first]] = False
    return out


def _outlier_timestamps(t: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``t`` (int64 ns, any order) that the ``outlier_timestamp`` rule drops
    (see the module docstring): outermost rows cut off from the others by a gap longer than the
    others' span, :data:`OUTLIER_SPACINGS` median spacings and :data:`OUTLIER_MIN_GAP`.

    The late end is judged by the rows before it. The early end reads a bounded look-ahead only: a
    group of its first ``k`` rows by the first :data:`OUTLIER_ROWS_PER` · ``k`` rows of the file (the
    group is at most 1% of them; one row may always be judged), so whether an early row is dropped
    never depends on the rows dated after those (a validation or test period), however many there are."""
    n = len(t)
    out = np.zeros(n, dtype=bool)
    if n < 3:
        return out
    s = np.sort(t)
    gaps = np.diff(s)
    positive = gaps[gaps > 0]
    if not len(positive):
        return out
    floor = max(float(OUTLIER_SPACINGS) * exact_median(positive), float(OUTLIER_MIN_GAP))
    budget = max(1, n // OUTLIER_ROWS_PER)  # rows the late end may drop (all rows lie before them)
    lo, hi = 0, n  # the kept rows are s[lo:hi]

    def early(k: int) -> bool:
        """Whether the ``k`` rows after s[:lo] are an outlier group, read from the first rows only."""
        m = lo + k  # rows dropped at the early end with this group
        read = min(hi, OUTLIER_ROWS_PER * m)
        if m > 1 and OUTLIER_ROWS_PER * m > hi or m + 1 >= read:
            return False  # more than 1% of the rows (or none left to judge it by)
        g = float(s[m] - s[m - 1])
        if g <= float(OUTLIER_MIN_GAP) or g <= float(s[read - 1] - s[m]):
            return False  # cheap tests first: the median below reads up to ``read`` rows
        head = np.diff(s[:read])
        head = head[head > 0]
        return g > float(OUTLIER_SPACINGS) * exact_median(head)

    changed = True
    while changed:
        changed = False
        for k in range(budget - (n - hi), 0, -1):  # the late end, the largest group first
            if hi - k - 1 > lo and (g := float(s[hi - k] - s[hi - k - 1])) > floor and g > float(s[hi - k - 1] - s[lo]):
                hi, changed = hi - k, True
                break
        for k in range(max(1, hi // OUTLIER_ROWS_PER) - lo, 0, -1):  # the early end, the largest group first
            if early(k):
                lo, changed = lo + k, True
                break
    if lo:
        out |= t < s[lo]
    if hi < n:
        out |= t > s[hi - 1]
    return out


def validate_frame(
    df: pd.DataFrame,
    cfg: DataConfig,
    source: str,
    first_row: int = 2,
    unit: str = "line",
    line: np.ndarray | None = None,
    symbol: str | None = None,
    decimal: str = ".",
) -> tuple[pd.DataFrame, Report]:
    """Validate one symbol's rows (canonical column names, as :func:`io.read_table` returns them).

    ``line``: the 1-based row number of each row in its file (default ``first_row + position``);
    ``symbol``: its name in the report (default ``source``); ``decimal``: the decimal mark of text
    cells (:func:`io.parse_numbers`).
    Returns the normalised frame (see :mod:`hftraining.data.io`) and the report. Raises
    :class:`DataError` for a missing column or a rule whose policy is ``error``. The too-few-rows
    rule is left to the caller (it depends on how the frame is used).
    """
    check_policy(cfg)
    rep = Report(file=source, row_numbers=unit, rows_in=len(df))
    cols_present = list(map(str, df.columns))
    for col in ("timestamp", "close", "volume"):
        if col not in df.columns:
            raise DataError(f"{source}: missing column {col!r} (columns: {', '.join(cols_present) or 'none'})"
                            + _missing_hint(col))
    if line is None:
        line = np.arange(len(df), dtype=np.int64) + first_row

    # blank lines (CSV lines with no value at all)
    if len(df) and df.isna().to_numpy().all(axis=1).any():
        blank = df.isna().to_numpy().all(axis=1)
        rep.count("blank_line", "dropped", line[blank])
        df, line = df.loc[~blank], line[~blank]

    no_durations(df["timestamp"], source)
    ts = io.parse_timestamps(df["timestamp"].reset_index(drop=True), source)
    ts_ns = pd.DatetimeIndex(ts).asi8  # NaT: the minimum int64, dropped just below
    bad_ts = ts.isna().to_numpy()

    # the date range: rows outside it are not read (before any rule, as a pushed-down Parquet scan)
    lo, hi = date_range(cfg)
    if lo is not None or hi is not None:
        outside = np.zeros(len(ts_ns), dtype=bool)
        if lo is not None:
            outside |= ts_ns < lo
        if hi is not None:
            outside |= ts_ns >= hi
        outside &= ~bad_ts  # a row without a usable timestamp is reported, wherever it lies
        if outside.any():
            keep = ~outside
            df, line, ts_ns, bad_ts = df.iloc[keep], line[keep], ts_ns[keep], bad_ts[keep]
            rep.rows_in -= int(outside.sum())
    rep.dated = int((~bad_ts).sum())

    # numbers: remember which cells were text that is not a number
    cols: dict[str, np.ndarray] = {}
    text_bad: dict[str, np.ndarray] = {}
    raw_text: dict[str, np.ndarray] = {}
    for col in io.NUMERIC:
        if col not in df.columns:
            continue
        raw = df[col].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            cols[col] = raw.to_numpy(dtype=np.float64, na_value=np.nan)
            text_bad[col] = np.zeros(len(raw), dtype=bool)
        else:
            num = io.parse_numbers(raw, decimal, scaled=col == "volume")  # 1.23M: Investing.com's volumes
            stripped = raw.astype("string").str.strip()
            empty = stripped.isin(io.EMPTY_CELLS).fillna(False).to_numpy()  # "", and "-" (no value)
            text_bad[col] = np.isnan(num) & stripped.notna().to_numpy() & ~empty
            raw_text[col] = raw.to_numpy(dtype=object)
            cols[col] = num
    extra: dict[str, np.ndarray] = {}  # per row, with Close and Adj Close adjusted: see just below
    if "adj_close" in cols:  # both Close and Adj Close (a lone Adj Close was read as the close)
        rep.close_column = dict(CLOSE_WHY[cfg.price_adjustment])
        adj, adj_bad, adj_raw = cols.pop("adj_close"), text_bad.pop("adj_close"), raw_text.pop("adj_close", None)
        if cfg.price_adjustment == "adjusted":
            # the row's ratio needs both closes. A bad one (empty, 0, text) is the close's defect, under its own
            # rule and named in errors (Close's cell where Close is bad, else Adj Close's); open/high/low of
            # that row keep their own cells, so no NaN or Inf of the ratio is reported as theirs (an empty
            # Adj Close was "nan in column 'open'"), and ffill fills them with the close (:func:`_value_rules`)
            close, close_text = cols["close"], text_bad["close"]
            close_ok = np.isfinite(close) & (close > 0) & ~close_text
            if not any(col in cols for col in ("open", "high", "low")):
                # nothing to scale (Date, Close, Adj Close, Volume): the close is Adj Close's cell alone (a row whose
                # Close was empty beside a good Adj Close was dropped, or under ffill took the day before's close)
                close_ok = np.ones(len(close), dtype=bool)
            adjustable = close_ok & np.isfinite(adj) & (adj > 0) & ~adj_bad
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = adj / close
            for col in ("open", "high", "low"):
                if col in cols:
                    cols[col] = np.where(adjustable, cols[col] * ratio, cols[col])
            close_raw = raw_text.get("close")
            if adj_raw is not None or close_raw is not None:  # error messages quote the text of the bad cell
                a = adj_raw if adj_raw is not None else adj.astype(object)
                c0 = close_raw if close_raw is not None else close.astype(object)
                raw_text["close"] = np.where(close_ok, a, c0)
            cols["close"], text_bad["close"] = np.where(close_ok, adj, close), np.where(close_ok, adj_bad, close_text)
            extra["_adj_cell"], extra["_unadjusted"] = close_ok, ~adjustable
    # an entirely empty volume column (FX, indices), or one of zeros only (how some sources write
    # "no volume"): NaN, never a per-row defect
    vol = cols["volume"]
    vol_empty = len(df) > 0 and bool((np.isnan(vol) | (vol == 0)).all()) and not text_bad["volume"].any()
    if vol_empty:
        cols["volume"] = np.full_like(vol, np.nan)
        rep.volume_empty.append(symbol or source)
    for col in ("open", "high", "low"):
        if col not in cols:  # a close-only file: the bar is the close
            cols[col] = cols["close"].copy()
            text_bad[col] = text_bad["close"]
            rep.derived_columns.append(col)

    rows = _Rows(line, {"ts": ts_ns, **cols, **{f"_text_{k}": v for k, v in text_bad.items()},
                        "_pos": np.arange(len(ts_ns)), **extra})

    def drop(mask: np.ndarray, rule: str) -> None:
        if mask.any():
            rep.count(rule, "dropped", rows.line[mask])
            rows.take(~mask)

    drop(bad_ts, "bad_timestamp")
    drop(_outlier_timestamps(rows.cols["ts"]), "outlier_timestamp")

    # order: a file listed newest first is read in reverse (reported); then sort (repair), drop or error
    t = rows.cols["ts"]
    if len(t) > 1:
        moved = None
        if newest_first(t):
            prev_max = np.maximum.accumulate(t)
            moved = np.r_[False, t[1:] < prev_max[:-1]]  # in the file's order: rows the reversal moves
            order = reversed_order(t)
            rows.take(order)
            moved, t = moved[order], rows.cols["ts"]
            rep.newest_first.append(symbol or source)
        late = out_of_order(t)
        if moved is not None:  # the rows the reversal put in order: repaired, whatever the policy says of the others
            rep.count("unsorted_timestamp", "repaired", rows.line[moved & ~late])
        if late.any():
            if cfg.unsorted_timestamps == "error":
                i = int(np.argmax(late))  # the first row out of place, in the order the rule reads them
                # the rows before it are in order: it is earlier than the row before it, or else later than
                # the next row kept (between the two, it would not be out of place)
                earlier = i > 0 and t[i] < t[i - 1]
                if moved is None:
                    where = "earlier than a row above it" if earlier else "later than a row below it"
                else:  # a newest-first file: out of place among older rows (below it) or newer ones (above it)
                    where = ("earlier than a row below it" if earlier else "later than a row above it") + \
                        " (the file lists its rows newest first)"
                raise DataError(f"{_where(source, int(rows.line[i]), unit)}: timestamp {where}"
                                " (data.unsorted_timestamps=error)")
            if cfg.unsorted_timestamps == "drop":
                drop(late, "unsorted_timestamp")
            else:
                rep.count("unsorted_timestamp", "repaired", rows.line[late])
                rows.take(np.argsort(t, kind="stable"))

    # duplicates (rows are sorted now, so equal timestamps are neighbours)
    t = rows.cols["ts"]
    if len(t) > 1:
        same_prev = np.zeros(len(t), dtype=bool)
        same_prev[1:] = t[1:] == t[:-1]
        if same_prev.any():
            if cfg.duplicate_timestamps == "error":  # the row, the row it repeats and their timestamp
                i = int(np.argmax(same_prev))
                stamp = pd.Timestamp(int(t[i]), unit="ns", tz="UTC").isoformat()
                raise DataError(f"{_where(source, int(rows.line[i]), unit)}: duplicate timestamp {stamp} of "
                                f"{unit} {int(rows.line[i - 1])} (data.duplicate_timestamps=error)")
            # the first (or last) row of each timestamp among those without a bad cell: a Yahoo table's
            # "0.175 Dividend" or "2:1 Stock Split" row beside the day's bar is not kept in its place
            # (dropped later, or under ffill filled with the day before's prices, while the bar was gone)
            group = np.cumsum(~same_prev) - 1
            # first and last by the row's place in the file: in a file read in reverse, rows of one timestamp
            # that are not neighbours (a repeated DST hour, a bar listed twice) meet in the reversed order
            pos = rows.cols["_pos"]
            order = np.lexsort((pos if cfg.duplicate_timestamps == "first" else -pos,
                                _flawed(rows, ("volume",) if vol_empty else ()), group))
            dup = np.ones(len(t), dtype=bool)
            dup[order[np.r_[True, group[order][1:] != group[order][:-1]]]] = False
            drop(dup, "duplicate_timestamp")

    _bar_rules(rows, rep, cfg, source, unit, raw_text, ("volume",) if vol_empty else (), symbol)

    c = rows.cols
    out = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(c["ts"].view("datetime64[ns]")).tz_localize("UTC"),
        **{k: c[k] for k in io.OHLCV},
    })
    rep.rows_kept = len(out)
    return out, rep


def _flawed(rows: _Rows, skip: tuple[str, ...] = ()) -> np.ndarray:
    """(n,) bool: the rows with a price or volume cell that :func:`_value_rules` drops or fills (not a
    number, empty, NaN or ±Inf, a price <= 0, a volume < 0); ``skip``: columns not checked."""
    c = rows.cols
    bad = np.zeros(len(rows), dtype=bool)
    for col in io.OHLCV:
        if col not in skip:
            v = c[col]
            bad |= c[f"_text_{col}"] | ~np.isfinite(v) | ((v < 0) if col == "volume" else (v <= 0))
    return bad


def _cell_text(val: Any) -> str:
    """How an error line quotes a bad cell after its rule's name: ``'abc'``, ``-3.0``, ``inf``; a cell
    without a value (empty, or the NaN/null a reader made of it) as ``: empty cell`` (it read ``nan or
    inf nan``), a ``-`` as ``: empty cell '-'``."""
    text = val.strip() if isinstance(val, str) else None
    if val is None or val is pd.NA or (isinstance(val, float) and np.isnan(val)) or text == "":
        return ": empty cell"
    if text in io.EMPTY_CELLS:
        return f": empty cell {text!r}"
    return f" {val!r}"


def _bar_rules(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str, raw_text: dict,
               skip: tuple[str, ...], symbol: str | None) -> None:
    """The value rules, then the OHLC and jump rules, on the sorted rows without duplicates. Under ``ffill``
    a cell takes its value from the previous row that is kept in the end: a row that the OHLC or the jump
    rule drops (a spike's bar, a bar whose high is under its low) lends no value to the rows after it, or
    its dropped prices would be kept in their bars (or drop them: a close filled from a bar whose high is
    under its low stood outside its own bar). Passes: once, unless a dropped row
    lent a value; then again without the rows the first pass dropped as sources; then, where a row still
    took a value from a row the rules then dropped, with that row's bad cells unfilled (the row dropped
    under its value rule), and so on until no kept or dropped row took a value from a row dropped in the end
    (each such pass unfills rows no pass filled before: it ends). Barring rows one pass at a time chained: a
    level change with every other bar empty barred one lender per pass, its run time grew with the square of
    the rows (87 s for 10,000), and the new level's bars were all dropped as jumps from the old one. Stopping
    after the third pass kept rows whose cells a dropped row had filled: those passes are few (at most 5 on
    such a level change), each linear in the rows. A row barred as a source and kept by a later pass lent
    nothing in it, so the cells after it held an older row's value: while one is kept, the rules run again
    with the rows then kept as the only sources, and they end when the rows kept are those that lent (each
    bad cell holds the value of the last row kept)."""
    barred = np.zeros(len(rows), dtype=bool)
    doomed = np.zeros(len(rows), dtype=bool)
    attempt = 0
    while True:
        out = _Rows(rows.line, dict(rows.cols))
        sub = Report(file=rep.file, row_numbers=rep.row_numbers, derived_columns=rep.derived_columns)
        filled, lender = _value_rules(out, sub, cfg, source, unit, raw_text, skip, barred | doomed, doomed)
        _ohlc_rule(out, sub, cfg, source, unit, symbol)
        _jump_rule(out, sub, cfg, source, unit)
        kept = np.isin(rows.cols["_pos"], out.cols["_pos"])
        lost = ~np.isin(lender, out.cols["_pos"])  # a cell filled from a row dropped since (kept or not)
        # a kept row that lent nothing (barred after an earlier pass dropped it): the cells after it were
        # filled from an older row, not from the last kept one
        stale = len(filled) > 0 and bool((barred & kept).any())
        if not lost.any() and not stale:
            break
        if attempt >= UNFILL_PASSES:  # a chain no file seen needs: every filled row is dropped instead, and
            # no row lends, so the next pass fills nothing and is the last. The report names it: the rows are
            # counted under their value rules, which alone did not say that their cells could have been filled
            now = np.isin(rows.cols["_pos"], filled)
            k, passes = int((now & ~doomed).sum()), attempt + 1
            rep.ffill_fallback[symbol or source] = (
                f"{source}: data.invalid_values=ffill: after {passes} pass{'es' if passes > 1 else ''} a filled cell "
                f"still came from a row dropped since, so {k} {'row was' if k == 1 else 'rows were'} dropped instead "
                "of filled (each under its value rule)")
            doomed |= now
            barred[:] = True
        elif not lost.any():  # only kept rows lend now: the next pass fills each cell from the last kept row
            barred = ~kept
        elif attempt == 0:
            barred |= np.isin(rows.cols["_pos"], lender[lost])
        else:  # a doomed row is filled nowhere: each pass dooms rows not doomed before
            doomed |= np.isin(rows.cols["_pos"], filled[lost])
        attempt += 1
    rows.line, rows.cols = out.line, out.cols
    rep.merge_rules(sub)


UNFILL_PASSES = 16
"""Passes of :func:`_bar_rules` before its fallback: the first, one that bars the rows the first dropped as
sources, then those that leave unfilled only the rows that took a value from a dropped row or take values from
the rows kept only (5 passes in all at most on a level change with every other bar empty; 14 on random files of
80 bars with spikes of up to six bars and half their cells empty); after them, every row whose bad cells were
filled is dropped instead and no row lends, so the run time stays linear in the rows whatever the file."""


def _value_rules(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str, raw_text: dict,
                 skip: tuple[str, ...] = (), barred: np.ndarray | None = None,
                 unfilled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``skip``: columns not checked (an empty volume column); ``barred``: (n,) rows no cell is filled from;
    ``unfilled``: (n,) rows whose bad cells are not filled, dropped under their value rule (:func:`_bar_rules`).
    Returns (``_pos`` of each filled cell's row, ``_pos`` of the row it was filled from)."""
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    c = rows.cols
    n = len(rows)
    checked = [col for col in io.OHLCV if col not in skip]
    cell_bad: dict[str, dict[str, np.ndarray]] = {r: {} for r in VALUE_RULES}
    for col in checked:
        v = c[col]
        text = c[f"_text_{col}"]
        finite = np.isfinite(v)
        cell_bad["non_numeric"][col] = text
        cell_bad["nan_or_inf"][col] = ~finite & ~text
        if col == "volume":
            cell_bad["negative_volume"][col] = finite & (v < 0)
        else:
            cell_bad["non_positive_price"][col] = finite & (v <= 0)
    row_bad = {r: np.logical_or.reduce(list(m.values())) if m else np.zeros(n, bool) for r, m in cell_bad.items()}
    any_bad = np.logical_or.reduce(list(row_bad.values())) if n else np.zeros(0, bool)
    if not any_bad.any():
        return none
    adj_cell = c.get("_adj_cell")  # with Close and Adj Close adjusted: the close's bad cell is Adj Close's

    def named(col: str, m: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """``col``'s cells of mask ``m`` by the file's column they come from (close: Close or Adj Close)."""
        if col != "close" or adj_cell is None:
            return [(col, m)]
        return [("close", m & ~adj_cell), ("adj_close", m & adj_cell)]

    columns = {}
    for col, m in cell_bad["non_numeric"].items():
        if m.any() and col in raw_text:  # a column derived from the close is not named again
            for name, mm in named(col, m):
                if mm.any():
                    i = int(np.flatnonzero(mm)[np.argmin(rows.line[mm])])
                    columns[name] = {"count": int(mm.sum()), "line": int(rows.line[i]),
                                     "value": str(raw_text[col][c["_pos"][i]])}
    if cfg.invalid_values == "error":
        i = int(np.argmax(any_bad))
        for rule in VALUE_RULES:
            for col, m in cell_bad[rule].items():
                # a column taken from the close (a file of Date, Close, Volume) is not the file's: the close's
                # cell is named, as it is ('abc' in column 'close', not "empty cell in column 'open'")
                if m[i] and col not in rep.derived_columns:
                    raw = raw_text.get(col)
                    val = raw[c["_pos"][i]] if raw is not None else float(c[col][i])
                    val = float(val) if isinstance(val, (float, np.floating)) else val
                    name = next(n for n, mm in named(col, m) if mm[i])
                    raise DataError(f"{_where(source, int(rows.line[i]), unit)}: {rule.replace('_', ' ')}"
                                    f"{_cell_text(val)} in column {name!r} (data.invalid_values=error)")
    if cfg.invalid_values == "drop":
        taken = np.zeros(n, dtype=bool)
        for rule in VALUE_RULES:
            m = row_bad[rule] & ~taken
            rep.count(rule, "dropped", rows.line[m])
            taken |= m
        rows.take(~taken)
        rep.note_columns("non_numeric", columns)
        return none
    # ffill: each bad cell takes the previous kept row's value of its column. The rows before the first
    # clean row are all bad and have no previous kept row: dropped (a cell filled from one of them
    # would come from a dropped row). From the first clean row on, every row is kept, so the previous
    # kept row's (filled) value is the column's last good value. A barred row lends nothing: a bad cell
    # with no row to take it from drops its row too.
    pos = np.arange(n)
    first_clean = n if any_bad.all() else int(np.argmin(any_bad))
    no_past = pos < first_clean
    if unfilled is not None:
        no_past |= unfilled & any_bad
    lends = np.ones(n, dtype=bool) if barred is None else ~barred
    fills = []
    for col in checked:
        bad = np.logical_or.reduce([cell_bad[r][col] for r in VALUE_RULES if col in cell_bad[r]])
        if col in ("open", "high", "low") and "_unadjusted" in c:
            bad = bad | c["_unadjusted"]  # a row without both closes: its open/high/low cannot be adjusted
        if not bad.any():
            continue
        src = np.maximum.accumulate(np.where(bad | ~lends, -1, pos))
        c[col] = np.where(bad & (src >= 0), c[col][np.maximum(src, 0)], np.where(bad, np.nan, c[col]))
        no_past |= bad & (src < 0)
        fills.append((bad, src))
    filled = [(c["_pos"][m], c["_pos"][src[m]]) for bad, src in fills for m in [bad & ~no_past]]
    taken = np.zeros(n, dtype=bool)
    for rule in VALUE_RULES:
        m = row_bad[rule] & no_past & ~taken
        rep.count(rule, "dropped", rows.line[m])
        taken |= m
        rep.count(rule, "repaired", rows.line[row_bad[rule] & ~no_past])
    rows.take(~taken)
    rep.note_columns("non_numeric", columns)
    return (np.concatenate([f for f, _ in filled]), np.concatenate([s for _, s in filled])) if filled else none


MISNAMED_SHARE = 0.5
"""More than this share of a file's rows (of at least :data:`MISNAMED_MIN_ROWS`) whose high and low do not
cover their open and close, while another order of the four price columns breaks the rule in at most
:data:`RENAMED_SHARE` of them: the columns are misnamed, not the bars broken."""
MISNAMED_MIN_ROWS = 10
RENAMED_SHARE = 0.1
"""A feed that opens each bar at the previous close (a thin bar's ticks all above or below it) breaks the rule in
most rows too, under every order of its columns: its rows are clipped (or dropped) as before, not refused."""


def least_broken(prices: np.ndarray) -> float:
    """The smallest share of rows breaking the OHLC rule over the 24 orders of the (n, 4) finite price columns.
    A row keeps the rule under an order exactly when the column read as high holds the row's highest price
    and the one read as low its lowest, so 12 (high, low) pairs of two masks decide it: 24 reordered copies
    of a 5-million-row symbol took 3.2 s and ~480 MB."""
    top, bottom = prices == prices.max(axis=1, keepdims=True), prices == prices.min(axis=1, keepdims=True)
    return 1.0 - max(float(np.mean(top[:, h] & bottom[:, lo])) for h in range(4) for lo in range(4) if h != lo)


def _check_ohlc_names(rows: _Rows, bad: np.ndarray, source: str, unit: str, symbol: str | None) -> None:
    """A DataError when most rows break the OHLC rule and another order of the price columns would keep
    it: a header that names the prices in another order (Coinbase's candles are time, low, high, open, close)
    makes nearly every row break it, and clipping (or dropping) them all read a file of wrong prices without
    a word. The error names the symbol (one of a long file's), the first such row and which column holds each
    row's lowest and highest price, when one does in most rows."""
    n = len(bad)
    if n < MISNAMED_MIN_ROWS or bad.mean() <= MISNAMED_SHARE:
        return
    names = ("open", "high", "low", "close")
    prices = np.stack([rows.cols[k] for k in names], axis=1)  # (n, 4)
    if least_broken(prices) > RENAMED_SHARE:
        return
    hint = []
    for what, pick, own in (("lowest", np.argmin, "low"), ("highest", np.argmax, "high")):
        counts = np.bincount(pick(prices, axis=1), minlength=4) / n
        k = int(np.argmax(counts))
        if counts[k] > MISNAMED_SHARE and names[k] != own:  # the column named for it is not news
            hint.append(f"the column read as {names[k]!r} is the {what} price in {counts[k]:.0%} of rows")
    whose = f" of symbol {symbol!r}" if symbol is not None else ""
    raise DataError(f"{source}: high and low do not cover open and close in {int(bad.sum())} of {n} rows{whose} "
                    f"({bad.mean():.0%}, the first in {unit} {int(rows.line[int(np.argmax(bad))])}): the price "
                    "columns are likely misnamed" + (f" ({'; '.join(hint)})" if hint else "")
                    + "; name each column by its values (the low is each row's lowest price, the high its highest): "
                    "no data.ohlc_violations policy repairs a file whose rows nearly all break the rule")


def _ohlc_rule(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str,
               symbol: str | None = None) -> None:
    c = rows.cols
    top = np.maximum(c["open"], c["close"])
    bottom = np.minimum(c["open"], c["close"])
    bad = (c["high"] < top) | (c["low"] > bottom)
    if not bad.any():
        return
    _check_ohlc_names(rows, bad, source, unit, symbol)
    if cfg.ohlc_violations == "error":
        i = int(np.argmax(bad))
        raise DataError(f"{_where(source, int(rows.line[i]), unit)}: high {c['high'][i]:g} / low {c['low'][i]:g} do not "
                        f"cover open {c['open'][i]:g} and close {c['close'][i]:g} (data.ohlc_violations=error)")
    if cfg.ohlc_violations == "drop":
        rep.count("ohlc_inconsistent", "dropped", rows.line[bad])
        rows.take(~bad)
        return
    rep.count("ohlc_inconsistent", "repaired", rows.line[bad])
    c["high"] = np.maximum(c["high"], top)
    c["low"] = np.minimum(c["low"], bottom)


JUMP_LEVEL_ROWS = 4
"""Consecutive rows whose closes all jump from the last kept close, each within ``jump_threshold`` of the one
before it, that make a new level: the last of them is kept, and the rows after it are judged by it. A spike
of up to 3 rows (a bad print, a few bars on another scale) is dropped whole, and a level that holds (a split
under ``data.price_adjustment: raw``, a real re-pricing) costs 3 rows; judged by the last kept close alone,
every row after a split would be a jump."""


def jump_rows(close: np.ndarray, threshold: float, level_rows: int = JUMP_LEVEL_ROWS) -> np.ndarray:
    """(n,) bool: the rows of the (n,) positive ``close`` (time order) that the ``jump`` rule drops (flags,
    stops at): a close more than ``threshold`` (|log return|) from the last close kept, unless it is the
    ``level_rows``-th of consecutive such rows that agree (each within ``threshold`` of the row before it):
    that row is kept, a new level. Causal: whether row t is a jump reads rows <= t only, but for the file's
    first level: when the first such level's ``level_rows`` rows start at row 1 to ``level_rows`` - 1, the
    rows before them (no earlier row judges them) are the jumps and the level's rows are kept, so a bad
    first print is dropped alone, not the three good rows after it (at most the first 2 · ``level_rows`` - 1
    rows are read for it). ``threshold`` 0: none is.

    Until 2026-12-06 each close was compared with the row before it in the file: of a spike of two bars
    (100, 400, 400, 100) the first bar and the good bar after it were dropped and the second bar, the bad
    one, was kept."""
    n = len(close)
    out = np.zeros(n, dtype=bool)
    if threshold <= 0 or n < 2:
        return out
    starts = np.flatnonzero(np.abs(np.log(close[1:] / close[:-1])) > threshold) + 1
    if not len(starts):
        return out
    c, k = close.item, 0  # a Python float per row read
    # between jumps every row is kept and the last kept row is the one before: only the rows from a jump
    # up to the next row kept are walked one by one
    while k < len(starts):
        i, ref, run = int(starts[k]), int(starts[k]) - 1, 0
        while i < n:
            if not abs(math.log(c(i) / c(ref))) > threshold:
                break  # back at the last kept row's level: kept
            run = run + 1 if run and not abs(math.log(c(i) / c(i - 1))) > threshold else 1
            if run == level_rows:
                if k == 0 and i + 1 < 2 * level_rows:
                    # the file's first level: fewer than ``level_rows`` rows before it, which no earlier row
                    # judges, are the spike, not the level's rows that agree with each other
                    out[:i + 1] = np.arange(i + 1) <= i - level_rows
                break  # a level that held: kept, and the rows after it are judged by it
            out[i] = True
            i += 1
        k = int(np.searchsorted(starts, i, side="right"))
    return out


def _jump_rule(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str) -> None:
    """``flag`` and ``error`` flag (stop at) the rows ``drop`` drops (:func:`jump_rows`)."""
    if cfg.jump_threshold <= 0 or len(rows) < 2:
        return
    close = rows.cols["close"]
    jump = jump_rows(close, cfg.jump_threshold)
    if not jump.any():
        return
    if cfg.jumps == "error":
        i = int(np.argmax(jump))  # every row before it is kept: the last kept close is the row before
        if i == 0:  # the file's first rows, before the first level its rows hold (:func:`jump_rows`)
            level = int(np.argmin(jump))
            first = "row is the jump" if level == 1 else f"{level} rows are jumps"
            raise DataError(f"{_where(source, int(rows.line[0]), unit)}: close moves from {close[0]:g} to "
                            f"{close[level]:g} in {unit} {int(rows.line[level])} and holds there for "
                            f"{JUMP_LEVEL_ROWS} rows: the file's first {first} (|log return| > "
                            f"data.jump_threshold={cfg.jump_threshold:g}; data.jumps=error)")
        raise DataError(f"{_where(source, int(rows.line[i]), unit)}: close moves from {close[i - 1]:g} to {close[i]:g} "
                        f"(|log return| > data.jump_threshold={cfg.jump_threshold:g}; data.jumps=error)")
    if cfg.jumps == "drop":
        rep.count("jump", "dropped", rows.line[jump])
        rows.take(~jump)
    else:
        rep.count("jump", "flagged", rows.line[jump])


# --------------------------------------------------------------------------------------------
# Files


def validate_table(
    table: pd.DataFrame, path: Path, cfg: DataConfig, needed: RowsNeeded = ANY_ROWS, first: int = 2,
    unit: str = "line", symbol: str | None = None, decimal: str = ".",
) -> tuple[dict[str, pd.DataFrame], Report]:
    """Validate a table read (canonical column names) from ``path`` → ({symbol: frame}, report). No
    file is read here: :func:`hftraining.data.sources.read_unit` reads every format. Rows are numbered
    from ``first`` in ``unit`` (line or row). ``symbol``: the symbol of a table without a ``symbol``
    column (default: the file's, :func:`io.symbol_of`); ``decimal``: the decimal mark of its text
    cells. Symbols with fewer than ``needed.rows`` kept rows are dropped under ``too_few_rows``, and a
    long file's symbol with every row dropped is listed in ``skipped_symbols`` with the rules that
    dropped its rows; a table left with no symbol is a :class:`TooFewRows` carrying the table's report
    (status ``skipped``, ``too_few_rows``: each such symbol's one-line reason), or a DataError when
    nothing was usable."""
    if len(table) == 0:
        raise DataError(f"{path}: no data rows (header only)")
    if table.isna().to_numpy().all():
        # every line blank: no column is at fault ("column 'open' holds no value in any row" was said of each)
        n = len(table)
        what = (f"header and {n} blank line{'s' if n > 1 else ''} only" if unit == "line"
                else f"{n} row{'s' if n > 1 else ''}, every cell empty")
        raise DataError(f"{path}: no data rows ({what})")
    for col in ("timestamp", "close", "volume"):
        if col not in table.columns:
            raise DataError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, table.columns))})"
                            + _missing_hint(col))
    no_durations(table["timestamp"], path)
    zoneless = io.zoneless(table["timestamp"])  # written without a zone: read as UTC (said for intraday bars)
    if "symbol" in table.columns:  # the dates of a long file read once, in one order for every symbol
        # (io.parse_timestamps: day- or month-first by the whole column, not by each symbol's few rows)
        ts = io.parse_timestamps(table["timestamp"].reset_index(drop=True), str(path))
        table = table.assign(timestamp=ts.set_axis(table.index))
    rep = Report(file=str(path), row_numbers=unit)
    frames: dict[str, pd.DataFrame] = {}
    emptied: dict[str, str] = {}  # symbols of a long file with every row dropped: listed as skipped, never gone unsaid
    groups = io.split_symbols(table, path) if symbol is None or "symbol" in table.columns else {symbol: table}
    for sym, part in groups.items():
        line = part.index.to_numpy(dtype=np.int64) + first
        if sym == "":
            blank = part.isna().to_numpy().all(axis=1)
            sub = Report(file=str(path), row_numbers=unit, rows_in=len(part))
            sub.count("blank_line", "dropped", line[blank])
            sub.count("missing_symbol", "dropped", line[~blank])
            rep.merge(sub)
            continue
        frame, sub = validate_frame(part, cfg, str(path), first, unit, line, sym, decimal)
        if sub.dated == 0 and (cfg.start_date is not None or cfg.end_date is not None):
            # no row in the date range: an empty symbol (as a pushed-down scan leaves it), its other rows reported
            frames[sym] = frame
            sub.symbols[sym] = 0
        elif 0 < len(frame) < needed.rows:
            # the rules that dropped rows are named: "50 rows kept" of a 300-row file said nothing of why
            why = ", ".join(f"{r} {e['dropped']}" for r, e in sub.rules.items() if e["dropped"])
            kept = f"{len(frame)} rows kept" + (f" ({sub.rows_dropped} dropped: {why})" if why else "")
            sub.count("too_few_rows", "dropped", np.zeros(len(frame), dtype=np.int64))
            sub.rules["too_few_rows"]["rows"] = []  # the whole symbol: no row is at fault
            sub.skipped_symbols[sym] = f"{kept}, {needed.rows} needed for one window"
            sub.rows_kept = 0
        elif len(frame):
            frames[sym] = frame
            sub.symbols[sym] = len(frame)
            t = pd.DatetimeIndex(frame["timestamp"]).asi8
            if runs := stamp_runs(t):
                sub.stamps[sym] = runs
            elif phases := stamp_phases(t, zoneless):
                sub.stamps[sym] = phases
        else:
            emptied[sym] = (f"no usable rows (all {sub.rows_in} dropped: "
                            + ", ".join(f"{r} {e['dropped']}" for r, e in sub.rules.items() if e["dropped"]) + ")")
        rep.merge(sub)
    if rep.volume_empty:
        which = "" if "symbol" not in table.columns else f" for {', '.join(rep.volume_empty)}"
        rep.dropped_features = {f: f"volume column is empty{which}" for f in volume_features(cfg.features)}
    if not frames:
        if rep.skipped_symbols:
            # the report of a file skipped whole keeps its rows (its rules' lines), as a usable file's
            long = "symbol" in table.columns
            rep.too_few_rows = {sym: f"{path}: too few rows{f' for symbol {sym}' if long else ''}: {reason} ({needed.why})"
                                for sym, reason in rep.skipped_symbols.items()}
            rep.skipped_symbols.update(emptied)
            rep.status = "skipped"
            raise TooFewRows(next(iter(rep.too_few_rows.values())), rep.to_dict())
        detail = "".join(f"; {d}" for d in column_details(rep.rules.get("non_numeric", {}), unit))
        # a price column with no value in any row (a vendor's empty Open): "nan_or_inf 299" named no column
        detail += "".join(f"; column {col!r} holds no value in any row" for col in empty_columns(table, cfg))
        raise DataError(f"{path}: no usable rows (all {rep.rows_in} dropped: "
                        + ", ".join(f"{r} {e['dropped']}" for r, e in rep.rules.items() if e["dropped"]) + ")" + detail)
    rep.skipped_symbols.update(emptied)
    return frames, rep


def empty_columns(table: pd.DataFrame, cfg: DataConfig) -> list[str]:
    """The price columns of ``table`` (canonical names; Adj Close where it is read: ``data.price_adjustment``
    ``adjusted``) whose every cell is empty, ``-``, NaN or ±Inf."""
    out = []
    for col in (*io.PRICE_COLUMNS, *(("adj_close",) if cfg.price_adjustment == "adjusted" else ())):
        if col in table.columns:
            text = table[col].astype("string").str.strip()
            if (text.isna() | text.isin(io.EMPTY_CELLS) | text.str.lower().isin(("nan", "inf", "-inf"))).all():
                out.append(col)
    return out


def column_details(entry: dict[str, Any], unit: str) -> list[str]:
    """``volume: 12 rows are not numbers (e.g. '1 234' in line 5)`` for each column of a non_numeric entry."""
    return [f"{col}: {e['count']} {'row is not a number' if e['count'] == 1 else 'rows are not numbers'} "
            f"(e.g. {e['value']!r} in {unit} {e['line']})" for col, e in entry.get("columns", {}).items()]


def format_report(rep: dict[str, Any]) -> str:
    """A few human-readable lines for one file's report."""
    unit = "lines" if rep["row_numbers"] == "line" else "rows"
    head = f"{rep['file']}: {rep['rows_in']} rows in, {rep['rows_kept']} kept, {rep['rows_dropped']} dropped"
    if len(rep["symbols"]) > 1:
        head += f" ({len(rep['symbols'])} symbols)"
    lines = [head]
    for rule, e in rep["rules"].items():
        parts = [f"{e[k]} {k}" for k in ("dropped", "repaired", "flagged") if e[k]]
        shown = e["rows"][:MAX_ROWS_LISTED]
        more = ", ..." if sum(e[k] for k in ("dropped", "repaired", "flagged")) > len(shown) else ""
        named = unit if len(shown) > 1 or more else unit[:-1]  # "(line 52)", "(lines 2, 7)"
        where = f" ({named} {', '.join(map(str, shown))}{more})" if shown else ""
        lines.append(f"  {rule}: {', '.join(parts)}{where}")
        lines += [f"    {d}" for d in column_details(e, rep["row_numbers"])]
    for sym, why in rep["skipped_symbols"].items():
        lines.append(f"  skipped symbol {sym}: {why}")
    for sym, why in rep.get("ffill_fallback", {}).items():
        lines.append(f"  ffill fallback{f' ({sym})' if len(rep['symbols']) > 1 else ''}: {why}")
    if rep["derived_columns"]:
        lines.append(f"  no {'/'.join(rep['derived_columns'])} column: taken from the close")
    if rep.get("newest_first"):
        which = "" if len(rep["symbols"]) <= 1 else f" ({', '.join(rep['newest_first'])})"
        lines.append(f"  rows listed newest first{which}: read in reverse (each row moved: unsorted_timestamp, repaired)")
    if rep.get("close_column"):
        lines.append(f"  close: {rep['close_column']['used']} ({rep['close_column']['why']})")
    if rep.get("volume_empty"):
        what = ", ".join(rep["volume_empty"])
        dropped = rep.get("dropped_features") or {}
        lines.append(f"  volume column is empty ({what}): " + (f"features {', '.join(dropped)} dropped" if dropped
                                                               else "no feature of data.features needs it"))
    return "\n".join(lines)
