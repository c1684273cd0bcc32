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

import dataclasses
import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from hftraining import optim
from hftraining.core.config import Config, resume_conflicts, save_config
from hftraining.core.errors import ConfigError, UserError
from hftraining.core.jsonio import read_json, write_json
from hftraining.data.features import check_calendar_version, feature_columns
from hftraining.data.pipeline import PreparedData, check_calendar_rule, check_grouping_rule, prepare
from hftraining.data.provenance import check_source_rows
from hftraining.eval.model_card import card_meta, write_model_card
from hftraining.inference.folders import FITTED_BASELINES_DIR
from hftraining.models import ForecastModel
from hftraining.models.predict import cpu_has_bf16
from hftraining.models.registry import check_buildable, check_model, unread_settings_warning
from hftraining.train import checkpoint as ckpt
from hftraining.train.distributed import DistInfo, barrier, cleanup, init_distributed, peer_lost
from hftraining.train.logging import RunLogger, held_records, log
from hftraining.train.trainer import Trainer, TrainerState, check_config, check_cross_section

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
            step = ckpt.read_step(path)
            if step > t.max_steps:  # no step would train: final/ would hold more steps than config.json says
                raise ConfigError(
                    f"training.max_steps: {t.max_steps} is below step {step} of the checkpoint resumed ({path}): "
                    f"a resumed run cannot take steps back; resume with training.max_steps of at least {step}, "
                    "or name an earlier checkpoint in training.resume_from_checkpoint")
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
    """A fresh start: remove what an earlier run left in ``run_dir`` (:data:`RUN_FOLDERS`, :data:`RUN_FILES`, and
    its fitted baselines, which ``evaluate`` scored beside the new model when the new run wrote none)."""
    ckpt_root = run_dir / "checkpoints"
    if info.is_main:
        if ckpt.list_checkpoints(ckpt_root):  # output.overwrite: said, never silent
            log.warning("output.overwrite: starting over in %s; the earlier run's checkpoints, final model, logs and "
                        "reports are removed", run_dir)
        for name in (*RUN_FOLDERS, FITTED_BASELINES_DIR, *RUN_FILES):
            _remove(run_dir / name)
    barrier(info)


def _remove(path: Path) -> None:
    """Remove ``path`` of an earlier run, or a UserError naming it. A link is removed, never what it leads to:
    left in place (``rmtree`` refuses links), the new run wrote its final model and fitted baselines through it
    into another folder. One that cannot be removed (read-only) is said, not skipped: the new run's folder held
    the earlier run's baselines, which ``evaluate`` scored beside the new model."""
    try:
        if path.is_symlink():  # said: a folder put elsewhere by a link (a larger disk) is now written inside the run
            log.warning("warning: %s: a link (to %s); the link is removed, not what it leads to: this run writes its "
                        "%s inside the run folder", path, os.readlink(path), path.name)
            path.unlink()
        elif path.exists() and not path.is_dir():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
    except OSError as e:
        raise UserError(f"{path}: an earlier run's, cannot be removed for this run to start over "
                        f"({e.strerror or type(e).__name__}); remove it, or give another output.output_dir") from None


def finished_checkpoint(cfg: Config) -> Path | None:
    """The checkpoint a ``--resume`` of a finished run would continue from, or None: the run's newest
    checkpoint (the one resumed) is its last step (``training.max_steps`` reached, or stopped early),
    eval.json scores that step and the model card ``final/README.md``, written after eval.json and the
    report, says it was evaluated after that step (its front matter, not file times, which a copy such
    as ``cp -r`` does not keep: a run stopped while it was being scored is scored again). Such a
    resume trained nothing and scored the test split again: every tracking backend then held the test
    metrics twice (MLflow's history and TensorBoard's events, at the same step), so
    :func:`~hftraining.workflows.train_run.train` leaves it as it is instead."""
    run_dir, spec = cfg.run_dir(), cfg.training.resume_from_checkpoint
    card, scored = run_dir / "final" / "README.md", run_dir / "eval.json"
    meta = card_meta(card)
    if not spec or meta is None or meta.get("evaluated") is not True or not scored.is_file():
        return None
    ckpts = ckpt.list_checkpoints(run_dir / "checkpoints")
    if not ckpts or (spec != "auto" and Path(spec).resolve() != ckpts[-1][1].resolve()):
        return None  # an earlier checkpoint named: its steps are trained again
    step, path = ckpts[-1]
    try:
        state, result = read_json(path / ckpt.STATE_FILE), read_json(scored)
    except (OSError, ValueError):
        return None  # the resume says what is wrong
    if not isinstance(state, dict) or not isinstance(result, dict) or state.get("global_step") != step:
        return None
    done = step >= cfg.training.max_steps or bool(state.get("stopped_early"))
    return path if done and result.get("step") == step and meta.get("trained_steps") == step else None


def check_resumable(cfg: Config, path: Path) -> None:
    """A UserError naming the keys when ``cfg`` changes what checkpoint ``path`` cannot continue with
    (:data:`~hftraining.core.config.RESUME_FIXED`: the model's shapes, the windows and their order,
    the optimizer): the weights would not load, or the sampler's position would count through other
    windows, silently."""
    saved = ckpt.read_config(path)  # unverified when written before checksums: cut short, one line
    conflicts = resume_conflicts(saved, cfg)
    # data.eval_batch_size may change, but evaluation.max_eval_batches counts batches of it: another size scores
    # other validation windows, and the kept best score and early stopping's patience would be compared with them
    was = (saved.get("data") or {}).get("eval_batch_size") if isinstance(saved, dict) else None
    if cfg.evaluation.max_eval_batches is not None and isinstance(was, int) and was != cfg.data.eval_batch_size:
        conflicts.append(("data.eval_batch_size", was, cfg.data.eval_batch_size))
    # a setting the optimizer ignores (optim.SETTINGS) built nothing the checkpoint holds: a run started before
    # such a value was refused resumes with it set back to its default
    conflicts = [c for c in conflicts if not (c[0].startswith("training.") and c[0][9:] in optim.SETTINGS
                                              and not optim.uses_setting(cfg.training, c[0][9:]))]
    # the optimizer is chosen by its name in any case (AdamW is adamw): another spelling builds the same one
    conflicts = [c for c in conflicts if not (c[0] == "training.optimizer" and isinstance(c[1], str)
                                              and c[1].lower() == str(c[2]).lower())]
    if conflicts:
        shown = ", ".join(f"{k}={json.dumps(now)} (the checkpoint's: {json.dumps(then)})" for k, then, now in conflicts[:3])
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise UserError(f"{path}: cannot resume with {shown}{more}: a resumed run keeps the checkpoint's model, data "
                        "and optimizer; resume without the change, or start over with output.overwrite=true")


RUN_LOGS = ("metrics.jsonl", "metrics.csv", "tracking.json", "tensorboard")
"""What a run folder logs of its course: the records, and the ids of its MLflow and W&B runs."""


def set_aside_later_checkpoints(info: DistInfo, run_dir: Path, path: Path) -> None:
    """A run resumed from a checkpoint named explicitly takes a course of its own from its step: the
    run folder's later checkpoints (of the course it left) are set aside as ``step-N.superseded``, with
    a warning, so that the next ``--resume`` continues this run (it continued the newest of them,
    silently discarding the steps trained since). A checkpoint of another run folder sets aside every
    checkpoint of this one: none is of the course resumed (kept, an earlier one was taken for this
    run's, by ``--resume`` after a damaged newest checkpoint and by ``load_best_model_at_end`` when
    its name was the best's); and its logs (:data:`RUN_LOGS`, as ``<name>.superseded``): their records up
    to the step resumed were another run's, mixed with this one's in metrics.jsonl and metrics.csv, and
    tracking.json's ids continued that run's MLflow and W&B runs. The logs start at the step resumed, in
    new tracking runs. Done once the data are built, as every change to the run folder."""
    if info.is_main:
        step = ckpt.read_step(path)
        foreign = not ckpt.in_folder(path, run_dir / "checkpoints")
        aside = [p.name.rsplit(".", 1)[0] for p in ckpt.set_aside_after(run_dir / "checkpoints", -1 if foreign else step)]
        logs = [name for name in (RUN_LOGS if foreign else ()) if (run_dir / name).exists()]
        for name in logs:
            ckpt.set_aside(run_dir / name, "superseded")
        if aside or logs:
            shown = ", ".join(aside[:3]) + (f" and {len(aside) - 3} more" if len(aside) > 3 else "")
            if foreign:
                what = [f"checkpoints ({shown}) are set aside as step-N.superseded, so that --resume continues the "
                        "course resumed, not another run's"] if aside else []
                what += [f"logs ({', '.join(logs)}) are set aside as <name>.superseded: this run logs from step "
                         f"{step + 1} on, in new MLflow and W&B runs"] if logs else []
                log.warning("warning: resuming from %s (step %d), a checkpoint of another run folder: this run folder's "
                            "%s", path, step, "; its ".join(what))
            else:
                log.warning("warning: resuming from %s (step %d): the run's later checkpoints (%s) are set aside as "
                            "step-N.superseded, so that --resume continues this course of the run, not the one it "
                            "left", path, step, shown)
    barrier(info)


TRAINED_ROWS = "trained_rows"
"""data_report.json's key (written by a run, not by ``data check``): each symbol's SHA-1 of the dates and
closes of its rows up to the last one a training or validation window reads (:func:`trained_rows`)."""


def trained_rows(data: PreparedData) -> dict[str, str]:
    """Each symbol's SHA-1 of the dates and closes of its rows, from its first to the last row its training
    and validation windows read (inputs and targets), as read and validated (no arithmetic: the same on
    every machine). A resume on files whose prices were revised inside that span (an adjustment for a
    dividend or a split, a corrected bar) keeps every date and window count, and continued on other inputs
    with another scaler, silently; rows of the test split alone may change or be added."""
    sets = [ws for ws in (data.train, data.val) if len(ws)]
    if not sets:
        return {}
    base = sets[0]
    last = np.full(len(base.symbols), -1, dtype=np.int64)  # (S,) the last row a window of each symbol reads
    for ws in sets:
        np.maximum.at(last, ws.symbol_ids, ws.ends.astype(np.int64) + ws.horizon)
    out = {}
    for k, sym in enumerate(base.symbols):
        if last[k] < 0:  # no training or validation window reads it
            continue
        rows = slice(int(base.segment_first[k]), min(int(last[k]) + 1, len(base.row_times)))
        h = hashlib.sha1(usedforsecurity=False)
        h.update(np.ascontiguousarray(base.row_times[rows], dtype="<i8").data)
        h.update(np.ascontiguousarray(base.row_close[rows], dtype="<f8").data)
        out[sym] = h.hexdigest()
    return out


def run_report(data: PreparedData) -> dict[str, Any]:
    """What a run writes as its data_report.json: the data's report and :func:`trained_rows`."""
    return {**data.report, TRAINED_ROWS: trained_rows(data)}


def _trained_on(report: dict[str, Any]) -> dict[str, Any]:
    """What of a data report the training depends on: the training and validation windows, where
    each symbol's training and validation rows begin and end (the test split may grow) and, last,
    their dates and closes (:data:`TRAINED_ROWS`, where the report holds them)."""
    windows, split = report.get("windows") or {}, report.get("split") or {}
    out = {f"windows.{k}": windows[k] for k in ("train", "val") if k in windows}
    if "val_from" in split:
        out["split.val_from"] = split["val_from"]
    for sym, parts in sorted((split.get("symbols") or {}).items()):
        out.update({f"split.symbols.{sym}.{k}": parts[k] for k in ("train", "val") if k in (parts or {})})
    if split.get("symbols"):  # their order is the windows' (a run started before FORMAT 13 took data.symbols' or the files')
        out["symbols"] = list(split["symbols"])
    digests = report.get(TRAINED_ROWS) or {}
    out.update({f"{TRAINED_ROWS}.{sym}": digests[sym] for sym in sorted(digests)})
    return json.loads(json.dumps(out))


def check_same_data(report: dict[str, Any], path: Path) -> None:
    """A UserError naming data.data_dir when the data a run resumed from checkpoint ``path`` prepared
    (``report``) are not those the checkpoint's run trained on (its data_report.json, written when it
    started, beside ``checkpoints/``): rows added to or removed from the files move the split, so the
    sampler's position would count through other windows, scaled by another scaler, and data_report.json
    would be rewritten to say the new ones, silently; so do prices revised inside the training and
    validation rows (:data:`TRAINED_ROWS`). Rows added after the validation split (the test split grown)
    change nothing trained on and pass."""
    saved = path.parent.parent / "data_report.json"
    try:
        then = _trained_on(read_json(saved))
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return  # not written (a run stopped before it, a checkpoint copied alone) or unreadable: nothing to compare
    now = _trained_on(report)
    raw = read_json(saved)
    if isinstance(raw, dict) and "calendar_version" not in raw and report.get("scaled_by_std"):
        cols = report["scaled_by_std"]
        raise UserError(f"{path}: cannot resume: the run's version scaled the robust scaler's columns of interquartile "
                        f"range 0 by 1, this version by their standard deviation ({'; '.join(cols[:3])}"
                        f"{f' and {len(cols) - 3} more' if len(cols) > 3 else ''}): its weights were trained on other "
                        "inputs; finish it with the version that started it, or start over with output.overwrite=true")
    was, now_dropped = (raw.get("dropped_features") if isinstance(raw, dict) else None), report.get("dropped_features") or {}
    if isinstance(was, dict) and sorted(was) != sorted(now_dropped):  # the model's inputs: another input layer
        raise UserError(f"{path}: cannot resume: the run dropped the features {json.dumps(sorted(was))} ({saved}), "
                        f"these data drop {json.dumps(sorted(now_dropped))} ({'; '.join(sorted(set(now_dropped.values()))) or 'none'}): "
                        "its weights take other inputs; finish it with the version and data that started it, or start "
                        "over with output.overwrite=true")
    # what a report of an older version lacks is not compared, nor the digests of rows a caller did not take
    changed = [k for k in then if then[k] != now.get(k) and (k in now or not k.startswith(f"{TRAINED_ROWS}."))]
    if changed == ["symbols"]:
        raise UserError(f"{path}: cannot resume: the run took its symbols in the order {json.dumps(then['symbols'])} "
                        f"({saved}), this version in name order ({json.dumps(now['symbols'])}): its sampler's position "
                        "would count through other windows; finish it with the version that started it, or start "
                        "over with output.overwrite=true")
    # the same split, other windows: this version's cut when the run strode its windows by dates (the one
    # change of cut on the same rows); else rows added or removed inside the split (a bar lost mid-way)
    if changed and all(k.startswith("windows.") for k in changed) and _strided_by_dates(path):
        k = changed[0]
        raise UserError(f"{path}: cannot resume: {k} is {json.dumps(now.get(k))} (the run's, {saved}: "
                        f"{json.dumps(then.get(k))}) on rows split where the run split them: this version cuts the "
                        "windows otherwise (data.stride under data.batching=dates keeps whole dates since 2026-12-05); "
                        "finish it with the version that started it, or start over with output.overwrite=true")
    if changed and changed[0].startswith(f"{TRAINED_ROWS}."):  # the same dates and windows, other prices
        syms = [k.split(".", 1)[1] for k in changed]
        raise UserError(f"{path}: cannot resume on other data: the dates or closes of {', '.join(syms[:3])}"
                        f"{f' and {len(syms) - 3} more' if len(syms) > 3 else ''} up to the last training or validation "
                        f"window differ from those the run trained on ({saved}: {TRAINED_ROWS}); the files under "
                        "data.data_dir changed since the run started (prices revised?): resume with the data as they "
                        "were, or start over with output.overwrite=true")
    if changed:
        k = changed[0]
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise UserError(f"{path}: cannot resume on other data: {k} is {json.dumps(now.get(k))} (the run's, "
                        f"{saved}: {json.dumps(then.get(k))}){more}; the files under data.data_dir "
                        "changed since the run started: resume with the data as they were, or start over with "
                        "output.overwrite=true")


def _strided_by_dates(path: Path) -> bool:
    """Whether the run of checkpoint ``path`` (its config.json) strode its windows under date batching
    (``data.stride`` > 1 with ``data.batching: dates``), which this version cuts otherwise since 2026-12-05."""
    try:
        d = read_json(path / "config.json").get("data") or {}
    except (OSError, ValueError, AttributeError):
        return False
    stride = d.get("stride")
    return d.get("batching") == "dates" and isinstance(stride, int) and stride > 1


def check_same_calendar(cfg: Config, data: PreparedData, path: Path) -> None:
    """A DataError when the run resumed from checkpoint ``path`` computed its time features by an older
    rule than this version's where the rule changes them (:func:`~hftraining.data.features.check_calendar_version`;
    its data_report.json without ``calendar_version``: 1): its weights were trained on other inputs."""
    saved = path.parent.parent / "data_report.json"
    try:
        then = read_json(saved).get("calendar_version", 1)
        grouped = read_json(saved).get("grouping_version", 1)  # 1: its labels and market features grouped by stamp
    except (OSError, ValueError, TypeError, AttributeError):
        return  # not written or unreadable: check_same_data says the same of it
    if grouped == 1:  # refused where a date beside instants is grouped otherwise now
        check_grouping_rule(dataclasses.replace(data.preprocessing, grouping_version=1), None,
                            f"{path}: cannot resume: {saved}",
                            "finish it with the version that started it, or start over with output.overwrite=true")
    rows = data.preprocessing.source_rows  # each symbol's last stamp, as loading a model folder reads them
    last = [ns for _, ns, _ in check_source_rows(rows, str(saved)).values()] if rows else None
    check_calendar_version(then, data.preprocessing.features, cfg.data.timezone, data.preprocessing.bar_seconds,
                           f"{path}: cannot resume: {saved}",
                           "finish it with the version that started it, or start over with output.overwrite=true",
                           stamps=last)
    if then in (1, 2):  # 1 read every midnight as an instant, 2 by all its frame's bars: refused where 3 reads otherwise
        check_calendar_rule(dataclasses.replace(data.preprocessing, calendar_version=then), None,
                            f"{path}: cannot resume: {saved}",
                            "finish it with the version that started it, or start over with output.overwrite=true")


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
    with held_records():  # what is said before the trainer opens train.log goes into it too
        return _build_trainer(cfg, data, info, on_evaluate, model)


def check_before_data(cfg: Config, info: DistInfo, model: ForecastModel | None = None) -> str:
    """What of ``cfg`` is checked before any data is read, on the devices of ``info`` → the autocast
    precision: the trainer's settings (:func:`~hftraining.train.trainer.check_config`) and, unless the
    caller built ``model``, the model itself, built on the meta device
    (:func:`~hftraining.models.registry.check_buildable`: ``model.season_length`` past the window,
    ``training.gradient_checkpointing`` on a model without it, a model too large). Every command that
    starts over with ``output.overwrite`` (train, ``train --seeds``, walkforward) calls it before it
    removes an earlier run, which the trainer's own check came after."""
    precision, _ = check_config(cfg, info)
    if model is None:  # a model's own mistake (season_length past the window) before the run folder is cleared
        check_buildable(cfg.model, cfg.data.prediction_horizon, cfg.data.sequence_length,
                        cfg.training.gradient_checkpointing,
                        n_features=len(feature_columns(cfg.data.features)))  # at most: no volume drops some
    return precision


def _build_trainer(cfg: Config, data: PreparedData | None, info: DistInfo,
                   on_evaluate: Callable[[int, dict[str, float]], None] | None, model: ForecastModel | None) -> Trainer:
    """:func:`build_trainer`'s work."""
    precision = check_before_data(cfg, info, model)  # before the run folder and the data: a mistake costs no feature build
    if (precision == "bf16" and info.device.type == "cpu" and info.is_main and cpu_has_bf16() is False
            and (model is not None or check_model(cfg.model).needs_training)):
        # the fix a config load takes: precision=fp32 beside use_mixed_precision: true is refused as ignored
        fix = ("training.use_mixed_precision=false" if cfg.training.precision != "bf16" else "training.precision=fp32"
               + (" with training.use_mixed_precision=false" if cfg.training.use_mixed_precision else ""))
        log.warning("warning: training.precision bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): torch "
                    "computes it in software, several times slower than fp32 (the quickstart: 228 s against 29 s); "
                    "%s trains in fp32", fix)
    if model is None and info.is_main and (unread := unread_settings_warning(cfg.model)):
        log.warning("%s", unread)  # a config shared by several model types: said, not refused
    run_dir, resume_path = prepare_run_dir(cfg, info)
    seed_everything(cfg.training.seed)
    if data is None:
        data = prepare(cfg.data)
    check_cross_section(cfg, data.train, data.val, data.test, resuming=resume_path is not None)  # before an earlier run is cleared
    if resume_path is None:
        if cfg.training.resume_from_checkpoint == "auto" and info.is_main:  # said once the data are read
            # a mistyped output_dir, or a folder whose checkpoints were deleted, would start over unnoticed
            log.warning("warning: %s: no checkpoint to resume (training.resume_from_checkpoint=auto, --resume); "
                        "training starts at step 0", run_dir)
        clear_run_dir(info, run_dir)
    else:
        check_same_data(run_report(data), resume_path)
        check_same_calendar(cfg, data, resume_path)
        if cfg.training.resume_from_checkpoint != "auto":
            set_aside_later_checkpoints(info, run_dir, resume_path)
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
            write_json(run_dir / "data_report.json", run_report(data))
        trainer.fit()
        trainer.final_weights()
        if save_final and info.is_main:
            final = ckpt.save_final(run_dir, trainer.model, data.preprocessing.to_dict())
            # the card says "not evaluated" until the caller's test evaluation rewrites it
            write_model_card(final, cfg, data.report, data.preprocessing.to_dict(), trainer.model, trainer.state.global_step,
                             weights_step=trainer.weights_step(),
                             world_size=info.world_size if trainer.state.global_step else None)
        yield TrainedRun(cfg, run_dir, data, trainer.model, trainer.state, info, trainer.device,
                         trainer.precision, trainer.logger, trainer.weights_step())
        if info.is_main:
            trainer.logger.info("run folder: %s", run_dir)
        barrier(info)  # the other ranks wait while the main rank evaluates
    except RuntimeError as e:  # a rank that stopped has said why: the others say so in one line, not a traceback
        lost = peer_lost(e, info)
        if lost is None:
            raise
        raise lost from None
    finally:
        try:
            if trainer is not None:
                trainer.close()
        finally:  # the group is left even when closing the run raised (a full disk)
            if own_group:
                cleanup(info)
