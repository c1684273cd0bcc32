"""Checkpoints: the only writer of weights.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding
  model.safetensors                      the model's weights
  optimizer.safetensors, optimizer.json  the optimizer state (tensors / everything else)
  trainer_state.json                     step, epoch, data order, scheduler, early stopping, RNGs
  rng.safetensors                        torch's RNG states
  config.json                            the resolved config
It is written to a hidden temporary folder, every file fsync'ed, then renamed into place: a
folder named ``step-*`` is always complete. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hftraining.core.errors import UserError
from hftraining.core.jsonio import write_json
from hftraining.models.base import ForecastModel
from hftraining.optim.state import optimizer_state_from_flat, optimizer_state_to_flat

STEP_DIR = re.compile(r"^step-(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=1, exact=True)  # state must round-trip exactly (an infinite hyperparameter too)


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of the Python, NumPy and torch RNG states."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return meta, tensors


def set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write checkpoint ``step`` atomically under ``ckpt_root``; return its folder."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    opt_tensors, opt_meta = optimizer_state_to_flat(optimizer.state_dict())
    save_file({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
    _write_json(tmp / "optimizer.json", opt_meta)
    rng_meta, rng_tensors = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    _write_json(tmp / "trainer_state.json", {**trainer_state, "rng": rng_meta})
    _write_json(tmp / "config.json", config)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # a re-run of the same step (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_root)
    return final


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. Temporary folders of an interrupted write are ignored."""
    if not ckpt_root.is_dir():
        return []
    out = []
    for p in ckpt_root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def clean_temporary(ckpt_root: Path) -> None:
    """Remove folders of checkpoint writes that never finished."""
    if ckpt_root.is_dir():
        for p in ckpt_root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def rotate(ckpt_root: Path, keep: int, protect: set[Path]) -> None:
    """Delete the oldest checkpoints beyond ``keep``, never one in ``protect`` (latest, best)."""
    if keep <= 0:
        return
    ckpts = list_checkpoints(ckpt_root)
    excess = len(ckpts) - keep
    for _, path in ckpts:
        if excess <= 0:
            break
        if path.resolve() in {p.resolve() for p in protect}:
            continue
        shutil.rmtree(path)
        excess -= 1


def resolve_resume(spec: str, ckpt_root: Path) -> Path | None:
    """``auto`` → latest complete checkpoint under ``ckpt_root`` (None if there is none); a path → it."""
    if spec == "auto":
        ckpts = list_checkpoints(ckpt_root)
        return ckpts[-1][1] if ckpts else None
    path = Path(spec)
    if not (path / "trainer_state.json").exists():
        raise UserError(f"training.resume_from_checkpoint: {path} is not a complete checkpoint folder")
    return path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place and return the trainer state (RNGs restored too)."""
    load_weights(path, model)
    opt_meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    optimizer.load_state_dict(optimizer_state_from_flat(load_file(str(path / "optimizer.safetensors")), opt_meta))
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    set_rng_state(state.pop("rng"), load_file(str(path / "rng.safetensors")))
    return state


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Load the model weights of a checkpoint (or model) folder into ``model`` in place."""
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))


FITTED_BASELINES_DIR = "baselines"


def save_final(run_dir: Path, model: ForecastModel, preprocessing: dict[str, Any]) -> Path:
    """Write the run's model folder ``<run>/final/`` (config.json, model.safetensors, preprocessing.json)."""
    return model.save_pretrained(run_dir / "final", preprocessing=preprocessing)


def save_fitted_baselines(run_dir: Path, models: dict[str, ForecastModel], preprocessing: dict[str, Any]) -> Path:
    """Write each fitted baseline as a model folder ``<run>/baselines/<name>/`` (the bar the run's
    model was scored against; ``hftraining evaluate`` scores it again from there)."""
    root = Path(run_dir) / FITTED_BASELINES_DIR
    for name, m in models.items():
        m.save_pretrained(root / name, preprocessing=preprocessing)
    return root
