"""hftraining tune, an error of the study's database is one line naming --storage, and no other error is: an
error met before --storage is read keeps its own message, whatever --storage says; a trial's own error (bad
data, a bug) with a SQLite study keeps its message and exit code."""

import copy

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import DataError, UserError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_audit import TINY  # noqa: E402


def _config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(TINY)))
    return path


@pytest.mark.parametrize("storage", ["postgres://u@127.0.0.1/db", "s.db"])
def test_an_error_before_the_storage_is_read_keeps_its_own_message(tmp_path, monkeypatch, storage):
    """An error raised before --storage is read (the space's check building a model too large for memory, say)
    was replaced by the storage's complaint when --storage was not a storage URL (``postgres://``, a bare file
    name): the one line named --storage, and the error that stopped the tune was lost. It keeps its own."""
    def too_large(*args, **kwargs):
        raise MemoryError("cannot allocate 96 GiB for model.hidden_size=65536")

    monkeypatch.setattr(tune, "check_space_values", too_large)
    with pytest.raises(MemoryError, match="^cannot allocate 96 GiB"):
        tune.run_tune(str(_config(tmp_path)), 1, storage=storage, study_name="s", out=str(tmp_path / "o"))
    # the URL itself is still refused, as one line, once nothing else stopped the tune first
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"^--storage "):
        tune.run_tune(str(_config(tmp_path)), 1, storage=storage, study_name="s", out=str(tmp_path / "o"))


@pytest.mark.parametrize("error, code", [(DataError("data.data_dir: prices/AEM.csv: row 7: close is not a number"), 2),
                                         (RuntimeError("a bug in a trial"), None)])
def test_a_trials_own_error_with_a_sqlite_study_keeps_its_message(tmp_path, capsys, monkeypatch, error, code):
    """With a SQLite study every error of the tune passes through the storage's error handling: a trial's bad
    data stays its one line (exit 2) and a bug its traceback, not a --storage line; the trial is stored failed."""
    def fails(self, trial, trial_dir):
        raise error

    monkeypatch.setattr(tune.Objective, "_trial", fails)
    url = f"sqlite:///{tmp_path / 's.db'}"
    argv = ["tune", "--config", str(_config(tmp_path)), "--trials", "1", "--out", str(tmp_path / "o"), "--study", "s",
            "--storage", url]
    if code is None:
        with pytest.raises(RuntimeError, match="^a bug in a trial$"):
            main(argv)
    else:
        assert main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == f"hftraining: error: {error}" and "--storage" not in "\n".join(err), err
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=url).get_trials()] == ["FAIL"]
