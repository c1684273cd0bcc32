"""Data-parallel setup for ``torchrun``: gloo on CPU, nccl on CUDA. Without torchrun's
environment (WORLD_SIZE unset or 1) everything here is a no-op."""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from hftraining.core.config import MIN_DDP_TIMEOUT
from hftraining.core.errors import ConfigError, UserError
from hftraining.models.predict import usable_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    store: dist.Store | None = field(default=None, repr=False, compare=False)  # the group's, when this process made it
    timeout: float = field(default=0.0, repr=False, compare=False)  # training.ddp_timeout, with ``store``

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = usable_device(spec, "training.device", "auto, cpu, cuda, cuda:N")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _attempt_store(rank: int, world: int, timeout: timedelta) -> dist.Store:
    """The rendezvous store of this (re)start, its keys prefixed by torchrun's restart count.

    Under ``torchrun --standalone`` the agent's store outlives a restart, and torch does not prefix
    the process group's keys per attempt (it assumes a fresh store): a restarted rank could read the
    address its dead peer published and fail with "Connection refused" (or wait for it until the
    timeout). The prefix gives every attempt keys of its own. One connection serves every group of the
    process (:data:`_ATTEMPT`): a rank joining a later group hears on it that the main rank's process
    ended before it formed that group (:func:`_wait_for_main_to_join`)."""
    global _ATTEMPT
    if _ATTEMPT is None:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set: launch with torchrun (see README)")
        use_agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
            is_master=not use_agent_store and rank == 0, timeout=timeout, multi_tenant=not use_agent_store,
        )
        _ATTEMPT = dist.PrefixStore(f"hftraining/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        if rank == 0:
            atexit.register(_main_process_ends, _ATTEMPT)
    _ATTEMPT.set_timeout(timeout)
    # and every group of the process (train --seeds forms one per seed, in the same order on every rank) its own
    return dist.PrefixStore(f"group_{next(_GROUPS)}", _ATTEMPT)


_ATTEMPT: dist.Store | None = None
"""This process's connection to the group's store, keys prefixed by the attempt (None before its first group)."""

MAIN_PROCESS_ENDED_KEY = "main_process_ended"
"""Set in the attempt's store as the main rank's process ends: a rank waiting for it to form a later group
(``train --seeds`` forms one per seed) then knows it never will (it stopped on an error of its own between
the groups, such as a run folder that another process holds)."""


def _main_process_ends(store: dist.Store) -> None:
    try:
        store.set(MAIN_PROCESS_ENDED_KEY, "1")
    except RuntimeError:  # the store is gone (torchrun's agent stopped): the waiting ranks' own timeout ends them
        pass


MAIN_JOINED_KEY = "main_rank_joined"
"""Set in a group's store by the main rank as it forms the group (:func:`init_distributed`)."""


def _wait_for_main_to_join(info_rank: int, group: dist.Store, timeout: float) -> None:
    """Until the main rank has come to form the group of store ``group``; a :class:`PeerLost` at once when its
    process ended first (:data:`MAIN_PROCESS_ENDED_KEY`) or its store went with it, or after ``timeout``
    seconds (``training.ddp_timeout``). Until 2026-12-07 such a rank waited in torch's rendezvous for a main
    rank that had stopped between two groups, until ``training.ddp_timeout`` (1800 s by default), and then
    printed a traceback (on one node torchrun ended it, without a word)."""
    pause, start = 0.001, time.monotonic()
    try:
        while not group.check([MAIN_JOINED_KEY]):
            if _ATTEMPT is not None and _ATTEMPT.check([MAIN_PROCESS_ENDED_KEY]):
                raise PeerLost(f"rank {info_rank}: the main rank stopped before it formed the next process group; "
                               "its own error, or torchrun's summary of its exit, says why")
            if time.monotonic() - start > timeout:
                raise PeerLost(f"rank {info_rank}: the main rank did not come to form the process group within "
                               f"{timeout:g} s (training.ddp_timeout)")
            time.sleep(pause)
            pause = min(2 * pause, 0.2)
    except dist.DistNetworkError:  # the store went with the main rank's process
        raise PeerLost(f"rank {info_rank}: the main rank stopped before it formed the next process group (the "
                       "group's store, which its process held, is gone); its own error, or the launcher's summary "
                       "of its exit, says why") from None


_GROUPS = itertools.count()


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
    if not timeout >= MIN_DDP_TIMEOUT:
        raise ConfigError(f"training.ddp_timeout: must be at least {MIN_DDP_TIMEOUT:g} second, got {timeout}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))  # the processes of this node (torchrun sets it)
    if local_world > 1 and device_spec.startswith("cuda:"):  # every rank of a node on one GPU: NCCL's "Duplicate GPU"
        raise ConfigError(f"training.device: {device_spec!r} names one GPU for the {local_world} processes of this "
                          "node; use cuda (each process takes the GPU of its LOCAL_RANK)")
    device = resolve_device(device_spec, local)
    store = None
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        limit = timedelta(seconds=timeout)
        _bind_world_defaults_before_the_group()
        store = _attempt_store(rank, world, limit)
        if rank == 0:
            store.set(MAIN_JOINED_KEY, "1")
        else:
            _wait_for_main_to_join(rank, store, timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=limit)
        if rank == 0:
            _Pulse.start(store, timeout)
    return DistInfo(rank, world, local, device, store, timeout)


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


class _Pulse:
    """The main rank's sign of life, a counter it raises in the group's store every ``timeout / 4`` s
    (at most 1 s) from a thread of its own, while the other ranks wait for its own work at a
    :func:`barrier`. Not a daemon thread (one stopped at the interpreter's exit inside the store's
    C++ call could abort the process): it ends at :func:`cleanup`, or within a beat of the main
    thread's end."""

    KEY = "main_rank_pulse"
    running: "_Pulse | None" = None

    def __init__(self, store: dist.Store, every: float):
        self.store, self.every, self.stop_event = store, every, threading.Event()
        self.thread = threading.Thread(target=self._beat, name="hftraining-main-rank-pulse")

    @classmethod
    def start(cls, store: dist.Store, timeout: float) -> None:
        cls.stop()
        cls.running = cls(store, min(1.0, timeout / 4))
        cls.running.thread.start()

    @classmethod
    def stop(cls) -> None:
        if cls.running is not None:
            cls.running.stop_event.set()
            cls.running.thread.join()
            cls.running = None

    def _beat(self) -> None:
        main = threading.main_thread()
        while main.is_alive() and not self.stop_event.wait(self.every):
            try:
                self.store.add(self.KEY, 1)
            except Exception:  # the store is gone with the group: the waiting ranks hear silence
                return


_BARRIERS = itertools.count(1)  # barriers this process has entered: every rank enters the same ones, in order


def barrier(info: DistInfo) -> None:
    """Wait until every rank is here. A barrier follows work of the main rank alone (writing a checkpoint,
    the test evaluation and report at the end of a run), which takes as long as the data make it: bounded by
    ``training.ddp_timeout``, the others' wait failed a finished run whose test evaluation outlasted it (and
    torchrun killed the main rank before eval.json was written). So the other ranks wait for the main rank
    as long as it lives (its :class:`_Pulse`), failing after ``training.ddp_timeout`` without a sign of
    life; then all meet in the group's barrier, bounded as every collective is."""
    if not info.enabled:
        return
    n = next(_BARRIERS)
    try:
        if info.store is not None:
            key = f"main_rank_at_barrier/{n}"
            if info.is_main:
                info.store.set(key, "1")
            else:
                _wait_for_main(info, key)
        dist.barrier()
    except RuntimeError as e:  # a rank that stopped has said why: the others say so in one line, not a traceback
        lost = peer_lost(e, info)
        if lost is None:
            raise
        raise lost from None


MAIN_LEFT_KEY = "main_rank_left"
"""Set in the group's store by the main rank as it leaves the group (:func:`cleanup`): a rank waiting for it
at a :func:`barrier` then knows that it will not come (it stopped on an error of its own)."""


def _wait_for_main(info: DistInfo, key: str) -> None:
    """Until the main rank has set ``key`` in the group's store; a :class:`PeerLost` at once when it left the
    group instead (:data:`MAIN_LEFT_KEY`) or its store is gone with its process (a group formed without
    torchrun's agent, whose store the main rank holds), or once its pulse has not moved for ``info.timeout``
    seconds (its process is gone). Until 2026-12-07 a main rank that stopped on its own error left the others
    waiting out ``training.ddp_timeout`` (1800 s by default) and each then printed a traceback."""
    pause, beats, heard = 0.001, None, time.monotonic()
    try:
        while not info.store.check([key]):  # polled: a timed-out store.wait() logs a warning each time
            if info.store.check([MAIN_LEFT_KEY]):
                raise PeerLost(f"rank {info.rank}: the main rank stopped while this rank waited for it at a barrier; "
                               "its own error, or torchrun's summary of its exit, says why")
            now = info.store.add(_Pulse.KEY, 0)
            if now != beats:
                beats, heard = now, time.monotonic()
            elif time.monotonic() - heard > info.timeout:
                raise PeerLost(f"rank {info.rank}: the main rank gave no sign of life for {info.timeout:g} s "
                               "(training.ddp_timeout) while this rank waited for it at a barrier")
            time.sleep(pause)
            pause = min(2 * pause, 0.2)
    except dist.DistNetworkError:  # the store went with the main rank's process
        raise PeerLost(f"rank {info.rank}: the main rank stopped while this rank waited for it at a barrier (the "
                       "group's store, which its process held, is gone); its own error, or the launcher's summary "
                       "of its exit, says why") from None


class PeerLost(UserError):
    """A collective of this rank failed because another process of the group had stopped (its own error,
    a kill): that process's line, or torchrun's summary of its exit, says why."""


PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
"""What Gloo's transport says when the process at the other end of a collective has gone."""


def peer_lost(e: BaseException, info: DistInfo) -> PeerLost | None:
    """``e`` as a :class:`PeerLost` when it, or an exception it was raised from, is a collective failing
    because another rank stopped (:data:`PEER_LOST`); None otherwise. A mistake found on one rank alone
    (an out-of-memory batch, a file it cannot read) ended that rank with its one line, and every rank
    waiting for it in a collective then printed a traceback of its own ("Connection closed by peer"),
    which buried that line."""
    if not info.enabled:
        return None
    seen: BaseException | None = e
    while seen is not None:
        found = next((m for m in PEER_LOST if m in str(seen)), None) if isinstance(seen, RuntimeError) else None
        if found is not None:
            return PeerLost(f"rank {info.rank}: another process of the group stopped "
                            f"({found.lower()} in a collective); its own error, or torchrun's summary of its exit, "
                            "says why")
        seen = seen.__cause__ or seen.__context__
    return None


def cleanup(info: DistInfo) -> None:
    """Leave the process group. The main rank first says so in the group's store (:data:`MAIN_LEFT_KEY`):
    every barrier it entered was met by every rank, so a rank still waiting for it at one waits for a main
    rank that stopped on an error of its own, and stops too, in one line (:func:`_wait_for_main`)."""
    if info.enabled and info.is_main and info.store is not None:
        try:
            info.store.set(MAIN_LEFT_KEY, "1")
        except RuntimeError:  # the store is gone (torchrun's agent stopped): the waiting ranks hear its silence
            pass
    if info.enabled:
        _Pulse.stop()
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
