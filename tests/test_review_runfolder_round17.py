"""A fresh start in a run folder (``output.overwrite``) removes what the earlier run left there, never what a
link in it leads to, and says so when something cannot be removed: the new run's final model and fitted
baselines are its own, another folder's are left as they were. A run folder name no folder can have is
refused as the config is read."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

QUICK = ("training.max_steps=4", "training.save_steps=2", "evaluation.eval_steps=0", "evaluation.report=false")


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_writes_through_a_link_into_another_runs_folders(tmp_path):
    """A run folder whose baselines/ and final/ were links (to another run's) kept them through
    output.overwrite (rmtree refuses a link, and the refusal was ignored): the new run wrote its model and
    fitted baselines into the other run, whose `evaluate` then scored a model and baselines it never
    trained, and the new run could not be evaluated (its baselines/ a link)."""
    other = tmp_path / "other"
    train(load_config(None, tiny(other, *QUICK)))
    kept = {name: _digest(other / name) for name in ("final", "baselines")}
    run = tmp_path / "run"
    train(load_config(None, tiny(run, *QUICK)))
    for name in ("final", "baselines"):
        shutil.rmtree(run / name)
        (run / name).symlink_to(other / name, target_is_directory=True)
    train(load_config(None, tiny(run, *QUICK, "output.overwrite=true", "data.symbols=[AEM]", "model.hidden_size=8")))
    assert {name: _digest(other / name) for name in ("final", "baselines")} == kept
    for name in ("final", "baselines"):
        assert (run / name).is_dir() and not (run / name).is_symlink()
    result, _ = evaluate_model_dir(run, split="test")
    assert {"ridge", "lightgbm"} <= set(result["baselines"])


def test_an_earlier_runs_baselines_that_cannot_be_removed_stop_the_fresh_start_in_one_line(tmp_path, capsys,
                                                                                             monkeypatch):
    """A baselines/ that could not be removed (read-only) was skipped in silence: the new run, scoring no
    test split, left the earlier run's baselines in its folder and `evaluate --split val` scored them (fitted
    on windows of the very validation dates) beside the new model."""
    run = tmp_path / "run"
    train(load_config(None, tiny(run, *QUICK)))
    rmtree = shutil.rmtree

    def read_only(path, ignore_errors=False, *args, **kwargs):  # a read-only baselines/ as rmtree meets it
        if str(path).endswith("baselines"):
            if ignore_errors:
                return None
            raise PermissionError(13, "Permission denied", str(path))
        return rmtree(path, ignore_errors, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", read_only)
    capsys.readouterr()
    try:
        rc = main(["train", *tiny(run, *QUICK, "output.overwrite=true", "model.hidden_size=8",
                                  "data.split_dates={val: '2025-06-01', test: '2099-01-01'}")])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    last = err.splitlines()[-1]
    assert "Traceback" not in err and str(run / "baselines") in last and "Permission denied" in last, err[-2000:]
    assert [line for line in err.splitlines() if "error" in line] == [last], err[-2000:]


@pytest.mark.parametrize("key", ["experiment_name", "output_dir"])
def test_a_run_folder_name_with_a_nul_character_is_refused_in_one_line(key, tmp_path, capsys, monkeypatch):
    """`experiment_name: "a\\0b"` (YAML's escape) passed the config and ended in a traceback
    (ValueError: embedded null byte) at the run folder's lock."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(f'output:\n  {key}: "run\\0one"\n', encoding="utf-8")
    capsys.readouterr()
    try:
        rc = main(["train", "--config", "c.yaml", *tiny(None, *QUICK)])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and f"output.{key}" in err and "NUL" in err and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
