"""Where forecasts run and what the commands say of them.

- ``bench ett`` predicts a trained model's val/test windows on the device its parameters are on (the
  one it trained on), not always on the CPU.
- The warning of a bf16 folder on a CPU without bf16 instructions, as ``evaluate`` loads it, says the
  forecasts stay in the run's precision, which evaluation scores; fp32 is a Python caller's option.
- ``backtest --portfolio topk`` where no date has two symbols (a single symbol) holds nothing: a
  one-line error naming the key, exit 2; a top-k wider than the symbols allow still backtests, with its
  warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.cli import main  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401 (a fixture: the hftraining logger's records)

FAST = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.report=false", "evaluation.intervals=[]",
        "evaluation.max_test_windows=60", "evaluation.baseline_max_windows=300"]


def test_bench_ett_predicts_on_the_device_the_model_trained_on(monkeypatch):
    """The trained model was predicted with device "cpu" whatever it trained on (a GPU's model: its
    weights on the GPU, its inputs on the CPU). Here its parameters are on the ``meta`` device."""
    from hftraining.workflows import ett

    data = ett.prepare(np.random.default_rng(0).normal(size=(20 * 30 * 24, 2)), "ETTh1", 48, 4)
    cfg = ett.default_model_config("dlinear", "ETTh1")
    model = ett.ChannelModel(ett.build_ett_model("dlinear", cfg, 2, 4, 48), cfg, 2, 4, 48).to("meta")
    seen = []

    def spy(m, ws, batch_size, device="cpu", precision="fp32", max_batches=None):
        seen.append((torch.device(device), precision))
        return np.zeros((len(ws), 4, 2), np.float32)

    monkeypatch.setattr(ett, "predict_scaled", spy)
    out = ett.forecasts(model, data, "val", "bf16")
    assert out.shape == (data.count("val"), 4, 2)
    assert seen == [(torch.device("meta"), "bf16")], seen


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny two-symbol run trained in bf16."""
    run = tmp_path_factory.mktemp("bf16") / "run"
    assert main(["train", *tiny(run, *FAST, "training.precision=bf16")]) == 0
    return run


def test_evaluate_of_a_bf16_run_on_a_cpu_without_bf16_offers_fp32_only_to_a_python_caller(
        bf16_run, monkeypatch, logged, capsys):
    """``evaluate`` must score the run's precision: the warning said, as advice for this command,
    "Forecaster.from_pretrained(..., precision='fp32') is faster"."""
    from hftraining.inference import forecaster as forecaster_module

    monkeypatch.setattr(forecaster_module, "cpu_has_bf16", lambda: False)
    capsys.readouterr()
    assert main(["evaluate", str(bf16_run), "--no-report", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    said = [r.getMessage() for r in logged if "bf16 instructions" in r.getMessage()]
    assert len(said) == 1, said
    assert "software" in said[0] and "they stay in bf16, the run's precision that evaluation scores" in said[0], said
    assert "a Python caller may load the folder with Forecaster.from_pretrained(..., precision='fp32')" in said[0], said
    # scored in bf16 as training scored it: the run's own test figures again
    recorded = json.loads((bf16_run / "eval.json").read_text())
    assert result["model"]["mse"] == pytest.approx(recorded["model"]["mse"], rel=1e-12)


def test_backtest_topk_of_a_single_symbol_is_an_error_naming_the_key(tmp_path, capsys):
    """One symbol: no date ranks two, so the top-k book held nothing and every strategy it trades read
    0%, said only in a ``warning (settings)`` line, exit 0."""
    run = tmp_path / "run"
    assert main(["train", *tiny(run, *FAST, "data.symbols=[AEM]")]) == 0
    capsys.readouterr()
    for argv in (["--portfolio", "topk"], ["--portfolio", "topk", "--long-only", "--topk", "1"]):
        assert main(["backtest", str(run), *argv]) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("hftraining: error:")]
        assert len(errors) == 1 and "Traceback" not in err, err
        err = errors[0]
        assert "evaluation.backtest_portfolio: topk ranks the symbols of a date against each other" in err, err
        assert "no date has 2 of the 1 symbol with a forecast" in err, err
        assert "evaluation.backtest_portfolio=per_symbol" in err, err
    assert main(["backtest", str(run), "--portfolio", "per_symbol"]) == 0  # the portfolio for one symbol


def test_backtest_topk_wider_than_the_symbols_still_runs_with_its_warning(bf16_run, capsys):
    """Two symbols, top-3 long-short: each side holds one; the warning says so and the book trades."""
    capsys.readouterr()
    assert main(["backtest", str(bf16_run), "--portfolio", "topk", "--topk", "3", "--json"]) == 0
    bt = json.loads(capsys.readouterr().out)
    assert bt["settings"]["topk_held"] == 1
    assert "evaluation.backtest_topk: 3 is more than the 2 symbols allow" in bt["settings"]["warning"]
    assert "holds nothing" not in bt["settings"]["warning"]
    assert bt["strategies"]["model"]["turnover"] > 0, bt["strategies"]["model"]
