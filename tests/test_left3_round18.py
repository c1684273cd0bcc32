"""A purged walk-forward's printed table says its embargo warning; a ``tune --trials 0`` report stopped by
Ctrl-C or an error ends the study's MLflow parent KILLED (FAILED), not RUNNING; the MAE of finite errors
whose sum overflows is finite."""

import json
import math
from importlib.util import find_spec

import numpy as np
import pytest

from hftraining.core.config import load_config
from hftraining.eval.metrics import mae
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402
from test_train_tracking_audit import no_mlflow_env  # noqa: E402,F401  (a fixture)


def test_a_purged_walk_forward_prints_its_embargo_warning(tmp_path):
    """walkforward.json held embargo_note (the training windows after each test block read its prices), and
    the log said it once, but the printed table, which prints the backtest and intervals notes, did not."""
    cfg = load_config(None, tiny(tmp_path / "wf", "model.type=ridge", "evaluation.report=false",
                                 "evaluation.intervals=[]", "evaluation.baseline_max_windows=200", "data.embargo=0"))
    res = wf.walk_forward(cfg, 2, scheme="purged_kfold")
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text(encoding="utf-8"))
    note = saved["embargo_note"]
    assert note.startswith("--scheme purged_kfold: data.embargo=0:")
    assert wf.format_walkforward(res).count(note) == 1
    assert wf.format_walkforward(saved).count(note) == 1  # a walkforward.json printed again says it too


@pytest.mark.slow  # one trial, and MLflow's SQLite store
@pytest.mark.skipif(find_spec("mlflow") is None or find_spec("optuna") is None,
                    reason="the track and tune extras (mlflow, optuna) are not installed")
def test_a_trials_0_report_stopped_ends_the_study_parent_killed_or_failed(no_mlflow_env, tmp_path, monkeypatch):
    """`tune --trials 0` sets the study's parent RUNNING again to log the report's aggregates; Ctrl-C or an
    error while it read best.json, selection.json or the best trial's tracking.json left the parent RUNNING
    for ever. Now Ctrl-C ends it KILLED and an error FAILED, as a tune that runs trials ends it."""
    from mlflow.tracking import MlflowClient

    from hftraining.core.errors import UserError
    from hftraining.train.tracking import GROUP_FILE
    from hftraining.workflows import tune

    cfg = tmp_path / "tune.yaml"
    cfg.write_text("tune:\n  search_space:\n    training.learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n")
    out = tmp_path / "tune"
    over = tiny(None, "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2",
                "data.symbols=[AEM]", "training.save_steps=0", "training.max_steps=2", "evaluation.eval_steps=2",
                "evaluation.report=false", "evaluation.intervals=[]", "evaluation.baseline_max_windows=200",
                "evaluation.max_test_windows=200", "data.val_ratio=0.2", "output.report_to=[jsonl, mlflow]",
                "output.experiment_name=tune")
    tune.run_tune(str(cfg), 1, out=out, overrides=over)
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlruns.db').resolve()}")
    parent = json.loads((out / GROUP_FILE).read_text())["mlflow"]["run_id"]
    assert client.get_run(parent).info.status == "FINISHED"

    real = tune.read_json

    def stopped(path):
        if path.name == "selection.json":
            raise KeyboardInterrupt
        return real(path)

    with monkeypatch.context() as m:
        m.setattr(tune, "read_json", stopped)
        with pytest.raises(KeyboardInterrupt):
            tune.run_tune(str(cfg), 0, out=out, overrides=over)
    assert client.get_run(parent).info.status == "KILLED"

    best = json.loads((out / "best.json").read_text())["trial"]
    (out / f"trial-{best:04d}" / "tracking.json").write_text("{not json")  # the best trial's record, damaged
    with pytest.raises(UserError, match="tracking.json: cannot read"):
        tune.run_tune(str(cfg), 0, out=out, overrides=over)
    assert client.get_run(parent).info.status == "FAILED"


def test_mae_of_finite_errors_whose_sum_overflows_is_finite():
    """Absolute errors near 1e308 summed past the float range: mae read inf, so a forecast with finite errors
    ranked as infinitely bad (and tied with one that is). Now it is their mean, as mse keeps its squares'."""
    pred = np.array([1.5e308, 1.2e308, -9e307, 3.0, -1e300])
    true = np.array([0.0, -1e307, 0.0, 1.0, 0.0])
    err = np.abs(pred - true)
    with np.errstate(over="ignore"):
        assert np.isfinite(err).all() and math.isinf(float(np.sum(err)))
    top = float(err.max())
    exact = math.fsum(float(e) / top for e in err) / len(err) * top
    assert mae(pred, true) == pytest.approx(exact, rel=1e-12)
    assert mae(np.array([[1.0, 2.0], [3.0, 5.0]]), np.zeros((2, 2))) == 2.75  # the ordinary mean, unchanged
    assert math.isinf(mae(np.array([np.inf, 1.0]), np.zeros(2)))  # an infinite error stays infinite
    assert math.isnan(mae(np.array([np.nan, 1.0]), np.zeros(2)))
    assert math.isnan(mae(np.array([]), np.array([])))
