"""Walk-forward evaluation: retrain on successive folds with the real trainer and score each
fold out of sample, then pool all out-of-sample forecasts.

Folds are cut like the train/val/test split (``data.split``): at dates shared by every symbol
(``calendar``, the default: :func:`hftraining.data.splits.calendar_fold` and
:func:`~hftraining.data.splits.calendar_purged_fold`, so no symbol trains on a date inside another
symbol's test block), or in each symbol's own rows (``per_symbol``, described here by rows; the
calendar folds are the same with dates of the panel's calendar in place of rows): the first
``data.train_ratio`` share is the initial training span, the rest is cut into K test blocks. For
fold k (test rows [b_k, b_{k+1})):

- ``expanding``: training rows [0, b_k − embargo); ``rolling``: the same length as the initial span,
  ending at b_k − embargo; ``purged_kfold``: every row outside the test block, purged and embargoed
  (:func:`hftraining.data.splits.purged_kfold`; the test blocks then cover all rows, so the past
  is also predicted from the future: a cross-validation, not a simulation of live trading; the
  training windows after a block read its prices as inputs unless ``data.embargo`` is at least
  ``data.sequence_length`` plus the features' settled rows: :func:`purged_inputs_note`, said as a
  warning and as ``embargo_note`` in walkforward.json);
- validation: the most recent ``data.val_ratio`` share of the training rows (expanding/rolling),
  ``data.embargo`` rows apart from training;
- test windows read their inputs from the L rows before b_k (past information) and all their
  targets lie in [b_k, b_{k+1}): no target is ever seen in training, and the scaler and target
  scale are refit on each fold's training rows only. A fold's ``test_from`` / ``test_to`` in
  walkforward.json (the table's test period) are the first and last dates of the targets scored
  (:func:`target_period`): the fold's test split as data_report.json states it, or its last dates
  when ``evaluation.max_test_windows`` cuts it.

Selection bias (``"selection"`` in walkforward.json, :func:`selection_stats`): the pooled
out-of-sample forecasts are backtested for the model and for each naive baseline through the same
position rule; these strategies are the **trials** among which one would pick (the benchmarks that
trade no forecast, buy-and-hold and equal weight, are left out). Reported: the Deflated Sharpe Ratio of the model's strategy
given all of them (Bailey & López de Prado 2014) and the probability of backtest overfitting of
picking the best of them by CSCV (Bailey, Borwein, López de Prado & Zhu 2017), on the pooled
backtest's per-period returns (:mod:`hftraining.eval.selection`).

Forecast intervals (``"intervals"`` in ``pooled``, :func:`pool_forecasts`): each fold's conformal
intervals are calibrated on that fold's own validation windows (before its test block, like its
training rows) and scored on its test block; the pooled report scores those same
bounds on all test blocks together, so no interval is scored on the windows it was calibrated on.
When a fold has none (no validation window to calibrate on, e.g. purged k-fold, whose validation
windows join its training ones), the pooled forecasts carry none, and ``pooled["intervals_note"]``
says which folds lacked them.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from contextlib import nullcontext
from typing import Any

import numpy as np
from scipy import stats

from hftraining.core.config import Config, DataConfig
from hftraining.core.errors import ConfigError, DataError, UserError
from hftraining.core.fmt import fmt, fmt_p
from hftraining.core.jsonio import write_json
from hftraining.data.features import SETTLE_MEASURABLE, feature_settle, panel_specs, settle_unknown, symbol_specs
from hftraining.data.labels import PER_DATE
from hftraining.data.pipeline import PanelRows, PreparedData, panel_rows, prepare
from hftraining.data.splits import SCHEMES, Fold, union_calendar
from hftraining.data.windows import WindowSet
from hftraining.eval.backtest import backtest_forecasts, format_backtest
from hftraining.eval.forecasts import SIGNIFICANCE, Forecasts, direction_p_text, format_table, score
from hftraining.eval.intervals import format_intervals, interval_report
from hftraining.eval.model_card import headline_metrics
from hftraining.eval.selection import format_selection, selection_stats
from hftraining.models.registry import check_model
from hftraining.train.distributed import barrier, cleanup, init_distributed
from hftraining.train.runner import check_before_data, check_output_dir, training_run
from hftraining.train.tracking import TrackingGroup, start_group
from hftraining.train.trainer import check_cross_section
from hftraining.workflows.train_run import (check_report_importable, evaluate_test, needs_validation,
                                            remove, run_folder_lock, said_once, split_sizes)

log = logging.getLogger(__name__)

TRIALS_ARE = ("the pooled out-of-sample backtests of the model's and each baseline's forecasts "
              "through the same position rule")


def prepare_fold(cfg: Config, source: PanelRows | dict, k: int, n_folds: int, scheme: str,
                 before_test: bool = False) -> PreparedData:
    """The PreparedData of fold ``k``: preprocessing fit on the fold's training rows, windows of its
    training, validation and test segments (the pipeline's own ``prepare`` cutting the fold, which
    its preprocessing keeps: :func:`~hftraining.data.pipeline.fold_split`) of ``source``: the
    panel's rows read once (:func:`~hftraining.data.pipeline.panel_rows`), or frames.
    ``before_test``: folds of the rows before the data's own test split only (tune)."""
    data = prepare(cfg.data, source, fold=Fold(k, n_folds, scheme, before_test))
    if scheme == "purged_kfold" and len(data.val) and len(data.train):
        # the training windows after the test block join those before it (same row arrays); the report's window
        # counts (data_report.json, the run's report and model card) are those the fold trains and validates on
        train, val = data.train.join(data.val), data.val.subset(slice(0, 0))
        windows = {**data.report.get("windows", {}), "train": len(train), "val": len(val)}
        data = dataclasses.replace(data, train=train, val=val, report={**data.report, "windows": windows})
    return data


def purged_inputs_note(d: DataConfig, gap: int = 1) -> str | None:
    """Under purged k-fold, the sentence saying that the training windows after each test block read
    prices of the block, and the ``data.embargo`` that keeps them clear of it; None when ``d``'s does.

    The first training window after a block ends ``embargo`` rows after the block's last row and reads
    its ``data.sequence_length`` rows, and each of those rows reads the rows before it: its return (the
    past-return channel every model reads, whatever the features) the close before it, its features up
    to their settled rows (:func:`~hftraining.data.features.feature_settle`; a 20-row volatility 20 rows).
    The panel features (``market``) and the labels taken across the symbols of a date (``excess_return``,
    ``cs_zscore``, ``cs_rank``) read every symbol's return of a date, and a symbol's return reads its own
    previous row, up to ``gap`` dates of the panel back (:func:`panel_gap`: 3 for a weekday stock beside
    a coin that trades every day). So ``embargo`` must be at least L plus the most rows any of these
    reach back (exactly for features of a finite window; for recursive ones, RSI, ATR, MACD, to within
    their settling tolerance); with L alone, the rows just after the block are computed from its closes."""
    features = list(d.features)
    settle = feature_settle(features)
    L, emb = d.sequence_length, d.embargo
    head = (f"--scheme purged_kfold: data.embargo={emb}: the training windows after each test block read its "
            f"prices as inputs: a window reads its data.sequence_length {L} rows, ")
    if settle is None:
        return head + (f"and {', '.join(settle_unknown(features))} read every row before them (they do not "
                       f"settle within {SETTLE_MEASURABLE} rows), so no data.embargo keeps them clear of the block; "
                       "use --scheme expanding or rolling to train on no row after a test block")
    reach = max(feature_settle(symbol_specs(features)), 1)  # a row's return reads the close before it
    across = [f"the {', '.join(panel_specs(features))} features"] if panel_specs(features) else []
    across += [f"the {d.target} labels"] if d.target in PER_DATE else []
    if panel_specs(features):  # a window of w dates, its first date's returns reaching ``gap`` dates back
        reach = max(reach, feature_settle(panel_specs(features)) + gap - 1)
    if d.target in PER_DATE:
        reach = max(reach, gap)
    if emb >= L + reach:
        return None
    why = ("their returns and features the rows before each (the features' settled rows, and the close "
           "before a row that its return reads")
    if across and gap > 1:
        why += (f"; {' and '.join(across)} read every symbol's return of a date, and a symbol's return reads its "
                f"previous row, up to {gap} dates of the panel back")
    return head + (f"and {why}): {reach} rows, so data.embargo >= {L + reach} keeps them clear of the block (to "
                   "within the settling tolerance of recursive features; its targets are purged whatever the "
                   "embargo); --scheme expanding or rolling trains on no row after a test block")


def panel_gap(source: PanelRows) -> int:
    """The most dates of the panel (the distinct timestamps of its symbols' rows) that one symbol's
    return spans: from a row back to the symbol's previous row (1 for a symbol alone, or symbols on one
    calendar; 3 for a weekday stock's Monday beside a coin that trades every day). What a feature or
    label taken across the symbols of a date reaches back beyond its own dates (:func:`purged_inputs_note`)."""
    times = source.rows.symbol_times()
    calendar = union_calendar(times)
    return max([1, *(int(np.diff(np.searchsorted(calendar, t)).max()) for t in times if len(t) > 1)])


def check_fold(cfg: Config, data: PreparedData, k: int, scheme: str) -> None:
    """A DataError naming fold ``k`` when its test block yields no window, or its validation split none
    while early stopping or the best checkpoint needs it (the fold would silently train to max_steps)."""
    if len(data.test) == 0:
        raise DataError(f"walkforward fold {k + 1}: its test block yields no window; use fewer --folds "
                        "or a smaller data.sequence_length / data.prediction_horizon")
    needs = needs_validation(cfg, intervals=False)  # a fold without intervals is said in walkforward.json
    if scheme != "purged_kfold" and cfg.data.val_ratio > 0 and needs and len(data.val) == 0:
        sizes, cause, fix = split_sizes(data, cfg.data)
        raise DataError(f"walkforward fold {k + 1}: its validation split yields no window ({sizes}; {cause}), "
                        f"and {', '.join(needs)} need{'s' * (len(needs) == 1)} it: {fix}raise data.val_ratio")


def previous_walk_forward(base) -> list[str]:
    """The names of what an earlier walk-forward left in ``base`` (``<run>/walkforward``): its
    ``fold-K`` run folders and ``walkforward.json``, folds in order."""
    if not base.is_dir():
        return []
    folds = sorted((p.name for p in base.iterdir() if p.is_dir() and re.fullmatch(r"fold-\d+", p.name)),
                   key=lambda n: int(n[5:]))
    return folds + (["walkforward.json"] if (base / "walkforward.json").exists() else [])


def target_period(ws: WindowSet) -> tuple[str, str]:
    """(first, last) date of the realised targets of the windows ``ws``: the out-of-sample period a fold's
    test block scores, as its data_report.json states it (not the forecast origins, whose first is the last
    row before the block and whose last lies H rows before its end). YYYY-MM-DD when every row is stamped at
    a UTC midnight (daily bars); else the instant in UTC, ``2024-05-13T18:00Z``: the folds of hourly bars
    meet inside a day, and their dates alone read as one fold's last day being the next one's first."""
    first = ws.row_times[ws.ends.astype(np.int64) + 1].min()
    last = ws.row_times[ws.ends.astype(np.int64) + ws.horizon].max()
    if not (np.asarray(ws.row_times, dtype=np.int64) % (86_400 * 10**9)).any():
        return tuple(str(np.datetime64(int(x), "ns"))[:10] for x in (first, last))
    return tuple(f"{np.datetime_as_string(np.datetime64(int(x), 'ns'), unit='m' if int(x) % 60_000_000_000 == 0 else 'auto')}Z"
                 for x in (first, last))


def _ci(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and a Student-t confidence interval of per-fold values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    m = float(v.mean())
    if len(v) < 2:
        return {"mean": m, "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 1}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * sd / np.sqrt(len(v))
    return {"mean": m, "std": sd, "ci_low": m - half, "ci_high": m + half, "n": int(len(v))}


def _fold_summary(res: dict[str, Any]) -> dict[str, Any]:
    bt = (res.get("backtest") or {}).get("strategies", {})
    levels = (res.get("intervals") or {}).get("levels", {})
    return {
        "n_windows": res["n_windows"],
        "mse": res["model"]["mse"],
        "zero_mse": res["baselines"]["zero"]["mse"],
        "mse_vs_zero": res["mse_vs_zero"],
        "directional_accuracy": res["model"]["directional_accuracy"],
        "directional_p": res["model"].get("directional_p"),  # step-1 Pesaran–Timmermann (metrics.point_metrics)
        "ic": res["model"]["ic"],
        # step-1 rank IC: what a cross-sectional label's verdict reads (``ic`` averages every step's)
        "rank_ic": ((res["model"].get("cross_section") or {}).get("rank_ic") or {}).get("mean"),
        # ±inf (a difference the same on every date, read by the sign test) is null in walkforward.json, as every
        # non-finite number: the mean loss difference (model − zero; negative: the model's is lower) gives its sign
        "dm_statistic": res["dm_vs_zero"]["statistic"],
        "dm_p_value": res["dm_vs_zero"]["p_value"],
        "dm_mean_diff": res["dm_vs_zero"]["mean_diff"],
        "sharpe": (bt.get("model") or {}).get("sharpe"),
        "buy_and_hold_sharpe": (bt.get("buy_and_hold") or {}).get("sharpe"),
        # step-1 coverage of the fold's conformal intervals per level ({} without intervals)
        "interval_coverage": {lv: e["coverage_per_step"][0] for lv, e in levels.items()},
    }


def pool_forecasts(parts: list[Forecasts], methods: list[str | None], scheme: str,
                   levels: list[float]) -> tuple[Forecasts, str | None]:
    """The folds' out-of-sample forecasts ``parts`` pooled (:meth:`Forecasts.concat`) with their
    intervals when every fold has them by one interval method (``methods``: each fold's, None for a
    fold without intervals) at the same levels → (pooled, None); otherwise the pooled forecasts
    without intervals and the sentence saying why (None when ``levels``, ``evaluation.intervals``,
    is empty: no intervals were asked for)."""
    kinds = [None if m is None or p.intervals is None else (m, tuple(sorted(p.intervals))) for p, m in zip(parts, methods)]
    if len(set(kinds)) == 1 and (kinds[0] is not None or not levels):
        return Forecasts.concat(parts), None
    bare = Forecasts.concat([dataclasses.replace(p, intervals=None) for p in parts])
    missing = [str(k + 1) for k, kind in enumerate(kinds) if kind is None]
    reason = "no validation window to calibrate them on" + (": purged k-fold trains on them" if scheme == "purged_kfold" else "")
    if len(missing) == len(parts):
        return bare, (f"intervals: evaluation.intervals asks for {', '.join(f'{v:g}' for v in levels)} but no fold has "
                      f"intervals ({reason}), so the pooled forecasts have none")
    if missing:
        why = f"fold{'s' * (len(missing) > 1)} {', '.join(missing)} ha{'ve' if len(missing) > 1 else 's'} no intervals ({reason})"
    else:
        why = "the folds' intervals differ (" + "; ".join(
            f"fold {k + 1}: {m} at {', '.join(f'{v:g}' for v in lv)}" for k, (m, lv) in enumerate(kinds)) + ")"
    return bare, f"intervals: {why}, so the pooled forecasts are scored without intervals; each fold's eval.json has its own"


# ---------------------------------------------------------------------------------- selection bias


def walk_forward(cfg: Config, n_folds: int, scheme: str = "expanding", mode: str = "retrain") -> dict[str, Any]:
    """Train and score ``n_folds`` folds; returns per-fold summaries, their means with 95% t-intervals,
    the metrics/DM test/backtest of all out-of-sample forecasts pooled, and ``"selection"``
    (:func:`selection_stats`): the trials are the strategies of the pooled backtest that trade a
    forecast — the model's and each naive baseline's through the same position rule, on the same
    dates — the chosen one is the model's; DSR of the model given them all, PBO of picking the best
    of them. Writes walkforward.json and
    one run folder per fold under ``<run>/walkforward/`` (each with its eval.json). Each fold's test
    windows are predicted once, by the fold's own test evaluation. Under torchrun the other ranks
    train with the main one and return {}. ``data.split_dates`` is a ConfigError (the folds would
    ignore it), as are early stopping and the best checkpoint under ``purged_kfold`` (its folds have no
    validation windows to score), and ``mode="finetune"`` of a model fitted without gradient steps (each fold's fit
    would replace the weights it started from). Nothing resumes (``training.resume_from_checkpoint`` is a
    ConfigError): every fold trains from its start, and ``output.overwrite`` removes an earlier
    walk-forward only once the config is checked and the features are built. One walk-forward at a
    time writes ``<run>/walkforward`` (:func:`~hftraining.workflows.train_run.run_folder_lock`): a
    second one started meanwhile is a UserError naming the folder."""
    if n_folds < 2:
        raise ConfigError(f"--folds: need at least 2 folds, got {n_folds}")
    if scheme not in SCHEMES:
        raise ConfigError(f"--scheme: {scheme!r} is not one of {', '.join(SCHEMES)}")
    if mode == "finetune" and scheme == "purged_kfold":
        raise ConfigError("--mode finetune: the folds of purged k-fold are not in time order; use --mode retrain")
    if mode == "finetune" and not check_model(cfg.model).needs_training:
        # ridge and LightGBM are fitted anew on each fold's windows, the naive forecasts have nothing to fit: the
        # previous fold's model would be loaded and then replaced, and walkforward.json would say "finetune"
        raise ConfigError(f"--mode finetune: model.type {cfg.model.type!r} is fitted without gradient steps, anew on "
                          "each fold's training windows, so no fold would start from the previous fold's model; "
                          "use --mode retrain")
    needs = needs_validation(cfg, intervals=False)
    if scheme == "purged_kfold" and needs:
        # its validation windows join the training ones (prepare_fold): no score would stop a fold early or pick
        # its best checkpoint, and every fold trained to training.max_steps and exited 0
        raise ConfigError(f"--scheme purged_kfold: {', '.join(needs)} need{'s' * (len(needs) == 1)} validation windows, "
                          "and purged k-fold trains on them (no fold has a validation split); unset "
                          f"{'them' if len(needs) > 1 else 'it'}, or use --scheme expanding or rolling")
    if cfg.data.split_dates is not None:
        # the folds are cut at data.train_ratio of the calendar: the dates would be ignored, and a test period
        # kept apart with them would be trained on and scored by the later folds
        raise ConfigError("data.split_dates: walkforward cuts its folds at data.train_ratio of the calendar and would "
                          "ignore the split's dates; remove it (data.end_date keeps a later period out of every fold)")
    if cfg.training.resume_from_checkpoint:
        # each fold's run is started over (below): a resume asked for would be ignored, every fold retrained
        raise ConfigError(f"training.resume_from_checkpoint={cfg.training.resume_from_checkpoint}: walkforward does not "
                          "resume; every fold trains from its start: leave it unset (an interrupted walk-forward is run "
                          "again with output.overwrite=true)")
    if cfg.evaluation.report:  # each fold's report is written after it trained: said before the first one trains
        check_report_importable()
    base = cfg.run_dir() / "walkforward"
    # the config is checked in a process group formed before the folder's lock is taken (as train --seeds does):
    # under torchrun a main rank refused the lock then stops after a group of its own, and the other ranks, gone
    # on to form the next group, hear it at once (train.distributed) instead of waiting training.ddp_timeout
    info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    try:
        check_before_data(cfg, info)  # before the earlier walk-forward is removed: a config mistake costs none of it
    finally:
        cleanup(info)
    # one walk-forward at a time in a folder, as one train per run folder: a second one started with
    # output.overwrite removed the folds the first was training, and both exited 0 with mixed folders
    # every fold builds its own trainer: a warning each would repeat (bf16 computed in software) is said once
    with run_folder_lock(base) if int(os.environ.get("RANK", "0")) == 0 else nullcontext(), said_once():
        return _walk_forward(cfg, n_folds, scheme, mode, base)


def _walk_forward(cfg: Config, n_folds: int, scheme: str, mode: str, base) -> dict[str, Any]:
    """:func:`walk_forward`'s work, under the lock of its folder ``base`` (``<run>/walkforward``)."""
    earlier = previous_walk_forward(base)
    if earlier and not cfg.output.overwrite:
        raise UserError(f"{base}: holds an earlier walk-forward ({', '.join(earlier[:3])}{', ...' if len(earlier) > 3 else ''}); "
                        "start over with output.overwrite=true, or give another output.output_dir")
    check_output_dir(base)  # said before the features are built, not after the first fold's
    source = panel_rows(cfg.data)  # every symbol's features once, through the store; each fold cuts its own splits
    # said once, by the main rank, before any fold trains, and in walkforward.json: of the features the folds use
    # (source.d: without the volume features a symbol lacks) and of the panel's dates (panel_gap)
    note = purged_inputs_note(source.d, panel_gap(source)) if scheme == "purged_kfold" else None
    if note and int(os.environ.get("RANK", "0")) == 0:
        log.warning("%s", note)
    info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    folds, parts, methods = [], [], []
    starts: list[int] = []  # the first scored date of each fold whose test block was cut: the pooled books start afresh there
    prev_state = None
    group = TrackingGroup(base, "walkforward")  # inactive until the folds are checked
    try:
        # every fold's splits are checked before the earlier walk-forward is removed and before any fold trains;
        # the folds are kept for training (prepared once, their data warnings said once): they share the panel's
        # rows, so each holds only its window indexes (8 bytes a window, memory-mapped from the feature store
        # once it has them) and its labels, and is released once it has trained
        prepared: list[PreparedData | None] = []
        for k in range(n_folds):
            try:
                prepared.append(prepare_fold(cfg, source, k, n_folds, scheme))
            except DataError as e:  # the fold whose rows fall short is named (with expanding, fold 1 has the fewest)
                raise DataError(f"walkforward fold {k + 1} of {n_folds} ({scheme}): {e}") from None
            check_fold(cfg, prepared[k], k, scheme)
            try:
                check_cross_section(cfg, prepared[k].train, prepared[k].val, prepared[k].test)  # a cross-sectional label of one symbol, as its trainer would
            except ConfigError as e:  # fold 1 of an expanding walk-forward may hold one symbol where the panel has more
                raise ConfigError(f"walkforward fold {k + 1} of {n_folds} ({scheme}): {e}") from None
        # one MLflow parent run of the folds (output.report_to: mlflow): every walk-forward trains its folds anew;
        # opened before the earlier walk-forward is removed: a store that cannot be used leaves it as it was
        group = start_group(cfg, base, "walkforward", f"{cfg.run_dir().name}-walkforward",
                            {"folds": n_folds, "scheme": scheme, "mode": mode, "data.embargo": cfg.data.embargo},
                            resume=False)
        if earlier and info.is_main:  # output.overwrite: no fold of the earlier walk-forward stays beside the new ones
            remove(base, earlier)
        barrier(info)
        for k in range(n_folds):
            data, prepared[k] = prepared[k], None
            data.report.update({"fold": k + 1, "folds": n_folds, "scheme": scheme})
            fcfg = copy.deepcopy(cfg)
            fcfg.output.output_dir = str(base / f"fold-{k + 1}")
            fcfg.output.overwrite = True
            fcfg.training.resume_from_checkpoint = None
            init = prev_state if mode == "finetune" else None  # continue from the previous fold's weights
            with group.member(fold=k + 1), training_run(fcfg, data, info, init_weights=init) as run:
                if run.is_main:
                    res, fc, _ = evaluate_test(run)
                prev_state = {n: t.detach().clone() for n, t in run.model.state_dict().items()}
            if not info.is_main:
                continue
            scored = data.test.last_dates(cfg.evaluation.max_test_windows)  # the windows scored
            first, last = target_period(scored)
            folds.append({"fold": k + 1, "train_windows": len(data.train), "val_windows": len(data.val),
                          "test_from": first, "test_to": last, "test_cut": len(scored) < len(data.test),
                          **_fold_summary(res)})
            parts.append(fc)
            methods.append((res.get("intervals") or {}).get("method"))
            if len(scored) < len(data.test):  # its first rows were not scored: no forecast holds a book over them
                starts.append(int(scored.times.min()))
    except BaseException:
        if info.is_main:
            group.fail()
        raise
    finally:
        cleanup(info)
    if not info.is_main:
        return {}
    try:
        out = _pooled(cfg, folds, parts, methods, scheme, mode, n_folds, base, starts, note)
    except BaseException:
        group.fail()
        raise
    group.finish(walkforward_metrics(out), [base / "walkforward.json"])
    return out


def walkforward_metrics(res: dict[str, Any]) -> dict[str, float]:
    """walkforward.json's aggregates as flat metrics (the MLflow parent run's): ``<key>_mean``, ``_std``,
    ``_ci_low``, ``_ci_high``, ``_n`` over the folds; ``pooled_<headline>`` of the pooled out-of-sample
    forecasts (:func:`~hftraining.eval.model_card.headline_metrics`); ``selection_dsr``, ``selection_pbo``."""
    out: dict[str, Any] = {"n_folds": res["n_folds"]}
    for key, a in res["aggregate"].items():
        out.update({f"{key}_{k}": v for k, v in a.items()})
    out.update({f"pooled_{k}": v for k, v in headline_metrics(res["pooled"]).items()})
    sharpe = ((res["pooled"].get("backtest") or {}).get("strategies", {}).get("model") or {}).get("sharpe")
    out["pooled_sharpe"] = sharpe
    sel = res.get("selection") or {}
    out.update(selection_dsr=sel.get("dsr"), selection_pbo=sel.get("pbo"))
    return {k: v for k, v in out.items() if v is not None}


def _pooled(cfg: Config, folds: list, parts: list, methods: list, scheme: str, mode: str, n_folds: int,
            base, starts: list[int] | None = None, embargo_note: str | None = None) -> dict[str, Any]:
    """The folds pooled: walkforward.json's content, written. The pooled backtest books the folds' test
    dates in calendar order (purged k-fold's folds too), each (date, symbol) once; ``starts`` (int64 ns): the
    first scored date of each fold whose test block ``evaluation.max_test_windows`` cut to its last dates,
    where every book starts afresh (:func:`~hftraining.eval.backtest.backtest_forecasts`): the rows before it,
    not scored, are no period of the pooled backtest. Between two folds whose scored rows meet, the H - 1
    rows without a window are earned through the close, as within a fold."""
    pooled_fc, no_intervals = pool_forecasts(parts, methods, scheme, cfg.evaluation.intervals)
    pooled = score(pooled_fc)
    if pooled_fc.intervals is not None:  # each window scored by its own fold's calibration (module docstring)
        pooled["intervals"] = interval_report(pooled_fc.intervals, pooled_fc.true, pooled_fc.dates,
                                              pooled_fc.symbol_ids, methods[0], symbols=pooled_fc.symbols)
    elif no_intervals:  # said once: by format_walkforward beside the pooled table (and in walkforward.json)
        pooled["intervals_note"] = no_intervals
    # every fold scored whole (no starts): one book over the folds, the H - 1 rows between two earned through the close
    bt = (backtest_forecasts(pooled_fc, cfg.evaluation, starts=starts) if starts
          else backtest_forecasts(pooled_fc, cfg.evaluation))
    pooled["backtest"] = {"settings": bt["settings"], "strategies": bt["strategies"]}
    # the folds in calendar order of their scored dates: a cut fold's unscored first rows follow the one before it
    order = sorted(range(len(folds)), key=lambda k: folds[k]["test_from"])
    after = [folds[order[j - 1]]["fold"] for j in range(1, len(order)) if folds[order[j]].get("test_cut")]
    if after:  # the pooled dates jump from a fold's last scored date over the next fold's unscored first rows
        pooled["backtest_note"] = (
            f"evaluation.max_test_windows cut the test blocks to their last dates: the pooled backtest starts "
            f"every book afresh after fold(s) {', '.join(map(str, after))}: the next fold's first rows were not "
            "scored, and the period over them is not booked (its Sharpe, volatility, drawdown and the selection "
            "statistics read the folds' scored periods); raise evaluation.max_test_windows to score and book "
            "every test row")  # said by format_walkforward, once
    keys = ["mse_vs_zero", "directional_accuracy", "ic", "rank_ic", "sharpe", "buy_and_hold_sharpe"]
    # the forecasts' strategies only: not the benchmarks that trade no forecast (buy-and-hold, equal weight)
    candidates = {name: c for name, c in bt["curves"].items() if name == "model" or name.startswith(("naive:", "fitted:"))}
    out = {
        "folds": folds,
        "scheme": scheme, "mode": mode, "n_folds": n_folds, "embargo": cfg.data.embargo,
        "aggregate": {k: _ci([f[k] for f in folds]) for k in keys},
        "pooled": pooled,
        "selection": selection_stats(candidates, "model", TRIALS_ARE),
        "run_dir": str(base),
    }
    if embargo_note:  # the training windows after each test block read its prices (purged_inputs_note)
        out["embargo_note"] = embargo_note
    base.mkdir(parents=True, exist_ok=True)
    write_json(base / "walkforward.json", out)
    return out


def format_walkforward(res: dict[str, Any]) -> str:
    """Per-fold table, the 95% intervals over folds and the pooled out-of-sample verdict."""
    # the period column fits the folds' instants (intraday bars: 2024-05-13T18:00Z..2024-05-30T04:00Z)
    width = max([23, *(len(f"{f['test_from']}..{f['test_to']}") + 1 for f in res["folds"])])
    lines = [f"walk-forward: {res['n_folds']} folds, {res['scheme']} training windows, {res['mode']}, embargo {res['embargo']} rows",
             f"{'fold':>4} {'test period':<{width}}{'train':>7}{'test':>6}{'MSE/zero':>9}{'dir.acc':>8}{'PT p':>9}{'IC':>8}"
             f"{'rankIC1':>8}{'DM p':>10}{'Sharpe':>8}{'B&H':>7}"]
    for f in res["folds"]:  # p-values as everywhere (fmt_p): never rounded up to the level, nor down to 0
        lines.append(f"{f['fold']:>4} {f['test_from'] + '..' + f['test_to']:<{width}}{f['train_windows']:>7}{f['n_windows']:>6}"
                     f"{fmt(f['mse_vs_zero'], '>9.4f')}{fmt(f['directional_accuracy'], '>8.4f')}{direction_p_text(f):>9}"
                     f"{fmt(f['ic'], '>8.4f')}{fmt(f.get('rank_ic'), '>8.4f')}{fmt_p(f['dm_p_value'], SIGNIFICANCE):>10}{fmt(f['sharpe'], '>8.2f')}"
                     f"{fmt(f['buy_and_hold_sharpe'], '>7.2f')}")
    if res.get("embargo_note"):  # the folds' scores above were trained on windows that read their test blocks' prices
        lines.append(res["embargo_note"])
    lines.append("mean over folds [95% t-interval]:")
    for k, a in res["aggregate"].items():  # a fold whose value is undefined (a flat book's Sharpe) is left out: said
        short = f" ({a['n']} of {len(res['folds'])} folds defined)" if a.get("n", len(res["folds"])) < len(res["folds"]) else ""
        lines.append(f"  {k:<22}{fmt(a['mean'], '.4f')} [{fmt(a['ci_low'], '.4f')}, {fmt(a['ci_high'], '.4f')}]{short}")
    lines.append(format_table(res["pooled"], "all out-of-sample folds pooled"))
    if "intervals" in res["pooled"]:
        lines += format_intervals(res["pooled"]["intervals"])
        per_fold = [f"fold {f['fold']} " + " ".join(f"{float(lv):.0%} {c:.3f}" for lv, c in f["interval_coverage"].items())
                    for f in res["folds"]]
        lines.append("  step-1 coverage per fold: " + "; ".join(per_fold))
    elif res["pooled"].get("intervals_note"):
        lines.append(res["pooled"]["intervals_note"])
    bt = dict(res["pooled"]["backtest"])
    lines.append(format_backtest(bt))
    if res["pooled"].get("backtest_note"):
        lines.append(res["pooled"]["backtest_note"])
    if res.get("selection"):
        lines.append(format_selection(res["selection"], "the model's strategy"))
    lines.append(f"fold runs and walkforward.json: {res['run_dir']}")
    return "\n".join(lines)
