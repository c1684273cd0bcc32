"""The model registry (``model.type``)."""

from hftraining.registry import Registry

MODELS = Registry("model", "model.type")
