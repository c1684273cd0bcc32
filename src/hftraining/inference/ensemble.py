"""Ensembles of models that share one preprocessing (``train --seeds N`` makes them: see
:mod:`hftraining.workflows.seeds`).

An ensemble folder is plain JSON plus copies of its members' model folders (copied, not
referenced, so the folder can be moved or served on its own)::

    ensemble.json          {"format_version", "method", "weights", "members": [...], "sources", "validation_mse",
                            "evaluation": the evaluation settings the members' runs share, or null,
                            "precision": the members' runs' autocast precision, or null,
                            "member_digests": each member's files as copied (:data:`DIGESTS_KEY`),
                            "member_metrics": each member's run's test and validation figures (:data:`METRICS_KEY`)}
    preprocessing.json     the members' common preprocessing (data.embargo the largest of theirs)
    members/member-0/      config.json, model.safetensors, preprocessing.json of member 0 (and its run's card, README.md)
    members/member-1/      ...
    intervals.json         the ensemble's own conformal intervals, when its first member has them
    README.md              the ensemble's own description: members, weights, where they were copied from
    data_report.json       the data report the members' runs share, when they are runs' and share one

``Forecaster.from_pretrained(folder)`` loads it and predicts like a single model: the combined
forecast is the mean, median or weighted mean of the members' forecasts (scaled target units);
quantiles combine the same way (quantile averaging); buy/hold/sell probabilities are averaged
(with the weights for ``weighted``) when the members share one ``model.classification_threshold``
(other thresholds are other classes: the ensemble then forecasts none, as with other quantile
levels). It forecasts under the autocast precision its members' runs trained and scored in
(:data:`PRECISION_KEY`), so each member's part is the forecast that member's eval.json scored.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hftraining.core.config import DataConfig, EvaluationConfig, at_evaluation, section_from_dict, shown
from hftraining.core.errors import ConfigError, DataError
from hftraining.core.files import replace_folder
from hftraining.core.jsonio import read_jsonl, write_json
from hftraining.data.features import calendar_rule_matters
from hftraining.data.pipeline import Preprocessing, apply
from hftraining.inference.folders import (
    ENSEMBLE_NAME,
    FITTED_BASELINES_DIR,
    baselines_dir,
    check_training_data,
    is_ensemble,
    resolve_model_dir,
    run_config_section,
    run_folder,
    run_precision,
)
from hftraining.models import ForecastModel, ForecastOutput, folder, load_preprocessing
from hftraining.models.base import CONFIG_NAME, PREPROCESSING_NAME, WEIGHTS_NAME
from hftraining.models.intervals import Calibration, aci_bounds, calibrate_windows
from hftraining.models.predict import PRECISIONS, predict_outputs, predict_scaled

METHODS = ("mean", "median", "weighted")
FORMAT_VERSION = folder.FORMAT_VERSION
# preprocessing keys that must agree between members for them to see the same inputs
SHARED_KEYS = ("features", "feature_columns", "scaler", "target_scale", "seq_len", "horizon", "symbol_split_dates")
# the keys of SHARED_KEYS fit on (or cut from) the rows of the symbols training read
SYMBOL_FIT_KEYS = ("scaler", "target_scale", "symbol_split_dates")
# data keys that decide which rows and windows a member forecasts from, and what its label is
SHARED_DATA_KEYS = ("target", "min_history", "max_gap", "price_adjustment", "split_dates")
# the validation rules that decide which rows of new data a member forecasts from (the ensemble applies the
# first member's): compared with a key a folder of an older version lacks at its default
SHARED_ROW_RULES = ("invalid_values", "ohlc_violations", "duplicate_timestamps", "unsorted_timestamps", "jumps")
EVALUATION_KEY = "evaluation"
"""The key of ensemble.json that holds the evaluation section its members' runs were trained with (null
when they were not all runs or their sections differ): ``evaluate`` and ``backtest`` of the ensemble use
it, as a run's config.json for a run. Only the keys that act on a trained model are recorded
(:func:`~hftraining.core.config.at_evaluation`): the others acted in the members' training.
A folder without it (written before it was recorded) is read as null."""
PRECISION_KEY = "precision"
"""The key of ensemble.json that holds the autocast precision (fp32, bf16, fp16) its members' runs trained
and scored their test split in, the ensemble's default precision (:attr:`EnsembleModel.precision`); null when
the members' runs differ in it (the ensemble then forecasts in fp32, as a folder written before it was
recorded, which has no such key)."""
DIGESTS_KEY = "member_digests"
"""The key of ensemble.json that holds, per member, the sha256 of the files its forecast is computed from
(:data:`MEMBER_FILES`) as they were copied: the weights of a ``weighted`` ensemble, its intervals and the
members' validation MSE were fit on those members, so a member whose files changed since (another run's
``final/`` copied over it) is refused as the folder loads, naming it, never served with the old weights
and intervals. A folder written before it was recorded has none and loads as before."""
MEMBER_FILES = (CONFIG_NAME, WEIGHTS_NAME, PREPROCESSING_NAME)
METRICS_KEY = "member_metrics"
"""The key of ensemble.json that holds, per member, the training metrics of the run it was copied from
(:func:`run_metrics`: its ``test`` figures from eval.json, the ``validation`` record of the step whose weights it
kept), or null for a member that is not a run's model: what ``GET /model`` serves as the ensemble's
``training_metrics``, since the folder is served apart from those runs. A folder written before it was recorded
has none."""
README_NAME = "README.md"
"""The ensemble folder's own description (:func:`ensemble_readme`): its members, weights and where they came
from. Each ``members/member-<k>/README.md`` is the card of the run that member was copied from."""
DATA_REPORT_NAME = "data_report.json"
"""The data report the members' runs share (:func:`members_data_report`), copied into the ensemble folder."""
MAX_METRICS_BYTES = 256 << 20
"""Largest ``metrics.jsonl`` and ``eval.json`` of a run that :func:`run_metrics` reads: an eval.json grows with
the symbols and the horizon (about 35 KB a symbol at horizon 24), past the 16 MiB of a model folder's JSON files."""
TEST_KEYS = ("split", "step", "weights_step", "n_windows", "horizon", "model", "mse_vs_zero", "verdict")
"""The keys of a run's eval.json that :func:`run_metrics` gives as its ``test`` metrics."""


class EnsembleModel(nn.Module):
    """Members' outputs combined: ``forward(x, mask, past) -> ForecastOutput`` like any model."""

    def __init__(self, members: list[ForecastModel], method: str, weights: list[float] | None = None,
                 precision: str = "fp32"):
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"ensemble method {method!r} is not one of {', '.join(METHODS)}")
        self.members = nn.ModuleList(members)
        self.method = method
        if method != "weighted" or weights is None:
            weights = [1.0] * len(members)
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.max()  # normalised in float64 first: weights near 1e308 or 1e-40 stay finite and nonzero in float32
        self.register_buffer("weights", torch.tensor(w / w.sum(), dtype=torch.float32), persistent=False)  # (M,)
        first = members[0]
        self.horizon, self.seq_len, self.n_features = first.horizon, first.seq_len, first.n_features
        levels = [list(m.cfg.quantiles) for m in members]
        self.quantile_levels = levels[0] if all(lv == levels[0] for lv in levels) else []
        # the classes cut the future return at ± the threshold: probabilities of other cuts are of other events
        thresholds = [m.cfg.classification_threshold for m in members]
        self.has_classes = thresholds[0] > 0 and all(t == thresholds[0] for t in thresholds)
        self.classification_threshold = thresholds[0] if self.has_classes else 0.0
        """The members' common ``model.classification_threshold`` (0: no buy/hold/sell probabilities)."""
        self.precision = precision
        """The autocast precision the members' runs scored in (:data:`PRECISION_KEY`): the forecaster's default."""

    def _combine(self, stacked: torch.Tensor) -> torch.Tensor:
        """(M, B, ...) → (B, ...)."""
        if self.method == "median":
            # the middle of the sorted members (the mean of the two middle ones for an even count), as
            # np.median; by a sort, which ONNX exports (torch.median over a dimension has no ONNX graph)
            s, m = stacked.sort(dim=0).values, len(self.members)
            return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) * 0.5
        # the first member's forecast plus the weighted deviations of all from it: the weighted mean (the
        # weights sum to 1), and members that agree combine to their forecast exactly (sum_i w_i x_i in
        # float32 came back up to an ulp off it for three copies of one model). float32 only: no float64
        # node in the ONNX graph, which runtimes such as TensorRT lack
        w = self.weights.to(stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
        return stacked[0] + ((stacked - stacked[0]) * w).sum(dim=0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None) -> ForecastOutput:
        outs = [m(x, mask, past) for m in self.members]
        res = ForecastOutput(prediction=self._combine(torch.stack([o.prediction.float() for o in outs])))  # (B, H)
        if self.quantile_levels:
            res.quantiles = self._combine(torch.stack([o.quantiles.float() for o in outs]))  # (B, H, Q)
        if self.has_classes:
            probs = torch.stack([torch.softmax(o.class_logits.float(), dim=-1) for o in outs])  # (M, B, H, 3)
            w = self.weights.view(-1, 1, 1, 1)  # uniform unless the method is ``weighted``
            # log of the averaged probabilities: softmax of these logits gives the average back
            res.class_logits = torch.log((probs * w).sum(dim=0).clamp_min(1e-12))
        return res


# ---------------------------------------------------------------------------------- checks


def _member_dir(path: str | Path) -> Path:
    d = resolve_model_dir(path)
    if is_ensemble(d):
        raise DataError(f"{path}: is an ensemble; members must be single model folders")
    return d


def check_shared_preprocessing(dirs: list[Path]) -> dict[str, Any]:
    """The members' common preprocessing dict (``data.embargo`` the largest of theirs: :func:`_widest_embargo`);
    a DataError naming the first key that differs."""
    pres = [load_preprocessing(d) for d in dirs]
    ref = pres[0]

    def same_data(d: Path, p: dict[str, Any], key: str) -> None:
        if (p.get("data") or {}).get(key) != (ref.get("data") or {}).get(key):
            raise DataError(f"{d}: preprocessing.json key data.{key} differs from {dirs[0]}'s "
                            f"({shown((p.get('data') or {}).get(key))} vs {shown((ref.get('data') or {}).get(key))}); ensemble members "
                            "must forecast from the same rows and windows, of the same label")

    for d, p in zip(dirs[1:], pres[1:]):
        same_data(d, p, "target")  # first: another label has another target scale, which would be named instead
        _same_clock(d, p, dirs[0], ref)  # before the scaler, whose statistics of the time features it shifts
        _same_symbols(d, p, dirs[0], ref)  # before the scaler, which other symbols' rows fit otherwise
        _same_split(d, p, dirs[0], ref)  # before the scaler, which other training rows fit otherwise (after the
        # symbols: other symbols cut a ratio split at other dates of their calendar, and are the cause to name)
        for key in SHARED_KEYS:
            if p.get(key) != ref.get(key):
                raise DataError(
                    f"{d}: preprocessing.json key {key!r} differs from {dirs[0]}'s; ensemble members must "
                    "share features, scaler, target scale, sequence length and horizon (train them on the same data)"
                )
        for key in SHARED_DATA_KEYS:  # members forecast from the first member's rows and windows
            same_data(d, p, key)
        v, ref_v = p.get("calendar_version", 1), ref.get("calendar_version", 1)
        if v != ref_v and calendar_rule_matters(ref.get("features") or [], (ref.get("data") or {}).get("timezone") or "UTC"):
            # the ensemble reads requests by the first member's rule: a member of another one would be fed its inputs
            raise DataError(f"{d}: preprocessing.json key 'calendar_version' differs from {dirs[0]}'s ({shown(v)} vs "
                            f"{shown(ref_v)}): their calendar/hour features read some stamps otherwise; ensemble members "
                            "must be trained by one version")
        rules, ref_rules = _row_rules(p), _row_rules(ref)
        key = next((k for k in rules if rules[k] != ref_rules[k]), None)
        if key is not None:  # another rule keeps other rows of the same data: not that member's own forecast
            raise DataError(f"{d}: preprocessing.json key data.{key} differs from {dirs[0]}'s ({shown(rules[key])} vs "
                            f"{shown(ref_rules[key])}); ensemble members must forecast from the same rows, so they "
                            "must be trained with the same validation rules")
    common = _widest_embargo(ref, pres)
    if any(p.get("grouping_version", 1) == 1 for p in pres):  # a member of the older grouping: refused where it differs
        common = {**common, "grouping_version": 1}  # (check_grouping_rule), never fed the first member's inputs
    return common


def _widest_embargo(ref: dict[str, Any], pres: list[dict[str, Any]]) -> dict[str, Any]:
    """``ref`` (the first member's preprocessing) with the largest ``data.embargo`` of the members' ``pres``:
    the ensemble's validation and test windows start after every member's embargo, whatever the order the
    members are given in (the first member's alone scored the ensemble on the rows another left out after
    its cuts, and the same members in another order on other windows). The members share their cut dates
    (:func:`_same_split`) and train on the rows before the first, so no other rows are trained on (an expanding or
    rolling fold's embargo ends its training rows earlier: members of other ones are refused there; purged k-fold's
    is after its test block, whose windows it leaves as they are); a stride thins the training windows only, and
    members of other strides combine as they are."""
    embargoes = [_data_key(p, "embargo") for p in pres]
    widest = _widest(embargoes)
    if widest == embargoes[0]:
        return ref
    return {**ref, "data": {**(ref.get("data") or {}), "embargo": widest}}


def _widest(embargoes: list[Any]) -> Any:
    """The largest of the members' ``data.embargo`` values (a value that is not an integer counts below 0)."""
    return max(embargoes, key=lambda e: e if isinstance(e, int) and not isinstance(e, bool) else -1)


def _widest_first(dirs: list[Path]) -> list[Path]:
    """The member folders ``dirs``, those of the largest ``data.embargo`` first (each group in the order given):
    the ensemble is scored on the windows of that embargo (:func:`_widest_embargo`), and the fitted baselines it
    carries are taken from the first of them that has them, fitted (ridge's penalty, LightGBM's rounds chosen) on
    those validation windows and scored in that run on the test windows the ensemble is scored on. The first
    member's were taken whatever its embargo: the same members in another order were judged against other
    baselines, with other figures and another Diebold-Mariano p-value."""
    embargoes = [_data_key(load_preprocessing(d), "embargo") for d in dirs]
    widest = _widest(embargoes)
    return [d for d, e in zip(dirs, embargoes) if e == widest] + [d for d, e in zip(dirs, embargoes) if e != widest]


DATA_KEY_DEFAULTS = {"split": "per_symbol"}
"""Defaults of the data keys that a folder lacking them was trained with, where they are not the
:class:`DataConfig` default: a folder written before calendar splits was cut by each symbol's rows (as
:meth:`Preprocessing.from_dict` reads it), not by the calendar that is the default since."""


def _data_key(pre: dict[str, Any], key: str) -> Any:
    """``data.<key>`` of a member's preprocessing (its default when the folder lacks it: :data:`DATA_KEY_DEFAULTS`,
    else the :class:`DataConfig` default)."""
    data = pre.get("data") if isinstance(pre.get("data"), dict) else {}
    return data.get(key, DATA_KEY_DEFAULTS.get(key, DataConfig.__dataclass_fields__[key].default))


SPLIT_KEYS = ("split", "split_dates")
"""The data keys that say where a member's training rows end and its validation and test rows start (with the
per-symbol cut dates ``symbol_split_dates`` and a walk-forward ``fold``)."""
FOLD_KEYS = ("train_ratio", "val_ratio", "start_date", "end_date")
"""The data keys that also cut a walk-forward fold's periods (its dates are shares of the calendar read)."""


def _same_split(d: Path, pre: dict[str, Any], first: Path, ref: dict[str, Any]) -> None:
    """A DataError naming the split setting in which the member ``d`` and the first member ``first`` differ
    (``data.split``, ``data.split_dates``, the per-symbol ``symbol_split_dates`` of one symbol, a walk-forward
    ``fold`` and the ratios and dates that cut it): the ensemble is scored on the first member's validation
    and test windows, and the dates one member trained on would be another's validation or test dates."""
    why = ("the rows one member trained on would be dated inside another's validation or test period, and the "
           "ensemble is scored on the first member's: ensemble members must be trained on one split")
    fold, ref_fold = pre.get("fold"), ref.get("fold")
    if fold != ref_fold:
        raise DataError(f"{d}: preprocessing.json key fold differs from {first}'s ({shown(fold)} vs "
                        f"{shown(ref_fold)}): {why}")
    for key in SPLIT_KEYS:
        mine, theirs = _data_key(pre, key), _data_key(ref, key)
        if mine != theirs:
            raise DataError(f"{d}: preprocessing.json key data.{key} differs from {first}'s ({shown(mine)} vs "
                            f"{shown(theirs)}): {why}")
    mine, theirs = pre.get("symbol_split_dates"), ref.get("symbol_split_dates")
    if mine != theirs:
        a, b = (x if isinstance(x, dict) else {} for x in (mine, theirs))
        sym = next((s for s in sorted({*a, *b}, key=str) if a.get(s) != b.get(s)), None)
        where = f"symbol_split_dates.{sym}" if sym is not None else "symbol_split_dates"
        raise DataError(f"{d}: preprocessing.json key {where} differs from {first}'s "
                        f"({shown(a.get(sym) if sym is not None else mine)} vs "
                        f"{shown(b.get(sym) if sym is not None else theirs)}): {why}")
    if fold is not None:
        for key in FOLD_KEYS:
            a, b = _data_key(pre, key), _data_key(ref, key)
            if a != b:
                raise DataError(f"{d}: preprocessing.json key data.{key} differs from {first}'s ({shown(a)} vs "
                                f"{shown(b)}), which cuts the periods of their walk-forward fold: {why}")
        a, b = _data_key(pre, "embargo"), _data_key(ref, "embargo")
        if a != b and not (isinstance(fold, dict) and fold.get("scheme") == "purged_kfold"):
            # an expanding or rolling fold's training rows end that many rows before its validation rows: other
            # training rows, whose scaler was named ('scaler' differs: "train them on the same data"). Purged
            # k-fold's embargo is after the test block: its members combine, scored after the widest
            raise DataError(f"{d}: preprocessing.json key data.embargo differs from {first}'s ({shown(a)} vs "
                            f"{shown(b)}), which ends the training rows of their walk-forward fold ({fold.get('scheme')}) "
                            "that many rows before its validation rows: they were trained on other rows; ensemble "
                            "members of a walk-forward fold must be trained with one data.embargo")


def _same_clock(d: Path, pre: dict[str, Any], first: Path, ref: dict[str, Any]) -> None:
    """A DataError naming ``data.timezone`` when the member ``d`` read its time features (``calendar``,
    ``hour``) on another clock than the first member ``first``: the ensemble computes every member's inputs
    in the first member's zone (New York's 09:30 bar is hour 14:30 in UTC), so that member's part would
    not be its own forecast. A zone that is always UTC's (``Etc/UTC``) reads as UTC; without time
    features the zone acts on no input, and members of other zones combine."""
    tz, ref_tz = ((q.get("data") or {}).get("timezone") or "UTC" for q in (pre, ref))
    specs = ref.get("features") or []
    if tz != ref_tz and (calendar_rule_matters(specs, tz) or calendar_rule_matters(specs, ref_tz)):
        raise DataError(f"{d}: preprocessing.json key data.timezone differs from {first}'s ({shown(tz)} vs "
                        f"{shown(ref_tz)}): their calendar/hour features read the clock of another zone; ensemble "
                        "members must be trained with the same data.timezone")


def trained_symbols(pre: dict[str, Any]) -> tuple[list[str], str] | None:
    """(the symbols a model of preprocessing ``pre`` was trained on, sorted; the key of preprocessing.json
    that says them): those training read (``source_rows``), else those its per-symbol scaler was fit on
    (``scaler.params``); None when its folder records neither."""
    scaler = pre.get("scaler") if isinstance(pre.get("scaler"), dict) else {}
    for key, names in (("source_rows", pre.get("source_rows")),
                       ("scaler.params", scaler.get("params") if scaler.get("per_symbol") else None)):
        if isinstance(names, dict) and names:
            return sorted(map(str, names)), key
    return None


def _same_symbols(d: Path, pre: dict[str, Any], first: Path, ref: dict[str, Any]) -> None:
    """A DataError naming the symbols the member ``d`` and the first member ``first`` were not both trained on:
    their scalers and target scale are fit on other rows, and the key that differs (``scaler``) said nothing of
    why. Members that record no symbols are compared by those keys alone, and so are members whose
    :data:`SYMBOL_FIT_KEYS` agree: a symbol only one of them read gave no row to fit (its rows all after the
    validation cut, with one scaler for all symbols), so both members see the same inputs and combine as they are."""
    mine, theirs = trained_symbols(pre), trained_symbols(ref)
    if mine is None or theirs is None or mine[0] == theirs[0]:
        return
    if all(pre.get(key) == ref.get(key) for key in SYMBOL_FIT_KEYS):
        return

    def listed(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")

    only, missing = sorted(set(mine[0]) - set(theirs[0])), sorted(set(theirs[0]) - set(mine[0]))
    parts = ([f"on {listed(only)}, which {first} was not"] if only else []) + (
        [f"not on {listed(missing)}, which {first} was"] if missing else [])
    raise DataError(f"{d}: trained {' and '.join(parts)} (preprocessing.json: {mine[1]}); ensemble members must be "
                    "trained on the same symbols (their scaler and target scale are fit on those symbols' rows)")


def _row_rules(pre: dict[str, Any]) -> dict[str, Any]:
    """The validation rules of :data:`SHARED_ROW_RULES` a member's preprocessing was fit with (a key its
    folder lacks at its default), and ``jump_threshold`` when jumps are dropped or refused (a flagged
    jump keeps its row)."""
    data = pre.get("data") if isinstance(pre.get("data"), dict) else {}
    fields = DataConfig.__dataclass_fields__
    out = {k: data.get(k, fields[k].default) for k in SHARED_ROW_RULES}
    threshold = data.get("jump_threshold", fields["jump_threshold"].default)
    if out["jumps"] != "flag" and isinstance(threshold, (int, float)) and threshold <= 0:
        out["jumps"] = "flag"  # a threshold of 0 checks no jump: every row kept, as when jumps are flagged
    if out["jumps"] != "flag":
        out["jump_threshold"] = threshold
    return out


def combined_outputs(models: list[ForecastModel]) -> tuple[str, ...]:
    """The outputs of :func:`~hftraining.models.predict.predict_outputs` that an ensemble of ``models`` combines
    (as :class:`EnsembleModel` does): ``prediction``; ``quantiles`` when the members share their levels;
    ``class_probs`` when they share one ``model.classification_threshold`` above 0."""
    levels = [list(m.cfg.quantiles) for m in models]
    thresholds = [m.cfg.classification_threshold for m in models]
    return ("prediction",) + (("quantiles",) if levels[0] and all(lv == levels[0] for lv in levels) else ()) + (
        ("class_probs",) if thresholds[0] > 0 and all(t == thresholds[0] for t in thresholds) else ())


def finite_member_outputs(d: Path, model: nn.Module, ws, batch_size: int, precision: str, outputs: tuple[str, ...],
                          method: str) -> dict[str, np.ndarray]:
    """:func:`~hftraining.models.predict.predict_outputs` of the member ``d`` (loaded as ``model``) for the
    validation windows ``ws``; a DataError naming ``d``, the outputs among ``outputs`` (those the ensemble
    combines) that are not finite and for how many windows, and why an ensemble of ``method`` refuses it: a
    folder written with it would fail at every forecast, naming the ensemble, not the member."""
    outs = predict_outputs(model, ws, batch_size, precision=precision)
    bad = sorted(k for k in outputs if k in outs and not np.isfinite(outs[k]).all())
    if bad:
        n = int(np.any([(~np.isfinite(outs[k])).reshape(len(outs[k]), -1).any(axis=1) for k in bad], axis=0).sum())
        if method == "weighted" and "prediction" in bad:
            why = "its validation MSE and its weight in a weighted ensemble are undefined"
        elif method == "median":  # the median of two is their mean; of more, the others' alone
            why = "a median of the members' forecasts is not finite either or silently leaves it out"
        else:
            why = f"every {'weighted ' if method == 'weighted' else ''}mean of the members' forecasts is not finite either"
        raise DataError(f"{d}: the model's forecasts are not finite numbers for {n} of the {len(ws)} validation "
                        f"window(s) (its {', '.join(bad)}), so {why}; its weights or preprocessing.json are broken: "
                        "leave it out of the ensemble")
    return outs


def validation_scores(dirs: list[Path], pre: dict[str, Any], outputs: tuple[str, ...] = ("prediction",)) -> list[float]:
    """Validation MSE (log-return units) of each member, on the validation split of its training data,
    forecast in the precision it forecasts in alone (its run's, or the ensemble's it is a member of:
    :func:`member_precision`), as its own ``evaluate --split val`` scores it. A member whose forecast of a validation window is not finite (its
    MSE inf, weight 0 and its NaN part of every combined forecast; or NaN, and so every weight), or whose
    other ``outputs`` the ensemble combines (:func:`combined_outputs`) are not, is a DataError naming it."""
    prep = Preprocessing.from_dict(pre)
    ws = _validation_windows(prep, dirs[0])
    batch_size = prep.data_config().eval_batch_size
    if len(ws) == 0:
        raise DataError(f"{dirs[0]}: the validation split of the training data yields no window (data.val_ratio)")
    true = ws.targets().astype(np.float64)
    scores = []
    for d in dirs:
        model = ForecastModel.from_pretrained(d)
        # MSE inf: weight 0, yet 0 x inf makes every combined forecast NaN; MSE NaN: every weight NaN
        pred = finite_member_outputs(d, model, ws, batch_size, member_precision(d), outputs,
                                     "weighted")["prediction"].astype(np.float64)
        scores.append(float(np.mean((pred - true) ** 2)) * pre["target_scale"] ** 2)
    return scores


def _validation_windows(pre: Preprocessing, first: Path):
    """The validation windows of the members' training data (the first member's ``first`` recorded
    ``data.data_dir``, read again): what a weighted ensemble's weights and its intervals are fit on. A
    relative data_dir that is not there from the current folder is a DataError naming ``first``'s
    preprocessing.json, not the bare path the reader would name."""
    check_training_data(pre.data_config().data_dir, str(first / "preprocessing.json"),
                        "run `hftraining ensemble` from the folder training ran in: a weighted ensemble's weights "
                        "and its intervals are fit on the members' validation split of that data")
    return apply(pre, None, "val")


def member_precision(d: Path) -> str:
    """The autocast precision the member folder ``d`` forecasts in: its run's (:func:`run_precision`; fp32 for a
    bare model folder), or, for a member of an ensemble folder (:func:`_ensemble_of`), the one that ensemble
    recorded and forecast it in (fp32 when it recorded none)."""
    if run_folder(d) is None and (of := _ensemble_of(d)) is not None:
        return of[1].get(PRECISION_KEY) or "fp32"
    return run_precision(d)


def member_evaluation(d: Path) -> tuple[Path, EvaluationConfig] | None:
    """(where they were read, the evaluation settings) the member folder ``d`` is scored with: its run's
    config.json, or, for a member of an ensemble folder (:func:`_ensemble_of`), those that ensemble recorded
    (:data:`EVALUATION_KEY`, the settings of its members' runs); None for a bare model folder, or a member of an
    ensemble that recorded none."""
    run = run_folder(d)
    if run is not None:
        return run, run_config_section(d, EvaluationConfig, EVALUATION_KEY)
    of = _ensemble_of(d)
    if of is None or of[1].get(EVALUATION_KEY) is None:
        return None
    return of[0], section_from_dict(EvaluationConfig, ensemble_evaluation(of[0]), EVALUATION_KEY)


def member_baselines(d: Path) -> Path | None:
    """The fitted baselines the member folder ``d`` was scored against: its run's ``baselines/``
    (:func:`baselines_dir`), or those the ensemble it is a member of carries (:func:`_ensemble_of`); None
    for a bare model folder."""
    fitted = baselines_dir(d)
    if fitted is None and (of := _ensemble_of(d)) is not None:
        fitted = of[0] / FITTED_BASELINES_DIR
    return fitted


def members_evaluation(dirs: list[Path]) -> dict[str, Any] | None:
    """The evaluation settings that act on a trained model (:func:`at_evaluation`; every such key, a missing
    one at its default) that the runs of the members ``dirs`` were trained with (for a member of an ensemble
    folder, those that ensemble recorded: :func:`member_evaluation`), when every member has them and they
    agree; else None, with a warning naming the member without them, or the first key that differs. Keys
    that acted during training only (``eval_steps``, ``max_val_windows``, ...) may differ. None, without a
    warning, when no member has them (bare model folders are evaluated with the defaults, alone too). A bad
    value in a run's config.json is a ConfigError naming the file and key."""
    found = [member_evaluation(d) for d in dirs]
    if all(f is None for f in found):
        return None
    log = logging.getLogger("hftraining")
    bare = next((d for d, f in zip(dirs, found) if f is None), None)
    if bare is not None:
        log.warning("ensemble: %s is a model folder without its run's config.json: the ensemble records no evaluation "
                    "settings and is evaluated with the defaults (pass --set evaluation.* to evaluate/backtest)", bare)
        return None
    runs = [f[0] for f in found]
    sections = [{k: v for k, v in dataclasses.asdict(f[1]).items() if at_evaluation(k)} for f in found]
    for r, sec in zip(runs[1:], sections[1:]):
        key = next((k for k in sections[0] if sec[k] != sections[0][k]), None)
        if key is not None:
            log.warning("ensemble: evaluation.%s differs between the members' runs (%s: %s, %s: %s): the ensemble records "
                        "no evaluation settings and is evaluated with the defaults (pass --set evaluation.* to "
                        "evaluate/backtest)", key, runs[0], shown(sections[0][key]), r, shown(sec[key]))
            return None
    return sections[0]


def members_precision(dirs: list[Path]) -> str | None:
    """The autocast precision the members ``dirs`` forecast in alone (:func:`member_precision`: their runs', or the
    ensemble's they are members of; fp32 for a bare model folder), when they agree; else None, with a warning naming
    two that differ (the ensemble then forecasts in fp32: exact for an fp32 member, within rounding of the others)."""
    precisions = [member_precision(d) for d in dirs]
    other = next((k for k, p in enumerate(precisions) if p != precisions[0]), None)
    if other is None:
        return precisions[0]
    logging.getLogger("hftraining").warning(
        "ensemble: the members forecast in different precisions (%s: %s, %s: %s): the ensemble records none and "
        "forecasts in fp32 (pass precision= to Forecaster.from_pretrained for another)",
        dirs[0], precisions[0], dirs[other], precisions[other])
    return None


# ---------------------------------------------------------------------------------- build / load


def member_digest(member: Path) -> str:
    """sha256 (hex) of the member folder's :data:`MEMBER_FILES`, each after its name and size, read as a
    model folder's files are (regular files inside it: :func:`hftraining.models.folder.regular_file`)."""
    h = hashlib.sha256()
    for name in MEMBER_FILES:
        path = folder.regular_file(member, name, 1 << 62)  # bounded by the model's own checks as it loaded
        try:
            with open(path, "rb") as fh:
                h.update(f"{name}\0{os.fstat(fh.fileno()).st_size}\0".encode())
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None
    return h.hexdigest()


_DIGEST_MEMO: contextvars.ContextVar[dict[Path, str] | None] = contextvars.ContextVar("member_digest_memo", default=None)
"""The digests of the members given to one :func:`build_ensemble` (:func:`_member_digest_once`), while it runs."""


def _member_digest_once(member: Path) -> str:
    """:func:`member_digest` of the member folder ``member`` (resolved), computed once while :func:`build_ensemble`
    runs: asked of each member for its precision, evaluation settings, validation MSE, figures, data report and
    fitted baselines, a member's weights (gigabytes of them) were read and hashed that many times; one digest also
    gives every question the same answer (the copies, hashed as written, are not hashed again as the ensemble
    loads to calibrate its intervals). Outside a build, computed each time: loading a folder reads its members."""
    memo = _DIGEST_MEMO.get()
    if memo is None:
        return member_digest(member)
    key = Path(member).resolve()
    if key not in memo:
        memo[key] = member_digest(member)
    return memo[key]


@contextlib.contextmanager
def _digests_once():
    token = _DIGEST_MEMO.set({})
    try:
        yield
    finally:
        _DIGEST_MEMO.reset(token)


def _check_digests(directory: Path, meta: dict[str, Any], dirs: list[Path]) -> None:
    """Each member of the ensemble folder ``directory`` holds the files it was built with (:data:`DIGESTS_KEY`,
    when recorded); a DataError naming the first member that does not."""
    digests = meta.get(DIGESTS_KEY)
    if digests is None:
        return
    for m, want in zip(dirs, digests):
        if _member_digest_once(m) != want:
            raise DataError(f"{m}: its {', '.join(MEMBER_FILES)} are not those the ensemble was built with "
                            f"({directory / ENSEMBLE_NAME}: {DIGESTS_KEY}), and its weights, validation MSE and "
                            "intervals were fit on those: rebuild it from the members' folders with `hftraining "
                            "ensemble ... --overwrite`")


def _read_json(directory: Path, name: str) -> Any:
    """The JSON of ``directory/name`` read as a model folder's files are (bounded, a regular file inside the
    folder: :func:`hftraining.models.folder.read_json`); None when it is absent or cannot be used."""
    try:
        return folder.read_json(directory, name)
    except DataError:
        return None


def run_metrics(run: Path) -> dict[str, Any]:
    """The training metrics of the run folder ``run``: ``test``, the test split's figures of its eval.json
    (:data:`TEST_KEYS`), and ``validation``, the validation record of its metrics.jsonl of the step whose weights
    the run kept (eval.json's ``weights_step``, under ``load_best_model_at_end``), else the last one; each left out
    when its file is (or eval.json cannot be read). metrics.jsonl is read bounded, inside the run folder; a
    half-written last line is skipped, a corrupt one elsewhere is a DataError."""
    metrics: dict[str, Any] = {}
    if (run / "eval.json").exists() or (run / "eval.json").is_symlink():
        try:  # bounded and inside the run folder, as metrics.jsonl: a panel's eval.json outgrows a model folder's JSON
            ev = json.loads(folder.read_file(run, "eval.json", MAX_METRICS_BYTES).decode("utf-8"))
        except (DataError, UnicodeDecodeError, ValueError, RecursionError):
            ev = None
        ev = ev if isinstance(ev, dict) else {}
        metrics["test"] = {k: ev.get(k) for k in TEST_KEYS if k in ev}
    if (run / "metrics.jsonl").exists() or (run / "metrics.jsonl").is_symlink():
        evals = [r for r in read_jsonl(folder.regular_file(run, "metrics.jsonl", MAX_METRICS_BYTES)) if "eval_mse" in r]
        # the record of the step whose weights the run kept (eval.json's weights_step: load_best_model_at_end), else the last
        kept = metrics.get("test", {}).get("weights_step")
        evals = [r for r in evals if r.get("step") == kept] or evals
        if evals:
            metrics["validation"] = evals[-1]
    return metrics


_UNREADABLE_SAID: set[tuple[str, Path]] = set()
"""(the error of an ensemble.json, its member) that :func:`_ensemble_of` has warned of in this process."""


def _ensemble_of(member: Path) -> tuple[Path, dict[str, Any], int] | None:
    """(the ensemble folder, its ensemble.json, the member's index) when ``member`` is a member folder of an
    ensemble (``<ensemble>/members/member-<k>``, given as a member of another ensemble): what that ensemble
    recorded of the run it was copied from (its precision, evaluation settings, fitted baselines, figures and
    data report) is that member's. None otherwise, or when the member's files are not those that ensemble was
    built with (:data:`DIGESTS_KEY`: another model copied over it is not that run's). An ensemble.json that
    cannot be read or checked is None too, with a warning naming the file (once a process): the member is then
    read as a bare model folder (fp32, no evaluation settings, fitted baselines or figures of its run)."""
    try:  # ``.`` or ``member-0`` from inside members/, ``../member-1``, a link to the member: the folder itself
        member = Path(member).resolve()
    except (OSError, RuntimeError):  # a link loop: not a member folder (loading it says so)
        return None
    ens = member.parent.parent
    if member.parent.name != "members" or not is_ensemble(ens):
        return None
    try:
        meta = read_ensemble_meta(ens)
    except DataError as e:
        said = f"{e}"
        if (said, member) not in _UNREADABLE_SAID:  # asked for its precision, settings, baselines, figures: said once
            _UNREADABLE_SAID.add((said, member))
            logging.getLogger("hftraining").warning(
                "ensemble: %s; its member %s is read as a bare model folder (fp32, without the precision, "
                "evaluation settings, fitted baselines and figures that ensemble recorded of its run)", said, member)
        return None
    name = f"members/{member.name}"
    if name not in meta["members"]:
        return None
    k = meta["members"].index(name)
    digests = meta.get(DIGESTS_KEY)
    if digests is not None:
        try:
            if _member_digest_once(member) != digests[k]:
                return None
        except DataError:
            return None
    return ens, meta, k


def member_metrics(member: Path) -> dict[str, Any] | None:
    """:func:`run_metrics` of the run the member folder ``member`` is the model of (its ``final/``), or those an
    ensemble recorded for it (a member of one: :func:`_ensemble_of`); None for a bare model folder."""
    run = run_folder(member)
    if run is not None:
        return run_metrics(run)
    of = _ensemble_of(member)
    recorded = of[1].get(METRICS_KEY) if of is not None else None
    return recorded[of[2]] if isinstance(recorded, list) else None


DATA_REPORT_RUN_KEYS = ("cache", "store")
"""Keys of a run's data report that say how that run read its rows (the feature store hit or missed), not
which rows: members' reports that differ in these alone are of the same data."""


def members_data_report(dirs: list[Path]) -> tuple[dict[str, Any] | None, str]:
    """(the data report the runs of the members ``dirs`` share, the first member's; or None, and why): every
    member must be a run's model (or an ensemble's member: the report that ensemble carries) whose
    data_report.json can be read, and the reports must agree but for :data:`DATA_REPORT_RUN_KEYS`."""
    reports = []
    for d in dirs:
        run = run_folder(d)
        if run is None and (of := _ensemble_of(d)) is not None:
            run = of[0]  # a member of an ensemble: the report that ensemble carries is its run's
        if run is None:
            return None, f"{d} is not a run's model (no run folder with a {DATA_REPORT_NAME} around it)"
        rep = _read_json(run, DATA_REPORT_NAME)
        if not isinstance(rep, dict):
            return None, f"{run / DATA_REPORT_NAME} is missing or cannot be read"
        reports.append((run, rep))
    (first, ref), *others = reports
    for run, rep in others:
        key = next((k for k in sorted({*ref, *rep}) if k not in DATA_REPORT_RUN_KEYS and ref.get(k) != rep.get(k)), None)
        if key is not None:
            return None, f"the members' runs read other data ({first / DATA_REPORT_NAME} and {run / DATA_REPORT_NAME} differ in {key!r})"
    return ref, ""


def _label(pre: dict[str, Any]) -> str:
    target = (pre.get("data") or {}).get("target") or "return"
    return "the log return of the close" if target == "return" else f"its label (data.target={target})"


def _split_line(pre: dict[str, Any]) -> str:
    """The README line of the ensemble's split: where its ``data.embargo`` (the largest of its members') leaves rows
    out. A split's embargo is after each cut (its validation and test windows start that many rows after it); a
    walk-forward fold's is before its validation rows and its test block (whose windows start at its first date),
    a purged k-fold's after its test block (before the training rows that follow it)."""
    embargo = _data_key(pre, "embargo")
    fold = pre.get("fold") if isinstance(pre.get("fold"), dict) else None
    if fold is None:
        return (f"- Split: the members' cut dates (`preprocessing.json`); its validation and test windows start "
                f"{embargo} row(s) after each cut (`data.embargo`, the largest of its members').")
    where = ("after its test block, before the training rows that follow it" if fold.get("scheme") == "purged_kfold"
             else "before its validation rows and before its test block, whose windows start at its first date")
    return (f"- Split: the members' walk-forward fold {fold.get('fold')} of {fold.get('folds')} ({fold.get('scheme')}; "
            f"`preprocessing.json`); {embargo} row(s) are left out {where} (`data.embargo`, the largest of its members').")


def ensemble_readme(meta: dict[str, Any], models: list[ForecastModel], pre: dict[str, Any], *, intervals: Any,
                    baselines: bool, data_report: str) -> str:
    """The ensemble folder's README.md: what it forecasts, how it combines which members (weights, validation MSE,
    each member's model and the folder it was copied from), its precision, intervals, fitted baselines and data
    report, and that each member's own README.md is the card of the run it was copied from."""
    n = len(meta["members"])
    how = {"mean": "mean", "median": "median", "weighted": "weighted mean"}[meta["method"]]
    weights = meta["weights"] or ([None] * n)
    mse = meta["validation_mse"] or ([None] * n)
    lines = ["---", "library_name: hftraining", "tags:", "- time-series-forecasting", "- hftraining", "- ensemble",
             "model_type: ensemble", f"method: {meta['method']}", f"members: {n}",
             f"horizon: {pre['horizon']}", f"sequence_length: {pre['seq_len']}", "---", "",
             f"# An ensemble of {n} models ({meta['method']})", "",
             f"Forecasts the next {pre['horizon']} steps of {_label(pre)} "
             f"from the last {pre['seq_len']} rows as the {how} of its members' forecasts "
             + ("(weights ∝ 1 / validation MSE). " if meta["method"] == "weighted" else "(equal weights). ")
             + "Written by hftraining (`hftraining ensemble`, or `train --seeds`); `ensemble.json` holds what follows "
             "as data, `preprocessing.json` the members' shared preprocessing.", "",
             "| member | model | weight | validation MSE | copied from |", "|---|---|---|---|---|"]
    for name, m, w, v, src in zip(meta["members"], models, weights, mse, meta["sources"]):
        lines.append(f"| `{name}` | {m.cfg.type} | {'—' if w is None else f'{w:.4f}'} | "
                     f"{'—' if v is None else f'{v:.6g}'} | `{src}` |")
    lines += ["", "Each `members/member-<k>/README.md` is the model card of the run that member was copied from: its "
              "paths and test figures are that run's, not this ensemble's (`hftraining evaluate` of this folder scores "
              "the ensemble itself)."
              + ("" if meta["method"] == "weighted" else " Validation MSE is measured for a `weighted` ensemble only."), ""]
    precision = meta.get(PRECISION_KEY)
    lines.append(f"- Precision: {precision} (the members' runs')." if precision else
                 "- Precision: none recorded (the members' runs differ, or are not runs): forecasts in fp32.")
    lines.append(f"- Intervals: {intervals.method} at {', '.join(f'{q:g}' for q in intervals.levels)}, calibrated on "
                 f"{intervals.n} validation windows of the ensemble's own forecasts (`intervals.json`)." if intervals is not None
                 else "- Intervals: none (forecasts are points only).")
    lines.append(f"- Fitted baselines: `{FITTED_BASELINES_DIR}/`, copied from the first member's run that has them, "
                 "of the members of the largest `data.embargo` first (fitted and scored on the windows the ensemble is "
                 "scored on)." if baselines else
                 "- Fitted baselines: none (no member is a run's with fitted baselines).")
    lines.append(_split_line(pre))
    lines.append(f"- Evaluation settings: those of the members' runs (`{EVALUATION_KEY}` in ensemble.json)."
                 if meta.get(EVALUATION_KEY) is not None else "- Evaluation settings: none recorded (the defaults apply).")
    lines.append(f"- Data report: `{DATA_REPORT_NAME}`, the one the members' runs share." if not data_report else
                 f"- Data report: none ({data_report}).")
    return "\n".join(lines) + "\n"


def build_ensemble(model_dirs: list[str | Path], out: str | Path, method: str = "mean", *,
                   overwrite: bool = False) -> Path:
    """Write an ensemble folder of ``model_dirs`` (run or model folders) to ``out``.

    ``weighted``: weights ∝ 1 / validation MSE of each member (the validation split of the
    training data, never the test split). ``out`` must not exist or be empty, as a training run
    folder: an earlier ensemble folder there is a DataError unless ``overwrite``, anything else
    always. The folder is written beside ``out`` and renamed into place when complete, replacing
    an earlier ensemble whole (none of its files, e.g. an ``intervals.json`` of other members,
    stays); a failure leaves the earlier one as it was. Returns the folder.
    """
    if method not in METHODS:
        raise ConfigError(f"--method: {method!r} is not one of {', '.join(METHODS)}")
    if len(model_dirs) < 2:
        raise DataError("ensemble: at least two model folders are needed")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not is_ensemble(out):
            raise DataError(f"{out}: exists and is not an ensemble folder; choose another --out")
        if not overwrite:
            raise DataError(f"{out}: already holds an ensemble; pass --overwrite to replace it, or choose another --out")
    with _digests_once():  # a member of an ensemble folder is checked against its recorded digest once
        return _build_ensemble(model_dirs, out, method)


def _build_ensemble(model_dirs: list[str | Path], out: Path, method: str) -> Path:
    dirs = [_member_dir(p) for p in model_dirs]
    first: dict[Path, int] = {}
    for i, d in enumerate(dirs):
        j = first.setdefault(d.resolve(), i)
        if j != i:  # the two arguments as typed (runs/a and runs/a/final name one model)
            given = str(model_dirs[j]) if str(model_dirs[j]) == str(model_dirs[i]) else f"{model_dirs[j]} and {model_dirs[i]}"
            raise DataError(f"ensemble: the same model folder is given twice ({given})")
    for d in dirs:  # the copy of a member would copy the ensemble being written into it, again and again
        if out.resolve().is_relative_to(d.resolve()):
            raise DataError(f"{out}: inside the member folder {d}; choose an --out outside the members")
    pre = check_shared_preprocessing(dirs)
    models = [ForecastModel.from_pretrained(d) for d in dirs]  # every member loads (a broken folder fails here, not later)
    for d, m in zip(dirs[1:], models[1:]):
        if m.cfg.loss != models[0].cfg.loss:  # an IC or ListNet loss leaves the forecast's scale free
            raise DataError(f"{d}: trained with model.loss={m.cfg.loss}, {dirs[0]} with model.loss={models[0].cfg.loss}; "
                            "their forecasts are on different scales, so a combination would weigh them arbitrarily: "
                            "ensemble members trained with one loss")
    levels = [list(m.cfg.quantiles) for m in models]
    if any(lv != levels[0] for lv in levels):
        logging.getLogger("hftraining").warning(
            "ensemble: the members' model.quantiles differ (%s): the ensemble forecasts points and no quantiles",
            "; ".join(f"{d}: {lv or 'none'}" for d, lv in zip(dirs, levels)))
    thresholds = [m.cfg.classification_threshold for m in models]
    if any(t != thresholds[0] for t in thresholds):
        logging.getLogger("hftraining").warning(
            "ensemble: the members' model.classification_threshold differ (%s): their buy/hold/sell classes are "
            "other events, so the ensemble forecasts no class probabilities",
            "; ".join(f"{d}: {t:g}" for d, t in zip(dirs, thresholds)))
    evaluation = members_evaluation(dirs)
    precision = members_precision(dirs)
    scores = validation_scores(dirs, pre, combined_outputs(models)) if method == "weighted" else None
    weights = None
    if scores is not None:
        inv = np.array([1.0 / max(s, 1e-30) for s in scores])
        weights = (inv / inv.sum()).tolist()
    meta = {
        "format_version": FORMAT_VERSION,
        "method": method,
        "weights": weights,
        "members": [f"members/member-{k}" for k in range(len(dirs))],
        "sources": [str(d) for d in dirs],
        "validation_mse": scores,
        EVALUATION_KEY: evaluation,
        PRECISION_KEY: precision,
        # each member's run's own figures: the folder is served apart from those runs (GET /model)
        METRICS_KEY: [member_metrics(d) for d in dirs],
    }
    report, no_report = members_data_report(dirs)

    def write(tmp: Path) -> None:
        (tmp / "members").mkdir()
        for name, d in zip(meta["members"], dirs):
            shutil.copytree(d, tmp / name, ignore=shutil.ignore_patterns("*.onnx"))
        meta[DIGESTS_KEY] = [_member_digest_once(tmp / name) for name in meta["members"]]  # as copied
        write_json(tmp / "preprocessing.json", pre)
        # the bar the members were scored against goes with them: fitted on the same windows (their
        # preprocessing is shared), so an ensemble of runs is judged against ridge and LightGBM too
        # of a member of the largest embargo, when one has them: fitted and scored on the ensemble's windows
        fitted = next((b for b in map(member_baselines, _widest_first(dirs)) if b is not None and b.is_dir()), None)
        if fitted is not None:
            shutil.copytree(fitted, tmp / FITTED_BASELINES_DIR)
        if report is not None:
            write_json(tmp / DATA_REPORT_NAME, report)
        write_json(tmp / ENSEMBLE_NAME, meta)
        cal = _calibrate(tmp, dirs)
        readme = ensemble_readme(meta, models, pre, intervals=cal, baselines=fitted is not None, data_report=no_report)
        (tmp / README_NAME).write_text(readme, encoding="utf-8")

    return replace_folder(out, write)


def _calibrate(out: Path, dirs: list[Path]) -> Calibration | None:
    """Calibrate the ensemble's own conformal intervals when its members have them: the levels,
    method and γ of the first member's ``intervals.json``, on the validation windows of the training
    data that member was calibrated on (the members' intervals do not combine into the ensemble's),
    from the forecasts the ensemble makes: in its recorded precision, as a run calibrates in its own;
    aci's α then walked over the test windows, as a run saves its own (:func:`_aci_after_test`). Returns the
    calibration written, None when there is none. ``dirs``: the members' folders, as given (``dirs[0]`` the
    first member). A member whose forecasts of those windows are not finite is a DataError naming it: the mean
    (and the median of two) would be NaN at every forecast and the radii unbounded, the median of more would
    hide it."""
    first = dirs[0]
    model, pre = load_ensemble(out)
    q_levels = list(getattr(model, "quantile_levels", None) or [])
    ref = folder.read_calibration(first, pre.horizon, list(folder.model_spec(first)[0].quantiles))  # as that member reads it
    if ref is None:
        return None
    if ref.method == "cqr" and not q_levels:
        raise DataError(f"{first / folder.INTERVALS_FILE}: cqr intervals are calibrated around a quantile head, and "
                        "the ensemble has none (its members' model.quantiles differ): give the members the same "
                        "model.quantiles, or calibrate them with evaluation.interval_method=split or aci")
    # a run calibrates on the windows of the split's last dates, at most its evaluation.max_val_windows
    # (hftraining.eval.intervals.calibrate), and its calibration counts them (n): the same whole dates again.
    # The whole split gave an ensemble of a run and its own copy other radii than the run's
    ws = _validation_windows(pre, first).last_dates(ref.n)
    if len(ws) == 0:
        return None
    batch_size = pre.data_config().eval_batch_size
    if model.method != "weighted":  # a weighted ensemble's members were checked on every validation window
        outputs = combined_outputs(list(model.members))
        for d, member in zip(dirs, model.members):
            finite_member_outputs(d, member, ws, batch_size, model.precision, outputs, model.method)
    cal = calibrate_windows(model, ws, pre.target_scale, ref.levels, ref.method, ref.gamma, batch_size,
                            precision=model.precision, q_levels=q_levels)
    if cal.method == "aci":
        cal = _aci_after_test(model, pre, cal, out, batch_size)
    write_json(out / folder.INTERVALS_FILE, cal.to_dict())
    return cal


def _aci_after_test(model: EnsembleModel, pre: Preprocessing, cal: Calibration, out: Path, batch_size: int) -> Calibration:
    """``cal`` (aci) with its α walked over the ensemble's forecasts of the test windows it is scored on
    (``evaluation.max_test_windows`` recorded in ``out``'s ensemble.json) as their outcomes became known:
    saved so, as a run saves its own (``train``), the next forecast's interval has adapted to them, not
    the nominal one of before the test period. Scoring the test split starts from the nominal α anyway
    (:func:`~hftraining.models.intervals.aci_bounds`)."""
    ev = section_from_dict(EvaluationConfig, ensemble_evaluation(out), EVALUATION_KEY)
    test = apply(pre, None, "test").last_dates(ev.max_test_windows)
    if len(test) == 0:
        return cal
    pred = predict_scaled(model, test, batch_size, precision=model.precision).astype(np.float64) * pre.target_scale
    true = test.targets().astype(np.float64) * pre.target_scale
    known = test.row_times[test.ends[:, None] + np.arange(1, test.horizon + 1)].astype(np.int64)  # each step's outcome
    _, alpha = aci_bounds(cal, pred, true, test.times.astype(np.int64), known)
    return dataclasses.replace(cal, alpha=alpha)


MAX_MEMBERS = 64


def read_ensemble_meta(directory: str | Path) -> dict[str, Any]:
    """``ensemble.json`` of ``directory``, checked (an ensemble folder is untrusted input like any model
    folder): a known method, 2 to :data:`MAX_MEMBERS` members, each a folder inside the ensemble folder,
    weights (if any; ``weighted`` needs them) finite, non-negative and not all zero, one per member, and
    the evaluation section (if any) one a run's config.json could hold (keys this version does not know
    are left out, as there), the precision (if any) one of fp32, bf16, fp16, the members' digests (if any)
    one sha256 per member, the members' metrics (if any) a mapping or null per member."""
    path = Path(directory) / ENSEMBLE_NAME
    meta = folder.read_json(directory, ENSEMBLE_NAME)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    for key in ("method", "members"):
        if key not in meta:
            raise DataError(f"{path}: missing key {key!r}")
    folder.check_format_version(meta, path)
    if meta["method"] not in METHODS:
        raise DataError(f"{path}: method {shown(meta['method'])} is not one of {', '.join(METHODS)}")
    members = meta["members"]
    if not isinstance(members, list) or not 2 <= len(members) <= MAX_MEMBERS:
        raise DataError(f"{path}: members must be a list of 2 to {MAX_MEMBERS} folders, got {shown(members)}")
    for m in members:
        folder.inside(Path(directory), m, str(path))
    w = meta.get("weights")
    if w is not None:
        ok = isinstance(w, list) and len(w) == len(members) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in w)
        if not ok or sum(w) <= 0:
            raise DataError(f"{path}: weights must be {len(members)} finite numbers >= 0, not all 0; got {shown(w)}")
    elif meta["method"] == "weighted":  # without them the members would be averaged: another ensemble, silently
        raise DataError(f"{path}: method 'weighted' needs weights, one per member ({len(members)}); got none")
    ev = meta.get(EVALUATION_KEY)
    if ev is not None:
        if not isinstance(ev, dict):
            raise DataError(f"{path}: {EVALUATION_KEY}: expected a mapping of keys or null, got {shown(ev)}")
        try:
            section_from_dict(EvaluationConfig, {k: v for k, v in ev.items() if k in EvaluationConfig.__dataclass_fields__},
                              EVALUATION_KEY)
        except ConfigError as e:
            raise DataError(f"{path}: {e}") from None
    p = meta.get(PRECISION_KEY)
    if p is not None and (not isinstance(p, str) or p not in PRECISIONS):
        raise DataError(f"{path}: {PRECISION_KEY}: {shown(p)} is not one of {', '.join(PRECISIONS)} or null")
    mm = meta.get(METRICS_KEY)
    if mm is not None and not (isinstance(mm, list) and len(mm) == len(members)
                               and all(x is None or isinstance(x, dict) for x in mm)):
        raise DataError(f"{path}: {METRICS_KEY}: expected {len(members)} mappings or nulls, one per member, or null; "
                        f"got {shown(mm)}")
    g = meta.get(DIGESTS_KEY)
    if g is not None and not (isinstance(g, list) and len(g) == len(members) and all(
            isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x) for x in g)):
        raise DataError(f"{path}: {DIGESTS_KEY}: expected {len(members)} sha256 digests (64 hex digits), one per "
                        f"member, or null; got {shown(g)}")
    return meta


def ensemble_evaluation(directory: str | Path) -> dict[str, Any]:
    """The keys of the evaluation section recorded in the ensemble folder ``directory`` (checked by
    :func:`read_ensemble_meta`; keys this version does not know, and keys that act during training only,
    which a folder written by an older version may hold, left out), {} when none is recorded."""
    ev = read_ensemble_meta(directory).get(EVALUATION_KEY) or {}
    return {k: v for k, v in ev.items() if k in EvaluationConfig.__dataclass_fields__ and at_evaluation(k)}


def load_ensemble(directory: str | Path) -> tuple[EnsembleModel, Preprocessing]:
    """(model, preprocessing) of an ensemble folder; the model's ``precision`` is the one recorded (fp32 when
    none is: the members' runs differed in it, or the folder was written before it was recorded). A member
    whose files differ from those it was built with (:data:`DIGESTS_KEY`) is a DataError naming it."""
    d = Path(directory)
    meta = read_ensemble_meta(d)
    dirs = [folder.inside(d, name, str(d / ENSEMBLE_NAME)) for name in meta["members"]]
    for m in dirs:
        if not m.exists():
            raise DataError(f"{d / ENSEMBLE_NAME}: member folder {m} is missing")
        if is_ensemble(m):  # its ensemble.json, not a model's config.json: said so, as `hftraining ensemble` says it
            raise DataError(f"{m}: is an ensemble; members must be single model folders (an ensemble of ensembles "
                            "is one ensemble of all their members: `hftraining ensemble` of their folders)")
    pre = check_shared_preprocessing(dirs)
    members = [ForecastModel.from_pretrained(m) for m in dirs]
    _check_digests(d, meta, dirs)  # once each member's files are known to be a model's
    model = EnsembleModel(members, meta["method"], meta.get("weights"), meta.get(PRECISION_KEY) or "fp32")
    return model, Preprocessing.from_dict(pre)
