"""What a user reads back from ``predict``'s CSV and what ``export`` says.

- ``predict --out f.csv`` writes ``as_of`` in one ISO 8601 form per file: symbols whose last bar is
  stamped at a whole second and at a fraction of one read back with ``pd.read_csv(parse_dates=...)`` as
  the forecasts' timestamps, as the CSV pandas wrote did, not as text.
- ``export`` of a bf16 run does not warn of a slow bf16 forward on a CPU without bf16 instructions: the
  graph computes in fp32, and its metadata still names the precision the run was evaluated in.
"""

import json
import logging

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import ModelConfig, load_config
from hftraining.data.pipeline import prepare
from hftraining.data.synth import write_synth
from hftraining.inference import forecaster as forecaster_module
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model


def _model(pre: dict, d):
    """An untrained transformer folder of the preprocessing ``pre``."""
    import torch

    torch.manual_seed(0)
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre["feature_columns"]), pre["horizon"], pre["seq_len"]).save_pretrained(d, preprocessing=pre)
    return d


def test_predict_csv_as_of_reads_back_as_timestamps_when_one_symbol_is_stamped_at_a_fraction_of_a_second(tmp_path):
    write_synth(tmp_path / "bars", 2, 24 * 40, freq="h", session="24h")
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3",
                             f"data.data_dir={tmp_path / 'bars'}", "data.max_gap=3D"])
    d = _model(prepare(cfg.data).preprocessing.to_dict(), tmp_path / "model")
    new = tmp_path / "new"
    new.mkdir()
    for i, p in enumerate(sorted((tmp_path / "bars").glob("*.csv"))):
        f = pd.read_csv(p).tail(200)
        if i == 1:  # this symbol's bars close 250 ms after the hour (e.g. an exchange's millisecond stamps)
            f["timestamp"] = (pd.to_datetime(f["timestamp"]) + pd.Timedelta("250ms")).map(lambda t: t.isoformat())
        f.to_csv(new / p.name, index=False)
    want = Forecaster.from_pretrained(d).predict(str(new))["as_of"]
    assert {t.microsecond for t in want} == {0, 250_000}  # one symbol at the hour, one a quarter second after

    assert main(["predict", str(d), "--data", str(new), "--out", str(tmp_path / "f.csv")]) == 0
    got = pd.read_csv(tmp_path / "f.csv", parse_dates=["as_of"])["as_of"]
    assert isinstance(got.dtype, pd.DatetimeTZDtype), list(got)  # not text a client must parse row by row
    assert list(got) == list(want)


def test_export_of_a_bf16_run_does_not_warn_of_a_bf16_forward_and_names_the_runs_precision(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", "data.symbols=[AEM, WPM]"])
    run = tmp_path / "run"
    _model(prepare(cfg.data).preprocessing.to_dict(), run / "final")
    (run / "config.json").write_text(json.dumps({"training": {"use_mixed_precision": True}}))  # a bf16 run
    monkeypatch.setattr(forecaster_module, "cpu_has_bf16", lambda: False)
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger(forecaster_module.__name__)
    logger.addHandler(handler)
    try:
        Forecaster.from_pretrained(run)  # predict and serve forecast this run in bf16: they say it is slow here
        assert [m for m in said if "bf16 instructions" in m], said
        said.clear()
        out = tmp_path / "m.onnx"
        assert main(["export", str(run), "--format", "onnx", "--out", str(out), "--no-check"]) == 0
    finally:
        logger.removeHandler(handler)
    assert not [m for m in said if "bf16 instructions" in m], said  # no bf16 forward runs in an export
    meta = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert meta["hftraining.precision"] == "fp32 (the run evaluated in bf16)"
