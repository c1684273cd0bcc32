"""DLinear ("Are Transformers Effective for Time Series Forecasting?", Zeng et al., AAAI 2023):
a moving average splits each channel into trend and seasonal (remainder) parts, and one linear
layer per part maps the L inputs to the H outputs; the forecast is their sum.

* :class:`DLinear` (``model.type: dlinear``) is the project's forecaster: the linear heads read
  every channel (F features plus ``past``, the target's history) → (B, H).
* :class:`DLinearMultivariate` is the paper's model (B, L, C) → (B, H, C) with the two heads
  shared across channels (``individual=False``), used by the ETT benchmark.

Against the reference code (``cure-lab/LTSF-Linear``, ``models/DLinear.py``, ``individual=False``
as in its ETT scripts), :class:`DLinearMultivariate` computes the same function of the same weights
for an odd kernel (``tests/test_models_reference_audit.py``: the replicated edges, (k − 1) // 2 a
side, the moving average, the two maps and their sum). Where it differs:

* both maps' weights start at 1/L (the window average), the reference's two commented-out lines
  "to visualize the weights"; its published runs start from ``nn.Linear``'s default. The start
  changes what training reaches: ETTh1-96 (``bench ett --model dlinear --no-ensemble``, one thread)
  scored 0.376/0.401 from 1/L and 0.380/0.404 from the default start, against the 0.375/0.399
  published;
* an even kernel pads k // 2 steps after and (k − 1) // 2 before (see :func:`decompose`), where the
  reference returns one step short and its linear maps fail; a kernel longer than the window is
  refused (the reference repeats edge values for it);
* there is no ``individual=True`` (one pair of maps per channel), which no ETT script uses;
* ``subtract_last`` (off by default) is NLinear's normalisation, not part of DLinear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models.base import ForecastModel
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS


def decompose(x: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, C, L) → (seasonal, trend), both (N, C, L). The trend is a centred moving average;
    the ends are padded by repeating the first/last step, as in the paper's code, so the output
    keeps length L and uses no value outside the window. An even kernel averages one step more
    after a step than before it (the paper's code pads (k − 1) // 2 on both sides, which would
    shorten the series by one step and break its linear layers)."""
    front, back = (kernel - 1) // 2, kernel // 2
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], front), x, x[..., -1:].expand(*x.shape[:-1], back)], dim=-1)
    n, c, L = x.shape
    # lengths spelled out, not -1: a batch of no windows has no size to infer them from
    trend = F.avg_pool1d(padded.reshape(n * c, 1, L + kernel - 1), kernel, stride=1).view(n, c, L)  # (N, C, L)
    return x - trend, trend


def heads_sum(seasonal: torch.Tensor, trend: torch.Tensor) -> torch.Tensor:
    """The forecast: the two heads' outputs added in fp32. Under a bf16 autocast each head is a bf16
    matmul; adding them in bf16 rounded the forecast (and, without ``subtract_last``, its level) to
    8 bits once more (on ETTh1's test windows 1.4x the heads' own error in RMS, 1.7x at most). In
    fp32 (or fp64) the casts are no-ops: the same forecast, bit for bit."""
    dtype = torch.promote_types(torch.promote_types(seasonal.dtype, trend.dtype), torch.float32)
    return seasonal.to(dtype) + trend.to(dtype)


def trend_fp32(head: nn.Linear, trend: torch.Tensor) -> torch.Tensor:
    """``head(trend)`` outside any autocast: the trend carries the inputs' level (the seasonal part,
    ``x`` minus its moving average, does not), and a bf16 matmul rounds that level to 8 bits, an error
    that grows with it (DLinearMultivariate without ``subtract_last``, forecast RMS error vs fp32 at
    z-levels offset by 0, 3, 10: 1.0e-3, 4.8e-3, 1.8e-2 with both heads in bf16; 3.5e-4 at each with
    this one in fp32). Without autocast nothing changes: the same forecast, bit for bit."""
    with torch.autocast(trend.device.type, enabled=False):
        return head(trend)


def _check_kernel(cfg: ModelConfig, seq_len: int) -> None:
    if cfg.moving_avg > seq_len:
        raise ConfigError(f"model.moving_avg: kernel {cfg.moving_avg} is longer than the input window ({seq_len} rows)")


class DLinearMultivariate(nn.Module):
    """(B, L, C) → (B, H, C): decomposition + two linear maps L → H shared by all channels.

    ``subtract_last`` removes each window's last value before the model and adds it back (the NLinear
    trick against level shifts between the training and test periods); the paper's DLinear has none."""

    def __init__(self, cfg: ModelConfig, n_channels: int, horizon: int, seq_len: int, subtract_last: bool = False):
        super().__init__()
        _check_kernel(cfg, seq_len)
        self.kernel = cfg.moving_avg
        self.subtract_last = subtract_last
        self.seasonal = nn.Linear(seq_len, horizon)
        self.trend = nn.Linear(seq_len, horizon)
        # start both maps at the window average (an option in the reference code): the untrained
        # model already forecasts the level, so early validation scores are meaningful
        for lin in (self.seasonal, self.trend):
            nn.init.constant_(lin.weight, 1.0 / seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:, :] if self.subtract_last else 0.0  # (B, 1, C)
        s, t = decompose((x - last).transpose(1, 2), self.kernel)  # (B, C, L) each
        y = heads_sum(self.seasonal(s), trend_fp32(self.trend, t))  # (B, C, H)
        return y.transpose(1, 2) + last  # (B, H, C)


@MODELS.register("dlinear")
class DLinear(ForecastModel):
    """DLinear (Zeng et al. 2023): moving-average trend/seasonal split, one linear head per part.

    Every channel (F features plus ``past`` as channel F; zeros when ``past`` is not given) is
    decomposed, and the two heads read all channels' seasonal and trend parts: (B, (F+1)·L) → (B, H)
    each, the next H log returns. Padded steps (``mask`` False) are zeroed first."""

    settings = frozenset({"moving_avg"})  # two linear maps: no width, depth, heads or dropout

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_features, horizon, seq_len)
        _check_kernel(cfg, seq_len)
        n_in = (n_features + 1) * seq_len
        self.seasonal = nn.Linear(n_in, horizon)
        self.trend = nn.Linear(n_in, horizon)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> ForecastOutput:
        b, L, _ = x.shape
        target = x.new_zeros(b, L) if past is None else past.to(x.dtype)
        h = torch.cat([x, target.unsqueeze(-1)], dim=-1)  # (B, L, F+1)
        if mask is not None:
            # masked_fill, not a product with the mask: a NaN in a padded step must not leak (NaN * 0 is NaN)
            h = h.masked_fill(~mask.unsqueeze(-1), 0.0)
        s, t = decompose(h.transpose(1, 2), self.cfg.moving_avg)  # (B, F+1, L) each
        return ForecastOutput(prediction=heads_sum(self.seasonal(s.flatten(1)), trend_fp32(self.trend, t.flatten(1))))  # (B, H)
