"""Soak: one run SIGKILLed 10 times at random moments (several during a checkpoint write), each
time continued with ``--resume``, ends with the weights of the same run left alone, byte for byte.

``.venv/bin/python -m pytest -q -m slow tests/test_train_soak.py -s`` prints the counts."""

import os
import random
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


def _kill_once(out: Path, rng: random.Random, log) -> dict:
    """Start ``train --resume``; SIGKILL it while it writes a checkpoint (half the time) or at a random
    moment of its training; return what happened."""
    root = out / "checkpoints"
    start, _ = _scan(root)
    in_write = rng.random() < 0.6
    target = start + rng.randint(1, 3)  # the write to kill in, or the first step after which to wait
    delay = rng.uniform(0.0, 0.05)  # seconds of training after ``target`` before a kill at a random moment
    proc = subprocess.Popen(_cmd(out, "--resume"), stdout=log, stderr=subprocess.STDOUT, env=_env())
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        newest, tmp = _scan(root)
        if in_write and any(int(n[10:18]) >= target for n in tmp):
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
    rng = random.Random(SEED)
    kills = []
    with open(tmp_path / "launches.log", "ab") as log:
        while len(kills) < KILLS:
            k = _kill_once(out, rng, log)
            assert k["rc"] == -signal.SIGKILL, f"launch {len(kills) + 1} ended with {k['rc']} before it was killed: {k}"
            kills.append(k)
        final = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, timeout=300, env=_env())
    assert final.returncode == 0, final.stderr
    assert "resumed from" in final.stderr
    assert "fails verification" not in final.stderr  # a kill never leaves a damaged step-N folder
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
