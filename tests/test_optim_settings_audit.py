"""Training settings an optimizer would ignore: ``training.weight_decay`` with an optimizer that has no weight
decay (pytorch-optimizer's Amos, Fromage, FTRL, Gravity, MSVAG, Nero, SM3, SRMM), and
``training.adam_beta1/adam_beta2/adam_epsilon`` with one that keeps its own (Lion, SGD, every library optimizer
outside Muon's AdamW part). Such a setting, away from its default, is a one-line ConfigError naming the key and
the optimizer, before any data are read; the rule (``uses_setting``) agrees with what one step of every
optimizer does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import TrainingConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.optim import SETTINGS, check_compatibility, optimizer_names, uses_setting
from hftraining.optim.stepper import TrainOptimizer
from test_optim import make_problem

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.*"))
OTHER = {"weight_decay": 0.1, "adam_beta1": 0.5, "adam_beta2": 0.9, "adam_epsilon": 1e-3}
"""A value of each setting away from its default, large enough to change a few steps of an optimizer using it."""
# Where the setting acts only once the run is under way: D-Adaptation and Prodigy scale the decay by their
# distance estimate (1e-6 at first), RAdam and its schedule-free form take no step in their first ones, and
# Adafactor's beta2 caps its step-dependent decay 1 - step^-0.8 only from step 18 on with beta2 0.9.
# These run 30 steps, at the learning rate given here.
LATE = {("weight_decay", n): 1.0 for n in ("dadaptadan", "dadaptsgd", "radam", "schedulefreeradam")}
LATE[("weight_decay", "prodigy")] = 100.0  # its rate is meant to be 1.0 (d0 1e-6 times lr is the step)
LATE[("adam_beta2", "adafactor")] = 1e-2


def _config(name: str, **settings) -> TrainingConfig:
    kwargs = {"update_period": 1} if name == "sophia" else {}
    values = {"learning_rate": 1e-2, **settings}
    return TrainingConfig(optimizer=name, max_steps=40, warmup_steps=0, lr_scheduler="constant", optimizer_kwargs=kwargs,
                          **values)


def _buildable(t: TrainingConfig) -> None:
    try:
        check_compatibility(t)
    except ConfigError as e:
        if "needs a package that is not installed" in str(e):
            pytest.skip(str(e))
        raise


def _weights_after_steps(t: TrainingConfig, steps: int) -> torch.Tensor:
    model, x, y = make_problem()
    opt = TrainOptimizer(model, t)
    opt.train()
    for s in range(steps):
        torch.manual_seed(s)
        np.random.seed(s)  # some library optimizers draw from NumPy
        ((model(x * (1 + 0.3 * s)) - y) ** 2).mean().backward(create_graph=opt.create_graph())
        opt.step(torch.zeros(()))
        opt.zero_grad()
    opt.eval(keep_train_weights=False)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", optimizer_names())
def test_a_setting_counts_as_used_exactly_when_it_changes_the_update(name):
    """For every name and setting: the weights after a few steps with the setting at its default (weight decay
    0) and at another value differ where ``uses_setting`` says the optimizer uses it, and are the same bits
    where it says not (the optimizers are deterministic: the same config twice gives the same bits)."""
    _buildable(_config(name))
    base = TrainingConfig()
    for key in SETTINGS:
        lr = LATE.get((key, name))
        steps = 4 if lr is None else 30
        over = {} if lr is None else {"learning_rate": lr}
        first = 0.0 if key == "weight_decay" else getattr(base, key)
        a = _weights_after_steps(_config(name, **{key: first}, **over), steps)
        b = _weights_after_steps(_config(name, **{key: OTHER[key]}, **over), steps)
        if uses_setting(_config(name), key):
            assert not torch.equal(a, b), f"{name} is said to use training.{key}, but its update ignores it"
        else:
            assert torch.equal(a, _weights_after_steps(_config(name, **{key: first}, **over), steps)), name
            assert torch.equal(a, b), f"{name} is said to ignore training.{key}, but its update changes with it"


@pytest.mark.parametrize("name", optimizer_names())
def test_a_setting_the_optimizer_ignores_is_a_one_line_error_naming_key_and_optimizer(name):
    """Amos with weight_decay 0.1 decayed nothing and Lion with adam_beta1 0.5 kept its own betas, without a
    word. Now each such setting is refused; defaults and weight decay 0 build every optimizer."""
    _buildable(_config(name))
    check_compatibility(_config(name, weight_decay=0.0))
    for key, value in OTHER.items():
        t = _config(name, **{key: value})
        if uses_setting(t, key):
            check_compatibility(t)
            continue
        with pytest.raises(ConfigError) as e:
            check_compatibility(t)
        msg = str(e.value)
        assert msg.startswith(f"training.{key}: {name} ") and "\n" not in msg, msg


def test_the_optimizers_without_weight_decay_are_named():
    """The library's optimizers with no weight decay are the ones the rule finds (and ours all have it)."""
    without = {n for n in optimizer_names() if not uses_setting(_config(n), "weight_decay")}
    assert {"amos", "fromage", "ftrl", "gravity", "msvag", "nero", "sm3", "srmm"} <= without
    assert not without & {"adamw", "sgd", "gpro", "lion", "lamb", "adan", "adafactor", "sophia", "muon"}


def test_adam_settings_that_optimizer_kwargs_overrides_are_refused():
    """``adam_beta1`` next to ``optimizer_kwargs.betas`` (or Muon's ``adamw_betas``): the keyword won and the
    training setting was dropped; the error names the keyword that sets it."""
    with pytest.raises(ConfigError, match=r"^training\.adam_beta1: adamw .*optimizer_kwargs\.betas"):
        check_compatibility(TrainingConfig(optimizer="adamw", adam_beta1=0.5, optimizer_kwargs={"betas": [0.8, 0.99]}))
    with pytest.raises(ConfigError, match=r"^training\.adam_beta2: muon .*optimizer_kwargs\.adamw_betas"):
        check_compatibility(TrainingConfig(optimizer="muon", adam_beta2=0.9, optimizer_kwargs={"adamw_betas": [0.8, 0.99]}))
    with pytest.raises(ConfigError, match=r"^training\.adam_beta1: lion .*set training\.optimizer_kwargs\.betas"):
        check_compatibility(TrainingConfig(optimizer="lion", adam_beta1=0.5))
    check_compatibility(TrainingConfig(optimizer="adamw", optimizer_kwargs={"betas": [0.8, 0.99]}))  # the default: not set


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_passes_the_optimizer_checks(path):
    check_compatibility(load_config(path).training)


def test_the_cli_refuses_an_ignored_weight_decay_before_reading_data(tmp_path, capsys):
    """Exit code 2 and one line naming the key and the optimizer; the data folder does not exist, so an
    error about it would mean the data were reached first."""
    code = main(["train", *tiny(tmp_path / "run", "training.optimizer=amos", "training.weight_decay=0.1",
                                f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.weight_decay" in err and "amos" in err and "nowhere" not in err, err


def test_list_optimizers_says_which_names_cannot_be_built_here(capsys):
    """`hftraining list optimizers` lists every name once; one whose optional package is missing (demo
    needs einops) says so on its line instead of being offered as if it worked."""
    import importlib.util

    assert main(["list", "optimizers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == optimizer_names()
    demo = next(line for line in lines if line.split()[0] == "demo")
    if importlib.util.find_spec("einops") is None:
        assert "cannot be used here" in demo and "einops" in demo
    else:
        assert demo == "demo"
    assert next(line for line in lines if line.split()[0] == "adamw") == "adamw"
