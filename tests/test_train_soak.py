"""Soak: one run SIGKILLed 10 times at random moments (several during a checkpoint write), each
time continued with ``--resume``, ends with the weights of the same run left alone, byte for byte.

``.venv/bin/python -m pytest -q -m slow tests/test_train_soak.py -s`` prints the counts."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny

pytestmark = pytest.mark.slow

STEPS, KILLS, SEED = 40, 10, 20261202
ARGS = tiny(None, "model.dropout=0.1", f"training.max_steps={STEPS}", "training.save_steps=1",
            "training.save_total_limit=2", "training.logging_steps=5", "evaluation.eval_steps=10")


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hftraining", "train", *ARGS, f"output.output_dir={out}", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _scan(root: Path) -> tuple[int, list[str]]:
    """(newest complete step, names of temporary folders of a checkpoint write in progress)."""
    steps, tmp = [0], []
    try:
        for e in os.scandir(root):
            if e.name.startswith("step-") and e.name[5:].isdigit():
                steps.append(int(e.name[5:]))
            elif e.name.startswith(".tmp-step-"):
                tmp.append(e.name)
    except FileNotFoundError:
        pass
    return max(steps), tmp


def _damaged(root: Path) -> list[str]:
    """Checkpoint folders set aside as damaged (``step-N.damaged*``)."""
    return sorted(p.name for p in root.glob("*.damaged*")) if root.is_dir() else []


def _check_launch(text: str, start: int, root: Path, what: str) -> None:
    """What one ``train --resume`` launch printed: no checkpoint failed verification, none was set
    aside as damaged, and it resumed from the newest checkpoint there was when it started (step
    ``start``; none: a fresh start)."""
    assert "fails verification" not in text, f"{what}: {text[-3000:]}"
    assert not _damaged(root), f"{what}: {_damaged(root)}"
    resumed = re.findall(r"resumed from \S*step-(\d+) at step (\d+)", text)
    if start:
        assert resumed == [(f"{start:08d}", str(start))], f"{what}: expected to resume from step {start}: {text[-3000:]}"
    else:
        assert not resumed and "resumed from" not in text, f"{what}: {text[-3000:]}"


def _kill_once(out: Path, rng: random.Random, log) -> dict:
    """Start ``train --resume``; SIGKILL it while it writes a checkpoint (half the time) or at a random
    moment of its training; return what happened."""
    root = out / "checkpoints"
    start, stale = _scan(root)  # stale: the half-written folder of the launch killed before, if any
    stale = set(stale)
    in_write = rng.random() < 0.6
    target = start + rng.randint(1, 3)  # the write to kill in, or the first step after which to wait
    delay = rng.uniform(0.0, 0.05)  # seconds of training after ``target`` before a kill at a random moment
    proc = subprocess.Popen(_cmd(out, "--resume"), stdout=log, stderr=subprocess.STDOUT, env=_env())
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        newest, tmp = _scan(root)
        stale &= set(tmp)  # once this launch has removed a stale folder, a folder of that name is its own
        if in_write and any(int(n[10:18]) >= target for n in tmp if n not in stale):
            break
        if not in_write and newest >= target:
            time.sleep(delay)
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    newest, tmp = _scan(root)
    return {"rc": rc, "aimed_at_write": in_write, "during_write": bool(tmp), "from": start, "to": newest}


def test_ten_sigkills_and_resumes_end_bit_identical(tmp_path):
    ref = tmp_path / "reference"
    proc = subprocess.run(_cmd(ref), capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "killed"
    root = out / "checkpoints"
    rng = random.Random(SEED)
    kills = []
    while len(kills) < KILLS:
        n = len(kills) + 1
        path = tmp_path / f"launch-{n:02d}.log"  # the launch's own output (stdout and stderr)
        with open(path, "wb") as log:
            k = _kill_once(out, rng, log)
        assert k["rc"] == -signal.SIGKILL, f"launch {n} ended with {k['rc']} before it was killed: {k}"
        # a kill never leaves a damaged step-N folder: each launch resumes from the newest one it found
        _check_launch(path.read_text(errors="replace"), k["from"], root, f"launch {n}")
        kills.append(k)
    newest, _ = _scan(root)
    final = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, timeout=300, env=_env())
    assert final.returncode == 0, final.stderr
    _check_launch(final.stderr, newest, root, "the final launch")
    during_write = sum(k["during_write"] for k in kills)
    same = (out / "final" / "model.safetensors").read_bytes() == (ref / "final" / "model.safetensors").read_bytes()
    print(f"\nsoak ({STEPS} steps, a checkpoint every step, seed {SEED}): kills tried {len(kills)}, "
          f"landed during a checkpoint write {during_write}, resumes survived {len(kills)}, "
          f"final weights identical: {'yes' if same else 'no'}")
    for i, k in enumerate(kills, 1):
        print(f"  kill {i}: newest checkpoint step {k['from']} -> {k['to']}, "
              f"{'during a checkpoint write' if k['during_write'] else 'outside a write'}")
    assert during_write >= 3, kills
    assert same
