#!/usr/bin/env bash
# The GPU check: the pre-train step speed-up, the low-mode step cost and the time-to-accuracy frontier on
# CUDA (bf16 autocast, channels_last) at width 64, where a GPU step is conv-bound; each writes its results
# with the machine info under bench/results/ as NAME-cuda.json. About 10 minutes on one GPU, the frontier
# under 8 of them (its runs are cached as they finish, so a time-out keeps what was done). Run from the
# repository root:
#
#     bash bench/gpu_check.sh            # on a CUDA machine
#     bash bench/gpu_check.sh --cpu      # the same scripts on the CPU, tiny settings (a smoke run of this file)
#
# The frontier reads full Fashion-MNIST from $DATA: Debian's /usr/share/datasets/fashion-mnist where it
# is installed, else runs/fashion-mnist (a git-ignored folder: copy the four IDX .gz files there and
# carry it to a machine that cannot install packages). Without CUDA (and without --cpu) it says so and
# exits 1, writing nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1
# The frontier on the GPU: width 64, the CPU frontier's budgets and seeds, no ablations.
FRONTIER=(--width 64 --baseline 2,4,6,8,12 --budgets 4,8 --seeds 2 --headline-seeds 2 --no-ablations)
if [[ "${1:-}" == "--cpu" ]]; then
    OUT=${OUT_DIR:-runs/gpu_check-cpu}; mkdir -p "$OUT"
    $PY -m bench.pretrain_speedup --device cpu --models resnet18 --repeats 2 --batch 2 --no-profile \
        --memory-formats contiguous --out "$OUT/pretrain_speedup-cpu.json"
    $PY -m bench.lowmode_cost --device cpu --quick --out "$OUT/lowmode_cost-cpu.json"
    $PY -m bench.time_to_accuracy --quick --device cpu --no-ablations --out "$OUT/time_to_accuracy-cpu.json" \
        --cache "$OUT/cache" --work "$OUT/work"
    echo "CPU fallback ran; results in $OUT"
    exit 0
fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: CUDA is not available here. Hint: run on a GPU machine, or pass --cpu for the CPU smoke run" >&2
    exit 1
fi
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
[[ -d "$DATA" ]] || DATA=runs/fashion-mnist
if [[ ! -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
    echo "error: no Fashion-MNIST in $DATA. Hint: apt-get install dataset-fashion-mnist, or copy its four IDX .gz" \
         "files to runs/fashion-mnist" >&2
    exit 1
fi
R=bench/results
$PY -c "import torch; print('GPU:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
# ~2 min: six models' target and pre-train steps, 20 interleaved repeats each, batch 64
timeout 150 $PY -m bench.pretrain_speedup --device cuda --batch 64 --repeats 20 --no-profile --out "$R/pretrain_speedup-cuda.json"
# ~1 min: ResNet-18/50 full and low steps at 64 px, batch 64
timeout 60 $PY -m bench.lowmode_cost --device cuda --repeats 20 --out "$R/lowmode_cost-cuda.json"
# < 8 min: the frontier, every method against the baseline, on CUDA
timeout 450 $PY -m bench.time_to_accuracy --device cuda --data "$DATA" "${FRONTIER[@]}" \
    --out "$R/time_to_accuracy-cuda.json" --cache "$R/time_to_accuracy_runs-cuda" --work runs/gpu_check/work \
    || echo "the frontier stopped early (status $?); its finished runs are cached and summarised"
echo "GPU check done: $R/pretrain_speedup-cuda.json $R/lowmode_cost-cuda.json $R/time_to_accuracy-cuda.json"
