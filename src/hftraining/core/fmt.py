"""Formatting of numbers and timestamps in the tables and messages printed for humans."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def fmt(v: Any, spec: str) -> str:
    """``format(v, spec)``, or a dash of the same width for a missing or NaN value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return format("—", ">" + spec.lstrip("<>^").split(".")[0])
    return format(v, spec)


def fmt_time(ns: int) -> str:
    """An int64 ns UTC timestamp as ISO 8601 (no zone), exact and no longer than that needs: "2025-05-23" at
    midnight, "2025-05-23T09:30", "2025-05-23T09:30:00.500"."""
    return str(np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="auto"))
