"""Data benchmark: validate + features + split/scaling + windows, in rows per second.

    python benchmarks/bench_data.py [--yahoo ../shared/data/yahoo] [--rows 10000000] [--symbols 10]

Prints, in one run: (a) the real files (cache cold: nothing is cached on this path), (b) a
synthetic set of ``--rows`` rows in memory (validation runs on it like on a read file), with the
peak memory traced during processing against the final float32 feature matrix, (c) the same
indicators computed with plain pandas ``ewm``/``rolling`` as the reference, as a speed ratio, and
(d) the ``alpha158`` table on the real files and on one synthetic symbol (``--alpha-full``: on all
the synthetic rows through the pipeline, with its peak RSS against the float32 feature matrix).
Targets (2 CPU cores): (a) < 1 s, (b) < 15 s with peak < 3x the float32 matrix, (c) >= 5x.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.data import pipeline
from hftraining.data.features import FEATURES, compute_features, parse_spec
from hftraining.data.synth import synth_frames
from hftraining.data.sources import load_and_validate
from hftraining.data.validate import validate_frame


def pandas_reference(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """The default feature set (log_return_1, rsi_14, macd_12_26_9, bbands_20_2, volume_ratio_20) in plain pandas."""
    c, v = f["close"], f["volume"]
    out = {"log_return_1": np.log(c / c.shift(1))}
    d = c.diff()
    gain = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-d.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
    out["rsi_14"] = 100 - 100 / (1 + gain / loss)
    line = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    sig = line.ewm(span=9, adjust=False).mean()
    out.update({"macd": line / c, "macd_signal": sig / c, "macd_hist": (line - sig) / c})
    mid, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bb_pos"] = (c - (mid - 2 * sd)) / (4 * sd)
    out["bb_width"] = 4 * sd / mid
    out["volume_ratio_20"] = v / v.rolling(20).mean()
    return {k: s.to_numpy() for k, s in out.items()}


def matrix_bytes(prep: pipeline.PreparedData) -> int:
    """Bytes of the float32 feature matrix (the splits share one block: count it once)."""
    arrays = {id(prep.split(s).features): prep.split(s).features for s in ("train", "val", "test")}
    return sum(a.nbytes for a in arrays.values())


def run_pipeline(d: DataConfig, frames: dict[str, pd.DataFrame]) -> tuple[pipeline.PreparedData, float, float]:
    """Streamed: each source frame is validated, featurised and written into the block, then
    released, so the validated copies of all symbols never exist at once → (prepared, seconds, of which validation)."""
    timing = {"validate": 0.0}

    def stream():
        for sym, f in frames.items():
            t = time.perf_counter()
            clean = validate_frame(f, d, sym)[0]
            timing["validate"] += time.perf_counter() - t
            yield sym, clean

    t0 = time.perf_counter()
    prep = pipeline.prepare(d, frames=stream(), capacity=sum(len(f) for f in frames.values()))
    return prep, time.perf_counter() - t0, timing["validate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--yahoo", default="../shared/data/yahoo", help="folder of the real OHLCV files")
    ap.add_argument("--rows", type=int, default=10_000_000, help="synthetic rows in all")
    ap.add_argument("--symbols", type=int, default=10, help="synthetic symbols")
    ap.add_argument("--alpha-full", action="store_true", help="(d): alpha158 on all --rows synthetic rows (minutes, GBs)")
    ap.add_argument("--alpha-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.alpha_only:
        return alpha_only(args.rows, args.symbols)
    d = DataConfig()
    print(f"machine: {os.cpu_count()} CPU cores; features: {', '.join(d.features)}; "
          f"sequence_length {d.sequence_length}, horizon {d.prediction_horizon}")

    # (a) the real files, end to end: read + validate + features + split/scale + windows
    if os.path.isdir(args.yahoo):
        da = DataConfig(data_dir=args.yahoo)
        t0 = time.perf_counter()
        frames, report = load_and_validate(da)
        t1 = time.perf_counter()
        prep = pipeline.prepare(da, frames=frames)
        t2 = time.perf_counter()
        n = report["rows_in"]
        print(f"(a) {len(report['files'])} files, {n:,} rows: {t2 - t0:.3f} s end to end "
              f"(read+validate {t1 - t0:.3f} s, features+split+scale+windows {t2 - t1:.3f} s) = {n / (t2 - t0):,.0f} rows/s "
              f"[target < 1 s: {'met' if t2 - t0 < 1 else 'NOT met'}]; {sum(len(prep.split(s)) for s in ('train', 'val', 'test')):,} windows")
    else:
        print(f"(a) skipped: {args.yahoo} is not a folder")

    # (b) synthetic rows in memory
    per = args.rows // args.symbols
    frames = synth_frames(args.symbols, per, seed=0, freq="1min")
    n = per * args.symbols
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prep, total, tv = run_pipeline(d, frames)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mat = matrix_bytes(prep)
    print(f"(b) {n:,} synthetic rows ({args.symbols} symbols): {total:.2f} s = {n / total:,.0f} rows/s "
          f"(validate {tv:.2f} s, features+split+scale+windows {total - tv:.2f} s) [target < 15 s: {'met' if total < 15 else 'NOT met'}]")
    del prep
    tracemalloc.start()
    prep, _, _ = run_pipeline(d, frames)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"    final float32 feature matrix {mat / 2**20:,.0f} MiB; peak traced during processing {peak / 2**20:,.0f} MiB "
          f"= {peak / mat:.2f}x [target < 3x: {'met' if peak < 3 * mat else 'NOT met'}]; input frames "
          f"{sum(f.memory_usage().sum() for f in frames.values()) / 2**20:,.0f} MiB (the source, like files on disk: not counted); "
          f"process max RSS grew {(rss1 - rss0) / 2**10:,.0f} MiB in the untraced run")
    del prep

    # (c) the indicators alone: TA-Lib (ours) against the pandas reference, same frames
    clean = {sym: validate_frame(f, d, sym)[0] for sym, f in frames.items()}
    specs = [parse_spec(s) for s in d.features]
    t0 = time.perf_counter()
    for f in clean.values():
        for name, params in specs:  # the registered indicator functions: dicts of arrays, like the reference
            FEATURES.get(name)(f, *params)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in clean.values():
        compute_features(f, d.features)
    t_frame = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in clean.values():
        pandas_reference(f)
    t_ref = time.perf_counter() - t0
    print(f"(c) indicators on {n:,} rows: TA-Lib {t_ours:.2f} s, pandas ewm/rolling {t_ref:.2f} s = {t_ref / t_ours:.1f}x faster "
          f"[target >= 5x: {'met' if t_ref / t_ours >= 5 else 'NOT met'}]; with the feature frame assembled "
          f"(compute_features) {t_frame:.2f} s = {t_ref / t_frame:.1f}x")
    del clean

    # (d) alpha158: the real files read to windows, and the table on one symbol of the synthetic set
    if os.path.isdir(args.yahoo):
        t0 = time.perf_counter()
        prep = pipeline.prepare(DataConfig(data_dir=args.yahoo, features=["alpha158"], cache_dir=None))
        t = time.perf_counter() - t0
        print(f"(d) alpha158, {len(prep.train.symbols)} real files read to windows, in memory: {t:.2f} s "
              f"[target < 5 s: {'met' if t < 5 else 'NOT met'}]")
        del prep
    if args.alpha_full:  # every synthetic row through the pipeline, in a process of its own (its own peak RSS)
        subprocess.run([sys.executable, __file__, "--alpha-only", "--rows", str(args.rows), "--symbols", str(args.symbols)],
                       check=True)
        return
    sym, f = next(iter(frames.items()))
    t0 = time.perf_counter()
    compute_features(validate_frame(f, d, sym)[0], ["alpha158"])
    t = time.perf_counter() - t0
    print(f"(d) alpha158 on one symbol of {len(f):,} rows: {t:.2f} s = {t * n / len(f):.0f} s for the {n:,} rows "
          f"one symbol at a time [target < 180 s: {'met' if t * n / len(f) < 180 else 'NOT met'}] (--alpha-full: all of them)")


def alpha_only(rows: int, symbols: int) -> None:
    """(d) alpha158 on every synthetic row, validate to windows: time and this process's peak RSS
    above its size with the input frames made, against the final float32 feature matrix."""
    frames = synth_frames(symbols, rows // symbols, seed=0, freq="1min")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss_now = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    d = DataConfig(features=["alpha158"])
    prep, total, _ = run_pipeline(d, frames)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mat = matrix_bytes(prep)
    grew = peak - max(base, rss_now)
    print(f"(d) alpha158 on all {sum(len(f) for f in frames.values()):,} synthetic rows ({symbols} symbols), validate to "
          f"windows: {total:.1f} s [target < 180 s: {'met' if total < 180 else 'NOT met'}]; float32 feature matrix "
          f"{mat / 2**30:.2f} GiB, peak RSS above the input frames {grew / 2**30:.2f} GiB = {grew / mat:.2f}x "
          f"[target < 3x: {'met' if grew < 3 * mat else 'NOT met'}]")


if __name__ == "__main__":
    main()
