#!/usr/bin/env bash
# One-command GPU check for a session that is lent a GPU (about 15 minutes of device time, one call).
#
#   bash benchmarks/gpu_check.sh            # from a checkout; results in ${OUT:-benchmarks/results/gpu}
#
# Steps, the tests first, then the most important numbers (each under its own time limit, cut to what is left of
# the total budget GPU_CHECK_BUDGET, default 480 s; a step that no longer fits is skipped; a failing step is
# recorded and the next one still runs):
#   1. GPU and library versions (nvidia-smi, torch.cuda)                -> env.txt
#   2. TORCH_DEVICE=cuda pytest of the whole suite: every test that takes the `device` fixture runs on the GPU;
#      the step fails if a test fails or if none used the GPU          -> pytest.xml, device_tests.json
#      This step is REQUIRED: it runs before the long benchmarks so that they cannot use up its budget, and a run
#      in which it did not run (budget, crash) or did not pass exits 1, its summary marking it "failed", never
#      "skipped".
#   3. python -m benchmarks.paper_width_step: paper-width Hyper-ResNet50 vs ResNet50, 224 px, batch 256, bf16, fused
#      AdamW, SimCLR step; step-time ratio, peak memory, breakdown, profile -> paper_width_step.json
#   4. the same for the audio pre-training step (FSD50K recipe: Hyper-ResNet18 width 64 / generator 32 vs
#      ResNet18, 128 mels x 157 frames, batch 128)                      -> paper_width_step_audio.json
#   5. python -m benchmarks.audio_fewshot_speed --device cuda --paper-episodes 25: the per-episode few-shot route
#      (and the cached routes) on the GPU                               -> audio_fewshot_speed.json
#   6. python -m benchmarks.audio_augment_throughput --recipe fsd50k --device cuda: the fast augmentation path on the
#      GPU, the learner's step with its log-mel front end, and 8 end-to-end steps with the views made in the
#      data-loader workers and then inside the training step on the GPU (data wait and clips/s both ways)
#                                                                         -> audio_augment.json
#   7. python -m benchmarks.pretrain_throughput --device cuda (bf16 autocast) -> pretrain_throughput.json
#      (python -m benchmarks.hypernet_overhead has no device option, so it is not run here)
#   8. a 50-step python -m vision.pretrain smoke run on CUDA with bf16, then core.load_encoder on CUDA
#                                                                         -> gpu-pretrain/{config.json,metrics.jsonl}
# A summary of every step (status ok / failed / skipped, exit code, seconds; "skipped" when the budget ran out,
# except for a required step, which is then "failed") goes to gpu_check.json, and the headline numbers to
# summary.json (also printed, by python -m benchmarks.gpu_check_summary, which applies the same rule to the required
# steps); the exit status is 1 if any step failed or a required step did not pass.
# Not yet run in this form on a GPU; the budget ends it within about 8.5 minutes (480 s, plus each step's 10-s
# kill grace and the summary). The earlier form (environment, two test files, throughput, smoke) took 98 s on an H100.
#
# GPU_CHECK_SMOKE=1 runs step 2 on the CPU with one small test file (TORCH_DEVICE=cpu; still required, still
# checked for tests that used the `device` fixture), steps 3-6 with tiny settings (--quick), and skips 1, 7 and 8:
# the way to check this script without a GPU.
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
BUDGET="${GPU_CHECK_BUDGET:-480}"  # seconds for all steps together (the lent machine's command limit is 600)
SMOKE="${GPU_CHECK_SMOKE:-0}"      # 1: CPU, tiny settings (checks this script)
REQUIRED=(pytest)                  # steps that must run and pass, or the check fails
declare -a RESULTS=()
declare -A STATUS=()
FAILED=0

required() {
    local r
    for r in "${REQUIRED[@]}"; do
        [[ $r == "$1" ]] && return 0
    done
    return 1
}

# record NAME STATUS EXIT_CODE SECONDS REASON: one row of gpu_check.json.
record() {
    local req=false
    required "$1" && req=true
    STATUS[$1]=$2
    RESULTS+=("{\"step\": \"$1\", \"status\": \"$2\", \"exit_code\": $3, \"seconds\": $4, \"required\": $req, \"reason\": \"$5\"}")
}

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under a time limit (cut to what is left of BUDGET), record its
# status (ok / failed / skipped), exit code and duration. With less than 30 s of the budget left it does not run:
# "skipped", or "failed" for a required step.
step() {
    local name=$1 limit=$2
    shift 2
    local began status left
    left=$((BUDGET - ($(date +%s) - STARTED)))
    if [[ $left -lt 30 ]]; then
        echo
        if required "$name"; then
            FAILED=1
            echo "=== [$name] FAILED: required, but only ${left}s were left of the ${BUDGET}s budget, so it did not run"
            record "$name" failed null 0 "not run: ${left}s left of the budget"
        else
            echo "=== [$name] skipped: ${left}s left of the ${BUDGET}s budget"
            record "$name" skipped null 0 "not run: ${left}s left of the budget"
        fi
        return 0
    fi
    if [[ $limit -gt $left ]]; then
        limit=$left
    fi
    began=$(date +%s)
    echo
    echo "=== [$name] (limit ${limit}s, $(($(date +%s) - STARTED))s elapsed) $*"
    if timeout --kill-after=10 "$limit" "$@"; then status=0; else status=$?; fi
    local seconds=$(($(date +%s) - began))
    if [[ $status -ne 0 ]]; then
        FAILED=1
        echo "=== [$name] FAILED with status $status after ${seconds}s"
        record "$name" failed "$status" "$seconds" "exit status $status"
    else
        echo "=== [$name] ok in ${seconds}s"
        record "$name" ok 0 "$seconds" ""
    fi
}

# Offline machines: wheels carried in .whl/ (e.g. pydantic and its dependencies, which the lent GPU
# image lacks; also soundfile, audiomentations and their dependencies for the audio steps) are installed first,
# without an index, into /tmp/site. Not in the CPU smoke mode (the wheels are for the GPU machine's Python 3.12).
if [[ $SMOKE != 1 ]] && compgen -G ".whl/*.whl" >/dev/null; then
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
# pytest on TEST_DEVICE over TEST_PATHS (cuda and the whole suite; the smoke mode's cpu and one small file); fails
# when a test fails or when no test used the `device` fixture on TEST_DEVICE.
device_tests() {
    rm -f "$OUT_DIR/device_tests.json"
    # shellcheck disable=SC2086  # TEST_PATHS is a list of paths
    TORCH_DEVICE=$TEST_DEVICE DEVICE_TESTS_REPORT="$OUT_DIR/device_tests.json" "$PYTHON" -m pytest -q $TEST_PATHS \
        --junitxml "$OUT_DIR/pytest.xml" -p no:cacheprovider
    "$PYTHON" - "$OUT_DIR/device_tests.json" "$TEST_DEVICE" <<'EOF'
import json
import sys
report = json.load(open(sys.argv[1]))
count = len(report["tests"])
print(f"{count} tests ran on {report['device']}")
sys.exit(0 if count and report["device"].startswith(sys.argv[2]) else 1)
EOF
}
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
if [[ $SMOKE == 1 ]]; then
    DEVICE=cpu
    TEST_DEVICE=cpu
    TEST_PATHS="tests/audio/test_frontend.py"
    QUICK=(--quick)
    AUGMENT=(--recipe bare --batches 1 --reference-batches 1 --model-steps 1 --steps 3)
else
    DEVICE=cuda
    TEST_DEVICE=cuda
    TEST_PATHS="tests"
    QUICK=()
    AUGMENT=(--recipe fsd50k --batches 4 --reference-batches 1 --model-steps 10 --steps 8)
fi
export PYTHON OUT_DIR TEST_DEVICE TEST_PATHS
if [[ $SMOKE != 1 ]]; then
    export -f environment
    step environment 60 bash -c 'set -euo pipefail; environment | tee "$OUT_DIR/env.txt"'
fi

# The tests first (required): the long benchmarks below cannot use up their budget.
export -f device_tests
step pytest 240 bash -c 'set -euo pipefail; device_tests'

# Then the headline performance numbers: the paper-width vision step, the audio step, the per-episode route.
step paper_width_vision 240 "$PYTHON" -m benchmarks.paper_width_step --device "$DEVICE" ${QUICK[@]+"${QUICK[@]}"} \
    --output "$OUT_DIR/paper_width_step.json"
step paper_width_audio 150 "$PYTHON" -m benchmarks.paper_width_step --modality audio --device "$DEVICE" \
    ${QUICK[@]+"${QUICK[@]}"} --output "$OUT_DIR/paper_width_step_audio.json"
step audio_fewshot_speed 180 "$PYTHON" -m benchmarks.audio_fewshot_speed --device "$DEVICE" --paper-episodes 25 \
    ${QUICK[@]+"${QUICK[@]}"} --output "$OUT_DIR/audio_fewshot_speed.json"
step audio_augment 200 "$PYTHON" -m benchmarks.audio_augment_throughput --device "$DEVICE" "${AUGMENT[@]}" \
    --output "$OUT_DIR/audio_augment.json"

if [[ $SMOKE != 1 ]]; then
    step pretrain_throughput 150 "$PYTHON" -m benchmarks.pretrain_throughput --device cuda --amp bf16 \
        --workers 2 8 --aug-batches 64 --model-warmup 5 --model-rounds 20 --warmup 10 --steps 60 \
        --output "$OUT_DIR/pretrain_throughput.json"

    export -f smoke
    step pretrain_smoke 120 bash -c 'set -euo pipefail; smoke'
fi

# A required step that never reached step() (an early exit of this script cannot reach this line either: the
# summary, run on its own, then marks the step failed from the missing row).
for name in "${REQUIRED[@]}"; do
    if [[ -z ${STATUS[$name]+set} ]]; then
        record "$name" failed null 0 "did not run"
    fi
    if [[ ${STATUS[$name]} != ok ]]; then
        FAILED=1
        echo "=== required step [$name] is ${STATUS[$name]}: the check fails"
    fi
done
TOTAL=$(($(date +%s) - STARTED))
{
    echo "{"
    echo "  \"date\": \"$(date -Iseconds)\","
    echo "  \"total_seconds\": $TOTAL,"
    echo "  \"failed\": $FAILED,"
    echo "  \"smoke\": $([[ $SMOKE == 1 ]] && echo true || echo false),"
    echo "  \"required\": [$(printf '"%s", ' "${REQUIRED[@]}" | sed 's/, $//')],"
    echo "  \"steps\": ["
    for i in "${!RESULTS[@]}"; do
        sep=","
        [[ $i -eq $((${#RESULTS[@]} - 1)) ]] && sep=""
        echo "    ${RESULTS[$i]}$sep"
    done
    echo "  ]"
    echo "}"
} >"$OUT_DIR/gpu_check.json"
# Step statuses and the headline numbers of the benchmark steps (from whatever JSON they left) -> summary.json. The
# summary exits 1 when a step failed or a required step did not pass, and then so does this script.
if ! "$PYTHON" -m benchmarks.gpu_check_summary "$OUT_DIR"; then
    FAILED=1
    cat "$OUT_DIR/gpu_check.json"
fi
echo "gpu_check: total ${TOTAL}s; results in $OUT_DIR"
exit "$FAILED"
