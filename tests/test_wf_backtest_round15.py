"""The pooled backtest of a walk-forward, recomputed by hand from the folds' own forecasts: one book over
folds whose scored rows meet, a book started afresh where evaluation.max_test_windows left rows unscored
between two folds, every date in calendar order and booked once."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts, label
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402

COST = (5.0 + 2.0) / 1e4  # the default cost + slippage, per unit of traded notional
STRATEGIES = ("model", "drift", "repeat")  # forecasts' names in Forecasts.pred (naive:drift, naive:repeat)


def run_folds(tmp_path, monkeypatch, scheme, *extra):
    """A 2-fold walk-forward of a ridge model on the bundled AEM and WPM → (walkforward.json, each fold's
    out-of-sample Forecasts)."""
    parts = []
    real = wf.evaluate_test

    def evaluate(run):
        out = real(run)
        parts.append(out[1])
        return out

    monkeypatch.setattr(wf, "evaluate_test", evaluate)
    cfg = load_config(None, tiny(tmp_path / "wf", "model.type=ridge", "evaluation.report=false",
                                 "evaluation.intervals=[]", "evaluation.baseline_max_windows=200", *extra))
    wf.walk_forward(cfg, 2, scheme=scheme)
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text(encoding="utf-8"))
    return saved, parts


def by_hand(books, name):
    """Net per-period returns of the sign rule, long-short, gross 1, on the forecasts ``name`` of ``books``
    (each a list of Forecasts traded as one book, the books one after another): weights ±1/N decided at the
    close of each date, earning each symbol's close-to-close change to the book's next date, costs on the
    distance from the drifted weights, the first date's entry included, the last date opening no period."""
    net = []
    for parts in books:
        table = {}
        for fc in parts:
            for j in range(len(fc.dates)):
                key = (int(fc.dates[j]), fc.symbols[fc.symbol_ids[j]])
                assert key not in table  # no (date, symbol) forecast twice
                table[key] = (float(fc.pred[name][j, 0]), float(fc.last_close[j]))
        dates = sorted({d for d, _ in table})
        symbols = sorted({s for _, s in table})
        assert all((d, s) in table for d in dates for s in symbols)  # both symbols on every date
        w = np.array([[np.sign(table[d, s][0]) / len(symbols) for s in symbols] for d in dates])
        close = np.array([[table[d, s][1] for s in symbols] for d in dates])
        simple = close[1:] / close[:-1] - 1.0  # (T - 1, N): the period opened at date t ends at date t + 1
        drifted = np.zeros(len(symbols))
        for t in range(len(dates) - 1):
            gross = float(w[t] @ simple[t])
            net.append(gross - np.abs(w[t] - drifted).sum() * COST)
            drifted = w[t] * (1.0 + simple[t]) / (1.0 + gross)
    return np.array(net)


def check(strategy, r, ppy):
    """A pooled strategy's figures against the returns ``r`` computed by hand (from the closes, in float64;
    the backtest reads a row's return from the stored float32 log return, so they agree to about 1e-7)."""
    equity = np.cumprod(1.0 + r)
    assert strategy["n_periods"] == len(r)
    assert strategy["total_return"] == pytest.approx(equity[-1] - 1.0, rel=1e-6, abs=1e-9)
    drawdown = equity / np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:] - 1.0
    assert strategy["max_drawdown"] == pytest.approx(drawdown.min(), rel=1e-6, abs=1e-9)
    if r.std() > 0:
        assert strategy["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ppy), rel=1e-5)


def test_an_expanding_walk_forward_is_one_book_over_its_folds(tmp_path, monkeypatch):
    """Folds whose test blocks follow one another are one book: the folds' dates in calendar order, each
    once, and the period from a fold's last forecast to the next fold's first earns the close's change
    over the H - 1 rows between them."""
    saved, parts = run_folds(tmp_path, monkeypatch, "expanding")
    bt = saved["pooled"]["backtest"]
    assert [f["test_cut"] for f in saved["folds"]] == [False, False]
    assert "restarts" not in bt["settings"] and "backtest_note" not in saved["pooled"]
    assert parts[0].dates.max() < parts[1].dates.min()  # fold 2 scores later dates than fold 1
    for name in STRATEGIES:
        check(bt["strategies"][label(name)], by_hand([parts], name), bt["settings"]["periods_per_year"])


def test_a_cut_purged_kfold_books_each_fold_apart_in_calendar_order(tmp_path, monkeypatch):
    """evaluation.max_test_windows keeps each fold's last dates: the pooled backtest held the last positions
    of fold 1 over the years of fold 2's unscored rows as one period, and printed total returns of -308% and
    drawdowns of -314% for books of gross 1. Each fold's scored dates are now a book of their own, the
    period between them unbooked, and the folds are pooled in calendar order."""
    saved, parts = run_folds(tmp_path, monkeypatch, "purged_kfold", "evaluation.max_test_windows=100")
    bt = saved["pooled"]["backtest"]
    assert [f["test_cut"] for f in saved["folds"]] == [True, True]
    books = sorted(([p] for p in parts), key=lambda b: b[0].dates.min())  # calendar order
    assert books[0][0].dates.max() < books[1][0].dates.min()
    ppy = bt["settings"]["periods_per_year"]
    for name in STRATEGIES:
        check(bt["strategies"][label(name)], by_hand(books, name), ppy)
    for key, m in bt["strategies"].items():  # no book of gross <= 1 traded each period loses more than it has
        assert m["total_return"] > -1.0 and m["max_drawdown"] >= -1.0, (key, m["total_return"], m["max_drawdown"])
    first = np.datetime64(int(books[1][0].dates.min()), "ns").astype("datetime64[D]")
    assert [d[:10] for d in bt["settings"]["restarts"]] == [str(first)]
    assert "after fold(s) 1:" in saved["pooled"]["backtest_note"]
    text = wf.format_walkforward(saved)
    assert text.count(saved["pooled"]["backtest_note"]) == 1 and str(first) in text


def minute_forecasts(first_day: str, n_days: int, seed: int):
    """Forecasts of two symbols' one-minute bars, 09:30-16:00 New York on ``n_days`` weekdays from ``first_day``."""
    days = pd.bdate_range(first_day, periods=n_days)
    t = np.concatenate([pd.date_range(d.tz_localize("America/New_York") + pd.Timedelta("09:30:00"), periods=390,
                                      freq="1min").tz_convert("UTC").tz_localize(None).values.astype("datetime64[ns]")
                        for d in days]).astype(np.int64)
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 1e-3, (len(t), 2))
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    W = 2 * len(t)
    return Forecasts(pred={"model": rng.normal(0.0, 1e-3, (W, 1))}, true=rng.normal(0.0, 1e-3, (W, 1)),
                     dates=np.repeat(t, 2), symbol_ids=np.tile([0, 1], len(t)), symbols=["A", "B"],
                     last_return=r.reshape(-1), past_vol=np.full(W, 1e-3), last_close=close.reshape(-1))


def test_a_book_started_afresh_is_annualised_on_its_own_bars():
    """Minute bars of two months a year apart, the book started afresh on the second: each part is booked as
    its own backtest, and the bars a year are those of the parts' sessions (about 98,000), not the scored bars
    counted over the whole year between them (22,700: every annualised figure off by a factor of 2)."""
    ev = load_config(None, []).evaluation
    a, b = minute_forecasts("2024-01-02", 30, 0), minute_forecasts("2024-11-01", 25, 1)
    pooled = backtest_forecasts(Forecasts.concat([a, b]), ev, starts=[int(b.dates.min())])
    alone = [backtest_forecasts(a, ev), backtest_forecasts(b, ev)]
    ppy = pooled["settings"]["periods_per_year"]
    assert ppy == alone[0]["settings"]["periods_per_year"] and 90_000 < ppy < 100_000
    first = np.datetime64(int(b.dates.min()), "ns").astype("datetime64[s]")
    assert pooled["settings"]["restarts"] == [str(first).replace("T", " ")]  # 13:30 UTC: with its time of day
    for name in ("model", "buy_and_hold", "equal_weight"):
        dates, returns = pooled["curves"][name]
        np.testing.assert_array_equal(dates, np.concatenate([p["curves"][name][0] for p in alone]))
        np.testing.assert_allclose(returns, np.concatenate([p["curves"][name][1] for p in alone]), rtol=0, atol=1e-15)
