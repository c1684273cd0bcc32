"""What each row of a forecast means: a model of a label other than the return (``data.target``)
names its quantiles after that label, never as quantiles of a log return; each symbol is forecast as
of its own latest row; and under the ``market`` features a symbol whose latest row no other symbol
sent shares (so the market there is its own return) is named in a warning."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model


def _transformer_folder(tmp_path, *overrides: str):
    """An untrained transformer folder with a quantile head (levels 0.1, 0.5, 0.9), 20 rows in, 3 steps out."""
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", *overrides])
    pre = prepare(cfg.data).preprocessing
    d = tmp_path / "model"
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0, quantiles=[0.1, 0.5, 0.9])
    build_model(m, len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


def _frames(*symbols: str) -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(sample_data_dir() / f"{s}.csv").tail(300).reset_index(drop=True) for s in symbols}


def test_quantiles_of_a_cross_sectional_label_are_named_after_the_label(tmp_path):
    d = _transformer_folder(tmp_path, "data.symbols=[AEM, WPM]", "data.target=cs_zscore")
    table = Forecaster.from_pretrained(d, precision="fp32").predict(_frames("AEM", "WPM"), warnings=[])
    assert "forecast_cs_zscore" in table.columns and "forecast_return" not in table.columns
    assert not [c for c in table.columns if c.startswith("return_q")], list(table.columns)
    q = table[["cs_zscore_q0.1", "cs_zscore_q0.5", "cs_zscore_q0.9"]].to_numpy()
    assert np.isfinite(q).all() and len(q) == 6


def test_quantiles_of_the_return_keep_their_names(tmp_path):
    d = _transformer_folder(tmp_path, "data.symbols=[AEM]")
    table = Forecaster.from_pretrained(d, precision="fp32").predict(_frames("AEM"), warnings=[])
    assert {"forecast_return", "return_q0.1", "return_q0.5", "return_q0.9"} <= set(table.columns)


def _market_folder(tmp_path, symbols: str):
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", f"data.symbols=[{symbols}]",
                             "data.features=[log_return, rsi_14, market_5]"])
    pre = prepare(cfg.data).preprocessing
    d = tmp_path / "market"
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return Forecaster.from_pretrained(d, precision="fp32")


def test_a_symbol_alone_at_its_latest_date_under_market_features_is_named(tmp_path):
    """The market features read the symbols sent as the universe: a symbol sent alone, or whose latest
    rows the others lack, reads its own return as the market's there, an input unlike training's."""
    fc = _market_folder(tmp_path, "AEM, WPM, PDD")
    fr = _frames("AEM", "WPM", "PDD")
    w: list[str] = []
    full = fc.predict(fr, warnings=w)
    assert w == []
    w = []
    alone = fc.predict({"AEM": fr["AEM"]}, warnings=w)
    assert len(w) == 1 and w[0].startswith("AEM: no other symbol has a row at") and "market_5" in w[0]
    assert not np.allclose(alone["forecast_return"], full["forecast_return"][:3])  # the input differs indeed
    w = []
    stale = fc.predict({"AEM": fr["AEM"], "WPM": fr["WPM"].iloc[:-5], "PDD": fr["PDD"].iloc[:-5]}, warnings=w)
    assert len(w) == 1 and w[0].startswith("AEM: ") and str(fr["AEM"]["Date"].iloc[-1]) in w[0]
    as_of = stale.groupby("symbol")["as_of"].first().dt.strftime("%Y-%m-%d").to_dict()
    assert as_of == {"AEM": fr["AEM"]["Date"].iloc[-1], "WPM": fr["WPM"]["Date"].iloc[-6],
                     "PDD": fr["PDD"]["Date"].iloc[-6]}  # each forecast is as of its own latest row


def test_a_model_trained_on_one_symbol_with_market_features_warns_of_nothing(tmp_path):
    fc = _market_folder(tmp_path, "AEM")
    w: list[str] = []
    fc.predict(_frames("AEM"), warnings=w)
    assert w == []


def test_the_server_answers_each_symbol_as_of_its_own_latest_row_and_names_the_lone_one(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from hftraining.inference.serve import create_app

    fc = _market_folder(tmp_path, "AEM, WPM")
    fr = _frames("AEM", "WPM")
    fr["WPM"] = fr["WPM"].iloc[:-3]

    def bars(f):
        return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
                for r in f.itertuples()]

    with TestClient(create_app(fc.model_dir)) as client:
        got = client.post("/predict", json={"symbols": {s: bars(f) for s, f in fr.items()}})
    assert got.status_code == 200, got.text
    body = got.json()
    as_of = {r["symbol"]: r["as_of"] for r in body["forecasts"]}
    assert as_of == {s: f"{f['Date'].iloc[-1]}T00:00:00+00:00" for s, f in fr.items()}
    assert len(body["warnings"]) == 1 and body["warnings"][0].startswith("AEM: no other symbol has a row at")
    want = fc.predict(fr, warnings=[])
    np.testing.assert_allclose([r["forecast_return"] for r in body["forecasts"]], want["forecast_return"], rtol=1e-6)
