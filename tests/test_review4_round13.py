"""The OHLC rule's refusal of misnamed price columns: a feed whose bars open at the previous close is no
misnaming, and a long file's misnamed symbol is named."""

import json

import numpy as np
import pandas as pd
import pytest

from hftraining.cli import main


def _bars(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    open_ = close + rng.normal(0, 0.5, n)
    return {"open": open_, "high": np.maximum(open_, close) + rng.random(n),
            "low": np.minimum(open_, close) - rng.random(n), "close": close}


def test_thin_bars_opened_at_the_previous_close_are_clipped_not_refused_as_misnamed(tmp_path, capsys):
    """A feed that opens each bar at the previous close (minute bars of a thin FX or crypto pair, a tick or
    two each) has its open outside the bar's low and high in nearly every row, yet no other order of its
    columns fits: it was read and its rows clipped (or dropped, under drop), and must still be, not refused
    with an error telling the user to rename columns that are named right."""
    rng = np.random.default_rng(0)
    n = 300
    close = 1.1 + np.cumsum(rng.normal(0, 1e-4, n))
    ticks = rng.random(n) < 0.3  # the bars with a second tick
    pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
        "open": np.r_[close[0], close[:-1]],
        "high": close + np.abs(rng.normal(0, 2e-5, n)) * ticks,
        "low": close - np.abs(rng.normal(0, 2e-5, n)) * ticks,
        "close": close, "volume": 1.0,
    }).to_csv(tmp_path / "EURUSD.csv", index=False)
    assert main(["data", "check", "--json", str(tmp_path / "EURUSD.csv")]) == 0
    rep = json.loads(capsys.readouterr().out)["files"][0]
    assert rep["rows_kept"] == n
    assert rep["rules"]["ohlc_inconsistent"]["repaired"] > n // 2


def test_a_long_files_misnamed_symbol_is_named_in_the_error(tmp_path, capsys):
    """Six symbols in one long file, one of them (E) written in Coinbase's order (its low where the open
    is): the error said "400 of 400 rows" of a 2400-row file and named neither the symbol nor a line."""
    rng = np.random.default_rng(1)
    n = 120
    frames = []
    for sym in "ABCDEF":
        b = _bars(rng, n)
        if sym == "E":
            b["open"], b["low"] = b["low"], b["open"]
        frames.append(pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=n, freq="B"), "symbol": sym,
                                    **b, "volume": 1000}))
    pd.concat(frames).to_csv(tmp_path / "panel.csv", index=False)
    assert main(["data", "check", str(tmp_path / "panel.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"in {n} of {n} rows of symbol 'E' (100%, the first in line {4 * n + 2})" in err, err
    assert "the column read as 'open' is the lowest price in 100% of rows" in err, err
    assert "'high' is the highest" not in err, err  # the column named for it is no hint


@pytest.mark.parametrize("policy", ["clip", "drop"])
def test_a_misnamed_single_file_is_still_refused_under_every_policy(tmp_path, capsys, policy):
    """The feed of the first test is no misnaming; Coinbase's order read under the usual names still is."""
    rng = np.random.default_rng(2)
    b = _bars(rng, 60)
    pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=60, freq="B"), "open": b["low"],
                  "high": b["high"], "low": b["open"], "close": b["close"], "volume": 5}).to_csv(tmp_path / "X.csv",
                                                                                                 index=False)
    assert main(["data", "check", "--set", f"ohlc_violations={policy}", str(tmp_path / "X.csv")]) == 2
    err = capsys.readouterr().err
    assert "likely misnamed" in err and "the column read as 'open' is the lowest price" in err, err
