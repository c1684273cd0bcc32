"""Learning-rate schedules as pure functions of the optimizer step (not the micro-batch)."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError


def warmup_steps(t: TrainingConfig) -> int:
    """Warmup length in optimizer steps: ``warmup_steps`` if set, else ``warmup_ratio · max_steps`` rounded
    to the nearest step, a half up (``round`` took halves to the even step: 0.5 of 5 steps warmed up for 2,
    0.5 of 7 for 4). The product is taken of the ratio as written, in decimal: the float product fell just
    below a half (0.35 × 90 = 31.499999999999996), so 0.35 of 90 steps warmed up for 31, not 31.5 up to 32."""
    if t.warmup_steps is not None:
        return t.warmup_steps
    return math.floor(Fraction(repr(float(t.warmup_ratio))) * t.max_steps + Fraction(1, 2))


SCHEDULE_SETTINGS = {
    "min_lr_ratio": ("linear", "cosine", "cosine_restarts", "wsd"),  # the floor every decay reaches
    "num_cycles": ("cosine_restarts",),
    "decay_ratio": ("wsd",),
}
"""Schedule keys of ``training`` → the ``lr_scheduler`` values whose formula reads them."""


def check_schedule(t: TrainingConfig, *, lengths: bool = True) -> None:
    """ConfigError for schedule values the formulas cannot use, and for a key of :data:`SCHEDULE_SETTINGS`
    set away from its default under a schedule that does not read it (``min_lr_ratio: 0.01`` with
    ``constant`` trained at the peak rate to the end without a word). The config does not record which
    keys a user wrote, so a value equal to the default counts as not set. ``lengths``: also :func:`check_warmup`
    and :func:`check_cycles`, which read ``max_steps`` and the warmup; a tune checking a choice against the
    config's other settings leaves them out, since a searched ``max_steps`` or warmup is not the config's."""
    if t.lr_scheduler == "cosine_restarts" and t.num_cycles < 1:
        raise ConfigError(f"training.num_cycles: must be >= 1 for cosine_restarts, got {t.num_cycles}")
    if lengths:
        check_warmup(t)
        check_cycles(t)
    if t.lr_scheduler == "wsd" and not 0 < t.decay_ratio <= 1:
        raise ConfigError(f"training.decay_ratio: must be in (0, 1] for wsd, got {t.decay_ratio}")
    defaults = TrainingConfig()
    for key, schedules in SCHEDULE_SETTINGS.items():
        value = getattr(t, key)
        if t.lr_scheduler not in schedules and value != getattr(defaults, key):
            raise ConfigError(f"training.{key}: lr_scheduler {t.lr_scheduler} does not use it (got {value!r}); remove "
                              f"the key or choose a schedule that reads it ({', '.join(schedules)})")


def check_warmup(t: TrainingConfig) -> None:
    """ConfigError naming the key the warmup was resolved from (``training.warmup_steps``, else
    ``training.warmup_ratio``) when the warmup leaves the schedule no step: the peak rate comes at step
    ``warmup``, so a warmup of ``max_steps`` steps never reaches ``training.learning_rate``, and a decay
    (every schedule but ``constant``) reaches its floor at the last update only if that comes after the
    peak. ``warmup_steps: 100`` of ``max_steps: 100`` (or ``warmup_ratio: 0.95`` of 10 steps, 10 by
    rounding) trained the whole run on a rising rate, and ``max_steps - 1`` ended at the peak: the cosine
    to ``min_lr_ratio`` that was asked for never acted, and nothing said so. No warmup is never refused, nor a
    decay whose floor is the peak (``min_lr_ratio: 1``) ending there."""
    warm = warmup_steps(t)
    last = t.max_steps - 1  # the step of the last update
    flat = t.lr_scheduler == "constant" or t.min_lr_ratio == 1  # no decay to reach (its floor is the peak)
    most = last if flat else last - 1  # the longest warmup that leaves the schedule its steps
    if warm == 0 or warm <= most:
        return
    if t.warmup_steps is not None:
        what = f"training.warmup_steps: {warm}"
    else:
        what = (f"training.warmup_ratio: {t.warmup_ratio!r} of training.max_steps {t.max_steps} is a warmup of "
                f"{warm} step{'s' if warm > 1 else ''}")
    if flat or warm > last:
        why = (f"the rate would rise to the last update (step {last}) and never reach training.learning_rate "
               f"(the peak comes at step {warm})")
    else:
        why = (f"the last update (step {last}) would be the peak, so the {t.lr_scheduler} decay to "
               f"training.min_lr_ratio {t.min_lr_ratio:g} would never act")
    fix = f"warm up for at most {most} step{'s' if most > 1 else ''}" if most > 0 else "set training.warmup_steps: 0"
    raise ConfigError(f"{what}: {why}; {fix} or raise training.max_steps")


def check_cycles(t: TrainingConfig) -> None:
    """ConfigError naming ``training.num_cycles`` when ``cosine_restarts`` has more cycles than the steps after
    the warmup hold (each needs 2), with the ``max_steps`` that would hold them."""
    if t.lr_scheduler == "cosine_restarts" and t.num_cycles > 1:
        # a cycle needs two decay steps: the peak, then a step down. Shorter ones sampled the cosine at a
        # stride of a cycle or more: 10 cycles over 10 decay steps stayed at the peak to the last step, 12 over
        # 19 rose as often as it fell; the run trained on without a restart where one was asked for
        warm = warmup_steps(t)
        span = t.max_steps - 1 - warm  # the decay's steps after its first (lr_multiplier)
        if 2 * t.num_cycles > span:
            # the fewest steps that hold them; a warmup_ratio's warmup grows with max_steps, so a lower bound
            # ((1 - ratio)·max_steps - 1/2 steps at most follow the warmup) and up from there
            low = (2 * t.num_cycles + 0.5) / (1 - t.warmup_ratio) if t.warmup_steps is None else 0
            enough = max(t.max_steps + 1, warm + 1 + 2 * t.num_cycles, math.floor(low) - 1)
            while 2 * t.num_cycles > enough - 1 - warmup_steps(dataclasses.replace(t, max_steps=enough)):
                enough += 1
            raise ConfigError(
                f"training.num_cycles: {t.num_cycles} cosine cycles need at least 2 steps each, but training.max_steps "
                f"{t.max_steps} after a warmup of {warm} leaves {max(span, 0)} before the last update (at the floor); "
                f"set it to at most {max(span // 2, 1)} or raise training.max_steps to at least {enough}"
            )


WARMUP_FROM = ("max_steps", "warmup_ratio", "warmup_steps")
"""The ``training`` keys the warmup length is resolved from (:func:`warmup_steps`)."""


def resolved_lengths(t: TrainingConfig) -> dict[str, Any]:
    """The schedule's lengths resolved from ``t`` (JSON values): ``warmup``, the warmup in optimizer steps,
    and ``warmup_from``, the keys of :data:`WARMUP_FROM` it was resolved from. Every other length of the
    schedule (the decay's span, a restart's step, wsd's decay start) follows from ``warmup`` and
    ``max_steps`` without rounding."""
    return {"warmup": warmup_steps(t), "warmup_from": {k: getattr(t, k) for k in WARMUP_FROM}}


class Schedule:
    """:func:`lr_multiplier` of a run as the callable ``LambdaLR`` calls, holding the lengths it resolved
    (:func:`resolved_lengths`) as its state. ``LambdaLR.state_dict()`` saves a callable object's
    ``__dict__``, so a checkpoint's ``scheduler.lr_lambdas`` holds them (the config it keeps, a slot, is
    not saved), and ``load_state_dict`` puts them back: a run resumed with the same settings warms up for
    the steps its checkpoint did, whatever this version's rounding of ``warmup_ratio × max_steps`` says
    (0.5 of 5 steps was 2 before it rounded a half up, 3 since). A resume that changes a key of
    :data:`WARMUP_FROM` (``max_steps`` raised to train on) resolves the warmup anew from the new settings,
    as a run started with them would; a checkpoint written before the lengths were saved (its
    ``lr_lambdas`` hold null) resolves them as this version does."""

    __slots__ = ("t", "__dict__")

    def __init__(self, t: TrainingConfig):
        self.t = t
        self.__dict__.update(resolved_lengths(t))

    def __call__(self, step: int) -> float:
        if self.__dict__.get("warmup_from") != {k: getattr(self.t, k) for k in WARMUP_FROM}:
            self.__dict__.update(resolved_lengths(self.t))  # restored from a run with other settings
        return lr_multiplier(step, self.t, self.__dict__["warmup"])


def lr_multiplier(step: int, t: TrainingConfig, warm: int | None = None) -> float:
    """Factor on the peak learning rate for the update made at optimizer step ``step`` (0-based).

    Linear warmup from 1/(warmup+1) to 1 (never 0, so the first update does something); the peak
    at step ``warmup``; then the chosen decay, which reaches ``min_lr_ratio`` at the last update
    (step ``max_steps - 1``) and stays there. ``cosine_restarts`` runs ``num_cycles`` cosine
    cycles, each from the peak down to the floor; ``wsd`` stays at the peak, then decays
    linearly over the last ``decay_ratio`` of the post-warmup steps. ``warm``: the warmup length
    (default: :func:`warmup_steps`; a resumed run's :class:`Schedule` passes its checkpoint's).
    """
    if warm is None:
        warm = warmup_steps(t)
    if step < warm:
        return (step + 1) / (warm + 1)
    if t.lr_scheduler == "constant":
        return 1.0
    # Decay over steps warm .. max_steps-1, so the last update of the run uses the floor.
    span = max(1, t.max_steps - 1 - warm)
    progress = min(1.0, (step - warm) / span)
    floor = t.min_lr_ratio
    kind = t.lr_scheduler
    if kind == "linear":
        return floor + (1 - floor) * (1 - progress)
    if kind == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "cosine_restarts":
        # Integer arithmetic, so a restart lands exactly on its step: cycle = (pos·n mod span)/span.
        pos = step - warm
        cycle = 1.0 if pos >= span else (pos * t.num_cycles % span) / span
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * cycle))
    if kind == "wsd":  # warmup-stable-decay: flat, then linear down to the floor at the last update
        start = 1 - t.decay_ratio
        if progress <= start:
            return 1.0
        return floor + (1 - floor) * (1 - (progress - start) / t.decay_ratio)
    raise ValueError(kind)  # the config's Literal type rules this out
