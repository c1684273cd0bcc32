"""A run whose own update makes its weights overflow (a learning rate far too large) is told apart from a
run that meets NaN windows: every later step is skipped as non-finite on finite windows, and neither the
abort nor the end of the run may blame windows, claim a checkpoint that holds the overflowed weights as
good, or end with exit 0 and a model that forecasts NaN."""

import logging

import numpy as np
import pytest
import torch

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.train import checkpoint as ckpt
from hftraining.train.runner import build_trainer
from hftraining.train.trainer import NonFiniteError
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_train_trainer import _inject_nan  # noqa: E402

QUICK = ["evaluation.report=false", "evaluation.eval_steps=0", "training.logging_steps=1"]


def _finite_step(trainer, path):
    """Whether the weights of checkpoint ``path`` give a finite loss and gradient norm on the first training windows."""
    ckpt.load_weights(path, trainer.model)
    trainer.model.zero_grad()
    b = trainer.data.train.batch(np.arange(32))
    loss, _ = trainer.forward_loss(b["x"], b.get("mask"), b["past"], b["y"])
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters()])  # as the step measures it
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(norm))


def test_the_abort_blames_the_weights_and_names_the_last_checkpoint_from_before_the_overflow(tmp_path):
    # SGD at rate 100: steps 1 and 2 are applied with a finite loss; after step 2's update every step's gradient
    # overflows on finite windows, and every step from 3 on is skipped. The error named the windows of step 5
    # and said "last good checkpoint kept" of a folder whose newest checkpoints (2 to 4) hold the diverged weights.
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "training.optimizer=sgd", "training.learning_rate=100", "training.weight_decay=0",
                                 "training.max_grad_norm=0", "training.max_steps=12", "training.save_steps=1",
                                 "training.save_total_limit=10", "training.max_consecutive_nonfinite=3"))
    tr = build_trainer(cfg)
    try:
        with pytest.raises(NonFiniteError) as err:
            tr.fit()
        msg = str(err.value)
        assert "last at step 5" in msg and "weights diverged at step 2's update" in msg, msg
        assert "training.learning_rate (100)" in msg and "symbol" not in msg and "window 1" not in msg, msg
        run = cfg.run_dir() / "checkpoints"
        assert [s for s, _ in ckpt.list_checkpoints(run)] == [1, 2, 3, 4]
        assert f"the last checkpoint with weights from before step 2: {run / 'step-00000001'}" in msg, msg
        # the claim is true: step 1's weights train, those saved after step 2's update do not
        assert _finite_step(tr, run / "step-00000001")
        assert not any(_finite_step(tr, run / f"step-0000000{s}") for s in (2, 3, 4))
    finally:
        tr.close()


def test_a_run_that_reaches_max_steps_on_overflowed_weights_exits_2_saying_so(tmp_path, capsys):
    # learning rate 1e30: step 1's update leaves weights near 1e30, every later step is skipped, and with
    # training.max_steps before the abort's limit the run exited 0, its eval metrics null, its forecast NaN
    run = tmp_path / "run"
    args = tiny(run, *QUICK, "training.learning_rate=1e30", "training.weight_decay=0", "training.max_steps=4", "training.save_steps=2")
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "last 3 optimizer steps (steps 2 to 4)" in err and "weights diverged at step 1's update" in err, err
    assert "training.learning_rate" in err and "forecast NaN/Inf on the validation windows" in err, err
    assert f"no checkpoint in {run / 'checkpoints'} holds weights from before step 1" in err, err
    assert not (run / "final").exists() and not (run / "eval.json").exists()


def test_a_run_ending_on_nan_windows_keeps_its_model_and_warns(tmp_path, caplog):
    # the last two steps' windows hold a NaN: the weights are step 4's, finite; the run ends as trained, but
    # says how many final steps were skipped and the key that stops such a run
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "training.max_steps=6", "training.save_steps=0",
                                 "training.learning_rate=0.003"))
    data = prepare(cfg.data)
    _inject_nan(data, bad_calls={5, 6})
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        train(cfg, data)
    said = [r.getMessage() for r in caplog.records if "optimizer steps" in r.getMessage()]
    assert len(said) == 1 and "last 2 optimizer steps (steps 5 to 6)" in said[0], said
    assert "NaN/Inf in their windows" in said[0] and "training.max_consecutive_nonfinite (5)" in said[0], said
    assert (cfg.run_dir() / "final" / "model.safetensors").exists()
