"""A power user's path from tune to evaluate: ``evaluate --split val`` says in every verdict sentence it prints
that the split is in sample, and ``backtest --split val`` beside its table; an evaluation whose split
``evaluation.max_test_windows`` cuts says so where the command's output shows it; ``tune`` names the dates its
best config was chosen on, which a walk-forward of that config would score again."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of a return label on three symbols (a cross-section to rank), no report, no intervals."""
    from hftraining.cli import main

    folder = tmp_path_factory.mktemp("journey2") / "run"
    args = tiny(folder, "data.symbols=[AEM, WPM, ALNY]", "training.max_steps=4", "training.save_steps=0",
                "evaluation.eval_steps=4", "evaluation.intervals=[]", "evaluation.report=false")
    assert main(["train", *args]) == 0
    return folder


def test_evaluate_val_says_in_sample_in_the_cross_section_verdict_too(run, capsys):
    """A return label's console and report print two verdicts: the squared error's and the cross-section's
    (step-1 rank IC against the strongest baseline by rank IC). On ``--split val`` both judge windows that
    chose the checkpoint and the fitted baselines' settings; the cross-section's sentence read as an
    out-of-sample claim, without the note the squared-error one carries."""
    from hftraining.cli import main
    from hftraining.workflows.evaluate_run import IN_SAMPLE

    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val", "--json", "--no-report"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target"] == "return" and res["model"]["cross_section"]["rank_ic"]["n_dates"] > 0
    for key in ("verdict", "mse_verdict", "cross_section_verdict"):
        assert res[key].endswith(IN_SAMPLE["val"]), key
        assert res[key].count("not an out-of-sample test") == 1, key
    assert main(["evaluate", str(run), "--split", "val", "--no-report"]) == 0
    out = capsys.readouterr().out
    rank_line = [ln for ln in out.splitlines() if ln.strip().startswith("step-1 rank IC =")]
    assert len(rank_line) == 1 and rank_line[0].endswith(IN_SAMPLE["val"])
    assert main(["evaluate", str(run), "--json", "--no-report"]) == 0  # the test split: out of sample, no note
    res = json.loads(capsys.readouterr().out)
    assert not any("not an out-of-sample test" in res[k] for k in ("verdict", "mse_verdict", "cross_section_verdict"))


def test_backtest_of_another_split_says_it_is_in_sample(run, capsys):
    """``backtest RUN --split val`` prints the backtest table alone, which names no split: its Sharpe ratios read
    as the test split's. Its settings' warning (console, ``--json``, an evaluation's report) says the split is in
    sample, as the verdict of ``evaluate --split val`` does; the test split's backtest says nothing of the kind."""
    from hftraining.cli import main

    capsys.readouterr()
    for split in ("val", "train"):
        assert main(["backtest", str(run), "--split", split]) == 0
        last = capsys.readouterr().out.splitlines()[-1]
        assert last.startswith("warning (settings): ") and f"scored on the {split} split, which " in last, last
        assert last.endswith(": not an out-of-sample test"), last
        assert main(["backtest", str(run), "--split", split, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["settings"]["warning"].endswith("not an out-of-sample test")
    assert main(["backtest", str(run), "--json"]) == 0
    assert "out-of-sample" not in json.loads(capsys.readouterr().out)["settings"].get("warning", "")


def test_evaluate_of_a_cut_split_says_so_beside_the_table(run, capsys, caplog):
    """``--set evaluation.max_test_windows=N`` scores the last dates' windows only; the console's table counts
    those alone ("test: 12 windows"), and the line saying how many of the split's windows they are was an
    info record, which ``evaluate`` and ``backtest`` never show: it is a warning now, as on stderr."""
    from hftraining.cli import main

    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(run), "--no-report", "--set", "evaluation.max_test_windows=6"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    scored = int(header.split(":")[1].split()[0])
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "(evaluation.max_test_windows)" in r.getMessage()]
    assert len(said) == 1 and f": {scored} of " in said[0], (header, said)
    total = int(said[0].split(" of ")[-1].split()[0])
    assert total > scored
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the whole split: nothing to say
        assert main(["evaluate", str(run), "--no-report"]) == 0
    assert not [r for r in caplog.records if "(evaluation.max_test_windows)" in r.getMessage()]


def test_tune_says_which_dates_chose_the_best_config(tmp_path, capsys):
    """``best_config.yaml`` is what the README has a user train, walk forward and seed next. The trials chose it
    on the validation split, and a walk-forward of it cuts its test blocks from ``data.train_ratio`` on, so its
    first folds score those very dates as out of sample. The summary and the file's header name the dates the
    choice was made on (the best trial's validation split, as its data_report.json states it) and say so."""
    pytest.importorskip("optuna")
    import yaml

    from hftraining.cli import main
    from hftraining.core.jsonio import read_json

    cfg = {
        "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
        "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
        "training": {"max_steps": 2, "logging_steps": 2, "save_steps": 0},
        "evaluation": {"eval_steps": 2, "max_eval_batches": 1, "report": False},
        "output": {"experiment_name": "j2", "tensorboard": False},
        "tune": {"seed": 0, "sampler": "random", "pruner": "none", "search_space": {
            "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
    }
    path, out = tmp_path / "t.yaml", tmp_path / "tune"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["tune", "--config", str(path), "--trials", "2", "--out", str(out)]) == 0
    said = capsys.readouterr()
    best = read_json(out / "best.json")["trial"]
    split = read_json(out / f"trial-{best:04d}" / "data_report.json")["split"]
    first = split["val_from"][:10]
    last = max(s["val"][1] for s in split["symbols"].values() if s.get("val"))[:10]
    assert split["test_from"][:10] > last
    sentence = f"chosen on the validation dates {first} to {last}: a walkforward of this config scores them again"
    lines = [ln for ln in (said.out + said.err).splitlines() if ln.startswith(sentence)]
    assert len(lines) == 1 and "not out of sample for this choice" in lines[0]
    header = [ln for ln in (out / "best_config.yaml").read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    assert f"# {lines[0]}" in header
    assert yaml.safe_load((out / "best_config.yaml").read_text(encoding="utf-8"))["training"]["max_steps"] == 2
    assert header[0].endswith(" (validation split)")

    # with tune.folds the score is the mean over the folds' validation splits, and the dates span them all
    folded = tmp_path / "folded"
    assert main(["tune", "--config", str(path), "--trials", "1", "--out", str(folded), "tune.folds=2"]) == 0
    said = capsys.readouterr()
    header = [ln for ln in (folded / "best_config.yaml").read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    assert header[0].endswith(" (mean of 2 walk-forward folds' validation splits)"), header[0]
    spans = [s["val"] for k in (0, 1) for s in read_json(folded / "trial-0000" / f"fold-{k}" / "data_report.json")
             ["split"]["symbols"].values() if s.get("val")]
    first, last = min(a for a, _ in spans)[:10], max(b for _, b in spans)[:10]
    assert f"# chosen on the validation dates {first} to {last}: " in "\n".join(header)


def test_a_verdict_sentence_ending_in_its_in_sample_note_gets_no_second_full_stop():
    """The report wraps the squared-error and cross-section verdicts as sentences; ``evaluate --split val`` ends
    them with its in-sample note (".)"), and the report printed ".)." after it."""
    from hftraining.eval.report import sentence

    assert sentence("On squared error: not worth its cost") == "On squared error: not worth its cost."
    note = "On squared error: not worth its cost (Scored on the val split: not an out-of-sample test.)"
    assert sentence(note) == note and sentence("done.") == "done."
