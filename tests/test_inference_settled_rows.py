"""Settled rows: how much history a forecast needs before recursive indicators (RSI, MACD) no longer
depend on rows further back, and the warning a shorter request gets (min_rows stays the hard minimum)."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model

DEFAULT_FEATURES = ["log_return_1", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An (untrained, seeded) model folder of AEM with the default features, 20 rows in, 3 steps out:
    random weights read every input, so a different input row shows in the forecast."""
    d = tmp_path_factory.mktemp("settled") / "model"
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=20", "data.prediction_horizon=3"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


def _aem() -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / "AEM.csv")


def test_recursive_features_need_more_rows_than_their_warm_up():
    from hftraining.core.config import DataConfig
    from hftraining.data.features import feature_settle, feature_warmup
    from hftraining.data.rows import RowsNeeded

    assert feature_settle(["rsi_14"]) > feature_warmup(["rsi_14"]) + 30
    assert feature_settle(["macd_12_26_9"]) > feature_warmup(["macd_12_26_9"]) + 30
    # finite windows are settled as soon as they are filled
    for spec in ("bbands_20_2", "volume_ratio_20", "log_return_1"):
        assert feature_settle([spec]) == feature_warmup([spec]), spec
    d = DataConfig(features=DEFAULT_FEATURES, sequence_length=60)
    settled, least = RowsNeeded.settled(d), RowsNeeded.of(d, targets=False)
    assert settled.rows == feature_settle(DEFAULT_FEATURES) + 60 and settled.rows > least.rows + 30
    assert "data.sequence_length 60" in settled.why


@pytest.mark.parametrize("spec", ["rsi_14", "macd_12_26_9", "atr_14"])
def test_settled_values_on_real_data_match_the_full_history(spec):
    """The rows are measured on a probe series; on the bundled data, a history cut anywhere gives the
    full history's values (within the tolerance of the feature's spread) from feature_settle rows on."""
    from hftraining.data.features import SETTLE_TOLERANCE, compute_features, feature_settle

    k = feature_settle([spec])
    paths = sorted(sample_data_dir().glob("*.csv"))
    assert len(paths) >= 10
    for path in paths:
        raw = pd.read_csv(path).rename(columns={"Date": "timestamp"})
        full = compute_features(raw, [spec]).to_numpy()
        allowed = SETTLE_TOLERANCE * np.nanstd(full, axis=0)
        for cut in range(0, len(raw) - 400, 50):
            part = compute_features(raw.iloc[cut:].reset_index(drop=True), [spec]).to_numpy()
            off = np.abs(part - full[cut:])
            assert (off[k:] <= allowed).all(), (path.name, cut)
            assert not (off[: k // 2] <= allowed).all(), (path.name, cut)  # earlier rows still depend on the cut


def _inputs(fc: Forecaster, frame: pd.DataFrame) -> np.ndarray:
    """The scaled input window (L, F) the model reads for the latest forecast of AEM from ``frame``."""
    ws = fc.latest_windows(fc.load({"AEM": frame}))
    e = int(ws.ends[0])
    x = ws.features[e - ws.seq_len + 1 : e + 1].astype(np.float64)
    return (x - ws.center[0]) / ws.scale[0]


def test_forecast_from_settled_rows_equals_the_full_history_one(model_dir):
    from hftraining.data.features import SETTLE_TOLERANCE

    fc = Forecaster.from_pretrained(model_dir)
    raw = _aem()
    assert fc.settled_rows() > fc.min_rows() + 30
    full = fc.predict({"AEM": raw})["forecast_return"].to_numpy()
    x_full = _inputs(fc, raw)

    def off(n):
        f = fc.predict({"AEM": raw.tail(n)})["forecast_return"].to_numpy()
        return np.abs(f - full).max() / np.abs(full).max(), np.abs(_inputs(fc, raw.tail(n)) - x_full).max()

    rel, x_off = off(fc.settled_rows())
    assert x_off <= SETTLE_TOLERANCE and rel <= SETTLE_TOLERANCE
    rel, x_off = off(fc.min_rows())  # a forecast still, but from features that have not settled
    assert x_off > 10 * SETTLE_TOLERANCE and rel > SETTLE_TOLERANCE


def test_predict_logs_a_warning_below_settled_rows_only(model_dir, caplog):
    fc = Forecaster.from_pretrained(model_dir)
    raw = _aem()
    need = fc.settled_rows()
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        fc.predict({"AEM": raw.tail(need)})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        table = fc.predict({"AEM": raw.tail(fc.min_rows())})
    assert len(table) == 3  # forecast all the same
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith(f"AEM: {fc.min_rows()} rows < {need} settled rows")
    assert "rsi_14" in lines[0] and "macd_12_26_9" in lines[0] and "bbands" not in lines[0]


def test_cli_predict_warns_on_stderr(model_dir, tmp_path, capsys):
    from hftraining.cli import main

    path = tmp_path / "AEM.csv"
    _aem().tail(80).to_csv(path, index=False)
    assert main(["predict", str(model_dir), "--data", str(path), "--out", str(tmp_path / "f.csv")]) == 0
    err = capsys.readouterr().err
    assert "AEM: 80 rows <" in err and "settled rows" in err and len(pd.read_csv(tmp_path / "f.csv")) == 3


def test_serve_reports_settled_rows_and_warns_for_a_short_request(model_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from hftraining.inference.serve import create_app
    from test_inference_serve import running

    with running(create_app(model_dir)) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            info = client.get("/model").json()
            need = info["settled_rows"]
            assert need > info["min_rows"] + 30

            def bars(n):
                return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close,
                         "volume": r.volume} for r in _aem().tail(n).itertuples()]

            r = client.post("/predict", json={"symbols": {"AEM": bars(need), "AEM2": bars(80)}})
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["forecasts"]) == 6  # both forecast
            assert len(body["warnings"]) == 1 and body["warnings"][0].startswith(f"AEM2: 80 rows < {need} settled rows")
            r = client.post("/predict", json={"symbols": {"AEM": bars(need)}})
            assert r.status_code == 200 and r.json()["warnings"] == []
            csv = _aem().tail(80).to_csv(index=False).encode()
            r = client.post("/predict/csv", files={"file": ("AEM.csv", csv, "text/csv")})
            assert r.status_code == 200 and r.json()["warnings"][0].startswith(f"AEM: 80 rows < {need} settled rows")
