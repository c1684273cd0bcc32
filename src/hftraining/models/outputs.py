"""The output of every forecasting model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ForecastOutput:
    prediction: torch.Tensor
    """(B, H) forecast of the next H log returns, in the scaled target units the model was trained on."""
    class_logits: Optional[torch.Tensor] = None
    """(B, H, 3) sell/hold/buy logits, when the model has that head."""
    quantiles: Optional[torch.Tensor] = None
    """(B, H, Q) forecast quantiles in scaled target units, when the model has that head."""
