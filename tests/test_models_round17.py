"""Under a bf16 autocast the transformer's and PatchTST's heads forecast in fp32: a bf16 forecast holds 8
significant bits, so forecasts of nearby windows tied and a rank IC or top-k book read the ties. Without an
autocast nothing changes, bit for bit; a model folder written before (no ``fp32_heads`` in config.json)
forecasts as its eval.json scored, in the autocast's precision."""

from __future__ import annotations

import json

import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.core.errors import DataError
from hftraining.models.base import ForecastModel
from hftraining.models.registry import build_model

N, L, F, H = 512, 16, 6, 3


def _model(kind: str, **kw) -> ForecastModel:
    torch.manual_seed(0)
    cfg = ModelConfig(type=kind, hidden_size=16, num_heads=2, num_layers=1, intermediate_size=32, dropout=0.0,
                      **({"patch_len": 4, "patch_stride": 4} if kind == "patchtst" else {}), **kw)
    return build_model(cfg, F, H, L).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, L, F, generator=g), torch.randn(N, L, generator=g) * 0.01


def _forecast(model, bf16: bool, past: bool = True) -> torch.Tensor:
    """Step forecasts of the N windows; without ``past`` PatchTST forecasts in its head's own units (with
    it, RevIN's statistics rescale the head's 8-bit output per window: no ties, 8 bits all the same)."""
    x, p = _inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x, past=p if past else None).prediction


@pytest.mark.parametrize("kind", ["transformer", "patchtst"])
def test_bf16_forecasts_are_fp32_and_do_not_tie(kind):
    model = _model(kind)
    fp32, bf16 = _forecast(model, False, past=False), _forecast(model, True, past=False)
    assert bf16.dtype == torch.float32 and _forecast(model, True).dtype == torch.float32
    assert len(torch.unique(bf16[:, 0])) == len(torch.unique(fp32[:, 0])) == N  # one value per window
    assert torch.allclose(bf16, fp32, atol=0.05 * fp32.std().item())  # still the bf16 encoder's forecast
    model.fp32_heads = False  # as a folder written before: the heads round to bf16 and windows tie
    old = _forecast(model, True, past=False)
    assert old.dtype == torch.bfloat16 and len(torch.unique(old[:, 0])) < 0.9 * N


@pytest.mark.parametrize("kind", ["transformer", "patchtst"])
def test_without_autocast_the_forecast_is_unchanged_bit_for_bit(kind):
    model = _model(kind)
    new = _forecast(model, False)
    model.fp32_heads = False
    assert torch.equal(new, _forecast(model, False))


def test_a_quantile_and_class_head_are_fp32_too():
    model = _model("transformer", quantiles=[0.1, 0.5, 0.9], classification_threshold=0.001)
    x, _ = _inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.prediction.dtype == out.quantiles.dtype == out.class_logits.dtype == torch.float32


def test_a_folder_keeps_its_heads_precision(tmp_path):
    model = _model("transformer")
    model.save_pretrained(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["fp32_heads"] is True
    assert ForecastModel.from_pretrained(tmp_path / "new").fp32_heads is True
    args = json.loads((tmp_path / "new" / "config.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.safetensors").write_bytes((tmp_path / "new" / "model.safetensors").read_bytes())
    del args["fp32_heads"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(args))
    old = ForecastModel.from_pretrained(tmp_path / "old")
    assert old.fp32_heads is False and _forecast(old.eval(), True).dtype == torch.bfloat16
    args["fp32_heads"] = 1
    (tmp_path / "old" / "config.json").write_text(json.dumps(args))
    with pytest.raises(DataError, match=r"config.json: fp32_heads must be true or false, got 1"):
        ForecastModel.from_pretrained(tmp_path / "old")
    dl = _model("dlinear", moving_avg=5)
    dl.save_pretrained(tmp_path / "dl")
    assert "fp32_heads" not in json.loads((tmp_path / "dl" / "config.json").read_text())
