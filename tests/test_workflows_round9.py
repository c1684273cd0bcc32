"""Workflows as a user meets them: a tune of a stored study with a config that scores trials otherwise,
and the output files of ``bench ett`` checked before any cell runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from hftraining.cli import main
from hftraining.core.config import load_config

ETT_DIR = Path(os.environ.get("HFTRAINING_ETT_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "ett"))
needs_ett = pytest.mark.skipif(not (ETT_DIR / "ETTh1.csv").exists(), reason=f"ETT CSVs not in {ETT_DIR}")

TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 4, "logging_steps": 2, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1, "report": False},
    "output": {"experiment_name": "objective", "tensorboard": False},
    "tune": {"seed": 0, "search_space": {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
}


def test_a_stored_study_is_not_continued_with_another_objective(tmp_path, capsys):
    """A tune of a stored study whose config scores trials by another metric (or horizon) is a one-line
    error naming the key, before any trial: its MSEs and the new MAEs were compared as one objective,
    the lowest of either kind reported as the best under the new metric's name. The report's best
    config is the config the best trial trained, whatever overrides the reporting command gives."""
    optuna = pytest.importorskip("optuna")
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    out = tmp_path / "out"
    base = ["tune", "--config", str(cfg_file), "--storage", db, "--study", "s", "--out", str(out)]
    assert main([*base, "--trials", "1"]) == 0
    capsys.readouterr()
    files = {name: (out / name).read_bytes() for name in ("trials.csv", "best.json", "best_config.yaml")}

    for override, key, stored in (("evaluation.metric=mae", "evaluation.metric", '"mse"'),
                                  ("data.prediction_horizon=3", "data.prediction_horizon", "2")):
        for trials in ("1", "0"):  # more trials, or the report of the stored ones under this config's metric
            assert main([*base, "--trials", trials, override]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"hftraining: error: {key}: study 's' scored its trials with "
                                                       f"{key}={stored}"), err
    assert len(optuna.load_study(study_name="s", storage=db).get_trials()) == 1  # no trial ran
    assert {name: (out / name).read_bytes() for name in files} == files  # the report is as it was
    assert main([*base, "--trials", "0"]) == 0  # the same objective still reports
    assert json.loads((out / "best.json").read_text())["metric"] == "eval_mse"


def test_the_best_config_is_what_the_best_trial_trained(tmp_path, capsys):
    """A ``--trials 0`` report (the README's last step on several machines) without the first tune's
    override writes best_config.yaml as the best trial trained, not --config with the trial's values."""
    pytest.importorskip("optuna")
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    base = ["tune", "--config", str(cfg_file), "--study", "s", "--out", str(tmp_path / "out")]
    assert main([*base, "--trials", "1", "training.max_steps=2"]) == 0
    assert main([*base, "--trials", "0"]) == 0
    printed = capsys.readouterr().out
    best = load_config(tmp_path / "out" / "best_config.yaml")
    trial = load_config(tmp_path / "out" / "trial-0000" / "config.json")
    assert best.training.max_steps == trial.training.max_steps == 2  # the command's config says 4
    assert best.training.learning_rate == trial.training.learning_rate
    assert best.output.output_dir is None and best.output.experiment_name == "s-best"
    assert f"best config: {tmp_path / 'out' / 'best_config.yaml'}\n" in printed
    # a trial folder not gathered into --out: the command's config with the trial's values, said so
    (tmp_path / "out" / "trial-0000" / "config.json").unlink()
    assert main([*base, "--trials", "0"]) == 0
    assert "is not in --out: --config and its overrides with the trial's values" in capsys.readouterr().out
    assert load_config(tmp_path / "out" / "best_config.yaml").training.max_steps == 4


def test_ett_output_folder_is_refused_before_the_data_is_read(tmp_path, capsys):
    # tmp_path holds no ETT CSV: the check comes first (it came after the cell had run, naming no flag)
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", "linear", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"hftraining: error: --out {tmp_path}: a folder; give a file name"
    same = str(tmp_path / "r.json")
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", "linear", "--out", same,
                 "--save-predictions", same]) == 2
    assert capsys.readouterr().err.strip() == \
        f"hftraining: error: --save-predictions {same}: also given as --out; give each its own file"
    (tmp_path / "ETTh1.csv").write_text("date,HUFL\n")  # an input file is never the output
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", "linear", "--out", str(tmp_path / "ETTh1.csv")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"hftraining: error: --out {tmp_path / 'ETTh1.csv'}: would overwrite the input data; choose a file outside --data"
    assert (tmp_path / "ETTh1.csv").read_text() == "date,HUFL\n"


@needs_ett
def test_ett_outputs_into_new_folders_are_written(tmp_path, capsys):
    """``--out`` and ``--save-predictions`` in folders that do not exist yet are written (they failed once
    the cell had run; the predictions' error named no file)."""
    out, pred = tmp_path / "a" / "b" / "ett.json", tmp_path / "c" / "pred.safetensors"
    rc = main(["bench", "ett", "--data", str(ETT_DIR), "--model", "linear", "--seq-len", "96", "--horizon", "96",
               "--out", str(out), "--save-predictions", str(pred)])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())["results"][0]
    assert f"test mse {r['ours']['test']['mse']:.4f}" in printed  # the printed figure is the file's
    from safetensors.numpy import load_file
    assert set(load_file(str(pred))) == {"linear_L=96/val", "linear_L=96/test"}
