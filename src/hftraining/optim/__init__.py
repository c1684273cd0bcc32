"""Optimizer registry. ``training.optimizer`` selects by name: ours first (``OPTIMIZERS``), then
any optimizer of pytorch-optimizer by its (case-insensitive) name. An unknown name, an unknown
keyword in ``training.optimizer_kwargs``, a value of another type than the keyword holds (read from the
constructor's signature), a NaN, a value the constructor refuses or one outside the range the method has
(``RANGES``: SGD's momentum in [0, 1), Adam's epsilon > 0...) is a ConfigError; never a silent fallback.

A setting the chosen optimizer would ignore is a ConfigError too, where it is away from its default:
``training.weight_decay`` with one that has no weight decay (Amos, SM3, Nero...), ``training.adam_beta1``/
``adam_beta2``/``adam_epsilon`` with one that keeps its own (Lion, SGD, the library's outside Muon's AdamW
part) or where ``optimizer_kwargs`` sets them (``uses_setting``, ``tests/test_optim_settings_audit.py``).

pytorch-optimizer classes that keep a schedule or a second rate of their own get keywords that make them
step at the schedule's rate (``LIBRARY_DEFAULTS``); those whose state a checkpoint cannot hold without
pickle are refused (``EXCLUDED``).

Parameter groups: no weight decay on biases, norms and embeddings (``nn.Embedding`` modules, and a module's
own parameters it names in a ``no_weight_decay`` class attribute, such as PatchTST's learned positions).

Muon and its variants (pytorch-optimizer's ``MuonBase``) orthogonalise the matrices; the other groups
(biases, norms: ``use_muon`` False) go to their AdamW part, which runs at ``training.learning_rate`` under the
same schedule unless ``training.optimizer_kwargs.adamw_lr`` sets its own peak rate, with
``training.adam_beta1``/``adam_beta2``/``adam_epsilon`` unless ``adamw_betas``/``adamw_eps`` set their own
(AdaMuon has no ``adamw_eps``: its ``eps``, if set, is both parts'), and without weight decay: those groups
hold only what ``training.weight_decay`` never decays, so a nonzero ``adamw_wd`` is a ConfigError.

What the trainer calls, in order::

    check_compatibility(t)                       # before building anything
    opt = build_optimizer(model, t); sched = build_scheduler(opt, t)
    set_train_mode(opt, True)                    # schedule-free optimizers; a no-op otherwise
    with hessian_context(opt, step):             # every micro-batch of ``step``
        loss = ...forward...
        loss.backward(create_graph=needs_create_graph(opt, step))
    ...clip, opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    set_train_mode(opt, False) before evaluation, True after it
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import inspect
import math
import random
import sys
import types
import typing
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from hftraining.core.config import TrainingConfig, resolved_precision
from hftraining.core.errors import ConfigError
from hftraining.optim.gpro import GPro
from hftraining.optim.schedules import Schedule, check_schedule, lr_multiplier, warmup_steps
from hftraining.optim.state import optimizer_state_from_flat, optimizer_state_to_flat
from hftraining.core.registry import Registry

if TYPE_CHECKING:
    from hftraining.optim.sophia import Sophia


def _library():
    """pytorch-optimizer, imported when an optimizer is resolved, listed or built, not with this module: its
    import takes about a second (torch.distributed.tensor, symbolic shapes) that a command which builds no
    optimizer (evaluate, predict) need not pay. A missing or broken install raises here, as at import."""
    import pytorch_optimizer
    import pytorch_optimizer.optimizer.muon.base  # noqa: F401  (what _is_muon looks for: if moved, an error here)

    return pytorch_optimizer


def _is_muon(cls: type) -> bool:
    """Whether ``cls`` is pytorch-optimizer's Muon or one of its variants (a ``MuonBase``). A class derived
    from it exists only once the module defining it is imported, so while it is not, the answer is no
    without importing the library (AdamW, SGD, GPro are built without it)."""
    base = sys.modules.get("pytorch_optimizer.optimizer.muon.base")
    return base is not None and issubclass(cls, base.MuonBase)


def __getattr__(name: str):
    """``Sophia`` (it subclasses pytorch-optimizer's SophiaH), imported on first use (PEP 562)."""
    if name == "Sophia":
        return importlib.import_module("hftraining.optim.sophia").Sophia
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "OPTIMIZERS",
    "GPro",
    "Sophia",
    "build_optimizer",
    "build_scheduler",
    "check_compatibility",
    "check_scaled_decay",
    "hessian_context",
    "lr_multiplier",
    "needs_create_graph",
    "optimizer_names",
    "optimizer_state_from_flat",
    "optimizer_state_to_flat",
    "param_groups",
    "set_train_mode",
    "uses_setting",
    "warmup_steps",
]


class Spec:
    """How one of our names builds its optimizer: the class and the arguments taken from the
    config (``optimizer_kwargs`` may override any of them except ``lr``). ``cls`` may be given as a
    function that returns the class (a pytorch-optimizer one, imported when the class is first asked for)."""

    def __init__(self, cls: type | Callable[[], type], from_config: Callable[[TrainingConfig], dict[str, Any]] = lambda t: {}):
        self._cls = cls
        self.from_config = from_config

    @property
    def cls(self) -> type:
        """The optimizer class."""
        if not isinstance(self._cls, type):
            self._cls = self._cls()
        return self._cls


OPTIMIZERS: Registry[Spec] = Registry("optimizer", "training.optimizer")


def _adam_args(t: TrainingConfig) -> dict[str, Any]:
    return {"betas": (t.adam_beta1, t.adam_beta2), "eps": t.adam_epsilon}


# Our own optimizers and our choices among the library's. The library's defaults stay where the
# method has its own (Lion's, Adan's and Sophia's betas are not Adam's).
OPTIMIZERS.register("adamw")(Spec(torch.optim.AdamW, lambda t: {**_adam_args(t), "fused": True}))
OPTIMIZERS.register("sgd")(Spec(torch.optim.SGD, lambda t: {"momentum": 0.9}))
OPTIMIZERS.register("gpro")(Spec(GPro, _adam_args))
OPTIMIZERS.register("lion")(Spec(lambda: _library().Lion))
OPTIMIZERS.register("lamb")(Spec(lambda: _library().Lamb, _adam_args))
OPTIMIZERS.register("adan")(Spec(lambda: _library().Adan, lambda t: {"eps": t.adam_epsilon}))
# Adafactor follows the schedule's learning rate (relative_step would ignore it) and keeps its
# first moment in float32 (the library's default is bfloat16).
OPTIMIZERS.register("adafactor")(
    Spec(
        lambda: _library().AdaFactor,
        lambda t: {"betas": (t.adam_beta1, t.adam_beta2), "relative_step": False, "scale_parameter": False,
                   "warmup_init": False, "momentum_dtype": torch.float32},
    )
)
OPTIMIZERS.register("sophia")(Spec(lambda: importlib.import_module("hftraining.optim.sophia").Sophia))

# pytorch-optimizer names that cannot run in our loop, and why.
EXCLUDED = {
    "sophiah": "use training.optimizer: sophia (SophiaH wired to the trainer's Hessian steps)",
    "adahessian": "needs a create_graph backward the trainer does not make for it; use sophia",
    "sam": "needs a closure that re-runs forward and backward",
    "gsam": "needs a closure that re-runs forward and backward",
    "wsam": "needs a closure that re-runs forward and backward",
    "bsam": "needs a closure that re-runs forward and backward",
    "friendlysam": "needs a closure that re-runs forward and backward",
    "lbfgs": "needs a closure that re-runs forward and backward",
    "alig": "needs a closure that returns the loss",
    # given no closure they read the loss as 0 at every step, a loss without a trend: their loss-driven scaling
    # (and shadow weights) never acted, and nothing said so
    **dict.fromkeys(("emonavi", "emofact", "emolynx"),
                    "scales its steps by the trend of the loss, read from a closure that returns the loss, which "
                    "the trainer's step() does not pass (without one that scaling never acts)"),
    "lomo": "fuses the update into backward; not a step() optimizer",
    "adalomo": "fuses the update into backward; not a step() optimizer",
    "lookahead": "a wrapper of another optimizer, not an optimizer",
    "orthograd": "a wrapper of another optimizer, not an optimizer",
    "pcgrad": "a wrapper of another optimizer, not an optimizer",
    "schedulefreewrapper": "a wrapper of another optimizer, not an optimizer",
    "trac": "a wrapper of another optimizer, not an optimizer",
    "distributedmuon": "needs an initialised process group",
    "adammini": "needs the model itself, not parameter groups",
    "lorarite": "needs LoRA adapter pairs",
    "spectralsphere": "supports only 2-D parameters",
    "magma": "a wrapper of another optimizer, not an optimizer (given parameters it builds an AdamW at its own "
             "learning rate, not training.learning_rate)",
    "a2grad": "has no learning rate (its step sizes are fixed): training.learning_rate and the schedule cannot apply",
    "adashift": "keeps a queue of past gradients that a checkpoint cannot store without pickle",
    "conda": "keeps projector objects in its state that a checkpoint cannot store without pickle",
    "scalableshampoo": "keeps preconditioner objects in its state that a checkpoint cannot store without pickle",
}

# pytorch-optimizer classes that would otherwise not step at training.learning_rate under training.lr_scheduler
# (the rate metrics.jsonl logs): keywords that optimizer_kwargs may override.
LIBRARY_DEFAULTS: dict[str, Callable[[TrainingConfig], dict[str, Any]]] = {
    # its own warmup scaled the schedule's, and its warm-down replaced the last 28% of the schedule with a
    # decay from the unscheduled rate to 3e-5
    "ranger21": lambda t: {"disable_lr_scheduler": True},
    # its own 500-step warmup ran from 1e-5 to the unscheduled rate, ignoring the schedule
    "apollodqn": lambda t: {"warmup_steps": 0},
    # biases and norms (1-D tensors) ran at its lr_1d (3e-3) whatever training.learning_rate said, and were
    # decayed by its weight_decay_1d (0.1), whatever training.weight_decay said (a nonzero one is refused below)
    "mars": lambda t: {"lr_1d": t.learning_rate, "weight_decay_1d": 0.0},
}


def _library_names() -> list[str]:
    return [n for n in _library().get_supported_optimizers() if n not in EXCLUDED]


def optimizer_names() -> list[str]:
    """Every valid ``training.optimizer``: ours (sorted), then pytorch-optimizer's not shadowed."""
    ours = OPTIMIZERS.names()
    return ours + [n for n in _library_names() if n not in ours]


def _unknown(name: str) -> ConfigError:
    close = difflib.get_close_matches(name.lower(), optimizer_names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    if name.lower() in EXCLUDED:
        return ConfigError(f"training.optimizer: {name!r} is not supported: {EXCLUDED[name.lower()]}")
    return ConfigError(
        f"training.optimizer: unknown optimizer {name!r}{hint} valid: {', '.join(OPTIMIZERS.names())}"
        " or any pytorch-optimizer name (hftraining list optimizers)"
    )


def _resolve(t: TrainingConfig) -> tuple[str, Spec]:
    """(canonical name, spec) for ``t.optimizer``."""
    name = t.optimizer.lower()
    if name in OPTIMIZERS:
        return name, OPTIMIZERS.get(name)
    if name in EXCLUDED or name not in _library().get_supported_optimizers():
        raise _unknown(t.optimizer)
    return name, Spec(_library().load_optimizer(name), LIBRARY_DEFAULTS.get(name, lambda t: {}))


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword arguments the constructor names. A ``**kwargs`` catch-all swallows typos, so it does
    not count, except in our own subclasses, which pass it on to their base (walked up)."""
    named: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "params"):
                named.setdefault(p.name, p)
        if not (klass.__module__.startswith("hftraining.") and any(p.kind == p.VAR_KEYWORD for p in params)):
            break
    return named


def _accepted(cls: type) -> set[str]:
    """Keyword arguments the constructor names (see :func:`_parameters`)."""
    return set(_parameters(cls))


# What a keyword holds, read from its annotation where that names one type alone and the default agrees
# (``bool | float``, ``Optional[bool]`` and the like are left to the constructor).
_KINDS: tuple[tuple[tuple[Any, ...], Callable[[Any], bool], str], ...] = (
    ((bool, "bool"), lambda v: isinstance(v, bool), "true or false"),
    ((int, "int"), lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    ((float, "float"), lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    ((torch.dtype, "torch.dtype"), lambda v: isinstance(v, torch.dtype), "a torch dtype (float32, bfloat16, ...)"),
)


_ANY_LENGTH: dict[tuple[str, str], int] = {
    ("aggmo", "betas"): 2,  # one momentum buffer a beta, as many as given
}
"""Tuple keywords (optimizer, keyword) that take any number of values, at least the one given, where every other
takes its default's count (a variadic annotation, ``tuple[int, ...]``, says so itself)."""


def _null_allowed(ann: Any, length: int, i: int) -> bool:
    """Whether the tuple annotation ``ann`` admits None at place ``i`` of a tuple of ``length`` values: Adafactor's
    ``tuple[None, float]`` (a first beta of None: no momentum) does; ``tuple[float, float]`` does not."""
    forms = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    for form in forms:
        if typing.get_origin(form) is not tuple:
            continue
        args = typing.get_args(form)
        if len(args) == 2 and args[1] is Ellipsis:
            kind = args[0]
        elif len(args) == length:
            kind = args[i]
        else:
            continue
        if kind is None or kind is type(None) or type(None) in typing.get_args(kind):
            return True
    return False


def _check_value(name: str, key: str, value: Any, param: inspect.Parameter) -> None:
    """ConfigError for an ``optimizer_kwargs`` value of another type than the constructor's keyword holds,
    or a NaN. Most constructors check ranges only: ``amsgrad: 1`` or ``momentum_dtype: bf16`` was taken
    and failed at the first step, after the data were read, in a traceback; ``update_period: 2.5`` made
    Sophia refresh its Hessian at steps 0, 5, 10...; ``momentum: .nan`` turned every weight into NaN."""
    def nan(v: Any) -> bool:
        return (isinstance(v, float) and math.isnan(v)) or (isinstance(v, tuple) and any(nan(x) for x in v))

    if nan(value):
        raise ConfigError(f"training.optimizer_kwargs.{key}: {name} cannot use NaN, got {value!r}")
    if value is None:
        return
    if key.endswith("dtype") and isinstance(value, str):  # a name torch does not have as a dtype
        raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs a torch dtype (float32, bfloat16, ...), "
                          f"got {value!r}")
    default, ann = param.default, param.annotation
    if isinstance(default, tuple) and str(ann).startswith("tuple"):
        if not isinstance(value, tuple):
            raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs a list ({list(default)!r} by default), "
                              f"got {value!r}")
        # as many values as the method has (Adam's two betas, Adan's three): one too few was an IndexError in the
        # constructor, one too many a "too many values to unpack" at the first step, after the data were read
        least = _ANY_LENGTH.get((name, key))
        if least is not None and len(value) < least:
            raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs a list of at least {least} numbers "
                              f"({list(default)!r} by default), got {list(value)!r}")
        if least is None and "..." not in str(ann) and len(value) != len(default):
            raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs a list of {len(default)} numbers "
                              f"({list(default)!r} by default), got {list(value)!r}")
        # a null where the method reads a number: the library's own check lets a first beta of None through (for
        # Adafactor's, which turns its momentum off), and every other method stopped at its first step, after the
        # data were read, on a TypeError traceback (1.0 - None)
        null = next((i for i, v in enumerate(value) if v is None and not _null_allowed(ann, len(value), i)), None)
        if null is not None:
            raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs a number at place {null + 1}, not null "
                              f"({list(default)!r} by default), got {list(value)!r}")
        if least is not None:
            # the library checks the first three betas only: a fourth of 1.5 grew its momentum buffer without bound
            # and the run diverged, blamed on the loss
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1 for v in value):
                raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs every value a number in [0, 1] "
                                  f"({list(default)!r} by default), got {list(value)!r}")
        return
    for annotations, fits, what in _KINDS:
        if ann in annotations and (default is inspect.Parameter.empty or type(default) is annotations[0]
                                   or annotations[0] is float and type(default) is int):
            if not fits(value):
                raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs {what}, got {value!r}")
            return


_POSITIVE = (0.0, True, math.inf, True)
RANGES: dict[tuple[str, str], tuple[float, bool, float, bool]] = {
    # (optimizer or "*" for every one, keyword) -> (low, low excluded, high, high excluded)
    # torch's SGD and RMSprop (and SGDP) refuse only a negative momentum: at 1 the buffer never forgets a gradient
    # and every step is larger than the last (the run diverged without a word), above 1 it grows geometrically
    ("*", "momentum"): (0.0, False, 1.0, True),
    ("scion", "momentum"): (0.0, True, 1.0, False),  # the weight of the new gradient (1: no momentum)
    ("scionlight", "momentum"): (0.0, True, 1.0, False),
    ("*", "dampening"): (0.0, False, 1.0, False),  # above 1 the gradient enters with its sign flipped: an ascent
    ("*", "warmup_steps"): (0.0, False, math.inf, False),  # a negative warmup was read as none
    # Adam's denominator: with eps 0 a parameter whose gradient is exactly 0 (a head whose loss weight is 0)
    # divides 0 by 0 and turns NaN at the first step
    ("adamw", "eps"): _POSITIVE, ("gpro", "eps"): _POSITIVE, ("lamb", "eps"): _POSITIVE, ("adan", "eps"): _POSITIVE,
    ("sophia", "eps"): _POSITIVE,  # its floor on the Hessian estimate, by which the momentum is divided
    ("*", "adamw_eps"): _POSITIVE,  # Muon's AdamW part
}
"""Documented ranges of ``optimizer_kwargs`` keywords that a constructor does not check itself."""


def _check_range(name: str, key: str, value: Any) -> None:
    """ConfigError naming ``training.optimizer_kwargs.<key>`` for a number outside its :data:`RANGES` entry."""
    bounds = RANGES.get((name, key)) or RANGES.get(("*", key))
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, low_out, high, high_out = bounds
    if value < low or (low_out and value == low) or value > high or (high_out and value == high):
        text = (f"{'>' if low_out else '>='} {low:g}" if high == math.inf
                else f"in {'(' if low_out else '['}{low:g}, {high:g}{')' if high_out else ']'}")
        raise ConfigError(f"training.optimizer_kwargs.{key}: {name} needs it {text}, got {value!r}")


def _tuples(value: list[Any]) -> tuple[Any, ...]:
    """A config's list as a tuple, and each list in it, at any depth."""
    return tuple(_tuples(v) if isinstance(v, list) else v for v in value)


def _optimizer_kwargs(name: str, spec: Spec, t: TrainingConfig) -> dict[str, Any]:
    """Constructor keywords: the config's, then ``optimizer_kwargs`` on top; checked by name."""
    params = _parameters(spec.cls)
    accepted = set(params)
    user = {}
    for key, value in t.optimizer_kwargs.items():
        if key in ("lr", "params"):
            raise ConfigError(f"training.optimizer_kwargs.{key}: set training.learning_rate instead")
        if key == "weight_decay":
            raise ConfigError("training.optimizer_kwargs.weight_decay: set training.weight_decay instead")
        if key not in accepted:
            raise ConfigError(
                f"training.optimizer_kwargs: {name} takes no argument {key!r}; valid: {', '.join(sorted(accepted))}"
            )
        if isinstance(value, list):  # YAML/JSON have no tuples (betas), nor tuples of tuples (Muon's ns_coeffs
            value = _tuples(value)    # schedule, which as a list of lists was refused as not "coefficient tuples")
        if key.endswith("dtype") and isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype):
            value = getattr(torch, value)
        _check_value(name, key, value, params[key])
        user[key] = value
    kwargs = {k: v for k, v in spec.from_config(t).items() if k in accepted}
    kwargs.update(user)
    if "lr" in accepted:
        kwargs["lr"] = t.learning_rate
    if "num_iterations" in accepted and "num_iterations" not in kwargs:  # Ranger21 requires the run's length
        kwargs["num_iterations"] = t.max_steps
    if _is_muon(spec.cls) and "adamw_lr" in accepted and "adamw_lr" not in kwargs:
        # Muon's AdamW part (the groups it does not orthogonalise: biases, norms) would otherwise run at the
        # library's own adamw_lr (3e-4) whatever training.learning_rate says. Its groups' rate is their
        # initial rate under the LambdaLR schedule, so warmup and decay apply to it as to the Muon part.
        kwargs["adamw_lr"] = t.learning_rate
    if _is_muon(spec.cls) and kwargs.get("adamw_wd", 0) != 0:
        # its AdamW part holds only biases, norms and embeddings (build_optimizer), which are never decayed
        raise ConfigError(
            f"training.optimizer_kwargs.adamw_wd: {name}'s AdamW part holds only biases, norms and embeddings, "
            f"which are never decayed (training.weight_decay); remove it (got {kwargs['adamw_wd']!r})"
        )
    if name == "mars" and kwargs.get("weight_decay_1d", 0) != 0:
        # MARS decays 1-D tensors by it instead of their group's weight decay: biases and norms, never decayed
        raise ConfigError(
            f"training.optimizer_kwargs.weight_decay_1d: mars applies it to 1-D tensors (biases, norms), which are "
            f"never decayed (training.weight_decay); remove it (got {kwargs['weight_decay_1d']!r})"
        )
    return kwargs


def _muon_adamw_group(spec: Spec, t: TrainingConfig) -> dict[str, Any]:
    """Values of Muon's AdamW group that win over the library's adamw_* defaults (betas (0.9, 0.95), eps
    1e-10): training's Adam settings, unless optimizer_kwargs sets them."""
    eps_key = "adamw_eps" if "adamw_eps" in _accepted(spec.cls) else "eps"  # AdaMuon: one eps for both parts
    values: dict[str, Any] = {}
    if "adamw_betas" not in t.optimizer_kwargs:
        values["betas"] = (t.adam_beta1, t.adam_beta2)
    if eps_key not in t.optimizer_kwargs:
        values["eps"] = t.adam_epsilon
    return values


# The training settings an optimizer may leave unused (pytorch-optimizer's Amos, SM3 or Nero have no weight
# decay; Lion and most library optimizers keep their own betas and eps), and where such an optimizer takes
# its own value instead.
SETTINGS = {"weight_decay": None, "adam_beta1": "betas", "adam_beta2": "betas", "adam_epsilon": "eps"}


def uses_setting(t: TrainingConfig, key: str) -> bool:
    """Whether ``training.<key>`` (one of ``SETTINGS``) changes the optimizer that ``t`` builds. Weight decay
    reaches every optimizer in its parameter groups, but only one whose constructor names ``weight_decay``
    reads it there; Adam's betas and eps reach it only through its constructor's keywords (ours, by
    ``Spec.from_config``, unless ``optimizer_kwargs`` sets them) or Muon's AdamW group, so they count when
    another value there changes what it is built with."""
    name, spec = _resolve(t)
    if key == "weight_decay":
        return "weight_decay" in _accepted(spec.cls)
    value = getattr(t, key)
    # any other valid value (value + 1 was value itself for a huge eps, whose error then said adamw ignored it)
    other = dataclasses.replace(t, **{key: 0.5 if value != 0.5 else 0.25})

    def built(c: TrainingConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        muon = _muon_adamw_group(spec, c) if _is_muon(spec.cls) else {}
        return _optimizer_kwargs(name, spec, c), muon

    return built(t) != built(other)


def _check_settings_used(t: TrainingConfig) -> None:
    """A ConfigError for a setting of ``SETTINGS`` that the optimizer would ignore, where it is not at its
    default (the config does not record which keys a user wrote, so a value equal to the default counts as
    not set; weight decay 0 is also accepted, as no decay is what such an optimizer does)."""
    name, spec = _resolve(t)
    defaults = TrainingConfig()
    for key, own in SETTINGS.items():
        if own and _is_muon(spec.cls):  # its AdamW part's own keywords
            own = "adamw_betas" if own == "betas" else "adamw_eps" if "adamw_eps" in _accepted(spec.cls) else "eps"
        value = getattr(t, key)
        if value == getattr(defaults, key) or (key == "weight_decay" and value == 0) or uses_setting(t, key):
            continue
        if key == "weight_decay":
            hint = "it has no weight decay; set training.weight_decay to 0 or choose another optimizer"
        elif own in t.optimizer_kwargs:
            hint = f"training.optimizer_kwargs.{own} sets it; give one of them"
        elif own in _accepted(spec.cls):
            hint = f"it keeps its own {own}; set training.optimizer_kwargs.{own} instead"
        else:
            hint = "it takes no such value; remove the key"
        raise ConfigError(f"training.{key}: {name} does not use it (got {value!r}): {hint}")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices with decay; biases, norm weights and embeddings without. A module lists its own
    embedding-like parameters (a learned position table held as a bare ``nn.Parameter``) in a
    ``no_weight_decay`` class attribute."""
    no_decay_types = (nn.LayerNorm, nn.Embedding, nn.BatchNorm1d, nn.GroupNorm)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            embedding = isinstance(module, no_decay_types) or name in getattr(module, "no_weight_decay", ())
            if embedding or p.ndim < 2 or name.endswith("bias"):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


_DEVICE_ERRORS: tuple[type[Exception], ...] = (torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()
"""A device's own failure (a CUDA error surfacing while the optimizer's state is made): not a config value."""


def _library_errors() -> tuple[type[Exception], ...]:
    """pytorch-optimizer's own exceptions, with which its constructors refuse a value besides ValueError
    (``NegativeLRError`` for Muon's ``adamw_lr: -1``, ``NegativeStepError`` for Sophia's ``update_period: 0``):
    they are no ValueError and left the command in a traceback. Empty while the library is not imported (an
    optimizer of ours or torch's is being built)."""
    module = sys.modules.get("pytorch_optimizer.base.exception")
    if module is None:
        return ()
    return tuple(v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == module.__name__)


def build_optimizer(model: nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``t.optimizer`` over ``model``'s parameter groups."""
    name, spec = _resolve(t)
    kwargs = _optimizer_kwargs(name, spec, t)
    groups = param_groups(model, t.weight_decay)
    if _is_muon(spec.cls):
        # Muon orthogonalises matrices; vectors (biases, norms) go to its AdamW part (no decay: the group's
        # weight_decay 0.0, so adamw_wd never applies)
        for g in groups:
            g["use_muon"] = all(p.ndim >= 2 for p in g["params"])
            if not g["use_muon"]:
                g["weight_decay"] = 0.0
                g.update(_muon_adamw_group(spec, t))
    try:
        optimizer = spec.cls(groups, **kwargs)
    except (torch.OutOfMemoryError, *_DEVICE_ERRORS):  # RuntimeErrors, but no value of the config's
        raise
    except (TypeError, ValueError, NotImplementedError, RuntimeError, *_library_errors()) as e:
        # RuntimeError: torch's refusals (adamw's fused with foreach: true or differentiable: true)
        msg = " ".join(str(e).split())
        raise ConfigError(f"training.optimizer_kwargs: {name}: {msg}") from None
    except ImportError as e:  # an optional dependency of that optimizer
        raise ConfigError(f"training.optimizer: {name} needs a package that is not installed: {e}") from None
    for key, value in t.optimizer_kwargs.items():  # after the constructor's own checks, whose messages stay
        _check_range(name, key, value)
    return optimizer


def build_scheduler(optimizer: torch.optim.Optimizer, t: TrainingConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over optimizer steps; ``get_last_lr()`` is the rate the next ``step()`` uses. Its state
    holds the schedule's resolved lengths (:class:`~hftraining.optim.schedules.Schedule`)."""
    check_schedule(t)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(t))


# Keywords that turn an optimizer's own warmup of its rate off, for the decay probe: schedule-free methods scale
# the rate of their first ``warmup_steps`` steps by step / warmup_steps, so a probe of their first step measured
# the decay at a fraction of the peak rate, which a run reaches once that warmup is over.
_OWN_WARMUP_OFF: dict[str, dict[str, Any]] = {
    "schedulefreesgd": {"warmup_steps": 0},
    "schedulefreeadamw": {"warmup_steps": 0},
}


def decay_factor(t: TrainingConfig) -> float | None:
    """The factor by which ``training.weight_decay`` alone multiplies a decayed weight in the optimizer's first
    step at the peak rate ``training.learning_rate``, measured: a 2 x 2 weight of ones takes one step with and
    one without the decay, on the same gradient (through the trainer's Hessian steps for Sophia), and
    the factor is 1 plus the difference (the decay's own move of a weight of 1). Decoupled decay (AdamW,
    Lion, most of pytorch-optimizer's) gives 1 - lr × wd, one that ignores the rate (``fixed_decay``) 1 - wd,
    and plain SGD's coupled decay 1 - lr × wd too, while Adam's coupled decay (divided by the gradient's
    scale) stays near 1: measured, because a constructor's ``weight_decouple`` flag says neither what its
    default does nor how the library's hundred-odd classes apply it. Some divide the decay by the gradient's
    scale (AdamS by the root mean square of its second moment: 1 - lr × wd / RMS), so the probe
    steps on a small gradient (1e-3 a weight) and on a large one (1 a weight, as large as an element of a
    gradient clipped to the default ``max_grad_norm`` of 1 can be) and gives the larger factor, the least the
    decay can do: a flip at both scales is a decay too strong for any gradient, a flip at the small one alone
    refused AdamS at 0.01 x 0.2, whose decay a run's gradients decide.
    Each step draws the same noise (Kron's) from generators seeded alike, torch's and NumPy's and Python's
    (Kron draws its rebalancing from NumPy's), which are put back as they were: the factor is the decay's
    alone, and a run seeded before its trainer's check draws what it drew without it. An optimizer's own
    warmup of its rate (schedule-free methods' ``optimizer_kwargs.warmup_steps``) is off in the probe
    (``_OWN_WARMUP_OFF``): its first step is at the peak rate. None: the probe's weights came out
    non-finite at both scales (a method that divides by a norm of the gradient), which says nothing about
    the decay."""
    name = _resolve(t)[0]
    if name in _OWN_WARMUP_OFF:
        t = dataclasses.replace(t, optimizer_kwargs={**t.optimizer_kwargs, **_OWN_WARMUP_OFF[name]})

    def after(c: TrainingConfig, scale: float) -> torch.Tensor:
        torch.default_generator.manual_seed(0)  # CPU's, inside fork_rng below (torch.manual_seed reseeds CUDA's)
        np.random.seed(0)
        random.seed(0)
        layer = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            layer.weight.fill_(1.0)
        opt = build_optimizer(layer, c)
        with hessian_context(opt, 0), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")  # freed below
            (0.5 * scale * layer.weight.pow(2).sum()).backward(create_graph=needs_create_graph(opt, 0))
        opt.step()
        opt.zero_grad(set_to_none=True)  # a gradient with its graph holds the weight: the cycle is broken here
        return layer.weight.detach()

    factors = []
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):  # some methods draw noise: not from the run's seeded generators
            for scale in (1e-3, 1.0):
                factor = 1.0 + float((after(t, scale) - after(dataclasses.replace(t, weight_decay=0.0), scale)).min())
                if math.isfinite(factor):
                    factors.append(factor)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return max(factors) if factors else None


def _check_decay(name: str, t: TrainingConfig, scaled: tuple[int, float] | None = None) -> None:
    """ConfigError naming ``training.learning_rate`` and ``training.weight_decay`` and their product when the
    decay multiplies a decayed weight by 0 or less at a step (:func:`decay_factor`): with decoupled decay,
    ``learning_rate × weight_decay >= 1`` zeroed every matrix at once (1) or flipped its sign at every step
    (above 1, growing without a bound past 2), and the run trained on, its loss a plateau or NaN. ``scaled``:
    (world size, the peak rate ``training.lr_scaling`` makes of ``training.learning_rate`` there), the rate
    probed and named instead. A decay whose factor is the same at half the rate (``fixed_decay``: 1 - wd)
    is named by ``training.weight_decay`` alone: a lower learning rate would not help it."""
    defaults = TrainingConfig()
    default = (t.learning_rate, t.weight_decay) == (defaults.learning_rate, defaults.weight_decay)
    if t.weight_decay == 0 or (default and scaled is None):
        return  # no decay; the defaults keep every optimizer's weights (tests/test_settings_round16.py): no probe
    rate = t.learning_rate if scaled is None else scaled[1]
    probe = t if scaled is None else dataclasses.replace(t, learning_rate=rate)
    factor = decay_factor(probe)
    if factor is None or factor >= 1e-6:  # 0 up to float32's rounding of 1 - 1
        return
    shown = f"{0.0 if abs(factor) < 1e-6 else factor:.3g}"
    half = decay_factor(dataclasses.replace(probe, learning_rate=rate / 2))
    if half is not None and abs(half - factor) < 1e-4:  # the rate does not enter the decay
        fixed = " (training.optimizer_kwargs.fixed_decay: true)" if t.optimizer_kwargs.get("fixed_decay") else ""
        raise ConfigError(
            f"training.weight_decay: {t.weight_decay:g}: {name}'s weight decay{fixed} does not scale with the "
            f"learning rate and would multiply every decayed weight by {shown} at each step (zeroing it, or "
            "flipping its sign); lower it (a decay that ignores the rate keeps each weight's sign with "
            "weight_decay well below 1)"
        )
    if scaled is None:
        what = f"{t.learning_rate:g} x {t.weight_decay:g} = {t.learning_rate * t.weight_decay:g}"
        fix = "lower one of them"
    else:
        what = (f"{t.learning_rate:g} x {t.weight_decay:g} under training.lr_scaling: {t.lr_scaling} at world size "
                f"{scaled[0]} steps at a peak rate of {rate:g}, and {rate:g} x {t.weight_decay:g} = "
                f"{rate * t.weight_decay:g}")
        fix = "lower one of them or set training.lr_scaling: none"
    raise ConfigError(
        f"training.learning_rate/weight_decay: {what}: {name}'s weight decay would multiply every decayed weight "
        f"by {shown} at each step at the peak rate (zeroing it, or flipping its sign); {fix} (a decay keeps each "
        "weight's sign: learning_rate x weight_decay well below 1, typically 1e-6 to 1e-3)"
    )


def check_scaled_decay(t: TrainingConfig, world_size: int, learning_rate: float) -> None:
    """:func:`check_compatibility`'s decay check at the peak rate ``learning_rate`` that a run on ``world_size``
    processes steps at: ``training.lr_scaling`` (linear, sqrt) multiplies ``training.learning_rate`` by the world
    size, or its root, once the optimizer is built (``optim.stepper.LR_SCALING``), so a rate and decay accepted
    on one process can flip the weights on eight. A ConfigError naming ``training.lr_scaling``, the world size
    and the scaled rate; nothing to probe where the rate is ``training.learning_rate`` itself."""
    if learning_rate != t.learning_rate:
        _check_decay(_resolve(t)[0], t, (world_size, learning_rate))


def needs_create_graph(optimizer: torch.optim.Optimizer, step: int) -> bool:
    """Whether the backward pass of optimizer step ``step`` must keep its graph (create_graph=True),
    e.g. for Sophia's Hutchinson Hessian estimate. Optimizers that need it define
    ``needs_create_graph(step) -> bool``; the trainer calls this before every backward."""
    fn = getattr(optimizer, "needs_create_graph", None)
    return bool(fn(step)) if fn is not None else False


def hessian_context(optimizer: torch.optim.Optimizer, step: int) -> contextlib.AbstractContextManager[Any]:
    """Context for the forward and backward of every micro-batch of optimizer step ``step``: on
    Sophia's refresh steps it selects the math attention kernel (the fused ones have no double
    backward); a no-op otherwise."""
    fn = getattr(optimizer, "hessian_context", None)
    return fn(step) if fn is not None else contextlib.nullcontext()


def set_train_mode(optimizer: torch.optim.Optimizer, train: bool) -> None:
    """Schedule-free optimizers keep two sets of weights: ``train=True`` before training forward
    passes, ``False`` before evaluation or exporting the model. A no-op for all others."""
    fn = getattr(optimizer, "train" if train else "eval", None)
    if callable(fn):
        fn()


def check_compatibility(t: TrainingConfig, *, lengths: bool = True) -> None:
    """Raise ConfigError for an optimizer/schedule setting that cannot work, before any work is done:
    unknown name or keyword, a value the optimizer refuses, a weight decay or Adam setting it would
    ignore (``SETTINGS``), a decay that would zero or flip the weights (:func:`decay_factor`), bad
    schedule values, and fp16 loss scaling with Sophia (the scale would enter its Hessian estimate).
    ``lengths``: :func:`~hftraining.optim.schedules.check_schedule`'s."""
    name, spec = _resolve(t)
    _optimizer_kwargs(name, spec, t)
    _check_settings_used(t)
    # The values are checked by the constructor: build it over a matrix and a norm (both kinds of group,
    # Muon's two parts), so a bad value is said before the data are read, not after; the probe's
    # initialisation must not draw from the run's seeded generator (the model's weights would change)
    with torch.random.fork_rng(devices=[]):
        build_optimizer(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), t)
    _check_decay(name, t)
    check_schedule(t, lengths=lengths)
    if name == "sophia":
        # Gradient checkpointing works: non-reentrant checkpoints support the double backward
        # (tests/test_optim.py); reentrant ones leave gradients without a graph and Sophia says so.
        if resolved_precision(t) == "fp16":
            raise ConfigError(
                "training.precision: fp16 cannot be used with training.optimizer: sophia "
                "(the loss scale enters its Hessian estimate); use bf16 or fp32"
            )


def needs_double_backward(t: TrainingConfig) -> bool:
    """Whether the optimizer named by ``t`` differentiates through the gradient (Sophia)."""
    return _resolve(t)[0] == "sophia"
