"""A run stopped right after a checkpoint and resumed ends where the uninterrupted run ends, bit for bit,
across the settings a run combines (schedules, accumulation, batches of dates, augmentation, bf16,
gradient checkpointing, early stopping in mid-patience, schedule-free and Hessian optimizers, a last step
between checkpoints); a resume on files whose prices were revised inside the training rows is refused;
the resume's rewrite of metrics.jsonl never loses the records up to the checkpoint."""

import errno
import json
import pathlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftraining.core.config import load_config
from hftraining.core.errors import UserError, WriteError
from hftraining.train import trainer as trainer_mod
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hftraining" / "sample_data"
COMMON = ("model.dropout=0.1", "training.save_steps=3", "evaluation.eval_steps=2", "training.logging_steps=2",
          "training.save_total_limit=100", "training.warmup_steps=2", "output.report_to=[jsonl]",
          "evaluation.report=false")
PATIENT = ("training.early_stopping_patience=3", "evaluation.eval_steps=1", "training.learning_rate=0.05")


class _Killed(BaseException):
    """Stands in for a SIGKILL right after a checkpoint is complete."""


def _train(out: Path, *extra: str, kill_after: int | None = None) -> None:
    save = trainer_mod.Trainer.save_checkpoint

    def save_then_die(self):
        save(self)
        if self.state.global_step == kill_after:
            raise _Killed

    with pytest.MonkeyPatch.context() as mp:
        if kill_after is not None:
            mp.setattr(trainer_mod.Trainer, "save_checkpoint", save_then_die)
        try:
            train(load_config(None, tiny(out, *COMMON, *extra)))
        except _Killed:
            return
    assert kill_after is None, "the run ended before the checkpoint it was to stop after"


def _records(run: Path, after: int) -> list[dict]:
    """metrics.jsonl's records after step ``after``, throughput (a timing) left out."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "samples_per_second"} for r in recs if r["step"] > after]


def _same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys(), a
    bad = [k for k in x if not torch.equal(x[k], y[k])]
    assert not bad, f"{a}: {bad[:3]}"


CASES = {
    # a schedule with warmup, 3 micro-batches, noise and scale augmentation, bf16 autocast, checkpointed layers,
    # quantile and buy/hold/sell heads; 8 steps end between the checkpoints at 6 and 9
    "wsd-accumulated-augmented-bf16-checkpointed": (
        ["training.lr_scheduler=wsd", "training.gradient_accumulation_steps=3", "data.augment_noise_std=0.1",
         "data.augment_scale_std=0.1", "training.use_mixed_precision=true", "training.gradient_checkpointing=true",
         "model.quantiles=[0.1,0.5,0.9]", "model.classification_threshold=0.001", "training.max_steps=8"], 3),
    # batches of whole dates (micro-batches of other sizes) under a cross-sectional loss, linear schedule
    "dates-ic-linear": (
        ["data.batching=dates", "data.dates_per_batch=3", "data.symbols=[AEM, WPM, XPO, NIO]", "model.loss=ic",
         "training.gradient_accumulation_steps=2", "training.lr_scheduler=linear", "training.max_steps=8"], 3),
    # stopped at step 6 two evaluations into a patience of three: the resumed run stops where the other does
    "early-stopping-mid-patience": ([*PATIENT, "training.max_steps=40", "training.lr_scheduler=constant"], 6),
    # schedule-free weights (evaluated averaged, trained on), the best checkpoint as the final model
    "schedule-free-best-at-end": (
        ["training.optimizer=schedulefreeadamw", "training.load_best_model_at_end=true", "training.max_steps=8"], 3),
    # Hessian refreshes on both sides of the checkpoint, cosine with restarts
    "sophia-cosine-restarts": (
        ["training.optimizer=sophia", 'training.optimizer_kwargs={"update_period": 2}', "training.weight_decay=0.0",
         "training.lr_scheduler=cosine_restarts", "training.num_cycles=2", "training.max_steps=8"], 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_run_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_run_bit_for_bit(name, tmp_path):
    """The final model, every later checkpoint (weights, optimizer state, random states, trainer state:
    schedule, data position, early stopping), metrics.jsonl's records after the checkpoint and eval.json
    are those of the run that was never stopped."""
    extra, stop = CASES[name]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _train(full, *extra)
    _train(resumed, *extra, kill_after=stop)
    assert not (resumed / "final").exists()
    _train(resumed, *extra, "training.resume_from_checkpoint=auto")
    _same_tensors(full / "final" / "model.safetensors", resumed / "final" / "model.safetensors")
    later = sorted(p.name for p in (full / "checkpoints").iterdir() if int(p.name[5:]) > stop)
    assert later and later == sorted(p.name for p in (resumed / "checkpoints").iterdir() if int(p.name[5:]) > stop)
    for name_ in later:
        a, b = full / "checkpoints" / name_, resumed / "checkpoints" / name_
        for f in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
            _same_tensors(a / f, b / f)
        assert (a / "optimizer.json").read_text() == (b / "optimizer.json").read_text()
        sa, sb = (json.loads((c / "trainer_state.json").read_text()) for c in (a, b))
        sa.pop("checksums"), sb.pop("checksums")
        assert sa == sb, name_
    assert _records(full, stop) == _records(resumed, stop)
    assert json.loads((full / "eval.json").read_text()) == json.loads((resumed / "eval.json").read_text())
    if name == "early-stopping-mid-patience":  # the case is what it says
        at_stop = json.loads((resumed / "checkpoints" / f"step-{stop:08d}" / "trainer_state.json").read_text())
        last = json.loads((full / "checkpoints" / later[-1] / "trainer_state.json").read_text())
        assert at_stop["evals_without_improvement"] > 0 and not at_stop["stopped_early"]
        assert last["stopped_early"] and last["global_step"] < 40


def _copy_sample(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for sym in ("AEM", "WPM"):
        shutil.copy(SAMPLE / f"{sym}.csv", folder / f"{sym}.csv")
    return folder


def _revise_close(csv: Path, date: str, factor: float) -> None:
    lines = csv.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(date))
    cells = lines[i].split(",")
    cells[1] = repr(float(cells[1]) * factor)  # the close column
    lines[i] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")


def test_a_resume_on_prices_revised_inside_the_training_rows_is_a_one_line_error(tmp_path):
    """A close revised inside the training period (an adjustment for a dividend, a corrected bar) keeps
    every date, split and window count: the resume continued on other inputs, scaled by a scaler fit on
    them, and data_report.json was rewritten to say nothing changed. A close revised in the test
    split alone changes nothing trained on, and the run resumes."""
    data = _copy_sample(tmp_path / "data")
    run = tmp_path / "run"
    args = (f"data.data_dir={data}", "training.max_steps=8")
    _train(run, *args, kill_after=3)
    report = (run / "data_report.json").read_text()
    _revise_close(data / "AEM.csv", "2021-06-01", 1.3)
    with pytest.raises(UserError) as err:
        _train(run, *args, "training.resume_from_checkpoint=auto")
    msg = str(err.value)
    assert "\n" not in msg and "cannot resume on other data" in msg and "AEM" in msg and "WPM" not in msg, msg
    assert "data.data_dir" in msg and "step-00000003" in msg
    assert (run / "data_report.json").read_text() == report and not (run / "final").exists()
    _revise_close(data / "AEM.csv", "2021-06-01", 1 / 1.3)
    shutil.copy(SAMPLE / "AEM.csv", data / "AEM.csv")  # back as it was
    _revise_close(data / "AEM.csv", "2026-03-02", 1.3)  # in the test split
    _train(run, *args, "training.resume_from_checkpoint=auto")
    assert (run / "final" / "model.safetensors").is_file()
    # --resume of the finished run (checked, then left as it is) compares the prices too
    _revise_close(data / "AEM.csv", "2021-06-01", 1.3)
    with pytest.raises(UserError, match="cannot resume on other data"):
        _train(run, *args, "training.resume_from_checkpoint=auto")


def test_a_failed_rewrite_of_metrics_jsonl_on_resume_keeps_the_records_up_to_the_checkpoint(tmp_path, monkeypatch):
    """A resume drops the records a stopped run logged after its checkpoint by rewriting metrics.jsonl.
    Rewritten in place, a write that failed half-way (a full disk, a kill) left the file cut short: the
    records of the steps before the checkpoint, which are not redone, were lost for good."""
    full, run = tmp_path / "full", tmp_path / "run"
    _train(full, "training.max_steps=8")
    shutil.copytree(full, run)  # a run killed after step 8 was logged, its newest checkpoint step 6
    shutil.rmtree(run / "checkpoints" / "step-00000008")
    shutil.rmtree(run / "final")
    (run / "eval.json").unlink()
    before = (run / "metrics.jsonl").read_text()
    real = pathlib.Path.write_text

    def full_disk(self, text, *a, **k):
        if "metrics.jsonl" not in self.name:
            return real(self, text, *a, **k)
        with open(self, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(pathlib.Path, "write_text", full_disk)
        with pytest.raises((OSError, WriteError)) as err:
            _train(run, "training.max_steps=8", "training.resume_from_checkpoint=auto")
    assert (run / "metrics.jsonl").read_text() == before
    assert isinstance(err.value, WriteError) and "\n" not in str(err.value) and "metrics.jsonl" in str(err.value)
    _train(run, "training.max_steps=8", "training.resume_from_checkpoint=auto")
    assert _records(run, 0) == _records(full, 0)


@pytest.mark.slow  # two 8-step runs and a resume for a name's case: kept out of the default suite's time
def test_the_optimizer_named_in_another_case_resumes(tmp_path):
    """``training.optimizer`` is chosen by its name in any case (``AdamW`` builds adamw): a run started as
    ``AdamW`` and resumed as ``adamw`` was refused as if the optimizer had changed. It continues to where
    the uninterrupted run ends; another optimizer is still refused."""
    full, run = tmp_path / "full", tmp_path / "run"
    _train(full, "training.max_steps=8", "training.optimizer=adamw")
    _train(run, "training.max_steps=8", "training.optimizer=AdamW", kill_after=3)
    with pytest.raises(UserError, match='training.optimizer="lion"'):
        _train(run, "training.max_steps=8", "training.optimizer=lion", "training.resume_from_checkpoint=auto")
    _train(run, "training.max_steps=8", "training.optimizer=adamw", "training.resume_from_checkpoint=auto")
    _same_tensors(full / "final" / "model.safetensors", run / "final" / "model.safetensors")
