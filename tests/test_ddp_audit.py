"""Data-parallel waits and samplers: a rank waits for the main rank's own work as long as it takes,
and the date sampler's errors name dates."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from hftraining.core.errors import DataError
from hftraining.data.windows import DateSampler

_RANK = '''
import os, sys, time
from pathlib import Path
from hftraining.train import distributed
from hftraining.train.distributed import barrier, init_distributed

ready = Path(sys.argv[1])
(ready / os.environ["RANK"]).touch()
while len(list(ready.iterdir())) < 2:  # both imported: the group forms well within the timeout
    time.sleep(0.01)
info = init_distributed("cpu", 1.5)  # training.ddp_timeout: 1.5 s
if info.is_main:
    time.sleep(3.0)  # the main rank's own work (the test evaluation at the end of a run)
barrier(info)
barrier(info)  # a second barrier right after: the first one's signal does not count for it
print("waited for the main rank", flush=True)
if info.is_main:
    distributed._Pulse.stop()  # as if its process were gone, the store still up
    time.sleep(5.0)
else:
    barrier(info)
'''


@pytest.mark.slow  # over 10 s here; `make test-all` runs it
def test_ranks_wait_for_the_main_rank_s_own_work_beyond_ddp_timeout(tmp_path):
    """The end of a run: rank 0 evaluates the test split and writes the report while the others wait at a
    barrier. Bounded by ``training.ddp_timeout``, that wait failed rank 1 once the evaluation outlasted it, and
    torchrun then killed rank 0 before eval.json was written. Two gloo processes with a 1.5 s timeout: the main
    rank busy for 3 s is now waited for; a main rank without a sign of life still fails the wait."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2"}
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, str(tmp_path)], text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    assert out0.splitlines() == out1.splitlines() == ["waited for the main rank"], err1[-2000:]
    assert procs[0].returncode == 0, err0[-2000:]
    assert procs[1].returncode != 0 and "the main rank gave no sign of life for 1.5 s" in err1, err1[-2000:]


def test_date_sampler_with_fewer_dates_than_processes_names_dates():
    """``data.batching: dates`` gives every process whole dates: a training split of many windows on one
    date cannot feed two processes, and the error said the split had "1 window"."""
    times = np.zeros(10, dtype=np.int64)  # ten symbols' windows, all of one date
    with pytest.raises(DataError, match="10 windows on 1 date") as e:
        DateSampler(times, 1, seed=0, rank=0, world_size=2)
    assert "data.batching" in str(e.value) and "\n" not in str(e.value)
    assert len(DateSampler(np.repeat([0, 1], 5), 1, seed=0, rank=1, world_size=2).next_batch()) == 5


def test_one_named_gpu_for_several_processes_is_a_config_error(monkeypatch):
    """``training.device=cuda:0`` under torchrun puts every rank on GPU 0 (NCCL: "Duplicate GPU
    detected", a traceback); it is a one-line error before any group is formed."""
    from hftraining.core.errors import ConfigError
    from hftraining.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^training.device: 'cuda:0' names one GPU for the 2 processes of this node"):
        init_distributed("cuda:0", 10.0)
    # one process per node (a GPU each): cuda:0 is that node's GPU, not refused for being named
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError) as e:  # here for another reason: no CUDA, or no torchrun rendezvous
        init_distributed("cuda:0", 10.0)
    assert "names one GPU" not in str(e.value)
