"""A rank of a data-parallel group (gloo, two CPU processes) that stops on a mistake of its own outside
the training loop: the other rank says so in one line, at once, wherever it waited for it (a barrier of
the run's set-up, the main rank's own work), not with a traceback after ``training.ddp_timeout``."""

import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import tiny  # noqa: E402

DRIVER = '''
import os, sys
import hftraining.workflows.train_run as train_run
from hftraining.cli import main
from hftraining.core.errors import DataError

prepare, failing = train_run.prepare, int(sys.argv.pop(1))

def prepare_fails_on_one_rank(*args, **kwargs):
    if int(os.environ["RANK"]) == failing:  # a file this rank alone cannot read (its node's copy is damaged)
        raise DataError(f"prices.csv: cannot read on rank {failing} (simulated)")
    return prepare(*args, **kwargs)

train_run.prepare = prepare_fails_on_one_rank
sys.exit(main(sys.argv[1:]))
'''


def _torchrun(tmp_path, failing: int, monitor: int, *cfg: str) -> tuple[subprocess.CompletedProcess, float]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           f"--monitor-interval={monitor}", str(driver), str(failing), "train",
                           *tiny(tmp_path / "run", "training.max_steps=2", "training.save_steps=0",
                                 "evaluation.eval_steps=0", "training.device=cpu", "data.batch_size=8", *cfg)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    return proc, time.monotonic() - start


def _lines(err: str) -> list[str]:
    return [l for l in err.splitlines() if l.startswith("hftraining: error:")]


@pytest.mark.slow
def test_a_mistake_on_a_worker_rank_before_training_is_one_line_on_the_main_rank_too(tmp_path):
    """Rank 1 cannot read the data: its line says so, and rank 0, which waited for it at the barrier before the
    earlier run is cleared, printed Gloo's "Connection closed by peer" traceback instead of one line."""
    proc, _ = _torchrun(tmp_path, 1, 3)
    err = proc.stderr
    assert [l for l in _lines(err) if "cannot read on rank 1" in l], err[-3000:]
    assert [l for l in _lines(err) if "rank 0: another process of the group stopped" in l], err[-3000:]
    assert not [l for l in err.splitlines() if l.startswith("[rank")], err[-3000:]  # no rank's traceback


@pytest.mark.slow
def test_a_main_rank_that_stops_on_its_own_mistake_stops_the_waiting_rank_at_once(tmp_path):
    """Rank 0 cannot read the data while rank 1 waits for it at a barrier: rank 1 waited out the whole
    ``training.ddp_timeout`` (1800 s by default; on another node torchrun does not stop it) and then printed
    a traceback. It now stops with one line as soon as the main rank has left the group. torchrun looks at
    its workers every 20 s here: before that, nothing but the rank itself ends its wait."""
    proc, took = _torchrun(tmp_path, 0, 20, "training.ddp_timeout=600")
    err = proc.stderr
    assert [l for l in _lines(err) if "cannot read on rank 0" in l], err[-3000:]
    assert [l for l in _lines(err) if "rank 1: the main rank stopped while this rank waited for it" in l], err[-3000:]
    assert not [l for l in err.splitlines() if l.startswith("[rank")], err[-3000:]
    assert took < 300


def start_two_ranks(script: str) -> list[subprocess.Popen]:
    """Ranks 0 and 1 of a group of 2 running ``script``, launched without torchrun's agent (the environment
    set by hand, as a scheduler sets it): the group's store lives in rank 0's process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    return [subprocess.Popen([sys.executable, "-c", script], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]


def torchrun_into_held(out, held, monitor: int, *argv: str) -> tuple[subprocess.CompletedProcess, float]:
    """(the run, its seconds) of ``hftraining *argv`` under torchrun with 2 processes on a tiny config
    writing into ``out`` while another process holds the lock of the folder ``held`` (torchrun looks at its
    workers every ``monitor`` seconds)."""
    import fcntl

    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run already going into this folder
    try:
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             f"--monitor-interval={monitor}", "-m", "hftraining", *argv,
             *tiny(out, "training.max_steps=2",
                   "training.save_steps=0", "evaluation.eval_steps=0", "training.device=cpu", "data.batch_size=8",
                   "training.ddp_timeout=600")],
            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return proc, time.monotonic() - start
    finally:
        os.close(fd)


_RANK = '''
import os, sys
from hftraining.core.errors import UserError
from hftraining.train.distributed import barrier, init_distributed

info = init_distributed("cpu", 60.0)  # training.ddp_timeout: a minute
barrier(info)  # formed: both ranks are here
if info.is_main:
    os._exit(9)  # killed (the out-of-memory killer) while the other rank waits for its own work
try:
    barrier(info)
except UserError as e:
    print(f"one line: {e}", flush=True)
'''


@pytest.mark.slow
def test_a_rank_waiting_for_a_main_rank_killed_outside_torchrun_stops_in_one_line(tmp_path):
    """Launched without torchrun's agent (the environment set by hand or by a scheduler), the group's store
    lives in the main rank's process: killed, a rank waiting for it at a barrier failed with torch's
    DistNetworkError traceback ("Failed to recv, got 0 bytes"); it is one line naming the main rank."""
    procs = start_two_ranks(_RANK)
    start = time.monotonic()
    (_, _), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    assert procs[0].returncode == 9
    assert out1.startswith("one line: rank 1: the main rank stopped while this rank waited for it at a barrier"), err1[-2000:]
    assert "\n" not in out1.strip() and "Traceback" not in err1, err1[-2000:]
    assert time.monotonic() - start < 50  # not the minute of training.ddp_timeout
