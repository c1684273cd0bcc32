"""A model folder of grouping_version 1 scored on the windows it reads, and the warning of a panel of bars of other
spacings saying what its market features read.

An older folder (no ``grouping_version``) with a label taken across symbols or ``market`` features is refused where a
row it reads is grouped otherwise now; a split whose windows read only rows grouped alike is scored as before (a coin's
hourly bars early in the history no longer refuse the test split of the daily bars after them). The panel's warning
says a bar is read before it closes only where one is: a longer bar stamped at an instant, or a date of several days,
not a daily bar stamped with its date, which the shorter bars read once its UTC day is over."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import DataConfig, ModelConfig
from hftraining.core.errors import DataError
from hftraining.data.pipeline import prepare
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model


def _frame(n: int, seed: int, stamps: pd.DatetimeIndex) -> pd.DataFrame:
    f = synth_ohlcv(n, seed=seed, start="2024-01-01", freq="D")
    f["timestamp"] = stamps
    return f


def _hourly(seed: int, days: int) -> pd.DataFrame:
    return _frame(24 * days, seed, pd.date_range("2024-01-01", periods=24 * days, freq="h", tz="UTC"))


def _daily(seed: int, days: int, hour: int = 0, freq: str = "D") -> pd.DataFrame:
    stamps = pd.date_range("2024-01-01", periods=days, freq=freq, tz="UTC") + pd.Timedelta(hours=hour)
    return _frame(days, seed, stamps)


def _folders(root, frames, target, features):
    """A model folder written by this version on ``frames`` and a copy without ``grouping_version`` (as written before)."""
    data = root / "data"
    data.mkdir(parents=True)
    for s, f in frames.items():
        f.to_parquet(data / f"{s}.parquet")
    d = DataConfig(data_dir=str(data), features=features, sequence_length=8, prediction_horizon=1, target=target,
                   cache_dir=None)
    pre = prepare(d).preprocessing
    new = root / "new"
    torch.manual_seed(0)
    build_model(ModelConfig(type="dlinear", moving_avg=3), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(new, preprocessing=pre.to_dict())
    old = root / "old"
    shutil.copytree(new, old)
    saved = json.loads((old / "preprocessing.json").read_text())
    saved.pop("grouping_version")
    (old / "preprocessing.json").write_text(json.dumps(saved))
    return new, old


@pytest.mark.parametrize("target,features", [("cs_rank", ["log_return_1"]), ("return", ["log_return_1", "market_5"])])
def test_an_older_folder_scores_a_split_whose_windows_read_rows_grouped_alike(tmp_path, target, features):
    """Two coins' hourly bars in the first 20 days beside daily candles stamped with their dates for 200 days: the
    validation and test windows read dates alone, labelled and grouped as grouping_version 1 grouped them; the
    training windows read the days where a date met an instant and stay refused."""
    frames = {"H1": _hourly(1, 20), "H2": _hourly(2, 20), **{f"D{i}": _daily(3 + i, 200) for i in range(3)}}
    new, old = _folders(tmp_path, frames, target, features)
    for split in ("test", "val"):
        want = Forecaster.from_pretrained(new)
        fc = Forecaster.from_pretrained(old)
        got = fc.windows(None, split)
        assert len(got) > 0
        np.testing.assert_array_equal(fc.predict_windows(got), want.predict_windows(want.windows(None, split)))
    with pytest.raises(DataError) as e:
        Forecaster.from_pretrained(old).windows(None, "train")
    msg = str(e.value)
    assert "\n" not in msg and "grouping_version 1" in msg and "retrain the model" in msg and "2024-01-" in msg, msg


def _read_before_close(frames: dict[str, pd.DataFrame], long: str, short: str, at: int) -> bool:
    """Whether a market feature of a ``short`` row stamped before the ``long`` bar ``at`` closes (its next bar, or
    its span on) changes when that bar's close does."""
    moved = frames[long].copy()
    moved.loc[at, ["open", "high", "low", "close"]] *= 1.2
    a, _ = build_rows(frames, ["log_return_1", "market_3"], 1, tz="UTC")
    b, _ = build_rows({**frames, long: moved}, ["log_return_1", "market_3"], 1, tz="UTC")
    k = a.symbols.index(short)
    stamps = a.times[a.rows(k)]
    changed = (np.asarray(a.features[a.rows(k)]) != np.asarray(b.features[b.rows(k)])).any(axis=1)
    t = frames[long]["timestamp"]
    closes = min(t.iloc[at + 1], t.iloc[at] + (t.iloc[at + 1] - t.iloc[at]))
    return bool((changed & (stamps < closes.value)).any())


@pytest.mark.parametrize("panel,long,short,leaks", [
    ("dates beside hours", "DAY", "HOUR", False),  # a daily candle stamped with its date: read at the end of its day
    ("vendor midnight beside hours", "DAY", "HOUR", True),  # a daily bar stamped at 05:00 UTC: an instant
    ("weeks beside days", "WEEK", "DAY", True),  # a weekly bar stamped with its Monday: a date of seven days
])
def test_the_warning_of_a_panel_of_other_spacings_says_a_bar_is_read_before_it_closes_only_where_one_is(
        panel, long, short, leaks, caplog):
    frames = {
        "dates beside hours": lambda: {"DAY": _daily(1, 60), "HOUR": _hourly(2, 60)},
        "vendor midnight beside hours": lambda: {"DAY": _daily(1, 60, hour=5), "HOUR": _hourly(2, 60)},
        "weeks beside days": lambda: {"WEEK": _daily(1, 30, freq="W-MON"), "DAY": _daily(2, 200, freq="B")},
    }[panel]()
    assert _read_before_close(frames, long, short, at=len(frames[long]) // 2) is leaks
    d = DataConfig(features=["log_return_1", "market_3"], target="cs_rank", sequence_length=8, prediction_horizon=1,
                   cache_dir=None)
    with caplog.at_level(logging.WARNING):
        p = prepare(d, frames)
    said = [r.getMessage() for r in caplog.records if "mixes bars of other spacings" in r.getMessage()]
    assert len(said) == 1 and "give every symbol bars of one spacing" in said[0], said
    assert set(p.report["mixed_spacings"]) == {long, short}
    if leaks:
        assert "read its return before it closes" in said[0] and f"({long})" in said[0], said[0]
    else:
        assert "before it happened" not in said[0] and "read its return" not in said[0], said[0]
        assert "no bar reads a return before it closes" in said[0] and "UTC day" in said[0], said[0]
