"""A user's setting reaches every path that computes with it, and one computation has one implementation:
an ensemble calibrates its intervals on the validation windows its members' run calibrated on
(``evaluation.max_val_windows``)."""

import json
import shutil

import numpy as np
import torch

from hftraining.core.config import EvaluationConfig, ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import apply, prepare
from hftraining.eval.intervals import calibrate
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model


def model_dir(path, seed=0):
    """A model folder of AEM with real preprocessing and random weights (seed ``seed``)."""
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=16", "data.prediction_horizon=2",
                             "data.cache_dir=null"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(seed)
    m = build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                    pre.seq_len)
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


def test_an_ensemble_of_a_run_and_its_copy_calibrates_on_the_windows_the_run_did(tmp_path):
    """A run calibrates its conformal intervals on at most ``evaluation.max_val_windows`` validation windows
    (the last dates); the ensemble of that run and its own copy, which forecasts exactly what the run does,
    calibrated on every validation window, so its intervals were not the run's (another radius, another n)."""
    run = tmp_path / "run"
    model_dir(run / "final")
    (run / "config.json").write_text(json.dumps({"evaluation": {"max_val_windows": 60, "intervals": [0.8, 0.9]}}))
    member = Forecaster.from_pretrained(run)
    pre = member.preprocessing
    val = apply(pre, None, "val")
    assert len(val) > 60  # the cap acts
    ev = EvaluationConfig(max_val_windows=60, intervals=[0.8, 0.9])
    cal = calibrate(member.model, val, pre.target_scale, ev, pre.data_config().eval_batch_size)  # as train_run does
    assert cal.n <= 60
    (run / "final" / "intervals.json").write_text(json.dumps(cal.to_dict()))
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    ens = build_ensemble([run, twin], tmp_path / "ens")
    got = json.loads((ens / "intervals.json").read_text())
    assert got["n"] == cal.n
    assert got["radius"] == cal.to_dict()["radius"]
    data = str(sample_data_dir() / "AEM.csv")
    one, two = Forecaster.from_pretrained(run).predict(data), Forecaster.from_pretrained(ens).predict(data)
    for col in ("lower_80", "upper_80", "lower_90", "upper_90"):
        np.testing.assert_array_equal(two[col], one[col], err_msg=col)
