"""The training loop. Counts optimizer steps (not micro-batches); every piece of state that the
next step depends on is in the checkpoint, so a resumed run continues bit for bit.

The loop only: the run folder, the final model and what follows training (the test evaluation,
the report) belong to :mod:`hftraining.train.runner`, the one lifecycle of every training run."""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from hftraining import optim
from hftraining.core.config import Config, resolved_precision
from hftraining.core.errors import ConfigError, UserError
from hftraining.data import augment
from hftraining.data.pipeline import PreparedData
from hftraining.data.windows import EpochSampler, WindowSet
from hftraining.models import ForecastModel, build_model
from hftraining.models.losses import compute_loss
from hftraining.models.predict import autocast_context, predict_scaled
from hftraining.train import checkpoint as ckpt
from hftraining.train.distributed import DistInfo, all_reduce_sum, barrier
from hftraining.train.logging import RunLogger


class NonFiniteError(UserError):
    """Too many optimizer steps in a row had a NaN/Inf loss or gradient."""


@dataclass
class TrainerState:
    """Everything about progress that is not a tensor; saved as trainer_state.json."""

    global_step: int = 0
    skipped_steps: int = 0
    consecutive_nonfinite: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    best_checkpoint: str | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    sampler: dict[str, int] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class Trainer:
    """Model, optimizer, schedule, sampler and logger of one run, and the loop that trains them.

    Built by :func:`hftraining.train.runner.training_run` after it has prepared ``run_dir`` and
    seeded the RNGs; ``resume_path`` is the checkpoint to continue from (None: a fresh start)."""

    def __init__(self, cfg: Config, data: PreparedData, info: DistInfo, run_dir: Path, resume_path: Path | None = None,
                 on_evaluate: Callable[[int, dict[str, float]], None] | None = None, model: ForecastModel | None = None):
        self.cfg = cfg
        self.on_evaluate = on_evaluate  # called with (step, validation metrics) after each evaluation; may raise to stop
        t = cfg.training
        self.info = info
        self.device = self.info.device
        self.precision = resolved_precision(t)
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("training.precision: fp16 needs CUDA (use bf16 on CPU)")
        optim.check_compatibility(t)
        if self.info.enabled and optim.needs_double_backward(t):
            raise ConfigError(
                f"training.optimizer: {t.optimizer!r} needs a double backward for its Hessian estimate, which "
                "DistributedDataParallel does not support; train it in one process"
            )
        self.run_dir, self.resume_path = run_dir, resume_path
        self.ckpt_root = self.run_dir / "checkpoints"
        self.data = data
        self.val_windows = data.val.thin(cfg.evaluation.max_val_windows)  # the same windows at every evaluation
        pre = self.data.preprocessing
        if model is None:  # ``model``: one the caller built (the ETT benchmark's multivariate models)
            model = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len)
        self.model: ForecastModel = model.to(self.device)
        self.model.set_gradient_checkpointing(t.gradient_checkpointing)
        self.ddp: DDP | None = DDP(self.model) if self.info.enabled and self.model.needs_training else None
        self.augment = augment.enabled(cfg.data)
        self.state = TrainerState()
        self.sampler = EpochSampler(
            len(self.data.train), cfg.data.batch_size, t.seed, drop_last=True,
            rank=self.info.rank, world_size=self.info.world_size,
        )
        self.optimizer = self.scheduler = None
        if self.model.needs_training:
            lr_factor = {"none": 1.0, "linear": float(self.info.world_size), "sqrt": math.sqrt(self.info.world_size)}[t.lr_scaling]
            self.optimizer = optim.build_optimizer(self.model, t)
            for g in self.optimizer.param_groups:
                g["lr"] = g["lr"] * lr_factor
                g["initial_lr"] = g["lr"]
            self.scheduler = optim.build_scheduler(self.optimizer, t)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        resume_step = None
        if self.resume_path is not None:
            resume_step = json.loads((self.resume_path / "trainer_state.json").read_text())["global_step"]
            if self.info.is_main:
                _truncate_metrics(self.run_dir / "metrics.jsonl", resume_step)
        self.logger = RunLogger(
            self.run_dir, enabled=self.info.is_main, config=cfg,
            progress_bar=cfg.output.progress_bar, total_steps=t.max_steps if self.model.needs_training else 0,
            resume_step=resume_step,
        )

    # ------------------------------------------------------------------ state
    def trainer_state(self) -> dict[str, Any]:
        self.state.sampler = self.sampler.state_dict()
        self.state.scheduler = self.scheduler.state_dict() if self.scheduler else {}
        return self.state.to_dict()

    def save_checkpoint(self) -> None:
        if self.info.is_main:
            path = ckpt.save_checkpoint(
                self.ckpt_root, self.state.global_step, self.model, self.optimizer, self.trainer_state(), self.cfg.to_dict()
            )
            protect = {path} | ({Path(self.state.best_checkpoint)} if self.state.best_checkpoint else set())
            ckpt.rotate(self.ckpt_root, self.cfg.training.save_total_limit, protect)
        barrier(self.info)

    def resume(self, path: Path) -> None:
        raw = ckpt.load_checkpoint(path, self.model, self.optimizer)
        known = set(TrainerState.__dataclass_fields__)
        self.state = TrainerState(**{k: v for k, v in raw.items() if k in known})
        self.sampler.load_state_dict(self.state.sampler)
        self.scheduler.load_state_dict(self.state.scheduler)
        self.logger.info("resumed from %s at step %d", path, self.state.global_step)

    # ------------------------------------------------------------------ steps
    def _forward_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net = self.ddp if self.ddp is not None else self.model
        x, past, y = (batch[k].to(self.device, non_blocking=True) for k in ("x", "past", "y"))
        mask = batch["mask"].to(self.device) if "mask" in batch else None
        with autocast_context(self.device, self.precision):
            out = net(x, mask, past)
        return compute_loss(self.cfg.model, out, y, self.data.preprocessing.target_scale)

    def _describe(self, idx: np.ndarray) -> str:
        ws = self.data.train
        i = int(idx[0])
        ts = np.datetime64(int(ws.times[i]), "ns").astype("datetime64[s]")
        return f"window {i} (symbol {ws.symbols[ws.symbol_ids[i]]}, as of {ts}) and {len(idx) - 1} more"

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches.
        Returns the step's metrics, or None when the step was skipped for a non-finite value."""
        t = self.cfg.training
        accum = t.gradient_accumulation_steps
        step = self.state.global_step
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step's update uses
        create_graph = optim.needs_create_graph(self.optimizer, step)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64)
        parts_sum: dict[str, float] = {}
        finite = True
        for micro in range(accum):
            idx = self.sampler.next_batch()
            batch = augment.training_batch(self.data.train, idx, self.cfg.data) if self.augment else self.data.train.batch(idx)
            sync = self.ddp is None or micro == accum - 1
            with (nullcontext() if sync else self.ddp.no_sync()), optim.hessian_context(self.optimizer, step):
                try:
                    loss, parts = self._forward_loss(batch)
                    scaled = loss / accum  # mean over micro-batches, as one big batch would give
                    if self.scaler is not None:
                        scaled = self.scaler.scale(scaled)
                    scaled.backward(create_graph=create_graph)
                except RuntimeError as e:
                    raise RuntimeError(f"training batch failed at {self._describe(idx)}: {e}") from e
            loss_d = loss.detach().double().cpu()
            finite &= bool(torch.isfinite(loss_d))
            total += loss_d / accum
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / accum
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach().double().cpu()
        flag = torch.tensor([0.0 if finite and torch.isfinite(grad_norm) else 1.0], dtype=torch.float64)
        if float(all_reduce_sum(flag, self.info)) > 0:  # every rank skips together
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            self.state.skipped_steps += 1
            self.state.consecutive_nonfinite += 1
            self.logger.log({"step": step, "nonfinite_skipped": self.state.skipped_steps, "loss": float(total)})
            if self.state.consecutive_nonfinite >= t.max_consecutive_nonfinite:
                raise NonFiniteError(
                    f"training stopped: {self.state.consecutive_nonfinite} optimizer steps in a row had a "
                    f"non-finite loss or gradient (last at {self._describe(idx)}); last good checkpoint "
                    f"kept in {self.ckpt_root} (training.max_consecutive_nonfinite={t.max_consecutive_nonfinite})"
                )
            return None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.state.consecutive_nonfinite = 0
        self.state.global_step += 1
        out = {"loss": float(total), "learning_rate": lr, "grad_norm": float(grad_norm)}
        out.update({f"loss_{k}": v for k, v in parts_sum.items()} if len(parts_sum) > 1 else {})
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, ws: WindowSet, max_batches: int | None = None) -> dict[str, float]:
        """Validation metrics; with several ranks each scores a shard and the sums are all-reduced,
        so every rank sees the same numbers."""
        pre = self.data.preprocessing
        n = len(ws)
        if max_batches is not None:
            n = min(n, max_batches * self.cfg.data.eval_batch_size)
        shard = np.array_split(np.arange(n), self.info.world_size)[self.info.rank]
        if self.optimizer is not None:
            optim.set_train_mode(self.optimizer, False)  # schedule-free: evaluate the averaged weights
        sums = torch.zeros(7, dtype=torch.float64)  # sq err (scaled), sq err, abs err, hits, count, zero sq err, values
        if len(shard):
            sub = ws.subset(shard)
            pred = predict_scaled(self.model, sub, self.cfg.data.eval_batch_size, self.device, self.precision).astype(np.float64)
            true = sub.targets().astype(np.float64)
            s = pre.target_scale
            sign_p, sign_t = np.sign(pred), np.sign(true)
            keep = sign_t != 0
            hits = np.where(sign_p == 0, 0.5, (sign_p == sign_t)).astype(np.float64)[keep].sum()
            sums += torch.tensor([
                ((pred - true) ** 2).sum(), (((pred - true) * s) ** 2).sum(), (np.abs(pred - true) * s).sum(),
                hits, keep.sum(), ((true * s) ** 2).sum(), true.size,
            ], dtype=torch.float64)
        if self.optimizer is not None:
            optim.set_train_mode(self.optimizer, True)
        all_reduce_sum(sums, self.info)
        c = max(float(sums[6]), 1.0)  # forecast values: windows × H (× channels for a multivariate target)
        return {
            "loss": float(sums[0]) / c,
            "mse": float(sums[1]) / c,
            "mae": float(sums[2]) / c,
            "directional_accuracy": float(sums[3]) / max(float(sums[4]), 1.0),
            "mse_vs_zero": float(sums[1]) / float(sums[5]) if float(sums[5]) > 0 else float("nan"),
        }

    def _after_eval(self, metrics: dict[str, float]) -> None:
        """Track the best step and early stopping on ``evaluation.metric``."""
        name = self.cfg.evaluation.metric
        value = metrics[name]
        t = self.cfg.training
        best = self.state.best_metric
        if best is None or value < best - t.early_stopping_threshold:
            self.state.best_metric, self.state.best_step = value, self.state.global_step
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
            if t.early_stopping_patience and self.state.evals_without_improvement >= t.early_stopping_patience:
                self.state.stopped_early = True
                self.logger.info("early stopping at step %d: eval_%s has not improved for %d evaluations",
                                 self.state.global_step, name, self.state.evals_without_improvement)

    def _validate(self, step: int, max_batches: int | None) -> dict[str, float]:
        """Score the validation split, log it, track the best step, call ``on_evaluate``."""
        metrics = self.evaluate(self.val_windows, max_batches)
        self.logger.log({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
        self._after_eval(metrics)
        if self.on_evaluate is not None:
            self.on_evaluate(step, metrics)
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        """Train to ``training.max_steps`` (or early stopping). A model without gradient steps (a
        naive baseline, or ridge, fitted here in closed form) is evaluated once on the validation
        split instead, so every model type yields the validation metrics that tuning reads."""
        t, e = self.cfg.training, self.cfg.evaluation
        if not self.model.needs_training:
            if self.model.fits_on_data:  # closed form (ridge): fitted on the training windows, chosen on validation
                fit = self.model.fit_windows(self.data.train, self.data.val)
                self.logger.info("model %s fitted in closed form: %s", self.cfg.model.type,
                                 ", ".join(f"{k} {v:.6g}" for k, v in fit.items()))
            if len(self.data.val):
                self._validate(0, e.max_eval_batches)
            return
        if self.resume_path is not None:
            self.resume(self.resume_path)
            self.logger.advance(self.state.global_step)
        pre = self.data.preprocessing
        n_params = self.model.num_parameters()
        self.logger.info(
            "model %s: %s parameters | windows train %d, val %d, test %d | %d features, L=%d, H=%d | %s, %s, world %d",
            self.cfg.model.type, f"{n_params:,}", len(self.data.train), len(self.data.val), len(self.data.test),
            len(pre.feature_columns), pre.seq_len, pre.horizon, self.device, self.precision, self.info.world_size,
        )
        if len(self.val_windows) < len(self.data.val):
            self.logger.info("validating on %d of the %d validation windows, evenly spaced (evaluation.max_val_windows)",
                             len(self.val_windows), len(self.data.val))
        self.model.train()
        optim.set_train_mode(self.optimizer, True)
        window_start, samples = time.perf_counter(), 0
        losses: list[float] = []
        while self.state.global_step < t.max_steps and not self.state.stopped_early:
            rec = self.train_step()
            if rec is None:
                continue
            step = self.state.global_step
            samples += self.cfg.data.batch_size * t.gradient_accumulation_steps * self.info.world_size
            losses.append(rec["loss"])
            self.logger.advance()
            if step % t.logging_steps == 0 or step == t.max_steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = torch.tensor([float(np.mean(losses))], dtype=torch.float64)
                mean_loss = float(all_reduce_sum(mean_loss, self.info)) / self.info.world_size  # over all ranks
                rec.update(step=step, epoch=self.sampler.epoch, loss=mean_loss,
                           samples_per_second=samples / max(elapsed, 1e-9))
                self.logger.log({"step": step, **{k: v for k, v in rec.items() if k != "step"}})
                window_start, samples, losses = time.perf_counter(), 0, []
            evaluated = False
            if len(self.data.val) and ((e.eval_steps and step % e.eval_steps == 0) or step == t.max_steps):
                self._validate(step, e.max_eval_batches)
                evaluated = True
            epoch_end = t.save_on_epoch_end and self.sampler.at_epoch_end()
            if (t.save_steps and step % t.save_steps == 0) or step == t.max_steps or self.state.stopped_early or epoch_end:
                if evaluated and self.state.best_step == step:  # the best is only ever a saved step
                    self.state.best_checkpoint = str(self.ckpt_root / f"step-{step:08d}")
                self.save_checkpoint()

    def final_weights(self) -> None:
        """Leave the model with the weights the run keeps: the optimizer's evaluation weights
        (schedule-free averaging), or with ``training.load_best_model_at_end`` the best checkpoint's."""
        t = self.cfg.training
        if self.optimizer is not None:
            optim.set_train_mode(self.optimizer, False)
        if t.load_best_model_at_end and self.state.best_checkpoint and Path(self.state.best_checkpoint).exists():
            ckpt.load_weights(Path(self.state.best_checkpoint), self.model)
            self.logger.info("final model = best checkpoint (step %s, eval_%s=%.6g)",
                             self.state.best_step, self.cfg.evaluation.metric, self.state.best_metric)
        self.model.eval()

    def close(self) -> None:
        self.logger.close()


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the records a killed run logged after the checkpoint it resumes from (they are redone)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
