"""The ETT long-horizon benchmark under the exact published protocol (multivariate, ``features=M``).

    python -m hftraining.workflows.ett --data ../shared/data/ett --dataset ETTh1 --horizon 96 --model patchtst

Protocol (``../shared/data/ett/PAPER_TABLES.md`` §1, the ``Dataset_ETT_hour/minute`` loaders of
PatchTST, DLinear and iTransformer): 12/4/4 months of 30 days; a StandardScaler (population std)
fit on the train rows only and applied to the whole file; the val and test segments start ``L``
rows before their border so the first forecast step is the split's first row; stride-1 windows;
every test window kept (no ``drop_last``); MSE/MAE on the z-scored data over all
windows × horizon × channels; the checkpoint chosen by val MSE (early stopping). Beside the model,
the closed-form least-squares linear map L → H shared across channels is the honest reference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hftraining.core.config import ModelConfig
from hftraining.models.dlinear import DLinearMultivariate
from hftraining.models.patchtst import PatchTSTMultivariate
from hftraining.core.errors import ConfigError, DataError, UserError

DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
HORIZONS = (96, 192, 336, 720)
COLUMNS = ("date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")

# Published MSE/MAE, multivariate, normalised scale: PAPER_TABLES.md §2 (PatchTST Table 3 for
# PatchTST/64 (L=512), PatchTST/42 (L=336) and DLinear (L=336); iTransformer Table 10 (L=96)).
PUBLISHED_COLUMNS = ("PatchTST/64", "PatchTST/42", "DLinear", "iTransformer")
PUBLISHED: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {
    ("ETTh1", 96): ((0.370, 0.400), (0.375, 0.399), (0.375, 0.399), (0.386, 0.405)),
    ("ETTh1", 192): ((0.413, 0.429), (0.414, 0.421), (0.405, 0.416), (0.441, 0.436)),
    ("ETTh1", 336): ((0.422, 0.440), (0.431, 0.436), (0.439, 0.443), (0.487, 0.458)),
    ("ETTh1", 720): ((0.447, 0.468), (0.449, 0.466), (0.472, 0.490), (0.503, 0.491)),
    ("ETTh2", 96): ((0.274, 0.337), (0.274, 0.336), (0.289, 0.353), (0.297, 0.349)),
    ("ETTh2", 192): ((0.341, 0.382), (0.339, 0.379), (0.383, 0.418), (0.380, 0.400)),
    ("ETTh2", 336): ((0.329, 0.384), (0.331, 0.380), (0.448, 0.465), (0.428, 0.432)),
    ("ETTh2", 720): ((0.379, 0.422), (0.379, 0.422), (0.605, 0.551), (0.427, 0.445)),
    ("ETTm1", 96): ((0.293, 0.346), (0.290, 0.342), (0.299, 0.343), (0.334, 0.368)),
    ("ETTm1", 192): ((0.333, 0.370), (0.332, 0.369), (0.335, 0.365), (0.377, 0.391)),
    ("ETTm1", 336): ((0.369, 0.392), (0.366, 0.392), (0.369, 0.386), (0.426, 0.420)),
    ("ETTm1", 720): ((0.416, 0.420), (0.420, 0.424), (0.425, 0.421), (0.491, 0.459)),
    ("ETTm2", 96): ((0.166, 0.256), (0.165, 0.255), (0.167, 0.260), (0.180, 0.264)),
    ("ETTm2", 192): ((0.223, 0.296), (0.220, 0.292), (0.224, 0.303), (0.250, 0.309)),
    ("ETTm2", 336): ((0.274, 0.329), (0.278, 0.329), (0.281, 0.342), (0.311, 0.348)),
    ("ETTm2", 720): ((0.362, 0.385), (0.367, 0.385), (0.397, 0.421), (0.412, 0.407)),
}


# --------------------------------------------------------------------------------------------
# Data: read → split borders → scale on train rows → stride-1 windows


def load_ett(data_dir: str | Path, dataset: str) -> np.ndarray:
    """Read ``<data_dir>/<dataset>.csv`` → (T, 7) float64, columns HUFL … OT in file order."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset: unknown {dataset!r}; valid: {', '.join(DATASETS)}")
    path = Path(data_dir) / f"{dataset}.csv"
    try:
        with path.open(encoding="utf-8") as fh:
            header = fh.readline().strip().split(",")
            if tuple(header) != COLUMNS:
                raise DataError(f"{path}: header {','.join(header)!r}, expected {','.join(COLUMNS)!r}")
            values = np.loadtxt(fh, delimiter=",", usecols=range(1, len(COLUMNS)), dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected the ETT-small CSVs in --data)") from None
    except ValueError as e:
        raise DataError(f"{path}: unreadable value ({str(e).splitlines()[0]})") from None
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0, 0]) + 2  # 1-based, after the header
        raise DataError(f"{path}: non-finite value on line {row}")
    return values


def split_borders(dataset: str, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of the train/val/test segments, val/test starting ``seq_len`` rows
    early (``border1s``/``border2s`` of the reference loaders). ETTm borders are 4× the hourly ones."""
    f = 4 if dataset.startswith("ETTm") else 1
    month = 30 * 24 * f
    tr, va, te = 12 * month, 16 * month, 20 * month
    return {"train": (0, tr), "val": (tr - seq_len, va), "test": (va - seq_len, te)}


@dataclass
class Scaler:
    """Per-column standard scaler with population std (sklearn's StandardScaler)."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, rows: np.ndarray) -> "Scaler":
        std = rows.std(axis=0)  # ddof=0, as sklearn
        return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def windows(segment: torch.Tensor, seq_len: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-1 windows of a (T, C) segment → X (n, L, C), Y (n, H, C), n = T − L − H + 1.

    Both are views (no copy); window i is X = seg[i : i+L], Y = seg[i+L : i+L+H]."""
    n = segment.shape[0] - seq_len - horizon + 1
    if n <= 0:
        raise DataError(f"segment of {segment.shape[0]} rows is too short for L={seq_len} + H={horizon}")
    w = segment.unfold(0, seq_len + horizon, 1).transpose(1, 2)  # (n, L+H, C)
    return w[:, :seq_len], w[:, seq_len:]


@dataclass
class EttData:
    """The three splits of one dataset, z-scored with the train-row scaler."""

    dataset: str
    seq_len: int
    horizon: int
    scaler: Scaler
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name → (X (n, L, C), Y (n, H, C))
    borders: dict[str, tuple[int, int]]

    def count(self, split: str) -> int:
        return self.splits[split][0].shape[0]


def prepare(values: np.ndarray, dataset: str, seq_len: int, horizon: int) -> EttData:
    borders = split_borders(dataset, seq_len)
    if values.shape[0] < borders["test"][1]:
        raise DataError(f"{dataset}: {values.shape[0]} rows, the protocol needs {borders['test'][1]}")
    if seq_len > borders["train"][1] - horizon:
        raise ConfigError(f"--seq-len: {seq_len} leaves no training window with horizon {horizon}")
    scaler = Scaler.fit(values[: borders["train"][1]])  # train rows only
    z = torch.from_numpy(scaler.transform(values).astype(np.float32))  # (T, C)
    splits = {name: windows(z[a:b], seq_len, horizon) for name, (a, b) in borders.items()}
    return EttData(dataset, seq_len, horizon, scaler, splits, borders)


# --------------------------------------------------------------------------------------------
# Metrics and the closed-form reference


def metrics(predict: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, Y: torch.Tensor, batch: int = 512) -> dict[str, float]:
    """MSE and MAE over all windows × H × channels (one mean, not a mean of batch means)."""
    se = ae = 0.0
    with torch.no_grad():
        for i in range(0, X.shape[0], batch):
            err = predict(X[i : i + batch]).double() - Y[i : i + batch].double()  # (b, H, C)
            se += float((err**2).sum())
            ae += float(err.abs().sum())
    n = Y.numel()
    return {"mse": se / n, "mae": ae / n}


class LinearMap:
    """Closed-form least squares from the L inputs to the H outputs, one map shared by all channels
    (with a bias). ``ridge`` is λ relative to the mean diagonal of the Gram matrix, so it does not
    depend on the number of windows; a tiny value only guards the solve.

    ``center=True`` fits the map on windows minus their last value and adds it back (NLinear's
    trick, in closed form): the forecast then moves with the level of the window, whereas the plain
    map may pull towards the training period's level, which hurts when the test level has shifted
    (ETTh2).

    ``period > 0`` adds one bias per channel and phase of the cycle (the forecast origin's hour of
    the day for ``period`` = steps per day), an H-vector each: CycleNet's learned cycle (Lin et al.,
    NeurIPS 2024) in closed form, since for a linear map removing a cycle Q from the input and adding
    it back to the output, ``W(x − Q_past) + Q_future``, is the map plus a bias that depends only on
    the phase and the channel. The windows' phases are then passed to :meth:`fit` and the call
    (:func:`phases`); the time of day of a forecast is known in advance, so this uses no future
    values. The biases' ridge is λ relative to the mean number of windows per phase and channel."""

    def __init__(self, ridge: float = 1e-6, center: bool = False, period: int = 0):
        self.ridge = ridge
        self.center = center
        self.period = period
        self.weight: torch.Tensor | None = None  # (L+1, H)
        self.phase_bias: torch.Tensor | None = None  # (C·period, H) when period > 0

    def _offset(self, X: torch.Tensor) -> torch.Tensor | float:
        return X[:, -1:, :] if self.center else 0.0  # (b, 1, C)

    def _groups(self, phase: torch.Tensor | None, b: int, c: int) -> torch.Tensor:
        """Row (window i, channel k) of the design → bias index k·period + phase_i."""
        if phase is None or phase.shape != (b,):
            raise ValueError(f"LinearMap(period={self.period}) needs the phase of each of the {b} windows")
        return (torch.arange(c) * self.period + phase.long()[:, None] % self.period).reshape(-1)  # (b·C,)

    def fit(self, X: torch.Tensor, Y: torch.Tensor, phase: torch.Tensor | None = None, chunk: int = 2048) -> "LinearMap":
        """X (n, L, C), Y (n, H, C); ``phase`` (n,) when ``period`` > 0. The Gram matrix is accumulated
        in float64 over chunks of windows, so ETTm's 240k series never materialise as one (n·C, L)
        matrix; the phase biases' blocks are sums per group (no one-hot columns)."""
        L, H, C = X.shape[1], Y.shape[1], X.shape[2]
        G = torch.zeros(L + 1, L + 1, dtype=torch.float64)
        B = torch.zeros(L + 1, H, dtype=torch.float64)
        k = C * self.period
        S = torch.zeros(k, L + 1, dtype=torch.float64)  # per group: sum of its design rows
        Be = torch.zeros(k, H, dtype=torch.float64)  # per group: sum of its targets
        count = torch.zeros(k, dtype=torch.float64)
        for i in range(0, X.shape[0], chunk):
            x, off = X[i : i + chunk], self._offset(X[i : i + chunk])
            a = self._design(x - off)  # (b·C, L+1)
            y = (Y[i : i + chunk] - off).transpose(1, 2).reshape(-1, H).double()  # (b·C, H)
            G += a.T @ a
            B += a.T @ y
            if self.period:
                g = self._groups(phase[i : i + chunk], x.shape[0], C)
                S.index_add_(0, g, a)
                Be.index_add_(0, g, y)
                count += torch.bincount(g, minlength=k).double()
        if self.period:
            G = torch.cat([torch.cat([G, S.T], 1), torch.cat([S, torch.diag(count)], 1)], 0)
            B = torch.cat([B, Be], 0)
            scale = torch.cat([torch.full((L + 1,), float(G[: L + 1].diagonal().mean())), torch.full((k,), float(count.mean()))])
        else:
            scale = G.diagonal().mean().expand(L + 1)
        self._normal_equations = (G, B, scale.to(torch.float64), k)
        return self.solve(self.ridge)

    def solve(self, ridge: float) -> "LinearMap":
        """A copy with another λ, solved from the stored normal equations (no pass over the data)."""
        G, B, scale, k = self._normal_equations
        out = LinearMap(ridge, self.center, self.period)
        out._normal_equations = self._normal_equations
        w = torch.linalg.solve(G + torch.diag(ridge * scale), B)
        out.weight, out.phase_bias = w[: w.shape[0] - k], (w[w.shape[0] - k :] if k else None)
        if ridge == self.ridge:
            self.weight, self.phase_bias = out.weight, out.phase_bias
        return out

    @staticmethod
    def _design(X: torch.Tensor) -> torch.Tensor:
        a = X.transpose(1, 2).reshape(-1, X.shape[1]).double()  # (b·C, L): one row per series
        return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)

    def __call__(self, X: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
        """X (b, L, C) → (b, H, C); ``phase`` (b,) when ``period`` > 0."""
        if self.weight is None:
            raise RuntimeError("LinearMap.fit must be called first")
        b, _, c = X.shape
        off = self._offset(X)
        y = self._design(X - off) @ self.weight  # (b·C, H)
        if self.period:
            y = y + self.phase_bias[self._groups(phase, b, c)]
        return y.view(b, c, -1).transpose(1, 2).float() + off


def phases(data: "EttData", split: str, period: int) -> torch.Tensor:
    """(n,) phase of each window's first forecast row: its row index in the file mod ``period``
    (the files start at midnight and have no gaps, PAPER_TABLES.md §0)."""
    first = data.borders[split][0] + data.seq_len
    return (first + torch.arange(data.count(split))) % period


# --------------------------------------------------------------------------------------------
# Trained models


@dataclass
class TrainSettings:
    epochs: int = 10
    """Passes over the training windows (early stopping may end sooner)."""
    batch_size: int = 128
    """Windows per step (each holds C channel series)."""
    lr: float = 1e-3
    """Peak learning rate of a cosine schedule with a 5% linear warmup, down to 10%."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay (the reference scripts use none)."""
    patience: int = 3
    """Stop after this many evaluations without a lower val MSE."""
    evals_per_epoch: int = 2
    """Val evaluations (checkpoint candidates) per epoch."""
    bf16: bool = False
    """bfloat16 autocast for the forward pass; time it first: BatchNorm and PatchTST's small matmuls gain little on CPU."""
    seed: int = 2021


class OnLinearMap(torch.nn.Module):
    """A fixed closed-form map plus a trained correction: (B, L, C) → (B, H, C).

    The network starts at zero output (its head is zero-initialised) so training starts from the
    linear map's forecast and early stopping can only keep a correction that lowers val MSE. The
    network's own level (its RevIN location, the window mean) is removed from the correction: the
    base map already places the level."""

    def __init__(self, base: LinearMap, net: torch.nn.Module):
        super().__init__()
        if base.center or base.weight is None:
            raise ValueError("OnLinearMap needs a fitted plain LinearMap")
        self.register_buffer("base_weight", base.weight.float())  # (L+1, H)
        self.net = net
        head = getattr(net, "head", None)
        if isinstance(head, torch.nn.Linear):
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.base_weight
        base = (x.transpose(1, 2) @ w[:-1] + w[-1]).transpose(1, 2)  # (B, H, C)
        return base + self.net(x) - x.mean(dim=1, keepdim=True)


def build_ett_model(name: str, cfg: ModelConfig, n_channels: int, horizon: int, seq_len: int, **kwargs: Any) -> torch.nn.Module:
    """(B, L, C) → (B, H, C) model of the benchmark: ``patchtst`` or ``dlinear``."""
    if name == "patchtst":
        return PatchTSTMultivariate(cfg, n_channels, horizon, seq_len, **kwargs)
    if name == "dlinear":
        return DLinearMultivariate(cfg, n_channels, horizon, seq_len, **kwargs)
    raise ConfigError(f"--model: unknown {name!r}; valid: patchtst, dlinear, linear")


def _predictor(model: torch.nn.Module, bf16: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x).float()

    return predict


def train_model(model: torch.nn.Module, data: EttData, s: TrainSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train with MSE on the train windows; keep the weights with the lowest val MSE (early stopping).
    Returns the history and wall time; ``model`` ends with the best weights loaded."""
    torch.manual_seed(s.seed)
    Xtr, Ytr = data.splits["train"]
    Xva, Yva = data.splits["val"]
    n = Xtr.shape[0]
    steps_per_epoch = math.ceil(n / s.batch_size)
    total = steps_per_epoch * s.epochs
    warmup = max(1, total // 20)
    eval_at = {round(steps_per_epoch * (k + 1) / s.evals_per_epoch) for k in range(s.evals_per_epoch)}
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed)
    predict = _predictor(model, s.bf16)
    best = {"val_mse": math.inf, "step": 0, "state": None}
    history: list[dict[str, float]] = []
    bad = 0
    step = 0
    t0 = time.perf_counter()
    for epoch in range(s.epochs):
        order = torch.randperm(n, generator=gen)
        for k in range(steps_per_epoch):
            # lr as a pure function of the step: warmup, then cosine down to 10%
            frac = step / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for g in opt.param_groups:
                g["lr"] = s.lr * min(1.0, frac)
            idx = order[k * s.batch_size : (k + 1) * s.batch_size]
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
                pred = model(Xtr[idx])  # (b, H, C)
            loss = torch.nn.functional.mse_loss(pred.float(), Ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss = loss.detach()
            if (k + 1) in eval_at:
                model.eval()
                val = metrics(predict, Xva, Yva)["mse"]
                history.append({"epoch": epoch + (k + 1) / steps_per_epoch, "train_loss": float(loss), "val_mse": val})
                log(f"  epoch {history[-1]['epoch']:.2f}  step {step}  loss {float(loss):.4f}  val mse {val:.4f}  {time.perf_counter() - t0:.0f}s")
                if val < best["val_mse"]:
                    best = {"val_mse": val, "step": step, "state": {k_: v.detach().clone() for k_, v in model.state_dict().items()}}
                    bad = 0
                else:
                    bad += 1
                if bad >= s.patience:
                    break
        if bad >= s.patience:
            log(f"  early stop: {bad} evaluations without a lower val MSE")
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return {"history": history, "best_val_mse": best["val_mse"], "best_step": best["step"], "train_seconds": time.perf_counter() - t0}


def predictions(predict: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Forecasts of every window, X (n, L, C) → (n, H, C), in batches without gradients."""
    with torch.no_grad():
        return torch.cat([predict(X[i : i + batch]) for i in range(0, X.shape[0], batch)])  # (n, H, C)


def _mse_mae(p: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    err = p.double() - y.double()
    return {"mse": float((err**2).mean()), "mae": float(err.abs().mean())}


# --------------------------------------------------------------------------------------------
# The benchmark


def select_average(members: dict[str, tuple[torch.Tensor, torch.Tensor]], Yva: torch.Tensor, Yte: torch.Tensor,
                   max_steps: int = 20) -> dict[str, Any]:
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004) on val: start from the
    best member, repeatedly add the member (again, if it helps) whose inclusion lowers the val MSE
    of the running average the most, stop when none does. ``members`` maps a name to its
    (val forecast, test forecast). Only val decides; test is scored once, for the result."""
    val_mse = {n: _mse_mae(v, Yva)["mse"] for n, (v, _) in members.items()}
    chosen = [min(val_mse, key=val_mse.get)]
    total = members[chosen[0]][0].double()
    best = val_mse[chosen[0]]
    for _ in range(max_steps - 1):
        trial = {n: _mse_mae((total + v) / (len(chosen) + 1), Yva)["mse"] for n, (v, _) in members.items()}
        name = min(trial, key=trial.get)
        if trial[name] >= best:
            break
        chosen.append(name)
        total = total + members[name][0]
        best = trial[name]
    weights = {n: chosen.count(n) / len(chosen) for n in dict.fromkeys(chosen)}
    test = sum(w * members[n][1].double() for n, w in weights.items())
    val = sum(w * members[n][0].double() for n, w in weights.items())
    return {"weights": weights, "member_val_mse": val_mse, "val": _mse_mae(val, Yva), "test": _mse_mae(test, Yte)}


RIDGES = (1e-4, 1e-2, 1e-1, 1.0)
"""λ candidates of the extra closed-form members, each chosen on val."""


def steps_per_day(dataset: str) -> int:
    return 96 if dataset.startswith("ETTm") else 24


def linear_forecasts(m: LinearMap, data: EttData, split: str, batch: int = 512) -> torch.Tensor:
    """``m``'s forecasts of every window of a split, (n, H, C), with the windows' phases if it has any."""
    X = data.splits[split][0]
    ph = phases(data, split, m.period) if m.period else None
    return torch.cat([m(X[i : i + batch], None if ph is None else ph[i : i + batch]) for i in range(0, X.shape[0], batch)])


def linear_members(values: np.ndarray, dataset: str, horizon: int, lookbacks: tuple[int, ...], log: Callable[[str], None],
                   time_of_day: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form members for the ensemble: for each L, the plain and the centred map, and with
    ``time_of_day`` both again with a bias per channel and time of day (``LinearMap(period=steps per
    day)``), each with the λ of ``RIDGES`` that has the lowest val MSE → name → (val forecast,
    test forecast)."""
    out = {}
    for lb in lookbacks:
        # val/test windows target the same rows whatever L is (the segments start L rows early)
        d = prepare(values, dataset, lb, horizon)
        (Xtr, Ytr), (_, Yva) = d.splits["train"], d.splits["val"]
        for period in (0, steps_per_day(dataset)) if time_of_day else (0,):
            for center in (False, True):
                base = LinearMap(RIDGES[0], center, period).fit(Xtr, Ytr, phases(d, "train", period) if period else None)
                fits = [base.solve(r) for r in RIDGES]
                vals = [linear_forecasts(m, d, "val") for m in fits]
                i = min(range(len(fits)), key=lambda j: _mse_mae(vals[j], Yva)["mse"])
                name = f"{'centred' if center else 'plain'} linear{' + time of day' if period else ''} L={lb} λ={RIDGES[i]:g}"
                out[name] = (vals[i], linear_forecasts(fits[i], d, "test"))
                log(f"  {name}: val mse {_mse_mae(vals[i], Yva)['mse']:.4f}")
    return out


def run_ett(
    data_dir: str | Path,
    dataset: str = "ETTh1",
    horizon: int = 96,
    model: str = "patchtst",
    seq_len: int = 336,
    model_cfg: ModelConfig | None = None,
    settings: TrainSettings | None = None,
    model_kwargs: dict[str, Any] | None = None,
    ridge: float = 1e-6,
    ensemble: bool = True,
    log: Callable[[str], None] = print,
    save_predictions: str | Path | None = None,
    linear_lookbacks: tuple[int, ...] = (),
    time_of_day: bool = True,
) -> dict[str, Any]:
    """Run one dataset × horizon. Always: the closed-form linear map at ``seq_len`` (the reference).
    Then the trained ``model`` (``"linear"``: none), and plain and centred closed-form maps at each of
    ``linear_lookbacks``, with ``time_of_day`` also with biases per time of day
    (:func:`linear_members`). With ``ensemble``, "ours" is the greedy val-chosen
    average of all these (:func:`select_average`); otherwise the trained model alone. Returns a
    JSON-ready dict of metrics, window counts, wall times and the published figures.
    ``save_predictions`` writes the val/test forecasts (safetensors) for later combination."""
    if horizon <= 0:
        raise ConfigError(f"--horizon: must be > 0, got {horizon}")
    train_rows = split_borders(dataset, 0)["train"][1] if dataset in DATASETS else math.inf
    for flag, lb in [("--seq-len", seq_len), *(("--linear-lookbacks", lb) for lb in linear_lookbacks)]:
        if lb <= 0:
            raise ConfigError(f"{flag}: must be > 0, got {lb}")
        if lb > train_rows - horizon:
            raise ConfigError(f"{flag}: {lb} leaves no training window with horizon {horizon}")
    settings = settings or TrainSettings()
    model_cfg = model_cfg or default_model_config(model, dataset)
    values = load_ett(data_dir, dataset)
    data = prepare(values, dataset, seq_len, horizon)
    (Xtr, Ytr), (Xva, Yva), (Xte, Yte) = (data.splits[k] for k in ("train", "val", "test"))
    result: dict[str, Any] = {
        "dataset": dataset, "horizon": horizon, "seq_len": seq_len, "model": model,
        "windows": {k: data.count(k) for k in data.splits},
        "protocol": "all test windows (drop_last=False), scaler on train rows, metrics on z-scored data",
        "published": {name: {"mse": v[0], "mae": v[1]} for name, v in zip(PUBLISHED_COLUMNS, PUBLISHED.get((dataset, horizon), ()))},
    }
    t0 = time.perf_counter()
    lin = LinearMap(ridge).fit(Xtr, Ytr)
    members = {f"linear L={seq_len}": (predictions(lin, Xva), predictions(lin, Xte))}
    lin_val, lin_test = members[f"linear L={seq_len}"]
    result["linear_map"] = {"ridge": ridge, "val": _mse_mae(lin_val, Yva), "test": _mse_mae(lin_test, Yte), "fit_seconds": time.perf_counter() - t0}
    log(f"{dataset} H={horizon} L={seq_len}: windows {result['windows']}; linear map val {result['linear_map']['val']['mse']:.4f} "
        f"test {result['linear_map']['test']['mse']:.4f} ({result['linear_map']['fit_seconds']:.1f}s)")
    result["ours"] = {"name": "linear map", **{k: result["linear_map"][k] for k in ("val", "test")}}
    members.update(linear_members(values, dataset, horizon, tuple(sorted(set(linear_lookbacks))), log, time_of_day))
    if model != "linear":
        kwargs = dict(model_kwargs or {})
        on_linear = kwargs.pop("on_linear", False)
        torch.manual_seed(settings.seed)  # the initial weights follow --seed (torch seeds each process at random)
        net = build_ett_model(model, model_cfg, Xtr.shape[2], horizon, seq_len, **kwargs)
        if on_linear:
            net = OnLinearMap(lin, net)
        log(f"training {model} ({sum(p.numel() for p in net.parameters()):,} parameters), {settings}")
        train = train_model(net, data, settings, log)
        name = model + (" on the linear map" if on_linear else "")
        predict = _predictor(net, settings.bf16)
        members[name] = (predictions(predict, Xva), predictions(predict, Xte))
        result["trained"] = {
            "model_config": {k: getattr(model_cfg, k) for k in ("hidden_size", "num_heads", "num_layers", "intermediate_size", "dropout", "patch_len", "patch_stride", "moving_avg")},
            "model_kwargs": model_kwargs or {},
            "settings": vars(settings),
            "val": _mse_mae(members[name][0], Yva), "test": _mse_mae(members[name][1], Yte),
            **{k: train[k] for k in ("best_val_mse", "best_step", "train_seconds", "history")},
        }
        result["ours"] = {"name": name, **{k: result["trained"][k] for k in ("val", "test")}}
    result["members"] = {n: {"val": _mse_mae(v, Yva), "test": _mse_mae(t, Yte)} for n, (v, t) in members.items()}
    if ensemble and len(members) > 1:
        result["ensemble"] = select_average(members, Yva, Yte)
        w = result["ensemble"]["weights"]
        name = " + ".join(f"{v:.2f}·{n}" for n, v in w.items()) if len(w) > 1 else next(iter(w))
        result["ours"] = {"name": name, **{k: result["ensemble"][k] for k in ("val", "test")}}
    result["total_seconds"] = time.perf_counter() - t0
    if save_predictions:
        from safetensors.torch import save_file

        tensors = {f"{n.replace(' ', '_')}/{split}": p.contiguous() for n, pair in members.items() for split, p in zip(("val", "test"), pair)}
        save_file(tensors, str(save_predictions), metadata={"dataset": dataset, "horizon": str(horizon), "seq_len": str(seq_len)})
    return result


def default_model_config(model: str, dataset: str) -> ModelConfig:
    """The benchmark's defaults: PatchTST's official ETT settings (``scripts/PatchTST/ett*.sh``)."""
    if model == "patchtst":
        if dataset.startswith("ETTh"):
            return ModelConfig(type="patchtst", hidden_size=16, num_heads=4, num_layers=3, intermediate_size=128, dropout=0.3)
        return ModelConfig(type="patchtst", hidden_size=128, num_heads=16, num_layers=3, intermediate_size=256, dropout=0.2)
    return ModelConfig(type=model)


def format_table(results: list[dict[str, Any]]) -> str:
    """One line per dataset × horizon: ours, the linear map, and the published columns (MSE/MAE)."""
    head = ["dataset", "H", "ours (test)", "linear map", *PUBLISHED_COLUMNS, "ours/P64", "ours/linear", "seconds"]
    rows = [head]
    for r in results:
        pub = PUBLISHED.get((r["dataset"], r["horizon"]), ())
        ours, lin = r["ours"]["test"], r["linear_map"]["test"]
        p64 = pub[0][0] if pub else float("nan")
        rows.append([
            r["dataset"], str(r["horizon"]), f"{ours['mse']:.3f}/{ours['mae']:.3f}", f"{lin['mse']:.3f}/{lin['mae']:.3f}",
            *[f"{m:.3f}/{a:.3f}" for m, a in pub], f"{ours['mse'] / p64:.3f}", f"{ours['mse'] / lin['mse']:.3f}",
            f"{r.get('total_seconds', r['linear_map']['fit_seconds']):.0f}",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("ours:")
    lines += [f"  {r['dataset']} H={r['horizon']}: {r['ours']['name']}" for r in results]
    lines.append("seconds: wall time of the cell (fits, training and evaluation)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hftraining.workflows.ett", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with ETTh1.csv … ETTm2.csv")
    p.add_argument("--dataset", nargs="+", default=["ETTh1"], choices=DATASETS)
    p.add_argument("--horizon", nargs="+", type=int, default=[96])
    p.add_argument("--model", default="patchtst", choices=["patchtst", "dlinear", "linear"])
    p.add_argument("--seq-len", type=int, default=336)
    p.add_argument("--ridge", type=float, default=1e-6, help="λ of the closed-form map, relative to the Gram diagonal")
    p.add_argument("--no-ensemble", action="store_true", help="report the trained model alone")
    p.add_argument("--linear-lookbacks", nargs="*", type=int, default=[],
                   help="also fit plain and centred closed-form maps at these L; ours = the members' average chosen on val")
    p.add_argument("--no-time-of-day", action="store_true",
                   help="leave out the --linear-lookbacks members with a bias per channel and time of day")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--num-heads", type=int)
    p.add_argument("--intermediate-size", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--patch-len", type=int)
    p.add_argument("--patch-stride", type=int)
    p.add_argument("--moving-avg", type=int)
    p.add_argument("--head-dropout", type=float, help="patchtst: dropout before the flatten head")
    p.add_argument("--subtract-last", action="store_true", help="RevIN (patchtst) / input (dlinear) subtracts the last value")
    p.add_argument("--on-linear", action="store_true", help="patchtst: train a correction on top of the closed-form map at --seq-len")
    p.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--lr", type=float, default=TrainSettings.lr)
    p.add_argument("--weight-decay", type=float, default=TrainSettings.weight_decay)
    p.add_argument("--patience", type=int, default=TrainSettings.patience)
    p.add_argument("--evals-per-epoch", type=int, default=TrainSettings.evals_per_epoch)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=TrainSettings.seed)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--save-predictions", help="write val/test forecasts to this safetensors file (one dataset × horizon)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    settings = TrainSettings(a.epochs, a.batch_size, a.lr, a.weight_decay, a.patience, a.evals_per_epoch, a.bf16, a.seed)
    results = []
    try:
        for ds in a.dataset:
            cfg = default_model_config(a.model, ds)
            for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "dropout", "patch_len", "patch_stride", "moving_avg"):
                if getattr(a, key) is not None:
                    setattr(cfg, key, getattr(a, key))
            kwargs: dict[str, Any] = {}
            if a.subtract_last:
                kwargs["subtract_last"] = True
            if a.on_linear and a.model == "patchtst":
                kwargs["on_linear"] = True
            if a.head_dropout is not None and a.model == "patchtst":
                kwargs["head_dropout"] = a.head_dropout
            for h in a.horizon:
                r = run_ett(a.data, ds, h, a.model, a.seq_len, cfg, settings, kwargs, a.ridge, not a.no_ensemble,
                            save_predictions=a.save_predictions, linear_lookbacks=tuple(a.linear_lookbacks),
                            time_of_day=not a.no_time_of_day)
                results.append(r)
                print(f"{ds} H={h}: ours ({r['ours']['name']}) test mse {r['ours']['test']['mse']:.4f} mae {r['ours']['test']['mae']:.4f}; "
                      f"linear map {r['linear_map']['test']['mse']:.4f}; {r.get('total_seconds', 0):.0f}s", flush=True)
                if a.out:  # rewritten after every cell so a long run keeps what it finished
                    Path(a.out).write_text(json.dumps({"machine": f"{torch.get_num_threads()} CPU threads", "results": results}, indent=1) + "\n")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print()
    print(f"ETT, multivariate, all test windows, MSE/MAE on z-scored data; published figures from PAPER_TABLES.md; torch threads {torch.get_num_threads()}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
