"""Windows as index arithmetic on one contiguous float32 array per split.

Each split stores its rows once: ``features`` (N, F) and ``returns`` (N,) (scaled 1-step log
returns of the close). A window is only the row index ``end`` of its last input row; a batch is
gathered with one fancy-index per array, so memory does not grow with ``sequence_length``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class WindowSet:
    """The windows of one split. Row arrays are shared with the other splits; per window only its
    last input row and its symbol are stored (everything else is derived on demand)."""

    features: np.ndarray  # (N, F) float32, scaled; shared by the splits (each only indexes it)
    returns: np.ndarray  # (N,) float32, log return of row t over row t-1, divided by target_scale
    ends: np.ndarray  # (W,) int64 row of each window's last input step
    symbol_ids: np.ndarray  # (W,) int32 index into ``symbols``
    segment_first: np.ndarray  # (S,) int64 first row of each symbol's segment: earlier steps are padding
    row_times: np.ndarray  # (N,) int64 ns since epoch (UTC) of each row
    row_close: np.ndarray  # (N,) float64 close of each row
    symbols: list[str]
    seq_len: int
    horizon: int

    @functools.cached_property
    def times(self) -> np.ndarray:
        """(W,) int64 ns UTC of each window's last input step (the forecast's as-of time)."""
        return self.row_times[self.ends]

    @functools.cached_property
    def last_close(self) -> np.ndarray:
        """(W,) float64 close at each window's last input step."""
        return self.row_close[self.ends]

    @property
    def first_rows(self) -> np.ndarray:
        """(W,) first row each window may read."""
        return self.segment_first[self.symbol_ids]

    def subset(self, idx) -> "WindowSet":
        """The windows ``idx`` (an index array or slice), sharing the row arrays."""
        return dataclasses.replace(self, ends=self.ends[idx], symbol_ids=self.symbol_ids[idx])

    def __len__(self) -> int:
        return len(self.ends)

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(-self.seq_len + 1, 1), np.arange(1, self.horizon + 1)

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Windows ``idx`` → {"x": (B, L, F), "past": (B, L), "y": (B, H), "index": (B,)}, plus
        "mask": (B, L) bool (True = real step) when a window of the batch is left-padded."""
        idx = np.asarray(idx, dtype=np.int64)
        ends = self.ends[idx]
        back, ahead = self._offsets()
        rows = ends[:, None] + back  # (B, L)
        first = self.segment_first[self.symbol_ids[idx]][:, None]  # (B, 1)
        padded = bool((rows[:, 0:1] < first).any())
        if padded:
            mask = rows >= first
            rows = np.maximum(rows, first)  # never read another symbol's or split's rows
        x, past = self.features[rows], self.returns[rows]
        out = {"index": torch.from_numpy(idx)}
        if padded:
            x[~mask] = 0.0
            past[~mask] = 0.0
            out["mask"] = torch.from_numpy(mask)
        out["x"], out["past"] = torch.from_numpy(x), torch.from_numpy(past)
        if self.horizon:
            out["y"] = torch.from_numpy(self.returns[ends[:, None] + ahead])  # (B, H)
        return out

    def targets(self) -> np.ndarray:
        """(W, H) scaled targets of every window."""
        return self.returns[self.ends[:, None] + self._offsets()[1]]


class EpochSampler:
    """Shuffled batches of window indices, epoch after epoch, with a resumable position.

    The order of epoch ``e`` depends only on (seed, e). Each draw takes the next global batch of
    ``batch_size × world_size`` windows of that order and returns this rank's disjoint slice of it,
    so N processes with batch B see exactly the windows of one process with batch N·B. A run
    restored from (epoch, position) continues with the batches an uninterrupted run would draw.
    """

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = True, rank: int = 0, world_size: int = 1):
        if drop_last and n < batch_size * world_size:
            batch_size = max(1, n // world_size)  # a tiny training split still yields batches
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0  # position: windows of this epoch's order consumed, all ranks together
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        step = self.batch_size * self.world_size
        return perm[: (self.n // step) * step] if self.drop_last else perm

    def next_batch(self) -> np.ndarray:
        if self._order is None:
            self._order = self._epoch_order()
        if self.position >= len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._epoch_order()
        glob = self._order[self.position : self.position + self.batch_size * self.world_size]
        self.position += len(glob)
        share = -(-len(glob) // self.world_size)  # ceil: the last, short batch of an epoch without drop_last
        return glob[self.rank * share : (self.rank + 1) * share]

    def at_epoch_end(self) -> bool:
        """True when the last batch drawn was the last of its epoch."""
        return self._order is not None and self.position >= len(self._order)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = None


def eval_batches(n: int, batch_size: int, max_batches: int | None = None):
    """Consecutive index batches over all ``n`` windows (no shuffling, nothing dropped)."""
    for i, start in enumerate(range(0, n, batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield np.arange(start, min(n, start + batch_size))
