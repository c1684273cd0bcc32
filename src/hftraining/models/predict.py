"""THE batched forward. Every prediction the package makes — validation during training, the
test evaluation, ``evaluate``, ``predict``, the server, ensembles and the ETT benchmark — runs
through :func:`forward_batches`, so the padding mask, the device and the autocast precision are
applied the same way everywhere, and a forecast served is the forecast that was scored.
"""

from __future__ import annotations

import platform
from contextlib import nullcontext
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from hftraining.core.errors import ConfigError
from hftraining.data.windows import WindowSet, eval_batches
from hftraining.models.outputs import ForecastOutput

PRECISIONS = ("fp32", "bf16", "fp16")


def usable_device(spec: str | torch.device, key: str, names: str = "cpu, cuda, cuda:N") -> torch.device:
    """``spec`` as a torch device this machine has, else a ConfigError naming ``key`` (``training.device``,
    a Forecaster's ``device``): torch's own is an AssertionError on ``.to("cuda")`` without CUDA, or an
    error at the first forward. ``names``: the device names the message offers."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={spec!r}: not a device ({names})") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.xpu, ...; MPS answers in torch.backends
    available = (getattr(backend, "is_available", None)
                 or getattr(getattr(torch.backends, dev.type, None), "is_available", None))
    if available is None or not available():
        raise ConfigError(f"{key}={spec!r}: {dev.type.upper()} is not available on this machine; use cpu")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ConfigError(f"{key}={spec!r}: this machine has {count()} {dev.type.upper()} device(s)")
    return dev


def autocast_context(device: torch.device | str, precision: str):
    """``torch.autocast`` for ``precision`` (``fp32``: no autocast) on ``device``'s type."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")  # resolved by the config already
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has the bf16 instructions that torch's bf16 matrix products run on (x86:
    AVX512-BF16 or AMX). Without them torch computes bf16 in software: on this project's AVX2 machine
    the quickstart trained in 228 s under bf16 autocast against 29 s in fp32. None where it cannot
    tell (another architecture, a torch without the probes)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(p is None for p in probes):
        return None
    return any(bool(p()) for p in probes)


@torch.no_grad()
def forward_batches(
    model: nn.Module,
    n: int,
    batch: Callable[[np.ndarray], tuple[torch.Tensor | None, ...]],
    batch_size: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_batches: int | None = None,
) -> Iterator:
    """Yield ``model(*inputs)`` for consecutive batches of ``n`` items in eval mode, without
    gradients, under ``precision``'s autocast on ``device``. ``batch(idx)`` returns the model's
    positional inputs for the item indices ``idx`` (None entries are passed as None); they are
    moved to ``device`` here. The model's train/eval mode is restored afterwards."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        for idx in eval_batches(n, batch_size, max_batches):
            args = [a.to(device, non_blocking=True) if a is not None else None for a in batch(idx)]
            with autocast_context(device, precision):
                yield model(*args)
    finally:
        model.train(was_training)


def window_inputs(ws: WindowSet) -> Callable[[np.ndarray], tuple[torch.Tensor | None, ...]]:
    """The ``(x, mask, past)`` inputs of a :class:`ForecastModel` for windows ``idx`` of ``ws``
    (``mask`` is None unless a window of the batch is left-padded)."""

    def inputs(idx: np.ndarray) -> tuple[torch.Tensor | None, ...]:
        b = ws.batch(idx)
        return b["x"], b.get("mask"), b["past"]

    return inputs


def predict_outputs(
    model: nn.Module,
    ws: WindowSet,
    batch_size: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """Every output of a forecasting model (or ensemble) for the windows of ``ws``, in scaled target
    units: ``prediction`` (W, H), and when the model has those heads ``quantiles`` (W, H, Q) and
    ``class_probs`` (W, H, 3: sell, hold, buy; softmax of the logits). ``max_batches``: only the
    first batches (a capped validation pass)."""
    parts: dict[str, list[torch.Tensor]] = {"prediction": [], "quantiles": [], "class_probs": []}
    out: ForecastOutput
    # kept on the device and copied back once at the end: no host wait per batch
    for out in forward_batches(model, len(ws), window_inputs(ws), batch_size, device, precision, max_batches):
        parts["prediction"].append(out.prediction.float())
        if out.quantiles is not None:
            parts["quantiles"].append(out.quantiles.float())
        if out.class_logits is not None:
            parts["class_probs"].append(torch.softmax(out.class_logits.float(), dim=-1))
    res = {k: torch.cat(v).cpu().numpy() for k, v in parts.items() if v}
    res.setdefault("prediction", np.zeros((0, model.horizon), np.float32))
    return res


def predict_scaled(
    model: nn.Module,
    ws: WindowSet,
    batch_size: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_batches: int | None = None,
) -> np.ndarray:
    """(W, H) forecasts in scaled target units (the ``prediction`` of :func:`predict_outputs`)."""
    return predict_outputs(model, ws, batch_size, device, precision, max_batches)["prediction"]


def class_threshold(model: nn.Module) -> float:
    """The ``model.classification_threshold`` that cuts the sell/hold/buy classes of ``model`` (an
    ensemble's: its members' common one)."""
    t = getattr(model, "classification_threshold", None)
    return float(t if t is not None else model.cfg.classification_threshold)
