"""Leftovers: small behaviours a user relies on, each with the fix that made it hold."""
from __future__ import annotations

from pathlib import Path

import pytest

from hftraining.train.tracking import WandbTracker


class _Run:
    def __init__(self):
        self.summary, self.finished = {}, []

    def log_artifact(self, art):
        pass

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


class _Errors:
    Error = RuntimeError


class _Wandb:
    errors = _Errors


def _tracker() -> tuple[WandbTracker, _Run]:
    t = WandbTracker.__new__(WandbTracker)
    t.run, t.wandb, t.step, t.name_, t.where = _Run(), _Wandb, 3, "run", ""
    return t, t.run


@pytest.mark.parametrize(("failed", "interrupted", "code"), [(False, False, 0), (True, False, 1), (True, True, 255)])
def test_wandb_run_stopped_by_the_user_ends_with_wandbs_own_ctrl_c_code(failed, interrupted, code):
    """A W&B run stopped by Ctrl-C or SIGTERM ends with exit code 255, W&B's own code for a Ctrl-C (its
    exit hook's), not the 1 of a run that crashed: the two read apart in the W&B run's record."""
    t, run = _tracker()
    t.on_end("verdict", [Path("/nonexistent/final")], failed, interrupted)
    assert run.finished == [code]
