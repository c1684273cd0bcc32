"""Multi-seed training and ensemble folders: load and predict like one model."""

import json
import shutil

import numpy as np
import pytest
import torch

from hftraining.cli import main
from hftraining.data.io import sample_data_dir
from hftraining.core.errors import DataError
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.evaluate_run import evaluate_model_dir, evaluation_config
from conftest import tiny  # noqa: E402

TINY = tiny(None, "model.hidden_size=8", "model.quantiles=[0.1, 0.9]", "model.classification_threshold=0.005",
            "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=4", "training.save_steps=0",
            "evaluation.eval_steps=0")


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds") / "run"
    assert main(["train", "--seeds", "3", *TINY, f"output.output_dir={root}"]) == 0
    return root


def test_seeds_train_distinct_members_and_a_mean_ensemble(seeds_run):
    for k in range(3):
        assert (seeds_run / f"seed-{k}" / "final" / "model.safetensors").exists()
        saved = json.loads((seeds_run / f"seed-{k}" / "config.json").read_text())
        assert saved["training"]["seed"] == 42 + k
    meta = json.loads((seeds_run / "ensemble" / "ensemble.json").read_text())
    assert meta["method"] == "mean" and len(meta["members"]) == 3
    members = [Forecaster.from_pretrained(seeds_run / f"seed-{k}") for k in range(3)]
    w0 = next(iter(members[0].model.state_dict().values()))
    w1 = next(iter(members[1].model.state_dict().values()))
    assert not torch.equal(w0, w1)  # different seeds, different weights


@pytest.mark.parametrize("method", ["mean", "median", "weighted"])
def test_ensemble_predicts_the_combination_of_its_members(seeds_run, tmp_path, method):
    dirs = [seeds_run / f"seed-{k}" for k in range(3)]
    out = tmp_path / f"ens-{method}"
    assert main(["ensemble", *map(str, dirs), "--out", str(out), "--method", method]) == 0
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    ens = Forecaster.from_pretrained(out)
    data = str(sample_data_dir() / "AEM.csv")
    tables = [Forecaster.from_pretrained(d).predict(data) for d in dirs]
    got = ens.predict(data)
    preds = np.stack([t["forecast_return"].to_numpy() for t in tables])  # (M, H)
    meta = json.loads((out / "ensemble.json").read_text())
    if method == "mean":
        want = preds.mean(axis=0)
    elif method == "median":
        want = np.median(preds, axis=0)
    else:
        w = np.asarray(meta["weights"])
        assert w.sum() == pytest.approx(1.0) and len(meta["validation_mse"]) == 3
        # weights ∝ 1 / each member's validation MSE (log-return units, every window of the validation
        # split of the training data), scored here by `evaluate --split val` on the member alone
        val_mse = np.array([evaluate_model_dir(d, split="val", ev=evaluation_config(d, ["evaluation.max_test_windows=null"]))[0]
                            ["model"]["mse"] for d in dirs])
        assert len(set(val_mse.tolist())) == 3  # distinct members: the weights are not uniform by accident
        np.testing.assert_allclose(meta["validation_mse"], val_mse, rtol=1e-5)
        np.testing.assert_allclose(w, (1 / val_mse) / (1 / val_mse).sum(), rtol=1e-5)
        want = (w[:, None] * preds).sum(axis=0)
    np.testing.assert_allclose(got["forecast_return"], want, rtol=1e-5, atol=1e-8)
    probs = np.stack([t[["p_sell", "p_hold", "p_buy"]].to_numpy() for t in tables])
    pw = np.asarray(meta["weights"])[:, None, None] if method == "weighted" else np.full((3, 1, 1), 1 / 3)
    np.testing.assert_allclose(got[["p_sell", "p_hold", "p_buy"]].to_numpy(), (probs * pw).sum(axis=0), rtol=1e-5)
    assert {"return_q0.1", "return_q0.9"} <= set(got.columns)


def test_evaluate_reports_the_ensemble_beside_its_members(seeds_run):
    res, _ = evaluate_model_dir(seeds_run / "ensemble", split="val")
    assert set(res["members"]) == {"member-0", "member-1", "member-2"}
    assert all("mse" in m for m in res["members"].values())
    # the mean forecast's MSE is at most the members' mean MSE (convexity of the squared error)
    assert res["model"]["mse"] <= np.mean([m["mse"] for m in res["members"].values()]) + 1e-12


def test_members_must_share_their_loss(seeds_run, tmp_path):
    """A member trained with a scale-free loss (the IC's) forecasts on its own scale: averaged with an MSE
    member, the larger scale would win, silently."""
    other = tmp_path / "ic"
    shutil.copytree(seeds_run / "seed-1" / "final", other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["model"]["loss"] = "ic"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"model.loss=ic.*model.loss=mse"):
        build_ensemble([seeds_run / "seed-0", other], tmp_path / "ens")
    assert not (tmp_path / "ens").exists()


def test_members_must_share_preprocessing(seeds_run, tmp_path):
    other = tmp_path / "other"
    assert main(["train", *TINY, "data.sequence_length=12", f"output.output_dir={other}"]) == 0
    with pytest.raises(DataError, match="seq_len.*differs"):
        build_ensemble([seeds_run / "seed-0", other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("weights", [[1e308, 1e308], [1e-42, 3e-42]])
def test_weights_of_any_finite_size_combine_as_their_shares(weights):
    """ensemble.json's weights are finite numbers >= 0, not all 0 (checked as it is read); their
    shares weight the members however large or small they are (in float32 1e308 is inf, 1e-42 a
    denormal: shares computed there were NaN or lost)."""
    from hftraining.core.config import ModelConfig
    from hftraining.inference.ensemble import EnsembleModel
    from hftraining.models import build_model

    torch.manual_seed(0)
    members = [build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1, dropout=0.0), 3, 2, 8).eval() for _ in range(2)]
    ens = EnsembleModel(members, "weighted", weights).eval()
    x = torch.randn(4, 8, 3)
    with torch.no_grad():
        preds = np.stack([m(x).prediction.numpy() for m in members])
        got = ens(x).prediction.numpy()
    w = np.asarray(weights) / max(weights)  # (1e308 + 1e308 overflows float64 too)
    share = w / w.sum()
    np.testing.assert_allclose(got, (share[:, None, None] * preds).sum(axis=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_type", ["ridge", "lightgbm"])
def test_seeds_of_a_model_that_ignores_the_seed_are_a_config_error(tmp_path, model_type):
    """``train --seeds N`` of a model fitted without gradient steps (ridge in closed form, LightGBM with
    its own fixed seed) trained N identical members and called them a seed ensemble: refused before
    anything is trained or written."""
    from hftraining.core.config import load_config
    from hftraining.core.errors import ConfigError
    from hftraining.workflows.seeds import train_seeds

    cfg = load_config(None, [f"model.type={model_type}", "data.symbols=[AEM]", "data.sequence_length=16",
                             "data.prediction_horizon=2", "evaluation.report=false", "output.tensorboard=false",
                             f"output.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="identical members"):
        train_seeds(cfg, 2)
    assert not (tmp_path / "run").exists()
