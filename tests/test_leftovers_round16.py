"""Three things a user relies on: a forecast from a file whose ``ffill`` fallback dropped rows says so (as
``data check`` does); a ``tune --trials 0`` report with a smaller ``tune.stale_after_seconds`` than the running
workers' does not fail their live trials; a link whose target goes through a linked folder and then ``..``
is followed as the system opens it (a loop named as a loop, a missing target as missing)."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import load_config
from hftraining.data import validate
from hftraining.data.io import link_chain
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

HEADER = "Date,Open,High,Low,Close,Volume\n"


# ----------------------------------------------------------------------------- the ffill fallback in a forecast


def _bar(day: pd.Timestamp, close: float, volume: str = "1000", empty_close: bool = False) -> str:
    c = "" if empty_close else f"{close:g}"
    return f"{day:%Y-%m-%d},{close:g},{close * 1.01:g},{close * 0.99:g},{c},{volume}\n"


@pytest.fixture(scope="module")
def ffill_run(tmp_path_factory):
    """A tiny model trained with ``invalid_values: ffill`` and ``jumps: drop``."""
    tmp = tmp_path_factory.mktemp("ffill")
    cfg = load_config(None, tiny(tmp / "run", "data.invalid_values=ffill", "data.jumps=drop", "training.max_steps=2",
                                 "training.save_steps=0", "evaluation.eval_steps=0"))
    train(cfg)
    return tmp / "run"


def _fallback_file(path):
    """60 calm bars, then two spikes whose bar after is an empty close (filled from the spike, dropped as a
    jump) and a bar whose empty volume a kept bar fills: with the fallback after the first pass, those three
    rows are dropped instead of filled."""
    closes = [100 + 0.1 * i for i in range(60)] + [106, 300, 300, 107, 108, 330, 330, 109, 110, 111]
    days = pd.bdate_range("2023-01-02", periods=len(closes))
    rows = [_bar(d, c) for d, c in zip(days, closes)]
    rows[62] = _bar(days[62], 300, empty_close=True)
    rows[66] = _bar(days[66], 330, empty_close=True)
    rows[64] = _bar(days[64], 108, volume="")
    path.write_text(HEADER + "".join(rows))


def test_a_forecast_from_a_file_the_ffill_fallback_cut_says_so(ffill_run, tmp_path, monkeypatch, capsys):
    """The rows dropped instead of filled were counted under their value rule only: the forecast said "3 row(s)
    dropped" without why, though ``data check`` names the fallback. ``predict``'s warnings (the server's
    ``"warnings"``, the command's stderr) carry the report's fallback line too; a file without it has none."""
    monkeypatch.setattr(validate, "UNFILL_PASSES", 0)
    path = tmp_path / "S.csv"
    _fallback_file(path)
    fc = Forecaster.from_pretrained(ffill_run)
    _, reports = fc.load_with_reports(str(path))
    note = reports[0]["ffill_fallback"]["S"]
    assert "so 3 rows were dropped instead of filled" in note
    said: list[str] = []
    fc.predict(str(path), warnings=said)
    assert note in said
    capsys.readouterr()
    assert cli.main(["predict", str(ffill_run), "--data", str(path)]) == 0
    assert note in capsys.readouterr().err.splitlines()

    monkeypatch.setattr(validate, "UNFILL_PASSES", 8)  # enough passes: the cells are filled, no fallback
    said = []
    fc.predict(str(path), warnings=said)
    assert not any("dropped instead of filled" in line for line in said)


def test_a_frames_ffill_fallback_is_in_the_warnings_too():
    """The lines of ``{symbol: frame}`` reports (0-based positions) carry the fallback line as a file's do."""
    rep = {"file": "<S>", "rows_dropped": 1, "row_numbers": "position",
           "rules": {"nan_or_inf": {"dropped": 1, "repaired": 0, "flagged": 0, "rows": [4]}},
           "ffill_fallback": {"S": "<S>: data.invalid_values=ffill: after 1 pass a filled cell still came from a row "
                                   "dropped since, so 1 row was dropped instead of filled (each under its value rule)"}}
    for scored in (False, True):
        lines = Forecaster.dropped_rows([rep], scored=scored)
        assert lines[-1] == rep["ffill_fallback"]["S"] and len(lines) == 2


# ----------------------------------------------------------------------------- a report's stale rule

optuna = pytest.importorskip("optuna")


def test_a_report_with_a_smaller_stale_after_keeps_a_live_workers_trial(tmp_path, capsys, monkeypatch):
    """The workers run with ``tune.stale_after_seconds: 300`` and beat every 30 s; a report (``--trials 0``) with
    ``stale_after_seconds: 5`` failed their trial 60 s after its last beat, while it still trained. A trial is
    failed only once silent longer than its own worker's ``stale_after_seconds`` (recorded with the trial) too;
    a trial silent longer than both is failed still."""
    from hftraining.workflows import tune
    from test_tune2_round15 import _failed_study, _study  # noqa: E402
    from test_tune_round15 import study_config  # noqa: E402

    path, _ = study_config(tmp_path)
    out = tmp_path / "o"
    _failed_study(path, out, monkeypatch, capsys)
    dist = tune.space_distributions(tune.parse_space(
        {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}))
    numbers = []
    for beat in (time.time() - 60, time.time() - 3600):  # a live worker's trial (a beat was lost), a dead one's
        t = _study(out).ask(dist)
        t.set_user_attr(tune.PREPARED_ATTR, True)
        t.set_user_attr("stale_after_seconds", 300.0)  # as the workers' Objective records it as the trial starts
        t.set_user_attr(tune.HEARTBEAT, beat)
        numbers.append(t.number)
    live, dead = numbers
    rc = cli.main(["tune", "--config", str(path), "--trials", "0", "--out", str(out), "--study", "s",
                   "tune.heartbeat_seconds=1", "tune.stale_after_seconds=5"])
    assert rc == 0, capsys.readouterr().err
    trials = _study(out).get_trials()
    assert trials[live].state.name == "RUNNING" and trials[dead].state.name == "FAIL"


def test_a_worker_records_its_stale_after_with_each_trial(tmp_path, monkeypatch):
    """The Objective records its ``tune.stale_after_seconds`` in the trial before its heartbeat starts."""
    from hftraining.workflows import tune

    study = optuna.create_study()
    trial = study.ask()
    obj = tune.Objective(None, ["tune.heartbeat_seconds=2", "tune.stale_after_seconds=77"], {}, tmp_path)
    seen = {}
    monkeypatch.setattr(tune.Objective, "_run", lambda self, t: seen.update(t.user_attrs) or 0.0)
    obj(trial)
    assert tune.STALE_AFTER == "stale_after_seconds" and seen[tune.STALE_AFTER] == 77.0


# ----------------------------------------------------------------------------- links through linked folders


def _linked_folder(tmp_path):
    """``lnk`` -> ``real/deep``: ``prices/../lnk/..`` is ``real`` to the system, ``tmp_path`` as text."""
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "prices").mkdir()
    (tmp_path / "lnk").symlink_to(tmp_path / "real" / "deep")


def test_a_loop_through_a_linked_folder_is_named_as_a_loop(tmp_path, capsys):
    """``prices/NIO.csv -> ../lnk/../NIO.csv`` opens ``real/NIO.csv``, a link back to ``prices/NIO.csv``: a loop,
    which was "a link to ../lnk/../NIO.csv, which is not there" (the text led to ``tmp_path/NIO.csv``)."""
    _linked_folder(tmp_path)
    nio = tmp_path / "prices" / "NIO.csv"
    nio.symlink_to("../lnk/../NIO.csv")
    (tmp_path / "real" / "NIO.csv").symlink_to("../prices/NIO.csv")
    assert cli.main(["data", "check", str(nio)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"hftraining: error: {nio}: a link loop ({nio} -> {tmp_path / 'real' / 'NIO.csv'} -> {nio}): "
                       "point the link at the file itself, or remove it")
    assert link_chain(nio) == [nio, tmp_path / "real" / "NIO.csv", nio]


def test_a_missing_target_through_a_linked_folder_is_no_loop(tmp_path, capsys):
    """``prices/A.csv -> ../lnk/../prices/A.csv`` opens ``real/prices/A.csv``, which is not there: as text it led
    back to itself and was named a link loop."""
    _linked_folder(tmp_path)
    a = tmp_path / "prices" / "A.csv"
    a.symlink_to("../lnk/../prices/A.csv")
    assert cli.main(["data", "check", str(a)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"hftraining: error: {a}: a link to ../lnk/../prices/A.csv, which is not there: restore what it "
                       "links to, or remove the link")
    assert link_chain(a) == [a, tmp_path / "real" / "prices" / "A.csv"]
