"""Trainer overhead benchmark: this trainer against a minimal hand-written PyTorch loop.

    python benchmarks/bench_trainer.py [--steps 6] [--rounds 3] [--threads 2]

Both loops train the same model on the same windows with the same optimizer (fused AdamW),
clipping, warmup+cosine schedule and bf16 autocast; rounds alternate between them so that load
from other processes hits both alike. Printed: samples/s of each, the ratio trainer / hand loop
(target >= 0.97), and for the production model the achieved model FLOP/s (6 x parameters x
tokens/s) against the bf16 matrix-multiply peak measured here (target >= 55%).
``transformers.Trainer`` is timed too, in the same rounds, when ``transformers`` and
``accelerate`` are installed (``pip install -e ".[bench]"``); the script runs without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from hftraining import optim
from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.models.predict import autocast_context
from hftraining.models import build_model
from hftraining.models.losses import compute_loss
from hftraining.train.runner import build_trainer

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


def without_validation(trainer):
    """The trainer with no validation pass inside ``fit``: the validation split emptied (no periodic
    or final validation) and so its evaluation windows, which the end of ``fit`` would otherwise score
    to check the final weights (a whole pass over up to ``evaluation.max_val_windows`` windows: 17 s of
    a 20 s timing of the tiny model). The hand-written loop validates nothing either. The caller's
    prepared data keep their validation split (on a CPU the trainer holds that very object): emptied
    there, only the first of the runs that share it paid the pass."""
    trainer.data = dataclasses.replace(trainer.data, val=trainer.data.val.subset(slice(0, 0)))
    trainer.val_windows = trainer.data.val
    return trainer


def time_trainer(cfg, data) -> float:
    """Seconds for ``max_steps`` steps of Trainer.fit (logging included; no eval, no checkpoint)."""
    trainer = without_validation(build_trainer(cfg, data))
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


class _WindowBatches(torch.utils.data.Dataset):
    """The training windows as a map-style Dataset for ``transformers.Trainer``'s DataLoader.
    ``__getitems__`` (used by torch's DataLoader for a whole batch of indices) gathers the batch
    with one fancy-index, as the hand loop does, instead of 32 single windows and a collate."""

    def __init__(self, ws):
        self.ws = ws

    def __len__(self) -> int:
        return len(self.ws)

    def __getitems__(self, idx) -> dict[str, torch.Tensor]:
        b = self.ws.batch(np.asarray(idx, dtype=np.int64))
        return {k: b[k] for k in ("x", "past", "y")}  # no "mask": the hand loop passes None too

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class _WithLoss(torch.nn.Module):
    """The forecaster with its loss, in the form ``transformers.Trainer`` expects: ``forward``
    takes the batch's keys and returns {"loss": ...}."""

    def __init__(self, model, model_cfg, target_scale: float):
        super().__init__()
        self.model, self.model_cfg, self.target_scale = model, model_cfg, target_scale

    def forward(self, x, past, y):
        out = self.model(x, None, past)  # under Trainer's bf16 autocast
        with torch.autocast("cpu", enabled=False):  # the loss outside autocast, as in the hand loop
            return {"loss": compute_loss(self.model_cfg, out, y, self.target_scale)[0]}


def hf_missing() -> str | None:
    """Why ``transformers.Trainer`` cannot be timed here (None: it can)."""
    try:
        import accelerate  # noqa: F401  (Trainer needs it)
        import transformers  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def time_hf_trainer(cfg, data) -> float:
    """Seconds for ``max_steps`` steps of ``transformers.Trainer.train`` on the same model, windows
    and settings (fused AdamW, clipping, warmup+cosine to the same floor, bf16 autocast, logging
    every 10 steps to memory; no eval, no checkpoint)."""
    import transformers
    from transformers import Trainer as HFTrainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    transformers.logging.set_verbosity_error()  # "not a PreTrainedModel" and similar notices
    t = cfg.training
    torch.manual_seed(t.seed)
    pre = data.preprocessing
    model = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len)

    class Clock(TrainerCallback):
        """Times from the end of the first (warm-up) optimizer step to the end of training: every
        timed step includes fetching its batch, as in the hand loop; the end includes Trainer's
        closing bookkeeping (final loss, speed metrics), as Trainer.fit's does in time_trainer."""

        t0, first, elapsed, steps = None, 0, 0.0, 0

        def on_step_end(self, args, state, control, **kwargs):
            if self.t0 is None:
                self.first, self.t0 = state.global_step, time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.elapsed, self.steps = time.perf_counter() - self.t0, state.global_step - self.first

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            # One warm-up step more than the others run timed; the schedule spans max_steps + 1
            # steps instead of max_steps (no effect on speed).
            max_steps=t.max_steps + 1,
            per_device_train_batch_size=cfg.data.batch_size,
            dataloader_drop_last=True,  # always full batches, like the other two
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            adam_beta1=t.adam_beta1,
            adam_beta2=t.adam_beta2,
            adam_epsilon=t.adam_epsilon,
            optim="adamw_torch_fused",
            max_grad_norm=t.max_grad_norm,
            # Linear warmup, then cosine down to min_lr_ratio of the peak, like optim.lr_multiplier
            # (HF's warmup starts at 0 rather than 1/(warmup+1)).
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio},
            warmup_steps=optim.warmup_steps(t),
            bf16=True,
            use_cpu=True,
            seed=t.seed,
            logging_steps=10,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            dataloader_num_workers=0,
            dataloader_pin_memory=False,  # nothing to pin for on CPU
            remove_unused_columns=False,  # the model's inputs are the batch's keys already
            disable_tqdm=True,
        )
        clock = Clock()
        trainer = HFTrainer(
            model=_WithLoss(model, cfg.model, pre.target_scale),
            args=args,
            train_dataset=_WindowBatches(data.train),
            data_collator=lambda batch: batch,  # __getitems__ returns the batch already
            callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # it would print the logged loss dicts to stdout
        trainer.train()
    torch.set_num_threads(threads)  # in case accelerate changed it (it does for multi-process CPU)
    # clock.steps is max_steps (steps 2 .. max_steps + 1); scaled in case a future Trainer ran
    # a different number, so that the seconds are for exactly max_steps optimizer steps.
    return clock.elapsed * t.max_steps / clock.steps


def bf16_matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a bf16 n x n matrix product on this machine as the model's ``Linear`` layers run it
    (``F.linear``; best of ``reps``). On a CPU without bf16 instructions ``a @ b`` in bf16 takes a path
    about 30x slower than ``F.linear`` (0.3 against 10 GFLOP/s on a 2-core AVX2 machine), which would
    put the MFU far above 100% and take minutes to measure."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    F.linear(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        F.linear(a, b)
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
    hf_reason = hf_missing()
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
            timers = {"ours": time_trainer, "hand": time_hand_loop}
            if hf_reason is None:
                timers["hf"] = time_hf_trainer
            order, times = list(timers), {k: [] for k in timers}
            for r in range(args.rounds):  # rotate which goes first: none gets the warmer machine
                k = r % len(order)
                for key in order[k:] + order[:k]:
                    times[key].append(timers[key](cfg, data))
            samples = steps * cfg.data.batch_size
            sps = {k: samples / statistics.median(v) for k, v in times.items()}
            sps_ours, sps_hand = sps["ours"], sps["hand"]
            params = build_model(cfg.model, len(data.preprocessing.feature_columns), 5, 60).num_parameters()
            flops = 6 * params * sps_ours * cfg.data.sequence_length
            print(f"{name}: {params:,} parameters, batch 32 x 60, bf16 autocast, {steps} steps x {args.rounds} rounds")
            print(f"  hand-written loop : {sps_hand:9.1f} samples/s")
            print(f"  hftraining Trainer: {sps_ours:9.1f} samples/s   ratio {sps_ours / sps_hand:.3f} (target >= 0.97)")
            print(f"  model FLOP/s (6 x params x tokens/s): {flops / 1e9:.1f} GFLOP/s = "
                  f"{flops / peak:.0%} of the measured bf16 matmul peak")
            if hf_reason is None:
                print(f"  transformers.Trainer: {sps['hf']:9.1f} samples/s   "
                      f"ratio hftraining/HF {sps_ours / sps['hf']:.3f}")
            else:
                print(f"  transformers.Trainer: not timed ({hf_reason}; pip install -e \".[bench]\" to include it)")


if __name__ == "__main__":
    main()
