"""Recomputation audit of what a user picks a model by: a tune trial's score is the score of the
model the trial keeps; a walk-forward fold's test period is the period its forecasts are scored on."""

import json

import pytest
import yaml

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.workflows.walkforward import format_walkforward, walk_forward

from conftest import tiny

TINY_TUNE = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 6, "logging_steps": 3, "save_steps": 0, "learning_rate": 0.01},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
    "output": {"experiment_name": "audit", "tensorboard": False},
    "tune": {"seed": 0, "pruner": "none", "search_space": {"model.pooling": {"choices": ["last"]}}},
}


def test_a_trial_scores_the_weights_it_keeps_not_a_later_smaller_score(tmp_path, capsys):
    """With training.load_best_model_at_end the trial keeps the best checkpoint, which the trainer
    picks by an improvement of more than training.early_stopping_threshold. A later validation score
    that is lower by less than the threshold belongs to weights the trial does not keep (nor its
    out-of-sample series, nor best_config.yaml's retraining): the trial's value, by which the best
    trial is chosen, is the kept checkpoint's score."""
    optuna = pytest.importorskip("optuna")
    cfg = {**TINY_TUNE, "training": {**TINY_TUNE["training"], "load_best_model_at_end": True,
                                     "early_stopping_threshold": 1.0}}  # no later score improves by 1.0
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(cfg))
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    out = tmp_path / "out"
    assert main(["tune", "--config", str(tmp_path / "tune.yaml"), "--trials", "1", "--storage", db,
                 "--study", "kept", "--out", str(out)]) == 0
    capsys.readouterr()
    trial = optuna.load_study(study_name="kept", storage=db).get_trials()[0]
    reports = dict(sorted(trial.intermediate_values.items()))
    assert list(reports) == [2, 4, 6]
    # the run's last checkpoint names the checkpoint whose weights the run keeps
    state = json.loads((out / "trial-0000" / "checkpoints" / "step-00000006" / "trainer_state.json").read_text())
    assert state["best_checkpoint"] == "step-00000002" and state["best_step"] == 2
    assert min(reports.values()) < reports[2]  # a later, smaller score exists: the case at issue
    assert trial.value == reports[2] == state["best_metric"]
    assert json.loads((out / "best.json").read_text())["value"] == reports[2]


def test_a_folds_test_period_is_the_dates_its_forecasts_are_scored_on(tmp_path, capsys):
    """walkforward.json's test_from / test_to (the table's test period) of each fold are the first and
    last dates of its test block, as the fold's data_report.json gives them for every symbol, not the
    forecast origins (the first origin is the last row before the block; the last lies H rows before
    its end), so consecutive folds' periods follow each other without overlapping."""
    cfg = load_config(None, tiny(
        tmp_path / "wf", "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=3",
        "data.symbols=[AEM, WPM]", "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
    ))
    res = walk_forward(cfg, 2)
    capsys.readouterr()
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())
    for f in saved["folds"]:
        report = json.loads((tmp_path / "wf" / "walkforward" / f"fold-{f['fold']}" / "data_report.json").read_text())
        spans = [s["test"] for s in report["split"]["symbols"].values() if s["test"]]
        assert (f["test_from"], f["test_to"]) == (min(a for a, _ in spans)[:10], max(b for _, b in spans)[:10])
    assert saved["folds"][0]["test_to"] < saved["folds"][1]["test_from"]
    first = saved["folds"][0]
    assert f"{first['test_from']}..{first['test_to']}" in format_walkforward(res)
