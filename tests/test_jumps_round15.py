"""``data.jumps``: a close is judged by the last kept close, not by the row before it in the file, and four
rows in a row that jump from it to a level they agree on make a new level (the fourth is kept). A spike of
one to three bars is dropped whole and the good bar after it kept; a split under ``price_adjustment: raw``
costs three rows, not the rest of the file. ``flag`` and ``error`` flag (stop at) the rows ``drop`` drops;
the kept rows validated again lose nothing; whether a row is a jump reads no later row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.sources import Unit, read_unit
from hftraining.data.synth import synth_ohlcv

PRICES = ["open", "high", "low", "close"]


def write(path: Path, closes, adj=None) -> Path:
    """One daily bar per close (open = close, high/low 1% around it, volume 1000); ``adj``: an Adj Close column."""
    c = np.asarray(closes, dtype=np.float64)
    f = pd.DataFrame({"Date": pd.date_range("2020-01-01", periods=len(c), freq="D").strftime("%Y-%m-%d"),
                      "Open": c, "High": c * 1.01, "Low": c * 0.99, "Close": c})
    if adj is not None:
        f["Adj Close"] = adj
    f["Volume"] = 1000
    f.to_csv(path, index=False, float_format="%.17g")
    return path


def read(path: Path, **policies):
    frames, rep = read_unit(Unit("file", str(path)), DataConfig(**policies))
    return frames[path.name.split(".")[0]], rep


def jump_lines(rep) -> list[int]:
    return rep["rules"].get("jump", {}).get("rows", [])


def base(n: int = 40) -> np.ndarray:
    return 100.0 * 1.002 ** np.arange(n)  # a mild drift: no jump


@pytest.mark.parametrize("bars", [1, 2, 3])
@pytest.mark.parametrize("factor", [4.0, 0.25])
def test_a_spike_of_one_to_three_bars_is_dropped_whole_and_the_bar_after_it_kept(tmp_path, bars, factor):
    """Rows 20.. (lines 22..) four times higher (or lower) for one to three bars: ``drop`` drops exactly
    those lines and keeps every other row, the good bar right after the spike too (before, the first bar
    and the bar after the spike were dropped and the spike's second bar kept); ``flag`` lists the same
    lines and keeps every row; ``error`` stops at the spike's first line."""
    closes = base()
    closes[20:20 + bars] *= factor
    path = write(tmp_path / "X.csv", closes)
    spike = list(range(22, 22 + bars))
    f, rep = read(path, jumps="drop")
    assert jump_lines(rep) == spike and rep["rules"]["jump"]["dropped"] == bars
    np.testing.assert_allclose(f["close"].to_numpy(), np.delete(closes, np.arange(20, 20 + bars)))
    f, rep = read(path, jumps="flag")
    assert jump_lines(rep) == spike and rep["rules"]["jump"]["flagged"] == bars and len(f) == len(closes)
    with pytest.raises(DataError, match=r"line 22: close moves from .*data\.jumps=error"):
        read(path, jumps="error")


def test_a_split_under_raw_costs_three_rows_and_the_new_level_judges_the_rows_after_it(tmp_path):
    """A 4:1 split from row 30 (line 32) in Close, not in Adj Close. Under ``raw`` the split's first three
    rows are jumps and the fourth starts the new level: every later row is kept, and a two-bar spike ten
    rows after the split (lines 42, 43) is judged by the new level, dropped whole. ``flag`` lists the same
    five lines; under ``adjusted`` the split is no jump and only the spike is."""
    adj = base(60)
    adj[40:42] *= 4.0  # the spike, in both closes
    closes = adj.copy()
    closes[:30] *= 4.0  # before the split, Close is four times Adj Close
    path = write(tmp_path / "X.csv", closes, adj=adj)
    f, rep = read(path, jumps="drop", price_adjustment="raw")
    assert jump_lines(rep) == [32, 33, 34, 42, 43]
    np.testing.assert_allclose(f["close"].to_numpy(), np.delete(closes, [30, 31, 32, 40, 41]))
    _, rep = read(path, jumps="flag", price_adjustment="raw")
    assert jump_lines(rep) == [32, 33, 34, 42, 43] and rep["rules"]["jump"]["flagged"] == 5
    f, rep = read(path, jumps="drop", price_adjustment="adjusted")
    assert jump_lines(rep) == [42, 43] and len(f) == 58


def spiked(rng: np.random.Generator, seed: int, overlapping: bool) -> np.ndarray:
    """A synthetic close series with spikes of one to three bars (x3 or x4, or their inverses); separated by
    at least one clean bar, or (``overlapping``) anywhere, so that some runs of spikes last four bars or more
    and some reach other levels, and a split (x4) somewhere in half the files."""
    c = synth_ohlcv(150, seed=seed, start="2020-01-06")["close"].to_numpy().copy()
    i = int(rng.integers(1, 10))
    while i < len(c) - 4:
        bars = int(rng.integers(1, 4))
        c[i:i + bars] *= float(rng.choice([3.0, 4.0, 1 / 3, 0.25]))
        i += bars + (int(rng.integers(-2, 15)) if overlapping else int(rng.integers(1, 15)))
        i = max(i, 1)
    if overlapping and seed % 2:
        c[int(rng.integers(20, 140)):] *= 4.0
    return c


def test_the_kept_rows_validated_again_lose_nothing(tmp_path):
    """60 files with separated spikes of one to three bars, under ``jumps: drop``: the kept rows, written
    and validated again, lose no row and keep their values (before, all 60 lost more rows the
    second time). In 60 files whose spikes overlap (runs of four bars or more, other levels, a split) the
    same holds wherever no kept close is a jump from the kept close before it: a level taken in the first
    pass is one again in the second, which no rule that reads no later row tells from a spike."""
    rng = np.random.default_rng(0)
    levels, lost = 0, []
    for seed in range(120):
        overlapping = seed >= 60
        path = write(tmp_path / "X.csv", spiked(rng, seed, overlapping))
        f, rep = read(path, jumps="drop")
        kept = f["close"].to_numpy()
        if overlapping and (np.abs(np.log(kept[1:] / kept[:-1])) > 0.5).any():
            levels += 1
            continue
        again = pd.DataFrame({"timestamp": [t.strftime("%Y-%m-%d") for t in f["timestamp"]],
                              **{c: f[c] for c in [*PRICES, "volume"]}})
        again.to_csv(tmp_path / "Y.csv", index=False, float_format="%.17g")
        f2, rep2 = read(tmp_path / "Y.csv", jumps="drop")
        if rep2["rows_dropped"] or rep2["rules"]:
            lost.append(seed)
            continue
        np.testing.assert_array_equal(f2[[*PRICES, "volume"]].to_numpy(), f[[*PRICES, "volume"]].to_numpy())
    assert lost == []
    assert 0 < levels < 60  # both kinds of overlapping file were seen


def test_a_row_is_judged_by_earlier_rows_only_and_flag_and_error_name_the_rows_drop_drops(tmp_path):
    """Files with overlapping spikes and splits, cut after a random row, or with other prices (other spikes)
    after it: the rows kept up to that row and the jump lines up to it are the same in all three, under
    ``drop`` and ``flag``. ``flag`` lists the lines ``drop`` drops, and ``error`` names the first."""
    rng = np.random.default_rng(1)
    for seed in range(30):
        closes = spiked(rng, seed, overlapping=True)
        cut = int(rng.integers(20, 140))
        other = spiked(rng, seed + 100, overlapping=True)
        lines_by_policy = {}
        for policy in ("drop", "flag"):
            seen = []
            for name, body in (("A", closes), ("B", closes[:cut]), ("C", np.r_[closes[:cut], other[cut:]])):
                f, rep = read(write(tmp_path / f"{name}.csv", body), jumps=policy)
                last = pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=cut - 1)  # row cut - 1, line cut + 1
                seen.append((f.loc[f["timestamp"] <= last, "close"].tolist(),
                             [x for x in jump_lines(rep) if x <= cut + 1]))
                if name == "A":
                    lines_by_policy[policy] = jump_lines(rep)
            assert seen[0] == seen[1] == seen[2], (seed, policy)
        assert lines_by_policy["drop"] == lines_by_policy["flag"], seed
        if lines_by_policy["drop"]:
            with pytest.raises(DataError, match=rf"line {lines_by_policy['drop'][0]}: close moves from"):
                read(tmp_path / "A.csv", jumps="error")
