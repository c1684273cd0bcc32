"""How a config file and ``section.key=value`` overrides are read: YAML's surprising scalars, keys
given twice, NaN, empty values and empty sections."""

import json

import pytest
import torch

from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError


def _yaml(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_numbers_are_read_as_they_look(tmp_path):
    """1e-3 is a number even where the key takes any value; 0700 is never the octal 448, 1:30 never 90."""
    cfg = load_config(_yaml(tmp_path, "training:\n  max_steps: 1e3\n  optimizer: sgd\n"
                                      "  optimizer_kwargs: {momentum: 0.9, dampening: 1e-1}\n"
                                      "data:\n  symbols: [0700, 0005]\n"
                                      "tune:\n  search_space:\n    training.learning_rate: {type: float, low: 1e-4, high: 1e-2}\n"))
    assert cfg.training.max_steps == 1000
    assert cfg.training.optimizer_kwargs == {"momentum": 0.9, "dampening": 0.1}
    assert cfg.data.symbols == ["0005", "0700"]  # tickers with leading zeros (Hong Kong), in name order
    space = cfg.tune.search_space["training.learning_rate"]
    assert (space["low"], space["high"]) == (1e-4, 1e-2)
    for text, key in (("training:\n  seed: 0042\n", "training.seed"), ("training:\n  save_steps: 1:30\n", "training.save_steps")):
        with pytest.raises(ConfigError, match=key):  # was 34 and 90, silently
            load_config(_yaml(tmp_path, text))
    with pytest.raises(ConfigError, match="training.seed"):
        load_config(None, ["training.seed=0700"])


def test_optimizer_kwargs_written_in_yaml_train(tmp_path):
    """A keyword written as 1e-1 reaches the optimizer as a number (it was the text '1e-1': a TypeError at step 2)."""
    cfg = load_config(_yaml(tmp_path, "training:\n  optimizer: sgd\n  optimizer_kwargs: {momentum: 0.9, dampening: 1e-1}\n"))
    from hftraining.optim import build_optimizer

    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(model, cfg.training)
    for _ in range(2):
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
    assert all(g["dampening"] == 0.1 for g in opt.param_groups)


@pytest.mark.parametrize("text, key", [
    ("training:\n  learning_rate: 1e-3\n  max_steps: 5\n  learning_rate: 1e-4\n", "training.learning_rate"),
    ("training:\n  learning_rate: 1e-3\ndata:\n  embargo: 2\ntraining:\n  max_steps: 7\n", "training"),
    ("data:\n  split_dates: {val: 2024-07-01, test: 2025-07-01, val: 2024-01-01}\n", "data.split_dates.val"),
])
def test_yaml_key_given_twice_is_an_error(tmp_path, text, key):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and f" {key} is given twice" in msg


@pytest.mark.parametrize("raw, key", [
    ('{"training": {"learning_rate": 0.001, "learning_rate": 0.0001}}', "learning_rate"),
    ('{"training": {"learning_rate": 0.001}, "training": {"max_steps": 7}}', "training"),
])
def test_json_key_given_twice_is_an_error(tmp_path, raw, key):
    path = _yaml(tmp_path, raw, "c.json")
    with pytest.raises(ConfigError, match=f"{key} is given twice"):
        load_config(path)
    json.loads(raw)  # plain JSON keeps the last one without a word


def test_yaml_merge_key_may_be_overridden(tmp_path):
    """``<<: *base`` then a key of base is YAML's way to override it, not a key given twice."""
    cfg = load_config(_yaml(tmp_path, "model: &m {hidden_size: 32, num_heads: 4, num_layers: 1}\n"
                                      "training:\n  max_steps: 3\n  optimizer_kwargs:\n    <<: {nesterov: false, momentum: 0.5}\n"
                                      "    momentum: 0.9\n"))
    assert cfg.training.optimizer_kwargs == {"nesterov": False, "momentum": 0.9}


@pytest.mark.parametrize("override", ["training.learning_rate=nan", "training.weight_decay=.nan",
                                      "evaluation.periods_per_year=nan", "data.jump_threshold=NaN",
                                      "model.loss_weights={mse: .nan}"])
def test_nan_is_not_a_number_a_key_takes(override):
    """NaN passed every "must be > 0" check (a NaN learning rate, periods_per_year: a NaN Sharpe)."""
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


def test_empty_override_value_is_an_error():
    """``data.data_dir=$DATA`` with DATA unset trained on the bundled sample data instead."""
    with pytest.raises(ConfigError, match=r"data\.data_dir=null"):
        load_config(None, ["data.data_dir="])
    assert load_config(None, ["data.data_dir=null"]).data.data_dir is None


def test_override_into_an_empty_section(tmp_path):
    """``training:`` with every key commented out is an empty section, with or without an override."""
    path = _yaml(tmp_path, "training:\n#  max_steps: 7\n")
    assert load_config(path).training.max_steps == 1000
    assert load_config(path, ["training.max_steps=5"]).training.max_steps == 5


@pytest.mark.parametrize("override", ["output.experiment_name=run #2", "data.data_dir=/data/exp #3"])
def test_a_comment_in_an_override_is_not_dropped_silently(override):
    """``run #2`` was the run ``run``: YAML drops `` #...`` as a comment."""
    with pytest.raises(ConfigError, match="would be dropped as a YAML comment"):
        load_config(None, [override])
    key, _, value = override.partition("=")
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [f'{key}="{value}"']), section), name) == value


def test_a_config_written_by_tune_loads_back_as_written(tmp_path):
    """best_config.yaml is dumped by PyYAML (YAML 1.1), which leaves text such as 1E5 or 0o17 unquoted;
    the config loader reads YAML 1.2 numbers, so the dumper quotes them: a written config loads back."""
    import yaml

    from hftraining.core.config import ConfigDumper, load_config

    texts = ["1E5", "2e3", "1e10", "0700", "0o17", "1:30", "on", "null"]
    cfg = {"data": {"symbols": texts}, "training": {"learning_rate": 1e-5, "max_steps": 3}}
    path = tmp_path / "best_config.yaml"
    path.write_text(yaml.dump(cfg, Dumper=ConfigDumper, sort_keys=False))
    loaded = load_config(str(path))
    assert loaded.data.symbols == sorted(texts) and loaded.training.learning_rate == 1e-5 and loaded.training.max_steps == 3
    assert yaml.safe_load(path.read_text()) == cfg
