"""Edges of the time features, the robust scaler and MLflow's params.

- A daily bar stamped with a plain date (read as UTC midnight) is that date in ``data.timezone``: a
  Monday reads Monday under America/New_York, not Sunday 19:00, in training (in memory and through
  the feature store) and in prediction alike; an intraday bar at 00:00 UTC, or a daily bar stamped at
  the exchange's own midnight, stays the instant it names. A model folder whose time features were
  computed by the older rule is refused with one line where the rule changes its features.
- The robust scaler divides a column whose IQR is 0 but which varies (minute returns, mostly 0) by
  its standard deviation, and a warning names it; by 1 it stayed 1e-4 beside unit-spread columns.
- A config value longer than MLflow keeps as a param is logged whole as an artifact, and a warning
  names its key.
"""

from __future__ import annotations

import json
import logging
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import Config, DataConfig
from hftraining.core.errors import DataError
from hftraining.data import features
from hftraining.data.features import compute_features
from hftraining.data.pipeline import latest_windows, prepare
from hftraining.data.scaling import Scaler
from hftraining.data.synth import synth_ohlcv

NY = "America/New_York"


def _weekday(feats: pd.DataFrame) -> np.ndarray:
    """Monday 0 .. Sunday 6 back from dow_sin/dow_cos."""
    return np.rint(np.arctan2(feats["dow_sin"], feats["dow_cos"]) / (2 * np.pi) * 7).astype(int) % 7


def _hour(feats: pd.DataFrame) -> np.ndarray:
    return np.round(np.arctan2(feats["hour_sin"], feats["hour_cos"]) / (2 * np.pi) * 24, 6) % 24


def _stamps(times) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.DatetimeIndex(times)})


@pytest.mark.parametrize("tz", [NY, "America/Santiago", "Asia/Tokyo", "UTC"])
def test_a_plain_date_is_its_own_weekday_and_month_in_data_timezone(tz):
    """Daily bars stamped with dates (UTC midnight) over a year, across daylight saving (Santiago's
    clocks skip midnight): each reads its own weekday and month, one hour all year."""
    days = pd.date_range("2024-01-01", "2024-12-31", freq="B", tz="UTC")
    f = compute_features(_stamps(days), ["calendar", "hour"], tz=tz)
    np.testing.assert_array_equal(_weekday(f), days.day_of_week)
    np.testing.assert_allclose(f["month_sin"], np.sin(2 * np.pi * (days.month - 1) / 12), atol=1e-12)
    assert len(np.unique(_hour(f).round(3))) <= 2  # midnight (01:00 on a date whose clocks skip it)
    if tz in (NY, "UTC"):
        assert (_hour(f) == 0).all()
    # under UTC the dates read exactly as without a zone
    if tz == "UTC":
        np.testing.assert_array_equal(f.to_numpy(), compute_features(_stamps(days), ["calendar", "hour"]).to_numpy())


def test_intraday_bars_and_a_daily_bar_at_the_exchanges_midnight_keep_their_instant():
    # hourly bars: the one at 00:00 UTC of Tuesday 2 January is Monday 19:00 in New York
    hours = pd.date_range("2024-01-01 20:00", periods=12, freq="h", tz="UTC")
    f = compute_features(_stamps(hours), ["calendar", "hour"], tz=NY)
    at = int(np.flatnonzero(hours == pd.Timestamp("2024-01-02", tz="UTC"))[0])
    assert _weekday(f)[at] == 0 and _hour(f)[at] == 19
    np.testing.assert_array_equal(_hour(f), hours.tz_convert(NY).hour)
    # daily bars stamped at New York's midnight (05:00 UTC in winter, 04:00 in summer) are that date there
    local = pd.date_range("2024-03-04", periods=20, freq="B", tz=NY)
    g = compute_features(_stamps(local.tz_convert("UTC")), ["calendar", "hour"], tz=NY)
    np.testing.assert_array_equal(_weekday(g), local.day_of_week)
    assert (_hour(g) == 0).all()


def _daily_frames():
    return {s: synth_ohlcv(400, seed=k, start="2023-01-02") for k, s in enumerate(("A", "B"))}


@pytest.mark.parametrize("cache", [False, True])
def test_training_and_prediction_read_a_dates_own_weekday(tmp_path, cache):
    """The weekday a daily bar's features carry in training (in memory, through the feature store) is
    its date's, and prediction from the saved preprocessing gives the same features for the same rows."""
    frames = _daily_frames()
    data = tmp_path / "data"
    data.mkdir()
    for s, f in frames.items():
        f.assign(timestamp=f["timestamp"].dt.strftime("%Y-%m-%d")).to_csv(data / f"{s}.csv", index=False)
    d = DataConfig(data_dir=str(data), cache_dir=str(tmp_path / "cache") if cache else None,
                   features=["log_return_1", "calendar"], sequence_length=10, prediction_horizon=2, timezone=NY)
    prep = prepare(d)
    cols = prep.preprocessing.feature_columns
    feats = pd.DataFrame(prep.train.features[:, [cols.index("dow_sin"), cols.index("dow_cos")]], columns=["dow_sin", "dow_cos"])
    days = pd.to_datetime(prep.train.row_times, utc=True)
    np.testing.assert_array_equal(_weekday(feats), days.day_of_week)
    assert (days.day_of_week == 0).any()  # Mondays among them: under the older rule they read Sunday
    # prediction: the latest window of each symbol has the training rows' features
    ws = latest_windows(prep.preprocessing, frames)
    for k, sym in enumerate(ws.symbols):
        end = int(ws.ends[k])
        t = ws.row_times[end]
        assert pd.Timestamp(int(t), tz="UTC").normalize().value == t  # a date
        row = np.flatnonzero(prep.train.row_times == t)
        if row.size:  # the same date in training (of either symbol: the calendar columns are the date's)
            np.testing.assert_array_equal(ws.features[end, [cols.index("dow_sin"), cols.index("dow_cos")]],
                                          prep.train.features[row[0], [cols.index("dow_sin"), cols.index("dow_cos")]])
        local = pd.DataFrame(ws.features[:end + 1, [cols.index("dow_sin"), cols.index("dow_cos")]], columns=["dow_sin", "dow_cos"])
        np.testing.assert_array_equal(_weekday(local)[-5:], pd.to_datetime(ws.row_times[end - 4:end + 1], utc=True).day_of_week)


def test_a_model_folder_of_the_older_time_features_is_refused_where_they_changed():
    check_calendar_version, CALENDAR_VERSION = features.check_calendar_version, features.CALENDAR_VERSION
    where = "final/preprocessing.json"
    day, minute = 86400.0, 60.0
    for v, specs, tz, bars in ((1, ["calendar"], NY, day), (1, ["log_return_1", "hour"], NY, None),
                               (1, ["hour"], "Europe/London", day), (1, ["calendar", "hour"], "Asia/Tokyo", day)):
        with pytest.raises(DataError) as e:
            check_calendar_version(v, specs, tz, bars, where)
        msg = str(e.value)
        assert msg.startswith(where) and "retrain" in msg and tz in msg and "\n" not in msg
    # the same features under both rules: loads
    for v, specs, tz, bars in ((1, ["calendar", "hour"], "UTC", day), (1, ["calendar", "hour"], "Africa/Abidjan", day),
                               (1, ["calendar", "hour"], NY, minute), (1, ["log_return_1", "rsi_14"], NY, day),
                               (1, ["calendar"], "Europe/London", day), (1, ["calendar"], "Asia/Tokyo", day),
                               (CALENDAR_VERSION, ["calendar", "hour"], NY, day)):
        check_calendar_version(v, specs, tz, bars, where)
    for bad, says in ((CALENDAR_VERSION + 1, "newer hftraining"), (0, "positive integer"), (True, "positive integer"),
                      ("2", "positive integer")):
        with pytest.raises(DataError, match=says):
            check_calendar_version(bad, ["calendar"], "UTC", day, where)


@pytest.mark.parametrize("per_symbol", [False, True])
def test_the_robust_scaler_scales_a_mostly_zero_column_by_its_std_and_names_it(per_symbol, caplog):
    rng = np.random.default_rng(0)
    n = 600
    ret = np.where(rng.random(n) < 0.8, 0.0, rng.normal(0, 2e-4, n))  # minute returns: 80% exactly 0
    x = np.column_stack([rng.normal(50, 10, n), ret, np.full(n, 3.0)]).astype(np.float32)
    train = {"A": slice(0, 300), "B": slice(300, 600)}
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        sc = Scaler("robust", per_symbol).fit_rows(x, train)
    for sym, sl in train.items():
        rows = x[sl] if per_symbol else x
        center, scale = sc.stats(sym)
        q25, q75 = np.percentile(rows.astype(np.float64), [25, 75], axis=0)
        assert q75[1] - q25[1] == 0  # the IQR of the mostly-zero column
        np.testing.assert_allclose(scale[1], rows[:, 1].astype(np.float64).std(), rtol=1e-9)
        np.testing.assert_allclose(scale[0], q75[0] - q25[0], rtol=1e-9)  # the others by their IQR
        assert scale[2] == 1.0  # a constant column: by 1
        z = sc.transform(x[sl], sym)[:, 1]
        assert 0.5 < z.std() < 2  # seen beside the other columns, not 1e-4
    said = [r.getMessage() for r in caplog.records if "interquartile range 0" in r.getMessage()]
    assert len(said) == 1 and "#1" in said[0] and "#0" not in said[0] and "#2" not in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hftraining"):  # the columns by name where the caller has them
        again = Scaler("robust", per_symbol).fit_rows(x, train, names=["rsi_14", "log_return_1", "flat"])
    assert again.to_dict() == sc.to_dict()
    said = [r.getMessage() for r in caplog.records if "interquartile range 0" in r.getMessage()]
    assert len(said) == 1 and "log_return_1" in said[0] and "rsi_14" not in said[0] and "flat" not in said[0]


@pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")
def test_a_param_longer_than_mlflow_keeps_is_named_and_logged_whole(tmp_path, caplog):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from hftraining.train.tracking import FULL_PARAMS, MlflowTracker, flat_config

    cfg = Config()
    cfg.data.symbols = [f"SYM{i:04d}" for i in range(MAX_PARAM_VAL_LENGTH // 8)]  # 9 characters each in JSON
    run = tmp_path / "run"
    run.mkdir()
    t = MlflowTracker()
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        t.on_start(run, cfg, None)
    try:
        logged = t.client.get_run(t.run_id).data.params["data.symbols"]
        whole = json.dumps(cfg.data.symbols)
        assert len(whole) > MAX_PARAM_VAL_LENGTH and logged == whole[:MAX_PARAM_VAL_LENGTH]
        said = [r.getMessage() for r in caplog.records if "data.symbols" in r.getMessage()]
        assert len(said) == 1 and FULL_PARAMS in said[0] and f"{len(whole):,}" in said[0]
        t.client.download_artifacts(t.run_id, FULL_PARAMS, str(tmp_path))
        full = json.loads((tmp_path / FULL_PARAMS).read_text())
        assert json.loads(full["data.symbols"]) == cfg.data.symbols
        assert set(full) == set(flat_config(cfg))
    finally:
        t.on_end(None, [], False)


def test_a_model_folder_of_the_older_time_features_is_refused_on_loading(tmp_path):
    """A folder written before ``calendar_version`` (so by the older rule) whose calendar features of
    daily bars under America/New_York changed is a one-line error saying to retrain; the same folder
    of intraday bars, or under UTC, loads; a folder written now records the version and loads."""
    import shutil

    import torch

    from hftraining.core.config import ModelConfig
    from hftraining.inference.forecaster import Forecaster
    from hftraining.models import build_model

    frames = _daily_frames()
    folders = {}
    for tz in (NY, "UTC"):
        pre = prepare(DataConfig(features=["log_return_1", "calendar"], sequence_length=10, prediction_horizon=2,
                                 timezone=tz), frames=frames).preprocessing
        assert pre.to_dict()["calendar_version"] == features.CALENDAR_VERSION
        torch.manual_seed(0)
        folders[tz] = tmp_path / tz.replace("/", "_")
        build_model(ModelConfig(type="dlinear", moving_avg=5), len(pre.feature_columns), pre.horizon,
                    pre.seq_len).save_pretrained(folders[tz], preprocessing=pre.to_dict())
        Forecaster.from_pretrained(folders[tz])
    for tz, bars, refused in ((NY, None, True), (NY, 60.0, False), ("UTC", None, False)):
        old = tmp_path / f"old-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folders[tz], old)
        saved = json.loads((old / "preprocessing.json").read_text())
        del saved["calendar_version"]  # as a version before it wrote the folder
        saved.pop("bar_seconds", None)
        if bars is not None:
            saved["bar_seconds"] = bars
        (old / "preprocessing.json").write_text(json.dumps(saved))
        if refused:
            with pytest.raises(DataError) as e:
                Forecaster.from_pretrained(old)
            msg = str(e.value)
            assert msg.startswith(str(old / "preprocessing.json")) and "retrain" in msg and "\n" not in msg
        else:
            Forecaster.from_pretrained(old)
