"""Files and folders written whole or not at all (a model folder, an ensemble folder, a log rewritten)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable

from hftraining.core.errors import writing

ENSEMBLE_NAME = "ensemble.json"  # an ensemble folder's description (inference/ensemble.py writes it, eval/report.py reads it)


def replace_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a sibling of ``path``, then rename it over ``path``: a failure (a full disk,
    a kill) leaves the earlier file whole, where a rewrite in place left it cut short. The sibling is
    removed on failure; an I/O failure is a one-line :class:`~hftraining.core.errors.WriteError` naming
    ``path``. The sibling is hidden and named by the process (``.NAME.tmp-PID``): two processes writing
    the same file each rename a whole one (a shared ``NAME.tmp`` interleaved their bytes), and one that
    died leaves no file a folder's reader would list."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with writing(path):
            try:
                write(tmp)
                os.replace(tmp, path)
            except OSError as e:
                if e.filename is not None and Path(e.filename) == tmp:
                    e.filename = str(path)  # the user's file, not the sibling they never named
                raise
    except BaseException:
        with contextlib.suppress(OSError):  # a folder that is gone or not one: the failure above says why
            tmp.unlink(missing_ok=True)
        raise
    return path


def replace_folder(out: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a new hidden sibling of ``out``, fsync every file it wrote, then rename it to
    ``out`` (an earlier ``out`` is renamed aside first and removed after): a folder named ``out`` is
    always complete, the earlier one whole until the new one is. A failure removes the new one and
    leaves the earlier one (or none) in place; an I/O failure is a one-line
    :class:`~hftraining.core.errors.WriteError`. Siblings left by a write that died are removed first."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            for stale in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
            write(tmp)
            for f in tmp.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            if out.exists():
                os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                if old.exists():
                    os.rename(old, out)  # the earlier folder back, whole
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out
