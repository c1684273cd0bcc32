"""The ``market`` features across exchanges and calendars: causal in time, not only in row order.

A daily file of plain dates (``2024-01-08``, read as UTC midnight) says on which day a bar closed, not
when; a file stamped at its closes (Tokyo at 06:00 UTC, New York at 21:00 UTC) says when. Beside such
instants, a date is known once its UTC day is over: a Tokyo close never reads the New York bar of its
own date, which closes 15 hours later."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.features import market_columns
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv

DAY = 86400 * 10**9
SPECS = ["log_return_1", "market_3_5"]


def _daily(n: int, seed: int, hour: float | None, start: str = "2024-01-01", freq: str = "B") -> pd.DataFrame:
    """``n`` daily bars: plain dates (``hour`` None) or stamped at ``hour`` UTC (their close)."""
    f = synth_ohlcv(n, seed=seed, start=start, freq=freq)
    day = pd.DatetimeIndex(f["timestamp"]).tz_localize(None).normalize()
    f["timestamp"] = (day if hour is None else day + pd.Timedelta(hours=hour)).tz_localize("UTC")
    return f


def _known_at(stamps: pd.Series, is_date: bool) -> np.ndarray:
    """When each bar is known (int64 ns): a date at the end of its UTC day, an instant when stamped."""
    ns = pd.DatetimeIndex(stamps).as_unit("ns").asi8
    return ns + DAY if is_date else ns


def _move_after(frames: dict[str, pd.DataFrame], kinds: dict[str, bool], cut: int, rng) -> dict[str, pd.DataFrame]:
    """Every bar known after the instant ``cut`` (int64 ns) repriced: its close, and so its return, changed."""
    out = {}
    for s, f in frames.items():
        f = f.copy()
        late = _known_at(f["timestamp"], kinds[s]) > cut
        f.loc[late, ["open", "high", "low", "close"]] *= rng.uniform(0.7, 1.4, (int(late.sum()), 1))
        f["high"] = f[["open", "high", "low", "close"]].max(axis=1)
        f["low"] = f[["open", "high", "low", "close"]].min(axis=1)
        out[s] = f
    return out


def _rows_known_by(rows, kinds: dict[str, bool], cut: int) -> np.ndarray:
    """Mask of the rows known at or before ``cut``."""
    keep = np.zeros(len(rows.times), dtype=bool)
    for k, s in enumerate(rows.symbols):
        sl = rows.rows(k)
        keep[sl] = (rows.times[sl] + (DAY if kinds[s] else 0)) <= cut
    return keep


def test_a_tokyo_close_never_reads_the_new_york_date_of_its_day():
    """Tokyo stamped at its 06:00 UTC close beside New York files of plain dates (closing at 21:00 UTC): the
    Tokyo row of a date read that date's New York bars (grouped by UTC stamp, the date sorted at 00:00)."""
    frames = {"TKY": _daily(80, 1, 6.0), "NYA": _daily(80, 2, None), "NYB": _daily(80, 3, None)}
    kinds = {"TKY": False, "NYA": True, "NYB": True}
    base, _ = build_rows(frames, SPECS, tz="UTC")
    k = base.symbols.index("TKY")
    for i in (20, 40, 60):
        cut = int(pd.Timestamp(frames["TKY"]["timestamp"].iloc[i]).value)  # Tokyo's close of that date
        other, _ = build_rows(_move_after(frames, kinds, cut, np.random.default_rng(i)), SPECS, tz="UTC")
        sl = base.rows(k)
        early = base.times[sl] <= cut
        np.testing.assert_array_equal(other.features[sl][early], base.features[sl][early])
        # the New York dates before it are read: the market is the panel's, not Tokyo's alone
        assert not np.array_equal(other.features[sl][~early][:1], base.features[sl][~early][:1])


def test_a_date_never_reads_the_closes_of_its_own_day():
    """The other way: Tokyo files of plain dates beside New York stamped at its 21:00 UTC close. A Tokyo date
    closes 15 hours before New York's close of it: its market reads the New York closes of the days before."""
    frames = {"TKY": _daily(80, 1, None), "NYA": _daily(80, 2, 21.0), "NYB": _daily(80, 3, 21.0)}
    base, _ = build_rows(frames, SPECS, tz="UTC")
    k = base.symbols.index("TKY")
    sl = base.rows(k)
    for i in (20, 40, 60):
        day = pd.Timestamp(frames["TKY"]["timestamp"].iloc[i]).value
        moved = {s: f.copy() for s, f in frames.items()}
        for s in ("NYA", "NYB"):
            late = pd.DatetimeIndex(moved[s]["timestamp"]).as_unit("ns").asi8 >= day  # from that day's close on
            moved[s].loc[late, ["open", "high", "low", "close"]] *= 1.3
        other, _ = build_rows(moved, SPECS, tz="UTC")
        early = base.times[sl] <= day
        np.testing.assert_array_equal(other.features[sl][early], base.features[sl][early])


def test_an_hourly_bar_never_reads_the_daily_date_of_its_day():
    """Hourly bars (instants) beside a daily file of dates: the bars of a day read the daily bar of the
    day before, never that day's (it closes after them)."""
    hourly = synth_ohlcv(24 * 40, seed=5, start="2024-01-01", freq="1h")
    daily = _daily(40, 6, None, freq="D")
    frames, kinds = {"H": hourly, "D": daily}, {"H": False, "D": True}
    base, _ = build_rows(frames, SPECS, tz="UTC")
    for i in (10, 25):
        day = int(pd.Timestamp(daily["timestamp"].iloc[i]).value)
        moved = dict(frames, D=daily.copy())
        moved["D"].loc[i:, ["open", "high", "low", "close"]] *= 1.5
        other, _ = build_rows(moved, SPECS, tz="UTC")
        k = base.symbols.index("H")
        sl = base.rows(k)
        on_or_before = base.times[sl] < day + DAY  # the hourly bars up to the end of the moved date's day
        np.testing.assert_array_equal(other.features[sl][on_or_before], base.features[sl][on_or_before])
        assert not np.array_equal(other.features[sl][~on_or_before], base.features[sl][~on_or_before])


def _random_panel(rng) -> tuple[dict[str, pd.DataFrame], dict[str, bool]]:
    """2-5 symbols, each daily bars of plain dates or stamped at a close hour (Tokyo's, London's, New York's,
    a coin's midnight), business or calendar days, some listed late or with missing days, or hourly bars."""
    frames, kinds = {}, {}
    for j in range(int(rng.integers(2, 6))):
        kind = rng.choice(["date", "instant", "hourly"], p=[0.45, 0.4, 0.15])
        if kind == "hourly":
            f = synth_ohlcv(24 * 50, seed=int(rng.integers(1e6)), start="2024-01-03", freq="1h")
        else:
            hour = None if kind == "date" else float(rng.choice([6.0, 16.5, 21.0, 23.0]))
            f = _daily(60, int(rng.integers(1e6)), hour, start=str(rng.choice(["2024-01-01", "2024-01-10"])),
                       freq=str(rng.choice(["B", "D"])))
        drop = rng.choice(len(f), size=int(rng.integers(0, 4)), replace=False)
        f = f.drop(index=f.index[drop]).reset_index(drop=True)
        frames[f"S{j}"], kinds[f"S{j}"] = f, kind == "date"
    return frames, kinds


@pytest.mark.parametrize("seed", range(12))
def test_no_market_value_changes_when_any_symbol_changes_after_its_instant(seed):
    """Every row known at an instant (an instant stamped then or before, a date whose day is over) keeps its
    bits when every bar of every symbol known after it is repriced or removed."""
    rng = np.random.default_rng(seed)
    frames, kinds = _random_panel(rng)
    base, _ = build_rows(frames, SPECS, tz="UTC")
    lo, hi = np.percentile(base.times, [20, 85]).astype(np.int64)
    for cut in sorted(rng.integers(lo, hi, 3).tolist()):
        keep = _rows_known_by(base, kinds, cut)
        for other in (_move_after(frames, kinds, cut, rng),
                      {s: f[_known_at(f["timestamp"], kinds[s]) <= cut].reset_index(drop=True) for s, f in frames.items()}):
            rows, _ = build_rows(other, SPECS, tz="UTC")
            for k, s in enumerate(base.symbols):
                if s not in rows.symbols:
                    continue
                a, b = base.rows(k), rows.rows(rows.symbols.index(s))
                mine = keep[a]
                n = int(mine.sum())
                np.testing.assert_array_equal(rows.features[b][:n], base.features[a][mine], err_msg=f"{s} cut {cut}")


def _reference(frames: dict[str, pd.DataFrame], kinds: dict[str, bool], w: int) -> dict[tuple[str, int], tuple]:
    """By the definition, one row at a time: an instant's window is the last ``w`` dates known by its stamp
    (dates at their day's end, before an instant stamped then), a date's the dates up to its own and the
    instants before its day began; each date's universe return log(mean exp r) over its symbols."""
    long = pd.concat([pd.DataFrame({"s": s, "t": pd.DatetimeIndex(f["timestamp"]).as_unit("ns").asi8,
                                    "r": np.log(f["close"]).diff(), "date": kinds[s]}) for s, f in frames.items()])
    long = long.dropna(subset=["r"])
    uni = long.groupby(["t", "date"])["r"].apply(lambda x: np.log(np.exp(x).mean()))
    groups = pd.DataFrame({"t": [g[0] for g in uni.index], "date": [g[1] for g in uni.index], "e": uni.to_numpy()})
    out = {}
    for _, g in groups.iterrows():
        if g["date"]:
            seen = groups[(groups["date"] & (groups["t"] <= g["t"])) | (~groups["date"] & (groups["t"] < g["t"]))]
            seen = seen.assign(order=seen["t"], tie=~seen["date"])
        else:
            known = np.where(groups["date"], groups["t"] + DAY, groups["t"])
            seen = groups[known <= g["t"]].assign(order=known[known <= g["t"]])
            seen = seen.assign(tie=~seen["date"])
        last = seen.sort_values(["order", "tie"])["e"].to_numpy()[-w:]
        out[(bool(g["date"]), int(g["t"]))] = (last.sum(), last.std())
    return out


def test_the_market_of_a_panel_of_dates_and_instants_matches_its_definition():
    frames = {"TKY": _daily(40, 1, 6.0), "NYA": _daily(40, 2, None), "NYB": _daily(40, 3, None, freq="D"),
              "LON": _daily(40, 4, 16.5)}
    frames["NYA"] = frames["NYA"].drop(index=[10, 11]).reset_index(drop=True)
    kinds = {"TKY": False, "NYA": True, "NYB": True, "LON": False}
    rows, _ = build_rows(frames, ["log_return_1", "market_4"], tz="UTC")
    ref = _reference(frames, kinds, 4)
    for k, s in enumerate(rows.symbols):
        sl = rows.rows(k)
        want = np.array([ref[(kinds[s], int(t))] for t in rows.times[sl]])
        np.testing.assert_allclose(rows.features[sl, 1], want[:, 0], rtol=1e-5, atol=1e-7, err_msg=s)
        np.testing.assert_allclose(rows.features[sl, 2], want[:, 1], rtol=1e-4, atol=1e-7, err_msg=s)


def test_a_panel_of_one_kind_of_stamp_is_grouped_by_its_stamps_as_before():
    """Dates alone, or instants alone (Tokyo at 06:00 beside New York at 21:00), are ordered by their stamps:
    marking every row a date changes nothing."""
    r = np.random.default_rng(0).normal(0, 0.01, 30)
    t = np.repeat(np.arange(10) * DAY, 3) + np.tile([0, 6, 21], 10) * 3600 * 10**9
    plain = market_columns(r, t, (3,))
    for marks in (np.zeros(30, bool), np.ones(30, bool)):
        got = market_columns(r, t, (3,), marks)
        for c in plain:
            np.testing.assert_array_equal(got[c], plain[c])


def test_the_feature_store_orders_dates_and_instants_as_the_rows_in_memory(tmp_path):
    """The store's entry holds the market of a mixed panel as the in-memory build computes it."""
    from hftraining.data.pipeline import data_rows

    folder = tmp_path / "data"
    folder.mkdir()
    frames = {"TKY": _daily(80, 1, 6.0), "NYA": _daily(80, 2, None), "NYB": _daily(80, 3, None)}
    for s, f in frames.items():
        f = f.copy()
        f["timestamp"] = [t.strftime("%Y-%m-%d") if s != "TKY" else t.strftime("%Y-%m-%dT%H:%M:%SZ")
                          for t in f["timestamp"]]
        f.to_csv(folder / f"{s}.csv", index=False)
    d = dataclasses.replace(DataConfig(), data_dir=str(folder), features=SPECS, cache_dir=str(tmp_path / "c"))
    stored, rep = data_rows(d)
    memory, _ = data_rows(dataclasses.replace(d, cache_dir=None))
    assert rep["cache"] == "miss"
    np.testing.assert_array_equal(np.asarray(stored.features), memory.features)
    ref, _ = build_rows(frames, SPECS, tz="UTC")
    k = ref.symbols.index("TKY")
    np.testing.assert_allclose(memory.features[memory.rows(memory.symbols.index("TKY"))], ref.features[ref.rows(k)],
                               rtol=1e-6)
