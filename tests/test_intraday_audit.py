"""Intraday bars end to end: how many periods a year the backtest annualises with, for the bar
spacings and test splits that equity sessions give."""

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval.backtest import backtest_forecasts, format_backtest, infer_periods_per_year
from hftraining.eval.forecasts import Forecasts

HOLIDAYS = {"2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-06-19", "2024-07-04",
            "2024-09-02", "2024-11-28", "2024-12-25"}
HALF_DAYS = {"2024-07-03", "2024-11-29", "2024-12-24"}  # the NYSE closes at 13:00


def nyse_bars(freq: str, start: str = "2024-01-02", end: str = "2024-12-31") -> np.ndarray:
    """Bars of ``freq`` from each 09:30 open of the NYSE (New York time; holidays and half days of
    2024), stamped at their start, as int64 ns UTC: ``4h`` gives 09:30 and 13:30 (one at 09:30 on a
    half day), as vendors' 4-hour bars of a 6.5-hour session."""
    out = []
    for day in pd.bdate_range(start, end):
        d = day.strftime("%Y-%m-%d")
        if d in HOLIDAYS:
            continue
        close = "13:00" if d in HALF_DAYS else "16:00"
        out.append(pd.date_range(pd.Timestamp(f"{d} 09:30", tz="America/New_York"),
                                 pd.Timestamp(f"{d} {close}", tz="America/New_York"), freq=freq, inclusive="left"))
    return out[0].append(out[1:]).tz_convert("UTC").as_unit("ns").asi8


def _forecasts(dates: np.ndarray, N: int = 3, seed: int = 0) -> Forecasts:
    """Forecasts of N symbols with a row on every date (random returns, a random signal)."""
    rng = np.random.default_rng(seed)
    T = len(dates)
    W, H = T * N, 2
    sig = rng.normal(size=W)
    return Forecasts(pred={"model": np.repeat(sig[:, None], H, axis=1), "zero": np.zeros((W, H))},
                     true=np.zeros((W, H)), dates=np.repeat(dates, N), symbol_ids=np.tile(np.arange(N), T),
                     symbols=[f"S{i}" for i in range(N)], last_return=rng.normal(0, 0.01, W),
                     past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0))


def _ev(*overrides):
    return load_config(None, [f"evaluation.{o}" for o in overrides]).evaluation


def test_four_hour_bars_of_a_session_are_two_a_session_not_daily_bars():
    """4-hour bars of a 09:30-16:00 session (09:30 and 13:30) are half 4-hour and half overnight
    spacings (20 h, 68 h over a weekend), so their median is an overnight one: they were taken for
    daily bars, 252 a year instead of about 504 (every Sharpe × 0.71, the annual return off)."""
    bars = nyse_bars("4h")  # 2024: 252 sessions, the 3 half days with one bar
    whole = (2 * 252 - len(HALF_DAYS)) * 365.25 / 366  # the bars of the year, per 365.25 days
    ppy, how = infer_periods_per_year(bars)
    assert ppy == pytest.approx(whole, rel=0.01), how
    assert "4 h bar spacing" in how and "2 bars per session" in how
    for part in (bars[-130:], bars[-60:]):  # a test split of a quarter, of a month
        assert infer_periods_per_year(part)[0] == pytest.approx(2 * 252, rel=0.07)
    # through the backtest: the Sharpe is annualised with those bars
    fc = _forecasts(bars[-130:])
    res = backtest_forecasts(fc, _ev())
    assert res["settings"]["periods_per_year"] == pytest.approx(2 * 252, rel=0.02)
    daily = backtest_forecasts(fc, _ev("periods_per_year=252"))["strategies"]["model"]["sharpe"]
    ratio = res["strategies"]["model"]["sharpe"] / daily
    assert ratio == pytest.approx(np.sqrt(res["settings"]["periods_per_year"] / 252), rel=1e-9)
    # the spacings that are still read as before
    assert infer_periods_per_year(nyse_bars("1h"))[0] == pytest.approx(7 * 252, rel=0.01)
    assert infer_periods_per_year(nyse_bars("2h"))[0] == pytest.approx(4 * 252, rel=0.01)
    days = pd.bdate_range("2023-01-02", "2024-12-31", tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(days)[0] == 252


def test_two_sessions_cut_by_the_data_count_the_whole_one():
    """A test split of two sessions whose first is cut (it starts at 12:00, the second is whole): the
    median of their 240 and 390 one-minute bars was annualised as 315 × 252; the longer holds the 390."""
    bars = nyse_bars("1min", "2024-03-04", "2024-03-05")  # Monday and Tuesday, 390 bars each
    part = bars[150:]  # from Monday 12:00 New York
    ppy, how = infer_periods_per_year(part)
    assert ppy == 390 * 252, how
    assert "the longer of 2 sessions: 390 bars" in how


@pytest.mark.parametrize("n_sessions", [1, 2, 3])
def test_a_backtest_over_fewer_than_three_sessions_warns_that_its_periods_per_year_are_a_guess(n_sessions):
    """The last 100 dates of minute bars (evaluation.max_test_windows = 50,000 over 500 symbols) are
    100 bars of one session, annualised as 100 × 252 a year, not 390 × 252 (every Sharpe × 0.51):
    nothing in those dates tells a session's length, so the backtest says so and names the key."""
    bars = nyse_bars("1min", "2024-03-04", "2024-03-08")
    part = bars[len(bars) - 100:] if n_sessions == 1 else bars[len(bars) - 390 * (n_sessions - 1) - 100:]
    res = backtest_forecasts(_forecasts(part), _ev())
    s = res["settings"]
    if n_sessions < 3:
        assert "evaluation.periods_per_year" in s["warning"] and "may cut" in s["warning"]
        assert "warning (settings): periods per year from" in format_backtest(res)
    else:
        assert "warning" not in s
        assert s["periods_per_year"] == 390 * 252
    # set, the key is used and nothing is guessed
    res = backtest_forecasts(_forecasts(part), _ev(f"periods_per_year={390 * 252}"))
    assert res["settings"]["periods_per_year"] == 390 * 252 and "warning" not in res["settings"]


@pytest.mark.parametrize("session", ["09:30-16:00", "24h"])
def test_minute_bars_missing_at_random_are_annualised_by_the_bars_there_are(session):
    """Minute bars of an illiquid symbol skip the minutes without a trade. Three missing in a row end a
    session (a gap over 3 bar spacings), so 10% missing cut each day into parts: the median part
    times the number of parts made 1.28 times the bars there are (NYSE session) or 0.73 times (24/7),
    every Sharpe off by √ of that; 5% missing around the clock kept one session, annualised as if full
    (1.05 times the bars there are). The bars are counted instead."""
    rng = np.random.default_rng(0)
    if session == "24h":
        full = pd.date_range("2024-01-01", "2024-06-30 23:59", freq="1min", tz="UTC").as_unit("ns").asi8
        per_year = 1440 * 365.25
    else:
        full = nyse_bars("1min", "2024-01-02", "2024-06-28")
        per_year = 390 * 252
    for missing in (0.0, 0.05, 0.1, 0.3):
        there = full[rng.random(len(full)) >= missing]
        ppy, how = infer_periods_per_year(there)
        assert ppy == pytest.approx(len(there) / len(full) * per_year, rel=0.02), (missing, how)


def test_two_bars_a_session_are_recorded_four_hours_apart_and_keep_their_instant():
    """4-hour bars at 09:30 and 13:30 New York time: half their spacings are overnight, so the median is
    20 hours. They are intraday bars all the same: preprocessing.json's bar_seconds is 4 hours (predict
    given the model's own bars warned that they were 4 hours apart against 20), and a bar stamped at UTC
    midnight among them keeps its instant (not read as a plain date)."""
    from hftraining.data.features import bar_spacing, date_stamps

    days = pd.bdate_range("2024-01-02", periods=60, tz="America/New_York")
    stamps = np.sort(np.concatenate([(days + pd.Timedelta(hours=9, minutes=30)).as_unit("ns").asi8,
                                     (days + pd.Timedelta(hours=13, minutes=30)).as_unit("ns").asi8]))[1:-1]
    gaps = np.diff(stamps)  # from a 13:30 bar to a 09:30 one: one overnight spacing more than 4-hour ones
    assert np.median(gaps) == 20 * 3600e9  # the overnight gap (13:30 to 09:30) is the median
    assert bar_spacing(gaps) == 4 * 3600e9
    daily = pd.bdate_range("2024-01-02", periods=60, tz="UTC").as_unit("ns").asi8
    assert bar_spacing(np.diff(daily)) == 86_400e9  # daily bars: the plain median
    midnight = np.sort(np.concatenate([daily, daily + 4 * 3600 * 10**9]))  # 00:00 and 04:00 UTC bars
    assert not date_stamps(midnight)[1:].any()  # the first row, with no gap before it, is read alone: a date
    assert not date_stamps(midnight, bar_seconds=4 * 3600.0).any()  # given the model's bars, an instant too
    assert date_stamps(daily).all()


def test_sessions_shorter_than_a_window_under_max_gap_name_max_gap(tmp_path):
    """Hourly bars of 7 a session with data.max_gap=2h and a 20-bar window: no window fits between two
    gaps; the error said "lower data.sequence_length or add rows" and never named data.max_gap."""
    from hftraining.core.errors import DataError
    from hftraining.data.pipeline import prepare

    days = pd.bdate_range("2024-01-02", periods=120)
    stamps = (days.values[:, None] + (np.arange(7) * 3600 + 9.5 * 3600).astype("timedelta64[s]")).ravel()
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, len(stamps))))
    pd.DataFrame({"timestamp": pd.DatetimeIndex(stamps).tz_localize("UTC"), "open": close, "high": close * 1.001,
                  "low": close * 0.999, "close": close, "volume": 1000.0}).to_csv(tmp_path / "AAA.csv", index=False)
    d = load_config(None, [f"data.data_dir={tmp_path}", "data.sequence_length=20", "data.prediction_horizon=1",
                           "data.max_gap=2h", "data.features=[log_return]", "data.cache_dir=null"]).data
    with pytest.raises(DataError, match=r"data.max_gap 2h, and the longest run of rows between such gaps holds 7"):
        prepare(d)
