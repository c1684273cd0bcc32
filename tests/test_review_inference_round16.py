"""Ensemble members and the metrics an ensemble folder and the server carry: a member that read a symbol no row
of which it was fit on still joins an ensemble, and the test figures of a run with a large eval.json (a panel of
many symbols) are served and recorded, not left out."""

import json
import shutil

import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.models import build_model


def _model(pre, d, seed: int = 0):
    torch.manual_seed(seed)
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), len(pre.feature_columns),
                pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


def _pre(data, symbols: str):
    return prepare(load_config(None, [f"data.data_dir={data}", f"data.symbols=[{symbols}]", "data.sequence_length=20",
                                      "data.prediction_horizon=3"]).data).preprocessing


def test_a_member_that_also_read_a_symbol_with_no_training_rows_joins_the_ensemble(tmp_path):
    """Two models trained on AEM and WPM, one of them with a third symbol listed whose rows all lie in the test
    split: with one scaler for all symbols it fits no statistic of either (scaler, target scale and cuts are the
    same), so both see the same inputs and combine. Refused as "trained on ARM, which ... was not": the symbols
    were compared where the statistics they are fit on agree. Members in another symbol order join too, and
    members whose statistics differ are still refused naming the symbols."""
    from hftraining.core.errors import DataError
    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.forecaster import Forecaster

    data = tmp_path / "data"
    data.mkdir()
    for s in ("AEM", "WPM"):
        shutil.copy(sample_data_dir() / f"{s}.csv", data / f"{s}.csv")
    arm = pd.read_csv(sample_data_dir() / "ARM.csv")
    arm[arm.Date >= "2025-09-01"].to_csv(data / "ARM.csv", index=False)  # after the test cut (2025-04-17)
    two, three = _pre(data, "AEM, WPM"), _pre(data, "AEM, WPM, ARM")
    assert sorted(three.source_rows) == ["AEM", "ARM", "WPM"]
    assert {k: three.to_dict()[k] for k in ("scaler", "target_scale")} == {k: two.to_dict()[k] for k in ("scaler", "target_scale")}
    a, b = _model(two, tmp_path / "a"), _model(three, tmp_path / "b", seed=1)
    ens = build_ensemble([a, b], tmp_path / "ens")
    bars = pd.read_csv(sample_data_dir() / "AEM.csv").tail(120)
    got = Forecaster.from_pretrained(ens).predict(bars.assign(symbol="AEM"))
    assert len(got) == 3 and got["forecast_return"].notna().all()
    c = _model(_pre(data, "WPM, AEM"), tmp_path / "c", seed=2)  # the same symbols, listed in another order
    assert build_ensemble([a, c], tmp_path / "ordered").is_dir()
    wide = _model(_pre(sample_data_dir(), "AEM, WPM, ARM"), tmp_path / "wide", seed=3)  # ARM's training rows fit it
    with pytest.raises(DataError, match=f"^{wide}: trained on ARM, which {a} was not "):
        build_ensemble([a, wide], tmp_path / "refused")


def _run(pre, root, seed: int, padding: int):
    """A run folder around a seeded untrained model whose eval.json carries ``padding`` bytes of per-symbol
    figures beside its test figures, as a panel's does."""
    _model(pre, root / "final", seed=seed)
    (root / "config.json").write_text("{}")
    ev = {"split": "test", "n_windows": 416, "mse_vs_zero": 1.0 + seed, "model": {"mse": 0.001}, "verdict": f"v{seed}",
          "per_symbol": {"pad": "x" * padding}}
    (root / "eval.json").write_text(json.dumps(ev))
    (root / "metrics.jsonl").write_text(json.dumps({"step": 2, "eval_mse": 1.5}) + "\n")
    return root


def test_the_test_figures_of_a_run_with_a_large_eval_json_are_served_and_recorded(tmp_path):
    """A run of many symbols writes an eval.json past the 16 MiB bound of a model folder's JSON files (about
    35 KB a symbol at horizon 24; evaluate reads it up to 256 MiB). ``GET /model`` served its ``test`` figures as
    {} and an ensemble of such runs recorded them as {} for good, with no word said. Now they are those of its
    eval.json."""
    from fastapi.testclient import TestClient

    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.serve import create_app

    pre = prepare(load_config(None, ["data.symbols=[AEM, WPM]", "data.sequence_length=20",
                                     "data.prediction_horizon=3"]).data).preprocessing
    big = 17 << 20
    a, b = _run(pre, tmp_path / "a", 0, big), _run(pre, tmp_path / "b", 1, 10)
    want = [{"split": "test", "n_windows": 416, "model": {"mse": 0.001}, "mse_vs_zero": 1.0 + k, "verdict": f"v{k}"}
            for k in range(2)]
    ens = build_ensemble([a, b], tmp_path / "ens")
    recorded = json.loads((ens / "ensemble.json").read_text())["member_metrics"]
    assert [m["test"] for m in recorded] == want
    assert recorded[0]["validation"] == {"step": 2, "eval_mse": 1.5}
    with TestClient(create_app(a)) as client:
        assert client.get("/model").json()["training_metrics"]["test"] == want[0]
