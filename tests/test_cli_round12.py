"""Command-line input that was read as something else than what was typed: an empty argument (an unset
shell variable) taken as "not given" or as the working folder, a flag given twice whose last value
silently won, and a `data check`/`data features` `--set` of another section that did nothing. Each is
one line on stderr naming the flag or key, exit 2, and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hftraining.cli import main
from hftraining.data.io import sample_data_dir
from hftraining.train.logging import log
from test_inference_serve import make_model  # noqa: E402

SAMPLE = str(sample_data_dir() / "AEM.csv")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "m1")


def _refused(argv: list[str], names: str, capsys, monkeypatch) -> str:
    """Run ``argv``; assert exit 2, one line on stderr naming ``names``, nothing on stdout → the line."""
    # as in a fresh process: no console logging left on by an earlier test
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors end the process
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    assert err.count("\n") == 1 and err.startswith("hftraining") and "Traceback" not in err, err[-2000:]
    assert names in err, err
    assert out == "", out[:500]
    return err


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_empty_model_folder_argument_is_not_the_working_folder(model, tmp_path, monkeypatch, capsys):
    """``predict "$MODEL" --data ...`` with MODEL unset forecast with the model folder the shell stood in."""
    here = tmp_path / "here"
    shutil.copytree(model, here)
    monkeypatch.chdir(here)
    err = _refused(["predict", "", "--data", SAMPLE], "MODEL_DIR", capsys, monkeypatch)
    assert "empty" in err


@pytest.mark.parametrize("case", ["predict_out", "predict_data", "check_config", "synth_out", "report_dir"])
def test_an_empty_argument_is_refused_naming_its_flag(case, model, tmp_path, monkeypatch, capsys):
    """An empty value was read as the flag not given (``predict --out ""``: the CSV on standard output,
    exit 0; ``--config ""``: the defaults; ``--report-dir ""``: the default report folder) or as the
    working folder (``--data ""``, ``data synth --out ""``: files written where the shell stood)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv, flag = {
        "predict_out": (["predict", str(model), "--data", SAMPLE, "--out", ""], "--out"),
        "predict_data": (["predict", str(model), "--data", ""], "--data"),
        "check_config": (["data", "check", SAMPLE, "--config", ""], "--config"),
        "synth_out": (["data", "synth", "--symbols", "1", "--rows", "50", "--out", ""], "--out"),
        "report_dir": (["evaluate", str(model), "--set", "evaluation.report=true", "--report-dir", "  "], "--report-dir"),
    }[case]
    before = _listing(model)
    err = _refused(argv, flag, capsys, monkeypatch)
    assert "empty" in err
    assert _listing(work) == [] and _listing(model) == before


def test_a_flag_given_twice_is_refused_not_the_last_one_winning(model, tmp_path, monkeypatch, capsys):
    """``predict ... --out a.csv --out b.csv`` wrote b.csv alone, exit 0; ``--config a.yaml --config b.yaml``
    read b.yaml alone."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _refused(["predict", str(model), "--data", SAMPLE, "--out", str(a), "--out", str(b)], "--out", capsys, monkeypatch)
    assert not a.exists() and not b.exists()
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("data:\n  jumps: flag\n")
    _refused(["data", "check", SAMPLE, "--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml")],
             "--config", capsys, monkeypatch)
    _refused(["data", "synth", "--symbols", "1", "--rows", "50", "--out", str(tmp_path / "s1"), "--out",
              str(tmp_path / "s2")], "--out", capsys, monkeypatch)
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_repeatable_flags_still_repeat(tmp_path, monkeypatch, capsys):
    """``--set`` is repeatable (each one a setting), as is ``serve --cors-origin``: only a flag that holds one
    value is refused twice."""
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    assert main(["data", "check", SAMPLE, "--set", "jumps=flag", "--set", "cache_dir=null", "--json"]) == 0
    assert '"files"' in capsys.readouterr().out


@pytest.mark.parametrize("command", ["check", "features"])
def test_data_set_of_another_section_is_refused(command, tmp_path, monkeypatch, capsys):
    """``data check --set training.max_steps=3`` was accepted and did nothing (only the data section applies);
    ``evaluate --set`` and ``backtest --set`` refuse a key of another section in the same words."""
    out = tmp_path / "f.csv"
    argv = ["data", command, SAMPLE, *(["--out", str(out)] if command == "features" else []),
            "--set", "training.max_steps=3"]
    err = _refused(argv, "training.max_steps: only data.* settings apply here", capsys, monkeypatch)
    assert "training.max_steps" in err
    assert not out.exists()


def test_a_date_the_calendar_has_not_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """YAML reads an unquoted ``2024-13-45`` as a date; the calendar has none, and the ValueError of its
    constructor was a traceback (exit 1) for an override and for a config file alike."""
    monkeypatch.chdir(tmp_path)
    err = _refused(["data", "check", SAMPLE, "--set", "start_date=2024-13-45"], "data.start_date", capsys, monkeypatch)
    assert "'2024-13-45' is not a valid date" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training:\n  max_steps: 2\ndata:\n  start_date: 2024-02-30\n")
    err = _refused(["train", "--config", str(cfg)], str(cfg), capsys, monkeypatch)
    assert "line 4: '2024-02-30' is not a valid date" in err
    assert not (tmp_path / "runs").exists()
