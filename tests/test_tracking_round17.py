"""Tracking of a run stopped while its test split was being scored (its test numbers logged, its model
card not written yet): ``--resume`` trains nothing and scores the test split again at the checkpoint's
step; a group's parent run whose param is longer than MLflow keeps. Read back as a user reads it:
TensorBoard's own loader, MLflow's client."""

import json
import logging
from importlib.util import find_spec
from pathlib import Path

import pytest

from hftraining.core.config import Config, OutputConfig, load_config
from hftraining.train.tracking import (FULL_PARAMS, GROUP_FILE, MlflowTracker, TensorBoardTracker, read_tracking,
                                       start_group)
from conftest import tiny  # noqa: E402
from test_train_tracking_audit import no_mlflow_env  # noqa: E402,F401  (a fixture)

needs_mlflow = pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")


def _board(run: Path) -> dict[str, list[tuple[int, object]]]:
    """Every tag → its (step, value) points as TensorBoard's Python loader shows them (what a restart
    superseded left out); the verdict's value is its text."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(run / "tensorboard"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()[pea.TENSORS]:
        if tag == "verdict/text_summary":
            out[tag] = [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
        else:
            out[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    return out


def _mlflow(run: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlruns.db').resolve()}")
    run_id = read_tracking(run)["mlflow"]["run_id"]
    return client, run_id


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_tensorboard_shows_the_test_scores_once_and_the_verdict_at_their_step_when_scored_again(tmp_path):
    """The resumed run wrote every test/* value a second time at step 8 (TensorBoard showed two points
    at one step, the old and the new) and its verdict at step 0, where no step was ever trained."""
    run = tmp_path / "run"
    run.mkdir()
    first = TensorBoardTracker()
    first.on_start(run, Config(), None)
    for step in (4, 8):
        first.on_log(step, {"loss": 1.0 / step})
        first.on_log(step, {"eval_mse": 0.5 / step})
    first.on_eval(8, {"mse": 0.25, "mae": 0.5})
    first.on_end(None, [], failed=True)  # stopped after the test numbers, before the card and the verdict

    resumed = TensorBoardTracker()
    resumed.on_start(run, Config(), 8)  # the last checkpoint, step 8: nothing is trained again
    resumed.on_eval(8, {"mse": 0.25, "mae": 0.75})  # mae changed: other evaluation.* settings
    resumed.on_end("the verdict", [], failed=False)

    board = _board(run)
    assert board["test/mse"] == [(8, 0.25)]
    assert board["test/mae"] == [(8, 0.75)]
    assert board["train/loss"] == [(4, 0.25), (8, 0.125)]  # the steps trained before, kept
    assert board["eval/mse"] == [(4, 0.125), (8, 0.0625)]
    assert board["verdict/text_summary"] == [(8, "the verdict")]


@pytest.mark.slow  # creating MLflow's SQLite store takes seconds
@needs_mlflow
def test_mlflow_logs_the_test_scores_of_the_checkpoint_step_once_unless_changed(no_mlflow_env, tmp_path):
    """The resumed run logged every test_* number again at step 8 though they were the same: MLflow's
    history held each twice. An unchanged number is logged once; a changed one is logged, so the run's
    value is the new eval.json's."""
    run = tmp_path / "run"
    first = MlflowTracker()
    first.on_start(run, Config(), None)
    for step in (4, 8):
        first.on_log(step, {"loss": 1.0 / step})
    first.on_eval(8, {"mse": 0.25, "mae": 0.5})
    first.on_end(None, [], failed=True)

    resumed = MlflowTracker()
    resumed.on_start(run, Config(), 8)
    resumed.on_eval(8, {"mse": 0.25, "mae": 0.75})
    resumed.on_end("the verdict", [], failed=False)

    client, run_id = _mlflow(run)
    assert _history(client, run_id, "test_mse") == [(8, 0.25)]
    assert sorted(v for _, v in _history(client, run_id, "test_mae")) == [0.5, 0.75]
    assert _history(client, run_id, "loss") == [(4, 0.25), (8, 0.125)]
    data = client.get_run(run_id).data
    assert data.metrics["test_mae"] == 0.75 and data.metrics["test_mse"] == 0.25
    assert data.tags["verdict"] == "the verdict"


@pytest.mark.slow
@needs_mlflow
def test_a_run_stopped_while_scored_and_resumed_holds_each_test_number_once(no_mlflow_env, tmp_path):
    """The whole path: a run whose model card was not written (stopped while it was being scored) is
    scored again by --resume; TensorBoard and MLflow each hold every test number once, at step 8."""
    from hftraining.workflows.train_run import train

    run = tmp_path / "run"
    args = ("output.report_to=[jsonl, mlflow]", "output.tensorboard=true", "training.max_steps=8",
            "training.logging_steps=4", "training.save_steps=4", "evaluation.eval_steps=4",
            "evaluation.report=false", "evaluation.baseline_max_windows=200")
    train(load_config(None, tiny(run, *args)))
    (run / "final" / "README.md").unlink()  # the card, written last: the run reads as stopped while scored
    train(load_config(None, tiny(run, *args, "training.resume_from_checkpoint=auto")))

    board = _board(run)
    tests = {tag: points for tag, points in board.items() if tag.startswith("test/")}
    assert tests and all([s for s, _ in points] == [8] for points in tests.values()), tests
    assert [s for s, _ in board["verdict/text_summary"]] == [8]
    assert [s for s, _ in board["train/loss"]] == [4, 8]
    client, run_id = _mlflow(run)
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("test_")]
    assert keys and all([s for s, _ in _history(client, run_id, k)] == [8] for k in keys)


@pytest.mark.slow  # creating MLflow's SQLite store takes seconds
@needs_mlflow
def test_a_group_param_longer_than_mlflow_keeps_is_named_and_logged_whole(no_mlflow_env, tmp_path, caplog):
    """A study's search space (the tune parent run's param) longer than MLflow's 6,000 characters was
    logged cut, half a JSON object, with no word of it and nowhere whole; now a warning names it and
    every param is the parent's artifact params.json, as for a run's own params."""
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    cfg = Config(output=OutputConfig(report_to=["mlflow"]))
    space = {"data.features": {"choices": [[f"sma_{i}", f"rsi_{i}", f"ema_{i}"] for i in range(2, 300)]}}
    whole = json.dumps(space)
    assert len(whole) > MAX_PARAM_VAL_LENGTH
    folder = tmp_path / "study"
    folder.mkdir()
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        group = start_group(cfg, folder, "tune", "study", {"study": "s", "search_space": space}, resume=False)
    group.finish({"n_complete": 1})

    client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlruns.db').resolve()}")
    run_id = json.loads((folder / GROUP_FILE).read_text())["mlflow"]["run_id"]
    assert client.get_run(run_id).data.params["search_space"] == whole[:MAX_PARAM_VAL_LENGTH]
    said = [r.getMessage() for r in caplog.records if "search_space" in r.getMessage()]
    assert len(said) == 1 and FULL_PARAMS in said[0] and f"{len(whole):,}" in said[0], said
    client.download_artifacts(run_id, FULL_PARAMS, str(tmp_path))
    full = json.loads((tmp_path / FULL_PARAMS).read_text())
    assert json.loads(full["search_space"]) == space and full["study"] == "s"
