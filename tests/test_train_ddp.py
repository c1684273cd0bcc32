"""Two CPU processes under torchrun (gloo) train exactly like one process with the same global batch.

SGD keeps the comparison meaningful at 1e-6: Adam's first steps divide each gradient by its own
magnitude, so a last-bit difference in a near-zero gradient (summation order across ranks) can
flip a whole learning-rate-sized update; SGD's update is linear in the averaged gradient."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from conftest import tiny  # noqa: E402

COMMON = tiny(
    None, "training.max_steps=8", "training.save_steps=4", "training.logging_steps=2",
    "evaluation.eval_steps=4", "training.optimizer=sgd", "training.learning_rate=0.01", "training.device=cpu",
)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _run([sys.executable, "-m", "hftraining", "train", *COMMON, "data.batch_size=16", f"output.output_dir={tmp / 'one'}"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hftraining",
          "train", *COMMON, "data.batch_size=8", f"output.output_dir={tmp / 'two'}"])
    return tmp / "one", tmp / "two"


def test_two_processes_equal_one_with_same_global_batch(runs):
    one, two = (load_file(str(r / "final" / "model.safetensors")) for r in runs)
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6, msg=k)
    assert not all(torch.equal(one[k], load_file(str(runs[0] / "checkpoints" / "step-00000004" / "model.safetensors"))[k])
                   for k in one)  # the parameters did move between the checkpoints


def test_validation_metrics_identical_across_world_sizes(runs):
    import json

    def evals(run):
        return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if "eval_mse" in l]

    a, b = evals(runs[0]), evals(runs[1])
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8]
    for ra, rb in zip(a, b):
        assert rb["eval_mse"] == pytest.approx(ra["eval_mse"], rel=1e-5)


def test_ddp_checkpoint_resumes_in_one_process(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    shutil.rmtree(run / "checkpoints" / "step-00000008")
    shutil.rmtree(run / "final")
    proc = _run([sys.executable, "-m", "hftraining", "train", *COMMON, "data.batch_size=16",
                 f"output.output_dir={run}", "--resume"])
    assert "resumed from" in proc.stderr and "step 4" in proc.stderr
    got = load_file(str(run / "final" / "model.safetensors"))
    ref = load_file(str(runs[0] / "final" / "model.safetensors"))
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow  # torchrun's re-rendezvous after a SIGKILL can take several attempts on a loaded machine
def test_torchrun_restarts_a_killed_worker_from_the_latest_checkpoint(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=3",
           "-m", "hftraining", "train", *COMMON, "training.max_steps=400", "training.save_steps=5", "training.logging_steps=50",
           # a restarted group that cannot form fails within a minute and torchrun restarts it again
           "training.ddp_timeout=60", "data.batch_size=8", f"output.output_dir={run}", "--resume"]
    log_file = open(tmp_path / "torchrun.log", "w")  # a file, not a pipe: a full pipe would block the workers
    # its own session, so that whatever happens the whole process tree is killed at the end
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=log_file, env=_env(), start_new_session=True)
    try:
        target = run / "checkpoints" / "step-00000010" / "trainer_state.json"
        deadline = time.time() + 180
        while not target.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert workers, "no worker processes found"
        os.kill(int(workers[-1]), signal.SIGKILL)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log_file.close()
    assert proc.returncode == 0, (tmp_path / "torchrun.log").read_text()[-3000:]
    log = (run / "train.log").read_text()
    assert "resumed from" in log
    assert (run / "final" / "model.safetensors").exists()
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps[-1] == 400 and steps == sorted(set(steps))


def test_distributed_setup_errors_name_what_is_wrong(monkeypatch):
    from hftraining.core.errors import ConfigError
    from hftraining.train.distributed import init_distributed

    with pytest.raises(ConfigError, match="training.ddp_timeout"):
        init_distributed("cpu", 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT not set"):
        init_distributed("cpu", 60)


@pytest.mark.slow  # over 10 s here; `make test-all` runs it
def test_date_batches_under_two_processes_equal_one(tmp_path):
    """data.batching=dates with the IC loss: two ranks of one date each train exactly like one
    process of two dates (every date of these four symbols holds all four, so each date weighs the
    same in the per-rank mean and in the one-process mean; with two symbols a Pearson IC is ±1 and
    has no gradient). One process of one date per batch ends elsewhere (by 0.06 here)."""
    cs = [*COMMON, "data.target=cs_rank", "data.batching=dates", "model.loss=ic", "training.save_steps=0",
          "training.learning_rate=0.1", "data.symbols=[AEM, WPM, NIO, PDD]"]
    _run([sys.executable, "-m", "hftraining", "train", *cs, "data.dates_per_batch=2", f"output.output_dir={tmp_path / 'one'}"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hftraining",
          "train", *cs, "data.dates_per_batch=1", f"output.output_dir={tmp_path / 'two'}"])
    _run([sys.executable, "-m", "hftraining", "train", *cs, "data.dates_per_batch=1", f"output.output_dir={tmp_path / 'half'}"])
    one, two, half = (load_file(str(tmp_path / r / "final" / "model.safetensors")) for r in ("one", "two", "half"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6, msg=k)
    assert max(float((half[k] - one[k]).abs().max()) for k in one) > 1e-3  # the comparison can tell batches apart


@pytest.fixture(scope="module")
def two_rank_resume(tmp_path_factory):
    """One 2-rank run of 8 steps and the same run resumed from its step-4 checkpoint, shared by the two
    tests below: one date per rank and batch, dates with one symbol (before RKLB listed) or two, so the
    ranks' batches, random draws and log windows differ; dropout and noise augmentation draw from every
    rank's RNGs, and a record every 3 steps puts the step-4 checkpoint inside a log window.
    Returns (the run that went on, the resumed run, the resumed run's stderr)."""
    tmp = tmp_path_factory.mktemp("ddp-resume")
    cfg = [*COMMON, "model.dropout=0.1", "data.batching=dates", "data.dates_per_batch=1", "data.augment_noise_std=0.5",
           "data.symbols=[AEM, RKLB]", "evaluation.eval_steps=0", "training.logging_steps=3"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hftraining",
                "train", *cfg]
    full, resumed = tmp / "full", tmp / "resumed"
    _run([*torchrun, f"output.output_dir={full}"])
    resumed.mkdir()
    shutil.copytree(full / "checkpoints" / "step-00000004", resumed / "checkpoints" / "step-00000004")
    proc = _run([*torchrun, f"output.output_dir={resumed}", "--resume"])
    return full, resumed, proc.stderr


@pytest.mark.slow  # the shared 2-rank run and its resume: over 30 s here; `make test-all` runs it
def test_two_process_resume_continues_every_rank_s_random_streams(two_rank_resume):
    """A 2-rank run resumed from its step-4 checkpoint ends with the weights of the 2-rank run that
    went on, bit for bit, with dropout and noise augmentation drawing from every rank's RNGs. The
    ranks' streams differ: one date per rank and batch, dates with one symbol (before RKLB listed) or
    two, so the noise draws as many numbers as the rank's batch holds. Restoring rank 0's states on
    every rank (what checkpoints did before they held one per rank) ends elsewhere."""
    full, resumed, stderr = two_rank_resume
    assert "resumed from" in stderr and "step 4" in stderr
    assert (resumed / "final" / "model.safetensors").read_bytes() == (full / "final" / "model.safetensors").read_bytes()
    saved = full / "checkpoints" / "step-00000004"
    assert json.loads((saved / "trainer_state.json").read_text())["rng"]["world_size"] == 2
    rng = load_file(str(saved / "rng.safetensors"))
    assert not torch.equal(rng["rank0.torch"], rng["rank1.torch"])  # the ranks' streams had parted


def test_each_rank_draws_its_own_dropout_masks(runs):
    """With one seed on every rank, equal batches drew equal dropout masks at the same positions on
    every rank (their random states stayed equal); each rank now draws from its own stream. The
    two-process run's ranks draw alike (equal batch sizes, no dropout), so only their seeds part them."""
    rng = load_file(str(runs[1] / "checkpoints" / "step-00000004" / "rng.safetensors"))
    assert not torch.equal(rng["rank0.torch"], rng["rank1.torch"])


@pytest.mark.slow  # 10-20 s of subprocesses; runs with `-m slow`
def test_logged_loss_parts_are_averaged_over_ranks_like_the_loss(tmp_path):
    """The ``loss_<part>`` values logged under DDP were rank 0's alone while ``loss`` was averaged over the
    ranks: two ranks of one date each (the IC loss and a quantile head) now log, every step, the parts of one
    process of both dates, and their weighted sum is the logged loss."""
    from conftest import one_and_two_processes

    from hftraining.core.jsonio import read_jsonl

    cs = [*COMMON, "data.target=cs_rank", "data.batching=dates", "model.loss=ic", "training.save_steps=0",
          "evaluation.eval_steps=0", "training.logging_steps=1", "training.max_steps=4", "training.learning_rate=0.1",
          "data.symbols=[AEM, WPM, NIO, PDD]", "model.quantiles=[0.25, 0.5, 0.75]", "model.loss_weights={quantile: 0.5}"]
    one_and_two_processes(tmp_path, cs)
    one, two = ([r for r in read_jsonl(tmp_path / name / "metrics.jsonl") if "loss" in r] for name in ("one", "two"))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        for key in ("loss", "loss_ic", "loss_quantile"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (b["step"], key)
        assert b["loss_ic"] + 0.5 * b["loss_quantile"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-9)


def test_every_logged_record_s_loss_is_the_weighted_sum_of_its_logged_parts(tmp_path):
    """A record summarises ``training.logging_steps`` steps: its loss was their mean but its parts were the
    last step's alone, so ``loss_ic + 0.5 · loss_quantile`` missed the logged loss. Both are the mean now."""
    from hftraining.cli import main
    from hftraining.core.jsonio import read_jsonl

    cs = [*COMMON, "data.target=cs_rank", "data.batching=dates", "model.loss=ic", "training.save_steps=0",
          "evaluation.eval_steps=0", "training.logging_steps=3", "training.max_steps=6", "training.learning_rate=0.1",
          "data.symbols=[AEM, WPM, NIO, PDD]", "model.quantiles=[0.25, 0.5, 0.75]", "model.loss_weights={quantile: 0.5}",
          "evaluation.report=false", f"output.output_dir={tmp_path / 'run'}"]
    assert main(["train", *cs]) == 0
    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [3, 6]
    for r in records:
        assert r["loss_ic"] + 0.5 * r["loss_quantile"] == pytest.approx(r["loss"], rel=1e-6, abs=1e-9), r["step"]


@pytest.mark.slow  # the shared 2-rank run and its resume: over 30 s here; `make test-all` runs it
def test_two_process_resume_writes_the_uninterrupted_run_s_next_training_record(two_rank_resume):
    """A checkpoint inside a log window (logging every 3 steps, saving every 4) holds every rank's pending
    steps: the 2-rank run resumed from step 4 logs, at steps 6 and 8, exactly the records of the 2-rank run
    that went on. The ranks' windows differ (one date per rank and batch, dates of one symbol or two); every
    rank restoring rank 0's window (what checkpoints held before) averaged rank 0's step-4 loss in rank 1's
    place, so the step-6 loss differed."""
    from hftraining.core.jsonio import read_jsonl

    full, resumed, stderr = two_rank_resume
    assert "resumed from" in stderr and "step 4" in stderr
    saved = full / "checkpoints" / "step-00000004"

    def records(run):
        return {r["step"]: {k: v for k, v in r.items() if k != "samples_per_second"}
                for r in read_jsonl(run / "metrics.jsonl") if "loss" in r}

    want, got = records(full), records(resumed)
    assert sorted(want) == [3, 6, 8] and sorted(got) == [6, 8]
    for step in (6, 8):
        assert got[step] == want[step], step
    windows = json.loads((saved / "trainer_state.json").read_text())["log_window"]["ranks"]
    assert [len(w["losses"]) for w in windows] == [1, 1] and windows[0] != windows[1]  # step 4, each rank's own


@pytest.mark.slow  # 10-20 s of subprocesses; runs with `-m slow`
def test_two_process_checkpoint_resumed_in_one_process_logs_the_two_process_record(tmp_path):
    """At another world size no rank's own window continues: a 2-rank checkpoint inside a log window,
    resumed in one process (two dates per batch, the same global batch), logs at step 6 the record of the
    2-rank run that went on, loss and parts (their mean over the saved ranks' windows), where rank 0's
    window alone (what one process restored before) gave another loss."""
    from hftraining.core.jsonio import read_jsonl

    cs = [*COMMON, "data.target=cs_rank", "data.batching=dates", "model.loss=ic", "evaluation.eval_steps=0",
          "training.logging_steps=3", "training.learning_rate=0.1", "data.symbols=[AEM, WPM, NIO, PDD]",
          "model.quantiles=[0.25, 0.5, 0.75]", "model.loss_weights={quantile: 0.5}"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hftraining",
          "train", *cs, "data.dates_per_batch=1", f"output.output_dir={full}"])
    resumed.mkdir()
    shutil.copytree(full / "checkpoints" / "step-00000004", resumed / "checkpoints" / "step-00000004")
    _run([sys.executable, "-m", "hftraining", "train", *cs, "data.dates_per_batch=2", f"output.output_dir={resumed}",
          "--resume"])
    want, got = ({r["step"]: r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r} for run in (full, resumed))
    assert sorted(want) == [3, 6, 8] and sorted(got) == [6, 8]
    for step in (6, 8):
        for key in ("loss", "loss_ic", "loss_quantile", "grad_norm"):
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-5, abs=1e-7), (step, key)


_LEAVE_GROUP = '''
import json, sys, weakref
from pathlib import Path

from hftraining.core.config import load_config
from hftraining.train.distributed import cleanup, init_distributed
from hftraining.train.runner import build_trainer


def threads():
    return sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))


out, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
info = init_distributed("cpu", 120)
trainer = build_trainer(load_config(None, overrides), info=info)
trainer.fit()
during, ddp = threads(), weakref.ref(trainer.ddp)
trainer.close()  # then the group, the trainer still referenced: as training_run leaves a run
cleanup(info)
(out / f"rank{info.rank}.json").write_text(json.dumps({"during": during, "after": threads(), "ddp": ddp() is not None}))
'''


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the threads' names from /proc")
def test_leaving_the_process_group_ends_its_gloo_threads(tmp_path):
    """Each rank's Gloo worker and TCP threads end when the run closes its trainer and leaves the process
    group. The group outlived destroy_process_group, held by the DDP wrapper (kept by the trainer's
    compiled-or-not forward closure after close) and by torch.distributed.nn's default arguments (bound
    to the group when DDP's constructor first imported it): its threads ran on into the interpreter's
    exit, which tore them down with Python half finalized, where a rank was seen to abort (exit -6)."""
    script = tmp_path / "leave_group.py"
    script.write_text(_LEAVE_GROUP)
    overrides = tiny(tmp_path / "run", "training.max_steps=1", "training.save_steps=0", "evaluation.eval_steps=0",
                     "training.device=cpu")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
          str(tmp_path), json.dumps(overrides)])
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert any("gloo" in name for name in seen["during"]), seen["during"]  # the check sees Gloo's threads
        assert not seen["ddp"], f"rank {rank}: the closed trainer still holds the DDP wrapper"
        assert not [name for name in seen["after"] if "gloo" in name], (rank, seen["after"])


def test_a_run_whose_closing_fails_still_leaves_the_process_group(tmp_path, monkeypatch):
    """Closing the run's logger can fail (a full disk while the tracking files are written): the error
    still reaches the user, and the run still leaves the process group it joined, rather than leaving
    the group to the interpreter's exit."""
    import hftraining.train.runner as runner
    from hftraining.core.config import load_config
    from hftraining.train.logging import RunLogger

    close = RunLogger.close

    def close_then_fail(self):
        close(self)
        raise OSError(28, "No space left on device")

    left: list = []
    monkeypatch.setattr(RunLogger, "close", close_then_fail)
    monkeypatch.setattr(runner, "cleanup", left.append)
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=1", "training.save_steps=0",
                                 "evaluation.eval_steps=0", "training.device=cpu"))
    with pytest.raises(OSError, match="No space left"):
        with runner.training_run(cfg):
            pass
    assert len(left) == 1


@pytest.mark.slow
def test_seeds_under_torchrun_form_a_group_per_seed(tmp_path):
    """``train --seeds 2`` under torchrun forms one process group per seed in each process; the second
    read the first group's stale Gloo addresses from the same store keys ("Connection refused")."""
    out = tmp_path / "seeds"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hftraining",
          "train", *tiny(None, "training.max_steps=4", "training.save_steps=4", "evaluation.eval_steps=4",
                         "training.optimizer=sgd", "training.device=cpu", "training.ddp_timeout=60", "evaluation.report=false"),
          f"output.output_dir={out}", "--seeds", "2"])
    assert (out / "seed-0" / "final").is_dir() and (out / "seed-1" / "final").is_dir() and (out / "ensemble").is_dir()
