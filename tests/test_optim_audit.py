"""Every optimizer name the registry accepts, as the training loop drives it: the rate it steps at is the
schedule's, its state goes through a checkpoint without pickle, a bad value is refused before any data
are read, a skipped step leaves its state alone, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save_file
from safetensors.torch import save as st_save

from conftest import tiny
from hftraining.core.config import TrainingConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.optim import (build_optimizer, check_compatibility, lr_multiplier, optimizer_names,
                              optimizer_state_from_flat, optimizer_state_to_flat)
from hftraining.optim.stepper import TrainOptimizer
from test_optim import make_problem

# The optimizers the README names, pytorch-optimizer's by name among them (Muon and the schedule-free ones).
LISTED = ["adamw", "gpro", "lion", "lamb", "adan", "adafactor", "sophia", "sgd", "ranger", "adopt",
          "schedulefreeadamw", "schedulefreesgd", "schedulefreeradam", "muon"]
KWARGS = {"sophia": {"update_period": 3}}  # a Hessian refresh on both sides of the checkpoint


def _config(name: str, lr: float, steps: int = 8) -> TrainingConfig:
    return TrainingConfig(optimizer=name, learning_rate=lr, optimizer_kwargs=dict(KWARGS.get(name, {})),
                          weight_decay=0.01, max_steps=steps, warmup_steps=3, lr_scheduler="cosine", min_lr_ratio=0.1)


def _buildable(name: str, t: TrainingConfig) -> None:
    try:
        check_compatibility(t)
        build_optimizer(make_problem()[0], t)
    except ConfigError as e:
        if "needs a package that is not installed" in str(e):
            pytest.skip(str(e))
        raise


def _step(model, opt: TrainOptimizer, x, y, seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # some library optimizers draw from NumPy (Kron's preconditioner updates)
    loss = ((model(x) - y) ** 2).mean()
    loss.backward(create_graph=opt.create_graph())
    opt.step(torch.zeros(()))
    opt.zero_grad()


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_steps_at_the_scheduled_rate(name):
    """The update depends on the rate the schedule puts in the parameter groups (the one metrics.jsonl logs),
    never on a rate the optimizer kept from its constructor or on a schedule of its own: Ranger21's warm-down
    and ApolloDQN's warmup ran from the unscheduled rate, MARS stepped biases and norms at its own 3e-3, Magma's
    AdamW at 1e-3 whatever training.learning_rate said, and A2Grad has no rate at all (a KeyError)."""
    peak = 1e-2
    _buildable(name, _config(name, peak))
    model, x, y = make_problem()
    other = copy.deepcopy(model)
    a = TrainOptimizer(model, _config(name, peak))
    b = TrainOptimizer(other, _config(name, 7 * peak))  # another constructor rate, overwritten below
    a.train()
    b.train()
    for step in range(8):
        if name != "grokfastadamw":  # documented: normalize_lr divides its rate by 1 + grokfast_lamb
            for g in a.optimizer.param_groups:
                assert g["lr"] == pytest.approx(lr_multiplier(step, _config(name, peak)) * peak, rel=1e-12), step
        for ga, gb in zip(a.optimizer.param_groups, b.optimizer.param_groups):
            gb["lr"] = ga["lr"]
        _step(model, a, x, y, step)
        _step(other, b, x, y, step)
        if name == "adabound":  # documented: its bounds follow the rate relative to the constructor's
            continue
        for p, q in zip(model.parameters(), other.parameters()):
            assert torch.equal(p, q), step


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_s_state_goes_through_a_checkpoint_without_pickle(name):
    """Adashift's queue of gradients, Conda's projectors and ScalableShampoo's preconditioners cannot be stored
    without pickle: a run died at its first checkpoint (a traceback, the steps before it lost). Such names are
    refused when the config is checked; every other one's state is tensors and JSON."""
    t = _config(name, 1e-2, steps=5)  # a warmup of 3 leaves the cosine its steps
    _buildable(name, t)
    model, x, y = make_problem()
    opt = TrainOptimizer(model, t)
    opt.train()
    for step in range(2):
        _step(model, opt, x, y, step)
    tensors, meta = optimizer_state_to_flat(opt.optimizer.state_dict())
    tensors = st_load(st_save({k: v.contiguous() for k, v in tensors.items()}))
    resumed = TrainOptimizer(copy.deepcopy(model), t)
    resumed.optimizer.load_state_dict(optimizer_state_from_flat(tensors, json.loads(json.dumps(meta, allow_nan=False))))


@pytest.mark.parametrize("kwargs", [{"rho": -1.0}, {"betas": [0.9, 1.5]}])
def test_a_value_the_optimizer_refuses_is_said_when_the_config_is_checked(kwargs):
    """Checked by the constructor, it was said only once the data were read (a feature build first)."""
    with pytest.raises(ConfigError, match=r"training\.optimizer_kwargs: gpro: "):
        check_compatibility(TrainingConfig(optimizer="gpro", optimizer_kwargs=kwargs))


@pytest.mark.parametrize("name", LISTED)
def test_a_skipped_step_leaves_the_weights_and_the_optimizer_state_alone(name):
    t = _config(name, 1e-2)
    model, x, y = make_problem()
    other = copy.deepcopy(model)
    a, b = TrainOptimizer(model, t), TrainOptimizer(other, t)
    a.train()
    b.train()
    for step in range(2):
        _step(model, a, x, y, step)
        _step(other, b, x, y, step)
    state = copy.deepcopy(b.optimizer.state_dict()["state"])
    weights = [p.detach().clone() for p in other.parameters()]
    (((other(x) - y) ** 2).mean() * float("nan")).backward(create_graph=b.create_graph())
    b.step(torch.ones(()))
    b.zero_grad()
    after = b.optimizer.state_dict()["state"]
    for i, s in state.items():
        for k, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after[i][k])), (i, k)
    assert all(torch.equal(w, p) for w, p in zip(weights, other.parameters()))
    for step in range(2, 4):  # the schedule moved on; the state did not
        for g in a.optimizer.param_groups:
            g["lr"] = t.learning_rate * lr_multiplier(step + 1, t)
        _step(model, a, x, y, step)
        _step(other, b, x, y, step)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))


@pytest.fixture(scope="module")
def prepared():
    from hftraining.data.pipeline import prepare

    return prepare(load_config(None, tiny()).data)


@pytest.mark.parametrize("name", LISTED + ["dash", "shampoo", "splus"])
def test_checkpoint_and_resume_end_where_an_uninterrupted_run_ends(name, prepared, tmp_path):
    """8 steps straight against 4, a checkpoint, a fresh trainer resuming, 4 more: final/ (the evaluated
    weights, a schedule-free optimizer's average) and the last checkpoint's state are the same bits.
    Dash, Shampoo and SPlus reduce over their state: read in place from the safetensors file (8-byte
    aligned), it rounded differently on the CPU and the resumed run drifted in the last bits."""
    from hftraining.train.runner import training_run

    kwargs = [f"training.optimizer_kwargs={json.dumps(KWARGS[name])}"] if name in KWARGS else []
    common = [f"training.optimizer={name}", *kwargs, "training.max_steps=8", "training.save_steps=4",
              "training.warmup_steps=2", "training.weight_decay=0.1", "evaluation.eval_steps=2",
              "training.save_total_limit=10"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    with training_run(load_config(None, tiny(full, *common)), data=prepared):
        pass
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000008")
    shutil.rmtree(resumed / "final")
    with training_run(load_config(None, tiny(resumed, *common, "training.resume_from_checkpoint=auto")), data=prepared):
        pass
    assert (full / "final/model.safetensors").read_bytes() == (resumed / "final/model.safetensors").read_bytes()
    last = "checkpoints/step-00000008"
    assert (full / last / "optimizer.json").read_text() == (resumed / last / "optimizer.json").read_text()
    for f in ("model.safetensors", "optimizer.safetensors"):
        a, b = load_file(full / last / f), load_file(resumed / last / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f


def _layout_steps(model, opt, x, y, steps):
    for s in steps:
        torch.manual_seed(s)
        np.random.seed(s)
        ((model(x) - y) ** 2).mean().backward(create_graph=opt.create_graph())
        opt.step(torch.zeros(()))
        opt.zero_grad()


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_resumes_bit_for_bit_through_its_saved_state(name, tmp_path):
    """8 steps straight equal 4 steps, the state through a safetensors file, 4 more, for every name.
    SOAP's and SPlus's eigenbases are transposed views (column-major): stored compact and read back
    row-major, the products over them rounded differently and the resumed run drifted in the last bits."""
    t = TrainingConfig(optimizer=name, learning_rate=1e-2, weight_decay=0.01, max_steps=8, warmup_steps=3,
                       lr_scheduler="cosine", min_lr_ratio=0.1)
    _buildable(name, t)
    model, x, y = make_problem()
    half = copy.deepcopy(model)
    full = TrainOptimizer(model, t)
    _layout_steps(model, full, x, y, range(8))
    first = TrainOptimizer(half, t)
    _layout_steps(half, first, x, y, range(4))
    tensors, meta = optimizer_state_to_flat(first.optimizer.state_dict())
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "o.safetensors"))
    resumed = TrainOptimizer(half, t)
    resumed.optimizer.load_state_dict(optimizer_state_from_flat(load_file(str(tmp_path / "o.safetensors")),
                                                                json.loads(json.dumps(meta))))
    resumed.scheduler.load_state_dict(first.scheduler.state_dict())
    _layout_steps(half, resumed, x, y, range(4, 8))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), half.parameters()))


def test_checking_the_optimizer_draws_nothing_from_the_seeded_generator():
    """The config check builds the optimizer on a probe; the run checks its config after seeding (the
    Trainer does), so a draw here changed every run's initial weights."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_compatibility(TrainingConfig())
    assert torch.equal(torch.rand(3), expected)
