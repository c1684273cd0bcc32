"""hftraining tune, a study a user can trust and resume: a study continued with another search space,
or on files whose rows before the test split changed, is refused with one line naming the key or the
symbol (the best trial was chosen among two searches or two data sets, or Optuna's traceback stopped
the tune); and W&B gets no history row for a logging step whose every value is left out, as the other
backends hold none."""

import copy
import shutil
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml

optuna = pytest.importorskip("optuna")

import hftraining  # noqa: E402
from hftraining.cli import main  # noqa: E402
from hftraining.train.tracking import WandbTracker  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_audit import TINY  # noqa: E402

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
OPT = {"choices": ["adamw", "lion"]}


def _tune(tmp_path, space, trials, training=None, name="c.yaml"):
    cfg = copy.deepcopy(TINY)
    cfg["tune"]["search_space"] = space
    cfg["training"].update(training or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return main(["tune", "--config", str(path), "--trials", str(trials), "--out", str(tmp_path / "o"), "--study", "s"])


def _trials(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "o" / "tune.journal")))
    return optuna.load_study(study_name="s", storage=storage).get_trials()



def study_config(tmp_path: Path) -> tuple[Path, Path]:
    """(a tiny tune config's path, the folder of copies of two bundled symbols' files it reads), split by
    fixed dates, so rows added to a file's end fall in its test split."""
    bundled = Path(hftraining.__file__).parent / "sample_data"
    sample = tmp_path / "prices"
    sample.mkdir()
    for sym in ("AEM", "WPM"):
        shutil.copy(bundled / f"{sym}.csv", sample / f"{sym}.csv")
    cfg = copy.deepcopy(TINY)
    cfg["data"].update(data_dir=str(sample), symbols=None, split="calendar",
                       split_dates={"val": "2024-01-02", "test": "2025-01-02"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, sample

def test_a_study_continued_with_another_search_space_is_one_line_naming_the_key(tmp_path, capsys):
    """Other choices stopped the tune with Optuna's traceback (CategoricalDistribution does not support
    dynamic value space); a moved range, a key added or removed ran on, and the best trial was chosen among
    trials of two searches. Each is now one line naming the key before any trial, also for a --trials 0
    report (the study's own space continues it: test_tune_audit's resumed study)."""
    assert _tune(tmp_path, {"training.learning_rate": LR, "training.optimizer": OPT}, 1) == 0
    capsys.readouterr()
    changed = {
        "training.optimizer": {"training.learning_rate": LR, "training.optimizer": {"choices": ["adamw", "sgd"]}},
        "training.learning_rate": {"training.learning_rate": dict(LR, high=1e-1), "training.optimizer": OPT},
        "model.dropout": {"training.learning_rate": LR, "training.optimizer": OPT,
                          "model.dropout": {"type": "float", "low": 0.0, "high": 0.2}},
    }
    removed = {"training.optimizer": {"training.learning_rate": LR}}
    cases = [(key, space, 1) for key, space in [*changed.items(), *removed.items()]]
    for key, space, trials in [*cases, ("training.optimizer", changed["training.optimizer"], 0)]:
        rc = _tune(tmp_path, space, trials)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (key, err)
        assert err[0].startswith(f"hftraining: error: tune.search_space.{key}: study 's' searched another space"), err
        assert "another --study" in err[0]
    assert [t.state.name for t in _trials(tmp_path)] == ["COMPLETE"]  # no trial ran for a refused space


def test_a_study_of_failed_trials_only_takes_a_moved_range(tmp_path, capsys):
    """A failed trial holds no score: a range moved after every trial diverged is the next search, not
    refused (Optuna stores the new draws beside the failed ones)."""
    diverging = {"max_consecutive_nonfinite": 1, "weight_decay": 0.0}  # a decay of 1e30 x wd is refused at load
    assert _tune(tmp_path, {"training.learning_rate": {"type": "float", "low": 1e29, "high": 1e30}}, 1, diverging) == 2
    moved = {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}
    assert _tune(tmp_path, moved, 1, diverging) == 0, capsys.readouterr().err
    assert [t.state.name for t in _trials(tmp_path)] == ["FAIL", "COMPLETE"]


def test_each_trial_draws_from_the_distributions_the_study_is_checked_against():
    """What check_space_unchanged compares with is what suggest stores: a step range whose high is off the
    grid, an int range with a step, a log range and a choice of lists."""
    space = tune.parse_space({
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.35, "step": 0.1},
        "model.num_layers": {"type": "int", "low": 1, "high": 6, "step": 2},
        "training.learning_rate": LR,
        "data.symbols": {"choices": [["AEM"], ["AEM", "WPM"]]},
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        values = tune.suggest(trial, space)
        assert values["data.symbols"] in (["AEM"], ["AEM", "WPM"])
        assert trial.distributions == tune.space_distributions(space)
        study.tell(trial, 1.0)
    tune.check_space_unchanged(study, space)
    with pytest.raises(tune.ConfigError, match=r"^tune\.search_space\.model\.dropout: .*high: 0\.3, log: false, step: 0\.1\}"):
        tune.check_space_unchanged(study, {**space, "model.dropout": {**space["model.dropout"], "step": 0.05}})



class _Run:
    """What WandbTracker calls of a W&B run: its logged history rows."""

    def __init__(self):
        self.rows = []

    def log(self, row):
        self.rows.append(row)


def test_wandb_gets_no_history_row_for_a_step_whose_every_value_is_left_out():
    """A NaN or infinite value is left out of every backend; a logging step whose values all are (a
    validation of nothing to score) added a W&B history row of the step alone, where TensorBoard and
    MLflow hold nothing for it. The other steps are logged as before, their finite values only."""
    tracker = WandbTracker()
    tracker.wandb = types.SimpleNamespace(errors=types.SimpleNamespace(Error=RuntimeError))
    tracker.run, tracker.step = _Run(), 0
    nan, inf = float("nan"), float("inf")
    tracker.on_log(2, {"loss": 0.5, "grad_norm": inf})
    tracker.on_log(4, {"eval_rank_ic": nan, "eval_mse_vs_zero": -inf})
    tracker.on_log(6, {"eval_mse": 1.5})
    assert tracker.run.rows == [{"step": 2, "train/loss": 0.5}, {"step": 6, "eval/mse": 1.5}]
    assert tracker.step == 6


def test_a_study_continued_on_changed_files_is_one_line_naming_the_symbol(tmp_path, capsys):
    """Prices revised inside the training rows (a split adjustment, a corrected bar) between two tunes of one
    study: the second tune's trials were scored on other data than the first's and compared with them, and a
    symbol's file added to the folder was trained on with the same test cut. Each is now one line naming the
    symbol; rows added to the test split alone (the cut fixed by data.split_dates) continue the study."""
    path, sample = study_config(tmp_path)
    cmd = ["tune", "--config", str(path), "--trials", "1", "--out", str(tmp_path / "o"), "--study", "s"]
    assert main(cmd) == 0, capsys.readouterr().err
    capsys.readouterr()
    aem = pd.read_csv(sample / "AEM.csv")
    revised = aem.copy()
    revised.loc[500, "close"] *= 1.01  # one bar of the training rows corrected
    revised.to_csv(sample / "AEM.csv", index=False)
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hftraining: error: data.data_dir: symbol AEM's dates or closes before the test split "
                              "are not those the earlier trials of study 's' were scored on"), err
    aem.to_csv(sample / "AEM.csv", index=False)
    shutil.copy(sample / "WPM.csv", sample / "XYZ.csv")
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hftraining: error: data.data_dir: symbol XYZ is not among the symbols"), err
    (sample / "XYZ.csv").unlink()
    longer = pd.concat([aem, aem.tail(1).assign(Date="2099-01-02")])  # a bar after the last: the test split grows
    longer.to_csv(sample / "AEM.csv", index=False)
    assert main(cmd) == 0, capsys.readouterr().err
    assert [t.state.name for t in _trials(tmp_path)] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
