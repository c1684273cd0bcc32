"""Learning-rate schedules as pure functions of the optimizer step (not the micro-batch)."""

from __future__ import annotations

import math

from hftraining.config import TrainingConfig


def warmup_steps(t: TrainingConfig) -> int:
    return t.warmup_steps if t.warmup_steps is not None else int(round(t.warmup_ratio * t.max_steps))


def lr_multiplier(step: int, t: TrainingConfig) -> float:
    """Factor on the peak learning rate for the update made at optimizer step ``step`` (0-based).

    Linear warmup from 1/(warmup+1) to 1 (never 0, so the first update does something), then the
    chosen decay down to ``min_lr_ratio``.
    """
    warm = warmup_steps(t)
    if step < warm:
        return (step + 1) / (warm + 1)
    total = max(1, t.max_steps - warm)
    progress = min(1.0, (step - warm) / total)
    floor = t.min_lr_ratio
    kind = t.lr_scheduler
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return floor + (1 - floor) * (1 - progress)
    if kind == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "cosine_restarts":
        cycle = (progress * t.num_cycles) % 1.0 if progress < 1 else 1.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * cycle))
    if kind == "wsd":  # warmup-stable-decay: flat, then linear decay over the last decay_ratio
        start = 1 - t.decay_ratio
        if progress < start:
            return 1.0
        return floor + (1 - floor) * (1 - (progress - start) / max(t.decay_ratio, 1e-12))
    raise ValueError(kind)  # the config's Literal type rules this out
