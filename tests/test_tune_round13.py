"""hftraining tune as a user reads its results: a trial stopped by a user error keeps its one-line
reason in the study, and the report of the study says it; trials.csv is a CSV file that a CSV reader
reads back, with the values each trial trained (choices of lists and dicts included)."""

import csv
import json

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.workflows import tune  # noqa: E402

TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 2, "logging_steps": 2, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
    "output": {"experiment_name": "r13", "tensorboard": False},
    "tune": {"seed": 0, "sampler": "random", "pruner": "none", "search_space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    }},
}


def _study(out, name):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_a_trial_stopped_by_a_user_error_keeps_its_reason_for_the_report(tmp_path, capsys):
    """The trial that stopped the tune is stored as failed with the one line the command printed, and
    the report of the study (``--trials 0``) counts it and says why (it read "1 fail" with no reason)."""
    missing = tmp_path / "no-such-data"
    cfg = dict(TINY, data={**TINY["data"], "data_dir": str(missing)})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["tune", "--config", str(path), "--out", str(tmp_path / "o"), "--study", "u"]
    assert main([*argv, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    line = f"{missing}: no such file or folder"
    assert err.splitlines()[-1] == f"hftraining: error: {line}"
    (trial,) = _study(tmp_path / "o", "u").get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get(tune.FAIL_REASON) == line
    assert main([*argv, "--trials", "0"]) == 0
    printed = capsys.readouterr().out
    assert "study u: 1 trial(s) — 0 complete, 0 pruned, 1 fail" in printed
    assert f"trial 0 failed: {line}" in printed.splitlines()


def test_trials_csv_reads_back_with_the_values_each_trial_trained(tmp_path, capsys):
    """Choices of lists and dicts, an int range with a step and a log range: every row of trials.csv
    has one cell per column (the JSON of a list or dict value was written with backslash-escaped
    quotes, which CSV readers split at its commas), and each cell holds what the trial's config.json
    holds, an int as an int."""
    cfg = dict(TINY, data={**TINY["data"], "split_dates": {"val": "2024-05-17", "test": "2025-06-02"}},
               tune={**TINY["tune"], "search_space": {
                   "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                   "model.num_layers": {"type": "int", "low": 1, "high": 3, "step": 2},
                   "data.features": {"choices": [["log_return_1", "rsi_14"], ["log_return_1", "macd_12_26_9"]]},
                   "training.optimizer_kwargs": {"choices": [{}, {"amsgrad": True}]},
               }})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert main(["tune", "--config", str(path), "--trials", "3", "--out", str(out), "--study", "c"]) == 0
    capsys.readouterr()
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["trial", "state"] and len(body) == 3
    assert all(len(r) == len(header) for r in body), rows
    for r in body:
        row = dict(zip(header, r))
        assert row["state"] == "complete"
        trained = json.loads((out / f"trial-{int(row['trial']):04d}" / "config.json").read_text())
        assert json.loads(row["data.features"]) == trained["data"]["features"]
        assert json.loads(row["training.optimizer_kwargs"]) == trained["training"]["optimizer_kwargs"]
        assert isinstance(trained["model"]["num_layers"], int) and trained["model"]["num_layers"] in (1, 3)
        assert row["model.num_layers"] == str(trained["model"]["num_layers"])
        assert float(row["training.learning_rate"]) == trained["training"]["learning_rate"]
        assert 1e-4 <= trained["training"]["learning_rate"] <= 1e-2


def test_drawn_values_the_config_refuses_fail_their_trial_and_the_search_goes_on(tmp_path, capsys):
    """The lowest, highest and middle hidden sizes (16, 24, 20) take 2 or 4 heads, so the space is
    accepted before the study; a draw between them (21 with 4 heads, say) is a configuration the config
    refuses. Its trial fails with the reason, which names the drawn values, and the other trials run
    (the first such draw stopped the tune with "model.num_heads: 4 does not divide model.hidden_size 21",
    which did not say that the search space drew it)."""
    cfg = dict(TINY, tune={**TINY["tune"], "search_space": {
        "model.hidden_size": {"type": "int", "low": 16, "high": 24},
        "model.num_heads": {"choices": [2, 4]},
    }})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    rc = main(["tune", "--config", str(path), "--trials", "5", "--out", str(out), "--study", "h"])
    printed, err = capsys.readouterr()
    trials = _study(out, "h").get_trials()
    assert len(trials) == 5, err
    refused = [t for t in trials if t.params["model.hidden_size"] % t.params["model.num_heads"]]
    assert refused and len(refused) < len(trials), [t.params for t in trials]  # seed 0 draws both kinds
    assert rc == 0 and "Traceback" not in err, err
    for t in trials:
        h, k = t.params["model.hidden_size"], t.params["model.num_heads"]
        if t in refused:
            why = t.user_attrs[tune.FAIL_REASON]
            assert t.state == optuna.trial.TrialState.FAIL and not t.intermediate_values
            assert why.startswith(f"tune.search_space: model.hidden_size={h}, model.num_heads={k}: ") and \
                f"does not divide model.hidden_size {h}" in why, why
            assert f"trial {t.number} failed: {why}" in printed.splitlines()
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE
    assert f"5 trial(s) — {5 - len(refused)} complete, 0 pruned, {len(refused)} fail" in printed
    sel = json.loads((out / "selection.json").read_text())
    assert sel["n_tried"] == 5 - len(refused)  # refused before any validation evaluation: not judged
