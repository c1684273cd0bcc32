"""Peak memory of one training step of the production transformer, with and without gradient
checkpointing, and the ratio.

    .venv/bin/python benchmarks/bench_checkpointing.py            # production: B 32, L 60, F 10, H 5
    .venv/bin/python benchmarks/bench_checkpointing.py --batch 8  # quicker

How memory is measured, and why two ways. Each setting runs in a fresh subprocess, so neither sees
the other's cached or fragmented heap. In it, one forward + backward step is measured twice:

* **tensor bytes** (the CPU analogue of ``torch.cuda.max_memory_allocated``): under
  ``torch.profiler`` with ``profile_memory=True`` every allocation and free of torch's CPU
  allocator is reported with the running total of bytes allocated since profiling began; its
  maximum is the step's peak of live tensors above what existed before (weights, batch). Exact,
  independent of malloc caching, but blind to memory that oneDNN or BLAS take outside torch.
* **resident set** (what the OS sees): the process's peak-RSS mark (VmHWM) is reset through
  ``/proc/self/clear_refs`` just before the step and read after it, minus the RSS before. It
  includes everything (library scratch, allocator slack). It is measured on the process's first
  step, before malloc holds any freed memory it could reuse (which would hide the peak). Linux only;
  elsewhere the column is left out.

``tracemalloc`` is not used: it sees only Python-level allocations, not tensor storage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20


def _vm(field: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS mark (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from hftraining.core.config import ModelConfig
    from hftraining.models import build_model, compute_loss

    torch.manual_seed(0)
    cfg = ModelConfig()  # production defaults: hidden 512, 16 heads, 8 layers, dropout 0.15
    model = build_model(cfg, args.features, args.horizon, args.seq).train()
    model.set_gradient_checkpointing(args.mode == "on")
    x = torch.randn(args.batch, args.seq, args.features)  # (B, L, F)
    past = torch.randn(args.batch, args.seq)  # (B, L)
    target = torch.randn(args.batch, args.horizon)  # (B, H)

    def step() -> None:
        model.zero_grad(set_to_none=True)  # gradients are allocated inside the measured step
        loss, _ = compute_loss(cfg, model(x, None, past), target, 0.01)
        loss.backward()

    result: dict[str, float] = {"params": model.num_parameters()}
    # 1) resident set on the first step
    rss_before = _vm("VmRSS")
    if rss_before is not None and _reset_peak_rss():
        t0 = time.perf_counter()
        step()
        result["first_step_s"] = time.perf_counter() - t0
        result["rss_peak_delta"] = _vm("VmHWM") - rss_before
    else:
        step()
    # 2) live tensor bytes, from torch's CPU allocator via the profiler
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    result["tensor_peak"] = max(totals)
    # the gradients (one fp32 copy of the weights) are the same in both settings; what is left
    # is what checkpointing acts on: saved activations and backward temporaries
    result["activation_peak"] = result["tensor_peak"] - sum(p.numel() * p.element_size() for p in model.parameters())
    # 3) time of a plain step (no profiler), the price of recomputation
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result["step_s"] = min(times)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=60)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2, help="timed steps per setting (the minimum is shown)")
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return

    import torch

    rows = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--child", mode, "--batch", str(args.batch), "--seq", str(args.seq),
               "--features", str(args.features), "--horizon", str(args.horizon), "--repeat", str(args.repeat)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])

    off, on = rows["off"], rows["on"]
    print(f"production transformer: {off['params'] / 1e6:.2f}M parameters, batch {args.batch}, seq {args.seq}, "
          f"{args.features} features, horizon {args.horizon}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU; weights and batch excluded (allocated before the step)")
    print(f"{'':24}{'no checkpointing':>18}{'checkpointing':>16}{'ratio on/off':>14}")

    def line(label: str, key: str, scale: float, unit: str) -> None:
        if key in off and key in on:
            print(f"{label:24}{off[key] / scale:>15.1f}{unit:>3}{on[key] / scale:>13.1f}{unit:>3}"
                  f"{on[key] / off[key]:>14.2f}")

    line("peak tensor memory", "tensor_peak", MiB, "MiB")
    line("  less the gradients", "activation_peak", MiB, "MiB")
    line("peak RSS growth", "rss_peak_delta", MiB, "MiB")
    line("step time (fwd+bwd)", "step_s", 1.0, "s")
    print(f"memory saved: {(off['tensor_peak'] - on['tensor_peak']) / MiB:.1f} MiB of tensors "
          f"({1 - on['tensor_peak'] / off['tensor_peak']:.0%})")


if __name__ == "__main__":
    main()
