"""Where the rows come from: files, folders, long Parquet files and hive-partitioned Parquet datasets,
read one symbol at a time.

``data.data_dir`` (one path or a list) may name:

* a file or a folder of files, or a glob (CSV, possibly compressed, or Parquet): one file per
  symbol (the file stem) or a long file with a ``symbol`` column, read whole (:mod:`io`);
* a **long Parquet file** with a ``symbol`` column: each symbol is scanned on its own with
  ``symbol == S`` (and the date range) pushed down into the Parquet reader, so memory holds one
  symbol's rows at a time; a symbol's blanks around it are not its name, as in a long CSV file;
* a **hive-partitioned Parquet dataset**: a folder of ``symbol=SYM/`` folders of Parquet files
  (``SYM`` with its %-escapes decoded, :func:`partition_symbol`); a symbol's files are read together
  (sorted by name; with the same columns, :func:`same_columns`), nothing else is opened.

``data.symbols`` selects the symbols in every layout: before anything is read for the two Parquet
layouts and for one-symbol files (a file of another symbol is not opened), and before validation
for a long CSV file (its other symbols' rows are neither validated nor reported, and never reach
the rows: every layout gives the same rows). ``data.start_date`` / ``data.end_date``: rows dated
outside the range are not read; the validator cuts them on their UTC timestamps before any rule
(:mod:`hftraining.data.validate`), and a Parquet scan of a timestamp-typed column pushes the range
down (an optimisation only: the same rows are validated, a row with a null timestamp is read and
reported as ``bad_timestamp``). Rows of a Parquet symbol are numbered 1, 2, ... in the order the
scan returns them (the report's ``row`` numbers: position among that symbol's rows, the same with or
without a date range).

Daily bars (a day or more apart) of files that stamp one trading day at different UTC times of day
(a vendor's local midnights: New York at 05:00 UTC, Berlin at 23:00, plain dates at 00:00) make the
panel's dates several a day; the :class:`Collector` logs a warning naming the files and their times
and keeps it in the report (``mixed_stamps``, :func:`mixed_stamps`), and :func:`check_paths` (``data
check``) logs the same warning for the files it checks. Intraday bars of files stamped at different
phases of their spacing (hourly bars at :00 in one file, :30 in the others), which never share a
date, get a warning of their own kept there too (:func:`mixed_phases`); intraday stamps written
without a zone under a ``data.timezone`` other than UTC, read as UTC, are named in a warning
(``zoneless_stamps``, :func:`zoneless_stamps`). Nothing is re-stamped. A symbol's rows with a hole far longer than
a weekend or a holiday (:func:`long_gaps`: a three-month halt in daily bars) that ``data.max_gap`` does not keep
windows out of are named in a warning too (``long_gaps``: by :func:`check_paths`, and by training in
``data_report.json``), unless the whole panel shares it (:func:`panel_long_gaps`: Golden Week in hourly bars);
nothing is filled. A folder's hidden files (macOS's ``._AAPL.csv``) are not read, and are named
(:func:`unread_files`) as its zipped files are.

A :class:`Unit` is what one worker reads and validates at a time; :class:`Collector` combines the
units' reports into the validation report of the run and applies the dataset-wide rules (a
symbol in two places, ``data.symbols`` naming a symbol that is not there, nothing usable).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig, duration_ns
from hftraining.core.errors import DataError
from hftraining.data import io
from hftraining.data.rows import ANY_ROWS, RowsNeeded
from hftraining.data.validate import Report, TooFewRows, check_policy, date_range, validate_frame, validate_table

PARTITION = "symbol="
# the folder pyarrow (pandas' ``partition_cols``) writes the rows of a null partition value into
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
log = logging.getLogger("hftraining")


@dataclass(frozen=True)
class Unit:
    """One read: a whole file (``kind="file"``), one symbol of a long Parquet file (``"long"``; symbol
    ``""``: its rows without a symbol, read to be reported as a long CSV file's are) or one
    ``symbol=`` folder of a dataset (``"partition"``)."""

    kind: str
    path: str
    symbol: str | None = None

    @property
    def name(self) -> str:
        """How reports and errors name the unit."""
        if self.kind == "long":
            return f"{self.path}[symbol={self.symbol}]" if self.symbol else f"{self.path}[no symbol]"
        return self.path


def is_dataset(path: Path) -> bool:
    """A folder holding ``symbol=...`` folders (a hive-partitioned dataset)."""
    return path.is_dir() and any(p.is_dir() and p.name.startswith(PARTITION) for p in path.iterdir())


def partition_symbol(folder: Path) -> str:
    """The symbol of a dataset's ``symbol=`` folder: its name after ``symbol=``, %-escapes decoded as pyarrow
    writes and reads them (``df.to_parquet(path, partition_cols=["symbol"])`` writes ``BTC/USDT`` as
    ``symbol=BTC%2FUSDT`` and ``BRK B`` as ``symbol=BRK%20B``, which pandas reads back as ``BTC/USDT``). Read
    undecoded, the symbol was ``BTC%2FUSDT``: ``data.symbols: [BTC/USDT]`` did not find it, and a model trained on
    the same rows in a long file knew no such symbol. The blanks around the name are not the symbol's, as in a
    long file (a padded ``CHAR(8)`` column written with ``partition_cols`` is ``symbol=AEM%20%20%20%20%20``); ``""``
    for a folder that names no symbol: pyarrow's folder of the rows whose symbol is null
    (:data:`HIVE_NULL`), ``symbol=`` or blanks, whose rows are reported as a long file's rows without a symbol
    are. A DataError for a name that is not UTF-8 text once decoded (``symbol=%E9``), which pyarrow refuses too."""
    raw = folder.name[len(PARTITION):]
    if raw == HIVE_NULL:
        return ""
    try:
        return unquote(raw, errors="strict").strip()
    except UnicodeDecodeError:
        raise DataError(f"{folder}: the folder's name is not UTF-8 text once its %-escapes are decoded ({raw!r}): "
                        "rename it symbol=SYM, with SYM the symbol in UTF-8 (%-escaped as pyarrow writes it)") from None


def _parquet_columns(path: Path) -> dict[str, str]:
    """{canonical name: the file's column name} of a Parquet file, read from its schema only."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read Parquet ({str(e).strip().splitlines()[0]})") from None
    out: dict[str, str] = {}
    for n in names:
        canon = io.canonical_name(n)
        if canon and (canon not in out or io.name_key(n) == canon):
            out[canon] = n
    return out


def _symbol_text(col):
    """A symbol column (any Arrow type: strings, integer codes, a dictionary) as strings."""
    import pyarrow as pa

    return col if pa.types.is_string(col.type) else col.cast(pa.string())


def _no_symbol(col) -> "np.ndarray":
    """(n,) bool: the cells of a symbol column that name no symbol (null, empty or blank)."""
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(_symbol_text(col))
    return pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)


def _long_symbols(path: Path, column: str) -> tuple[list[str], bool]:
    """(the distinct values of a long Parquet file's symbol column as text, stripped of the blanks around
    them as a long CSV file's are, :func:`~hftraining.data.io.split_symbols`; whether a row has no
    symbol), read one row group at a time. A DataError for a file without rows or a symbol column
    that is not text or numbers (a list, a struct). A database's fixed-width column (``CHAR(8)``:
    ``'AEM     '``) named the symbol with its blanks, which ``data.symbols: [AEM]`` did not find, and
    ``'AEM'`` beside ``'AEM '`` was two symbols, the rows of one history split between them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    seen: set[str] = set()
    blank = False
    try:
        pf = pq.ParquetFile(path)
        if pf.metadata.num_rows == 0:
            raise DataError(f"{path}: no data rows (header only)")
        for i in range(pf.num_row_groups):
            col = pf.read_row_group(i, columns=[column]).column(0)
            values = pc.unique(_symbol_text(col)).to_pylist()
            seen.update(v.strip() for v in values if v is not None and v.strip())
            blank = blank or any(v is None or not v.strip() for v in values)
    except (OSError, ValueError, pa.ArrowException) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: column {column!r}: cannot read the symbols ({msg})") from None
    return sorted(seen), blank


def units(d: DataConfig) -> list[Unit]:
    """The units of ``d.data_dir``, in a stable order; ``data.symbols`` filters the Parquet layouts."""
    specs = d.data_dir if isinstance(d.data_dir, (list, tuple)) else [d.data_dir]
    wanted = None if d.symbols is None else set(d.symbols)
    out: list[Unit] = []
    for spec in specs:
        p = Path(spec) if spec is not None else None
        if p is not None and is_dataset(p):
            parts = sorted(q for q in p.iterdir() if q.is_dir() and q.name.startswith(PARTITION))
            named = [(q, partition_symbol(q)) for q in parts]
            # a folder naming no symbol (symbol ""): its rows reported (missing_symbol), as a long file's are
            out += [Unit("partition", str(q), s) for q, s in named if (wanted is None or s in wanted)]
            continue
        for f in io.resolve_paths(spec):
            if io.is_parquet(f) and "symbol" in _parquet_columns(f):
                syms, blank = _long_symbols(f, _parquet_columns(f)["symbol"])
                out += [Unit("long", str(f), s) for s in syms if wanted is None or s in wanted]
                if blank and wanted is None:  # rows without a symbol: reported (missing_symbol), as in a long CSV file
                    out.append(Unit("long", str(f), ""))
            elif wanted is None or io.symbol_of(f) in wanted or _has_symbol_column(f):
                out.append(Unit("file", str(f)))  # a file of one other symbol is not read at all
    if not out and d.symbols:
        where = d.data_dir if d.data_dir is not None else f"data.data_dir unset: the bundled sample, {io.sample_data_dir()}"
        raise DataError(f"data.symbols: {d.symbols[0]!r} not found in the data ({where})")
    return out


# names a folder's file may end in that look like prices the readers do not take (io.SUFFIXES): compressed other
# than gzip/bzip2/zstd (Binance's monthly .zip files), tab-separated or plain text (Stooq's .txt), Excel, Feather;
# not .json, which a dataset's folder holds as its metadata far more often than as prices
UNREAD_SUFFIXES = (".zip", ".xz", ".7z", ".tar", ".tgz", ".gz", ".bz2", ".zst", ".tsv", ".txt", ".xls", ".xlsx",
                   ".feather")


def unread_files(data_dir: Any) -> dict[str, Any] | None:
    """The files of the folders ``data_dir`` names (a path or a list; None: the bundled sample) that look like
    a symbol's prices but are not read (a name ending in :data:`UNREAD_SUFFIXES`, not in a suffix the
    readers take: ``BIDU.csv.zip``, ``ALNY.csv.xz``, ``WPM.xlsx``; a hidden file, :func:`~hftraining.data.io.is_hidden`,
    named as a data file: macOS's ``._AAPL.csv``, also inside a dataset's ``symbol=`` folders; and a data
    file beside a dataset's ``symbol=`` folders, which are all that is read of it)
    → ``{"files": [...], "why": line}``, or None; a file another item of ``data_dir`` names is read, not named.
    A folder is read for its ``.csv``, ``.csv.gz``/``.bz2``/``.zst``, ``.parquet`` and ``.pq`` files only, so
    such a symbol was left out of the panel without a word (a folder of nothing else is an error already).
    Globs name the files they mean; a ``symbol=`` dataset reads its own folders."""
    specs = data_dir if isinstance(data_dir, (list, tuple)) else [data_dir]
    found: list[Path] = []
    hidden: list[Path] = []
    loose: list[Path] = []
    for spec in specs:
        p = Path(spec) if spec is not None else io.sample_data_dir()
        if p.is_dir() and is_dataset(p):
            hidden += [f for q in sorted(p.iterdir()) if q.is_dir() and q.name.startswith(PARTITION)
                       for f in sorted(q.iterdir()) if f.is_file() and io.is_hidden(f) and io.is_parquet(f)]
            files = [f for f in sorted(p.iterdir()) if f.is_file()]
            loose += [f for f in files if io.is_data_file(f) and not io.is_hidden(f)]
            hidden += [f for f in files if io.is_data_file(f) and io.is_hidden(f)]
        elif p.is_dir():
            files = [f for f in sorted(p.iterdir()) if f.is_file()]
            found += [f for f in files if not io.is_data_file(f) and f.name.lower().endswith(UNREAD_SUFFIXES)]
            hidden += [f for f in files if io.is_data_file(f) and io.is_hidden(f)]
    if not found and not hidden and not loose:
        return None
    read: set[Path] = set()  # a file that another item of data_dir names (a file, a glob) is read
    for spec in specs:
        if spec is None or not is_dataset(Path(spec)):
            try:
                read.update(_real(f) for f in io.resolve_paths(spec))
            except DataError:
                pass  # the reader's own error
    found, hidden, loose = ([str(f) for f in fs if _real(f) not in read] for fs in (found, hidden, loose))
    if not found and not hidden and not loose:
        return None
    whys = []
    for names, what in ((found, "a folder's data files are .csv, .csv.gz, .csv.bz2, .csv.zst, .parquet and .pq files): "
                                "unpack or convert them to one of these to read them, or move them out of the folder"),
                        (hidden, "hidden files, whose name starts with '.', such as the ._AAPL.csv metadata macOS writes "
                                 "beside AAPL.csv, are not prices): rename one that holds prices to read it"),
                        (loose, "a folder of symbol= folders is a hive-partitioned dataset, read by those folders only): "
                                "move each into a symbol=NAME/ folder as Parquet, or name it in data.data_dir beside the "
                                "folder")):
        if names:
            listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            whys.append(f"{listed}: not read ({what}")
    return {"files": found + hidden + loose, "why": "data: " + "; ".join(whys)}


def _real(path: Path | str) -> Path:
    """The file ``path`` names, links followed, to tell two names of one file apart from two files; a link
    loop is itself (``Path.resolve`` raised a RuntimeError traceback there: the reader names the loop)."""
    return Path(os.path.realpath(path))


def partition_files(folder: Path) -> list[Path]:
    """The Parquet files of a dataset's ``symbol=`` folder that are read, sorted: not its hidden ones
    (:func:`~hftraining.data.io.is_hidden`: macOS's ``._part-0.parquet``, which pyarrow's own discovery skips too)."""
    return [f for f in sorted(folder.glob("*.parquet")) + sorted(folder.glob("*.pq")) if not io.is_hidden(f)]


def _read_names(names: list[str]) -> set[str]:
    """The column names of a Parquet file that are read: a timestamp (a Date and a Time of day both), a price, the
    volume, Adj Close, the symbol (:func:`~hftraining.data.io.canonical_name`) and Investing.com's ``Price``."""
    return {n for n in names if io.canonical_name(n) is not None or io.name_key(n) == "price"}


def same_columns(files: list[Path]) -> "Any":
    """The schema one symbol's Parquet files (a dataset's ``symbol=`` folder) are scanned with as one table (None for
    one file): the first file's columns, each read column (:func:`_read_names`) of the type every file's values fit
    (int64 volumes beside float ones as floats, as pyarrow's permissive promotion widens them; timestamps of other
    zones as the first file's zone). A DataError naming two of the files whose read columns differ (the columns one
    has that the other lacks: a later file's own columns were dropped without a word, its open/high/low taken from
    the close, its ``Time`` beside ``Date`` dropped and its hourly bars read as one bar a day, its ``Price`` read as
    no close), or whose read column holds values of another kind (dates beside date-times, which were cut to their
    dates: every bar of a day but one dropped as a duplicate; stamps with a zone beside stamps without one, which a
    file may not mix either). Only the files' footers are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(files) < 2:
        return None
    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_schema(f))
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{f}: cannot read Parquet ({str(e).strip().splitlines()[0]})") from None
    first, read = schemas[0], _read_names(schemas[0].names)
    for f, sch in zip(files[1:], schemas[1:]):
        cols = _read_names(sch.names)
        if cols != read:
            more, fewer = sorted(cols - read), sorted(read - cols)
            what = "; ".join(x for x in (f"{f.name} has {', '.join(map(repr, more))}" if more else "",
                                         f"it lacks {', '.join(map(repr, fewer))}" if fewer else "") if x)
            raise DataError(f"{f}: its columns differ from those of {files[0].name}, read with it as one symbol's "
                            f"rows ({what}): write every file of the folder with the same columns")
    fields = []
    for field in first:
        typ = field.type
        for f, sch in zip(files[1:], schemas[1:]):
            i = sch.get_field_index(field.name)
            other = sch.field(i).type if i >= 0 else None
            if other is None or other == typ:
                continue
            try:  # int64 and double: double; float and double: double; ms and ns: ns
                typ = pa.unify_schemas([pa.schema([(field.name, typ)]), pa.schema([(field.name, other)])],
                                       promote_options="permissive").field(0).type
                continue
            except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            if pa.types.is_timestamp(typ) and pa.types.is_timestamp(other) and (typ.tz is None) == (other.tz is None):
                finer = max(typ.unit, other.unit, key=["s", "ms", "us", "ns"].index)
                typ = pa.timestamp(finer, tz=typ.tz)  # one instant in either zone
                continue
            if field.name not in read:  # a column nothing reads: left out of the scan, not a refusal
                typ = None
                break
            raise DataError(f"{f}: column {field.name!r} holds {other} there and {field.type} in {files[0].name}, read "
                            "with it as one symbol's rows: write every file of the folder with the same column types "
                            "(dates beside date-times, or stamps with a zone beside stamps without one, cannot be one "
                            "column)")
        if typ is not None:
            fields.append(pa.field(field.name, typ, nullable=True, metadata=field.metadata))
    return pa.schema(fields, metadata=first.metadata)


def _has_symbol_column(path: Path) -> bool:
    """Whether a file has a ``symbol`` column (from its header or schema only)."""
    if io.is_parquet(path):
        return "symbol" in _parquet_columns(path)
    try:
        names = io._sniff_header(path)[1]
    except DataError:
        return True  # unreadable: read it, so that its error is reported
    return any(io.canonical_name(n) == "symbol" for n in names)


def input_files(us: list[Unit]) -> list[Path]:
    """Every file the units read (for the content hash of the feature store's key)."""
    files: set[Path] = set()
    for u in us:
        p = Path(u.path)
        files.update(partition_files(p) if u.kind == "partition" else [p])
    return sorted(files)


def _scan(files: list[Path], d: DataConfig, symbol_col: str | None, symbol: str | None,
          schema: Any = None) -> pd.DataFrame:
    """The rows of ``files`` (one symbol's) with the symbol and the date range pushed down; ``schema``: the one
    they are read with (:func:`same_columns`), else the first file's."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    cols = _parquet_columns(files[0])
    position = None  # each row's position among the symbol's rows, when the date range skips some
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema)
        flt = None
        if symbol_col is not None:  # the symbol's rows, compared as text (a column of integer codes too),
            field = ds.field(symbol_col)  # without the blanks around it (:func:`_long_symbols`)
            if not pa.types.is_string(dataset.schema.field(symbol_col).type):
                field = field.cast(pa.string())
            flt = pc.utf8_trim_whitespace(field) == symbol
        lo, hi = date_range(d)
        ts_col = cols.get("timestamp")
        n_ts = sum(io.canonical_name(n) == "timestamp" for n in dataset.schema.names)
        if ts_col is not None and n_ts == 1 and (lo is not None or hi is not None):  # not a Date beside a Time
            typ = dataset.schema.field(ts_col).type
            if pa.types.is_timestamp(typ):
                def bound(ns: int):
                    return pa.scalar(pd.Timestamp(ns, tz="UTC"), type=pa.timestamp("ns", tz="UTC")).cast(typ)
                ts = ds.field(ts_col)
                conds = [ts >= bound(lo)] if lo is not None else []
                conds += [ts < bound(hi)] if hi is not None else []
                cond = conds[0] if len(conds) == 1 else conds[0] & conds[1]
                cond = cond | ts.is_null()  # a row without a timestamp is read, and reported as bad_timestamp
                # the rows' numbers among the symbol's rows, as without the range: the scan of the
                # timestamps alone says which of them the range keeps
                dated = dataset.to_table(columns={"kept": cond}, filter=flt, use_threads=False).column(0)
                position = np.flatnonzero(dated.to_numpy(zero_copy_only=False))
                flt = cond if flt is None else flt & cond
        table = dataset.to_table(filter=flt, use_threads=False)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(f"{files[0]}: cannot read Parquet ({str(e).strip().splitlines()[0]})") from None
    df = io.parquet_frame(table.to_pandas())  # an index pandas restored (the timestamps, the symbol): columns, as in a file
    if position is not None:
        df.index = pd.Index(position)  # row i of the symbol is reported as row i + 1
    if symbol_col is not None:
        df = df.drop(columns=[symbol_col])
    return io.canonical_columns(df, files[0])


def _unnamed_rows(u: Unit) -> dict[str, Any]:
    """The report of a long Parquet file's rows without a symbol (:class:`Unit` with symbol ``""``):
    each dropped, as ``blank_line`` when it holds no value at all and else ``missing_symbol``, under
    its 1-based row number in the file (a long CSV file's rows are reported alike). A dataset's ``symbol=``
    folder that names no symbol (:func:`partition_symbol`: pyarrow's folder of null symbols) is such rows
    throughout, numbered across its files as a symbol's rows are; its rows were a symbol named
    ``__HIVE_DEFAULT_PARTITION__`` (or a blank one) in the panel."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partition = u.kind == "partition"
    files = partition_files(Path(u.path)) if partition else [Path(u.path)]
    if partition and not files:
        raise DataError(f"{u.path}: partition holds no .parquet files")
    rep = Report(file=u.name, row_numbers="row")
    offset = 0
    for path in files:
        column = None if partition else _parquet_columns(path)["symbol"]
        try:
            pf = pq.ParquetFile(path)
            for i in range(pf.num_row_groups):  # one row group in memory at a time
                group = pf.read_row_group(i)
                where = (np.arange(group.num_rows) if column is None
                         else np.flatnonzero(_no_symbol(group.column(column))))
                if len(where):
                    rows = group.take(pa.array(where))
                    rows = (rows if column is None else rows.drop_columns([column])).to_pandas()
                    empty = rows.isna().to_numpy().all(axis=1) if rows.shape[1] else np.ones(len(rows), bool)
                    rep.count("blank_line", "dropped", where[empty] + offset + 1)
                    rep.count("missing_symbol", "dropped", where[~empty] + offset + 1)
                    rep.rows_in += len(where)
                offset += group.num_rows
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{path}: cannot read Parquet ({str(e).strip().splitlines()[0]})") from None
    return rep.to_dict()


def read_unit(u: Unit, d: DataConfig, needed: RowsNeeded = ANY_ROWS) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read and validate one unit → ({symbol: validated frame}, its report as a dict). A unit none of
    whose symbols keeps ``needed.rows`` rows gives no frame and its whole report, status ``skipped``
    (``too_few_rows``: each symbol's one-line reason): the rows it read are reported as a usable
    unit's are, so that a run's totals and ``data check`` account for every one of them."""
    try:
        return _read_unit(u, d, needed)
    except TooFewRows as e:
        return {}, e.report


def _read_unit(u: Unit, d: DataConfig, needed: RowsNeeded) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    if u.kind in ("long", "partition") and not u.symbol:
        return {}, _unnamed_rows(u)
    if u.kind == "file":  # CSV (compressed or not) or a Parquet file, read whole
        path = Path(u.path)
        whole = io.read_table(path)
        table = _selected(whole, d)
        unit = "row" if io.is_parquet(path) else "line"
        if len(table) == 0 < len(whole):  # a long file without any of data.symbols: nothing of it is used
            return {}, Report(file=str(path), row_numbers=unit).to_dict()
        if "timestamp" in table.columns:  # stamps with and without a zone: refused, naming the first zone-less line
            io.one_zone_rule(table["timestamp"], path, io.first_row_number(path), unit)
        frames, rep = validate_table(table, path, d, needed, io.first_row_number(path), unit,
                                     decimal=table.attrs.get("decimal", "."))
        return frames, rep.to_dict()
    if u.kind == "partition":
        p = Path(u.path)
        files = partition_files(p)
        if not files:
            raise DataError(f"{p}: partition holds no .parquet files")
        table = _scan(files, d, None, None, same_columns(files))
    else:
        table = _scan([Path(u.path)], d, _parquet_columns(Path(u.path))["symbol"], u.symbol)
    if "timestamp" in table.columns:  # a Parquet column of text stamps, as a CSV file's
        io.one_zone_rule(table["timestamp"], u.name, 1, "row")
    if len(table) == 0 and date_range(d) != (None, None):
        # no row in the date range pushed into the scan: an empty symbol, as a file cut after validation leaves it
        frame, rep = validate_frame(table, d, u.name, 1, "row", symbol=u.symbol)
        return {u.symbol: frame}, rep.to_dict()
    frames, rep = validate_table(table, Path(u.name), d, needed, 1, "row", u.symbol)
    return frames, rep.to_dict()


def _selected(table: pd.DataFrame, d: DataConfig) -> pd.DataFrame:
    """The rows of a long table (one with a ``symbol`` column) whose symbol is in ``data.symbols``
    (all rows when it is None), their index (the file's row numbers) kept. A row without a symbol
    belongs to none of them."""
    if d.symbols is None or "symbol" not in table.columns:
        return table
    keep = table["symbol"].astype("string").str.strip().isin(set(d.symbols)).fillna(False).to_numpy(bool)
    if keep.all():
        return table
    out = table.loc[keep]
    out.attrs = dict(table.attrs)
    return out


def _stamp_owner(file: str, symbol: str) -> str:
    """How the checks of stamps name a symbol: its file, with the symbol for a long file."""
    name = Path(file).name
    return name if "[symbol=" in name or io.symbol_of(Path(file)) == symbol else f"{name}[symbol={symbol}]"


def mixed_stamps(stamps: dict[str, tuple[str, list[list[int]]]]) -> dict[str, Any] | None:
    """Whether daily bars of different symbols stamp the same trading days at different UTC times of day
    (``stamps``: {symbol, or (file, symbol) where files may repeat a symbol: (file,
    :func:`~hftraining.data.validate.stamp_runs`)}), as a vendor's local
    midnights do: New York's at 05:00 UTC (04:00 in summer), Berlin's at 23:00 (22:00), a file of plain
    dates at 00:00. The panel's dates are exact timestamps (a cross-section is the rows of one
    timestamp; a Tokyo close and a New York close are not one moment, and aligning them would read a
    later close into an earlier one), so such files make one trading day several dates, each with part
    of the symbols: the ``market`` feature and the top-k backtest see parts of the panel, and the
    backtest infers its periods per year from dates several a day. Nothing is moved; a warning names
    the files and their times, and the report keeps it (``mixed_stamps``). None when the stamps agree
    on every day that two symbols cover (one symbol's stamps changing over time are not a conflict).
    Intraday bars (values that are :func:`~hftraining.data.validate.stamp_phases`) are checked by
    :func:`mixed_phases`; the two findings are joined."""
    daily = _mixed_days({k: v for k, v in stamps.items() if isinstance(v[1], list)})
    intraday = mixed_phases({k: v for k, v in stamps.items() if isinstance(v[1], dict)})
    if daily is None or intraday is None:
        return daily or intraday
    return {**daily, **intraday, "why": f"{daily['why']}; also {intraday['why']}"}


def _duration(ns: int) -> str:
    """``1h``, ``5min``, ``1h30min``, ``0`` ... (a bar spacing or phase, in ns)."""
    parts, rest = [], ns
    for unit, size in (("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("ns", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0"


def mixed_phases(stamps: dict[Any, tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """Whether intraday bars of different symbols fall at different phases of their spacing
    (``stamps``: as :func:`mixed_stamps` takes them, with :func:`~hftraining.data.validate.stamp_phases`
    values): one file of hourly bars stamped at :00 and the others at :30, or 5-minute bars a minute
    off. The panel's dates are exact timestamps, so such symbols never share a date: their
    cross-sectional features (``cs_rank``, ``cs_zscore``) are 0 and the ``market`` feature sees one
    symbol at a time. Two symbols clash when their spans overlap and no phase of one is a phase of the
    other modulo the greatest common divisor of their spacings (so a 5-minute file among 1-minute files
    on the same minutes does not clash, nor do 4-hour bars whose phase moves with daylight saving, as
    both phases are kept); a symbol without a phase (irregular stamps) is not compared. A warning
    names the files and their phases; None when nothing clashes."""
    groups: dict[tuple[int, tuple[int, ...]], list[Any]] = {}  # (spacing, phases) → keys
    span: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for key, (_, p) in stamps.items():
        if p["phases"] and p["spacing"] > 0:
            g = (int(p["spacing"]), tuple(sorted(p["phases"])))
            groups.setdefault(g, []).append(key)
            lo, hi = span.get(g, p["span"])
            span[g] = [min(lo, p["span"][0]), max(hi, p["span"][1])]
    clash, first = set(), None
    keys = sorted(groups)
    for i, g1 in enumerate(keys):
        for g2 in keys[i + 1:]:
            start, end = max(span[g1][0], span[g2][0]), min(span[g1][1], span[g2][1])
            if start > end:
                continue
            m = math.gcd(g1[0], g2[0])
            if {p % m for p in g1[1]}.isdisjoint({p % m for p in g2[1]}):
                clash |= {g1, g2}
                first = start if first is None else min(first, start)
    if not clash:
        return None
    phases: dict[str, list[str]] = {}
    for g in sorted(clash):
        label = f"every {_duration(g[0])} at +{'/'.join(_duration(p) for p in g[1])}"
        phases[label] = sorted(_stamp_owner(stamps[k][0], k if isinstance(k, str) else k[1]) for k in groups[g])
    day = pd.Timestamp(first, unit="ns").strftime("%Y-%m-%d")
    listed = "; ".join(f"{label} in {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
                       for label, names in phases.items())
    why = (f"intraday bars stamped at different phases (UTC time modulo the bar spacing): {listed}: the panel's dates "
           f"are exact timestamps, so these files' bars never share a date (from {day} on) and each date holds part of the "
           "symbols (cs_rank/cs_zscore and the market feature see part of the panel; a symbol alone at its dates ranks 0); "
           "stamp every file's bars alike (e.g. each at its bar's start)")
    return {"phases_utc": phases, "first_day": day, "why": why}


UTC_NAMES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu", "Universal", "Etc/Universal"}


def zoneless_stamps(stamps: dict[Any, tuple[str, Any]], timezone: str) -> dict[str, Any] | None:
    """Intraday bars whose file wrote the stamps without a zone or offset (``2024-03-08 09:30:00``),
    under a ``data.timezone`` other than UTC (``stamps``: as :func:`mixed_stamps` takes them). The
    readers take such stamps as UTC (:mod:`io`), so New York times read 5 hours early in winter and 4 in
    summer, and the ``hour`` and ``calendar`` features, computed in ``data.timezone``, are off by that
    and move at each change of daylight saving time. Daily bars are not named (a plain date is that
    date in ``data.timezone``). A warning names the files; None when there are none."""
    if timezone in UTC_NAMES:
        return None
    files = sorted({Path(f).name for f, p in stamps.values() if isinstance(p, dict) and p.get("zoneless")})
    if not files:
        return None
    listed = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    why = (f"intraday timestamps without a zone or UTC offset in {listed} are read as UTC, while data.timezone is "
           f"{timezone} (the hour and calendar features read them there); if they are {timezone} times, write their "
           f"offset (e.g. {pd.Timestamp('2024-01-08 09:30', tz=timezone).isoformat()}) or convert them to UTC")
    return {"files": files, "timezone": timezone, "why": why}


LONG_GAP_DAYS = 7  # a gap between a symbol's rows longer than this many days ...
LONG_GAP_BARS = 20  # ... and than this many of its own bars is a hole in its data, not a weekend or a holiday
# (a symbol that trades every day of the week has no weekend nor holiday: longer than LONG_GAP_BARS bars is a hole)


def long_gaps(times: np.ndarray, max_gap: int | None = None) -> list[list[int]]:
    """The holes in one symbol's sorted stamps ``times`` (int64 ns UTC) that its windows read across:
    ``[[last stamp before, first stamp after], ...]`` for each gap between consecutive rows longer than
    :data:`LONG_GAP_BARS` times the symbol's bar (the gap a tenth of its gaps are at most, so a symbol that
    trades on half the days still has daily bars) and than :data:`LONG_GAP_DAYS` days, and not longer than
    ``max_gap`` (``data.max_gap`` in ns; None: no window is kept out of a gap). A weekend, a holiday or an
    exchange's week-long closure of daily bars is none (a closure of intraday bars the whole panel shares:
    :func:`panel_long_gaps`); a three-month halt of one symbol of a daily panel is one: its
    last bar before and its first bar after sit side by side in a window, and the return over the gap is
    read as one bar's (a feature, and the label of one step). A symbol that trades every day of the week in
    the four weeks either side of a gap (:func:`trades_every_day`: a crypto feed) has no weekend nor holiday
    for it to be: there a gap longer than :data:`LONG_GAP_BARS` bars is a hole however short (a one-day
    outage of hourly bars), where the week's floor had hidden any outage under eight days, unless it is no
    longer than :data:`LONG_GAP_BARS` times the gap :data:`USUAL_GAP_Q` of its gaps are at most: an illiquid
    coin's 1-minute bars, absent in the minutes nothing traded, pause for half an hour many times a day as its
    trading goes, and each such pause was a hole (a hundred and more a month, with a ``data.max_gap`` that cut
    a tenth to a quarter of its windows); a feed that misses few bars has its bar there."""
    t = np.asarray(times, dtype=np.int64)
    gaps = np.diff(t)
    positive = gaps[gaps > 0]
    if not len(positive):
        return []
    bar = int(np.quantile(positive, 0.1, method="lower"))
    long = gaps > LONG_GAP_BARS * bar
    if max_gap is not None:
        long &= gaps <= max_gap
    short = long & (gaps <= LONG_GAP_DAYS * 86400 * 10**9)  # a hole only in a feed without closures
    if short.any():
        usual = int(np.quantile(positive, USUAL_GAP_Q, method="lower"))  # a bar, or a sparse trader's pause
        long[short & (gaps <= LONG_GAP_BARS * usual)] = False
        short &= gaps > LONG_GAP_BARS * usual
    if short.any():
        long[short] = _every_day_beside(t, np.flatnonzero(short))
    return [[int(t[i]), int(t[i + 1])] for i in np.flatnonzero(long)]


USUAL_GAP_Q = 0.99
"""Of a symbol that trades every day of the week, a gap under :data:`LONG_GAP_DAYS` days is a hole only where
longer than :data:`LONG_GAP_BARS` times the gap this share of its gaps are at most (:func:`long_gaps`)."""


def _every_day_beside(t: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each gap ``t[i]`` to ``t[i + 1]`` (``i`` in ``at``) of the sorted stamps ``t``: whether the stamps
    within :data:`BESIDE_GAP_NS` either side of it (:func:`_beside`) trade every day of the week
    (:func:`trades_every_day`). Each weekday's stamps are searched for the gaps' edges: a symbol of weekday
    sessions (every weekend a gap here) costs one pass over its stamps, not one per weekend."""
    day = (t // 86400_000_000_000 + 3) % 7  # as trades_every_day counts them: 0 is Monday
    if np.bincount(day, minlength=7).min() == 0:  # no row on some weekday: an exchange's sessions, never every day
        return np.zeros(len(at), dtype=bool)
    lo, hi = t[at] - BESIDE_GAP_NS, t[at + 1] + BESIDE_GAP_NS
    counts = np.stack([np.searchsorted(w, hi, "right") - np.searchsorted(w, lo, "left")
                       for w in (t[day == k] for k in range(7))])
    return counts.min(axis=0) * 4 >= counts.max(axis=0)


CLOSURE_EDGE_NS = 86400 * 10**9
"""A closure is a gap another symbol's rows reach to within this of each edge (its own last row before the
gap and first after it; one symbol missing the last bar before a closure still shows it), not a stretch of a
longer halt of theirs."""


def trades_every_day(times: np.ndarray) -> bool:
    """Whether the stamps ``times`` (int64 ns UTC) fall on each of the seven days of the week (UTC), none
    less than a quarter as often as the busiest: a market that trades around the clock (crypto), which has
    no closure, so a gap all of its symbols share is the feed's outage. An exchange's bars never do: its
    sessions reach at most six UTC days (Sunday's is the next day's open east of UTC), none of them
    Saturday and Sunday both."""
    t = np.asarray(times, dtype=np.int64)
    if not len(t):
        return False
    counts = np.bincount((t // 86400_000_000_000 + 3) % 7, minlength=7)  # 1970-01-01 was a Thursday: 0 is Monday
    return bool(counts.min() * 4 >= counts.max())


BESIDE_GAP_NS = 28 * 86400 * 10**9
"""Whether a symbol trades every day of the week is read from its rows this far either side of its gap."""


def _beside(t: np.ndarray, a: int, b: int) -> np.ndarray:
    """The sorted stamps ``t`` within :data:`BESIDE_GAP_NS` before ``a`` and after ``b``."""
    t = np.asarray(t, dtype=np.int64)
    lo, mid, hi = np.searchsorted(t, [a - BESIDE_GAP_NS, a + 1, b + BESIDE_GAP_NS + 1])
    return np.concatenate([t[lo:mid], t[np.searchsorted(t, b):hi]])


def panel_long_gaps(times: dict[str, np.ndarray], max_gap: int | None = None,
                    closures: list[list[int]] | None = None) -> dict[str, list[list[int]]]:
    """{name: :func:`long_gaps` of its sorted stamps} for the symbols of one panel (``times``: {symbol, or how
    a check names one: int64 ns UTC}), less the gaps that are the panel's calendar (:func:`panel_gaps`);
    ``closures``: those of the panel the model was trained on (``[[from, to], ...]`` ns,
    :attr:`~hftraining.data.pipeline.Preprocessing.closures`), which count as another symbol's rows at
    their edges, so a forecast of one symbol is silent on a closure its training panel shared."""
    return panel_gaps(times, max_gap, closures)[0]


def panel_gaps(times: dict[str, np.ndarray], max_gap: int | None = None,
               closures: list[list[int]] | None = None) -> tuple[dict[str, list[list[int]]], list[list[int]]]:
    """The holes of :func:`panel_long_gaps` and, apart, the gaps of the symbols that are the panel's
    calendar (sorted, each once). A gap is the calendar when no symbol has a row inside it and another
    symbol's rows reach from before it to after it, to within :data:`CLOSURE_EDGE_NS` of each edge, as the
    whole market's closure leaves it (Golden Week in hourly Tokyo bars, a nine-day Lunar New Year in 4-hour
    bars): such a gap is every symbol's, as a weekend is, and naming it for each symbol said nothing of any
    one of them. A halt of one symbol while the others trade keeps its warning, as do a halt inside a longer
    halt of another symbol, a symbol alone in the panel or alone across its gap (nothing tells a closure from
    a hole there), and every gap of a symbol that trades every day of the week in the four weeks either side
    of it (:func:`trades_every_day`: a ten-day outage of a crypto feed, on every symbol). Each symbol's sorted
    stamps are searched for the gaps' edges, only when some symbol has a gap: the panel's stamps are never
    sorted together (1,000 symbols of 40,000 hourly bars: 320 MB and seconds in every prepare and predict)."""
    found = {name: long_gaps(t, max_gap) for name, t in times.items()}
    holes = [(name, h) for name, hs in found.items() for h in hs]
    if not holes:
        return found, []
    # a closure is one gap of many symbols: each distinct gap is searched for once
    edges, which = np.unique(np.array([h for _, h in holes], dtype=np.int64).reshape(-1, 2), axis=0,
                             return_inverse=True)
    a, b = edges[:, 0], edges[:, 1]
    inside = np.zeros(len(edges), dtype=bool)  # a row of some symbol in (a, b)
    # the symbols whose last row before and first row after lie near a and b (a gap's own symbol among them)
    edged = np.zeros(len(edges), dtype=np.int64)
    for t in times.values():
        t = np.asarray(t, dtype=np.int64)
        if not len(t):
            continue
        lo, hi = np.searchsorted(t, a, "right"), np.searchsorted(t, b, "left")  # rows at or before a; before b
        inside |= hi > lo
        before, after = t[np.maximum(lo - 1, 0)], t[np.minimum(hi, len(t) - 1)]
        edged += (lo > 0) & (hi < len(t)) & (before >= a - CLOSURE_EDGE_NS) & (after <= b + CLOSURE_EDGE_NS)
    for c, e in closures or ():  # the training panel's closure: its rows at c and e, none between
        # or the same closure in stamps of another hour: both edges moved the same way by under a day (daily bars
        # stamped at New York's midnight, 05:00 UTC, or 04:00 after a clock change inside it, by a model trained
        # on dates); not a symbol missing the last bar before it (its first edge earlier, its second the same)
        moved = (np.abs(a - c) < CLOSURE_EDGE_NS) & (np.abs(b - e) < CLOSURE_EDGE_NS) & (np.sign(a - c) == np.sign(b - e))
        edged += ((c <= a) & (c >= a - CLOSURE_EDGE_NS) & (e >= b) & (e <= b + CLOSURE_EDGE_NS)) | moved
    shared_gap = ~inside & (edged >= 2)  # its own symbol and another
    out: dict[str, list[list[int]]] = {name: [] for name in found}
    shared: set[tuple[int, int]] = set()
    for (name, h), u in zip(holes, np.ravel(which)):
        if shared_gap[u] and not trades_every_day(_beside(times[name], *h)):
            shared.add((h[0], h[1]))
        else:
            out[name].append(h)
    return out, [list(h) for h in sorted(shared)]


def long_gaps_found(found: dict[str, list[list[int]]], max_gap: str | None, where: str) -> dict[str, Any] | None:
    """The warning about the holes of :func:`long_gaps` (``found``: {symbol, or how the check names one:
    its holes}; ``max_gap``: ``data.max_gap`` as set; ``where``: the key that keeps them, e.g.
    ``data_report.json: long_gaps``) → ``{"symbols": {name: [[from, to], ...]}, "why": line}`` (ISO
    stamps), or None without a hole."""
    found = {k: v for k, v in found.items() if v}
    if not found:
        return None
    setting = ("data.max_gap is not set" if max_gap is None else f"data.max_gap {max_gap} is longer than these gaps")
    why = (f"data: gaps inside a symbol's rows longer than {LONG_GAP_BARS} of its bars and, unless it trades every day "
           f"of the week, {LONG_GAP_DAYS} days (if it does, {LONG_GAP_BARS} times the gap {USUAL_GAP_Q:.0%} of its "
           f"gaps are at most) ({long_gaps_listed(found)}): {setting}, so a window reads the bars before and after "
           "such a gap as consecutive, and the return over it as one bar's (an input, and the label of one step); set data.max_gap "
           f"(e.g. {max_gap_below(found)}) to keep windows out of them, or leave the symbol out ({where})")
    iso = lambda ns: pd.Timestamp(ns, tz="UTC").isoformat()  # noqa: E731
    return {"symbols": {n: [[iso(a), iso(b)] for a, b in found[n]] for n in sorted(found)}, "why": why}


def max_gap_below(found: dict[str, list[list[int]]]) -> str:
    """A ``data.max_gap`` that keeps windows out of every hole of ``found`` (:func:`long_gaps` of each name):
    the whole days, hours, minutes or seconds below the shortest, in the coarsest of them within a tenth of it
    (a one-day outage of hourly crypto bars, 25 hours: ``1D``, where ``7D`` kept windows across it; a 47-hour
    one: ``46h``, not ``1D``; a three-month halt of daily bars: ``94D``). Not ``7D`` for every hole over a
    week: a hole of weekly or monthly bars is over 20 of them, and ``7D`` is one weekly bar, under one monthly
    bar: it cut every window of monthly bars ("the training split yields no window")."""
    shortest = min(b - a for holes in found.values() for a, b in holes)
    for unit, ns in (("D", 86400 * 10**9), ("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9)):
        if (n := (shortest - 1) // ns) >= 1 and 10 * n * ns >= 9 * shortest:
            return f"{n}{unit}"
    return f"{max(shortest - 1, 1)}ns"


def long_gaps_listed(found: dict[str, list[list[int]]]) -> str:
    """``found`` (:func:`long_gaps` of each name, none empty) as a phrase: each name's longest hole, with the
    count of the others (``HALT: no row from 2021-02-26 to 2021-06-01 (95 days)``; under two days in hours:
    ``BTC: no row from 2024-03-09 23:00 UTC to 2024-03-11 (25 hours)``), five names at most."""

    def when(ns: int) -> str:
        t = pd.Timestamp(ns, tz="UTC")
        return t.date().isoformat() if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M UTC")

    def longest(holes: list[list[int]]) -> str:
        a, b = max(holes, key=lambda h: h[1] - h[0])
        more = f" and {len(holes) - 1} more" if len(holes) > 1 else ""
        hours = (b - a) / (3600 * 10**9)  # under two days in hours: a 25-hour outage is not "1 days"
        size = f"{round(hours, 1):g} hours" if hours < 48 else f"{round(hours / 24, 1):g} days"
        return f"{when(a)} to {when(b)} ({size}){more}"

    names = sorted(found)
    listed = "; ".join(f"{n}: no row from {longest(found[n])}" for n in names[:5])
    return listed + (f"; and {len(names) - 5} more symbols" if len(names) > 5 else "")


def _mixed_days(stamps: dict[Any, tuple[str, list[list[int]]]]) -> dict[str, Any] | None:
    """:func:`mixed_stamps` of daily bars."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for _, runs in stamps.values():
        for first, last, off in runs:
            spans.setdefault(off, []).append((first, last))
    if len(spans) < 2:
        return None
    merged = {}
    for off, iv in spans.items():  # each offset's days as disjoint intervals
        out: list[list[int]] = []
        for a, b in sorted(iv):
            if out and a <= out[-1][1] + 1:
                out[-1][1] = max(out[-1][1], b)
            else:
                out.append([a, b])
        merged[off] = out
    first_clash = None
    offs = sorted(merged)
    for i, o1 in enumerate(offs):
        for o2 in offs[i + 1:]:
            x, y, j, k = merged[o1], merged[o2], 0, 0
            while j < len(x) and k < len(y):  # the first day both offsets cover (sorted disjoint intervals)
                if max(x[j][0], y[k][0]) <= min(x[j][1], y[k][1]):
                    day = max(x[j][0], y[k][0])
                    first_clash = day if first_clash is None else min(first_clash, day)
                    break
                if x[j][1] < y[k][1]:
                    j += 1
                else:
                    k += 1
    if first_clash is None:
        return None

    def clock(off: int) -> str:
        h, rest = divmod(off % 86400, 3600)
        return f"{h:02d}:{rest // 60:02d}" + (f":{rest % 60:02d}" if rest % 60 else "")

    groups: dict[str, list[str]] = {}
    for key, (file, runs) in stamps.items():
        label = "/".join(clock(o) for o in sorted({r[2] for r in runs}, key=lambda o: o % 86400))
        groups.setdefault(label, []).append(_stamp_owner(file, key if isinstance(key, str) else key[1]))
    day = pd.Timestamp(first_clash * 86400, unit="s").strftime("%Y-%m-%d")
    listed = "; ".join(f"{label} in {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
                       for label, names in sorted(groups.items()))
    why = (f"daily bars stamped at different times of day (UTC): {listed}: the panel's dates are exact timestamps, so a "
           f"trading day (e.g. {day}) is several dates, each with part of the symbols (the market feature and the top-k "
           "backtest see parts of the panel; the backtest's periods per year count every date); stamp every file's "
           "daily bars alike (e.g. dates without a time, YYYY-MM-DD) or set evaluation.periods_per_year")
    return {"times_utc": dict(sorted(groups.items())), "first_day": day, "why": why}


def claim(seen: dict[str, tuple[str, str]], where: str, symbols: list[str]) -> None:
    """Record that the unit ``where`` holds ``symbols`` (``seen``: {case-folded symbol: (symbol, unit)}
    of the units before it); a DataError naming both units for a symbol one of them already holds,
    spelled alike or in another case only (``AEM.csv`` and ``aem.CSV``, which a case-insensitive disk
    cannot even hold side by side): read as two symbols, one history would be twice in the panel, in
    its cross-sections and in the backtest's portfolio. Two of Binance's period files of one symbol
    and interval (``BTCUSDT-1m-2024-03``, ``BTCUSDT-1m-2024-04``) are that DataError too: each month was
    a symbol of its own, alone at its dates."""
    for sym in symbols:
        other = seen.get(sym.casefold())
        if other is not None:
            if other[0] == sym:
                raise DataError(f"{where}: symbol {sym!r} also appears in {other[1]}")
            raise DataError(f"{where}: symbol {sym!r} is symbol {other[0]!r} of {other[1]} in another case (one symbol "
                            "twice?): keep one of them, or rename one")
        seen[sym.casefold()] = (sym, where)
        if (part := BINANCE_PERIOD.fullmatch(sym)) is not None:
            key = "\0" + part.group(1).casefold()  # no symbol's key: a name holds no NUL
            if (other := seen.get(key)) is not None:
                raise DataError(f"{where}: symbol {sym!r} and symbol {other[0]!r} of {other[1]} are one history's "
                                "periods (Binance's monthly or daily files), read as two symbols: join them into one file "
                                f"per symbol ({part.group(2)}.csv)")
            seen[key] = (sym, where)


# the name of one of Binance's period files (data.binance.vision): SYMBOL-INTERVAL-YYYY-MM or -YYYY-MM-DD
BINANCE_PERIOD = re.compile(r"((.+)-(?:\d+[smhdwM]|1mo))-\d{4}-\d{2}(?:-\d{2})?")


class Collector:
    """The dataset-wide rules over the units' results, and the run's validation report."""

    def __init__(self, d: DataConfig, needed: RowsNeeded):
        self.d, self.needed = d, needed
        self.origin: dict[str, str] = {}
        self.seen: dict[str, tuple[str, str]] = {}  # case-folded symbol (or period file stem): (symbol, unit), for :func:`claim`
        self.reports: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.stamps: dict[str, tuple[str, Any]] = {}  # symbol: (file, stamp runs of daily bars or phases of intraday ones)

    def add(self, u: Unit, symbols: list[str], report: dict[str, Any]) -> None:
        """A unit's symbols and report (status ``skipped``: a unit with too few rows in all, listed with its
        rows and under ``too_few_rows``, :func:`read_unit`)."""
        claim(self.seen, u.name, symbols)
        self.origin.update(dict.fromkeys(symbols, u.name))
        self.skipped.update(report.get("skipped_symbols", {}))
        self.skipped.update(report.get("too_few_rows", {}))
        self.stamps.update({sym: (report["file"], runs) for sym, runs in report.pop("stamps", {}).items()})
        self.reports.append(report)

    def order(self) -> list[str]:
        """The run's symbols, sorted by name: the windows, the order training draws them in and every
        sum over symbols follow it, so neither the order of ``data.symbols`` nor the files' layout
        (``X-B.csv`` sorts before ``X.csv``, the symbol ``X`` before ``X-B``) changes a result."""
        d = self.d
        if d.symbols is not None:
            unknown = [s for s in d.symbols if s not in self.origin and s not in self.skipped]
            if unknown:
                raise DataError(f"data.symbols: {unknown[0]!r} not found in the data (found: {', '.join(sorted(self.origin))})")
            syms = sorted({s for s in d.symbols if s in self.origin})
        else:
            syms = sorted(self.origin)
        if not syms:
            why = list(self.skipped.values())  # thousands of files: the first three and a count, not one huge line
            more = f"; and {len(why) - 3} more" if len(why) > 3 else ""
            where = d.data_dir if d.data_dir is not None else "the bundled sample data (data.data_dir)"
            raise DataError(f"{where}: no symbol has enough rows ({'; '.join(why[:3])}{more})")
        return syms

    def report(self) -> dict[str, Any]:
        """The run's validation report; daily files that stamp a trading day at different times are
        logged as a warning and kept under ``mixed_stamps`` (:func:`mixed_stamps`)."""
        r = self.reports
        out = {
            "files": r,
            "rows_in": sum(x["rows_in"] for x in r),
            "rows_kept": sum(x["rows_kept"] for x in r),
            "rows_dropped": sum(x["rows_dropped"] for x in r),
            "too_few_rows": self.skipped,
            "rows_needed": self.needed.rows,
        }
        used = {s: v for s, v in self.stamps.items() if s in self.origin}
        mixed = mixed_stamps(used)
        if mixed is not None:
            log.warning("%s", mixed["why"])
            out["mixed_stamps"] = mixed
        local = zoneless_stamps(used, self.d.timezone)
        if local is not None:
            log.warning("%s", local["why"])
            out["zoneless_stamps"] = local
        return out


def validated(d: DataConfig, needed: RowsNeeded = ANY_ROWS, collector: Collector | None = None,
              ) -> Iterator[tuple[str, pd.DataFrame]]:
    """(symbol, validated frame) of every unit, one unit in memory at a time; ``collector``
    gathers the report (call its ``order()`` and ``report()`` after the loop)."""
    check_policy(d)
    col = collector or Collector(d, needed)
    for u in units(d):
        frames, rep = read_unit(u, d, needed)
        col.add(u, list(frames), rep)
        yield from frames.items()


def load_and_validate(d: DataConfig, needed: RowsNeeded = ANY_ROWS) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read and validate every unit of ``d.data_dir`` → ({symbol: frame}, report).

    The report is JSON-serialisable: ``{"files": [per-unit reports], "rows_in", "rows_kept",
    "rows_dropped", "too_few_rows": {symbol: reason}, "rows_needed"}`` (and the warnings' keys: ``mixed_stamps``,
    ``zoneless_stamps``, ``unread_files``: :func:`unread_files`, logged as well). Symbols with fewer than
    ``needed.rows`` kept rows, and a long file's symbols with every row dropped (the file keeping
    others), are skipped and listed under ``too_few_rows`` with the reason; a file skipped whole is
    in ``files`` too (status ``skipped``, its rows reported), so ``rows_in == rows_kept +
    rows_dropped`` over every row read; any other unusable input is a :class:`DataError`.
    """
    col = Collector(d, needed)
    frames = dict(validated(d, needed, col))
    out, report = {s: frames[s] for s in col.order()}, col.report()
    unread = unread_files(d.data_dir)  # a folder's files left out (BIDU.csv.zip, ._AEM.csv): said as training says them
    if unread is not None:
        log.warning("%s", unread["why"])
        report["unread_files"] = unread
    return out, report


def check_paths(paths: list[str], cfg: DataConfig,
                needed: RowsNeeded = ANY_ROWS) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """``hftraining data check``: validate every unit of ``paths`` (files, folders, globs, long
    Parquet files, hive datasets: exactly what training reads) → (reports of the units read, one error
    line per unusable unit (a unit with too few rows, which training skips, has both: its report,
    status ``skipped``, lists its rows), the panel's stamp warnings: ``mixed_stamps`` (:func:`mixed_stamps`) and
    ``zoneless_stamps`` (:func:`zoneless_stamps`) of the files checked together, and ``long_gaps``
    (:func:`long_gaps_found`: holes in a symbol's rows that its windows would read across, less the closures the
    files checked together share: :func:`panel_long_gaps`), where they apply). An
    unusable unit never stops the others. Files checked together get training's warnings, logged once, and its
    rule that a symbol lives in one unit (:func:`claim`): the later of two units holding it is an error line."""
    check_policy(cfg)
    reports: list[dict[str, Any]] = []
    errors: list[str] = []
    specs: list[str] = []
    for p in paths:  # one spec per file (or dataset), so that one unreadable file spoils only itself
        try:
            specs += [p] if is_dataset(Path(p)) else [str(f) for f in io.resolve_paths(p, links=True)]
        except DataError as e:
            errors.append(str(e))
    # a file named twice (a folder and a file in it, overlapping globs) is checked once: read twice, its
    # symbols would be claimed twice, an error naming the file as its own duplicate
    first: dict[Path, str] = {}
    for s in specs:
        first.setdefault(_real(s), s)
    specs = list(first.values())
    seen: dict[str, tuple[str, str]] = {}  # a symbol in two files (or in two cases) is training's error too
    max_gap = None if cfg.max_gap is None else duration_ns(cfg.max_gap, "data.max_gap")
    held: dict[str, np.ndarray] = {}  # how the check names a symbol: its stamps, for the holes (panel_long_gaps)
    for spec in specs:
        try:
            found = units(replace(cfg, data_dir=spec))
        except DataError as e:
            errors.append(str(e))
            continue
        for u in found:
            try:
                frames, report = read_unit(u, cfg, needed)
                claim(seen, u.name, list(frames))
                reports.append(report)
            except DataError as e:
                errors.append(str(e))
                continue
            for sym, frame in frames.items():  # a long file's symbols by name, as its report names the file
                own = u.kind != "file" or io.symbol_of(Path(u.path)) == sym
                held[u.name if own else f"{u.name}[symbol={sym}]"] = _stamps_ns(frame)
            if report["status"] == "skipped":  # unusable for training: its error line, beside its report
                errors.append(next(iter(report["too_few_rows"].values())))
    # the files checked together are a panel, as training reads them: a trading day stamped at different
    # times in different files is the warning training gives (Collector.report), said here once on stderr
    stamps = {(r["file"], sym): (r["file"], runs) for r in reports for sym, runs in r.pop("stamps", {}).items()}
    mixed = mixed_stamps(stamps)
    if mixed is not None:
        log.warning("%s", mixed["why"])
    local = zoneless_stamps(stamps, cfg.timezone)
    if local is not None:
        log.warning("%s", local["why"])
    gaps = long_gaps_found(panel_long_gaps(held, max_gap), cfg.max_gap, "data check --json: long_gaps")
    if gaps is not None:
        log.warning("%s", gaps["why"])
    unread = unread_files(paths)
    if unread is not None:
        log.warning("%s", unread["why"])
    found = (("mixed_stamps", mixed), ("zoneless_stamps", local), ("long_gaps", gaps), ("unread_files", unread))
    return reports, errors, {k: v for k, v in found if v is not None}


def _stamps_ns(frame: pd.DataFrame) -> np.ndarray:
    """A validated frame's timestamps as int64 ns UTC."""
    ts = pd.DatetimeIndex(frame["timestamp"])
    return (ts.tz_convert("UTC") if ts.tz is not None else ts).as_unit("ns").asi8
