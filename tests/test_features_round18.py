"""Numeric features where the doubles, the units or the file's bytes changed the value.

- Wilder's RSI through a long flat stretch (a halt of minute bars, a peg): the smoothed gain and
  loss shrink alike, so the RSI keeps its value; TA-Lib's doubles become subnormal after about
  9,500 rows of rsi_14 and the RSI wandered, then read 50, with no close moving.
- Alpha158's ratios do not depend on the price's unit: Qlib's ``+1e-12`` guard, in the data's own
  units, shrank KMID2 (1%) and SUMP5 for bars quoted at 1e-10 (a token priced in BTC).
- ``bench ett`` reads an ETT CSV saved by Excel as "CSV UTF-8" (a byte order mark, CRLF lines) as
  the same file without the mark; its header was refused as ``'\\ufeffdate,...'``.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from hftraining.cli import main
from hftraining.data.alpha158 import COLUMNS, alpha158
from hftraining.data.features import build_features, compute_features
from hftraining.data.io import sample_data_dir
from hftraining.workflows import ett


# --- RSI through a long flat stretch ---------------------------------------------------------------

def _bars(close: np.ndarray) -> pd.DataFrame:
    n = len(close)
    return pd.DataFrame({
        "timestamp": pd.date_range("2024-01-02 14:30", periods=n, freq="min", tz="UTC"),
        "open": close, "high": close, "low": close, "close": close,
        "volume": np.random.default_rng(1).uniform(1e3, 1e4, n),
    })


def decimal_rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI as TA-Lib seeds it (the mean gain and loss of the first n changes, then smoothing by
    1/n), in decimal arithmetic, whose exponents reach far below a double's (no underflow)."""
    out = np.full(len(close), np.nan)
    with localcontext() as ctx:
        ctx.prec = 40
        c = [Decimal(float(x)) for x in close]
        diff = [c[i + 1] - c[i] for i in range(len(c) - 1)]
        gain = [max(d, Decimal(0)) for d in diff]
        loss = [max(-d, Decimal(0)) for d in diff]
        g, lo = sum(gain[:n]) / n, sum(loss[:n]) / n
        for t in range(n, len(close)):
            if t > n:
                g, lo = (g * (n - 1) + gain[t - 1]) / n, (lo * (n - 1) + loss[t - 1]) / n
            out[t] = float(100 * g / (g + lo)) if g + lo > 0 else 50.0
    return out


def test_rsi_keeps_its_value_through_a_long_flat_stretch():
    rng = np.random.default_rng(0)
    walk = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    close = np.r_[walk, np.full(12_000, walk[-1]), walk[-1] * np.exp(np.cumsum(rng.normal(0, 0.01, 50)))]
    got = compute_features(_bars(close), ["rsi_14"])["rsi_14"].to_numpy()
    want = decimal_rsi(close, 14)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, equal_nan=True)  # points of RSI, 0..100
    flat = got[200:12_200]
    assert np.all(flat == got[199]) and 40 < got[199] < 46  # the RSI of the last move, not 50
    lib = talib.RSI(close, timeperiod=14)
    np.testing.assert_allclose(got[:9_000], lib[:9_000], rtol=1e-12, equal_nan=True)  # TA-Lib's, where its doubles hold
    assert np.nanmax(np.abs(lib[200:12_200] - got[199])) > 5  # TA-Lib's own value wanders there
    # rows after t change nothing up to t (a cut deep in the stretch, and one after it)
    for t in (10_500, 12_230):
        cut = compute_features(_bars(close[: t + 1]), ["rsi_14"])["rsi_14"].to_numpy()
        np.testing.assert_array_equal(cut, got[: t + 1])


def test_training_rows_of_a_long_halt_carry_the_rsi_of_its_start():
    rng = np.random.default_rng(3)
    walk = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    close = np.r_[walk, np.full(11_000, walk[-1]), walk[-1] * np.exp(np.cumsum(rng.normal(0, 0.02, 40)))]
    feats, first = build_features(_bars(close), ["rsi_14", "log_return_1"], "HALTED")
    rsi = feats["rsi_14"].to_numpy()
    halt = slice(300 - first, 11_300 - first)
    assert np.all(rsi[halt] == rsi[299 - first])
    assert len(np.unique(rsi[halt])) == 1


# --- Alpha158: the same columns in any price unit --------------------------------------------------

def _sample(symbol: str = "AEM", rows: int = 300) -> tuple[np.ndarray, ...]:
    """The file's last ``rows`` bars, rows 200..214 halted: one price (high = low), no volume."""
    f = pd.read_csv(sample_data_dir() / f"{symbol}.csv").iloc[-rows:]
    o, h, lo, c, v = (np.array(f[k], dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    for a in (o, h, lo, c):
        a[200:215] = c[199]
    v[200:215] = 0.0
    return o, h, lo, c, v


# CORR is Qlib's Corr($close, Log($volume+1)): the +1 is in the volume's unit, so volumes are not rescaled
@pytest.mark.parametrize("price", [1e-10, 1e-8, 1e-4, 1e4, 1e10])
def test_alpha158_columns_do_not_depend_on_the_price_unit(price):
    o, h, lo, c, v = _sample()
    base = alpha158(o, h, lo, c, v)
    moved = alpha158(o * price, h * price, lo * price, c * price, v)
    for name in COLUMNS:
        np.testing.assert_allclose(moved[name][60:], base[name][60:], rtol=1e-9, atol=1e-12, err_msg=name)
    # a denominator of 0 (a bar of one price, a window without moves or volume): Qlib's 0, in any unit
    assert np.isfinite(np.column_stack([moved[k] for k in COLUMNS])[60:]).all()
    for name in ("KMID2", "KUP2", "KLOW2", "KSFT2"):
        assert np.all(moved[name][200:215] == 0.0), name
    for d in (5, 10):  # windows inside the halt (its first row moved from the close before)
        for name in ("RSV", "SUMP", "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD"):
            assert np.all(moved[f"{name}{d}"][200 + d : 215] == 0.0), f"{name}{d}"


# --- ETT files saved by Excel ----------------------------------------------------------------------

def _etth1(folder: Path, rows: int = 48, bom: bool = False, newline: str = "\n") -> Path:
    rng = np.random.default_rng(0)
    dates = np.datetime64("2016-07-01T00:00") + np.arange(rows) * np.timedelta64(1, "h")
    lines = [",".join(ett.COLUMNS)]
    for d, x in zip(dates, rng.normal(size=(rows, 7))):
        lines.append(str(d).replace("T", " ") + ":00," + ",".join(f"{y:.3f}" for y in x))
    folder.mkdir(parents=True, exist_ok=True)
    text = newline.join(lines) + newline
    (folder / "ETTh1.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return folder


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_an_ett_file_with_a_byte_order_mark_reads_as_the_same_file(tmp_path: Path, newline: str):
    plain = ett.load_ett(_etth1(tmp_path / "plain", newline=newline), "ETTh1")
    marked = ett.load_ett(_etth1(tmp_path / "excel", bom=True, newline=newline), "ETTh1")
    assert plain.shape == (48, 7)
    np.testing.assert_array_equal(marked, plain)


def test_bench_ett_reads_the_header_of_a_file_with_a_byte_order_mark(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = _etth1(tmp_path, bom=True, newline="\r\n")
    assert main(["bench", "ett", "--data", str(folder), "--model", "linear"]) == 2  # 48 rows: the protocol needs more
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "48 rows, the protocol needs 14400" in err[0] and "header" not in err[0]
