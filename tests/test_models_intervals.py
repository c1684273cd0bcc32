"""Conformal intervals (split, ACI, CQR) and their calibration tests, on data where the answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from hftraining.data.windows import WindowSet
from hftraining.eval.intervals import (ROLLING_DATES, christoffersen, forecast_intervals, interval_report, kupiec,
                                      outcome_times, rolling_coverage, winkler)
from hftraining.models.intervals import Calibration, aci_bounds, conformal_radius

LEVELS = [0.8, 0.9]


def test_conformal_radius_is_the_finite_sample_rank():
    s = np.arange(1.0, 10.0)  # n = 9
    assert conformal_radius(s, 0.8) == 8.0  # ⌈10 · 0.8⌉ = 8th smallest
    assert conformal_radius(s, 0.5) == 5.0
    assert conformal_radius(s, 0.95) == math.inf  # ⌈9.5⌉ = 10 > n
    assert conformal_radius(np.zeros(0), 0.8) == math.inf


def _binomial_ok(hits: int, n: int, level: float) -> bool:
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n, level)
    return lo <= hits <= hi


def test_split_coverage_on_exchangeable_noise_is_within_binomial_bounds():
    rng = np.random.default_rng(0)
    H = 3
    scale = np.array([1.0, 2.0, 0.5])  # each step calibrated on its own
    cal = Calibration.fit(np.zeros((1500, H)), rng.normal(size=(1500, H)) * scale, LEVELS)
    y = rng.normal(size=(4000, H)) * scale
    b = cal.bounds(np.zeros_like(y))
    for level in LEVELS:
        lo, hi = b[level]
        inside = (y >= lo) & (y <= hi)
        for h in range(H):
            assert _binomial_ok(int(inside[:, h].sum()), len(y), level), (level, h, inside[:, h].mean())
    # a narrower calibration set than the level needs gives an unbounded interval, not a wrong one
    tiny = Calibration.fit(np.zeros((5, 1)), rng.normal(size=(5, 1)), [0.9])
    assert tiny.radius[0, 0] == math.inf


def _panel_known(d: np.ndarray, H: int) -> np.ndarray:
    """(W, H) when each outcome is known on a panel where every symbol has a row on every date
    0, 1, ...: step h of date i on date i + h."""
    return np.asarray(d)[:, None] + np.arange(1, H + 1)


def _shift(seed: int = 1, dates: int = 1200, symbols: int = 5, at: int = 300, sd: float = 1.6):
    rng = np.random.default_rng(seed)
    d = np.repeat(np.arange(dates), symbols)
    true = rng.normal(size=(dates * symbols, 1)) * np.where(d >= at, sd, 1.0)[:, None]
    return d, np.zeros_like(true), true


def test_split_under_covers_after_a_regime_shift_and_aci_recovers():
    rng = np.random.default_rng(0)
    cal_pred, cal_true = np.zeros((2000, 1)), rng.normal(size=(2000, 1))
    d, pred, true = _shift()
    late = d >= 700
    split = Calibration.fit(cal_pred, cal_true, [0.9])
    lo, hi = split.bounds(pred)[0.9]
    cov_split = ((true >= lo) & (true <= hi))[late].mean()
    aci = Calibration.fit(cal_pred, cal_true, [0.9], method="aci", gamma=0.02)
    b, alpha = aci_bounds(aci, pred, true, d, _panel_known(d, 1))
    lo, hi = b[0.9]
    cov_aci = ((true >= lo) & (true <= hi))[late].mean()
    assert cov_split < 0.8  # about 0.70: the variance grew
    assert abs(cov_aci - 0.9) < 0.03, cov_aci
    assert alpha[0, 0] < 0.1  # it asks for a higher quantile of the old scores now


def test_aci_never_uses_an_outcome_before_it_is_known():
    rng = np.random.default_rng(2)
    D, S, H = 60, 4, 3
    d = np.repeat(np.arange(D), S)
    pred, true = rng.normal(size=(D * S, H)) * 0.1, rng.normal(size=(D * S, H))
    cal = Calibration.fit(np.zeros((500, H)), rng.normal(size=(500, H)), LEVELS, method="aci", gamma=0.05)
    known = _panel_known(d, H)
    base, _ = aci_bounds(cal, pred, true, d, known)
    t = 30
    changed = true.copy()
    changed[d >= t] = rng.normal(size=((d >= t).sum(), H)) * 5  # everything forecast from date t on
    changed[d == t - 1, 1:] = 9.0  # steps 2.. of date t − 1 are realised after date t
    got, _ = aci_bounds(cal, pred, changed, d, known)
    upto = d <= t
    for level in LEVELS:
        for k in (0, 1):
            np.testing.assert_array_equal(got[level][k][upto], base[level][k][upto])
    # while step 1 of date t − 1 (realised on date t) does move date t's intervals
    moved = true.copy()
    moved[d == t - 1, 0] = 9.0
    got, _ = aci_bounds(cal, pred, moved, d, known)
    assert not np.array_equal(got[0.9][0][d == t], base[0.9][0][d == t])
    np.testing.assert_array_equal(got[0.9][0][d < t], base[0.9][0][d < t])


def _two_calendars() -> WindowSet:
    """1-step windows of A, trading on dates 0, 1, 2 (and 3), and B, trading on 0 and 2 (and 3) only:
    B's date-0 outcome is its row of date 2."""
    times = np.array([0, 1, 2, 3, 0, 2, 3], dtype=np.int64)  # rows 0-3: A, rows 4-6: B
    return WindowSet(features=np.zeros((7, 1), np.float32), returns=np.zeros(7, np.float32),
                     ends=np.array([0, 4, 1, 2, 5]), symbol_ids=np.array([0, 1, 0, 0, 1]),
                     segment_first=np.array([0, 4]), row_times=times, row_close=np.ones(7), symbols=["A", "B"],
                     seq_len=1, horizon=1)


def test_aci_waits_for_each_symbols_own_next_row_when_calendars_differ():
    """An outcome is known on the date of the symbol's own next row, not on the next date of the
    pooled calendar: B's date-0 outcome (its row of date 2) cannot move A's date-1 interval."""
    ws = _two_calendars()
    dates, known = ws.times, outcome_times(ws)
    np.testing.assert_array_equal(known[:, 0], [1, 2, 2, 3, 3])  # A0, B0, A1, A2, B2
    rng = np.random.default_rng(7)
    cal = Calibration.fit(np.zeros((500, 1)), rng.normal(size=(500, 1)), LEVELS, method="aci", gamma=0.2)
    pred, true = np.zeros((5, 1)), np.zeros((5, 1))
    base, _ = forecast_intervals(cal, pred, true, dates, known=known)
    missed = true.copy()
    missed[1, 0] = 9.0  # B's date-0 outcome misses every interval
    got, after = forecast_intervals(cal, pred, missed, dates, known=known)
    for level in LEVELS:
        for k in (0, 1):
            np.testing.assert_array_equal(got[level][k][dates <= 1], base[level][k][dates <= 1])  # A's date 1 too
            assert not np.array_equal(got[level][k][dates == 2], base[level][k][dates == 2])  # known from date 2 on
    # the α a new forecast uses has seen every outcome; one update per date: B's miss counts γ/2
    _, after_base = forecast_intervals(cal, pred, true, dates, known=known)
    np.testing.assert_allclose(after_base.alpha - after.alpha, 0.2 / 2)
    with pytest.raises(ValueError, match="known"):
        forecast_intervals(cal, pred, true, dates)


def test_cqr_adapts_the_width_to_the_quantile_head():
    rng = np.random.default_rng(3)
    n = 3000
    vol = rng.uniform(0.2, 2.0, n)
    y = rng.normal(size=(n, 1)) * vol[:, None]
    q = np.stack([-0.8 * 1.645 * vol, 0.8 * 1.645 * vol], axis=-1)[:, None, :]  # (n, 1, 2): too narrow by 20%
    cal = Calibration.fit(np.zeros((n, 1)), y, [0.9], method="cqr", quantiles=q, q_levels=[0.05, 0.95])
    y2 = rng.normal(size=(n, 1)) * vol[:, None]
    lo, hi = cal.bounds(np.zeros((n, 1)), q)[0.9]
    inside = (y2 >= lo) & (y2 <= hi)
    assert _binomial_ok(int(inside.sum()), n, 0.9)
    with pytest.raises(ValueError, match="cqr at 0.8 needs"):
        Calibration.fit(np.zeros((n, 1)), y, [0.8], method="cqr", quantiles=q, q_levels=[0.05, 0.95])


def test_calibration_round_trips_through_json():
    rng = np.random.default_rng(4)
    cal = Calibration.fit(np.zeros((7, 2)), rng.normal(size=(7, 2)), [0.5, 0.9], method="aci", gamma=0.01)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.radius[1, 0] == math.inf
    np.testing.assert_array_equal(again.radius, cal.radius)
    np.testing.assert_array_equal(again.grid, cal.grid)
    p = rng.normal(size=(3, 2))
    for level in cal.levels:
        np.testing.assert_array_equal(again.bounds(p)[level][0], cal.bounds(p)[level][0])


def test_kupiec_christoffersen_and_winkler_by_hand():
    k = kupiec(10, 100, 0.1)
    assert k["lr"] == pytest.approx(0.0) and k["p_value"] == pytest.approx(1.0)
    k = kupiec(25, 100, 0.1)
    lr = -2 * (75 * math.log(0.9) + 25 * math.log(0.1)) + 2 * (75 * math.log(0.75) + 25 * math.log(0.25))
    assert k["lr"] == pytest.approx(lr) and k["p_value"] < 0.001
    # misses that come in runs fail independence, at the same miss rate as scattered ones
    runs = np.tile([0] * 45 + [1] * 5, 20).astype(bool)
    scattered = np.random.default_rng(5).permutation(runs)
    assert christoffersen([runs])["p_value"] < 0.001
    assert christoffersen([scattered])["p_value"] > 0.01
    assert christoffersen([runs])["transitions"] == [[880, 20], [19, 80]]
    y = np.array([0.0, 2.0, -3.0])
    assert winkler(np.full(3, -1.0), np.full(3, 1.0), y, 0.9) == pytest.approx((2 + 0 + 2 + 20 + 2 + 40) / 3)


def test_report_says_when_intervals_are_not_calibrated():
    rng = np.random.default_rng(6)
    d = np.repeat(np.arange(400), 5)
    sid = np.tile(np.arange(5), 400)
    y = rng.normal(size=(2000, 2))
    good = {0.9: (np.full_like(y, -1.6449), np.full_like(y, 1.6449))}
    bad = {0.9: (np.full_like(y, -1.0), np.full_like(y, 1.0))}
    r = interval_report(good, y, d, sid, "split")
    assert r["calibrated"] and "calibrated" in r["sentence"] and "NOT" not in r["sentence"]
    assert r["levels"]["0.9"]["coverage_per_step"][0] == pytest.approx(0.9, abs=0.03)
    r = interval_report(bad, y, d, sid, "split")
    assert not r["calibrated"] and "NOT calibrated" in r["sentence"] and "Kupiec" in r["sentence"]


def test_rolling_coverage_range_counts_only_whole_windows_of_dates():
    """The "20-date coverage range" of eval.json and the report: a coverage over the first one or
    two dates is not a 20-date coverage (its 0 or 1 would set the range's ends)."""
    D, S = 60, 4
    d = np.repeat(np.arange(D) * 10 + 3, S)
    inside = np.ones(D * S, dtype=bool)
    inside[:S] = False  # the first date misses everywhere; every later one covers
    days, cov = rolling_coverage(inside, d)
    assert len(days) == D - ROLLING_DATES + 1 and days[0] == d[(ROLLING_DATES - 1) * S]
    want = [np.mean(inside[(d >= d[i * S]) & (d <= d[(i + ROLLING_DATES - 1) * S])]) for i in range(D - ROLLING_DATES + 1)]
    np.testing.assert_allclose(cov, want)
    y = np.zeros((D * S, 1))
    lo, hi = np.where(inside, -1.0, 1.0)[:, None], np.ones((D * S, 1))
    r = interval_report({0.9: (lo, hi)}, y, d, np.tile(np.arange(S), D), "split")["levels"]["0.9"]["rolling_coverage"]
    assert r["min"] == pytest.approx(1 - 1 / ROLLING_DATES) and r["max"] == 1.0  # not 0.0: one date is no window
    short = rolling_coverage(inside[: 5 * S], d[: 5 * S])
    assert short[0].size == 0 and short[1].size == 0


def test_intervals_scored_on_their_own_calibration_windows_claim_no_calibration():
    """Split conformal on the windows it was calibrated on covers by construction (here exactly 90%
    although the residuals' scale then doubles out of sample): such a score must not say
    "calibrated" (evaluate --split val / train / all of the run's own data)."""
    rng = np.random.default_rng(7)
    d, sid = np.repeat(np.arange(300), 4), np.tile(np.arange(4), 300)
    pred, y = np.zeros((1200, 1)), rng.normal(size=(1200, 1))
    cal = Calibration.fit(pred, y, [0.9])
    bounds = cal.bounds(pred)
    honest = interval_report(bounds, y, d, sid, "split")
    assert honest["levels"]["0.9"]["coverage_per_step"][0] == pytest.approx(0.9, abs=1e-3) and honest["calibrated"]
    r = interval_report(bounds, y, d, sid, "split", in_sample="the val split holds the calibration windows")
    assert r["calibrated"] is None and "in sample" in r["sentence"] and "calibrated (" not in r["sentence"]
    assert r["in_sample"] == "the val split holds the calibration windows"
    assert r["levels"]["0.9"]["coverage_per_step"] == honest["levels"]["0.9"]["coverage_per_step"]  # still reported


def test_kupiec_and_christoffersen_hold_their_level_on_a_correlated_panel():
    """20 symbols sharing half their variance (a market factor), intervals exactly calibrated for
    each: the misses of one date come together, and the pooled tests treated them as independent
    draws (Kupiec rejected 36% of such panels at 5%, Christoffersen 15%). Divided by the Rao–Scott
    design effect over dates they hold their level; one symbol keeps the classic tests."""
    rng = np.random.default_rng(0)
    D, S, z = 250, 20, stats.norm.ppf(0.95)
    d, sid = np.repeat(np.arange(D), S), np.tile(np.arange(S), D)
    band = (np.full((D * S, 1), -z), np.full((D * S, 1), z))
    kup = chr_ = 0
    for _ in range(150):
        y = (np.sqrt(0.5) * rng.normal(size=(D, 1)) + np.sqrt(0.5) * rng.normal(size=(D, S))).reshape(-1, 1)
        e = interval_report({0.9: band}, y, d, sid, "split")["levels"]["0.9"]
        kup += e["kupiec"]["p_value"] < 0.05
        chr_ += e["christoffersen"]["p_value"] < 0.05
    assert kup / 150 < 0.12 and chr_ / 150 < 0.12
    assert e["kupiec"]["design_effect"] > 1.5
    # every symbol of a date misses together: S copies of one symbol's evidence, not S × as much
    miss = np.repeat(rng.random(D) < 0.25, S)
    k = kupiec(int(miss.sum()), miss.size, 0.1, miss, d)
    assert k["design_effect"] == pytest.approx(S) and k["lr"] == pytest.approx(kupiec(int(miss.sum()), miss.size, 0.1)["lr"] / S)
    # one symbol (one observation per date): the classic statistics, unchanged
    one = rng.random(300) < 0.1
    assert kupiec(int(one.sum()), 300, 0.1, one, np.arange(300)) == {**kupiec(int(one.sum()), 300, 0.1), "design_effect": 1.0}
    runs = np.tile([0] * 45 + [1] * 5, 20).astype(bool)
    assert christoffersen([runs], [np.arange(runs.size)])["lr"] == pytest.approx(christoffersen([runs])["lr"])
