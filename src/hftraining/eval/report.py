"""The run report: ``report.html`` (plots embedded as base64 PNG, so the one file opens anywhere)
and its Markdown twin ``report.md`` (plots as PNG files in ``report_files/`` beside it).

Sections: config summary, data report, loss and learning-rate curves and validation metrics over
time (from metrics.jsonl), predicted vs realised returns, forecasts over price for a few symbols,
the equity curve and drawdown beside buy-and-hold, and the metric tables with the baselines, the
Diebold–Mariano tests, the Pesaran–Timmermann tests of the forecast signs, the step-1
cross-sectional IC and the model's IC per date over time. Plots use matplotlib's Agg backend (no
display needed).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from hftraining.core.config import ModelConfig
from hftraining.core.errors import writing
from hftraining.core.files import ENSEMBLE_NAME
from hftraining.core.fmt import fmt_p
from hftraining.core.jsonio import read_jsonl
from hftraining.data.pipeline import span_text
from hftraining.data.labels import CROSS_SECTIONAL
from hftraining.eval import metrics as M
from hftraining.eval.backtest import portfolio_label
from hftraining.eval.forecasts import (DIRECTION_NOTE, SIGNIFICANCE, direction_p_text, ic_gap_text, label as forecast_label,
                                      quantile_note)
from hftraining.eval.intervals import ROLLING_DATES, interval_cells, level_labels, rolling_coverage
from hftraining.models import MODELS

MAX_PRICE_SYMBOLS = 3
DPI = 72  # small PNGs: the report must stay fast to write and light to open
IC_ROLLING = 20  # dates in the rolling mean of the per-date IC plot; fewer dates than this: no plot


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a missing or broken side file only drops its section of the report


def trained_world_size(run_dir: str | Path) -> int | None:
    """The number of processes the run ``run_dir`` trained with (its last stretch, when a resume changed
    it): ``rng.world_size`` of its newest checkpoint's trainer_state.json, which saves every rank's
    random states. None without a readable checkpoint (a model fitted without gradient steps has none)."""
    root = Path(run_dir) / "checkpoints"
    try:
        steps = sorted((p for p in root.iterdir() if re.fullmatch(r"step-\d+", p.name)), key=lambda p: int(p.name[5:]))
    except OSError:
        return None
    for folder in reversed(steps):
        state = _read_json(folder / "trainer_state.json")
        w = (state.get("rng") or {}).get("world_size") if isinstance(state, dict) else None
        if isinstance(w, int) and not isinstance(w, bool) and w >= 1:
            return w
    return None


def effective_batch(cfg: dict[str, Any], world_size: int | None) -> tuple[int, str, str] | None:
    """(the batch of one optimizer step, its unit: ``windows`` or ``dates``, the sentence that derives it) from the config dict ``cfg``
    (config.json's content) and the processes trained with: ``data.batch_size`` windows (or
    ``data.dates_per_batch`` as-of dates under ``data.batching: dates``) per process and micro-batch,
    × ``training.gradient_accumulation_steps`` × the world size. None when the world size is unknown."""
    data, training = cfg.get("data") or {}, cfg.get("training") or {}
    dates = data.get("batching") == "dates"
    per, accum = data.get("dates_per_batch" if dates else "batch_size"), training.get("gradient_accumulation_steps", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (per, accum, world_size)):
        return None
    unit = "as-of dates (every symbol of each)" if dates else "windows"
    total = per * accum * world_size
    return total, "dates" if dates else "windows", (f"{total:,} {unit} per optimizer step: {per} per micro-batch × {accum} accumulation "
                   f"step{'s' * (accum != 1)} × {world_size} process{'es' * (world_size != 1)}")


def _num(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, float, np.floating, np.integer)):
        return format(v, spec)
    return str(v)


def config_value(v: Any) -> str:
    """A config value as the report's and the model card's tables show it: a list joined by commas, and a
    setting left unset (None: ``data.data_dir`` of the bundled data; an empty ``model.quantiles``) as a
    dash, as every missing figure (it read "None", or an empty cell)."""
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "—"
    if isinstance(v, dict):  # model.loss_weights: name: weight, as the config writes them
        return ", ".join(f"{k}: {w}" for k, w in v.items()) or "—"
    return "—" if v is None else str(v)


HEAD_OFF = {"model.quantiles": lambda v: isinstance(v, list) and not v,
            "model.classification_threshold": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0}
"""The ``model.*`` keys of a head (:data:`HEAD_KEYS`) → whether a value turns that head off (an empty quantile
list, a threshold of 0)."""


def setting_text(dotted: str, v: Any, cfg: dict[str, Any] | None = None) -> str:
    """The config value ``v`` of the dotted key ``dotted`` as the report's configuration table and the model card's
    key config show it: "off" for a head's key at the value that turns the head off (:data:`HEAD_OFF`), the
    feed-forward width a null ``model.intermediate_size`` stands for (4 × ``model.hidden_size`` of config.json's
    content ``cfg``), each part of the loss with its weight for ``model.loss_weights`` (:func:`loss_weights`), else
    :func:`config_value`. A transformer without a buy/hold/sell head listed
    ``model.classification_threshold: 0.0``, read as a threshold in use, and its feed-forward width as a dash."""
    off = HEAD_OFF.get(dotted)
    if off is not None and off(v):
        return "off"
    model = (cfg or {}).get("model") or {}
    if dotted == "model.loss_weights" and isinstance(v, dict) and model:
        return config_value(loss_weights(model, v))
    hidden = model.get("hidden_size")
    if dotted == "model.intermediate_size" and v is None and isinstance(hidden, int) and not isinstance(hidden, bool):
        return f"{4 * hidden} (4 × model.hidden_size)"
    return config_value(v)


def loss_weights(model: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """Each part of the loss of config.json's ``model`` section with its weight: ``model.loss``, and the
    buy/hold/sell and quantile heads' parts where the heads are on (:data:`HEAD_OFF`), each at its
    ``weights`` entry or 1 where it has none, as :mod:`~hftraining.models.losses` weighs them; an entry of
    no such part is kept as written. ``model.loss_weights: {}`` read "—", as if no loss were weighted, and
    ``{quantile: 0.5}`` "quantile: 0.5", as if that were the whole loss beside the squared error's 1."""
    if not isinstance(model.get("loss"), str):  # a config.json without model.loss: the weights as written
        return dict(weights)
    parts = [model["loss"]]
    parts += [part for part, key in (("classification", "classification_threshold"), ("quantile", "quantiles"))
              if key in model and not HEAD_OFF[f"model.{key}"](model[key])]
    return {**{part: weights.get(part, 1) for part in parts}, **{k: w for k, w in weights.items() if k not in parts}}


SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def _when(iso: str) -> str:
    """A timestamp of data_report.json (ISO 8601, UTC) as the split's text shows it: the date, with the time
    of day where it is not midnight (a cut inside a day of intraday bars: its date alone put that day's
    earlier bars in the wrong split)."""
    day, _, time = str(iso).partition("T")
    if time[:8] in ("", "00:00:00"):
        return day
    return f"{day} {time[:5] if time[5:8] == ':00' else time[:8]} UTC"


def split_text(split: dict[str, Any], scheme: str | None = None) -> str | None:
    """The cut of the data in words, from data_report.json's ``split``: the mode, the shared cut dates of a
    calendar split, then each split's first and last date over the symbols (``split.symbols``, :func:`_periods`):
    ``calendar: validation from 2024-05-17, test from 2025-04-17 (train 2020-02-20 → 2024-05-16, validation
    2024-05-17 → 2025-04-16, test 2025-04-17 → 2026-03-18); embargo 0 rows``. The cut dates alone said where
    the splits meet, not the period the model trained on (its first date is the data's first after the
    features' warm-up) nor where the test ends; a walk-forward fold and a per-symbol split have no shared cut
    date, and such a card said only ``calendar; embargo 0 rows``. ``scheme``: the walk-forward scheme of a fold
    (data_report.json's ``scheme``, :func:`_periods`). None without a split; a report of an older version
    without ``split.symbols`` gives the cut dates alone."""
    if not isinstance(split, dict) or not split:
        return None
    cuts = [f"{SPLIT_NAMES[k[:-5]]} from {_when(split[k])}" for k in ("val_from", "test_from") if split.get(k)]
    periods = _periods(split, scheme)
    said = f"{', '.join(cuts)} ({', '.join(periods)})" if cuts and periods else ", ".join(cuts or periods)
    return f"{split.get('mode', '—')}" + (f": {said}" if said else "") + f"; embargo {split.get('embargo_rows', 0)} rows"


def _periods(split: dict[str, Any], scheme: str | None = None) -> list[str]:
    """Each split's first and last date over the symbols of data_report.json's ``split`` (``split.symbols``:
    {symbol: {split: [first, last] or null}}), in the order train, validation, test: ``["train 2020-02-20 →
    2024-05-16", ...]``. ``scheme``: the walk-forward scheme of a fold: a fold of ``purged_kfold`` trains on the
    rows on both sides of its test block, and the "val" segment holds those after it (no fold of it has
    validation rows): they are said as training dates, before and after the test's, each side by the symbol's
    own test block (a per-symbol split's blocks differ by symbol: a symbol's rows before a later block read as
    after the first, and its card named training dates across the test's). An entry that is not a
    [first, last] pair is left out."""
    symbols = [{k: v for k, v in per.items() if isinstance(v, (list, tuple)) and len(v) == 2}
               for per in (split.get("symbols") or {}).values() if isinstance(per, dict)] \
        if isinstance(split.get("symbols"), dict) else []
    test_from = min((per["test"][0] for per in symbols if per.get("test")), default=None)
    spans: dict[str, list[list[str]]] = {}
    after: list[list[str]] = []  # purged k-fold: training rows after the symbol's test block
    for per in symbols:
        block = per["test"][0] if per.get("test") else test_from  # a symbol without test rows: the fold's
        for name, span in per.items():
            if scheme == "purged_kfold" and name in ("train", "val", "train_after_test") and block is not None and span[1] >= block:
                after.append(span)
            else:
                spans.setdefault("train" if scheme == "purged_kfold" and name == "val" else name, []).append(span)

    def dates(got: list[list[str]]) -> str:
        return f"{_when(min(s[0] for s in got))} → {_when(max(s[1] for s in got))}"

    out = []
    for name in dict.fromkeys([*SPLIT_NAMES, *spans]):
        got = spans.get(name)
        if name == "train" and after:
            out.append("train " + " and ".join(dates(side) for side in (got, after) if side))
        elif got:
            out.append(f"{SPLIT_NAMES.get(name, name)} {dates(got)}")
    return out


def _mse_ratio(a: Any, b: Any) -> float | None:
    """:func:`~hftraining.eval.metrics.mse_ratio` of two MSEs as ``score()`` or eval.json holds them; None
    where one is missing (eval.json writes a MSE that is not finite as null: a report written from it
    failed on None / float)."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return M.mse_ratio(float(a), float(b)) if number(a) and number(b) else None


_MD_SPECIAL = re.compile(r"[\\`*\[\]|]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_MD_ENTITY = {"<": "&lt;", "&": "&amp;", "$": "&#36;", "~": "&#126;"}  # no backslash escape in every dialect


def md_text(text: Any) -> str:
    """``text`` as literal Markdown inline text, fit for a table cell or a heading: the characters
    that would start emphasis, code, a link, raw HTML, an entity, math or strikethrough, or end a
    table cell, are escaped, and line breaks become spaces (as HTML shows them). A symbol is whatever
    a file's ``symbol`` column holds: ``A|B`` split its row into two cells and ``<b>`` was markup.
    An underscore inside a word (``seasonal_naive``) starts nothing and is left alone."""
    flat = " ".join(str(text).splitlines())
    flat = re.sub("[<&$~]", lambda m: _MD_ENTITY[m.group(0)], flat)
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), flat)


def mpl_text(text: Any) -> str:
    """``text`` for a matplotlib title or label: a ``$`` is escaped, since two of them start math
    text (a symbol ``$X^$`` failed the whole report with a mathtext parse error)."""
    return str(text).replace("$", r"\$")


def sentence(text: str) -> str:
    """``text`` ended by a full stop, unless it ends in one already (a verdict of another split ends with its
    in-sample note, "...: not an out-of-sample test.)")."""
    return text if text.endswith((".", ".)")) else text + "."


def p_text(p: Any) -> str:
    """A p-value as the verdicts show it (:func:`~hftraining.core.fmt.fmt_p` at the verdict's level)."""
    return fmt_p(p, SIGNIFICANCE)


class _Doc:
    """Builds the HTML and the Markdown side by side, so the two never drift apart."""

    def __init__(self, title: str, files_dir: Path):
        self.title = title
        self.html: list[str] = []
        self.md: list[str] = [f"# {md_text(title)}", ""]
        self.files_dir = files_dir
        self.images: list[tuple[str, bytes]] = []

    def heading(self, text: str) -> None:
        self.html.append(f"<h2>{html.escape(text)}</h2>")
        self.md += [f"## {md_text(text)}", ""]

    def para(self, text: str, literal: bool = False) -> None:
        """A paragraph; ``literal``: ``text`` holds names from the data (a symbol ``<b>x</b>``, a file ``a_*.csv``),
        so its Markdown is escaped (:func:`md_text`) as a table cell's is."""
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [md_text(text) if literal else text, ""]

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        cells = lambda r, tag: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in r)  # noqa: E731
        self.html.append("<table><tr>" + cells(header, "th") + "</tr>"
                         + "".join("<tr>" + cells(r, "td") + "</tr>" for r in rows) + "</table>")
        self.md += ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
        self.md += ["| " + " | ".join(map(md_text, r)) + " |" for r in rows]
        self.md.append("")

    def figure(self, fig, name: str, caption: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)  # fixed margins: "tight" bboxes cost a second render
        png = buf.getvalue()
        self.images.append((name, png))
        b64 = base64.b64encode(png).decode("ascii")
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        self.md += [f"![{caption}]({self.files_dir.name}/{name}.png)", ""]

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                 "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;"
                 "text-align:right;font-size:90%}th{background:#f3f3f3}img{max-width:100%}figcaption{color:#555;font-size:90%}")
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>" + "\n".join(self.html)
                + "</body></html>\n")
        html_path, md_path = out_dir / "report.html", out_dir / "report.md"
        with writing(out_dir / "report.*"):  # disk full, no permission: one line naming the file
            out_dir.mkdir(parents=True, exist_ok=True)
            self.files_dir.mkdir(parents=True, exist_ok=True)
            drawn = {f"{name}.png" for name, _ in self.images}
            for old in self.files_dir.glob("*.png"):  # an earlier report's plot this one does not draw (it
                if old.name not in drawn and old.is_file() and not old.is_symlink():  # read as this one's)
                    old.unlink()
            for name, png in self.images:
                (self.files_dir / f"{name}.png").write_bytes(png)
            html_path.write_text(page, encoding="utf-8")
            md_path.write_text("\n".join(self.md) + "\n", encoding="utf-8")
        return html_path, md_path


def _years(ns: np.ndarray) -> np.ndarray:
    """int64 ns UTC → fractional calendar years (2025.5 = early July 2025). Plain floats on the
    x axis: matplotlib's datetime conversion and date tick locators took most of the report's time."""
    return 1970.0 + np.asarray(ns, dtype=np.float64) / (365.2425 * 86_400e9)


def _date_ticks(ax) -> None:
    """Label an x axis of :func:`_years` values with dates (2025-08-07), not decimal years: the
    values stay plain floats (fast to draw), only the tick labels are converted."""
    def fmt(x, _pos):
        try:
            return (np.datetime64("1970-01-01") + np.timedelta64(int((x - 1970.0) * 365.2425 * 86400), "s")).astype(
                "datetime64[D]").astype(str)
        except (OverflowError, ValueError):
            return ""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    ax.xaxis.set_major_locator(MaxNLocator(6))


def _percent():
    """A tick formatter of shares as percentages."""
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0)


def _subplots(nrows: int = 1, ncols: int = 1, figsize=(6, 4), **kw):
    """A figure without pyplot: no global state, no GUI backend, always the Agg renderer. (matplotlib is
    imported here, by the plots: a command that imports this module and draws nothing does not pay for it.)"""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, **kw)
    # fixed spacing instead of a layout engine (constrained layout doubles the time of a plot)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.18 if nrows == 1 else 0.1, top=0.88 if nrows == 1 else 0.95,
                        hspace=0.45, wspace=0.45)
    return fig, axes


GRADIENT_KEYS = frozenset({"data.batching", "data.batch_size", "data.dates_per_batch",
                           "training.gradient_accumulation_steps", "training.optimizer", "training.learning_rate",
                           "training.lr_scheduler", "training.max_steps", "training.weight_decay"})
"""The keys of the gradient loop, which a model fitted without optimizer steps (ridge, LightGBM, a naive rule) never
reads: the report's configuration table and the model card leave them out for such a model."""
HEAD_KEYS = (("quantile", "quantiles"), ("classification", "classification_threshold"))
"""(head, the ``model.*`` key that asks for it) of :data:`~hftraining.models.outputs.HEADS`."""
BACKTEST_KEYS = {"backtest_positions": "positions", "backtest_long_only": "long_only", "backtest_max_gross": "max_gross",
                 "backtest_cost_bps": "cost_bps", "backtest_slippage_bps": "slippage_bps", "backtest_signal": "signal"}
"""The ``evaluation.*`` keys of the backtest the configuration table lists → their names in the backtest's
``settings``, which hold the values the backtest ran with."""


def model_keys(cls: type) -> tuple[list[str], bool]:
    """(the ``model.*`` settings the model class ``cls`` reads beside ``model.type``, in the config's order: its
    own (:attr:`~hftraining.models.base.ForecastModel.settings`), the loss (and the weights of its parts, for a
    model trained by optimizer steps), and the keys of the heads it has; whether it trains by optimizer steps).
    The report's table left out ``model.loss`` (an IC or ListNet loss leaves the forecast's scale free: the MSE
    figures of such a model are not those of an MSE fit), and the report and the card
    ``model.classification_threshold``: a buy/hold/sell head's classes were nowhere said."""
    own = [f.name for f in dataclasses.fields(ModelConfig) if f.name in cls.settings]
    trained = bool(cls.needs_training)
    common = ["loss", *(["loss_weights"] if trained else []), *(key for head, key in HEAD_KEYS if head in cls.heads)]
    return own + common, trained


def model_reads(model_type: Any) -> tuple[list[str], bool] | None:
    """:func:`model_keys` of the registered model type ``model_type``; None for a type this version does not
    register. The report's configuration table listed ``model.hidden_size``,
    ``num_heads``, ``num_layers`` and ``dropout``, the optimizer, the learning rate, the steps and the batch of
    every run: a ridge or LightGBM model read as a 512-wide transformer trained for 1,000 steps, and its own
    settings (``model.ridge_lags``, ``model.ridge_lambdas``) were not shown."""
    if not isinstance(model_type, str) or model_type not in MODELS.names():
        return None
    return model_keys(MODELS.get(model_type))


def unread_keys(cfg: dict[str, Any], trained: bool) -> set[str]:
    """The dotted keys of config.json's content ``cfg`` that the run did not read, of those the report and the
    card list: the gradient loop's for a model fitted without optimizer steps (:data:`GRADIENT_KEYS`), and the
    batch size of the batching not chosen: ``data.batch_size`` under ``data.batching: dates`` (whose micro-batch
    is ``data.dates_per_batch`` dates), ``data.dates_per_batch`` under ``windows``; ``data.train_ratio`` and
    ``data.val_ratio`` beside ``data.split_dates`` (unless they cut ``tune.folds``' folds), ``data.split_dates``
    when null. The table of a dates-batched run listed the batch_size it ignored, and not the dates_per_batch it
    batched by."""
    data = cfg.get("data") or {}
    dates = data.get("batching") == "dates"
    folds = (cfg.get("tune") or {}).get("folds")
    # data.split_dates cut the splits, and the ratios are read only where they cut tune.folds' folds
    # (core.config.check_ignored): the table listed train_ratio 0.7 beside cut dates it did not show
    if data.get("split_dates") is None:
        cut = {"data.split_dates"}
    else:
        cut = set() if isinstance(folds, int) and folds >= 2 else {"data.train_ratio", "data.val_ratio"}
    batch = {"data.dates_per_batch" if not dates else "data.batch_size"}
    return (set() if trained else set(GRADIENT_KEYS)) | batch | cut


def _config_section(doc: _Doc, cfg: dict[str, Any] | None, world_size: int | None = None,
                    backtest: dict[str, Any] | None = None) -> None:
    """The key settings of config.json; ``world_size``: the processes the run trained with
    (:func:`trained_world_size`), which with the per-process batch gives the batch of an optimizer step;
    ``backtest``: the backtest of this report, whose settings (:data:`BACKTEST_KEYS`) are given instead of
    config.json's: ``hftraining evaluate --set evaluation.backtest_cost_bps=50`` backtests at 50 bps, and the
    table said the run's 5."""
    if not cfg:
        return
    doc.heading("Configuration")
    reads = model_reads((cfg.get("model") or {}).get("type"))
    keys = {
        "model": ["type", *(reads[0] if reads else ("hidden_size", "num_heads", "num_layers", "dropout", "loss",
                                                    "quantiles"))],
        "data": ["data_dir", "symbols", "target", "sequence_length", "prediction_horizon", "batching", "batch_size",
                 "dates_per_batch", "features", "split_dates", "train_ratio", "val_ratio", "embargo", "scaler"],
        "training": ["optimizer", "learning_rate", "lr_scheduler", "max_steps", "gradient_accumulation_steps",
                     "weight_decay", "precision", "seed"],
        "evaluation": list(BACKTEST_KEYS),
    }
    trained = reads is None or reads[1]  # a model fitted without optimizer steps reads no gradient loop's setting
    unread = unread_keys(cfg, trained)
    ran = (backtest or {}).get("settings") or {}
    values = {**{sec: dict(cfg.get(sec) or {}) for sec in keys},
              "evaluation": {**(cfg.get("evaluation") or {}),
                             **{k: ran[name] for k, name in BACKTEST_KEYS.items() if name in ran}}}
    rows = []
    for sec, names in keys.items():
        for k in names:
            if k in values[sec] and f"{sec}.{k}" not in unread:
                rows.append([f"{sec}.{k}", setting_text(f"{sec}.{k}", values[sec][k], cfg)])
    if world_size is not None and trained:  # data.batch_size is per process: what one optimizer step averaged over
        rows.append(["processes (world size)", world_size])
        batch = effective_batch(cfg, world_size)
        if batch is not None:
            rows.append(["effective batch", batch[2]])
    doc.table(["key", "value"], rows)


def _data_section(doc: _Doc, rep: dict[str, Any] | None) -> None:
    if not rep:
        return
    doc.heading("Data of the training run (data_report.json)")  # whatever data this report scores
    rows = [["symbols", ", ".join(rep.get("symbols", []))],
            ["skipped symbols", _named(skipped_symbols(rep), ", ") or "none"]]
    cut = split_text(rep.get("split") or {}, rep.get("scheme"))
    if cut:  # the training run's dates per split (a dict, which the loop below leaves out: no date was named)
        rows.append(["split", cut])
    for split, n in (rep.get("windows") or {}).items():
        rows.append([f"{split} windows", n])
    for k, v in rep.items():
        if k not in ("symbols", "skipped_symbols", "windows") and isinstance(v, (int, float, str)):
            rows.append([k, v])
    doc.table(["item", "value"], rows)
    warned = data_warnings(rep)
    if warned:  # said to the console as the data were read; a reader of the report alone saw none of them
        doc.heading("Data warnings")
        for key, why in warned:
            doc.para(f"{key}: {why}", literal=True)


DATA_WARNINGS = ("long_gaps", "unread_files", "mixed_stamps", "zoneless_stamps", "mixed_spacings",
                 "max_gap_without_windows", "too_few_rows", "skipped_symbols")
"""The keys of data_report.json that hold a warning about the data read: windows read across a symbol's halt
(``long_gaps``), files of the folder not read (``unread_files``), days or bars stamped at other times by other
files (``mixed_stamps``), zoneless intraday stamps read as UTC (``zoneless_stamps``), each ``{..., "why": line}``;
a panel of bars of other spacings under a cross-section (``mixed_spacings``: {symbol: seconds}), symbols that
``data.max_gap`` leaves without windows in a split (``max_gap_without_windows``: {symbol: [split, ...]}), and
symbols left out for too few rows, by validation (``too_few_rows``: {symbol: line}) or after the features'
warm-up (``skipped_symbols``: [symbol, ...]). The report's "Data warnings" and the model card state each in one
line (:func:`data_warnings`)."""
MAX_WARNED = 5  # symbols a warning line names; more are counted


def skipped_symbols(rep: dict[str, Any]) -> list[str]:
    """The symbols of the data read that the run left out for too few rows, from data_report.json's content
    ``rep``: those validation left unusable (``too_few_rows``) and those the features' warm-up left short
    (``skipped_symbols``), in that order, each once. The report's "skipped symbols" read the second alone, and
    said "none" of a run that left a short file's symbol out."""
    found = [rep.get(k) for k in ("too_few_rows", "skipped_symbols")]
    return list(dict.fromkeys(str(s) for v in found if isinstance(v, (list, dict)) for s in v))


def _named(items: list[str], sep: str = "; ") -> str:
    """The first :data:`MAX_WARNED` of ``items`` joined by ``sep``, and how many more (thousands of skipped
    symbols: one line)."""
    more = f"{sep}and {len(items) - MAX_WARNED} more" if len(items) > MAX_WARNED else ""
    return sep.join(items[:MAX_WARNED]) + more


def _seconds(v: Any) -> str:
    """A bar spacing of ``mixed_spacings`` in words (``1 day``, ``30 minutes``)."""
    return span_text(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def data_warnings(rep: dict[str, Any] | None) -> list[tuple[str, str]]:
    """[(key, its one line)] for each warning of :data:`DATA_WARNINGS` the data report ``rep``
    (data_report.json's content) holds, in that order; [] for none, or no report. A key whose value is
    empty is no warning (``too_few_rows: {}``); one of a shape this version does not write (a report of an
    older version) is named, pointing at the file, rather than left out."""
    out: list[tuple[str, str]] = []
    for key in DATA_WARNINGS:
        v = (rep or {}).get(key)
        if not v:
            continue
        if key in DATA_WARNINGS[:4] and isinstance(v, dict) and isinstance(v.get("why"), str):
            line = v["why"]  # (the others are keyed by symbol: a symbol may be named "why")
        elif key == "mixed_spacings" and isinstance(v, dict):
            line = (f"the panel mixes bars of other spacings ({_named([f'{s}: {_seconds(t)}' for s, t in v.items()])}), "
                    "and its market features or cross-sectional labels are computed across the symbols of each "
                    "timestamp: a longer bar stamped at an instant, or a bar of several days stamped with its date, "
                    "enters the cross-section of the shorter bars that close before it does (a daily bar stamped "
                    "with its date is read from the end of its day: train.log's warning names the symbols)")
        elif key == "max_gap_without_windows" and isinstance(v, dict):
            line = (f"data.max_gap leaves {len(v)} symbol{'s' * (len(v) != 1)} without windows in a split that their "
                    "rows hold windows for without it (no run of their rows between longer gaps holds a window): "
                    + _named([f"{s} ({', '.join(map(str, splits)) if isinstance(splits, list) else splits})"
                              for s, splits in v.items()]))
        elif key == "too_few_rows" and isinstance(v, dict):
            line = (f"{len(v)} symbol{'s' * (len(v) != 1)} left out by validation, with fewer rows than one window "
                    f"needs: {_named([str(why) for why in v.values()])}")
        elif key == "skipped_symbols" and isinstance(v, (list, dict)):
            names = [str(s) for s in v]
            line = (f"{len(names)} symbol{'s' * (len(names) != 1)} left out with fewer rows than one window needs "
                    f"after the features' warm-up: {_named(names)}")
        else:
            line = "see data_report.json"
        out.append((key, line))
    return out


def _training_section(doc: _Doc, recs: list[dict[str, Any]]) -> None:
    train = [r for r in recs if "loss" in r and "learning_rate" in r]
    evals = [r for r in recs if any(k.startswith("eval_") for k in r)]
    if not train and not evals:
        return
    doc.heading("Training")
    if train:
        fig, (a1, a2) = _subplots(1, 2, figsize=(10, 3))
        a1.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
        if evals and any("eval_loss" in r for r in evals):
            ev = [r for r in evals if "eval_loss" in r]
            a1.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="validation loss")
        a1.set_xlabel("optimizer step"), a1.set_title("loss (scaled units)"), a1.legend()
        a2.plot([r["step"] for r in train], [r["learning_rate"] for r in train], color="C2")
        a2.set_xlabel("optimizer step"), a2.set_title("learning rate")
        doc.figure(fig, "training_curves", "Training loss and learning rate per logged step")
    if evals:
        names = [k for k in ("eval_mse_vs_zero", "eval_directional_accuracy", "eval_mae") if any(k in r for r in evals)]
        if names:
            fig, axes = _subplots(1, len(names), figsize=(3.6 * len(names), 3), squeeze=False)
            for ax, k in zip(axes[0], names):
                pts = [(r["step"], r[k]) for r in evals if k in r and r[k] is not None]
                ax.plot(*zip(*pts), "o-") if pts else None
                ref = {"eval_mse_vs_zero": 1.0, "eval_directional_accuracy": 0.5}.get(k)
                if ref is not None:
                    ax.axhline(ref, color="grey", ls="--", lw=1)
                ax.set_title(k.removeprefix("eval_")), ax.set_xlabel("optimizer step")
                ax.ticklabel_format(axis="y", useOffset=False)  # show 0.9995, not "+1" and -0.0005
            doc.figure(fig, "validation_metrics", "Validation metrics over training (dashed: the zero-return forecast)")


def scored_text(result: dict[str, Any]) -> str:
    """What a split cut by ``evaluation.max_test_windows`` scored, as eval.json says it (``windows_scored`` of
    ``windows_in_split``), to follow the count of windows; empty when the whole split was scored."""
    if "windows_scored" not in result:
        return ""
    return (f" (the last dates' {result['windows_scored']} of the split's {result['windows_in_split']} windows: "
            "evaluation.max_test_windows)")


def _metrics_section(doc: _Doc, result: dict[str, Any], fc=None) -> None:
    doc.heading(f"Forecast metrics ({result.get('split', 'test')} split)")
    doc.para(f"{result['n_windows']} windows{scored_text(result)} × {result['horizon']} steps, {result.get('n_symbols', '?')} symbols, "
             f"{result.get('n_dates', '?')} dates; {result.get('units', 'log returns')}. IC: Spearman correlation of forecast and realised "
             "return across symbols per date and step, averaged over every (date, step) with at least 3 symbols; "
             "IC pooled: over all pairs.")
    dm = result.get("dm", {})
    rows = []
    named = [("model", "model", result["model"])] + [(n, forecast_label(n), m) for n, m in result["baselines"].items()]
    # an ensemble's members, on the same windows, under the console's names (forecasts.format_table)
    named += [(n, f"member:{n}", m) for n, m in (result.get("members") or {}).items()]
    for name, shown, m in named:
        d = dm.get(name, {})
        rows.append([shown, _num(m["mse"], ".6g"), _num(m["mae"], ".6g"), _num(m["directional_accuracy"], ".4f"),
                     direction_p_text(m), _num(m.get("ic"), ".4f"), _num(m.get("ic_pooled"), ".4f"),
                     M.dm_statistic_text(d), p_text(d.get("p_value"))])
    doc.table(["forecast", "MSE", "MAE", "dir. acc.", "PT p (step 1)", "IC", "IC pooled", "DM stat (model vs)", "DM p"],
              rows)
    doc.para(result.get("verdict", ""))
    doc.para(f"dir. acc.: share of forecast signs that match the realised sign, over all {result['horizon']} steps "
             f"(a zero forecast counts half; a zero return is left out). {DIRECTION_NOTE}; its hit rate is the step-1 "
             "accuracy of the step table, and each step is tested there on its own (Pesaran and Timmermann 1992).")
    doc.para("Diebold–Mariano: squared-error loss of each window averaged over its H steps and over the symbols of "
             f"each date; long-run variance to lag H−1 = {result['horizon'] - 1}, the larger of the rectangular (Diebold–Mariano) "
             "and Bartlett (Newey–West) estimates; the Harvey–Leybourne–Newbold correction and Student's t"
             f"{M.dm_floor_text(result)}; a negative statistic means the model's loss is lower.")
    steps = result.get("per_step", {})
    if steps:
        header = (["step"] + [f"{forecast_label(n)} MSE" for n in steps]
                  + ["model dir. acc.", "model PT p", "model IC", "DM p vs zero"])
        per = result.get("dm_vs_zero_per_step", [])
        rows = []
        for h in range(result["horizon"]):
            rows.append([h + 1] + [_num(steps[n][h]["mse"], ".5g") for n in steps]
                        + [_num(steps["model"][h]["directional_accuracy"], ".4f"), direction_p_text(steps["model"][h]),
                           _num(steps["model"][h]["ic"], ".4f"),
                           p_text(per[h]["p_value"]) if h < len(per) else "—"])
        doc.table(header, rows)
    sym = (result.get("per_symbol") or {}).get("model")
    if sym:
        zero = result["per_symbol"].get("zero", {})
        rows = [[s, m["n_windows"], _num(m["mse"], ".5g"), _num(zero.get(s, {}).get("mse"), ".5g"),
                 _num(_mse_ratio(m["mse"], zero.get(s, {}).get("mse")), ".4f"),
                 _num(m["directional_accuracy"], ".4f"), direction_p_text(m), _num(m["ic_pooled"], ".4f")]
                for s, m in sym.items()]
        doc.table(["symbol", "windows", "model MSE", f"{forecast_label('zero')} MSE", "ratio", "dir. acc.",
                   "PT p (step 1)", "IC (time series)"], rows)
    if "pinball_mean" in result["model"]:
        rows = [[k, _num(v, ".6g")] for k, v in result["model"]["pinball"].items()]
        rows.append(["mean pinball loss", _num(result["model"]["pinball_mean"], ".6g")])
        rows += [[f"coverage {k}", _num(v, ".3f")] for k, v in result["model"]["coverage"].items()]
        if quantile_note(result):
            rows.append(["coverage", quantile_note(result).strip(" ()")])
        doc.table(["quantile head", "value"], rows)
    c = result["model"].get("classes")
    if c:
        doc.table(["buy/hold/sell head", "model", "the windows' class shares"],
                  [["log loss", _num(c["log_loss"], ".4f"), _num(c["log_loss_shares"], ".4f")],
                   ["Brier score", _num(c["brier"], ".4f"), _num(c["brier_shares"], ".4f")],
                   ["accuracy", _num(c["accuracy"], ".4f"), _num(c["accuracy_shares"], ".4f")]])
        doc.para(c["verdict"])
    _cross_section(doc, result, fc)


def _cross_section(doc: _Doc, result: dict[str, Any], fc) -> None:
    """The step-1 cross-sectional IC table of every forecast and the model's per-date IC over time
    (the series is computed here from ``fc``, not stored in eval.json)."""
    named = [("model", result["model"])] + list(result["baselines"].items())
    named = [(n, m["cross_section"]) for n, m in named if "cross_section" in m]
    if not named:
        return
    lag = named[0][1]["ic"].get("lag", 0)
    doc.para(f"Cross-section, step 1: per date, the Pearson (IC) and Spearman (Rank IC) correlation of the 1-step "
             f"forecast with the realised return across the symbols of that date (dates with ≥ {M.MIN_CROSS_SECTION} "
             f"symbols); ICIR = mean / std over dates; t: Newey–West t-statistic of the mean, lag {lag} (1-step "
             "targets of consecutive dates do not overlap); IC > 0: share of dates with a positive IC.")
    rows = [[forecast_label(n), c["ic"]["n_dates"], _num(c["ic"]["mean"], ".4f"), _num(c["ic"]["std"], ".4f"), _num(c["ic"]["icir"], ".3f"),
             _num(c["ic"]["t_stat"], ".2f"), _num(c["ic"]["positive_share"], ".3f"), _num(c["rank_ic"]["mean"], ".4f"),
             _num(c["rank_ic"]["icir"], ".3f"), _num(c["rank_ic"]["t_stat"], ".2f"), _num(c["rank_ic"]["positive_share"], ".3f")]
            for n, c in named]
    doc.table(["forecast", "dates", "IC mean", "IC std", "ICIR", "IC t", "IC > 0", "Rank IC mean", "Rank ICIR",
               "Rank IC t", "Rank IC > 0"], rows)
    if fc is None or len(fc) == 0:
        return
    pred, true = fc.pred["model"][:, 0], fc.true[:, 0]
    codes = np.unique(fc.dates, return_inverse=True)[1]  # the dates sorted once for both series (the same result)
    d, ic = M.cross_sectional_ic_series(pred, true, fc.dates, min_size=M.MIN_CROSS_SECTION, date_codes=codes)
    _, ric = M.cross_sectional_ic_series(pred, true, fc.dates, min_size=M.MIN_CROSS_SECTION, rank=True, date_codes=codes)
    if len(ic) < IC_ROLLING:
        return
    t = _years(d)
    kernel = np.ones(IC_ROLLING) / IC_ROLLING
    fig, ax = _subplots(figsize=(10, 3))
    ax.plot(t, ic, ".", ms=3, alpha=0.35, color="C0", label="IC per date")
    ax.plot(t[IC_ROLLING - 1:], np.convolve(ic, kernel, mode="valid"), color="C0", lw=1.5,
            label=f"IC, {IC_ROLLING}-date rolling mean")
    if len(ric) == len(ic):  # the same dates (constant dates are left out of both)
        ax.plot(t[IC_ROLLING - 1:], np.convolve(ric, kernel, mode="valid"), color="C1", lw=1, ls="--",
                label=f"Rank IC, {IC_ROLLING}-date rolling mean")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylim(-1.05, 1.05), ax.set_xlabel("date"), ax.legend(fontsize=8, loc="lower left")
    _date_ticks(ax)
    ax.set_title("model: step-1 cross-sectional IC per date", fontsize=10)
    doc.figure(fig, "ic_over_time", f"The model's step-1 cross-sectional IC per date and its {IC_ROLLING}-date rolling mean")


def _forecast_plots(doc: _Doc, fc) -> None:
    if fc is None or len(fc) == 0:
        return
    doc.heading("Forecasts")
    pred, true = fc.pred["model"][:, 0], fc.true[:, 0]
    fig, ax = _subplots(figsize=(4.5, 4))
    ax.scatter(pred, true, s=4, alpha=0.4)
    # the scale of the finite labels only: a label that is NaN or ±inf (forecasts built by hand) made the
    # limit NaN or inf, which matplotlib refuses, and the whole report failed
    finite = np.abs(true[np.isfinite(true)])
    lim = float(np.percentile(finite, 99)) if finite.size else 0.0
    ax.set_ylim(-(lim or 1.0), lim or 1.0)
    ax.axhline(0, color="grey", lw=0.5), ax.axvline(0, color="grey", lw=0.5)
    what = "log return" if fc.target == "return" else fc.target
    ax.set_xlabel(f"forecast 1-step {what}"), ax.set_ylabel(f"realised 1-step {what}")
    doc.figure(fig, "pred_vs_realised", f"Predicted vs realised 1-step {what}, every window")
    if fc.target != "return":  # a label that is not the symbol's own return has no price path
        return
    counts = np.bincount(fc.symbol_ids, minlength=len(fc.symbols))
    chosen = [int(i) for i in np.argsort(-counts)[:MAX_PRICE_SYMBOLS] if counts[i]]
    fig, axes = _subplots(len(chosen), 1, figsize=(10, 2.6 * len(chosen)), squeeze=False)
    H = fc.true.shape[1]
    for ax, k in zip(axes[:, 0], chosen):
        m = np.flatnonzero(fc.symbol_ids == k)
        m = m[np.argsort(fc.dates[m])]
        ax.plot(_years(fc.dates[m]), fc.last_close[m], color="black", lw=1, label="close")
        # forecast paths every H origins: the close compounded with the forecast log returns; all
        # paths in one line object, separated by NaN (one artist draws much faster than dozens)
        xs, ys = [], []
        for idx in range(0, len(m), H):
            j = m[idx]
            path = fc.last_close[j] * np.exp(np.concatenate([[0.0], np.cumsum(fc.pred["model"][j])]))
            tt = fc.dates[m[idx : idx + H + 1]]
            xs += [tt, [tt[-1]]]
            ys += [path[: len(tt)], [np.nan]]
        if xs:
            ax.plot(_years(np.concatenate(xs)), np.concatenate(ys), color="C1", lw=1)
        ax.set_title(f"{mpl_text(fc.symbols[k])}: close and {H}-step forecast paths (orange)", fontsize=10)
    axes[-1, 0].set_xlabel("date")
    for ax in axes[:, 0]:
        _date_ticks(ax)
    doc.figure(fig, "forecast_over_price", "Forecasts over price for the symbols with the most windows")


def _backtest_section(doc: _Doc, bt: dict[str, Any] | None, strongest: str | None = None) -> None:
    """The backtest table and plots; ``strongest``: the strategy name of the baseline the verdict names."""
    if not bt:
        return
    s = bt["settings"]
    doc.heading("Backtest")
    label = portfolio_label(s)
    doc.para(f"{label[0].upper()}{label[1:]}, gross exposure ≤ "
             f"{s['max_gross']:g}, costs {s['cost_bps']:g} bps + slippage {s['slippage_bps']:g} bps of traded notional, "
             f"signal {s['signal']}; {s['periods_per_year']:g} periods per year ({s['periods_per_year_from']}). "
             f"Timing: {s['timing']}. Buy-and-hold: {s['buy_and_hold']}."
             + (f" Missing rows: {s['no_row']}." if "no_row" in s else "")
             + (f" Top-k portfolio: {s['topk_rule']}." if "topk_rule" in s else "")
             + (f" Equal weight: {s['equal_weight']}." if "equal_weight" in s else ""))
    has_ir = any("information_ratio" in m for m in bt["strategies"].values())
    rows = []
    for name, m in bt["strategies"].items():
        if not m.get("n_periods"):
            continue
        rows.append([name, _num(m["total_return"], ".2%"), _num(m["annual_return"], ".2%"), _num(m["annual_volatility"], ".2%"),
                     _num(m["sharpe"], ".2f"), _num(m["sortino"], ".2f"), _num(m["max_drawdown"], ".2%"),
                     _num(m["calmar"], ".2f"), _num(m["turnover"], ".3f"), _num(m["hit_rate"], ".3f")]
                    + ([_num(m.get("information_ratio"), ".2f")] if has_ir else []))
    if rows:
        doc.table(["strategy", "total", "annual", "vol", "Sharpe", "Sortino", "max DD", "Calmar", "turnover", "hit rate"]
                  + (["IR vs equal weight"] if has_ir else []), rows)
    else:  # one date: no period from one date's close to the next (the table was a header without a row)
        n = s["n_dates"]
        doc.para(f"No strategy has a period to backtest: a period runs from one forecast date's close to the next, and "
                 f"the forecasts have {n} date{'' if n == 1 else 's'}.")
    warnings = [f"{n}: {m['warning']}" for n, m in bt["strategies"].items() if "warning" in m]
    if "warning" in s:
        warnings.append(f"settings: {s['warning']}")
    for w in warnings:
        doc.para("WARNING " + w)
    curves = bt.get("curves") or {}
    names = ["model", *([strongest] if strongest else []), "buy_and_hold", "naive:drift"]
    names = [n for n in dict.fromkeys(names) if n in curves and len(curves[n][1])]  # the strongest baseline once
    if not names:  # no period to draw (one date): no empty axes
        return
    fig, (a1, a2) = _subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for name in names:
        x, eq = equity_points(*curves[name], bt["dates"])
        t = _years(x)
        shown_name = f"{name} (strongest baseline)" if name == strongest else name
        a1.plot(t, eq, label=shown_name)
        a2.plot(t, eq / np.maximum.accumulate(eq) - 1.0, label=shown_name)  # eq starts at 1: the first peak
    a1.set_title("equity (net of costs, start = 1)"), a1.legend(fontsize=8)
    a2.set_title("drawdown"), a2.legend(fontsize=8), a2.set_xlabel("date")
    _date_ticks(a2)
    doc.figure(fig, "equity_drawdown", "Equity curve and drawdown of the model strategy beside the strongest baseline, "
                                       "buy-and-hold and the drift forecast")
    if s.get("portfolio") == "topk":
        _topk_plot(doc, s, curves, bt["dates"])


def equity_points(opened: np.ndarray, returns: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a backtest curve's equity plot: (x (P + 1,) int64 ns, equity (P + 1,), start = 1).

    ``opened`` (P,): the decision dates that open the curve's periods, ``returns`` (P,) their net simple
    returns (a curve of :func:`hftraining.eval.backtest.backtest_forecasts`), ``dates`` (T,) the backtest's
    dates. Each period's equity is drawn at the close of the date that ends it (the next of ``dates``), where
    its return is realised, not at the close that opened it (a move drawn a period before it happened), and
    the line starts from the capital of 1 at the first decision date."""
    dates = np.asarray(dates, dtype=np.int64)
    ends = dates[np.searchsorted(dates, np.asarray(opened, dtype=np.int64)) + 1]  # (P,)
    return np.concatenate([np.asarray(opened[:1], dtype=np.int64), ends]), np.concatenate([[1.0], np.cumprod(1.0 + returns)])


def _topk_plot(doc: _Doc, s: dict[str, Any], curves: dict[str, Any], dates: np.ndarray) -> None:
    """Cumulative return of the model's top-k portfolio beside the equal-weight universe (its benchmark)."""
    shown = [n for n in ("model", "equal_weight") if n in curves and len(curves[n][1])]
    if "model" not in shown:
        return
    side = "long-only" if s["long_only"] else "long-short"
    fig, ax = _subplots(figsize=(10, 3.5))
    for name, label, color in (("model", f"model top-{s['topk']} {side}", "C0"), ("equal_weight", "equal-weight universe", "grey")):
        if name in shown:
            x, eq = equity_points(*curves[name], dates)
            ax.plot(_years(x), eq - 1.0, label=label, color=color)
    ax.axhline(0, color="grey", lw=0.5)
    ax.yaxis.set_major_formatter(_percent())
    ax.set_title(f"cumulative return (net of costs), {portfolio_label(s)}", fontsize=10)
    ax.set_xlabel("date"), ax.legend(fontsize=8)
    _date_ticks(ax)
    doc.figure(fig, "topk_portfolio", f"Cumulative return of the model's top-{s['topk']} {side} portfolio beside the "
                                      "equal-weight universe")


def _verdict_section(doc: _Doc, result: dict[str, Any], bt: dict[str, Any] | None) -> None:
    """The top of the report: the model beside the strongest baseline, and the verdict in words. A
    cross-sectional label is judged first on its rank IC (its strongest baseline: the best rank IC)."""
    cs_first = result.get("target") in CROSS_SECTIONAL and "cross_section_strongest" in result
    sb = result["cross_section_strongest"] if cs_first else result.get("strongest_baseline")
    split = result.get("split", "test")  # another split (evaluate --split) is named: eval.json holds the test split's
    doc.heading(("Verdict" if split == "test" else f"Verdict on the {split} split") + ": the model against the strongest "
                "baseline" + (" by rank IC" if cs_first else ""))
    if sb:
        base = result["baselines"][sb["name"]]
        strategies = (bt or {}).get("strategies", {})
        shown = forecast_label(sb["name"])  # as the verdict, the console and the backtest table name it
        zero_mse = result["baselines"]["zero"]["mse"]  # score() always scores the zero forecast
        rows = []
        for name, m, strat in (("model", result["model"], strategies.get("model")),
                               (f"{shown} (strongest baseline)", base, strategies.get(shown))):
            cs = m.get("cross_section", {}).get("rank_ic", {})
            rows.append([name, _num(m["mse"], ".6g"), _num(_mse_ratio(m["mse"], zero_mse), ".4f"),
                         _num(cs.get("mean"), ".4f"), _num(cs.get("t_stat"), ".2f"), _num((strat or {}).get("sharpe"), ".2f")])
        doc.table(["forecast", "MSE", "MSE / zero", "rank IC (step 1)", "rank IC t", "backtest Sharpe"], rows)
        if cs_first:
            d = sb["difference"]
            # where the two rank on other dates, the difference is not of the two means in the table above: say whose
            doc.para(f"Paired test of the per-date rank IC, model − {shown}: mean {ic_gap_text(d, shown)}, "
                     f"t = {_num(d.get('t_stat'), '.2f')}, p = {p_text(d.get('p_value'))} over {d.get('n_dates')} dates.")
        else:
            doc.para(f"Diebold–Mariano, model against {shown}: statistic {M.dm_statistic_text(sb['dm'])}, "
                     f"p = {p_text(sb['dm'].get('p_value'))}.")
    doc.para(result.get("verdict", ""))
    if cs_first and result.get("mse_verdict"):
        doc.para(sentence(f"On squared error: {result['mse_verdict']}"))
    rank_dates = ((result["model"].get("cross_section") or {}).get("rank_ic") or {}).get("n_dates")
    if not cs_first and rank_dates and result.get("cross_section_verdict"):  # as the console prints it
        doc.para(sentence(f"On the cross-section: {result['cross_section_verdict']}"))


def write_report(
    out_dir: str | Path,
    result: dict[str, Any] | None = None,
    fc=None,
    backtest: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/report.md`` (+ ``out_dir/report_files/*.png``).

    ``result``: the output of :func:`hftraining.eval.forecasts.score`; ``fc``: its Forecasts;
    ``backtest``: the output of :func:`hftraining.eval.backtest.backtest_forecasts`; ``run_dir``:
    where config.json, data_report.json and metrics.jsonl are read from (missing ones are skipped;
    metrics.jsonl through :func:`hftraining.core.jsonio.read_jsonl`).
    Returns the two paths.
    """
    out = Path(out_dir)
    run = Path(run_dir) if run_dir is not None else out
    doc = _Doc(title or f"hftraining report: {run.name}", out / "report_files")
    if result:
        _verdict_section(doc, result, backtest)
    _ensemble_section(doc, _read_json(run / ENSEMBLE_NAME))
    _config_section(doc, _read_json(run / "config.json"), trained_world_size(run), backtest)
    _data_section(doc, _read_json(run / "data_report.json"))
    metrics = run / "metrics.jsonl"  # a killed run's half-written last line is skipped; a corrupt line: DataError
    _training_section(doc, read_jsonl(metrics) if metrics.is_file() else [])
    if result:
        _metrics_section(doc, result, fc)
    _forecast_plots(doc, fc)
    if result and "intervals" in result:
        _interval_section(doc, result["intervals"], fc)
    _backtest_section(doc, backtest, _strongest_label(result))
    return doc.write(out)




def _ensemble_section(doc: _Doc, meta: Any) -> None:
    """What an ensemble folder's forecast is, from its ensemble.json ``meta``: the method that combines the
    members, each member's share of the forecast (``weighted``: its weight of ensemble.json, normalised as the
    ensemble normalises it; ``mean``: 1/M; ``median``: none) beside the folder it was copied from and its
    validation MSE (what ``weighted`` weighs by). Nothing for a run folder (no ensemble.json). The metric
    table's ``member:member-<k>`` rows are these members."""
    if not isinstance(meta, dict) or not isinstance(meta.get("members"), list) or not meta["members"]:
        return
    members, method = meta["members"], meta.get("method")
    n = len(members)
    weights, sources, scores = (meta.get(k) if isinstance(meta.get(k), list) and len(meta[k]) == n else [None] * n
                                for k in ("weights", "sources", "validation_mse"))
    if method == "weighted" and all(isinstance(w, (int, float)) for w in weights) and sum(weights) > 0:
        top = max(weights)  # divided by the largest first, as the ensemble does: weights near 1e308 sum to inf
        shares = [(w / top) / sum(v / top for v in weights) for w in weights]
        how = "the weighted mean, weights ∝ 1 / each member's validation MSE"
    elif method == "median":
        shares, how = [None] * n, "the median (no weights)"
    else:
        shares, how = [1.0 / n] * n, "the mean, equal weights"
    doc.heading("Ensemble")
    doc.para(f"The forecast is {how}, of {n} members' forecasts (ensemble.json, method {method}); each member's "
             "test metrics are its row member:<member> of the forecast metrics.", literal=True)
    doc.table(["member", "copied from", "weight", "validation MSE"],
              [[Path(str(m)).name, config_value(src), _num(w, ".4f"), _num(v, ".6g")]
               for m, src, w, v in zip(members, sources, shares, scores)])


def _strongest_label(result: dict[str, Any] | None) -> str | None:
    """The backtest name (``fitted:ridge``) of the baseline the verdict names, or None."""
    if not result:
        return None
    sb = result.get("cross_section_strongest") if result.get("target") in CROSS_SECTIONAL else None
    sb = sb or result.get("strongest_baseline")
    return forecast_label(sb["name"]) if sb else None


def _per_symbol_range(ps: dict[str, Any] | None) -> str:
    """The lowest and highest step-1 coverage of one symbol, with the symbols and how many symbols' own
    Kupiec tests reject; a dash where eval.json has none (written before it gave them, or no symbol)."""
    if not ps or not ps.get("n_symbols"):
        return "—"
    if ps["n_symbols"] == 1:
        return f"{ps['min']['coverage']:.3f} (1 symbol)"
    return (f"{ps['min']['coverage']:.3f} ({ps['min']['symbol']}) – {ps['max']['coverage']:.3f} ({ps['max']['symbol']}); "
            f"{ps['kupiec_rejected']} of {ps['n_symbols']} reject at {ps['significance']:g}")


def _interval_section(doc: _Doc, rep: dict[str, Any], fc) -> None:
    """Coverage, width, Winkler score and the Kupiec / Christoffersen tests per level, the sentence,
    and the step-1 coverage over time per level beside its nominal level."""
    doc.heading("Forecast intervals")
    scores = ("distances outside the quantile head's band" if rep["method"] == "cqr" else "absolute residuals")
    doc.para(f"{rep['method']} conformal intervals, calibrated on the validation windows' {scores} per horizon step. "
             "Coverage: share of realisations inside; Winkler: width plus 2/α times any miss distance; Kupiec: "
             "unconditional coverage of the step-1 intervals; Christoffersen: independence of consecutive step-1 misses per "
             "symbol (both on step 1 alone: step h of one date realises the return of step h − 1 of the next, so over all "
             "steps one return would be scored up to H times); both LRs divided by their Rao–Scott design effect over dates, "
             "since the misses of one date's symbols come together. Kupiec's p-value is the exact binomial probability of "
             "an LR at least as large where that design effect is 1, the χ²(1) tail otherwise (eval.json's reference). "
             "Coverage and verdict are over the panel's windows pooled, not per symbol; the per-symbol column gives "
             "the lowest and highest step-1 coverage of one symbol's own windows.")
    rows = [[lab, " ".join(_num(c, ".3f") for c in e["coverage_per_step"]),
             _num(e["mean_width_per_step"][0], ".4g"), _num(e["winkler_per_step"][0], ".4g"),
             p_text(e["kupiec"]["p_value"]), p_text(e["christoffersen"]["p_value"]),
             f"{_num(e['rolling_coverage']['min'], '.3f')} – {_num(e['rolling_coverage']['max'], '.3f')}",
             _per_symbol_range(e.get("per_symbol"))]
            for lab, e in zip(level_labels([float(lv) for lv in rep["levels"]], percent=True), rep["levels"].values())]
    doc.table(["level", "coverage per step", "step-1 width", "step-1 Winkler", "Kupiec p", "Christoffersen p",
               f"{rep['levels'][next(iter(rep['levels']))]['rolling_coverage']['dates']}-date coverage range",
               "step-1 coverage per symbol"], rows)
    doc.para(rep["sentence"], literal=True)  # it names symbols: literal text, as the data table gives them
    if fc is None or not fc.intervals or len(fc) == 0:
        return
    fig, ax = _subplots(figsize=(10, 3))
    labs = level_labels(list(fc.intervals), percent=True)
    for i, (level, (lo, hi)) in enumerate(fc.intervals.items()):
        cell = interval_cells(lo[:, 0], hi[:, 0], fc.true[:, 0])  # the coverage eval.json gives: a missing label left out
        d, cov = rolling_coverage(cell["inside"][cell["scored"]], fc.dates[cell["scored"]])
        ax.plot(_years(d), cov, color=f"C{i}", lw=1.2, label=f"{labs[i]} interval, {ROLLING_DATES}-date coverage")
        ax.axhline(level, color=f"C{i}", lw=0.8, ls="--")
    ax.set_ylim(0, 1.02), ax.set_xlabel("date"), ax.legend(fontsize=8, loc="lower left")
    ax.yaxis.set_major_formatter(_percent())
    _date_ticks(ax)
    ax.set_title("step-1 coverage over time (dashed: nominal)", fontsize=10)
    doc.figure(fig, "interval_coverage", "Step-1 coverage of the model's conformal intervals over time, per level")
