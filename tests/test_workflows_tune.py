"""hftraining tune: a 3-trial smoke run, the search space checks, no test-split scoring."""

import json

import pytest
import yaml

pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.workflows.tune import parse_space  # noqa: E402

TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 6, "logging_steps": 3, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
    "output": {"experiment_name": "smoke", "tensorboard": False},
    "tune": {"seed": 0, "pruner_startup_trials": 1, "search_space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.pooling": {"choices": ["last", "mean"]},
        "model.num_layers": {"type": "int", "low": 1, "high": 2},
    }},
}


def test_three_trial_smoke(tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    rc = main(["tune", "--config", str(cfg_file), "--trials", "3", "--storage", db, "--study", "s1",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "study s1: 3 trial(s)" in printed and "best: trial" in printed
    study = optuna.load_study(study_name="s1", storage=db)
    trials = study.get_trials()
    assert len(trials) == 3
    # every trial reported its validation evaluations (what the pruner sees) at steps 2, 4, ...
    for t in trials:
        assert t.intermediate_values and min(t.intermediate_values) == 2
        assert 1e-4 <= t.params["training.learning_rate"] <= 1e-2 and t.params["model.pooling"] in ("last", "mean")
    best = load_config(tmp_path / "out" / "best_config.yaml")
    assert best.training.learning_rate == pytest.approx(study.best_params["training.learning_rate"])
    assert best.model.num_layers == study.best_params["model.num_layers"]
    assert json.loads((tmp_path / "out" / "best.json").read_text())["value"] == pytest.approx(study.best_value)
    assert (tmp_path / "out" / "importance.png").stat().st_size > 1000
    assert (tmp_path / "out" / "trials.csv").read_text().count("\n") == 4
    # trials never score the test split: no eval.json, no final model
    for k in range(3):
        run = tmp_path / "out" / f"trial-{k:04d}"
        assert (run / "metrics.jsonl").exists() and not (run / "eval.json").exists()


@pytest.mark.parametrize("space, words", [
    ({}, ["tune.search_space", "empty"]),
    ({"model.hiden_size": {"type": "int", "low": 1, "high": 2}}, ["tune.search_space.model.hiden_size", "unknown key"]),
    ({"output.output_dir": {"choices": ["a"]}}, ["tune.search_space.output.output_dir", "cannot be searched"]),
    ({"training.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, ["learning_rate.low", "log"]),
    ({"model.num_layers": {"type": "float", "low": 1, "high": 2}}, ["model.num_layers.type"]),
    ({"model.pooling": {"choices": ["last", "max"]}}, ["model.pooling.choices[1]"]),
    ({"training.max_steps": {"type": "int", "low": 5, "high": 5}}, ["training.max_steps", "low must be < high"]),
])
def test_bad_search_space_names_the_key(space, words):
    with pytest.raises(ConfigError) as e:
        parse_space(space)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_bad_space_in_the_cli_is_exit_2(tmp_path, capsys):
    cfg = dict(TINY, tune={"search_space": {"model.widthh": {"choices": [1]}}})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tune.search_space.model.widthh" in err and err.count("\n") == 1
