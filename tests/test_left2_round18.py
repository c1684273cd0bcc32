"""A checkpoint written before checksums without its schedule's state is a one-line error naming the file;
``bench ett --out -`` is refused in one line (it wrote a file named ``-``); a member folder of an ensemble
evaluated alone is scored with the evaluation settings and fitted baselines that ensemble recorded of its run;
a purged k-fold fold's data_report.json lists the training rows after its test block as training rows."""

from __future__ import annotations

import io
import json
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import TrainingConfig, load_config  # noqa: E402
from hftraining.core.errors import DataError  # noqa: E402
from hftraining.eval.report import split_text  # noqa: E402
from hftraining.inference.ensemble import build_ensemble  # noqa: E402
from hftraining.optim.stepper import TrainOptimizer  # noqa: E402
from hftraining.workflows.walkforward import prepare_fold  # noqa: E402


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


# --- a checkpoint written before checksums without its schedule's state ------------------------------------------

COMMON = ("training.save_steps=4", "evaluation.eval_steps=4", "training.logging_steps=4", "output.report_to=[jsonl]",
          "evaluation.report=false", "training.use_mixed_precision=false")


def _stepper(max_steps: int = 10) -> TrainOptimizer:
    torch.manual_seed(0)
    return TrainOptimizer(nn.Linear(3, 2), TrainingConfig(max_steps=max_steps, warmup_steps=2))


def test_schedule_state_without_its_position_rates_or_lengths_is_a_data_error():
    """``load_schedule({})`` raised ``KeyError: 'lr_lambdas'`` from torch; a position or warmup of another kind a
    TypeError. Each is a DataError saying what is missing or wrong; a whole state still restores the rate."""
    s = _stepper()
    for _ in range(3):
        s.step(torch.tensor(0.0))
    state = s.scheduler.state_dict()
    groups = len(s.optimizer.param_groups)
    bad = [({}, "scheduler has no last_epoch"),
           ({k: v for k, v in state.items() if k != "lr_lambdas"}, "scheduler has no lr_lambdas"),
           ({k: v for k, v in state.items() if k != "base_lrs"}, "scheduler has no base_lrs"),
           ({**state, "last_epoch": "3"}, "scheduler's last_epoch must be a whole number"),
           ({**state, "last_epoch": -1}, "scheduler's last_epoch must be a whole number"),
           ({**state, "base_lrs": [1e-3] * (groups + 1)}, f"scheduler's base_lrs must be a list of {groups} finite"),
           ({**state, "base_lrs": [float("nan")] * groups}, "scheduler's base_lrs must be a list"),
           ({**state, "lr_lambdas": [[1]] * groups}, "scheduler's lr_lambdas must be a list"),
           ({**state, "lr_lambdas": [{**state["lr_lambdas"][0], "warmup": "2"}] * groups},
            "scheduler's lr_lambdas warmup must be a whole number"),
           ([1, 2], "scheduler must be an object")]
    for state_bad, says in bad:
        t = _stepper()
        with pytest.raises(DataError, match=says):
            t.load_schedule(state_bad)
    t = _stepper()
    t.load_schedule(state)
    assert t.lr == s.lr and t.scheduler.last_epoch == 3 and state["lr_lambdas"] is not None  # the caller's dict kept


from test_review_checkpoint_round18 import legacy_run  # noqa: E402,F401  (a run whose checkpoint has no checksums)
from test_small_round18 import resume_with_edited_state  # noqa: E402


@pytest.mark.parametrize("edit,says", [(lambda s: s.pop("scheduler"), "scheduler has no last_epoch"),
                                       (lambda s: s["scheduler"].pop("lr_lambdas"), "scheduler has no lr_lambdas"),
                                       (lambda s: s["scheduler"].update(last_epoch="4"), "scheduler's last_epoch must be")],
                         ids=["no-scheduler", "no-lr-lambdas", "position-a-string"])
def test_resume_of_a_checkpoint_without_its_schedule_state_is_one_line_naming_the_file(legacy_run, tmp_path, monkeypatch,
                                                                                        capsys, edit, says):
    """A trainer_state.json without ``scheduler``: a ``KeyError: 'lr_lambdas'`` traceback from torch's LambdaLR,
    naming no file. Now one line naming trainer_state.json, exit 2."""
    resume_with_edited_state(legacy_run, tmp_path, monkeypatch, capsys, edit, says)


# --- bench ett --out - --------------------------------------------------------------------------------------------


def test_bench_ett_out_dash_is_refused_before_any_cell(tmp_path, monkeypatch):
    """``bench ett --out -`` ran every cell and wrote the results' JSON into a file named ``-`` in the working
    folder, where ``predict --out -`` writes to standard output. Standard output carries the cells' progress and
    the table: refused in one line before any data is read, and no file named ``-`` is written."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "ett"
    data.mkdir()
    rc, out, err = _run("bench", "ett", "--data", str(data), "--model", "linear", "--threads", "1", "--out", "-")
    assert rc == 2, err
    assert err.strip() == "hftraining: error: --out -: standard output carries the progress and the table; give a file name"
    assert not (tmp_path / "-").exists() and out == ""
    rc, _, err = _run("bench", "ett", "--data", str(data), "--model", "linear", "--save-predictions", "-")
    assert rc == 2 and err.strip().startswith("hftraining: error: --save-predictions -: standard output"), err
    assert not (tmp_path / "-").exists()


# --- a member folder of an ensemble evaluated alone ---------------------------------------------------------------

ENS_ARGS = ["model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=3",
            "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
            "evaluation.baseline_max_windows=300", "evaluation.max_test_windows=300"]


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    """Two runs that score at most 300 test windows (not the default) against fitted baselines, and their ensemble."""
    root = tmp_path_factory.mktemp("left2ens")
    for seed in (0, 1):
        assert main(["train", *tiny(root / f"run{seed}", *ENS_ARGS, f"training.seed={seed}")]) == 0
    return root, build_ensemble([root / "run0", root / "run1"], root / "ens")


def _evaluate(path: Path) -> dict:
    rc, out, err = _run("evaluate", str(path), "--json", "--no-report")
    assert rc == 0, err
    return json.loads(out)


def test_a_member_evaluated_alone_keeps_its_runs_settings_and_fitted_baselines(ens):
    """``evaluate ens/members/member-0`` scored every test window (the default 50,000, not its run's 300) against
    the naive baselines alone, where its run had been judged against ridge and LightGBM: another strongest baseline
    and verdict for the same model. The ensemble recorded both; the member alone is now scored as its run is."""
    root, first = ens
    run, member = _evaluate(root / "run0"), _evaluate(first / "members" / "member-0")
    assert {"ridge", "lightgbm"} <= set(member["baselines"])
    assert member["n_windows"] == run["n_windows"] <= 300
    assert set(member["baselines"]) == set(run["baselines"])
    assert member["strongest_baseline"]["name"] == run["strongest_baseline"]["name"]
    assert member["model"]["mse"] == run["model"]["mse"] and member["verdict"] == run["verdict"]
    # backtest reads the same settings
    rc, out, err = _run("backtest", str(first / "members" / "member-0"), "--json")
    assert rc == 0, err


def test_a_member_replaced_since_is_evaluated_as_a_bare_folder(ens, tmp_path):
    """A member folder with another model's files copied over it is not the model the ensemble recorded settings
    for: it is scored with the defaults against the naive baselines, as any bare model folder."""
    root, first = ens
    copy = tmp_path / "ens"
    shutil.copytree(first, copy)
    shutil.rmtree(copy / "members" / "member-1")
    shutil.copytree(root / "run0" / "final", copy / "members" / "member-1")  # another model's files
    got = _evaluate(copy / "members" / "member-1")
    assert not {"ridge", "lightgbm"} & set(got["baselines"])
    assert got["n_windows"] > 300


# --- a purged k-fold fold's data_report.json ----------------------------------------------------------------------


@pytest.mark.parametrize("split", ["per_symbol", "calendar"])
def test_a_purged_folds_rows_after_its_test_block_are_reported_as_training_rows(split):
    """Fold 1 of 3 trains on the rows before and after its test block and has no validation windows
    (``windows.val`` 0), yet ``split.symbols.<sym>.val`` held the dates after the block: a reader took them for
    the fold's validation period. They are ``train_after_test`` now, ``val`` is null, and the report's data table
    still gives the training dates on both sides of the test's."""
    cfg = load_config(None, tiny(None, f"data.split={split}"))
    data = prepare_fold(cfg, None, 1, 3, "purged_kfold")
    assert data.report["windows"]["val"] == 0 and len(data.val) == 0
    for sym, per in data.report["split"]["symbols"].items():
        assert per["val"] is None, (sym, per)
        after, test, before = per["train_after_test"], per["test"], per["train"]
        assert after is not None and before is not None, (sym, per)
        assert pd.Timestamp(before[1]) < pd.Timestamp(test[0]) <= pd.Timestamp(test[1]) < pd.Timestamp(after[0]), per
    said = split_text(data.report["split"], "purged_kfold")
    assert "validation" not in said and " and " in said.split("train ", 1)[1], said
    # a fold without rows after its block (the last) lists none
    last = prepare_fold(cfg, None, 2, 3, "purged_kfold")
    assert all(per["val"] is None and per["train_after_test"] is None for per in last.report["split"]["symbols"].values())
