"""Multi-seed training and ensemble folders: load and predict like one model."""

import json
import re
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


def _listing(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


def test_an_existing_ensemble_is_not_overwritten_silently(seeds_run, tmp_path, capsys):
    """`ensemble ... --out X` replaced an ensemble already in X without a word, where training refuses a
    run folder's checkpoints unless output.overwrite; an --out inside a member copied the ensemble into
    itself. Now each is one line naming the folder, exit 2, and X is left as it was (an --out that is a
    file: said before the members are loaded)."""
    out = tmp_path / "ens"
    dirs = [str(seeds_run / f"seed-{k}") for k in range(2)]
    assert main(["ensemble", *dirs, "--out", str(out)]) == 0
    before = _listing(out)
    capsys.readouterr()
    assert main(["ensemble", *dirs, "--out", str(out), "--method", "median"]) == 2
    assert capsys.readouterr().err == (f"hftraining: error: {out}: already holds an ensemble; pass --overwrite to "
                                       "replace it, or choose another --out\n")
    assert _listing(out) == before
    assert main(["ensemble", *dirs, "--out", str(out), "--method", "median", "--overwrite"]) == 0
    assert json.loads((out / "ensemble.json").read_text())["method"] == "median"
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["ensemble", *dirs, "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == (f"hftraining: error: {tmp_path / 'file'}: exists and is not a folder; "
                                       "choose another --out\n")
    inside = seeds_run / "seed-0" / "final" / "ens"
    assert main(["ensemble", *dirs, "--out", str(inside)]) == 2
    member = seeds_run / "seed-0" / "final"
    assert capsys.readouterr().err == (f"hftraining: error: {inside}: inside the member folder {member}; "
                                       "choose an --out outside the members\n")
    assert not inside.exists()


def test_an_ensemble_is_replaced_whole_or_not_at_all(seeds_run, tmp_path, monkeypatch):
    """build_ensemble removed the earlier ensemble folder, then wrote the new one in its place: a build
    that failed halfway (here its calibration; or a member copied from the folder being replaced) lost
    the earlier ensemble. Now the new folder is written beside it and renamed into place when whole:
    a failure leaves the earlier one, byte for byte; a success leaves none of its files."""
    import hftraining.inference.ensemble as E

    out = tmp_path / "ens"
    build_ensemble([seeds_run / f"seed-{k}" for k in range(3)], out)
    (out / "stale.json").write_text("{}")
    before = _listing(out)

    def broken(*args):
        raise RuntimeError("calibration failed")

    with monkeypatch.context() as m:
        m.setattr(E, "_calibrate", broken)
        with pytest.raises(RuntimeError, match="calibration failed"):
            build_ensemble([seeds_run / "seed-0", seeds_run / "seed-1"], out, overwrite=True)
    assert _listing(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ens"]
    # a member taken from the ensemble being replaced (its copy of seed-0)
    build_ensemble([out / "members" / "member-0", seeds_run / "seed-2"], out, "median", overwrite=True)
    fresh = build_ensemble([seeds_run / "seed-0", seeds_run / "seed-2"], tmp_path / "fresh", "median")
    assert [name for name, _ in _listing(out)] == [name for name, _ in _listing(fresh)]
    meta = json.loads((out / "ensemble.json").read_text())
    assert meta["method"] == "median" and len(meta["members"]) == 2
    assert (out / "intervals.json").read_bytes() == (fresh / "intervals.json").read_bytes()


def test_an_ensemble_inside_another_run_folder_is_not_scored_as_that_run(seeds_run, tmp_path):
    """An ensemble written into another run's folder (`ensemble ... --out runs/c/ens`) was evaluated with
    runs/c's config.json and fitted baselines, and its report overwrote runs/c's report.html. Now it is
    scored as the same ensemble anywhere else, and its report lands in its own folder."""
    other = tmp_path / "c"
    shutil.copytree(seeds_run / "seed-2", other)
    report = (other / "report.html").read_bytes()
    dirs = [seeds_run / "seed-0", seeds_run / "seed-1"]
    inside, alone = build_ensemble(dirs, other / "ens"), build_ensemble(dirs, tmp_path / "alone")
    res_inside, res_alone = (evaluate_model_dir(d, split="val")[0] for d in (inside, alone))
    assert set(res_inside["baselines"]) == set(res_alone["baselines"])  # not runs/c's fitted ones beside them
    for key in ("baselines", "model"):  # as JSON: a NaN IC equals itself
        assert json.dumps(res_inside[key], sort_keys=True) == json.dumps(res_alone[key], sort_keys=True)
    assert main(["evaluate", str(inside), "--split", "val"]) == 0
    assert (inside / "evaluations" / "val" / "report.html").exists() and (other / "report.html").read_bytes() == report


def test_an_ensemble_of_runs_is_judged_against_their_fitted_baselines(seeds_run, tmp_path):
    """`evaluate` of a --seeds run (its ensemble/) or of `ensemble runs/a runs/b` scored the ensemble beside
    the naive forecasts only, although each member's run holds ridge and LightGBM fitted on the same
    windows: the verdict could name naive:zero while ridge was stronger. The ensemble carries its
    members' fitted baselines now, and is scored against them exactly as the member's own run is."""
    member = evaluate_model_dir(seeds_run / "seed-0", split="val")[0]
    for path in (seeds_run, build_ensemble([seeds_run / "seed-0", seeds_run / "seed-1"], tmp_path / "ens")):
        res = evaluate_model_dir(path, split="val")[0]
        assert {"ridge", "lightgbm"} <= set(res["baselines"])
        for name in ("ridge", "lightgbm"):
            assert res["baselines"][name]["mse"] == member["baselines"][name]["mse"]
    bare = tmp_path / "bare"  # members without a run: nothing to carry, the naive baselines alone
    shutil.copytree(seeds_run / "seed-0" / "final", bare / "a")
    shutil.copytree(seeds_run / "seed-1" / "final", bare / "b")
    res = evaluate_model_dir(build_ensemble([bare / "a", bare / "b"], tmp_path / "ens2"), split="val")[0]
    assert not {"ridge", "lightgbm"} & set(res["baselines"])


def test_an_ensemble_s_fitted_baselines_are_never_a_link_to_elsewhere(seeds_run, tmp_path):
    ens = build_ensemble([seeds_run / "seed-0", seeds_run / "seed-1"], tmp_path / "ens")
    shutil.rmtree(ens / "baselines")
    (ens / "baselines").symlink_to(seeds_run / "seed-2" / "baselines")
    with pytest.raises(DataError, match=r"baselines: a link; fitted baselines are model folders inside"):
        evaluate_model_dir(ens, split="val")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds-bf16") / "run"
    assert main(["train", "--seeds", "2", *tiny(None, "model.hidden_size=8", "data.sequence_length=16",
                 "data.prediction_horizon=2", "training.max_steps=4", "training.save_steps=0",
                 "evaluation.eval_steps=0", "training.precision=bf16"), f"output.output_dir={root}"]) == 0
    return root


def test_an_ensemble_forecasts_in_its_members_precision(bf16_run, tmp_path):
    """Each member of a bf16 run forecasts (and was scored) under bf16 autocast; its ensemble forecast in fp32,
    so an ensemble of a member with its own copy did not forecast what that member forecasts. Now the members'
    precision is recorded in ensemble.json and predict, evaluate and the members' scores use it."""
    member = bf16_run / "seed-0"
    twin = tmp_path / "twin"
    shutil.copytree(member, twin, ignore=shutil.ignore_patterns("checkpoints"))
    ens = build_ensemble([member, twin], tmp_path / "ens")
    data = str(sample_data_dir() / "AEM.csv")
    alone, both = Forecaster.from_pretrained(member), Forecaster.from_pretrained(ens)
    assert both.precision == alone.precision == "bf16"
    np.testing.assert_array_equal(both.predict(data)["forecast_return"], alone.predict(data)["forecast_return"])
    scored = evaluate_model_dir(member, split="val")[0]["model"]
    res = evaluate_model_dir(ens, split="val")[0]
    assert res["model"]["mse"] == scored["mse"] and res["members"]["member-0"]["mse"] == scored["mse"]
    assert json.loads((bf16_run / "ensemble" / "ensemble.json").read_text())["precision"] == "bf16"
    assert Forecaster.from_pretrained(bf16_run).precision == "bf16"  # the --seeds run folder (its ensemble/)
    # an explicit precision still wins, and a folder written before the precision was recorded reads as fp32
    assert Forecaster.from_pretrained(ens, precision="fp32").precision == "fp32"
    old = tmp_path / "old"
    shutil.copytree(ens, old)
    meta = json.loads((old / "ensemble.json").read_text())
    del meta["precision"]
    (old / "ensemble.json").write_text(json.dumps(meta))
    assert Forecaster.from_pretrained(old).precision == "fp32"
    assert len(Forecaster.from_pretrained(old).predict(data)) == 2


def test_members_of_different_precisions_are_said_and_forecast_in_fp32(bf16_run, tmp_path, caplog):
    """An fp32 run and a bf16 run have no one precision that reproduces both: the build says so, records none,
    and the ensemble forecasts in fp32 (exact for the fp32 member); a bad recorded precision is a DataError."""
    import logging

    other = tmp_path / "fp32"
    shutil.copytree(bf16_run / "seed-1", other, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((other / "config.json").read_text())
    cfg["training"]["precision"] = "fp32"
    (other / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ens = build_ensemble([bf16_run / "seed-0", other], tmp_path / "ens")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("different precisions" in m and "bf16" in m and str(other) in m for m in warned), warned
    assert json.loads((ens / "ensemble.json").read_text())["precision"] is None
    assert Forecaster.from_pretrained(ens).precision == "fp32"
    meta = json.loads((ens / "ensemble.json").read_text())
    meta["precision"] = "fp8"
    (ens / "ensemble.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=re.escape(f"{ens / 'ensemble.json'}: precision: 'fp8' is not one of")):
        Forecaster.from_pretrained(ens)
