"""A warmup that leaves the schedule no step is a one-line error naming the key it came from, and a tuple of
``training.optimizer_kwargs`` (``betas``) of another length than the method has is a one-line error naming the
key, both before any data are read.

Warmup: the peak comes at step ``warmup`` and a decay reaches its floor at the last update (step
``max_steps - 1``). ``warmup_steps: max_steps`` (which the config accepts) or a ``warmup_ratio`` that rounds to
it trained every step on a rising rate that never reached ``training.learning_rate``, and a warmup of
``max_steps - 1`` ended the run at the peak: the decay to ``min_lr_ratio`` never acted, without a word.

Betas: one value too few was an IndexError traceback in the constructor; one too many passed every check and
stopped the run at its first step, after the data were read, with "too many values to unpack"."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import build_optimizer, check_compatibility, hessian_context, lr_multiplier, needs_create_graph


def _rates(t: TrainingConfig) -> list[float]:
    """The factor on the peak rate of every update of a run of ``t``."""
    return [lr_multiplier(s, t) for s in range(t.max_steps)]


@pytest.mark.parametrize("kind", ["cosine", "linear", "wsd", "cosine_restarts", "constant"])
@pytest.mark.parametrize("warmup", [{"warmup_steps": 10}, {"warmup_ratio": 0.96}])  # 0.96 x 10 = 9.6: 10 steps
def test_a_warmup_as_long_as_the_run_is_refused_as_it_never_reaches_the_peak(kind, warmup):
    t = TrainingConfig(lr_scheduler=kind, max_steps=10, **warmup,
                       min_lr_ratio=0.1 if kind != "constant" else TrainingConfig().min_lr_ratio)
    assert max(_rates(t)) < 1.0  # what such a run trained on: never the learning rate it names
    key = next(iter(warmup))
    with pytest.raises(ConfigError, match=rf"^training\.{key}: .*never reach training\.learning_rate"):
        check_compatibility(t)


@pytest.mark.parametrize("kind", ["cosine", "linear", "wsd", "cosine_restarts"])
def test_a_warmup_that_ends_at_the_last_update_is_refused_as_its_decay_never_acts(kind):
    t = TrainingConfig(lr_scheduler=kind, max_steps=10, warmup_steps=9, min_lr_ratio=0.1)
    assert _rates(t)[-1] == 1.0  # the last update at the peak, not at the floor of 0.1 asked for
    with pytest.raises(ConfigError, match=rf"^training\.warmup_steps: 9: .*{kind} decay .*min_lr_ratio 0\.1 would "
                                          r"never act; warm up for at most 8 steps"):
        check_compatibility(t)


@pytest.mark.parametrize("kind", ["cosine", "linear", "wsd", "cosine_restarts"])
def test_the_longest_warmup_allowed_still_decays_to_the_floor_at_the_last_update(kind):
    t = TrainingConfig(lr_scheduler=kind, max_steps=10, warmup_steps=8, min_lr_ratio=0.1)
    check_compatibility(t)
    rates = _rates(t)
    assert rates[8] == 1.0 and rates[-1] == pytest.approx(0.1)


@pytest.mark.parametrize("kw", [dict(lr_scheduler="constant", max_steps=10, warmup_steps=9),
                                dict(lr_scheduler="cosine", max_steps=10, warmup_steps=9, min_lr_ratio=1.0),
                                dict(lr_scheduler="cosine", max_steps=1, warmup_steps=0),
                                dict(lr_scheduler="cosine", max_steps=20)])  # the default ratio: 1 step
def test_warmups_that_leave_the_schedule_its_steps_are_kept(kw):
    t = TrainingConfig(**kw)
    check_compatibility(t)
    assert 1.0 in _rates(t)


def test_the_cli_refuses_a_warmup_as_long_as_the_run_in_one_line_before_reading_data(tmp_path, capsys):
    code = main(["train", *tiny(tmp_path / "run", "training.max_steps=6", "training.warmup_steps=6",
                                f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.count("training.warmup_steps") == 1 and "nowhere" not in err, err
    assert not (tmp_path / "run").exists()


def _steps(t: TrainingConfig, n: int = 2) -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = build_optimizer(model, t)
    for step in range(n):
        with hessian_context(opt, step):
            model(torch.randn(4, 3)).pow(2).mean().backward(create_graph=needs_create_graph(opt, step))
        opt.step()
        opt.zero_grad(set_to_none=True)


WRONG_LENGTH = [
    ("adamw", "betas", [0.9, 0.99, 0.999], 2),
    ("adamw", "betas", [0.9], 2),
    ("lion", "betas", [0.9, 0.99, 0.999], 2),
    ("lamb", "betas", [0.9, 0.99, 0.999], 2),
    ("sophia", "betas", [0.96], 2),
    ("adan", "betas", [0.98, 0.92], 3),
    ("adabelief", "betas", [0.9, 0.99, 0.999], 2),
    ("muon", "adamw_betas", [0.9, 0.95, 0.99], 2),
]


@pytest.mark.parametrize("name,key,value,length", WRONG_LENGTH)
def test_a_list_of_another_length_than_the_method_has_is_refused_naming_the_key(name, key, value, length):
    t = TrainingConfig(optimizer=name, optimizer_kwargs={key: value})
    with pytest.raises(ConfigError, match=rf"^training\.optimizer_kwargs\.{key}: {name} needs a list of {length} "
                                          rf"numbers \(.* by default\), got \[{', '.join(map(str, value))}\]$"):
        check_compatibility(t)


@pytest.mark.parametrize("name,key,value", [("adamw", "betas", [0.8, 0.95]), ("adan", "betas", [0.98, 0.92, 0.99]),
                                            ("muon", "adamw_betas", [0.9, 0.99]),
                                            ("aggmo", "betas", [0.0, 0.9, 0.99, 0.999])])  # one buffer a beta
def test_a_list_of_the_length_the_method_takes_still_trains(name, key, value):
    t = TrainingConfig(optimizer=name, optimizer_kwargs={key: value})
    check_compatibility(t)
    _steps(t)


def test_muon_s_reset_steps_take_any_number_of_steps():
    check_compatibility(TrainingConfig(optimizer="muon", optimizer_kwargs={"ns_reset_steps": [2, 3, 4]}))


def test_aggmo_needs_two_betas_at_least():
    with pytest.raises(ConfigError, match=r"^training\.optimizer_kwargs\.betas: aggmo needs a list of at least 2"):
        check_compatibility(TrainingConfig(optimizer="aggmo", optimizer_kwargs={"betas": [0.9]}))


@pytest.mark.parametrize("betas", ["[0.9, 0.99, 0.999]", "[0.9]"])
def test_the_cli_refuses_betas_of_another_length_in_one_line_before_reading_data(tmp_path, capsys, betas):
    code = main(["train", *tiny(tmp_path / "run", f"training.optimizer_kwargs={{betas: {betas}}}",
                                f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.optimizer_kwargs.betas" in err and "nowhere" not in err, err
    assert not (tmp_path / "run").exists()
