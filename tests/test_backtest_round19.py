"""The backtest against a loop written from the README's description of it, number for number, on
hand-made panels that stress it: symbols listing, leaving and missing dates, a date with one symbol,
forecasts of 3 steps (step 1 and the mean), ties, zeros, NaN and +inf, sign, vol_scaled and top-k books
(dropout, long-only, a gross cap above 1, rebalancing every few dates), books started afresh, rows
without a window earned through the close, and intraday bars. And the look-ahead warning: a book long a
market that rises on most days (a Treasury-bill fund) hits as often as the market rises without any
forecast, so neither it nor buy-and-hold is flagged, while a signal that is the next return still is."""

import math

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import NO_TIME, Forecasts

COST = (5.0 + 2.0) / 1e4  # backtest_cost_bps + backtest_slippage_bps by default


def _ev(*overrides):
    return load_config(None, [f"evaluation.{o}" for o in overrides]).evaluation


def _days(T, start="2024-01-01"):
    return pd.bdate_range(start, periods=T, tz="UTC").as_unit("ns").asi8


def _forecasts(dates, R, sig, vol=None, close=None, prev_time=None):
    """Forecasts of a (T, N) panel: a window where ``R`` (log returns) is finite; ``sig`` (T, N, H)."""
    T, N = R.shape
    t, i = np.nonzero(np.isfinite(R))
    vol = np.full((T, N), 0.01) if vol is None else vol
    close = np.full((T, N), 100.0) if close is None else close
    return Forecasts(pred={"model": sig[t, i]}, true=np.zeros((len(t), sig.shape[2])), dates=np.asarray(dates)[t],
                     symbol_ids=i, symbols=[f"S{j}" for j in range(N)], last_return=R[t, i], past_vol=vol[t, i],
                     last_close=close[t, i], prev_time=None if prev_time is None else prev_time[t, i])


def _pool(ranked, held, k, dropout):
    """TopK-Dropout on one side (names best first): the held names and the best k - |held| + dropout others
    are the pool, its best k are kept, so at most ``dropout`` held names give way, each to a better one."""
    if dropout == 0:
        return ranked[:k]
    pool = set(held) | set([i for i in ranked if i not in held][: max(k - len(held) + dropout, 0)])
    return [i for i in ranked if i in pool][:k]


def _reference(R, S, V=None, rule="sign", long_only=False, gross=1.0, every=1, cost=COST, k=2, dropout=0, parts=None):
    """The README's book as a loop over dates: the weights decided at the close of t from the forecasts of t
    earn the simple return of t + 1 (a portfolio return is Σ w·r, the cash earning nothing); between
    rebalancing dates (every ``every``-th date of a part) the weights drift with the prices; a symbol without
    a row keeps its drifted weight (its last forecast counting per symbol, its place in the top k); one whose
    rows end before the part's last date is sold at its last row (its forecast there not traded); a forecast
    that is not finite takes no position; costs are ``cost`` × Σ|new weight − drifted weight|, the first
    date's entry included, nothing at the last date. ``parts``: (first, end) date ranges booked apart.
    Returns (net returns, turnover, hits, positions)."""
    T, N = R.shape
    net, turn, hits, taken = [], [], 0, 0
    for a, b in parts or [(0, T)]:
        have = np.isfinite(R[a:b])
        simple = np.expm1(np.nan_to_num(R[a:b]))
        last = np.array([np.flatnonzero(have[:, i]).max() if have[:, i].any() else -1 for i in range(N)])
        w, carried, cvol = np.zeros(N), np.full(N, np.nan), np.full(N, np.nan)
        longs, shorts = [], []
        for t in range(b - a - 1):
            if t > 0:
                w = w * (1 + simple[t]) / (1 + float(w @ simple[t]))
            row = have[t]
            gap = ~row & np.array([have[t:, i].any() for i in range(N)])  # no row now, rows later
            sold = row & (last == t)
            s = np.array([S[a + t, i] if row[i] and not sold[i] and np.isfinite(S[a + t, i]) else np.nan
                          for i in range(N)])
            carried = np.where(row, s, np.where(gap, carried, np.nan))
            if V is not None:
                cvol = np.where(row, V[a + t], np.where(gap, cvol, np.nan))
            new = w.copy()
            if t % every == 0:
                new = np.zeros(N)
                if rule == "sign":  # ±gross / N_t, N_t: the symbols with a forecast
                    n = np.isfinite(carried).sum()
                    for i in range(N):
                        f = carried[i]
                        if np.isfinite(f) and (f > 0 or (f < 0 and not long_only)):
                            new[i] = math.copysign(gross / n, f)
                elif rule == "vol_scaled":  # forecast / volatility, the date's gross = gross
                    raw = np.zeros(N)
                    for i in range(N):
                        f, v = carried[i], cvol[i]
                        if np.isfinite(f) and np.isfinite(v) and v > 0 and (f > 0 or (f < 0 and not long_only)):
                            raw[i] = f / v
                    if np.abs(raw).sum() > 0:
                        new = raw / np.abs(raw).sum() * gross
                else:  # top k
                    kl, ks = [i for i in longs if gap[i]], [i for i in shorts if gap[i]]  # held, no price: kept
                    cand = [i for i in range(N) if np.isfinite(s[i])]
                    kk = k if long_only else min(k, (len(cand) + len(kl) + len(ks)) // 2)
                    if not cand or len({s[i] for i in cand}) == 1:  # no ranking
                        longs, shorts = kl, ks
                    else:
                        best = sorted(cand, key=lambda i: (-s[i], i))
                        worst = sorted(cand, key=lambda i: (s[i], i))
                        held_short = set() if long_only or not dropout else {i for i in shorts if i in cand}
                        lc = [i for i in best if i not in held_short]
                        longs = kl + _pool(lc, [i for i in longs if i in lc], max(kk - len(kl), 0), dropout)
                        if long_only:
                            shorts = []
                        else:
                            sc = [i for i in worst if i not in longs]
                            shorts = ks + _pool(sc, [i for i in held_short if i in sc], max(kk - len(ks), 0), dropout)
                            if len(longs) < kk:  # the names held short that the short side let go fill the long side
                                more = [i for i in best if i not in longs and i not in shorts][: kk - len(longs)]
                                longs = kl + [i for i in best if i in set(longs) | set(more)]
                    side = gross if long_only else gross / 2
                    for names, sign in ((longs, 1.0), (shorts, -1.0)):
                        for i in names:
                            new[i] = sign * side / len(names)
                new[gap] = w[gap]
                room, rest = max(gross - np.abs(w[gap]).sum(), 0.0), np.abs(new[~gap]).sum()
                if rest > room:
                    new[~gap] *= room / rest
            new[sold] = 0.0
            turn.append(np.abs(new - w).sum())
            w = new
            earned = simple[t + 1]
            for i in range(N):
                if w[i] != 0 and earned[i] != 0:
                    taken += 1
                    hits += int(np.sign(w[i]) == np.sign(earned[i]))
            net.append(float(w @ earned) - cost * turn[-1])
    return np.array(net), np.array(turn), hits, taken


def _assert_metrics(m, net, turn, hits, taken, ppy):
    r = pd.Series(net)
    equity = (1 + r).cumprod()
    total = equity.iloc[-1] - 1
    annual = (1 + total) ** (ppy / len(r)) - 1
    drawdown = (equity / np.maximum(equity.cummax(), 1.0) - 1).min()
    downside = math.sqrt((np.minimum(r, 0) ** 2).mean())
    want = {"total_return": total, "annual_return": annual, "annual_volatility": r.std() * math.sqrt(ppy),
            "sharpe": r.mean() / r.std() * math.sqrt(ppy), "sortino": r.mean() / downside * math.sqrt(ppy),
            "max_drawdown": drawdown, "calmar": annual / abs(drawdown), "turnover": turn.mean(),
            "annual_turnover": turn.mean() * ppy, "hit_rate": hits / taken,
            "cost_drag": (turn * COST).sum()}
    for key, v in want.items():
        assert m[key] == pytest.approx(v, rel=1e-9, abs=1e-13), key


def _panel(seed, T=60, N=6, H=3):
    """Log returns (NaN: no row) of symbols that list late, leave early and miss dates, a date where one
    symbol has a row, and forecasts of H steps rounded to ties, with zeros, NaN and +inf; volatilities
    with zeros."""
    rng = np.random.default_rng(seed)
    R = rng.normal(0, 0.02, (T, N))
    for i in range(N):
        R[: rng.integers(0, T // 3) if rng.random() < 0.5 else 0, i] = np.nan
        R[T - rng.integers(1, T // 3) if rng.random() < 0.5 else T:, i] = np.nan
        R[rng.random(T) < 0.08, i] = np.nan
    R[T // 2, 1:] = np.nan
    R[T // 2, 0] = 0.01
    R = R[np.isfinite(R).any(axis=1)]
    T = len(R)
    sig = np.round(rng.normal(0, 1, (T, N, H)), 1)
    sig[rng.random((T, N)) < 0.05] = 0.0
    sig[rng.random((T, N)) < 0.05, 0] = np.nan
    sig[rng.random((T, N)) < 0.02, 0] = np.inf
    vol = np.abs(rng.normal(0.02, 0.01, (T, N)))
    vol[rng.random((T, N)) < 0.05] = 0.0
    return R, sig, vol


BOOKS = [("sign", False, 1, "step1", 1.0, 0), ("sign", True, 3, "mean", 1.0, 0),
         ("vol_scaled", False, 1, "step1", 1.0, 0), ("vol_scaled", True, 4, "mean", 2.0, 0),
         ("topk", False, 1, "step1", 1.0, 0), ("topk", True, 3, "mean", 1.0, 0), ("topk", False, 2, "step1", 1.5, 0),
         ("topk", False, 1, "step1", 1.0, 1), ("topk", True, 1, "step1", 1.0, 2), ("topk", False, 3, "mean", 1.0, 1)]


def _settings(rule, long_only, every, signal, gross, dropout):
    o = [f"backtest_long_only={str(long_only).lower()}", f"backtest_rebalance={every}", f"backtest_signal={signal}",
         f"backtest_max_gross={gross}"]
    if rule == "topk":
        return o + ["backtest_portfolio=topk", "backtest_topk=2", f"backtest_topk_dropout={dropout}"]
    return o + ["backtest_portfolio=per_symbol", f"backtest_positions={rule}"]


@pytest.mark.parametrize("seed", [0, 7, 19])
@pytest.mark.parametrize("rule,long_only,every,signal,gross,dropout", BOOKS)
def test_a_stressed_panel_is_booked_as_the_readme_says(seed, rule, long_only, every, signal, gross, dropout):
    R, sig, vol = _panel(seed)
    res = backtest_forecasts(_forecasts(_days(len(R)), R, sig, vol), _ev(*_settings(rule, long_only, every, signal, gross, dropout)))
    S = sig[:, :, 0] if signal == "step1" else sig.mean(axis=2)
    net, turn, hits, taken = _reference(R, S, vol, rule, long_only, gross, every, dropout=dropout)
    np.testing.assert_allclose(res["curves"]["model"][1], net, rtol=0, atol=1e-13)
    assert res["settings"]["periods_per_year"] == 252
    _assert_metrics(res["strategies"]["model"], net, turn, hits, taken, 252)
    ones = np.where(np.isfinite(R), 1.0, np.nan)
    np.testing.assert_allclose(res["curves"]["buy_and_hold"][1], _reference(R, ones, every=10**9, long_only=True)[0],
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(res["curves"]["equal_weight"][1], _reference(R, ones, long_only=True, gross=gross, cost=0.0)[0],
                               rtol=0, atol=1e-13)


@pytest.mark.parametrize("cuts", [[5, 6], [1], [20, 41], [58]])
@pytest.mark.parametrize("rule,long_only,every,signal,gross,dropout", [BOOKS[0], BOOKS[3], BOOKS[7]])
def test_books_started_afresh_are_booked_part_by_part(cuts, rule, long_only, every, signal, gross, dropout):
    R, sig, vol = _panel(3)
    T = len(R)
    dates = _days(T)
    res = backtest_forecasts(_forecasts(dates, R, sig, vol), _ev(*_settings(rule, long_only, every, signal, gross, dropout)),
                             starts=dates[cuts])
    S = sig[:, :, 0] if signal == "step1" else sig.mean(axis=2)
    parts = list(zip([0, *cuts], [*cuts, T]))
    net, turn, hits, taken = _reference(R, S, vol, rule, long_only, gross, every, dropout=dropout, parts=parts)
    assert len(net) == T - len(parts)
    np.testing.assert_allclose(res["curves"]["model"][1], net, rtol=0, atol=1e-13)
    _assert_metrics(res["strategies"]["model"], net, turn, hits, taken, 252)


def test_rows_without_a_window_are_earned_through_the_close():
    rng = np.random.default_rng(5)
    T, N = 40, 3
    dates = _days(T)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, N)), axis=0))
    bar = np.vstack([np.zeros(N), np.diff(np.log(close), axis=0)])  # each row's return over the row before
    window = np.ones((T, N), dtype=bool)
    window[[5, 6, 20], 0] = False  # rows with a price and no window (a session's edge under data.max_gap)
    window[12, 1] = False
    window[30:, 2] = False  # its windows end: sold at the last one
    prev_time = np.broadcast_to(np.concatenate([[NO_TIME], dates[:-1]])[:, None], (T, N))
    sig = rng.normal(0, 1, (T, N, 1))
    res = backtest_forecasts(_forecasts(dates, np.where(window, bar, np.nan), sig, close=close, prev_time=prev_time),
                             _ev("backtest_portfolio=per_symbol"))
    R = np.full((T, N), np.nan)  # the panel of windows: the return over the symbol's previous window, from the closes
    for i in range(N):
        rows = np.flatnonzero(window[:, i])
        R[rows[0], i] = bar[rows[0], i]
        R[rows[1:], i] = np.log(close[rows[1:], i] / close[rows[:-1], i])
    np.testing.assert_allclose(res["curves"]["model"][1], _reference(R, sig[:, :, 0])[0], rtol=0, atol=1e-13)


def test_intraday_bars_annualise_on_the_bars_of_a_year():
    """Ten sessions of 5-minute bars, 09:30 to 16:00 New York: 78 bars a session, 252 sessions a year."""
    stamps = np.concatenate([pd.date_range(f"{d.date()} 09:30", f"{d.date()} 16:00", freq="5min", inclusive="left",
                                           tz="America/New_York").tz_convert("UTC").as_unit("ns").asi8
                             for d in pd.bdate_range("2024-03-04", periods=10)])
    rng = np.random.default_rng(2)
    R = rng.normal(0, 0.001, (len(stamps), 3))
    sig = rng.normal(0, 1, (len(stamps), 3, 1))
    res = backtest_forecasts(_forecasts(stamps, R, sig), _ev())
    assert res["settings"]["periods_per_year"] == 78 * 252
    net, turn, hits, taken = _reference(R, sig[:, :, 0])
    np.testing.assert_allclose(res["curves"]["model"][1], net, rtol=0, atol=1e-13)
    _assert_metrics(res["strategies"]["model"], net, turn, hits, taken, 78 * 252)


# --------------------------------------------------------------------------------------------
# the look-ahead warning reads the hit rate against what the positions hit by chance


def _rising(T=300, N=4, up=0.85, seed=0):
    """Daily log returns of a market that rises on ``up`` of its days, by small amounts (a Treasury-bill fund)."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(4e-4, 3e-4, (T, N))) * np.where(rng.random((T, N)) < up, 1.0, -1.0)


def test_a_book_long_a_rising_market_is_not_said_to_look_ahead():
    """Long every symbol of a market that rose on 85% of its days hits 0.85 without a forecast: buy-and-hold,
    the equal-weight universe and a model that is always long were each warned that their hit rate was
    implausible for a forecast and to check the signal for look-ahead."""
    R = _rising()
    T, N = R.shape
    res = backtest_forecasts(_forecasts(_days(T), R, np.ones((T, N, 1))), _ev())
    for name in ("model", "buy_and_hold", "equal_weight"):
        m = res["strategies"][name]
        assert m["hit_rate"] > 0.8, name
        assert "look-ahead" not in m.get("warning", ""), (name, m.get("warning"))


@pytest.mark.parametrize("setting", ["backtest_long_only=false", "backtest_long_only=true"])
@pytest.mark.parametrize("up", [0.5, 0.85])
def test_a_signal_that_is_the_next_return_is_still_said_to_look_ahead(setting, up):
    R = _rising(up=up, seed=1)
    T, N = R.shape
    leak = np.vstack([R[1:], np.zeros((1, N))])[:, :, None]  # the return of the period the weights are held over
    m = backtest_forecasts(_forecasts(_days(T), R, leak), _ev(setting))["strategies"]["model"]
    assert m["hit_rate"] == 1.0
    assert "check the signal for look-ahead" in m["warning"]
    honest = backtest_forecasts(_forecasts(_days(T), R, np.random.default_rng(2).normal(0, 1, (T, N, 1))), _ev(setting))
    assert "look-ahead" not in honest["strategies"]["model"].get("warning", "")
