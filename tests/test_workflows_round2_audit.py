"""hftraining tune and walkforward, what makes their results their own: the metric and the validation
windows that score a trial are the same for every trial, the pruner meets each fold of ``tune.folds``
at the same steps in every trial whatever ``training.max_steps`` it drew, a second study cannot
overwrite the trial folders and report of the study that an output folder holds, and a second
walk-forward cannot remove the folds of one still running."""

import fcntl
import json
import os

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from conftest import tiny  # noqa: E402

from test_tune_audit import TINY as _TUNE_AUDIT  # noqa: E402  (the same tiny study, 4 steps a trial)

TINY = {**_TUNE_AUDIT, "training": {"max_steps": 4, "logging_steps": 2, "save_steps": 0}}


def _run(tmp_path, cfg, trials, study, out="o", extra=()):
    path = tmp_path / f"{study}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main(["tune", "--config", str(path), "--trials", str(trials), "--out", str(tmp_path / out),
                 "--study", study, *extra])


def _trials(tmp_path, study, out="o"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / out / "tune.journal")))
    return optuna.load_study(study_name=study, storage=storage).get_trials()


@pytest.mark.parametrize("key, spec", [("evaluation.metric", {"choices": ["mse", "mae"]}),
                                       ("evaluation.max_val_windows", {"choices": [10, 1000]}),
                                       ("evaluation.max_eval_batches", {"type": "int", "low": 1, "high": 4}),
                                       ("data.target", {"choices": ["return", "cs_rank"]}),
                                       ("data.prediction_horizon", {"choices": [1, 20]})])
def test_a_key_that_sets_how_trials_are_scored_cannot_be_searched(key, spec):
    """Trials scored by MSE and by MAE (or on 10 and on 1000 validation windows) are not comparable:
    the lowest score would pick the metric (MSE ~ 4e-4 beats MAE ~ 1.5e-2 whatever the model)."""
    with pytest.raises(ConfigError, match=rf"^tune\.search_space\.{key}: sets what a trial is scored by"):
        tune.parse_space({key: spec})


def test_the_pruner_meets_each_fold_at_the_same_steps_whatever_max_steps_a_trial_draws(tmp_path, capsys):
    """tune.folds: 2 with training.max_steps drawn from {2, 4}: fold 1 of every trial reports after the 4
    steps fold 0 may take, so a short trial's fold 1 is never compared with a long trial's fold 0."""
    cfg = dict(TINY, tune={**TINY["tune"], "folds": 2, "search_space": {"training.max_steps": {"choices": [2, 4]}}})
    assert _run(tmp_path, cfg, 3, "f") == 0, capsys.readouterr().err
    trials = _trials(tmp_path, "f")
    assert {t.params["training.max_steps"] for t in trials} == {2, 4}
    for t in trials:
        steps = list(range(2, t.params["training.max_steps"] + 1, 2))
        assert sorted(t.intermediate_values) == steps + [4 + s for s in steps], (t.params, t.intermediate_values)


def test_a_second_study_cannot_overwrite_the_trials_of_the_study_in_its_out_folder(tmp_path, capsys):
    """--out holds study a; study b there would start at trial 0 again and replace a's trial-0000 (its
    run folder and out-of-sample series, which a's report reads) and a's best_config.yaml: exit 2,
    nothing of a's touched. Study a itself goes on in the same folder."""
    assert _run(tmp_path, TINY, 1, "a") == 0
    out = tmp_path / "o"
    kept = {p: (out / p).read_bytes() for p in ("trial-0000/config.json", "trial-0000/oos_returns.json", "best.json")}
    capsys.readouterr()
    assert _run(tmp_path, TINY, 1, "b", extra=["tune.seed=5"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"hftraining: error: --out {out}: holds the trials of study 'a'"), err
    assert _run(tmp_path, TINY, 0, "b") == 2  # nor a report of b from a's series
    assert {p: (out / p).read_bytes() for p in kept} == kept
    assert _run(tmp_path, TINY, 1, "a") == 0
    assert [t.state.name for t in _trials(tmp_path, "a")] == ["COMPLETE", "COMPLETE"]
    assert json.loads((out / "best.json").read_text())["trial"] in (0, 1)


def test_the_loss_searched_and_scored_as_the_metric_is_refused_before_any_trial(tmp_path, capsys):
    """evaluation.metric: loss with model.loss drawn from {mse, ic}: an ic trial's score is minus its IC
    (~0.02 for a negative IC), an mse trial's its squared error (~0.4): the worse model would win."""
    cfg = dict(TINY, data={**TINY["data"], "symbols": ["AEM", "IBKR", "PDD", "WPM"], "batching": "dates"},
               evaluation={**TINY["evaluation"], "metric": "loss"},
               tune={**TINY["tune"], "search_space": {"model.loss": {"choices": ["mse", "ic"]}}})
    assert _run(tmp_path, cfg, 2, "l") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("hftraining: error: tune.search_space.model.loss: with "
                                                   "evaluation.metric=loss each trial is scored by its own loss"), err
    assert not (tmp_path / "o").exists()
    # scored by one metric, the same search is fine
    tune.check_objective(tune.load_config(None, ["evaluation.metric=neg_ic", "data.batching=dates"]),
                         tune.parse_space({"model.loss": {"choices": ["mse", "ic"]}}))


def test_a_second_walk_forward_cannot_remove_the_folds_of_one_running(tmp_path, capsys):
    """A walk-forward started again with output.overwrite=true while the first still trains (its folder
    locked, as the first holds it) removed the first one's folds under it, and both exited 0: now the
    second is one line naming the folder, exit 2, and the folder stays as it was."""
    base = tmp_path / "run" / "walkforward"
    (base / "fold-1").mkdir(parents=True)
    (base / "fold-1" / "eval.json").write_text("{}")
    before = sorted(str(p.relative_to(base)) for p in base.rglob("*"))
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running walk-forward holds
        args = tiny(tmp_path / "run", "training.max_steps=2", "evaluation.report=false", "output.overwrite=true")
        assert main(["walkforward", "--folds", "2", *args]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(base) in err and "another hftraining process" in err, err
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*")) == before
