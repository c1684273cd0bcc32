"""Small blocks shared by models and baselines: reductions over the valid (unpadded) steps of a
left-padded window. The transformer pools its tokens with them and the baselines reduce the target
history with the same code, so "last valid step" and "mean over valid steps" mean one thing."""

from __future__ import annotations

import importlib
import math

import numpy as np
import torch


def last_valid(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, C) → (B, C): the value at the last step where ``mask`` is True (the last step if None).

    Windows are left-padded, so the last step is normally real; taking the last *valid* index
    keeps this right for any padding layout at the cost of one gather.
    """
    if mask is None:
        return h[:, -1]
    L = mask.shape[1]
    # argmax returns the first maximum: on the flipped mask that is the last True step
    idx = (L - 1) - mask.flip(1).to(torch.int8).argmax(dim=1)  # (B,)
    return h[torch.arange(h.shape[0], device=h.device), idx]  # (B, C)


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, C) → (B, C): mean over the steps where ``mask`` is True (over all steps if None)."""
    if mask is None:
        return h.mean(dim=1)
    m = mask.unsqueeze(-1)  # (B, L, 1)
    # masked_fill rather than h * m: a NaN in a padded step must not leak (NaN * 0 is NaN)
    total = h.masked_fill(~m, 0.0).sum(dim=1)  # (B, C)
    # a window with no real step would divide by zero; the clamp returns 0 for it instead of NaN
    return total / m.sum(dim=1).clamp_min(1).to(h.dtype)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A CPU dropout mask: (``keep``, uint8 0/1 of ``shape``; ``scale``).

    Each element gets 16 random bits (see :mod:`hftraining.models._mask_numba`: a counter-based
    hash seeded by one draw from torch's global RNG) and is dropped when they fall in the lowest
    ``round(p * 65536)`` of the 65,536 values: p is rounded to a multiple of 2^-16 (0.15 →
    0.149994) and ``scale = 1 / (1 - that p)`` keeps the expectation exact. A p within 2^-17 of 1
    (``model.dropout: 0.999999``, allowed as below 1) keeps 1 value in 65,536, as ``F.dropout``
    keeps some: rounded to 1 it divided by zero in the first training step. The mask is uint8
    rather than bool: torch's CPU kernels vectorise bf16 × uint8 and not bf16 with bool.
    """
    # imported here, not with the module: Numba's import (about 0.2 s) is paid by the first training-mode
    # dropout on CPU, not by inference (eval mode draws no mask); compiled on first use
    keep_words = importlib.import_module("hftraining.models._mask_numba").keep_words
    n = math.prod(shape)
    dropped = min(round(p * 65536), 65535)
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) % 2**64
    words = torch.empty(((n + 3) // 4, 4), dtype=torch.uint8, device=device)
    keep_words(np.uint64(seed), np.uint64(dropped), words.numpy())
    return words.view(-1)[:n].view(shape), 65536 / (65536 - dropped)


def _masked_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    # one pass: 0 + scale·x·keep (torch.where/masked_fill with a bool mask are 4-8x slower on CPU)
    return torch.addcmul(torch.zeros((), dtype=x.dtype), x, keep, value=scale)


class _MaskedScale(torch.autograd.Function):
    """y = x·keep·scale; the gradient is masked and scaled the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _masked_scale(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _masked_scale(grad, keep, ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Functional :class:`Dropout`: ``F.dropout`` off CPU and inside ``torch.compile`` (which makes
    its own fused mask), the cheaper mask of :func:`keep_mask` on CPU otherwise."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.nn.functional.dropout(x, p, True)
    keep, scale = keep_mask(x.shape, p, x.device)
    return _MaskedScale.apply(x, keep, scale)


class Dropout(torch.nn.Module):
    """``nn.Dropout`` with a cheaper mask on CPU: each element dropped with probability p (rounded
    to a multiple of 2^-16) and the rest scaled by 1 / (1 - p), drawn from torch's global RNG.

    Why not ``F.dropout``: on CPU it draws its mask with ``bernoulli_``, one call of torch's
    Mersenne Twister per element, and applies it in two passes; :func:`keep_mask` hashes 16 bits
    per element and the mask is applied in one. On the production model's (1920, 2048) bf16
    feed-forward activation: 24 ms with ``F.dropout``, 2 ms here (``python
    benchmarks/bench_dropout.py`` prints both and the training-step time with each). On other
    devices ``F.dropout`` is fused and kept.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``nn.Dropout`` inside ``module`` (e.g. those of ``nn.TransformerEncoderLayer``)
    by :class:`Dropout`; attention-weight dropout inside ``nn.MultiheadAttention`` is a functional
    call and stays as it is."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Dropout):
            setattr(module, name, Dropout(child.p))
        else:
            use_fast_dropout(child)
    return module
