"""Learning-rate schedules: warmup, floor at the last update, restarts, counting optimizer steps."""

from __future__ import annotations

import pytest
import torch

from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import build_scheduler, check_compatibility, lr_multiplier, warmup_steps

KINDS = ["constant", "linear", "cosine", "cosine_restarts", "wsd"]


def cfg(kind, **kw):
    # num_cycles only where it is read: another schedule refuses a value away from the default
    base = dict(lr_scheduler=kind, max_steps=100, warmup_steps=10, min_lr_ratio=0.1,
                num_cycles=3 if kind == "cosine_restarts" else 1, decay_ratio=0.2)
    base.update(kw)
    return TrainingConfig(**base)


@pytest.mark.parametrize("kind", KINDS)
def test_linear_warmup_then_peak(kind):
    t = cfg(kind)
    assert lr_multiplier(0, t) == pytest.approx(1 / 11)  # never 0: the first update moves
    steps = [lr_multiplier(s, t) for s in range(10)]
    assert all(b - a == pytest.approx(1 / 11) for a, b in zip(steps, steps[1:]))
    assert lr_multiplier(10, t) == 1.0


@pytest.mark.parametrize("kind", ["linear", "cosine", "cosine_restarts", "wsd"])
def test_floor_reached_at_last_update_and_kept(kind):
    t = cfg(kind)
    assert lr_multiplier(t.max_steps - 1, t) == pytest.approx(t.min_lr_ratio)
    assert lr_multiplier(t.max_steps + 50, t) == pytest.approx(t.min_lr_ratio)
    values = [lr_multiplier(s, t) for s in range(warmup_steps(t), t.max_steps)]
    assert min(values) == pytest.approx(t.min_lr_ratio)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_decay_is_monotone(kind):
    t = cfg(kind)
    values = [lr_multiplier(s, t) for s in range(10, 100)]
    assert all(b < a for a, b in zip(values, values[1:]))


def test_constant_stays_at_peak():
    t = cfg("constant")
    assert {lr_multiplier(s, t) for s in range(10, 200)} == {1.0}


def test_cosine_restarts_restart_num_cycles_times():
    t = cfg("cosine_restarts", max_steps=102, warmup_steps=1, num_cycles=4)  # 100 decay intervals
    values = [lr_multiplier(s, t) for s in range(1, t.max_steps)]
    rises = [i + 1 for i, (a, b) in enumerate(zip(values, values[1:])) if b > a]
    assert len(rises) == t.num_cycles - 1
    assert rises == [25, 50, 75]
    assert all(values[i] == 1.0 for i in rises)  # each restart returns to the peak
    assert all(values[i - 1] < 0.2 for i in rises)  # after decaying close to the floor


def test_wsd_flat_then_linear_decay():
    t = cfg("wsd", warmup_steps=0, max_steps=101, decay_ratio=0.2)
    values = [lr_multiplier(s, t) for s in range(101)]
    assert set(values[:81]) == {1.0}
    diffs = [a - b for a, b in zip(values[80:], values[81:])]
    assert all(d == pytest.approx(0.9 / 20) for d in diffs)


def test_warmup_ratio():
    assert warmup_steps(TrainingConfig(max_steps=200, warmup_ratio=0.05)) == 10
    assert warmup_steps(TrainingConfig(max_steps=200, warmup_steps=3)) == 3


def test_scheduler_counts_optimizer_steps():
    p = torch.nn.Parameter(torch.zeros(2))
    t = cfg("cosine", learning_rate=0.5)
    opt = torch.optim.SGD([p], lr=t.learning_rate)
    sched = build_scheduler(opt, t)
    seen = []
    for _ in range(t.max_steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([t.learning_rate * lr_multiplier(s, t) for s in range(t.max_steps)])


@pytest.mark.parametrize(
    "kw,key",
    [(dict(lr_scheduler="cosine_restarts", num_cycles=0), "training.num_cycles"),
     (dict(lr_scheduler="wsd", decay_ratio=0.0), "training.decay_ratio"),
     (dict(lr_scheduler="wsd", decay_ratio=1.5), "training.decay_ratio")],
)
def test_bad_schedule_values_are_config_errors(kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_compatibility(TrainingConfig(**kw))
