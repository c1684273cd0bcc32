"""Hostile values for every config key: each is a one-line ConfigError naming the key, said when the
config is loaded (before any data is read or any run folder touched), never a traceback, a NaN run
or a value silently read as another."""

import dataclasses
import json
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
    ("training.ddp_timeout=-1", "training.ddp_timeout: must be at least 1 second"),
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


@pytest.mark.parametrize("text, where", [
    ("model:\n  type: transformer\ndata:\n  sequence_length: [1, 2\ntraining:\n  max_steps: 3\n",
     "line 5, column 9: expected ',' or ']', but got ':' (while parsing a flow sequence, line 4)"),
    ('model:\n  type: "abc\n', "line 3, column 1: found unexpected end of stream (while scanning a quoted scalar, line 2)"),
    ("model:\n\ttype: x\n", "line 2, column 1: found character '\\t' that cannot start any token (while scanning for the next token)"),
    ("data:\n  jumps: drop\n    embargo: 2\n", "line 3, column 12: mapping values are not allowed here"),
    ("model: {type: x}\n---\ndata: {}\n",
     "line 2, column 1: but found another document (expected a single document in the stream, line 1)"),
])
def test_yaml_syntax_error_names_its_line(tmp_path, capsys, text, where):
    """A YAML mistake was said by PyYAML's first line alone ("c.yaml: not valid YAML: while parsing a flow
    sequence"), which names neither the line nor what is wrong."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert _error([], path) == f"{path}: not valid YAML: {where}"
    assert cli.main(["train", "--config", str(path), f"output.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"hftraining: error: {path}: not valid YAML: {where}\n"
    assert not (tmp_path / "run").exists()


def test_json_syntax_error_names_its_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"model": {"type": "x",}\n}')
    assert _error([], path).startswith(f"{path}: not valid JSON: Expecting property name enclosed in double quotes: line 1")


@pytest.mark.parametrize("value", ['"5"', '"-5"', "' 30 '"])
def test_max_gap_without_a_unit_is_refused(value):
    """pandas reads "5" as 5 nanoseconds, shorter than any bar spacing: every window spanned a gap and
    the run stopped after reading the data, telling the user to raise data.max_gap."""
    text = _error([f"data.max_gap={value}"])
    assert text.startswith("data.max_gap: ") and text.endswith("has no unit (e.g. 30min, 4h, 3D)")


def test_max_gap_with_a_unit_still_loads():
    for text in ("30min", "4h", "3D", "1 day", "90s"):
        assert load_config(None, [f"data.max_gap={text}"]).data.max_gap == text


@pytest.mark.parametrize("key", ["training.ddp_timeout", "tune.heartbeat_seconds", "tune.stale_after_seconds",
                                 "serve.request_timeout_s", "serve.keep_alive_timeout_s", "serve.header_timeout_s"])
def test_a_time_in_seconds_beyond_a_year_is_refused(key):
    """``training.ddp_timeout: 1e14`` loaded, then stopped every rank of a torchrun group with
    ``timedelta``'s OverflowError; a heartbeat of 1e10 s killed its thread ("timestamp out of range")."""
    extra = ["tune.stale_after_seconds=1e15"] if key == "tune.heartbeat_seconds" else []
    assert _error([*extra, f"{key}=1e14"]).startswith(f"{key}: must be at most 31,536,000 seconds (a year), got 1e+14")
    below = {"tune.heartbeat_seconds": ["tune.stale_after_seconds=31536000", "tune.heartbeat_seconds=31535999"]}
    load_config(None, below.get(key, [f"{key}=31536000"]))  # a year itself is accepted


def test_serve_timeout_flag_beyond_a_year_is_refused(tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path / "no-model"), "--request-timeout", "1e308"]) == 2
    assert capsys.readouterr().err.startswith("hftraining: error: serve.request_timeout_s: must be at most")


def test_data_check_set_without_equals_names_what_was_written(capsys):
    """``data check --set jumps`` was refused as "override 'data.jumps': ...", a text the user never wrote."""
    sample = Path(cli.__file__).parent / "sample_data" / "AEM.csv"
    assert cli.main(["data", "check", str(sample), "--set", "jumps"]) == 2
    assert capsys.readouterr().err == "hftraining: error: override 'jumps': expected section.key=value\n"


@pytest.mark.parametrize("section, key, hint", list(_keys()), ids=lambda v: str(v))
def test_every_key_through_an_override_and_a_file_names_itself(tmp_path, section, key, hint):
    """For every key: null where it is not optional, a bool where no bool goes (``True`` is an int to
    Python), a number or text where a bool goes, a list where text goes, and a misspelt sibling; each is
    one line that starts with the key, from an override and from a file, and a file's error names the file."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    wrong = [] if optional or hint is typing.Any else [("null", None)]
    if not _is(hint, bool) and hint is not typing.Any and typing.get_origin(hint) is not dict:
        wrong.append(("true", True))
    if _is(hint, bool):
        wrong += [("1", 1), ("yes-please", "yes-please")]
    if _is(hint, str) or typing.get_origin(hint) is typing.Literal:
        wrong.append(("[a]", ["a"]))
    path = tmp_path / "c.json"
    for text, value in wrong:
        assert _error([f"{section}.{key}={text}"], None).startswith(f"{section}.{key}")
        path.write_text(json.dumps({section: {key: value}}))
        assert _error([], path).startswith(f"{path}: {section}.{key}")
    typo = f"{section}.{key}x"
    assert _error([f"{typo}=1"], None).startswith(f"{typo}: unknown key")
    path.write_text(json.dumps({section: {f"{key}x": 1}}))
    assert _error([], path).startswith(f"{path}: {typo}: unknown key")


@pytest.mark.parametrize("override, section, key, meant", [
    ("training.learning_rate=1e-3", "training", "learning_rate", 0.001),
    ("training.learning_rate=5e-5", "training", "learning_rate", 5e-05),
    ("data.symbols=[WPM, AEM]", "data", "symbols", ["AEM", "WPM"]),
    ("data.symbols=[0700, '007']", "data", "symbols", ["007", "0700"]),
    ("data.data_dir=null", "data", "data_dir", None),
    ("evaluation.max_val_windows=null", "evaluation", "max_val_windows", None),
    ("training.max_steps=1_000", "training", "max_steps", 1000),
    ("training.max_steps=2e3", "training", "max_steps", 2000),
    ("output.experiment_name=2024-07-01", "output", "experiment_name", "2024-07-01"),
    ("output.experiment_name='run #2'", "output", "experiment_name", "run #2"),
    ("training.optimizer_kwargs={betas: [0.9, 0.95], eps: 1e-6}", "training", "optimizer_kwargs",
     {"betas": [0.9, 0.95], "eps": 1e-06}),
    ("data.split_dates={val: 2024-07-01, test: '2025-01-02'}", "data", "split_dates",
     {"val": "2024-07-01", "test": "2025-01-02"}),
])
def test_an_override_means_what_it_says(override, section, key, meant):
    got = getattr(getattr(load_config(None, [override]), section), key)
    assert got == meant and type(got) is type(meant)


@pytest.mark.parametrize("name", ["c.json", "c.yaml"])
def test_a_config_written_with_a_byte_order_mark_loads(tmp_path, name):
    """A JSON config saved with a UTF-8 byte-order mark (Notepad, PowerShell 5's ``Out-File``) was refused
    as "Unexpected UTF-8 BOM (decode using utf-8-sig)"; the same file as YAML loaded."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"training": {"max_steps": 3}}).encode())
    assert load_config(path).training.max_steps == 3
