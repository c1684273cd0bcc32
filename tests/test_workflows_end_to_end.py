"""A short real run through every layer: train → run folder → evaluate → predict."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.inference.forecaster import Forecaster
from hftraining.models import ForecastModel
from hftraining.workflows.train_run import train
from conftest import fixed_window_loss, initial_weights, tiny  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    overrides = tiny(
        tmp / "run", "training.max_steps=40", "training.logging_steps=1", "training.learning_rate=0.003",
        "training.save_steps=10", "training.save_total_limit=2", "evaluation.eval_steps=20", "output.tensorboard=true",
    )
    cfg = load_config(None, overrides)
    with initial_weights() as init:
        result = train(cfg)
    return cfg, tmp / "run", result, init


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_folder_contract(run):
    cfg, run_dir, result, _ = run
    for name in ("config.json", "metrics.jsonl", "train.log", "eval.json", "final/config.json",
                 "final/model.safetensors", "final/preprocessing.json"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    state = json.loads((run_dir / "checkpoints" / "step-00000040" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and state["best_step"] in (20, 40)
    # save_total_limit=2 rotated the oldest away, but never the best or the latest
    expected = ["step-00000030", "step-00000040"] if state["best_step"] == 40 else ["step-00000020", "step-00000040"]
    assert ckpts == expected
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["training"]["max_steps"] == 40


def test_loss_goes_down_and_lr_is_the_one_used(run):
    cfg, run_dir, _, init = run
    train_recs = [r for r in _records(run_dir) if "loss" in r and "learning_rate" in r]
    assert [r["step"] for r in train_recs] == list(range(1, 41))
    # the loss on 1,024 fixed training windows with the starting and the final weights
    windows = prepare(cfg.data).train
    final = Forecaster.from_pretrained(run_dir).model
    untrained = type(final)(final.cfg, final.n_features, final.horizon, final.seq_len)
    untrained.load_state_dict(init)
    assert fixed_window_loss(final, windows) < 0.99 * fixed_window_loss(untrained, windows)
    lrs = [r["learning_rate"] for r in train_recs]
    assert all(lr > 0 for lr in lrs)  # warmup starts above 0
    assert max(lrs) == pytest.approx(0.003, rel=1e-6)
    assert lrs[-1] < lrs[len(lrs) // 2]  # cosine decay
    assert all(r["samples_per_second"] > 0 for r in train_recs)
    evals = [r for r in _records(run_dir) if "eval_mse" in r]
    assert [r["step"] for r in evals] == [20, 40]


def test_eval_json_has_model_and_naive_baseline(run):
    _, run_dir, result, _ = run
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["model"]["mse"] == pytest.approx(result["model"]["mse"])
    zero = saved["baselines"]["zero"]
    assert zero["directional_accuracy"] == 0.5 and zero["mse"] > 0
    assert saved["mse_vs_zero"] == pytest.approx(saved["model"]["mse"] / zero["mse"])


def test_final_model_round_trip_identical(run):
    cfg, run_dir, _, _ = run
    m1 = ForecastModel.from_pretrained(run_dir / "final").eval()
    x, past = torch.randn(4, 20, m1.n_features), torch.randn(4, 20)
    out1 = m1(x, None, past).prediction
    m1.save_pretrained(run_dir / "copy")
    m2 = ForecastModel.from_pretrained(run_dir / "copy").eval()
    torch.testing.assert_close(m2(x, None, past).prediction, out1, rtol=0, atol=0)


def test_evaluate_cli_reproduces_eval_json(run):
    _, run_dir, _, _ = run
    proc = subprocess.run([sys.executable, "-m", "hftraining", "evaluate", str(run_dir), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert got["n_windows"] == saved["n_windows"]
    assert got["model"]["mse"] == pytest.approx(saved["model"]["mse"], rel=1e-5)


def test_predict_cli_writes_latest_forecasts(run, tmp_path):
    _, run_dir, _, _ = run
    from hftraining.data.io import sample_data_dir

    out = tmp_path / "pred.csv"
    data = [str(sample_data_dir() / "AEM.csv")]
    proc = subprocess.run([sys.executable, "-m", "hftraining", "predict", str(run_dir / "final"),
                           "--data", data[0], "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert list(table["step"]) == [1, 2, 3] and set(table["symbol"]) == {"AEM"}
    raw = pd.read_csv(data[0])
    assert table["last_close"].iloc[0] == pytest.approx(raw["close"].iloc[-1])
    assert pd.Timestamp(table["as_of"].iloc[0]) == pd.Timestamp(raw["Date"].iloc[-1], tz="UTC")
    direct = Forecaster.from_pretrained(run_dir).predict(data[0])
    np.testing.assert_allclose(table["forecast_return"], direct["forecast_return"], rtol=1e-6)


def test_existing_run_folder_is_not_overwritten_silently(run, capsys):
    # in process: `hftraining train`'s exit code and stderr from a real process are tested in test_core_config.py
    from hftraining.cli import main

    cfg, run_dir, _, _ = run
    capsys.readouterr()
    rc = main(["train", "model.hidden_size=16", "model.num_heads=2", f"output.output_dir={run_dir}"])
    err = capsys.readouterr().err
    assert rc == 2 and "--resume" in err and "Traceback" not in err
    assert (run_dir / "checkpoints" / "step-00000040").exists()


def test_predict_missing_model_dir_is_exit_2(tmp_path, capsys):
    # in process: `hftraining predict` as a real process is test_predict_cli_writes_latest_forecasts (exit 0) and
    # test_inference_hostile_folders.py's test_the_command_line_says_one_line_and_exits_2[config_link_dev_zero] (exit 2)
    from hftraining.cli import main

    capsys.readouterr()
    rc = main(["predict", str(tmp_path / "nope"), "--data", "x.csv"])
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and err.count("\n") == 1


def test_a_report_dir_without_a_report_is_a_one_line_error(tmp_path, capsys):
    """``evaluate --report-dir DIR`` of a run trained with evaluation.report=false (or with --no-report)
    wrote no report and said nothing (exit 0); now exit 2 naming the flag, and --set evaluation.report=true
    writes it there."""
    from hftraining.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", *tiny(run_dir, "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
                                "evaluation.baseline_max_windows=200")]) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", str(run_dir), "--report-dir", str(out)]) == 2
    assert capsys.readouterr().err == ("hftraining: error: --report-dir: no report is written (evaluation.report=false, "
                                       "the run's setting); add --set evaluation.report=true\n")
    assert main(["evaluate", str(run_dir), "--report-dir", str(out), "--set", "evaluation.report=true", "--no-report"]) == 2
    assert capsys.readouterr().err == "hftraining: error: --report-dir: no report is written with --no-report\n"
    assert not out.exists()
    assert main(["evaluate", str(run_dir), "--report-dir", str(out), "--set", "evaluation.report=true"]) == 0
    assert (out / "report.html").exists()
