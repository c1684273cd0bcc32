"""Data at scale: the feature store against in-memory preparation, on synthetic one-minute bars.

    .venv/bin/python benchmarks/bench_scale.py                     # 200 symbols x 500,000 rows = 100M rows
    .venv/bin/python benchmarks/bench_scale.py --symbols 20 --rows 100000   # a quick run

Prints one table, every figure measured in this run:
  (a) building the feature store from the Parquet dataset (`hftraining data synth --format
      parquet-dataset`): rows/s and peak memory, against today's in-memory preparation (all frames
      validated into memory, then one feature block) on the largest subset it is run on (--mem-symbols);
  (b) time from process start to the first training step: the first run on a new store entry
      (which indexes the windows and fits the scaler statistics into it) and a warm start;
  (c) memory per rank and for the node with `torchrun --nproc_per_node=2` on the warm store vs in memory;
  (d) the training step rate on the store vs in memory (same symbols, same model);
  (e) a batch scaled as it is gathered (what the windows do) vs gathered from rows scaled in place once;
  (f) opening the store entry when its files' stamps match their last verification vs hashing them all.

Memory is sampled every 0.2 s over the whole process tree: RSS per process (counts a shared page in
every process that maps it) and PSS (a shared page divided among the processes that map it, so the
PSS of all processes is the memory the node really uses). Each stage runs in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    out, todo = [], [pid]
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                procs.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    while todo:
        p = todo.pop()
        out.append(p)
        todo += procs.get(p, [])
    return out


def _mem(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process (0, 0 when it is gone)."""
    try:
        rss = pss = 0
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
        return rss, pss
    except OSError:
        return 0, 0


class Sampler:
    """Peak memory of a process tree: max RSS and PSS of any one process, max of the PSS sum."""

    def __init__(self, pid: int, ranks: bool = False):
        self.pid, self.ranks = pid, ranks
        self.peak_rss = self.peak_pss = self.peak_node = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            pids = _children(self.pid)
            if self.ranks:  # torchrun: the launcher is small; ranks are its python children
                pids = [p for p in pids if p != self.pid]
            mems = [_mem(p) for p in pids]
            if mems:
                self.peak_rss = max(self.peak_rss, max(m[0] for m in mems))
                self.peak_pss = max(self.peak_pss, max(m[1] for m in mems))
                self.peak_node = max(self.peak_node, sum(m[1] for m in mems))
            time.sleep(0.2)

    def stop(self):
        self._stop.set()
        self._t.join()


def run(cmd: list[str], ranks: bool = False, env: dict | None = None, marker: str | None = None) -> dict:
    """Run ``cmd``; wall time, peak memory and (with ``marker``) the time the marker line was printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    s = Sampler(proc.pid, ranks)
    lines, at = [], None
    for line in proc.stdout:
        lines.append(line)
        if marker and at is None and marker in line:
            at = time.perf_counter() - t0
    proc.wait()
    s.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write("".join(lines[-40:]))
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return {"wall": wall, "rss": s.peak_rss, "pss": s.peak_pss, "node": s.peak_node, "marker": at, "out": "".join(lines)}


def gb(x: int) -> str:
    return f"{x / 2**30:.2f} GB"


# ------------------------------------------------------------------------ child stages (fresh processes)

CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
from hftraining.core.config import Config, DataConfig, load_config
from hftraining.data.pipeline import prepare, read_frames, data_rows
args = json.loads(sys.argv[1])
stage = args["stage"]
d = DataConfig(**args["data"])
if stage == "build":
    rows, rep = data_rows(d)
    print(json.dumps({"rows_in": rep["rows_in"], "rows": int(len(rows.returns)), "cache": rep["cache"]}))
elif stage == "memory_prepare":  # today's in-memory path: every frame validated into memory, then one block
    frames, rep = read_frames(d)
    p = prepare(d, frames)
    print(json.dumps({"rows_in": rep["rows_in"], "train_windows": len(p.train)}))
elif stage == "rate":  # the store and the in-memory rows side by side in one process, alternated
    from hftraining.train.runner import build_trainer
    trainers = {}
    for label, dd in (("store", d), ("memory", DataConfig(**args["memory"]))):
        cfg = load_config(None, args["overrides"] + [f"output.output_dir={args['run_dir']}-{label}", "output.overwrite=true"])
        cfg.data = dd
        trainers[label] = build_trainer(cfg, prepare(dd) if dd.cache_dir else prepare(dd, read_frames(dd)[0]))
    for t in trainers.values():
        for _ in range(5):  # warm-up
            t.train_step()
    best = {k: 0.0 for k in trainers}
    for _ in range(3):
        for label, t in trainers.items():
            t0 = time.perf_counter()
            for _ in range(args["steps"]):
                t.train_step()
            best[label] = max(best[label], args["steps"] / (time.perf_counter() - t0))
    print(json.dumps(best))
elif stage == "steps":
    from hftraining.train.runner import build_trainer
    cfg = load_config(None, args["overrides"] + [f"output.output_dir={args['run_dir']}", "output.overwrite=true"])
    cfg.data = d
    data = prepare(d) if d.cache_dir else prepare(d, read_frames(d)[0])
    trainer = build_trainer(cfg, data)
    for _ in range(5):  # warm-up
        trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(args["steps"]):
        trainer.train_step()
    dt = time.perf_counter() - t0
    print(json.dumps({"steps_per_s": args["steps"] / dt}))
elif stage == "verify":  # opening the entry: its files' stamps match (every run) vs every file hashed again
    from pathlib import Path
    t0 = time.perf_counter()
    rows, rep = data_rows(d)
    stamps = time.perf_counter() - t0
    entry = Path(rep["store"])
    (entry / "verified.json").unlink()  # as after any write to the entry's files: each is hashed again
    t0 = time.perf_counter()
    rows, again = data_rows(d)
    hashed = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in entry.iterdir() if f.suffix in (".f32", ".i64", ".f64"))
    print(json.dumps({"stamps_s": stamps, "hashed_s": hashed, "bytes": size, "cache": [rep["cache"], again["cache"]]}))
elif stage == "gather":  # batches scaled as they are gathered vs gathered from rows scaled once in place
    import dataclasses
    import numpy as np
    ws = prepare(d).train
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(ws), 64) for _ in range(args["batches"])]
    for b in batches[:20]:
        ws.batch(b)
    t0 = time.perf_counter()
    for b in batches:
        ws.batch(b)
    fly = (time.perf_counter() - t0) / len(batches)
    t0 = time.perf_counter()  # scaling in place once: a private, writable copy of the rows (N x F float32)
    order = np.argsort(ws.segment_first)
    row_sym = order[np.searchsorted(ws.segment_first[order], np.arange(len(ws.features)), side="right") - 1]
    scaled = (np.asarray(ws.features) - ws.center[row_sym]) / ws.scale[row_sym]
    once = dataclasses.replace(ws, features=scaled.astype(np.float32), center=None, scale=None)
    prescale = time.perf_counter() - t0
    for b in batches[:20]:
        once.batch(b)
    t0 = time.perf_counter()
    for b in batches:
        once.batch(b)
    pre = (time.perf_counter() - t0) / len(batches)
    print(json.dumps({"fly_ms": fly * 1e3, "pre_ms": pre * 1e3, "prescale_s": prescale, "copy_gb": scaled.nbytes / 2**30,
                      "rows": len(ws.features)}))
"""


def child(stage: str, data: dict, **extra) -> list[str]:
    return [sys.executable, "-c", CHILD, json.dumps({"stage": stage, "data": data, **extra})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--mem-symbols", type=int, default=40, help="symbols of the in-memory comparison")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--work", default="/tmp/hftraining-scale")
    ap.add_argument("--keep", action="store_true", help="keep the dataset and the store for the next run")
    ap.add_argument("--stages", default="abcdef", help="the stages to run (default abcdef; (a) rebuilds the store)")
    a = ap.parse_args()
    work = Path(a.work)
    data_dir = work / f"synth-{a.symbols}x{a.rows}"
    cache = work / "store"
    n_rows = a.symbols * a.rows
    table = []

    if not (data_dir / "_SUCCESS").exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        g = run([str(BIN / "hftraining"), "data", "synth", "--out", str(data_dir), "--freq", "1min", "--symbols", str(a.symbols),
                 "--rows", str(a.rows), "--format", "parquet-dataset", "--seed", "7"])
        (data_dir / "_SUCCESS").touch()
        table.append(("data synth: 1-min Parquet dataset", f"{n_rows / 1e6:.0f}M rows in {g['wall']:.0f} s",
                      f"peak RSS {gb(g['rss'])}"))
    size = sum(f.stat().st_size for f in data_dir.rglob("*.parquet"))

    base = {"data_dir": str(data_dir), "sequence_length": 60, "prediction_horizon": 5, "batch_size": 64,
            "num_workers": a.workers, "cache_dir": str(cache)}
    syms = [f"SYN{i:03d}" for i in range(a.mem_symbols)]
    mem = {**base, "cache_dir": None, "symbols": syms, "num_workers": 0}
    out = work / "runs"
    train = [str(BIN / "hftraining"), "train", f"data.data_dir={data_dir}", f"data.cache_dir={cache}",
             "data.sequence_length=60", "data.prediction_horizon=5", "data.batch_size=64", "model.hidden_size=64",
             "model.num_layers=2", "model.num_heads=4", f"training.max_steps={a.steps}", "training.logging_steps=1",
             "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.max_eval_batches=20",
             "evaluation.max_test_windows=20000", "evaluation.baseline_max_windows=200000", "evaluation.report=false",
             "output.progress_bar=never", f"output.output_dir={out}", "output.overwrite=true"]
    if "a" in a.stages:
        # (a) cold build of the store
        shutil.rmtree(cache, ignore_errors=True)
        b = run(child("build", base))
        built = json.loads(b["out"].strip().splitlines()[-1])
        table.append((f"(a) store build, {a.workers} workers ({gb(size)} Parquet in)",
                      f"{built['rows_in'] / 1e6:.0f}M rows in {b['wall']:.0f} s = {built['rows_in'] / b['wall'] / 1e6:.2f}M rows/s",
                      f"peak PSS of all processes {gb(b['node'])}, largest process RSS {gb(b['rss'])}"))
        m = run(child("memory_prepare", mem))
        got = json.loads(m["out"].strip().splitlines()[-1])
        table.append((f"(a) in-memory prepare (today's path), {a.mem_symbols} symbols",
                      f"{got['rows_in'] / 1e6:.0f}M rows in {m['wall']:.0f} s = {got['rows_in'] / m['wall'] / 1e6:.2f}M rows/s",
                      f"peak RSS {gb(m['rss'])} ({m['rss'] / got['rows_in'] * n_rows / 2**30:.0f} GB at {n_rows / 1e6:.0f}M rows, linear)"))

    if "b" in a.stages:
        # (b) warm start to the first training step: hftraining train, from process start
        # the first run on a new entry indexes the windows and fits the scaler statistics, and leaves both
        # in the entry; every later run (and rank) maps them: that is the warm start
        f = run(train + ["output.experiment_name=first"], marker="step=1 ")
        w = run(train + ["output.experiment_name=warm"], marker="step=1 ")
        table.append(("(b) `hftraining train` start to first step: first run on the new entry / warm",
                      f"{f['marker']:.1f} s / {w['marker']:.1f} s" if f["marker"] and w["marker"] else "?",
                      f"whole warm run ({a.steps} steps + evaluation) {w['wall']:.0f} s, peak RSS {gb(w['rss'])}"))

    if "c" in a.stages:
        # (c) torchrun, 1 and 2 ranks, warm store vs in memory (the in-memory runs on --mem-symbols)
        tr = [str(BIN / "torchrun"), "--standalone"]
        rows_c = {}
        for label, extra in (("store", []), ("memory", ["data.cache_dir=null", "data.symbols=[" + ",".join(syms) + "]"])):
            for n in (1, 2):
                r = run(tr + [f"--nproc_per_node={n}", "-m", "hftraining.cli"] + train[1:] + extra
                        + [f"output.experiment_name=ddp-{label}-{n}"], ranks=True, env={"OMP_NUM_THREADS": "1"})
                rows_c[(label, n)] = r
            one, two = rows_c[(label, 1)], rows_c[(label, 2)]
            what = f"{n_rows / 1e6:.0f}M rows" if label == "store" else f"{a.mem_symbols} symbols"
            table.append((f"(c) torchrun {label} ({what}): 1 rank / 2 ranks",
                          f"rank RSS {gb(one['rss'])} / {gb(two['rss'])}, rank PSS {gb(one['pss'])} / {gb(two['pss'])}",
                          f"node (PSS sum) {gb(one['node'])} / {gb(two['node'])} = {two['node'] / max(one['node'], 1):.2f}x"))

    if "d" in a.stages:
        # (d) step rate, store vs in memory, same symbols and model
        ov = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=4", "training.max_steps=1000",
              "output.progress_bar=never", "output.tensorboard=false"]
        r = run(child("rate", {**base, "symbols": syms, "num_workers": 0}, memory=mem, overrides=ov, steps=a.steps * 2,
                      run_dir=str(work / "steps")))
        best = json.loads(r["out"].strip().splitlines()[-1])
        table.append((f"(d) training steps/s, {a.mem_symbols} symbols (one process, alternated, best of 3 x {a.steps * 2})",
                      f"store {best['store']:.1f}, in memory {best['memory']:.1f}",
                      f"store / memory = {best['store'] / best['memory']:.3f}"))

    if "e" in a.stages:
        # (e) scaling: on the fly per batch (what the windows do) vs once in place into a private copy
        g = run(child("gather", {**base, "symbols": syms, "num_workers": 0}, batches=2000))
        got = json.loads(g["out"].strip().splitlines()[-1])
        table.append((f"(e) batch of 64 x 60 rows, {a.mem_symbols} symbols: scaled on the fly / rows scaled once in place",
                      f"{got['fly_ms']:.3f} ms / {got['pre_ms']:.3f} ms per batch",
                      f"in place costs {got['prescale_s']:.1f} s and a private {got['copy_gb']:.2f} GB copy per process "
                      f"({got['rows'] / 1e6:.0f}M rows)"))

    if "f" in a.stages:
        # (f) trusting the store: the digests are computed while the entry is written; opening it compares
        # the files' stamps with those of their last verification, and hashes again only what moved
        v = run(child("verify", base))
        got = json.loads(v["out"].strip().splitlines()[-1])
        table.append(("(f) open the store entry: stamps unchanged (every run) / every file hashed again",
                      f"{got['stamps_s']:.2f} s / {got['hashed_s']:.1f} s (cache {got['cache'][0]} / {got['cache'][1]})",
                      f"{got['bytes'] / 2**30:.1f} GB of rows hashed at {got['bytes'] / 2**30 / got['hashed_s']:.2f} GB/s"))

    print(f"\nbench_scale: {a.symbols} symbols x {a.rows} one-minute rows ({n_rows / 1e6:.0f}M), "
          f"{os.cpu_count()} CPU cores, {os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.0f} GB RAM")
    w0 = max(len(r[0]) for r in table)
    for name, x, y in table:
        print(f"  {name:<{w0}}  {x}  |  {y}")
    if not a.keep:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
