"""A run killed with SIGKILL at any point and resumed ends bit for bit where an uninterrupted run ends."""

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hftraining.core.config import load_config
from hftraining.core.errors import UserError
from hftraining.data.pipeline import prepare
from hftraining.train.checkpoint import (list_checkpoints, load_checkpoint, resolve_resume, rng_state, save_checkpoint,
                                         set_rng_state, verify_checkpoint)
from hftraining.train.distributed import DistInfo
from hftraining.train.runner import build_trainer, training_run
from conftest import tiny  # noqa: E402

BASE = tiny(
    None, "model.dropout=0.1", "data.batch_size=16", "data.symbols=[AEM]", "training.max_steps=60",
    "training.gradient_accumulation_steps=2", "training.save_steps=5", "training.logging_steps=5",
    "evaluation.eval_steps=20", "training.use_mixed_precision=true",
)


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hftraining", "train", *BASE, f"output.output_dir={out}", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    proc = subprocess.run(_cmd(out), capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    return out


def _kill_when(out: Path, step: int) -> int:
    """Start a run, SIGKILL it as soon as checkpoint ``step`` is complete; return the exit status."""
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    target = out / "checkpoints" / f"step-{step:08d}" / "trainer_state.json"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode


@pytest.mark.parametrize("kill_after", [10, pytest.param(35, marks=pytest.mark.slow)])  # epoch 0 spans 30 steps: both kills land mid-epoch (35: in the slow suite)
def test_sigkill_and_resume_is_bit_identical(uninterrupted, tmp_path, kill_after):
    out = tmp_path / "run"
    rc = _kill_when(out, kill_after)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "final").exists()
    proc = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stderr
    assert (out / "final" / "model.safetensors").read_bytes() == (uninterrupted / "final" / "model.safetensors").read_bytes()
    # the metrics of the redone steps are not duplicated
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps == sorted(set(steps)) and steps[-1] == 60


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    assert resolve_resume("auto", tmp_path / "checkpoints") is None


def test_half_written_checkpoints_are_never_the_latest(uninterrupted, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(uninterrupted / "checkpoints" / "step-00000060", root / "step-00000060")
    shutil.copytree(uninterrupted / "checkpoints" / "step-00000060", root / ".tmp-step-00000065-123")
    (root / "step-00000070").mkdir()  # a folder without trainer_state.json is not complete
    assert [s for s, _ in list_checkpoints(root)] == [60]
    assert resolve_resume("auto", root).name == "step-00000060"


def test_checkpoint_holds_no_pickle(uninterrupted):
    ckpt = uninterrupted / "checkpoints" / "step-00000060"
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["config.json", "model.safetensors", "optimizer.json", "optimizer.safetensors",
                     "rng.safetensors", "trainer_state.json"]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 60 and set(state["sampler"]) == {"seed", "epoch", "position"}
    assert state["sampler"]["epoch"] >= 1


# ---------------------------------------------------------------- damaged checkpoints (checksums)
# One 12-step run (a checkpoint every 2 steps, all kept) is the uninterrupted reference; each test
# copies its checkpoints, damages the newest (step 12) as a crash or a bad disk would, and resumes.

SHORT = tiny(None, "model.dropout=0.1", "training.max_steps=12", "training.save_steps=2", "training.save_total_limit=10",
             "training.logging_steps=2", "evaluation.eval_steps=6")
NEWEST, PREVIOUS = "step-00000012", "step-00000010"


def _train_in_process(out: Path, *extra: str) -> bytes:
    with training_run(load_config(None, [*SHORT, f"output.output_dir={out}", *extra])):
        pass
    return (out / "final" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("short") / "run"
    return out, _train_in_process(out)


@pytest.fixture
def logged():
    """Records (INFO and up) of the ``hftraining`` logger, which the CLI detaches from the root logger."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("hftraining")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _warnings(records) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def _copy_checkpoints(short_run, dest: Path) -> Path:
    shutil.copytree(short_run[0] / "checkpoints", dest / "checkpoints")
    return dest / "checkpoints"


def _damage(folder: Path, how: str) -> str:
    """Damage one checkpoint as a crash or a bad disk would; return the file its warning must name."""
    model = folder / "model.safetensors"
    if how == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        return "model.safetensors"
    if how == "flipped":  # one flipped bit in the last weight: safetensors loads it without complaint
        data = bytearray(model.read_bytes())
        data[-3] ^= 0x01
        model.write_bytes(bytes(data))
        return "model.safetensors"
    if how == "incomplete":
        (folder / "optimizer.safetensors").unlink()
        return "optimizer.safetensors"
    if how == "state_edited":  # still valid JSON, a different step
        state = folder / "trainer_state.json"
        text = state.read_text()
        assert '"global_step": 12' in text
        state.write_text(text.replace('"global_step": 12', '"global_step": 13'))
        return "trainer_state.json"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped", "incomplete", "state_edited"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(short_run, tmp_path, logged, how):
    root = _copy_checkpoints(short_run, tmp_path / "run")
    bad_file = _damage(root / NEWEST, how)
    final = _train_in_process(tmp_path / "run", "training.resume_from_checkpoint=auto")
    warned = _warnings(logged)
    assert len(warned) == 1, warned
    assert str(root / NEWEST) in warned[0] and bad_file in warned[0] and PREVIOUS in warned[0], warned[0]
    assert any(r.getMessage() == f"resumed from {root / PREVIOUS} at step 10" for r in logged)
    assert final == short_run[1]  # steps 11-12 redone: the weights of the uninterrupted run, bit for bit
    # the damaged folder is set aside for inspection (no longer a checkpoint); step 12 was written anew
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(NEWEST)) == [NEWEST, f"{NEWEST}.damaged"]
    assert verify_checkpoint(root / NEWEST) is True


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_named_damaged_checkpoint_is_a_one_line_error(short_run, tmp_path, how):
    root = _copy_checkpoints(short_run, tmp_path / "run")
    bad_file = _damage(root / NEWEST, how)
    proc = subprocess.run(
        [sys.executable, "-m", "hftraining", "train", *SHORT, f"output.output_dir={tmp_path / 'run'}",
         f"training.resume_from_checkpoint={root / NEWEST}"], capture_output=True, text=True, timeout=120, env=_env())
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hftraining: error: training.resume_from_checkpoint") and NEWEST in err and bad_file in err, err
    assert not (tmp_path / "run" / "final").exists()  # no other checkpoint was substituted for the one named
    assert (root / NEWEST).is_dir()  # and the one named is left where it is


def test_checkpoint_without_checksums_resumes_with_one_warning(short_run, tmp_path, logged):
    """Checkpoints written before checksums existed cannot be verified: they load as they are."""
    root = _copy_checkpoints(short_run, tmp_path / "run")
    for folder in root.glob("step-*"):
        state = json.loads((folder / "trainer_state.json").read_text())
        del state["checksums"]
        (folder / "trainer_state.json").write_text(json.dumps(state))
    shutil.rmtree(root / NEWEST)  # resume from step 10: two steps to redo
    final = _train_in_process(tmp_path / "run", "training.resume_from_checkpoint=auto")
    warned = _warnings(logged)
    assert len(warned) == 1 and PREVIOUS in warned[0] and "cannot be verified" in warned[0], warned
    assert final == short_run[1]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(short_run, tmp_path, logged):
    root = _copy_checkpoints(short_run, tmp_path / "run")
    for folder in root.glob("step-*"):
        _damage(folder, "flipped")
    with pytest.raises(UserError, match="none of the 6 checkpoints") as e:
        _train_in_process(tmp_path / "run", "training.resume_from_checkpoint=auto")
    assert "\n" not in str(e.value)
    assert len(_warnings(logged)) == 6
    assert len(list(root.glob("step-*"))) == 6  # nothing renamed or deleted


def test_rotation_keeps_the_verified_checkpoint_a_run_resumed_from(short_run, tmp_path):
    """save_total_limit=1 and a damaged newest checkpoint: the damaged one does not count, so the
    verified one resumed from is kept until a newer verified one replaces it."""
    root = _copy_checkpoints(short_run, tmp_path / "run")
    for name in ("step-00000002", "step-00000004", "step-00000006", "step-00000008"):
        shutil.rmtree(root / name)
    _damage(root / NEWEST, "flipped")
    final = _train_in_process(tmp_path / "run", "training.resume_from_checkpoint=auto", "training.save_total_limit=1")
    assert final == short_run[1]
    assert sorted(p.name for p in root.iterdir()) == [NEWEST, f"{NEWEST}.damaged"]
    assert verify_checkpoint(root / NEWEST) is True


# ---------------------------------------------------------------- per-rank random states, fp16 scaler
# The checkpoint functions on their own (no process group, no GPU): what each rank writes and reads.

def _tiny_model_and_optimizer():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt


def _seeded_state(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return rng_state()


def _draws() -> tuple:
    """What the next draws of Python's, NumPy's and torch's generators are (advances them)."""
    return random.random(), float(np.random.rand()), torch.rand(4).tolist()


def test_each_rank_restores_its_own_random_states(tmp_path, logged):
    model, opt = _tiny_model_and_optimizer()
    states = [_seeded_state(1), _seeded_state(2)]  # two ranks whose streams differ
    want = []
    for s in states:
        set_rng_state(*s)
        want.append(_draws())
    path = save_checkpoint(tmp_path, 4, model, opt, {"global_step": 4}, {}, rng=states)
    assert verify_checkpoint(path) is True
    assert sorted(load_file(str(path / "rng.safetensors"))) == ["rank0.torch", "rank1.torch"]
    for rank in (1, 0):
        _seeded_state(99)  # whatever the process held before
        load_checkpoint(path, model, opt, DistInfo(rank=rank, world_size=2))
        assert _draws() == want[rank], rank
    assert _warnings(logged) == []


def test_resume_at_another_world_size_follows_the_documented_rule(tmp_path, logged):
    model, opt = _tiny_model_and_optimizer()
    states = [_seeded_state(1), _seeded_state(2)]
    set_rng_state(*states[0])
    rank0 = _draws()
    path = save_checkpoint(tmp_path, 4, model, opt, {"global_step": 4}, {}, rng=states)
    load_checkpoint(path, model, opt, DistInfo(rank=2, world_size=3))  # a rank beyond those saved: rank 0's
    assert _draws() == rank0
    assert _warnings(logged) == []  # only the main rank warns
    load_checkpoint(path, model, opt, DistInfo(rank=0, world_size=1))
    assert _draws() == rank0
    warned = _warnings(logged)
    assert len(warned) == 1 and "random states of 2 processes and resumes in 1" in warned[0], warned


def test_checkpoint_from_before_per_rank_states_still_loads(tmp_path, logged):
    """Older checkpoints: ``rng`` is rank 0's JSON part, rng.safetensors ``torch`` (and ``cuda.N``)."""
    model, opt = _tiny_model_and_optimizer()
    meta, tensors = _seeded_state(5)
    want = _draws()
    path = save_checkpoint(tmp_path, 4, model, opt, {"global_step": 4}, {})
    state = json.loads((path / "trainer_state.json").read_text())
    state["rng"] = meta
    del state["checksums"]
    (path / "trainer_state.json").write_text(json.dumps(state))
    save_file({"torch": tensors["torch"]}, str(path / "rng.safetensors"))
    for info in (DistInfo(), DistInfo(rank=1, world_size=2)):  # every rank restores the one state there is
        _seeded_state(99)
        assert load_checkpoint(path, model, opt, info)["global_step"] == 4
        assert _draws() == want
    assert _warnings(logged) == []  # one process: nothing lost; rank 1 does not warn
    load_checkpoint(path, model, opt, DistInfo(rank=0, world_size=2))
    warned = _warnings(logged)
    assert len(warned) == 1 and "predates per-process random states" in warned[0], warned


def test_gradient_scaler_state_round_trips_through_the_checkpoint(tmp_path, logged):
    model, opt = _tiny_model_and_optimizer()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_factor=4.0, backoff_factor=0.25, growth_interval=3)
    for grad in (1.0, 1.0, float("inf"), 1.0, 1.0):  # two good steps, an overflow (backoff), two good steps
        model.zero_grad()
        scaler.scale(model(torch.ones(1, 3)).sum()).backward()
        model.weight.grad[0, 0] *= grad
        scaler.unscale_(opt)
        scaler.update()
    saved = scaler.state_dict()
    assert saved["scale"] == 2.0**8 and saved["_growth_tracker"] == 2  # not the defaults
    path = save_checkpoint(tmp_path, 5, model, opt, {"global_step": 5}, {}, scaler=scaler)
    assert json.loads((path / "trainer_state.json").read_text())["grad_scaler"] == saved
    fresh = torch.amp.GradScaler("cpu")
    state = load_checkpoint(path, model, opt, scaler=fresh)
    assert "grad_scaler" not in state  # restored here, not handed to TrainerState
    assert fresh.state_dict() == saved
    assert _warnings(logged) == []
    # a checkpoint without it (a bf16 run's, or an older one) loads; the scaler starts fresh, and says so
    path = save_checkpoint(tmp_path, 6, model, opt, {"global_step": 6}, {})
    fresh = torch.amp.GradScaler("cpu")
    load_checkpoint(path, model, opt, scaler=fresh)
    assert fresh.state_dict() == torch.amp.GradScaler("cpu").state_dict()
    warned = _warnings(logged)
    assert len(warned) == 1 and "no gradient scaler state" in warned[0] and "65536" in warned[0], warned


def test_resume_continues_the_gradient_scaler(tmp_path):
    """The trainer saves and restores its scaler: a CPU GradScaler stands in for fp16's CUDA one
    (fp16 needs CUDA; tests/test_devices.py resumes real fp16 there). Its scale doubles every two
    steps, so a scaler that restarted at the resume would end at another scale than the run that
    went on."""
    data = prepare(load_config(None, tiny(None)).data)

    def trainer(name, *extra):
        cfg = load_config(None, tiny(tmp_path / name, "model.dropout=0.1", "training.max_steps=6", "training.save_steps=3",
                                     "training.logging_steps=3", "evaluation.eval_steps=0", *extra))
        t = build_trainer(cfg, data)
        t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        return t

    full = trainer("full")
    full.fit()
    resumed = trainer("resumed", f"training.resume_from_checkpoint={full.ckpt_root / 'step-00000003'}")
    resumed.fit()
    assert resumed.state.global_step == 6
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    assert full.scaler.get_scale() == 2.0**13
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    full.close()
    resumed.close()


@pytest.mark.parametrize("change, key", [
    ("model.hidden_size=24", "model.hidden_size=24 (the checkpoint's: 16)"),  # the weights would not load: a traceback
    ("data.sequence_length=16", "data.sequence_length=16"),  # other windows, the sampler's position counted through them
    ("data.symbols=[AEM]", "data.symbols"),
    ("training.optimizer=lion", 'training.optimizer="lion" (the checkpoint\'s: "adamw")'),
    # the restored optimizer state keeps its groups' values: a change was silently not applied
    ("training.learning_rate=0.0123", "training.learning_rate=0.0123"),
    ("training.weight_decay=0.5", "training.weight_decay=0.5"),
    # the restored random states and sampler keep the saved seed while config.json would record the new
    ("training.seed=7", "training.seed=7"),
    # the kept best validation score was measured with the saved metric and windows
    ("evaluation.metric=mae", 'evaluation.metric="mae"'),
    ("evaluation.max_val_windows=40", "evaluation.max_val_windows=40"),
])
def test_resuming_with_a_changed_model_data_or_optimizer_is_a_one_line_error(short_run, tmp_path, capsys, change, key):
    # in process (the exit code and stderr of `hftraining train` itself: test_named_damaged_checkpoint_is_a_one_line_error)
    from hftraining.cli import main

    _copy_checkpoints(short_run, tmp_path / "run")
    capsys.readouterr()
    rc = main(["train", *SHORT, f"output.output_dir={tmp_path / 'run'}", change, "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert NEWEST in err and "cannot resume with" in err and key in err, err
    assert not (tmp_path / "run" / "final").exists()


def test_resuming_with_more_steps_and_another_cache_folder_continues(short_run, tmp_path):
    root = _copy_checkpoints(short_run, tmp_path / "run")
    _train_in_process(tmp_path / "run", "training.resume_from_checkpoint=auto", "training.max_steps=14",
                      f"data.cache_dir={tmp_path / 'cache'}", "evaluation.eval_steps=7")
    assert [s for s, _ in list_checkpoints(root)][-1] == 14


def test_optimizer_state_keeps_its_saved_dtypes(tmp_path):
    # torch's load_state_dict casts every floating state tensor (but "step") to its parameter's dtype:
    # Kron's momentum, kept in bfloat16 by mu_dtype for float32 weights, came back float32 and the
    # resumed run drifted from the uninterrupted one (1.2e-4 after three steps).
    import copy

    from hftraining.core.config import TrainingConfig
    from hftraining.optim import build_optimizer
    from hftraining.train.checkpoint import load_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    cfg = TrainingConfig(optimizer="kron", learning_rate=1e-2, optimizer_kwargs={"mu_dtype": "bfloat16"})
    opt = build_optimizer(model, cfg)
    x, y = torch.randn(64, 8), torch.randn(64, 1)

    def step(m, o):
        o.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        o.step()

    for _ in range(3):
        step(model, opt)
    path = save_checkpoint(tmp_path, 3, model, opt, {"global_step": 3}, {})
    resumed = copy.deepcopy(model)
    opt2 = build_optimizer(resumed, cfg)
    load_optimizer(path, opt2)
    assert [s["momentum_buffer"].dtype for s in opt2.state.values()] == [torch.bfloat16] * 4
    for i in range(3):
        torch.manual_seed(i)  # Kron refreshes its preconditioner at random
        step(model, opt)
        torch.manual_seed(i)
        step(resumed, opt2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_a_moved_run_folder_keeps_its_best_checkpoint(tmp_path):
    # best_checkpoint was saved as a whole path: in a run folder moved (or copied, or an output_dir
    # relative to another working directory) it named the old place, so rotation deleted the real
    # best checkpoint and load_best_model_at_end read the old folder's (or failed: "is gone").
    common = ["training.max_steps=24", "evaluation.eval_steps=2", "training.save_steps=3", "training.logging_steps=2",
              "training.load_best_model_at_end=true", "training.save_total_limit=2", "training.learning_rate=0.01",
              "model.dropout=0.1"]
    with training_run(load_config(None, tiny(tmp_path / "full", *common))) as run:
        best = run.state.best_step
    kept = [s for s, _ in list_checkpoints(tmp_path / "full" / "checkpoints")]
    assert kept == [best, 24] and best < 24  # the best is protected from rotation
    final = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "full", moved)  # the same run, elsewhere
    shutil.rmtree(moved / "checkpoints" / "step-00000024")
    shutil.rmtree(moved / "final")
    with training_run(load_config(None, tiny(moved, *common, "training.resume_from_checkpoint=auto",
                                             "output.overwrite=true"))) as run:
        assert run.state.best_step == best
    assert [s for s, _ in list_checkpoints(moved / "checkpoints")] == kept
    again = load_file(str(moved / "final" / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_resume_with_no_checkpoint_starts_clean(tmp_path):
    """A run killed before its first checkpoint left logs; --resume then starts fresh, and fresh means
    clean: the dead run's metrics.jsonl lines and TensorBoard events no longer join the new run's."""
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.dead").write_bytes(b"old")
    (out / "metrics.jsonl").write_text('{"step": 2, "loss": 99.0}\n{"step": 4, "loss": 98.0}\n')
    _train_in_process(out, "training.resume_from_checkpoint=auto", "training.max_steps=4", "training.save_steps=0",
                      "evaluation.eval_steps=0")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("loss") not in (98.0, 99.0) for r in records) and records[0]["step"] == 2
    assert not (out / "tensorboard" / "events.out.tfevents.dead").exists()


def test_log_windows_restore_per_rank_and_older_checkpoints_still_load(tmp_path, logged):
    """``log_window`` holds every rank's pending steps: each rank restores its own, at another world size
    every rank the saved ranks' mean; a checkpoint of one window (rank 0's, before per-rank windows) gives it
    to every rank, with a warning on the main rank when there are several, and loads through the trainer."""
    from hftraining.train.checkpoint import log_window_entry, restore_log_window

    w0 = {"losses": [1.0, 2.0], "grad_norm": 0.5, "parts": {"ic": 3.0, "quantile": 1.0}, "skipped": False}
    w1 = {"losses": [3.0, 6.0], "grad_norm": 0.5, "parts": {"ic": 5.0, "quantile": 2.0}, "skipped": True}
    saved = json.loads(json.dumps(log_window_entry([w0, w1])))  # as trainer_state.json holds it
    assert saved == {"world_size": 2, "ranks": [w0, w1]}
    for rank, want in ((0, w0), (1, w1)):
        assert restore_log_window(saved, DistInfo(rank=rank, world_size=2), tmp_path) == want
    mean = {"losses": [2.0, 4.0], "grad_norm": 0.5, "parts": {"ic": 4.0, "quantile": 1.5}, "skipped": True}
    for info in (DistInfo(), DistInfo(rank=2, world_size=3)):
        assert restore_log_window(saved, info, tmp_path) == mean
    assert restore_log_window({}, DistInfo(rank=1, world_size=2), tmp_path) == {}  # no window saved: none pending
    assert _warnings(logged) == []
    for info in (DistInfo(), DistInfo(rank=1, world_size=2), DistInfo(rank=0, world_size=2)):
        assert restore_log_window(w0, info, tmp_path) == w0  # the one window there is, on every rank
    warned = _warnings(logged)
    assert len(warned) == 1 and "predates per-process log windows" in warned[0], warned


def test_checkpoint_with_one_log_window_resumes_to_the_same_records(tmp_path):
    """A one-process checkpoint inside a log window, its ``log_window`` rewritten to the one-window form of
    checkpoints before per-rank windows, resumes (unverified, as a pre-checksum checkpoint) and logs the
    uninterrupted run's records; the checkpoints written now hold the per-rank form."""
    common = ["training.max_steps=6", "training.logging_steps=4", "training.save_steps=3", "evaluation.eval_steps=0"]

    def run(name, *extra):
        with training_run(load_config(None, tiny(tmp_path / name, *common, *extra))):
            pass
        return [{k: v for k, v in json.loads(l).items() if k != "samples_per_second"}
                for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]

    full = run("full")
    saved = tmp_path / "full" / "checkpoints" / "step-00000003"
    state = json.loads((saved / "trainer_state.json").read_text())
    window = state["log_window"]["ranks"][0]
    assert state["log_window"]["world_size"] == 1 and len(window["losses"]) == 3
    state["log_window"] = window
    del state["checksums"]
    shutil.copytree(saved, tmp_path / "old" / "checkpoints" / saved.name)
    (tmp_path / "old" / "checkpoints" / saved.name / "trainer_state.json").write_text(json.dumps(state))
    assert run("old", "training.resume_from_checkpoint=auto") == [r for r in full if r["step"] > 3]
    again = json.loads((tmp_path / "old" / "checkpoints" / "step-00000006" / "trainer_state.json").read_text())
    assert again["log_window"] == {"world_size": 1, "ranks": [{"losses": [], "grad_norm": None, "parts": {},
                                                                 "skipped": False}]}


def test_a_taken_log_window_does_not_change_as_training_goes_on():
    """A checkpoint's (or a caller's ``trainer_state()``) copy of the pending log window, and the saved state a
    resumed window starts from, stay as they were while the live window fills."""
    from hftraining.train.trainer import _LogWindow

    live = _LogWindow(losses=[1.0], parts={"mse": 1.0})
    taken = live.state_dict()
    live.losses.append(2.0)
    live.parts["mse"] += 2.0
    assert taken == {"losses": [1.0], "grad_norm": None, "parts": {"mse": 1.0}, "skipped": False}
    resumed = _LogWindow.from_state(taken)
    resumed.losses.append(3.0)
    resumed.parts["mse"] += 3.0
    assert taken == {"losses": [1.0], "grad_norm": None, "parts": {"mse": 1.0}, "skipped": False}


def test_a_run_whose_optimizer_ignored_a_setting_resumes_with_it_back_at_its_default(tmp_path):
    """A run checkpointed before a setting its optimizer ignores was refused (lion with adam_beta1=0.95:
    lion keeps its own betas) resumes with that setting back at its default: nothing the checkpoint holds
    was built from it (else neither the old value, now refused, nor the default, a changed value, resumed)."""
    out = tmp_path / "run"
    _train_in_process(out, "training.optimizer=lion", "training.max_steps=4")
    from hftraining.train.checkpoint import STATE_FILE, _sha256_file

    for config in (out / "checkpoints").glob("step-*/config.json"):  # as such a run wrote it (and its manifest)
        saved = json.loads(config.read_text())
        saved["training"]["adam_beta1"] = 0.95
        config.write_text(json.dumps(saved))
        state = json.loads((config.parent / STATE_FILE).read_text())
        state["checksums"]["files"]["config.json"] = {"bytes": config.stat().st_size, "sha256": _sha256_file(config)}
        (config.parent / STATE_FILE).write_text(json.dumps(state))
    _train_in_process(out, "training.optimizer=lion", "training.max_steps=6", "training.resume_from_checkpoint=auto")
    assert [s for s, _ in list_checkpoints(out / "checkpoints")][-1] == 6
    with pytest.raises(UserError, match="training.optimizer"):  # a setting the optimizer uses still may not change
        _train_in_process(out, "training.optimizer=adamw", "training.max_steps=8", "training.resume_from_checkpoint=auto")
