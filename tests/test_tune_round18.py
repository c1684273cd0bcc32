"""hftraining tune, what a search space and a study name promise: a study name that no run folder of runs/ can
take is one line before any trial (its best_config.yaml could not be trained); a searched warmup ratio that the
config's warmup_steps outranks is refused, naming both keys; a stepped float range trains and records the values
of its decimal grid; a range whose step exceeds it is refused instead of drawing its low in every trial."""

import copy
import csv
import json
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.optim.schedules import warmup_steps  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_audit import TINY  # noqa: E402

RATIO = {"training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.5}}


def _config(tmp_path: Path, **sections) -> Path:
    cfg = copy.deepcopy(TINY)
    for section, values in sections.items():
        cfg[section].update(values)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("where, name", [("--study", "/tmp/abs-study"), ("--study", "a/../../up"),
                                         ("tune.study_name", "../up"), ("--study", "nul\0name")])
def test_a_study_name_no_run_folder_can_take_is_one_line_before_any_trial(tmp_path, capsys, monkeypatch, where, name):
    """The study's best_config.yaml names its run ``output.experiment_name: <study>-best``, which train refuses when
    the name is absolute or climbs with ``..`` (and the default --out runs/tune-<study> climbed out of runs/): the
    tune ran every trial, then wrote a best config that could not be trained; a NUL in the name was
    refused as output.output_dir, a key the user did not give.
    Each is now one line naming where the name came from, exit 2, before any trial or folder."""
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path, tune={"study_name": name} if where == "tune.study_name" else {})
    args = ["tune", "--config", str(path), "--trials", "1"] + (["--study", name] if where == "--study" else [])
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"hftraining: error: {where}: "), err
    assert not (tmp_path / "runs").exists() and not Path("/tmp/abs-study-best").exists()


def test_a_study_name_inside_runs_trains_its_best_config(tmp_path, capsys, monkeypatch):
    """A name with a folder inside runs/ is kept: its best config names a run folder train accepts."""
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path)
    assert main(["tune", "--config", str(path), "--trials", "1", "--study", "group/s"]) == 0, capsys.readouterr().err
    best = tmp_path / "runs" / "tune-group" / "s" / "best_config.yaml"
    assert load_config(best).output.experiment_name == "group/s-best"


def test_a_searched_warmup_ratio_outranked_by_warmup_steps_is_refused(tmp_path):
    """training.warmup_steps outranks training.warmup_ratio: a tune that searched the ratio beside a step count
    trained one warmup in every trial and ranked the noise. It is refused before any trial, naming both keys;
    a warmup_steps search that may draw null (the ratio then sets the warmup) is a search."""
    path = _config(tmp_path, training={"warmup_steps": 2}, tune={"search_space": RATIO})
    drawn = [warmup_steps(load_config(path, [f"training.warmup_ratio={r}"]).training) for r in (0.0, 0.25, 0.5)]
    assert drawn == [2, 2, 2]  # what every trial trained
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.training\.warmup_ratio: .*training\.warmup_steps"):
        tune.run_tune(str(path), 1, out=out)
    assert not out.exists()
    steps = {"training.warmup_steps": {"type": "int", "low": 1, "high": 3}}
    path = _config(tmp_path, tune={"search_space": {**RATIO, **steps}})
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.training\.warmup_ratio: .*training\.warmup_steps"):
        tune.run_tune(str(path), 1, out=out)
    cfg = load_config(path)
    tune.check_searched_settings(cfg, tune.parse_space({**RATIO, "training.warmup_steps": {"choices": [None, 2]}}))
    tune.check_searched_settings(cfg, tune.parse_space(RATIO))  # warmup_steps null: the ratio sets the warmup


def test_a_stepped_float_range_draws_its_decimal_grid():
    """Optuna computes a stepped draw as low + k·step in binary (0.1 + 0.2 = 0.30000000000000004): trials trained
    values the search space does not hold. Each draw is now the decimal grid point."""
    space = tune.parse_space({"model.dropout": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.1},
                              "training.learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "step": 0.001}})
    grids = {"model.dropout": {k / 10 for k in range(10)}, "training.learning_rate": {k / 1000 for k in range(1, 11)}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {k: set() for k in grids}
    for _ in range(200):
        trial = study.ask()
        values = tune.suggest(trial, space)
        study.tell(trial, 0.0)
        assert tune._params_to_values(trial.params, space) == values
        for k, v in values.items():
            seen[k].add(v)
    assert seen == grids


def test_a_stepped_float_is_recorded_as_the_value_asked_for(tmp_path, capsys):
    """A trial drawing 0.1 + 1·0.2 trained model.dropout 0.30000000000000004, and trials.csv, best.json and
    best_config.yaml held that value, which the search space does not. They hold 0.3, as the trial trained."""
    space = {"model.dropout": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.2}}
    path = _config(tmp_path, tune={"search_space": space, "seed": 0})  # trial 0 draws the middle of the grid
    out = tmp_path / "o"
    assert main(["tune", "--config", str(path), "--trials", "1", "--out", str(out)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.count("model.dropout=0.3\n") == 1
    trained = json.loads((out / "trial-0000" / "config.json").read_text())["model"]["dropout"]
    assert trained == 0.3
    assert yaml.safe_load((out / "best_config.yaml").read_text())["model"]["dropout"] == 0.3
    assert json.loads((out / "best.json").read_text())["params"] == {"model.dropout": 0.3}
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        assert [r["model.dropout"] for r in csv.DictReader(f)] == ["0.3"]


@pytest.mark.parametrize("spec", [{"type": "float", "low": 0.1, "high": 0.25, "step": 0.2},
                                  {"type": "int", "low": 1, "high": 2, "step": 5}])
def test_a_range_its_step_exceeds_is_refused(spec):
    """Optuna moves a range's high down onto the grid low + k·step (its warning hidden): a step larger than the
    range left only low, and every trial drew it. It is refused, naming the step."""
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.model\.\w+\.step: .* holds only low"):
        tune.parse_space({"model.dropout" if spec["type"] == "float" else "model.num_layers": spec})
