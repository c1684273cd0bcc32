"""Tune, inference and features as a user meets them after the stored study's objective, the
Forecaster's input checks and the flat-window indicators landed."""

from __future__ import annotations

import json

import pytest
import yaml

from hftraining.cli import main

from test_workflows_round9 import TINY  # noqa: E402


def test_a_study_without_a_scored_trial_takes_the_next_objective(tmp_path, capsys):
    """A tune whose every trial failed (here: a data folder that is not there) stored no score, so
    the next tune of that study may score by another metric: it was refused as if the study "scored
    its trials" with the first one, leaving only another --study and --out. Once a trial is scored,
    the objective it was scored by is the study's."""
    optuna = pytest.importorskip("optuna")
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    base = ["tune", "--config", str(cfg_file), "--study", "s", "--out", str(out), "--trials", "1"]
    assert main([*base, f"data.data_dir={json.dumps(str(tmp_path / 'missing'))}"]) == 2
    capsys.readouterr()
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "tune.journal"))))
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]

    assert main([*base, "evaluation.metric=mae"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert json.loads((out / "best.json").read_text())["metric"] == "eval_mae"
    assert main([*base, "evaluation.metric=mse"]) == 2  # the study now holds MAE scores
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "hftraining: error: evaluation.metric: study 's' scored its trials with evaluation.metric=\"mae\""), err
