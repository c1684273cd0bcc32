"""Where ``hftraining evaluate`` writes its report: the run folder's report.md/report.html describe the
run's own evaluation (eval.json: the test split of the data it was trained on); an evaluation of another
split, of other data or with other evaluation settings never replaces them, and goes to a folder of
its own, ``<run>/evaluations/<name>/``, named the same way every time and printed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.data.io import sample_data_dir
from hftraining.inference.forecaster import Forecaster
from hftraining.train.logging import log
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_inference_serve import make_model  # noqa: E402

OWN = ("report.md", "report.html", "eval.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run with its report, and two data folders of the same name and files."""
    root = tmp_path_factory.mktemp("evalreport")
    train(load_config(None, tiny(root / "run", "training.max_steps=6", "evaluation.eval_steps=0",
                                 f"data.cache_dir={root / 'cache'}")))
    for d in ("a/data", "b/data"):
        (root / d).mkdir(parents=True)
        for sym in ("AEM", "WPM"):
            shutil.copy(sample_data_dir() / f"{sym}.csv", root / d / f"{sym}.csv")
    return root


@pytest.fixture
def run(trained, tmp_path, monkeypatch):
    """A copy of the trained run (each test may add reports to it), with no console logging left on."""
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _hashes(folder: Path, names=OWN) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def _evaluate(capsys, *args) -> str:
    capsys.readouterr()
    rc = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    return out.out


def _report_line(out: str) -> Path:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("report: ")]
    return Path(line[len("report: "):])


def test_evaluating_another_split_keeps_the_runs_report(run, capsys):
    """`evaluate RUN --split val` replaced report.md/report.html of the run (which describe eval.json,
    the test split) with a report of the validation split. Now they stay byte for byte, and the val
    report lands in <run>/evaluations/val/, as printed."""
    before = _hashes(run)
    out = _evaluate(capsys, run, "--split", "val")
    assert _hashes(run) == before
    where = run / "evaluations" / "val"
    assert _report_line(out) == where / "report.html"
    md = (where / "report.md").read_text(encoding="utf-8")
    assert "val split" in md.splitlines()[0] and (where / "report.html").is_file()
    # the same evaluation again finds the same folder, and replaces only its own report
    again = _evaluate(capsys, run, "--split", "val")
    assert _report_line(again) == where / "report.html" and sorted(p.name for p in (run / "evaluations").iterdir()) == ["val"]
    assert _hashes(run) == before


def test_other_data_gets_a_folder_per_data_and_never_a_shared_one(run, trained, capsys, monkeypatch):
    """--data of another folder: not the run's evaluation either. Two data folders of the same name
    get two report folders; the same data, named relatively or absolutely, the same one."""
    before = _hashes(run)
    first = _report_line(_evaluate(capsys, run, "--data", trained / "a" / "data")).parent
    second = _report_line(_evaluate(capsys, run, "--data", trained / "b" / "data")).parent
    assert _hashes(run) == before
    assert first.parent == second.parent == run / "evaluations" and first != second
    assert first.name.startswith("test-data-") and second.name.startswith("test-data-")
    monkeypatch.chdir(trained / "a")
    assert _report_line(_evaluate(capsys, run, "--data", "data")).parent == first
    assert "data " + str(trained / "b" / "data") in (second / "report.md").read_text(encoding="utf-8").splitlines()[0]


def test_other_evaluation_settings_are_not_the_runs_report(run, capsys):
    """--set evaluation.backtest_cost_bps=50 on the test split: its backtest is not eval.json's, so
    its report goes beside; --report-dir still puts a report exactly where it says; and `evaluate RUN`
    (test split, its own data and settings), the evaluation the run's report describes, writes it there."""
    before = _hashes(run)
    out = _evaluate(capsys, run, "--set", "evaluation.backtest_cost_bps=50")
    where = _report_line(out).parent
    assert where.parent == run / "evaluations" and where.name.startswith("test-set-")
    assert _hashes(run) == before
    chosen = run.parent / "chosen"
    assert _report_line(_evaluate(capsys, run, "--split", "val", "--report-dir", chosen)) == chosen / "report.html"
    (run / "report.md").unlink()
    assert _report_line(_evaluate(capsys, run)) == run / "report.html" and (run / "report.md").is_file()
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == [where.name]


def test_a_model_folder_keeps_its_files_and_its_report(tmp_path, capsys, monkeypatch):
    """A bare model folder: its own evaluation's report in the folder, another split's beside it in
    evaluations/<split>/; the files from_pretrained reads are never touched and it still loads."""
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    m = make_model(tmp_path / "m")
    files = sorted(p.name for p in m.iterdir())
    weights = _hashes(m, files)
    _evaluate(capsys, m)
    own = _hashes(m, ("report.md", "report.html"))
    assert _report_line(_evaluate(capsys, m, "--split", "val")) == m / "evaluations" / "val" / "report.html"
    assert _hashes(m, ("report.md", "report.html")) == own and _hashes(m, files) == weights
    Forecaster.from_pretrained(m)


def test_a_fresh_run_in_the_folder_removes_the_earlier_runs_evaluations(run, capsys):
    """Reports of the earlier model (its own, and those in evaluations/) would stand beside a new run
    as if they were its own: output.overwrite removes them with the earlier run's checkpoints and
    final model, also when the new run writes no report."""
    _evaluate(capsys, run, "--split", "val")
    assert (run / "evaluations" / "val" / "report.md").is_file()
    assert (run / "report.md").is_file() and (run / "report.html").is_file() and (run / "report_files").is_dir()
    train(load_config(None, tiny(run, "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
                                 "output.overwrite=true", f"data.cache_dir={run.parent / 'cache'}")))
    assert not (run / "evaluations").exists()
    assert not [n for n in ("report.md", "report.html", "report_files") if (run / n).exists()]


def test_training_data_recorded_as_a_relative_path_read_from_another_folder_says_where_it_came_from(
        run, trained, tmp_path, capsys, monkeypatch):
    """``evaluate RUN`` re-reads the recorded ``data.data_dir``; a relative one is read from the current
    folder. From a folder without it the error named only ``data`` ("no such file or folder")."""
    import json

    pre = run / "final" / "preprocessing.json"
    raw = json.loads(pre.read_text())
    raw["data"]["data_dir"] = "data"  # as a run started in trained/a with data.data_dir=data records it
    pre.write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "preprocessing.json: data.data_dir=data (the data the model was trained on)" in err
    assert str(tmp_path) in err and "--data" in err
    monkeypatch.chdir(trained / "a")  # the folder training ran in: read as recorded
    assert main(["evaluate", str(run), "--no-report"]) == 0
