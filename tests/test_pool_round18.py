"""A feature store build in worker processes (``data.num_workers``) stopped by a signal sent to the whole process
group (Ctrl-C in a terminal, Slurm's ``scancel``, systemd stopping a service): the workers get it too, and one
stopped while it sent a unit's rows back leaves part of that message in the pool's pipe. The build ends at once,
with its workers gone, instead of waiting for the rest of the message for ever (the command hung until SIGKILL).
Each case runs in a process of its own, which a hang cannot stop the tests with."""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import data_rows
from hftraining.data.synth import write_synth

SMALL = dict(sequence_length=20, prediction_horizon=3)

STOPPED = """
import multiprocessing, os, signal, sys, threading, time
from pathlib import Path

from hftraining.core.config import DataConfig
from hftraining.data import store
from hftraining.data.pipeline import data_rows

SIGNAL = getattr(signal, sys.argv[2])
workers = []
real_add = store._Sink.add


def add(self, sym, rows):
    # the build's first symbol is in; the signal reaches the group while the next ones are on their way
    real_add(self, sym, rows)
    if workers:
        return
    workers.extend(multiprocessing.active_children())
    sys.setswitchinterval(1000)  # the pool's reading thread gets no turn: a worker's rows fill the pipe, it waits
    end = time.monotonic() + 2
    while time.monotonic() < end:
        pass
    for p in workers:  # the group's signal, as a worker gets it
        os.kill(p.pid, SIGNAL)
    time.sleep(0.5)
    sys.setswitchinterval(0.005)
    raise KeyboardInterrupt  # as the command's own process gets it


if __name__ == "__main__":
    store._Sink.add = add
    root = Path(sys.argv[1])
    start = time.monotonic()
    try:
        data_rows(DataConfig(data_dir=str(root / "csv"), cache_dir=str(root / "cache"), num_workers=2,
                             sequence_length=20, prediction_horizon=3))
        print("not interrupted")
    except KeyboardInterrupt:
        alive = [p.pid for p in workers if p.is_alive()]
        print("interrupted", "workers alive:", alive, "threads:", threading.active_count())
"""


def _stopped(tmp_path, sig: str) -> subprocess.CompletedProcess:
    # three units: a short first one, whose rows come in while the workers still build the two long ones, which
    # they send back while the signal comes (no unit left after them whose rows could end a half-read message)
    write_synth(tmp_path / "csv", 3, 20_000, seed=2)
    first = tmp_path / "csv" / "SYN000.csv"
    first.write_text("\n".join(first.read_text().splitlines()[:500]) + "\n")
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(STOPPED))
    try:
        return subprocess.run([sys.executable, str(script), str(tmp_path), sig], capture_output=True, text=True,
                              timeout=25, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the interrupted build still ran 25 s later (hung): {e.stdout} {e.stderr}") from None


def test_sigterm_to_the_group_while_a_worker_sends_its_rows_ends_the_build_at_once(tmp_path):
    """SIGTERM reached a build worker as it sent a unit's rows back: the pool's shutdown waited for the rest of
    the message for ever."""
    done = _stopped(tmp_path, "SIGTERM")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("interrupted workers alive: []"), done.stdout + done.stderr[-3000:]


@pytest.mark.slow  # the SIGTERM case above runs in the default suite; this one the same path by SIGINT
def test_ctrl_c_to_the_group_while_a_worker_sends_its_rows_ends_the_build_at_once(tmp_path):
    """Ctrl-C reaches every process of the terminal's foreground group: a worker interrupted in the middle of
    sending its rows sent its error after them, and the pool read a message that never ended."""
    done = _stopped(tmp_path, "SIGINT")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("interrupted workers alive: []"), done.stdout + done.stderr[-3000:]


def test_a_build_in_workers_is_unchanged(tmp_path):
    """The entries the workers build are those this process builds, byte for byte."""
    write_synth(tmp_path / "csv", 5, 400, seed=4)
    d = DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=str(tmp_path / "one"), **SMALL)
    one, _ = data_rows(d)
    pool, rep = data_rows(dataclasses.replace(d, num_workers=2, cache_dir=str(tmp_path / "pool")))
    assert rep["cache"] == "miss" and one.symbols == pool.symbols
    for name in ("features", "returns", "times", "close"):
        np.testing.assert_array_equal(np.asarray(getattr(one, name)), np.asarray(getattr(pool, name)))
    for f in sorted(p for p in (tmp_path / "one").rglob("*") if p.suffix in (".f32", ".i64", ".f64")):
        twin = tmp_path / "pool" / f.relative_to(tmp_path / "one")
        assert twin.read_bytes() == f.read_bytes(), f.name
