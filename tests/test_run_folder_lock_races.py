"""The run-folder lock's clean-up of the folders it made never removes a folder another run holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hftraining.core.errors import UserError
from hftraining.workflows.train_run import run_folder_lock

HOLD = """
import sys
from pathlib import Path
from hftraining.workflows.train_run import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def _holder(folder: Path) -> subprocess.Popen:
    """Another run: a process that holds ``folder``'s lock, nothing written in it, until its stdin closes."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_failed_run_leaves_the_empty_folder_above_that_another_run_trains_into(tmp_path):
    """A walk-forward made ``<run>/`` and ``<run>/walkforward``; a train into ``<run>/`` started meanwhile
    (building its data, nothing written yet). The walk-forward's mistake removed ``<run>/`` as a folder
    it made and left empty: the train's lock was then on a removed folder and a second train into
    ``<run>/`` was not refused."""
    run = tmp_path / "new" / "run"
    train = None
    try:
        with pytest.raises(ValueError):
            with run_folder_lock(run / "walkforward"):
                train = _holder(run)
                raise ValueError("a config mistake of the walk-forward")
        assert run.is_dir() and not (run / "walkforward").exists()
        with pytest.raises(UserError, match="another hftraining process"):
            with run_folder_lock(run):
                pass
    finally:
        if train is not None:
            train.stdin.close()
            train.wait(30)


def test_a_refused_run_leaves_the_folder_of_the_run_that_holds_it(tmp_path, monkeypatch):
    """Two runs started together: the second saw no folder, the first then made and locked it. The
    second, refused, removed it as a folder it had made (still empty: the first was building its data)."""
    run = tmp_path / "run"
    mkdir, held = Path.mkdir, []

    def first_starts_meanwhile(self, *args, **kwargs):
        if self == run and not held:
            held.append(_holder(run))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", first_starts_meanwhile)
    try:
        with pytest.raises(UserError, match="another hftraining process"):
            with run_folder_lock(run):
                pass
        assert run.is_dir()
    finally:
        for p in held:
            p.stdin.close()
            p.wait(30)
