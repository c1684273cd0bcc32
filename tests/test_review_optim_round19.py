"""Lists in ``training.optimizer_kwargs`` beyond their length: a null where the method reads a number, AggMo's betas
past the three its library checks, and Muon's schedule of Newton-Schulz coefficients (a list of lists); and a tune
whose trials draw a warmup that leaves the schedule no step, refused before its first trial."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import (build_optimizer, check_compatibility, hessian_context, needs_create_graph,
                              optimizer_state_from_flat, optimizer_state_to_flat)


def _steps(t: TrainingConfig, n: int = 2) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, t)
    for step in range(n):
        with hessian_context(opt, step):
            model(torch.randn(8, 4)).pow(2).mean().backward(create_graph=needs_create_graph(opt, step))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt


NULL_FIRST = [("lamb", "betas", 0.999), ("lion", "betas", 0.99), ("adan", "betas", 0.92), ("adabelief", "betas", 0.999),
              ("soap", "betas", 0.95), ("muon", "adamw_betas", 0.95), ("aggmo", "betas", 0.9),
              ("sophia", "betas", 0.99)]


@pytest.mark.parametrize("name,key,second", NULL_FIRST)
def test_a_null_beta_is_refused_where_the_method_reads_a_number(name, key, second):
    """pytorch-optimizer's check of the betas lets a first beta of None through (Adafactor's way to turn its momentum
    off): every other method took it and stopped at its first step, after the data were read, on a TypeError
    traceback (``1.0 - None``)."""
    t = TrainingConfig(optimizer=name, optimizer_kwargs={key: [None, second]} if name not in ("adan", "aggmo") else
                       {key: [None, second, 0.99]})
    with pytest.raises(ConfigError, match=rf"^training\.optimizer_kwargs\.{key}: {name} needs a number at place 1, "
                                          r"not null \(.* by default\), got \[None, "):
        check_compatibility(t)


def test_adafactor_s_null_first_beta_still_trains_without_momentum():
    t = TrainingConfig(optimizer="adafactor", optimizer_kwargs={"betas": [None, 0.999]})
    check_compatibility(t)
    opt = _steps(t)
    assert opt.param_groups[0]["betas"] == (None, 0.999)
    assert not any("exp_avg" in s for s in opt.state.values())  # no first moment kept: momentum off, as asked
    with pytest.raises(ConfigError, match=r"^training\.optimizer_kwargs\.betas: adafactor needs a number at place 2"):
        check_compatibility(TrainingConfig(optimizer="adafactor", optimizer_kwargs={"betas": [0.9, None]}))


def test_the_cli_refuses_a_null_beta_in_one_line_before_reading_data(tmp_path, capsys):
    code = main(["train", *tiny(tmp_path / "run", "training.optimizer=lamb",
                                "training.optimizer_kwargs={betas: [null, 0.999]}",
                                f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("hftraining: error: training.optimizer_kwargs.betas: lamb needs a number") and \
        "nowhere" not in err, err
    assert not (tmp_path / "run").exists()


def _aggmo_loss(betas: tuple[float, ...], library: bool = False, steps: int = 200) -> float:
    """AggMo's loss on a least-squares problem after ``steps`` full-batch steps, built as a run builds it (or by the
    library's own class, which checks nothing past the third beta)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    if library:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pytorch_optimizer import AggMo
        opt = AggMo(model.parameters(), lr=0.01, betas=betas)
    else:
        opt = build_optimizer(model, TrainingConfig(optimizer="aggmo", learning_rate=0.01, weight_decay=0.0,
                                                    optimizer_kwargs={"betas": list(betas)}))
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [2.0], [3.0]])
    for _ in range(steps):
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return float(loss.detach())


def test_aggmo_betas_past_the_third_are_held_to_its_range():
    """The library checks the first three betas only: a fourth of 1.5 was taken, its momentum buffer grew without
    bound and the loss reached inf (blamed on the loss, not on the beta). Each beta is in [0, 1] now."""
    assert not math.isfinite(_aggmo_loss((0.0, 0.9, 0.99, 1.5), library=True))  # what a run of it trained to
    for bad in ([0.0, 0.9, 0.99, 1.5], [0.0, 0.9, 0.99, -0.5], [0.0, 0.9, 0.99, 0.9, 2.0]):
        with pytest.raises(ConfigError, match=r"^training\.optimizer_kwargs\.betas: aggmo needs every value a number "
                                              r"in \[0, 1\] \(\[0\.0, 0\.9, 0\.99\] by default\), got "):
            check_compatibility(TrainingConfig(optimizer="aggmo", optimizer_kwargs={"betas": bad}))
    good = (0.0, 0.9, 0.99, 0.999)
    check_compatibility(TrainingConfig(optimizer="aggmo", optimizer_kwargs={"betas": list(good)}))
    assert _aggmo_loss(good) < 1e-2  # four buffers within the range train


NS_SCHEDULE = [[4.0848, -6.8946, 2.9270], [3.9505, -6.3029, 2.6377], [3.7418, -5.5913, 2.3037]]


@pytest.mark.parametrize("name", ["muon", "adamuon", "adago"])
def test_a_schedule_of_newton_schulz_coefficients_trains_and_goes_through_a_checkpoint(name):
    """``ns_coeffs`` takes a preset, one coefficient triple or a schedule of them (one triple an iteration). YAML has
    no tuples: the schedule, a list of lists, was refused as not "a list of coefficient tuples"."""
    t = TrainingConfig(optimizer=name, optimizer_kwargs={"ns_coeffs": NS_SCHEDULE})
    check_compatibility(t)
    opt = _steps(t)
    want = [tuple(c) for c in NS_SCHEDULE]
    muon_group = next(g for g in opt.param_groups if g.get("use_muon", True))
    assert [tuple(c) for c in muon_group["ns_coeffs"]] == want
    tensors, meta = optimizer_state_to_flat(opt.state_dict())
    opt.load_state_dict(optimizer_state_from_flat(tensors, json.loads(json.dumps(meta, allow_nan=False))))
    assert [tuple(c) for c in next(g for g in opt.param_groups if g.get("use_muon", True))["ns_coeffs"]] == want


def _checks(tmp_path, training: dict, space: dict) -> None:
    """What ``hftraining tune`` checks before its first trial (``test_review_optim_round17``'s, which needs optuna)."""
    pytest.importorskip("optuna")
    from test_review_optim_round17 import _checks as checks

    checks(tmp_path, training, space)


@pytest.mark.parametrize("training, space, named", [
    ({"max_steps": 10}, {"training.warmup_steps": {"type": "int", "low": 0, "high": 10}},
     r"training\.warmup_steps: high 10 fails: training\.warmup_steps: 10: "),
    ({"max_steps": 10, "warmup_steps": 5}, {"training.max_steps": {"type": "int", "low": 5, "high": 60}},
     r"training\.max_steps: low 5 fails: training\.warmup_steps: 5: "),
    ({"max_steps": 10}, {"training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.9}},
     r"training\.warmup_ratio: high 0\.9 fails: training\.warmup_ratio: 0\.9 of training\.max_steps 10 "),
])
def test_a_tune_whose_trials_can_draw_a_warmup_without_a_step_is_refused_before_any_trial(tmp_path, training, space,
                                                                                         named):
    """A warmup that leaves the schedule no step is refused as the cosine cycles that do not fit are: the value a
    trial can draw is named before the first trial, so no study dies at the trial that draws it."""
    with pytest.raises(ConfigError, match=rf"^tune\.search_space\.{named}.*; a trial that draws it would stop the "
                                          r"tune, so narrow the range$"):
        _checks(tmp_path, training, space)


def test_a_tune_is_not_refused_for_the_config_s_warmup_that_no_trial_trains(tmp_path):
    """The config's 6 steps with a warmup of 5 leave no step, but every trial draws 20 to 40 steps; a searched
    optimizer is checked without the lengths, as for the cosine cycles."""
    _checks(tmp_path, {"max_steps": 6, "warmup_steps": 5},
            {"training.optimizer": {"choices": ["adamw", "sgd"]},
             "training.max_steps": {"type": "int", "low": 20, "high": 40}})
