"""The verdict and the backtest on every label: the strongest baseline is named (and a baseline that cannot
be ranked is said to be left out), every figure of the evaluation is the one a short independent
computation gets from the forecasts, step h is the return h bars after the origin, and the backtest earns
exactly the hand-computed returns net of the README's costs."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hftraining.core.config import EvaluationConfig, load_config
from hftraining.data.pipeline import prepare
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts, collect_forecasts, label, score

H = 3


def _prices(folder, n=260, gap=None):
    """Four symbols of daily closes (a random walk), one CSV each; ``gap``: rows of DDD left out."""
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2020-01-01", periods=n)
    for s in ["AAA", "BBB", "CCC", "DDD"]:
        c = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))
        df = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": c, "high": c * 1.01, "low": c * 0.99,
                           "close": c, "volume": rng.integers(1000, 2000, n)})
        if s == "DDD" and gap is not None:
            df = df.drop(index=gap)
        df.to_csv(folder / f"{s}.csv", index=False)
    return folder


def _forecasts(tmp_path, target, horizon=H, seed=1):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    _prices(folder)
    cfg = load_config(None, [f"data.data_dir={folder}", "data.sequence_length=20", f"data.prediction_horizon={horizon}",
                             f"data.target={target}", "data.cache_dir=null"])
    data = prepare(cfg.data)
    ws = data.test
    pred = np.random.default_rng(seed).normal(size=(len(ws), horizon)).astype(np.float32)
    return collect_forecasts(None, ws, data.preprocessing.target_scale, 256, pred_scaled=pred), folder


def _by_hand(pred, true, dates, symbols, target="return"):
    return Forecasts(pred=pred, true=true, dates=dates, symbol_ids=symbols, symbols=[f"S{i}" for i in range(symbols.max() + 1)],
                     last_return=np.zeros(len(true)), past_vol=np.full(len(true), 0.01),
                     last_close=np.full(len(true), 100.0), target=target)


def _panel(D=40, N=5, seed=0):
    rng = np.random.default_rng(seed)
    dates = np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, N)
    ids = np.tile(np.arange(N), D)
    true = rng.normal(0, 0.01, (D * N, 1))
    return rng, dates, ids, true


def test_a_baseline_whose_forecast_is_not_finite_is_named_as_left_out_of_the_strongest():
    rng, dates, ids, true = _panel()
    noise = lambda s: true + rng.normal(0, s, true.shape)  # noqa: E731
    drift = noise(0.001)  # by far the best forecast on its finite rows, but NaN on one
    drift[7, 0] = np.nan
    pred = {"model": noise(0.005), "zero": np.zeros_like(true), "repeat": noise(0.02), "drift": drift,
            "seasonal_naive": noise(0.02)}
    r = score(_by_hand(pred, true, dates, ids))
    # the strongest baseline of a finite MSE is named; the one without an MSE is not silently passed over
    assert r["strongest_baseline"]["name"] == "zero"
    assert r["baselines_not_finite"] == {"drift": 1}
    assert "strongest baseline naive:zero (left out, its MSE undefined: naive:drift, whose forecast is not finite in 1 of " \
           "the 200 windows)" in r["verdict"]


def test_a_baseline_whose_step1_forecast_is_not_finite_is_named_as_left_out_of_the_strongest_by_rank_ic():
    rng, dates, ids, true = _panel()
    noise = lambda s: true + rng.normal(0, s, true.shape)  # noqa: E731
    drift = noise(0.001)
    drift[7, 0] = np.inf
    pred = {"model": noise(0.01), "zero": np.zeros_like(true), "repeat": noise(0.02), "drift": drift,
            "seasonal_naive": noise(0.03)}
    r = score(_by_hand(pred, true, dates, ids, target="cs_rank"))
    assert r["cross_section_strongest"]["name"] in {"repeat", "seasonal_naive"}
    assert "(left out, its rank IC undefined: naive:drift, whose forecast is not finite in 1 of the 200 windows)" \
        in r["verdict"]
    # the model's rank IC over the same dates as the named one's: the paired difference is over those dates
    assert r["cross_section_strongest"]["difference"]["n_dates"] == 40


@pytest.mark.parametrize("target", ["return", "excess_return", "cs_zscore", "cs_rank"])
def test_every_figure_of_the_evaluation_recomputes_from_the_forecasts(tmp_path, target):
    fc, _ = _forecasts(tmp_path, target)
    r = score(fc)
    y = fc.true
    for name, p in fc.pred.items():
        m = r["model"] if name == "model" else r["baselines"][name]
        assert m["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
        assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-12)
        nz = y != 0
        acc = np.where(np.sign(p[nz]) == 0, 0.5, np.sign(p[nz]) == np.sign(y[nz])).mean()
        assert m["directional_accuracy"] == pytest.approx(acc, rel=1e-12)
        frame = pd.DataFrame({"date": fc.dates, "p": p[:, 0], "y": y[:, 0]})
        ranked = [g for _, g in frame.groupby("date") if len(g) >= 3 and g.p.nunique() > 1 and g.y.nunique() > 1]
        for key, corr in (("ic", stats.pearsonr), ("rank_ic", stats.spearmanr)):
            cs = m["cross_section"][key]
            ic = np.array([corr(g.p, g.y)[0] for g in ranked])
            assert cs["n_dates"] == len(ic)
            if len(ic) < 2:
                assert math.isnan(cs["t_stat"])
                continue
            assert cs["mean"] == pytest.approx(ic.mean(), rel=1e-9, abs=1e-12)
            assert cs["std"] == pytest.approx(ic.std(ddof=1), rel=1e-9)
            # Newey–West at lag 0 with the factor T/(T − 1): the one-sample t statistic
            assert cs["t_stat"] == pytest.approx(ic.mean() / (ic.std(ddof=1) / math.sqrt(len(ic))), rel=1e-9)
            # a date whose IC is 0 in exact arithmetic (cs_rank's tied ranks) reads ±1e-17 in either sum order
            assert np.mean(ic > 1e-12) - 1e-12 <= cs["positive_share"] <= np.mean(ic > -1e-12) + 1e-12
        for h in range(H):
            assert r["per_step"][name][h]["mse"] == pytest.approx(np.mean((p[:, h] - y[:, h]) ** 2), rel=1e-12)
    # the strongest baseline is the lowest MSE of them all (the first listed on a tie), and the verdict names it
    mses = {k: v["mse"] for k, v in r["baselines"].items()}
    best = min(mses, key=mses.get)
    assert r["strongest_baseline"]["name"] == best and f"strongest baseline {label(best)}:" in r["mse_verdict"]
    if target.startswith("cs_"):
        ics = {k: v["cross_section"]["rank_ic"]["mean"] for k, v in r["baselines"].items()
               if math.isfinite(v["cross_section"]["rank_ic"]["mean"])}
        best = max(ics, key=ics.get)
        assert f"strongest baseline by rank IC {label(best)} =" in r["verdict"]


def test_step_h_is_the_return_h_bars_after_the_origin_of_its_own_symbol(tmp_path):
    fc, folder = _forecasts(tmp_path, "return")
    raw = {s: pd.read_csv(folder / f"{s}.csv") for s in fc.symbols}
    for i in range(len(fc)):
        df = raw[fc.symbols[fc.symbol_ids[i]]]
        j = int(np.flatnonzero(df.date.values == pd.Timestamp(fc.dates[i], tz="UTC").strftime("%Y-%m-%d"))[0])
        c = df.close.values
        np.testing.assert_allclose(fc.true[i], np.log(c[j + 1:j + H + 1] / c[j:j + H]), rtol=1e-5, atol=1e-7)
        assert fc.last_close[i] == pytest.approx(c[j], rel=1e-6)


def test_a_perfect_foresight_backtest_earns_the_hand_computed_returns(tmp_path):
    fc, _ = _forecasts(tmp_path, "return")
    fc.pred["model"] = fc.true.copy()
    ev = EvaluationConfig(backtest_cost_bps=0, backtest_slippage_bps=0, backtest_portfolio="per_symbol")
    bt = backtest_forecasts(fc, ev)
    frame = pd.DataFrame({"date": fc.dates, "r": fc.true[:, 0]})
    # weights 1/N_t of the sign of the return of (t, t+1], each earning that return: Σ |simple return| / N_t
    per = [np.abs(np.expm1(g.r)).sum() / len(g) for _, g in frame.groupby("date")][:-1]  # the last date opens no period
    np.testing.assert_allclose(bt["curves"]["model"][1], per, rtol=1e-5)
    assert bt["strategies"]["model"]["total_return"] == pytest.approx(np.prod(1 + np.array(per)) - 1, rel=1e-5)


def test_costs_are_charged_on_the_turnover_of_three_symbols_over_five_dates_by_hand():
    # 3 symbols × 5 dates; on date 2 only symbol 0 has a row (the others have a gap there)
    d = np.arange(5, dtype=np.int64) * 86_400 * 10**9
    rows = [(t, s) for t in range(5) for s in range(3) if t != 2 or s == 0]
    dates, ids = np.array([d[t] for t, _ in rows]), np.array([s for _, s in rows])
    R = np.log(np.array([[1.0, 1.0, 1.0], [1.02, 0.99, 1.01], [1.03, 1.0, 1.0], [0.98, 1.05, 0.97], [1.01, 1.0, 1.02]]))
    R[3, 1:] = np.log([1.05 * 1.02, 0.97 * 0.99])  # the gap's return is earned with the next row
    sig = np.array([[1, -1, 1], [1, 1, -1], [-1, np.nan, np.nan], [1, -1, -1], [1, 1, 1]], dtype=float)
    last = np.array([R[t, s] for t, s in rows])
    fc = Forecasts(pred={"model": np.array([[sig[t, s]] for t, s in rows]), "zero": np.zeros((len(rows), 1))},
                   true=np.zeros((len(rows), 1)), dates=dates, symbol_ids=ids, symbols=["A", "B", "C"],
                   last_return=last, past_vol=np.full(len(rows), 0.01), last_close=np.full(len(rows), 100.0))
    ev = EvaluationConfig(backtest_cost_bps=8, backtest_slippage_bps=2, backtest_portfolio="per_symbol")
    m = backtest_forecasts(fc, ev)["strategies"]["model"]
    simple = np.expm1(R)
    c = 10 / 1e4
    w, prev, net, turn = np.zeros(3), np.zeros(3), [], []
    for t in range(4):
        if t == 2:  # symbols 1 and 2 have no row: they keep their drifted weights; symbol 0 takes 1/3 (N_t counts them)
            w = np.array([np.sign(sig[2, 0]) / 3, prev[1], prev[2]])
        else:
            w = np.sign(sig[t]) / 3
        traded = np.abs(w - prev).sum()
        gross = float(w @ simple[t + 1])
        net.append(gross - traded * c)
        turn.append(traded)
        prev = w * (1 + simple[t + 1]) / (1 + gross)
    assert m["turnover"] == pytest.approx(np.mean(turn), rel=1e-12)
    assert m["total_return"] == pytest.approx(np.prod(1 + np.array(net)) - 1, rel=1e-12)
    assert m["cost_drag"] == pytest.approx(sum(turn) * c, rel=1e-12)


def test_a_tie_for_the_strongest_baseline_goes_to_the_first_listed():
    rng, dates, ids, true = _panel()
    same = true + rng.normal(0, 0.002, true.shape)
    pred = {"model": true + rng.normal(0, 0.01, true.shape), "zero": np.zeros_like(true), "repeat": same.copy(),
            "drift": same.copy(), "seasonal_naive": true + rng.normal(0, 0.02, true.shape)}
    for target, key in (("return", "strongest_baseline"), ("cs_rank", "cross_section_strongest")):
        r = score(_by_hand({k: v.copy() for k, v in pred.items()}, true, dates, ids, target))
        assert r[key]["name"] == "repeat"  # repeat and drift forecast alike: the order zero, repeat, drift, ...
        assert "naive:drift" not in r["verdict"]
