"""Formatting of numbers and timestamps in the tables and messages printed for humans."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np


def fmt(v: Any, spec: str) -> str:
    """``format(v, spec)``, or a dash of the same width for a missing or NaN value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return format("—", ">" + spec.lstrip("<>^").split(".")[0])
    return format(v, spec)


def fmt_p(p: Any, level: float) -> str:
    """A p-value to 3 significant digits, with more where 3 would round it up to the test's ``level`` or
    above: 0.04996 is "0.04996", not "0.05", beside a claim of significance at 0.05 (a dash when missing)."""
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "—"
    text, digits = format(p, ".3g"), 3
    while p < level <= float(text) and digits < 12:
        digits += 1
        text = format(p, f".{digits}g")
    return text


def fmt_time(ns: int) -> str:
    """An int64 ns UTC timestamp as ISO 8601 (no zone), exact and no longer than that needs: "2025-05-23" at
    midnight, "2025-05-23T09:30", "2025-05-23T09:30:00.500"."""
    return str(np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="auto"))


def shown_url(url: str) -> str:
    """A URL (a tune storage, a tracking URI) with its password masked (``postgresql://user:***@host/db``),
    for messages, logs and files."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)
