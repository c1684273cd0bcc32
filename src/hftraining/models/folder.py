"""A model folder is input: read it as untrusted, like a CSV.

``predict``, ``serve``, ``evaluate`` and :meth:`Forecaster.from_pretrained` load folders someone
else may have written. Every file goes through here before anything is built from it:

- read with a size limit, only as a regular file inside the folder (a symbolic link leaving the
  folder, a device such as ``/dev/zero`` or a FIFO is refused);
- JSON parsed with the config's bounds (size, values, nesting; :func:`hftraining.core.config.parse_text`);
- ``config.json`` checked as the config tree checks a ``model`` section, with caps on the sizes that
  decide memory, and the parameter count computed on the ``meta`` device (nothing allocated) and
  capped at :data:`MAX_PARAMETERS`;
- the ``model.safetensors`` header (keys, dtypes, shapes, byte ranges) compared with the model the
  config describes before a byte of weights is read, and the weights refused if one is not finite;
- ``preprocessing.json`` checked for types, lengths that agree with the model, and finite, positive
  scales.

Every failure is a one-line :class:`~hftraining.core.errors.DataError` naming the file and the key
(exit 2). Nothing in a folder is executed or imported: names are looked up in registries.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from hftraining.core.config import (
    saved_data_section,
    Config, DataConfig, ModelConfig, check_value, parse_text, section_from_dict, shown, validate,
)
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.features import feature_columns
from hftraining.data.features import check_calendar_version
from hftraining.data.labels import CHANGE_NOTE, CHANGED_IN, LABEL_VERSION
from hftraining.data.pipeline import check_closures, check_symbol_bar_seconds, check_symbol_split_dates
from hftraining.data.provenance import check_source_rows
from hftraining.data.splits import Fold
from hftraining.models.intervals import GRID, METHODS, Calibration, cqr_pair
from hftraining.models.registry import CAPS, DIM_CAPS, MAX_PARAMETERS, build_model  # the limits a run is checked against

MAX_JSON_BYTES = 16 << 20
"""Largest config.json / preprocessing.json / ensemble.json read (16 MiB)."""
MAX_HEADER_BYTES = 16 << 20
"""Largest safetensors header read (16 MiB; a 25M-parameter model's is under 20 KB)."""
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


def _resolved(path: Path, where: str | None = None) -> Path:
    """``path.resolve()``; where it cannot be resolved (a loop of symbolic links, a NUL byte in a name
    read from a JSON file) a DataError naming ``where`` (default: ``path``)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # RuntimeError: Python < 3.13's symlink loop
        loop = isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP
        why = "a loop of symbolic links" if loop else (getattr(e, "strerror", None) or str(e))
        raise DataError(f"{where or shown(str(path))}: cannot be resolved ({why}); refused") from None


def regular_file(folder: str | Path, name: str, max_bytes: int) -> Path:
    """``folder/name`` when it is a regular file inside ``folder`` (symbolic links allowed when they
    stay inside it) of at most ``max_bytes``; a DataError naming the file otherwise."""
    folder = Path(folder)
    path = folder / name
    try:
        if path.is_symlink() and not _resolved(path).is_relative_to(_resolved(folder)):
            raise DataError(f"{path}: a symbolic link to {_resolved(path)}, outside the model folder; refused")
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{folder}: no {name}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file; refused")
    if st.st_size > max_bytes:
        raise DataError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} a model folder's {name} may have")
    return path


def read_file(folder: str | Path, name: str, max_bytes: int) -> bytes:
    """The bytes of :func:`regular_file` (``folder``, ``name``, ``max_bytes``), never more than ``max_bytes``."""
    path = regular_file(folder, name, max_bytes)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > max_bytes:
        raise DataError(f"{path}: more than the {max_bytes:,} bytes a model folder's {name} may have")
    return data


def read_json(folder: str | Path, name: str) -> Any:
    """The JSON content of ``folder/name`` (:func:`read_file`, then the config's bounded parse)."""
    path = Path(folder) / name
    data = read_file(folder, name, MAX_JSON_BYTES)
    try:
        return parse_text(data.decode("utf-8"), str(path), json_only=True)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    except ConfigError as e:
        raise DataError(str(e)) from None


def _int(args: dict[str, Any], key: str, path: Path) -> int:
    if key not in args:
        raise DataError(f"{path}: missing key {key!r}")
    v = args[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= DIM_CAPS[key]:
        raise DataError(f"{path}: {key} must be an integer in [1, {DIM_CAPS[key]:,}], got {shown(v)}")
    return v


FORMAT_VERSION = 1
"""The newest model and ensemble folder layout this version reads (written as ``format_version``)."""


def check_format_version(args: dict[str, Any], path: Path) -> None:
    """A folder written by a newer version (``format_version`` above :data:`FORMAT_VERSION`) is a
    DataError: its files may mean what this version cannot know. A folder without it is version 1."""
    v = args.get("format_version", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{path}: format_version must be a positive integer, got {shown(v)}")
    if v > FORMAT_VERSION:
        raise DataError(f"{path}: format_version {v} was written by a newer hftraining (this one reads up to "
                        f"{FORMAT_VERSION}); upgrade hftraining to load it")


def fp32_heads(folder: str | Path) -> bool:
    """``fp32_heads`` of ``folder/config.json``: whether the model's output heads run in fp32 under an
    autocast (:attr:`~hftraining.models.base.ForecastModel.fp32_heads`). A folder written before the key
    (2026-12-07) computed them in the autocast's precision, and still does: its forecasts are those its
    eval.json scored. A DataError for anything but true or false."""
    path = Path(folder) / "config.json"
    args = read_json(folder, "config.json")
    v = args.get("fp32_heads", False) if isinstance(args, dict) else False
    if not isinstance(v, bool):
        raise DataError(f"{path}: fp32_heads must be true or false, got {shown(v)}")
    return v


def model_spec(folder: str | Path) -> tuple[ModelConfig, int, int, int]:
    """(model config, n_features, horizon, seq_len) of ``folder/config.json``, checked."""
    path = Path(folder) / "config.json"
    args = read_json(folder, "config.json")
    if not isinstance(args, dict):
        raise DataError(f"{path}: expected a JSON object")
    if "model" not in args:
        raise DataError(f"{path}: missing key 'model'")
    check_format_version(args, path)
    try:
        cfg = section_from_dict(ModelConfig, args["model"], "model")
        seq_len = _int(args, "seq_len", path)
        # the model section with the folder's window (a cross-sectional loss was trained on date batches; data
        # is checked apart): model.patch_len and model.moving_avg are checked against it, not a default
        validate(Config(model=cfg, data=DataConfig(batching="windows" if cfg.loss == "mse" else "dates",
                                                   sequence_length=seq_len)))
    except ConfigError as e:
        raise DataError(f"{path}: {e}") from None
    for key, cap in CAPS.items():
        v = getattr(cfg, key)
        if v is not None and v > cap:
            raise DataError(f"{path}: model.{key} is {v:,}, more than {cap:,}; refused")
    if len(cfg.quantiles) > 99 or len(cfg.ridge_lambdas) > 1000:
        raise DataError(f"{path}: model.quantiles/ridge_lambdas: too many values")
    return cfg, _int(args, "n_features", path), _int(args, "horizon", path), _int(args, "seq_len", path)


def expected_tensors(cfg: ModelConfig, n_features: int, horizon: int, seq_len: int, path: Path) -> dict[str, tuple]:
    """{name: (dtype, shape)} of the state dict of the model ``cfg`` describes, built on the meta
    device (no memory); a DataError when it would have more than :data:`MAX_PARAMETERS` parameters."""
    try:
        with torch.device("meta"):
            model = build_model(cfg, n_features, horizon, seq_len)
    except (ConfigError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: describes no model that can be built ({' '.join(str(e).split())[:200]})") from None
    n = model.num_parameters()
    if n > MAX_PARAMETERS:
        raise DataError(f"{path}: describes a model of {n:,} parameters, more than {MAX_PARAMETERS:,}; refused")
    # buffers built, not loaded (the transformer's seq_len x hidden_size position table) take memory too
    b = sum(t.numel() for t in model.buffers())
    if n + b > MAX_PARAMETERS:
        raise DataError(f"{path}: describes a model of {n:,} parameters and {b:,} buffer values (seq_len x "
                        f"hidden_size), more than {MAX_PARAMETERS:,} in all; refused")
    variable = model.variable_shape_keys()
    return {k: (v.dtype, None if k in variable else tuple(v.shape)) for k, v in model.state_dict().items()}


def check_weights(path: Path, expected: dict[str, tuple]) -> None:
    """Compare the safetensors header of ``path`` with ``expected`` ({name: (dtype, shape or None
    for a tensor whose length is the data's)}) before reading any weight: the same names, dtypes and
    shapes, and byte ranges that tile the file exactly."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise DataError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise DataError(f"{path}: header of {n:,} bytes in a file of {size:,}; not a safetensors file")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, RecursionError) as e:
        raise DataError(f"{path}: unreadable safetensors header ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise DataError(f"{path}: unreadable safetensors header")
    header.pop("__metadata__", None)
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        raise DataError(f"{path}: tensors do not match config.json (missing {shown(missing)}, unexpected {shown(extra)})")
    spans = []
    for name, (dtype, shape) in expected.items():
        info = header[name]
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str) or DTYPES.get(info["dtype"]) is None:
            raise DataError(f"{path}: tensor {name}: unreadable entry {shown(info)}")
        got_dtype, got_shape, offsets = DTYPES[info["dtype"]], info.get("shape"), info.get("data_offsets")
        if got_dtype != dtype:
            raise DataError(f"{path}: tensor {name} is {info['dtype']}, config.json needs {dtype}")
        if not (isinstance(got_shape, list) and all(isinstance(s, int) and s >= 0 for s in got_shape)):
            raise DataError(f"{path}: tensor {name}: bad shape {shown(got_shape)}")
        if shape is not None and tuple(got_shape) != shape:
            raise DataError(f"{path}: tensor {name} has shape {tuple(got_shape)}, config.json needs {shape}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise DataError(f"{path}: tensor {name}: bad data_offsets {shown(offsets)}")
        nbytes = math.prod(got_shape) * torch.empty((), dtype=got_dtype).element_size()
        if offsets[1] - offsets[0] != nbytes:
            raise DataError(f"{path}: tensor {name}: {offsets[1] - offsets[0]} bytes of data for {nbytes} needed")
        spans.append(tuple(offsets))
    spans.sort()
    end = 0
    for a, b in spans:
        if a != end:
            raise DataError(f"{path}: tensor data overlaps or leaves gaps (at byte {a})")
        end = b
    if 8 + n + end != size:
        raise DataError(f"{path}: {size:,} bytes, the header describes {8 + n + end:,}")


def load_weights(folder: Path, expected: dict[str, tuple], map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """The checked weights of ``folder``: header first (:func:`check_weights`), then the tensors,
    refused when one holds a NaN or an infinity."""
    path = regular_file(folder, "model.safetensors", 1 << 62)
    check_weights(path, expected)
    try:
        state = load_file(str(path), device=map_location)
    except Exception as e:  # safetensors' own error type; anything it cannot parse
        raise DataError(f"{path}: unreadable ({' '.join(str(e).split())[:200]})") from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(f"{path}: tensor {name} holds NaN or infinite values; refused")
    return state


def _finite_list(v: Any, n: int, where: str, positive: bool = False) -> list[float]:
    if not isinstance(v, list) or len(v) != n:
        raise DataError(f"{where}: expected a list of {n} numbers, got {shown(v)}")
    a = np.asarray([x if isinstance(x, (int, float)) and not isinstance(x, bool) else np.nan for x in v], np.float64)
    if not np.isfinite(a).all() or (positive and not (a > 0).all()):
        raise DataError(f"{where}: every value must be a finite number{' > 0' if positive else ''}, got {shown(v)}")
    return v


def check_preprocessing(folder: str | Path, n_features: int, horizon: int, seq_len: int) -> dict[str, Any]:
    """``folder/preprocessing.json``, checked against the model (its feature count, horizon and
    window): types, the feature columns of its features, finite scaler statistics with positive
    scales of the right length, a finite positive target scale, a valid data section, the
    walk-forward fold of a fold's model (:class:`hftraining.data.splits.Fold`) and a per-symbol
    split's cut dates (:func:`hftraining.data.pipeline.check_symbol_split_dates`) and the record of
    the rows training read (:func:`hftraining.data.provenance.check_source_rows`)."""
    path = Path(folder) / "preprocessing.json"
    where = str(path)
    pre = read_json(folder, "preprocessing.json")
    if not isinstance(pre, dict):
        raise DataError(f"{path}: expected a JSON object")
    for key in ("features", "feature_columns", "scaler", "target_scale", "seq_len", "horizon", "data"):
        if key not in pre:
            raise DataError(f"{path}: missing key {key!r}")
    try:
        features = check_value(pre["features"], list[str], f"{where}: features")
        columns = check_value(pre["feature_columns"], list[str], f"{where}: feature_columns")
        raw = saved_data_section(pre["data"])  # empty text an older version accepted, read as it read it
        data = section_from_dict(DataConfig, {**raw, "features": features} if isinstance(raw, dict) else raw, f"{where}: data")
        validate(Config(data=data))
        if feature_columns(features) != columns:
            raise DataError(f"{path}: feature_columns {shown(columns)} are not the columns of features {shown(features)}")
        if "fold" in pre:  # a walk-forward fold's model: scored on that fold's test block only
            Fold.from_dict(pre["fold"])
        if "symbol_split_dates" in pre:  # a per_symbol split's model: each symbol's own cut dates
            check_symbol_split_dates(pre["symbol_split_dates"], "")
    except (ConfigError, ValueError, KeyError) as e:
        raise DataError(f"{path}: {' '.join(str(e).split())[:300]}") from None
    # the rows training read (evaluate compares the data read again with them)
    recorded = check_source_rows(pre["source_rows"], where) if "source_rows" in pre else {}
    if "symbol_bar_seconds" in pre:  # named with the folder's path (Preprocessing.from_dict says preprocessing.json)
        check_symbol_bar_seconds(pre["symbol_bar_seconds"], str(path))
    if "closures" in pre:
        check_closures(pre["closures"], str(path))
    check_label_version(pre.get("label_version", 1), data.target, path)
    last = [ns for _, ns, _ in recorded.values()] or None  # each symbol's last stamp, int64 ns UTC
    check_calendar_version(pre.get("calendar_version", 1), features, data.timezone, pre.get("bar_seconds"), str(path),
                           stamps=last)
    if len(columns) != n_features:
        raise DataError(f"{path}: feature_columns has {len(columns)} names, the model takes {n_features} features")
    if pre["seq_len"] != seq_len or pre["horizon"] != horizon:
        raise DataError(f"{path}: seq_len/horizon {shown(pre['seq_len'])}/{shown(pre['horizon'])} differ from the "
                        f"model's {seq_len}/{horizon}")
    ts = pre["target_scale"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts <= 0:
        raise DataError(f"{path}: target_scale must be a finite number > 0, got {shown(ts)}")
    sc = pre["scaler"]
    if not isinstance(sc, dict) or sc.get("kind") not in ("standard", "robust") or not isinstance(sc.get("per_symbol"), bool) \
            or not isinstance(sc.get("params"), dict) or not sc["params"]:
        raise DataError(f"{path}: scaler: expected {{kind: standard|robust, per_symbol, params}}, got {shown(sc)}")
    for name, p in sc["params"].items():
        if not isinstance(p, dict):
            raise DataError(f"{path}: scaler.params.{shown(name)}: expected {{center, scale}}")
        _finite_list(p.get("center"), n_features, f"{path}: scaler.params.{name}.center")
        _finite_list(p.get("scale"), n_features, f"{path}: scaler.params.{name}.scale", positive=True)
    return pre


def check_label_version(v: Any, target: str, path: Path) -> None:
    """A model trained on labels of a formula this version no longer computes (``label_version``, 1
    when absent, below the version that changed ``target``'s formula: :data:`~hftraining.data.labels.CHANGED_IN`)
    or of a newer one is a DataError: the past labels are one of its inputs, and its forecasts are in
    the old label's units."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{path}: label_version must be a positive integer, got {shown(v)}")
    if v > LABEL_VERSION:
        raise DataError(f"{path}: label_version {v} was written by a newer hftraining (this one computes labels of "
                        f"version {LABEL_VERSION}); upgrade hftraining to load it")
    if v < CHANGED_IN.get(target, 1):
        raise DataError(f"{path}: trained on data.target={target} labels of label_version {v}, whose formula has "
                        f"changed since (version {CHANGED_IN[target]}: {target} {CHANGE_NOTE[target]}); "
                        "retrain the model")


def inside(folder: Path, member: Any, where: str) -> Path:
    """``folder/member`` for a relative path that stays inside ``folder`` (no ``..``, no absolute
    path, no link leading out); a DataError naming ``where`` otherwise."""
    if not isinstance(member, str) or not member or os.path.isabs(member):
        raise DataError(f"{where}: member {shown(member)} is not a path inside the ensemble folder")
    path = folder / member
    if not _resolved(path, f"{where}: member {shown(member)}").is_relative_to(_resolved(folder)):
        raise DataError(f"{where}: member {shown(member)} leads outside the ensemble folder; refused")
    return path


INTERVALS_FILE = "intervals.json"
"""The conformal calibration of a model folder (:class:`hftraining.models.intervals.Calibration`)."""


def read_calibration(folder: str | Path, horizon: int, quantile_levels: list[float]) -> Calibration | None:
    """The calibration saved in ``folder`` (None when the folder has none), checked as untrusted
    input: a DataError naming the file and key for anything a forecast could not use."""
    folder = Path(folder)
    if not (folder / INTERVALS_FILE).exists() and not (folder / INTERVALS_FILE).is_symlink():
        return None  # a link that leads nowhere (or in a loop) is read, and refused, below: never silently absent
    path = folder / INTERVALS_FILE
    raw = read_json(folder, INTERVALS_FILE)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object")
    for key in ("method", "levels", "radius", "n"):
        if key not in raw:
            raise DataError(f"{path}: missing key {key!r}")
    if raw["method"] not in METHODS:
        raise DataError(f"{path}: method must be one of {', '.join(METHODS)}, got {shown(raw['method'])}")
    levels = raw["levels"]
    if not (isinstance(levels, list) and levels and all(
            isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q < 1 for q in levels)):
        raise DataError(f"{path}: levels must be numbers in (0, 1), got {shown(raw['levels'])}")
    # each level is served as the columns lower_<pct>/upper_<pct>: two levels that print alike (listed
    # twice, or 0.9 and 0.9000001) would share them, one level's bounds silently overwriting the other's
    # (evaluation.intervals refuses the same in a config)
    seen: dict[str, float] = {}
    for q in levels:
        pct = f"{q * 100:g}"
        if pct in seen:
            raise DataError(f"{path}: levels {shown(seen[pct])} and {shown(q)} would share the forecast columns "
                            f"lower_{pct}/upper_{pct}; keep one")
        seen[pct] = q

    def table(key: str, rows: int, cols: int, low: float = 0.0) -> None:
        v = raw.get(key)
        ok = isinstance(v, list) and len(v) == rows and all(isinstance(r, list) and len(r) == cols for r in v)
        if ok:
            flat = [x for r in v for x in r]
            ok = all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= low)
                     for x in flat)
        if not ok:
            raise DataError(f"{path}: {key} must be {rows} lists of {cols} numbers >= {low:g} (null: unbounded)")

    # cqr: a quantile head wider than it needs on validation shrinks its band (Romano et al.), a negative radius
    table("radius", len(levels), horizon, low=-math.inf if raw["method"] == "cqr" else 0.0)
    n = raw["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"{path}: n must be a non-negative integer (calibration windows), got {shown(n)}")
    if raw["method"] == "aci":
        table("grid", horizon, GRID)
        table("alpha", len(levels), horizon, low=-math.inf)
        if any(any(a is not None and b is not None and b < a for a, b in zip(r, r[1:])) for r in raw["grid"]):
            raise DataError(f"{path}: grid: every step's scores must be in increasing order")
        gamma = raw.get("gamma")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma < 1:
            raise DataError(f"{path}: gamma must be a number in [0, 1) (the ACI step), got {shown(gamma)}")
    if raw["method"] == "cqr":
        pairs = raw.get("q_pairs")
        want = [cqr_pair(quantile_levels, q) for q in levels]
        if not (isinstance(pairs, list) and len(pairs) == len(levels)
                and all(isinstance(p, list) and w is not None and tuple(p) == w for p, w in zip(pairs, want))):
            raise DataError(f"{path}: q_pairs must name, per level, the model's quantile levels (1 - level)/2 "
                            f"and (1 + level)/2, lower first: {[list(w) if w else None for w in want]}")
    try:
        return Calibration.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {e}") from None
