"""Formatting of numbers in the tables printed for humans."""

from __future__ import annotations

import math
from typing import Any


def fmt(v: Any, spec: str) -> str:
    """``format(v, spec)``, or a dash of the same width for a missing or NaN value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return format("—", ">" + spec.lstrip("<>^").split(".")[0])
    return format(v, spec)
