"""Tracking at the edges of a run: an MLflow store that cannot be used is one line before training (at
once, and without the password of its URI); MLflow's store or W&B's process failing mid-run is one
line naming the step, the checkpoints kept and --resume logging every step once; train.log says why
a run stopped; and no usage telemetry leaves the machine."""

import time
from importlib.util import find_spec

import pytest

from hftraining.cli import main
from hftraining.core.config import Config, OutputConfig
from hftraining.core.errors import UserError
from hftraining.train.tracking import MlflowTracker, build_trackers
from conftest import tiny  # noqa: E402

pytestmark = pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")


@pytest.fixture
def no_mlflow_env(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_mlflow_usage_telemetry_is_off_unless_the_user_turns_it_on(no_mlflow_env):
    """MLflow 3 sends usage records to its telemetry servers by default (a run with report_to=[mlflow]
    and a local store looked up config.mlflow-telemetry.io); it stays off only under pytest or CI."""
    from mlflow.telemetry.utils import is_telemetry_disabled

    no_mlflow_env.setattr("mlflow.telemetry.utils._IS_IN_CI_ENV_OR_TESTING", False, raising=False)
    assert not is_telemetry_disabled()  # as a user's run would start
    build_trackers(OutputConfig(report_to=["jsonl", "mlflow"]))
    assert is_telemetry_disabled()
    no_mlflow_env.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the user's explicit choice is kept
    build_trackers(OutputConfig(report_to=["mlflow"]))
    assert not is_telemetry_disabled()


def test_a_sqlite_store_that_cannot_be_opened_is_one_line_at_once(no_mlflow_env, tmp_path):
    """MLflow retried such a store for about 100 s, then let SQLAlchemy's traceback through."""
    folder = tmp_path / "not_a_database"
    folder.mkdir()
    uri = f"sqlite:///{folder}"
    no_mlflow_env.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        MlflowTracker().on_start(tmp_path / "run", Config(), None)
    assert time.perf_counter() - start < 30
    msg = str(err.value)
    assert msg.startswith(f"output.report_to: mlflow cannot start a run in {uri} (") and "MLFLOW_TRACKING_URI" in msg
    assert len(msg.splitlines()) == 1


def test_the_password_of_a_tracking_uri_is_never_shown(no_mlflow_env, tmp_path, capsys):
    no_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@127.0.0.1:9")
    no_mlflow_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after minutes of retries
    no_mlflow_env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    code = main(["train", *tiny(tmp_path / "run", "output.report_to=[mlflow]", "training.max_steps=2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("hftraining: error: output.report_to: mlflow cannot start a run in "
                              "http://alice:***@127.0.0.1:9 ("), err[-1]
    assert not any("s3cret" in line for line in err)


def test_a_store_failing_mid_run_is_one_line_naming_the_step(no_mlflow_env, tmp_path):
    """A tracking server gone mid-run was MLflow's traceback (exit 1); now one line that says the
    run stopped at that step and how to continue it."""
    from mlflow.exceptions import MlflowException

    run = tmp_path / "run"
    tracker = MlflowTracker()
    tracker.on_start(run, Config(), None)
    tracker.on_log(2, {"loss": 1.0})

    def gone(*args, **kwargs):
        raise MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/runs/log-batch failed\nmore")

    no_mlflow_env.setattr(tracker.client, "log_batch", gone)
    with pytest.raises(UserError) as err:
        tracker.on_log(4, {"loss": 0.5})
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"output.report_to: mlflow could not log step 4 to sqlite:///{(run / 'mlruns.db').resolve()} "
                          "(API request to http://mlflow:5000"), msg
    assert msg.endswith("training stopped at step 4; the checkpoints written so far are kept: continue it with --resume")
    with pytest.raises(UserError, match="could not log the test metrics of step 4"):
        tracker.on_eval(4, {"mse": 1.0})
    tracker.on_end(None, [], failed=True)
    assert [m.step for m in tracker.client.get_metric_history(tracker.run_id, "loss")] == [2]
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"


def test_a_store_failing_mid_run_stops_the_cli_in_one_line_and_resume_logs_each_step_once(no_mlflow_env, tmp_path,
                                                                                            capsys):
    """The server goes away at step 6 (after the step-4 checkpoint): exit 2 and one line, the step-4
    checkpoint kept; once it is back, --resume continues the same MLflow run with every step once."""
    import json

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    args = tiny(run, "output.report_to=[jsonl, mlflow]", "training.max_steps=8", "training.logging_steps=2",
                "training.save_steps=4", "evaluation.eval_steps=4", "evaluation.report=false",
                "evaluation.baseline_max_windows=200")
    real = MlflowClient.log_batch

    def log_batch(self, run_id, metrics=(), **kwargs):
        if metrics and metrics[0].step >= 6:
            raise MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/runs/log-batch failed")
        return real(self, run_id, metrics=metrics, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowClient, "log_batch", log_batch)
        code = main(["train", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("hftraining: error: output.report_to: mlflow could not log step 6 to "), err[-1]
    assert not any(line.startswith("Traceback") for line in err)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004"]
    # train.log, the console's log, says why the run stopped as the console does
    last = (run / "train.log").read_text().splitlines()[-1]
    assert last.endswith(" ERROR run stopped: " + err[-1].removeprefix("hftraining: error: ")), last
    assert main(["train", *args, "training.resume_from_checkpoint=auto"]) == 0
    run_id = json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns.db'}")
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [2, 4, 6, 8]
    assert [m.step for m in client.get_metric_history(run_id, "eval_mse")] == [4, 8]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_wandb_failing_mid_run_is_one_line_naming_the_step(no_mlflow_env, tmp_path):
    """W&B's own process killed mid-run: its lost connection was "hftraining: error: Connection lost",
    naming neither W&B nor the step."""
    if find_spec("wandb") is None:
        pytest.skip("the track extra (wandb) is not installed")
    from hftraining.train.tracking import WandbTracker

    no_mlflow_env.setenv("WANDB_MODE", "offline")
    no_mlflow_env.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        no_mlflow_env.setenv(var, str(tmp_path / var.lower()))
    (tmp_path / "run").mkdir()
    tracker = WandbTracker()
    tracker.on_start(tmp_path / "run", Config(), None)
    tracker.on_log(2, {"loss": 1.0})
    real = tracker.run

    class Lost:
        def log(self, *args, **kwargs):
            raise ConnectionResetError("Connection lost")

    tracker.run = Lost()
    try:
        with pytest.raises(UserError) as err:
            tracker.on_log(4, {"loss": 0.5})
    finally:
        tracker.run = real
        tracker.on_end(None, [], failed=True)
    assert str(err.value) == ("output.report_to: wandb could not log step 4 (Connection lost); training stopped at "
                              "step 4; the checkpoints written so far are kept: continue it with --resume")


def test_train_log_ends_with_why_the_run_stopped(tmp_path):
    """train.log is the console's log: the run's last console line (the error) was missing from it,
    so a run found dead the next morning did not say why there."""
    from hftraining.core.errors import WriteError
    from hftraining.train.logging import RunLogger

    cfg = Config()
    cfg.output.report_to = ["jsonl"]
    logger = RunLogger(tmp_path, config=cfg)
    logger.log({"step": 1, "loss": 0.5})
    with pytest.raises(WriteError):
        try:
            raise WriteError(f"{tmp_path / 'checkpoints'}: cannot write (No space left on device)")
        finally:
            logger.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[-1].endswith(f" ERROR run stopped: {tmp_path / 'checkpoints'}: cannot write (No space left on device)")
    assert "step=1 loss=0.5" in lines[-2]
