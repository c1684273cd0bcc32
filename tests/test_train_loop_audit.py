"""The training loop's arithmetic: accumulation equals one big batch, clipping acts on the accumulated
gradient, a resume follows the resumed run's schedule, epoch ends under accumulation, and the logged
throughput counts training time."""

import copy
import dataclasses
import json
import math
import types

import numpy as np
import pytest
import torch

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.optim import lr_multiplier
from hftraining.train.checkpoint import list_checkpoints
from hftraining.train.runner import build_trainer
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

QUICK = ["evaluation.report=false", "training.save_steps=0", "evaluation.eval_steps=0"]


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_accumulated_micro_batches_equal_one_big_batch_and_clip_the_accumulated_gradient(tmp_path):
    # k micro-batches of b windows: the same windows, loss, pre-clip norm and (clipped) update as one batch of k*b
    def one_step(name, batch, accum):
        cfg = load_config(None, tiny(tmp_path / name, *QUICK, f"data.batch_size={batch}",
                                     f"training.gradient_accumulation_steps={accum}", "training.optimizer=sgd",
                                     "training.optimizer_kwargs={momentum: 0.0}", "training.weight_decay=0.0", "training.learning_rate=0.1",
                                     "training.lr_scheduler=constant", "training.warmup_steps=0",
                                     "training.max_grad_norm=0.05", "training.max_steps=1"))
        tr = build_trainer(cfg)
        peek = copy.deepcopy(tr.sampler)
        windows = np.concatenate([peek.next_batch() for _ in range(accum)])
        before = [p.detach().clone() for p in tr.model.parameters()]
        tr.model.train()
        tr.opt.train()
        tr.train_step()
        tr.read_back()
        w = tr._window
        tr.close()
        return windows, [p.detach() - b for p, b in zip(tr.model.parameters(), before)], w.losses[-1], w.grad_norm

    win_a, upd_a, loss_a, norm_a = one_step("accum", 16, 2)
    win_b, upd_b, loss_b, norm_b = one_step("big", 32, 1)
    np.testing.assert_array_equal(win_a, win_b)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert norm_a == pytest.approx(norm_b, rel=1e-5)
    assert norm_b > 0.05  # the precondition: the step was clipped, so the logged norm is the one before clipping
    total = math.sqrt(sum(float((u / 0.1).pow(2).sum()) for u in upd_b))  # the gradient the update used
    assert total == pytest.approx(0.05, rel=1e-3)
    for a, b in zip(upd_a, upd_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_a_resume_with_more_steps_takes_every_step_at_the_new_schedule_s_rate(tmp_path):
    # the optimizer's restored groups held the rate the first run had set for its next step (its floor,
    # at its last step): the first resumed step used it, the new schedule applied from the second
    run = tmp_path / "run"
    common = [*QUICK, "training.logging_steps=1", "training.warmup_steps=1", "training.lr_scheduler=cosine",
              "training.learning_rate=0.01", "data.batch_size=8"]
    for extra in (["training.max_steps=4"], ["training.max_steps=8", "training.resume_from_checkpoint=auto"]):
        cfg = load_config(None, tiny(run, *common, *extra))
        tr = build_trainer(cfg)
        tr.fit()  # checkpoints its last step
        tr.close()
    logged = {r["step"]: r["learning_rate"] for r in _metrics(run) if "learning_rate" in r}
    assert sorted(logged) == list(range(1, 9))
    for step in range(5, 9):  # the update of step s (1-based) uses the multiplier of 0-based s - 1
        assert logged[step] == pytest.approx(0.01 * lr_multiplier(step - 1, cfg.training), rel=1e-12), step


def test_save_on_epoch_end_under_accumulation_saves_every_epoch_end(tmp_path):
    # an epoch that ended at a micro-batch before its step's last was not seen: the step ended inside the next epoch
    batch, accum, max_steps = 128, 3, 12
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, f"data.batch_size={batch}",
                                 f"training.gradient_accumulation_steps={accum}", f"training.max_steps={max_steps}",
                                 "training.save_on_epoch_end=true", "training.save_total_limit=0"))
    data = prepare(cfg.data)
    per_epoch = len(data.train) // batch  # micro-batches per epoch (the last partial one is dropped)
    ends = [e * per_epoch for e in range(1, max_steps * accum // per_epoch + 1)]  # micro-batch numbers, 1-based
    assert len(ends) >= 2 and any(m % accum for m in ends)  # the precondition: an epoch ends inside a step
    train(cfg, data)
    got = [s for s, _ in list_checkpoints(cfg.run_dir() / "checkpoints")]
    assert got == sorted({-(-m // accum) for m in ends} | {max_steps})


@pytest.mark.parametrize("early", [False, True], ids=["every-5", "stopped-early"])
def test_samples_per_second_leaves_out_validation_and_checkpoints(tmp_path, monkeypatch, early):
    # the record after an evaluation or a checkpoint counted their time as training time: its throughput
    # was a fraction of the others' (on the bundled data 1,773 against 4,843 windows/s)
    import hftraining.train.trainer as trainer_mod

    clock = [0.0]  # a training step takes 1 s, a validation 100 s, a checkpoint 50 s
    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    @dataclasses.dataclass
    class Window(trainer_mod._LogWindow):
        start: float = dataclasses.field(default_factory=lambda: clock[0])

    monkeypatch.setattr(trainer_mod, "_LogWindow", Window)

    def costs(seconds, fn):
        def wrapped(self, *a, **k):
            clock[0] += seconds
            return fn(self, *a, **k)
        return wrapped

    Trainer = trainer_mod.Trainer
    monkeypatch.setattr(Trainer, "train_step", costs(1.0, Trainer.train_step))
    monkeypatch.setattr(Trainer, "_validate", costs(100.0, Trainer._validate))
    monkeypatch.setattr(Trainer, "save_checkpoint", costs(50.0, Trainer.save_checkpoint))
    batch = 32
    # stopped early at a step that is no logging step: its last record is written after the validation
    extra = (["training.logging_steps=7", "training.save_steps=0", "training.early_stopping_patience=1",
              "training.early_stopping_threshold=1e9"] if early else ["training.logging_steps=5", "training.save_steps=10"])
    cfg = load_config(None, tiny(tmp_path / "run", "evaluation.report=false", f"data.batch_size={batch}",
                                 "training.max_steps=20", "evaluation.eval_steps=5", *extra))
    train(cfg)
    recs = [r for r in _metrics(cfg.run_dir()) if "samples_per_second" in r]
    assert [r["step"] for r in recs] == ([7, 10] if early else [5, 10, 15, 20])
    assert [r["samples_per_second"] for r in recs] == pytest.approx([batch] * len(recs))  # b windows per 1 s step
