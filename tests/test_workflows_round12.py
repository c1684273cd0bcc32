"""The workflows across their combinations: ``evaluate RUN`` says what eval.json says of a test split that
``evaluation.max_test_windows`` cuts (the counts, and the report's sentence on them); ``walkforward`` and
``train --seeds`` with ``output.overwrite`` check the model and a cross-sectional label before they remove the
earlier run; a walk-forward (or tune.folds) fold whose training rows yield no window is named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.cli import main  # noqa: E402

FAST = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.intervals=[]", "evaluation.baseline_max_windows=300"]


def _sentence(md: str) -> str:
    """The report's line that counts the windows scored."""
    return next(line for line in md.splitlines() if " windows" in line and " steps, " in line)


def test_evaluate_of_a_cut_test_split_says_so_as_eval_json_does(tmp_path, capsys):
    """evaluation.max_test_windows=60 scores 60 of the test split's windows: eval.json said "windows_scored" 60 of
    "windows_in_split", and so did the report training wrote; ``evaluate RUN`` scored the same 60 windows but its
    JSON had neither key, and the report it wrote over the run's own said "60 windows" as if that were the split."""
    run = tmp_path / "run"
    assert main(["train", *tiny(run, *FAST, "evaluation.max_test_windows=60", "evaluation.report=true")]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["windows_scored"] == 60 < ev["windows_in_split"]
    trained = _sentence((run / "report.md").read_text(encoding="utf-8"))
    assert f"(the last dates' 60 of the split's {ev['windows_in_split']} windows: evaluation.max_test_windows)" \
        in trained
    capsys.readouterr()

    assert main(["evaluate", str(run), "--json"]) == 0  # the run's own evaluation: its report is rewritten
    got = json.loads(capsys.readouterr().out)
    assert (got["windows_scored"], got["windows_in_split"]) == (ev["windows_scored"], ev["windows_in_split"])
    assert list(got)[:5] == ["split", "model_dir", "windows_scored", "windows_in_split", "n_windows"]
    assert _sentence((run / "report.md").read_text(encoding="utf-8")) == trained

    # another split cut by the same cap says so too; an uncut one has neither key, as eval.json
    assert main(["evaluate", str(run), "--split", "all", "--json", "--no-report"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["windows_scored"] == whole["n_windows"] == 60 and whole["windows_in_split"] > ev["windows_in_split"]
    assert main(["evaluate", str(run), "--json", "--no-report", "--set", "evaluation.max_test_windows=null"]) == 0
    uncut = json.loads(capsys.readouterr().out)
    assert uncut["n_windows"] == ev["windows_in_split"] and "windows_scored" not in uncut


# --------------------------------------------------------------------- output.overwrite keeps the earlier run

FOLDS = [*FAST, "evaluation.max_test_windows=60", "evaluation.report=false"]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line_error(capsys, *words: str) -> None:
    err = capsys.readouterr().err  # the command's log lines (the feature store) come before it
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("hftraining: error: ") and err.count("error") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err


@pytest.mark.parametrize("bad, words", [
    (["model.type=seasonal_naive", "model.season_length=30"], ["model.season_length: 30"]),
    (["data.target=cs_rank"], ["data.target: cs_rank", "data.symbols"]),
], ids=["model", "cross-section"])
def test_walkforward_overwrite_keeps_the_earlier_one_when_the_model_or_the_label_cannot_train(tmp_path, capsys, bad,
                                                                                              words):
    """A walk-forward with output.overwrite=true whose model cannot be built for the window
    (model.season_length past data.sequence_length) or whose cross-sectional label has one symbol removed the
    earlier walk-forward, then stopped at its first fold's trainer: exit 2 and nothing left of either. Both are
    now said before anything is removed."""
    run = tmp_path / "run"
    assert main(["walkforward", "--folds", "2", *tiny(run, *FOLDS, "data.symbols=[AEM]")]) == 0
    before = _listing(run)
    capsys.readouterr()
    again = tiny(run, *FOLDS, "data.symbols=[AEM]", "output.overwrite=true", *bad)
    assert main(["walkforward", "--folds", "2", *again]) == 2
    _one_line_error(capsys, *words)
    assert _listing(run) == before


def test_train_seeds_overwrite_keeps_the_earlier_run_when_the_model_cannot_be_built(tmp_path, capsys):
    """``train --seeds`` with output.overwrite=true removed the earlier --seeds run before its first seed's
    trainer found that the model cannot be built (model.season_length past the window, gradient checkpointing on
    a model without it): exit 2 and the earlier seeds, ensemble and seeds.json gone."""
    run = tmp_path / "run"
    assert main(["train", "--seeds", "2", *tiny(run, *FOLDS)]) == 0
    before = _listing(run)
    capsys.readouterr()
    for n, bad, words in (("1", ["model.type=seasonal_naive", "model.season_length=30"], ["model.season_length: 30"]),
                          ("2", ["model.type=dlinear", "model.moving_avg=5", "training.gradient_checkpointing=true"],
                           ["training.gradient_checkpointing", "dlinear"])):
        assert main(["train", "--seeds", n, *tiny(run, *FOLDS, "output.overwrite=true", *bad)]) == 2
        _one_line_error(capsys, *words)
        assert _listing(run) == before, bad


def test_walkforward_names_the_fold_whose_training_rows_yield_no_window(tmp_path, capsys):
    """data.train_ratio=0.01 leaves the first expanding fold 15 dates to train on: the error said "the training
    split yields no window" of data whose train/val/test split has thousands, without naming the fold."""
    assert main(["walkforward", "--folds", "3", *tiny(tmp_path / "run", *FOLDS, "data.train_ratio=0.01")]) == 2
    _one_line_error(capsys, "walkforward fold 1 of 3 (expanding): ", "training split yields no window",
                    "data.sequence_length")
    assert not (tmp_path / "run" / "walkforward" / "fold-1").exists()


def test_tune_names_the_fold_whose_training_rows_yield_no_window(tmp_path, capsys):
    """tune.folds=3 with data.train_ratio=0.02 leaves the first fold of the rows before the test split too
    few dates: the error named neither tune.folds nor the fold (its folder is trial-NNNN/fold-0/)."""
    pytest.importorskip("optuna")
    cfg = {"model": {"type": "ridge"},
           "data": {"sequence_length": 20, "prediction_horizon": 3, "symbols": ["AEM", "WPM"], "train_ratio": 0.02},
           "training": {"max_steps": 2, "save_steps": 0},
           "evaluation": {"eval_steps": 2, "report": False, "intervals": []},
           "output": {"experiment_name": "short", "tensorboard": False, "progress_bar": "never"},
           "tune": {"seed": 0, "sampler": "random", "pruner": "none", "folds": 3, "search_space": {
               "model.ridge_lags": {"choices": [5, 10]}}}}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "1", "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "tune.folds: walk-forward fold 0 of 3 (expanding): ", "training split yields no window")
