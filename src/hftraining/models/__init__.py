"""Models. ``build_model(cfg, n_features, horizon, seq_len)`` builds the registered ``cfg.type``.
Models never read files or the config file: they receive their own config section."""

from __future__ import annotations

from hftraining.config import ModelConfig
from hftraining.models import transformer  # noqa: F401  (registers)
from hftraining.models.base import ForecastModel, load_preprocessing
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS

__all__ = ["MODELS", "ForecastModel", "ForecastOutput", "build_model", "load_preprocessing"]


def build_model(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int) -> ForecastModel:
    """Build the model named by ``cfg.type`` for inputs (B, seq_len, n_features) → (B, horizon)."""
    return MODELS.get(cfg.type)(cfg, n_features, horizon, seq_len)
