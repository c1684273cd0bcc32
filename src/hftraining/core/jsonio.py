"""The one JSON helper: every JSON file and response the package writes goes through it, and every
JSON-lines file it reads back (:func:`read_jsonl`: a run's ``metrics.jsonl``).

Reports, metrics, model folders and HTTP answers are strict JSON via :func:`json_safe`: NaN and
±Inf are ``null`` (browsers, ``jq`` and most parsers reject ``NaN``), numpy scalars and arrays
become Python numbers and lists, mapping keys become strings. Checkpoint state is the one
exception (``exact=True``): a resumed run must read back exactly what it saved, an infinite
hyperparameter included, so there non-finite floats are kept as Python's ``Infinity``/``NaN``."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from json.encoder import c_make_encoder, encode_basestring_ascii  # what json.dumps writes with (the C one, or None)
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hftraining.core.errors import DataError, writing
from hftraining.core.files import replace_file


_NESTED = frozenset({dict, list, tuple})  # the containers laid out over lines when they hold one


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats → None, numpy values → Python values, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def dumps(obj: Any, indent: int | str | None = 2, exact: bool = False) -> str:
    """Strict JSON text of :func:`json_safe` (``obj``); ``exact``: non-finite floats kept (see above).

    ``indent`` None: one line (``json.dumps``). Else the containers that hold other containers are
    indented, and each one holding only scalars (one step of a symbol's metrics, a list of dates) is
    written on one line, as ``indent`` None writes it: :func:`json.loads` reads the same object as
    from ``json.dumps(..., indent=indent)``, floats bit for bit. An eval.json of 3,000 symbols (its
    ``per_symbol`` rows nearly all of it) takes a third of the lines and three quarters of the bytes,
    written by the C encoder in half the time (``json.dumps`` with an indent runs the pure-Python one)."""
    if not exact:
        obj = json_safe(obj)
    if indent is None:
        return json.dumps(obj, allow_nan=exact)
    return _indented(obj, " " * indent if isinstance(indent, int) else indent, exact)


def _one_line(allow_nan: bool) -> Callable[[Any], str]:
    """The text ``json.dumps(o, allow_nan=allow_nan)`` gives, by one C encoder made once: each
    ``json.dumps`` call makes its own, which costs more than a short row takes to write."""
    enc = json.JSONEncoder(allow_nan=allow_nan)
    if c_make_encoder is None:  # a Python without the _json module: the same text, slower
        return enc.encode
    write = c_make_encoder({}, enc.default, encode_basestring_ascii, None, enc.key_separator, enc.item_separator,
                           False, False, allow_nan)
    return lambda o: "".join(write(o, 0))


def _nested(o: Any) -> bool:
    """Whether ``o`` is a dict, list or tuple holding one (the others are written on one line; a
    container of a subclass of those is too: valid JSON all the same)."""
    t = o.__class__
    return t in _NESTED and not _NESTED.isdisjoint(map(type, o.values() if t is dict else o))


def _indented(obj: Any, indent: str, allow_nan: bool) -> str:
    """:func:`dumps` with an ``indent``: the containers holding containers laid out as
    ``json.dumps(indent=...)`` lays them out, the others (and every scalar) written by the C encoder."""
    encode = _one_line(allow_nan)  # separators ", " and ": ", as json.dumps without an indent
    out: list[str] = []
    seen: set[int] = set()  # the containers open on the way down: a cycle is an error, as in json.dumps

    def key(k: Any) -> str:
        """A mapping key as the encoder writes it (str, int, float, bool or None; anything else a TypeError)."""
        return encode_basestring_ascii(k) if k.__class__ is str else encode({k: 0})[1:-4]  # '{"k": 0}' → '"k"'

    def walk(o: Any, level: int) -> None:  # o: _nested
        if id(o) in seen:
            raise ValueError("Circular reference detected")
        seen.add(id(o))
        inner = "\n" + indent * (level + 1)
        is_dict = o.__class__ is dict
        out.append("{" if is_dict else "[")
        for i, (k, v) in enumerate(o.items() if is_dict else ((None, v) for v in o)):
            out.append(("," if i else "") + inner + (key(k) + ": " if is_dict else ""))
            t = v.__class__
            if t is float and v - v == 0.0:  # finite (inf - inf and NaN - NaN are NaN): repr, as the encoder writes it
                out.append(float.__repr__(v))
            elif t is str:
                out.append(encode_basestring_ascii(v))
            elif _nested(v):
                walk(v, level + 1)
            else:
                out.append(encode(v))
        out.append("\n" + indent * level + ("}" if is_dict else "]"))
        seen.discard(id(o))

    if not _nested(obj):
        return encode(obj)
    walk(obj, 0)
    return "".join(out)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, exact: bool = False) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path``: strict, or ``exact`` (checkpoints).

    A regular file (or a new one) is written whole or not at all (:func:`~hftraining.core.files.replace_file`):
    a full disk or a kill mid-write leaves the earlier config.json or eval.json as it was, where a rewrite in
    place left it cut short. A symbolic link (``/dev/stdout``, a link a user keeps to the file) and anything
    that is not a regular file (a FIFO, a device) are written through in place: a rename would put a regular
    file where the link was (and detach the file a shell sent ``/dev/stdout`` to) or fail beside a device. A
    file rewritten keeps its permission bits (a ``tracking.json`` a user made ``0600`` stays private), and one
    this process may not write (made read-only to keep it) is refused, as a rewrite in place was: the sibling
    renamed over it is created with the process's umask, and a rename needs no permission on the file."""
    path = Path(path)
    text = dumps(obj, indent, exact) + "\n"
    with writing(path):  # disk full, no permission: one line naming the file
        whole = not path.is_symlink() and (path.is_file() or not path.exists())
        if not whole:
            path.write_text(text, encoding="utf-8")
        mode = _mode(path) if whole else None
        if mode is not None and not os.access(path, os.W_OK):  # a rename would replace a file it may not write
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        if mode is not None:
            os.chmod(tmp, mode)

    if whole:
        replace_file(path, write)
    return path


def _mode(path: Path) -> int | None:
    """The permission bits of file ``path``, or None where there is none yet."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path`` (``json.JSONDecodeError``/``OSError`` propagate to the caller,
    which knows which user error to name)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records (JSON objects, one a line) of the JSON-lines file ``path``, e.g. a run's
    ``metrics.jsonl``; blank lines are skipped. A last line without its newline that does not parse
    is what a run killed mid-write leaves: it is dropped. Any other line that is not a JSON object
    is a one-line :class:`DataError` naming the file and the line (``OSError`` propagates)."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if i == len(lines) - 1:  # no newline after it: cut short by a killed writer
                break
            why = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise DataError(f"{path}: line {i + 1} is not valid JSON ({why})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {i + 1} is not a JSON object (a {type(rec).__name__})")
        out.append(rec)
    return out
