"""The run folder's life: where it is (``output.experiment_name`` never leads out of ``runs/``), what
``output.overwrite`` removes of an earlier run (its fitted baselines too), and a finished run's hint
that a shell can run as printed (a folder with spaces in its name)."""

from __future__ import annotations

import logging
import re
import shlex

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError
from hftraining.train.logging import log
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

QUICK = ("training.max_steps=4", "training.save_steps=2", "evaluation.eval_steps=0", "evaluation.report=false")


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("name", ["..", "a/../..", ".", "/tmp/elsewhere"])
def test_an_experiment_name_outside_runs_is_refused_in_one_line(name, tmp_path, capsys, monkeypatch):
    """`output.experiment_name: ".."` made the run folder runs/.. (the working folder): config.json,
    checkpoints/ and final/ were written there beside the user's own files, exit 0; an absolute name
    wrote the run wherever it pointed."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("the user's own file\n")
    monkeypatch.chdir(work)
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    try:
        rc = main(["train", *tiny(None, *QUICK, f"output.experiment_name={name}")])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and "output.experiment_name" in err and "Traceback" not in err, err[-2000:]
    assert _listing(work) == ["notes.txt"]
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "config.json").exists()


def test_an_experiment_name_still_names_a_folder_inside_runs_or_nothing_beside_output_dir(tmp_path):
    """A nested name stays inside runs/; with output.output_dir the name is no folder (an MLflow
    experiment may be named by an absolute path)."""
    assert str(load_config(None, ["output.experiment_name=group/run-1"]).run_dir()) == "runs/group/run-1"
    cfg = load_config(None, ["output.experiment_name=/Users/me/exp", f"output.output_dir={tmp_path / 'r'}"])
    assert cfg.run_dir() == tmp_path / "r"
    with pytest.raises(ConfigError, match=r"^output\.experiment_name: '\.\./x'"):
        load_config(None, ["output.experiment_name=../x"])


def test_overwrite_removes_the_earlier_runs_fitted_baselines(tmp_path):
    """An earlier run's baselines/ (fitted on its own training windows) stayed through output.overwrite
    when the new run scored no test split (data.split_dates past the data): `evaluate --split val` of
    the new run then scored those baselines as its bar — fitted on windows of the very validation
    dates scored, and on another run's data."""
    run = tmp_path / "run"
    train(load_config(None, tiny(run, *QUICK)))
    assert (run / "baselines" / "ridge").is_dir()
    train(load_config(None, tiny(run, *QUICK, "output.overwrite=true", "model.hidden_size=8",
                                 "data.split_dates={val: '2025-06-01', test: '2099-01-01'}")))
    assert not (run / "eval.json").exists()
    assert not (run / "baselines").exists()
    result, _ = evaluate_model_dir(run, split="val")
    assert not {"ridge", "lightgbm"} & set(result["baselines"]), sorted(result["baselines"])


def test_a_finished_runs_evaluate_hint_runs_as_printed_in_a_folder_with_spaces(tmp_path):
    """`--resume` of a finished run says how to score it again; in a folder named with spaces the
    printed `hftraining evaluate <folder>` split the folder into several arguments."""
    run = tmp_path / "my runs ü" / "run 1"
    overrides = tiny(run, *QUICK)
    train(load_config(None, overrides))
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    log.addHandler(handler)
    try:
        train(load_config(None, [*overrides, "training.resume_from_checkpoint=auto"]))
    finally:
        log.removeHandler(handler)
    hints = [m for text in said for m in re.findall(r"`(hftraining evaluate [^`]*)`", text)]
    assert hints, said
    assert shlex.split(hints[0]) == ["hftraining", "evaluate", str(run)]
