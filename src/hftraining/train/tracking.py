"""Experiment tracking: one small class per ``output.report_to`` backend behind one interface.

:class:`~hftraining.train.logging.RunLogger` (main rank only) starts every backend the config names
and calls, in this order:

``on_start(run_dir, config, resume_step, resolved)``
    ``resume_step``: the checkpoint step a ``--resume`` continues from (None: a fresh run);
    ``resolved``: the values the run uses for config keys that can ask for ``auto`` (``training.device``,
    ``training.precision``, ``training.compile``), which the run's params show (:func:`run_params`).
``on_log(step, record)``
    each logged record: the training metrics of a logging step, the ``eval_*`` validation metrics.
``on_eval(step, metrics)``
    once, the test-split headline numbers of the finished run (``test_*``).
``on_end(verdict, artifacts, failed, interrupted)``
    once, the verdict sentence (None when the test split was not scored), the files and folders
    to attach (``final/``, ``report.html``), whether the run ended by an exception, and whether that
    exception was the user's Ctrl-C (``KeyboardInterrupt``: MLflow's status KILLED, not FAILED).

The ids that let ``--resume`` continue the same MLflow and W&B run are kept in ``<run>/tracking.json``;
they are reused only when training continues from a checkpoint.

A backend's service failing mid-run (MLflow's store, W&B's process) stops the run with one line naming
it and the step (:meth:`Tracker.reaching`); a step's checkpoint is written after its records, so the
checkpoints kept are those whose steps every backend holds, and ``--resume`` logs the rest once.

Groups of runs (``train --seeds``, walk-forward, tune): with mlflow, one parent run per group
(:class:`TrackingGroup`, recorded in the group folder's :data:`GROUP_FILE`), each seed, fold or trial
nested under it, the group's aggregates logged to it. TensorBoard needs nothing of the kind: each
member writes ``<member>/tensorboard/`` inside the group folder, so ``tensorboard --logdir <group
folder>`` shows the members side by side, named by their folders.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from hftraining.core.config import Config, OutputConfig, resolved_report_to
from hftraining.core.errors import UserError, WriteError, is_io_error, writing
from hftraining.core.files import replace_file
from hftraining.core.fmt import shown_url
from hftraining.core.jsonio import dumps, read_json, write_json

TRACKING_FILE = "tracking.json"
"""``<run>/tracking.json``: {"mlflow": {tracking_uri (its password masked), experiment_id, run_id},
"wandb": {id, project, dir}}."""
INSTALL_HINT = "pip install -e '.[track]' (in the hftraining checkout)"
AFTER_TRAINING = "the trained run's files (final/, eval.json) are written"
STOPPED = "training stopped at step {step}; the checkpoints written so far are kept: continue it with --resume"
FULL_PARAMS = "params.json"
"""The MLflow run's artifact holding every param's full value, written when MLflow's limit cut one."""
log = logging.getLogger("hftraining")


def flat_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as one level of dotted keys (``training.learning_rate``); nested
    mappings (``model.loss_weights``, ``tune.search_space``) are flattened too, lists kept whole."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out[prefix] = value

    for section, values in cfg.to_dict().items():
        walk(section, values)
    return out


def run_params(config: Config, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The params of a run: the flattened config (:func:`flat_config`) with the value the run used for each
    key of ``resolved`` (``training.precision: bf16`` where the config says ``auto``), and the value asked
    for, where it differs, as ``requested.<key>``: runs are compared by what they ran with."""
    out = flat_config(config)
    for key, used in (resolved or {}).items():
        asked = out.get(key)
        out[key] = used
        if asked != used:
            out[f"requested.{key}"] = asked
    return out


def status(failed: bool, interrupted: bool = False) -> str:
    """The MLflow status a run or a group's parent run ends with: KILLED when the user stopped it (Ctrl-C),
    FAILED when an exception did, else FINISHED."""
    return "KILLED" if interrupted else "FAILED" if failed else "FINISHED"


def interrupted_now() -> bool:
    """Whether the exception on its way out (in an ``except`` or ``finally``) is the user's Ctrl-C."""
    import sys

    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a record (no ``step``, no booleans). A NaN or infinite value is
    left out, as ``null`` in metrics.jsonl and eval.json (:func:`~hftraining.core.jsonio.json_safe`)
    and an empty cell in metrics.csv: MLflow would store NaN, and +Inf as the largest float, 1.8e308;
    TensorBoard and W&B would plot them."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def panel_tag(key: str) -> str:
    """A metric's name in dashboards that group by prefix: ``train/loss``, ``eval/mse``, ``test/mse``."""
    for prefix in ("eval_", "test_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return f"train/{key}"


def read_tracking(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / TRACKING_FILE
    if not path.exists():
        return {}
    try:
        return dict(read_json(path))
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{path}: cannot read ({e}); delete it to start new tracking runs") from None


def store_tracking(run_dir: Path, name: str, entry: dict[str, Any]) -> None:
    """Record the ids of backend ``name`` in ``<run>/tracking.json`` (other backends' entries kept)."""
    write_json(Path(run_dir) / TRACKING_FILE, {**read_tracking(run_dir), name: entry})


def cut_params(values: dict[str, Any], limit: int) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """MLflow params of ``values`` (a string kept, anything else as JSON) → (each cut to MLflow's first
    ``limit`` characters, each whole, {key: whole length} of those cut)."""
    full = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()}
    return ({k: v[:limit] for k, v in full.items()}, full,
            {k: len(v) for k, v in full.items() if len(v) > limit})


def log_full_params(client: Any, run_id: str, full: dict[str, str], cut: dict[str, int], limit: int,
                    run: str = "the run") -> None:
    """When MLflow's limit cut a param (``cut``): every param's whole value as the artifact
    :data:`FULL_PARAMS` of the run, and a warning naming the keys cut."""
    if not cut:
        return
    client.log_dict(run_id, full, FULL_PARAMS)
    named = ", ".join(f"{k} ({n:,} characters)" for k, n in list(cut.items())[:5])
    more = f" and {len(cut) - 5} more" if len(cut) > 5 else ""
    log.warning("warning: output.report_to mlflow: MLflow keeps a param's first %s characters, so %s%s %s "
                "logged cut; every param's full value is in %s's artifact %s", f"{limit:,}", named,
                more, "is" if len(cut) == 1 else "are", run, FULL_PARAMS)


def no_mlflow_telemetry() -> None:
    """Keep MLflow from sending usage telemetry (it does by default since 3.x, from a thread of its own):
    a run talks to no server but the tracking store it is given. ``MLFLOW_DISABLE_TELEMETRY`` set by
    the user is kept."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def mlflow_errors() -> tuple[type[BaseException], ...]:
    """What MLflow raises when its store cannot be used: its own errors, the database's (SQLAlchemy,
    which it lets through when a store cannot be opened; sqlite3's, from :func:`check_sqlite_store`)
    and the file system's."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    errors: tuple[type[BaseException], ...] = (MlflowException, sqlite3.Error, OSError)
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SQLAlchemyError

        errors += (SQLAlchemyError,)
    return errors


def reason(e: BaseException) -> str:
    """The first line of a tracking backend's error, any password in a URL it quotes masked."""
    text = str(e).strip()
    return shown_url(text.splitlines()[0]) if text else type(e).__name__


def check_sqlite_store(uri: str) -> None:
    """Open the database file of a ``sqlite:///`` URI once, as MLflow would (its folder created): one
    that cannot be opened is an error at once, where MLflow retries it for about 100 s and then lets
    SQLAlchemy's traceback through."""
    import sqlite3

    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # MLflow says what it lacks
        return
    path = make_url(uri).database if uri.startswith("sqlite:///") else None
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version").fetchall()


def _require(module: str, backend: str) -> Any:
    """Import an optional tracking package, or a one-line UserError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"output.report_to: {backend} needs the {module} package, which is not installed: "
                        f"{INSTALL_HINT}") from None


class Tracker:
    """One backend; every hook does nothing unless the backend overrides it."""

    name = ""
    where = ""  # " to <store>", in the message of a backend that cannot be reached

    def service_errors(self) -> tuple[type[BaseException], ...]:
        """What the backend raises when its service or store cannot be reached (none: local files)."""
        return ()

    @contextlib.contextmanager
    def reaching(self, what: str, then: str) -> Iterator[None]:
        """The backend's service failing mid-run (a tracking server gone, its database full, W&B's
        process killed) as one line naming the backend, what was being logged and what is kept
        (``then``, if anything), instead of the service's traceback."""
        try:
            yield
        except self.service_errors() as e:
            raise UserError(f"output.report_to: {self.name} could not log {what}{self.where} ({reason(e)})"
                            + (f"; {then}" if then else "")) from None

    def on_start(self, run_dir: Path, config: Config, resume_step: int | None,
                 resolved: dict[str, Any] | None = None) -> None:
        pass

    def on_log(self, step: int, record: dict[str, Any]) -> None:
        pass

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_end(self, verdict: str | None, artifacts: list[Path], failed: bool, interrupted: bool = False) -> None:
        pass


class TensorBoardTracker(Tracker):
    """``<run>/tensorboard/`` event files; a resumed run hides what a killed run wrote after its checkpoint.

    TensorBoard writes from a thread of its own, which keeps a write error and raises it again at the
    next write or flush on ours: there it becomes one line naming the folder (a full disk stops the
    run as any other write error does). The thread's own traceback of it is not printed."""

    name = "tensorboard"

    def on_start(self, run_dir, config, resume_step, resolved=None):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from torch.utils.tensorboard import SummaryWriter

        # the last step logged (the verdict's): a resume that trains no step scores its checkpoint's
        self.step, self.resume_step, self.broken = resume_step or 0, resume_step, False
        self.dir = run_dir / "tensorboard"
        # Every start writes a session START at its first step (purge_step): TensorBoard hides what the
        # run's earlier files hold from that step on. Its Python loader takes a run's first START for
        # the run's beginning, not a restart: a fresh start writes one at step 0 so that a resume's is
        # a restart; a resume writes its START twice, for a run whose fresh start wrote none.
        purge = 0 if resume_step is None else resume_step + 1
        if resume_step is not None:
            after_earlier_event_files(self.dir)
        with writing(self.dir):
            self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=purge)
            if resume_step is not None:
                self.writer.file_writer.add_event(Event(step=purge, session_log=SessionLog(status=SessionLog.START)))
        self._excepthook = threading.excepthook  # restored by on_end
        threading.excepthook = self._quiet_writer_thread

    def _quiet_writer_thread(self, args) -> None:
        """threading.excepthook while the writer is open: TensorBoard's writer thread's I/O errors are
        raised again in the main thread (see the class); every other thread's exception as before."""
        if not (type(args.thread).__module__.startswith("tensorboard.") and is_io_error(args.exc_value)):
            self._excepthook(args)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        try:
            with writing(self.dir):
                for k, v in values.items():
                    self.writer.add_scalar(k, v, step)
        except WriteError:
            self.broken = True  # the run stops with this error: on_end only closes
            raise

    def on_log(self, step, record):
        self.step = step
        self._scalars({panel_tag(k): v for k, v in scalars(record).items()}, step)

    def on_eval(self, step, metrics):
        if self.resume_step is not None and step <= self.resume_step:
            self._restart_at(step)
        self._scalars({panel_tag(f"test_{k}"): v for k, v in scalars(metrics).items()}, step)

    def _restart_at(self, step: int) -> None:
        """A run stopped while its test split was scored (after its test/* scalars, before its model
        card), resumed: it trains nothing and scores the test split again at the step the earlier
        session scored, where TensorBoard then showed every test/* value twice (and the verdict at
        step 0). A START at that step hides what the earlier sessions wrote from it on; the train/*
        and eval/* values of the step, which this session does not log again, are written after it.
        Event files that cannot be read back (one damaged, a file of another kind named like them) stop
        nothing: a warning says the step's test/* values may show twice, and no START hides the values
        that could not be written again."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        try:
            with writing(self.dir):
                self.writer.flush()
            kept = self._read_back(step)
            if kept is None:
                return
            with writing(self.dir):
                self.writer.file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        except WriteError:
            self.broken = True  # the run stops with this error: on_end only closes
            raise
        self._scalars(kept, step)

    def _read_back(self, step: int) -> dict[str, float] | None:
        """Every train/* and eval/* value at ``step`` as TensorBoard shows the event files now; None, with
        a warning, when they cannot be read. TensorBoard's loader says "Detected out of order event.step
        likely caused by a TensorFlow restart ... Removing N scalars" of each restart an earlier start
        wrote: those lines of this reading are not the user's to see (TensorBoard's own reading says them)."""
        from tensorboard.backend.event_processing import event_accumulator as ea

        quiet = _DropPurgeLines()
        tb_log = logging.getLogger("tensorboard")
        tb_log.addFilter(quiet)
        try:
            acc = ea.EventAccumulator(str(self.dir), size_guidance={ea.SCALARS: 0})  # every point, not a sample
            acc.Reload()
            return {tag: e.value for tag in acc.Tags()[ea.SCALARS] if not tag.startswith("test/")
                    for e in acc.Scalars(tag) if e.step == step}
        except Exception as e:  # noqa: BLE001 - reading back for display: it never stops a trained run
            log.warning("warning: output.report_to tensorboard: the event files in %s cannot be read back (%s), so "
                        "TensorBoard may show the test/* values of step %d twice, the earlier ones too",
                        self.dir, reason(e), step)
            return None
        finally:
            tb_log.removeFilter(quiet)

    def on_end(self, verdict, artifacts, failed, interrupted=False):
        try:
            if self.broken:
                with contextlib.suppress(OSError):  # the same error, already on its way out
                    self.writer.close()
                return
            with writing(self.dir):
                if verdict:
                    self.writer.add_text("verdict", verdict, self.step)
                self.writer.flush()  # raises what the writer thread kept; close() would not
                self.writer.close()
        finally:
            threading.excepthook = self._excepthook


def after_earlier_event_files(folder: Path) -> None:
    """Return once a new event file of ``folder`` sorts after every one there. TensorBoard reads a run's
    event files in the order of their names, ``events.out.tfevents.<second opened>.<host>.<pid>.<counter>``,
    whose counter (the writers a process opened) is not padded: a resume opened in the second of an
    earlier file of the same process could sort before it (``….10`` before ``….9``), and the earlier
    session's values then hid the resumed ones. Waits for the next second (at most 1 s), only when the
    newest file is of this very second (a resume in the process of its first start, within a second)."""
    seconds = [int(f.name.split(".")[3]) for f in folder.glob("events.out.tfevents.*")
               if len(f.name.split(".")) > 3 and f.name.split(".")[3].isdigit()]
    if seconds and max(seconds) == int(time.time()):
        time.sleep(1.0 - time.time() % 1.0 + 0.01)


class _DropPurgeLines(logging.Filter):
    """TensorBoard's loader's line for each restart it applies (see :meth:`TensorBoardTracker._read_back`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Detected out of order event.step")


class JsonlTracker(Tracker):
    """``<run>/metrics.jsonl``: every record as one JSON line (the report and ``serve`` read it).
    The trainer drops the lines after the checkpoint a resumed run continues from."""

    name = "jsonl"

    def on_start(self, run_dir, config, resume_step, resolved=None):
        # a fresh start (also --resume with no checkpoint yet) begins the file anew
        self.file = open(run_dir / "metrics.jsonl", "a" if resume_step is not None else "w", encoding="utf-8")

    def on_log(self, step, record):
        with writing(self.file.name):
            self.file.write(dumps({"step": step, **{k: v for k, v in record.items() if k != "step"}}, indent=None) + "\n")
            self.file.flush()

    def on_end(self, verdict, artifacts, failed, interrupted=False):
        self.file.close()


class CsvTracker(Tracker):
    """``<run>/metrics.csv``: one row per logged step (a step's validation metrics join its training
    row). Columns: ``step``, then every key in the order first logged; a key first seen later (the
    ``eval_*`` keys at the first validation) adds a column and the file is rewritten with it, so every
    row has every column, empty where its step did not log that key or logged a NaN or infinite value
    (``null`` in metrics.jsonl). A resumed run drops the rows
    after its checkpoint."""

    name = "csv"

    def on_start(self, run_dir, config, resume_step, resolved=None):
        self.path = run_dir / "metrics.csv"
        self.fields: list[str] = ["step"]
        self.last: dict[str, Any] | None = None  # the last row written (a later record of its step joins it)
        rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            # a last row without its newline was cut (a full disk, a kill): "1" of "12,..." read as step 1
            reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1], newline=""))
            self.fields = list(reader.fieldnames or self.fields)
            rows = [r for r in reader if r.get("step") and int(r["step"]) <= resume_step]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Write the whole file beside it, then put it in place: a full disk or a kill while the file is
        rewritten (at each validation) left it truncated, its rows up to the checkpoint lost for good."""
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(rows)

        replace_file(self.path, write)

    def on_log(self, step, record):
        with writing(self.path):
            self._log(step, record)

    def _log(self, step, record):
        # a NaN or infinite value is an empty cell, as it is null in metrics.jsonl
        row = {"step": step, **{k: None if isinstance(v, float) and not math.isfinite(v) else v
                                for k, v in record.items() if k != "step"}}
        joins = self.last is not None and self.last["step"] == step
        if joins:
            row = {**self.last, **row}
        new = [k for k in row if k not in self.fields]
        if new or joins:  # rewrite: a wider header, or the last row replaced by the joined one
            self.fields += new
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            self._rewrite((rows[:-1] if joins else rows) + [row])
        else:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)
        self.last = row


class MlflowTracker(Tracker):
    """An MLflow run in the store of ``MLFLOW_TRACKING_URI``, else ``sqlite:///<run>/mlruns.db`` (artifacts
    under ``<run>/mlartifacts/``), in the experiment ``output.experiment_name``. Params: the flattened
    resolved config, ``training.device``, ``training.precision`` and ``training.compile`` as the run used
    them (``requested.<key>``: an ``auto`` asked for, :func:`run_params`); metrics: every logged step and
    the ``test_*`` numbers; tag ``verdict``; artifacts: ``final/`` and ``report.html``; status FINISHED,
    KILLED for a run stopped by Ctrl-C, FAILED by another exception or when its end could not be logged
    whole. ``--resume`` continues the run recorded in tracking.json.

    MLflow keeps a param's first 6,000 characters (``MAX_PARAM_VAL_LENGTH``): a longer value (a list of
    a thousand ``data.symbols``) is logged cut, a warning names its key, and every param's full value
    is logged as the artifact ``params.json``.

    A run killed after a checkpoint had logged steps past it, which the resumed run redoes; MLflow's
    metric history cannot be edited, so a redone step already in it is not logged again (the history
    keeps one value per step: the killed run's, which a deterministic resume redoes bit for bit). The
    ``test_*`` numbers of a finished run resumed from an earlier checkpoint are not logged again when
    they are the same; a changed one (other ``evaluation.*`` settings) is, so the run shows eval.json's.

    MLflow's usage telemetry is turned off (``MLFLOW_DISABLE_TELEMETRY=true`` unless set): the run
    talks to no server but its store. A store that cannot be opened is one line (at once for a SQLite
    file); a password in its URI is masked in every message and in tracking.json.

    A member of a group (:meth:`TrackingGroup.member`: a seed, a fold, a trial) is created in its
    parent's store (without ``MLFLOW_TRACKING_URI``: ``<group folder>/mlruns.db``, artifacts in
    ``<group folder>/mlartifacts/``) with the tags ``mlflow.parentRunId``, ``hftraining.group`` and
    ``hftraining.member``; resumed, it keeps its run id and is tagged again with the parent it continues under."""

    name = "mlflow"

    def on_start(self, run_dir, config, resume_step, resolved=None):
        no_mlflow_telemetry()
        _require("mlflow", self.name)
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.member = _member  # a seed, fold or trial of a group: its parent's store, nested under it
        uri = self.member.uri if self.member else env_uri or f"sqlite:///{(run_dir / 'mlruns.db').resolve()}"
        stored = read_tracking(run_dir).get(self.name) if resume_step is not None else None
        # cut: key → full length
        params, self.full, self.cut = cut_params(run_params(config, resolved), MAX_PARAM_VAL_LENGTH)
        self.limit = MAX_PARAM_VAL_LENGTH
        self.logged: dict[str, dict[int, float]] = {}  # key → {step: value} from the checkpoint on, as logged before
        self.step, self.where = resume_step or 0, f" to {shown_url(uri)}"  # the last step logged, the store
        try:
            if uri.startswith("sqlite:"):
                check_sqlite_store(uri)
            store_dir = (self.member.own_store if self.member else None if env_uri else run_dir)
            self.opened = False  # set once the run is created or set RUNNING again
            try:
                self._open(run_dir, config, resume_step, stored, uri, store_dir, params=params)
            except BaseException:
                # Ctrl-C or the store failing after the run was opened (a resume reading its history): the
                # run ends KILLED (FAILED) where its store still answers, not RUNNING for ever
                if self.opened:
                    with contextlib.suppress(*mlflow_errors()):
                        self.client.set_terminated(self.run_id, status(True, interrupted_now()))
                raise
        except mlflow_errors() as e:
            why = reason(e)
            if stored and self.member is not None and stored.get("tracking_uri") != shown_url(uri):
                # a seed of a --seeds run started before groups existed: its run is in its own store
                raise UserError(
                    f"{run_dir / TRACKING_FILE}: MLflow run {stored['run_id']} is in {stored.get('tracking_uri')}, not "
                    f"in its group's store {shown_url(uri)} ({why}); start the group again with "
                    "output.overwrite=true, or remove the mlflow entry to start a new MLflow run"
                ) from None
            if stored:
                raise UserError(
                    f"{run_dir / TRACKING_FILE}: MLflow run {stored['run_id']} cannot be continued in {shown_url(uri)} "
                    f"({why}); set MLFLOW_TRACKING_URI to the store that holds it, "
                    "or remove the mlflow entry to start a new MLflow run"
                ) from None
            raise UserError(f"output.report_to: mlflow cannot start a run in {shown_url(uri)} ({why}); "
                            "check MLFLOW_TRACKING_URI") from None

    def service_errors(self):
        return mlflow_errors()

    def _open(self, run_dir: Path, config: Config, resume_step: int | None, stored: dict[str, Any] | None,
              uri: str, store_dir: Path | None, params: dict[str, str]) -> None:
        """Continue the run ``stored`` (tracking.json's entry) or create one; log the params it lacks.
        ``store_dir``: the folder whose ``mlartifacts/`` a new experiment's artifacts go to (the store
        is its ``mlruns.db``), None under ``MLFLOW_TRACKING_URI``. A group's member (:class:`TrackingGroup`)
        gets its tags, the parent's id among them, also when it resumes."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        self.client = MlflowClient(tracking_uri=uri)
        if stored:
            self.run_id = stored["run_id"]
            run = self.client.get_run(self.run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            self.opened = True
            for key in run.data.metrics:
                history = self.client.get_metric_history(self.run_id, key)
                # from the checkpoint's step on: a run stopped while it was scored is scored again at that step
                steps = {m.step: m.value for m in history if m.step >= resume_step}
                if steps:
                    self.logged[key] = steps
            # a param cannot change in MLflow: a resumed run adds the keys it lacks and records the
            # values that differ (training.resume_from_checkpoint at least) as tags resumed.<key>
            logged = run.data.params
            for k, v in params.items():
                if k in logged and logged[k] != v:
                    self.client.set_tag(self.run_id, f"resumed.{k}", v)
            params = {k: v for k, v in params.items() if k not in logged}
            for k, v in (self.member.tags if self.member else {}).items():
                self.client.set_tag(self.run_id, k, v)
        else:
            name = config.output.experiment_name
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                exp_id = exp.experiment_id
            else:
                artifacts = (store_dir / "mlartifacts").resolve().as_uri() if store_dir is not None else None
                exp_id = self.client.create_experiment(name, artifact_location=artifacts)
            run = self.client.create_run(exp_id, run_name=self._run_name(run_dir),
                                         tags={"hftraining.run_dir": str(run_dir.resolve()),
                                               **(self.member.tags if self.member else {})})
            self.run_id = run.info.run_id
            self.opened = True
            store_tracking(run_dir, self.name, {"tracking_uri": shown_url(uri), "experiment_id": exp_id,
                                                "run_id": self.run_id})
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
        log_full_params(self.client, self.run_id, self.full, self.cut, self.limit)

    def _run_name(self, run_dir: Path) -> str:
        """The run folder's name; a group member's is its path in the group folder (``trial-0003/fold-0``)."""
        if self.member is not None:
            with contextlib.suppress(ValueError):
                return run_dir.resolve().relative_to(self.member.folder.resolve()).as_posix()
        return run_dir.name

    def _metrics(self, step: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if values:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def on_log(self, step, record):
        self.step = step
        with self.reaching(f"step {step}", STOPPED.format(step=step)):
            self._metrics(step, {k: v for k, v in scalars(record).items() if step not in self.logged.get(k, ())})

    def on_eval(self, step, metrics):
        values = {f"test_{k}": v for k, v in scalars(metrics).items()}
        with self.reaching(f"the test metrics of step {step}", AFTER_TRAINING):
            self._metrics(step, {k: v for k, v in values.items() if self.logged.get(k, {}).get(step) != v})

    def on_end(self, verdict, artifacts, failed, interrupted=False):
        with self.reaching(f"the end of the run (step {self.step})", "" if failed else AFTER_TRAINING):
            try:
                if verdict:
                    self.client.set_tag(self.run_id, "verdict", verdict)
                for p in artifacts:
                    if p.is_dir():
                        self.client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
                    elif p.exists():
                        self.client.log_artifact(self.run_id, str(p))
            except BaseException:
                # the end not logged whole (an artifact store full or refusing, Ctrl-C during the upload): the
                # run ends FAILED (KILLED) where its store still answers, not RUNNING for ever
                with contextlib.suppress(*mlflow_errors()):
                    self.client.set_terminated(self.run_id, status(True, interrupted or interrupted_now()))
                raise
            self.client.set_terminated(self.run_id, status(failed, interrupted))


class WandbTracker(Tracker):
    """A W&B run: project ``WANDB_PROJECT`` or ``output.experiment_name``, files under ``WANDB_DIR`` or the
    run folder (``<dir>/wandb/``); ``WANDB_MODE=offline`` writes it there with no network (``wandb sync``
    uploads it later). Config: the run's params (:func:`run_params`); history: every logged step against
    ``step``; summary: the ``test/*`` numbers and ``verdict``; artifact ``<run name>-model`` (type model):
    ``final/`` and ``report.html``. ``--resume`` continues the run id recorded in tracking.json (offline,
    each start writes its own ``offline-run-*-<id>`` folder with that id). W&B's history is append-only:
    after a kill, the steps logged past the checkpoint appear again when the resumed run redoes them.
    The run ends with exit code 0, 1 when an error stopped it, 255 when Ctrl-C or SIGTERM did (W&B's own
    code for Ctrl-C), so a stopped run is told from a crashed one."""

    name = "wandb"

    def on_start(self, run_dir, config, resume_step, resolved=None):
        wandb = _require("wandb", self.name)
        self.wandb, self.step = wandb, resume_step or 0
        stored = read_tracking(run_dir).get(self.name) if resume_step is not None else None
        run_id = stored["id"] if stored else secrets.token_hex(6)  # W&B ids: letters, digits, - and _
        project = os.environ.get("WANDB_PROJECT") or config.output.experiment_name
        wdir = os.environ.get("WANDB_DIR") or str(run_dir)
        Path(wdir).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=project, id=run_id, name=run_dir.name, dir=wdir, resume="allow",
                                  config=run_params(config, resolved), allow_val_change=True, reinit="create_new",
                                  settings=wandb.Settings(console="off"))  # train.log keeps the console
        except wandb.errors.Error as e:  # no API key, no network, a bad WANDB_* setting: the user's to fix
            raise UserError(f"output.report_to: wandb cannot start a run ({reason(e)}); log in with `wandb login` "
                            "or set WANDB_MODE=offline to write the run to disk only") from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.name_ = re.sub(r"[^\w.-]", "-", run_dir.name) or "run"
        if not stored:
            store_tracking(run_dir, self.name, {"id": run_id, "project": project, "dir": wdir})

    def service_errors(self):
        return (self.wandb.errors.Error, OSError)  # OSError: the connection to W&B's own process lost

    def on_log(self, step, record):
        self.step = step
        values = {panel_tag(k): v for k, v in scalars(record).items()}
        if not values:  # every value non-finite: no row of the step alone, as TensorBoard and MLflow hold none
            return
        with self.reaching(f"step {step}", STOPPED.format(step=step)):
            self.run.log({"step": step, **values})

    def on_eval(self, step, metrics):
        with self.reaching(f"the test metrics of step {step}", AFTER_TRAINING):
            self.run.summary.update({panel_tag(f"test_{k}"): v for k, v in scalars(metrics).items()})

    def on_end(self, verdict, artifacts, failed, interrupted=False):
        with self.reaching(f"the end of the run (step {self.step})", "" if failed else AFTER_TRAINING):
            if verdict:
                self.run.summary["verdict"] = verdict
            present = [p for p in artifacts if p.exists()]
            if present:
                art = self.wandb.Artifact(f"{self.name_}-model", type="model")
                for p in present:
                    if p.is_dir():
                        art.add_dir(str(p), name=p.name)
                    else:
                        art.add_file(str(p))
                self.run.log_artifact(art)
            # W&B's own code for a run its user stopped with Ctrl-C (its exit hook's), not the 1 of a crash
            self.run.finish(exit_code=255 if interrupted else 1 if failed else 0)


# ---------------------------------------------------------------------------------- groups of runs

GROUP_FILE = "tracking_group.json"
"""In a group's folder (``train --seeds``'s run folder, ``<run>/walkforward/``, tune's ``--out``):
{"mlflow": {tracking_uri (its password masked), experiment_id, run_id, kind}}, the parent run of its
members. Not ``tracking.json``: a seeds run folder holding that file would read as a single run's."""
_member: "GroupMember | None" = None
"""The group member that a run started now belongs to (:meth:`TrackingGroup.member`), read by
:class:`MlflowTracker` when it opens the member's MLflow run."""


class GroupMember:
    """What a member's MLflow run needs of its group: the store, the parent run, and its tags."""

    def __init__(self, folder: Path, uri: str, own_store: Path | None, parent_id: str, kind: str, ids: dict[str, int]):
        self.folder, self.uri, self.own_store, self.parent_id = folder, uri, own_store, parent_id
        self.tags = {"mlflow.parentRunId": parent_id, "hftraining.group": kind,
                     "hftraining.member": " ".join(f"{k}={v}" for k, v in ids.items()),
                     **{f"hftraining.{k}": str(v) for k, v in ids.items()}}


def _group_store(folder: Path) -> tuple[str, Path | None]:
    """(store URI, the group folder when the store is its own) for the runs of a group in ``folder``:
    ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<folder>/mlruns.db``: one store for the parent and
    its members (nesting needs one), where a run alone keeps its own."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri, None
    return f"sqlite:///{(folder / 'mlruns.db').resolve()}", folder


class TrackingGroup:
    """The MLflow parent run of a ``train --seeds``, walk-forward or tune: every member's run (a seed,
    a fold, a trial) is nested under it (tag ``mlflow.parentRunId``) with tags ``hftraining.group``
    (the kind) and ``hftraining.member`` (``seed=0``, ``fold=2``, ``trial=7``), and the group's
    aggregates are the parent's metrics, their JSON its artifacts (:meth:`finish`). Inactive (every
    method does nothing) unless ``output.report_to`` names mlflow, and on every rank but the main one
    of a torchrun group. Start it with :func:`start_group`; a tune worker joins its study's with
    :func:`join_group`."""

    def __init__(self, folder: Path, kind: str, client: Any = None, run_id: str | None = None,
                 uri: str = "", own_store: Path | None = None):
        self.folder, self.kind, self.client, self.run_id = folder, kind, client, run_id
        self.uri, self.own_store, self.where = uri, own_store, f" to {shown_url(uri)}"

    @property
    def active(self) -> bool:
        return self.run_id is not None

    @contextlib.contextmanager
    def member(self, **ids: int) -> Iterator[None]:
        """Runs started inside (``with group.member(seed=0): train(...)``) are members with these ids."""
        global _member
        if not self.active:
            yield
            return
        before, _member = _member, GroupMember(self.folder, self.uri, self.own_store, self.run_id, self.kind, ids)
        try:
            yield
        finally:
            _member = before

    def finish(self, metrics: dict[str, Any], artifacts: list[Path] | tuple[Path, ...] = (),
               tags: dict[str, str] | None = None) -> None:
        """Log the group's aggregates (the finite numbers of ``metrics``), its artifacts and tags, and
        end the parent run FINISHED. A parent finished before (a resumed ``train --seeds``, a study
        continued) logs only the aggregates that changed, at the step after the last it holds (step 0:
        the first finish): its history holds one value a step and none twice, its latest the group's now."""
        if not self.active:
            return
        from mlflow.entities import Metric

        with self._reaching("the group's aggregates"):
            now = int(time.time() * 1000)
            try:  # the history read too: Ctrl-C or a store failing there ends the parent as well
                latest = self.client.get_run(self.run_id).data.metrics
                step = 1 + max((m.step for k in latest for m in self.client.get_metric_history(self.run_id, k)),
                               default=-1)
                values = [Metric(k, v, now, step) for k, v in scalars(metrics).items() if latest.get(k) != v]
                for i in range(0, len(values), 1000):  # MLflow's batch limit: 1,000 metrics
                    self.client.log_batch(self.run_id, metrics=values[i:i + 1000])
                for k, v in (tags or {}).items():
                    self.client.set_tag(self.run_id, k, str(v))
                for p in artifacts:
                    if Path(p).is_file():
                        self.client.log_artifact(self.run_id, str(p))
            except BaseException:
                # not logged whole (an artifact store that refuses, Ctrl-C): the parent ends FAILED (KILLED)
                # where its store still answers, not RUNNING for ever (no caller's fail() follows a finish)
                with contextlib.suppress(*mlflow_errors()):
                    self.client.set_terminated(self.run_id, status(True, interrupted_now()))
                self.run_id = None
                raise
            self.client.set_terminated(self.run_id, "FINISHED")
        self.run_id = None  # ended: no later end marks it failed

    def fail(self) -> None:
        """End the parent run FAILED, or KILLED when Ctrl-C stopped the group (called with the exception on
        its way out: a store that fails here too is said as a warning, not raised over it)."""
        if not self.active:
            return
        try:
            self.client.set_terminated(self.run_id, status(True, interrupted_now()))
        except mlflow_errors() as e:
            log.warning("mlflow: ending the %s parent run failed: %s", self.kind, reason(e))
        self.run_id = None

    @contextlib.contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        try:
            yield
        except mlflow_errors() as e:
            raise UserError(f"output.report_to: mlflow could not log {what}{self.where} ({reason(e)}); "
                            f"the {self.kind} runs' own files are written") from None


def _group_active(output: OutputConfig) -> bool:
    """Whether a group's parent run is this process's to open: mlflow tracks, and this is the main rank."""
    return "mlflow" in resolved_report_to(output) and int(os.environ.get("RANK", "0")) == 0


def start_group(config: Config, folder: Path, kind: str, name: str, params: dict[str, Any],
                resume: bool) -> TrackingGroup:
    """The parent run of a group of runs in ``folder`` (see :class:`TrackingGroup`), in the experiment
    ``output.experiment_name``, named ``name``, with ``params``. ``resume``: continue the parent
    recorded in ``folder``'s :data:`GROUP_FILE` (a resumed ``train --seeds``, a tune continuing its
    study), whose members keep their runs; else a new parent, recorded there in place of an earlier
    one, which gets the tag ``hftraining.superseded_by`` (its members were the folders a fresh start
    removed: two parents never claim one member, a member's parent being its one tag). A param longer
    than MLflow keeps (a large search space) is logged cut, as a run's is (:class:`MlflowTracker`):
    a warning names it and every param's whole value is the parent's artifact :data:`FULL_PARAMS`."""
    if not _group_active(config.output):
        return TrackingGroup(folder, kind)
    no_mlflow_telemetry()
    _require("mlflow", "mlflow")
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    uri, own = _group_store(folder)
    stored = read_tracking_group(folder)
    params, full, cut = cut_params(params, MAX_PARAM_VAL_LENGTH)
    opened = None  # the parent run once created or set RUNNING again
    try:
        try:
            if uri.startswith("sqlite:"):
                check_sqlite_store(uri)
            client = MlflowClient(tracking_uri=uri)
            if resume and stored and stored.get("kind") == kind:
                run_id = stored["run_id"]
                logged = client.get_run(run_id).data.params
                client.update_run(run_id, status="RUNNING")
                opened = run_id
                for k, v in params.items():  # a param cannot change: a differing value is a tag, as a resumed run's
                    if k in logged and logged[k] != v:
                        client.set_tag(run_id, f"resumed.{k}", v)
                params = {k: v for k, v in params.items() if k not in logged}
                exp_id = stored["experiment_id"]
            else:
                exp = client.get_experiment_by_name(config.output.experiment_name)
                if exp is not None:
                    exp_id = exp.experiment_id
                else:
                    artifacts = (own / "mlartifacts").resolve().as_uri() if own is not None else None
                    exp_id = client.create_experiment(config.output.experiment_name, artifact_location=artifacts)
                run_id = client.create_run(exp_id, run_name=name, tags={
                    "hftraining.group": kind, "hftraining.run_dir": str(folder.resolve())}).info.run_id
                opened = run_id
                if stored and stored.get("run_id"):
                    with contextlib.suppress(*mlflow_errors()):  # an earlier parent in another store, or deleted
                        client.set_tag(stored["run_id"], "hftraining.superseded_by", run_id)
                write_json(folder / GROUP_FILE, {"mlflow": {"tracking_uri": shown_url(uri), "experiment_id": exp_id,
                                                            "run_id": run_id, "kind": kind}})
            if params:
                client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
            log_full_params(client, run_id, full, cut, MAX_PARAM_VAL_LENGTH, f"the {kind} parent run")
        except BaseException:
            # Ctrl-C or the store failing after the parent was opened: it ends KILLED (FAILED) where its store
            # still answers, not RUNNING for ever (the group's fail() needs the group this returns)
            if opened is not None:
                with contextlib.suppress(*mlflow_errors()):
                    client.set_terminated(opened, status(True, interrupted_now()))
            raise
    except mlflow_errors() as e:
        if resume and stored:
            raise UserError(f"{folder / GROUP_FILE}: MLflow parent run {stored['run_id']} cannot be continued in "
                            f"{shown_url(uri)} ({reason(e)}); set MLFLOW_TRACKING_URI to the store that holds it, "
                            "or delete the file to start a new parent run") from None
        raise UserError(f"output.report_to: mlflow cannot start the {kind} parent run in {shown_url(uri)} "
                        f"({reason(e)}); check MLFLOW_TRACKING_URI") from None
    return TrackingGroup(folder, kind, client, run_id, uri, own)


def join_group(config: Config, folder: Path, kind: str) -> TrackingGroup:
    """The group recorded in ``folder`` by :func:`start_group` in another process (a tune worker's
    study), for its members only: the parent is ended by the process that started it. Inactive when
    none is recorded."""
    stored = read_tracking_group(folder) if _group_active(config.output) else None
    if not stored or stored.get("kind") != kind:
        return TrackingGroup(folder, kind)
    from mlflow.tracking import MlflowClient

    uri, own = _group_store(folder)
    return TrackingGroup(folder, kind, MlflowClient(tracking_uri=uri), stored["run_id"], uri, own)


def read_tracking_group(folder: Path) -> dict[str, Any] | None:
    """The parent run recorded in ``folder``'s :data:`GROUP_FILE` (its mlflow entry), or None."""
    path = Path(folder) / GROUP_FILE
    if not path.exists():
        return None
    try:
        entry = read_json(path)["mlflow"]
        if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str):
            raise ValueError("no mlflow run_id")
        return entry
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path}: cannot read ({e}); delete it to start a new parent run") from None


TRACKERS: dict[str, type[Tracker]] = {
    cls.name: cls for cls in (TensorBoardTracker, JsonlTracker, CsvTracker, MlflowTracker, WandbTracker)
}
"""Every ``output.report_to`` name → its backend (the names allowed by :class:`OutputConfig`)."""


def build_trackers(output: OutputConfig) -> list[Tracker]:
    """The backends of ``output.report_to`` (with the ``output.tensorboard`` alias), not started yet;
    a missing optional package is a UserError before any of them starts."""
    names = resolved_report_to(output)
    if "mlflow" in names:
        no_mlflow_telemetry()  # before MLflow is first imported
    for name, module in (("mlflow", "mlflow"), ("wandb", "wandb")):
        if name in names:
            _require(module, name)
    return [TRACKERS[n]() for n in names]
