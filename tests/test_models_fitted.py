"""Ridge: a registered model fitted in closed form through the same path as every model, and the
fitted baseline every evaluation puts beside the model; the verdict names the strongest baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import DataConfig, ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.eval.forecasts import verdict
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model, model_names
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.train_run import train


@pytest.fixture(scope="module")
def data():
    return prepare(DataConfig(symbols=["AEM", "WPM", "NIO"], sequence_length=20, prediction_horizon=3))


def _design(ws, lags):
    """The ridge design rows computed independently: last row's features, last ``lags`` returns, 1."""
    b = ws.batch(np.arange(len(ws)))
    past = b["past"].numpy()[:, -lags:]
    if "mask" in b:
        past = np.where(b["mask"].numpy()[:, -lags:], past, 0.0)
    return np.c_[b["x"].numpy()[:, -1, :], past, np.ones(len(ws))].astype(np.float64), b["y"].numpy().astype(np.float64)


def test_ridge_is_the_closed_form_solution_with_the_penalty_chosen_on_validation(data):
    cfg = ModelConfig(type="ridge", ridge_lags=5, ridge_lambdas=[1e-4, 1.0, 1e4])
    m = build_model(cfg, data.train.features.shape[1], 3, 20)
    fit = m.fit_windows(data.train, data.val)
    A, Y = _design(data.train, 5)
    Av, Yv = _design(data.val, 5)
    scale = np.diag(A.T @ A)[:-1].mean()
    pen = np.eye(A.shape[1])
    pen[-1, -1] = 0.0  # the bias is not penalised
    sols = {lam: np.linalg.solve(A.T @ A + lam * scale * pen, A.T @ Y) for lam in cfg.ridge_lambdas}
    val_mse = {lam: float(((Av @ W - Yv) ** 2).mean()) for lam, W in sols.items()}
    best = min(val_mse, key=val_mse.get)
    assert fit["penalty"] == best and fit["val_mse"] == pytest.approx(val_mse[best], rel=1e-6)
    np.testing.assert_allclose(m.weight.numpy(), sols[best], rtol=1e-4, atol=1e-6)
    # the huge penalty shrinks to the mean: the choice is real (the three fits differ on val)
    assert len({round(v, 12) for v in val_mse.values()}) == 3
    assert "ridge" in model_names()


def test_ridge_forecasts_in_fp32_under_a_bf16_autocast(data):
    # the map is fitted in float64 and its penalty chosen on fp32 forecasts; a bf16 run predicts
    # under autocast, which rounded the matmul to bf16 (~0.4% of the forecast, ties across symbols)
    import torch

    m = build_model(ModelConfig(type="ridge", ridge_lags=5), data.train.features.shape[1], 3, 20)
    m.fit_windows(data.train, data.val)
    b = data.val.batch(np.arange(min(len(data.val), 256)))
    with torch.no_grad():
        ref = m(b["x"], b.get("mask"), b["past"]).prediction
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(b["x"], b.get("mask"), b["past"]).prediction
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_ridge_trains_saves_loads_and_forecasts_through_the_common_path(tmp_path):
    run = tmp_path / "run"
    result = train(load_config(None, tiny(run, "model.type=ridge", "training.max_steps=5", "evaluation.report=false")))
    assert (run / "final" / "model.safetensors").exists() and result["model"]["mse"] > 0
    f = Forecaster.from_pretrained(run)
    assert float(f.model.penalty) in ModelConfig().ridge_lambdas  # the fitted state came back from safetensors
    table = f.predict(str(sample_data_dir() / "AEM.csv"))
    assert len(table) == 3 and np.isfinite(table["forecast_return"]).all()
    again, _ = evaluate_model_dir(run)
    assert again["model"]["mse"] == result["model"]["mse"]
    # ridge as the model equals ridge as the fitted baseline: same fit, same windows
    assert result["baselines"]["ridge"]["mse"] == pytest.approx(result["model"]["mse"], rel=1e-9)


def test_every_evaluation_has_the_fitted_baseline_and_names_the_strongest(tmp_path, capsys):
    run = tmp_path / "run"
    result = train(load_config(None, tiny(run, "training.max_steps=6", "evaluation.eval_steps=3", "evaluation.report=false")))
    assert "ridge" in result["baselines"] and "ridge" in result["dm"]
    best = min(result["baselines"], key=lambda k: result["baselines"][k]["mse"])
    sb = result["strongest_baseline"]
    assert sb["name"] == best and sb["mse_ratio"] == pytest.approx(result["model"]["mse"] / result["baselines"][best]["mse"])
    assert sb["dm"] == result["dm"][best]
    assert f"strongest baseline {'fitted' if best == 'ridge' else 'naive'}:{best}" in result["verdict"]
    assert (run / "baselines" / "ridge" / "model.safetensors").exists()
    # evaluate reads the saved fitted baseline back and scores exactly what training scored
    assert main(["evaluate", str(run), "--json", "--no-report"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["baselines"]["ridge"]["mse"] == result["baselines"]["ridge"]["mse"]
    assert got["verdict"] == result["verdict"]


def _result(model_mse, base_mse, p_zero, p_best, best="ridge"):
    sign = lambda ratio: -2.0 if ratio < 1 else 2.0  # noqa: E731  the DM statistic's sign follows the MSE ratio
    return {"mse_vs_zero": model_mse / 1.0, "dm_vs_zero": {"p_value": p_zero, "statistic": sign(model_mse)},
            "strongest_baseline": {"name": best, "mse": base_mse, "mse_ratio": model_mse / base_mse,
                                   "dm": {"p_value": p_best, "statistic": sign(model_mse / base_mse)}}}


@pytest.mark.parametrize("model_mse, base_mse, p_best, words", [
    (0.90, 0.95, 0.001, "the model beats the strongest baseline (significant at 0.05)"),
    (0.97, 0.95, 0.001, "fitted:ridge is significantly better, so the model is not worth its cost"),
    (0.94, 0.95, 0.40, "no significant difference, so the model is not worth its cost over fitted:ridge"),
])
def test_the_verdict_compares_against_the_strongest_baseline(model_mse, base_mse, p_best, words):
    text = verdict(_result(model_mse, base_mse, 0.001, p_best))
    assert text.startswith("model MSE / zero-forecast MSE = ") and "beats the zero-return forecast" in text
    assert text.endswith(words)
    assert "strongest baseline naive:drift" in verdict(_result(0.97, 0.95, 0.001, 0.001, best="drift"))


def test_lightgbm_fits_per_step_early_stopped_and_reloads_without_pickle(data, tmp_path):
    import lightgbm as lgb

    from hftraining.models import ForecastModel
    from hftraining.models.predict import predict_scaled

    cfg = ModelConfig(type="lightgbm", ridge_lags=5, lightgbm_num_leaves=7, lightgbm_learning_rate=0.1,
                      lightgbm_min_data_in_leaf=40, lightgbm_feature_fraction=0.9, lightgbm_bagging_fraction=0.7,
                      lightgbm_lambda_l2=2.0, lightgbm_rounds=200, lightgbm_early_stopping=10)
    m = build_model(cfg, data.train.features.shape[1], 3, 20)
    fit = m.fit_windows(data.train, data.val)
    assert len(m.boosters) == 3 and 1 <= fit["rounds"] <= 200
    assert "[num_leaves: 7]" in m.boosters[0].model_to_string()
    # each step's booster is what LightGBM fits on the same design matrix with the model.lightgbm_* settings
    A, Y = _design(data.train, 5)
    Av, Yv = _design(data.val, 5)
    params = {"objective": "regression", "learning_rate": 0.1, "num_leaves": 7, "min_data_in_leaf": 40,
              "feature_fraction": 0.9, "bagging_fraction": 0.7, "bagging_freq": 1, "lambda_l2": 2.0, "num_threads": 2,
              "seed": 0, "deterministic": True, "force_row_wise": True, "verbosity": -1}
    ref = lgb.train(params, lgb.Dataset(A[:, :-1], Y[:, 0]), num_boost_round=200,
                    valid_sets=[lgb.Dataset(Av[:, :-1], Yv[:, 0])], callbacks=[lgb.early_stopping(10, verbose=False)])
    np.testing.assert_allclose(m.boosters[0].predict(Av[:, :-1]), ref.predict(Av[:, :-1], num_iteration=ref.best_iteration),
                               rtol=1e-6, atol=1e-9)
    before = predict_scaled(m, data.test, 256)
    m.save_pretrained(tmp_path / "gbm", preprocessing=data.preprocessing.to_dict())
    assert sorted(p.name for p in (tmp_path / "gbm").iterdir()) == ["config.json", "model.safetensors", "preprocessing.json"]
    again = ForecastModel.from_pretrained(tmp_path / "gbm")
    np.testing.assert_array_equal(predict_scaled(again, data.test, 256), before)


@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_lightgbm_export_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("onnx")
    run = tmp_path / "run"
    train(load_config(None, tiny(run, "model.type=lightgbm", "training.max_steps=5", "evaluation.report=false")))
    assert "lightgbm" in json.loads((run / "eval.json").read_text())["baselines"]  # fitted beside it too
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "model.type 'lightgbm' has no ONNX graph" in capsys.readouterr().err


@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_fitted_models_ensemble_and_forecast_like_any_model(tmp_path):
    from hftraining.inference.ensemble import build_ensemble

    runs = []
    for kind in ("ridge", "lightgbm"):
        runs.append(tmp_path / kind)
        train(load_config(None, tiny(runs[-1], f"model.type={kind}", "training.max_steps=5", "evaluation.report=false")))
    ens = build_ensemble(runs, tmp_path / "ens", "mean")
    path = str(sample_data_dir() / "AEM.csv")
    got = Forecaster.from_pretrained(ens).predict(path)["forecast_return"].to_numpy()
    each = [Forecaster.from_pretrained(r).predict(path)["forecast_return"].to_numpy() for r in runs]
    np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5, atol=1e-9)
