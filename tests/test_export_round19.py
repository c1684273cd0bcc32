"""The ONNX file says how its inputs are built: a consumer that follows its metadata alone (the
features of ``hftraining data features``, scaled as ``hftraining.inputs`` says, and the past labels)
gets the forecasts ``predict`` gives."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

from conftest import tiny  # noqa: E402
from hftraining.cli import main  # noqa: E402
from hftraining.data import io  # noqa: E402
from hftraining.inference.export import onnx_session  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402

SYMBOLS = ["AEM", "WPM"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder, .onnx file, features of the symbols' files) of a tiny run with a scaler per symbol."""
    tmp = tmp_path_factory.mktemp("export19")
    run = tmp / "run"
    assert main(["train", *tiny(run, "training.max_steps=2", "data.scale_per_symbol=true",
                                "evaluation.intervals=[]", "output.report_to=[]")]) == 0
    out = tmp / "m.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    feats = []
    for sym in SYMBOLS:  # the features under the run's data section, as `hftraining data features` writes them
        path = tmp / f"{sym}.parquet"
        assert main(["data", "features", str(io.sample_data_dir() / f"{sym}.csv"), "--config", str(run / "config.json"),
                     "--set", f"symbols=[{sym}]", "--out", str(path)]) == 0
        feats.append(pd.read_parquet(path))
    return run, out, pd.concat(feats)


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_the_file_says_its_x_takes_scaled_features_and_how(exported):
    _, out, _ = exported
    meta = _meta(out)
    pre = json.loads(meta["hftraining.preprocessing"])
    inputs = json.loads(meta["hftraining.inputs"])
    assert inputs["x"]["columns"] == pre["feature_columns"]
    assert inputs["x"]["shape"] == ["batch", pre["seq_len"], len(pre["feature_columns"])]
    assert inputs["x"]["scaled"] is True
    assert inputs["x"]["scaler_params"] == "symbol"  # the scaler was fit per symbol: params[<symbol>]
    assert "scale" in inputs["x"]["rule"] and "center" in inputs["x"]["rule"]
    assert inputs["past"]["target_scale"] == pytest.approx(pre["target_scale"])
    assert "log(close[t] / close[t-1])" in inputs["past"]["rule"]
    assert "oldest first" in inputs["rows"]


def test_inputs_built_as_the_metadata_says_give_predict_s_forecasts(exported):
    run, out, feats = exported
    meta = _meta(out)
    pre = json.loads(meta["hftraining.preprocessing"])
    inputs = json.loads(meta["hftraining.inputs"])
    cols, L = inputs["x"]["columns"], pre["seq_len"]
    xs, pasts = [], []
    for sym in SYMBOLS:
        rows = feats[feats["symbol"] == sym].sort_values("timestamp").tail(L)
        key = sym if inputs["x"]["scaler_params"] == "symbol" else inputs["x"]["scaler_params"]
        p = pre["scaler"]["params"][key]
        xs.append((rows[cols].to_numpy(np.float64) - np.asarray(p["center"])) / np.asarray(p["scale"]))
        prices = pd.read_csv(io.sample_data_dir() / f"{sym}.csv")  # Date, close, high, low, open, volume
        close = prices.set_index(pd.to_datetime(prices["Date"], utc=True))["close"]
        label = np.log(close / close.shift(1))
        pasts.append(label.reindex(pd.to_datetime(rows["timestamp"], utc=True)).to_numpy()
                     / inputs["past"]["target_scale"])
    got = onnx_session(out).run(None, {"x": np.stack(xs).astype(np.float32),
                                       "past": np.stack(pasts).astype(np.float32)})[0]
    table = Forecaster.from_pretrained(run, precision="fp32").predict([str(io.sample_data_dir() / f"{s}.csv")
                                                                       for s in SYMBOLS])
    want = np.stack([table[table["symbol"] == s].sort_values("step")["forecast_return"].to_numpy() for s in SYMBOLS])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the raw features (what `data features` writes) give other forecasts: the scaling is not optional
    raw = np.stack([feats[feats["symbol"] == s].sort_values("timestamp").tail(L)[cols].to_numpy() for s in SYMBOLS])
    other = onnx_session(out).run(None, {"x": raw.astype(np.float32), "past": np.stack(pasts).astype(np.float32)})[0]
    assert np.abs(other - want).max() > 1e-4
