"""A model folder is refused, in one line naming its file, where what it holds could not be served as it
says: a LightGBM booster whose leaf value is NaN or infinite (its forecasts would be), and an
``intervals.json`` whose levels would share the forecast columns ``lower_<pct>``/``upper_<pct>``."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from hftraining.cli import main
from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from hftraining.models.folder import INTERVALS_FILE
from hftraining.models.intervals import Calibration

CSV = str(sample_data_dir() / "AEM.csv")


@pytest.fixture(scope="module")
def data():
    return prepare(load_config(None, ["data.symbols=[AEM]", "data.sequence_length=20", "data.prediction_horizon=3"]).data)


@pytest.fixture(scope="module")
def lightgbm_folder(data, tmp_path_factory):
    """A fitted LightGBM model folder (AEM, 20 rows in, 3 steps out)."""
    pre = data.preprocessing
    m = build_model(ModelConfig(type="lightgbm", lightgbm_rounds=20), len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.fit_windows(data.train, data.val)
    return m.save_pretrained(tmp_path_factory.mktemp("gbm") / "model", preprocessing=pre.to_dict())


@pytest.fixture(scope="module")
def transformer_folder(data, tmp_path_factory):
    pre = data.preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                    pre.seq_len)
    return m.save_pretrained(tmp_path_factory.mktemp("tf") / "model", preprocessing=pre.to_dict())


def _predict(folder, tmp_path, capsys) -> tuple[int, str, pd.DataFrame | None]:
    """``hftraining predict folder --data AEM.csv``: (exit code, stderr, the forecast table or None)."""
    out = tmp_path / "f.csv"
    out.unlink(missing_ok=True)
    capsys.readouterr()
    rc = main(["predict", str(folder), "--data", CSV, "--out", str(out)])
    return rc, capsys.readouterr().err, pd.read_csv(out) if out.exists() else None


def _set_first_leaf(text: str, value: str) -> str:
    """LightGBM model ``text`` with the first leaf value of its first tree set to ``value``, ``tree_sizes``
    kept true (so only the value itself is wrong)."""
    start = text.index("\nleaf_value=") + len("\nleaf_value=")
    stop = start + len(re.match(r"\S*", text[start:]).group())
    text = text[:start] + value + text[stop:]
    first, end = text.find("\nTree="), text.find("\nend of trees")
    blocks = re.split(r"(?<=\n)(?=Tree=)", text[first + 1:end + 1])
    return re.sub(r"tree_sizes=[0-9 ]+", "tree_sizes=" + " ".join(str(len(b.encode())) for b in blocks), text, count=1)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_a_lightgbm_folder_whose_leaf_value_is_not_finite_is_refused_in_one_line(lightgbm_folder, tmp_path, capsys,
                                                                                 value):
    rc, err, table = _predict(lightgbm_folder, tmp_path, capsys)
    assert rc == 0 and np.isfinite(table["forecast_return"]).all()  # the intact booster forecasts
    d = tmp_path / "edited"
    shutil.copytree(lightgbm_folder, d)
    state = load_file(str(d / "model.safetensors"))
    text = _set_first_leaf(bytes(state["booster_0"].numpy()).decode("utf-8"), value)
    state["booster_0"] = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    # LightGBM parses the value: the folder loaded and forecast NaN or ±inf for every window reaching that leaf,
    # where any other model's folder holding such a weight is refused
    rc, err, table = _predict(d, tmp_path, capsys)
    assert rc == 2 and table is None, err
    assert err.count("\n") == 1 and err.startswith("hftraining: error: "), err
    assert "model.safetensors" in err and "booster_0: tree 0: leaf_value holds NaN or infinite values" in err


@pytest.mark.parametrize("levels", [[0.9, 0.9], [0.8, 0.9, 0.9000001]])
def test_intervals_whose_levels_share_forecast_columns_are_refused_in_one_line(transformer_folder, tmp_path, capsys,
                                                                               levels):
    d = tmp_path / "model"
    shutil.copytree(transformer_folder, d)
    rng = np.random.default_rng(0)

    def calibrate(levels):
        cal = Calibration.fit(rng.normal(size=(200, 3)) * 0.01, rng.normal(size=(200, 3)) * 0.01, levels)
        (d / INTERVALS_FILE).write_text(json.dumps(cal.to_dict()))

    calibrate([0.8, 0.9])
    table = Forecaster.from_pretrained(d).predict(CSV)
    assert [c for c in table.columns if c.startswith(("lower", "upper"))] == ["lower_80", "upper_80", "lower_90", "upper_90"]
    # two levels printing alike were both served as lower_90/upper_90, the later bounds over the earlier ones
    calibrate(levels)
    rc, err, table = _predict(d, tmp_path, capsys)
    assert rc == 2 and table is None, err
    assert err.count("\n") == 1 and err.startswith("hftraining: error: "), err
    assert f"{d / INTERVALS_FILE}: levels 0.9 and {levels[-1]}" in err and "lower_90/upper_90" in err, err


@pytest.mark.parametrize("name", ["transformer", "patchtst", "dlinear", "ridge", "zero", "repeat", "drift",
                                  "seasonal_naive"])
def test_every_model_forecasts_a_batch_of_no_windows_as_an_empty_forecast(name):
    # (B, L, F) -> (B, H) for every B: PatchTST's head input and DLinear's moving average were reshaped with a
    # -1 that a batch of no windows leaves undetermined (a RuntimeError where every other model gave (0, H))
    torch.manual_seed(0)
    cfg = ModelConfig(type=name, hidden_size=8, num_heads=2, num_layers=1, patch_len=4, patch_stride=2, moving_avg=4,
                      season_length=3, ridge_lags=4)
    model = build_model(cfg, 3, 2, 10).eval()
    x, past = torch.randn(5, 10, 3), torch.randn(5, 10)
    mask = torch.ones(5, 10, dtype=torch.bool)
    mask[1, :6] = False
    with torch.no_grad():
        whole = model(x, mask, past).prediction
        for b in (0, 1, 2):  # a window's forecast is the same in any batch (to float rounding: kernels differ by size)
            torch.testing.assert_close(model(x[:b], mask[:b], past[:b]).prediction, whole[:b], rtol=0, atol=1e-6)
            assert model(x[:b], None, past[:b]).prediction.shape == (b, 2)


def test_a_lightgbm_model_forecasts_a_batch_of_no_windows_as_an_empty_forecast(lightgbm_folder):
    from hftraining.models import ForecastModel

    model = ForecastModel.from_pretrained(lightgbm_folder)
    x, past = torch.zeros(0, model.seq_len, model.n_features), torch.zeros(0, model.seq_len)
    assert model(x, None, past).prediction.shape == (0, model.horizon)
