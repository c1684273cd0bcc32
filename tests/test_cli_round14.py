"""The command line and the config tree as a user meets them: a key written under the wrong section names
the section that has it, Ctrl-C is one line and a nonzero code whenever it comes, a section of a config
file that is not a mapping is blamed on the file also beside an override, a JSON key given twice names
its section and both lines, every config key is in the
README's config reference, and every command's ``--help`` works and lists its flags."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from pathlib import Path

import pytest

from hftraining import cli
from hftraining.core.config import Config, load_config
from hftraining.core.errors import ConfigError

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- a key in another section

@pytest.mark.parametrize("written, meant", [
    ("training.eval_steps", "evaluation.eval_steps"),  # was "did you mean training.max_steps?": another key
    ("training.batch_size", "data.batch_size"),
    ("data.learning_rate", "training.learning_rate"),
    ("model.seed", "training.seed or tune.seed"),
])
def test_a_key_under_another_section_names_the_section_that_has_it(written, meant, tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{written}=1"])
    assert str(e.value).startswith(f"{written}: unknown key") and str(e.value).endswith(f"; did you mean {meant}?")
    section, key = written.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {key}: 1\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hftraining: error: {path}: {written}: unknown key")
    assert err.endswith(f"; did you mean {meant}?\n")


def test_a_misspelt_key_still_gets_the_closest_key_of_its_section():
    with pytest.raises(ConfigError, match=r"; did you mean training\.max_steps\?$"):
        load_config(None, ["training.max_stepz=3"])


# ------------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_while_the_parser_is_built_is_one_line_and_130(monkeypatch, capsys):
    """Ctrl-C while the parser is built (``bench ett``'s, here) was a KeyboardInterrupt traceback, where
    Ctrl-C inside any command is one line and exit 130."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_add_bench_ett", interrupted)
    try:
        code = cli.main(["bench", "ett", "--help"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while the parser was built escaped main() as a traceback")
    assert code == 130 and capsys.readouterr().err == "hftraining: interrupted\n"


def test_ctrl_c_inside_a_command_is_one_line_and_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_list", interrupted)
    assert cli.main(["list", "features"]) == 130
    assert capsys.readouterr().err == "hftraining: interrupted\n"


# ------------------------------------------------------------------------------- a section that is no mapping

def test_a_file_section_that_is_not_a_mapping_names_the_file_beside_an_override(tmp_path, capsys):
    """``training: 3`` in the file and ``training.max_steps=3`` on the command line: the error named
    neither the file nor what the section held ("training: expected a mapping of keys"); without the
    override it named both."""
    path = tmp_path / "c.yaml"
    path.write_text("training: 3\n")
    for overrides in ([], ["training.max_steps=3"]):
        with pytest.raises(ConfigError) as e:
            load_config(path, overrides)
        assert str(e.value) == f"{path}: training: expected a mapping of keys, got int", overrides
    assert cli.main(["train", "--config", str(path), "training.max_steps=3", f"output.output_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err == f"hftraining: error: {path}: training: expected a mapping of keys, got int\n"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- a JSON key given twice

@pytest.mark.parametrize("text, said", [
    ('{"training": {"learning_rate": 0.001,\n "max_steps": 5,\n "learning_rate": 0.0001}}\n',
     "training.learning_rate is given twice (lines 1 and 3)"),
    ('{\n\t"training": {"max_steps": 3},\n\t"data": {"embargo": 2},\n\t"training": {"max_steps": 4}\n}\n',
     "training is given twice (lines 2 and 4)"),
])
def test_a_json_key_given_twice_names_its_section_and_both_lines(text, said, tmp_path, capsys):
    """README: "A key or section written twice in a file is an error naming both lines"; a JSON file's
    said "learning_rate is given twice in one object", naming neither its section nor a line."""
    path = tmp_path / "c.json"
    path.write_text(text)
    assert cli.main(["train", "--config", str(path), f"output.output_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err == (f"hftraining: error: {path}: {said}; only one may stay "
                                       "(JSON would keep the last and drop the first)\n")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- README's config reference

def undocumented_keys(readme: str) -> list[str]:
    """The keys of the config tree that README's config reference does not name: a key is named as
    ``section.key`` anywhere, or as `` `key` `` (or under a `` `prefix_*` ``) in its section's row of the
    Config table."""
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*)$", readme, flags=re.M))
    missing = []
    for section in dataclasses.fields(Config):
        row = rows.get(section.name, "")
        prefixes = re.findall(r"`([a-z][a-z0-9]*_)\*`", row)
        for f in dataclasses.fields(section.type if isinstance(section.type, type) else type(getattr(Config(), section.name))):
            if not (f"{section.name}.{f.name}" in readme or f"`{f.name}`" in row
                    or any(f.name.startswith(p) for p in prefixes)):
                missing.append(f"{section.name}.{f.name}")
    return missing


def test_every_config_key_is_in_the_readme_config_reference():
    """The other direction of ``test_readme_audit``'s check: a key a user can set that the README never
    names is a setting nobody finds."""
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*)$", README, flags=re.M))
    assert set(rows) >= {f.name for f in dataclasses.fields(Config)}, "the README's Config table lost a section"
    assert not undocumented_keys(README), f"config keys the README's config reference does not name: {undocumented_keys(README)}"


def test_the_readme_check_finds_a_key_left_out():
    """The check above can fail: a row's `key`, a `prefix_*` of its row or a `section.key` anywhere names a
    key; the same words without the backticks name none."""
    named = undocumented_keys("| `data` | `batch_size` |\n| `model` | `lightgbm_*` |\nset `training.seed`\n")
    assert not {"data.batch_size", "model.lightgbm_rounds", "training.seed"} & set(named)
    unnamed = undocumented_keys("| `data` | batch_size |\n| `model` | lightgbm_* |\nset training seed\n")
    assert {"data.batch_size", "model.lightgbm_rounds", "training.seed"} <= set(unnamed)


# ------------------------------------------------------------------------------- --help of every command

def _commands(parser, words=()):
    """(words, parser) of every command and subcommand (``data check``, ``bench ett``)."""
    yield list(words), parser
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _commands(sub, (*words, name))


@pytest.mark.parametrize("words", [w for w, _ in _commands(cli.build_parser(["bench"]))], ids=" ".join)
def test_help_of_every_command_exits_0_and_lists_every_flag(words, capsys):
    parser = dict((" ".join(w), p) for w, p in _commands(cli.build_parser(["bench"])))[" ".join(words)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli.main([*words, "--help"])
    assert e.value.code == 0 and capsys.readouterr().err == ""
    flags = {s for a in parser._actions for s in a.option_strings}
    assert flags and all(flag in out.getvalue() for flag in flags), sorted(f for f in flags if f not in out.getvalue())
