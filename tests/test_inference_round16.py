"""The path to production: an ONNX file, an ensemble folder and the server say what a user serving them needs
(the intervals beside the graph, the symbols members differ in, an ensemble's metrics and card), and a request
the server cannot answer as JSON is refused in one line."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.core.jsonio import write_json
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.models.intervals import Calibration


def _tail(symbol: str, n: int) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / f"{symbol}.csv").tail(n).reset_index(drop=True)


@pytest.fixture(scope="module")
def pre():
    cfg = load_config(None, ["data.symbols=[AEM, WPM]", "data.sequence_length=20", "data.prediction_horizon=3"])
    return prepare(cfg.data).preprocessing


def _model(pre, d, seed: int = 0, **spec):
    torch.manual_seed(seed)
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1, **spec), len(pre.feature_columns),
                pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


@pytest.mark.parametrize("method", ["split", pytest.param("aci", marks=pytest.mark.slow),
                                    pytest.param("cqr", marks=pytest.mark.slow)])
def test_an_onnx_file_carries_the_intervals_predict_and_serve_give(pre, tmp_path, method):
    """The model folder serves conformal intervals (lower_80/upper_80 ...), the ONNX file exported from it had
    nothing of them: a user serving the graph lost the band with no word said. Now the file's metadata
    ``hftraining.intervals`` holds each level's radius per step and the rule; applied to the graph's own
    outputs it gives the bounds the folder's calibration gives (aci at its saved miss rate, cqr around the
    quantile pair; a level the calibration cannot bound is null), and a model without intervals says null."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from hftraining.inference.export import example_inputs, export_onnx, onnx_session

    qs = [0.005, 0.05, 0.1, 0.5, 0.9, 0.95, 0.995]
    d = _model(pre, tmp_path / "m", quantiles=qs)
    plain = export_onnx(d, tmp_path / "plain.onnx", check=False)
    meta = {p.key: p.value for p in onnx.load(str(plain)).metadata_props}
    assert json.loads(meta["hftraining.intervals"]) is None  # no intervals.json: said, not left to guess
    rng = np.random.default_rng(0)
    H = pre.horizon
    pred, true = rng.normal(0, 0.01, (40, H)), rng.normal(0, 0.02, (40, H))
    quant = np.sort(rng.normal(0, 0.02, (40, H, len(qs))), axis=-1)
    cal = Calibration.fit(pred, true, [0.8, 0.9, 0.99], method, gamma=0.01, quantiles=quant, q_levels=qs)
    if method == "aci":  # walked away from the nominal α, as a run saves it after its test split
        cal.alpha = cal.alpha * np.array([[0.5], [1.5], [1.0]])
    write_json(d / "intervals.json", cal.to_dict())
    out = export_onnx(d, tmp_path / "m.onnx", check=False)
    got = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["hftraining.intervals"])
    assert got["method"] == method and got["levels"] == [0.8, 0.9, 0.99] and got["calibration_windows"] == 40
    assert got["columns"] == [["lower_80", "upper_80"], ["lower_90", "upper_90"], ["lower_99", "upper_99"]]
    assert got["radius"][2] == [None] * H  # 40 windows cannot bound 99%: unbounded, as predict says
    fc = Forecaster.from_pretrained(d)
    x, past = example_inputs(fc, batch=5, seed=3)
    res = dict(zip([o.name for o in onnx_session(out).get_outputs()],
                   onnx_session(out).run(None, {"x": x.numpy(), "past": past.numpy()})))
    p, q = res["prediction"].astype(np.float64), res["quantiles"].astype(np.float64)
    want = fc.calibration.bounds(p, q)
    for k, level in enumerate(got["levels"]):
        r = np.array([np.inf if v is None else v for v in got["radius"][k]])
        if got["around"] == "quantiles":
            lo_i, hi_i = got["quantile_indices"][k]
            lo, hi = q[..., lo_i] - r, q[..., hi_i] + r
            with np.errstate(invalid="ignore"):
                mid = (lo + hi) / 2
            lo, hi = np.where(lo > hi, mid, lo), np.where(lo > hi, mid, hi)
        else:
            lo, hi = p - r, p + r
        np.testing.assert_allclose(lo, want[level][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(hi, want[level][1], rtol=0, atol=1e-12)
    if method == "aci":  # not the nominal radius: the saved α's
        assert got["radius"][0] != [float(v) for v in cal.radius[0]]


def test_ensemble_members_trained_on_other_symbols_are_refused_naming_the_symbols(pre, tmp_path):
    """Members trained on other symbols were refused as "key 'scaler' differs", which said nothing of why. Now
    the one line names the symbols one member was trained on and the first was not, and those it lacks."""
    from hftraining.core.errors import DataError
    from hftraining.inference.ensemble import build_ensemble

    other = prepare(load_config(None, ["data.symbols=[AEM, ARM]", "data.sequence_length=20",
                                       "data.prediction_horizon=3"]).data).preprocessing
    a, b = _model(pre, tmp_path / "a"), _model(other, tmp_path / "b", seed=1)
    with pytest.raises(DataError) as e:
        build_ensemble([a, b], tmp_path / "ens")
    assert str(e.value) == (f"{b}: trained on ARM, which {a} was not and not on WPM, which {a} was "
                            "(preprocessing.json: source_rows); ensemble members must be trained on the same symbols "
                            "(their scaler and target scale are fit on those symbols' rows)")
    assert not (tmp_path / "ens").exists()


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """A tiny ``train --seeds 2`` run folder (seed-0/, seed-1/, ensemble/)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny

    from hftraining.cli import main

    root = tmp_path_factory.mktemp("seeds") / "run"
    assert main(["train", "--seeds", "2", *tiny(root, "model.hidden_size=8", "training.max_steps=2",
                                                "evaluation.eval_steps=1", "evaluation.report=false",
                                                "evaluation.baseline_max_windows=200")]) == 0
    return root


@pytest.mark.slow
def test_the_model_endpoint_of_a_seeds_run_serves_each_seed_s_metrics(seeds_run):
    """``serve`` of a ``train --seeds`` folder serves its ensemble, whose ``GET /model`` had
    ``training_metrics: {}``: the seeds' test and validation figures were nowhere in it. Now one entry per
    member: where it was copied from, its test figures (those of its run's eval.json, the verdict included)
    and its run's last validation record, recorded as the ensemble was built."""
    from fastapi.testclient import TestClient

    from hftraining.core.jsonio import read_jsonl
    from hftraining.inference.serve import create_app

    with TestClient(create_app(seeds_run)) as client:
        got = client.get("/model").json()["training_metrics"]
    assert [m["member"] for m in got["members"]] == ["members/member-0", "members/member-1"]
    for k, m in enumerate(got["members"]):
        run = seeds_run / f"seed-{k}"
        ev = json.loads((run / "eval.json").read_text())
        assert m["source"] == str(run / "final") and m["validation_mse"] is None  # a mean ensemble measures none
        assert m["test"]["verdict"] == ev["verdict"] and m["test"]["mse_vs_zero"] == ev["mse_vs_zero"]
        assert m["test"]["model"]["mse"] == ev["model"]["mse"] and m["test"]["n_windows"] == ev["n_windows"]
        assert m["validation"] == [r for r in read_jsonl(run / "metrics.jsonl") if "eval_mse" in r][-1]
    assert got["members"][0]["test"]["mse_vs_zero"] != got["members"][1]["test"]["mse_vs_zero"]  # each its own


@pytest.mark.slow
def test_an_ensemble_folder_describes_itself_and_carries_its_members_data_report(seeds_run, pre, tmp_path):
    """An ensemble folder had no README.md of its own (only each member's copied card, describing the run
    folder it came from) and no data_report.json. Now its README names its method, members, weights and the
    folders they were copied from, and says what each member's card is; the data report the members' runs
    share is copied beside it. Members that are not runs' get a README that says why there is no report."""
    from hftraining.inference.ensemble import build_ensemble

    ens = seeds_run / "ensemble"
    card = (ens / "README.md").read_text()
    assert "# An ensemble of 2 models (mean)" in card and "model_type: ensemble" in card
    for k in range(2):
        assert f"| `members/member-{k}` | transformer | — | — | `{seeds_run / f'seed-{k}' / 'final'}` |" in card
    assert "Each `members/member-<k>/README.md` is the model card of the run that member was copied from" in card
    assert "- Intervals: split at 0.8, 0.9" in card and "`seeds.json` holds each seed's test figures" in card
    assert json.loads((ens / "data_report.json").read_text()) == json.loads((seeds_run / "seed-0" / "data_report.json").read_text())
    a, b = _model(pre, tmp_path / "a"), _model(pre, tmp_path / "b", seed=1, type="dlinear", moving_avg=5)
    out = build_ensemble([a, b], tmp_path / "ens", "median")
    card = (out / "README.md").read_text()
    assert "# An ensemble of 2 models (median)" in card and f"| `members/member-1` | dlinear | — | — | `{b}` |" in card
    assert f"- Data report: none ({a} is not a run's model" in card and not (out / "data_report.json").exists()


def _run(pre, root, seed: int, mse_vs_zero: float, report: dict):
    """A run folder as training leaves one (config.json, final/, eval.json, metrics.jsonl, data_report.json)
    around a seeded untrained model."""
    _model(pre, root / "final", seed=seed)
    (root / "config.json").write_text("{}")
    (root / "eval.json").write_text(json.dumps({"split": "test", "n_windows": 416, "mse_vs_zero": mse_vs_zero,
                                                "model": {"mse": mse_vs_zero / 1000}, "verdict": f"verdict {seed}"}))
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 1, "eval_mse": 2.0 + seed}, {"step": 2, "loss": 0.5}, {"step": 2, "eval_mse": 1.0 + seed})))
    (root / "data_report.json").write_text(json.dumps(report))
    return root


def test_an_ensemble_of_runs_serves_its_members_metrics_and_describes_itself(pre, tmp_path):
    """An ensemble folder is served apart from the runs its members were copied from: ``GET /model`` had
    ``training_metrics: {}``, the folder had no README.md of its own (only each member's copied card,
    describing the run folder it came from) and no data report. Now ``training_metrics.members`` holds each
    member's source and its run's test figures and last validation record, recorded as it was built (a copy of
    the folder serves them too); its README names the method, members and their sources and says what each
    member's card is; the data report the runs share (but for how they read it) is beside it."""
    from fastapi.testclient import TestClient

    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.serve import create_app

    report = {"symbols": ["AEM", "WPM"], "windows": {"train": 10}, "cache": "miss"}
    a = _run(pre, tmp_path / "a", 0, 1.05, report)
    b = _run(pre, tmp_path / "b", 1, 0.97, {**report, "cache": "hit"})  # read from the feature store: the same data
    ens = build_ensemble([a, b], tmp_path / "ens")
    moved = ens.rename(tmp_path / "moved")  # served apart from the runs
    with TestClient(create_app(moved)) as client:
        got = client.get("/model").json()["training_metrics"]
    assert got == {"members": [
        {"member": f"members/member-{k}", "source": str(r / "final"), "validation_mse": None,
         "test": {"split": "test", "n_windows": 416, "model": {"mse": m / 1000}, "mse_vs_zero": m, "verdict": f"verdict {k}"},
         "validation": {"step": 2, "eval_mse": 1.0 + k}} for k, (r, m) in enumerate(((a, 1.05), (b, 0.97)))]}
    card = (moved / "README.md").read_text()
    assert "# An ensemble of 2 models (mean)" in card and "model_type: ensemble" in card
    assert f"| `members/member-1` | transformer | — | — | `{b / 'final'}` |" in card
    assert "Each `members/member-<k>/README.md` is the model card of the run that member was copied from" in card
    assert json.loads((moved / "data_report.json").read_text()) == report
    (b / "data_report.json").write_text(json.dumps({**report, "windows": {"train": 11}}))  # other data
    other = build_ensemble([a, b], tmp_path / "other")
    assert not (other / "data_report.json").exists()
    assert f"- Data report: none (the members' runs read other data ({a / 'data_report.json'} and " in (other / "README.md").read_text()


@pytest.fixture(scope="module")
def served(pre, tmp_path_factory):
    from fastapi.testclient import TestClient

    from hftraining.core.config import ServeConfig
    from hftraining.inference.serve import create_app

    d = _model(pre, tmp_path_factory.mktemp("served") / "m")
    with TestClient(create_app(d, ServeConfig(max_symbols=2, max_rows=300))) as client:
        yield client


def _bars(symbol: str, n: int) -> list[dict]:
    return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in _tail(symbol, n).itertuples()]


def test_a_json_request_without_the_json_content_type_is_told_so(served):
    """``curl -d @request.json`` sends application/x-www-form-urlencoded; FastAPI reads a body as JSON only under
    a JSON Content-Type, and the answer was "body: Input should be a valid dictionary or object to extract fields
    from", naming neither the header nor what to send. Now a 415 naming the Content-Type sent and the header to
    set; a JSON body that is no object says what it is; the same request with the header is forecast."""
    body = json.dumps({"symbols": {"AEM": _bars("AEM", 120)}}).encode()
    for sent in ("application/x-www-form-urlencoded", "text/plain", None):
        r = served.post("/predict", content=body, headers={} if sent is None else {"content-type": sent})
        assert r.status_code == 415, r.text
        assert r.json() == {"error": f"body: Content-Type {sent or 'missing'}, not application/json: send the request "
                                     "as JSON with that header (curl -H 'Content-Type: application/json' -d @request.json)"}
    r = served.post("/predict", json=[{"symbols": {}}])
    assert r.status_code == 422 and r.json()["error"] == 'body: expected a JSON object {"symbols": {SYMBOL: [rows]}}, got an array'
    for sent in ("application/json", "application/json; charset=utf-8"):
        r = served.post("/predict", content=body, headers={"content-type": sent})
        assert r.status_code == 200 and len(r.json()["forecasts"]) == 3


def test_a_request_beyond_a_limit_is_the_413_of_the_limit_whatever_else_is_wrong(served):
    """A request of more symbols (or rows) than the server's limit with one bad row was answered 422 naming the
    row; once the row was fixed the same request was a 413. The limit is said first, as for a valid request."""
    bad = {"timestamp": "2026-01-02", "close": "x", "volume": 1}
    over = {"symbols": {"AEM": _bars("AEM", 60), "WPM": [bad], "ARM": _bars("ARM", 60)}}
    r = served.post("/predict", json=over)
    assert (r.status_code, r.json()) == (413, {"error": "symbols: 3 symbols exceeds the limit of 2 (serve.max_symbols, "
                                                        "--max-symbols)"})
    rows = {"symbols": {"AEM": _bars("AEM", 200), "WPM": [*_bars("WPM", 150)[:-1], bad]}}
    r = served.post("/predict", json=rows)
    assert (r.status_code, r.json()) == (413, {"error": "request: 350 rows exceeds the limit of 300 (serve.max_rows, "
                                                        "--max-rows)"})
    r = served.post("/predict", json={"symbols": {"AEM": _bars("AEM", 100), "WPM": [bad]}})  # within them: the row
    assert r.status_code == 422 and r.json()["error"] == "symbols.WPM[0].close: Input should be a valid number"
