"""Run logging: console (progress bar on a terminal, plain lines otherwise), train.log,
metrics.jsonl and TensorBoard. Only rank 0 logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hftraining.core.jsonio import dumps

log = logging.getLogger("hftraining")


def setup_console_logging(level: int = logging.INFO) -> None:
    """Plain ``message`` lines on stderr for the ``hftraining`` logger (idempotent)."""
    if not any(getattr(h, "_hft_console", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        h._hft_console = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.setLevel(level)
    log.propagate = False


class RunLogger:
    """Writes each record to metrics.jsonl and TensorBoard, and a line to the console/train.log."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 progress_bar: str = "auto", total_steps: int = 0, purge_step: int | None = None):
        self.enabled = enabled
        self.run_dir = run_dir
        self._file_handler: logging.Handler | None = None
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)  # train.log gets INFO even when the library is used without the CLI
        fh = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)
        self._file_handler = fh
        self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run hides the events a killed run wrote after its checkpoint
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
        use_bar = progress_bar == "always" or (progress_bar == "auto" and sys.stderr.isatty())
        if use_bar and total_steps:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr)

    def info(self, msg: str, *args: Any) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg % args if args else msg, file=sys.stderr)
            if self._file_handler:  # the bar owns the terminal: write the file directly
                self._file_handler.emit(logging.LogRecord("hftraining", logging.INFO, "", 0, msg, args, None))
        else:
            log.info(msg, *args)

    def log(self, record: dict[str, Any], console: bool = True) -> None:
        """One JSON line; numeric values also go to TensorBoard under ``train/`` or ``eval/``."""
        if not self.enabled:
            return
        step = int(record["step"])
        self._jsonl.write(dumps(record, indent=None) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k == "step" or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                tag = f"eval/{k[5:]}" if k.startswith("eval_") else f"train/{k}"
                self._tb.add_scalar(tag, v, step)
        if console:
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            if self._bar is not None:
                self._bar.set_postfix_str(
                    " ".join(f"{k}={record[k]:.3g}" for k in ("loss", "learning_rate", "samples_per_second") if k in record),
                    refresh=False,
                )
                if any(k.startswith("eval_") for k in record):
                    self.info(text)
            else:
                self.info(text)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
