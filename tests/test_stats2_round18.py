"""Diebold–Mariano p-values over few dates: no p is below the exact sign test's smallest over the m = ⌈T/H⌉
dates H apart, 2^(1 − m), so a fixed gain reads no more significant for a little noise than without it (and
the Student-t p stays in eval.json as ``p_t``); an infinite DM statistic prints as ±inf, not as the dash of a
missing figure, and a walk-forward fold keeps the sign of one that walkforward.json writes as null."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from hftraining.core.jsonio import dumps
from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, class_verdict, format_table, score


def _panel(true: np.ndarray, S: int, **pred: np.ndarray) -> Forecasts:
    W = len(true)
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(W // S, dtype=np.int64) * 86_400 * 10**9, S),
                     symbol_ids=np.tile(np.arange(S), W // S), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def _t_p(d: np.ndarray) -> float:
    """The HLN-corrected DM p at lag 0 written out: the one-sample t test of d (scipy)."""
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def test_a_fixed_gain_reads_no_more_significant_for_a_little_noise():
    """A loss lower by 1 on each of 4 dates, with noise shrinking from 0.1 to nothing: Student's t read p = 2e-4,
    2e-13, 2e-31 ("beats"), then 0.125 (the sign test) once the noise was within rounding. Every one is now the
    sign test's 0.125, the t p kept beside it and the floor said."""
    shape = np.array([1.0, -1.0, 0.5, -0.5])
    seen = []
    for eps in (1e-1, 1e-4, 1e-10, 1e-20, 0.0):
        d = -1.0 + eps * shape
        out = M.diebold_mariano(d, np.zeros(4), lag=0)
        seen.append(out["p_value"])
        assert out["p_value"] == 0.125 and out["p_floor"] == 0.125
        if eps >= 1e-10:  # a spread to test by: the t statistic, its p kept and checkable
            assert out["p_t"] == pytest.approx(_t_p(d), rel=1e-9) and out["p_t"] < 0.125
            assert out["kernel"] == "rectangular; p raised to the sign test's smallest over 4 dates, 2^(1 − 4)"
        else:
            assert out["statistic"] == -math.inf and out["p_t"] == 0.0
    assert seen == sorted(seen, reverse=True)  # never jumps back up as the gain becomes cleaner


@pytest.mark.parametrize("T, lag", [(3, 0), (5, 0), (6, 1), (10, 2), (25, 4)])
def test_no_difference_over_five_independent_dates_or_fewer_is_significant(T, lag):
    """However large and clean the gain, ⌈T/H⌉ ≤ 5 dates give p ≥ 2^-4 = 0.0625: no claim at 0.05."""
    rng = np.random.default_rng(T * 10 + lag)
    m = -(-T // (lag + 1))
    assert m <= 5
    for scale in (1e-1, 1e-3, 1e-6):
        out = M.diebold_mariano(-5.0 + scale * rng.standard_normal(T), np.zeros(T), lag=lag)
        assert out["p_value"] >= 0.0625
        assert out["p_value"] == pytest.approx(max(out["p_t"], 2.0 ** (1 - m)), rel=1e-12)


def test_the_floor_leaves_a_long_test_split_to_students_t():
    """At 200 dates and H = 5 the floor is 2^-39 (1.8e-12): a p of 0.003 or 1e-8 is Student's t's, no p_floor."""
    rng = np.random.default_rng(7)
    T, lag = 200, 4
    for shift in (0.2, 0.5):
        d = shift + rng.standard_normal(T)
        out = M.diebold_mariano(d, np.zeros(T), lag=lag)
        assert out["p_value"] == out["p_t"] > 2.0 ** -39 and "p_floor" not in out
        assert out["kernel"] in ("rectangular", "bartlett")


def test_verdict_of_a_noisy_constant_gain_over_four_dates_claims_nothing():
    """A model 0.001 off the truth beside a repeat forecast 0.002 off, each window with its own small noise: over
    4 dates the Student-t p read 1e-7 and "the model beats the strongest baseline (significant at 0.05)", while
    the same gain without the noise read p = 0.125 and no claim."""
    S, T = 3, 4
    rng = np.random.default_rng(0)
    true = rng.normal(0, 0.01, (S * T, 1))
    noise = rng.normal(0, 1e-5, true.shape)
    res = score(_panel(true, S, model=true + 0.001 + noise, zero=np.zeros_like(true), repeat=true + 0.002))
    dm = res["strongest_baseline"]["dm"]
    assert res["strongest_baseline"]["name"] == "repeat" and math.isfinite(dm["statistic"]) and dm["statistic"] < 0
    assert "beats the strongest baseline" not in res["verdict"]
    assert "DM p = 0.125: no significant difference" in res["verdict"]
    assert dm["p_t"] < 1e-3 and dm["p_value"] == dm["p_floor"] == 0.125


def test_class_head_test_over_three_dates_is_floored_too():
    """A buy/hold/sell head a little better than the class shares on each of 3 dates, by a different amount each
    date: Student's t read p = 0.003 and "the head beats the class shares"; 3 dates say at most 2^-2."""
    rng = np.random.default_rng(1)
    W, H, T = 30, 1, 3
    true = rng.choice([-0.02, 0.0, 0.02], size=(W, H))
    labels = np.where(true > 0.01, 2, np.where(true < -0.01, 0, 1))
    shares = np.bincount(labels.ravel(), minlength=3) / labels.size
    dates = np.repeat(np.arange(T), W // T)
    lean = np.array([0.05, 0.06, 0.055])[dates][:, None, None]  # a little towards the realised class, per date
    probs = (1 - lean) * shares + lean * np.eye(3)[labels]
    c = M.class_scores(probs, true, dates, threshold=0.01)
    assert c["dm"]["statistic"] < 0 and c["dm"]["p_value"] == 0.25
    assert "no significant difference, the head is not shown to have skill" in class_verdict(c)
    assert c["dm"]["p_t"] < 0.05 and c["dm"]["p_floor"] == 0.25


def _inf_result() -> dict:
    """score() of a model whose loss is lower than every baseline's by the same amount on each of 8 dates."""
    S, T = 3, 8
    true = np.random.default_rng(1).normal(0, 0.01, (S * T, 1))
    return score(_panel(true, S, model=true + 0.001, zero=np.zeros_like(true), repeat=true + 0.002))


def test_console_table_prints_an_infinite_dm_statistic_as_inf():
    """The sign test's −inf printed as "—" (a missing figure) beside its p = 0.0078: the console prints -inf."""
    res = _inf_result()
    assert res["dm"]["repeat"]["statistic"] == -math.inf
    line = next(ln for ln in format_table(res).splitlines() if ln.startswith("naive:repeat"))
    assert line.split()[-2:] == ["-inf", "0.00781"], line


def test_report_and_model_card_print_an_infinite_dm_statistic_as_inf(tmp_path):
    """The same -inf in the report's table and the model card's sentence, from score() or from eval.json (where
    it is null: its sign is the mean difference's, beside a finite p)."""
    from hftraining.eval import model_card, report

    res = _inf_result()
    for result in (res, json.loads(dumps(res))):
        card = "\n".join(model_card._metrics_section(result, tmp_path / "run"))
        assert "naive:repeat: statistic -inf, p = 0.00781" in card, card
        doc = report._Doc("t", tmp_path)
        report._metrics_section(doc, result)
        row = next(ln for ln in doc.md if ln.startswith("| naive:repeat"))
        assert row.rstrip(" |").split(" | ")[-2:] == ["-inf", "0.00781"], row
    assert M.dm_statistic_text({"statistic": None, "p_value": math.nan, "mean_diff": -1.0}) == "—"  # no test
    assert M.dm_statistic_text({"statistic": math.inf, "p_value": 0.25}) == "+inf"


def test_walkforward_fold_keeps_the_sign_of_an_infinite_dm_statistic():
    """A fold whose model loss is a quarter of the zero forecast's on every date: its DM statistic vs zero is
    −inf, null in walkforward.json (as every non-finite number), with p = 2^-7: the fold said neither better nor
    worse. Its mean loss difference (model − zero) is kept beside it."""
    from hftraining.workflows.walkforward import _fold_summary

    S, T = 3, 8
    true = 0.01 * np.random.default_rng(2).choice([-1.0, 1.0], (S * T, 1))
    res = score(_panel(true, S, model=0.5 * true, zero=np.zeros_like(true), repeat=-true))
    fold = json.loads(dumps(_fold_summary(res)))
    assert fold["dm_statistic"] is None and fold["dm_p_value"] == 2.0 ** -7
    assert fold["dm_mean_diff"] == pytest.approx(0.25e-4 - 1e-4)
