"""The ETT long-horizon benchmark under the published protocol (multivariate, ``features=M``).

    hftraining bench ett --data ../shared/data/ett --dataset ETTh1 --horizon 96 --model patchtst

Protocol (``../shared/data/ett/PAPER_TABLES.md`` §1, the ``Dataset_ETT_hour/minute`` loaders of
PatchTST, DLinear and iTransformer): 12/4/4 months of 30 days; a StandardScaler (population std)
fit on the train rows only and applied to the whole file; the val and test segments start ``L``
rows before their border so the first forecast step is the split's first row; stride-1 windows;
MSE/MAE on the z-scored data over all windows × horizon × channels; the checkpoint chosen by val
MSE (early stopping). One departure: every test window is kept, whereas the published PatchTST and
DLinear figures dropped the test loader's last partial batch (``drop_last=True``: 2688 of ETTh1's
2785 windows at H=96 with PatchTST's 128; PAPER_TABLES.md §1.3), so those columns score slightly
fewer, earlier windows than ours; the table also gives ours on PatchTST's windows, like for like.
Beside the model, the closed-form least-squares linear map L → H shared across channels is the
honest reference.

Built from the package's own parts, so the benchmark measures them: the scaler of
:mod:`hftraining.data.scaling`, the windows of :mod:`hftraining.data.splits` /
:mod:`hftraining.data.windows` (the z-scored series is both the inputs and the targets), the
trainer lifecycle of :mod:`hftraining.train.runner` (optimizer registry, schedules of
:mod:`hftraining.optim.schedules`, early stopping, the best checkpoint), the batched forward of
:mod:`hftraining.models.predict` and the metrics of :mod:`hftraining.eval.metrics`. What is the
benchmark's own: the protocol's borders, the closed-form maps and the val-chosen average.
"""

from __future__ import annotations

import codecs
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file

from hftraining.core.config import (
    Config, DataConfig, EvaluationConfig, ModelConfig, OutputConfig, TrainingConfig, validate,
)
from hftraining.core.errors import ConfigError, DataError, writing
from hftraining.core.jsonio import read_jsonl, write_json
from hftraining.data.pipeline import PreparedData, Preprocessing
from hftraining.data.scaling import Scaler
from hftraining.data.splits import Segment, window_ends
from hftraining.data.windows import WindowSet
from hftraining.eval import metrics as M
from hftraining.models.base import ForecastModel
from hftraining.models.dlinear import DLinear, DLinearMultivariate
from hftraining.models.outputs import ForecastOutput
from hftraining.models.patchtst import PatchTST, PatchTSTMultivariate
from hftraining.models.predict import cpu_has_bf16, predict_scaled
from hftraining.models.ridge import solve_penalised
from hftraining.train.logging import held_records
from hftraining.train.runner import training_run
# what `bench ett`'s parser reads (its --help imports no torch), re-exported: ett.DATASETS, ett.TrainSettings
from hftraining.workflows.ett_protocol import (  # noqa: F401
    DATASET, DATASETS, HORIZON, HORIZONS, MODEL, MODELS, RIDGE, RUN_DIR, SEQ_LEN, SUMMARY, TrainSettings,
)
from hftraining.workflows.train_run import SOFTWARE_BF16, said_once

COLUMNS = ("date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")

# Published MSE/MAE, multivariate, normalised scale: PAPER_TABLES.md §2 (PatchTST Table 3 for
# PatchTST/64 (L=512), PatchTST/42 (L=336) and DLinear (L=336); iTransformer Table 10 (L=96)).
PUBLISHED_COLUMNS = ("PatchTST/64", "PatchTST/42", "DLinear", "iTransformer")
PUBLISHED: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {
    ("ETTh1", 96): ((0.370, 0.400), (0.375, 0.399), (0.375, 0.399), (0.386, 0.405)),
    ("ETTh1", 192): ((0.413, 0.429), (0.414, 0.421), (0.405, 0.416), (0.441, 0.436)),
    ("ETTh1", 336): ((0.422, 0.440), (0.431, 0.436), (0.439, 0.443), (0.487, 0.458)),
    ("ETTh1", 720): ((0.447, 0.468), (0.449, 0.466), (0.472, 0.490), (0.503, 0.491)),
    ("ETTh2", 96): ((0.274, 0.337), (0.274, 0.336), (0.289, 0.353), (0.297, 0.349)),
    ("ETTh2", 192): ((0.341, 0.382), (0.339, 0.379), (0.383, 0.418), (0.380, 0.400)),
    ("ETTh2", 336): ((0.329, 0.384), (0.331, 0.380), (0.448, 0.465), (0.428, 0.432)),
    ("ETTh2", 720): ((0.379, 0.422), (0.379, 0.422), (0.605, 0.551), (0.427, 0.445)),
    ("ETTm1", 96): ((0.293, 0.346), (0.290, 0.342), (0.299, 0.343), (0.334, 0.368)),
    ("ETTm1", 192): ((0.333, 0.370), (0.332, 0.369), (0.335, 0.365), (0.377, 0.391)),
    ("ETTm1", 336): ((0.369, 0.392), (0.366, 0.392), (0.369, 0.386), (0.426, 0.420)),
    ("ETTm1", 720): ((0.416, 0.420), (0.420, 0.424), (0.425, 0.421), (0.491, 0.459)),
    ("ETTm2", 96): ((0.166, 0.256), (0.165, 0.255), (0.167, 0.260), (0.180, 0.264)),
    ("ETTm2", 192): ((0.223, 0.296), (0.220, 0.292), (0.224, 0.303), (0.250, 0.309)),
    ("ETTm2", 336): ((0.274, 0.329), (0.278, 0.329), (0.281, 0.342), (0.311, 0.348)),
    ("ETTm2", 720): ((0.362, 0.385), (0.367, 0.385), (0.397, 0.421), (0.412, 0.407)),
}


# --------------------------------------------------------------------------------------------
# Data: read → split borders → scale on train rows → stride-1 windows


def load_ett(data_dir: str | Path, dataset: str) -> np.ndarray:
    """Read ``<data_dir>/<dataset>.csv`` → (T, 7) float64, columns HUFL … OT in file order.

    The dates must be the dataset's regular grid from :data:`START` (hourly for ETTh, 15 minutes for
    ETTm, no gaps, PAPER_TABLES.md §0): the borders count rows and the time-of-day members take a
    row's phase from its index, so another file under the name (ETTm rows in ETTh1.csv) or a
    missing row would otherwise move every split and phase without a word. Every row holds the
    header's 8 fields: a row with more (a value split by a comma) shifted its values into other
    channels, its last dropped, without a word. Errors name the file's line (1-based, the header
    line 1) and column; blank lines are skipped. A UTF-8 byte order mark at the start (a file saved
    by Excel as "CSV UTF-8") is read as the same file without it."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset: unknown {dataset!r}; valid: {', '.join(DATASETS)}")
    path = Path(data_dir) / f"{dataset}.csv"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected the ETT-small CSVs in --data)") from None
    text = _utf8_text(path, raw)
    header_line, _, body = text.partition("\n")
    header = header_line.strip().split(",")
    if tuple(header) != COLUMNS:
        raise DataError(f"{path}: header {','.join(header)!r}, expected {','.join(COLUMNS)!r}")
    lines, numbers = [], []  # the data rows and their 1-based line numbers in the file
    # the file is read with universal newlines (\r\n and \r are \n): split there alone, as an editor counts lines
    # (str.splitlines also breaks at \f, \x1c-\x1e, \x85, U+2028/9: every later line number was off)
    for i, line in enumerate(body.split("\n")):
        if not line.strip():
            continue
        if line.count(",") != len(COLUMNS) - 1:
            raise DataError(f"{path}: line {i + 2}: {line.count(',') + 1} fields, expected {len(COLUMNS)} "
                            f"({','.join(COLUMNS)})")
        lines.append(line)
        numbers.append(i + 2)
    if not lines:
        return np.empty((0, len(COLUMNS) - 1), dtype=np.float64)
    try:
        values, dates = _parse(lines)
    except ValueError:
        raise DataError(f"{path}: {_unreadable(lines, numbers)}") from None
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0, 0])
        col = COLUMNS[1 + int(np.argwhere(~np.isfinite(values[row]))[0, 0])]
        raise DataError(f"{path}: line {numbers[row]}, column {col}: non-finite value")
    step = row_step(dataset)
    expected = START.astype("datetime64[s]") + np.arange(len(dates)) * step.astype("timedelta64[s]")
    bad = np.flatnonzero(dates != expected)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: line {numbers[i]}: date {dates[i]}, expected {expected[i]} ({dataset} rows are "
                        f"{'15-minute' if dataset.startswith('ETTm') else 'hourly'} steps from {START.astype('datetime64[m]')} without gaps)")
    return values


def _newlines(text: str) -> str:
    """``text`` with \\r\\n and \\r read as \\n (universal newlines, as an editor counts lines)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _utf8_text(path: Path, raw: bytes) -> str:
    """The file's bytes as text (universal newlines), a UTF-8 byte order mark at the start left out (a
    file saved by Excel as "CSV UTF-8"). Bytes that are not UTF-8 are a DataError naming their offset
    in the file and their line: the decoder's own offset counted from the start of the chunk it was
    given (8 KiB reads) and from after the mark, so it pointed elsewhere in any longer file."""
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return _newlines(raw[bom:].decode("utf-8"))
    except UnicodeDecodeError as e:
        at = bom + e.start
        line = _newlines(raw[bom:at].decode("utf-8")).count("\n") + 1
        marks = (("UTF-32", codecs.BOM_UTF32_LE), ("UTF-32", codecs.BOM_UTF32_BE),  # UTF-32 LE starts as UTF-16 LE
                 ("UTF-16", codecs.BOM_UTF16_LE), ("UTF-16", codecs.BOM_UTF16_BE))
        wide = next(((name, mark) for name, mark in marks if raw.startswith(mark)), None)
        hint = f": {wide[0]} text (byte order mark {wide[1].hex(' ').upper()}); save it as UTF-8" if wide else ""
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {at}, line {line}){hint}") from None


def _parse(lines: list[str], column: int | None = None) -> Any:
    """The rows' values (n, 7) float64 and dates (n,) datetime64[s], or the one ``column`` of COLUMNS (0: the
    dates); numpy's ValueError for a field it does not read."""
    kw: dict[str, Any] = {"delimiter": ",", "comments": None}
    if column is not None:
        return np.loadtxt(lines, usecols=column, dtype="datetime64[s]" if column == 0 else np.float64, ndmin=1, **kw)
    values = np.loadtxt(lines, usecols=range(1, len(COLUMNS)), dtype=np.float64, ndmin=2, **kw)
    return values, np.loadtxt(lines, usecols=0, dtype="datetime64[s]", ndmin=1, **kw)


def _unreadable(lines: list[str], numbers: list[int]) -> str:
    """``unreadable value on line N, column NAME: 'text' is not a number`` (or a date) for the first
    field of ``lines`` that :func:`_parse` does not read (numpy's own message counted rows from 0 after the
    header: two fewer than the file's line, and from the first blank line on more). The row is found by
    halving with the same parser, not Python's float: '1_000' or full-width digits, which float reads and
    numpy does not, are named too."""

    def reads(chunk: list[str], column: int | None = None) -> bool:
        try:
            _parse(chunk, column)
        except ValueError:
            return False
        return True

    lo, hi = 0, len(lines)  # lines[lo:hi] holds the first row numpy does not read
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if reads(lines[lo:mid]) else (lo, mid)
    fields = lines[lo].split(",")
    for k, name in enumerate(COLUMNS):
        if not reads([lines[lo]], k):
            return f"unreadable value on line {numbers[lo]}, column {name}: {fields[k]!r} is not a {'date' if k == 0 else 'number'}"
    return f"unreadable value on line {numbers[lo]}"


def read_datasets(data_dir: str | Path, datasets: list[str]) -> dict[str, np.ndarray]:
    """dataset → its rows (:func:`load_ett`), each file read and checked to hold the protocol's rows
    (the end of the test split) before the first cell runs: a missing, off-grid or short second file
    was found only once every cell of the first dataset had run, hours in with a trained model."""
    out = {}
    for ds in dict.fromkeys(datasets):
        values = out[ds] = load_ett(data_dir, ds)
        need = split_borders(ds, 0)["test"][1]
        if values.shape[0] < need:
            raise DataError(f"{Path(data_dir) / f'{ds}.csv'}: {values.shape[0]} rows, the protocol needs {need} "
                            "(12/4/4 months of 30 days: the end of its test split)")
    return out


def row_step(dataset: str) -> np.timedelta64:
    """The time between two rows of ``dataset``: 15 minutes for ETTm, an hour for ETTh."""
    return np.timedelta64(15 if dataset.startswith("ETTm") else 60, "m")


def split_borders(dataset: str, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of the train/val/test segments, val/test starting ``seq_len`` rows
    early (``border1s``/``border2s`` of the reference loaders). ETTm borders are 4× the hourly ones."""
    f = 4 if dataset.startswith("ETTm") else 1
    month = 30 * 24 * f
    tr, va, te = 12 * month, 16 * month, 20 * month
    return {"train": (0, tr), "val": (tr - seq_len, va), "test": (va - seq_len, te)}


EVAL_BATCH = 512  # windows per batch of validation and prediction (each holds C channel series)
SERIES = "ETT"  # the one "symbol" of a dataset: the scaler is fit over all its train rows
START = np.datetime64("2016-07-01T00:00", "ns")  # first row of all four files, which have no gaps (PAPER_TABLES.md §0)


@dataclass
class EttData:
    """The three splits of one dataset, z-scored with the train-row scaler."""

    dataset: str
    seq_len: int
    horizon: int
    scaler: Scaler
    z: torch.Tensor  # (T, C) float32, the whole file z-scored
    borders: dict[str, tuple[int, int]]
    windows: dict[str, WindowSet] = field(default_factory=dict)  # name → windows (inputs and targets: z)

    @functools.cached_property
    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name → (X (n, L, C), Y (n, H, C)): every window of the split gathered once by its
        :class:`WindowSet` (the package's one windowing: the windows the trainer and the batched
        forward read), for the closed-form maps. Window i of a split starting at row a is
        X = z[a+i : a+i+L], Y = z[a+i+L : a+i+L+H]."""
        out = {}
        for name, ws in self.windows.items():
            if len(ws) == 0:
                raise DataError(f"{self.dataset}: the {name} split is too short for L={self.seq_len} + H={self.horizon}")
            b = ws.batch(np.arange(len(ws)))
            out[name] = (b["x"], b["y"])
        return out

    def count(self, split: str) -> int:
        return len(self.windows[split])


def window_set(z: np.ndarray, times: np.ndarray, start: int, stop: int, seq_len: int, horizon: int) -> WindowSet:
    """The stride-1 windows of rows [start, stop) of the (T, C) series ``z``: inputs and targets both
    read ``z`` (``x`` and ``y`` of a batch are (B, L, C) and (B, H, C))."""
    r = window_ends(Segment(start, stop), seq_len, horizon)
    ends = np.arange(r.start, r.stop, r.step, dtype=np.int64)
    return WindowSet(features=z, returns=z, ends=ends, symbol_ids=np.zeros(len(ends), np.int32),
                     segment_first=np.array([start], np.int64), row_times=times, row_close=np.zeros(len(z)),
                     symbols=[SERIES], seq_len=seq_len, horizon=horizon)


def prepare(values: np.ndarray, dataset: str, seq_len: int, horizon: int) -> EttData:
    borders = split_borders(dataset, seq_len)
    if values.shape[0] < borders["test"][1]:
        raise DataError(f"{dataset}: {values.shape[0]} rows, the protocol needs {borders['test'][1]}")
    if seq_len > borders["train"][1] - horizon:
        raise ConfigError(f"--seq-len: {seq_len} leaves no training window with horizon {horizon}")
    scaler = Scaler(kind="standard").fit_rows(values, {SERIES: slice(0, borders["train"][1])})  # train rows only
    z = scaler.transform(values, SERIES).astype(np.float32)  # (T, C)
    step = row_step(dataset).astype("timedelta64[ns]")
    times = (START + np.arange(len(z)) * step).astype(np.int64)
    ws = {name: window_set(z, times, a, b, seq_len, horizon) for name, (a, b) in borders.items()}
    return EttData(dataset, seq_len, horizon, scaler, torch.from_numpy(z), borders, ws)


# --------------------------------------------------------------------------------------------
# Metrics and the closed-form reference


def scores(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray) -> dict[str, float]:
    """MSE and MAE over all windows × H × channels (one mean over every value, in float64)."""
    p, t = (np.asarray(a, dtype=np.float64) for a in (pred, true))
    return {"mse": M.mse(p, t), "mae": M.mae(p, t)}


def metrics(predict: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, Y: torch.Tensor, batch: int = 512) -> dict[str, float]:
    """:func:`scores` of ``predict`` (a closed-form map) on the windows X (n, L, C), Y (n, H, C)."""
    with torch.no_grad():
        pred = torch.cat([predict(X[i : i + batch]) for i in range(0, X.shape[0], batch)])
    return scores(pred, Y)


class LinearMap:
    """Closed-form least squares from the L inputs to the H outputs, one map shared by all channels
    (with a bias). ``ridge`` is λ relative to the mean diagonal of the Gram matrix, so it does not
    depend on the number of windows; a tiny value only guards the solve.

    ``center=True`` fits the map on windows minus their last value and adds it back (NLinear's
    trick, in closed form): the forecast then moves with the level of the window, whereas the plain
    map may pull towards the training period's level, which hurts when the test level has shifted
    (ETTh2).

    ``period > 0`` adds one bias per channel and phase of the cycle (the forecast origin's hour of
    the day for ``period`` = steps per day), an H-vector each: CycleNet's learned cycle (Lin et al.,
    NeurIPS 2024) in closed form, since for a linear map removing a cycle Q from the input and adding
    it back to the output, ``W(x − Q_past) + Q_future``, is the map plus a bias that depends only on
    the phase and the channel. The windows' phases are then passed to :meth:`fit` and the call
    (:func:`phases`); the time of day of a forecast is known in advance, so this uses no future
    values. The biases' ridge is λ relative to the mean number of windows per phase and channel."""

    def __init__(self, ridge: float = 1e-6, center: bool = False, period: int = 0):
        self.ridge = ridge
        self.center = center
        self.period = period
        self.weight: torch.Tensor | None = None  # (L+1, H)
        self.phase_bias: torch.Tensor | None = None  # (C·period, H) when period > 0

    def _offset(self, X: torch.Tensor) -> torch.Tensor | float:
        return X[:, -1:, :] if self.center else 0.0  # (b, 1, C)

    def _groups(self, phase: torch.Tensor | None, b: int, c: int) -> torch.Tensor:
        """Row (window i, channel k) of the design → bias index k·period + phase_i."""
        if phase is None or phase.shape != (b,):
            raise ValueError(f"LinearMap(period={self.period}) needs the phase of each of the {b} windows")
        return (torch.arange(c) * self.period + phase.long()[:, None] % self.period).reshape(-1)  # (b·C,)

    def fit(self, X: torch.Tensor, Y: torch.Tensor, phase: torch.Tensor | None = None, chunk: int = 2048) -> "LinearMap":
        """X (n, L, C), Y (n, H, C); ``phase`` (n,) when ``period`` > 0. The Gram matrix is accumulated
        in float64 over chunks of windows, so ETTm's 240k series never materialise as one (n·C, L)
        matrix; the phase biases' blocks are sums per group (no one-hot columns)."""
        L, H, C = X.shape[1], Y.shape[1], X.shape[2]
        G = torch.zeros(L + 1, L + 1, dtype=torch.float64)
        B = torch.zeros(L + 1, H, dtype=torch.float64)
        k = C * self.period
        S = torch.zeros(k, L + 1, dtype=torch.float64)  # per group: sum of its design rows
        Be = torch.zeros(k, H, dtype=torch.float64)  # per group: sum of its targets
        count = torch.zeros(k, dtype=torch.float64)
        for i in range(0, X.shape[0], chunk):
            x, off = X[i : i + chunk], self._offset(X[i : i + chunk])
            a = self._design(x - off)  # (b·C, L+1)
            y = (Y[i : i + chunk] - off).transpose(1, 2).reshape(-1, H).double()  # (b·C, H)
            G += a.T @ a
            B += a.T @ y
            if self.period:
                g = self._groups(phase[i : i + chunk], x.shape[0], C)
                S.index_add_(0, g, a)
                Be.index_add_(0, g, y)
                count += torch.bincount(g, minlength=k).double()
        if self.period:
            G = torch.cat([torch.cat([G, S.T], 1), torch.cat([S, torch.diag(count)], 1)], 0)
            B = torch.cat([B, Be], 0)
            scale = torch.cat([torch.full((L + 1,), float(G[: L + 1].diagonal().mean())), torch.full((k,), float(count.mean()))])
        else:
            scale = G.diagonal().mean().expand(L + 1)
        self._normal_equations = (G, B, scale.to(torch.float64), k)
        return self.solve(self.ridge)

    def solve(self, ridge: float) -> "LinearMap":
        """A copy with another λ, solved from the stored normal equations (no pass over the data)."""
        G, B, scale, k = self._normal_equations
        out = LinearMap(ridge, self.center, self.period)
        out._normal_equations = self._normal_equations
        w = solve_penalised(G, B, ridge * scale)
        out.weight, out.phase_bias = w[: w.shape[0] - k], (w[w.shape[0] - k :] if k else None)
        if ridge == self.ridge:
            self.weight, self.phase_bias = out.weight, out.phase_bias
        return out

    @staticmethod
    def _design(X: torch.Tensor) -> torch.Tensor:
        a = X.transpose(1, 2).reshape(-1, X.shape[1]).double()  # (b·C, L): one row per series
        return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)

    def __call__(self, X: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
        """X (b, L, C) → (b, H, C); ``phase`` (b,) when ``period`` > 0."""
        if self.weight is None:
            raise RuntimeError("LinearMap.fit must be called first")
        b, _, c = X.shape
        off = self._offset(X)
        y = self._design(X - off) @ self.weight  # (b·C, H)
        if self.period:
            y = y + self.phase_bias[self._groups(phase, b, c)]
        return y.view(b, c, -1).transpose(1, 2).float() + off


def phases(data: "EttData", split: str, period: int) -> torch.Tensor:
    """(n,) phase of each window's first forecast row: its row index in the file mod ``period``
    (the files start at midnight and have no gaps, PAPER_TABLES.md §0)."""
    first = data.borders[split][0] + data.seq_len
    return (first + torch.arange(data.count(split))) % period


# --------------------------------------------------------------------------------------------
# Trained models: the package's trainer lifecycle


SOFTWARE_BF16_ETT = "warning: --bf16 on a CPU without bf16 instructions"
"""How :func:`run_ett`'s warning about bf16 autocast computed in software begins."""


def software_bf16(s: TrainSettings) -> bool:
    """Whether ``--bf16`` trains on a CPU that computes bf16 in software (the trainer's device ``auto``:
    the CPU when no GPU is seen)."""
    return s.bf16 and not torch.cuda.is_available() and cpu_has_bf16() is False


def check_settings(s: TrainSettings) -> None:
    """A ConfigError naming the flag of a training setting out of range (before any cell runs: a
    batch size of 0 divided by zero, 0 epochs trained nothing and failed at the end)."""
    for name in ("epochs", "batch_size", "evals_per_epoch"):
        if getattr(s, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(s, name)}")
    if not s.lr > 0:
        raise ConfigError(f"--lr: must be > 0, got {s.lr}")
    for name in ("weight_decay", "patience"):
        if not getattr(s, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(s, name)}")


def check_cell(dataset: str, horizon: int, seq_len: int, linear_lookbacks: tuple[int, ...] = ()) -> None:
    """A ConfigError naming the flag when ``dataset`` × ``horizon`` cannot run at ``seq_len`` and
    ``linear_lookbacks`` (no training window, no val or test window, a non-positive length)."""
    if horizon <= 0:
        raise ConfigError(f"--horizon: must be > 0, got {horizon}")
    borders = split_borders(dataset, 0) if dataset in DATASETS else None
    train_rows = borders["train"][1] if borders else math.inf
    if borders and horizon > borders["val"][1] - borders["val"][0]:  # val and test hold as many rows
        raise ConfigError(f"--horizon: {horizon} is longer than the {dataset} val and test splits "
                          f"({borders['val'][1] - borders['val'][0]} rows): they would have no window")
    for flag, lb in [("--seq-len", seq_len), *(("--linear-lookbacks", lb) for lb in linear_lookbacks)]:
        if lb <= 0:
            raise ConfigError(f"{flag}: must be > 0, got {lb}")
        if lb > train_rows - horizon:
            raise ConfigError(f"{flag}: {lb} leaves no training window with horizon {horizon}")


def trainer_config(s: TrainSettings, model_cfg: ModelConfig, n_train: int, seq_len: int, horizon: int,
                   run_dir: str | Path) -> Config:
    """The run config of the trainer for ``s``: AdamW, warmup + cosine to 10%, no clipping, a val
    evaluation and a checkpoint ``evals_per_epoch`` times an epoch, early stopping on val MSE and the
    best checkpoint as the final weights."""
    # an evaluation every 1/evals_per_epoch of the batches of an epoch (the sampler drops the last
    # partial batch), and the steps a whole number of those: the last evaluation is the last step
    every = max(1, (n_train // s.batch_size) // s.evals_per_epoch)
    return Config(
        model=model_cfg,
        data=DataConfig(sequence_length=seq_len, prediction_horizon=horizon, batch_size=s.batch_size, eval_batch_size=EVAL_BATCH),
        training=TrainingConfig(
            optimizer="adamw", learning_rate=s.lr, weight_decay=s.weight_decay, lr_scheduler="cosine", warmup_ratio=0.05,
            min_lr_ratio=0.1, max_steps=every * s.evals_per_epoch * s.epochs, max_grad_norm=0.0, precision="bf16" if s.bf16 else "fp32",
            seed=s.seed, logging_steps=every, save_steps=every, save_total_limit=1, early_stopping_patience=s.patience,
            load_best_model_at_end=True,
        ),
        evaluation=EvaluationConfig(eval_steps=every, metric="mse", report=False, max_val_windows=None),  # the protocol: all of val
        output=OutputConfig(output_dir=str(run_dir), overwrite=True, tensorboard=False, progress_bar="never"),
    )


class ChannelModel(ForecastModel):
    """A (B, L, C) → (B, H, C) network as a :class:`ForecastModel`, so the package's trainer,
    checkpoints and batched forward drive it: the prediction is (B, H, C) and its targets are the
    windows' next H rows of every channel (mask and ``past`` are not used: windows are never padded)."""

    def __init__(self, net: torch.nn.Module, cfg: ModelConfig, n_channels: int, horizon: int, seq_len: int):
        super().__init__(cfg, n_channels, horizon, seq_len)
        self.net = net

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None) -> ForecastOutput:
        return ForecastOutput(prediction=self.net(x))  # (B, H, C)


class OnLinearMap(torch.nn.Module):
    """A fixed closed-form map plus a trained correction: (B, L, C) → (B, H, C).

    The network starts at zero output (its head is zero-initialised) so training starts from the
    linear map's forecast and early stopping can only keep a correction that lowers val MSE. The
    network's own level (its RevIN location: the window mean, or the last value with
    ``subtract_last``) is removed from the correction: the base map already places the level."""

    def __init__(self, base: LinearMap, net: torch.nn.Module):
        super().__init__()
        if base.center or base.weight is None:
            raise ValueError("OnLinearMap needs a fitted plain LinearMap")
        self.register_buffer("base_weight", base.weight.float())  # (L+1, H)
        self.net = net
        # the level a zero head denormalises to; removing the mean instead left the last value
        # minus the mean in an untrained correction with --subtract-last
        self.level_is_last = bool(getattr(getattr(net, "revin", None), "subtract_last", False))
        head = getattr(net, "head", None)
        if isinstance(head, torch.nn.Linear):
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.base_weight
        base = (x.transpose(1, 2) @ w[:-1] + w[-1]).transpose(1, 2)  # (B, H, C)
        level = x[:, -1:, :] if self.level_is_last else x.mean(dim=1, keepdim=True)
        return base + self.net(x) - level



def build_ett_model(name: str, cfg: ModelConfig, n_channels: int, horizon: int, seq_len: int, **kwargs: Any) -> torch.nn.Module:
    """(B, L, C) → (B, H, C) model of the benchmark: ``patchtst`` or ``dlinear``."""
    if name == "patchtst":
        return PatchTSTMultivariate(cfg, n_channels, horizon, seq_len, **kwargs)
    if name == "dlinear":
        return DLinearMultivariate(cfg, n_channels, horizon, seq_len, **kwargs)
    raise ConfigError(f"--model: unknown {name!r}; valid: patchtst, dlinear, linear")


def train_model(net: torch.nn.Module, data: EttData, s: TrainSettings, run_dir: str | Path,
                model_cfg: ModelConfig | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``net`` on the train windows with MSE through the package's trainer lifecycle; the
    final weights are those of the evaluation with the lowest val MSE (early stopping). Returns
    the history (val MSE by step, from the run's metrics.jsonl), the best val MSE and step, the wall
    time and the model (a :class:`ChannelModel` around ``net``, in eval mode)."""
    model_cfg = model_cfg or ModelConfig(type="patchtst")
    cfg = trainer_config(s, model_cfg, len(data.windows["train"]), data.seq_len, data.horizon, run_dir)
    model = ChannelModel(net, model_cfg, data.z.shape[1], data.horizon, data.seq_len)
    prepared = PreparedData(data.windows["train"], data.windows["val"], data.windows["test"],
                            Preprocessing(features=[], feature_columns=[f"channel_{i}" for i in range(data.z.shape[1])],
                                          scaler=data.scaler, target_scale=1.0, seq_len=data.seq_len, horizon=data.horizon,
                                          data=vars(cfg.data)),
                            {"dataset": data.dataset, "windows": {k: len(v) for k, v in data.windows.items()}})
    t0 = time.perf_counter()
    with training_run(cfg, prepared, model=model, save_final=False) as run:
        state = run.state
    metrics_file = Path(run_dir) / "metrics.jsonl"
    history = [{"step": r["step"], "val_mse": r["eval_mse"]} for r in read_jsonl(metrics_file) if "eval_mse" in r]
    log(f"  best val mse {state.best_metric:.4f} at step {state.best_step} of {state.global_step}"
        f"{' (early stop)' if state.stopped_early else ''}; {time.perf_counter() - t0:.0f}s")
    return {"history": history, "best_val_mse": state.best_metric, "best_step": state.best_step,
            "train_seconds": time.perf_counter() - t0, "model": model}


def forecasts(model: torch.nn.Module, data: EttData, split: str, precision: str = "fp32") -> torch.Tensor:
    """(n, H, C) forecasts of a trained :class:`ChannelModel` for every window of a split, on the device
    its parameters are on (the one it trained on: a GPU's model is not predicted on the CPU)."""
    device = next(model.parameters()).device
    return torch.from_numpy(predict_scaled(model, data.windows[split], EVAL_BATCH, device, precision))


# --------------------------------------------------------------------------------------------
# The benchmark


def select_average(members: dict[str, tuple[torch.Tensor, torch.Tensor]], Yva: torch.Tensor, Yte: torch.Tensor,
                   max_steps: int = 20) -> dict[str, Any]:
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004) on val: start from the
    best member, repeatedly add the member (again, if it helps) whose inclusion lowers the val MSE
    of the running average the most, stop when none does. ``members`` maps a name to its
    (val forecast, test forecast). Only val decides; test is scored once, for the result."""
    val_mse = {n: scores(v, Yva)["mse"] for n, (v, _) in members.items()}
    chosen = [min(val_mse, key=val_mse.get)]
    total = members[chosen[0]][0].double()
    best = val_mse[chosen[0]]
    for _ in range(max_steps - 1):
        trial = {n: scores((total + v) / (len(chosen) + 1), Yva)["mse"] for n, (v, _) in members.items()}
        name = min(trial, key=trial.get)
        if trial[name] >= best:
            break
        chosen.append(name)
        total = total + members[name][0]
        best = trial[name]
    weights = {n: chosen.count(n) / len(chosen) for n in dict.fromkeys(chosen)}
    test = sum(w * members[n][1].double() for n, w in weights.items())
    val = sum(w * members[n][0].double() for n, w in weights.items())
    return {"weights": weights, "member_val_mse": val_mse, "val": scores(val, Yva), "test": scores(test, Yte)}


RIDGES = (1e-4, 1e-2, 1e-1, 1.0)
"""λ candidates of the extra closed-form members, each chosen on val."""


def steps_per_day(dataset: str) -> int:
    return 96 if dataset.startswith("ETTm") else 24


def linear_forecasts(m: LinearMap, data: EttData, split: str, batch: int = 512) -> torch.Tensor:
    """``m``'s forecasts of every window of a split, (n, H, C), with the windows' phases if it has any."""
    X = data.splits[split][0]
    ph = phases(data, split, m.period) if m.period else None
    return torch.cat([m(X[i : i + batch], None if ph is None else ph[i : i + batch]) for i in range(0, X.shape[0], batch)])


def linear_members(values: np.ndarray, dataset: str, horizon: int, lookbacks: tuple[int, ...], log: Callable[[str], None],
                   time_of_day: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form members for the ensemble: for each L, the plain and the centred map, and with
    ``time_of_day`` both again with a bias per channel and time of day (``LinearMap(period=steps per
    day)``), each with the λ of ``RIDGES`` that has the lowest val MSE → name → (val forecast,
    test forecast)."""
    out = {}
    for lb in lookbacks:
        # val/test windows target the same rows whatever L is (the segments start L rows early)
        d = prepare(values, dataset, lb, horizon)
        (Xtr, Ytr), (_, Yva) = d.splits["train"], d.splits["val"]
        for period in (0, steps_per_day(dataset)) if time_of_day else (0,):
            for center in (False, True):
                base = LinearMap(RIDGES[0], center, period).fit(Xtr, Ytr, phases(d, "train", period) if period else None)
                fits = [base.solve(r) for r in RIDGES]
                vals = [linear_forecasts(m, d, "val") for m in fits]
                i = min(range(len(fits)), key=lambda j: scores(vals[j], Yva)["mse"])
                name = f"{'centred' if center else 'plain'} linear{' + time of day' if period else ''} L={lb} λ={RIDGES[i]:g}"
                out[name] = (vals[i], linear_forecasts(fits[i], d, "test"))
                log(f"  {name}: val mse {scores(vals[i], Yva)['mse']:.4f}")
    return out


def run_ett(
    data_dir: str | Path,
    dataset: str = DATASET,
    horizon: int = HORIZON,
    model: str = MODEL,
    seq_len: int = SEQ_LEN,
    model_cfg: ModelConfig | None = None,
    settings: TrainSettings | None = None,
    model_kwargs: dict[str, Any] | None = None,
    ridge: float = RIDGE,
    ensemble: bool = True,
    log: Callable[[str], None] = print,
    save_predictions: str | Path | None = None,
    linear_lookbacks: tuple[int, ...] = (),
    time_of_day: bool = True,
    run_dir: str | Path = RUN_DIR,
    values: np.ndarray | None = None,
) -> dict[str, Any]:
    """Run one dataset × horizon (a trained model's run folder: ``run_dir/<dataset>-H<horizon>-<model>``). Always: the closed-form linear map at ``seq_len`` (the reference).
    Then the trained ``model`` (``"linear"``: none), and plain and centred closed-form maps at each of
    ``linear_lookbacks``, with ``time_of_day`` also with biases per time of day
    (:func:`linear_members`). With ``ensemble``, "ours" is the greedy val-chosen
    average of all these (:func:`select_average`); otherwise the trained model alone. Returns a
    JSON-ready dict of metrics, window counts, wall times and the published figures.
    ``save_predictions`` writes the val/test forecasts (safetensors) for later combination. ``values``:
    the dataset's rows as :func:`load_ett` returns them (read from ``data_dir`` when None)."""
    check_cell(dataset, horizon, seq_len, linear_lookbacks)
    settings = settings or TrainSettings()
    if model != "linear":
        check_settings(settings)
    model_cfg = model_cfg or default_model_config(model, dataset)
    values = load_ett(data_dir, dataset) if values is None else values
    data = prepare(values, dataset, seq_len, horizon)
    (Xtr, Ytr), (_, Yva), (_, Yte) = (data.splits[k] for k in ("train", "val", "test"))
    result: dict[str, Any] = {
        "dataset": dataset, "horizon": horizon, "seq_len": seq_len, "model": model,
        "windows": {k: data.count(k) for k in data.splits},
        "protocol": "all test windows (drop_last=False), scaler on train rows, metrics on z-scored data",
        "published": {name: {"mse": v[0], "mae": v[1]} for name, v in zip(PUBLISHED_COLUMNS, PUBLISHED.get((dataset, horizon), ()))},
    }
    t0 = time.perf_counter()
    lin = LinearMap(ridge).fit(Xtr, Ytr)
    members = {f"linear L={seq_len}": (linear_forecasts(lin, data, "val"), linear_forecasts(lin, data, "test"))}
    lin_val, lin_test = members[f"linear L={seq_len}"]
    result["linear_map"] = {"ridge": ridge, "val": scores(lin_val, Yva), "test": scores(lin_test, Yte), "fit_seconds": time.perf_counter() - t0}
    log(f"{dataset} H={horizon} L={seq_len}: windows {result['windows']}; linear map val {result['linear_map']['val']['mse']:.4f} "
        f"test {result['linear_map']['test']['mse']:.4f} ({result['linear_map']['fit_seconds']:.1f}s)")
    result["ours"] = {"name": "linear map", **{k: result["linear_map"][k] for k in ("val", "test")}}
    ours_test = lin_test
    members.update(linear_members(values, dataset, horizon, tuple(sorted(set(linear_lookbacks))), log, time_of_day))
    if model != "linear":
        kwargs = dict(model_kwargs or {})
        on_linear = kwargs.pop("on_linear", False)
        torch.manual_seed(settings.seed)  # the initial weights follow --seed (torch seeds each process at random)
        net = build_ett_model(model, model_cfg, Xtr.shape[2], horizon, seq_len, **kwargs)
        if on_linear:
            net = OnLinearMap(lin, net)
        log(f"training {model} ({sum(p.numel() for p in net.parameters()):,} parameters), {settings}")
        # the trainer's own warning names training.precision, which this command has no flag for; held, this
        # one opens the cell's train.log as the trainer's did
        with said_once(SOFTWARE_BF16, said=True), held_records():
            if software_bf16(settings):
                logging.getLogger("hftraining").warning(
                    "%s (AVX512-BF16 or AMX): torch computes it in software, several times slower than fp32; "
                    "without --bf16 it trains and predicts in fp32", SOFTWARE_BF16_ETT)
            train = train_model(net, data, settings, Path(run_dir) / f"{dataset}-H{horizon}-{model}", model_cfg, log)
        name = model + (" on the linear map" if on_linear else "")
        precision = "bf16" if settings.bf16 else "fp32"
        members[name] = tuple(forecasts(train["model"], data, split, precision) for split in ("val", "test"))
        result["trained"] = {
            # the settings the model reads (DLinear's record listed a width, depth and dropout it does not have)
            "model_config": {k: getattr(model_cfg, k) for k in MODEL_KEYS if k in MODEL_SETTINGS.get(model, MODEL_KEYS)},
            "model_kwargs": model_kwargs or {},
            "settings": vars(settings),
            "val": scores(members[name][0], Yva), "test": scores(members[name][1], Yte),
            **{k: train[k] for k in ("best_val_mse", "best_step", "train_seconds", "history")},
        }
        result["ours"] = {"name": name, **{k: result["trained"][k] for k in ("val", "test")}}
        ours_test = members[name][1]
    result["members"] = {n: {"val": scores(v, Yva), "test": scores(t, Yte)} for n, (v, t) in members.items()}
    if ensemble and len(members) > 1:
        result["ensemble"] = select_average(members, Yva, Yte)
        w = result["ensemble"]["weights"]
        name = " + ".join(f"{v:.2f}·{n}" for n, v in w.items()) if len(w) > 1 else next(iter(w))
        result["ours"] = {"name": name, **{k: result["ensemble"][k] for k in ("val", "test")}}
        ours_test = sum(v * members[n][1].double() for n, v in w.items())
    # like for like with the PatchTST columns: the test windows their loader kept (drop_last)
    kept = published_windows(len(Yte))
    result["ours"]["test_patchtst_windows"] = {"windows": kept, **scores(ours_test[:kept], Yte[:kept])}
    result["total_seconds"] = time.perf_counter() - t0
    if save_predictions:
        tensors = {f"{n.replace(' ', '_')}/{split}": p.contiguous() for n, pair in members.items() for split, p in zip(("val", "test"), pair)}
        with writing(save_predictions):  # a full disk, no permission: one line naming the file
            save_file(tensors, str(save_predictions), metadata={"dataset": dataset, "horizon": str(horizon), "seq_len": str(seq_len)})
    return result


PATCHTST_TEST_BATCH = 128
"""The test batch of PatchTST's published runs, whose loader dropped the last partial batch
(``drop_last=True``, PAPER_TABLES.md §1.3): its figures score the first windows only."""


def published_windows(n: int) -> int:
    """How many of ``n`` test windows PatchTST's published figures scored: whole batches of
    :data:`PATCHTST_TEST_BATCH`, in order (the test loader does not shuffle)."""
    return n // PATCHTST_TEST_BATCH * PATCHTST_TEST_BATCH


MODEL_KEYS = ("hidden_size", "num_heads", "num_layers", "intermediate_size", "dropout", "patch_len", "patch_stride", "moving_avg")
"""The model.* keys a trained model of the benchmark may be given (``bench ett --hidden-size`` …)."""
MODEL_SETTINGS: dict[str, frozenset[str]] = {"patchtst": PatchTST.settings, "dlinear": DLinear.settings, "linear": frozenset()}
"""model → the keys of :data:`MODEL_KEYS` its network reads (the multivariate PatchTST and DLinear read what
the package's PatchTST and DLinear do: the patch encoder's sizes; the moving average's kernel)."""


def check_model_overrides(model: str, overrides: dict[str, Any] | None) -> None:
    """A ConfigError naming the flag of a model setting ``model`` does not read: ``--model dlinear
    --hidden-size 64`` trained the DLinear it always did, and ``--out`` recorded hidden_size 64."""
    reads = MODEL_SETTINGS.get(model)
    if reads is None:
        return
    for key in overrides or {}:
        if key not in reads:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in MODEL_KEYS if k in reads)
            raise ConfigError(f"--{key.replace('_', '-')}: not a setting of --model {model} "
                              + (f"(it reads {flags})" if flags else "(the closed-form map trains nothing)"))


def default_model_config(model: str, dataset: str) -> ModelConfig:
    """The benchmark's defaults: PatchTST's official ETT settings (``scripts/PatchTST/ett*.sh``)."""
    if model == "patchtst":
        if dataset.startswith("ETTh"):
            return ModelConfig(type="patchtst", hidden_size=16, num_heads=4, num_layers=3, intermediate_size=128, dropout=0.3)
        return ModelConfig(type="patchtst", hidden_size=128, num_heads=16, num_layers=3, intermediate_size=256, dropout=0.2)
    return ModelConfig(type=model)


def format_table(results: list[dict[str, Any]]) -> str:
    """One line per dataset × horizon: ours, the linear map, and the published columns (MSE/MAE)."""
    head = ["dataset", "H", "ours (test)", "linear map", *PUBLISHED_COLUMNS, "ours/P64", "ours/linear", "seconds"]
    rows = [head]
    for r in results:
        # a horizon the papers did not publish (any --horizon runs) has a dash in their columns: a row short of
        # them stopped the command at this table, after every cell had run
        pub = PUBLISHED.get((r["dataset"], r["horizon"]))
        ours, lin = r["ours"]["test"], r["linear_map"]["test"]
        rows.append([
            r["dataset"], str(r["horizon"]), f"{ours['mse']:.3f}/{ours['mae']:.3f}", f"{lin['mse']:.3f}/{lin['mae']:.3f}",
            *([f"{m:.3f}/{a:.3f}" for m, a in pub] if pub else ["—"] * len(PUBLISHED_COLUMNS)),
            f"{ours['mse'] / pub[0][0]:.3f}" if pub else "—", f"{ours['mse'] / lin['mse']:.3f}",
            f"{r.get('total_seconds', r['linear_map']['fit_seconds']):.0f}",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("ours:")
    lines += [f"  {r['dataset']} H={r['horizon']}: {r['ours']['name']}" for r in results]
    lines.append("windows: ours and the linear map score every test window; PatchTST's and DLinear's published figures "
                 f"dropped their test loader's last partial batch (batches of {PATCHTST_TEST_BATCH}; DLinear's of 32, 8 on "
                 "ETTm1); iTransformer's kept every window. Ours on PatchTST's windows:")
    for r in results:
        if (p := r["ours"].get("test_patchtst_windows")) is None:  # results written before it was recorded
            continue
        lines.append(f"  {r['dataset']} H={r['horizon']}: " + (
            f"{p['mse']:.3f}/{p['mae']:.3f} on the first {p['windows']} of {r['windows']['test']} windows" if p["windows"]
            else f"— (its loader kept none of {r['windows']['test']} windows, fewer than a batch)"))
    lines.append("seconds: wall time of the cell (fits, training and evaluation)")
    return "\n".join(lines)


def check_output_files(files: dict[str, str | Path | None], data_dir: str | Path) -> None:
    """A ConfigError naming the flag when an output file of ``files`` (flag → path, None: not given) is a
    folder, is another flag's file, is a dataset's CSV in ``data_dir``, or its folder cannot be made;
    made here when missing. Checked before
    the first cell: a file that cannot be written was an error (not naming the file, for
    ``--save-predictions``) once the cell had run, which takes hours for a trained model. ``-`` is refused:
    standard output carries the cells' progress and the table (a file named ``-`` was written)."""
    seen: dict[Path, str] = {}
    for flag, path in files.items():
        if not path:
            continue
        if str(path) == "-":
            raise ConfigError(f"{flag} -: standard output carries the progress and the table; give a file name")
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"{flag} {path}: a folder; give a file name")
        if p.resolve() in seen:
            raise ConfigError(f"{flag} {path}: also given as {seen[p.resolve()]}; give each its own file")
        seen[p.resolve()] = flag
        if p.resolve() in {(Path(data_dir) / f"{name}.csv").resolve() for name in DATASETS}:
            raise ConfigError(f"{flag} {path}: would overwrite the input data; choose a file outside --data")
        if not p.parent.is_dir():
            if p.parent.exists():
                raise ConfigError(f"{flag} {path}: {p.parent} is not a folder")
            with writing(p.parent):
                p.parent.mkdir(parents=True, exist_ok=True)


def run_suite(
    data_dir: str | Path,
    datasets: list[str],
    horizons: list[int],
    model: str = MODEL,
    seq_len: int = SEQ_LEN,
    model_overrides: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    settings: TrainSettings | None = None,
    ridge: float = RIDGE,
    ensemble: bool = True,
    linear_lookbacks: tuple[int, ...] = (),
    time_of_day: bool = True,
    out: str | Path | None = None,
    save_predictions: str | Path | None = None,
    run_dir: str | Path = RUN_DIR,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``hftraining bench ett``: :func:`run_ett` for every dataset × horizon. ``model_overrides``:
    ModelConfig keys set over :func:`default_model_config`; ``out``: the results as JSON, rewritten
    after every cell so a long run keeps what it finished."""
    # every cell's flags are checked before the first runs: a mistake is not found hours in
    settings = settings or TrainSettings()
    for flag, given in (("--dataset", list(datasets)), ("--horizon", list(horizons))):
        # a cell named twice ran twice (hours for a trained model, into the same run folder) and was two rows
        # of the table; with --save-predictions it was "one file holds one dataset × horizon, got 2"
        twice = next((v for i, v in enumerate(given) if v in given[:i]), None)
        if twice is not None:
            raise ConfigError(f"{flag}: {twice} given twice; name each once")
    if save_predictions and len(datasets) * len(horizons) > 1:
        raise ConfigError(f"--save-predictions: one file holds one dataset × horizon, got {len(datasets)} dataset(s) × "
                          f"{len(horizons)} horizon(s); run one cell per file")
    if not 0 <= ridge < math.inf:
        raise ConfigError(f"--ridge: must be >= 0 and finite, got {ridge}")
    if model != "linear":
        check_settings(settings)
    check_model_overrides(model, model_overrides)  # a flag the model does not read is not ignored
    cfgs = {}
    for ds in datasets:
        cfg = cfgs[ds] = default_model_config(model, ds)
        for key, value in (model_overrides or {}).items():
            setattr(cfg, key, value)
        for h in horizons:  # --seq-len itself first (0 named as the flag, not as data.sequence_length)
            check_cell(ds, h, seq_len, tuple(linear_lookbacks))
        if model != "linear":
            validate(Config(model=cfg, data=DataConfig(sequence_length=seq_len)))  # model.moving_avg > 0, within --seq-len
    check_output_files({"--out": out, "--save-predictions": save_predictions}, data_dir)  # it makes a missing folder
    values = read_datasets(data_dir, datasets)  # every file, before the first cell
    results = []
    with said_once(SOFTWARE_BF16_ETT):  # said once for all the cells
        for ds in datasets:
            cfg = cfgs[ds]
            for h in horizons:
                r = run_ett(data_dir, ds, h, model, seq_len, cfg, settings, model_kwargs, ridge, ensemble, log=log,
                            save_predictions=save_predictions, linear_lookbacks=tuple(linear_lookbacks),
                            time_of_day=time_of_day, run_dir=run_dir, values=values[ds])
                results.append(r)
                log(f"{ds} H={h}: ours ({r['ours']['name']}) test mse {r['ours']['test']['mse']:.4f} mae {r['ours']['test']['mae']:.4f}; "
                    f"linear map {r['linear_map']['test']['mse']:.4f}; {r.get('total_seconds', 0):.0f}s")
                if out:
                    write_json(out, {"machine": f"{torch.get_num_threads()} CPU threads", "results": results}, indent=1)
    return results
