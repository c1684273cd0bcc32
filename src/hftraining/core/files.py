"""Files and folders written whole or not at all (a model folder, an ensemble folder, a log rewritten)."""

from __future__ import annotations

import contextlib
import errno
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
    died leaves no file a folder's reader would list. The sibling's bytes reach the disk (fsync) before
    the rename and the rename does after it (the folder fsync'ed): a power loss or a crash of the machine
    leaves the earlier file or the whole new one, never a new name over bytes that never reached the disk
    (an empty or cut-short file that a reader of a CSV would take for fewer rows)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with writing(path):
            try:
                write(tmp)
                fsync_file(tmp)
                os.replace(tmp, path)
                fsync_dir(path.parent)
            except OSError as e:
                if e.filename is not None and Path(e.filename) == tmp:
                    e.filename = str(path)  # the user's file, not the sibling they never named
                raise
    except BaseException:
        with contextlib.suppress(OSError):  # a folder that is gone or not one: the failure above says why
            tmp.unlink(missing_ok=True)
        raise
    return path


def process_ended(pid: str) -> bool:
    """Whether the process numbered ``pid`` (the digits a temporary file or folder was named by) has ended:
    False for a live one, of this user or another (PermissionError), and for anything but a positive number."""
    if not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # a live process of another user
        return False
    return False


def fsync_file(path: str | os.PathLike) -> None:
    """Flush the bytes of file ``path`` to the disk (an I/O failure propagates: the file may not be whole). A
    file its owner may write but not read (mode 0o200, kept from the file it replaces) is opened to write."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError:
        fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NO_DIR_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush folder ``path``'s entries (a file created or renamed in it) to the disk. A system or file
    system that cannot fsync a folder (Windows, some network file systems: EINVAL, ENOTSUP, a folder it
    may not open) is left as it is: the files are whole either way, only the rename's durability rests
    with the file system; an I/O error (EIO, a full disk) propagates."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        if e.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


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
                    fsync_file(f)
            for f in [*(f for f in tmp.rglob("*") if f.is_dir() and not f.is_symlink()), tmp]:
                fsync_dir(f)  # the names of the files in it
            if out.exists():
                os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                if old.exists():
                    os.rename(old, out)  # the earlier folder back, whole
                raise
            fsync_dir(out.parent)  # the rename itself
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out
