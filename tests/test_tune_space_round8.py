"""hftraining tune refuses, before the study or --out is created, a search space that can draw a value
(or a combination of values) the config, the trainer's checks or the model's constructor refuse: a trial
that drew it stopped the tune, perhaps after hours of others, with an error that did not name the search
space. A space whose every drawable combination trains is not refused for a value the config's own
setting of another searched key would refuse."""

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402

TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 2, "logging_steps": 1, "save_steps": 0},
    "evaluation": {"eval_steps": 1, "max_eval_batches": 1},
    "output": {"experiment_name": "space", "tensorboard": False},
    "tune": {"seed": 0, "sampler": "random", "pruner": "none"},
}


def _tune(tmp_path, capsys, space, model=None):
    """Run ``tune`` on ``space`` with a SQLite storage of its own folder → (exit code, stderr lines, --out, db)."""
    cfg = dict(TINY, model={**TINY["model"], **(model or {})}, tune={**TINY["tune"], "search_space": space})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "db").mkdir()
    db = tmp_path / "db" / "t.db"
    out = tmp_path / "out"
    rc = main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "3", "--study", "s", "--out", str(out),
               "--storage", f"sqlite:///{db}"])
    return rc, capsys.readouterr().err.splitlines(), out, db


def _refused_up_front(rc, err, out, db):
    assert rc == 2 and len(err) == 1, err
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert not db.exists() or "s" not in optuna.get_all_study_names(f"sqlite:///{db}")


@pytest.mark.parametrize("space, start", [
    # wholly invalid: the first trial stopped the tune, after the study and --out were made
    ({"model.num_layers": {"type": "int", "low": -5, "high": -1}},
     "hftraining: error: tune.search_space.model.num_layers: low -5 fails: model.num_layers: must be > 0, got -5"),
    # partly invalid: trials drawing a valid value trained first, then one above 1 stopped the tune
    ({"model.dropout": {"type": "float", "low": 0.5, "high": 1.5}},
     "hftraining: error: tune.search_space.model.dropout: high 1.5 fails: model.dropout: must be in [0, 1), got 1.5"),
    # Optuna's grid ends at 1.0 (not the given high), which the config refuses
    ({"model.dropout": {"type": "float", "low": 0.1, "high": 1.05, "step": 0.1}},
     "hftraining: error: tune.search_space.model.dropout: high 1.0 fails: model.dropout: must be in [0, 1), got 1.0"),
    ({"data.features": {"choices": [["log_return_1"], ["log_return_1", "no_such_feature"]]}},
     'hftraining: error: tune.search_space.data.features: choice ["log_return_1", "no_such_feature"] fails: '
     "data.features: unknown feature 'no_such_feature'"),
])
def test_a_drawable_value_the_config_refuses_stops_the_tune_before_the_study(tmp_path, capsys, space, start):
    rc, err, out, db = _tune(tmp_path, capsys, space)
    _refused_up_front(rc, err, out, db)
    assert err[0].startswith(start), err
    fix = "narrow the range" if "type" in next(iter(space.values())) else "remove the choice"
    assert err[0].endswith(f"a trial that draws it would stop the tune, so {fix}"), err


def test_a_value_the_models_constructor_refuses_stops_the_tune_before_the_study(tmp_path, capsys):
    """model.season_length past the window is refused by the model's constructor, not by the config."""
    rc, err, out, db = _tune(tmp_path, capsys, {"model.season_length": {"type": "int", "low": 2, "high": 40}},
                             model={"type": "seasonal_naive"})
    _refused_up_front(rc, err, out, db)
    assert err[0].startswith("hftraining: error: tune.search_space.model.season_length: high 40 fails: "
                             "model.season_length: 40 is longer than data.sequence_length 16"), err


def test_a_value_that_fails_with_every_value_of_another_key_is_named(tmp_path, capsys):
    rc, err, out, db = _tune(tmp_path, capsys, {"model.hidden_size": {"choices": [12, 24]},
                                                "model.num_heads": {"choices": [3, 5]}})
    _refused_up_front(rc, err, out, db)
    assert err[0].startswith("hftraining: error: tune.search_space.model.num_heads: choice 5 fails whatever the "
                             "other searched keys draw: model.num_heads: 5 does not divide model.hidden_size 12"), err


def test_a_combination_that_fails_is_named_with_its_values(tmp_path, capsys):
    """Each value trains with some value of the other key; hidden_size 8 with 3 heads does not, and a trial
    that drew them stopped the tune."""
    rc, err, out, db = _tune(tmp_path, capsys, {"model.hidden_size": {"choices": [8, 12]},
                                                "model.num_heads": {"choices": [2, 3]}})
    _refused_up_front(rc, err, out, db)
    assert err[0].startswith("hftraining: error: tune.search_space: a trial that draws model.hidden_size=8, "
                             "model.num_heads=3 fails: model.num_heads: 3 does not divide model.hidden_size 8"), err


def test_values_refused_only_with_the_configs_own_value_of_a_searched_key_are_kept(tmp_path):
    """3 heads do not divide the config's hidden_size 8, but every trial draws hidden_size 12 or 24,
    which they divide: nothing a trial can draw fails."""
    cfg = dict(TINY, tune={**TINY["tune"], "search_space": {}})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    space = tune.parse_space({"model.hidden_size": {"choices": [12, 24]}, "model.num_heads": {"choices": [3, 6]},
                              "model.num_layers": {"type": "int", "low": 1, "high": 3}})
    tune.check_space_values(str(tmp_path / "t.yaml"), [], space, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.model\.num_heads: choice 5 fails whatever"):
        tune.check_space_values(str(tmp_path / "t.yaml"), [], {**space, "model.num_heads": {"choices": [3, 5]}},
                                tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_large_space_is_checked_on_a_sample_that_keeps_each_value(tmp_path):
    """Past MAX_SPACE_CHECKS combinations every drawable value is still tried (with the others at their
    lows and at their highs): the bad high of the last key is found."""
    space = tune.parse_space({
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "training.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
        "model.num_layers": {"type": "int", "low": 1, "high": 3},
        "training.warmup_steps": {"type": "int", "low": 0, "high": 10},
        "model.hidden_size": {"choices": [8, 16, 32]},
        "model.dropout": {"type": "float", "low": 0.0, "high": 1.0},
    })
    assert len(space) and 3 ** 6 > tune.MAX_SPACE_CHECKS
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.model\.dropout: high 1\.0 fails whatever the other"):
        tune.check_space_values(None, ["model.num_heads=2", "output.tensorboard=false"], space, tmp_path / "out")
