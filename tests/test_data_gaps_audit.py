"""Gaps between what training does with the data and what a user is told before and after.

- ``data check`` on daily files that stamp a trading day at different UTC times of day gives the
  warning training gives (training's panel makes each such day several dates).
- Bars of 3 or 4 trading days (5 and 6 calendar days apart, mostly) and 4- to 6-day bars of a market
  open every day are annualised by their own count, not as weekly bars (52 a year).
- A symbol scaled by its own statistics needs :data:`~hftraining.data.scaling.MIN_OWN_ROWS` training
  rows: from two, its later inputs came out over 100 of its spreads from its centre. One whose
  training prices did not move (no feature column varies) is refused too; one with some such
  columns is named in a warning.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import USFederalHolidayCalendar

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.features import feature_warmup
from hftraining.data.pipeline import prepare
from hftraining.data.scaling import MIN_OWN_ROWS, Scaler
from hftraining.data.sources import load_and_validate
from hftraining.data.synth import synth_ohlcv
from hftraining.eval.backtest import infer_periods_per_year

WARNED = "different times of day"


def _daily(folder, name: str, zone: str | None, seed: int, periods: int = 120) -> None:
    """Daily bars stamped at local midnight of ``zone`` with its UTC offset (as yfinance writes them),
    or as plain dates (``zone`` None)."""
    days = pd.bdate_range("2021-01-04", periods=periods)
    f = synth_ohlcv(periods, seed=seed)
    f["timestamp"] = [d.strftime("%Y-%m-%d") if zone is None else d.tz_localize(zone).isoformat() for d in days]
    f.to_csv(folder / f"{name}.csv", index=False)


def _check(caplog, *paths) -> list[str]:
    from hftraining import cli

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        assert cli.main(["data", "check", *map(str, paths)]) == 0
    return [r.getMessage() for r in caplog.records if WARNED in r.getMessage()]


def test_data_check_warns_as_training_does_of_daily_files_stamped_at_different_times(tmp_path, caplog):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, (name, zone) in enumerate([("NYA", "America/New_York"), ("NYB", "America/New_York"), ("PLAIN", None)]):
        _daily(mixed, name, zone, k)
    _, report = load_and_validate(DataConfig(data_dir=str(mixed), cache_dir=None))
    assert _check(caplog, mixed) == [report["mixed_stamps"]["why"]]  # the folder: training's words, once
    assert "NYA.csv" in report["mixed_stamps"]["why"] and "PLAIN.csv" in report["mixed_stamps"]["why"]
    files = sorted(mixed.glob("*.csv"))  # a glob the shell expanded: the files checked together
    assert _check(caplog, *files) == [report["mixed_stamps"]["why"]]
    assert _check(caplog, files[0]) == []  # one file: nothing to disagree with
    import contextlib
    import io
    import json

    from hftraining import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["data", "check", "--json", str(mixed)]) == 0
    assert json.loads(out.getvalue())["mixed_stamps"]["why"] == report["mixed_stamps"]["why"]  # a script reads it too

    same = tmp_path / "same"
    same.mkdir()
    for k, name in enumerate(["NYA", "NYB"]):
        _daily(same, name, "America/New_York", k)
    assert _check(caplog, same) == []


def _calendar_bars(every: int, years: int = 4) -> np.ndarray:
    """Bars of ``every`` trading days on a calendar with holidays (US federal), as UTC ns."""
    day = pd.offsets.CustomBusinessDay(calendar=USFederalHolidayCalendar())
    return pd.date_range("2020-01-02", periods=252 * years, freq=day, tz="UTC")[::every].as_unit("ns").asi8


def test_bars_of_several_days_are_not_annualised_as_weeks():
    """3- and 4-trading-day bars are mostly 5 and 6 days apart: both were taken for weekly bars (52 a
    year for 84 and 63: a Sharpe too small by 21% and 9%), as were 4- to 6-day bars of a market open
    every day (52 for 91, 73 and 61)."""
    per_day = infer_periods_per_year(_calendar_bars(1))[0]
    assert per_day == 252
    measured = (len(_calendar_bars(1)) - 1) / 4  # the calendar's own trading days a year
    for every in (3, 4):
        ppy, how = infer_periods_per_year(_calendar_bars(every))
        assert ppy == pytest.approx(measured / every, rel=0.02), (every, how)
        assert "weekly" not in how
    for every in (4, 5, 6):
        stamps = pd.date_range("2022-01-01", periods=300, freq=f"{every}D", tz="UTC").as_unit("ns").asi8
        assert infer_periods_per_year(stamps)[0] == pytest.approx(365.25 / every), every
    # weekly bars stay 52, a bar moved a day by a holiday included
    weeks = pd.date_range("2022-01-07", periods=150, freq="W-FRI", tz="UTC")
    moved = weeks.where(weeks.month != 7, weeks - pd.Timedelta(days=1))  # July's bars on Thursdays
    for w in (weeks, moved, _calendar_bars(5)):
        assert infer_periods_per_year(pd.DatetimeIndex(w).as_unit("ns").asi8)[0] == 52


FEATURES = ["log_return_1", "rsi_14", "bbands_20_2"]
VAL, TEST = "2025-06-02", "2025-11-03"


def _late_listing(train_rows: int) -> dict[str, pd.DataFrame]:
    """OLD over the whole calendar, LATE listed so that ``train_rows`` of its feature rows fall before
    the first validation date."""
    old = synth_ohlcv(700, seed=0, start="2023-07-03")
    start = pd.Timestamp(VAL) - pd.offsets.BDay(feature_warmup(FEATURES) + train_rows)
    return {"OLD": old, "LATE": synth_ohlcv(150, seed=9, start=start.strftime("%Y-%m-%d"))}


def _config(**kw) -> DataConfig:
    return DataConfig(**{"sequence_length": 20, "prediction_horizon": 3, "features": FEATURES, "cache_dir": None,
                         "split_dates": {"val": VAL, "test": TEST}, **kw})


@pytest.mark.parametrize("kind", ["standard", "robust"])
def test_a_symbol_needs_min_own_rows_training_rows_to_fit_its_own_scaler(kind):
    for n in (2, 6, MIN_OWN_ROWS - 1):
        with pytest.raises(DataError, match=rf"^LATE: {n} training rows to fit its own scaler \(at least {MIN_OWN_ROWS}"
                                            r".*data.scale_per_symbol=false$"):
            prepare(_config(scaler=kind, scale_per_symbol=True), _late_listing(n))
    prepare(_config(scaler=kind), _late_listing(2))  # pooled: scaled by every symbol's training rows
    p = prepare(_config(scaler=kind, scale_per_symbol=True), _late_listing(MIN_OWN_ROWS))
    assert set(p.preprocessing.scaler.params) == {"OLD", "LATE"}
    with pytest.raises(DataError, match=r"^B: 3 training rows"):  # the symbol with the fewest is named
        Scaler(kind, per_symbol=True).fit({"A": np.ones((5, 2)), "B": np.ones((3, 2)), "C": np.ones((40, 2))})


def _flat_until_val() -> dict[str, pd.DataFrame]:
    """OLD, and FLAT whose prices did not move before the first validation date (a suspension with
    the last quote repeated, a peg), then trade."""
    old, flat = synth_ohlcv(700, seed=0, start="2023-07-03"), synth_ohlcv(700, seed=1, start="2023-07-03")
    before = pd.DatetimeIndex(flat["timestamp"]) < pd.Timestamp(VAL, tz="UTC")
    flat.loc[before, ["open", "high", "low", "close"]] = 50.0
    return {"OLD": old, "FLAT": flat}


@pytest.mark.parametrize("kind", ["standard", "robust"])
def test_a_symbol_whose_training_prices_did_not_move_is_not_left_unscaled(kind, caplog):
    """Every feature of FLAT was constant over its training rows: its own scaler centred them and
    scaled them by 1, so its validation RSI reached the model in points (100) where OLD's stayed
    within ±3.2 of its spread. Refused as one training row is; with a column that does vary for it
    (the calendar), the columns left unscaled are named in a warning."""
    frames = _flat_until_val()
    with pytest.raises(DataError, match=r"^FLAT: no feature column varies over its \d+ training rows .*"
                                        r"data.scale_per_symbol=false$"):
        prepare(_config(scaler=kind, scale_per_symbol=True), frames)
    prepare(_config(scaler=kind), frames)  # pooled: scaled by both symbols' training rows
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        prepare(_config(scaler=kind, scale_per_symbol=True, features=[*FEATURES, "calendar"]), frames)
    warned = [r.getMessage() for r in caplog.records if "left unscaled" in r.getMessage()]
    assert len(warned) == 1 and "FLAT (4 of 8 columns" in warned[0] and "OLD" not in warned[0]
