"""``evaluate RUN`` of run folders as they may be found: an interrupted walk-forward's fold is told how a
walk-forward is finished (it does not resume), and the run's eval.json and model card are read as the run's
other files are (regular files inside it), so a named pipe in their place is refused or passed over at once
instead of blocking the command."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_workflows_round14 import FAST, _one_line_error, _run, scored  # noqa: E402,F401 - scored: a fixture

from hftraining.core.errors import DataError  # noqa: E402
from hftraining.workflows.evaluate_run import check_scored_run  # noqa: E402


def test_an_interrupted_walk_forward_fold_is_told_to_run_the_walk_forward_again(tmp_path, monkeypatch):
    """A walk-forward stopped while its second fold was being scored leaves ``fold-2/`` with its model and a card
    "not evaluated". evaluate refuses it (its fitted baselines were never saved) and said to finish it with
    ``hftraining train --resume``, which a fold cannot do: the fold's config.json has no fold, so that resume read
    the whole calendar's splits and was refused as "the files under data.data_dir changed". The error says what
    finishes it: the walk-forward run again with output.overwrite=true, after which the fold evaluates."""
    import hftraining.workflows.train_run as train_run

    run = tmp_path / "run"
    args = tiny(run, *FAST)
    fit = train_run.fit_baselines
    calls = []

    def second_fold_stopped(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(*a, **k)

    with monkeypatch.context() as mp:
        mp.setattr(train_run, "fit_baselines", second_fold_stopped)
        try:
            _run("walkforward", "--folds", "3", *args)
        except KeyboardInterrupt:
            pass
    fold = run / "walkforward" / "fold-2"
    assert (fold / "final" / "model.safetensors").is_file() and not (fold / "eval.json").exists()
    rc, _, err = _run("evaluate", str(fold), "--json", "--no-report")
    last = _one_line_error(rc, err)
    assert f"{fold / 'baselines' / 'ridge'}: missing" in last and "not evaluated" in last, last
    assert "walk-forward fold 2 of 3" in last and "output.overwrite=true" in last, last
    assert "train --resume" not in last, last
    # the card of the folder says what scores it: finishing the run (evaluate refuses it, as above)
    card = (fold / "final" / "README.md").read_text(encoding="utf-8")
    assert "`--resume`" in card and "the walk-forward again with output.overwrite=true" in card, card
    assert "scores the model beside the baselines" in card and "hftraining evaluate" not in card, card

    rc, _, err = _run("walkforward", "--folds", "3", *args, "output.overwrite=true")
    assert rc == 0, err
    rc, out, err = _run("evaluate", str(fold), "--json", "--no-report")
    assert rc == 0, err
    assert json.loads(out)["model"] == json.loads((fold / "eval.json").read_text())["model"]


def _check_in_thread(run: Path, pipe: Path, seconds: float = 10.0) -> tuple[bool, BaseException | None]:
    """check_scored_run(run) in a thread: (whether it returned within ``seconds``, what it raised). A call still
    blocked opening ``pipe`` for reading is released by a writer that opens and closes it."""
    raised: list[BaseException | None] = [None]

    def target():
        try:
            check_scored_run(run)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            raised[0] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    returned = not t.is_alive()
    if not returned:
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees the end of the pipe
        t.join(seconds)
    return returned, raised[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_as_eval_json_is_refused_naming_it_at_once(scored, tmp_path):
    """eval.json is read to know which fitted baselines and intervals the run scored; a pipe in its place (or a
    link to /dev/zero) was opened and read, and evaluate waited on it without end. It is a one-line error naming
    the file, as for the run's config.json."""
    run = tmp_path / "run"
    shutil.copytree(scored, run)
    (run / "eval.json").unlink()
    os.mkfifo(run / "eval.json")
    returned, raised = _check_in_thread(run, run / "eval.json")
    assert returned, "evaluate waited on a pipe named eval.json"
    assert isinstance(raised, DataError) and "eval.json" in str(raised) and "regular file" in str(raised), raised


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_as_the_model_card_is_no_card_and_blocks_nothing(scored, tmp_path):
    """A run without eval.json is checked for a model card saying it was never scored; a pipe in the card's place
    was opened and read, and evaluate waited on it without end. It is no card of ours: the check passes at once."""
    run = tmp_path / "run"
    shutil.copytree(scored, run)
    (run / "eval.json").unlink()
    (run / "final" / "README.md").unlink()
    os.mkfifo(run / "final" / "README.md")
    returned, raised = _check_in_thread(run, run / "final" / "README.md")
    assert returned, "evaluate waited on a pipe named final/README.md"
    assert raised is None, raised


def test_a_scored_run_and_its_copy_without_a_readable_card_still_evaluate(scored, tmp_path):
    """The reads above change nothing for a run as training left it, nor for one whose card is not ours."""
    rc, out, err = _run("evaluate", str(scored), "--json", "--no-report")
    assert rc == 0, err
    assert json.loads(out)["verdict"] == json.loads((scored / "eval.json").read_text())["verdict"]
    run = tmp_path / "run"
    shutil.copytree(scored, run)
    (run / "final" / "README.md").write_bytes(b"\xff\xfe not a card")
    check_scored_run(run)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_card_meta_of_a_pipe_is_no_card_at_once(tmp_path):
    """card_meta (read on resume to find a finished run's checkpoint) read the card without a bound: a pipe in
    its place blocked, a link to /dev/zero read without end. It is no card of ours."""
    from hftraining.eval.model_card import card_meta

    (tmp_path / "final").mkdir()
    pipe = tmp_path / "final" / "README.md"
    os.mkfifo(pipe)
    got: list = []
    t = threading.Thread(target=lambda: got.append(card_meta(pipe)), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("card_meta waited on a pipe named README.md")
    assert got == [None]
