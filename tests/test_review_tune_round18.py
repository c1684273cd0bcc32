"""hftraining tune, what the report of a study says a trial drew: a stepped float is written as the decimal point
of the grid the trial drew it from, and a value that is not a point of the search space's grid (a failed trial's
draw from a range the space has moved since) is written as the trial drew and trained it, not moved onto the
new grid or clamped to its end; a study name holding a line break or a control character writes a best_config.yaml
that train reads."""

import copy
import csv

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_audit import TINY  # noqa: E402

NEW = {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1}}


def test_a_failed_trial_from_a_moved_range_is_reported_as_it_drew(tmp_path, capsys):
    """A failed trial holds no score, so a study whose range moved is continued (and reported) with the new one;
    its trials drew from the old. trials.csv and the printed table wrote a draw of 0.8 from 0..0.9 as 0.5 (the new
    range's end) and a draw of 0.35 on a 0.05 grid as 0.4 (the new grid's nearest point): values the trials never
    trained. They hold 0.8 and 0.35; a binary draw of the old grid is still its decimal point."""
    out = tmp_path / "o"
    out.mkdir()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
    study = optuna.create_study(study_name="u", storage=storage)
    fail = optuna.trial.TrialState.FAIL
    for value, step in ((0.8, 0.1), (0.35, 0.05), (0.1 + 3 * 0.05, 0.05)):  # the last: 0.25000000000000006
        dist = optuna.distributions.FloatDistribution(0.0, 0.9, step=step)
        study.add_trial(optuna.trial.create_trial(state=fail, params={"model.dropout": value},
                                                  distributions={"model.dropout": dist}))
    cfg = copy.deepcopy(TINY)
    cfg["tune"]["search_space"] = NEW
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "0", "--out", str(out), "--study", "u"]) == 0, \
        capsys.readouterr().err
    printed = capsys.readouterr().out.splitlines()
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        assert [r["model.dropout"] for r in csv.DictReader(f)] == ["0.8", "0.35", "0.25"]
    rows = [line.split() for line in printed if line.split()[:2] in (["0", "fail"], ["1", "fail"], ["2", "fail"])]
    assert [r[-1] for r in rows] == ["0.8", "0.35", "0.25"]


@pytest.mark.parametrize("spec, grid", [
    ({"type": "float", "low": 0.1, "high": 0.35, "step": 0.1}, [0.1, 0.2, 0.3]),  # high off the grid: its top 0.3
    ({"type": "float", "low": -0.5, "high": 0.5, "step": 0.1}, [round(-0.5 + k / 10, 1) for k in range(11)]),
    ({"type": "float", "low": 0.0, "high": 2e-6, "step": 1e-7}, [k / 1e7 for k in range(21)]),
])
def test_a_value_off_the_grid_of_the_space_is_kept_and_its_points_are_decimal(spec, grid):
    """Every draw Optuna makes from the range is read back as its decimal grid point; a value between two points,
    or beyond either end, is not a draw of this range and is kept as it is (it was snapped to the nearest point
    and clamped to the ends: 0.95 of 0.1..0.35 read 0.3, -0.9 of -0.5..0.5 read -0.5)."""
    space = tune.parse_space({"model.dropout": spec})
    step, low, high = spec["step"], spec["low"], grid[-1]
    for off in (low + step / 2, low + step * 1.3, high + step, high + step / 2 * 1.01, low - step, low - 3 * step):
        assert tune._params_to_values({"model.dropout": off}, space) == {"model.dropout": off}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        values = tune.suggest(trial, space)
        study.tell(trial, 0.0)
        assert tune._params_to_values(trial.params, space, trial.distributions) == values
        assert tune._params_to_values(trial.params, space) == values
        seen.add(values["model.dropout"])
    assert seen == set(grid)


@pytest.mark.parametrize("name", ["a\nb: 1", "bell\x07ring", "cr\rstop: 2"])
def test_a_study_name_with_a_line_break_or_control_character_writes_a_best_config_train_reads(
        tmp_path, capsys, monkeypatch, name):
    """The header of best_config.yaml names the study and the path to train: a line break in the name (or --out)
    put the rest of that comment in the YAML, and a control character made the file unreadable, so
    `train --config best_config.yaml` refused it (not valid YAML) after every trial had run. Each line of the header
    is a comment, a character YAML cannot hold its escape, and the config names its run <study>-best."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["tune", "--config", str(path), "--trials", "1", "--study", name]) == 0, capsys.readouterr().err
    best = tmp_path / "runs" / f"tune-{name}" / "best_config.yaml"
    text = best.read_text(encoding="utf-8")
    assert all(line.startswith("# ") for line in text.split("\n")[:3]), text
    assert text.startswith("# best trial 0 of study ")
    assert load_config(best).output.experiment_name == f"{name}-best"
