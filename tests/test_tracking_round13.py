"""Experiment tracking read back as a user reads it: TensorBoard's own loaders, metrics.jsonl."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hftraining.core.config import load_config
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

FAST = "evaluation.baseline_max_windows=200"
STEPS = ("training.logging_steps=2", "training.save_steps=4", "training.save_total_limit=10",
         "evaluation.eval_steps=4", "evaluation.report=false", FAST)


def _jsonl_by_step(run: Path) -> dict[int, dict]:
    """metrics.jsonl's records joined per step (a step's training and eval_* records)."""
    out: dict[int, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["step"], {}).update({k: v for k, v in rec.items() if k != "step"})
    return out


def _tensorboard(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag → its (step, value) points as TensorBoard shows them: the loader of its
    Python data path (``tensorboard --load_fast=false``, and wherever its Rust data server is not
    available), which drops what a restart of the run superseded."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(run / "tensorboard"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()[pea.TENSORS] if tag != "verdict/text_summary"}


def test_tensorboard_drops_the_steps_a_killed_run_logged_past_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ("output.report_to=[jsonl]", "output.tensorboard=true", "training.max_steps=8", *STEPS)
    train(load_config(None, tiny(run, *args)))
    # killed after logging step 8, before its checkpoint: --resume continues from step 4 and redoes 5-8
    shutil.rmtree(run / "checkpoints" / "step-00000008")
    shutil.rmtree(run / "final")
    train(load_config(None, tiny(run, *args, "training.resume_from_checkpoint=auto")))

    records, board = _jsonl_by_step(run), _tensorboard(run)
    assert {"train/loss", "eval/mse", "test/mse"} <= set(board)
    for tag, points in board.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: steps shown twice: {steps}"
        if tag.startswith("test/"):
            continue
        key = tag.replace("train/", "").replace("eval/", "eval_")
        assert steps == [s for s, r in sorted(records.items()) if r.get(key) is not None], tag
        for step, value in points:  # the resumed run's values, as metrics.jsonl holds them
            assert np.float32(value) == np.float32(records[step][key]), (tag, step)
    verdicts = _verdicts(run)
    assert [s for s, _ in verdicts] == [8], verdicts


def _verdicts(run: Path) -> list[tuple[int, str]]:
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(str(run / "tensorboard"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors("verdict/text_summary")]
