"""Forecasts that need no training, the bar every trained model must clear. They read the target's
own history ``past`` (B, L) — 1-step log returns of the close in scaled target units — and return
(B, H) in the same units, through the same ``forward``/evaluation path as trained models.

They have no parameters; ``save_pretrained`` still writes config.json and a (tensor-free)
model.safetensors, so a baseline folder loads like any other model folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models.base import ForecastModel
from hftraining.models.layers import last_valid, masked_mean
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS


class Baseline(ForecastModel):
    needs_training = False

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:
        if past is None:
            raise ValueError(f"{self.cfg.type} baseline needs past (B, L), the target's history over the window")
        if mask is not None:
            # padded steps carry no history: zero them so nothing (NaN included) leaks from them
            past = past.masked_fill(~mask, 0.0)
        return ForecastOutput(prediction=self.predict(past, mask))  # (B, H)

    def predict(self, past: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@MODELS.register("zero")
class ZeroBaseline(Baseline):
    """Zero return for every step: the random-walk forecast of the price."""

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:
        # the one baseline that needs no history; x only tells the batch size, dtype and device
        src = past if past is not None else x[..., 0]  # (B, L)
        return ForecastOutput(prediction=src.new_zeros(src.shape[0], self.horizon))  # (B, H)


@MODELS.register("repeat")
class RepeatBaseline(Baseline):
    """The last observed 1-step return, repeated for every step (last value)."""

    def predict(self, past: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        last = last_valid(past.unsqueeze(-1), mask)  # (B, 1)
        return last.expand(-1, self.horizon).clone()  # (B, H)


@MODELS.register("drift")
class DriftBaseline(Baseline):
    """The mean 1-step return over the window's valid steps, for every step (drift)."""

    def predict(self, past: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mean = masked_mean(past.unsqueeze(-1), mask)  # (B, 1)
        return mean.expand(-1, self.horizon).clone()  # (B, H)


@MODELS.register("seasonal_naive")
class SeasonalNaiveBaseline(Baseline):
    """The return one season (``model.season_length`` rows) before each forecast step."""

    settings = frozenset({"season_length"})

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_features, horizon, seq_len)
        if cfg.season_length > seq_len:
            raise ConfigError(
                f"model.season_length: {cfg.season_length} is longer than data.sequence_length {seq_len}"
            )
        s = cfg.season_length
        # step h (1-based) of the forecast copies time T + h − s·k, with k the smallest whole number
        # of seasons that lands inside the window (T = the window's last step): for h ≤ s that is
        # one season back, beyond it the pattern repeats
        # (from a list: torch's meta arange, the folder's shape check, imports torch._dynamo, 1 s of CPU)
        offsets = [h - s * ((h - 1) // s + 1) for h in range(1, horizon + 1)]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)  # (H,) in [1 − s, 0], from T

    def predict(self, past: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s = self.cfg.season_length
        if past.shape[1] < s:
            # a window shorter than a season: pad on the left so indices never wrap around
            past = F.pad(past, (s - past.shape[1], 0))
        L = past.shape[1]
        # steps older than the window's real history read padding (zeroed in forward): the
        # forecast falls back to a zero return there, the no-information forecast
        return past[:, L - 1 + self.offsets]  # (B, H)
