#!/usr/bin/env bash
# Every check that needs a GPU, as one script for a lent GPU machine (one H100/H200, the image's own python3
# with torch, transformers, accelerate, safetensors, tabulate, nvidia-ml-py; runprof NOT installed: the
# scripts put this repository on sys.path themselves).
#
#   bash benchmarks/gpu_checks.sh [OUTDIR] [--quick] [--flops] [--dry-run]
#
# OUTDIR: default $OUT, else benchmarks/results/. Every check prints one line, `PASS name ...`,
# `FAIL name ...` or `SKIP name: reason`, as it ends; each script's JSON (with the device name, torch, CUDA,
# driver and transformers versions) is in OUTDIR as soon as its first check is done, and rewritten after each:
#   gpu_env.json  cuda_checks.json  cuda_pytest.json  overhead_cuda.json  [flops_gpu.json]  gpu_checks.log
# Exit code 0 iff every check passed or was skipped with its reason. The interpreter: $PYTHON, else the first of
# python3, python that imports torch.
#
# Steps, with the time each should take on one H200 (estimated from CPU timings of the parts: the tiny
# model's generate(64) takes 0.4 s on this project's CPU and is host-bound on a GPU too; 0.9 s under
# torch.profiler, 1.6 s under FlopCounterMode):
#   env            the machine, versions                                       ~5 s
#   cuda_checks    benchmarks/cuda_checks.py (plain python, no pytest)         ~25 s   (--quick ~20 s)
#   cuda_pytest    the cuda-marked tests through pytest, where importable      ~15 s
#   overhead       overhead.py --device cuda: 2 models x batch 1, 8, 3 rounds   ~145 s  (--quick: tiny model,
#                  x (6 tools + 3 x 4 runprof arms) of generate(64) + start-up          2 rounds x 2: ~55 s)
#   flops          --flops: benchmarks/flops_gpu.py if it exists               (its own budget)
#   total          ~3.5 min by default, ~1.6 min with --quick. Hard timeouts per step (below) cap a run at
#                  8.8 min (--quick 6.8) without --flops: run it with the device tool's timeout_s=600.
# --dry-run runs the same scripts on the CPU with tiny sizes (to prove them before a GPU comes).
#
# The --flops slot: benchmarks/flops_gpu.py is called as `flops_gpu.py --out OUTDIR [--quick] [--dry-run]`,
# with or without a GPU; it prints its own PASS/FAIL/SKIP lines (SKIP with the reason where it has no GPU),
# writes at most two files into OUTDIR and exits 0 iff nothing failed; gpu_common.Report does all of that.
# It is meant for FLOPs/MFU and decode bandwidth of the shipped model and of a real-shaped Mixtral-8x7B
# 2-layer stack in bf16 (prefill 2k tokens, decode batch 1 and 32).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 \
    TOKENIZERS_PARALLELISM=false
QUICK=0 FLOPS=0 DRY=0 OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --flops) FLOPS=1 ;;
        --dry-run) DRY=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "gpu_checks.sh: unknown option $arg (expected --quick, --flops, --dry-run)" >&2; exit 2 ;;
        *) [ -z "$OUTDIR" ] || { echo "gpu_checks.sh: one OUTDIR only ($OUTDIR, $arg)" >&2; exit 2; }; OUTDIR=$arg ;;
    esac
done
PY=${PYTHON:-}
if [ -z "$PY" ]; then  # the first python that has torch (the GPU image's python3; here, an activated venv)
    for candidate in python3 python; do
        if "$candidate" -c "import torch" 2>/dev/null; then PY=$candidate; break; fi
    done
    [ -n "$PY" ] || { echo "FAIL env: neither python3 nor python imports torch; set PYTHON=/path/to/python"; exit 2; }
fi
OUTDIR=${OUTDIR:-${OUT:-benchmarks/results}}
mkdir -p "$OUTDIR" || exit 2
LOG="$OUTDIR/gpu_checks.log"
LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT
: > "$LOG"
START=$(date +%s)
RC=0

say() {  # a line of this script's own, to the screen, the log and the tally
    echo "$*" | tee -a "$LOG" "$LINES"
}

step() {  # step NAME TIMEOUT_S CMD...: run, keep its output (less profiler noise), a FAIL line if it broke
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS fails
    fails=$(grep -c '^FAIL' "$LINES")
    if command -v timeout >/dev/null; then
        timeout --kill-after=15 "$limit" "$@" 2>&1
    else
        "$@" 2>&1
    fi | grep --line-buffered -v -e '^USDT:' -e 'DeviceProperties.cpp:.*gpuGetDeviceCount' | tee -a "$LOG" "$LINES"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "FAIL $name: timed out after ${limit} s (what it measured so far is in $OUTDIR)"
    elif [ "$rc" -ne 0 ] && [ "$(grep -c '^FAIL' "$LINES")" -eq "$fails" ]; then
        say "FAIL $name: exited $rc after $((SECONDS - t0)) s (output above)"
    fi
    [ "$rc" -eq 0 ] || RC=1
    return "$rc"
}

# pytest (and anything else) carried as wheels: .whl/*.whl, the device tool's recipe
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c "import pytest" 2>/dev/null; then
    SITE=$(mktemp -d)
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
        >>"$LOG" 2>&1; then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        say "PASS wheels: $(ls .whl/*.whl | wc -l) installed from .whl/ into $SITE"
    else
        say "FAIL wheels: pip could not install .whl/*.whl (see $LOG)"; RC=1
    fi
fi

step env 45 "$PY" benchmarks/gpu_common.py --out "$OUTDIR"
if [ "$DRY" -eq 1 ]; then
    GPU=0
    say "dry run: every check runs on the CPU with tiny sizes; its figures say nothing about a GPU"
elif "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    GPU=1
else
    GPU=0
    NOGPU=$("$PY" -c "import torch; print('torch', torch.__version__, 'sees no CUDA GPU')" 2>&1 | tail -1)
fi

ARGS=(--out "$OUTDIR")
[ "$QUICK" -eq 1 ] && ARGS+=(--quick)
[ "$DRY" -eq 1 ] && ARGS+=(--dry-run)
step cuda_checks 120 "$PY" benchmarks/cuda_checks.py "${ARGS[@]}"
step cuda_pytest 90 "$PY" benchmarks/cuda_pytest.py --out "$OUTDIR"

if [ "$DRY" -eq 1 ]; then
    step overhead 300 "$PY" benchmarks/overhead.py --device cpu --models tiny --rounds 1 --pairs 1 --new-tokens 8 \
        --batch-sizes 1 --out "$OUTDIR/overhead_cpu_dry_run.json" &&
        say "PASS overhead: [dry run, cpu] ran to the end (figures in $OUTDIR/overhead_cpu_dry_run.json)"
elif [ "$GPU" -eq 1 ]; then
    if [ "$QUICK" -eq 1 ]; then
        SIZES=(--models tiny --rounds 2 --pairs 2 --batch-sizes 1,8) LIMIT=150
    else
        SIZES=(--rounds 3 --pairs 3 --batch-sizes 1,8) LIMIT=270
    fi
    step overhead "$LIMIT" "$PY" benchmarks/overhead.py --device cuda "${SIZES[@]}" --out "$OUTDIR/overhead_cuda.json" &&
        say "PASS overhead: timed; tracked regions sync-free where judged (sync check lines above)"
else
    say "SKIP overhead: $NOGPU (benchmarks/overhead.py --device cuda needs one)"
fi

if [ "$FLOPS" -eq 0 ]; then
    say "SKIP flops: not asked for (--flops runs benchmarks/flops_gpu.py)"
elif [ ! -f benchmarks/flops_gpu.py ]; then
    say "SKIP flops: benchmarks/flops_gpu.py does not exist yet (the slot for FLOPs/MFU and decode bandwidth)"
else  # without a GPU (and not --dry-run) it says SKIP itself, like cuda_checks.py
    step flops 300 "$PY" benchmarks/flops_gpu.py "${ARGS[@]}"
fi

passed=$(grep -c '^PASS' "$LINES") failed=$(grep -c '^FAIL' "$LINES") skipped=$(grep -c '^SKIP' "$LINES")
[ "$failed" -eq 0 ] || RC=1
say "gpu_checks: $passed passed, $failed failed, $skipped skipped in $(($(date +%s) - START)) s; results in $OUTDIR"
exit "$RC"
