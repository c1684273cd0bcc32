"""Resuming a checkpoint written before checkpoints carried checksums: it is resumed unverified, so a file of it
that is cut short or is not what this program wrote (config.json, trainer_state.json's step and random states,
optimizer.json) is a one-line error naming the file, exit 2, not a Python traceback."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import tiny
from hftraining.cli import main
from hftraining.train.logging import log

COMMON = ("training.save_steps=4", "evaluation.eval_steps=4", "training.logging_steps=4", "output.report_to=[jsonl]",
          "evaluation.report=false", "training.use_mixed_precision=false")


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory) -> Path:
    """A run folder of 4 steps whose checkpoint holds no checksums (as written before they existed)."""
    from hftraining.core.config import load_config
    from hftraining.workflows.train_run import train

    run = tmp_path_factory.mktemp("legacy") / "run"
    train(load_config(None, tiny(run, *COMMON, "training.max_steps=4")))
    state_file = run / "checkpoints" / "step-00000004" / "trainer_state.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    del state["checksums"]
    state_file.write_text(json.dumps(state), encoding="utf-8")
    return run


def _cut(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _edited(edit):
    """Damage: the file's JSON object changed in place by ``edit``."""
    def change(f: Path) -> None:
        obj = json.loads(f.read_text(encoding="utf-8"))
        edit(obj)
        f.write_text(json.dumps(obj), encoding="utf-8")
    return change


DAMAGE = {  # case: (file of the checkpoint, how it is damaged, what the message says after the file's path)
    "config-cut-short": ("config.json", _cut, ": cannot be read"),
    "config-not-an-object": ("config.json", lambda f: f.write_text("[]", encoding="utf-8"), ": does not hold a JSON object"),
    "config-section-not-an-object": ("config.json", _edited(lambda c: c.update(model="transformer")),
                                     ": section 'model' is not a JSON object"),
    "state-without-global-step": ("trainer_state.json", _edited(lambda s: s.pop("global_step")), ": has no global_step"),
    "state-step-a-string": ("trainer_state.json", _edited(lambda s: s.update(global_step="4")),
                            ": global_step must be a whole number"),
    "state-without-rng": ("trainer_state.json", _edited(lambda s: s.pop("rng")), ": has no rng object"),
    "optimizer-json-of-nothing": ("optimizer.json", lambda f: f.write_text("{}", encoding="utf-8"),
                                  ": not the optimizer state of this checkpoint"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_unverified_checkpoint_resumes_to_one_line_naming_the_file(legacy_run, case, tmp_path, monkeypatch,
                                                                              capsys):
    """Before: a JSONDecodeError, AttributeError, KeyError, TypeError or ValueError traceback (exit 1) that named
    no file of the checkpoint."""
    name, damage, says = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(legacy_run, run)
    f = run / "checkpoints" / "step-00000004" / name
    damage(f)
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    rc = main(["train", "--resume", *tiny(run, *COMMON, "training.max_steps=8")])
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}: {err[-3000:]}"
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"hftraining: error: {f}{says}"), err[-3000:]


def test_an_undamaged_unverified_checkpoint_still_resumes(legacy_run, tmp_path, monkeypatch, capsys):
    """The checks refuse only what is damaged: the checkpoint as an older version wrote it continues to step 8."""
    run = tmp_path / "run"
    shutil.copytree(legacy_run, run)
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    rc = main(["train", "--resume", *tiny(run, *COMMON, "training.max_steps=8")])
    assert rc == 0, capsys.readouterr().err[-3000:]
    state = json.loads((run / "checkpoints" / "step-00000008" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 8
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert 4 in steps and 8 in steps
