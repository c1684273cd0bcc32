"""The production path says what it forecasts and combines only forecasts of the same inputs.

- Ensemble members whose ``calendar``/``hour`` features read another ``data.timezone`` are refused in
  one line naming that key: the ensemble computes every member's inputs on the first member's clock,
  so such a member's part would not be its own forecast. Without time features the zone acts on no
  input, and such members combine.
- ``GET /model`` says the label the forecasts are of (``target``) and the zone of the time features.
- A bf16 model forecast on a CPU without bf16 instructions says once, as it loads, that torch computes
  it in software; the forecast stays the one evaluation scored in bf16.
- ``predict``'s CSV writes ``as_of`` in the server's ISO form (pandas wrote ``2024-01-02 00:00:00+00:00``).
"""

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import ModelConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.data.synth import write_synth
from hftraining.inference import forecaster as forecaster_module
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.models.predict import predict_outputs

TOKYO = "Asia/Tokyo"


def _save(pre: dict, d, seed: int = 0):
    """An untrained transformer folder of ``pre`` (weights drawn from ``seed``)."""
    import torch

    torch.manual_seed(seed)
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre["feature_columns"]), pre["horizon"], pre["seq_len"]).save_pretrained(d, preprocessing=pre)
    return d


def _with_zone(src, dst, tz: str):
    """A copy of the model folder ``src`` whose preprocessing.json records ``data.timezone=tz``, all else equal."""
    shutil.copytree(src, dst)
    p = dst / "preprocessing.json"
    pre = json.loads(p.read_text())
    pre["data"]["timezone"] = tz
    p.write_text(json.dumps(pre))
    return dst


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):
    """(folder of two symbols' hourly bars around the clock, config overrides reading them)."""
    tmp = tmp_path_factory.mktemp("hourly")
    write_synth(tmp / "bars", 2, 24 * 40, freq="h", session="24h")
    return tmp, ["data.sequence_length=20", "data.prediction_horizon=3", f"data.data_dir={tmp / 'bars'}",
                 "data.max_gap=3D"]


def _frames(bars) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_csv(p).tail(200).reset_index(drop=True) for p in sorted(bars.glob("*.csv"))}


def test_ensemble_members_whose_hour_features_read_another_zone_are_refused_naming_it(hourly, tmp_path):
    tmp, overrides = hourly
    pre = prepare(load_config(None, [*overrides, "data.features=[log_return_1, hour]"]).data).preprocessing.to_dict()
    utc = _save(pre, tmp_path / "utc")
    tokyo = _with_zone(utc, tmp_path / "tokyo", TOKYO)  # the same weights and scaler: only the clock differs
    frames = _frames(tmp / "bars")
    alone = [Forecaster.from_pretrained(d).predict(frames)["forecast_return"].to_numpy() for d in (utc, tokyo)]
    assert not np.allclose(alone[0], alone[1])  # the zone changes the inputs, so the forecast
    with pytest.raises(DataError) as e:
        build_ensemble([utc, tokyo], tmp_path / "ens")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tokyo}: preprocessing.json key data.timezone differs"), msg
    assert f"'{TOKYO}' vs 'UTC'" in msg, msg
    assert not (tmp_path / "ens").exists()
    # trained on the same bars in each zone, the scaler of the hour columns differs too: the zone is named
    other = prepare(load_config(None, [*overrides, "data.features=[log_return_1, hour]",
                                       f"data.timezone={TOKYO}"]).data).preprocessing.to_dict()
    with pytest.raises(DataError, match=r"key data\.timezone differs"):
        build_ensemble([utc, _save(other, tmp_path / "tokyo_trained", seed=1)], tmp_path / "ens")


def test_members_of_other_zones_combine_when_no_feature_reads_the_clock(hourly, tmp_path):
    tmp, overrides = hourly
    pre = prepare(load_config(None, [*overrides, "data.features=[log_return_1, rsi_14]"]).data).preprocessing.to_dict()
    utc = _save(pre, tmp_path / "utc")
    tokyo = _with_zone(_save(pre, tmp_path / "utc1", seed=1), tmp_path / "tokyo", TOKYO)
    ens = build_ensemble([utc, tokyo], tmp_path / "ens")
    frames = _frames(tmp / "bars")
    alone = [Forecaster.from_pretrained(d).predict(frames)["forecast_return"].to_numpy() for d in (utc, tokyo)]
    got = Forecaster.from_pretrained(ens).predict(frames)["forecast_return"].to_numpy()
    np.testing.assert_allclose(got, (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-7)  # each member's own forecast
    # a zone that is UTC's clock under another name reads the hour features alike
    hour = prepare(load_config(None, [*overrides, "data.features=[log_return_1, hour]"]).data).preprocessing.to_dict()
    a = _save(hour, tmp_path / "hour_utc")
    assert build_ensemble([a, _with_zone(a, tmp_path / "hour_etc", "Etc/UTC")], tmp_path / "ens2").is_dir()


def _sample_folder(tmp_path, *overrides: str):
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", "data.symbols=[AEM, WPM, NIO]",
                             *overrides])
    return _save(prepare(cfg.data).preprocessing.to_dict(), tmp_path / "model")


def test_the_model_endpoint_says_what_the_forecasts_are_and_the_zone_of_their_clock(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _sample_folder(tmp_path, "data.target=cs_zscore", "data.timezone=America/New_York",
                       "data.features=[log_return, calendar]")
    with TestClient(create_app(d)) as client:
        info = client.get("/model").json()
        frames = {s: pd.read_csv(sample_data_dir() / f"{s}.csv").tail(120) for s in ("AEM", "WPM", "NIO")}
        rows = {s: [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close,
                     "volume": r.volume} for r in f.itertuples()] for s, f in frames.items()}
        r = client.post("/predict", json={"symbols": rows})
    assert r.status_code == 200, r.text
    assert info["preprocessing"]["target"] == "cs_zscore" and info["preprocessing"]["timezone"] == "America/New_York"
    assert "forecast_cs_zscore" in r.json()["forecasts"][0]  # the column the target names


def test_a_bf16_model_on_a_cpu_without_bf16_says_so_once_and_forecasts_in_bf16(tmp_path, monkeypatch, caplog):
    d = _sample_folder(tmp_path)
    frames = {s: pd.read_csv(sample_data_dir() / f"{s}.csv").tail(120) for s in ("AEM", "WPM")}
    monkeypatch.setattr(forecaster_module, "cpu_has_bf16", lambda: False, raising=False)
    with caplog.at_level(logging.WARNING):
        fc = Forecaster.from_pretrained(d, precision="bf16")
        table = fc.predict(frames)
        fc.predict(frames)
    said = [r.getMessage() for r in caplog.records if "bf16 instructions" in r.getMessage()]
    assert len(said) == 1 and "software" in said[0] and "precision='fp32'" in said[0], said
    assert fc.precision == "bf16"  # the forecast evaluation scored, not a faster other one
    ws = fc.latest_windows(fc.load(frames))
    want = predict_outputs(fc.model, ws, fc.batch_size, "cpu", "bf16")["prediction"].astype(np.float64)
    np.testing.assert_array_equal(table["forecast_return"].to_numpy(), want.reshape(-1) * fc.preprocessing.target_scale)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Forecaster.from_pretrained(d, precision="fp32")
        monkeypatch.setattr(forecaster_module, "cpu_has_bf16", lambda: True)
        Forecaster.from_pretrained(d, precision="bf16")
    assert not [r for r in caplog.records if "bf16 instructions" in r.getMessage()]


def test_predict_csv_and_the_server_write_as_of_in_one_iso_form(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.cli import main
    from hftraining.inference.serve import create_app

    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", "data.symbols=[AEM, WPM]"])
    pre = prepare(cfg.data).preprocessing
    d = tmp_path / "model"
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0), len(pre.feature_columns),
                pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    src = tmp_path / "AEM.csv"
    pd.read_csv(sample_data_dir() / "AEM.csv").tail(120).to_csv(src, index=False)
    assert main(["predict", str(d), "--data", str(src), "--out", str(tmp_path / "f.csv")]) == 0
    cli = pd.read_csv(tmp_path / "f.csv", dtype={"as_of": str})
    with TestClient(create_app(d)) as client:
        r = client.post("/predict/csv", files={"file": ("AEM.csv", src.read_bytes(), "text/csv")})
    served = [f["as_of"] for f in r.json()["forecasts"]]
    assert list(cli["as_of"]) == served and served[0].endswith("T00:00:00+00:00"), (list(cli["as_of"]), served)
