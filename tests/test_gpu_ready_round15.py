"""The GPU training path's promises that the CPU can prove, where the other device tests left them open:

- ``data.device_cache_max_gb`` is a limit: rows that fit are copied to the device, rows one byte over stay
  on the host for every split, and the run's placement line names the key;
- ``training.compile`` compiles the training forward and loss in the mode it names, with one batch shape
  (``dynamic=False``), and ``none`` (or ``auto``, which is ``none`` on the CPU) compiles nothing: the
  compiled-against-eager checks of ``tests/test_devices.py`` prove nothing if the step is eager;
- a step is skipped when any rank flags it (the flags are reduced across the ranks before the skip is
  decided), so every rank leaves its weights and optimizer state alone together;
- a step made non-finite by a NaN target alone is named by its windows, not blamed on the weights;
- ``benchmarks/bench_gpu.py --steps N`` times N optimizer steps on the CPU too;
- a step of ``benchmarks/gpu_session.sh`` that its time limit stopped says so, on screen and in its file.

The meta device stands for a GPU where only placement is checked (nothing is computed there)."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hftraining.train.trainer as trainer_mod
from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.data.windows import DeviceRows, device_rows_for
from hftraining.train.runner import build_trainer
from conftest import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    return prepare(load_config(None, tiny(None)).data)


def test_device_cache_copies_rows_that_fit_and_leaves_larger_ones_on_the_host(data):
    need = DeviceRows.nbytes(data.train)
    assert need > 0
    fits = device_rows_for(data.train, "meta", need)  # exactly the limit: copied
    assert fits is not None and fits.features.device.type == "meta"
    assert device_rows_for(data.train, "meta", need - 1) is None  # one byte over: the host path
    assert device_rows_for(data.train, "cpu", need) is None  # nothing changes on the CPU

    d = load_config(None, tiny(None)).data
    under = data.on_device("meta", dataclasses.replace(d, device_cache=True, device_cache_max_gb=need / 2**30))
    assert under.train.device_rows is not None and under.val.device_rows is under.train.device_rows
    assert under.placement.startswith("rows on meta")
    over = data.on_device("meta", dataclasses.replace(d, device_cache=True, device_cache_max_gb=(need - 1) / 2**30))
    assert all(ws.device_rows is None and ws.device == torch.device("meta") for ws in (over.train, over.val, over.test))
    assert "data.device_cache_max_gb" in over.placement and over.placement.startswith("rows on the host")
    off = data.on_device("meta", dataclasses.replace(d, device_cache=False))
    assert off.train.device_rows is None and "data.device_cache=false" in off.placement


@pytest.mark.parametrize("mode", ["none", "auto", "default", "reduce-overhead", "max-autotune"])
def test_training_compile_compiles_the_step_in_the_mode_it_names(mode, data, tmp_path, monkeypatch):
    calls = []
    compile_ = torch.compile

    def spy(fn, **kwargs):
        calls.append(kwargs)
        compiled = compile_(fn, **kwargs)  # wrapped only: nothing is compiled until it is called
        calls[-1]["result"] = compiled
        return compiled

    monkeypatch.setattr(torch, "compile", spy)
    cfg = load_config(None, tiny(tmp_path / "run", f"training.compile={mode}", "training.max_steps=2"))
    trainer = build_trainer(cfg, data)
    try:
        if mode in ("none", "auto"):  # auto is eager on the CPU
            assert trainer.compile_mode == "none" and calls == []
        else:
            assert [(c.get("mode"), c.get("dynamic")) for c in calls] == [(mode, False)]
            assert trainer.forward_loss is calls[0]["result"]  # the step runs the compiled function
    finally:
        trainer.close()


def test_a_step_another_rank_flags_is_skipped_here_too(data, tmp_path, monkeypatch):
    """The skip is every rank's: this rank's loss and gradient are finite, another rank's loss is NaN
    (its flags arrive through the all-reduce); the weights, the optimizer's state and its step count
    stay, the schedule moves on, and the step counts as skipped, as on the rank that had the NaN."""
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=10", "training.logging_steps=100",
                                 "training.save_steps=0", "evaluation.eval_steps=0", "training.learning_rate=0.003",
                                 "training.gradient_accumulation_steps=2", "model.dropout=0.1"))
    trainer = build_trainer(cfg, data)
    trainer.model.train()
    trainer.opt.train()
    reduce, other_rank = trainer_mod.all_reduce_max, {"nan": False}

    def all_reduce_max(t, info):  # (skip, bad windows, bad loss): another rank's, maxed into this rank's
        out = reduce(t, info)
        if other_rank["nan"]:
            t.copy_(torch.maximum(t, torch.tensor([1.0, 0.0, 1.0], device=t.device)))
        return out

    monkeypatch.setattr(trainer_mod, "all_reduce_max", all_reduce_max)
    trainer.train_step()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(trainer.optimizer.state.values())}
    epoch = trainer.scheduler.last_epoch
    other_rank["nan"] = True
    trainer.train_step()
    other_rank["nan"] = False
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for i, s in enumerate(trainer.optimizer.state.values()):
        for k, v in s.items():
            assert torch.equal(v, state[i][k]), (i, k)
    assert trainer.scheduler.last_epoch == epoch + 1
    trainer.train_step()  # the next step trains again
    assert any(not torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())
    trainer.read_back()
    assert trainer.state.skipped_steps == 1 and trainer.state.consecutive_nonfinite == 0
    assert len(trainer._window.losses) == 2 and np.isfinite(trainer._window.losses).all()
    trainer.close()


def test_bench_gpu_times_the_steps_it_is_given_on_the_cpu(monkeypatch, capsys):
    """``--steps 5`` timed 2 optimizer steps on the CPU (``args.steps or ... if gpu else ...`` read
    the flag only on a GPU), so a smoke run could not be made longer to steady its figures."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_gpu

    timed = []

    def time_trainer(cfg, data, steps):
        timed.append((steps, cfg.training.max_steps))
        return 0.01

    monkeypatch.setattr(bench_gpu, "time_trainer", time_trainer)
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--device", "cpu", "--no-hf", "--paths", "trainer:none@8x1",
                                      "--steps", "5"])
    bench_gpu.main()
    assert timed == [(5, 5)], timed
    assert "| 8 × 1 | hftraining Trainer [none] | 100.0 | 800 |" in capsys.readouterr().out


@pytest.mark.parametrize("part,steps", [("checks", 4), ("bench", 1)])
def test_gpu_session_says_which_step_its_time_limit_stopped(part, steps, tmp_path):
    """``gpu_session.sh`` runs once on a GPU with minutes to spare, each step under a time limit: a step the
    limit stopped said nothing (a profile or a kernel search cut short read as one that printed nothing,
    a lost result that looked like none). A Python that never finishes stands in for every step."""
    import os
    import subprocess

    py = tmp_path / "python"
    py.write_text('#!/bin/sh\nif [ "$1" = -c ]; then echo "torch (stand-in)"; exit 0; fi\nexec sleep 60\n')
    py.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), part], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PY": str(py), "WHEELS": "0", "OUT": str(out),
                                                      "LIMIT": "2"})
    assert proc.returncode == 0, proc.stderr
    stopped = [line for line in proc.stdout.splitlines() if line.startswith("gpu_session.sh: stopped by its ")]
    assert len(stopped) == steps, proc.stdout
    names = {"checks": ["tests.txt", "profile.txt", "profile.txt", "autotune.txt"], "bench": ["bench.txt"]}[part]
    for name in set(names):  # each step's file says it too: $OUT is what comes back from the device
        assert (out / name).read_text().count("gpu_session.sh: stopped by its ") == names.count(name), name


def test_a_nan_target_is_named_as_the_windows_not_as_diverged_weights(data, tmp_path):
    """The step's flags note whether a window of it holds a NaN/Inf (its inputs, its past labels or its
    targets): a run of steps made non-finite by a NaN target alone named no window and told the user the
    weights had diverged and to lower the learning rate."""
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=10", "training.logging_steps=5",
                                 "training.save_steps=0", "evaluation.eval_steps=0", "training.max_consecutive_nonfinite=2",
                                 "training.gradient_accumulation_steps=2"))
    trainer = build_trainer(cfg, data)
    batch, drawn = trainer._batch, []

    def nan_target(idx):
        out = batch(idx)
        drawn.append(int(idx[0]))
        if len(drawn) > 2 and len(drawn) % 2 == 1:  # the first micro-batch of steps 2 on: its targets only
            out["y"] = out["y"].clone()
            out["y"][0, 0] = float("nan")
        return out

    trainer._batch = nan_target
    with pytest.raises(trainer_mod.NonFiniteError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "2 optimizer steps in a row" in msg and "last at step 3" in msg, msg
    assert f"window {drawn[4]} (" in msg and "diverged" not in msg, msg  # step 3's first window
    trainer.close()
