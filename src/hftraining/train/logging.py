"""Run logging: console (progress bar on a terminal, plain lines otherwise), train.log, and the
tracking backends of ``output.report_to`` (:mod:`hftraining.train.tracking`: TensorBoard,
metrics.jsonl, metrics.csv, MLflow, W&B). Only rank 0 logs."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hftraining.core.config import Config
from hftraining.core.errors import UserError
from hftraining.core.logs import handlers_reached, keeps_only
from hftraining.train.tracking import Tracker, build_trackers

log = logging.getLogger("hftraining")


class _Held(logging.Handler):
    """Keeps the records said before a run's train.log opens (see :func:`held_records`)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        # the only handler of a library use without logging set up: what logging's last resort would have
        # printed (a warning on stderr) is printed still, not kept for a train.log that may never open
        _last_resort(record, self)


def _last_resort(record: logging.LogRecord, ours: logging.Handler) -> None:
    """Hand ``record`` to logging's last resort (a warning on stderr) when ``ours`` is the only handler
    it reaches: a handler of ours must not silence what Python would have printed without it."""
    last = logging.lastResort
    if last is not None and record.levelno >= last.level and not _other_handler(record.name, ours):
        last.handle(record)


class _RunFileHandler(logging.FileHandler):
    """train.log; in library use without logging set up, its warnings reach stderr too (see :class:`_Held`)."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        _last_resort(record, self)

    def write(self, record: logging.LogRecord) -> None:
        """The file only: a line the console has already shown (or the error on its way to the caller)."""
        super().emit(record)


def _other_handler(name: str, held: logging.Handler) -> bool:
    """Whether a record of logger ``name`` reaches a handler besides ``held`` (as ``Logger.callHandlers`` walks)."""
    # a handler that only keeps records (the feature store's, for its entry) shows nothing either
    return any(h is not held and not keeps_only(h) for h in handlers_reached(name))


_held: _Held | None = None


@contextmanager
def held_records() -> Iterator[None]:
    """Keep what the ``hftraining`` logger says from here until a :class:`RunLogger` opens train.log,
    which then writes it first: train.log is the console log, and the lines of a run said before its
    trainer exists (the data's warnings, ``output.overwrite`` starting over, which checkpoint a resume
    takes) were only on the console. Nested holds are one hold."""
    global _held
    if _held is not None:
        yield
        return
    _held = held = _Held()
    log.addHandler(held)
    try:
        yield
    finally:
        log.removeHandler(held)
        _held = None


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted, so that a caller
    who replaces it (a test capturing output, an embedding application) never leaves the handler
    writing to a closed stream."""

    _hft_console = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it: nothing to keep
        pass


def setup_console_logging(level: int = logging.INFO) -> None:
    """Plain ``message`` lines on stderr for the ``hftraining`` logger (idempotent)."""
    if not any(getattr(h, "_hft_console", False) for h in log.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(level)
    log.propagate = False


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster pre-empting the job, ``docker stop``, ``kill``, torchrun stopping its workers), raised
    in the main thread as the user's Ctrl-C is (:func:`sigterm_as_interrupt`): everything that ends a run on
    Ctrl-C ends it here too (MLflow's KILLED, a checkpoint written whole or not at all, train.log's last line)."""

    def __init__(self) -> None:
        super().__init__("SIGTERM")


_terminated = False
"""Whether the SIGTERM of this :func:`sigterm_as_interrupt` has been raised already."""

_not_ours: tuple = ()
"""The processes started before :func:`sigterm_as_interrupt` was entered: the program's own (one that calls the
CLI's ``main`` from Python), which the SIGTERM is not forwarded to."""


def _forwarded_to(child) -> bool:
    """Whether the SIGTERM is passed on to the child process ``child``: one this command started, not a worker of
    a ``concurrent.futures`` pool (the feature store's build workers). A pool's worker stopped while it sent a
    result back left part of it in the pipe, and the pool's shutdown, on the way out, waited for the rest for
    ever: the command hung, and as a second SIGTERM is ignored, only SIGKILL ended it. The pool ends its own
    workers as the exception passes: they finish the units they hold, then exit."""
    if any(child is c for c in _not_ours):
        return False
    pool = sys.modules.get("concurrent.futures.process")  # not imported: no pool running
    # each running pool's manager thread holds its worker processes (``executor._processes``)
    managers = list(getattr(pool, "_threads_wakeups", {}).keys()) if pool is not None else []
    return not any(child is w for m in managers for w in list(getattr(m, "processes", {}).values()))


def _on_sigterm(signum, frame) -> None:
    """The first SIGTERM: forwarded to the worker processes this command started (tune's, which a terminal's
    Ctrl-C reaches with their parent but a ``kill`` of the parent does not: they trained on, and the parent
    waited for them as it exited; :func:`_forwarded_to`), then :class:`Terminated` raised. A later one (a
    supervisor that signals every process of the job and torchrun forwarding its own) is ignored: the run is
    already ending, and stopping its end half-way left the MLflow run RUNNING; SIGKILL (or Ctrl-C) still ends
    it at once."""
    global _terminated
    if _terminated:
        return
    _terminated = True
    import multiprocessing

    for child in multiprocessing.active_children():
        if not _forwarded_to(child):
            continue
        try:
            child.terminate()
        except (OSError, ValueError, AttributeError):  # gone meanwhile, or closed
            pass
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread instead
    of killing the process on the spot, where the MLflow run stayed RUNNING for ever and train.log did not
    say why it ended. Outside the main thread, or where SIGTERM already has a handler (or is ignored) other
    than the default, nothing changes; the handler before is restored on the way out."""
    global _terminated, _not_ours
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    mp = sys.modules.get("multiprocessing")  # not imported yet: no process started before
    _not_ours = tuple(mp.active_children()) if mp is not None else ()
    _terminated = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _terminated = False
        _not_ours = ()


@contextmanager
def sigterm_by_default() -> Iterator[None]:
    """Inside :func:`sigterm_as_interrupt`, SIGTERM's default back for a while: for a server that handles
    SIGTERM itself (uvicorn: a graceful shutdown, then the signal raised again to the handler it found, so
    that the process ends by SIGTERM, which a supervisor such as systemd counts a clean stop, not exit 143)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        yield
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _on_sigterm)


def stopped_by(error: BaseException) -> str:
    """One line for the exception that stopped a run: a UserError's own line, else the type and the
    first line of its message."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, UserError) and first:
        return first
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _release_interrupted_calls(error: BaseException) -> None:
    """Drop what the calls that Ctrl-C (or SIGTERM) interrupted still hold through ``error``'s traceback: the
    locals of their frames, done with. A write to MLflow's SQLite store interrupted mid-statement kept its
    cursor there, and with it the database's write lock: the run's end, logged next, waited 20 s for that lock,
    failed, and left the run RUNNING for ever. The frames still running (the caller's) are left as they are."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__context__
    gc.collect()  # a cursor in a reference cycle is finalised now, not at some later collection


class RunLogger:
    """Hands each record to the tracking backends of ``config.output.report_to`` and a line to the
    console/train.log. ``resume_step``: the checkpoint step a resumed run continues from (None: a
    fresh run). ``config``: the run's config (default: the defaults). ``resolved``: the values the run
    uses where the config may say ``auto`` (``{"training.precision": "bf16", ...}``), the params'
    (:func:`~hftraining.train.tracking.run_params`)."""

    def __init__(self, run_dir: Path, enabled: bool = True, config: Config | None = None,
                 progress_bar: str = "auto", total_steps: int = 0, resume_step: int | None = None,
                 resolved: dict[str, Any] | None = None):
        self.enabled = enabled
        self.run_dir = run_dir
        self._file_handler: _RunFileHandler | None = None
        self._trackers: list[Tracker] = []
        self._ended = False
        self._bar = None
        if not enabled:
            return
        config = config if config is not None else Config()
        trackers = build_trackers(config.output)  # a missing optional package fails here, before any file
        run_dir.mkdir(parents=True, exist_ok=True)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)  # train.log gets INFO even when the library is used without the CLI
        fh = _RunFileHandler(run_dir / "train.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        if _held is not None:  # what the run said before train.log opened, first (held_records)
            log.removeHandler(_held)
            for record in _held.records:
                fh.write(record)  # shown on the console (or by the last resort) when it was said
            _held.records.clear()
        log.addHandler(fh)
        self._file_handler = fh
        try:
            for t in trackers:
                t.on_start(run_dir, config, resume_step, resolved)
                self._trackers.append(t)
        except BaseException:
            self.close()
            raise
        use_bar = progress_bar == "always" or (progress_bar == "auto" and sys.stderr.isatty())
        if use_bar and total_steps:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr)

    def info(self, msg: str, *args: Any) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg % args if args else msg, file=sys.stderr)
            if self._file_handler:  # the bar owns the terminal: write the file directly
                self._file_handler.write(logging.LogRecord("hftraining", logging.INFO, "", 0, msg, args, None))
        else:
            log.info(msg, *args)

    def log(self, record: dict[str, Any], console: bool = True) -> None:
        """One record (``step`` and its metrics) to every tracking backend, and a console line."""
        if not self.enabled:
            return
        step = int(record["step"])
        for t in self._trackers:
            t.on_log(step, record)
        if console:
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            if self._bar is not None:
                self._bar.set_postfix_str(
                    " ".join(f"{k}={record[k]:.3g}" for k in ("loss", "learning_rate", "samples_per_second") if k in record),
                    refresh=False,
                )
                if any(k.startswith("eval_") for k in record):
                    self.info(text)
                elif self._file_handler:  # the bar shows it; train.log keeps the line, as without a bar
                    self._file_handler.write(logging.LogRecord("hftraining", logging.INFO, "", 0, text, None, None))
            else:
                self.info(text)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log_test(self, step: int, metrics: dict[str, float]) -> None:
        """The finished run's test-split numbers (logged as ``test_*``) to every tracking backend."""
        for t in self._trackers if self.enabled else ():
            t.on_eval(step, metrics)

    def finish(self, verdict: str | None = None, artifacts: list[Path] | tuple[Path, ...] = (), failed: bool = False,
               interrupted: bool = False) -> None:
        """End the tracking runs once: the verdict, the files and folders to attach, the status (``failed``:
        stopped by an exception; ``interrupted``: by the user's Ctrl-C, which MLflow shows KILLED)."""
        if self._ended:
            return
        self._ended = True
        failed = failed or interrupted
        error = None
        stop: KeyboardInterrupt | None = None
        for t in self._trackers:  # every backend gets its end, even when one of them fails
            try:
                t.on_end(verdict, [Path(p) for p in artifacts], failed, interrupted)
            except KeyboardInterrupt as e:
                # Ctrl-C while a backend ended (an upload): the backends after it end too, stopped by the user
                # (MLflow's KILLED, not RUNNING for ever), with nothing more uploaded; the Ctrl-C goes on after
                stop = stop or e
                failed = interrupted = True
                artifacts = ()
            except Exception as e:
                error = error or e
                if failed:  # the run's own exception is on its way out: do not hide it
                    log.warning("%s: ending the tracking run failed: %s", t.name, e)
        if stop is not None:
            raise stop
        if error is not None and not failed:
            raise error

    def close(self) -> None:
        """Close everything; tracking runs not :meth:`finish`-ed yet end here, as failed when an
        exception is on its way out (this is called from the run's ``finally``; KILLED in MLflow for
        Ctrl-C), and train.log ends with the line that says why, as the console does (the CLI's error
        line is printed after)."""
        error = sys.exc_info()[1]
        if isinstance(error, KeyboardInterrupt):
            _release_interrupted_calls(error)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled:
            self.finish(failed=error is not None, interrupted=isinstance(error, KeyboardInterrupt))
        if self._file_handler is not None and error is not None:
            self._file_handler.write(logging.LogRecord("hftraining", logging.ERROR, "", 0, "run stopped: %s",
                                                      (stopped_by(error),), None))
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
