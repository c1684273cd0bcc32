"""A model with a feature that never settles within the rows that can be measured (``rsi_1700``:
Wilder's smoothing with alpha = 1/1700 needs about 17,000 rows) still predicts and serves: its
settled rows are unknown (None, ``null`` in ``GET /model``) and every forecast carries a warning
naming the feature and saying the forecast depends on the whole history sent."""

import logging

import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.pipeline import prepare
from hftraining.data.synth import write_synth
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model

SLOW = "rsi_1700"  # warm-up 1700 rows: the synthetic symbol has 2000
ROWS = 2000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("settle") / "data"
    write_synth(d, symbols=1, rows=ROWS)
    return d


def _model(d, data_dir, features):
    """An (untrained, seeded) model folder of the synthetic symbol: 20 rows in, 3 steps out."""
    cfg = load_config(None, [f"data.data_dir={data_dir}", f"data.features=[{', '.join(features)}]",
                             "data.sequence_length=20", "data.prediction_horizon=3"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory, data_dir):
    return _model(tmp_path_factory.mktemp("slow") / "model", data_dir, ["log_return_1", SLOW])


def _frame(data_dir, n=None) -> pd.DataFrame:
    frame = pd.read_csv(data_dir / "SYN000.csv")
    return frame if n is None else frame.tail(n).reset_index(drop=True)


def test_predict_of_a_never_settling_feature_forecasts_with_a_warning(slow_model, data_dir, caplog):
    fc = Forecaster.from_pretrained(slow_model)
    assert fc.settled_rows() is None
    warnings: list[str] = []
    table = fc.predict({"SYN000": _frame(data_dir)}, warnings=warnings)
    assert len(table) == 3 and table["forecast_return"].notna().all()
    assert len(warnings) == 1
    line = warnings[0]
    assert line.startswith("SYN000: the features rsi_1700 do not settle") and "whole history sent (2000 rows)" in line
    assert "log_return_1" not in line  # a feature that has settled is not named
    with caplog.at_level(logging.WARNING, logger="hftraining"):  # without a list: logged, as every forecast is
        fc.predict({"SYN000": _frame(data_dir, 1800)})
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "rsi_1700" in lines[0] and "(1800 rows)" in lines[0]


def test_a_never_settling_feature_also_names_the_others_not_yet_settled(tmp_path, data_dir):
    from hftraining.data.features import feature_settle

    # rsi_1000 settles (after about 9,500 rows), but not within the rows after rsi_1700's warm-up
    fc = Forecaster.from_pretrained(_model(tmp_path / "model", data_dir, ["rsi_1000", SLOW]))
    assert fc.settled_rows() is None
    warnings: list[str] = []
    fc.predict({"SYN000": _frame(data_dir, fc.min_rows())}, warnings=warnings)
    assert len(warnings) == 1
    assert "rsi_1700 do not settle" in warnings[0] and "rsi_1000 have not settled either" in warnings[0]
    assert f"they need {feature_settle(['rsi_1000']) + 20} rows" in warnings[0]


def test_serve_starts_and_reports_settled_rows_null(slow_model, data_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from hftraining.inference.serve import create_app
    from test_inference_serve import running

    with running(create_app(slow_model)) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            r = client.get("/model")
            assert r.status_code == 200 and r.json()["settled_rows"] is None
            bars = [{"timestamp": t, "open": o, "high": h, "low": lo, "close": c, "volume": v}
                    for t, o, h, lo, c, v in _frame(data_dir, 1800)[["timestamp", "open", "high", "low", "close",
                                                                      "volume"]].itertuples(index=False)]
            r = client.post("/predict", json={"symbols": {"SYN000": bars}})
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["forecasts"]) == 3
            assert len(body["warnings"]) == 1 and "rsi_1700 do not settle" in body["warnings"][0]


def test_cli_predict_exits_0_and_warns_on_stderr(slow_model, data_dir, tmp_path, capsys):
    from hftraining.cli import main

    out = tmp_path / "f.csv"
    assert main(["predict", str(slow_model), "--data", str(data_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "SYN000: the features rsi_1700 do not settle" in err and "whole history sent" in err
    assert len(pd.read_csv(out)) == 3


def test_a_settling_model_keeps_its_settled_rows_and_no_warning(tmp_path, data_dir):
    from hftraining.data.features import feature_settle, settle_unknown

    assert feature_settle([SLOW]) is None and feature_settle(["rsi_14", SLOW]) is None
    assert settle_unknown(["rsi_14", SLOW, "macd_12_26_9"]) == [SLOW]
    fc = Forecaster.from_pretrained(_model(tmp_path / "model", data_dir, ["log_return_1", "rsi_14"]))
    need = fc.settled_rows()
    assert isinstance(need, int) and need == feature_settle(["log_return_1", "rsi_14"]) + 20
    warnings: list[str] = []
    fc.predict({"SYN000": _frame(data_dir, need)}, warnings=warnings)
    assert warnings == []
    fc.predict({"SYN000": _frame(data_dir, fc.min_rows())}, warnings=warnings)
    assert len(warnings) == 1 and warnings[0].startswith(f"SYN000: {fc.min_rows()} rows < {need} settled rows")


def test_training_data_preparation_warns_of_a_never_settling_feature(data_dir, caplog):
    """The user learns it when the data are prepared for training, not first in production."""
    cfg = load_config(None, [f"data.data_dir={data_dir}", f"data.features=[log_return_1, {SLOW}]",
                             "data.sequence_length=20", "data.prediction_horizon=3"])
    with caplog.at_level(logging.WARNING, logger="hftraining.data.pipeline"):
        prepare(cfg.data)
    said = [r.getMessage() for r in caplog.records if "do not settle" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"data.features: {SLOW} do not settle within")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hftraining.data.pipeline"):
        prepare(load_config(None, [f"data.data_dir={data_dir}", "data.features=[log_return_1, rsi_14]",
                                   "data.sequence_length=20", "data.prediction_horizon=3"]).data)
    assert not [r for r in caplog.records if "do not settle" in r.getMessage()]
