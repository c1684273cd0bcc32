"""The load-time check of a weight decay that zeroes or flips the weights measures it at the rate a run
steps at: the peak rate ``training.lr_scaling`` makes of the learning rate on the run's world size, and a
schedule-free optimizer's rate past its own warmup; a decay that ignores the learning rate
(``fixed_decay``) is named by ``training.weight_decay`` alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hftraining.core.config import TrainingConfig, config_from_dict, load_config
from hftraining.core.errors import ConfigError
from hftraining.optim import check_compatibility, decay_factor
from hftraining.optim.stepper import TrainOptimizer
from hftraining.train.distributed import DistInfo
from hftraining.train.trainer import check_config

from conftest import tiny  # noqa: E402


def _check(world_size: int, *overrides: str) -> None:
    check_config(load_config(None, tiny(None, *overrides)), DistInfo(world_size=world_size))


def _load(training: dict) -> None:
    check_compatibility(config_from_dict({"training": training}).training)


def test_linear_lr_scaling_steps_at_world_size_times_the_rate_which_flips_the_weights():
    """Why the scaled rate is checked: on 8 processes AdamW steps at 0.16, and 0.16 x 10 flips every weight."""
    t = TrainingConfig(learning_rate=0.02, weight_decay=10.0, lr_scaling="linear", warmup_steps=0)
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    opt = TrainOptimizer(layer, t, world_size=8)
    assert opt.lr == pytest.approx(0.16)
    layer.weight.grad = torch.zeros_like(layer.weight)
    opt.optimizer.step()
    assert torch.allclose(layer.weight.detach(), torch.full((2, 2), 1 - 1.6))


@pytest.mark.parametrize(("scaling", "world_size", "rate", "product"), [
    ("linear", 8, "0.16", "1.6"),
    ("sqrt", 64, "0.16", "1.6"),
])
def test_a_decay_that_flips_the_weights_at_the_scaled_peak_rate_is_refused_naming_the_scaling(
        scaling, world_size, rate, product):
    overrides = ("training.learning_rate=0.02", "training.weight_decay=10", f"training.lr_scaling={scaling}")
    _check(1, *overrides)  # one process steps at 0.02: 0.2, a decay that keeps the sign
    with pytest.raises(ConfigError) as e:
        _check(world_size, *overrides)
    msg = str(e.value)
    assert msg.startswith("training.learning_rate/weight_decay: 0.02 x 10 ") and "\n" not in msg, msg
    assert f"training.lr_scaling: {scaling}" in msg and f"world size {world_size}" in msg, msg
    assert f"peak rate of {rate}" in msg and f"{rate} x 10 = {product}" in msg and "by -0.6 " in msg, msg


@pytest.mark.parametrize("overrides", [
    ("training.learning_rate=0.02", "training.weight_decay=10"),  # lr_scaling none: 0.02 on every process
    ("training.learning_rate=0.02", "training.weight_decay=10", "training.lr_scaling=sqrt"),  # 0.057 x 10
    ("training.lr_scaling=linear",),  # the default rate and decay, scaled by 8
])
def test_a_decay_that_keeps_the_sign_at_the_scaled_rate_passes_on_eight_processes(overrides):
    _check(8, *overrides)


@pytest.mark.parametrize("optimizer", ["schedulefreeadamw", "schedulefreesgd"])
def test_a_schedule_free_optimizers_own_warmup_does_not_hide_a_decay_that_flips_the_weights(optimizer):
    """Its first steps run at step / warmup_steps of the peak rate; past them 0.01 x 150 flips every weight."""
    training = {"optimizer": optimizer, "learning_rate": 0.01, "weight_decay": 150.0,
                "optimizer_kwargs": {"warmup_steps": 100}}
    with pytest.raises(ConfigError) as e:
        _load(training)
    msg = str(e.value)
    assert msg.startswith("training.learning_rate/weight_decay: 0.01 x 150 = 1.5: ") and "by -0.5 " in msg, msg
    kwargs = {"optimizer": optimizer, "learning_rate": 0.01, "weight_decay": 50.0, "optimizer_kwargs": {"warmup_steps": 100}}
    assert decay_factor(TrainingConfig(**kwargs)) == pytest.approx(0.5, abs=1e-6)  # 1 - 0.5 at the peak rate
    _load(kwargs)


def test_a_fixed_decay_that_flips_the_weights_is_named_by_weight_decay_alone():
    """1 - wd whatever the rate: a lower learning rate would not help, so the message does not ask for one."""
    with pytest.raises(ConfigError) as e:
        _load({"optimizer": "adabelief", "learning_rate": 1e-3, "weight_decay": 1.5,
               "optimizer_kwargs": {"fixed_decay": True}})
    msg = str(e.value)
    assert msg.startswith("training.weight_decay: 1.5: adabelief") and "\n" not in msg, msg
    assert "fixed_decay" in msg and "by -0.5 " in msg and "learning_rate x weight_decay" not in msg, msg
    assert "training.learning_rate" not in msg, msg


def test_the_same_optimizer_with_a_decay_that_scales_with_the_rate_still_names_both_keys():
    with pytest.raises(ConfigError) as e:
        _load({"optimizer": "adabelief", "learning_rate": 0.01, "weight_decay": 150.0})
    msg = str(e.value)
    assert msg.startswith("training.learning_rate/weight_decay: 0.01 x 150 = 1.5: adabelief"), msg
    assert "learning_rate x weight_decay well below 1" in msg, msg
