"""Every model × optimizer trains the quickstart with falling loss, each selected by one config key."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import zoo_quickstart  # noqa: E402

from hftraining.core.config import load_config  # noqa: E402
from hftraining.data.pipeline import prepare  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return prepare(load_config(Path(__file__).parents[1] / "configs" / "quickstart.yaml").data)


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])  # the script reads configs/quickstart.yaml


FAST = [("transformer", "adamw"), ("dlinear", "gpro")]
# fp32: the test is about each model and optimizer, not the quickstart's bf16, which a CPU without bf16
# instructions computes in software (6x slower here); bf16 training has its own tests (test_devices)
FP32 = ("training.use_mixed_precision=false",)
ALL = [(m, o) for m in zoo_quickstart.MODELS for o in zoo_quickstart.OPTIMIZERS]


@pytest.mark.parametrize("model, optimizer", FAST)
def test_quickstart_loss_falls(data, model, optimizer):
    before, after = zoo_quickstart.run(model, optimizer, 30, data, extra=FP32)
    assert after < 0.97 * before


@pytest.mark.slow
@pytest.mark.parametrize("model, optimizer", [c for c in ALL if c not in FAST])
def test_quickstart_loss_falls_for_every_model_and_optimizer(data, model, optimizer):
    before, after = zoo_quickstart.run(model, optimizer, 30, data, extra=FP32)
    assert after < 0.99 * before
