"""Forecasting from new data as a user sends it after training.

- A model whose inputs are taken across symbols (the ``market`` features, the cross-sectional labels)
  reads the symbols sent as each date's universe: a forecast from other symbols than training's is
  not the one evaluation scored, and says so.
- Under a ``data.timezone`` other than UTC, intraday stamps sent without a zone are read as UTC (local
  times would read hours off): ``Forecaster.predict``'s warnings and the server's ``"warnings"`` name
  them, for a file, a frame and a JSON body alike, as training's report does.
"""

import pandas as pd
import pytest

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.synth import write_synth
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model


def _folder(tmp_path, name: str, *overrides: str) -> Forecaster:
    """An untrained transformer folder fit on AEM, WPM and NIO (20 rows in, 3 steps out)."""
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", "data.symbols=[AEM, WPM, NIO]",
                             *overrides])
    pre = prepare(cfg.data).preprocessing
    d = tmp_path / name
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return Forecaster.from_pretrained(d, precision="fp32")


def _frames(*symbols: str) -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(sample_data_dir() / f"{s}.csv").tail(300).reset_index(drop=True) for s in symbols}


def test_a_cross_sectional_model_given_other_symbols_than_its_training_ones_says_so(tmp_path):
    fc = _folder(tmp_path, "cs", "data.target=cs_zscore")
    w: list[str] = []
    fc.predict(_frames("AEM", "WPM", "NIO"), warnings=w)
    assert w == []  # the training universe: the inputs evaluation scored
    w = []
    table = fc.predict(_frames("ARM", "PDD"), warnings=w)  # two new symbols: each date's z-scores are ±0.71
    assert sorted(table["symbol"].unique()) == ["ARM", "PDD"]  # still forecast
    assert len(w) == 1 and w[0].startswith("universe: "), w
    assert "AEM, NIO, WPM of them not sent" in w[0] and "ARM, PDD sent but not among them" in w[0]
    assert "cs_zscore" in w[0]


def test_market_features_given_part_of_the_panel_and_a_new_symbol_say_so(tmp_path):
    fc = _folder(tmp_path, "market", "data.features=[log_return, rsi_14, market_5]")
    w: list[str] = []
    fc.predict(_frames("AEM", "WPM", "PDD"), warnings=w)
    assert len(w) == 1 and "NIO of them not sent" in w[0] and "PDD sent but not among them" in w[0], w
    assert "market_5" in w[0]
    w = []
    fc.predict(_frames("AEM", "WPM", "NIO", "ARM"), warnings=w)  # the panel and one more: another universe return
    assert len(w) == 1 and "ARM sent but not among them" in w[0] and "not sent" not in w[0], w


def test_a_model_of_each_symbol_alone_warns_of_no_universe(tmp_path):
    fc = _folder(tmp_path, "plain")
    w: list[str] = []
    fc.predict(_frames("ARM", "PDD"), warnings=w)
    assert w == []


NY = "America/New_York"


@pytest.fixture(scope="module")
def local_clock(tmp_path_factory):
    """(forecaster, folder of 5-minute bars stamped in UTC with their zone) of an untrained model whose
    ``hour`` feature reads New York's clock."""
    tmp = tmp_path_factory.mktemp("clock")
    write_synth(tmp / "bars", 2, 800, freq="5min")
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", f"data.data_dir={tmp / 'bars'}",
                             "data.features=[log_return_1, hour]", f"data.timezone={NY}", "data.max_gap=10min"])
    pre = prepare(cfg.data).preprocessing
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(tmp / "m", preprocessing=pre.to_dict())
    return Forecaster.from_pretrained(tmp / "m", precision="fp32"), tmp / "bars"


def _local(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its stamps written as New York wall-clock times without an offset."""
    ts = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_convert(NY)
    return frame.assign(timestamp=ts.dt.strftime("%Y-%m-%d %H:%M:%S"))


def test_zoneless_intraday_stamps_are_named_in_the_warnings_of_a_file_and_a_frame(local_clock, tmp_path):
    fc, bars = local_clock
    frame = pd.read_csv(bars / "SYN000.csv")
    w: list[str] = []
    fc.predict(str(bars / "SYN000.csv"), warnings=w)
    assert w == []  # stamps with their zone: nothing to say
    _local(frame).to_csv(tmp_path / "SYN000.csv", index=False)
    w = []
    fc.predict(str(tmp_path / "SYN000.csv"), warnings=w)  # the server's upload, Forecaster.predict(warnings=...)
    assert len(w) == 1 and "without a zone or UTC offset in SYN000.csv" in w[0] and NY in w[0], w
    w = []
    fc.predict({"SYN000": _local(frame)}, warnings=w)
    assert len(w) == 1 and "without a zone or UTC offset in SYN000" in w[0], w


def test_the_server_names_zoneless_intraday_stamps_of_a_json_body_and_an_upload(local_clock, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    fc, bars = local_clock
    client = TestClient(create_app(fc.model_dir))
    frame = pd.read_csv(bars / "SYN001.csv").tail(200)
    utc = pd.to_datetime(frame["timestamp"], utc=True)
    cells = frame[["open", "high", "low", "close", "volume"]].to_dict(orient="records")
    answers = {}
    for name, stamps in (("zoned", [t.isoformat() for t in utc]),
                         ("zoneless", [t.tz_localize(None).isoformat() for t in utc])):
        body = {"symbols": {"SYN001": [{"timestamp": t, **c} for t, c in zip(stamps, cells)]}}
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        answers[name] = r.json()
    assert answers["zoned"]["warnings"] == []
    said = answers["zoneless"]["warnings"]
    assert len(said) == 1 and "without a zone or UTC offset in SYN001" in said[0] and NY in said[0], said
    # read as UTC all the same: the same forecast, as of the same bar
    assert answers["zoneless"]["forecasts"] == answers["zoned"]["forecasts"]
    r = client.post("/predict/csv", files={"file": ("SYN001.csv", _local(frame).to_csv(index=False).encode())})
    assert r.status_code == 200, r.text
    assert any("without a zone or UTC offset in SYN001.csv" in w for w in r.json()["warnings"]), r.json()["warnings"]


def test_predict_out_with_another_format_s_suffix_is_one_line_and_writes_nothing(tmp_path, capsys):
    """``predict --out forecasts.parquet`` wrote CSV text under that name and exited 0: the job reading it
    as Parquet failed later. A name without a suffix and a ``.csv`` one are written as before."""
    from hftraining.cli import main

    _folder(tmp_path, "m")
    capsys.readouterr()  # what building the folder logged (a feature store hit)
    data = str(sample_data_dir() / "AEM.csv")
    for name in ("forecasts.parquet", "forecasts.JSON"):
        out = tmp_path / name
        assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {out}: predict writes CSV text; give a .csv file name" in err, err
        assert not out.exists()
    for name in ("forecasts.csv", "forecasts"):
        assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(tmp_path / name)]) == 0
        assert set(pd.read_csv(tmp_path / name)["symbol"]) == {"AEM"}  # a row per step
