"""A user's journeys through the command line that involve more than one command at a time."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hftraining.cli import main
from hftraining.data.io import sample_data_dir
from conftest import tiny  # noqa: E402


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def test_a_second_train_into_a_run_folder_being_trained_is_refused(tmp_path, capsys):
    """Two ``train`` commands into one output folder each removed and overwrote the other's files and
    both exited 0: the folder held one run's model beside the other's logs. The second is one line,
    exit 2, naming the folder, and the first run goes on untouched."""
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "hftraining", "train", *tiny(run, "training.max_steps=100000", "training.save_steps=0",
                                                            "training.logging_steps=1", "evaluation.eval_steps=0",
                                                            "evaluation.report=false", f"data.cache_dir={tmp_path / 'cache'}")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert first.poll() is None, "the first run ended early"
            assert time.monotonic() < deadline, "the first run did not start training"
            time.sleep(0.1)
        capsys.readouterr()
        rc = main(["train", *tiny(run, "training.max_steps=2", "training.seed=9", "output.overwrite=true",
                                  f"data.cache_dir={tmp_path / 'cache'}")])
        err = capsys.readouterr().err
        assert rc == 2
        assert err.count("\n") == 1 and str(run) in err and "another hftraining process" in err, err
        before = {k: v for k, v in _tree(run).items() if not k.startswith(("metrics", "train.log", "tensorboard"))}
        assert "config.json" in before and first.poll() is None  # the first run's folder and process are intact
        assert '"seed": 9' not in (run / "config.json").read_text()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # once it has ended, the folder takes a new run again (the lock ends with its process)
    assert main(["train", *tiny(run, "training.max_steps=2", "output.overwrite=true", "evaluation.eval_steps=0",
                                "evaluation.report=false", f"data.cache_dir={tmp_path / 'cache'}")]) == 0
    assert (run / "final" / "model.safetensors").is_file()


def test_a_train_that_fails_leaves_no_folder_it_created(tmp_path, capsys):
    """A mistake in the data leaves nothing behind: not the run folder, nor the folders above it."""
    out = tmp_path / "a" / "b" / "run"
    rc = main(["train", *tiny(out, "training.max_steps=2", f"data.data_dir={tmp_path / 'nodata'}")])
    assert rc == 2 and "nodata" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()



def test_predict_out_replaces_the_file_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    """``predict --out forecasts.csv`` wrote the file in place: a write that failed half way (a full
    disk) left yesterday's forecasts cut short, and a job reading the file meanwhile saw part of it.
    It is written beside and renamed: a failure is one line naming the file, exit 2, the earlier file
    intact and no temporary left."""
    import pandas as pd

    from test_inference_serve import make_model  # noqa: E402

    make_model(tmp_path / "m")
    data = sample_data_dir() / "AEM.csv"
    out = tmp_path / "fc" / "forecasts.csv"
    assert main(["predict", str(tmp_path / "m"), "--data", str(data), "--out", str(out)]) == 0
    first = out.read_bytes()
    assert len(pd.read_csv(out)) > 0

    def disk_full(self, path, *args, **kwargs):  # half the rows written, then the disk is full
        with open(path, "w") as fh:
            fh.write(first[: len(first) // 2].decode())
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m"), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert out.read_bytes() == first
    assert err.count("\n") == 1 and str(out) in err and "No space left on device" in err, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["forecasts.csv"]
