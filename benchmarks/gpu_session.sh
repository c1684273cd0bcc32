#!/usr/bin/env bash
# The project's GPU checks as one prepared device run, written for a session with a few device minutes.
# From the repository root of a GPU machine (its outputs go to $OUT, or ./gpu-out):
#
#   bash benchmarks/gpu_session.sh checks   # <= 9.5 min: the CUDA tests, profiles of a 1024-window step and
#                                           # of the seed config's, the Trainer under max-autotune at 1024 x 1
#   bash benchmarks/gpu_session.sh bench    # <= 9 min: bench_gpu.py's whole table in one run (--budget)
#
# Wheels the device image lacks (ta-lib, pytorch_optimizer, ...) are installed from .whl/ when it is
# there: run ../shared/tools/device-wheels first and carry .whl to the device. Each step has its own
# time limit, so one that hangs leaves the others their figures, and the part ends within LIMIT
# seconds (default 580). A smoke run on a CPU machine:
#   PY=.venv/bin/python WHEELS=0 OUT=/tmp/gpu-out bash benchmarks/gpu_session.sh checks
set -u
part=${1:-checks}
out=${OUT:-gpu-out}
py=${PY:-python3}
# each step gets its own limit or what is left of LIMIT (the device run's 600 s, less its start), so a
# slow wheel install or earlier step shortens the last step instead of the run being killed unfinished
limit=${LIMIT:-580}
left() { local l=$(( limit - SECONDS )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 1 ] && l=1; echo "$l"; }
# a step its limit stopped (timeout's status 124) says so, here and in its file: its output alone just ends, as if
# it had nothing more to say (a profile or a kernel search cut short looked like one that printed nothing)
said() { if [ "$1" = 124 ]; then echo "gpu_session.sh: stopped by its ${2} s limit: $3" | tee -a "$4"; fi; }
mkdir -p "$out"
if [ "${WHEELS:-1}" = 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$out/machine.txt"

case "$part" in
checks)
    # the compiled and CUDA-graphed step against eager (gradients, losses, dropout per micro-batch,
    # resume), no host synchronisation between logging steps, device batches, out of memory, fp16 resume
    s=$(left 150)
    timeout "$s" "$py" -m pytest -q -m "not slow" tests/test_devices.py tests/test_checkpoint_round18.py -k "cuda or steady_state or out_of_memory or fp16_resume" \
        -rfE --durations=10 2>&1 | tee "$out/tests.txt" | tail -25
    said "${PIPESTATUS[0]}" "$s" "the CUDA tests" "$out/tests.txt"
    # where a batch-1024 step's GPU time goes (default mode: kernels inside CUDA graphs are not attributed)
    s=$(left 120)
    timeout "$s" "$py" benchmarks/bench_gpu.py --profile 1024x1:default 2>&1 | grep -v USDT | tee "$out/profile.txt"
    said "${PIPESTATUS[0]}" "$s" "--profile 1024x1:default" "$out/profile.txt"
    # the seed config's kernels a step, eager (the bare loop: 719, 3.6 ms of GPU work in 22.7 ms)
    s=$(left 60)
    timeout "$s" "$py" benchmarks/bench_gpu.py --profile 32x4:none 2>&1 | grep -v USDT | tee -a "$out/profile.txt"
    said "${PIPESTATUS[0]}" "$s" "--profile 32x4:none" "$out/profile.txt"
    # max-autotune at 1024 x 1 (its kernel search takes minutes; reduce-overhead there: 23.1 micro-steps/s)
    s=$(left 230)
    timeout "$s" "$py" benchmarks/bench_gpu.py --paths "trainer:max-autotune@1024x1" 2>&1 | tee "$out/autotune.txt"
    said "${PIPESTATUS[0]}" "$s" "trainer:max-autotune@1024x1" "$out/autotune.txt"
    ;;
bench)
    s=$(left 570)
    timeout "$s" "$py" benchmarks/bench_gpu.py --budget "${BUDGET:-420}" 2>&1 | tee "$out/bench.txt"
    said "${PIPESTATUS[0]}" "$s" "bench_gpu.py --budget ${BUDGET:-420}" "$out/bench.txt"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh checks|bench" >&2
    exit 2
    ;;
esac
