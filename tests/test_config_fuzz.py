"""Hostile values for every config key: each is a one-line ConfigError naming the key, said when the
config is loaded (before any data is read or any run folder touched), never a traceback, a NaN run
or a value silently read as another."""

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from hftraining import cli, optim
from hftraining.core import config as C
from hftraining.core.config import TrainingConfig, config_from_dict, load_config
from hftraining.core.errors import ConfigError

QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"


def _error(overrides, path=QUICKSTART) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    text = str(e.value)
    assert "\n" not in text and len(text) < 2000
    return text


@pytest.mark.parametrize("override, expected", [
    # an infinite rate, noise or gross trained or traded to NaN and exited 0
    ("training.learning_rate=.inf", "training.learning_rate: expected a finite number, got inf"),
    ("data.augment_noise_std=.inf", "data.augment_noise_std: expected a finite number"),
    ("evaluation.backtest_max_gross=.inf", "evaluation.backtest_max_gross: expected a finite number"),
    ("evaluation.periods_per_year=-.inf", "evaluation.periods_per_year: expected a finite number"),
    ("training.learning_rate='inf'", "training.learning_rate: expected a finite number"),
    # past int64: torch's "Overflow when unpacking long long" traceback after the data were read
    ("model.hidden_size=1e30", "model.hidden_size: 1e+30 is out of range"),
    ("data.stride=123456789012345678901234567890", "data.stride: 123456789012345678901234567890 is out of range"),
    # NumPy's seed range: a traceback once the data were read
    ("training.seed=-1", "training.seed: must be in 0..4294967295, got -1"),
    ("training.seed=4294967296", "training.seed: must be in 0..4294967295"),
    ("tune.seed=-3", "tune.seed: must be in 0..4294967295, got -3"),
    # negative counts and thresholds that were read as 0 or refused only after the data were read
    ("data.min_rows=-1", "data.min_rows: must be >= 0, got -1"),
    ("data.jump_threshold=-0.5", "data.jump_threshold: must be >= 0, got -0.5"),
    ("training.ddp_timeout=-1", "training.ddp_timeout: must be > 0"),
    # schedule values checked whatever training.lr_scheduler says (a tune may switch it)
    ("training.num_cycles=0", "training.num_cycles: must be >= 1, got 0"),
    ("training.decay_ratio=2", "training.decay_ratio: must be in (0, 1], got 2.0"),
    # empty strings: the feature store in the working folder, a silent fresh start, an ignored folder
    ('data.cache_dir=""', "data.cache_dir: '' is empty"),
    ('training.resume_from_checkpoint=""', "training.resume_from_checkpoint: '' is empty"),
    ('output.output_dir=" "', "output.output_dir: ' ' is empty"),
    ('output.experiment_name=""', "output.experiment_name: '' is empty"),
    ('data.start_date=""', "data.start_date: '' is empty"),
    ('serve.host=""', "serve.host: '' is empty"),
    # no date, or the clock's
    ("data.start_date=NaT", "data.start_date: 'NaT' is not a date"),
    ("data.end_date=nat", "data.end_date: 'nat' is not a date"),
    ("data.split_dates={val: 2024-01-01, test: now}", "data.split_dates.test: 'now' is not a date"),
    # kept no symbol: "None: no symbol has enough rows ()"
    ("data.symbols=[]", "data.symbols: an empty list keeps no symbol"),
])
def test_hostile_value_is_one_line_naming_the_key(override, expected):
    text = _error([override])
    assert text.startswith(expected.split(":")[0] + ":"), text  # the override's key, not the config file
    assert expected in text


@pytest.mark.parametrize("override, key", [
    ("data.augment_scale_std=-1", "data.augment_scale_std"),
    ("data.augment_jitter=-2", "data.augment_jitter"),
    ("evaluation.eval_steps=-1", "evaluation.eval_steps"),
    ("training.save_steps=-1", "training.save_steps"),
    ("tune.stale_after_seconds=1", "tune.heartbeat_seconds/stale_after_seconds"),
    ("data.val_ratio=0.5", "data.train_ratio/data.val_ratio"),
    (["evaluation.backtest_topk=5", "evaluation.backtest_topk_dropout=2"],
     "evaluation.backtest_topk, evaluation.backtest_topk_dropout"),
])
def test_error_about_an_override_is_not_blamed_on_the_config_file(override, key):
    """An override that breaks a rule was said as "configs/quickstart.yaml: data.augment_noise_std/
    augment_scale_std/augment_jitter: must be >= 0", sending the user to a file without the key."""
    text = _error(override if isinstance(override, list) else [override])
    assert text.startswith(key + ":"), text


def test_error_about_a_file_key_still_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  augment_jitter: -2\n")
    assert _error([], path).startswith(f"{path}: data.augment_jitter: must be >= 0")


@pytest.mark.parametrize("override, hint", [
    ("training.max_stepz=2", "; did you mean training.max_steps?"),
    ("model.hiden_size=8", "; did you mean model.hidden_size?"),
    ("trainig.max_steps=2", "; did you mean training?"),
])
def test_misspelt_key_is_named_with_the_closest_valid_one(override, hint):
    text = _error([override])
    assert text.startswith(override.split("=")[0] + ":") and text.endswith(hint)


def test_misspelt_section_in_a_file_suggests_the_section():
    with pytest.raises(ConfigError, match=r"^evaluaton: unknown config section; .*did you mean evaluation\?$"):
        config_from_dict({"evaluaton": {}})


def test_huge_adam_epsilon_is_not_said_to_be_ignored_by_adamw():
    """``uses_setting`` compared the optimizer built with eps and eps + 1, equal for eps = 1e30: "adamw does
    not use it" was said of the one optimizer that does."""
    optim.check_compatibility(TrainingConfig(adam_epsilon=1e30))
    with pytest.raises(ConfigError, match="training.adam_epsilon: lion does not use it"):
        optim.check_compatibility(TrainingConfig(optimizer="lion", adam_epsilon=1e30))


def test_seeds_past_the_largest_seed_are_refused_before_training(tmp_path, capsys):
    """``train --seeds 2`` at training.seed 2**32 - 1 trained seed-0, then stopped with NumPy's traceback."""
    code = cli.main(["train", "--config", str(QUICKSTART), "--seeds", "2", "training.seed=4294967295",
                     f"output.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("hftraining: error: --seeds 2:")
    assert not (tmp_path / "run").exists()


def _keys():
    for section, cls in typing.get_type_hints(C.Config).items():
        for f, hint in typing.get_type_hints(cls).items():
            yield section, f, hint


def _is(hint, tp) -> bool:
    """``hint`` is ``tp`` or ``Optional[tp]``."""
    return hint is tp or (typing.get_origin(hint) in (typing.Union, types.UnionType) and tp in typing.get_args(hint))


@pytest.mark.parametrize("section, key, hint", [k for k in _keys() if _is(k[2], float)], ids=lambda v: str(v))
def test_every_number_key_refuses_infinity(section, key, hint):
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ConfigError, match=rf"^{section}\.{key}: expected a finite number"):
            config_from_dict({section: {key: value}})


@pytest.mark.parametrize("section, key, hint", [k for k in _keys() if _is(k[2], int)], ids=lambda v: str(v))
def test_every_integer_key_refuses_what_int64_cannot_hold(section, key, hint):
    for value in (2**63, -(2**63), 1e30):
        with pytest.raises(ConfigError, match=rf"^{section}\.{key}: .* is out of range"):
            config_from_dict({section: {key: value}})


@pytest.mark.parametrize("section, key, hint", list(_keys()), ids=lambda v: str(v))
def test_every_key_refuses_a_wrong_type_naming_it(section, key, hint):
    """A mapping where no mapping goes, a list where no list goes: one line naming the key."""
    origin = typing.get_origin(hint)
    wrong = [] if origin is dict or hint is typing.Any else [{"a": 1}]
    if origin is not list and not any(typing.get_origin(a) is list for a in typing.get_args(hint)):
        wrong.append([1, 2])
    for value in wrong:
        with pytest.raises(ConfigError) as e:
            config_from_dict({section: {key: value}})
        assert str(e.value).startswith(f"{section}.{key}") and "\n" not in str(e.value)


@pytest.mark.parametrize("section, key, hint", [k for k in _keys() if _is(k[2], str)], ids=lambda v: str(v))
def test_every_text_key_refuses_an_empty_string(section, key, hint):
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: '' is empty"):
        config_from_dict({section: {key: ""}})


def test_the_defaults_and_the_shipped_configs_still_load():
    config_from_dict({})
    for path in (Path(__file__).parents[1] / "configs").iterdir():
        load_config(path)
    assert all(dataclasses.is_dataclass(t) for t in typing.get_type_hints(C.Config).values())


def _earlier_run(root: Path) -> list[str]:
    """A finished run's folder as ``train`` leaves it (the files that output.overwrite would remove)."""
    (root / "final").mkdir(parents=True)
    (root / "final" / "model.safetensors").write_bytes(b"weights")
    (root / "checkpoints" / "checkpoint-30").mkdir(parents=True)
    for name in ("eval.json", "metrics.jsonl"):
        (root / name).write_text("{}\n")
    return sorted(p.name for p in root.iterdir())


@pytest.mark.parametrize("extra, message", [
    (["model.type=seasonal_naive", "model.season_length=30"], "model.season_length: 30 is longer than data.sequence_length 20"),
    (["model.type=dlinear", "model.moving_avg=5", "training.gradient_checkpointing=true"],
     "training.gradient_checkpointing: model.type 'dlinear' does not support it"),
])
def test_model_mistake_leaves_the_earlier_run_in_place(tmp_path, extra, message):
    """The model's constructor refused these after the data were read and output.overwrite had
    removed the earlier run's final model, checkpoints and metrics: nothing of it was left."""
    from conftest import tiny
    from hftraining.workflows.train_run import train

    root = tmp_path / "run"
    before = _earlier_run(root)
    cfg = load_config(None, tiny(root, "output.overwrite=true", "training.max_steps=2", *extra))
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert sorted(p.name for p in root.iterdir()) == before
    assert (root / "final" / "model.safetensors").read_bytes() == b"weights"


def test_data_check_set_with_a_misspelt_section_names_what_was_written(capsys):
    """``data check --set dat.jumps=drop`` was read as ``data.dat.jumps=drop`` and refused as "override
    'data.dat.jumps=drop': expected section.key=value", a text the user never wrote."""
    sample = Path(cli.__file__).parent / "sample_data" / "AEM.csv"
    assert cli.main(["data", "check", str(sample), "--set", "dat.jumps=drop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hftraining: error: dat.jumps: unknown config section 'dat'") and err.count("\n") == 1
    assert err.rstrip().endswith("did you mean data?")


@pytest.mark.parametrize("flag, value, key", [("--request-timeout", "inf", "serve.request_timeout_s"),
                                              ("--keep-alive-timeout", "inf", "serve.keep_alive_timeout_s"),
                                              ("--host", "", "serve.host")])
def test_serve_flag_out_of_range_is_refused_before_the_model_is_read(tmp_path, capsys, flag, value, key):
    """``serve --request-timeout inf`` started a server whose requests never timed out."""
    assert cli.main(["serve", str(tmp_path / "no-model"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hftraining: error: {key}: ") and err.count("\n") == 1


def test_model_mistake_through_training_run_leaves_the_earlier_run_in_place(tmp_path):
    """Walk-forward and tune train through ``training_run``, which cleared the run folder (output.overwrite)
    before the model's constructor refused a setting."""
    from conftest import tiny
    from hftraining.train.runner import training_run

    root = tmp_path / "run"
    before = _earlier_run(root)
    cfg = load_config(None, tiny(root, "output.overwrite=true", "training.max_steps=2",
                                 "model.type=seasonal_naive", "model.season_length=30"))
    with pytest.raises(ConfigError, match="model.season_length: 30 is longer than data.sequence_length 20"):
        with training_run(cfg):
            pass
    assert sorted(p.name for p in root.iterdir()) == before


def test_no_symbol_long_enough_names_the_sample_data_and_stays_one_short_line(tmp_path):
    """A window longer than every bundled file said "None: no symbol has enough rows (...)" and listed
    every file on one line (thousands of characters for a large folder)."""
    from hftraining.core.errors import DataError
    from hftraining.data.pipeline import prepare

    with pytest.raises(DataError) as e:
        prepare(load_config(None, ["data.sequence_length=100000", "data.cache_dir=null"]).data)
    text = str(e.value)
    assert text.startswith("the bundled sample data (data.data_dir): no symbol has enough rows")
    assert "and 7 more" in text and len(text) < 1000 and "XPO" not in text
