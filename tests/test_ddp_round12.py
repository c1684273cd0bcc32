"""A mistake found on one rank alone under torchrun (gloo, two CPU processes) is that rank's one line:
the rank that waited for it in a collective says in one line that another process stopped, instead of
printing a traceback of Gloo's "Connection closed by peer" that buries the line that says why."""

import os
import subprocess
import sys

from conftest import tiny  # noqa: E402

DRIVER = '''
import os, sys
import torch
import hftraining.train.trainer as trainer_mod
from hftraining.cli import main

compute_loss, calls = trainer_mod.compute_loss, [0]

def loss_that_runs_out_of_memory_on_rank_1(*args, **kwargs):
    calls[0] += 1
    if int(os.environ["RANK"]) == 1 and calls[0] == 3:  # the third batch of rank 1 alone does not fit
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    return compute_loss(*args, **kwargs)

trainer_mod.compute_loss = loss_that_runs_out_of_memory_on_rank_1
sys.exit(main(sys.argv[1:]))
'''



def failed_torchrun(driver, cfg: list[str]) -> tuple[str, list[str]]:
    """``driver train *cfg`` under torchrun on 2 CPU processes, which must fail → (its stderr, its
    ``hftraining: error:`` lines). torchrun looks at its workers every 3 s: a rank left waiting reacts to
    its lost peer before it is stopped."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "--monitor-interval=3", str(driver), "train", *cfg],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    return proc.stderr, [l for l in proc.stderr.splitlines() if l.startswith("hftraining: error:")]

def test_a_mistake_on_one_rank_is_its_line_and_the_waiting_rank_s_line_not_a_traceback(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cfg = tiny(tmp_path / "run", "training.max_steps=4", "training.save_steps=0", "training.logging_steps=2",
               "evaluation.eval_steps=0", "training.optimizer=sgd", "training.learning_rate=0.01",
               "training.device=cpu", "data.batch_size=8")
    err, lines = failed_torchrun(driver, cfg)
    assert len([l for l in lines if "data.batch_size" in l and "do not fit" in l]) == 1, err[-3000:]  # rank 1's
    assert [l for l in lines if "rank 0: another process of the group stopped" in l], err[-3000:]
    assert "trainer.py" not in err and not [l for l in err.splitlines() if l.startswith("[rank")], err[-3000:]
