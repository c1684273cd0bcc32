"""bf16 autocast on a CPU without bf16 instructions: torch computes it in software. On this project's
AVX2 machine the quickstart trained in 228 s under bf16 against 29 s in fp32, with nothing said."""
import platform
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401  (the hftraining logger's records)

import hftraining.train.runner as runner  # noqa: E402
from hftraining.cli import main  # noqa: E402
from hftraining.models.predict import cpu_has_bf16  # noqa: E402

SAID = "on a CPU without bf16 instructions"


def _train(tmp_path, *extra: str) -> None:
    assert main(["train", *tiny(tmp_path / "run", "training.max_steps=2", "evaluation.eval_steps=0",
                                "evaluation.report=false", "evaluation.intervals=[]",
                                "evaluation.max_test_windows=60", "evaluation.baseline_max_windows=300", *extra)]) == 0


def _said(records) -> list[str]:
    return [r.getMessage() for r in records if SAID in r.getMessage()]


def test_bf16_training_on_a_cpu_without_bf16_instructions_says_so_once_and_names_the_fix(tmp_path, logged, monkeypatch):
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)
    _train(tmp_path, "training.use_mixed_precision=true")
    said = _said(logged)
    assert len(said) == 1 and said[0].startswith("warning: training.precision bf16"), said
    assert said[0].endswith("training.use_mixed_precision=false trains in fp32"), said
    assert SAID in (tmp_path / "run" / "train.log").read_text()  # said before train.log opened, kept in it


def test_the_warning_names_the_key_the_config_used(tmp_path, logged, monkeypatch):
    # training.precision=bf16 outranks use_mixed_precision: turning that off would change nothing
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)
    _train(tmp_path, "training.precision=bf16")
    said = _said(logged)
    assert len(said) == 1 and said[0].endswith("training.precision=fp32 trains in fp32"), said


@pytest.mark.parametrize("has, extra", [(True, "training.use_mixed_precision=true"),  # the CPU runs bf16 itself
                                        (None, "training.use_mixed_precision=true"),  # cannot tell: nothing said
                                        (False, "training.use_mixed_precision=false"),  # fp32
                                        (False, "model.type=ridge")])  # fitted: no gradient steps under autocast
def test_nothing_is_said_when_bf16_is_native_unknown_unused_or_not_trained(tmp_path, logged, monkeypatch, has, extra):
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: has)
    _train(tmp_path, "training.use_mixed_precision=true", extra)
    assert _said(logged) == []


def test_the_probe_reads_the_cpu_flags_on_x86_only(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_has_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_has_bf16() is True
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # the x86 probes say nothing about Arm's bf16
    assert cpu_has_bf16() is None
    monkeypatch.setattr(platform, "machine", lambda: "AMD64")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert cpu_has_bf16() is None
