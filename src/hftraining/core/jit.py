"""Numba compilation with the on-disk cache where one can be written."""

from __future__ import annotations

from typing import Any, Callable

from numba import njit


def njit_cached(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``: compiled code is reused by later runs. Where no
    cache location is writable (a read-only install and no writable home), Numba refuses
    ``cache=True`` at decoration; the kernel is then compiled once per process instead (about a
    second), which changes nothing but start-up time."""

    def wrap(fn: Callable) -> Callable:
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError as e:
            if "cannot cache function" not in str(e):
                raise
            return njit(**options)(fn)

    return wrap
