"""Resuming a checkpoint of another run folder (``training.resume_from_checkpoint=<other run>/checkpoints/step-N``)
continues that run in this folder, best checkpoint included, and takes nothing of this folder's own checkpoints."""

import logging
import shutil

import pytest
from safetensors.torch import load_file

from hftraining.core.config import load_config
from hftraining.core.errors import UserError
from hftraining.train.checkpoint import list_checkpoints, verify_checkpoint
from hftraining.train.runner import training_run
from conftest import tiny  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401 - a fixture

# an early_stopping_threshold no later score beats: the best step is the first evaluated (2), kept by rotation
COMMON = ("training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=2", "training.logging_steps=2",
          "training.load_best_model_at_end=true", "training.early_stopping_threshold=1", "model.dropout=0.1")
BEST, FORKED_AT = "step-00000002", "step-00000006"


def _train(out, *extra):
    with training_run(load_config(None, tiny(out, *COMMON, *extra))) as run:
        return run.state


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run whose best checkpoint (step 2) is older than its later ones (6, 8)."""
    out = tmp_path_factory.mktemp("source") / "run"
    state = _train(out)
    assert state.best_step == 2 and [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 6, 8]
    return out


def test_a_checkpoint_of_another_run_folder_resumes_with_its_best_checkpoint(source, tmp_path):
    """The state names the best checkpoint by its folder name, which was looked up in the new run's
    checkpoints/: after training every step, load_best_model_at_end failed ("the best checkpoint ... is gone")."""
    fork = tmp_path / "fork"
    state = _train(fork, f"training.resume_from_checkpoint={source / 'checkpoints' / FORKED_AT}")
    assert state.best_step == 2
    assert (fork / "final" / "model.safetensors").read_bytes() == (source / "final" / "model.safetensors").read_bytes()
    assert verify_checkpoint(fork / "checkpoints" / BEST) is True  # the run folder holds its own best checkpoint


def test_a_checkpoint_of_another_run_folder_takes_nothing_of_this_folder_s_checkpoints(source, tmp_path, logged):
    """A folder holding checkpoints of another run (another seed): only those after the step resumed were set
    aside, so the final model was read from this folder's own step-2 checkpoint, another run's weights, silently."""
    fork = tmp_path / "fork"
    _train(fork, "training.seed=7")
    other_best = load_file(str(fork / "checkpoints" / BEST / "model.safetensors"))
    logged.clear()
    _train(fork, f"training.resume_from_checkpoint={source / 'checkpoints' / FORKED_AT}")
    final = load_file(str(fork / "final" / "model.safetensors"))
    expected = load_file(str(source / "final" / "model.safetensors"))
    assert all((final[k] == expected[k]).all() for k in expected)
    assert not all((final[k] == other_best[k]).all() for k in expected)
    names = sorted(p.name for p in (fork / "checkpoints").iterdir())
    assert names == [BEST, f"{BEST}.superseded", FORKED_AT, FORKED_AT + ".superseded", "step-00000008",
                     "step-00000008.superseded"], names
    warned = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "another run folder" in warned[0] and "superseded" in warned[0], warned


def test_a_missing_best_checkpoint_of_another_run_folder_is_said_before_training(source, tmp_path):
    copy = tmp_path / "copied"
    shutil.copytree(source / "checkpoints" / FORKED_AT, copy / "checkpoints" / FORKED_AT)  # without its best
    fork = tmp_path / "fork"
    with pytest.raises(UserError) as err:
        _train(fork, f"training.resume_from_checkpoint={copy / 'checkpoints' / FORKED_AT}")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("training.load_best_model_at_end") and BEST in msg
    assert "load_best_model_at_end=false" in msg and not (fork / "final").exists()
    # without load_best_model_at_end the best step's checkpoint is not needed: the run continues
    state = _train(fork, f"training.resume_from_checkpoint={copy / 'checkpoints' / FORKED_AT}",
                   "training.load_best_model_at_end=false")
    assert state.global_step == 8 and state.best_checkpoint is None


def test_a_damaged_checkpoint_written_before_checksums_is_a_line_naming_its_file(source, tmp_path):
    """A checkpoint without checksums resumes unverified; cut short, it stopped the run with safetensors'
    own message ("incomplete metadata, file not fully covered"), which names no file, and not as a UserError."""
    import json

    run = tmp_path / "run"
    shutil.copytree(source / "checkpoints" / FORKED_AT, run / "checkpoints" / FORKED_AT)
    state_file = run / "checkpoints" / FORKED_AT / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["checksums"]  # as written before checkpoints carried them
    state_file.write_text(json.dumps(state))
    for name in ("rng.safetensors", "model.safetensors"):
        f = run / "checkpoints" / FORKED_AT / name
        f.write_bytes(f.read_bytes()[:-100])
        with pytest.raises(UserError) as err:
            _train(run, "training.resume_from_checkpoint=auto", "training.load_best_model_at_end=false")
        msg = str(err.value)
        assert "\n" not in msg and str(f) in msg and "cannot be read" in msg, msg


@pytest.mark.parametrize("best", ["true", "false"])
def test_the_checkpoint_resumed_from_another_run_folder_is_this_folder_s_too(source, tmp_path, best):
    """Every checkpoint of this folder is set aside: until the fork's first save it held only the copied best (an
    earlier step) or nothing, so a --resume after a crash there restarted from that step or from step 0. The
    checkpoint resumed is copied in, so --resume continues from it."""
    fork = tmp_path / "fork"
    state = _train(fork, f"training.resume_from_checkpoint={source / 'checkpoints' / FORKED_AT}", "training.max_steps=6",
                   f"training.load_best_model_at_end={best}")
    assert state.global_step == 6
    copied = fork / "checkpoints" / FORKED_AT
    assert verify_checkpoint(copied) is True
    assert (copied / "model.safetensors").read_bytes() == \
        (source / "checkpoints" / FORKED_AT / "model.safetensors").read_bytes()
