"""A run killed with SIGKILL at any point and resumed ends bit for bit where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hftraining.train.checkpoint import list_checkpoints, resolve_resume
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


@pytest.mark.parametrize("kill_after", [10, 35])  # epoch 0 spans 30 steps: both kills land mid-epoch
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
    import shutil

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
