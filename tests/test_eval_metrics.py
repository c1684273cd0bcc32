"""Forecast metrics, the Diebold–Mariano test against hand computations, and the scoring of the
model beside the baselines through one prediction path."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from hftraining.core.config import load_config
from hftraining.core.jsonio import dumps
from hftraining.data.pipeline import prepare
from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, collect_forecasts, evaluate_predictions, format_table, score, verdict


def test_mse_ratio_is_one_function_for_eval_json_and_the_report():
    # below 1: the first forecast is the better one; an exact baseline (the zero forecast of a universe whose
    # returns are all 0) makes any error infinitely worse, and 0 / 0 or a NaN has no ratio (tables show "—")
    assert M.mse_ratio(0.5, 2.0) == pytest.approx(0.25) and M.mse_ratio(3.0, 2.0) > 1
    assert M.mse_ratio(1e-8, 0.0) == math.inf
    assert all(math.isnan(M.mse_ratio(a, b)) for a, b in ((0.0, 0.0), (float("nan"), 1.0), (1.0, float("nan"))))


def test_dm_matches_hand_computation():
    # d = loss_a - loss_b = [1, 2, 3, 4]; mean 2.5; deviations e = [-1.5, -.5, .5, 1.5]
    # gamma0 = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; gamma1 = (0.75 - 0.25 + 0.75) / 4 = 0.3125
    # lag 1 (H = 2): rectangular 1.25 + 2 * 0.3125 = 1.875 > Bartlett 1.25 + 2 * 0.5 * 0.3125 = 1.5625
    # Harvey–Leybourne–Newbold: × sqrt((T + 1 - 2H + H(H - 1)/T) / T) = sqrt((4 + 1 - 4 + 0.5) / 4) = sqrt(0.375)
    out = M.diebold_mariano(np.array([2.0, 3, 4, 5]), np.ones(4), lag=1)
    stat = 2.5 / math.sqrt(1.875 / 4) * math.sqrt(0.375)
    assert out["statistic"] == pytest.approx(stat, rel=1e-12) and out["kernel"].startswith("rectangular")
    assert out["statistic"] == pytest.approx(2.236068, rel=1e-6)
    assert out["p_t"] == pytest.approx(2 * stats.t.sf(stat, df=3), rel=1e-10)
    # 4 dates 2 apart are 2 independent signs: p no smaller than the sign test's 2^(1 − 2)
    assert out["p_value"] == max(out["p_t"], 0.5) == 0.5
    # d = [2, 0, 1, 3]: gamma1 = -0.1875 < 0, rectangular 0.875 < Bartlett 1.0625, which is used
    out = M.diebold_mariano(np.array([3.0, 1, 2, 4]), np.ones(4), lag=1)
    assert out["kernel"].startswith("bartlett")
    assert out["statistic"] == pytest.approx(1.5 / math.sqrt(1.0625 / 4) * math.sqrt(0.375), rel=1e-12)
    # lag 0: the plain variance of the mean, HLN factor sqrt((T - 1)/T)
    assert M.diebold_mariano(np.array([3.0, 1, 2, 4]), np.ones(4), lag=0)["statistic"] == pytest.approx(
        1.5 / math.sqrt(1.25 / 4) * math.sqrt(3 / 4))


def test_dm_takes_bartlett_when_negative_autocovariances_shrink_the_rectangular_variance():
    # d alternates: gamma1 ≈ -gamma0, so gamma0 + 2 gamma1 < 0 (the rectangular sum would make any
    # difference "significant"); Bartlett's weight 1/2 keeps it >= 0 and is the larger: it is used
    d = np.array([1.0, -1, 1, -1, 1, -1, 1, -1, 1.2])
    out = M.diebold_mariano(d, np.zeros_like(d), lag=1)
    assert out["kernel"] == "bartlett"
    T, H = d.size, 2
    want = d.mean() / math.sqrt(M.newey_west_variance(d, 1) / T) * math.sqrt((T + 1 - 2 * H + H * (H - 1) / T) / T)
    assert out["statistic"] == pytest.approx(want, rel=1e-12)


def test_dm_test_rejects_a_true_null_at_its_level():
    # Two forecasts with equal expected loss (+c and -c around zero-mean returns), 5-step windows
    # whose losses overlap by 4 returns: the test must reject at about 5%, not the ~10% that
    # Bartlett weights alone at lag H - 1 gave (they under-weight the MA(4) autocovariances).
    rng = np.random.default_rng(0)
    H, T, reps = 5, 1000, 2000
    rejected = 0
    for _ in range(reps):
        r = rng.standard_normal(T + H)
        y = np.stack([r[1 + h: 1 + h + T] for h in range(H)], axis=1)  # (T, H): steps 1..H after each origin
        rejected += M.dm_test(np.full_like(y, 0.3), np.full_like(y, -0.3), y, np.arange(T))["p_value"] < 0.05
    assert 0.035 < rejected / reps < 0.07, rejected / reps


def test_dm_test_averages_symbols_per_date_first():
    rng = np.random.default_rng(0)
    dates = np.repeat(np.arange(50), 3)  # 3 symbols per date
    true = rng.normal(size=(150, 2))
    a, b = true + rng.normal(0, 0.5, size=true.shape), np.zeros_like(true)
    got = M.dm_test(a, b, true, dates)
    la = ((a - true) ** 2).mean(axis=1).reshape(50, 3).mean(axis=1)
    lb = ((b - true) ** 2).mean(axis=1).reshape(50, 3).mean(axis=1)
    want = M.diebold_mariano(la, lb, lag=1)
    assert got["n"] == 50 and got["lag"] == 1
    assert got["statistic"] == pytest.approx(want["statistic"])
    assert got["statistic"] < 0  # a, with error variance 0.25, beats b, with 1


def test_spearman_and_cross_sectional_ic():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(size=40)
    assert M.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(M.spearman(np.zeros(5), b[:5]))
    # date 0: perfectly ranked (+1), date 1: reversed (-1), date 2: only 2 symbols (left out)
    pred = np.array([1, 2, 3, 1, 2, 3, 1, 2.0])
    true = np.array([10, 20, 30, 30, 20, 10, 5, 6.0])
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    ic, n = M.cross_sectional_ic(pred, true, groups)
    assert n == 2 and ic == pytest.approx(0.0)
    ic, n = M.cross_sectional_ic(pred[:3], true[:3] ** 2, groups[:3])  # monotone transform: still 1
    assert n == 1 and ic == pytest.approx(1.0)


def test_pinball_and_coverage_by_hand():
    true = np.array([[0.0], [1.0]])  # (W=2, H=1)
    q = np.array([[[-1.0, 0.5]], [[-1.0, 0.5]]])  # levels 0.1, 0.9
    # level 0.1: diffs 1, 2 → 0.1, 0.2 → mean 0.15; level 0.9: diffs -0.5, 0.5 → 0.05, 0.45 → 0.25
    assert M.pinball_loss(q, true, [0.1, 0.9]) == pytest.approx([0.15, 0.25])
    cov = M.coverage(q, true, [0.1, 0.9])
    assert cov["below_q0.1"] == 0.0 and cov["below_q0.9"] == 0.5 and cov["interval_80%"] == 0.5


def test_directional_accuracy_counts_zero_forecast_as_coin_flip():
    true = np.array([1.0, -1.0, 2.0, 0.0])
    assert M.directional_accuracy(np.array([1.0, 1.0, 1.0, 1.0]), true) == pytest.approx(2 / 3)
    assert M.directional_accuracy(np.zeros(4), true) == 0.5


@pytest.fixture(scope="module")
def prepared():
    cfg = load_config(None, ["data.symbols=[AEM, WPM, NIO]", "data.sequence_length=20", "data.prediction_horizon=3"])
    return prepare(cfg.data)


def test_baselines_go_through_the_model_path(prepared):
    ws, s = prepared.test, prepared.preprocessing.target_scale
    fc = collect_forecasts(None, ws, s, 256, pred_scaled=np.zeros((len(ws), 3), np.float32))
    assert set(fc.pred) == {"model", "zero", "repeat", "drift", "seasonal_naive"}
    past = ws.scaled_labels(ws.ends[:, None] + np.arange(-19, 1)).astype(np.float64) * s  # (W, L)
    np.testing.assert_allclose(fc.pred["repeat"], np.repeat(past[:, -1:], 3, axis=1), rtol=1e-6)
    np.testing.assert_allclose(fc.pred["drift"], np.repeat(past.mean(axis=1, keepdims=True), 3, axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(fc.pred["seasonal_naive"][:, 0], past[:, -5], rtol=1e-6)  # one season (5 rows) back
    np.testing.assert_allclose(fc.true, ws.targets() * s, rtol=1e-6)
    np.testing.assert_allclose(fc.last_return, past[:, -1])


def test_score_layout_and_honest_verdict(prepared):
    ws, s = prepared.test, prepared.preprocessing.target_scale
    zero = evaluate_predictions(np.zeros((len(ws), 3), np.float32), ws, s, 256)
    assert zero["mse_vs_zero"] == pytest.approx(1.0)
    assert zero["dm_vs_zero"]["statistic"] == 0.0 and "no significant difference" in zero["verdict"]
    assert len(zero["per_step"]["model"]) == 3 and set(zero["per_symbol"]["model"]) == {"AEM", "WPM", "NIO"}
    # a planted oracle (the realised targets plus noise) beats zero significantly and ranks well
    rng = np.random.default_rng(0)
    oracle = ws.targets() + rng.normal(0, 0.3, size=(len(ws), 3)).astype(np.float32)
    r = evaluate_predictions(oracle, ws, s, 256)
    assert r["mse_vs_zero"] < 0.3 and r["dm_vs_zero"]["p_value"] < 1e-6 and "beats" in r["verdict"]
    assert r["model"]["ic"] > 0.5 and r["model"]["directional_accuracy"] > 0.8
    assert r["per_step"]["model"][0]["mse"] == pytest.approx(np.mean((oracle[:, 0] - ws.targets()[:, 0]) ** 2) * s * s, rel=1e-5)
    # the pooled MSE is the mean of the per-symbol MSEs weighted by their windows
    ps = r["per_symbol"]["model"]
    assert sum(v["mse"] * v["n_windows"] for v in ps.values()) / len(ws) == pytest.approx(r["model"]["mse"], rel=1e-9)
    assert "model MSE / zero-forecast MSE" in format_table(r)


def test_verdict_needs_significance():
    small_gain = {"mse_vs_zero": 0.9995, "dm_vs_zero": {"p_value": 0.4, "statistic": -0.8}}
    assert "no significant difference" in verdict(small_gain) and "beats" not in verdict(small_gain)
    assert "WORSE" in verdict({"mse_vs_zero": 1.2, "dm_vs_zero": {"p_value": 0.001, "statistic": 3.5}})
    assert "beats" in verdict({"mse_vs_zero": 0.8, "dm_vs_zero": {"p_value": 0.001, "statistic": -3.5}})


def test_verdict_claims_nothing_when_mse_and_dm_point_opposite_ways():
    # On a panel whose dates hold different numbers of symbols, the pooled MSE (per window) can be
    # lower while the per-date DM statistic says significantly worse: neither "beats" nor "WORSE".
    split = {"mse_vs_zero": 0.8247, "dm_vs_zero": {"p_value": 7.5e-5, "statistic": 3.96},
             "strongest_baseline": {"name": "ridge", "mse": 1.0, "mse_ratio": 0.8247, "dm": {"p_value": 7.5e-5, "statistic": 3.96}}}
    text = verdict(split)
    assert "beats" not in text and "WORSE" not in text and "significantly better" not in text
    assert text.count("opposite directions") == 2 and text.endswith("not worth its cost over fitted:ridge")


def test_a_significant_p_value_is_never_printed_as_the_level():
    """p = 0.04996 is significant at 0.05: the verdict and the console table show 0.04996 beside the claim,
    not a rounded "0.05" (or "0.050"), and a tiny p is not printed as 0."""
    worse = {"mse_vs_zero": 1.2, "dm_vs_zero": {"p_value": 0.04996, "statistic": 3.5},
             "strongest_baseline": {"name": "ridge", "mse": 1.0, "mse_ratio": 1.1,
                                    "dm": {"p_value": 0.049951, "statistic": 2.0}}}
    text = verdict(worse)
    assert "Diebold–Mariano p = 0.04996: the model is significantly WORSE" in text, text
    assert "DM p = 0.04995: fitted:ridge is significantly better" in text, text
    assert "= 0.05:" not in text
    result = {"n_windows": 1, "horizon": 1, "model": {"mse": 1.0, "mae": 1.0, "directional_accuracy": 0.5},
              "baselines": {"zero": {"mse": 1.0, "mae": 1.0, "directional_accuracy": 0.5},
                            "ridge": {"mse": 1.0, "mae": 1.0, "directional_accuracy": 0.5}},
              "dm": {"zero": {"statistic": 3.5, "p_value": 0.04996}, "ridge": {"statistic": 9.0, "p_value": 3.65e-14}},
              "verdict": text}
    table = format_table(result)
    assert " 0.04996" in table and "3.65e-14" in table and "0.050" not in table and " 0.000" not in table, table


def test_quantile_head_metrics(prepared):
    ws, s = prepared.test, prepared.preprocessing.target_scale
    y = ws.targets().astype(np.float64)
    q = np.stack([y - 1.0, y + 1.0], axis=-1)  # an interval that always covers
    r = evaluate_predictions(np.zeros_like(y, dtype=np.float32), ws, s, 256, quantiles_scaled=q, levels=[0.1, 0.9])
    assert r["model"]["coverage"]["interval_80%"] == 1.0
    assert r["model"]["pinball"]["q0.1"] == pytest.approx(0.1 * s, rel=1e-5)  # diff +1 (scaled) × 0.1
    assert r["model"]["pinball"]["q0.9"] == pytest.approx(0.1 * s, rel=1e-5)


# --------------------------------------------------------------------------------------------
# cross-sectional IC per date (Qlib's IC / ICIR / Rank IC)


def _panel(rng, n_dates=12, n_symbols=6):
    """A panel with known structure: date k has IC sign (−1)^k by construction (true = ±pred + noise),
    rows shuffled so a date's windows are not contiguous; plus a date with 2 symbols (too few), one
    with a constant forecast and one with a constant realisation (all three undefined: left out),
    and ties in the forecast (average ranks)."""
    d = np.repeat(np.arange(n_dates), n_symbols)
    pred = rng.normal(size=d.size)
    pred[1] = pred[2] = pred[0]  # a three-way tie on date 0
    sign = np.where(d % 2 == 0, 1.0, -1.0)
    true = sign * pred + rng.normal(0, 0.5, size=d.size)
    true[n_symbols + 1] = true[n_symbols]  # a tie in the realisations on date 1
    d = np.r_[d, [100, 100], [200] * 4, [300] * 4]
    pred = np.r_[pred, [0.1, 0.2], [0.3] * 4, [0.1, 0.2, 0.3, 0.4]]
    true = np.r_[true, [1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [0.5] * 4]
    perm = rng.permutation(d.size)
    return pred[perm], true[perm], d[perm] * 1000 + 7  # dates as arbitrary increasing integers


def test_ic_series_equals_corrcoef_and_spearmanr_per_date():
    rng = np.random.default_rng(3)
    pred, true, dates = _panel(rng)
    want_dates = np.arange(12) * 1000 + 7  # the three undefined dates are left out
    for rank, corr in ((False, lambda a, b: np.corrcoef(a, b)[0, 1]), (True, lambda a, b: stats.spearmanr(a, b).statistic)):
        got_dates, ic = M.cross_sectional_ic_series(pred, true, dates, rank=rank)
        np.testing.assert_array_equal(got_dates, want_dates)
        want = [corr(pred[dates == k], true[dates == k]) for k in want_dates]
        np.testing.assert_allclose(ic, want, rtol=0, atol=1e-12)
        assert (np.sign(ic) == np.where(np.arange(12) % 2 == 0, 1, -1)).all()  # the planted signs
    assert len(np.unique(pred[dates == 7])) == 4 and len(np.unique(true[dates == 1007])) == 5  # the ties are there
    # min_size: with 7 symbols needed every date is left out
    assert M.cross_sectional_ic_series(pred, true, dates, min_size=7)[1].size == 0
    # the mean IC of cross_sectional_ic is the mean of the rank series
    ic, n = M.cross_sectional_ic(pred, true, dates)
    assert n == 12 and ic == pytest.approx(np.mean([stats.spearmanr(pred[dates == k], true[dates == k]).statistic
                                                    for k in want_dates]))


def test_ic_of_a_near_oracle_is_near_one_and_of_a_shuffled_forecast_near_zero():
    rng = np.random.default_rng(4)
    n_dates, n_symbols = 300, 10
    dates = np.repeat(np.arange(n_dates), n_symbols)
    true = rng.normal(0, 0.01, size=dates.size)
    near = true + rng.normal(0, 0.001, size=dates.size)  # noise a tenth of the signal
    shuffled = rng.permutation(near)
    for rank in (False, True):
        good = M.ic_summary(M.cross_sectional_ic_series(near, true, dates, rank=rank)[1], lag=0)
        assert good["n_dates"] == n_dates and good["mean"] > 0.95 and good["positive_share"] == 1.0
        assert good["t_stat"] > 50
        bad = M.ic_summary(M.cross_sectional_ic_series(shuffled, true, dates, rank=rank)[1], lag=0)
        # se of the mean of 300 ICs of 10 independent pairs ≈ (1/3)/√300 ≈ 0.02
        assert abs(bad["mean"]) < 0.08 and 0.35 < bad["positive_share"] < 0.65 and abs(bad["t_stat"]) < 4


def test_ic_summary_t_stat_is_the_newey_west_t():
    rng = np.random.default_rng(5)
    x = rng.normal(0.05, 0.2, size=40)
    s = M.ic_summary(x, lag=0)
    # lag 0: the LRV (divisor T) times T / (T − 1) is the sample variance, so t = mean / (std / √T), the
    # one-sample t; the reported std (and ICIR) is the sample std (ddof 1), as pandas / Qlib report it
    assert s["t_stat"] == pytest.approx(x.mean() / (x.std(ddof=1) / math.sqrt(40)), rel=1e-12)
    assert s["std"] == pytest.approx(x.std(ddof=1)) and s["icir"] == pytest.approx(x.mean() / x.std(ddof=1))
    assert s["positive_share"] == pytest.approx(np.mean(x > 0)) and s["n_dates"] == 40
    # lag 1 by hand (the DM example): x = [3, 1, 2, 4], mean 2.5, LRV = 1.25 + 2 · ½ · (−0.1875) = 1.0625
    assert M.ic_summary(np.array([3.0, 1, 2, 4]), lag=1)["t_stat"] == pytest.approx(2.5 / math.sqrt(1.0625 / 3))
    empty = M.ic_summary(np.array([]), lag=0)
    assert empty["n_dates"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "std", "icir", "t_stat", "positive_share"))


def _forecasts(n_symbols, n_dates=40, H=2, seed=0):
    rng = np.random.default_rng(seed)
    W = n_symbols * n_dates
    true = rng.normal(0, 0.01, size=(W, H))
    pred = {"model": true + rng.normal(0, 0.01, size=(W, H)), "zero": np.zeros((W, H)),
            "drift": rng.normal(0, 0.01, size=(W, H))}
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(n_dates, dtype=np.int64) * 86_400 * 10**9, n_symbols),
                     symbol_ids=np.tile(np.arange(n_symbols), n_dates), symbols=[f"S{i}" for i in range(n_symbols)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def test_score_of_one_symbol_has_an_empty_cross_section_as_null():
    r = score(_forecasts(1))
    for m in [r["model"], *r["baselines"].values()]:
        for key in ("ic", "rank_ic"):
            s = m["cross_section"][key]
            assert s["n_dates"] == 0 and math.isnan(s["mean"]) and math.isnan(s["t_stat"])
    saved = json.loads(dumps(r))
    assert saved["model"]["cross_section"]["rank_ic"]["mean"] is None and saved["model"]["cross_section"]["ic"]["n_dates"] == 0
    assert "no date has 3 symbols" in format_table(r)


def test_score_cross_section_is_step_one_per_date():
    fc = _forecasts(5, seed=1)
    r = score(fc)
    p, t = fc.pred["model"][:, 0], fc.true[:, 0]
    by_date = [fc.dates == d for d in np.unique(fc.dates)]
    ic = np.array([np.corrcoef(p[m], t[m])[0, 1] for m in by_date])
    ric = np.array([stats.spearmanr(p[m], t[m]).statistic for m in by_date])
    cs = r["model"]["cross_section"]
    assert cs["ic"]["n_dates"] == 40 and cs["ic"]["lag"] == 0
    assert cs["ic"]["mean"] == pytest.approx(ic.mean()) and cs["rank_ic"]["mean"] == pytest.approx(ric.mean())
    assert cs["rank_ic"]["icir"] == pytest.approx(ric.mean() / ric.std(ddof=1))
    assert r["baselines"]["zero"]["cross_section"]["ic"]["n_dates"] == 0  # a constant forecast has no ranking
    table = format_table(r)
    assert "cross-section (step 1" in table and "naive:drift" in table.split("cross-section", 1)[1]
    assert table.splitlines()[-1] == r["verdict"]


def test_a_model_constant_across_symbols_is_told_it_ranks_nothing_not_that_dates_lack_symbols():
    """Five symbols on every date and a collapsed model (one forecast for every symbol): its rank IC
    is undefined, but the dates do have a cross-section, and the baseline that ranks is named."""
    fc = _forecasts(5, seed=2)
    fc.pred["model"] = np.full_like(fc.true, 1e-4)
    fc.target = "cs_rank"
    r = score(fc)
    assert "no date has 3 symbols" not in r["verdict"] and "no date has 3 symbols" not in format_table(r)
    assert r["cross_section_dates"] == 40 and r["model"]["cross_section"]["rank_ic"]["n_dates"] == 0
    assert "ranks nothing" in r["verdict"] and "not worth its cost over naive:drift" in r["verdict"]
    assert r["cross_section_strongest"]["name"] == "drift"
    # one symbol still says why there is no cross-section at all
    one = _forecasts(1)
    one.target = "cs_rank"
    assert score(one)["verdict"].startswith("cross-section: no date has 3 symbols")


def test_validation_ic_is_nan_when_the_model_emits_nan_on_some_dates():
    """The trainer's neg_ic / neg_rank_ic (the validation loss of an IC-trained model, and what early
    stopping reads) must not score a model on the dates where it happens to be finite."""
    rng = np.random.default_rng(0)
    dates = np.repeat(np.arange(50), 5)
    true = rng.normal(size=(250, 2))
    pred = true + rng.normal(size=(250, 2))
    assert M.mean_cross_sectional_ic(pred, true, dates) > 0.3
    pred[: 5 * 40] = np.nan  # NaN on 40 of the 50 dates
    for rank in (False, True):
        assert math.isnan(M.mean_cross_sectional_ic(pred, true, dates, rank=rank))
    assert math.isnan(M.point_metrics(pred, true, dates)["ic"])  # as the test-split IC says


def test_cross_section_verdict_p_values_use_student_t_over_the_dates():
    """Over a short test split the rank IC's t must be read against Student's t (n_dates − 1), as the
    DM test is: the normal claims "significantly positive" for a pure-noise forecast too often."""
    fc = _forecasts(6, n_dates=15, seed=11)
    fc.target = "cs_rank"
    r = score(fc)
    cs, diff = r["model"]["cross_section"]["rank_ic"], r["cross_section_strongest"]["difference"]
    assert diff["p_value"] == pytest.approx(2 * stats.t.sf(abs(diff["t_stat"]), df=diff["n_dates"] - 1))
    assert f"(p = {2 * stats.t.sf(abs(cs['t_stat']), df=14):.3g})" in r["verdict"] or "significantly" in r["verdict"]
    # size under the null: 15 dates of 10 symbols, forecast independent of the outcome
    from hftraining.eval.forecasts import _ic_p_value
    rng = np.random.default_rng(0)
    d = np.repeat(np.arange(15), 10)
    rejected = np.mean([_ic_p_value(M.ic_summary(M.cross_sectional_ic_series(
        rng.normal(size=150), rng.normal(size=150), d, rank=True)[1], 0)) < 0.05 for _ in range(1500)])
    assert rejected < 0.075  # the normal reference rejected 8% of the time here


def test_verdict_when_the_zero_forecast_is_exact_still_reports_the_dm_test():
    """Realised returns all 0 (a pegged or halted universe): the zero forecast has MSE 0, the DM test
    is well defined (the model is significantly worse) and the verdict must say so, naming the
    strongest baseline, instead of "the DM test could not be computed"."""
    fc = _forecasts(3, n_dates=30, seed=3)
    fc.true = np.zeros_like(fc.true)
    fc.pred["model"] = np.random.default_rng(0).normal(0, 1e-4, size=fc.true.shape)
    r = score(fc)
    # Student's t reads p < 1e-6; 30 dates 2 apart can say no more than the sign test's 2^(1 − 15)
    assert r["dm_vs_zero"]["p_t"] < 1e-6 and r["dm_vs_zero"]["p_value"] == 2.0 ** -14
    assert "could not be computed" not in r["verdict"] and "significantly WORSE" in r["verdict"]
    assert "naive:zero is significantly better, so the model is not worth its cost" in r["verdict"]
    assert r["mse_vs_zero"] == math.inf and json.loads(dumps(r))["mse_vs_zero"] is None


def test_cross_section_verdict_of_a_forecast_with_nan_says_it_could_not_be_computed():
    """A NaN forecast on one window makes the rank IC NaN: the verdict must not read that as "not
    significantly different from 0"."""
    fc = _forecasts(5, seed=4)
    fc.target = "cs_rank"
    fc.pred["model"][:3, 0] = np.nan
    r = score(fc)
    assert "not significantly different" not in r["verdict"] and "could not be computed" in r["verdict"]
