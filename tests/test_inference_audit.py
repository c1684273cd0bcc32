"""A forecast never silently leaves out the rows a user sent: a row the training's validation rules drop
(a NaN volume, a second row of a date, a timestamp far beyond the others) is named, with its file and
line (or its position in a request), wherever a forecast is made from it: `hftraining predict`'s stderr,
``Forecaster.predict``'s warnings, the server's ``"warnings"``."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from test_inference_settled_rows import model_dir  # noqa: F401  (an untrained seeded AEM model: every input shows)


def _ridge_folder(tmp_path, *overrides: str):
    """An (unfitted) ridge model folder of 20 rows in, 3 steps out, with the data settings ``overrides``."""
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", *overrides])
    pre = prepare(cfg.data).preprocessing
    d = tmp_path / "model"
    build_model(ModelConfig(type="ridge", ridge_lags=5), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


def _aem(n: int = 300) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / "AEM.csv").tail(n).reset_index(drop=True)


def test_cli_predict_names_a_latest_row_it_drops_and_forecasts_from_the_row_before(model_dir, tmp_path, capsys):
    from hftraining.cli import main

    clean = _aem()
    (tmp_path / "clean").mkdir()
    clean.iloc[:-1].to_csv(tmp_path / "clean" / "AEM.csv", index=False)
    assert main(["predict", str(model_dir), "--data", str(tmp_path / "clean"), "--out", str(tmp_path / "a.csv")]) == 0
    assert "dropped" not in capsys.readouterr().err  # nothing dropped: nothing said
    bad = clean.copy()
    bad.loc[bad.index[-1], "volume"] = np.nan  # today's bar, its volume not in yet
    (tmp_path / "bad").mkdir()
    bad.to_csv(tmp_path / "bad" / "AEM.csv", index=False)
    assert main(["predict", str(model_dir), "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "b.csv")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "dropped" in line]
    assert len(err) == 1 and str(tmp_path / "bad" / "AEM.csv") in err[0]
    assert f"nan_or_inf: line {len(bad) + 1}" in err[0]  # the header is line 1
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert (b["as_of"] == a["as_of"]).all() and a["as_of"][0].startswith(clean["Date"].iloc[-2])
    np.testing.assert_array_equal(b["forecast_return"], a["forecast_return"])


def test_a_second_row_of_the_latest_date_is_named_as_not_used(model_dir, tmp_path):
    rows = _aem()
    fix = rows.iloc[[-1]].copy()
    fix[["open", "high", "low", "close"]] *= 1.1  # a corrected bar appended for the same date
    path = tmp_path / "AEM.csv"
    pd.concat([rows, fix]).to_csv(path, index=False)
    fc = Forecaster.from_pretrained(model_dir)
    said: list[str] = []
    table = fc.predict(str(path), warnings=said)
    assert len(said) == 1 and said[0].startswith(f"{path}: 1 row(s) dropped")
    assert f"duplicate_timestamp: line {len(rows) + 2}" in said[0]
    assert table["last_close"][0] == pytest.approx(rows["close"].iloc[-1])  # data.duplicate_timestamps=first
    said = []
    frame = fc.predict({"AEM": pd.concat([rows, fix], ignore_index=True)}, warnings=said)
    assert len(said) == 1 and said[0].startswith("AEM: 1 row(s) dropped")
    assert f"duplicate_timestamp: position {len(rows)}" in said[0]  # 0-based, as the frame's errors count
    np.testing.assert_array_equal(frame["forecast_return"], table["forecast_return"])


def test_the_server_names_a_row_it_drops_in_a_request_and_an_upload(model_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from hftraining.inference.serve import create_app
    from test_inference_serve import running

    rows = _aem(250)
    late = rows.iloc[[-1]].copy()
    late["Date"] = "2031-01-02"  # a typo'd year: far beyond the others, dropped as outlier_timestamp
    sent = pd.concat([rows, late], ignore_index=True)
    bars = [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in sent.itertuples()]
    with running(create_app(model_dir)) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            r = client.post("/predict", json={"symbols": {"AEM": bars}})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["forecasts"][0]["as_of"].startswith(rows["Date"].iloc[-1])
            said = [w for w in body["warnings"] if "dropped" in w]
            assert len(said) == 1 and said[0].startswith("AEM: 1 row(s) dropped")
            assert f"outlier_timestamp: position {len(rows)}" in said[0]
            r = client.post("/predict/csv", files={"file": ("AEM.csv", sent.to_csv(index=False).encode(), "text/csv")})
            assert r.status_code == 200, r.text
            said = [w for w in r.json()["warnings"] if "dropped" in w]
            assert len(said) == 1 and said[0].startswith("file AEM.csv: 1 row(s) dropped")  # not the temporary file
            assert f"outlier_timestamp: line {len(sent) + 1}" in said[0]


def test_the_onnx_file_of_a_model_of_another_label_does_not_call_its_outputs_log_returns(tmp_path):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    from hftraining.cli import main

    d = _ridge_folder(tmp_path, "data.symbols=[AEM, WPM]", "data.target=cs_zscore")
    out = tmp_path / "m.onnx"
    assert main(["export", str(d), "--format", "onnx", "--out", str(out), "--no-check"]) == 0
    units = {p.key: p.value for p in onnx.load(str(out)).metadata_props}["hftraining.units"]
    assert "log returns" not in units and "data.target=cs_zscore labels" in units
    assert "past: each row's data.target=cs_zscore label / target_scale" in units


def test_a_symbol_of_a_long_file_with_every_row_dropped_is_an_error_not_a_missing_forecast(model_dir, tmp_path, capsys):
    from hftraining.cli import main
    from hftraining.data.sources import load_and_validate

    good = _aem().assign(symbol="AEM")
    bad = pd.read_csv(sample_data_dir() / "WPM.csv").tail(50).assign(symbol="WPM", volume=-1.0)
    path = tmp_path / "panel.csv"
    pd.concat([good, bad]).to_csv(path, index=False)
    assert main(["predict", str(model_dir), "--data", str(path), "--out", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "symbol WPM: no usable rows (all 50 dropped: negative_volume 50)" in err[0]
    assert not (tmp_path / "f.csv").exists()
    # and the training's validation report lists it beside the symbols too short for a window
    fc = Forecaster.from_pretrained(model_dir)
    _, report = load_and_validate(fc.data_config(str(path)))
    assert "no usable rows" in report["too_few_rows"]["WPM"] and report["rows_dropped"] == 50
    # evaluating the model on that file (evaluate --data) scores the symbols it has, as training skips it
    assert list(fc.load(str(path))) == ["AEM"]


def test_training_names_a_symbol_validation_left_unusable(tmp_path, caplog):
    """``data.symbols`` naming a symbol of a long file whose every row is dropped: training goes on
    with the others (as for a symbol too short for a window) and says so in a warning naming the
    symbol and why, not only in data_report.json."""
    import logging

    from hftraining.core.config import DataConfig

    good = _aem().assign(symbol="AEM")
    bad = pd.read_csv(sample_data_dir() / "WPM.csv").tail(50).assign(symbol="WPM", volume=-1.0)
    path = tmp_path / "panel.csv"
    pd.concat([good, bad]).to_csv(path, index=False)
    d = DataConfig(data_dir=str(path), symbols=["AEM", "WPM"], cache_dir=None, sequence_length=20,
                   prediction_horizon=3, features=["log_return_1"])
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        data = prepare(d)
    assert data.train.symbols == ["AEM"]
    said = [r.getMessage() for r in caplog.records if "WPM" in r.getMessage()]
    assert len(said) == 1 and "no usable rows" in said[0] and "negative_volume" in said[0]


def test_a_latest_row_filled_from_the_row_before_is_named(tmp_path):
    """A model trained with ``data.invalid_values=ffill``: today's bar with its close not in yet is
    filled with yesterday's close and forecast under today's date; the forecast says so, naming the
    file and line, instead of passing yesterday's price off as today's."""
    d = _ridge_folder(tmp_path, "data.symbols=[AEM]", "data.invalid_values=ffill")
    rows = _aem()
    path = tmp_path / "AEM.csv"
    rows.to_csv(path, index=False)
    fc = Forecaster.from_pretrained(d)
    said: list[str] = []
    fc.predict(str(path), warnings=said)
    assert said == []  # nothing filled: nothing said
    rows.loc[rows.index[-1], "close"] = np.nan
    rows.to_csv(path, index=False)
    table = fc.predict(str(path), warnings=said)
    assert table["as_of"].iloc[0].strftime("%Y-%m-%d") == rows["Date"].iloc[-1][:10]  # today's date, filled close
    assert len(said) == 1 and said[0].startswith(f"{path}: 1 row(s) with values filled from the row before")
    assert f"nan_or_inf: line {len(rows) + 1}" in said[0]
