"""The training loop. Counts optimizer steps (not micro-batches); every piece of state that the
next step depends on is in the checkpoint, so a resumed run continues bit for bit.

A step (:meth:`Trainer.train_step`) is queued on the device and never waits for it: its loss,
gradient norm and non-finite flag stay device tensors, a non-finite step is skipped on the device,
and the host reads the numbers back only at logging, evaluation and checkpoint steps
(:meth:`Trainer.read_back`). The optimizer's special cases live behind
:class:`~hftraining.optim.stepper.TrainOptimizer`; ``training.compile`` compiles the forward and loss.

The loop only: the run folder, the final model and what follows training (the test evaluation,
the report) belong to :mod:`hftraining.train.runner`, the one lifecycle of every training run."""

from __future__ import annotations

import copy
import gc
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from hftraining import optim
from hftraining.core.config import AUTO_COMPILE, Config, resolved_precision
from hftraining.core.errors import ConfigError, DataError, UserError
from hftraining.core.files import replace_file
from hftraining.core.jsonio import dumps, read_jsonl
from hftraining.data import augment
from hftraining.data.pipeline import PreparedData
from hftraining.data.labels import CROSS_SECTIONAL, PER_DATE
from hftraining.data.windows import DateSampler, EpochSampler, WindowSet, date_groups, to_device
from hftraining.eval import metrics
from hftraining.models import ForecastModel, build_model
from hftraining.models.losses import MIN_MEMBERS, check_loss_learns, compute_loss, term_counts, weighted_total
from hftraining.models.predict import autocast_context, predict_scaled
from hftraining.models.registry import check_model
from hftraining.optim.stepper import LR_SCALING, TrainOptimizer
from hftraining.train import checkpoint as ckpt
from hftraining.train.distributed import DistInfo, all_gather_rows, all_reduce_max, all_reduce_sum, barrier
from hftraining.train.logging import RunLogger, log
from hftraining.train.tracking import build_trackers


class NonFiniteError(UserError):
    """Too many optimizer steps in a row had a NaN/Inf loss or gradient."""


class OutOfMemory(UserError):
    """A training batch did not fit in the device's memory (a property of the settings, e.g. for tune)."""


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
"""``training.compile`` modes that replay CUDA graphs on a GPU: their gradients are accumulated into
buffers allocated once (never handed the graph's own output memory) and each micro-batch marks a new
graph step."""


@dataclass
class TrainerState:
    """Everything about progress that is not a tensor; saved as trainer_state.json."""

    global_step: int = 0
    skipped_steps: int = 0
    consecutive_nonfinite: int = 0
    nonfinite_since: int | None = None  # the first step of the run of ``consecutive_nonfinite`` (None: no such run)
    # whether a step of that run had a NaN/Inf in its windows; if none had, the weights are what is non-finite
    nonfinite_windows: bool = False
    # the last step whose update the optimizer applied (0: none, the weights the run started from; None: not
    # known, a checkpoint written before it was noted): the step before a run of non-finite steps may be one
    # fp16's loss scaler skipped, which changed no weight
    updated_step: int | None = 0
    best_metric: float | None = None
    best_step: int | None = None
    best_checkpoint: str | None = None  # the folder name (step-N) under checkpoints/ of the best step, if saved
    evals_without_improvement: int = 0
    stopped_early: bool = False
    sampler: dict[str, int] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    # the steps read back since the last training record, of every rank (checkpoint.log_window_entry); {} at the start
    log_window: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class _Pending:
    """One optimizer step whose numbers are still on the device (see :meth:`Trainer.read_back`)."""

    step: int  # global step after it
    idx: np.ndarray  # windows of all its micro-batches, to name them in an error (a NaN may be in any)
    lr: float  # the learning rate its update used
    # (P + 6,) float64 on the device: loss, P loss parts, grad norm, skipped (0/1), loss scale, 1 when a window
    # of the step (on any rank) holds a NaN/Inf, and 1 when the loss (on any rank) is not finite
    stats: torch.Tensor


@dataclass
class _LogWindow:
    """What the next training log record summarises: the steps read back since the last record."""

    losses: list[float] = field(default_factory=list)  # of the steps that were not skipped
    grad_norm: float | None = None  # of the last step not skipped
    parts: dict[str, float] = field(default_factory=dict)  # loss parts summed over the steps of ``losses``
    skipped: bool = False
    samples: int = 0
    start: float = field(default_factory=time.perf_counter)  # moved on by the time spent validating and saving

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to write the same next record: not the throughput (a timing). A copy:
        the window goes on filling after a checkpoint has taken it."""
        return {"losses": list(self.losses), "grad_norm": self.grad_norm, "parts": dict(self.parts),
                "skipped": self.skipped}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "_LogWindow":
        return cls(**copy.deepcopy(state))


def check_cross_section(cfg: Config, train: WindowSet, val: WindowSet | None = None,
                        test: WindowSet | None = None, resuming: bool = False) -> None:
    """A cross-sectional label or loss needs dates with several symbols among the training windows
    ``train``: one symbol's excess return, z-score or rank is 0 on every date (every label 0), and an ``ic``/``rank``
    loss learns nothing from a date with fewer than its :data:`MIN_MEMBERS` (loss 0, gradient 0, the
    untrained model then scored as if trained). So does a validation or test split (``val``, ``test``,
    when given and not empty) of such a label: where none of its dates holds two symbols (the other
    symbols' rows do not reach it) every label it is scored on is 0 by construction, and the zero forecast
    beat every model "significantly". Called once the data are read, before the run folder is cleared:
    the mistake costs nothing of an earlier run. ``resuming``: the run continues a checkpoint, which keeps
    its ``evaluation.metric`` and data (:data:`~hftraining.core.config.RESUME_FIXED`), so the way out of a
    metric no validation date can score is to start over."""
    most = _fullest_date(train)  # symbols of the fullest training date
    if cfg.data.target in PER_DATE and most < 2:  # excess_return too: a symbol's excess over itself is 0
        raise ConfigError(f"data.target: {cfg.data.target} scores each symbol against the others of its date, and "
                          "no training date has more than 1 symbol: every label would be 0; use data.target=return "
                          "or more symbols (data.symbols)")
    for name, ws in (("validation", val), ("test", test)):
        if cfg.data.target in PER_DATE and ws is not None and len(ws) and _fullest_date(ws) < 2:
            raise ConfigError(f"data.target: {cfg.data.target} scores each symbol against the others of its date, and "
                              f"no {name} date has more than 1 symbol (the other symbols' rows do not reach its dates): every "
                              f"{name} label would be 0, and the model scored against zeros; use data.target=return, "
                              "or symbols whose rows reach the split's dates (data.symbols, data.split_dates)")
    ic = ic_metric(cfg)
    if ic is not None and val is not None and len(val):
        scored = _scored_validation(cfg, val)
        if _fullest_date(scored) < metrics.MIN_CROSS_SECTION:
            # the mean IC over no date is NaN at every evaluation: never a best step, and early stopping
            # stopped the run after its patience as if the model had stopped improving
            via = "" if cfg.evaluation.metric == ic else f" (model.loss={cfg.model.loss!r} scores it as {ic})"
            raise ConfigError(
                f"evaluation.metric: {cfg.evaluation.metric!r}{via} is the mean IC over the validation dates with at "
                f"least {metrics.MIN_CROSS_SECTION} symbols, and no validation date scored has more than "
                f"{_fullest_date(scored)}: every evaluation would score NaN (no best step; early stopping would stop "
                f"the run after its patience); {_ic_metric_fix(cfg, val, resuming)}")
    if cfg.model.loss != "mse":  # only models with gradient steps get here (check_config)
        need = MIN_MEMBERS[cfg.model.loss]
        if most < need:
            raise ConfigError(f"model.loss: {cfg.model.loss!r} learns from dates with at least {need} symbols, and "
                              f"no training date has more than {most}: the run would learn nothing; use "
                              "model.loss=mse or more symbols (data.symbols)")


def _ic_metric_fix(cfg: Config, val: WindowSet, resuming: bool) -> str:
    """The way out of an IC metric that no validation date scored can compute (:func:`check_cross_section`): the
    split's own dates of enough symbols cut away by ``evaluation.max_val_windows``/``max_eval_batches``, or none;
    a resumed run keeps those keys, the metric and the data (``RESUME_FIXED``): it starts over."""
    keys = ("evaluation.metric=mse, or evaluation.max_val_windows/max_eval_batches (null) that keep the validation "
            f"dates of {metrics.MIN_CROSS_SECTION} symbols" if _fullest_date(val) >= metrics.MIN_CROSS_SECTION
            else "evaluation.metric=mse, or more symbols (data.symbols)")
    if resuming:
        return f"a resumed run keeps its checkpoint's metric, windows and data: start over (output.overwrite=true) with {keys}"
    return f"use {keys}"


def ic_metric(cfg: Config) -> str | None:
    """The cross-sectional IC (``neg_ic`` or ``neg_rank_ic``) that ``evaluation.metric`` scores validation by:
    named, or ``loss`` under an ``ic``/``rank`` loss (:meth:`Trainer.evaluate`); None: another metric."""
    name = cfg.evaluation.metric
    if name in ("neg_ic", "neg_rank_ic"):
        return name
    if name == "loss" and cfg.model.loss != "mse":
        return "neg_ic" if cfg.model.loss == "ic" else "neg_rank_ic"
    return None


def validation_windows(cfg: Config, val: WindowSet) -> WindowSet:
    """The windows of validation split ``val`` that every evaluation of the run scores (at most
    ``evaluation.max_val_windows``): whole dates, date after date, when the cross-section is what is
    learnt (so evaluation.max_eval_batches also keeps whole dates), else evenly spaced."""
    if cross_sectional(cfg):
        val = val.last_dates(cfg.evaluation.max_val_windows)
        return val.subset(np.argsort(val.times, kind="stable"))
    return val.thin(cfg.evaluation.max_val_windows)


def _scored_validation(cfg: Config, val: WindowSet) -> WindowSet:
    """What each evaluation scores of split ``val``: :func:`validation_windows` cut by
    ``evaluation.max_eval_batches`` as :meth:`Trainer.evaluate` cuts them."""
    kept, e = validation_windows(cfg, val), cfg.evaluation
    n = len(kept)
    if e.max_eval_batches is not None:
        n = min(n, e.max_eval_batches * cfg.data.eval_batch_size)
        if cross_sectional(cfg) and n < len(kept):
            n = _whole_dates(kept.times, n)
    return kept.subset(np.arange(n))


def _fullest_date(ws: WindowSet) -> int:
    """How many windows of ``ws`` share its fullest as-of date (0 for none)."""
    _, members = np.unique(ws.times, return_counts=True)
    return int(members.max()) if len(members) else 0


def check_config(cfg: Config, info: DistInfo) -> tuple[str, str]:
    """What of ``cfg`` the trainer can check before any data is read, on the devices of ``info``: the model's
    type, heads and loss weights, the optimizer and its keywords, precision, compile mode and their
    combinations (ConfigErrors naming the key) → (precision, compile mode). The run calls it first, so a
    mistake costs no feature build."""
    t = cfg.training
    if check_model(cfg.model).needs_training:
        check_loss_learns(cfg.model)
    else:  # fitted on the windows as they are: augmentation would not act
        for key in ("augment_noise_std", "augment_scale_std", "augment_jitter"):
            if getattr(cfg.data, key):
                raise ConfigError(f"data.{key}: model.type {cfg.model.type!r} takes no gradient steps (it is fitted "
                                  "on the training windows as they are), so augmentation would not act; remove the key")
        if cfg.model.loss != "mse":  # fitted by squared error whatever the key says
            raise ConfigError(f"model.loss: model.type {cfg.model.type!r} takes no gradient steps (it is fitted on the "
                              f"training windows by squared error), so {cfg.model.loss!r} would not act; remove the key")
    precision = resolved_precision(t)
    if precision == "fp16" and info.device.type != "cuda":
        raise ConfigError("training.precision: fp16 needs CUDA (use bf16 on CPU)")
    optim.check_compatibility(t)
    # the peak rate TrainOptimizer steps at on this world size (lr_scaling), which the decay must survive too
    optim.check_scaled_decay(t, info.world_size, t.learning_rate * LR_SCALING[t.lr_scaling](info.world_size))
    numba = t.optimizer.lower() == "gpro" and t.optimizer_kwargs.get("implementation") == "numba"
    if numba and info.device.type != "cpu":
        # GPro's Numba kernel updates CPU tensors only: on another device its first step was a RuntimeError, after
        # the data were read
        raise ConfigError(f"training.optimizer_kwargs.implementation: 'numba' is gpro's CPU kernel, and this run trains "
                          f"on {info.device}; use 'auto' (the fused torch ops there) or training.device=cpu")
    if info.enabled and optim.needs_double_backward(t):
        raise ConfigError(
            f"training.optimizer: {t.optimizer!r} needs a double backward for its Hessian estimate, which "
            "DistributedDataParallel does not support; train it in one process"
        )
    mode = compile_mode(cfg, info.device.type, info.world_size)
    if mode != "none" and optim.needs_double_backward(t):
        raise ConfigError(
            f"training.compile: {t.compile!r} cannot train {t.optimizer!r}: its Hessian steps need a double "
            "backward, which torch.compile does not support; use training.compile=none"
        )
    if cfg.evaluation.metric in ("neg_ic", "neg_rank_ic") and not cross_sectional(cfg):
        raise ConfigError(f"evaluation.metric: {cfg.evaluation.metric!r} is reported for a cross-sectional label "
                          "or loss only (data.target cs_zscore/cs_rank or model.loss ic/rank)")
    if mode != "none" and cfg.data.batching == "dates":
        raise ConfigError(
            f"training.compile: {t.compile!r} needs batches of one shape, and data.batching=dates makes a batch "
            "of every symbol of its dates (the size varies); use training.compile=none"
        )
    build_trackers(cfg.output)  # a tracking package not installed: said before output.overwrite removes a run
    return precision, mode


class Trainer:
    """Model, optimizer, schedule, sampler and logger of one run, and the loop that trains them.

    Built by :func:`hftraining.train.runner.training_run` after it has prepared ``run_dir`` and
    seeded the RNGs; ``resume_path`` is the checkpoint to continue from (None: a fresh start)."""

    def __init__(self, cfg: Config, data: PreparedData, info: DistInfo, run_dir: Path, resume_path: Path | None = None,
                 on_evaluate: Callable[[int, dict[str, float]], None] | None = None, model: ForecastModel | None = None):
        self.cfg = cfg
        self.on_evaluate = on_evaluate  # called with (step, validation metrics) after each evaluation; may raise to stop
        t = cfg.training
        self.info = info
        self.device = self.info.device
        self.precision, self.compile_mode = check_config(cfg, info)
        self.run_dir, self.resume_path = run_dir, resume_path
        self.ckpt_root = self.run_dir / "checkpoints"
        self.data = data.on_device(self.device, cfg.data)  # batches made where the model is
        self.val_windows = validation_windows(cfg, self.data.val)  # the same windows at every evaluation
        pre = self.data.preprocessing
        if model is None:  # ``model``: one the caller built (the ETT benchmark's multivariate models)
            model = build_model(cfg.model, len(pre.feature_columns), pre.horizon, pre.seq_len)
        self.model: ForecastModel = model.to(self.device)
        self.model.set_gradient_checkpointing(t.gradient_checkpointing)
        self.ddp: DDP | None = DDP(self.model) if self.info.enabled and self.model.needs_training else None
        self.augment = augment.enabled(cfg.data)
        self.state = TrainerState()
        if cfg.data.batching == "dates":  # every symbol of a date in one micro-batch
            self.sampler = DateSampler(self.data.train.times, cfg.data.dates_per_batch, t.seed,
                                       rank=self.info.rank, world_size=self.info.world_size)
        else:
            self.sampler = EpochSampler(
                len(self.data.train), cfg.data.batch_size, t.seed, drop_last=True,
                rank=self.info.rank, world_size=self.info.world_size,
            )
        self.opt = TrainOptimizer(self.model, t, self.info.world_size) if self.model.needs_training else None
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self._graphs = self.compile_mode in CUDA_GRAPH_MODES and self.device.type == "cuda"  # see CUDA_GRAPH_MODES
        self.forward_loss = self._build_forward_loss() if self.model.needs_training else None
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        # state the forward itself updates (BatchNorm's running statistics): put back when a step is skipped
        saved = set(self.model.state_dict())
        self._stat_buffers = [b for name, b in self.model.named_buffers() if name in saved]
        self._pending: list[_Pending] = []
        self._window = _LogWindow()
        self._part_names: list[str] = []  # of the loss, in the order it returns them
        self._last_lr = 0.0
        self._last_eval: tuple[int, dict[str, float]] | None = None  # (step, metrics) of the last validation
        self._epoch_ended = False  # whether the last step drew an epoch's last batch
        resume_step = None
        if self.resume_path is not None:
            resume_step = json.loads((self.resume_path / "trainer_state.json").read_text())["global_step"]
            if self.info.is_main:
                _truncate_metrics(self.run_dir / "metrics.jsonl", resume_step)
        self.logger = RunLogger(
            self.run_dir, enabled=self.info.is_main, config=cfg,
            progress_bar=cfg.output.progress_bar, total_steps=t.max_steps if self.model.needs_training else 0,
            resume_step=resume_step,
            resolved={"training.device": str(self.device), "training.precision": self.precision,
                      "training.compile": self.compile_mode},
        )

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The torch optimizer (None for a model without gradient steps); the checkpoint saves its state."""
        return self.opt.optimizer if self.opt is not None else None

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        return self.opt.scheduler if self.opt is not None else None

    def _build_forward_loss(self) -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """``(x, mask, past, y) -> (loss, {part: value})`` of one micro-batch under the run's autocast:
        the model (wrapped by DDP when there are several ranks) and its loss, compiled together by
        ``torch.compile`` in ``training.compile``'s mode (their backward is compiled with them)."""
        net = self.ddp if self.ddp is not None else self.model
        model_cfg, target_scale = self.cfg.model, self.data.preprocessing.target_scale
        device, precision = self.device, self.precision

        def forward_loss(x, mask, past, y, groups=None):
            with autocast_context(device, precision):
                out = net(x, mask, past)
            return compute_loss(model_cfg, out, y, target_scale, groups)

        if self.compile_mode == "none":
            return forward_loss
        return torch.compile(forward_loss, mode=self.compile_mode, dynamic=False)

    # ------------------------------------------------------------------ state
    def trainer_state(self, windows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The state to save; ``windows``: every rank's pending log window in rank order (default: this
        process's alone)."""
        self.state.sampler = self.sampler.state_dict()
        self.state.scheduler = self.scheduler.state_dict() if self.scheduler else {}
        self.state.log_window = ckpt.log_window_entry(windows if windows is not None else [self._window.state_dict()])
        return self.state.to_dict()

    def save_checkpoint(self) -> None:
        self.read_back()  # the counters saved are those of every step taken
        rng = ckpt.gather_rng_states(self.info)  # every rank's own random states, to rank 0 (all ranks call it)
        windows = ckpt.gather_json(self._window.state_dict(), self.info)  # and every rank's own pending log window
        if self.info.is_main:
            path = ckpt.save_checkpoint(
                self.ckpt_root, self.state.global_step, self.model, self.optimizer, self.trainer_state(windows),
                self.cfg.to_dict(),
                rng=rng, scaler=self.scaler,
            )
            best = self.best_checkpoint_path()
            protect = {path} | ({best} if best is not None else set())
            ckpt.rotate(self.ckpt_root, self.cfg.training.save_total_limit, protect)
        barrier(self.info)

    def best_checkpoint_path(self) -> Path | None:
        """The best step's checkpoint folder in this run's ``checkpoints/``. Found by its name: a run
        folder moved or copied (or an ``output_dir`` relative to another working directory) keeps its
        best checkpoint; a path saved whole pointed at the old place, so rotation deleted the real
        best and ``load_best_model_at_end`` read the old folder's. Older states hold a whole path:
        its last part is the name."""
        best = self.state.best_checkpoint
        return self.ckpt_root / Path(best).name if best else None

    def resume(self, path: Path) -> None:
        raw = ckpt.load_checkpoint(path, self.model, self.optimizer, self.info, self.scaler)  # this rank's RNGs, the scaler
        known = set(TrainerState.__dataclass_fields__)
        self.state = TrainerState(**{k: v for k, v in raw.items() if k in known})
        if "updated_step" not in raw:  # a checkpoint written before it was noted: not 0, which says "none"
            self.state.updated_step = None
        try:  # a checkpoint written before checksums is loaded unverified: its sampler or schedule may be missing or edited
            self.sampler.load_state_dict(self.state.sampler)
            self.opt.load_schedule(self.state.scheduler)  # the next step's rate from this run's schedule
        except DataError as e:
            raise ckpt.CheckpointError(f"{path / ckpt.STATE_FILE}: {e}") from None
        self.logger.info("resumed from %s at step %d", path, self.state.global_step)
        best = self.state.best_metric
        if best is not None and not math.isfinite(best):
            # a checkpoint of a run that took a first score of +inf (forecasts that overflowed) for its best: never
            # the best (_after_eval), and load_best_model_at_end kept those weights after any later non-finite score
            self.logger.info("the checkpoint's best step %s scored eval_%s=%s, which is never the best: the run has no "
                             "best step yet", self.state.best_step, self.cfg.evaluation.metric, best)
            self.state.best_metric = self.state.best_step = self.state.best_checkpoint = None
        if not ckpt.in_folder(path, self.ckpt_root):
            # a checkpoint of another run folder is this run's course from its step: copied here, so that a
            # --resume before this run's first save continues from it (this folder's own checkpoints were set
            # aside: --resume found only the copied best, an earlier step, or nothing and started over)
            if self.info.is_main:
                ckpt.copy_checkpoint(path, self.ckpt_root)
            barrier(self.info)
            if self.state.best_checkpoint:
                self._adopt_best_checkpoint(path.parent / Path(self.state.best_checkpoint).name)

    def _adopt_best_checkpoint(self, src: Path) -> None:
        """A checkpoint of another run folder (named in ``training.resume_from_checkpoint``) names the
        best step's checkpoint ``src`` of that folder, which this run's ``checkpoints/`` does not hold:
        with ``training.load_best_model_at_end`` it is verified and copied there, where the final model
        is read from and rotation keeps it; without, this run holds no checkpoint of the best step (a
        later resume that turns the setting on says so). Looked up by its name in this run's folder,
        the best checkpoint was "gone" after the last step, or another run's of that name was loaded."""
        if not self.cfg.training.load_best_model_at_end:
            self.state.best_checkpoint = None
            return
        try:  # on every rank: each reads the copy at the end, and a refusal must be every rank's
            if not (src / ckpt.STATE_FILE).is_file():
                raise ckpt.CheckpointError("it is missing")
            ckpt.verify_checkpoint(src)
        except ckpt.CheckpointError as e:
            raise UserError(f"training.load_best_model_at_end: the best checkpoint {src} of the run resumed (step "
                            f"{self.state.best_step}) cannot be used: {e}; resume with "
                            "training.load_best_model_at_end=false to keep the last step's weights") from None
        if self.info.is_main and not (self.ckpt_root / src.name).exists():  # the step resumed is copied already
            ckpt.copy_checkpoint(src, self.ckpt_root)
            self.logger.info("best checkpoint (step %s) copied from %s", self.state.best_step, src)
        barrier(self.info)

    # ------------------------------------------------------------------ steps
    def _describe(self, idx: np.ndarray) -> str:
        ws = self.data.train
        i = int(idx[0])
        ts = np.datetime64(int(ws.times[i]), "ns").astype("datetime64[s]")
        return f"window {i} (symbol {ws.symbols[ws.symbol_ids[i]]}, as of {ts}) and {len(idx) - 1} more"

    def _batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """The training batch of windows ``idx``, on the device (augmented when configured)."""
        ws = self.data.train
        b = augment.training_batch(ws, idx, self.cfg.data) if self.augment else ws.batch(idx)
        if self.cfg.model.loss != "mse":  # the batch's dates, for a cross-sectional loss
            b["groups"] = date_groups(ws.times[idx], b["x"].device)
        return b

    def zero_grad(self) -> None:
        """Zero the gradients before a step's first micro-batch. Under CUDA graphs they are buffers of
        their own, allocated once and added into in place: a gradient left to autograd would be the
        graph's output memory itself, overwritten by the next micro-batch's replay (pytorch#96693)."""
        self.opt.zero_grad(set_to_none=not self._graphs)
        if self._graphs:
            for p in self._params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)

    def train_step(self) -> None:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches, queued on the device
        without the host waiting for it: the loss, its parts, the gradient norm and the non-finite
        flag stay device tensors until :meth:`read_back`. A step whose loss or gradient is not finite
        (on any rank) is skipped on the device: the weights, the optimizer's state and the running
        statistics its forward updated (PatchTST's BatchNorm) stay, the step still counts (see
        :class:`~hftraining.optim.stepper.TrainOptimizer`)."""
        t = self.cfg.training
        accum = t.gradient_accumulation_steps
        opt = self.opt
        lr, create_graph = opt.lr, opt.create_graph()
        stats_before = [b.clone() for b in self._stat_buffers]
        self.zero_grad()
        # drawn first (their sizes weigh the losses), noting an epoch that ends at any of them: with
        # accumulation it may end at a micro-batch before the step's last (save_on_epoch_end)
        batches, self._epoch_ended = [], False
        for _ in range(accum):
            batches.append(self.sampler.next_batch())
            self._epoch_ended = self._epoch_ended or self.sampler.at_epoch_end()
        shares = self._micro_shares(batches)
        micro_stats, finite_in = [], []
        for micro, idx in enumerate(batches):
            self._window.samples += len(idx)  # this rank's: summed over the ranks at the record (date batches vary)
            b = self._batch(idx)
            # whether the windows themselves are finite: a step non-finite on finite windows is the weights' doing
            finite_in.append(torch.isfinite(b["x"]).all() & torch.isfinite(b["past"]).all()
                             & torch.isfinite(b["y"]).all())  # 0-dim on the device
            sync = self.ddp is None or micro == accum - 1  # DDP reduces gradients on the last micro-batch
            with (nullcontext() if sync else self.ddp.no_sync()), opt.hessian_context():
                try:
                    if self._graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    loss, parts = self.forward_loss(b["x"], b.get("mask"), b["past"], b["y"], b.get("groups"))
                    self._part_names = list(parts)
                    # the micro-batch's share of one big batch's mean: of the whole loss, or of each part
                    if shares is None:
                        scaled = loss / accum
                        micro_stats.append(torch.stack([loss.detach(), *(v.detach() for v in parts.values())]))  # (1+P,)
                    else:
                        parts = {k: v * shares[k][micro] for k, v in parts.items()}
                        scaled = weighted_total(self.cfg.model, parts)
                        micro_stats.append(torch.stack([scaled.detach(), *(v.detach() for v in parts.values())]))
                    if self.scaler is not None:
                        scaled = self.scaler.scale(scaled)
                    scaled.backward(create_graph=create_graph)
                except torch.OutOfMemoryError:
                    # the key that sizes the micro-batch: under date batches, data.batch_size is not read
                    key, size = (("data.dates_per_batch", f"{self.cfg.data.dates_per_batch} dates ({len(idx)} windows)")
                                 if self.cfg.data.batching == "dates" else
                                 ("data.batch_size", f"{self.cfg.data.batch_size} windows"))
                    raise OutOfMemory(
                        f"{key}: {size} of {self.data.preprocessing.seq_len} steps do not fit in {self.device} memory; "
                        f"lower {key} (and raise training.gradient_accumulation_steps to keep the batch per optimizer step)"
                    ) from None
                except RuntimeError as e:
                    raise RuntimeError(f"training batch failed at {self._describe(idx)}: {e}") from e
        stats = torch.stack(micro_stats).double()  # (accum, 1 + P)
        stats = stats.mean(0) if shares is None else stats.sum(0)  # (1 + P,) the step's loss and parts
        if self.scaler is not None:
            self.scaler.unscale_(opt.optimizer)
        if t.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, t.max_grad_norm, foreach=True)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None], foreach=True)
        # (3,) on the device, one all-reduce for all: whether the step is skipped (every rank skips together),
        # whether a window of the step, on any rank, is not finite, and whether the loss, on any rank, is not
        # finite (read_back tells fp16's scaler overflows from non-finite steps by it: by this rank's own loss,
        # the ranks counted a NaN of one rank's differently, one stopped and the others waited in a collective)
        loss_finite = torch.isfinite(stats[0])
        flags = torch.stack([~(loss_finite & torch.isfinite(grad_norm)), ~torch.stack(finite_in).all(),
                             ~loss_finite]).float()
        all_reduce_max(flags, self.info)
        skip, bad = flags[0], flags[1:].double()  # 0-dim; (2,): bad windows, bad loss
        opt.step(skip)
        # a skipped step's forward must not leave its statistics (a NaN batch's: NaN forever); put back
        # after the optimizer's step: Sophia's Hessian-vector product differentiates BatchNorm's backward,
        # which saved the running statistics, and an in-place write before it is an autograd error
        if stats_before:
            skipped = skip.bool()
            for b, before in zip(self._stat_buffers, stats_before):
                b.copy_(torch.where(skipped, before, b))
        used = self.scaler._get_scale_async() if self.scaler is not None else None  # the scale this step used
        scale = used.detach().double().reshape(1) if used is not None else stats.new_ones(1)  # a copy: update() changes it
        if self.scaler is not None:
            self.scaler.update()
        self.state.global_step += 1
        self._pending.append(_Pending(self.state.global_step, np.concatenate(batches), lr, torch.cat(
            [stats, grad_norm.detach().double().reshape(1), skip.double().reshape(1), scale, bad])))

    def _micro_shares(self, batches: list[np.ndarray]) -> dict[str, list[float]] | dict[str, list[torch.Tensor]] | None:
        """Per loss part, the factor on each micro-batch's value that makes the accumulated gradient that
        of one big batch (of every micro-batch of every rank; DDP averages the ranks' gradients): the
        micro-batch's count of the terms the part averages over (:func:`~hftraining.models.losses.term_counts`:
        windows for ``mse`` and the heads' parts, dates for ``ic``/``rank``) times the world size, over the
        step's total count (0 when the step has none: the part is then 0 without a gradient); with several
        ranks as 0-dim device tensors (the total comes from an all-reduce on the device, no host wait).
        None: 1/accum for the whole loss, when the micro-batches are alike (batches of windows, of one size)
        or there is only one (one micro-batch on one process is the whole batch). Batches of dates hold every
        symbol of their dates, so their windows and their dates with enough symbols vary."""
        if self.cfg.data.batching != "dates" or (len(batches) == 1 and not self.info.enabled):
            return None
        times = self.data.train.times
        counts = [term_counts(self.cfg.model, times[idx]) for idx in batches]
        names = list(counts[0])
        n = np.array([[c[k] for k in names] for c in counts], dtype=np.float64)  # (accum, parts)
        if not self.info.enabled:
            share = (n / np.maximum(n.sum(0), 1)).T.tolist()  # floats: a float64 tensor would promote the loss
            return dict(zip(names, share))
        n_dev = to_device(torch.from_numpy(n), self.device)  # (accum, parts)
        total = all_reduce_sum(n_dev.sum(0), self.info).clamp(min=1)  # (parts,)
        share = (n_dev * self.info.world_size / total).float()
        return {k: list(share[:, j].unbind()) for j, k in enumerate(names)}

    def read_back(self) -> None:
        """The one host synchronisation of training (at logging, evaluation and checkpoint steps): the
        numbers of the steps taken since the last read come back in one copy, and the skip counters
        and the ``max_consecutive_nonfinite`` abort are applied to them in step order.

        A step fp16's gradient scaler skipped with a finite loss while its scale was above 1 is the
        scaler finding its scale (the scaled gradients overflowed; it halves the scale): counted as
        skipped, but not as one of the non-finite steps in a row that stop the run. "A finite loss" is every
        rank's (all-reduced in :meth:`train_step`), so every rank counts the same steps and stops at the same one."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = torch.stack([p.stats for p in pending]).cpu().numpy()  # (steps, P + 6)
        limit = self.cfg.training.max_consecutive_nonfinite
        w, st = self._window, self.state
        for p, r in zip(pending, rows):
            loss, grad_norm, skipped, scale, bad_windows, bad_loss = r[0], r[-5], r[-4], r[-3], r[-2], r[-1]
            if skipped > 0:
                st.skipped_steps += 1
                w.skipped = True
                if self.scaler is not None and not bad_loss and scale > 1:
                    continue  # an overflow of the loss-scaled gradients
                if st.consecutive_nonfinite == 0:
                    st.nonfinite_since, st.nonfinite_windows = p.step, False
                elif st.nonfinite_since is None:  # resumed from a checkpoint that did not note the run: windows unknown
                    st.nonfinite_since, st.nonfinite_windows = p.step - st.consecutive_nonfinite, True
                st.consecutive_nonfinite += 1
                st.nonfinite_windows = st.nonfinite_windows or bool(bad_windows > 0)
                if st.consecutive_nonfinite >= limit:
                    raise NonFiniteError(
                        f"training stopped: {st.consecutive_nonfinite} optimizer steps in a row had a non-finite loss "
                        f"or gradient (last at step {p.step}, {self._nonfinite_cause(p.idx)}); "
                        f"{self._checkpoint_before()} (training.max_consecutive_nonfinite={limit})"
                    )
            else:
                st.consecutive_nonfinite, st.nonfinite_since, st.nonfinite_windows = 0, None, False
                st.updated_step = p.step
                w.losses.append(float(loss))
                w.grad_norm = float(grad_norm)
                w.parts = {k: w.parts.get(k, 0.0) + float(v) for k, v in zip(self._part_names, r[1:-5])}
        self._last_lr = pending[-1].lr

    def _nonfinite_cause(self, idx: np.ndarray | None) -> str:
        """What made the current run of non-finite steps non-finite: the windows of its last step (``idx``;
        None: not named) when a step of the run had a NaN/Inf in its windows, else the weights of the step
        before the run, with which every step on finite windows has a non-finite loss or gradient (an update
        too large: the weights, or what they make of the windows, overflow; the learning rate)."""
        st = self.state
        if st.nonfinite_windows:
            return self._describe(idx) if idx is not None else "a NaN/Inf in their windows"
        updated = self._last_update()
        if updated < 1:
            return "every window of the run is finite: the weights it started from give a non-finite loss"
        return (f"every window since step {st.nonfinite_since} is finite: the weights diverged at step "
                f"{updated}'s update; lower training.learning_rate ({self.cfg.training.learning_rate:g}) "
                "and start over with output.overwrite=true")

    def _last_update(self) -> int:
        """The step whose update made the weights of the current run of non-finite steps (0: none). Not
        always the step before the run: fp16's loss scaler skips steps whose scaled gradients overflow,
        with a finite loss, outside the run and without an update (a diverging fp16 run does so until its
        scale has come down to 1). Unknown after a resume from a checkpoint that did not note it: the step
        before the run."""
        st = self.state
        return st.updated_step if st.updated_step is not None else st.nonfinite_since - 1

    def _checkpoint_before(self, first_bad: int | None = None) -> str:
        """Which checkpoint still holds weights from before the current run of non-finite steps: one saved
        before its first step or, when the weights themselves are what is non-finite (see
        :meth:`_nonfinite_cause`), before the update that made them so: those saved since hold them.
        ``first_bad``: the step whose weights are not good, when the caller knows it."""
        st = self.state
        if first_bad is None:  # its weights are not good
            first_bad = st.nonfinite_since if st.nonfinite_windows else self._last_update()
        kept = [p for s, p in ckpt.list_checkpoints(self.ckpt_root) if s < first_bad]
        if kept:
            return f"the last checkpoint with weights from before step {first_bad}: {kept[-1]}"
        return f"no checkpoint in {self.ckpt_root} holds weights from before step {first_bad}"

    def _log_training(self, step: int) -> None:
        """The training record of ``step``: the mean loss and loss parts of the steps since the last record
        (so the loss is the parts' weighted sum in every record; each averaged over all ranks, in one
        all-reduce: a rank's values are its share of the global batch's, see :meth:`_micro_shares`), this
        step's learning rate, the last gradient norm, skips and throughput."""
        w = self._window
        rec: dict[str, Any] = {"step": step}
        parts: dict[str, float] = {}
        samples = w.samples * self.info.world_size  # every step skipped: no reduction, this rank's count for each
        if w.losses:  # every rank has the same steps (a skip is every rank's) and the same part names
            n = len(w.losses)
            local = torch.tensor([float(np.mean(w.losses)), *(v / n for v in w.parts.values()), float(w.samples)],
                                 dtype=torch.float64, device=self.device)  # (1 + P + 1,)
            total, *values, mean_samples = (all_reduce_sum(local, self.info) / self.info.world_size).tolist()
            rec["loss"] = total
            parts = dict(zip(w.parts, values))
            samples = mean_samples * self.info.world_size  # the windows of all ranks
        rec["learning_rate"] = self._last_lr
        if w.grad_norm is not None:
            rec["grad_norm"] = w.grad_norm
        if len(parts) > 1:
            rec.update({f"loss_{k}": v for k, v in parts.items()})
        if w.skipped:
            rec["nonfinite_skipped"] = self.state.skipped_steps
        rec["epoch"] = self.sampler.epoch
        rec["samples_per_second"] = samples / max(time.perf_counter() - w.start, 1e-9)
        self.logger.log(rec)
        self._window = _LogWindow()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, ws: WindowSet, max_batches: int | None = None) -> dict[str, float]:
        """Validation metrics (:mod:`hftraining.eval.metrics` on every window's forecasts); with several
        ranks each forecasts a shard and the shards are gathered, so every rank sees the same numbers."""
        n = len(ws)
        if max_batches is not None:
            n = min(n, max_batches * self.cfg.data.eval_batch_size)
            if cross_sectional(self.cfg) and n < len(ws):
                n = _whole_dates(ws.times, n)
        shard = np.array_split(np.arange(n), self.info.world_size)[self.info.rank]
        if self.opt is not None:
            self.opt.eval()  # schedule-free: evaluate the averaged weights
        sub = ws.subset(shard)
        pred = predict_scaled(self.model, sub, self.cfg.data.eval_batch_size, self.device, self.precision)
        if self.opt is not None:
            self.opt.train()
        true = all_gather_rows(sub.targets().astype(np.float64), self.info)  # (n, H) scaled units
        pred = all_gather_rows(pred.astype(np.float64), self.info)
        s = self.data.preprocessing.target_scale
        mse = metrics.mse(pred * s, true * s)
        zero = metrics.mse(np.zeros_like(true), true * s)
        out = {
            "loss": metrics.mse(pred, true),
            "mse": mse,
            "mae": metrics.mae(pred * s, true * s),
            "directional_accuracy": metrics.directional_accuracy(pred, true),
            "mse_vs_zero": metrics.mse_ratio(mse, zero),  # as eval.json: +inf when the zero forecast is exact
        }
        if cross_sectional(self.cfg):  # minus the mean per-(date, step) IC: lower is better, as for a loss
            dates = ws.times[:n]
            out["neg_ic"] = -metrics.mean_cross_sectional_ic(pred, true, dates, rank=False)
            out["neg_rank_ic"] = -metrics.mean_cross_sectional_ic(pred, true, dates, rank=True)
            if self.cfg.model.loss != "mse":
                out["loss"] = out["neg_ic"] if self.cfg.model.loss == "ic" else out["neg_rank_ic"]
        return out

    def _after_eval(self, metrics: dict[str, float]) -> None:
        """Track the best step and early stopping on ``evaluation.metric``. A NaN score (a model that
        emits NaN, or an IC without a cross-section to measure) is never an improvement: as the
        best, no later score could beat it. Nor is an infinite one: an error of +inf is a forecast that
        overflowed (as ``_final_weights_fault`` reads it), not a model to keep."""
        name = self.cfg.evaluation.metric
        value = metrics[name]
        t = self.cfg.training
        best = self.state.best_metric
        if math.isfinite(value) and (best is None or value < best - t.early_stopping_threshold):
            self.state.best_metric, self.state.best_step = value, self.state.global_step
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
            if t.early_stopping_patience and self.state.evals_without_improvement >= t.early_stopping_patience:
                self.state.stopped_early = True
                self.logger.info("early stopping at step %d: eval_%s has not improved for %d evaluations",
                                 self.state.global_step, name, self.state.evals_without_improvement)

    def _validate(self, step: int, max_batches: int | None) -> dict[str, float]:
        """Score the validation split, log it, track the best step, call ``on_evaluate``."""
        metrics = self.evaluate(self.val_windows, max_batches)
        self._last_eval = (step, metrics)
        self.logger.log({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
        self._after_eval(metrics)
        if self.on_evaluate is not None:
            self.on_evaluate(step, metrics)
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        """Train to ``training.max_steps`` (or early stopping). A model without gradient steps (a
        naive baseline, or ridge, fitted here in closed form) is evaluated once on the validation
        split instead, so every model type yields the validation metrics that tuning reads."""
        t, e = self.cfg.training, self.cfg.evaluation
        if not self.model.needs_training:
            if self.model.fits_on_data:  # closed form (ridge): fitted on the training windows, chosen on validation
                fit = self.model.fit_windows(self.data.train, self.data.val)
                self.logger.info("model %s fitted %s: %s", self.cfg.model.type, self.model.fitted_how,
                                 ", ".join(f"{k} {v:.6g}" for k, v in fit.items()))
            if len(self.data.val):
                self._validate(0, e.max_eval_batches)
            return
        if self.resume_path is not None:
            self.resume(self.resume_path)
            self.logger.advance(self.state.global_step)
        pre = self.data.preprocessing
        n_params = self.model.num_parameters()
        self.logger.info(
            "model %s: %s parameters | windows train %d, val %d, test %d | %d features, L=%d, H=%d | %s, %s, "
            "compile %s, world %d | %s",
            self.cfg.model.type, f"{n_params:,}", len(self.data.train), len(self.data.val), len(self.data.test),
            len(pre.feature_columns), pre.seq_len, pre.horizon, self.device, self.precision, self.compile_mode,
            self.info.world_size, self.data.placement,
        )
        if len(self.val_windows) < len(self.data.val):
            self.logger.info("validating on %d of the %d validation windows, evenly spaced (evaluation.max_val_windows)",
                             len(self.val_windows), len(self.data.val))
        self.model.train()
        self.opt.train()
        # a resumed run's next record is the uninterrupted one's: each rank continues its own pending steps
        saved = ckpt.restore_log_window(self.state.log_window, self.info, self.resume_path) if self.resume_path else {}
        self._window = _LogWindow.from_state(saved)
        while self.state.global_step < t.max_steps and not self.state.stopped_early:
            self.train_step()
            step = self.state.global_step
            self.logger.advance()
            log_now = step % t.logging_steps == 0 or step == t.max_steps
            eval_now = bool(len(self.data.val)) and ((e.eval_steps and step % e.eval_steps == 0) or step == t.max_steps)
            epoch_end = t.save_on_epoch_end and self._epoch_ended
            save_now = (t.save_steps and step % t.save_steps == 0) or step == t.max_steps or epoch_end
            if log_now or eval_now or save_now:
                self.read_back()  # the host waits for the device only here
            if log_now:
                self._log_training(step)
            paused = time.perf_counter()  # validation and checkpoints are no training: not in samples_per_second
            new_best = False
            if eval_now:
                self._validate(step, e.max_eval_batches)
                new_best = self.state.best_step == step
                if self.state.stopped_early and not log_now:  # the steps since the last record end the log too
                    self._window.start += time.perf_counter() - paused  # without this validation's time
                    self._log_training(step)
                    paused = time.perf_counter()
            # with load_best_model_at_end every new best is saved, whatever save_steps says, so the
            # final model is the one that was scored best
            save = save_now or self.state.stopped_early or (new_best and t.load_best_model_at_end)
            if new_best:  # the checkpoint of the best step, or none: an older one no longer holds the best
                self.state.best_checkpoint = f"step-{step:08d}" if save else None
            if save:
                self.save_checkpoint()
            if eval_now or save:
                self._window.start += time.perf_counter() - paused
        self._check_end()

    def _check_end(self) -> None:
        """A run that ends (``training.max_steps``, early stopping) on steps skipped as non-finite, fewer in
        a row than ``training.max_consecutive_nonfinite``: a NonFiniteError (exit 2) when its final weights
        forecast NaN/Inf on the validation windows (or are not finite, or, without validation windows, every
        forward of those steps was non-finite on finite windows), as the abort would have been; a warning
        otherwise (the weights are those of the step before them). A run that ends on no such step is
        checked too (:meth:`_check_last_update`). The final model of an earlier best checkpoint
        (``load_best_model_at_end``) is not those weights: a warning."""
        st, t = self.state, self.cfg.training
        if not st.consecutive_nonfinite:
            self._check_last_update()
            return
        k, last = st.consecutive_nonfinite, st.global_step
        if st.nonfinite_since is None:  # resumed at its last step from a checkpoint that did not note the run
            st.nonfinite_since, st.nonfinite_windows = last - k + 1, True
        since = st.nonfinite_since
        forecast = self._final_weights_fault()
        if forecast is None and not len(self.val_windows) and not st.nonfinite_windows:
            forecast = "no validation window to check the final model on"
        cause, limit, best = self._nonfinite_cause(None), t.max_consecutive_nonfinite, self.weights_step()
        if forecast is not None and best is None:
            raise NonFiniteError(
                f"training diverged: its last {k} optimizer steps (steps {since} to {last}) had a non-finite loss or "
                f"gradient ({cause}) and {forecast}; {self._checkpoint_before()} "
                f"(training.max_consecutive_nonfinite={limit} stops such a run after that many)")
        if self.info.is_main:
            kept = f"the best checkpoint's (step {best})" if best is not None else f"the weights of step {self._last_update()}"
            log.warning("warning: the last %d optimizer steps (steps %d to %d) were skipped for a non-finite loss or "
                        "gradient (%s)%s: the final model is %s; lower training.max_consecutive_nonfinite (%d) to "
                        "stop such a run after fewer", k, since, last, cause,
                        f" and {forecast}" if forecast is not None else "", kept, limit)

    def _check_last_update(self) -> None:
        """A run that ends on no step counted as non-finite, with final weights that are not finite or forecast
        NaN/Inf on the validation windows: the last update the optimizer applied (``TrainerState.updated_step``)
        diverged and nothing after it was counted. It was the run's last step, or the steps after it were fp16's
        loss-scaler skips (a finite loss, overflowing scaled gradients: a diverging fp16 run has up to 16 of them,
        its scale halving from 65536 to 1, before a step counts). A NonFiniteError (exit 2) naming that update and
        the last checkpoint from before it, as the abort does; a warning when the final model is an earlier best
        checkpoint (``load_best_model_at_end``). A healthy run whose last steps are ordinary scaler skips has
        finite weights and forecasts, and ends as it is."""
        st, t = self.state, self.cfg.training
        fault = self._final_weights_fault()
        if fault is None:
            return
        last, u = st.global_step, st.updated_step
        if u is None:  # resumed from a checkpoint that did not note it, and no update applied since
            made = "the last update the optimizer applied (the checkpoint resumed from does not note which)"
        else:
            made = f"step {u}'s update, the last the optimizer applied" if u else "no update: the weights the run started from"
        if u is not None and u < last:
            made += f"; steps {u + 1} to {last} were skipped by fp16's loss scaler (a finite loss, overflowing scaled gradients)"
        best = self.weights_step()
        if best is None:
            raise NonFiniteError(
                f"training diverged: {fault}, made by {made}; lower training.learning_rate ({t.learning_rate:g}) and "
                f"start over with output.overwrite=true" + (f"; {self._checkpoint_before(u)}" if u else ""))
        if self.info.is_main:
            log.warning("warning: %s, made by %s: the final model is the best checkpoint's (step %d)", fault, made, best)

    def _final_weights_fault(self) -> str | None:
        """What is wrong with the last step's weights: not finite, or forecasting NaN/Inf on the validation
        windows (as scored at the last step, else scored now: on every rank, a collective). None: neither,
        or no validation window to tell."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return "the final weights are not finite"
        last = self.state.global_step
        scored = self._last_eval[1] if self._last_eval is not None and self._last_eval[0] == last else None
        if scored is None and len(self.val_windows):
            scored = self.evaluate(self.val_windows, self.cfg.evaluation.max_eval_batches)
        if scored is not None and not math.isfinite(scored["mse"]):
            return "the final weights forecast NaN/Inf on the validation windows"
        return None

    def weights_step(self) -> int | None:
        """The step whose weights :meth:`final_weights` keeps when it is not the last one (the best
        checkpoint's, under ``training.load_best_model_at_end``); None: the last step's."""
        if not (self.cfg.training.load_best_model_at_end and self.opt is not None and self.best_checkpoint_path()):
            return None
        return None if self.state.best_step == self.state.global_step else self.state.best_step

    def final_weights(self) -> None:
        """Leave the model with the weights the run keeps: the optimizer's evaluation weights
        (schedule-free averaging) of the last step, or with ``training.load_best_model_at_end`` those
        of the best checkpoint, the weights its validation scored. A checkpoint holds the training
        weights and the optimizer state, so schedule-free evaluation weights are rebuilt from both
        (the very weights scored: evaluating puts the training weights back exactly, see
        :meth:`~hftraining.optim.stepper.TrainOptimizer.train`)."""
        t = self.cfg.training
        if t.load_best_model_at_end and self.opt is not None:
            best = self.best_checkpoint_path()
            if best is None and self.state.best_step is not None:  # turned on by a resume after the best was scored
                if self.info.is_main:
                    log.warning("warning: training.load_best_model_at_end: the best step %d (eval_%s=%.6g) was scored "
                                "without a checkpoint (the setting was off then), so the final model is the last "
                                "step's", self.state.best_step, self.cfg.evaluation.metric, self.state.best_metric)
            elif best is None and self.state.evals_without_improvement:  # scored, never finite (_after_eval)
                self.logger.info("training.load_best_model_at_end: none of the %d validation scores (eval_%s) was finite, "
                                 "the final model is the last step's", self.state.evals_without_improvement,
                                 self.cfg.evaluation.metric)
            elif best is None:  # no validation window, so no score: say so rather than pretend
                self.logger.info("training.load_best_model_at_end: no validation score, the final model is the last step's")
            elif not best.is_dir():
                raise UserError(f"training.load_best_model_at_end: the best checkpoint {best} is gone")
            else:
                try:  # checked as a resumed checkpoint is: a changed byte would load other weights, silently
                    ckpt.verify_checkpoint(best)
                except ckpt.CheckpointError as e:
                    raise UserError(
                        f"training.load_best_model_at_end: the best checkpoint {best} fails verification: {e}; "
                        "continue with --resume and training.load_best_model_at_end=false to keep the last "
                        "step's weights, or start over"
                    ) from None
                ckpt.load_weights(best, self.model)
                ckpt.load_optimizer(best, self.optimizer)
                self.logger.info("final model = best checkpoint (step %s, eval_%s=%.6g)",
                                 self.state.best_step, self.cfg.evaluation.metric, self.state.best_metric)
        if self.opt is not None:
            self.opt.eval(keep_train_weights=False)  # training is over
        self.model.eval()

    def close(self) -> None:
        try:
            self.logger.close()  # may raise (a full disk): the DDP wrapper goes all the same
        finally:
            if self.ddp is not None:
                # the DDP reducer and the collective work it holds go before their process group does: left
                # to the interpreter's exit, Gloo's worker threads can free them with the interpreter half torn
                # down and abort the process ("terminate called without an active exception", exit -6 on a
                # rank). forward_loss is a closure over the wrapper (compiled or not): it goes with it
                self.ddp = None
                self.forward_loss = None
                gc.collect()


def compile_mode(cfg: Config, device_type: str, world_size: int) -> str:
    """``training.compile`` as this run uses it. ``auto`` takes ``AUTO_COMPILE``'s mode for the device
    only inside the scope that mode was proven in on such a device: one process, bf16, the transformer
    without gradient checkpointing, an optimizer without Hessian steps, batches of windows (not of
    dates). Outside it ``auto`` is eager; an explicit mode is used as given (and checked)."""
    t = cfg.training
    if t.compile != "auto":
        return t.compile
    mode = AUTO_COMPILE.get(device_type, "none")
    if mode == "none":
        return mode
    proven = (world_size == 1 and resolved_precision(t) == "bf16" and cfg.model.type == "transformer"
              and not t.gradient_checkpointing and not optim.needs_double_backward(t) and cfg.data.batching != "dates")
    return mode if proven else "none"


def cross_sectional(cfg: Config) -> bool:
    """Whether the run learns a cross-section (a per-date label or loss): validation then keeps whole
    dates and reports the rank IC as its loss-like metric."""
    return cfg.model.loss != "mse" or cfg.data.target in CROSS_SECTIONAL


def _whole_dates(times: np.ndarray, n: int) -> int:
    """How many of the first ``n`` windows (as-of ``times``, in date order) to keep so that no date is
    cut: ``n`` less the first windows of a date that goes on past it (the first date whole when it
    alone has more than ``n``). Windows not in date order: ``n``."""
    head = times[: n + 1]
    if len(head) < 2 or np.any(head[1:] < head[:-1]):
        return n
    cut = int(np.searchsorted(head, head[n], side="left")) if n < len(times) else n
    return cut if cut > 0 else int(np.searchsorted(times, times[0], side="right"))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the records a killed run logged after the checkpoint it resumes from (they are redone),
    and a last line it left half-written (:func:`read_jsonl`), written back as the tracker writes them:
    beside the file, then put in place. Rewritten in place, a write that failed (a full disk, a kill)
    left it cut short, the records up to the checkpoint lost for good."""
    if not path.exists():
        return
    keep = [rec for rec in read_jsonl(path) if rec.get("step", 0) <= last_step]
    text = "".join(dumps(rec, indent=None) + "\n" for rec in keep)
    replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
