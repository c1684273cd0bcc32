"""PatchTST and DLinear: shapes in both uses, channel independence, learning, persistence, and
gradient checkpointing that changes nothing but memory."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.models import ForecastModel, build_model
from hftraining.models.dlinear import DLinearMultivariate, decompose
from hftraining.models.patchtst import PatchTSTMultivariate, RevIN, num_patches

MODELS = ["patchtst", "dlinear"]
B, L, F, H = 4, 48, 3, 6


def small_cfg(kind: str, dropout: float = 0.0) -> ModelConfig:
    return ModelConfig(type=kind, hidden_size=16, num_heads=2, num_layers=2, intermediate_size=32,
                       dropout=dropout, patch_len=8, patch_stride=4, moving_avg=5)


def multivariate(kind: str, cfg: ModelConfig, c: int, h: int, seq_len: int) -> torch.nn.Module:
    cls = PatchTSTMultivariate if kind == "patchtst" else DLinearMultivariate
    return cls(cfg, c, h, seq_len)


@pytest.mark.parametrize("kind", MODELS)
def test_shapes_forecaster(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(small_cfg(kind), F, H, L).eval()
    x, past = torch.randn(B, L, F), torch.randn(B, L)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :30] = False  # a left-padded short history
    for out in (model(x), model(x, past=past), model(x, mask=mask, past=past)):
        assert out.prediction.shape == (B, H)
        assert torch.isfinite(out.prediction).all()


@pytest.mark.parametrize("kind", MODELS)
def test_shapes_and_channel_independence_multivariate(kind: str) -> None:
    torch.manual_seed(0)
    model = multivariate(kind, small_cfg(kind), 5, H, L).eval()
    x = torch.randn(B, L, 5)
    y = model(x)
    assert y.shape == (B, H, 5)
    x2 = x.clone()
    x2[..., 1] = torch.randn(B, L) * 10  # another channel changes…
    y2 = model(x2)
    torch.testing.assert_close(y2[..., 0], y[..., 0])  # …channel 0's forecast does not
    assert not torch.allclose(y2[..., 1], y[..., 1])


def test_patch_counts_match_the_paper() -> None:
    assert num_patches(336, 16, 8) == 42  # PatchTST/42
    assert num_patches(512, 16, 8) == 64  # PatchTST/64


def test_revin_round_trip_and_mask() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 20, 4) * 5 + 2
    for affine in (False, True):
        for last in (False, True):
            rev = RevIN(4, affine=affine, subtract_last=last)
            if affine:
                with torch.no_grad():
                    rev.weight.uniform_(0.5, 2.0)
                    rev.bias.normal_()
            z, loc, scale = rev.normalize(x)
            torch.testing.assert_close(rev.denormalize(z, loc, scale), x, rtol=1e-4, atol=1e-4)
    # statistics of a left-padded window are those of its real steps
    rev = RevIN(4)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[:, :8] = False
    padded = x.clone()
    padded[:, :8] = 0.0
    z, loc, scale = rev.normalize(padded, mask)
    z_ref, loc_ref, scale_ref = rev.normalize(x[:, 8:])
    torch.testing.assert_close(loc, loc_ref)
    torch.testing.assert_close(scale, scale_ref)
    torch.testing.assert_close(z[:, 8:], z_ref)


def test_decompose_and_bad_kernel() -> None:
    x = torch.full((2, 3, 30), 4.0)
    seasonal, trend = decompose(x, 25)
    torch.testing.assert_close(trend, x)  # a constant series is all trend
    assert seasonal.abs().max() == 0
    ramp = torch.arange(30.0).expand(1, 1, 30)
    _, trend = decompose(ramp, 5)
    torch.testing.assert_close(trend[..., 2:-2], ramp[..., 2:-2])  # a centred average keeps a line
    with pytest.raises(ConfigError, match="model.moving_avg"):
        build_model(ModelConfig(type="dlinear", moving_avg=99), F, H, L)
    with pytest.raises(ConfigError, match="model.patch_len"):
        build_model(ModelConfig(type="patchtst", patch_len=99, hidden_size=16, num_heads=2), F, H, L)


def test_patches_read_every_step_and_a_stride_past_the_patch_is_refused() -> None:
    # a stride longer than the patch stepped over the rows between patches (patch_len=4 with the
    # default stride 8 never read half the window); now a ConfigError naming the key
    with pytest.raises(ConfigError, match="model.patch_stride"):
        build_model(ModelConfig(type="patchtst", patch_len=4, patch_stride=8, hidden_size=16, num_heads=2), F, H, L)
    for seq_len, p, s in [(48, 8, 4), (48, 8, 8), (60, 16, 8), (37, 5, 3), (20, 20, 7)]:
        cfg = ModelConfig(type="patchtst", patch_len=p, patch_stride=s, hidden_size=16, num_heads=2)
        enc = build_model(cfg, F, H, seq_len).encoder
        seen = enc.patchify(torch.arange(float(seq_len))[None]).unique()
        assert torch.equal(seen, torch.arange(float(seq_len))), (seq_len, p, s)


def _sine_batch(g: torch.Generator, n: int, seq_len: int, horizon: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sines with random phase/period plus a random walk: (n, L+H, c) split into x, y."""
    t = torch.arange(seq_len + horizon, dtype=torch.float32)
    period = 8 + 8 * torch.rand(n, 1, c, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, c, generator=g)
    s = torch.sin(2 * math.pi * t[None, :, None] / period + phase)
    s = s + 0.05 * torch.randn(n, seq_len + horizon, c, generator=g).cumsum(1)
    return s[:, :seq_len], s[:, seq_len:]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("mode", ["forecaster", "multivariate"])
def test_loss_goes_down(kind: str, mode: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = small_cfg(kind)
    model = build_model(cfg, F, H, L) if mode == "forecaster" else multivariate(kind, cfg, F, H, L)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_eval, y_eval = _sine_batch(g, 64, L, H, F)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if mode == "forecaster":  # forecast channel 0's future from all channels, channel 0 as `past`
            return torch.nn.functional.mse_loss(model(x, past=x[..., 0]).prediction, y[..., 0])
        return torch.nn.functional.mse_loss(model(x), y)

    model.eval()
    with torch.no_grad():
        before = float(loss_of(x_eval, y_eval))
    model.train()
    for _ in range(40):
        loss = loss_of(*_sine_batch(g, 32, L, H, F))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(loss_of(x_eval, y_eval))
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("kind", MODELS)
def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(small_cfg(kind), F, H, L)
    model.train()
    model(torch.randn(8, L, F), past=torch.randn(8, L))  # move BatchNorm running stats off their init
    model.eval()
    x, past = torch.randn(B, L, F), torch.randn(B, L)
    expected = model(x, past=past).prediction
    model.save_pretrained(tmp_path / "m")
    loaded = ForecastModel.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded(x, past=past).prediction, expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["forecaster", "multivariate"])
def test_gradient_checkpointing_gives_equal_gradients(mode: str) -> None:
    torch.manual_seed(0)
    cfg = small_cfg("patchtst", dropout=0.1)  # dropout on: checkpointing must replay the same masks
    ref = build_model(cfg, F, H, L) if mode == "forecaster" else PatchTSTMultivariate(cfg, F, H, L)
    ckpt = copy.deepcopy(ref)
    if mode == "forecaster":
        ckpt.set_gradient_checkpointing(True)
    else:
        ckpt.gradient_checkpointing = True
    x, y, past = torch.randn(B, L, F), torch.randn(B, H), torch.randn(B, L)
    grads = []
    for model in (ref, ckpt):
        model.train()
        torch.manual_seed(1)
        out = model(x, past=past).prediction if mode == "forecaster" else model(x)[..., 0]
        torch.nn.functional.mse_loss(out, y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)
    # the recomputation in backward must not update BatchNorm's running statistics a second time
    for (name, a), (_, b) in zip(ref.named_buffers(), ckpt.named_buffers()):
        torch.testing.assert_close(b, a, msg=name)
