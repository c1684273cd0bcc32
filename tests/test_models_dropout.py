import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.models import build_model
from hftraining.models.layers import Dropout


def test_keeps_one_minus_p_and_rescales():
    torch.manual_seed(0)
    d = Dropout(0.3).train()
    x = torch.ones(200_000)
    y = d(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased


def test_identity_in_eval_and_gradient_follows_the_mask():
    d = Dropout(0.5)
    x = torch.randn(1000, requires_grad=True)
    assert d.eval()(x) is x
    d.train()
    y = d(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * 2.0)


def test_same_mask_from_the_same_seed_and_bf16_keeps_dtype():
    d = Dropout(0.2).train()
    x = torch.randn(64, 32, dtype=torch.bfloat16)
    torch.manual_seed(3)
    a = d(x)
    torch.manual_seed(3)
    b = d(x)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


def test_transformer_uses_it_everywhere_but_attention_weights():
    m = build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=2, dropout=0.1), 3, 2, 10)
    kinds = {type(mod).__name__ for mod in m.modules()}
    assert "Dropout" in kinds and not any(isinstance(mod, torch.nn.Dropout) for mod in m.modules())


def test_rejects_p_of_one():
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_every_16_bit_lane_is_uniform():
    # four elements share one 64-bit word: each lane position must keep with probability 1 - p,
    # and neighbouring words must not be correlated
    from hftraining.models.layers import keep_mask

    torch.manual_seed(0)
    keep, scale = keep_mask((100_000, 4), 0.5, torch.device("cpu"))
    assert keep.dtype == torch.uint8 and scale == 2.0
    frac = keep.float().mean(dim=0)
    torch.testing.assert_close(frac, torch.full((4,), 0.5), atol=0.006, rtol=0)
    k = keep.float() - 0.5
    for lag in (1, 2, 7):
        corr = (k[:-lag] * k[lag:]).mean(dim=0) / 0.25
        assert corr.abs().max().item() < 0.02, lag


def test_mask_follows_torch_seed_not_thread_count():
    from hftraining.models.layers import keep_mask

    threads = torch.get_num_threads()
    masks = []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            torch.manual_seed(7)
            masks.append(keep_mask((1001, 3), 0.2, torch.device("cpu"))[0])
    finally:
        torch.set_num_threads(threads)
    assert masks[0].shape == (1001, 3) and torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], keep_mask((1001, 3), 0.2, torch.device("cpu"))[0])  # the next draw differs


def test_probability_is_rounded_to_a_16_bit_grid_and_stays_unbiased():
    from hftraining.models.layers import keep_mask

    torch.manual_seed(1)
    keep, scale = keep_mask((1_000_000,), 0.15, torch.device("cpu"))
    p_eff = round(0.15 * 65536) / 65536
    assert scale == pytest.approx(1 / (1 - p_eff))
    assert 1 - keep.float().mean().item() == pytest.approx(p_eff, abs=0.002)
