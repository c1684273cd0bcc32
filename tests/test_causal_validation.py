"""Validation decisions that shape what training sees read no row dated in the validation or test
period: the early end of the timestamp-outlier rule reads a bounded look-ahead, and "no volume" is
decided on the rows before the first validation date. Removing (or changing) the rows after the test
cut leaves the training windows, the target scale and the feature list as they were."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import apply, panel_rows, prepare
from hftraining.data.rows import RowsNeeded
from hftraining.data.sources import load_and_validate
from hftraining.data.splits import Fold
from hftraining.data.synth import synth_ohlcv
from hftraining.data.validate import _outlier_timestamps

UTC = "UTC"


def _write(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.glob("*.csv"):
        p.unlink()
    for sym, f in frames.items():
        f.to_csv(folder / f"{sym}.csv", index=False)


def _before(frames, date):
    return {s: f[f["timestamp"] < pd.Timestamp(date, tz=UTC)] for s, f in frames.items()}


def _seen(p):
    """What training sees of prepared data: its feature list, windows, target scale and inputs."""
    tr = p.train
    x = tr.batch(np.arange(len(tr)))["x"].numpy() if len(tr) else None
    return p.preprocessing.feature_columns, len(tr), p.preprocessing.target_scale, tr.row_times[tr.ends].tolist(), x


def _same(a, b):
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
    np.testing.assert_array_equal(a[4], b[4])


def test_early_outlier_row_decided_by_the_first_rows_only():
    days = pd.bdate_range("2019-09-02", periods=600, tz=UTC, unit="ns").asi8
    lone = pd.Timestamp("2019-01-02", tz=UTC).value  # eight months before the next row
    full, short = np.r_[lone, days], np.r_[lone, days[:120]]
    # the lone row is an outlier of the short file; the rows after the 120th do not make it one of the long file
    assert _outlier_timestamps(short)[0] and _outlier_timestamps(full)[0]
    assert not _outlier_timestamps(full)[1:].any() and not _outlier_timestamps(short)[1:].any()
    # a group of early rows is still one (at most 1% of the rows its decision reads), the late end as before
    three = np.r_[pd.to_datetime(["1987-03-02", "1987-03-03", "1987-03-04"], utc=True).as_unit("ns").asi8, days]
    assert np.flatnonzero(_outlier_timestamps(three)).tolist() == [0, 1, 2]
    late = np.r_[days, pd.Timestamp("2087-06-02", tz=UTC).value]
    assert np.flatnonzero(_outlier_timestamps(late)).tolist() == [600]


def test_rows_after_the_test_cut_do_not_move_an_early_outlier(tmp_path):
    a = synth_ohlcv(400, seed=1, start="2019-09-02")
    a = pd.concat([a.iloc[:1].assign(timestamp=pd.Timestamp("2019-01-02", tz=UTC)), a]).reset_index(drop=True)
    frames = {"A": a, "B": synth_ohlcv(400, seed=2, start="2019-09-02")}
    seen = []
    for name, fs in (("full", frames), ("cut", _before(frames, "2020-03-02"))):
        _write(tmp_path / name, fs)
        d = DataConfig(data_dir=str(tmp_path / name), sequence_length=10, prediction_horizon=2,
                       features=["log_return_1"], cache_dir=None,
                       split_dates={"val": "2020-01-15", "test": "2020-03-02"})
        seen.append(_seen(prepare(d)))
    _same(*seen)


def _no_volume_until(date, rows=300):
    a, b = synth_ohlcv(rows, seed=1, start="2024-01-01"), synth_ohlcv(rows, seed=2, start="2024-01-01")
    a.loc[a["timestamp"] < pd.Timestamp(date, tz=UTC), "volume"] = 0  # volume reported from ``date`` on only
    return {"A": a, "B": b}


@pytest.mark.parametrize("store", [False, True])
def test_no_volume_is_decided_before_the_first_validation_date(tmp_path, store):
    frames = _no_volume_until("2024-11-15")  # after the test cut
    seen = []
    for name, fs in (("full", frames), ("cut", _before(frames, "2024-11-01"))):
        _write(tmp_path / name, fs)
        d = DataConfig(data_dir=str(tmp_path / name), sequence_length=10, prediction_horizon=2,
                       features=["log_return_1", "volume_ratio_20"], cache_dir=str(tmp_path / "store") if store else None,
                       split_dates={"val": "2024-09-02", "test": "2024-11-01"})
        p = prepare(d)
        assert p.report["dropped_features"].keys() == {"volume_ratio_20"}
        seen.append(_seen(p))
    _same(*seen)
    assert seen[0][0] == ["log_return_1"]
    # the same frames validated elsewhere (a mapping) decide alike
    d = DataConfig(sequence_length=10, prediction_horizon=2, features=["log_return_1", "volume_ratio_20"],
                   cache_dir=None, split_dates={"val": "2024-09-02", "test": "2024-11-01"})
    mapped, _ = load_and_validate(DataConfig(data_dir=str(tmp_path / "full"), cache_dir=None), RowsNeeded.of(d))
    _same(_seen(prepare(d, dict(mapped))), seen[0])


def test_volume_before_the_first_validation_date_keeps_the_volume_features(tmp_path):
    _write(tmp_path, _no_volume_until("2024-06-03"))  # reported from June on: in the training rows
    d = DataConfig(data_dir=str(tmp_path), sequence_length=10, prediction_horizon=2,
                   features=["log_return_1", "volume_ratio_20"], cache_dir=None,
                   split_dates={"val": "2024-09-02", "test": "2024-11-01"})
    p = prepare(d)
    assert p.preprocessing.feature_columns == ["log_return_1", "volume_ratio_20"] and not p.report["dropped_features"]


def test_walk_forward_folds_share_the_first_folds_decision(tmp_path):
    # volume from October on: after the first fold's first validation row (mid-September), before the
    # other folds' (each of which alone would keep the volume features)
    _write(tmp_path, _no_volume_until("2024-10-01"))
    d = DataConfig(data_dir=str(tmp_path), sequence_length=10, prediction_horizon=2,
                   features=["log_return_1", "volume_ratio_20"], cache_dir=str(tmp_path / "store"))
    panel = panel_rows(d)
    folds = [prepare(d, panel, fold=Fold(k, 3, "expanding")) for k in range(3)]
    assert {tuple(f.preprocessing.feature_columns) for f in folds} == {("log_return_1",)}
    # the model's data section records the features used: its own rows are read again without the volume ones
    p = prepare(d, panel)
    assert len(apply(p.preprocessing, None, "test")) == len(p.test)
