"""Checkpoints: the only writer of weights.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding
  model.safetensors                      the model's weights
  optimizer.safetensors, optimizer.json  the optimizer state (tensors / everything else)
  trainer_state.json                     step, epoch, data order, scheduler (its position and, in its
                                         ``lr_lambdas``, the warmup in steps it resolved and the settings it
                                         resolved it from: :class:`~hftraining.optim.schedules.Schedule`),
                                         early stopping, the non-finite steps (skipped, in a row, where the
                                         run of them began and whether a window of it was non-finite), the
                                         last step whose update was applied,
                                         the fp16 gradient scaler (``grad_scaler``), the RNGs' JSON part (``rng``),
                                         whether the model's heads run in fp32 (``fp32_heads``, a model that has
                                         such heads: :attr:`~hftraining.models.base.ForecastModel.fp32_heads`)
  rng.safetensors                        torch's RNG states, of every process
  config.json                            the resolved config
It is written to a hidden temporary folder, every file fsync'ed, then renamed into place: a
folder named ``step-*`` is always complete. Nothing is pickled. Only the main process (rank 0)
writes; what differs per process reaches it over the process group first.

Random states, per process: every rank's Python, NumPy and torch CPU generators and, on a GPU, its
own device's generator are gathered to rank 0 at the checkpoint step. ``rng`` is ``{"world_size": W,
"ranks": [{"python": …, "numpy": …}, …]}`` (rank order); rng.safetensors holds ``rank{r}.torch``
and ``rank{r}.cuda`` (a GPU run). On resume each rank restores its own, so a run resumed at the
same number of processes continues every random stream (dropout, augmentation) bit for bit. At
another number the weights, optimizer, schedule and data position still continue exactly, but no
random stream can: rank r takes rank r's saved states, a rank beyond those saved takes rank 0's,
and a warning says so. Under ``training.lr_scaling`` the peak learning rate is the new world size's, as a
run started with it has (the schedule's position is kept), and a warning says so too. A rank on a GPU resuming a checkpoint that holds no CUDA state for it
(written on the CPU) keeps the CUDA generator seeded by ``training.seed``, with a warning. Older
checkpoints (``rng`` without ``ranks``: rank 0's states only, ``torch`` and ``cuda.N`` for every
GPU rank 0 saw) restore those on every rank (each rank's GPU from its device's ``cuda.N``), with a
warning when there are several ranks, whose own streams are then lost.

``grad_scaler`` (fp16 only): ``torch.amp.GradScaler.state_dict()``, the loss scale and growth
tracker, so overflow skips fall on the same steps after a resume. It is the same on every rank
(the scaler checks the gradients after DDP has averaged them), so rank 0's is saved. A checkpoint
without it (a bf16/fp32 run's, or one written before it was saved) resumes fp16 with a fresh
scaler (scale 65536, growth tracker 0) and a warning: everything else continues exactly, the
overflow skips after the resume may fall on other steps than in an uninterrupted run.

``log_window`` (the training steps since the last training log record, :class:`~hftraining.train.trainer.
TrainerState`), per process like the random states: ``{"world_size": W, "ranks": [window of rank 0, …]}``,
gathered to rank 0 at the checkpoint step, so that the first record after a resume averages every
rank's own pending steps over the ranks, as the uninterrupted run's does. Each rank restores its own;
at another number of processes every rank takes the mean of the saved ranks' windows (the record is
the saved ranks' average, as it would have been, up to rounding). Older checkpoints (one window,
rank 0's, without ``ranks``) restore it on every rank, with a warning when there are several ranks:
the first record after the resume then stands rank 0's pending steps in for every rank's.

Tamper/crash evidence: trainer_state.json, written last before the rename, holds ``checksums``:
the byte size and SHA-256 of every other file of the folder, and the SHA-256 of its own content.
:func:`verify_checkpoint` checks them. Resuming the latest checkpoint (``auto``) skips a newest one
that fails (truncated, changed, a file missing) with a warning naming the file and the mismatch,
sets it aside as ``step-N.damaged`` and resumes from the newest one that verifies; a checkpoint
named explicitly that fails is an error. A checkpoint written before checksums existed (no
``checksums`` entry) cannot be verified: it is used as it is, with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
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

from hftraining.core.config import Config, shown
from hftraining.core.errors import UserError, WriteError, io_cause, is_io_error
from hftraining.core.jsonio import write_json
from hftraining.inference.folders import FITTED_BASELINES_DIR
from hftraining.models.base import ForecastModel
from hftraining.optim.state import optimizer_state_from_flat, optimizer_state_to_flat
from hftraining.train.distributed import DistInfo, all_gather_bytes
from hftraining.train.logging import log

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "config.json")
"""The files beside trainer_state.json that every checkpoint holds."""
TEMPORARY = (".tmp-step-*", ".trash-step-*")  # a write that never finished; a folder being deleted


class CheckpointError(UserError):
    """A checkpoint folder whose files do not match what was written (``str``: the file and how)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=1, exact=True)  # state must round-trip exactly (an infinite hyperparameter too)


RngState = tuple[dict[str, Any], dict[str, torch.Tensor]]
"""One process's random states: (JSON part: ``python``, ``numpy``; tensors: ``torch``, ``cuda``)."""


def rng_state(device: torch.device | None = None) -> RngState:
    """This process's random states: Python's, NumPy's, torch's CPU generator and, when ``device``
    is a CUDA device, that device's generator (``cuda``)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    return meta, tensors


def gather_json(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (anything JSON holds), in rank order, on every rank, each a copy parsed
    from its JSON (``[copy of obj]`` on one process). A collective: every rank of the group calls it
    at the same step."""
    if not info.enabled:
        return [json.loads(json.dumps(obj))]
    return [json.loads(raw) for raw in all_gather_bytes(json.dumps(obj).encode("utf-8"), info)]


def gather_rng_states(info: DistInfo) -> list[RngState]:
    """Every rank's :func:`rng_state` (with its own device's), in rank order, on every rank. A
    collective: every rank of the group calls it at the same step. The states travel as JSON."""
    meta, tensors = rng_state(info.device)
    if not info.enabled:
        return [(meta, tensors)]
    wire = {"meta": meta, "tensors": {k: v.cpu().numpy().tobytes().hex() for k, v in tensors.items()}}
    return [(d["meta"], {k: torch.tensor(list(bytes.fromhex(h)), dtype=torch.uint8) for k, h in d["tensors"].items()})
            for d in gather_json(wire, info)]


def set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor], device: torch.device | None = None) -> None:
    """Restore one process's states (:func:`rng_state`'s); ``cuda`` on ``device`` when it is a GPU."""
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    if device is not None and torch.device(device).type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)


def restore_rng(rng: dict[str, Any], tensors: dict[str, torch.Tensor], info: DistInfo, path: Path) -> None:
    """Restore this rank's random states from a checkpoint's ``rng`` entry and rng.safetensors; at
    another world size, and for older checkpoints, by the rule of the module docstring."""
    device = info.device
    if "ranks" in rng:
        saved = int(rng["world_size"])
        src = info.rank if info.rank < saved else 0
        if saved != info.world_size and info.is_main:
            log.warning("warning: checkpoint %s holds the random states of %d processes and resumes in %d: the weights, "
                        "optimizer, schedule and data position continue exactly, the random streams (dropout, "
                        "augmentation) cannot: rank r takes rank r's saved states, a rank beyond them rank 0's",
                        path, saved, info.world_size)
        meta, prefix = rng["ranks"][src], f"rank{src}."
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    else:  # written before per-process states: rank 0's, with cuda.N for every GPU it saw
        if info.enabled and info.is_main:
            log.warning("warning: checkpoint %s predates per-process random states: every rank restores the one "
                        "it holds (rank 0's), so ranks 1 and up do not continue their own random streams (dropout, "
                        "augmentation)", path)
        meta, mine = rng, {"torch": tensors["torch"]}
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            if f"cuda.{index}" in tensors:
                mine["cuda"] = tensors[f"cuda.{index}"]
    if device.type == "cuda" and "cuda" not in mine and info.is_main:
        log.warning("warning: checkpoint %s holds no CUDA random state for %s (written on the CPU, or on fewer GPUs): "
                    "its randomness starts from training.seed's", path, device)
    set_rng_state(meta, mine, device)


def log_window_entry(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """trainer_state.json's ``log_window``: every rank's pending log window, in rank order (each
    ``_LogWindow.state_dict()``: ``losses``, ``grad_norm``, ``parts``, ``skipped``)."""
    return {"world_size": len(windows), "ranks": windows}


def restore_log_window(saved: dict[str, Any], info: DistInfo, path: Path) -> dict[str, Any]:
    """This rank's pending log window from a checkpoint's ``log_window`` entry, by the rule of the
    module docstring (``{}``, no pending step, from a checkpoint written before it held one)."""
    if "ranks" not in saved:  # written before per-process windows: rank 0's
        if saved and info.enabled and info.is_main:
            log.warning("warning: checkpoint %s predates per-process log windows: every rank restores the one it "
                        "holds (rank 0's), so the first training record after the resume averages rank 0's pending "
                        "steps in every rank's place", path)
        return saved
    ranks = saved["ranks"]
    if int(saved["world_size"]) == info.world_size:
        return ranks[info.rank]
    # another number of processes: the saved ranks' mean, whose mean over the new ranks is the same record
    if len({len(w["losses"]) for w in ranks}) != 1 or any(w["parts"].keys() != ranks[0]["parts"].keys() for w in ranks):
        raise CheckpointError(f"{path}: {STATE_FILE}: its log_window ranks hold different steps or loss parts")
    n = len(ranks)
    return {
        "losses": [sum(col) / n for col in zip(*(w["losses"] for w in ranks))],
        "grad_norm": ranks[0]["grad_norm"],  # the gradients' norm after DDP averaged them: every rank's
        "parts": {k: sum(w["parts"][k] for w in ranks) / n for k in ranks[0]["parts"]},
        "skipped": any(w["skipped"] for w in ranks),
    }


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    rng: list[RngState] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically under ``ckpt_root``; return its folder. ``rng``: every
    rank's random states in rank order (:func:`gather_rng_states`; default: this process's, without
    a CUDA state); ``scaler``: the fp16 gradient scaler, if any. A write that fails
    (disk full, no permission) removes what it wrote and is a :class:`WriteError`: the checkpoints
    already there are untouched, and the run continues from the newest of them with ``--resume``."""
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}-{os.getpid()}"
    if rng is None:
        rng = [rng_state()]
    if scaler is not None and scaler.is_enabled():
        trainer_state = {**trainer_state, "grad_scaler": scaler.state_dict()}
    if getattr(model, "fp32_heads", None) is not None:
        trainer_state = {**trainer_state, "fp32_heads": model.fp32_heads}
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        return _write_checkpoint(tmp, final, ckpt_root, model, optimizer, trainer_state, config, rng)
    except Exception as e:
        if not is_io_error(e) and not isinstance(e, WriteError):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        cause = str(e).split(": cannot write ")[-1] if isinstance(e, WriteError) else f"({io_cause(e)})"
        raise WriteError(f"{final}: cannot write the checkpoint {cause}; the checkpoints before it are kept: "
                         "make room and continue with --resume") from None


def _write_checkpoint(tmp: Path, final: Path, ckpt_root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      trainer_state: dict[str, Any], config: dict[str, Any], rng: list[RngState]) -> Path:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    opt_tensors, opt_meta = optimizer_state_to_flat(optimizer.state_dict())
    save_file({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
    _write_json(tmp / "optimizer.json", opt_meta)
    rng_meta = {"world_size": len(rng), "ranks": [meta for meta, _ in rng]}
    rng_tensors = {f"rank{r}.{k}": v.detach().cpu().contiguous() for r, (_, ts) in enumerate(rng) for k, v in ts.items()}
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    _write_json(tmp / "config.json", config)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    # last before the rename: the state, with the size and SHA-256 of every file as it is on disk
    state = json.loads(json.dumps({**trainer_state, "rng": rng_meta}))  # as a reader will parse it
    files = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256_file(f)} for f in sorted(tmp.iterdir())}
    state["checksums"] = {"algorithm": "sha256", "files": files, STATE_FILE: _sha256_state(state)}
    _write_json(tmp / STATE_FILE, state)
    with open(tmp / STATE_FILE, "rb") as fh:
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # a re-run of the same step (e.g. after a resume): replace it whole
        _remove(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_root)
    return final


def copy_checkpoint(src: Path, ckpt_root: Path) -> Path:
    """Copy checkpoint folder ``src`` into ``ckpt_root`` under its own name, as a checkpoint is written
    (a hidden temporary folder, every file fsync'ed, then renamed into place); return the copy. A copy
    that fails (disk full) removes what it wrote and is a :class:`WriteError`."""
    final = ckpt_root / src.name
    tmp = ckpt_root / f".tmp-{src.name}-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            _remove(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_root)
    except Exception as e:
        if not is_io_error(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"{final}: cannot copy checkpoint {src} ({io_cause(e)})") from None
    return final


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _sha256_state(state: dict[str, Any]) -> str:
    """SHA-256 of the trainer state as parsed (key order and formatting aside), ``checksums`` left out."""
    body = {k: v for k, v in state.items() if k != "checksums"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder so that it vanishes at once: renamed to a hidden name first (a kill
    during the delete leaves that, which :func:`clean_temporary` removes, never a half-deleted
    ``step-*`` folder)."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(folder, trash)
    shutil.rmtree(trash)


def verify_checkpoint(path: Path) -> bool:
    """Check a checkpoint folder against the sizes and SHA-256 sums in its trainer_state.json.

    True: every file matches. False: a checkpoint written before checksums existed, with all its
    files present (it cannot be verified). Raises :class:`CheckpointError` naming the first file that
    is missing, unreadable, of another size or another checksum."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{STATE_FILE} is missing (an incomplete checkpoint)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{STATE_FILE} is unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{STATE_FILE} does not hold a JSON object")
    sums = state.get("checksums")
    if sums is None:
        for name in CHECKPOINT_FILES:
            if not (path / name).is_file():
                raise CheckpointError(f"{name} is missing (an incomplete checkpoint)")
        return False
    files = sums.get("files") if isinstance(sums, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("bytes"), int) and isinstance(r.get("sha256"), str) for r in files.values()
    ) or any("/" in n or "\\" in n or n in ("", ".", "..") for n in files):
        raise CheckpointError(f"{STATE_FILE}: its checksums entry is malformed")
    if _sha256_state(state) != sums.get(STATE_FILE):
        raise CheckpointError(f"{STATE_FILE}: its content does not match the SHA-256 recorded in it (changed after it was written)")
    for name in CHECKPOINT_FILES:
        if name not in files:
            raise CheckpointError(f"{name} has no recorded checksum in {STATE_FILE}")
    for name, rec in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{name} is missing (an incomplete checkpoint)")
        try:
            size = f.stat().st_size
            digest = _sha256_file(f) if size == rec["bytes"] else ""
        except OSError as e:  # e.g. set aside by the main rank while another rank reads it
            raise CheckpointError(f"{name} is unreadable ({e.strerror or e})") from None
        if size != rec["bytes"]:
            how = "truncated" if size < rec["bytes"] else "grown"
            raise CheckpointError(f"{name} is {size} bytes, {rec['bytes']} were written ({how})")
        if digest != rec["sha256"]:
            raise CheckpointError(
                f"{name}: SHA-256 {digest[:12]}… differs from the {rec['sha256'][:12]}… recorded at writing "
                "(the file changed after it was written)"
            )
    return True


def _step_folders(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Every folder named ``step-N``, oldest first."""
    if not ckpt_root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. Temporary folders of an interrupted write are ignored."""
    return [(s, p) for s, p in _step_folders(ckpt_root) if (p / STATE_FILE).exists()]


def clean_temporary(ckpt_root: Path) -> None:
    """Remove folders of checkpoint writes (and deletes) that never finished."""
    if ckpt_root.is_dir():
        for pattern in TEMPORARY:
            for p in ckpt_root.glob(pattern):
                shutil.rmtree(p, ignore_errors=True)


def rotate(ckpt_root: Path, keep: int, protect: set[Path]) -> None:
    """Delete the oldest checkpoints beyond ``keep``, never one in ``protect`` (the one just written
    and verified, the best)."""
    if keep <= 0:
        return
    ckpts = list_checkpoints(ckpt_root)
    kept = {p.resolve() for p in protect}
    excess = len(ckpts) - keep
    for _, path in ckpts:
        if excess <= 0:
            break
        if path.resolve() in kept:
            continue
        _remove(path)
        excess -= 1


def _warn_unverifiable(path: Path) -> None:
    log.warning("warning: checkpoint %s was written before checkpoints carried checksums: it cannot be "
                "verified; resuming from it as it is", path)


def set_aside(path: Path, why: str = "damaged") -> Path:
    """Rename a checkpoint out of the ``step-N`` namespace (kept for inspection) as ``step-N.<why>``."""
    aside, k = path.with_name(f"{path.name}.{why}"), 1
    while aside.exists():
        k += 1
        aside = path.with_name(f"{path.name}.{why}-{k}")
    os.rename(path, aside)
    return aside


def set_aside_after(ckpt_root: Path, step: int) -> list[Path]:
    """Set aside (``step-N.superseded``) every checkpoint under ``ckpt_root`` later than ``step``: a run
    resumed from an earlier checkpoint named explicitly takes another course from there, and the later
    checkpoints of the course it left were still the newest, so the next ``auto`` resume continued
    that one (and rotation deleted the new course's checkpoints first). Returns the folders set aside."""
    return [set_aside(path, "superseded") for s, path in _step_folders(ckpt_root) if s > step]


def in_folder(path: Path, ckpt_root: Path) -> bool:
    """Whether checkpoint folder ``path`` lies in ``ckpt_root`` (a run's ``checkpoints/``), links resolved."""
    return Path(path).resolve().parent == Path(ckpt_root).resolve()


def _latest_verified(ckpt_root: Path, main: bool) -> Path | None:
    """The newest checkpoint that verifies (or cannot be verified: written before checksums)."""
    folders = _step_folders(ckpt_root)
    damaged: list[tuple[Path, str]] = []
    found, legacy = None, False
    for _, path in reversed(folders):
        try:
            legacy = not verify_checkpoint(path)
        except CheckpointError as e:
            damaged.append((path, str(e)))
            continue
        found = path
        break
    if main:
        for path, why in damaged:
            if found is None:
                log.warning("warning: checkpoint %s fails verification: %s", path, why)
            else:
                aside = set_aside(path)
                log.warning("warning: checkpoint %s fails verification: %s; not resuming from it (set aside as %s), "
                            "resuming from %s instead", path, why, aside.name, found)
        if legacy:
            _warn_unverifiable(found)
    if found is None and damaged:
        path, why = damaged[0]
        raise UserError(
            f"training.resume_from_checkpoint=auto: none of the {len(damaged)} checkpoints under {ckpt_root} passes "
            f"verification (newest {path.name}: {why}); start over without --resume and with output.overwrite=true"
        )
    return found


def resolve_resume(spec: str, ckpt_root: Path, main: bool = True) -> Path | None:
    """``auto`` → the latest checkpoint under ``ckpt_root`` that verifies (None if there is none;
    newer ones that fail are warned about and set aside); a path → it, verified (an error if it fails:
    the checkpoint named is never swapped for another). ``main``: this process warns and sets aside
    (the other ranks of a group only look)."""
    if spec == "auto":
        return _latest_verified(ckpt_root, main)
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"training.resume_from_checkpoint: {path} is not a checkpoint folder")
    if not (path / STATE_FILE).exists():  # a run folder or its checkpoints/ named: no damage, a folder too high
        held = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if held:
            raise UserError(f"training.resume_from_checkpoint: {path} is not a checkpoint folder but holds "
                            f"checkpoints: name one of them (the newest is {held[-1][1]}), or continue the run's "
                            "newest with --resume (training.resume_from_checkpoint=auto)")
    try:
        verified = verify_checkpoint(path)
    except CheckpointError as e:
        raise UserError(f"training.resume_from_checkpoint: checkpoint {path} fails verification: {e}") from None
    if not verified and main:
        _warn_unverifiable(path)
    return path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> dict[str, Any]:
    """Restore model and optimizer in place and return the trainer state; this rank's random states
    (``info``: rank, world size and device; default: one process on the CPU) and the fp16 gradient
    scaler's (``scaler``) are restored too, as the module docstring says. The model's heads keep the
    precision the checkpoint trained them in (``fp32_heads``; a checkpoint written before it was saved:
    the autocast's), so the run continues as it would have."""
    info = info if info is not None else DistInfo()
    load_weights(path, model)
    peaks = [g.get("initial_lr") for g in optimizer.param_groups]  # this run's, scaled by its world size
    load_optimizer(path, optimizer)
    state = _read_json(path, STATE_FILE)
    state.pop("checksums", None)
    fp32_heads = state.pop("fp32_heads", False)
    if getattr(model, "fp32_heads", None) is not None:
        if not isinstance(fp32_heads, bool):
            raise CheckpointError(f"{path / STATE_FILE}: fp32_heads must be true or false, got {shown(fp32_heads)}")
        model.fp32_heads = fp32_heads
    _keep_peak_rates(state, optimizer, peaks, info, path)
    if not isinstance(state.get("rng"), dict):  # a checkpoint written before checksums: unverified
        raise CheckpointError(f"{path / STATE_FILE}: has no rng object (the random states)")
    restore_rng(state.pop("rng"), _load_tensors(path, "rng.safetensors"), info, path)
    scaler_state = state.pop("grad_scaler", None)
    if scaler is not None and scaler.is_enabled():
        if scaler_state:
            scaler.load_state_dict(scaler_state)
        elif info.is_main:
            log.warning("warning: checkpoint %s holds no gradient scaler state (a bf16/fp32 run's, or written before "
                        "checkpoints held it): fp16's loss scale restarts at %g; overflow skips after the resume may "
                        "fall on other steps than in an uninterrupted run", path, scaler.get_scale())
    return state


def _keep_peak_rates(state: dict[str, Any], optimizer: torch.optim.Optimizer, peaks: list[float | None], info: DistInfo,
                     path: Path) -> None:
    """Keep the peak rates ``peaks`` the optimizer was built with (``training.learning_rate`` scaled by this
    run's world size under ``training.lr_scaling``) over the checkpoint's, in its parameter groups and in the
    schedule's ``base_lrs``. The learning rate and ``lr_scaling`` cannot change on a resume, so they differ
    only when the world size did: a run of 2 processes resumed on 4 under ``linear`` kept the rate scaled by
    2, while its batch of an optimizer step held the windows of 4 (a run started on 4 scales by 4)."""
    sched = state.get("scheduler") or {}
    saved = sched.get("base_lrs")
    if None in peaks or not isinstance(saved, list) or len(saved) != len(peaks) or saved == peaks:
        return
    for g, peak in zip(optimizer.param_groups, peaks):
        g["initial_lr"] = peak
    sched["base_lrs"] = list(peaks)
    if info.is_main:
        was = (state.get("rng") or {}).get("world_size", "?")
        log.warning("warning: checkpoint %s trained at a peak learning rate of %g with %s process(es); this run has %d "
                    "and scales training.learning_rate to %g (training.lr_scaling), as a run started with %d would",
                    path, saved[0], was, info.world_size, peaks[0], info.world_size)


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint's optimizer state into ``optimizer`` in place, every state tensor in the
    dtype it was saved in."""
    opt_meta = _read_json(path, "optimizer.json")
    try:
        saved = optimizer_state_from_flat(_load_tensors(path, "optimizer.safetensors"), opt_meta)
    except (ValueError, KeyError, TypeError, IndexError) as e:  # a checkpoint written before checksums: unverified
        why = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise CheckpointError(f"{path / 'optimizer.json'}: not the optimizer state of this checkpoint "
                              f"({type(e).__name__}: {' '.join(str(why).split())[:200]})") from None
    optimizer.load_state_dict(saved)
    _restore_state_dtypes(optimizer, saved)


def _restore_state_dtypes(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Put back the saved dtype of every optimizer state tensor. ``load_state_dict`` casts each
    floating one but ``step`` to its parameter's dtype, so a state kept in another precision on
    purpose (Kron's ``mu_dtype``, a float32 moment of bfloat16 weights) came back changed and the
    resumed run no longer continued bit for bit."""
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def restore(old: Any, new: Any) -> Any:
        if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
            return old.to(device=new.device) if old.dtype != new.dtype else new
        if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
            back = [restore(o, n) for o, n in zip(old, new)]
            return new if all(b is n for b, n in zip(back, new)) else type(new)(back)
        if isinstance(old, dict) and isinstance(new, dict):
            back = {k: restore(old[k], v) if k in old else v for k, v in new.items()}
            return new if all(back[k] is v for k, v in new.items()) else back
        return new

    for i, p in zip(ids, params):
        if i in saved["state"] and p in optimizer.state:
            live = optimizer.state[p]
            for k, v in saved["state"][i].items():
                if k in live:
                    live[k] = restore(v, live[k])


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Load the model weights of a checkpoint (or model) folder into ``model`` in place; weights of another
    model (a checkpoint written before checksums, its file replaced) are a :class:`CheckpointError` naming
    the file, not torch's list of every key."""
    state = _load_tensors(Path(folder), "model.safetensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        if "Error(s) in loading state_dict" not in str(e):  # not a mismatch of keys or shapes (out of memory)
            raise
        raise CheckpointError(f"{Path(folder) / 'model.safetensors'}: holds the weights of another model "
                              f"({' '.join(str(e).split())[:200]})") from None


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    """The JSON object of file ``name`` in checkpoint ``folder``. One that cannot be read (cut short: a
    checkpoint written before checksums is loaded unverified) is a :class:`CheckpointError` naming the file."""
    try:
        obj = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{folder / name}: cannot be read ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{folder / name}: does not hold a JSON object")
    return obj


def read_config(path: Path) -> dict[str, Any]:
    """The resolved config checkpoint ``path`` was written with (its config.json): a JSON object, its sections
    (``model``, ``data``, ...) objects. One that is not (cut short, of another program: a checkpoint written
    before checksums is resumed unverified) is a :class:`CheckpointError` naming the file (and the section)."""
    path = Path(path)
    saved = _read_json(path, "config.json")
    sections = {f.name for f in dataclasses.fields(Config)}  # a key an older version kept beside them is not read
    bad = next((k for k, v in saved.items() if k in sections and not isinstance(v, dict)), None)
    if bad is not None:
        raise CheckpointError(f"{path / 'config.json'}: section {bad!r} is not a JSON object "
                              f"(a {type(saved[bad]).__name__})")
    return saved


def read_step(path: Path) -> int:
    """The step checkpoint ``path`` was written at (``global_step`` of its trainer_state.json). One missing
    or not a whole number of at least 0 (a checkpoint written before checksums is resumed unverified) is a
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    state = _read_json(path, STATE_FILE)
    if "global_step" not in state:
        raise CheckpointError(f"{path / STATE_FILE}: has no global_step")
    step = state["global_step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path / STATE_FILE}: global_step must be a whole number of at least 0, "
                              f"got {shown(step)}")
    return step


def _load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of safetensors file ``name`` in ``folder``. One that cannot be read (cut short, not
    safetensors: a checkpoint written before checksums is loaded unverified) is a :class:`CheckpointError`
    naming the file; safetensors' own message named none."""
    try:
        return load_file(str(folder / name))
    except Exception as e:
        if not is_io_error(e):
            raise
        raise CheckpointError(f"{folder / name}: cannot be read ({io_cause(e)})") from None


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
