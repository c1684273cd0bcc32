"""Optimizers and models as users combine them: Sophia's Hessian refresh differentiates PatchTST's
BatchNorm backward in fp32, and a skipped step still leaves the running statistics as they were."""

import numpy as np
import pytest
import torch

from hftraining.core.config import load_config
from hftraining.train.runner import build_trainer
from conftest import tiny  # noqa: E402
from test_train_round10 import QUICK, _poison, _stats  # noqa: E402


@pytest.mark.parametrize("bad_calls", [set(), {2}], ids=["finite", "nan-step-skipped"])
def test_sophia_trains_patchtst_in_fp32_and_a_skipped_step_keeps_its_statistics(tmp_path, bad_calls):
    # the running statistics were put back (an in-place write) between the backward and the optimizer's
    # step: the Hessian-vector product of a refresh step, which differentiates BatchNorm's backward (it
    # saved them), failed with "modified by an inplace operation" on the first step
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "model.type=patchtst", "training.optimizer=sophia",
                                 "training.precision=fp32", "training.max_steps=3", "data.batch_size=8"))
    tr = build_trainer(cfg)
    try:
        _poison(tr, bad_calls=bad_calls)
        tr.model.train()
        tr.opt.train()
        assert tr.opt.create_graph()  # the first step refreshes the Hessian
        tr.train_step()
        tr.read_back()
        before = _stats(tr.model)
        weights = [p.detach().clone() for p in tr.model.parameters()]
        tr.train_step()
        tr.read_back()
        assert tr.state.skipped_steps == (1 if bad_calls else 0)
        after = _stats(tr.model)
        moved = any(not torch.equal(after[k], v) for k, v in before.items())
        assert moved != bool(bad_calls)  # the statistics moved on a good step and stayed on a skipped one
        assert any(not torch.equal(p.detach(), w) for p, w in zip(tr.model.parameters(), weights)) != bool(bad_calls)
        assert all(torch.isfinite(v).all() for v in after.values())
        metrics = tr.evaluate(tr.val_windows)
        assert np.isfinite(metrics["mse"])
    finally:
        tr.close()


MODELS = ["transformer", "patchtst", "dlinear"]
OPTIMIZERS = ["adamw", "gpro", "lion", "lamb", "adan", "adafactor", "sophia", "sgd"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_takes_steps_with_every_optimizer(tmp_path, model, optimizer, precision):
    """Two accumulated steps of each pair on the tiny data (the zoo benchmark's loss-falls runs of every
    pair are in the slow suite): every parameter stays finite and the weights move."""
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, f"model.type={model}", f"training.optimizer={optimizer}",
                                 f"training.precision={precision}", "training.max_steps=2", "data.batch_size=8", "data.sequence_length=30",
                                 "training.gradient_accumulation_steps=2"))
    tr = build_trainer(cfg)
    try:
        weights = [p.detach().clone() for p in tr.model.parameters()]
        tr.model.train()
        tr.opt.train()
        tr.train_step()
        tr.train_step()
        tr.read_back()
        assert tr.state.skipped_steps == 0
        assert all(torch.isfinite(p).all() for p in tr.model.parameters())
        assert any(not torch.equal(p.detach(), w) for p, w in zip(tr.model.parameters(), weights))
    finally:
        tr.close()
