"""Edge cases of the buy/hold/sell head's scores and of the annualisation of bars around the clock: a
short test split that starts or ends inside a weekend, ``evaluate --split val`` of a run with the head,
and the head's scores on no window."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.core.config import load_config  # noqa: E402
from hftraining.eval import metrics as M  # noqa: E402
from hftraining.eval.backtest import backtest_forecasts, infer_periods_per_year  # noqa: E402
from hftraining.eval.forecasts import Forecasts  # noqa: E402


def _clock(start, n, freq):
    return pd.date_range(start, periods=n, freq=freq, tz="UTC").as_unit("ns").asi8


@pytest.mark.parametrize("start,end", [("2024-01-03 00:00", "2024-01-05 21:00"),  # stops at Friday 21:00
                                       ("2024-01-07 22:00", "2024-01-10 12:00")])  # starts at Sunday 22:00
def test_fx_bars_next_to_a_weekend_stay_on_252_days_with_the_warning(start, end):
    """FX bars that stop at Friday 21:00 UTC or start at Sunday 22:00 UTC reach no hour of the
    Saturday 12:00 to Sunday 10:00 UTC window; with no whole weekend inside they still cannot tell
    FX from crypto: 252 days and the warning naming evaluation.periods_per_year."""
    stamps = pd.date_range(start, end, freq="1h", tz="UTC").as_unit("ns").asi8
    warnings: list[str] = []
    assert infer_periods_per_year(stamps, warnings)[0] == 24 * 252
    assert len(warnings) == 1 and "evaluation.periods_per_year" in warnings[0]


def test_class_scores_of_no_window_name_no_date_and_no_share():
    """No window: no date for the DM test (n 0, too few dates), not one loss that is not finite, and no
    class share (it was 0 for each class, a share no window had)."""
    c = M.class_scores(np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0, dtype=np.int64), 0.01)
    assert c["n"] == 0 and c["not_finite"] == 0 and math.isnan(c["log_loss"])
    assert c["dm"]["n"] == 0 and c["dm"]["kernel"] == "none (too few dates)"
    assert all(math.isnan(v) for v in c["shares"].values())


def test_evaluate_on_the_val_split_says_the_heads_test_is_in_sample(tmp_path, capsys):
    """``evaluate RUN --split val`` scores the head on the windows that chose its checkpoint: its verdict
    says so, as the forecast's verdict does (it claimed "the head beats the class shares" without a word)."""
    from hftraining.cli import main
    from hftraining.workflows.evaluate_run import IN_SAMPLE

    run = tmp_path / "run"
    args = tiny(run, "training.max_steps=4", "training.save_steps=0", "evaluation.eval_steps=4",
                "evaluation.intervals=[]", "evaluation.report=false", "model.classification_threshold=0.01")
    assert main(["train", *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val", "--json", "--no-report"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verdict"].endswith(IN_SAMPLE["val"])
    assert res["model"]["classes"]["verdict"].startswith("buy/hold/sell head")
    assert res["model"]["classes"]["verdict"].endswith(IN_SAMPLE["val"])
    assert main(["evaluate", str(run), "--json", "--no-report"]) == 0  # the test split: out of sample, no note
    assert "not an out-of-sample test" not in json.loads(capsys.readouterr().out)["model"]["classes"]["verdict"]


def test_the_heads_verdict_claims_no_direction_the_pooled_log_loss_contradicts():
    """A panel whose dates hold different numbers of symbols: 300 dates of one symbol where the head is
    right, 30 dates of 50 symbols where it is wrong. Per date (the DM test) the head wins by far; pooled
    over the windows (the log loss said beside it) it loses. The verdict said "the head beats the class
    shares" beside a log loss above theirs; as the MSE verdict does, it now makes no claim."""
    from hftraining.eval.forecasts import class_verdict

    rng = np.random.default_rng(3)
    solo, crowded, members = 300, 30, 50
    dates = np.concatenate([np.arange(solo), np.repeat(np.arange(solo, solo + crowded), members)]).astype(np.int64)
    true = rng.normal(0, 0.02, size=(len(dates), 1))
    labels = np.where(true > 0.01, 2, np.where(true < -0.01, 0, 1))
    right = np.where(np.arange(len(dates)) < solo, 0.9, 0.1)[:, None, None]  # the probability of the class that happens
    probs = np.broadcast_to((1 - right) / 2, true.shape + (3,)).copy()
    np.put_along_axis(probs, labels[..., None], right, axis=-1)
    c = M.class_scores(probs, true, dates, 0.01)
    assert c["log_loss"] > c["log_loss_shares"]  # pooled: the head loses
    assert c["dm"]["statistic"] < 0 and c["dm"]["p_value"] < 0.05  # per date: the head wins
    text = class_verdict(c)
    assert "beats" not in text and "WORSE" not in text
    assert "point in opposite directions" in text and "not shown to have skill" in text
