"""Forecast metrics as pure functions of arrays (W windows × H horizon steps, log-return units)."""

from __future__ import annotations

import numpy as np


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((pred - true) ** 2))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true)))


def directional_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of forecasts whose sign matches the realised return's sign.

    Realised returns of exactly 0 are left out; a forecast of exactly 0 states no direction and
    scores 0.5 (a coin flip), so the zero-return forecast scores 0.5 rather than 0.
    """
    keep = true != 0
    if not keep.any():
        return float("nan")
    p, t = np.sign(pred[keep]), np.sign(true[keep])
    score = np.where(p == 0, 0.5, (p == t).astype(np.float64))
    return float(score.mean())


def forecast_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MSE, MAE and directional accuracy pooled over all windows and horizon steps."""
    return {"mse": mse(pred, true), "mae": mae(pred, true), "directional_accuracy": directional_accuracy(pred, true)}
