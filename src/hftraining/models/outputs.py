"""The output of every forecasting model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

CLASS_NAMES = ("sell", "hold", "buy")
"""Names of the buy/hold/sell classes, in the order of ``ForecastOutput.class_logits[..., k]``."""
SELL, HOLD, BUY = range(3)
N_CLASSES = len(CLASS_NAMES)
HEADS = ("classification", "quantile")
"""Optional heads a model may declare in ``ForecastModel.heads`` (the return forecast is always there)."""


@dataclass
class ForecastOutput:
    prediction: torch.Tensor
    """(B, H) forecast of the next H log returns, in the scaled target units the model was trained on."""
    class_logits: Optional[torch.Tensor] = None
    """(B, H, 3) sell/hold/buy logits, when the model has that head."""
    quantiles: Optional[torch.Tensor] = None
    """(B, H, Q) forecast quantiles in scaled target units, when the model has that head."""
