"""What a resumed run compares with what it kept: the validation windows the best score and early
stopping's patience were measured on stay those windows."""

import json

import pytest

from hftraining.core.config import load_config
from hftraining.core.errors import UserError
from hftraining.train.runner import build_trainer
from conftest import tiny  # noqa: E402

QUICK = ["evaluation.report=false", "data.batch_size=8", "training.save_steps=5", "evaluation.eval_steps=5",
         "training.logging_steps=5"]


class _Killed(Exception):
    pass


def _fit(run, *extra, kill_after=None):
    """Train (or resume) the run; ``kill_after``: stop as a kill would, once that step's checkpoint is written."""
    cfg = load_config(None, tiny(run, *QUICK, *extra))
    tr = build_trainer(cfg)
    if kill_after is not None:
        save = tr.save_checkpoint

        def save_then_die():
            save()
            if tr.state.global_step == kill_after:
                raise _Killed

        tr.save_checkpoint = save_then_die
    try:
        tr.fit()
    except _Killed:
        pass
    finally:
        tr.close()
    return tr


def _eval_mse(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["eval_mse"] for r in recs if "eval_mse" in r}


def test_a_resume_that_changes_the_batches_max_eval_batches_counts_is_refused(tmp_path):
    # evaluation.max_eval_batches=1 scores the first data.eval_batch_size validation windows: a resume with
    # another eval_batch_size scored other windows (512 instead of 32) and compared them with the kept best,
    # silently: the best step stayed the one scored on 32 windows, and every later score counted against patience
    run = tmp_path / "run"
    _fit(run, "training.max_steps=20", "evaluation.max_eval_batches=1", "data.eval_batch_size=32", kill_after=10)
    with pytest.raises(UserError) as e:
        _fit(run, "training.max_steps=20", "evaluation.max_eval_batches=1", "data.eval_batch_size=512",
             "training.resume_from_checkpoint=auto")
    msg = str(e.value)
    assert "\n" not in msg
    assert "data.eval_batch_size=512 (the checkpoint's: 32)" in msg, msg
    assert sorted(_eval_mse(run)) == [5, 10]  # nothing was trained or scored on the other windows


def test_without_max_eval_batches_a_resume_may_change_eval_batch_size_and_scores_the_same_windows(tmp_path):
    # without the cap every validation window is scored whatever the batch size: the resume goes on, and its
    # scores are those of the uninterrupted run
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    _fit(whole, "training.max_steps=15", "data.eval_batch_size=32")
    _fit(parted, "training.max_steps=15", "data.eval_batch_size=32", kill_after=10)
    _fit(parted, "training.max_steps=15", "data.eval_batch_size=512", "training.resume_from_checkpoint=auto")
    a, b = _eval_mse(whole), _eval_mse(parted)
    assert sorted(b) == [5, 10, 15]
    assert b[15] == pytest.approx(a[15], rel=1e-5)
