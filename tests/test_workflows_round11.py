"""Workflows that run many trainings in one command: a warning every run would repeat (bf16 autocast
computed in software) is said once per command, in the command's own words (``bench ett`` names its
``--bf16`` flag); tune's pruner warm-up is counted within each fold of ``tune.folds``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401  (the hftraining logger's records)

import hftraining.train.runner as runner  # noqa: E402
from hftraining.cli import main  # noqa: E402

SAID = "on a CPU without bf16 instructions"
FAST = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.report=false", "evaluation.intervals=[]",
        "evaluation.max_test_windows=60", "evaluation.baseline_max_windows=300"]
ETT_DIR = Path(os.environ.get("HFTRAINING_ETT_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "ett"))


def _said(records) -> list[str]:
    return [r.getMessage() for r in records if SAID in r.getMessage()]


@pytest.fixture
def software_bf16(monkeypatch):
    """A CPU without bf16 instructions, as the trainer and ``bench ett`` ask."""
    from hftraining.workflows import ett

    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(ett, "cpu_has_bf16", lambda: False, raising=False)


@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_walkforward_says_software_bf16_once_for_all_its_folds(tmp_path, logged, software_bf16):
    """Each fold built its own trainer and said the warning again: three folds, three lines."""
    run = tmp_path / "run"
    assert main(["walkforward", "--folds", "3", *tiny(run, *FAST, "training.precision=bf16")]) == 0
    said = _said(logged)
    assert len(said) == 1 and said[0].endswith("training.precision=fp32 trains in fp32"), said
    assert SAID in (run / "walkforward" / "fold-1" / "train.log").read_text()  # the first fold's log keeps it


def test_train_seeds_says_software_bf16_once(tmp_path, logged, software_bf16):
    assert main(["train", "--seeds", "2", *tiny(tmp_path / "run", *FAST, "training.use_mixed_precision=true")]) == 0
    said = _said(logged)
    assert len(said) == 1 and said[0].endswith("training.use_mixed_precision=false trains in fp32"), said


def test_a_later_command_says_it_again(tmp_path, logged, software_bf16):
    """Once per command, not once per process: a second walk-forward in the same process warns again."""
    for name in ("a", "b"):
        assert main(["walkforward", "--folds", "2", *tiny(tmp_path / name, *FAST, "training.precision=bf16")]) == 0
    assert len(_said(logged)) == 2


def test_tune_says_software_bf16_once_for_all_its_trials(tmp_path, logged, software_bf16):
    pytest.importorskip("optuna")
    cfg = {"model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
           "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
           "training": {"max_steps": 2, "logging_steps": 1, "save_steps": 0, "precision": "bf16"},
           "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
           "output": {"experiment_name": "bf16", "tensorboard": False, "progress_bar": "never"},
           "tune": {"seed": 0, "sampler": "random", "pruner": "none", "folds": 2, "search_space": {
               "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "2", "--out", str(tmp_path / "out")]) == 0
    assert len(_said(logged)) == 1, _said(logged)  # 2 trials × 2 folds said it 4 times


@pytest.mark.skipif(not (ETT_DIR / "ETTh1.csv").exists(), reason=f"ETT CSVs not in {ETT_DIR}")
@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_bench_ett_bf16_names_its_own_flag_once(tmp_path, logged, software_bf16, capsys):
    """``bench ett --bf16`` said the trainer's warning, which named training.precision=fp32, a key the
    command has no flag for, once per cell."""
    rc = main(["bench", "ett", "--data", str(ETT_DIR), "--dataset", "ETTh1", "--horizon", "96", "192",
               "--model", "dlinear", "--seq-len", "48", "--epochs", "1", "--batch-size", "512",
               "--evals-per-epoch", "1", "--no-ensemble", "--bf16", "--run-dir", str(tmp_path / "ett")])
    assert rc == 0, capsys.readouterr().err
    said = _said(logged)
    assert len(said) == 1 and said[0].startswith("warning: --bf16 on a CPU without bf16 instructions"), said
    assert "without --bf16" in said[0] and "training." not in said[0], said


# ------------------------------------------------------------------------------------- the pruner


def test_the_pruner_warmup_is_counted_within_each_fold():
    """tune.pruner_warmup_evals=2 with tune.folds=2: a trial's first report of fold 1 is its third in
    all, and was judged at once (the warm-up counted fold 0's two reports); it now waits for the
    fold's second report, as fold 0 did."""
    optuna = pytest.importorskip("optuna")
    from hftraining.core.config import load_config
    from hftraining.workflows import tune

    cfg = load_config(None, ["tune.folds=2", "tune.pruner_startup_trials=1", "tune.pruner_warmup_evals=2",
                             'tune.search_space={"training.max_steps": {"choices": [2, 4]}}'])
    study = optuna.create_study(direction="minimize", pruner=tune._pruner(optuna, cfg))
    for _ in range(2):  # fold 0 reports at steps 2, 4, fold 1 at 6, 8
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=1.0,
                                                  intermediate_values={2: 1.0, 4: 1.0, 6: 1.0, 8: 1.0}))
    trial = study.ask()
    trial.report(100.0, 2)
    assert not trial.should_prune()  # fold 0, first report: warming up
    trial = study.ask()
    for step in (2, 4):
        trial.report(1.0, step)
    trial.report(100.0, 6)
    assert not trial.should_prune()  # fold 1, first report: warming up as fold 0 did
    trial.report(100.0, 8)
    assert trial.should_prune()  # fold 1, second report, worse than the median


# ------------------------------------------------------------------------------------- bench ett


def test_the_ett_table_shows_a_horizon_the_papers_did_not_publish():
    """``bench ett --horizon 24`` ran every cell, then stopped at its table with an IndexError (the row had
    no published columns); those columns and ours/P64 now read a dash, the others their figures."""
    from hftraining.workflows import ett

    scores = {"test": {"mse": 0.4, "mae": 0.5}}
    cell = {"ours": {"name": "dlinear", **scores}, "linear_map": {"fit_seconds": 1.0, **scores}, "total_seconds": 3.0}
    table = ett.format_table([{"dataset": "ETTh1", "horizon": 24, **cell}, {"dataset": "ETTh1", "horizon": 96, **cell}])
    head, _, short, published = table.splitlines()[:4]
    assert short.split() == ["ETTh1", "24", "0.400/0.500", "0.400/0.500", *["—"] * 5, "1.000", "3"]
    assert published.split()[4:7] == ["0.370/0.400", "0.375/0.399", "0.375/0.399"]
    assert published.split()[8] == f"{0.4 / 0.370:.3f}"


def test_identical_series_among_more_trials_tried_deflate_nothing_and_say_why():
    """Two trials with one series (a searched setting that changed nothing) among six tried (four pruned,
    no series): the spread of the Sharpe ratios read 0, so the best of six by chance was 0 and a DSR of
    0.995 deflated nothing; the spread is unknown, as with one series among several tried."""
    from hftraining.eval import selection as SEL

    rng = np.random.default_rng(5)
    x = rng.normal(0.001, 0.01, 64)
    dates = np.arange(64, dtype=np.int64) * 86_400 * 10**9
    sel = SEL.selection_stats({0: (dates, x), 1: (dates, x.copy())}, 0, "tune trials", n_tried=6)
    assert sel["dsr"] is None and "identical series and 4 others have none" in sel["dsr_skipped"]
    assert SEL.selection_stats({0: (dates, x), 1: (dates, x.copy())}, 0, "tune trials")["dsr"] is not None
