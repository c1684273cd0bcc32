import contextlib
import os

import numpy as np
import pytest
import torch

# Two cores are shared by the whole suite; one intra-op thread per test process keeps it predictable.
torch.set_num_threads(1)
os.environ.setdefault("HFTRAINING_TEST", "1")


TINY = [
    "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
    "data.sequence_length=20", "data.prediction_horizon=3", "data.batch_size=32", "data.symbols=[AEM, WPM]",
    "output.tensorboard=false", "output.progress_bar=never",
]
"""A model, window and data set small enough that a run takes seconds on the bundled sample data."""


def tiny(out_dir=None, *extra: str) -> list[str]:
    """The one tiny-config helper: :data:`TINY`, the run folder ``out_dir`` (if given), then
    ``extra`` overrides (later ones win, so a test changes only what it is about)."""
    return [*TINY, *([f"output.output_dir={out_dir}"] if out_dir is not None else []), *extra]


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a 30-step run that finishes in seconds on the bundled data."""
    return tiny(tmp_path / "run", "training.max_steps=30", "training.logging_steps=1", "training.learning_rate=0.003",
                "training.save_steps=10", "evaluation.eval_steps=10", "output.progress_bar=auto")


@pytest.fixture(autouse=True)
def _one_thread():
    """Some commands under test set torch's thread count for their own process (the ETT and tune
    entry points); restore one thread so later tests are not slowed by oversubscribed cores."""
    yield
    torch.set_num_threads(1)


@contextlib.contextmanager
def initial_weights():
    """Capture the weights a Trainer's model starts from: the state dict right after
    ``build_model`` inside the trainer (observed, nothing changed), as CPU tensors."""
    import hftraining.train.trainer as trainer_mod

    captured: dict = {}
    build = trainer_mod.build_model

    def spy(*args, **kwargs):
        model = build(*args, **kwargs)
        captured.update({k: v.detach().clone().cpu() for k, v in model.state_dict().items()})
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "build_model", spy)
        yield captured


def fixed_window_loss(model, ws, n: int = 1024) -> float:
    """Mean squared error (scaled target units) of ``model`` on ``n`` fixed windows of ``ws``, evenly
    spaced, in eval mode (no dropout) on the CPU in fp32: a loss that "went down" is measured here,
    before and after training, never as the mean of noisy batch losses."""
    from hftraining.models.predict import predict_scaled

    fixed = ws.thin(n)
    pred = predict_scaled(model.cpu(), fixed, 256)
    return float(np.mean((pred.astype(np.float64) - fixed.targets()) ** 2))


def one_and_two_processes(tmp_path, common: list[str]) -> tuple[dict, dict]:
    """The final weights of ``hftraining train *common`` run as one process with ``data.dates_per_batch=2``
    and under torchrun as two with 1 each (the same global batch of dates)."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(prefix, name, *extra):
        proc = subprocess.run([sys.executable, *prefix, "-m", "hftraining", "train", *common, *extra,
                               f"output.output_dir={tmp_path / name}"], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return load_file(str(tmp_path / name / "final" / "model.safetensors"))

    one = run([], "one", "data.dates_per_batch=2")
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], "two", "data.dates_per_batch=1")
    return one, two
