"""A warning every run of a command would repeat (bf16 autocast computed in software) is said once per
command, and only by that command: a plain run in another thread of the process still says its own, and
``tune --workers`` says it when the first worker's trials draw a model without gradient steps. A model
fitted without gradient steps (ridge, LightGBM, the naive baselines) ignores ``model.loss_weights``, so a
weight of 0 there is no run that learns nothing."""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401  (the hftraining logger's records)

import hftraining.train.runner as runner  # noqa: E402
from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402

SAID = "on a CPU without bf16 instructions"
FAST = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.report=false", "evaluation.intervals=[]",
        "evaluation.max_test_windows=60", "evaluation.baseline_max_windows=300"]


def _said(records) -> list[str]:
    return [r.getMessage() for r in records if SAID in r.getMessage()]


@pytest.fixture
def software_bf16(monkeypatch):
    """A CPU without bf16 instructions, as the trainer asks."""
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)


def test_a_run_in_another_thread_says_its_own_warning_while_a_command_says_it_once(tmp_path, logged, software_bf16):
    """A command's said-once rule held for the whole process: a plain run built in another thread while a
    walk-forward, tune or ``train --seeds`` ran (library use) lost its warning."""
    from hftraining.workflows.train_run import said_once

    inside, done = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def command() -> None:
        try:
            with said_once():
                runner.build_trainer(load_config(None, tiny(tmp_path / "a", *FAST, "training.precision=bf16"))).close()
                inside.set()
                done.wait(60)
        except BaseException as e:  # noqa: BLE001 - reported by the test's thread
            failed.append(e)
            inside.set()

    t = threading.Thread(target=command)
    t.start()
    try:
        assert inside.wait(120) and not failed, failed
        runner.build_trainer(load_config(None, tiny(tmp_path / "b", *FAST, "training.precision=bf16"))).close()
    finally:
        done.set()
        t.join(60)
    assert len(_said(logged)) == 2, _said(logged)
    assert SAID in (tmp_path / "b" / "train.log").read_text()


class _InProcess:
    """``multiprocessing``'s spawn context as tune uses it, running each worker in this process, one
    after the other (the first worker takes the study's first trials)."""

    SimpleQueue = queue.SimpleQueue

    class Process:
        def __init__(self, target, args):
            self.target, self.args, self.exitcode = target, args, None

        def start(self) -> None:
            try:
                self.target(*self.args)
                self.exitcode = 0
            except SystemExit as e:
                self.exitcode = e.code

        def join(self) -> None:
            pass


def test_tune_workers_say_software_bf16_when_the_first_worker_draws_no_trained_model(tmp_path, logged, software_bf16,
                                                                                     monkeypatch):
    """With model.type searched, the first worker's trials may all draw a model without gradient steps (no
    warning): the other workers, told it was said, said nothing, and a bf16 run computed in software was
    never named."""
    pytest.importorskip("optuna")
    from hftraining.workflows import tune

    monkeypatch.setattr(tune.mp, "get_context", lambda method: _InProcess)
    cfg = {"model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
           "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
           "training": {"max_steps": 2, "logging_steps": 1, "save_steps": 0, "precision": "bf16"},
           "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
           "output": {"experiment_name": "bf16", "tensorboard": False, "progress_bar": "never"},
           # seed 3 draws zero (no gradient steps) for trial 0, the first worker's, and transformer for trial 1
           "tune": {"seed": 3, "sampler": "random", "pruner": "none", "search_space": {
               "model.type": {"choices": ["zero", "transformer"]}}}}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "2", "--workers", "2", "--out", str(tmp_path / "out")]) == 0
    trials = {p.name: yaml.safe_load((p / "config.json").read_text())["model"]["type"]
              for p in (tmp_path / "out").glob("trial-*") if (p / "config.json").is_file()}
    assert trials == {"trial-0000": "zero", "trial-0001": "transformer"}, trials
    assert len(_said(logged)) == 1, _said(logged)


@pytest.mark.parametrize("model_type", ["ridge", "lightgbm", "seasonal_naive"])
def test_a_model_without_gradient_steps_ignores_a_loss_weight_of_zero(tmp_path, model_type):
    """Its fit does not use the loss weights: a config shared with a network (``model.loss_weights={mse: 0}``)
    trained it as before, and was refused as a run that 'would learn nothing'."""
    if model_type == "lightgbm":
        pytest.importorskip("lightgbm")
    run = tmp_path / "run"
    assert main(["train", *tiny(run, *FAST, f"model.type={model_type}", "model.loss_weights={mse: 0.0}")]) == 0
    assert (run / "final" / "model.safetensors").is_file()


ETT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett"


@pytest.mark.skipif(not (ETT_DIR / "ETTh1.csv").exists(), reason=f"ETT CSVs not in {ETT_DIR}")
def test_bench_ett_bf16_warning_opens_the_first_cell_s_train_log(tmp_path, logged, software_bf16, monkeypatch, capsys):
    """The trainer's warning was in each cell's train.log; said in the command's words, before the trainer
    opened the log, it was on the console alone."""
    from hftraining.workflows import ett

    monkeypatch.setattr(ett, "cpu_has_bf16", lambda: False)
    rc = main(["bench", "ett", "--data", str(ETT_DIR), "--dataset", "ETTh1", "--horizon", "96", "--model", "dlinear",
               "--seq-len", "48", "--epochs", "1", "--batch-size", "512", "--evals-per-epoch", "1", "--no-ensemble",
               "--bf16", "--run-dir", str(tmp_path / "ett")])
    assert rc == 0, capsys.readouterr().err
    lines = (tmp_path / "ett" / "ETTh1-H96-dlinear" / "train.log").read_text().splitlines()
    assert "warning: --bf16 on a CPU without bf16 instructions" in lines[0], lines[:2]
