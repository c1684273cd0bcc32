"""The optimizer as the training loop sees it: one object with one interface for every optimizer,
so the loop has no branch for any of them.

- the learning rate scaled by the data-parallel world size (``training.lr_scaling``), applied once
  when it is built, and the schedule (``LambdaLR`` over optimizer steps);
- Sophia's refresh steps: :meth:`TrainOptimizer.create_graph` (the backward keeps its graph) and
  :meth:`TrainOptimizer.hessian_context` (the forward and backward use the math attention kernel);
- schedule-free optimizers' two sets of weights: :meth:`train` before training forwards,
  :meth:`eval` before evaluation or saving;
- a step skipped for a non-finite loss or gradient, decided on the device: :meth:`step` takes the
  flag as a device tensor. Torch's fused optimizers (``adamw``, whose kernel returns when the flag is
  set and undoes its step count) and GPro skip without the host reading the flag; every other
  optimizer reads it back (a host synchronisation on a GPU, none on the CPU), listed by
  :attr:`TrainOptimizer.syncs_to_skip`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from hftraining.core.config import TrainingConfig
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
        if not self.syncs_to_skip:
            opt.found_inf = found_inf
            try:
                opt.step()
            finally:
                del opt.found_inf
        elif not bool(found_inf):  # reads the flag back: a host synchronisation on a GPU
            opt.step()
        self.scheduler.step()

    def train(self) -> None:
        set_train_mode(self.optimizer, True)

    def eval(self) -> None:
        set_train_mode(self.optimizer, False)
