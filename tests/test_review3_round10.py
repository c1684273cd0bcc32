"""``predict --out`` names as users write them: a dated file name whose last dot starts a number
(``forecasts.2024.06.01``) names no other format than the CSV written, and is written as it was."""

import pandas as pd

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.models import build_model


def _folder(path) -> None:
    """An untrained transformer folder fit on AEM (20 rows in, 3 steps out)."""
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=3", "data.symbols=[AEM]"])
    pre = prepare(cfg.data).preprocessing
    m = ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0)
    build_model(m, len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(path, preprocessing=pre.to_dict())


def test_predict_out_with_a_dated_name_is_written_and_a_format_suffix_still_refused(tmp_path, capsys):
    # "forecasts.2024.06.01" was refused with "a .01 file would hold CSV": its suffix is a number, not a format
    from hftraining.cli import main

    _folder(tmp_path / "m")
    data = str(sample_data_dir() / "AEM.csv")
    for name in ("forecasts.2024.06.01", "forecasts.2024-06-01", "runs.v2/forecasts", "forecasts.CSV"):
        out = tmp_path / name
        assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(out)]) == 0, capsys.readouterr().err
        assert set(pd.read_csv(out)["symbol"]) == {"AEM"}
    capsys.readouterr()
    out = tmp_path / "forecasts.2024.06.01.parquet"  # a format's suffix after the date: refused, nothing written
    assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "predict writes CSV text" in err, err
    assert not out.exists()
