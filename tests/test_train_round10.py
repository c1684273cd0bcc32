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


def test_a_schedule_key_the_schedule_does_not_read_is_one_line(tmp_path, capsys):
    """``min_lr_ratio`` with ``constant``, ``num_cycles`` without ``cosine_restarts``, ``decay_ratio`` without
    ``wsd``: the run trained as if the key were not there and exited 0. Now exit 2 before any data is read,
    naming the key and the schedules that read it; a schedule that reads it trains."""
    from hftraining.cli import main

    for setting, sched in (("training.min_lr_ratio=0.01", "constant"), ("training.num_cycles=3", "cosine"),
                           ("training.decay_ratio=0.5", "linear")):
        args = tiny(tmp_path / "run", "training.max_steps=2", *QUICK, f"training.lr_scheduler={sched}", setting)
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err
        key = setting.split("=")[0]
        assert err.count("\n") == 1 and f"{key}: lr_scheduler {sched} does not use it" in err, err
        assert not (tmp_path / "run").exists()
    assert main(["train", *tiny(tmp_path / "ok", "training.max_steps=2", *QUICK, "training.lr_scheduler=wsd",
                                "training.decay_ratio=0.5", "training.min_lr_ratio=0.01")]) == 0


def test_tune_refuses_a_searched_schedule_key_a_searched_schedule_ignores_before_any_trial():
    import pytest

    from hftraining.core.errors import ConfigError
    from hftraining.workflows import tune

    cfg = load_config(None, ['tune.search_space={"training.lr_scheduler": {"choices": ["constant", "cosine"]}, '
                             '"training.min_lr_ratio": {"type": "float", "low": 0.0, "high": 0.2}}'])
    with pytest.raises(ConfigError, match=r"tune.search_space.training.min_lr_ratio: constant \(a choice of "
                                          r"training.lr_scheduler\) does not use it"):
        tune.check_searched_settings(cfg, tune.parse_space(cfg.tune.search_space))
    # the base config's value, not searched, under a searched schedule that ignores it: said before a trial
    cfg = load_config(None, ["training.min_lr_ratio=0.01",
                             'tune.search_space={"training.lr_scheduler": {"choices": ["cosine", "constant"]}}'])
    with pytest.raises(ConfigError, match=r"training.lr_scheduler: choice constant: training.min_lr_ratio: "):
        tune.check_searched_settings(cfg, tune.parse_space(cfg.tune.search_space))
