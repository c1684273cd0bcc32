"""A tune continues a study whose scored trials allow it: a trial another worker is still preparing holds no
score yet, so it does not refuse another objective (and, once prepared, it is refused itself when a trial of
the other objective holds a score); a dead worker's trial, still "running", is failed as stale before the
study's objective and space are checked, while a live worker's trial keeps refusing them."""

import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_round15 import study_config  # noqa: E402
from test_tune2_round15 import _cmd, _failed_study, _study  # noqa: E402

WIDER = {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}


def test_a_trial_still_preparing_does_not_refuse_another_objective(tmp_path, capsys, monkeypatch):
    """A study whose trials all failed takes another objective, but a tune started while another worker's
    trial was still preparing (running, no score yet) was refused as if that trial held one. The trial,
    once its data is prepared, is refused in turn: the other objective's trial holds a score now."""
    path, _ = study_config(tmp_path)
    out = tmp_path / "o"
    _failed_study(path, out, monkeypatch, capsys)
    study = _study(out)
    preparing = study.ask()  # another worker's trial, of the recorded objective, reading its data
    preparing.set_user_attr(tune.HEARTBEAT, time.time())
    assert main(_cmd(path, out, "evaluation.max_eval_batches=2")) == 0, capsys.readouterr().err
    study = _study(out)
    assert study.user_attrs[tune.OBJECTIVE_ATTR]["evaluation.max_eval_batches"] == 2
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "RUNNING", "COMPLETE"]
    # the other worker's trial finishes preparing: its score (max_eval_batches=1) would be ranked beside the new one
    other = tune.Objective(str(path), [], tune.parse_space(yaml.safe_load(path.read_text())["tune"]["search_space"]),
                           out)
    with pytest.raises(ConfigError, match=r"^evaluation\.max_eval_batches: study 's' scored its trials with "
                                          r"evaluation\.max_eval_batches=2, this config gives 1"):
        other(preparing)
    assert not study.get_trials()[preparing.number].user_attrs.get(tune.PREPARED_ATTR)
    # the study holds a score of the objective recorded last: the earlier one is refused now
    assert main(_cmd(path, out)) == 2
    assert "evaluation.max_eval_batches: study 's' scored its trials with" in capsys.readouterr().err


def _running(out: Path, beat: float) -> int:
    """A trial of study 's' drawn from the config's space, prepared, whose worker last beat at ``beat``."""
    study = _study(out)
    t = study.ask({"training.learning_rate": tune.space_distributions(tune.parse_space(
        {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}))["training.learning_rate"]})
    t.set_user_attr(tune.PREPARED_ATTR, True)
    t.set_user_attr(tune.HEARTBEAT, beat)
    return t.number


@pytest.mark.parametrize("change", ["space", "objective"])
def test_a_dead_workers_trial_is_failed_before_the_study_is_checked(tmp_path, capsys, monkeypatch, change):
    """A trial whose worker was killed stays "running": it refused another search space or objective until a
    later tune failed it as stale, and that tune never came, for the check ran first. It is failed first; a
    live worker's trial (a recent heartbeat) is kept, and still refuses the change."""
    path, _ = study_config(tmp_path)
    out = tmp_path / "o"
    _failed_study(path, out, monkeypatch, capsys)
    if change == "space":
        cfg = yaml.safe_load(path.read_text())
        cfg["tune"]["search_space"] = WIDER
        changed = tmp_path / "wider.yaml"
        changed.write_text(yaml.safe_dump(cfg))
        cmd, key = _cmd(changed, out), "tune.search_space.training.learning_rate: study 's' searched another space"
    else:
        cmd, key = _cmd(path, out, "evaluation.max_eval_batches=2"), "evaluation.max_eval_batches: study 's' scored"
    live = _running(out, time.time())  # beats every tune.heartbeat_seconds (30 s < stale_after_seconds 300 s)
    assert main(cmd) == 2
    assert key in capsys.readouterr().err
    assert _study(out).get_trials()[live].state.name == "RUNNING"  # a live worker's trial is not failed
    _study(out).tell(live, state=optuna.trial.TrialState.FAIL)
    dead = _running(out, time.time() - 3600)  # killed an hour ago
    assert main(cmd) == 0, capsys.readouterr().err
    assert [t.state.name for t in _study(out).get_trials()] == ["FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert _study(out).get_trials()[dead].state.name == "FAIL"
