"""The command line as a user meets it: the run folder beside the data it reads, a printed result that
could not reach its reader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny

from hftraining.cli import main
from hftraining.data.io import sample_data_dir

QUICK = ("training.max_steps=2", "evaluation.eval_steps=1", "training.save_steps=0", "evaluation.report=false")


def _data_folder(d: Path) -> Path:
    d.mkdir(parents=True)
    for name in ("AEM.csv", "WPM.csv"):
        shutil.copy(sample_data_dir() / name, d / name)
    return d


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_a_data_folder_named_with_brackets_is_that_folder_not_a_glob_of_its_parent(tmp_path, capsys):
    """``data.data_dir=prices[2024]``, an existing folder, is read as that folder (the readers take a folder
    before a glob): a run folder that is it was let through (its metrics.csv joined the prices), while the
    folder above it, which no read touches, was refused as the data folder."""
    d = _data_folder(tmp_path / "prices[2024]")
    before = _files(d)
    # the folder above: trained as any folder outside the data
    assert main(["train", *tiny(tmp_path, *QUICK, f"data.data_dir={d}")]) == 0, capsys.readouterr().err
    assert (tmp_path / "final").is_dir() and _files(d) == before
    capsys.readouterr()
    # the folder itself: refused before anything is written into it
    code = main(["train", *tiny(d, *QUICK, "output.report_to=[jsonl,csv]", f"data.data_dir={d}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"data.data_dir={d}" in err, err
    assert _files(d) == before


def test_a_glob_through_a_linked_folder_still_names_the_folder_it_reads(tmp_path, capsys):
    """``data.data_dir=<link>/*/*.csv`` (the data's drive reached through a link) and the run folder given by its
    real path: the glob reads that folder, yet the run trained into it and wrote metrics.csv among the prices,
    which every later read of the glob, the run's own evaluate included, took for a data file."""
    px = _data_folder(tmp_path / "real" / "px")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = _files(px)
    glob_ = f"{tmp_path / 'link'}/*/*.csv"
    code = main(["train", *tiny(px, *QUICK, "output.report_to=[jsonl,csv]", f"data.data_dir={glob_}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "output.output_dir" in err, err
    assert _files(px) == before


def test_evaluate_without_a_report_refuses_a_closed_standard_output(tmp_path, capsys, monkeypatch):
    """``evaluate --no-report`` (or the run's evaluation.report=false) prints its scores and writes them nowhere
    else: with standard output closed it printed nothing and exited 0. Now exit 2, one line, before scoring."""
    from test_inference_serve import make_model

    make_model(tmp_path / "m")
    data = str(sample_data_dir() / "AEM.csv")
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", None)
    for extra in (["--no-report"], ["--set", "evaluation.report=false"]):
        assert main(["evaluate", str(tmp_path / "m"), "--data", data, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("hftraining: error: standard output is closed: the evaluation") and len(err.splitlines()) == 1, err


def test_bench_without_out_refuses_a_closed_standard_output(tmp_path, capsys, monkeypatch):
    """``bench ett`` without ``--out`` prints its table of results and writes it to no file: refused with
    standard output closed, before any data is read, and the message offers --out."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["bench", "ett", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hftraining: error: standard output is closed: the benchmark results") and "--out" in err, err


def _cli(stdout, *args: str, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # standard output buffered, as for a user
    return subprocess.run([sys.executable, "-m", "hftraining", *(args or ("list", "models"))], stdin=subprocess.DEVNULL,
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_listing_into_a_full_disk_is_one_line_and_exit_2(tmp_path):
    """``hftraining list models > file`` on a full disk: the listing was lost at exit, said in two lines of
    "Exception ignored ... OSError" and exit 120. Now one line naming standard output, exit 2. A command whose
    result is files (``data synth``) writes them and exits 0, its summary line said lost on one line."""
    with open("/dev/full", "w") as full:
        proc = _cli(full)
        synth = _cli(full, "data", "synth", "--symbols", "1", "--rows", "50", "--out", str(tmp_path / "s"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "hftraining: error: standard output: cannot write (No space left on device): the list of models not written"]
    assert synth.returncode == 0 and len(list((tmp_path / "s").iterdir())) == 1, synth.stderr
    assert synth.stderr.strip().splitlines() == [
        "hftraining: warning: standard output: cannot write (No space left on device): lines printed there not written"]


def test_a_listing_whose_reader_has_gone_exits_0_without_a_word():
    """``hftraining list models | true``: the reader gone before the listing was written is not an error of the
    command (as for a forecast cut short by ``| head``), yet it was said in two lines of "Exception ignored ...
    BrokenPipeError" and exit 120."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = _cli(w)
    finally:
        os.close(w)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
