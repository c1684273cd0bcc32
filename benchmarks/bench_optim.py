"""Optimizer step time on the production transformer, as a ratio to fused AdamW.

    .venv/bin/python benchmarks/bench_optim.py                  # production: B 32, L 60, 8×512, FF 2048
    .venv/bin/python benchmarks/bench_optim.py --only gpro lion  # a subset

Prints the model's size, one forward+backward time, then for every optimizer the median step time
and its ratio to fused AdamW. Each optimizer is timed in rounds that alternate with the fused
AdamW reference (same parameters, same fixed gradients), and the ratio is taken within a round:
on a shared machine, load that drifts between optimizers cancels out. Sophia is timed on its
ordinary steps (``--stat min`` on a busy machine); its Hessian refresh (a create_graph backward and one Hessian-vector product,
every ``update_period`` steps) is a separate line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from hftraining.core.config import ModelConfig, TrainingConfig
from hftraining.models import build_model, compute_loss
from hftraining.optim import build_optimizer, hessian_context, needs_create_graph

TARGET = {"gpro": 1.3}  # issue 4: GPro within 1.3× of fused AdamW


def build(args: argparse.Namespace) -> tuple[nn.Module, callable]:
    """The production model and a loss function of it (no stand-in network: the table is this model's)."""
    x = torch.randn(args.batch, args.seq, args.features)  # (B, L, F)
    target = torch.randn(args.batch, args.horizon)  # (B, H)
    cfg = ModelConfig()
    model = build_model(cfg, args.features, args.horizon, args.seq).train()
    past = torch.randn(args.batch, args.seq)  # (B, L)
    return model, lambda: compute_loss(cfg, model(x, None, past), target, 0.01)[0]


def step_time(fn, n: int, stat=statistics.median) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stat(times)


OPTIMIZERS = [
    ("adamw (fused)", "adamw", {}),
    ("adamw (foreach)", "adamw", {"fused": False, "foreach": True}),
    ("gpro", "gpro", {}),
    ("gpro (torch fused-Adam path)", "gpro", {"implementation": "fused"}),
    ("gpro (foreach path)", "gpro", {"implementation": "foreach"}),
    ("gpro frobenius", "gpro", {"projection": "frobenius"}),
    ("sgd", "sgd", {}),
    ("lion", "lion", {}),
    ("lamb", "lamb", {}),
    ("adan", "adan", {}),
    ("adafactor", "adafactor", {}),
    ("sophia", "sophia", {}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=60)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds alternating with fused AdamW")
    p.add_argument("--only", nargs="*", help="registry names to time (fused AdamW is always the reference)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic of the timed steps; min resists load from other processes")
    args = p.parse_args()
    known = list(dict.fromkeys(name for _, name, _ in OPTIMIZERS))
    for name in args.only or ():  # a misspelt name timed nothing but the reference
        if name not in known:
            p.error(f"--only: {name!r} is not one of {', '.join(known)}")
    stat = getattr(statistics, args.stat) if args.stat == "median" else min

    torch.manual_seed(0)
    model, loss_fn = build(args)
    params = [q for q in model.parameters() if q.requires_grad]
    print(f"model: {sum(q.numel() for q in params) / 1e6:.1f}M parameters; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; batch {args.batch} x seq {args.seq}")

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn().backward()

    fwd_bwd()  # warm-up
    print(f"forward+backward: {step_time(fwd_bwd, 5) * 1e3:.0f} ms (median of 5)")
    grads = [q.grad.detach().clone() for q in params]

    def set_grads() -> None:
        for q, g in zip(params, grads):
            q.grad = g.clone()

    def timer(opt: torch.optim.Optimizer):
        set_grads()  # fixed gradients: every optimizer steps on the same input
        for _ in range(3):  # warm-up: state allocation, first-touch of pages
            opt.step()
        return step_time(opt.step, args.steps, stat)

    reference = build_optimizer(model, TrainingConfig(optimizer="adamw", learning_rate=1e-4))
    rows = []
    for label, name, kwargs in OPTIMIZERS:
        if args.only and name not in args.only and name != "adamw":
            continue
        opt = build_optimizer(model, TrainingConfig(optimizer=name, learning_rate=1e-4, optimizer_kwargs=kwargs))
        if name == "sophia":  # its first step refreshes the Hessian: make one real, then time ordinary steps
            t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            with hessian_context(opt, 0):
                loss_fn().backward(create_graph=needs_create_graph(opt, 0))
                opt.step()
            refresh = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            opt.update_period = 10**9
        ratios, times = [], []
        for _ in range(args.rounds):
            ref_t = timer(reference)
            t = timer(opt)
            times.append(t)
            ratios.append(t / ref_t)
        rows.append((label, statistics.median(times), statistics.median(ratios), TARGET.get(name)))
        if name == "sophia":
            rows.append(("sophia Hessian refresh (fwd+bwd create_graph + step)", refresh, refresh / statistics.median(
                [timer(reference) for _ in range(1)]), None))
        del opt

    print(f"\n{'optimizer':55s} {'step ms':>8s} {'x fused AdamW':>14s}")
    for label, t, ratio, target in rows:
        note = f"  (target <= {target}: {'met' if ratio <= target else 'NOT met'})" if target else ""
        print(f"{label:55s} {t * 1e3:8.1f} {ratio:14.2f}{note}")


if __name__ == "__main__":
    main()
