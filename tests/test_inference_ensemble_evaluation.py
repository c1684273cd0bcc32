"""An ensemble is evaluated with the evaluation settings its members' runs were trained with (recorded in
ensemble.json by ``build_ensemble``), not the defaults: its eval.json and backtest compare with theirs."""

import json
import logging
import shutil

import pytest

from hftraining.cli import main
from hftraining.inference.ensemble import build_ensemble
from conftest import tiny  # noqa: E402

SETTINGS = ["evaluation.backtest_cost_bps=25", "evaluation.backtest_slippage_bps=1", "evaluation.max_test_windows=60",
            "evaluation.periods_per_year=100"]
TINY = tiny(None, "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=4",
            "training.save_steps=0", "evaluation.eval_steps=0", *SETTINGS)


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds-ev") / "run"
    assert main(["train", "--seeds", "2", *TINY, f"output.output_dir={root}"]) == 0
    return root


def _backtest(path, capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["backtest", str(path), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)["settings"]


def _edit(path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def test_a_seeds_run_is_evaluated_with_its_members_evaluation_settings(seeds_run, capsys, tmp_path):
    member = _backtest(seeds_run / "seed-0", capsys)
    assert member["cost_bps"] == 25 and member["periods_per_year"] == 100
    assert _backtest(seeds_run, capsys) == member  # the --seeds root (its ensemble/) as its member
    assert _backtest(seeds_run / "ensemble", capsys) == member
    capsys.readouterr()
    assert main(["evaluate", str(seeds_run), "--json", "--no-report"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backtest"]["settings"] == member and result["n_windows"] <= 60  # max_test_windows too
    # the command's settings still apply on top of the recorded ones
    over = _backtest(seeds_run, capsys, "--cost-bps", "3", "--set", "evaluation.periods_per_year=12")
    assert (over["cost_bps"], over["periods_per_year"], over["slippage_bps"]) == (3, 12, 1)
    # an ensemble folder written before the settings were recorded (no "evaluation" key) is read: the defaults
    old = tmp_path / "old"
    shutil.copytree(seeds_run / "ensemble", old)
    _edit(old / "ensemble.json", lambda o: o.pop("evaluation"))
    assert _backtest(old, capsys)["cost_bps"] == 5


def test_members_whose_evaluation_settings_differ_record_none_and_say_which_key(seeds_run, tmp_path, capsys, caplog):
    other = tmp_path / "other"
    shutil.copytree(seeds_run / "seed-1", other, ignore=shutil.ignore_patterns("checkpoints"))
    _edit(other / "config.json", lambda o: o["evaluation"].update(backtest_cost_bps=10))
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        out = build_ensemble([seeds_run / "seed-0", other], tmp_path / "ens")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("evaluation.backtest_cost_bps differs" in m and str(other) in m for m in warned), warned
    assert json.loads((out / "ensemble.json").read_text())["evaluation"] is None
    assert _backtest(out, capsys)["cost_bps"] == 5  # the defaults, said by the warning


@pytest.mark.parametrize("change, key", [
    (lambda ev: ev.update(backtest_cost_bps="x"), "evaluation.backtest_cost_bps"),
    (lambda ev: ev.update(backtest_cost_bps=-1), "evaluation.backtest_cost_bps"),
    (lambda ev: ev.update(backtest_portfolio="all"), "evaluation.backtest_portfolio"),
])
def test_a_bad_recorded_evaluation_section_is_a_one_line_error_naming_the_file_and_key(seeds_run, tmp_path, capsys,
                                                                                      change, key):
    bad = tmp_path / "bad"
    shutil.copytree(seeds_run / "ensemble", bad)
    _edit(bad / "ensemble.json", lambda o: change(o.setdefault("evaluation", {})))
    capsys.readouterr()
    for cmd in (["backtest", str(bad), "--json"], ["evaluate", str(bad), "--json", "--no-report"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{bad / 'ensemble.json'}: {key}" in err, err


def test_a_seeds_run_trained_with_cqr_intervals_is_evaluated_as_its_members(tmp_path, capsys):
    """evaluation.interval_method=cqr is checked beside the model's quantiles (which hold the levels it needs),
    not a default model without any: the run, its member and its ensemble evaluate alike."""
    root = tmp_path / "cqr"
    assert main(["train", "--seeds", "2", *TINY, "model.quantiles=[0.1, 0.9]", "evaluation.intervals=[0.8]",
                 "evaluation.interval_method=cqr", f"output.output_dir={root}"]) == 0
    member = _backtest(root / "seed-0", capsys)
    assert member["cost_bps"] == 25 and _backtest(root, capsys) == member


def test_members_differing_only_in_a_training_only_key_keep_their_common_evaluation_settings(seeds_run, tmp_path,
                                                                                            capsys, caplog):
    """Members whose runs validated at another cadence (eval_steps) or on fewer windows (max_val_windows) are
    evaluated alike: only the keys that act on a trained model are compared and recorded."""
    other = tmp_path / "other"
    shutil.copytree(seeds_run / "seed-1", other, ignore=shutil.ignore_patterns("checkpoints"))
    _edit(other / "config.json", lambda o: o["evaluation"].update(eval_steps=7, max_val_windows=100))
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        out = build_ensemble([seeds_run / "seed-0", other], tmp_path / "ens")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    recorded = json.loads((out / "ensemble.json").read_text())["evaluation"]
    assert recorded["backtest_cost_bps"] == 25 and recorded["periods_per_year"] == 100
    assert not {"eval_steps", "max_val_windows", "intervals"} & set(recorded)  # training-only keys: not recorded
    assert _backtest(out, capsys) == _backtest(seeds_run / "seed-0", capsys)
