"""A full disk (or a missing permission) while training: one line naming the path and the cause,
exit 2, nothing half-written left to trust, and ``--resume`` after space is freed ends exactly where
an uninterrupted run ends. Simulated (the checkpoint writer raises ENOSPC) everywhere, and for real
on a 3 MB tmpfs where this process may mount one (root)."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import tiny  # noqa: E402

RUN = tiny(None, "model.hidden_size=64", "model.num_heads=4", "model.num_layers=2", "training.max_steps=40",
           "training.save_steps=10", "evaluation.eval_steps=20", "output.progress_bar=never", "evaluation.report=false")


def _train(out: Path, *extra: str, failing_write: int | None = None,
           failing_event: int | None = None) -> subprocess.CompletedProcess:
    """``hftraining train`` into ``out``; with ``failing_write=k`` the k-th safetensors write of a
    checkpoint raises OSError(ENOSPC), as a full disk does; with ``failing_event=k`` TensorBoard's
    k-th event record and every later one do (in TensorBoard's writer thread)."""
    argv = ["train", *RUN, f"output.output_dir={out}", *extra]
    code = "import sys\nfrom hftraining import cli\n"
    if failing_write is not None:
        code += (
            "import errno, hftraining.train.checkpoint as ck\n"
            "real, calls = ck.save_file, [0]\n"
            "def save_file(*a, **k):\n"
            "    calls[0] += 1\n"
            f"    if calls[0] == {failing_write}:\n"
            f"        raise OSError({errno.ENOSPC}, 'No space left on device')\n"
            "    return real(*a, **k)\n"
            "ck.save_file = save_file\n"
        )
    if failing_event is not None:
        code += (
            "import tensorboard.summary.writer.record_writer as rw\n"
            "real_write, events = rw.RecordWriter.write, [0]\n"
            "def write(self, data):\n"
            "    events[0] += 1\n"
            f"    if events[0] >= {failing_event}:\n"
            f"        raise OSError({errno.ENOSPC}, 'No space left on device')\n"
            "    return real_write(self, data)\n"
            "rw.RecordWriter.write = write\n"
        )
    code += f"sys.exit(cli.main({argv!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    proc = _train(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return load_file(str(out / "final" / "model.safetensors"))


def _one_line(proc, *needles):
    """Exit 2, no traceback, and the error is one line (the lines before it are the run's log)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hftraining: error:")]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0], proc.stderr[-2000:]
    for n in needles:
        assert n in errors[0], errors[0]


def _same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # 10-20 s of subprocesses; runs with `-m slow`
def test_a_full_disk_at_a_checkpoint_is_one_line_and_resume_ends_bit_identical(tmp_path, uninterrupted):
    out = tmp_path / "run"
    # writes 1-3 are the step-10 checkpoint (model, optimizer, rng); 4 is step 20's model
    proc = _train(out, failing_write=4)
    _one_line(proc, "step-00000020: cannot write the checkpoint (No space left on device)", "--resume")
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-00000010"]  # nothing half-written: no temporary folder, no step-20
    assert not (out / "final").exists()
    proc = _train(out, "training.resume_from_checkpoint=auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _same(load_file(str(out / "final" / "model.safetensors")), uninterrupted)


@pytest.mark.slow  # 10-20 s of subprocesses; runs with `-m slow`
def test_a_full_disk_under_tensorboard_is_one_line_and_resume_ends_bit_identical(tmp_path, uninterrupted):
    """TensorBoard writes from a thread of its own: its write error still stops the run with one line
    naming the folder (no thread traceback), and the run resumes from its last checkpoint."""
    out = tmp_path / "run"
    proc = _train(out, "output.tensorboard=true", failing_event=12)  # past the step-10 record
    _one_line(proc, f"{out / 'tensorboard'}: cannot write (No space left on device)")
    assert "Exception in thread" not in proc.stderr, proc.stderr[-2000:]
    proc = _train(out, "output.tensorboard=true", "training.resume_from_checkpoint=auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _same(load_file(str(out / "final" / "model.safetensors")), uninterrupted)
    assert list((out / "tensorboard").iterdir())  # the resumed run's events


def test_a_final_folder_that_cannot_be_written_is_never_left_half_written(tmp_path):
    import torch

    from hftraining.core.config import ModelConfig
    from hftraining.core.errors import WriteError
    from hftraining.models import ForecastModel, build_model

    model = build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), 4, 2, 8)
    folder = model.save_pretrained(tmp_path / "final", preprocessing={"a": 1})
    before = load_file(str(folder / "model.safetensors"))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    import hftraining.models.base as base

    real = base.save_file

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    base.save_file = full
    try:
        with pytest.raises(WriteError, match=r"final: cannot write \(No space left on device\)"):
            model.save_pretrained(folder, preprocessing={"a": 1})
    finally:
        base.save_file = real
    assert _same(load_file(str(folder / "model.safetensors")), before)  # the previous folder, whole
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no temporary folder left
    assert ForecastModel.from_pretrained(folder) is not None


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None when done, else why it could not be."""
    if shutil.which("mount") is None:
        return "no mount command"
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})"


def test_a_real_full_disk_is_one_line_and_resume_ends_bit_identical(tmp_path, uninterrupted):
    mnt = tmp_path / "small"
    why = _mount_tmpfs(mnt, "3m")
    if why:
        pytest.skip(why)
    try:
        out = mnt / "run"
        proc = _train(out)
        _one_line(proc, str(mnt), "No space left on device")
        assert not list((out / "checkpoints").glob(".tmp-*")) and not list(out.glob(".final.tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # space freed
        proc = _train(out, "training.resume_from_checkpoint=auto")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert _same(load_file(str(out / "final" / "model.safetensors")), uninterrupted)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
