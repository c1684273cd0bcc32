"""The heads' precision travels with the weights: a checkpoint written before the transformer's heads ran in
fp32 (no ``fp32_heads`` in its trainer_state.json) resumes with its heads in the autocast's precision, as it
trained them, and the run ends bit for bit where it would have; its ``final/`` says so."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import hftraining.train.trainer as trainer_mod
from hftraining.core.config import load_config
from hftraining.core.errors import UserError
from hftraining.train.runner import training_run
from conftest import tiny  # noqa: E402

RUN = tiny(None, "training.use_mixed_precision=true", "training.max_steps=6", "training.save_steps=3",
           "training.logging_steps=3", "evaluation.eval_steps=3", "evaluation.report=false",
           "training.learning_rate=0.01", "training.warmup_steps=0", "data.symbols=[AEM]")


def _train(out: Path, *extra: str) -> Path:
    with training_run(load_config(None, [*RUN, f"output.output_dir={out}", *extra])):
        pass
    return out / "final"


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A bf16 run whose heads round to bf16 from its first step to its last, as every run did before they
    ran in fp32 (its model built with ``fp32_heads=False``)."""
    out = tmp_path_factory.mktemp("old") / "run"
    build = trainer_mod.build_model

    def old_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.fp32_heads = False
        return model

    trainer_mod.build_model, saved = old_model, trainer_mod.build_model
    try:
        final = _train(out)
    finally:
        trainer_mod.build_model = saved
    return out, final


def _rewrite_state(folder: Path, edit) -> None:
    """Edit a checkpoint's trainer_state.json and seal it again with its own SHA-256, as a checkpoint
    written that way would be."""
    path = folder / "trainer_state.json"
    state = json.loads(path.read_text())
    sums = state.pop("checksums")
    edit(state)
    sums["trainer_state.json"] = hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf-8")).hexdigest()
    path.write_text(json.dumps({**state, "checksums": sums}))


def _half_run(old_run, dest: Path, edit) -> Path:
    """``dest``: the old run as a kill after its step-3 checkpoint left it, that checkpoint edited."""
    src, _ = old_run
    shutil.copytree(src / "checkpoints" / "step-00000003", dest / "checkpoints" / "step-00000003")
    _rewrite_state(dest / "checkpoints" / "step-00000003", edit)
    return dest


def test_a_checkpoint_from_before_fp32_heads_resumes_bit_for_bit_with_its_heads_in_bf16(old_run, tmp_path):
    _, want = old_run
    state = json.loads((old_run[0] / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["fp32_heads"] is False  # a checkpoint records its heads' precision
    half = _half_run(old_run, tmp_path / "run", lambda s: s.pop("fp32_heads"))  # as one written before it did
    final = _train(half, "training.resume_from_checkpoint=auto")
    assert (final / "model.safetensors").read_bytes() == (want / "model.safetensors").read_bytes()
    assert json.loads((final / "config.json").read_text())["fp32_heads"] is False
    assert _last_eval(half) == _last_eval(old_run[0])  # its validation scored the same forecasts


def _last_eval(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "eval_mse" in r][-1]


def test_a_new_checkpoint_keeps_fp32_heads_and_a_bad_value_is_one_line(old_run, tmp_path):
    new = _train(tmp_path / "new")
    assert json.loads((new / "config.json").read_text())["fp32_heads"] is True
    state = json.loads((tmp_path / "new" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["fp32_heads"] is True
    half = _half_run(old_run, tmp_path / "bad", lambda s: s.update(fp32_heads="yes"))
    with pytest.raises(UserError, match=r"trainer_state.json: fp32_heads must be true or false, got 'yes'") as e:
        _train(half, "training.resume_from_checkpoint=auto")
    assert "\n" not in str(e.value)

