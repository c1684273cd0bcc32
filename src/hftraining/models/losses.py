"""Training losses. The total is a weighted sum of named components (``model.loss_weights``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hftraining.config import ModelConfig
from hftraining.models.outputs import ForecastOutput


def compute_loss(
    cfg: ModelConfig, out: ForecastOutput, target: torch.Tensor, target_scale: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {component: value}). ``target`` is (B, H) in scaled units (log return / target_scale)."""
    parts = {"mse": F.mse_loss(out.prediction.float(), target.float())}
    total = sum(cfg.loss_weights.get(name, 1.0) * value for name, value in parts.items())
    return total, parts
