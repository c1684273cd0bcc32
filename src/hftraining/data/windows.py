"""Windows as index arithmetic on one contiguous float32 array shared by the splits.

The rows are stored once, unscaled: ``features`` (N, F) and ``returns`` (N,) (1-step log returns
of the close), in memory or memory-mapped read-only from the feature store. A window is only the
row index ``end`` of its last input row; a batch is gathered with one fancy-index per array and
scaled as it is gathered (per-symbol center/scale of the features, ``target_scale`` of the
returns), so memory does not grow with ``sequence_length`` and the rows are never copied or
written (``benchmarks/bench_scale.py`` measures this against scaling the block in place once).

On a GPU (:meth:`WindowSet.on_device`) the rows are either copied to the device once
(:class:`DeviceRows`, ``data.device_cache``) and every batch is gathered there by the same index
arithmetic, or batches are gathered on the host into pinned memory and copied without blocking;
both give the tensors the host path gives, on the device. The window index, the sampler and its
order stay on the host either way.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch

from hftraining.core.errors import DataError
from hftraining.data.rows import Rows
from hftraining.data.splits import Segment, end_bounds, window_ends


@dataclass
class WindowSet:
    """The windows of one split. Row arrays are shared with the other splits; per window only its
    last input row and its symbol are stored (everything else is derived on demand)."""

    features: np.ndarray  # (N, F) float32, unscaled; shared by the splits (each only indexes it)
    returns: np.ndarray  # (N,) float32, log return of row t over row t-1 (unscaled)
    ends: np.ndarray  # (W,) int32 (int64 from 2^31 rows) row of each window's last input step
    symbol_ids: np.ndarray  # (W,) int32 index into ``symbols``
    segment_first: np.ndarray  # (S,) int64 first row of each symbol's segment: earlier steps are padding
    row_times: np.ndarray  # (N,) int64 ns since epoch (UTC) of each row
    row_close: np.ndarray  # (N,) float64 close of each row
    symbols: list[str]
    seq_len: int
    horizon: int
    center: np.ndarray | None = None  # (S, F) float32 per-symbol feature center (None: no scaling)
    scale: np.ndarray | None = None  # (S, F) float32 per-symbol feature scale
    target_scale: float = 1.0  # returns (inputs and targets) are divided by it
    device: torch.device | None = None  # where batch() puts its tensors (None: the host, unpinned)
    device_rows: "DeviceRows | None" = None  # the rows on ``device`` (None: gathered on the host)
    labels: np.ndarray | None = None  # (N,) float32 label of each row (``data.target``); None: the returns
    target: str = "return"  # what the labels are (``data.target``; hftraining.data.labels)
    run_starts: np.ndarray | None = None
    """(R,) int64 sorted: the earliest row that may end a window of each run of the set (a symbol's
    segment, or its part between two gaps over ``data.max_gap``); a window belongs to the last run
    starting at or before its end. None: not known (a set built outside :func:`index_windows`)."""
    row_dates: np.ndarray | None = None
    """(N,) bool: the rows that are dates, not instants (:attr:`hftraining.data.rows.Rows.dates`), whose
    cross-section is apart from the instants of their stamp (:func:`hftraining.data.labels.cross_sections`);
    None: not kept (every row's cross-section is its stamp's)."""

    def scaled_features(self, rows, k: int) -> np.ndarray:
        """``features[rows]`` of symbol ``k`` as the model sees them (centered and scaled, float32)."""
        x = np.array(self.features[rows], dtype=np.float32)
        if self.center is not None:
            x -= self.center[k]
            x /= self.scale[k]
        return x

    @property
    def label_rows(self) -> np.ndarray:
        """(N,) the label of each row: ``labels``, or the returns when the label is the return."""
        return self.returns if self.labels is None else self.labels

    def scaled_labels(self, rows: np.ndarray) -> np.ndarray:
        """``label_rows[rows]`` divided by ``target_scale`` (float32): what models see (the past-return
        channel) and forecast."""
        r = self.label_rows[rows]
        return r / np.float32(self.target_scale) if self.target_scale != 1.0 else r

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

    def earliest_ends(self, idx) -> np.ndarray:
        """(B,) the earliest row each window ``idx`` may end on without leaving its own run: its
        segment (no target before the segment's start, no input before its first readable row but
        padding) and its part between gaps (``data.max_gap``)."""
        if self.run_starts is None:
            raise ValueError("this window set has no runs (run_starts): it was not built by index_windows")
        ends = self.ends[idx]
        return self.run_starts[np.searchsorted(self.run_starts, ends, side="right") - 1]

    def join(self, other: "WindowSet") -> "WindowSet":
        """The windows of ``self`` then those of ``other``: another set cut from the same rows (other
        segments of the same symbols), e.g. the training windows after a purged test block joining
        those before it. The first readable rows stay ``self``'s, so a window of ``other`` must
        never be left-padded below its own (it would read rows its segment excludes)."""
        reads = other.ends.astype(np.int64) - other.seq_len + 1
        moved = other.first_rows != self.segment_first[other.symbol_ids]
        if (moved & (reads < other.first_rows)).any():
            raise ValueError("join: a padded window of the joined set would read rows before its own segment")
        runs = None
        if self.run_starts is not None and other.run_starts is not None:
            runs = np.sort(np.concatenate([self.run_starts, other.run_starts]))
        return dataclasses.replace(self, ends=np.concatenate([self.ends, other.ends]),
                                   symbol_ids=np.concatenate([self.symbol_ids, other.symbol_ids]), run_starts=runs)

    def subset(self, idx) -> "WindowSet":
        """The windows ``idx`` (an index array or slice), sharing the row arrays."""
        return dataclasses.replace(self, ends=self.ends[idx], symbol_ids=self.symbol_ids[idx])

    def thin(self, max_windows: int | None) -> "WindowSet":
        """At most ``max_windows`` windows, evenly spaced over the set (all of them when it has fewer)."""
        if max_windows is None or len(self) <= max_windows:
            return self
        at = np.linspace(0, len(self) - 1, max_windows).round().astype(np.int64)  # non-decreasing
        # its repeats are neighbours: dropped without np.unique, which hashes them (0.8 s for a million, NumPy 2.4)
        return self.subset(at[np.r_[True, at[1:] != at[:-1]]])

    def every_nth_date(self, stride: int) -> "WindowSet":
        """The windows of every ``stride``-th as-of date of the set, counted back from the newest: all
        the symbols of a kept date. ``data.stride`` under ``data.batching: dates``, whose batches are
        whole cross-sections: a stride of rows, counted in each symbol's own rows from its own last
        window, keeps symbols with holes or other last rows on other dates (a date of one symbol)."""
        if stride <= 1 or not len(self):
            return self
        kept = np.unique(self.times)[::-1][::stride]
        return self.subset(np.flatnonzero(np.isin(self.times, kept)))

    def last_dates(self, max_windows: int | None) -> "WindowSet":
        """The windows of the latest as-of dates, at most ``max_windows`` of them: whole dates only, so
        every symbol keeps the same dates (all windows when the set has no more than ``max_windows``)."""
        if max_windows is None or len(self) <= max_windows:
            return self
        dates, counts = np.unique(self.times, return_counts=True)
        kept = np.cumsum(counts[::-1]) <= max_windows  # newest first
        n_dates = max(int(kept.sum()), 1)
        return self.subset(np.flatnonzero(self.times >= dates[-n_dates]))

    def __len__(self) -> int:
        return len(self.ends)

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(-self.seq_len + 1, 1), np.arange(1, self.horizon + 1)

    def on_device(self, device: torch.device | str, rows: "DeviceRows | None" = None) -> "WindowSet":
        """The same windows whose batches are made for ``device``: gathered there from ``rows``
        (the panel's :class:`DeviceRows`), or without ``rows`` gathered on the host and copied from
        pinned memory. On the CPU: the host path."""
        device = torch.device(device)
        if device.type == "cpu":
            return dataclasses.replace(self, device=None, device_rows=None)
        return dataclasses.replace(self, device=device, device_rows=rows)

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Windows ``idx`` → {"x": (B, L, F), "past": (B, L), "y": (B, H), "index": (B,)}, plus
        "mask": (B, L) bool (True = real step) when a window of the batch is left-padded.
        Every tensor but "index" (host int64) is on ``self.device`` (the host when None)."""
        idx = np.asarray(idx, dtype=np.int64)
        ends = self.ends[idx]
        back, ahead = self._offsets()
        rows = ends[:, None] + back  # (B, L)
        first = self.segment_first[self.symbol_ids[idx]][:, None]  # (B, 1)
        padded = bool((rows[:, 0:1] < first).any())  # decided on the host: the index is there
        if self.device_rows is not None:
            return self.device_rows.batch(idx, ends, self.symbol_ids[idx], first[:, 0], padded, self.horizon)
        if padded:
            mask = rows >= first
            rows = np.maximum(rows, first)  # never read another symbol's or split's rows
        x, past = np.asarray(self.features[rows]), np.asarray(self.scaled_labels(rows))  # fancy indexing copies
        if self.center is not None:
            sid = self.symbol_ids[idx]
            x -= self.center[sid][:, None, :]
            x /= self.scale[sid][:, None, :]
        out = {"index": torch.from_numpy(idx)}
        if padded:
            x[~mask] = 0.0
            past[~mask] = 0.0
            out["mask"] = torch.from_numpy(mask)
        out["x"], out["past"] = torch.from_numpy(x), torch.from_numpy(past)
        if self.horizon:
            out["y"] = torch.from_numpy(np.asarray(self.scaled_labels(ends[:, None] + ahead)))  # (B, H)
        if self.device is not None:  # pinned, then copied without blocking the host
            out.update({k: to_device(v, self.device) for k, v in out.items() if k != "index"})
        return out

    def targets(self) -> np.ndarray:
        """(W, H) scaled targets (labels) of every window."""
        return self.scaled_labels(self.ends[:, None] + self._offsets()[1])


def gap_segments(times: np.ndarray, seg: Segment, max_gap: int | None) -> list[Segment]:
    """``seg``'s readable rows [read_from, stop) cut at every gap between consecutive rows longer than
    ``max_gap`` ns: each part keeps the segment's ``start`` (no target before it) and may read from
    its own first row."""
    if max_gap is None or seg.stop - seg.read_from < 2:
        return [seg]
    t = times[seg.read_from : seg.stop]
    cuts = (np.flatnonzero(np.diff(t) > max_gap) + 1 + seg.read_from).tolist()
    bounds = [seg.read_from, *cuts, seg.stop]
    return [Segment(max(a, seg.start), b, max(a, seg.start) - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _runs(rows: Rows, segments: list[Segment], L: int, H: int, min_history: int, max_gap: int | None):
    """(symbol k, part of its segment, the real rows a window of the part needs) of every run of
    windows: each symbol's segment, cut at gaps longer than ``max_gap`` ns. Padding (``min_history``
    < L) applies in a segment's first part only: after a gap a window needs L real rows."""
    for k, seg in enumerate(segments):
        if len(seg) == 0:
            continue
        times = rows.times[rows.rows(k)] if max_gap is not None else None
        for j, part in enumerate(gap_segments(times, seg, max_gap)):
            yield k, part, min_history if j == 0 else L


def index_windows(rows: Rows, segments: list[Segment], L: int, H: int, stride: int, min_history: int,
                  max_gap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ends, symbol ids) of the windows of one split: each window's targets lie in one symbol's
    segment and its inputs in the segment's readable rows (and, with ``max_gap`` ns, between two
    gaps longer than it).

    ``segments[k]`` is in symbol k's own row numbers. With ``min_history`` < L, windows may start
    up to L - min_history rows before the segment's first readable row; those steps are masked (left
    padding). Padding never moves a window's end, so no target leaves the segment. After a gap a
    window needs L real rows (padding never reaches back over a gap)."""
    ends, ids = [], []
    index = np.int32 if len(rows.returns) < 2**31 else np.int64  # a window costs 8 bytes, not 12, below 2^31 rows
    for k, part, hist in _runs(rows, segments, L, H, min_history, max_gap):
        r, off = window_ends(part, L, H, stride, hist), int(rows.starts[k])
        if len(r) == 0:
            continue
        ends.append(np.arange(r.start + off, r.stop + off, r.step, dtype=index))  # not np.asarray(range): a Python loop
        ids.append(np.full(len(r), k, dtype=np.int32))
    return (np.concatenate(ends) if ends else np.zeros(0, index),
            np.concatenate(ids) if ids else np.zeros(0, np.int32))


def window_runs(rows: Rows, segments: list[Segment], L: int, H: int, min_history: int,
                max_gap: int | None = None) -> np.ndarray:
    """(R,) int64 sorted: the earliest row (of the block) that may end a window of each run of
    :func:`index_windows` with the same arguments (:attr:`WindowSet.run_starts`): a window moved
    back no further than its run's start keeps its targets and inputs in its own segment and part."""
    starts = []
    for k, part, hist in _runs(rows, segments, L, H, min_history, max_gap):
        first, last = end_bounds(part, L, H, hist)
        if last >= first:
            starts.append(first + int(rows.starts[k]))
    return np.sort(np.asarray(starts, dtype=np.int64))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the host) on ``device`` without a host synchronisation: through pinned memory with
    a non-blocking copy on CUDA (the host goes on preparing the next batch while it travels)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass
class DeviceRows:
    """A panel's rows kept on a device (``data.device_cache``), shared by the splits' window sets:
    the features unscaled as on the host, the returns already divided by ``target_scale`` (elementwise,
    so the same float32 values as dividing after the gather), and the per-symbol scaler statistics.
    A batch is then one small host-to-device copy of its window ends (B,) and symbols (B,) and a few
    gathers on the device, with the same values :meth:`WindowSet.batch` computes on the host."""

    features: torch.Tensor  # (N, F) float32
    returns: torch.Tensor  # (N,) float32 labels divided by target_scale ((N, C) for a multivariate target)
    center: torch.Tensor | None  # (S, F) float32
    scale: torch.Tensor | None  # (S, F) float32
    back: torch.Tensor  # (L,) int64: -L+1 .. 0
    ahead: torch.Tensor  # (H,) int64: 1 .. H
    device: torch.device

    @staticmethod
    def nbytes(ws: WindowSet) -> int:
        """Device bytes that :meth:`build` takes for the rows of ``ws``."""
        n, f = ws.features.shape
        stats = 0 if ws.center is None else 2 * ws.center.size * 4
        return n * f * 4 + int(np.prod(ws.returns.shape)) * 4 + stats

    @classmethod
    def build(cls, ws: WindowSet, device: torch.device | str) -> "DeviceRows":
        """Copy the rows of ``ws`` (any split: they share them) to ``device``, in chunks of rows so a
        memory-mapped store is read once and never all in host memory."""
        device = torch.device(device)
        n, f = ws.features.shape
        features = torch.empty((n, f), dtype=torch.float32, device=device)
        returns = torch.empty(tuple(ws.returns.shape), dtype=torch.float32, device=device)
        ts = np.float32(ws.target_scale)
        chunk = max(1, (64 << 20) // max(4 * f, 1))  # 64 MiB of features at a time
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            features[a:b].copy_(torch.from_numpy(np.array(ws.features[a:b], dtype=np.float32)))  # a writable chunk
            r = np.asarray(ws.label_rows[a:b], dtype=np.float32)
            returns[a:b].copy_(torch.from_numpy(r / ts if ws.target_scale != 1.0 else np.array(r)))
        back, ahead = ws._offsets()

        def put(a):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return cls(features, returns, put(ws.center), put(ws.scale), put(back.astype(np.int64)),
                   put(ahead.astype(np.int64)), device)

    def batch(self, idx: np.ndarray, ends: np.ndarray, sid: np.ndarray, first: np.ndarray, padded: bool,
              horizon: int) -> dict[str, torch.Tensor]:
        """:meth:`WindowSet.batch` on the device: ``ends``, ``sid`` and ``first`` (B,) are the windows'
        last rows, symbols and first readable rows (host); ``padded``: whether any window is padded."""
        meta = to_device(torch.from_numpy(np.stack([ends.astype(np.int64), sid.astype(np.int64),
                                                    first.astype(np.int64)])), self.device)  # (3, B)
        ends_t, sid_t, first_t = meta[0], meta[1], meta[2]
        rows = ends_t[:, None] + self.back  # (B, L)
        if padded:
            mask = rows >= first_t[:, None]
            rows = torch.maximum(rows, first_t[:, None])  # never read another symbol's or split's rows
        x = self.features[rows]  # (B, L, F)
        if self.center is not None:
            x = (x - self.center[sid_t][:, None, :]) / self.scale[sid_t][:, None, :]
        past = self.returns[rows]  # (B, L)
        out = {"index": torch.from_numpy(idx)}
        if padded:
            x = x.masked_fill(~mask[:, :, None], 0.0)
            past = past.masked_fill(~mask.view(*mask.shape, *[1] * (past.dim() - 2)), 0.0)
            out["mask"] = mask
        out["x"], out["past"] = x, past
        if horizon:
            out["y"] = self.returns[ends_t[:, None] + self.ahead]  # (B, H)
        return out


def device_rows_for(ws: WindowSet, device: torch.device | str, max_bytes: float) -> DeviceRows | None:
    """The :class:`DeviceRows` of ``ws`` on ``device`` when it is a GPU and they fit in ``max_bytes``;
    None otherwise (batches then travel from pinned host memory)."""
    device = torch.device(device)
    if device.type == "cpu" or DeviceRows.nbytes(ws) > max_bytes:
        return None
    return DeviceRows.build(ws, device)


MATERIALIZED_MAX = 1 << 24
"""Training splits of up to this many windows (16.8M) are shuffled by ``numpy``'s permutation, made
whole at each epoch's start; larger ones by a :class:`FeistelPermutation` computed per batch (a
70M-window permutation takes 7 s and 560 MB per process)."""


class FeistelPermutation:
    """A pseudo-random permutation of ``range(n)`` evaluated at any positions without materialising
    it: a balanced 4-round Feistel network on the 2k bits with 4^k >= n, round keys drawn from
    ``numpy.random.default_rng(seed)``, a splitmix64 round function, and cycle walking (an output
    >= n is encrypted again, which keeps it a bijection on ``range(n)``; fewer than 4 rounds of
    walking are expected). ``perm(positions)`` → the windows at those positions of the order."""

    ROUNDS = 4

    def __init__(self, n: int, seed):
        self.n = int(n)
        bits = max(2, int(np.ceil(np.log2(max(self.n, 2)))))
        self.half = np.uint64((bits + 1) // 2)
        self.mask = np.uint64((1 << int(self.half)) - 1)
        self.keys = np.random.default_rng(seed).integers(0, 2**63, size=self.ROUNDS, dtype=np.uint64)

    def _round(self, r: np.ndarray, key: np.uint64) -> np.ndarray:
        z = r ^ key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & self.mask

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ self._round(right, key)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # the round function multiplies modulo 2^64
            out = self._encrypt(np.asarray(positions, dtype=np.uint64))
            walk = out >= self.n
            while walk.any():
                out[walk] = self._encrypt(out[walk])
                walk = out >= self.n
        return out.astype(np.int64)


class EpochSampler:
    """Shuffled batches of window indices, epoch after epoch, with a resumable position.

    The order of epoch ``e`` depends only on (seed, e). Each draw takes the next global batch of
    ``batch_size × world_size`` windows of that order and returns this rank's disjoint slice of it,
    so N processes with batch B see exactly the windows of one process with batch N·B. A run
    restored from (epoch, position) continues with the batches an uninterrupted run would draw.
    """

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = True, rank: int = 0, world_size: int = 1):
        if n < world_size:  # every rank needs a window of each batch: with fewer, each draw would be empty, forever
            raise DataError(f"the training split has {n} window{'s' if n != 1 else ''}, fewer than the {world_size} "
                            "processes that train on it; give it more data (data.val_ratio, data.split_dates) or use fewer processes")
        if drop_last and n < batch_size * world_size:
            batch_size = max(1, n // world_size)  # a tiny training split still yields batches
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0  # position: windows of this epoch's order consumed, all ranks together
        self._order: np.ndarray | FeistelPermutation | None = None

    @property
    def epoch_length(self) -> int:
        """Windows drawn per epoch (all ranks together): a whole number of global batches with ``drop_last``."""
        step = self.batch_size * self.world_size
        return (self.n // step) * step if self.drop_last else self.n

    def _epoch_order(self) -> np.ndarray | FeistelPermutation:
        if self.n > MATERIALIZED_MAX:  # computed per batch: no pass over every window at the first step
            return FeistelPermutation(self.n, [self.seed, self.epoch])
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next_batch(self) -> np.ndarray:
        if self._order is None:
            self._order = self._epoch_order()
        if self.position >= self.epoch_length:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._epoch_order()
        stop = min(self.position + self.batch_size * self.world_size, self.epoch_length)
        order = self._order
        glob = order[self.position : stop] if isinstance(order, np.ndarray) else order(np.arange(self.position, stop))
        self.position = stop
        share = -(-len(glob) // self.world_size)  # ceil: the last, short batch of an epoch without drop_last
        return glob[self.rank * share : (self.rank + 1) * share]

    def at_epoch_end(self) -> bool:
        """True when the last batch drawn was the last of its epoch."""
        return self._order is not None and self.position >= self.epoch_length

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` (:meth:`state_dict`). A state without one of its whole numbers of at least 0
        (a checkpoint written before checksums, edited or cut: ``{}``) is a DataError, which the caller names
        the file of (a KeyError or a shuffle of another order than the run's otherwise)."""
        if not isinstance(state, dict):
            raise DataError(f"sampler must be an object with seed, epoch and position, got {type(state).__name__}")
        for key in ("seed", "epoch", "position"):
            if key not in state:
                raise DataError(f"sampler has no {key} (the shuffled order's seed, epoch and position)")
            v = state[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise DataError(f"sampler's {key} must be a whole number of at least 0, got {v!r}")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = None


class DateSampler:
    """Shuffled batches of whole as-of dates (``data.batching: dates``): each draw is every window
    whose last input row falls on one of ``dates_per_batch`` dates, so a cross-sectional loss sees
    all symbols of a date together. The dates are drawn by an :class:`EpochSampler` over the dates
    (same seed, rank share and resumable position), so resume and DDP behave as for windows.
    ``times``: (W,) int64 as-of time of each training window."""

    def __init__(self, times: np.ndarray, dates_per_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        times = np.asarray(times, dtype=np.int64)
        self.order = np.argsort(times, kind="stable")  # windows grouped by date, in window order inside one
        _, counts = np.unique(times, return_counts=True)
        if 0 < len(counts) < world_size:  # said here: the sampler over dates would call them windows
            raise DataError(
                f"the training split has {len(times)} window{'s' if len(times) != 1 else ''} on {len(counts)} "
                f"date{'s' if len(counts) != 1 else ''}, fewer dates than the {world_size} processes that train on "
                "it (data.batching=dates gives each process whole dates); give it more data (data.val_ratio, "
                "data.split_dates) or use fewer processes")
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (D + 1,)
        self.dates = EpochSampler(len(counts), dates_per_batch, seed, drop_last=True, rank=rank, world_size=world_size)

    @property
    def epoch(self) -> int:
        return self.dates.epoch

    def next_batch(self) -> np.ndarray:
        """The windows of this rank's next dates (a variable number of them), date after date."""
        days = self.dates.next_batch()
        return np.concatenate([self.order[self.offsets[d] : self.offsets[d + 1]] for d in days])

    def at_epoch_end(self) -> bool:
        return self.dates.at_epoch_end()

    def state_dict(self) -> dict[str, int]:
        return self.dates.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dates.load_state_dict(state)


def date_groups(times: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(G, B) float32 membership of B windows with as-of ``times`` (B,) in their G distinct dates
    (1 where window b is on date g), on ``device`` (copied without blocking): what a
    cross-sectional loss (:func:`hftraining.models.losses.ic_loss`) groups by."""
    _, inv = np.unique(np.asarray(times), return_inverse=True)
    inv = inv.reshape(-1)
    m = np.zeros((int(inv.max()) + 1 if inv.size else 0, inv.size), dtype=np.float32)
    m[inv, np.arange(inv.size)] = 1.0
    return to_device(torch.from_numpy(m), torch.device(device))


def eval_batches(n: int, batch_size: int, max_batches: int | None = None):
    """Consecutive index batches over all ``n`` windows (no shuffling, nothing dropped)."""
    for i, start in enumerate(range(0, n, batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield np.arange(start, min(n, start + batch_size))
