"""``data synth --out DIR`` replaces an earlier synth set, and removes nothing else: only entries named as synth
names them (``SYN000.csv``, ``SYN000.parquet``, ``symbol=SYN000/``) are replaced or removed; an earlier set that a
killed synth had moved aside is put back, not deleted; two synths into one folder at once are refused."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.data.synth import write_synth


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (hidden ones too) → its bytes (None: a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _python(code: str, **kwargs) -> subprocess.Popen:
    """``code`` run by this Python in another process (a second shell running ``data synth``)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("name", ["SYN000.old.csv", "SYN001.CSV", "SYN000.csv.gz", "SYN000.pq", "SYN002.parquet.csv"])
def test_synth_never_deletes_a_data_file_it_does_not_write(tmp_path, capsys, name):
    """A user's ``SYN000.old.csv`` (or ``SYN000.csv.gz``, ``SYN001.CSV``) beside an earlier synth set: the next synth
    counted it as the earlier set's (by the name before its first dot) and deleted it, exit 0. Synth never writes
    such a name; ``train`` reads it: the folder is refused in one line (exit 2), and nothing in it changes."""
    out = tmp_path / "d"
    write_synth(out, 2, 30)
    (out / name).write_bytes(b"timestamp,open,high,low,close,volume\nmine\n")
    before = _tree(out)
    rc = main(["data", "synth", "--symbols", "1", "--rows", "40", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert str(out) in err and name in err, err
    assert _tree(out) == before


def test_synth_keeps_what_is_no_data_of_its_own_and_the_file_a_link_names(tmp_path, capsys):
    """What a synth replaces is its own set alone: a ``SYN000.csv.bak``, a folder ``SYN000/``, ``notes.txt`` stay as
    they were, and a link named ``SYN001.csv`` goes, but the file it names elsewhere is neither removed nor
    written through."""
    out = tmp_path / "d"
    write_synth(out, 2, 30)
    target = tmp_path / "real.csv"
    target.write_bytes(b"timestamp,open,high,low,close,volume\nreal\n")
    (out / "SYN001.csv").unlink()
    (out / "SYN001.csv").symlink_to(target)
    (out / "SYN000.csv.bak").write_text("backup")
    (out / "SYN000").mkdir()
    (out / "SYN000" / "keep.txt").write_text("kept")
    (out / "notes.txt").write_text("mine")
    assert main(["data", "synth", "--symbols", "1", "--rows", "40", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["SYN000", "SYN000.csv", "SYN000.csv.bak", "notes.txt"]
    assert target.read_bytes() == b"timestamp,open,high,low,close,volume\nreal\n"
    assert (out / "SYN000.csv.bak").read_text() == "backup" and (out / "SYN000" / "keep.txt").read_text() == "kept"
    assert len(pd.read_csv(out / "SYN000.csv")) == 40


@pytest.mark.parametrize("placed", [0, 1], ids=["none-in-place", "one-in-place"])
@pytest.mark.parametrize("fmt,method", [("csv", "to_csv"), ("parquet-dataset", "to_parquet")])
def test_the_earlier_set_of_a_killed_synth_is_put_back(tmp_path, capsys, monkeypatch, placed, fmt, method):
    """A synth killed (SIGKILL, a power cut) after it moved the earlier set aside, before (or while) the new one was
    moved in: the next synth deleted the earlier set with the hidden folders, so when it failed in turn (a full
    disk) the folder held no data at all. Now the earlier set is put back first, and that failure leaves it whole."""
    out = tmp_path / "d"
    write_synth(out, 3, 30, seed=1, fmt=fmt)
    before = _tree(out)
    killed = _python(f"""
        import os, signal
        real, n = os.rename, [0]
        def rename(src, dst):
            if ".synth-tmp-" in str(src):
                if n[0] == {placed}:
                    os.kill(os.getpid(), signal.SIGKILL)
                n[0] += 1
            return real(src, dst)
        os.rename = rename
        from hftraining.data.synth import write_synth
        write_synth({str(out)!r}, 4, 50, seed=2, fmt={fmt!r})
    """)
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    assert any(p.name.startswith(".synth-old-") for p in out.iterdir())  # killed where this test means it to be

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, method, full)
    rc = main(["data", "synth", "--symbols", "2", "--rows", "60", "--format", fmt, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err, err
    assert _tree(out) == before
    monkeypatch.undo()
    assert len(write_synth(out, 2, 60, fmt=fmt)) == 2  # and the next one replaces it whole
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n in before if "/" not in n)[:2]


def test_a_hidden_folder_named_by_a_running_process_that_is_no_synth_is_removed(tmp_path):
    """A killed synth's hidden folder whose number is now another running process's (a PID reused; 1 always runs):
    it was kept, and its copy of a whole set with it, on every later synth. Only one synth writes into a folder at
    a time, so the next one removes it."""
    out = tmp_path / "d"
    write_synth(out, 2, 30)
    stale = out / ".synth-tmp-1"
    stale.mkdir()
    (stale / "SYN000.csv").write_text("half")
    write_synth(out, 2, 40)
    assert sorted(p.name for p in out.iterdir()) == ["SYN000.csv", "SYN001.csv"]


def test_a_second_synth_into_a_folder_being_written_is_refused(tmp_path, capsys):
    """``data synth --symbols 3`` still moving its set in while ``data synth --symbols 5`` starts into the same
    folder: both exited 0, and the folder held a mix of the two sets (SYN000 of one, SYN001.. of the other). Now
    the second one is a one-line error naming the folder, exit 2, and the first one's set is whole."""
    out = tmp_path / "d"
    write_synth(out, 2, 30, seed=9)
    paused, go = tmp_path / "paused", tmp_path / "go"
    first = _python(f"""
        import os, time
        real, n = os.rename, [0]
        def rename(src, dst):
            got = real(src, dst)
            if ".synth-tmp-" in str(src):
                n[0] += 1
                if n[0] == 1:
                    open({str(paused)!r}, "w").close()
                    end = time.time() + 60
                    while not os.path.exists({str(go)!r}) and time.time() < end:
                        time.sleep(0.05)
            return got
        os.rename = rename
        from hftraining.data.synth import write_synth
        write_synth({str(out)!r}, 3, 50, seed=3)
    """)
    try:
        end = time.time() + 120
        while not paused.exists() and first.poll() is None and time.time() < end:
            time.sleep(0.05)
        assert paused.exists(), first.communicate()[1]
        rc = main(["data", "synth", "--symbols", "5", "--rows", "70", "--seed", "4", "--out", str(out)])
        err = capsys.readouterr().err
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(out) in err, err
    assert sorted(p.name for p in out.iterdir()) == ["SYN000.csv", "SYN001.csv", "SYN002.csv"]
    assert all(len(pd.read_csv(out / f"SYN00{i}.csv")) == 50 for i in range(3))
