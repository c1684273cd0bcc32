"""Learning-rate schedule lengths: a warmup share rounded a half up as written, and cosine restarts that
have room for every cycle they promise (hand-computed references over torch's LambdaLR)."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import build_scheduler, check_compatibility, lr_multiplier, warmup_steps


def _rates(t: TrainingConfig) -> list[float]:
    """The rate of every optimizer step of ``t`` as torch's scheduler sets it (peak 1)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, t)
    out = []
    for _ in range(t.max_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("ratio,steps,warm", [(0.35, 90, 32), (0.29, 50, 15), (0.35, 170, 60), (0.5, 5, 3)])
def test_a_warmup_share_of_an_exact_half_step_rounds_up(ratio, steps, warm):
    """0.35 of 90 steps is 31.5 steps, a half up 32 (the README's rule); the float product 31.499999999999996
    warmed up for 31, so the peak came a step early. The run's rates: 1/33 ... 32/33, then the peak at step 32."""
    t = TrainingConfig(max_steps=steps, warmup_ratio=ratio, lr_scheduler="linear")
    assert warmup_steps(t) == warm
    rates = _rates(t)
    assert rates[:warm] == pytest.approx([(s + 1) / (warm + 1) for s in range(warm)])
    assert rates[warm - 1] < 1.0 and rates[warm] == 1.0
    # then linear down to the floor at the last update, over steps warm .. steps - 1
    span = steps - 1 - warm
    assert rates[warm:] == pytest.approx([1 - 0.9 * (s - warm) / span for s in range(warm, steps)])


def test_a_warmup_share_whose_product_is_no_half_is_rounded_as_before():
    for ratio, steps, warm in [(0.05, 1000, 50), (0.05, 90, 5), (0.1, 7, 1), (0.3, 10, 3), (0.05, 10, 1)]:
        assert warmup_steps(TrainingConfig(max_steps=steps, warmup_ratio=ratio)) == warm, (ratio, steps)


@pytest.mark.parametrize("steps,warm,cycles", [(11, 0, 10), (20, 1, 12), (3, 0, 2), (12, 2, 5)])
def test_more_cosine_cycles_than_the_steps_hold_are_refused_naming_num_cycles(steps, warm, cycles):
    """10 cycles over the 10 steps before the floor stayed at the peak to the last step (no restart at all);
    12 over 18 sampled the cosine at a stride of more than a cycle and rose as often as it fell. Both
    trained on without a word."""
    t = TrainingConfig(lr_scheduler="cosine_restarts", max_steps=steps, warmup_steps=warm, num_cycles=cycles)
    with pytest.raises(ConfigError, match=r"training\.num_cycles") as e:
        check_compatibility(t)
    assert f"at most {max((steps - 1 - warm) // 2, 1)}" in str(e.value)
    with pytest.raises(ConfigError, match=r"training\.num_cycles"):
        build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), t)
    # the max_steps it names is the fewest that hold the cycles
    enough = int(re.search(r"max_steps to at least (\d+)", str(e.value)).group(1))
    check_compatibility(dataclasses.replace(t, max_steps=enough))
    with pytest.raises(ConfigError, match=r"training\.num_cycles"):
        check_compatibility(dataclasses.replace(t, max_steps=enough - 1))


def test_the_steps_named_for_the_cycles_count_a_warmup_share_that_grows_with_them():
    """Under warmup_ratio the warmup grows with max_steps: 12 cycles with half the run warming up need 50 steps
    (25 of warmup, 24 for the cycles, the last at the floor), not 20's warmup of 10 plus 25."""
    t = TrainingConfig(lr_scheduler="cosine_restarts", max_steps=20, warmup_ratio=0.5, num_cycles=12)
    with pytest.raises(ConfigError, match=r"raise training\.max_steps to at least 50$"):
        check_compatibility(t)
    check_compatibility(dataclasses.replace(t, max_steps=50))


@pytest.mark.parametrize("steps,warm,cycles", [(21, 0, 10), (20, 1, 9), (102, 1, 4), (9, 2, 3)])
def test_cosine_cycles_with_room_restart_num_cycles_times_each_decaying(steps, warm, cycles):
    """At the bound (2 steps a cycle) and above it: num_cycles - 1 restarts, each back at the peak, the rate
    falling within each cycle, the floor at the last update; every rate is the hand-computed cosine."""
    t = TrainingConfig(lr_scheduler="cosine_restarts", max_steps=steps, warmup_steps=warm, num_cycles=cycles,
                       min_lr_ratio=0.1)
    check_compatibility(t)
    rates = _rates(t)
    span = steps - 1 - warm
    want = [(s + 1) / (warm + 1) for s in range(warm)]
    for pos in range(span + 1):
        phase = 1.0 if pos == span else (pos * cycles / span) % 1.0
        want.append(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * phase)))
    assert rates == pytest.approx(want)
    decay = rates[warm:]
    rises = [i for i in range(1, len(decay)) if decay[i] > decay[i - 1]]
    assert len(rises) == cycles - 1
    assert all(decay[i] == pytest.approx(1.0) for i in rises)
    assert decay[-1] == pytest.approx(0.1)


def test_one_cosine_cycle_and_other_schedules_keep_short_runs():
    """A single cycle is cosine itself: a 2-step run is fine, as under every other schedule."""
    for kind in ("cosine_restarts", "cosine", "linear", "wsd", "constant"):
        t = TrainingConfig(lr_scheduler=kind, max_steps=2, warmup_steps=0,
                           min_lr_ratio=TrainingConfig().min_lr_ratio if kind == "constant" else 0.1)
        check_compatibility(t)
        assert [lr_multiplier(s, t) for s in range(2)][0] == 1.0


def test_the_cli_refuses_too_many_cycles_in_one_line_before_reading_data(tmp_path, capsys):
    code = main(["train", *tiny(tmp_path / "run", "training.lr_scheduler=cosine_restarts", "training.num_cycles=10",
                                "training.max_steps=11", "training.warmup_steps=0",
                                f"data.data_dir={tmp_path / 'nowhere'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.num_cycles" in err and "nowhere" not in err, err
    assert not (tmp_path / "run").exists()
