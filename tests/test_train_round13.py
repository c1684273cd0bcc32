"""How a training run ends: a run whose last applied update made its weights diverge, with no step after it
counted as non-finite (it was the run's last step, or the steps after it were fp16's loss-scaler skips),
stops with the divergence error (exit 2) instead of exiting 0 with a model that forecasts NaN; a healthy
fp16 run whose last steps are ordinary scaler skips keeps its model."""

import math

import pytest
import torch
from safetensors.torch import load_file

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.train import checkpoint as ckpt
from hftraining.train.runner import build_trainer
from hftraining.train.trainer import NonFiniteError
from conftest import tiny  # noqa: E402

QUICK = ["evaluation.report=false", "evaluation.eval_steps=0", "training.logging_steps=1"]


def _fp16_stand_in(tr, init_scale):
    """fp16 needs CUDA; on the CPU a CPU GradScaler stands in for its loss scaler and validation runs under
    fp16 autocast, as an fp16 run's does (the training forward stays fp32: its loss is finite while the
    scaled gradients overflow, as fp16's do before its scale is down to 1)."""
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    tr.precision = "fp16"


def test_an_fp16_run_ending_on_loss_scaler_skips_after_a_diverging_update_exits_2_naming_that_update(tmp_path):
    # SGD at rate 100: steps 1 and 2 are applied; after step 2's update every gradient overflows on finite
    # windows with a finite loss. From scale 65536 the scaler skips steps 3 to 8 as its own overflows (it
    # would take 16 before a step counted), so no step was non-finite "in a row": the run ended with exit 0
    # and a final model whose fp16 forecasts are Inf (eval.json null)
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "training.optimizer=sgd", "training.learning_rate=100", "training.weight_decay=0",
                                 "training.max_grad_norm=0", "training.max_steps=8", "training.save_steps=1",
                                 "training.save_total_limit=10"))
    tr = build_trainer(cfg)
    _fp16_stand_in(tr, 65536.0)
    try:
        with pytest.raises(NonFiniteError) as err:
            tr.fit()
        msg = str(err.value)
        st = tr.state
        assert (st.updated_step, st.skipped_steps, st.consecutive_nonfinite) == (2, 6, 0)  # every skip the scaler's
        assert not math.isfinite(tr._last_eval[1]["mse"])
        assert msg.startswith("training diverged: the final weights forecast NaN/Inf on the validation windows"), msg
        assert "made by step 2's update, the last the optimizer applied" in msg, msg
        assert "steps 3 to 8 were skipped by fp16's loss scaler" in msg and "training.learning_rate (100)" in msg, msg
        run = cfg.run_dir() / "checkpoints"
        assert f"the last checkpoint with weights from before step 2: {run / 'step-00000001'}" in msg, msg
        assert "\n" not in msg
    finally:
        tr.close()


def test_a_run_whose_very_last_update_diverges_exits_2_without_a_final_model(tmp_path, capsys):
    # learning rate 1e30 and one step: the step's update leaves weights near 1e30 that forecast NaN, and no step
    # after it is skipped; the run exited 0, its eval metrics null (with 4 steps it was already an error), and so
    # did its --resume
    run = tmp_path / "run"
    args = tiny(run, *QUICK, "training.learning_rate=1e30", "training.weight_decay=0", "training.max_steps=1")
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged: the final weights" in err and "made by step 1's update" in err, err
    assert "fp16" not in err and "training.learning_rate (1e+30)" in err, err
    assert f"no checkpoint in {run / 'checkpoints'} holds weights from before step 1" in err, err
    assert not (run / "final").exists() and not (run / "eval.json").exists()
    # its --resume starts at its last step (the checkpoint saved there) and trains nothing: the same error, no final/
    assert main(["train", *args, "training.resume_from_checkpoint=auto"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == err
    assert not (run / "final").exists()


def test_a_diverged_last_update_under_load_best_model_at_end_keeps_the_best_checkpoint_with_a_warning(tmp_path, caplog):
    # the best step's checkpoint is the final model, not the diverged weights: no error, said in a warning
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "training.optimizer=sgd", "training.learning_rate=100", "training.weight_decay=0",
                                 "training.max_grad_norm=0", "training.max_steps=8", "training.save_steps=0",
                                 "evaluation.eval_steps=1", "training.load_best_model_at_end=true"))
    tr = build_trainer(cfg)
    _fp16_stand_in(tr, 65536.0)
    try:
        with caplog.at_level("WARNING", logger="hftraining"):
            tr.fit()
        best = tr.state.best_step
        assert best is not None and best <= 2 and tr.weights_step() == best
        said = [r.getMessage() for r in caplog.records if "made by step 2's update" in r.getMessage()]
        assert len(said) == 1 and f"the final model is the best checkpoint's (step {best})" in said[0], said
        tr.final_weights()
        saved = load_file(str(tr.best_checkpoint_path() / "model.safetensors"))
        assert all(torch.equal(saved[k], v) for k, v in tr.model.state_dict().items())
    finally:
        tr.close()


def test_a_healthy_fp16_run_whose_last_two_steps_are_loss_scaler_skips_keeps_its_model(tmp_path, caplog):
    # the scaler's scale set past what the gradients can take after step 4 (as a growth of the scale does now and
    # then): steps 5 and 6 are skipped with a finite loss; the weights are step 4's, finite, forecasting finite
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "training.learning_rate=0.003", "training.max_steps=6",
                                 "training.save_steps=2", "evaluation.eval_steps=4"))
    tr = build_trainer(cfg)
    _fp16_stand_in(tr, 1.0)

    def overflow_after(step, metrics):
        if step == 4:
            tr.scaler.update(new_scale=float("inf"))

    tr.on_evaluate = overflow_after
    try:
        with caplog.at_level("WARNING", logger="hftraining"):
            tr.fit()
        st = tr.state
        assert (st.global_step, st.updated_step, st.skipped_steps, st.consecutive_nonfinite) == (6, 4, 2, 0)
        assert math.isfinite(tr._last_eval[1]["mse"])
        assert not [r for r in caplog.records if "diverged" in r.getMessage() or "skipped" in r.getMessage()]
        step4 = load_file(str(cfg.run_dir() / "checkpoints" / "step-00000004" / "model.safetensors"))
        assert all(torch.equal(step4[k], v) for k, v in tr.model.state_dict().items())
    finally:
        tr.close()
