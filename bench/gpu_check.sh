#!/usr/bin/env bash
# The GPU check: the pre-train step speed-up, the low-mode step cost and a --quick frontier on CUDA
# (bf16 autocast, channels_last), each writing its results with the machine info under
# bench/results/ as NAME-cuda.json. Under 8 minutes on one GPU. Run from the repository root:
#
#     bash bench/gpu_check.sh            # on a CUDA machine
#     bash bench/gpu_check.sh --cpu      # the same scripts on the CPU, tiny settings (a smoke run of this file)
#
# Without CUDA (and without --cpu) it says so and exits 1, writing nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1
if [[ "${1:-}" == "--cpu" ]]; then
    OUT=${OUT_DIR:-runs/gpu_check-cpu}; mkdir -p "$OUT"
    $PY -m bench.pretrain_speedup --device cpu --models resnet18 --repeats 2 --batch 2 --no-profile \
        --memory-formats contiguous --out "$OUT/pretrain_speedup-cpu.json"
    $PY -m bench.lowmode_cost --device cpu --quick --out "$OUT/lowmode_cost-cpu.json"
    $PY -m bench.time_to_accuracy --quick --device cpu --out "$OUT/time_to_accuracy-cpu.json" \
        --cache "$OUT/cache" --work "$OUT/work"
    echo "CPU fallback ran; results in $OUT"
    exit 0
fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: CUDA is not available here. Hint: run on a GPU machine, or pass --cpu for the CPU smoke run" >&2
    exit 1
fi
R=bench/results
$PY -c "import torch; print('GPU:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
# ~2 min: six models' target and pre-train steps, 20 interleaved repeats each, batch 64
timeout 240 $PY -m bench.pretrain_speedup --device cuda --batch 64 --repeats 20 --no-profile --out "$R/pretrain_speedup-cuda.json"
# ~1 min: ResNet-18/50 full and low steps at 64 px, batch 64
timeout 120 $PY -m bench.lowmode_cost --device cuda --repeats 20 --out "$R/lowmode_cost-cuda.json"
# ~1-2 min: the frontier's smoke run (fixture data) through every method, on CUDA
timeout 180 $PY -m bench.time_to_accuracy --quick --device cuda --out "$R/time_to_accuracy-cuda.json" \
    --cache runs/gpu_check/cache --work runs/gpu_check/work
echo "GPU check done: $R/pretrain_speedup-cuda.json $R/lowmode_cost-cuda.json $R/time_to_accuracy-cuda.json"
