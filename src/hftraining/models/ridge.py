"""Ridge regression on the inputs every model is given (the window's features ``x`` and the label's
own history ``past``; PatchTST and DLinear read both, the transformer reads ``x`` alone): the strong
cheap baseline of the field (in Qlib's CSI300/Alpha158 benchmark a linear model reaches IC 0.040
against the Transformer's 0.026).

The design row of a window is the last row's F scaled features, the target's last
``model.ridge_lags`` 1-step returns (``past``, scaled target units; padding is zero) and a bias;
one closed-form least-squares map goes to the H forecast steps. The penalty is chosen on the
validation windows among ``model.ridge_lambdas`` (relative to the mean diagonal of the Gram
matrix, so it does not depend on the number of windows). Fitting is one pass over the training
windows accumulating the (D+1)² Gram matrix in float64: seconds for millions of windows.

The weights are a buffer, so the model folder holds them in ``model.safetensors`` like any other
model; prediction is the one batched forward, and ONNX export traces the same matmul.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.data.windows import WindowSet, eval_batches
from hftraining.models.base import ForecastModel
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS

FIT_BATCH = 4096  # windows per chunk of the Gram accumulation (memory, not results)
MAX_PENALTY = float(np.finfo(np.float32).max)
"""The largest penalty ``model.ridge_lambdas`` may hold: the model folder records the chosen one as a float32
(``penalty``), which holds no larger number (recording one ended the fit in a traceback)."""


def solve_penalised(gram: torch.Tensor, rhs: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """The package's one closed-form least-squares solve (ridge here, the ETT benchmark's linear
    maps): ``(gram + diag(penalty))⁻¹ rhs`` for the normal equations ``gram`` (D, D) and ``rhs``
    (D, K), float64; a penalty of 0 leaves a coefficient (a bias) unpenalised."""
    return torch.linalg.solve(gram + torch.diag(penalty), rhs)


@MODELS.register("ridge")
class RidgeForecaster(ForecastModel):
    """Ridge regression on the last row's features and the recent returns, penalty chosen on validation."""

    needs_training = False  # no gradient steps: fitted in closed form by :meth:`fit_windows`
    fits_on_data = True
    settings = frozenset({"ridge_lags", "ridge_lambdas"})

    @classmethod
    def check_run_settings(cls, cfg: ModelConfig, horizon: int, seq_len: int) -> None:
        """``model.ridge_lags`` longer than the window is a ConfigError: the model would read the
        window's ``seq_len`` returns and no more, a smaller model than the config says; so is a penalty of
        ``model.ridge_lambdas`` above :data:`MAX_PENALTY` (the fit ended in a traceback when it chose one, after
        the run's features were built)."""
        if cfg.ridge_lags > seq_len:
            raise ConfigError(f"model.ridge_lags: {cfg.ridge_lags} returns are more than the input window holds "
                              f"(data.sequence_length={seq_len}); choose at most {seq_len}")
        big = [v for v in cfg.ridge_lambdas if v > MAX_PENALTY] if "ridge_lambdas" in cls.settings else []
        if big:
            raise ConfigError(f"model.ridge_lambdas: {big[0]:g} is more than the model folder can record as the chosen "
                              f"penalty (float32, at most {MAX_PENALTY:.4g}); choose smaller penalties")

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_features, horizon, seq_len)
        # at most the window: the fitted baselines beside a run keep their default 20 lags whatever the
        # run's window (a run's own ridge or LightGBM is refused past it: check_run_settings)
        self.lags = min(cfg.ridge_lags, seq_len)
        self.register_buffer("weight", torch.zeros(n_features + self.lags + 1, horizon))  # (D+1, H)
        self.register_buffer("penalty", torch.zeros(()))  # the chosen λ (relative), 0 until fitted

    def design(self, x: torch.Tensor, mask: torch.Tensor | None, past: torch.Tensor | None) -> torch.Tensor:
        """(B, L, F), (B, L), (B, L) → (B, D+1) design rows: last row's features, recent returns, 1."""
        lags = past[:, -self.lags :] if past is not None else x.new_zeros(x.shape[0], self.lags)
        if mask is not None:
            lags = lags.masked_fill(~mask[:, -self.lags :], 0.0)  # padded steps carry no return
        return torch.cat([x[:, -1, :], lags.to(x.dtype), x.new_ones(x.shape[0], 1)], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None) -> ForecastOutput:
        a = self.design(x, mask, past).float()
        # fp32 under any autocast: the map was fitted in float64 and its penalty chosen on fp32
        # forecasts; a bf16 run's autocast would round inputs, weights and forecasts to 8 bits
        # (ties across symbols whose forecasts differ by less than ~0.4% of their common level)
        with torch.autocast(a.device.type, enabled=False):
            return ForecastOutput(prediction=a @ self.weight.float())  # (B, H)

    @torch.no_grad()
    def design_batches(self, ws: WindowSet) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(design rows (B, D+1), targets (B, H)) of the windows of ``ws`` (on the host), FIT_BATCH at
        a time: the rows :meth:`design` makes of the whole windows, bit for bit, from only the rows it
        reads, each window's last feature row and its last ``lags`` labels (a whole window gathers
        ``sequence_length`` rows of every feature: 60 × 158 values where the design reads 158 + 20)."""
        ws = ws.on_device("cpu")
        last = dataclasses.replace(ws, seq_len=1)  # "x": the last row; "y": the targets
        lags = min(self.lags, ws.seq_len)  # no more steps than a whole window of ws holds
        # "past" and its "mask" of the last lags steps, padded as in the whole window; no features
        recent = dataclasses.replace(ws, seq_len=lags, horizon=0, features=ws.features[:, :0], center=None, scale=None)
        for idx in eval_batches(len(ws), FIT_BATCH):
            b, r = last.batch(idx), recent.batch(idx)
            yield self.design(b["x"], r.get("mask"), r["past"]), b["y"]

    @torch.no_grad()
    def _normal_equations(self, ws: WindowSet) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.weight.shape[0]
        gram = torch.zeros(d, d, dtype=torch.float64)
        rhs = torch.zeros(d, self.horizon, dtype=torch.float64)
        for a, y in self.design_batches(ws):
            a = a.double()
            gram += a.T @ a
            rhs += a.T @ y.double()
        return gram, rhs

    @torch.no_grad()
    def fit_windows(self, train: WindowSet, val: WindowSet) -> dict[str, float]:
        """Fit on ``train`` for every penalty, keep the one with the lowest MSE on ``val`` (the
        first penalty without validation windows) → {"penalty", "val_mse"} (scaled units)."""
        if len(train) == 0:
            raise ValueError("ridge: no training window to fit on")  # the pipeline refuses an empty split first
        train, val = train.on_device("cpu"), val.on_device("cpu")  # solved on the host, wherever the model lives
        gram, rhs = self._normal_equations(train)
        scale = float(gram.diagonal()[:-1].mean()) if gram.shape[0] > 1 else 1.0
        unit = torch.ones(gram.shape[0], dtype=torch.float64)
        unit[-1] = 0.0  # the bias is not penalised
        fits = [solve_penalised(gram, rhs, lam * scale * unit) for lam in self.cfg.ridge_lambdas]
        se, n = [0.0] * len(fits), 0
        for a, y in self.design_batches(val):  # each window gathered once for every penalty
            for k, w in enumerate(fits):
                err = (a @ w.float()).double() - y.double()  # forward() with weight w
                se[k] += float((err**2).sum())
            n += y.numel()
        scores = [v / n for v in se] if len(val) else []
        best = int(np.argmin(scores)) if scores else 0
        self.weight.copy_(fits[best].float())
        self.penalty.fill_(self.cfg.ridge_lambdas[best])
        return {"penalty": float(self.cfg.ridge_lambdas[best]), "val_mse": scores[best] if scores else float("nan")}
