"""The one JSON helper: every JSON file and response the package writes goes through it, and every
JSON-lines file it reads back (:func:`read_jsonl`: a run's ``metrics.jsonl``).

Reports, metrics, model folders and HTTP answers are strict JSON via :func:`json_safe`: NaN and
±Inf are ``null`` (browsers, ``jq`` and most parsers reject ``NaN``), numpy scalars and arrays
become Python numbers and lists, mapping keys become strings. Checkpoint state is the one
exception (``exact=True``): a resumed run must read back exactly what it saved, an infinite
hyperparameter included, so there non-finite floats are kept as Python's ``Infinity``/``NaN``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hftraining.core.errors import DataError, writing


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


def dumps(obj: Any, indent: int | None = 2, exact: bool = False) -> str:
    """Strict JSON text of :func:`json_safe` (``obj``); ``exact``: non-finite floats kept (see above)."""
    if exact:
        return json.dumps(obj, indent=indent)
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, exact: bool = False) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path``: strict, or ``exact`` (checkpoints)."""
    path = Path(path)
    text = dumps(obj, indent, exact) + "\n"
    with writing(path):  # disk full, no permission: one line naming the file
        path.write_text(text, encoding="utf-8")
    return path


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
