"""The model registry (``model.type``) and :func:`build_model`, the one way a model is built."""

from __future__ import annotations

import torch
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.core.registry import Registry
from hftraining.models.losses import check_loss_weights

MODELS = Registry("model", "model.type")


def check_heads(cfg: ModelConfig, model_cls: type) -> None:
    """A head that ``cfg`` asks for and the model type does not have is a ConfigError naming the key."""
    wanted = {"quantile": ("model.quantiles", bool(cfg.quantiles)),
              "classification": ("model.classification_threshold", cfg.classification_threshold > 0)}
    for head, (key, asked) in wanted.items():
        if asked and head not in model_cls.heads:
            having = ", ".join(n for n in MODELS.names() if head in MODELS.get(n).heads) or "none"
            raise ConfigError(f"{key}: model.type {cfg.type!r} has no {head} head (models with one: {having}); "
                              f"remove the key or choose another model.type")


def check_model(cfg: ModelConfig) -> type:
    """The model class of ``cfg.type``, once the model section's type, loss weights and heads are known
    to fit it (ConfigErrors naming the key): what can be checked before any data is read."""
    factory = MODELS.get(cfg.type)
    check_loss_weights(cfg)  # fail at build time, not at the first training step
    check_heads(cfg, factory)
    return factory


def build_model(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int) -> nn.Module:
    """Build the model named by ``cfg.type`` (a :class:`~hftraining.models.base.ForecastModel`) for
    inputs (B, seq_len, n_features) → (B, horizon)."""
    return check_model(cfg)(cfg, n_features, horizon, seq_len)


def check_buildable(cfg: ModelConfig, horizon: int, seq_len: int, gradient_checkpointing: bool = False) -> None:
    """Build the model of ``cfg`` once for windows of ``seq_len`` rows and ``horizon`` steps (one input
    column; on the CPU, its weights drawn outside the run's generator) and drop it: a ConfigError its
    constructor raises (``model.season_length`` longer than the window, ``training.gradient_checkpointing``
    on a model without it) is said before the run folder is touched. Raised while the trainer was built,
    it came after ``output.overwrite`` had removed the earlier run. (The meta device would allocate
    nothing, but its first use costs seconds.)"""
    with torch.random.fork_rng(devices=[]):
        build_model(cfg, 1, horizon, seq_len).set_gradient_checkpointing(gradient_checkpointing)
