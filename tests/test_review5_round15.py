"""Workers continuing one study together: a running trial holds a score to come only once its data passed the
study's checks. Two workers continuing a study of failed trials on corrected files each saw the other's trial
still preparing as scored, and both were refused for the files the failed trials read."""

import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from hftraining.core.config import load_config  # noqa: E402
from hftraining.core.errors import DataError  # noqa: E402
from hftraining.data.pipeline import panel_rows  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_round15 import study_config  # noqa: E402


def _bar_corrected(sample, row: int) -> None:
    aem = pd.read_csv(sample / "AEM.csv")
    aem.loc[row, "close"] *= 1.01  # one bar of the training rows
    aem.to_csv(sample / "AEM.csv", index=False)


def test_two_workers_continue_a_study_of_failed_trials_on_corrected_files(tmp_path):
    path, sample = study_config(tmp_path)
    cfg = load_config(path, ["data.cache_dir=null"])
    study = optuna.create_study()
    failed = study.ask()  # the first tune's trial is cut from the files, then its loss diverges
    tune.check_test_split(study, panel_rows(cfg.data), {}, failed.number)
    tune.check_data_unchanged(study, panel_rows(cfg.data), {}, failed.number)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    _bar_corrected(sample, 500)
    moved = load_config(path, ["data.cache_dir=null", 'data.split_dates={"val": "2024-01-02", "test": "2024-07-01"}'])
    source = panel_rows(moved.data)
    # two workers' trials start together: each prepares while the other's is running, neither holds a score
    a, b = study.ask(), study.ask()
    for trial in (a, b):
        tune.check_test_split(study, source, {}, trial.number)
        tune.check_data_unchanged(study, source, {}, trial.number)
    a.set_user_attr(tune.PREPARED_ATTR, True)
    # a running trial whose data passed the checks is scored as it ends: other files are refused beside it
    _bar_corrected(sample, 501)
    with pytest.raises(DataError, match=r"^data\.data_dir: symbol AEM's dates or closes before the test split"):
        tune.check_data_unchanged(study, panel_rows(moved.data), {}, b.number)


def test_a_trial_running_in_one_worker_refuses_another_on_changed_files(tmp_path, capsys, monkeypatch):
    from hftraining.cli import main
    from hftraining.train.trainer import NonFiniteError

    path, sample = study_config(tmp_path)
    out = tmp_path / "o"
    said = []

    def other_worker(*args, **kwargs):  # while this trial trains, another worker prepares on corrected files
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
        study = optuna.load_study(study_name="s", storage=storage)
        _bar_corrected(sample, 500)
        cfg = load_config(path, ["data.cache_dir=null"])
        with pytest.raises(DataError) as e:
            tune.check_data_unchanged(study, panel_rows(cfg.data), {}, study.ask().number)
        said.append(str(e.value))
        raise NonFiniteError("training: 3 optimizer steps in a row had a non-finite loss")

    monkeypatch.setattr(tune, "training_run", other_worker)
    main(["tune", "--config", str(path), "--trials", "1", "--out", str(out), "--study", "s"])
    capsys.readouterr()
    assert len(said) == 1 and said[0].startswith("data.data_dir: symbol AEM's dates or closes"), said
