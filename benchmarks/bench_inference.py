"""Inference latency: PyTorch eager vs ONNX Runtime, and the HTTP server under a bounded local load.

    .venv/bin/python benchmarks/bench_inference.py [--duration 20] [--clients 8]

In one run, for the quickstart model (configs/quickstart.yaml shapes) and the production model
(ModelConfig defaults, 25.5M parameters; random weights, real preprocessing of the bundled data):
  - single-window and 64-window batch latency (p50, p99) of the bare forward in PyTorch eager and
    in ONNX Runtime;
  - the server (``hftraining serve``, a separate process on 127.0.0.1): p50 of ``POST /predict`` for
    one symbol (100 recent rows, so validation + features + forward + JSON) and its ratio to the bare
    eager single-window forward (target ≤ 2×);
  - for the production model, requests/s, p50 and p99 with ``--clients`` concurrent clients for
    ``--duration`` seconds, and the error count (target 0).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.export import export_onnx, onnx_session, wrapper_for
from hftraining.models import build_model

ROWS = 100  # recent rows per request


def pct(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timeit(fn, n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def make_model_dir(path: Path, model: ModelConfig) -> Path:
    cfg = load_config("configs/quickstart.yaml" if Path("configs/quickstart.yaml").exists() else None)
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    build_model(model, len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(path, preprocessing=pre.to_dict())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path):
    import httpx

    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # the server's torch threads
    proc = subprocess.Popen([sys.executable, "-m", "hftraining", "serve", str(model_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server for {model_dir} did not start")


def payload() -> bytes:
    import pandas as pd

    df = pd.read_csv(sample_data_dir() / "AEM.csv").tail(ROWS)
    rows = [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in df.itertuples()]
    return json.dumps({"symbols": {"AEM": rows}}).encode()


def server_p50(url: str, body: bytes, n: int) -> list[float]:
    import httpx

    with httpx.Client(base_url=url, timeout=30, headers={"content-type": "application/json"}) as c:
        def one():
            r = c.post("/predict", content=body)
            assert r.status_code == 200, r.text

        return timeit(one, n)


def load_test(url: str, body: bytes, clients: int, duration: float) -> dict:
    import httpx

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def client():
        with httpx.Client(base_url=url, timeout=30, headers={"content-type": "application/json"}) as c:
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    ok = c.post("/predict", content=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
                    errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p50, p99 = pct(lat)
    return {"requests": len(lat), "rps": len(lat) / wall, "p50_ms": p50, "p99_ms": p99, "errors": errors[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads of torch, ONNX Runtime and the server (2 threads on a busy 2-core machine "
                         "oversubscribe: a 25M-parameter forward then takes seconds instead of ~70 ms)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    models = {
        "quickstart": ModelConfig(hidden_size=64, num_heads=4, num_layers=2, dropout=0.1),
        "production": ModelConfig(),
    }
    body = payload()
    with tempfile.TemporaryDirectory() as tmp:
        for name, mcfg in models.items():
            d = make_model_dir(Path(tmp) / name, mcfg)
            w, fc = wrapper_for(d)
            pre = fc.preprocessing
            n_params = sum(p.numel() for p in fc.model.parameters())
            onnx_path = export_onnx(d, Path(tmp) / f"{name}.onnx", check=True)
            sess = onnx_session(onnx_path, threads=args.threads)
            print(f"\n{name}: {n_params:,} parameters, window {pre.seq_len}×{len(pre.feature_columns)}, horizon {pre.horizon}")
            print(f"{'':<22}{'p50 ms':>10}{'p99 ms':>10}")
            eager1 = None
            for batch in (1, 64):
                g = torch.Generator().manual_seed(batch)
                x = torch.randn(batch, pre.seq_len, len(pre.feature_columns), generator=g)
                past = torch.randn(batch, pre.seq_len, generator=g)
                n = args.iters if batch == 1 or name == "quickstart" else max(10, args.iters // 5)
                with torch.no_grad():
                    t_eager = timeit(lambda: w(x, past), n)
                feeds = {"x": x.numpy(), "past": past.numpy()}
                t_onnx = timeit(lambda: sess.run(None, feeds), n)
                for label, t in ((f"eager  batch {batch}", t_eager), (f"onnx   batch {batch}", t_onnx)):
                    p50, p99 = pct(t)
                    print(f"{label:<22}{p50:>10.2f}{p99:>10.2f}")
                if batch == 1:
                    eager1 = pct(t_eager)[0]
                    onnx1 = pct(t_onnx)[0]
            print(f"ONNX Runtime / eager, batch 1: {onnx1 / eager1:.2f}×")
            proc, url = start_server(d)
            try:
                p50, p99 = pct(server_p50(url, body, args.iters))
                print(f"server POST /predict, 1 symbol × {ROWS} rows: p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                      f"p50 / bare eager forward = {p50 / eager1:.2f}× (target ≤ 2×)")
                if name == "production":
                    res = load_test(url, body, args.clients, args.duration)
                    print(f"load: {args.clients} clients × {args.duration:.0f} s: {res['requests']} requests, "
                          f"{res['rps']:.1f} req/s, p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                          f"errors {res['errors']} (target 0)")
            finally:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
