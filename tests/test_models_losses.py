"""Loss components: buy/hold/sell labels from future returns, pinball loss, weighted total."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models import build_model
from hftraining.models.losses import BUY, HOLD, SELL, compute_loss, direction_labels, pinball_loss
from hftraining.models.outputs import ForecastOutput

THR = 0.01  # 1 % in log-return units


def test_direction_labels_against_threshold():
    returns = torch.tensor([[2 * THR, 0.0, -2 * THR, THR, -THR, 1.5 * THR, -1.5 * THR]])
    got = direction_labels(returns, THR)
    # the boundaries ±thr themselves are hold: only a move *beyond* the threshold is a signal
    assert got.tolist() == [[BUY, HOLD, SELL, HOLD, HOLD, BUY, SELL]]
    assert (SELL, HOLD, BUY) == (0, 1, 2)  # the documented order of class_logits[..., k]


def test_classification_labels_come_from_returns_not_scaled_targets():
    cfg = ModelConfig(classification_threshold=THR)
    target_scale = 0.004  # log return = scaled target × 0.004
    # scaled targets 5, 0.5, -5 are returns +0.02, +0.002, -0.02: buy, hold, sell. Thresholding
    # the scaled values themselves would call 0.5 a buy.
    target = torch.tensor([[5.0, 0.5, -5.0]])  # (B=1, H=3)
    logits = torch.randn(1, 3, 3)
    out = ForecastOutput(prediction=torch.zeros(1, 3), class_logits=logits)
    _, parts = compute_loss(cfg, out, target, target_scale)
    expected = F.cross_entropy(logits[0], torch.tensor([BUY, HOLD, SELL]))
    wrong = F.cross_entropy(logits[0], torch.tensor([BUY, BUY, SELL]))
    assert torch.allclose(parts["classification"], expected)
    assert not torch.allclose(parts["classification"], wrong)


def test_pinball_loss_hand_computed():
    # levels 0.1 and 0.9, forecasts 0 and 1, outcome 2: residuals r = 2 and 1, both under-forecasts
    # τ=0.1: max(0.1·2, −0.9·2) = 0.2;  τ=0.9: max(0.9·1, −0.1·1) = 0.9;  mean = 0.55
    q = torch.tensor([[[0.0, 1.0]]])  # (B=1, H=1, Q=2)
    assert pinball_loss(q, torch.tensor([[2.0]]), [0.1, 0.9]).item() == pytest.approx(0.55)
    # outcome −1: r = −1 and −2, over-forecasts cost 1 − τ: 0.9·1 = 0.9 and 0.1·2 = 0.2 → 0.55;
    # together with a second horizon step of outcome 0.5: r = 0.5, −0.5 → 0.05 and 0.05
    q = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])  # (1, 2, 2)
    got = pinball_loss(q, torch.tensor([[-1.0, 0.5]]), [0.1, 0.9])
    assert got.item() == pytest.approx((0.9 + 0.2 + 0.05 + 0.05) / 4)


def test_pinball_loss_is_minimised_at_the_empirical_quantile():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, 2001, generator=g)  # (1, N)
    for tau in (0.1, 0.5, 0.9):
        best = torch.quantile(y, tau).item()

        def loss(v: float) -> float:
            return pinball_loss(torch.full((1, y.shape[1], 1), v), y, [tau]).item()

        assert loss(best) < loss(best + 0.05) and loss(best) < loss(best - 0.05)


def test_total_is_weighted_sum():
    cfg = ModelConfig(classification_threshold=THR, quantiles=[0.5], loss_weights={"mse": 2.0, "quantile": 0.25})
    g = torch.Generator().manual_seed(1)
    out = ForecastOutput(
        prediction=torch.randn(4, 3, generator=g),
        class_logits=torch.randn(4, 3, 3, generator=g),
        quantiles=torch.randn(4, 3, 1, generator=g),
    )
    target = torch.randn(4, 3, generator=g)
    total, parts = compute_loss(cfg, out, target, 0.01)
    assert set(parts) == {"mse", "classification", "quantile"}
    assert torch.allclose(parts["mse"], F.mse_loss(out.prediction, target))
    assert torch.allclose(parts["quantile"], pinball_loss(out.quantiles, target, [0.5]))
    # classification has no weight: it counts once
    assert torch.allclose(total, 2.0 * parts["mse"] + parts["classification"] + 0.25 * parts["quantile"])


def test_only_produced_outputs_are_scored():
    out = ForecastOutput(prediction=torch.ones(2, 3))
    total, parts = compute_loss(ModelConfig(), out, torch.zeros(2, 3), 1.0)
    assert list(parts) == ["mse"] and total.item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"loss_weights": {"mae": 1.0}}, "model.loss_weights"),
        ({"loss_weights": {"mse": -1.0}}, "model.loss_weights.mse"),
        ({"loss_weights": {"classification": 1.0}}, "model.classification_threshold"),
        ({"loss_weights": {"quantile": 1.0}}, "model.quantiles"),
    ],
)
def test_bad_loss_weights_are_config_errors(kwargs, needle):
    cfg = ModelConfig(hidden_size=8, num_heads=2, num_layers=1, **kwargs)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as e:
        build_model(cfg, 2, 3, 8)
    assert "\n" not in str(e.value)
    # the trainer's entry point refuses it too (a config built without build_model)
    with pytest.raises(ConfigError, match="model.loss_weights"):
        compute_loss(cfg, ForecastOutput(prediction=torch.zeros(1, 3)), torch.zeros(1, 3), 1.0)


@pytest.mark.parametrize("loss", ["ic", "rank"])
def test_micro_batch_parts_weighted_by_their_term_counts_give_the_loss_of_their_union(loss):
    """Micro-batches of whole dates differ in windows and in dates with enough symbols to count (a date of
    two symbols has no Pearson IC, one of one symbol no ranking). Each part of each micro-batch weighted by
    its term count over the step's total gives the loss of all of them in one batch, value and gradient:
    what gradient accumulation over uneven date batches must add up to."""
    import numpy as np

    from hftraining.data.windows import date_groups
    from hftraining.models.losses import term_counts, weighted_total

    cfg = ModelConfig(loss=loss, classification_threshold=THR, quantiles=[0.1, 0.5, 0.9],
                      loss_weights={loss: 1.0, "quantile": 0.5, "classification": 2.0})
    times = np.repeat([10, 20, 30, 40], [2, 5, 3, 1])  # as-of dates of 11 windows
    micro = [np.arange(0, 7), np.arange(7, 11)]  # dates of 2 and 5 windows, then of 3 and 1
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(11, 2, generator=g, requires_grad=True), torch.randn(11, 2, 3, generator=g, requires_grad=True),
              torch.randn(11, 2, 3, generator=g, requires_grad=True)]  # forecast, class logits, quantiles
    target = torch.randn(11, 2, generator=g)  # scaled: the returns are target × 0.01, around the threshold

    def loss_of(idx):
        out = ForecastOutput(prediction=leaves[0][idx], class_logits=leaves[1][idx], quantiles=leaves[2][idx])
        return compute_loss(cfg, out, target[idx], 0.01, date_groups(times[idx]))

    union, union_parts = loss_of(np.arange(11))
    want = torch.autograd.grad(union, leaves)
    counts = [term_counts(cfg, times[idx]) for idx in micro]
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    accumulated, summed = 0.0, {}
    for idx, c in zip(micro, counts):
        _, parts = loss_of(idx)
        shared = {k: v * c[k] / total[k] for k, v in parts.items()}
        accumulated = accumulated + weighted_total(cfg, shared)
        summed = {k: summed.get(k, 0.0) + v for k, v in shared.items()}
    assert [c[loss] for c in counts] == ([1, 1] if loss == "ic" else [2, 1])  # the dates that count
    for k, v in union_parts.items():
        torch.testing.assert_close(summed[k], v)
    torch.testing.assert_close(accumulated, union)
    for a, b in zip(torch.autograd.grad(accumulated, leaves), want):
        torch.testing.assert_close(a, b)
