"""The command line as a user meets it: an output folder that is the data folder, standard output closed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import tiny

from hftraining.cli import main
from hftraining.data.io import sample_data_dir

TUNE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tune_quickstart.yaml"


def _data_folder(d: Path) -> Path:
    d.mkdir()
    for name in ("AEM.csv", "WPM.csv"):
        shutil.copy(sample_data_dir() / name, d / name)
    return d


def test_train_into_its_own_data_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    """``output.output_dir`` naming the folder of ``data.data_dir`` (itself, or the folder its glob reads):
    the run wrote metrics.csv (output.report_to csv) beside the data files and exited 0, and every later read
    of that folder, the run's own evaluate and predict included, failed on metrics.csv as a data file
    without a timestamp column. Now exit 2, one line naming both keys, and the folder left as it was."""
    d = _data_folder(tmp_path / "d")
    before = sorted(os.listdir(d))
    for data in (str(d), f"{d}/*.csv"):
        code = main(["train", *tiny(d, "training.max_steps=2", "evaluation.eval_steps=1", "training.save_steps=0",
                                    "output.report_to=[jsonl,csv]", f"data.data_dir={data}")])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "output.output_dir" in err and f"data.data_dir={data}" in err, err
        assert sorted(os.listdir(d)) == before
    # a run folder inside the data folder is not one its reads list: trained as before
    assert main(["train", *tiny(d / "run", "training.max_steps=2", "evaluation.eval_steps=1", "training.save_steps=0",
                                "evaluation.report=false", f"data.data_dir={d}")]) == 0
    assert (d / "run" / "final").is_dir() and sorted(p.name for p in d.iterdir() if p.is_file()) == before


def test_tune_out_into_its_data_folder_is_refused(tmp_path, capsys):
    """``tune --out`` naming the data folder (as if it were the data's flag): trials.csv was written beside the
    data files, and the next tune of the study, or any train on that data, failed on it as a data file."""
    d = _data_folder(tmp_path / "d")
    before = sorted(os.listdir(d))
    code = main(["tune", "--config", str(TUNE_CONFIG), "--trials", "1", "--out", str(d),
                 *tiny(None, "training.max_steps=2", "evaluation.eval_steps=1", "training.use_mixed_precision=false",
                       f"data.data_dir={d}")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"hftraining: error: --out {d}:") and len(err.splitlines()) == 1, err
    assert sorted(os.listdir(d)) == before


def test_predict_with_standard_output_closed_exits_2_instead_of_losing_the_forecasts(tmp_path, capsys, monkeypatch):
    """``predict`` without ``--out`` and with standard output closed (``>&-``, where Python sets sys.stdout to
    None): pandas' to_csv(None) returned the CSV as a string, nothing was written and the command exited 0.
    Now exit 2 before the model is loaded; with ``--out`` the forecasts are written as before."""
    from test_inference_serve import make_model

    make_model(tmp_path / "m")
    data = str(sample_data_dir() / "AEM.csv")
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["predict", str(tmp_path / "m"), "--data", data]) == 2
    err = capsys.readouterr().err.strip()
    assert "standard output is closed" in err and "--out" in err and len(err.splitlines()) == 1, err
    assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(tmp_path / "fc.csv")]) == 0
    assert (tmp_path / "fc.csv").read_text().startswith("symbol,")


def test_a_listing_with_standard_output_closed_is_an_error_not_an_empty_success():
    """``hftraining list features >&-`` printed nothing and exited 0: a script took the empty list for the
    answer."""
    proc = subprocess.run([sys.executable, "-m", "hftraining", "list", "features"], stdin=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "hftraining: error: standard output is closed: the list of features printed there would be lost; "
        "redirect it to a file"]
