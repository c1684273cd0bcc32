"""What an MLflow run says of how it ran: a run or group stopped by Ctrl-C ends KILLED (a crash FAILED), the
params hold the device, precision and compile mode the run used (not ``auto``), and a group's parent run
finished again (a resumed ``train --seeds``, a study continued) holds each aggregate once per value.
Read back as a user reads them: MLflow's client on the local store."""

import json
from importlib.util import find_spec

import pytest

from hftraining.core.config import Config, OutputConfig, load_config
from hftraining.train.logging import RunLogger
from hftraining.train.tracking import GROUP_FILE, start_group
from conftest import tiny  # noqa: E402
from test_tracking_round17 import _history, _mlflow  # noqa: E402
from test_train_tracking_audit import no_mlflow_env  # noqa: E402,F401  (a fixture)

pytestmark = [pytest.mark.slow,  # creating MLflow's SQLite store takes seconds
              pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")]

MLFLOW = Config(output=OutputConfig(report_to=["mlflow"]))


def _stopped_by(run, error: BaseException) -> None:
    """A run's logger closed as the runner closes it: in a ``finally`` with ``error`` on its way out."""
    logger = RunLogger(run, config=MLFLOW, progress_bar="never")
    with pytest.raises(type(error)):
        try:
            logger.log({"step": 1, "loss": 0.5})
            raise error
        finally:
            logger.close()


def _group(folder):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlruns.db').resolve()}")
    return client, json.loads((folder / GROUP_FILE).read_text())["mlflow"]["run_id"]


def test_a_run_stopped_by_ctrl_c_is_killed_and_one_that_crashed_failed(no_mlflow_env, tmp_path):
    """Ctrl-C ended the MLflow run FAILED, as a crash does: a user filtering the failed runs found the
    ones they had stopped themselves among them. KILLED is MLflow's status of a run stopped by its user."""
    _stopped_by(tmp_path / "interrupted", KeyboardInterrupt())
    _stopped_by(tmp_path / "crashed", RuntimeError("boom"))
    for name, status in (("interrupted", "KILLED"), ("crashed", "FAILED")):
        client, run_id = _mlflow(tmp_path / name)
        run = client.get_run(run_id)
        assert run.info.status == status, name
        assert _history(client, run_id, "loss") == [(1, 0.5)]  # what was logged before the stop is kept


def test_a_group_stopped_by_ctrl_c_ends_its_parent_run_killed(no_mlflow_env, tmp_path):
    """A `train --seeds` or walk-forward stopped by Ctrl-C ended its parent run FAILED."""
    folder = tmp_path / "group"
    folder.mkdir()
    group = start_group(MLFLOW, folder, "seeds", "group", {"seeds": 2}, resume=False)
    with pytest.raises(KeyboardInterrupt):
        try:
            raise KeyboardInterrupt
        except BaseException:
            group.fail()
            raise
    client, run_id = _group(folder)
    assert client.get_run(run_id).info.status == "KILLED"

    other = tmp_path / "other"
    other.mkdir()
    group = start_group(MLFLOW, other, "seeds", "other", {"seeds": 2}, resume=False)
    with pytest.raises(ValueError):
        try:
            raise ValueError("a seed crashed")
        except BaseException:
            group.fail()
            raise
    client, run_id = _group(other)
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_group_finished_again_logs_each_changed_aggregate_at_a_new_step(no_mlflow_env, tmp_path):
    """A study continued (or a resumed `train --seeds`) logged every aggregate again at step 0: the parent's
    history held two values of one step (n_trials 2 and 4 at step 0), and an unchanged one twice. Now an
    unchanged aggregate is not logged again and a changed one is logged at the next step."""
    folder = tmp_path / "study"
    folder.mkdir()
    start_group(MLFLOW, folder, "tune", "study", {"study": "s"}, resume=True).finish(
        {"n_trials": 2, "best_value": 0.5, "n_fail": 0})
    start_group(MLFLOW, folder, "tune", "study", {"study": "s"}, resume=True).finish(
        {"n_trials": 2, "best_value": 0.5, "n_fail": 0})  # the report rewritten, no trial added
    start_group(MLFLOW, folder, "tune", "study", {"study": "s"}, resume=True).finish(
        {"n_trials": 4, "best_value": 0.5, "n_fail": 1})

    client, run_id = _group(folder)
    assert _history(client, run_id, "n_trials") == [(0, 2.0), (1, 4.0)]
    assert _history(client, run_id, "n_fail") == [(0, 0.0), (1, 1.0)]
    assert _history(client, run_id, "best_value") == [(0, 0.5)]
    run = client.get_run(run_id)
    assert run.data.metrics == {"n_trials": 4.0, "best_value": 0.5, "n_fail": 1.0}
    assert run.info.status == "FINISHED"


def test_mlflow_params_hold_the_device_precision_and_compile_mode_the_run_used(no_mlflow_env, tmp_path):
    """training.device, training.precision and training.compile were logged as `auto`: a bf16 run and an
    fp32 one read the same in MLflow's comparison. The values the run used are the params; the value
    asked for, where it differs, is the param requested.<key>."""
    from hftraining.workflows.train_run import train

    runs = {}
    for name, extra in (("bf16", ("training.use_mixed_precision=true",)), ("fp32", ("training.precision=fp32",))):
        run = tmp_path / name
        train(load_config(None, tiny(run, "output.report_to=[jsonl, mlflow]", "training.max_steps=2",
                                     "training.logging_steps=2", "training.save_steps=0", "evaluation.eval_steps=0",
                                     "evaluation.report=false", "evaluation.baseline_max_windows=200",
                                     "evaluation.max_test_windows=200", *extra)))
        client, run_id = _mlflow(run)
        runs[name] = client.get_run(run_id).data.params
    bf16, fp32 = runs["bf16"], runs["fp32"]
    assert bf16["training.precision"] == "bf16" and bf16["requested.training.precision"] == "auto"
    assert fp32["training.precision"] == "fp32" and "requested.training.precision" not in fp32  # asked for as used
    for params in (bf16, fp32):
        assert params["training.device"] == "cpu" and params["requested.training.device"] == "auto"
        assert params["training.compile"] == "none" and params["requested.training.compile"] == "auto"


def _unwritable_artifacts(folder) -> None:
    """The store's artifact folder (``<folder>/mlartifacts``) made a file: every upload to it fails."""
    import shutil

    shutil.rmtree(folder / "mlartifacts", ignore_errors=True)
    (folder / "mlartifacts").write_text("not a folder")


def test_a_run_whose_artifacts_cannot_be_stored_ends_failed_not_running(no_mlflow_env, tmp_path):
    """The artifact store refusing final/ at the end of a run was one line (exit 2), but the MLflow run was
    never ended: it showed RUNNING for ever, as if training went on."""
    from hftraining.core.errors import UserError

    run = tmp_path / "run"
    logger = RunLogger(run, config=MLFLOW, progress_bar="never")
    (run / "final").mkdir()
    (run / "final" / "README.md").write_text("card")
    _unwritable_artifacts(run)
    with pytest.raises(UserError, match="mlflow could not log the end of the run"):
        try:
            logger.log({"step": 2, "loss": 0.5})
            logger.finish("the verdict", [run / "final"])
        finally:
            logger.close()
    client, run_id = _mlflow(run)
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_group_whose_aggregates_cannot_be_stored_ends_its_parent_failed_not_running(no_mlflow_env, tmp_path):
    """Walk-forward and tune end their parent run after every fold or trial, outside the part that marks it
    FAILED: an artifact store refusing walkforward.json left the parent RUNNING for ever."""
    from hftraining.core.errors import UserError

    folder = tmp_path / "walkforward"
    folder.mkdir()
    (folder / "walkforward.json").write_text("{}")
    group = start_group(MLFLOW, folder, "walkforward", "wf", {"folds": 2}, resume=False)
    _unwritable_artifacts(folder)
    with pytest.raises(UserError, match="mlflow could not log the group's aggregates"):
        group.finish({"n_folds": 2}, [folder / "walkforward.json"])
    client, run_id = _group(folder)
    assert client.get_run(run_id).info.status == "FAILED"
    group.fail()  # ended already: a later fail changes nothing
    assert client.get_run(run_id).info.status == "FAILED"
