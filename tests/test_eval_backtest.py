"""Backtest: hand-computed performance figures, costs, position rules, and the timing discipline
(a planted look-ahead is caught; an alignment off by one period in either direction fails here)."""

import base64
import json
import math
import re
import shutil
import struct

import numpy as np
import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import EvaluationConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.pipeline import prepare
from hftraining.eval.backtest import (
    Simulation, backtest_forecasts, format_backtest, infer_periods_per_year, information_ratio, performance, positions,
    simulate, topk_weights,
)
from hftraining.eval.forecasts import Forecasts, collect_forecasts
from hftraining.eval.report import write_report
from hftraining.workflows.evaluate_run import evaluate_and_backtest, evaluation_config
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402


def test_performance_matches_hand_computation():
    r = np.array([0.01, -0.02, 0.03, 0.0])
    sim = Simulation(np.arange(4), r, r, np.array([1.0, 0.0, 0.5, 0.5]), hits=2, positions_taken=3)
    m = performance(sim, 252)
    total = 1.01 * 0.98 * 1.03 - 1.0  # = 0.019494
    assert m["total_return"] == pytest.approx(0.019494, abs=1e-12)
    assert m["annual_return"] == pytest.approx((1 + total) ** (252 / 4) - 1)
    sd = math.sqrt(((0.005) ** 2 + 0.025**2 + 0.025**2 + 0.005**2) / 3)  # mean 0.005, ddof 1
    assert m["annual_volatility"] == pytest.approx(sd * math.sqrt(252))
    assert m["sharpe"] == pytest.approx(0.005 / sd * math.sqrt(252))
    assert m["sortino"] == pytest.approx(0.005 / math.sqrt(0.02**2 / 4) * math.sqrt(252))  # downside dev 0.01
    assert m["max_drawdown"] == pytest.approx(0.98 - 1.0)  # 1.01 → 0.9898 is the deepest fall: -2%
    assert m["calmar"] == pytest.approx(m["annual_return"] / 0.02)
    assert m["turnover"] == pytest.approx(0.5) and m["hit_rate"] == pytest.approx(2 / 3)


def test_drawdown_counts_from_the_starting_capital():
    sim = Simulation(np.arange(2), np.array([-0.1, 0.05]), np.array([-0.1, 0.05]), np.zeros(2), 0, 0)
    assert performance(sim, 252)["max_drawdown"] == pytest.approx(-0.1)


def test_simulate_timing_and_costs_by_hand():
    # one asset; weights decided at t = 0, 1, 2; returns[t] ends at t
    w = np.array([[1.0], [1.0], [0.0]])
    R = np.log(np.array([[1.0], [1.1], [0.9]]))
    sim = simulate(w, R, np.arange(3), cost_bps=8, slippage_bps=2)
    # period 1 holds w[0] over +10%, paying 10 bps to enter; period 2 holds w[1] (no trade: the
    # weight drifted to exactly 1) over -10%
    np.testing.assert_allclose(sim.gross_returns, [0.1, -0.1])
    np.testing.assert_allclose(sim.turnover, [1.0, 0.0])
    np.testing.assert_allclose(sim.returns, [0.1 - 0.001, -0.1])
    assert sim.hits == 1 and sim.positions_taken == 2


def test_drifted_weights_are_the_base_of_turnover():
    # two assets at 50/50; asset 0 gains 20%, asset 1 is flat: before rebalancing the weights are
    # 0.6/1.1 and 0.5/1.1; going back to 50/50 trades |0.5 - 0.6/1.1| + |0.5 - 0.5/1.1|
    w = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    R = np.log(np.array([[1, 1], [1.2, 1.0], [1.0, 1.0]]))
    sim = simulate(w, R, np.arange(3))
    assert sim.turnover[1] == pytest.approx(abs(0.5 - 0.6 / 1.1) + abs(0.5 - 0.5 / 1.1))


def test_position_rules_respect_the_gross_cap():
    sig = np.array([[0.02, -0.01, np.nan, 0.0], [0.0, 0.0, 0.0, 0.0]])
    vol = np.array([[0.01, 0.02, 0.01, 0.01], [0.01] * 4])
    w = positions(sig, rule="sign", max_gross=1.0)
    np.testing.assert_allclose(w[0], [1 / 3, -1 / 3, 0, 0])  # 3 symbols have a forecast
    w = positions(sig, rule="sign", long_only=True, max_gross=0.5)
    np.testing.assert_allclose(w[0], [0.5 / 3, 0, 0, 0])
    w = positions(sig, vol, rule="vol_scaled", max_gross=2.0)
    np.testing.assert_allclose(w[0], [2 * 2 / 2.5, -2 * 0.5 / 2.5, 0, 0])  # z = 2, -0.5 → |z| sums to 2.5
    assert np.all(w[1] == 0)  # a flat date stays flat
    w = positions(sig, vol, rule="vol_scaled", long_only=True, max_gross=1.0)
    np.testing.assert_allclose(w[0], [1, 0, 0, 0])
    assert np.all(np.abs(w).sum(axis=1) <= 1.0 + 1e-12)


def _random_panel(T=600, N=6, seed=0):
    rng = np.random.default_rng(seed)
    R = rng.normal(0, 0.01, size=(T, N))
    R[0] = np.nan
    return R


def _hit(signal, R):
    w = positions(signal, rule="sign")
    return performance(simulate(w, R, np.arange(len(R))), 252)


def test_planted_lookahead_is_caught_and_alignment_is_exact():
    R = _random_panel()
    nxt = np.full_like(R, np.nan)
    nxt[:-1] = R[1:]  # the return of the NEXT period: only knowable with a look-ahead
    leaked = _hit(nxt, R)
    # the backtest applies the weights of t to the return of t + 1: a signal that IS that return wins
    # every time (a backtest one period late would make this a coin flip), and is flagged
    assert leaked["hit_rate"] == 1.0 and "look-ahead" in leaked.get("warning", "")
    # the return that ends at t is known at t: it must not predict the next return of an i.i.d.
    # series (a backtest one period early would make this a perfect, flagged strategy)
    now = _hit(R, R)
    assert 0.45 < now["hit_rate"] < 0.55 and "warning" not in now
    two = np.full_like(R, np.nan)
    two[:-2] = R[2:]
    assert 0.45 < _hit(two, R)["hit_rate"] < 0.55  # a leak two periods ahead does not help a one-period hold


@pytest.fixture(scope="module")
def forecasts():
    cfg = load_config(None, ["data.symbols=[AEM, WPM, NIO, PDD]", "data.sequence_length=20", "data.prediction_horizon=3"])
    data = prepare(cfg.data)
    ws = data.test
    return collect_forecasts(None, ws, data.preprocessing.target_scale, 256, pred_scaled=np.zeros((len(ws), 3), np.float32))


def test_window_forecasts_timing_through_backtest_forecasts(forecasts):
    fc = forecasts
    ev = EvaluationConfig(backtest_cost_bps=0, backtest_slippage_bps=0)
    # plant the realised future (target step 1) as the model's forecast: perfect and flagged
    fc.pred["model"] = fc.true.copy()
    res = backtest_forecasts(fc, ev)["strategies"]
    assert res["model"]["hit_rate"] == 1.0 and "warning" in res["model"]
    assert res["model"]["sharpe"] > 5
    # the same strategy driven by information of t (the return that just ended) has no such edge
    fc.pred["model"] = np.repeat(fc.last_return[:, None], 3, axis=1)
    res = backtest_forecasts(fc, ev)["strategies"]
    assert res["model"]["hit_rate"] < 0.6 and "warning" not in res["model"]
    # ... and equals the naive "repeat" forecast (last value), which is exactly that signal
    assert res["model"]["total_return"] == pytest.approx(res["naive:repeat"]["total_return"], rel=1e-6)
    assert res["naive:zero"]["total_return"] == 0.0 and res["naive:zero"]["turnover"] == 0.0
    assert res["buy_and_hold"]["hit_rate"] > 0.3  # long every day: the share of up days


def test_costs_lower_returns_by_turnover(forecasts):
    fc = forecasts
    fc.pred["model"] = np.repeat(fc.last_return[:, None], 3, axis=1)
    free = backtest_forecasts(fc, EvaluationConfig(backtest_cost_bps=0, backtest_slippage_bps=0))["strategies"]["model"]
    paid = backtest_forecasts(fc, EvaluationConfig(backtest_cost_bps=10, backtest_slippage_bps=5))["strategies"]["model"]
    assert paid["cost_drag"] == pytest.approx(free["turnover"] * free["n_periods"] * 15e-4, rel=1e-9)
    assert paid["total_return"] < free["total_return"]


def test_periods_per_year_from_timestamps():
    bdays = pd.bdate_range("2024-01-01", periods=300, tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(bdays)[0] == 252
    days = pd.date_range("2024-01-01", periods=300, freq="D", tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(days)[0] == 365  # crypto trades at weekends
    weeks = pd.date_range("2020-01-03", periods=100, freq="W-FRI", tz="UTC").as_unit("ns").asi8
    assert infer_periods_per_year(weeks)[0] == 52
    hours = pd.date_range("2024-01-01 14:00", periods=7 * 24, freq="h", tz="UTC")
    hours = hours[(hours.day_of_week < 5) & (hours.hour >= 14) & (hours.hour < 21)].as_unit("ns").asi8  # 7 bars a weekday
    assert infer_periods_per_year(hours)[0] == 7 * 252


# --------------------------------------------------------------------------------------------
# the cross-sectional top-k portfolio (TopK-Dropout), the equal-weight universe, the information ratio


def _panel_forecasts(R, sig, H=2, dates=None):
    """Forecasts of a full (T, N) panel: ``R[t]`` the log return that ends at date t, ``sig[t]`` the
    model's forecast made at t (the same for every step), the zero forecast beside it; business days
    in UTC unless ``dates`` (T,) int64 ns."""
    T, N = R.shape
    if dates is None:
        dates = pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8
    W = T * N
    return Forecasts(
        pred={"model": np.repeat(sig.reshape(W, 1), H, axis=1), "zero": np.zeros((W, H))}, true=np.zeros((W, H)),
        dates=np.repeat(dates, N), symbol_ids=np.tile(np.arange(N), T), symbols=[f"S{i}" for i in range(N)],
        last_return=R.reshape(W), past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0),
    )


def _ev(*overrides):
    return load_config(None, [f"evaluation.{o}" for o in overrides]).evaluation


def _oracle(T=30, N=5, seed=0):
    """Log returns (T, N) and a forecast that ranks the symbols exactly by their next-period return."""
    rng = np.random.default_rng(seed)
    R = rng.normal(0, 0.02, size=(T, N))
    sig = np.empty_like(R)
    sig[:-1] = R[1:]
    sig[-1] = rng.normal(size=N)  # the last date trades nothing
    return R, sig


FREE = ("backtest_cost_bps=0", "backtest_slippage_bps=0")


def test_topk_long_short_earns_half_best_minus_worst_net_of_costs_by_hand():
    R, sig = _oracle()
    T, N = R.shape
    res = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=1",
                                                           "backtest_cost_bps=8", "backtest_slippage_bps=2"))
    nxt = np.expm1(R[1:])  # simple return of each period t → t+1
    best, worst = nxt.argmax(axis=1), nxt.argmin(axis=1)
    gross = (nxt.max(axis=1) - nxt.min(axis=1)) / 2
    # costs by hand: each date trades to +0.5 best / -0.5 worst from the last book after it moved with the returns
    cost, before = np.empty(T - 1), {}
    for t in range(T - 1):
        target = {best[t]: 0.5, worst[t]: -0.5}
        cost[t] = sum(abs(target.get(i, 0.0) - before.get(i, 0.0)) for i in range(N)) * 10e-4
        before = {i: w * (1 + nxt[t, i]) / (1 + gross[t]) for i, w in target.items()}
    assert cost[0] == pytest.approx(1e-3)  # the first date buys 0.5 and sells 0.5 short: 10 bps of 1
    np.testing.assert_allclose(res["curves"]["model"][1], gross - cost, rtol=1e-12, atol=1e-15)
    assert res["settings"]["portfolio"] == "topk" and res["settings"]["topk"] == 1
    zero = res["strategies"]["naive:zero"]  # every forecast equal: no ranking, no position
    assert zero["turnover"] == 0.0 and zero["total_return"] == 0.0


def test_topk_long_only_earns_the_mean_of_the_top_k():
    R, sig = _oracle()
    fc = _panel_forecasts(R, sig)
    top2 = np.sort(np.expm1(R[1:]), axis=1)[:, -2:].mean(axis=1)
    for gross in (1.0, 0.5):
        res = backtest_forecasts(fc, _ev("backtest_portfolio=topk", "backtest_topk=2", "backtest_long_only=true",
                                         f"backtest_max_gross={gross}", *FREE))
        np.testing.assert_allclose(res["curves"]["model"][1], gross * top2, rtol=1e-12, atol=1e-15)


def _swaps(books, side):
    return [len(set(a[side]) - set(b[side])) for a, b in zip(books[:-1], books[1:])]


def test_topk_dropout_swaps_at_most_n_names_per_side_the_qlib_way():
    rng = np.random.default_rng(4)
    T, N, k = 40, 8, 2
    sig = rng.normal(size=(T, N))
    _, free = topk_weights(sig, k)
    w, books = topk_weights(sig, k, dropout=1)
    assert max(_swaps(free, 0)) > 1 and max(_swaps(free, 1)) > 1  # without the limit, whole sides turn over
    assert max(_swaps(books, 0)) == 1 and max(_swaps(books, 1)) == 1  # with it: one name per side at most
    assert all(len(lo) == k and len(sh) == k and not set(lo) & set(sh) for lo, sh in books)
    # Qlib's TopkDropoutStrategy, independently: sell the worst-ranked held name if a non-held one ranks better,
    # buying the best of those (the short side mirrored; names held on the other side are no candidates)
    for t in range(1, T):
        (lo, sh), s = books[t - 1], sig[t]
        cand = [i for i in range(N) if i not in lo and i not in sh]
        exp_lo = set(lo)
        if max(s[cand]) > min(s[lo]):
            exp_lo = exp_lo - {lo[int(np.argmin(s[lo]))]} | {cand[int(np.argmax(s[cand]))]}
        cand = [i for i in range(N) if i not in sh and i not in exp_lo]
        exp_sh = set(sh)
        if min(s[cand]) < max(s[sh]):
            exp_sh = exp_sh - {sh[int(np.argmax(s[sh]))]} | {cand[int(np.argmin(s[cand]))]}
        assert (set(books[t][0]), set(books[t][1])) == (exp_lo, exp_sh), t
    np.testing.assert_allclose(np.abs(w).sum(axis=1), 1.0)
    np.testing.assert_allclose(w.sum(axis=1), 0.0, atol=1e-15)  # half long, half short
    # fewer names traded, so less turnover, through the backtest too
    R = rng.normal(0, 0.01, size=(T, N))
    fc = _panel_forecasts(R, sig)
    turn = {n: backtest_forecasts(fc, _ev("backtest_portfolio=topk", "backtest_topk=2", f"backtest_topk_dropout={n}"))
            ["strategies"]["model"]["turnover"] for n in (0, 1)}
    assert turn[1] < turn[0]


def test_topk_with_few_names_ties_and_missing_forecasts():
    sig = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, np.nan], [1.0, 1.0, 1.0], [np.nan, np.nan, 5.0]])
    w, books = topk_weights(sig, k=3)
    # 3 names cannot fill 3 long + 3 short: one per side keeps the book balanced
    assert books[:2] == [([0], [1]), ([1], [0])]
    np.testing.assert_allclose(w[0], [0.5, -0.5, 0.0])
    assert books[2:] == [([], []), ([], [])] and not w[2:].any()  # no ranking (all equal, or a single name): flat
    w, books = topk_weights(sig, k=2, dropout=1, long_only=True, max_gross=0.6)
    assert set(books[0][0]) == {0, 2}
    assert set(books[1][0]) == {0, 1}  # symbol 2 lost its forecast: sold, and the vacancy refilled
    np.testing.assert_allclose(w[1], [0.3, 0.3, 0.0])


def test_rebalance_every_3_periods_holds_the_positions_in_between():
    R, sig = _oracle(T=31)
    T, N = R.shape
    nxt = np.expm1(R[1:])
    _, books = topk_weights(sig, 1, every=3)
    assert all(books[t] == books[t - t % 3] for t in range(T))  # the names change only on dates 0, 3, 6, ...
    assert books[1] != ([int(np.argmax(sig[1]))], [int(np.argmin(sig[1]))])  # ... although the ranking did
    res = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=1",
                                                           "backtest_rebalance=3", *FREE))
    ret = res["curves"]["model"][1]
    ps = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_rebalance=3", *FREE))["curves"]["model"][1]
    for t0 in range(0, T - 1, 3):
        block = slice(t0, t0 + 3)
        # by shares: +0.5 of capital in the best of t0 → t0+1, -0.5 in its worst, untouched for 3 periods
        a, b = np.prod(1 + nxt[block, nxt[t0].argmax()]), np.prod(1 + nxt[block, nxt[t0].argmin()])
        assert np.prod(1 + ret[block]) == pytest.approx(1 + 0.5 * (a - 1) - 0.5 * (b - 1), rel=1e-12)
        # the per-symbol portfolio holds its ±1/N positions of t0 as well
        grow = np.prod(1 + nxt[block], axis=0) - 1
        assert np.prod(1 + ps[block]) == pytest.approx(1 + (np.sign(sig[t0]) / N * grow).sum(), rel=1e-12)
    # no trade in between, so costs only on rebalancing dates
    paid = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=1",
                                                            "backtest_rebalance=3", "backtest_cost_bps=10",
                                                            "backtest_slippage_bps=0"))
    drag = ret - paid["curves"]["model"][1]
    assert np.all(np.abs(drag[np.arange(T - 1) % 3 != 0]) < 1e-15) and np.all(drag[::3] > 0)
    assert drag[0] == pytest.approx(1e-3)


def test_equal_weight_is_the_cross_sectional_mean_return_without_costs():
    R, sig = _oracle()
    res = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_max_gross=0.8", "backtest_cost_bps=10"))
    np.testing.assert_allclose(res["curves"]["equal_weight"][1], 0.8 * np.expm1(R[1:]).mean(axis=1), rtol=1e-12, atol=1e-15)
    assert res["strategies"]["equal_weight"]["cost_drag"] == 0.0
    # buy-and-hold: bought in equal parts on the first date (paying 10 + 2 bps of 1), then never traded
    bh = res["curves"]["buy_and_hold"][1]
    value = np.cumprod(np.expm1(R[1:]) + 1, axis=0).mean(axis=1)  # the untraded book's value
    np.testing.assert_allclose(bh, np.r_[value[0] - 1 - 12e-4, value[1:] / value[:-1] - 1], rtol=1e-10, atol=1e-15)
    assert res["strategies"]["buy_and_hold"]["turnover"] * res["strategies"]["buy_and_hold"]["n_periods"] == pytest.approx(1.0)


def test_information_ratio_by_hand():
    # active returns 0.01, 0.03, 0.02: mean 0.02, standard deviation 0.01
    assert information_ratio(np.array([0.03, 0.04, 0.05]), np.array([0.02, 0.01, 0.03]), 252) == pytest.approx(2 * math.sqrt(252))
    assert math.isnan(information_ratio(np.array([0.03, 0.04]), np.array([0.02, 0.03]), 252))  # no active risk
    R, sig = _oracle()
    res = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=2", "periods_per_year=12"))
    active = res["curves"]["model"][1] - np.expm1(R[1:]).mean(axis=1)
    ir = active.mean() / active.std(ddof=1) * math.sqrt(12)
    assert res["strategies"]["model"]["information_ratio"] == pytest.approx(ir, rel=1e-9)
    assert math.isnan(res["strategies"]["equal_weight"]["information_ratio"])
    text = format_backtest(res)
    assert "portfolio top-2 long-short" in text and "IR" in text.splitlines()[1]


@pytest.mark.parametrize("key, value", [
    ("backtest_topk", 0), ("backtest_topk_dropout", -1), ("backtest_rebalance", 0), ("backtest_portfolio", "top"),
])
def test_bad_portfolio_settings_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"evaluation.{key}") as e:
        load_config(None, [f"evaluation.{key}={value}"])
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("topk") / "run"
    train(load_config(None, tiny(run, "model.hidden_size=8", "data.sequence_length=16", "data.symbols=[AEM, WPM, NIO]",
                                 "training.max_steps=3", "evaluation.eval_steps=0", "training.save_steps=0",
                                 "evaluation.report=false")))
    return run


def _png(src):
    png = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_backtest_cli_topk_and_its_report_plot(tiny_run, tmp_path, capsys):
    assert main(["backtest", str(tiny_run), "--portfolio", "topk", "--topk", "1", "--topk-dropout", "1",
                 "--rebalance", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    s = got["settings"]
    assert (s["portfolio"], s["topk"], s["topk_dropout"], s["rebalance"]) == ("topk", 1, 1, 2)
    assert {"model", "naive:zero", "buy_and_hold", "equal_weight"} <= set(got["strategies"])
    assert {"information_ratio", "sharpe", "turnover"} <= set(got["strategies"]["model"])
    assert main(["backtest", str(tiny_run), "--portfolio", "topk", "--topk", "1", "--long-only"]) == 0
    assert "portfolio top-1 long-only" in capsys.readouterr().out
    assert main(["backtest", str(tiny_run), "--rebalance", "0"]) == 2
    err = capsys.readouterr().err
    assert "evaluation.backtest_rebalance" in err and err.count("\n") == 1
    # the report plots the model's top-k portfolio beside the equal-weight universe; not for per_symbol
    ev = evaluation_config(tiny_run, ["evaluation.backtest_portfolio=topk", "evaluation.backtest_topk=1"])
    result, fc, bt = evaluate_and_backtest(tiny_run, ev=ev)
    html_path, md_path = write_report(tmp_path / "topk", result, fc, bt, tiny_run)
    page = html_path.read_text(encoding="utf-8")
    imgs = re.findall(r'<img alt="([^"]*)" src="([^"]*)"', page)
    topk = [src for alt, src in imgs if "top-1 long-short portfolio" in alt]
    assert len(topk) == 1 and _png(topk[0])[0] >= 600
    assert "IR vs equal weight" in page
    assert (tmp_path / "topk" / "report_files" / "topk_portfolio.png").is_file()
    assert "report_files/topk_portfolio.png" in md_path.read_text(encoding="utf-8")
    result, fc, bt = evaluate_and_backtest(tiny_run)
    _, md_path = write_report(tmp_path / "plain", result, fc, bt, tiny_run)
    assert "topk_portfolio" not in md_path.read_text(encoding="utf-8")


def test_format_backtest_keeps_the_look_ahead_warning_beside_the_ir_column(forecasts):
    fc = forecasts
    fc.pred["model"] = fc.true.copy()  # a planted leak
    for portfolio, topk in (("per_symbol", 3), ("topk", 1)):  # backtest_topk away from 3 under per_symbol: a ConfigError
        res = backtest_forecasts(fc, _ev(f"backtest_portfolio={portfolio}", f"backtest_topk={topk}"))
        text = format_backtest(res)
        assert "warning (model)" in text and "look-ahead" in text, portfolio
        assert text.splitlines()[1].endswith("IR") and text.splitlines()[-1].startswith("IR:")


def test_periods_per_year_of_intraday_sessions():
    """One-minute bars in a 09:30-16:00 New York session: 390 a day, whatever the UTC offset (daylight
    saving moves the session by an hour in UTC), the overnight and weekend gaps, or a lunch break."""
    from hftraining.data.synth import bar_times

    months = bar_times(390 * 130, "1min", "2024-01-02").asi8  # 130 business days across the March DST change
    ppy, how = infer_periods_per_year(months)
    assert "390 bars per session" in how
    assert ppy == pytest.approx(390 * 365.25 * 5 / 7, rel=0.01)  # business days, no holidays in the calendar
    week = bar_times(390 * 5, "1min", "2024-03-04").asi8
    assert infer_periods_per_year(week)[0] == 390 * 252  # too short to count sessions: 252 a year
    # a lunch break splits each day in two sessions; the bars per year stay those of the day
    am = bar_times(150 * 60, "1min", "2024-01-01", session="09:00-11:30", tz="Asia/Tokyo").asi8
    pm = bar_times(150 * 60, "1min", "2024-01-01", session="12:30-15:00", tz="Asia/Tokyo").asi8
    assert infer_periods_per_year(np.concatenate([am, pm]))[0] == pytest.approx(300 * 365.25 * 5 / 7, rel=0.03)
    clock = bar_times(1440 * 30, "1min", "2024-01-01", session="24h").asi8
    assert infer_periods_per_year(clock)[0] == 1440 * 365


# --------------------------------------------------------------------------------------------
# annualisation whatever the time zone; quantile levels that pair only within rounding; both sides of a
# long-short top-k book the same size; a symbol without a row on a date is held, not sold


def _local_midnights(tz, periods, freq="B", start="2023-01-02"):
    """Daily bars stamped at local midnight in ``tz`` (as yfinance writes them), as the loader keeps them: UTC."""
    return pd.date_range(start, periods=periods, freq=freq, tz=tz).tz_convert("UTC").as_unit("ns").asi8


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Europe/Berlin", "Europe/London", "Asia/Tokyo",
                                "Australia/Sydney"])
def test_daily_bars_at_local_midnight_annualise_the_same_in_every_time_zone(tz):
    # '2024-01-08 00:00+01:00' is Sunday 23:00 UTC: weekdays counted in UTC put a Berlin or Tokyo stock
    # exchange at weekends (365 a year, Sharpe × √(365/252)); London's summer time crosses UTC midnight
    assert infer_periods_per_year(_local_midnights(tz, 400))[0] == 252
    assert infer_periods_per_year(_local_midnights(tz, 400, freq="D"))[0] == 365  # open every day
    assert infer_periods_per_year(_local_midnights(tz, 7, freq="D"))[0] == 365  # one week shows it
    assert infer_periods_per_year(_local_midnights(tz, 10))[0] == 252  # two weeks of a stock exchange
    # through the backtest: the Sharpe of the same returns does not depend on where the dates were stamped
    R, sig = _oracle(T=60, N=3)
    fc = _panel_forecasts(R, sig, dates=_local_midnights(tz, 60))
    res = backtest_forecasts(fc, _ev(*FREE))
    assert res["settings"]["periods_per_year"] == 252
    utc = backtest_forecasts(_panel_forecasts(R, sig), _ev(*FREE))["strategies"]["model"]["sharpe"]
    assert res["strategies"]["model"]["sharpe"] == pytest.approx(utc, rel=1e-12)


def test_intraday_sessions_east_of_utc_annualise_as_trading_days():
    from hftraining.data.synth import bar_times

    # a Sydney session (10:00-16:00, UTC+11) opens on Sunday 23:00 UTC for Monday: 252 sessions a year
    week = bar_times(360 * 5, "1min", "2024-01-08", session="10:00-16:00", tz="Australia/Sydney").asi8
    assert infer_periods_per_year(week)[0] == 360 * 252
    # bars around the clock, Monday to Friday in Tokyo (Sunday 15:00 to Friday 15:00 UTC): 252 days a year
    local = pd.date_range("2024-01-08", "2024-02-03", freq="15min", tz="Asia/Tokyo", inclusive="left")
    local = local[local.day_of_week < 5].tz_convert("UTC").as_unit("ns").asi8
    assert infer_periods_per_year(local)[0] == 96 * 252
    # ... and in New York's evening (Sunday 17:00 to Friday 17:00 New York, as FX): 252 too, as before
    fx = pd.date_range("2024-01-07 17:00", "2024-02-02 17:00", freq="15min", tz="America/New_York", inclusive="left")
    fx = fx[~((fx.day_of_week == 4) & (fx.hour >= 17)) & (fx.day_of_week != 5)
            & ~((fx.day_of_week == 6) & (fx.hour < 17))].tz_convert("UTC").as_unit("ns").asi8
    assert infer_periods_per_year(fx)[0] == 96 * 252


@pytest.mark.parametrize("levels", [[0.33, 0.5, 0.67], [0.07, 0.93], [0.1, 0.3, 0.5, 0.7, 0.9]])
def test_vol_scaled_positions_use_quantile_levels_that_pair_only_within_rounding(levels):
    # 1 - 0.33 = 0.6699999999999999 and 1 - 0.07 = 0.9299999999999999: a lookup by equality raised ValueError
    # after training, before eval.json was written
    from scipy import stats

    R, sig = _oracle(T=20, N=3)
    fc = _panel_forecasts(R, sig)
    W, H = fc.pred["model"].shape
    vol = np.random.default_rng(1).uniform(0.005, 0.03, W)  # the volatility the quantiles imply
    fc.quantiles = np.repeat((stats.norm.ppf(levels)[None, :] * vol[:, None])[:, None, :], H, axis=1)
    fc.levels = list(levels)
    res = backtest_forecasts(fc, _ev("backtest_positions=vol_scaled", *FREE))
    w = positions(sig, vol.reshape(R.shape), rule="vol_scaled")
    expected = simulate(w, R, np.arange(len(R))).returns
    np.testing.assert_allclose(res["curves"]["model"][1], expected, rtol=1e-9, atol=1e-15)


def test_topk_long_short_sides_stay_the_same_size_when_the_held_shorts_crowd_the_universe():
    # the long names lose their forecasts; the two names left are both held short: the long side was
    # empty and the book net short ([0, 0, 0, -0.5]); the short side lets one go, and the long side takes it
    w, books = topk_weights(np.array([[4.0, 3, 2, 1], [np.nan, np.nan, 2, 1]]), k=2, dropout=1)
    assert books[1] == ([2], [3])
    np.testing.assert_allclose(w[1], [0, 0, 0.5, -0.5])
    # any universe, any gaps: ⌊n/2⌋ (at most k) names a side, disjoint, net zero, on every date with a ranking
    rng = np.random.default_rng(7)
    for trial in range(200):
        T, N = 12, int(rng.integers(2, 9))
        sig = rng.normal(size=(T, N))
        sig[rng.random((T, N)) < 0.35] = np.nan
        k, dropout = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        w, books = topk_weights(sig, k, dropout)
        for t, (lo, sh) in enumerate(books):
            n = int(np.isfinite(sig[t]).sum())
            size = min(k, n // 2) if n >= 2 else 0
            assert len(lo) == len(sh) == size and not set(lo) & set(sh), (trial, t)
            assert abs(w[t].sum()) < 1e-15 and np.abs(w[t]).sum() == pytest.approx(1.0 if size else 0.0)


def _without_rows(fc, absent):
    """``fc`` with the windows of the (T, N) ``absent`` (date, symbol) pairs removed: no row there."""
    keep = ~np.asarray(absent).reshape(-1)
    return Forecasts(pred={k: v[keep] for k, v in fc.pred.items()}, true=fc.true[keep], dates=fc.dates[keep],
                     symbol_ids=fc.symbol_ids[keep], symbols=fc.symbols, last_return=fc.last_return[keep],
                     past_vol=fc.past_vol[keep], last_close=fc.last_close[keep])


def test_a_symbol_without_a_row_keeps_its_position_and_earns_the_gap():
    # symbol 1, always forecast up, has no row on date 3: its next row's return spans dates 2 → 4 (symbol 0
    # is flat and has no forecast, so the model holds symbol 1 alone)
    full = np.log(np.array([1.0, 1.02, 0.99, 1.03, 1.01, 0.98, 1.04]))
    R = np.zeros((7, 2))
    R[:, 1] = full
    R[3, 1], R[4, 1] = np.nan, full[3] + full[4]
    sig = np.ones_like(R)
    sig[:, 0] = np.nan
    fc = _without_rows(_panel_forecasts(R, sig), np.isnan(R))
    # held through the gap, it earns the whole price change; only the entry pays costs (10 bps of 1)
    gross = np.expm1(np.nan_to_num(R[1:, 1]))
    for every in (1, 2, 3):  # rebalancing on the gap date or not, the same
        res = backtest_forecasts(fc, _ev("backtest_cost_bps=8", "backtest_slippage_bps=2", f"backtest_rebalance={every}"))
        m = res["strategies"]["model"]
        np.testing.assert_allclose(res["curves"]["model"][1], gross - np.r_[1e-3, np.zeros(5)], rtol=1e-12, atol=1e-15)
        assert m["turnover"] * m["n_periods"] == pytest.approx(1.0), every
        assert np.prod(1 + res["curves"]["model"][1]) == pytest.approx((np.exp(full[1]) - 1e-3) * np.exp(full[2:].sum()), rel=1e-12)
        # the benchmarks hold it too: half the capital in each symbol
        np.testing.assert_allclose(res["curves"]["equal_weight"][1], gross / 2, rtol=1e-12, atol=1e-15)
    # three symbols, long-short by sign; symbol 2 misses date 2: it is not sold, the others keep ±1/3
    # (not ±1/2), so nothing trades on date 2 or 3; its return over the gap is earned in period 2 → 3
    R = np.zeros((5, 3))
    R[2, 2], R[3, 2] = np.nan, 0.05
    fc = _without_rows(_panel_forecasts(R, np.tile([1.0, -1.0, 1.0], (5, 1))), np.isnan(R))
    res = backtest_forecasts(fc, _ev(*FREE))
    np.testing.assert_allclose(res["curves"]["model"][1], [0, 0, np.expm1(0.05) / 3, 0], atol=1e-15)
    np.testing.assert_allclose(res["curves"]["equal_weight"][1], [0, 0, np.expm1(0.05) / 3, 0], atol=1e-15)
    paid = backtest_forecasts(fc, _ev("backtest_cost_bps=10", "backtest_slippage_bps=0"))["strategies"]["model"]
    # turnover: the entry (1), then on date 3 back to ±1/3 after symbol 2 gained x = e^0.05 - 1 (book +x/3):
    # 2 × |1/3 - 1/3/(1 + x/3)| + |1/3 - (1 + x)/3/(1 + x/3)| = 4x/9 / (1 + x/3); nothing on date 2
    x = np.expm1(0.05)
    assert paid["turnover"] * paid["n_periods"] == pytest.approx(1.0 + 4 * x / 9 / (1 + x / 3), rel=1e-12)


def test_a_kept_weight_that_drifted_up_leaves_the_others_the_rest_of_the_gross():
    from hftraining.eval.backtest import hold

    # long-only, 50/50; symbol 0 halves while symbol 1 has no row: symbol 1 is now 2/3 of the capital and
    # cannot be traded; symbol 0 gets the 1/3 left (its 1/2 target would make the gross 7/6)
    w = np.full((3, 2), 0.5)
    R = np.array([[0.0, 0.0], [np.log(0.5), np.nan], [0.0, 0.0]])
    absent = np.isnan(R)
    held = hold(w, R, 1, absent, max_gross=1.0)
    np.testing.assert_allclose(held[1], [1 / 3, 2 / 3])
    np.testing.assert_allclose(held[2], [0.5, 0.5])
    assert simulate(held, R, np.arange(3)).turnover[1] == pytest.approx(0.0, abs=1e-15)


def test_a_top_k_name_without_a_row_keeps_its_place_and_earns_the_gap():
    # top-1 long-short over 4 symbols: symbol 0 always ranks first, symbol 3 last; symbol 0 has no row on
    # date 2 (its next row's return spans 1 → 3). It cannot be sold without a price: it stays long, nothing
    # trades on date 2, and the book earns its whole move (before, it was sold, symbol 1 bought, and the gap
    # lost: a round trip on each side)
    T, N = 6, 4
    R = np.zeros((T, N))
    R[:, 0] = np.log([1.0, 1.01, 1.0, 1.02, 1.0, 1.0])
    R[2, 0], R[3, 0] = np.nan, np.log(1.02)
    R[:, 1] = np.log(0.97)  # the name that would have replaced it loses
    sig = np.tile([3.0, 2.0, 1.0, 0.0], (T, 1))
    fc = _without_rows(_panel_forecasts(R, sig), np.isnan(R))
    for dropout in (0, 1):
        res = backtest_forecasts(fc, _ev("backtest_portfolio=topk", "backtest_topk=1", f"backtest_topk_dropout={dropout}",
                                         "backtest_cost_bps=10", "backtest_slippage_bps=0"))
        # re-equalising ±0.5 after one name moved x trades x / (2 + x); on date 2 nothing trades
        cost = 1e-3 * np.array([1.0, 0.01 / 2.01, 0.0, 0.02 / 2.02, 0.0])
        np.testing.assert_allclose(res["curves"]["model"][1], np.array([0.005, 0.0, 0.01, 0.0, 0.0]) - cost,
                                   rtol=1e-12, atol=1e-15, err_msg=f"dropout {dropout}")
    _, books = topk_weights(sig, 1, absent=np.isnan(R))
    assert [b[0] for b in books] == [[0]] * T  # never sold, never replaced


def test_a_symbol_whose_windows_end_is_sold_at_its_last_windows_close_and_leaves_the_universe():
    # two symbols, long-only by sign; symbol 1's windows end on date 2 (a delisting: its data ends H rows
    # later, rows whose returns the forecasts do not carry). It is sold at the close of date 2, paying costs,
    # and symbol 0 holds the whole gross from there: no capital sits in a symbol over a period it is credited
    # nothing for (before, half the book stayed in symbol 1 over (2, 3], earning 0 whatever its price did)
    T = 7
    R = np.zeros((T, 2))
    R[:, 0] = np.log(1.01)
    R[3:, 1] = np.nan
    sig = np.ones((T, 2))
    fc = _without_rows(_panel_forecasts(R, sig), np.isnan(R))
    res = backtest_forecasts(fc, _ev("backtest_long_only=true", "backtest_cost_bps=10", "backtest_slippage_bps=0"))
    r = res["curves"]["model"][1]
    half = 0.5 / 1.005  # symbol 1's weight after period 0 → 1, when symbol 0 gained 1%
    np.testing.assert_allclose(r[3:], 0.01, rtol=1e-12)  # all in symbol 0 after symbol 1 is gone
    np.testing.assert_allclose(r[2], 0.01 - 10e-4 * 2 * half, rtol=1e-12)  # the exit's cost: sell half, buy half
    np.testing.assert_allclose(r[1], 0.005 - 10e-4 * 2 * abs(0.5 - 1.01 * half), rtol=1e-9)  # re-equalised
    ew = res["curves"]["equal_weight"][1]
    np.testing.assert_allclose(ew[2:], 0.01, rtol=1e-12)  # the universe too
    m = res["strategies"]["model"]
    assert m["turnover"] * m["n_periods"] == pytest.approx(1.0 + 2 * abs(0.5 - 1.01 * half) + 2 * half, rel=1e-9)
    # buy-and-hold never rebalances, yet sells symbol 1 at the same close (costs paid) and keeps the cash
    bh = res["curves"]["buy_and_hold"][1]
    w1 = np.array([0.5 * 1.01, 0.5]) / 1.005  # the book after period 0
    g = w1[0] * 0.01
    w2 = w1 * np.array([1.01, 1.0]) / (1 + g)  # after period 1, before symbol 1 is sold
    np.testing.assert_allclose(bh[2], w2[0] * 0.01 - 10e-4 * w2[1], rtol=1e-12)
    np.testing.assert_allclose(bh[3], w2[0] * 1.01 / (1 + w2[0] * 0.01) * 0.01, rtol=1e-12)  # symbol 0 and cash


@pytest.mark.parametrize("every", [1, 3])
def test_a_top_k_name_whose_windows_end_is_sold_there_rebalancing_or_not(every):
    # top-1 long-short over 3 symbols ranked 0 > 1 > 2 on every date; symbol 0's windows end on date 2.
    # Symbol 1 gains 2% a period, the others are flat. Rebalancing every date, symbol 1 replaces symbol 0
    # at the close of date 2 and the book earns its gain over (2, 3]; rebalancing every 3 dates (0, 3, 6),
    # date 2 sells symbol 0 alone, the proceeds stay in cash until date 3 (before, symbol 0 was held over
    # (2, 3] for nothing and sold on date 3)
    T = 7
    R = np.zeros((T, 3))
    R[:, 1] = np.log(1.02)
    R[3:, 0] = np.nan
    sig = np.tile([3.0, 2.0, 1.0], (T, 1))
    fc = _without_rows(_panel_forecasts(R, sig), np.isnan(R))
    res = backtest_forecasts(fc, _ev("backtest_portfolio=topk", "backtest_topk=1", f"backtest_rebalance={every}",
                                     "backtest_cost_bps=10", "backtest_slippage_bps=0"))
    r = res["curves"]["model"][1]
    np.testing.assert_allclose(r[:2], [-1e-3, 0.0], atol=1e-15)  # the entry (±0.5: turnover 1), then flat
    if every == 1:
        np.testing.assert_allclose(r[2], 0.5 * 0.02 - 1e-3 * 1.0, rtol=1e-12)  # sell 0.5 of symbol 0, buy 0.5 of symbol 1
    else:
        np.testing.assert_allclose(r[2], -1e-3 * 0.5, rtol=1e-12)  # sell symbol 0; nothing bought before date 3
        np.testing.assert_allclose(r[3], 0.5 * 0.02 - 1e-3 * 0.5, rtol=1e-12)  # symbol 1 bought on date 3


def test_rows_without_a_window_between_two_dates_are_earned_through_the_close():
    # one symbol held long; its windows skip rows 5-7 (the last bars of a session, the night and the first
    # bars of the next under data.max_gap; the H - 1 rows at a walk-forward fold boundary): the period from
    # row 4 to row 8 earns the close's whole change over those rows, not row 8's return alone (before: the
    # position was held through rows 5-7 earning nothing, 4.8% in all for a 14% rise)
    close = np.array([100, 101, 102, 101, 103, 104, 110, 112, 111, 112, 113, 114.0])
    ret = np.r_[0.0, np.diff(np.log(close))]
    times = pd.date_range("2024-01-02 14:30", periods=12, freq="5min", tz="UTC").as_unit("ns").asi8
    keep = np.r_[0:5, 8:12]
    W = len(keep)
    fc = Forecasts(pred={"model": np.ones((W, 1)), "zero": np.zeros((W, 1))}, true=np.zeros((W, 1)),
                   dates=times[keep], symbol_ids=np.zeros(W, dtype=np.int64), symbols=["A"], last_return=ret[keep],
                   past_vol=np.full(W, 0.01), last_close=close[keep])
    fc.prev_time = np.r_[np.iinfo(np.int64).min, times[:-1]][keep]  # the row before each window's last row
    res = backtest_forecasts(fc, _ev(*FREE, "periods_per_year=252"))
    want = close[keep][1:] / close[keep][:-1] - 1
    for name in ("model", "buy_and_hold", "equal_weight"):
        np.testing.assert_allclose(res["curves"][name][1], want, rtol=1e-12, err_msg=name)
    assert res["strategies"]["model"]["total_return"] == pytest.approx(close[-1] / close[0] - 1, rel=1e-12)
    # a date without a row (no row, so no window: a holiday of the symbol's exchange) is no skip: the next
    # row's return spans it already, whatever the closes say (here a constant 100)
    R = np.zeros((5, 2))
    R[:, 0] = np.log(1.01)
    R[2, 1], R[3, 1] = np.nan, 0.05
    dates = pd.bdate_range("2024-01-01", periods=5, tz="UTC").as_unit("ns").asi8
    fc = _without_rows(_panel_forecasts(R, np.ones_like(R), dates=dates), np.isnan(R))
    before = backtest_forecasts(fc, _ev(*FREE))["curves"]
    first = np.iinfo(np.int64).min
    fc.prev_time = np.zeros(len(fc.dates), dtype=np.int64)
    fc.prev_time[fc.symbol_ids == 0] = np.r_[first, dates[:-1]]
    fc.prev_time[fc.symbol_ids == 1] = np.r_[first, dates[0], dates[1], dates[3]]
    after = backtest_forecasts(fc, _ev(*FREE))["curves"]
    for name in before:
        np.testing.assert_array_equal(after[name][1], before[name][1], err_msg=name)
    assert after["equal_weight"][1][2] > 0.02  # symbol 1's 5% over its gap is earned


def test_a_forecast_period_over_rows_without_a_window_earns_the_close_change_end_to_end():
    # data.max_gap=3D cuts AEM's daily rows at each gap of 4 days or more (a long weekend): the last H rows
    # before it and the first L - 1 after it have no window, so consecutive forecast dates skip rows; the
    # one-symbol book held long earns each period's close-to-close change (it earned the last row's alone)
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=10", "data.prediction_horizon=2", "data.max_gap=3D"])
    data = prepare(cfg.data)
    ws = data.test
    assert (np.diff(ws.ends.astype(np.int64)) > 1).any()  # rows without a window between two forecast dates
    fc = collect_forecasts(None, ws, data.preprocessing.target_scale, 256, pred_scaled=np.zeros((len(ws), 2), np.float32))
    np.testing.assert_array_equal(fc.prev_time, ws.row_times[ws.ends.astype(np.int64) - 1])
    res = backtest_forecasts(fc, _ev(*FREE))
    close = fc.last_close[np.argsort(fc.dates)]
    np.testing.assert_allclose(res["curves"]["buy_and_hold"][1], close[1:] / close[:-1] - 1, rtol=1e-6)  # float32 returns


def test_the_naive_volatility_of_a_padded_window_is_its_own_rows():
    # min_history 5 < L = 20: a symbol's first windows are left-padded; their volatility (the backtest's
    # vol_scaled sizing) is the std of their real rows' returns, not of the first return repeated
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=20", "data.prediction_horizon=2",
                             "data.min_history=5", "data.split=per_symbol"])
    data = prepare(cfg.data)
    ws = data.train
    fc = collect_forecasts(None, ws, data.preprocessing.target_scale, 256, pred_scaled=np.zeros((len(ws), 2), np.float32))
    ends, first = ws.ends.astype(np.int64), ws.first_rows.astype(np.int64)
    padded = np.flatnonzero(ends - first + 1 < 20)
    assert len(padded) >= 10
    for k in padded:
        own = ws.returns[first[k]:ends[k] + 1].astype(np.float64)
        assert fc.past_vol[k] == pytest.approx(own.std(), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("every, long_only", [(1, False), (2, False), (1, True)])
def test_vol_scaled_forecasts_without_a_volatility_are_counted_and_warned(every, long_only):
    # crossed model quantiles (upper below lower: a negative volatility) and windows of constant prices
    # (a past volatility of 0) or a NaN one leave a forecast without a position under vol_scaled: the
    # backtest counts those (date, symbol) forecasts of the dates that trade and says so
    from scipy import stats

    R, sig = _oracle(T=20, N=4, seed=3)
    fc = _panel_forecasts(R, sig)
    W, H = fc.pred["model"].shape
    rng = np.random.default_rng(4)
    vol = rng.uniform(0.005, 0.03, W)
    vol[rng.choice(W, 9, replace=False)] *= -1  # crossed quantiles
    fc.quantiles = np.repeat((stats.norm.ppf([0.1, 0.5, 0.9])[None, :] * vol[:, None])[:, None, :], H, axis=1)
    fc.levels = [0.1, 0.5, 0.9]
    fc.pred["drift"] = np.repeat(-sig.reshape(W, 1), H, axis=1)  # a baseline sized by the past volatility
    fc.past_vol[rng.choice(W, 5, replace=False)] = 0.0
    fc.past_vol[rng.choice(W, 3, replace=False)] = np.nan
    res = backtest_forecasts(fc, _ev("backtest_positions=vol_scaled", f"backtest_rebalance={every}",
                                     f"backtest_long_only={str(long_only).lower()}", *FREE))
    # the dates that rebalance, but not the last: it opens no period, so its forecasts are never traded
    trades = ((np.arange(len(R)) % every == 0) & (np.arange(len(R)) < len(R) - 1))[:, None]
    for name, s, v in (("model", sig, vol), ("naive:drift", -sig, fc.past_vol)):
        wants = (s > 0) if long_only else (s != 0)
        bad = ~(np.nan_to_num(v, nan=-1.0).reshape(R.shape) > 0)
        n = int((wants & bad & trades).sum())
        assert n > 0
        m = res["strategies"][name]
        assert m["no_volatility"] == n, name
        assert f"{n} of {int((wants & trades).sum())} forecasts took no position" in m["warning"], name
        assert f"warning ({name}): {n} of" in format_backtest(res)
    assert res["strategies"]["naive:zero"]["no_volatility"] == 0 and "warning" not in res["strategies"]["naive:zero"]
    assert "no_volatility" not in res["strategies"]["equal_weight"]  # a benchmark does not size by volatility
    # sign positions need no volatility: nothing to count
    assert "no_volatility" not in backtest_forecasts(fc, _ev(*FREE))["strategies"]["model"]


def test_a_backtest_setting_the_portfolio_ignores_is_a_config_error_naming_it():
    for overrides, key in (
        (["evaluation.backtest_portfolio=per_symbol", "evaluation.backtest_topk=5"], "evaluation.backtest_topk"),
        (["evaluation.backtest_portfolio=per_symbol", "evaluation.backtest_topk_dropout=1"], "evaluation.backtest_topk_dropout"),
        (["evaluation.backtest_portfolio=topk", "evaluation.backtest_positions=vol_scaled"], "evaluation.backtest_positions"),
        (["data.target=cs_rank", "evaluation.backtest_positions=vol_scaled"], "evaluation.backtest_positions"),  # auto → topk
    ):
        with pytest.raises(ConfigError, match=f"^{key}: .* ignored by the") as e:
            load_config(None, overrides)
        assert "\n" not in str(e.value)
    # at the default value, or used by the portfolio: accepted
    for overrides in (["evaluation.backtest_portfolio=per_symbol", "evaluation.backtest_topk=3"],
                      ["evaluation.backtest_portfolio=topk", "evaluation.backtest_topk=5", "evaluation.backtest_topk_dropout=1"],
                      ["evaluation.backtest_portfolio=per_symbol", "evaluation.backtest_positions=vol_scaled"],
                      ["data.target=cs_rank", "evaluation.backtest_topk=5"]):
        load_config(None, overrides)


@pytest.fixture(scope="module")
def cs_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cs") / "run"
    train(load_config(None, tiny(run, "model.hidden_size=8", "data.sequence_length=16", "data.symbols=[AEM, WPM, NIO]",
                                 "data.target=cs_rank", "training.max_steps=3", "evaluation.eval_steps=0",
                                 "training.save_steps=0", "evaluation.report=false")))
    return run


def test_auto_resolves_by_the_label_the_model_was_trained_on(tiny_run, cs_run, tmp_path, capsys):
    # in training the label is in the config: a return label (the default) trades per symbol, and
    # backtest_topk set there would change nothing
    with pytest.raises(ConfigError, match=r"^evaluation\.backtest_topk: 5 is ignored by the per_symbol portfolio"):
        load_config(None, ["evaluation.backtest_topk=5"])
    # on a trained model the label is the model's: its run folder, its bare model folder (no run config.json beside
    # it) and an ensemble of it all resolve auto alike, before any data is read (the --data folder does not exist)
    from hftraining.inference.ensemble import build_ensemble
    folders = {}
    for name, run in (("return", tiny_run), ("cs_rank", cs_run)):
        shutil.copytree(run / "final", tmp_path / name / "a")
        shutil.copytree(run / "final", tmp_path / name / "b")
        folders[name] = [run, tmp_path / name / "a", build_ensemble([tmp_path / name / "a", tmp_path / name / "b"],
                                                                   tmp_path / name / "ens")]
    missing = str(tmp_path / "missing")
    capsys.readouterr()  # building the ensembles logs (when an earlier test left console logging on)
    for name, flags, refused in (("return", ["--topk", "5"], "evaluation.backtest_topk: 5 is ignored by the per_symbol"),
                                 ("cs_rank", ["--positions", "vol_scaled"],
                                  "evaluation.backtest_positions: 'vol_scaled' is ignored by the topk")):
        for path in folders[name]:
            assert main(["backtest", str(path), *flags, "--data", missing]) == 2, (name, path)
            err = capsys.readouterr().err
            assert refused in err and f"data.target={name}" in err and err.count("\n") == 1, err
    # the setting the model's portfolio uses is accepted: top-k on the cross-sectional label (a check that took the
    # default data section, a return label, would refuse it)
    for path in folders["cs_rank"]:
        assert main(["backtest", str(path), "--topk", "1", "--json"]) == 0, path
        s = json.loads(capsys.readouterr().out)["settings"]
        assert (s["portfolio"], s["topk"]) == ("topk", 1) and "warning" not in s
    assert main(["evaluate", str(cs_run), "--no-report", "--set", "evaluation.backtest_positions=vol_scaled"]) == 2
    assert "evaluation.backtest_positions" in capsys.readouterr().err


def test_a_setting_that_auto_resolves_away_from_is_named_in_the_backtest_output(tiny_run, tmp_path, capsys):
    # auto resolves by the label: a return label trades per symbol, and backtest_topk=5 then changes nothing.
    # A caller that passes forecasts with an unchecked EvaluationConfig is told so in the output ...
    R, sig = _oracle()
    res = backtest_forecasts(_panel_forecasts(R, sig), EvaluationConfig(backtest_topk=5))
    assert res["settings"]["portfolio"] == "per_symbol" and res["settings"]["ignored"] == ["evaluation.backtest_topk"]
    text = format_backtest(res)
    assert "warning (settings): evaluation.backtest_topk: 5 is ignored by the per_symbol portfolio" in text
    assert "positions sign long-short (ignored: evaluation.backtest_topk)" in text.splitlines()[0]  # the report's label too
    assert "warning" not in backtest_forecasts(_panel_forecasts(R, sig), _ev())["settings"]
    # ... while `backtest` learns the label from the model folder and refuses it before reading any data (the
    # --data folder does not exist), as training refuses it
    for flags in (["--topk", "5"], ["--portfolio", "per_symbol", "--topk", "5"]):
        assert main(["backtest", str(tiny_run), *flags, "--data", str(tmp_path / "missing")]) == 2, flags
        err = capsys.readouterr().err
        assert "evaluation.backtest_topk: 5 is ignored by the per_symbol portfolio" in err and err.count("\n") == 1, err


def test_a_top_k_larger_than_the_universe_allows_is_said_with_what_was_held():
    # `--topk 30` on 10 symbols held 5 a side and printed "portfolio top-30 long-short": its numbers
    # were those of top-5 under the label of a book it never held.
    R, sig = _oracle(N=6)
    wide = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=5"))
    held = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=3"))
    assert wide["strategies"]["model"]["sharpe"] == held["strategies"]["model"]["sharpe"]  # the same book
    assert wide["settings"]["topk_held"] == 3 and "topk_held" not in held["settings"]
    text = format_backtest(wide)
    assert text.splitlines()[0].count("portfolio top-5 (at most 3 held) long-short") == 1
    assert ("warning (settings): evaluation.backtest_topk: 5 is more than the 6 symbols allow: each side holds at "
            "most 3 (long-short: half of them)") in text
    long_only = backtest_forecasts(_panel_forecasts(R, sig), _ev("backtest_portfolio=topk", "backtest_topk=5",
                                                                  "backtest_long_only=true"))
    assert "topk_held" not in long_only["settings"]  # 5 of 6 long: all held
