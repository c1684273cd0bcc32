"""GPU training throughput, every path timed in one run on the device it is given: a bare loop
(eager and compiled), the hftraining Trainer in each ``training.compile`` mode, and
``transformers.Trainer`` with and without its ``torch_compile``.

    python benchmarks/bench_gpu.py                       # on a GPU: the production model, every configuration
    python benchmarks/bench_gpu.py --budget 240          # stop starting measurements after 240 s (printed as such)
    python benchmarks/bench_gpu.py --configs 32x4 --modes none,reduce-overhead
    python benchmarks/bench_gpu.py --device cpu          # a smoke run (tiny model, few steps): every path runs
    python benchmarks/bench_gpu.py --profile 1024x1:default   # where a Trainer step's device time goes, by kernel kind

Configurations are ``<batch>x<gradient accumulation>``: 32x1, 32x4 (the seed config) and 1024x1.
The model is ``configs/production.json``'s (25.5M parameters, 60 steps, bf16 autocast, fused AdamW,
clipping at 1.0, dropout 0.15). Each measurement warms up first (compilation and CUDA-graph recording
are not timed) and then times whole optimizer steps, the host waiting for the device at the end.

Printed per configuration and path: micro-steps/s, samples/s and MFU, the model FLOP/s
(6 x parameters x tokens/s) against the bf16 matrix-multiply peak measured at the start of this run;
and the ratio of the hftraining Trainer's best mode to ``transformers.Trainer`` with ``torch_compile``.
The bare loop keeps its batches on the device (no data path); the Trainer gathers each batch from
its windows (``data.device_cache``); ``transformers.Trainer`` loads them with its DataLoader.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.models import build_model
from hftraining.models.losses import compute_loss
from hftraining.models.predict import autocast_context
from hftraining.optim import build_optimizer
from hftraining.train.runner import build_trainer
from hftraining.train.trainer import CUDA_GRAPH_MODES

sys.path.insert(0, os.path.dirname(__file__))
from bench_trainer import _WindowBatches, hf_missing, without_validation  # noqa: E402

PRODUCTION = ["model.hidden_size=512", "model.num_heads=16", "model.num_layers=8", "model.dropout=0.15"]
TINY = ["model.hidden_size=32", "model.num_heads=4", "model.num_layers=2", "model.dropout=0.1"]
MODES = ["none", "default", "reduce-overhead", "max-autotune"]


def config(model: list[str], batch: int, accum: int, steps: int, device: str, mode: str, out: str):
    return load_config(None, [
        *model, "data.sequence_length=60", "data.prediction_horizon=5", f"data.batch_size={batch}",
        "training.precision=bf16", "training.optimizer=adamw", "training.learning_rate=5e-5",
        f"training.gradient_accumulation_steps={accum}", f"training.max_steps={steps}", f"training.device={device}",
        f"training.compile={mode}", "training.save_steps=0", "evaluation.eval_steps=0", "output.tensorboard=false",
        "output.progress_bar=never", f"output.output_dir={out}", "output.overwrite=true",
    ])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_matmul_peak(device: torch.device) -> float:
    """FLOP/s of a bf16 matrix product on ``device``, as the model's ``Linear`` layers run it
    (``F.linear``; 8192² on a GPU, 512² on a CPU; mean of 10 after 3 warm-ups). On a CPU without bf16
    instructions ``a @ b`` in bf16 takes a path about 10× slower than ``F.linear`` (1 against 10
    GFLOP/s on this project's 2-core machine): measured with it, the smoke run's MFU read 199% and the
    measurement alone took half a minute."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        F.linear(a, b)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        F.linear(a, b)
    sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - t0)


def warm_trainer(cfg, data):
    """A Trainer in training mode after 3 steps: compilation, CUDA-graph recording and the optimizer's
    state are behind it, and never timed or profiled."""
    trainer = build_trainer(cfg, data)
    trainer.model.train()
    trainer.opt.train()
    for _ in range(3):
        trainer.train_step()
    trainer.read_back()
    return trainer


def time_trainer(cfg, data, steps: int) -> float:
    """Seconds per optimizer step of ``Trainer.fit`` (logging every 10 steps, no evaluation, no checkpoint)."""
    trainer = without_validation(warm_trainer(cfg, data))
    trainer.save_checkpoint = trainer.read_back
    trainer.state.global_step = 0
    sync(trainer.device)
    t0 = time.perf_counter()
    trainer.fit()  # ends with a read-back: the host has waited for the last step
    sync(trainer.device)
    elapsed = time.perf_counter() - t0
    trainer.close()
    return elapsed / steps


def time_bare(cfg, data, steps: int, mode: str) -> float:
    """Seconds per optimizer step of a hand-written loop over 8 batches already on the device."""
    t = cfg.training
    device = torch.device(t.device)
    torch.manual_seed(t.seed)
    pre = data.preprocessing
    model = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len).to(device).train()
    opt = build_optimizer(model, t)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = np.random.default_rng(0)
    batches = [data.train.batch(rng.choice(len(data.train), cfg.data.batch_size, replace=False)) for _ in range(8)]
    batches = [tuple(b[k].to(device) for k in ("x", "past", "y")) for b in batches]

    def forward_loss(x, past, y):
        with autocast_context(device, "bf16"):
            out = model(x, None, past)
        return compute_loss(cfg.model, out, y, pre.target_scale)[0]

    fn = forward_loss if mode == "none" else torch.compile(forward_loss, mode=mode, dynamic=False)
    graphs = mode in CUDA_GRAPH_MODES and device.type == "cuda"
    if graphs:
        for p in params:
            p.grad = torch.zeros_like(p)
    accum = t.gradient_accumulation_steps

    def step(i):
        opt.zero_grad(set_to_none=not graphs)
        for m in range(accum):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            (fn(*batches[(i * accum + m) % len(batches)]) / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm, foreach=True)
        opt.step()

    for i in range(3):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return (time.perf_counter() - t0) / steps


# kernel (GPU) or operator (CPU) kinds, by name; the first match wins, the rest is "other"
KINDS = [
    ("matrix products", ("gemm", "triton_tem", "cutlass", "xmma", "nvjet", "cublas",
                         "aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
    ("attention", ("flash", "fmha", "attention", "aten::_scaled_dot_product", "aten::softmax", "aten::_softmax")),
    ("optimizer and clipping", ("multi_tensor", "adam", "foreach", "aten::_fused", "vector_norm")),
    ("fused element-wise (Triton)", ("triton",)),
    ("copies and fills", ("memcpy", "memset", "copy", "fill", "aten::zero")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def profile_trainer(cfg, data, steps: int, n_params: int, peak: float) -> None:
    """Print where ``steps`` optimizer steps of the Trainer spend their device time: per kernel kind
    (on a GPU) or operator kind (on a CPU, self time), the device's busy share of the wall time, and
    the rate the matrix products reach while they run (their FLOPs taken as 6 x parameters x tokens)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    trainer = warm_trainer(cfg, data)
    gpu = trainer.device.type == "cuda"
    sync(trainer.device)
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        trainer.read_back()
        sync(trainer.device)
        wall = time.perf_counter() - t0
    trainer.close()
    if gpu:
        events = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()
                  if e.device_type == DeviceType.CUDA]
    else:  # operators' self time; the profiler's own marks left out
        events = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()
                  if e.key.startswith("aten::") or "Backward" in e.key]
    busy = sum(t for _, t, _ in events) / 1e6  # seconds
    by_kind: dict[str, float] = {}
    for key, t, _ in events:
        by_kind[kind_of(key)] = by_kind.get(kind_of(key), 0.0) + t / 1e6
    per = 1e3 / steps
    batch, accum = cfg.data.batch_size, cfg.training.gradient_accumulation_steps
    print(f"profile: {batch} x {accum}, compile={cfg.training.compile}, {steps} steps, {wall * per:.2f} ms a step; "
          f"{'GPU' if gpu else 'CPU'} busy {busy * per:.2f} ms a step ({busy / wall:.0%} of the wall time), "
          f"{sum(c for _, _, c in events) / steps:.0f} {'kernels' if gpu else 'operator calls'} a step")
    flops = 6 * n_params * batch * accum * cfg.data.sequence_length * steps
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        extra = (f"  (6N FLOPs at {flops / t / 1e12:.1f} TFLOP/s = {flops / t / peak:.0%} of the peak while they run)"
                 if kind == "matrix products" and t > 0 else "")
        print(f"  {kind:<30} {t * per:8.2f} ms a step  {t / busy:6.1%}{extra}")
    print("  top kernels:" if gpu else "  top operators:")
    for key, t, count in sorted(events, key=lambda e: -e[1])[:15]:
        print(f"    {t / 1e3 * (1 / steps):8.3f} ms  x{count / steps:5.1f}  [{kind_of(key)}]  {key[:110]}")


def time_hf(cfg, data, steps: int, compile_model: bool) -> float:
    """Seconds per optimizer step of ``transformers.Trainer`` on the same model, windows and settings
    (fused AdamW, clipping, warmup+cosine, bf16, logging every 10 steps to memory), with or without
    ``torch_compile`` (its default mode)."""
    import transformers
    from transformers import Trainer as HFTrainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    transformers.logging.set_verbosity_error()
    t = cfg.training
    device = torch.device(t.device)
    torch.manual_seed(t.seed)
    pre = data.preprocessing
    model = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len)

    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, past, y):
            out = self.model(x, None, past)
            return {"loss": compute_loss(cfg.model, out, y, pre.target_scale)[0]}

    warm = 3

    class Clock(TrainerCallback):
        t0, first, elapsed, steps = None, 0, 0.0, 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warm:
                sync(device)
                self.first, self.t0 = state.global_step, time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            sync(device)
            self.elapsed, self.steps = time.perf_counter() - self.t0, state.global_step - self.first

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps + warm, per_device_train_batch_size=cfg.data.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps, dataloader_drop_last=True,
            learning_rate=t.learning_rate, weight_decay=t.weight_decay, optim="adamw_torch_fused",
            max_grad_norm=t.max_grad_norm, lr_scheduler_type="cosine", warmup_steps=1, bf16=True,
            use_cpu=device.type == "cpu", seed=t.seed, logging_steps=10, report_to=[], save_strategy="no",
            eval_strategy="no", dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda",
            remove_unused_columns=False, disable_tqdm=True, torch_compile=compile_model,
        )
        clock = Clock()
        trainer = HFTrainer(model=WithLoss(), args=args, train_dataset=_WindowBatches(data.train),
                            data_collator=lambda batch: batch, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return clock.elapsed / clock.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", default=None, help="e.g. 32x4,1024x1,32x1 (the default on a GPU)")
    ap.add_argument("--modes", default=None, help="training.compile modes of the Trainer (default on a GPU: all)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default: 100 / accumulation)")
    ap.add_argument("--no-hf", action="store_true", help="leave transformers.Trainer out")
    ap.add_argument("--paths", default=None,
                    help="only these, in this order: trainer:<mode>, hf:none|torch_compile, bare:none|<mode>, "
                         "each optionally @<config> (e.g. trainer:max-autotune@1024x1)")
    ap.add_argument("--budget", type=float, default=None, help="start no measurement after this many seconds")
    ap.add_argument("--profile", default=None, metavar="CONFIG[:MODE]",
                    help="instead of timing, profile the Trainer at one configuration and compile mode "
                         "(e.g. 1024x1:default; kernels inside CUDA graphs are not attributed, so prefer default)")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    start = time.perf_counter()

    # every flag is checked before anything is measured: a misspelt one met in the loop lost the
    # figures of every path before it, or a GPU session's minutes
    def parse(spec: str, flag: str) -> tuple[int, int]:
        try:
            batch, accum = (int(v) for v in spec.split("x"))
        except ValueError:
            ap.error(f"{flag}: {spec!r} is not BATCHxACCUMULATION (e.g. 1024x1)")
        if batch < 1 or accum < 1:
            ap.error(f"{flag}: {spec!r} needs a batch and an accumulation of at least 1")
        return batch, accum

    def mode_of(flag: str, mode: str, allowed: list[str], item: str | None = None) -> str:
        if mode not in allowed:
            ap.error(f"{flag}: {mode!r}{f' in {item!r}' if item else ''} is not one of {', '.join(allowed)}")
        return mode

    configs = args.configs or ("32x4,1024x1,32x1" if gpu else "8x1,8x2")
    modes = [mode_of("--modes", m, MODES) for m in (args.modes or (",".join(MODES) if gpu else "none,default")).split(",")]
    specs = [parse(spec, "--configs") for spec in configs.split(",")]
    if args.profile:
        spec, _, mode = args.profile.partition(":")
        (batch, accum), mode = parse(spec, "--profile"), mode_of("--profile", mode or "none", MODES, args.profile)
    # Measured in this order, each path over every configuration before the next path, so that a
    # --budget cut leaves the least important figures out: the Trainer (eager, then CUDA graphs),
    # transformers.Trainer with and without torch_compile, the bare loop, the other compile modes.
    order = [("hftraining Trainer", "none"), ("hftraining Trainer", "reduce-overhead")]
    order += [("transformers.Trainer", "torch_compile"), ("transformers.Trainer", "none")]
    order += [("bare loop", "none"), ("bare loop", "reduce-overhead" if gpu else "default")]
    order += [("hftraining Trainer", m) for m in ("default", "max-autotune")]
    order = [(p, m, None) for p, m in order if p != "hftraining Trainer" or m in modes]
    if args.paths:  # e.g. hf:none,bare:reduce-overhead,trainer:max-autotune@1024x1
        names = {"trainer": ("hftraining Trainer", MODES), "hf": ("transformers.Trainer", ["none", "torch_compile"]),
                 "bare": ("bare loop", MODES)}
        order = []
        for item in args.paths.split(","):
            what, _, only = item.partition("@")
            path, _, mode = what.partition(":")
            if path not in names:
                ap.error(f"--paths: {item!r}: {path!r} is not one of {', '.join(names)}")
            order.append((names[path][0], mode_of("--paths", mode, names[path][1], item),
                          parse(only, "--paths") if only else None))

    model = PRODUCTION if gpu else TINY
    hf_reason = "--no-hf" if args.no_hf else hf_missing()
    peak = bf16_matmul_peak(device)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}; bf16 matmul peak measured: {peak / 1e12:.3g} TFLOP/s"
          + ("" if gpu else " (smoke run: tiny model)"), flush=True)
    if args.profile:
        steps = args.steps or (10 if gpu else 2)
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(config(model, 32, 1, 1, args.device, "none", tmp).data)
            pre = data.preprocessing
            cfg = config(model, batch, accum, steps + 3, args.device, mode, os.path.join(tmp, "run"))
            n_params = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len).num_parameters()
            profile_trainer(cfg, data, steps, n_params, peak)
        print(f"total {time.perf_counter() - start:.0f} s")
        return
    if hf_reason is not None:
        print(f"transformers.Trainer: not timed ({hf_reason})")
        order = [o for o in order if o[0] != "transformers.Trainer"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(config(model, 32, 1, 1, args.device, "none", tmp).data)
        pre = data.preprocessing
        n_params = build_model(config(model, 32, 1, 1, args.device, "none", tmp).model, len(pre.feature_columns),
                               pre.horizon, pre.seq_len).num_parameters()
        for path, mode, only in order:
            # a path given with its configuration (``@1024x1``) runs that one, whatever --configs says
            for batch, accum in specs if only is None else [only]:
                spec = f"{batch}x{accum}"
                steps = args.steps or ((max(10, 200 // accum) if batch < 512 else 30) if gpu else max(2, 4 // accum))
                label = f"{batch} x {accum}".ljust(9) + f" {path} [{mode}]"
                if args.budget is not None and time.perf_counter() - start > args.budget:
                    print(f"{label:<58} not measured (--budget {args.budget:g} s spent)", flush=True)
                    continue
                cfg = config(model, batch, accum, steps, args.device, mode if path == "hftraining Trainer" else "none",
                             os.path.join(tmp, "run"))
                t0 = time.perf_counter()
                try:
                    if path == "hftraining Trainer":
                        per_step = time_trainer(cfg, data, steps)
                    elif path == "bare loop":
                        per_step = time_bare(cfg, data, steps, mode)
                    else:
                        per_step = time_hf(cfg, data, steps, mode == "torch_compile")
                except Exception as e:  # one path failing must not hide the others' figures
                    print(f"{label:<58} failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}", flush=True)
                    continue
                finally:
                    gc.collect()
                    if gpu:
                        torch.cuda.empty_cache()
                micro = accum / per_step
                sps = micro * batch
                mfu = 6 * n_params * sps * cfg.data.sequence_length / peak
                rows.append((spec, path, mode, micro, sps, mfu))
                print(f"{label:<58} {micro:8.1f} micro-steps/s {sps:10.0f} samples/s  MFU {mfu:6.1%}"
                      f"   ({time.perf_counter() - t0:.0f} s with warm-up)", flush=True)
    measured = list(dict.fromkeys([f"{b}x{a}" for b, a in specs] + [r[0] for r in rows]))  # --configs' order first
    rows.sort(key=lambda r: measured.index(r[0]))
    print()
    print("| configuration | path | micro-steps/s | samples/s | MFU |")
    print("|---|---|---|---|---|")
    for spec, path, mode, micro, sps, mfu in rows:
        print(f"| {spec.replace('x', ' × ')} | {path} [{mode}] | {micro:.1f} | {sps:,.0f} | {mfu:.1%} |")
    for spec in measured:
        ours = [r for r in rows if r[0] == spec and r[1] == "hftraining Trainer"]
        hf = [r for r in rows if r[0] == spec and r[1] == "transformers.Trainer" and r[2] == "torch_compile"]
        if ours and hf:
            best = max(ours, key=lambda r: r[3])
            print(f"{spec}: hftraining Trainer [{best[2]}] / transformers.Trainer [torch_compile] = {best[3] / hf[0][3]:.2f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
