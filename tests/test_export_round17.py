"""Forecasts from a model folder: a kept jump said in the forecast's warnings, a run's final/ given as "."."""

import json

import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.pipeline import prepare
from hftraining.inference.folders import baselines_dir, run_folder, run_precision
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model

SAMPLE = __import__("hftraining").__path__[0] + "/sample_data/AEM.csv"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model folder with real preprocessing and random weights (what is checked needs no training)."""
    d = tmp_path_factory.mktemp("model") / "final"
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=24", "data.prediction_horizon=4"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                    pre.seq_len)
    m.save_pretrained(d, preprocessing=pre.to_dict())
    return d


def _spiked() -> tuple[pd.DataFrame, int]:
    """The bundled AEM rows with a bad print (a close at 30% of its level) three rows before the last:
    a jump that ``data.jumps=flag`` (the default) keeps. Returns the frame and the spike's position."""
    df = pd.read_csv(SAMPLE)
    k = len(df) - 3
    df.loc[k, ["open", "high", "low", "close"]] *= 0.3
    return df, k


def test_a_jump_the_rules_keep_is_said_in_the_forecast_warnings(model_dir, tmp_path):
    """Under ``data.jumps=flag`` a close far from the last kept one stays among the rows and the forecast
    reads a -120% return inside its window: training's data report lists such a row, but predict, serve and
    ``Forecaster.predict(warnings=...)`` said nothing of it (only dropped and filled rows were named)."""
    fc = Forecaster.from_pretrained(model_dir)
    df, k = _spiked()
    warnings: list[str] = []
    table = fc.predict({"AEM": df}, warnings=warnings)
    assert len(table) == 4  # still forecast, from the rows as they are
    said = [w for w in warnings if "flagged" in w]
    assert len(said) == 1, warnings
    assert f"jump: position {k}" in said[0] and "data.jumps=flag" in said[0] and said[0].startswith("AEM: 1 row(s)")
    # a file: named by its line (the header is line 1)
    path = tmp_path / "AEM.csv"
    df.to_csv(path, index=False)
    warnings = []
    fc.predict(str(path), warnings=warnings)
    said = [w for w in warnings if "flagged" in w]
    assert len(said) == 1 and f"jump: line {k + 2}" in said[0] and str(path) in said[0], warnings
    # the same rows without the spike: nothing flagged, nothing said
    warnings = []
    fc.predict({"AEM": pd.read_csv(SAMPLE)}, warnings=warnings)
    assert not [w for w in warnings if "flagged" in w], warnings


def test_predict_prints_a_kept_jump_on_stderr(model_dir, tmp_path, capsys):
    from hftraining.cli import main

    df, k = _spiked()
    path = tmp_path / "AEM.csv"
    df.to_csv(path, index=False)
    assert main(["predict", str(model_dir), "--data", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"jump: line {k + 2}" in err and "flagged" in err


def test_a_run_s_final_folder_given_as_dot_is_that_run_s_model(model_dir, monkeypatch):
    """``hftraining predict .`` (or evaluate, serve) from inside a run's ``final/`` read it as a bare model
    folder: fp32 where the run trained and was scored in bf16, and without the run's fitted baselines and
    settings, while ``../final`` from the run folder read the same folder as the run's."""
    run = model_dir.parent
    (run / "config.json").write_text(json.dumps({"training": {"precision": "bf16"}}))
    try:
        monkeypatch.chdir(model_dir)
        assert run_precision("../final") == "bf16"  # the same folder by another name
        assert run_precision(".") == "bf16"
        assert run_folder(".").resolve() == run.resolve()
        assert baselines_dir(".").resolve() == (run / "baselines").resolve()
        assert Forecaster.from_pretrained(".").precision == "bf16"
        (model_dir / "sub").mkdir()
        monkeypatch.chdir(model_dir / "sub")
        assert run_precision("..") == "bf16"
    finally:
        (run / "config.json").unlink()
        if (model_dir / "sub").exists():
            (model_dir / "sub").rmdir()
