"""Score a model on a window set beside the naive forecasts, in log-return units."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from hftraining.data.windows import WindowSet, eval_batches
from hftraining.eval.metrics import forecast_metrics
from hftraining.models import ForecastModel


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_scaled(
    model: ForecastModel,
    ws: WindowSet,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_batches: int | None = None,
) -> np.ndarray:
    """(W, H) forecasts in scaled target units for the windows of ``ws`` (all, or the first batches)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    outs = []
    try:
        for idx in eval_batches(len(ws), batch_size, max_batches):
            b = ws.batch(idx)
            with autocast_context(device, precision):
                out = model(b["x"].to(device), None, b["past"].to(device))
            outs.append(out.prediction.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0, model.horizon), np.float32)


def naive_forecasts(ws: WindowSet, n: int | None = None) -> dict[str, np.ndarray]:
    """Forecasts that need no model, scaled units: zero return, and drift (mean return of the window)."""
    n = len(ws) if n is None else n
    H = ws.horizon
    past = ws.returns[ws.ends[:n, None] + np.arange(-ws.seq_len + 1, 1)]  # (n, L)
    return {
        "zero": np.zeros((n, H), np.float32),
        "drift": np.repeat(past.mean(axis=1, keepdims=True), H, axis=1),
    }


def evaluate_predictions(pred_scaled: np.ndarray, ws: WindowSet, target_scale: float) -> dict[str, Any]:
    """Metrics of ``pred_scaled`` (the first n windows of ``ws``) beside the naive forecasts."""
    n = len(pred_scaled)
    true = ws.targets()[:n].astype(np.float64) * target_scale
    result: dict[str, Any] = {"n_windows": int(n), "horizon": int(ws.horizon)}
    result["model"] = forecast_metrics(pred_scaled.astype(np.float64) * target_scale, true)
    result["baselines"] = {
        name: forecast_metrics(p.astype(np.float64) * target_scale, true) for name, p in naive_forecasts(ws, n).items()
    }
    zero_mse = result["baselines"]["zero"]["mse"]
    result["mse_vs_zero"] = result["model"]["mse"] / zero_mse if zero_mse > 0 else float("nan")
    return result


def format_table(result: dict[str, Any], title: str = "test") -> str:
    """A small aligned table: the model beside each baseline."""
    rows = [("model", result["model"])] + [(f"naive:{k}", v) for k, v in result["baselines"].items()]
    lines = [f"{title}: {result['n_windows']} windows × {result['horizon']} steps (log-return units)",
             f"{'forecast':<14}{'MSE':>12}{'MAE':>12}{'dir.acc':>10}"]
    for name, m in rows:
        lines.append(f"{name:<14}{m['mse']:>12.6g}{m['mae']:>12.6g}{m['directional_accuracy']:>10.4f}")
    verdict = "beats" if result["model"]["mse"] < result["baselines"]["zero"]["mse"] else "does NOT beat"
    lines.append(f"model MSE / zero-forecast MSE = {result['mse_vs_zero']:.4f}: the model {verdict} the zero-return forecast")
    return "\n".join(lines)


def evaluate_model_dir(path, data=None, split: str = "test") -> dict[str, Any]:
    """Score the model of a run/model folder on ``split`` of ``data`` (default: the data it was
    trained on), beside the naive forecasts."""
    from hftraining.inference.forecaster import Forecaster

    fc = Forecaster.from_pretrained(path)
    ws = fc.windows(data, split)
    if len(ws) == 0:
        from hftraining.errors import DataError

        raise DataError(f"data: the {split} split yields no window")
    pred = predict_scaled(fc.model, ws)
    return {"split": split, "model_dir": str(fc.model_dir), **evaluate_predictions(pred, ws, fc.preprocessing.target_scale)}
