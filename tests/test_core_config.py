import json
import subprocess
import sys

import pytest

from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError

PRODUCTION = {
    "model": {"hidden_size": 512, "num_heads": 16, "num_layers": 8, "dropout": 0.15},
    "data": {"sequence_length": 60, "prediction_horizon": 5, "batch_size": 32},
    "training": {"optimizer": "adamw", "learning_rate": 5e-5, "max_steps": 10000,
                 "gradient_accumulation_steps": 4, "use_mixed_precision": True},
}


def test_production_json_loads_unchanged(tmp_path):
    path = tmp_path / "prod.json"
    path.write_text(json.dumps(PRODUCTION))
    cfg = load_config(path)
    assert cfg.model.hidden_size == 512 and cfg.model.num_layers == 8
    assert cfg.training.learning_rate == 5e-5 and cfg.training.gradient_accumulation_steps == 4
    assert cfg.training.use_mixed_precision is True


def test_shipped_production_config_matches_documentation():
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "configs" / "production.json")
    assert cfg.to_dict()["model"]["num_heads"] == 16 and cfg.data.prediction_horizon == 5



def _other_values(section, key, value):
    """Valid-looking values different from ``value`` for ``section.key``, to try in turn."""
    import typing

    from hftraining.core import config as C
    from hftraining.models.registry import MODELS
    from hftraining.optim import optimizer_names

    hint = typing.get_type_hints(typing.get_type_hints(C.Config)[section])[key]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value * 2, value + 1, value - 1]
    if isinstance(value, float):
        return [value / 2, value * 2]
    if typing.get_origin(hint) is typing.Literal:
        return [a for a in typing.get_args(hint) if a != value]
    if (section, key) == ("training", "optimizer"):
        return [n for n in optimizer_names() if n != value]
    if (section, key) == ("model", "type"):
        return [n for n in MODELS.names() if n != value]
    return []


def test_shipped_production_json_every_key_reaches_the_config(tmp_path):
    """Walk configs/production.json itself: every section and key it sets must arrive, with its
    value, in the loaded Config; and changing that one key in a copy of the file must change the
    loaded attribute (so a key that is silently ignored, renamed or retyped fails, even where the
    file's value happens to equal the default)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "production.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    cfg = load_config(path)
    assert raw, "production.json sets nothing"
    checked = 0
    for section, values in raw.items():
        assert isinstance(values, dict) and values, section
        loaded = getattr(cfg, section)  # AttributeError: a section the Config does not have
        for key, value in values.items():
            assert hasattr(loaded, key), f"{section}.{key} is not a Config attribute"
            got = getattr(loaded, key)
            assert got == value and isinstance(got, bool) == isinstance(value, bool), \
                f"{section}.{key}: file {value!r}, loaded {got!r}"
            assert cfg.to_dict()[section][key] == value  # what a run saves as config.json
            # the same file with only this key changed loads with the changed value
            for other in _other_values(section, key, value):
                changed = json.loads(json.dumps(raw))
                changed[section][key] = other
                copy = tmp_path / "changed.json"
                copy.write_text(json.dumps(changed), encoding="utf-8")
                try:
                    alt = load_config(copy)
                except ConfigError:
                    continue  # e.g. a width the head count does not divide: try the next value
                assert getattr(getattr(alt, section), key) == other, f"{section}.{key}={other!r} ignored"
                break
            else:
                pytest.fail(f"{section}.{key}: no other valid value to check that the key is read; add one to _other_values")
            checked += 1
    assert checked == sum(len(v) for v in raw.values())

def test_overrides_are_typed():
    cfg = load_config(None, ["training.learning_rate=1e-4", "data.symbols=[AEM, WPM]", "training.seed=7"])
    assert cfg.training.learning_rate == 1e-4
    assert cfg.data.symbols == ["AEM", "WPM"]
    assert cfg.training.seed == 7


def test_yaml_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 5e-5\n")
    assert load_config(path).training.learning_rate == 5e-5


@pytest.mark.parametrize(
    "override, key",
    [
        ("training.max_stepz=3", "training.max_stepz"),
        ("modle.hidden_size=3", "modle.hidden_size"),
        ("model.hidden_size=abc", "model.hidden_size"),
        ("model.hidden_size=1.5", "model.hidden_size"),
        ("training.use_mixed_precision=maybe", "training.use_mixed_precision"),
        ("model.pooling=max", "model.pooling"),
        ("model.num_heads=3", "model.num_heads"),
        ("data.train_ratio=0.95", "data.train_ratio"),
        ("model.lightgbm_num_leaves=1", "model.lightgbm_num_leaves"),
        ("model.lightgbm_feature_fraction=0", "model.lightgbm_feature_fraction"),
        ("model.lightgbm_bagging_fraction=1.5", "model.lightgbm_bagging_fraction"),
        ("model.lightgbm_lambda_l2=-1", "model.lightgbm_lambda_l2"),
        ("model.lightgbm_rounds=0", "model.lightgbm_rounds"),
        ("evaluation.max_eval_batches=0", "evaluation.max_eval_batches"),  # validation on no window: NaN metrics
        ("training.max_grad_norm=-1", "training.max_grad_norm"),  # clipping silently off
        ("training.early_stopping_patience=-1", "training.early_stopping_patience"),  # stopped at the first eval
        ("training.early_stopping_threshold=-0.1", "training.early_stopping_threshold"),
        ("training.save_total_limit=-1", "training.save_total_limit"),
        ("model.intermediate_size=0", "model.intermediate_size"),  # silently 4 x hidden_size
        ("model.intermediate_size=-8", "model.intermediate_size"),  # a torch traceback
        ("training.warmup_steps=20000", "training.warmup_steps"),  # the peak rate never reached
    ],
)
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hiden_size: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: model\.hiden_size: unknown key"):
        load_config(path)


def test_unknown_optimizer_lists_valid_names():
    from hftraining.models import build_model
    from hftraining.optim import build_optimizer

    cfg = load_config(None, ["training.optimizer=adamw2", "model.hidden_size=8", "model.num_heads=2", "model.num_layers=1"])
    model = build_model(cfg.model, 3, 2, 10)
    with pytest.raises(ConfigError, match=r"training\.optimizer: unknown optimizer 'adamw2'.*valid: .*adamw"):
        build_optimizer(model, cfg.training)


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"training": {"learning_rate": "fast"}}')
    proc = subprocess.run([sys.executable, "-m", "hftraining", "train", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "training.learning_rate" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# Config bombs: each a one-line error within 5 s and 500 MB, never expanded, echoed or recursed into

def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """YAML whose last anchor expands to width^levels leaves (9^9 = 387M) at a checked key."""
    anchors = [f"&a0 [{', '.join(['x'] * width)}]"]
    for k in range(1, levels):
        anchors.append(f"&a{k} [{', '.join([f'*a{k - 1}'] * width)}]")
    return "output:\n  experiment_name: [" + ", ".join(anchors) + "]\n"


BOMBS = {
    "alias_bomb.yaml": _alias_bomb(),
    "huge_value.yaml": "output:\n  experiment_name: " + "x" * 50_000_000 + "\n",  # 50 MB
    "deep.yaml": "[" * 200_000 + "]" * 200_000,
    "deep.json": '{"data": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "many_keys.yaml": "training:\n  optimizer_kwargs:\n" + "".join(f"    k{i}: {i}\n" for i in range(200_000)),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_config_bombs_are_one_line_errors_in_bounded_time_and_memory(name, tmp_path):
    path = tmp_path / name
    path.write_text(BOMBS[name])
    code = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (500 << 20, 500 << 20))\n"
        "from hftraining.core.config import load_config\n"
        "from hftraining.core.errors import ConfigError\n"
        "t0 = time.perf_counter()\n"
        "try:\n"
        f"    load_config({str(path)!r})\n"
        "except ConfigError as e:\n"
        "    print(f'{time.perf_counter() - t0:.3f}', e, sep='\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, message = proc.stdout.splitlines()  # exactly one line of error
    assert float(seconds) < 5.0, seconds
    assert message.startswith(str(path)) and len(message) < 400, message[:500]


def test_config_bomb_through_the_cli_is_exit_2_and_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    proc = subprocess.run([sys.executable, "-m", "hftraining", "train", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "values (YAML aliases count" in proc.stderr, proc.stderr[:500]


def test_long_values_are_cut_in_error_messages():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["output.experiment_name=[" + "1, " * 20_000 + "1]"])
    assert len(str(err.value)) < 400 and "expected a string" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["training.lr_scheduler=" + "a" * 10_000])
    assert len(str(err.value)) < 600
