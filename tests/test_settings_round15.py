"""Settings that are accepted but make no sense are refused at load in one line naming the key, and a run
resumed at another world size keeps the learning rate ``training.lr_scaling`` says for it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hftraining.core.config import TrainingConfig, config_from_dict
from hftraining.core.errors import ConfigError
from hftraining.optim import check_compatibility
from hftraining.optim.schedules import lr_multiplier, warmup_steps
from hftraining.optim.stepper import TrainOptimizer
from hftraining.train import checkpoint as ckpt
from hftraining.train.distributed import DistInfo, init_distributed


def _load(training: dict) -> None:
    cfg = config_from_dict({"training": training})
    check_compatibility(cfg.training)


@pytest.mark.parametrize(("training", "key"), [
    ({"optimizer": "sgd", "optimizer_kwargs": {"momentum": 1.0}}, "training.optimizer_kwargs.momentum"),
    ({"optimizer": "sgd", "optimizer_kwargs": {"momentum": 1.5}}, "training.optimizer_kwargs.momentum"),
    ({"optimizer": "sgd", "optimizer_kwargs": {"dampening": 2.0}}, "training.optimizer_kwargs.dampening"),
    ({"optimizer": "sgd", "optimizer_kwargs": {"dampening": -0.5}}, "training.optimizer_kwargs.dampening"),
    ({"optimizer": "rmsprop", "optimizer_kwargs": {"momentum": 1.0}}, "training.optimizer_kwargs.momentum"),
    ({"optimizer": "sgdp", "optimizer_kwargs": {"momentum": 1.5}}, "training.optimizer_kwargs.momentum"),
    ({"optimizer": "sgdw", "optimizer_kwargs": {"dampening": 2.0}}, "training.optimizer_kwargs.dampening"),
    ({"optimizer": "schedulefreeadamw", "optimizer_kwargs": {"warmup_steps": -5}}, "training.optimizer_kwargs.warmup_steps"),
    ({"optimizer": "adamw", "optimizer_kwargs": {"eps": 0.0}}, "training.optimizer_kwargs.eps"),
    ({"optimizer": "gpro", "optimizer_kwargs": {"eps": 0.0}}, "training.optimizer_kwargs.eps"),
    ({"optimizer": "sophia", "optimizer_kwargs": {"eps": 0.0}}, "training.optimizer_kwargs.eps"),
    ({"optimizer": "muon", "optimizer_kwargs": {"adamw_eps": 0.0}}, "training.optimizer_kwargs.adamw_eps"),
    ({"optimizer": "adamw", "adam_epsilon": 0.0}, "training.adam_epsilon"),
])
def test_an_optimizer_value_outside_its_range_is_refused_at_load_naming_the_key(training, key):
    """SGD's momentum 1 never forgets a gradient (every step larger than the last) and a dampening above 1
    climbs the loss; a negative warmup of the schedule-free optimizers was read as none; an Adam epsilon of 0
    turns NaN every weight whose gradient is exactly 0. Each was accepted and the run diverged later."""
    with pytest.raises(ConfigError) as e:
        _load(training)
    assert str(e.value).startswith(f"{key}:")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("training", [
    {"optimizer": "sgd", "optimizer_kwargs": {"momentum": 0.0}},
    {"optimizer": "sgd", "optimizer_kwargs": {"momentum": 0.99, "dampening": 1.0}},
    {"optimizer": "schedulefreeadamw", "optimizer_kwargs": {"warmup_steps": 10}},
    {"optimizer": "scion", "optimizer_kwargs": {"momentum": 1.0}},
    {"optimizer": "rmsprop", "optimizer_kwargs": {"momentum": 0.9}},
    {"optimizer": "adamw", "adam_epsilon": 1e-12},
])
def test_an_optimizer_value_inside_its_range_is_accepted(training):
    _load(training)


def test_an_adam_epsilon_of_0_would_turn_a_weight_without_gradient_nan():
    """Why ``training.adam_epsilon`` must be > 0: AdamW divides 0 by 0 for a parameter whose gradient is 0."""
    p, q = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p, q], lr=1e-3, eps=0.0)
    (p.sum() + 0 * q.sum()).backward()
    opt.step()
    assert torch.isfinite(p).all() and torch.isnan(q).all()


@pytest.mark.parametrize(("ratio", "steps", "warm"), [(0.5, 5, 3), (0.5, 7, 4), (0.1, 25, 3), (0.05, 200, 10),
                                                       (0.3, 5, 2), (0.0, 9, 0)])
def test_warmup_ratio_rounds_to_the_nearest_step_a_half_up(ratio, steps, warm):
    """0.5 of 5 steps is 2.5: 3 steps of warmup, not 2 (Python's round takes a half to the even number)."""
    t = TrainingConfig(warmup_ratio=ratio, max_steps=steps)
    assert warmup_steps(t) == warm
    if warm:  # the peak is reached at the step after the warmup, not before
        assert lr_multiplier(warm - 1, t) < 1.0 == lr_multiplier(warm, t)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))


def _step(opt: TrainOptimizer, model: nn.Module) -> None:
    model(torch.ones(2, 3)).pow(2).mean().backward()
    opt.step(torch.zeros(()))
    opt.zero_grad()


@pytest.mark.parametrize(("scaling", "factor"), [("linear", 4.0), ("sqrt", 2.0), ("none", 1.0)])
def test_a_resume_at_another_world_size_scales_the_rate_for_the_new_world_size(tmp_path, monkeypatch, scaling, factor):
    """A run of 2 processes resumed on 4 under ``lr_scaling: linear`` kept the rate scaled by 2, which its
    checkpoint held, where a run started on 4 scales by 4: the resumed run now steps at the rate of a run
    started at its own world size (and with as many processes as before, at the same rate)."""
    t = TrainingConfig(learning_rate=0.01, lr_scaling=scaling, max_steps=10, warmup_steps=2, lr_scheduler="cosine",
                       optimizer="sgd", weight_decay=0.0)
    model = _model()
    before = TrainOptimizer(model, t, world_size=2)
    for _ in range(3):
        _step(before, model)
    state = {"global_step": 3, "scheduler": before.scheduler.state_dict()}
    path = ckpt.save_checkpoint(tmp_path, 3, model, before.optimizer, state, {}, rng=[ckpt.rng_state(), ckpt.rng_state()])

    said = []
    monkeypatch.setattr(ckpt.log, "warning", lambda msg, *args: said.append(msg % args))
    for world in (4, 2):
        said.clear()
        model = _model()
        after = TrainOptimizer(model, t, world_size=world)
        raw = ckpt.load_checkpoint(path, model, after.optimizer, DistInfo(world_size=world))
        after.load_schedule(raw["scheduler"])
        scale = factor if world == 4 else {"linear": 2.0, "sqrt": 2 ** 0.5, "none": 1.0}[scaling]
        assert after.lr == pytest.approx(0.01 * scale * lr_multiplier(3, t), rel=1e-12)
        assert after.scheduler.base_lrs == pytest.approx([0.01 * scale] * len(after.optimizer.param_groups))
        _step(after, model)
        assert after.lr == pytest.approx(0.01 * scale * lr_multiplier(4, t), rel=1e-12)
        rescaled = [m for m in said if "training.lr_scaling" in m]
        if world == 4 and scaling != "none":  # said once, naming both world sizes
            assert len(rescaled) == 1 and "with 2 process" in rescaled[0] and "this run has 4" in rescaled[0]
        else:
            assert not rescaled


@pytest.mark.parametrize("seconds", [0.0001, 1e-300, 0.5])
def test_a_ddp_timeout_under_a_second_is_refused_at_load(seconds):
    """torch counts the timeout in whole milliseconds: 0.0001 s was 0 ms, and the group's store timed out at
    once in a traceback (``The client socket has timed out after 0ms``) after the config had been accepted."""
    with pytest.raises(ConfigError, match=r"^training\.ddp_timeout: must be at least 1 second"):
        config_from_dict({"training": {"ddp_timeout": seconds}})
    with pytest.raises(ConfigError, match=r"^training\.ddp_timeout: must be at least 1 second"):
        init_distributed("cpu", seconds)


def test_a_ddp_timeout_of_a_second_or_more_is_accepted():
    assert config_from_dict({"training": {"ddp_timeout": 1}}).training.ddp_timeout == 1.0
    assert init_distributed("cpu", 1.0).world_size == 1
