"""``hftraining train --seeds N``: N runs that differ only in ``training.seed``, combined into an ensemble."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from hftraining.core.config import RESUME_FIXED, Config, shown as shown_value
from hftraining.core.errors import ConfigError, UserError, writing
from hftraining.core.files import replace_file
from hftraining.core.jsonio import read_json, write_json
from hftraining.data.labels import CROSS_SECTIONAL
from hftraining.data.pipeline import prepare
from hftraining.eval.forecasts import SIGNIFICANCE, label
from hftraining.eval.model_card import verdict_baseline
from hftraining.eval.report import effective_batch, trained_world_size
from hftraining.inference.ensemble import README_NAME, build_ensemble
from hftraining.models.registry import MODELS
from hftraining.train.distributed import barrier, cleanup, init_distributed
from hftraining.train.runner import check_before_data, finished_checkpoint
from hftraining.train.tracking import start_group
from hftraining.workflows.train_run import (check_report_importable, check_splits, remove, run_folder_lock, said_once,
                                            seed_runs, shown, single_run, train)

log = logging.getLogger("hftraining")


def train_seeds(cfg: Config, n: int, method: str = "mean") -> Path:
    """Train ``n`` copies of ``cfg`` with seeds ``training.seed + k`` into ``<run>/seed-<k>/``, then
    build ``<run>/ensemble/`` from their final models. Returns the run folder. A run folder that
    holds a single run (its ``config.json``, ``final/``, ...) or an earlier ``--seeds`` run is
    refused, or emptied of it with ``output.overwrite`` (so no seed-<k>/ of a larger earlier N stays
    beside the new ensemble); with ``training.resume_from_checkpoint`` each seed-<k>/ resumes (an
    earlier run of more seeds than ``n`` is refused: its extra seeds would stay beside the new
    ensemble) and ``ensemble/`` is rebuilt from exactly the ``n`` seeds; a checkpoint named there
    instead of ``auto`` is refused for ``n`` >= 2 (every seed would resume from it)."""
    if n < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {n}")
    if n >= 2 and not MODELS.get(cfg.model.type).needs_training:
        # ridge (closed form), LightGBM (its own fixed seed) and the naive forecasts take no gradient step:
        # training.seed reaches nothing they compute, so every "seed" would be the same model
        raise ConfigError(f"--seeds {n}: model.type {cfg.model.type!r} is fitted without gradient steps and does not "
                          "depend on training.seed, so the seeds would train identical members; train it once")
    spec = cfg.training.resume_from_checkpoint
    if n >= 2 and spec and spec != "auto":
        # every seed would resume from the one checkpoint (its weights, optimizer and random states): n copies of one run
        raise ConfigError(f"training.resume_from_checkpoint={spec}: --seeds {n} resumes each seed-<k>/ from its own latest "
                          "checkpoint (--resume, training.resume_from_checkpoint=auto); one checkpoint named would start "
                          "every seed from it, making them copies of one run")
    if cfg.evaluation.report:  # each seed's report is written after it trained: said before the first one trains
        check_report_importable()
    root = cfg.run_dir()
    info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    try:
        check_before_data(cfg, info)  # before anything is removed or read: a mistake costs no feature build
    finally:
        cleanup(info)
    # one train --seeds at a time in a run folder: a second one's output.overwrite removed the first's seed-0
    # while it trained (the seeds' own folders are locked by train)
    # every seed builds its own trainer: a warning each would repeat (bf16 computed in software) is said once
    with run_folder_lock(root) if int(os.environ.get("RANK", "0")) == 0 else nullcontext(), said_once():
        single, earlier = single_run(root), seed_runs(root)
        if single and not cfg.output.overwrite:
            raise UserError(f"{root}: holds a single training run ({shown(single)}); --seeds would write its seed-<k>/ "
                            "folders beside it: start over with output.overwrite=true, or give another output.output_dir")
        if earlier and not cfg.output.overwrite and not cfg.training.resume_from_checkpoint:
            raise UserError(f"{root}: holds an earlier train --seeds run ({shown(earlier)}); start over with "
                            "output.overwrite=true, or give another output.output_dir")
        extra = [name for name in earlier if name.startswith("seed-") and int(name[5:]) >= n]
        if extra and cfg.training.resume_from_checkpoint:
            # a resumed run is the earlier run continued: its seeds beyond n would stay beside an ensemble of n
            # (or, for n = 1, the earlier ensemble of them all would stay, as if it were this run's)
            raise UserError(f"--seeds {n}: {root} holds seeds of an earlier train --seeds run beyond seed-{n - 1} "
                            f"({shown(extra)}), which a resumed run would leave beside its ensemble: resume with the earlier "
                            "--seeds, or start over with output.overwrite=true and without training.resume_from_checkpoint")
        if cfg.training.resume_from_checkpoint:  # before the data are read: a mistake costs no feature build
            check_seeds_alike(cfg, root, n)
        # start over (output.overwrite): nothing of the earlier run(s) stays beside the new seeds, unless they resume
        stale = (single + ([] if cfg.training.resume_from_checkpoint else earlier)) if cfg.output.overwrite else []
        data = prepare(cfg.data)  # one preprocessing for every seed: the members share it by construction
        check_splits(cfg, data)  # an empty test split is said before an earlier run is removed or a seed trains
        # one MLflow parent run of the seeds (output.report_to: mlflow), continued by a resumed run; opened
        # before an earlier run is removed: a store that cannot be used leaves it as it was
        group = start_group(cfg, root, "seeds", root.name, {"seeds": n, "ensemble_method": method,
                                                            "training.seed": cfg.training.seed},
                            resume=bool(cfg.training.resume_from_checkpoint))
        try:
            if stale:  # once the data are built: a data mistake leaves the earlier run as it was
                _on_main_rank(cfg, lambda: remove(root, stale))
            for k in range(n):
                sub = seed_config(cfg, root, k)
                log.info("seed %d of %d: training.seed=%d → %s", k + 1, n, sub.training.seed, sub.output.output_dir)
                with group.member(seed=k):
                    train(sub, data)
            summary: dict[str, Any] = {}
            if n >= 2:
                def combine() -> None:
                    # exactly seed-0 .. seed-<n-1>, replacing an earlier ensemble/ whole (a resumed run rebuilds it)
                    build_ensemble([root / f"seed-{k}" for k in range(n)], root / "ensemble", method, overwrite=True)
                    summary.update(seed_summary([read_json(root / f"seed-{k}" / "eval.json") for k in range(n)]))
                    write_json(root / "ensemble" / SUMMARY_NAME, summary)
                    # the folder's own card, rewritten whole: a full disk is one line naming it, the card left as it was
                    card = root / "ensemble" / README_NAME
                    with writing(card):
                        text = card.read_text(encoding="utf-8") + (
                            f"- Seeds: the members are seeds {cfg.training.seed}..{cfg.training.seed + n - 1} "
                            f"(training.seed) of one run; `{SUMMARY_NAME}` holds each seed's test figures and "
                            f"their spread: {format_seed_summary(summary)}\n")
                    replace_file(card, lambda tmp: tmp.write_text(text, encoding="utf-8"))
                    log.info("%s", format_seed_summary(summary))

                _on_main_rank(cfg, combine)
                log.info("ensemble of %d seeds (%s): %s (the seeds' test figures: %s)", n, method, root / "ensemble",
                         root / "ensemble" / SUMMARY_NAME)
            group.finish(summary_metrics(summary) if summary else {"n_seeds": n},
                         [root / "ensemble" / SUMMARY_NAME] if summary else [])
        except BaseException:
            group.fail()
            raise
    return root


def seed_config(cfg: Config, root: Path, k: int) -> Config:
    """The config of seed ``k`` of the ``train --seeds`` run of ``cfg`` in ``root``: ``training.seed + k``,
    written into ``root/seed-<k>/``."""
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, seed=cfg.training.seed + k),
                               output=dataclasses.replace(cfg.output, output_dir=str(root / f"seed-{k}")))


SEEDS_MAY_DIFFER = ("training.seed", "training.resume_from_checkpoint", "training.device", "training.ddp_timeout",
                    "training.compile", "training.logging_steps", "training.save_steps", "training.save_on_epoch_end",
                    "training.save_total_limit", "training.gradient_checkpointing", "training.max_consecutive_nonfinite",
                    "evaluation.report")
"""The ``training``/``evaluation`` keys in which a seed left as it is by a resume may differ from the seeds
trained or scored by it: where and how the steps are computed, checkpointed and logged, and whether a report
is written; none of them changes the weights (beyond the device's rounding) or the test figures."""


SEEDS_RESOLVED = ("training.use_mixed_precision", "training.precision", "training.warmup_ratio",
                  "training.gradient_accumulation_steps", "evaluation.backtest_portfolio", "evaluation.periods_per_year")
"""The ``training``/``evaluation`` keys :func:`seed_differences` compares by what they resolve to, not as
written: the precision (``use_mixed_precision: true`` is ``precision: bf16``), the warmup (its ratio is
ignored beside ``warmup_steps``), the batch of an optimizer step (accumulation × ``data.batch_size`` × the
processes), the backtest portfolio (``auto`` is the label's) and the periods per year (``null`` is what the
finished seed's backtest inferred from the test dates, as its eval.json records)."""

SEEDS_BEST_STEP = ("evaluation.eval_steps", "training.early_stopping_threshold")
"""The keys that change only which validated step is the best: the weights and the test figures only under
early stopping (``training.early_stopping_patience``) or ``training.load_best_model_at_end`` (the schedule-free
weights an evaluation sets aside are put back bit for bit), so :func:`seed_differences` compares them only
when either is on in the finished seed's config or in the current one."""

SEEDS_DATA_KEYS = ("augment_noise_std", "augment_scale_std")
"""The ``data.*`` keys a resume may change (:data:`~hftraining.core.config.RESUME_MAY_CHANGE`) that change the
weights a seed trains to, besides the batch of an optimizer step (``batch_size``, ``dates_per_batch``) and the
``eval_batch_size`` that ``evaluation.max_eval_batches`` counts batches of."""


def _portfolio(evaluation: dict[str, Any], data: dict[str, Any]) -> Any:
    """The backtest portfolio ``evaluation.backtest_portfolio`` resolves to under the label ``data.target``."""
    chosen = evaluation.get("backtest_portfolio")
    if chosen != "auto":
        return chosen
    return "topk" if data.get("target") in CROSS_SECTIONAL else "per_symbol"


def _precision(training: dict[str, Any]) -> Any:
    """The precision ``training.precision`` resolves to (``auto``: bf16 under ``use_mixed_precision``)."""
    chosen = training.get("precision", "auto")
    return ("bf16" if training.get("use_mixed_precision") is True else "fp32") if chosen == "auto" else chosen


def _picks_best(training: dict[str, Any]) -> bool:
    """Whether the validated best step acts on the weights: early stopping or ``load_best_model_at_end``."""
    return bool(training.get("early_stopping_patience")) or training.get("load_best_model_at_end") is True


def _periods_per_year(evaluation: dict[str, Any], result: Any) -> Any:
    """The periods per year ``evaluation.periods_per_year`` resolved to in the backtest of the eval.json
    ``result`` (null: inferred from the test dates; None when the file records none)."""
    chosen = evaluation.get("periods_per_year")
    if chosen:
        return float(chosen)
    settings = ((result or {}).get("backtest") or {}).get("settings") if isinstance(result, dict) else None
    value = settings.get("periods_per_year") if isinstance(settings, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def seed_differences(saved: dict[str, Any], current: dict[str, Any], saved_world: int | None,
                     world: int, saved_result: Any = None) -> list[tuple[str, Any, Any, str]]:
    """What makes a seed trained or scored with the config dict ``current`` (in ``world`` processes) unlike the
    finished seed whose config.json is ``saved`` (trained in ``saved_world`` processes, None: unknown, taken as
    ``world``) → [(key, its value there, its value now, the setting to resume with)]: every ``training``/
    ``evaluation`` key but :data:`SEEDS_MAY_DIFFER` and :data:`~hftraining.core.config.RESUME_FIXED` (each seed's
    own resume refuses those), compared as resolved (:data:`SEEDS_RESOLVED`), and the ``data`` keys a resume
    may change that change the weights (:data:`SEEDS_DATA_KEYS`, the batch of an optimizer step); the keys of
    the best step (:data:`SEEDS_BEST_STEP`) only where it acts on the weights. ``saved_result``: the finished
    seed's eval.json, whose backtest records the periods per year a ``null`` resolved to. A key the saved
    config lacks (written by an older version) is not compared."""
    out: list[tuple[str, Any, Any, str]] = []
    sections = {name: (saved.get(name), current.get(name)) for name in ("data", "training", "evaluation")}
    if not all(isinstance(before, dict) and isinstance(after, dict) for before, after in sections.values()):
        return out  # the seed's own resume says what is wrong with it
    (d0, d1), (t0, t1), (e0, e1) = sections["data"], sections["training"], sections["evaluation"]

    def differ(name: str, was: Any, now: Any) -> None:
        out.append((name, was, now, f"{name}={shown_value(was)}"))

    best_acts = _picks_best(t0) or _picks_best(t1)
    for section, (before, after) in (("training", (t0, t1)), ("evaluation", (e0, e1))):
        for key in after:
            name = f"{section}.{key}"
            if name in SEEDS_MAY_DIFFER or name in RESUME_FIXED or name in SEEDS_RESOLVED or key not in before:
                continue
            if name in SEEDS_BEST_STEP and not best_acts:
                continue
            if before[key] != after[key]:
                differ(name, before[key], after[key])
    if "precision" in t0 and _precision(t0) != _precision(t1):
        differ("training.precision", _precision(t0), _precision(t1))
    if "warmup_ratio" in t0 and t0.get("warmup_steps") is None and t1.get("warmup_steps") is None \
            and t0["warmup_ratio"] != t1.get("warmup_ratio"):
        differ("training.warmup_ratio", t0["warmup_ratio"], t1.get("warmup_ratio"))
    if "periods_per_year" in e0 and e0["periods_per_year"] != e1.get("periods_per_year"):
        # as resolved: a null the finished seed inferred (its eval.json) against the value given now, or as written
        # where that is unknown (the value a null given now infers is known only once the data are read)
        was, now = _periods_per_year(e0, saved_result), e1.get("periods_per_year")
        if was is None or not now or was != float(now):
            differ("evaluation.periods_per_year", e0["periods_per_year"], e1.get("periods_per_year"))
    if "backtest_portfolio" in e0 and _portfolio(e0, d0) != _portfolio(e1, d1):
        differ("evaluation.backtest_portfolio", _portfolio(e0, d0), _portfolio(e1, d1))
    for key in SEEDS_DATA_KEYS:
        if key in d0 and d0[key] != d1.get(key):
            differ(f"data.{key}", d0[key], d1.get(key))
    if e1.get("max_eval_batches") is not None and "eval_batch_size" in d0 and d0["eval_batch_size"] != d1.get("eval_batch_size"):
        differ("data.eval_batch_size", d0["eval_batch_size"], d1.get("eval_batch_size"))  # other validation windows
    # the batch of an optimizer step: data.batch_size (or dates_per_batch) per process × accumulation × processes
    was, now = effective_batch(saved, saved_world or world), effective_batch(current, world)
    if was is not None and now is not None and was[0] != now[0]:
        per = "dates_per_batch" if d1.get("batching") == "dates" else "batch_size"
        accum, accum0 = t1.get("gradient_accumulation_steps", 1), t0.get("gradient_accumulation_steps", 1)
        if (saved_world or world) == world and d0.get(per) == d1.get(per):  # only the accumulation changed
            advice = f"training.gradient_accumulation_steps={shown_value(accum0)}"
        elif was[0] % (accum * world) == 0:  # a per-process batch that makes the finished seed's in this run
            advice = f"data.{per}={was[0] // (accum * world)}"
        else:
            advice = (f"data.{per} and training.gradient_accumulation_steps making {was[0]:,} {was[1]} a step in "
                      f"{world} process{'es' * (world != 1)}")
        out.append(("the batch of an optimizer step", was[2], now[2], advice))
    return out


def check_seeds_alike(cfg: Config, root: Path, n: int) -> None:
    """A resumed ``train --seeds`` leaves a finished seed as it is (:func:`~hftraining.train.runner.finished_checkpoint`:
    trained to its last step and scored) and trains or scores the others with ``cfg``: a UserError naming the
    key when a finished seed was trained or scored otherwise (:func:`seed_differences`: ``training.max_steps``
    lowered, another schedule, batch or augmentation, ``evaluation.max_test_windows``, ``backtest_*``) while
    another seed is trained or scored now. Its members would differ in more than the seed (one trained 4 steps,
    another 2) and ``seeds.json`` would spread figures scored on other test windows or costs (one seed's
    strongest baseline picked on the last 8 windows, the others' on 416). The keys a resume may not change
    (:data:`~hftraining.core.config.RESUME_FIXED`) are each seed's own resume's to refuse."""
    finished, now = [], []
    for k in range(n):
        (finished if finished_checkpoint(seed_config(cfg, root, k)) is not None else now).append(k)
    if not finished or not now:
        return  # every seed left as it is, or every one trained or scored with cfg: nothing mixed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for k in finished:
        path = root / f"seed-{k}" / "config.json"
        saved = read_json(path) if path.is_file() else None
        if not isinstance(saved, dict):
            continue  # the seed's own resume says what is wrong with it
        current = json.loads(json.dumps(seed_config(cfg, root, k).to_dict()))  # the saved file's types
        try:  # read when the seed was found finished; unreadable now: the values as written are compared
            result = read_json(root / f"seed-{k}" / "eval.json")
        except (OSError, ValueError):
            result = None
        for name, was, value, advice in seed_differences(saved, current, trained_world_size(root / f"seed-{k}"), world,
                                                         result):
            what = "scored" if name.startswith("evaluation.") and name not in SEEDS_BEST_STEP else "trained"
            shown_was, shown_now = (f"={shown_value(was)}", f"={shown_value(value)}") if "." in name else \
                (f" ({was})", f" ({value})")
            raise UserError(
                f"--seeds {n}: {root / f'seed-{k}'} is finished with {name}{shown_was}, which a resume leaves as it "
                f"is, while seed-{now[0]} would be {what} with {name}{shown_now}: the seeds would differ in more than "
                f"training.seed (seeds.json would spread figures of unlike runs); resume with {advice}, or start "
                "over with output.overwrite=true")


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """seeds.json's spread as flat metrics (the MLflow parent run's): ``<figure>_mean``, ``_std``,
    ``_min``, ``_max`` and ``_n`` (the seeds that have the figure), ``n_seeds``, ``n_significantly_better``."""
    out: dict[str, Any] = {"n_seeds": summary["n_seeds"], "n_significantly_better": len(summary["significantly_better"])}
    for name, s in summary["spread"].items():
        out.update({f"{name}_{k}": v for k, v in s.items() if v is not None})
    return out


SUMMARY_NAME = "seeds.json"
"""The seeds' test figures and their spread, beside the ensemble built from them."""

FIGURES = {
    "mse_vs_strongest": ("strongest_baseline", "mse_ratio"),
    "dm_p_vs_strongest": ("strongest_baseline", "dm", "p_value"),
    "mse_vs_zero": ("mse_vs_zero",),
    "mse": ("model", "mse"),
    "directional_accuracy": ("model", "directional_accuracy"),
    "rank_ic": ("model", "cross_section", "rank_ic", "mean"),
    "rank_ic_vs_strongest": ("cross_section_strongest", "difference", "mean"),
    "rank_ic_p_vs_strongest": ("cross_section_strongest", "difference", "p_value"),
    "sharpe": ("backtest", "strategies", "model", "sharpe"),
}
"""Figure of seeds.json → where it lies in each seed's eval.json (a figure a run has not: null)."""


def _figure(ev: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        ev = ev.get(key) if isinstance(ev, dict) else None
    return float(ev) if isinstance(ev, (int, float)) and not isinstance(ev, bool) and math.isfinite(ev) else None


def beats_strongest(ev: dict[str, Any]) -> bool:
    """Whether a run's eval.json ``ev`` says its model beats the baseline its verdict names
    (:func:`~hftraining.eval.model_card.verdict_baseline`): a cross-sectional label's by a rank IC
    significantly higher (paired test), any other label's by an MSE below it with the Diebold–Mariano
    test rejecting equality in that direction, at the verdict's level. A ratio below 1 beside a
    statistic of the other sign is no claim (the verdict says the two disagree). A statistic of ±inf (a difference
    the same on every date, read by the sign test) is null in eval.json: its direction is the mean difference's."""
    cs = ev.get("cross_section_strongest") if ev.get("target") in CROSS_SECTIONAL else None
    if cs:
        diff = cs.get("difference") or {}
        p, mean = diff.get("p_value"), diff.get("mean")
        return _finite(p) and _finite(mean) and p < SIGNIFICANCE and mean > 0
    sb = ev.get("strongest_baseline") or {}
    ratio, dm = sb.get("mse_ratio"), sb.get("dm") or {}
    p, stat = dm.get("p_value"), dm.get("statistic")
    if stat is None and _finite(p):  # ±inf, written as null: a finite p is the sign test's, in the mean's direction
        stat = dm.get("mean_diff")
    return _finite(ratio) and _finite(p) and _finite(stat) and ratio < 1 and p < SIGNIFICANCE and stat < 0


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def seed_summary(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """The test figures of each seed's eval.json (``evals``, seed order) and, per figure, their mean,
    standard deviation (n − 1), min and max over the seeds that have it: how much of a result is the
    seed's. ``significantly_better``: the seeds whose model beats the baseline its verdict names
    (:func:`beats_strongest`)."""
    per_seed = [{name: _figure(ev, path) for name, path in FIGURES.items()} for ev in evals]
    spread = {}
    for name in FIGURES:
        vals = np.array([s[name] for s in per_seed if s[name] is not None], dtype=np.float64)
        spread[name] = {"n": int(vals.size), "mean": float(vals.mean()) if vals.size else None,
                        "std": float(vals.std(ddof=1)) if vals.size >= 2 else None,
                        "min": float(vals.min()) if vals.size else None, "max": float(vals.max()) if vals.size else None}
    better = [k for k, ev in enumerate(evals) if beats_strongest(ev)]
    named = [verdict_baseline(ev) for ev in evals]  # the baseline each verdict judges (by rank IC for a cs label)
    return {"n_seeds": len(evals), "seeds": per_seed, "strongest_baseline": [n for n, _ in named],
            "strongest_baseline_by": [by for _, by in named],
            # what mse_vs_strongest compares with: the strongest by MSE (a cross-sectional verdict names another)
            "strongest_baseline_by_mse": [(ev.get("strongest_baseline") or {}).get("name") for ev in evals],
            "spread": spread, "significantly_better": better}


def baselines_named(names: list[str | None]) -> str:
    """The baselines the seeds are compared with (``names``, one a seed: seeds.json's ``strongest_baseline``), as
    the console names them: ``fitted:ridge``, or ``fitted:ridge in 2 seeds, naive:drift in 1`` where they differ."""
    counts: dict[str, int] = {}
    for name in names:
        if name is not None:
            counts[label(name)] = counts.get(label(name), 0) + 1
    if len(counts) <= 1:
        return next(iter(counts), "none")
    return ", ".join(f"{name} in {k} seed{'s' * (k != 1)}" for name, k in sorted(counts.items(), key=lambda kv: -kv[1]))


def format_seed_summary(summary: dict[str, Any]) -> str:
    """One line: the spread of the MSE ratio to the strongest baseline, named, and how many seeds beat it."""
    n, r = summary["n_seeds"], summary["spread"]["mse_vs_strongest"]
    named = baselines_named(summary.get("strongest_baseline") or [])
    if "rank IC" in summary.get("strongest_baseline_by", []):  # a cross-sectional verdict reads the rank IC difference
        d = summary["spread"]["rank_ic_vs_strongest"]
        if d["n"]:
            std = f" ± {d['std']:.4f}" if d["std"] is not None else ""
            return (f"seeds: step-1 rank IC − strongest baseline's (by rank IC) = {d['mean']:.4f}{std} (min {d['min']:.4f}, "
                    f"max {d['max']:.4f}) over {d['n']} seeds, against {named}; {len(summary['significantly_better'])} of {n} "
                    f"significantly better (as each seed's verdict judges it, at {SIGNIFICANCE:g})")
    if r["n"] == 0:
        return f"seeds: {n} seeds trained; no MSE ratio to a strongest baseline to compare"
    std = f" ± {r['std']:.4f}" if r["std"] is not None else ""
    if any(by != "MSE" for by in summary.get("strongest_baseline_by", [])):  # the ratio's baselines are those by MSE
        named = baselines_named(summary.get("strongest_baseline_by_mse") or []) + " (by MSE)"
    return (f"seeds: test MSE / strongest baseline's = {r['mean']:.4f}{std} (min {r['min']:.4f}, max {r['max']:.4f}) "
            f"over {r['n']} seeds, against {named}; {len(summary['significantly_better'])} of {n} significantly better "
            f"(as each seed's verdict judges it, at {SIGNIFICANCE:g})")


def _on_main_rank(cfg: Config, work) -> None:
    """``work()`` on the main rank of a torchrun group (or the one process) while the others wait: the
    run folder's own files are written once, never raced by every rank."""
    info = init_distributed(cfg.training.device, cfg.training.ddp_timeout)
    try:
        if info.is_main:
            work()
        barrier(info)
    finally:
        cleanup(info)
