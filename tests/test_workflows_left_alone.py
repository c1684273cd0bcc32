"""Run workflows that trained for nothing or wiped each other's folders: an embargo (or cut) that
leaves the test or a needed validation split without a window is a one-line error before anything
trains (train, --seeds, walkforward); a matplotlib that cannot be imported is said before training,
not after the model is saved; a tune's trial folders are locked and never overwrite another study's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hftraining.cli import main
from conftest import tiny  # noqa: E402

FAST = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.report=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# ------------------------------------------------------------------------------------- empty splits


def test_an_embargo_that_empties_the_test_split_stops_before_training(tmp_path, capsys):
    """data.embargo=5000 on the bundled data: every test row is embargoed. The run trained, said
    "nothing to evaluate" and exited 0; now one line naming data.embargo and the split sizes, exit 2,
    and no run folder (nothing trained)."""
    run = tmp_path / "run"
    rc = main(["train", *tiny(run, *FAST, "data.embargo=5000")])
    line = _last_error(capsys)
    assert rc == 2, line
    assert line.startswith("hftraining: error: data: the test split yields no window") and "data.embargo=5000" in line
    assert "test 0" in line and "train " in line
    assert not run.exists()


def test_a_validation_split_emptied_by_the_embargo_is_refused_only_where_it_is_needed(tmp_path, capsys):
    """A small validation share and an embargo larger than it: the conformal intervals (calibrated on
    validation, on by default) were silently not made. Refused, naming the key that needs it; without
    intervals, early stopping or the best checkpoint the run trains and is scored."""
    common = ["data.val_ratio=0.02", "data.embargo=20"]
    rc = main(["train", *tiny(tmp_path / "a", *FAST, *common)])
    line = _last_error(capsys)
    assert rc == 2 and "the validation split yields no window" in line and "evaluation.intervals" in line, line
    assert "data.embargo=20" in line and "val 0" in line
    assert not (tmp_path / "a").exists()
    rc = main(["train", *tiny(tmp_path / "b", *FAST, *common, "evaluation.intervals=[]")])
    assert rc == 0 and json.loads((tmp_path / "b" / "eval.json").read_text())["split"] == "test"


def test_a_test_cut_placed_after_the_data_asks_for_no_test_and_trains(tmp_path, capsys):
    """data.split_dates with the test cut after the last row: the user asked for no test split; the run
    trains and says there is nothing to evaluate, exit 0 (as before)."""
    run = tmp_path / "run"
    rc = main(["train", *tiny(run, *FAST, 'data.split_dates={val: "2025-01-02", test: "2030-01-01"}')])
    assert rc == 0, _last_error(capsys)
    assert (run / "final" / "model.safetensors").is_file() and not (run / "eval.json").exists()


def test_seeds_with_an_empty_test_split_leave_the_earlier_run(tmp_path, capsys):
    """train --seeds 2 with output.overwrite=true into a folder holding an earlier run: the earlier
    run was removed, then the seeds trained for nothing; now the split is checked first."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text("{}")
    rc = main(["train", "--seeds", "2", *tiny(run, *FAST, "data.embargo=5000", "output.overwrite=true")])
    line = _last_error(capsys)
    assert rc == 2 and "the test split yields no window" in line and "data.embargo=5000" in line, line
    assert (run / "eval.json").read_text() == "{}" and not (run / "seed-0").exists()


def test_a_walk_forward_fold_without_validation_for_early_stopping_stops_before_training(tmp_path, capsys):
    """The embargo before each test block ate the folds' validation rows: early stopping never acted
    and every fold trained to max_steps, exit 0. Now one line naming the fold, the key and data.embargo."""
    run = tmp_path / "run"
    rc = main(["walkforward", "--folds", "2", *tiny(run, *FAST, "data.embargo=300", "training.early_stopping_patience=2")])
    line = _last_error(capsys)
    assert rc == 2, line
    assert "walkforward fold 1: its validation split yields no window" in line
    assert "training.early_stopping_patience=2" in line and "data.embargo=300" in line
    assert not (run / "walkforward" / "fold-1").exists()


def test_a_walk_forward_refused_for_its_splits_leaves_the_earlier_one(tmp_path, capsys):
    """output.overwrite=true with an embargo that empties the folds' validation split: the earlier
    walk-forward was removed, then the new one refused; now every fold is checked first."""
    run = tmp_path / "run"
    assert main(["walkforward", "--folds", "2", *tiny(run, *FAST)]) == 0
    before = sorted(p.name for p in (run / "walkforward").iterdir())
    rc = main(["walkforward", "--folds", "2", *tiny(run, *FAST, "output.overwrite=true", "data.embargo=300",
                                                    "training.early_stopping_patience=2")])
    line = _last_error(capsys)
    assert rc == 2 and "its validation split yields no window" in line, line
    assert sorted(p.name for p in (run / "walkforward").iterdir()) == before


def test_a_matplotlib_that_refuses_its_settings_is_one_line_before_training(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hftraining", "train", *tiny(run, *FAST, "evaluation.report=true")],
                          capture_output=True, text=True, timeout=120, env={**ENV, "MPLBACKEND": "nonexistent"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "matplotlib, which refuses its settings" in proc.stderr.strip().splitlines()[-1]
    assert not run.exists()


def test_a_cross_sectional_label_of_one_symbol_leaves_the_earlier_seeds(tmp_path, capsys):
    """A single run into a --seeds folder with output.overwrite: the seeds were removed, then the
    one-symbol cross-sectional label refused."""
    run = tmp_path / "run"
    assert main(["train", "--seeds", "2", *tiny(run, *FAST)]) == 0
    before = sorted(p.name for p in run.iterdir())
    rc = main(["train", *tiny(run, *FAST, "output.overwrite=true", "data.symbols=[AEM]", "data.target=cs_zscore")])
    line = _last_error(capsys)
    assert rc == 2 and "data.target" in line, line
    assert sorted(p.name for p in run.iterdir()) == before and (run / "seed-1").is_dir()


def test_a_walk_forward_embargo_that_leaves_no_training_rows_names_the_key(tmp_path, capsys):
    """The error said only that the training split had no rows to fit the scaler on."""
    rc = main(["walkforward", "--folds", "2", *tiny(tmp_path / "run", *FAST, "data.embargo=1000")])
    line = _last_error(capsys)
    assert rc == 2 and "the training split has no rows to fit the scaler on" in line and "data.embargo" in line, line


def test_a_finished_run_is_refused_before_the_data_are_read(tmp_path, capsys):
    """output.overwrite=false into a folder holding a finished run: the one-line refusal comes before
    the data are read (a missing data folder is not what is reported), as before the splits were checked."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    rc = main(["train", *tiny(run, *FAST, f"data.data_dir={tmp_path / 'none'}", "output.overwrite=false")])
    line = _last_error(capsys)
    assert rc == 2 and "holds a finished run (final/)" in line, line


# ------------------------------------------------------------------------------------- matplotlib

NO_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # as an environment without it (or with a broken install)
from hftraining.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_without_matplotlib_says_so_before_training(tmp_path):
    """The report is written last: without matplotlib the run trained, saved its model and died with a
    traceback (exit 1). Now one line naming matplotlib and the install command, exit 2, nothing trained."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, "train", *tiny(run, *FAST, "evaluation.report=true")],
                          capture_output=True, text=True, timeout=120, env=ENV)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert err[-1].startswith("hftraining: error: evaluation.report: the report needs matplotlib")
    assert "pip install" in err[-1] and "evaluation.report=false" in err[-1]
    assert not run.exists()


def test_tune_without_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    """tune imported matplotlib with the module: a ModuleNotFoundError traceback. Now one line, exit 2."""
    pytest.importorskip("optuna")
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    import hftraining.workflows as workflows

    # the module imported afresh below must not outlive the test (a later test patching the module it
    # imported would patch another): the CLI's run_tune is taken off first, while its lookup (PEP 562, on
    # hasattr) still finds the module imported before, so that one is put back; so is the package's attribute
    monkeypatch.delattr("hftraining.cli.run_tune", raising=False)
    monkeypatch.setattr(workflows, "tune", sys.modules.get("hftraining.workflows.tune"), raising=False)
    monkeypatch.delitem(sys.modules, "hftraining.workflows.tune", raising=False)
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(TUNE))
    rc = main(["tune", "--config", str(cfg), "--trials", "1", "--out", str(tmp_path / "out")])
    line = _last_error(capsys)
    assert rc == 2 and line.startswith("hftraining: error: tune: the report needs matplotlib") and "pip install" in line
    assert not (tmp_path / "out").exists()


def test_evaluate_without_matplotlib_says_so_before_scoring(tmp_path, monkeypatch, capsys):
    """``evaluate`` scored the split, then died with a traceback writing the report. Now one line naming
    matplotlib and ``--no-report``, exit 2; with ``--no-report`` it evaluates."""
    run = tmp_path / "run"
    assert main(["train", *tiny(run, *FAST)]) == 0
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    capsys.readouterr()
    rc = main(["evaluate", str(run), "--set", "evaluation.report=true"])
    line = _last_error(capsys)
    assert rc == 2 and line.startswith("hftraining: error: evaluation.report: the report needs matplotlib"), line
    assert "pip install" in line and "--no-report" in line
    assert main(["evaluate", str(run), "--no-report"]) == 0


# ------------------------------------------------------------------------------------- tune folders

TUNE = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 2, "logging_steps": 2, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1, "report": False},
    "output": {"experiment_name": "locks", "tensorboard": False, "progress_bar": "never"},
    "tune": {"seed": 0, "pruner": "none", "search_space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
}


def _tune(cfg: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hftraining", "tune", "--config", str(cfg), "--trials", "1",
                             "--out", str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)


def _tune_here(cfg: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    """(exit code, last line of stderr) of a one-trial tune in this process."""
    rc = main(["tune", "--config", str(cfg), "--trials", "1", "--out", str(out), *extra])
    return rc, _last_error(capsys)


def _learning_rate(trial_dir: Path) -> float:
    return json.loads((trial_dir / "config.json").read_text())["training"]["learning_rate"]


@pytest.fixture(scope="module")
def one_trial(tmp_path_factory) -> tuple[Path, Path]:
    """(config, output folder) of a finished one-trial tune of study ``s`` (default journal storage)."""
    pytest.importorskip("optuna")
    root = tmp_path_factory.mktemp("tune")
    cfg = root / "tune.yaml"
    cfg.write_text(yaml.safe_dump(TUNE))
    assert main(["tune", "--config", str(cfg), "--trials", "1", "--out", str(root / "out"), "--study", "s"]) == 0
    return cfg, root / "out"


def _copy(out: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(out, dest)
    return dest


def test_the_same_study_in_another_storage_leaves_the_trials_folders(one_trial, tmp_path, capsys):
    """``--study s`` again into the same --out, with another --storage: its trial numbers start at 0
    too, and its trial 0 replaced the first tune's trial-0000 (output.overwrite), exit 0."""
    cfg, first = one_trial
    out = _copy(first, tmp_path)
    before = _learning_rate(out / "trial-0000")
    rc, line = _tune_here(cfg, out, capsys, "--study", "s", "--storage", f"sqlite:///{tmp_path / 'other.db'}",
                          "tune.seed=7")
    assert rc == 2 and "trial-0000: already holds a run" in line, line
    assert _learning_rate(out / "trial-0000") == before


def test_an_output_folder_written_before_study_json_keeps_its_trials(one_trial, tmp_path, capsys):
    """An --out without study.json (written by an older version) holding trial folders: another study
    took it over, wrote its study.json and overwrote trial-0000. Refused now; the study of those trials
    (in the storage beside them) still continues in it and adopts the folder."""
    cfg, first = one_trial
    out = _copy(first, tmp_path)
    (out / "study.json").unlink()
    before = _learning_rate(out / "trial-0000")
    rc, line = _tune_here(cfg, out, capsys, "--study", "other", "tune.seed=3")
    assert rc == 2 and "holds trial folders (trial-0000)" in line, line
    assert _learning_rate(out / "trial-0000") == before and not (out / "study.json").exists()
    rc, line = _tune_here(cfg, out, capsys, "--study", "s")
    assert rc == 0, line
    assert json.loads((out / "study.json").read_text()) == {"study": "s"}
    assert _learning_rate(out / "trial-0000") == before and (out / "trial-0001" / "config.json").is_file()


HOLD = """
import sys
from pathlib import Path
from hftraining.workflows.train_run import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_trial_folder_another_run_trains_into_is_refused(tmp_path, capsys):
    """A train into <out>/trial-0000 (holding its run-folder lock) while a tune's trial 0 starts: the
    tune trained into it anyway (each removing the other's files). Now the trial is refused in one line."""
    pytest.importorskip("optuna")
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(TUNE))
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / "trial-0000")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, line = _tune_here(cfg, out, capsys, "--study", "s")
        assert rc == 2 and "another hftraining process is training into this run folder" in line, line
        assert list((out / "trial-0000").iterdir()) == []
    finally:
        holder.stdin.close()
        holder.wait(30)


@pytest.mark.slow
def test_two_tunes_of_one_study_name_in_two_storages_started_together(tmp_path):
    """Two processes, one --out and --study, two storages (the trial numbers of each start at 0): both
    trained into trial-0000 and exited 0, the folder holding a mix of both. Now one of them trains
    trial 0 and the other is refused in one line."""
    pytest.importorskip("optuna")
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(TUNE))
    out = tmp_path / "out"
    procs = [_tune(cfg, out, "--study", "s", "--storage", f"sqlite:///{tmp_path / f'{k}.db'}", f"tune.seed={k}")
             for k in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [err[-1500:] for _, err in results]
    loser = next(err for p, (_, err) in zip(procs, results) if p.returncode == 2).strip().splitlines()[-1]
    assert "trial-0000" in loser and ("already holds a run" in loser or "another hftraining process" in loser), loser
    winner = next(k for k, p in enumerate(procs) if p.returncode == 0)
    import optuna

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / f'{winner}.db'}")
    assert _learning_rate(out / "trial-0000") == pytest.approx(study.trials[0].params["training.learning_rate"])
