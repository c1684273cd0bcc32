"""The one JSON helper: every JSON file and response the package writes goes through
:func:`json_safe`, so NaN and ±Inf are ``null`` everywhere (strict JSON: browsers, ``jq`` and
most parsers reject ``NaN``), numpy scalars and arrays become Python numbers and lists, and
mapping keys become strings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


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


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of :func:`json_safe` (``obj``)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (UTF-8, trailing newline) to ``path``."""
    path = Path(path)
    path.write_text(dumps(obj, indent) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path`` (``json.JSONDecodeError``/``OSError`` propagate to the caller,
    which knows which user error to name)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
