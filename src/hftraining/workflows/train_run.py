"""``hftraining train``: one training run, then the test split scored beside the naive forecasts,
the backtest, eval.json and the report — through :func:`hftraining.train.runner.training_run`."""

from __future__ import annotations

import errno
import fcntl
import importlib
import logging
import os
import re
import shlex
import shutil
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from hftraining.core.config import Config
from hftraining.core.errors import DataError, UserError
from hftraining.core.jsonio import read_json, write_json
from hftraining.data.pipeline import PreparedData, prepare
from hftraining.eval.backtest import backtest_forecasts, format_backtest
from hftraining.eval.forecasts import Forecasts, collect_forecasts, fit_baselines, format_table, score
from hftraining.eval.intervals import calibrate, forecast_intervals, format_intervals, interval_report, outcome_times
from hftraining.eval.model_card import headline_metrics, write_model_card
from hftraining.eval.report import write_report
from hftraining.inference.folders import FITTED_BASELINES_DIR
from hftraining.models.folder import INTERVALS_FILE
from hftraining.train import checkpoint as ckpt
from hftraining.train.distributed import DistInfo, barrier, cleanup, init_distributed
from hftraining.train.logging import held_records, log
from hftraining.train.runner import (RUN_FILES, RUN_FOLDERS, TrainedRun, check_before_data, check_output_dir,
                                     check_resumable, check_same_data, finished_checkpoint, prepare_run_dir, run_report,
                                     training_run)
from hftraining.train.trainer import check_cross_section

SINGLE_RUN = ("config.json", *RUN_FOLDERS, *RUN_FILES, "data_report.json", FITTED_BASELINES_DIR)
"""What one ``hftraining train`` writes into its run folder (not ``train --seeds``, whose runs are
its ``seed-<k>/`` folders): a folder holding any of them holds a single run."""


SOFTWARE_BF16 = "warning: training.precision bf16 on a CPU without bf16 instructions"
"""How the warning of :func:`~hftraining.train.runner.build_trainer` about bf16 autocast computed in
software begins (:func:`said_once`)."""


class _Once(logging.Filter):
    """Lets the first record of the ``hftraining`` logger that begins with ``start`` through and drops the
    later ones (all of them when ``said``), of the thread that made it alone: the logger is the process's,
    and a run in another thread (library use) is not the command's and says its own."""

    def __init__(self, start: str, said: bool):
        super().__init__()
        self.start, self.said = start, said
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.get_ident() != self.thread or not record.getMessage().startswith(self.start):
            return True
        said, self.said = self.said, True
        return not said


@contextmanager
def said_once(start: str = SOFTWARE_BF16, said: bool = False) -> Iterator[None]:
    """While in the block, a warning that every run of a command repeats (each tune trial, walk-forward
    fold or seed builds its own trainer) reaches the console and the first run's train.log once; ``said``:
    it has been said already (by another process of the command, or in the command's own words)."""
    once = _Once(start, said)
    log.addFilter(once)
    try:
        yield
    finally:
        log.removeFilter(once)


def seed_runs(root: Path) -> list[str]:
    """The names of what an earlier ``train --seeds`` left in ``root``: its ``seed-<k>`` folders in
    order, then ``ensemble`` (when it is beside them)."""
    if not root.is_dir():
        return []
    seeds = sorted((p.name for p in root.iterdir() if p.is_dir() and re.fullmatch(r"seed-\d+", p.name)),
                   key=lambda n: int(n[5:]))
    return seeds + (["ensemble"] if seeds and (root / "ensemble").is_dir() else [])


def single_run(root: Path) -> list[str]:
    """The names of what an earlier single ``hftraining train`` left in ``root`` (:data:`SINGLE_RUN`)."""
    return [n for n in SINGLE_RUN if (root / n).exists()] if root.is_dir() else []


def shown(names: list[str]) -> str:
    """At most three names, then ", ..."."""
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def remove(root: Path, names: list[str]) -> None:
    """Delete ``root/<name>`` for each of ``names`` (files or folders), saying so (``output.overwrite``)."""
    if names:
        log.warning("output.overwrite: removing the earlier run in %s (%s)", root, shown(names))
    for name in names:
        path = root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


@contextmanager
def run_folder_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``root`` while a run writes it. Two ``train`` commands
    into one folder (the same command started twice, two configs with one ``output.output_dir``) each
    removed and overwrote the other's files and both exited 0, the folder holding one run's model
    beside the other's logs; the second one is now a UserError naming the folder. The lock is
    ``flock`` on the folder itself: no file is added to it, and it ends with the process, even a
    killed one. Folders created here for it that are still empty at the end are removed again (a
    mistake leaves no trace). Where the file system cannot lock (some network file systems) a
    warning says the folder is unguarded."""
    check_output_dir(root)  # a file where the folder goes: the one-line error that names it
    created = [p for p in (root, *root.parents) if not p.exists()]
    fd, refused = None, False
    try:
        while fd is None:
            root.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:  # removed in between (another run's empty folder): make it again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    refused = True  # the folder is the other run's now, even one this process saw absent
                    raise UserError(f"{root}: another hftraining process is training into this run folder; wait "
                                    "for it to end, or give another output.output_dir") from None
                log.warning("warning: %s: the run folder cannot be locked (%s); a second train into it at the same "
                            "time would not be refused", root, os.strerror(e.errno))
                break
            try:
                same = os.stat(root).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # locked a folder removed meanwhile, not the one the run writes: again
                os.close(fd)
                fd = None
        yield
    finally:
        # deepest first; stops at the first that holds something or that another run holds locked (a
        # train into the folder above a walk-forward's, nothing written yet); a refused run made none of them
        for p in [] if refused else created:
            if not _remove_unlocked(p, held=p == root):
                break
        if fd is not None:
            os.close(fd)


def _remove_unlocked(path: Path, held: bool = False) -> bool:
    """Remove the empty folder ``path`` under its run-folder lock (``held``: this process holds it):
    False (kept) when it holds something or another process holds the lock (a run trains into it,
    nothing written yet); a run that locks it meanwhile finds it removed and makes it again
    (:func:`run_folder_lock`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        if not held:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.rmdir()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def check_report_importable(what: str = "evaluation.report", instead: str = " (or set evaluation.report=false)") -> None:
    """A UserError naming matplotlib and how to install it when it cannot be imported and a report
    is to be written (``what``; ``instead``: how to go without): the report is the last thing a run
    writes, so a missing or broken matplotlib was a traceback after the model had trained and been
    saved, and no report."""
    try:
        importlib.import_module("matplotlib.figure")
        importlib.import_module("matplotlib.ticker")
    except ImportError as e:
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what}: the report needs matplotlib, which cannot be imported ({cause}); install it: "
                        f"pip install 'matplotlib>=3.8'{instead}") from None
    except ValueError as e:  # it imports, but its settings are refused (MPLBACKEND=nonexistent, a bad matplotlibrc)
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what}: the report needs matplotlib, which refuses its settings ({cause}){instead}") from None


def needs_validation(cfg: Config, intervals: bool = True) -> list[str]:
    """The keys of ``cfg`` whose work needs validation windows: early stopping, the best checkpoint
    and (``intervals``) the conformal intervals, calibrated on them."""
    t, e = cfg.training, cfg.evaluation
    return ([f"training.early_stopping_patience={t.early_stopping_patience}"] if t.early_stopping_patience else []) + \
        (["training.load_best_model_at_end"] if t.load_best_model_at_end else []) + \
        ([f"evaluation.intervals={list(e.intervals)}"] if e.intervals and intervals else [])


def split_sizes(data: PreparedData, d) -> tuple[str, str, str]:
    """(the windows of each split, the likely cause of an empty one, the first remedy) for an error."""
    sizes = f"windows: train {len(data.train)}, val {len(data.val)}, test {len(data.test)}"
    cause = (f"data.embargo={d.embargo} rows of each symbol are left out after each cut" if d.embargo else
             "too few rows after the cut for a window of data.sequence_length and data.prediction_horizon")
    return sizes, cause, "lower data.embargo, or " if d.embargo else ""


def _split_asked(cfg: Config, data: PreparedData) -> tuple[bool, bool]:
    """(validation asked for, test asked for) by the data section: a calendar cut dated after every
    symbol's last row asks for no split there (``data.split_dates`` past the data); a validation
    share of 0 (or ``split_dates`` with val equal to test) asks for no validation."""
    d, cut = cfg.data, data.report.get("split") or {}
    lasts = [pd.Timestamp(r["last"]) for r in (data.preprocessing.source_rows or {}).values()]
    last = max(lasts) if lasts else None

    def within(key: str) -> bool:
        return cut.get(key) is None or last is None or pd.Timestamp(cut[key]) <= last

    if cut.get("test_from") is not None:  # calendar: the cut dates, from split_dates or the ratios
        return cut.get("val_from") != cut["test_from"] and within("val_from"), within("test_from")
    return d.val_ratio > 0, True


def check_splits(cfg: Config, data: PreparedData) -> None:
    """A DataError naming ``data.embargo`` and the split sizes, before anything trains, when the test
    split yields no window (or the validation split none while a key needs it, :func:`needs_validation`)
    though the data section asks for one: a large ``data.embargo``, or too few rows after a cut, trained
    a model for nothing and exited 0 saying there was nothing to evaluate. A cut the user placed after
    the data (``data.split_dates``) asks for no such split and is left as it is."""
    if data.preprocessing.fold is not None:
        return
    val_asked, test_asked = _split_asked(cfg, data)
    sizes, cause, fix = split_sizes(data, cfg.data)
    if test_asked and len(data.test) == 0:
        raise DataError(f"data: the test split yields no window ({sizes}; {cause}), so the run would have nothing to "
                        f"evaluate: {fix}give the test split more dates (data.train_ratio/val_ratio or data.split_dates)")
    needs = needs_validation(cfg)
    if val_asked and needs and len(data.val) == 0:
        raise DataError(f"data: the validation split yields no window ({sizes}; {cause}), and {', '.join(needs)} "
                        f"need{'s' * (len(needs) == 1)} it: {fix}give the validation split more dates (data.val_ratio or "
                        "data.split_dates)")
    check_cross_section(cfg, data.train, data.val, data.test)  # a cross-sectional label of one symbol: said before --seeds folders go too


def evaluate_test(run: TrainedRun) -> tuple[dict[str, Any], Forecasts | None, dict[str, Any] | None]:
    """Score the finished run on its test split beside the naive baselines and the fitted ones
    (ridge, fitted here on the run's own training windows and saved under ``<run>/baselines/``),
    all through one prediction path (the backtest trades the same forecasts); write eval.json, the
    report and the model card ``final/README.md``, and end the tracking runs with the test metrics,
    the verdict and the artifacts → (result, forecasts, backtest). Main rank only; an empty test
    split gives ({}, None, None)."""
    cfg, data = run.cfg, run.data
    pre = data.preprocessing
    fc = bt = None
    result: dict[str, Any] = {}
    if len(data.test):
        fitted = fit_baselines(data.train, data.val, cfg.evaluation.baseline_max_windows)
        ckpt.save_fitted_baselines(run.run_dir, fitted, pre.to_dict())
        test = data.test.last_dates(cfg.evaluation.max_test_windows)
        if len(test) < len(data.test):
            run.logger.info("scoring the test windows of the last %d dates: %d of %d windows (evaluation.max_test_windows)",
                            len(set(test.times.tolist())), len(test), len(data.test))
        fc = collect_forecasts(run.model, test, pre.target_scale, cfg.data.eval_batch_size, run.device, run.precision,
                               fitted=fitted)
        result_note = {} if len(test) == len(data.test) else {"windows_scored": len(test), "windows_in_split": len(data.test)}
        bt = backtest_forecasts(fc, cfg.evaluation)
        # "step": the run's last step (a finished run is told by it); "weights_step": the step whose weights were scored
        # when load_best_model_at_end kept an earlier one (eval.json read the last step alone, final/ held another's)
        weights = {} if run.weights_step is None else {"weights_step": int(run.weights_step)}
        result = {"split": "test", "step": run.state.global_step, **weights, **result_note, **score(fc),
                  "backtest": {"settings": bt["settings"], "strategies": bt["strategies"]}}
        cal = calibrate(run.model, data.val, pre.target_scale, cfg.evaluation, cfg.data.eval_batch_size, run.device,
                        run.precision, list(cfg.model.quantiles))
        if cal is not None:  # calibrated on validation, scored on test; saved as it stands after the test dates
            fc.intervals, cal = forecast_intervals(cal, fc.pred["model"], fc.true, fc.dates, fc.quantiles,
                                                       known=outcome_times(test))
            result["intervals"] = interval_report(fc.intervals, fc.true, fc.dates, fc.symbol_ids, cal.method,
                                                 symbols=fc.symbols)
            if (run.run_dir / "final").is_dir():
                write_json(run.run_dir / "final" / INTERVALS_FILE, cal.to_dict())
        write_json(run.run_dir / "eval.json", result)
        run.logger.info(format_table(result))
        if "intervals" in result:
            run.logger.info("\n".join(format_intervals(result["intervals"])))
        run.logger.info(format_backtest(bt))
    else:
        run.logger.info("the test split yields no window: nothing to evaluate")
    html_path = None
    if cfg.evaluation.report:
        html_path, _ = write_report(run.run_dir, result or None, fc, bt, run.run_dir,
                                    title=f"hftraining run {run.run_dir.name}")
        run.logger.info("report: %s", html_path)
    if result:  # before the card, which marks the run finished: a kill between the two scores it again
        run.logger.log_test(run.state.global_step, headline_metrics(result))
    final = run.run_dir / "final"
    if final.is_dir():
        write_model_card(final, cfg, data.report, pre.to_dict(), run.model, run.state.global_step, result or None,
                         not_evaluated="the test split yields no window", weights_step=run.weights_step,
                         world_size=run.info.world_size if run.state.global_step else None)
    run.logger.finish(result.get("verdict"), [p for p in (final, html_path) if p is not None and p.exists()])
    return result, fc, bt


def train(cfg: Config, data: PreparedData | None = None,
          on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the run of ``cfg``, then evaluate it on the test split; returns eval.json's
    content (empty on the other ranks of a torchrun group). A run folder that holds a ``train
    --seeds`` run (``seed-<k>/`` folders) is refused, or emptied of it with ``output.overwrite``:
    a single run written beside the seeds would be mixed into them. ``--resume`` of a finished run
    (:func:`~hftraining.train.runner.finished_checkpoint`) checks the config and the data as any resume
    does, then trains and scores nothing, says so and returns the eval.json it holds."""
    if cfg.evaluation.report:  # the report is written last: said before anything trains
        check_report_importable()
    root = cfg.run_dir()
    earlier = seed_runs(root)
    if earlier and not cfg.output.overwrite:
        raise UserError(f"{root}: holds a train --seeds run ({shown(earlier)}); a single run would be mixed into it: "
                        "start over with output.overwrite=true, or give another output.output_dir")
    info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    try:
        with run_folder_lock(root) if info.is_main else nullcontext(), held_records():  # train.log gets them too
            return _train(cfg, data, on_evaluate, root, earlier, info)
    finally:
        cleanup(info)


def _train(cfg: Config, data: PreparedData | None, on_evaluate: Callable[[int, dict[str, float]], None] | None,
           root: Path, earlier: list[str], info: DistInfo) -> dict[str, Any]:
    """:func:`train`'s work, in the process group ``info`` and under the run folder's lock."""
    check_before_data(cfg, info)  # before output.overwrite removes anything
    done = finished_checkpoint(cfg)
    spec = cfg.training.resume_from_checkpoint
    # a resume continues a run whose splits were checked when it started (its data must be the same): its
    # checkpoint is verified once, by the trainer, and what it refuses is said before the data are read
    resumes = bool(spec) and (spec != "auto" or bool(ckpt.list_checkpoints(root / "checkpoints")))
    if data is None and done is None and not resumes:  # the splits are checked before anything trains
        prepare_run_dir(cfg, info)  # its refusals (a finished run, checkpoints, a model folder) before the data are read
        data = prepare(cfg.data)
    if data is not None and done is None:
        check_splits(cfg, data)  # and a data mistake is said before the earlier run is removed
    if earlier and data is None:
        data = prepare(cfg.data)
    if earlier and info.is_main:  # output.overwrite: none of the seeds stays beside the new run
        remove(root, earlier)
    barrier(info)
    if done is not None:  # --resume of a finished run: checked as any resume, then left as it is
        check_resumable(cfg, done)
        check_same_data(run_report(data if data is not None else prepare(cfg.data)), done)  # a data mistake too
        if info.is_main:
            state = read_json(done / ckpt.STATE_FILE)
            early = bool(state.get("stopped_early"))
            why = "stopped early" if early else f"training.max_steps={cfg.training.max_steps}"
            # a run stopped early stays stopped (its patience is restored): more steps would not train it
            more = ("it stays stopped whatever training.max_steps says: start over with output.overwrite=true to "
                    "train longer" if early else "raise training.max_steps to train on")
            log.warning("warning: %s: the run is finished (step %d, %s) and scored (eval.json): --resume trains "
                        "and scores nothing, the run folder is left as it is; %s, or score it again with "
                        "`hftraining evaluate %s`", root, state["global_step"], why, more, shlex.quote(str(root)))
        return read_json(root / "eval.json") if info.is_main else {}
    with training_run(cfg, data, info, on_evaluate=on_evaluate) as run:
        return evaluate_test(run)[0] if run.is_main else {}
