"""The models as the pipeline drives them: windows gathered by ``WindowSet.batch`` (a batch with a
left-padded window carries a mask, an all-True row for each unpadded window; a batch without one
carries no mask), forecasts through the one batched forward and brought back to the label's units
by ``target_scale``.

- A window's forecast does not depend on its batch: alone, among unpadded windows (no mask) or
  beside a symbol's first, left-padded windows (a mask) it is the same forecast.
- The naive baselines, from a symbol's first rows on, equal a hand computation on the unscaled
  labels, seasons as long as the window included.
- The loss parts are the means a hand computation gives over windows, steps and levels.
- Gradient checkpointing, dropout off, fp32: the same loss and gradients bit for bit.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.data.windows import WindowSet
from hftraining.models import build_model, compute_loss
from hftraining.models.outputs import BUY, HOLD, SELL, ForecastOutput
from hftraining.models.patchtst import PatchTSTMultivariate
from hftraining.models.predict import predict_outputs, predict_scaled

L, H, F = 12, 7, 3
ROWS = 40  # rows per symbol
TARGET_SCALE = 0.02


def cfg_of(name: str, **kw) -> ModelConfig:
    base = dict(type=name, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=64, dropout=0.0,
                patch_len=4, patch_stride=2, moving_avg=5, season_length=5)
    if name == "transformer":
        base.update(classification_threshold=0.01, quantiles=[0.9, 0.1, 0.5])
    base.update(kw)
    return ModelConfig(**base)


def panel() -> WindowSet:
    """Two symbols of ROWS rows; symbol 0's windows are whole, symbol 1's first ones are left-padded
    (it may be read from its row 0 on, and its windows end from its row 2 on)."""
    g = np.random.default_rng(0)
    n = 2 * ROWS
    ends0 = np.arange(L - 1, ROWS - H)
    ends1 = ROWS + np.arange(2, ROWS - H)
    ends = np.concatenate([ends0, ends1])
    return WindowSet(
        features=g.normal(size=(n, F)).astype(np.float32), returns=(0.02 * g.normal(size=n)).astype(np.float32),
        ends=ends, symbol_ids=np.repeat(np.array([0, 1], np.int32), [len(ends0), len(ends1)]),
        segment_first=np.array([0, ROWS], np.int64), row_times=np.tile(np.arange(ROWS, dtype=np.int64), 2),
        row_close=np.ones(n), symbols=["A", "B"], seq_len=L, horizon=H,
        center=np.zeros((2, F), np.float32), scale=np.full((2, F), 2.0, np.float32), target_scale=TARGET_SCALE,
    )


def model_of(name: str, **kw) -> torch.nn.Module:
    """The model in eval mode; PatchTST's BatchNorm statistics moved off their initial values."""
    torch.manual_seed(0)
    model = build_model(cfg_of(name, **kw), F, H, L)
    ws = panel()
    b = ws.batch(np.arange(len(ws)))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(b["x"], b["mask"], b["past"])
    return model.eval()


NAMES = ["transformer", "transformer-mean", "patchtst", "dlinear", "zero", "repeat", "drift", "seasonal_naive"]


@pytest.mark.parametrize("name", NAMES)
def test_a_windows_forecast_does_not_depend_on_whether_its_batch_holds_a_padded_window(name):
    ws = panel()
    model = model_of("transformer", pooling="mean") if name == "transformer-mean" else model_of(name)
    whole = np.flatnonzero(ws.ends - L + 1 >= ws.first_rows)
    padded = np.flatnonzero(ws.ends - L + 1 < ws.first_rows)
    assert len(padded) >= 5 and "mask" not in ws.batch(whole) and "mask" in ws.batch(np.arange(len(ws)))
    mixed = predict_outputs(model, ws, batch_size=len(ws))  # one batch: every window beside padded ones
    alone_whole = predict_outputs(model, ws.subset(whole), batch_size=len(whole))  # no mask at all
    one_by_one = predict_outputs(model, ws, batch_size=1)
    assert mixed.keys() == alone_whole.keys() == one_by_one.keys()
    for key, full in mixed.items():
        assert np.isfinite(full).all(), key
        np.testing.assert_allclose(alone_whole[key], full[whole], rtol=1e-5, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(one_by_one[key], full, rtol=1e-5, atol=1e-6, err_msg=key)


def naive_by_hand(ws: WindowSet, name: str, season: int) -> np.ndarray:
    """(W, H) the naive forecast of every window from the unscaled labels, in float64: the rows
    before a symbol's first readable row are no history (a seasonal step there forecasts 0)."""
    lab = ws.label_rows.astype(np.float64)
    out = np.zeros((len(ws), H))
    for w, (end, first) in enumerate(zip(ws.ends, ws.first_rows)):
        real = lab[max(first, end - L + 1) : end + 1]
        if name == "repeat":
            out[w] = real[-1]
        elif name == "drift":
            out[w] = real.mean()
        else:
            for h in range(1, H + 1):
                row = end + h - season * ((h - 1) // season + 1)  # one season back, repeated past it
                out[w, h - 1] = lab[row] if row >= max(first, end - L + 1) else 0.0
    return out


@pytest.mark.parametrize("name, season", [("repeat", 5), ("drift", 5), ("seasonal_naive", 5),
                                          ("seasonal_naive", 3), ("seasonal_naive", L)])
def test_naive_forecasts_from_a_symbols_first_rows_equal_a_hand_computation_in_label_units(name, season):
    ws = panel()
    model = build_model(cfg_of(name, season_length=season), F, H, L)
    got = predict_scaled(model, ws, batch_size=16).astype(np.float64) * TARGET_SCALE
    np.testing.assert_allclose(got, naive_by_hand(ws, name, season), rtol=1e-6, atol=1e-9)
    # the targets scored against them come back to the labels the same way
    lab = ws.label_rows.astype(np.float64)
    np.testing.assert_allclose(ws.targets().astype(np.float64) * TARGET_SCALE,
                               lab[ws.ends[:, None] + np.arange(1, H + 1)], rtol=1e-6, atol=1e-9)


def test_loss_parts_are_the_means_over_windows_steps_and_levels_by_hand():
    g = np.random.default_rng(3)
    B, levels = 5, [0.9, 0.1, 0.5]  # unsorted: the quantile outputs follow this order
    pred, y = g.normal(size=(B, H)), g.normal(size=(B, H))
    q = g.normal(size=(B, H, 3))
    logits = g.normal(size=(B, H, 3))
    cfg = ModelConfig(type="transformer", classification_threshold=0.01, quantiles=levels,
                      loss_weights={"mse": 0.5, "quantile": 2.0, "classification": 0.25})
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    out = ForecastOutput(prediction=f32(pred), quantiles=f32(q), class_logits=f32(logits))
    total, parts = compute_loss(cfg, out, f32(y), TARGET_SCALE)

    mse = ((pred - y) ** 2).mean()
    r = y[..., None] - q
    tau = np.array(levels)
    pinball = np.maximum(tau * r, (tau - 1) * r).mean()
    ret = y * TARGET_SCALE  # the classes cut the label in return units
    cls = np.where(ret > 0.01, BUY, np.where(ret < -0.01, SELL, HOLD))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, cls[..., None], -1).mean()
    assert float(parts["mse"]) == pytest.approx(mse, rel=1e-5)
    assert float(parts["quantile"]) == pytest.approx(pinball, rel=1e-5)
    assert float(parts["classification"]) == pytest.approx(ce, rel=1e-5)
    assert float(total) == pytest.approx(0.5 * mse + 2.0 * pinball + 0.25 * ce, rel=1e-5)


@pytest.mark.parametrize("name", ["transformer", "patchtst", "patchtst_multivariate"])
def test_checkpointing_without_dropout_gives_the_same_loss_and_gradients_bit_for_bit(name):
    ws = panel()
    b = ws.batch(np.arange(len(ws)))
    cfg = cfg_of("patchtst" if name == "patchtst_multivariate" else name, num_layers=3)
    torch.manual_seed(0)
    ref = PatchTSTMultivariate(cfg, F, H, L) if name == "patchtst_multivariate" else build_model(cfg, F, H, L)
    ckpt = copy.deepcopy(ref)
    if name == "patchtst_multivariate":
        ckpt.gradient_checkpointing = True
    else:
        ckpt.set_gradient_checkpointing(True)
    runs = []
    for model in (ref, ckpt):
        model.train()
        if name == "patchtst_multivariate":
            loss = (model(b["x"]) - b["x"][:, -H:]).square().mean()
        else:
            loss, _ = compute_loss(cfg, model(b["x"], b["mask"], b["past"]), b["y"], TARGET_SCALE)
        loss.backward()
        runs.append((loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()},
                     {k: t.clone() for k, t in model.named_buffers()}))
    (loss_a, grads_a, bufs_a), (loss_b, grads_b, bufs_b) = runs
    assert loss_a == loss_b
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    for k in bufs_a:  # BatchNorm's running statistics updated once, in the forward
        assert torch.equal(bufs_a[k], bufs_b[k]), k
