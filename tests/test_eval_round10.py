"""What an evaluation says when a value is not finite: an overflowed forecast leaves the pooled rank
IC undefined (eval.json, the console's "IC pool", the report), as it leaves its date's IC; a realised
label that is not finite leaves no baseline to name, and the verdict says so instead of dropping the
comparison without a word; a cross-sectional label whose model forecast is not finite is still
measured against the strongest baseline by rank IC."""

import json
import math

import numpy as np
import pytest

from hftraining.core.config import EvaluationConfig
from hftraining.core.jsonio import dumps
from hftraining.eval import metrics as M
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts, format_table, score
from hftraining.eval.report import write_report
from test_eval_report_consistency import section, table  # noqa: E402

DAY = 86_400 * 10**9


def _panel(S: int = 5, D: int = 40, H: int = 2, target: str = "return", seed: int = 0) -> Forecasts:
    """S symbols × D dates of H-step forecasts: the model is the realisation plus noise, ``repeat`` ranks
    a little, ``drift`` not at all."""
    rng = np.random.default_rng(seed)
    W = S * D
    true = rng.normal(0, 1, (W, H))
    pred = {"model": true + rng.normal(0, 1, (W, H)), "zero": np.zeros((W, H)),
            "repeat": 0.2 * true + rng.normal(0, 1, (W, H)), "drift": rng.normal(0, 1, (W, H))}
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * DAY, S),
                     symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W), target=target)


def _with_backtest(result: dict, fc: Forecasts) -> dict:
    """``result`` as eval.json holds it: with the split and the backtest, NaN written as null."""
    bt = backtest_forecasts(fc, EvaluationConfig())
    result = {"split": "test", **result, "backtest": {"settings": bt["settings"], "strategies": bt["strategies"]}}
    return json.loads(dumps(result))


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_an_overflowed_forecast_leaves_the_pooled_ic_undefined_as_the_per_date_ic(bad, tmp_path):
    """One step-1 forecast of symbol S1 overflowed on the first date: that date's IC is NaN, so the mean
    IC is; the pooled IC over all pairs ranked the +inf first (or the −inf last) and read a
    correlation beside it. Now it is undefined too: for the model, for step 1, for S1 and in every
    table that shows it (a dash), while step 2 and the other symbols keep their figures."""
    fc = _panel()
    fc.pred["model"][1, 0] = bad  # date 0, symbol S1, step 1
    with np.errstate(all="ignore"):
        r = score(fc)
    model, step1, step2 = r["model"], r["per_step"]["model"][0], r["per_step"]["model"][1]
    assert math.isnan(model["ic"]) and math.isnan(step1["ic"])  # the per-date IC, as before
    assert math.isnan(model["ic_pooled"]) and math.isnan(step1["ic_pooled"])
    assert math.isfinite(step2["ic_pooled"]) and step2["ic_pooled"] > 0.5
    s1, s0 = r["per_symbol"]["model"]["S1"], r["per_symbol"]["model"]["S0"]
    assert math.isnan(s1["ic_pooled"]) and math.isnan(s1["per_step"][0]["ic_pooled"])
    assert math.isfinite(s1["per_step"][1]["ic_pooled"]) and math.isfinite(s0["ic_pooled"])
    assert math.isnan(M.spearman(fc.pred["model"], fc.true))
    assert math.isnan(M.spearman(fc.true, fc.pred["model"]))  # on either side

    lines = format_table(r).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("forecast"))
    assert lines[header + 1].startswith("model")
    assert lines[header + 1][22:].split()[5] == "—"  # the "IC pool" column

    ev = _with_backtest(r, fc)
    assert ev["model"]["ic_pooled"] is None  # eval.json: null
    _, md = write_report(tmp_path, ev, fc, None)
    body = section(md.read_text(encoding="utf-8"), "Forecast metrics")
    _, rows = table(body, "forecast", "IC pooled")
    assert rows["model"][6] == "—"
    _, rows = table(body, "symbol")
    assert rows["S1"][-1] == "—" and rows["S0"][-1] != "—"


@pytest.mark.parametrize("target", ["return", "cs_rank"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_realisation_that_is_not_finite_leaves_no_baseline_and_the_verdict_says_why(bad, target, tmp_path):
    """A realised label that is not finite (forecasts built by hand through the Python API) leaves every forecast's MSE undefined, so no baseline is the strongest:
    the verdict dropped the comparison without a word ("... the DM test could not be computed" and
    nothing after it). It now says why no baseline is named and that the model is not shown to be worth
    its cost, in eval.json, the console and the report."""
    fc = _panel(target=target)
    fc.true[7, 0] = bad
    fc.true[12, 1] = bad  # two windows
    with np.errstate(all="ignore"):
        r = score(fc)
    assert "strongest_baseline" not in r and "cross_section_strongest" not in r
    why = ("no strongest baseline: 2 of the 200 windows have a realised label that is not finite (NaN or ±inf): "
           "no forecast's MSE is defined")
    assert why in r["mse_verdict"] and r["mse_verdict"].endswith("the model is not shown to be worth its cost")
    assert r["strongest_baseline_note"].startswith(why.removeprefix("no strongest baseline: "))  # eval.json
    assert why in r["verdict"]  # a cross-sectional label's verdict adds the squared-error one
    assert why in format_table(r)
    _, md = write_report(tmp_path, _with_backtest(r, fc), fc, None)
    assert why in section(md.read_text(encoding="utf-8"), "Verdict")


def test_a_cross_sectional_verdict_names_the_strongest_baseline_by_rank_ic_when_the_model_is_not_finite(tmp_path):
    """A cs_rank model whose forecast is NaN on one date has no rank IC, while every baseline has one:
    the verdict named only the strongest baseline by MSE (``naive:zero``), not the bar a cross-sectional
    label is judged against. It names the strongest by rank IC, says the model is not worth its cost
    over it, and the report leads with that baseline."""
    fc = _panel(S=6, D=60, target="cs_rank", seed=1)
    fc.pred["model"][3, 0] = math.nan
    with np.errstate(all="ignore"):
        r = score(fc)
    base = {k: v["cross_section"]["rank_ic"]["mean"] for k, v in r["baselines"].items()}
    best = max((k for k in base if math.isfinite(base[k])), key=base.get)
    assert best == "repeat"
    assert "the rank IC could not be computed" in r["verdict"]
    assert r["verdict"].endswith(f"strongest baseline by rank IC naive:repeat = {base[best]:.4f}, so the model is "
                                 "not worth its cost over naive:repeat")
    assert r["cross_section_strongest"]["name"] == best
    assert math.isnan(r["cross_section_strongest"]["difference"]["p_value"])
    _, md = write_report(tmp_path, _with_backtest(r, fc), fc, None)
    top = section(md.read_text(encoding="utf-8"), "Verdict")
    assert top.startswith("Verdict: the model against the strongest baseline by rank IC")
    assert r["verdict"] in top
    _, rows = table(top, "forecast", "rank IC (step 1)")
    assert list(rows) == ["model", "naive:repeat (strongest baseline)"]
    assert rows["model"][3] == "—" and rows["naive:repeat (strongest baseline)"][3] == f"{base[best]:.4f}"
    n = r["cross_section_strongest"]["difference"]["n_dates"]
    assert f"model − naive:repeat: mean — per date, t = —, p = — over {n} dates" in top


def test_a_report_written_from_eval_json_shows_a_dash_for_a_mse_that_is_not_finite(tmp_path):
    """eval.json writes a MSE that is not finite (a NaN forecast's) as null: a report written from it
    (``write_report`` with eval.json's content) failed on None / float in the verdict table and the
    per-symbol table. Both show a dash for the MSE and its ratio, as the model card does."""
    fc = _panel()
    fc.pred["model"][4, 1] = math.nan  # symbol S4, step 2
    with np.errstate(all="ignore"):
        ev = _with_backtest(score(fc), fc)
    assert ev["model"]["mse"] is None and ev["per_symbol"]["model"]["S4"]["mse"] is None
    _, md = write_report(tmp_path, ev, None, None)
    text = md.read_text(encoding="utf-8")
    _, rows = table(section(text, "Verdict"), "forecast", "MSE / zero")
    assert rows["model"][1:3] == ["—", "—"]
    _, rows = table(section(text, "Forecast metrics"), "symbol")
    assert rows["S4"][2] == "—" and rows["S4"][4] == "—" and rows["S0"][4] != "—"
