"""Conformal intervals through the product: calibrated at the end of training, scored in eval.json,
saved in the model folder, returned by predict, evaluate and the server; ensembles calibrate their
own; a folder without a calibration (or with a broken one) behaves as it should."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import tiny
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError, DataError
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.train_run import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iv") / "run"
    cfg = load_config(None, tiny(out, "training.max_steps=20", "evaluation.report=false", "model.quantiles=[0.05,0.5,0.95]"))
    return out, train(cfg)


def test_training_calibrates_scores_and_saves_the_intervals(run):
    out, result = run
    iv = result["intervals"]
    assert iv["method"] == "split" and set(iv["levels"]) == {"0.8", "0.9"}
    for lv, e in iv["levels"].items():
        assert len(e["coverage_per_step"]) == 3 and all(0 <= c <= 1 for c in e["coverage_per_step"])
        assert 0 <= e["kupiec"]["p_value"] <= 1 and e["mean_width_per_step"][0] > 0
    assert iv["levels"]["0.9"]["mean_width_per_step"][0] > iv["levels"]["0.8"]["mean_width_per_step"][0]
    assert "conformal intervals" in iv["sentence"]
    assert json.loads((out / "eval.json").read_text())["intervals"]["levels"]["0.8"]["coverage"] == iv["levels"]["0.8"]["coverage"]
    saved = json.loads((out / "final" / "intervals.json").read_text())
    assert saved["method"] == "split" and saved["levels"] == [0.8, 0.9] and len(saved["radius"][0]) == 3
    assert "Forecast intervals" in (out / "final" / "README.md").read_text()
    # evaluate scores the saved folder with the same intervals: the same coverage as training reported
    again, _ = evaluate_model_dir(out)
    assert again["intervals"]["levels"]["0.9"]["coverage_per_step"] == iv["levels"]["0.9"]["coverage_per_step"]
    assert again["intervals"]["calibrated"] in (True, False) and "in_sample" not in again["intervals"]


@pytest.mark.parametrize("split, why", [("val", "calibrated on"), ("train", "trained on"), ("all", "calibrated on")])
def test_intervals_scored_on_the_windows_they_were_fit_on_claim_nothing(run, split, why):
    out, _ = run
    iv = evaluate_model_dir(out, split=split)[0]["intervals"]
    assert iv["calibrated"] is None and why in iv["in_sample"]
    assert "in sample" in iv["sentence"] and "calibrated (" not in iv["sentence"]


@pytest.mark.parametrize("split, why", [("val", "calibrated on"), ("train", "trained on")])
def test_other_data_scored_in_the_period_the_intervals_were_fit_on_claims_nothing(run, tmp_path, split, why):
    """The same rows given as other data (``evaluate --data``) are cut at the same dates: its val split
    is the calibration windows themselves, so no calibration verdict either."""
    from importlib.resources import files

    out, _ = run
    data = tmp_path / "data"
    data.mkdir()
    for sym in ("AEM", "WPM"):
        shutil.copy(files("hftraining") / "sample_data" / f"{sym}.csv", data / f"{sym}.csv")
    iv = evaluate_model_dir(out, data=str(data), split=split)[0]["intervals"]
    assert iv["calibrated"] is None and why in iv["in_sample"]
    assert "in sample" in iv["sentence"]


def test_predict_returns_bounds_around_the_forecast(run):
    out, _ = run
    table = Forecaster.from_pretrained(out).predict("src/hftraining/sample_data/AEM.csv")
    for pct in ("80", "90"):
        assert (table[f"lower_{pct}"] < table["forecast_return"]).all() and (table["forecast_return"] < table[f"upper_{pct}"]).all()
    assert (table["upper_90"] - table["lower_90"] > table["upper_80"] - table["lower_80"]).all()
    radius = np.array(json.loads((out / "final" / "intervals.json").read_text())["radius"])
    np.testing.assert_allclose(table["upper_80"] - table["forecast_return"], radius[0], rtol=1e-9)


def test_a_folder_without_calibration_still_loads_and_predicts(run, tmp_path):
    out, _ = run
    bare = tmp_path / "bare"
    shutil.copytree(out / "final", bare)
    (bare / "intervals.json").unlink()
    table = Forecaster.from_pretrained(bare).predict("src/hftraining/sample_data/AEM.csv")
    assert len(table) == 3 and not any(c.startswith(("lower_", "upper_")) for c in table.columns)


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("radius"), "missing key 'radius'"),
    (lambda d: d.update(method="magic"), "method must be one of"),
    (lambda d: d.update(levels=[1.5, 0.9]), "levels must be numbers in (0, 1)"),
    (lambda d: d.update(radius=[[1.0, 2.0], [1.0, 2.0]]), "radius must be 2 lists of 3 numbers"),
    (lambda d: d.update(radius=[[-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), "radius must be"),
    (lambda d: d.update(method="aci"), "grid must be 3 lists of 1001 numbers"),
    (lambda d: d.update(method="cqr", q_pairs=[[0, 7], [0, 2]]), "q_pairs must name, per level"),
    # the model's quantiles are 0.05, 0.5, 0.95: the 90% interval's are indices 0 and 2, lower first
    (lambda d: d.update(method="cqr", levels=[0.9], radius=[[0, 0, 0]], q_pairs=[[2, 0]]), "lower first: [[0, 2]]"),
    (lambda d: d.update(method="cqr", levels=[0.9], radius=[[0, 0, 0]], q_pairs=[[0, 1]]), "q_pairs must name, per level"),
    (lambda d: d.update(n="7"), "n must be a non-negative integer"),
    (lambda d: d.update(method="aci", grid=[list(range(1001))] * 3, alpha=[[0.2] * 3, [0.1] * 3], gamma="nan"),
     "gamma must be a number in [0, 1)"),
    (lambda d: d.update(method="aci", grid=[list(range(1001))[::-1]] * 3, alpha=[[0.2] * 3, [0.1] * 3], gamma=0.01),
     "grid: every step's scores must be in increasing order"),
])
def test_a_broken_calibration_is_a_one_line_error(run, tmp_path, edit, needle):
    out, _ = run
    bad = tmp_path / "bad"
    shutil.copytree(out / "final", bad)
    raw = json.loads((bad / "intervals.json").read_text())
    edit(raw)
    (bad / "intervals.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="intervals.json") as e:
        Forecaster.from_pretrained(bad)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_server_returns_the_bounds(run):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from test_inference_serve import _rows, running

    from hftraining.core.config import ServeConfig
    from hftraining.inference.serve import create_app

    out, _ = run
    df, rows = _rows()
    with running(create_app(out / "final", ServeConfig())) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = client.post("/predict", json={"symbols": {"AEM": rows}})
    assert r.status_code == 200, r.text
    got = pd.DataFrame(r.json()["forecasts"])
    want = Forecaster.from_pretrained(out / "final").predict({"AEM": df})
    np.testing.assert_allclose(got["lower_90"], want["lower_90"], rtol=1e-6)


def test_an_ensemble_calibrates_its_own_intervals(run, tmp_path):
    from hftraining.inference.ensemble import build_ensemble

    out, _ = run
    other = tmp_path / "other"
    train(load_config(None, tiny(other, "training.max_steps=5", "evaluation.report=false", "training.seed=7",
                                 "model.quantiles=[0.05,0.5,0.95]")))
    ens = build_ensemble([out, other], tmp_path / "ens")
    cal = json.loads((ens / "intervals.json").read_text())
    member = json.loads((out / "final" / "intervals.json").read_text())
    assert cal["levels"] == member["levels"] and cal["radius"] != member["radius"]
    table = Forecaster.from_pretrained(ens).predict("src/hftraining/sample_data/AEM.csv")
    assert (table["lower_90"] < table["forecast_return"]).all()


def test_an_ensemble_of_cqr_members_without_a_shared_quantile_head_says_why(tmp_path):
    """Members with different model.quantiles make an ensemble without a quantile head, which cqr
    intervals are calibrated around: the error says so (it blamed the first member's intervals.json)."""
    from hftraining.inference.ensemble import build_ensemble

    runs = []
    for name, qs in (("a", "[0.05,0.5,0.95]"), ("b", "[0.05,0.25,0.5,0.75,0.95]")):
        runs.append(tmp_path / name)
        train(load_config(None, tiny(runs[-1], "training.max_steps=5", "evaluation.report=false", f"model.quantiles={qs}",
                                     "evaluation.interval_method=cqr", "evaluation.intervals=[0.9]")))
    with pytest.raises(DataError, match="members' model.quantiles differ") as e:
        build_ensemble(runs, tmp_path / "ens")
    assert "\n" not in str(e.value) and not (tmp_path / "ens").exists()


def test_interval_settings_are_checked():
    with pytest.raises(ConfigError, match="cqr at 0.8 needs model.quantiles to hold 0.1 and 0.9"):
        load_config(None, ["evaluation.interval_method=cqr"])
    with pytest.raises(ConfigError, match=r"evaluation.intervals: every level must be in \(0, 1\)"):
        load_config(None, ["evaluation.intervals=[0.8, 1.0]"])
    load_config(None, ["evaluation.interval_method=cqr", "model.quantiles=[0.05,0.1,0.9,0.95]"])


@pytest.mark.parametrize("kind", ["ridge", "dlinear"])
def test_every_model_type_gets_intervals(tmp_path, kind):
    out = tmp_path / kind
    result = train(load_config(None, tiny(out, "training.max_steps=5", "evaluation.report=false", f"model.type={kind}",
                                          "model.moving_avg=5")))
    assert set(result["intervals"]["levels"]) == {"0.8", "0.9"}
    table = Forecaster.from_pretrained(out).predict("src/hftraining/sample_data/AEM.csv")
    assert (table["lower_80"] <= table["forecast_return"]).all() and (table["forecast_return"] <= table["upper_80"]).all()


def test_aci_saves_the_level_it_ended_the_test_dates_with(tmp_path):
    """ACI walks its level over the test dates; the folder keeps the α it ended with, and predict
    uses it (not the level it started from)."""
    from hftraining.models.intervals import Calibration

    out = tmp_path / "aci"
    result = train(load_config(None, tiny(out, "training.max_steps=5", "evaluation.report=false",
                                          "evaluation.interval_method=aci", "evaluation.aci_gamma=0.05")))
    assert result["intervals"]["method"] == "aci"
    cal = Calibration.from_dict(json.loads((out / "final" / "intervals.json").read_text()))
    start = 1 - np.asarray(cal.levels)[:, None]
    assert cal.alpha.shape == (2, 3) and not np.allclose(cal.alpha, start)
    table = Forecaster.from_pretrained(out).predict("src/hftraining/sample_data/AEM.csv")
    half = (table["upper_90"] - table["lower_90"]).to_numpy() / 2
    np.testing.assert_allclose(half, [float(cal.radius_at(cal.alpha[1, h], h)) for h in range(3)], rtol=1e-9)
    # scoring the test split again starts from the nominal level, not from an α that has seen its outcomes
    again, _ = evaluate_model_dir(out)
    assert again["intervals"]["levels"]["0.9"]["coverage_per_step"] == result["intervals"]["levels"]["0.9"]["coverage_per_step"]
