"""A cost-aware backtest of forecasts, with explicit timing.

Panels are (T dates, N symbols). ``signal[t]`` is known at the close of date t; ``returns[t]`` is
the log return of the period that ends at the close of date t. The weights decided from
``signal[t]`` are traded at the close of t and earn ``returns[t + 1]``: the one shift in
:func:`simulate` is the whole of the timing discipline, and tests/test_eval_backtest.py fails if it
moves by one period in either direction.

Costs: ``cost_bps + slippage_bps`` basis points of traded notional, where the trade at t is the
distance between the new weights and the previous weights after they drifted with the period's
returns. A portfolio return is the weighted sum of simple returns (weights are shares of capital).

Portfolios: ``per_symbol`` trades each symbol on its own forecast (:func:`positions`); ``topk`` is a
cross-sectional long-short (or long-only) book of the best- and worst-ranked symbols with Qlib's
TopK-Dropout turnover control (:func:`topk_weights`). Either way the weights go through
:func:`hold` (rebalancing every m periods, drifting in between) and the one :func:`simulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import stats

from hftraining.core.config import backtest_ignored, backtest_ignored_text
from hftraining.core.fmt import fmt, fmt_time
from hftraining.data.labels import CROSS_SECTIONAL
from hftraining.data.features import SESSION_SHARE  # the one rule: two bars a session are intraday bars
from hftraining.eval.forecasts import NO_TIME, label
from hftraining.eval.selection import FLAT_RTOL  # one rule for returns with no spread

LOOKAHEAD_HIT_RATE = 0.75  # a daily hit rate above this over many periods is not a forecast, it is a leak
LOOKAHEAD_MIN_POSITIONS = 100
# and beyond the hit rate its positions get by chance (:func:`chance_hit_rate`): more than this share of the way from
# that rate to 1 (0.5: above 0.75 where chance is 0.5; above 0.925 for a book long a market that rose 85% of the time)
LOOKAHEAD_BEYOND_CHANCE = (LOOKAHEAD_HIT_RATE - 0.5) / 0.5
# and a hit rate that high is less likely than this by chance (one symbol's positions of 500 symbols' books, each
# hitting as often as chance has it, warn one run in 2,000)
LOOKAHEAD_P = 1e-6
FEW_PERIODS = 20  # fewer periods than this: the backtest's settings warn that its annualised figures rest on them


SESSION_GAP = 3.0  # intraday: a gap longer than this many median bar spacings ends a session
SESSION_SPAN_DAYS = 28.0  # intraday: sessions per year are counted when the bars span at least this long


DAILY = (0.75, 1.5)  # days: a median spacing below the first is intraday; daily bars have two dates closer than the second
WEEKLY = (6.5, 7.5)  # days: the median spacing of weekly bars (a holiday moves a bar by a day, not the median)
WEEKEND_SHARE = 1 / 7  # more than this share of the dates on the two quietest weekdays: a market open at weekends
TOPK_BLOCK = 4096  # dates ranked together by :func:`_topk_books` (its arrays: a few times the block's signal)
# hours from Monday 00:00 UTC: Saturday 12:00 to Sunday 10:00 UTC, when a market closed on the Saturday and
# Sunday of its own time zone (UTC-12 to UTC+14: FX from Friday 17:00 to Sunday 17:00 New York too) is closed
WEEKEND_WINDOW = (5 * 24 + 12, 6 * 24 + 10)


def trades_at_weekends(dates: np.ndarray) -> bool:
    """Whether the (T,) int64 ns timestamps ``dates`` come from a market open at weekends: more than
    ``WEEKEND_SHARE`` of them fall on the two weekdays (of UTC) that hold the fewest.

    Not the share on Saturday and Sunday in UTC: a daily bar stamped at local midnight east of UTC
    (``2024-01-08 00:00+01:00``, as yfinance writes them) is a Sunday in UTC for a Monday session, and a
    Tokyo bar of Monday is Sunday 15:00 UTC. A time zone only turns the weekdays round, so a market
    closed two days a week leaves two weekdays empty in any zone; daylight saving that moves the stamps
    across midnight in UTC (London) puts at most half a day's share (1/10) on the quieter one. A market
    open every day holds 2/7 of its dates there (1/6 with only 6 days of data); a few weekend sessions
    of a weekday market stay far below 1/7. Fewer than 6 daily dates cannot show weekend trading: False.
    """
    t = np.asarray(dates, dtype=np.int64)
    if len(t) == 0:
        return False
    dow = (t // 86_400_000_000_000 + 3) % 7  # 1970-01-01 was a Thursday; floor division, so pre-1970 too
    quiet = np.sort(np.bincount(dow, minlength=7))[:2].sum()
    return bool(quiet > WEEKEND_SHARE * len(t))


def weekend_share(t: np.ndarray, step: float) -> float | None:
    """Of (T,) sorted int64 ns timestamps ``t`` of bars ``step`` ns apart around the clock: the share of the
    bar steps that hold a bar in the ``WEEKEND_WINDOW`` windows (Saturday 12:00 to Sunday 10:00 UTC) that
    the bars reach, each cut to the bars' first to last step (a split that starts or ends inside a weekend
    holds that part of it), or None when they reach less than one step of any and hold no bar in it. A market closed at weekends
    in any time zone has no bar there (0); one open every day (crypto) fills them (1, less its missing
    bars). It settles bars of fewer than 6 days, which :func:`trades_at_weekends` cannot (a weekday market
    holds every weekday then)."""
    hour, week = 3_600 * 10**9, 7 * 86_400 * 10**9
    monday = 4 * 86_400 * 10**9  # 1970-01-05, the first Monday
    lo, hi = (h * hour for h in WEEKEND_WINDOW)
    start, end = int(t[0]), int(t[-1]) + int(step)  # the last bar's step ends a step after it
    first = monday + lo + ((start - monday - hi) // week + 1) * week  # the first window that closes after t[0]
    opens = np.arange(first, end, week, dtype=np.int64)  # the windows that open before the last bar's step ends
    lo_cut, hi_cut = np.maximum(opens, start), np.minimum(opens + (hi - lo), end)
    steps = float((hi_cut - lo_cut).sum()) / step
    held = int((np.searchsorted(t, hi_cut, side="left") - np.searchsorted(t, lo_cut, side="left")).sum())
    if steps < 1 and not held:  # a bar inside a window settles it, even in less than one step of it
        return None
    return min(held / steps, 1.0)


def trading_days(session_starts: np.ndarray, session_lasts: np.ndarray) -> np.ndarray:
    """(D,) indices of the sessions that open a trading day, of (S,) sorted int64 ns session starts and
    the (S,) times of their last bars: a day is the sessions that start less than ``DAILY[0]`` days (18
    hours) after its first. A lunch break (Tokyo, Hong Kong, Shanghai) or a halt splits a day into
    sessions; the next day's first opens about 24 hours after the day's first (23 to 25 across daylight
    saving), and a night session and the day session after it (21:00 and 09:00) are one day. The data's
    first session may be the tail of one the data cut (a test split from 15:35, or from 06:00 of a
    market open 23 hours a day): the next session opens less than 18 hours after it, but its last bar is
    a day or more after it, so it opens a day of its own (the first day counted the cut tail's bars
    beside a whole session's). A later day opens where a session opens, about a day after the one before."""
    s = np.asarray(session_starts, dtype=np.int64)
    e = np.asarray(session_lasts, dtype=np.int64)  # sessions do not overlap: sorted as the starts are
    day = 86_400 * 10**9
    out, i = [], 0
    while i < len(s):
        out.append(i)
        j = int(np.searchsorted(s, s[i] + int(DAILY[0] * day), side="left"))
        if i == 0:  # the first day: no session ending a day or more after the data's first bar
            j = max(min(j, int(np.searchsorted(e, s[0] + day, side="left"))), 1)
        i = j
    return np.asarray(out, dtype=np.int64)


def infer_periods_per_year(dates: np.ndarray, warnings: list[str] | None = None) -> tuple[float, str]:
    """Periods per year of a (T,) int64 ns timestamp axis, and how it was decided; a guess that the
    dates cannot settle is said in ``warnings`` (appended to, when given).

    From the median spacing of distinct timestamps: 0.75 to 4 days → daily bars, 252 trading days (365
    when the market trades at weekends, as crypto does: :func:`trades_at_weekends`), unless no two of
    three or more dates are within 1.5 days: bars of several days (2- and 3-day bars), then the dates
    counted over their span (a 3-day bar is not a day; a single spacing may be a weekend); a week (a
    median of 6.5 to 7.5 days) → 52; other spacings up to 10 days, bars of several days again counted
    over their span (bars of 3 or 4 trading days are 3 or 5 and 4 or 6 days apart, 4-day bars of a
    market open every day 4: not weeks); a month → 12. Intraday bars, 12-hour bars included (two a day,
    not one: a calendar of daily bars has a median spacing of a day, 23 to 25 hours under daylight
    saving), are grouped into sessions (a gap longer than ``SESSION_GAP`` median spacings — overnight,
    lunch, weekend, holiday — ends one): when the sessions between the first and the last (which the
    data may cut) span ``SESSION_SPAN_DAYS`` days or more, periods per year = their bars counted per
    365.25 days (holidays, half days and missing bars count as they occur: bars missing at random in
    a session split it into parts, whose median length times their number counted 0.7 to 1.3 times the
    bars there are), else the median bars of a session × sessions per year, counted from the session
    starts when they span ``SESSION_SPAN_DAYS`` days or more, else one session per trading day (252, or
    365 when the session starts trade at weekends); when a break inside the day (Tokyo's and Hong Kong's
    lunch, a halt, a few missing bars in a row) splits days into sessions, the median bars of a trading day
    (:func:`trading_days`) × 252 (or 365), not those of a session (which counted half the bars of a
    lunch-break market, 0.08 times those of minute bars 30% missing). Bars around the clock (one session
    longer than a day) are bars per day × 365 (or 252 when the bars do not trade at weekends), times the
    share of the bar steps inside the sessions that hold a bar (missing bars); bars of fewer than 6 days,
    whose weekdays cannot show weekend trading, trade at weekends when they fill half the steps of the
    weekend hours they reach, a split that starts or ends inside a weekend included (:func:`weekend_share`),
    and a warning names ``evaluation.periods_per_year`` when they reach none (crypto and FX look alike on
    weekdays). Two bars a session (4-hour bars of a
    6.5-hour session: 09:30 and 13:30) have an overnight spacing as their median: when
    ``SESSION_SHARE`` of the spacings are under 0.75 days they are intraday bars all the same, spaced as
    those spacings are (not 252 daily bars a year). The first and last
    sessions may be cut by the data: with fewer than 3 sessions (trading days, when a day holds several)
    the longest one gives the bars per session (the median of two cut sessions counts fewer bars than a
    whole one holds), and a warning says that it may be short: the last 100 dates of minute bars
    (``evaluation.max_test_windows`` over 500 symbols) are 100 bars of one session, not 390.
    """
    u = np.unique(np.asarray(dates, dtype=np.int64))
    if len(u) < 2:
        return 252.0, "fewer than 2 dates: assumed daily (252)"
    gaps = np.diff(u)
    days = gaps / 86_400e9
    med = float(np.median(days))

    year_days = 365.0 if trades_at_weekends(u) else 252.0

    def counted(why: str) -> tuple[float, str]:
        span = (u[-1] - u[0]) / 86_400e9
        per_year = (len(u) - 1) * 365.25 / span
        return per_year, f"{why}: bars of several days, {len(u)} dates over {span:.0f} days, {per_year:.2f} per year"

    intraday = days < DAILY[0]
    if med >= DAILY[0] and intraday.mean() >= SESSION_SHARE:  # two bars a session: intraday, not daily
        med = float(np.median(days[intraday]))
    if DAILY[0] <= med < 4:
        if days.min() >= DAILY[1] and len(days) >= 2:  # no two dates a day apart (one spacing may be a weekend)
            return counted(f"every spacing {days.min():.2f} days or more")
        return year_days, f"median spacing {med:.2f} days: daily bars, {year_days:g} per year"
    if WEEKLY[0] <= med <= WEEKLY[1]:
        return 52.0, f"median spacing {med:.1f} days: weekly bars, 52 per year"
    if 4 <= med < 10:  # 3- or 4-trading-day bars (median 5 or 6 days), 4- to 9-day bars: not weeks
        return counted(f"median spacing {med:.1f} days")
    if 20 <= med < 40:
        return 12.0, f"median spacing {med:.0f} days: monthly bars, 12 per year"
    if med < DAILY[0]:
        step = float(np.median(gaps[intraday]))  # the bar spacing inside a session
        starts = np.concatenate([[0], np.flatnonzero(gaps > SESSION_GAP * step) + 1])
        lengths = np.diff(np.append(starts, len(u)))
        # the first and last sessions may be cut by the data: the sessions between them, else the longest
        per_session = float(np.median(lengths[1:-1])) if len(lengths) >= 3 else float(lengths.max())
        counted_as = (f"median {per_session:g}" if len(lengths) >= 3 else f"one session: {per_session:g}" if len(lengths) == 1
                      else f"the longer of 2 sessions: {per_session:g}")
        span = (u[starts[-1]] - u[starts[0]]) / 86_400e9
        bar = f"{step / 60e9:g} min" if step < 3600e9 else f"{step / 3600e9:g} h"
        sessions = f"intraday sessions (a gap over {SESSION_GAP:g}× the {bar} bar spacing ends one)"
        if per_session * step > 86_400e9:  # around the clock: no overnight gap
            inside = gaps <= SESSION_GAP * step  # the spacings inside the sessions
            filled = min(float(inside.sum()) * step / float(gaps[inside].sum()), 1.0)  # a bar in each step: 1
            per_day = 86_400e9 / step * filled
            held = "" if filled == 1 else f" ({filled:.1%} of the {bar} steps inside the sessions hold a bar)"
            if year_days == 252.0:  # fewer than 6 days of bars cannot show weekend trading by their weekdays
                share = weekend_share(u, float(step))
                if share is not None and share >= 0.5:
                    year_days, held = 365.0, f"{held} (bars through a weekend)"
                elif share is None and warnings is not None:
                    warnings.append(f"periods per year of bars around the clock over {(u[-1] - u[0]) / 86_400e9:.1f} days "
                                    f"that reach less than one bar step of a weekend (Saturday 12:00 to Sunday 10:00 UTC): {per_day:g} bars a "
                                    f"day × 252 days, as a market closed at weekends (FX); one open every day (crypto) "
                                    f"trades 365: set evaluation.periods_per_year (e.g. {per_day * 365:g})")
            return per_day * year_days, f"intraday around the clock: {per_day:g} bars of {bar} per day × {year_days:g} days{held}"
        whole = (u[starts[-1]] - u[starts[1]]) / 86_400e9 if len(starts) >= 3 else 0.0  # days of the uncut sessions
        if whole >= SESSION_SPAN_DAYS:  # their bars counted: missing bars, half days and holidays as they occur
            per_year = (starts[-1] - starts[1]) * 365.25 / whole
            return per_year, (f"{sessions}: {per_year:.1f} bars per year, counted in the {len(starts) - 2} sessions "
                              f"between the first and the last ({whole:.0f} days; median {per_session:g} bars per session)")
        days = trading_days(u[starts], u[np.append(starts[1:], len(u)) - 1])  # a lunch break splits a day in two
        unit = "bars per session"
        if len(starts) >= 2 and span >= SESSION_SPAN_DAYS:
            per_year = (len(starts) - 1) * 365.25 / span
            how = f"{per_year:.1f} sessions per year (counted over {span:.0f} days)"
        elif len(days) < len(starts):  # several sessions a day: bars per day × days per year, not per session
            day_bars = np.diff(np.append(starts[days], len(u)))
            per_session = float(np.median(day_bars[1:-1])) if len(days) >= 3 else float(day_bars.max())
            counted_as = (f"median {per_session:g}" if len(days) >= 3 else f"one day: {per_session:g}" if len(days) == 1
                          else f"the longer of 2 days: {per_session:g}")
            unit = (f"bars per day ({len(starts)} sessions on {len(days)} day{'s' if len(days) > 1 else ''}: "
                    "a break inside a day ends one)")
            per_year = 365.0 if trades_at_weekends(u[starts[days]]) else 252.0
            how = f"{per_year:g} days per year (fewer than {SESSION_SPAN_DAYS:g} days to count them over)"
        else:
            per_year = 365.0 if trades_at_weekends(u[starts]) else 252.0
            how = f"{per_year:g} sessions per year (fewer than {SESSION_SPAN_DAYS:g} days to count them over)"
        if len(days) < 3 and warnings is not None:
            what = "session" if len(days) == len(starts) else "day"
            warnings.append(f"periods per year from {len(days)} {what}{'s' if len(days) > 1 else ''} of intraday "
                            f"bars, which the first and last dates may cut (a short test split, evaluation.max_test_windows): "
                            f"a whole {what} may hold more than {per_session:g} bars; set evaluation.periods_per_year "
                            f"(e.g. {390 * 252} for one-minute bars of a 6.5-hour session, 252 sessions a year)")
        return per_session * per_year, f"{sessions}: {counted_as} {unit} × {how}"
    return 365.25 / med, f"median spacing {med:.1f} days: {365.25 / med:.2f} per year"


def positions(
    signal: np.ndarray,
    vol: np.ndarray | None = None,
    rule: str = "sign",
    long_only: bool = False,
    max_gross: float = 1.0,
) -> np.ndarray:
    """(T, N) weights (shares of capital) from (T, N) forecasts; NaN signal → no position.

    ``sign``: ±1 (long-only: 1 or 0) per symbol, equal notional 1/N_t of ``max_gross``, N_t = symbols
    with a forecast on date t. ``vol_scaled``: forecast / predicted volatility, normalised so the
    gross exposure Σ|w| of each date is ``max_gross`` (a flat date stays flat); a forecast without a
    usable volatility (:func:`no_volatility`) takes no position (:func:`backtest_forecasts` counts them).
    Gross exposure never exceeds ``max_gross``.
    """
    sig = np.asarray(signal, dtype=np.float64)
    have = np.isfinite(sig)
    s = np.where(have, sig, 0.0)
    if rule == "sign":
        raw = np.sign(s)
        if long_only:
            raw = np.maximum(raw, 0.0)
        n = np.maximum(have.sum(axis=1, keepdims=True), 1)
        w = raw / n * max_gross
    elif rule == "vol_scaled":
        if vol is None:
            raise ValueError("vol_scaled positions need a (T, N) volatility forecast")
        bad = no_volatility(vol)
        raw = np.where(have & ~bad, s / np.where(bad, 1.0, vol), 0.0)
        if long_only:
            raw = np.maximum(raw, 0.0)
        tot = np.abs(raw).sum(axis=1, keepdims=True)
        w = np.where(tot > 0, raw / np.where(tot > 0, tot, 1.0), 0.0) * max_gross
    else:
        raise ValueError(f"unknown position rule {rule!r}")
    gross = np.abs(w).sum(axis=1, keepdims=True)
    # a safety net for rounding: the cap is a promise, not an approximation
    return np.where(gross > max_gross, w * (max_gross / np.where(gross > 0, gross, 1.0)), w)


def no_volatility(vol: np.ndarray) -> np.ndarray:
    """(T, N) bool: where the volatility forecast ``vol`` cannot size a ``vol_scaled`` position (NaN, ±inf
    or <= 0: a window of constant prices, crossed model quantiles)."""
    v = np.asarray(vol, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(v) & (v > 0))


def _drift(w: np.ndarray, simple: np.ndarray) -> np.ndarray:
    """Weights ``w`` (.., N) held over a period of simple returns ``simple`` → the weights at its end, as
    shares of the capital then (the same arithmetic as the drift in :func:`simulate`; past a period that
    took the whole capital (:func:`ruin`) they are not finite, and :func:`simulate` trades nothing there)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gross = (w * simple).sum(axis=-1)
        return w * (1.0 + simple) / (1.0 + gross)[..., None]


def ruin(returns: np.ndarray) -> int | None:
    """The first period of the (T,) simple returns of a book that took all its capital (a return of -100%
    or worse: a book levered by ``evaluation.backtest_max_gross`` > 1 through a fall of 1 / gross, a short
    through a rise of as much), or None. No capital is left to trade after it: compounded on, a capital
    below 0 turned the next loss into a gain (a book wiped out read -76% in total) and divided the next
    drift by 0."""
    bust = np.flatnonzero(1.0 + np.asarray(returns, dtype=np.float64) <= 0.0)
    return int(bust[0]) if bust.size else None


def rebalancing(T: int, every: int = 1) -> np.ndarray:
    """(T,) bool: the dates that rebalance, every ``every``-th date from the first."""
    return np.arange(T) % max(int(every), 1) == 0


def hold(weights: np.ndarray, returns: np.ndarray, every: int = 1, absent: np.ndarray | None = None,
         max_gross: float | None = None, closed: np.ndarray | None = None) -> np.ndarray:
    """(T, N) weights traded only on the rebalancing dates (:func:`rebalancing`): there ``weights[t]``;
    in between, the previous weights drifted with the period's ``returns`` (log, NaN counts as 0), so
    :func:`simulate` sees no trade. ``every`` = 1 and nothing ``absent``: ``weights`` itself.

    ``absent`` (T, N) bool marks the symbols with no row on a date: there is no price to trade them at,
    so on every date, rebalancing or not, such a symbol keeps its previous weight drifted as above (its
    return over the gap is then earned by the next period's return, which spans it); when that takes
    the gross Σ|w| over ``max_gross``, the weights of the symbols with a row are scaled down to fit.

    ``closed`` (T, N) bool marks where a position must be closed whatever the date (a symbol's last row
    with a forecast: :func:`backtest_forecasts`): the weight there is 0, and on a date that does not
    rebalance the others keep their drifted weights (the proceeds stay in cash)."""
    gaps = None if absent is None else np.asarray(absent, dtype=bool)
    shut = None if closed is None or not np.any(closed) else np.asarray(closed, dtype=bool)
    if every <= 1 and (gaps is None or not gaps[1:].any()):
        return weights if shut is None else np.where(shut, 0.0, weights)
    w = np.array(weights, dtype=np.float64)
    reb = rebalancing(len(w), every)
    # a rebalancing date where every symbol has a row takes its weights as they are (set here): the loop
    # visits only the dates that follow from the one before (drifting, or keeping a symbol without a row)
    follows = ~reb if gaps is None else ~reb | gaps.any(axis=1)
    follows[:1] = False  # the first date has no date before it
    if shut is not None:
        w[~follows[:, None] & shut] = 0.0
    simple = np.expm1(np.nan_to_num(np.asarray(returns, dtype=np.float64)))
    for t in np.flatnonzero(follows).tolist():
        if not reb[t]:
            w[t] = _drift(w[t - 1], simple[t])
        else:
            keep = gaps[t]
            w[t, keep] = _drift(w[t - 1], simple[t])[keep]
            if max_gross is not None:
                room = max(max_gross - float(np.abs(w[t, keep]).sum()), 0.0)
                traded = float(np.abs(w[t, ~keep]).sum())
                if traded > room:
                    w[t, ~keep] *= room / traded
        if shut is not None:  # a closed symbol has a row there: it is never kept as absent
            w[t, shut[t]] = 0.0
    return w


def span_returns(R: np.ndarray, have: np.ndarray, dates: np.ndarray, close: np.ndarray, prev_time: np.ndarray) -> np.ndarray:
    """(T, N) log returns ``R`` (``R[t]``: the return of the row at date t over the symbol's previous row)
    with the periods that span rows without a window set to the log change of the close since the
    symbol's previous date in the panel: where the previous row of the date's window (``prev_time``, (T,
    N) int64 ns) is not the symbol's previous date ``dates[p]`` (``have``: a window there), rows without
    a window lie between the two — the end of one session and the start of the next under
    ``data.max_gap``, the H - 1 rows between two walk-forward folds — and a position held from p to t
    earns the close's whole change over them, not the last row's return alone. A date without a row
    (a holiday of the symbol's exchange) is no such skip: the next row's return spans it already."""
    out = np.array(R, dtype=np.float64)
    for i in range(out.shape[1]):
        t = np.flatnonzero(have[:, i])
        prev, cur = t[:-1], t[1:]
        skip = prev_time[cur, i] != dates[prev]
        out[cur[skip], i] = np.log(close[cur[skip], i] / close[prev[skip], i])
    return out


def carry_forward(values: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """(T, N) ``values`` with each ``absent`` entry replaced by the symbol's value on the date before (so
    its last value on a date it had a row; NaN before its first row)."""
    out = np.array(values, dtype=np.float64)
    gaps = np.asarray(absent, dtype=bool)
    if len(out) < 2 or not gaps[1:].any():
        return out
    # the date each entry is taken from: its own where it has a row (and on the first date), else the
    # latest such date before it, by a running maximum of row numbers (no loop over dates)
    rows = np.where(gaps, 0, np.arange(len(out))[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    return out[rows, np.arange(out.shape[1])]


def _select(ranked: list[int], held: set[int], k: int, dropout: int) -> list[int]:
    """TopK-Dropout on one side: ``ranked`` eligible names best first, ``held`` the eligible names held.
    ``dropout`` 0: the top k. Otherwise Qlib's TopkDropoutStrategy: the best k - |held| + dropout non-held
    names join the held ones and the top k of that pool are kept, so at most ``dropout`` held names
    (the worst-ranked, and only for better-ranked ones) are sold; vacancies (|held| < k) are refilled."""
    if dropout <= 0:
        return ranked[:k]
    cand = [i for i in ranked if i not in held][: max(k - len(held) + dropout, 0)]
    pool = held | set(cand)
    return [i for i in ranked if i in pool][:k]


def topk_weights(
    signal: np.ndarray,
    k: int = 3,
    dropout: int = 0,
    long_only: bool = False,
    max_gross: float = 1.0,
    every: int = 1,
    absent: np.ndarray | None = None,
) -> tuple[np.ndarray, list[tuple[list[int], list[int]]]]:
    """(T, N) target weights of the TopK(-Dropout) portfolio, and (long names, short names) of each date.

    On each rebalancing date (:func:`rebalancing`) the symbols with a forecast are ranked by ``signal``
    (ties: the lower symbol index first): long the top k, short the bottom k among the others (long-only:
    no short side); with ``dropout`` n, each side keeps its previous names except at most n swapped
    (:func:`_select`; names held short are not long candidates, unless the other names are too few to
    fill the long side: then the held shorts that the short side let go fill it; a held name without a
    forecast is sold regardless, and its vacancy refilled).
    ``absent`` (T, N) bool marks the symbols with no row on a date (no price to trade at): a held one
    stays in its side's book, taking one of its k places, and an absent one that is not held cannot
    join; :func:`hold` then keeps its drifted weight (give it the same ``absent``).
    Equal weight per side: ``max_gross`` / k long-only, ``max_gross`` / 2 / k per side long-short; with
    fewer than 2k symbols a long-short book holds ⌊n/2⌋ per side, long-only fewer than k splits the gross
    among them. A date whose forecasts are all equal (or a single symbol) has no ranking: no position
    beyond the held names without a row.
    Rows of dates that do not rebalance repeat the last target (see :func:`hold`).
    """
    sig = np.asarray(signal, dtype=np.float64)
    T, N = sig.shape
    w = np.zeros((T, N))
    books: list[tuple[list[int], list[int]]] = []
    longs: list[int] = []
    shorts: list[int] = []
    reb = rebalancing(T, every)
    # without dropout, a rebalancing date where every name has a row is decided by its own forecasts
    # alone: those are ranked together, a block of dates at a time (minute bars: ranking each date in
    # the loop took half of a backtest's time)
    alone = (reb if absent is None else reb & ~np.asarray(absent, dtype=bool).any(axis=1)) & (dropout <= 0)
    ranks, slot = None, np.zeros(0, dtype=np.int64)
    for t in range(T):
        if t % TOPK_BLOCK == 0 and alone[t: t + TOPK_BLOCK].any():
            block = alone[t: t + TOPK_BLOCK]
            ranks, slot = _topk_books(sig[t: t + TOPK_BLOCK][block], k, long_only, max_gross), np.cumsum(block) - 1
        if alone[t]:
            longs, shorts, row = ranks(int(slot[t % TOPK_BLOCK]))
        elif reb[t]:
            gone = np.zeros(N, dtype=bool) if absent is None else np.asarray(absent[t], dtype=bool)
            avail = np.flatnonzero(np.isfinite(sig[t]) & ~gone)
            s = sig[t, avail]
            # held names without a row keep their places (no price to sell at); the others fill the rest
            locked_long, locked_short = [i for i in longs if gone[i]], [i for i in shorts if gone[i]]
            n = len(avail) + len(locked_long) + len(locked_short)
            kk = k if long_only else min(k, n // 2)  # long-short: both sides the same size
            if len(avail) == 0 or np.all(s == s[0]):
                longs, shorts = locked_long, locked_short
            else:
                everyone = [int(i) for i in avail[np.argsort(-s, kind="stable")]]
                held_short = set() if long_only else set(shorts) & set(everyone)
                ranked = everyone
                if dropout > 0:  # a held short is no long candidate: it leaves its side only through that side's dropout
                    ranked = [i for i in everyone if i not in held_short]
                longs = locked_long + _select(ranked, set(longs) & set(ranked), max(kk - len(locked_long), 0), dropout)
                if long_only:
                    shorts = []
                else:
                    rest = [int(i) for i in avail[np.argsort(s, kind="stable")] if i not in longs]
                    shorts = locked_short + _select(rest, held_short - set(longs), max(kk - len(locked_short), 0), dropout)
                    if len(longs) < kk:
                        # fewer than kk names were not held short (the universe shrank): the long side takes the
                        # best of those the short side let go, so both sides hold kk (n >= 2kk: always enough)
                        fill = set(longs) | set([i for i in everyone if i not in longs and i not in shorts][: kk - len(longs)])
                        longs = locked_long + [i for i in everyone if i in fill]
            row = np.zeros(N)
            half = max_gross if long_only else max_gross / 2.0
            if longs:
                row[longs] = half / len(longs)
            if shorts:
                row[shorts] = -half / len(shorts)
        w[t] = row
        books.append((list(longs), list(shorts)))
    return w, books


def _topk_books(sig: np.ndarray, k: int, long_only: bool, max_gross: float
                ) -> Callable[[int], tuple[list[int], list[int], np.ndarray]]:
    """The books of :func:`topk_weights` without dropout on (M, N) dates with nothing held absent, ranked
    at once: a function of a date's row j → (long names, short names, (N,) weights), as the loop over
    dates makes them (names in the same order, the same weights bit for bit)."""
    M, N = sig.shape
    have = np.isfinite(sig)
    sig = np.where(have, sig, np.nan)  # ±inf is no forecast (as in the loop): sorted last with NaN
    n = have.sum(axis=1)
    kk = np.full(M, k) if long_only else np.minimum(k, n // 2)  # long-short: both sides the same size
    lo, hi = np.where(have, sig, np.inf).min(axis=1), np.where(have, sig, -np.inf).max(axis=1)
    ranked = (n > 0) & (lo != hi)  # none, or all equal: no ranking
    # a stable sort puts NaN last, so the first n of each row are its forecasts in the loop's order
    best, worst = np.argsort(-sig, axis=1, kind="stable"), np.argsort(sig, axis=1, kind="stable")
    n_long = np.where(ranked, np.minimum(kk, n), 0)
    pos = np.arange(N)
    longs = np.zeros((M, N), dtype=bool)
    np.put_along_axis(longs, best, pos < n_long[:, None], axis=1)
    half = max_gross if long_only else max_gross / 2.0
    rows = np.zeros((M, N))
    shorts = np.zeros((M, N), dtype=bool)
    if not long_only:  # the worst kk of those not long
        free = (pos < n[:, None]) & ~np.take_along_axis(longs, worst, axis=1) & ranked[:, None]
        take = free & (np.cumsum(free, axis=1) <= kk[:, None])
        np.put_along_axis(shorts, worst, take, axis=1)
        rows = np.where(shorts, -half / np.maximum(kk, 1)[:, None], rows)
    rows = np.where(longs, half / np.maximum(n_long, 1)[:, None], rows)

    def book(j: int) -> tuple[list[int], list[int], np.ndarray]:
        short = [] if long_only else worst[j][shorts[j, worst[j]]].tolist()
        return best[j, : n_long[j]].tolist(), short, rows[j]

    return book


def information_ratio(returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float) -> float:
    """Annualised mean of the active return ``returns - benchmark`` over its standard deviation (ddof 1);
    NaN with fewer than 2 periods or no active risk."""
    a = np.asarray(returns, dtype=np.float64) - np.asarray(benchmark, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    sd = float(a.std(ddof=1))
    return float(a.mean()) / sd * math.sqrt(periods_per_year) if sd > 1e-12 else float("nan")  # no active risk: rounding noise, not a ratio


@dataclass
class Simulation:
    """Per-period results of one strategy; period k runs from the close of dates[k] to the next date."""

    dates: np.ndarray  # (T-1,) int64 ns: the decision date that opens each period
    returns: np.ndarray  # (T-1,) simple net returns of the portfolio
    gross_returns: np.ndarray  # (T-1,) before costs
    turnover: np.ndarray  # (T-1,) Σ|traded weight| at the start of each period
    hits: int  # positions whose sign matched the asset's return
    positions_taken: int  # (period, symbol) pairs with a non-zero position and a non-zero return
    longs_taken: int = 0  # of those, the long ones
    ups: int = 0  # (period, symbol) returns of the panel that rose, held or not
    moves: int = 0  # (period, symbol) returns of the panel that were not zero, held or not
    # (5, N) int: each symbol's positions taken, hits and long positions, and its returns that rose and that were not
    # zero, held or not (:func:`chance_hit_rate`); None: not counted (a simulation made by hand)
    by_symbol: np.ndarray | None = None

    @classmethod
    def join(cls, parts: list["Simulation"]) -> "Simulation":
        """The periods of ``parts`` (books of successive date ranges) one after another: a period's return is
        its own book's, and none spans from one part's last date to the next part's first."""
        for j, s in enumerate(parts):  # a book that lost its capital (:func:`ruin`) has none to start afresh with
            if ruin(s.returns) is not None:
                zero = [cls(p.dates, np.zeros(len(p.dates)), np.zeros(len(p.dates)), np.zeros(len(p.dates)), 0, 0)
                        for p in parts[j + 1:]]  # held nothing: none of their moves count as chances
                parts = [*parts[: j + 1], *zero]
                break
        cat = lambda name: np.concatenate([getattr(s, name) for s in parts])  # noqa: E731
        counted = [s.by_symbol for s in parts if s.by_symbol is not None]  # the parts after a ruin hold and count nothing
        return cls(cat("dates"), cat("returns"), cat("gross_returns"), cat("turnover"),
                   *(sum(getattr(s, name) for s in parts) for name in ("hits", "positions_taken", "longs_taken", "ups", "moves")),
                   by_symbol=np.sum(counted, axis=0) if counted else None)


def simulate(weights: np.ndarray, returns: np.ndarray, dates: np.ndarray, cost_bps: float = 0.0, slippage_bps: float = 0.0) -> Simulation:
    """Hold ``weights[t]`` (T, N) from the close of t to the close of t + 1, earning ``returns[t + 1]``
    (T, N) log returns (NaN: no row, counts as 0). Costs in bps of traded notional."""
    w = np.nan_to_num(np.asarray(weights, dtype=np.float64))
    simple = np.expm1(np.nan_to_num(np.asarray(returns, dtype=np.float64)))  # (T, N)
    held, earned = w[:-1], simple[1:]  # the timing: weights of t against the return of t + 1
    # past a period that took the whole capital the arithmetic divides by 0: those periods are set to 0 below
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gross = (held * earned).sum(axis=1)  # (T-1,)
        # weights just before the trade at t: those of t-1 after drifting over the period ending at t
        drifted = np.zeros_like(w)
        drifted[1:] = w[:-1] * (1.0 + simple[1:]) / (1.0 + gross)[:, None]
        turnover = np.abs(w - drifted).sum(axis=1)[:-1]  # trades at t = 0..T-2 (the last date trades nothing)
        net = gross - turnover * (cost_bps + slippage_bps) / 1e4
    k = ruin(net)
    if k is not None:  # no capital left after period k: nothing held, traded or earned (:func:`ruin`)
        gross[k + 1:], turnover[k + 1:], net[k + 1:] = 0.0, 0.0, 0.0
        held, earned = held[: k + 1], earned[: k + 1]
    active = (held != 0) & (earned != 0)
    hit = active & (np.sign(held) == np.sign(earned))
    by_symbol = np.stack([active.sum(axis=0), hit.sum(axis=0), (active & (held > 0)).sum(axis=0),
                          (earned > 0).sum(axis=0), (earned != 0).sum(axis=0)]).astype(np.int64)
    return Simulation(np.asarray(dates)[:-1], net, gross, turnover, int(hit.sum()), int(active.sum()),
                      *(int(n) for n in by_symbol[[2, 3, 4]].sum(axis=1)), by_symbol=by_symbol)


def annual_return(total: float, periods: int, periods_per_year: float) -> float:
    """The annualised return of ``total`` (a simple return) earned over ``periods`` periods:
    ``(1 + total) ** (periods_per_year / periods) - 1``, computed in logs, as
    ``expm1(periods_per_year / periods * log1p(total))``. Past the float range it is +inf (a JSON null,
    a dash in the tables) where Python's power raised OverflowError: a short test split of second bars
    (periods_per_year in the millions) compounds a few percent past 1e308. -1 for a total loss; NaN for
    a NaN total."""
    if math.isnan(total):
        return float("nan")
    if total <= -1:
        return -1.0
    try:
        return math.expm1(periods_per_year / periods * math.log1p(total))
    except OverflowError:  # the exponent past log(1.8e308) = 709.8
        return float("inf")


def bust_text(sim: Simulation, bust: int, max_gross: float | None = None) -> str:
    """What the warning of a book that lost all its capital in period ``bust`` of ``sim`` (:func:`ruin`) says:
    when, and what took the capital: the positions (a gross exposure above 1, up to ``max_gross``,
    ``evaluation.backtest_max_gross``, when given, through a move of 1/g against it; an unlevered book through
    a short's rise of 100% or more) or the trading costs, beyond what the positions lost; and how many
    later periods read 0 (none when it is the last period)."""
    net, gross, turnover = (float(a[bust]) for a in (sim.returns, sim.gross_returns, sim.turnover))
    costs = gross - net
    T = len(sim.returns)
    later = T - bust - 1
    when = f"in {'its last period, ' if later == 0 else 'the period '}from {fmt_time(sim.dates[bust])}"
    if gross <= -1.0:  # the positions alone lost it all
        if max_gross is None:
            how = ("a book of gross exposure g loses it all in a move of 1/g against it: a levered one (g > 1, "
                   "evaluation.backtest_max_gross) in a move of less than 100%, an unlevered one only through its "
                   "shorts, in a rise of 100% or more")
        elif max_gross > 1.0:
            how = (f"a gross exposure g, up to evaluation.backtest_max_gross={max_gross:g}, loses it all in a move of "
                   f"1/g against it ({1.0 / max_gross:.0%} at g={max_gross:g}), a short in a rise of 1/g or more")
        else:  # no leverage: a long book cannot lose more than it holds, a short can
            how = (f"an unlevered book (evaluation.backtest_max_gross={max_gross:g}) loses it all only through its "
                   "short positions, a short of weight w in a rise of 1/w or more (100% for a whole book short)")
        why = (f"a return of {net:.1%}, the positions' {gross:.1%} and {costs:.1%} of trading costs: {how}" if costs > 0
               else f"a return of {net:.1%}: {how}")
    else:  # the positions left capital; the costs of the period's trades took the rest
        bps = costs / turnover * 1e4 if turnover > 0 else float("nan")
        why = (f"a return of {net:.1%}: the positions' {gross:+.1%} and trading costs of {costs:.1%} of the capital, "
               f"a turnover of {turnover:.2f} at {bps:g} bps (evaluation.backtest_cost_bps + backtest_slippage_bps)")
    after = ("" if later == 0 else
             f": it holds nothing after it, and its {later} later period{'s' if later != 1 else ''} read 0")
    return f"the book lost all its capital {when} ({why}){after}"


def performance(sim: Simulation, periods_per_year: float, max_gross: float | None = None,
                lookahead: bool = True, symbols: list[str] | None = None) -> dict[str, Any]:
    """Total and annualised return, annualised volatility, Sharpe, Sortino (risk-free rate 0), maximum
    drawdown (a negative fraction of the peak), Calmar, turnover and hit rate of a simulation. Returns
    that do not vary (within ``FLAT_RTOL`` of their mean) have volatility 0 and a NaN Sharpe ratio, as
    :func:`hftraining.eval.selection.sharpe_ratio`. ``max_gross``: the book's cap on gross exposure
    (``evaluation.backtest_max_gross``), named by the warning of a book that lost all its capital
    (:func:`bust_text`). ``lookahead``: a hit rate above ``LOOKAHEAD_HIT_RATE`` over ``LOOKAHEAD_MIN_POSITIONS``
    positions or more, and more than ``LOOKAHEAD_BEYOND_CHANCE`` of the way from the rate its positions hit by
    chance (:func:`chance_hit_rate`) to 1, is a warning naming look-ahead, as is such a hit rate of one symbol's
    positions (:func:`lookahead_text`; ``symbols``: their names); False for a book that trades no forecast
    (buy-and-hold, the equal-weight universe), whose signal cannot look ahead."""
    r = sim.returns
    T = len(r)
    nan = float("nan")
    if T == 0:
        return {"n_periods": 0}
    bust = ruin(r)
    if bust is not None:  # no capital left after it (as :func:`simulate` books it): its later periods earn nothing
        r = np.where(np.arange(T) > bust, 0.0, r)
    equity = np.cumprod(1.0 + r)
    total = float(equity[-1] - 1.0)
    ann = annual_return(total, T, periods_per_year)
    # returns equal on every period (to rounding: 0.1 + 0.2 is not 0.3) have no spread: volatility 0 and no
    # Sharpe ratio, not the 1e-17 that the mean's rounding leaves (an equal-weight book of steady trends read 1e17)
    sd = (0.0 if float(np.ptp(r)) <= FLAT_RTOL * abs(float(r.mean())) else float(r.std(ddof=1))) if T > 1 else nan
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]  # the starting capital is a peak
    mdd = float(np.min(equity / peak - 1.0))
    root = math.sqrt(periods_per_year)
    out = {
        "n_periods": T,
        "total_return": total,
        "annual_return": ann,
        "annual_volatility": sd * root if T > 1 else nan,
        "sharpe": float(r.mean()) / sd * root if T > 1 and sd > 0 else nan,
        "sortino": float(r.mean()) / downside * root if downside > 0 else nan,
        "max_drawdown": mdd,
        "calmar": ann / abs(mdd) if mdd < 0 else nan,
        "turnover": float(sim.turnover.mean()),
        "annual_turnover": float(sim.turnover.mean()) * periods_per_year,
        "hit_rate": sim.hits / sim.positions_taken if sim.positions_taken else nan,
        "cost_drag": float((sim.gross_returns - sim.returns).sum()),
    }
    if bust is not None:
        out["warning"] = bust_text(sim, bust, max_gross)
    if math.isinf(ann):  # null in eval.json, a dash in the tables: said, not left to read as missing
        text = (f"annual return past the float range (null in eval.json): a total return of {total:.4g} "
                f"over {T} periods, at {periods_per_year:g} periods a year")
        out["warning"] = f"{out['warning']}; {text}" if "warning" in out else text
    if lookahead:
        text = lookahead_text(sim, symbols)
        if text:
            out["warning"] = f"{out['warning']}; {text}" if "warning" in out else text
    return out


def _beyond_chance(hits: int, taken: int, chance: float) -> bool:
    """Whether ``hits`` of ``taken`` positions is a look-ahead's hit rate: above ``LOOKAHEAD_HIT_RATE`` over
    ``LOOKAHEAD_MIN_POSITIONS`` or more, more than ``LOOKAHEAD_BEYOND_CHANCE`` of the way from ``chance`` to 1,
    and as many hits or more by chance less likely than ``LOOKAHEAD_P`` (binomial): near a chance of 1 the way
    left is within the sampling noise of a few hundred positions (0.96 of 128 positions that hit 0.92 by chance
    is one in 20)."""
    rate = hits / taken if taken else 0.0
    return bool(taken >= LOOKAHEAD_MIN_POSITIONS and rate > LOOKAHEAD_HIT_RATE and chance < 1.0
                and (rate - chance) / (1.0 - chance) > LOOKAHEAD_BEYOND_CHANCE
                and stats.binom.sf(hits - 1, taken, chance) < LOOKAHEAD_P)


def lookahead_text(sim: Simulation, symbols: list[str] | None = None) -> str | None:
    """The warning of a book whose hit rate is a look-ahead's (:func:`_beyond_chance`, against
    :func:`chance_hit_rate`), or, where the book's is not, of the symbols whose own positions' is (against what
    those positions hit by chance): a future return in the inputs of a few symbols (one file's dates shifted by a
    row) hits 1.0 there and leaves the book's rate, pooled over the others, near 0.5. ``symbols``: the names of the
    columns of ``sim.by_symbol``. None: no warning."""
    chance = chance_hit_rate(sim)
    if _beyond_chance(sim.hits, sim.positions_taken, chance):
        return (f"hit rate {sim.hits / sim.positions_taken:.2f} over {sim.positions_taken} positions is implausible for a "
                "forecast" + (f" (long in {sim.longs_taken / sim.positions_taken:.0%} of them, they would hit {chance:.2f} "
                              "by chance, each at the share of its symbol's returns that rose)" if abs(chance - 0.5) > 0.005 else "")
                + ": check the signal for look-ahead (a future return in the inputs)")
    if sim.by_symbol is None:
        return None
    taken, hits, longs, ups, moves = sim.by_symbol
    found = []
    for i in np.flatnonzero(taken >= LOOKAHEAD_MIN_POSITIONS):
        up = ups[i] / moves[i]
        own = (longs[i] * up + (taken[i] - longs[i]) * (1.0 - up)) / taken[i]
        if _beyond_chance(int(hits[i]), int(taken[i]), own):
            name = symbols[i] if symbols is not None and i < len(symbols) else f"#{i}"
            found.append((hits[i] / taken[i], f"{name} {hits[i] / taken[i]:.2f} over {taken[i]} positions (by chance {own:.2f})"))
    if not found:
        return None
    found.sort(key=lambda f: -f[0])
    more = f" and {len(found) - 3} more symbols" if len(found) > 3 else ""
    return (f"the hit rate of {len(found)} symbol{'' if len(found) == 1 else 's'} is implausible for a forecast "
            f"({'; '.join(f[1] for f in found[:3])}{more}; the book's {sim.hits / sim.positions_taken:.2f} over "
            f"{sim.positions_taken} positions): check their signal for look-ahead (a future return in their inputs)")


def chance_hit_rate(sim: Simulation) -> float:
    """The hit rate that the positions of ``sim`` would have without any forecast skill: each position hits
    as often as its symbol's returns (over the panel's periods, held or not) went its way: a long one at the share
    of them that rose, a short one at the share that fell. 0.5 for returns as often down as up, or a book as
    often long as short in each symbol (and when ``sim`` counts no positions). A book long a Treasury-bill fund
    that rose on 85% of its days hits 0.85 without forecasting anything, beside stocks that rose on half of theirs
    or not; a book that forecasts the next return (a look-ahead) hits 1.0 wherever it is. A simulation without
    ``by_symbol`` (made by hand) reads its long share against the share of all its returns that rose."""
    if not sim.positions_taken:
        return 0.5
    if sim.by_symbol is None:
        if not sim.moves:
            return 0.5
        up, long = sim.ups / sim.moves, sim.longs_taken / sim.positions_taken
        return long * up + (1.0 - long) * (1.0 - up)
    taken, _, longs, ups, moves = sim.by_symbol.astype(np.float64)
    up = np.divide(ups, moves, out=np.full(len(ups), 0.5), where=moves > 0)  # a position counts only where it moved
    return float((longs * up + (taken - longs) * (1.0 - up)).sum() / taken.sum())


# --------------------------------------------------------------------------------------------
# From forecasts of windows to panels


def panel(dates: np.ndarray, symbol_ids: np.ndarray, values: np.ndarray, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """(W,) values at (date, symbol) → (unique dates (T,), (T, N) panel with NaN where absent)."""
    u, grid = panels(dates, symbol_ids, n_symbols)
    return u, grid(values)


def panels(dates: np.ndarray, symbol_ids: np.ndarray, n_symbols: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The unique dates (T,) of :func:`panel`, and the function that makes the (T, N) panel of any (W,)
    values of the same windows: the dates are sorted once for all the panels of a backtest (of minute
    bars, sorting millions of windows' dates again for each panel took a third of its time)."""
    u, inv = np.unique(np.asarray(dates, dtype=np.int64), return_inverse=True)
    rows, cols = inv.reshape(-1), np.asarray(symbol_ids)

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.full((len(u), n_symbols), np.nan)
        out[rows, cols] = values
        return out

    return u, grid


def _quantile_vol(fc) -> np.ndarray | None:
    """(W,) step-1 volatility implied by a symmetric pair of model quantiles (normal scaling), or None."""
    if fc.quantiles is None:
        return None
    lv = [float(x) for x in fc.levels]
    # 1 - 0.33 is 0.6699999999999999, not 0.67: levels pair within a tolerance, never by equality
    pairs = [(i, j) for i, q in enumerate(lv) if q < 0.5 for j, x in enumerate(lv) if abs(1 - q - x) < 1e-9]
    if not pairs:
        return None
    i, j = min(pairs, key=lambda p: lv[p[0]])  # the widest interval
    z = stats.norm.ppf(lv[j]) - stats.norm.ppf(lv[i])
    return (fc.quantiles[:, 0, j] - fc.quantiles[:, 0, i]) / z


def backtest_forecasts(fc, ev, starts: np.ndarray | list[int] | None = None) -> dict[str, Any]:
    """Backtest the model's forecasts, each baseline's, buy-and-hold and the equal-weight universe on
    the same dates.

    ``fc``: :class:`hftraining.eval.forecasts.Forecasts`; ``ev``: the EvaluationConfig (portfolio:
    ``per_symbol`` positions rule or the ``topk`` cross-section, long-only, gross cap, costs, signal,
    rebalancing interval, periods per year); the one portfolio rule trades every forecast. Each
    strategy's metrics carry its ``information_ratio`` against ``equal_weight``.

    A symbol with no row on a date but rows after it (a gap in its data, a holiday of its own exchange)
    is not traded there — there is no price — in every portfolio and both benchmarks: it keeps its
    previous weight, drifted (:func:`hold`), and the next period's return, which spans the gap, is earned
    by it; the per-symbol rule counts it with its last forecast (and volatility), so the other symbols get
    the weights of a full date (1/N_t with N_t counting it), and the top-k book keeps it in its place
    (:func:`topk_weights`); the others are scaled down only if the kept weight's drift would take the
    gross over ``max_gross``. The same whether or not the date rebalances. A symbol whose last window
    comes before the last date (its data ends before the others': a delisting) is sold at the close of
    that last row with a forecast, paying costs, in every portfolio and benchmark, and leaves the
    universe: the forecast there is not traded. The rows after it exist (a window ends H rows before the
    data) but their returns are not in ``fc``, so a position held over them would earn nothing in the
    simulation whatever the price did. Rows of a symbol that have no window between two of its dates (the last
    H and first L - 1 bars of sessions under ``data.max_gap``, the H - 1 rows between walk-forward folds)
    are earned through the close: with ``fc.prev_time`` (each window's previous row), the period that
    spans them earns the close's change over them (:func:`span_returns`).

    A forecast that is not finite (NaN or ±inf: an overflowed model, or one step of the ``mean`` signal) takes
    no position, and a position held there is sold: each forecast's metrics count those (date, symbol)
    forecasts of its rebalancing dates with a row (the last date opens no period; a symbol's last row sells
    it anyway) as ``no_forecast`` and carry a ``warning`` when there are any.

    Under ``vol_scaled`` a forecast whose volatility forecast is NaN or <= 0 takes no position
    (:func:`no_volatility`): each strategy's metrics count those (date, symbol) forecasts of its
    rebalancing dates as ``no_volatility`` (those that would take a position: non-zero, positive when
    long-only) and carry a ``warning`` when there are any. A ``backtest_*``
    key set away from its default that the resolved portfolio ignores (``backtest_topk`` under
    ``per_symbol``, ``backtest_positions`` under ``topk``; :func:`hftraining.core.config.backtest_ignored`)
    is named in ``settings["warning"]``: only a config that skipped the check gets here (the check refuses it
    wherever a config is validated: training, and ``evaluate``/``backtest``, which resolve ``auto`` by the
    label the model was trained on). A ``topk`` portfolio on dates that never have two symbols with a row (a
    single symbol) can hold nothing: ``settings["topk_held"]`` is 0 and ``settings["warning"]`` says so
    (:func:`topk_holds_nothing_text`). Returns
    {"strategies": {name: metrics}, "settings": ..., "curves": {name: (dates, returns)}, "dates": (T,) int64
    ns} (arrays, for the report): a curve's ``dates`` (T - 1,) are the decision dates that open its periods
    (:class:`Simulation`); ``"dates"`` is every date of the panel, so the period opened at ``dates[k]``
    ends at the close of ``dates[k + 1]``, where its return is realised.

    ``starts`` (int64 ns): dates on which every book starts afresh, as a backtest of the dates from there
    on would (the rows before such a date were not scored: a walk-forward fold whose test block
    ``evaluation.max_test_windows`` cut to its last dates). The period from the date before it is not
    booked: held over rows without forecasts — years of them — one period's simple return could pass
    -100% (a short position over a price that tripled), which no book of gross ≤ 1 traded each period
    can lose. Each part between them is backtested as a backtest of its own dates is (bought on its first
    date, marked at its last, a symbol whose rows end inside it sold there), and the parts' periods are
    joined (:meth:`Simulation.join`): its curves skip the period opened at a part's last date, and
    ``settings["restarts"]`` lists the dates (YYYY-MM-DD, with the time of day for intraday dates). The
    periods per year are inferred from the dates of the longest part: counted over the whole span, the
    unscored dates between the parts read as missing bars (two months of minute bars a year apart
    counted 22,700 bars a year, not 98,000).
    """
    N = len(fc.symbols)
    dates, grid = panels(fc.dates, fc.symbol_ids, N)
    R = grid(fc.last_return)  # R[t]: the return that ends at date t
    have = np.isfinite(grid(np.ones(len(fc.dates))))  # a row (a window) there
    prev_time = fc.prev_time
    if prev_time is not None:  # rows without a window between two dates: the close's change over them
        prev = np.full((len(dates), N), NO_TIME, dtype=np.int64)
        prev[np.searchsorted(dates, np.asarray(fc.dates, dtype=np.int64)), np.asarray(fc.symbol_ids)] = prev_time
        R = span_returns(R, have, dates, grid(fc.last_close), prev)
    T = len(dates)
    # the parts booked on their own: [cuts[j], cuts[j + 1]) (one part without ``starts``)
    at = np.searchsorted(dates, np.asarray([] if starts is None else starts, dtype=np.int64))
    cuts = [0, *sorted(set(at[(at > 0) & (at < T)].tolist())), T]
    parts = [slice(a, b) for a, b in zip(cuts, cuts[1:])]
    absent, closed = np.zeros_like(have), np.zeros_like(have)
    opens = np.ones(T, dtype=bool)  # the dates that open a period: not a part's last date
    every = int(ev.backtest_rebalance)
    for p in parts:
        h = have[p]
        later = np.flip(np.logical_or.accumulate(np.flip(h, axis=0), axis=0), axis=0)  # a row on the date or after
        absent[p] = ~h & later  # a gap; after a symbol's last row it is gone: sold at its last price, never carried
        closed[p] = h  # a symbol's last row before the part's last date: sold there, its forecast not traded
        closed[p][:-1] &= ~later[1:]
        closed[p.stop - 1:p.stop] = False  # a part's last date opens no period
        opens[p.stop - 1:p.stop] = False
    n_with = int(have.any(axis=0).sum())  # the symbols with a window in the split (a delisted one of the panel has none)

    def trades(every: int) -> np.ndarray:
        """(T,) bool: the dates a book rebalancing every ``every``-th date of its part trades on."""
        return np.concatenate([rebalancing(p.stop - p.start, every) for p in parts]) & opens

    guessed: list[str] = []  # what the dates cannot settle about the periods per year
    if ev.periods_per_year:
        ppy, how = float(ev.periods_per_year), "evaluation.periods_per_year"
    else:  # the dates between two parts, not scored, are no bars: the bars a year are counted in one part
        longest = max(parts, key=lambda p: p.stop - p.start)
        ppy, how = infer_periods_per_year(dates[longest], guessed)
        if len(parts) > 1:
            how = (f"{how}; counted in the longest of the {len(parts)} parts booked apart "
                   f"({longest.stop - longest.start} of {T} dates)")
    n_periods = int(opens.sum())
    if 0 < n_periods < FEW_PERIODS:  # annualising a handful of returns: a figure, not evidence
        guessed.append(f"the annualised figures (annual return, volatility, Sharpe, Sortino, Calmar, IR) rest on "
                       f"{n_periods} periods" + (" only" if n_periods > 1 else ""))
    past_vol = grid(fc.past_vol)
    qvol = _quantile_vol(fc)
    model_vol = grid(qvol) if qvol is not None else past_vol

    portfolio = ev.backtest_portfolio
    portfolio_from = "evaluation.backtest_portfolio"
    if portfolio == "auto":
        cs = getattr(fc, "target", "return") in CROSS_SECTIONAL
        portfolio = "topk" if cs else "per_symbol"
        portfolio_from = f"evaluation.backtest_portfolio=auto: {'a cross-sectional' if cs else 'a return'} label"

    def run(sig: np.ndarray, vol: np.ndarray, rule: str, long_only: bool, gross: float, every: int = 1,
            cost: bool = True, vol_from: str = "the window's past volatility", forecast: bool = True
            ) -> tuple[dict[str, Any], Simulation]:
        sig = np.where(closed, np.nan, sig)
        sims = []
        for p in parts:  # each part's book on its own (one part without ``starts``)
            if rule == "topk":
                w = topk_weights(sig[p], ev.backtest_topk, ev.backtest_topk_dropout, long_only, gross, every, absent[p])[0]
            else:  # a symbol without a row keeps its drifted weight and counts with its last forecast
                w = positions(carry_forward(sig[p], absent[p]), carry_forward(vol[p], absent[p]), rule, long_only, gross)
            w = hold(w, R[p], every, absent[p], gross, closed[p])
            sims.append(simulate(w, R[p], dates[p], ev.backtest_cost_bps if cost else 0.0,
                                 ev.backtest_slippage_bps if cost else 0.0))
        sim = sims[0] if len(sims) == 1 else Simulation.join(sims)
        perf = performance(sim, ppy, gross, lookahead=forecast, symbols=list(fc.symbols))
        if rule == "vol_scaled":  # forecasts that ask for a position on a date that trades, with no volatility to size it
            with np.errstate(invalid="ignore"):
                decided = have & np.isfinite(sig) & ((sig > 0) if long_only else (sig != 0))
            decided &= trades(every)[:, None]  # a part's last date opens no period: never traded (as no_forecast)
            n = int((decided & no_volatility(vol)).sum())
            perf["no_volatility"] = n
            if n:
                text = (f"{n} of {int(decided.sum())} forecasts took no position: their volatility forecast is NaN or <= 0 "
                        f"({vol_from}), and vol_scaled divides by it")
                perf["warning"] = f"{perf['warning']}; {text}" if "warning" in perf else text
        return perf, sim

    out: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rule = "topk" if portfolio == "topk" else ev.backtest_positions
    ignored = backtest_ignored(ev, portfolio)
    traded = have & ~closed & trades(every)[:, None]  # the forecasts a book trades on (a part's last date opens no period)
    for name, pred in fc.pred.items():
        sig = grid(pred[:, 0] if ev.backtest_signal == "step1" else pred.mean(axis=1))
        key = label(name)  # model, naive:drift, fitted:ridge
        own = name == "model" and qvol is not None  # the model's volatility: its widest quantile interval
        out[key], sim = run(sig, model_vol if own else past_vol,
                            rule, ev.backtest_long_only, ev.backtest_max_gross, every,
                            vol_from="the model's widest quantile interval" if own else "the window's past volatility")
        curves[key] = (sim.dates, sim.returns)
        # forecasts that are not finite (an overflowed model) take no position: counted and said, not dropped silently
        n = int((traded & ~np.isfinite(sig)).sum())
        out[key]["no_forecast"] = n
        if n:
            text = (f"{n} of {int(traded.sum())} forecasts ({ev.backtest_signal}) are not finite (NaN or ±inf): they "
                    "took no position (a position held there was sold)")
            out[key]["warning"] = f"{out[key]['warning']}; {text}" if "warning" in out[key] else text
    ones = np.where(np.isfinite(R), 1.0, np.nan)
    # bought on a part's first date only; the benchmarks trade no forecast: no look-ahead to warn of
    out["buy_and_hold"], sim = run(ones, past_vol, "sign", True, 1.0, every=len(dates) + 1, forecast=False)
    curves["buy_and_hold"] = (sim.dates, sim.returns)
    out["equal_weight"], sim = run(ones, past_vol, "sign", True, ev.backtest_max_gross, cost=False, forecast=False)
    curves["equal_weight"] = (sim.dates, sim.returns)
    bench = sim.returns
    for key, m in out.items():
        if m.get("n_periods"):
            m["information_ratio"] = information_ratio(curves[key][1], bench, ppy)
    settings = {
        "portfolio": portfolio, "portfolio_from": portfolio_from, "rebalance": every,
        "positions": ev.backtest_positions, "long_only": ev.backtest_long_only, "max_gross": ev.backtest_max_gross,
        "cost_bps": ev.backtest_cost_bps, "slippage_bps": ev.backtest_slippage_bps, "signal": ev.backtest_signal,
        "periods_per_year": ppy, "periods_per_year_from": how, "n_dates": int(len(dates)), "n_symbols": n_with,
        "timing": "weights decided at the close of t from forecasts made with data up to t, held over (t, t+1]",
        "no_row": "a symbol without a row on a date is not traded there: it keeps its previous weight (and its "
                  "top-k place), drifted, and earns the return over the gap with the next row; a symbol whose last window "
                  "comes before the last date is sold at that row's close (costs paid; its forecast there is not traded: "
                  "the returns of the rows after it are not in the forecasts) and leaves the universe; rows without a window "
                  "between two dates (session ends and starts under data.max_gap, walk-forward fold boundaries) are earned "
                  "through the close's change over them",
        "buy_and_hold": "equal weight long in every symbol with a row on the first date, bought then and held, drifting "
                        "with the prices, never rebalanced (the entry's costs included; a symbol whose windows end is "
                        "sold at its last one's close, costs paid, the proceeds kept in cash)",
        "equal_weight": "the universe: equal weight long in every symbol with data, gross = max_gross, re-equalised "
                        "each period, no costs (the benchmark of information_ratio)",
    }
    if len(parts) > 1:  # the dates a book starts afresh on: the period before each is not booked
        at = np.array([dates[p.start] for p in parts[1:]], dtype="datetime64[ns]")
        midnight = bool(np.all(at == at.astype("datetime64[D]")))
        settings["restarts"] = [str(d.astype("datetime64[D]" if midnight else "datetime64[s]")).replace("T", " ") for d in at]
    if ignored:
        settings["ignored"] = [f"evaluation.{k}" for k in ignored]
        settings["warning"] = backtest_ignored_text(ev, portfolio, portfolio_from)
    for text in guessed:
        settings["warning"] = f"{settings['warning']}; {text}" if "warning" in settings else text
    if portfolio == "topk":
        settings.update(topk=ev.backtest_topk, topk_dropout=ev.backtest_topk_dropout,
                        topk_rule="on each rebalancing date: long the top k by the signal, short the bottom k "
                                  "(long-only: none), equal weight; dropout n: at most n names swapped per side")
        # the most symbols with a row on one date: a book ranks at least two of them against each other
        most = int(have.sum(axis=1).max()) if len(dates) else 0
        # the most names a side can hold (long-short: both equal), of the symbols the split trades (a panel
        # symbol without a window there is never ranked)
        side = n_with if ev.backtest_long_only else n_with // 2
        if most < 2:
            settings["topk_held"] = 0
            text = topk_holds_nothing_text(portfolio_from, n_with)
            settings["warning"] = f"{settings['warning']}; {text}" if "warning" in settings else text
        elif ev.backtest_topk > side:
            settings["topk_held"] = side
            text = (f"evaluation.backtest_topk: {ev.backtest_topk} is more than the {n_with} symbols allow: each side "
                    f"holds at most {side}" + ("" if ev.backtest_long_only else " (long-short: half of them)"))
            settings["warning"] = f"{settings['warning']}; {text}" if "warning" in settings else text
    return {"settings": settings, "strategies": out, "curves": curves, "dates": dates}


def topk_holds_nothing_text(portfolio_from: str, n_symbols: int) -> str:
    """The line saying that a top-k book holds nothing on any date: no date has two of the ``n_symbols``
    symbols with a row, and the book ranks a date's symbols against each other (``portfolio_from``: how
    the portfolio was chosen, as ``settings["portfolio_from"]``)."""
    return (f"{portfolio_from}: topk ranks the symbols of a date against each other, and no date has 2 of the "
            f"{n_symbols} symbol{'s' if n_symbols != 1 else ''} with a forecast: the book holds nothing, and the model "
            f"and every baseline read 0")


def portfolio_label(s: dict[str, Any]) -> str:
    """The portfolio rule of backtest ``settings`` in words: "positions sign long-short", or
    "portfolio top-3 long-short, dropout 1, rebalance every 5 periods" (older settings: per symbol), with the
    keys set that the portfolio ignores: "positions sign long-short (ignored: evaluation.backtest_topk)"."""
    side = "long-only" if s["long_only"] else "long-short"
    if s.get("portfolio") == "topk":
        k = f"{s['topk']} (at most {s['topk_held']} held)" if "topk_held" in s else s["topk"]
        text = f"portfolio top-{k} {side}" + (f", dropout {s['topk_dropout']}" if s.get("topk_dropout") else "")
    else:
        text = f"positions {s['positions']} {side}"
    every = s.get("rebalance", 1)
    ignored = f" (ignored: {', '.join(s['ignored'])})" if s.get("ignored") else ""
    return text + (f", rebalance every {every} periods" if every > 1 else "") + ignored


def _cell(v: Any, spec: str) -> str:
    """:func:`fmt` of ``v`` with a space before it: where the text would fill the column (a drawdown of a
    book that lost more than its capital, -112.50%, beside a Sortino of -3.04 read "-3.04-112.50%"), with
    fewer decimals, and 2 significant digits where the fixed-point text is wider than the column even
    without decimals (annualised at 1e308 periods a year, a volatility of 1e154 is 155 digits long)."""
    text = fmt(v, spec)
    width = int(spec.lstrip("<>^").split(".")[0])
    if len(text) < width or text.startswith(" "):
        return text
    kind, digits = spec[-1], int(spec.split(".")[1][:-1])
    for d in range(digits - 1, -1, -1):
        text = format(v, f".{d}{kind}")
        if len(text) < width:
            return format(text, f">{width}")
    pct = kind == "%"
    return format(" " + format(v * 100 if pct else v, ".2g") + ("%" if pct else ""), f">{width}")


def format_backtest(res: dict[str, Any]) -> str:
    """An aligned table of every strategy's metrics."""
    s = res["settings"]
    has_ir = any("information_ratio" in m for m in res["strategies"].values())
    lines = [
        f"backtest: {s['n_dates']} dates × {s['n_symbols']} symbols, {s['periods_per_year']:g} periods/year "
        f"({s['periods_per_year_from']}); {portfolio_label(s)}, "
        f"gross ≤ {s['max_gross']:g}, costs {s['cost_bps']:g} + slippage {s['slippage_bps']:g} bps of traded notional",
        f"{'strategy':<22}{'total':>9}{'annual':>9}{'vol':>8}{'Sharpe':>8}{'Sortino':>8}{'maxDD':>8}{'Calmar':>8}{'turn':>7}{'hit':>7}"
        + (f"{'IR':>7}" if has_ir else ""),
    ]
    for name, m in res["strategies"].items():
        if not m.get("n_periods"):
            lines.append(f"{name:<22} (no periods)")
            continue
        lines.append(
            f"{name:<22}{_cell(m['total_return'], '>9.2%')}{_cell(m['annual_return'], '>9.2%')}{_cell(m['annual_volatility'], '>8.2%')}"
            f"{_cell(m['sharpe'], '>8.2f')}{_cell(m['sortino'], '>8.2f')}{_cell(m['max_drawdown'], '>8.2%')}{_cell(m['calmar'], '>8.2f')}"
            f"{_cell(m['turnover'], '>7.3f')}{_cell(m['hit_rate'], '>7.3f')}" + (_cell(m.get('information_ratio'), '>7.2f') if has_ir else "")
        )
        if "warning" in m:
            lines.append(f"  warning ({name}): {m['warning']}")
    if has_ir:
        lines.append("IR: information ratio against equal_weight (annualised mean / std of the active return)")
    if s.get("restarts"):
        lines.append(f"every book starts afresh on {', '.join(s['restarts'])}: the period from the date before "
                     f"{'each' if len(s['restarts']) > 1 else 'it'} is not booked (no forecast was scored over its rows)")
    if "warning" in s:
        lines.append(f"warning (settings): {s['warning']}")
    return "\n".join(lines)
