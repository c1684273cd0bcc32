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


def test_the_table_of_an_eval_json_read_back_prints(tmp_path):
    """``format_table`` of an eval.json read from disk: a baseline whose rank IC is NaN (the zero forecast
    ranks nothing) is written as null, and the table's cross-section lines raised a TypeError on it."""
    import json

    import numpy as np

    from hftraining.core.jsonio import read_json, write_json
    from hftraining.eval.forecasts import Forecasts, format_table, score

    rng = np.random.default_rng(0)
    D, S, H = 40, 4, 1
    dates = np.repeat(np.arange(D, dtype=np.int64) * 86_400_000_000_000 + 10**18, S)
    true = rng.normal(0, 0.01, (D * S, H))
    pred = {"model": true + rng.normal(0, 0.01, (D * S, H)), "zero": np.zeros((D * S, H)),
            "drift": rng.normal(0, 0.002, (D * S, H))}
    fc = Forecasts(pred=pred, true=true, dates=dates, symbol_ids=np.tile(np.arange(S), D), symbols=list("ABCD"),
                   last_return=true[:, 0], past_vol=np.full(D * S, 0.01), last_close=np.full(D * S, 100.0))
    result = score(fc)
    write_json(tmp_path / "eval.json", result)
    back = read_json(tmp_path / "eval.json")
    assert back["baselines"]["zero"]["cross_section"]["rank_ic"]["mean"] is None  # NaN on disk is null
    assert format_table(back) == format_table(json.loads(json.dumps(result)))  # as the live result prints
