"""Models. ``build_model(cfg, n_features, horizon, seq_len)`` builds the registered ``cfg.type``.
Models never read files or the config file: they receive their own config section."""

from __future__ import annotations

from hftraining.config import ModelConfig
from hftraining.models import baselines  # noqa: F401  (registers)
from hftraining.models import dlinear  # noqa: F401  (registers)
from hftraining.models import patchtst  # noqa: F401  (registers)
from hftraining.models import transformer  # noqa: F401  (registers)
from hftraining.models.base import ForecastModel, load_preprocessing
from hftraining.models.losses import check_loss_weights, compute_loss
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS

__all__ = ["MODELS", "ForecastModel", "ForecastOutput", "build_model", "compute_loss", "load_preprocessing", "model_names"]


def build_model(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int) -> ForecastModel:
    """Build the model named by ``cfg.type`` for inputs (B, seq_len, n_features) → (B, horizon)."""
    factory = MODELS.get(cfg.type)
    check_loss_weights(cfg)  # fail at build time, not at the first training step
    return factory(cfg, n_features, horizon, seq_len)


def model_names() -> dict[str, str]:
    """{name: one-line description} of every registered model (``hftraining list models``);
    the description is the first line of the model class's docstring."""
    out = {}
    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip()
        out[name] = doc.splitlines()[0] if doc else "(no description)"
    return out
