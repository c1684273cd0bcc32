"""Models. ``build_model(cfg, n_features, horizon, seq_len)`` builds the registered ``cfg.type``.
Models never read files or the config file: they receive their own config section."""

from __future__ import annotations

from hftraining.models import baselines  # noqa: F401  (registers)
from hftraining.models import dlinear  # noqa: F401  (registers)
from hftraining.models import gbm  # noqa: F401  (registers)
from hftraining.models import patchtst  # noqa: F401  (registers)
from hftraining.models import ridge  # noqa: F401  (registers)
from hftraining.models import transformer  # noqa: F401  (registers)
from hftraining.models.base import ForecastModel, load_preprocessing
from hftraining.models.losses import compute_loss
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS, build_model

__all__ = ["MODELS", "ForecastModel", "ForecastOutput", "build_model", "compute_loss", "load_preprocessing", "model_names"]


def model_names() -> dict[str, str]:
    """{name: one-line description} of every registered model (``hftraining list models``);
    the description is the first line of the model class's docstring."""
    out = {}
    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip()
        out[name] = doc.splitlines()[0] if doc else "(no description)"
    return out
