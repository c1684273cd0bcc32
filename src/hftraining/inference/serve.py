"""Forecasting server (the ``serve`` extra): ``hftraining serve MODEL_DIR [--host 127.0.0.1] [--port 8000]``.

Endpoints (the OpenAPI schema is at ``/openapi.json``; with ``serve.docs`` the interactive docs at ``/docs``
and ``/redoc``, whose scripts a browser loads from a CDN):

    GET  /health        {"status": "ok"} while the process runs (liveness)
    GET  /ready         {"status": "ready", "model": ...} while /predict can be answered, else a 503 saying why
    GET  /model         the model's config, preprocessing and training metrics (an ensemble's: each member's run's)
    POST /predict       JSON {"symbols": {"AEM": [{"timestamp", "open", "high", "low", "close", "volume"}, ...]}}
    POST /predict/csv   multipart upload: ``file`` (CSV; one symbol, or a ``symbol`` column) and ``symbol``

Both predict endpoints answer ``{"forecasts": [row, ...], "warnings": [line, ...]}`` with the rows of
:meth:`Forecaster.predict` (symbol, as_of, step, forecast_return, ..., quantiles, probabilities) and a
warning for each symbol sent fewer than ``GET /model``'s ``settled_rows`` rows (it is forecast, but
its recursive indicators such as RSI and MACD have not settled: :meth:`Forecaster.unsettled`) and,
for a model with ``market`` features, for each symbol whose latest row no other symbol sent shares
(:meth:`Forecaster.alone_in_panel`).
``settled_rows`` is ``null`` for a model with a feature that does not settle within the rows that
can be measured (e.g. ``rsi_1700``): every symbol's forecast then carries a warning naming it, as
the forecast depends on the whole history sent.
The rows go through exactly the validation and features of training. Bad input is a 4xx whose
``error`` names the field (``symbols.AEM[3].close: Input should be a finite number``); a request
beyond a limit of the ``serve`` section is a 413 naming the limit and its key (whatever else is wrong with
it), a ``POST /predict`` body without a JSON Content-Type (``curl -d`` sends a form's) a 415 naming the header,
a request without the API key (when one is set) a 401, a request slower than ``serve.request_timeout_s`` (its
prediction, or the model folder loaded again or checked on a disk that does not answer) a 503.
A failing request never stops the server. The middlewares are in :mod:`.serve_asgi`.

The model is loaded once, and again when the files it was read from change (:func:`folder_state`: a
retrained ``final/``, a link pointed at another folder, an ensemble member wherever its ensemble.json names
it): the next request is answered by the folder as it is then, a 503 naming the folder while it cannot be
loaded (removed, half-written; read again each :data:`RETRY_S` meanwhile); a request in flight
keeps the model it started with, and a forecast is never made by one folder's weights and described by another's.

``GET /ready`` is the readiness probe (a Kubernetes ``readinessProbe``, a load balancer's health check):
200 ``{"status": "ready", "model": MODEL_DIR}`` (``GET /model``'s ``model_dir``) while the model folder is
loaded and its files unchanged since, or loaded again now that they changed; 503 ``{"status": "not ready",
"detail": LINE}`` otherwise, ``LINE`` the one-line reason a ``/predict`` gets its 503 with (the folder
cannot be loaded, a disk that does not answer within ``serve.request_timeout_s``; or every one of the
``serve.max_predictions`` slots held by a prediction still running past its request's limit, so that a
``/predict`` waits for one and is a 503 at its own limit). It asks the folder
check the predictions use (:func:`create_app`'s ``current``): probes and requests at once share one check,
the model is never loaded twice for them, and a disk that does not answer holds neither the event loop nor
``/health``.

With an API key, ``/health``, ``/ready`` (probes carry no secrets) and the API's description
(:data:`DOCS_PATHS`: the schema and the docs pages) stay open, so a browser can show the docs; the schema
declares the bearer key, so the docs' "Authorize" button sends it with "Try it out". ``/ready`` without the
key answers its status alone (no ``model``; a 503's ``detail`` says to send the key): the folder's path is
``GET /model``'s. The schema holds nothing of the model folder (no path, symbol, horizon or row count: those
are ``GET /model``'s, behind the key), only the request and response shapes and the ``serve`` limits every
413 names anyway.
"""


import asyncio
import codecs
import dataclasses
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time as clock
import weakref
from dataclasses import dataclass
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import numpy as np
import pandas as pd
import torch

from hftraining.core.config import ServeConfig
from hftraining.core.errors import DataError, UserError
from hftraining.core.jsonio import json_safe
from hftraining.data.io import SNIFF_BYTES, symbol_of
from hftraining.inference.ensemble import MAX_MEMBERS, METRICS_KEY, run_metrics
from hftraining.inference.folders import ENSEMBLE_NAME, is_ensemble, resolve_model_dir, run_folder
from hftraining.inference.forecaster import Forecaster, bound_columns, iso_as_of
from hftraining.inference.serve_asgi import AccessLog, ApiKey, BodyLimit, has_key
from hftraining.models import folder
from hftraining.models.outputs import CLASS_NAMES

log = logging.getLogger("hftraining.serve")

TS_MIN = pd.Timestamp.min.ceil("us").to_pydatetime()  # the nanosecond range of pandas, as datetimes
TS_MAX = pd.Timestamp.max.floor("us").to_pydatetime()
SYMBOL = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._\-^=]{0,63}")  # fullmatch: "$" would let a final newline through
SYMBOL_RULE = "a letter, digit or ^, then letters, digits and . _ - ^ =; at most 64"
API_KEY_ENV = "HFTRAINING_API_KEY"
DOCS_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
"""FastAPI's schema and docs pages (these with ``serve.docs`` only): open without the API key (they
describe the API, not the model)."""
PROBE_PATHS = ("/health", "/ready")
"""The liveness and readiness probes: open without the API key (an orchestrator's probe carries no secret)."""
OPEN_PATHS = (*PROBE_PATHS, *DOCS_PATHS)
"""The paths a GET or HEAD of needs no API key."""


def _require():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("serve needs FastAPI and uvicorn: pip install -e '.[serve]' (in the hftraining checkout)") from None


def _read_json(directory: Path, name: str) -> Any:
    """The JSON of ``directory/name`` for ``GET /model``, read as a model folder's files are (bounded,
    a regular file inside the folder: :func:`hftraining.models.folder.read_json`); None when it is
    absent or cannot be used."""
    try:
        return folder.read_json(directory, name)
    except DataError:
        return None


def model_info(fc) -> dict[str, Any]:
    """What ``GET /model`` answers: config, preprocessing summary and training metrics. The summary says
    what the forecasts are (``target``: ``return`` forecasts log returns, another label its own units, as
    the columns ``forecast_<target>`` name it) and the zone whose clock the time features read
    (``timezone``): a bare model folder or an ensemble has no run config.json that would say them. Also the
    autocast ``precision`` the forecasts are computed in and their conformal ``intervals`` (null without).
    An ensemble's ``config`` is null, ``member_configs`` holds each member's config.json and ``ensemble`` its
    ensemble.json but for the members' recorded run figures, which ``training_metrics.members`` holds."""
    d = Path(fc.model_dir) if fc.model_dir else None
    pre = fc.preprocessing
    data = pre.data_config()
    info: dict[str, Any] = {
        "model_dir": str(d) if d else None,
        "kind": "ensemble" if hasattr(fc.model, "members") else "model",
        "preprocessing": {"features": pre.features, "feature_columns": pre.feature_columns,
                          "sequence_length": pre.seq_len, "horizon": pre.horizon, "target_scale": pre.target_scale,
                          "target": data.target, "timezone": data.timezone},
        "min_rows": fc.min_rows(),
        "settled_rows": fc.settled_rows(),
        "quantile_levels": fc.quantile_levels,
        "classes": list(CLASS_NAMES) if fc.has_classes else [],
        "precision": fc.precision,
        "intervals": _intervals_info(fc.calibration),
    }
    if d is None:
        return json_safe(info)
    meta = None
    if is_ensemble(d):
        meta = _read_json(d, ENSEMBLE_NAME)
        # its members' run figures are served once, as training_metrics.members (beside each member's source)
        info["ensemble"] = {k: v for k, v in meta.items() if k != METRICS_KEY} if isinstance(meta, dict) else meta
        members = meta.get("members") if isinstance(meta, dict) else None
        # each member's own: the first one's alone described an ensemble of a transformer and ridge as a transformer
        info["config"] = None
        info["member_configs"] = [_read_json(d / m, "config.json") if isinstance(m, str) else None
                                  for m in (members if isinstance(members, list) else [])]
    else:
        info["config"] = _read_json(d, "config.json")
    # the run folder of a run's ``final/`` only: never any folder that happens to hold a bare model or
    # ensemble folder, whose files (a config.json of something else) would be served as the "run's"
    run = run_folder(d) or (d.parent if d.name == "final" else None)
    metrics: dict[str, Any] = {}
    if run is not None:
        metrics = run_metrics(run)
        info["run_config"] = _read_json(run, "config.json")
    elif isinstance(meta, dict):
        metrics = _ensemble_metrics(meta)
    info["training_metrics"] = metrics
    return json_safe(info)


MODEL_FILES = ("config.json", "model.safetensors", "preprocessing.json", "intervals.json", ENSEMBLE_NAME)
"""The files of a model or ensemble folder a server reads (an ensemble's members: the first three of each)."""
RUN_FILES = ("config.json", "eval.json", "metrics.jsonl")
"""The files of a run folder a server reads: the run's precision and ``GET /model``'s ``run_config`` and metrics."""
LOAD_TRIES = 3
"""Loads of a model folder that changed while it was read before the server gives up on it."""
RACY_S = 2.0
"""Seconds within which a file's recorded times may not tell two writes apart (a filesystem that keeps whole
seconds, FAT's two): a folder loaded within them of its newest file's time is read once more after them."""
RETRY_S = 1.0
"""Seconds a failed load of the model folder answers requests 503 before the folder is read again though its
files look unchanged: a load can fail for a passing reason its files' state does not show (no file descriptor
left, an I/O error of a network disk, a file rewritten in place within :data:`RACY_S`)."""


def _file_state(path: Path) -> tuple[int, int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # absent (or unreadable: its load says why)
        return None
    # the change time too: a copy that keeps the modification time (cp -p, rsync --inplace -t, touch -r) sets it
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _recheck_at(state: tuple, taken: float) -> float | None:
    """When a folder whose :func:`folder_state` ``state`` was taken at ``taken`` (seconds since the epoch) must
    be read again: a file written in place, at its size, within :data:`RACY_S` of its newest file's time may
    keep every time of the state; None when the state was taken after that (a later write shows)."""
    times = [t for f in (state[1] if len(state) == 2 and isinstance(state[1], tuple) else ()) if f for t in f[3:]]
    newest = max(times, default=None)
    return None if newest is None or taken > newest / 1e9 + RACY_S else newest / 1e9 + RACY_S


def _wall_clock() -> float:
    return datetime.now(timezone.utc).timestamp()


def folder_state(model_dir: str | Path) -> tuple:
    """What the files a server reads of the model path ``model_dir`` (a run, model or ensemble folder, or a
    link to one) are now: the folder it resolves to, and the device, inode, size and modification time of
    each of its files (:data:`MODEL_FILES`, each member's of an ensemble, :data:`RUN_FILES` of its run). Equal
    states: the same files. A folder replaced whole (a retrain saving ``final/``), a file rewritten, a link
    pointed at another folder change it; a path that resolves to no model folder is ``("unreadable", why)``."""
    try:
        d = resolve_model_dir(model_dir)
        run = run_folder(d) or (d.parent if d.name == "final" else None)
        members = sorted(e.path for e in os.scandir(d / "members") if e.is_dir()) if (d / "members").is_dir() else []
    except (UserError, OSError) as e:
        return ("unreadable", str(e))
    # and those its ensemble.json names (any folder inside it): a member outside members/ changed unseen
    members += [m for m in _named_members(d) if m not in members]
    paths = ([d / n for n in MODEL_FILES] + [Path(m) / n for m in members for n in MODEL_FILES[:3]]
             + ([run / n for n in RUN_FILES] if run is not None else []))
    try:
        # a link of the path replaced as it is read (removed and made again: ``ln -sfn``) fails the read of its target
        where = os.path.realpath(d)
    except OSError as e:
        return ("unreadable", str(e))
    return where, tuple(_file_state(p) for p in paths)


def _named_members(d: Path) -> list[str]:
    """The member folders the ensemble.json of ``d`` names, as paths inside ``d``: none where it has none, or
    its members are not those a load reads (a list of 2 to :data:`~hftraining.inference.ensemble.MAX_MEMBERS`
    folders inside ``d``: a path leading out, or a list of thousands, is refused by the load, which says why,
    and is not stat'ed on every request), or it cannot be read."""
    try:
        meta = folder.read_json(d, ENSEMBLE_NAME) if is_ensemble(d) else None
        names = meta.get("members") if isinstance(meta, dict) else None
        if not isinstance(names, list) or not 2 <= len(names) <= MAX_MEMBERS:
            return []
        return [os.path.normpath(folder.inside(d, m, str(d / ENSEMBLE_NAME))) for m in names]
    except (UserError, OSError):
        return []


@dataclass(frozen=True)
class Loaded:
    """The model a server answers with: its forecaster, ``GET /model``'s answer of it (:func:`model_info`)
    and the :func:`folder_state` of the files both were read from."""

    fc: Forecaster
    info: dict[str, Any]
    state: tuple
    recheck_at: float | None = None
    """When the folder must be read once more though its state is unchanged (:func:`_recheck_at`), or None."""

    def due(self) -> bool:
        """Whether the folder must be read again though its state is unchanged (:attr:`recheck_at` passed)."""
        return self.recheck_at is not None and _wall_clock() >= self.recheck_at

    def same_model(self, other: "Loaded") -> bool:
        """Whether ``other`` forecasts and is described exactly as this one (its weights, preprocessing,
        intervals, precision and ``GET /model`` answer)."""
        a, b = self.fc, other.fc
        if type(a.model) is not type(b.model) or a.precision != b.precision or self.info != other.info:
            return False
        sa, sb = a.model.state_dict(), b.model.state_dict()
        if sa.keys() != sb.keys() or any(sa[k].dtype != sb[k].dtype or sa[k].shape != sb[k].shape
                                         or not torch.equal(sa[k], sb[k]) for k in sa):
            return False
        cal = [c.to_dict() if c is not None else None for c in (a.calibration, b.calibration)]
        return (json.dumps(json_safe(a.preprocessing.to_dict()), sort_keys=True) ==
                json.dumps(json_safe(b.preprocessing.to_dict()), sort_keys=True)
                and json.dumps(json_safe(cal[0]), sort_keys=True) == json.dumps(json_safe(cal[1]), sort_keys=True))


def load_model(model_dir: str | Path, tries: int = LOAD_TRIES) -> Loaded:
    """The :class:`Loaded` of ``model_dir``, its files unchanged from before the forecaster was read until
    after ``GET /model``'s answer was: a folder replaced while it was read (a training run saving it) is read
    again, up to ``tries`` times, so the weights, preprocessing and description served are of one folder.
    A DataError when it kept changing; a folder that cannot be loaded raises as it loads."""
    for _ in range(tries):
        taken = _wall_clock()
        before = folder_state(model_dir)
        fc = Forecaster.from_pretrained(model_dir)
        info = model_info(fc)
        if folder_state(model_dir) == before:
            return Loaded(fc, info, before, _recheck_at(before, taken))
    raise DataError(f"{model_dir}: changed on disk while it was read ({tries} times): wait until whatever writes it "
                    "(a training run saving it?) has finished")


def _ensemble_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """``GET /model``'s ``training_metrics`` of an ensemble (its ensemble.json ``meta``): ``members``, one entry
    each: its folder, the folder it was copied from, its validation MSE (a ``weighted`` ensemble's; null for the
    others) and the ``test`` and ``validation`` figures of the run it was copied from (recorded as the ensemble
    was built: :data:`~hftraining.inference.ensemble.METRICS_KEY`; absent for a member that is not a run's, and
    in a folder written before they were recorded). The ensemble itself is scored by ``hftraining evaluate``."""
    names = meta.get("members") if isinstance(meta.get("members"), list) else []

    def nth(key: str, k: int) -> Any:
        v = meta.get(key)
        return v[k] if isinstance(v, list) and k < len(v) else None

    members = []
    for k, name in enumerate(names):
        entry = {"member": name, "source": nth("sources", k), "validation_mse": nth("validation_mse", k)}
        recorded = nth(METRICS_KEY, k)
        members.append({**entry, **(recorded if isinstance(recorded, dict) else {})})
    return {"members": members}


def _intervals_info(cal) -> dict[str, Any] | None:
    """``GET /model``'s ``intervals``: the conformal intervals the forecasts carry (the model folder's
    intervals.json), None without them: their method, levels, the forecast columns that hold them and the
    validation windows they were calibrated on."""
    if cal is None:
        return None
    return {"method": cal.method, "levels": list(cal.levels), "calibration_windows": cal.n,
            "columns": [c for q in cal.levels for c in bound_columns(q)]}


def _loc(loc: tuple | list) -> str:
    """("body", "symbols", "AEM", 3, "close") → "symbols.AEM[3].close"."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _is_json_type(value: str | None) -> bool:
    """Whether the Content-Type ``value`` is one FastAPI reads a body as JSON under: ``application/json`` or
    ``application/*+json``, parameters (``; charset=utf-8``) aside."""
    if not value:
        return False
    kind = value.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words: ``an array``, ``a string``, ``a number``, ``true``, ``null``."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else type(value).__name__


UNREADABLE = "not valid JSON: "
"""How the reason of a JSON body that cannot be read at all (bytes that are not text, nesting beyond Python's
recursion limit) begins, as the request hands it to FastAPI's JSON error and the 422 reads it back."""

REPEATED_KEY = "hftraining.repeated_key"
"""The request scope's entry for a JSON body with a key given twice in one object: the key's location."""


class _Repeated(dict):
    """A JSON object that gives a key more than once; ``repeated``: the first such key (json.loads keeps its
    last value)."""

    repeated: str = ""


def loads_once(body: bytes | str) -> tuple[Any, tuple | None]:
    """``json.loads(body)`` and the location of the first key given twice in one of its objects
    (``("symbols", "AEM")``, in the order of the text), or None: json.loads keeps the last value of such a
    key with no word said, so ``{"symbols": {"AEM": [...], "AEM": [...]}}`` was forecast from the second
    list alone, the first dropped."""
    twice = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal twice
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        twice, seen, out = True, set(), _Repeated(obj)
        out.repeated = next(k for k, _ in items if k in seen or seen.add(k))
        return out

    value = json.loads(body, object_pairs_hook=pairs)
    if not twice:
        return value, None
    stack: list[tuple[tuple, Any]] = [((), value)]  # depth first, without recursion: a body may nest deeply
    while stack:
        loc, v = stack.pop()
        if isinstance(v, _Repeated):
            return value, (*loc, v.repeated)
        if isinstance(v, dict):
            stack.extend(((*loc, k), x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend(((*loc, i), x) for i, x in reversed(list(enumerate(v))))
    return value, None


def repeated_key_error(loc: tuple) -> str:
    """The 422 line of a key given twice at ``loc`` (:func:`loads_once`): ``symbols.AEM[0].close``, a top-level
    key named ``body`` too (:func:`_loc` drops a field error's leading "body", which this location lacks)."""
    where = "body" if not loc or isinstance(loc[0], int) else ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else ("." if where else "") + str(part)
    return f"{where}: given twice in one JSON object (only its last value would be read); send each key once"


class _Late(Exception):
    """Work on a worker thread that did not end by its request's deadline; ``held``: it had its slot."""

    def __init__(self, held: bool):
        super().__init__()
        self.held = held


class Refused(Exception):
    """A request the server will not serve: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _frames(bars_by_symbol: dict[str, list], min_rows: int) -> dict[str, pd.DataFrame]:
    """The validated ``Bar`` rows of a ``POST /predict`` as one frame per symbol; UserError naming the field."""
    frames = {}
    for sym, bars in bars_by_symbol.items():
        if not SYMBOL.fullmatch(sym):
            raise UserError(f"symbols.{sym!r}: not a symbol name ({SYMBOL_RULE})")
        if not bars:
            raise UserError(f"symbols.{sym}: no rows (at least {min_rows} needed)")
        cols: dict[str, list] = {"timestamp": [], "close": [], "volume": []}
        has = {k: any(getattr(b, k) is not None for b in bars) for k in ("open", "high", "low")}
        for k, present in has.items():
            if present:
                missing = next((i for i, b in enumerate(bars) if getattr(b, k) is None), None)
                if missing is not None:
                    raise UserError(f"symbols.{sym}[{missing}].{k}: missing (other rows have it)")
                cols[k] = []
        for b in bars:
            for k in cols:
                cols[k].append(getattr(b, k))
        ts = cols["timestamp"]
        if all(isinstance(t, datetime) for t in ts):
            for i, t in enumerate(ts):  # pandas holds nanoseconds: 1677-09-22 .. 2262-04-11
                try:
                    utc = t if t.tzinfo is None else t.astimezone(timezone.utc).replace(tzinfo=None)
                    inside = TS_MIN <= utc <= TS_MAX
                except OverflowError:  # e.g. 9999-12-31T23:00-05:00: in UTC past the year 9999
                    inside = False
                if not inside:
                    raise UserError(f"symbols.{sym}[{i}].timestamp: {t.isoformat()} is outside the supported "
                                    f"range {TS_MIN:%Y-%m-%d} .. {TS_MAX:%Y-%m-%d}")
            # read as UTC either way; stamps all without an offset stay zone-less, so that under a data.timezone
            # other than UTC intraday ones are named in "warnings" as a file's are (they may be local times)
            naive = all(t.tzinfo is None for t in ts)
            if not naive:
                _one_zone(sym, ts)
            cols["timestamp"] = pd.to_datetime(ts) if naive else pd.to_datetime(ts, utc=True)
        elif all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts):
            cols["timestamp"] = np.asarray(ts, dtype=np.float64)
        else:  # the first row whose kind is not the first row's: a request of 10,000 rows names the one to fix
            number = [isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts]
            odd = next(i for i, n in enumerate(number) if n != number[0])
            raise UserError(f"symbols.{sym}[{odd}].timestamp: {'a number' if number[odd] else 'a date or time'}, but "
                            f"symbols.{sym}[0].timestamp is {'a number' if number[0] else 'a date or time'}: timestamps "
                            "mix text and numbers; send them all one way")
        frames[sym] = pd.DataFrame(cols)
    return frames


def _one_zone(sym: str, ts: list[datetime]) -> None:
    """A UserError naming the first stamp of ``ts`` (a request's symbol ``sym``) with a time of day but no
    zone or UTC offset when another has one, as a file or frame of such stamps is refused
    (:func:`hftraining.data.io.one_zone_rule`): taken as UTC, a local 09:30 beside New York offsets lands
    five hours before its neighbours. A stamp at midnight without one is a date (``2024-01-02``), as there,
    among stamps that are all at midnight (daily bars); among bars at other times of day (hourly bars around
    the clock) it is the midnight bar, as ``2024-01-02 00:00:00`` is in a file, and taken as UTC it landed
    hours away from its zoned neighbours (JSON does not tell ``2024-01-02`` from ``2024-01-02T00:00:00``)."""
    if all(t.time() == time(0) for t in ts):
        return
    bare = next((i for i, t in enumerate(ts) if t.tzinfo is None), None)
    if bare is None:
        return
    zoned = next(i for i, t in enumerate(ts) if t.tzinfo is not None)
    raise UserError(f"symbols.{sym}[{bare}].timestamp: {ts[bare].isoformat()} has no zone or UTC offset, but "
                    f"symbols.{sym}[{zoned}].timestamp {ts[zoned].isoformat()} has one: stamps that mix them cannot be "
                    "read one way (one without would be taken as UTC): send every timestamp with its offset, or all "
                    "of them in UTC")


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def numeric_text(v: Any) -> Any:
    """A timestamp given as text that is a plain number (``"20260318"``, ``"1773792000"``) → that
    number, so that it is read as the same number sent as a JSON number, or as the same cell of a CSV
    file, is (:func:`hftraining.data.io.parse_timestamps`: YYYYMMDD dates, epoch seconds or
    milliseconds), never as pydantic reads digits (epoch seconds: 20260318 would be August 1970)."""
    if isinstance(v, str) and NUMBER.fullmatch(v.strip()):
        text = v.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    return v


PACKED = ((b"\x1f\x8b", "gzip-compressed data"), (b"BZh", "bzip2-compressed data"),
          (b"\x28\xb5\x2f\xfd", "zstd-compressed data"), (b"PAR1", "a Parquet file"))
"""The first bytes of an upload that is not CSV text but a file the readers read under another name: the
reader's advice (``name it .csv.gz``) does not help an upload, which is always read as CSV text, and
its lines could not be counted against ``serve.max_rows`` before it is unpacked."""


def _check_upload(data: bytes, shown: str) -> None:
    """A UserError naming the upload ``shown`` when ``data`` is compressed or Parquet (:data:`PACKED`): its
    first bytes are such a file's and its head (what the reader sniffs) is not UTF-8 text, as the readers
    tell a data file (:func:`hftraining.data.io._head_lines`). CSV text whose first column is named
    ``PAR1`` or ``BZh...`` begins with those bytes too, and is read as the CSV it is."""
    what = next((what for magic, what in PACKED if data.startswith(magic)), None)
    if what is None:
        return
    try:  # final=False: a character cut at the end of the head is no decoding error
        codecs.getincrementaldecoder("utf-8")().decode(data[:SNIFF_BYTES], final=False)
    except UnicodeDecodeError:
        raise UserError(f"{shown}: {what}: /predict/csv reads CSV text; upload it as uncompressed CSV") from None


FORM_FIELDS = ("file", "symbol")
"""The fields of a ``POST /predict/csv`` form."""


def _check_form_fields(names: list[str]) -> None:
    """A UserError for a ``POST /predict/csv`` form (the names of its parts, in order) that gives a field twice
    or one it does not have: of two ``file`` parts (``curl -F file=@AEM.csv -F file=@WPM.csv``) the last alone
    was forecast, the first dropped with no word said, and a misspelt ``symbols`` field was ignored, the
    forecast named after the file instead, where a JSON body's unknown key is refused."""
    for name in names:
        if name not in FORM_FIELDS:
            raise UserError(f"{name[:64]!r}: not a field of the /predict/csv form ({', '.join(FORM_FIELDS)})")
        if names.count(name) > 1:
            more = ("; upload one file per request, or one CSV with a 'symbol' column" if name == "file" else "")
            raise UserError(f"{name}: given {names.count(name)} times in one form (only the last would be read){more}")


def _csv_rows(data: bytes) -> int:
    """Data lines of a CSV upload: its non-blank lines after the header."""
    return max(0, sum(1 for line in data.splitlines() if line.strip()) - 1)


def create_app(model_dir: str | Path, cfg: ServeConfig | None = None, api_key: str | None = None):
    """The FastAPI application serving ``model_dir`` (a run, model or ensemble folder) with the
    limits of ``cfg`` (default: the ``serve`` section's defaults). ``api_key``: every route but
    ``GET /health``, ``GET /ready`` and the docs (:data:`OPEN_PATHS`) needs ``Authorization: Bearer <api_key>``
    (None: no key, see :func:`check_exposure`)."""
    _require()
    cfg = cfg or ServeConfig()
    from anyio import CapacityLimiter, to_thread
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
    from starlette.exceptions import HTTPException as StarletteHTTPException

    loaded = load_model(model_dir)
    max_predictions = cfg.max_predictions
    Price = Annotated[float, Field(strict=True, allow_inf_nan=False)]

    class Bar(BaseModel):
        """One OHLCV row. ``open``/``high``/``low`` may be left out (the bar is then the close, as in training)."""

        model_config = ConfigDict(extra="forbid")
        timestamp: Annotated[Union[datetime, StrictInt, Price], BeforeValidator(numeric_text)] = Field(  # NaN/Inf: a 422, as a price's
            description="ISO 8601 (UTC when no offset; stamps at a time of day with and without one in a symbol's rows are "
                        "a 422, as in a file), or a number (also as text) read as a CSV file's: Unix epoch "
                        "seconds, milliseconds above 1e11, YYYYMMDD dates when most rows are")
        open: Optional[Price] = None
        high: Optional[Price] = None
        low: Optional[Price] = None
        close: Price
        volume: Price

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        symbols: dict[str, list[Bar]] = Field(
            description=f"recent rows per symbol, oldest first; each symbol needs at least GET /model's min_rows rows, "
                        f"and settled_rows (null: unknown) for a forecast matching the one from its full history; "
                        f"at most {cfg.max_symbols} symbols and {cfg.max_rows} rows in all",
            min_length=1, max_length=cfg.max_symbols,
        )

    class PredictResponse(BaseModel):
        forecasts: list[dict[str, Any]]
        warnings: list[str] = Field(default_factory=list, description=(
            "one line per symbol (or uploaded file) of which the training's validation rules dropped rows (e.g. a "
            "timestamp far beyond the others), naming them (position i of symbols.SYM, or the file's line): forecast "
            "from the rows kept; and one per symbol sent fewer than GET /model's settled_rows rows (every symbol when it "
            "is null): forecast, but its recursive indicators (RSI, MACD) have not settled, so the forecast may differ "
            "from the full-history one; and, for a model with market features, one per symbol whose latest row no other "
            "symbol sent shares (the market features then read its return alone); one when the bars sent are spaced "
            "unlike those the model trained on (minute bars to a model of daily bars); and one per interval level that "
            "is unbounded (its lower_/upper_ bounds are -inf/+inf, which JSON holds as null)"))

    class ReadyResponse(BaseModel):
        status: str = Field(description='"ready" (200), or "not ready" (503: a /predict would be a 503 now)')
        model: Optional[str] = Field(None, description="the model folder loaded (GET /model's model_dir); with an API "
                                                       "key, only to a request that sends it")
        detail: Optional[str] = Field(None, description="why it is not ready: the line a /predict 503 gives now; with "
                                                        "an API key, only to a request that sends it")

    # the schema is open with a key too: nothing of the model folder goes into it (GET /model has it)
    app = FastAPI(title="hftraining forecaster", version="1",
                  description="Forecasts of the next log returns per symbol (GET /model: how many, and the rows needed) "
                              "from recent OHLCV rows." + (" Every route but /health, /ready and these docs needs the API key: "
                                                          "'Authorization: Bearer <key>' (Authorize)." if api_key else ""),
                  # the docs pages load their scripts from a CDN in the browser: only when asked for
                  openapi_url=DOCS_PATHS[0], docs_url=DOCS_PATHS[1] if cfg.docs else None,
                  swagger_ui_oauth2_redirect_url=DOCS_PATHS[2] if cfg.docs else None,
                  redoc_url=DOCS_PATHS[3] if cfg.docs else None)
    app.state.forecaster = loaded.fc
    # failed: (folder_state, the 503's line, when to read the folder again: :data:`RETRY_S`) of a failed load
    served: dict[str, Any] = {"now": loaded, "failed": None}
    reload_lock = threading.Lock()

    def refused_reload(why: str) -> str:
        return (f"model: {model_dir} changed on disk since the server loaded it and cannot be loaded now ({why}); the "
                "request was not served (the server loads the folder again as soon as it can)")

    def still_failed(state: tuple) -> None:
        """The 503 of the last failed load while the folder is as it was then, for :data:`RETRY_S`."""
        failed = served["failed"]
        if failed is not None and failed[0] == state and clock.monotonic() < failed[2]:
            raise Refused(503, failed[1])

    def reload() -> Loaded:
        """On a worker thread: the model of the folder as it is now, loaded once by one thread while the
        others wait for it; a folder that cannot be loaded (removed, half-written) is a 503 until it changes,
        and read again every :data:`RETRY_S` meanwhile (the failure may have passed: no file descriptor left)."""
        with reload_lock:
            state, old = folder_state(model_dir), served["now"]
            if state == old.state and not old.due():  # another request's thread has loaded it
                return old
            still_failed(state)
            try:
                new = load_model(model_dir)
            except (UserError, OSError) as e:
                line, before = refused_reload(" ".join(str(e).split())), served["failed"]
                served["failed"] = (state, line, clock.monotonic() + RETRY_S)
                # once per failure: the same one read again each RETRY_S (a folder removed for good) is not a new line
                log.log(logging.DEBUG if before is not None and before[1] == line else logging.WARNING, line)
                raise Refused(503, served["failed"][1]) from None
            if new.same_model(old):  # read again after RACY_S (or only touched): the model loaded is the folder's
                served["now"], served["failed"] = dataclasses.replace(old, state=new.state, recheck_at=new.recheck_at), None
                return served["now"]
            served["now"], served["failed"] = new, None
            app.state.forecaster = new.fc
            log.info("%s changed on disk: loaded again (%s)", model_dir, new.info.get("model_dir"))
            return new

    def check() -> Loaded:
        """On a worker thread: the model loaded, while the files it was read from are unchanged (a few stat
        calls); else the folder as it is now (:func:`reload`)."""
        now, state = served["now"], folder_state(model_dir)
        if state == now.state and not now.due():
            served["failed"] = None  # the folder is back as it was loaded: a failure from now on is a new one
            return now
        still_failed(state)
        return reload()

    checks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → its running and next check

    def start_check(loop: asyncio.AbstractEventLoop, gate: dict[str, Any]) -> None:
        """On the event loop: the next check (:func:`check`, on a thread of its own) for every request that joined
        it; when it ends, the next one for those that came meanwhile."""
        fut, gate["next"], gate["running"] = gate["next"], None, True

        def ended(result: Any, error: BaseException | None) -> None:
            gate["running"] = False
            if not fut.done():
                if error is None:
                    fut.set_result(result)
                else:
                    fut.set_exception(error)
                    fut.exception()  # its requests may all have given up: retrieved, not logged as never retrieved
            if gate["next"] is not None:
                start_check(loop, gate)

        def run() -> None:
            try:
                result, error = check(), None
            except BaseException as e:  # handed to the requests waiting for it
                result, error = None, e
            try:
                loop.call_soon_threadsafe(ended, result, error)
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        # a daemon thread: one left waiting on a disk that does not answer never holds up the process's exit
        try:
            threading.Thread(target=run, name="hftraining-serve-check", daemon=True).start()
        except RuntimeError as e:  # no thread to be had (the process's or the system's limit, memory)
            # its requests are a 503 now and the next request starts a check again (marked as running, a check that
            # never runs would be waited for by every later request until its limit, for as long as the server ran)
            gate["running"] = False
            line = (f"model: checking {model_dir} on disk needs a thread and none could be started ({e}); the request "
                    "was not served")
            log.warning(line)
            if not fut.done():
                fut.set_exception(Refused(503, line))
                fut.exception()  # retrieved: its requests may all have given up

    async def current(deadline: float) -> Loaded:
        """The model to answer a request with (:func:`check`): never a forecast of one folder's weights
        described by another's files, nor of a model no longer on disk. A request in flight keeps the model it
        started with. Off the event loop and within the request's ``deadline`` (a loop time): a folder that takes
        long to load (or a disk that does not answer a stat) is a 503 at ``serve.request_timeout_s``, not a
        request (and with a stat, the whole server) waiting for it. One check runs at a time, so threads left
        waiting on a disk that does not answer cannot pile up; the requests that come while one runs share the
        next, which starts after they came (it sees the folder as it is then): many requests at once are not
        each queued behind the others' checks."""
        loop = asyncio.get_running_loop()
        gate = checks.setdefault(loop, {"running": False, "next": None})
        if gate["next"] is None:
            gate["next"] = loop.create_future()
        fut = gate["next"]
        if not gate["running"]:
            start_check(loop, gate)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise Refused(503, f"model: checking {model_dir} on disk (its files changed and are being read again, or the "
                               f"disk does not answer) took longer than the limit of {cfg.request_timeout_s:g} s "
                               "(serve.request_timeout_s, --request-timeout); the request was not served") from None

    class OnceRequest(Request):
        """A request whose JSON body notes a key given twice in one object (:func:`loads_once`) in its scope."""

        async def json(self) -> Any:
            if not hasattr(self, "_json"):
                body = await self.body()
                try:
                    self._json, where = loads_once(body)
                except UnicodeDecodeError as e:  # FastAPI answered these (and the next) 400 "There was an error parsing the body"
                    raise json.JSONDecodeError(f"{UNREADABLE}not {e.encoding.upper()} text (byte 0x{body[e.start]:02x} at byte {e.start}); "
                                               "send the JSON as UTF-8", "", e.start) from None
                except RecursionError:
                    raise json.JSONDecodeError(f"{UNREADABLE}nested too deeply (arrays or objects within each other "
                                               f"beyond Python's limit of {sys.getrecursionlimit()})", "", 0) from None
                if where is not None:
                    self.scope[REPEATED_KEY] = where
            return self._json

    class OnceRoute(APIRoute):
        """A route that reads a JSON body as :class:`OnceRequest` does (FastAPI parses it before the endpoint runs)."""

        def get_route_handler(self):
            handler = super().get_route_handler()

            async def route(request: Request):
                return await handler(OnceRequest(request.scope, request.receive))

            return route

    app.router.route_class = OnceRoute  # the routes below
    # outermost first: access log, CORS (answers preflights), API key, body limit (add_middleware prepends)
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, timeout_s=cfg.request_timeout_s)
    if api_key is not None:
        app.add_middleware(ApiKey, key=api_key, timeout_s=cfg.request_timeout_s, open_paths=OPEN_PATHS if cfg.docs else (*PROBE_PATHS, DOCS_PATHS[0]))
        app.openapi = _with_bearer(app.openapi)
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(AccessLog)

    def too_many_symbols(n: int | str) -> str:
        return f"symbols: {n} symbols exceeds the limit of {cfg.max_symbols} (serve.max_symbols, --max-symbols)"

    def too_many_rows(n: int) -> str:
        return f"request: {n} rows exceeds the limit of {cfg.max_rows} (serve.max_rows, --max-rows)"

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        body = getattr(exc, "body", None)
        if isinstance(body, dict) and isinstance(body.get("symbols"), dict):
            # a request beyond a limit is the 413 of that limit whatever else is wrong with it: a bad row first
            # answered 422, and once fixed the same request was refused for its size
            symbols = body["symbols"]
            if len(symbols) > cfg.max_symbols:
                return JSONResponse({"error": too_many_symbols(len(symbols))}, status_code=413)
            rows = sum(len(bars) for bars in symbols.values() if isinstance(bars, list))
            if rows > cfg.max_rows:
                return JSONResponse({"error": too_many_rows(rows)}, status_code=413)
        if request.scope.get(REPEATED_KEY) is not None:  # a field error may be of the value kept of the two
            return JSONResponse({"error": repeated_key_error(request.scope[REPEATED_KEY])}, status_code=422)
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            pos = next((p for p in first.get("loc", ())[1:] if isinstance(p, int)), None)
            why = str((first.get("ctx") or {}).get("error", ""))
            msg = (f"body: {why}" if why.startswith(UNREADABLE) else
                   "body: not valid JSON" + (f" (at character {pos})" if pos is not None else ""))
        elif tuple(first.get("loc", ())) == ("body", "file") and first.get("type") != "missing":
            msg = "file: expected a file upload (a multipart part with a filename)"
        elif first.get("type") == "model_attributes_type" and tuple(first.get("loc", ())) == ("body",):
            # the body read as no JSON object: FastAPI parses it as JSON only under a JSON Content-Type (curl -d
            # sends application/x-www-form-urlencoded), and pydantic's "valid dictionary" said neither
            declared = request.headers.get("content-type")
            if not _is_json_type(declared):
                return JSONResponse({"error": f"body: Content-Type {(declared or 'missing')[:100]}, not application/json: send "
                                              "the request as JSON with that header (curl -H 'Content-Type: "
                                              "application/json' -d @request.json)"}, status_code=415)
            msg = (f"body: expected a JSON object {{\"symbols\": {{SYMBOL: [rows]}}}}, got "
                   f"{_json_kind(first.get('input'))}")
        elif first.get("type") == "too_long" and tuple(first.get("loc", ())) == ("body", "symbols"):
            n = len(first["input"]) if isinstance(first.get("input"), dict) else "more"
            return JSONResponse({"error": too_many_symbols(n)}, status_code=413)
        else:
            loc = tuple(first.get("loc", ()))
            if len(loc) > 1 and loc[-2] == "timestamp" and loc[-1] in ("datetime", "int", "float"):  # its union's member
                loc = loc[:-1]
            msg = f"{_loc(loc)}: {first.get('msg', 'invalid')}"
        detail = [{k: v for k, v in e.items() if k != "input"} for e in errs[:10]]  # bounded: no echo of the body
        return JSONResponse({"error": msg, "detail": json_safe(jsonable(detail)), "n_errors": len(errs)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # 404, 405, a body that cannot be parsed
        where = f"{request.method} {request.url.path}" if exc.status_code in (404, 405) else "body"
        return JSONResponse({"error": f"{where}: {exc.detail}"}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the request was not served"}, status_code=500)

    def forecast(fc: Forecaster, data, path: str | None = None, shown: str = "", symbol: str | None = None) -> dict[str, Any]:
        """The answer of a request: :meth:`Forecaster.predict`'s table of ``data`` and its warnings
        (``path``, a temporary file, named ``shown`` in them). An upload's symbols are known once it is
        read: more than ``serve.max_symbols`` is the 413 a request body gets, and its form field
        ``symbol`` must be the file's one symbol (a file with a ``symbol`` column of others would be
        forecast under their names, the field silently ignored)."""
        warnings: list[str] = []

        def check(frames: dict[str, pd.DataFrame], reports: list[dict[str, Any]]) -> None:
            if path is None:
                return
            sent = sorted({*frames, *(sym for rep in reports for sym in rep.get("skipped_symbols", {}))})
            if len(sent) > cfg.max_symbols:
                raise Refused(413, f"{shown}: {len(sent)} symbols exceeds the limit of {cfg.max_symbols} "
                                   "(serve.max_symbols, --max-symbols)")
            if symbol is not None and sent != [symbol]:
                raise UserError(f"symbol: {symbol}, but the 'symbol' column of {shown} names "
                                f"{', '.join(sent[:3])}{', ...' if len(sent) > 3 else ''}; give the field only for a "
                                "file of one symbol without that column")

        out = fc.predict(data, strict=True, warnings=warnings, check=check)
        out = iso_as_of(out)
        if path is not None:
            warnings = [w.replace(path, shown) for w in warnings]
        return {"forecasts": json_safe(out.to_dict(orient="records")), "warnings": list(warnings)}

    slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → {pool: its semaphore, thread limiter and late threads}

    def deadline_of_request() -> float:
        return asyncio.get_running_loop().time() + cfg.request_timeout_s

    async def in_thread(work, deadline: float):
        """``work()`` on a worker thread (:func:`bounded`), answered 503 at ``deadline``. At most
        ``serve.max_predictions`` run at once, those left running past their deadline included."""
        try:
            return await bounded(work, deadline, "predict", max_predictions)
        except _Late as late:
            waited = "" if late.held else (f" waiting for one of the {max_predictions} prediction slots (serve.max_predictions, "
                                           "all taken, some by predictions still running past their own limit)")
            raise Refused(503, f"prediction: took longer than the limit of {cfg.request_timeout_s:g} s{waited} "
                               "(serve.request_timeout_s, --request-timeout); the request was not served") from None

    async def bounded(work, deadline: float, pool: str, n: int):
        """``work()`` on a worker thread of ``pool``, :class:`_Late` at ``deadline`` (a loop time; the thread is
        left to finish: Python cannot stop it, and its result is dropped). At most ``n`` of a pool run at once,
        those left running past their deadline included: a thread frees its slot when it ends, not when its
        request gives up, so timed-out work cannot pile up without bound. Their threads come from a limiter
        of their own, not anyio's default one (40 threads, shared with FastAPI's sync routes and file
        uploads): with the default, predictions beyond 40 waited however large ``max_predictions`` was, and
        40 running left an upload waiting for a thread. The pool's ``late`` counts the threads still running
        whose request gave up (:func:`stuck`)."""
        loop = asyncio.get_running_loop()
        pools = slots.setdefault(loop, {})
        if pool not in pools:
            pools[pool] = {"sem": asyncio.Semaphore(n), "threads": CapacityLimiter(n), "late": 0}
        held_by, sem = pools[pool], pools[pool]["sem"]
        lock, state = threading.Lock(), {"ran": False, "dropped": False, "finished": False, "abandoned": False}

        def freed(abandoned: bool) -> None:  # on the event loop: the thread has ended
            if abandoned:
                held_by["late"] -= 1
            sem.release()

        def run():
            with lock:
                if state["dropped"]:  # the request gave up before a thread took it
                    return None
                state["ran"] = True
            try:
                return work()
            finally:
                with lock:
                    state["finished"] = True
                    abandoned = state["abandoned"]
                try:
                    loop.call_soon_threadsafe(freed, abandoned)
                except RuntimeError:  # the loop is closed: the server has stopped
                    pass

        held = False
        try:
            async with asyncio.timeout_at(deadline):
                await sem.acquire()
                held = True
                return await to_thread.run_sync(run, abandon_on_cancel=True, limiter=held_by["threads"])
        except TimeoutError:
            raise _Late(held) from None
        finally:
            if held:
                with lock:
                    if not state["ran"]:  # no thread took it: its slot is freed here
                        state["dropped"] = True
                        sem.release()
                    elif not state["finished"]:  # its thread runs on, holding the slot, for no request
                        state["abandoned"] = True
                        held_by["late"] += 1

    def stuck() -> str | None:
        """The line of a ``/predict`` that cannot be answered now because every prediction slot is held by a
        prediction still running past its request's limit (a request waits for one and is a 503 at its own
        limit), or None."""
        pools = slots.get(asyncio.get_running_loop(), {})
        late = pools["predict"]["late"] if "predict" in pools else 0
        if late < max_predictions:
            return None
        return (f"prediction: all {max_predictions} prediction slots (serve.max_predictions, --max-predictions) are held "
                f"by predictions still running past the limit of {cfg.request_timeout_s:g} s (serve.request_timeout_s, "
                "--request-timeout): a /predict now waits for one of them to end and is a 503 at that limit")

    def check_rows(n: int) -> None:
        if n > cfg.max_rows:
            raise Refused(413, too_many_rows(n))

    # async: answered on the event loop, never queued for a worker thread behind running predictions
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=ReadyResponse, response_model_exclude_none=True,
             responses={503: {"model": ReadyResponse, "description": "not ready: /predict would be a 503 now"}})
    async def ready(request: Request):
        """Whether ``/predict`` can be answered now: the folder check the requests use (:func:`current`),
        shared with them, within ``serve.request_timeout_s``, and a prediction slot not held by a prediction
        its request gave up on (:func:`stuck`). Open without the API key; without it the answer names nothing
        of the folder (its path is ``/model``'s, behind the key)."""
        told = api_key is None or has_key(request.scope, api_key.encode())
        try:
            now = await current(deadline_of_request())
            # the model loads, but every prediction slot is held by predictions their requests gave up on
            why = stuck()
            if why is not None:
                raise Refused(503, why)
        except Refused as e:
            if e.status != 503:
                raise
            detail = (str(e) if told else
                      "the model cannot be served now; send the API key ('Authorization: Bearer <key>') for the reason")
            return JSONResponse({"status": "not ready", "detail": detail}, status_code=503)
        return {"status": "ready", "model": now.info.get("model_dir") if told else None}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return (await current(deadline_of_request())).info

    # HEAD as GET without the body (FastAPI routes a GET alone: a monitor's HEAD was a 405), kept out of the schema
    for path, endpoint in (("/health", health), ("/ready", ready), ("/model", model)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(req: PredictRequest, request: Request) -> dict[str, Any]:
        check_rows(sum(map(len, req.symbols.values())))
        if request.scope.get(REPEATED_KEY) is not None:  # {"AEM": [...], "AEM": [...]}: one list would be dropped
            raise UserError(repeated_key_error(request.scope[REPEATED_KEY]))
        deadline = deadline_of_request()
        now = await current(deadline)
        return await in_thread(lambda: forecast(now.fc, _frames(req.symbols, now.info["min_rows"])), deadline)

    @app.post("/predict/csv", response_model=PredictResponse)
    async def predict_csv(request: Request, file: UploadFile = File(..., description="CSV of OHLCV rows"),
                          symbol: Optional[str] = Form(None, description="symbol of a one-symbol file (one without a symbol column)")) -> dict[str, Any]:
        # the symbol of a file named AEM.csv.gz is AEM, as a data folder's file of that name (not "AEM.csv")
        name = symbol or symbol_of(Path(file.filename or "upload"))
        if not SYMBOL.fullmatch(name):
            raise UserError(f"symbol: {name!r} is not a symbol name ({SYMBOL_RULE})")
        data = await file.read()
        _check_upload(data, f"file {file.filename or name}")
        check_rows(_csv_rows(data))
        _check_form_fields([k for k, _ in (await request.form()).multi_items()])  # FastAPI's parse, kept by the request
        deadline = deadline_of_request()
        now = await current(deadline)

        def work() -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="hftraining-upload-") as tmp:
                path = Path(tmp) / f"{name}.csv"
                path.write_bytes(data)
                try:
                    return forecast(now.fc, str(path), str(path), f"file {file.filename or name}", symbol or None)
                except UserError as e:  # name the upload, not the temporary file
                    raise UserError(str(e).replace(str(path), f"file {file.filename or name}")) from None

        return await in_thread(work, deadline)

    return app


def _with_bearer(openapi):
    """FastAPI's ``app.openapi`` → one whose schema declares the API key (HTTP bearer) for every
    route but :data:`OPEN_PATHS`, so the docs page offers "Authorize" and sends the key."""

    def keyed() -> dict[str, Any]:
        schema = openapi()  # built once and kept by FastAPI: changed in place once
        if "security" not in schema:
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "the server's API key"}}
            schema["security"] = [{"apiKey": []}]
            for path in OPEN_PATHS:
                for op in schema.get("paths", {}).get(path, {}).values():
                    op["security"] = []
        return schema

    return keyed


def jsonable(obj: Any) -> Any:
    """Pydantic error entries → JSON (their ``ctx`` may hold exceptions)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if k != "url"}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: addresses other machines cannot reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_key(flag: str | None, env: dict[str, str]) -> str | None:
    """The API key from ``--api-key`` (first) or the ``HFTRAINING_API_KEY`` entry of ``env``; None when
    neither is set. An empty key or one that cannot travel in a header is a UserError (that never shows it)."""
    source, key = ("--api-key", flag) if flag is not None else (API_KEY_ENV, env.get(API_KEY_ENV))
    if key is None:
        return None
    if not key:
        raise UserError(f"{source}: empty; give a key (e.g. `openssl rand -hex 32`) or leave {source} unset")
    if not re.fullmatch(r"[\x21-\x7e]+", key):
        raise UserError(f"{source}: the key must be printable ASCII without spaces (it travels in the Authorization header)")
    return key


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to listen beyond the loopback interface without an API key, unless ``insecure``."""
    if api_key is None and not insecure and not is_loopback(host):
        raise UserError(f"--host {host}: not a loopback address and no API key is set; set {API_KEY_ENV} "
                        "(or --api-key) so requests need the key, or pass --insecure to serve without one")


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, *_rest, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UserError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})") from None


def guarded_http(cfg: ServeConfig) -> type:
    """uvicorn's h11 HTTP protocol with the two guards uvicorn lacks: a deadline for each request's
    line and headers (``serve.header_timeout_s``; armed when a connection opens and after each
    response, cleared once the head is complete: a client sending it a byte at a time is disconnected),
    and a cap on open connections (``serve.max_connections``: one beyond is closed at once), so slow
    clients cannot hold file descriptors until the server has none left."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > cfg.max_connections:
                log.warning("closed a connection from %s: %d open (serve.max_connections)", self.client, len(self.connections) - 1)
                transport.close()
                return
            self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            self._clear_head_deadline()
            self._head_deadline = self.loop.call_later(cfg.header_timeout_s, self._head_too_slow)

        def _clear_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                log.warning("closed a connection from %s: no complete request head within %g s (serve.header_timeout_s)",
                            self.client, cfg.header_timeout_s)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
                self._clear_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()  # the next request's head, on a kept-alive connection

        def connection_lost(self, exc) -> None:
            self._clear_head_deadline()
            super().connection_lost(exc)

    return GuardedH11


@dataclass
class Prepared:
    """A server ready to listen (:func:`build_server`): the ``uvicorn.Server`` and its start-up line."""

    server: Any
    banner: str


def build_server(model_dir: str | Path, cfg: ServeConfig | None = None, api_key: str | None = None,
                 insecure: bool = False) -> Prepared:
    """Everything before listening, so that each mistake is a UserError before anything runs: the
    extra is installed, the host is safe (:func:`check_exposure`), the model loads, the port is free."""
    _require()
    import uvicorn

    cfg = cfg or ServeConfig()
    check_exposure(cfg.host, api_key, insecure)
    app = create_app(model_dir, cfg, api_key)
    _check_port(cfg.host, cfg.port)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False,
                                           timeout_keep_alive=cfg.keep_alive_timeout_s, http=guarded_http(cfg)))
    described = "/docs, /redoc and /openapi.json" if cfg.docs else "/openapi.json"
    guard = (f"API key required; {described} open without it, as are the probes /health and /ready" if api_key is not None
             else "no API key" + (", --insecure" if insecure else ": loopback only"))
    return Prepared(server, f"serving {model_dir} on {cfg.host}:{cfg.port} ({guard})")


def run_server(prepared: Prepared) -> None:
    """Serve until interrupted (the access log goes to the ``hftraining.serve`` logger)."""
    log.info(prepared.banner)
    prepared.server.run()


def serve(model_dir: str | Path, cfg: ServeConfig | None = None, api_key: str | None = None,
          insecure: bool = False) -> None:
    """Run the server of ``model_dir`` with the ``serve`` section ``cfg`` until interrupted; see
    :func:`create_app` for ``api_key`` and :func:`check_exposure` for ``insecure``."""
    run_server(build_server(model_dir, cfg, api_key, insecure))
