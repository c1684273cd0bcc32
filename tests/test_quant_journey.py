"""A cross-sectional label through ``train --seeds``: the seeds' summary names the baseline each seed's
verdict judges it against (by rank IC), as the model card does, and its one line gives the spread of
the figure that verdict reads, not the MSE ratio to another baseline."""
import pytest

from hftraining.eval.model_card import verdict_baseline
from hftraining.workflows.seeds import format_seed_summary, seed_summary


def _cs_eval(diff_mean: float, diff_p: float, ratio: float) -> dict:
    """A seed's eval.json of a ``cs_rank`` label: the strongest baseline by MSE (ridge) is not the one
    by rank IC (drift), which its verdict names."""
    return {
        "target": "cs_rank",
        "strongest_baseline": {"name": "ridge", "mse_ratio": ratio, "dm": {"p_value": 1e-40, "statistic": 20.0}},
        "cross_section_strongest": {"name": "drift", "rank_ic": 0.03,
                                    "difference": {"mean": diff_mean, "p_value": diff_p}},
        "model": {"mse": ratio, "directional_accuracy": 0.5, "cross_section": {"rank_ic": {"mean": 0.03 + diff_mean}}},
        "mse_vs_zero": ratio,
    }


def test_seeds_of_a_cross_sectional_label_name_the_baseline_their_verdicts_name():
    evals = [_cs_eval(-0.005, 0.6, 1.09), _cs_eval(-0.07, 0.001, 1.04), _cs_eval(-0.016, 0.25, 1.08)]
    summary = seed_summary(evals)
    assert summary["significantly_better"] == []  # judged against drift by rank IC
    assert summary["strongest_baseline"] == [verdict_baseline(ev)[0] for ev in evals] == ["drift"] * 3
    line = format_seed_summary(summary)
    assert "rank IC" in line and "MSE" not in line, line


def test_the_dm_statistic_and_its_p_value_stay_apart_in_the_console_table():
    """A three-digit DM statistic beside a p-value of 9 characters (1.67e-113, as a model far worse than
    the zero forecast on a long test split gets) is two numbers on the console, not "49.0811.67e-113"."""
    from hftraining.eval.forecasts import format_table

    row = {"mse": 1.05, "mae": 0.88, "directional_accuracy": 0.5, "directional_p": 0.5, "ic": 0.01, "ic_pooled": 0.01}
    result = {"n_windows": 10, "horizon": 1, "units": "log returns", "target": "return", "model": row,
              "baselines": {"zero": dict(row)}, "dm": {"zero": {"statistic": 49.081, "p_value": 1.67e-113}},
              "mse_verdict": "verdict"}
    line = next(ln for ln in format_table(result).splitlines() if ln.startswith("naive:zero"))
    assert line.split()[-2:] == ["49.081", "1.67e-113"], line


def test_a_backtest_of_a_few_periods_says_its_annualised_figures_rest_on_them():
    """Three test dates (``evaluation.max_test_windows`` of 3 cross-sections) are two periods: their Sharpe
    ratio and annual return, scaled to 252 periods a year, read 4 and 58% with nothing said; the settings
    warn how few periods the annualised figures rest on."""
    import numpy as np
    import pandas as pd

    from hftraining.core.config import load_config
    from hftraining.eval.backtest import backtest_forecasts
    from hftraining.eval.forecasts import Forecasts

    rng = np.random.default_rng(0)
    T, N, H = 3, 12, 1
    W = T * N
    dates = pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8
    fc = Forecasts(pred={"model": rng.normal(size=(W, H)), "zero": np.zeros((W, H))}, true=np.zeros((W, H)),
                   dates=np.repeat(dates, N), symbol_ids=np.tile(np.arange(N), T), symbols=[f"S{i}" for i in range(N)],
                   last_return=rng.normal(0, 0.02, W), past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0),
                   target="cs_rank")
    res = backtest_forecasts(fc, load_config(None, []).evaluation)
    assert res["strategies"]["model"]["n_periods"] == 2
    assert "2 periods" in res["settings"].get("warning", ""), res["settings"].get("warning")
