"""``train --seeds N --resume``: a seed the resume leaves as it is (finished and scored) and a seed it
trains or scores now are one configuration but for ``training.seed``, or the resume is a one-line error."""

import json

from hftraining.cli import main
from conftest import tiny  # noqa: E402


def _args(root, *extra):
    return tiny(root, "model.hidden_size=8", "training.max_steps=2", "evaluation.eval_steps=0",
                "evaluation.report=false", "evaluation.baseline_max_windows=200", *extra)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _interrupted(root, *extra):
    """A --seeds 2 run stopped before its second seed began: seed-0 finished and scored, no seed-1 or ensemble."""
    import shutil

    assert main(["train", "--seeds", "2", *_args(root, *extra)]) == 0
    shutil.rmtree(root / "seed-1")
    shutil.rmtree(root / "ensemble")


def test_a_resume_that_scores_a_seed_on_other_test_windows_is_refused(tmp_path, capsys):
    """seed-0 was scored on every test window; the resume scored seed-1 on the last 8 (evaluation.max_test_windows
    given with --resume) and seeds.json spread the two seeds' MSE ratios as one run's, each against a strongest
    baseline picked on its own windows (fitted:ridge in one seed, naive:seasonal_naive in the other), exit 0.
    Now: one line naming the finished seed, the key and both values, exit 2, nothing trained."""
    root = tmp_path / "run"
    _interrupted(root)
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root, "evaluation.max_test_windows=8"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (f"hftraining: error: --seeds 2: {root / 'seed-0'} is finished with evaluation.max_test_windows=50000, "
                   "which a resume leaves as it is, while seed-1 would be scored with evaluation.max_test_windows=8: the "
                   "seeds would differ in more than training.seed (seeds.json would spread figures of unlike runs); "
                   "resume with evaluation.max_test_windows=50000, or start over with output.overwrite=true\n"), err
    assert _listing(root) == before
    # the same settings resume, and every seed's figures in seeds.json are of the same test windows
    assert main(["train", "--seeds", "2", *_args(root), "--resume"]) == 0
    evals = [json.loads((root / f"seed-{k}" / "eval.json").read_text()) for k in range(2)]
    assert evals[0]["n_windows"] == evals[1]["n_windows"]
    summary = json.loads((root / "ensemble" / "seeds.json").read_text())
    assert len(set(summary["strongest_baseline"])) == 1


def test_a_resume_that_trains_a_seed_for_fewer_steps_is_refused(tmp_path, capsys):
    """seed-0 finished at step 4; the resume, given training.max_steps=2, left it as it is and trained seed-1
    for 2 steps: an ensemble of a 4-step and a 2-step member, their spread in seeds.json read as the seeds',
    exit 0. Now: one line naming training.max_steps, exit 2, nothing trained; a backtest cost changed with the
    resume is refused alike (seed-0's Sharpe was booked at 5 bps, seed-1's at 50)."""
    root = tmp_path / "run"
    _interrupted(root, "training.max_steps=4")
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root, "training.max_steps=2"), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{root / 'seed-0'} is finished with training.max_steps=4" in err[0], err
    assert "seed-1 would be trained with training.max_steps=2" in err[0] and "output.overwrite=true" in err[0]
    assert main(["train", "--seeds", "2", *_args(root, "training.max_steps=4", "evaluation.backtest_cost_bps=50"),
                 "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "evaluation.backtest_cost_bps=5.0" in err[0] and "with evaluation.backtest_cost_bps=50.0" \
        in err[0], err
    assert _listing(root) == before


def test_a_resume_may_change_what_changes_neither_the_weights_nor_the_figures(tmp_path, capsys):
    """Logging, checkpoint cadence and the report are not the seeds' configuration: a resume changing them
    trains the missing seed; and a resume that leaves every seed as it is mixes nothing (it is not refused)."""
    root = tmp_path / "run"
    _interrupted(root)
    assert main(["train", "--seeds", "2", *_args(root, "training.logging_steps=1", "training.save_steps=1",
                                                 "evaluation.report=true"), "--resume"]) == 0
    assert (root / "seed-1" / "report.html").exists() and (root / "ensemble" / "seeds.json").exists()
    assert main(["train", "--seeds", "2", *_args(root, "evaluation.backtest_cost_bps=50"), "--resume"]) == 0
