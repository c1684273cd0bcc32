"""A run resumed warms up for the steps its checkpoint did; a learning rate and weight decay whose
decay would flip or zero every decayed weight at each step are refused at load; config values that
YAML reads as another type than the key holds are named with the way to write them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from hftraining.core.config import TrainingConfig, config_from_dict, load_config
from hftraining.core.errors import ConfigError
from hftraining.optim import check_compatibility, schedules
from hftraining.optim.stepper import TrainOptimizer
from hftraining.train import checkpoint as ckpt

from test_settings_round15 import _model, _step  # noqa: E402


def _rates(t: TrainingConfig, steps: int) -> list[float]:
    model = _model()
    opt = TrainOptimizer(model, t)
    rates = []
    for _ in range(steps):
        rates.append(opt.lr)
        _step(opt, model)
    return rates


def _round_half_even(t: TrainingConfig) -> int:
    """The warmup an earlier rounding resolved: Python's round, a half to the even step (0.5 of 5: 2)."""
    return t.warmup_steps if t.warmup_steps is not None else round(t.warmup_ratio * t.max_steps)


def _resumed_rates(tmp_path, monkeypatch, t_before: TrainingConfig, t_after: TrainingConfig, at: int,
                   steps: int) -> tuple[list[float], dict]:
    """Train ``at`` steps with warmup rounded half to even, checkpoint, resume with this version's rounding
    and settings ``t_after``: the rates of the resumed steps, and the checkpoint's trainer state."""
    with monkeypatch.context() as m:  # the version that wrote the checkpoint
        m.setattr(schedules, "warmup_steps", _round_half_even)
        model = _model()
        before = TrainOptimizer(model, t_before)
        for _ in range(at):
            _step(before, model)
        state = {"global_step": at, "scheduler": before.scheduler.state_dict()}
        path = ckpt.save_checkpoint(tmp_path, at, model, before.optimizer, state, {})
    model = _model()
    after = TrainOptimizer(model, t_after)
    raw = ckpt.load_checkpoint(path, model, after.optimizer)
    after.load_schedule(raw["scheduler"])
    rates = []
    for _ in range(steps):
        rates.append(after.lr)
        _step(after, model)
    return rates, json.loads((path / ckpt.STATE_FILE).read_text())


def test_a_resume_warms_up_for_the_steps_its_checkpoint_did_whatever_the_rounding_now(tmp_path, monkeypatch):
    """0.5 of 5 steps warmed up for 2 steps before the rounding took a half up (3 now): a run checkpointed
    at step 1 and resumed went on warming up for 3 steps, its rates neither the old run's nor a new one's.
    The checkpoint holds the warmup it resolved, and the resumed run keeps it."""
    t = TrainingConfig(learning_rate=0.01, warmup_ratio=0.5, max_steps=5, lr_scheduler="linear", optimizer="sgd",
                       weight_decay=0.0)
    with monkeypatch.context() as m:
        m.setattr(schedules, "warmup_steps", _round_half_even)
        uninterrupted = _rates(t, 5)
    assert schedules.warmup_steps(t) == 3 != _round_half_even(t) == 2
    resumed, state = _resumed_rates(tmp_path, monkeypatch, t, t, at=1, steps=4)
    assert resumed == uninterrupted[1:]  # bit for bit
    saved = state["scheduler"]["lr_lambdas"]
    assert saved and all(s["warmup"] == 2 for s in saved)


def test_a_resume_that_changes_the_run_length_resolves_the_warmup_anew(tmp_path, monkeypatch):
    """``training.max_steps`` raised on a resume (to train on) is a new schedule: its warmup is resolved from
    the new settings, as a run started with them would have it, not the saved one."""
    t = TrainingConfig(learning_rate=0.01, warmup_ratio=0.5, max_steps=5, lr_scheduler="linear", optimizer="sgd",
                       weight_decay=0.0)
    longer = dataclasses.replace(t, max_steps=9)
    resumed, _ = _resumed_rates(tmp_path, monkeypatch, t, longer, at=1, steps=4)
    assert resumed == pytest.approx([0.01 * schedules.lr_multiplier(s, longer) for s in range(1, 5)], rel=1e-12)
    assert schedules.warmup_steps(longer) == 5  # 4.5 steps, a half up


def test_a_checkpoint_without_the_resolved_warmup_resumes_as_before(tmp_path):
    """A checkpoint written before the warmup was saved (its ``lr_lambdas`` hold null) resolves it from
    the settings, as this version does."""
    t = TrainingConfig(learning_rate=0.01, warmup_ratio=0.5, max_steps=5, lr_scheduler="linear", optimizer="sgd",
                       weight_decay=0.0)
    model = _model()
    before = TrainOptimizer(model, t)
    _step(before, model)
    sched = before.scheduler.state_dict()
    sched["lr_lambdas"] = [None] * len(sched["lr_lambdas"])
    path = ckpt.save_checkpoint(tmp_path, 1, model, before.optimizer, {"global_step": 1, "scheduler": sched}, {})
    model = _model()
    after = TrainOptimizer(model, t)
    after.load_schedule(ckpt.load_checkpoint(path, model, after.optimizer)["scheduler"])
    assert after.lr == pytest.approx(0.01 * schedules.lr_multiplier(1, t), rel=1e-12)
    assert after.scheduler.lr_lambdas[0].warmup == 3


def _load(training: dict) -> None:
    cfg = config_from_dict({"training": training})
    check_compatibility(cfg.training)


def test_adamw_with_learning_rate_times_decay_of_2_flips_every_weight_at_each_step():
    """Why the product is refused: AdamW multiplies a decayed weight by 1 - lr × wd before its update."""
    w = nn.Parameter(torch.ones(2, 2))
    opt = torch.optim.AdamW([w], lr=0.01, weight_decay=200.0)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(2, 2))


@pytest.mark.parametrize(("optimizer", "lr", "wd", "factor"), [
    ("adamw", 0.01, 100.0, "by 0 "),     # decoupled: 1 - 1, every matrix zeroed at the first step
    ("adamw", 0.01, 200.0, "by -1 "),    # 1 - 2: every sign flipped at each step
    ("lion", 1e-3, 2000.0, "by -1 "),    # pytorch-optimizer's decoupled decay (weight_decouple's default)
    ("lamb", 0.1, 15.0, "by "),         # its trust ratio rescales the rest of the step: the factor as measured
    ("sgd", 0.5, 2.0, "by 0 "),          # coupled, but plain SGD's first step is the same p(1 - lr × wd)
    ("sophia", 0.5, 3.0, "by -0.5 "),    # through the trainer's Hessian refresh step
])
def test_a_decay_that_zeroes_or_flips_the_weights_is_refused_at_load_naming_both_keys(optimizer, lr, wd, factor):
    with pytest.raises(ConfigError) as e:
        _load({"optimizer": optimizer, "learning_rate": lr, "weight_decay": wd})
    msg = str(e.value)
    assert msg.startswith("training.learning_rate/weight_decay: ") and "\n" not in msg
    assert f"{lr:g} x {wd:g} = {lr * wd:g}" in msg and factor in msg and optimizer in msg


@pytest.mark.parametrize(("optimizer", "lr", "wd"), [
    ("adamw", 1e-3, 0.5), ("adamw", 0.3, 3.0), ("lion", 1e-4, 1.0), ("adamw", 3e-4, 0.01),
    ("adam", 0.01, 200.0),  # coupled decay divided by the gradient's scale: no multiplier of the weight
    ("adan", 0.01, 200.0),  # its default decay divides by 1 + lr × wd, which shrinks without a flip
    ("sgd", 0.01, 0.0),
])
def test_a_decay_that_keeps_each_weights_sign_is_accepted(optimizer, lr, wd):
    _load({"optimizer": optimizer, "learning_rate": lr, "weight_decay": wd})


def test_a_decay_that_flips_the_weights_is_one_line_exit_2_before_any_data_are_read(tmp_path, capsys):
    from hftraining.cli import main
    from conftest import tiny

    capsys.readouterr()
    rc = main(["train", *tiny(tmp_path / "run", "training.max_steps=2", "data.data_dir=" + str(tmp_path / "none"),
                              "training.learning_rate=0.01", "training.weight_decay=150")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "training.learning_rate/weight_decay: 0.01 x 150 = 1.5" in err and "by -0.5 " in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "key", "got", "hint", "quoted", "value"), [
    ("data:\n  symbols: [ON, AEM]\n", "data.symbols[0]", "got True", "as a boolean",
     "data:\n  symbols: ['ON', AEM]\n", ["AEM", "ON"]),
    ("output:\n  experiment_name: no\n", "output.experiment_name", "got False", "as a boolean",
     "output:\n  experiment_name: 'no'\n", "no"),
    ("output:\n  experiment_name: 1e3\n", "output.experiment_name", "got 1000.0", "as a number",
     'output:\n  experiment_name: "1e3"\n', "1e3"),
    ("data:\n  symbols: [2330, AEM]\n", "data.symbols[0]", "got 2330", "as a number",
     'data:\n  symbols: ["2330", AEM]\n', ["2330", "AEM"]),
])
def test_text_yaml_reads_as_a_boolean_or_number_is_refused_with_how_to_quote_it(tmp_path, text, key, got, hint,
                                                                                quoted, value):
    """The ticker ON was refused as "expected a string, got True": a value the user never wrote, and no word of
    why. The message says that YAML read it so, and that quotes keep it text."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{key}: expected a string, {got}; YAML reads an unquoted" in msg and "\n" not in msg
    assert f"{hint}: quote the text" in msg
    path.write_text(quoted)
    cfg = load_config(path)
    assert (cfg.data.symbols if key.startswith("data") else cfg.output.experiment_name) == value


@pytest.mark.parametrize(("override", "shown"), [("data.features=log_return_1", "[log_return_1]"),
                                                 ("data.symbols=AAPL", "[AAPL]"), ("model.quantiles=0.5", "[0.5]")])
def test_one_item_given_where_a_list_is_needed_is_refused_with_the_list_to_write(override, shown):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert "expected a list, got" in str(e.value) and f"one item is written as a list too: {shown}" in str(e.value)
    assert load_config(None, [f"{override.split('=')[0]}={shown}"]) is not None


def test_a_config_file_that_is_a_list_names_what_it_holds(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- training:\n    max_steps: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: expected a mapping of sections at the top level")
    assert "got list [{'training': {'max_steps': 5}}]" in str(e.value)


def test_the_default_rate_and_decay_keep_every_optimizers_weights():
    """The check leaves the default pair unprobed (``hftraining list optimizers`` builds every name): with
    it, no optimizer's decay comes near zeroing a weight."""
    from hftraining.optim import decay_factor, optimizer_names

    factors = {}
    for name in optimizer_names():
        try:
            factors[name] = decay_factor(TrainingConfig(optimizer=name))
        except ConfigError:  # an optional package missing (demo)
            continue
    assert len(factors) > 100 and all(f is None or f > 0.9 for f in factors.values()), factors
