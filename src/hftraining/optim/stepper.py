"""The optimizer as the training loop sees it: one object with one interface for every optimizer,
so the loop has no branch for any of them.

- the learning rate scaled by the data-parallel world size (``training.lr_scaling``), applied once
  when it is built, and the schedule (``LambdaLR`` over optimizer steps);
- Sophia's refresh steps: :meth:`TrainOptimizer.create_graph` (the backward keeps its graph) and
  :meth:`TrainOptimizer.hessian_context` (the forward and backward use the math attention kernel);
- schedule-free optimizers' two sets of weights: :meth:`eval` before evaluation or exporting,
  :meth:`train` after it; the training weights come back exactly as they were (the optimizer's own
  switch back recomputes them with rounding, so every evaluation would nudge the run);
- a step skipped for a non-finite loss or gradient, decided on the device: :meth:`step` takes the
  flag as a device tensor. Torch's fused optimizers (``adamw``, whose kernel returns when the flag is
  set and undoes its step count) and GPro skip without the host reading the flag; every other
  optimizer reads it back (a host synchronisation on a GPU, none on the CPU), listed by
  :attr:`TrainOptimizer.syncs_to_skip`. Fused SGD with momentum reads it back on its first update
  only: that step allocates its momentum buffers uninitialised and leaves the kernel to fill them,
  so a first step skipped on the device would keep garbage as momentum.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import torch
from torch import nn

from hftraining.core.config import TrainingConfig
from hftraining.core.errors import DataError
from hftraining.optim import build_optimizer, build_scheduler, hessian_context, needs_create_graph, set_train_mode

LR_SCALING = {"none": lambda w: 1.0, "linear": float, "sqrt": math.sqrt}


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours a ``found_inf`` tensor attribute (skips the update on the
    device when it is 1): torch's fused Adam/AdamW/SGD/Adagrad and GPro."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) or getattr(optimizer, "supports_found_inf", False))


class TrainOptimizer:
    """Optimizer and schedule of one run (see the module docstring). ``optimizer`` and ``scheduler``
    are the torch objects the checkpoint saves."""

    def __init__(self, model: nn.Module, t: TrainingConfig, world_size: int = 1):
        self.optimizer = build_optimizer(model, t)
        factor = LR_SCALING[t.lr_scaling](world_size)
        for g in self.optimizer.param_groups:
            g["lr"] = g["lr"] * factor
            g["initial_lr"] = g["lr"]
        self.scheduler = build_scheduler(self.optimizer, t)
        self.syncs_to_skip = not skips_on_device(self.optimizer)
        self._state_ready = False  # whether a device skip leaves the state as it was (decided at the steps)
        self._train_weights: list[torch.Tensor] | None = None  # set aside by eval(), put back by train()

    @property
    def lr(self) -> float:
        """The learning rate the next :meth:`step` uses (of the first parameter group)."""
        return self.optimizer.param_groups[0]["lr"]

    def create_graph(self) -> bool:
        """Whether the backward passes of the next step must keep their graph (Sophia's Hessian refresh)."""
        return needs_create_graph(self.optimizer, 0)

    def hessian_context(self) -> contextlib.AbstractContextManager[Any]:
        """Context for the forward and backward of each micro-batch of the next step."""
        return hessian_context(self.optimizer, 0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, found_inf: torch.Tensor) -> None:
        """Update the weights unless ``found_inf`` (a float32 0-dim tensor on the parameters' device,
        1.0 = skip) is set, then advance the schedule either way: a skipped step counts as a step of
        the run (its batches are consumed and the schedule moves on), but the weights and the
        optimizer's own state (moments, step count) stay as they were."""
        opt = self.optimizer
        if not self.syncs_to_skip and not self._state_ready:
            self._state_ready = _state_ready(opt)  # once true, it stays
        if not self.syncs_to_skip and self._state_ready:
            opt.found_inf = found_inf
            try:
                opt.step()
            finally:
                del opt.found_inf
        elif not bool(found_inf):  # reads the flag back: a host synchronisation on a GPU
            opt.step()
        else:
            # skipped: before any optimizer.step(), torch warns that the schedule "skips its first value";
            # here it moves on on purpose (a skipped step counts as a step of the run)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                self.scheduler.step()
            return
        self.scheduler.step()

    def load_schedule(self, state: dict[str, Any]) -> None:
        """Restore the schedule's position from a checkpoint (after the optimizer's state, whose
        parameter groups hold the rate the checkpoint's run had set) and set the rate of the next
        step from this run's schedule: a resume that changes it (``training.max_steps`` raised to train
        on, another ``lr_scheduler`` or warmup) took its first step at the old schedule's rate, and the
        new one only from the second. With the schedule unchanged the rate is the same, bit for bit
        (``LambdaLR`` computes it the same way).

        A state without the schedule's position, rates or lengths, or with one of another kind (a
        checkpoint written before checksums, edited or cut: ``{}``) is a DataError, which the caller
        names the file of (a ``KeyError: 'lr_lambdas'`` or a TypeError from torch otherwise)."""
        s = self.scheduler
        _check_schedule_state(state, len(self.optimizer.param_groups))
        s.load_state_dict(dict(state))  # a copy: torch pops and puts back its lr_lambdas
        for g, base, fn in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas, strict=True):
            lr = base * fn(s.last_epoch)
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr
        s._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # what get_last_lr() reports

    def train(self) -> None:
        """Training weights in the model (before training forwards): for a schedule-free optimizer,
        those :meth:`eval` set aside, bit for bit."""
        set_train_mode(self.optimizer, True)
        if self._train_weights is not None:
            with torch.no_grad():  # in place: compiled graphs keep the parameters' addresses
                torch._foreach_copy_(_params(self.optimizer), self._train_weights)
            self._train_weights = None

    def eval(self, keep_train_weights: bool = True) -> None:
        """Evaluation weights in the model (schedule-free averaging; a no-op for other optimizers).
        ``keep_train_weights``: set the training weights aside for :meth:`train` (a copy of the
        parameters while evaluating); False when training is over.

        Before any update was applied (every step so far skipped: fp16's scaler finding its scale, a NaN
        batch) there is nothing averaged yet and the evaluation weights are the training weights: SPlus's
        switch read its average from a state it did not have yet (a KeyError)."""
        if not self.optimizer.state:
            return
        if keep_train_weights and self._train_weights is None and _has_eval_weights(self.optimizer):
            self._train_weights = [p.detach().clone() for p in _params(self.optimizer)]
        set_train_mode(self.optimizer, False)


def _check_schedule_state(state: Any, groups: int) -> None:
    """DataError unless ``state`` is a ``LambdaLR`` state that :meth:`TrainOptimizer.load_schedule` can
    continue from: ``last_epoch`` (the optimizer steps taken) a whole number of at least 0, ``base_lrs``
    one finite rate a parameter group and ``lr_lambdas`` one entry a group, each null (a checkpoint
    written before the schedule's lengths were saved) or an object whose ``warmup``, if any, is a whole
    number of at least 0."""
    if not isinstance(state, dict):
        raise DataError(f"scheduler must be an object with last_epoch, base_lrs and lr_lambdas, got {type(state).__name__}")
    for key, what in (("last_epoch", "the schedule's position"), ("base_lrs", "the peak rate of each parameter group"),
                      ("lr_lambdas", "the schedule's lengths")):
        if key not in state:
            raise DataError(f"scheduler has no {key} ({what})")
    v = state["last_epoch"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise DataError(f"scheduler's last_epoch must be a whole number of at least 0, got {v!r}")
    rates = state["base_lrs"]
    if (not isinstance(rates, list) or len(rates) != groups
            or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in rates)):
        raise DataError(f"scheduler's base_lrs must be a list of {groups} finite rates (one a parameter group), got {rates!r}")
    lambdas = state["lr_lambdas"]
    if not isinstance(lambdas, list) or len(lambdas) != groups or not all(f is None or isinstance(f, dict) for f in lambdas):
        raise DataError(f"scheduler's lr_lambdas must be a list of {groups} objects or nulls (one a parameter group), "
                        f"got {lambdas!r}")
    for f in lambdas:
        w = (f or {}).get("warmup", 0)
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise DataError(f"scheduler's lr_lambdas warmup must be a whole number of at least 0, got {w!r}")


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def _has_eval_weights(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``eval()`` swaps other weights in (schedule-free) now: it has the method and is in
    training mode (its ``train_mode`` flag, on itself or on every group)."""
    if not callable(getattr(optimizer, "eval", None)):
        return False
    if hasattr(optimizer, "train_mode"):
        return bool(optimizer.train_mode)
    flags = [g["train_mode"] for g in optimizer.param_groups if "train_mode" in g]
    return all(flags) if flags else True


def _state_ready(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step skipped on the device leaves the optimizer's state as it was. Not so for torch's
    fused SGD with momentum before its first update: it creates the momentum buffers with
    ``torch.empty_like`` and relies on the kernel, which returns at once when the flag is set, to
    fill them (the next update then starts from whatever memory they got)."""
    if isinstance(optimizer, torch.optim.SGD):
        return all(optimizer.state.get(p, {}).get("momentum_buffer") is not None  # .get: adds no state
                   for g in optimizer.param_groups if g["momentum"] for p in g["params"] if p.grad is not None)
    return True
