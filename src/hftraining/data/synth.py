"""Synthetic OHLCV for scale tests: EGARCH(1,1) volatility clustering with leverage, Student-t
shocks, rare jumps, intrabar ranges and volume that rises with volatility. Seeded and vectorised
(10 million rows in a few seconds). Every bar satisfies low <= min(open, close) <= max(open, close) <= high
and volume >= 0, so the validator keeps every row.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from hftraining.core.config import time_zone
from hftraining.core.errors import DataError, WriteError, io_cause, is_io_error
from hftraining.core.files import fsync_dir, fsync_file, process_ended
from hftraining.data.io import is_data_file

DEFAULT_SESSION = "09:30-16:00"  # bars finer than a day: a US equity session ...
DEFAULT_TZ = "America/New_York"  # ... in its exchange's time zone
FORMATS = ("csv", "parquet", "parquet-dataset")
OWN_FILE = re.compile(r"SYN\d{3,}\.(csv|parquet)")  # the whole names of the files write_synth writes ...
OWN_FOLDER = re.compile(r"symbol=SYN\d{3,}")  # ... and of its partitions: nothing else in --out is ever removed
# EGARCH(1,1) on log variance: h_t = ω + β h_{t-1} + α (|z_{t-1}| - E|z|) + γ z_{t-1}
BETA, ALPHA, GAMMA = 0.97, 0.12, -0.06
DAILY_VOL = 0.02  # long-run volatility of one bar's log return
JUMP_PROB, JUMP_SCALE = 0.003, 0.05  # jumps stay far below the validator's default jump threshold
T_DOF = 5.0
MAX_MOVE = 0.3  # cap on one bar's |log return|, below the validator's default jump threshold
MEAN_REVERSION = 1 - 1e-4  # AR(1) coefficient of the log price
MAX_SYMBOLS = 100_000  # a file (or partition) each
MAX_ROWS = 50_000_000  # per symbol, generated whole in memory: about 180 bytes a row at the peak (9 GB)


def synth_ohlcv(rows: int, seed: int = 0, start: str = "2000-01-03", freq: str = "B", price: float = 100.0,
                session: str | None = None, tz: str | None = None) -> pd.DataFrame:
    """One symbol: ``rows`` bars → frame with timestamp (UTC), open, high, low, close, volume.
    ``session`` (bars finer than a day only): see :func:`bar_times`."""
    from scipy.signal import lfilter  # here: its import takes about a second, which only synthesis needs

    times = bar_times(rows, freq, start, session, tz)
    rng = np.random.default_rng(seed)
    z = rng.standard_t(T_DOF, rows) / np.sqrt(T_DOF / (T_DOF - 2))  # unit variance
    e_abs = np.sqrt(2 / np.pi)  # E|z| of a normal; close enough for Student-t(5) scaling here
    drive = np.empty(rows)
    drive[0] = 0.0
    drive[1:] = ALPHA * (np.abs(z[:-1]) - e_abs) + GAMMA * z[:-1]
    h = lfilter([1.0], [1.0, -BETA], drive)  # deviation of log variance from its mean, (rows,)
    sigma = DAILY_VOL * np.exp(0.5 * (h - h.var() / 2))
    jumps = (rng.random(rows) < JUMP_PROB) * rng.normal(0.0, JUMP_SCALE, rows)
    r = np.clip(sigma * z + jumps, -MAX_MOVE, MAX_MOVE)  # one bar's log return
    r[0] = 0.0
    # a weak pull of the log price towards its start keeps long series in a realistic price range
    close = price * np.exp(lfilter([1.0], [1.0, -MEAN_REVERSION], r))
    gap = sigma * 0.2 * rng.standard_normal(rows)
    open_ = np.empty(rows)
    open_[0] = close[0]
    open_[1:] = close[:-1] * np.exp(gap[1:])
    top, bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = top * np.exp(np.abs(rng.standard_normal(rows)) * sigma * 0.5)
    low = bottom * np.exp(-np.abs(rng.standard_normal(rows)) * sigma * 0.5)
    volume = np.round(1e6 * np.exp(0.4 * rng.standard_normal(rows)) * (sigma / DAILY_VOL) ** 1.5)
    return pd.DataFrame({"timestamp": times, "open": open_, "high": high, "low": low, "close": close, "volume": volume})


def _offset(freq: str) -> pd.Timedelta | None:
    """The fixed length of one bar of ``freq`` if it is shorter than a day, else None."""
    try:
        off = pd.tseries.frequencies.to_offset(freq)
        step = pd.Timedelta(off)
    except (ValueError, TypeError):  # calendar frequencies (B, W, M) have no fixed length
        return None
    return step if step < pd.Timedelta("1D") else None


def _session(session: str) -> tuple[pd.Timedelta, pd.Timedelta] | None:
    """``"09:30-16:00"`` → (open, close) as offsets from midnight; ``"24h"`` → None (no sessions)."""
    if session.lower() in ("24h", "24/7", "none"):
        return None
    try:
        a, b = session.split("-")
        open_, close = pd.Timedelta(f"{a.strip()}:00"), pd.Timedelta(f"{b.strip()}:00")
    except ValueError:
        raise DataError(f"synth: --session {session!r}: expected HH:MM-HH:MM (e.g. 09:30-16:00) or 24h") from None
    if not pd.Timedelta(0) <= open_ < close <= pd.Timedelta("1D"):
        raise DataError(f"synth: --session {session!r}: the session must open before it closes, within one day")
    return open_, close


def bar_times(rows: int, freq: str, start: str, session: str | None = None, tz: str | None = None) -> pd.DatetimeIndex:
    """``rows`` bar times (UTC). Bars of a day or longer: ``pd.date_range(start, freq=freq)``. Bars
    finer than a day trade in a session: ``session`` ``"HH:MM-HH:MM"`` in the timezone ``tz`` on business
    days (default 09:30-16:00 America/New_York: 390 one-minute bars a day, with overnight and weekend
    gaps; the UTC times follow daylight saving), or ``"24h"`` for bars around the clock. ``tz`` None:
    :data:`DEFAULT_TZ`; a ``tz`` given for bars without session hours (daily bars, ``"24h"``) is refused,
    as it would change nothing."""
    if rows < 1:
        raise DataError(f"synth: rows must be >= 1, got {rows}")
    if rows > MAX_ROWS:  # one symbol's rows are generated whole: beyond, its memory ran out in a traceback
        raise DataError(f"synth: rows must be at most {MAX_ROWS:,} per symbol (each is generated whole in memory), "
                        f"got {rows:,}")
    if tz is not None:
        time_zone(tz, "synth: --tz")  # a name not in the time zone database: one line naming it
    try:
        n = pd.tseries.frequencies.to_offset(freq).n
    except (ValueError, TypeError):
        raise DataError(f"synth: --freq {freq!r} is not a pandas frequency (e.g. 1min, 5min, 1h, B, D)") from None
    if n <= 0:  # 0D divided by zero, -1min gave bars of mismatched lengths: tracebacks
        raise DataError(f"synth: --freq {freq!r}: must be a positive frequency (e.g. 1min, 5min, 1h, B, D)")
    step = _offset(freq)
    if step is None and session is not None:
        raise DataError(f"synth: --session applies to bars shorter than a day, not --freq {freq}")
    if step is None and tz is not None:
        raise DataError(f"synth: --tz applies to the session of bars shorter than a day, not --freq {freq}")
    hours = _session(session or DEFAULT_SESSION) if step is not None else None
    if hours is None and tz is not None:
        raise DataError(f"synth: --tz applies to a session's hours, not --session {session}")
    tz = tz or DEFAULT_TZ
    try:
        if hours is None:
            return pd.date_range(start, periods=rows, freq=freq, tz="UTC").astype("datetime64[ns, UTC]")
        open_, close = hours
        per_day = int((close - open_) // step)
        if per_day < 1:
            raise DataError(f"synth: --session {session or DEFAULT_SESSION} holds no bar of --freq {freq}")
        # in ns (past 2262: OutOfBoundsDatetime); pandas keeps these days in microseconds, whose sum with the bars'
        # ns wrapped around in numpy without a word (a million 30min bars ended in 1710, written with exit code 0)
        days = pd.bdate_range(start, periods=-(-rows // per_day)).as_unit("ns")
        # the last bar written (the last day's later bars are cut off): a session whose close would pass the limit
        # on that day, with rows ending before it, fits
        if int(days.asi8[-1]) + open_.value + step.value * ((rows - 1) % per_day) > pd.Timestamp.max.value:
            raise OverflowError("the last bar is after 2262-04-11, the last time a nanosecond timestamp holds")
        bars = pd.to_timedelta(open_.value + step.value * np.arange(per_day), unit="ns").to_numpy()
        local = (days.values[:, None] + bars[None, :]).ravel()[:rows]
        out = pd.DatetimeIndex(local).tz_localize(tz).tz_convert("UTC").astype("datetime64[ns, UTC]")
        if len(out) > 1 and not (np.diff(out.asi8) > 0).all():  # bars follow each other, whatever the zone did
            raise OverflowError("the bar times do not increase")
        return out
    except (ValueError, OverflowError) as e:  # e.g. 10 million business days run past the year 2262
        msg = str(e).splitlines()[0]
        finer = "" if step is not None and step <= pd.Timedelta("1min") else " such as 1min"
        raise DataError(f"synth: {rows:,} rows at frequency {freq!r} do not fit ({msg}); use a finer --freq{finer} "
                        "or fewer --rows") from None


def _symbols(symbols: int, seed: int):
    """(name, seed, start price) of each synthetic symbol."""
    if symbols < 1:
        raise DataError(f"synth: symbols must be >= 1, got {symbols}")
    if symbols > MAX_SYMBOLS:  # 99999999999 was a MemoryError traceback (their start prices), else a disk filled with files
        raise DataError(f"synth: symbols must be at most {MAX_SYMBOLS:,} (a file each), got {symbols:,}")
    prices = np.random.default_rng(seed).uniform(5, 500, symbols)
    return [(f"SYN{i:03d}", seed * 100_003 + i, float(prices[i])) for i in range(symbols)]


def synth_frames(symbols: int, rows: int, seed: int = 0, freq: str = "B", session: str | None = None,
                 tz: str | None = None) -> dict[str, pd.DataFrame]:
    """``symbols`` independent series named SYN000, SYN001, ... (each with its own seed and start price)."""
    return {name: synth_ohlcv(rows, seed=s, freq=freq, price=price, session=session, tz=tz)
            for name, s, price in _symbols(symbols, seed)}


def write_synth(out_dir: str | Path, symbols: int, rows: int, seed: int = 0, freq: str = "B", fmt: str = "csv",
                session: str | None = None, tz: str | None = None) -> list[Path]:
    """Write the series of :func:`synth_frames` into ``out_dir``, one symbol at a time (memory: one
    symbol): a file per symbol (``csv``, ``parquet``) or a hive-partitioned Parquet dataset
    (``parquet-dataset``: ``symbol=SYN000/part-0.parquet``) → the paths written. The set is written whole
    or not at all: every file goes into a hidden folder inside ``out_dir`` first, and only once all are
    written (a full disk, a failure or Ctrl-C before: the earlier folder as it was, nothing new in it) do
    they replace the files of an earlier synth there. Such an earlier set is replaced whole: its files
    that the new one does not write (more symbols, another format) are removed, as a later train would
    read them with the new ones; the disk holds both sets until the new one is written. A folder holding
    data files other than synth's is refused: reading it later would mix them with the synthetic ones;
    its files that are no data (notes.txt) are left as they are. Only entries named as synth names them
    (``SYN000.csv``, ``SYN000.parquet``, ``symbol=SYN000/``) are ever replaced or removed (``SYN000.csv.gz``,
    ``SYN000.old.csv`` are refused). One synth at a time writes into a folder (a second is a DataError),
    and an earlier set that a killed synth had moved aside is put back before anything else."""
    if fmt not in FORMATS:
        raise DataError(f"synth: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    specs = _symbols(symbols, seed)
    bar_times(rows, freq, "2000-01-03", session, tz)  # fail before writing anything
    out = Path(out_dir)
    if out.is_dir():  # SYN000.csv.gz, SYN000.old.csv, SYN000.CSV: read by train, but never written (nor removed) here
        other = sorted(p.name for p in out.iterdir() if not _own(p)
                       and ((p.is_file() and is_data_file(p)) or (p.is_dir() and p.name.startswith("symbol="))))
        if other:
            raise DataError(f"{out}: holds data files other than synth's ({other[0]}{', ...' if len(other) > 1 else ''}), "
                            "which a later train on it would read with the synthetic ones; choose a new or empty --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: cannot create folder ({e.strerror})") from None
    with _synth_lock(out) as locked:
        _recover(out, locked)
        return _write_set(out, fmt, specs, rows, freq, session, tz)


def _write_set(out: Path, fmt: str, specs, rows: int, freq: str, session: str | None, tz: str | None) -> list[Path]:
    """Write the set into a hidden folder of ``out``, then put it in place of an earlier one (:func:`write_synth`)."""
    stage, aside = out / f"{STAGE}{os.getpid()}", out / f"{ASIDE}{os.getpid()}"
    names = []  # the entries of out_dir the new set is made of (a file, or a symbol= folder)
    done = False
    try:
        _io(out, stage.mkdir)
        for name, s, price in specs:
            try:
                frame = synth_ohlcv(rows, seed=s, freq=freq, price=price, session=session, tz=tz)
            except MemoryError:  # under MAX_ROWS, but more than this machine has free
                raise DataError(f"synth: {rows:,} rows of one symbol do not fit in memory (about {rows * 180 / 1e9:.1f} "
                                "GB at the peak); use fewer --rows") from None
            if fmt == "csv":
                rel = Path(f"{name}.csv")
                ts = frame["timestamp"]
                whole = bool((ts.dt.microsecond == 0).all() and (ts.dt.nanosecond == 0).all())  # else sub-second bars
                frame = frame.assign(timestamp=ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ" if whole else "%Y-%m-%dT%H:%M:%S.%fZ"))
                write = partial(frame.to_csv, index=False, float_format="%.6f")
            elif fmt == "parquet":
                rel = Path(f"{name}.parquet")
                write = partial(frame.to_parquet, index=False)
            else:
                rel = Path(f"symbol={name}") / "part-0.parquet"
                _io(out / rel, (stage / rel.parent).mkdir)
                write = partial(frame.to_parquet, index=False, row_group_size=1_000_000)
            _io(out / rel, lambda: (write(stage / rel), fsync_file(stage / rel)))
            names.append(rel.parts[0])
        for folder in [*(stage / n for n in names if (stage / n).is_dir()), stage]:
            _io(out, partial(fsync_dir, folder))
        _put_in_place(out, stage, aside, names)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        # an earlier set that could not all be put back stays hidden in aside: the next synth into out puts it back
        if aside.is_dir() and (done or not [e for e in aside.iterdir() if e.name != PLACING]):
            shutil.rmtree(aside, ignore_errors=True)
    return [out / n / "part-0.parquet" if fmt == "parquet-dataset" else out / n for n in names]


STAGE, ASIDE = ".synth-tmp-", ".synth-old-"  # hidden folders inside --out: the new set, and the earlier one set aside
PLACING = ".placing"  # in ASIDE: the earlier set is aside whole, and the new one is being put in its place
log = logging.getLogger("hftraining")


def _own(p: Path) -> bool:
    """Whether the entry ``p`` of --out is named as write_synth names what it writes (``SYN000.csv``,
    ``SYN000.parquet``, ``symbol=SYN000/``): only such entries are replaced or removed."""
    return bool(OWN_FILE.fullmatch(p.name) and not p.is_dir() or OWN_FOLDER.fullmatch(p.name) and p.is_dir())


@contextlib.contextmanager
def _synth_lock(out: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the folder ``out`` while a synth writes into it → whether it is held. Two
    synths into one folder at once each moved the other's files aside and both exited 0, the folder holding a
    mix of both sets; the second one is now a one-line error naming the folder. The lock ends with the
    process, even a killed one, so a hidden folder found under it is a finished synth's (whatever its PID)."""
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise WriteError(f"{out}: cannot write ({io_cause(e)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise DataError(f"{out}: another hftraining process (a data synth) holds this folder now; "
                                "wait for it to end, or give another --out") from None
            log.warning("warning: %s: the folder cannot be locked (%s); a second data synth into it at the same time "
                        "would not be refused", out, os.strerror(e.errno))
            locked = False
        yield locked
    finally:
        os.close(fd)


def _recover(out: Path, locked: bool) -> None:
    """Undo what a synth that was killed left in ``out``: its hidden new set is removed, and an earlier set it had
    moved aside is put back (it was removed with it, leaving ``out`` without data). ``locked``: no other synth
    writes into ``out`` now; else only the folders of processes that no longer run are touched."""
    for left in sorted(out.glob(f"{ASIDE}*")):
        if left.name[len(ASIDE):].isdigit() and (locked or _of_dead_process(left)):
            _put_back(out, left)
    for left in out.glob(f"{STAGE}*"):
        if left.name[len(STAGE):].isdigit() and (locked or _of_dead_process(left)):
            shutil.rmtree(left, ignore_errors=True)


def _put_back(out: Path, aside: Path) -> None:
    """Put the earlier set in ``aside`` back into ``out``. Killed while the new set was put in place (``PLACING``):
    the set entries in ``out`` are the new set's first ones and are removed first."""
    if (aside / PLACING).exists():
        for n in _earlier(out):
            p = out / n
            _io(p, p.unlink if p.is_symlink() or not p.is_dir() else partial(shutil.rmtree, p))
        _io(out, partial(os.unlink, aside / PLACING))
    for p in sorted(aside.iterdir()):
        _io(out / p.name, partial(os.rename, p, out / p.name))
    _io(out, partial(fsync_dir, out))
    _io(out, aside.rmdir)


def _io(name: Path, act: Callable[[], object]) -> None:
    """``act()``; an I/O failure (a full disk, a folder made read-only) is a one-line WriteError naming ``name``,
    the file of --out it is for, not the hidden folder it is written in first."""
    try:
        act()
    except Exception as e:
        if not is_io_error(e):
            raise
        raise WriteError(f"{name}: cannot write ({io_cause(e)})") from None


def _earlier(out: Path) -> list[str]:
    """The entries of an earlier synth in ``out``: its SYN files (a link to nothing too: a reader refuses it) and
    symbol=SYN folders, by the whole names write_synth gives them (:func:`_own`)."""
    return sorted(p.name for p in out.iterdir() if _own(p))


def _put_in_place(out: Path, stage: Path, aside: Path, names: list[str]) -> None:
    """Rename the earlier set of ``out`` into ``aside``, then the new one (``names``, written whole in ``stage``)
    into ``out``: renames inside one folder, which need no space. A failure (or Ctrl-C) on the way puts the
    earlier set back."""
    moved, placed = [], []
    try:
        _io(out, aside.mkdir)
        for n in _earlier(out):
            _io(out / n, partial(os.rename, out / n, aside / n))
            moved.append(n)
        for folder in (aside, out):
            _io(out, partial(fsync_dir, folder))
        _io(out, lambda: (aside / PLACING).touch())  # from here a killed synth's earlier set is put back by the next
        _io(out, partial(fsync_dir, aside))
        for n in names:
            _io(out / n, partial(os.rename, stage / n, out / n))
            placed.append(n)
        _io(out, partial(fsync_dir, out))
    except BaseException:
        with contextlib.suppress(OSError):  # what is not put back stays in aside, for the next synth to put back
            for n in reversed(placed):
                os.rename(out / n, stage / n)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside / PLACING)
            for n in reversed(moved):
                os.rename(aside / n, out / n)
        raise


def _of_dead_process(path: Path) -> bool:
    """Whether the hidden folder ``path`` (``.synth-tmp-PID``) is of a synth that no longer runs (not one writing
    into the same folder now)."""
    pid = path.name.rsplit("-", 1)[-1]
    # this process's own was left by an earlier call that failed to remove it
    return process_ended(pid) or pid == str(os.getpid())
