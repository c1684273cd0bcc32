"""What a resume keeps of the run's promise: the best checkpoint the final model is read from is
verified as a resumed one is, a resume never goes back past the steps its checkpoint has taken, and
``training.load_best_model_at_end`` turned on by a resume says why it keeps the last step; a run
folder named as the checkpoint to resume is said to be one, not a damaged checkpoint."""

import json
from pathlib import Path

import pytest

from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError, UserError
from hftraining.train import trainer as trainer_mod
from hftraining.train.checkpoint import resolve_resume
from hftraining.train.runner import build_trainer, training_run
from conftest import tiny  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401  (the hftraining logger's records)

RUN = ("model.dropout=0.1", "training.logging_steps=2", "output.report_to=[jsonl]")


class _Killed(BaseException):
    """Stands in for a SIGKILL right after a checkpoint is complete."""


def _train(out: Path, *extra: str, kill_after: int | None = None, monkeypatch=None) -> None:
    if kill_after is not None:
        save = trainer_mod.Trainer.save_checkpoint

        def save_then_die(self):
            save(self)
            if self.state.global_step == kill_after:
                raise _Killed

        monkeypatch.setattr(trainer_mod.Trainer, "save_checkpoint", save_then_die)
    try:
        with training_run(load_config(None, tiny(out, *RUN, *extra))):
            pass
    except _Killed:
        monkeypatch.undo()
        return
    assert kill_after is None, "the run ended before the checkpoint it was to die after"


@pytest.mark.parametrize("how", ["changed", "truncated"])
def test_a_damaged_best_checkpoint_is_a_one_line_error_not_other_weights(tmp_path, how):
    """The best checkpoint is read at the end, possibly long after it was written (a resumed run):
    a changed byte in its weights loaded other weights as the final model, silently; a cut file
    was safetensors' own error. Both are the file named, one line."""
    cfg = load_config(None, tiny(tmp_path / "run", *RUN, "training.max_steps=8", "training.save_steps=4",
                                 "evaluation.eval_steps=2", "training.load_best_model_at_end=true"))
    t = build_trainer(cfg)
    try:
        t.fit()
        best = t.best_checkpoint_path()
        assert best is not None and best.is_dir()
        weights = best / "model.safetensors"
        raw = bytearray(weights.read_bytes())
        if how == "changed":
            raw[-3] ^= 0x08  # in the last tensor's data: the file still loads
        else:
            raw = raw[:-64]
        weights.write_bytes(bytes(raw))
        with pytest.raises(UserError) as err:
            t.final_weights()
    finally:
        t.close()
    msg = str(err.value)
    assert "\n" not in msg and "training.load_best_model_at_end" in msg and "model.safetensors" in msg
    assert best.name in msg


def test_resuming_with_max_steps_below_the_checkpoint_is_a_one_line_error(tmp_path, monkeypatch):
    """A checkpoint at step 6 resumed with training.max_steps=4 trained nothing and wrote final/ with
    6 steps' weights under a config.json saying 4: not where a run of 4 steps ends."""
    out = tmp_path / "run"
    _train(out, "training.max_steps=8", "training.save_steps=3", "evaluation.eval_steps=0",
           kill_after=6, monkeypatch=monkeypatch)
    with pytest.raises(ConfigError) as err:
        _train(out, "training.max_steps=4", "training.save_steps=3", "evaluation.eval_steps=0",
               "training.resume_from_checkpoint=auto")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("training.max_steps: 4") and "step 6" in msg
    assert not (out / "final").exists()
    # a checkpoint named explicitly: refused before the later checkpoints are set aside
    with pytest.raises(ConfigError, match="training.max_steps: 2"):
        _train(out, "training.max_steps=2", "training.save_steps=3", "evaluation.eval_steps=0",
               f"training.resume_from_checkpoint={out / 'checkpoints' / 'step-00000003'}")
    assert (out / "checkpoints" / "step-00000006").is_dir()
    # the run goes on with a max_steps it can reach, to where an uninterrupted run ends
    _train(out, "training.max_steps=8", "training.save_steps=3", "evaluation.eval_steps=0",
           "training.resume_from_checkpoint=auto")
    full = tmp_path / "full"
    _train(full, "training.max_steps=8", "training.save_steps=3", "evaluation.eval_steps=0")
    assert (out / "final" / "model.safetensors").read_bytes() == (full / "final" / "model.safetensors").read_bytes()


def test_load_best_turned_on_by_a_resume_says_the_best_step_had_no_checkpoint(tmp_path, monkeypatch, logged):
    """The best step (2) was scored while load_best_model_at_end was off and not saved; a resume that
    turns it on keeps the last step's weights, and says why (it said there was no validation score)."""
    out = tmp_path / "run"
    common = ("training.save_steps=3", "evaluation.eval_steps=2")
    _train(out, "training.max_steps=4", *common, kill_after=3, monkeypatch=monkeypatch)
    state = json.loads((out / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["best_step"] == 2 and state["best_checkpoint"] is None
    _train(out, "training.max_steps=3", *common, "training.load_best_model_at_end=true",
           "training.resume_from_checkpoint=auto")
    said = [r.getMessage() for r in logged if "load_best_model_at_end" in r.getMessage()]
    assert len(said) == 1 and "no validation score" not in said[0], said
    assert said[0].startswith("warning:") and "best step 2" in said[0] and "last step" in said[0]


def test_a_run_folder_named_as_the_checkpoint_says_so_not_that_a_checkpoint_is_damaged(tmp_path):
    """``training.resume_from_checkpoint=<run>`` (or ``<run>/checkpoints``) said the checkpoint was
    incomplete (trainer_state.json missing), as if the run's checkpoints were damaged."""
    out = tmp_path / "run"
    _train(out, "training.max_steps=4", "training.save_steps=2", "evaluation.eval_steps=0")
    for named in (out, out / "checkpoints"):
        with pytest.raises(UserError) as err:
            resolve_resume(str(named), out / "checkpoints")
        msg = str(err.value)
        assert "\n" not in msg and "not a checkpoint folder" in msg and "incomplete" not in msg
        assert str(out / "checkpoints" / "step-00000004") in msg
    assert resolve_resume(str(out / "checkpoints" / "step-00000004"), out / "checkpoints").name == "step-00000004"
