"""PatchTST in training mode against the reference code's forward (``yuqinie98/PatchTST``,
``PatchTST_backbone`` with ``res_attention=False``), written out on our weights: BatchNorm on the
batch's statistics, the running statistics it leaves, and every parameter's gradient.

RevIN's statistics are detached in the reference and not here; the inputs never require a gradient,
so the gradients must agree (the PatchTST module docstring says so).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hftraining.core.config import ModelConfig
from hftraining.models.patchtst import PatchTSTMultivariate


def reference_train_forward(model: PatchTSTMultivariate, x: torch.Tensor, bn_stats: dict) -> torch.Tensor:
    """(B, L, C) → (B, H, C): ``PatchTST_backbone.forward`` in training mode with dropout 0 on the
    weights of ``model``; ``bn_stats`` maps each BatchNorm to the (running_mean, running_var) copies
    this forward updates, as ``nn.BatchNorm1d`` does."""
    enc, rev = model.encoder, model.revin
    b, _, c = x.shape
    # RevIN._get_statistics (detached) / _normalize
    loc = (x[:, -1:, :] if rev.subtract_last else x.mean(1, keepdim=True)).detach()
    std = torch.sqrt(torch.var(x, dim=1, keepdim=True, unbiased=False) + rev.eps).detach()
    z = (x - loc) / std
    if rev.affine:
        z = z * rev.weight + rev.bias
    z = nn.ReplicationPad1d((0, enc.stride))(z.permute(0, 2, 1))  # padding_patch == 'end'
    z = z.unfold(dimension=-1, size=enc.patch_len, step=enc.stride)  # (b, c, P, patch_len)
    u = enc.proj(z).reshape(b * c, z.shape[2], -1) + enc.positions  # W_P, W_pos
    for layer in enc.layers:  # TSTEncoderLayer, post-norm
        n, t, d = u.shape
        h, dk = layer.n_heads, d // layer.n_heads
        (wq, wk, wv), (bq, bk, bv) = layer.qkv.weight.chunk(3), layer.qkv.bias.chunk(3)
        q = F.linear(u, wq, bq).view(n, t, h, dk).transpose(1, 2)
        k = F.linear(u, wk, bk).view(n, t, h, dk).permute(0, 2, 3, 1)
        v = F.linear(u, wv, bv).view(n, t, h, dk).transpose(1, 2)
        weights = F.softmax(torch.matmul(q, k) * dk**-0.5, dim=-1)
        u = u + layer.out(torch.matmul(weights, v).transpose(1, 2).reshape(n, t, d))
        for bn, sub in ((layer.norm_attn, None), (layer.norm_ff, layer.ff)):
            if sub is not None:
                u = u + sub(u)
            rm, rv = bn_stats[bn]
            u = F.batch_norm(u.transpose(1, 2), rm, rv, bn.weight, bn.bias, True, 0.1, 1e-5).transpose(1, 2)
    P, d = u.shape[1:]
    flat = u.reshape(b, c, P, d).permute(0, 1, 3, 2).flatten(start_dim=-2)  # Flatten_Head: d_model-major
    w = model.head.weight.view(-1, P, d).permute(0, 2, 1).reshape(model.head.weight.shape[0], -1)
    y = F.linear(flat, w, model.head.bias).permute(0, 2, 1)  # (b, H, c)
    if rev.affine:  # RevIN._denormalize
        y = (y - rev.bias) / (rev.weight + rev.eps * rev.eps)
    return y * std + loc


@pytest.mark.parametrize("kwargs", [{}, {"subtract_last": True, "revin_affine": True}], ids=["ett-scripts", "last-affine"])
def test_patchtst_training_step_matches_the_reference_backbone(kwargs):
    cfg = ModelConfig(type="patchtst", hidden_size=16, num_heads=4, num_layers=3, intermediate_size=32,
                      dropout=0.0, patch_len=8, patch_stride=4)
    torch.manual_seed(0)
    model = PatchTSTMultivariate(cfg, 5, 7, 38, **kwargs).train()
    if model.revin.affine:
        with torch.no_grad():
            model.revin.weight.uniform_(0.5, 2.0)
            model.revin.bias.normal_()
    bns = [m for layer in model.encoder.layers for m in (layer.norm_attn, layer.norm_ff)]
    stats = {bn: (bn.running_mean.clone(), bn.running_var.clone()) for bn in bns}
    x = torch.randn(6, 38, 5).cumsum(1) * 2 + 3  # levels and scales far from 0 and 1
    target = torch.randn(6, 7, 5)

    model.zero_grad()
    F.mse_loss(model(x), target).backward()
    ours = {k: p.grad.clone() for k, p in model.named_parameters()}
    out = model(x).detach()  # a second forward: the running statistics move again, the output does not

    model.zero_grad()
    ref_out = reference_train_forward(model, x, stats)
    F.mse_loss(ref_out, target).backward()
    reference_train_forward(model, x, stats)
    torch.testing.assert_close(out, ref_out.detach(), rtol=1e-5, atol=1e-4)
    for k, p in model.named_parameters():
        torch.testing.assert_close(ours[k], p.grad, rtol=1e-4, atol=1e-5, msg=k)
    for bn in bns:  # two training forwards each, on both sides
        torch.testing.assert_close(bn.running_mean, stats[bn][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, stats[bn][1], rtol=1e-5, atol=1e-6)
    assert all(bool((bn.running_var != 1).any()) for bn in bns)  # the statistics did move
