"""GPro's CPU kernel, compiled with Numba: two passes per tensor instead of torch's five.

Pass 1 reads g, m, v, writes the new m, v and the update u into a scratch buffer, and returns
Σu²; pass 2 applies ``p ← p·decay - step·u``. The scratch (one tensor's worth) is still in the
cache when pass 2 reads it, so main memory sees the same traffic as one fused Adam step:
``benchmarks/bench_optim.py`` measures the ratio.

Numba compiles on first use (about a second) and caches the machine code beside this file, in the
user's cache directory when the package folder is read-only, or nowhere (``hftraining.core.jit``).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from hftraining.core.jit import njit_cached

# Reassociation lets the Σu² reduction vectorise; no-NaN/no-Inf assumptions are left out so that
# a non-finite gradient propagates exactly as in torch's kernels.
_FLAGS = {"reassoc", "contract", "nsz"}


def _pass1(g, m, v, u, b1, c1, b2, c2, inv_bc1, inv_sqrt_bc2, eps):  # pragma: no cover - compiled
    acc = 0.0
    for i in range(g.size):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        ui = (mi * inv_bc1) / (math.sqrt(vi) * inv_sqrt_bc2 + eps)
        u[i] = ui
        acc += ui * ui
    return acc


def _pass1_amsgrad(g, m, v, vmax, u, b1, c1, b2, c2, inv_bc1, inv_sqrt_bc2, eps):  # pragma: no cover - compiled
    acc = 0.0
    for i in range(g.size):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        vi = max(vmax[i], vi)
        vmax[i] = vi
        ui = (mi * inv_bc1) / (math.sqrt(vi) * inv_sqrt_bc2 + eps)
        u[i] = ui
        acc += ui * ui
    return acc


def _pass2(p, u, decay, step):  # pragma: no cover - compiled
    for i in range(p.size):
        p[i] = p[i] * decay - step * u[i]


# Serial kernels, parallel over tensors in gpro_step: a Numba thread pool beside torch's spins
# and waits on its barrier whenever the cores are busy (two DDP ranks on two cores made a step
# 30x slower). error_model="numpy" drops Python's zero-division check, which otherwise keeps
# LLVM from vectorising the division.
_kw = dict(fastmath=_FLAGS, nogil=True, error_model="numpy")
# One compiled variant per Python function: Numba's cache is keyed by the function, so compiling
# the same function twice with different options would load one variant's code for the other.
pass1 = njit_cached(**_kw)(_pass1)
pass1_amsgrad = njit_cached(**_kw)(_pass1_amsgrad)
pass2 = njit_cached(**_kw)(_pass2)


def supported(p: torch.Tensor) -> bool:
    """True when the kernel can update ``p`` in place: a dense contiguous float32/64 CPU tensor."""
    return p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) and p.is_contiguous() and p.layout == torch.strided


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers < workers:
        _pool = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="hftraining-gpro"))
    return _pool[1]


def gpro_step(
    params: list[torch.Tensor],
    states: list[dict],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    rho: float,
    projection: str,
    amsgrad: bool,
    scratch: list[np.ndarray],
) -> None:
    """One GPro step on ``params`` (state tensors already allocated and ``step`` already counted).

    ``scratch`` holds one buffer per worker, each at least as long as the largest tensor. With more
    than one, the tensors are shared out by size and the workers run in Python threads: the kernels
    release the GIL, and a waiting thread blocks rather than spins, so busy cores cost no more than
    the work. Each tensor is updated by one worker alone: the result does not depend on the count.
    """
    hp = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, rho=rho, projection=projection, amsgrad=amsgrad)
    pairs = list(zip(params, states))
    if len(scratch) == 1:
        _update(pairs, scratch[0], hp)
        return
    shares: list[list] = [[] for _ in scratch]
    load = [0] * len(scratch)
    for pair in sorted(pairs, key=lambda ps: -ps[0].numel()):  # largest first, to the least loaded
        i = load.index(min(load))
        shares[i].append(pair)
        load[i] += pair[0].numel()
    pool = _executor(len(scratch) - 1)
    futures = [pool.submit(_update, share, buf, hp) for share, buf in zip(shares[1:], scratch[1:])]
    _update(shares[0], scratch[0], hp)
    for f in futures:
        f.result()


def _update(pairs: list, scratch: np.ndarray, hp: dict) -> None:
    lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
    decay = 1.0 - lr * hp["weight_decay"]
    for p, state in pairs:
        flat = p.detach().view(-1).numpy()
        dtype = flat.dtype.type
        n = flat.size
        k = float(state["step"])
        grad = p.grad.detach()
        if not grad.is_contiguous():
            grad = grad.contiguous()
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in state and not state[key].is_contiguous():  # e.g. a state loaded from elsewhere
                state[key] = state[key].contiguous()
        u = scratch[:n] if scratch.dtype == flat.dtype else np.empty(n, dtype=flat.dtype)
        consts = (
            dtype(beta1),
            dtype(1.0 - beta1),  # in double, as torch does: float32(1 - 0.999) is 1.3e-5 off
            dtype(beta2),
            dtype(1.0 - beta2),
            dtype(1.0 / (1.0 - beta1**k)),
            dtype(1.0 / math.sqrt(1.0 - beta2**k)),
            dtype(hp["eps"]),
        )
        arrays = (grad.view(-1).numpy(), state["exp_avg"].view(-1).numpy(), state["exp_avg_sq"].view(-1).numpy())
        if hp["amsgrad"]:
            sumsq = pass1_amsgrad(*arrays, state["max_exp_avg_sq"].view(-1).numpy(), u, *consts)
        else:
            sumsq = pass1(*arrays, u, *consts)
        size = math.sqrt(sumsq / n) if hp["projection"] == "rms" else math.sqrt(sumsq)
        rho = hp["rho"]
        scale = rho / size if size > rho else 1.0
        pass2(flat, u, dtype(decay), dtype(lr * scale))
