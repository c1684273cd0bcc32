"""Model selection as a user relies on it: tune's median pruner judges a trial of ``tune.folds`` by its
reports of the fold it trains, and a purged k-fold walk-forward refuses early stopping and the best
checkpoint, which its folds (no validation windows) could not apply."""

import pytest

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from conftest import tiny  # noqa: E402


def _study_with_two_folds(fold0: float, fold1: float):
    """A study of the median pruner of tune.folds: 2, training.max_steps drawn from {2, 4}, evaluations
    every 2 steps (fold 0 reports at steps 2, 4, fold 1 at 6, 8), with two completed trials that scored
    ``fold0`` on fold 0 and ``fold1`` on fold 1."""
    cfg = load_config(None, ["tune.folds=2", "tune.pruner_startup_trials=1", "tune.pruner_warmup_evals=1",
                             'tune.search_space={"training.max_steps": {"choices": [2, 4]}}'])
    study = optuna.create_study(direction="minimize", pruner=tune._pruner(optuna, cfg))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=(fold0 + fold1) / 2,
            intermediate_values={2: fold0, 4: fold0, 6: fold1, 8: fold1}))
    return study


def test_a_trial_far_worse_on_a_later_fold_is_pruned_whatever_its_earlier_fold_scored():
    """Fold 0 (a calm period) scores 0.5 for every trial, fold 1 scores 2.0. A trial as good as the
    others on fold 0 that scores 100 on fold 1 is worse than the median there: pruned. Optuna's rule
    took the trial's best report over both folds (0.5, from fold 0) against the median of fold 1 (2.0),
    so no trial was ever pruned after its first fold."""
    study = _study_with_two_folds(0.5, 2.0)
    trial = study.ask()
    trial.report(0.5, 2)
    trial.report(0.5, 4)
    assert not trial.should_prune()  # fold 0: at the median
    trial.report(100.0, 6)
    assert trial.should_prune()
    # a trial as good as the others on fold 1 goes on, as one better on fold 1 than its fold 0 score
    ok = study.ask()
    for step, v in ((2, 0.5), (4, 0.5), (6, 1.0)):
        ok.report(v, step)
    assert not ok.should_prune()


def test_within_a_fold_the_trial_is_judged_by_its_best_report_of_that_fold():
    """Fold 1 of the others reads 2.0 at steps 6 and 8: a trial at 1.0 at step 6 and 3.0 at step 8 keeps its
    best of the fold (1.0 ≤ 2.0), Optuna's rule within one run; a later-fold trial worse at every step of
    the fold is pruned at its first report there."""
    study = _study_with_two_folds(2.0, 2.0)
    trial = study.ask()
    for step, v in ((2, 2.0), (4, 2.0), (6, 1.0), (8, 3.0)):
        trial.report(v, step)
    assert not trial.should_prune()


@pytest.mark.parametrize("setting, named", [
    ("training.early_stopping_patience=1", "training.early_stopping_patience=1 needs validation windows"),
    ("training.load_best_model_at_end=true", "training.load_best_model_at_end needs validation windows"),
])
def test_purged_kfold_refuses_early_stopping_and_the_best_checkpoint_it_could_not_apply(tmp_path, capsys, setting, named):
    """Purged k-fold trains on every row outside a fold's test block, its validation windows included: no
    validation score could stop a fold early or choose its best checkpoint. Each fold trained to
    training.max_steps and the walk-forward exited 0 as if the setting had acted; now one line, exit 2,
    before anything is written. The forward schemes keep a validation split and accept it."""
    args = tiny(tmp_path / "run", "training.max_steps=2", "evaluation.eval_steps=1", "evaluation.report=false", setting)
    assert main(["walkforward", "--folds", "2", "--scheme", "purged_kfold", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scheme purged_kfold: " + named in err, err
    assert not (tmp_path / "run").exists()
    assert main(["walkforward", "--folds", "2", "--scheme", "expanding", *args]) == 0
    assert (tmp_path / "run" / "walkforward" / "walkforward.json").is_file()
