"""SIGTERM (a cluster pre-empting the job, `docker stop`, `kill`, torchrun stopping its workers) ends a command as
Ctrl-C does: one line ``hftraining: terminated (SIGTERM)``, exit 143, the MLflow run KILLED, train.log saying why,
no half-written checkpoint, and ``--resume`` continuing from the last checkpoint. It killed the process on the
spot: exit -15, the MLflow run RUNNING for ever, train.log silent, and ``tune --workers``' workers trained on
after their parent had gone. ``serve`` keeps uvicorn's graceful shutdown. Real ``hftraining`` processes, each
signalled once it has written a checkpoint or logged a step (no sleep decides when)."""

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from conftest import tiny  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LINE = "hftraining: terminated (SIGTERM)"
RUN = ("training.max_steps=60", "training.logging_steps=1", "training.save_steps=5", "evaluation.eval_steps=1000")
needs_mlflow = pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")


def _start(args: list[str], err: Path) -> subprocess.Popen:
    """``args`` started in a session of its own (its workers killed with it should a test fail), stderr into
    the file ``err`` (a pipe nobody read while the test waited could fill and stop the run)."""
    with open(err, "w") as f:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=ENV, start_new_session=True)


def _wait_for(proc: subprocess.Popen, err: Path, ready, what: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        assert proc.poll() is None, f"ended ({proc.returncode}) before {what}: {err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {limit} s"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen, err: Path, limit: float = 120) -> tuple[int, str]:
    """The exit status and stderr of ``proc``; its process group killed when it does not end in ``limit`` s."""
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {limit} s after SIGTERM: {err.read_text()[-3000:]}")
    return proc.returncode, err.read_text()


def _alive_in(session: int) -> list[int]:
    """The processes of the session ``session`` still running (not zombies)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            alive.append(int(stat.parent.name))
    return alive


def _checkpoint(run: Path, step: int):
    return lambda: (run / "checkpoints" / f"step-{step:08d}" / "trainer_state.json").is_file()


def _mlflow_status(run: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlruns.db').resolve()}")
    return client.get_run(json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]).info.status


@pytest.mark.slow  # a real run to its checkpoint, then its end: 20-40 s
@needs_mlflow
def test_sigterm_mid_run_ends_it_as_ctrl_c_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hftraining", "train", *tiny(run, *RUN, "output.report_to=[jsonl, mlflow]")]
    log = tmp_path / "err.txt"
    proc = _start(cmd, log)
    _wait_for(proc, log, _checkpoint(run, 10), "checkpoint 10")
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc, log)
    assert rc == 143, err[-3000:]
    assert err.splitlines()[-1] == LINE and "Traceback" not in err, err[-3000:]
    assert not (run / "final").exists()
    assert (run / "train.log").read_text().splitlines()[-1].endswith(" ERROR run stopped: Terminated: SIGTERM")
    assert _mlflow_status(run) == "KILLED"  # was RUNNING for ever
    held = [p.name for p in (run / "checkpoints").iterdir()]
    assert "step-00000010" in held and not [n for n in held if n.startswith(".")], held  # none half-written
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr and (run / "final" / "model.safetensors").is_file()
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps == sorted(set(steps)) and steps[-1] == 60


SECOND = '''
import os, signal, sys
from hftraining.cli import main
from hftraining.train import logging as run_logging

finish = run_logging.RunLogger.finish

def finish_signalled_again(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's second SIGTERM (or torchrun's, forwarded) as the run ends
    return finish(self, *args, **kwargs)

run_logging.RunLogger.finish = finish_signalled_again
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow  # a real run to its checkpoint, then its end: 20-40 s
@needs_mlflow
def test_a_second_sigterm_while_the_run_ends_does_not_cut_its_end_short(tmp_path):
    """A supervisor that signals every process of the job, and torchrun forwarding the SIGTERM it got, send a worker
    two: the second, arriving while the tracking runs end, must not stop that end half-way (the MLflow run left
    RUNNING, train.log without its last line, a traceback)."""
    driver = tmp_path / "driver.py"
    driver.write_text(SECOND)
    run = tmp_path / "run"
    log = tmp_path / "err.txt"
    proc = _start([sys.executable, str(driver), "train", *tiny(run, *RUN, "output.report_to=[jsonl, mlflow]")], log)
    _wait_for(proc, log, _checkpoint(run, 5), "checkpoint 5")
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc, log)
    assert rc == 143 and err.splitlines()[-1] == LINE and "Traceback" not in err, err[-3000:]
    assert (run / "train.log").read_text().splitlines()[-1].endswith(" ERROR run stopped: Terminated: SIGTERM")
    assert _mlflow_status(run) == "KILLED"


def test_sigterm_is_an_interrupt_once_and_the_handler_before_is_restored():
    """In the main thread: the first SIGTERM raises Terminated (a KeyboardInterrupt, so that everything that ends
    a run on Ctrl-C ends it here too), a later one while it unwinds nothing; the default is back afterwards."""
    from hftraining.train.logging import Terminated, sigterm_as_interrupt

    with sigterm_as_interrupt():
        with pytest.raises(Terminated) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted at once
        assert isinstance(raised.value, KeyboardInterrupt)
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: the stop is under way
        time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@needs_mlflow
def test_sigterm_inside_an_mlflow_write_still_ends_the_run_killed(tmp_path, monkeypatch):
    """A signal lands where the run spends its time: often inside MLflow's write of a step's metrics to its
    SQLite store, mid-statement. The interrupted cursor, held by the traceback on its way out, kept the
    database's write lock: the run's end waited MLflow's 20 s for it, failed, and left the run RUNNING for ever.
    Here the SIGTERM arrives as the second row of that insert is read."""
    from sqlalchemy.engine.default import DefaultDialect

    from hftraining.core.config import Config, OutputConfig
    from hftraining.train.logging import RunLogger, Terminated, sigterm_as_interrupt

    run = tmp_path / "run"
    logger = RunLogger(run, config=Config(output=OutputConfig(report_to=["mlflow"])), progress_bar="never")
    logger.log({"step": 1, "loss": 0.5, "grad_norm": 1.0, "learning_rate": 1e-3}, console=False)
    executemany, sent = DefaultDialect.do_executemany, []

    def signalled_mid_insert(self, cursor, statement, parameters, context=None):
        def rows():
            for i, row in enumerate(parameters):
                if i == 1 and not sent:
                    sent.append(statement)
                    os.kill(os.getpid(), signal.SIGTERM)
                yield row
        return executemany(self, cursor, statement, rows(), context)

    monkeypatch.setattr(DefaultDialect, "do_executemany", signalled_mid_insert)
    start = time.monotonic()
    with pytest.raises(Terminated):
        try:
            with sigterm_as_interrupt():
                logger.log({"step": 2, "loss": 0.4, "grad_norm": 0.9, "learning_rate": 2e-3}, console=False)
        finally:
            logger.close()
    assert sent, "no insert of several rows to interrupt"
    assert _mlflow_status(run) == "KILLED"
    assert time.monotonic() - start < 15  # not MLflow's 20 s wait for a lock


@pytest.mark.slow
def test_sigterm_to_tune_stops_its_workers_and_fails_their_trials(tmp_path):
    """`kill` of ``tune --workers 2``: the parent ended (exit -15) and its two workers, which the signal did not
    reach, trained on; now it is forwarded to them, each ends its trial as Ctrl-C does (told FAIL, saying why),
    and the parent exits 143 once they have."""
    optuna = pytest.importorskip("optuna")
    from test_tune_audit import TINY

    cfg = copy.deepcopy(TINY)
    cfg["training"].update(max_steps=100000, logging_steps=1, save_steps=5)
    cfg["evaluation"].update(eval_steps=100000)
    cfg["output"]["report_to"] = ["jsonl"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out, log = tmp_path / "o", tmp_path / "err.txt"
    proc = _start([sys.executable, "-m", "hftraining", "tune", "--config", str(tmp_path / "c.yaml"), "--trials", "2",
                   "--workers", "2", "--out", str(out), "--study", "s"], log)
    try:
        logs = [out / f"trial-{n:04d}" / "metrics.jsonl" for n in (0, 1)]
        _wait_for(proc, log, lambda: all(p.is_file() and p.read_text().count("\n") >= 2 for p in logs),
                  "a step of each trial")
        proc.send_signal(signal.SIGTERM)
        rc, err = _finish(proc, log, 60)
        workers_left = _alive_in(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # workers left training after their parent had gone
        except ProcessLookupError:
            pass
    assert not workers_left, f"{workers_left} worker(s) still training after the parent ended {rc}"
    assert rc == 143 and LINE in err.splitlines() and "Traceback" not in err, err[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [(t.state.name, t.user_attrs.get("fail_reason")) for t in trials] == [("FAIL", "Terminated: SIGTERM")] * 2
    for n in (0, 1):
        last = (out / f"trial-{n:04d}" / "train.log").read_text().splitlines()[-1]
        assert last.endswith(" ERROR run stopped: Terminated: SIGTERM"), last


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_without_a_hang(tmp_path):
    """torchrun forwards its SIGTERM to each rank (gloo, two CPU processes): each ends as on Ctrl-C, the main rank's
    train.log saying why, none waiting at a collective for a peer that has gone."""
    run = tmp_path / "run"
    log = tmp_path / "err.txt"
    proc = _start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                   "hftraining", "train", *tiny(run, *RUN, "training.max_steps=100000", "training.device=cpu",
                                                 "data.batch_size=8")], log)
    _wait_for(proc, log, _checkpoint(run, 5), "checkpoint 5")
    proc.send_signal(signal.SIGTERM)
    _, err = _finish(proc, log, 90)
    assert [l for l in err.splitlines() if l.startswith("hftraining:")] == [LINE, LINE], err[-3000:]
    assert (run / "train.log").read_text().splitlines()[-1].endswith(" ERROR run stopped: Terminated: SIGTERM")


@pytest.mark.slow
def test_serve_keeps_uvicorns_graceful_shutdown_on_sigterm(tmp_path):
    """uvicorn handles SIGTERM itself: it shuts down gracefully and ends the process by the signal, as a
    supervisor (systemd) takes for a clean stop; hftraining's SIGTERM handling does not stand in its way."""
    pytest.importorskip("uvicorn")
    run = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "hftraining", "train", *tiny(run, "training.max_steps=2",
                                                                                 "evaluation.eval_steps=0")],
                             capture_output=True, text=True, timeout=300, env=ENV)
    assert trained.returncode == 0, trained.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "err.txt"
    proc = _start([sys.executable, "-m", "hftraining", "serve", str(run), "--port", str(port)], log)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    _wait_for(proc, log, listening, "the server listening")
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc, log, 60)
    assert rc == -signal.SIGTERM, err[-3000:]
    assert "Finished server process" in err and "Traceback" not in err, err[-3000:]
