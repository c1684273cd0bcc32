"""The paired rank-IC difference of the model and the strongest baseline, taken over the dates either ranks
(a forecast the same for every symbol of a date counting 0 there), says each side's mean over those dates:
the printed rank ICs are each over the dates that forecast ranks, and without the two figures the verdict
read a negative "model − it" beside a model rank IC printed above drift's (or "the model ranks better" beside
one printed below it) with nothing that adds up to the difference it states."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hftraining.core.config import Config, ModelConfig
from hftraining.core.jsonio import json_safe
from hftraining.eval.forecasts import Forecasts, score
from hftraining.eval.model_card import model_card
from hftraining.models import build_model
from hftraining.workflows.seeds import beats_strongest

DAY = 86_400 * 10**9


def _fc(pred, true, dates, n_symbols):
    n = len(true)
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=np.tile(np.arange(n_symbols), n // n_symbols),
                     symbols=[f"S{i}" for i in range(n_symbols)], last_return=np.zeros(n), past_vol=np.full(n, 0.01),
                     last_close=np.full(n, 100.0), target="cs_rank")


def _spearman(pred, true, dates) -> pd.Series:
    """date → scipy's Spearman of the date's cross-section; NaN where a side is the same for every symbol."""
    df = pd.DataFrame({"p": pred, "t": true, "d": dates})
    return df.groupby("d")[["p", "t"]].apply(
        lambda g: np.nan if g.p.nunique() == 1 or g.t.nunique() == 1 else stats.spearmanr(g.p, g.t)[0])


def _panel(silent, D=120, N=8, seed=1):
    """``silent``: the forecasts that give every symbol one value on 3 of every 4 dates and rank well on the
    others; the rest rank every date, less well."""
    rng = np.random.default_rng(seed)
    dates = np.repeat(np.arange(D, dtype=np.int64) * DAY, N)
    true = rng.normal(0, 0.01, (D * N, 1))
    speaks = ((dates // DAY) % 4 == 0)[:, None]
    pred = {}
    for name, noise in (("model", 0.012), ("repeat", 0.03), ("drift", 0.012), ("seasonal_naive", 0.05)):
        if name in silent:
            pred[name] = np.where(speaks, true + rng.normal(0, noise, true.shape), 0.001)
        else:
            pred[name] = true + rng.normal(0, 0.03 if name in ("model", "drift") else 0.06, true.shape)
    pred["zero"] = np.zeros_like(true)
    return _fc(pred, true, dates, N)


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d{4}", text.replace("−", "-"))]


@pytest.mark.parametrize("silent", [("model",), ("repeat", "drift", "seasonal_naive")])
def test_the_verdict_gives_each_sides_mean_over_the_dates_the_paired_difference_is_taken_on(silent):
    """The model silent on 90 of 120 dates: its rank IC (over its 30 dates) is printed above drift's, yet the
    model is not worth its cost over drift (a negative difference). The baselines silent on those dates (so chosen on the same dates, no second
    figure for drift): drift's printed above the model's, yet the model ranks better. Either way the verdict
    now states both means over the 120 dates (scipy's per-date Spearman, 0 where the forecast is constant),
    whose difference is the one tested, and on how many dates each ranks."""
    fc = _panel(silent)
    r = score(fc)
    s = r["cross_section_strongest"]
    assert s["name"] == "drift"
    m = _spearman(fc.pred["model"][:, 0], fc.true[:, 0], fc.dates)
    b = _spearman(fc.pred["drift"][:, 0], fc.true[:, 0], fc.dates)
    either = m.notna() | b.notna()
    ma, mb = m.fillna(0.0)[either].mean(), b.fillna(0.0)[either].mean()
    own_m, own_b = r["model"]["cross_section"]["rank_ic"]["mean"], s["rank_ic"]
    assert own_m == pytest.approx(m.mean(), abs=1e-12) and own_b == pytest.approx(b.mean(), abs=1e-12)
    d = s["difference"]
    # the printed own means point one way, the test the other: the verdict says the figures that add up
    assert d["mean"] == pytest.approx(ma - mb, abs=1e-12)
    assert (own_m > own_b) == (silent == ("model",)) and (d["mean"] > 0) == (silent != ("model",))
    v = r["verdict"]
    said = f"model − it = {ma:.4f} − {mb:.4f} = {ma - mb:.4f} per date over the 120 dates either ranks"
    assert said in v, v
    assert f"the model ranking on {int(m.notna().sum())} of them and naive:drift on {int(b.notna().sum())}" in v
    assert d["mean_a"] == pytest.approx(ma, abs=1e-12) and d["mean_b"] == pytest.approx(mb, abs=1e-12)
    assert (d["n_dates_a"], d["n_dates_b"]) == (int(m.notna().sum()), int(b.notna().sum()))
    assert beats_strongest(r) == (silent != ("model",))


def test_the_card_states_the_same_figures_and_an_older_eval_json_reads_as_before(tmp_path):
    """The model card's "model − it = X per date" sentence sat under a table of the two own means; it now gives
    the same subtraction as the verdict from eval.json (NaN as null). An eval.json written before the dates were
    recorded (no ``same_dates``) renders the plain figure, as it did."""
    fc = _panel(("model",))
    r = json.loads(json.dumps(json_safe({"split": "test", **score(fc)})))
    d = r["cross_section_strongest"]["difference"]
    m = _spearman(fc.pred["model"][:, 0], fc.true[:, 0], fc.dates)
    b = _spearman(fc.pred["drift"][:, 0], fc.true[:, 0], fc.dates)
    ma, mb = m.fillna(0.0).mean(), b.fillna(0.0).mean()  # drift ranks every date: they are the 120
    model = build_model(ModelConfig(type="drift"), 3, 1, 20)

    def sentence(result):
        card = model_card(tmp_path / "run" / "final", Config(), {"symbols": ["S0"]}, {"horizon": 1, "seq_len": 20},
                          model, 0, result)
        return next(line for line in card.splitlines() if line.startswith("Step-1 rank IC of the model"))

    line = sentence(r)
    assert f"model − it = {ma:.4f} − {mb:.4f} = {ma - mb:.4f} per date over the 120 dates" in line, line
    assert _numbers(line)[1:4] == pytest.approx([ma, mb, ma - mb], abs=1e-4)
    for key in ("same_dates", "mean_a", "mean_b", "n_dates_a", "n_dates_b"):
        d.pop(key, None)
    assert f"model − it = {d['mean']:.4f} per date, paired p = " in sentence(r)


def test_the_report_s_paired_test_line_gives_the_same_subtraction(tmp_path):
    """report.html's verdict section puts the paired test under a table of each forecast's own mean rank IC; where
    the two rank on other dates its "mean" is the difference over the dates either ranks, and it says so with
    each side's mean over them, as the verdict does."""
    from hftraining.eval.report import _Doc, _verdict_section

    fc = _panel(("model",))
    result = json.loads(json.dumps(json_safe(score(fc))))
    diff = result["cross_section_strongest"]["difference"]
    assert diff["same_dates"] is False
    doc = _Doc("report", tmp_path)
    _verdict_section(doc, result, None)
    line = next(p for p in doc.md if p.startswith("Paired test of the per-date rank IC"))
    assert f"{diff['mean_a']:.4f} − {diff['mean_b']:.4f} = {diff['mean']:.4f} per date" in line, line
