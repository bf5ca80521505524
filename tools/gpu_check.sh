#!/usr/bin/env bash
# The prepared GPU check of issue 15 (docs/gpu.md, "Measured"): run it on a machine with
# an NVIDIA GPU, from the repository root, in one go:
#
#     bash tools/gpu_check.sh                 # everything below, in under 9 minutes
#
# 1. install: nothing when PYTHON (default python3) already imports CuPy, minilm's
#    dependencies and the test tools (the lent machines' image: it has no network), else
#    a virtual environment (GPU_CHECK_VENV, default /tmp/minilm-venv-gpu) with
#    `pip install -e '.[cuda,test]'`;
# 2. the gpu suite: pytest -m gpu tests/gpu -x -q (every kernel against the NumPy
#    reference, the GPT against the CPU, checkpoints, Trainer, memory figures);
# 3. bench/gpt_train.py --backend cupy, briefly: the reference config (fp32), then
#    GPT-2-small shapes in fp32, in fp16 autocast (minilm's native half GEMMs) with
#    torch.compile too, and in bf16 autocast (emulated in minilm: CuPy has no
#    bfloat16), each against PyTorch CUDA in the same run.
#
# Every stage has a time cap, and the whole a budget (GPU_CHECK_BUDGET seconds, default
# 520): a stage starts only with at least 30 s left and gets at most what is left. A
# failing stage does not stop the next ones. Output: the log on stdout and in
# $OUT/gpu_check.log ($OUT: the device tool's folder; /tmp/gpu_check elsewhere), the
# pytest junit XML and each bench's JSON beside it (6 files at most).
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET, GPU_CHECK_PYTEST_ARGS
# (default "-x -q"; "-q" runs the whole suite past the first failure), GPU_CHECK_STEPS
# (timed steps of the GPT-2-small benches, default 6).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-/tmp/minilm-venv-gpu}
CHOSEN=/tmp/minilm-gpu-check.python  # the interpreter the install stage chose (a path)

# ------------------------------------------------------------------ stage 1, on its own
NEEDS="cupy, numpy, numba, safetensors, threadpoolctl, tqdm, pytest, hypothesis, matplotlib"
install() {
    # The lent machines' image has a python3 that is itself a virtual environment with
    # CuPy, PyTorch and the test tools, and no network: a new venv would not see its
    # packages. So when PYTHON already imports everything minilm and its tests need,
    # it is used as it is (minilm from this tree, through PYTHONPATH); otherwise a venv
    # $VENV gets pip install -e '.[cuda,test]' (which needs a package index).
    # (A path in a file, not a symlink: a venv's python run through a link elsewhere
    # no longer finds its pyvenv.cfg, nor its packages.)
    set -e
    if "$PY" -c "import $NEEDS" 2>/dev/null; then
        echo "$PY has $NEEDS: no install needed (minilm from $PWD)"
        command -v "$PY" > "$CHOSEN"
    else
        echo "$PY lacks one of $NEEDS: $VENV, pip install -e '.[cuda,test]'"
        test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[cuda,test]'
        echo "$VENV/bin/python" > "$CHOSEN"
    fi
    "$(cat "$CHOSEN")" - <<'EOF'
import cupy

import minilm
import minilm.cuda as mc

print(f"cupy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
      f"{mc.device_count()} device(s); minilm from {minilm.__file__}")
try:
    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
except ImportError:
    print("torch does not import: the benches run minilm alone")
EOF
}
if [[ ${1:-} == --install ]]; then
    install
    exit
fi

# ------------------------------------------------------------------ the run
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-520}
OUTDIR=${OUT:-/tmp/gpu_check}
STEPS=${GPU_CHECK_STEPS:-6}
PYTEST_ARGS=${GPU_CHECK_PYTEST_ARGS:--x -q}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
export MINILM_GPU_REQUIRED=1  # tests/gpu fails, not skips, when CuPy sees no device
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAILED=()

say() { echo "$*" | tee -a "$LOG"; }

# stage NAME MAX_SECONDS COMMAND...: run COMMAND with a time cap of min(MAX, budget left)
stage() {
    local name=$1 max=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    local cap=$((max < left ? max : left))
    if ((cap < 30)); then
        say "== $name: not run, $left s of the ${BUDGET} s budget left"
        FAILED+=("$name (not run)")
        return
    fi
    say "== $name (at most ${cap} s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "== $name: exit $rc after $((SECONDS - t0)) s (total $((SECONDS - START)) s)"
    ((rc == 0)) || FAILED+=("$name (exit $rc)")
}

say "== gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 \
        | tee -a "$LOG"
elif [[ -z ${GPU_CHECK_FORCE:-} ]]; then
    say "gpu_check: no NVIDIA GPU here (no nvidia-smi); run it on a machine with one" \
        "(GPU_CHECK_FORCE=1 runs it anyway)"
    exit 2
fi

rm -f "$CHOSEN"
stage install 90 env PYTHON="$PY" bash "$0" --install
VPY=$(cat "$CHOSEN" 2>/dev/null || echo "$PY")

# shellcheck disable=SC2086
stage gpu-tests 200 "$VPY" -m pytest -m gpu tests/gpu $PYTEST_ARGS -p no:cacheprovider \
    --junitxml "$OUTDIR/gpu_tests.xml"

BENCH=("$VPY" bench/gpt_train.py --backend cupy --compare-torch)
stage bench-reference-fp32 60 "${BENCH[@]}" --config reference --steps 10 --warmup 2 \
    --json "$OUTDIR/bench_reference_fp32.json"
stage bench-gpt2-fp32 100 "${BENCH[@]}" --config gpt2-small --steps "$STEPS" --warmup 2 \
    --block 3 --json "$OUTDIR/bench_gpt2_fp32.json"
stage bench-gpt2-fp16-compile 160 "${BENCH[@]}" --torch-compile --config gpt2-small --amp fp16 \
    --steps "$STEPS" --warmup 2 --block 3 --json "$OUTDIR/bench_gpt2_fp16.json"
stage bench-gpt2-bf16 100 "${BENCH[@]}" --config gpt2-small --amp bf16 --steps "$STEPS" \
    --warmup 2 --block 3 --json "$OUTDIR/bench_gpt2_bf16.json"

if ((${#FAILED[@]})); then
    say "== gpu_check: done in $((SECONDS - START)) s; failed or not run: ${FAILED[*]}"
    exit 1
fi
say "== gpu_check: done in $((SECONDS - START)) s; every stage passed"
