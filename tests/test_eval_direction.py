"""Is a directional accuracy better than chance? The Pesaran–Timmermann (1992) test beside every
printed accuracy: its statistic is the paper's, its p-value is calibrated under the null (on a single
series and, with the Rao–Scott design effect over dates and Student's t over them, on a panel whose
dates move together), a forecast with no skill is not called skilled because returns mostly rose,
and where the test is undefined (a sign that never varies, a value that is not finite, fewer than 2
dates) it has no p-value ("n/a") and the printed note says why."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from hftraining.core.jsonio import dumps
from hftraining.eval import metrics as M
from hftraining.eval import forecasts as F
from hftraining.eval.forecasts import Forecasts, format_table, score


def _pairs(counts: dict[tuple[int, int], int], rng) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts and realisations of the signs in ``counts`` ((forecast sign, realised sign) → how
    many), with random magnitudes and in random order."""
    signs = np.array([k for k, n in counts.items() for _ in range(n)], dtype=np.float64)
    rng.shuffle(signs)
    mag = rng.uniform(0.001, 0.05, signs.shape)
    return signs[:, 0] * mag[:, 0], signs[:, 1] * mag[:, 1]


def test_statistic_is_the_papers_on_a_two_by_two_table():
    """Forecast up 50 times (35 of them up), down 30 times (10 of them up): the statistic is
    S = (P − P*) / √(V(P) − V(P*)) written out from the paper in exact fractions, and realised returns
    of exactly 0 are left out as the accuracy leaves them out."""
    rng = np.random.default_rng(0)
    pred, true = _pairs({(1, 1): 35, (1, -1): 15, (-1, 1): 10, (-1, -1): 20}, rng)
    pred, true = np.r_[pred, 0.01, -0.02], np.r_[true, 0.0, 0.0]  # two realised zeros: no direction to hit
    n = 80
    Px, Py, P = Fraction(50, n), Fraction(45, n), Fraction(35 + 20, n)
    Pstar = Px * Py + (1 - Px) * (1 - Py)  # 33/64
    VP = Pstar * (1 - Pstar) / n
    VPstar = ((2 * Py - 1) ** 2 * Px * (1 - Px) / n + (2 * Px - 1) ** 2 * Py * (1 - Py) / n
              + 4 * Py * Px * (1 - Py) * (1 - Px) / n**2)
    S = float(P - Pstar) / math.sqrt(float(VP - VPstar))
    assert Pstar == Fraction(33, 64) and S == pytest.approx(3.2207, abs=1e-4)  # by hand: 0.171875 / 0.053365
    got = M.pesaran_timmermann(pred, true)
    assert got["statistic"] == pytest.approx(S, rel=1e-12)
    assert got["p_value"] == pytest.approx(stats.norm.sf(S), rel=1e-12)
    assert got["n"] == n and got["chance_hit_rate"] == pytest.approx(float(Pstar), rel=1e-15)
    assert got["hit_rate"] == M.directional_accuracy(pred, true) == float(P)
    # one pair per date: the clustered test is the classic one
    clustered = M.pesaran_timmermann(pred, true, np.arange(pred.size))
    assert clustered["design_effect"] == 1.0 and clustered["statistic"] == got["statistic"]
    # skill the other way is not skill: one-sided
    assert M.pesaran_timmermann(-pred, true)["p_value"] == pytest.approx(stats.norm.cdf(S), rel=1e-12)


def test_a_zero_forecast_is_the_coin_flip_the_accuracy_scores():
    """A forecast of exactly 0 states no direction: it counts as the half-hit the printed accuracy
    gives it, so the test's hit rate is that accuracy, and forecasts that are right whenever they
    speak are significant; the zero forecast everywhere has no p-value."""
    rng = np.random.default_rng(1)
    true = rng.normal(0, 1, 400)
    pred = np.where(rng.random(400) < 0.5, 0.0, true)  # silent half the time, right the other half
    got = M.pesaran_timmermann(pred, true)
    assert got["hit_rate"] == M.directional_accuracy(pred, true)
    assert 0.7 < got["hit_rate"] < 0.8 and got["p_value"] < 1e-6
    nothing = M.pesaran_timmermann(np.zeros(400), true)
    assert nothing["hit_rate"] == 0.5 and math.isnan(nothing["statistic"]) and math.isnan(nothing["p_value"])


def test_p_value_is_calibrated_under_the_null():
    """2000 independent forecast and realised sign series (250 pairs; 60% up forecasts, 55% up
    returns): a 5% test rejects 5% of them, within the 99.9% binomial band."""
    rng = np.random.default_rng(2)
    R, n = 2000, 250
    pred = np.where(rng.random((R, n)) < 0.60, 1.0, -1.0) * rng.uniform(0.5, 2.0, (R, n))
    true = np.where(rng.random((R, n)) < 0.55, 1.0, -1.0) * rng.uniform(0.5, 2.0, (R, n))
    p = np.array([M.pesaran_timmermann(pred[i], true[i])["p_value"] for i in range(R)])
    assert np.isfinite(p).all()
    lo, hi = stats.binom.interval(0.999, R, 0.05)
    assert lo <= int((p < 0.05).sum()) <= hi, (p < 0.05).mean()


def test_leaning_on_the_drift_is_not_skill():
    """On a series that rose 56% of the time, "always up" scores 56%, which a binomial test against
    50% calls highly significant; Pesaran–Timmermann has no evidence (the forecast's sign never
    varies: "n/a"), and a forecast that says up 90% of the time at random scores above 50% too
    without being significant."""
    rng = np.random.default_rng(3)
    n = 2000
    true = np.where(rng.random(n) < 0.56, 1.0, -1.0) * rng.uniform(0.001, 0.02, n)
    up = np.full(n, 0.001)
    hits = int(round(M.directional_accuracy(up, true) * n))
    assert hits / n > 0.54 and stats.binomtest(hits, n, 0.5, alternative="greater").pvalue < 1e-6
    always = M.pesaran_timmermann(up, true)
    assert always["hit_rate"] == hits / n and math.isnan(always["p_value"])
    assert F.direction_p_text({"directional_p": always["p_value"]}) == "n/a"
    mostly = np.where(rng.random(n) < 0.9, 1.0, -1.0) * 0.001  # independent of the outcome
    acc = M.directional_accuracy(mostly, true)
    assert acc > 0.53 and stats.binomtest(int(round(acc * n)), n, 0.5, alternative="greater").pvalue < 0.01
    assert M.pesaran_timmermann(mostly, true)["p_value"] > 0.05


def test_date_clusters_keep_a_panel_at_its_level():
    """A panel of 60 dates × 10 symbols in which a common date shock moves the realised signs and,
    independently, the forecast signs of a date together: pooled as independent pairs the test
    rejects a true null far above 5%; with the Rao–Scott design effect over dates it stays at 5%."""
    rng = np.random.default_rng(4)
    D, S, R = 60, 10, 2000
    dates = np.repeat(np.arange(D), S)
    clustered = plain = 0
    for _ in range(R):
        true = (rng.normal(size=(D, 1)) + 0.5 * rng.normal(size=(D, S))).ravel()
        pred = (rng.normal(size=(D, 1)) + 0.5 * rng.normal(size=(D, S))).ravel()
        clustered += M.pesaran_timmermann(pred, true, dates)["p_value"] < 0.05
        plain += M.pesaran_timmermann(pred, true)["p_value"] < 0.05
    lo, hi = stats.binom.interval(0.999, R, 0.05)
    assert lo <= clustered <= hi, clustered / R
    assert plain / R > 0.12, plain / R


def _forecasts(H: int = 3) -> Forecasts:
    """5 symbols × 300 dates; the model sees a fifth of the realised return, every realisation of a
    date moves with a common shock; naive baselines as the registered ones forecast (zero: 0 everywhere,
    drift: one constant sign)."""
    rng = np.random.default_rng(5)
    D, S = 300, 5
    W = D * S
    true = np.repeat(rng.normal(0.02, 1, (D, 1, H)), S, axis=0)[:, 0] + rng.normal(0, 1, (W, H))
    pred = {"model": 0.2 * true + rng.normal(0, 1, (W, H)), "zero": np.zeros((W, H)),
            "repeat": rng.normal(0, 1, (W, H)), "drift": np.full((W, H), 0.003),
            "seasonal_naive": rng.normal(0, 1, (W, H))}
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, S),
                     symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def test_scores_carry_the_step1_test_beside_the_accuracy_and_the_console_prints_it():
    """eval.json's content: every forecast's ``directional_p`` is the step-1 test over dates (its hit
    rate the step-1 accuracy of the step table), each step is tested on its own, each symbol too;
    the zero and the constant-sign forecasts are null ("n/a" in the console), never 0 or 1; the
    verdict does not read the test."""
    fc = _forecasts()
    r = score(fc)
    stored = json.loads(dumps(r))  # as eval.json stores it: NaN is null
    for name in ("model", "zero", "repeat", "drift", "seasonal_naive"):
        m = r["model"] if name == "model" else r["baselines"][name]
        test = M.pesaran_timmermann(fc.pred[name][:, 0], fc.true[:, 0], fc.dates)
        assert m["directional_test"]["hit_rate"] == r["per_step"][name][0]["directional_accuracy"]
        for h in range(3):
            step = M.pesaran_timmermann(fc.pred[name][:, h], fc.true[:, h], fc.dates)["p_value"]
            assert r["per_step"][name][h]["directional_p"] == pytest.approx(step, nan_ok=True, rel=1e-12)
        assert m["directional_p"] == pytest.approx(test["p_value"], nan_ok=True, rel=1e-12)
        assert r["per_step"][name][0]["directional_p"] == pytest.approx(m["directional_p"], nan_ok=True, rel=1e-12)
    model = r["model"]
    assert model["directional_p"] < 1e-6 and model["directional_test"]["design_effect"] > 1  # the common shock
    for name in ("zero", "drift"):
        assert math.isnan(r["baselines"][name]["directional_p"])
        assert stored["baselines"][name]["directional_p"] is None
    assert all(0 < r["baselines"][n]["directional_p"] < 1 for n in ("repeat", "seasonal_naive"))
    sym = r["per_symbol"]["model"]["S0"]
    mask = fc.symbol_ids == 0
    assert sym["directional_p"] == pytest.approx(
        M.pesaran_timmermann(fc.pred["model"][mask, 0], fc.true[mask, 0], fc.dates[mask])["p_value"], rel=1e-12)
    assert math.isnan(r["per_symbol"]["zero"]["S0"]["directional_p"])
    rows: dict[str, list[str]] = {}
    for line in format_table(r).splitlines():  # the metrics table comes first (the cross-section repeats "model")
        rows.setdefault(line[:22].strip(), line[22:].split())
    assert rows["forecast"][:5] == ["MSE", "MAE", "dir.acc", "PT", "p"]
    assert rows["model"][3] == F.direction_p_text(model) and float(rows["model"][3]) == pytest.approx(
        model["directional_p"], rel=5e-3)
    assert rows["naive:zero"][3] == rows["naive:drift"][3] == "n/a"
    assert rows["naive:repeat"][3] == F.direction_p_text(stored["baselines"]["repeat"])
    assert F.direction_p_text(stored["baselines"]["zero"]) == "n/a" and F.direction_p_text({}) == "—"


def test_date_codes_give_the_test_the_dates_give():
    """score() counts the dates of its thousands of directional tests (pooled, per step, per symbol) with
    the date codes of its panel, computed once, rather than sorting the dates on every call: on an
    unbalanced panel in shuffled row order (1 to 8 symbols a date, a common date shock, realised zeros,
    zero forecasts), and on subsets that miss whole dates, every field of the test, the design effect
    included, is bit-identical to the test of the dates themselves, and so is what score() reports."""
    from hftraining.eval.intervals import design_effect

    rng = np.random.default_rng(6)
    D, S = 80, 8
    per_date = rng.integers(1, S + 1, D)
    day = np.sort(rng.choice(20_000, D, replace=False)).astype(np.int64) * 86_400 * 10**9
    dates = np.repeat(day, per_date)
    symbol_ids = np.concatenate([rng.choice(S, k, replace=False) for k in per_date])
    W = dates.size
    shock = np.repeat(rng.normal(0, 1, D), per_date)
    true = np.where(rng.random(W) < 0.05, 0.0, shock + rng.normal(0, 1, W))
    pred = np.where(rng.random(W) < 0.05, 0.0, 0.3 * shock + 0.3 * true + rng.normal(0, 1, W))
    order = rng.permutation(W)
    dates, symbol_ids, true, pred = dates[order], symbol_ids[order], true[order], pred[order]
    codes = F.date_codes(dates)
    assert codes.dtype == np.int64 and np.array_equal(day[codes], dates)
    subsets = {"all": np.ones(W, bool), "half": rng.random(W) < 0.5, "late dates": dates > day[D // 3],
               **{f"symbol {s}": symbol_ids == s for s in range(S)}}
    for name, m in subsets.items():
        plain = M.pesaran_timmermann(pred[m], true[m], dates[m])
        fast = M.pesaran_timmermann(pred[m], true[m], codes=codes[m])
        assert math.isfinite(plain["p_value"]) and fast == plain, (name, plain, fast)
        s = rng.normal(0, 1, int(m.sum()))
        assert design_effect(s, codes=codes[m]) == design_effect(s, dates[m]), name
    assert M.pesaran_timmermann(pred, true, dates)["design_effect"] > 1  # the dates cluster: not the floor
    assert M.pesaran_timmermann(pred[subsets["half"]], true[subsets["half"]], dates[subsets["half"]])["n_clusters"] < D

    H = 2
    fc = Forecasts(pred={"model": np.stack([pred, pred[::-1]], axis=1), "zero": np.zeros((W, H))},
                   true=np.stack([true, true[::-1]], axis=1), dates=dates, symbol_ids=symbol_ids,
                   symbols=[f"S{i}" for i in range(S)], last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))
    r = score(fc)
    assert r["n_dates"] == D
    assert r["model"]["directional_test"] == M.pesaran_timmermann(pred, true, dates)
    for h in range(H):
        assert r["per_step"]["model"][h]["directional_test"] == M.pesaran_timmermann(fc.pred["model"][:, h], fc.true[:, h], dates)
    for s in range(S):
        m = symbol_ids == s
        sym = r["per_symbol"]["model"][f"S{s}"]
        assert sym["directional_p"] == M.pesaran_timmermann(pred[m], true[m], dates[m])["p_value"]
        assert sym["per_step"][1]["directional_p"] == M.pesaran_timmermann(
            fc.pred["model"][m, 1], fc.true[m, 1], dates[m])["p_value"]


def _small(D: int = 30, S: int = 4, seed: int = 7) -> Forecasts:
    """D dates × S symbols × 2 steps: a model that sees half the realised return, and the zero forecast."""
    rng = np.random.default_rng(seed)
    W = D * S
    true = rng.normal(0, 1, (W, 2))
    return Forecasts(pred={"model": 0.5 * true + rng.normal(0, 1, (W, 2)), "zero": np.zeros((W, 2))}, true=true,
                     dates=np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, S), symbol_ids=np.tile(np.arange(S), D),
                     symbols=[f"S{i}" for i in range(S)], last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def test_every_undefined_test_prints_na_and_the_note_names_why():
    """The console prints "n/a" for the test wherever it is undefined, and the note printed under the
    table (the report and the model card print the same note) names each such case, not only a sign
    that never varies: one NaN forecast, an infinite realisation, a forecast whose sign never varies,
    realisations of one sign, and a test split whose non-zero realised returns fall on one date."""
    def nan_forecast(fc):
        fc.pred["model"][5, 0] = np.nan

    def inf_realisation(fc):
        fc.true[9, 0] = np.inf

    def always_up(fc):
        fc.pred["model"][:] = 0.01

    def up_only(fc):
        fc.true[:] = np.abs(fc.true)

    def one_date(fc):
        fc.true[fc.dates != fc.dates[0]] = 0.0

    cases = {nan_forecast: "a value is not finite", inf_realisation: "a value is not finite",
             always_up: "the forecast's or the realisation's sign never varies",
             up_only: "the forecast's or the realisation's sign never varies",
             one_date: "fewer than 2 dates have a non-zero realised return"}
    assert math.isfinite(score(_small())["model"]["directional_p"])  # the untouched panel has a p-value
    for change, words in cases.items():
        fc = _small()
        change(fc)
        with np.errstate(invalid="ignore"):  # an infinite realisation makes NaN losses on purpose
            r = score(fc)
        assert r["model"]["directional_p"] != r["model"]["directional_p"], change.__name__  # NaN
        assert F.direction_p_text(json.loads(dumps(r))["model"]) == "n/a"
        lines = format_table(r).splitlines()
        model_row = next(line for line in lines if line.startswith("model "))
        assert model_row[22:].split()[3] == "n/a", (change.__name__, model_row)
        assert F.DIRECTION_NOTE in lines and "n/a: undefined" in F.DIRECTION_NOTE
        assert words in F.DIRECTION_NOTE, (change.__name__, words)
