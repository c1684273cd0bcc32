"""The one trainer lifecycle. ``train``, ``tune`` (each trial), ``walkforward`` (each fold) and
``train --seeds`` (each seed) all run a model through :func:`training_run`:

1. join the process group (unless the caller holds one for several runs),
2. prepare the run folder: resume from its latest checkpoint, or refuse to overwrite one,
3. seed every RNG (``training.seed``) before the data and the model are built,
4. build the :class:`~hftraining.train.trainer.Trainer`, write config.json and data_report.json,
5. fit (a baseline is scored once on validation instead), keep the final weights, write ``final/``,
6. hand the :class:`TrainedRun` to the caller's block (the test evaluation, a fold's scores),
   with the run's logger still writing train.log,
7. close the logger and leave the process group — also when anything above raised.
"""

from __future__ import annotations

import json
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from hftraining.core.config import Config, resume_conflicts, save_config
from hftraining.core.errors import UserError
from hftraining.core.jsonio import read_json, write_json
from hftraining.data.pipeline import PreparedData, prepare
from hftraining.eval.model_card import write_model_card
from hftraining.models import ForecastModel
from hftraining.train import checkpoint as ckpt
from hftraining.train.distributed import DistInfo, barrier, cleanup, init_distributed
from hftraining.train.logging import RunLogger, log
from hftraining.train.trainer import Trainer, TrainerState, check_config

RUN_FILES = ("metrics.jsonl", "metrics.csv", "tracking.json", "train.log", "eval.json", "report.html", "report.md")
EVALUATIONS_DIR = "evaluations"  # reports of `hftraining evaluate` on other splits/data: of this run's final model
RUN_FOLDERS = ("checkpoints", "tensorboard", "final", "report_files", EVALUATIONS_DIR)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


RANK_SEED_STRIDE = 1_000_003
"""Rank r > 0 of a process group draws from ``training.seed + r * RANK_SEED_STRIDE`` once the data
and the model are built (as nanoGPT offsets its seed by the rank)."""


def seed_rank(seed: int, rank: int) -> None:
    """Give each rank of a process group its own random streams for training (dropout masks,
    augmentation), after everything every rank must build alike: with one seed, ranks drew the same
    masks at the same batch positions. Rank 0 keeps ``seed``'s stream, so one process is unchanged."""
    if rank > 0:
        torch.manual_seed(seed + RANK_SEED_STRIDE * rank)


def check_output_dir(path: Path) -> None:
    """A UserError naming the file when ``path`` or a folder above it exists and is not a folder."""
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{blocking}: exists and is not a folder; give another output.output_dir")


def prepare_run_dir(cfg: Config, info: DistInfo) -> tuple[Path, Path | None]:
    """Decide what to resume from (None: start fresh), or refuse; removes nothing of an earlier run
    (:func:`clear_run_dir` does, once the data are built: a data mistake leaves the earlier run as it was)."""
    run_dir = cfg.run_dir()
    check_output_dir(run_dir)
    for name, what in (("model.safetensors", "a model folder"), ("ensemble.json", "an ensemble folder")):
        if (run_dir / name).exists():  # a run would overwrite its config.json and sit beside it
            raise UserError(f"{run_dir}: {what} ({name}), not a run folder; give another output.output_dir")
    ckpt_root = run_dir / "checkpoints"
    t = cfg.training
    if t.resume_from_checkpoint:
        if info.is_main:
            ckpt.clean_temporary(ckpt_root)  # half-written checkpoints of the run that died
        barrier(info)
        # verified: a damaged newest checkpoint is skipped (auto) or an error (a path named)
        path = ckpt.resolve_resume(t.resume_from_checkpoint, ckpt_root, main=info.is_main)
        if path is not None:
            check_resumable(cfg, path)
            return run_dir, path
        # nothing to resume: a fresh start, cleaned as one (a run killed before its first checkpoint left
        # its metrics.jsonl, train.log and TensorBoard events, which the new run's would have joined)
        if (run_dir / "final").exists() and not cfg.output.overwrite:  # but never a finished run, unasked
            raise UserError(f"{run_dir}: holds a finished run (final/) and no checkpoint to resume; start over "
                            "with output.overwrite=true, or give another output.output_dir")
    elif ckpt.list_checkpoints(ckpt_root) and not cfg.output.overwrite:
        raise UserError(
            f"{run_dir}: already holds checkpoints; continue it with --resume "
            "(training.resume_from_checkpoint=auto) or start over with output.overwrite=true"
        )
    elif (run_dir / "final").exists() and not cfg.output.overwrite:  # a finished run saved no checkpoint
        raise UserError(f"{run_dir}: holds a finished run (final/); start over with output.overwrite=true, "
                        "or give another output.output_dir")
    return run_dir, None


def clear_run_dir(info: DistInfo, run_dir: Path) -> None:
    """A fresh start: remove what an earlier run left in ``run_dir`` (:data:`RUN_FOLDERS`, :data:`RUN_FILES`)."""
    ckpt_root = run_dir / "checkpoints"
    if info.is_main:
        if ckpt.list_checkpoints(ckpt_root):  # output.overwrite: said, never silent
            log.warning("output.overwrite: starting over in %s; the earlier run's checkpoints, final model, logs and "
                        "reports are removed", run_dir)
        for name in RUN_FOLDERS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    barrier(info)


def check_resumable(cfg: Config, path: Path) -> None:
    """A UserError naming the keys when ``cfg`` changes what checkpoint ``path`` cannot continue with
    (:data:`~hftraining.core.config.RESUME_FIXED`: the model's shapes, the windows and their order,
    the optimizer): the weights would not load, or the sampler's position would count through other
    windows, silently."""
    conflicts = resume_conflicts(read_json(path / "config.json"), cfg)
    if conflicts:
        shown = ", ".join(f"{k}={json.dumps(now)} (the checkpoint's: {json.dumps(then)})" for k, then, now in conflicts[:3])
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise UserError(f"{path}: cannot resume with {shown}{more}: a resumed run keeps the checkpoint's model, data "
                        "and optimizer; resume without the change, or start over with output.overwrite=true")


@dataclass
class TrainedRun:
    """What a finished run hands to the block of :func:`training_run`."""

    cfg: Config
    run_dir: Path
    data: PreparedData
    model: ForecastModel  # in eval mode, with the final weights
    state: TrainerState
    info: DistInfo
    device: torch.device
    precision: str  # the training precision, also used to evaluate
    logger: RunLogger  # still open: lines go to the console and train.log
    weights_step: int | None = None  # the step whose weights ``model`` holds, when not the last (load_best_model_at_end)

    @property
    def is_main(self) -> bool:
        return self.info.is_main


def build_trainer(
    cfg: Config,
    data: PreparedData | None = None,
    info: DistInfo | None = None,
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
    model: ForecastModel | None = None,
) -> Trainer:
    """Steps 2–4 of the lifecycle: the run folder, the seeds, the data and the Trainer (nothing
    written yet). :func:`training_run` builds its trainer here; benchmarks that time ``fit`` alone
    do too. ``info``: the process group (default: this process alone, or torchrun's); ``model``:
    a model built by the caller instead of ``model.type`` (the ETT benchmark's multivariate ones)."""
    if info is None:
        info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    check_config(cfg, info)  # before the run folder and the data: a mistake costs no feature build
    run_dir, resume_path = prepare_run_dir(cfg, info)
    seed_everything(cfg.training.seed)
    if data is None:
        data = prepare(cfg.data)
    if resume_path is None:
        clear_run_dir(info, run_dir)
    trainer = Trainer(cfg, data, info, run_dir, resume_path, on_evaluate, model)
    seed_rank(cfg.training.seed, info.rank)
    return trainer


@contextmanager
def training_run(
    cfg: Config,
    data: PreparedData | None = None,
    info: DistInfo | None = None,
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
    save_final: bool = True,
    model: ForecastModel | None = None,
) -> Iterator[TrainedRun]:
    """Train (or resume) the run of ``cfg`` and yield it; see the module docstring for the steps.

    ``data``: prepared data to reuse (default: ``prepare(cfg.data)``); ``info``: a process group the
    caller owns (it is then left open); ``on_evaluate(step, metrics)`` is called after each
    validation pass and may raise to stop (a tuner's pruning); ``init_weights``: a state dict the
    model starts from (walk-forward fine-tuning); ``save_final``: write ``<run>/final/``; ``model``:
    see :func:`build_trainer`."""
    own_group = info is None
    if info is None:
        info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    trainer = None
    try:
        trainer = build_trainer(cfg, data, info, on_evaluate, model)
        run_dir, data = trainer.run_dir, trainer.data
        if init_weights is not None:
            trainer.model.load_state_dict(init_weights)
        if info.is_main:
            save_config(cfg, run_dir / "config.json")
            write_json(run_dir / "data_report.json", data.report)
        trainer.fit()
        trainer.final_weights()
        if save_final and info.is_main:
            final = ckpt.save_final(run_dir, trainer.model, data.preprocessing.to_dict())
            # the card says "not evaluated" until the caller's test evaluation rewrites it
            write_model_card(final, cfg, data.report, data.preprocessing.to_dict(), trainer.model, trainer.state.global_step,
                             weights_step=trainer.weights_step())
        yield TrainedRun(cfg, run_dir, data, trainer.model, trainer.state, info, trainer.device,
                         trainer.precision, trainer.logger, trainer.weights_step())
        if info.is_main:
            trainer.logger.info("run folder: %s", run_dir)
        barrier(info)  # the other ranks wait while the main rank evaluates
    finally:
        try:
            if trainer is not None:
                trainer.close()
        finally:  # the group is left even when closing the run raised (a full disk)
            if own_group:
                cleanup(info)
