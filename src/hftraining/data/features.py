"""Causal technical indicators, registered by name.

A feature spec is a string ``name_param1_param2`` (e.g. ``rsi_14``, ``macd_12_26_9``); the columns it
produces state their parameters. Every value at row t uses rows ≤ t only (TA-Lib's indicators are
causal). Price-level indicators are divided by the close so that prices enter the model as ratios,
never as raw levels. Warm-up rows that an indicator cannot fill stay NaN here and are dropped by
:func:`build_features`; nothing is ever filled from later rows.

Features that need volume (:data:`NEEDS_VOLUME`) cannot be computed for a symbol whose volume
column is empty (FX, indices): :func:`build_features` raises :class:`EmptyVolume` for it, and
training drops those features for every symbol of the run (:func:`drop_volume_features`, one rule
for a panel), stating them under ``dropped_features`` in its data report.

Time features (``calendar``, ``hour``) read the wall clock of the exchange's time zone
(``data.timezone``, an IANA name; ``tz`` below): the feature functions see the frame's timestamps
converted to it (:func:`local_frame`), everything else stays UTC. A daily bar stamped at UTC midnight
(a plain date, ``2024-01-02``, which the readers take as UTC midnight) is that date in the zone, not
the previous evening west of Greenwich (:data:`CALENDAR_VERSION`); whether a row is a daily bar is told
by the gaps up to it (:func:`date_stamps`), never by later rows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import numpy as np
import pandas as pd

from hftraining.core.config import DataConfig, shown, time_zone
from hftraining.core.errors import ConfigError, DataError, UserError
from hftraining.core.registry import Registry
from hftraining.data.alpha158 import alpha158 as alpha158_table
from hftraining.data.labels import universe_return

try:  # a dependency, never stood in for by pandas' rolling operators (other values, no warning)
    import talib
except ImportError as e:  # not installed, or its wheel cannot load: one line naming the package, not a traceback
    cause = (str(e).splitlines() or [type(e).__name__])[0]
    raise UserError(f"the features need TA-Lib, and the package ta-lib cannot be imported ({cause}): "
                    f"pip install 'ta-lib>=0.6.5'") from None

log = logging.getLogger(__name__)

FeatureFn = Callable[..., dict[str, np.ndarray]]
FEATURES: Registry[FeatureFn] = Registry("feature", "data.features")
NEEDS_VOLUME = frozenset({"volume_ratio", "obv", "alpha158"})
"""The registered features computed from the volume column."""


class EmptyVolume(DataError):
    """A symbol whose volume column is empty, asked for features that need volume."""

    def __init__(self, symbol: str, specs: list[str]):
        self.symbol, self.specs = symbol, list(specs)
        super().__init__(f"{symbol}: the volume column is empty, and the features {', '.join(self.specs)} need it")

    def __reduce__(self):  # raised in a worker process of the feature store, re-raised in the caller
        return (EmptyVolume, (self.symbol, self.specs))


def _check_lag(name: str, k: int) -> None:
    """A ConfigError unless the lag ``k`` is a whole number of rows >= 1. ``x[:-k]`` is no lag for
    k <= 0: ``return_-3`` put close_t / close_{t-(n-3)} on the last 3 rows only (its value depending on
    how many rows follow it) and made the warm-up n - 3 rows; ``return_0`` failed with a broadcasting
    error."""
    if not _whole(k) or k < 1:
        raise ConfigError(f"data.features: {name}_{k}: the lag must be >= 1 row, a whole number of rows")


def _whole(x) -> bool:
    """Whether ``x`` is a whole number (``parse_spec`` gives an int for ``14`` and ``14.0``, a float for ``14.5``)."""
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating)) and float(x).is_integer()


def _check_rows(spec: str, *counts) -> None:
    """A ConfigError naming ``spec`` unless each of ``counts`` (its windows and periods, in rows) is a
    whole number. TA-Lib truncates a fraction without a word (``rsi_14.5`` was RSI(14) under the
    name ``rsi_14.5``, ``market_2.5`` the columns MKT_RET2 and MKT_STD2), and numpy refused it only on
    some frames (``stoch_14.5_3_3`` raised a TypeError where a window held one price). A whole number
    too small for the indicator is TA-Lib's own error (``rsi_1``), which :func:`check_specs` states."""
    bad = next((c for c in counts if not _whole(c)), None)
    if bad is not None:
        raise ConfigError(f"data.features: {spec}: windows and periods are whole numbers of rows, got {bad}")


def _lag_log_return(close: np.ndarray, k: int) -> np.ndarray:
    _check_lag("log_return", k)
    out = np.full_like(close, np.nan)
    out[k:] = np.log(close[k:] / close[:-k])
    return out


@FEATURES.register("log_return")
def log_return(f: pd.DataFrame, k: int = 1) -> dict[str, np.ndarray]:
    """log(close_t / close_{t-k})."""
    return {f"log_return_{k}": _lag_log_return(f["close"].to_numpy(), k)}


@FEATURES.register("rsi")
def rsi(f: pd.DataFrame, n: int = 14) -> dict[str, np.ndarray]:
    """Wilder's relative strength index, 0..100; 50 while the close has not moved since the first row.

    RSI is 100 · gain / (gain + loss) of the smoothed gains and losses, undefined (0 / 0) until the
    first move: TA-Lib gives 0 there, the most oversold reading, for a history that opens flat (a
    new listing before its first trade, a peg); 50 is the middle. Any move keeps the sum positive.

    A row whose close equals the one before keeps the RSI of that row: the smoothed gain and loss
    both shrink by (n - 1) / n, so their ratio stays. TA-Lib's doubles do not hold it through a long
    flat stretch: after about 9,500 such rows (rsi_14) both are subnormal and the RSI wandered (43.1
    read 37.5, 40, 46.2), then both are 0 and it read 50, though no close had moved."""
    _check_rows(f"rsi_{n}", n)
    close = f["close"].to_numpy()
    out = talib.RSI(close, timeperiod=n)
    moved = close != close[0] if len(close) else np.zeros(0, bool)
    first_move = int(moved.argmax()) if moved.any() else len(close)  # rows before it: the close has not moved
    head = out[:first_move]
    head[~np.isnan(head)] = 50.0
    rows = np.arange(len(close))
    # row t > n with close_t == close_{t-1}: the value of row t-1 (row n, TA-Lib's first, is the seed)
    keep = np.zeros(len(close), dtype=bool)
    keep[n + 1:] = close[n + 1:] == close[n:-1]
    out = out[np.maximum.accumulate(np.where(keep, 0, rows))] if keep.any() else out
    return {f"rsi_{n}": out}


@FEATURES.register("macd")
def macd(f: pd.DataFrame, fast: int = 12, slow: int = 26, signal: int = 9) -> dict[str, np.ndarray]:
    """MACD line, signal and histogram, each divided by the close."""
    _check_rows(f"macd_{fast}_{slow}_{signal}", fast, slow, signal)
    if not fast < slow:  # TA-Lib swaps them without a word (macd_26_12_9 was macd_12_26_9); equal ones give 0
        raise ConfigError(f"data.features: macd_{fast}_{slow}_{signal}: the fast period must be shorter than the slow one")
    close = f["close"].to_numpy()
    line, sig, hist = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    p = f"{fast}_{slow}_{signal}"
    return {f"macd_{p}": line / close, f"macd_signal_{p}": sig / close, f"macd_hist_{p}": hist / close}


_SQUARES_UNDERFLOW = 2.0 ** -480  # below it a square is under 2^-960: variances of such values lose their digits


@FEATURES.register("bbands")
def bbands(f: pd.DataFrame, n: int = 20, k: float = 2) -> dict[str, np.ndarray]:
    """Bollinger position (0 at the lower band, 1 at the upper) and width (band span / middle)."""
    _check_rows(f"bbands_{n}_{k}", n)  # k, the band width in standard deviations, may be a fraction
    if not k > 0:  # TA-Lib takes any k: 0 made bb_pos a constant 0.5, a negative k also bb_width < 0
        raise ConfigError(f"data.features: bbands_{n}_{k:g}: the band width must be > 0 standard deviations")
    close = f["close"].to_numpy()
    upper, middle, lower = talib.BBANDS(close, timeperiod=n, nbdevup=k, nbdevdn=k, matype=0)
    span = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.where(span > 0, (close - lower) / span, 0.5)
    # TA-Lib's variance sums squares: for a window of closes below about 1e-154 they underflow to 0, and
    # bb_pos was a constant 0.5 and bb_width 0 where the closes vary; NaN there (build_features names it)
    zero = span == 0
    if zero.any():  # only then can a window have underflowed (two more passes of TA-Lib otherwise spent)
        hi = talib.MAX(close, timeperiod=n)
        span[zero & (hi < _SQUARES_UNDERFLOW) & (talib.MIN(close, timeperiod=n) < hi)] = np.nan
    pos[np.isnan(span)] = np.nan
    p = f"{n}_{k:g}"
    return {f"bb_pos_{p}": pos, f"bb_width_{p}": span / middle}


@FEATURES.register("volume_ratio")
def volume_ratio(f: pd.DataFrame, n: int = 20) -> dict[str, np.ndarray]:
    """Volume over its trailing n-row mean (1 where the n rows traded nothing).

    Whether they traded is read from their largest volume, exactly: TA-Lib's mean is a running sum,
    which after a run of zero volumes leaves a residue of the earlier ones (±5e-10 for volumes of
    1e6), so a test of the mean made the ratio 0 or 1 by the residue's sign."""
    _check_rows(f"volume_ratio_{n}", n)
    vol = f["volume"].to_numpy()
    mean = talib.SMA(vol, timeperiod=n)
    traded = (vol if n == 1 else talib.MAX(vol, timeperiod=n)) > 0  # MAX needs 2 rows; volumes are >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(traded, vol / mean, 1.0)
    out[np.isnan(mean)] = np.nan
    return {f"volume_ratio_{n}": out}


@FEATURES.register("return")
def simple_return(f: pd.DataFrame, k: int = 1) -> dict[str, np.ndarray]:
    """close_t / close_{t-k} - 1 (a simple return, not a log return)."""
    close = f["close"].to_numpy()
    _check_lag("return", k)
    out = np.full_like(close, np.nan)
    out[k:] = close[k:] / close[:-k] - 1.0
    return {f"return_{k}": out}


@FEATURES.register("atr")
def atr(f: pd.DataFrame, n: int = 14) -> dict[str, np.ndarray]:
    """Wilder's average true range divided by the close (a ratio, not a price)."""
    _check_rows(f"atr_{n}", n)
    close = f["close"].to_numpy()
    return {f"atr_{n}": talib.ATR(f["high"].to_numpy(), f["low"].to_numpy(), close, timeperiod=n) / close}


@FEATURES.register("stoch")
def stoch(f: pd.DataFrame, k: int = 14, smooth_k: int = 3, d: int = 3) -> dict[str, np.ndarray]:
    """Slow stochastic oscillator %K and %D (simple moving averages), 0..100; a fast %K of 50 where
    the ``k`` rows' highest high equals their lowest low (the close in the middle, as ``bbands``
    gives 0.5 for a window without spread).

    The fast %K, 100 · (close - lowest low) / (highest high - lowest low), is 0 / 0 over a window of
    one price (a suspension, minute bars without trades): TA-Lib gives 0 there, the close at its
    low, the most oversold reading. The slow lines are moving averages of the fast %K, so adding 50
    times the moving averages of those windows' indicator gives them their 50."""
    _check_rows(f"stoch_{k}_{smooth_k}_{d}", k, smooth_k, d)
    high, low = f["high"].to_numpy(), f["low"].to_numpy()
    slowk, slowd = talib.STOCH(
        high, low, f["close"].to_numpy(),
        fastk_period=k, slowk_period=smooth_k, slowk_matype=0, slowd_period=d, slowd_matype=0,
    )
    hi, lo = (high, low) if k == 1 else (talib.MAX(high, timeperiod=k), talib.MIN(low, timeperiod=k))  # MAX needs 2 rows
    flat = (hi == lo).astype(np.float64)
    if flat.any():  # only then is a fast %K undefined (no moving averages of an all-zero indicator)
        flat[: k - 1] = np.nan  # the rows before the first full window (SMA starts after them)
        share = talib.SMA(flat, timeperiod=smooth_k)  # (n,) share of the slow %K's fast values that are flat
        slowk = slowk + 50.0 * share
        slowd = slowd + 50.0 * talib.SMA(share, timeperiod=d)
    p = f"{k}_{smooth_k}_{d}"
    return {f"stoch_k_{p}": slowk, f"stoch_d_{p}": slowd}


@FEATURES.register("obv")
def obv(f: pd.DataFrame, n: int = 20) -> dict[str, np.ndarray]:
    """On-balance volume change over n rows divided by the volume traded in them, -1..1 (0 without volume)."""
    _check_rows(f"obv_{n}", n)
    vol = f["volume"].to_numpy()
    ob = talib.OBV(f["close"].to_numpy(), vol)
    change = np.full_like(ob, np.nan)
    change[n:] = ob[n:] - ob[:-n]
    traded = talib.SUM(vol, timeperiod=n)  # rows t-n+1..t: the volumes that moved the OBV since t-n
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(traded > 0, change / traded, 0.0)
    out[np.isnan(change)] = np.nan
    return {f"obv_{n}": out}


@FEATURES.register("volatility")
def volatility(f: pd.DataFrame, n: int = 20) -> dict[str, np.ndarray]:
    """Standard deviation (population) of the 1-row log returns over the last n rows."""
    _check_rows(f"volatility_{n}", n)
    r = _lag_log_return(f["close"].to_numpy(), 1)
    return {f"volatility_{n}": talib.STDDEV(r, timeperiod=n, nbdev=1)}


@FEATURES.register("dist_high")
def dist_high(f: pd.DataFrame, n: int = 20) -> dict[str, np.ndarray]:
    """close / (highest high of the last n rows) - 1, <= 0."""
    _check_rows(f"dist_high_{n}", n)
    close = f["close"].to_numpy()
    return {f"dist_high_{n}": close / talib.MAX(f["high"].to_numpy(), timeperiod=n) - 1.0}


@FEATURES.register("dist_low")
def dist_low(f: pd.DataFrame, n: int = 20) -> dict[str, np.ndarray]:
    """close / (lowest low of the last n rows) - 1, >= 0."""
    _check_rows(f"dist_low_{n}", n)
    close = f["close"].to_numpy()
    return {f"dist_low_{n}": close / talib.MIN(f["low"].to_numpy(), timeperiod=n) - 1.0}


@FEATURES.register("calendar")
def calendar(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """Day of week and month of year (in ``data.timezone``: the timestamps' own zone, see
    :func:`local_frame`) as points on the unit circle: dow_sin/cos, month_sin/cos."""
    ts = _wall_clock(f)
    dow = 2 * np.pi * ts.day_of_week.to_numpy(dtype=np.float64) / 7
    month = 2 * np.pi * (ts.month.to_numpy(dtype=np.float64) - 1) / 12
    return {"dow_sin": np.sin(dow), "dow_cos": np.cos(dow), "month_sin": np.sin(month), "month_cos": np.cos(month)}


def _wall_clock(f: pd.DataFrame) -> pd.DatetimeIndex:
    """The frame's stamps as the naive times their own zone's clock shows: the same fields (weekday,
    month, hour, minute) as the zoned stamps, which convert all of them again for each field read."""
    ts = pd.DatetimeIndex(f["timestamp"])
    return ts if ts.tz is None else ts.tz_localize(None)


@FEATURES.register("alpha158")
def alpha158(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """Qlib's Alpha158: 9 candlestick features, 4 price ratios and 29 rolling operators over 5, 10,
    20, 30 and 60 rows, all unit-free (:mod:`hftraining.data.alpha158`; 60 warm-up rows)."""
    return alpha158_table(f["open"].to_numpy(), f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy(),
                          f["volume"].to_numpy())


@FEATURES.register("market")
def market(f: pd.DataFrame, *windows: int) -> dict[str, np.ndarray]:
    """The equal-weight universe's log return summed over, and its volatility (population std)
    over, the last ``windows`` dates (default 5, 10, 20, 30, 60): MKT_RET<w>, MKT_STD<w>.

    A panel feature (:data:`PANEL_FEATURES`): it is computed across the symbols of each date once
    every symbol's rows are built (:func:`hftraining.data.rows.fill_panel_features`, into the
    feature store's entry or the in-memory rows), never per symbol. Called on one frame, as
    here, the universe is that one symbol (this names the columns and checks the parameters).
    The first dates of a panel use the dates there are (from one)."""
    close = f["close"].to_numpy(np.float64)
    r = np.r_[np.nan, np.log(close[1:] / close[:-1])]
    ns = utc_stamps(f["timestamp"]).asi8
    return market_columns(r, ns, windows, date_stamps(ns))


def market_columns(returns: np.ndarray, times: np.ndarray, windows=(),
                   dates: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The :func:`market` columns of rows with 1-step log ``returns`` (N,) at ``times`` (N,): the rows of
    one timestamp are that date's universe; each window reads that date and the dates before it.

    ``dates`` (N,) marks the rows that are dates, not instants (:func:`date_stamps`: daily bars at UTC
    midnight, whose close is some time of that UTC day; None: none is). Beside instants (a Tokyo file
    stamped at its 06:00 UTC close, hourly bars) a date is known once its UTC day is over: an instant
    reads the dates of the days before its own, never its own day's (a New York date closes at 21:00
    UTC, 15 hours after Tokyo's close of that date), and a date reads the dates up to its own and the
    instants before its day began, not its own day's (which may close after it does). A date and an
    instant at one stamp are two dates. A panel of dates alone, or of instants alone, is ordered by its
    stamps as they are."""
    bad = next((w for w in windows if not _whole(w) or w < 1), None)
    if bad is not None:  # int() truncated a fraction: market_2.5 wrote MKT_RET2 and MKT_STD2
        spec = "_".join(["market", *(f"{w}" for w in windows)])
        raise ConfigError(f"data.features: {spec}: windows are whole numbers of dates >= 1, got {bad}")
    windows = tuple(int(w) for w in windows) or MARKET_WINDOWS
    times = np.asarray(times, dtype=np.int64).reshape(-1)
    dates = np.zeros(len(times), dtype=bool) if dates is None else np.asarray(dates, dtype=bool).reshape(-1)
    if len(dates) != len(times):
        raise ValueError(f"market_columns: {len(dates)} date marks for {len(times)} rows")  # a caller's bug
    if dates.all() or not dates.any():
        _, inv = np.unique(times, return_inverse=True)
        inv, after = inv.reshape(-1), None
    else:
        inv, after = _known_orders(times, dates)
    e = pd.Series(universe_return(returns, inv))  # (D,) per date, by stamp (a date before an instant stamped then)
    out = {}
    for w in windows:
        ret, std = _rolling(e, w)
        if after is not None:  # the instants' windows, over the dates in the order they are known at its end
            order, is_date = after
            ret_a, std_a = _rolling(pd.Series(e.to_numpy()[order]), w)
            ret[order], std[order] = np.where(is_date[order], ret[order], ret_a), np.where(is_date[order], std[order], std_a)
        out[f"MKT_RET{w}"] = ret[inv]
        out[f"MKT_STD{w}"] = std[inv]
    return out


def _rolling(e: pd.Series, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The sum and population std of the last ``w`` values of ``e`` up to each (as many as there are)."""
    roll = e.rolling(w, min_periods=1)
    return roll.sum().to_numpy().copy(), roll.std(ddof=0).to_numpy().copy()


def _known_orders(times: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The dates (timestamps) of a panel that mixes dates and instants (:func:`market_columns`) → (inv (N,)
    each row's date, numbered by stamp, a date before an instant at its stamp, (the dates in the order
    they are known at a day's end, whether each is a date (D,))). Ordered by stamp, a date's window holds
    the dates up to its own and the instants before its day; ordered by when each is known (a date at the
    next midnight, before an instant stamped then), an instant's window holds the instants up to it and
    the dates of the days before its own."""
    kind = (~dates).astype(np.int8)  # at one stamp, the date first
    order = np.lexsort((kind, times))
    t, k = times[order], kind[order]
    new = np.r_[True, (t[1:] != t[:-1]) | (k[1:] != k[:-1])]
    inv = np.empty(len(times), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    stamp, is_date = t[new], k[new] == 0
    known = np.where(is_date, stamp + _DAY_NS, stamp)
    return inv, (np.lexsort((~is_date, known)), is_date)


MARKET_WINDOWS = (5, 10, 20, 30, 60)
PANEL_FEATURES = {"market": market_columns}
"""Features computed across the symbols of each date (after every symbol's rows are built), not per
symbol, by name: (returns (N,), times (N,), parameters, dates (N,) bool) → columns; they come after the
per-symbol ones."""


def symbol_specs(specs: list[str]) -> list[str]:
    """The specs of ``specs`` computed per symbol (all but :data:`PANEL_FEATURES`), in order."""
    return [s for s in specs if parse_spec(s)[0] not in PANEL_FEATURES]


def panel_specs(specs: list[str]) -> list[str]:
    """The specs of ``specs`` computed across symbols (:data:`PANEL_FEATURES`), in order."""
    return [s for s in specs if parse_spec(s)[0] in PANEL_FEATURES]


@FEATURES.register("hour")
def hour(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """Time of day (in ``data.timezone``, see :func:`local_frame`; to the minute) on the unit circle, for
    intraday data: hour_sin, hour_cos."""
    ts = _wall_clock(f)
    x = 2 * np.pi * (ts.hour.to_numpy(dtype=np.float64) * 60 + ts.minute.to_numpy(dtype=np.float64)) / 1440
    return {"hour_sin": np.sin(x), "hour_cos": np.cos(x)}


def parse_spec(spec: str) -> tuple[str, list[float | int]]:
    """``"macd_12_26_9"`` → ("macd", [12, 26, 9]). The longest registered name prefix wins."""
    parts = spec.split("_")
    for cut in range(len(parts), 0, -1):
        name = "_".join(parts[:cut])
        if name in FEATURES:
            params: list[float | int] = []
            for raw in parts[cut:]:
                try:
                    num = float(raw)
                except ValueError:
                    raise ConfigError(f"data.features: {spec!r} has a non-numeric parameter {raw!r}") from None
                params.append(int(num) if num.is_integer() else num)
            return name, params
    FEATURES.get(spec)  # raises the ConfigError listing valid names
    raise AssertionError


def check_specs(specs: list[str]) -> None:
    """Raise ConfigError for an unknown feature name or bad parameters, before reading any data."""
    probe = _probe(64)
    for spec in specs:
        name, params = parse_spec(spec)
        try:
            FEATURES.get(name)(probe, *params)
        except Exception as e:  # talib raises its own Exception subclass; the probe data is valid, so the spec is at fault
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"data.features: {spec!r}: bad parameters ({e})") from None


DAILY_BARS = 20 * 3600 * 10**9
"""ns: a frame whose rows are this far apart (median) holds daily (or longer) bars, as the validator
judges it (:data:`hftraining.data.validate.DAILY_SPACING`)."""

CALENDAR_VERSION = 3
"""How the time features read a stamp, written in a model folder's preprocessing.json as
``calendar_version``: 2 and 3 read a daily bar stamped at UTC midnight as that date in ``data.timezone``
(1, before 2026-12-05: as the UTC instant, so under ``America/New_York`` a Tuesday bar read Monday
19:00, a Monday bar Sunday). 3 tells a daily bar by the gaps up to it (:func:`date_stamps`), 2 (before
2026-12-06) by the spacing of the symbol's whole frame, so a daily history joined to hourly bars read
its daily rows as instants once the hourly rows came. Intraday bars, and daily bars stamped at another
time of day (a vendor's local midnight, 05:00 UTC for New York), read the same in all. A model of
version 1 whose time features the rule changes is refused (:func:`check_calendar_version`); one of
version 2 loads, and a request whose rows the two rules read otherwise is refused
(:func:`calendar_rule_change`): never fed inputs of another rule."""
TIME_FEATURES = frozenset({"calendar", "hour"})
"""The registered features that read the timestamps in ``data.timezone`` (:func:`local_frame`, which costs
more than the indicators: for any other list the frame is not converted). ``market`` groups rows by their
UTC stamps, as across a panel (:func:`hftraining.data.rows.fill_panel_features`): a date read as local
midnight would sort after the intraday bars of its UTC day that follow it."""


SESSION_SHARE = 1 / 3
"""At least this share of a frame's spacings under 18 hours (0.75 days): intraday bars, whatever their
median (two bars a session, 4-hour bars at 09:30 and 13:30, have the overnight gap as their median)."""


def bar_spacing(gaps: np.ndarray) -> float | None:
    """The typical spacing in ns of bars ``gaps`` (int64 ns differences of consecutive stamps): their
    median, or the median of the spacings under 18 hours when they are at least :data:`SESSION_SHARE`
    of them (two bars a session are intraday bars, as the backtest counts them); None for no gap."""
    gaps = np.asarray(gaps, dtype=np.int64)
    if not gaps.size:
        return None
    short = gaps < 18 * 3600 * 10**9
    med = exact_median(gaps)
    if med >= 18 * 3600 * 10**9 and short.mean() >= SESSION_SHARE:
        return exact_median(gaps[short])
    return med


def exact_median(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a non-empty int64 array, the same value, without numpy's partition on
    the usual spacings (one value for nearly every gap, a few longer ones: 0.15 s for 1M rows against
    2 ms here): the middle value of a sample is the median when as many values lie below it as the
    middle position needs, which two counts check exactly; otherwise np.median."""
    k_lo, k_hi = (len(x) - 1) // 2, len(x) // 2  # the median's order statistics (one for an odd length)
    guess = np.sort(x[:: max(1, len(x) // 1025)])
    guess = guess[len(guess) // 2]
    below, upto = np.count_nonzero(x < guess), np.count_nonzero(x <= guess)
    if below <= k_lo and k_hi < upto:  # both middle values are the guess
        return float(guess)
    return float(np.median(x))


OWN_SPACING_GAPS = 20
"""The gaps that tell a row's own spacing (:func:`date_stamps`): a row at UTC midnight is read by the spacing
of the last this many gaps up to it (fewer at the start of a symbol's history), never by later rows."""

_DAY_NS = 86400 * 10**9
_SHORT_NS = 18 * 3600 * 10**9  # a gap under 18 hours: intraday (bar_spacing)


def date_stamps(ns: np.ndarray, bar_seconds: float | None = None) -> np.ndarray:
    """(n,) mask of the rows of sorted int64 UTC ``ns`` that are dates, not instants: rows at UTC
    midnight of daily (or longer) bars. The readers take a plain date (``2024-01-02``) as UTC
    midnight, and a daily bar so stamped names a trading day, not the instant 19:00 of the day before
    in New York. Intraday bars at 00:00 UTC (crypto, or Tokyo's open) are instants. Never decided on
    prices, nor on later rows (calendar_version 3, :data:`CALENDAR_VERSION`).

    A row at midnight is a date when the gaps up to it say daily bars: :func:`bar_spacing` of the last
    :data:`OWN_SPACING_GAPS` gaps ending at it at least :data:`DAILY_BARS`, so a daily history joined to
    recent hourly bars keeps its dates. A row with fewer gaps before it in ``ns``: with ``bar_seconds``
    (the spacing of the symbol's training bars, a model folder's ``preprocessing.json``), daily when
    that is at least :data:`DAILY_BARS`, since a request's frame is the end of a history whose rows had
    their gaps in training (a Tokyo model's Friday close and Monday 00:00 UTC open are 67 hours apart:
    alone, they read as daily bars and the Monday bar as 00:00 in Tokyo, not the 09:00 of its
    training); None (training): by the gaps it has, the first row a date when at midnight."""
    ns = np.asarray(ns, dtype=np.int64)
    out = ns % _DAY_NS == 0
    at = np.flatnonzero(out)
    if not at.size:
        return out
    k = OWN_SPACING_GAPS
    if _known(bar_seconds):  # the frame is the end of a history: these rows had their gaps in training
        out[at[at < k]] = bar_seconds * 1e9 >= DAILY_BARS
        at = at[at >= k]
    else:  # the first rows of a history: the gaps they have (row 0, none: a date when at midnight)
        at = at[at > 0]
    if at.size:
        out[at] = _daily_windows(np.diff(ns), at, k)
    return out


def _daily_windows(gaps: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Whether :func:`bar_spacing` of the (up to) ``k`` gaps ending at each of ``rows`` (row i >= 1:
    ``gaps[max(0, i-k):i]``) is at least :data:`DAILY_BARS`, without a median per row: that is a median of
    at least DAILY_BARS and under :data:`SESSION_SHARE` of the gaps under 18 hours (otherwise the spacing
    is under 18 hours). Counts of the gaps below DAILY_BARS decide the median except where exactly the
    upper middle gap of an even window reaches it (a median per such row; a loop for the first rows only,
    fewer than ``k``, instead of a bar_spacing call for each first row of every symbol)."""
    w = np.minimum(rows, k)  # each row's window

    def count(mask: np.ndarray) -> np.ndarray:  # trues among the gaps of each row's window
        c = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return c[rows] - c[rows - w]

    short = count(gaps < _SHORT_NS)
    below = count(gaps < DAILY_BARS)
    lo, hi = (w - 1) // 2, w // 2  # the median's order statistics (one for an odd window)
    daily = below <= lo  # both middle gaps at least DAILY_BARS
    mixed = np.flatnonzero((below > lo) & (below <= hi))  # the lower middle gap under it, the upper not
    full = mixed[w[mixed] == k]
    if full.size:
        windows = np.lib.stride_tricks.sliding_window_view(gaps, k)[rows[full] - k]
        daily[full] = np.median(windows, axis=1) >= DAILY_BARS
    for j in mixed[w[mixed] < k]:
        daily[j] = np.median(gaps[: rows[j]]) >= DAILY_BARS
    return daily & ~(short / w >= SESSION_SHARE)


def _frame_dates(ns: np.ndarray, bar_seconds: float | None, version: int = 2) -> np.ndarray:
    """The mask :func:`date_stamps` gave under calendar_version 2: by the spacing of the whole frame (by
    ``bar_seconds`` for a frame of at most :data:`OWN_SPACING_GAPS` bars), rows after a row included;
    under version 1, no row (every stamp an instant). Only to tell where a model of that version read its
    inputs otherwise (:func:`calendar_rule_change`)."""
    ns = np.asarray(ns, dtype=np.int64)
    if version == 1:
        return np.zeros(len(ns), dtype=bool)
    midnight = ns % _DAY_NS == 0
    if _known(bar_seconds) and len(ns) <= OWN_SPACING_GAPS:
        daily = bar_seconds * 1e9 >= DAILY_BARS
    else:
        daily = len(ns) < 2 or bar_spacing(np.diff(ns)) >= DAILY_BARS
    return midnight if daily else np.zeros(len(ns), dtype=bool)


def calendar_rule_matters(specs: list[str], tz: str) -> bool:
    """Whether a date and an instant can give other features of ``specs`` in the zone ``tz``: ``calendar`` or
    ``hour`` on a clock that is not always UTC's."""
    return bool(TIME_FEATURES & {parse_spec(s)[0] for s in specs}) and _offsets(tz)[1]


def calendar_rule_change(ns: np.ndarray, specs: list[str], tz: str, bar_seconds: float | None = None,
                         version: int = 2) -> int | None:
    """The first row of sorted int64 UTC ``ns`` whose ``calendar`` or ``hour`` features (of ``specs``, in the
    zone ``tz``) calendar_version 2 computed otherwise than this version (:func:`date_stamps`: that one
    read a frame's midnights by the spacing of all its bars), or None: a row one rule reads as a date and
    the other as an instant, on a clock behind UTC's then (``calendar``: the day before) or off it
    (``hour``). ``bar_seconds``: as :func:`date_stamps` is given it. Row 0 is left out: without a previous
    close it is never a model's input (:func:`hftraining.data.rows.symbol_rows`)."""
    if not calendar_rule_matters(specs, tz):
        return None
    names = {parse_spec(s)[0] for s in specs}
    ns = np.asarray(ns, dtype=np.int64)
    differ = np.flatnonzero(date_stamps(ns, bar_seconds) != _frame_dates(ns, bar_seconds, version))
    differ = differ[differ > 0]
    if not differ.size:
        return None
    at = pd.DatetimeIndex(ns[differ]).tz_localize("UTC")
    off = (at.tz_convert(time_zone(tz, "data.timezone")).tz_localize(None) - at.tz_localize(None)).asi8
    changed = np.zeros(len(differ), dtype=bool)
    if "calendar" in names:
        changed |= off < 0
    if "hour" in names:
        changed |= off != 0
    return int(differ[changed][0]) if changed.any() else None


def _known(bar_seconds) -> bool:
    """Whether ``bar_seconds`` is a recorded spacing (a positive finite number, not a bool or None)."""
    return (isinstance(bar_seconds, (int, float)) and not isinstance(bar_seconds, bool)
            and bool(np.isfinite(bar_seconds)) and bar_seconds > 0)


def utc_stamps(stamps) -> pd.DatetimeIndex:
    """``stamps`` (a timestamp column) as a nanosecond UTC index: zone-less stamps are UTC, as the readers
    take them (pandas 3 may hand microsecond units, whose ``asi8`` would not be nanoseconds)."""
    ts = pd.DatetimeIndex(stamps)
    return (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).as_unit("ns")


def local_frame(frame: pd.DataFrame, tz: str | None, bar_seconds: float | None = None) -> pd.DataFrame:
    """``frame`` with its ``timestamp`` column converted to the time zone ``tz`` (``data.timezone``, an
    IANA name; naive timestamps are UTC, as the readers take them), which the time features read;
    every other feature reads no timestamp. A date (:func:`date_stamps`: a bar at UTC midnight whose gaps
    up to it are daily) becomes midnight of that date in ``tz`` (01:00 on the few dates whose clocks skip
    midnight), so its weekday and month are the date's own and its hour 0, as under UTC; any other stamp
    is the same instant, read on the local clock. ``tz`` None: ``frame`` as it is (a validated frame is
    UTC). ConfigError naming ``data.timezone`` for an unknown zone. ``bar_seconds``: see
    :func:`date_stamps`."""
    if tz is None or "timestamp" not in frame.columns:
        return frame
    zone = time_zone(tz, "data.timezone")
    ts = utc_stamps(frame["timestamp"])
    dates = date_stamps(ts.asi8, bar_seconds)
    if dates.any():
        day = ts[dates].tz_localize(None).tz_localize(zone, ambiguous=np.ones(int(dates.sum()), dtype=bool),
                                                     nonexistent="shift_forward")
        ns = ts.asi8.copy()
        ns[dates] = day.asi8
        ts = pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
    return frame.assign(timestamp=ts.tz_convert(zone))


def check_calendar_version(v, specs: list[str], tz: str, bar_seconds, where: str,
                           fix: str = "retrain the model", stamps: list | None = None) -> None:
    """A model folder's ``calendar_version`` (1 when absent) → a DataError naming ``where`` (and saying
    ``fix``) when this version computes its time features otherwise (:data:`CALENDAR_VERSION`): version 1
    with daily bars (``bar_seconds`` at least :data:`DAILY_BARS`, or not recorded) and ``calendar`` under a
    zone ``tz`` behind UTC at times (a date read the evening before) or ``hour`` under one whose clock is
    not UTC's (another hour). Other models read the same features under both rules and load (version 2
    differs from 3 only on some frames' rows, which :func:`calendar_rule_change` finds in each request);
    a newer version is refused as a newer folder is."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{where}: calendar_version must be a positive integer, got {shown(v)}")
    if v > CALENDAR_VERSION:
        raise DataError(f"{where}: calendar_version {v} was written by a newer hftraining (this one computes time "
                        f"features of version {CALENDAR_VERSION}); upgrade hftraining to load it")
    names = {parse_spec(s)[0] for s in specs}
    west, other = _offsets(tz)
    # a UTC midnight read on a clock behind UTC's is the day before; on any other clock than UTC's, another hour
    timed = [n for n, changed in (("calendar", west), ("hour", other)) if n in names and changed]
    known = isinstance(bar_seconds, (int, float)) and not isinstance(bar_seconds, bool) and np.isfinite(bar_seconds)
    daily = not known or bar_seconds * 1e9 >= DAILY_BARS
    # the rows' stamps, where known (each symbol's last, in preprocessing.json's source_rows): none at UTC
    # midnight, no date was read, and both rules computed the same features (a vendor's 21:00 UTC close)
    if stamps:  # int64 ns UTC (check_source_rows read them: a stamp without a zone is UTC, as it was written)
        daily = daily and any(int(t) % (86400 * 10**9) == 0 for t in stamps)
    if v < 2 and timed and daily:
        raise DataError(f"{where}: its {' and '.join(timed)} features of daily bars were computed by calendar_version "
                        f"{v}, which read a date (stamped at UTC midnight) as that instant on the clock of data.timezone="
                        f"{tz}, west of Greenwich the evening before; versions since 2 read it as its own "
                        f"date; {fix}")


@functools.lru_cache(maxsize=64)
def _offsets(tz: str) -> tuple[bool, bool]:
    """(whether the zone ``tz`` is ever behind UTC, whether its offset is ever other than 0), judged
    on the 1st and 15th of every month from 1970 to 2040 (``UTC``, ``Africa/Abidjan``: never;
    ``Europe/London``: ahead in summer; ``America/New_York``: behind)."""
    days = pd.date_range("1970-01-01", "2040-12-31", freq="SMS", tz="UTC")
    off = days.tz_convert(time_zone(tz, "data.timezone")).tz_localize(None) - days.tz_localize(None)
    return bool((off < pd.Timedelta(0)).any()), bool((off != pd.Timedelta(0)).any())


def _feature_matrix(frame: pd.DataFrame, specs: list[str], tz: str | None = None,
                    bar_seconds: float | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, F) float64 matrix of all features of ``specs`` and its column names. Column-major: each
    column is contiguous, which is also the layout of a pandas block (so no copy when framed).
    ``tz``, ``bar_seconds``: see :func:`local_frame`."""
    parsed = [parse_spec(spec) for spec in specs]
    local = frame
    if any(name in TIME_FEATURES for name, _ in parsed):  # the others read no wall clock: no conversion
        local = local_frame(frame, tz, bar_seconds)
    parts: list[tuple[str, np.ndarray]] = []
    for name, params in parsed:
        parts += FEATURES.get(name)(local if name in TIME_FEATURES else frame, *params).items()
    names = [c for c, _ in parts]
    dup = next((c for c in names if names.count(c) > 1), None)
    if dup:
        raise ConfigError(f"data.features: column {dup!r} produced twice")
    out = _as_block([values for _, values in parts], len(frame))
    if out is None:
        out = np.empty((len(parts), len(frame)), dtype=np.float64).T
        for j, (_, values) in enumerate(parts):
            out[:, j] = values
    return out, names


def _as_block(columns: list[np.ndarray], n: int) -> np.ndarray | None:
    """The (n, F) column-major matrix whose columns ``columns`` already are, in order (a feature that
    returns the columns of one block, as :func:`hftraining.data.alpha158.alpha158` does: its table is
    the matrix, not copied into another), or None."""
    base = columns[0].base if columns else None
    if not (isinstance(base, np.ndarray) and base.dtype == np.float64 and base.shape == (len(columns), n)
            and base.flags.c_contiguous and base.flags.writeable):
        return None
    for j, col in enumerate(columns):
        if not (col.base is base and col.shape == (n,) and col.strides == (8,)
                and col.__array_interface__["data"][0] == base[j].__array_interface__["data"][0]):
            return None
    return base.T


def compute_features(frame: pd.DataFrame, specs: list[str], tz: str | None = None,
                     bar_seconds: float | None = None) -> pd.DataFrame:
    """All features of ``specs`` for one symbol, row-aligned with ``frame`` (warm-up rows NaN);
    the time features in the zone ``tz`` (``data.timezone``; :func:`local_frame`), a stamp at UTC
    midnight read as a date or an instant by ``bar_seconds`` (:func:`date_stamps`)."""
    values, names = _feature_matrix(frame, specs, tz, bar_seconds)
    return pd.DataFrame(values, columns=names, index=frame.index, copy=False)


def volume_features(specs: list[str]) -> list[str]:
    """The specs of ``specs`` that need volume, in order."""
    return [s for s in specs if parse_spec(s)[0] in NEEDS_VOLUME]


def volume_is_empty(frame: pd.DataFrame) -> bool:
    """Whether a frame has rows and no volume in any of them (its volume column empty, or none: a library
    caller's frames), so the volume features are dropped as for an empty column, not a KeyError."""
    return len(frame) > 0 and ("volume" not in frame.columns
                               or not np.isfinite(frame["volume"].to_numpy(np.float64)).any())


def drop_volume_features(d: DataConfig, symbols: list[str],
                         why: str = "volume column is empty") -> tuple[DataConfig, dict[str, str]]:
    """The one rule for symbols without volume: when any symbol of a run has an empty volume column,
    the features that need volume are dropped for every symbol → (data section with the remaining
    ``features``, {dropped spec: why}). Logged; nothing changes when ``symbols`` is empty. A
    DataError when no feature would be left. ``why``: the symbols' reason (training's other one: no
    volume before the first validation date, :func:`hftraining.data.pipeline.prepare`)."""
    dropped = volume_features(d.features) if symbols else []
    if not dropped:
        return d, {}
    names = ", ".join(symbols[:3]) + (f" and {len(symbols) - 3} more" if len(symbols) > 3 else "")
    why = f"{why} ({names})"
    kept = [s for s in d.features if s not in dropped]
    if not kept:
        raise DataError(f"data.features: every feature ({', '.join(dropped)}) needs volume: {why}")
    log.warning("data: features %s dropped for every symbol: %s", ", ".join(dropped), why)
    return dataclasses.replace(d, features=kept), {s: why for s in dropped}


def build_features(
    frame: pd.DataFrame, specs: list[str], symbol: str = "?", values: np.ndarray | None = None, tz: str | None = None,
    bar_seconds: float | None = None,
) -> tuple[pd.DataFrame, int]:
    """Features with the warm-up rows dropped → (features, number of leading rows dropped).

    The returned frame keeps ``timestamp`` and ``close`` (for the targets) beside the features.
    ``values``: the (n, F) matrix :func:`compute_features` gave for this frame earlier (the feature
    cache), used instead of computing it again. A value after the warm-up (:func:`feature_warmup`
    rows) that is not finite, or beyond float32's range (the rows the model reads are float32), is a
    DataError naming the feature, its timestamp and the close and volume there (prices or volumes
    too extreme to compute it from), never more rows taken for warm-up; a frame of no more rows than
    the warm-up is a DataError saying so; a frame without volume and features that need it is
    :class:`EmptyVolume`. ``tz``: the zone of the time features (``data.timezone``; :func:`local_frame`);
    ``bar_seconds``: the bars' spacing that says whether a stamp at UTC midnight is a date (:func:`date_stamps`).
    """
    if values is None:
        if volume_is_empty(frame) and volume_features(specs):
            raise EmptyVolume(symbol, volume_features(specs))
        values, names = _feature_matrix(frame, specs, tz, bar_seconds)
    else:
        names = feature_columns(specs)
        if values.shape != (len(frame), len(names)):
            raise ValueError(f"build_features: values {values.shape} do not fit {len(frame)} rows × {len(names)} features")
    valid = np.isfinite(values).all(axis=1)
    warm = feature_warmup(specs)  # the indicators' look-back: NaN on every frame, whatever its prices
    if len(frame) <= warm:
        raise DataError(f"{symbol}: too few rows ({len(frame)}) to compute the features {specs} "
                        f"(their warm-up takes {warm} rows)")
    first = int(np.argmax(valid)) if valid.any() else len(frame)
    start = min(first, warm)
    bad = np.flatnonzero(~valid[start:])  # a non-finite value after the warm-up is never taken for more warm-up
    if bad.size:
        _extreme(frame, values, names, symbol, start + int(bad[0]), "is not finite")
    kept = values[first:]
    over = (kept.max(axis=0, initial=-np.inf) > F32_MAX) | (kept.min(axis=0, initial=np.inf) < -F32_MAX)
    if over.any():  # finite here, inf in the float32 rows the model reads (symbol_rows)
        j = int(np.argmax(over))
        _extreme(frame, values, names, symbol, first + int(np.argmax(np.abs(kept[:, j]) > F32_MAX)),
                 f"is beyond the float32 range the model reads (about ±{F32_MAX:.1e})", j)
    out = pd.DataFrame(values[first:], columns=names, copy=False)  # a view: no copy of the feature block
    out.insert(0, "close", frame["close"].to_numpy()[first:])
    out.insert(0, "timestamp", frame["timestamp"].array[first:])  # keeps the dtype (to_numpy of tz-aware is objects)
    return out, first


F32_MAX = float(np.finfo(np.float32).max)
"""The largest feature value the float32 rows (:mod:`hftraining.data.rows`) hold; a larger one is a DataError."""


def _extreme(frame: pd.DataFrame, values: np.ndarray, names: list[str], symbol: str, row: int, what: str,
             col: int | None = None) -> None:
    """The DataError of a feature value at ``row`` (after the warm-up) that the model cannot read: it
    names the feature, its value and the row's timestamp (the validated frame's row numbers are not
    the file's lines), and the close and volume there, the inputs whose extremes cause it (prices
    near float64's limits overflow the indicators' sums of squares; a tiny volume after huge ones
    makes a volume ratio beyond float32)."""
    if col is None:
        col = int(np.flatnonzero(~np.isfinite(values[row]))[0])
    ts = pd.Timestamp(frame["timestamp"].iloc[row])
    close = float(frame["close"].iloc[row])
    vol = float(frame["volume"].iloc[row]) if "volume" in frame.columns else float("nan")
    raise DataError(f"{symbol}: feature {names[col]} {what} at {ts.isoformat()} ({values[row, col]:.3g}; close "
                    f"{close:.6g}, volume {vol:.6g} there): the prices or volumes are too extreme to compute it from")


def feature_columns(specs: list[str]) -> list[str]:
    """The column names ``specs`` produce, in order: the per-symbol features', then the panel
    features' (:data:`PANEL_FEATURES`)."""
    return list(_feature_columns(tuple(specs)))


@functools.lru_cache(maxsize=64)
def _feature_columns(specs: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`feature_columns`, computed once per list of specs (Alpha158's takes about a second). A bad
    spec is :func:`check_specs`'s one-line ConfigError, not the indicator's own exception (a run sizes
    its model with this before its data are read)."""
    check_specs(list(specs))
    return tuple(compute_features(_probe(256), symbol_specs(list(specs)) + panel_specs(list(specs))).columns)


def _probe(n: int) -> pd.DataFrame:
    """A small valid OHLCV frame (a seeded random walk) to try specs on."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    spread = close * rng.uniform(0.001, 0.01, n)
    return pd.DataFrame({
        "timestamp": pd.date_range("2000-01-03", periods=n, freq="D", tz="UTC"),
        "open": close, "high": close + spread, "low": close - spread, "close": close,
        "volume": rng.uniform(1e5, 1e6, n),
    })


_WARMUP_PROBE = 4096  # rows of the first probe a spec's warm-up is measured on; doubled for a longer look-back
_WARMUP_PROBE_MAX = 1 << 20  # TA-Lib's periods go up to 100,000 rows (MACD's and STOCH's add two or three)


@functools.lru_cache(maxsize=256)
def _spec_warmup(spec: str) -> int:
    """Leading rows the one spec ``spec`` leaves NaN, measured on the probe (:func:`_probe`), whose rows
    are doubled until one is past the warm-up: a window longer than the first probe (``volatility_5000``,
    ``dist_high_10080``: a week of minute bars) is a look-back like any other. ConfigError beyond
    :data:`_WARMUP_PROBE_MAX` rows."""
    n = _WARMUP_PROBE
    while True:
        valid = np.isfinite(compute_features(_probe(n), [spec]).to_numpy()).all(axis=1)
        if valid.any():
            return int(np.argmax(valid))
        if n >= _WARMUP_PROBE_MAX:
            raise ConfigError(f"data.features: {spec} needs more than {n} rows of warm-up")
        n *= 2


@functools.lru_cache(maxsize=64)
def _warmup(specs: tuple[str, ...]) -> int:
    # every spec alone (the probe's rows are finite from a spec's warm-up on), so a long look-back never
    # computes the others, Alpha158's 158 columns say, on its longer probe
    return max((_spec_warmup(s) for s in specs), default=0)


def feature_warmup(specs: list[str]) -> int:
    """Leading rows that ``specs`` leave NaN (dropped by :func:`build_features`): the longest of their
    look-backs, however long."""
    return _warmup(tuple(specs))


SETTLE_TOLERANCE = 1e-3
"""A feature value is settled when it is within this fraction of the feature's standard deviation of
the value the same row gets from a much longer history (:func:`feature_settle`). The model reads
features divided by a scale of about that standard deviation, so its inputs then differ by less
than about 0.001."""

_SETTLE_MARGIN = 10  # measured on the probe at SETTLE_TOLERANCE / 10: see feature_settle
_SETTLE_PROBE = 4096  # rows of the first probe; doubled (up to _SETTLE_PROBE_MAX) for a slower feature
_SETTLE_PROBE_MAX = 1 << 16
_SETTLE_STARTS = 8  # histories cut at this many points of the probe's first half

SETTLE_MEASURABLE = _SETTLE_PROBE_MAX // 4
"""The most rows :func:`feature_settle` can measure: a spec that needs more (``rsi_1700``, ``atr_2000``:
smoothing with alpha = 1/n settles after about 10 n rows) does not settle within any history the
probe can compare, and its settled rows are unknown (:func:`settle_unknown`)."""


@functools.lru_cache(maxsize=256)
def _settle(spec: str) -> int | None:
    """:func:`feature_settle` of one spec, measured on the probe series (:func:`_probe`); None when it
    does not settle within :data:`SETTLE_MEASURABLE` rows."""
    n = _SETTLE_PROBE
    while n <= _SETTLE_PROBE_MAX:
        probe = _probe(n)
        full = compute_features(probe, [spec]).to_numpy()  # (n, F): from the probe's first row
        half = n // 2
        if not np.isfinite(full[half:]).all():  # a warm-up of more than half the probe: a longer probe
            n *= 2
            continue
        scale = full[half:].std(axis=0)
        allowed = SETTLE_TOLERANCE / _SETTLE_MARGIN * np.where(scale > 0, scale, 1.0)  # constant on the probe: absolute
        settle, step = 0, half // _SETTLE_STARTS
        for s in range(step, half + 1, step):  # histories starting at row s, each at least n/2 rows long
            part = compute_features(probe.iloc[s:].reset_index(drop=True), [spec]).to_numpy()
            off = ~(np.abs(part - full[s:]) <= allowed).all(axis=1)  # (n - s,) True where a column is off
            bad = np.flatnonzero(off)  # rows (of the cut history) still off, warm-up (NaN) rows included
            last = int(bad[-1]) + 1 if bad.size else 0
            if last > (n - s) // 2:  # not settled within half of this history: a longer probe decides
                break
            settle = max(settle, last)
        else:
            return settle
        n *= 2
    return None  # its values still depend on rows further back than SETTLE_MEASURABLE


def feature_settle(specs: list[str]) -> int | None:
    """Leading rows after which every feature of ``specs`` is settled (>= :func:`feature_warmup`): from
    that row on, a symbol's feature values are within :data:`SETTLE_TOLERANCE` times the feature's
    standard deviation of the values a longer history gives. A feature of a finite window
    (``bbands_20_2``, ``volume_ratio_20``, ``market``'s 60 dates) is settled once its window is full.
    None when a spec does not settle within :data:`SETTLE_MEASURABLE` rows (:func:`settle_unknown`):
    then no number of rows is known to be enough, and a forecast depends on the whole history it is
    given (the model trains and forecasts all the same; forecasts carry a warning naming the spec).

    Recursive indicators (RSI and ATR smooth with alpha = 1/n, MACD's EMAs with alpha = 2/(n+1))
    depend on every earlier row, less and less: the difference a shorter history makes decays like
    (1 - alpha)^k. The rows are measured, not tabulated: each spec is computed on a seeded random walk
    (:func:`_probe`) from its first row and from 8 later rows, and the rows after which the shorter
    histories agree with the longer one to a tenth of the tolerance are counted (the largest of the 8;
    cached per spec). The tenth is a margin for real prices, whose changing volatility can start a
    short history further off than the probe's even walk: on the bundled data (344 histories cut
    every 25 rows of 11 symbols) the most rows any needed to settle to the tolerance itself were 128
    for ``rsi_14``, 133 for ``macd_12_26_9`` and 119 for ``atr_14``; this gives 136, 152 and 146
    (the walk alone, to the tolerance: 105, 121, 115). Every spec is computed on its own, so the
    rows of a list are the largest of its specs'.

    TA-Lib's own answer to this, ``TA_SetUnstablePeriod`` (``talib.set_unstable_period``), is a global
    setting that leaves the first k outputs of a function with memory NaN: it would lengthen the
    warm-up and change the rows training uses, and TA-Lib leaves the k (0 by default) to its caller.
    It stays at 0; this function is how many rows the forecasts need instead."""
    settles = [_settle(s) for s in specs]
    return None if None in settles else max(settles, default=0)


def settle_unknown(specs: list[str]) -> list[str]:
    """The specs of ``specs`` that do not settle within :data:`SETTLE_MEASURABLE` rows (their
    :func:`feature_settle` is None), in order."""
    return [s for s in specs if _settle(s) is None]


def unsettled_specs(specs: list[str], rows: int) -> list[str]:
    """The specs of ``specs`` that have not settled (:func:`feature_settle`) at row ``rows`` of a symbol;
    those of :func:`settle_unknown` at every row."""
    return [s for s in specs if (k := _settle(s)) is None or k > rows]
