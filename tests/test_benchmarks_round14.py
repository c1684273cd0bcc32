"""The benchmark scripts time what their printed figures say, and refuse a bad flag in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hftraining.train.trainer import Trainer

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_gpu  # noqa: E402
import bench_trainer  # noqa: E402
import zoo_quickstart  # noqa: E402
from hftraining.data.pipeline import prepare  # noqa: E402

TINY = ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "data.symbols=[AEM, WPM]"]


@pytest.fixture(scope="module")
def data():
    return prepare(bench_trainer.config(TINY, 2, "unused").data)


def _trainer_fit(data, tmp_path):
    return bench_trainer.time_trainer(bench_trainer.config(TINY, 2, str(tmp_path / "run")), data)


def _gpu_fit(data, tmp_path):
    return bench_gpu.time_trainer(bench_gpu.config(TINY, 8, 1, 2, "cpu", "none", str(tmp_path / "run")), data, 2)


def _zoo_fit(data, tmp_path):
    return zoo_quickstart.run("transformer", "adamw", 2, data, str(tmp_path / "run"),
                              extra=("model.hidden_size=16", "model.num_heads=2", "model.num_layers=1"))


@pytest.mark.parametrize("fit", [_trainer_fit, _gpu_fit, _zoo_fit], ids=["bench_trainer", "bench_gpu", "zoo_quickstart"])
def test_a_benchmarked_fit_scores_no_validation_window(fit, data, tmp_path, monkeypatch):
    """The Trainer's samples/s (bench_trainer, bench_gpu) are its training steps against a hand loop
    that validates nothing: the end of ``fit`` must not score the validation windows to check the
    final weights (a pass over 1,650 windows took 17 s of a 20 s timing of the tiny model), in the
    first run on the prepared data or any later one."""
    scored = []
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, ws, *a, **k: scored.append(len(ws)) or evaluate(self, ws, *a, **k))
    n_val = len(data.val)
    for _ in range(2):  # the runs of a benchmark share one prepared data: each is timed alike
        fit(data, tmp_path)
        assert scored == []
        assert len(data.val) == n_val > 0  # the caller's data keep their validation split


def _run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


SLOW = pytest.mark.slow  # a process each (about 4 s): one case of each flag in the default suite


@pytest.mark.parametrize("args,says", [
    (["--paths", "trainr:none"], "--paths: 'trainr:none': 'trainr' is not one of trainer, hf, bare"),
    pytest.param(["--paths", "trainer:max-autotun@1024x1"],
                 "--paths: 'max-autotun' in 'trainer:max-autotun@1024x1' is not one of", marks=SLOW),
    pytest.param(["--paths", "hf:reduce-overhead"],
                 "--paths: 'reduce-overhead' in 'hf:reduce-overhead' is not one of none, torch_compile", marks=SLOW),
    (["--profile", "1024:default"], "--profile: '1024' is not BATCHxACCUMULATION"),
    pytest.param(["--profile", "1024x1:defualt"], "--profile: 'defualt' in '1024x1:defualt' is not one of", marks=SLOW),
    (["--modes", "none,defualt"], "--modes: 'defualt' is not one of"),
])
def test_bench_gpu_refuses_a_misspelt_path_or_mode_before_measuring(args, says):
    """gpu_session.sh runs bench_gpu.py once on a GPU with minutes to spare: a misspelt path, mode or
    configuration is a one-line usage error (exit 2) before the matmul peak or any data, not a
    traceback or a table row that says "failed" after minutes of the other paths."""
    proc = _run("bench_gpu.py", "--device", "cpu", "--no-hf", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # nothing measured
    assert "Traceback" not in proc.stderr and says in proc.stderr.splitlines()[-1], proc.stderr


def test_bench_optim_refuses_an_unknown_optimizer_name():
    """``--only`` with a name that is not an optimizer timed nothing but fused AdamW, silently."""
    proc = _run("bench_optim.py", "--only", "gpro", "lionn")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and "--only: 'lionn'" in proc.stderr.splitlines()[-1], proc.stderr


def test_gpu_session_checks_select_every_cuda_check(tmp_path):
    """``gpu_session.sh checks`` runs once on a GPU machine: its pytest selection, collected as a
    machine with CUDA would collect it, holds every CUDA check the README lists as not yet run on a
    GPU (the compiled and graphed step against eager, dropout under reduce-overhead, resume, no host
    synchronisation, device batches, out of memory, fp16 resume) and no check a typo dropped."""
    import re
    import shlex

    line = next(line for line in (ROOT / "benchmarks" / "gpu_session.sh").read_text().splitlines() if "-m pytest" in line)
    words = shlex.split(line.split("-rfE")[0].rstrip(" \\"))  # the options after it are on the next line
    selection = words[words.index("pytest") + 1:]  # -q -m "not slow" tests/test_devices.py -k "..."
    (tmp_path / "as_if_cuda.py").write_text("import torch\ntorch.cuda.is_available = lambda: True\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "as_if_cuda", "--collect-only", "-p", "no:cacheprovider",
                           *selection], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = set(re.findall(r"^tests/test_devices\.py::(\S+)$", proc.stdout, re.M))
    want = {f"test_{name}[cuda-{mode}]" for name in ("compiled_step_equals_eager", "compiled_dropout_is_random_per_micro_batch",
                                                     "compiled_resume_is_bit_exact") for mode in ("default", "reduce-overhead")}
    want |= {f"test_training_on_device_lowers_the_loss_and_loads_on_cpu[cuda-{p}]" for p in ("fp32", "bf16", "fp16")}
    want |= {"test_fp16_resume_is_bit_exact", "test_out_of_memory_names_the_batch_size",
             "test_cuda_batches_equal_the_host_batches[True]", "test_cuda_batches_equal_the_host_batches[False]",
             "test_gpro_default_path_equals_foreach[cuda]"}
    assert want <= ids, sorted(want - ids)
    assert sum(i.startswith("test_steady_state_steps_never_synchronise_the_host[") for i in ids) == 4, sorted(ids)
    assert not any("cpu" in i.split("[")[-1] for i in ids if "[" in i), sorted(ids)  # the CPU runs them elsewhere
    loaded = re.findall(r"^tests/test_checkpoint_round18\.py::(\S+)$", proc.stdout, re.M)
    assert sum(i.startswith("test_from_pretrained_on_cuda_returns_the_model_on_the_gpu[") for i in loaded) == 3, loaded
