"""What a training step minimises: the buy/hold/sell classes of the loss are those the evaluation scores,
gradient checkpointing and accumulation leave the gradient as it is, a padded window trains as the
unpadded one, the loss under bf16 autocast is computed in float32, and a part at weight 0 adds nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny
from test_train_cross_section import one_step
from hftraining.core.config import ModelConfig, load_config
from hftraining.eval import metrics
from hftraining.models import build_model
from hftraining.models.losses import compute_loss
from hftraining.models.outputs import N_CLASSES, ForecastOutput


def _classes_trained(cfg: ModelConfig, target: torch.Tensor, target_scale: float) -> np.ndarray:
    """The class each (window, step) of ``target`` (B, H) trains towards: the cross-entropy's gradient with
    respect to equal logits is (1/3 − one-hot) / n, lowest at the label."""
    logits = torch.zeros(*target.shape, N_CLASSES, requires_grad=True)
    _, parts = compute_loss(cfg, ForecastOutput(prediction=torch.zeros(target.shape), class_logits=logits),
                            target, target_scale)
    (grad,) = torch.autograd.grad(parts["classification"], logits)
    return grad.argmin(-1).numpy()


@pytest.mark.parametrize("threshold, target_scale", [(0.003, 0.021), (0.005, 0.021), (0.0125, 0.0137),
                                                     (0.0125, 0.0093)])
def test_the_loss_trains_each_window_towards_the_class_the_evaluation_scores_it_in(threshold, target_scale):
    """The evaluation cuts a window's label (the float32 scaled target in float64, times target_scale)
    at ± model.classification_threshold in float64. The loss cut the float32 product against the threshold
    rounded to float32: a label within that rounding of the threshold trained as one class and was scored
    as another (threshold 0.003, target_scale 0.021: the scaled target 0.14285715 is a return of
    0.0030000001, a buy for the evaluation and a hold for the loss)."""
    cfg = ModelConfig(classification_threshold=threshold)
    at = np.float32(threshold / target_scale)  # the scaled target nearest the threshold
    near = at + np.arange(-3000, 3000, dtype=np.float32) * np.spacing(at)  # every float32 around it
    scaled = np.concatenate([near, -near, [np.float32(np.float32(threshold) / np.float32(target_scale))]])
    target = torch.from_numpy(scaled.astype(np.float32).reshape(-1, 1))  # (B, H=1)
    trained = _classes_trained(cfg, target, target_scale)  # (B, 1)

    true = target.numpy().astype(np.float64) * target_scale  # as eval.forecasts makes the scored labels
    dates = np.arange(len(true))
    scored = metrics.class_scores(np.eye(N_CLASSES)[trained], true, dates, threshold)  # one-hot on the trained class
    assert scored["accuracy"] == 1.0, f"{(1 - scored['accuracy']) * len(true):.0f} labels train as another class"
    assert set(np.unique(trained)) == {0, 1, 2}  # the boundary itself is crossed both ways


def _model(typ: str, dropout: float, **kw):
    extra = {"patch_len": 4, "patch_stride": 2} if typ == "patchtst" else {
        "classification_threshold": 0.01, "quantiles": [0.1, 0.5, 0.9]}
    cfg = ModelConfig(type=typ, hidden_size=16, num_heads=2, num_layers=2, dropout=dropout, **extra, **kw)
    torch.manual_seed(0)
    return cfg, build_model(cfg, 3, 2, 12)


def _batch(padded: bool = True):
    g = torch.Generator().manual_seed(1)
    x, past, y = torch.randn(6, 12, 3, generator=g), torch.randn(6, 12, generator=g), torch.randn(6, 2, generator=g)
    mask = None
    if padded:
        mask = torch.ones(6, 12, dtype=torch.bool)
        mask[0, :5] = mask[3, :2] = False
    return x, mask, past, y


@pytest.mark.parametrize("typ", ["transformer", "patchtst"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradient_checkpointing_gives_the_loss_and_gradients_of_the_plain_step_with_dropout(typ, precision):
    """training.gradient_checkpointing recomputes each layer in backward: the dropout masks it draws there
    must be the forward's (the RNG state replayed), or the gradient is that of another network."""
    cfg, m = _model(typ, dropout=0.3)
    m.train()
    x, mask, past, y = _batch(padded=typ == "transformer")
    start = {k: v.clone() for k, v in m.state_dict().items()}
    runs = []
    for on in (False, True):
        m.load_state_dict(start)
        m.zero_grad(set_to_none=True)
        m.gradient_checkpointing = on
        torch.manual_seed(7)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = m(x, mask, past)
        loss, _ = compute_loss(cfg, out, y, 0.01)
        loss.backward()
        runs.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()},
                     {k: v.clone() for k, v in m.state_dict().items()}))
    (l0, g0, s0), (l1, g1, s1) = runs
    assert torch.equal(l0, l1)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=0, atol=0, msg=n)
    for k in s0:  # PatchTST's BatchNorm statistics move once, not once more in the recomputation
        torch.testing.assert_close(s1[k], s0[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(l0, _loss_with_seed(m, cfg, (x, mask, past, y), 8, start))  # dropout is on


def _loss_with_seed(m, cfg, batch, seed, start):
    m.load_state_dict(start)
    torch.manual_seed(seed)
    x, mask, past, y = batch
    return compute_loss(cfg, m(x, mask, past), y, 0.01)[0].detach()


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("training", [False, True])
def test_a_left_padded_window_forecasts_and_trains_as_the_unpadded_one(pooling, training):
    """data.min_history pads a short window on the left: its forecast, loss and gradient are those of the
    unpadded window, whatever the padded steps hold (NaN included) and whatever it is batched with."""
    cfg, m = _model("transformer", dropout=0.0, pooling=pooling)
    m.train(training)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(1, 7, 3, generator=g), torch.randn(1, 2, generator=g)
    padded = torch.cat([torch.full((1, 5, 3), float("nan")), x], 1)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, :5] = False
    other = torch.randn(1, 12, 3, generator=g)  # a full window in the same batch
    both, both_mask = torch.cat([padded, other]), torch.cat([mask, torch.ones(1, 12, dtype=torch.bool)])

    def run(inputs, msk, rows):
        m.zero_grad(set_to_none=True)
        with torch.enable_grad() if training else torch.no_grad():
            out = m(inputs, msk)
            out = ForecastOutput(out.prediction[rows], out.class_logits[rows], out.quantiles[rows])
            loss, _ = compute_loss(cfg, out, y, 0.01)
        if training:
            loss.backward()
        return out.prediction.detach(), loss.detach(), {n: p.grad for n, p in m.named_parameters()}

    p0, l0, g0 = run(x, None, slice(0, 1))
    for inputs, msk in ((padded, mask), (both, both_mask)):
        p1, l1, g1 = run(inputs, msk, slice(0, 1))
        assert torch.isfinite(p1).all()
        torch.testing.assert_close(p1, p0, rtol=0, atol=1e-6)
        torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-7)
        if training:
            for n in g0:
                torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_accumulated_window_batches_give_the_gradient_of_their_union(tmp_path, precision):
    """training.gradient_accumulation_steps=3 over batches of windows (some left-padded by data.min_history),
    with the buy/hold/sell and quantile heads weighted: one optimizer step's gradient and logged loss are
    those of the three micro-batches as one batch."""
    from hftraining.train.runner import build_trainer

    cfg = load_config(None, tiny(
        tmp_path / "run", "training.max_steps=1", "training.save_steps=0", "evaluation.eval_steps=0",
        "training.gradient_accumulation_steps=3", "data.batch_size=4", "data.min_history=5",
        "training.optimizer=sgd", "training.max_grad_norm=0", f"training.precision={precision}",
        "model.classification_threshold=0.005", "model.quantiles=[0.1, 0.5, 0.9]",
        "model.loss_weights={classification: 0.5, quantile: 2.0}"))
    tr = build_trainer(cfg)
    ws = tr.data.train
    padded = np.flatnonzero(ws.ends - ws.segment_first[ws.symbol_ids] < cfg.data.sequence_length - 1)
    idx = np.concatenate([padded[:6], np.random.default_rng(0).choice(len(ws), 6, replace=False)])
    start, accumulated, logged = one_step(tr, [idx[0:4], idx[4:8], idx[8:12]])

    tr.model.load_state_dict(start)
    tr.model.zero_grad(set_to_none=True)
    b = tr._batch(idx)
    assert "mask" in b  # the union holds padded windows
    union, _ = tr.forward_loss(b["x"], b.get("mask"), b["past"], b["y"], b.get("groups"))
    union.backward()
    tr.close()
    tol = {"rtol": 1e-4, "atol": 1e-6} if precision == "fp32" else {"rtol": 2e-2, "atol": 1e-3}  # bf16 matmuls
    for p, a in zip(tr.model.parameters(), accumulated):
        torch.testing.assert_close(a, p.grad, **tol)
    assert logged == pytest.approx(float(union.detach()), rel=1e-5 if precision == "fp32" else 1e-3)


def test_the_loss_under_bf16_autocast_is_computed_in_float32():
    """Under bf16 autocast the encoder's matmuls are bf16 and the heads' outputs float32 (the heads run outside
    the autocast: ForecastModel.fp32_heads); the loss and its parts are float32 and do not round
    the target: a target of 300.25 against a forecast of 300 is an error of 0.25 (bf16 would make the target
    300 and the error 0)."""
    cfg, m = _model("transformer", dropout=0.0)
    m.train()
    x, mask, past, _ = _batch()
    seen: dict[str, torch.dtype] = {}

    def note(name):
        def hook(mod, args, res):
            seen.setdefault(name, res.dtype)  # returns None: the output is left as it is
        return hook

    hooks = [mod.register_forward_hook(note(name)) for name, mod in m.named_modules()
             if isinstance(mod, (torch.nn.LayerNorm, torch.nn.Linear))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, mask, past)
    for h in hooks:
        h.remove()
    assert out.prediction.dtype == torch.float32  # the heads ran in fp32
    # the residual stream stays float32, so the layer norms normalise float32 values
    assert {n: d for n, d in seen.items() if "norm" in n} == {n: torch.float32 for n in seen if "norm" in n}
    assert seen["input_proj"] == torch.bfloat16 and seen["head.3"] == torch.float32
    y = torch.full(out.prediction.shape, 300.25)
    fixed = ForecastOutput(prediction=torch.full_like(out.prediction, 300.0), class_logits=out.class_logits,
                           quantiles=torch.full_like(out.quantiles, 300.0))
    total, parts = compute_loss(cfg, fixed, y, 1e-4)
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in parts.values())
    assert parts["mse"].item() == 0.25**2
    # pinball at levels 0.1, 0.5, 0.9 of an under-forecast of 0.25: τ × 0.25, averaged
    assert parts["quantile"].item() == pytest.approx(0.25 * (0.1 + 0.5 + 0.9) / 3, rel=1e-6)
    total, parts = compute_loss(cfg, out, y, 1e-4)
    torch.testing.assert_close(parts["mse"], ((out.prediction.float() - y) ** 2).mean())


def test_a_part_at_weight_zero_changes_no_gradient_of_the_network():
    """model.loss_weights.classification: 0 leaves the buy/hold/sell part out: the encoder's and the
    forecast head's gradients are those of the same network without that head, bit for bit, and the
    head's own gradient is 0."""
    cfg0, with_head = _model("transformer", dropout=0.0, loss_weights={"classification": 0.0})
    cfg1 = ModelConfig(hidden_size=16, num_heads=2, num_layers=2, dropout=0.0, quantiles=[0.1, 0.5, 0.9])
    without = build_model(cfg1, 3, 2, 12)
    without.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("class_head")})
    x, mask, past, y = _batch()
    grads = []
    for cfg, m in ((cfg0, with_head), (cfg1, without)):
        m.train()
        loss, parts = compute_loss(cfg, m(x, mask, past), y, 0.01)
        loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert set(grads[0]) > set(grads[1])  # the head is there, and only its part is weighted 0
    for n, g in grads[1].items():
        assert torch.equal(grads[0][n], g), n
    assert all(not grads[0][n].any() for n in grads[0] if n.startswith("class_head"))


def test_a_forecast_reads_no_row_after_its_window(tmp_path):
    """Attention over the lookback window is bidirectional by design; what keeps the target out of the inputs
    is that a window's inputs (features and past labels) are rows up to its as-of row. Every row after it
    overwritten with NaN (the target's rows among them) leaves the forecast and the loss's inputs as they
    were, bit for bit."""
    import dataclasses

    from hftraining.data.pipeline import prepare

    cfg = load_config(None, tiny(tmp_path / "run", "model.classification_threshold=0.005",
                                 "model.quantiles=[0.1, 0.5, 0.9]"))
    data = prepare(cfg.data)
    ws = data.train
    model = build_model(cfg.model, ws.features.shape[1], cfg.data.prediction_horizon, cfg.data.sequence_length)
    model.eval()
    for i in (0, len(ws) // 2, len(ws) - 1):
        end = int(ws.ends[i])
        features, returns = np.array(ws.features), np.array(ws.returns)
        features[end + 1:] = np.nan
        returns[end + 1:] = np.nan
        cut = dataclasses.replace(ws, features=features, returns=returns,
                                  labels=None if ws.labels is None else np.where(np.arange(len(ws.labels)) > end,
                                                                                 np.nan, ws.labels))
        a, b = ws.batch(np.array([i])), cut.batch(np.array([i]))
        assert torch.isnan(b["y"]).all() and torch.isfinite(a["y"]).all()  # the target is after the window
        for k in ("x", "past"):
            assert torch.equal(a[k], b[k]), k
        with torch.no_grad():
            fa, fb = model(a["x"], a.get("mask"), a["past"]), model(b["x"], b.get("mask"), b["past"])
        for k in ("prediction", "class_logits", "quantiles"):
            assert torch.equal(getattr(fa, k), getattr(fb, k)), k
