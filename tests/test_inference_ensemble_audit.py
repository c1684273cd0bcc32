"""Ensembles forecast what their members' combination means: class probabilities of one set of classes,
weights and intervals from the forecasts the members and the ensemble make (their precision; ACI's α as a
run saves it), members of another label refused naming it, a weighted folder without weights refused, and
an ONNX file that says what its classes are."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import apply, prepare
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.models.intervals import calibrate_windows


def model_dir(path, seed=0, data=("data.symbols=[AEM]",), **model):
    """A model folder with real preprocessing (``data`` overrides) and random weights (seed ``seed``)."""
    cfg = load_config(None, ["data.sequence_length=16", "data.prediction_horizon=2", "data.cache_dir=null", *data])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(seed)
    m = build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1, **model), len(pre.feature_columns),
                    pre.horizon, pre.seq_len)
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


CLASSES = ["p_sell", "p_hold", "p_buy"]


def test_members_with_other_classification_thresholds_forecast_no_class_probabilities(tmp_path, caplog):
    """A member whose buy class is a return above 0.5% and one whose buy class is above 5% forecast
    probabilities of different events: their average was served as p_buy of neither, silently."""
    a = model_dir(tmp_path / "a", 0, classification_threshold=0.005)
    b = model_dir(tmp_path / "b", 1, classification_threshold=0.05)
    same = model_dir(tmp_path / "c", 2, classification_threshold=0.005)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ens = build_ensemble([a, b], tmp_path / "ens")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("classification_threshold" in m and "0.05" in m and str(b) in m for m in warned), warned
    data = str(sample_data_dir() / "AEM.csv")
    fc = Forecaster.from_pretrained(ens)
    assert not fc.has_classes
    table = fc.predict(data)
    assert not set(CLASSES) & set(table.columns)
    alone = [Forecaster.from_pretrained(d).predict(data) for d in (a, b)]
    np.testing.assert_allclose(table["forecast_return"], (alone[0]["forecast_return"] + alone[1]["forecast_return"]) / 2,
                               rtol=1e-5, atol=1e-8)  # the points still combine
    # members of one threshold: their probabilities average, as before
    both = Forecaster.from_pretrained(build_ensemble([a, same], tmp_path / "ens-same"))
    assert both.has_classes
    probs = [Forecaster.from_pretrained(d).predict(data)[CLASSES].to_numpy() for d in (a, same)]
    np.testing.assert_allclose(both.predict(data)[CLASSES].to_numpy(), (probs[0] + probs[1]) / 2, rtol=1e-5)


def test_an_ensemble_of_a_bf16_run_and_its_copy_calibrates_the_run_s_intervals(tmp_path):
    """The ensemble forecasts in its members' precision (bf16 here) but calibrated its conformal intervals
    on fp32 forecasts: an ensemble of a run and its own copy had other intervals than the run."""
    run = bf16_run(tmp_path / "run", 0)
    member = Forecaster.from_pretrained(run)
    assert member.precision == "bf16"
    pre = member.preprocessing
    # the run's calibration (train_run's): its validation windows, forecast in its precision
    cal = calibrate_windows(member.model, apply(pre, None, "val"), pre.target_scale, [0.8, 0.9], "split", 0.0,
                            pre.data_config().eval_batch_size, precision="bf16")
    (run / "final" / "intervals.json").write_text(json.dumps(cal.to_dict()))
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    ens = build_ensemble([run, twin], tmp_path / "ens")
    assert Forecaster.from_pretrained(ens).precision == "bf16"
    got = json.loads((ens / "intervals.json").read_text())
    assert got["radius"] == cal.to_dict()["radius"]
    data = str(sample_data_dir() / "AEM.csv")
    one, two = Forecaster.from_pretrained(run).predict(data), Forecaster.from_pretrained(ens).predict(data)
    for col in ("forecast_return", "lower_80", "upper_80", "lower_90", "upper_90"):
        np.testing.assert_array_equal(two[col], one[col], err_msg=col)


def test_members_of_another_label_are_refused_naming_data_target(tmp_path, capsys):
    """A member trained on cross-sectional ranks beside one trained on returns was refused for its target
    scale, with "train them on the same data": they were; the label differs, and the error now says so."""
    from hftraining.cli import main

    pair = ("data.symbols=[AEM, WPM]",)
    a = model_dir(tmp_path / "ret", 0, pair)
    b = model_dir(tmp_path / "rank", 1, (*pair, "data.target=cs_rank"))
    capsys.readouterr()  # the training's log
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.target" in err and "'cs_rank' vs 'return'" in err, err
    assert not (tmp_path / "ens").exists()


def bf16_run(path, seed):
    """A run folder (config.json + final/) of a model of random weights trained, says its config, in bf16."""
    model_dir(path / "final", seed)
    (path / "config.json").write_text(json.dumps({"training": {"precision": "bf16"}}))
    return path


def test_a_weighted_ensemble_of_bf16_runs_weighs_them_by_their_own_validation_scores(tmp_path):
    """``weighted``: weights ∝ 1 / each member's validation MSE, which its own ``evaluate --split val`` scores
    in its run's precision; the build scored it in fp32 (6e-5 apart here), so the weights were of other scores."""
    from hftraining.workflows.evaluate_run import evaluate_model_dir, evaluation_config

    runs = [bf16_run(tmp_path / f"run{k}", k) for k in range(2)]
    ens = build_ensemble(runs, tmp_path / "ens", method="weighted")
    meta = json.loads((ens / "ensemble.json").read_text())
    own = np.array([evaluate_model_dir(r, split="val", ev=evaluation_config(r, ["evaluation.max_test_windows=null"]))[0]
                    ["model"]["mse"] for r in runs])
    np.testing.assert_allclose(meta["validation_mse"], own, rtol=1e-9)
    np.testing.assert_allclose(meta["weights"], (1 / own) / (1 / own).sum(), rtol=1e-9)


def test_an_ensemble_s_aci_intervals_adapt_over_the_test_period_as_a_run_s(tmp_path):
    """A run saves its ACI calibration with α walked over the test windows' outcomes (what the next forecast
    uses); the ensemble saved the nominal α of before them: an ensemble of a run and its copy served the
    intervals ACI had found too narrow (80% step-2 width 0.045 against the run's 0.187 on a tiny run)."""
    from hftraining.eval.intervals import forecast_intervals, outcome_times
    from hftraining.models.predict import predict_scaled

    run = tmp_path / "run"
    model_dir(run / "final", 0)
    member = Forecaster.from_pretrained(run)
    pre, ts = member.preprocessing, member.preprocessing.target_scale
    # what train does: calibrate on the validation windows, walk α over the test windows, save
    cal = calibrate_windows(member.model, apply(pre, None, "val"), ts, [0.8, 0.9], "aci", 0.05, 256)
    test = apply(pre, None, "test")
    pred = predict_scaled(member.model, test, 256).astype(np.float64) * ts
    _, cal = forecast_intervals(cal, pred, test.targets().astype(np.float64) * ts, test.times.astype(np.int64),
                                known=outcome_times(test))
    nominal = np.tile([[0.2], [0.1]], (1, pre.horizon))
    assert np.abs(cal.alpha - nominal).max() > 0.01  # the test period moved α
    (run / "final" / "intervals.json").write_text(json.dumps(cal.to_dict()))
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    ens = build_ensemble([run, twin], tmp_path / "ens")
    np.testing.assert_allclose(json.loads((ens / "intervals.json").read_text())["alpha"], cal.alpha, rtol=0, atol=1e-12)
    data = str(sample_data_dir() / "AEM.csv")
    one, two = Forecaster.from_pretrained(run).predict(data), Forecaster.from_pretrained(ens).predict(data)
    for col in ("lower_80", "upper_80", "lower_90", "upper_90"):
        np.testing.assert_allclose(two[col], one[col], rtol=0, atol=1e-12, err_msg=col)


def test_the_onnx_file_names_the_threshold_of_its_classes(tmp_path):
    """``class_probs`` are sell/hold/buy at ± ``model.classification_threshold``: without it in the metadata,
    a consumer of the file alone could not say what a buy probability is the probability of."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from hftraining.inference.export import export_onnx

    a = model_dir(tmp_path / "a", 0, classification_threshold=0.0125)
    b = model_dir(tmp_path / "b", 1, classification_threshold=0.0125)
    ens = build_ensemble([a, b], tmp_path / "ens")
    out = export_onnx(ens, tmp_path / "ens.onnx", check=False)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "class_probs" in json.loads(meta["hftraining.outputs"])
    assert json.loads(meta["hftraining.classification_threshold"]) == 0.0125


def test_a_weighted_ensemble_without_its_weights_is_an_error_not_a_mean(tmp_path, capsys):
    """ensemble.json of method ``weighted`` whose weights were removed forecast the plain mean of its
    members, silently: the folder said weighted and served another ensemble."""
    from hftraining.cli import main
    from hftraining.core.errors import DataError

    dirs = [model_dir(tmp_path / f"m{k}", k) for k in range(2)]
    ens = build_ensemble(dirs, tmp_path / "ens")
    meta = json.loads((ens / "ensemble.json").read_text())
    meta.update(method="weighted", weights=None)
    (ens / "ensemble.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"ensemble\.json: method 'weighted' needs weights"):
        Forecaster.from_pretrained(ens)
    capsys.readouterr()  # the training's log
    assert main(["predict", str(ens), "--data", str(sample_data_dir() / "AEM.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights" in err, err
    meta["weights"] = [0.25, 0.75]  # with them it loads and weighs its members by them
    (ens / "ensemble.json").write_text(json.dumps(meta))
    assert Forecaster.from_pretrained(ens).model.weights.tolist() == [0.25, 0.75]
