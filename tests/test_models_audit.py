"""The neural forecasters' forward passes as users rely on them: padded steps reach no forecast and
no gradient in training either, a window's forecast does not depend on the other windows of its
batch, gradient checkpointing changes nothing with padded windows under bf16, eval mode has no
dropout, bf16 autocast keeps statistics and the residual stream in float32, and PatchTST's patches,
RevIN and DLinear's decomposition compute what the papers' reference code computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.models import build_model, compute_loss
from hftraining.models.dlinear import decompose
from hftraining.models.patchtst import RevIN, _BatchNorm
from hftraining.models.predict import autocast_context

B, L, F, H = 6, 24, 3, 4
NEURAL = ["transformer", "patchtst", "dlinear"]
WITH_DROPOUT = ["transformer", "patchtst"]  # DLinear has no dropout


def cfg_of(name: str, **kw) -> ModelConfig:
    base = dict(type=name, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=64, dropout=0.1,
                patch_len=8, patch_stride=4, moving_avg=5)
    if name == "transformer":
        base.update(classification_threshold=0.01, quantiles=[0.9, 0.1, 0.5])
    base.update(kw)
    return ModelConfig(**base)


def padded_batch(seed: int = 0):
    """(x, mask, past, y): windows 0, 2 and 5 left-padded by 15, 3 and 20 steps, zeros there."""
    g = torch.Generator().manual_seed(seed)
    x, past, y = torch.randn(B, L, F, generator=g), torch.randn(B, L, generator=g), torch.randn(B, H, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :15], mask[2, :3], mask[5, :20] = False, False, False
    return x.masked_fill(~mask[..., None], 0.0), mask, past.masked_fill(~mask, 0.0), y


def outputs(out) -> list[torch.Tensor]:
    return [t for t in (out.prediction, out.class_logits, out.quantiles) if t is not None]


def trained_a_little(name: str, **kw) -> nn.Module:
    """A model whose BatchNorm running statistics (PatchTST) have left their initial values."""
    torch.manual_seed(0)
    model = build_model(cfg_of(name, **kw), F, H, L).train()
    x, mask, past, _ = padded_batch(1)
    with torch.no_grad():
        for _ in range(3):
            model(x, mask, past)
    return model


@pytest.mark.parametrize("name", NEURAL)
def test_padded_steps_reach_no_training_forecast_and_no_gradient(name):
    # training mode, dropout on: garbage in the padded steps changes neither the forecast, nor
    # any parameter's gradient, and the inputs there get no gradient
    model = build_model(cfg_of(name), F, H, L).train()
    x, mask, past, y = padded_batch()
    junk_x = x.clone()
    junk_x[~mask] = 1e4 * torch.randn(int((~mask).sum()), F)
    junk_past = past.masked_fill(~mask, -3e3)
    runs = []
    for xi, pi in ((x, past), (junk_x, junk_past)):
        model.zero_grad(set_to_none=True)
        xi = xi.clone().requires_grad_(True)
        torch.manual_seed(7)  # the same dropout masks in both runs
        out = model(xi, mask, pi)
        loss, _ = compute_loss(model.cfg, out, y, 0.01)
        loss.backward()
        runs.append((outputs(out), {k: p.grad.clone() for k, p in model.named_parameters()}, xi.grad))
    (out_a, grads_a, xg_a), (out_b, grads_b, xg_b) = runs
    for a, b in zip(out_a, out_b):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=0, atol=0, msg=k)
    assert xg_b[~mask].abs().max() == 0 and xg_b[mask].abs().max() > 0


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_forecast_of_a_window_does_not_depend_on_its_batch(name, grad):
    # eval mode (PatchTST's BatchNorm on its running statistics): a window forecast alone, in a
    # batch of padded and unpadded windows, or in another order, is the same forecast
    model = trained_a_little(name).eval()
    x, mask, past, _ = padded_batch()
    perm = torch.tensor([3, 5, 0, 4, 1, 2])
    with torch.set_grad_enabled(grad):
        batched = outputs(model(x, mask, past))
        alone = [outputs(model(x[i : i + 1], mask[i : i + 1], past[i : i + 1])) for i in range(B)]
        permuted = outputs(model(x[perm], mask[perm], past[perm]))
    for k, full in enumerate(batched):
        torch.testing.assert_close(torch.cat([a[k] for a in alone]), full, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(permuted[k], full[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_checkpointing_with_padded_windows_under_bf16_changes_no_gradient(name):
    cfg = cfg_of(name, num_layers=3)
    torch.manual_seed(0)
    ref = build_model(cfg, F, H, L)
    ckpt = copy.deepcopy(ref)
    ckpt.set_gradient_checkpointing(True)
    x, mask, past, y = padded_batch()
    runs = []
    for model in (ref, ckpt):
        model.train()
        torch.manual_seed(3)
        with autocast_context("cpu", "bf16"):
            out = model(x, mask, past)
        loss, _ = compute_loss(cfg, out, y, 0.01)
        loss.backward()
        runs.append((loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        torch.testing.assert_close(runs[1][1][k], runs[0][1][k], rtol=1e-5, atol=1e-6, msg=k)
    for (k, a), (_, b) in zip(ref.named_buffers(), ckpt.named_buffers()):  # BatchNorm updated once
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_eval_mode_has_no_dropout(name):
    # the same weights with dropout 0.5 and 0: equal eval forecasts, different training ones
    x, mask, past, _ = padded_batch()
    models = []
    for p in (0.5, 0.0):
        torch.manual_seed(0)
        models.append(build_model(cfg_of(name, dropout=p), F, H, L))
    noisy, clean = models
    clean.load_state_dict(noisy.state_dict())
    with torch.no_grad():
        noisy.eval(), clean.eval()
        first = noisy(x, mask, past).prediction
        torch.testing.assert_close(noisy(x, mask, past).prediction, first, rtol=0, atol=0)
        torch.testing.assert_close(clean(x, mask, past).prediction, first, rtol=0, atol=0)
        noisy.train(), clean.train()  # (after: a training forward moves BatchNorm's running statistics)
        assert not torch.allclose(noisy(x, mask, past).prediction, clean(x, mask, past).prediction)


@pytest.mark.parametrize("name", NEURAL)
def test_bf16_autocast_keeps_statistics_and_residual_stream_in_float32(name):
    model = trained_a_little(name).eval()
    x, mask, past, _ = padded_batch()
    seen: dict[str, set] = {"norm input": set(), "layer output": set()}
    hooks = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.LayerNorm, _BatchNorm)):
            hooks.append(mod.register_forward_hook(lambda m, a, o: seen["norm input"].add(a[0].dtype)))
        if mod_name.split(".")[-2:-1] == ["layers"]:  # a transformer or PatchTST encoder layer
            hooks.append(mod.register_forward_hook(lambda m, a, o: seen["layer output"].add(o.dtype)))
    with torch.no_grad():
        ref = model(x, mask, past).prediction
        with autocast_context("cpu", "bf16"):
            low = model(x, mask, past).prediction
            if name == "patchtst":
                _, loc, scale = model.revin.normalize(torch.cat([x, past[..., None]], -1), mask)
                assert loc.dtype == scale.dtype == torch.float32
    for h in hooks:
        h.remove()
    for what, dtypes in seen.items():
        assert dtypes <= {torch.float32}, (what, dtypes)
    assert low.float().sub(ref).abs().max() <= 0.03 * ref.abs().max()


def test_patchtst_patches_and_revin_match_the_reference_code():
    # PatchTST_backbone (yuqinie98/PatchTST): ReplicationPad1d((0, stride)) then unfold; RevIN with
    # the biased variance inside the square root and the affine map undone with weight + eps²
    for seq_len, p, s in [(24, 8, 4), (336, 16, 8), (37, 5, 3)]:
        enc = build_model(cfg_of("patchtst", patch_len=p, patch_stride=s), F, H, seq_len).encoder
        z = torch.randn(5, seq_len)
        ref = nn.ReplicationPad1d((0, s))(z[:, None])[:, 0].unfold(-1, p, s)
        torch.testing.assert_close(enc.patchify(z), ref, rtol=0, atol=0)
        assert ref.shape[1] == enc.n_patches == int((seq_len - p) / s + 1) + 1
    x = torch.randn(4, 30, 3) * 3 + 1
    rev = RevIN(3, affine=True)
    with torch.no_grad():
        rev.weight.uniform_(0.5, 2.0)
        rev.bias.normal_()
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + rev.eps)
    z, loc, scale = rev.normalize(x)
    torch.testing.assert_close(z, (x - mean) / std * rev.weight + rev.bias)
    y = torch.randn(4, 7, 3)
    torch.testing.assert_close(rev.denormalize(y, loc, scale), (y - rev.bias) / (rev.weight + rev.eps**2) * std + mean)


def test_dlinear_decomposition_matches_the_reference_moving_average():
    # series_decomp of the DLinear paper's code (cure-lab/LTSF-Linear), at the default kernel
    k = ModelConfig().moving_avg
    x = torch.randn(3, 96, 5).cumsum(1)  # (B, L, C) random walks

    front = x[:, :1, :].repeat(1, (k - 1) // 2, 1)
    end = x[:, -1:, :].repeat(1, (k - 1) // 2, 1)
    trend = nn.AvgPool1d(k, stride=1, padding=0)(torch.cat([front, x, end], 1).permute(0, 2, 1)).permute(0, 2, 1)
    seasonal, ours = decompose(x.transpose(1, 2), k)
    torch.testing.assert_close(ours.transpose(1, 2), trend)
    torch.testing.assert_close(seasonal.transpose(1, 2), x - trend)


def test_patchtst_forecaster_encodes_each_channel_independently():
    # changing one feature channel changes that channel's patch representations only
    model = trained_a_little("patchtst").eval()
    x, mask, past, _ = padded_batch()
    encoded = []
    hook = model.encoder.register_forward_hook(lambda m, a, o: encoded.append(o.view(B, F + 1, *o.shape[1:])))
    x2 = x.clone()
    x2[..., 1] = torch.randn(B, L).masked_fill(~mask, 0.0) * 5
    with torch.no_grad():
        model(x, mask, past), model(x2, mask, past)
    hook.remove()
    a, b = encoded
    changed = (a - b).flatten(2).abs().amax(dim=(0, 2))  # per channel
    assert changed[1] > 0
    assert changed[[0, 2, 3]].max() == 0
