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
``unsorted_timestamp`` a row earlier than a row above it                           ``unsorted_timestamps``: sort (repaired) | drop | error
``duplicate_timestamp`` a timestamp seen in another row                            ``duplicate_timestamps``: keep first | last | error
``non_numeric``        a price/volume cell that is not a number                    ``invalid_values``: drop | ffill | error
``nan_or_inf``         a price/volume cell that is empty, NaN or ±Inf              ``invalid_values``
``non_positive_price`` open/high/low/close <= 0                                    ``invalid_values``
``negative_volume``    volume < 0 (0 is allowed)                                   ``invalid_values``
``ohlc_inconsistent``  high < max(open, close) or low > min(open, close)           ``ohlc_violations``: clip | drop | error
``jump``               |log(close_t / close_t-1)| > ``jump_threshold``              ``jumps``: flag | drop | error
``too_few_rows``       fewer kept rows than one window needs                       file/symbol unusable
=====================  ==========================================================  =======================

Repairs: ``sort`` reorders rows by time (stable); ``ffill`` replaces a bad cell by the same column's
value in the previous kept row (a row with no previous kept row is dropped — never back-filled);
``clip`` sets high = max(open, high, close) and low = min(open, low, close). A row that breaks several
rules is counted as dropped under the first rule that drops it, so
``rows_in == rows_kept + rows_dropped`` holds for every file. Row numbers in the report are the
file's 1-based line numbers for CSV (the header is line 1) and 1-based row numbers for Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.data import io
from hftraining.core.errors import ConfigError, DataError

MAX_ROWS_LISTED = 5  # offending row numbers listed per rule
VALUE_RULES = ("non_numeric", "nan_or_inf", "non_positive_price", "negative_volume")
RULES = (
    "blank_line", "missing_symbol", "bad_timestamp", "unsorted_timestamp", "duplicate_timestamp",
    *VALUE_RULES, "ohlc_inconsistent", "jump", "too_few_rows",
)


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

    def count(self, rule: str, kind: str, rows: np.ndarray) -> None:
        """Record ``len(rows)`` rows (1-based row numbers) as ``kind`` (dropped/repaired/flagged) by ``rule``."""
        if len(rows) == 0:
            return
        entry = self.rules.setdefault(rule, {"dropped": 0, "repaired": 0, "flagged": 0, "rows": []})
        entry[kind] += int(len(rows))
        listed = sorted(set(entry["rows"]) | {int(r) for r in np.sort(rows)[:MAX_ROWS_LISTED]})
        entry["rows"] = listed[:MAX_ROWS_LISTED]

    @property
    def rows_dropped(self) -> int:
        return sum(e["dropped"] for e in self.rules.values())

    def merge(self, other: "Report") -> None:
        self.rows_in += other.rows_in
        self.rows_kept += other.rows_kept
        for rule, e in other.rules.items():
            mine = self.rules.setdefault(rule, {"dropped": 0, "repaired": 0, "flagged": 0, "rows": []})
            for k in ("dropped", "repaired", "flagged"):
                mine[k] += e[k]
            mine["rows"] = sorted(set(mine["rows"]) | set(e["rows"]))[:MAX_ROWS_LISTED]
        self.symbols.update(other.symbols)
        self.skipped_symbols.update(other.skipped_symbols)
        self.derived_columns = sorted(set(self.derived_columns) | set(other.derived_columns))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable; rules in their order of application, only those that fired."""
        assert self.rows_in == self.rows_kept + self.rows_dropped, (self.file, self.rows_in, self.rows_kept)
        return {
            "file": self.file,
            "status": "ok",
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "row_numbers": self.row_numbers,
            "rules": {r: self.rules[r] for r in RULES if r in self.rules},
            "symbols": dict(sorted(self.symbols.items())),
            "skipped_symbols": dict(sorted(self.skipped_symbols.items())),
            "derived_columns": self.derived_columns,
        }


def check_policy(cfg: DataConfig) -> None:
    if cfg.jump_threshold < 0:
        raise ConfigError(f"data.jump_threshold: must be >= 0 (0 disables), got {cfg.jump_threshold}")
    if cfg.min_rows < 0:
        raise ConfigError(f"data.min_rows: must be >= 0, got {cfg.min_rows}")


@dataclass(frozen=True)
class RowsNeeded:
    """How many kept rows a symbol needs, and why (computed by :func:`hftraining.data.pipeline.rows_needed`,
    the one rule; the validator only applies it)."""

    rows: int
    why: str  # e.g. "feature warm-up 33 + data.sequence_length 60 + data.prediction_horizon 5"


ANY_ROWS = RowsNeeded(1, "at least one row")


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


def validate_frame(
    df: pd.DataFrame,
    cfg: DataConfig,
    source: str,
    first_row: int = 2,
    unit: str = "line",
    line: np.ndarray | None = None,
) -> tuple[pd.DataFrame, Report]:
    """Validate one symbol's rows (canonical column names, as :func:`io.read_table` returns them).

    ``line``: the 1-based row number of each row in its file (default ``first_row + position``).
    Returns the normalised frame (see :mod:`hftraining.data.io`) and the report. Raises
    :class:`DataError` for a missing column or a rule whose policy is ``error``. The too-few-rows
    rule is left to the caller (it depends on how the frame is used).
    """
    check_policy(cfg)
    rep = Report(file=source, row_numbers=unit, rows_in=len(df))
    cols_present = list(map(str, df.columns))
    for col in ("timestamp", "close", "volume"):
        if col not in df.columns:
            raise DataError(f"{source}: missing column {col!r} (columns: {', '.join(cols_present) or 'none'})")
    if line is None:
        line = np.arange(len(df), dtype=np.int64) + first_row

    # blank lines (CSV lines with no value at all)
    if len(df) and df.isna().to_numpy().all(axis=1).any():
        blank = df.isna().to_numpy().all(axis=1)
        rep.count("blank_line", "dropped", line[blank])
        df, line = df.loc[~blank], line[~blank]

    ts = io.parse_timestamps(df["timestamp"].reset_index(drop=True), source)
    ts_ns = pd.DatetimeIndex(ts).asi8  # NaT: the minimum int64, dropped just below
    bad_ts = ts.isna().to_numpy()

    # numbers: remember which cells were text that is not a number
    cols: dict[str, np.ndarray] = {}
    text_bad: dict[str, np.ndarray] = {}
    raw_text: dict[str, np.ndarray] = {}
    for col in io.OHLCV:
        if col not in df.columns:
            continue
        raw = df[col].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            cols[col] = raw.to_numpy(dtype=np.float64, na_value=np.nan)
            text_bad[col] = np.zeros(len(raw), dtype=bool)
        else:
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            stripped = raw.astype("string").str.strip()
            text_bad[col] = (np.isnan(num) & stripped.notna().to_numpy() & (stripped != "").fillna(False).to_numpy())
            raw_text[col] = raw.to_numpy(dtype=object)
            cols[col] = num
    for col in ("open", "high", "low"):
        if col not in cols:  # a close-only file: the bar is the close
            cols[col] = cols["close"].copy()
            text_bad[col] = text_bad["close"]
            rep.derived_columns.append(col)

    rows = _Rows(line, {"ts": ts_ns, **cols, **{f"_text_{k}": v for k, v in text_bad.items()},
                        "_pos": np.arange(len(ts_ns))})

    def drop(mask: np.ndarray, rule: str) -> None:
        if mask.any():
            rep.count(rule, "dropped", rows.line[mask])
            rows.take(~mask)

    drop(bad_ts, "bad_timestamp")

    # order: sort (repair), drop or error
    t = rows.cols["ts"]
    if len(t) > 1:
        prev_max = np.maximum.accumulate(t)
        late = np.zeros(len(t), dtype=bool)
        late[1:] = t[1:] < prev_max[:-1]
        if late.any():
            if cfg.unsorted_timestamps == "error":
                raise DataError(f"{_where(source, int(rows.line[late][0]), unit)}: timestamp earlier than a row above it"
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
            if cfg.duplicate_timestamps == "error":
                raise DataError(f"{_where(source, int(rows.line[same_prev][0]), unit)}: duplicate timestamp"
                                " (data.duplicate_timestamps=error)")
            if cfg.duplicate_timestamps == "last":
                dup = np.zeros(len(t), dtype=bool)
                dup[:-1] = same_prev[1:]
            else:
                dup = same_prev
            drop(dup, "duplicate_timestamp")

    _value_rules(rows, rep, cfg, source, unit, raw_text)
    _ohlc_rule(rows, rep, cfg, source, unit)
    _jump_rule(rows, rep, cfg, source, unit)

    c = rows.cols
    out = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(c["ts"].view("datetime64[ns]")).tz_localize("UTC"),
        **{k: c[k] for k in io.OHLCV},
    })
    rep.rows_kept = len(out)
    return out, rep


def _value_rules(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str, raw_text: dict) -> None:
    c = rows.cols
    n = len(rows)
    cell_bad: dict[str, dict[str, np.ndarray]] = {r: {} for r in VALUE_RULES}
    for col in io.OHLCV:
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
        return
    if cfg.invalid_values == "error":
        i = int(np.argmax(any_bad))
        for rule in VALUE_RULES:
            for col, m in cell_bad[rule].items():
                if m[i]:
                    raw = raw_text.get(col)
                    val = raw[c["_pos"][i]] if raw is not None else float(c[col][i])
                    val = float(val) if isinstance(val, (float, np.floating)) else val
                    raise DataError(f"{_where(source, int(rows.line[i]), unit)}: {rule.replace('_', ' ')} "
                                    f"{val!r} in column {col!r} (data.invalid_values=error)")
    if cfg.invalid_values == "drop":
        taken = np.zeros(n, dtype=bool)
        for rule in VALUE_RULES:
            m = row_bad[rule] & ~taken
            rep.count(rule, "dropped", rows.line[m])
            taken |= m
        rows.take(~taken)
        return
    # ffill: each bad cell takes the previous row's value of its column; rows with nothing before are dropped
    pos = np.arange(n)
    no_past = np.zeros(n, dtype=bool)
    for col in io.OHLCV:
        bad = np.logical_or.reduce([cell_bad[r][col] for r in VALUE_RULES if col in cell_bad[r]])
        if not bad.any():
            continue
        src = np.maximum.accumulate(np.where(bad, -1, pos))
        no_past |= src < 0
        c[col] = np.where(src >= 0, c[col][np.maximum(src, 0)], np.nan)
    taken = np.zeros(n, dtype=bool)
    for rule in VALUE_RULES:
        m = row_bad[rule] & no_past & ~taken
        rep.count(rule, "dropped", rows.line[m])
        taken |= m
        rep.count(rule, "repaired", rows.line[row_bad[rule] & ~no_past])
    rows.take(~taken)


def _ohlc_rule(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str) -> None:
    c = rows.cols
    top = np.maximum(c["open"], c["close"])
    bottom = np.minimum(c["open"], c["close"])
    bad = (c["high"] < top) | (c["low"] > bottom)
    if not bad.any():
        return
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


def _jump_rule(rows: _Rows, rep: Report, cfg: DataConfig, source: str, unit: str) -> None:
    if cfg.jump_threshold <= 0 or len(rows) < 2:
        return
    close = rows.cols["close"]
    jump = np.zeros(len(close), dtype=bool)
    jump[1:] = np.abs(np.log(close[1:] / close[:-1])) > cfg.jump_threshold
    if not jump.any():
        return
    if cfg.jumps == "error":
        i = int(np.argmax(jump))
        raise DataError(f"{_where(source, int(rows.line[i]), unit)}: close moves from {close[i - 1]:g} to {close[i]:g} "
                        f"(|log return| > data.jump_threshold={cfg.jump_threshold:g}; data.jumps=error)")
    if cfg.jumps == "drop":
        rep.count("jump", "dropped", rows.line[jump])
        rows.take(~jump)
    else:
        rep.count("jump", "flagged", rows.line[jump])


# --------------------------------------------------------------------------------------------
# Files


def validate_file(path: Path, cfg: DataConfig, needed: RowsNeeded = ANY_ROWS) -> tuple[dict[str, pd.DataFrame], Report]:
    """Read and validate one file → ({symbol: frame}, report). Symbols with fewer than
    ``needed.rows`` kept rows are dropped under ``too_few_rows``; a file left with no symbol is a DataError."""
    table = io.read_table(path)
    return validate_table(table, path, cfg, needed, io.first_row_number(path), "row" if io.is_parquet(path) else "line")


def validate_table(
    table: pd.DataFrame, path: Path, cfg: DataConfig, needed: RowsNeeded = ANY_ROWS, first: int = 2,
    unit: str = "line", symbol: str | None = None,
) -> tuple[dict[str, pd.DataFrame], Report]:
    """:func:`validate_file` of a table already read (canonical column names) from ``path``; rows
    are numbered from ``first`` in ``unit`` (line or row). ``symbol``: the symbol of a table without a
    ``symbol`` column (default: the file stem)."""
    if len(table) == 0:
        raise DataError(f"{path}: no data rows (header only)")
    for col in ("timestamp", "close", "volume"):
        if col not in table.columns:
            raise DataError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, table.columns))})")
    rep = Report(file=str(path), row_numbers=unit)
    frames: dict[str, pd.DataFrame] = {}
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
        frame, sub = validate_frame(part, cfg, str(path), first, unit, line)
        if 0 < len(frame) < needed.rows:
            sub.count("too_few_rows", "dropped", np.zeros(len(frame), dtype=np.int64))
            sub.rules["too_few_rows"]["rows"] = []  # the whole symbol: no row is at fault
            sub.skipped_symbols[sym] = f"{len(frame)} rows kept, {needed.rows} needed for one window"
            sub.rows_kept = 0
        elif len(frame):
            frames[sym] = frame
            sub.symbols[sym] = len(frame)
        rep.merge(sub)
    if not frames:
        if rep.skipped_symbols:
            sym, reason = next(iter(rep.skipped_symbols.items()))
            what = f" for symbol {sym}" if "symbol" in table.columns else ""
            raise DataError(f"{path}: too few rows{what}: {reason} ({needed.why})")
        raise DataError(f"{path}: no usable rows (all {rep.rows_in} dropped: "
                        + ", ".join(f"{r} {e['dropped']}" for r, e in rep.rules.items() if e["dropped"]) + ")")
    return frames, rep


def check_paths(paths: list[str], cfg: DataConfig, needed: RowsNeeded = ANY_ROWS) -> tuple[list[dict[str, Any]], list[str]]:
    """``hftraining data check``: validate every file of ``paths`` → (reports of usable files, one error
    line per unusable file). An unusable file never stops the others."""
    check_policy(cfg)
    reports: list[dict[str, Any]] = []
    errors: list[str] = []
    files: list[Path] = []
    for p in paths:
        try:
            files += io.resolve_paths(p)
        except DataError as e:
            errors.append(str(e))
    for path in files:
        try:
            _, rep = validate_file(path, cfg, needed)
            reports.append(rep.to_dict())
        except DataError as e:
            errors.append(str(e))
    return reports, errors


def format_report(rep: dict[str, Any]) -> str:
    """A few human-readable lines for one file's report."""
    unit = "lines" if rep["row_numbers"] == "line" else "rows"
    head = f"{rep['file']}: {rep['rows_in']} rows in, {rep['rows_kept']} kept, {rep['rows_dropped']} dropped"
    if len(rep["symbols"]) > 1:
        head += f" ({len(rep['symbols'])} symbols)"
    lines = [head]
    for rule, e in rep["rules"].items():
        parts = [f"{e[k]} {k}" for k in ("dropped", "repaired", "flagged") if e[k]]
        where = f" ({unit} {', '.join(map(str, e['rows']))}{', ...' if sum(e[k] for k in ('dropped', 'repaired', 'flagged')) > len(e['rows']) else ''})" if e["rows"] else ""
        lines.append(f"  {rule}: {', '.join(parts)}{where}")
    for sym, why in rep["skipped_symbols"].items():
        lines.append(f"  skipped symbol {sym}: {why}")
    if rep["derived_columns"]:
        lines.append(f"  no {'/'.join(rep['derived_columns'])} column: taken from the close")
    return "\n".join(lines)
