"""The transformer forecaster: per-timestep tokens → input projection → sinusoidal positions →
pre-LayerNorm encoder → pooling → multi-horizon return head."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hftraining.config import ModelConfig
from hftraining.models.base import ForecastModel
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sinusoidal encoding of "Attention Is All You Need"."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


@MODELS.register("transformer")
class TransformerForecaster(ForecastModel):
    supports_gradient_checkpointing = True

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_features, horizon, seq_len)
        d = cfg.hidden_size
        ff = cfg.intermediate_size or 4 * d
        self.input_proj = nn.Linear(n_features, d)
        self.register_buffer("positions", sinusoidal_positions(seq_len, d), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, cfg.num_heads, ff, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, horizon))

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L, F) → pooled (B, d)."""
        L = x.shape[1]
        h = self.dropout(self.input_proj(x) + self.positions[-L:])  # (B, L, d)
        pad = None if mask is None else ~mask  # PyTorch wants True where a key is padding
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # bind this layer explicitly: recomputation must use its own weights
                h = checkpoint(layer, h, None, pad, use_reentrant=False)
            else:
                h = layer(h, src_key_padding_mask=pad)
        h = self.norm(h)
        if self.cfg.pooling == "last":
            return h[:, -1]  # left padding: the last step is always real
        if mask is None:
            return h.mean(dim=1)
        w = mask.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
        return (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:
        return ForecastOutput(prediction=self.head(self.encode(x, mask)))  # (B, H)
