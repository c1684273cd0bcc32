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
from hftraining.core.errors import UserError
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.optim.gpro import GPro
from hftraining.train.runner import build_trainer
from hftraining.workflows.train_run import train
from conftest import fixed_window_loss, initial_weights, tiny  # noqa: E402

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
    with initial_weights() as init:
        train(cfg)
    run = cfg.run_dir()
    assert precision in (run / "train.log").read_text()
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) >= 30 and np.isfinite(losses).all()
    fc = Forecaster.from_pretrained(run)  # weights written on the device, read on the CPU
    assert next(fc.model.parameters()).device.type == "cpu"
    assert np.isfinite(fc.predict_windows(fc.windows(None, "test"))).all()
    # the loss on fixed training windows, the same model before and after: not noisy batch losses
    windows = prepare(cfg.data).train
    untrained = build_model(cfg.model, fc.model.n_features, fc.model.horizon, fc.model.seq_len)
    untrained.load_state_dict(init)
    before, after = fixed_window_loss(untrained, windows), fixed_window_loss(fc.model, windows)
    assert after < 0.99 * before, (before, after)


# ------------------------------------------------------------------------------------------------
# training.compile: a compiled (on CUDA also graphed) step proven against the eager one

COMPILE_MODES = {
    # CPU: no CUDA graphs, so reduce-overhead and max-autotune compile what default does (slower)
    "cpu": ["default", pytest.param("reduce-overhead", marks=pytest.mark.slow),
            pytest.param("max-autotune", marks=pytest.mark.slow)],
    "cuda": ["default", "reduce-overhead", pytest.param("max-autotune", marks=pytest.mark.slow)],
}
COMPILE_CASES = [pytest.param(d, m.values[0] if hasattr(m, "values") else m, marks=getattr(m, "marks", ()),
                              id=f"{d}-{m.values[0] if hasattr(m, 'values') else m}")
                 for d in DEVICES for m in COMPILE_MODES[d]]
# fp32 on the CPU (tight); bf16 on CUDA, as users train there (to bf16 tolerance)
STEP_PRECISION = {"cpu": ("fp32", 1e-4), "cuda": ("bf16", 3e-2)}


@pytest.fixture(scope="module")
def step_data():
    return prepare(load_config(None, tiny(None)).data)


def _step_trainer(tmp_path, device, mode, name, data, *extra):
    precision, _ = STEP_PRECISION[device]
    cfg = load_config(None, tiny(
        tmp_path / name, f"training.device={device}", f"training.precision={precision}", f"training.compile={mode}",
        "training.gradient_accumulation_steps=4", "training.max_steps=60", "training.learning_rate=0.001",
        "training.logging_steps=1000", "training.save_steps=0", "evaluation.eval_steps=0", "output.overwrite=true", *extra,
    ))
    trainer = build_trainer(cfg, data)
    trainer.model.train()
    trainer.opt.train()
    return trainer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize("device,mode", COMPILE_CASES)
def test_compiled_step_equals_eager(device, mode, step_data, tmp_path):
    """Gradients after one 4-micro-batch step (the accumulation that CUDA graph trees have got
    wrong: pytorch#96693), then the losses of 50 steps, compiled against eager on the same batches."""
    _, tol = STEP_PRECISION[device]
    eager = _step_trainer(tmp_path, device, "none", "eager", step_data, "training.max_grad_norm=0")
    comp = _step_trainer(tmp_path, device, mode, "compiled", step_data, "training.max_grad_norm=0")
    assert comp.compile_mode == mode
    for a, b in zip(eager.model.parameters(), comp.model.parameters()):
        assert torch.equal(a, b)  # the same seed: the same start
    eager.train_step()
    comp.train_step()
    ge = torch.cat([p.grad.flatten() for p in eager.model.parameters()])
    gc = torch.cat([p.grad.flatten() for p in comp.model.parameters()])
    assert _rel(gc, ge) < tol, _rel(gc, ge)
    for _ in range(49):
        eager.train_step()
        comp.train_step()
    le = torch.stack([p.stats[0] for p in eager._pending]).cpu()
    lc = torch.stack([p.stats[0] for p in comp._pending]).cpu()
    assert torch.isfinite(lc).all() and len(lc) == 50
    np.testing.assert_allclose(lc.numpy(), le.numpy(), rtol=tol)
    eager.close()
    comp.close()


@pytest.mark.parametrize("device,mode", COMPILE_CASES)
def test_compiled_dropout_is_random_per_micro_batch(device, mode, step_data, tmp_path):
    comp = _step_trainer(tmp_path, device, mode, "dropout", step_data, "model.dropout=0.3")
    b = comp._batch(comp.sampler.next_batch())
    comp.zero_grad()  # as a step does: under CUDA graphs the gradients are buffers of their own
    losses = []
    for _ in range(4):  # the same micro-batch four times, as the step runs them
        if comp._graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss, _ = comp.forward_loss(b["x"], b.get("mask"), b["past"], b["y"])
        losses.append(float(loss.detach()))
        loss.backward()
    assert np.isfinite(losses).all() and len(set(losses)) == 4, losses
    comp.close()


@pytest.mark.parametrize("device,mode", COMPILE_CASES)
def test_compiled_resume_is_bit_exact(device, mode, step_data, tmp_path):
    """Within one compile mode, a run resumed from its step-3 checkpoint ends with the weights of
    the run that went on (dropout on: the RNG states travel in the checkpoint)."""
    extra = ("model.dropout=0.1", "training.max_steps=6", "training.save_steps=3")
    full = _step_trainer(tmp_path, device, mode, "full", step_data, *extra)
    full.fit()
    resumed = _step_trainer(tmp_path, device, mode, "resumed", step_data, *extra,
                            f"training.resume_from_checkpoint={full.ckpt_root / 'step-00000003'}")
    resumed.fit()
    assert resumed.state.global_step == 6
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    full.close()
    resumed.close()


# ------------------------------------------------------------------------------------------------
# CUDA only: no host synchronisation in a step, the rows on the device, out of memory

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda_only
@pytest.mark.parametrize("optimizer,precision,mode,cache", [
    ("adamw", "bf16", "none", True),
    ("adamw", "fp16", "none", True),  # the gradient scaler's checks and update stay on the device
    ("gpro", "bf16", "none", False),  # GPro's fused path; batches from pinned host memory
    ("adamw", "bf16", "reduce-overhead", True),
])
def test_steady_state_steps_never_synchronise_the_host(optimizer, precision, mode, cache, step_data, tmp_path):
    trainer = _step_trainer(tmp_path, "cuda", mode, "sync", step_data, f"training.optimizer={optimizer}",
                            f"training.precision={precision}", f"data.device_cache={str(cache).lower()}",
                            "model.dropout=0.1", "model.quantiles=[0.1, 0.9]", "model.classification_threshold=0.01")
    for _ in range(3):  # warm-up: optimizer state, allocator, compilation and graph recording
        trainer.train_step()
    trainer.read_back()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    trainer.read_back()
    assert trainer.state.global_step == 8 and trainer.state.skipped_steps == 0
    trainer.close()


@cuda_only
def test_fp16_resume_is_bit_exact(step_data, tmp_path):
    """fp16: a run resumed from its step-4 checkpoint ends with the weights, skipped steps and
    gradient scaler of the run that went on (dropout on). The scaler starts above fp16's range and
    grows every good step, so it overflows and backs off within the run: a scaler restarted at the
    resume (as before checkpoints held its state) would skip other steps and end at another scale."""
    extra = ("model.dropout=0.1", "training.max_steps=8", "training.save_steps=4", "training.precision=fp16",
             "training.max_consecutive_nonfinite=20")

    def trainer(name, *more):
        t = _step_trainer(tmp_path, "cuda", "none", name, step_data, *extra, *more)
        assert t.scaler is not None
        t.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**17, growth_interval=1)
        return t

    full = trainer("full")
    full.fit()
    saved = json.loads((full.ckpt_root / "step-00000004" / "trainer_state.json").read_text())
    assert saved["grad_scaler"]["growth_interval"] == 1
    resumed = trainer("resumed", f"training.resume_from_checkpoint={full.ckpt_root / 'step-00000004'}")
    resumed.fit()
    assert resumed.state.global_step == 8
    assert resumed.state.skipped_steps == full.state.skipped_steps
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    full.close()
    resumed.close()


@cuda_only
@pytest.mark.parametrize("cache", [True, False])
def test_cuda_batches_equal_the_host_batches(cache):
    d = load_config(None, ["data.symbols=[AEM, ARM]", "data.sequence_length=30", "data.prediction_horizon=4",
                           "data.min_history=5", "data.scale_per_symbol=true", f"data.device_cache={str(cache).lower()}"]).data
    data = prepare(d)
    placed = data.on_device("cuda", d)
    assert placed.placement.startswith("rows on cuda" if cache else "rows on the host")
    for split in ("train", "val", "test"):
        host, dev = data.split(split), placed.split(split)
        for idx in (np.arange(min(64, len(host))), np.arange(len(host))[-9:]):
            want, got = host.batch(idx), dev.batch(idx)
            assert want.keys() == got.keys()
            for k in want:
                if k != "index":
                    assert got[k].device.type == "cuda", k
                assert torch.equal(want[k], got[k].cpu()), (split, k)


@cuda_only
def test_out_of_memory_names_the_batch_size(tmp_path):
    cfg = load_config(None, tiny(tmp_path / "oom", "data.symbols=null", "data.sequence_length=60", "data.batch_size=8192",
                                 "model.hidden_size=512", "model.num_heads=16", "model.num_layers=4", "training.device=cuda",
                                 "training.max_steps=2"))
    trainer = build_trainer(cfg)
    torch.cuda.set_per_process_memory_fraction(0.02)  # about 2.8 GB of an H200
    try:
        with pytest.raises(UserError, match=r"^data.batch_size: 8192 windows of 60 steps do not fit in cuda") as err:
            trainer.train_step()
        assert "\n" not in str(err.value)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        trainer.close()
        del trainer
        torch.cuda.empty_cache()
