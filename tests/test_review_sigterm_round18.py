"""What SIGTERM passes on to child processes while a command handles it as Ctrl-C: the workers the command
started, not a ``concurrent.futures`` pool's workers (the feature store's builds: one stopped while it sent its
result back left the pool's shutdown waiting for the rest for ever, and the command hung until SIGKILL), nor
processes the program calling the CLI's ``main`` from Python had started itself. Each case runs in a process of
its own, which a hang cannot stop the tests with."""

import subprocess
import sys
import textwrap

ENV_CODE = "import os; os.environ['OMP_NUM_THREADS'] = '1'\n"


def _run(code: str, tmp_path, limit: float = 30) -> subprocess.CompletedProcess:
    script = tmp_path / "prog.py"
    script.write_text(ENV_CODE + textwrap.dedent(code))
    try:
        return subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"still running {limit} s after SIGTERM (hung): {e.stderr}") from None


POOL = """
import os, signal, sys, time
from pathlib import Path


def big(marker):
    Path(marker).write_text("sending")
    return b"x" * 60_000_000  # sent back in pieces while the parent keeps the reading thread waiting


if __name__ == "__main__":
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from hftraining.train.logging import Terminated, sigterm_as_interrupt

    marker = Path(sys.argv[1]) / "marker"
    start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                future = pool.submit(big, str(marker))
                while not marker.exists():
                    time.sleep(0.01)
                sent = time.monotonic() + 0.5
                while time.monotonic() < sent:  # busy: the pool's reader gets a slice of time now and then
                    pass
                os.kill(os.getpid(), signal.SIGTERM)
                while True:
                    pass
    except Terminated:
        print("terminated", round(time.monotonic() - start, 1))
"""


def test_sigterm_while_a_pool_worker_sends_its_result_ends_the_command_without_a_hang(tmp_path):
    """The feature store builds in a process pool (``data.num_workers``); a SIGTERM that reached a worker as it
    sent a unit's rows back hung the command: the pool waited for the rest of the result for ever."""
    done = _run(POOL, tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("terminated"), done.stderr[-3000:]


HOST = """
import multiprocessing, os, signal, sys, time

from hftraining.train.logging import Terminated, sigterm_as_interrupt


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    mine = ctx.Process(target=time.sleep, args=(60,))  # the calling program's own worker
    mine.start()
    try:
        with sigterm_as_interrupt():
            ours = ctx.Process(target=time.sleep, args=(60,))  # one the command starts
            ours.start()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
    except Terminated:
        pass
    ours.join(10)
    time.sleep(0.5)
    print("program's own:", "alive" if mine.is_alive() else f"ended {mine.exitcode}",
          "| command's:", "alive" if ours.is_alive() else f"ended {ours.exitcode}")
    for p in (mine, ours):
        p.kill()
        p.join()
"""


def test_sigterm_is_passed_on_to_the_commands_workers_not_to_the_calling_programs(tmp_path):
    """``hftraining.cli.main`` called from a program that runs worker processes of its own: the SIGTERM that
    stops the command reaches the workers the command started, and leaves the program's running."""
    done = _run(HOST, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "program's own: alive | command's: ended -15", done.stdout
