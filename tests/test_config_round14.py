"""A setting the chosen option would ignore is a one-line error naming both keys (a folder trained before
that rule still loads and resumes), an empty ``--config`` file is refused, and a JSON file is written
whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import pathlib

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config, resume_conflicts
from hftraining.core.errors import ConfigError, WriteError
from hftraining.core.jsonio import write_json
from conftest import tiny

FAST = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.report=false", "evaluation.intervals=[]",
        "evaluation.max_test_windows=60", "evaluation.baseline_max_windows=300"]
DATES = "data.split_dates={val: 2024-07-01, test: 2025-01-02}"


@pytest.mark.parametrize("overrides, head, other", [
    # precision outranks use_mixed_precision: the run trained in fp32 without a word
    (["training.use_mixed_precision=true", "training.precision=fp32"], "training.use_mixed_precision",
     "training.precision=fp32"),
    # the cut dates cut the splits: the ratios changed nothing
    ([DATES, "data.train_ratio=0.8"], "data.train_ratio", "data.split_dates"),
    ([DATES, "data.train_ratio=0.6", "data.val_ratio=0.2"], "data.train_ratio/data.val_ratio", "data.split_dates"),
    # the sampler of the other batching reads the other key
    (["data.batching=dates", "data.target=cs_rank", "data.batch_size=64"], "data.batch_size", "data.batching=dates"),
    (["data.dates_per_batch=8"], "data.dates_per_batch", "data.batching=windows"),
    (["evaluation.aci_gamma=0.05"], "evaluation.aci_gamma", "evaluation.interval_method=split"),
    (["tune.pruner=none", "tune.pruner_warmup_evals=3"], "tune.pruner_warmup_evals", "tune.pruner=none"),
])
def test_a_setting_the_chosen_option_ignores_is_one_line_naming_both_keys(tmp_path, capsys, overrides, head, other):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    text = str(e.value)
    assert text.startswith(f"{head}: ") and other in text and "\n" not in text, text
    run = tmp_path / "run"
    assert main(["train", *tiny(run, *FAST, *overrides)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and head in err and other in err, err
    assert not run.exists()  # refused before the run folder is made


@pytest.mark.parametrize("overrides", [
    ["training.use_mixed_precision=true", "training.precision=bf16"],  # the two agree
    ["training.use_mixed_precision=false", "training.precision=fp32"],
    ["training.use_mixed_precision=true"],  # auto: bf16
    [DATES],  # the ratios at their defaults
    ["data.train_ratio=0.6", "data.val_ratio=0.2"],  # no dates: the ratios cut
    [DATES, "data.train_ratio=0.6", "tune.folds=2"],  # tune's folds are cut at the ratios before the test date
    ["data.batching=dates", "data.target=cs_rank", "data.dates_per_batch=8"],
    ["data.batch_size=64"],
    ["evaluation.interval_method=aci", "evaluation.aci_gamma=0.05"],
    ["tune.pruner=none", "tune.pruner_startup_trials=5"],  # TPE reads it as its random first trials
    ["tune.pruner_warmup_evals=3"],
])
def test_a_setting_its_option_reads_is_accepted(overrides):
    load_config(None, overrides)


def test_the_bundled_configs_load():
    root = pathlib.Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.glob("*.*")):
        load_config(path)


def test_a_folder_saved_beside_ignored_keys_still_loads_evaluates_and_resumes(tmp_path, capsys):
    """A folder records the resolved cut dates beside the ratios that found them (preprocessing.json), and
    one trained before the rule may record an ignored key: both load and evaluate. A run trained
    with cut dates beside a ratio resumes once the ratio is set back to its default."""
    from hftraining.inference.forecaster import Forecaster

    run = tmp_path / "run"
    assert main(["train", *tiny(run, *FAST, "data.train_ratio=0.6", "data.val_ratio=0.2")]) == 0
    pre = json.loads((run / "final" / "preprocessing.json").read_text())
    assert pre["data"]["split_dates"] is not None and pre["data"]["train_ratio"] == 0.6  # resolved dates beside ratios
    # a folder written before the rule: a key its batching ignores, and the dates beside the ratios
    pre["data"]["dates_per_batch"] = 8
    (run / "final" / "preprocessing.json").write_text(json.dumps(pre))
    saved = json.loads((run / "config.json").read_text())
    saved["data"]["dates_per_batch"] = 8
    (run / "config.json").write_text(json.dumps(saved))
    assert Forecaster.from_pretrained(run / "final").preprocessing.data_config().dates_per_batch == 8
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-report", "--json"]) == 0
    capsys.readouterr()
    # resume: a run trained with split dates beside train_ratio 0.8 (as config.json keeps them)
    saved["data"].update(split_dates={"val": "2024-07-01", "test": "2025-01-02"}, train_ratio=0.8, val_ratio=0.15,
                         dates_per_batch=4)
    cfg = load_config(None, tiny(run, *FAST, DATES))  # the ratio back at its default, as the error says
    assert resume_conflicts(saved, cfg) == []
    moved = load_config(None, tiny(run, *FAST, "data.split_dates={val: 2024-08-01, test: 2025-01-02}"))
    assert [k for k, *_ in resume_conflicts(saved, moved)] == ["data.split_dates", "data.train_ratio"]
    saved["data"]["split_dates"] = None  # cut at the ratios: another ratio is another split
    assert [k for k, *_ in resume_conflicts(saved, load_config(None, tiny(run, *FAST)))] == ["data.train_ratio"]


@pytest.mark.parametrize("text", ["", "# every key commented out\n# training:\n#   max_steps: 5\n", "---\n"])
def test_a_config_file_without_settings_is_refused_naming_it(tmp_path, capsys, text):
    """An empty file (the wrong file, or one still being written) trained with every default, exit 0."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: holds no settings"):
        load_config(path)
    assert main(["train", "--config", str(path), "output.output_dir=" + str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: holds no settings" in err, err
    (tmp_path / "c.yaml").write_text("{}\n")  # an empty mapping written as one: the defaults, as meant
    assert load_config(tmp_path / "c.yaml").training.max_steps == 1000


def _failing_write(monkeypatch):
    """Path.write_text that writes half of its text and then fails as a full disk does."""
    real = pathlib.Path.write_text

    def write_text(self, data, *a, **k):
        real(self, data[: len(data) // 2], *a, **k)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


def test_a_json_write_that_fails_midway_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    write_json(path, {"verdict": "earlier", "values": list(range(50))})
    before = path.read_bytes()
    _failing_write(monkeypatch)
    with pytest.raises(WriteError, match=f"^{path}: cannot write \\(No space left on device\\)$"):
        write_json(path, {"verdict": "later", "values": list(range(500))})
    assert path.read_bytes() == before  # was cut at half of the new text
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no sibling left behind
    monkeypatch.undo()
    write_json(path, {"verdict": "later"})
    assert json.loads(path.read_text()) == {"verdict": "later"}


def test_a_json_write_through_a_link_or_to_a_device_is_made_in_place(tmp_path):
    """A link (``/dev/stdout``, one a user keeps) stays a link to the rewritten file; a device is written."""
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("{}\n")
    link.symlink_to(target)
    write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    write_json(os.devnull, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "target.json"]
