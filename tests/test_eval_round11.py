"""What the interval and verdict figures say when a value is missing or not finite: a missing
realisation is left out of the coverage (counted and said), not scored as a miss; a bound that is
±inf from an overflowed forecast or quantile is a miss, not a hit; two levels that print alike keep
their own figures; and an undefined figure in a verdict is said in words, with why, never "nan"."""

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hftraining.core.jsonio import dumps
from hftraining.eval import metrics as M
from hftraining.eval.forecasts import Forecasts, format_table, score
from hftraining.eval.intervals import format_intervals, interval_report
from hftraining.eval.report import write_report

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_report_consistency import section  # noqa: E402

DAY = 86_400 * 10**9
NAN_WORD = re.compile(r"(?<![±\w])(nan|inf)\b")  # a figure printed as Python prints a float that is not finite


def _panel_bounds(D: int = 200, S: int = 5, H: int = 2, seed: int = 0):
    """S symbols × D dates of H-step realisations ~ N(0, 1) and exact 90% intervals ±z around 0."""
    rng = np.random.default_rng(seed)
    z = stats.norm.ppf(0.95)
    y = rng.normal(size=(D * S, H))
    return y, np.repeat(np.arange(D), S), np.tile(np.arange(S), D), (np.full_like(y, -z), np.full_like(y, z))


def test_a_missing_realisation_is_left_out_of_the_interval_coverage_not_counted_as_a_miss():
    """Every finite realisation lies inside the interval, and a tenth of the step-1 labels are NaN:
    they were scored as misses (coverage 0.9 of a band that never missed, Kupiec's count off by the
    same windows). The coverage and both tests are those of the windows with a label, and the
    sentence says how many intervals were left out and why."""
    y, d, sid, _ = _panel_bounds()
    band = (np.full_like(y, -10.0), np.full_like(y, 10.0))
    gone = np.arange(0, len(y), 10)
    y_missing = y.copy()
    y_missing[gone, 0] = np.nan
    rep = interval_report({0.9: band}, y_missing, d, sid, "split")
    e = rep["levels"]["0.9"]
    assert e["coverage_per_step"] == [1.0, 1.0] and e["coverage"] == 1.0
    assert rep["no_realisation"] == len(gone)
    assert f"{len(gone)} of the {y.size} intervals left out" in rep["sentence"]
    assert "a missing label is neither a hit nor a miss" in rep["sentence"]
    # the tests count only the scored windows: as if those windows had never been there
    keep = np.setdiff1d(np.arange(len(y)), gone)
    ref = interval_report({0.9: (band[0][keep], band[1][keep])}, y[keep], d[keep], sid[keep], "split")["levels"]["0.9"]
    assert e["kupiec"] == ref["kupiec"]
    assert e["winkler_per_step"][0] == ref["winkler_per_step"][0]
    assert e["rolling_coverage"] == ref["rolling_coverage"]
    # no label at all on step 1: nothing to test, and the sentence says so rather than print a coverage of nan
    y_none = y.copy()
    y_none[:, 0] = np.nan
    none = interval_report({0.9: band}, y_none, d, sid, "split")
    assert math.isnan(none["levels"]["0.9"]["coverage_per_step"][0]) and none["levels"]["0.9"]["coverage_per_step"][1] == 1.0
    assert "90%: undefined" in none["sentence"] and not NAN_WORD.search(none["sentence"])
    assert not any(NAN_WORD.search(line) for line in format_intervals(none))


def test_an_interval_bound_that_overflowed_is_a_miss_not_a_hit():
    """A quantile head that emits +inf as its upper quantile gives CQR an upper bound of +inf: every
    realisation above the lower bound counted as covered, and the sentence blamed too few calibration
    windows. Such a bound is a failure to forecast: a miss, named as such; a conformal level that is
    unbounded on both sides (too few calibration windows) still covers."""
    y, d, sid, (lo, hi) = _panel_bounds()
    hi_bad = hi.copy()
    over = np.arange(0, len(y), 4)
    hi_bad[over] = np.inf  # a quarter of the windows
    rep = interval_report({0.9: (lo, hi_bad)}, y, d, sid, "cqr")
    e = rep["levels"]["0.9"]
    ok = (y >= lo) & (y <= hi)
    want = np.where(np.isin(np.arange(len(y)), over)[:, None], False, ok).mean(axis=0)
    np.testing.assert_allclose(e["coverage_per_step"], want)
    assert e["coverage_per_step"][0] < 0.75  # a quarter of the windows miss, on top of the band's own misses
    assert e["not_finite"] == 0.25 and e["unbounded"] == 0.0
    assert "90% not finite in 25% of the intervals" in rep["sentence"] and "counted as misses" in rep["sentence"]
    assert "fewer than" not in rep["sentence"] and not rep["calibrated"]
    assert math.isnan(e["mean_width_per_step"][0])  # an overflowed bound has no width
    # both bounds +inf (a split interval around a +inf forecast): a miss too, wherever the band would cover
    both = interval_report({0.9: (np.where(ok, np.inf, lo), np.full_like(hi, np.inf))}, y, d, sid, "split")
    assert both["levels"]["0.9"]["coverage"] == 0.0 and both["levels"]["0.9"]["not_finite"] == 1.0
    # (−inf, +inf): the calibration's unbounded level, which covers, as before
    wide = interval_report({0.9: (np.full_like(y, -np.inf), np.full_like(y, np.inf))}, y, d, sid, "split")
    assert wide["levels"]["0.9"]["coverage"] == 1.0 and wide["levels"]["0.9"]["unbounded"] == 1.0
    assert wide["levels"]["0.9"]["not_finite"] == 0.0 and "fewer than the 9 windows" in wide["sentence"]


def _panel(S: int = 6, D: int = 60, H: int = 2, target: str = "return", seed: int = 1) -> Forecasts:
    """S symbols × D dates: the model is the realisation plus noise, ``repeat`` ranks a little, ``drift``
    not at all; a quantile head at 0.1 and 0.9."""
    rng = np.random.default_rng(seed)
    W = S * D
    true = rng.normal(0, 1, (W, H))
    pred = {"model": true + rng.normal(0, 1, (W, H)), "zero": np.zeros((W, H)),
            "repeat": 0.2 * true + rng.normal(0, 1, (W, H)), "drift": rng.normal(0, 1, (W, H))}
    q = np.stack([pred["model"] - 1.8, pred["model"] + 1.8], axis=-1)
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * DAY, S),
                     symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W), target=target,
                     quantiles=q, levels=[0.1, 0.9])


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_a_quantile_head_that_overflows_has_no_coverage_and_the_table_says_why(bad, tmp_path):
    """A quantile of +inf lies above every realisation and one of −inf below: a head that emits them
    read a perfect (or a zero) coverage beside an infinite pinball loss. Its coverage is undefined,
    and the console and the report count the windows and say why."""
    fc = _panel()
    fc.quantiles[5, 0, 1 if bad > 0 else 0] = bad
    fc.quantiles[9, 1, :] = [-math.inf, math.inf]
    cov = M.coverage(fc.quantiles, fc.true, fc.levels)
    assert set(cov) == {"below_q0.1", "below_q0.9", "interval_80%"} and all(math.isnan(v) for v in cov.values())
    with np.errstate(all="ignore"):
        r = score(fc)
    assert r["model"]["quantiles_not_finite"] == 2
    why = "undefined: a quantile is not finite in 2 of the 360 windows"
    line = next(x for x in format_table(r).splitlines() if x.startswith("quantile head"))
    assert why in line and "interval_80% —" in line
    ev = {"split": "test", **json.loads(dumps(r))}
    _, md = write_report(tmp_path, ev, fc, None)
    assert why in md.read_text(encoding="utf-8")


def test_two_levels_that_print_alike_keep_their_own_figures():
    """0.9 and 0.90000001 both printed "0.9" (eval.json's key) and "90%" (the sentence, the table): the
    second level's figures overwrote the first's, and the sentence paired each label with the wrong
    level's coverage. Each level keeps its own entry under a label that tells them apart; so do two
    quantile pairs whose widths round to the same percent."""
    y, d, sid, (lo, hi) = _panel_bounds()
    narrow = (lo / 2, hi / 2)
    rep = interval_report({0.9: (lo, hi), 0.90000001: narrow}, y, d, sid, "split")
    assert list(rep["levels"]) == ["0.9", "0.90000001"]
    a, b = rep["levels"]["0.9"], rep["levels"]["0.90000001"]
    assert a["coverage_per_step"][0] == pytest.approx(0.9, abs=0.02) and b["coverage_per_step"][0] < 0.7
    assert (f"90.000000%: {a['coverage_per_step'][0]:.3f}, 90.000001%: {b['coverage_per_step'][0]:.3f}"
            in rep["sentence"])
    lines = format_intervals(rep)
    assert lines[1].startswith("  90.000000%  coverage") and lines[2].startswith("  90.000001%  coverage")
    # eval.json's keys read back as the levels themselves
    assert [float(k) for k in json.loads(dumps(rep))["levels"]] == [0.9, 0.90000001]
    # quantile pairs (0.05, 0.95) and (0.051, 0.949): widths 0.9 and 0.898, both "90%"
    levels = [0.05, 0.051, 0.949, 0.95]
    q = np.stack([np.full_like(y, v) for v in stats.norm.ppf(levels)], axis=-1)
    cov = M.coverage(q, y, levels)
    inner = ((y >= q[..., 1]) & (y <= q[..., 2])).mean()
    outer = ((y >= q[..., 0]) & (y <= q[..., 3])).mean()
    assert cov["interval_90.0%"] == outer and cov["interval_89.8%"] == inner and inner < outer
    assert len([k for k in cov if k.startswith("below_q")]) == 4


@pytest.mark.parametrize("split", ["test", "val"])
@pytest.mark.parametrize("target", ["return", "cs_rank"])
@pytest.mark.parametrize("where", ["model", "label"])
def test_a_verdict_says_in_words_which_figure_is_undefined_and_why(where, target, split, tmp_path):
    """One step-1 model forecast (or realised label) is NaN: the verdict printed "rank IC = nan" and
    "model MSE / zero-forecast MSE = nan". It says the figure is undefined and why (how many windows
    hold a value that is not finite), in eval.json, the console and the report, for either label and
    split; no "nan" or "inf" stands for a figure anywhere in the verdict."""
    fc = _panel(target=target)
    (fc.pred["model"] if where == "model" else fc.true)[3, 0] = math.nan
    with np.errstate(all="ignore"):
        r = score(fc)
    who = "the model's step-1 forecast" if where == "model" else "the realised step-1 label"
    assert f"step-1 rank IC undefined over the 60 dates: the rank IC could not be computed ({who} is not finite in 1 " \
           "of the 360 windows)" in r["cross_section_verdict"]
    mse_who = "the model's forecast" if where == "model" else "a realised label"
    assert (f"model MSE / zero-forecast MSE is undefined ({mse_who} is not finite in 1 of the 360 windows)"
            in r["mse_verdict"])
    assert r["not_finite"] == {"model": int(where == "model"), "label": int(where == "label")}
    for text in (r["verdict"], r["mse_verdict"], r["cross_section_verdict"], format_table(r)):
        assert not NAN_WORD.search(text), text
    ev = {"split": split, **json.loads(dumps(r))}
    _, md = write_report(tmp_path, ev, fc, None)
    top = section(md.read_text(encoding="utf-8"), "Verdict")
    assert r["verdict"] in top and not NAN_WORD.search(top)


def test_a_finite_ratio_and_rank_ic_read_as_before():
    """Nothing changes where every figure is defined: the ratio and the rank IC are printed as numbers."""
    r = score(_panel(target="cs_rank"))
    m = r["model"]["cross_section"]["rank_ic"]["mean"]
    assert r["cross_section_verdict"].startswith(f"step-1 rank IC = {m:.4f} (t = ")
    assert r["mse_verdict"].startswith(f"model MSE / zero-forecast MSE = {r['mse_vs_zero']:.4f}, Diebold–Mariano p = ")
    assert not any(math.isnan(v) for v in r["model"]["coverage"].values())


@pytest.mark.parametrize("overrides, said", [
    (["evaluation.intervals=[0.9, 0.90000001]"], "would share the forecast columns lower_90/upper_90"),
    (["model.quantiles=[0.1, 0.1, 0.9]"], "level 0.1 is listed twice"),
    (["model.quantiles=[0.1, 0.1000000001, 0.9]"], "would share the forecast column <target>_q0.1"),
])
def test_levels_that_would_share_a_forecast_column_are_refused_in_the_config(overrides, said):
    """The forecast table names its columns lower_90/upper_90 and return_q0.1: two levels that print
    alike there wrote one column, the second level's over the first's."""
    from hftraining.core.config import load_config
    from hftraining.core.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(said)):
        load_config(None, overrides)
    load_config(None, ["evaluation.intervals=[0.8, 0.9]", "model.quantiles=[0.05, 0.1, 0.9, 0.95]"])


def test_aci_takes_a_missing_label_for_no_outcome_not_a_miss():
    """ACI's α moved as if a window with a NaN label had missed (α fell by γ(1 − α) a date, every later
    interval wider) while the report leaves such a window out of the coverage; with every step-1 label
    missing α stays where it started, and with a few missing it moves as without those windows."""
    from hftraining.models.intervals import Calibration, aci_bounds

    rng = np.random.default_rng(3)
    D, S, H, gamma, level = 30, 4, 2, 0.01, 0.9
    cal = Calibration.fit(np.zeros((200, H)), rng.normal(size=(200, H)), [level], "aci", gamma=gamma)
    d = np.repeat(np.arange(D), S)
    pred, true = rng.normal(size=(D * S, H)) * 0.1, rng.normal(size=(D * S, H))
    known = d[:, None] + np.arange(1, H + 1)
    gone = true.copy()
    gone[:, 0] = np.nan
    _, alpha = aci_bounds(cal, pred, gone, d, known)
    assert alpha[0, 0] == pytest.approx(1 - level)
    # the last symbol's labels missing: α moves as on the other three symbols alone
    some = true.copy()
    some[S - 1::S, 0] = np.nan
    keep = np.arange(D * S) % S != S - 1
    _, got = aci_bounds(cal, pred, some, d, known)
    _, want = aci_bounds(cal, pred[keep], true[keep], d[keep], known[keep])
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-12)
