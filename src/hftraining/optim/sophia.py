"""Sophia (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer") with the
Hutchinson estimate of the Hessian diagonal: pytorch-optimizer's ``SophiaH`` plus the hooks the
trainer needs to make the double backward only on Hessian-refresh steps.

Update per coordinate: m = β1·m + (1-β1)·g; every ``update_period`` steps h = β2·h + (1-β2)·(z ⊙ Hz)
with z ~ N(0, I); θ ← θ(1 - lr·wd) - lr·clip(m / (p·max(h, eps)), ±1). Here ``lr`` is the paper's η, the
largest step of any coordinate, so ``training.learning_rate`` means what it means for Adam;
SophiaH's own ``lr`` is η/p (its defaults, 0.06 and p = 0.01, are η = 6e-4).

Trainer contract (see ``hftraining.optim``): the backward of every micro-batch of a step for which
``needs_create_graph()`` is true runs with ``create_graph=True`` and the forward inside
``hessian_context()`` (attention must use the math kernel: the fused ones have no double backward).
Gradient clipping between backward and ``step()`` is fine: it scales the gradients in place under
no_grad, so the momentum sees the clipped gradient while the Hessian-vector product still
differentiates the unclipped one (the Hessian of the loss). Gradients must be zeroed with
``zero_grad()`` after the step: that frees the double-backward graph they hold.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
from pytorch_optimizer import SophiaH
from torch.nn.attention import SDPBackend, sdpa_kernel


class Sophia(SophiaH):
    """SophiaH with ``lr`` as the largest per-coordinate step; says when it needs a ``create_graph``
    backward and fails clearly without one."""

    def __init__(self, params: Any, lr: float = 6e-4, p: float = 1e-2, **kwargs: Any):
        if not p > 0:
            raise ValueError(f"p (the clip threshold) must be > 0, got {p!r}")
        super().__init__(params, lr=lr, p=p, **kwargs)

    def needs_create_graph(self, step: Optional[int] = None) -> bool:
        """True when the next ``step()`` refreshes the Hessian estimate.

        Decided by the optimizer's own step count (saved in its state), not by ``step``: a step the
        trainer skips (non-finite loss) does not advance it, so the refresh is never lost.
        """
        return self.param_groups[0].get("step", 0) % self.update_period == 0

    def hessian_context(self, step: Optional[int] = None) -> contextlib.AbstractContextManager[Any]:
        """Wrap forward and backward of a refresh step: math attention, the only kernel with a double backward."""
        if self.needs_create_graph(step):
            return sdpa_kernel([SDPBackend.MATH])
        return contextlib.nullcontext()

    @staticmethod
    @torch.no_grad()
    def compute_hutchinson_hessian(param_groups: Any, state: Any, num_samples: int = 1, alpha: float = 1.0,
                                   distribution: str = "gaussian") -> None:
        """SophiaH's Hutchinson estimate, also when a gradient carries no graph: a gradient that does not
        depend on any parameter (the bias of the quantile head under the piecewise-linear pinball loss)
        has zero Hessian rows, so its Hessian-vector product is zero; torch.autograd.grad refuses such
        a gradient outright. The noise is drawn for every parameter in the same order as before."""
        params = [p for group in param_groups or [] for p in group["params"]
                  if p.requires_grad and p.grad is not None and not p.grad.is_sparse]
        if not params:
            return
        if distribution not in ("gaussian", "rademacher"):
            raise NotImplementedError(f"hessian with distribution {distribution} is not implemented.")
        grads = [p.grad for p in params]
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        for i in range(num_samples):
            if distribution == "rademacher":
                zs = [torch.randint_like(p, 0, 2) * 2.0 - 1.0 for p in params]
            else:
                zs = [torch.randn_like(p) for p in params]
            if not live:
                continue
            with torch.enable_grad():
                h_zs = torch.autograd.grad([grads[j] for j in live], params, grad_outputs=[zs[j] for j in live],
                                           retain_graph=i < num_samples - 1, allow_unused=True)
            for h_z, z, p in zip(h_zs, zs, params):
                if h_z is not None:
                    state[p]["hessian"].addcmul_(h_z, z, value=alpha / num_samples)

    @torch.no_grad()
    def step(self, closure=None, hessian: Optional[list[torch.Tensor]] = None):  # noqa: D102
        if hessian is None and closure is None and self.needs_create_graph():
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads and not any(g.requires_grad for g in grads):
                n = self.param_groups[0].get("step", 0)
                raise RuntimeError(
                    f"sophia: optimizer step {n} refreshes the Hessian, but the gradients carry no graph; "
                    "run that step's backward with create_graph=hftraining.optim.needs_create_graph(optimizer, step)"
                )
        # SophiaH moves a coordinate by at most its lr·p: hand it lr/p for this step only, and put
        # the exact scheduled values back (the scheduler and the checkpoint see η). SophiaH's
        # decoupled weight decay multiplies by that same lr, so the decay goes to wd·p for the step:
        # θ ← θ(1 - η·wd), the paper's (Algorithm 3) and AdamW's decay, not 1/p = 100× that.
        saved = [(g["lr"], g["weight_decay"]) for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] / g["p"]
            if g["weight_decouple"] and not g["fixed_decay"]:
                g["weight_decay"] = g["weight_decay"] * g["p"]
        try:
            # The Hessian-vector product may recompute checkpointed layers: same attention kernel.
            with self.hessian_context():
                return super().step(closure, hessian)
        finally:
            for g, (lr, wd) in zip(self.param_groups, saved):
                g["lr"], g["weight_decay"] = lr, wd
