"""ONNX export of a model (or ensemble) folder: ``hftraining export MODEL_DIR --format onnx --out FILE``.

The graph takes the scaled inputs the model sees and returns forecasts in the label's units (log
returns unless the model was trained on another ``data.target``, named in the preprocessing):

    inputs   x     (batch, seq_len, n_features) float32  scaled features (preprocessing.json's scaler)
             past  (batch, seq_len)             float32  label of each row (data.target; by default the 1-step log return) / target_scale
    outputs  prediction   (batch, horizon)      float32  forecast log returns (labels of another data.target)
             quantiles    (batch, horizon, Q)   float32  forecast quantiles of the label (log returns by default; quantile head)
             class_probs  (batch, horizon, 3)   float32  sell / hold / buy probabilities (buy/hold/sell head)

The graph computes in fp32 (metadata ``hftraining.precision``): a model evaluated in bf16 forecasts
through predict and serve in bf16, so those forecasts and the graph's differ by bf16 rounding.
The batch axis is dynamic; every window is whole (``seq_len`` rows, no padding mask). A model
trained with ``data.min_history`` below ``seq_len`` forecasts shorter histories through ``predict``
and ``serve``, which pass the padding mask; the graph does not take one. The file's metadata (``metadata_props``) holds the preprocessing as JSON
(``hftraining.preprocessing``) so that a consumer can rebuild the inputs, how to build them from a symbol's
rows (``hftraining.inputs``: the feature columns of ``x`` and the rule that scales them, the label ``past``
holds and its ``target_scale``, the rows a window takes), the output names and, with
``class_probs``, the ``model.classification_threshold`` that cuts its classes (``hftraining.classification_threshold``).

The conformal intervals that ``predict`` and ``serve`` give beside a forecast (the folder's ``intervals.json``)
are not computed by the graph but are in its metadata, ``hftraining.intervals`` (JSON; ``null`` for a model
without them), in the label's units::

    {"method": "split" | "aci" | "cqr", "levels": [0.8, 0.9], "calibration_windows": n,
     "columns": [["lower_80", "upper_80"], ...],     the forecast columns predict and serve name them by
     "radius": [[r_1, ..., r_H], ...],               (levels, horizon); null: unbounded (-inf, +inf)
     "around": "prediction" | "quantiles",
     "quantile_indices": [[lo, hi], ...],            cqr: the quantiles output's columns of each level
     "rule": the bounds in words}

split and aci: ``prediction[:, h] ± radius[k][h]`` (aci at the miss rate saved with the model, as predict and
serve apply it: the graph's consumer sees no outcomes to adapt it by); cqr: ``quantiles[:, h, lo] −
radius[k][h]`` and ``quantiles[:, h, hi] + radius[k][h]``, both their midpoint where the lower exceeds the upper.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). The older
TorchScript exporter cannot export PatchTST (``Unfold`` with a dynamic size) and drops the ``past``
input of models that ignore it; the dynamo exporter handles every model of the registry.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hftraining.core.errors import DataError, UserError, WriteError, io_cause, is_io_error
from hftraining.core.files import process_ended
from hftraining.data.labels import UNITS
from hftraining.data.scaling import GLOBAL
from hftraining.inference.ensemble import member_precision
from hftraining.inference.forecaster import Forecaster, bound_columns
from hftraining.models.predict import class_threshold

OPSET = 18
TOLERANCE = 1e-4


class OnnxForecaster(nn.Module):
    """A model's forward as plain tensors in log-return units (what the ONNX graph computes)."""

    def __init__(self, model: nn.Module, target_scale: float, n_quantiles: int, has_classes: bool):
        super().__init__()
        self.model = model.eval()
        self.target_scale = float(target_scale)
        self.n_quantiles, self.has_classes = n_quantiles, has_classes

    def output_names(self) -> list[str]:
        return ["prediction"] + (["quantiles"] if self.n_quantiles else []) + (["class_probs"] if self.has_classes else [])

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x, None, past)
        res = [out.prediction.float() * self.target_scale]  # (B, H)
        if self.n_quantiles:
            res.append(out.quantiles.float() * self.target_scale)  # (B, H, Q)
        if self.has_classes:
            res.append(torch.softmax(out.class_logits.float(), dim=-1))  # (B, H, 3)
        return tuple(res)


def units(target: str) -> str:
    """The file's ``hftraining.units``: what the outputs and the ``past`` input hold for a model of
    ``data.target`` ``target`` (a label other than ``return`` is not the symbol's own log return)."""
    if target == "return":
        out, past = "log returns", "each row's 1-step log return of the close"
    else:
        out, past = f"{UNITS[target]} (data.target={target} labels)", f"each row's data.target={target} label"
    return (f"{out} (prediction, quantiles); probabilities sell/hold/buy (class_probs); "
            f"input past: {past} / target_scale (hftraining.preprocessing)")


def inputs_metadata(fc: Forecaster) -> dict[str, Any]:
    """``hftraining.inputs`` of the file: what its inputs hold, to be built from a symbol's rows as
    predict and serve build them. ``x`` takes the features scaled by the model's scaler, not the
    features as ``hftraining data features`` writes them: raw features give other forecasts without a word."""
    pre = fc.preprocessing
    d = pre.data_config()
    cols, seq_len = list(pre.feature_columns), int(pre.seq_len)
    per_symbol = bool(pre.scaler.per_symbol)
    params = ("scaler.params[<symbol>] of hftraining.preprocessing (the scaler was fit per symbol: a symbol "
              "without its own statistics cannot be forecast)" if per_symbol
              else f"scaler.params[{GLOBAL!r}] of hftraining.preprocessing (one scaler for every symbol)")
    label = ("each row's 1-step log return of the close, log(close[t] / close[t-1])" if d.target == "return"
             else f"each row's data.target={d.target} label")
    return {
        "x": {
            "shape": ["batch", seq_len, len(cols)],
            "columns": cols,
            "scaled": True,
            "scaler_params": "symbol" if per_symbol else GLOBAL,
            "rule": (f"x[b, t, j] = (feature columns[j] of row t - center[j]) / scale[j], center and scale those of "
                     f"{params}; the features as `hftraining data features` computes them under the model's data "
                     "section (hftraining.preprocessing's data), not scaled"),
        },
        "past": {
            "shape": ["batch", seq_len],
            "target_scale": float(pre.target_scale),
            "rule": f"past[b, t] = label of row t / target_scale; the label: {label}",
        },
        "rows": (f"the latest {seq_len} rows of one symbol, oldest first: row {seq_len - 1} is the forecast's as_of, "
                 "and prediction[:, h] forecasts the label of the (h + 1)-th bar after it; every row real (no padding mask)"),
    }


def intervals_metadata(fc: Forecaster) -> dict[str, Any] | None:
    """``hftraining.intervals`` of the file (see the module's docstring): the radius of each level and step
    that predict and serve put around the forecast of ``fc`` (its ``intervals.json`` as it stands); None
    without intervals."""
    cal = fc.calibration
    if cal is None:
        return None
    horizon = fc.preprocessing.horizon
    if cal.method == "cqr":
        radius = np.asarray(cal.radius, dtype=np.float64)  # (K, H), around the quantile pair (may be negative)
    else:  # split: the radius; aci: the radius at its saved α, as Calibration.bounds applies it
        zero = np.zeros((1, horizon))
        radius = np.stack([hi[0] for _, hi in cal.bounds(zero).values()])  # (K, H)
    cqr = cal.method == "cqr"
    rule = ("lower = quantiles[:, h, lo] - radius[k][h], upper = quantiles[:, h, hi] + radius[k][h] "
            "(quantile_indices[k] = [lo, hi]; where lower > upper, both are their midpoint)" if cqr else
            "lower = prediction[:, h] - radius[k][h], upper = prediction[:, h] + radius[k][h]")
    return {
        "method": cal.method,
        "levels": [float(q) for q in cal.levels],
        "calibration_windows": int(cal.n),
        "columns": [list(bound_columns(q)) for q in cal.levels],
        "radius": [[float(r) if math.isfinite(r) else None for r in row] for row in radius.tolist()],
        "around": "quantiles" if cqr else "prediction",
        "quantile_indices": [list(map(int, p)) for p in cal.q_pairs] if cqr else None,
        "rule": f"{rule}; step h = 0..{horizon - 1}, level k as in levels; a null radius is unbounded (-inf, +inf); "
                + ("aci's radius at the miss rate saved with the model (it adapts no further); " if cal.method == "aci" else "")
                + "units: those of prediction",
    }


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UserError(f"export needs {module}: pip install -e '.[export]' (in the hftraining checkout)") from None


def wrapper_for(model_dir: str | Path) -> tuple[OnnxForecaster, Forecaster]:
    """(OnnxForecaster, Forecaster) of a model/run/ensemble folder. The Forecaster is in fp32, as the graph
    computes: at a run's bf16 it would warn, as it loads on a CPU without bf16 instructions, of a slow
    software forward that an export never runs."""
    fc = Forecaster.from_pretrained(model_dir, precision="fp32")
    w = OnnxForecaster(fc.model, fc.preprocessing.target_scale, len(fc.quantile_levels), fc.has_classes)
    return w, fc


def example_inputs(fc, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pre = fc.preprocessing
    return (torch.randn(batch, pre.seq_len, len(pre.feature_columns), generator=g),
            torch.randn(batch, pre.seq_len, generator=g))


def export_onnx(model_dir: str | Path, out: str | Path, check: bool = True) -> Path:
    """Write ``model_dir``'s model as ONNX to ``out``; with ``check``, run ONNX Runtime on random
    inputs (batch 1 and 3) and require every output within 1e-4 of PyTorch's. The file is written
    beside ``out`` and renamed onto it once checked: a failed export leaves an earlier ``out`` as it was."""
    _require("onnx")
    _require("onnxscript")
    w, fc = wrapper_for(model_dir)
    members = list(getattr(fc.model, "members", [fc.model]))
    closed = next((m for m in members if not m.exportable), None)
    if closed is not None:
        raise UserError(f"{model_dir}: model.type {closed.cfg.type!r} has no ONNX graph (gradient-boosted trees); "
                        "serve it with `hftraining serve` or predict with `hftraining predict`")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise DataError(f"--out {out}: expected a .onnx file name")
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; expected a .onnx file name")
    evaluated = _evaluated_precision(model_dir, fc)  # read before writing: a failure to read it is no write's
    # written and checked beside ``out``, then renamed onto it: a graph that fails the check (or an export
    # stopped half-way) never lies at ``out``, and an earlier file there stays as it was until then. A link
    # (current.onnx -> v3.onnx) stays a link: the file it names is the one replaced, as a write through it did
    dest = Path(os.path.realpath(out)) if out.is_symlink() else out
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}.onnx"
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            for stale in dest.parent.glob(f".{glob.escape(dest.name)}.tmp-*.onnx*"):
                if _left_behind(stale):  # by an export that was killed; not another one's still writing
                    stale.unlink(missing_ok=True)
            _write_checked(w, fc, tmp, out, check, evaluated)
            os.replace(tmp, dest)
        except Exception as e:  # named as given: a folder made read-only named the hidden file, or its folder alone
            if not is_io_error(e):
                raise
            name = getattr(e, "filename", None)  # a folder of the way to --out (one that is a file): named too
            where = f"{name}: " if name and not Path(name).name.startswith(f".{dest.name}.tmp-") else ""
            raise WriteError(f"--out {out}: cannot write ({where}{io_cause(e)})") from None
    finally:
        with contextlib.suppress(OSError):  # a folder that is not there or not one: the failure above says why
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)  # weights over 1.5 GB: inlined by onnx.load
    return out


def _left_behind(path: Path) -> bool:
    """Whether the temporary file ``path`` (``.NAME.tmp-PID.onnx``, ``.data`` beside it) is of an export that
    no longer runs: another export to the same --out at the same time writes and checks its own, which
    removing would fail."""
    return process_ended(path.name.rsplit(".tmp-", 1)[-1].split(".")[0])


def _evaluated_precision(model_dir: str | Path, fc: Forecaster) -> str:
    """The precision the run of ``model_dir`` (an ensemble: its members', recorded in ensemble.json) was
    evaluated in, which predict and serve forecast in (a member folder of an ensemble: the one that ensemble recorded,
    :func:`~hftraining.inference.ensemble.member_precision`): ``fc`` is in the graph's fp32 (:func:`wrapper_for`)."""
    return fc.model.precision if hasattr(fc.model, "members") else member_precision(Path(model_dir))


def _write_checked(w: OnnxForecaster, fc: Forecaster, path: Path, out: Path, check: bool, evaluated: str) -> None:
    """Export ``w`` (the model of ``fc``) to ``path`` with its metadata; with ``check``, require ONNX
    Runtime's outputs within :data:`TOLERANCE` of PyTorch's on random inputs (batch 1 and 3): a
    UserError naming ``out``, the file it is written for, otherwise."""
    import onnx

    x, past = example_inputs(fc)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    names = w.output_names()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and similar notices
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                w, (x, past), dynamo=True, opset_version=OPSET, verbose=False,
                input_names=["x", "past"], output_names=names,
                dynamic_shapes={"x": {0: batch}, "past": {0: batch}},
            )
    finally:
        quiet.setLevel(level)
    program.save(str(path))
    proto = onnx.load(str(path))
    meta = {
        "hftraining.preprocessing": json.dumps(fc.preprocessing.to_dict()),
        "hftraining.outputs": json.dumps(names),
        "hftraining.quantile_levels": json.dumps(fc.quantile_levels),
        "hftraining.units": units(fc.preprocessing.data_config().target),
        # how x and past are built: x takes the scaled features, past the labels / target_scale
        "hftraining.inputs": json.dumps(inputs_metadata(fc)),
        # the conformal intervals predict and serve give: the graph computes the forecast, these the band around it
        "hftraining.intervals": json.dumps(intervals_metadata(fc)),
        # what sell/hold/buy mean: the future return below -threshold, within ±, above + (log-return units)
        **({"hftraining.classification_threshold": json.dumps(class_threshold(fc.model))} if fc.has_classes else {}),
        # the graph computes in fp32; predict, serve and evaluate use the run's precision (bf16 on a
        # bf16-trained model), so their forecasts differ from the graph's by bf16 rounding
        "hftraining.precision": "fp32 (the run evaluated in " + evaluated + ")",
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            logging.getLogger("hftraining").warning("onnxruntime is not installed: export not checked")
            return
        for b in (1, 3):
            err = max_abs_difference(w, path, *example_inputs(fc, b, seed=b))
            if not err <= TOLERANCE:
                raise UserError(f"{out}: ONNX Runtime differs from PyTorch by {err:.3g} (> {TOLERANCE}) at batch {b}")


def onnx_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_abs_difference(w: OnnxForecaster, path: str | Path, x: torch.Tensor, past: torch.Tensor) -> float:
    """Largest |ONNX Runtime − PyTorch| over every output for inputs (x, past); +inf when the graph
    returns another number of outputs, an output of another shape, or a NaN or infinity on either side
    (a NaN compares as no difference at all: ``nan > 1e-4`` is False, and ``max`` skips it)."""
    sess = onnx_session(path)
    with torch.no_grad():
        ref = [t.numpy() for t in w(x, past)]
    got = sess.run(None, {"x": x.numpy(), "past": past.numpy()})
    if len(got) != len(ref):
        return float("inf")
    err = 0.0
    for g, r in zip(got, ref):
        g, r = np.asarray(g, dtype=np.float64), np.asarray(r, dtype=np.float64)
        if g.shape != r.shape or not (np.isfinite(g).all() and np.isfinite(r).all()):
            return float("inf")
        err = max(err, float(np.abs(g - r).max(initial=0.0)))
    return err
