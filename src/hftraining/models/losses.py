"""Training losses. The total is a weighted sum of named components (``model.loss_weights``):

- ``mse``: squared error of the return forecast, in scaled target units (``model.loss: mse``);
- ``ic``: minus the mean per-date Pearson correlation of forecast and label across symbols
  (``model.loss: ic``), or ``rank``: ListNet's cross-entropy of the per-date softmax distributions
  of label and forecast (``model.loss: rank``); both per horizon step, over the dates of the batch
  with at least three symbols for ``ic``, two for ``rank`` (``data.batching: dates``);
- ``classification``: cross-entropy of the sell/hold/buy logits against labels from the *future
  returns* (log-return units) and ``model.classification_threshold``;
- ``quantile``: pinball loss of the forecast quantiles at the levels ``model.quantiles``.

A component is computed when the model produced its output (baselines and models without the
optional heads give only ``mse``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models.outputs import BUY, HOLD, SELL, ForecastOutput

LOSS_COMPONENTS = ("mse", "ic", "rank", "classification", "quantile")

MIN_MEMBERS = {"ic": 3, "rank": 2}
"""The fewest windows a date needs to count in the ``ic`` / ``rank`` loss: the Pearson correlation of two
points is ±1 and has no gradient; a softmax over one member is 1."""


def check_loss_weights(cfg: ModelConfig) -> None:
    """Raise ConfigError for an unknown, negative or unusable entry of ``model.loss_weights``."""
    for name, w in cfg.loss_weights.items():
        if name in ("mse", "ic", "rank") and name != cfg.loss:
            raise ConfigError(f"model.loss_weights: {name!r} is weighted but model.loss is {cfg.loss!r}")
        if name not in LOSS_COMPONENTS:
            raise ConfigError(
                f"model.loss_weights: unknown loss component {name!r}; valid: {', '.join(LOSS_COMPONENTS)}"
            )
        if w < 0:
            raise ConfigError(f"model.loss_weights.{name}: must be >= 0, got {w}")
    # a weight for a disabled head would be silently ignored: say so instead
    if "classification" in cfg.loss_weights and cfg.classification_threshold <= 0:
        raise ConfigError(
            "model.loss_weights: 'classification' is weighted but model.classification_threshold is 0 (head disabled)"
        )
    if "quantile" in cfg.loss_weights and not cfg.quantiles:
        raise ConfigError("model.loss_weights: 'quantile' is weighted but model.quantiles is empty (head disabled)")


def check_loss_learns(cfg: ModelConfig) -> None:
    """Raise ConfigError when every loss part a model trained by gradient steps computes has weight 0:
    the loss is 0 and every gradient 0, so the run "trained" (weight decay alone moving the weights) and
    exited 0 with an untrained model scored as trained. A model fitted otherwise (ridge, LightGBM, the naive
    baselines) does not read the weights, and a model folder is loaded whatever they are."""
    parts = [cfg.loss, *(["classification"] if cfg.classification_threshold > 0 else []),
             *(["quantile"] if cfg.quantiles else [])]
    if all(cfg.loss_weights.get(name, 1.0) == 0 for name in parts):
        raise ConfigError(f"model.loss_weights: every loss part of the model ({', '.join(parts)}) has weight 0, so the "
                          "loss and every gradient would be 0 and the run would learn nothing; give one a positive weight")


def direction_labels(returns: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, H) future log returns → (B, H) long labels: SELL below -threshold, BUY above +threshold,
    HOLD otherwise (the boundaries themselves are HOLD)."""
    # torch.where, not boolean-mask assignment: that would read the mask's count back to the host
    hold = torch.full_like(returns, HOLD, dtype=torch.long)
    return torch.where(returns > threshold, BUY, torch.where(returns < -threshold, SELL, hold))


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor, levels: list[float]) -> torch.Tensor:
    """Mean pinball (quantile) loss. ``quantiles`` (B, H, Q) at ``levels`` (Q,), ``target`` (B, H).

    For level τ and residual r = y − q the loss is max(τ·r, (τ − 1)·r): under-forecasts cost τ per
    unit, over-forecasts 1 − τ, so its minimiser is the τ-quantile of y.
    """
    tau = _levels(tuple(levels), quantiles.dtype, quantiles.device)  # (Q,)
    r = target.unsqueeze(-1) - quantiles  # (B, H, Q)
    return torch.maximum(tau * r, (tau - 1) * r).mean()


@functools.lru_cache(maxsize=32)
def _levels(levels: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The quantile levels as a tensor on ``device``, made once: a host list copied to a GPU at
    every step would make the host wait for the copy."""
    return torch.tensor(levels, dtype=dtype, device=device)


def _group_moments(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor):
    """Per group and step: the member count (G, 1) and the demeaned forecast and target (G, B, H),
    zero outside the group. ``groups``: (G, B) float membership (1 = window b is on date g)."""
    n = groups.sum(1, keepdim=True)  # (G, 1)
    m = groups.unsqueeze(-1)  # (G, B, 1)
    dp = (pred.unsqueeze(0) - ((groups @ pred) / n.clamp(min=1)).unsqueeze(1)) * m  # (G, B, H)
    dy = (target.unsqueeze(0) - ((groups @ target) / n.clamp(min=1)).unsqueeze(1)) * m
    return n, dp, dy


def ic_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Minus the mean per-date Pearson IC of ``pred`` and ``target`` (B, H) across the members of each
    date of ``groups`` (G, B), per step; dates with fewer than 3 members are left out (the
    correlation of two points is ±1 and has no gradient)."""
    n, dp, dy = _group_moments(pred, target, groups)
    cov, vp, vy = (dp * dy).sum(1), (dp * dp).sum(1), (dy * dy).sum(1)  # (G, H)
    ic = cov / torch.sqrt(vp * vy + 1e-12)
    valid = (n >= MIN_MEMBERS["ic"]).to(ic.dtype).expand_as(ic)
    return -(ic * valid).sum() / valid.sum().clamp(min=1)


def listnet_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """ListNet (Cao et al. 2007, top-one probabilities): per date of ``groups`` (G, B) and step, the
    cross-entropy of softmax(target) and softmax(pred) over the date's members; dates with fewer
    than 2 members are left out. ``pred``, ``target``: (B, H)."""
    member = groups.unsqueeze(-1) > 0  # (G, B, 1)
    far = torch.finfo(pred.dtype).min / 4  # a finite "minus infinity": 0 × it stays 0
    lp = torch.log_softmax(pred.unsqueeze(0).masked_fill(~member, far), dim=1)  # (G, B, H)
    py = torch.softmax(target.unsqueeze(0).masked_fill(~member, far), dim=1)
    ce = -(py * lp * member).sum(1)  # (G, H)
    valid = (groups.sum(1, keepdim=True) >= MIN_MEMBERS["rank"]).to(ce.dtype).expand_as(ce)
    return (ce * valid).sum() / valid.sum().clamp(min=1)


def compute_loss(
    cfg: ModelConfig, out: ForecastOutput, target: torch.Tensor, target_scale: float,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {component: value}) for one micro-batch.

    ``target`` is (B, H) in scaled units (label / ``target_scale``); ``target_scale`` turns it
    back into log returns for the buy/hold/sell labels, since the threshold is in return units.
    ``groups`` (G, B): the dates of the batch as a float membership matrix, for ``model.loss`` ic
    or rank. Losses are computed in fp32 whatever the autocast precision of the forward pass.
    """
    check_loss_weights(cfg)
    target = target.float()
    pred = out.prediction.float()
    if cfg.loss == "mse":
        parts = {"mse": F.mse_loss(pred, target)}
    else:
        if groups is None:
            raise ConfigError(f"model.loss: {cfg.loss!r} needs the dates of each batch (data.batching=dates)")
        fn = ic_loss if cfg.loss == "ic" else listnet_loss
        parts = {cfg.loss: fn(pred, target, groups.float())}
    if out.class_logits is not None:
        # in float64, as the evaluation cuts its labels (float64 label × target_scale against the threshold):
        # in float32 the threshold and the product round, and a label within that rounding of ±threshold
        # trained as one class and was scored as another
        labels = direction_labels(target.double() * target_scale, cfg.classification_threshold)  # (B, H)
        parts["classification"] = F.cross_entropy(out.class_logits.float().flatten(0, 1), labels.flatten())
    if out.quantiles is not None:
        parts["quantile"] = pinball_loss(out.quantiles.float(), target, cfg.quantiles)
    return weighted_total(cfg, parts), parts


def weighted_total(cfg: ModelConfig, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss: the parts weighted by ``model.loss_weights`` (1 for a part it does not name), summed."""
    return sum(cfg.loss_weights.get(name, 1.0) * value for name, value in parts.items())


def term_counts(cfg: ModelConfig, times: np.ndarray) -> dict[str, int]:
    """How many terms each part :func:`compute_loss` can return averages over, in a batch of windows with
    as-of ``times`` (B,): ``mse``, ``classification`` and ``quantile`` are means over the windows (times the
    horizon steps and levels, the same in every batch), ``ic`` and ``rank`` over the dates holding at least
    :data:`MIN_MEMBERS` windows (times the horizon steps). Weighting each micro-batch's part by its count
    over the step's total makes the accumulated gradient that of one batch of every micro-batch."""
    counts = {"mse": len(times), "classification": len(times), "quantile": len(times)}
    if cfg.loss != "mse":
        _, members = np.unique(np.asarray(times), return_counts=True)  # windows per date, as date_groups groups
        counts[cfg.loss] = int((members >= MIN_MEMBERS[cfg.loss]).sum())
    return counts
