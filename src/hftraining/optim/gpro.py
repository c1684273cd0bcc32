"""GPro: Adam moments with a per-tensor projection of the update ("gradient projection with
adaptive preconditioning", the original system's optimizer).

For each parameter tensor, step t (1-based)::

    m = β1·m + (1-β1)·g          v = β2·v + (1-β2)·g²        (v = max(v_max, v) with AMSGrad)
    u = m̂ / (√v̂ + ε)             m̂ = m/(1-β1^t), v̂ = v/(1-β2^t)
    rms:        u ← u·ρ/RMS(u)   if RMS(u) > ρ        (RMS(u) = ‖u‖_F/√numel, default ρ = 1.0)
    frobenius:  u ← u·ρ/‖u‖_F    if ‖u‖_F > ρ         (the original rule, default ρ = 0.5)
    p ← p·(1 - lr·wd) - lr·u

Three implementations give the same update (``implementation=``):

- ``numba`` (CPU float32/64): a compiled two-pass kernel per tensor, as much memory traffic as
  one fused Adam step (see ``_gpro_numba``);
- ``fused``: torch's fused Adam kernel into a scratch buffer (the moments and u in one kernel),
  then one norm and one axpy pass, on any device with torch's fused Adam kernels (CUDA);
- ``foreach``: ``torch._foreach_*`` ops, on any device.

``auto`` (the default) takes the first that the parameters allow, in that order.

A step is skipped when the trainer sets ``found_inf`` (a 0-dim float tensor, 1 = skip) before
``step()``: the fused path skips on the device (the moments, the step count and the weights stay;
no host synchronisation), the numba and foreach paths read the flag on the host.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import torch
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from hftraining.optim import _gpro_numba  # the kernels compile on first use

PROJECTIONS = ("rms", "frobenius")
IMPLEMENTATIONS = ("auto", "numba", "fused", "foreach")
DEFAULT_RHO = {"rms": 1.0, "frobenius": 0.5}


class GPro(torch.optim.Optimizer):
    """Adam with a per-tensor cap on the update's RMS (or Frobenius norm); decoupled weight decay.

    ``rho=None`` takes the projection's default (1.0 for ``rms``, 0.5 for ``frobenius``); ``rho=inf`` caps
    nothing (Adam with decoupled weight decay), on every implementation.
    ``implementation``: ``auto``, ``numba``, ``fused`` or ``foreach`` (module docstring). The numba
    and fused paths keep a scratch buffer for u that is not part of the checkpointed state.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        rho: Optional[float] = None,
        projection: str = "rms",
        amsgrad: bool = False,
        implementation: str = "auto",
    ):
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
        if rho is None:
            rho = DEFAULT_RHO[projection]
        if not (isinstance(lr, (int, float)) and lr >= 0):
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho!r}")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rho=float(rho),
            projection=projection, amsgrad=bool(amsgrad), implementation=implementation,
        )
        super().__init__(params, defaults)
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}  # fused path: u per parameter, not state
        self._numba_scratch: dict[torch.dtype, list[torch.Tensor]] = {}  # numba path: u per worker, reused

    supports_found_inf = True  # step() honours a found_inf attribute (see the module docstring)

    def _implementation(self, group: dict[str, Any], params: list[torch.Tensor]) -> str:
        choice = group["implementation"]
        fused_devices = _get_fused_kernels_supported_devices()

        def fusable(p: torch.Tensor) -> bool:
            return p.device.type in fused_devices and p.is_floating_point()

        numba_ok = all(_gpro_numba.supported(p) for p in params)
        fused_ok = all(fusable(p) for p in params)
        if choice == "auto":
            return "numba" if numba_ok else "fused" if fused_ok else "foreach"
        if (choice == "numba" and not numba_ok) or (choice == "fused" and not fused_ok):
            bad = next(p for p in params if not (_gpro_numba.supported(p) if choice == "numba" else fusable(p)))
            raise RuntimeError(
                f"GPro implementation={choice!r} cannot update a {bad.dtype} tensor on {bad.device} "
                "(numba: contiguous float32/64 on CPU; fused: a device with torch's fused Adam); use 'auto'"
            )
        return choice

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("GPro does not support sparse gradients")
                state = self.state[p]
                if not state:
                    # Float32 step on the parameter's device, as the fused kernel expects.
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif state["step"].device != p.device:  # a state loaded onto another device
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
            # Group by (device, dtype): both paths batch tensors of one kind.
            buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in params:
                buckets.setdefault((p.device, p.dtype), []).append(p)
            for bucket in buckets.values():
                impl = self._implementation(group, bucket)
                found_inf = getattr(self, "found_inf", None)
                if impl != "fused" and found_inf is not None and bool(found_inf):
                    continue  # skipped, read on the host (the fused path skips on the device)
                {"numba": self._numba_step, "fused": self._fused_step, "foreach": self._foreach_step}[impl](group, bucket)
        return loss

    def _scale(self, group: dict[str, Any], updates: list[torch.Tensor]) -> torch.Tensor:
        """Per-tensor factor min(1, ρ/size(u)) as a float32 (float64) vector (n_tensors,)."""
        dtype = torch.promote_types(updates[0].dtype, torch.float32)  # float64 stays float64
        norms = torch._foreach_norm(updates, 2, dtype=dtype)
        if group["projection"] == "rms":  # scalars, not a host tensor copied over: no synchronisation
            norms = torch._foreach_div(norms, [math.sqrt(u.numel()) for u in updates])
        # A cap beyond the dtype's range (rho: .inf, no projection, as the numba kernel takes it) caps nothing:
        # taken as the largest finite value, not inf/inf = NaN in every weight or clamp_min's overflow error.
        rho = min(group["rho"], torch.finfo(dtype).max)
        return rho / torch.stack(norms).clamp_min(rho)  # (n,)

    def _apply(self, group: dict[str, Any], params: list[torch.Tensor], updates: list[torch.Tensor], lr_sign: float,
               found_inf: torch.Tensor | None = None) -> None:
        """p ← p·(1 - lr·wd) + lr_sign·lr·scale·u, in place; with ``found_inf`` set, p stays (decided on the device)."""
        lr, wd = group["lr"], group["weight_decay"]
        scale = self._scale(group, updates)
        if found_inf is not None:
            keep = 1 - found_inf.to(scale.dtype)
            scale = scale * keep
            if wd != 0:
                torch._foreach_mul_(params, 1.0 - (lr * wd) * keep.to(params[0].dtype))
        elif wd != 0:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        if params[0].device.type == "cpu":
            # On CPU a per-tensor alpha costs nothing and saves a pass over the update.
            for p, u, s in zip(params, updates, scale.tolist()):
                p.add_(u, alpha=lr_sign * lr * s)
        else:
            # Elsewhere keep the factors on the device: no host sync.
            torch._foreach_mul_(updates, list(scale.to(updates[0].dtype).unbind()))
            torch._foreach_add_(params, updates, alpha=lr_sign * lr)

    def _numba_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        states = [self.state[p] for p in params]
        torch._foreach_add_([s["step"] for s in states], 1)
        dtype = params[0].dtype
        need = max(p.numel() for p in params)
        # one worker per torch thread for a large step; a small one is not worth a thread handoff
        workers = max(1, torch.get_num_threads()) if sum(p.numel() for p in params) >= 1 << 20 else 1
        bufs = self._numba_scratch.setdefault(dtype, [])
        if len(bufs) < workers or bufs[0].numel() < need:
            bufs[:] = [torch.empty(need, dtype=dtype) for _ in range(workers)]
        beta1, beta2 = group["betas"]
        _gpro_numba.gpro_step(
            params, states, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], rho=group["rho"], projection=group["projection"],
            amsgrad=group["amsgrad"], scratch=[b.numpy() for b in bufs[:workers]],
        )

    def _fused_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        scratch = []
        for p in params:
            buf = self._scratch.get(p)
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
                buf = self._scratch[p] = torch.empty_like(p, memory_format=torch.preserve_format)
            scratch.append(buf)
        torch._foreach_zero_(scratch)
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None:
            found_inf = found_inf.to(device=params[0].device, dtype=torch.float32)
        # With lr=1 and zero "parameters" the kernel leaves -u = -m̂/(√v̂+ε) in the scratch buffers.
        torch._fused_adam_(
            scratch,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
            steps,
            amsgrad=group["amsgrad"],
            lr=1.0,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=group["eps"],
            maximize=False,
            found_inf=found_inf,  # set: the kernel leaves the moments (and the zero scratch) as they are
        )
        if found_inf is not None:
            torch._foreach_sub_(steps, [found_inf] * len(steps))
        self._apply(group, params, scratch, lr_sign=1.0, found_inf=found_inf)

    def _foreach_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        t = torch.stack(steps).tolist()  # one host sync for all bias corrections
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        second = exp_avg_sqs
        if group["amsgrad"]:
            second = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(second, exp_avg_sqs)
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**k) for k in t])
        torch._foreach_add_(denom, group["eps"])
        updates = torch._foreach_div(exp_avgs, denom)
        del denom
        torch._foreach_div_(updates, [1 - beta1**k for k in t])
        self._apply(group, params, updates, lr_sign=-1.0)
