"""The transformer forecaster: per-timestep tokens → input projection → sinusoidal positions →
pre-LayerNorm encoder → pooling → heads.

Heads on the pooled vector: the multi-horizon return forecast (always), buy/hold/sell logits
(``model.classification_threshold > 0``) and forecast quantiles (``model.quantiles`` non-empty).
Their losses live in :mod:`hftraining.models.losses`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models.base import ForecastModel
from hftraining.models.layers import dropout, last_valid, masked_mean, use_fast_dropout
from hftraining.models.outputs import HEADS, N_CLASSES, ForecastOutput
from hftraining.models.registry import MODELS



def encoder_layer_train(layer: nn.TransformerEncoderLayer, h: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Training-mode forward of a pre-LayerNorm GELU ``nn.TransformerEncoderLayer`` on CPU.

    The same computation as ``layer(h, src_key_padding_mask=pad)``, with its own parameters, but
    every dropout, the attention weights' included, draws the cheaper mask of
    :func:`~hftraining.models.layers.dropout` (``F.multi_head_attention_forward`` would call
    ``bernoulli_`` on the (B, heads, L, L) weights) and no mask-merging checks run per call.
    ``tests/test_models.py`` checks it equals the module without dropout, padded or not.

    h: (B, L, d); pad: (B, L) bool, True where a key is padding, or None.
    """
    attn = layer.self_attn
    B, L, d = h.shape
    H = attn.num_heads
    dh = d // H
    p = layer.dropout.p
    a = layer.norm1(h)
    qkv = nn.functional.linear(a, attn.in_proj_weight, attn.in_proj_bias)  # (B, L, 3d)
    q, k, v = qkv.view(B, L, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, dh)
    scores = (q * dh**-0.5) @ k.transpose(-2, -1)  # (B, H, L, L)
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    # softmax in float32: faster on CPU than in bf16 (0.7 against 2.8 ms here) and more accurate
    weights = dropout(scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype), attn.dropout)  # (B, H, L, L)
    o = (weights @ v).transpose(1, 2).reshape(B, L, d)  # (B, L, d)
    h = h + dropout(attn.out_proj(o), p)
    f = layer.linear1(layer.norm2(h))  # (B, L, ff)
    f = layer.linear2(dropout(nn.functional.gelu(f), p))
    return h + dropout(f, p)


class EncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (same parameters and names, same eval-mode fast path) whose
    training-mode forward on CPU is :func:`encoder_layer_train`."""

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):  # noqa: D102
        own = self.norm_first and self.activation_relu_or_gelu == 2  # the layout encoder_layer_train computes
        if own and self.training and src.device.type == "cpu" and src_mask is None and not is_causal:
            return encoder_layer_train(self, src, src_key_padding_mask)
        return super().forward(src, src_mask, src_key_padding_mask, is_causal)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sinusoidal encoding of "Attention Is All You Need".

    On the meta device (a model folder's shapes checked before its weights are read) the table is
    shape only: torch's meta ``arange``/``exp``/``sin`` run Python references that import
    ``torch._dynamo`` (with them, 1 s of CPU time at the start of ``predict``), and a meta tensor has no
    values anyway."""
    if torch.get_default_device().type == "meta":
        return torch.empty(length, dim)
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


@MODELS.register("transformer")
class TransformerForecaster(ForecastModel):
    """Pre-LayerNorm transformer encoder over time steps, with return, buy/hold/sell and quantile heads."""

    supports_gradient_checkpointing = True
    heads = frozenset(HEADS)
    settings = frozenset({"hidden_size", "num_heads", "num_layers", "intermediate_size", "dropout", "pooling"})

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_features, horizon, seq_len)
        d = cfg.hidden_size
        if d < 2:
            # a LayerNorm over one value returns its bias whatever the value: the final norm would make
            # every window's pooled vector, and so its forecast, the same constant
            raise ConfigError(f"model.hidden_size: {d} gives the transformer a forecast that cannot depend on its "
                              "input (its layer norms over a single value return their bias); use at least 2")
        ff = cfg.intermediate_size or 4 * d
        self.input_proj = nn.Linear(n_features, d)
        self.register_buffer("positions", sinusoidal_positions(seq_len, d), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        # A ModuleList of layers rather than nn.TransformerEncoder: we checkpoint layer by layer,
        # and TransformerEncoder's eval-mode nested-tensor conversion (which drops padded steps)
        # does not apply. Each layer may still take PyTorch's fused "fast path" in eval mode
        # without grad (even head count); tests run the mask check on both paths.
        self.layers = nn.ModuleList(
            EncoderLayer(d, cfg.num_heads, ff, cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.fp32_heads = True
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, horizon))
        # optional heads: absent (not merely unused) when disabled, so the production config has
        # exactly the documented parameter count and old checkpoints load strictly
        self.class_head = nn.Linear(d, horizon * N_CLASSES) if cfg.classification_threshold > 0 else None
        self.quantile_head = nn.Linear(d, horizon * len(cfg.quantiles)) if cfg.quantiles else None
        use_fast_dropout(self)  # same distribution, a cheaper mask on CPU (see layers.Dropout)
        if cfg.quantiles:
            levels = torch.tensor(cfg.quantiles, dtype=torch.float64)
            # rank of each configured level among all levels: the sorted head outputs are handed
            # back in the user's order, so quantiles[..., i] belongs to cfg.quantiles[i]
            self.register_buffer("quantile_rank", levels.argsort().argsort(), persistent=False)

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L, F) scaled features, (B, L) bool mask (True = real step) or None → pooled (B, d)."""
        L = x.shape[1]
        if L > self.seq_len:
            raise ValueError(f"window of {L} steps is longer than the {self.seq_len} this model was built for")
        pad = None
        if mask is not None:
            # zero the padded inputs: a NaN there would reach the output through attention
            # (its weight is exactly 0, but 0 * NaN is NaN)
            x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
            pad = ~mask  # PyTorch wants True where a key is padding
        # positions are aligned to the window's end, so a short unpadded window and the same
        # window left-padded to seq_len give the real steps the same positions
        h = self.dropout(self.input_proj(x) + self.positions[self.seq_len - L :])  # (B, L, d)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # non-reentrant checkpoint of this very layer (bound here, not by a late-binding
                # closure), with the RNG state preserved so dropout masks repeat in recomputation
                h = checkpoint(layer, h, None, pad, use_reentrant=False)
            else:
                h = layer(h, src_key_padding_mask=pad)  # (B, L, d)
        h = self.norm(h)
        if self.cfg.pooling == "last":
            return last_valid(h, mask)  # (B, d)
        return masked_mean(h, mask)  # (B, d)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:
        z = self.encode(x, mask)  # (B, d)
        if self.fp32_heads:
            with torch.autocast(z.device.type, enabled=False):  # forecasts in fp32: see ForecastModel.fp32_heads
                return self._heads(z.to(self.norm.weight.dtype))
        return self._heads(z)

    def _heads(self, z: torch.Tensor) -> ForecastOutput:
        """Pooled (B, d) → the forecast and the optional heads' outputs."""
        B = z.shape[0]
        out = ForecastOutput(prediction=self.head(z))  # (B, H)
        if self.class_head is not None:
            out.class_logits = self.class_head(z).view(B, self.horizon, N_CLASSES)  # (B, H, 3)
        if self.quantile_head is not None:
            q = self.quantile_head(z).view(B, self.horizon, -1)  # (B, H, Q)
            # sorting makes the quantiles non-crossing by construction; it is a permutation, so
            # pinball-loss gradients flow to whichever output ends up at each level
            q = q.sort(dim=-1).values.index_select(-1, self.quantile_rank)
            out.quantiles = q
        return out
