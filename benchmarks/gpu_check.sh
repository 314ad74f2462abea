#!/usr/bin/env bash
# One-command GPU check for a session that is lent a GPU (about 15 minutes of device time, one call).
#
#   bash benchmarks/gpu_check.sh            # from a checkout; results in ${OUT:-benchmarks/results/gpu}
#
# Steps (each under its own time limit; a failing step is recorded and the next one still runs):
#   1. GPU and library versions (nvidia-smi, torch.cuda)                -> env.txt
#   2. TORCH_DEVICE=cuda pytest of the whole suite: every test that takes the `device` fixture runs on the GPU;
#      the step fails if a test fails or if none used the GPU          -> pytest.xml, device_tests.json
#   3. benchmarks/pretrain_throughput.py --device cuda (bf16 autocast)   -> pretrain_throughput.json
#      (benchmarks/hypernet_overhead.py has no device option, so it is not run here)
#   4. a 50-step python -m vision.pretrain smoke run on CUDA with bf16, then core.load_encoder on CUDA
#                                                                         -> gpu-pretrain/{config.json,metrics.jsonl}
# A summary of every step (status, seconds) goes to gpu_check.json; the exit status is 1 if any step failed.
# About 4-6 minutes on one H100 (budget: under 8; the step limits add up to 11 minutes at worst).
#
# On this workplace's lent GPU machine (no package index; python3 holds torch, timm, pyyaml but not pydantic),
# carry pydantic's wheels (see benchmarks/README.md) and run:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT_DIR"
if [[ -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
STARTED=$(date +%s)
declare -a RESULTS=()
FAILED=0

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under a time limit, record its status and duration.
step() {
    local name=$1 limit=$2
    shift 2
    local began status
    began=$(date +%s)
    echo
    echo "=== [$name] (limit ${limit}s, $(($(date +%s) - STARTED))s elapsed) $*"
    if timeout --kill-after=10 "$limit" "$@"; then status=0; else status=$?; fi
    local seconds=$(($(date +%s) - began))
    if [[ $status -ne 0 ]]; then
        FAILED=1
        echo "=== [$name] FAILED with status $status after ${seconds}s"
    else
        echo "=== [$name] ok in ${seconds}s"
    fi
    RESULTS+=("{\"step\": \"$name\", \"status\": $status, \"seconds\": $seconds}")
}

# Offline machines: wheels carried in .whl/ (e.g. pydantic and its three dependencies, which the lent GPU
# image lacks) are installed first, without an index, into /tmp/site.
if compgen -G ".whl/*.whl" >/dev/null; then
    echo "=== installing the carried wheels in .whl/ into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Install the project only when it cannot be imported from this checkout (needs a package index).
if ! "$PYTHON" -c "import core" >/dev/null 2>&1; then
    echo "=== import core failed: installing the project (pip install -e .[dev])"
    "$PYTHON" -m pip install -e ".[dev]" -q
fi
"$PYTHON" -c "import core.pretrain.engine, vision.pretrain" || {
    echo "gpu_check: the project does not import (see above); carry the missing wheels in .whl/" >&2
    exit 1
}

environment() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PYTHON" - <<'EOF'
import platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
print(f"cuda available: {torch.cuda.is_available()}; devices: {torch.cuda.device_count()}; "
      f"bf16: {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}")
assert torch.cuda.is_available(), "torch does not see a CUDA device"
print(f"device 0: {torch.cuda.get_device_name(0)}")
EOF
}
export -f environment
export PYTHON OUT_DIR
step environment 60 bash -c 'set -euo pipefail; environment | tee "$OUT_DIR/env.txt"'

cuda_tests() {
    TORCH_DEVICE=cuda DEVICE_TESTS_REPORT="$OUT_DIR/device_tests.json" "$PYTHON" -m pytest -q tests \
        --junitxml "$OUT_DIR/pytest.xml" -p no:cacheprovider
    "$PYTHON" - "$OUT_DIR/device_tests.json" <<'EOF'
import json
import sys
report = json.load(open(sys.argv[1]))
count = len(report["tests"])
print(f"{count} tests ran on {report['device']}")
sys.exit(0 if count and report["device"].startswith("cuda") else 1)
EOF
}
export -f cuda_tests
step pytest 300 bash -c 'set -euo pipefail; cuda_tests'

step pretrain_throughput 240 "$PYTHON" benchmarks/pretrain_throughput.py --device cuda --amp bf16 \
    --workers 2 8 --aug-batches 64 --model-warmup 5 --model-rounds 20 --warmup 10 --steps 60 \
    --output "$OUT_DIR/pretrain_throughput.json"

smoke() {
    local run_dir="$OUT_DIR/gpu-pretrain"
    "$PYTHON" -m vision.pretrain --run.steps 50 --run.device cuda --run.amp bf16 --run.output "$run_dir" \
        --run.resume false --run.progress false
    "$PYTHON" - "$run_dir" <<'EOF'
import json
import sys
import torch
from core import load_encoder
run = sys.argv[1]
encoder = load_encoder(run, map_location="cuda")
x = torch.rand(4, 3, 32, 32, device="cuda")
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    features = encoder(x, encoder.space.descriptors[0].to("cuda"))
assert torch.isfinite(features).all(), "non-finite features"
last = [json.loads(line) for line in open(f"{run}/metrics.jsonl")][-1]
print(f"load_encoder on cuda ok: features {tuple(features.shape)}; last metrics {last}")
EOF
    rm -f "$run_dir/checkpoint.pt"  # hundreds of MB; config.json and metrics.jsonl are kept
}
export -f smoke
step pretrain_smoke 180 bash -c 'set -euo pipefail; smoke'

TOTAL=$(($(date +%s) - STARTED))
{
    echo "{"
    echo "  \"date\": \"$(date -Iseconds)\","
    echo "  \"total_seconds\": $TOTAL,"
    echo "  \"failed\": $FAILED,"
    echo "  \"steps\": ["
    for i in "${!RESULTS[@]}"; do
        sep=","
        [[ $i -eq $((${#RESULTS[@]} - 1)) ]] && sep=""
        echo "    ${RESULTS[$i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT_DIR/gpu_check.json"
cat "$OUT_DIR/gpu_check.json"
echo "gpu_check: total ${TOTAL}s; results in $OUT_DIR"
exit "$FAILED"
