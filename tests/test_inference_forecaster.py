"""Inference API: predict applies training's preprocessing and gives evaluate's forecasts."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.data.io import sample_data_dir
from hftraining.core.errors import DataError
from hftraining.models.predict import predict_scaled
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inference")
    cfg = load_config(None, tiny(
        tmp / "run", "model.quantiles=[0.9, 0.1, 0.5]", "model.classification_threshold=0.005",
        "training.max_steps=8", "training.save_steps=0", "evaluation.eval_steps=0",
    ))
    train(cfg)
    return tmp / "run"


def _csv(sym):
    return pd.read_csv(sample_data_dir() / f"{sym}.csv")


def test_predict_equals_evaluate_forecast_of_the_same_window(run_dir):
    fc = Forecaster.from_pretrained(run_dir)
    ws = fc.windows(None, "test")
    scored = predict_scaled(fc.model, ws, fc.batch_size) * fc.preprocessing.target_scale  # what evaluate scores
    checked = 0
    for i in (0, len(ws) // 2, len(ws) - 1):
        sym = ws.symbols[ws.symbol_ids[i]]
        as_of = pd.Timestamp(int(ws.times[i]), unit="ns", tz="UTC")
        raw = _csv(sym)
        cut = raw[pd.to_datetime(raw["Date"], utc=True) <= as_of]  # the data as it was at the window's origin
        table = fc.predict({sym: cut})
        assert list(table["step"]) == [1, 2, 3]
        assert (table["as_of"] == as_of).all() and (table["symbol"] == sym).all()
        np.testing.assert_allclose(table["forecast_return"], scored[i], rtol=1e-5, atol=1e-7)
        assert table["last_close"].iloc[0] == pytest.approx(float(cut["close"].iloc[-1]))
        checked += 1
    assert checked == 3


def test_table_has_quantiles_and_probabilities_in_user_order(run_dir):
    fc = Forecaster.from_pretrained(run_dir)
    table = fc.predict([str(sample_data_dir() / "AEM.csv"), str(sample_data_dir() / "WPM.csv")])
    assert len(table) == 6 and list(table["symbol"].unique()) == ["AEM", "WPM"]
    for col in ("return_q0.9", "return_q0.1", "return_q0.5", "p_sell", "p_hold", "p_buy"):
        assert col in table.columns, col
    assert (table["return_q0.1"] <= table["return_q0.5"]).all() and (table["return_q0.5"] <= table["return_q0.9"]).all()
    np.testing.assert_allclose(table[["p_sell", "p_hold", "p_buy"]].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(table["forecast_price"], table["last_close"] * np.exp(table["forecast_cum_return"]))
    np.testing.assert_allclose(table.groupby("symbol")["forecast_return"].cumsum(), table["forecast_cum_return"])


def test_batched_frame_equals_one_symbol_at_a_time(run_dir):
    fc = Forecaster.from_pretrained(run_dir)
    long = pd.concat([_csv("AEM").assign(symbol="AEM"), _csv("WPM").assign(Symbol="WPM").rename(columns={"Symbol": "symbol"})])
    both = fc.predict(long)
    one = pd.concat([fc.predict({"AEM": _csv("AEM")}), fc.predict({"WPM": _csv("WPM")})], ignore_index=True)
    np.testing.assert_allclose(both["forecast_return"], one["forecast_return"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(both["p_buy"], one["p_buy"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mutate, words", [
    (lambda f: f.drop(columns="volume"), ["AEM", "missing column 'volume'"]),
    (lambda f: f.drop(columns="Date"), ["AEM", "missing column 'timestamp'"]),
    (lambda f: f.tail(30), ["AEM", "30 usable rows", "needs 53", "data.sequence_length 20"]),
])
def test_bad_input_is_a_one_line_error_naming_the_problem(run_dir, mutate, words):
    fc = Forecaster.from_pretrained(run_dir)
    with pytest.raises(DataError) as e:
        fc.predict({"AEM": mutate(_csv("AEM"))})
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_frame_without_symbol_column_and_strict_rows(run_dir):
    fc = Forecaster.from_pretrained(run_dir)
    with pytest.raises(DataError, match="'symbol' column"):
        fc.predict(_csv("AEM"))
    bad = _csv("AEM")
    bad.loc[bad.index[-3], "close"] = -1.0
    assert len(fc.predict({"AEM": bad})) == 3  # training's rule (invalid_values=drop) drops the row
    with pytest.raises(DataError, match=r"row \d+.*'close'.*invalid_values=error"):
        fc.predict({"AEM": bad}, strict=True)


def test_predict_cli_writes_quantile_and_class_columns(run_dir, tmp_path):
    from hftraining.cli import main

    out = tmp_path / "f.csv"
    assert main(["predict", str(run_dir), "--data", str(sample_data_dir() / "AEM.csv"), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert {"return_q0.5", "p_buy", "forecast_price"} <= set(table.columns) and len(table) == 3


def test_a_model_trained_on_a_date_range_forecasts_a_file_from_its_latest_rows(tmp_path):
    """data.end_date chose the training data; a file given to predict is forecast from its newest
    rows, as the same rows passed as frames are (it was cut to the training's range: stale)."""
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=2", "evaluation.eval_steps=0",
                                 "data.end_date=2025-06-01", "data.symbols=[AEM]"))
    train(cfg)
    f = Forecaster.from_pretrained(tmp_path / "run")
    path = sample_data_dir() / "AEM.csv"
    from_file = f.predict(str(path))
    from_frame = f.predict({"AEM": pd.read_csv(path)})
    last = pd.Timestamp(pd.read_csv(path)["Date"].iloc[-1], tz="UTC")
    assert from_file["as_of"].iloc[0] == from_frame["as_of"].iloc[0] == last > pd.Timestamp("2025-06-01", tz="UTC")
    np.testing.assert_array_equal(from_file["forecast_return"], from_frame["forecast_return"])


def test_with_max_gap_a_forecast_never_reads_back_over_a_gap(tmp_path):
    """As no training window spans a gap longer than data.max_gap, and after one needs seq_len real
    rows, neither does the window predict forecasts from (it read the last rows whatever the gaps)."""
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=2", "evaluation.eval_steps=0",
                                 "data.max_gap=100h", "data.symbols=[AEM]"))
    train(cfg)
    f = Forecaster.from_pretrained(tmp_path / "run")
    frame = _csv("AEM")
    assert len(f.predict({"AEM": frame})) == 3  # the last 20 rows hold no gap over 100 h
    gapped = frame.drop(index=frame.index[-12:-5])  # a 9-trading-day hole 5 rows before the end
    with pytest.raises(DataError, match=r"AEM: 5 rows since the gap before .*data.max_gap 100h.*needs 20 rows"):
        f.predict({"AEM": gapped})
    assert len(f.predict({"AEM": frame.iloc[:-5]})) == 3  # the rows before the hole still forecast


def test_a_frame_indexed_by_its_dates_predicts_as_with_a_date_column(run_dir):
    """A frame indexed by its dates (as pandas and yfinance make them) reads as the same frame with a
    date column, and as its Parquet file does: the index is the timestamp column."""
    fc = Forecaster.from_pretrained(run_dir)
    raw = _csv("AEM")
    want = fc.predict({"AEM": raw})["forecast_return"].to_numpy()
    indexed = raw.set_index(pd.to_datetime(raw["Date"])).drop(columns="Date")
    np.testing.assert_array_equal(fc.predict({"AEM": indexed})["forecast_return"], want)
    np.testing.assert_array_equal(fc.predict(indexed.assign(symbol="AEM"))["forecast_return"], want)


def test_a_cross_sectional_label_is_forecast_only_with_the_other_symbols_of_its_dates(tmp_path):
    """A model of data.target=cs_zscore reads each past row's label, taken across the symbols of its
    date: predict from the panel cut at a test window's date gives evaluate's forecast; one symbol alone
    (every label 0) or a symbol whose latest date the others lack is an error, never another forecast."""
    import re

    import torch

    from hftraining.core.config import ModelConfig
    from hftraining.data.pipeline import prepare
    from hftraining.models import build_model

    syms = ["AEM", "WPM", "NIO"]
    cfg = load_config(None, [f"data.symbols=[{', '.join(syms)}]", "data.sequence_length=20",
                             "data.prediction_horizon=3", "data.target=cs_zscore"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(type="ridge", ridge_lags=10), len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.weight.normal_()  # any weights: the past labels are inputs of a ridge model
    m.save_pretrained(tmp_path / "model", preprocessing=pre.to_dict())
    fc = Forecaster.from_pretrained(tmp_path / "model")
    ws = fc.windows(None, "test")
    scored = predict_scaled(fc.model, ws, fc.batch_size) * fc.preprocessing.target_scale  # what evaluate scores
    i = int(np.flatnonzero(np.asarray(ws.symbols)[ws.symbol_ids] == "AEM")[-1])
    as_of = pd.Timestamp(int(ws.times[i]), unit="ns", tz="UTC")
    cut = {s: _csv(s)[pd.to_datetime(_csv(s)["Date"], utc=True) <= as_of] for s in syms}
    table = fc.predict(cut)
    np.testing.assert_allclose(table.loc[table["symbol"] == "AEM", "forecast_cs_zscore"], scored[i], rtol=1e-5, atol=1e-7)
    with pytest.raises(DataError, match=r"^AEM: the model forecasts data.target=cs_zscore.*other symbols") as e:
        fc.predict({"AEM": cut["AEM"]})
    assert "\n" not in str(e.value)
    stale = {s: f.iloc[:-2] if s != "AEM" else f for s, f in cut.items()}  # the others' last 2 dates missing
    with pytest.raises(DataError, match=rf"^AEM: no other symbol has a row at {re.escape(as_of.isoformat())} \(its latest row\)"):
        fc.predict(stale)


@pytest.mark.parametrize("precision", ["fp8", 16])
def test_an_out_of_range_value_in_a_run_s_config_json_is_an_error_naming_the_file(run_dir, tmp_path, capsys, precision):
    """A run folder's config.json is read for its training precision by predict, evaluate, backtest and
    ensemble: a bad value there named the key only, not which of the user's run folders holds it."""
    import json
    import re
    import shutil

    from hftraining.cli import main
    from hftraining.core.errors import ConfigError
    from hftraining.inference.ensemble import build_ensemble

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["training"]["precision"] = precision
    (bad / "config.json").write_text(json.dumps(cfg))
    where = f"{bad / 'config.json'}: training.precision"
    with pytest.raises(ConfigError, match=f"^{re.escape(where)}: "):
        Forecaster.from_pretrained(bad)
    with pytest.raises(ConfigError, match=f"^{re.escape(where)}: "):
        build_ensemble([run_dir, bad], tmp_path / "ens")
    capsys.readouterr()
    for cmd in (["predict", str(bad), "--data", str(sample_data_dir() / "AEM.csv")],
                ["evaluate", str(bad / "final"), "--json", "--no-report"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and where in err, err


@pytest.mark.parametrize("key, value", [("backtest_cost_bps", -1.0), ("periods_per_year", "x")])
def test_a_bad_evaluation_value_in_a_run_s_config_json_names_the_file(run_dir, tmp_path, capsys, key, value):
    """``evaluate`` and ``backtest`` read a run's recorded evaluation settings: a bad value there names the
    config.json that holds it (an ``--set`` override of it is the user's line, and takes its place)."""
    import json
    import shutil

    from hftraining.cli import main

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["evaluation"][key] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    for cmd in (["evaluate", str(bad), "--json", "--no-report"], ["backtest", str(bad)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{bad / 'config.json'}: evaluation.{key}" in err, err
