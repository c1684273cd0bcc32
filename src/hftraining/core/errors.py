"""User-facing errors. Anything a user can fix by changing a file, a config key or a request
is raised as a subclass of :class:`UserError`; the CLI prints its message on one line and exits 2."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator


class UserError(Exception):
    """A mistake in the user's input. ``str(err)`` is a single line that names what to fix."""

    exit_code = 2


class ConfigError(UserError):
    """Unknown config key, wrong type or an impossible combination of settings."""


class DataError(UserError):
    """An input file or frame that cannot be used (unreadable, missing a column, too short, ...)."""


class WriteError(UserError):
    """A file or folder that could not be written: the disk is full, a permission is missing, the
    file system is read-only. ``str``: the path and the cause, on one line."""


def io_cause(e: BaseException) -> str:
    """The cause of an I/O failure in a few words: the OS's (``No space left on device``), also when
    it comes wrapped by safetensors (``I/O error: No space left on device (os error 28)``)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    found = re.search(r'message: "([^"]+)"|I/O error: (.+?) \(os error \d+\)', str(e))
    if found:
        return found.group(1) or found.group(2)
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def is_io_error(e: BaseException) -> bool:
    """An OSError, or safetensors' error for a file it could not write (or read)."""
    return isinstance(e, OSError) or type(e).__name__ == "SafetensorError"


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an I/O failure inside into one :class:`WriteError` line naming ``path`` (or the file the
    OS names) and the cause; everything else passes through."""
    try:
        yield
    except WriteError:
        raise
    except Exception as e:
        if not is_io_error(e):
            raise
        name = getattr(e, "filename", None) or path
        raise WriteError(f"{name}: cannot write ({io_cause(e)})") from None
