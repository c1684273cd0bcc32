"""The model registry (``model.type``) and :func:`build_model`, the one way a model is built."""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.core.registry import Registry
from hftraining.models.losses import check_loss_weights

MODELS = Registry("model", "model.type")

MAX_PARAMETERS = 1_000_000_000
"""Most parameters and buffer values a model may have (4 GB of float32): a model folder of more is
refused when it is loaded (:mod:`hftraining.models.folder`), and a run is refused one before it trains."""
CAPS = {"hidden_size": 65_536, "num_heads": 4_096, "num_layers": 1_024, "intermediate_size": 1 << 20,
        "patch_len": 1 << 16, "patch_stride": 1 << 16, "moving_avg": 1 << 16, "season_length": 1 << 20,
        "ridge_lags": 1 << 16}
"""Largest value of the model keys that decide a model's size (checked before it is built)."""
DIM_CAPS = {"n_features": 100_000, "horizon": 100_000, "seq_len": 1_000_000}
"""Most input columns, forecast steps and window rows of a model."""
TRAINING_BYTES = 16
"""Bytes a parameter takes while it trains in float32: the weight, its gradient and AdamW's two moments."""


def check_heads(cfg: ModelConfig, model_cls: type) -> None:
    """A head that ``cfg`` asks for and the model type does not have is a ConfigError naming the key."""
    wanted = {"quantile": ("model.quantiles", bool(cfg.quantiles)),
              "classification": ("model.classification_threshold", cfg.classification_threshold > 0)}
    for head, (key, asked) in wanted.items():
        if asked and head not in model_cls.heads:
            having = ", ".join(n for n in MODELS.names() if head in MODELS.get(n).heads) or "none"
            raise ConfigError(f"{key}: model.type {cfg.type!r} has no {head} head (models with one: {having}); "
                              f"remove the key or choose another model.type")


EVERY_MODEL = frozenset({"type", "loss", "loss_weights", "quantiles", "classification_threshold"})
"""The ``model.*`` keys every model type answers to: a loss or a head it cannot use is refused by name
(:func:`check_heads`, :func:`~hftraining.models.losses.check_loss_weights`, the trainer's loss check).
``loss_weights`` weighs the parts of a loss that gradient steps descend: a model fitted otherwise (ridge,
LightGBM, the naive baselines) does not read it (:func:`unread_settings`)."""


def unread_settings(cfg: ModelConfig) -> list[str]:
    """``model.key=value`` of each key ``cfg`` sets away from its default that its ``model.type`` does not
    read (:attr:`ForecastModel.settings`): ``model.dropout`` for DLinear, ``model.pooling`` for PatchTST,
    ``model.patch_len`` for the transformer. They change nothing in the run; a config shared by several
    model types (``--config configs/quickstart.yaml model.type=lightgbm``) sets some, so they are said,
    not refused."""
    model_cls = MODELS.get(cfg.type)
    read = model_cls.settings | (EVERY_MODEL if model_cls.needs_training else EVERY_MODEL - {"loss_weights"})
    default = ModelConfig()
    return [f"model.{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
            if f.name not in read and getattr(cfg, f.name) != getattr(default, f.name)]


def unread_settings_warning(cfg: ModelConfig) -> str | None:
    """The one-line warning a run says for :func:`unread_settings` (None when there is none)."""
    unread = unread_settings(cfg)
    if not unread:
        return None
    return (f"warning: model.type {cfg.type!r} does not read {', '.join(unread)}: "
            f"{'it has' if len(unread) == 1 else 'they have'} no effect on this run")


def check_model(cfg: ModelConfig) -> type:
    """The model class of ``cfg.type``, once the model section's type, loss weights and heads are known
    to fit it (ConfigErrors naming the key): what can be checked before any data is read."""
    factory = MODELS.get(cfg.type)
    check_loss_weights(cfg)  # fail at build time, not at the first training step
    check_heads(cfg, factory)
    return factory


def build_model(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int) -> nn.Module:
    """Build the model named by ``cfg.type`` (a :class:`~hftraining.models.base.ForecastModel`) for
    inputs (B, seq_len, n_features) → (B, horizon)."""
    return check_model(cfg)(cfg, n_features, horizon, seq_len)


def host_memory() -> int | None:
    """This host's physical memory in bytes; None where the OS does not say (then only the model
    folder's limits bound a model)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _sizes(cfg: ModelConfig, horizon: int, seq_len: int) -> str:
    """The keys that decide a model's size, as a config sets them (for a refusal)."""
    ff = "null (4 x hidden_size)" if cfg.intermediate_size is None else f"{cfg.intermediate_size:,}"
    return (f"model.type {cfg.type!r} with model.hidden_size={cfg.hidden_size:,}, model.intermediate_size={ff}, "
            f"model.num_layers={cfg.num_layers:,}, data.sequence_length={seq_len:,}, data.prediction_horizon={horizon:,}")


def model_size(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int) -> tuple[int, int]:
    """(parameters, buffer values) of the model ``cfg`` describes, counted on the meta device (nothing
    allocated, no weight drawn). Every encoder layer is the same size, so the count at
    ``model.num_layers`` layers is read off models of 0 and 1 layer (no loop over the configured depth;
    tests check it against the whole model of every type). A dimension past what a tensor's size can hold
    is a ConfigError naming the size keys."""
    factory = MODELS.get(cfg.type)
    counts = []
    for layers in (0, 1):
        try:
            with torch.device("meta"):
                m = factory(dataclasses.replace(cfg, num_layers=layers), n_features, horizon, seq_len)
        except RuntimeError as e:  # "Storage size calculation overflowed" (a dimension near 2**63)
            raise ConfigError(f"{_sizes(cfg, horizon, seq_len)}: no model of that size can be built "
                              f"({' '.join(str(e).split())[:120]}); choose smaller sizes") from None
        counts.append((m.num_parameters(), sum(b.numel() for b in m.buffers())))
    (p0, b0), (p1, b1) = counts
    return p0 + cfg.num_layers * (p1 - p0), b0 + cfg.num_layers * (b1 - b0)


def check_size(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int) -> None:
    """A ConfigError (one line naming the size keys and the count) for a model that could not be held:

    - a size key past :data:`CAPS` (65,536 for ``model.hidden_size``, 1,024 layers) or :data:`DIM_CAPS`
      (1,000,000 rows for ``data.sequence_length``, 100,000 steps for ``data.prediction_horizon``), or
      more than :data:`MAX_PARAMETERS` parameters and buffer values in all: ``predict`` and
      ``evaluate`` would refuse the model folder the run writes;
    - parameters that would take more than this host's physical memory to train
      (:data:`TRAINING_BYTES` each, 4 bytes a buffer value).

    Each is checked before anything is allocated: a size typed a few digits too long
    (``model.hidden_size=1048576``, 13 TB for one attention block) ended in the allocator's traceback,
    and ``model.num_layers`` near 2**62 built layers without end."""
    for key, cap in CAPS.items():
        v = getattr(cfg, key)
        if v is not None and v > cap:
            raise ConfigError(f"model.{key}: {v:,} is more than {cap:,}, the most a model folder holds (predict "
                              f"would refuse the trained model); choose a smaller value")
    for key, v, cap, unit in (("data.sequence_length", seq_len, DIM_CAPS["seq_len"], ""),
                              ("data.prediction_horizon", horizon, DIM_CAPS["horizon"], ""),
                              ("data.features", n_features, DIM_CAPS["n_features"], " input columns")):
        if v > cap:
            raise ConfigError(f"{key}: {v:,}{unit} is more than {cap:,}, the most a model folder holds (predict "
                              f"would refuse the trained model); choose a smaller value")
    n, b = model_size(cfg, n_features, horizon, seq_len)
    if n + b > MAX_PARAMETERS:
        raise ConfigError(f"{_sizes(cfg, horizon, seq_len)}: {n:,} parameters and {b:,} buffer values, more than the "
                          f"{MAX_PARAMETERS:,} a model folder holds (predict would refuse it); choose smaller sizes")
    need, have = TRAINING_BYTES * n + 4 * b, host_memory()
    if have is not None and need > have:
        raise ConfigError(f"{_sizes(cfg, horizon, seq_len)}: {n:,} parameters and {b:,} buffer values, "
                          f"{need / 2**30:,.1f} GiB to train in float32 (weights, gradients, AdamW's two moments), "
                          f"more than this host's {have / 2**30:,.1f} GiB of memory; choose smaller sizes")


def check_buildable(cfg: ModelConfig, horizon: int, seq_len: int, gradient_checkpointing: bool = False,
                    n_features: int = 1) -> None:
    """Check the model of ``cfg`` for windows of ``seq_len`` rows and ``horizon`` steps (``n_features``
    input columns) before the run folder is touched: its size (:func:`check_size`), then the model built
    once on the meta device (nothing allocated, no weight drawn) and dropped, so that a ConfigError its
    settings check (:meth:`ForecastModel.check_run_settings`: ``model.ridge_lags`` longer than the window)
    or its constructor raises (``model.season_length`` longer than the window,
    ``training.gradient_checkpointing`` on a model without it) is said too. Raised while the trainer was
    built, it came after ``output.overwrite`` had removed the earlier run."""
    check_model(cfg).check_run_settings(cfg, horizon, seq_len)
    check_size(cfg, n_features, horizon, seq_len)
    with torch.device("meta"):
        build_model(cfg, n_features, horizon, seq_len).set_gradient_checkpointing(gradient_checkpointing)
