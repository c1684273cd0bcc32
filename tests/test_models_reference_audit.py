"""The neural models against their papers' reference code, and the invariances users rely on that
other model tests leave out.

- PatchTST's and DLinear's long-horizon models compute what the forward of ``PatchTST_backbone``
  (``yuqinie98/PatchTST``) and of ``models/DLinear.py`` (``cure-lab/LTSF-Linear``) compute, each
  written out below from that source and run on our weights; the departures the PatchTST module
  docstring lists (no residual attention, one attention-output dropout) are the only ones.
- Gradient checkpointing with dropout on leaves torch's global RNG where training without it
  leaves it, so the batches and masks of the following steps are the same.
- The pinball loss's gradient: τ per unit under the forecast quantile, 1 − τ over it, averaged over
  windows, steps and levels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.models import build_model, compute_loss
from hftraining.models.dlinear import DLinearMultivariate
from hftraining.models.losses import pinball_loss
from hftraining.models.patchtst import PatchTSTMultivariate


def reference_patchtst(model: PatchTSTMultivariate, x: torch.Tensor) -> torch.Tensor:
    """(B, L, C) → (B, H, C): ``PatchTST_backbone.forward`` in eval mode (``res_attention=False``,
    dropout off), step by step as in the reference source, on the weights of ``model``."""
    enc, rev = model.encoder, model.revin
    b, _, c = x.shape
    # RevIN._get_statistics / _normalize
    loc = x[:, -1:, :] if rev.subtract_last else x.mean(1, keepdim=True)
    std = torch.sqrt(torch.var(x, dim=1, keepdim=True, unbiased=False) + rev.eps)
    z = (x - loc) / std
    if rev.affine:
        z = z * rev.weight + rev.bias
    # padding_patch == 'end': ReplicationPad1d((0, stride)), then unfold
    z = nn.ReplicationPad1d((0, enc.stride))(z.permute(0, 2, 1))
    z = z.unfold(dimension=-1, size=enc.patch_len, step=enc.stride)  # (b, c, P, patch_len)
    # TSTiEncoder: W_P, channels into the batch, + W_pos
    u = enc.proj(z).reshape(b * c, z.shape[2], -1) + enc.positions  # (b·c, P, d)
    for layer in enc.layers:  # TSTEncoderLayer, post-norm, BatchNorm on running statistics
        n, t, d = u.shape
        h, dk = layer.n_heads, d // layer.n_heads
        (wq, wk, wv), (bq, bk, bv) = layer.qkv.weight.chunk(3), layer.qkv.bias.chunk(3)
        q = F.linear(u, wq, bq).view(n, t, h, dk).transpose(1, 2)  # W_Q
        k = F.linear(u, wk, bk).view(n, t, h, dk).permute(0, 2, 3, 1)  # W_K, transposed
        v = F.linear(u, wv, bv).view(n, t, h, dk).transpose(1, 2)  # W_V
        weights = F.softmax(torch.matmul(q, k) * dk**-0.5, dim=-1)  # _ScaledDotProductAttention
        u = u + layer.out(torch.matmul(weights, v).transpose(1, 2).reshape(n, t, d))  # to_out
        for bn, sub in ((layer.norm_attn, None), (layer.norm_ff, layer.ff)):
            if sub is not None:
                u = u + sub(u)
            u = F.batch_norm(u.transpose(1, 2), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                             False, 0.0, bn.eps).transpose(1, 2)
    # Flatten_Head (individual=False): flatten (d_model, patch_num), d_model-major; our head
    # flattens (patch_num, d_model): the same linear map with its inputs permuted
    P, d = u.shape[1:]
    flat = u.reshape(b, c, P, d).permute(0, 1, 3, 2).flatten(start_dim=-2)  # (b, c, d·P)
    w = model.head.weight.view(-1, P, d).permute(0, 2, 1).reshape(model.head.weight.shape[0], -1)
    y = F.linear(flat, w, model.head.bias).permute(0, 2, 1)  # (b, H, c)
    # RevIN._denormalize
    if rev.affine:
        y = (y - rev.bias) / (rev.weight + rev.eps * rev.eps)
    return y * std + loc


@pytest.mark.parametrize("kwargs", [{}, {"subtract_last": True, "revin_affine": True}], ids=["ett-scripts", "last-affine"])
def test_patchtst_multivariate_computes_the_reference_backbone(kwargs):
    # the ETT scripts' shape (3 layers, 4 heads, d_model 16) at a small window; L - patch_len not a
    # multiple of the stride, so the end padding decides the last patch
    cfg = ModelConfig(type="patchtst", hidden_size=16, num_heads=4, num_layers=3, intermediate_size=32,
                      dropout=0.3, patch_len=8, patch_stride=4)
    torch.manual_seed(0)
    model = PatchTSTMultivariate(cfg, 5, 7, 38, **kwargs)
    with torch.no_grad():
        for _ in range(3):  # BatchNorm's running statistics away from (0, 1)
            model(torch.randn(8, 38, 5).cumsum(1))
        if model.revin.affine:
            model.revin.weight.uniform_(0.5, 2.0)
            model.revin.bias.normal_()
        model.eval()
        x = torch.randn(4, 38, 5).cumsum(1) * 2 + 3  # levels and scales far from 0 and 1
        ours = model(x)
        torch.testing.assert_close(ours, reference_patchtst(model, x), rtol=1e-5, atol=1e-4)
        # the forecast is not just the RevIN level: the encoder and head move it
        assert (ours - x.mean(1, keepdim=True)).abs().max() > 0.1


def reference_dlinear(model: DLinearMultivariate, x: torch.Tensor, kernel: int) -> torch.Tensor:
    """(B, L, C) → (B, H, C): ``DLinear.Model.forward`` (``individual=False``) on the weights of ``model``."""
    front = x[:, 0:1, :].repeat(1, (kernel - 1) // 2, 1)
    end = x[:, -1:, :].repeat(1, (kernel - 1) // 2, 1)
    trend = nn.AvgPool1d(kernel_size=kernel, stride=1, padding=0)(torch.cat([front, x, end], dim=1).permute(0, 2, 1))
    seasonal = x.permute(0, 2, 1) - trend
    return (model.seasonal(seasonal) + model.trend(trend)).permute(0, 2, 1)


def test_dlinear_multivariate_computes_the_reference_model():
    # the paper's kernel 25 at the ETT look-back 336, weights moved off their 1/L start
    cfg = ModelConfig(type="dlinear")
    torch.manual_seed(0)
    model = DLinearMultivariate(cfg, 7, 96, 336)
    with torch.no_grad():
        for lin in (model.seasonal, model.trend):
            lin.weight.normal_(0, 0.05)
        x = torch.randn(4, 336, 7).cumsum(1)
        torch.testing.assert_close(model(x), reference_dlinear(model, x, cfg.moving_avg), rtol=1e-5, atol=1e-5)
        # subtract_last is NLinear's wrapper around the same model
        last = x[:, -1:, :]
        nl = DLinearMultivariate(cfg, 7, 96, 336, subtract_last=True)
        nl.load_state_dict(model.state_dict())
        torch.testing.assert_close(nl(x), reference_dlinear(model, x - last, cfg.moving_avg) + last, rtol=1e-5, atol=1e-5)


def test_even_moving_average_keeps_the_length_and_is_the_window_mean_of_its_steps():
    # kernel 4: the trend at t averages t-1 … t+2 (edges repeated); the reference's padding
    # would return L - 1 steps
    from hftraining.models.dlinear import decompose

    x = torch.randn(2, 3, 11).cumsum(-1)
    seasonal, trend = decompose(x, 4)
    padded = torch.cat([x[..., :1], x, x[..., -1:], x[..., -1:]], dim=-1)
    expected = torch.stack([padded[..., t : t + 4].mean(-1) for t in range(11)], dim=-1)
    torch.testing.assert_close(trend, expected)
    torch.testing.assert_close(seasonal + trend, x)


@pytest.mark.parametrize("name", ["transformer", "patchtst"])
def test_checkpointing_leaves_the_rng_where_training_without_it_does(name):
    # dropout on: recomputation replays the masks on a forked RNG, so a run with checkpointing
    # draws the same later batches and masks as the same run without
    cfg = ModelConfig(type=name, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=64, dropout=0.2,
                      patch_len=8, patch_stride=4)
    torch.manual_seed(0)
    model = build_model(cfg, 3, 4, 24).train()
    x, past, y = torch.randn(6, 24, 3), torch.randn(6, 24), torch.randn(6, 4)
    runs = []
    for enabled in (False, True):
        model.set_gradient_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        loss, _ = compute_loss(cfg, model(x, None, past), y, 0.01)
        loss.backward()
        runs.append((loss.item(), torch.get_rng_state(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (loss_a, rng_a, grads_a), (loss_b, rng_b, grads_b) = runs
    assert loss_a == loss_b
    assert torch.equal(rng_a, rng_b)
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_pinball_gradient_is_tau_below_and_one_minus_tau_above_averaged_over_every_term():
    levels = [0.1, 0.5, 0.9]
    B, H = 4, 2
    target = torch.zeros(B, H)
    q = torch.empty(B, H, 3)
    q[:2], q[2:] = -1.0, 1.0  # windows 0-1 under-forecast y, 2-3 over-forecast it
    q.requires_grad_(True)
    pinball_loss(q, target, levels).backward()
    n = B * H * len(levels)
    tau = torch.tensor(levels)
    torch.testing.assert_close(q.grad[:2], (-tau / n).expand(2, H, 3))  # raising q lowers the loss
    torch.testing.assert_close(q.grad[2:], ((1 - tau) / n).expand(2, H, 3))
