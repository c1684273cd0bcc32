"""A cross-sectional model with no rank IC of its own (a forecast, or a realisation, that is not finite on
a date) claims nothing against the strongest baseline by rank IC, in any of the places that read the
comparison: the verdict, eval.json's ``cross_section_strongest``, the model card, seeds.json."""

import math

import numpy as np
import pytest

from hftraining.eval.forecasts import score
from hftraining.eval.model_card import headline_metrics
from hftraining.workflows.seeds import beats_strongest, seed_summary
from test_eval_round10 import _panel, _with_backtest  # noqa: E402


@pytest.mark.parametrize("side", ["forecast", "realisation"])
def test_an_undefined_rank_ic_is_no_significant_gain_over_a_baseline_that_skips_its_date(side):
    """The model's step-1 forecast (or the realised label) of one symbol is NaN on the first date, where the
    strongest baseline by rank IC (``repeat``) forecasts the same value for every symbol (no IC there):
    the model's rank IC is undefined, and the verdict says it is not worth its cost over ``repeat``. The
    paired difference recorded beside that verdict was taken over the other dates only and read a
    significant gain (p 4e-7), so seeds.json counted the seed as significantly better and the model card
    showed that p. A date whose IC is undefined leaves the difference undefined, as it leaves the mean."""
    fc = _panel(S=6, D=60, target="cs_rank", seed=1)
    (fc.pred["model"] if side == "forecast" else fc.true)[3, 0] = math.nan  # date 0, symbol S3, step 1
    fc.pred["repeat"][0:6, 0] = 0.5  # date 0: every symbol the same
    with np.errstate(all="ignore"):
        r = score(fc)
    assert math.isnan(r["model"]["cross_section"]["rank_ic"]["mean"])
    cs = r["cross_section_strongest"]
    assert cs["name"] == "repeat" and math.isfinite(cs["rank_ic"])
    assert r["verdict"].split("; on squared error")[0].endswith("so the model is not worth its cost over naive:repeat")
    d = cs["difference"]
    assert math.isnan(d["mean"]) and math.isnan(d["p_value"]) and d["n_dates"] == 60
    meta = headline_metrics(r)  # the model card's and the tracker's numbers
    assert math.isnan(meta["rank_ic_diff_p_vs_strongest_baseline"])
    ev = _with_backtest(r, fc)
    assert ev["cross_section_strongest"]["difference"]["p_value"] is None
    assert not beats_strongest(ev)
    assert seed_summary([ev, ev])["significantly_better"] == []


def test_the_paired_difference_of_finite_rank_ics_is_unchanged():
    """Where both forecasts have a rank IC, the difference is taken over the dates either ranks on: a
    baseline constant on one date counts 0 there (it ranks nothing), not the test undefined."""
    fc = _panel(S=6, D=60, target="cs_rank", seed=1)
    fc.pred["repeat"][0:6, 0] = 0.5
    with np.errstate(all="ignore"):
        r = score(fc)
    d = r["cross_section_strongest"]["difference"]
    assert r["cross_section_strongest"]["name"] == "repeat"
    assert d["n_dates"] == 60 and not d["same_dates"]
    assert math.isfinite(d["mean"]) and d["mean"] > 0 and d["p_value"] < 0.05
    assert "the model ranks better than the strongest baseline" in r["verdict"]
