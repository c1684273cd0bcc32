"""Writes tests/data/bad/: small OHLCV files, each with one kind of defect (run from the repo root:
``python tests/data/make_bad_corpus.py``). The files are committed; this script documents how each
was made. Each clean series has N rows, enough for one window with the default config; in a CSV
file data row i (0-based) is on line i + 2.
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import zstandard

OUT = Path(__file__).parent / "bad"
N = 110


def clean(n: int = N, seed: int = 0, start: str = "2021-01-04") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.015, n))), 2)
    open_ = np.round(np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.003, n)), 2)
    high = np.round(np.maximum(open_, close) * (1 + rng.uniform(0.001, 0.02, n)), 2)
    low = np.round(np.minimum(open_, close) * (1 - rng.uniform(0.001, 0.02, n)), 2)
    vol = rng.integers(100_000, 2_000_000, n)
    dates = pd.bdate_range(start, periods=n).strftime("%Y-%m-%d")
    return pd.DataFrame({"Date": dates, "Open": open_, "High": high, "Low": low, "Close": close, "Volume": vol})


def csv_text(df: pd.DataFrame, **kw) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", **kw)
    return buf.getvalue()


def write(name: str, text: str | bytes) -> None:
    p = OUT / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")


def with_cell(df: pd.DataFrame, row: int, col: str, value) -> pd.DataFrame:
    df = df.astype({col: object})
    df.loc[row, col] = value
    return df


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    base = clean()

    # --- unusable files: exit 2 ---
    write("empty.csv", "")
    write("header_only.csv", "Date,Open,High,Low,Close,Volume\n")
    write("missing_volume.csv", csv_text(base.drop(columns="Volume")))
    write("no_price_column.csv", csv_text(base[["Date", "Volume"]]))
    write("no_date_column.csv", csv_text(base.drop(columns="Date")))
    write("one_row.csv", csv_text(base.iloc[:1]))
    write("too_short.csv", csv_text(base.iloc[:50]))
    write("binary_garbage.csv", bytes(np.random.default_rng(1).integers(128, 256, 400, dtype=np.uint8)))
    write("corrupt_gzip.csv.gz", gzip.compress(csv_text(base).encode(), mtime=0)[:-40])  # cut before its end
    write("corrupt_zstd.csv.zst", b"\x28\xb5\x2f\xfd" + bytes(range(60)))  # a zstd magic number, then garbage
    write("corrupt_bzip2.csv.bz2", csv_text(base).encode())  # plain text under a .bz2 name
    spaced = base.assign(Volume=[f"{v:,}".replace(",", " ") for v in base["Volume"]])
    write("space_thousands.csv", csv_text(spaced))  # every volume is "1 234 567": no number in the column
    write("all_dates_garbage.csv", csv_text(base.assign(Date="someday")))
    write("corrupt.parquet", b"PAR1" + bytes(range(200)) + b"PAR1")
    ragged = csv_text(base).splitlines(keepends=True)
    ragged[5] = ragged[5].rstrip("\n") + ",1,2\n"  # line 6 has two extra fields
    write("ragged_rows.csv", "".join(ragged))

    # --- usable files: exit 0, report as listed in tests/test_data_check.py ---
    write("semicolon_delimiter.csv", csv_text(base, sep=";"))
    write("decimal_comma.csv", csv_text(base, sep=";", decimal=","))  # "52,74": a decimal comma, sniffed
    write("compressed_gzip.csv.gz", gzip.compress(csv_text(base).encode(), mtime=0))
    write("compressed_bzip2.csv.bz2", bz2.compress(csv_text(base).encode()))
    write("compressed_zstd.csv.zst", zstandard.ZstdCompressor(level=3).compress(csv_text(base).encode()))
    big = base.assign(**{c: base[c] * 100 for c in ("Open", "High", "Low", "Close")})  # prices above 1,000
    de = pd.DataFrame({"Date": big["Date"], **{c: [f"{x:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
                                                   for x in big[c]] for c in ("Open", "High", "Low", "Close")},
                       "Volume": [f"{v:,}".replace(",", ".") for v in big["Volume"]]})
    write("decimal_comma_thousands.csv", csv_text(de, sep=";"))  # "5.274,00" and "1.234.567"
    write("quoted_thousands.csv", csv_text(base.assign(Volume=[f"{v:,}" for v in base["Volume"]])))  # "1,234,567"
    some = base.astype({"Volume": object})
    for r in (4, 30, 77):
        some.loc[r, "Volume"] = f"{base.loc[r, 'Volume']:,}".replace(",", " ")
    write("space_thousands_some_rows.csv", csv_text(some))  # lines 6, 32, 79: "1 234 567"
    late = base.copy()
    late.loc[50, "Date"] = "2087-06-02"  # line 52: a typo far beyond the file's 2021 range
    write("outlier_timestamp_late.csv", csv_text(late))
    early = base.copy()
    early.loc[80, "Date"] = "1987-03-02"  # line 82: long before the others
    write("outlier_timestamp_early.csv", csv_text(early))
    write("empty_volume.csv", csv_text(base.assign(Volume="")))  # FX/index data: no volume at all
    fx = pd.concat([base.assign(Symbol="FXA"), clean(seed=3).assign(Symbol="FXB", Volume="")])
    write("empty_volume_long.csv", csv_text(fx))  # one of two symbols has no volume
    write("zero_volume.csv", csv_text(base.assign(Volume=0)))  # "no volume" written as zeros
    adj = base.copy()
    factor = np.where(np.arange(N) < 60, 4.0, 1.0)  # a 1:4 split before line 62: Close jumps, Adj Close does not
    adj["Close"] = (base["Close"] * factor).round(2)
    for c in ("Open", "High", "Low"):
        adj[c] = (base[c] * factor).round(2)
    adj.insert(5, "Adj Close", base["Close"])
    write("adj_close_and_close.csv", csv_text(adj))
    write("tab_delimiter.csv", csv_text(base, sep="\t"))
    write("utf8_bom.csv", "\ufeff" + csv_text(base))
    mixed = base.copy()
    for r in (10, 20, 30):  # US-style dates amid ISO dates
        mixed.loc[r, "Date"] = pd.Timestamp(mixed.loc[r, "Date"]).strftime("%m/%d/%Y")
    write("mixed_date_formats.csv", csv_text(mixed))
    write("text_in_numeric.csv", csv_text(with_cell(base, 40, "Close", "abc")))  # line 42
    write("inf_value.csv", csv_text(with_cell(base, 25, "High", "inf")))  # line 27
    nan = with_cell(with_cell(base, 7, "Open", ""), 60, "Volume", "")
    write("nan_cells.csv", csv_text(nan))  # lines 9, 62
    write("negative_price.csv", csv_text(with_cell(base, 33, "Low", -1.5)))  # line 35
    write("zero_price.csv", csv_text(with_cell(base, 90, "Close", 0)))  # line 92
    write("negative_volume.csv", csv_text(with_cell(base, 15, "Volume", -100)))  # line 17
    hl = base.copy()
    hl.loc[50, ["High", "Low"]] = hl.loc[50, ["Low", "High"]].to_numpy()  # high < low on line 52
    write("high_below_low.csv", csv_text(hl))
    dup = pd.concat([base.iloc[:30], base.iloc[[29]], base.iloc[30:70], base.iloc[[69]], base.iloc[70:]])
    write("duplicate_rows.csv", csv_text(dup))  # repeats on lines 32 and 73
    uns = base.copy()
    uns.iloc[[20, 21]] = uns.iloc[[21, 20]].to_numpy()  # rows 20/21 swapped: line 23 is earlier than line 22
    write("unsorted_rows.csv", csv_text(uns))
    split = base.copy()
    split.loc[60:, ["Open", "High", "Low", "Close"]] = (split.loc[60:, ["Open", "High", "Low", "Close"]] / 4).round(2)
    split.loc[60, "Open"] = split.loc[59, "Close"] / 4  # a 1:4 unadjusted split before line 62
    write("split_jump.csv", csv_text(split))
    write("huge_value.csv", csv_text(with_cell(base, 70, "Close", 1e12)))  # line 72: a bad tick
    write("overflow_number.csv", csv_text(with_cell(base, 12, "Volume", "1e999")))  # line 14: beyond float range
    blank = csv_text(base).splitlines(keepends=True)
    blank.insert(40, "\n")
    blank.insert(80, ",,,,,\n")
    write("blank_lines.csv", "".join(blank))  # lines 41 (empty) and 81 (only commas)
    tz = base.copy()
    tz["Date"] = [f"{d} 09:30:00-05:00" for d in tz["Date"]]
    write("timezone_offsets.csv", csv_text(tz))
    alias = base.rename(columns={"Date": " DATETIME ", "Close": "Adj Close", "Volume": "VOL", "Open": "OPEN"})
    write("column_aliases.csv", csv_text(alias))
    write("close_only.csv", csv_text(base[["Date", "Close", "Volume"]]))
    epoch = base.copy()
    epoch["Date"] = (pd.to_datetime(epoch["Date"]).astype("int64") // 10**9).astype(int)
    write("epoch_seconds.csv", csv_text(epoch.rename(columns={"Date": "timestamp"})))
    ymd = base.copy()
    ymd["Date"] = pd.to_datetime(ymd["Date"]).dt.strftime("%Y%m%d").astype(int)  # 20210104: YYYYMMDD integers
    ymd.loc[40, "Date"] = 2021030  # line 42: a digit short; the other 109 rows stay 2021 dates, not 1970 epochs
    write("yyyymmdd_one_malformed.csv", csv_text(ymd))
    multi = with_cell(with_cell(base, 44, "Close", "x"), 44, "Volume", -5)  # two defects in line 46
    write("two_defects_one_row.csv", csv_text(multi))
    a = base.assign(Symbol="AAA")
    b = clean(20, seed=1).assign(Symbol="BBB")
    orphan = clean(1, seed=2, start="2022-01-03").assign(Symbol="")
    write("long_format.csv", csv_text(pd.concat([a, b, orphan])))  # line 132 has no symbol; BBB is too short
    pq = base.copy()
    pq["Date"] = pd.to_datetime(pq["Date"]).dt.tz_localize("America/New_York")
    pq.loc[5, "Close"] = np.nan
    pq.to_parquet(OUT / "nan_in_parquet.parquet", index=False)  # row 6 (1-based) has no close


if __name__ == "__main__":
    main()
