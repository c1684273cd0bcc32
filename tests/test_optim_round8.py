"""A value in ``training.optimizer_kwargs`` that the optimizer cannot use is a one-line ConfigError naming the
key when the config is checked, before any data are read: one the constructor refuses with an exception of
pytorch-optimizer's own (no ValueError) or torch's RuntimeError, and one of another type than the keyword
holds, or a NaN, which most constructors took without a word (the run then failed at its first step, or
trained on NaN). Every constructor default, written as YAML would give it, passes the same check."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import build_optimizer, check_compatibility, optimizer_names
from test_optim import make_problem

REFUSED = [
    # pytorch-optimizer's NegativeStepError and NegativeLRError, and torch's RuntimeError: tracebacks, exit 1
    ("sophia", {"update_period": 0}, r"^training\.optimizer_kwargs: sophia: update_period must be positive"),
    ("muon", {"adamw_lr": -1.0}, r"^training\.optimizer_kwargs: muon: learning rate must be positive"),
    ("adamw", {"foreach": True}, r"^training\.optimizer_kwargs: adamw: `fused` and `foreach`"),
    # taken by the constructor: a traceback at the first step, after the data were read
    ("adamw", {"amsgrad": 1}, r"^training\.optimizer_kwargs\.amsgrad: adamw needs true or false, got 1$"),
    ("adafactor", {"momentum_dtype": "bf16"}, r"^training\.optimizer_kwargs\.momentum_dtype: adafactor needs a torch dtype"),
    # taken and used: a Hessian refresh at steps 0, 5, 10... and every weight NaN
    ("sophia", {"update_period": 2.5}, r"^training\.optimizer_kwargs\.update_period: sophia needs an integer, got 2\.5$"),
    ("sgd", {"momentum": float("nan")}, r"^training\.optimizer_kwargs\.momentum: sgd cannot use NaN"),
]


@pytest.mark.parametrize("name,kwargs,message", REFUSED, ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_a_value_the_optimizer_cannot_use_is_a_config_error_naming_the_key(name, kwargs, message):
    t = TrainingConfig(optimizer=name, optimizer_kwargs=kwargs)
    with pytest.raises(ConfigError, match=message):
        check_compatibility(t)
    with pytest.raises(ConfigError, match=message):  # and where the trainer builds it
        build_optimizer(make_problem()[0], t)


def test_values_of_the_keyword_s_type_are_still_taken():
    """An integer where a number goes, a dtype by its torch name, YAML's list for a tuple."""
    sgd = build_optimizer(make_problem()[0], TrainingConfig(optimizer="sgd", optimizer_kwargs={"momentum": 0}))
    assert sgd.param_groups[0]["momentum"] == 0
    ada = build_optimizer(make_problem()[0], TrainingConfig(optimizer="adafactor",
                                                            optimizer_kwargs={"momentum_dtype": "bfloat16"}))
    assert ada.momentum_dtype is torch.bfloat16
    lion = build_optimizer(make_problem()[0], TrainingConfig(optimizer="lion", optimizer_kwargs={"betas": [0.8, 0.9]}))
    assert lion.param_groups[0]["betas"] == (0.8, 0.9)
    sophia = build_optimizer(make_problem()[0], TrainingConfig(optimizer="sophia", optimizer_kwargs={"update_period": 4}))
    assert sophia.update_period == 4


def _yaml(value):
    """A constructor default as a YAML or JSON config gives it: lists for tuples, dtypes by name."""
    if isinstance(value, tuple):
        return [_yaml(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


SET_BY_TRAINING = ("self", "params", "lr", "weight_decay", "weight_decay_1d")
"""Keywords ``training.*`` sets and ``optimizer_kwargs`` may not (MARS's decay of 1-D tensors: biases and norms)."""


def _defaults(cls: type) -> dict:
    """The constructor's keyword defaults that a config can write (our subclasses' ``**kwargs`` walked up)."""
    out = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.name in SET_BY_TRAINING or p.default in (inspect.Parameter.empty, None):
                continue
            try:
                out.setdefault(p.name, json.loads(json.dumps(_yaml(p.default), allow_nan=False)))
            except (TypeError, ValueError):  # a function, an object: nothing a config holds
                pass
        if not any(p.kind == p.VAR_KEYWORD for p in params) or not klass.__module__.startswith("hftraining."):
            break
    return out


def test_every_constructor_default_written_in_a_config_passes_the_check():
    """The type check refuses no value the optimizer itself would start from, for any name."""
    from hftraining.optim import _resolve

    checked = 0
    for name in optimizer_names():
        cls = _resolve(TrainingConfig(optimizer=name))[1].cls
        t = TrainingConfig(optimizer=name, optimizer_kwargs=_defaults(cls))
        try:
            check_compatibility(t)
        except ConfigError as e:
            if "needs a package that is not installed" not in str(e):
                raise
        checked += len(t.optimizer_kwargs)
    assert checked > 500


@pytest.mark.parametrize("kwargs", ["{update_period: 0}", "{update_period: 2.5}"])
def test_the_cli_refuses_it_in_one_line_before_reading_data(tmp_path, capsys, kwargs):
    """Exit code 2 and one line; the data folder does not exist, so an error about it would mean the data
    were reached first."""
    code = main(["train", *tiny(tmp_path / "run", "training.optimizer=sophia", f"training.optimizer_kwargs={kwargs}",
                                f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.optimizer_kwargs" in err and "update_period" in err and "nowhere" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_momentum_dtype_torch_has_no_name_for_is_refused_before_reading_data(tmp_path, capsys):
    """``bf16`` is the config's precision name, not torch's: the run read its data and died at the first step."""
    code = main(["train", *tiny(tmp_path / "run", "training.optimizer=adafactor",
                                "training.optimizer_kwargs={momentum_dtype: bf16}", f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.optimizer_kwargs.momentum_dtype" in err and "nowhere" not in err, err


def test_mars_does_not_decay_biases_and_norms():
    """MARS decays 1-D tensors by its own ``weight_decay_1d`` (0.1) instead of their group's weight decay: the
    biases and LayerNorm gains shrank by lr·0.1 a step, with ``training.weight_decay`` 0 too. The matrices
    still take ``training.weight_decay``."""
    for wd in (0.0, 0.1):
        model, _, _ = make_problem()
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        opt = build_optimizer(model, TrainingConfig(optimizer="mars", learning_rate=1e-2, weight_decay=wd))
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.zeros_like(p)  # no update: what moves is decay
            opt.step()
        for p in model.parameters():
            expected = 0.5 * (1 - 1e-2 * wd) ** 3 if p.ndim >= 2 else 0.5
            assert torch.allclose(p, torch.full_like(p, expected), rtol=0, atol=1e-7), (wd, p.shape)
            if p.ndim < 2:
                assert torch.equal(p, torch.full_like(p, 0.5)), (wd, p.shape)


def test_mars_weight_decay_of_1d_tensors_is_refused_as_it_would_decay_biases_and_norms():
    with pytest.raises(ConfigError, match=r"^training\.optimizer_kwargs\.weight_decay_1d: mars .*biases, norms"):
        check_compatibility(TrainingConfig(optimizer="mars", optimizer_kwargs={"weight_decay_1d": 0.1}))
    check_compatibility(TrainingConfig(optimizer="mars", optimizer_kwargs={"weight_decay_1d": 0.0}))
