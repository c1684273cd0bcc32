"""A main rank that stops on its own error between two process groups of one command (``train --seeds`` forms
a group per seed, after the group that checks the config): the other ranks, which go on to form the next group,
say so in one line at once, instead of waiting in torch's rendezvous until ``training.ddp_timeout``."""

import time

import pytest

from test_ddp_round17 import start_two_ranks, torchrun_into_held  # noqa: E402


def _lines(err: str) -> list[str]:
    return [l for l in err.splitlines() if l.startswith("hftraining: error:")]


@pytest.mark.slow
def test_seeds_whose_run_folder_is_held_stop_every_rank_in_one_line(tmp_path):
    """Another process holds the run folder: the main rank of ``train --seeds`` says so and stops after the
    config's check group, while rank 1 goes on to the first seed's group and waited there for it. torchrun
    looks at its workers every 20 s here (another node's agent does not stop it at all): before that, only
    the rank itself ends its wait, in one line naming the main rank."""
    out = tmp_path / "seeds"
    out.mkdir()
    proc, took = torchrun_into_held(out, out, 20, "train", "--seeds", "2")  # a train --seeds holds the folder
    err = proc.stderr
    assert proc.returncode != 0
    assert [l for l in _lines(err) if "another hftraining process is training into this run folder" in l], err[-3000:]
    assert [l for l in _lines(err) if "rank 1: the main rank stopped before it formed the next process group" in l], \
        err[-3000:]
    assert "SIGTERM" not in err, err[-3000:]  # not ended by torchrun's look at its workers
    assert not [l for l in err.splitlines() if l.startswith("[rank")], err[-3000:]
    assert took < 300


_RANK = '''
import sys, time
from hftraining.core.errors import UserError
from hftraining.train.distributed import barrier, cleanup, init_distributed

for g in range(2):  # two groups, one after the other: the main rank's own work before the second
    info = init_distributed("cpu", 20.0)  # training.ddp_timeout
    if info.is_main and g:
        time.sleep(1.5)
    barrier(info)
    cleanup(info)
    print(f"group {g}", flush=True)
if info.is_main:
    sys.exit(2)  # its own mistake (a run folder another process holds) before the third group
try:
    init_distributed("cpu", 20.0)
except UserError as e:
    print(f"one line: {e}", flush=True)
'''


@pytest.mark.slow
def test_a_rank_joining_a_group_the_main_rank_never_formed_stops_in_one_line_outside_torchrun(tmp_path):
    """Launched without torchrun's agent, the store lives in the main rank's process: a rank forming the next
    group connected anew to a store that had gone with it, retried until ``training.ddp_timeout`` and printed
    torch's traceback. Groups formed one after another (a main rank slower to come) still meet."""
    procs = start_two_ranks(_RANK)
    start = time.monotonic()
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    took = time.monotonic() - start
    assert procs[0].returncode == 2 and out0.splitlines() == ["group 0", "group 1"], err0[-2000:]
    lines = out1.splitlines()
    assert lines[:2] == ["group 0", "group 1"], err1[-2000:]
    assert len(lines) == 3 and lines[2].startswith(
        "one line: rank 1: the main rank stopped before it formed the next process group"), (out1, err1[-2000:])
    assert "Traceback" not in err1, err1[-2000:]
    assert took < 15  # not the 20 s of training.ddp_timeout
