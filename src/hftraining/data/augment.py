"""Training-time augmentation. Applied to training batches only (the trainer never calls it for
validation, test or prediction); draws from torch's global RNGs (the jitter from the CPU's, the
noise and scaling from the batch's device's), which checkpoints save, so a resumed run augments
exactly as an uninterrupted one."""

from __future__ import annotations

import numpy as np
import torch

from hftraining.core.config import DataConfig
from hftraining.data.windows import WindowSet


def enabled(d: DataConfig) -> bool:
    return d.augment_noise_std > 0 or d.augment_scale_std > 0 or d.augment_jitter > 0


def training_batch(ws: WindowSet, idx: np.ndarray, d: DataConfig) -> dict[str, torch.Tensor]:
    """``ws.batch(idx)`` with jitter, scaling and noise as configured in ``d``."""
    if d.augment_jitter > 0:
        # move each end back by 0..jitter rows, never before the earliest end of its own run: its
        # segment (targets stay in it, padding as in its first windows) and its part between gaps
        shift = torch.randint(0, d.augment_jitter + 1, (len(idx),)).numpy()
        ends = np.maximum(ws.ends[idx] - shift, ws.earliest_ends(idx))
        jittered = ws.subset(idx)
        jittered.ends = ends
        batch = jittered.batch(np.arange(len(idx)))
        batch["index"] = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    else:
        batch = ws.batch(idx)
    x = batch["x"]  # (B, L, F)
    if d.augment_scale_std > 0:
        x = x * (1 + d.augment_scale_std * torch.randn(x.shape[0], 1, 1, device=x.device))
    if d.augment_noise_std > 0:
        x = x + d.augment_noise_std * torch.randn_like(x)
    if "mask" in batch:
        x = x * batch["mask"].unsqueeze(-1)  # padding stays exactly zero
    batch["x"] = x
    return batch
