"""The validation report accounts for every row, and a repair reads no later row: random damaged files
(daily and minute bars, gzip, long files with a ``symbol`` column; duplicates, rows out of order, NaN,
Inf, text, zero and negative prices, high under low, a close outside the bar, negative volumes, bad and
empty timestamps, blank lines, repeated header lines, offsets of another zone, spikes of one to three
bars) under random policies. ``ffill`` never keeps a value of a bar that a later rule drops."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.sources import Unit, read_unit
from hftraining.data.synth import synth_ohlcv

PRICES = ["open", "high", "low", "close"]
HEADER = ["Date", "Open", "High", "Low", "Close", "Volume"]
POLICIES = dict(unsorted_timestamps=("sort", "drop"), duplicate_timestamps=("first", "last"),
                invalid_values=("drop", "ffill"), ohlc_violations=("clip", "drop"), jumps=("flag", "drop"))


def clean(n: int, seed: int, minutes: bool) -> list[list[str]]:
    f = synth_ohlcv(n, seed=seed, start="2020-01-06")
    if minutes:
        f["timestamp"] = pd.date_range("2024-03-01 09:30", periods=n, freq="min", tz="UTC")
    return [[r.timestamp.isoformat() if minutes else r.timestamp.strftime("%Y-%m-%d"),
             *(f"{getattr(r, c):.2f}" for c in PRICES), str(int(r.volume))] for r in f.itertuples(index=False)]


def corrupt(rows: list[list[str]], rng: np.random.Generator, values_only: bool = False) -> None:
    kinds = ["nan", "inf", "neg", "zero", "text", "high_low", "close_out", "neg_volume", "spike"]
    if not values_only:
        kinds += ["dup", "swap", "bad_ts", "empty_ts", "blank", "header", "zone"]
    for _ in range(int(rng.integers(1, len(rows) // 6))):
        kind, i = kinds[int(rng.integers(len(kinds)))], int(rng.integers(len(rows)))
        r, col = rows[i], 1 + int(rng.integers(4))
        if not any(r) or r[0] == "Date":
            continue
        try:
            if kind == "dup":
                rows.insert(i + int(rng.integers(0, 3)), [r[0], *(f"{float(x) * 1.01:.2f}" for x in r[1:5]), r[5]])
            elif kind == "swap" and i + 1 < len(rows):
                rows[i], rows[i + 1] = rows[i + 1], rows[i]
            elif kind in ("nan", "inf", "neg", "zero", "text"):
                r[col if kind != "inf" else 1 + int(rng.integers(5))] = {
                    "nan": "NaN", "inf": "-inf", "neg": "-1.5", "zero": "0", "text": "n/a"}[kind]
            elif kind == "high_low":
                r[2] = f"{float(r[3]) * 0.99:.2f}"
            elif kind == "close_out":
                r[4] = f"{float(r[2]) * 1.03:.2f}"
            elif kind == "neg_volume":
                r[5] = "-10"
            elif kind == "spike":
                for j in range(i, min(len(rows), i + int(rng.integers(1, 4)))):
                    rows[j][1:5] = [f"{float(x) * 3:.2f}" for x in rows[j][1:5]]
            elif kind in ("bad_ts", "empty_ts"):
                r[0] = "2020-02-30" if kind == "bad_ts" else ""
            elif kind in ("blank", "header"):
                rows.insert(i, [""] * 6 if kind == "blank" else list(HEADER))
            elif kind == "zone" and "+" in r[0]:
                r[0] = pd.Timestamp(r[0]).tz_convert("Europe/Berlin").isoformat()
        except ValueError:  # a cell damaged before: left as it is
            pass


def write(path: Path, rows: list[list[str]], symbols: list[str] | None = None) -> int:
    """The CSV file (gzip for a .gz name) → its number of data lines."""
    lines = [",".join(HEADER + (["Symbol"] if symbols else []))]
    lines += [",".join(r + ([s] if symbols else [])) if any(r) else "" for r, s in zip(rows, symbols or [""] * len(rows))]
    text = "\n".join(lines) + "\n"
    path.write_bytes(gzip.compress(text.encode())) if path.suffix == ".gz" else path.write_text(text)
    return len(lines) - 1


def write_frames(path: Path, frames: dict[str, pd.DataFrame]) -> None:
    out = pd.concat([f.assign(symbol=s) for s, f in frames.items()])
    out["timestamp"] = [t.isoformat() for t in out["timestamp"]]
    out.to_csv(path, index=False, float_format="%.17g")


def damaged(seed: int, tmp_path: Path) -> tuple[Path, int, DataConfig]:
    rng = np.random.default_rng(seed)
    minutes, long = seed % 2 == 0, seed % 4 == 1
    cfg = DataConfig(**{k: v[int(rng.integers(2))] for k, v in POLICIES.items()})
    symbols = None
    if long:
        rows, symbols = [], []
        for k, sym in enumerate(("AAA", "BBB")):
            part = clean(150, seed + k, minutes)
            corrupt(part, rng)
            rows, symbols = rows + part, symbols + [sym] * len(part)
        order = np.argsort(rng.random(len(rows)), kind="stable") if seed % 8 == 5 else np.arange(len(rows))
        rows, symbols = [rows[i] for i in order], [symbols[i] for i in order]
    else:
        rows = clean(200, seed, minutes)
        corrupt(rows, rng)
    path = tmp_path / (f"S{seed}.csv" + (".gz" if seed % 3 == 0 else ""))
    return path, write(path, rows, symbols), cfg


@pytest.mark.parametrize("block", range(4))
def test_every_line_is_accounted_for_and_the_kept_rows_validate_clean(tmp_path, block):
    """rows_in is the file's data lines (gzip or not, a long file's too) and equals kept + dropped; every
    listed line is one of the file's, each rule's count covers its lines, and no line is dropped by two
    rules. The kept rows, validated again under the same policies, lose nothing and are repaired nowhere
    (``jumps: drop`` judges each close by the row before it in one pass, so it is left out here)."""
    for seed in range(block * 10, block * 10 + 10):
        path, lines, cfg = damaged(seed, tmp_path)
        frames, rep = read_unit(Unit("file", str(path)), cfg)
        assert rep["rows_in"] == lines == rep["rows_kept"] + rep["rows_dropped"], (seed, rep["rows_in"], lines)
        assert rep["rows_kept"] == sum(map(len, frames.values()))
        dropped = []
        for rule, e in rep["rules"].items():
            assert all(2 <= x <= lines + 1 for x in e["rows"]), (seed, rule)
            assert e["dropped"] + e["repaired"] + e["flagged"] >= len(e["rows"]) == len(set(e["rows"]))
            if e["dropped"] and not (e["repaired"] or e["flagged"]):
                dropped += e["rows"]
        assert len(dropped) == len(set(dropped)), seed
        # a new level that jumps: drop took (a kept close that jumps from the one before) is a jump again
        if not frames or cfg.jumps == "drop" and any(
                (np.abs(np.diff(np.log(f["close"].to_numpy()))) > cfg.jump_threshold).any() for f in frames.values()):
            continue
        again = tmp_path / f"again{seed}.csv"
        write_frames(again, frames)
        frames2, rep2 = read_unit(Unit("file", str(again)), cfg)
        assert {r: e for r, e in rep2["rules"].items() if e["dropped"] or e["repaired"]} == {}, (seed, rep2["rules"])
        for sym, f in frames.items():
            np.testing.assert_allclose(frames2[sym][[*PRICES, "volume"]].to_numpy(), f[[*PRICES, "volume"]].to_numpy())


@pytest.mark.parametrize("ffill_policies", [dict(ohlc_violations="clip", jumps="flag"),
                                            dict(ohlc_violations="drop", jumps="flag"),
                                            dict(ohlc_violations="clip", jumps="drop"),
                                            dict(ohlc_violations="drop", jumps="drop")])
def test_a_repair_at_a_row_reads_no_later_row(tmp_path, ffill_policies):
    """Files whose rows are in order with damaged values only: the rows kept before a line, and each of
    their values (filled, clipped), are the same whatever the file holds after that line."""
    cfg = DataConfig(invalid_values="ffill", **ffill_policies)
    for seed in range(6):
        rng = np.random.default_rng(1000 + seed)
        rows = clean(200, seed, minutes=False)
        corrupt(rows, rng, values_only=True)
        cut = int(rng.integers(60, 180))
        later = clean(200, seed + 50, minutes=False)  # other prices after the cut, same dates
        corrupt(later, rng, values_only=True)
        mixed = rows[:cut] + [[r[0], *o[1:]] for r, o in zip(rows[cut:], later[cut:])]
        seen = []
        for name, body in (("a", rows), ("b", rows[:cut]), ("c", mixed)):
            write(tmp_path / f"{name}.csv", body)
            frames, _ = read_unit(Unit("file", str(tmp_path / f"{name}.csv")), cfg)
            f = frames[f"{name}"]
            seen.append(f[f["timestamp"] <= pd.Timestamp(rows[cut - 1][0], tz="UTC")].reset_index(drop=True))
        pd.testing.assert_frame_equal(seen[0], seen[1])
        pd.testing.assert_frame_equal(seen[0], seen[2])


def _days(n: int = 30) -> list[list[str]]:
    return [[f"2024-01-{d:02d}" if d <= 31 else f"2024-02-{d - 31:02d}", "100", "101", "99", "100", "1000"]
            for d in range(1, n + 1)]


def test_ffill_keeps_no_price_of_a_spike_the_jump_rule_drops(tmp_path):
    """Line 6 is a spike (4×) that ``jumps: drop`` drops; line 7 has no prices and line 8 no close. They
    are filled from line 5, the previous row kept, not from the spike: no kept bar holds 400, and the
    good bar of line 9 is kept (filled with the spike's close, line 8 made a jump down to it)."""
    rows = _days()
    rows[4][1:5] = ["400", "401", "399", "400"]
    rows[5][1:5] = ["", "", "", ""]
    rows[6][4] = ""
    write(tmp_path / "X.csv", rows)
    frames, rep = read_unit(Unit("file", str(tmp_path / "X.csv")), DataConfig(invalid_values="ffill", jumps="drop"))
    f = frames["X"]
    assert f[PRICES].to_numpy().max() == 101
    assert rep["rules"]["nan_or_inf"]["rows"] == [7, 8] and rep["rules"]["nan_or_inf"]["repaired"] == 2
    assert pd.Timestamp("2024-01-08", tz="UTC") in set(f["timestamp"])  # line 9
    assert pd.Timestamp("2024-01-07", tz="UTC") in set(f["timestamp"]) and rep["rows_kept"] == 29


def test_ffill_fills_no_close_from_a_bar_the_ohlc_rule_drops(tmp_path):
    """Line 6's high is under its low (``ohlc_violations: drop`` drops it) and its close is 150; line 7's
    close is empty. It takes line 5's close, 100, and is kept: filled with 150 it stood outside its own
    bar and was dropped as well."""
    rows = _days()
    rows[4][1:5] = ["100", "90", "99", "150"]
    rows[5][4] = ""
    write(tmp_path / "X.csv", rows)
    frames, rep = read_unit(Unit("file", str(tmp_path / "X.csv")),
                            DataConfig(invalid_values="ffill", ohlc_violations="drop"))
    f = frames["X"].set_index("timestamp")
    assert f.loc[pd.Timestamp("2024-01-06", tz="UTC"), "close"] == 100
    assert rep["rules"]["ohlc_inconsistent"] == {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [6]}
    assert rep["rules"]["nan_or_inf"] == {"dropped": 0, "repaired": 1, "flagged": 0, "rows": [7]}


def test_a_level_change_with_every_other_bar_empty_keeps_the_new_level_in_linear_time(tmp_path):
    """A close that moves from 100 to 300 and holds, every other bar's prices empty, under ffill and jumps: drop.
    Barring one dropped lender per pass chained: each pass filled the next empty bar from the old 100, which
    made the next 300 bar a jump; 2,000 rows took 5 s (10,000: 87 s) and every 300 bar was dropped. Now the
    passes are bounded, the new level is kept after a few rows and the time is linear."""
    import time  # noqa: PLC0415

    days = pd.bdate_range("1990-01-01", periods=4000)
    lines = ["Date,Open,High,Low,Close,Volume", f"{days[0]:%Y-%m-%d},100,101,99,100,1000"]
    lines += [f"{d:%Y-%m-%d}," + (",,,," if i % 2 else "300,303,297,300,") + "1000" for i, d in enumerate(days[1:], 1)]
    (tmp_path / "X.csv").write_text("\n".join(lines) + "\n")
    t = time.perf_counter()
    frames, rep = read_unit(Unit("file", str(tmp_path / "X.csv")), DataConfig(invalid_values="ffill", jumps="drop"))
    assert time.perf_counter() - t < 3.0
    close = frames["X"]["close"].to_numpy()
    assert close[-1] == 300 and (close[20:] == 300).all()
    assert rep["rows_kept"] > 3980 and rep["rows_kept"] + rep["rows_dropped"] == 4000
