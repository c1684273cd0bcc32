"""Ctrl-C at any point of a tracked run's or group's start and end leaves no MLflow run RUNNING for ever: the
run (or the group's parent run) ends KILLED, what it holds kept. Read back as a user reads them: MLflow's
client on the local store. The Ctrl-C arrives inside a library call (the SIGINT handler raises
KeyboardInterrupt in whatever the main thread runs), here the call made to raise it."""

import json
from importlib.util import find_spec

import pytest

from hftraining.core.config import Config, OutputConfig
from hftraining.train.logging import RunLogger
from hftraining.train.tracking import GROUP_FILE, read_tracking, start_group
from test_train_tracking_audit import no_mlflow_env  # noqa: E402,F401  (a fixture)

pytestmark = [pytest.mark.slow,  # creating MLflow's SQLite store takes seconds
              pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")]

MLFLOW = Config(output=OutputConfig(report_to=["mlflow"]))


def _client(folder):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlruns.db').resolve()}")


def _ctrl_c_in(monkeypatch, owner, name: str) -> None:
    """The user's Ctrl-C arriving while ``owner.name`` runs (its first call)."""
    original = getattr(owner, name)
    calls = []

    def interrupted(*args, **kwargs):
        if not calls:
            calls.append(name)
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)


def _killed_run(run):
    """A tracked run stopped by Ctrl-C after its step 1: its MLflow run ends KILLED."""
    logger = RunLogger(run, config=MLFLOW, progress_bar="never")
    with pytest.raises(KeyboardInterrupt):
        try:
            logger.log({"step": 1, "loss": 0.5})
            raise KeyboardInterrupt
        finally:
            logger.close()


def test_ctrl_c_while_another_backend_ends_ends_the_mlflow_run_killed(no_mlflow_env, tmp_path, monkeypatch):
    """report_to [tensorboard, mlflow]: Ctrl-C while TensorBoard's files were flushed at the end of the run (or
    W&B's upload, a backend before MLflow) left the MLflow run RUNNING for ever: the backends after the one
    interrupted were never ended. Now they end, KILLED, and upload nothing more."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    cfg = Config(output=OutputConfig(report_to=["tensorboard", "mlflow"]))
    logger = RunLogger(run, config=cfg, progress_bar="never")
    (run / "final").mkdir()
    (run / "final" / "README.md").write_text("card")
    _ctrl_c_in(monkeypatch, SummaryWriter, "flush")
    with pytest.raises(KeyboardInterrupt):
        try:
            logger.log({"step": 1, "loss": 0.5})
            logger.finish("the verdict", [run / "final"])
        finally:
            logger.close()
    client, run_id = _client(run), read_tracking(run)["mlflow"]["run_id"]
    got = client.get_run(run_id)
    assert got.info.status == "KILLED"
    assert got.data.metrics == {"loss": 0.5}  # what was logged before the stop is kept
    assert client.list_artifacts(run_id) == []  # the user stopped the end: nothing more is uploaded


def test_ctrl_c_while_a_resumed_run_reads_its_history_ends_it_killed_not_running(no_mlflow_env, tmp_path,
                                                                                  monkeypatch):
    """A --resume sets the stopped MLflow run RUNNING again, then reads its metric history (a request a
    metric on a tracking server): Ctrl-C there, or the store failing, left it RUNNING for ever."""
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    _killed_run(run)
    client, run_id = _client(run), read_tracking(run)["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    _ctrl_c_in(monkeypatch, MlflowClient, "get_metric_history")
    with pytest.raises(KeyboardInterrupt):
        RunLogger(run, config=MLFLOW, progress_bar="never", resume_step=1)
    assert client.get_run(run_id).info.status == "KILLED"


def test_ctrl_c_while_a_group_reads_its_parents_history_ends_the_parent_killed(no_mlflow_env, tmp_path,
                                                                                monkeypatch):
    """Walk-forward and tune end their parent run outside the part that marks it stopped; its finish first
    reads the parent's history (the step to log the aggregates at): Ctrl-C there left it RUNNING for ever."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "study"
    folder.mkdir()
    start_group(MLFLOW, folder, "tune", "study", {"study": "s"}, resume=True).finish({"n_trials": 2})
    group = start_group(MLFLOW, folder, "tune", "study", {"study": "s"}, resume=True)
    _ctrl_c_in(monkeypatch, MlflowClient, "get_metric_history")
    with pytest.raises(KeyboardInterrupt):
        group.finish({"n_trials": 4})
    client = _client(folder)
    run_id = json.loads((folder / GROUP_FILE).read_text())["mlflow"]["run_id"]
    got = client.get_run(run_id)
    assert got.info.status == "KILLED"
    assert got.data.metrics == {"n_trials": 2.0}  # the aggregates as last finished


def test_ctrl_c_while_a_group_continues_its_parent_ends_it_killed(no_mlflow_env, tmp_path, monkeypatch):
    """A study continued (or a resumed `train --seeds`) sets its parent RUNNING again and then logs the params
    it lacks: Ctrl-C there, before the group could be failed by its caller, left the parent RUNNING."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "study"
    folder.mkdir()
    start_group(MLFLOW, folder, "tune", "study", {"study": "s"}, resume=True).finish({"n_trials": 2})
    _ctrl_c_in(monkeypatch, MlflowClient, "log_batch")
    with pytest.raises(KeyboardInterrupt):
        start_group(MLFLOW, folder, "tune", "study", {"study": "s", "tune.folds": 3}, resume=True)
    run_id = json.loads((folder / GROUP_FILE).read_text())["mlflow"]["run_id"]
    assert _client(folder).get_run(run_id).info.status == "KILLED"
