"""The benchmark scripts measure what their printed figures say."""

import importlib
import shutil
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_alpha  # noqa: E402


def test_bench_alpha_fit_seconds_leave_out_the_test_forecast(monkeypatch, tmp_path, capsys):
    """A neural model's "fit s" is its training alone, as the fitted baselines' is theirs: forecasting
    the test split (which the baselines' seconds leave out) is not counted in it."""
    import time

    extra = [0.0]  # seconds the fake clock adds: forecasting the test split "takes" 1000 s
    monkeypatch.setattr(bench_alpha, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + extra[0]))
    forecast = bench_alpha.predict_scaled

    def slow_forecast(*args, **kwargs):
        extra[0] += 1000.0
        return forecast(*args, **kwargs)

    monkeypatch.setattr(bench_alpha, "predict_scaled", slow_forecast)
    monkeypatch.setattr(bench_alpha, "fit_baselines", lambda train, val, max_windows, seconds: {})  # the neural rows alone
    data = tmp_path / "data"  # four symbols: a cross-section for the cs_rank label, quick to train on
    data.mkdir()
    for sym in ("AEM", "WPM", "IBKR", "XPO"):
        shutil.copy(ROOT / "src" / "hftraining" / "sample_data" / f"{sym}.csv", data)
    monkeypatch.setattr(sys, "argv", ["bench_alpha.py", "--data", str(data),
                                      "--features", "default", "--neural", "transformer", "--losses", "mse",
                                      "--steps", "1", "--threads", "1"])
    bench_alpha.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("default ")]
    assert [r[:4] for r in rows] == [["default", "return", "mse", "transformer"], ["default", "cs_rank", "mse", "transformer"]]
    for r in rows:
        assert float(r[4]) < 1000.0, r


def test_bench_optim_times_the_production_model_or_fails(monkeypatch):
    """The optimizer table is the production transformer's: when the package's model cannot be
    built the benchmark stops, rather than timing another network under the same heading."""
    monkeypatch.setitem(sys.modules, "hftraining.models", None)  # importing it raises ImportError
    monkeypatch.delitem(sys.modules, "bench_optim", raising=False)  # imported afresh under that
    with pytest.raises(ImportError):
        bench_optim = importlib.import_module("bench_optim")
        bench_optim.build(types.SimpleNamespace(batch=2, seq=8, features=3, horizon=2))
