"""A study is continued on the rows its scored trials were cut from, whatever else it searches: a searched key
that does not change a symbol's rows (``data.sequence_length``) shares the record of the files, so changed
files are refused; the refusal says whether a data setting or the files changed; and a study whose every
trial failed takes a moved test cut, as it takes corrected files."""

import types
from pathlib import Path

import pandas as pd
import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.train.trainer import NonFiniteError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_round15 import study_config  # noqa: E402


def _study(out: Path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
    return optuna.load_study(study_name="s", storage=storage)


def _cmd(path: Path, out: Path, *overrides: str) -> list[str]:
    return ["tune", "--config", str(path), "--trials", "1", "--out", str(out), "--study", "s", *overrides]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error line"
    return err[-1]


def _failed_study(path: Path, out: Path, monkeypatch, capsys) -> None:
    """Study 's' in ``out`` with one trial, failed (its loss diverged): no score, its objective recorded."""
    def diverged(*args, **kwargs):
        raise NonFiniteError("training: 3 optimizer steps in a row had a non-finite loss")

    with monkeypatch.context() as m:
        m.setattr(tune, "training_run", diverged)
        main(_cmd(path, out))
    capsys.readouterr()
    assert [t.state.name for t in _study(out).get_trials()] == ["FAIL"]


def test_a_study_searching_sequence_length_is_refused_on_changed_files(tmp_path, capsys):
    """Each drawn data.sequence_length had its own record of the files, so a trial drawing a length no earlier
    trial drew was never compared: a bar corrected between two tunes went unnoticed and its score was ranked
    beside scores of the old files. The window length does not change a symbol's rows: one record."""
    path, sample = study_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["tune"]["search_space"] = {"data.sequence_length": {"type": "int", "low": 8, "high": 24}}
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert main(_cmd(path, out)) == 0, capsys.readouterr().err
    capsys.readouterr()
    aem = pd.read_csv(sample / "AEM.csv")
    aem.loc[500, "close"] *= 1.01  # one bar of the training rows corrected
    aem.to_csv(sample / "AEM.csv", index=False)
    assert main(_cmd(path, out)) == 2
    assert _error(capsys).startswith(
        "hftraining: error: data.data_dir: symbol AEM's dates or closes before the test split are not those the "
        "earlier trials of study 's' were scored on (the files changed)")
    trials = _study(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    # the refused trial drew another length than the scored one: a record per length would not have compared them
    assert trials[0].params["data.sequence_length"] != trials[1].params["data.sequence_length"]


def test_a_data_setting_changed_between_tunes_is_named_not_blamed_on_the_files(tmp_path, capsys):
    """A second tune of the study with data.symbols narrowed said "(the files changed)" of files nobody touched;
    the line now names the setting with both values. A record made without its settings says both causes."""
    path, sample = study_config(tmp_path)
    out = tmp_path / "o"
    assert main(_cmd(path, out)) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(_cmd(path, out, 'data.symbols=["AEM"]')) == 2
    line = _error(capsys)
    assert line.startswith("hftraining: error: data.symbols: symbol WPM, whose rows the earlier trials of study 's' "
                           "were scored on, is not in the data (data.symbols was null for them, this config gives "
                           '["AEM"])'), line
    assert "files changed" not in line
    # the same settings, other files: the files are named
    aem = pd.read_csv(sample / "AEM.csv")
    aem.loc[500, "close"] *= 1.01
    aem.to_csv(sample / "AEM.csv", index=False)
    assert main(_cmd(path, out)) == 2
    assert "(the files changed)" in _error(capsys)
    # a record that holds no settings (a study recorded before they were): either cause is said
    study = _study(out)
    for k in list(study.user_attrs):
        if k.startswith(f"{tune.DATA_SETTINGS_ATTR}."):
            study.set_user_attr(k, None)
    assert main(_cmd(path, out)) == 2
    line = _error(capsys)
    assert "(the files changed, or one of the data settings data.data_dir, data.symbols, data.features" in line, line


def test_a_study_of_failed_trials_takes_a_moved_test_cut(tmp_path, capsys, monkeypatch):
    """A study whose only trial failed held no score, yet a tune of it after the cut moved (data.split_dates
    corrected) was refused as a moved test split. It now runs and records the new cut, which the trials scored
    after it keep."""
    path, _ = study_config(tmp_path)
    out = tmp_path / "o"

    _failed_study(path, out, monkeypatch, capsys)
    moved = 'data.split_dates={"val": "2024-01-02", "test": "2024-07-01"}'
    assert main(_cmd(path, out, moved)) == 0, capsys.readouterr().err
    assert [t.state.name for t in _study(out).get_trials()] == ["FAIL", "COMPLETE"]
    # the study now holds a score: the cut it was scored with is the study's, the first config's is refused
    assert main(_cmd(path, out)) == 2
    line = _error(capsys)
    assert line.startswith("hftraining: error: tune.search_space: the config moves the shared test cut from "
                           "2024-07-01 (earlier trials) to 2025-01-02"), line


def test_a_symbol_one_draw_leaves_out_for_its_length_is_not_a_changed_file(monkeypatch):
    """Whether a short symbol is kept depends on the rows a window needs (a drawn data.sequence_length): a draw
    that leaves it out, or the first that keeps it, is no change of the files; its rows, once kept, are
    compared as every symbol's."""
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)  # a scored trial: the data is compared
    d = types.SimpleNamespace(**{k: None for k in tune.ROW_SETTINGS})

    def source(rows: dict[str, str], short: list[str]):
        monkeypatch.setattr(tune, "rows_before_test", lambda s: dict(rows))
        return types.SimpleNamespace(d=d, report={"skipped_symbols": short})

    long_ = {"data.sequence_length": 300}
    tune.check_data_unchanged(study, source({"AEM": "a"}, ["NEW"]), long_)  # NEW too short for 300 rows
    tune.check_data_unchanged(study, source({"AEM": "a", "NEW": "n"}, []), {"data.sequence_length": 16})
    tune.check_data_unchanged(study, source({"AEM": "a"}, ["NEW"]), long_)
    with pytest.raises(tune.DataError, match=r"^data\.data_dir: symbol NEW's dates or closes .*\(the files changed\)"):
        tune.check_data_unchanged(study, source({"AEM": "a", "NEW": "n2"}, []), {"data.sequence_length": 20})
    with pytest.raises(tune.DataError, match=r"^data\.data_dir: symbol AEM's dates or closes"):
        tune.check_data_unchanged(study, source({"AEM": "a2"}, ["NEW"]), long_)
    with pytest.raises(tune.DataError, match=r"^data\.data_dir: symbol XYZ is not among the symbols"):
        tune.check_data_unchanged(study, source({"AEM": "a", "XYZ": "x"}, ["NEW"]), long_)
