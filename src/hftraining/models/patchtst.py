"""PatchTST ("A Time Series is Worth 64 Words", Nie et al., ICLR 2023): RevIN instance
normalisation → each channel cut into patches → a transformer encoder over the patches of one
channel at a time (channel independence: channels are folded into the batch and share every
weight) → a flatten head.

Two uses share :class:`RevIN` and :class:`PatchEncoder`:

* :class:`PatchTST` (``model.type: patchtst``) is the project's forecaster: the F feature channels
  (and ``past``, the target's own history, as one more channel) are encoded independently, and one
  linear head maps all channels' flattened patch representations to the next H log returns.
* :class:`PatchTSTMultivariate` is the paper's long-horizon model (B, L, C) → (B, H, C): one head
  shared by all channels maps each channel's representation to its own H future values. The ETT
  benchmark (``hftraining.workflows.ett``) uses it.

Against the paper's reference code (``yuqinie98/PatchTST``, ``PatchTST_backbone`` with the ETT
scripts' settings: RevIN without affine, end padding, BatchNorm, a shared flatten head), the
encoder computes the same function of the same weights except in three places, all of which
follow the paper's text (a vanilla post-norm encoder) rather than that code's defaults:

* no residual attention: the reference's ``res_attention=True`` (RealFormer) adds each layer's
  pre-softmax scores to the next layer's; here each layer attends on its own scores;
* one dropout on the attention sublayer's output, where the reference applies two in a row (the
  output projection's ``proj_dropout`` and ``dropout_attn``, both ``dropout``);
* ``head_dropout`` acts on the head's input, the reference's on its output (0 in the ETT scripts).

RevIN's mean, last value and scale are not detached from the graph as the reference's are; the
inputs never require a gradient, so every parameter's gradient is the same (a training-mode forward
and backward, BatchNorm on batch statistics, against ``PatchTST_backbone`` run on the same weights:
outputs, gradients and running statistics agree to float32 rounding; ``tests/test_models_round18.py``).

The flattened head reads (patch, d_model) in patch-major order, the reference's in d_model-major
order: a fixed permutation of the head's inputs, the same model. ``tests/test_models_reference_audit.py``
checks the forward against one written out from the reference source. Trained with the
package's trainer on ETTh1-96 at L = 336, this model scores 0.376 MSE against the 0.375 published
for PatchTST/42 (README, ETT benchmark).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models.base import ForecastModel
from hftraining.models.layers import Dropout
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., ICLR 2022) over the time axis, per window and
    channel. ``normalize`` returns ``(x, loc, scale)`` so forecasts can be brought back with
    ``denormalize``; the metric is always computed after that, on the caller's scale."""

    def __init__(self, n_channels: int, affine: bool = False, subtract_last: bool = False, eps: float = 1e-5):
        super().__init__()
        self.affine = affine
        self.subtract_last = subtract_last
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(n_channels))
            self.bias = nn.Parameter(torch.zeros(n_channels))

    def normalize(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, C), mask (B, L) True on real steps → (x_norm (B, L, C), loc (B, 1, C), scale (B, 1, C))."""
        if mask is None:
            mean = x.mean(dim=1, keepdim=True)  # (B, 1, C)
            var = x.var(dim=1, keepdim=True, unbiased=False)
        else:
            # statistics over the real steps only: left padding must not shrink the scale. Padded
            # steps are zeroed first with masked_fill, not by the weights: a NaN there would reach
            # every statistic (NaN * 0 is NaN)
            x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
            w = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
            n = w.sum(dim=1, keepdim=True).clamp_min(1.0)
            mean = (x * w).sum(dim=1, keepdim=True) / n
            var = (((x - mean) * w) ** 2).sum(dim=1, keepdim=True) / n
        scale = torch.sqrt(var + self.eps)
        loc = x[:, -1:, :] if self.subtract_last else mean  # left padding: the last step is real
        z = (x - loc) / scale
        if self.affine:
            z = z * self.weight + self.bias
        if mask is not None:
            z = z.masked_fill(~mask.unsqueeze(-1), 0.0)  # padded steps carry no information
        return z, loc, scale

    def denormalize(self, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """y (B, H, C) in normalised units → caller's units."""
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * scale + loc


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm over d_model, as in the paper (it reports BatchNorm beats LayerNorm for time series).

    ``update_stats=False`` normalises with the batch statistics without touching the running ones:
    gradient checkpointing recomputes a layer in backward, and without this the running statistics
    would be updated twice per step."""

    def forward(self, x: torch.Tensor, update_stats: bool = True) -> torch.Tensor:  # x (N, T, d)
        x = x.transpose(1, 2)  # (N, d, T): BatchNorm1d normalises dim 1
        if self.training and not update_stats:
            # the same op on throwaway copies of the running buffers: the recomputation must save
            # exactly the tensors the first forward saved, so the op itself may not change
            rm, rv = self.running_mean.clone(), self.running_var.clone()
            y = F.batch_norm(x, rm, rv, self.weight, self.bias, True, self.momentum, self.eps)
        else:
            y = super().forward(x)
        return y.transpose(1, 2)


class PatchTSTLayer(nn.Module):
    """Post-norm encoder layer of the paper: attention and feed-forward sublayers, each followed by
    a residual connection and BatchNorm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm_attn = _BatchNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norm_ff = _BatchNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(
        self, h: torch.Tensor, key_padding: torch.Tensor | None = None, update_stats: bool = True
    ) -> torch.Tensor:
        """h (N, T, d); key_padding (N, T) True where a patch is padding."""
        n, t, d = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 × (N, h, T, dh)
        attn_mask = None if key_padding is None else ~key_padding[:, None, None, :]  # True = may attend
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (N, h, T, dh)
        a = self.out(a.transpose(1, 2).reshape(n, t, d))
        h = self.norm_attn(h + self.dropout(a), update_stats)
        return self.norm_ff(h + self.dropout(self.ff(h)), update_stats)


def num_patches(seq_len: int, patch_len: int, stride: int) -> int:
    """Patches per channel with the paper's end padding (``stride`` copies of the last step)."""
    return (seq_len - patch_len) // stride + 2


class PatchEncoder(nn.Module):
    """Channel-independent patch encoder: (N, L) univariate series → (N, P, d), P patches.

    Callers fold channels into N so every channel is encoded with the same weights."""

    no_weight_decay = ("positions",)  # an embedding table: the optimizer's param_groups give it no decay

    def __init__(
        self, seq_len: int, patch_len: int, stride: int, d_model: int, n_heads: int, n_layers: int,
        d_ff: int, dropout: float,
    ):
        super().__init__()
        if patch_len > seq_len:
            raise ConfigError(f"model.patch_len: {patch_len} is longer than the input window ({seq_len} rows)")
        if stride > patch_len:
            # unfold would step over the rows between patches: they would never be read as inputs
            raise ConfigError(f"model.patch_stride: {stride} is longer than model.patch_len {patch_len}; "
                              f"the {stride - patch_len} rows between consecutive patches would never be read")
        if d_model % n_heads:
            raise ConfigError(f"model.num_heads: {n_heads} does not divide model.hidden_size {d_model}")
        self.patch_len = patch_len
        self.stride = stride
        self.n_patches = num_patches(seq_len, patch_len, stride)
        self.proj = nn.Linear(patch_len, d_model)
        # learnable positions, initialised as in the paper's reference code
        self.positions = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.dropout = Dropout(dropout)
        self.layers = nn.ModuleList(PatchTSTLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L) → (N, P, patch_len)."""
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride)], dim=1)  # (N, L + stride): end padding
        return x.unfold(1, self.patch_len, self.stride)

    def forward(
        self, x: torch.Tensor, key_padding: torch.Tensor | None = None, checkpointing: bool = False
    ) -> torch.Tensor:
        """x (N, L); key_padding (N, P) True on all-padding patches → (N, P, d)."""
        h = self.dropout(self.proj(self.patchify(x)) + self.positions)  # (N, P, d)
        for layer in self.layers:
            if checkpointing and self.training and torch.is_grad_enabled():
                # bind this layer explicitly (default argument): recomputation must use its own
                # weights; only the first of the two calls (forward, then recompute in backward)
                # may update BatchNorm's running statistics
                calls = [0]

                def run(h_: torch.Tensor, layer: PatchTSTLayer = layer, calls: list = calls) -> torch.Tensor:
                    calls[0] += 1
                    return layer(h_, key_padding, update_stats=calls[0] == 1)

                h = checkpoint(run, h, use_reentrant=False)
            else:
                h = layer(h, key_padding)
        return h

    def patch_padding(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B, L) real-step mask → (B, P) True where a patch holds no real step (never all of them)."""
        if mask is None:
            return None
        m = torch.cat([mask, mask[:, -1:].expand(-1, self.stride)], dim=1).unfold(1, self.patch_len, self.stride)
        return ~m.any(dim=-1)


def _encoder_from_config(cfg: ModelConfig, seq_len: int) -> PatchEncoder:
    return PatchEncoder(
        seq_len, cfg.patch_len, cfg.patch_stride, cfg.hidden_size, cfg.num_heads, cfg.num_layers,
        cfg.intermediate_size or 4 * cfg.hidden_size, cfg.dropout,
    )


class PatchTSTMultivariate(nn.Module):
    """The paper's model for long-horizon benchmarks: (B, L, C) → (B, H, C), channel-independent,
    one flatten head shared by all channels (``individual=False``)."""

    def __init__(
        self, cfg: ModelConfig, n_channels: int, horizon: int, seq_len: int,
        revin_affine: bool = False, subtract_last: bool = False, head_dropout: float = 0.0,
    ):
        super().__init__()
        self.n_channels, self.horizon, self.seq_len = n_channels, horizon, seq_len
        self.gradient_checkpointing = False
        self.revin = RevIN(n_channels, affine=revin_affine, subtract_last=subtract_last)
        self.encoder = _encoder_from_config(cfg, seq_len)
        self.head_dropout = Dropout(head_dropout)
        self.head = nn.Linear(self.encoder.n_patches * cfg.hidden_size, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, L, c = x.shape
        z, loc, scale = self.revin.normalize(x)  # (B, L, C)
        z = z.transpose(1, 2).reshape(b * c, L)  # (B·C, L): channels into the batch
        h = self.encoder(z, checkpointing=self.gradient_checkpointing)  # (B·C, P, d)
        y = self.head(self.head_dropout(h.flatten(1)))  # (B·C, H)
        y = y.view(b, c, self.horizon).transpose(1, 2)  # (B, H, C)
        return self.revin.denormalize(y, loc, scale)


@MODELS.register("patchtst")
class PatchTST(ForecastModel):
    """PatchTST (Nie et al. 2023): RevIN, patches, channel-independent encoder, flatten head.

    The F feature channels plus the target's own history (``past``) as channel F are encoded
    independently by the same patch encoder; one linear head reads all channels' flattened
    representations (B, (F+1)·P·d) → (B, H), the next H log returns.

    RevIN statistics of the target channel de-normalise the forecast when ``past`` is given. Without
    ``past`` the target channel is zeros and the forecast stays in the head's own units, so train and
    predict the same way (the trainer passes ``past`` in both)."""

    supports_gradient_checkpointing = True
    settings = frozenset({"hidden_size", "num_heads", "num_layers", "intermediate_size", "dropout", "patch_len",
                          "patch_stride"})  # no pooling: the flatten head reads every patch

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_features, horizon, seq_len)
        self.n_channels = n_features + 1  # + the target's history
        self.revin = RevIN(self.n_channels)
        self.encoder = _encoder_from_config(cfg, seq_len)
        self.head_dropout = Dropout(cfg.dropout)
        self.head = nn.Linear(self.n_channels * self.encoder.n_patches * cfg.hidden_size, horizon)
        self.fp32_heads = True

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:
        b, L, f = x.shape
        target = x.new_zeros(b, L) if past is None else past.to(x.dtype)
        z, loc, scale = self.revin.normalize(torch.cat([x, target.unsqueeze(-1)], dim=-1), mask)  # (B, L, C)
        c = z.shape[-1]
        z = z.transpose(1, 2).reshape(b * c, L)  # (B·C, L)
        pad = self.encoder.patch_padding(mask)  # (B, P) or None
        if pad is not None:
            pad = pad.repeat_interleave(c, dim=0)  # (B·C, P), same order as z
        h = self.encoder(z, pad, checkpointing=self.gradient_checkpointing)  # (B·C, P, d)
        flat = self.head_dropout(h.reshape(b, self.head.in_features))  # (B, C·P·d); a batch of no windows too
        if self.fp32_heads:
            with torch.autocast(flat.device.type, enabled=False):  # forecasts in fp32: see ForecastModel.fp32_heads
                y = self.head(flat.to(self.head.weight.dtype))  # (B, H)
        else:
            y = self.head(flat)  # (B, H)
        if past is not None:
            y = y * scale[:, :, -1] + loc[:, :, -1]  # back to the target's units
        return ForecastOutput(prediction=y)
