"""The feature store (memory-mapped rows keyed by the inputs' contents) and the lazy readers
(hive-partitioned Parquet datasets, long Parquet files) it reads through."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import ConfigError, DataError
from hftraining.core.config import Config, validate as validate_config
from hftraining.data import sources
from hftraining.data.pipeline import data_rows, prepare
from hftraining.data.synth import synth_frames, write_synth

SMALL = dict(sequence_length=20, prediction_horizon=3)


def _rows_equal(a, b):
    assert a.symbols == b.symbols
    for k in range(len(a.symbols)):
        for name in ("features", "returns", "times", "close"):
            np.testing.assert_array_equal(np.asarray(getattr(a, name)[a.rows(k)]), np.asarray(getattr(b, name)[b.rows(k)]))


def _csv_dir(tmp_path, symbols=3, rows=200):
    write_synth(tmp_path / "csv", symbols, rows, seed=3)
    return tmp_path / "csv"


def test_store_hits_maps_and_rebuilds_only_on_content_or_feature_change(tmp_path):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path)), cache_dir=str(tmp_path / "cache"), **SMALL)
    first, rep = data_rows(d)
    assert rep["cache"] == "miss"
    again, rep = data_rows(d)
    assert rep["cache"] == "hit" and rep["rows_in"] == 600
    assert isinstance(again.features, np.memmap) and not again.features.flags.writeable
    _rows_equal(first, again)
    stored = {p.suffix for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert stored <= {".f32", ".i64", ".f64", ".b1", ".json", ".lock"}  # raw arrays and JSON: never pickle
    # settings that do not change the rows reuse the entry
    for change in (dict(train_ratio=0.6), dict(embargo=3), dict(scaler="robust"), dict(batch_size=7),
                   dict(max_gap="2D"), dict(num_workers=2)):
        assert data_rows(dataclasses.replace(d, **change))[1]["cache"] == "hit", change
    # one feature parameter: a new entry
    assert data_rows(dataclasses.replace(d, features=["rsi_10", "log_return_1"]))[1]["cache"] == "miss"
    # one input byte: a new entry, with the new value
    path = tmp_path / "csv" / "SYN001.csv"
    lines = path.read_text().splitlines()
    cells = lines[-1].split(",")
    cells[5] = str(float(cells[5]) + 1)  # the volume of the last row
    path.write_text("\n".join(lines[:-1] + [",".join(cells)]) + "\n")
    changed, rep = data_rows(d)
    assert rep["cache"] == "miss"
    assert changed.symbols == first.symbols
    assert data_rows(d)[1]["cache"] == "hit"


def test_damaged_entry_is_rebuilt(tmp_path):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    data_rows(d)
    feats = next((tmp_path / "cache").rglob("features.f32"))
    feats.write_bytes(feats.read_bytes()[:-7])  # truncated
    rows, rep = data_rows(d)
    assert rep["cache"] == "rebuilt"
    _rows_equal(data_rows(dataclasses.replace(d, cache_dir=None))[0], rows)


@pytest.mark.parametrize("name", ["features.f32", "returns.f32", "times.i64", "close.f64", "index.json"])
def test_one_byte_changed_in_an_entry_is_detected_set_aside_and_rebuilt(tmp_path, name, caplog):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    intact, _ = data_rows(d)
    intact = dataclasses.replace(intact, **{k: np.array(getattr(intact, k)) for k in ("features", "returns", "times", "close")})
    entry = next(p.parent for p in (tmp_path / "cache").rglob("index.json"))
    path = entry / name
    before = path.stat()
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if name != "index.json" else data.index(b'"lengths": [') + 13  # a digit of a length
    data[at] = data[at] ^ 0x01 if name != "index.json" else ord("9") if data[at] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with its modification time put back
    rows, rep = data_rows(d)
    assert rep["cache"] == "rebuilt"
    _rows_equal(intact, rows)
    rows, rep = data_rows(d)
    assert rep["cache"] == "hit"  # the rebuilt entry, trusted from then on
    _rows_equal(intact, rows)
    assert (entry.parent / f"{entry.name}.damaged").is_dir()
    assert any("is damaged" in r.getMessage() and name in r.getMessage() for r in caplog.records)


def test_a_changed_byte_never_reaches_the_rows(tmp_path):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    intact, _ = data_rows(d)
    intact = dataclasses.replace(intact, **{k: np.array(getattr(intact, k)) for k in ("features", "returns", "times", "close")})
    feats = next((tmp_path / "cache").rglob("features.f32"))
    raw = bytearray(feats.read_bytes())
    raw[40:44] = np.float32(1.9e38).tobytes()  # one value made absurd, the file's size unchanged
    feats.write_bytes(bytes(raw))
    rows, rep = data_rows(d)
    assert rep["cache"] == "rebuilt"
    _rows_equal(intact, rows)


def test_an_intact_entry_is_not_hashed_again(tmp_path, monkeypatch):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    data_rows(d)
    from hftraining.data import store

    hashed = []
    real = store._digest
    monkeypatch.setattr(store, "_digest", lambda p: hashed.append(p.name) or real(p))
    assert data_rows(d)[1]["cache"] == "hit"
    assert [h for h in hashed if not h.endswith(".csv")] == []  # the stamps matched: a few stat calls


def test_stale_temporary_folders_are_removed_by_the_next_build(tmp_path):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = [cache / ".0123456789abcdef0123456789abcdef.deadbeef.tmp", cache / ".fedcba98765432100123456789abcdef.cafe.tmp"]
    for p in dead:
        (p / "features.f32").parent.mkdir(parents=True)
        (p / "features.f32").write_bytes(b"\0" * 4096)
    assert data_rows(d)[1]["cache"] == "miss"
    assert not any(p.exists() for p in dead)


def test_store_in_memory_and_workers_give_the_same_rows_and_windows(tmp_path):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 4)), cache_dir=str(tmp_path / "cache"), **SMALL)
    mem = dataclasses.replace(d, cache_dir=None)
    rows_mem, rep = data_rows(mem)
    assert rep["cache"] == "off" and not isinstance(rows_mem.features, np.memmap)
    rows_pool, rep = data_rows(dataclasses.replace(d, num_workers=2))
    assert rep["cache"] == "miss"
    _rows_equal(rows_mem, rows_pool)
    a, b = prepare(mem), prepare(d)
    pa_, pb_ = a.preprocessing.to_dict(), b.preprocessing.to_dict()
    assert {**pa_, "data": None} == {**pb_, "data": None}  # the data sections differ in cache_dir only
    # a warm start maps the window index and the scaler statistics the first run left in the entry
    c = prepare(d)
    assert c.preprocessing.to_dict() == pb_
    store = Path(b.report["store"])
    assert len(list(store.glob("windows-*.ends"))) == 3 and len(list(store.glob("stats-*.json"))) == 1
    for split in ("train", "val", "test"):
        wa, wb, wc = a.split(split), b.split(split), c.split(split)
        assert isinstance(wc.ends, np.memmap) and isinstance(wc.symbol_ids, np.memmap)
        for w in (wb, wc):
            np.testing.assert_array_equal(wa.ends, w.ends)
            np.testing.assert_array_equal(wa.symbol_ids, w.symbol_ids)
            np.testing.assert_array_equal(wa.segment_first, w.segment_first)
        idx = np.arange(min(len(wa), 50))
        ba, bb, bc = wa.batch(idx), wb.batch(idx), wc.batch(idx)
        for key in ("x", "past", "y"):
            assert ba[key].equal(bb[key]) and ba[key].equal(bc[key])
    # a split at other dates indexes (and remembers) its own windows
    other = prepare(dataclasses.replace(d, train_ratio=0.5))
    assert len(other.train) < len(a.train) and len(list(store.glob("windows-*.ends"))) == 6


def _hive(tmp_path, frames):
    root = tmp_path / "hive"
    for sym, f in frames.items():
        (root / f"symbol={sym}").mkdir(parents=True)
        half = len(f) // 2  # two files per partition, read in name order
        pq.write_table(pa.Table.from_pandas(f.iloc[:half], preserve_index=False), root / f"symbol={sym}" / "part-0.parquet")
        pq.write_table(pa.Table.from_pandas(f.iloc[half:], preserve_index=False), root / f"symbol={sym}" / "part-1.parquet")
    return root


def _long(tmp_path, frames):
    long = pd.concat([f.assign(symbol=s) for s, f in frames.items()], ignore_index=True)
    path = tmp_path / "long.parquet"
    pq.write_table(pa.Table.from_pandas(long, preserve_index=False), path, row_group_size=100)
    return path


def test_hive_dataset_and_long_parquet_read_like_a_folder_of_files(tmp_path):
    frames = synth_frames(3, 200, seed=5)
    (tmp_path / "csv").mkdir()
    for s, f in frames.items():
        pq.write_table(pa.Table.from_pandas(f, preserve_index=False), tmp_path / "csv" / f"{s}.parquet")
    base = DataConfig(cache_dir=None, **SMALL)
    ref, _ = data_rows(dataclasses.replace(base, data_dir=str(tmp_path / "csv")))
    for src in (_hive(tmp_path, frames), _long(tmp_path, frames)):
        rows, rep = data_rows(dataclasses.replace(base, data_dir=str(src)))
        _rows_equal(ref, rows)
        assert rep["rows_in"] == 600 and len(rep["files"]) == 3


def test_symbols_and_date_range_are_pushed_down(tmp_path, monkeypatch):
    frames = synth_frames(4, 300, seed=5)
    hive = _hive(tmp_path, frames)
    read = []
    real = sources._scan
    monkeypatch.setattr(sources, "_scan", lambda files, *a: read.extend(files) or real(files, *a))
    t = frames["SYN002"]["timestamp"]
    d = DataConfig(data_dir=str(hive), cache_dir=None, symbols=["SYN002", "SYN000"],
                   start_date=str(t.iloc[50].date()), end_date=str(t.iloc[250].date()), **SMALL)
    rows, rep = data_rows(d)
    assert rows.symbols == ["SYN000", "SYN002"]  # sorted by name, whatever the order of data.symbols
    assert {p.parent.name for p in read} == {"symbol=SYN002", "symbol=SYN000"}  # no other partition opened
    assert rep["rows_in"] == 400  # only the rows in the date range were read
    lo, hi = pd.Timestamp(d.start_date, tz="UTC").value, pd.Timestamp(d.end_date, tz="UTC").value
    assert (rows.times >= lo).all() and (rows.times < hi).all()
    with pytest.raises(DataError, match="data.symbols: 'NOPE' not found"):
        data_rows(dataclasses.replace(d, symbols=["NOPE"]))
    # the same range on CSV files is cut after reading
    csv = _csv_dir(tmp_path, 2, 300)
    rows, _ = data_rows(dataclasses.replace(d, data_dir=str(csv), symbols=None, start_date="2000-03-01", end_date=None))
    assert rows.times.min() >= pd.Timestamp("2000-03-01", tz="UTC").value


@pytest.mark.parametrize("kind", ["text", "date32", "timestamp"])
def test_the_date_range_cuts_long_parquet_and_hive_like_files_whatever_the_date_type(tmp_path, kind):
    """Pushing the range into a Parquet scan is an optimisation: a date column stored as text or as
    dates is cut too, and a symbol with no row in the range is what a file cut after validation leaves."""
    frames = synth_frames(3, 300, seed=5)
    frames["SYN001"] = frames["SYN001"].iloc[:100]  # ends before the range
    t = frames["SYN000"]["timestamp"]
    d = DataConfig(cache_dir=None, start_date=str(t.iloc[120].date()), end_date=str(t.iloc[260].date()), **SMALL)
    (tmp_path / "csv").mkdir()
    for s, f in frames.items():
        f.to_csv(tmp_path / "csv" / f"{s}.csv", index=False)
    ref, _ = sources.load_and_validate(dataclasses.replace(d, data_dir=str(tmp_path / "csv")))
    assert len(ref["SYN000"]) == 140 and len(ref["SYN001"]) == 0
    typed = {"text": lambda ts: ts.dt.strftime("%Y-%m-%d"), "date32": lambda ts: ts.dt.date, "timestamp": lambda ts: ts}[kind]
    stored = {s: f.assign(timestamp=typed(f["timestamp"])) for s, f in frames.items()}
    for src in (_long(tmp_path, stored), _hive(tmp_path, stored)):
        got, _ = sources.load_and_validate(dataclasses.replace(d, data_dir=str(src)))
        assert sorted(got) == sorted(ref), src
        for s in ref:
            pd.testing.assert_frame_equal(got[s], ref[s])
        rows, rep = data_rows(dataclasses.replace(d, data_dir=str(src)))
        assert rows.symbols == ["SYN000", "SYN002"] and rep["skipped_symbols"] == ["SYN001"]
        assert rows.times.min() >= pd.Timestamp(d.start_date, tz="UTC").value
        assert rows.times.max() < pd.Timestamp(d.end_date, tz="UTC").value


@pytest.mark.parametrize("policy", ["ffill", "drop"])
def test_the_date_range_is_cut_before_validation_in_every_layout_and_the_report_counts_what_is_read(tmp_path, policy):
    """The same rows in a CSV file, a Parquet file, a hive dataset and a long Parquet file give the
    same validated rows and the same report under a date range: a bad cell on the first row in the
    range is never filled from a row before it (CSV filled it and kept 100 rows, the pushed-down scan
    99), the report's rows are the rows in the range (CSV said 200 kept of which 100 never reached
    training), and a row without a timestamp is reported, not lost in a pushed-down scan."""
    f = synth_frames(1, 200, seed=5)["SYN000"]
    f.loc[100, "close"] = np.nan  # the first row in the range
    f.loc[101, "volume"] = np.nan
    f["timestamp"] = f["timestamp"].astype("datetime64[ns, UTC]")
    f.loc[150, "timestamp"] = pd.NaT
    start = str(f["timestamp"].iloc[100].date())
    (tmp_path / "csv").mkdir()
    f.to_csv(tmp_path / "csv" / "A.csv", index=False)
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pandas(f, preserve_index=False), tmp_path / "pq" / "A.parquet")
    layouts = {"csv": tmp_path / "csv", "parquet": tmp_path / "pq", "hive": _hive(tmp_path, {"A": f}),
               "long": _long(tmp_path, {"A": f})}
    d = DataConfig(cache_dir=None, start_date=start, invalid_values=policy, **SMALL)
    got = {name: sources.load_and_validate(dataclasses.replace(d, data_dir=str(src))) for name, src in layouts.items()}
    ref, _ = got["csv"]
    # 100 rows in the range, one of them without a timestamp; row 100 has no earlier row to fill from, and
    # row 101 none but row 100, which is dropped: both go under either policy (ffill never fills from a dropped row)
    kept, nan_dropped = 97, 2
    assert len(ref["A"]) == kept and ref["A"]["timestamp"].min() > pd.Timestamp(f["timestamp"].iloc[100])
    for name, (frames, rep) in got.items():
        pd.testing.assert_frame_equal(frames["A"], ref["A"], obj=name)
        assert (rep["rows_in"], rep["rows_kept"], rep["rows_dropped"]) == (100, kept, 100 - kept), name
        rules = {r: e["dropped"] for f_ in rep["files"] for r, e in f_["rules"].items()}
        assert rules == {"bad_timestamp": 1, "nan_or_inf": nan_dropped}, name


@pytest.mark.parametrize("codes", [False, True])
def test_a_long_parquet_file_reports_rows_without_a_symbol_and_reads_integer_codes_as_a_long_csv(tmp_path, codes):
    """A long Parquet file reads like the same rows in a long CSV file: rows whose symbol is null or
    blank are reported (missing_symbol, blank_line) instead of never being read (3 of 300 rows were
    absent from the report), and a symbol column of integer codes (7203, 6758) is read instead of
    failing with "Function 'equal' has no kernel matching input types (int64, string)"."""
    frames = synth_frames(2, 150, seed=1)
    long = pd.concat([f.assign(symbol=s) for s, f in frames.items()], ignore_index=True)
    if codes:
        long["symbol"] = long["symbol"].map({"SYN000": 7203, "SYN001": 6758}).astype("Int64")
    else:
        long.loc[20, "symbol"] = "  "
    long.loc[[10, 200], "symbol"] = None
    empty = pd.DataFrame({c: pd.Series([None], dtype=t) for c, t in long.dtypes.items()})  # no value at all
    long = pd.concat([long, empty], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(long, preserve_index=False), tmp_path / "long.parquet", row_group_size=64)
    long.to_csv(tmp_path / "long.csv", index=False)
    base = DataConfig(cache_dir=str(tmp_path / "cache"), **SMALL)
    want, want_rep = sources.load_and_validate(dataclasses.replace(base, data_dir=str(tmp_path / "long.csv")))
    got, rep = sources.load_and_validate(dataclasses.replace(base, data_dir=str(tmp_path / "long.parquet")))
    assert sorted(got) == sorted(want) == (["6758", "7203"] if codes else ["SYN000", "SYN001"])
    for sym in want:
        pd.testing.assert_frame_equal(got[sym], want[sym])
    n_missing = 2 if codes else 3
    assert (rep["rows_in"], rep["rows_dropped"]) == (want_rep["rows_in"], want_rep["rows_dropped"]) == (301, n_missing + 1)
    rules = {r: e for f in rep["files"] for r, e in f["rules"].items()}
    assert rules["missing_symbol"]["dropped"] == n_missing and rules["blank_line"]["rows"] == [301]
    assert rules["missing_symbol"]["rows"] == ([11, 201] if codes else [11, 21, 201])  # the file's row numbers
    rows, store_rep = data_rows(dataclasses.replace(base, data_dir=str(tmp_path / "long.parquet")))
    assert sorted(rows.symbols) == sorted(want) and store_rep["rows_dropped"] == n_missing + 1


def test_an_unreadable_symbol_column_or_an_empty_long_parquet_file_is_one_line(tmp_path):
    """A symbol column of lists was a pyarrow traceback (ArrowNotImplementedError); a long Parquet
    file without rows said "no symbol has enough rows ()" instead of naming the file's problem."""
    ts = pd.date_range("2020-01-01", periods=40, freq="D", tz="UTC")
    pq.write_table(pa.table({"timestamp": ts, "close": np.ones(40), "volume": np.ones(40), "symbol": [["A"]] * 40}),
                   tmp_path / "lists.parquet")
    empty = {"timestamp": pa.array([], pa.timestamp("ns")), "close": pa.array([], pa.float64()),
             "volume": pa.array([], pa.float64()), "symbol": pa.array([], pa.string())}
    pq.write_table(pa.table(empty), tmp_path / "empty.parquet")
    base = DataConfig(cache_dir=None, **SMALL)
    with pytest.raises(DataError, match=r"lists\.parquet: column 'symbol': cannot read the symbols"):
        sources.load_and_validate(dataclasses.replace(base, data_dir=str(tmp_path / "lists.parquet")))
    with pytest.raises(DataError, match=r"empty\.parquet: no data rows \(header only\)"):
        sources.load_and_validate(dataclasses.replace(base, data_dir=str(tmp_path / "empty.parquet")))


def test_long_parquet_and_hive_with_timestamps_as_the_index_read_like_files(tmp_path):
    frames = synth_frames(2, 200, seed=5)
    (tmp_path / "one").mkdir()
    for s, f in frames.items():  # pandas writes the index as a column and restores it on reading
        f.set_index("timestamp").to_parquet(tmp_path / "one" / f"{s}.parquet")
    long = pd.concat([f.assign(symbol=s) for s, f in frames.items()])
    long.set_index("timestamp").to_parquet(tmp_path / "long.parquet")
    long.set_index(["timestamp", "symbol"]).to_parquet(tmp_path / "panel.parquet")  # a long panel's usual index
    for s, f in frames.items():
        (tmp_path / "hive" / f"symbol={s}").mkdir(parents=True)
        f.set_index("timestamp").to_parquet(tmp_path / "hive" / f"symbol={s}" / "part-0.parquet")
    base = DataConfig(cache_dir=None, **SMALL)
    ref, _ = data_rows(dataclasses.replace(base, data_dir=str(tmp_path / "one")))
    for src in (tmp_path / "long.parquet", tmp_path / "panel.parquet", tmp_path / "hive"):
        rows, rep = data_rows(dataclasses.replace(base, data_dir=str(src)))
        _rows_equal(ref, rows)
        assert rep["rows_in"] == 400


@pytest.mark.parametrize("key,value,msg", [
    ("start_date", "yesterday-ish", "data.start_date: 'yesterday-ish' is not a date"),
    ("max_gap", "soon", "data.max_gap: 'soon' is not a duration"),
    ("num_workers", -1, "data.num_workers: must be >= 0"),
])
def test_bad_store_and_reader_keys_are_one_line_errors(key, value, msg):
    cfg = Config()
    setattr(cfg.data, key, value)
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        validate_config(cfg)


def test_windows_never_span_a_gap_longer_than_max_gap(tmp_path):
    # two sessions a day: 6 bars 09:30..10:20 and 6 bars 14:00..14:50; max_gap 30min cuts at lunch and overnight
    days = pd.bdate_range("2024-01-01", periods=40, tz="UTC")
    bars = [day + pd.Timedelta(hours=h, minutes=m) for day in days for h, m in
            [(9, 30 + 10 * i) for i in range(3)] + [(10, 10 * i) for i in range(3)] + [(14, 10 * i) for i in range(6)]]
    n = len(bars)
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    f = pd.DataFrame({"timestamp": bars, "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                      "volume": 1000.0})
    (tmp_path / "x").mkdir()
    f.to_csv(tmp_path / "x" / "BAR.csv", index=False)
    d = DataConfig(data_dir=str(tmp_path / "x"), cache_dir=None, sequence_length=3, prediction_horizon=2,
                   features=["log_return_1"], split="per_symbol")
    p_all = prepare(d)
    p_gap = prepare(dataclasses.replace(d, max_gap="30min"))
    max_gap = pd.Timedelta("30min").value
    for split in ("train", "val", "test"):
        ws = p_gap.split(split)
        assert 0 < len(ws) < len(p_all.split(split))
        span = ws.ends[:, None] + np.arange(-2, 3)  # inputs and targets of each window
        assert (np.diff(ws.row_times[span], axis=1) <= max_gap).all()


def _with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker``."""
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes():
                stat = (env.parent / "stat").read_text()
                if stat.split(") ")[-1].split()[0] != "Z":  # not a zombie
                    pids.append(int(env.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.slow  # 10-20 s of subprocesses; runs with `-m slow`
def test_build_workers_die_with_the_process_that_started_them(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    import uuid

    write_synth(tmp_path / "big", 8, 300_000, seed=1, freq="1min")
    marker = f"HFT_STORE_TEST={uuid.uuid4().hex}"
    code = ("from hftraining.core.config import DataConfig\nfrom hftraining.data.pipeline import data_rows\n"
            f"data_rows(DataConfig(data_dir={str(tmp_path / 'big')!r}, cache_dir={str(tmp_path / 'cache')!r}, "
            "num_workers=2, sequence_length=20, prediction_horizon=3))\n")
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(_with_marker(marker)) < 3:  # the parent and its two workers
        time.sleep(0.1)
    assert len(_with_marker(marker)) >= 3, "the build's workers never started"
    time.sleep(1.0)  # mid-build
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _with_marker(marker):
        time.sleep(0.1)
    assert _with_marker(marker) == [], "build workers outlived the killed build"


def test_an_entry_of_an_older_format_is_rebuilt_quietly(tmp_path, caplog):
    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    data_rows(d)
    index = next((tmp_path / "cache").rglob("index.json"))
    raw = json.loads(index.read_text())
    raw["format"] = 3
    index.write_text(json.dumps(raw))
    assert data_rows(d)[1]["cache"] == "miss"
    assert not list((tmp_path / "cache").glob("*.damaged"))
    assert not any("damaged" in r.getMessage() for r in caplog.records)


def _train_windows_file(p) -> Path:
    """The training split's ``windows-<key>.ends`` in the store entry of prepared data ``p``."""
    store = Path(p.report["store"])
    (path,) = [f for f in store.glob("windows-*.ends")
               if np.array_equal(np.fromfile(f, dtype=np.int32), np.asarray(p.train.ends))]
    return path


def _same_windows_and_statistics(a, b):
    assert a.preprocessing.to_dict() == b.preprocessing.to_dict()
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(a.split(split).ends), np.asarray(b.split(split).ends))
        np.testing.assert_array_equal(np.asarray(a.split(split).symbol_ids), np.asarray(b.split(split).symbol_ids))


@pytest.mark.parametrize("target", [".ends", ".ids", "stats"])
def test_a_changed_window_index_or_statistics_file_is_detected_and_computed_again(tmp_path, target, caplog, monkeypatch):
    """The window index and the scaler statistics a run leaves in an entry are checked like the rows:
    a changed value (the modification time put back) never reaches training; a warning names the
    file, it is computed again, and an intact warm start hashes nothing."""
    from hftraining.data import store

    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    intact = prepare(d)
    ends = _train_windows_file(intact)
    if target == ".ends":  # a training window now ends on the last test row
        path, data = ends, np.fromfile(ends, dtype=np.int32)
        data[0] = int(np.asarray(intact.test.ends).max())
    elif target == ".ids":  # a window of one symbol attributed to the other (its scaler)
        path = ends.with_suffix(".ids")
        data = np.fromfile(path, dtype=np.int32)
        data[0] = 1 - data[0]
    else:
        (path,) = Path(intact.report["store"]).glob("stats-*.json")
        raw = json.loads(path.read_text())
        raw["stats"]["target_scale"] *= 2
        data = json.dumps(raw).encode()
    before = path.stat()
    path.write_bytes(data if isinstance(data, bytes) else data.tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = prepare(d)
    assert again.report["cache"] == "hit"  # the rows are intact
    _same_windows_and_statistics(intact, again)
    assert any("is damaged" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)
    caplog.clear()
    hashed = []
    real = store._digest
    monkeypatch.setattr(store, "_digest", lambda p: hashed.append(p.name) or real(p))
    _same_windows_and_statistics(intact, prepare(d))  # the rewritten files, trusted as they stand
    assert [h for h in hashed if not h.endswith(".csv")] == []
    assert not any("damaged" in r.getMessage() for r in caplog.records)


def test_a_window_index_with_consistent_digests_is_still_bounds_checked(tmp_path, caplog):
    """A window index whose record was rewritten to match (a digest is no proof of a right value)
    still cannot put a window ending in the test split into training."""
    from hftraining.data import store

    d = DataConfig(data_dir=str(_csv_dir(tmp_path, 2)), cache_dir=str(tmp_path / "cache"), **SMALL)
    intact = prepare(d)
    ends = _train_windows_file(intact)
    data = np.fromfile(ends, dtype=np.int32)
    data[-1] = int(np.asarray(intact.test.ends).max())
    ends.write_bytes(data.tobytes())
    record = json.loads(ends.with_suffix(".json").read_text())
    record["digests"][".ends"] = store._digest(ends)
    record["digest"] = store._json_digest(record, "digest")
    ends.with_suffix(".json").write_text(json.dumps(record))
    again = prepare(d)
    _same_windows_and_statistics(intact, again)
    assert any("is damaged" in r.getMessage() and "outside rows" in r.getMessage() for r in caplog.records)
