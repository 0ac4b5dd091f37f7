#!/usr/bin/env bash
# The GPU check: run on a machine with a CUDA device, from the repository root, in a venv that has
# `pip install -e ".[dev]"` (grad-cam and quantus included). Four steps, about 5-8 minutes on one
# modern GPU, each printing what it measured:
#   1. the GPU-only tests (`pytest -m gpu`: the end-to-end run on cuda, device placement);
#   2. the quick preset on the device (`xbench run quick --device cuda`), its wall time and status;
#   3. the AOPC benchmark against Quantus' RegionPerturbation on the device (target: within 1.1x of
#      the plain forward passes, and >= 5x faster than Quantus);
#   4. the ROAD benchmark against pytorch-grad-cam's ROAD on the device (ratios printed).
# Usage: tests/benchmarks/gpu_check.sh [PYTHON_BIN_DIR]   (default .venv/bin). Exit status: the first
# failing step's.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-.venv/bin}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}

"$BIN/python" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device: torch.cuda.is_available() is False"
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

echo "== 1. GPU-only tests"
"$BIN/pytest" -q -m gpu

echo "== 2. quick preset on cuda"
start=$(date +%s)
"$BIN/xbench" run quick --device cuda --out "$OUT/quick" -q
echo "quick preset on cuda: $(( $(date +%s) - start )) s"
"$BIN/python" - "$OUT/quick" <<'PY'
import json, sys
manifest = json.load(open(f"{sys.argv[1]}/manifest.json"))
print("status:", manifest["status"], "| device:", manifest.get("device", {}).get("gpu"),
      "| wall:", round(manifest["timings"]["wall_seconds"], 1), "s")
assert manifest["status"] == "complete", manifest["status"]
PY

echo "== 3. AOPC benchmark on cuda (vs Quantus)"
XBENCH_BENCH_DEVICE=cuda "$BIN/pytest" -q -s tests/benchmarks/test_bench_aopc.py --benchmark-enable \
    --benchmark-columns=min,median,rounds

echo "== 4. ROAD benchmark on cuda (vs pytorch-grad-cam)"
if [ -f tests/benchmarks/test_bench_road.py ]; then
    XBENCH_BENCH_DEVICE=cuda "$BIN/pytest" -q -s tests/benchmarks/test_bench_road.py --benchmark-enable \
        --benchmark-columns=min,median,rounds
else
    echo "no ROAD benchmark in this checkout"
fi
echo "GPU check passed; outputs in $OUT"
