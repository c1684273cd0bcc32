"""Optimizer state without pickle: ``optimizer.state_dict()`` split into named tensors (for a
safetensors file) and a JSON-serialisable tree that refers to them.

    tensors, meta = optimizer_state_to_flat(opt.state_dict())
    safetensors.torch.save_file(tensors, "optimizer.safetensors"); json.dump(meta, f)
    opt.load_state_dict(optimizer_state_from_flat(safetensors.torch.load_file(...), json.load(f)))

The tree keeps what JSON alone would lose: tuples (betas), non-string dict keys (parameter ids),
``torch.dtype`` values and non-finite floats. Anything else that is not plain data is a TypeError,
never a pickle.
"""

from __future__ import annotations

import math
from typing import Any

import torch

FORMAT = "hftraining.optimizer_state/1"


def optimizer_state_to_flat(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` → (tensors by name, JSON-serialisable meta)."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[int, str]] = set()

    def enc(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach()
            strides = None
            if not t.is_contiguous():
                # kept to be rebuilt on loading: kernels round differently over another layout (SOAP's and
                # SPlus's transposed eigenbases), so a resumed run drifted from the uninterrupted one
                dense = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d))).is_contiguous()
                strides = list(t.stride()) if dense else None  # a slice or broadcast view: stored compact
                t = t.contiguous()
            key = (t.untyped_storage().data_ptr(), str(t.device))
            if t.numel() and key in storages:  # safetensors refuses tensors that share memory
                t = t.clone()
            storages.add(key)
            tensors[path] = t
            return {"__tensor__": path} if strides is None else {"__tensor__": path, "__strides__": strides}
        if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, torch.dtype):
            return {"__dtype__": str(obj).removeprefix("torch.")}
        if isinstance(obj, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: enc(v, f"{path}.{k}") for k, v in obj.items()}
            return {"__items__": [[enc(k, f"{path}.k{i}"), enc(v, f"{path}.{k}")] for i, (k, v) in enumerate(obj.items())]}
        raise TypeError(f"optimizer state at {path!r}: cannot store a {type(obj).__name__} without pickle")

    meta = {"format": FORMAT, "state_dict": enc(state_dict, "opt")}
    return tensors, meta


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_state_to_flat`: a dict for ``optimizer.load_state_dict``."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"not an optimizer state of format {FORMAT!r}: {meta.get('format')!r}")

    def dec(obj: Any) -> Any:
        if isinstance(obj, list):
            return [dec(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "__tensor__" in obj:
            # a copy in memory of its own: a tensor read from a safetensors file sits at the file's offset
            # (8-byte, not 64-byte, aligned), and some CPU kernels (reductions, matrix products) round
            # differently there, so a resumed run drifted from the uninterrupted one in the last bits
            t = tensors[obj["__tensor__"]]
            if "__strides__" in obj:  # the saved layout, values unchanged
                return torch.empty_strided(t.shape, obj["__strides__"], dtype=t.dtype, device=t.device).copy_(t)
            return t.clone()
        if "__tuple__" in obj:
            return tuple(dec(v) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {dec(k): dec(v) for k, v in obj["__items__"]}
        if "__dtype__" in obj:
            dtype = getattr(torch, obj["__dtype__"], None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {obj['__dtype__']!r} in optimizer state")
            return dtype
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: dec(v) for k, v in obj.items()}

    return dec(meta["state_dict"])
