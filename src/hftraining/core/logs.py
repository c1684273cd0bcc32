"""Which handlers a log record reaches, for the places that hold records back (a run's train.log before
it opens, the feature store's entry) and must not silence Python's last resort by being there."""

from __future__ import annotations

import logging


def handlers_reached(name: str) -> list[logging.Handler]:
    """The handlers a record of logger ``name`` reaches, in the order ``Logger.callHandlers`` walks them."""
    out: list[logging.Handler] = []
    c: logging.Logger | None = logging.getLogger(name)
    while c is not None:
        out += c.handlers
        if not c.propagate:
            break
        c = c.parent
    return out


def keeps_only(h: logging.Handler) -> bool:
    """Whether ``h`` only keeps records (marked ``_hft_keeps``: the feature store's, for its entry) and shows none."""
    return bool(getattr(h, "_hft_keeps", False))
