"""hftraining tune, what its report tells a user: a ``--trials 0`` report fails a dead worker's trial before it
lists the study; a pruned trial's last report is not written as its score; the best config says that no trial
was scored on the test split; ``training.seed`` is not a hyperparameter; a search space key of another section
or misspelt names the key meant; a SQLite study locked by another process is one line."""

import copy
import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune2_round15 import _cmd, _failed_study, _study  # noqa: E402
from test_tune3_round15 import _running  # noqa: E402
from test_tune_audit import TINY  # noqa: E402
from test_tune_round15 import study_config  # noqa: E402

LR = {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


def _report(path: Path, out: Path, capsys) -> str:
    """``tune --trials 0`` of study 's' in ``out`` → its printed summary (exit 0)."""
    rc = main(["tune", "--config", str(path), "--trials", "0", "--out", str(out), "--study", "s"])
    said = capsys.readouterr()
    assert rc == 0, said.err
    return said.out


def _csv(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_report_of_the_study_fails_a_dead_workers_trial_first(tmp_path, capsys, monkeypatch):
    """A worker killed mid-trial leaves its trial "running". A tune that runs trials fails it as stale first,
    but the report of the study (``--trials 0``, the command run once every machine has finished) listed it as
    running for ever. It is failed first there too (STALE.json in its folder); a live worker's trial is kept."""
    path, _ = study_config(tmp_path)
    out = tmp_path / "o"
    _failed_study(path, out, monkeypatch, capsys)
    dead = _running(out, time.time() - 3600)  # its worker was killed an hour ago
    (out / f"trial-{dead:04d}").mkdir()
    live = _running(out, time.time())
    printed = _report(path, out, capsys)
    trials = _study(out).get_trials()
    assert trials[dead].state.name == "FAIL" and trials[live].state.name == "RUNNING"
    assert {r["trial"]: r["state"] for r in _csv(out)} == {"0": "fail", str(dead): "fail", str(live): "running"}
    assert (out / f"trial-{dead:04d}" / tune.STALE_FILE).is_file()
    assert "3 trial(s) — 0 complete, 0 pruned, 2 fail (1 of them stale: their worker died), 1 running" in printed


def test_a_pruned_trials_last_report_is_not_its_score(tmp_path, capsys):
    """Optuna gives a pruned trial its last intermediate value as its value, and trials.csv wrote it in the score
    column: a pruned trial whose last report was low sorted above every completed trial. Its score is empty (its
    state says pruned); the completed trial's is its score, and it is the best."""
    cfg = copy.deepcopy(TINY)
    cfg["tune"]["search_space"] = LR
    path, out = tmp_path / "c.yaml", tmp_path / "o"
    path.write_text(yaml.safe_dump(cfg))
    out.mkdir()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tune.journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    dists = tune.space_distributions(tune.parse_space(LR))
    done = study.ask(dists)
    done.report(0.7, 2)
    study.tell(done, 0.5)
    pruned = study.ask(dists)
    pruned.report(0.01, 2)  # low at its first evaluation, pruned later by another rule (or worse at a later step)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    assert _study(out).get_trials()[pruned.number].value == 0.01  # what Optuna stores
    printed = _report(path, out, capsys)
    rows = {r["trial"]: r for r in _csv(out)}
    assert rows["1"]["state"] == "pruned" and rows["1"]["eval_mse"] == "" and rows["1"]["evals"] == "1"
    assert rows["0"]["state"] == "complete" and float(rows["0"]["eval_mse"]) == 0.5
    scored = sorted((float(r["eval_mse"]), r["trial"]) for r in rows.values() if r["eval_mse"])
    assert scored == [(0.5, "0")]
    assert "best: trial 0, eval_mse = 0.5" in printed
    table = printed.splitlines()[2:4]
    assert table[1].split()[:3] == ["1", "pruned", "—"], table


def test_the_best_config_says_no_trial_was_scored_on_the_test_split(tmp_path, capsys):
    """best_config.yaml named the split its score came from, "(validation split)", but not that the test split
    was left unscored, which is what makes a train of the config an out-of-sample test of the choice. Its
    header and the summary say so, with the date the test split starts."""
    path, _ = study_config(tmp_path)
    out = tmp_path / "o"
    assert main(_cmd(path, out)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    sentence = ("no trial was scored on the test split (from 2025-01-02): a train of this config scores it once, "
                "out of sample for this choice")
    header = [ln for ln in (out / "best_config.yaml").read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    assert header[0].endswith(" (validation split)") and header[1] == f"# {sentence}", header
    assert sentence in printed.splitlines()
    assert not (out / "trial-0000" / "eval.json").exists()  # the trial made no test evaluation


def test_training_seed_cannot_be_searched(tmp_path, capsys):
    """A search over training.seed picked the seed whose validation score came out lowest, the maximum of noise,
    and best_config.yaml presented it as a tuned configuration. It is refused before the study or --out exists."""
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.training\.seed: the best of several seeds on the "
                                          r"validation split is the luckiest run"):
        tune.parse_space({"training.seed": {"type": "int", "low": 0, "high": 9}})
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.training\.seed: "):
        tune.parse_space({**LR, "training.seed": {"choices": [0, 1, 2]}})
    cfg = copy.deepcopy(TINY)
    cfg["tune"]["search_space"] = {"training.seed": {"choices": [0, 1]}}
    path, out = tmp_path / "c.yaml", tmp_path / "o"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "2", "--out", str(out), "--study", "s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hftraining: error: tune.search_space.training.seed: "), err
    assert "train --seeds N" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("key, meant", [
    ("training.batch_size", "data.batch_size"),  # a key of another section
    ("model.seed", "training.seed or tune.seed"),
    ("training.learnin_rate", "training.learning_rate"),  # misspelt
    ("trainng.learning_rate", "training.learning_rate"),  # a misspelt section
])
def test_a_search_space_key_not_in_the_config_tree_names_the_key_meant(key, meant):
    """A key of the search space that is not in the config tree listed every key of its section (or the
    sections); the config's own loader names the key meant, and so does the search space."""
    with pytest.raises(ConfigError, match=r"^tune\.search_space\." + key.replace(".", r"\.")) as e:
        tune.parse_space({key: {"type": "float", "low": 0.1, "high": 0.2}})
    assert str(e.value).endswith(f"; did you mean {meant}?"), str(e.value)


LOCKER = """import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(600)  # killed by the test
"""


@pytest.mark.parametrize("when", ["before the tune", "while it runs"])
def test_a_sqlite_study_locked_by_another_process_is_one_line(tmp_path, capsys, monkeypatch, when):
    """A SQLite file held locked by another process (a ``sqlite3`` shell inside a transaction) stopped the tune
    with a traceback once the study was open (Optuna's StorageInternalError, which speaks of invalid data in the
    commit); it is one line naming --storage and the lock, exit 2, whenever the lock is met."""
    monkeypatch.setattr(tune, "SQLITE_BUSY_SECONDS", 1, raising=False)
    cfg = copy.deepcopy(TINY)
    path, out, db = tmp_path / "c.yaml", tmp_path / "o", tmp_path / "s.db"
    path.write_text(yaml.safe_dump(cfg))
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="s", storage=url)
    locker = tmp_path / "lock.py"
    locker.write_text(LOCKER)
    procs: list[subprocess.Popen] = []

    def lock() -> None:
        p = subprocess.Popen([sys.executable, str(locker), str(db)], stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout.readline().strip() == b"locked"

    if when == "before the tune":
        lock()
    else:  # another process takes the lock once the tune has opened the study
        real = tune._storage

        def opened(optuna_, storage):
            backend = real(optuna_, storage)
            lock()
            return backend

        monkeypatch.setattr(tune, "_storage", opened)
    try:
        rc = main(["tune", "--config", str(path), "--trials", "1", "--out", str(out), "--study", "s", "--storage", url])
    finally:
        for p in procs:
            p.kill()
            p.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"hftraining: error: --storage {url}: (sqlite3.OperationalError) database is locked "
                             "(another process held a lock on it for 1 s: end that process, then tune again)"), err
