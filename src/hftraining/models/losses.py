"""Training losses. The total is a weighted sum of named components (``model.loss_weights``):

- ``mse``: squared error of the return forecast, in scaled target units;
- ``classification``: cross-entropy of the sell/hold/buy logits against labels from the *future
  returns* (log-return units) and ``model.classification_threshold``;
- ``quantile``: pinball loss of the forecast quantiles at the levels ``model.quantiles``.

A component is computed when the model produced its output (baselines and models without the
optional heads give only ``mse``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models.outputs import BUY, HOLD, SELL, ForecastOutput

LOSS_COMPONENTS = ("mse", "classification", "quantile")


def check_loss_weights(cfg: ModelConfig) -> None:
    """Raise ConfigError for an unknown, negative or unusable entry of ``model.loss_weights``."""
    for name, w in cfg.loss_weights.items():
        if name not in LOSS_COMPONENTS:
            raise ConfigError(
                f"model.loss_weights: unknown loss component {name!r}; valid: {', '.join(LOSS_COMPONENTS)}"
            )
        if w < 0:
            raise ConfigError(f"model.loss_weights.{name}: must be >= 0, got {w}")
    # a weight for a disabled head would be silently ignored: say so instead
    if "classification" in cfg.loss_weights and cfg.classification_threshold <= 0:
        raise ConfigError(
            "model.loss_weights: 'classification' is weighted but model.classification_threshold is 0 (head disabled)"
        )
    if "quantile" in cfg.loss_weights and not cfg.quantiles:
        raise ConfigError("model.loss_weights: 'quantile' is weighted but model.quantiles is empty (head disabled)")


def direction_labels(returns: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, H) future log returns → (B, H) long labels: SELL below -threshold, BUY above +threshold,
    HOLD otherwise (the boundaries themselves are HOLD)."""
    # torch.where, not boolean-mask assignment: that would read the mask's count back to the host
    hold = torch.full_like(returns, HOLD, dtype=torch.long)
    return torch.where(returns > threshold, BUY, torch.where(returns < -threshold, SELL, hold))


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor, levels: list[float]) -> torch.Tensor:
    """Mean pinball (quantile) loss. ``quantiles`` (B, H, Q) at ``levels`` (Q,), ``target`` (B, H).

    For level τ and residual r = y − q the loss is max(τ·r, (τ − 1)·r): under-forecasts cost τ per
    unit, over-forecasts 1 − τ, so its minimiser is the τ-quantile of y.
    """
    tau = _levels(tuple(levels), quantiles.dtype, quantiles.device)  # (Q,)
    r = target.unsqueeze(-1) - quantiles  # (B, H, Q)
    return torch.maximum(tau * r, (tau - 1) * r).mean()


@functools.lru_cache(maxsize=32)
def _levels(levels: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The quantile levels as a tensor on ``device``, made once: a host list copied to a GPU at
    every step would make the host wait for the copy."""
    return torch.tensor(levels, dtype=dtype, device=device)


def compute_loss(
    cfg: ModelConfig, out: ForecastOutput, target: torch.Tensor, target_scale: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {component: value}) for one micro-batch.

    ``target`` is (B, H) in scaled units (log return / ``target_scale``); ``target_scale`` turns it
    back into log returns for the buy/hold/sell labels, since the threshold is in return units.
    Losses are computed in fp32 whatever the autocast precision of the forward pass.
    """
    check_loss_weights(cfg)
    target = target.float()
    parts = {"mse": F.mse_loss(out.prediction.float(), target)}
    if out.class_logits is not None:
        labels = direction_labels(target * target_scale, cfg.classification_threshold)  # (B, H)
        parts["classification"] = F.cross_entropy(out.class_logits.float().flatten(0, 1), labels.flatten())
    if out.quantiles is not None:
        parts["quantile"] = pinball_loss(out.quantiles.float(), target, cfg.quantiles)
    total = sum(cfg.loss_weights.get(name, 1.0) * value for name, value in parts.items())
    return total, parts
