"""Inference API: a model folder → forecasts for new data, with exactly the preprocessing the
model was trained with.

``Forecaster.from_pretrained(dir)`` loads a single model folder (``config.json`` +
``model.safetensors`` + ``preprocessing.json``), a run folder (its ``final/``) or an ensemble
folder (``ensemble.json``, see :mod:`hftraining.inference.ensemble`); all three predict alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from hftraining.core.config import DataConfig
from hftraining.core.errors import ConfigError, DataError
from hftraining.data import io
from hftraining.data.labels import cross_sections
from hftraining.data.features import SETTLE_MEASURABLE, SETTLE_TOLERANCE, panel_specs, settle_unknown, unsettled_specs
from hftraining.data.pipeline import Preprocessing, apply, latest_windows
from hftraining.data.pipeline import log as pipeline_log
from hftraining.data.rows import RowsNeeded
from hftraining.data.sources import load_and_validate, zoneless_stamps
from hftraining.data.validate import (MAX_ROWS_LISTED, VALUE_RULES, jump_rows, stamp_phases, stamp_runs,
                                      validate_frame)
from hftraining.data.windows import WindowSet
from hftraining.inference.ensemble import load_ensemble, member_precision
from hftraining.inference.folders import check_training_data, is_ensemble, resolve_model_dir
from hftraining.models import ForecastModel, load_preprocessing
from hftraining.models.folder import INTERVALS_FILE, read_calibration
from hftraining.models.intervals import Calibration
from hftraining.models.outputs import CLASS_NAMES
from hftraining.models.predict import PRECISIONS, cpu_has_bf16, predict_outputs, usable_device

log = logging.getLogger(__name__)


DATA_KINDS = ("a file, folder or glob of OHLCV rows (or a list of them), a DataFrame with a 'symbol' column, "
              "or {symbol: DataFrame}")


def _check_data(data) -> None:
    """``data`` of :meth:`Forecaster.load` is one of :data:`DATA_KINDS`: a DataError naming what it is
    otherwise. None above all: as a data_dir it means the bundled sample, whose tickers would be
    forecast instead of the user's (the training data, read again, are :meth:`Forecaster.windows`'s)."""
    if isinstance(data, (str, os.PathLike, pd.DataFrame, dict)):
        return
    if data is None:
        raise DataError(f"data: None; give {DATA_KINDS}")
    if not isinstance(data, (list, tuple)):
        raise DataError(f"data: a {type(data).__name__} cannot be read; give {DATA_KINDS}")
    if not data:
        raise DataError(f"data: an empty list; give {DATA_KINDS}")
    for i, item in enumerate(data):
        if not isinstance(item, (str, os.PathLike)):
            raise DataError(f"data: item {i} of the list is a {type(item).__name__}, not a path; a list holds files, "
                            "folders or globs (pass frames as {symbol: DataFrame})")


def _one_symbol(table: pd.DataFrame, sym: str) -> None:
    """The frame given as ``{sym: frame}`` (its columns matched, ``table``) holds rows of ``sym`` alone: a
    ``symbol`` column naming others (the long frame of several symbols, or another symbol's rows under this
    key) is a DataError naming them. Its rows were read as ``sym``'s whatever the column said: another
    symbol's prices forecast under this name, or several symbols' rows as one, a timestamp's rows beyond
    the first dropped as duplicates. A file's ``symbol`` column names its symbols (so would the frame given
    as it is); the column equal to the key (``dict(tuple(df.groupby("symbol")))``) reads as before. Numeric
    codes read with a blank cell among them are floats: 7203.0 names the key 7203 (``{"7203": frame}``)."""
    if "symbol" not in table.columns:
        return
    col = table["symbol"]
    if pd.api.types.is_float_dtype(col.dtype):
        codes = col.dropna()
        if bool(((codes % 1 == 0) & (codes.abs() < 2.0**53)).all()):  # whole numbers: written as integers
            col = col.astype("Int64")
    names = col.astype("string").str.strip().dropna()
    others = sorted(set(names[names != ""]) - {sym, sym.strip()})
    if others:
        listed = ", ".join(others[:3]) + (f", ... ({len(others)} in all)" if len(others) > 3 else "")
        raise DataError(f"{sym}: the frame's 'symbol' column names {listed}, not {sym}: pass a frame of several "
                        "symbols as it is (not in a dict: a forecast for each symbol of its column), or only "
                        f"{sym}'s rows under {sym}")


def iso_as_of(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` of :meth:`Forecaster.predict` with ``as_of`` as ISO 8601 text with its zone
    (``2024-01-02T00:00:00+00:00``): one form for every text a forecast is written to (the server's JSON,
    ``predict``'s CSV, where pandas would write ``2024-01-02 00:00:00+00:00``), so a client parses either alike.
    Every stamp has the digits of a second the finest one needs, as pandas writes a column: a symbol's
    ``…T23:00:00+00:00`` beside another's ``…T23:00:00.250000+00:00`` would make ``pd.read_csv(...,
    parse_dates=["as_of"])``, which reads every row in the first one's format, leave the column as text."""
    stamps = list(table["as_of"])
    spec = ("nanoseconds" if any(t.nanosecond for t in stamps) else
            "microseconds" if any(t.microsecond % 1000 for t in stamps) else
            "milliseconds" if any(t.microsecond for t in stamps) else "seconds")
    return table.assign(as_of=table["as_of"].map(lambda t: t.isoformat(timespec=spec)))


def _has_layers(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or a member of an ensemble) is a network trained by gradient steps, whose forward
    a software bf16 slows down; ridge, LightGBM and the naive models are not, as training does not warn of
    them either."""
    return any(getattr(m, "needs_training", True) for m in (getattr(model, "members", None) or [model]))


def bound_columns(level: float) -> tuple[str, str]:
    """The forecast columns of the interval at ``level``: ``lower_90``, ``upper_90``."""
    return f"lower_{level * 100:g}", f"upper_{level * 100:g}"


class _Keeper(logging.Filter):
    """A logger's one filter for :func:`_kept`, installed once and never removed: the list each thread
    gathers into is this thread's own. A filter of each forecast added to the logger and removed as it
    ends changed the logger's list of filters while another thread's record was going through it, and
    that record then skipped the next filter: its forecast's own, so the warning went to the log and
    not into its answer."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        into = getattr(self.local, "into", None)
        if into is None or record.levelno < logging.WARNING:
            return True
        into.append(record.getMessage().removeprefix("warning: "))
        return False


_keepers: dict[str, _Keeper] = {}
_keepers_lock = threading.Lock()


@contextlib.contextmanager
def _kept(into: list[str] | None, logger: logging.Logger):
    """The warnings ``logger`` logs on this thread while inside go to ``into`` instead (None: logged as
    ever). The data layer logs what it notices as it builds a forecast's windows; a caller that gathers
    a forecast's warnings (the server's answer, whose log the client never reads) must see them too.
    Other threads' records (the server's concurrent predictions) pass through untouched."""
    if into is None:
        yield
        return
    with _keepers_lock:
        keeper = _keepers.setdefault(logger.name, _Keeper())
        if keeper not in logger.filters:  # once per logger (again if its filters were cleared)
            logger.addFilter(keeper)
    before, keeper.local.into = getattr(keeper.local, "into", None), into
    try:
        yield
    finally:
        keeper.local.into = before


class Forecaster:
    """``Forecaster.from_pretrained(dir).predict(data)`` → one row per symbol × horizon step."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing, model_dir: Path | None = None,
                 device: torch.device | str = "cpu", precision: str = "fp32"):
        if precision not in PRECISIONS:  # said as the model loads, not as a traceback at its first forecast
            raise ConfigError(f"precision={precision!r}: not one of {', '.join(PRECISIONS)}")
        self.device = usable_device(device, "device")
        self.model = model.to(self.device).eval()
        self.preprocessing = preprocessing
        self.model_dir = model_dir
        self.precision = precision
        self.batch_size = preprocessing.data_config().eval_batch_size  # data.eval_batch_size of training
        self.calibration: Calibration | None = None  # the conformal intervals (``intervals.json``), if any
        if model_dir is not None:
            self.calibration = read_calibration(model_dir, preprocessing.horizon, self.quantile_levels)
        if (model_dir is not None and precision == "bf16" and self.device.type == "cpu" and cpu_has_bf16() is False
                and _has_layers(model)):
            # said once, as the folder loads (predict, serve, evaluate, backtest; not again for an ensemble's
            # members scored alone): the forecasts stay those eval.json scored in bf16. The fp32 option is the
            # Python API's alone, and not the run's precision that evaluate and backtest score
            log.warning("precision bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): torch computes the "
                        "forecasts in software, several times slower than fp32; they stay in bf16, the run's precision "
                        "that evaluation scores (a Python caller may load the folder with "
                        "Forecaster.from_pretrained(..., precision='fp32'): faster, within bf16 rounding of them)")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu", precision: str | None = None) -> "Forecaster":
        """Load a run, model or ensemble folder; forecasts run on ``device`` under ``precision``
        (``fp32``, ``bf16``, ``fp16``; default: the run's training precision, see
        :func:`~hftraining.inference.folders.run_precision`; an ensemble's: its members' runs', recorded
        in its ensemble.json; a member folder of an ensemble: the one that ensemble recorded and forecast it in,
        :func:`~hftraining.inference.ensemble.member_precision`) through the same batched forward as evaluation."""
        d = resolve_model_dir(path)
        if is_ensemble(d):
            model, pre = load_ensemble(d)
            return cls(model, pre, d, device, precision or model.precision)
        return cls(ForecastModel.from_pretrained(d), Preprocessing.from_dict(load_preprocessing(d)), d, device,
                   precision or member_precision(Path(path)))

    # ------------------------------------------------------------------ description
    @property
    def quantile_levels(self) -> list[float]:
        """Levels of the quantile head (empty without one)."""
        return list(getattr(self.model, "quantile_levels", None) or getattr(getattr(self.model, "cfg", None), "quantiles", []) or [])

    @property
    def has_classes(self) -> bool:
        m = self.model
        return bool(getattr(m, "has_classes", False) or getattr(getattr(m, "cfg", None), "classification_threshold", 0) > 0)

    def data_config(self, data_dir: Any = None, strict: bool = False) -> DataConfig:
        """The data section the model was trained with (its validation rules), reading ``data_dir``:
        every symbol and every date of it (the training's ``data.start_date``/``end_date`` chose its
        training data, not the data it forecasts from: a file given rows after them is forecast from
        its latest rows, as frames are). ``strict``: a row that training would drop for an invalid
        value or a duplicate timestamp is an error instead (the server answers it with a 4xx rather
        than forecasting without the row)."""
        d = dataclasses.replace(self.preprocessing.data_config(), data_dir=data_dir, symbols=None,
                                start_date=None, end_date=None)
        if strict:
            d = dataclasses.replace(d, invalid_values="error", duplicate_timestamps="error")
        return d

    def min_rows(self) -> int:
        """Validated rows a symbol needs for a forecast (:meth:`hftraining.data.rows.RowsNeeded.of`)."""
        return RowsNeeded.of(self.preprocessing.data_config(), targets=False).rows

    def settled_rows(self) -> int | None:
        """Validated rows a symbol needs for a forecast within the features' tolerance of the one from
        its full history (:meth:`hftraining.data.rows.RowsNeeded.settled`); from fewer (at least
        :meth:`min_rows`) recursive indicators such as RSI and MACD have not settled. None (unknown)
        when a feature does not settle within the rows that can be measured
        (:func:`~hftraining.data.features.settle_unknown`, e.g. ``rsi_1700``): then every forecast
        depends on the whole history it is given, and :meth:`unsettled` warns for every symbol."""
        need = RowsNeeded.settled(self.preprocessing.data_config())
        return None if need is None else need.rows

    def unsettled(self, frames: dict[str, pd.DataFrame]) -> list[str]:
        """One warning for each symbol of ``frames`` (validated) with fewer than :meth:`settled_rows`
        rows; when that is unknown (None), one for every symbol, naming the features that never settle."""
        d = self.preprocessing.data_config()
        need = self.settled_rows()
        if need is None:
            return self._never_settled(d, frames)
        out = []
        for sym, frame in frames.items():
            if len(frame) < need:
                specs = unsettled_specs(d.features, len(frame) - d.sequence_length)
                out.append(f"{sym}: {len(frame)} rows < {need} settled rows: the features {', '.join(specs)} have not "
                           f"settled (to within {SETTLE_TOLERANCE:g} of their standard deviation); forecasts may "
                           f"differ from full-history ones; send at least {need} rows")
        return out

    @staticmethod
    def _never_settled(d: DataConfig, frames: dict[str, pd.DataFrame]) -> list[str]:
        """:meth:`unsettled` of a model whose settled rows are unknown: a line for every symbol."""
        unknown = settle_unknown(d.features)
        rest = dataclasses.replace(d, features=[s for s in d.features if s not in unknown])
        out = []
        for sym, frame in frames.items():
            line = (f"{sym}: the features {', '.join(unknown)} do not settle within {SETTLE_MEASURABLE} rows (the "
                    f"model's settled_rows is unknown): the forecast depends on the whole history sent "
                    f"({len(frame)} rows) and may differ from one from a longer history")
            late = unsettled_specs(rest.features, len(frame) - d.sequence_length)
            if late:
                line += (f"; the features {', '.join(late)} have not settled either (to within {SETTLE_TOLERANCE:g} "
                         f"of their standard deviation; they need {RowsNeeded.settled(rest).rows} rows)")
            out.append(line)
        return out

    # ------------------------------------------------------------------ input
    def load(self, data, strict: bool = False) -> dict[str, pd.DataFrame]:
        """Validate ``data`` with the training rules → {symbol: normalised frame}.

        ``data``: a file, folder or glob (or a list of them); a DataFrame with a ``symbol`` column, or
        with two levels of columns, prices and tickers, as ``yfinance.download`` gives them (a symbol
        per ticker, :func:`~hftraining.data.io.ticker_frames`); or {symbol: DataFrame} (a frame of one
        ticker's two column levels too). Columns are matched as the readers match them
        (case-insensitive, aliases); a missing ``timestamp``/``close``/``volume`` column is a DataError
        naming it, and so are two columns of one name and stamps with and without a zone in one column.
        """
        return self.load_with_reports(data, strict)[0]

    def load_with_reports(self, data, strict: bool = False) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
        """:meth:`load` and the validation report of each file (or symbol's frame) read: which rows
        the training rules dropped, repaired or flagged (:mod:`hftraining.data.validate`)."""
        frames, reports, _, _ = self._read(data, strict)
        return frames, reports

    def _read(self, data, strict: bool) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]], list[str], bool]:
        """:meth:`load_with_reports`, the warnings on how the stamps read (intraday stamps without a zone
        under a ``data.timezone`` other than UTC, read as UTC: :func:`~hftraining.data.sources.zoneless_stamps`;
        daily files that stamp a day at different times: ``mixed_stamps``) and on a folder's files not read
        (:func:`~hftraining.data.sources.unread_files`), and whether those were logged already (the files'
        are, as the reader logs them for training; the frames' are not)."""
        _check_data(data)
        wide = io.ticker_frames(data, "frame") if isinstance(data, pd.DataFrame) else None
        if wide is not None:  # yfinance.download's frame: a level of prices and one of tickers, a frame each
            data = {sym: frame for sym, (frame, _) in wide.items()}
            positions = {sym: rows for sym, (_, rows) in wide.items()}
        elif isinstance(data, pd.DataFrame):
            # a DatetimeIndex (or an index level named like a column) is a column, as in a Parquet file
            table = io.canonical_columns(io.parquet_frame(data), Path("<frame>"))
            if "symbol" not in table.columns:
                raise DataError("frame: a 'symbol' column is needed to predict from a DataFrame (or pass {symbol: frame})")
            # integer codes read as floats (7203.0) named as the model's symbols name them
            data = io.split_symbols(table.reset_index(drop=True), Path("<frame>"), self.preprocessing.source_rows)
            if "" in data:
                raise DataError("frame: column 'symbol' is empty in some rows")
            # a row is named by its position in the frame given, not among its symbol's rows
            positions = {sym: rows.index.to_numpy(np.int64) for sym, rows in data.items()}
        else:
            positions = {}
        if isinstance(data, dict):
            d = self.data_config(strict=strict)
            out, reports, stamps = {}, [], {}
            for sym, frame in data.items():
                if not isinstance(frame, pd.DataFrame):
                    raise DataError(f"{sym}: expected a DataFrame of OHLCV rows, got {type(frame).__name__}")
                line = positions.get(sym)
                if (tickers := io.ticker_frames(frame, str(sym))) is not None:  # yfinance.download("AEM")'s columns
                    if len(tickers) > 1:  # which of them is the symbol is not guessed
                        names = list(tickers)
                        level = next(n if n is not None else i for i, n in enumerate(frame.columns.names)
                                     if names[0] in set(map(str, frame.columns.get_level_values(i))))
                        raise DataError(f"{sym}: the frame holds the columns of {len(names)} tickers ({', '.join(names[:3])}"
                                        f"{', ...' if len(names) > 3 else ''}): pass it as it is, not in a dict (a forecast "
                                        f"for each ticker), or one ticker's columns, e.g. "
                                        f"frame.xs({names[0]!r}, axis=1, level={level!r})")
                    frame, line = next(iter(tickers.values()))
                table = io.canonical_columns(io.parquet_frame(frame), Path(f"<{sym}>"))
                if len(table) == 0:
                    raise DataError(f"{sym}: no rows")
                _one_symbol(table, str(sym))
                if "timestamp" in table.columns:  # stamps with and without a zone, as in a file: refused
                    io.one_zone_rule(table["timestamp"], str(sym), 0, "row", line)
                out[str(sym)], rep = validate_frame(table, d, str(sym), first_row=0, unit="row",  # row = 0-based position
                                                    line=line)
                reports.append({**rep.to_dict(), "row_numbers": "position"})  # 0-based, as its errors say
                if "timestamp" in table.columns and len(out[str(sym)]):  # intraday bars: their stamps' zone, as a file's
                    t = pd.DatetimeIndex(out[str(sym)]["timestamp"]).asi8
                    if not stamp_runs(t) and (phases := stamp_phases(t, io.zoneless(table["timestamp"]))):
                        stamps[str(sym)] = (str(sym), phases)
            local = zoneless_stamps(stamps, d.timezone)
            return out, reports, [] if local is None else [local["why"]], False
        frames, report = load_and_validate(self.data_config(data, strict))  # too short a symbol: see latest_windows
        # a folder's files left unread (XPO.csv.zip) too: a caller gathering the warnings misses no symbol unsaid
        lines = [report[k]["why"] for k in ("mixed_stamps", "zoneless_stamps", "unread_files") if k in report]
        return frames, report["files"], lines, True

    @staticmethod
    def dropped_rows(reports: list[dict[str, Any]], scored: bool = False) -> list[str]:
        """One warning for each file (or symbol's frame) of ``reports`` (:meth:`load_with_reports`) of
        which the training rules dropped rows (a NaN cell, a duplicate timestamp, a timestamp far
        beyond the others, ...): the forecast is made without them, so a dropped latest row means a
        forecast from an earlier row (its ``as_of``), and a dropped duplicate the other row's prices;
        and one for each file of which ``data.invalid_values=ffill`` filled cells from the row before
        (a latest close filled so is yesterday's price under today's date), and the report's line for
        each symbol whose filled rows were dropped instead (``ffill_fallback``). Each line names the file,
        the rules and their rows (lines of a CSV file, 1-based rows of a Parquet file, 0-based
        positions of a frame). ``scored``: the lines of an evaluation (``evaluate --data``: the rows
        are not scored, the windows cut from the rows kept) instead of a forecast's."""
        out = []
        for rep in reports:
            unit = {"line": "lines", "row": "rows"}.get(rep["row_numbers"], "positions")
            see = "" if unit == "positions" else "; `hftraining data check` lists every row"
            for kind, rules in (("dropped", rep["rules"]), ("repaired", {r: rep["rules"][r] for r in VALUE_RULES
                                                                         if r in rep["rules"]})):
                parts, total = Forecaster._rule_rows(rules, kind, unit)
                if not parts:
                    continue
                if kind == "dropped":
                    use = ("not scored: the windows are cut from the rows kept" if scored else
                           "not used: the forecast is from the rows kept (its as_of is the latest of them)")
                    out.append(f"{rep['file']}: {rep['rows_dropped']} row(s) dropped by the validation rules the model "
                               f"was trained with ({'; '.join(parts)}) and {use}{see}")
                else:
                    out.append(f"{rep['file']}: {total} row(s) with values filled from the row before "
                               f"(data.invalid_values=ffill, as the model was trained: {'; '.join(parts)}): the "
                               f"{'windows read' if scored else 'forecast reads'} the filled values{see}")
            # rows that ffill could not fill from a kept row, dropped instead: counted above under their value
            # rule, which does not say that the model's rules would have filled them
            out += list(rep.get("ffill_fallback", {}).values())
        return out

    def flagged_rows(self, reports: list[dict[str, Any]], frames: dict[str, pd.DataFrame],
                     reach: dict[str, tuple[int, int]] | None = None) -> list[str]:
        """One warning for each file (or symbol's frame) of ``reports`` with rows the training rules
        flagged and kept that the forecast reads: under ``data.jumps=flag`` (the default) a close more
        than ``data.jump_threshold`` in |log return| from the last kept close (an unadjusted split, a bad
        print) stays among the rows, and the forecast reads that return as it is when it lies among the
        latest :meth:`settled_rows` rows of its symbol in ``frames`` (the rows read, validated), the rows
        the forecast depends on (every row when that is unknown). A flagged row older than those changes
        no forecast: none is said for it. Training's data report lists such rows; a forecast has no
        report, so the line names the file, the rule and its rows (lines of a CSV file, 1-based rows of
        a Parquet file, 0-based positions of a frame) and, when only some of them are read, the dates of
        those.

        With ``reach`` ({symbol: (first, last) time in ns}: the last input row of a symbol's first scored
        window and the last target of its last), the rows scored windows read instead: from
        :meth:`settled_rows` before the first (their inputs and the history of their features; every
        earlier row when that is unknown) to the last (``evaluate --data``)."""
        d = self.preprocessing.data_config()
        settled = self.settled_rows()
        out = []
        for rep in reports:
            unit = {"line": "lines", "row": "rows"}.get(rep["row_numbers"], "positions")
            parts, total = self._rule_rows(rep["rules"], "flagged", unit)
            if not parts:
                continue
            read: list[str] = []  # "<symbol> <date>" of each flagged row read
            for sym in (list(rep.get("symbols") or {}) or [rep["file"]]):
                frame = frames.get(sym)
                if frame is None or not len(frame) or (reach is not None and sym not in reach):
                    continue
                if reach is None:  # the latest rows, which the forecast depends on
                    first, last = (0 if settled is None else max(0, len(frame) - settled)), len(frame)
                else:
                    t = pd.DatetimeIndex(frame["timestamp"]).asi8
                    first_end = int(np.searchsorted(t, reach[sym][0]))
                    first = 0 if settled is None else max(0, first_end - settled + 1)
                    last = int(np.searchsorted(t, reach[sym][1], side="right"))
                # the rows the rule flagged, by their place among the symbol's kept rows: the rule judged
                # these closes (no rule after it drops a row), so it flags the same ones again
                flags = jump_rows(frame["close"].to_numpy(np.float64), d.jump_threshold)
                read += [f"{sym} {pd.Timestamp(frame['timestamp'].iloc[i]).isoformat()}"
                         for i in first + np.flatnonzero(flags[first:last])]
            if not read:
                continue
            see = "" if unit == "positions" else "; `hftraining data check` lists every row"
            why = (f" (data.jumps={d.jumps}: a close more than data.jump_threshold={d.jump_threshold:g} in |log return| "
                   "from the last kept close, e.g. an unadjusted split or a bad print)"
                   if (rep["rules"].get("jump") or {}).get("flagged") else "")
            shown = ", ".join(read[:MAX_ROWS_LISTED]) + (", ..." if len(read) > MAX_ROWS_LISTED else "")
            if reach is None:
                use = ("and read by the forecast as they are" if len(read) >= total else
                       f"of which the forecast reads {len(read)} as they are, among the latest {settled} rows of a "
                       f"symbol that it depends on ({shown})")
            else:
                what = "their inputs, the features' history or their targets"
                use = (f"and read by the scored windows as they are ({what})" if len(read) >= total else
                       f"of which the scored windows read {len(read)} as they are ({what}: {shown})")
            out.append(f"{rep['file']}: {total} row(s) flagged by the validation rules the model was trained with "
                       f"({'; '.join(parts)}) {use}{why}{see}")
        return out

    @staticmethod
    def _rule_rows(rules: dict[str, dict[str, Any]], kind: str, unit: str) -> tuple[list[str], int]:
        """(one part per rule of ``rules`` that ``kind`` (dropped, repaired) rows: the rule and its rows
        in ``unit`` (lines, rows, positions), their count) for :meth:`dropped_rows` and :meth:`check_usable_rows`."""
        parts, total = [], 0
        for rule, e in rules.items():
            if not e[kind]:
                continue
            total += e[kind]
            if sum(bool(e[k]) for k in ("dropped", "repaired", "flagged")) > 1:  # its rows mix the kinds
                parts.append(f"{rule}: {e[kind]} row(s)")
                continue
            shown = e["rows"][:MAX_ROWS_LISTED]
            more = ", ..." if e[kind] > len(shown) else ""
            parts.append(f"{rule}: {unit if len(shown) > 1 or more else unit[:-1]} {', '.join(map(str, shown))}{more}")
        return parts, total

    def check_usable_rows(self, frames: dict[str, pd.DataFrame], reports: list[dict[str, Any]]) -> None:
        """A symbol's frame left with fewer than :meth:`min_rows` rows once validation dropped some is a
        DataError that says which rules dropped which of them (0-based positions of a frame; lines of a
        CSV file or upload, rows of a Parquet file, of one symbol): "0 usable rows" of a frame (a request)
        of 120 rows whose timestamps could not be read said nothing of the rows sent, nor "40 usable rows"
        of a file of 200. A file of several symbols numbers its dropped rows among all of theirs, which
        would not say which are this symbol's: it is named as before."""
        need = RowsNeeded.of(self.preprocessing.data_config(), targets=False)
        for sym, frame in frames.items():
            rep = next((r for r in reports if (r["file"] == sym and r["row_numbers"] == "position")
                        or (r["row_numbers"] != "position" and list(r.get("symbols") or {}) == [sym])), None)
            if len(frame) >= need.rows or rep is None or not rep["rows_dropped"]:
                continue
            unit = {"line": "lines", "row": "rows"}.get(rep["row_numbers"], "positions")
            parts, _ = self._rule_rows(rep["rules"], "dropped", unit)
            given = "given" if unit == "positions" else f"in {rep['file']}"
            raise DataError(f"{sym}: {len(frame)} usable rows of the {rep['rows_in']} {given}, the model needs "
                            f"{need.rows} ({need.why}): {rep['rows_dropped']} row(s) dropped by the validation rules the "
                            f"model was trained with ({'; '.join(parts)})")

    # ------------------------------------------------------------------ windows and forecasts
    def windows(self, data=None, split: str = "test", changes: list[str] | None = None) -> WindowSet:
        """Windows of ``split`` ("train", "val", "test" or "all") of ``data``; ``None``: the training data,
        read again (what differs from the rows training read is a warning, and added to ``changes`` when
        given). A walk-forward fold's model has its fold's test block only (:func:`~hftraining.data.pipeline.apply`)."""
        where = str(self.model_dir / "preprocessing.json") if self.model_dir is not None else "preprocessing.json"
        if data is None:
            self._check_training_data(where)
        return apply(self.preprocessing, None if data is None else self.load(data), split, where, changes)

    def _check_training_data(self, where: str) -> None:
        """The training data, read again from the recorded ``data.data_dir``, must be there: a relative path
        is read from the current folder, so from another one the error says where the path came from."""
        check_training_data(self.preprocessing.data_config().data_dir, where,
                            "run from the folder training ran in, or give the data (evaluate --data, "
                            "Forecaster.windows(data))")

    def outputs(self, ws: WindowSet) -> dict[str, np.ndarray]:
        """Every output of the model for the windows of ``ws`` in scaled target units
        (:func:`hftraining.models.predict.predict_outputs`, the batched forward of evaluation)."""
        # on a GPU, batches travel from pinned host memory without blocking (as in training)
        outs = predict_outputs(self.model, ws.on_device(self.device), self.batch_size, self.device, self.precision)
        bad = {k for k, v in outs.items() if not np.isfinite(v).all()}
        if bad:  # never handed back: a NaN forecast is a broken model folder, not a forecast
            raise DataError(f"{self.model_dir}: the model's {', '.join(sorted(bad))} are not finite numbers for "
                            f"{int(sum((~np.isfinite(outs[k])).any(axis=tuple(range(1, outs[k].ndim))).sum() for k in bad))} "
                            "window(s); its weights or preprocessing.json are broken")
        return outs

    def predict_windows(self, ws: WindowSet) -> np.ndarray:
        """(W, H) forecasts (in the label's units: log returns by default) for the windows of ``ws``."""
        return self.outputs(ws)["prediction"].astype(np.float64) * self.preprocessing.target_scale

    def latest_windows(self, frames: dict[str, pd.DataFrame], warnings: list[str] | None = None) -> WindowSet:
        """The most recent input window of each symbol; too short a history is a DataError naming it,
        and so is a window whose latest row no other symbol shares when the label is taken across
        symbols (:meth:`check_cross_section`). What the data layer warns of as it builds them (bars
        spaced unlike the training bars) is appended to ``warnings`` when given, else logged."""
        with _kept(warnings, pipeline_log):
            ws = latest_windows(self.preprocessing, frames)
        self.check_inputs(ws)
        self.check_cross_section(ws)
        return ws

    def check_inputs(self, ws: WindowSet) -> None:
        """Every value a window of ``ws`` feeds the model (its scaled features and past labels, in
        float32 as the model reads them) must be a finite number: a price or volume so extreme that a
        feature overflows float32 (finite in float64) would make the forecast NaN, which
        :meth:`outputs` then blames on the model folder. A DataError naming the symbol, the feature
        and the row's date instead."""
        if len(ws) == 0:
            return
        L = ws.seq_len
        rows = ws.ends.astype(np.int64)[:, None] - np.arange(L - 1, -1, -1)  # (W, L) rows each window reads
        read = rows >= ws.first_rows[:, None]  # earlier steps are padding, never read
        rows = np.where(read, rows, ws.first_rows[:, None])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            x = np.asarray(ws.features[rows], dtype=np.float32)  # (W, L, F)
            if ws.center is not None:
                x = (x - ws.center[ws.symbol_ids][:, None, :]) / ws.scale[ws.symbol_ids][:, None, :]
            y = np.asarray(ws.scaled_labels(rows), dtype=np.float32).reshape(len(ws), L, -1)
        bad = ~np.concatenate([np.isfinite(x), np.isfinite(y)], axis=2) & read[:, :, None]
        if not bad.any():
            return
        k, t, f = (int(i[0]) for i in np.nonzero(bad))
        names = [*self.preprocessing.feature_columns, "the past label"]
        when = pd.Timestamp(int(ws.row_times[rows[k, t]]), tz="UTC").isoformat()
        raise DataError(f"{ws.symbols[ws.symbol_ids[k]]}: {names[min(f, len(names) - 1)]} at {when} is beyond the range "
                        "of a float32 input once scaled (about ±3.4e38): the prices or volumes sent are too extreme to "
                        "forecast from")

    def check_cross_section(self, ws: WindowSet) -> None:
        """A model of a label taken across the symbols of each date (``data.target`` other than
        ``return``: excess_return, cs_zscore, cs_rank) reads the past labels of each window as an
        input; a date that only one symbol of ``data`` has gets label 0 instead of the one training
        saw. So the latest row of every window must have a row of another symbol at the same
        timestamp; a DataError naming the symbol and the date otherwise (never a silently different
        forecast)."""
        target = self.preprocessing.data_config().target
        if target == "return" or len(ws) == 0:
            return
        if len(ws.symbols) < 2:
            raise DataError(f"{ws.symbols[0]}: the model forecasts data.target={target}, a label taken across the "
                            "symbols of each date (an input of the model too): give the rows of the other symbols "
                            "of the same dates as well (a single symbol's labels are all 0)")
        alone = self._alone(ws)
        if len(alone):
            k = int(alone[0])
            when = pd.Timestamp(int(ws.times[k]), tz="UTC").isoformat()
            raise DataError(f"{ws.symbols[ws.symbol_ids[k]]}: no other symbol has a row at {when} {self._latest(ws, k)}; "
                            f"the model forecasts data.target={target}, a label taken across the symbols of each date "
                            "(an input of the model too): give the other symbols' rows up to that date as well")

    @staticmethod
    def _alone(ws: WindowSet) -> np.ndarray:
        """Indices of the windows of ``ws`` whose latest row no other symbol's row shares: its cross-section
        (:func:`~hftraining.data.labels.cross_sections`: a date and an instant at one stamp are two), as the
        labels and the ``market`` features group rows."""
        codes = cross_sections(ws.row_times, ws.row_dates)
        return np.flatnonzero(np.bincount(codes)[codes[ws.ends]] < 2)

    @staticmethod
    def _latest(ws: WindowSet, k: int) -> str:
        """"(its latest row)" of window ``k``, saying in a request of dates and instants which it is."""
        marks = ws.row_dates
        if marks is None or marks.all() or not marks.any():
            return "(its latest row)"
        if marks[ws.ends[k]]:
            return "(its latest row, a date: a bar stamped at that instant, intraday, is another cross-section)"
        return "(its latest row, an instant: a daily bar stamped with that date is another cross-section)"

    def alone_in_panel(self, ws: WindowSet) -> list[str]:
        """A model with panel features (``market``: the universe's return and volatility over the last
        dates) takes the symbols sent as the universe: a symbol whose latest row no other symbol's row
        shares (sent alone, or the others' rows end earlier) has its own return as the universe's there,
        unlike training on a date others traded. One warning for each such symbol (a cross-sectional
        label refuses it: :meth:`check_cross_section`)."""
        specs = panel_specs(self.preprocessing.data_config().features)
        trained = self.preprocessing.source_rows
        if not specs or len(ws) == 0 or (trained is not None and len(trained) < 2):  # one symbol: its own universe
            return []
        out = []
        for k in self._alone(ws):
            when = pd.Timestamp(int(ws.times[k]), tz="UTC").isoformat()
            out.append(f"{ws.symbols[ws.symbol_ids[k]]}: no other symbol has a row at {when} {self._latest(ws, k)}: the "
                       f"features {', '.join(specs)} take the symbols sent as the universe, so there they read its own "
                       "return alone; if other symbols the model was trained with trade on that date, send their rows up "
                       "to it as well")
        return out

    def other_universe(self, ws: WindowSet) -> list[str]:
        """A model with panel features (``market``) or of a label taken across the symbols of each date
        (``data.target`` other than ``return``) reads the symbols sent as the universe: its inputs (the
        universe's return, each row's past label) are those of training only when they are the symbols
        training read (``source_rows`` of preprocessing.json). One warning naming the training symbols
        not sent and the symbols sent that training did not read, when there are any (the forecast is
        made, from the universe sent); none for a model of one symbol or one that records no symbols, nor
        for a symbol sent alone (:meth:`alone_in_panel` names it; a cross-sectional label refuses it)."""
        d = self.preprocessing.data_config()
        trained = self.preprocessing.source_rows
        across = ([f"its features {', '.join(panel_specs(d.features))}"] if panel_specs(d.features) else []) + (
            [f"its label (data.target={d.target}), an input too"] if d.target != "return" else [])
        if not across or len(ws) == 0 or not trained or len(trained) < 2:
            return []
        sent = {ws.symbols[i] for i in np.unique(ws.symbol_ids)}
        if len(sent) < 2:  # a symbol sent alone: named by alone_in_panel, refused by check_cross_section
            return []
        missing, added = sorted(set(trained) - sent), sorted(sent - set(trained))
        if not missing and not added:
            return []

        def listed(names: list[str]) -> str:
            return ", ".join(names[:MAX_ROWS_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > MAX_ROWS_LISTED else "")

        parts = ([f"{listed(missing)} of them not sent"] if missing else []) + (
            [f"{listed(added)} sent but not among them"] if added else [])
        return [f"universe: the model was trained on {len(trained)} symbols, {' and '.join(parts)}; "
                f"{' and '.join(across)} take the symbols sent as the universe of each date, so its inputs are not "
                "those of training: send the rows of the symbols it was trained on, up to the same dates"]

    def predict(self, data, strict: bool = False, warnings: list[str] | None = None,
                check: Callable[[dict[str, pd.DataFrame], list[dict[str, Any]]], None] | None = None) -> pd.DataFrame:
        """Forecasts from the latest window of each symbol in ``data`` (path, frame or {symbol: frame}).

        Columns: symbol, as_of (UTC timestamp of the symbol's last input row: a symbol whose rows end
        earlier is forecast from there), step (1..H: the step-th bar of the symbol after as_of, as in
        training's labels; no date is given, since the next bars' dates depend on the exchange's
        calendar), forecast_return (log return of step over step-1), forecast_cum_return (their sum
        up to step), last_close (the close at as_of), forecast_price (last_close × exp(cum)) (a model
        trained on another ``data.target``: ``forecast_<target>`` and last_close instead); then
        ``lower_<pct>``, ``upper_<pct>`` (the conformal interval of the step's forecast at each level
        of the model folder's ``intervals.json``, e.g. ``lower_80``) when it has one; then
        ``return_q<level>`` (forecast quantiles of the step's log return; ``<target>_q<level>``, in the
        label's units, for another ``data.target``) when the model has a quantile head, and ``p_sell``,
        ``p_hold``, ``p_buy`` when it has the buy/hold/sell head. ``strict``: see :meth:`data_config`.
        A symbol with fewer than :meth:`settled_rows` rows (every symbol, when that is unknown) is
        forecast with a warning (:meth:`unsettled`), and so is a file of which validation dropped rows
        (:meth:`dropped_rows`) or flagged rows it keeps among those the forecast reads (a jump under
        ``data.jumps=flag``: :meth:`flagged_rows`) and, for a model with ``market`` features, a symbol whose latest row no
        other symbol sent shares (:meth:`alone_in_panel`); for such a model or one of a label taken
        across symbols, symbols sent other than those it was trained on (:meth:`other_universe`); an
        interval level the calibration leaves unbounded, -inf/+inf (:meth:`unbounded`); and
        intraday stamps without a zone, read as UTC, under a ``data.timezone`` other than UTC (as
        training warns of them); and a folder's files that look like a symbol's prices but are not read
        (``XPO.csv.zip``): logged, or appended to ``warnings`` when given. ``check(frames, reports)``: called with the rows read (:meth:`load_with_reports`)
        before anything is forecast, to refuse them by raising (the server counts the symbols of an
        upload against its limit: a file's are known only once read).
        """
        frames, reports, stamp_lines, logged = self._read(data, strict)
        if check is not None:
            check(frames, reports)
        for rep in reports:  # a symbol sent is forecast, or the answer is an error naming it
            for sym, why in rep.get("skipped_symbols", {}).items():
                raise DataError(f"{rep['file']}: symbol {sym}: {why}: it cannot be forecast")
        self.check_usable_rows(frames, reports)
        spacing: list[str] = []  # bars spaced unlike training's: the server's answer says it, not only its log
        ws = self.latest_windows(frames, None if warnings is None else spacing)
        table = self.forecast_table(ws, self.outputs(ws))
        found = (([] if logged and warnings is None else stamp_lines)  # a file's were logged as it was read
                 + spacing + self.dropped_rows(reports) + self.flagged_rows(reports, frames) + self.unsettled(frames)
                 + self.alone_in_panel(ws) + self.other_universe(ws) + self.unbounded(table))
        if warnings is None:
            for line in found:
                log.warning(line)
        else:
            warnings.extend(found)
        return table

    def unbounded(self, table: pd.DataFrame) -> list[str]:
        """One warning for each interval level of ``table`` (:meth:`forecast_table`) with a bound that is not
        finite: a level the calibration cannot bound (fewer calibration windows than it needs, 999 for 99.9%;
        validation forecasts that were not finite; aci's α for it walked down to 0) is (−inf, +inf). A CSV
        holds that as -inf/inf, JSON cannot: the server's answer has null there, which would otherwise read as
        a value missing, not as an interval that covers everything."""
        cal = self.calibration
        if cal is None or len(table) == 0:
            return []
        out = []
        for level in cal.levels:
            lo, hi = bound_columns(level)
            bad = ~(np.isfinite(table[lo].to_numpy()) & np.isfinite(table[hi].to_numpy()))
            if not bad.any():
                continue
            need = math.ceil(level / (1 - level) - 1e-9)  # fewest n with ⌈(n + 1)·level⌉ <= n
            why = (f"calibrated on {cal.n} windows, fewer than the {need} a {level * 100:g}% interval needs"
                   if cal.n < need else "aci's miss rate for it has walked down to 0" if cal.method == "aci"
                   else "validation forecasts that were not finite count as residuals above every bound")
            steps = sorted({int(k) for k in table.loc[bad, "step"]})
            out.append(f"{lo}, {hi}: the {level * 100:g}% interval is unbounded (-inf, +inf) at step(s) "
                       f"{', '.join(map(str, steps))} ({int(bad.sum())} of {len(table)} forecasts): the model's "
                       f"{INTERVALS_FILE} ({cal.method}) {why}; -inf/inf in CSV, null in JSON")
        return out

    def forecast_table(self, ws: WindowSet, outs: dict[str, np.ndarray]) -> pd.DataFrame:
        """The table of :meth:`predict` from the windows and the raw outputs of the model."""
        s = self.preprocessing.target_scale
        pred = outs["prediction"].astype(np.float64) * s  # (S, H) log returns
        S, H = pred.shape
        cum = np.cumsum(pred, axis=1)
        last_close = np.repeat(np.asarray(ws.last_close, np.float64), H)
        rows: dict[str, Any] = {
            "symbol": np.repeat(np.asarray(ws.symbols, dtype=object)[ws.symbol_ids], H),
            "as_of": np.repeat(pd.to_datetime(ws.times, utc=True), H),
            "step": np.tile(np.arange(1, H + 1), S),
        }
        target = self.preprocessing.data_config().target
        if target == "return":
            rows.update(forecast_return=pred.reshape(-1), forecast_cum_return=cum.reshape(-1), last_close=last_close,
                        forecast_price=last_close * np.exp(cum.reshape(-1)))
        else:  # a label that is not the symbol's own return has no price path: its forecast, as it is
            rows.update({f"forecast_{target}": pred.reshape(-1), "last_close": last_close})
        if self.calibration is not None:  # per level: the interval of each step's forecast (label units)
            q = outs["quantiles"].astype(np.float64) * s if "quantiles" in outs else None
            for level, (lo, hi) in self.calibration.bounds(pred, q).items():
                low, high = bound_columns(level)
                rows[low], rows[high] = lo.reshape(-1), hi.reshape(-1)
        if "quantiles" in outs:  # named after the label they are quantiles of: return_q0.9, cs_rank_q0.9
            q = outs["quantiles"].astype(np.float64) * s  # (S, H, Q)
            for i, level in enumerate(self.quantile_levels):
                rows[f"{target}_q{level:g}"] = q[:, :, i].reshape(-1)
        if "class_probs" in outs:
            for k, name in enumerate(CLASS_NAMES):
                rows[f"p_{name}"] = outs["class_probs"][:, :, k].astype(np.float64).reshape(-1)
        return pd.DataFrame(rows)
