"""The backtest against an independent book kept in money, date by date, on random panels (a symbol that
starts late, one that ends early, gaps, ties, zero forecasts, costs, top-k with k above the symbols),
the annualisation of bars that are not daily although their spacing is near a day, and the report's
per-date IC series."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval import metrics as M
from hftraining.eval.backtest import backtest_forecasts, infer_periods_per_year
from hftraining.eval.forecasts import Forecasts
from hftraining.eval.intervals import interval_report


def _ev(*overrides):
    return load_config(None, [f"evaluation.{o}" for o in overrides]).evaluation


def _random_forecasts(seed, T=40, N=5, H=3):
    """Forecasts of a panel with a late start (symbol 0), an early end (symbol 1), gaps, ties and zeros."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8
    have = np.ones((T, N), dtype=bool)
    have[: rng.integers(1, 8), 0] = False
    have[T - rng.integers(2, 10):, 1] = False
    for _ in range(6):
        have[rng.integers(1, T - 1), rng.integers(2, N)] = False
    R = rng.normal(0, 0.02, (T, N))
    sig = np.round(rng.normal(0, 1, (T, N, H)), 1)  # ties
    sig[rng.random((T, N)) < 0.15] = 0.0  # zero forecasts
    t, i = np.nonzero(have)
    W = len(t)
    return Forecasts(pred={"model": sig[t, i], "zero": np.zeros((W, H))}, true=np.zeros((W, H)), dates=dates[t],
                     symbol_ids=i, symbols=[f"S{j}" for j in range(N)], last_return=R[t, i],
                     past_vol=rng.uniform(0.005, 0.03, W), last_close=np.full(W, 100.0))


def _money_book(fc, rule, *, long_only, gross, every, cost, k=1, signal="step1", benchmark=False, once=False):
    """The strategy kept as money per symbol and cash, one date at a time: at each close, every symbol with a
    row is marked with the return that ends there, then the book trades to its targets (a symbol without a
    row keeps what it holds; one at its last row is sold) and pays ``cost`` of the money traded, pro rata
    out of the whole book. Returns (net, gross, turnover, hits, positions) per period, each period opened
    by a decision date."""
    p = fc.pred["model"]
    df = pd.DataFrame({"date": fc.dates, "sym": fc.symbol_ids, "ret": fc.last_return, "vol": fc.past_vol,
                       "sig": 1.0 if benchmark else (p[:, 0] if signal == "step1" else p.mean(axis=1))})
    dates = np.sort(df["date"].unique())
    N, T = len(fc.symbols), len(dates)
    wide = {c: df.pivot(index="date", columns="sym", values=c).reindex(index=dates, columns=range(N)).to_numpy()
            for c in ("ret", "sig", "vol")}
    R, S, V = wide["ret"], wide["sig"], wide["vol"]
    have = np.isfinite(R)
    first = np.array([np.flatnonzero(have[:, i])[0] for i in range(N)])
    last = np.array([np.flatnonzero(have[:, i])[-1] for i in range(N)])
    money, cash = np.zeros(N), 1.0
    last_sig, last_vol = np.full(N, np.nan), np.full(N, np.nan)
    longs, shorts = [], []
    net, gross_r, turn = [], [], []
    hits = taken = 0
    for t in range(T):
        if t > 0:  # the period opened at t - 1 ends: the returns that end at t
            for i in np.flatnonzero(have[t] & (money != 0) & (R[t] != 0)):
                taken += 1
                hits += int(np.sign(money[i]) == np.sign(R[t, i]))
            money[have[t]] *= np.exp(R[t, have[t]])
            E = cash + money.sum()
            net.append(E / start - 1)
            gross_r.append(E / (start - paid) - 1)
            turn.append(traded / start)
        if t == T - 1:
            break
        E = cash + money.sum()
        gap = ~have[t] & (t > first) & (t < last)
        closing = have[t] & (t == last)
        ok = have[t] & ~closing
        last_sig[have[t]] = np.where(closing[have[t]], np.nan, S[t, have[t]])
        last_vol[have[t]] = V[t, have[t]]
        target = money / E
        if (t == 0) if once else (t % every == 0):
            new = np.zeros(N)
            if rule in ("sign", "vol_scaled"):
                f = np.where(ok | gap, last_sig, np.nan)
                raw = np.nan_to_num(f)
                if rule == "sign":
                    raw = np.sign(raw)
                else:
                    v = np.where(ok | gap, last_vol, np.nan)
                    usable = np.isfinite(f) & np.isfinite(v) & (v > 0)
                    raw = np.where(usable, raw / np.where(usable, v, 1.0), 0.0)
                raw = np.maximum(raw, 0.0) if long_only else raw
                if rule == "sign":
                    new = raw / max(np.isfinite(f).sum(), 1) * gross
                elif np.abs(raw).sum() > 0:
                    new = raw / np.abs(raw).sum() * gross
            else:  # top-k without dropout: ties by symbol index, held names without a row keep their places
                kept_l, kept_s = [i for i in longs if gap[i]], [i for i in shorts if gap[i]]
                cand = [i for i in range(N) if ok[i] and np.isfinite(S[t, i])]
                kk = k if long_only else min(k, (len(cand) + len(kept_l) + len(kept_s)) // 2)
                if not cand or len({S[t, i] for i in cand}) == 1:
                    longs, shorts = kept_l, kept_s
                else:
                    longs = kept_l + sorted(cand, key=lambda i: (-S[t, i], i))[: max(kk - len(kept_l), 0)]
                    rest = sorted((i for i in cand if i not in longs), key=lambda i: (S[t, i], i))
                    shorts = [] if long_only else kept_s + rest[: max(kk - len(kept_s), 0)]
                side = gross if long_only else gross / 2
                for names, sign in ((longs, 1.0), (shorts, -1.0)):
                    for i in names:
                        new[i] = sign * side / len(names)
            room, traded_w = max(gross - np.abs(target[gap]).sum(), 0.0), np.abs(new[~gap]).sum()
            if traded_w > room:
                new[~gap] *= room / traded_w
            target = np.where(gap, target, new)
        target = np.where(closing, 0.0, target)
        traded = float(np.abs(target * E - money).sum())
        paid = traded * cost
        keep = 1.0 - paid / E
        money, cash = target * E * keep, (E - (target * E).sum()) * keep
        start = E
    return np.array(net), np.array(gross_r), np.array(turn), hits, taken


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_strategy_equals_a_book_kept_in_money_on_a_ragged_random_panel(seed):
    fc = _random_forecasts(seed)
    cost = 10e-4  # 7 + 3 bps
    grid = [("sign", 1), ("vol_scaled", 1), ("topk", 1), ("topk", 2), ("topk", 9)]
    for (rule, k), long_only, every, signal in itertools.product(grid, [False, True], [1, 3], ["step1", "mean"]):
        o = [f"backtest_long_only={str(long_only).lower()}", f"backtest_rebalance={every}", "backtest_cost_bps=7",
             "backtest_slippage_bps=3", f"backtest_signal={signal}", "backtest_max_gross=1.5"]
        o += (["backtest_portfolio=topk", f"backtest_topk={k}"] if rule == "topk"
              else ["backtest_portfolio=per_symbol", f"backtest_positions={rule}"])
        res = backtest_forecasts(fc, _ev(*o))
        net, gross, turn, hits, taken = _money_book(fc, rule, long_only=long_only, gross=1.5, every=every, cost=cost,
                                                    k=k, signal=signal)
        what = f"{rule} k={k} long_only={long_only} every={every} {signal}"
        got, m = res["curves"]["model"][1], res["strategies"]["model"]
        # the backtest charges the costs of a period on its return (gross - cost × turnover); the money book
        # pays them out of the capital, which differs by cost × turnover × the period's return
        np.testing.assert_allclose(got, gross - cost * turn, rtol=0, atol=1e-14, err_msg=what)
        assert np.all(np.abs(got - net) <= cost * turn * np.abs(gross) + 1e-14), what
        assert m["turnover"] == pytest.approx(turn.mean(), rel=1e-12, abs=1e-15), what
        assert m["hit_rate"] == (hits / taken if taken else pytest.approx(math.nan, nan_ok=True)), what
        r = pd.Series(gross - cost * turn)
        equity = (1 + r).cumprod()
        assert m["total_return"] == pytest.approx(equity.iloc[-1] - 1, rel=1e-12, abs=1e-13), what
        assert m["sharpe"] == pytest.approx(r.mean() / r.std() * math.sqrt(252), rel=1e-9), what
        peak = pd.concat([pd.Series([1.0]), equity]).cummax().iloc[1:].to_numpy()
        assert m["max_drawdown"] == pytest.approx((equity / peak - 1).min(), rel=1e-12, abs=1e-13), what
    res = backtest_forecasts(fc, _ev("backtest_cost_bps=7", "backtest_slippage_bps=3", "backtest_portfolio=per_symbol"))
    _, gross, turn, *_ = _money_book(fc, "sign", long_only=True, gross=1.0, every=1, cost=cost, benchmark=True, once=True)
    np.testing.assert_allclose(res["curves"]["buy_and_hold"][1], gross - cost * turn, rtol=0, atol=1e-14)
    _, gross, *_ = _money_book(fc, "sign", long_only=True, gross=1.0, every=1, cost=0.0, benchmark=True)
    np.testing.assert_allclose(res["curves"]["equal_weight"][1], gross, rtol=0, atol=1e-14)


def _stamps(freq, periods, weekdays_only=False):
    idx = pd.date_range("2024-01-01", periods=periods, freq=freq, tz="UTC")
    return (idx[idx.day_of_week < 5] if weekdays_only else idx).as_unit("ns").asi8


def test_twelve_hour_and_several_day_bars_annualise_by_their_own_frequency():
    # 12-hour bars (Binance's 12h) are two a day, not daily bars: a Sharpe on √365 was too small by √2
    assert infer_periods_per_year(_stamps("12h", 800))[0] == 2 * 365
    assert infer_periods_per_year(_stamps("12h", 800, weekdays_only=True))[0] == 2 * 252
    # 3-day bars (Binance's 3d) are not daily bars either: √365 made a Sharpe √3 too large
    assert infer_periods_per_year(_stamps("3D", 200))[0] == pytest.approx(365.25 / 3)
    assert infer_periods_per_year(_stamps("2D", 200))[0] == pytest.approx(365.25 / 2)
    # daily bars stay daily, a short split whose median spacing is a weekend included
    for n in (2, 3):  # Friday, Monday (, Tuesday): a single spacing of 3 days is a weekend
        assert infer_periods_per_year(pd.bdate_range("2024-01-05", periods=n, tz="UTC").as_unit("ns").asi8)[0] == 252
    assert infer_periods_per_year(_stamps("D", 400))[0] == 365
    local = pd.bdate_range("2024-01-01", periods=400, tz="America/New_York").tz_convert("UTC")  # 23 and 25 hours
    assert infer_periods_per_year(local.as_unit("ns").asi8)[0] == 252


def test_the_report_ic_series_from_shared_date_codes_are_bit_identical():
    # the report sorts the dates once for the IC and the rank IC series: the same floats, dates in no order,
    # ties, a constant date, a date with a NaN and one with too few symbols
    rng = np.random.default_rng(0)
    dates = rng.integers(0, 60, 900).astype(np.int64) * 86_400_000_000_000
    pred, true = np.round(rng.normal(size=900), 1), rng.normal(size=900)
    pred[dates == dates[0]] = 0.5
    true[np.flatnonzero(dates == dates[1])[0]] = np.nan
    keep = ~((dates == dates[2]) & (np.arange(900) % 7 != 0))
    pred, true, dates = pred[keep], true[keep], dates[keep]
    codes = np.unique(dates, return_inverse=True)[1]
    for rank in (False, True):
        d0, ic0 = M.cross_sectional_ic_series(pred, true, dates, min_size=M.MIN_CROSS_SECTION, rank=rank)
        d1, ic1 = M.cross_sectional_ic_series(pred, true, dates, min_size=M.MIN_CROSS_SECTION, rank=rank, date_codes=codes)
        np.testing.assert_array_equal(d0, d1)
        assert ic0.tobytes() == ic1.tobytes()


def test_coverage_tests_read_only_the_step_1_misses_that_do_not_overlap():
    # step h of one date realises the return of step h - 1 of the next: pooled over the steps, a miss would
    # enter Kupiec and Christoffersen up to H times as independent draws (p-values too small); step 1 alone
    rng = np.random.default_rng(0)
    T, N, H = 120, 6, 5
    true = rng.normal(size=(T * N, H))
    dates, sym = np.repeat(np.arange(T), N), np.tile(np.arange(N), T)
    lo, hi = np.full_like(true, -1.645), np.full_like(true, 1.645)
    base = interval_report({0.9: (lo, hi)}, true, dates, sym, "split")["levels"]["0.9"]
    hi2 = hi.copy()
    hi2[:, 1:] = -10.0  # every later step misses
    other = interval_report({0.9: (lo, hi2)}, true, dates, sym, "split")["levels"]["0.9"]
    for test in ("kupiec", "christoffersen"):
        assert other[test]["p_value"] == base[test]["p_value"]
    assert other["coverage_per_step"][1] == 0.0
