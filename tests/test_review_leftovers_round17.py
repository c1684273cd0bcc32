"""Integer symbol codes that pandas reads as floats (7203.0) are named as the model predicting from them names its
symbols: a model trained on a long CSV file written from such a column (cells "7203.0") forecasts the same frame read
back with pandas, and a long Parquet file's scan names a large float code as the frame of its rows does."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.core.config import load_config  # noqa: E402
from hftraining.data.io import sample_data_dir, split_symbols  # noqa: E402
from hftraining.data.sources import _long_symbols  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402
from hftraining.workflows.train_run import train  # noqa: E402

CODES = {"AEM": 7203.0, "WPM": 6758.0}


@pytest.fixture(scope="module")
def float_coded_run(tmp_path_factory):
    """A ridge run with per-symbol scalers trained on one long CSV file that pandas wrote from a float symbol column
    (an integer column with an empty cell): its cells read "7203.0", the names training gives the symbols."""
    tmp = tmp_path_factory.mktemp("floatcoded")
    (tmp / "data").mkdir()
    long = pd.concat([pd.read_csv(sample_data_dir() / f"{name}.csv").assign(symbol=code) for name, code in CODES.items()],
                     ignore_index=True)
    long.loc[3, "symbol"] = np.nan
    long.to_csv(tmp / "data" / "long.csv", index=False)
    train(load_config(None, tiny(tmp / "run", "model.type=ridge", "training.max_steps=5", "evaluation.report=false",
                                 f"data.data_dir={tmp / 'data'}", "data.symbols=null", "data.scale_per_symbol=true",
                                 f"data.cache_dir={tmp / 'cache'}")))
    return tmp


def test_a_model_trained_on_float_written_codes_forecasts_the_frame_read_back(float_coded_run):
    """predict(pd.read_csv(long.csv)) named the symbols '7203' and '6758', which the model (trained on '7203.0',
    '6758.0') never saw: its per-symbol scaler refused them, and without one the forecast table named other symbols
    than predict(long.csv) did."""
    path = float_coded_run / "data" / "long.csv"
    f = Forecaster.from_pretrained(float_coded_run / "run")
    assert sorted(f.preprocessing.source_rows) == ["6758.0", "7203.0"]
    frame = pd.read_csv(path).dropna(subset=["symbol"]).reset_index(drop=True)
    assert frame["symbol"].dtype == np.float64
    got = f.predict(frame)
    assert sorted(set(got["symbol"])) == ["6758.0", "7203.0"]
    ref = f.predict(path)
    pd.testing.assert_frame_equal(got.sort_values(["symbol", "step"]).reset_index(drop=True),
                                  ref.sort_values(["symbol", "step"]).reset_index(drop=True))
    # with no model to name them, the codes are integers, as the same column without its empty cell names them
    assert sorted(split_symbols(frame, Path("<frame>"))) == ["6758", "7203"]


def test_large_float_codes_are_named_as_the_long_parquet_scan_named_them(tmp_path):
    """A long Parquet file of float codes: training's scan names 1e15 '1e+15' and -0.0 '-0' (Arrow's text of the
    floats); predict from the frame of the same rows (pd.read_parquet) named them '1000000000000000' and '0',
    symbols the model never saw, which its per-symbol scaler refused."""
    (tmp_path / "data").mkdir()
    codes = {"AEM": 1e15, "WPM": -0.0}
    long = pd.concat([pd.read_csv(sample_data_dir() / f"{name}.csv").assign(symbol=code) for name, code in codes.items()],
                     ignore_index=True)
    path = tmp_path / "data" / "long.parquet"
    long.to_parquet(path)
    trained, _ = _long_symbols(path, "symbol")
    assert sorted(trained) == ["-0", "1e+15"]
    train(load_config(None, tiny(tmp_path / "run", "model.type=ridge", "training.max_steps=5", "evaluation.report=false",
                                 f"data.data_dir={tmp_path / 'data'}", "data.symbols=null", "data.scale_per_symbol=true",
                                 f"data.cache_dir={tmp_path / 'cache'}")))
    f = Forecaster.from_pretrained(tmp_path / "run")
    assert sorted(f.preprocessing.source_rows) == ["-0", "1e+15"]
    back = pd.read_parquet(path)
    assert back["symbol"].dtype == np.float64
    got, ref = f.predict(back), f.predict(path)
    assert sorted(set(got["symbol"])) == ["-0", "1e+15"]
    pd.testing.assert_frame_equal(got.sort_values(["symbol", "step"]).reset_index(drop=True),
                                  ref.sort_values(["symbol", "step"]).reset_index(drop=True))
    # with no model to name them, or one that knows none of them, the codes are integers
    assert sorted(split_symbols(back, Path("<frame>"))) == ["0", "1000000000000000"]
    assert sorted(split_symbols(back, Path("<frame>"), ["AAPL"])) == ["0", "1000000000000000"]
