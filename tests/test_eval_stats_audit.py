"""The statistics behind the verdict, on cases whose right answer follows from theory or a hand count."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from hftraining.eval import metrics as M
from hftraining.eval.intervals import christoffersen, interval_report


def _table(s: np.ndarray) -> np.ndarray:
    """The 2×2 transition table of one miss sequence: rows the previous element, columns the next."""
    t = np.zeros((2, 2))
    np.add.at(t, (s[:-1].astype(int), s[1:].astype(int)), 1)
    return t


def test_christoffersen_of_one_sequence_is_the_chi_square_of_its_transition_table():
    """One symbol: the independence statistic of its 2×2 table of (previous, current) miss,
    n (n00 n11 − n01 n10)² / (n0· n1· n·0 n·1), read against χ²(1)."""
    rng = np.random.default_rng(3)
    s = rng.random(400) < 0.12
    t = _table(s)
    n, r, c = t.sum(), t.sum(axis=1), t.sum(axis=0)
    chi2 = n * (t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0]) ** 2 / (r[0] * r[1] * c[0] * c[1])
    got = christoffersen([s])
    assert math.isclose(got["lr"], chi2, rel_tol=1e-12)
    assert math.isclose(got["p_value"], stats.chi2.sf(chi2, 1), rel_tol=1e-12)
    assert got["transitions"] == t.astype(int).tolist()


def test_christoffersen_does_not_take_symbols_with_different_miss_rates_for_clustering():
    """Each symbol's misses below are exactly unrelated to its previous miss (n00·n11 = n01·n10 in its
    own table), at rate 1/2 for one symbol and 1/4 for the other: there is no clustering in time, so
    the statistic is 0. Pooled into one table, the two rates made a miss predict a miss (a miss
    more likely comes from the symbol that misses more), and the test rejected independence."""
    a = np.r_[np.tile([0, 0, 1, 1], 400), 0].astype(bool)
    b = np.r_[np.tile([0, 0, 0, 0, 1] * 2 + [0, 0, 0, 0, 1, 1], 100), 0].astype(bool)
    for s in (a, b):
        t = _table(s)
        assert t[0, 0] * t[1, 1] == t[0, 1] * t[1, 0] and t[1].sum() > 0  # no association, misses present
    assert _table(a)[1].sum() / _table(a).sum() != _table(b)[1].sum() / _table(b).sum()  # different rates
    got = christoffersen([a, b], [np.arange(a.size), np.arange(b.size)])
    assert abs(got["lr"]) < 1e-9 and got["p_value"] > 0.99


def test_christoffersen_holds_its_level_when_symbols_differ_in_coverage_and_still_sees_clusters():
    """Pooled split-conformal intervals cover a calm symbol more often than a volatile one. With
    misses independent in time for every symbol (rates 2% to 25%), a test at 5% must reject about
    5% of panels (pooled over symbols it rejected nearly all of them); misses that do come in runs
    (a miss makes the next one 4× as likely) must still be found."""
    rng = np.random.default_rng(11)
    D, S = 250, 20
    rates = np.linspace(0.02, 0.25, S)
    dates, sym = np.repeat(np.arange(D), S), np.tile(np.arange(S), D)
    band = (np.full((D * S, 1), -1.0), np.full((D * S, 1), 1.0))

    def p_value(miss: np.ndarray) -> float:
        y = np.where(miss, 2.0, 0.0).reshape(-1, 1)  # outside the band exactly where it misses
        return interval_report({0.9: band}, y, dates, sym, "split")["levels"]["0.9"]["christoffersen"]["p_value"]

    rejected, R = 0, 100
    for _ in range(R):
        rejected += p_value(rng.random((D, S)) < rates) < 0.05  # independent over dates, a rate per symbol
    assert rejected / R < 0.12, rejected / R
    # runs of misses: P(miss | miss before) = 4 × P(miss | hit before), each symbol at its own rate
    found = 0
    for _ in range(20):
        miss = np.zeros((D, S), dtype=bool)
        for d in range(1, D):
            miss[d] = rng.random(S) < np.where(miss[d - 1], np.minimum(4 * rates, 0.9), rates)
        found += p_value(miss) < 0.05
    assert found >= 18


def test_a_nan_forecast_has_no_directional_accuracy():
    """A NaN forecast has no sign. Counted as a wrong one, a model that emitted NaN on every window
    scored an accuracy of 0 (perfectly wrong) and one that emitted NaN on some windows scored below
    its finite forecasts, while its MSE and IC said NaN; per symbol only the symbol with the NaN is
    affected."""
    true = np.array([[0.01], [-0.02], [0.03], [-0.01]])
    right = np.sign(true) * 0.5  # every sign right
    assert M.directional_accuracy(right, true) == 1.0
    some = right.copy()
    some[1, 0] = np.nan
    assert math.isnan(M.mse(some, true))
    assert math.isnan(M.directional_accuracy(some, true))
    assert math.isnan(M.directional_accuracy(np.full_like(true, np.nan), true))
    # per symbol (segments of the flat arrays): the first two rows are one symbol, the last two another
    seg = M.segment_point_metrics(some.ravel(), true.ravel(), np.array([0, 2]), np.array([2, 2]))
    assert math.isnan(seg["directional_accuracy"][0]) and seg["directional_accuracy"][1] == 1.0


def test_the_intervals_of_a_nan_forecast_are_not_called_unbounded():
    """A NaN forecast gives a NaN interval. It was counted as unbounded and the sentence blamed too
    few calibration windows, which had nothing to do with it; an infinite radius stays unbounded."""
    D, S = 40, 5
    dates, sym = np.repeat(np.arange(D), S), np.tile(np.arange(S), D)
    y = np.tile(np.array([-0.5, 0.5, 0.0, 2.0, -2.0]), D).reshape(-1, 1)
    pred = np.zeros_like(y)
    pred[:S] = np.nan  # the first date's forecasts
    e = interval_report({0.9: (pred - 1.0, pred + 1.0)}, y, dates, sym, "split")
    lv = e["levels"]["0.9"]
    assert lv["unbounded"] == 0.0 and "unbounded" not in e["sentence"] and "fewer than" not in e["sentence"]
    assert math.isnan(lv["mean_width_per_step"][0]) and "NaN" in e["sentence"]
    inf = interval_report({0.9: (pred - np.inf, pred + np.inf)}, y, dates, sym, "split")["levels"]["0.9"]
    assert inf["unbounded"] == 1 - S / (D * S) and inf["mean_width_per_step"][0] == math.inf


def test_quantile_coverage_of_a_nan_quantile_is_nan():
    """A NaN quantile compares false with every realisation: it counted as a realisation above the
    quantile and outside the interval, a coverage share with no meaning, while the pinball loss of
    the same forecast is NaN."""
    levels = [0.1, 0.5, 0.9]
    true = np.array([[0.0], [1.0], [-1.0], [0.5]])
    q = np.broadcast_to(np.array([-2.0, 0.0, 2.0]), (4, 1, 3)).copy()
    ok = M.coverage(q, true, levels)
    assert ok["interval_80%"] == 1.0 and ok["below_q0.5"] == 0.5  # by hand: all inside; 0.0 and -1.0 at or below 0
    q[2, 0, :] = np.nan
    assert math.isnan(M.pinball_loss(q, true, levels)[0])
    got = M.coverage(q, true, levels)
    assert set(got) == set(ok) and all(math.isnan(v) for v in got.values())
