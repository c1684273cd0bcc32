"""Readers: CSV/Parquet files → one normalised frame per symbol.

A normalised frame has the columns ``timestamp`` (datetime64[ns, UTC]), ``open``, ``high``, ``low``,
``close``, ``volume`` (float64), sorted by time with unique timestamps.

Accepted inputs: a file, a folder of files or a glob (or a list of them); one file per symbol (the
symbol is the file stem) or one long file with a ``symbol`` column. Column names are matched
case-insensitively with common aliases (``Date``, ``Datetime``, ``Adj Close``, ``Vol`` ...). CSV
files may use ``,`` ``;`` tab or ``|`` as delimiter (sniffed from the header) and may start with a
UTF-8 byte-order mark. Timestamps with a UTC offset are converted to UTC; naive ones are taken as UTC.

This module only reads (it imports nothing of the package but the errors); the rules that drop or
repair rows live in :mod:`hftraining.data.validate`, which builds on it.
"""

from __future__ import annotations

import csv
import glob
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hftraining.core.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = (*PRICE_COLUMNS, "volume")
SUFFIXES = (".csv", ".parquet", ".pq")
DELIMITERS = (",", ";", "\t", "|")

# lower-cased alias → canonical name. An exact canonical name beats an alias ("close" beats "adj close").
ALIASES = {
    "date": "timestamp", "time": "timestamp", "datetime": "timestamp", "timestamp": "timestamp",
    "ts": "timestamp", "date_time": "timestamp",
    "open": "open", "o": "open", "high": "high", "h": "high", "low": "low", "l": "low",
    "close": "close", "c": "close", "adj close": "close", "adj_close": "close", "adjclose": "close",
    "volume": "volume", "vol": "volume", "v": "volume", "symbol": "symbol", "ticker": "symbol",
}
CANONICAL = ("timestamp", *OHLCV, "symbol")


def sample_data_dir() -> Path:
    """Folder of the daily OHLCV sample files bundled with the package."""
    return Path(str(resources.files("hftraining") / "sample_data"))


def resolve_paths(spec: str | Path | list | None) -> list[Path]:
    """A file, a folder, a glob (or a list of them) → the data files, sorted. ``None``: sample data."""
    if spec is None:
        spec = sample_data_dir()
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    out: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file())
            if not found:
                raise DataError(f"{p}: folder holds no .csv or .parquet files")
            out += found
        elif p.is_file():
            out.append(p)
        elif any(ch in str(s) for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(s)) if Path(f).suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"{s}: glob matches no .csv or .parquet files")
            out += found
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def first_row_number(path: Path) -> int:
    """The number users see for the first data row: its line in a CSV (the header is line 1), or 1 in Parquet."""
    return 1 if is_parquet(path) else 2


def _sniff_header(path: Path) -> tuple[str, list[str]]:
    """(delimiter, column names) from the first line of a CSV file."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    try:
        line = head.decode("utf-8-sig").splitlines()[0] if head.strip() else ""
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (is it a CSV file?)") from None
    sep = ","
    if "," not in line and line:
        counts = {d: line.count(d) for d in DELIMITERS[1:]}
        best = max(counts, key=counts.get)
        sep = best if counts[best] else ","
    return sep, next(csv.reader([line], delimiter=sep), [])


def canonical_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rename columns to canonical names (case-insensitive, aliases); other columns are kept as they are."""
    by_canon: dict[str, list[Any]] = {}
    for col in df.columns:
        canon = ALIASES.get(str(col).strip().lower())
        if canon:
            by_canon.setdefault(canon, []).append(col)
    rename = {}
    for canon, cols in by_canon.items():
        exact = [c for c in cols if str(c).strip().lower() == canon]
        rename[(exact or cols)[0]] = canon
    # an alias that lost to another column must not keep a name that shadows a canonical one
    out = df.drop(columns=[c for cols in by_canon.values() for c in cols if c not in rename and c in CANONICAL])
    return out.rename(columns=rename)


def read_table(path: Path) -> pd.DataFrame:
    """Read one file as it is, column names canonicalised. Row i of the result is the file's row i
    (blank CSV lines are kept as empty rows so that row numbers match the file's line numbers)."""
    try:
        if is_parquet(path):
            df = _read_parquet(path)
            if "timestamp" not in {ALIASES.get(str(c).strip().lower()) for c in df.columns} and isinstance(
                df.index, pd.DatetimeIndex
            ):
                df = df.reset_index(names="timestamp")
            else:
                df = df.reset_index(drop=True)
        else:
            sep, names = _sniff_header(path)
            # fast path: an ISO 8601 timestamp column is parsed by the reader (a column that does not
            # parse stays text and goes through parse_timestamps, cell by cell)
            ts_cols = [n for n in names if ALIASES.get(n.strip().lower()) == "timestamp"]
            dates = {"parse_dates": ts_cols[:1], "date_format": "ISO8601"} if len(ts_cols) == 1 and names.count(ts_cols[0]) == 1 else {}
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", skip_blank_lines=False, low_memory=False, **dates)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (is it a CSV file?)") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot read ({msg})") from None
    return canonical_columns(df, path)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        msg = re.sub(r"^Could not open Parquet input source '.*?': ", "", str(e).strip().splitlines()[0])
        raise DataError(f"{path}: cannot read Parquet ({msg})") from None


def parse_timestamps(values: pd.Series, path: Path | str = "?") -> pd.Series:
    """Parse to datetime64[ns, UTC]; unparseable cells become NaT.

    Strings: ISO 8601 (with or without a UTC offset) or one other format inferred from the first
    cell and applied to every cell (so ``01/02/2020`` never means two different days in one file).
    Numbers: YYYYMMDD dates when every value is an integer from 19000101 to 21001231 (a date
    that does not exist, e.g. 20230230, becomes NaT); otherwise Unix epoch seconds, or
    milliseconds when above 1e11. Naive timestamps are taken as UTC. A timestamp outside the
    nanosecond range (before 1677 or after 2262) becomes NaT too.
    """
    if not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
        num = pd.to_numeric(values, errors="coerce")
        if num.notna().any() and num.notna().sum() == values.notna().sum():  # numbers stored as text
            values = num
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values if getattr(values.dt, "tz", None) is not None else values.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        num = values.astype(np.float64)
        finite = num[np.isfinite(num)]
        if len(finite) and (finite == np.floor(finite)).all() and finite.between(19000101, 21001231).all():
            # YYYYMMDD integers (as epoch seconds they would all fall in August 1970)
            ts = pd.to_datetime(num.where(np.isfinite(num)).astype("Int64").astype("string"), format="%Y%m%d", utc=True, errors="coerce")
        else:
            unit = "ms" if len(finite) and np.nanmedian(np.abs(finite)) > 1e11 else "s"
            ts = pd.to_datetime(num.where(np.isfinite(num)), unit=unit, utc=True, errors="coerce")
    else:
        text = values.astype("string").str.strip()
        ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        n_bad = int(ts.isna().sum() - text.isna().sum())
        if n_bad > len(text) // 2:  # mostly not ISO: try the format of the first cell
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "could not infer format": cells then become NaT
                    alt = pd.to_datetime(text, utc=True, errors="coerce")
            except (ValueError, TypeError):
                alt = None
            if alt is not None and alt.isna().sum() < ts.isna().sum():
                ts = alt
    ts = ts.dt.tz_convert("UTC")
    if ts.dtype != "datetime64[ns, UTC]":
        # a coarser unit (the reader's fast path keeps year 2300 or 9999 in seconds): a timestamp
        # outside nanosecond range is unparseable here, NaT, and the validator drops and reports it
        lo, hi = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
        ts = ts.where((ts >= lo) & (ts <= hi))
    return ts.astype("datetime64[ns, UTC]")


def split_symbols(df: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    """{symbol: rows} of one read table; the symbol is the ``symbol`` column or the file stem.
    Rows with an empty symbol are returned under the key ``""`` (the validator drops them)."""
    if "symbol" not in df.columns:
        return {path.stem: df}
    sym = df["symbol"].astype("string").str.strip()
    out = {}
    for name, idx in sym.fillna("").groupby(sym.fillna(""), sort=True).groups.items():
        out[str(name)] = df.loc[idx].drop(columns="symbol")
    return out
