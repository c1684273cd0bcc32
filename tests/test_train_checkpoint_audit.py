"""The run folder's life around --resume: a finished run resumed is left as it is (its test metrics are
not logged a second time), and a resume on data that moved the split is refused."""

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import UserError
from hftraining.data.io import sample_data_dir
from hftraining.train.runner import training_run
from conftest import tiny  # noqa: E402


def _test_scalars(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("test/mse")]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


from test_train_resume import logged  # noqa: E402,F401  (the fixture: records of the hftraining logger)


@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_resuming_a_finished_run_leaves_it_as_it_is(tmp_path, logged):
    # it trained nothing, scored the test split again and every tracker got the test metrics twice
    # (TensorBoard's test/mse: two points at step 4; MLflow's history: two entries)
    run = tmp_path / "run"
    args = tiny(run, "training.max_steps=4", "training.save_steps=2", "training.logging_steps=2",
                "evaluation.eval_steps=0", "evaluation.report=false", "output.tensorboard=true",
                "output.report_to=[jsonl,tensorboard]", "evaluation.intervals=[]", "evaluation.max_test_windows=60",
                "evaluation.baseline_max_windows=300")
    assert main(["train", *args]) == 0
    assert [s for s, _ in _test_scalars(run)] == [4]
    before = _files(run)
    logged.clear()
    assert main(["train", *args, "--resume"]) == 0
    assert [s for s, _ in _test_scalars(run)] == [4]  # once
    assert _files(run) == before  # nothing trained, scored or rewritten
    said = [r.getMessage() for r in logged if "finished" in r.getMessage()]
    assert len(said) == 1 and "training.max_steps" in said[0] and "hftraining evaluate" in said[0], said
    # a finished run resumed with a change it cannot continue with is still refused
    assert main(["train", *args, "model.hidden_size=24", "--resume"]) == 2
    # and with more steps to train it trains on, then scores the last step once
    assert main(["train", *args, "training.max_steps=6", "--resume"]) == 0
    assert json.loads((run / "eval.json").read_text())["step"] == 6
    assert [s for s, _ in _test_scalars(run)] == [4, 6]
    # a run stopped while it was being scored (eval.json written, its model card not yet) is scored again
    from hftraining.train.runner import finished_checkpoint

    resumed = load_config(None, [*args, "training.max_steps=6", "training.resume_from_checkpoint=auto"])
    assert finished_checkpoint(resumed) == run / "checkpoints" / "step-00000006"
    card = run / "final" / "README.md"
    text = card.read_text()
    assert "\ntrained_steps: 6\n" in text
    card.write_text(text.replace("\ntrained_steps: 6\n", "\ntrained_steps: 4\n"))  # the card of the scoring before
    assert finished_checkpoint(resumed) is None
    card.write_text(text.replace("\nevaluated: true\n", "\nevaluated: false\n"))  # written before the scoring
    assert finished_checkpoint(resumed) is None
    card.write_text(text)
    os.utime(card, ns=(0, 0))  # file times (which a copy such as cp -r need not keep) decide nothing
    assert finished_checkpoint(resumed) == run / "checkpoints" / "step-00000006"


def _data(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for sym in ("AEM", "WPM"):
        pd.read_csv(sample_data_dir() / f"{sym}.csv").iloc[:rows].to_csv(folder / f"{sym}.csv", index=False)
    return folder


def _half_run(tmp_path: Path, *extra: str) -> tuple[Path, list[str]]:
    """A run killed after its checkpoint at step 2 (final/ and later checkpoints gone), on 1,200 rows."""
    data, run = _data(tmp_path / "data", 1200), tmp_path / "run"
    args = tiny(run, "training.max_steps=4", "training.save_steps=2", "evaluation.eval_steps=0",
                f"data.data_dir={data}", f"data.cache_dir={tmp_path / 'cache'}", *extra)
    with training_run(load_config(None, args)):
        pass
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    return run, args


def test_resuming_on_data_that_moved_the_split_is_a_one_line_error(tmp_path):
    # rows appended to the files moved the calendar split: the resumed run trained on 2,092 windows
    # instead of 1,588 (validation from 2024-05-17 instead of 2023-05-17), with another scaler, and
    # rewrote data_report.json to say so, without a word
    run, args = _half_run(tmp_path)
    report = (run / "data_report.json").read_text()
    _data(tmp_path / "data", 1560)
    with pytest.raises(UserError, match="cannot resume on other data: windows.train is 2092") as e:
        with training_run(load_config(None, [*args, "training.resume_from_checkpoint=auto"])):
            pass
    assert "\n" not in str(e.value) and "data.data_dir" in str(e.value) and "step-00000002" in str(e.value)
    assert (run / "data_report.json").read_text() == report and not (run / "final").exists()


def test_resuming_with_rows_added_to_the_test_split_only_continues(tmp_path):
    # fixed cut dates: rows appended after them only grow the test split, which nothing trained on
    run, args = _half_run(tmp_path, "data.split_dates={val: '2022-01-03', test: '2023-01-03'}")
    _data(tmp_path / "data", 1560)
    with training_run(load_config(None, [*args, "training.resume_from_checkpoint=auto"])) as r:
        assert r.state.global_step == 4
    assert json.loads((run / "data_report.json").read_text())["windows"]["test"] == r.data.report["windows"]["test"]


def test_resuming_from_an_earlier_checkpoint_named_sets_the_later_ones_aside(tmp_path, logged):
    # the later checkpoints of the course left were still the newest: the next --resume continued
    # step 6 of that course (training.max_grad_norm 1.0) while config.json said 0.05, and the steps
    # trained since the earlier checkpoint were silently dropped
    run = tmp_path / "run"
    common = tiny(run, "training.save_steps=2", "training.save_total_limit=10", "evaluation.eval_steps=0")
    with training_run(load_config(None, [*common, "training.max_steps=6"])):
        pass
    root = run / "checkpoints"
    with training_run(load_config(None, [*common, "training.max_steps=4", "training.max_grad_norm=0.05",
                                         f"training.resume_from_checkpoint={root / 'step-00000002'}"])):
        pass
    warned = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "step-00000004, step-00000006" in warned[0] and "superseded" in warned[0], warned
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000004", "step-00000004.superseded",
                                                      "step-00000006.superseded"]
    logged.clear()
    with training_run(load_config(None, [*common, "training.max_steps=6", "training.max_grad_norm=0.05",
                                         "training.resume_from_checkpoint=auto"])) as r:
        assert r.state.global_step == 6
    assert any(m.getMessage() == f"resumed from {root / 'step-00000004'} at step 4" for m in logged)
    assert json.loads((root / "step-00000006" / "config.json").read_text())["training"]["max_grad_norm"] == 0.05


def test_a_run_that_took_its_symbols_in_another_order_is_not_resumed_on_name_order(tmp_path):
    """A run started before symbols were taken in name order (`data.symbols: [WPM, AEM]`, its data_report.json
    keeps that order) would resume with its sampler's position counting through windows in another order:
    a one-line error; the same report in name order resumes."""
    from hftraining.core.errors import UserError
    from hftraining.train.runner import check_same_data

    parts = {"train": ["2020-01-02", "2023-01-03"], "val": ["2023-01-04", "2024-01-03"]}
    report = {"windows": {"train": 100, "val": 20}, "split": {"val_from": "2023-01-04",
                                                               "symbols": {"AEM": parts, "WPM": parts}}}
    step = tmp_path / "run" / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    old = {**report, "split": {**report["split"], "symbols": {"WPM": parts, "AEM": parts}}}
    (tmp_path / "run" / "data_report.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match=r'took its symbols in the order \["WPM", "AEM"\]') as e:
        check_same_data(report, step)
    assert "\n" not in str(e.value)
    (tmp_path / "run" / "data_report.json").write_text(json.dumps(report))
    check_same_data(report, step)


def test_resuming_a_run_that_stopped_early_does_not_say_more_steps_would_train_it(tmp_path, logged):
    """A run stopped early stays stopped (its patience is restored with it): the finished-run warning of
    --resume says to start over to train longer, not to raise training.max_steps (which trains nothing)."""
    run = tmp_path / "run"
    args = tiny(run, "training.max_steps=4", "training.save_steps=2", "evaluation.eval_steps=0",
                "evaluation.report=false", "evaluation.intervals=[]", "evaluation.max_test_windows=60",
                "evaluation.baseline_max_windows=300")
    assert main(["train", *args]) == 0
    state_file = run / "checkpoints" / "step-00000004" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["stopped_early"] = True
    state_file.write_text(json.dumps(state))
    logged.clear()
    assert main(["train", *args, "training.max_steps=8", "--resume"]) == 0
    said = [r.getMessage() for r in logged if "finished" in r.getMessage()]
    assert len(said) == 1 and "stopped early" in said[0] and "raise training.max_steps" not in said[0], said
    assert "output.overwrite=true" in said[0]


def test_resume_with_no_checkpoint_to_resume_says_it_starts_over(tmp_path, logged):
    """--resume into a folder without a checkpoint (a mistyped output_dir, checkpoints deleted) trains
    from step 0, as a scheduler's "resume if possible" needs, and says so."""
    run = tmp_path / "typo"
    assert main(["train", *tiny(run, "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
                                "evaluation.intervals=[]", "evaluation.max_test_windows=60",
                                "evaluation.baseline_max_windows=300"), "--resume"]) == 0
    said = [r.getMessage() for r in logged if "no checkpoint to resume" in r.getMessage()]
    assert len(said) == 1 and str(run) in said[0] and "step 0" in said[0], said


def test_a_resume_whose_windows_alone_changed_does_not_blame_the_files(tmp_path):
    """The same rows split at the same places but other windows (this version cuts them otherwise, e.g.
    data.stride under date batching): the refusal says so instead of "the files changed"."""
    from hftraining.train.runner import check_same_data

    report = {"windows": {"train": 300, "val": 40}, "split": {"val_from": "2024-01-02",
                                                                "symbols": {"AEM": {"train": [0, 300], "val": [300, 340]}}}}
    (tmp_path / "checkpoints" / "step-00000004").mkdir(parents=True)
    (tmp_path / "data_report.json").write_text(json.dumps(report))
    ckpt = tmp_path / "checkpoints" / "step-00000004"
    (ckpt / "config.json").write_text(json.dumps({"data": {"batching": "dates", "stride": 2}}))
    check_same_data(report, ckpt)  # the same: passes
    fewer = {**report, "windows": {"train": 100, "val": 40}}
    with pytest.raises(UserError, match=r"windows.train is 100 .* this version cuts the windows otherwise") as e:
        check_same_data(fewer, ckpt)
    assert "files under data.data_dir" not in str(e.value)
    moved = {**fewer, "split": {**report["split"], "val_from": "2024-02-01"}}
    with pytest.raises(UserError, match="the files under data.data_dir changed"):
        check_same_data(moved, ckpt)
