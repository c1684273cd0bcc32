"""The interval coverage tests tell the truth: Kupiec's p-value is exact where its misses are independent
draws (its χ²(1) tail rejected exactly calibrated intervals over 20 windows 13% of the time at 5%), and
eval.json and the sentence say when pooled coverage hides symbols covered far above and far below the
level (coverage is marginal over the panel, not per symbol)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import tiny
from hftraining.core.config import load_config
from hftraining.eval.intervals import interval_report, kupiec
from hftraining.eval.report import _Doc, _interval_section
from hftraining.workflows.train_run import train


def _exact_reference(x: int, n: int, p: float) -> float:
    """Σ P(X = k) over the counts k whose binomial LR (from scipy's log-pmf) is at least the one of x."""
    k = np.arange(n + 1)
    lr = 2 * (stats.binom.logpmf(k, n, k / n) - stats.binom.logpmf(k, n, p))
    return float(stats.binom.pmf(k, n, p)[lr >= lr[x] - 1e-9 * max(1.0, lr[x])].sum())


@pytest.mark.parametrize("n, miss_rate", [(20, 0.1), (30, 0.1), (50, 0.05), (100, 0.05)])
def test_kupiec_rejects_exactly_calibrated_intervals_at_most_at_its_level(n, miss_rate):
    """Misses of exactly calibrated intervals, drawn as Binomial(n, miss rate): rejected at 5% at most 5% of
    the time (up to the simulation's noise), where the χ²(1) tail rejected 90% intervals over 20 windows
    13.3% of the time, over 30 6.8%, and 95% intervals over 50 8.9%, over 100 6.5%; each p-value is the
    exact one."""
    rng = np.random.default_rng(19)
    draws = rng.binomial(n, miss_rate, size=40_000)
    p_of = {int(x): kupiec(int(x), n, miss_rate)["p_value"] for x in np.unique(draws)}
    size = np.mean([p_of[int(x)] < 0.05 for x in draws])
    assert size <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws.size)
    for x, pv in p_of.items():
        assert pv == pytest.approx(_exact_reference(x, n, miss_rate), rel=1e-9, abs=1e-15)
    assert kupiec(3, n, miss_rate)["reference"] == "exact binomial"


def test_kupiec_keeps_its_power_and_its_size_over_many_windows():
    """Exact is not a test that never rejects: over 250 windows its size is close to 5%, and 25 misses in
    100 at 90% are rejected as before."""
    rng = np.random.default_rng(3)
    draws = rng.binomial(250, 0.1, size=40_000)
    p_of = {int(x): kupiec(int(x), 250, 0.1)["p_value"] for x in np.unique(draws)}
    assert 0.04 <= np.mean([p_of[int(x)] < 0.05 for x in draws]) <= 0.055
    k = kupiec(25, 100, 0.1)["p_value"]
    assert k == pytest.approx(_exact_reference(25, 100, 0.1), rel=1e-9) and k < 0.001


def test_no_miss_in_30_windows_is_not_called_uncalibrated():
    """One symbol, 30 dates, every realisation inside its 90% interval: 0 misses has probability
    0.9^30 = 0.042 and 8 or more (as unlikely by the LR) 0.008, so p = 0.050 and the intervals are not
    shown miscalibrated (the χ²(1) tail gave p = 0.012 and the sentence said "NOT calibrated")."""
    y = np.random.default_rng(1).normal(size=(30, 1)) * 0.1
    rep = interval_report({0.9: (np.full_like(y, -1.0), np.full_like(y, 1.0))}, y, np.arange(30), np.zeros(30, int),
                          "split")
    k = rep["levels"]["0.9"]["kupiec"]
    assert k["p_value"] == pytest.approx(0.9**30 + stats.binom.sf(7, 30, 0.1), rel=1e-9)
    assert k["p_value"] > 0.05 and k["reference"] == "exact binomial"
    assert rep["calibrated"] is not False and "NOT calibrated" not in rep["sentence"]


def test_a_clustered_panel_keeps_the_chi2_tail_of_its_corrected_lr_and_says_which():
    """Misses that come together on a date: the LR divided by its design effect (> 1) has no exact binomial
    law, so its p-value stays the χ²(1) tail, and eval.json says which reference each p-value is."""
    rng = np.random.default_rng(5)
    D, K = 60, 6
    shock = rng.random(D) < 0.15
    miss = ((rng.random((K, D)) < 0.05) | (shock & (rng.random((K, D)) < 0.8))).ravel()
    dates = np.tile(np.arange(D), K)
    k = kupiec(int(miss.sum()), miss.size, 0.1, miss, dates)
    assert k["design_effect"] > 1 and k["reference"] == "chi2(1)"
    assert k["p_value"] == pytest.approx(stats.chi2.sf(k["lr"], 1), rel=1e-12)
    one = kupiec(int(miss[:D].sum()), D, 0.1, miss[:D], dates[:D])  # one symbol: one miss per date
    assert one["design_effect"] == 1 and one["reference"] == "exact binomial"
    assert one["p_value"] == pytest.approx(_exact_reference(int(miss[:D].sum()), D, 0.1), rel=1e-9)


def test_one_symbol_gets_the_exact_p_value_whatever_the_order_of_its_windows():
    """One window per date: the design effect is 1 exactly, so the exact p-value, also when the windows
    do not come in date order (summed in another order, the design effect read 1 + 1e-16 and the p-value
    fell back to the χ²(1) tail)."""
    rng = np.random.default_rng(11)
    D = 200
    y = rng.normal(size=(D, 1))
    band = (np.full_like(y, -1.6449), np.full_like(y, 1.6449))
    x = int((np.abs(y[:, 0]) > 1.6449).sum())
    for order in (np.arange(D), rng.permutation(D), rng.permutation(D)):
        rep = interval_report({0.9: (band[0][order], band[1][order])}, y[order], np.arange(D)[order],
                              np.zeros(D, int), "split")
        k = rep["levels"]["0.9"]["kupiec"]
        assert k["design_effect"] == 1.0 and k["reference"] == "exact binomial"
        assert k["p_value"] == pytest.approx(_exact_reference(x, D, 0.1), rel=1e-9)


def _panel(vols: np.ndarray, dates: int = 250, seed: int = 7):
    """Realisations of symbols with volatilities ``vols`` and one 90% split interval radius for all,
    calibrated on residuals pooled over the symbols (as split conformal calibrates a panel)."""
    rng = np.random.default_rng(seed)
    S = len(vols)
    y = (rng.normal(size=(dates, S)) * vols).reshape(-1, 1)
    radius = np.quantile(np.abs(rng.normal(size=(4000, S)) * vols), 0.9)
    return y, np.repeat(np.arange(dates), S), np.tile(np.arange(S), dates), radius


def test_eval_json_gives_per_symbol_coverage_and_the_sentence_says_pooled_coverage_is_marginal():
    """20 symbols with volatilities 0.5 to 2 under one pooled 90% radius: about 0.90 of the pooled windows
    are covered (calibrated, as before), while the calm symbols are covered always and the volatile ones
    about 3 times in 4. eval.json gives each level's lowest and highest symbol coverage, with the symbols,
    and how many symbols' own Kupiec tests reject; the sentence says the coverage is marginal."""
    vols = np.linspace(0.5, 2.0, 20)
    names = [f"SYM{i:02d}" for i in range(20)]
    y, d, sid, r = _panel(vols)
    rep = interval_report({0.9: (np.full_like(y, -r), np.full_like(y, r))}, y, d, sid, "split", symbols=names)
    e = rep["levels"]["0.9"]
    assert e["coverage"] == pytest.approx(0.9, abs=0.015) and rep["calibrated"] is True  # the pooled verdict
    inside = np.abs(y[:, 0]) <= r
    cov = np.array([inside[sid == s].mean() for s in range(20)])
    ps = e["per_symbol"]
    assert ps["n_symbols"] == 20
    assert ps["min"] == {"symbol": names[int(np.argmin(cov))], "coverage": pytest.approx(cov.min()), "windows": 250}
    assert ps["max"] == {"symbol": names[int(np.argmax(cov))], "coverage": pytest.approx(cov.max()), "windows": 250}
    assert cov.min() < 0.8 and cov.max() > 0.99
    pv = [_exact_reference(int((~inside[sid == s]).sum()), 250, 0.1) for s in range(20)]
    assert ps["kupiec_rejected"] == sum(p < 0.05 for p in pv) >= 10
    assert ps["smallest_p"]["symbol"] == names[int(np.argmin(pv))]
    s = rep["sentence"]
    assert "calibrated (Kupiec" in s and "NOT" not in s
    assert "marginal over the panel, not per symbol" in s
    assert f"{cov.min():.3f} ({ps['min']['symbol']})" in s and f"{cov.max():.3f} ({ps['max']['symbol']})" in s
    assert json.loads(json.dumps(rep)) == rep  # plain JSON values


def test_symbols_covered_alike_get_no_sentence_but_their_range_in_eval_json():
    """Symbols of one volatility: their coverage differs by chance alone, so the sentence is the pooled
    verdict alone (no Bonferroni-significant symbol), while eval.json still gives their range."""
    y, d, sid, _ = _panel(np.ones(20))
    rep = interval_report({0.9: (np.full_like(y, -1.6449), np.full_like(y, 1.6449))}, y, d, sid, "split")
    ps = rep["levels"]["0.9"]["per_symbol"]
    assert ps["n_symbols"] == 20 and ps["min"]["coverage"] <= ps["max"]["coverage"]
    assert ps["min"]["symbol"] in {str(i) for i in range(20)}  # no names given: the ids
    assert "marginal" not in rep["sentence"] and rep["calibrated"] is True


def test_in_sample_scores_record_per_symbol_coverage_but_claim_nothing():
    y, d, sid, r = _panel(np.linspace(0.5, 2.0, 20))
    rep = interval_report({0.9: (np.full_like(y, -r), np.full_like(y, r))}, y, d, sid, "split",
                          in_sample="the val split holds the calibration windows")
    assert rep["levels"]["0.9"]["per_symbol"]["n_symbols"] == 20
    assert rep["calibrated"] is None and "marginal" not in rep["sentence"]


def test_report_shows_the_per_symbol_range_and_reads_an_older_eval_json(tmp_path):
    vols = np.linspace(0.5, 2.0, 20)
    y, d, sid, r = _panel(vols)
    rep = interval_report({0.9: (np.full_like(y, -r), np.full_like(y, r))}, y, d, sid, "split",
                          symbols=[f"SYM{i:02d}" for i in range(20)])
    doc = _Doc("t", tmp_path)
    _interval_section(doc, rep, None)
    md = "\n".join(doc.md)
    ps = rep["levels"]["0.9"]["per_symbol"]
    assert "step-1 coverage per symbol" in md and "marginal over the panel, not per symbol" in md
    assert (f"{ps['min']['coverage']:.3f} ({ps['min']['symbol']}) – {ps['max']['coverage']:.3f} ({ps['max']['symbol']}); "
            f"{ps['kupiec_rejected']} of 20 reject at 0.05") in md
    old = json.loads(json.dumps(rep))
    del old["levels"]["0.9"]["per_symbol"]  # an eval.json written before it had the field
    doc = _Doc("t", tmp_path)
    _interval_section(doc, old, None)
    assert "step-1 coverage per symbol" in "\n".join(doc.md)


def test_a_training_run_names_its_symbols_in_eval_json(tmp_path):
    out = tmp_path / "run"
    train(load_config(None, tiny(out, "training.max_steps=2", "evaluation.report=false")))
    iv = json.loads(Path(out / "eval.json").read_text())["intervals"]
    for e in iv["levels"].values():
        ps = e["per_symbol"]
        assert ps["n_symbols"] == 2 and {ps["min"]["symbol"], ps["max"]["symbol"]} <= {"AEM", "WPM"}
        assert e["kupiec"]["reference"] in ("exact binomial", "chi2(1)")
