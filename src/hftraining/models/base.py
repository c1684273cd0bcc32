"""Shared base of all models: construction from its own config section and HF-style persistence.

A model folder holds ``config.json`` (the model section and the shapes it was built for) and
``model.safetensors``; loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError, DataError
from hftraining.core.files import replace_folder
from hftraining.core.jsonio import write_json
from hftraining.models import folder
from hftraining.models.outputs import ForecastOutput
from hftraining.models.predict import usable_device
from hftraining.models.registry import build_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESSING_NAME = "preprocessing.json"
FORMAT_VERSION = folder.FORMAT_VERSION


class ForecastModel(nn.Module):
    """Base class. Subclasses implement ``forward(x, mask=None, past=None) -> ForecastOutput``.

    ``x`` is (B, L, F) scaled features; ``mask`` is (B, L) bool, True where a time step is real
    (short histories are left-padded), or None when every step is real; ``past`` is (B, L), the
    target series itself (1-step log returns of the close, in scaled target units) over the input
    window, for models and baselines that forecast from the target's own history.
    """

    supports_gradient_checkpointing = False
    needs_training = True
    fits_on_data = False
    """True for a model fitted by ``fit_windows(train, val)`` instead of gradient steps (ridge, LightGBM)."""
    fitted_how = "in closed form"
    """How :meth:`fit_windows` fits the model, as the training log says it (``fits_on_data`` models)."""
    exportable = True
    """False for a model with no ONNX graph (LightGBM's trees): ``hftraining export`` says so."""
    settings: frozenset[str] = frozenset()
    """The ``model.*`` keys (ModelConfig fields) this model type reads, beside those every run reads
    (:data:`registry.EVERY_MODEL`); a run that sets another one away from its default is told that
    it has no effect (:func:`registry.unread_settings`)."""
    fp32_heads: bool | None = None
    """Models with learned output heads set it True: under a bf16 (fp16) autocast the heads read the encoder's
    output in fp32 and forecast in fp32. A bf16 forecast holds 8 significant bits, so forecasts of nearby
    windows tie (the quickstart's transformer gave 74 distinct step-1 forecasts for 512 test windows), and a
    rank IC or a top-k book reads ties. False for a folder written before 2026-12-07 (its ``config.json``
    has no ``fp32_heads``): it forecasts as its eval.json scored. None: no such heads (DLinear keeps its
    own fp32 sum, ridge runs in fp32, LightGBM and the naive baselines in float64)."""
    heads: frozenset[str] = frozenset()
    """Optional heads this model has when configured (``outputs.HEADS``); asking a model for a head
    it lacks is a ConfigError at build time (see :func:`registry.build_model`), never a silent None."""

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__()
        self.cfg = cfg
        self.n_features = n_features
        self.horizon = horizon
        self.seq_len = seq_len
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def check_run_settings(cls, cfg: ModelConfig, horizon: int, seq_len: int) -> None:
        """ConfigErrors (one line naming the key) for settings of a run's own model that the constructor
        would bend to fit windows of ``seq_len`` rows and ``horizon`` steps. Checked before a run reads
        its data (:func:`registry.check_buildable`), not when a model folder is loaded or a fitted
        baseline is built with its default settings for the run's window; none for most models."""

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled and not self.supports_gradient_checkpointing:
            raise ConfigError(
                f"training.gradient_checkpointing: model.type {self.cfg.type!r} does not support it"
            )
        self.gradient_checkpointing = enabled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def variable_shape_keys(self) -> frozenset[str]:
        """State-dict entries whose shape is set by fitting, not by the config (checked by size only
        when a folder is loaded); none for most models."""
        return frozenset()

    # ---------------------------------------------------------------- persistence
    def init_args(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": dataclasses.asdict(self.cfg),
            "n_features": self.n_features,
            "horizon": self.horizon,
            "seq_len": self.seq_len,
            **({} if self.fp32_heads is None else {"fp32_heads": self.fp32_heads}),
        }

    def save_pretrained(self, directory: str | Path, preprocessing: dict[str, Any] | None = None) -> Path:
        """Write config.json, model.safetensors and (if given) preprocessing.json as the folder
        ``directory``, atomically: into a hidden sibling first, every file fsync'ed, then renamed into
        place (an existing folder is replaced whole). A folder of that name is always complete; a
        write that fails (disk full, no permission) leaves the previous one, or none, and is a
        one-line :class:`~hftraining.core.errors.WriteError`."""
        # contiguous copies: safetensors refuses shared or strided storage
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

        def write(tmp: Path) -> None:
            write_json(tmp / CONFIG_NAME, self.init_args())
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            if preprocessing is not None:
                write_json(tmp / PREPROCESSING_NAME, preprocessing)

        return replace_folder(directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "ForecastModel":
        """Rebuild the model saved in ``directory`` (any registered type) with its weights, on the device
        ``map_location`` (``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``; one this machine lacks is a
        one-line ConfigError naming ``map_location``, before the folder is read). The folder is untrusted
        input: every file is checked before anything is built from it (:mod:`hftraining.models.folder`); a
        failure is a one-line DataError naming the file."""
        device = usable_device(map_location, "map_location")
        d = Path(directory)
        if not (d / CONFIG_NAME).exists() and not (d / CONFIG_NAME).is_symlink():
            raise DataError(f"{d}: not a model folder (no {CONFIG_NAME})")
        cfg, n_features, horizon, seq_len = folder.model_spec(d)
        expected = folder.expected_tensors(cfg, n_features, horizon, seq_len, d / CONFIG_NAME)
        state = folder.load_weights(d, expected)  # read and checked on the CPU, then the model moves whole
        model = build_model(cfg, n_features, horizon, seq_len)
        if model.fp32_heads is not None:
            model.fp32_heads = folder.fp32_heads(d)
        try:
            model.load_state_dict(state)
        except Exception as e:  # e.g. a LightGBM booster's text that does not parse
            raise DataError(f"{d / WEIGHTS_NAME}: cannot be loaded into the model ({' '.join(str(e).split())[:200]})") from None
        return model.to(device)


def load_preprocessing(directory: str | Path) -> dict[str, Any]:
    """The checked ``preprocessing.json`` of the model folder ``directory`` (it must agree with the
    folder's ``config.json``: see :func:`hftraining.models.folder.check_preprocessing`)."""
    d = Path(directory)
    if not (d / PREPROCESSING_NAME).exists() and not (d / PREPROCESSING_NAME).is_symlink():
        raise DataError(f"{directory}: no {PREPROCESSING_NAME} (not a model folder written by hftraining)")
    _, n_features, horizon, seq_len = folder.model_spec(d)
    return folder.check_preprocessing(d, n_features, horizon, seq_len)
