import os

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
