#!/usr/bin/env bash
# The GPU measurements in one go: the train step against PyTorch with cuDNN (batch 64 and
# 1,024), the LSTM alone against cuDNN's, populations of P members, and EM per iteration at
# the default and at larger block sizes. Each part has its own time limit, so one that hangs leaves
# the others' tables; every table also goes to $LOG_DIR (default gpu_logs/).
#
# Usage (on a machine with an NVIDIA GPU, jax[cuda12|cuda13] and torch with CUDA):
#   bash scripts/bench_gpu.sh [LOG_DIR]
#   PARTS="lstm em_blocks" bash scripts/bench_gpu.sh [LOG_DIR]    # only these parts
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${1:-gpu_logs}
mkdir -p "$LOG_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

PARTS=${PARTS:-setup train_b64 train_b1024 lstm population em em_blocks}

part() {  # part NAME SECONDS COMMAND...: runs COMMAND with a limit, output to the screen and a log
    local name=$1 limit=$2
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    echo "=== $name ($(date +%T), limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG_DIR/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]}"
}

part setup 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
  $PY -c 'import jax, torch; d = jax.devices()[0]; print(jax.__version__, d.device_kind, \
  d.client.platform_version, torch.__version__, torch.backends.cudnn.version())'"
part train_b64 140 "$PY" scripts/bench_train.py --layers 1 2 --repeats 5 --steps 10
part train_b1024 140 "$PY" scripts/bench_train.py --layers 1 2 --batch 1024 --repeats 3 --steps 5
part lstm 150 "$PY" scripts/bench_lstm.py --batch 64 1024 --layers 1 2 --steps 10 --repeats 3
part population 80 "$PY" scripts/bench_population.py --devices 1 --sizes 1,8,64 --rounds 3 --steps 10
part em 120 "$PY" scripts/bench_em.py --only jax --sizes 1e6 --dims 16,64 --ks 32 --ctypes full,diag \
  --iters 3 --repeats 2 --budget 20
for block in 4096 16384 65536; do  # against the platform default of the em part
  part em_blocks 50 "$PY" scripts/bench_em.py --only jax --sizes 1e6 --dims 16,64 --ks 32 --ctypes full \
    --iters 3 --repeats 2 --budget 10 --block-size $block
done
