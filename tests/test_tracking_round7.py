"""Tracking and the run's logs: MLflow's history across a resume (a finished run resumed from an earlier
checkpoint scores the test split again at the same step), metrics.csv on a full disk or a cut row,
train.log with a progress bar and for what a run says before its trainer, a missing tracking package."""

import logging
from importlib.util import find_spec

import pytest

from hftraining.core.config import Config
from hftraining.train.logging import held_records, log
from hftraining.train.tracking import MlflowTracker, read_tracking
from conftest import tiny  # noqa: E402
from test_train_tracking_audit import no_mlflow_env  # noqa: E402,F401  (a fixture)

needs_mlflow = pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")


def _history(run_dir, key):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlruns.db').resolve()}")
    run_id = read_tracking(run_dir)["mlflow"]["run_id"]
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)), client.get_run(run_id)


@needs_mlflow
def test_test_metrics_redone_at_the_same_step_are_logged_once_unless_changed(no_mlflow_env, tmp_path):
    """A run finished at step 8 (test metrics logged there), resumed from its step-4 checkpoint
    (training.resume_from_checkpoint=<path>), redoes steps 5-8 and scores the test split again at step
    8: MLflow held every test_* number twice at step 8. An unchanged number is logged once; one that
    changed (other evaluation settings) is logged, so the run's value is eval.json's."""
    run = tmp_path / "run"
    first = MlflowTracker()
    first.on_start(run, Config(), None)
    for step in (4, 8):
        first.on_log(step, {"loss": 1.0 / step})
    first.on_eval(8, {"mse": 0.25, "mae": 0.5})
    first.on_end("verdict", [], failed=False)

    resumed = MlflowTracker()
    resumed.on_start(run, Config(), 4)
    resumed.on_log(8, {"loss": 1.0 / 8})
    resumed.on_eval(8, {"mse": 0.25, "mae": 0.75})  # mae changed, mse redone bit for bit
    resumed.on_end("verdict", [], failed=False)

    loss, _ = _history(run, "loss")
    mse, _ = _history(run, "test_mse")
    mae, logged = _history(run, "test_mae")
    assert loss == [(4, 0.25), (8, 0.125)]
    assert mse == [(8, 0.25)]
    assert sorted(v for _, v in mae) == [0.5, 0.75]
    assert logged.data.metrics["test_mae"] == 0.75 and logged.data.metrics["test_mse"] == 0.25


def test_a_csv_rewrite_that_fails_keeps_the_rows_already_written(tmp_path, monkeypatch):
    """metrics.csv is rewritten whole when a key first appears (the first validation's eval_* columns)
    and when a step's validation joins its training row. A full disk (or a kill) during that rewrite
    left the file truncated, every row up to the checkpoint lost: a resume keeps only the rows the
    file still holds. The rewrite now goes beside the file and replaces it only when complete."""
    import csv
    import errno

    from hftraining.core.errors import WriteError

    run, tracker = _csv_run(tmp_path, 20)

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(csv.DictWriter, "writerows", full)
        with pytest.raises(WriteError, match="metrics.csv: cannot write"):
            tracker.on_log(20, {"eval_loss": 0.5})
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]


def test_train_log_keeps_the_training_lines_a_progress_bar_shows(tmp_path):
    """On a terminal (output.progress_bar=auto) the bar shows each logging step's loss and train.log
    got none of them, only the validation lines: a run started in tmux left a train.log without its
    training curve, where the same run under nohup had one line per logging step."""
    from hftraining.train.logging import RunLogger

    run = tmp_path / "run"
    cfg = Config()
    cfg.output.report_to = []
    logger = RunLogger(run, config=cfg, progress_bar="always", total_steps=2)
    records = [{"step": 1, "loss": 0.5, "learning_rate": 0.001},
               {"step": 2, "loss": 0.25, "learning_rate": 0.001}, {"step": 2, "eval_loss": 0.75}]
    for rec in records:
        logger.log(rec)
        logger.advance()
    logger.close()
    lines = (run / "train.log").read_text().splitlines()
    for text in ("step=1 loss=0.5 learning_rate=0.001", "step=2 loss=0.25 learning_rate=0.001", "step=2 eval_loss=0.75"):
        assert sum(line.endswith(f" INFO {text}") for line in lines) == 1, (text, lines)


def test_a_resumed_csv_drops_a_last_row_cut_short(tmp_path):
    """A full disk (or a kill) while a row was appended leaves its first bytes: step 12's row cut to
    "1" was read back by --resume as a row of step 1, kept (1 <= the checkpoint's step 8) after step 8."""
    import csv

    from hftraining.train.tracking import CsvTracker

    run, first = _csv_run(tmp_path, 11)
    with open(run / "metrics.csv", "a", encoding="utf-8") as f:
        f.write("1")  # step 12's row, cut after its first byte
    resumed = CsvTracker()
    resumed.on_start(run, Config(), 8)
    resumed.on_log(9, {"loss": 1.0 / 9})
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    assert all(r["loss"] for r in rows)


def _csv_run(tmp_path, steps: int):
    """A run folder whose CsvTracker logged the loss of steps 1..``steps``: (folder, tracker)."""
    from hftraining.train.tracking import CsvTracker

    run = tmp_path / "run"
    run.mkdir()
    tracker = CsvTracker()
    tracker.on_start(run, Config(), None)
    for step in range(1, steps + 1):
        tracker.on_log(step, {"loss": 1.0 / step})
    return run, tracker


@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_a_missing_tracking_package_is_said_before_overwrite_removes_the_earlier_run(tmp_path, monkeypatch, capsys):
    """``output.report_to=[mlflow]`` without the package was found only when the Trainer was built: after
    the data was prepared and, with ``output.overwrite=true``, after the earlier run was removed."""
    import builtins

    from hftraining.cli import main

    run = tmp_path / "run"
    base = tiny(run, "training.max_steps=2", "training.save_steps=0", "evaluation.eval_steps=0")
    assert main(["train", *base]) == 0
    before = sorted(p.name for p in run.iterdir())
    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    monkeypatch.delitem(__import__("sys").modules, "mlflow", raising=False)
    capsys.readouterr()
    assert main(["train", *base, "output.overwrite=true", "output.report_to=[mlflow]"]) == 2
    assert "mlflow" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before


def test_train_log_holds_what_the_run_said_before_its_trainer(tmp_path, capsys):
    """train.log is the console log: ``output.overwrite`` starting over (and the data's warnings) were
    said before the trainer opened train.log, so only the console had them."""
    from hftraining.cli import main

    run = tmp_path / "run"
    base = tiny(run, "training.max_steps=2", "training.save_steps=0", "evaluation.eval_steps=0")
    assert main(["train", *base]) == 0
    capsys.readouterr()
    assert main(["train", *base, "output.overwrite=true"]) == 0
    assert "starting over" in capsys.readouterr().err
    text = (run / "train.log").read_text(encoding="utf-8")
    assert text.count("output.overwrite: starting over") == 1, text


def test_a_held_warning_reaches_stderr_without_logging_set_up(monkeypatch, capsys):
    """Library use with no logging configured: Python prints a warning on stderr (its last resort);
    a hold for train.log keeps the record and must not swallow it (no train.log may ever open)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's capture handler stands for a configured app
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
    log.warning("before any hold")
    assert "before any hold" in capsys.readouterr().err  # what the library did without a hold
    with held_records():
        log.warning("warning: said while held")
        logging.getLogger("hftraining.data.pipeline").warning("warning: a child logger's")
    err = capsys.readouterr().err
    assert "said while held" in err and "a child logger's" in err


def test_a_training_warning_reaches_stderr_without_logging_set_up(tmp_path, monkeypatch, capsys):
    """Library use with no logging configured: once train.log is open, a warning said during training
    goes to the file AND to stderr, as Python prints it without our handler; INFO lines stay in the file."""
    from hftraining.train.logging import RunLogger

    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
    rl = RunLogger(tmp_path / "run", config=None, progress_bar="never")
    try:
        log.warning("warning: said during training")
        log.info("an info line")
    finally:
        rl.close()
    err = capsys.readouterr().err
    assert "said during training" in err and "an info line" not in err
    text = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert "said during training" in text and "an info line" in text


def test_a_held_warning_reaches_stderr_once_when_train_log_opens(tmp_path, monkeypatch, capsys):
    """Library use with no logging configured: a warning held for train.log is printed on stderr when
    it is said and written to train.log when that opens, not printed a second time."""
    from hftraining.train.logging import RunLogger

    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
    with held_records():
        log.warning("warning: said before train.log opened")
        rl = RunLogger(tmp_path / "run", config=None, progress_bar="never")
        rl.close()
    assert capsys.readouterr().err.count("said before train.log opened") == 1
    assert "said before train.log opened" in (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
