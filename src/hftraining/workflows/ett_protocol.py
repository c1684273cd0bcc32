"""What ``hftraining bench ett`` offers, without the training stack: the datasets, horizons and models
of the ETT benchmark (:mod:`hftraining.workflows.ett`), its training settings and their defaults, and
the line that describes it. The command's parser reads them from here, so ``bench ett --help`` imports
no torch (about 1 s, where importing the benchmark's training code took 5 to 9 s); the benchmark
re-exports them, so ``ett.DATASETS`` and ``ett.TrainSettings`` are these."""

from __future__ import annotations

from dataclasses import dataclass

SUMMARY = "The ETT long-horizon benchmark under the published protocol (multivariate, ``features=M``)."
"""The benchmark in one line: the first paragraph of :mod:`hftraining.workflows.ett`'s docstring."""

DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
HORIZONS = (96, 192, 336, 720)
MODELS = ("patchtst", "dlinear", "linear")
"""The trained models of ``--model``; ``linear``: the closed-form map alone (nothing trained)."""

DATASET, HORIZON, MODEL = "ETTh1", 96, "patchtst"
"""A cell's dataset, horizon and model when none is named."""
SEQ_LEN = 336
"""The look-back L of the trained model and of the reference linear map (PatchTST/42, DLinear: 336)."""
RIDGE = 1e-6
"""λ of the reference closed-form map, relative to the Gram diagonal."""
RUN_DIR = "runs/ett"
"""The folder of the trained models' run folders."""


@dataclass
class TrainSettings:
    """The benchmark's training flags; :func:`hftraining.workflows.ett.trainer_config` turns them into
    the package's config."""

    epochs: int = 10
    """Passes over the training windows (early stopping may end sooner)."""
    batch_size: int = 128
    """Windows per step (each holds C channel series)."""
    lr: float = 1e-3
    """Peak learning rate of a cosine schedule with a 5% linear warmup, down to 10%."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay (the reference scripts use none)."""
    patience: int = 3
    """Stop after this many evaluations without a lower val MSE."""
    evals_per_epoch: int = 2
    """Val evaluations (checkpoint candidates) per epoch."""
    bf16: bool = False
    """bfloat16 autocast for the forward pass; time it first: BatchNorm and PatchTST's small matmuls gain little on CPU."""
    seed: int = 2021
