"""Optimizer registry. ``training.optimizer`` selects by name; an unknown name is a ConfigError
that lists the valid ones. Parameter groups: no weight decay on biases, norms and embeddings."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from hftraining.config import TrainingConfig
from hftraining.errors import ConfigError
from hftraining.optim.schedules import lr_multiplier, warmup_steps
from hftraining.registry import Registry

OptimizerFactory = Callable[[list[dict[str, Any]], TrainingConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", "training.optimizer")

__all__ = ["OPTIMIZERS", "build_optimizer", "build_scheduler", "param_groups", "lr_multiplier", "warmup_steps"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices with decay; biases, norm weights and embeddings without."""
    no_decay_types = (nn.LayerNorm, nn.Embedding, nn.BatchNorm1d, nn.GroupNorm)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, no_decay_types) or p.ndim < 2 or name.endswith("bias"):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _kwargs(t: TrainingConfig, allowed: set[str] | None = None) -> dict[str, Any]:
    return dict(t.optimizer_kwargs)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], t: TrainingConfig) -> torch.optim.Optimizer:
    # torch's fused AdamW runs on CPU (and CUDA) since 2.4 and gives the same update as foreach.
    kwargs = {"fused": True, **_kwargs(t)}
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon, **kwargs)


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], t: TrainingConfig) -> torch.optim.Optimizer:
    kwargs = {"momentum": 0.9, **_kwargs(t)}
    return torch.optim.SGD(groups, lr=t.learning_rate, **kwargs)


def build_optimizer(model: nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``t.optimizer`` over ``model``'s parameter groups."""
    factory = OPTIMIZERS.get(t.optimizer)
    try:
        return factory(param_groups(model, t.weight_decay), t)
    except TypeError as e:  # an unexpected keyword in optimizer_kwargs
        raise ConfigError(f"training.optimizer_kwargs: {t.optimizer}: {e}") from None


def build_scheduler(optimizer: torch.optim.Optimizer, t: TrainingConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over optimizer steps; ``get_last_lr()`` is the rate the next ``step()`` uses."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, t))
