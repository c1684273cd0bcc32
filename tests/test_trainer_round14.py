"""The trainer's edges: fp16 under DDP counts a NaN of one rank alike on every rank; a checkpoint of another run
folder starts this folder's logs and tracking runs over; ``gpro`` with ``implementation: numba`` on a device other
than the CPU is a config error before the data are read."""

import csv
import logging
from importlib.util import find_spec

import pytest
import torch

from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError
from hftraining.core.jsonio import read_jsonl
from hftraining.train.distributed import DistInfo
from hftraining.train.runner import training_run
from hftraining.train.trainer import check_config
from hftraining.train.tracking import read_tracking
from conftest import tiny  # noqa: E402
from test_ddp_round12 import failed_torchrun  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401 - a fixture
from test_train_tracking_audit import no_mlflow_env  # noqa: E402,F401 - a fixture

DRIVER = '''
import os, sys
import torch
import hftraining.train.trainer as trainer_mod
from hftraining.cli import main

Trainer = trainer_mod.Trainer
init, batch = Trainer.__init__, Trainer._batch

def init_with_scaler(self, *args, **kwargs):
    init(self, *args, **kwargs)
    # fp16 needs CUDA; on the CPU a CPU GradScaler stands in for its loss scaler
    self.scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)

def batch_nan_on_rank_1(self, idx):
    b = batch(self, idx)
    if int(os.environ["RANK"]) == 1 and self.state.global_step >= 2:  # steps 3 on: rank 1's windows hold a NaN
        b["x"] = b["x"].clone()
        b["x"][0, 0, 0] = float("nan")
    return b

Trainer.__init__, Trainer._batch = init_with_scaler, batch_nan_on_rank_1
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow  # over 10 s here; `make test-all` runs it
def test_fp16_ddp_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Under fp16 a skipped step with a finite loss and a scale above 1 is the scaler's overflow, not counted: the
    loss looked at was the rank's own, so the rank with the finite loss did not count a NaN of the other rank's
    windows, the other stopped at max_consecutive_nonfinite and the first waited for it in the next collective
    ("another process of the group stopped")."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cfg = tiny(tmp_path / "run", "training.max_steps=12", "training.save_steps=0", "training.logging_steps=4",
               "evaluation.eval_steps=0", "evaluation.report=false", "training.max_consecutive_nonfinite=3",
               "training.optimizer=sgd", "training.learning_rate=0.01", "training.device=cpu", "data.batch_size=8")
    err, lines = failed_torchrun(driver, cfg)
    stopped = [l for l in lines if "training stopped: 3 optimizer steps in a row had a non-finite loss" in l]
    assert len(stopped) == 2, err[-3000:]  # every rank's own line, none waiting for another
    assert all("last at step 5," in l for l in stopped), stopped
    assert not [l for l in lines if "another process of the group stopped" in l], err[-3000:]
    # what follows the windows each rank names (its own: the NaN may be in any) is the same on both
    assert len({l.split("more)", 1)[1] for l in stopped}) == 1, stopped


def test_gpro_numba_on_a_cuda_device_is_a_config_line_before_the_data_are_read(tmp_path, monkeypatch, capsys):
    """GPro's numba kernel updates CPU tensors only: on CUDA the run read its data and then stopped at its first
    step with a RuntimeError traceback. The device is faked (the check reads the resolved device alone)."""
    import hftraining.train.runner as runner_mod
    import hftraining.workflows.train_run as train_run_mod
    from hftraining.cli import main

    def no_data(*args, **kwargs):
        raise AssertionError("the data were read")

    monkeypatch.setattr(train_run_mod, "init_distributed", lambda *a, **k: DistInfo(device=torch.device("cuda", 0)))
    monkeypatch.setattr(train_run_mod, "prepare", no_data)
    monkeypatch.setattr(runner_mod, "prepare", no_data)
    rc = main(["train", *tiny(tmp_path / "run", "training.optimizer=gpro", "training.precision=fp32",
                              "training.optimizer_kwargs={implementation: numba}")])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and "training.optimizer_kwargs.implementation" in err and "cuda:0" in err, err
    assert "'auto'" in err and "training.device=cpu" in err, err


def test_gpro_numba_on_the_cpu_and_gpro_auto_on_cuda_pass_the_check():
    cpu, cuda = DistInfo(device=torch.device("cpu")), DistInfo(device=torch.device("cuda", 0))
    check_config(load_config(None, tiny(None, "training.optimizer=gpro", "training.optimizer_kwargs={implementation: numba}")), cpu)
    check_config(load_config(None, tiny(None, "training.optimizer=gpro", "training.precision=fp32")), cuda)
    with pytest.raises(ConfigError, match=r"^training\.optimizer_kwargs\.implementation: 'numba'"):
        check_config(load_config(None, tiny(None, "training.optimizer=GPro", "training.precision=fp32",
                                            "training.optimizer_kwargs={implementation: numba}")), cuda)


FORK = ("training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=2", "training.logging_steps=2",
        "output.report_to=[jsonl, csv, mlflow]")


def _steps(run_dir):
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        csv_steps = sorted({int(r["step"]) for r in csv.DictReader(f)})
    return sorted({r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")}), csv_steps


@pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")
def test_a_checkpoint_of_another_run_folder_starts_this_folder_s_logs_and_tracking_runs_over(no_mlflow_env, tmp_path,
                                                                                           logged):
    """Forking a run (its step-6 checkpoint) into a folder holding another run set that run's checkpoints aside, but
    its metrics.jsonl and metrics.csv records up to step 6 stayed, mixed with the fork's, and tracking.json's id made
    the fork continue that run's MLflow run (its history of steps 2 to 6 shown as the fork's)."""
    from mlflow.tracking import MlflowClient

    source, fork = tmp_path / "source", tmp_path / "fork"
    with training_run(load_config(None, tiny(source, *FORK))):
        pass
    with training_run(load_config(None, tiny(fork, *FORK, "training.seed=7"))):
        pass
    other_id = read_tracking(fork)["mlflow"]["run_id"]
    other = read_jsonl(fork / "metrics.jsonl")
    logged.clear()
    with training_run(load_config(None, tiny(fork, *FORK, "training.resume_from_checkpoint="
                                             f"{source / 'checkpoints' / 'step-00000006'}"))) as run:
        assert run.state.global_step == 8
    assert _steps(fork) == ([8], [8])  # the fork's own steps alone
    assert read_jsonl(fork / "metrics.jsonl.superseded") == other  # the other run's, kept aside
    run_id = read_tracking(fork)["mlflow"]["run_id"]
    assert run_id != other_id
    client = MlflowClient(tracking_uri=f"sqlite:///{(fork / 'mlruns.db').resolve()}")
    assert sorted(m.step for m in client.get_metric_history(run_id, "eval_loss")) == [8]
    assert sorted(m.step for m in client.get_metric_history(other_id, "eval_loss")) == [2, 4, 6, 8]  # untouched
    warned = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "another run folder" in warned[0] and "metrics.jsonl" in warned[0], warned
    assert "tracking.json" in warned[0] and "from step 7 on" in warned[0], warned
    # the next --resume continues the fork, in its own tracking run
    with training_run(load_config(None, tiny(fork, *FORK, "training.max_steps=10",
                                             "training.resume_from_checkpoint=auto"))):
        pass
    assert _steps(fork) == ([8, 10], [8, 10]) and read_tracking(fork)["mlflow"]["run_id"] == run_id


def test_a_checkpoint_of_another_run_folder_into_a_new_folder_sets_nothing_aside(tmp_path, logged):
    source, fork = tmp_path / "source", tmp_path / "fork"
    args = ("training.max_steps=4", "evaluation.eval_steps=2", "training.save_steps=2", "training.logging_steps=2",
            "output.report_to=[jsonl, csv]")
    with training_run(load_config(None, tiny(source, *args))):
        pass
    logged.clear()
    with training_run(load_config(None, tiny(fork, *args, "training.max_steps=6",
                                             f"training.resume_from_checkpoint={source / 'checkpoints' / 'step-00000002'}"))):
        pass
    assert _steps(fork) == ([4, 6], [4, 6])
    assert not [p for p in fork.iterdir() if p.name.endswith(".superseded")]
    assert not [r for r in logged if r.levelno == logging.WARNING]


@pytest.mark.parametrize("batching,key", [("windows", "data.batch_size"), ("dates", "data.dates_per_batch")])
def test_out_of_memory_names_the_key_that_sizes_the_micro_batch(tmp_path, monkeypatch, batching, key):
    """Under date batches a micro-batch holds data.dates_per_batch dates' windows and data.batch_size is not read
    (a config that sets it there is refused): running out of memory said to lower data.batch_size."""
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=1", "training.save_steps=0",
                                 "evaluation.eval_steps=0", f"data.batching={batching}"))
    tr = build_trainer(cfg)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(trainer_mod, "compute_loss", out_of_memory)
    tr.model.train()
    with pytest.raises(trainer_mod.OutOfMemory) as err:
        tr.train_step()
    msg = str(err.value)
    assert msg.startswith(f"{key}: ") and f"lower {key}" in msg, msg
    assert ("data.batch_size" in msg) == (batching == "windows"), msg
