"""The model card: ``README.md`` in every model folder ``<run>/final/``, like a Hugging Face model folder.

It states what the model is (type, parameters, inputs), the data it learned from (source, symbols,
dates, rows, each split's period and a calendar split's cut dates) with its warnings (those data_report.json
holds), the features, the key config, the test-split metrics beside the zero
forecast and the strongest baseline with the verdict and the Pesaran–Timmermann p-value of each
one's step-1 forecast signs, the quantile head's pinball loss and coverage and the buy/hold/sell head's
verdict where the model has them (exactly as in eval.json; the YAML front matter holds the unrounded
headline numbers) and how to load it. Loading ignores the file (only config.json,
model.safetensors and preprocessing.json are read).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from hftraining import __version__
from hftraining.core.config import Config
from hftraining.core.errors import DataError, writing
from hftraining.core.fmt import fmt
from hftraining.data.labels import CROSS_SECTIONAL, UNITS
from hftraining.data.rows import RowsNeeded
from hftraining.eval.forecasts import DIRECTION_NOTE, direction_p_text, ic_gap_text, label, quantile_note
from hftraining.eval.intervals import level_labels
from hftraining.eval.metrics import dm_statistic_text
from hftraining.eval.report import (data_warnings, effective_batch, md_text, model_keys, p_text,
                                    scored_text, sentence, setting_text, split_text, trained_world_size, unread_keys)
from hftraining.models import ForecastModel
from hftraining.models import folder as folder_files

CARD_NAME = "README.md"
NOT_EVALUATED = "the folder was written before the test-split evaluation, which has not run"
CONFIG_KEYS = (
    "model.type", "model.hidden_size", "model.num_layers", "model.num_heads", "model.dropout", "model.loss",
    "data.target", "data.sequence_length", "data.prediction_horizon", "data.batching", "data.batch_size",
    "data.dates_per_batch", "training.gradient_accumulation_steps", "data.scaler",
    "training.optimizer", "training.learning_rate", "training.lr_scheduler", "training.max_steps",
    "training.precision", "training.seed",
)
"""The config keys the card lists (the full resolved config is the run folder's config.json), as far as the
model reads them (:func:`config_keys`)."""
MAX_SYMBOLS = 20  # symbols named on the card; more are counted


def config_keys(model: ForecastModel, cfg: dict[str, Any] | None = None) -> list[str]:
    """The keys of :data:`CONFIG_KEYS` that ``model`` reads, with its type's own ``model.*`` settings
    (:attr:`~hftraining.models.base.ForecastModel.settings`) in the place of the transformer's, its loss and the
    keys of the heads it has (:func:`~hftraining.eval.report.model_keys`): the card of a
    DLinear or a ridge model listed a width, depth, heads and dropout that it does not have (the training log
    says they have no effect), and of a model fitted without optimizer steps, an optimizer, a learning rate
    and a batch. ``cfg``: config.json's content, whose ``data.batching`` says which batch size was read
    (:func:`~hftraining.eval.report.unread_keys`): a dates-batched card listed ``data.batch_size``, which that
    batching ignores, and not ``data.dates_per_batch``."""
    own, trained = model_keys(type(model))
    unread = unread_keys(cfg or {}, trained)
    keys = ["model.type", *(f"model.{k}" for k in own)]
    return keys + [k for k in CONFIG_KEYS if not k.startswith("model.") and k not in unread]


def headline_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The test-split numbers a tracker or a card shows, from eval.json's content ``result``: the
    model's MSE, MAE, directional accuracy (and its step-1 Pesaran–Timmermann p) and step-1 rank IC,
    its MSE ratio and Diebold–Mariano p
    against the zero forecast and the strongest baseline, and those baselines' MSE."""
    m = result["model"]
    out: dict[str, Any] = {
        "mse": m.get("mse"), "mae": m.get("mae"), "directional_accuracy": m.get("directional_accuracy"),
        "directional_p": m.get("directional_p"),
        "rank_ic": ((m.get("cross_section") or {}).get("rank_ic") or {}).get("mean"),
        "mse_vs_zero": result.get("mse_vs_zero"), "dm_p_vs_zero": (result.get("dm_vs_zero") or {}).get("p_value"),
        "zero_mse": (result.get("baselines", {}).get("zero") or {}).get("mse"),
    }
    sb = result.get("strongest_baseline")
    if sb:
        out.update(strongest_baseline_mse=sb.get("mse"), mse_vs_strongest_baseline=sb.get("mse_ratio"),
                   dm_p_vs_strongest_baseline=(sb.get("dm") or {}).get("p_value"))
    cs = _cs_strongest(result)
    if cs:  # a cross-sectional label's verdict is on the rank IC: its strongest baseline by rank IC too
        out.update(strongest_baseline_rank_ic=cs.get("rank_ic"),
                   rank_ic_diff_vs_strongest_baseline=(cs.get("difference") or {}).get("mean"),
                   rank_ic_diff_p_vs_strongest_baseline=(cs.get("difference") or {}).get("p_value"))
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _cs_strongest(result: dict[str, Any]) -> dict[str, Any] | None:
    """The strongest baseline by step-1 rank IC when the verdict is the cross-section's (a
    cross-sectional label, :data:`~hftraining.data.labels.CROSS_SECTIONAL`), else None."""
    return result.get("cross_section_strongest") if result.get("target") in CROSS_SECTIONAL else None


def verdict_baseline(result: dict[str, Any]) -> tuple[str | None, str]:
    """(the name of the baseline the verdict measures the model against, by what: "rank IC" for a
    cross-sectional label, else "MSE")."""
    cs = _cs_strongest(result)
    if cs:
        return cs["name"], "rank IC"
    sb = result.get("strongest_baseline")
    return (sb["name"] if sb else None), "MSE"


def _what(target: str, H: Any) -> str:
    """What the model forecasts, in words: the label's units (``data.target``)."""
    if target == "return":
        return f"the next {H} log returns of the close"
    return f"the next {H} steps of its label `data.target: {target}`, {UNITS.get(target, target)},"


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".")
    return (cfg.get(section) or {}).get(key)


def _code(text: Any, in_table: bool = False) -> str:
    """``text`` as a Markdown code span, whatever it holds: fenced by more backticks than its longest
    run of them, on one line, and inside a table with its ``|`` escaped (GFM ends a cell there even
    inside code)."""
    flat = " ".join(str(text).splitlines())
    fence = "`" * (1 + max((len(r) for r in re.findall("`+", flat)), default=0))
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    span = f"{fence}{pad}{flat}{pad}{fence}"
    return span.replace("|", "\\|") if in_table else span


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows), ""]


def _metrics_section(result: dict[str, Any], run: Path) -> list[str]:
    """The metrics of ``result`` (eval.json's content, or evaluate's of another split) of the run folder ``run``."""
    zero = result["baselines"].get("zero") or {}
    zero_mse = zero.get("mse")
    sb = result.get("strongest_baseline")
    cs = _cs_strongest(result)
    marks: dict[str, list[str]] = {}  # baseline → what it is the strongest by
    if cs:
        marks.setdefault(cs["name"], []).append("rank IC")
    if sb:
        marks.setdefault(sb["name"], []).append("MSE")

    def named(n: str) -> str:
        by = marks.get(n)
        if not by:
            return label(n)
        return f"{label(n)} (strongest baseline" + (f" by {' and '.join(by)})" if cs else ")")

    rows = [("model", result["model"])]
    rows += [(named(n), result["baselines"][n]) for n in dict.fromkeys(["zero", *marks]) if n in result["baselines"]]

    def ratio(mse: Any) -> str:
        ok = isinstance(mse, float) and isinstance(zero_mse, float) and zero_mse > 0
        return fmt(mse / zero_mse if ok else None, ".4f")

    table = [[name, fmt(m.get("mse"), ".6g"), fmt(m.get("mae"), ".6g"), fmt(m.get("directional_accuracy"), ".4f"),
              direction_p_text(m), fmt(((m.get("cross_section") or {}).get("rank_ic") or {}).get("mean"), ".4f"),
              ratio(m.get("mse"))] for name, m in rows]
    # a split cut by evaluation.max_test_windows says so: "Test split: 240 windows" beside the data table's 2,080
    split = result.get("split") or "test"
    # eval.json holds the test split training scored: the metrics of another split are evaluate's
    where = ("`eval.json` in the run folder has every metric, per step and per symbol, and the backtest" if split == "test" else
             f"{_code(f'hftraining evaluate {shlex.quote(str(run))} --split {split} --json')} prints every metric of the "
             f"{split} split, per step and per symbol, and its backtest; the run folder's `eval.json` holds the test split's")
    lines = [f"{split.capitalize()} split: {result.get('n_windows')} windows{scored_text(result)} × "
             f"{result.get('horizon')} steps, "
             f"{result.get('n_symbols')} symbols, {result.get('n_dates')} dates; {result.get('units', 'log returns')} ({where}).", ""]
    lines += _table(["forecast", "MSE", "MAE", "directional accuracy", "PT p (step 1)", "rank IC (step 1)", "MSE / zero"],
                    table)
    lines += [f"Directional accuracy over all {result.get('horizon')} steps. {DIRECTION_NOTE}.", ""]
    if result.get("intervals"):  # the conformal intervals saved beside the weights (intervals.json)
        iv = result["intervals"]
        lines += [f"Forecast intervals (`intervals.json`, {iv['method']} conformal, returned by `predict` as "
                  "`lower_<level>`/`upper_<level>`): " + "; ".join(
                      f"{lab}: step-1 coverage {fmt(e['coverage_per_step'][0], '.3f')}, mean width "
                      f"{fmt(e['mean_width_per_step'][0], '.4g')}"
                      for lab, e in zip(level_labels([float(lv) for lv in iv["levels"]], percent=True), iv["levels"].values()))
                  + f". {md_text(sentence(iv['sentence']))}", ""]  # it names symbols: literal, as the data table's
    dm = result.get("dm") or {}
    tests = [n for n in dict.fromkeys(["zero"] + ([sb["name"]] if sb else [])) if n in dm]
    if tests:
        lines += ["Diebold–Mariano tests of the model against " + "; ".join(
            f"{label(n)}: statistic {dm_statistic_text(dm[n])}, p = {p_text(dm[n].get('p_value'))}"
            for n in tests) + " (squared error; negative: the model's loss is lower).", ""]
    if cs:
        d = cs.get("difference") or {}
        lines += [f"Step-1 rank IC of the model against the strongest baseline by rank IC, {label(cs['name'])} "
                  f"({fmt(cs.get('rank_ic'), '.4f')}): model − it = {ic_gap_text(d, label(cs['name']))}, paired p = "
                  f"{p_text(d.get('p_value'))} over {d.get('n_dates')} dates.", ""]
    return lines + _heads_lines(result["model"], result)


def _heads_lines(m: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The optional heads' scores of the model's metrics ``m``, as the report and the console give them under
    eval.json's names: the quantile head's pinball loss per level and mean, and its coverage (with
    :func:`~hftraining.eval.forecasts.quantile_note`); the buy/hold/sell head's verdict, as eval.json words it.
    Nothing for a model without them (an eval.json written before a head was scored included)."""
    lines: list[str] = []
    if "pinball_mean" in m:
        pin = ", ".join(f"{_code(k)} {fmt(v, '.6g')}" for k, v in (m.get("pinball") or {}).items())
        cov = ", ".join(f"{_code(k)} {fmt(v, '.3f')}" for k, v in (m.get("coverage") or {}).items())
        lines += [f"Quantile head (`model.quantiles`): mean pinball loss {fmt(m['pinball_mean'], '.6g')}"
                  + (f" ({pin})" if pin else "") + (f"; coverage {cov}" if cov else "")
                  + md_text(quantile_note(result)) + " (`below_q<level>`: share of realisations at or below the "
                  "quantile, ideally the level; `interval_<width>`: share inside the central interval, ideally its width).", ""]
    c = m.get("classes")
    if isinstance(c, dict) and c.get("verdict"):
        lines += [md_text(sentence(c["verdict"][0].upper() + c["verdict"][1:])), ""]
    return lines


def _heads_meta(m: dict[str, Any]) -> dict[str, Any]:
    """The front matter's unrounded numbers of the optional heads of the model's metrics ``m`` (none: {})."""
    def num(v: Any) -> float | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else None

    out: dict[str, Any] = {}
    if "pinball_mean" in m:
        out["quantile_head"] = {"pinball_mean": num(m["pinball_mean"]),
                                "pinball": {k: num(v) for k, v in (m.get("pinball") or {}).items()},
                                "coverage": {k: num(v) for k, v in (m.get("coverage") or {}).items()}}
    c = m.get("classes")
    if isinstance(c, dict):
        out["buy_hold_sell_head"] = {
            "threshold": num(c.get("threshold")), "log_loss": num(c.get("log_loss")),
            "log_loss_shares": num(c.get("log_loss_shares")), "accuracy": num(c.get("accuracy")),
            "accuracy_shares": num(c.get("accuracy_shares")), "dm_p": num((c.get("dm") or {}).get("p_value")),
            "verdict": c.get("verdict")}
    return out


def _count(v: Any) -> str:
    """A count of data_report.json with thousands separators (anything else as it is: a report of another version)."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else md_text(v)


def _data_section(cfg: dict[str, Any], rep: dict[str, Any]) -> list[str]:
    """The data table (source, symbols, dates, rows, each split's period, windows) and, when data_report.json
    ``rep`` holds any, its warnings (:func:`~hftraining.eval.report.data_warnings`, as the report states them):
    the card travels with the model, without the log that said them as the data were read. A report of an
    older version lacks keys: their rows are left out."""
    data_dir = _get(cfg, "data.data_dir")
    rows = [["source", _code(data_dir, in_table=True) if data_dir else "the sample data bundled with hftraining"]]
    symbols = list(rep.get("symbols") or [])
    if symbols:
        more = ", …" if len(symbols) > MAX_SYMBOLS else ""
        rows.append(["symbols", f"{len(symbols)}: {', '.join(map(md_text, symbols[:MAX_SYMBOLS]))}{more}"])
    split = rep.get("split") if isinstance(rep.get("split"), dict) else {}
    per = split.get("symbols") if isinstance(split.get("symbols"), dict) else {}
    spans = [span for each in per.values() if isinstance(each, dict) for span in each.values()
             if isinstance(span, (list, tuple)) and len(span) == 2]
    if spans:
        rows.append(["dates", f"{min(s[0] for s in spans)[:10]} → {max(s[1] for s in spans)[:10]}"])
    if "rows_kept" in rep:
        rows.append(["rows", f"{_count(rep['rows_kept'])} kept of {_count(rep.get('rows_in', rep['rows_kept']))} read"])
    if split:  # each split's period, and a calendar split's cut dates: as the report's data table says them
        rows.append(["split", md_text(split_text(split, rep.get("scheme")))])
    if rep.get("fold") is not None:  # a walk-forward fold's split is its own blocks, not data.split's cut
        fold = f"fold {rep['fold']} of {rep.get('folds', '—')}, scheme {rep.get('scheme', '—')}"
        rows.append(["walk-forward", md_text(fold)])
    windows = rep.get("windows") if isinstance(rep.get("windows"), dict) else {}
    if windows:
        rows.append(["windows", ", ".join(f"{md_text(k)} {_count(v)}" for k, v in windows.items())])
    lines = _table(["", ""], rows)
    warned = data_warnings(rep)
    if warned:
        lines += ["## Data warnings", "", "Said as the data were read, and kept in the run folder's `data_report.json`:", "",
                  *(f"- `{key}`: {md_text(why)}" for key, why in warned), ""]
    return lines


def model_card(folder: str | Path, cfg: Config, data_report: dict[str, Any], preprocessing: dict[str, Any],
               model: ForecastModel, step: int, result: dict[str, Any] | None = None,
               not_evaluated: str = NOT_EVALUATED, weights_step: int | None = None,
               world_size: int | None = None) -> str:
    """The card's Markdown for the model folder ``folder``: ``result`` is eval.json's content (None:
    the test metrics were not computed, for the reason ``not_evaluated``); ``step``: optimizer steps trained;
    ``weights_step``: the step whose weights the folder holds when it is not the last
    (``training.load_best_model_at_end``: the best validation score's); ``world_size``: the processes
    it trained with (default: as the run folder around ``folder`` records it,
    :func:`~hftraining.eval.report.trained_world_size`): ``data.batch_size`` is per process, so the key
    config states the batch of an optimizer step too."""
    folder = Path(folder)
    c = cfg.to_dict()
    if world_size is None:
        world_size = trained_world_size(folder.parent)
    batch = effective_batch(c, world_size)
    mtype = cfg.model.type
    n_params = model.num_parameters()
    H, L = preprocessing.get("horizon"), preprocessing.get("seq_len")
    columns = list(preprocessing.get("feature_columns") or [])
    target = cfg.data.target
    warned = [key for key, _ in data_warnings(data_report)]  # the keys of the card's "Data warnings"
    meta: dict[str, Any] = {
        "library_name": "hftraining", "tags": ["time-series-forecasting", "finance", "hftraining", mtype],
        "model_type": mtype, "parameters": n_params, "trained_steps": int(step),
        **({"weights_from_step": int(weights_step)} if weights_step is not None else {}),
        "horizon": H, "sequence_length": L,
        **({"world_size": int(world_size)} if world_size is not None else {}),
        **({"effective_batch": batch[0], "effective_batch_unit": batch[1]} if batch is not None else {}),
        "symbols": list(data_report.get("symbols") or []),
        **({"data_warnings": warned} if warned else {}),
        "evaluated": bool(result),
    }
    if result:
        split = result.get("split") or "test"
        if split != "test":  # numbers of a split the model was fitted or selected on are no test metrics
            meta["metrics_split"] = split
        meta[f"{split}_metrics"] = {k: (v if math.isfinite(v) else None) for k, v in headline_metrics(result).items()}
        # the baseline the verdict names (a cross-sectional label: the strongest by rank IC)
        meta["strongest_baseline"], meta["strongest_baseline_by"] = verdict_baseline(result)
        if meta["strongest_baseline_by"] != "MSE":  # what the *_vs_strongest_baseline MSE numbers compare with
            meta["strongest_baseline_by_mse"] = (result.get("strongest_baseline") or {}).get("name")
        meta["verdict"] = result.get("verdict")
        meta.update(_heads_meta(result.get("model") or {}))
    if model.needs_training:
        made, how = f" ({n_params:,} parameters)", f"trained for {step:,} optimizer steps"
    else:  # its fitted values are no trainable parameters, and it took no optimizer step: "0 parameters", "0 steps"
        how = (f"fitted {model.fitted_how}" if model.fits_on_data else "a fixed rule with nothing fitted") + ", no optimizer step,"
        made = ""
    around = ["the resolved config", "the data report", *(["the checkpoints"] if model.needs_training else []),
              *(["`eval.json`", *(["the report"] if cfg.evaluation.report else [])] if result else [])]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=10_000).rstrip(), "---", "",
             f"# {md_text(folder.parent.name or folder.name)}: a {mtype} forecaster", "",
             f"A `{mtype}` model{made} that forecasts {_what(target, H)} from the "
             f"last {L} rows of {len(columns)} feature columns, {how} with hftraining {__version__}"
             + (f" (the weights are step {weights_step:,}'s, its best validation score: "
                "training.load_best_model_at_end)" if weights_step is not None else "")
             + ". This folder holds `config.json` (the architecture), `model.safetensors` (the weights) and "
             "`preprocessing.json` (features, scaler, window), all that loading needs; the run folder around it "
             f"holds {', '.join(around[:-1])} and {around[-1]}.", ""]
    lines += ["## Verdict", ""]
    if result:
        lines += [result.get("verdict") or "—", ""]
        if _cs_strongest(result) and result.get("mse_verdict"):  # as the report and the console: a rank-IC verdict
            lines += [sentence(f"On squared error: {result['mse_verdict']}"), ""]  # says nothing of the MSE tests the card lists
        split = result.get("split") or "test"
        lines += ["## Test metrics" if split == "test" else
                  f"## Metrics on the {split} split: in-sample, not an out-of-sample test", ""] + _metrics_section(result, folder.parent)
    else:
        # a run stopped before its test split was scored has no fitted baselines to judge it against: finishing it scores it
        how = ("finishing the run (`hftraining train` again with `--resume`; a walk-forward fold: the walk-forward again "
               "with output.overwrite=true) scores the model beside the baselines" if not_evaluated == NOT_EVALUATED else
               f"{_code(f'hftraining evaluate {shlex.quote(str(folder.parent))}')} scores the model beside the baselines")
        lines += [f"Test metrics were not computed: {not_evaluated}. There is no verdict; {how}.", ""]
    lines += ["## Data", ""] + _data_section(c, data_report)
    scaler = preprocessing.get("scaler") or {}
    lines += ["## Features", "",
              f"Indicators (`data.features`): {', '.join(map(_code, preprocessing.get('features') or [])) or '—'}; "
              f"the {len(columns)} input columns: {', '.join(map(_code, columns)) or '—'}. Scaler: "
              f"{scaler.get('kind', '—')}{' per symbol' if scaler.get('per_symbol') else ''}, fitted on the training split.", ""]
    rows = [[f"`{k}`", md_text(setting_text(k, _get(c, k), c))] for k in config_keys(model, c)]
    if world_size is not None:  # data.batch_size is per process: what one optimizer step averaged over
        rows.append(["processes (world size)", str(world_size)])
    if batch is not None:
        rows.append(["effective batch", md_text(batch[2])])
    lines += ["## Key config", ""] + _table(["key", "value"], rows)
    lines += ["## How to use", "", "```python", "from hftraining.inference.forecaster import Forecaster", "",
              f"fc = Forecaster.from_pretrained({json.dumps(str(folder), ensure_ascii=False)})",
              'forecasts = fc.predict("my_prices/")  # a CSV/Parquet file, folder or glob of OHLCV rows; one row per symbol × step',
              "```", "", "```bash", f"hftraining predict {shlex.quote(str(folder))} --data my_prices/ --out forecasts.csv", "```", "",
              history_text(cfg)
              + ("Forecasts are log returns (and the implied prices)" if target == "return" else
                 f"Forecasts are {UNITS.get(target, target)} (column `forecast_{target}`), not prices")
              + "; inputs go through the preprocessing saved here.", ""]
    return "\n".join(lines)


def history_text(cfg: Config) -> str:
    """The rows of history a forecast needs per symbol, in words, as ``predict`` and ``serve`` count them
    (:meth:`~hftraining.data.rows.RowsNeeded.of` without target rows: the features' warm-up and one input window,
    the ``min_rows`` of ``GET /model``), and the rows after which its features have settled
    (:meth:`~hftraining.data.rows.RowsNeeded.settled`, ``settled_rows``): from fewer, a recursive indicator (RSI,
    MACD) still depends on how much history is sent. The card said data_report.json's ``rows_needed``, what a
    symbol needs to join *training* (the horizon's target rows too): more rows than a forecast needs, and fewer
    than one that history no longer changes."""
    need, settled = RowsNeeded.of(cfg.data, targets=False), RowsNeeded.settled(cfg.data)
    text = f"Each symbol needs at least {need.rows:,} rows of history ({need.why}) for a forecast"
    if settled is None:
        return (text + "; its features do not settle within the rows that can be measured, so a forecast depends on "
                "all the history it is given. ")
    if settled.rows > need.rows:
        text += (f", and {settled.rows:,} ({settled.why}) for one that more history would not change: from fewer, "
                 "recursive indicators (RSI, MACD) have not settled")
    return text + ". "


def card_meta(path: str | Path) -> dict[str, Any] | None:
    """The front matter of the model card ``path`` (``final/README.md``) as written by :func:`model_card`,
    or None for a card that is missing or not one of ours."""
    path = Path(path)
    try:  # as the folder's other files: a regular file inside it, bounded (a pipe or a link to /dev/zero is no card)
        text = folder_files.read_file(path.parent, path.name, folder_files.MAX_JSON_BYTES).decode("utf-8")
    except (DataError, UnicodeDecodeError):
        return None
    end = text.find("\n---\n", 4)
    if not text.startswith("---\n") or end < 0:
        return None
    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return None
    return meta if isinstance(meta, dict) else None


def write_model_card(folder: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Write :func:`model_card` (same arguments) as ``folder/README.md``; returns its path."""
    path = Path(folder) / CARD_NAME
    text = model_card(folder, *args, **kwargs)
    with writing(path):
        path.write_text(text, encoding="utf-8")
    return path
