"""The step-1 cross-sectional IC against independent references (pandas groupby, scipy's per-date Spearman and
Pearson, Qlib's IC = mean of per-date Pearson, Rank IC = mean of per-date Spearman, ICIR = mean / std), and the
paired rank-IC test of the model against the strongest baseline: over the dates either ranks, a forecast that
is the same for every symbol of a date counting 0 there."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, cross_section, score
from hftraining.workflows.seeds import beats_strongest

DAY = 86_400 * 10**9


def _fc(pred, true, dates, ids, n_symbols):
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=ids, symbols=[f"S{i}" for i in range(n_symbols)],
                     last_return=np.zeros(len(true)), past_vol=np.full(len(true), 0.01),
                     last_close=np.full(len(true), 100.0), target="cs_rank")


def _ref_rank_ic(pred, true, dates) -> pd.Series:
    """date → scipy's Spearman of the date's cross-section, NaN where it ranks nothing (a constant side) or
    fewer than 3 symbols."""
    df = pd.DataFrame({"p": pred, "t": true, "d": dates})

    def one(g):
        if len(g) < 3 or g.p.nunique() == 1 or g.t.nunique() == 1:
            return np.nan
        return stats.spearmanr(g.p, g.t)[0]

    return df.groupby("d")[["p", "t"]].apply(one)


def _silent_panel(silent_side: str, D=120, N=8, seed=1):
    """A panel where one forecast ranks on a quarter of the dates (the same value for every symbol on the
    others) and ranks well there, and the other ranks every date, modestly."""
    rng = np.random.default_rng(seed)
    dates = np.repeat(np.arange(D, dtype=np.int64) * DAY, N)
    ids = np.tile(np.arange(N), D)
    true = rng.normal(0, 0.01, (D * N, 1))
    speaks = (dates // DAY) % 4 == 0
    sharp = np.where(speaks[:, None], true + rng.normal(0, 0.012, true.shape), 0.001)
    steady = true + rng.normal(0, 0.02, true.shape)
    model, drift = (sharp, steady) if silent_side == "model" else (steady, sharp)
    pred = {"model": model, "zero": np.zeros_like(true), "repeat": rng.normal(0, 0.01, true.shape), "drift": drift,
            "seasonal_naive": rng.normal(0, 0.01, true.shape)}
    return _fc(pred, true, dates, ids, N)


@pytest.mark.parametrize("silent_side", ["model", "drift"])
def test_the_paired_rank_ic_test_counts_zero_on_the_dates_a_forecast_ranks_nothing(silent_side):
    """The model ranks a quarter of the dates well and gives every symbol the same forecast on the others;
    naive:drift ranks every date. Over the dates both ranked (30 of 120), the model's luck read "the model
    ranks better than the strongest baseline (significant at 0.05)", while a book on the model earns nothing
    on 90 dates where drift's ranks pay. The difference is taken over the dates either ranks, 0 where one
    ranks nothing (as the strongest baseline is chosen), and is scipy's one-sample t test of that series; the
    other way round, a baseline silent on most dates is not credited with the model's losses there."""
    fc = _silent_panel(silent_side)
    r = score(fc)
    m = _ref_rank_ic(fc.pred["model"][:, 0], fc.true[:, 0], fc.dates)
    b = _ref_rank_ic(fc.pred["drift"][:, 0], fc.true[:, 0], fc.dates)
    either = m.notna() | b.notna()
    ref = (m.fillna(0.0) - b.fillna(0.0))[either].to_numpy()
    assert r["cross_section_strongest"]["name"] == "drift"
    d = r["cross_section_strongest"]["difference"]
    assert d["n_dates"] == ref.size == 120 and not d["same_dates"]
    assert d["mean"] == pytest.approx(ref.mean(), abs=1e-12)
    assert d["p_value"] == pytest.approx(stats.ttest_1samp(ref, 0.0).pvalue, rel=1e-9)
    # the model's and the baseline's own figures stay Qlib's: the mean over the dates each ranks
    own = r["model"]["cross_section"]["rank_ic"]
    assert own["n_dates"] == int(m.notna().sum()) and own["mean"] == pytest.approx(m.mean(), abs=1e-12)
    assert "over the 120 dates either ranks, counting 0 where one ranks nothing" in r["verdict"]
    if silent_side == "model":
        assert ref.mean() < 0 and d["p_value"] < 0.05
        assert "ranks better" not in r["verdict"]
        assert r["verdict"].endswith("naive:drift ranks significantly better, so the model is not worth its cost")
        assert not beats_strongest(r)
    else:
        assert ref.mean() > 0 and d["p_value"] < 0.05
        assert r["verdict"].endswith("the model ranks better than the strongest baseline (significant at 0.05)")
        assert beats_strongest(r)


def test_the_paired_difference_of_forecasts_that_rank_on_the_same_dates_is_the_paired_t_test():
    """Both rank every date: the difference is scipy's paired t test of the two per-date Spearman series, and
    the verdict adds no clause about the dates."""
    rng = np.random.default_rng(4)
    D, N = 50, 6
    dates = np.repeat(np.arange(D, dtype=np.int64) * DAY, N)
    ids = np.tile(np.arange(N), D)
    true = rng.normal(0, 0.01, (D * N, 1))
    pred = {"model": true + rng.normal(0, 0.02, true.shape), "zero": np.zeros_like(true),
            "repeat": rng.normal(0, 0.01, true.shape), "drift": true + rng.normal(0, 0.03, true.shape),
            "seasonal_naive": rng.normal(0, 0.01, true.shape)}
    r = score(_fc(pred, true, dates, ids, N))
    name = r["cross_section_strongest"]["name"]
    m = _ref_rank_ic(pred["model"][:, 0], true[:, 0], dates)
    b = _ref_rank_ic(pred[name][:, 0], true[:, 0], dates)
    d = r["cross_section_strongest"]["difference"]
    assert d["same_dates"] and d["n_dates"] == D
    assert d["p_value"] == pytest.approx(stats.ttest_rel(m, b).pvalue, rel=1e-9)
    assert "either ranks" not in r["verdict"]


def test_a_model_that_ranks_nothing_has_no_paired_difference_even_against_a_baseline_that_ranks_backwards():
    """The model gives every symbol the same forecast on every date (it ranks nothing) and each baseline that
    ranks does so backwards: counting the model 0 on every date would read "0 minus a negative rank IC",
    a significant gain that seeds.json would count as the model beating the baseline the verdict says it
    is not worth its cost over. The difference stays undefined, as the model's rank IC is."""
    rng = np.random.default_rng(2)
    D, N = 60, 6
    dates = np.repeat(np.arange(D, dtype=np.int64) * DAY, N)
    ids = np.tile(np.arange(N), D)
    true = rng.normal(0, 0.01, (D * N, 1))
    pred = {"model": np.full_like(true, 0.002), "zero": np.zeros_like(true), "repeat": -true,
            "drift": -true + rng.normal(0, 0.01, true.shape), "seasonal_naive": np.zeros_like(true)}
    r = score(_fc(pred, true, dates, ids, N))
    assert r["model"]["cross_section"]["rank_ic"]["n_dates"] == 0
    d = r["cross_section_strongest"]["difference"]
    assert d["n_dates"] == 0 and math.isnan(d["mean"]) and math.isnan(d["p_value"])
    assert "so it ranks nothing" in r["verdict"] and "not worth its cost" in r["verdict"]
    assert not beats_strongest(r)


def test_the_cross_sectional_ic_is_qlibs_per_date_pearson_and_spearman():
    """Ties, dates of 1 or 2 symbols (no cross-section: left out), a date whose forecast is the same for every
    symbol and one whose realisation is (left out, as pandas' NaN correlation is skipped by Qlib's mean):
    the per-date series is scipy's, and the summary Qlib's IC, Rank IC and ICIR (std ddof 1), with the t
    statistic scipy's one-sample t."""
    rng = np.random.default_rng(7)
    rows = []
    for d in range(30):
        n = [1, 2, 5, 7, 9][d % 5]
        for s in range(n):
            rows.append((d * DAY, s))
    dates = np.array([r[0] for r in rows], dtype=np.int64)
    pred = np.round(rng.normal(size=len(rows)), 1)  # ties
    true = np.round(rng.normal(size=len(rows)), 2)
    day = dates // DAY
    pred[day == 2] = 0.3  # a forecast the same for every symbol of a 5-symbol date
    true[day == 3] = 0.0  # a realisation the same for every symbol of a 7-symbol date
    df = pd.DataFrame({"p": pred, "t": true, "d": dates})
    for rank, f in ((False, stats.pearsonr), (True, stats.spearmanr)):
        ref = df.groupby("d")[["p", "t"]].apply(
            lambda g: f(g.p, g.t)[0] if len(g) >= 3 and g.p.nunique() > 1 and g.t.nunique() > 1 else np.nan
        ).dropna()
        got_d, got = M.cross_sectional_ic_series(pred, true, dates, rank=rank)
        assert list(got_d) == list(ref.index) and 2 * DAY not in got_d and 3 * DAY not in got_d
        np.testing.assert_allclose(got, ref.to_numpy(), rtol=0, atol=1e-12)
        s = cross_section(pred[:, None], true[:, None], dates)["rank_ic" if rank else "ic"]
        assert s["n_dates"] == ref.size
        assert s["mean"] == pytest.approx(ref.mean(), abs=1e-12)
        assert s["icir"] == pytest.approx(ref.mean() / ref.std(ddof=1), rel=1e-9)
        assert s["t_stat"] == pytest.approx(stats.ttest_1samp(ref, 0.0).statistic, rel=1e-9)
