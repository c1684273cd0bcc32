"""Inference API: a model folder → forecasts for new data, with exactly the preprocessing the
model was trained with.

``Forecaster.from_pretrained(dir)`` loads a single model folder (``config.json`` +
``model.safetensors`` + ``preprocessing.json``), a run folder (its ``final/``) or an ensemble
folder (``ensemble.json``, see :mod:`hftraining.inference.ensemble`); all three predict alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hftraining.config import DataConfig
from hftraining.data.pipeline import Preprocessing, apply, latest_windows
from hftraining.data.windows import WindowSet, eval_batches
from hftraining.errors import DataError
from hftraining.models import ForecastModel, load_preprocessing

CLASS_NAMES = ("sell", "hold", "buy")  # order of ForecastOutput.class_logits[..., k]
ENSEMBLE_NAME = "ensemble.json"


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder (uses its ``final/`` or ``ensemble/``), a model folder or an ensemble folder."""
    p = Path(path)
    if (p / "final" / "config.json").exists():
        return p / "final"
    if (p / ENSEMBLE_NAME).exists():
        return p
    if (p / "ensemble" / ENSEMBLE_NAME).exists():  # the run folder of ``train --seeds N``
        return p / "ensemble"
    if (p / "config.json").exists() and (p / "model.safetensors").exists():
        return p
    if not p.exists():
        raise DataError(f"{p}: no such run or model folder")
    raise DataError(
        f"{p}: neither a run folder (with final/), a model folder (config.json + model.safetensors) "
        f"nor an ensemble folder ({ENSEMBLE_NAME})"
    )


@torch.no_grad()
def model_outputs(model: torch.nn.Module, ws: WindowSet, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every output of ``model`` for the windows of ``ws``, batched, in scaled target units:
    ``prediction`` (W, H), and when the model has those heads ``quantiles`` (W, H, Q) and
    ``class_probs`` (W, H, 3: sell, hold, buy; softmax of the logits)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"prediction": [], "quantiles": [], "class_probs": []}
    try:
        for idx in eval_batches(len(ws), batch_size):
            b = ws.batch(idx)
            out = model(b["x"], None, b["past"])
            parts["prediction"].append(out.prediction.float().numpy())
            if out.quantiles is not None:
                parts["quantiles"].append(out.quantiles.float().numpy())
            if out.class_logits is not None:
                parts["class_probs"].append(torch.softmax(out.class_logits.float(), dim=-1).numpy())
    finally:
        model.train(was_training)
    res = {k: np.concatenate(v) for k, v in parts.items() if v}
    res.setdefault("prediction", np.zeros((0, model.horizon), np.float32))
    return res


def needed_rows(pre: Preprocessing) -> int:
    """Validated rows one symbol needs for a forecast: the features' warm-up, then one input
    window (one row more when there is no warm-up: the first row has no return)."""
    from hftraining.data.features import feature_warmup

    warmup = feature_warmup(pre.features)
    return warmup + pre.seq_len + (warmup == 0)


class Forecaster:
    """``Forecaster.from_pretrained(dir).predict(data)`` → one row per symbol × horizon step."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing, model_dir: Path | None = None):
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.model_dir = model_dir

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Forecaster":
        d = resolve_model_dir(path)
        if (d / ENSEMBLE_NAME).exists():
            from hftraining.inference.ensemble import load_ensemble

            model, pre = load_ensemble(d)
            return cls(model, pre, d)
        return cls(ForecastModel.from_pretrained(d), Preprocessing.from_dict(load_preprocessing(d)), d)

    # ------------------------------------------------------------------ description
    @property
    def quantile_levels(self) -> list[float]:
        """Levels of the quantile head (empty without one)."""
        return list(getattr(self.model, "quantile_levels", None) or getattr(getattr(self.model, "cfg", None), "quantiles", []) or [])

    @property
    def has_classes(self) -> bool:
        m = self.model
        return bool(getattr(m, "has_classes", False) or getattr(getattr(m, "cfg", None), "classification_threshold", 0) > 0)

    def data_config(self, data_dir: Any = None, strict: bool = False) -> DataConfig:
        """The data section the model was trained with (its validation rules), reading ``data_dir``.
        ``strict``: a row that training would drop for an invalid value or a duplicate timestamp is
        an error instead (the server answers it with a 4xx rather than forecasting without the row)."""
        d = dataclasses.replace(self.preprocessing.data_config(), data_dir=data_dir, symbols=None)
        if strict:
            d = dataclasses.replace(d, invalid_values="error", duplicate_timestamps="error")
        return d

    def min_rows(self) -> int:
        return needed_rows(self.preprocessing)

    # ------------------------------------------------------------------ input
    def load(self, data, strict: bool = False) -> dict[str, pd.DataFrame]:
        """Validate ``data`` with the training rules → {symbol: normalised frame}.

        ``data``: a file, folder or glob (or a list of them); a DataFrame with a ``symbol`` column;
        or {symbol: DataFrame}. Columns are matched as the readers match them (case-insensitive,
        aliases); a missing ``timestamp``/``close``/``volume`` column is a DataError naming it.
        """
        from hftraining.data import io
        from hftraining.data.validate import load_and_validate, validate_frame

        if isinstance(data, pd.DataFrame):
            table = io.canonical_columns(data, Path("<frame>"))
            if "symbol" not in table.columns:
                raise DataError("frame: a 'symbol' column is needed to predict from a DataFrame (or pass {symbol: frame})")
            data = io.split_symbols(table.reset_index(drop=True), Path("<frame>"))
            if "" in data:
                raise DataError("frame: column 'symbol' is empty in some rows")
        if isinstance(data, dict):
            d = self.data_config(strict=strict)
            out = {}
            for sym, frame in data.items():
                if not isinstance(frame, pd.DataFrame):
                    raise DataError(f"{sym}: expected a DataFrame of OHLCV rows, got {type(frame).__name__}")
                table = io.canonical_columns(frame.reset_index(drop=True), Path(f"<{sym}>"))
                if len(table) == 0:
                    raise DataError(f"{sym}: no rows")
                out[str(sym)], _ = validate_frame(table, d, str(sym), first_row=0, unit="row")  # row = 0-based position
            return out
        frames, _ = load_and_validate(self.data_config(data, strict), enforce_min_rows=False)
        return frames

    # ------------------------------------------------------------------ windows and forecasts
    def windows(self, data=None, split: str = "test") -> WindowSet:
        """Windows of ``split`` ("train", "val", "test" or "all") of ``data``; ``None``: the training data."""
        if data is None:
            from hftraining.data.validate import load_and_validate

            d = self.preprocessing.data_config()
            frames, _ = load_and_validate(d, enforce_min_rows=False)
            return apply(self.preprocessing, frames, split)
        return apply(self.preprocessing, self.load(data), split)

    def predict_windows(self, ws: WindowSet, batch_size: int = 256) -> np.ndarray:
        """(W, H) forecast log returns for the windows of ``ws``."""
        return model_outputs(self.model, ws, batch_size)["prediction"] * self.preprocessing.target_scale

    def latest_windows(self, frames: dict[str, pd.DataFrame]) -> WindowSet:
        """The most recent input window of each symbol; too short a history is a DataError naming it."""
        need = self.min_rows()
        for sym, frame in frames.items():
            if len(frame) < need:
                raise DataError(
                    f"{sym}: {len(frame)} usable rows, the model needs {need} (feature warm-up "
                    f"{need - self.preprocessing.seq_len} + data.sequence_length {self.preprocessing.seq_len})"
                )
        if not frames:
            raise DataError("data: no symbol to forecast")
        return latest_windows(self.preprocessing, frames)

    def predict(self, data, batch_size: int = 256, strict: bool = False) -> pd.DataFrame:
        """Forecasts from the latest window of each symbol in ``data`` (path, frame or {symbol: frame}).

        Columns: symbol, as_of (UTC timestamp of the last input row), step (1..H), forecast_return
        (log return of step over step-1), forecast_cum_return, last_close, forecast_price; then
        ``return_q<level>`` (forecast quantiles of the step's log return) when the model has a
        quantile head, and ``p_sell``, ``p_hold``, ``p_buy`` when it has the buy/hold/sell head.
        ``strict``: see :meth:`data_config`.
        """
        ws = self.latest_windows(self.load(data, strict))
        return self.forecast_table(ws, model_outputs(self.model, ws, batch_size))

    def forecast_table(self, ws: WindowSet, outs: dict[str, np.ndarray]) -> pd.DataFrame:
        """The table of :meth:`predict` from the windows and the raw outputs of the model."""
        s = self.preprocessing.target_scale
        pred = outs["prediction"].astype(np.float64) * s  # (S, H) log returns
        S, H = pred.shape
        cum = np.cumsum(pred, axis=1)
        last_close = np.repeat(np.asarray(ws.last_close, np.float64), H)
        rows: dict[str, Any] = {
            "symbol": np.repeat(np.asarray(ws.symbols, dtype=object)[ws.symbol_ids], H),
            "as_of": np.repeat(pd.to_datetime(ws.times, utc=True), H),
            "step": np.tile(np.arange(1, H + 1), S),
            "forecast_return": pred.reshape(-1),
            "forecast_cum_return": cum.reshape(-1),
            "last_close": last_close,
            "forecast_price": last_close * np.exp(cum.reshape(-1)),
        }
        if "quantiles" in outs:
            q = outs["quantiles"].astype(np.float64) * s  # (S, H, Q)
            for i, level in enumerate(self.quantile_levels):
                rows[f"return_q{level:g}"] = q[:, :, i].reshape(-1)
        if "class_probs" in outs:
            for k, name in enumerate(CLASS_NAMES):
                rows[f"p_{name}"] = outs["class_probs"][:, :, k].astype(np.float64).reshape(-1)
        return pd.DataFrame(rows)
