"""The backtest against a reference written from the README's description, on the bundled Yahoo files
(listings, a delisting, a holiday of one symbol, forecasts of 3 steps, NaN, ±inf and tied forecasts, a
one-symbol cross-section), and the annualisation of bars around the clock over a short test split."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval.backtest import backtest_forecasts, infer_periods_per_year
from hftraining.eval.forecasts import Forecasts

YAHOO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yahoo"
needs_yahoo = pytest.mark.skipif(not (YAHOO / "CAVA.csv").exists(), reason=f"the Yahoo files are not in {YAHOO}")
COST = (5.0 + 2.0) / 1e4  # the defaults: backtest_cost_bps + backtest_slippage_bps


def _ev(*overrides):
    return load_config(None, [f"evaluation.{o}" for o in overrides]).evaluation


def _forecasts(dates, R, sig, close=None):
    """Forecasts of a (T, N) panel: a row where ``R`` is finite; ``sig`` (T, N, H) the model's forecasts."""
    T, N = R.shape
    t, i = np.nonzero(np.isfinite(R))
    H = sig.shape[2]
    close = np.full((T, N), 100.0) if close is None else close
    return Forecasts(pred={"model": sig[t, i]}, true=np.zeros((len(t), H)), dates=np.asarray(dates)[t],
                     symbol_ids=i, symbols=[f"S{j}" for j in range(N)], last_return=R[t, i],
                     past_vol=np.full(len(t), 0.01), last_close=close[t, i])


# --------------------------------------------------------------------------------------------
# bars around the clock over fewer than 6 days: crypto trades 365 days a year, not 252


def _clock(start, n, freq="1h"):
    return pd.date_range(start, periods=n, freq=freq, tz="UTC").as_unit("ns").asi8


@pytest.mark.parametrize("start,n,freq", [
    ("2024-01-05", 100, "1h"), ("2024-01-06 03:00", 130, "1h"), ("2024-01-05 20:00", 5000, "1min"),
    ("2024-01-04", 1440, "5min"),
    # starting or ending inside a weekend (they were 252 days and "no whole weekend"; tests/test_review_round13.py)
    ("2024-01-06 13:00", 100, "1h"),  # Saturday 13:00 to Wednesday: the rest of one weekend
    ("2024-01-06 18:00", 5 * 1440, "1min"),  # 5 days of minute bars from Saturday evening
    ("2024-01-07 08:00", 96, "1h"),  # Sunday 08:00 UTC: two hours of the weekend
    ("2024-01-01 13:00", 5 * 24 + 1, "1h"),  # Monday 13:00 to Saturday 13:00: ends inside the weekend
    ("2024-01-07 09:30", 96, "1h"),  # a bar at Sunday 09:30 UTC, half a step before the window closes
])
def test_bars_around_the_clock_through_a_weekend_annualise_on_365_days(start, n, freq):
    """A test split of hourly or minute crypto bars shorter than 6 days (evaluation.max_test_windows =
    50,000 over 10 symbols of minute bars is 3.5 days) holds every weekday it spans, so the weekdays
    cannot show weekend trading: it was annualised on 252 days without a word (every Sharpe × 0.83),
    although its bars run through Saturday and Sunday."""
    stamps = _clock(start, n, freq)
    per_day = pd.Timedelta("1D") / pd.Timedelta(freq)
    warnings: list[str] = []
    ppy, how = infer_periods_per_year(stamps, warnings)
    assert ppy == per_day * 365, how
    assert warnings == []
    rng = np.random.default_rng(0)
    R = rng.normal(0, 0.01, (n, 3))
    res = backtest_forecasts(_forecasts(stamps, R, rng.normal(0, 1, (n, 3, 1))), _ev())
    assert res["settings"]["periods_per_year"] == per_day * 365
    r = res["curves"]["model"][1]
    assert res["strategies"]["model"]["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(per_day * 365))


def test_bars_around_the_clock_that_hold_no_weekend_say_their_days_per_year_are_a_guess():
    """Monday to Thursday of bars around the clock cannot tell crypto (365 days) from FX (252): the
    backtest keeps 252 and its settings warning names evaluation.periods_per_year."""
    stamps = _clock("2024-01-08", 96)
    R = np.random.default_rng(1).normal(0, 0.01, (96, 2))
    res = backtest_forecasts(_forecasts(stamps, R, np.ones((96, 2, 1))), _ev())
    s = res["settings"]
    assert s["periods_per_year"] == 24 * 252
    assert "less than one bar step of a weekend" in s["warning"] and "evaluation.periods_per_year (e.g. 8760)" in s["warning"]
    set_ = backtest_forecasts(_forecasts(stamps, R, np.ones((96, 2, 1))), _ev("periods_per_year=8760"))["settings"]
    assert set_["periods_per_year"] == 8760 and "warning" not in set_


@pytest.mark.parametrize("tz,local_open", [("America/New_York", "17:00"), ("Asia/Tokyo", "00:00"),
                                           ("Pacific/Kiritimati", "00:00")])
def test_bars_around_the_clock_of_a_market_closed_at_weekends_stay_on_252_days(tz, local_open):
    """FX (Sunday 17:00 to Friday 17:00 New York) and a market open around the clock Monday to Friday in
    Tokyo or at UTC+14 hold no bar from Saturday 12:00 to Sunday 10:00 UTC: a short split across their
    weekend stays 252 days, with no warning."""
    start = pd.Timestamp(f"2024-01-07 {local_open}", tz=tz)
    if local_open == "00:00":
        start += pd.Timedelta("1D")  # Monday 00:00 local
    week = pd.date_range(start, start + pd.Timedelta("5D"), freq="15min", inclusive="left")
    bars = week.append(week + pd.Timedelta("7D")).tz_convert("UTC").as_unit("ns").asi8
    part = bars[300:300 + 400]  # Thursday to Tuesday across the weekend: 4.2 days of bars
    warnings: list[str] = []
    assert infer_periods_per_year(part, warnings)[0] == 96 * 252
    assert warnings == []


# --------------------------------------------------------------------------------------------
# the bundled Yahoo files against a reference kept from the README's description


def _yahoo_panel(names=("AEM", "WPM", "CAVA", "CART", "ARM", "NU"), start="2023-05-01", end="2023-12-29"):
    """(dates (T,), close (T, N)) of the bundled files: CAVA, ARM and CART list inside the period."""
    closes = {n: pd.read_csv(YAHOO / f"{n}.csv", index_col="Date", parse_dates=True)["close"] for n in names}
    wide = pd.DataFrame(closes).loc[start:end]
    wide.index = wide.index.tz_localize("UTC")
    return wide.index.as_unit("ns").asi8, wide.to_numpy(dtype=np.float64, copy=True)


def _yahoo_forecasts(seed=0, H=3):
    """A panel of real closes with a delisting (NU's last row 20 dates before the end), a holiday of one
    symbol (AEM without a row on two dates), and forecasts of 3 steps: a 5-day momentum plus noise, with
    ties (rounded), zeros, NaN and ±inf among them."""
    dates, close = _yahoo_panel()
    T, N = close.shape
    close[-20:, 5] = np.nan  # NU's data ends: a delisting
    close[[40, 90], 0] = np.nan  # AEM has no bar there
    R = np.full((T, N), np.nan)
    for i in range(N):  # the log return over the symbol's previous bar (a holiday's return spans it)
        rows = np.flatnonzero(np.isfinite(close[:, i]))
        R[rows[1:], i] = np.log(close[rows[1:], i] / close[rows[:-1], i])
    have = np.isfinite(R)
    rng = np.random.default_rng(seed)
    mom = pd.DataFrame(np.log(close)).ffill().diff(5).to_numpy()
    sig = np.round(np.nan_to_num(mom)[:, :, None] * 10 + rng.normal(0, 0.2, (T, N, H)), 1)
    sig[rng.random((T, N)) < 0.05] = 0.0
    sig[rng.random((T, N)) < 0.03, 0] = np.nan
    sig[rng.random((T, N)) < 0.02, 0] = np.inf
    sig[rng.random((T, N)) < 0.02, 0] = -np.inf
    t, i = np.nonzero(have)
    fc = Forecasts(pred={"model": sig[t, i]}, true=np.zeros((len(t), H)), dates=dates[t], symbol_ids=i,
                   symbols=[f"S{j}" for j in range(N)], last_return=R[t, i], past_vol=np.full(len(t), 0.02),
                   last_close=close[t, i])
    return fc, dates[np.any(have, axis=1)], R[np.any(have, axis=1)], sig[np.any(have, axis=1)]


def _reference(R, S, rule, long_only=False, k=2, gross=1.0, every=1, cost=COST):
    """The README's backtest, as a loop: the weights decided at the close of t from the forecasts of t
    (a forecast that is not finite: none) earn the simple return of t + 1; a symbol without a row keeps its
    drifted weight and its last forecast (per symbol) or its top-k place; one whose rows end is sold at its
    last row; costs are ``cost`` times Σ|new weight − drifted weight|, the first date's entry included and
    nothing at the last date. Returns (net returns, turnover, hits, positions)."""
    T, N = R.shape
    have = np.isfinite(R)
    last = np.array([np.flatnonzero(have[:, i]).max() for i in range(N)])
    simple = np.expm1(np.nan_to_num(R))
    w = np.zeros(N)
    last_sig = np.full(N, np.nan)
    longs, shorts = [], []
    net, turn, hits, taken = [], [], 0, 0
    for t in range(T - 1):
        if t > 0:  # drift over the period that ended at t
            g = w @ simple[t]
            w = w * (1 + simple[t]) / (1 + g)
        gap = ~have[t] & np.array([have[:t, i].any() for i in range(N)]) & (t < last)  # listed, not yet gone
        sold = have[t] & (last == t)
        s = np.where(have[t], S[t], np.nan)
        s = np.where(np.isfinite(s), s, np.nan)
        last_sig = np.where(have[t], np.where(sold, np.nan, s), last_sig)
        last_sig[~have[t] & ~gap] = np.nan  # before a listing, after a delisting: nothing to count
        new = w.copy()
        if t % every == 0:
            new = np.zeros(N)
            if rule == "sign":
                f = last_sig
                n = np.isfinite(f).sum()
                for i in range(N):
                    if np.isfinite(f[i]) and f[i] != 0 and not (long_only and f[i] < 0):
                        new[i] = np.sign(f[i]) * gross / n
            else:
                kept_l, kept_s = [i for i in longs if gap[i]], [i for i in shorts if gap[i]]
                cand = [i for i in range(N) if have[t, i] and not sold[i] and np.isfinite(s[i])]
                n = len(cand) + len(kept_l) + len(kept_s)
                kk = k if long_only else min(k, n // 2)
                if not cand or len({s[i] for i in cand}) == 1:
                    longs, shorts = kept_l, kept_s
                else:
                    longs = kept_l + sorted(cand, key=lambda i: (-s[i], i))[:max(kk - len(kept_l), 0)]
                    rest = sorted((i for i in cand if i not in longs), key=lambda i: (s[i], i))
                    shorts = [] if long_only else kept_s + rest[:max(kk - len(kept_s), 0)]
                side = gross if long_only else gross / 2
                for names, sign in ((longs, 1.0), (shorts, -1.0)):
                    for i in names:
                        new[i] = sign * side / len(names)
            new[gap] = w[gap]  # no price: kept as it drifted
            room, rest_w = max(gross - np.abs(w[gap]).sum(), 0.0), np.abs(new[~gap]).sum()
            if rest_w > room:
                new[~gap] *= room / rest_w
        new[sold] = 0.0
        turn.append(np.abs(new - w).sum())
        w = new
        earned = simple[t + 1]
        for i in range(N):
            if w[i] != 0 and earned[i] != 0:
                taken += 1
                hits += int(np.sign(w[i]) == np.sign(earned[i]))
        net.append(w @ earned - cost * turn[-1])
    return np.array(net), np.array(turn), hits, taken


@needs_yahoo
@pytest.mark.parametrize("rule,long_only,every", [("sign", False, 1), ("sign", True, 1), ("sign", False, 5),
                                                  ("topk", False, 1), ("topk", True, 1), ("topk", False, 5)])
@pytest.mark.parametrize("signal", ["step1", "mean"])
def test_the_backtest_of_the_yahoo_files_is_the_readmes_book(rule, long_only, every, signal):
    fc, dates, R, sig = _yahoo_forecasts()
    S = sig[:, :, 0] if signal == "step1" else sig.mean(axis=2)
    o = [f"backtest_long_only={str(long_only).lower()}", f"backtest_rebalance={every}", f"backtest_signal={signal}"]
    o += ["backtest_portfolio=topk", "backtest_topk=2"] if rule == "topk" else ["backtest_portfolio=per_symbol"]
    res = backtest_forecasts(fc, _ev(*o))
    net, turn, hits, taken = _reference(R, S, rule, long_only=long_only, every=every)
    got, m = res["curves"]["model"][1], res["strategies"]["model"]
    np.testing.assert_allclose(got, net, rtol=0, atol=1e-13)
    assert m["turnover"] == pytest.approx(turn.mean(), rel=1e-12)
    assert m["hit_rate"] == pytest.approx(hits / taken, rel=1e-12)
    r = pd.Series(net)
    equity = (1 + r).cumprod()
    assert res["settings"]["periods_per_year"] == 252
    assert m["total_return"] == pytest.approx(equity.iloc[-1] - 1, rel=1e-10)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std() * math.sqrt(252), rel=1e-9)
    assert m["annual_return"] == pytest.approx((1 + m["total_return"]) ** (252 / len(r)) - 1, rel=1e-9)
    drawdown = equity / np.maximum(equity.cummax(), 1.0) - 1
    assert m["max_drawdown"] == pytest.approx(drawdown.min(), rel=1e-10)
    # the benchmarks: buy-and-hold (the symbols with a row on the first date, never rebalanced, a delisting
    # sold) and the equal-weight universe (re-equalised each period, no costs)
    ones = np.where(np.isfinite(R), 1.0, np.nan)
    np.testing.assert_allclose(res["curves"]["buy_and_hold"][1], _reference(R, ones, "sign", True, every=10**9)[0],
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(res["curves"]["equal_weight"][1], _reference(R, ones, "sign", True, cost=0.0)[0],
                               rtol=0, atol=1e-13)


@needs_yahoo
@pytest.mark.parametrize("portfolio,every", [("per_symbol", 1), ("per_symbol", 5), ("topk", 1), ("topk", 5)])
def test_forecasts_that_are_not_finite_take_no_position_and_are_counted(portfolio, every):
    """A model whose forecasts overflow (±inf) or are NaN in some windows had them dropped from the book
    without a word: the backtest read as a figure of the model's forecasts. They still take no position,
    and each strategy counts them (``no_forecast``) and warns."""
    fc, dates, R, sig = _yahoo_forecasts()
    fc.pred["zero"] = np.zeros_like(fc.pred["model"])
    res = backtest_forecasts(fc, _ev(f"backtest_portfolio={portfolio}", f"backtest_rebalance={every}"))
    have = np.isfinite(R)
    T = len(R)
    last = np.array([np.flatnonzero(have[:, i]).max() for i in range(R.shape[1])])
    opens = (np.arange(T) % every == 0) & (np.arange(T) < T - 1)  # rebalancing dates that open a period
    traded = have & opens[:, None] & (np.arange(T)[:, None] != last[None, :])  # a symbol's last row sells it
    bad = traded & ~np.isfinite(sig[:, :, 0])
    m = res["strategies"]["model"]
    assert m["no_forecast"] == bad.sum() > 0
    assert m["warning"] == (f"{bad.sum()} of {traded.sum()} forecasts (step1) are not finite (NaN or ±inf): they took "
                            "no position (a position held there was sold)")
    zero = res["strategies"]["naive:zero"]
    assert zero["no_forecast"] == 0 and "warning" not in zero
    assert "no_forecast" not in res["strategies"]["equal_weight"]  # a benchmark trades no forecast
    net = _reference(R, sig[:, :, 0], "topk" if portfolio == "topk" else "sign", k=3, every=every)[0]
    np.testing.assert_allclose(res["curves"]["model"][1], net, rtol=0, atol=1e-13)  # as no forecast


@needs_yahoo
def test_tied_forecasts_and_a_single_symbol_on_the_yahoo_files():
    """Forecasts all equal on every date: the per-symbol sign book is long every symbol with a row (the
    equal-weight universe, less its costs), the top-k book ranks nothing and holds nothing. One symbol
    alone: the per-symbol book trades it by the sign of its forecast, the top-k book holds nothing and
    says so."""
    fc, dates, R, sig = _yahoo_forecasts()
    fc.pred["model"] = np.full_like(fc.pred["model"], 0.3)
    same = backtest_forecasts(fc, _ev("backtest_portfolio=per_symbol"))
    ones = np.where(np.isfinite(R), 1.0, np.nan)
    net, turn, _, _ = _reference(R, ones, "sign")
    np.testing.assert_allclose(same["curves"]["model"][1], net, rtol=0, atol=1e-13)
    np.testing.assert_allclose(same["curves"]["model"][1], same["curves"]["equal_weight"][1] - COST * turn, atol=1e-13)
    top = backtest_forecasts(fc, _ev("backtest_portfolio=topk"))["strategies"]["model"]
    assert top["total_return"] == 0.0 and top["turnover"] == 0.0
    dates, close = _yahoo_panel(names=("AEM",))
    R1 = np.diff(np.log(close), axis=0)
    S1 = np.sign(np.random.default_rng(3).normal(size=R1.shape))
    one = _forecasts(dates[1:], R1, S1[:, :, None])
    res = backtest_forecasts(one, _ev("backtest_portfolio=per_symbol"))
    np.testing.assert_allclose(res["curves"]["model"][1], _reference(R1, S1, "sign")[0], rtol=0, atol=1e-13)
    res = backtest_forecasts(one, _ev("backtest_portfolio=topk"))
    assert res["settings"]["topk_held"] == 0 and "holds nothing" in res["settings"]["warning"]
    assert res["strategies"]["model"]["total_return"] == 0.0
