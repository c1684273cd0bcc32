"""Data-parallel setup for ``torchrun``: gloo on CPU, nccl on CUDA. Without torchrun's
environment (WORLD_SIZE unset or 1) everything here is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from hftraining.core.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"training.device: {spec!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device: {spec!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _attempt_store(rank: int, world: int, timeout: timedelta) -> dist.Store:
    """The rendezvous store of this (re)start, its keys prefixed by torchrun's restart count.

    Under ``torchrun --standalone`` the agent's store outlives a restart, and torch does not prefix
    the process group's keys per attempt (it assumes a fresh store): a restarted rank could read the
    address its dead peer published and fail with "Connection refused" (or wait for it until the
    timeout). The prefix gives every attempt keys of its own."""
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set: launch with torchrun (see README)")
    use_agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
        is_master=not use_agent_store and rank == 0, timeout=timeout, multi_tenant=not use_agent_store,
    )
    return dist.PrefixStore(f"hftraining/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _bind_world_defaults_before_the_group() -> None:
    """Import ``torch.distributed.nn`` while no process group exists.

    Its collectives take ``group.WORLD`` as a default argument, evaluated once, on import. The DDP
    constructor imports it (through ``torch._dynamo``); imported after ``init_process_group``, those
    defaults keep the group alive for the rest of the process, so :func:`cleanup` cannot end it:
    Gloo's worker and TCP threads then run until the interpreter's exit tears the group down with
    Python half finalized (where a rank was seen to abort: "terminate called without an active
    exception", exit -6). Imported first, the defaults are ``None`` and destroying the group ends
    its threads."""
    import torch.distributed.nn  # noqa: F401


def init_distributed(device_spec: str, timeout: float) -> DistInfo:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) when there is one; ``timeout``
    (seconds, ``training.ddp_timeout``) bounds every wait for the other ranks."""
    if not timeout > 0:
        raise ConfigError(f"training.ddp_timeout: must be > 0 seconds, got {timeout}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        limit = timedelta(seconds=timeout)
        _bind_world_defaults_before_the_group()
        dist.init_process_group(backend, store=_attempt_store(rank, world, limit), rank=rank, world_size=world, timeout=limit)
    return DistInfo(rank, world, local, device)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op on one process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Maximum of ``t`` over ranks in place (no-op on one process). On NCCL this is queued on the
    device like any kernel: the host does not wait for it."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_gather_rows(a: np.ndarray, info: DistInfo) -> np.ndarray:
    """Every rank's ``a`` (n_r, ...) concatenated in rank order, on every rank (``a`` itself on one
    process). Ranks may hold different numbers of rows; the tensors travel on ``info.device``."""
    if not info.enabled:
        return a
    n = torch.tensor([len(a)], dtype=torch.int64, device=info.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    pad = np.zeros((max(counts), *a.shape[1:]), dtype=a.dtype)
    pad[: len(a)] = a
    mine = torch.from_numpy(pad).to(info.device)
    parts = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(parts, mine)
    return np.concatenate([p[:c].cpu().numpy() for p, c in zip(parts, counts)])


def all_gather_bytes(data: bytes, info: DistInfo) -> list[bytes]:
    """Every rank's ``data`` (of any length), in rank order, on every rank (``[data]`` on one process)."""
    if not info.enabled:
        return [data]
    sizes = all_gather_rows(np.array([len(data)], dtype=np.int64), info)
    joined = all_gather_rows(np.frombuffer(data, dtype=np.uint8), info).tobytes()
    ends = np.cumsum(sizes)
    return [joined[e - s:e] for s, e in zip(sizes.tolist(), ends.tolist())]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
