#!/usr/bin/env bash
# Every check that needs a GPU, as one script for a lent GPU machine (the device tool runs it in the repo root):
# the cuda-marked tests (memory ledger vs allocator and NVML, no host sync, compare on CUDA), then the
# overhead benchmark on the GPU. Results land in benchmarks/results/ and, when $OUT is set, are copied there.
#   bash benchmarks/gpu_checks.sh            # about 5 minutes on an H100 once torch is installed
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=benchmarks/results
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu_device.txt"
python -m pytest -q -m cuda -rs tests/ 2>&1 | tee "$RESULTS/cuda_tests.txt"
tests_rc=${PIPESTATUS[0]}
python benchmarks/overhead.py --device cuda --rounds 5 --pairs 5 2>&1 | grep -v "^USDT" | tail -20
bench_rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp "$RESULTS"/gpu_device.txt "$RESULTS"/cuda_tests.txt "$RESULTS"/overhead_cuda.json "$OUT"/ 2>/dev/null; fi
echo "cuda tests exit $tests_rc, overhead exit $bench_rc"
exit $(( tests_rc || bench_rc ))
