"""GPro without a cap on its update steps as AdamW on every implementation, and the pytorch-optimizer names
that read the loss from a closure the trainer does not pass are refused in one line naming the key."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import GPro, check_compatibility, optimizer_names


@pytest.mark.parametrize("projection", ["rms", "frobenius"])
@pytest.mark.parametrize("rho", [math.inf, 1e300])
@pytest.mark.parametrize("impl", ["numba", "fused", "foreach"])
def test_gpro_with_no_cap_steps_as_adamw_on_every_implementation(impl, rho, projection):
    """A cap no update reaches (``optimizer_kwargs.rho: .inf``) is Adam with decoupled weight decay. The numba
    kernel took it so; the fused path (the one CUDA runs) and the foreach path divided inf by inf and turned
    every weight NaN, and a cap beyond float32's range (1e300) stopped the first step with an overflow error."""
    if impl == "fused" and "cpu" not in _get_fused_kernels_supported_devices():
        pytest.skip("this torch has no fused Adam kernel on the CPU")
    torch.manual_seed(0)
    w = torch.randn(6, 5)
    p, q = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    gpro = GPro([p], lr=0.1, weight_decay=0.01, rho=rho, projection=projection, implementation=impl)
    adamw = torch.optim.AdamW([q], lr=0.1, weight_decay=0.01)
    for step in range(4):
        g = torch.randn(6, 5, generator=torch.Generator().manual_seed(step))
        p.grad, q.grad = g.clone(), g.clone()
        gpro.step()
        adamw.step()
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)


def test_gpro_with_a_finite_cap_still_caps_on_every_implementation():
    """The same update from the three implementations where the Frobenius cap acts (‖u‖_F ≈ √30 > 0.5)."""
    impls = ["numba", "foreach"] + (["fused"] if "cpu" in _get_fused_kernels_supported_devices() else [])
    torch.manual_seed(0)
    w = torch.randn(6, 5)
    g = torch.randn(6, 5)
    moved = []
    for impl in impls:
        p = nn.Parameter(w.clone())
        opt = GPro([p], lr=0.1, weight_decay=0.0, rho=0.5, projection="frobenius", implementation=impl)
        p.grad = g.clone()
        opt.step()
        moved.append(p.detach() - w)
    for d in moved:
        assert torch.linalg.norm(d).item() == pytest.approx(0.1 * 0.5, rel=1e-5)
        torch.testing.assert_close(d, moved[0], rtol=0, atol=1e-7)


LOSS_DRIVEN = ["emonavi", "emofact", "emolynx", "EmoNavi"]


@pytest.mark.parametrize("name", LOSS_DRIVEN)
def test_optimizers_that_read_the_loss_from_a_closure_are_refused_naming_the_key(name):
    """EmoNavi, EmoFact and EmoLynx scale their steps by the trend of the loss, which they read from a closure
    passed to step(); the trainer passes none, so they read 0 at every step and trained with that scaling
    never acting, without a word."""
    with pytest.raises(ConfigError, match=rf"^training\.optimizer: '{name}' is not supported: .*closure"):
        check_compatibility(TrainingConfig(optimizer=name))
    assert name.lower() not in optimizer_names()


def test_emonavi_s_scaling_needs_the_loss_the_trainer_does_not_give():
    """Why they are refused: driven as the trainer drives every optimizer (``step()`` without a closure),
    EmoNavi steps as it does on a loss that never changes, and not as on a falling loss."""
    from pytorch_optimizer import load_optimizer

    cls = load_optimizer("emonavi")

    def run(losses):
        torch.manual_seed(0)
        p = nn.Parameter(torch.randn(5))
        opt = cls([p], lr=0.1)
        for i, loss in enumerate(losses):
            p.grad = torch.randn(5, generator=torch.Generator().manual_seed(i))
            opt.step() if loss is None else opt.step(lambda loss=loss: loss)
        return p.detach()

    steps = 12
    assert torch.equal(run([None] * steps), run([1.0] * steps))
    assert not torch.equal(run([None] * steps), run([1.0 / (i + 1) for i in range(steps)]))


def test_the_cli_refuses_a_loss_driven_optimizer_in_one_line_before_reading_data(tmp_path, capsys):
    """Exit code 2 and one line; the data folder does not exist, so an error about it would mean the data
    were reached first (and the run would have trained)."""
    code = main(["train", *tiny(tmp_path / "run", "training.optimizer=emonavi", f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.optimizer" in err and "emonavi" in err and "nowhere" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["splus", "schedulefreeadamw"])
def test_evaluating_before_any_update_was_applied_scores_the_training_weights(name):
    """The first steps of a run can all be skipped (fp16's loss scaler finding its scale, a NaN batch): an
    evaluation then, or the end of such a run, put SPlus's evaluation weights in from an average it did not
    have yet, a KeyError that ended the run in a traceback. Nothing was averaged: the weights stay, and the
    first applied step after it trains on as if nothing had been evaluated."""
    from hftraining.optim.stepper import TrainOptimizer
    from test_optim import make_problem

    t = TrainingConfig(optimizer=name, learning_rate=1e-2, max_steps=4, warmup_steps=0, lr_scheduler="constant")
    model, x, y = make_problem()
    other = copy.deepcopy(model)
    a, b = TrainOptimizer(model, t), TrainOptimizer(other, t)
    a.train()
    b.train()
    initial = [p.detach().clone() for p in model.parameters()]
    (((model(x) - y) ** 2).mean() * float("nan")).backward()
    a.step(torch.ones(()))  # skipped
    a.zero_grad()
    a.eval()
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), initial))
    a.train()
    for opt, m in ((a, model), (b, other)):
        ((m(x) - y) ** 2).mean().backward()
        opt.step(torch.zeros(()))
        opt.zero_grad()
        opt.eval(keep_train_weights=False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
