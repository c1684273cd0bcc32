"""Cross-sections of a panel of dates and instants, beyond the labels themselves: the check that a forecast's
latest row has another symbol in its cross-section groups rows as the labels do, and the labels match a
grouped reference.

A daily candle stamped with its date (00:00 UTC) and the hourly bar of 00:00 are two cross-sections of the
``excess_return``/``cs_*`` labels and the ``market`` features. A request whose daily symbol shared its latest
stamp only with hourly bars passed the check (one stamp, several symbols), while its past labels, an input of
the model, were all 0 (alone among the dates): a silently different forecast."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig, ModelConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data.labels import row_labels
from hftraining.data.pipeline import _labels, data_rows, prepare

sys.path.insert(0, str(Path(__file__).parent))
from test_review_market_round19 import _coin_panel  # noqa: E402


def _write(frames: dict[str, pd.DataFrame], folder: Path) -> Path:
    """The coins as CSV files: the daily candles as plain dates, the hourly bars as UTC instants."""
    folder.mkdir()
    for s, f in frames.items():
        f = f.copy()
        f["timestamp"] = [t.strftime("%Y-%m-%d") if s.startswith("D") else t.strftime("%Y-%m-%dT%H:%M:%SZ")
                          for t in f["timestamp"]]
        f.to_csv(folder / f"{s}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def coin_model(tmp_path_factory):
    """A ridge model (any weights: the past labels are its inputs) of excess_return over two hourly and two daily coins."""
    import torch

    from hftraining.models import build_model

    tmp = tmp_path_factory.mktemp("coins")
    frames = _coin_panel(60)
    folder = _write(frames, tmp / "data")
    cfg = load_config(None, [f"data.data_dir={folder}", "data.features=[log_return_1]", "data.sequence_length=10",
                             "data.prediction_horizon=1", "data.target=excess_return", "data.cache_dir=null"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(type="ridge", ridge_lags=10), len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.weight.normal_()
    m.save_pretrained(tmp / "model", preprocessing=pre.to_dict())
    return tmp / "model", frames


def test_a_date_whose_stamp_only_intraday_bars_share_is_alone_in_its_cross_section(coin_model):
    from hftraining.inference.forecaster import Forecaster

    folder, frames = coin_model
    fc = Forecaster.from_pretrained(folder)
    # the daily D1 up to its last date, the hourly coins up to 00:00 of that date; D2, the other date, not sent
    req = {"D1": frames["D1"], "H1": frames["H1"].iloc[:-23], "H2": frames["H2"].iloc[:-23]}
    last = pd.Timestamp(frames["D1"]["timestamp"].iloc[-1])
    assert all(pd.Timestamp(f["timestamp"].iloc[-1]) == last for f in req.values())
    with pytest.raises(DataError, match=rf"^D1: no other symbol has a row at {re.escape(last.isoformat())} "
                                        r"\(its latest row, a date: .*another cross-section\)") as e:
        fc.predict(req)
    assert "\n" not in str(e.value)
    # with the other date sent, the forecast is made, its past labels those of training's cross-sections
    table = fc.predict({**req, "D2": frames["D2"]})
    assert sorted(table["symbol"]) == ["D1", "D2", "H1", "H2"]


def test_an_hourly_bar_of_midnight_alone_among_the_instants_is_refused(coin_model):
    """The other way: H1's latest bar, of 00:00, beside the daily candles of that date but no other hourly bar."""
    from hftraining.inference.forecaster import Forecaster

    folder, frames = coin_model
    fc = Forecaster.from_pretrained(folder)
    req = {"D1": frames["D1"], "D2": frames["D2"], "H1": frames["H1"].iloc[:-23], "H2": frames["H2"].iloc[:-24]}
    last = pd.Timestamp(req["H1"]["timestamp"].iloc[-1])
    with pytest.raises(DataError, match=rf"^H1: no other symbol has a row at {re.escape(last.isoformat())} "
                                        r"\(its latest row, an instant: "):
        fc.predict(req)


@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_the_labels_of_dates_and_instants_match_a_grouped_reference(target):
    """Against pandas grouped by (stamp, date or instant), ties and lone rows included."""
    rng = np.random.default_rng(3)
    n = 4000
    t = rng.integers(0, 200, n).astype(np.int64) * 3600 * 10**9
    marks = rng.random(n) < 0.3
    r = rng.normal(0, 0.02, n).round(3)  # ties
    df = pd.DataFrame({"t": t, "m": marks, "r": r})
    g = df.groupby(["t", "m"])["r"]
    size = g.transform("size").to_numpy()
    want = {
        "excess_return": df.r - np.log(g.transform(lambda x: np.exp(x).mean())),
        "cs_zscore": ((df.r - g.transform("mean")) / g.transform("std")).fillna(0.0),
        "cs_rank": ((g.rank(method="average") - 0.5) / size - 0.5) * 3.46,
    }[target].to_numpy()
    want = np.where(size < 2, 0.0, want)
    np.testing.assert_allclose(row_labels(r, t, target, marks), want, rtol=1e-5, atol=1e-6)


def test_a_panel_of_dates_keeps_its_labels_and_every_build_marks_the_same_rows(tmp_path):
    """The daily files of the bundled sample: every row a date, the labels those of stamps alone; a store entry
    built in workers, one built in this process and rows built in memory mark the same rows."""
    from hftraining.data.io import sample_data_dir

    d = dataclasses.replace(DataConfig(), data_dir=str(sample_data_dir()), features=["log_return_1", "market_3_5"],
                            target="cs_rank")
    memory, _ = data_rows(dataclasses.replace(d, cache_dir=None))
    assert memory.dates.all()
    np.testing.assert_array_equal(_labels(memory, d), row_labels(memory.returns, memory.times, "cs_rank"))
    mixed = _write(_coin_panel(40), tmp_path / "coins")
    d = dataclasses.replace(d, data_dir=str(mixed))
    ref, _ = data_rows(dataclasses.replace(d, cache_dir=None))
    for workers in (0, 2):
        got, rep = data_rows(dataclasses.replace(d, cache_dir=str(tmp_path / f"c{workers}"), num_workers=workers))
        assert rep["cache"] == "miss"
        np.testing.assert_array_equal(np.asarray(got.dates), ref.dates)
        np.testing.assert_array_equal(_labels(got, d), _labels(ref, d))
        np.testing.assert_array_equal(np.asarray(got.features), ref.features)
