"""Production path: what predict, ensembles and export say when given something they cannot use."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.core.errors import DataError, UserError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model

SMALL = ["data.symbols=[AEM, WPM]", "data.sequence_length=20", "data.prediction_horizon=3"]


def model_dir(path, *overrides: str, seed: int = 0):
    """A model folder with real preprocessing and random weights (what is checked needs no training)."""
    cfg = load_config(None, [*SMALL, *overrides])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(seed)
    m = build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


@pytest.fixture(scope="module")
def one_model(tmp_path_factory):
    return model_dir(tmp_path_factory.mktemp("round9") / "model")


def test_a_weighted_ensemble_of_models_trained_on_a_relative_data_dir_names_where_it_came_from(
        tmp_path, monkeypatch, capsys):
    """A model trained on ``data.data_dir=prices`` (relative) records that path; a weighted ensemble is
    scored on the members' validation split of it, read again. From another folder the error names the
    member's preprocessing.json and the key, not the bare ``prices`` the user never typed there."""
    from hftraining.cli import main

    work = tmp_path / "work"
    (work / "prices").mkdir(parents=True)
    for sym in ("AEM", "WPM"):
        shutil.copy(sample_data_dir() / f"{sym}.csv", work / "prices" / f"{sym}.csv")
    monkeypatch.chdir(work)
    a = model_dir(work / "a", "data.data_dir=prices", seed=0)
    b = model_dir(work / "b", "data.data_dir=prices", seed=1)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens"), "--method", "weighted"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(a / "preprocessing.json") in err and "data.data_dir=prices" in err, err
    assert "hftraining ensemble" in err and "folder training ran in" in err, err
    assert not (tmp_path / "ens").exists()
    monkeypatch.chdir(work)  # from the folder training ran in it is built
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens"), "--method", "weighted"]) == 0


@pytest.mark.parametrize("data, words", [
    (None, ["data: None", "{symbol: DataFrame}"]),
    ([], ["data: an empty list"]),
    (123, ["data: a int cannot be read"]),
    (pd.Series([1.0, 2.0]), ["data: a Series cannot be read"]),
    ([pd.DataFrame({"close": [1.0]})], ["item 0 of the list is a DataFrame", "{symbol: DataFrame}"]),
])
def test_data_that_is_not_rows_is_a_one_line_error_not_the_bundled_sample(one_model, data, words):
    """``predict(None)`` forecast the bundled sample's ten tickers (None as a data_dir means the sample):
    a variable left unset became forecasts of other symbols. Every such value is a DataError naming it."""
    fc = Forecaster.from_pretrained(one_model)
    with pytest.raises(UserError) as e:
        fc.predict(data, warnings=[])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_paths_and_lists_of_paths_still_forecast(one_model):
    fc = Forecaster.from_pretrained(one_model)
    one = fc.predict(sample_data_dir() / "AEM.csv", warnings=[])
    listed = fc.predict((str(sample_data_dir() / "AEM.csv"),), warnings=[])
    pd.testing.assert_frame_equal(one, listed)
    assert list(one["symbol"].unique()) == ["AEM"]


def test_an_unknown_precision_is_said_as_the_model_loads(one_model):
    """``precision="float16"`` loaded, then every forecast was a ValueError traceback from the autocast."""
    with pytest.raises(UserError) as e:
        Forecaster.from_pretrained(one_model, precision="float16")
    assert "precision='float16'" in str(e.value) and "fp32, bf16, fp16" in str(e.value)
    assert Forecaster.from_pretrained(one_model, precision="bf16").precision == "bf16"


@pytest.mark.parametrize("model", [dict(type="dlinear", moving_avg=5), dict(type="seasonal_naive", season_length=5)])
def test_the_onnx_graph_of_dlinear_and_a_seasonal_baseline_forecasts_the_real_windows_as_predict(tmp_path, model):
    """Every model but LightGBM exports; on the latest windows of real data (not only random inputs) the
    graph's forecasts are predict's, in fp32, within the export check's tolerance."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hftraining.inference.export import TOLERANCE, export_onnx, onnx_session

    cfg = load_config(None, SMALL)
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(**model), len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.save_pretrained(tmp_path / "model", preprocessing=pre.to_dict())
    out = export_onnx(tmp_path / "model", tmp_path / "m.onnx")
    fc = Forecaster.from_pretrained(tmp_path / "model")
    data = [str(sample_data_dir() / f"{s}.csv") for s in ("AEM", "WPM", "NIO")]
    ws = fc.latest_windows(fc.load(data))
    b = ws.batch(np.arange(len(ws)))
    got = onnx_session(out).run(None, {"x": b["x"].numpy(), "past": b["past"].numpy()})[0]
    table = fc.predict(data, warnings=[])
    want = table["forecast_return"].to_numpy().reshape(len(ws), -1)
    assert got.shape == want.shape and np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, atol=TOLERANCE / 10, rtol=0)


def test_a_link_to_a_run_s_final_forecasts_what_the_run_scored(tmp_path):
    """``current -> runs/x/final`` (a deployment's usual link) was read as a bare model folder: forecast in
    fp32 while the run trained and scored in bf16 (about 1% apart), and evaluated without its fitted
    baselines. It is the run's model: its precision, its baselines."""
    from hftraining.inference.folders import baselines_dir
    from hftraining.workflows.train_run import train
    from conftest import tiny

    run = tmp_path / "run"
    train(load_config(None, tiny(run, "training.max_steps=2", "training.save_steps=0", "evaluation.eval_steps=0",
                                 "training.use_mixed_precision=true")))
    link = tmp_path / "current"
    link.symlink_to(run / "final")
    fc, via = Forecaster.from_pretrained(run), Forecaster.from_pretrained(link)
    assert fc.precision == "bf16" and via.precision == "bf16"
    assert baselines_dir(link) == run.resolve() / "baselines"
    data = str(sample_data_dir() / "AEM.csv")
    pd.testing.assert_frame_equal(via.predict(data, warnings=[]), fc.predict(data, warnings=[]))


def test_the_root_of_a_seeds_run_without_an_ensemble_names_its_seed_folders(tmp_path):
    """``train --seeds 1`` (or a seeds run stopped before its ensemble) leaves ``seed-<k>/`` and no
    ``ensemble/``: evaluate, predict and backtest of the root said "neither a run folder ... nor an
    ensemble folder"; the error says what the folder is and which folder to give."""
    from hftraining.inference.folders import resolve_model_dir

    (tmp_path / "seed-0" / "checkpoints").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        resolve_model_dir(tmp_path)
    assert "train --seeds" in str(e.value) and "seed-<k>/" in str(e.value) and "\n" not in str(e.value)
