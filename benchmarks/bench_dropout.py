"""Dropout on CPU: torch's against ours (``models.layers.Dropout`` and the transformer's
``EncoderLayer``: same distribution, a cheaper mask).

    python benchmarks/bench_dropout.py [--threads 2]

Prints the time of one dropout on the production model's feed-forward activation (32 x 60 tokens
x 2048, bf16) both ways, and the production model's training step (batch 32 x 60, bf16 autocast,
dropout 0.15, fused AdamW) with torch's dropout modules and encoder layers and with ours,
alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.models import build_model
from hftraining.models.layers import Dropout
from hftraining.models.losses import compute_loss
from hftraining.models.transformer import EncoderLayer


def timed(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def to_torch_dropout(m: nn.Module) -> nn.Module:
    """torch's modules back: nn.Dropout, and nn.TransformerEncoderLayer's own forward (whose
    attention-weight dropout is F.dropout inside F.multi_head_attention_forward)."""
    for name, child in m.named_children():
        if isinstance(child, Dropout):
            setattr(m, name, nn.Dropout(child.p))
        else:
            if isinstance(child, EncoderLayer):
                child.__class__ = nn.TransformerEncoderLayer
            to_torch_dropout(child)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(32 * 60, 2048, dtype=torch.bfloat16)
    ours = Dropout(0.15).train()
    t_torch = timed(lambda: F.dropout(x, 0.15, True), 20)
    t_ours = timed(lambda: ours(x), 20)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print(f"dropout on (1920, 2048) bf16: F.dropout {t_torch * 1e3:.1f} ms, ours {t_ours * 1e3:.1f} ms = {t_torch / t_ours:.2f}x faster")
    inputs = torch.randn(32, 60, 8), torch.randn(32, 60), torch.randn(32, 5)
    steps = {"torch's dropout": [], "ours": []}
    for _ in range(args.rounds):
        for name in steps:
            torch.manual_seed(0)
            model = build_model(ModelConfig(), 8, 5, 60).train()
            if name != "ours":
                to_torch_dropout(model)
            opt = torch.optim.AdamW(model.parameters(), fused=True)

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = model(inputs[0], None, inputs[1])
                loss, _ = compute_loss(model.cfg, out, inputs[2], 1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            steps[name].append(timed(step, 4))
    base = statistics.median(steps["torch's dropout"])
    for name, ts in steps.items():
        t = statistics.median(ts)
        print(f"production training step with {name:<17}: {t * 1e3:6.0f} ms  ({base / t:.2f}x)")


if __name__ == "__main__":
    main()
