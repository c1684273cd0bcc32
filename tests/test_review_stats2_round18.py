"""The cross-sectional verdict's p-values (the model's step-1 rank IC, and the paired per-date rank IC difference
with the strongest baseline) have the Diebold–Mariano test's floor: none below the exact sign test's smallest
over the dates, 2^(1 − m). A rank IC of 1 on each of 4 dates read p = 0.125 (the sign test) while a slightly
worse ranking read p = 1e-9, "significantly positive"; a gain over the baseline a little uneven across 4
dates read "the model ranks better" at p = 0.001. The report and the console say the DM floor beside the
Student's t they name, so that a p above the statistic's t p is not read as a misprint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from hftraining.core.jsonio import dumps
from hftraining.eval.forecasts import Forecasts, format_table, score

DAY = 86_400 * 10**9


def _cs_panel(T: int, S: int, noise: float, seed: int = 0) -> Forecasts:
    """``cs_rank`` labels of S symbols over T dates; the model is the truth plus ``noise``, naive:drift the truth
    with the first 30% of the symbols turned over (a rank IC well below the model's on every date)."""
    rng = np.random.default_rng(seed)
    true = rng.standard_normal((T, S))
    base = true.copy()
    base[:, : int(0.3 * S)] *= -1.0
    model = true + noise * np.random.default_rng(seed + 1).standard_normal(true.shape)
    W = S * T
    col = lambda a: a.reshape(W, 1)  # noqa: E731 (date-major rows, one step)
    return Forecasts(pred={"model": col(model), "zero": np.zeros((W, 1)), "drift": col(base)}, true=col(true),
                     dates=np.repeat(np.arange(T, dtype=np.int64) * DAY, S), symbol_ids=np.tile(np.arange(S), T),
                     symbols=[f"S{i}" for i in range(S)], last_return=np.zeros(W), past_vol=np.ones(W),
                     last_close=np.ones(W), target="cs_rank")


def _rank_ic_difference(fc: Forecasts) -> np.ndarray:
    """Per date, Spearman(model, truth) − Spearman(drift, truth) (scipy), date order."""
    out = []
    for d in np.unique(fc.dates):
        k = fc.dates == d
        y = fc.true[k, 0]
        out.append(stats.spearmanr(fc.pred["model"][k, 0], y)[0] - stats.spearmanr(fc.pred["drift"][k, 0], y)[0])
    return np.array(out)


def test_a_rank_ic_a_little_below_one_over_four_dates_is_no_more_significant_than_one():
    """Over 4 dates a perfect ranking reads the sign test's p = 0.125; a ranking a little worse on each date read
    t = 1304, p = 1e-9 and "significantly positive". Both are now 0.125: no claim."""
    for noise in (0.0, 0.05, 0.2):
        r = score(_cs_panel(4, 40, noise))
        ric = r["model"]["cross_section"]["rank_ic"]
        assert ric["n_dates"] == 4 and ric["mean"] > 0.95
        assert "not significantly different from 0 (p = 0.125)" in r["verdict"], (noise, r["verdict"])
        assert "significantly positive" not in r["verdict"]


def test_a_paired_rank_ic_gain_over_four_dates_claims_nothing_and_keeps_its_t_p():
    """The model's rank IC above drift's by 0.60–0.65, a little unevenly, on each of 4 dates: the paired t test
    (scipy, on the per-date Spearman differences) reads p = 0.0013, and the verdict said "the model ranks better
    than the strongest baseline". 4 dates can say no more than 2^(1 − 4): eval.json keeps the t p as ``p_t``."""
    fc = _cs_panel(4, 40, 0.05)
    r = score(fc)
    diff = r["cross_section_strongest"]["difference"]
    ref = stats.ttest_1samp(_rank_ic_difference(fc), 0.0)
    assert r["cross_section_strongest"]["name"] == "drift" and diff["mean"] > 0.5
    assert diff["p_t"] == pytest.approx(ref.pvalue, rel=1e-9) and diff["p_t"] < 0.05
    assert diff["p_value"] == diff["p_floor"] == 0.125
    assert "the model ranks better" not in r["verdict"]
    assert "(paired p = 0.125): no significant difference, so the model is not worth its cost over naive:drift" \
        in r["verdict"], r["verdict"]
    back = json.loads(dumps(r))["cross_section_strongest"]["difference"]
    assert back["p_value"] == 0.125 and back["p_t"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_a_paired_rank_ic_test_over_many_dates_is_students_t_alone():
    """Over 40 dates the floor is 2^-39: the paired p (0.17 here) is the paired t test's, no ``p_floor``."""
    fc = _cs_panel(40, 12, 1.5, seed=3)
    r = score(fc)
    diff = r["cross_section_strongest"]["difference"]
    ref = stats.ttest_1samp(_rank_ic_difference(fc), 0.0)
    assert diff["p_value"] == diff["p_t"] == pytest.approx(ref.pvalue, rel=1e-9) and "p_floor" not in diff
    assert ref.pvalue > 2.0 ** -39


def _dm_panel() -> dict:
    """score() of a model 0.001 off the truth beside a repeat forecast 0.002 off, with a little noise, over 4 dates
    of 3 symbols: the DM t p is 1e-7, p = the floor 0.125."""
    S, T = 3, 4
    rng = np.random.default_rng(0)
    true = rng.normal(0, 0.01, (S * T, 1))
    W = S * T
    fc = Forecasts(pred={"model": true + 0.001 + rng.normal(0, 1e-5, true.shape), "zero": np.zeros_like(true),
                         "repeat": true + 0.002}, true=true, dates=np.repeat(np.arange(T, dtype=np.int64) * DAY, S),
                   symbol_ids=np.tile(np.arange(S), T), symbols=[f"S{i}" for i in range(S)], last_return=np.zeros(W),
                   past_vol=np.ones(W), last_close=np.ones(W))
    return score(fc)


def test_console_and_report_say_the_dm_floor_beside_students_t(tmp_path):
    """The DM statistic vs repeat is −375 over 4 dates, its p 0.125: the description under the table named only
    Student's t (whose p there is 1e-7). It now names the floor with this split's 4 dates; an eval.json written
    before the floor (no ``p_t``: its p-values are Student's t alone) is described as before."""
    from hftraining.eval import report

    res = _dm_panel()
    dm = res["dm"]["repeat"]
    assert dm["p_t"] < 1e-3 and dm["p_value"] == 0.125 and dm["statistic"] < -100
    said = "no p below the exact sign test's smallest over the 4 dates H = 1 apart of the 4 (2^(1 − 4) = 0.125"
    line = next(ln for ln in format_table(res).splitlines() if ln.startswith("DM: "))
    assert said in line, line
    for result, floor in ((json.loads(dumps(res)), True), (_without_p_t(json.loads(dumps(res))), False)):
        doc = report._Doc("t", tmp_path)
        report._metrics_section(doc, result)
        para = next(ln for ln in doc.md if ln.startswith("Diebold–Mariano: "))
        assert (said in para) == floor, para
        assert "Student's t" in para


def _without_p_t(result: dict) -> dict:
    for d in [*result["dm"].values(), *result["dm_vs_zero_per_step"]]:
        d.pop("p_t", None)
        d.pop("p_floor", None)
    result["dm_vs_zero"] = result["dm"]["zero"]
    return result
