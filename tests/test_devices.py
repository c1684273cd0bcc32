"""The same checks on every device this machine has: the CPU always, CUDA where there is one.

On a machine with a GPU, ``pytest tests/test_devices.py`` exercises the CUDA paths that the CPU
suite cannot reach: GPro's torch fused-Adam path, torch's attention and ``F.dropout`` in training,
fp16 with a gradient scaler, and a checkpoint written on the GPU read back on the CPU. Each check
compares against a CPU reference, so the CPU variant tests our own paths against torch's too.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from hftraining.core.config import ModelConfig, load_config
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.optim.gpro import GPro
from hftraining.workflows.train_run import train

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PRECISIONS = {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "bf16", "fp16"]}


@pytest.mark.parametrize("device", DEVICES)
def test_gpro_default_path_equals_foreach(device):
    expected = {"cpu": "numba", "cuda": "fused"}[device]
    torch.manual_seed(0)
    shapes = [(300, 200), (50,), (64, 64)]
    init = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) * (5.0 if i == 0 else 0.1) for i, s in enumerate(shapes)] for _ in range(3)]
    out = {}
    for impl in ("auto", "foreach"):
        params = [nn.Parameter(t.clone().to(device)) for t in init]
        opt = GPro(params, lr=0.01, rho=0.5, weight_decay=0.1, implementation=impl)
        if impl == "auto":
            assert opt._implementation(opt.param_groups[0], params) == expected
        for step_grads in grads:
            for q, g in zip(params, step_grads):
                q.grad = g.to(device)
            opt.step()
        out[impl] = [q.detach().cpu() for q in params]
    for a, b in zip(out["auto"], out["foreach"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_transformer_training_forward_equals_torch_layers_on_cpu(device):
    # training mode with dropout off: the device's training path (our encoder layer on CPU,
    # torch's attention on CUDA) against torch's own layers on the CPU, padded windows included
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=32, num_heads=4, num_layers=2, dropout=0.0), 5, 3, 12).train()
    x = torch.randn(4, 12, 5)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[:2, :3] = False
    reference = build_model(model.cfg, 5, 3, 12).train()
    reference.load_state_dict(model.state_dict())
    for layer in reference.layers:
        layer.__class__ = nn.TransformerEncoderLayer  # torch's forward, the same parameters
    want = reference(x, mask).prediction.detach()
    got = model.to(device)(x.to(device), mask.to(device)).prediction.detach().cpu()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device,precision", [(d, p) for d in DEVICES for p in PRECISIONS[d]])
def test_training_on_device_lowers_the_loss_and_loads_on_cpu(device, precision, tiny_overrides):
    cfg = load_config(None, tiny_overrides + [
        f"training.device={device}", f"training.precision={precision}", "model.dropout=0.1",
        "training.max_steps=40", "training.optimizer=gpro",
    ])
    train(cfg)
    run = cfg.run_dir()
    assert precision in (run / "train.log").read_text()
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) >= 30 and np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    fc = Forecaster.from_pretrained(run)  # weights written on the device, read on the CPU
    assert next(fc.model.parameters()).device.type == "cpu"
    assert np.isfinite(fc.predict_windows(fc.windows(None, "test"))).all()
