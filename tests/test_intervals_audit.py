"""ACI's radius is the split-conformal radius at its current level: at the nominal level (and so
throughout at γ = 0) its intervals are split's, unbounded when the calibration windows are too few
for the level, and they cover at their level on exchangeable data. An unbounded interval is named
as such in the verdict, with its cause, not left to read as a failed coverage test."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from hftraining.eval.intervals import interval_report
from hftraining.models.intervals import Calibration, aci_bounds


def test_aci_at_gamma_zero_gives_the_split_intervals():
    rng = np.random.default_rng(0)
    n, H, levels = 101, 3, [0.8, 0.9]  # (k - 1)/(n - 1) falls on the saved grid: exact
    pred, true = rng.normal(size=(n, H)), rng.standard_t(4, size=(n, H)) * [1.0, 2.0, 0.5]
    split = Calibration.fit(pred, true, levels)
    aci = Calibration.fit(pred, true, levels, method="aci", gamma=0.0)
    d = np.repeat(np.arange(50), 4)
    p, y = rng.normal(size=(200, H)), rng.standard_t(4, size=(200, H))
    b, alpha = aci_bounds(aci, p, y, d, d[:, None] + np.arange(1, H + 1))
    for level in levels:
        np.testing.assert_allclose(b[level][0], split.bounds(p)[level][0], rtol=1e-12)
        np.testing.assert_allclose(b[level][1], split.bounds(p)[level][1], rtol=1e-12)
    np.testing.assert_allclose(alpha, 1 - np.asarray(levels)[:, None] + np.zeros((1, H)))
    # too few windows for the level: unbounded, as split conformal says, never a finite interval
    tiny = Calibration.fit(np.zeros((5, 1)), rng.normal(size=(5, 1)), [0.9], method="aci", gamma=0.01)
    assert tiny.radius[0, 0] == math.inf and float(tiny.radius_at(tiny.alpha[0, 0], 0)) == math.inf
    lo, hi = tiny.bounds(np.zeros((1, 1)))[0.9]
    assert lo[0, 0] == -math.inf and hi[0, 0] == math.inf
    # the ends of ACI's range: α ≤ 0 covers everything, α ≥ 1 nothing; the radius grows as α falls
    r = aci.radius_at(np.array([-0.1, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 1.2]), 0)
    assert r[0] == r[1] == math.inf and r[-1] == r[-2] == 0.0 and np.all(np.diff(r[2:]) <= 0)


def test_aci_first_intervals_cover_at_their_level_on_exchangeable_data():
    """2,000 independent calibrations of 19 windows (one per column) and a new draw each: the
    intervals ACI starts from cover the new draw at 0.9 as split's do (⌈20 · 0.9⌉ / 20 = 0.9); the
    plain score quantile at 0.9 covered about 0.86."""
    rng = np.random.default_rng(1)
    n, reps, level = 19, 2000, 0.9
    true = rng.normal(size=(n, reps))
    new = rng.normal(size=(1, reps))
    lo_hi = lambda cal: cal.bounds(np.zeros((1, reps)))[level]  # noqa: E731
    edges = stats.binom.ppf([0.0005, 0.9995], reps, level)
    for method in ("split", "aci"):
        lo, hi = lo_hi(Calibration.fit(np.zeros((n, reps)), true, [level], method=method, gamma=0.01))
        hits = int(((new >= lo) & (new <= hi)).sum())
        assert edges[0] <= hits <= edges[1], (method, hits / reps)


def test_the_verdict_says_when_too_few_calibration_windows_leave_a_level_unbounded():
    rng = np.random.default_rng(2)
    cal = Calibration.fit(np.zeros((6, 2)), rng.normal(size=(6, 2)), [0.8, 0.9])  # 0.9 needs 9 windows
    assert np.isfinite(cal.radius[0]).all() and np.isinf(cal.radius[1]).all()
    d = np.repeat(np.arange(100), 3)
    y = rng.normal(size=(300, 2))
    rep = interval_report(cal.bounds(np.zeros_like(y)), y, d, np.tile(np.arange(3), 100), "split")
    assert rep["levels"]["0.9"]["unbounded"] == 1.0 and rep["levels"]["0.8"]["unbounded"] == 0.0
    why = "(calibrated on fewer than the 9 windows a 90% interval needs, counting those with a finite forecast)"
    assert f"90% unbounded in 100% of the intervals {why}" in rep["sentence"]
    assert "80% unbounded" not in rep["sentence"]
    bounded = interval_report(cal.bounds(np.zeros_like(y)) | {0.9: (-np.ones_like(y), np.ones_like(y))}, y, d,
                              np.tile(np.arange(3), 100), "split")
    assert "unbounded" not in bounded["sentence"]


def test_a_cqr_folder_whose_band_shrinks_loads(tmp_path):
    """A quantile head wider than it needs on validation gets a negative CQR radius (Romano et al.: the
    band shrinks to its level); training writes it, so the model folder must load it as written."""
    from hftraining.core.jsonio import write_json
    from hftraining.models.folder import INTERVALS_FILE, read_calibration

    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 1))
    q = np.stack([np.full((500, 1), -2.5), np.full((500, 1), 2.5)], -1)  # a 0.1/0.9 pair covering ~99%
    cal = Calibration.fit(np.zeros((500, 1)), y, [0.8], method="cqr", quantiles=q, q_levels=[0.1, 0.9])
    assert cal.radius[0, 0] < 0
    write_json(tmp_path / INTERVALS_FILE, cal.to_dict())
    back = read_calibration(tmp_path, 1, [0.1, 0.9])
    assert back.radius[0, 0] == cal.radius[0, 0]
    lo, hi = back.bounds(np.zeros((4000, 1)), np.broadcast_to(q[:1], (4000, 1, 2)))[0.8]
    t = rng.normal(size=(4000, 1))
    assert abs(((t >= lo) & (t <= hi)).mean() - 0.8) < 0.03  # the shrunk band covers at its level


def test_aci_radius_is_splits_at_every_n_and_never_below_its_order_statistic():
    """The saved grid holds 1,001 quantiles, not every order statistic: at the nominal level ACI reads
    split's own radius (exact for any n, not only where n − 1 divides 1000), and at any other level a
    radius never below the ⌈(n + 1)(1 − α)⌉-th smallest score."""
    rng = np.random.default_rng(3)
    for n in (37, 101, 5000):
        pred, true = np.zeros((n, 1)), rng.standard_t(3, size=(n, 1))
        split = Calibration.fit(pred, true, [0.8, 0.9])
        aci = Calibration.fit(pred, true, [0.8, 0.9], method="aci", gamma=0.0)
        for k, level in enumerate([0.8, 0.9]):
            assert float(aci.radius_at(np.array(1 - level), 0)) == split.radius[k, 0]
        scores = np.sort(np.abs(true[:, 0]))
        alpha = np.linspace(0.001, 0.999, 997)
        rank = np.ceil((n + 1) * (1 - alpha) - 1e-12).astype(int)
        inside = (rank >= 1) & (rank <= n)
        assert np.all(aci.radius_at(alpha, 0)[inside] >= scores[rank[inside] - 1] * (1 - 1e-12))  # float rounding


def test_a_shrunk_cqr_band_that_would_cross_is_an_empty_point_not_a_negative_width():
    rng = np.random.default_rng(1)
    n = 2000
    wide = np.where(rng.random(n) < 0.95, 3.0, 0.05)[:, None]  # mostly too wide, a few narrow bands
    q = np.stack([-wide, wide], -1)
    cal = Calibration.fit(np.zeros((n, 1)), rng.normal(size=(n, 1)), [0.8], method="cqr", quantiles=q,
                          q_levels=[0.1, 0.9])
    assert cal.radius[0, 0] < -0.05
    lo, hi = cal.bounds(np.zeros((n, 1)), q)[0.8]
    assert np.all(lo <= hi)
    crossed = (wide[:, 0] < -cal.radius[0, 0])
    assert crossed.any() and np.all(lo[crossed, 0] == hi[crossed, 0])
