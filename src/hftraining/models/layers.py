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


class Dropout(torch.nn.Module):
    """``nn.Dropout`` with a cheaper mask on CPU: keep each element with probability 1 - p and
    scale by 1 / (1 - p), the same distribution, drawn from torch's global RNG.

    Why not ``F.dropout``: on CPU it draws its mask with ``bernoulli_``, which measured 31.8 ms on a
    (1920, 2048) bf16 activation against 8.4 ms for ``torch.rand`` of the same shape; in the
    production model's training step dropout was about 30% of the time
    (``python benchmarks/bench_dropout.py`` prints both and the step time with each). On other
    devices ``F.dropout`` is fused and kept.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, True)
        keep = torch.rand(x.shape, device=x.device) >= self.p  # (same shape) bool
        return x * keep * (1.0 / (1.0 - self.p))

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
