"""``hftraining evaluate`` and ``backtest``: a saved run or model folder scored again, on its own
test split or on new data, through the same forecasts, scores and backtest as the end of training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hftraining.core.config import (
    AT_EVALUATION,
    Config,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    at_evaluation,
    parse_override,
    section_from_dict,
    validate,
)
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import Preprocessing, apply
from hftraining.data.splits import Fold
from hftraining.data.windows import WindowSet
from hftraining.eval import metrics as M
from hftraining.eval.backtest import backtest_forecasts, topk_holds_nothing_text
from hftraining.eval.forecasts import FITTED_BASELINES, Forecasts, collect_forecasts, score
from hftraining.eval.intervals import forecast_intervals, interval_report, outcome_times
from hftraining.eval.model_card import CARD_NAME, NOT_EVALUATED, card_meta
from hftraining.inference.ensemble import (
    check_shared_preprocessing,
    ensemble_evaluation,
    member_baselines,
    member_evaluation,
    read_ensemble_meta,
)
from hftraining.inference.folders import (
    ENSEMBLE_NAME,
    baselines_dir,
    is_ensemble,
    resolve_model_dir,
    run_folder,
    run_section,
)
from hftraining.inference.forecaster import Forecaster
from hftraining.models import ForecastModel, folder, load_preprocessing
from hftraining.models.folder import INTERVALS_FILE
from hftraining.models.predict import class_threshold
from hftraining.train.runner import EVALUATIONS_DIR  # a fresh run in the folder removes it with the rest

log = logging.getLogger(__name__)


def trained_preprocessing(path) -> Preprocessing:
    """The preprocessing of the model of a run, model or ensemble folder: its preprocessing.json (an
    ensemble's: its members' shared one), as :meth:`Forecaster.from_pretrained` reads it, checked,
    without loading weights or data."""
    d = resolve_model_dir(path)
    if is_ensemble(d):
        pre = check_shared_preprocessing([folder.inside(d, name, str(d / ENSEMBLE_NAME))
                                          for name in read_ensemble_meta(d)["members"]])
    else:
        pre = load_preprocessing(d)
    return Preprocessing.from_dict(pre)


def trained_data(path) -> DataConfig:
    """The data section the model of a run, model or ensemble folder was trained with
    (:func:`trained_preprocessing`). Its ``target`` is the label the forecasts are."""
    return trained_preprocessing(path).data_config()


def trained_model(path) -> ModelConfig:
    """The model section to check an evaluation section beside: the quantile levels the model of ``path`` (an
    ensemble's first member) forecasts, which ``evaluation.interval_method=cqr`` needs, checked as
    :func:`hftraining.models.folder.model_spec` reads them. The other model keys act in training only."""
    d = resolve_model_dir(path)
    if is_ensemble(d):
        d = folder.inside(d, read_ensemble_meta(d)["members"][0], str(d / ENSEMBLE_NAME))
    return ModelConfig(quantiles=list(folder.model_spec(d)[0].quantiles))


def recorded_evaluation(path) -> dict[str, Any]:
    """The evaluation keys recorded for the model of ``path``: a run's config.json's (of a run folder or
    its ``final/``), an ensemble folder's ensemble.json's (its members' runs' common section, also of the
    run folder of ``train --seeds N``, via its ``ensemble/``), or, for a member folder of an ensemble given
    alone (``<ensemble>/members/member-<k>``), those that ensemble recorded of its members' runs
    (:func:`~hftraining.inference.ensemble.member_evaluation`; a member whose files were replaced since is
    a bare model folder), checked beside the data section the model
    was trained with: a bad value is an error naming the file (config.json: ConfigError, ensemble.json:
    DataError); {} for a bare model folder or an ensemble that records none."""
    run = run_folder(path)
    if run is not None:
        raw, where, error = run_section(path, EvaluationConfig, "evaluation"), run / "config.json", ConfigError
    else:
        d = resolve_model_dir(path)
        if is_ensemble(d):
            raw, where, error = ensemble_evaluation(d), d / ENSEMBLE_NAME, DataError
        elif (member := member_evaluation(d)) is not None:  # scored with the defaults, as a bare folder, before
            raw, where, error = ensemble_evaluation(member[0]), member[0] / ENSEMBLE_NAME, DataError
        else:
            return {}
    try:
        validate(Config(data=trained_data(path), model=trained_model(path),
                        evaluation=section_from_dict(EvaluationConfig, raw, "evaluation")))
    except ConfigError as e:
        raise error(f"{where}: {e}") from None
    return raw


def evaluation_config(path, overrides: list[str] | tuple[str, ...] = ()) -> EvaluationConfig:
    """The evaluation section a run was trained with (its config.json; an ensemble's: the one its
    members' runs share, recorded in ensemble.json: :func:`recorded_evaluation`), or the defaults, with
    ``evaluation.key=value`` overrides applied; a bad key or value, or a key that only acts during
    training (not :data:`AT_EVALUATION` nor ``backtest_*``), is a ConfigError naming it. It is checked
    beside the data section the model was trained with (:func:`trained_data`), so
    ``backtest_portfolio: auto`` resolves by the model's label before any data is read: a ``backtest_*``
    key that portfolio ignores is a ConfigError here, as in training."""
    raw = recorded_evaluation(path)
    for text in overrides:
        (section, key), value = parse_override(text)
        if section != "evaluation":
            raise ConfigError(f"{section}.{key}: only evaluation.* settings apply here")
        if key in EvaluationConfig.__dataclass_fields__ and not at_evaluation(key):
            raise ConfigError(f"evaluation.{key}: acts during training, not on a trained model; here only "
                              f"evaluation.{', evaluation.'.join(AT_EVALUATION)} and evaluation.backtest_* apply")
        raw[key] = value
    ev = section_from_dict(EvaluationConfig, raw, "evaluation")
    validate(Config(data=trained_data(path), model=trained_model(path), evaluation=ev))
    return ev


def load_for_eval(path, data=None, split: str = "test", changes: list[str] | None = None,
                  dropped: list[str] | None = None,
                  read: list[tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]] | None = None,
                  ) -> tuple[Forecaster, WindowSet]:
    """(Forecaster, WindowSet) of a run/model folder on ``split`` of ``data`` (default: the data it
    was trained on, read again: what differs from the rows training read is a warning, and is added
    to ``changes`` when given: :func:`hftraining.data.pipeline.apply`); an empty split is a DataError.
    Rows of ``data`` that the training's validation rules drop (a duplicate timestamp, a NaN close)
    are not scored: one warning line per file names them (:meth:`Forecaster.dropped_rows`), added to ``dropped``
    when given, as ``predict`` says so, not silently; the training data read again drops what training
    dropped (its data_report.json says so). ``read``: given, the rows of ``data`` validated and their reports
    (:meth:`Forecaster.load_with_reports`) are appended to it (for :func:`flagged_scored_rows`)."""
    fc = Forecaster.from_pretrained(path)
    if data is None:
        ws = fc.windows(data, split, changes)
    else:
        frames, reports = fc.load_with_reports(data)
        if read is not None:
            read.append((frames, reports))
        for line in Forecaster.dropped_rows(reports, scored=True):
            log.warning("warning: %s", line)
            if dropped is not None:
                dropped.append(line)
        where = str(fc.model_dir / "preprocessing.json") if fc.model_dir is not None else "preprocessing.json"
        ws = apply(fc.preprocessing, frames, split, where, changes)  # as Forecaster.windows(data) reads them
    if len(ws) == 0:
        raise DataError(f"data: the {split} split yields no window")
    return fc, ws


def flagged_scored_rows(fc: Forecaster, reports: list[dict[str, Any]], frames: dict[str, pd.DataFrame],
                        ws: WindowSet) -> list[str]:
    """One warning for each file (or symbol's frame) of ``reports`` with rows the training rules flagged and
    kept (a jump under ``data.jumps=flag``) that the scored windows ``ws`` read: the rows of a symbol from
    :meth:`Forecaster.settled_rows` before its first window's last input row (its inputs and the history of
    their features; every earlier row when that is unknown) to its last window's last target
    (:meth:`Forecaster.flagged_rows` with their ``reach``; a forecast reads the latest rows of a symbol
    only, the scored windows the whole split), and, when only some are read, their dates."""
    reach: dict[str, tuple[int, int]] = {}  # symbol -> (first, last) time in ns of the rows its windows read
    for k, sym in enumerate(ws.symbols):
        ends = ws.ends[ws.symbol_ids == k].astype(np.int64)
        if len(ends):
            reach[sym] = (int(ws.row_times[ends.min()]), int(ws.row_times[ends.max() + ws.horizon]))
    return fc.flagged_rows(reports, frames, reach)


IN_SAMPLE = {
    "val": "(Scored on the val split, which chose the checkpoint, early stopping and the fitted baselines' settings: "
           "not an out-of-sample test.)",
    "train": "(Scored on the train split, which the model and the fitted baselines were fitted on: not an "
             "out-of-sample test.)",
    "all": "(Scored on every split, the ones the model was fitted and selected on included: not an out-of-sample test.)",
}
"""What the verdict of a split other than test adds: its significance is not out of sample."""


MAX_EVAL_JSON_BYTES = 256 << 20
"""Largest eval.json of a run that :func:`run_scores` reads. It grows with the symbols, the horizon and the
forecasts scored (about 35 KB a symbol at horizon 24), past the 16 MiB a model folder's JSON files may have."""


def run_scores(path) -> dict[str, Any] | None:
    """The eval.json training wrote into the run folder of ``path`` (the test split scored), or None: a bare
    model or ensemble folder, or a run not scored. One that cannot be read is a DataError naming it. Read as
    the run's config.json is (untrusted): a regular file inside the run folder, bounded, so a link to
    /dev/zero or a named pipe there is refused rather than read without end."""
    run = run_folder(path)
    if run is None or not (run / "eval.json").exists():
        return None
    data = folder.read_file(run, "eval.json", MAX_EVAL_JSON_BYTES)
    try:
        scored = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{run / 'eval.json'}: cannot read ({e}); restore it, or "
                        "copy final/ out to evaluate it as a model folder") from None
    if not isinstance(scored, dict):
        raise DataError(f"{run / 'eval.json'}: expected a JSON object, got {type(scored).__name__}")
    return scored


def _unscored(run: Path) -> bool:
    """Whether the run folder ``run`` was stopped after its model was saved and before its test split was scored:
    its model card still says the evaluation has not run (:data:`~hftraining.eval.model_card.NOT_EVALUATED`)."""
    card = run / "final" / CARD_NAME
    try:  # as the model folder's other files: a regular file inside it, bounded (not a link to /dev/zero, a pipe)
        text = folder.read_file(run / "final", CARD_NAME, folder.MAX_JSON_BYTES).decode("utf-8")
    except (DataError, UnicodeDecodeError):
        return False  # no card of ours
    meta = card_meta(card)
    if meta is None or meta.get("evaluated") is not False or (run / "eval.json").exists():
        return False
    return NOT_EVALUATED in text


def _fold(run: Path) -> Fold | None:
    """The walk-forward fold the model of the run folder ``run`` was trained on (``final/preprocessing.json``),
    or None: a run of its own, or a preprocessing.json that loading the model names as it reads it."""
    try:
        pre = folder.read_json(run / "final", "preprocessing.json")
        return Fold.from_dict(pre["fold"]) if isinstance(pre, dict) and "fold" in pre else None
    except (DataError, ValueError):
        return None


def check_scored_run(path) -> None:
    """A DataError naming the missing file when the run folder of ``path`` lacks what its own evaluation scored:
    a fitted baseline its eval.json judges the model against (``<run>/baselines/<name>/``), or the conformal
    intervals it scored (``final/intervals.json``); or when the run was stopped before its test split was scored,
    so its fitted baselines were never saved. Scored without them, the verdict would be judged against the naive
    baselines alone (naming a weaker strongest baseline than the run's own) or the intervals left out, silently."""
    run, root = run_folder(path), baselines_dir(path)
    if run is None or root is None:
        return
    scored = run_scores(path)
    stopped = scored is None and _unscored(run)
    named = FITTED_BASELINES if stopped else [n for n in FITTED_BASELINES if n in ((scored or {}).get("baselines") or {})]
    for name in named:
        if not (root / name).is_dir():
            fold = _fold(run) if stopped else None
            # a walk-forward's folds do not resume (train --resume there reads the data without the fold's cut)
            finish = ("finish it with `hftraining train --resume`" if fold is None else
                      f"it is {fold}, and a walk-forward does not resume: run the walk-forward again with "
                      "output.overwrite=true")
            why = (f"the run was stopped before its test split was scored ({run / 'final' / CARD_NAME}: not evaluated), "
                   f"so the fitted baselines its verdict is judged against were never saved; {finish}" if stopped else
                   f"{run / 'eval.json'} judges the model against fitted:{name}, scored again from there; restore it")
            raise DataError(f"{root / name}: missing: {why}, or copy final/ out to evaluate it as a bare model folder "
                            "against the naive baselines alone")
    cal = run / "final" / INTERVALS_FILE
    if scored is not None and scored.get("intervals") and not cal.exists():
        raise DataError(f"{cal}: missing: {run / 'eval.json'} scores the model's conformal intervals, calibrated on the "
                        "validation split and saved there; restore it, or copy final/ out to evaluate it as a model "
                        "folder without intervals")


def fitted_baselines(path) -> dict[str, ForecastModel]:
    """The fitted baselines saved with the run of ``path`` (``<run>/baselines/<name>/``, or an ensemble's
    copy of its members', also for one of its member folders given alone:
    :func:`~hftraining.inference.ensemble.member_baselines`); {} for a bare model folder, whose evaluation
    then has the naive baselines only (a run missing one of its own: :func:`check_scored_run`)."""
    root = baselines_dir(path)
    if root is None:  # a member of an ensemble folder: those the ensemble carries (the naive ones alone, before)
        root = member_baselines(resolve_model_dir(path))
    if root is None or not root.is_dir():
        return {}
    # in the order training fits and prints them (FITTED_BASELINES), not the folder's alphabetical one
    rank = {name: k for k, name in enumerate(FITTED_BASELINES)}
    found = [root, *sorted(root.iterdir(), key=lambda d: (rank.get(d.name, len(rank)), d.name))]
    for d in found:  # untrusted like the model folder: the folders inside it, never a link to elsewhere
        if d.is_symlink():
            raise DataError(f"{d}: a link; fitted baselines are model folders inside the run or ensemble folder")
    return {d.name: ForecastModel.from_pretrained(d) for d in found[1:] if d.is_dir()}


def evaluate_model_dir(path, data=None, split: str = "test",
                       ev: EvaluationConfig | None = None) -> tuple[dict[str, Any], Forecasts]:
    """Score the model of a run/model folder on ``split`` of ``data`` (default: the data it was
    trained on), beside the naive forecasts and the run's fitted baselines → (result, Forecasts).
    ``ev``: the evaluation settings (``evaluation.max_test_windows``), e.g. with the command's
    ``--set evaluation.*`` applied (:func:`evaluation_config`); default: the run's. A split that
    ``max_test_windows`` cuts is said as eval.json says it: ``windows_scored`` of ``windows_in_split``."""
    ev = ev if ev is not None else evaluation_config(path)
    check_scored_run(path)  # before the data are read
    changes: list[str] = []
    dropped: list[str] = []
    read: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    f, whole = load_for_eval(path, data, split, changes, dropped, read)
    ws = whole.last_dates(ev.max_test_windows)
    # rows of --data the jump rule flagged and kept, read by the windows scored: said as the dropped ones are
    flagged = [line for frames, reports in read for line in flagged_scored_rows(f, reports, frames, ws)]
    for line in flagged:
        log.warning("warning: %s", line)
    # a cut split is said as eval.json says it (evaluate_test): the counts, and the report's sentence on them
    cut = {} if len(ws) == len(whole) else {"windows_scored": len(ws), "windows_in_split": len(whole)}
    if cut:  # on stderr (evaluate shows no info lines): the console's table counts the windows scored alone
        log.warning("scoring the %s windows of the last %d dates: %d of %d windows (evaluation.max_test_windows)",
                    split, len(set(ws.times.tolist())), len(ws), len(whole))
    outs = f.outputs(ws)
    scale = f.preprocessing.target_scale
    fc = collect_forecasts(None, ws, scale, f.batch_size, pred_scaled=outs["prediction"],
                           quantiles_scaled=outs.get("quantiles"), levels=f.quantile_levels,
                           fitted=fitted_baselines(path), class_probs=outs.get("class_probs"),
                           class_threshold=class_threshold(f.model) if "class_probs" in outs else 0.0)
    result = {"split": split, "model_dir": str(f.model_dir), **cut, **score(fc)}
    if split != "test":  # the p-values test a model (and baselines) this split selected or trained: said with them,
        # in every verdict sentence the console and the report print (a return's cross-section one, a
        # cross-sectional label's squared-error one), not only the headline's
        for key in ("verdict", "mse_verdict", "cross_section_verdict"):
            if result.get(key):
                result[key] += " " + IN_SAMPLE[split]
        if "classes" in result["model"]:  # the head's DM test too: its own line on the console and in the report
            result["model"]["classes"]["verdict"] += " " + IN_SAMPLE[split]
    if changes:  # the training data read again differ from the rows training read: not eval.json's evaluation
        result["data_changes"] = changes
    if dropped:  # rows of --data the training rules dropped: not scored, said beside the numbers
        result["dropped_rows"] = dropped
    if flagged:  # rows of --data flagged and kept (data.jumps=flag) that the scored windows read
        result["flagged_rows"] = flagged
    if f.calibration is not None:  # the folder's conformal intervals (aci: walked along ``ws`` from the nominal level)
        fc.intervals, _ = forecast_intervals(f.calibration, fc.pred["model"], fc.true, fc.dates, fc.quantiles,
                                             known=outcome_times(ws))
        # a split other than test is its own windows or, of other data, windows dated in the period the model was
        # calibrated or trained on (the same cut dates): no calibration claim either way
        was = 'calibrated' if split in ('val', 'all') else 'trained'
        in_sample = None if split == "test" else (f"the {split} split holds the windows the model was {was} on"
                                                  if data is None else
                                                  f"the {split} split of this data is dated in the period the model "
                                                  f"was {was} on")
        result["intervals"] = interval_report(fc.intervals, fc.true, fc.dates, fc.symbol_ids, f.calibration.method,
                                              in_sample=in_sample, symbols=fc.symbols)
    if hasattr(f.model, "members"):  # an ensemble: its members scored on the same windows, beside it
        members = {}
        for k, m in enumerate(f.model.members):
            pred = Forecaster(m, f.preprocessing, device=f.device, precision=f.precision).predict_windows(ws)
            members[f"member-{k}"] = M.point_metrics(pred, fc.true, fc.dates)
        result["members"] = members
    return result, fc


def evaluate_and_backtest(path, data=None, split: str = "test",
                          ev: EvaluationConfig | None = None) -> tuple[dict[str, Any], Forecasts, dict[str, Any]]:
    """Score (:func:`evaluate_model_dir`) and backtest (:func:`hftraining.eval.backtest.backtest_forecasts`)
    the model of a run/model folder; ``ev``: EvaluationConfig (default: the run's). Returns
    (result with a "backtest" entry, Forecasts, backtest with its curves). A ``topk`` portfolio that holds
    nothing on any date (no date with two symbols: a single symbol) is a ConfigError naming the key: every
    strategy it trades would read 0, not a result (training only warns: its run is kept)."""
    ev = ev if ev is not None else evaluation_config(path)
    result, fc = evaluate_model_dir(path, data, split, ev)
    bt = backtest_forecasts(fc, ev)
    s = bt["settings"]
    if split != "test":  # `backtest --split val` prints the table alone: its Sharpe ratios said in sample beside it
        text = IN_SAMPLE[split].strip("().")
        text = text[0].lower() + text[1:]
        s["warning"] = f"{s['warning']}; {text}" if "warning" in s else text
    if s.get("topk_held") == 0:
        raise ConfigError(f"{topk_holds_nothing_text(s['portfolio_from'], s['n_symbols'])}; "
                          f"set evaluation.backtest_portfolio=per_symbol (backtest: --portfolio per_symbol)")
    result["backtest"] = {"settings": bt["settings"], "strategies": bt["strategies"]}
    return result, fc, bt


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def evaluation_name(split: str, data: str | None = None, changed: dict[str, Any] | None = None) -> str | None:
    """The folder name (under ``<folder>/evaluations/``) of an evaluation of ``split`` of ``data`` (None: the
    data the model was trained on) with the evaluation settings ``changed`` from the run's ({}: none);
    None for the folder's own evaluation (the test split of its own data, its own settings).

    Deterministic and safe as a file name: the split, then ``<name of data>-<8 hex of its absolute path>``
    (two different ``--data`` never share a folder, the same one always finds its own), then
    ``set-<8 hex of the changed settings>``; e.g. ``val``, ``test-AEM.csv-1f0c9a2b``, ``test-set-5e1d0c7a``."""
    if split == "test" and data is None and not changed:
        return None
    parts = [split]
    if data is not None:
        where = os.path.abspath(str(data))  # a glob keeps its pattern; a relative path is the folder it names
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(where)).strip("._-")[:40] or "data"
        parts.append(f"{stem}-{_short_hash(where)}")
    if changed:
        parts.append(f"set-{_short_hash(json.dumps(changed, sort_keys=True, default=str))}")
    return "-".join(parts)


def changed_settings(path, ev: EvaluationConfig) -> dict[str, Any]:
    """The evaluation settings of ``ev`` that differ from the ones recorded for the model of ``path``
    (:func:`evaluation_config` without overrides), ``report`` aside (it changes no number): key → value."""
    recorded, given = asdict(evaluation_config(path)), asdict(ev)
    return {k: v for k, v in given.items() if k != "report" and recorded.get(k) != v}


def report_dir(path, report_dir: str | None, split: str, data: str | None,
               ev: EvaluationConfig | None, result: dict[str, Any]) -> Path:
    """Where evaluate writes report.html/report.md: ``report_dir`` when given; else the run folder (a
    model or ensemble folder: that folder) for its own evaluation, which the report written by training
    describes beside eval.json; any other evaluation (another split, other data, other evaluation
    settings ``ev``) in ``<folder>/evaluations/<name>/`` (:func:`evaluation_name`), so that it never
    replaces the report of the run's own. The training data read again is other data when it has
    changed since (the evaluation ``result``'s ``data_changes``): named as ``--data`` with the recorded
    ``data.data_dir``. The files a model folder's
    ``from_pretrained`` reads are never among those written."""
    if report_dir:
        return Path(report_dir)
    home = run_folder(path) or resolve_model_dir(path)
    if data is None and result.get("data_changes"):
        data = trained_data(path).data_dir or str(sample_data_dir())
    name = evaluation_name(split, data, changed_settings(path, ev) if ev is not None else None)
    return home if name is None else home / EVALUATIONS_DIR / name

