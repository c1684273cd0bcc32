"""Readers: CSV/Parquet files → one normalised frame per symbol.

A normalised frame has the columns ``timestamp`` (datetime64[ns, UTC]), ``open``, ``high``, ``low``,
``close``, ``volume`` (float64), sorted by time with unique timestamps.

Accepted inputs: a file, a folder of files or a glob (or a list of them); one file per symbol (the
symbol is the file name without its extensions: ``AAPL.csv.gz`` is ``AAPL``) or one long file with a
``symbol`` column. Column names are matched case-insensitively with common aliases (``Date``,
``Datetime``, ``Vol``, Binance's ``open_time`` and ``openTime``, CryptoDataDownload's ``unix``, CoinAPI's
``time_period_start`` and ``price_open`` ... ``volume_traded``, Alpaca's and Polygon's ``t`` and ``window_start``,
MetaTrader's ``<DATE>``, SQL Server's ``[Date]``, Dukascopy's ``Gmt time`` and ``Local time`` (with its
offset), Nasdaq.com's ``Close/Last``, Investing.com's ``Vol.``
and its German and Spanish names, ``Datum``/``Fecha``, ``Zuletzt``/``Último`` ...); two columns of one
such name, or of two names read as one price or the volume, are a DataError (:func:`one_name_each`,
:func:`one_column_each`); Investing.com's ``Price`` is the close beside Open, High and Low
(:func:`price_close`); of two columns named as the timestamp (``Date`` beside ``Datetime``) the one
of more distinct cells is read (:func:`_finest`), and a ``unix`` beside ``date`` only where both stamp the
same instants (:func:`_same_instants`). ``Adj Close`` (Alpha Vantage's ``adjusted_close``, Tiingo's
``adjClose``) is kept as ``adj_close`` beside ``close`` (the validator applies
``data.price_adjustment``) and is the close when there is no other. CSV files may be compressed
(``.csv.gz``, ``.csv.bz2``, ``.csv.zst``, read as they are), may use ``,`` ``;`` tab or ``|`` as
delimiter (sniffed from the header) and may start with a UTF-8 byte-order mark or blank lines; data
lines may end in a delimiter the header line lacks (:func:`_trailing_field`), and a line of nothing
but white space is a blank line (:func:`_blank_lines`). A header line repeated below line 1 in another
column order (two exports joined) is a DataError naming its line (:func:`_other_headers`). A
yfinance download as ``df.to_csv()`` writes it (header lines ``Price``, ``Ticker`` and ``Date``), or
as ``df.to_parquet()`` keeps it (two levels of columns: :func:`_one_ticker`), is read for one
ticker; a first column without a name that holds text (``df.to_csv()`` of a frame indexed by time)
is the timestamp when no column is named as one. A first line of numbers (no header line: Binance's
klines are told their header, other files a name for each field in their order: :func:`_bar_names`),
a line above the header, or a file that is not UTF-8 text (compressed, Parquet, Excel, UTF-16), and
a JSON reply or an HTML page saved under a ``.csv`` name, are one-line errors saying what to do.

Numbers: the decimal mark is sniffed from the first rows: a decimal comma (``101,5``) when such
cells outnumber decimal-point ones (``101.5``, ``1,234,567``); then ``.`` separates thousands
(``1.234.567,5``). With a ``,`` delimiter only quoted cells hold a comma (Investing.com's German
download: ``"17.936,65"``), and a quoted ``"1,234,567"`` (groups of three) is a number with ``.``
as the decimal mark, but beside German or Spanish price names a ``"151,234"`` is 151.234. A cell
that fits neither stays text, and the validator reports it (``non_numeric``, naming the column). A
``$`` before a price is read (Nasdaq.com's ``$182.52``), a volume may end in ``K``, ``M`` or ``B``
(Investing.com's ``1.23M``), and the validator takes a cell ``-`` for an empty one (:data:`EMPTY_CELLS`).
Timestamps with a UTC offset, or ending in a time zone's name (the IBKR API's ``20240102 09:30:00 US/Eastern``:
:func:`_named_zones`), are converted to UTC; naive ones are taken as UTC (a column mixing the two is a DataError:
:func:`one_zone_rule`), a plain date (``2024-01-02``) as its UTC midnight (the time features read
a daily bar so stamped as that date in ``data.timezone``: :func:`hftraining.data.features.date_stamps`).
Dates that are not ISO 8601 are read month-first (``01/02/2020``: 2 January) or day-first
(``02/01/2020``, ``02.01.2020``), and a two-digit year also year-first (``20/01/02``: 2 January
2020), whichever reads more of the column, then whichever is in time order (oldest or newest first)
and evenly spaced (:func:`_day_or_month_first`).

This module only reads (it imports nothing of the package but the errors); the rules that drop or
repair rows live in :mod:`hftraining.data.validate`, which builds on it.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import logging
import os
import re
import unicodedata
import warnings
import zlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zstandard
from pandas.tseries.api import guess_datetime_format

from hftraining.core.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = (*PRICE_COLUMNS, "volume")
NUMERIC = (*OHLCV, "adj_close")
# compression suffix → (pandas' name, what error messages call it)
COMPRESSION = {".gz": ("gzip", "gzip"), ".bz2": ("bz2", "bzip2"), ".zst": ("zstd", "zstd")}
SUFFIXES = (".csv", *(f".csv{c}" for c in COMPRESSION), ".parquet", ".pq")
DELIMITERS = (",", ";", "\t", "|")
DECOMPRESS_ERRORS = (EOFError, zlib.error, zstandard.ZstdError)  # beside OSError (gzip.BadGzipFile, bz2)
SNIFF_BYTES = 65536  # the head of a (decompressed) CSV file read to sniff its delimiter and decimal mark
SNIFF_ROWS = 200
# a number with a decimal comma, "." grouping thousands: 101,5  1.234,5  -3,25e-2  1.234.567
COMMA_NUMBER = r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?(?:[eE][+-]?\d+)?"
# a number with "," grouping thousands (and a decimal point): 1,234,567  1,234.5
GROUPED_NUMBER = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_COMMA_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+|\d{1,3}(?:\.\d{3}){2,}")
# ... or a decimal point: 101.5  1,234.5  and 1,234,567 (two "," groups: no decimal-comma number)
_POINT_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d+(?:[eE][+-]?\d+)?|[+-]?\d{1,3}(?:,\d{3}){2,}")
_EITHER = re.compile(r"[+-]?\d{1,3}\.\d{3}")  # 1.234: one thousand two hundred and thirty-four, or not: no vote
_COMMA_GROUPS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")  # 1,234 in a ","-delimited file: thousands, or not: no vote
DOLLAR = re.compile(r"^([+-]?)\$\s*")  # a dollar sign before a number: $182.52, -$0.35
SCALED = r"^(.*?\d)\s*([KMBkmb])$"  # a volume in thousands, millions or billions: 456.7K, 1.23M, 2B
SCALE = {"K": 1e3, "M": 1e6, "B": 1e9}
EMPTY_CELLS = ("", "-")  # a price or volume cell that holds no value: "-" is Investing.com's volume of an index

# lower-cased alias → canonical name. An exact canonical name beats an alias ("close" beats "adj close").
ALIASES = {
    "date": "timestamp", "time": "timestamp", "datetime": "timestamp", "timestamp": "timestamp",
    "ts": "timestamp", "date_time": "timestamp", "open_time": "timestamp", "open time": "timestamp",
    "t": "timestamp", "window_start": "timestamp",  # Alpaca's and Polygon's bars (t, o, h, l, c, v; vw, n not
    # read) and Polygon's flat files (ticker, volume, open, close, high, low, window_start in ns, transactions)
    "open": "open", "o": "open", "high": "high", "h": "high", "low": "low", "l": "low",
    "close": "close", "c": "close", "close/last": "close",  # Nasdaq.com's historical quotes
    "adj close": "adj_close", "adj_close": "adj_close", "adjclose": "adj_close", "adjusted close": "adj_close",
    "adjusted_close": "adj_close",  # Alpha Vantage's daily adjusted series
    "volume": "volume", "vol": "volume", "vol.": "volume", "v": "volume", "symbol": "symbol", "ticker": "symbol",
    # Investing.com's German and Spanish downloads (Datum/Fecha, Zuletzt/Último, Eröffn./Apertura, Hoch/Máximo,
    # Tief/Mínimo, Vol.; their "+/- %" and "% var." are not read)
    "datum": "timestamp", "zuletzt": "close", "eröffn.": "open", "hoch": "high", "tief": "low",
    "fecha": "timestamp", "último": "close", "apertura": "open", "máximo": "high", "mínimo": "low",
    # Dukascopy's downloads: "Gmt time" (01.03.2024 00:00:00.000, GMT) or "Local time" (... GMT+0100, its offset
    # written; a "Local time" column without one is a DataError: :func:`canonical_columns`)
    "gmt time": "timestamp", "local time": "timestamp",
    # crypto exports: CryptoDataDownload's "unix" (seconds or milliseconds, beside its "date"; "Unix Timestamp" in
    # its older files), the Binance API's openTime (milliseconds), CoinAPI's OHLCV (time_period_start; price_open
    # ... volume_traded, the base asset's); each unit of epoch numbers is told by their size (:func:`parse_timestamps`)
    "unix": "timestamp", "unix timestamp": "timestamp", "opentime": "timestamp", "time_period_start": "timestamp",
    "price_open": "open", "price_high": "high", "price_low": "low", "price_close": "close", "volume_traded": "volume",
}
# names of the timestamp that another column may stamp too (CryptoDataDownload's "unix" beside its "date"): read
# only where the two hold the same instants (:func:`_same_instants`)
SECOND_STAMPS = frozenset({"unix", "unix timestamp", "opentime", "time_period_start"})
# price names of a download in a language that writes a decimal comma: its quoted "151,234" is 151.234 (USD/JPY
# at three decimals), not thousands as in an English download (:func:`_decimal_mark`)
DECIMAL_COMMA_NAMES = frozenset({"zuletzt", "eröffn.", "hoch", "tief", "último", "apertura", "máximo", "mínimo"})
_GROUPED_DOTS = re.compile(r"\d\.\d{3}\.\d{3}")  # 1.234.567: the only decimal-comma number a cell without a comma holds
CANONICAL = ("timestamp", *OHLCV, "adj_close", "symbol")


def name_key(name: Any) -> str:
    """A column name as it is looked up in :data:`ALIASES`: stripped, lower-cased, in Unicode's composed
    form (``Último`` typed on a Mac is ``U`` and an accent) and without the angle brackets of
    MetaTrader's exports (``<DATE>``, ``<CLOSE>``) or the square ones of SQL Server's and some Excel
    exports (``[Date]``, ``[Close]``), nor the footnote marks of Yahoo Finance's table of prices (``Close*``,
    ``Adj Close**``: copied from the page into a sheet, it was "missing column 'close'")."""
    text = unicodedata.normalize("NFC", str(name).strip())
    if text[:1] + text[-1:] in ("<>", "[]"):
        text = text[1:-1].strip()
    return text.rstrip("*").rstrip().lower()


def canonical_name(name: Any) -> str | None:
    """The canonical name of a column (``timestamp``, ``open``, ... ``symbol``), or None."""
    return ALIASES.get(name_key(name))


def price_close(names: list[Any]) -> Any | None:
    """The column named ``Price`` when it is the close, else None: Investing.com's exports name their
    close so, beside ``Open``, ``High`` and ``Low`` and without a ``Close`` or ``Adj Close`` column. A
    ``Price`` column without the bar's other prices (a trade's price) is no close: such a file is still
    "missing column 'close'"."""
    if {canonical_name(n) for n in names} & {"close", "adj_close"}:
        return None
    return _price_beside_bar(names)


def _price_beside_bar(names: list[Any]) -> Any | None:
    """The column named ``Price`` beside ``Open``, ``High`` and ``Low`` (a close, were there no other), or None."""
    if not {"open", "high", "low"} <= {canonical_name(n) for n in names}:
        return None
    return next((n for n in names if name_key(n) == "price"), None)


def one_column_each(names: list[Any], path: Path | str) -> None:
    """A DataError naming both columns when two columns of different names would each be read as one
    price or the volume: ``Price`` beside ``Close`` (or beside a lone ``Adj Close``, then the close)
    and the bar's other prices, ``Close`` and ``Close/Last``, ``Volume`` and ``Vol.``. The exact name
    was taken and the other ignored without a word, though nothing tells which holds the values (a
    one-letter alias, ``c`` or ``v``, still yields to a spelled-out name)."""
    by_canon: dict[str, list[Any]] = {}
    for n in names:
        if (canon := canonical_name(n)) in NUMERIC and len(name_key(n)) > 1:
            by_canon.setdefault(canon, []).append(n)
    if "close" not in by_canon and "adj_close" in by_canon:  # a lone Adj Close is the close
        by_canon["close"] = by_canon.pop("adj_close")
    if (price := _price_beside_bar(names)) is not None:
        by_canon.setdefault("close", []).append(price)
    for canon, cols in by_canon.items():
        if len(cols) > 1:
            what = "the volume" if canon == "volume" else f"the {canon.replace('adj_close', 'adjusted close')}"
            first, second = (str(c).strip() for c in cols[:2])
            raise DataError(f"{path}: columns {first!r} and {second!r} would both be read as {what}: which one "
                            "holds it cannot be told: keep one of them, or rename the other")


def empty_twins(df: pd.DataFrame) -> list[Any]:
    """The price and volume columns of ``df`` that hold no value (every cell empty, NaN or ``-``) beside
    another column read as the same price or the volume (``Volume`` beside an empty ``Vol``): there is
    nothing to tell apart, and the one with values is read (of twins all empty, the first is kept).
    Cells are looked at only where two such columns meet."""
    by_canon: dict[str, list[Any]] = {}
    for n in df.columns:
        if (canon := canonical_name(n)) in NUMERIC:
            by_canon.setdefault(canon, []).append(n)
    out: list[Any] = []
    for cols in by_canon.values():
        if len(cols) > 1:
            text = {c: df[c].astype("string").str.strip() for c in cols}
            empty = [c for c in cols if bool((text[c].isna() | text[c].isin(EMPTY_CELLS)).all())]
            out += empty[1:] if len(empty) == len(cols) else empty
    return out


def sample_data_dir() -> Path:
    """Folder of the daily OHLCV sample files bundled with the package."""
    return Path(str(resources.files("hftraining") / "sample_data"))


def resolve_paths(spec: str | Path | list | None, links: bool = False) -> list[Path]:
    """A file, a folder, a glob (or a list of them) → the data files, sorted. ``None``: sample data.
    A folder's hidden files (:func:`is_hidden`: macOS's ``._AAPL.csv``) are not read; training and
    ``data check`` name them (:func:`~hftraining.data.sources.unread_files`). A folder's data file that is a
    link to nothing (a drive not mounted) is a DataError naming it and its target, which would otherwise leave
    its symbol out unsaid; ``links``: listed instead, for a reader of each file alone to refuse
    (``data check``, which checks the folder's other files)."""
    if spec is None:
        spec = sample_data_dir()
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    out: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            dangling = sorted(f for f in p.iterdir() if is_data_file(f) and not is_hidden(f) and _dangling(f))
            if dangling and not links:
                _dangling_error(dangling[0])
            found = sorted(f for f in p.iterdir() if is_data_file(f) and f.is_file() and not is_hidden(f))
            if not found and not dangling:
                hidden = sorted(f.name for f in p.iterdir() if is_data_file(f) and f.is_file())
                also = f" (hidden files such as {hidden[0]} are not read)" if hidden else ""
                raise DataError(f"{p}: folder holds no .csv, .csv.gz/.bz2/.zst or .parquet files{also}")
            out += sorted(found + dangling)
        elif p.is_file():
            out.append(p)
        elif any(ch in str(s) for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(s)) if is_data_file(Path(f)))
            if not found:
                raise DataError(f"{s}: glob matches no .csv, .csv.gz/.bz2/.zst or .parquet files")
            if not links and (dangling := [f for f in found if _dangling(f)]):
                _dangling_error(dangling[0])
            out += found
        elif _dangling(p):
            _dangling_error(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


def _dangling(path: Path) -> bool:
    """Whether ``path`` is a link to nothing."""
    return path.is_symlink() and not path.exists()


def _dangling_error(path: Path) -> None:
    """A DataError for a link to nothing: its target, or the chain of links that leads back into itself
    (``a.csv -> b.csv -> a.csv``, or a link to itself), which is no missing file to restore."""
    chain = link_chain(path)
    if chain[-1].is_symlink():  # back at a link of the chain, or too many links to follow (the system's ELOOP)
        raise DataError(f"{path}: a link loop ({' -> '.join(map(str, chain))}): point the link at the file itself, or "
                        "remove it")
    raise DataError(f"{path}: a link to {path.readlink()}, which is not there: restore what it links to, or remove "
                    "the link")


LINK_HOPS = 40  # the links one path may lead through before the system gives up (Linux's MAXSYMLINKS)


def link_chain(path: Path) -> list[Path]:
    """The links ``path`` leads through, itself first, each target as it would be opened: relative to the
    real folder of its link, its folders followed as the system follows them (a target through a linked
    folder and then ``..`` leads out of the folder linked to, not back out of the link), its last name
    not (it may be the next link); up to the first that is no link, that the chain has passed before
    or that is :data:`LINK_HOPS` links away."""
    chain, seen = [path], [_located(path)]
    while chain[-1].is_symlink() and seen[-1] not in seen[:-1] and len(chain) <= LINK_HOPS:
        chain.append(_located(Path(os.path.realpath(chain[-1].parent)) / chain[-1].readlink()))
        seen.append(chain[-1])
    return chain


def _located(path: Path) -> Path:
    """``path`` with its folders followed (links, ``..``) and its last name kept as it is, so that a link is
    named where it is, whichever way ``path`` reaches it."""
    if path.name in ("", ".."):  # a folder that ``..`` names: no link of its own
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def is_data_file(path: Path) -> bool:
    """Whether a folder's or glob's file is read: its name ends in one of :data:`SUFFIXES`."""
    return path.name.lower().endswith(SUFFIXES)


def is_hidden(path: Path) -> bool:
    """Whether a folder's file is hidden (its name starts with ``.``) and so not read: macOS writes
    ``._AAPL.csv`` beside ``AAPL.csv`` on a drive or in an archive (binary AppleDouble metadata, not
    prices), editors and sync tools their own dot files. A file named on its own, or by a glob that
    names dot files, is read."""
    return path.name.startswith(".")


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def compression(path: Path) -> str | None:
    """pandas' name of a CSV file's compression from its last suffix (``gzip``, ``bz2``, ``zstd``), or None."""
    got = COMPRESSION.get(path.suffix.lower())
    return got[0] if got else None


def symbol_of(path: Path) -> str:
    """The symbol of a one-symbol file: its name without the compression suffix and the extension
    (``AAPL.csv.gz`` → ``AAPL``, ``AAPL.parquet`` → ``AAPL``)."""
    name = path.name[: -len(path.suffix)] if compression(path) else path.name
    return Path(name).stem


def first_row_number(path: Path) -> int:
    """The number users see for the first data row: its line in a CSV (the header is line 1), or 1 in Parquet."""
    return 1 if is_parquet(path) else 2


def _compressed_error(path: Path, e: BaseException) -> DataError:
    kind = COMPRESSION[path.suffix.lower()][1] if compression(path) else "the"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return DataError(f"{path}: cannot read {kind}-compressed file ({msg})")


def _head_lines(path: Path) -> list[str]:
    """The first lines of a CSV file (decompressed), at most :data:`SNIFF_BYTES` of them; a line cut
    by that limit is left out."""
    comp = compression(path)
    try:
        opener = {"gzip": gzip.open, "bz2": bz2.open, "zstd": zstandard.open}.get(comp or "", open)
        with opener(path, "rb") as fh:
            head = b""
            while len(head) < SNIFF_BYTES and (chunk := fh.read(SNIFF_BYTES - len(head))):
                head += chunk
            more = bool(fh.read(1))
    except (OSError, *DECOMPRESS_ERRORS) as e:
        if comp is None:
            raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
        raise _compressed_error(path, e) from None
    if more and b"\n" in head:
        head = head[: head.rindex(b"\n")]  # the cut line is not looked at
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {_not_text(head, e)}") from None
    if not text.strip():
        return []
    # the line breaks pandas reads (not str.splitlines's form feed, \x0b, \x1c-\x1e, \x85, U+2028/9: counted as
    # lines above a header, pandas was told to skip one more line than there was, and lost the first data row)
    lines = PANDAS_LINE_BREAK.split(text)
    return lines[:-1] if lines[-1] == "" else lines


PANDAS_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# the first bytes of files that are not CSV text → what they are and what to do
MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data: name it .csv.gz"),
    (b"BZh", "bzip2-compressed data: name it .csv.bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data: name it .csv.zst"),
    (b"PAR1", "a Parquet file: name it .parquet"),
    (b"PK\x03\x04", "a ZIP archive or an Excel workbook: unzip it, or save the sheet as CSV (UTF-8)"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)


def _not_text(head: bytes, e: UnicodeDecodeError) -> str:
    """Why the head of a CSV file is not UTF-8 text, and what to do, in a few words."""
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    line = head[: e.start].count(b"\n") + 1
    return f"not UTF-8 text (byte 0x{head[e.start]:02x} in line {line}): save it as UTF-8"


def _sniff_header(path: Path) -> tuple[str, list[str]]:
    """(delimiter, column names) from the first line of a CSV file."""
    sep, names, *_ = _sniff(path)
    return sep, names


def _sniff(path: Path) -> tuple[str, list[str], str, int, bool, int]:
    """(delimiter, column names, decimal mark, header lines, whether the data lines end in a delimiter
    the header does not: :func:`_trailing_field`, the header's first line) from the first lines of a CSV file.
    Header lines: 1, or 3 for a yfinance download (:func:`_yfinance_names`), and the blank lines above
    them, which are not read (pandas took an empty first line for the header: "line 1 ('') has 0
    field(s), the data rows 6: remove any title ..."); the header's line is the first below them, the one
    errors name (they named line 1, a blank line, when blank lines sat above the header)."""
    lines = _head_lines(path)
    above = next((i for i, text in enumerate(lines) if text.strip()), 0)
    lines = lines[above:]
    line = lines[0] if lines else ""
    sep = ","
    if "," not in line and line:
        counts = {d: line.count(d) for d in DELIMITERS[1:]}
        best = max(counts, key=counts.get)
        sep = best if counts[best] else ","
    names = next(csv.reader([line], delimiter=sep), [])
    yf = _yfinance_names(path, lines[:3], sep)
    if yf is not None:
        return sep, yf, ".", above + 3, _trailing_field(lines[3 : SNIFF_ROWS + 3], sep, len(yf)), above + 1
    rows = lines[1 : SNIFF_ROWS + 1]
    return sep, names, _decimal_mark(rows, sep, names), above + 1, _trailing_field(rows, sep, len(names)), above + 1


def _trailing_field(lines: list[str], sep: str, n: int) -> bool:
    """Whether the data lines of a CSV file end in one field more than the ``n`` its header names, empty
    in the first of them, and none in more: a delimiter after each line's last value that the header line
    lacks (as some banks' and brokers' exports write ``;`` after every value). pandas took such a file's
    first field for the rows' index and read every column one to the left: it was "line 1 has 6
    field(s), the data rows 7: remove any title ... line above the column names". A line that holds a
    value in that field is named by :func:`_drop_trailing`."""
    try:
        rows = [r for r in csv.reader(lines, delimiter=sep) if any(c.strip() for c in r)]
    except csv.Error:  # a malformed line: the reader reports it
        return False
    return (bool(rows) and len(rows[0]) == n + 1 and not rows[0][-1].strip()
            and all(len(r) <= n + 1 for r in rows))


def _yfinance_names(path: Path, lines: list[str], sep: str) -> list[str] | None:
    """The column names of a yfinance download as ``df.to_csv()`` writes it, else None: a line of
    price names (``Price,Close,High,...``) and one of tickers (``Ticker,AAPL,AAPL,...``), in either
    order, then one naming the index (``Date,,,``). The names: the index's, then the prices'. A
    download of several tickers is a DataError (one file per ticker is read)."""
    if len(lines) < 3 or sep != ",":
        return None
    rows = list(csv.reader(lines, delimiter=sep))
    first = [r[0].strip().lower() if r else "" for r in rows]
    if {first[0], first[1]} != {"price", "ticker"} or canonical_name(first[2]) != "timestamp":
        return None
    if any(c.strip() for c in rows[2][1:]):  # the index's line names the index only
        return None
    prices, tickers = (rows[0], rows[1]) if first[0] == "price" else (rows[1], rows[0])
    names = sorted({t.strip() for t in tickers[1:] if t.strip()})
    if len(names) > 1:
        raise DataError(f"{path}: a yfinance download of {len(names)} tickers ({', '.join(names[:3])}"
                        f"{', ...' if len(names) > 3 else ''}): write one file per ticker, e.g. "
                        f"df.xs({names[0]!r}, axis=1, level='Ticker').to_csv('{names[0]}.csv')")
    return [rows[2][0], *prices[1:]]


def _decimal_mark(lines: list[str], sep: str, names: list[str]) -> str:
    """``","`` when the numeric columns of a file hold more decimal-comma cells (``101,5``,
    ``1.234.567``) than decimal-point ones (``101.5``); else ``"."``. A cell such as ``1.234``
    (either notation) does not count; a leading ``$`` is not looked at (``$182,52``). In a file
    delimited by ``,`` only a quoted cell can hold a comma (Investing.com's German and Spanish
    downloads: ``"17.936,65"``), and one that reads as thousands grouped by commas (``"1,234"``,
    ``"12,345,678"``: English downloads write volumes so) does not count either, unless the prices are
    named in such a language (:data:`DECIMAL_COMMA_NAMES`: ``"151,234"`` is then a decimal comma).
    A ``,``-delimited file without a quote or a ``1.234.567`` holds no decimal-comma cell: ``"."``,
    without reading its cells."""
    if sep == "," and not any('"' in line for line in lines) and not _GROUPED_DOTS.search("\n".join(lines)):
        return "."
    cols = [i for i, n in enumerate(names) if canonical_name(n) in NUMERIC or n == price_close(names)]
    comma_names = sep == "," and any(name_key(n) in DECIMAL_COMMA_NAMES for n in names)
    comma = point = 0
    try:
        for row in csv.reader(lines, delimiter=sep):
            for i in cols:
                cell = DOLLAR.sub(r"\1", row[i].strip()) if i < len(row) else ""  # $182,52 votes as 182,52
                if _EITHER.fullmatch(cell):
                    continue
                if sep == "," and _COMMA_GROUPS.fullmatch(cell):
                    comma += int(comma_names and cell.count(",") == 1)  # "151,234" beside Zuletzt/Hoch/Tief: 151.234
                    continue
                comma += bool(_COMMA_DECIMAL.fullmatch(cell))
                point += bool(_POINT_DECIMAL.fullmatch(cell))
    except csv.Error:  # a malformed line: the reader reports it
        pass
    return "," if comma > point else "."


def parse_numbers(values: pd.Series, decimal: str = ".", scaled: bool = False) -> np.ndarray:
    """Cells of a text column → float64, NaN where a cell is empty or not a number in the file's
    notation (``decimal``: see the module docstring; the validator tells the two apart). A leading
    ``$`` is the dollar prices of Nasdaq.com's exports (``$182.52``, ``-$0.35``). ``scaled``: a
    volume column, whose cells may end in ``K``, ``M`` or ``B`` (thousands, millions, billions:
    Investing.com's ``1.23M``)."""
    text = values.astype("string").str.strip()
    if text.str.contains("$", regex=False).fillna(False).any():
        text = text.str.replace(DOLLAR, r"\1", regex=True)
    num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if scaled:
        suffix = text.str.extract(SCALED, expand=True)
        has = suffix[1].notna().to_numpy(bool) & np.isnan(num)
        if has.any():
            size = suffix[1][has].str.upper().map(SCALE).to_numpy(np.float64)
            num[has] = parse_numbers(suffix[0][has], decimal) * size
            text = text.mask(pd.Series(has, index=text.index))  # read: not again below
    if decimal == ",":
        # "1.5" is not a number in a decimal-comma file ("1.500" is one thousand five hundred)
        num[text.str.contains(r"[.,]", regex=True).fillna(False).to_numpy(bool)] = np.nan
        fits = text.str.fullmatch(COMMA_NUMBER).fillna(False).to_numpy(bool)
        conv = text[fits].str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        fits = text.str.fullmatch(GROUPED_NUMBER).fillna(False).to_numpy(bool) & np.isnan(num)
        conv = text[fits].str.replace(",", "", regex=False)
    if fits.any():
        num[fits] = pd.to_numeric(conv, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return num


# numbers all below this are no epoch timestamps (seconds: within 12 days of 1970-01-01) but Excel's day
# numbers (43831: 2020-01-01) or a row counter, which read as seconds would be a file of 1970 bars a second apart
EPOCH_FLOOR = 1e6
_TIME_OF_DAY = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"


def _as_text(values: pd.Series) -> pd.Series:
    """Cells as stripped text (a datetime column as its ISO date, a time-of-day as HH:MM:SS)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.strftime("%Y-%m-%d").astype("string")
    return values.astype("string").str.strip()


def _date_and_time(df: pd.DataFrame, cols: list[Any]) -> tuple[Any, Any] | None:
    """(date column, time column) when the timestamp is split in two: a ``Date`` column and a
    ``Time`` column whose cells are mostly times of day (``09:30``, ``09:30:00.5``), as intraday
    exports (MetaTrader, Kibot, TradeStation) write it, or all HHMMSS numbers (stooq: :func:`_hhmmss`);
    else None."""
    names = {name_key(c): c for c in cols}
    if len(cols) != 2 or set(names) != {"date", "time"}:
        return None
    if _hhmmss(df[names["time"]]) is not None:
        return names["date"], names["time"]
    time = _as_text(df[names["time"]]).dropna()
    time = time[time != ""]
    if not len(time) or 2 * int(time.str.fullmatch(_TIME_OF_DAY).sum()) <= len(time):
        return None
    return names["date"], names["time"]


def _hhmmss(values: pd.Series) -> pd.Series | None:
    """A time column of HHMMSS numbers (stooq's ``<TIME>``: ``153000``, and ``093000``, which a reader
    takes for the number 93000) as ``HH:MM:SS`` text (empty cells stay empty); None unless every cell
    is such a time and one is past 23:59 (``0930`` could be HHMM, 09:30, as well as 00:09:30). Read as
    the date alone, a file of 5-minute bars had one timestamp a day, and all but its first bar of each
    day were dropped as duplicates."""
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_integer_dtype(values):
        present = values.notna()
        v = values[present]
    else:
        head = values.iloc[:1000].dropna().astype("string").str.strip()  # "09:30:00" says no at once
        if not head[head != ""].str.fullmatch(r"\d{1,6}(?:\.0+)?").all():
            return None
        text = values.astype("string").str.strip()
        present = (text.notna() & (text != "")).fillna(False)
        if not text[present].str.fullmatch(r"\d{1,6}(?:\.0+)?").all():
            return None
        v = pd.to_numeric(text[present])
    if not len(v) or v.isna().any() or (v < 0).any() or (v != np.floor(v)).any():
        return None
    v = v.astype(np.int64)
    if v.max() <= 2359 or v.max() > 235959 or (v % 100 >= 60).any() or (v // 100 % 100 >= 60).any():
        return None
    out = pd.Series(pd.NA, index=values.index, dtype="string")
    two = "{:02d}".format
    out[present] = (v // 10000).map(two) + ":" + (v // 100 % 100).map(two) + ":" + (v % 100).map(two)
    return out


def one_name_each(names: list[Any], path: Path | str) -> None:
    """A DataError when two columns are named alike (``Close`` twice, ``Close`` and ``close`` or ``Close*``) and
    the name is one that is read (a timestamp, a price, the volume, the symbol): nothing tells which
    holds the values. A table of several tickers whose ticker level was dropped is such a table; the
    first column was read before, under one symbol's name (pandas names a CSV file's second
    ``Close`` ``Close.1``, which no alias matches)."""
    seen: dict[str, str] = {}
    for n in names:
        if canonical_name(n) is None and name_key(n) != "price":  # Price: Investing.com's close
            continue
        if (k := name_key(n)) in seen:
            name, first = str(n).strip(), seen[k]
            also = "" if name.lower() == first.lower() else f" and {first!r}"  # Close* beside Close: both named close
            raise DataError(f"{path}: two columns are named {name!r}{also}: which one to read cannot be told (several "
                            "tickers' columns under one name?): keep one column of each name, one file or frame per symbol")
        seen[k] = str(n).strip()


def ticker_frames(df: pd.DataFrame, where: str) -> dict[str, tuple[pd.DataFrame, np.ndarray]] | None:
    """{ticker: (its frame, the positions of its rows in ``df``)} of a frame whose columns have two
    levels, one of prices (``Close``, ``Open``, ``Adj Close``, ``Volume``, ...) and one of tickers, in
    either order, as ``yfinance.download`` gives them (for one ticker too); None for a frame with one
    level of column names. A ticker's rows are those with a value in one of its columns (a download
    of several tickers holds every ticker's dates; another market's holidays are not the ticker's
    bars). A column named in one level only (``('Date', '')``: the download's index, reset into a column
    before it was saved) is every ticker's: it was read as a ticker named ``''``. Any other frame of
    several column levels is a DataError naming ``where``."""
    cols = df.columns
    if not isinstance(cols, pd.MultiIndex):
        return None
    shared = [c for c in cols if cols.nlevels == 2 and sum(bool(str(v).strip()) for v in c) == 1]
    if len(shared) < len(cols):
        cols = cols.drop(shared)
    else:  # no column named in both levels: none is a ticker's
        shared = []
    # the level of prices: yfinance names it Price; else the one of more price names, "close" among them
    # (tickers such as C, V or T are price names too)
    names = [{canonical_name(v) for v in set(cols.get_level_values(i))} - {None} for i in range(cols.nlevels)]
    named = [i for i, n in enumerate(cols.names) if name_key(n or "") == "price"]
    rank = sorted(range(cols.nlevels), key=lambda i: -len(names[i]))
    price = named[0] if len(named) == 1 else rank[0] if len(rank) > 1 and len(names[rank[0]]) > len(names[rank[1]]) else None
    if cols.nlevels != 2 or price is None or "close" not in names[price]:
        raise DataError(f"{where}: the columns have {cols.nlevels} levels ({', '.join(map(str, cols.names))}) and no "
                        "single level of prices (Open, High, Low, Close, Volume) beside one of tickers: give a frame "
                        "with one level of column names")
    level = 1 - price
    out = {}
    body = df[cols] if shared else df
    index = df[shared].set_axis([next(str(v) for v in c if str(v).strip()) for c in shared], axis=1)
    for ticker in dict.fromkeys(cols.get_level_values(level)):
        part = body.xs(ticker, axis=1, level=level)
        has = part.notna().to_numpy().any(axis=1)
        if shared:
            part = pd.concat([index, part], axis=1)
        out[str(ticker).strip()] = (part[has], np.flatnonzero(has))
    return out


def canonical_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rename columns to canonical names (case-insensitive, aliases); other columns are kept as they
    are. A timestamp split into a ``Date`` and a ``Time`` column (a time of day) is joined into one
    (``Date Time``; a time column of HHMMSS numbers, as stooq writes it, too: :func:`_hhmmss`): the
    date alone would give every bar of a day one timestamp. Two columns named alike are a DataError
    (:func:`one_name_each`), as are two read as one price or the volume (:func:`one_column_each`)
    unless one of them holds no value (:func:`empty_twins`: it is dropped), no volume beside volumes
    of a unit (:func:`_named_volumes`) and a ``Local time`` without its offset."""
    one_name_each(list(df.columns), path)
    if twins := empty_twins(df):
        df = df.drop(columns=twins)
    one_column_each(list(df.columns), path)
    by_canon: dict[str, list[Any]] = {}
    for col in df.columns:
        canon = canonical_name(col)
        if canon:
            by_canon.setdefault(canon, []).append(col)
    if (price := price_close(list(df.columns))) is not None:
        by_canon["close"] = [price]
    split = _date_and_time(df, by_canon.get("timestamp", []))
    if split is not None:
        date, time = split
        clock = _hhmmss(df[time])
        clock = _as_text(df[time]) if clock is None else clock
        df = df.drop(columns=[time]).assign(**{str(date): _as_text(df[date]) + " " + clock})
        by_canon["timestamp"] = [date]
    if "adj_close" in by_canon and "close" not in by_canon:  # the only close there is
        by_canon["close"] = by_canon.pop("adj_close")
    stamps = by_canon.get("timestamp", [])
    if len(stamps) > 1 and any(name_key(c) in SECOND_STAMPS for c in stamps):
        by_canon["timestamp"] = _same_instants(df, stamps, path)
    rename = {}
    for canon, cols in by_canon.items():
        exact = [c for c in cols if name_key(c) == canon]
        spelled = [c for c in cols if len(name_key(c)) > 1]  # Date before a one-letter t (a counter, a temperature)
        if canon == "timestamp" and not exact and len(spelled) > 1:
            spelled = _finest(df, spelled)
        rename[(exact or spelled or cols)[0]] = canon
    # an alias that lost to another column must not keep a name that shadows a canonical one
    out = df.drop(columns=[c for cols in by_canon.values() for c in cols if c not in rename and c in CANONICAL])
    _named_volumes(out, by_canon, path)
    stamp = next((c for c, canon in rename.items() if canon == "timestamp"), None)
    if stamp is not None and name_key(stamp) == "local time" and zoneless(out[stamp]):
        cell = out[stamp].dropna().astype("string").iloc[0]
        raise DataError(f"{path}: column {str(stamp).strip()!r} holds local times without a UTC offset (e.g. {cell!r}): "
                        "read as UTC they would be hours off: download GMT times ('Gmt time'), or write the offset "
                        "(01.03.2024 01:00:00.000 GMT+0100)")
    return out.rename(columns=rename)


def _same_instants(df: pd.DataFrame, cols: list[Any], path: Path | str) -> list[Any]:
    """``cols`` (columns each named as the timestamp, one of them a :data:`SECOND_STAMPS` name: ``unix``
    beside ``date``) less those that read no instant in the rows of :func:`_spread_rows` (CryptoDataDownload's
    older ``2020-04-06 11-PM`` beside its ``unix``), all of them if none reads; a DataError naming two that
    read (the first two, or two that stamp one of those rows at different instants) unless every row both
    read is one instant in both: nothing tells which one stamps the bars (``date`` was read, and ``unix``
    ignored, however far apart they were). Where they agree (CryptoDataDownload's ``unix`` and ``date``,
    both UTC) the file is read. The rows are spread over the whole file, not only its first and last
    thousand: a ``date`` of London's clock beside ``unix`` agrees in winter, and a year of hourly bars from
    January to January was read from ``date`` with its summer's bars an hour late, without a word."""
    sample = df.iloc[_spread_rows(len(df))]
    read = {}
    for c in cols:
        try:
            read[c] = parse_timestamps(sample[c], path)
        except DataError:  # numbers of no date (a row counter): no instant
            read[c] = pd.Series(pd.NaT, index=sample.index, dtype="datetime64[ns, UTC]")
    readable = [c for c in cols if read[c].notna().any()]
    if len(readable) < 2:
        return readable or cols
    first = readable[0]
    for other in readable[1:]:
        both = read[first].notna() & read[other].notna()
        apart = both & (read[first] != read[other])
        if apart.any() or not both.any():
            i = apart.idxmax() if apart.any() else read[other].notna().idxmax()
            where = f"row {i + 1}" if is_parquet(Path(path)) else f"line {i + 2}"
            shown = (f"{str(first).strip()} {_clip(str(sample.at[i, first]))} beside {str(other).strip()} "
                     f"{_clip(str(sample.at[i, other]))}, {where}")
            raise DataError(f"{path}: columns {str(first).strip()!r} and {str(other).strip()!r} could each be the "
                            f"timestamp, and {'they stamp rows at different instants' if apart.any() else 'no row reads in both'} "
                            f"({shown}): keep the one that stamps the bars, or rename the other")
    return readable


SPREAD_ROWS = 4000  # the rows two time columns are compared on (:func:`_spread_rows`)


def _spread_rows(n: int) -> np.ndarray:
    """Positions of at most :data:`SPREAD_ROWS` of ``n`` rows: the first and last thousand and the rest
    evenly spaced between them (every row of a smaller file); a clock that moves part of the year (summer
    time) shows in them, while the whole column of a long file is not parsed twice."""
    if n <= SPREAD_ROWS:
        return np.arange(n)
    edge = SPREAD_ROWS // 4
    middle = np.linspace(edge, n - edge - 1, SPREAD_ROWS - 2 * edge).astype(np.int64)
    return np.unique(np.concatenate([np.arange(edge), middle, np.arange(n - edge, n)]))


def _finest(df: pd.DataFrame, cols: list[Any]) -> list[Any]:
    """``cols`` (columns each named as the timestamp: ``Date`` beside ``Datetime``, or beside ``time`` of
    epoch seconds) with the one of most distinct cells in the first rows first (of equals, the earlier): a
    day's date beside each bar's time stamps every bar of that day alike. ``Date`` was read, and all but
    each day's first intraday bar were dropped as ``duplicate_timestamp``."""
    head = df[cols].iloc[:1000]
    n = [int(head[c].replace("", np.nan).nunique()) for c in cols]
    return sorted(cols, key=lambda c: -n[cols.index(c)])


# a column named for volume in some unit, not read as the volume: Volume BTC, Volume USDT (CryptoDataDownload),
# Volume_(BTC), Volume_(Currency) (Kaggle's older Bitcoin history)
_UNIT_VOLUME = re.compile(r"vol(?:ume)?[\s_(.-]+\S")


def _named_volumes(df: pd.DataFrame, by_canon: dict[str, list[Any]], path: Path | str) -> None:
    """A DataError when no column is read as the volume but columns are named for one in a unit
    (CryptoDataDownload's ``Volume BTC`` and ``Volume USDT``, of a pair's base and quote asset):
    it was "missing column 'volume' ... data without volume (FX, an index): add an empty volume column",
    and the bars' volume was lost. Which one to read is the user's to say: the base asset's is the
    volume of Binance's klines."""
    if "volume" in by_canon:
        return
    named = [str(c).strip() for c in df.columns if canonical_name(c) is None and _UNIT_VOLUME.match(name_key(c))]
    if named:
        listed = " and ".join(repr(c) for c in named[:2]) + (f" (and {len(named) - 2} more)" if len(named) > 2 else "")
        raise DataError(f"{path}: no column is named volume, but {listed} {'name volumes' if len(named) > 1 else 'names one'}: "
                        "rename the one to read 'volume' (a pair's base-asset volume, 'Volume BTC' of BTC/USDT, is "
                        "the volume of Binance's klines)")


def read_table(path: Path) -> pd.DataFrame:
    """Read one file as it is, column names canonicalised. Row i of the result is the file's row i;
    in a CSV file its index is its line less 2 (blank lines are kept as empty rows, and a quoted cell
    over several lines moves the rows below it: :func:`_line_breaks_above`), so that row numbers
    match the file's line numbers.
    ``attrs["decimal"]``: the file's decimal mark, for :func:`parse_numbers` of its text cells."""
    try:
        if is_parquet(path):
            df = _one_ticker(_read_parquet(path), path)
        else:
            sep, names, decimal, n_head, trailing, top = _sniff(path)
            one_name_each(names, path)  # pandas would rename a second "Close" to "Close.1", read as no column
            if (instead := _not_a_table(path, names)) is not None:
                raise DataError(f"{path}: {instead}")
            if _numbers_only(names) or _bar_only(names):
                what = "numbers" if _numbers_only(names) else "a date and numbers"
                raise DataError(f"{path}: line {top} holds {what}, not column names ({_clip(sep.join(names))}): add a "
                                f"header line naming the columns, e.g. {_header_for(names, _first_rows(path, sep))}")
            # fast path: an ISO 8601 timestamp column is parsed by the reader (a column that does not
            # parse stays text and goes through parse_timestamps, cell by cell)
            ts_cols = [n for n in names if canonical_name(n) == "timestamp"]
            dates = {"parse_dates": ts_cols[:1], "date_format": "ISO8601"} if len(ts_cols) == 1 and names.count(ts_cols[0]) == 1 else {}
            # a decimal-comma file: its numbers are read as text and parsed here ("1.234" is 1234, not 1.234)
            numeric = [n for n in names if canonical_name(n) in NUMERIC or n == price_close(names)]
            text = {n: str for n in numeric} if decimal == "," else {}
            # symbols are names, never numbers: "000001" keeps its zeros, and 7203 stays "7203" beside an empty cell
            text.update({n: str for n in names if canonical_name(n) == "symbol"})
            # a yfinance download: its three header lines are replaced by one (the names _sniff found)
            # (so are blank lines above the header): names given to pandas as it names a header's (Note, Note.1)
            head = {"header": None, "names": _header_names(names), "skiprows": n_head} if n_head > 1 else {}
            if trailing:  # a delimiter at the end of the data lines: the empty field it opens is read, then dropped
                head = {"header": None, "names": [*_header_names(names), TRAILING], "skiprows": n_head}
                text[TRAILING] = str
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", skip_blank_lines=False, low_memory=False,
                             compression=compression(path), dtype=text or None, **dates, **head)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except UnicodeDecodeError:  # past the head that _sniff read (which names the byte and its line)
        raise DataError(f"{path}: not UTF-8 text after its first {SNIFF_BYTES // 1024} KiB: save it as UTF-8") from None
    except DECOMPRESS_ERRORS as e:
        raise _compressed_error(path, e) from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        if compression(path) and not isinstance(e, (ValueError, pd.errors.ParserError)):
            raise _compressed_error(path, e) from None
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot read ({msg})") from None
    if not is_parquet(path) and not isinstance(df.index, pd.RangeIndex):
        # pandas takes the first field(s) of each row as an index when every data row has more fields than the header
        raise DataError(f"{path}: line {top} ({_clip(sep.join(names))}) has {len(names)} field(s), the data rows "
                        f"{len(names) + df.index.nlevels}: remove any title, comment or 'sep=' line above the column "
                        "names, or name every column")
    if not is_parquet(path):
        df.index = pd.RangeIndex(n_head - 1, n_head - 1 + len(df))  # row i: line i + 2 of the file
        if (below := _line_breaks_above(df)) is not None:
            df.index = df.index + below
        if TRAILING in df.columns:
            df = _drop_trailing(df, path, len(names), top)
        _other_headers(df, path, top)
        df = _unnamed_index(df, names)
        df = _blank_lines(df)
    df = canonical_columns(df, path)
    df.attrs["decimal"] = "." if is_parquet(path) else decimal  # the validator parses text cells with it
    return df


TRAILING = "\0trailing"  # the name read_table gives the empty field after a data line's trailing delimiter


def _header_names(names: list[str]) -> list[str]:
    """A header line's names as pandas names the columns it reads from one: an empty name is ``Unnamed: i``
    (``i`` its field), and a name met before gets ``.1``, ``.2``, ... (``Note``, ``Note.1``), skipping one the
    header holds (``x, x, x.1`` → ``x, x.2, x.1``), the named columns before the unnamed ones. Handed to pandas
    as ``names`` (a header below blank lines, or data lines ending in a delimiter), two columns of one name that
    is not read (two ``Note`` columns) made the file "cannot read (Duplicate names are not allowed.)"."""
    out = [n if n != "" else f"Unnamed: {i}" for i, n in enumerate(names)]
    unnamed = [i for i, n in enumerate(names) if n == ""]
    counts: dict[str, int] = {}
    for i in [i for i in range(len(out)) if names[i] != ""] + unnamed:
        old = col = out[i]
        count = counts.get(col, 0)
        while count > 0:
            counts[old] = count + 1
            col = f"{old}.{count}"
            count = count + 1 if col in out else counts.get(col, 0)
        out[i] = col
        counts[col] = count + 1
    return out


def _drop_trailing(df: pd.DataFrame, path: Path, n: int, top: int = 1) -> pd.DataFrame:
    """``df`` without the field after the data lines' trailing delimiter (:func:`_trailing_field`); a
    DataError naming the first line that holds a value there (a column the header, line ``top``, does not name)."""
    extra = df[TRAILING].astype("string").str.strip()
    held = (extra.notna() & (extra != "")).fillna(False).to_numpy(bool)
    if held.any():
        i = int(np.flatnonzero(held)[0])
        raise DataError(f"{path}: line {df.index[i] + 2} has a value ({_clip(str(extra.iloc[i]))}) in field "
                        f"{n + 1}, past the {n} columns line {top} names (the lines above end in an empty field "
                        f"there): name every column in line {top}")
    return df.drop(columns=TRAILING)


def _other_headers(df: pd.DataFrame, path: Path, top: int = 1) -> None:
    """A DataError naming the first line below the header (line ``top``: 1, or the first below blank lines)
    that is a header line naming the columns read in another order (``Date,Close,High,Low,Open,Volume``
    below ``Date,Open,High,Low,Close,Volume``): files of two layouts joined into one (``cat a.csv b.csv``).
    Its line was dropped as a ``bad_timestamp``, and every line below it was read in the header's order,
    opens as closes, without a word. A header line in the header's order (each cell that names a column
    read names the header's column there, in any case or alias)
    is dropped and reported as before. Looked for among the cells of the first timestamp column that hold
    no digit, in a file whose price and volume columns were read as text."""
    stamp = next((c for c in df.columns if canonical_name(c) == "timestamp"), None)
    if stamp is None or not (df[stamp].dtype == object or isinstance(df[stamp].dtype, pd.StringDtype)):
        return
    if any(pd.api.types.is_numeric_dtype(df[c]) for c in df.columns if canonical_name(c) in OHLCV):
        return  # a column of numbers holds no name: no line below line 1 names the columns
    text = df[stamp].astype("string")
    maybe = np.flatnonzero((text.notna() & ~text.str.contains(r"\d", regex=True)).fillna(False).to_numpy(bool))

    def layout(cells) -> list[str | None]:  # the name each column is read as (Investing.com's Price too)
        price = "close" if price_close(cells) is not None else "price"  # Price beside Open, High, Low: the close
        return [canonical_name(c) or (price if name_key(c) == "price" else None) for c in cells]

    want = layout(df.columns)
    for i in maybe:
        if canonical_name(text.iloc[i]) != "timestamp":
            continue
        cells = ["" if pd.isna(c) else str(c) for c in df.iloc[i]]
        if any(got is not None and got != w for got, w in zip(layout(cells), want)):  # a cell naming another column
            raise DataError(f"{path}: line {df.index[i] + 2} is a header line naming the columns in another order "
                            f"({_clip(','.join(c.strip() for c in cells).rstrip(','))}) than line {top} "
                            f"({_clip(','.join(map(str, df.columns)))}): the lines below it would be read in line "
                            f"{top}'s order (files of two layouts joined?): write every part in one column order")


def _blank_lines(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the cells of its rows that hold nothing but white space (a line of spaces or a tab,
    ``"   "``, or of blank fields, ``" , ,"``) made empty: such a line is a blank line, which the
    validator drops and reports as ``blank_line`` as it does an empty one. Its blank first cell was read
    as a timestamp that does not parse, a ``bad_timestamp``. Text columns are looked at only on the rows
    whose other columns are all empty."""
    text = [c for c in df.columns if df[c].dtype == object or isinstance(df[c].dtype, pd.StringDtype)]
    if not text or not len(df):
        return df
    maybe = df.drop(columns=text).isna().to_numpy().all(axis=1)
    for col in text:
        at = np.flatnonzero(maybe)
        if not len(at):
            return df
        cells = df[col].iloc[at].astype("string").str.strip()
        maybe[at[~(cells.isna() | (cells == "")).fillna(True).to_numpy(bool)]] = False
    if maybe.any():
        df = df.copy()
        df.iloc[np.flatnonzero(maybe), [df.columns.get_loc(c) for c in text]] = np.nan
    return df


def _line_breaks_above(df: pd.DataFrame) -> np.ndarray | None:
    """(n,) the line breaks inside quoted cells (``"a note\non two lines"``) of the rows above each
    row, or None when no cell holds one: a row starts that many lines below its position, and the
    report names the line a user sees. Looked for in each text column first (:func:`_holds_line_break`)."""
    breaks = None
    for col in df.columns:
        if df[col].dtype != object and not isinstance(df[col].dtype, pd.StringDtype):
            continue
        if not _holds_line_break(df[col]):
            continue
        n = df[col].astype("string").str.count(r"\r\n|\r|\n").fillna(0).to_numpy(np.int64)
        breaks = n if breaks is None else breaks + n
    return None if breaks is None else np.r_[0, np.cumsum(breaks)[:-1]]


def _holds_line_break(values: pd.Series) -> bool:
    """Whether a cell of a text column holds a ``\\n`` or ``\\r``. A column of pandas' text type is searched
    as it is stored, for each character without a pattern (in a decimal-comma file every price column is
    text: making each one's distinct cells a new column to search took a third of the read of a million
    rows); a column of Python objects among its distinct cells, each as text."""
    if isinstance(values.dtype, pd.StringDtype):
        return any(bool(values.str.contains(ch, regex=False).fillna(False).any()) for ch in "\n\r")
    distinct = pd.Series(pd.unique(values.dropna().to_numpy()), dtype="string")
    return bool(distinct.str.contains("[\r\n]", regex=True).any())


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _numbers_only(names: list[str]) -> bool:
    """Whether a CSV file's first line holds numbers where its column names should be (a file
    without a header line, as Binance's klines and many exports are)."""
    cells = [n.strip() for n in names if n.strip()]
    return bool(cells) and bool(pd.to_numeric(pd.Series(cells), errors="coerce").notna().all())


def _first_rows(path: Path, sep: str) -> list[list[str]]:
    """The first data lines of a CSV file without a header line, split: those after its first line
    (a line of numbers that names columns, ``0,1,2,...``, is no bar), or its first alone; blank lines
    above the first are not looked at (:func:`_sniff`)."""
    lines = _head_lines(path)
    lines = lines[next((i for i, text in enumerate(lines) if text.strip()), 0) :][: SNIFF_ROWS + 1]
    try:
        return list(csv.reader(lines[1:] or lines[:1], delimiter=sep))
    except csv.Error:
        return []


# a cell of a date, a time or a number, and nothing else: 2024.01.02  00:00  1.1034  2024-01-02T09:30:00Z
_DATA_CELL = re.compile(r"[\d.:/ TZ+-]*\d[\d.:/ TZ+-]*")


def _bar_only(names: list[str]) -> bool:
    """Whether a CSV file's first line is a bar where its column names should be, a date or time
    among numbers: MetaTrader 4's history export (``2024.01.02,00:00,1.1034,...``) writes no header
    line. It was "missing column 'timestamp' (columns: 2024.01.02, 00:00, 1.1034, ...)"."""
    cells = [n.strip() for n in names if n.strip()]
    return len(cells) > 1 and all(_DATA_CELL.fullmatch(c) for c in cells)


# the start of a JSON object or array: {"key"  {  []  [{  [[  ["a"  [1,  [1]. A column named {id}, [Date] or [1]
# beside others opens a header line, not a document (``[1],Date,...``: no JSON array goes on after its "]")
JSON_START = re.compile(r'\{\s*(?:"|\}|$)|\[\s*(?:[{\["\]]|$|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\s*(?:,|\]\s*$))')


def _not_a_table(path: Path, names: list[str]) -> str | None:
    """What a ``.csv`` file holds when its first line opens a JSON document or an HTML page instead of
    naming columns, and what to do; else None. A script that saves a download as it comes saves an
    API's JSON reply (Alpha Vantage's ``{"Information": "... rate limit ..."}``, Polygon's
    ``{"results": [...]}``) or a site's error or sign-in page; the error was "missing column
    'timestamp' (columns: {)"."""
    first = ",".join(names).lstrip()
    if JSON_START.match(first):
        body = " ".join(line.strip() for line in _head_lines(path)[:6])
        return (f"a JSON document, not CSV text ({_clip(body, 100)}): an API's reply saved under a .csv name (an error "
                "or rate-limit message?): fetch the data again, or write its bars as CSV with a header line")
    if re.match(r"<(?:!doctype\s+html|html|\?xml)\b", first, re.IGNORECASE):
        title = re.search(r"<title>(.*?)</title>", " ".join(_head_lines(path)[:50]), re.IGNORECASE | re.DOTALL)
        seen = f" titled {_clip(title.group(1).strip())}" if title else ""
        return (f"an HTML page{seen}, not CSV text: a site's error, sign-in or robot-check page saved under a .csv "
                "name: download the CSV again (from a browser, or with the site's API)")
    return None


BINANCE_KLINE = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                 "taker_buy_quote_volume,ignore")


def _header_for(cells: list[str], rows: list[list[str]] | None = None) -> str:
    """The header line to suggest for a file whose first line is numbers (``cells``; ``rows``: its
    first data lines, split): Binance's kline names for its 12 fields (an open time in milliseconds or
    microseconds, the close time after it), else a name for each field (:func:`_bar_names`): a
    header of fewer names than fields was the next error, and one that put the open where a file
    holds its low (Coinbase's candles: time, low, high, open, close, volume) read every bar wrong, each
    row "repaired" by the OHLC rule."""
    num = pd.to_numeric(pd.Series(cells), errors="coerce")
    if len(cells) == 12 and num.iloc[0] >= 1e11 and num.iloc[6] > num.iloc[0]:
        return f"{BINANCE_KLINE} (Binance's klines)"
    dated = len(cells) > 2 and re.fullmatch(_TIME_OF_DAY, cells[1].strip())  # the date, then the time of day
    stamp = ["date", "time"] if dated else ["timestamp"]
    names, note = _bar_names(rows or [cells], len(stamp), len(cells))
    return ",".join(stamp + names) + note


def _bar_names(rows: list[list[str]], first: int, n: int) -> tuple[list[str], str]:
    """(names of fields ``first`` .. ``n - 1``, a note on their order) of a file without a header,
    from its rows' numbers: of the four fields after the timestamp, the one that is each row's lowest
    is the low and the one that is each row's highest the high (the others the open, then the close;
    the usual open, high, low, close where the rows do not tell); after them a field inside each
    row's low and high is a ``vwap`` (Kraken's OHLC API writes it before the volume), then come the
    ``volume``, a field of whole numbers (``trades``: Kraken's OHLCVT files), then ``other`` fields.
    A field of prices is never told ``volume``: one in a constant ratio to the close over the bars
    that moved is the ``adj_close`` (Yahoo's Adj Close below a row's low after dividends read as the
    volume, silently; a third of the close after decades of them too), another field near the prices
    that moves as little as the close ``other``. A volume near the prices (a coin at 50,000 trading
    30,000 a day, a penny stock trading 1-3 shares) changes far more from row to row: it stays the
    ``volume`` (it was told ``other``, and Kraken's trades after it the volume). Kraken's vwap of
    single-trade bars equals their close: a ratio over bars without a range is no sign of an
    ``adj_close``. Fewer than four fields after the timestamp are the ``close``, then the ``volume``
    (a file of closes was told ``open``)."""
    usual = ["open", "high", "low", "close", "volume"]
    grid = pd.DataFrame([r for r in rows if len(r) == n]).apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if n - first < 4:
        return ["close", "volume"][: max(n - first, 0)] + [f"other{i + 1}" for i in range(first + 2, n)], ""
    if not len(grid) or np.isnan(grid[:, first:]).any():
        return usual[: max(n - first, 0)] + [f"other{i + 1}" for i in range(first + 5, n)], ""
    prices = grid[:, first : first + 4]
    lows = [j for j in range(4) if (prices[:, j] == prices.min(axis=1)).all()]
    highs = [j for j in range(4) if (prices[:, j] == prices.max(axis=1)).all()]
    names = ["open", "high", "low", "close"]
    note = ""
    if len(lows) == 1 and len(highs) == 1 and (lows[0], highs[0]) != (2, 1):
        rest = iter(["open", "close"])
        names = ["low" if j == lows[0] else "high" if j == highs[0] else next(rest) for j in range(4)]
        lo, hi = first + lows[0] + 1, first + highs[0] + 1
        note = (" (Coinbase's candles: fields 2 and 3 are each row's lowest and highest price)"
                if (lo, hi) == (2, 3) else f" (field {lo} is each row's lowest price and field {hi} its highest: "
                "check which of the others is the open)")
    low, high = prices[:, names.index("low")], prices[:, names.index("high")]
    close = prices[:, names.index("close")]
    moved = (high > low)[1:] & (high > low)[:-1]  # pairs of rows that both have a range
    with np.errstate(divide="ignore", invalid="ignore"):
        close_moves = np.median(np.abs(np.diff(np.log(close)))) if len(close) > 1 else 0.0
    for j in range(first + 4, n):
        col = grid[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = col / close
            steady = bool(moved.any()) and bool((np.abs(ratio[1:] / ratio[:-1] - 1) < 1e-4)[moved].mean() >= 0.75)
            moves = np.median(np.abs(np.diff(np.log(col)))) if len(col) > 1 else 0.0
        # a price, not a count of units traded: near the prices, and changing from row to row as the close does
        priced = bool(((col >= low / 2) & (col <= high * 2)).all()) and bool(moves <= 3 * close_moves)
        if "adj_close" not in names and "volume" not in names and steady and (ratio > 0).all():
            names.append("adj_close")
        elif "vwap" not in names and "volume" not in names and ((col >= low) & (col <= high)).all():
            names.append("vwap")
        elif priced and "volume" not in names:
            names.append(f"other{j + 1}")
        elif "volume" not in names:
            names.append("volume")
        elif "trades" not in names and (col == np.floor(col)).all():
            names.append("trades")
        else:
            names.append(f"other{j + 1}")
    return names, note


def _unnamed_index(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """A CSV file whose first column has no name and holds text (``df.to_csv()`` of a frame indexed
    by its timestamps: ``,Open,High,...``) and that has no other timestamp column: that column is
    the timestamp. A first column of numbers (a row counter that ``to_csv`` wrote) is not."""
    if not names or names[0].strip() or any(canonical_name(n) == "timestamp" for n in names):
        return df
    first = df.iloc[:, 0]
    if pd.api.types.is_numeric_dtype(first) or pd.api.types.is_bool_dtype(first):
        return df
    return df.rename(columns={df.columns[0]: "timestamp"})


def parquet_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A frame as pandas restores it from Parquet → row i is the file's row i. pandas' metadata may
    restore an index: its levels named like a column (``Date``, ``symbol``: ``set_index(["timestamp",
    "symbol"])`` of a long panel) become columns again, an unnamed DatetimeIndex becomes the
    ``timestamp`` column when there is none, and any other index is dropped. Every Parquet read
    (:func:`read_table`, the scans of :mod:`hftraining.data.sources`) goes through it."""
    def canon(names) -> set:
        return {canonical_name(n) for n in names if n is not None}

    have = canon(df.columns)
    levels = [n for n in df.index.names if n is not None and canonical_name(n) not in have | {None}]
    if levels:
        df = df.reset_index(level=levels)
    if "timestamp" not in canon(df.columns) and isinstance(df.index, pd.DatetimeIndex):
        return df.reset_index(names="timestamp")
    return df.reset_index(drop=True)


def _one_ticker(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """:func:`parquet_frame` of a Parquet file's frame; a yfinance download saved as it came
    (``yf.download("AEM").to_parquet(...)``: columns of two levels, prices and tickers) is read for its one
    ticker, as its CSV is (:func:`_yfinance_names`), its rows numbered as in the file. It was "missing column
    'timestamp' (columns: ('Date', ''), ('Close', 'AEM'), ...)". A download of several tickers is a
    DataError (one file per ticker is read) showing a command that writes one ticker's file
    (:func:`_one_ticker_hint`)."""
    tickers = ticker_frames(df, str(path))
    if tickers is None:
        return parquet_frame(df)
    if len(tickers) > 1:
        names = sorted(tickers)
        raise DataError(f"{path}: a yfinance download of {len(names)} tickers ({', '.join(names[:3])}"
                        f"{', ...' if len(names) > 3 else ''}): write one file per ticker, e.g. "
                        f"{_one_ticker_hint(df.columns, names[0])}")
    ((frame, rows),) = tickers.values()
    out = parquet_frame(frame)
    out.index = pd.Index(rows)
    return out


def _one_ticker_hint(cols: pd.MultiIndex, ticker: str) -> str:
    """The command that writes ``ticker``'s file of a download of several tickers whose columns are ``cols``
    (:func:`ticker_frames`). A column named in one level only (``('Date', '')``: the index, reset into a column)
    is made the index while ``df.xs`` picks the ticker's columns, and a column again: ``df.xs`` alone dropped it,
    and the file written so was "missing column 'timestamp'"."""
    at = next(i for i in range(2) if ticker in {str(v).strip() for v in cols.get_level_values(i)})
    level = cols.names[at] if cols.names[at] is not None else at
    pick = f"xs({ticker!r}, axis=1, level={level!r})"
    shared = [c for c in cols if sum(bool(str(v).strip()) for v in c) == 1]
    if not shared or len(shared) == len(cols):
        return f"df.{pick}.to_parquet('{ticker}.parquet')"
    names = [next(str(v) for v in c if str(v).strip()) for c in shared]
    if all(str(c[0]).strip() for c in shared):  # named in the first level, as reset_index() names the index
        keys = repr(names[0]) if len(names) == 1 else repr(names)
        return f"df.set_index({keys}).{pick}.reset_index().to_parquet('{ticker}.parquet')"
    return (f"df.set_index({[tuple(c) for c in shared]!r}).{pick}.rename_axis({names!r}).reset_index()"
            f".to_parquet('{ticker}.parquet')")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        msg = re.sub(r"^Could not open Parquet input source '.*?': ", "", str(e).strip().splitlines()[0])
        raise DataError(f"{path}: cannot read Parquet ({msg})") from None


def parse_timestamps(values: pd.Series, path: Path | str = "?") -> pd.Series:
    """Parse to datetime64[ns, UTC]; unparseable cells become NaT.

    Strings: ISO 8601 (with or without a UTC offset) or, when ISO 8601 reads less than half of the
    rows, one other format inferred from the first cell it does not read, month-first, day-first or
    (a two-digit year) year-first (:func:`_day_or_month_first`), and
    applied to every cell (so ``01/02/2020`` never means two different days in one file). Each
    distinct cell is parsed once.
    Numbers: YYYYMMDD dates when most values (more than half) are integers from 19000101 to
    21001231; then a value of another shape (``2020061``, ``20200102.5``) and a date that does not
    exist (``20230230``) become NaT, which the validator drops and reports as ``bad_timestamp``
    with its line, and never turn the column into epoch seconds. Otherwise Unix epoch seconds, or
    milliseconds, microseconds or nanoseconds by the size of the column's median (above 1e11, 1e14,
    1e17: each is a date after 1973 in its unit and after the year 5000 in the coarser one; integers
    are converted exactly, without a float's rounding of nanoseconds); a cell above 1e11 of another
    unit than the column's is read in its own (:func:`_own_unit`: Binance's milliseconds and
    microseconds in one file); in a column of milliseconds or finer, cells in seconds a year or more
    before the others are NaT (:func:`_coarser_unit`). Numbers all below
    :data:`EPOCH_FLOOR` are a DataError (Excel day numbers or a row counter, not seconds of January
    1970). Naive timestamps are taken as UTC. A timestamp outside the nanosecond range (before 1677 or
    after 2262) becomes NaT too.
    """
    if not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
        if _numbers_as_text(values):
            values = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values if getattr(values.dt, "tz", None) is not None else values.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        num = values.astype(np.float64)
        finite = num[np.isfinite(num)]
        ymd = np.isfinite(num) & (num == np.floor(num)) & num.between(19000101, 21001231)
        if len(finite) and 2 * int(ymd.sum()) > len(finite):
            # YYYYMMDD integers (as epoch seconds they would all fall in August 1970); decided by the
            # bulk of the column, so one malformed cell is one bad timestamp, not a file dated 1970
            ts = pd.to_datetime(num.where(ymd).astype("Int64").astype("string"), format="%Y%m%d", utc=True, errors="coerce")
        else:
            if len(finite) and float(np.abs(finite).max()) < EPOCH_FLOOR:
                raise DataError(f"{path}: timestamp column holds numbers from {finite.min():g} to {finite.max():g}, no "
                                "dates: as Unix epoch seconds they all fall within 12 days of 1970-01-01 (Excel day "
                                "numbers, or a row counter?): write the timestamps as dates (YYYY-MM-DD) or epoch seconds")
            size = float(np.nanmedian(np.abs(finite))) if len(finite) else 0.0
            unit = "ns" if size > 1e17 else "us" if size > 1e14 else "ms" if size > 1e11 else "s"
            exact = values if pd.api.types.is_integer_dtype(values) else num.where(np.isfinite(num))
            ts = pd.to_datetime(exact, unit=unit, utc=True, errors="coerce")
            own = _own_unit(num)
            col = ts[own == list(UNIT_FLOOR).index(unit) + 1] if unit in UNIT_FLOOR else ts[own == 0]
            lo, hi = col.min(), col.max()
            year = pd.Timedelta(days=365)
            for k, u in enumerate(UNIT_FLOOR, 1):  # a cell of a finer unit than the column's is read in its own
                if u != unit and (m := own == k).any():
                    got = pd.to_datetime(exact[m], unit=u, utc=True, errors="coerce")
                    # a part in another unit adjoins the column's dates (Binance's ms then us); a cell a
                    # typo made that large (seconds times 100) read so lands decades away: NaT, as before
                    if pd.isna(lo) or (got.max() >= lo - year and got.min() <= hi + year):
                        ts.loc[m] = got
                    else:
                        ts.loc[m] = pd.NaT
            ts = ts.where(~_coarser_unit(num, unit, ts))
    elif (named := _named_zones(text := values.astype("string").str.strip(), path)) is not None:
        ts = named
    elif (named := _abbreviated_zones(text, path)) is not None:
        ts = named
    else:
        cells, codes = _distinct(text)
        rows = np.bincount(codes[codes >= 0], minlength=len(cells))  # how many rows hold each cell
        got = pd.to_datetime(cells, format="ISO8601", utc=True, errors="coerce")
        n_bad = int(rows[got.isna().to_numpy()].sum())
        if n_bad > len(text) // 2:  # mostly not ISO: try the format of the first cell ISO does not read
            # (not the first cell: a file that turns from 2020-01-02 to 01/03/2020 after some rows was
            # tried in ISO 8601 again, and its later rows, most of it, were all dropped)
            first = next((c for c in cells[got.isna().to_numpy()].dropna() if c), "")
            alt = _day_or_month_first(cells, codes, rows, path, first)
            if alt is not None and int(rows[alt.isna().to_numpy()].sum()) < n_bad:
                got = alt
        ts = pd.Series(got.array.take(codes, allow_fill=True), index=text.index)
    ts = ts.dt.tz_convert("UTC")
    if ts.dtype != "datetime64[ns, UTC]":
        # a coarser unit (the reader's fast path keeps year 2300 or 9999 in seconds): a timestamp
        # outside nanosecond range is unparseable here, NaT, and the validator drops and reports it
        lo, hi = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
        ts = ts.where((ts >= lo) & (ts <= hi))
    return ts.astype("datetime64[ns, UTC]")


# a zone's abbreviation after a time of day (12/05/2024 03:30 PM EST) → its UTC offset, or the IANA zone of
# one that names a local time through the year (ET: New York's, -05:00 in winter and -04:00 in summer)
ZONE_ABBREVIATIONS = {
    "EST": "-05:00", "EDT": "-04:00", "CDT": "-05:00", "MST": "-07:00", "MDT": "-06:00", "PST": "-08:00",
    "PDT": "-07:00", "AKST": "-09:00", "AKDT": "-08:00", "HST": "-10:00", "WET": "+00:00", "WEST": "+01:00",
    "CET": "+01:00", "CEST": "+02:00", "EET": "+02:00", "EEST": "+03:00", "MSK": "+03:00", "HKT": "+08:00",
    "SGT": "+08:00", "JST": "+09:00", "KST": "+09:00", "AEST": "+10:00", "AEDT": "+11:00", "NZST": "+12:00",
    "NZDT": "+13:00", "UTC": "+00:00", "GMT": "+00:00",
    "ET": "America/New_York", "CT": "America/Chicago", "MT": "America/Denver", "PT": "America/Los_Angeles",
}
# abbreviations several zones share: a DataError (CST beside CDT is US Central time)
AMBIGUOUS_ZONES = {
    "CST": "US Central time (-06:00) and China's (+08:00)", "IST": "India's (+05:30), Israel's (+02:00) and "
    "Ireland's (+01:00)", "BST": "British summer time (+01:00) and Bangladesh's (+06:00)",
    "AST": "Atlantic time (-04:00) and Arabia's (+03:00)",
}
_ABBREVIATIONS = "|".join(sorted({*ZONE_ABBREVIATIONS, *AMBIGUOUS_ZONES}, key=lambda z: (-len(z), z)))
# a stamp with a time of day (and AM or PM), then two to four capitals: 12/05/2024 03:30 PM EST
ABBREVIATED_ZONE = r"(.*\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp]\.?[Mm]\.?)?)\s+([A-Z]{2,4})"


def _abbreviated_zones(text: pd.Series, path: Path | str) -> pd.Series | None:
    """Timestamps that end in a zone's abbreviation (``12/05/2024 03:30 PM EST``, ``2024-07-01 09:30
    EDT``, ``... 15:30 CET``) → datetime64[ns, UTC]: the stamps without it are read together, as the
    others are (:func:`parse_timestamps`: one format for the whole column, AM and PM read), at the
    abbreviation's UTC offset (:data:`ZONE_ABBREVIATIONS`; ``ET``, ``CT``, ``MT`` and ``PT`` are the
    local times of New York, Chicago, Denver and Los Angeles, and a local time the zone skips or holds
    twice becomes NaT). None unless most of the first cells end so (``UTC`` and ``GMT`` aside, which
    the readers take as they are). An abbreviation that several zones share (``IST``, and ``CST``
    unless the column holds ``CDT``) or that names no zone is a DataError naming the file and the
    cell; a cell with a UTC offset instead is read as it says. Before, every such stamp was a
    ``bad_timestamp`` (pandas reads no abbreviation but UTC's)."""
    head = text.iloc[:1000].dropna()
    abbr = head.str.extract(f"^{ABBREVIATED_ZONE}$")[1]
    if not len(head) or 2 * int((abbr.notna() & ~abbr.isin(["UTC", "GMT", "AM", "PM"])).sum()) <= len(head):
        return None
    parts = text.str.extract(f"^{ABBREVIATED_ZONE}$")
    abbr = parts[1].where(~parts[1].isin(["AM", "PM"]))  # 03:30 PM: a time of day without a zone
    offsets = dict(ZONE_ABBREVIATIONS)
    if abbr.eq("CDT").any():
        offsets["CST"] = "-06:00"  # winter's CST beside summer's CDT: US Central time
    unknown = abbr.notna() & ~abbr.isin(list(offsets))
    if unknown.any():
        cell, name = text[unknown].iloc[0], abbr[unknown].iloc[0]
        what = f"names {AMBIGUOUS_ZONES[name]}" if name in AMBIGUOUS_ZONES else "is no time zone this reader knows"
        raise DataError(f"{path}: timestamp {cell!r}: {name!r} {what}: write the UTC offset "
                        "(2024-12-05T15:30:00-05:00) or an IANA name (2024-12-05 15:30:00 America/New_York)")
    at = abbr.notna().to_numpy(bool)
    local = parse_timestamps(parts[0][at], path).dt.tz_localize(None)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    zones = abbr[at].map(offsets)
    for zone in zones.dropna().unique():
        mine = (zones == zone).to_numpy(bool)
        if "/" in zone:
            got = local[mine].dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        else:
            sign, hours, minutes = (-1 if zone[0] == "-" else 1), int(zone[1:3]), int(zone[4:6])
            got = (local[mine] - sign * pd.Timedelta(hours=hours, minutes=minutes)).dt.tz_localize("UTC")
        out[local[mine].index] = got.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    offset = (~at & text.str.contains(ZONE, regex=True).fillna(False).to_numpy(bool))
    if offset.any():  # one_zone_rule refused a column that mixes these with stamps without a zone
        out[offset] = parse_timestamps(text[offset], path)
    return out


# a stamp ending in a time zone's name, as the IBKR API writes its bars: 20240102 09:30:00 US/Eastern
NAMED_ZONE = r"(.*\d)\s+([A-Za-z][\w+-]*(?:/[\w+-]+)+)"


def _named_zones(text: pd.Series, path: Path | str) -> pd.Series | None:
    """Timestamps that end in an IANA time zone's name (``20240102 09:30:00 US/Eastern``,
    ``2024-01-02 09:30:00 America/New_York``) → datetime64[ns, UTC]: the stamp is read as the others
    are (:func:`parse_timestamps`), as that zone's local time. None unless most of the first cells
    end so; a cell with a UTC offset instead (``2024-01-02T09:30:00-05:00``) is read as it says; a
    cell without a zone, or a local time that the zone skips or holds twice (a change of daylight
    saving time), becomes NaT, which the validator reports as ``bad_timestamp``. A date without a
    time of day (``20240102 US/Eastern``) names a day, as a plain date does: its UTC midnight, not
    the instant its local midnight is (Tokyo's 2024-01-04 would be 3 January in UTC, and a daily
    file so stamped would not line up with the plain dates of another). A name that is no time zone
    is a DataError naming the file and the cell. Before, every such stamp was a ``bad_timestamp``."""
    head = text.iloc[:1000].dropna()
    if not len(head) or 2 * int(head.str.fullmatch(NAMED_ZONE).sum()) <= len(head):
        return None
    parts = text.str.extract(f"^{NAMED_ZONE}$")
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for zone in parts[1].dropna().unique():
        at = (parts[1] == zone).fillna(False).to_numpy(bool)
        day = parse_timestamps(parts[0][at], path)
        local = day.dt.tz_localize(None)
        try:
            got = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        except (KeyError, ValueError):  # an unknown zone (zoneinfo's and pytz's errors are KeyErrors)
            cell = text[at].iloc[0]
            raise DataError(f"{path}: timestamp {cell!r}: {zone!r} is not a time zone: write an IANA name "
                            "(America/New_York) or the UTC offset (2024-01-02T09:30:00-05:00)") from None
        got = got.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        dated = ~parts[0][at].str.contains(CLOCK, regex=True).fillna(False).to_numpy(bool)
        out[at] = got.where(~dated, day)
    offset = (parts[1].isna() & text.str.contains(ZONE, regex=True)).fillna(False).to_numpy(bool)
    if offset.any():  # one_zone_rule refused a column that mixes these with stamps without a zone
        out[offset] = parse_timestamps(text[offset], path)
    return out


# a stamp's zone or UTC offset, at its end (a zone's name too: US/Eastern; or its abbreviation: 03:30 PM EST)
ZONE = re.compile(r"(?:[zZ]|\s?(?:UTC|GMT)|[+-]\d{2}(?::?\d{2})?|\s[A-Za-z][\w+-]*(?:/[\w+-]+)+"
                  rf"|\s(?:{_ABBREVIATIONS}))$")
CLOCK = re.compile(r"\d{1,2}:\d{2}")  # a time of day


def zoneless(values: pd.Series) -> bool:
    """Whether a timestamp column holds times of day written without a zone or UTC offset
    (``2024-03-08 09:30:00``, or a Parquet timestamp without a time zone), which
    :func:`parse_timestamps` takes as UTC: most of the first cells that have a time of day
    lack a zone (a column is written one way: one that mixes the two is refused before it is read,
    :func:`one_zone_rule`). Epoch and YYYYMMDD numbers and plain dates are not."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return getattr(values.dt, "tz", None) is None
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    cells = values.head(DATE_SAMPLE).dropna().astype("string").str.strip()
    timed = cells[cells.str.contains(CLOCK, regex=True).fillna(False).to_numpy(bool)]
    if not len(timed):
        return False
    return 2 * int(timed.str.contains(ZONE, regex=True).fillna(False).sum()) < len(timed)


# a time of day and, right after it, a zone or UTC offset: 09:30:00-05:00, 09:30Z, 09:30:00.5 +0100, 09:30 UTC,
# 09:30:00 US/Eastern
ZONED_CLOCK = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                         r"(?:\s?(?:[zZ]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)|\s[A-Za-z][\w+-]*(?:/[\w+-]+)+"
                         rf"|(?:\s?[AaPp]\.?[Mm]\.?)?\s(?:{_ABBREVIATIONS}))$")


def one_zone_rule(values: pd.Series, where: Path | str, first: int = 2, unit: str = "line",
                  line: np.ndarray | None = None) -> None:
    """A DataError when a text timestamp column holds times of day written with a zone or UTC offset
    (``2024-01-08T10:30:00-05:00``) and others written without (``2024-01-08 09:30:00``), naming the
    first zone-less row and a zoned one: by ``line`` (each row's number) when given, else by the
    row's index plus ``first`` (a table as :func:`read_table` numbers its rows); ``unit``: line or row.
    :func:`parse_timestamps` takes a zone-less stamp as UTC, and in such a column that is a guess:
    beside New York offsets a local 09:30 read as UTC lands five hours before its neighbours, sorted
    among them (:func:`zoneless` judges the first cells by majority and named no such file). Offsets
    that differ (``-05:00`` in winter, ``-04:00`` in summer) are each converted, as they say; plain
    dates and numbers have no time of day and are not looked at. Every cell is looked at (with
    Arrow's regular expressions: a third of a second for a million stamps); a column the reader
    parsed (one offset or none throughout) is not text and costs nothing."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values) or not len(values):
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        cells = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text (Timestamps, numbers among strings)
        cells = pa.array(values.astype("string"), type=pa.string(), from_pandas=True)
    cells = pc.utf8_trim_whitespace(cells)
    zoned = pc.fill_null(pc.match_substring_regex(cells, ZONED_CLOCK.pattern), False)
    if not pc.any(zoned).as_py():
        return
    bare = pc.and_(pc.fill_null(pc.match_substring_regex(cells, CLOCK.pattern), False), pc.invert(zoned))
    if not pc.any(bare).as_py():
        return
    row = int(np.flatnonzero(bare.to_numpy(zero_copy_only=False))[0])
    other = int(np.flatnonzero(zoned.to_numpy(zero_copy_only=False))[0])
    number = (lambda i: int(line[i])) if line is not None else (lambda i: int(values.index[i]) + first)
    raise DataError(f"{where}: {unit} {number(row)}: timestamp {cells[row].as_py()!r} has no zone or UTC offset, but "
                    f"{unit} {number(other)}'s {cells[other].as_py()!r} has one: a column that mixes them cannot be read "
                    "one way (a stamp without one would be taken as UTC): write every timestamp with its offset, or all "
                    "of them in UTC")


UNIT_FLOOR = {"ms": 1e11, "us": 1e14, "ns": 1e17}  # the smallest epoch number read in a unit finer than seconds


def _own_unit(num: pd.Series) -> np.ndarray:
    """(n,) the unit each cell of an epoch column is by its own size, where that is a unit finer than
    seconds, as its position in :data:`UNIT_FLOOR` from 1 (1: ms above 1e11, 2: us above 1e14, 3: ns
    above 1e17: a date after 1973 in its unit and after the year 5000 in the coarser one, so no cell of
    one unit is a date of the nanosecond range in another); 0 for a smaller cell (read in the
    column's unit, :func:`parse_timestamps`). Binance's
    kline files are in milliseconds until 2024 and in microseconds from 2025: files of both joined
    lost one part (a microsecond cell read in milliseconds falls after the year 2262, a millisecond
    cell read in microseconds in January 1970), as bad_timestamp rows."""
    v = np.abs(num.to_numpy(dtype=np.float64))
    own = np.searchsorted(np.array(list(UNIT_FLOOR.values())), v, side="left").astype(np.int8)
    return np.where(np.isfinite(v), own, 0)


def _coarser_unit(num: pd.Series, unit: str, ts: pd.Series) -> np.ndarray:
    """(n,) the cells of an epoch column read in ``unit`` (milliseconds or finer, by the column's
    median) that are seconds: at least 1e8 (seconds of 1973 or later) and at most 1e11, all dated (in
    ``unit``: January 1970) over a year before every cell of a finer unit (each read in its own,
    :func:`_own_unit`). A vendor that changed from seconds to milliseconds writes them; read in milliseconds they
    were rows of January 1970 that the outlier rule (1% of the rows) did not catch. Those cells become
    NaT (``bad_timestamp``, with their lines); a history running through 1970-1973 in milliseconds is
    one span, no gap, and stays as it is."""
    out = np.zeros(len(num), dtype=bool)
    if unit not in UNIT_FLOOR:
        return out
    v = num.to_numpy(dtype=np.float64)
    small = (v >= 1e8) & (v <= UNIT_FLOOR["ms"])  # seconds: the finer units are read in their own (_own_unit)
    big = np.isfinite(v) & (v > UNIT_FLOOR["ms"])
    if small.any() and big.any() and ts[small].max() < ts[big].min() - pd.Timedelta(days=365):
        out = small
    return out


def _numbers_as_text(values: pd.Series) -> bool:
    """Whether every cell of a column (not all empty) is a number: numbers stored as text. Decided
    on the column's distinct cells, and on its first 1000 cells first (one that is not a number is
    enough to say no)."""
    present = values.dropna()
    for part in (present.iloc[:1000], present):
        distinct = pd.Series(part.unique())
        if not len(distinct) or pd.to_numeric(distinct, errors="coerce").isna().any():
            return False
    return True


def _distinct(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(cells, codes) with ``text[i] == cells[codes[i]]`` (code -1: an empty cell), so that each
    distinct cell of a column is parsed once: a long file repeats every date once per symbol, and
    pandas' own cache (``to_datetime(cache=True)``) looks at the first 500 cells only, all distinct in
    a file sorted by symbol. A column whose cells are mostly distinct (a sample of them tells) is
    its own cells: finding the distinct ones would cost more than it saves."""
    sample = text.iloc[:: max(1, len(text) // 10000)].dropna()
    if 2 * sample.nunique() > len(sample):
        codes = np.arange(len(text), dtype=np.intp)
        codes[text.isna().to_numpy()] = -1
        return text.reset_index(drop=True), codes
    codes, distinct = pd.factorize(text)
    return pd.Series(distinct, dtype="string"), codes


# a date of three numbers of one or two digits (a two-digit year first or last), with an optional
# time of day: 15/03/21, 3/15/21, 21-03-15 09:30, 21.03.15 09:30:00
_TWO_DIGIT_YEAR = re.compile(r"(\d{1,2})([/.-])\d{1,2}\2\d{1,2}(?:([ T])\d{1,2}:\d{2}(:\d{2})?)?")
# the sample of distinct cells each reading is tried on before it is parsed in full (see below)
DATE_SAMPLE = 4096
log = logging.getLogger("hftraining")


def _date_readings(first: str, sample: pd.Series) -> list[tuple[str, dict]]:
    """The readings of a non-ISO date column as (name, :func:`pandas.to_datetime` arguments), from
    its first cell: month-first and day-first, with the format pandas infers from the first cell.
    pandas infers none for a two-digit year (it then reads each cell with dateutil, which swaps day
    and month cell by cell where one is above 12): three numbers with a two-digit year are read in
    explicit formats, month-first (``%m/%d/%y``), day-first (``%d/%m/%y``) and, when the first number
    has two digits, year-first (``%y/%m/%d``: ``21/03/15`` is 15 March 2021, as Asian exports write
    it), when most cells of ``sample`` have that shape too (with a time of day, a cell written
    without one is midnight: some exports write midnight bars so). A reading equal to an earlier one
    is left out."""
    m = _TWO_DIGIT_YEAR.fullmatch(first)
    if m and 2 * int(sample.str.fullmatch(_TWO_DIGIT_YEAR.pattern).sum()) > len(sample):
        sep, at = m.group(2), m.group(3)
        clock = f"{at}%H:%M" + (":%S" if m.group(4) else "") if at else ""
        orders = [("month-first", "%m", "%d", "%y"), ("day-first", "%d", "%m", "%y")]
        if len(m.group(1)) == 2:
            orders.append(("year-first", "%y", "%m", "%d"))
        return [(name, {"format": sep.join(fields) + clock, **({"date_only": sep.join(fields)} if clock else {})})
                for name, *fields in orders]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "parsing dates in %d/%m/%Y format when dayfirst=False"
        formats = [guess_datetime_format(first, dayfirst=d) if first else None for d in (False, True)]
    # the format guessed from ``first`` is given, not left to pandas, which guesses it from the column's
    # first cell (another cell than ``first`` where the file starts in ISO 8601)
    readings = [("month-first", {"format": formats[0]} if formats[0] else {"dayfirst": False})]
    if formats[0] is None or formats[1] != formats[0]:  # else day-first reads every cell as month-first does
        readings.append(("day-first", {"format": formats[1]} if formats[1] else {"dayfirst": True}))
    for fmt in dict.fromkeys(f for f in formats if f):
        # "May" is a month's full and short name: a first cell in May makes either guess (19-May-2045:
        # %d-%B-%Y), and the other months' cells of the file would all fail; the other spelling is a reading too
        other = fmt.replace("%B", "%b") if "%B" in fmt else fmt.replace("%b", "%B")
        if other != fmt and re.search(r"\bmay\b", first, re.IGNORECASE):
            readings.append((f"month names {'abbreviated' if '%b' in other else 'in full'}", {"format": other}))
    return readings


def _day_or_month_first(cells: pd.Series, codes: np.ndarray, rows: np.ndarray, path: Path | str = "?",
                        first: str | None = None) -> pd.Series | None:
    """Non-ISO date strings read in the format of the first non-ISO cell (:func:`_date_readings`):
    month-first (``01/02/2020`` is 2 January in the US), day-first (2 January in Europe: ``02/01/2020``,
    ``02.01.2020``) and, for a two-digit first number, year-first (``20/01/02``: 2 January 2020, as
    Asian exports write it); the reading that parses more cells wins, then the one whose rows are more
    often in time order (oldest first or newest first, whichever fits more rows: a newest-first file
    read the right way is in order too), then the one whose largest step between consecutive times is
    smaller, then the one spanning less time, then the earlier of month-first, day-first and
    year-first (a warning then names the file and the readings, where they differ). Month-first alone
    read a European file's days 1..12 as months and dropped the others as ``bad_timestamp``. When
    every day is at most 12 both readings parse, in the same order: a file of days 1..12 read the
    wrong way steps a month at a time, and a monthly file dated the first of each month
    (``01.02.2020``, ``01.03.2020``, ...) read the wrong way is days 1..12 of each January, a step of
    eleven months at each new year (its span alone would choose it).

    ``cells``: the column's distinct cells, ``codes``: each row's cell (-1: empty), ``rows``: how many
    rows hold each cell, ``first``: the cell whose format the readings take (default: the first
    cell). Returns the reading of each distinct cell (NaT where it does not parse).
    A reading is first tried on a sample of the distinct cells: one that fails on more rows there than
    the best reading does on all of them cannot win, and is not parsed in full."""
    if first is None:
        first = next((c for c in cells.dropna() if c), "")
    step = max(1, len(cells) // DATE_SAMPLE)
    sample = cells.iloc[::step]
    readings = _date_readings(first, sample[sample.notna() & (sample != "")])

    def parse(part: pd.Series, how: dict) -> pd.Series | None:
        how = dict(how)
        bare = how.pop("date_only", None)  # a midnight bar written without its time of day
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "could not infer format": cells then become NaT
                got = pd.to_datetime(part, utc=True, errors="coerce", **how)
                if bare is not None and got.isna().any():
                    got = got.fillna(pd.to_datetime(part, utc=True, errors="coerce", format=bare))
                return got
        except (ValueError, TypeError, OverflowError):
            return None

    tried = []  # (failures in the sample, order, name, arguments)
    for i, (name, how) in enumerate(readings):
        got = parse(sample, how)
        tried.append((0 if got is None else int(rows[::step][got.isna().to_numpy()].sum()), i, name, how))
    tried.sort()  # the reading that fails least on the sample is parsed in full first
    full = []  # (parse failures, rows out of time order, order, name, reading, its times in seconds)
    for sampled, i, name, how in tried:
        if full and sampled > min(r[0] for r in full):
            continue  # fails on more rows than a reading already parsed: it cannot win
        got = parse(cells, how)
        if got is None:
            continue
        bad = got.isna().to_numpy()
        secs = (got - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()  # any unit pandas chose
        used = codes[codes >= 0]
        t = secs[used[~bad[used]]]  # the rows' times, in the file's order
        steps = np.diff(t)  # out of time order: against the file's direction (oldest or newest first)
        full.append((int(rows[bad].sum()), int(min((steps < 0).sum(), (steps > 0).sum())), i, name, got, secs[~bad]))
    if not full:
        return None
    best = min(r[:2] for r in full)
    tied = sorted((r for r in full if r[:2] == best), key=lambda r: r[2])
    if len(tied) == 1:
        return tied[0][4]

    def spacing(t: np.ndarray) -> tuple[float, float]:  # (largest step between sorted times, span)
        s = np.sort(t)
        return (float(np.diff(s).max()) if len(s) > 1 else 0.0, float(s[-1] - s[0]) if len(s) else 0.0)

    keys = [spacing(r[5]) for r in tied]
    win = min(range(len(tied)), key=keys.__getitem__)  # min keeps the first (month-first) of equals
    # a day and a two-digit year trade places (21/03/01..21/03/10: ten days of 2021, or ten years of
    # 1 to 10 March): nothing in the file tells them apart, so the choice spacing made is named too
    swap = any(r[3] == "year-first" for r in tied)
    same = [r for k, r in zip(keys, tied) if (swap or k == keys[win]) and r is not tied[win]]
    _warn_undecided(path, cells, tied[win], same, "equally well" if all(k == keys[win] for k in keys) else
                    "both in time order (the one of smaller steps taken)")
    return tied[win][4]


def _warn_undecided(path: Path | str, cells: pd.Series, chosen: tuple, others: list[tuple], how: str) -> None:
    """A warning naming the file and the readings of its dates that tie on every criterion of
    :func:`_day_or_month_first` (or, with a two-digit year read year-first among them, on every
    criterion before spacing) yet give a cell different dates; ``chosen`` is the reading taken."""
    def day(x) -> str:
        return "not a date" if pd.isna(x) else x.strftime("%Y-%m-%d %H:%M:%S").removesuffix(" 00:00:00")

    got = chosen[4]
    for other in others:
        alt = other[4]
        differ = ((got.isna() != alt.isna()) | (got != alt) & got.notna() & alt.notna()).to_numpy(bool)
        if differ.any():
            j = int(np.argmax(differ))
            log.warning("%s: dates such as %r read %s (%s) and %s (%s) %s: read %s; write them as "
                        "YYYY-MM-DD to be sure", path, cells.iloc[j], chosen[3], day(got.iloc[j]), other[3],
                        day(alt.iloc[j]), how, chosen[3])
            return


def split_symbols(df: pd.DataFrame, path: Path, known: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """{symbol: rows} of one read table; the symbol is the ``symbol`` column or the file stem.
    Rows with an empty symbol are returned under the key ``""`` (the validator drops them).
    A float column whose values are all whole numbers holds integer codes (pandas reads a column of
    integers with an empty cell as floats): they are named as integers, ``7203``, as the same codes
    without the empty cell, a ``{7203: frame}`` dict, the file ``7203.parquet`` and a long Parquet
    file's scan name them, not ``7203.0`` (a symbol the model was never trained on). ``known``: the
    symbols a model was trained on; given, such a column is named as they name its codes when they
    name more of them so: ``7203.0`` as the cells of a long CSV file written from that column read
    (``df.to_csv``), ``1e+15`` as a long Parquet file's scan names a float code that large."""
    if "symbol" not in df.columns:
        return {symbol_of(path): df}
    col = df["symbol"]
    if pd.api.types.is_float_dtype(col.dtype):
        v = col.to_numpy(dtype=np.float64, na_value=np.nan)
        v = v[~np.isnan(v)]
        if np.isfinite(v).all() and (v == np.trunc(v)).all() and (np.abs(v) < 2.0 ** 63).all():
            codes = np.unique(v)
            names = [str(int(c)) for c in codes]  # exact below 2**63
            if known is not None and len(codes):
                import pyarrow as pa

                trained = set(map(str, known))
                others = (pd.Series(codes).astype("string").tolist(),  # '7203.0', as before the codes were integers
                          pa.array(codes).cast(pa.string()).to_pylist())  # '1e+15', as a long Parquet file's scan
                best = sum(n in trained for n in names)
                for other in others:
                    if (hits := sum(n in trained for n in other)) > best:
                        names, best = other, hits
            col = col.map(dict(zip(codes.tolist(), names)))
    sym = col.astype("string").str.strip()
    out = {}
    for name, idx in sym.fillna("").groupby(sym.fillna(""), sort=True).groups.items():
        out[str(name)] = df.loc[idx].drop(columns="symbol")
    return out
