"""Small blocks shared by models and baselines: reductions over the valid (unpadded) steps of a
left-padded window. The transformer pools its tokens with them and the baselines reduce the target
history with the same code, so "last valid step" and "mean over valid steps" mean one thing."""

from __future__ import annotations

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
