"""hftraining tune storages: --workers 2 on a journal file and on a real PostgreSQL server run one
study together (distinct trials, all stored, one report by the parent); SQLite refuses several
workers; unknown or unreachable storages are one-line errors; --trials 0 reports a stored study."""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402

# tiny trials (as tests/test_workflows_tune.py); random search: each worker draws, none replays another
TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 2, "logging_steps": 2, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
    "output": {"experiment_name": "storage", "tensorboard": False},
    "tune": {"seed": 0, "sampler": "random", "pruner": "none", "search_space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.pooling": {"choices": ["last", "mean"]},
    }},
}
TRIALS = 2


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _check_study(optuna, storage, study: str, out: Path, printed: str) -> None:
    """The two workers ran one study: TRIALS distinct trials, all complete in the storage, and one
    report (written by the parent once the workers were done) naming the best of all of them."""
    s = optuna.load_study(study_name=study, storage=storage)
    trials = s.get_trials()
    assert len(trials) == TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(TRIALS))
    lrs = [t.params["training.learning_rate"] for t in trials]
    assert len(set(lrs)) == TRIALS, f"workers replayed each other's draws: {lrs}"
    # both workers' trials folders are in the one output folder
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{k:04d}" for k in range(TRIALS)]
    assert f"study {study}: {TRIALS} trial(s) — {TRIALS} complete" in printed
    # one best config, in the output folder only, for the best trial of the whole study
    assert [p.relative_to(out) for p in out.rglob("best_config.yaml")] == [Path("best_config.yaml")]
    text = (out / "best_config.yaml").read_text()
    assert text.startswith(f"# best trial {s.best_trial.number} of study {study}:")
    best = load_config(out / "best_config.yaml")
    assert best.training.learning_rate == pytest.approx(s.best_params["training.learning_rate"])
    assert (out / "trials.csv").read_text().count("\n") == TRIALS + 1


def test_two_workers_share_a_journal(tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    out = tmp_path / "out"
    # no --storage: with --workers 2 the default is the journal file in the output folder
    rc = main(["tune", "--config", str(_config(tmp_path)), "--trials", str(TRIALS), "--workers", "2",
               "--study", "j", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    journal = out / "tune.journal"
    assert journal.stat().st_size > 0 and not (out / "tune.db").exists()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    _check_study(optuna, storage, "j", out, printed)

    # --trials 0: nothing runs, the report of the stored study is written again, from the journal
    (out / "best_config.yaml").unlink()
    assert main(["tune", "--config", str(_config(tmp_path)), "--trials", "0", "--storage", f"journal://{journal}",
                 "--study", "j", "--out", str(out)]) == 0
    assert f"study j: {TRIALS} trial(s)" in capsys.readouterr().out and (out / "best_config.yaml").exists()
    assert len(optuna.load_study(study_name="j", storage=storage).trials) == TRIALS


@pytest.mark.parametrize("storage, words", [
    ("sqlite:///{tmp}/t.db", ["--storage sqlite:///", "--workers 2", "journal", "postgresql://"]),
    ("redis://localhost/0", ["--storage redis://localhost/0", "unknown scheme 'redis'", "journal:///"]),
    ("tune.db", ["--storage tune.db", "not a storage URL"]),
    ("journal://rel/t.log", ["--storage journal://rel/t.log", "absolute path"]),
    ("journal:///{tmp}/missing/t.log", ["--storage journal:///", "missing", "does not exist"]),
    ("mysql://u:secret@127.0.0.1/db", ["--storage mysql://u:***@127.0.0.1/db", "mysqlclient"]),
])
def test_bad_storage_is_one_line_exit_2(tmp_path, capsys, storage, words):
    storage = storage.replace("/{tmp}", str(tmp_path))
    rc = main(["tune", "--config", str(_config(tmp_path)), "--trials", "2", "--workers", "2",
               "--storage", storage, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert all(w in err for w in words), err
    assert "secret" not in err
    assert not list((tmp_path / "out").glob("trial-*"))


def test_a_sqlite_file_in_a_missing_folder_is_named(tmp_path, capsys):
    """SQLite said only "unable to open database file" (configs/tune_quickstart.yaml's sqlite:///runs/tune.db
    on a checkout without runs/)."""
    rc = main(["tune", "--config", str(_config(tmp_path)), "--trials", "1", "--storage",
               f"sqlite:///{tmp_path}/missing/t.db", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "missing does not exist" in err, err


def test_workers_that_fail_are_one_line_exit_2(tmp_path, capsys):
    """Every worker stops on a user error before any trial completes (here a data folder that does
    not exist): the command exits 2 with one line carrying the workers' error, not 0 with an empty report."""
    cfg = dict(TINY, data={**TINY["data"], "data_dir": str(tmp_path / "no-such-data")})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "2", "--workers", "2",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("hftraining: error: tune --workers 2: 2 of 2 worker(s) failed") and "no trial completed" in line
    assert f"{tmp_path / 'no-such-data'}: no such file or folder" in line
    assert not (tmp_path / "out" / "best_config.yaml").exists()


def test_sqlite_with_one_worker_and_report_of_a_missing_study(tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    db = f"sqlite:///{tmp_path / 't.db'}"
    cfg = _config(tmp_path)
    assert main(["tune", "--config", str(cfg), "--trials", "0", "--storage", db, "--study", "nope",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--trials 0" in err and "'nope'" in err and err.count("\n") == 1
    assert main(["tune", "--config", str(cfg), "--trials", "1", "--storage", db, "--study", "one",
                 "--out", str(tmp_path / "o")]) == 0
    assert len(optuna.load_study(study_name="one", storage=db).trials) == 1


def test_unreachable_postgresql_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("psycopg", reason="the tune extra's PostgreSQL driver (psycopg) is not installed")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["tune", "--config", str(_config(tmp_path)), "--trials", "1",
               "--storage", f"postgresql://u:secret@127.0.0.1:{port}/db?connect_timeout=5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--storage postgresql" in err and "secret" not in err, err


# ---------------------------------------------------------------------------------- a real PostgreSQL


def _pg_bin() -> Path | None:
    def version(p: str) -> int:
        v = Path(p).parent.parent.name  # /usr/lib/postgresql/<version>/bin/pg_ctl
        return int(v) if v.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _as_user() -> list[str]:
    """The command prefix that runs the server as an unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
    if shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing: cannot start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL server on a free localhost port (data and socket in a temporary folder)
    with one database; stopped and removed afterwards. → ``postgresql://postgres@127.0.0.1:PORT/tune``"""
    pytest.importorskip("psycopg", reason="the tune extra's PostgreSQL driver (psycopg) is not installed")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; .ci/run installs them)")
    as_user = _as_user()
    # not under pytest's tmp_path: its parents are private to root, and a socket path must stay short
    root = Path(tempfile.mkdtemp(prefix="hf-pg-"))
    if as_user:
        shutil.chown(root, "postgres")
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=60)

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "30", "-l", str(root / "server.log"), "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        started = True
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "tune")
        yield f"postgresql://postgres@127.0.0.1:{port}/tune"
    finally:
        if started:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_database(tmp_path, capsys, postgres_url):
    optuna = pytest.importorskip("optuna")
    out = tmp_path / "out"
    rc = main(["tune", "--config", str(_config(tmp_path)), "--trials", str(TRIALS), "--workers", "2",
               "--storage", postgres_url, "--study", "pg", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert not (out / "tune.journal").exists()  # the trials went to the database
    storage = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    _check_study(optuna, storage, "pg", out, printed)


@pytest.mark.slow  # 10-20 s of subprocesses; runs with `-m slow`
def test_a_killed_worker_leaves_no_trial_running_forever(tmp_path):
    """SIGKILL a ``tune --workers 2`` process group while its trials run, then tune again on the same
    journal: the dead workers' trials are marked failed (folder marked STALE.json) and counted."""
    optuna = pytest.importorskip("optuna")
    cfg = dict(TINY)
    # trials far longer than the wait for the second worker to start (its start can lag seconds behind)
    cfg["training"] = {**TINY["training"], "max_steps": 100_000, "logging_steps": 1000}
    cfg["evaluation"] = {**TINY["evaluation"], "eval_steps": 50_000}
    cfg["tune"] = {**TINY["tune"], "heartbeat_seconds": 0.5, "stale_after_seconds": 3}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out, journal = tmp_path / "out", tmp_path / "tune.journal"
    argv = [sys.executable, "-m", "hftraining", "tune", "--config", str(path), "--trials", "2", "--workers", "2",
            "--storage", f"journal://{journal}", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("trial-*/train.log"))) < 2:  # both trials training
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    running = [t.number for t in optuna.load_study(study_name="storage", storage=storage).get_trials()
               if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) == 2, running  # what the killed workers left behind
    time.sleep(3.5)  # longer than tune.stale_after_seconds without a heartbeat
    cfg["training"] = TINY["training"]
    path.write_text(yaml.safe_dump(cfg))
    again = subprocess.run(argv[:6] + ["--trials", "1", "--storage", f"journal://{journal}", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    study = optuna.load_study(study_name="storage", storage=storage)
    states = {t.number: t.state.name for t in study.get_trials()}
    assert all(states[n] == "FAIL" for n in running) and list(states.values()).count("COMPLETE") == 1, states
    assert "3 trial(s) — 1 complete, 0 pruned, 2 fail (2 of them stale: their worker died)" in again.stdout
    for n in running:
        assert "worker died" in (out / f"trial-{n:04d}" / "STALE.json").read_text()
