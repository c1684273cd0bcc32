"""Readers: CSV/Parquet files → one normalised frame per symbol.

A normalised frame has the columns ``timestamp`` (datetime64, UTC), ``open``, ``high``, ``low``,
``close``, ``volume`` (float64), sorted by time with unique timestamps.
"""

from __future__ import annotations

import glob
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = (*PRICE_COLUMNS, "volume")
SUFFIXES = (".csv", ".parquet", ".pq")

# lower-cased alias → canonical name
ALIASES = {
    "date": "timestamp", "time": "timestamp", "datetime": "timestamp", "timestamp": "timestamp",
    "open": "open", "o": "open", "high": "high", "h": "high", "low": "low", "l": "low",
    "close": "close", "c": "close", "adj close": "close", "adj_close": "close", "adjclose": "close",
    "volume": "volume", "vol": "volume", "v": "volume", "symbol": "symbol", "ticker": "symbol",
}


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


def read_table(path: Path) -> pd.DataFrame:
    """Read one file as it is, column names canonicalised (case-insensitive, aliases)."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    rename = {}
    for col in df.columns:
        canon = ALIASES.get(str(col).strip().lower())
        if canon and canon not in rename.values():
            rename[col] = canon
    df = df.rename(columns=rename)
    if "timestamp" not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index(names="timestamp")
    return df


def parse_timestamps(values: pd.Series, path: Path) -> pd.Series:
    """Parse to UTC; naive timestamps are taken as UTC. Unparseable cells become NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values
    else:
        ts = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    if getattr(ts.dt, "tz", None) is None:
        ts = ts.dt.tz_localize("UTC")
    return ts.dt.tz_convert("UTC")


def normalise(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Canonical columns and dtypes, sorted by time, exact duplicate timestamps dropped (first kept)."""
    missing = [c for c in ("timestamp", "close") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    out = pd.DataFrame({"timestamp": parse_timestamps(df["timestamp"], path)})
    for col in OHLCV:
        if col in df.columns:
            out[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
        elif col == "volume":
            raise DataError(f"{path}: missing column 'volume'")
        else:  # a close-only file: open/high/low equal the close
            out[col] = pd.to_numeric(df["close"], errors="coerce").astype(np.float64)
    out = out.dropna(subset=["timestamp"])
    out = out.sort_values("timestamp", kind="stable").drop_duplicates("timestamp", keep="first")
    return out.reset_index(drop=True)


def read_symbols(path: Path) -> dict[str, pd.DataFrame]:
    """One file → {symbol: normalised frame}; the symbol is the ``symbol`` column or the file stem."""
    df = read_table(path)
    if len(df) == 0:
        raise DataError(f"{path}: no data rows")
    if "symbol" in df.columns:
        return {str(sym): normalise(g.drop(columns="symbol"), path) for sym, g in df.groupby("symbol", sort=True)}
    return {path.stem: normalise(df, path)}


def load_frames(spec: str | Path | list | None, symbols: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read every file of ``spec`` → {symbol: frame}, optionally keeping only ``symbols``."""
    frames: dict[str, pd.DataFrame] = {}
    for path in resolve_paths(spec):
        for sym, frame in read_symbols(path).items():
            if sym in frames:
                raise DataError(f"{path}: symbol {sym!r} appears in more than one file")
            frames[sym] = frame
    if symbols is not None:
        unknown = [s for s in symbols if s not in frames]
        if unknown:
            raise DataError(f"data.symbols: {unknown[0]!r} not found in the data (found: {', '.join(sorted(frames))})")
        frames = {s: frames[s] for s in symbols}
    return frames
