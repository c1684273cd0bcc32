"""evaluation.max_eval_batches counts batches of data.eval_batch_size, so under it the size says which
validation windows a score is measured on. A tune compares its trials' scores as one objective: a study
searching the size, or continued with another size, ranked scores of other windows beside each other
(the first 16 windows against the first 256, the same model scoring differently), and the best trial
was the size whose windows were easiest."""

from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from test_tune2_round15 import _cmd, _study  # noqa: E402
from test_tune_round15 import study_config  # noqa: E402


def _config(tmp_path: Path, max_eval_batches: int | None, space: dict | None = None) -> Path:
    path, _ = study_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["evaluation"]["max_eval_batches"] = max_eval_batches
    if space is not None:
        cfg["tune"]["search_space"] = space
    path.write_text(yaml.safe_dump(cfg))
    return path


def _last_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error line"
    return err[-1].removeprefix("hftraining: error: ")


def test_a_search_of_eval_batch_size_under_max_eval_batches_is_refused_before_any_trial(tmp_path, capsys):
    # every trial trains the same model; each drawn size scored it on other validation windows, and the tune
    # named the size of the easier windows its best configuration
    path = _config(tmp_path, 1, {"data.eval_batch_size": {"choices": [16, 256]}})
    out = tmp_path / "o"
    assert main(_cmd(path, out)) == 2
    line = _last_error_line(capsys)
    assert line.startswith("tune.search_space.data.eval_batch_size: evaluation.max_eval_batches counts batches"), line
    assert not out.exists()  # refused before anything was created or trained


def test_without_max_eval_batches_eval_batch_size_may_be_searched(tmp_path, capsys):
    # without the cap every validation window is scored whatever the size: nothing to refuse
    path = _config(tmp_path, None, {"data.eval_batch_size": {"choices": [16, 256]}})
    out = tmp_path / "o"
    assert main(_cmd(path, out)) == 0, capsys.readouterr().err
    assert [t.state.name for t in _study(out).get_trials()] == ["COMPLETE"]


def test_a_study_continued_with_another_eval_batch_size_under_max_eval_batches_is_refused(tmp_path, capsys):
    # the study's first trial was scored on the first 16 validation windows; a tune continued with 256 ranked
    # scores of 256 windows beside it as one objective
    path = _config(tmp_path, 1)
    out = tmp_path / "o"
    assert main(_cmd(path, out, "data.eval_batch_size=16")) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(_cmd(path, out, "data.eval_batch_size=256")) == 2
    line = _last_error_line(capsys)
    assert line.startswith("data.eval_batch_size: study 's' scored its trials with data.eval_batch_size=16, this "
                           "config gives 256"), line
    assert len(_study(out).get_trials()) == 1  # no trial of the other windows was added
    # the same size continues it
    assert main(_cmd(path, out, "data.eval_batch_size=16")) == 0, capsys.readouterr().err
    assert [t.state.name for t in _study(out).get_trials()] == ["COMPLETE", "COMPLETE"]


def test_without_max_eval_batches_a_study_continues_with_another_eval_batch_size(tmp_path, capsys):
    path = _config(tmp_path, None)
    out = tmp_path / "o"
    assert main(_cmd(path, out, "data.eval_batch_size=16")) == 0, capsys.readouterr().err
    assert main(_cmd(path, out, "data.eval_batch_size=256")) == 0, capsys.readouterr().err
    assert [t.state.name for t in _study(out).get_trials()] == ["COMPLETE", "COMPLETE"]
