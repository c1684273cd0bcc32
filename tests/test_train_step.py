"""The training step as users of a GPU rely on it: no value read back to the host inside a step
(only at logging, evaluation and checkpoint steps), a non-finite step skipped on the device with
the weights and the optimizer's state left as they were, and the same counters and abort as a
step-by-step check would give. ``tests/test_devices.py`` repeats the no-sync check on CUDA with
``torch.cuda.set_sync_debug_mode("error")``."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from hftraining.core.config import TrainingConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.pipeline import prepare
from hftraining.optim.stepper import TrainOptimizer
from hftraining.train.runner import build_trainer
from hftraining.train.trainer import NonFiniteError
from conftest import tiny  # noqa: E402

# Tensor methods that hand a value to the host: on a GPU each waits for the device to finish.
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
              torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class HostReads(TorchFunctionMode):
    """Records every call of :data:`HOST_READS` made while it is active."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def _state(opt: TrainOptimizer):
    weights = [p.detach().clone() for p in opt.optimizer.param_groups[0]["params"]]
    state = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for s in opt.optimizer.state.values()]
    return weights, state


def _same(a, b) -> bool:
    (wa, sa), (wb, sb) = a, b
    return all(torch.equal(x, y) for x, y in zip(wa, wb)) and len(sa) == len(sb) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
        for x, y in zip(sa, sb))


@pytest.mark.parametrize("name,kwargs,device_skip", [
    ("adamw", {}, True),  # torch's fused kernel reads the flag on the device
    ("gpro", {"implementation": "fused"}, True),  # GPro's fused path: the same
    ("gpro", {}, True),  # GPro's numba path on the CPU reads it on the host (nothing to wait for there)
    ("lion", {}, False),  # the others read it back: a host synchronisation on a GPU
])
def test_a_flagged_step_leaves_weights_and_optimizer_state_and_moves_the_schedule(name, kwargs, device_skip):
    model = _model()
    opt = TrainOptimizer(model, TrainingConfig(optimizer=name, optimizer_kwargs=kwargs, learning_rate=1e-2,
                                               max_steps=10, warmup_steps=2))
    assert opt.syncs_to_skip is not device_skip

    def grads(scale):
        for p in model.parameters():
            p.grad = torch.full_like(p, scale)

    grads(0.1)
    opt.step(torch.zeros(()))  # a real step first: the state exists
    before, lr = _state(opt), opt.lr
    grads(float("nan"))
    opt.step(torch.ones(()))
    assert _same(_state(opt), before), "a skipped step changed the weights or the optimizer state"
    assert opt.lr != lr and opt.scheduler.last_epoch == 2  # the schedule moved on
    grads(0.1)
    opt.step(torch.zeros(()))
    assert not _same(_state(opt), before)  # the next good step updates


def _cfg(tmp_path, *extra):
    return load_config(None, tiny(tmp_path / "run", "training.max_steps=30", "training.learning_rate=0.003",
                                  "training.gradient_accumulation_steps=2", "evaluation.eval_steps=0", *extra))


def test_a_training_step_reads_nothing_back_to_the_host(tmp_path):
    cfg = _cfg(tmp_path, "training.logging_steps=10", "training.save_steps=0", "model.quantiles=[0.1, 0.9]",
               "model.classification_threshold=0.01")
    trainer = build_trainer(cfg, prepare(cfg.data))
    trainer.model.train()
    trainer.opt.train()
    trainer.train_step()  # the first step builds the optimizer state
    with HostReads() as mode:
        for _ in range(3):
            trainer.train_step()
    assert mode.calls == [], mode.calls
    assert len(trainer._pending) == 4  # the steps' numbers wait on the device
    trainer.read_back()
    assert trainer._pending == [] and trainer.state.skipped_steps == 0
    trainer.close()


def test_the_host_reads_back_only_at_logging_evaluation_and_checkpoint_steps(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "training.max_steps=24", "training.logging_steps=5", "training.save_steps=8",
               "evaluation.eval_steps=12")
    trainer = build_trainer(cfg, prepare(cfg.data))
    reads = []
    original = trainer.read_back

    def read_back():
        if trainer._pending:
            reads.append((trainer.state.global_step, len(trainer._pending)))
        original()

    monkeypatch.setattr(trainer, "read_back", read_back)
    trainer.fit()
    trainer.close()
    steps = [s for s, _ in reads]
    assert steps == [5, 8, 10, 12, 15, 16, 20, 24]  # logging 5s, checkpoints 8s, evaluations 12s, the end
    assert [n for _, n in reads] == [5, 3, 2, 2, 3, 1, 4, 4]  # every step read back exactly once
    logged = [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [5, 10, 15, 20, 24]


def _poison(trainer, steps):
    """Make every micro-batch of the optimizer steps ``steps`` (1-based) hold a NaN."""
    batch, calls = trainer._batch, {"n": 0}
    accum = trainer.cfg.training.gradient_accumulation_steps

    def poisoned(idx):
        out = batch(idx)
        calls["n"] += 1
        if (calls["n"] - 1) // accum + 1 in steps:
            out["x"] = out["x"].clone()
            out["x"][0, -1, 0] = float("nan")
        return out

    trainer._batch = poisoned


def test_skipped_steps_are_counted_when_read_and_the_abort_comes_by_the_next_read(tmp_path):
    cfg = _cfg(tmp_path, "training.logging_steps=10", "training.save_steps=0", "training.max_consecutive_nonfinite=3")
    trainer = build_trainer(cfg, prepare(cfg.data))
    _poison(trainer, {4, 13, 14, 15, 16})  # one lone bad step, then four in a row
    with pytest.raises(NonFiniteError, match=r"3 optimizer steps in a row .*last at step 15"):
        trainer.fit()
    assert trainer.state.global_step == 20  # the abort waited for the read at the logging step 20
    assert trainer.state.skipped_steps == 4 and trainer.state.consecutive_nonfinite == 3
    logged = [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 10 and logged[0]["nonfinite_skipped"] == 1 and np.isfinite(logged[0]["loss"])
    weights = [p.detach() for p in trainer.model.parameters()]
    assert all(torch.isfinite(w).all() for w in weights)
    trainer.close()


def test_compile_auto_is_eager_until_proven_on_the_device_and_modes_are_checked(tmp_path, monkeypatch):
    import hftraining.core.config as C
    from hftraining.train.trainer import compile_mode

    cfg = load_config(None, ["training.precision=bf16"])
    assert cfg.training.compile == "auto"
    assert compile_mode(cfg, "cpu", 1) == "none" and compile_mode(cfg, "cuda", 1) == "none"
    assert compile_mode(load_config(None, ["training.compile=reduce-overhead"]), "cpu", 1) == "reduce-overhead"
    with pytest.raises(ConfigError, match="training.compile"):
        load_config(None, ["training.compile=fast"])
    with pytest.raises(ConfigError, match="data.device_cache_max_gb"):
        load_config(None, ["data.device_cache_max_gb=-1"])
    # where AUTO_COMPILE names a mode, auto uses it only in the scope it was proven in
    proven = ["training.precision=bf16", "model.type=transformer"]
    outside = [["training.precision=fp32"], ["model.type=patchtst"], ["training.gradient_checkpointing=true"],
               ["training.optimizer=sophia"], ["data.batching=dates"]]
    assert compile_mode(load_config(None, proven), "cpu", 1) == "none"
    monkeypatch.setitem(C.AUTO_COMPILE, "cpu", "reduce-overhead")
    assert compile_mode(load_config(None, proven), "cpu", 1) == "reduce-overhead"
    assert compile_mode(load_config(None, proven), "cpu", 2) == "none"  # DDP
    for extra in outside:
        assert compile_mode(load_config(None, [*proven, *extra]), "cpu", 1) == "none", extra
    assert compile_mode(load_config(None, [*proven, "training.compile=default"]), "cpu", 2) == "default"
    monkeypatch.undo()
    cfg = _cfg(tmp_path, "training.optimizer=sophia", "training.compile=default")
    with pytest.raises(ConfigError, match=r"training.compile: 'default' cannot train 'sophia'.*double backward"):
        build_trainer(cfg, prepare(cfg.data))


@pytest.mark.parametrize("name,kwargs", [
    ("sgd", {"fused": True, "dampening": 0.5}),  # fused SGD creates its momentum buffers uninitialised
    ("adamw", {}),
    ("gpro", {"implementation": "fused"}),
])
def test_a_flagged_first_step_leaves_no_state_behind(name, kwargs):
    # Torch's fused SGD allocates its momentum buffers with empty_like on its first update and lets the
    # kernel fill them; a first step skipped on the device left that memory as the momentum, and the
    # next good step moved the weights by ~1e17 instead of one SGD step.
    def run(first_skipped):
        model = _model()
        opt = TrainOptimizer(model, TrainingConfig(optimizer=name, optimizer_kwargs=kwargs, learning_rate=1e-2,
                                                   max_steps=10, warmup_steps=0, lr_scheduler="constant"))
        if first_skipped:
            for p in model.parameters():
                p.grad = torch.full_like(p, float("nan"))
            opt.step(torch.ones(()))
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.1)
        opt.step(torch.zeros(()))
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "lr_scheduler.step() before optimizer.step()" warned the user
        skipped = run(True)
    reference = run(False)
    for a, b in zip(skipped.parameters(), reference.parameters()):
        assert torch.equal(a, b), "a skipped first step changed what the next step does"


def test_loss_scaler_overflows_are_not_counted_as_nonfinite_steps(tmp_path):
    # fp16's GradScaler skips the steps whose scaled gradients overflow and halves its scale: that is
    # it finding its scale, not a broken model. They counted toward max_consecutive_nonfinite, so a
    # run whose scale started (or had grown) a few halvings too high stopped with NonFiniteError.
    # A CPU GradScaler stands in for fp16's CUDA one (fp16 needs CUDA), its scale far too high.
    cfg = _cfg(tmp_path, "training.max_steps=12", "training.logging_steps=12", "training.save_steps=0",
               "training.max_consecutive_nonfinite=3", "training.gradient_accumulation_steps=1")
    trainer = build_trainer(cfg, prepare(cfg.data))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=0.25)
    forward_loss = trainer.forward_loss

    def large_loss(*args):  # gradients 2^12 times larger: the first scales overflow float32
        loss, parts = forward_loss(*args)
        return loss * 2.0**12, parts

    trainer.forward_loss = large_loss
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.state.global_step == 12
    assert 3 <= trainer.state.skipped_steps < 12  # more in a row than the limit, then it trains
    assert trainer.scaler.get_scale() < 2.0**127
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(start, trainer.model.parameters()))
    trainer.close()
    # a non-finite loss is still a non-finite step, scaler or not
    cfg = _cfg(tmp_path / "nan", "training.logging_steps=10", "training.save_steps=0", "training.max_consecutive_nonfinite=3")
    trainer = build_trainer(cfg, prepare(cfg.data))
    trainer.scaler = torch.amp.GradScaler("cpu")
    _poison(trainer, {2, 3, 4})
    with pytest.raises(NonFiniteError, match="3 optimizer steps in a row"):
        trainer.fit()
    trainer.close()
