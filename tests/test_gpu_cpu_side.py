"""What the GPU training path promises, proven on the CPU (``tests/test_devices.py`` repeats the
device checks on CUDA):

- no steady-state step hands a value to the host, on any path a step takes (accumulation, the loss
  heads, bf16, batches of dates with a cross-sectional loss, augmentation, a skipped non-finite step,
  batches gathered from rows kept on the device); an optimizer that cannot skip on the device reads
  its flag once a step and nothing else;
- a NaN in one micro-batch skips the whole step: the weights and the optimizer's state (Adam's step
  count included) stay bit for bit, the schedule moves on;
- ``data.device_cache`` changes nothing on the CPU, and batches gathered from rows on the device
  train the same weights as the host's batches, in the same order, with the same sampler state;
- the ``max_consecutive_nonfinite`` abort names every window of the step (a NaN may be in any of its
  micro-batches);
- the CUDA-graph path's gradient buffers (allocated once, zeroed in place) train eager's weights;
- ``benchmarks/bench_gpu.py`` runs on the CPU and measures every path it is given.

The host reads are counted at two levels: the Tensor methods that hand a value to Python, and the
operators that make a CUDA device wait (a scalar read, ``nonzero``, a boolean-mask index, ...)."""

import collections
import dataclasses

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.data.windows import DeviceRows
from hftraining.train.runner import build_trainer
from hftraining.train.trainer import NonFiniteError
from conftest import tiny  # noqa: E402

aten = torch.ops.aten

# Tensor methods that hand a value to the host: on a GPU each waits for the device.
HOST_METHODS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__array__,
                torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}
# Operators that synchronise a CUDA device: a scalar read, or an output whose size depends on the values.
SYNC_OPS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.nonzero.default,
            aten.masked_select.default, aten.repeat_interleave.Tensor, aten._unique2.default,
            aten.unique_dim.default, aten.unique_consecutive.default}
MASK_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


class _Methods(TorchFunctionMode):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_METHODS:
            self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


class _Operators(TorchDispatchMode):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS or (func in MASK_INDEXING and any(
                i is not None and i.dtype == torch.bool for i in args[1])):
            self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


class HostSyncs:
    """Counts, while active, every host read and every operator that would make a CUDA device wait."""

    def __enter__(self):
        self.methods, self.operators = collections.Counter(), collections.Counter()
        self._modes = [_Methods(self.methods), _Operators(self.operators)]
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)


@pytest.fixture(scope="module")
def data():
    return prepare(load_config(None, tiny(None)).data)


@pytest.fixture(scope="module")
def panel():  # every bundled symbol: dates with a cross-section
    return prepare(load_config(None, tiny(None, "data.symbols=null")).data)


def _trainer(tmp_path, data, *extra):
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=40", "training.learning_rate=0.003",
                                 "training.logging_steps=100", "training.save_steps=0", "evaluation.eval_steps=0",
                                 "output.overwrite=true", *extra))
    trainer = build_trainer(cfg, data)
    trainer.model.train()
    trainer.opt.train()
    return trainer


def _rows_on_device(trainer):
    """Make the trainer's batches from :class:`DeviceRows` (the rows "on" the CPU): the gathers a GPU
    runs with ``data.device_cache``."""
    train = trainer.data.train
    trainer.data = dataclasses.replace(trainer.data, train=dataclasses.replace(
        train, device_rows=DeviceRows.build(train, "cpu")))


def _poison_micro_batch(trainer, which):
    """A NaN in the inputs of micro-batch number ``which`` (0-based, counted over the whole run)."""
    batch, calls = trainer._batch, {"n": 0}

    def poisoned(idx):
        out = batch(idx)
        if calls["n"] == which:
            out["x"] = out["x"].clone()
            out["x"][0, -1, 0] = float("nan")
        calls["n"] += 1
        return out

    trainer._batch = poisoned


STEADY_STEPS = 3


@pytest.mark.parametrize("extra,how", [
    (["training.gradient_accumulation_steps=4"], None),
    (["training.gradient_accumulation_steps=2", "model.quantiles=[0.1, 0.9]", "model.classification_threshold=0.01",
      "training.max_grad_norm=0"], None),
    (["training.precision=bf16", "data.augment_noise_std=0.01", "data.augment_scale_std=0.1"], None),
    (["training.gradient_accumulation_steps=2"], "device rows"),
    (["training.gradient_accumulation_steps=2"], "nan"),
    (["data.batching=dates", "data.dates_per_batch=4", "model.loss=ic", "training.gradient_accumulation_steps=2"], "panel"),
    (["data.target=cs_rank"], "panel"),
], ids=["accumulation", "heads-no-clipping", "bf16-augmented", "device-rows", "nonfinite-skip", "dates-ic", "cs-rank"])
def test_steady_state_steps_read_nothing_back(tmp_path, data, panel, extra, how):
    trainer = _trainer(tmp_path, panel if how == "panel" else data, *extra)
    if how == "device rows":
        _rows_on_device(trainer)
    trainer.train_step()  # the first step builds the optimizer state
    if how == "nan":
        accum = trainer.cfg.training.gradient_accumulation_steps
        _poison_micro_batch(trainer, accum + 1)  # the second micro-batch of the second steady step
    with HostSyncs() as syncs:
        for _ in range(STEADY_STEPS):
            trainer.train_step()
    assert not syncs.methods and not syncs.operators, (syncs.methods, syncs.operators)
    trainer.read_back()
    assert trainer.state.global_step == 1 + STEADY_STEPS
    assert trainer.state.skipped_steps == (1 if how == "nan" else 0)
    trainer.close()


@pytest.mark.parametrize("optimizer,kwargs,reads", [
    ("adamw", "{}", 0),  # torch's fused kernel skips on the device
    ("sgd", "{fused: true}", 0),  # fused too, once its momentum exists (read on its first update only)
    ("sgd", "{}", 1),  # the others read the flag once a step, and nothing else
    ("schedulefreeadamw", "{}", 1),
    ("sophia", "{}", 1),
])
def test_an_optimizer_reads_at_most_its_flag(tmp_path, data, optimizer, kwargs, reads):
    trainer = _trainer(tmp_path, data, f"training.optimizer={optimizer}", f"training.optimizer_kwargs={kwargs}",
                       "training.gradient_accumulation_steps=2")
    assert trainer.opt.syncs_to_skip is bool(reads)
    trainer.train_step()
    with HostSyncs() as syncs:
        for _ in range(STEADY_STEPS):
            trainer.train_step()
    want = collections.Counter({"__bool__": reads * STEADY_STEPS}) if reads else collections.Counter()
    assert syncs.methods == want, syncs.methods
    assert sum(syncs.operators.values()) == reads * STEADY_STEPS, syncs.operators  # the flag's one scalar read
    trainer.close()


def _snapshot(trainer):
    opt = trainer.optimizer
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for i, s in enumerate(opt.state[p] for g in opt.param_groups for p in g["params"])}
    groups = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in opt.param_groups]
    return weights, state, groups


def _assert_same(a, b):
    (wa, sa, ga), (wb, sb, gb) = a, b
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys(), i
        for k in sa[i]:
            x, y = sa[i][k], sb[i][k]
            assert (torch.equal(x, y) if torch.is_tensor(x) else x == y), (i, k, x, y)
    assert ga == gb


@pytest.mark.parametrize("optimizer", ["adamw", "gpro", "sgd", "schedulefreeadamw"])
def test_a_nan_in_one_micro_batch_skips_the_whole_step(tmp_path, data, optimizer):
    # 4 micro-batches a step, clipping on; the NaN is in the 3rd micro-batch of the 3rd step only
    trainer = _trainer(tmp_path, data, f"training.optimizer={optimizer}", "training.gradient_accumulation_steps=4",
                       "training.max_grad_norm=1.0", "model.dropout=0.1")
    _poison_micro_batch(trainer, 2 * 4 + 2)
    trainer.train_step()
    trainer.train_step()
    before, epoch = _snapshot(trainer), trainer.scheduler.last_epoch
    trainer.train_step()  # skipped
    _assert_same(_snapshot(trainer), before)
    assert trainer.scheduler.last_epoch == epoch + 1  # the step counts: the schedule moves on
    trainer.train_step()  # the next one trains again
    after = _snapshot(trainer)
    assert not all(torch.equal(after[0][k], before[0][k]) for k in before[0])
    trainer.read_back()
    assert trainer.state.skipped_steps == 1 and trainer.state.consecutive_nonfinite == 0
    assert len(trainer._window.losses) == 3 and np.isfinite(trainer._window.losses).all()
    trainer.close()


def _train(tmp_path, data, steps, *extra, device_rows=False):
    trainer = _trainer(tmp_path, data, "training.gradient_accumulation_steps=2", "model.dropout=0.1",
                       "data.augment_noise_std=0.01", *extra)
    if device_rows:
        _rows_on_device(trainer)
    seen = []
    batch = trainer._batch

    def recording(idx):
        seen.append(np.asarray(idx).copy())
        return batch(idx)

    trainer._batch = recording
    for _ in range(steps):
        trainer.train_step()
    trainer.read_back()
    out = ({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, seen,
           trainer.sampler.state_dict(), list(trainer._window.losses))
    trainer.close()
    return out


def test_device_cache_changes_nothing_on_the_cpu_and_device_rows_train_the_same(tmp_path, data):
    cached = _train(tmp_path / "on", data, 6, "data.device_cache=true")
    host = _train(tmp_path / "off", data, 6, "data.device_cache=false")
    rows = _train(tmp_path / "rows", data, 6, device_rows=True)
    for other in (host, rows):
        for k in cached[0]:
            assert torch.equal(cached[0][k], other[0][k]), k  # the same weights, bit for bit
        assert len(cached[1]) == len(other[1]) == 12
        assert all(np.array_equal(a, b) for a, b in zip(cached[1], other[1]))  # the same batches, in order
        assert cached[2] == other[2]  # the sampler's resume state
        assert cached[3] == other[3]  # the losses


def test_the_nonfinite_abort_names_every_window_of_the_step(tmp_path, data):
    # the NaN is in the first of 4 micro-batches: the error named only the last micro-batch's 32 windows
    trainer = _trainer(tmp_path, data, "training.gradient_accumulation_steps=4", "training.max_consecutive_nonfinite=2",
                       "training.logging_steps=5", "training.max_steps=10")
    batch, drawn = trainer._batch, []

    def poisoned(idx):
        out = batch(idx)
        drawn.append(int(idx[0]))
        if len(drawn) % 4 == 1:
            out["x"] = out["x"].clone()
            out["x"][0, -1, 0] = float("nan")
        return out

    trainer._batch = poisoned
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    assert "last at step 2" in str(err.value)
    assert f"window {drawn[4]} (" in str(err.value) and "and 127 more" in str(err.value)  # step 2's first window
    trainer.close()


@pytest.mark.parametrize("extra", [[], ["training.optimizer=gpro", "model.quantiles=[0.1, 0.9]"]])
def test_cuda_graph_gradient_buffers_train_the_same_weights(tmp_path, data, extra):
    """Under CUDA graphs the gradients are buffers allocated once, zeroed in place and added into
    (``Trainer.zero_grad``); the same bookkeeping run on the CPU trains the weights eager's gradients
    do, bit for bit, a skipped non-finite step included."""
    def run(graphs):
        trainer = _trainer(tmp_path / str(graphs), data, "training.gradient_accumulation_steps=4", "model.dropout=0.1",
                           *extra)
        trainer._graphs = graphs
        _poison_micro_batch(trainer, 4 * 3 + 1)  # the 4th step is skipped
        for _ in range(6):
            trainer.train_step()
        trainer.read_back()
        assert trainer.state.skipped_steps == 1
        if graphs:
            assert all(p.grad is not None for p in trainer.model.parameters())
        out = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.close()
        return out

    eager, buffers = run(False), run(True)
    for k in eager:
        assert torch.equal(eager[k], buffers[k]), k


def test_bench_gpu_runs_on_the_cpu_and_measures_a_path_at_its_own_configuration(tmp_path):
    # ``--paths trainer:none@16x1`` names a configuration outside the CPU's default ones (8x1, 8x2):
    # it printed an empty table, as gpu_session.sh's max-autotune@1024x1 step did in its CPU smoke run
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--no-hf",
                           "--paths", "trainer:none@16x1"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "bf16 matmul peak measured" in out and "transformers.Trainer: not timed (--no-hf)" in out
    rows = [line for line in out.splitlines() if line.startswith("| 16 × 1 | hftraining Trainer [none] |")]
    assert len(rows) == 1, out
    micro, samples, mfu = (c.strip() for c in rows[0].strip("|").split("|")[2:])
    assert float(micro) > 0 and float(samples.replace(",", "")) > 0 and mfu.endswith("%")
    # the peak is measured with the product the model's Linear layers run: with ``a @ b`` in bf16 (a
    # path 10x slower on a CPU without bf16 instructions) the smoke run read an MFU of 199%
    assert 0 < float(mfu[:-1]) <= 100, rows[0]


def test_device_rows_serve_only_the_splits_that_share_them():
    """``data.device_cache`` copies the training split's rows to the device and gathers every split's
    batches there: a split with rows of its own (not the panel's) is not gathered from another's rows
    but takes the host path. The meta device stands for a GPU (nothing is computed)."""
    import dataclasses

    from hftraining.core.config import load_config
    from hftraining.data.pipeline import prepare

    cfg = load_config(None, ["data.symbols=[AEM, WPM]", "data.sequence_length=24", "data.prediction_horizon=4"])
    data = prepare(cfg.data)
    on = data.on_device("meta", cfg.data)
    assert on.train.device_rows is not None
    assert on.val.device_rows is on.train.device_rows and on.test.device_rows is on.train.device_rows
    own = dataclasses.replace(data, val=dataclasses.replace(data.val, features=data.val.features.copy()))
    on = own.on_device("meta", cfg.data)
    assert on.val.device_rows is None and on.test.device_rows is on.train.device_rows
