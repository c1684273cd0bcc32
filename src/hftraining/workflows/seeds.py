"""``hftraining train --seeds N``: N runs that differ only in ``training.seed``, combined into an ensemble."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from hftraining.core.config import Config
from hftraining.core.errors import ConfigError
from hftraining.data.pipeline import prepare
from hftraining.inference.ensemble import build_ensemble
from hftraining.models.registry import MODELS
from hftraining.workflows.train_run import train

log = logging.getLogger("hftraining")


def train_seeds(cfg: Config, n: int, method: str = "mean") -> Path:
    """Train ``n`` copies of ``cfg`` with seeds ``training.seed + k`` into ``<run>/seed-<k>/``, then
    build ``<run>/ensemble/`` from their final models. Returns the run folder."""
    if n < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {n}")
    if n >= 2 and not MODELS.get(cfg.model.type).needs_training:
        # ridge (closed form), LightGBM (its own fixed seed) and the naive forecasts take no gradient step:
        # training.seed reaches nothing they compute, so every "seed" would be the same model
        raise ConfigError(f"--seeds {n}: model.type {cfg.model.type!r} is fitted without gradient steps and does not "
                          "depend on training.seed, so the seeds would train identical members; train it once")
    root = cfg.run_dir()
    data = prepare(cfg.data)  # one preprocessing for every seed: the members share it by construction
    for k in range(n):
        sub = dataclasses.replace(
            cfg,
            training=dataclasses.replace(cfg.training, seed=cfg.training.seed + k),
            output=dataclasses.replace(cfg.output, output_dir=str(root / f"seed-{k}")),
        )
        log.info("seed %d of %d: training.seed=%d → %s", k + 1, n, sub.training.seed, sub.output.output_dir)
        train(sub, data)
    if n >= 2:
        build_ensemble([root / f"seed-{k}" for k in range(n)], root / "ensemble", method)
        log.info("ensemble of %d seeds (%s): %s", n, method, root / "ensemble")
    return root
