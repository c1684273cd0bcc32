"""One typed config tree. Each stage receives only its own section.

``load_config(path, overrides)`` reads YAML or JSON, applies ``section.key=value`` overrides and
validates every key and type: an unknown key or a wrong type raises :class:`ConfigError` naming
the key. Defaults live here and nowhere else.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import difflib
import json
import math
import re
import reprlib
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pandas as pd
import yaml

from hftraining.core.errors import ConfigError
from hftraining.core.jsonio import write_json


@dataclass
class ModelConfig:
    type: str = "transformer"
    """Model architecture from the model registry (``hftraining list models``)."""
    hidden_size: int = 512
    """Width of the token embeddings (d_model)."""
    num_heads: int = 16
    """Attention heads per layer; must divide ``hidden_size``."""
    num_layers: int = 8
    """Encoder layers."""
    intermediate_size: Optional[int] = None
    """Feed-forward width; ``None`` means 4 × ``hidden_size``."""
    dropout: float = 0.15
    """Dropout in attention, feed-forward and the head."""
    pooling: Literal["last", "mean"] = "last"
    """How the sequence is reduced before the head: last valid token, or mean over valid steps."""
    patch_len: int = 16
    """PatchTST: patch length in time steps."""
    patch_stride: int = 8
    """PatchTST: stride between patches."""
    moving_avg: int = 25
    """DLinear: kernel of the moving average that separates trend from seasonal parts."""
    season_length: int = 5
    """Seasonal-naive baseline: the season in rows (5 = one trading week)."""
    ridge_lags: int = 20
    """Ridge: past 1-step returns of the target (the most recent ones) beside the last row's features."""
    ridge_lambdas: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    """Ridge: penalties tried, relative to the mean diagonal of the Gram matrix; the one with the lowest
    validation MSE is kept (the first one when there is no validation window)."""
    lightgbm_learning_rate: float = 0.05
    """LightGBM: shrinkage of each boosting round (one booster per forecast step, on ridge's inputs)."""
    lightgbm_num_leaves: int = 31
    """LightGBM: most leaves of a tree (at least 2)."""
    lightgbm_min_data_in_leaf: int = 50
    """LightGBM: fewest training windows in a leaf."""
    lightgbm_feature_fraction: float = 0.8
    """LightGBM: share of the input columns each tree sees, in (0, 1]."""
    lightgbm_bagging_fraction: float = 0.8
    """LightGBM: share of the training windows each round sees (drawn anew every round), in (0, 1]."""
    lightgbm_lambda_l2: float = 1.0
    """LightGBM: L2 penalty on the leaf values (>= 0)."""
    lightgbm_rounds: int = 500
    """LightGBM: most boosting rounds; the fit stops after ``lightgbm_early_stopping`` rounds without a
    lower validation MSE and keeps the best round. Without validation windows it runs
    ``lightgbm_rounds_without_validation`` rounds."""
    lightgbm_early_stopping: int = 30
    """LightGBM: rounds without a lower validation MSE before the fit stops."""
    lightgbm_rounds_without_validation: int = 100
    """LightGBM: the fixed number of rounds when the run has no validation windows."""
    classification_threshold: float = 0.0
    """Buy/hold/sell head: a future return above +threshold is buy, below -threshold is sell (log-return units). 0 disables the head."""
    quantiles: list[float] = field(default_factory=list)
    """Quantile head levels (e.g. [0.1, 0.5, 0.9]); empty disables it."""
    loss: Literal["mse", "ic", "rank"] = "mse"
    """The forecast's loss: squared error; ``ic``: minus the mean per-date Pearson correlation of the
    forecast with the label across symbols; ``rank``: ListNet, the cross-entropy of the per-date
    softmax of the label and of the forecast (a differentiable ranking loss). ``ic`` and ``rank``
    need ``data.batching: dates`` and compare each horizon step separately; ``ic`` learns from dates
    with at least 3 symbols (``rank`` from 2)."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Weights of the loss components by name (``mse``/``ic``/``rank``, ``classification``, ``quantile``); missing
    ones are 1; not all of the parts of a model trained by gradient steps may be 0."""


@dataclass
class DataConfig:
    data_dir: Optional[str] = None
    """A CSV/Parquet file, a folder or a glob; ``None`` uses the sample data bundled with the package."""
    symbols: Optional[list[str]] = None
    """Keep only these symbols (file stems or values of a ``symbol`` column); ``None`` keeps all. A run
    takes them in name order, whatever the order listed (the config keeps them sorted)."""
    sequence_length: int = 60
    """Input window length in rows."""
    prediction_horizon: int = 5
    """Number of future log returns of the close to forecast."""
    target: Literal["return", "excess_return", "cs_zscore", "cs_rank"] = "return"
    """What the model forecasts for each future step (``hftraining.data.labels``): the symbol's 1-step
    log return, the log return in excess of the equal-weight universe of the same date, or the
    per-date z-score (Qlib's CSZScoreNorm) or centred rank (Qlib's CSRankNorm less its 1.73/n
    offset) of the return across symbols. The past-return input channel carries the same label;
    features are unchanged."""
    batching: Literal["windows", "dates"] = "windows"
    """Training micro-batches: ``windows`` shuffled one by one (``batch_size`` of them), or ``dates``:
    every training window of ``dates_per_batch`` shuffled as-of dates (all symbols of a date in one
    micro-batch, as a cross-sectional loss needs; the batch size then varies with the symbols per date)."""
    dates_per_batch: int = 4
    """``batching: dates``: as-of dates per micro-batch (per process under DDP)."""
    batch_size: int = 32
    """Windows per micro-batch (``batching: windows``)."""
    eval_batch_size: int = 256
    """Windows per batch in evaluation and prediction."""
    device_cache: bool = True
    """On a GPU, copy the feature rows, returns and scaler statistics of the panel to the device once when
    they fit under ``device_cache_max_gb``; every batch (training, validation, test, prediction) is then
    gathered on the device from the window indices. Otherwise batches are gathered on the host into pinned
    memory and copied without blocking. No effect on CPU."""
    device_cache_max_gb: float = 8.0
    """Most device memory (GiB) the rows kept by ``device_cache`` may take."""
    features: list[str] = field(
        default_factory=lambda: ["log_return_1", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20"]
    )
    """Causal indicators by name with their parameters (``hftraining list features``)."""
    split: Literal["calendar", "per_symbol"] = "calendar"
    """How train/val/test (and walk-forward and tune folds) are cut. ``calendar``: at dates shared by
    every symbol, so nothing a model trains on is dated inside another symbol's validation or test
    period (the panel's calendar is the union of the symbols' dates). ``per_symbol``: at shares of
    each symbol's own rows, for unrelated series whose dates do not line up (their cut dates differ)."""
    split_dates: Optional[dict[str, str]] = None
    """Calendar cut dates ``{val: "2024-07-01", test: "2025-07-01"}`` (UTC; first date of each split);
    ``None``: the dates at the ``train_ratio`` and ``train_ratio + val_ratio`` shares of the calendar."""
    train_ratio: float = 0.7
    """Share of the calendar (``split: per_symbol``: of each symbol's rows) in the training split."""
    val_ratio: float = 0.15
    """Share of the calendar (or each symbol's rows) in the validation split; the rest is the test split."""
    embargo: int = 0
    """Rows of each symbol left out after each cut (windows never cross a split in any case)."""
    scaler: Literal["standard", "robust"] = "standard"
    """Feature scaler fit on the training split only: mean/std or median/IQR."""
    scale_per_symbol: bool = False
    """Fit one scaler per symbol instead of one over all symbols."""
    augment_noise_std: float = 0.0
    """Training only: Gaussian noise of this std added to the scaled input features (0: off)."""
    augment_scale_std: float = 0.0
    """Training only: each window's scaled inputs multiplied by 1 + N(0, std) (0: off)."""
    augment_jitter: int = 0
    """Training only: each window's end moved back by a random 0..jitter rows inside its split (0: off)."""
    min_history: Optional[int] = None
    """Fewest real rows in an input window; shorter histories are left-padded and masked. ``None``: ``sequence_length`` (no padding)."""
    stride: int = 1
    """Step between consecutive training windows: rows of each symbol, counted back from its last
    window; as-of dates under ``batching: dates`` (whole cross-sections kept)."""
    min_rows: int = 0
    """Symbols with fewer usable rows than this are skipped (0: any symbol that yields a window)."""
    invalid_values: Literal["drop", "ffill", "error"] = "drop"
    """A price/volume cell that is non-numeric, NaN/Inf, a price <= 0 or a volume < 0: drop the row,
    forward-fill the cell from the previous kept row (never from a later one), or stop with an error."""
    ohlc_violations: Literal["clip", "drop", "error"] = "clip"
    """high < max(open, close) or low > min(open, close): widen high/low to cover open and close, drop the row, or stop."""
    duplicate_timestamps: Literal["first", "last", "error"] = "first"
    """Rows sharing a timestamp: keep the first or the last of them (the others are dropped), or stop."""
    unsorted_timestamps: Literal["sort", "drop", "error"] = "sort"
    """Rows earlier than a preceding row: sort the file by time, drop those rows, or stop."""
    jump_threshold: float = 0.5
    """A close more than this |log return| from the last kept close is a suspicious jump (e.g. an unadjusted split); 0 disables."""
    jumps: Literal["flag", "drop", "error"] = "flag"
    """Suspicious jumps: only report them, drop the row, or stop; 4 rows in a row at one new level make it the level, kept from its 4th row."""
    price_adjustment: Literal["adjusted", "raw"] = "adjusted"
    """A file with both ``Close`` and ``Adj Close``: ``adjusted`` takes the close from ``Adj Close`` and
    scales open/high/low by Adj Close / Close of the same row (returns then include splits and
    dividends); ``raw`` takes ``Close`` and ignores ``Adj Close``. The report states which was used."""
    cache_dir: Optional[str] = ".cache/hftraining"
    """Folder of the feature store: every symbol's validated feature rows in memory-mapped float32
    files, keyed by the input files' contents and the data settings, built once and mapped by every
    run and DDP rank after it (``None``: features are computed in memory on each run)."""
    num_workers: int = 0
    """Processes that read, validate and compute features when the feature store is built (0: in the
    calling process)."""
    start_date: Optional[str] = None
    """Read only rows dated on or after this (UTC date or timestamp); pushed down into Parquet scans."""
    end_date: Optional[str] = None
    """Read only rows dated before this (UTC date or timestamp); pushed down into Parquet scans."""
    max_gap: Optional[str] = None
    """Intraday: no window (inputs and targets) spans a gap between consecutive rows longer than this
    duration (``"30min"``, ``"4h"``, ``"3D"``), e.g. overnight or over a weekend; ``None``: any gap."""
    timezone: str = "UTC"
    """IANA name of the exchange's time zone (``America/New_York``, ``Europe/London``) whose local clock
    the ``calendar`` and ``hour`` features read: a session opening at 09:30 in New York has the same
    hour feature in January and July (UTC would shift it by an hour across daylight saving), and a bar
    late in the evening there falls on its local weekday. Timestamps stay UTC everywhere else (naive
    ones in files are read as UTC). A model folder records it; one written without it means UTC."""


@dataclass
class TrainingConfig:
    optimizer: str = "adamw"
    """Optimizer from the registry (``hftraining list optimizers``); an unknown name is an error."""
    learning_rate: float = 3e-4
    """Peak learning rate after warmup (for ``sophia``: the largest step any one coordinate takes)."""
    weight_decay: float = 0.01
    """Weight decay as the optimizer applies it (decoupled for ``adamw``, ``gpro``, ``lion``...; added to the
    gradient for ``sgd`` and library optimizers whose ``weight_decouple`` defaults to False); never applied to
    biases, norms or embeddings. An optimizer without weight decay (amos, fromage, ftrl, gravity, msvag, nero,
    sm3, srmm) refuses a value other than 0 or this default."""
    adam_beta1: float = 0.9
    """First-moment decay of ``adamw``, ``gpro``, ``lamb``, ``adafactor`` and Muon's AdamW part (Lion, Adan and
    Sophia keep their own betas); in [0, 1). With an optimizer that keeps its own, a value other than the
    default is an error (set ``optimizer_kwargs.betas``)."""
    adam_beta2: float = 0.999
    """Second-moment decay of the same optimizers (Adafactor: only a cap on its step-dependent decay); in
    [0, 1); a value other than the default is an error with an optimizer that keeps its own."""
    adam_epsilon: float = 1e-8
    """Denominator epsilon of ``adamw``, ``gpro``, ``lamb``, ``adan`` and Muon's AdamW part; > 0; a value
    other than the default is an error with any other optimizer."""
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments passed to the optimizer's constructor. Muon and its variants leave biases and
    norms to an AdamW part whose ``adamw_lr`` is ``learning_rate`` (scheduled either way), ``adamw_betas``
    ``(adam_beta1, adam_beta2)`` and ``adamw_eps`` ``adam_epsilon`` unless set here (AdaMuon: its ``eps``, both
    parts'); a nonzero ``adamw_wd`` is an error, as those parameters are never decayed."""
    lr_scheduler: Literal["constant", "linear", "cosine", "cosine_restarts", "wsd"] = "cosine"
    """Learning-rate schedule after linear warmup; counts optimizer steps."""
    warmup_ratio: float = 0.05
    """Warmup length as a share of ``max_steps``, rounded to the nearest step (a half up); ignored when
    ``warmup_steps`` is set."""
    warmup_steps: Optional[int] = None
    """Warmup length in optimizer steps."""
    min_lr_ratio: float = 0.1
    """Floor of the schedule as a share of the peak learning rate."""
    num_cycles: int = 1
    """Cosine cycles for ``cosine_restarts`` (restarts = num_cycles - 1)."""
    decay_ratio: float = 0.2
    """``wsd``: share of the steps spent in the final decay."""
    max_steps: int = 1000
    """Optimizer steps (not micro-batches)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step; the loss is averaged over them as over one batch of them all (with
    ``data.batching: dates``, whose micro-batches vary in size, each part by its windows or, for ``ic`` and
    ``rank``, its dates)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    use_mixed_precision: bool = False
    """Shorthand for ``precision: bf16`` when ``precision`` is ``auto``."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision; fp16 needs CUDA. ``auto``: bf16 if ``use_mixed_precision`` else fp32."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in backward to save memory."""
    seed: int = 42
    """Seeds Python, NumPy and torch, and the data order."""
    logging_steps: int = 10
    """Log training metrics every this many optimizer steps."""
    save_steps: int = 500
    """Write a checkpoint every this many optimizer steps (0: only at the end)."""
    save_on_epoch_end: bool = False
    """Also write a checkpoint whenever an epoch of the training windows ends (at the step that drew
    the epoch's last batch, also when accumulation puts it before the step's last micro-batch)."""
    save_total_limit: int = 3
    """Keep at most this many checkpoints (the latest and the best are never deleted; 0 keeps all)."""
    resume_from_checkpoint: Optional[str] = None
    """``auto`` (latest complete checkpoint of the run folder) or a checkpoint path."""
    max_consecutive_nonfinite: int = 5
    """Stop after this many optimizer steps in a row skipped for a NaN/Inf loss or gradient. A run that ends
    on such steps with a final model that forecasts NaN/Inf is the same error. So is a run whose last applied
    update (followed by no step, or only by fp16 loss-scaler skips) leaves weights that are not finite or
    forecast NaN/Inf."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without improvement (0 disables); needs periodic evaluations
    (``evaluation.eval_steps`` > 0)."""
    early_stopping_threshold: float = 0.0
    """Minimum improvement of the metric that resets the patience. It also decides the best step
    (the checkpoint ``load_best_model_at_end`` keeps), as Keras' ``min_delta`` does: a later score
    lower by less than this does not replace it."""
    load_best_model_at_end: bool = False
    """Write the best checkpoint (by ``evaluation.metric``) as the final model: the weights that
    validation scored best. Each evaluation that scores a new best is then saved as a checkpoint,
    whatever ``save_steps`` says."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    ddp_timeout: float = 1800.0
    """Seconds a rank waits for the others (process-group setup, each collective) before it fails;
    under ``torchrun --max-restarts`` the failure restarts the group instead of hanging it. The main
    rank's own work (a checkpoint, the test evaluation) is waited for as long as the main rank is alive."""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """Scale the learning rate with the data-parallel world size (``linear``: × processes, ``sqrt``: × their
    square root). A run resumed at another world size takes the rate of its new one, as a run started there
    would (the schedule's position is kept), with a warning."""
    compile: Literal["auto", "none", "default", "reduce-overhead", "max-autotune"] = "auto"
    """``torch.compile`` the training forward and loss (its backward too) in this mode: ``default``
    (kernel fusion), ``reduce-overhead`` (also CUDA graphs, replayed per micro-batch), ``max-autotune``
    (also searches kernels; minutes to compile). ``auto`` picks what was measured faster and proven equal
    to eager on that device (``AUTO_COMPILE``); ``none``: eager. Evaluation and prediction stay eager."""


@dataclass
class EvaluationConfig:
    eval_steps: int = 200
    """Evaluate on the validation split every this many optimizer steps (0: only at the end)."""
    metric: str = "mse"
    """Validation metric for early stopping and the best checkpoint (lower is better)."""
    max_eval_batches: Optional[int] = None
    """Cap the batches of a periodic validation pass (``None``: the whole split)."""
    max_val_windows: Optional[int] = 20_000
    """Validate (periodically, at the end, for early stopping and tuning) on at most this many validation
    windows, evenly spaced over the split and the same at every evaluation (``None``: all of them)."""
    intervals: list[float] = field(default_factory=lambda: [0.8, 0.9])
    """Coverage levels of the conformal forecast intervals (``hftraining.models.intervals``), calibrated
    on the validation windows' residuals per horizon step after training, saved as ``intervals.json``
    in the model folder, scored on the test split and served; empty: no intervals."""
    interval_method: Literal["split", "aci", "cqr"] = "split"
    """``split`` conformal; ``aci``: adaptive conformal inference, its level updated on each date with the
    outcomes known by then (``aci_gamma``); ``cqr``: conformalised quantile regression around the
    quantile head (``model.quantiles`` must hold (1 − level)/2 and (1 + level)/2 for every level)."""
    aci_gamma: float = 0.005
    """ACI's step size γ: α_{t+1} = α_t + γ (α − share of date t's intervals that missed)."""
    max_test_windows: Optional[int] = 50_000
    """Score (and backtest) only the test windows of the split's last dates, at most this many windows;
    the dates are shared by all symbols, so the cross-section and the backtest stay whole (``None``: all)."""
    baseline_max_windows: Optional[int] = 1_000_000
    """Fit the fitted baselines (ridge, LightGBM) on at most this many training windows, evenly spaced over
    the split, and choose their settings on at most this many validation windows (``None``: all)."""
    backtest_positions: Literal["sign", "vol_scaled"] = "sign"
    """Backtest weights of the ``per_symbol`` portfolio: ``sign`` of the forecast at equal notional per symbol, or
    ``vol_scaled`` (forecast / predicted volatility, normalised so each date's gross exposure is ``backtest_max_gross``)."""
    backtest_portfolio: Literal["auto", "per_symbol", "topk"] = "auto"
    """``auto``: ``topk`` for a cross-sectional label (``data.target`` cs_zscore or cs_rank: a per-date
    score ranks symbols, its sign means nothing), else ``per_symbol``.
    ``per_symbol``: each symbol traded on its own forecast (``backtest_positions``); ``topk``: a cross-sectional
    portfolio (Qlib's TopK-Dropout): on each rebalancing date rank the symbols by the signal, long the top
    ``backtest_topk`` and short the bottom ``backtest_topk`` (long-only: the top only), equal weight, gross
    ``backtest_max_gross`` (half long, half short)."""
    backtest_topk: int = 3
    """Names held long and, unless ``backtest_long_only``, short by the ``topk`` portfolio."""
    backtest_topk_dropout: int = 0
    """TopK-Dropout turnover control of the ``topk`` portfolio: at most this many names replaced per side per
    rebalance (the worst-ranked held names, and only by better-ranked ones); 0: no limit (always the current top k)."""
    backtest_rebalance: int = 1
    """Rebalance every this many periods (from the first date); in between the positions are held (weights drift
    with the returns, nothing is traded)."""
    backtest_long_only: bool = False
    """Backtest only long positions (a negative forecast means no position)."""
    backtest_max_gross: float = 1.0
    """Cap on gross exposure Σ|weight| as a share of capital (1.0: fully invested, no leverage)."""
    backtest_cost_bps: float = 5.0
    """Transaction cost in basis points of traded notional."""
    backtest_slippage_bps: float = 2.0
    """Slippage in basis points of traded notional, charged on top of ``backtest_cost_bps``."""
    backtest_signal: Literal["step1", "mean"] = "step1"
    """Forecast that decides the position held for the next period: the 1-step forecast, or the mean of the H steps."""
    periods_per_year: Optional[float] = None
    """Periods per year for annualising; ``None`` infers it from the timestamps (daily bars: 252)."""
    report: bool = True
    """Write report.html and report.md into the run folder after training and evaluation."""


AT_EVALUATION = ("max_test_windows", "periods_per_year", "report")
"""The evaluation keys (besides ``backtest_*``) that act when a trained model is evaluated; the
others act during training (validation cadence and caps, the baselines' fit, the intervals'
calibration, which the model folder keeps)."""


def at_evaluation(key: str) -> bool:
    """Whether the evaluation key ``key`` acts when a trained model is evaluated (:data:`AT_EVALUATION` and
    ``backtest_*``; else during training)."""
    return key in AT_EVALUATION or key.startswith("backtest_")


@dataclass
class OutputConfig:
    experiment_name: str = "default"
    """Name of the run; the run folder is ``runs/<experiment_name>`` unless ``output_dir`` is set."""
    output_dir: Optional[str] = None
    """Run folder."""
    overwrite: bool = False
    """Allow training into a run folder that already holds checkpoints (without resuming)."""
    report_to: list[Literal["tensorboard", "jsonl", "csv", "mlflow", "wandb"]] = field(
        default_factory=lambda: ["tensorboard", "jsonl"])
    """Where the main rank sends the logged metrics: ``tensorboard`` (``<run>/tensorboard/``), ``jsonl``
    (``<run>/metrics.jsonl``, read by the report and ``serve``), ``csv`` (``<run>/metrics.csv``), ``mlflow``
    (``MLFLOW_TRACKING_URI``, else ``sqlite:///<run>/mlruns.db``), ``wandb`` (``WANDB_*`` variables; ``WANDB_MODE=offline``
    needs no network). ``mlflow`` and ``wandb`` need the ``track`` extra (``pip install -e '.[track]'``); see :mod:`hftraining.train.tracking`."""
    tensorboard: Optional[bool] = None
    """Alias kept from before ``report_to``: ``true`` adds ``tensorboard`` to ``report_to``, ``false`` removes it,
    ``None`` leaves ``report_to`` as it is (:func:`resolved_report_to`)."""
    progress_bar: Literal["auto", "always", "never"] = "auto"
    """Progress bar on a terminal (``auto``), plain log lines otherwise."""


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    """Address ``hftraining serve`` listens on (``--host``)."""
    port: int = 8000
    """TCP port of the server (``--port``)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted; a larger one is answered 413 (``--max-body-bytes``)."""
    max_symbols: int = 1000
    """Most symbols one ``POST /predict`` may ask for; 413 beyond (``--max-symbols``)."""
    max_rows: int = 200_000
    """Most OHLCV rows one predict request may carry, all symbols together (a CSV upload: its lines
    after the header); 413 beyond (``--max-rows``)."""
    request_timeout_s: float = 30.0
    """Seconds a request may take: a body that has not arrived by then is answered 408, a prediction
    that runs longer 503 (``--request-timeout``). The worker thread of a timed-out prediction runs to
    its end in the background."""
    keep_alive_timeout_s: float = 5.0
    """Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``; ``--keep-alive-timeout``)."""
    header_timeout_s: float = 10.0
    """Seconds a client has to send a request's line and headers, from its connection (or its previous
    response); slower ones (one byte a second, "slowloris") are disconnected (``--header-timeout``)."""
    max_predictions: int = 40
    """Most predictions running at once (anyio's default worker threads), those still running past their
    request's timeout included (Python cannot stop them): a request beyond waits for a slot within its
    own timeout, then 503 (``--max-predictions``)."""
    max_connections: int = 1000
    """Most open connections; one beyond is closed as soon as it opens (``--max-connections``). Keep it
    under the process's file-descriptor limit (``ulimit -n``)."""
    cors_origins: list[str] = field(default_factory=list)
    """Browser origins allowed to call the server (``https://app.example.com``, or ``*``); empty: no CORS
    headers at all, so browsers block cross-origin calls (``--cors-origin``, repeatable)."""
    docs: bool = False
    """Serve the interactive docs pages ``/docs`` (Swagger UI) and ``/redoc`` (``--docs``). A browser loads
    their scripts from a CDN (jsdelivr, unpinned) and runs them on the server's origin, where the Authorize
    dialog holds the API key, and they show nothing offline: off unless asked for. ``/openapi.json``, the
    API's schema, is always served."""


@dataclass
class TuneConfig:
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``section.key`` → a range ``{type: int|float, low, high, log: false, step: null}`` or a choice
    ``{choices: [...]}``, e.g. ``training.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}``."""
    study_name: Optional[str] = None
    """Optuna study name; ``None`` uses ``output.experiment_name``."""
    sampler: Literal["tpe", "random"] = "tpe"
    """How trials are drawn: Optuna's TPE sampler or uniform random search."""
    seed: Optional[int] = None
    """Seed of the sampler (``None``: a fresh draw each time)."""
    pruner: Literal["median", "none"] = "median"
    """Stop a trial whose validation metric at an evaluation is worse than the median of earlier trials at that step."""
    pruner_startup_trials: int = 2
    """Complete trials before pruning starts; with ``sampler: tpe`` also TPE's random first trials (at least 1)."""
    pruner_warmup_evals: int = 1
    """Evaluations of a trial before it may be pruned (with ``tune.folds``: of each fold)."""
    folds: int = 0
    """0: score each trial on the validation split of one run; K >= 2: train once per walk-forward fold
    (:mod:`hftraining.workflows.walkforward`) of the rows before the test split and score the mean
    of the folds' validation metrics (no trial sees the test split)."""
    fold_scheme: Literal["expanding", "rolling"] = "expanding"
    """Walk-forward scheme of the folds (``tune.folds`` >= 2)."""
    heartbeat_seconds: float = 30.0
    """A running trial records the time in the study storage this often (its ``heartbeat`` attribute)."""
    stale_after_seconds: float = 300.0
    """A trial still "running" with no heartbeat for this long belongs to a worker that died (SIGKILL,
    a lost machine): it is marked failed (and its folder gets ``STALE.json``) when a tune starts and
    before each trial. Longer than ``heartbeat_seconds``; long enough for a slow shared storage."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    """Hyperparameter search (``hftraining tune``); ignored by ``train``."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """The HTTP server (``hftraining serve``); ignored by ``train``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_dir(self) -> Path:
        return Path(self.output.output_dir or Path("runs") / self.output.experiment_name)


# --------------------------------------------------------------------------------------------
# Loading and validation

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file or ``section.key=value`` override read (1 MiB; 10,000 symbols take about 100 KB)."""
MAX_CONFIG_VALUES = 100_000
"""Most values (mapping keys, values and list items, counted every time a YAML alias repeats them) a
config may hold: an alias "bomb" of 10^9 leaves is refused after this many, not expanded."""
MAX_CONFIG_DEPTH = 32
"""Deepest nesting of mappings and lists a config may have."""
MAX_SEED = 2**32 - 1
"""Largest ``training.seed``/``tune.seed``: NumPy's legacy seeding takes 0..2**32 - 1."""
MAX_CONFIG_INT = 2**63 - 1
"""Largest integer (in size) a config key may hold: what int64 holds (numpy and torch take no larger)."""
MAX_SECONDS = 365 * 86400
"""Longest time a config key in seconds may give (a year): ``training.ddp_timeout: 1e14`` stopped every
rank of a torchrun group with a traceback (``timedelta`` holds no more than 999,999,999 days, a thread's
wait no more than 2**63 ns), and a longer wait is no wait at all."""
MIN_DDP_TIMEOUT = 1.0
"""Shortest ``training.ddp_timeout`` (seconds). torch counts it in whole milliseconds: below 1 ms it was 0, and
the first rank's own connection to the group's store timed out at once in a 30-line traceback; and the
processes of a group need seconds to start and meet."""
SECONDS_KEYS = ("training.ddp_timeout", "tune.heartbeat_seconds", "tune.stale_after_seconds", "serve.request_timeout_s",
                "serve.keep_alive_timeout_s", "serve.header_timeout_s")
"""The config keys that are a time in seconds (at most :data:`MAX_SECONDS`)."""

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 3, 8, 8, 8
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 120, 120, 60


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, bounded: at most 200 characters, and computed in bounded
    time whatever the value (a 50 MB string or an alias bomb is not rendered whole)."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def name_shown(key: Any) -> str:
    """A key or section name for an error message: as written, cut to 80 characters."""
    text = key if isinstance(key, str) else shown(key)
    return text if len(text) <= 80 else text[:77] + "..."


def check_bounds(raw: Any, where: str) -> None:
    """Raise ConfigError when ``raw`` (parsed YAML/JSON) holds more than :data:`MAX_CONFIG_VALUES`
    values or nests deeper than :data:`MAX_CONFIG_DEPTH`. Walks iteratively and stops at the limit,
    so a value shared by many aliases costs no more than the limit."""
    stack, count = [(raw, 0)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"{where}: more than {MAX_CONFIG_VALUES:,} values (YAML aliases count each time "
                              "they repeat a value); a config is not a data file")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers, so that a config means what it looks like:
    ``1e-3`` is the float 0.001 (YAML 1.1 reads it as text, which reached ``optimizer_kwargs`` and
    other free-form values as a string), ``0700`` is the text "0700" (1.1: the octal 448, so
    ``seed: 0042`` was 34 and the ticker ``0700`` an error about 448) and ``1:30`` is text (1.1: the
    base-60 number 90). ``true``/``false``/``on``/``off``/``yes``/``no``, ``null``/``~`` and dates
    are read as before."""


_YAML11_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _YAML11_NUMBERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0b[01_]+|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF))|\.(?:nan|NaN|NAN))$""",
                                          re.X), list("-+0123456789."))


class ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that also quotes text :class:`ConfigLoader` reads as a number (``1E5``,
    ``2e3``, ``0o17``: plain text to YAML 1.1, which the safe dumper follows), so that a config it
    writes (tune's ``best_config.yaml``) loads back as written."""


for _first, _resolvers in ConfigLoader.yaml_implicit_resolvers.items():
    for _tag, _rx in _resolvers:
        if _tag in _YAML11_NUMBERS:
            ConfigDumper.add_implicit_resolver(_tag, _rx, [_first])


class _KeyTwice(Exception):
    """A JSON object names a key twice (raised by :func:`_json_object`)."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _KeyTwice(k)
        out[k] = v
    return out


def check_keys_once(node: yaml.Node, where: str, language: str = "YAML") -> None:
    """Raise ConfigError when a YAML mapping names a key twice (a section given twice included):
    PyYAML would keep the last one silently, dropping the first (a whole section, for a section).
    Keys a ``<<`` merge brings in may be overridden, as YAML intends. Each node is visited once,
    however many aliases repeat it. ``language``: what the text was written in, for the message (a
    JSON file's nodes are read as YAML's, its objects being YAML flow mappings)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    while stack:
        n, path = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(n.value))
        elif isinstance(n, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                    stack.append((v, path))
                    continue
                name = f"{path}.{k.value}" if path else k.value
                line = k.start_mark.line + 1
                if (k.tag, k.value) in first:
                    raise ConfigError(f"{where}: {name_shown(name)} is given twice (lines {first[k.tag, k.value]} and "
                                      f"{line}); only one may stay ({language} would keep the last and drop the first)")
                first[k.tag, k.value] = line
                stack.append((v, name))


def unconstructible(loader: yaml.SafeLoader, node: yaml.Node, where: str, text: str) -> str | None:
    """The message for the first scalar under ``node`` that ``loader`` cannot construct: a date the
    calendar has not (``start_date: 2024-13-45``, which YAML reads as a date, not as text), ``!!int x``;
    with its line when ``text`` has several. None if every scalar constructs."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.ScalarNode):
            construct = loader.yaml_constructors.get(n.tag)
            try:
                if construct is not None:
                    construct(loader, n)
            except ValueError as e:
                kind = "date" if n.tag.endswith(":timestamp") else n.tag.rsplit(":", 1)[-1]
                line = f"line {n.start_mark.line + 1}: " if "\n" in text.strip() else ""
                # YAML reads an unquoted 2024-02-30 as a date whatever the key: a text key (a run's name) needs quotes
                text_hint = f'; as text (a name) it needs quotes in YAML: "{n.value}"' if kind == "date" else ""
                return f"{where}: {line}{shown(n.value)} is not a valid {kind} ({e}){text_hint}"
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(reversed(n.value))
        elif isinstance(n, yaml.MappingNode):
            stack.extend(v for kv in reversed(n.value) for v in kv)
    return None


def parse_text(text: str, where: str, json_only: bool = False) -> Any:
    """YAML (or JSON) text of a config or an override → Python values, bounded: at most
    :data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_VALUES` values and :data:`MAX_CONFIG_DEPTH` levels.
    YAML is read by :class:`ConfigLoader`; a key given twice in one mapping (object) is a ConfigError."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters, more than a config may hold ({MAX_CONFIG_BYTES:,})")
    try:
        if json_only:
            raw = json.loads(text, object_pairs_hook=_json_object)
        else:
            loader = ConfigLoader(text)
            try:
                node = loader.get_single_node()
                if node is not None:
                    check_keys_once(node, where)
                try:
                    raw = None if node is None else loader.construct_document(node)
                except ValueError as e:  # a scalar its tag cannot hold (2024-13-45, !!int x): no YAMLError
                    raise ConfigError(unconstructible(loader, node, where, text) or f"{where}: {e}") from None
            finally:
                loader.dispose()
    except RecursionError:
        raise ConfigError(f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    except _KeyTwice as e:
        # JSON is YAML flow (with no tab outside a string, where JSON allows none): its nodes name the key's
        # section and both lines, as for a YAML file; text PyYAML does not read keeps the shorter message
        with contextlib.suppress(yaml.YAMLError, RecursionError):
            node = yaml.compose(text.replace("\t", " "), Loader=ConfigLoader)
            if node is not None:
                check_keys_once(node, where, "JSON")
        raise ConfigError(f"{where}: {name_shown(e.args[0])} is given twice in one object; only one may stay "
                          "(JSON would keep the last and drop the first)") from None
    check_bounds(raw, where)
    return raw


def check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` where that is lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {shown(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {shown(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):  # `data.symbols=AAPL`: one item is still a list, [AAPL]
            one = ""
            if args[0] is str and isinstance(value, (bool, int, float)):  # `symbols: ON`: [True] is refused too;
                one = f"; one item is written as a list too, [...]{quote_hint(value)}"  # the text needs its quotes
            elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                item = shown(value)[1:-1] if isinstance(value, str) else shown(value)
                one = f"; one item is written as a list too: [{item}]"
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {shown(value)}{one}")
        return [check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {shown(value)}")
        return {str(k): check_value(v, args[1], f"{key}.{name_shown(k)}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {shown(value)}")
    if tp is int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if number is None:
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
        if not -MAX_CONFIG_INT <= number <= MAX_CONFIG_INT:  # 1e30 layers or steps overflowed torch and numpy mid-run
            raise ConfigError(f"{key}: {shown(value)} is out of range (at most {MAX_CONFIG_INT:,} in size)")
        return number
    if tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:  # a quoted "5e-5" is read as the number it spells
                number = float(value)
            except (ValueError, OverflowError):
                pass
        if number is None or not math.isfinite(number):  # NaN passed every "must be > 0" check; an infinite
            raise ConfigError(f"{key}: expected a finite number, got {shown(value)}")  # rate or cost ran to NaN
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (datetime.date, datetime.datetime)):  # YAML reads 2024-07-01 as a date
            return value.isoformat()
        raise ConfigError(f"{key}: expected a string, got {shown(value)}{quote_hint(value)}")
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in this file, not user input


def quote_hint(value: Any) -> str:
    """What to write for text that YAML read as another type, for the message refusing ``value`` where text is
    needed: the ticker ``ON`` (ON Semiconductor) or the run name ``no`` are the booleans true and false to
    YAML, ``1e3`` or ``2024`` a number, and the message said "got True" or "got 1000.0", which the user
    never wrote. "" for any other value (a list, a mapping, null)."""
    if isinstance(value, bool):
        return ("; YAML reads an unquoted on/off/yes/no/true/false (lower, title or upper case) as a boolean: "
                "quote the text (\"ON\", 'no')")
    if isinstance(value, (int, float)):
        return "; YAML reads an unquoted number as a number: quote the text (\"1e3\", '2024')"
    return ""


def section_from_dict(cls: type, raw: Any, name: str) -> Any:
    """Build the config section ``cls`` (e.g. :class:`DataConfig`) from a mapping, checking every key
    and type; ``name`` is the section's name in error messages (``data.sequence_length: ...``).
    Missing keys take their defaults; cross-field checks are :func:`validate`'s."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{name}.{name_shown(key)}: unknown key; valid keys: {', '.join(sorted(known))}"
                              + (in_other_sections(key, cls) or did_you_mean(key, known, f"{name}.")))
        kwargs[key] = check_value(value, hints[key], f"{name}.{key}")
    return cls(**kwargs)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def did_you_mean(name: Any, valid: Any, prefix: str = "") -> str:
    """``"; did you mean training.max_steps?"`` for a misspelt key or section (the closest of ``valid``,
    after ``prefix``), or "" when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1) if isinstance(name, str) and len(name) <= 200 else []
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def in_other_sections(key: Any, cls: type) -> str:
    """``"; did you mean data.batch_size?"`` for a key written under a section other than its own
    (``training.batch_size``), naming every section that has it (``model.seed``: training.seed or
    tune.seed), or "" when no other section of :class:`Config` has a key of that name. A close spelling
    in the section written (``training.eval_steps`` beside ``max_steps``) would name the wrong key."""
    sections = typing.get_type_hints(Config)
    if cls not in sections.values() or not isinstance(key, str):  # not a section of the tree: no other to name
        return ""
    owners = [f"{section}.{key}" for section, other in sections.items()
              if other is not cls and key in {f.name for f in dataclasses.fields(other)}]
    return f"; did you mean {' or '.join(owners)}?" if owners else ""


def config_from_dict(raw: dict[str, Any], refuse_ignored: bool = True) -> Config:
    """Build and validate a :class:`Config` from a nested mapping. ``refuse_ignored`` False: a key that
    :func:`check_ignored` would refuse is kept (a run folder's config.json written before such a rule, whose
    run went on without the key)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(raw).__name__}")
    hints = typing.get_type_hints(Config)
    sections = {}
    for name, value in raw.items():
        if name not in hints:
            raise ConfigError(f"{name_shown(name)}: unknown config section; valid: {', '.join(hints)}"
                              + did_you_mean(name, hints))
        sections[name] = section_from_dict(hints[name], value, name)
    cfg = Config(**sections)
    validate(cfg)
    if refuse_ignored:
        check_ignored(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.learning_rate=1e-4"`` → (["training", "learning_rate"], 1e-4)."""
    if "=" not in text:
        raise ConfigError(f"override {shown(text)}: expected section.key=value")
    key, _, raw_value = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {shown(text)}: expected section.key=value")
    if not raw_value.strip():  # `data.data_dir=$DATA` with DATA unset would have trained on the sample data
        raise ConfigError(f"override {shown(text)}: no value after '='; write {name_shown(key.strip())}=null to unset it")
    try:
        value = parse_text(raw_value, name_shown(key.strip()))
        comment = raw_value[max(t.end_mark.index for t in yaml.scan(raw_value, Loader=ConfigLoader)
                                  if not isinstance(t, yaml.StreamEndToken)):].strip()
    except yaml.YAMLError:
        value, comment = raw_value, ""
    if comment:  # `output.experiment_name=run #2` was the run "run", `data.data_dir=/d/a #b` the folder /d/a
        raise ConfigError(f"override {shown(text)}: {shown(comment)} would be dropped as a YAML comment; quote the "
                          f"value to keep it ({name_shown(key.strip())}=\"...\") or leave the comment out")
    return parts, value


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # never more than the limit, whatever the file is
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not JSON's error
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than a config may be ({MAX_CONFIG_BYTES:,} bytes)")
    try:
        raw = parse_text(text, str(path), json_only=path.suffix.lower() == ".json")
    except json.JSONDecodeError as e:  # its text ends with "line 4 column 2 (char 31)"
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_line(e)}") from None
    if raw is None:  # 0 bytes, or only comments: every default would run, as if no --config were given
        raise ConfigError(f"{path}: holds no settings (empty, or only comments); point --config at the file that "
                          "has them, or leave --config out to use the defaults")
    if not isinstance(raw, dict):  # a list of sections ("- training: ..."), or one value
        raise ConfigError(f"{path}: expected a mapping of sections at the top level (training: ..., data: ...), "
                          f"got {type(raw).__name__} {shown(raw)}")
    return raw


def yaml_error_line(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line with where it is: "line 5, column 9: expected ',' or ']', but got ':'
    (while parsing a flow sequence, line 4)". Its first line alone ("while parsing a flow sequence")
    named neither the line nor what was wrong."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if not problem:
        return " ".join(str(e).split())[:300]
    problem = " ".join(str(problem).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
    if context:
        text += f" ({context}" + (f", line {context_mark.line + 1})" if context_mark else ")")
    return text


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                refuse_ignored: bool = True) -> Config:
    """Load a YAML/JSON config (or the defaults) and apply ``section.key=value`` overrides
    (``refuse_ignored``: see :func:`config_from_dict`)."""
    raw: dict[str, Any] = read_config_file(path) if path else {}
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    overridden = set()
    for text in overrides:
        (section, key), value = parse_override(text)
        overridden.add(f"{section}.{key}")
        if section not in SECTIONS:
            raise ConfigError(f"{name_shown(section)}.{name_shown(key)}: unknown config section {shown(section)}; "
                              f"valid: {', '.join(SECTIONS)}" + did_you_mean(section, SECTIONS))
        if raw.get(section) is None:  # `training:` with every key commented out is an empty section
            raw[section] = {}
        sec = raw[section]
        if not isinstance(sec, dict):  # the file's section, not the override, is what to fix: named as without one
            raise ConfigError(f"{path}: {section}: expected a mapping of keys, got {type(sec).__name__}")
        sec[key] = value
    try:
        return config_from_dict(raw, refuse_ignored)
    except ConfigError as e:
        if path and not named_keys(str(e)) & overridden:
            raise ConfigError(f"{path}: {e}") from None
        raise


def saved_data_section(raw: Any) -> Any:
    """A model folder's saved data section with the empty text an older version accepted read as it read
    it (``data_dir``/``cache_dir`` ``""``: the working folder; ``start_date`` ``""``: no bound), so that
    :func:`validate`'s refusal of empty text (a mistake in a config being written) does not refuse a
    folder trained before it."""
    if not isinstance(raw, dict):
        return raw
    meant = {"data_dir": ".", "cache_dir": ".", "start_date": None}
    return {k: (meant[k] if k in meant and isinstance(v, str) and not v.strip() else v) for k, v in raw.items()}


def named_keys(message: str) -> set[str]:
    """The ``section.key`` names at the head of a ConfigError's message (before its first ``:``):
    ``data.train_ratio/data.val_ratio``, ``tune.heartbeat_seconds/stale_after_seconds`` and
    ``evaluation.backtest_topk, evaluation.backtest_topk_dropout`` name two.
    A message about a key an override set is not blamed on the config file."""
    head = message.split(":")[0]
    names, section = set(), ""
    for part in re.split(r"[/,]", head):
        part = part.split("[")[0].strip()
        if "." in part:
            section = part.split(".")[0]
            names.add(".".join(part.split(".")[:2]))
        elif section:
            names.add(f"{section}.{part}")
    return names



def _distinct_columns(key: str, levels: list[float], label: Any, columns: str) -> None:
    """A ConfigError when two of ``levels`` print alike in the forecast table's column names (``label``:
    0.9 and 0.90000001 are both ``lower_90``, 0.1 listed twice two ``return_q0.1``): one column would
    overwrite the other. ``columns``: the column names, with the label as ``{1}`` (``{0}``: the target)."""
    seen: dict[str, float] = {}
    for q in levels:
        text = label(q)
        if text in seen:
            same = "is listed twice" if seen[text] == q else f"and {shown(seen[text])} print alike"
            raise ConfigError(f"{key}: level {shown(q)} {same} in {shown(levels)}: they would share "
                              f"{columns.format('<target>', text)}; keep one")
        seen[text] = q

def validate(cfg: Config) -> None:
    """Cross-field checks that a type check cannot express."""
    m, d, t, e = cfg.model, cfg.data, cfg.training, cfg.evaluation
    for section in dataclasses.fields(cfg):  # `cache_dir: ""` wrote the feature store into the working folder,
        obj = getattr(cfg, section.name)  # `resume_from_checkpoint: ""` started over, `output_dir: ""` was ignored
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, str) and not value.strip():
                optional = type(None) in typing.get_args(typing.get_type_hints(type(obj))[f.name])
                unset = " or null" if optional else ""
                raise ConfigError(f"{section.name}.{f.name}: {shown(value)} is empty (an unset variable?); give a value{unset}")

    def positive(section: str, obj: Any, *names: str) -> None:
        for n in names:
            if getattr(obj, n) <= 0:
                raise ConfigError(f"{section}.{n}: must be > 0, got {shown(getattr(obj, n))}")

    positive("model", m, "hidden_size", "num_heads", "num_layers", "patch_len", "patch_stride", "moving_avg", "season_length",
             "ridge_lags")
    if not m.ridge_lambdas or any(v <= 0 for v in m.ridge_lambdas):
        raise ConfigError(f"model.ridge_lambdas: need at least one penalty, each > 0, got {m.ridge_lambdas}")
    positive("model", m, "lightgbm_learning_rate", "lightgbm_min_data_in_leaf", "lightgbm_rounds",
             "lightgbm_early_stopping", "lightgbm_rounds_without_validation")
    if m.lightgbm_num_leaves < 2:
        raise ConfigError(f"model.lightgbm_num_leaves: must be >= 2, got {shown(m.lightgbm_num_leaves)}")
    for name in ("lightgbm_feature_fraction", "lightgbm_bagging_fraction"):
        if not 0 < getattr(m, name) <= 1:
            raise ConfigError(f"model.{name}: must be in (0, 1], got {shown(getattr(m, name))}")
    if m.lightgbm_lambda_l2 < 0:
        raise ConfigError(f"model.lightgbm_lambda_l2: must be >= 0, got {shown(m.lightgbm_lambda_l2)}")
    positive("data", d, "sequence_length", "prediction_horizon", "batch_size", "eval_batch_size", "stride",
             "dates_per_batch")
    # the models' own window checks (their constructors say the same of a model folder), before any data are read
    if m.type == "patchtst" and m.patch_len > d.sequence_length:
        raise ConfigError(f"model.patch_len: {m.patch_len} is longer than the input window "
                          f"(data.sequence_length={d.sequence_length})")
    if m.type == "patchtst" and m.patch_stride > m.patch_len:
        raise ConfigError(f"model.patch_stride: {m.patch_stride} is longer than model.patch_len {m.patch_len}; "
                          f"the {m.patch_stride - m.patch_len} rows between consecutive patches would never be read")
    if m.type == "dlinear" and m.moving_avg > d.sequence_length:
        raise ConfigError(f"model.moving_avg: kernel {m.moving_avg} is longer than the input window "
                          f"(data.sequence_length={d.sequence_length})")
    if d.symbols == []:  # kept none, and the run said "None: no symbol has enough rows ()"
        raise ConfigError("data.symbols: an empty list keeps no symbol; list some, or write null to keep all")
    twice = sorted(s for s, n in collections.Counter(d.symbols or []).items() if n > 1)  # one pass: 10k+ symbols
    if twice:  # it would be read, trained on and scored twice, weighing it double
        raise ConfigError(f"data.symbols: {twice[0]!r} is listed twice")
    if d.symbols:  # a run takes its symbols in name order: the config (and config.json) says so
        d.symbols = sorted(d.symbols)
    if d.batching == "dates" and d.augment_jitter:
        raise ConfigError("data.augment_jitter: moving window ends breaks the dates of data.batching=dates "
                          "(a batch would no longer hold one cross-section); set one of them off")
    if m.loss != "mse" and d.batching != "dates":
        raise ConfigError(f"model.loss: {m.loss!r} compares the symbols of each date, which needs data.batching=dates "
                          f"(got {d.batching!r})")
    positive("training", t, "learning_rate", "max_steps", "gradient_accumulation_steps", "logging_steps", "max_consecutive_nonfinite")
    if m.type in ("transformer", "patchtst") and m.hidden_size % m.num_heads:  # the others read neither key
        raise ConfigError(f"model.num_heads: {m.num_heads} does not divide model.hidden_size {m.hidden_size}")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {m.dropout}")
    if m.classification_threshold < 0:
        raise ConfigError(f"model.classification_threshold: must be >= 0, got {m.classification_threshold}")
    if m.classification_threshold > 0 and d.target in ("cs_zscore", "cs_rank"):  # a threshold in log-return units
        raise ConfigError(f"model.classification_threshold: the buy/hold/sell classes cut the label at ± a log return, "
                          f"and data.target={d.target} is a cross-sectional score, not a return; use data.target=return "
                          "or excess_return, or classification_threshold=0")
    for q in m.quantiles:
        if not 0 < q < 1:
            raise ConfigError(f"model.quantiles: every level must be in (0, 1), got {q}")
    _distinct_columns("model.quantiles", m.quantiles, lambda q: f"{q:g}", "the forecast column {}_q{}")
    if not (0 < d.train_ratio < 1 and 0 <= d.val_ratio < 1 and d.train_ratio + d.val_ratio < 1):
        raise ConfigError(
            f"data.train_ratio/data.val_ratio: need 0 < train, 0 <= val and train + val < 1, got {d.train_ratio}, {d.val_ratio}"
        )
    for name in ("augment_noise_std", "augment_scale_std", "augment_jitter", "min_rows", "jump_threshold"):
        if getattr(d, name) < 0:  # min_rows and jump_threshold: 0 is "off"; below it was read as 0 or flagged every row
            raise ConfigError(f"data.{name}: must be >= 0, got {shown(getattr(d, name))}")
    if d.min_history is not None and not 1 <= d.min_history <= d.sequence_length:
        raise ConfigError(f"data.min_history: must be in [1, data.sequence_length={d.sequence_length}], got {d.min_history}")
    if d.embargo < 0:
        raise ConfigError(f"data.embargo: must be >= 0, got {d.embargo}")
    if d.split_dates is not None:
        if d.split == "per_symbol":
            raise ConfigError("data.split_dates: cut dates apply to data.split=calendar, not per_symbol")
        if set(d.split_dates) != {"val", "test"}:
            raise ConfigError(f"data.split_dates: expected the keys val and test, got {', '.join(sorted(d.split_dates)) or 'none'}")
        cut = {k: split_date_ns(v, f"data.split_dates.{k}") for k, v in d.split_dates.items()}
        if cut["val"] > cut["test"]:  # equal: no validation split, as a run with data.val_ratio=0 records it
            raise ConfigError(f"data.split_dates: val {d.split_dates['val']} must be before test {d.split_dates['test']}")
    if not d.features:
        raise ConfigError("data.features: at least one feature is needed")
    if cfg.tune.folds < 0 or cfg.tune.folds == 1:  # 1 fold silently scored one run
        raise ConfigError(f"tune.folds: 0 (the validation split of one run) or at least 2 folds, got {cfg.tune.folds}")
    for n in ("pruner_startup_trials", "pruner_warmup_evals"):  # a negative count was Optuna's error, blamed on --storage
        if getattr(cfg.tune, n) < 0:
            raise ConfigError(f"tune.{n}: must be >= 0, got {getattr(cfg.tune, n)}")
    if not 0 < cfg.tune.heartbeat_seconds < cfg.tune.stale_after_seconds:
        raise ConfigError(f"tune.heartbeat_seconds/stale_after_seconds: need 0 < heartbeat < stale_after, got "
                          f"{cfg.tune.heartbeat_seconds} and {cfg.tune.stale_after_seconds}")
    positive("serve", cfg.serve, "header_timeout_s", "max_connections", "max_predictions")
    if not d.device_cache_max_gb >= 0:
        raise ConfigError(f"data.device_cache_max_gb: must be >= 0, got {d.device_cache_max_gb}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {d.num_workers}")
    dates = {k: split_date_ns(getattr(d, k), f"data.{k}") for k in ("start_date", "end_date") if getattr(d, k) is not None}
    if len(dates) == 2 and dates["end_date"] <= dates["start_date"]:
        raise ConfigError(f"data.end_date: {d.end_date} must be after data.start_date {d.start_date}")
    if d.max_gap is not None:
        duration_ns(d.max_gap, "data.max_gap")
    time_zone(d.timezone, "data.timezone")
    if t.weight_decay < 0:
        raise ConfigError(f"training.weight_decay: must be >= 0, got {t.weight_decay}")
    for section, seed in (("training", t.seed), ("tune", cfg.tune.seed)):  # NumPy's seed range; outside it the
        if seed is not None and not 0 <= seed <= MAX_SEED:  # run stopped with a traceback after reading the data
            raise ConfigError(f"{section}.seed: must be in 0..{MAX_SEED}, got {seed}")
    if t.num_cycles < 1:  # checked whatever the schedule, as a tune search space may switch it to cosine_restarts
        raise ConfigError(f"training.num_cycles: must be >= 1, got {t.num_cycles}")
    if not 0 < t.decay_ratio <= 1:
        raise ConfigError(f"training.decay_ratio: must be in (0, 1], got {shown(t.decay_ratio)}")
    if not t.ddp_timeout >= MIN_DDP_TIMEOUT:
        raise ConfigError(f"training.ddp_timeout: must be at least {MIN_DDP_TIMEOUT:g} second, got {shown(t.ddp_timeout)}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(t, name) < 1:
            raise ConfigError(f"training.{name}: must be in [0, 1), got {shown(getattr(t, name))}")
    if not t.adam_epsilon > 0:  # 0: a parameter whose gradient is exactly 0 divides 0 by 0 and turns NaN at once
        raise ConfigError(f"training.adam_epsilon: must be > 0, got {shown(t.adam_epsilon)}")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"training.min_lr_ratio: must be in [0, 1], got {t.min_lr_ratio}")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"training.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    if t.warmup_steps is not None and not 0 <= t.warmup_steps <= t.max_steps:
        raise ConfigError(f"training.warmup_steps: must be in [0, training.max_steps={t.max_steps}], got {t.warmup_steps}")
    for name in ("max_grad_norm", "early_stopping_patience", "early_stopping_threshold", "save_total_limit"):
        if getattr(t, name) < 0:  # 0 disables each (save_total_limit 0: keep every checkpoint)
            raise ConfigError(f"training.{name}: must be >= 0, got {shown(getattr(t, name))}")
    if m.intermediate_size is not None and m.intermediate_size < 1:
        raise ConfigError(f"model.intermediate_size: must be >= 1 (or null for 4 x model.hidden_size), got {m.intermediate_size}")
    metrics = ("loss", "mse", "mae", "mse_vs_zero", "neg_ic", "neg_rank_ic")
    if e.metric not in metrics:
        raise ConfigError(f"evaluation.metric: {shown(e.metric)} is not one of {', '.join(map(repr, metrics))} (lower is better)")
    for section, obj, name in (("training", t, "save_steps"), ("evaluation", e, "eval_steps")):
        if getattr(obj, name) < 0:
            raise ConfigError(f"{section}.{name}: must be >= 0 (0: only at the end), got {getattr(obj, name)}")
    for name in ("backtest_cost_bps", "backtest_slippage_bps"):
        if getattr(e, name) < 0:
            raise ConfigError(f"evaluation.{name}: must be >= 0, got {getattr(e, name)}")
    if e.backtest_max_gross <= 0:
        raise ConfigError(f"evaluation.backtest_max_gross: must be > 0, got {e.backtest_max_gross}")
    for name, low in (("backtest_topk", 1), ("backtest_topk_dropout", 0), ("backtest_rebalance", 1)):
        if getattr(e, name) < low:
            raise ConfigError(f"evaluation.{name}: must be >= {low}, got {getattr(e, name)}")
    # auto resolves by the label: `evaluate` and `backtest` validate the evaluation section beside the data section
    # the model was trained with (hftraining.workflows.evaluate_run.evaluation_config), so it is known here too
    portfolio = e.backtest_portfolio
    if portfolio == "auto":
        portfolio = "topk" if d.target in ("cs_zscore", "cs_rank") else "per_symbol"
    if backtest_ignored(e, portfolio):
        raise ConfigError(backtest_ignored_text(e, portfolio, "evaluation.backtest_portfolio=auto with data.target="
                                                f"{d.target}" if e.backtest_portfolio == "auto" else None))
    if not 0 < cfg.serve.port < 65536:
        raise ConfigError(f"serve.port: must be in 1..65535, got {cfg.serve.port}")
    positive("serve", cfg.serve, "max_body_bytes", "max_symbols", "max_rows", "request_timeout_s", "keep_alive_timeout_s")
    for name in SECONDS_KEYS:
        section, _, key = name.partition(".")
        seconds = getattr(getattr(cfg, section), key)
        if seconds > MAX_SECONDS:
            raise ConfigError(f"{name}: must be at most {MAX_SECONDS:,} seconds (a year), got {seconds:g}")
    for i, origin in enumerate(cfg.serve.cors_origins):
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise ConfigError(f"serve.cors_origins[{i}]: {shown(origin)} is not an origin (scheme://host[:port], no path) or '*'")
    for name in ("max_eval_batches", "max_val_windows", "max_test_windows", "baseline_max_windows"):
        if getattr(e, name) is not None and getattr(e, name) < 1:
            raise ConfigError(f"evaluation.{name}: must be >= 1 (or null for all), got {getattr(e, name)}")
    for q in e.intervals:
        if not 0 < q < 1:
            raise ConfigError(f"evaluation.intervals: every level must be in (0, 1), got {shown(q)}")
    if len(set(e.intervals)) != len(e.intervals):
        raise ConfigError(f"evaluation.intervals: a level is listed twice in {e.intervals}")
    _distinct_columns("evaluation.intervals", e.intervals, lambda q: f"{q * 100:g}", "the forecast columns lower_{1}/upper_{1}")
    if not 0 <= e.aci_gamma < 1:
        raise ConfigError(f"evaluation.aci_gamma: must be in [0, 1), got {shown(e.aci_gamma)}")
    if e.interval_method == "cqr":
        for q in e.intervals:
            need = [round((1 - q) / 2, 12), round((1 + q) / 2, 12)]
            if not all(any(abs(x - y) < 1e-9 for y in m.quantiles) for x in need):
                raise ConfigError(f"evaluation.interval_method: cqr at {q:g} needs model.quantiles to hold {need[0]:g} "
                                  f"and {need[1]:g}, got {m.quantiles}")
    if e.periods_per_year is not None and e.periods_per_year <= 0:
        raise ConfigError(f"evaluation.periods_per_year: must be > 0, got {e.periods_per_year}")
    twice = sorted({n for n in cfg.output.report_to if cfg.output.report_to.count(n) > 1})
    if twice:
        raise ConfigError(f"output.report_to: {', '.join(twice)} listed more than once")
    for key in ("experiment_name", "output_dir"):  # no folder can be named so: a traceback from the first path call
        if "\0" in (getattr(cfg.output, key) or ""):
            raise ConfigError(f"output.{key}: {shown(getattr(cfg.output, key))} holds a NUL character, which no folder name can hold")
    name = Path(cfg.output.experiment_name)  # the run folder runs/<experiment_name>: `..` wrote the run into the working folder
    if cfg.output.output_dir is None and (name.is_absolute() or ".." in name.parts or not name.parts):
        raise ConfigError(f"output.experiment_name: {shown(cfg.output.experiment_name)} is not a folder inside runs/ (the run folder is "
                          "runs/<experiment_name>); give a name inside it, or the run folder as output.output_dir")


BACKTEST_PORTFOLIO_KEYS = {"backtest_positions": "per_symbol", "backtest_topk": "topk", "backtest_topk_dropout": "topk"}
"""The ``evaluation.backtest_*`` keys that act under one backtest portfolio only, and that portfolio."""


def backtest_ignored(e: EvaluationConfig, portfolio: str) -> list[str]:
    """The keys of :data:`BACKTEST_PORTFOLIO_KEYS` that ``e`` sets to another value than their default and
    that the resolved ``portfolio`` (``per_symbol`` or ``topk``) does not use."""
    default = EvaluationConfig()
    return [k for k, p in BACKTEST_PORTFOLIO_KEYS.items() if p != portfolio and getattr(e, k) != getattr(default, k)]


def backtest_ignored_text(e: EvaluationConfig, portfolio: str, why: str | None = None) -> str:
    """One line naming the keys :func:`backtest_ignored` finds: "evaluation.backtest_topk: 5 is ignored by the
    per_symbol portfolio (evaluation.backtest_portfolio=per_symbol); ..." (``why``: how the portfolio was
    resolved, when not by ``evaluation.backtest_portfolio`` itself)."""
    keys = backtest_ignored(e, portfolio)
    default = EvaluationConfig()
    other = "topk" if portfolio == "per_symbol" else "per_symbol"
    head = ", ".join(f"evaluation.{k}" for k in keys)
    values = ", ".join(f"{shown(getattr(e, k))}" for k in keys)
    resets = ", ".join(f"evaluation.{k}={shown(getattr(default, k))}" for k in keys)
    return (f"{head}: {values} {'is' if len(keys) == 1 else 'are'} ignored by the {portfolio} portfolio "
            f"({why or f'evaluation.backtest_portfolio={e.backtest_portfolio}'}); set evaluation.backtest_portfolio={other} "
            f"to use {'it' if len(keys) == 1 else 'them'}, or leave {'it' if len(keys) == 1 else 'them'} at the default ({resets})")


def check_ignored(cfg: Config) -> None:
    """ConfigError naming both keys for a key set away from its default beside a choice that does not read
    it, which the run would otherwise go on without: ``training.use_mixed_precision: true`` under
    ``training.precision: fp32`` (precision outranks it), ``data.train_ratio``/``val_ratio`` beside
    ``data.split_dates`` (the dates cut the splits; with ``tune.folds`` the ratios cut the folds before the
    test date), ``data.batch_size`` under ``data.batching: dates`` and ``data.dates_per_batch`` under
    ``windows``, ``evaluation.aci_gamma`` under another ``interval_method`` than ``aci``,
    ``training.early_stopping_patience`` under ``evaluation.eval_steps: 0`` (one validation, at the last step),
    and ``tune.pruner_warmup_evals`` under ``tune.pruner: none`` (``tune.pruner_startup_trials`` is read there
    too, by TPE as its count of random first trials). The config does not record which keys a user wrote, so
    a value equal to the default counts as not set. A choice that ``tune.search_space`` searches
    (``data.batching``, ``training.precision``, ``evaluation.interval_method``) reads the key in the trials that
    draw the option reading it: a tune over both batchings, each with its own size, is a search, not a mistake
    (refused there, the whole tune was refused before its first trial, as a combination some trial could draw).

    Run on a config being loaded (:func:`config_from_dict`), not by :func:`validate`, which also checks a
    model folder's saved sections when it is loaded: a preprocessing.json records the cut dates a run
    resolved beside the ratios that found them, and a folder trained before this check keeps loading."""
    d, t, e, tune = cfg.data, cfg.training, cfg.evaluation, cfg.tune
    dd, de, dtune = DataConfig(), EvaluationConfig(), TuneConfig()
    fixed = lambda key: key not in tune.search_space  # noqa: E731 - a searched choice is drawn per trial
    if t.use_mixed_precision and t.precision == "fp32" and fixed("training.precision"):
        raise ConfigError("training.use_mixed_precision: true is ignored under training.precision=fp32, which outranks "
                          "it (the run trains in fp32); set training.use_mixed_precision=false, or training.precision=auto "
                          "(or bf16) to train in bf16")
    ratios = [k for k in ("train_ratio", "val_ratio") if getattr(d, k) != getattr(dd, k)]
    if d.split_dates is not None and ratios and tune.folds < 2:
        one = len(ratios) == 1
        raise ConfigError(f"{'/'.join(f'data.{k}' for k in ratios)}: {', '.join(shown(getattr(d, k)) for k in ratios)} "
                          f"{'is' if one else 'are'} ignored beside data.split_dates, whose dates cut the validation and "
                          f"test splits; remove data.split_dates to cut at the ratios, or leave {'it' if one else 'them'} "
                          f"at the default ({', '.join(f'data.{k}={getattr(dd, k)}' for k in ratios)})")
    if d.batching == "dates" and d.batch_size != dd.batch_size and fixed("data.batching"):
        raise ConfigError(f"data.batch_size: {d.batch_size} is ignored under data.batching=dates, whose micro-batch holds "
                          f"every window of data.dates_per_batch={d.dates_per_batch} dates; set data.dates_per_batch, or "
                          f"leave data.batch_size at the default ({dd.batch_size})")
    if d.batching == "windows" and d.dates_per_batch != dd.dates_per_batch and fixed("data.batching"):
        raise ConfigError(f"data.dates_per_batch: {d.dates_per_batch} is ignored under data.batching=windows, whose "
                          f"micro-batch holds data.batch_size={d.batch_size} windows; set data.batching=dates to batch by "
                          f"dates, or leave data.dates_per_batch at the default ({dd.dates_per_batch})")
    if e.interval_method != "aci" and e.aci_gamma != de.aci_gamma and fixed("evaluation.interval_method"):
        raise ConfigError(f"evaluation.aci_gamma: {shown(e.aci_gamma)} is ignored under evaluation.interval_method="
                          f"{e.interval_method} (only aci updates its level); set evaluation.interval_method=aci, or leave "
                          f"evaluation.aci_gamma at the default ({de.aci_gamma})")
    if t.early_stopping_patience and e.eval_steps == 0 and fixed("evaluation.eval_steps"):
        raise ConfigError(f"training.early_stopping_patience: {t.early_stopping_patience} is ignored under "
                          "evaluation.eval_steps=0, whose only validation is at the last step (nothing is left to stop); "
                          "set evaluation.eval_steps to validate every that many steps, or "
                          "training.early_stopping_patience=0")
    if tune.pruner == "none" and tune.pruner_warmup_evals != dtune.pruner_warmup_evals:
        raise ConfigError(f"tune.pruner_warmup_evals: {tune.pruner_warmup_evals} is ignored under tune.pruner=none (no "
                          f"trial is pruned); set tune.pruner=median, or leave it at the default ({dtune.pruner_warmup_evals})")


def reset_ignored(cfg: Config) -> list[str]:
    """Set back to its default, in place, each key of ``cfg`` that :func:`check_ignored` refuses, and return
    them as ``"training.early_stopping_patience: 3"`` (the value set back). For a config a run trained whose
    choices were drawn by a tune (``tune.search_space`` searched ``evaluation.eval_steps`` and the trial drew 0,
    so its ``training.early_stopping_patience`` acted in no step): written without the search space, the config
    trains exactly as the trial did, where keeping the key made ``train --config`` of it a refusal."""
    out: list[str] = []
    for _ in range(16):  # one key or pair a refusal; far fewer rules than this
        try:
            check_ignored(cfg)
            return out
        except ConfigError as e:
            keys = sorted(named_keys(str(e)))
            if not keys:
                raise
            for key in keys:
                section, name = key.split(".")
                sec = getattr(cfg, section)
                out.append(f"{key}: {shown(getattr(sec, name))}")
                setattr(sec, name, getattr(type(sec)(), name))
    check_ignored(cfg)
    return out


def split_date_ns(text: str, key: str) -> int:
    """A cut date of ``data.split_dates`` as int64 ns UTC (a date without a zone is UTC);
    ConfigError naming ``key`` when it is not a date."""
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        ts = pd.NaT
    # pandas reads "NaT" (and "") as no date, which bounded nothing, and "now"/"today" as the clock's time,
    # which cut another split on every run and resume
    if ts is pd.NaT or str(text).strip().lower() in ("now", "today"):
        raise ConfigError(f"{key}: {shown(text)} is not a date (e.g. 2024-07-01)")
    return int((ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).value)


def time_zone(name: str, key: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone called ``name`` (``America/New_York``); ConfigError naming ``key`` when no
    zone has that name (names are case-sensitive: ``UTC``, not ``utc``)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found; an absolute path, not a zone file; a folder, too long
        raise ConfigError(f"{key}: {shown(name)} is not an IANA time zone name (e.g. America/New_York, "
                          "Europe/London, UTC)") from None


def duration_ns(text: str, key: str) -> int:
    """A positive duration (``"30min"``, ``"4h"``, ``"3D"``) as int64 ns; ConfigError naming ``key`` otherwise.
    A number without a unit is refused: pandas reads ``"5"`` as 5 nanoseconds (and ``"5.5"`` as an error)."""
    if re.fullmatch(r"\s*[-+]?\d+\s*", str(text)):
        raise ConfigError(f"{key}: {shown(text)} has no unit (e.g. 30min, 4h, 3D)")
    try:
        ns = int(pd.Timedelta(str(text)).value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {shown(text)} is not a duration (e.g. 30min, 4h, 3D)") from None
    if ns <= 0:
        raise ConfigError(f"{key}: must be a positive duration, got {shown(text)}")
    return ns


def resolved_precision(t: TrainingConfig) -> str:
    """The precision actually used: ``fp32``, ``bf16`` or ``fp16``."""
    if t.precision == "auto":
        return "bf16" if t.use_mixed_precision else "fp32"
    return t.precision


AUTO_COMPILE = {"cpu": "none", "cuda": "none"}
"""What ``training.compile: auto`` means per device type. CPU: none (compiling took 35-47 s and gave no
speed-up on 2 cores). CUDA: none for now. On an H200, ``reduce-overhead`` trained the production model 4.4x
faster at batch 32 x 4 and was proven equal to eager (gradients after 4 accumulated micro-batches, the
losses of 50 steps, a bit-exact resume, no host synchronisation; ``benchmarks/results/h200-2026-12-04.md``),
but its check that dropout draws a new mask per micro-batch has not completed on a GPU yet. Until it
has, ``auto`` leaves CUDA eager: set ``training.compile: reduce-overhead`` to use it. A mode here is
used by ``auto`` only in the scope it was proven in (:func:`hftraining.train.trainer.compile_mode`)."""


def resolved_report_to(o: OutputConfig) -> list[str]:
    """The tracking backends actually used: ``output.report_to`` with the ``output.tensorboard`` alias
    applied (``true`` adds ``tensorboard``, ``false`` removes it)."""
    names = [n for n in o.report_to if n != "tensorboard" or o.tensorboard is not False]
    if o.tensorboard and "tensorboard" not in names:
        names.insert(0, "tensorboard")
    return names


RESUME_MAY_CHANGE = ("data.data_dir", "data.cache_dir", "data.num_workers", "data.device_cache", "data.device_cache_max_gb",
                     "data.eval_batch_size", "data.batch_size", "data.dates_per_batch", "data.augment_noise_std",
                     "data.augment_scale_std")
"""The ``data.*`` keys a resumed run may change: where the files and caches are and how they are read,
and how many windows (dates) a batch holds and how they are perturbed (the sampler's position counts
windows: a run resumed at another world size keeps its global batch with another ``batch_size``)."""
RESUME_FIXED = ("model", "data", "training.optimizer", "training.learning_rate", "training.weight_decay",
                "training.adam_beta1", "training.adam_beta2", "training.adam_epsilon", "training.optimizer_kwargs",
                "training.lr_scaling", "training.seed", "evaluation.metric", "evaluation.max_val_windows",
                "evaluation.max_eval_batches")
"""What a resumed run must keep from its checkpoint's config.json (every key of a section named alone,
but :data:`RESUME_MAY_CHANGE`): the weights' shapes, the windows the sampler's position counts through,
their scaler, and the optimizer whose state is restored with its parameter groups' values (peak rate,
decay, betas, epsilon, keywords: the restored state would keep the saved ones while config.json recorded
the new); the seed (the restored random states and sampler keep the saved one); and what the kept best
validation score was measured with (its metric and windows: a later score on others would be compared
with it). Every other key may change (``training.max_steps`` to train on, the other evaluation keys, the
output)."""


def resume_conflicts(saved: dict[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """The :data:`RESUME_FIXED` keys whose value in ``cfg`` differs from the checkpoint's config.json
    ``saved`` (a mapping, as written by :func:`save_config`) → [(key, saved value, value now)]; a key
    the saved config lacks (written by an older version) is not compared."""
    now = json.loads(json.dumps(cfg.to_dict()))  # the saved file's types (lists, not tuples)
    out = []
    for spec in RESUME_FIXED:
        section, _, key = spec.partition(".")
        before, after = saved.get(section) or {}, now.get(section, {})
        for k in ([key] if key else sorted(after)):
            name = f"{section}.{k}"
            was, now_ = before.get(k), after.get(k)
            if name == "data.symbols" and isinstance(was, list) and isinstance(now_, list):
                was, now_ = sorted(was), sorted(now_)  # a set: the run takes them in name order either way
            if name in ("data.train_ratio", "data.val_ratio") and before.get("split_dates") is not None \
                    and before.get("split_dates") == after.get("split_dates"):
                continue  # the same dates cut both runs' splits: the ratios saved beside them cut nothing
            if name not in RESUME_MAY_CHANGE and k in before and was != now_:
                out.append((name, before[k], after.get(k)))
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    write_json(path, cfg.to_dict())
