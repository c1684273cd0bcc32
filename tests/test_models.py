"""Every registered model: shapes, learning, persistence; the transformer's masks, heads and
gradient checkpointing; the baselines' forecasts; the production model's size."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.data.windows import WindowSet
from hftraining.models import MODELS, ForecastModel, build_model, compute_loss, model_names

B, L, F, H = 8, 24, 3, 4
QUANTILES = [0.9, 0.1, 0.5]  # deliberately unsorted: outputs must follow this order


def small_cfg(name: str, **kw) -> ModelConfig:
    """A model small enough for 2 CPU cores; even head count so eval may take the fused fast path."""
    base = dict(
        type=name, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=64, dropout=0.0,
        patch_len=8, patch_stride=4, moving_avg=5, season_length=5,
    )
    base.update(kw)
    return ModelConfig(**base)


def heads_cfg(name: str, **kw) -> ModelConfig:
    return small_cfg(name, classification_threshold=0.01, quantiles=QUANTILES, **kw)


def batch(seed: int = 0, b: int = B, length: int = L):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, F, generator=g)  # (B, L, F)
    past = torch.randn(b, length, generator=g)  # (B, L)
    return x, past


ALL = MODELS.names()
TRAINABLE = [n for n in ALL if MODELS.get(n).needs_training]
BASELINES = [n for n in ALL if not MODELS.get(n).needs_training and not MODELS.get(n).fits_on_data]


def built(cfg: ModelConfig) -> ForecastModel:
    """``build_model`` in eval mode; a model fitted in closed form (ridge, lightgbm) is fitted first,
    on random windows, so that it can forecast."""
    model = build_model(cfg, F, H, L)
    if model.fits_on_data:
        g = np.random.default_rng(0)
        n = 400
        rows = g.normal(size=(n, F)).astype(np.float32)
        ret = g.normal(size=n).astype(np.float32)
        ws = WindowSet(features=rows, returns=ret, ends=np.arange(L - 1, n - H), symbol_ids=np.zeros(n - H - L + 1, np.int32),
                       segment_first=np.zeros(1, np.int64), row_times=np.arange(n, dtype=np.int64),
                       row_close=np.ones(n), symbols=["S"], seq_len=L, horizon=H)
        model.fit_windows(ws.subset(slice(0, 250)), ws.subset(slice(250, None)))
    return model.eval()


def test_registry_has_the_models_and_descriptions():
    names = model_names()
    assert {"transformer", "zero", "repeat", "drift", "seasonal_naive"} <= set(names)
    assert set(names) == set(ALL)
    for name, desc in names.items():
        assert desc and "\n" not in desc, name
    assert set(BASELINES) >= {"zero", "repeat", "drift", "seasonal_naive"}
    for n in ("zero", "repeat", "drift", "seasonal_naive"):
        assert build_model(small_cfg(n), F, H, L).num_parameters() == 0


def test_unknown_model_type_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.type"):
        build_model(small_cfg("nope"), F, H, L)


@pytest.mark.parametrize("name", ALL)
def test_shapes(name):
    model = built(small_cfg(name))
    x, past = batch()
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:2, :5] = False  # two left-padded windows
    for m in (None, mask):
        out = model(x, m, past)
        assert out.prediction.shape == (B, H)
        assert torch.isfinite(out.prediction).all()


def test_transformer_head_shapes_and_ordered_quantiles():
    model = build_model(heads_cfg("transformer"), F, H, L).eval()
    out = model(*batch()[:1])
    assert out.class_logits.shape == (B, H, 3)
    assert out.quantiles.shape == (B, H, len(QUANTILES))
    q90, q10, q50 = out.quantiles.unbind(-1)  # in the configured order 0.9, 0.1, 0.5
    assert (q10 <= q50).all() and (q50 <= q90).all()
    # without the options the heads do not exist at all
    plain = build_model(small_cfg("transformer"), F, H, L)
    o = plain(batch()[0])
    assert o.class_logits is None and o.quantiles is None
    assert plain.num_parameters() < model.num_parameters()


def sine_task(n: int = 64, seed: int = 0):
    """Noisy sines of random phase and period: the next H values follow from the window."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L + H, dtype=torch.float32)  # (L+H,)
    phase = torch.rand(n, 1, generator=g) * 6.28
    period = 6 + 6 * torch.rand(n, 1, generator=g)
    series = torch.sin(6.28 * t / period + phase)  # (n, L+H)
    past, target = series[:, :L], series[:, L:]  # (n, L), (n, H)
    x = torch.stack([past, torch.randn(n, L, generator=g), torch.cos(6.28 * t[:L] / period + phase)], -1)  # (n, L, F)
    return x, past, target


@pytest.mark.parametrize("name", TRAINABLE)
def test_loss_goes_down(name):
    torch.manual_seed(0)
    cfg = heads_cfg(name) if name == "transformer" else small_cfg(name)
    model = build_model(cfg, F, H, L).train()
    x, past, target = sine_task()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        total, parts = compute_loss(cfg, model(x, None, past), target, 0.01)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in parts.items()})
    first = history[0]
    last = history[-1]
    for k in first:  # every head learns, not just the total
        assert last[k] < 0.7 * first[k], (name, k, first[k], last[k])
    assert last["mse"] < 0.5 * first["mse"], (name, first["mse"], last["mse"])


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name, tmp_path, monkeypatch):
    cfg = heads_cfg(name) if name == "transformer" else small_cfg(name)
    model = built(cfg)
    x, past = batch(3)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :7] = False
    before = model(x, mask, past)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}

    # loading must never unpickle: make every unpickling entry point fail loudly
    def refuse(*a, **k):
        raise AssertionError("from_pretrained unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    class Refused:  # a class, not a function: a module first imported while loading may subclass it
        def __init__(self, *a, **k):
            refuse()

    monkeypatch.setattr(pickle, "Unpickler", Refused)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = ForecastModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    after = loaded(x, mask, past)
    for field in dataclasses.fields(before):
        a, b = getattr(before, field.name), getattr(after, field.name)
        assert (a is None) == (b is None), field.name
        if a is not None:
            assert torch.equal(a, b), field.name


def test_save_load_restores_trained_weights(tmp_path):
    """A round trip must carry the weights, not just rebuild the same seeded init."""
    cfg = small_cfg("transformer")
    model = build_model(cfg, F, H, L)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.save_pretrained(tmp_path)
    torch.manual_seed(123)
    loaded = ForecastModel.from_pretrained(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------ attention masks


def padded_pair(short: int, seed: int = 5):
    """The same windows twice: unpadded (B, short, ·), and left-padded to L with garbage (NaN, ±1e6)."""
    g = torch.Generator().manual_seed(seed)
    x_short = torch.randn(B, short, F, generator=g)  # (B, S, F)
    past_short = torch.randn(B, short, generator=g)  # (B, S)
    pad = L - short
    junk = torch.randn(B, pad, F, generator=g) * 1e6
    junk[0, 0, 0] = float("nan")
    x_pad = torch.cat([junk, x_short], 1)  # (B, L, F)
    past_pad = torch.cat([torch.full((B, pad), float("nan")), past_short], 1)  # (B, L)
    mask = torch.cat([torch.zeros(B, pad, dtype=torch.bool), torch.ones(B, short, dtype=torch.bool)], 1)
    return (x_short, None, past_short), (x_pad, mask, past_pad)


def assert_same_outputs(a, b, atol=1e-5):
    for field in dataclasses.fields(a):
        u, v = getattr(a, field.name), getattr(b, field.name)
        assert (u is None) == (v is None)
        if u is not None:
            assert torch.isfinite(v).all(), field.name
            torch.testing.assert_close(u, v, atol=atol, rtol=1e-5, msg=field.name)


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad-fastpath", "grad-slowpath"])
def test_padded_window_equals_unpadded(pooling, grad, monkeypatch):
    torch.manual_seed(0)
    model = build_model(heads_cfg("transformer", pooling=pooling), F, H, L).eval()
    unpadded, padded = padded_pair(short=9)
    # count calls of PyTorch's fused encoder-layer kernel: eval without grad must really take it
    # (that is the path whose mask handling differs), with grad it must not
    calls = []
    fused = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a, **k: calls.append(1) or fused(*a, **k))
    with torch.set_grad_enabled(grad):
        a = model(*unpadded)
        b = model(*padded)
    assert (len(calls) > 0) == (not grad)
    assert_same_outputs(a, b)
    # and the mask matters: the same padded window read as if all steps were real differs
    x_pad, _, past_pad = padded
    x_clean = torch.nan_to_num(x_pad)
    with torch.no_grad():
        unmasked = model(x_clean, None, past_pad).prediction
    assert not torch.allclose(unmasked, a.prediction, atol=1e-3)


@pytest.mark.parametrize("padded", [False, True])
def test_cpu_training_layer_equals_torch_layer(padded):
    # EncoderLayer's own CPU training forward against nn.TransformerEncoderLayer's, dropout off:
    # the same outputs and the same gradients, with and without key padding
    from hftraining.models.transformer import EncoderLayer

    torch.manual_seed(0)
    layer = EncoderLayer(32, 4, 64, 0.0, activation="gelu", batch_first=True, norm_first=True).train()
    x = torch.randn(5, 11, 32)
    pad = torch.zeros(5, 11, dtype=torch.bool)
    if padded:
        pad[:2, :4] = True
    pad = pad if padded else None

    def run(forward):
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = forward(xi)
        (out * torch.linspace(-1, 1, 32)).sum().backward()
        return out.detach(), xi.grad, {k: q.grad.clone() for k, q in layer.named_parameters()}

    ours = run(lambda xi: layer(xi, src_key_padding_mask=pad))
    torch_ = run(lambda xi: torch.nn.TransformerEncoderLayer.forward(layer, xi, src_key_padding_mask=pad))
    torch.testing.assert_close(ours[0], torch_[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1], torch_[1], atol=1e-5, rtol=1e-5)
    for k in ours[2]:
        torch.testing.assert_close(ours[2][k], torch_[2][k], atol=1e-5, rtol=1e-4, msg=k)


def test_cpu_training_layer_drops_attention_weights():
    # with dropout on, two forwards differ and the attention dropout is ours (no bernoulli_ call)
    from hftraining.models.transformer import EncoderLayer

    layer = EncoderLayer(16, 2, 32, 0.3, activation="gelu", batch_first=True, norm_first=True).train()
    x = torch.randn(4, 7, 16)
    with torch.profiler.profile() as prof:
        a, b = layer(x), layer(x)
    assert not torch.allclose(a, b)
    names = {e.key for e in prof.key_averages()}
    assert "aten::bernoulli_" not in names and "aten::random_" in names


@pytest.mark.parametrize("name", ["repeat", "drift", "seasonal_naive", "zero"])
@pytest.mark.parametrize("short", [3, 9])  # shorter and longer than a season of 5
def test_baseline_padded_window_equals_unpadded(name, short):
    model = build_model(small_cfg(name), F, H, L)
    unpadded, padded = padded_pair(short=short)
    assert_same_outputs(model(*unpadded), model(*padded), atol=0)


@pytest.mark.parametrize("name", ALL)
def test_padded_steps_never_reach_a_forecast(name):
    # every model: a left-padded window with garbage (NaN, ±1e6) in its padded steps forecasts
    # exactly what it forecasts with zeros there (PatchTST and DLinear multiplied by the mask,
    # and NaN * 0 made their forecasts NaN)
    torch.manual_seed(0)
    model = built(heads_cfg(name) if name == "transformer" else small_cfg(name))
    _, (x, mask, past) = padded_pair(short=9)
    clean = (x.masked_fill(~mask.unsqueeze(-1), 0.0), mask, past.masked_fill(~mask, 0.0))
    with torch.no_grad():
        assert_same_outputs(model(x, mask, past), model(*clean), atol=0)


# ------------------------------------------------------------------ gradient checkpointing

CKPT = [n for n in ALL if MODELS.get(n).supports_gradient_checkpointing]


@pytest.mark.parametrize("name", CKPT)
def test_checkpointing_gives_equal_gradients(name):
    # dropout on: the recomputation must replay the same dropout masks (preserved RNG state)
    cfg = heads_cfg(name, dropout=0.1, num_layers=3) if name == "transformer" else small_cfg(name, dropout=0.1, num_layers=3)
    torch.manual_seed(0)
    model = build_model(cfg, F, H, L).train()
    x, past, target = sine_task(n=B)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:3, :6] = False

    def grads(enabled: bool):
        model.set_gradient_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        layer_calls = []
        # a pre-hook: non-reentrant recomputation stops as soon as it has what backward needs,
        # so a layer's (post-)forward hook does not fire again, its pre-hook does
        hooks = [m.register_forward_pre_hook(lambda *a: layer_calls.append(1)) for m in layers_of(model)]
        torch.manual_seed(1)
        total, _ = compute_loss(cfg, model(x, mask if name == "transformer" else None, past), target, 0.01)
        total.backward()
        for h in hooks:
            h.remove()
        return {k: p.grad.clone() for k, p in model.named_parameters()}, len(layer_calls), total.item()

    g_off, calls_off, loss_off = grads(False)
    g_on, calls_on, loss_on = grads(True)
    assert loss_on == loss_off
    # checkpointing is real: each layer ran again in backward
    n_layers = len(layers_of(model))
    assert n_layers > 0 and calls_off == n_layers and calls_on == 2 * n_layers
    assert g_off.keys() == g_on.keys()
    for k in g_off:
        torch.testing.assert_close(g_on[k], g_off[k], atol=1e-6, rtol=1e-5, msg=k)
    assert any(g.abs().sum() > 0 for g in g_off.values())


def layers_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The checkpointed blocks: members of every ``layers`` ModuleList in the model, at any depth
    (the transformer holds it directly, PatchTST in its encoder)."""
    return [
        layer for name, m in model.named_modules()
        if name.split(".")[-1] == "layers" and isinstance(m, torch.nn.ModuleList) for layer in m
    ]


def test_checkpointing_refused_where_unsupported():
    with pytest.raises(ConfigError, match=r"training\.gradient_checkpointing"):
        build_model(small_cfg("drift"), F, H, L).set_gradient_checkpointing(True)


# ------------------------------------------------------------------ baselines


def test_baseline_forecasts():
    past = torch.arange(1.0, 13.0).expand(2, 12).clone()  # (2, 12): 1, 2, ..., 12
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :8] = False  # second window: only 9..12 are real
    x = torch.zeros(2, 12, F)
    run = lambda n, **kw: build_model(small_cfg(n, **kw), F, 7, 12)(x, mask, past).prediction  # noqa: E731
    assert torch.equal(run("zero"), torch.zeros(2, 7))
    assert torch.equal(run("repeat"), torch.full((2, 7), 12.0))
    assert torch.allclose(run("drift"), torch.tensor([[6.5] * 7, [10.5] * 7]))
    # season 5, last step 12: steps 1..5 copy 8..12, steps 6, 7 copy 8, 9 again; the second window
    # has no real step 8 (padding), so that step's forecast is a zero return
    assert torch.equal(run("seasonal_naive", season_length=5)[0], torch.tensor([8.0, 9, 10, 11, 12, 8, 9]))
    assert torch.equal(run("seasonal_naive", season_length=5)[1], torch.tensor([0.0, 9, 10, 11, 12, 0, 9]))
    assert torch.equal(run("seasonal_naive", season_length=1)[0], torch.full((7,), 12.0))
    for n in ("zero", "repeat", "drift", "seasonal_naive"):
        assert MODELS.get(n).needs_training is False


def test_baseline_errors():
    with pytest.raises(ConfigError, match=r"model\.season_length"):
        build_model(small_cfg("seasonal_naive", season_length=30), F, H, L)
    with pytest.raises(ValueError, match="past"):
        build_model(small_cfg("repeat"), F, H, L)(batch()[0])


# ------------------------------------------------------------------ production size


def test_production_model_has_the_25_489_925_parameters_the_readme_states():
    """README: configs/production.json is "a transformer with 8 layers, 16 heads, hidden 512,
    feed-forward 2048 — 25,489,925 parameters with the 8 default feature columns"."""
    from pathlib import Path

    from hftraining.core.config import load_config
    from hftraining.data.features import feature_columns

    prod = load_config(Path(__file__).resolve().parents[1] / "configs" / "production.json")
    cfg = ModelConfig()  # the production defaults: hidden 512, 16 heads, 8 layers
    assert cfg.type == "transformer" and prod.model == cfg
    assert len(feature_columns(prod.data.features)) == 8  # the default features' columns
    assert (prod.data.prediction_horizon, prod.data.sequence_length) == (5, 60)
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_model(cfg, n_features=8, horizon=5, seq_len=60)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) == 25_489_925
