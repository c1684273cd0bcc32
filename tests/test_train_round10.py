"""Settings of the training loop as users combine them: a skipped non-finite step leaves the whole
model as it was (its running statistics too), so one bad batch does not spoil the run."""

import numpy as np
import torch

from hftraining.core.config import load_config
from hftraining.train.runner import build_trainer
from conftest import tiny  # noqa: E402
from test_train_trainer import _inject_nan  # noqa: E402

QUICK = ["evaluation.report=false", "training.save_steps=0", "evaluation.eval_steps=0"]


def _poison(trainer, bad_calls):
    """Put a NaN in the training batches drawn on the call numbers in ``bad_calls`` (1-based)."""
    _inject_nan(trainer.data, bad_calls)


def _stats(model):
    return {k: v.detach().clone() for k, v in model.named_buffers() if "running" in k or "batches" in k}


def test_a_skipped_nan_step_leaves_patchtst_s_batchnorm_statistics_and_validation_finite(tmp_path):
    # the step was skipped (weights, optimizer state), but BatchNorm's running mean and variance had taken the
    # NaN batch's statistics in the forward: every later validation, and the final model, forecast NaN
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "model.type=patchtst", "training.max_steps=4",
                                 "data.batch_size=8", "training.gradient_accumulation_steps=2"))
    tr = build_trainer(cfg)
    try:
        _poison(tr, bad_calls={4})  # the second micro-batch of step 2
        tr.model.train()
        tr.opt.train()
        tr.train_step()
        before = _stats(tr.model)
        weights = [p.detach().clone() for p in tr.model.parameters()]
        assert before and all(torch.isfinite(v).all() for v in before.values())
        tr.train_step()
        tr.read_back()
        assert tr.state.skipped_steps == 1 and tr.state.consecutive_nonfinite == 1
        after = _stats(tr.model)
        for k, v in before.items():
            torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=k)
        for p, w in zip(tr.model.parameters(), weights):
            torch.testing.assert_close(p.detach(), w, rtol=0, atol=0)
        tr.train_step()  # a good step after it updates the statistics again and resets the run of skips
        tr.read_back()
        assert tr.state.consecutive_nonfinite == 0
        assert any(not torch.equal(_stats(tr.model)[k], v) for k, v in before.items())
        metrics = tr.evaluate(tr.val_windows)
        assert np.isfinite(metrics["mse"]) and np.isfinite(metrics["loss"])
    finally:
        tr.close()
