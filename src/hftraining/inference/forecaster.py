"""Inference API: a model folder → forecasts for new data, with exactly the preprocessing the
model was trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hftraining.data.io import load_frames
from hftraining.data.pipeline import Preprocessing, apply, latest_windows
from hftraining.data.windows import WindowSet
from hftraining.errors import DataError
from hftraining.eval.evaluate import predict_scaled
from hftraining.models import ForecastModel, load_preprocessing


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder (uses its ``final/``) or a model folder."""
    p = Path(path)
    if (p / "final" / "config.json").exists():
        return p / "final"
    if (p / "config.json").exists() and (p / "model.safetensors").exists():
        return p
    if not p.exists():
        raise DataError(f"{p}: no such run or model folder")
    raise DataError(f"{p}: neither a run folder (with final/) nor a model folder (config.json + model.safetensors)")


class Forecaster:
    """``Forecaster.from_pretrained(dir).predict(data)`` → one row per symbol × horizon step."""

    def __init__(self, model: ForecastModel, preprocessing: Preprocessing, model_dir: Path | None = None):
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.model_dir = model_dir

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Forecaster":
        d = resolve_model_dir(path)
        return cls(ForecastModel.from_pretrained(d), Preprocessing.from_dict(load_preprocessing(d)), d)

    def _frames(self, data) -> dict[str, pd.DataFrame]:
        if isinstance(data, dict):
            return data
        if isinstance(data, pd.DataFrame):
            if "symbol" not in data.columns:
                raise DataError("frame: a 'symbol' column is needed to predict from a DataFrame")
            from hftraining.data.io import normalise

            return {str(s): normalise(g.drop(columns="symbol"), Path(f"<frame:{s}>")) for s, g in data.groupby("symbol")}
        return load_frames(data)

    def predict_windows(self, ws: WindowSet, batch_size: int = 256) -> np.ndarray:
        """(W, H) forecast log returns for the windows of ``ws``."""
        return predict_scaled(self.model, ws, batch_size) * self.preprocessing.target_scale

    def windows(self, data=None, split: str = "test") -> WindowSet:
        """Windows of ``split`` ("train", "val", "test" or "all") of ``data``; ``None``: the training data."""
        if data is None:
            d = self.preprocessing.data
            return apply(self.preprocessing, load_frames(d.get("data_dir"), d.get("symbols")), split)
        return apply(self.preprocessing, self._frames(data), split)

    def predict(self, data) -> pd.DataFrame:
        """Forecasts from the latest window of each symbol in ``data`` (path, frame or {symbol: frame}).

        Columns: symbol, as_of (UTC timestamp of the last input row), step (1..H), forecast_return
        (log return of step over step-1), forecast_cum_return, last_close, forecast_price.
        """
        ws = latest_windows(self.preprocessing, self._frames(data))
        pred = predict_scaled(self.model, ws) * self.preprocessing.target_scale  # (S, H)
        H = pred.shape[1]
        cum = np.cumsum(pred.astype(np.float64), axis=1)
        rows = {
            "symbol": np.repeat(ws.symbols, H),
            "as_of": np.repeat(pd.to_datetime(ws.times, utc=True), H),
            "step": np.tile(np.arange(1, H + 1), len(ws)),
            "forecast_return": pred.reshape(-1).astype(np.float64),
            "forecast_cum_return": cum.reshape(-1),
            "last_close": np.repeat(ws.last_close, H),
        }
        out = pd.DataFrame(rows)
        out["forecast_price"] = out["last_close"] * np.exp(out["forecast_cum_return"])
        return out
