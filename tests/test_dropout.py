import pytest
import torch

from hftraining.config import ModelConfig
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
