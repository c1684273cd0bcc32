"""A study is continued on the data its scored trials were cut from, and only then: a study whose every trial
failed (its loss diverged on a bad bar, say) holds no score to compare with, so a tune of it after the files
were corrected runs, as it does after another objective or a moved range."""

from pathlib import Path

import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.train.trainer import NonFiniteError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_round15 import study_config  # noqa: E402


def _states(out: Path) -> list[str]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
    return [t.state.name for t in optuna.load_study(study_name="s", storage=storage).get_trials()]


def test_a_study_of_failed_trials_is_continued_on_corrected_files(tmp_path, capsys, monkeypatch):
    path, sample = study_config(tmp_path)
    out = tmp_path / "o"
    cmd = ["tune", "--config", str(path), "--trials", "1", "--out", str(out), "--study", "s"]

    def diverged(*args, **kwargs):
        raise NonFiniteError("training: 3 optimizer steps in a row had a non-finite loss")

    with monkeypatch.context() as m:  # the first tune's trial is cut from the files, then its loss diverges
        m.setattr(tune, "training_run", diverged)
        main(cmd)
    capsys.readouterr()
    assert _states(out) == ["FAIL"]
    aem = pd.read_csv(sample / "AEM.csv")
    aem.loc[500, "close"] *= 1.01  # the bad bar of the training rows corrected
    aem.to_csv(sample / "AEM.csv", index=False)
    assert main(cmd) == 0, capsys.readouterr().err
    assert _states(out) == ["FAIL", "COMPLETE"]
    # the study now holds a score: the data it was cut from is the study's, and another is refused
    aem.loc[501, "close"] *= 1.01
    aem.to_csv(sample / "AEM.csv", index=False)
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hftraining: error: data.data_dir: symbol AEM's dates or closes before the test split "
                              "are not those the earlier trials of study 's' were scored on"), err
