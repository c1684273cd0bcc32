"""The workflows' folders say what they hold: a purged k-fold fold's data_report.json (and so its report and
model card) counts the windows the fold trained on; ``evaluate RUN`` on a run folder that lacks what its own
evaluation scored (a fitted baseline, the conformal intervals, or everything, the run stopped before it was
scored) is a one-line error naming the missing file, not a verdict against the naive baselines alone."""

from __future__ import annotations

import io
import json
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.cli import main  # noqa: E402

FAST = ["training.max_steps=3", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
        "evaluation.max_eval_batches=1", "evaluation.baseline_max_windows=300", "evaluation.report=false"]


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _one_line_error(rc: int, err: str, *words: str) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert rc == 2 and last.startswith("hftraining: error: ") and "Traceback" not in err, err
    assert all(w in last for w in words), last
    return last


# ------------------------------------------------------------------ purged k-fold: the windows a fold trained on


def test_purged_kfold_fold_reports_the_windows_it_trained_on(tmp_path):
    """A purged k-fold fold trains on the windows before its test block and those after it, joined; its
    data_report.json (the report's data table and the model card read it) still counted them apart, as
    train and val: fold 2 said "train 974, val 1014" of a model trained on 1,988 windows with no validation."""
    run = tmp_path / "run"
    rc, _, err = _run("walkforward", "--folds", "3", "--scheme", "purged_kfold", *tiny(run, *FAST, "evaluation.intervals=[]"))
    assert rc == 0, err
    wf = json.loads((run / "walkforward" / "walkforward.json").read_text())
    middle = 0
    for f in wf["folds"]:
        fold = run / "walkforward" / f"fold-{f['fold']}"
        windows = json.loads((fold / "data_report.json").read_text())["windows"]
        assert windows == {"train": f["train_windows"], "val": 0, "test": f["n_windows"]}, (f["fold"], windows)
        card = (fold / "final" / "README.md").read_text(encoding="utf-8")
        assert f"train {f['train_windows']:,}, val 0, test {f['n_windows']:,}" in card
        middle += f["fold"] == 2 and f["train_windows"] > 0
    assert middle == 1  # the middle fold trains on both sides of its test block


# ------------------------------------------------------------------ evaluate RUN of an incomplete run folder


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A finished run with conformal intervals, its eval.json as training wrote it."""
    run = tmp_path_factory.mktemp("scored") / "run"
    rc, _, err = _run("train", *tiny(run, *FAST))
    assert rc == 0, err
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_evaluate_reproduces_eval_json_of_the_complete_run(scored):
    """The run folder as training left it: ``evaluate RUN`` gives eval.json's numbers and verdict exactly."""
    rc, out, err = _run("evaluate", str(scored), "--json", "--no-report")
    assert rc == 0, err
    got, saved = json.loads(out), json.loads((scored / "eval.json").read_text())
    for key in ("model", "baselines", "strongest_baseline", "verdict", "intervals", "backtest"):
        assert got[key] == saved[key], key


@pytest.mark.parametrize("gone", ["baselines", "baselines/lightgbm"])
def test_evaluate_of_a_run_without_its_fitted_baselines_names_the_folder(scored, tmp_path, gone):
    """``<run>/baselines/`` (or one baseline in it) gone: evaluate scored the model against the naive baselines
    alone and exited 0, its verdict naming another strongest baseline than eval.json's, and wrote that report
    as the run's own. It is a one-line error naming the missing folder."""
    run = _copy(scored, tmp_path)
    shutil.rmtree(run / gone)
    missing = "ridge" if gone == "baselines" else "lightgbm"
    rc, _, err = _run("evaluate", str(run), "--json", "--no-report")
    _one_line_error(rc, err, f"{run / 'baselines' / missing}: missing", "eval.json", f"fitted:{missing}")


def test_evaluate_of_a_run_without_its_intervals_names_the_file(scored, tmp_path):
    """final/intervals.json gone: eval.json scores the model's intervals, evaluate gave none and exited 0."""
    run = _copy(scored, tmp_path)
    assert "intervals" in json.loads((run / "eval.json").read_text())
    (run / "final" / "intervals.json").unlink()
    rc, _, err = _run("evaluate", str(run), "--json", "--no-report")
    _one_line_error(rc, err, f"{run / 'final' / 'intervals.json'}: missing", "eval.json")


def test_evaluate_of_a_run_stopped_before_it_was_scored_says_to_finish_it(tmp_path, monkeypatch):
    """A run stopped after its model was saved and before its test split was scored (no eval.json, no fitted
    baselines, its card "not evaluated"): evaluate gave a verdict against the naive baselines alone, as if it
    were the run's. It is a one-line error naming the missing fitted baselines and the resume that finishes the
    run; once resumed, evaluate reproduces its eval.json."""
    import hftraining.workflows.train_run as train_run

    run = tmp_path / "run"
    args = tiny(run, *FAST, "training.save_steps=3")

    def stopped(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(train_run, "fit_baselines", stopped)
        try:
            _run("train", *args)
        except KeyboardInterrupt:
            pass
    assert (run / "final" / "model.safetensors").is_file() and not (run / "eval.json").exists()
    rc, _, err = _run("evaluate", str(run), "--json", "--no-report")
    _one_line_error(rc, err, f"{run / 'baselines' / 'ridge'}: missing", "not evaluated", "--resume")

    rc, _, err = _run("train", *args, "training.resume_from_checkpoint=auto")
    assert rc == 0, err
    rc, out, err = _run("evaluate", str(run), "--json", "--no-report")
    assert rc == 0, err
    got, saved = json.loads(out), json.loads((run / "eval.json").read_text())
    assert got["model"] == saved["model"] and got["verdict"] == saved["verdict"]


def test_a_bare_model_folder_is_still_scored_against_the_naive_baselines(scored, tmp_path):
    """final/ copied out, as the errors above suggest: a model folder, scored without fitted baselines."""
    bare = tmp_path / "bare"
    shutil.copytree(scored / "final", bare)
    rc, out, err = _run("evaluate", str(bare), "--json", "--no-report")
    assert rc == 0, err
    got = json.loads(out)
    assert set(got["baselines"]).isdisjoint({"ridge", "lightgbm"}) and got["model"] == json.loads(
        (scored / "eval.json").read_text())["model"]
