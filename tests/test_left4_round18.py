"""``train --seeds N --resume`` compares a finished seed's settings as they acted: a ``null`` periods per year
as the value its backtest inferred, and the validation cadence only where the best step acts on the weights;
a member folder of an ensemble whose ensemble.json cannot be read is said to be read as a bare model folder."""

import json
import logging
import shutil

from hftraining.cli import main
from hftraining.inference.ensemble import member_metrics, member_precision
from conftest import tiny  # noqa: E402


def _args(root, *extra):
    return tiny(root, "model.hidden_size=8", "training.max_steps=2", "evaluation.eval_steps=0",
                "evaluation.report=false", "evaluation.baseline_max_windows=200", *extra)


def _interrupted(root, *extra):
    """A --seeds 2 run stopped before its second seed began: seed-0 finished and scored, no seed-1 or ensemble."""
    assert main(["train", "--seeds", "2", *_args(root, *extra)]) == 0
    shutil.rmtree(root / "seed-1")
    shutil.rmtree(root / "ensemble")


def _backtest(root, k):
    return json.loads((root / f"seed-{k}" / "eval.json").read_text())["backtest"]["settings"]


def test_a_resume_that_gives_the_periods_per_year_seed_0_inferred_is_not_refused(tmp_path, capsys):
    """seed-0 was scored with evaluation.periods_per_year: null, which its backtest inferred as 252 (daily bars);
    a resume naming 252 was refused as if seed-1's Sharpe were annualised otherwise (exit 2). Now it trains
    seed-1, whose figures are annualised alike; a value other than the one inferred is still refused."""
    root = tmp_path / "run"
    _interrupted(root)
    inferred = _backtest(root, 0)
    assert inferred["periods_per_year_from"] != "evaluation.periods_per_year"
    capsys.readouterr()
    other = inferred["periods_per_year"] * 2
    assert main(["train", "--seeds", "2", *_args(root, f"evaluation.periods_per_year={other:g}"), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is finished with evaluation.periods_per_year=" in err[0], err
    assert not (root / "seed-1").exists()
    given = f"evaluation.periods_per_year={inferred['periods_per_year']:g}"
    assert main(["train", "--seeds", "2", *_args(root, given), "--resume"]) == 0
    assert _backtest(root, 1)["periods_per_year"] == inferred["periods_per_year"]
    assert _backtest(root, 1)["periods_per_year_from"] == "evaluation.periods_per_year"
    assert (root / "ensemble" / "seeds.json").exists()


def test_a_resume_that_validates_at_another_cadence_is_refused_only_where_the_best_step_acts(tmp_path, capsys):
    """Without early stopping or load_best_model_at_end the validation cadence changes neither the weights nor
    the test figures, yet a resume changing evaluation.eval_steps was refused (exit 2). Now it trains seed-1, and
    its test figures are those of an uninterrupted run with seed-0's cadence; under early stopping (which the
    cadence decides the step of) it is still refused."""
    root = tmp_path / "run"
    _interrupted(root)
    assert main(["train", "--seeds", "2", *_args(root, "evaluation.eval_steps=1"), "--resume"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "--seeds", "2", *_args(straight)]) == 0
    resumed, whole = (json.loads((r / "seed-1" / "eval.json").read_text()) for r in (root, straight))
    assert resumed["model"] == whole["model"]

    stopping = tmp_path / "stopping"
    patience = ("training.early_stopping_patience=5", "training.max_steps=3")
    _interrupted(stopping, "evaluation.eval_steps=1", *patience)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(stopping, "evaluation.eval_steps=2", *patience), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is finished with evaluation.eval_steps=1" in err[0], err
    assert "would be trained with evaluation.eval_steps=2" in err[0], err


def test_a_member_of_an_ensemble_whose_ensemble_json_is_damaged_is_said_to_be_read_bare(tmp_path, caplog):
    """A member folder of an ensemble recorded bf16 as its precision: forecast in bf16, as that ensemble scored
    it. With ensemble.json cut short the member was read as a bare fp32 folder without a word. Now a warning
    names ensemble.json and the member, once however often the member is asked about."""
    root = tmp_path / "run"
    assert main(["train", "--seeds", "2", *_args(root)]) == 0
    ens = root / "ensemble"
    meta = json.loads((ens / "ensemble.json").read_text())
    meta["precision"] = "bf16"
    (ens / "ensemble.json").write_text(json.dumps(meta))
    member = ens / "members" / "member-0"
    assert member_precision(member) == "bf16"
    text = (ens / "ensemble.json").read_text()
    (ens / "ensemble.json").write_text(text[: len(text) // 2])
    caplog.set_level(logging.WARNING, logger="hftraining")
    assert member_precision(member) == "fp32"
    assert member_metrics(member) is None
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, said
    assert str(ens / "ensemble.json") in said[0] and str(member) in said[0] and "bare model folder" in said[0]
    assert "\n" not in said[0]
