"""Hyperparameter search with Optuna (the ``tune`` extra): ``hftraining tune --config FILE --trials N``.

The search space is the config's ``tune.search_space``: ``section.key`` → a range
(``{type: int|float, low, high, log, step}``) or a choice (``{choices: [...]}``), for any key of
the config tree except ``output.*``, ``tune.*``, ``serve.*``, the keys that place the test split
(:data:`SPLIT_KEYS`), those that define the objective (:data:`OBJECTIVE_KEYS`: its metric and
validation windows, the same for every trial; nor ``model.loss`` scored by ``evaluation.metric: loss``,
nor ``data.eval_batch_size`` under ``evaluation.max_eval_batches``, :func:`check_objective`) and the seed
(:data:`SEED_KEYS`: the best of N seeds is the luckiest run).
Every trial of a study keeps one test split: a drawn value that moves it (``data.features`` whose
warm-up rows move a calendar cut made at ratios, say) stops the tune with a one-line error
(:func:`check_test_split`), since a trial's validation dates would then be another's test dates;
``data.split_dates`` fixes the cut for all of them. A study is continued only with the search
space its trials drew from (:func:`check_space_unchanged`) and on the rows before the test split they were
cut from (:func:`check_data_unchanged`; whatever the searched keys that do not change a symbol's rows, such as
``data.sequence_length``, draw): its best trial is chosen among trials of one search on one data set. A study
whose trials all failed holds no score to compare with, and takes the cut and the rows of its next trial.

Objective: ``evaluation.metric`` (lower is better) on **validation** data (the last evaluation, or
the best one with ``training.load_best_model_at_end``): the validation split of one training run
per trial, or with ``tune.folds: K`` the mean over K walk-forward folds
(:mod:`hftraining.workflows.walkforward`) of each fold's validation rows. The test split (and a fold's
test block) is never scored: a trial trains and stops, it does not run the final test evaluation.
Every evaluation (each ``evaluation.eval_steps``) is reported to Optuna, whose pruner may stop the
trial there.

Storage (``--storage``, :func:`storage_url`): trials share one Optuna storage, so ``--workers K``
processes on this machine, or the same command on several machines with the same database URL and
``--study``, run one study together. ``journal:///abs/path.log`` is Optuna's journal file (safe for
several processes on one machine, or on a shared file system); the default is
``journal:///<out>/tune.journal`` whatever ``--workers``. ``postgresql://user@host/db`` (driver:
psycopg 3, the ``tune`` extra; name another as ``postgresql+DRIVER://``) and ``mysql://...`` are
Optuna's RDB storage, for several machines. ``sqlite:///path.db`` only with one worker: Optuna
advises against SQLite for parallel processes. ``--trials 0`` runs nothing and writes the report of
the study as stored (e.g. once every machine has finished), after failing the trials of dead workers
(:func:`fail_stale_trials`) as a tune that runs trials does. Each trial's sampler is seeded from
``(tune.seed, trial number)``: trial numbers are unique in a study, so parallel workers never
replay each other's draws, and one worker is reproducible.

A trial whose drawn values fail (a combination the config refuses that :func:`check_space_values`
did not check, a non-finite validation metric, a loss that diverges past
``training.max_consecutive_nonfinite``, out of memory) is stored as failed with its reason (the
``fail_reason`` attribute, printed in the report) and the next trial runs; when every trial of the
run failed so, the report is written and the command exits 2 with the first reason. Any other
error stores its trial as failed, with its one line as the reason, and stops its worker (:func:`run_trials`). A
:class:`~hftraining.core.errors.UserError` stays one line (exit 2): with one worker it is raised as
it is; with ``--workers K`` each worker hands its error to the parent, which raises it as one
UserError line when workers failed and no trial of the run completed (else it warns and reports).

Written to the output folder (default ``runs/tune-<study>``), which holds one study (``study.json``
names it; another study's tune into it is a UserError, :func:`check_owner`, as is a new study in a folder
of trials written before ``study.json``: :func:`check_unowned_trials`). Each trial's folder is locked
while it trains (:func:`~hftraining.workflows.train_run.run_folder_lock`: a ``train`` into it is
refused, or refuses the trial) and must be new (:func:`check_new_trial`: the same study name in another
``--storage`` numbers its trials from 0 too). It holds ``trial-NNNN/`` run folders,
``trials.csv`` (the summary table; only a completed trial has a score in it), ``best_config.yaml`` (a
full config with the best values, for ``hftraining train --config``; its header says that no trial was
scored on the test split), ``best.json`` and ``importance.png`` (Optuna's parameter-importance plot,
matplotlib backend).

Selection bias: the best of N trials is the maximum of N noisy scores. Each trial therefore records
its out-of-sample return series in ``trial-NNNN/oos_returns.json`` (ISO dates and per-period
returns): the backtest (the run's ``evaluation.backtest_*`` settings) of the model's forecasts of
the split it is scored on — its validation split, or with ``tune.folds`` the validation blocks of
its folds concatenated in date order (a date in two folds' blocks keeps the later fold's return).
A pruned trial stops before it has one. After the study the completed trials' series are aligned
on their common dates and ``selection.json`` (also in ``best.json`` and the summary) reports the
Deflated Sharpe Ratio of the best trial's series given the per-period Sharpe ratios of the
completed trials and N = every trial judged on the validation data, pruned ones and ones that
failed after an evaluation included (:func:`study_selection`; Bailey & López de Prado 2014) and
the probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado &
Zhu 2017) of the series, see :func:`hftraining.eval.selection.selection_stats`. Both judge the trials on
the validation data that chose among them, so they measure the search's selection bias, not an
unbiased test score.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import re
import sys
import threading
import time
import typing
import warnings
from contextlib import contextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from hftraining import optim
from hftraining.optim.schedules import SCHEDULE_SETTINGS, check_schedule
from hftraining.core.config import (Config, ConfigDumper, DataConfig, TrainingConfig, TuneConfig, check_value,
                                    did_you_mean, in_other_sections, load_config, parse_override, reset_ignored,
                                    shown)
from hftraining.core.errors import ConfigError, DataError, UserError
from hftraining.core.fmt import fmt_time, shown_url
from hftraining.core.jsonio import read_json, write_json
from hftraining.data.features import check_specs, feature_columns
from hftraining.data.pipeline import PanelRows, panel_rows, prepare, resolve_cuts, split_segments
from hftraining.data.splits import union_calendar
from hftraining.data.store import KEYED_FIELDS
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import collect_forecasts
from hftraining.train.logging import Terminated, setup_console_logging, sigterm_as_interrupt
from hftraining.train.tracking import GROUP_FILE, TrackingGroup, join_group, read_tracking, start_group
from hftraining.train.runner import TrainedRun, training_run
from hftraining.models.registry import check_buildable
from hftraining.train.distributed import DistInfo, resolve_device
from hftraining.train.trainer import NonFiniteError, OutOfMemory, check_config
from hftraining.eval.selection import format_selection, selection_stats
from hftraining.workflows.train_run import check_report_importable, run_folder_lock, said_once
from hftraining.workflows.walkforward import prepare_fold

log = logging.getLogger("hftraining")

RANGE_KEYS = {"type", "low", "high", "log", "step"}
UNSEARCHABLE = ("output", "tune", "serve")  # sections that do not change what a trial trains
SPLIT_KEYS = ("data.split", "data.split_dates", "data.train_ratio", "data.val_ratio", "data.start_date", "data.end_date")
"""Keys that say where the test split starts: searched, a trial would be scored on dates of another
trial's test split, and the choice among them would depend on the chosen configuration's test dates."""
OBJECTIVE_KEYS = ("evaluation.metric", "evaluation.max_eval_batches", "evaluation.max_val_windows", "data.target",
                  "data.prediction_horizon")
"""Keys that define the objective: searched, trials would be scored by other metrics, on other validation
windows, or on another label or horizon (a cs_rank MSE against a return MSE; 1 step against 20), and the
lowest score would pick a metric, a subset or the easiest task, not a configuration."""
SEED_KEYS = ("training.seed",)
"""Keys that draw the luck of a run, not a configuration: searched, the best trial would be the seed whose
validation score came out lowest, a maximum of noise that the test split does not repeat."""
OOS_FILE = "oos_returns.json"  # a trial's out-of-sample return series, in its run folder
TRIALS_ARE = ("Optuna trials, each one configuration, backtested on the split it is scored on; N: every trial judged "
              "on it, pruned and failed ones included")
FAIL_REASON = "fail_reason"
"""User attribute of a trial that failed for its drawn values (:func:`config_failure`): the one-line why."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("tune needs Optuna: pip install -e '.[tune]' (in the hftraining checkout)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _field_type(key: str) -> Any:
    """The annotated type of config key ``section.key``; ConfigError naming it when unknown."""
    where = f"tune.search_space.{key}"
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{where}: expected a config key of the form section.key")
    section, name = parts
    hints = typing.get_type_hints(Config)
    if section not in hints or section in UNSEARCHABLE:
        valid = [s for s in hints if s not in UNSEARCHABLE]
        keys = [f"{s}.{f}" for s in valid for f in typing.get_type_hints(hints[s])]
        hint = did_you_mean(key, keys) if section not in hints else ""  # trainng.learning_rate: training.learning_rate
        raise ConfigError(f"{where}: section {section!r} cannot be searched; valid: {', '.join(valid)}{hint}")
    fields = typing.get_type_hints(hints[section])
    if name not in fields:  # a key of another section (training.batch_size) or a misspelt one is named
        hint = (in_other_sections(name, hints[section]) or did_you_mean(name, fields, f"{section}.")
                or f"; valid keys of {section}: {', '.join(sorted(fields))}")
        raise ConfigError(f"{where}: unknown key{hint}")
    if key in SPLIT_KEYS:
        raise ConfigError(f"{where}: moves the test split, so trials would be scored on another trial's test dates; "
                          "set it in the config, not in the search space")
    if key in OBJECTIVE_KEYS:
        raise ConfigError(f"{where}: sets what a trial is scored by (the metric, which validation windows, the label "
                          "or its horizon), so "
                          "trials drawing other values would not be comparable; set it in the config, not in the search space")
    if key in SEED_KEYS:
        raise ConfigError(f"{where}: the best of several seeds on the validation split is the luckiest run, not a "
                          "better configuration; set it in the config, not in the search space (train --seeds N "
                          "trains N seeds of one configuration)")
    return fields[name]


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    try:
        x = float(v)  # YAML 1.1 reads 1e-4 as a string
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {v!r}") from None
    if not math.isfinite(x):  # Optuna cannot draw from it (an OverflowError in the first trial)
        raise ConfigError(f"{where}: expected a finite number, got {v!r}")
    return x


def parse_space(space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate ``tune.search_space`` → normalised specs; a ConfigError names the offending key."""
    if not space:
        raise ConfigError("tune.search_space: empty; declare at least one key to search, "
                          "e.g. training.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}")
    out = {}
    for key, spec in space.items():
        where = f"tune.search_space.{key}"
        tp = _field_type(key)
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise ConfigError(f"{where}: a choice takes only 'choices', got {sorted(spec)}")
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}.choices: expected a non-empty list")
            checked = [check_value(c, tp, f"{where}.choices[{i}]") for i, c in enumerate(choices)]
            out[key] = {"choices": checked}
            continue
        unknown = set(spec) - RANGE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}; a range has {', '.join(sorted(RANGE_KEYS))}, a choice has choices")
        kind = spec.get("type")
        if kind not in ("int", "float"):
            raise ConfigError(f"{where}.type: expected 'int' or 'float' (or give choices), got {kind!r}")
        base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if kind == "int" and int not in base or kind == "float" and float not in base:
            raise ConfigError(f"{where}.type: {kind!r} does not fit the key's type {getattr(tp, '__name__', tp)}")
        for k in ("low", "high"):
            if k not in spec:
                raise ConfigError(f"{where}: a range needs '{k}'")
        low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
        log_ = spec.get("log", False)
        if not isinstance(log_, bool):
            raise ConfigError(f"{where}.log: expected true/false, got {log_!r}")
        if not low < high:
            raise ConfigError(f"{where}: low must be < high, got {low} and {high}")
        if log_ and low <= 0:
            raise ConfigError(f"{where}.low: a log range needs low > 0, got {low}")
        step = spec.get("step")
        if step is not None:
            step = _number(step, f"{where}.step")
            if step <= 0 or log_:
                raise ConfigError(f"{where}.step: must be > 0 and cannot be combined with log")
        if kind == "int":
            if not (low.is_integer() and high.is_integer()) or (step is not None and not step.is_integer()):
                raise ConfigError(f"{where}: an int range needs integer low/high/step")
            low, high, step = int(low), int(high), None if step is None else int(step)
        if step is not None and Decimal(str(high)) - Decimal(str(low)) < Decimal(str(step)):
            # Optuna moves high down onto the grid low + k·step: to low, so every trial drew low (its note hidden)
            raise ConfigError(f"{where}.step: {step} is more than high - low ({high} - {low}), so the range holds only "
                              f"low ({low}) and every trial would draw it; give a smaller step or a wider range")
        out[key] = {"type": kind, "low": low, "high": high, "log": log_, "step": step}
    return out


def check_searched_settings(cfg: Config, space: dict[str, dict[str, Any]]) -> None:
    """A ConfigError, before any trial, for a searched optimizer setting (``optim.SETTINGS``) that an optimizer
    the trials may use ignores: its trials would differ in nothing, and the first that draws a value away from
    the default would stop the search (:func:`hftraining.optim.check_compatibility` refuses it). The same for
    the schedule's keys (``SCHEDULE_SETTINGS``) and the schedules the trials may use (:func:`check_schedule`).
    Neither checks whether the cosine cycles fit the steps (``lengths=False``): ``max_steps`` or the warmup may be
    searched, so the config's own are not what a trial trains; :func:`check_space_values` checks the drawn ones."""
    _check_searched_keys(cfg, space, "optimizer", optim.SETTINGS,
                         lambda t: optim.check_compatibility(t, lengths=False), optim.uses_setting, "optimizers")
    _check_searched_keys(cfg, space, "lr_scheduler", SCHEDULE_SETTINGS, lambda t: check_schedule(t, lengths=False),
                         lambda t, key: t.lr_scheduler in SCHEDULE_SETTINGS[key], "schedules")
    check_searched_warmup(cfg, space)


def check_searched_warmup(cfg: Config, space: dict[str, dict[str, Any]]) -> None:
    """A ConfigError naming both keys, before any trial, for ``training.warmup_ratio`` searched while every trial
    sets ``training.warmup_steps`` (the config's, or each value its search can draw), which outranks the ratio
    (:func:`~hftraining.optim.schedules.warmup_steps`): every trial would train the same warmup, and the study
    would rank noise as the ratio's effect."""
    if "training.warmup_ratio" not in space:
        return
    spec = space.get("training.warmup_steps")
    if spec is None:
        if cfg.training.warmup_steps is None:
            return
        how = f"training.warmup_steps={cfg.training.warmup_steps} sets the warmup of every trial"
    else:
        if "choices" in spec and any(c is None for c in spec["choices"]):
            return  # the trials that draw null read the ratio
        how = "tune.search_space.training.warmup_steps draws a step count for every trial"
    raise ConfigError(f"tune.search_space.training.warmup_ratio: ignored beside training.warmup_steps, which outranks "
                      f"it ({how}), so the trials would train one warmup; set training.warmup_steps=null to search "
                      "the ratio, or search training.warmup_steps instead")


def _check_searched_keys(cfg: Config, space: dict[str, dict[str, Any]], choice: str, keys, check, uses,
                         kind: str) -> None:
    """:func:`check_searched_settings` for ``training.<choice>`` (its searched choices, or the config's value)
    and the searched ``training`` keys of ``keys`` that a choice may ignore: ``check(t)`` refuses a
    choice under the settings not searched, ``uses(t, key)`` says whether ``t``'s choice reads ``key``."""
    field = f"training.{choice}"
    searched = [k.split(".", 1)[1] for k in space if k.startswith("training.") and k.split(".", 1)[1] in keys]
    chosen = space.get(field, {}).get("choices", [getattr(cfg.training, choice)])
    if field in space:  # the settings not searched hold for every choice: one a choice ignores stops the search
        defaults = TrainingConfig()
        for name in chosen:
            t = dataclasses.replace(cfg.training, **{choice: name}, **{k: getattr(defaults, k) for k in searched})
            try:
                check(t)
            except ConfigError as e:
                raise ConfigError(f"tune.search_space.{field}: choice {name}: {e}") from None
    for key in searched:
        for name in chosen:
            if not uses(dataclasses.replace(cfg.training, **{choice: name}), key):
                how = f"a choice of {field}" if field in space else field
                raise ConfigError(f"tune.search_space.training.{key}: {name} ({how}) does not use it; "
                                  f"search it only with {kind} that do")


def check_objective(cfg: Config, space: dict[str, dict[str, Any]]) -> None:
    """A ConfigError, before any trial, for ``model.loss`` searched while ``evaluation.metric`` is ``loss``:
    each trial would be scored by the loss it trains (squared error of the scaled target, or minus an IC),
    and the lowest number would pick the loss whose scale is smaller (minus a negative IC beats any MSE of
    order 1), not the better model. And for ``data.eval_batch_size`` searched under
    ``evaluation.max_eval_batches``, which counts batches of that size: each size scores other validation
    windows (the first 32 or the first 512), and the lowest score would pick the easiest windows."""
    if cfg.evaluation.max_eval_batches is not None and "data.eval_batch_size" in space:
        raise ConfigError("tune.search_space.data.eval_batch_size: evaluation.max_eval_batches counts batches of that "
                          "size, so trials drawing other sizes would be scored on other validation windows; set it in "
                          "the config, not in the search space")
    if cfg.evaluation.metric == "loss" and "model.loss" in space and len(set(space["model.loss"]["choices"])) > 1:
        raise ConfigError("tune.search_space.model.loss: with evaluation.metric=loss each trial is scored by its own "
                          "loss (squared error or minus an IC), which are not comparable; score every trial by one "
                          "metric (evaluation.metric: mse, neg_ic or neg_rank_ic)")


MAX_SPACE_CHECKS = 256
"""At most this many combinations of drawable values are checked by :func:`check_space_values`."""


def drawable_values(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) of values a trial can draw from a parsed spec, for :func:`check_space_values`: every
    choice; of a range its low, its high (as Optuna adjusts it to the step grid) and a value between."""
    if "choices" in spec:
        seen: dict[str, tuple[str, Any]] = {}
        for c in spec["choices"]:
            seen.setdefault(json.dumps(c, sort_keys=True), (f"choice {json.dumps(c)}", c))
        return list(seen.values())
    low, high, step = spec["low"], spec["high"], spec["step"]
    if spec["type"] == "int":
        step = step or 1
        high = low + (high - low) // step * step
        mid = low + (high - low) // step // 2 * step
    elif step is not None:  # Optuna's grid, in decimals (0.1 steps stay 0.1 steps)
        d_low, d_step = Decimal(str(low)), Decimal(str(step))
        n = (Decimal(str(high)) - d_low) // d_step
        high, mid = float(d_low + n * d_step), float(d_low + n // 2 * d_step)
    else:
        mid = (low + high) / 2
    out = [("low", low), ("high", high), ("the value", mid)]
    return [(f"{label} {v!r}", v) for i, (label, v) in enumerate(out) if v not in [w for _, w in out[:i]]]


def trial_overrides(values: dict[str, Any], run_dir: Path) -> list[str]:
    """The overrides a trial adds to the command's: its drawn values and its run folder."""
    return _value_overrides(values) + [f"output.output_dir={json.dumps(str(run_dir))}", "output.overwrite=true",
                                       "output.progress_bar=never", "training.resume_from_checkpoint=null"]


def _trial_config_error(config_path, overrides: list[str], values: dict[str, Any], run_dir: Path,
                        built: dict[str, None] | None = None) -> UserError | None:
    """What a trial drawing ``values`` would refuse before its data are read, else None: the config
    (:func:`~hftraining.core.config.load_config`), its feature names (:func:`~hftraining.data.features.check_specs`,
    on a few rows of made-up prices), the trainer's checks (:func:`~hftraining.train.trainer.check_config`) and the
    model's constructor (:func:`~hftraining.models.registry.check_buildable`, on the meta device). ``built``: the
    features and models checked already (a key of the training section builds the same model)."""
    built = {} if built is None else built
    try:
        cfg = load_config(config_path, overrides + trial_overrides(values, run_dir))
        t = cfg.training
        if repr(cfg.data.features) not in built:
            check_specs(cfg.data.features)
            built[repr(cfg.data.features)] = None
        world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
        check_config(cfg, DistInfo(int(os.environ.get("RANK", "0")), world, local, resolve_device(t.device, local)))
        model = repr((cfg.model, cfg.data.prediction_horizon, cfg.data.sequence_length, t.gradient_checkpointing,
                      cfg.data.features))
        if model not in built:
            check_buildable(cfg.model, cfg.data.prediction_horizon, cfg.data.sequence_length, t.gradient_checkpointing,
                            n_features=len(feature_columns(cfg.data.features)))
            built[model] = None
    except UserError as e:
        return e
    return None


def check_space_values(config_path, overrides: list[str], space: dict[str, dict[str, Any]], out: Path) -> None:
    """A ConfigError, before the study or ``--out`` is created, when a trial could draw values that the
    config refuses: each trial that draws them would fail (perhaps after hours of others), or, before
    trials checked their draws (:class:`RefusedDraw`), stop the tune with an error that did not say it
    came from the search space. Checked as a trial checks before its data are read
    (:func:`_trial_config_error`), on the values of :func:`drawable_values` of every key, all their
    combinations (or, past :data:`MAX_SPACE_CHECKS`, each value with the other keys at their lows and at
    their highs, and a seeded sample). Only drawable combinations are checked: a value refused with the
    config's own value of another searched key, which no trial uses, is not refused. The error names
    ``tune.search_space.<key>`` and the value when that value fails whatever the other keys draw, else
    the combination."""
    keys = list(space)
    values = {k: drawable_values(space[k]) for k in keys}
    sizes = [len(values[k]) for k in keys]
    if math.prod(sizes) <= MAX_SPACE_CHECKS:
        combos = list(itertools.product(*[range(n) for n in sizes]))
    else:
        picked = {tuple(0 for _ in sizes), tuple(min(1, n - 1) for n in sizes)}  # all lows, all highs
        for i, n in enumerate(sizes):
            for j in range(n):
                for other in (0, 1):
                    picked.add(tuple(j if m == i else min(other, sizes[m] - 1) for m in range(len(keys))))
        rng = np.random.default_rng(0)
        while len(picked) < MAX_SPACE_CHECKS:
            picked.add(tuple(int(rng.integers(n)) for n in sizes))
        combos = sorted(picked)
    run_dir = out / "trial-0000"
    tried: dict[tuple[int, ...], UserError | None] = {}
    built: dict[str, None] = {}
    for c in combos:
        tried[c] = _trial_config_error(config_path, overrides, {k: values[k][j][1] for k, j in zip(keys, c)}, run_dir,
                                       built)
    bad = next((c for c in combos if tried[c] is not None), None)
    if bad is None:
        return
    why = " ".join(str(tried[bad]).split())
    base = _trial_config_error(config_path, overrides, {}, run_dir, built)  # the config with no value drawn
    for i, k in enumerate(keys):
        if any(tried[c] is None for c in combos if c[i] == bad[i]):
            continue  # it trains with some values of the other keys
        # the value is to blame when another value of the key trains, or when it alone breaks the config
        if any(tried[c] is None for c in combos if c[i] != bad[i]) or base is None and _trial_config_error(
                config_path, overrides, {k: values[k][bad[i]][1]}, run_dir, built) is not None:
            others = " whatever the other searched keys draw" if len(keys) > 1 else ""
            fix = "remove the choice" if "choices" in space[k] else "narrow the range"
            raise ConfigError(f"tune.search_space.{k}: {values[k][bad[i]][0]} fails{others}: {why}; a trial that "
                              f"draws it would stop the tune, so {fix}")
    if base is not None and all(e is not None for e in tried.values()):
        raise base  # a mistake of the config itself, whatever the search space draws
    drawn = ", ".join(f"{k}={json.dumps(values[k][j][1])}" for k, j in zip(keys, bad))
    raise ConfigError(f"tune.search_space: a trial that draws {drawn} fails: {why}; it would stop the tune, so "
                      "narrow the ranges or the choices so that every combination trains")


def _choice_labels(choices: list[Any]) -> list[Any]:
    """What Optuna stores for a choice: the choices when each is a JSON scalar, else each one's JSON (a list
    or dict is drawn as its label and given back by :func:`suggest` and :func:`_params_to_values`)."""
    if all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
        return list(choices)
    return [json.dumps(c) for c in choices]


def space_distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Optuna distribution that :func:`suggest` draws each key of the (parsed) space from, as the study
    stores it with each trial (a range's high moved onto its step grid, as Optuna moves it)."""
    dist = _optuna().distributions
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's note that a high off the step grid is moved onto it
        for key, spec in space.items():
            if "choices" in spec:
                out[key] = dist.CategoricalDistribution(_choice_labels(spec["choices"]))
            elif spec["type"] == "int":
                out[key] = dist.IntDistribution(spec["low"], spec["high"], log=spec["log"], step=spec["step"] or 1)
            else:
                out[key] = dist.FloatDistribution(spec["low"], spec["high"], log=spec["log"], step=spec["step"])
    return out


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw one value per key of the (parsed) space → {section.key: value}, from :func:`space_distributions`."""
    dist = _optuna().distributions
    values = {}
    for key, d in space_distributions(space).items():
        if isinstance(d, dist.CategoricalDistribution):
            choices, labels = space[key]["choices"], list(d.choices)
            values[key] = choices[labels.index(trial.suggest_categorical(key, labels))]
        elif isinstance(d, dist.IntDistribution):
            values[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            values[key] = on_grid(trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log), space[key])
    return values


def on_grid(value: Any, spec: dict[str, Any]) -> Any:
    """A draw of a stepped float range (``step``) as the decimal point of its grid that Optuna drew: Optuna
    computes ``low + k·step`` in binary floating point (0.1 + 2 × 0.1 = 0.30000000000000004), and that value,
    which the search space does not hold, was trained and written to trials.csv, best.json and
    best_config.yaml. The grid is :func:`drawable_values`'s (the values checked before the tune). Any other
    value is returned as it is: one off the grid, or beyond its ends, by Optuna's own test of a grid point
    (``k`` within 1e-8 of a whole number), as a failed trial's draw from a range the space has moved since
    (it was moved onto the nearest point of the new grid, or its end: 0.8 of 0..0.9 was reported as 0.5)."""
    if "choices" in spec or spec["type"] != "float" or spec["step"] is None or isinstance(value, bool) \
            or not isinstance(value, (int, float)) or not math.isfinite(value):
        return value
    d_low, d_step = Decimal(str(spec["low"])), Decimal(str(spec["step"]))
    top = (Decimal(str(spec["high"])) - d_low) // d_step
    x = (Decimal(repr(float(value))) - d_low) / d_step
    k = x.to_integral_value()
    if not 0 <= k <= top or abs(x - k) >= Decimal("1e-8"):
        return value
    return float(d_low + k * d_step)


def _spec_text(d) -> str:
    """A stored distribution as the search space entry that draws from it (:func:`space_distributions`)."""
    dist = _optuna().distributions
    if isinstance(d, dist.CategoricalDistribution):
        return f"{{choices: {json.dumps(list(d.choices))}}}"
    kind = "int" if isinstance(d, dist.IntDistribution) else "float"
    step = "" if d.step is None or kind == "int" and d.step == 1 else f", step: {d.step!r}"
    return f"{{type: {kind}, low: {d.low!r}, high: {d.high!r}, log: {str(d.log).lower()}{step}}}"


def _storable(old, new) -> bool:
    """Whether Optuna stores a draw from ``new`` beside a trial's draw of the same key from ``old``: the same
    kind and log scale, and for a choice the same choices (a range may move)."""
    if type(old) is not type(new):
        return False
    if isinstance(old, _optuna().distributions.CategoricalDistribution):
        return old == new
    return old.log == new.log


def check_space_unchanged(study, space: dict[str, dict[str, Any]]) -> None:
    """A ConfigError naming the key, before any trial, when ``space`` is not the search space the stored
    trials of ``study`` drew from: a trial that holds a score (complete, pruned or running) drew the key
    from another range or choices, or drew a key no longer searched, or a complete or pruned one did not
    draw a key searched now (it trained the config's value). The best trial would be chosen among trials
    of two searches (the sampler learning from draws outside the space it now draws from), and a trial
    drawing changed choices stopped the tune with Optuna's traceback. A failed trial holds no score: a
    change is refused for it only where Optuna cannot store the new draw beside its own (other choices,
    another kind or log scale, :func:`_storable`)."""
    State = _optuna().trial.TrialState
    want = space_distributions(space)
    scored = (State.COMPLETE, State.PRUNED, State.RUNNING)
    why = None
    for t in study.get_trials(deepcopy=False):
        for key, d in t.distributions.items():
            if key not in want:
                if t.state in scored:
                    why = key, f"trial {t.number} drew it from {_spec_text(d)}, this config does not search it"
            elif d != want[key] and (t.state in scored or not _storable(d, want[key])):
                why = key, f"trial {t.number} drew it from {_spec_text(d)}, this config gives {_spec_text(want[key])}"
            if why:
                break
        if not why and t.state in scored[:2] and (missing := [k for k in want if k not in t.distributions]):
            why = missing[0], f"trial {t.number} trained the config's value, this config searches it"
        if why:
            raise ConfigError(f"tune.search_space.{why[0]}: study {study.study_name!r} searched another space "
                              f"({why[1]}), and the best trial would be chosen among two searches: give the space "
                              "the study drew from, or another --study (and --out)")


def _value_overrides(values: dict[str, Any]) -> list[str]:
    """{section.key: value} → ``section.key=<JSON>`` overrides (YAML reads JSON)."""
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def _params_to_values(params: dict[str, Any], space: dict[str, dict[str, Any]],
                      distributions: dict[str, Any] | None = None) -> dict[str, Any]:
    """Optuna's stored params → config values (choices of lists/dicts were stored as JSON labels). A stepped
    float is the point of the grid the trial drew it from (:func:`on_grid`): of its stored distribution in
    ``distributions`` (a trial's ``distributions``), else of ``space``. A failed trial may have drawn from a
    range the space has moved since (:func:`check_space_unchanged`): its value is the one it trained."""
    out = {}
    dist = _optuna().distributions
    for key, v in params.items():
        spec = space.get(key)
        d = (distributions or {}).get(key)
        if spec and "choices" in spec and isinstance(v, str) and v not in spec["choices"]:
            out[key] = json.loads(v)
        elif isinstance(d, dist.FloatDistribution):  # the range the trial drew from, its high on the step grid
            out[key] = on_grid(v, {"type": "float", "low": d.low, "high": d.high, "step": d.step})
        elif d is not None:
            out[key] = v
        else:
            out[key] = on_grid(v, spec) if spec else v  # the value the trial trained (suggest)
    return out


# ---------------------------------------------------------------------------------- out-of-sample series


def validation_curve(run: TrainedRun) -> tuple[np.ndarray, np.ndarray]:
    """(dates (T,) int64 ns, per-period returns (T,)) of the backtest of the finished run's forecasts
    of its validation split, with the run's evaluation settings (the model's strategy)."""
    cfg, data = run.cfg, run.data
    fc = collect_forecasts(run.model, data.val, data.preprocessing.target_scale, cfg.data.eval_batch_size,
                           run.device, run.precision)
    dates, returns = backtest_forecasts(fc, cfg.evaluation)["curves"]["model"]
    return np.asarray(dates, dtype=np.int64), np.asarray(returns, dtype=np.float64)


def concat_curves(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The folds' curves in date order, each date once: where validation blocks of several folds
    share a date, the later fold's return is kept."""
    dates = np.concatenate([np.asarray(d, dtype=np.int64) for d, _ in curves])
    returns = np.concatenate([np.asarray(r, dtype=np.float64) for _, r in curves])
    fold = np.concatenate([np.full(len(d), k) for k, (d, _) in enumerate(curves)])
    order = np.lexsort((fold, dates))  # by date, then fold
    dates, returns = dates[order], returns[order]
    last = np.r_[dates[1:] != dates[:-1], True] if len(dates) else np.zeros(0, dtype=bool)
    return dates[last], returns[last]


def write_oos(path: Path, trial: int, dates: np.ndarray, returns: np.ndarray, split: str) -> Path:
    """A trial's series as JSON: ISO dates (as precise as needed, exact to the nanosecond) and returns."""
    iso = [str(x) for x in np.datetime_as_string(np.asarray(dates, dtype="datetime64[ns]"), unit="auto")]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, {"trial": trial, "split": split, "n_periods": len(iso), "dates": iso,
                             "returns": [float(x) for x in returns]})


def read_oos(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(dates int64 ns, returns) of an ``oos_returns.json``; a missing return (null) reads as NaN."""
    d = read_json(path)
    dates = np.asarray(d["dates"], dtype="datetime64[ns]").astype(np.int64)
    returns = np.asarray([np.nan if v is None else v for v in d["returns"]], dtype=np.float64)
    return dates, returns


# ---------------------------------------------------------------------------------- objective


TEST_SPLIT_ATTR = "test_split_starts"
"""Study user attribute: where the test split of the study's trials starts (:func:`first_test_dates`)."""


def first_test_dates(source: PanelRows) -> dict[str, int | None]:
    """Where the test split of the rows ``source`` (with its data section) starts, in ns: ``{"*": the
    shared first test date}`` for a calendar split, else each symbol's first test date (None: none)."""
    d, times = source.d, source.rows.symbol_times()
    calendar = union_calendar(times)
    cuts = resolve_cuts(d, calendar)
    if cuts is not None:
        return {"*": int(cuts[1])}
    seg_fn = split_segments(d, None)
    out: dict[str, int | None] = {}
    for sym, t in zip(source.rows.symbols, times):
        seg = seg_fn(t, calendar, 0)["test"]
        out[sym] = int(t[seg.start]) if len(seg) else None
    return out


PREPARED_ATTR = "prepared"
"""Trial user attribute: set once the trial's data passed :func:`check_test_split` and
:func:`check_data_unchanged`, so that the trial, while it runs, holds a score to come (:func:`scored_besides`)."""


def scored_besides(study, number: int | None) -> bool:
    """Whether a trial of ``study`` other than ``number`` (the one being prepared) holds a score the
    next ones are compared with (:func:`holds_scores`): complete, pruned, or running on data that passed
    the checks (:data:`PREPARED_ATTR`). A running trial still preparing holds none yet: two workers
    continuing a study of failed trials on corrected files each saw the other's trial, and both were
    refused for the files the failed trials read."""
    State = _optuna().trial.TrialState
    if any(t.number != number for t in study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED))):
        return True
    return any(t.number != number and t.user_attrs.get(PREPARED_ATTR)
               for t in study.get_trials(deepcopy=False, states=(State.RUNNING,)))


def check_test_split(study, source: PanelRows, values: dict[str, Any], number: int | None = None) -> None:
    """Every trial of a study keeps one test split: the first trial prepared records where it starts
    (:data:`TEST_SPLIT_ATTR`, in the study storage, so across workers and machines), and a trial whose
    drawn values (``data.features`` with its warm-up rows, ``data.symbols``, ...) move it is a
    ConfigError: its validation dates would be another trial's test dates, and the choice among the
    trials would depend on the test split of the one chosen. While no trial but ``number`` (the one being
    prepared) holds a score (each failed), nothing is compared: this trial's test split is recorded, as the
    first trial's (a study of failed trials is continued after its config or files moved the cut)."""
    here = first_test_dates(source)
    stored = study.user_attrs.get(TEST_SPLIT_ATTR)
    if stored is None:
        study.set_user_attr(TEST_SPLIT_ATTR, here)
        return
    moved = sorted(k for k in set(here) | set(stored) if here.get(k) != stored.get(k))
    if not moved:
        return
    if not scored_besides(study, number):  # no score to compare with
        study.set_user_attr(TEST_SPLIT_ATTR, here)
        return
    key = moved[0]
    where = "the shared test cut" if key == "*" else f"symbol {key}'s first test date"
    drawn = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items() if k.startswith("data.")) or "the config"
    raise ConfigError(f"tune.search_space: {drawn} moves {where} from {_date(stored.get(key))} (earlier trials) to "
                      f"{_date(here.get(key))}, so trials would be scored on another trial's test dates; fix the cut "
                      "for every trial with data.split_dates (data.split=calendar)")


DATA_ATTR = "data_rows"
"""Study user attribute prefix: ``data_rows.<key>`` holds each symbol's SHA-1 of the rows before the test
split that the trials drawing one set of :data:`ROW_SETTINGS` values (``<key>``: their hash) were cut from,
None for a symbol left out for too few rows (:func:`check_data_unchanged`)."""
DATA_SETTINGS_ATTR = "data_settings"
"""Study user attribute prefix: ``data_settings.<key>`` holds the :data:`ROW_SETTINGS` values the record
``data_rows.<key>`` was made with, to name the one a later tune changed."""
ROW_SETTINGS = ("data_dir", *KEYED_FIELDS)
"""The data settings that change which files are read and a symbol's dates and closes: the folder and the
feature store's keyed settings (symbols, features and their warm-up, the validation policies, the date range,
the price adjustment, the time zone). A searched key outside them (``data.sequence_length``,
``data.batch_size``, ``data.scaler``) cuts its trials from the same rows, so they share one record; the rows a
window needs (``data.sequence_length``, ``data.min_history``, ``data.min_rows``) only decide whether a short
symbol is left out (:func:`short_symbols`)."""


def rows_before_test(source: PanelRows) -> dict[str, str]:
    """Each symbol's SHA-1 of the dates and closes of its rows of ``source`` before its test split (its
    training and validation rows, as read and validated: the same on every machine; the rows the features'
    warm-up drops are not among them)."""
    cuts, rows = first_test_dates(source), source.rows
    out = {}
    for k, sym in enumerate(rows.symbols):
        times, close = rows.times[rows.rows(k)], rows.close[rows.rows(k)]
        cut = cuts.get("*", cuts.get(sym))
        n = len(times) if cut is None else int(np.searchsorted(times, cut))
        h = hashlib.sha1(usedforsecurity=False)
        h.update(np.ascontiguousarray(times[:n], dtype="<i8").data)
        h.update(np.ascontiguousarray(close[:n], dtype="<f8").data)
        out[sym] = h.hexdigest()
    return out


def short_symbols(source: PanelRows) -> set[str]:
    """The symbols of ``source`` left out for too few rows (the feature rows one window needs, or the
    validated rows): whether a symbol is depends on the rows a window needs, not only on its file."""
    report = source.report or {}
    files = report.get("files") or []
    return (set(report.get("skipped_symbols") or []) | set(report.get("too_few_rows") or {})
            | {s for f in files if isinstance(f, dict) for s in (f.get("skipped_symbols") or {})})


def check_data_unchanged(study, source: PanelRows, values: dict[str, Any], number: int | None = None,
                         d: DataConfig | None = None) -> None:
    """A UserError naming a symbol when the rows before the test split that a trial is cut from are not those
    the study's earlier trials drawing the same :data:`ROW_SETTINGS` values were cut from (recorded by the
    first of them, :data:`DATA_ATTR`, in the study storage), and the best trial would be chosen among scores of
    other data: a ConfigError naming the data setting that changed between two tunes of the study (the
    settings recorded, :data:`DATA_SETTINGS_ATTR`, against those of ``d``, the trial's data section as its
    config gives it, default ``source``'s), else a DataError saying the files
    changed (prices revised for a split, a bar corrected, a symbol's file added or removed), or either for a
    record made without its settings. Rows of the test split alone may change or be added. A symbol left out
    for too few rows by one trial (:func:`short_symbols`: its draw of ``data.sequence_length``, say) is not
    compared, and the first trial that keeps it records its rows. While no trial but ``number`` (the one
    being prepared) holds a score (each failed: its loss diverged on a bad bar, say, or its tune was stopped),
    nothing is compared: the data of this trial is recorded, as the first trial's."""
    drawn = {k: v for k, v in values.items() if k.startswith("data.") and k[len("data."):] in ROW_SETTINGS}
    key = hashlib.sha1(json.dumps(drawn, sort_keys=True).encode(), usedforsecurity=False).hexdigest()[:16]
    attr, settings_attr = f"{DATA_ATTR}.{key}", f"{DATA_SETTINGS_ATTR}.{key}"
    here = rows_before_test(source)
    short = short_symbols(source) - set(here)
    d = source.d if d is None else d
    settings = json.loads(json.dumps({f"data.{k}": getattr(d, k) for k in ROW_SETTINGS}))  # as the storage holds it
    attrs = study.user_attrs
    stored = attrs.get(attr)
    if stored is None:
        study.set_user_attr(attr, {**dict.fromkeys(sorted(short)), **here})
        study.set_user_attr(settings_attr, settings)
        return
    # a symbol short on either side is not compared (its length, not its file, may leave it out)
    sym = next((s for s in sorted(set(here) | set(stored))
                if s not in short and stored.get(s, "") is not None and here.get(s) != stored.get(s)), None)
    if sym is None:
        merged = {**dict.fromkeys(sorted(short - set(stored))), **stored,
                  **{s: h for s, h in here.items() if stored.get(s) is None}}
        if merged != stored:  # symbols first kept (or first left out) by this trial's draw
            study.set_user_attr(attr, merged)
        return
    if not scored_besides(study, number):
        # no score to compare with: the files the failed trials read (of any drawn settings) are forgotten
        for k in attrs:
            if k.startswith((f"{DATA_ATTR}.", f"{DATA_SETTINGS_ATTR}.")) and k not in (attr, settings_attr) \
                    and attrs[k] is not None:
                study.set_user_attr(k, None)
        study.set_user_attr(attr, {**dict.fromkeys(sorted(short)), **here})
        study.set_user_attr(settings_attr, settings)
        return
    earlier = f"the earlier trials of study {study.study_name!r}"
    what = (f"symbol {sym}, whose rows {earlier} were scored on, is not in the data" if sym not in here else
            f"symbol {sym} is not among the symbols {earlier} were scored on" if sym not in stored else
            f"symbol {sym}'s dates or closes before the test split are not those {earlier} were scored on")
    then = attrs.get(settings_attr)
    changed = [k for k in settings if then is not None and k in then and then[k] != settings[k]]
    if changed:
        k = changed[0]
        raise ConfigError(f"{k}: {what} ({k} was {json.dumps(then[k])} for them, this config gives "
                          f"{json.dumps(settings[k])}), so the trials would be compared on other data: give "
                          f"{k}={json.dumps(then[k])}, or another --study (and --out)")
    why = ("the files changed" if then is not None else
           f"the files changed, or one of the data settings {', '.join(f'data.{k}' for k in ROW_SETTINGS)}")
    raise DataError(f"data.data_dir: {what} ({why}), so the trials would be compared on other data: "
                    "give the data the study started with, or another --study (and --out)")


OBJECTIVE_ATTR = "objective"
"""Study user attribute: the settings that define what its trials' scores measure (:func:`objective_settings`)."""


def objective_settings(cfg: Config) -> dict[str, Any]:
    """The values in ``cfg`` of the settings that define a trial's score: :data:`OBJECTIVE_KEYS`, the
    folds it is the mean over (``tune.folds``, ``tune.fold_scheme``) and, under
    ``evaluation.max_eval_batches`` (which counts batches of it: another size scores other validation
    windows), ``data.eval_batch_size`` (null without the cap: every window is scored whatever the size)."""
    keys = (*OBJECTIVE_KEYS, "tune.folds", "tune.fold_scheme")
    out = {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in keys}
    out["data.eval_batch_size"] = cfg.data.eval_batch_size if cfg.evaluation.max_eval_batches is not None else None
    return out


def check_objective_unchanged(study, cfg: Config, record: bool = True, number: int | None = None) -> None:
    """A ConfigError naming the key when ``cfg`` scores trials otherwise than the stored trials of
    ``study`` were scored (its :data:`OBJECTIVE_ATTR`, recorded here by the study's first tune): the
    best trial is the lowest score of them all, and an MSE beside an MAE, or scores of another horizon,
    would be compared as one objective (and reported under this config's metric name). A study that
    records none (stored before it was recorded), or whose trials hold no score (:func:`holds_scores`:
    each failed, or the tune that made it stopped before its first trial), gets ``cfg``'s when ``record``
    (a tune that runs trials). Each trial checks again as its data is (``number``, the one being prepared):
    two tunes started while no trial held a score each recorded their own, and the first trial prepared
    keeps its objective for the study."""
    here = objective_settings(cfg)
    stored = study.user_attrs.get(OBJECTIVE_ATTR)
    changed = [k for k in here if k in stored and stored[k] != here[k]] if stored is not None else []
    if changed and scored_besides(study, number):
        key = changed[0]
        raise ConfigError(f"{key}: study {study.study_name!r} scored its trials with {key}={json.dumps(stored[key])}, "
                          f"this config gives {json.dumps(here[key])}, and the two scores would be compared as one "
                          f"objective: give {key}={json.dumps(stored[key])}, or another --study (and --out)")
    if record and (stored is None or changed):
        study.set_user_attr(OBJECTIVE_ATTR, here)


def holds_scores(study) -> bool:
    """Whether a trial of ``study`` holds a score the next ones would be compared with, as a trial's data
    is (:func:`scored_besides`): complete, pruned (its validation reports), or running on data that passed
    the checks (scored as it ends, perhaps by another worker). A failed trial's is never compared, nor is a
    running one's still preparing (it checks the objective before it holds a score), so a study of failed
    trials only is scored by the next config."""
    return scored_besides(study, None)


def _date(ns: int | None) -> str:
    return "none" if ns is None else fmt_time(ns)  # none: a symbol without test rows


def kept_score(run: TrainedRun, reports: list[float]) -> float:
    """The validation score of the weights the finished ``run`` keeps (its final model, whose validation
    backtest is the trial's series): with ``training.load_best_model_at_end`` the best checkpoint's,
    as the trainer chose it (an improvement of more than ``training.early_stopping_threshold``, never
    a NaN score; NaN when no score was finite), else the last report's. Not ``min(reports)``: a later
    score that improved by less than the threshold belongs to weights the run does not keep.
    ``reports``: the run's validation scores in step order (NaN when empty)."""
    if run.cfg.training.load_best_model_at_end:
        best = run.state.best_metric
        return float("nan") if best is None else float(best)
    return float(reports[-1]) if reports else float("nan")


def fold_steps(cfg: Config, space: dict[str, dict[str, Any]]) -> int:
    """The steps each fold takes on the step axis that trials report to the pruner: the most
    ``training.max_steps`` that any trial can draw (the config's when not searched). Fold k's step s
    is reported at k · this + s, so a step compares the same fold across trials whatever their drawn
    ``max_steps`` (with each trial's own, fold 1 of a short trial would meet fold 0 of a long one)."""
    spec = space.get("training.max_steps")
    if spec is None:
        return cfg.training.max_steps
    return int(max(spec["choices"]) if "choices" in spec else spec["high"])


class RefusedDraw(ConfigError):
    """The config refuses the values a trial drew, a combination :func:`check_space_values` did not
    check (a hidden size between a range's low, middle and high that the searched heads do not divide):
    the trial fails with this line, naming the drawn values, and the search goes on
    (:func:`config_failure`), as for values whose loss diverges."""


class Objective:
    """One trial: train the config with the drawn values (once, or once per walk-forward fold);
    return the validation score of the weights each run keeps (:func:`kept_score`; the mean over
    folds). A trial that finishes writes its out-of-sample series (:func:`validation_curve` of each
    run, :func:`concat_curves` over folds) to ``trial-NNNN/oos_returns.json``."""

    def __init__(self, config_path: str | None, overrides: list[str], space: dict[str, dict[str, Any]], out: Path):
        self.config_path, self.overrides, self.space, self.out = config_path, list(overrides), space, out
        self._data = None  # the prepared data (one per fold), reused while no data.* key is searched
        self._built: dict[str, None] = {}  # features and models the drawn values' checks have built
        self.fold_steps = fold_steps(load_config(config_path, overrides), space)
        # the study's MLflow parent run (output.report_to: mlflow), started by run_tune, perhaps in another process
        self.group = join_group(load_config(config_path, overrides), out, "tune")

    def _prepared(self, trial, cfg: Config, values: dict[str, Any]) -> list:
        if self._data is None or any(k.startswith("data.") for k in self.space):
            t = cfg.tune
            source = panel_rows(cfg.data)  # the features once, through the store; each fold its own splits
            if t.folds >= 2:
                # folds of the rows before the test split only: the configuration chosen here is
                # scored on that split afterwards, so no trial may see it
                self._data = []
                for k in range(t.folds):
                    try:
                        self._data.append(prepare_fold(cfg, source, k, t.folds, t.fold_scheme, before_test=True))
                    except DataError as e:  # the fold whose rows fall short is named, as its folder fold-<k>/
                        raise DataError(f"tune.folds: walk-forward fold {k} of {t.folds} ({t.fold_scheme}): {e}") from None
            else:
                self._data = [prepare(cfg.data, source)]
            # the test split of the rows the trial was cut from: without the volume features when a symbol
            # reports no volume before the first validation date (prepare reads them again without them)
            check_test_split(trial.study, source.lean or source, values, trial.number)
            check_data_unchanged(trial.study, source.lean or source, values, trial.number, cfg.data)
        for k, d in enumerate(self._data):
            if len(d.val) == 0:
                where = f" of walk-forward fold {k}" if len(self._data) > 1 else ""
                raise ConfigError(f"data.val_ratio: the validation split{where} yields no window; tune scores trials on it")
        return self._data

    def __call__(self, trial) -> float:
        cfg = load_config(self.config_path, self.overrides)
        # how long this worker may go silent, for whoever judges it (a tune or report of another config)
        trial.set_user_attr(STALE_AFTER, cfg.tune.stale_after_seconds)
        fail_stale_trials(trial.study, cfg.tune.stale_after_seconds, self.out)
        with Heartbeat(trial, cfg.tune.heartbeat_seconds):
            return self._run(trial)

    def _run(self, trial) -> float:
        trial_dir = self.out / f"trial-{trial.number:04d}"
        # the trial's run folder is this process's while it trains (a train into it, or a tune of the same
        # study name in another storage, whose trial numbers start at 0 too, overwrote it unnoticed)
        with run_folder_lock(trial_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
            check_new_trial(trial_dir, trial)
            return self._trial(trial, trial_dir)

    def _trial(self, trial, trial_dir: Path) -> float:
        """:meth:`_run`'s work, under the lock of the trial's folder ``trial_dir``."""
        optuna = _optuna()
        values = suggest(trial, self.space)
        refused = _trial_config_error(self.config_path, self.overrides, values, trial_dir, self._built)
        if refused is not None:  # a combination check_space_values did not reach: this trial's outcome
            drawn = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
            raise RefusedDraw(f"tune.search_space: {drawn}: {' '.join(str(refused).split())}")
        cfg = load_config(self.config_path, self.overrides + trial_overrides(values, trial_dir))
        metric = cfg.evaluation.metric
        datas = self._prepared(trial, cfg, values)
        check_objective_unchanged(trial.study, cfg, number=trial.number)  # another tune's trial may hold a score now
        trial.set_user_attr(PREPARED_ATTR, True)  # its data is the study's: a score to come (scored_besides)
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()))
        fold_values, curves = [], []
        for k, data in enumerate(datas):
            run_cfg = cfg
            if len(datas) > 1:
                run_cfg = load_config(self.config_path,
                                      self.overrides + trial_overrides(values, trial_dir / f"fold-{k}"))
            offset = k * self.fold_steps  # one step axis over the folds, the same for every trial, for the pruner
            reports: list[float] = []

            def on_evaluate(step: int, metrics: dict[str, float]) -> None:
                v = float(metrics[metric])
                reports.append(v)
                trial.report(v, offset + step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"eval_{metric}={v:.6g} at step {step}")

            # the trainer lifecycle of every run, without final/ and without the test evaluation:
            # the test split is never scored while tuning; a fold's folder is locked as the trial's
            fold_lock = run_folder_lock(run_cfg.run_dir()) if len(datas) > 1 and int(os.environ.get("RANK", "0")) == 0 \
                else nullcontext()
            ids = {"trial": trial.number, **({"fold": k} if len(datas) > 1 else {})}
            with fold_lock, self.group.member(**ids), \
                    training_run(run_cfg, data, on_evaluate=on_evaluate, save_final=False) as run:
                if run.is_main:
                    curves.append(validation_curve(run))  # the split it is scored on, backtested
                kept = kept_score(run, reports)
            if not reports:
                raise ConfigError("evaluation.eval_steps: the trial made no validation report")
            fold_values.append(kept)
        value = float(np.mean(fold_values))
        if curves:
            dates, returns = concat_curves(curves)
            split = "validation" if len(datas) == 1 else f"validation blocks of {len(datas)} folds, in date order"
            write_oos(trial_dir / OOS_FILE, trial.number, dates, returns, split)
            trial.set_user_attr("oos_periods", len(dates))
        log.info("trial %d: eval_%s = %.6g%s", trial.number, metric, value,
                 f" (mean of {len(fold_values)} folds)" if len(fold_values) > 1 else "")
        return value if math.isfinite(value) else float("nan")


# ---------------------------------------------------------------------------------- stale trials

HEARTBEAT = "heartbeat"
"""User attribute of a running trial: the Unix time its worker last said it was alive."""
STALE_AFTER = "stale_after_seconds"
"""User attribute of a trial: its worker's ``tune.stale_after_seconds``, recorded as the trial starts."""
STALE_FILE = "STALE.json"


class Heartbeat:
    """While a trial runs, a thread records the time in its ``heartbeat`` attribute every ``interval``
    seconds, through the study storage (journal or RDB alike), so that a trial whose worker died can
    be told from one still running on another process or machine."""

    def __init__(self, trial, interval: float):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial.number}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.trial.set_user_attr(HEARTBEAT, time.time())
            except Exception:  # the trial has just finished (or the storage is briefly away): beat again or stop
                pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale_trials(study, stale_after: float, out: Path) -> list[int]:
    """Mark failed every trial still "running" whose last heartbeat (or start, if it never beat) is
    more than ``stale_after`` seconds old, and more than its own worker's ``tune.stale_after_seconds``
    (:data:`STALE_AFTER`, the larger of the two): its worker died. A tune or a ``--trials 0`` report
    of a config with a smaller value than the workers' fails none of their live trials, whose beats
    may be that far apart. Their folders under ``out`` get ``STALE.json`` saying so (kept, not
    deleted: a partial run can be looked at). Returns their numbers."""
    optuna = _optuna()
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        start = t.datetime_start.timestamp() if t.datetime_start else now
        last = float(t.user_attrs.get(HEARTBEAT, start))
        limit = max(stale_after, float(t.user_attrs.get(STALE_AFTER, stale_after)))
        if now - last <= limit:
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        why = f"no heartbeat for {now - last:.0f} s (tune.stale_after_seconds={limit:g}): its worker died"
        folder = out / f"trial-{t.number:04d}"
        if folder.is_dir():
            write_json(folder / STALE_FILE, {"trial": t.number, "state": "fail", "why": why, "marked_at": now})
        log.warning("trial %d: marked failed, %s", t.number, why)
        failed.append(t.number)
    return failed


# ---------------------------------------------------------------------------------- study


STORAGE_FORMS = ("journal:///abs/path.log, sqlite:///path.db (one worker only) or an RDB URL such as "
                 "postgresql://user@host/db or mysql://user@host/db")
RDB_SCHEMES = ("postgresql", "mysql")
# a missing database driver (the module SQLAlchemy imports) → what to install
DRIVER_PIP = {"psycopg": "pip install 'psycopg[binary]' (or the tune extra: pip install -e '.[tune]')", "psycopg2": "pip install psycopg2-binary",
              "MySQLdb": "pip install mysqlclient", "pymysql": "pip install PyMySQL"}


def _scheme(url: str) -> str:
    """``postgresql+psycopg://...`` → ``postgresql``; a UserError naming --storage when not a known form."""
    if "://" not in url:
        raise UserError(f"--storage {shown_url(url)}: not a storage URL; use {STORAGE_FORMS}")
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("journal", "sqlite", *RDB_SCHEMES):
        raise UserError(f"--storage {shown_url(url)}: unknown scheme {scheme!r}; use {STORAGE_FORMS}")
    return scheme


JOURNAL_LINE_BYTES = 1 << 20
"""How much of a journal's first line :func:`_is_journal` reads (its first record creates the study: well under this)."""


def _is_journal(storage: str, path: Path) -> bool:
    """Whether the file ``path`` begins as Optuna's journal file does: one JSON object per line, each an
    operation with its ``op_code`` (``JournalFileBackend.append_logs``; the first creates the study)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(JOURNAL_LINE_BYTES)
    except OSError as e:
        raise UserError(f"--storage {storage}: cannot read {path} ({e.strerror})") from None
    try:
        record = json.loads(first)
    except ValueError:  # not JSON, or not text (UnicodeDecodeError)
        return False
    return isinstance(record, dict) and "op_code" in record


def storage_url(storage: str | None, workers: int, out: Path) -> str:
    """The storage URL of the study: ``--storage`` checked against ``--workers`` (SQLite takes one
    worker), or the default journal file ``<out>/tune.journal``. A journal file given that is not empty
    must be an Optuna journal (Optuna appended to any file, then failed to read it), and is left as it was."""
    if storage is None:
        return f"journal://{(out / 'tune.journal').resolve()}"
    scheme = _scheme(storage)
    if scheme == "sqlite" and workers > 1:
        raise UserError(f"--storage {shown_url(storage)}: SQLite cannot be shared by --workers {workers} processes; "
                        f"use journal:///abs/path.log or an RDB URL such as postgresql://user@host/db")
    if scheme == "journal":
        path = storage[len("journal://"):]
        if not path.startswith("/"):
            raise UserError(f"--storage {storage}: a journal takes an absolute path, journal:///abs/path.log")
        if not Path(path).parent.is_dir() and Path(path).parent.resolve() != out.resolve():  # --out: made by tune
            raise UserError(f"--storage {storage}: folder {Path(path).parent} does not exist")
        if Path(path).is_file() and Path(path).stat().st_size > 0 and not _is_journal(storage, Path(path)):
            # Optuna would append a record to it, then fail to read it back ("Expecting value: line 1 column 1")
            raise ConfigError(f"--storage {storage}: {path} is not an Optuna journal; give a new file or a study's journal")
    if scheme == "sqlite" and (db := storage_file(storage)) is not None:  # SQLite said "unable to open database file"
        folder = db.parent if db.is_absolute() else (Path.cwd() / db).parent
        if not folder.is_dir() and folder.resolve() != out.resolve():
            raise UserError(f"--storage {shown_url(storage)}: folder {db.parent} does not exist")
    if scheme == "postgresql" and storage.lower().startswith("postgresql://"):
        # the driver the tune extra installs (SQLAlchemy's default differs between 2.0 and 2.1)
        storage = "postgresql+psycopg://" + storage[len("postgresql://"):]
    return storage


def storage_file(url: str) -> Path | None:
    """The file that holds the study of a URL from :func:`storage_url`: the journal, or the SQLite
    database (None in memory); None for a database server."""
    scheme = _scheme(url)
    if scheme == "journal":
        return Path(url[len("journal://"):])
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url  # Optuna's own dependency

        try:
            database = make_url(url).database
        except Exception as e:  # SQLAlchemy's ArgumentError: not a URL it can parse
            raise UserError(f"--storage {shown_url(url)}: {str(e).splitlines()[0]}") from None
        return Path(database) if database and database != ":memory:" else None
    return None


def _storage(optuna, url: str):
    """The Optuna storage object of a URL from :func:`storage_url`; a UserError naming --storage
    when the database cannot be reached or its driver is missing."""
    scheme = _scheme(url)
    if scheme == "journal":
        journal = getattr(optuna.storages, "journal", None)  # optuna >= 4; JournalFileStorage before
        backend = journal.JournalFileBackend if journal is not None else optuna.storages.JournalFileStorage
        return optuna.storages.JournalStorage(backend(url[len("journal://"):]))
    # a busy timeout for SQLite: the report reads while a trial may write
    kw = {"engine_kwargs": {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}} if scheme == "sqlite" else {}
    try:
        with storage_errors(url):
            return optuna.storages.RDBStorage(url, **kw)
    except ImportError as e:  # the database driver SQLAlchemy imports for this URL
        cause = e.__cause__ if isinstance(e.__cause__, ImportError) else e  # Optuna re-raises SQLAlchemy's
        name = cause.name or str(cause)
        raise UserError(f"--storage {shown_url(url)}: database driver {name!r} is not installed: "
                        f"{DRIVER_PIP.get(name, f'pip install {name}')}") from None
    except ValueError as e:  # a bad URL
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise UserError(f"--storage {shown_url(url)}: {first}") from None


SQLITE_BUSY_SECONDS = 60
"""How long a SQLite storage waits for a lock another process holds before its statement fails."""


@contextmanager
def storage_errors(url: str | None):
    """Turns an error of the study's database (``url``; None: the default journal file) into one UserError
    line naming ``--storage``: an unreachable server, a missing database, or a SQLite file that another
    process held locked for :data:`SQLITE_BUSY_SECONDS` (a ``sqlite3`` shell inside a transaction). SQLAlchemy's
    error arrives as it is, or, once a study is open, behind Optuna's ``StorageInternalError``, whose own
    message speaks of invalid data in the commit and whose traceback stopped the tune."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        try:
            scheme = None if url is None else _scheme(url)
        except UserError:  # not a storage URL (storage_url refuses it later): the error met first is not the storage's
            scheme = None
        if scheme not in ("sqlite", *RDB_SCHEMES):
            raise
        import sqlalchemy.exc  # Optuna's own dependency (RDB storage)

        seen = e
        while seen is not None and not isinstance(seen, sqlalchemy.exc.SQLAlchemyError):
            seen = seen.__cause__ or seen.__context__
        if seen is None:
            raise
        first = next((ln.strip() for ln in str(seen).splitlines() if ln.strip()), type(seen).__name__)
        if "database is locked" in first:
            first += (f" (another process held a lock on it for {SQLITE_BUSY_SECONDS} s: end that process, "
                      "then tune again)")
        raise UserError(f"--storage {shown_url(url)}: {first}") from None


def _sampler(optuna, cfg: Config):
    """The study's sampler. With ``tune.seed``, trial N draws from a sampler seeded by
    ``(tune.seed, N)``: parallel workers (each its own sampler object) never replay one sequence."""
    t = cfg.tune

    def build(seed: int | None):
        if t.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, t.pruner_startup_trials))

    if t.seed is None:
        return build(None)

    class TrialSeeded(optuna.samplers.BaseSampler):
        """Delegates to a sampler built afresh for each trial (TPE and random search keep no state
        across trials but their random generator; they read the study's history)."""

        def __init__(self) -> None:
            self._inner = build(t.seed)

        def before_trial(self, study, trial) -> None:
            seed = int(np.random.SeedSequence([t.seed & (2**64 - 1), trial.number]).generate_state(1)[0])
            self._inner = build(seed)
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._inner.reseed_rng()

    return TrialSeeded()


def _pruner(optuna, cfg: Config):
    t = cfg.tune
    if t.pruner == "none":
        return optuna.pruners.NopPruner()
    # with tune.folds, fold k reports at steps (k·F, (k+1)·F] (F: :func:`fold_steps`; a model without gradient
    # steps reports once, at k·F, which the rule below reads as that fold's only report)
    per_fold = fold_steps(cfg, parse_space(t.search_space)) if t.folds >= 2 else None

    class WarmupMedian(optuna.pruners.MedianPruner):
        """Median pruning that waits for ``pruner_warmup_evals`` reports of a trial (counted in
        evaluations, not steps, so it does not depend on ``evaluation.eval_steps``). With
        ``tune.folds`` a trial is judged by its reports of the fold it trains, and the warm-up is
        counted in them (each fold starts a new run, whose first evaluations are as unsettled as the
        first fold's): Optuna's median rule compares the trial's best report so far with the other
        trials' at this step, and a best taken from an earlier fold (another period, whose scores may
        all be lower) would shield every later fold from pruning."""

        def prune(self, study, trial) -> bool:
            if per_fold and trial.last_step is not None:
                start = (trial.last_step - 1) // per_fold * per_fold  # the fold's steps are (start, start + F]
                trial = copy.copy(trial)
                trial.intermediate_values = {s: v for s, v in trial.intermediate_values.items() if s > start}
            if len(trial.intermediate_values) < t.pruner_warmup_evals:
                return False
            return super().prune(study, trial)

    return WarmupMedian(n_startup_trials=t.pruner_startup_trials, n_warmup_steps=0)


def config_failure(e: BaseException) -> str | None:
    """The one-line reason when ``e`` says that a trial's drawn values cannot be trained (the config
    refuses them: :class:`RefusedDraw`; its loss diverged: :class:`~hftraining.train.trainer.NonFiniteError`;
    it ran out of memory: the trainer's :class:`~hftraining.train.trainer.OutOfMemory` or
    ``torch.OutOfMemoryError`` behind an error), else None. Such a trial is an outcome of the search, as a
    non-finite validation metric is, not a fault of the command."""
    seen = e
    while seen is not None:
        if isinstance(seen, (RefusedDraw, NonFiniteError, OutOfMemory, torch.OutOfMemoryError)):
            return _one_line(e)
        seen = seen.__cause__ or seen.__context__
    return None


def _fail(study, trial, why: str) -> None:
    """Tell ``trial`` FAIL, with ``why`` in its :data:`FAIL_REASON` attribute (for the report)."""
    log.warning("trial %d: failed, %s", trial.number, why)
    trial.set_user_attr(FAIL_REASON, why)
    study.tell(trial, state=_optuna().trial.TrialState.FAIL)


def _stopped(study, trial, e: BaseException) -> None:
    """Tell ``trial`` FAIL for an error that stops its worker, with the error's one line (:func:`_one_line`)
    in its :data:`FAIL_REASON` attribute: the report of the study (``--trials 0``, or the next tune's)
    says why it failed, as it does for a trial whose drawn values failed."""
    trial.set_user_attr(FAIL_REASON, _one_line(e))
    study.tell(trial, state=_optuna().trial.TrialState.FAIL)


def run_trials(study, objective: Objective, n_trials: int) -> None:
    """Run ``n_trials`` trials of ``study`` one after the other, through Optuna's ask-and-tell
    interface (``study.ask``/``study.tell``): what ``study.optimize(..., catch=())`` does, without its
    WARNING log of a failed trial's traceback. A pruned trial is told PRUNED. A trial whose drawn
    values fail (refused by the config, a non-finite validation metric, a diverging loss, out of memory:
    :func:`config_failure`) is told FAIL with its reason and the next trial runs. Any other error
    (a missing data folder, a bug, Ctrl-C) is told FAIL with its one line as the reason and propagates
    (a :class:`UserError` stays the one line the CLI prints)."""
    optuna = _optuna()
    State = optuna.trial.TrialState
    for _ in range(n_trials):
        trial = study.ask()
        why = None
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=State.PRUNED)
            continue
        except Exception as e:
            why = config_failure(e)
            if why is None:
                _stopped(study, trial, e)
                raise
        except BaseException as e:  # Ctrl-C
            _stopped(study, trial, e)
            raise
        if why is not None:
            if torch.cuda.is_available():  # the failed run's tensors went with its traceback
                torch.cuda.empty_cache()
            _fail(study, trial, why)
        elif math.isfinite(value):
            study.tell(trial, value)
        else:
            _fail(study, trial, f"its validation metric is not finite ({value})")


def all_failed(study, before: set[int]) -> str | None:
    """When every trial this run added to ``study`` (numbers not in ``before``) failed, the one line
    saying so with the first one's reason, else None."""
    State = _optuna().trial.TrialState
    new = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
    if not new or any(t.state != State.FAIL for t in new):
        return None
    first = min(new, key=lambda t: t.number)
    why = first.user_attrs.get(FAIL_REASON, "see its log")
    return f"tune: all {len(new)} trial(s) of this run failed (report in the output folder); trial {first.number}: {why}"


def _one_line(e: BaseException) -> str:
    """An error as the one line a parent process reports: a UserError's message, else ``Type: message``."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    line = text if isinstance(e, UserError) else f"{type(e).__name__}: {text}".rstrip(": ")
    return line if len(line) <= 1000 else line[:997] + "..."


def _worker(config_path, overrides, storage, study_name, out, n_trials, threads, errors, said: bool = False) -> None:
    """One worker process: run ``n_trials`` of the shared study. An error is also put on ``errors``
    (a SimpleQueue) as one line, for the parent to report; a UserError ends the worker with exit
    code 2 and no traceback (the parent prints the line). ``said``: another worker says the warnings
    every trial would repeat (:func:`~hftraining.workflows.train_run.said_once`)."""
    try:
        # the parent's SIGTERM, forwarded, ends the trial as Ctrl-C does (told FAIL, its MLflow run KILLED)
        with sigterm_as_interrupt():
            setup_console_logging()
            torch.set_num_threads(threads)
            optuna = _optuna()
            cfg = load_config(config_path, overrides)
            space = parse_space(cfg.tune.search_space)
            with storage_errors(storage):
                study = optuna.load_study(study_name=study_name, storage=_storage(optuna, storage),
                                          sampler=_sampler(optuna, cfg), pruner=_pruner(optuna, cfg))
            with storage_errors(storage), said_once(said=said):
                run_trials(study, Objective(config_path, overrides, space, Path(out)), n_trials)
    except UserError as e:
        errors.put(_one_line(e))
        sys.exit(e.exit_code)
    except Terminated as e:  # stopped, not a bug: no traceback
        errors.put(_one_line(e))
        sys.exit(143)
    except BaseException as e:  # a bug: its traceback is printed by this process as it dies
        errors.put(_one_line(e))
        raise


def run_tune(
    config_path: str | None,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    out: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> str:
    """Run ``trials`` trials (split over ``workers`` processes) of the study in ``storage`` (a URL,
    see :func:`storage_url`; default the journal ``<out>/tune.journal``); write the report files
    (this process only, once the workers are done). ``trials == 0``: run none, report the stored
    study. Returns the printed summary. An error of the study's database is one line (:func:`storage_errors`)."""
    with storage_errors(storage):
        return _tune(config_path, trials, storage, study_name, workers, out, overrides)


def _tune(config_path: str | None, trials: int, storage: str | None, study_name: str | None, workers: int,
          out: str | Path | None, overrides: list[str] | tuple[str, ...]) -> str:
    """:func:`run_tune`'s work."""
    optuna = _optuna()
    overrides = list(overrides)
    cfg = load_config(config_path, overrides)
    check_report_importable("tune", "")  # the importance plot is drawn after the trials
    space = parse_space(cfg.tune.search_space)
    check_searched_settings(cfg, space)
    check_objective(cfg, space)
    if trials < 0:
        raise ConfigError(f"--trials: must be >= 0 (0: only the report of the stored study), got {trials}")
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    given = {".".join(parse_override(text)[0]) for text in overrides}
    if study_name is not None and "tune.study_name" in given:  # two names for one study: neither silently wins
        raise ConfigError("--study: also given as tune.study_name; give one of them")
    if "output.output_dir" in given:  # each trial's run folder is <out>/trial-NNNN, whatever it says
        raise ConfigError("output.output_dir: tune writes each trial to <--out>/trial-NNNN; give --out instead")
    name = study_name or cfg.tune.study_name or cfg.output.experiment_name
    check_study_name(name, "--study" if study_name else "tune.study_name" if cfg.tune.study_name else
                     "output.experiment_name")
    out = Path(out) if out else Path("runs") / f"tune-{name}"
    if trials > 0:  # a value no trial could train stops the tune now, not at the trial that draws it
        check_space_values(config_path, overrides, space, out)
    # every argument is checked before anything is created: a mistake leaves no folder or file behind
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{blocking}: exists and is not a folder; give another --out")
    check_owner(out, name)
    storage = storage_url(storage, workers, out)
    home = storage_file(storage)
    if trials == 0 and home is not None and not home.is_file():  # opening it would create it, empty
        raise UserError(f"--trials 0: no study {name!r} in --storage {shown_url(storage)} to report on "
                        f"({home} does not exist)")
    if home is not None and home.parent.resolve() == out.resolve():  # the study's file lives in --out
        out.mkdir(parents=True, exist_ok=True)
    backend = _storage(optuna, storage)
    if trials == 0:
        if name not in optuna.get_all_study_names(backend):
            raise UserError(f"--trials 0: no study {name!r} in --storage {shown_url(storage)} to report on")
        study = optuna.load_study(study_name=name, storage=backend)
        # a dead worker's trial is failed as the next tune would fail it: the report does not list it as running,
        # and it does not refuse this config's objective or space
        fail_stale_trials(study, cfg.tune.stale_after_seconds, out)
        check_objective_unchanged(study, cfg, record=False)  # the report names this config's metric for the stored scores
        check_space_unchanged(study, space)  # the report's columns are this space's keys
        out.mkdir(parents=True, exist_ok=True)
        summary = write_study_report(study, cfg, config_path, overrides, space, out)
        # the study's MLflow parent run, when it has one, gets the aggregates of the study as stored, once the
        # report is written (a store that cannot be used costs no report; without mlflow the file is not read)
        if (out / GROUP_FILE).is_file():
            finish_group(start_group(cfg, out, "tune", out.name, group_params(name, cfg, space), resume=True), study, out)
        return summary
    check_unowned_trials(out, name, name in optuna.get_all_study_names(backend))
    try:
        study = optuna.create_study(study_name=name, storage=backend, direction="minimize",
                                    sampler=_sampler(optuna, cfg), pruner=_pruner(optuna, cfg), load_if_exists=True)
    except ValueError as e:  # e.g. a stored study of that name with another direction
        raise UserError(f"--storage {shown_url(storage)}: {str(e).splitlines()[0]}") from None
    # a dead worker's trial, still "running", holds no score to come: failed first (a live worker's beats), so
    # that it does not refuse another objective or space
    fail_stale_trials(study, cfg.tune.stale_after_seconds, out)
    check_objective_unchanged(study, cfg)  # before --out is made or a trial runs
    check_space_unchanged(study, space)
    out.mkdir(parents=True, exist_ok=True)
    claim_owner(out, name)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    log.info("study %r in %s: %d trial(s), %d worker(s), objective eval_%s on the validation split",
             name, shown_url(storage), trials, workers, cfg.evaluation.metric)
    # one MLflow parent run of the study (output.report_to: mlflow), continued by every tune of it into --out;
    # the workers' trials find it in <out>/tracking_group.json
    group = start_group(cfg, out, "tune", out.name, group_params(name, cfg, space), resume=True)
    try:
        study, summary = _run_study(study, cfg, config_path, overrides, space, out, trials, workers, storage, name,
                                    backend)
    except BaseException:
        group.fail()
        raise
    failed_all = all_failed(study, before)
    if failed_all is not None:  # the report is written; the command still says that nothing worked
        group.fail()
        print(summary)
        raise UserError(failed_all)
    finish_group(group, study, out)
    return summary


def check_study_name(name: str, key: str) -> None:
    """A ConfigError naming ``key`` (``--study``, ``tune.study_name`` or ``output.experiment_name``, where the
    study's name came from), before anything runs, for a name that no run folder of ``runs/`` can be named
    after: one holding a NUL character, an absolute one, or one that climbs with ``..``. The study's
    ``best_config.yaml`` names its run ``output.experiment_name: <study>-best``, which ``train`` refuses for
    such a name (the run folder is ``runs/<experiment_name>``), and the default ``--out``,
    ``runs/tune-<study>``, climbed out of ``runs/`` with it: the study ran its trials, and its best
    config could not be trained."""
    if "\0" in name:
        raise ConfigError(f"{key}: study name {shown(name)} holds a NUL character, which no folder name can hold")
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{key}: study name {shown(name)} is not a folder name inside runs/: the study's "
                          f"best_config.yaml would name its run output.experiment_name={shown(name + '-best')}, which "
                          "train refuses (the run folder is runs/<experiment_name>), and the default --out "
                          "runs/tune-<study> would be outside runs/; give a relative name without '..'")


def group_params(name: str, cfg: Config, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The params of a study's MLflow parent run: the study, its objective and its search space."""
    return {"study": name, "objective": f"eval_{cfg.evaluation.metric}", "tune.folds": cfg.tune.folds,
            "search_space": space}


def finish_group(group: TrackingGroup, study, out: Path) -> None:
    """End the study's MLflow parent run with its aggregates: the trials per state, the best trial's
    value and number (tags ``best_trial`` and, for a trial of one run, ``best_run_id``: its MLflow run),
    the selection statistics; artifacts best.json, selection.json, trials.csv, best_config.yaml. Ctrl-C or an
    error while they are read (a best trial's tracking.json that cannot be read) ends the parent KILLED
    (FAILED), not RUNNING (a ``--trials 0`` report sets it RUNNING again to log them, as a tune that runs trials does)."""
    if not group.active:
        return
    try:
        State = _optuna().trial.TrialState
        trials = study.get_trials(deepcopy=False)
        metrics: dict[str, Any] = {f"n_{s.name.lower()}": sum(t.state == s for t in trials)
                                   for s in (State.COMPLETE, State.PRUNED, State.FAIL)}
        metrics["n_trials"] = len(trials)
        tags: dict[str, str] = {}
        best = read_json(out / "best.json") if (out / "best.json").is_file() else None
        if best is not None:
            metrics.update(best_value=best["value"], best_trial=best["trial"])
            tags["best_trial"] = str(best["trial"])
            entry = read_tracking(out / f"trial-{best['trial']:04d}").get("mlflow") or {}
            if entry.get("run_id"):
                tags["best_run_id"] = entry["run_id"]
        sel = read_json(out / "selection.json") if (out / "selection.json").is_file() else {}
        metrics.update(selection_dsr=sel.get("dsr"), selection_pbo=sel.get("pbo"))
        group.finish({k: v for k, v in metrics.items() if v is not None},
                     [out / n for n in ("best.json", "selection.json", "trials.csv", "best_config.yaml")], tags)
    except BaseException:
        group.fail()  # nothing when finish ended it (it ends the parent itself when its logging fails)
        raise


def _run_study(study, cfg: Config, config_path, overrides, space, out: Path, trials: int, workers: int, storage: str,
               name: str, backend) -> tuple[Any, str]:
    """:func:`run_tune`'s trials (in this process or ``workers`` processes) and the report → (the study
    as stored after them, the report's summary)."""
    optuna = _optuna()
    if workers == 1:
        with said_once():  # every trial builds its own trainer: a warning each would repeat is said once
            run_trials(study, Objective(config_path, overrides, space, out), trials)
    else:
        Complete = optuna.trial.TrialState.COMPLETE
        done_before = len(study.get_trials(deepcopy=False, states=(Complete,)))
        ctx = mp.get_context("spawn")
        errors = ctx.SimpleQueue()  # one line per failed worker
        shares = [trials // workers + (i < trials % workers) for i in range(workers)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        # a warning every trial would repeat (bf16 computed in software) is said by the first worker alone,
        # unless the precision or the model is searched (the first worker's trials may all draw fp32, or a
        # model without gradient steps, which trains no bf16)
        alone = not any(k in space for k in ("training.precision", "training.use_mixed_precision", "model.type"))
        procs = [ctx.Process(target=_worker, args=(config_path, overrides, storage, name, str(out), n, threads, errors,
                                                   alone and i > 0))
                 for i, n in enumerate(n for n in shares if n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        why = []
        while not errors.empty():
            why.append(errors.get())
        study = optuna.load_study(study_name=name, storage=backend)
        if failed:
            cause = why[0] if why else f"exit code {failed[0]}"
            what = f"{len(failed)} of {len(procs)} worker(s) failed (exit codes {failed})"
            if len(study.get_trials(deepcopy=False, states=(Complete,))) == done_before:
                raise UserError(f"tune --workers {workers}: {what} and no trial completed: {cause}")
            log.warning("%s: %s", what, cause)
    return study, write_study_report(study, cfg, config_path, overrides, space, out)


OWNER_FILE = "study.json"
"""In the output folder: the name of the study whose ``trial-NNNN`` folders and report it holds."""


def study_owner(out: Path) -> str | None:
    """The study that the output folder ``out`` belongs to (its :data:`OWNER_FILE`), None when it names none."""
    path = out / OWNER_FILE
    if not path.is_file():
        return None
    try:
        owner = read_json(path).get("study")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not the JSON object tune writes ({type(e).__name__}); give another --out") from None
    return owner if isinstance(owner, str) else None


def check_new_trial(trial_dir: Path, trial) -> None:
    """A UserError when the folder of a trial that has just started already holds something: trial
    numbers are never reused within a study, so it is another study's trial (the same study name in
    another ``--storage``, or an output folder written before ``study.json`` named its study), which
    ``output.overwrite`` would remove."""
    held = sorted(p.name for p in trial_dir.iterdir()) if trial_dir.is_dir() else []
    if held:
        raise UserError(f"{trial_dir}: already holds a run ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}) "
                        f"that is not trial {trial.number} of study {trial.study.study_name!r} in this --storage (trial "
                        "numbers start at 0 in every study and storage), and the trial would overwrite it: give another "
                        "--out, or the --storage that holds it")


def claim_owner(out: Path, name: str) -> None:
    """Write :data:`OWNER_FILE` naming study ``name`` unless it exists, then :func:`check_owner`: the file
    is linked into place whole, so of two tunes of different studies started together into one
    ``--out`` (both saw no owner) one names itself and the other is refused, never both."""
    path = out / OWNER_FILE
    if not path.exists():
        tmp = out / f".{OWNER_FILE}.{os.getpid()}.tmp"
        write_json(tmp, {"study": name})
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: written in place
            if not path.exists():
                write_json(path, {"study": name})
        finally:
            tmp.unlink(missing_ok=True)
    check_owner(out, name)


def check_unowned_trials(out: Path, name: str, stored: bool) -> None:
    """A UserError when ``out`` names no study (a folder written before :data:`OWNER_FILE`) but holds
    ``trial-NNNN`` folders and study ``name`` is not in the storage (``stored``): they are another
    study's, whose trial numbers a new study would reuse (and overwrite their folders)."""
    if study_owner(out) is not None or stored or not out.is_dir():
        return
    trials = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name.startswith("trial-") and any(p.iterdir()))
    if trials:
        raise UserError(f"--out {out}: holds trial folders ({', '.join(trials[:3])}{', ...' if len(trials) > 3 else ''}) "
                        f"of a study it does not name (no {OWNER_FILE}) and study {name!r} is not in the --storage: a new "
                        "study would overwrite them; give another --out, or the --study and --storage they belong to")


def check_owner(out: Path, name: str) -> None:
    """A UserError when ``out`` holds another study's trials: trial numbers start at 0 in every study,
    so a second study would overwrite the first one's ``trial-NNNN`` run folders and report, and a
    report of the first would then read the second's out-of-sample series as its own."""
    owner = study_owner(out)
    if owner is not None and owner != name:
        raise UserError(f"--out {out}: holds the trials of study {owner!r} ({out / OWNER_FILE}); study {name!r} would "
                        f"overwrite its trial folders and report: give another --out (or --study {owner})")


def study_selection(trials: list, best_number: int | None, out: Path) -> dict[str, Any]:
    """The selection-bias statistics of the study (:func:`~hftraining.eval.selection.selection_stats`)
    over all its ``trials``: the series are those of the completed trials with an ``oos_returns.json``
    under ``out``, aligned on their common dates; the chosen one is trial ``best_number``.

    N of the Deflated Sharpe Ratio (``n_tried``) counts every trial judged on the validation data:
    the completed ones, the pruned ones (dropped for their validation scores) and the failed ones
    that made a validation evaluation; leaving them out would deflate too little. Failed trials
    without an evaluation and running ones were not judged and are not counted. ``left_out`` says
    which trials have no series and whether they count."""
    optuna = _optuna()
    State = optuna.trial.TrialState
    complete = [t for t in trials if t.state == State.COMPLETE and t.value is not None and math.isfinite(t.value)]
    pruned = [t.number for t in trials if t.state == State.PRUNED]
    failed_judged = [t.number for t in trials if t.state == State.FAIL and t.intermediate_values]
    failed_unjudged = [t.number for t in trials if t.state == State.FAIL and not t.intermediate_values]
    running = [t.number for t in trials if t.state in (State.RUNNING, State.WAITING)]
    n_tried = len(complete) + len(pruned) + len(failed_judged)
    series, missing, bad = {}, [], []
    for t in complete:
        path = out / f"trial-{t.number:04d}" / OOS_FILE
        if not path.exists():
            missing.append(t.number)
            continue
        dates, returns = read_oos(path)
        if not np.all(np.isfinite(returns)):
            bad.append(t.number)
            continue
        series[t.number] = (dates, returns)
    sel = selection_stats(series, best_number, TRIALS_ARE, n_tried)

    def nums(ns: list[int]) -> str:
        return ", ".join(map(str, ns))

    left_out = []
    if pruned:
        left_out.append(f"{len(pruned)} pruned trial(s): stopped before the end, no out-of-sample series; counted in N")
    if failed_judged:
        left_out.append(f"failed trial(s) {nums(failed_judged)}: failed after a validation evaluation, no out-of-sample "
                        "series; counted in N")
    if failed_unjudged:
        left_out.append(f"failed trial(s) {nums(failed_unjudged)}: failed before any validation evaluation; not counted")
    if running:
        left_out.append(f"trial(s) {nums(running)}: still running; not counted")
    if missing:
        left_out.append(f"completed trial(s) {nums(missing)}: no {OOS_FILE} in {out}; counted in N")
    if bad:
        left_out.append(f"completed trial(s) {nums(bad)}: non-finite returns in {OOS_FILE}; counted in N")
    sel["left_out"] = left_out
    return sel


def best_trial_config(out: Path, number: int, config_path, overrides, values: dict[str, Any]) -> tuple[Config, str | None]:
    """(the config trial ``number`` trained, None): its run folder's config.json (its first fold's with
    ``tune.folds``), whatever the command that reports it gives (a ``--trials 0`` report without the
    first tune's overrides wrote a best config the trial never trained); where the trial's folder is not
    in ``out`` (run on another machine, not gathered yet): (``--config`` with ``overrides`` and the
    trial's drawn ``values``, a note that says so)."""
    trial_dir = out / f"trial-{number:04d}"
    for path in (trial_dir / "config.json", trial_dir / "fold-0" / "config.json"):
        if path.is_file():  # a key the trial's choices ignored is set back where best_config.yaml is written
            return load_config(path, refuse_ignored=False), None
    note = (f"{trial_dir / 'config.json'} is not in --out: --config and its overrides with the trial's values, "
            "which may differ from what the trial trained")
    return load_config(config_path, list(overrides) + _value_overrides(values), refuse_ignored=False), note


def chosen_period_note(out: Path, number: int) -> str | None:
    """The sentence that says on which dates trial ``number`` was chosen (the first and last date of its
    validation split, of every fold's with ``tune.folds``, as its ``data_report.json`` states them), and that a
    walk-forward of its config scores those dates again: its folds whose test blocks reach into them are not
    out of sample for the choice. None where the trial's folder is not in ``out`` (run on another machine, not
    gathered yet) or its data_report.json cannot be read: the report of the study is written all the same."""
    trial_dir = out / f"trial-{number:04d}"
    try:
        spans = []
        for path in [trial_dir / "data_report.json", *sorted(trial_dir.glob("fold-*/data_report.json"))]:
            if path.is_file():
                symbols = ((read_json(path).get("split") or {}).get("symbols") or {}).values()
                spans += [s["val"] for s in symbols if isinstance(s, dict) and s.get("val")]
        if not spans:
            return None
        first = fmt_time(min(pd.Timestamp(a).value for a, _ in spans))
        last = fmt_time(max(pd.Timestamp(b).value for _, b in spans))
    except (OSError, ValueError, TypeError, AttributeError):  # JSONDecodeError is a ValueError
        return None
    return (f"chosen on the validation dates {first} to {last}: a walkforward of this config scores them again, so "
            f"its folds whose test blocks reach into {first}..{last} are not out of sample for this choice "
            "(selection.json measures the choice)")


def untested_note(study) -> str:
    """The sentence that says no trial of ``study`` was scored on the test split (:class:`Objective` stops each
    run before its test evaluation, and folds are cut from the rows before it), naming where the split starts
    when the study recorded one shared cut (:data:`TEST_SPLIT_ATTR`): the best score is a validation score, and
    the test split is still out of sample for the choice."""
    cut = (study.user_attrs.get(TEST_SPLIT_ATTR) or {}).get("*")
    where = f" (from {_date(cut)})" if cut is not None else ""
    return (f"no trial was scored on the test split{where}: a train of this config scores it once, out of sample "
            "for this choice")


def write_trials_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """The summary table as CSV (RFC 4180 quoting, :mod:`csv`): a number as Python writes it, a list or
    dict as its JSON, None as an empty cell. The JSON of a list or dict written by hand, with its quotes
    escaped by backslashes, was split at its commas by CSV readers (the columns after it shifted)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else repr(v)
                     if isinstance(v, float) else str(v) for v in r] for r in rows)


NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character a YAML file cannot hold, even in a comment (PyYAML: "special characters are not allowed")."""


def yaml_comment(text: str) -> str:
    """``text`` as YAML comment lines: each of its lines behind ``# ``, a character YAML cannot hold as its
    Python escape (``\\x07``). A study name or ``--out`` holding a line break (``--study $'a\\nb: 1'``) wrote its
    rest as YAML in the header of best_config.yaml, and one holding a control character made the file
    unreadable: ``train --config best_config.yaml`` refused it (not valid YAML) once every trial had run."""
    text = NOT_YAML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return "# " + "\n# ".join(text.splitlines() or [""]) + "\n"


def write_study_report(study, cfg: Config, config_path, overrides, space, out: Path) -> str:
    """trials.csv, best_config.yaml, best.json, selection.json, importance.png → the summary text."""
    optuna = _optuna()
    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    keys = list(space)
    header = ["trial", "state", f"eval_{cfg.evaluation.metric}", "evals", "seconds", *keys]
    rows = []
    for t in trials:
        dur = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        # a choice of lists/dicts: the value, not Optuna's label; a stepped float: its point of the trial's grid
        values = _params_to_values(t.params, space, t.distributions)
        # only a completed trial has a score: Optuna gives a pruned one its last report as its value, which a user
        # sorting the table by the score would take for the score of a configuration it never finished training
        score = t.value if t.state == State.COMPLETE else None
        rows.append([t.number, t.state.name.lower(), score, len(t.intermediate_values), dur,
                     *[values.get(k) for k in keys]])
    write_trials_csv(out / "trials.csv", header, rows)

    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, (list, dict)):
            return json.dumps(v)
        return str(v)

    widths = [max(len(fmt(r[i])) if r is not header else len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    counts = [(sum(t.state == s for t in trials), s.name.lower()) for s in (State.COMPLETE, State.PRUNED, State.FAIL, State.RUNNING)]
    stale = sum(t.state == State.FAIL and (out / f"trial-{t.number:04d}" / STALE_FILE).exists() for t in trials)
    lines = [f"study {study.study_name}: {len(trials)} trial(s) — "
             + ", ".join(f"{n} {s}" + (f" ({stale} of them stale: their worker died)" if s == "fail" and stale else "")
                         for n, s in counts if n or s != "running"),
             "  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(fmt(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines += [f"trial {t.number} failed: {t.user_attrs[FAIL_REASON]}" for t in trials
              if t.state == State.FAIL and FAIL_REASON in t.user_attrs]
    complete = [t for t in trials if t.state == State.COMPLETE and t.value is not None and math.isfinite(t.value)]
    best = min(complete, key=lambda t: t.value) if complete else None
    sel = study_selection(trials, best.number if best else None, out)
    write_json(out / "selection.json", sel)
    sel_brief = {k: sel[k] for k in ("dsr", "dsr_skipped", "pbo", "pbo_skipped", "n_trials", "n_tried", "n_periods")}
    if best is not None:
        values = _params_to_values(best.params, space, best.distributions)
        best_cfg, note = best_trial_config(out, best.number, config_path, overrides, values)
        # without its search space, a key the trial's drawn choices ignored (early stopping under eval_steps 0) is
        # refused by `train --config best_config.yaml`; at its default it trains as the trial did
        best_cfg.tune = TuneConfig()
        unused = reset_ignored(best_cfg)
        d = best_cfg.to_dict()
        d.pop("tune", None)
        d["output"] = cfg.to_dict()["output"]  # the trial's own run folder and overwrite are the tune's, not a run's
        d["output"]["output_dir"] = None
        d["output"]["experiment_name"] = f"{study.study_name}-best"
        chosen_on = chosen_period_note(out, best.number)
        # the score the study ranks by: with tune.folds (the study's, checked unchanged), the mean over the folds
        scored_on = ("validation split" if cfg.tune.folds < 2 else
                     f"mean of {cfg.tune.folds} walk-forward folds' validation splits")
        notes = [f"best trial {best.number} of study {study.study_name}: eval_{cfg.evaluation.metric} = "
                 f"{best.value:.6g} ({scored_on})", untested_note(study),
                 f"hftraining train --config {out / 'best_config.yaml'}", *([note] if note else []),
                 *([chosen_on] if chosen_on else []),
                 *([f"set back to the default, as the trial's choices ignored it: {'; '.join(unused)}"]
                   if unused else [])]
        header_line = "".join(yaml_comment(n) for n in notes)
        (out / "best_config.yaml").write_text(header_line + yaml.dump(d, Dumper=ConfigDumper, sort_keys=False), encoding="utf-8")
        write_json(out / "best.json", {"trial": best.number, "value": best.value, "metric": f"eval_{cfg.evaluation.metric}",
                                       "params": values, "selection": sel_brief})
        lines.append(f"best: trial {best.number}, eval_{cfg.evaluation.metric} = {best.value:.6g}: "
                     + ", ".join(f"{k}={v}" for k, v in values.items()))
        lines.append(f"best config: {out / 'best_config.yaml'}" + (f" ({note})" if note else ""))
        lines.append(untested_note(study))
        if chosen_on:
            lines.append(chosen_on)
    else:
        lines.append("no trial completed: no best config")
    lines.append(format_selection(sel, f"the best trial {best.number}" if best else "the best trial"))
    lines += [f"  left out: {why}" for why in sel["left_out"]]
    lines.append(f"selection statistics: {out / 'selection.json'}")
    lines.append(_importance_plot(study, out, len(complete)))
    return "\n".join(lines)


def _importance_plot(study, out: Path, n_complete: int) -> str:
    if n_complete < 2:
        return "importance plot: needs at least 2 completed trials"
    import matplotlib  # checked at the start of the tune (run_tune)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend
    from optuna.visualization.matplotlib import plot_param_importances  # optional dependency (tune extra)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib backend
            # PED-ANOVA, optuna 5's default, named: optuna 4's default (fANOVA) needs scikit-learn
            ax = plot_param_importances(study, evaluator=_optuna().importance.PedAnovaImportanceEvaluator())
    except (RuntimeError, ValueError, ZeroDivisionError) as e:  # e.g. every trial drew the same values
        return f"importance plot: not computed ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=100)
    plt.close(fig)
    return f"importance plot: {out / 'importance.png'}"


__all__ = ["parse_space", "suggest", "run_tune", "write_study_report", "Objective"]
