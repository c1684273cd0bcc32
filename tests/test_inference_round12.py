"""The production path says what it forecasts, in each form it is handed out.

- An interval level the model's calibration leaves unbounded is (-inf, +inf): ``predict``'s CSV holds
  that, the server's JSON cannot (null). ``Forecaster.predict``'s warnings, ``predict``'s stderr and the
  server's ``"warnings"`` name the level, its columns and why, so null reads as no bound, not a gap.
- ``Forecaster.from_pretrained(..., device=...)`` with a device this machine lacks is a one-line
  ConfigError as the model loads (torch's AssertionError, or an error at the first forecast, before).
- ``GET /model`` says the precision the forecasts are computed in and the intervals they carry, and
  an ensemble's model config is each member's (the first member's alone was served as the ensemble's).
"""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.models.folder import INTERVALS_FILE
from hftraining.models.intervals import Calibration

SYMBOLS = ("AEM", "WPM")


@pytest.fixture(scope="module")
def pre():
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3",
                             f"data.symbols=[{', '.join(SYMBOLS)}]"])
    return prepare(cfg.data).preprocessing.to_dict()


def _save(pre: dict, d, model_type: str = "transformer", seed: int = 0):
    torch.manual_seed(seed)
    m = ModelConfig(type=model_type, hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre["feature_columns"]), pre["horizon"], pre["seq_len"]).save_pretrained(d, preprocessing=pre)
    return d


def _with_intervals(d, levels: list[float], n: int):
    """``d`` with split intervals at ``levels`` calibrated on ``n`` validation windows."""
    rng = np.random.default_rng(0)
    cal = Calibration.fit(rng.normal(size=(n, 3)) * 0.01, rng.normal(size=(n, 3)) * 0.01, levels)
    (d / INTERVALS_FILE).write_text(json.dumps(cal.to_dict()))
    return d


def _frames() -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(sample_data_dir() / f"{s}.csv").tail(250).reset_index(drop=True) for s in SYMBOLS}


def _body(frames: dict[str, pd.DataFrame]) -> dict:
    return {"symbols": {s: [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close,
                             "volume": r.volume} for r in f.itertuples()] for s, f in frames.items()}}


def test_an_unbounded_interval_level_is_said_where_the_forecasts_are_handed_out(pre, tmp_path, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.cli import main
    from hftraining.inference.serve import create_app

    d = _with_intervals(_save(pre, tmp_path / "model"), [0.8, 0.999], n=200)  # 99.9% needs 999 windows
    frames = _frames()
    warnings: list[str] = []
    table = Forecaster.from_pretrained(d).predict(frames, warnings=warnings)
    assert np.isfinite(table[["lower_80", "upper_80"]].to_numpy()).all()
    assert (table["lower_99.9"] == -np.inf).all() and (table["upper_99.9"] == np.inf).all()
    said = [w for w in warnings if "unbounded" in w]
    assert len(said) == 1 and said[0].startswith("lower_99.9, upper_99.9: the 99.9% interval is unbounded"), warnings
    assert "200 windows, fewer than the 999" in said[0] and "null in JSON" in said[0] and "\n" not in said[0]
    with TestClient(create_app(d)) as client:
        r = client.post("/predict", json=_body(frames))
    assert r.status_code == 200, r.text
    served = r.json()
    assert all(f["lower_99.9"] is None and f["upper_99.9"] is None for f in served["forecasts"])
    assert said[0] in served["warnings"]  # null named as no bound, not a missing value
    np.testing.assert_array_equal([f["lower_80"] for f in served["forecasts"]], table["lower_80"].to_numpy())
    # predict's CSV holds the infinite bounds and says why on stderr
    data = tmp_path / "data"
    data.mkdir()
    for s, f in frames.items():
        f.to_csv(data / f"{s}.csv", index=False)
    capsys.readouterr()
    assert main(["predict", str(d), "--data", str(data), "--out", str(tmp_path / "f.csv")]) == 0
    assert "lower_99.9, upper_99.9: the 99.9% interval is unbounded" in capsys.readouterr().err
    assert (pd.read_csv(tmp_path / "f.csv")["upper_99.9"] == np.inf).all()
    # a calibration that bounds every level says nothing
    warnings = []
    Forecaster.from_pretrained(_with_intervals(d, [0.8, 0.9], n=200)).predict(frames, warnings=warnings)
    assert not [w for w in warnings if "unbounded" in w], warnings


def test_a_device_this_machine_lacks_is_refused_in_one_line_as_the_model_loads(pre, tmp_path, monkeypatch):
    d = _save(pre, tmp_path / "model")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        Forecaster.from_pretrained(d, device="cuda")
    assert str(e.value) == "device='cuda': CUDA is not available on this machine; use cpu"
    with pytest.raises(ConfigError, match=r"^device='gpu': not a device \(cpu, cuda, cuda:N\)$"):
        Forecaster.from_pretrained(d, device="gpu")
    # the CPU, by name or as a torch device, forecasts as the default does
    want = Forecaster.from_pretrained(d).predict(_frames())["forecast_return"].to_numpy()
    for dev in ("cpu", torch.device("cpu")):
        np.testing.assert_array_equal(Forecaster.from_pretrained(d, device=dev).predict(_frames())["forecast_return"], want)


def test_the_model_endpoint_says_the_precision_the_intervals_and_each_members_config(pre, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    # a run folder (final/ and its config.json) trained in bf16, with intervals
    run = tmp_path / "run"
    _with_intervals(_save(pre, run / "final"), [0.8, 0.9], n=300)
    (run / "config.json").write_text(json.dumps({"training": {"precision": "bf16"}}))
    with TestClient(create_app(run)) as client:
        info = client.get("/model").json()
        r = client.post("/predict", json=_body(_frames()))
    assert info["precision"] == "bf16" and info["kind"] == "model"
    assert info["intervals"] == {"method": "split", "levels": [0.8, 0.9], "calibration_windows": 300,
                                 "columns": ["lower_80", "upper_80", "lower_90", "upper_90"]}
    assert set(info["intervals"]["columns"]) <= set(r.json()["forecasts"][0])  # the columns the forecasts hold
    assert info["config"]["model"]["type"] == "transformer"
    # an ensemble of a transformer and a naive drift forecast: neither one's config is the ensemble's
    ens = build_ensemble([_save(pre, tmp_path / "tf"), _save(pre, tmp_path / "drift", "drift")], tmp_path / "ens")
    with TestClient(create_app(ens)) as client:
        info = client.get("/model").json()
    assert info["kind"] == "ensemble" and info["config"] is None
    assert [c["model"]["type"] for c in info["member_configs"]] == ["transformer", "drift"]
    assert info["precision"] == "fp32" and info["intervals"] is None  # members without intervals: points only


def test_bars_spaced_unlike_the_training_bars_are_said_in_the_answer_not_only_the_log(pre, tmp_path, caplog):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.data.synth import write_synth
    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model")  # trained on daily bars
    (path,) = write_synth(tmp_path / "bars", 1, 400, freq="h", session="24h")
    hourly = pd.read_csv(path)
    warnings: list[str] = []
    Forecaster.from_pretrained(d).predict({"SYN000": hourly}, warnings=warnings)
    said = [w for w in warnings if "bars are" in w]
    assert len(said) == 1 and said[0].startswith("data: the bars are 1 hour apart (median), the model trained on bars "
                                                 "1 day apart"), warnings
    with TestClient(create_app(d)) as client:
        r = client.post("/predict/csv", files={"file": ("SYN000.csv", path.read_bytes(), "text/csv")})
    assert r.status_code == 200, r.text
    assert said[0] in r.json()["warnings"]
    # without a list to gather them, the warning is logged, as before (predict's stderr)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        Forecaster.from_pretrained(d).predict({"SYN000": hourly})
    assert [r.getMessage() for r in caplog.records if "bars are 1 hour apart" in r.getMessage()]
    # daily bars say nothing
    warnings = []
    Forecaster.from_pretrained(d).predict(_frames(), warnings=warnings)
    assert not [w for w in warnings if "bars are" in w], warnings
