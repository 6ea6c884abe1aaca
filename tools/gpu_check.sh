#!/usr/bin/env bash
# Everything that needs a GPU, as one command for a lent GPU machine (15 minutes of device time in all, so
# the cheap, important checks come first and each step has its own time limit):
#   1. the CUDA tests (tests/test_augment.py and tests/test_fp16.py run their cases on 'cuda' too there);
#   2. benchmarks/bench_augment.py --device cuda (fused batch augmentation, target < 2 ms per batch);
#   3. benchmarks/bench_fp16.py --device cuda (resnet34 fp32 / fp16 / bf16, channels-last and NCHW: step time, memory);
#   4. benchmarks/bench_vs_fastai.py --device cuda --only fine_tune: the GPU targets of issue 7 (epoch
#      throughput against fastai, share of the random-tensor ceiling); the other rows fit a second call.
#   (after 1: tools/gpu_smoke.py, one short end-to-end run of each CUDA path: fp16/bf16, MixUp, hooks, CAM, export)
# The limits add up to 570 s, inside one call's 600.
# `bash tools/gpu_check.sh followup` runs the second call instead: tools/gpu_diag.py (where lite0's slow first
# epoch on a GPU goes), benchmarks/bench_ddp.py --device cuda (distrib_ctx vs a hand DDP loop, nccl) and the
# targets-follow tests on CUDA.
# Here, first: `bash tools/gpu_wheels.sh` (fastai and the few packages the GPU image lacks, into .whl/).
# Then through the device tool: command `bash tools/gpu_check.sh`, carry [".whl"], timeout_s 600.
# Logs and tables land in $OUT (the device tool brings that folder back). DEVICE=cpu QUICK=1 rehearse the
# whole script on a CPU with an interpreter that lacks minifast and fastai, as that machine's does.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"; mkdir -p "$OUT"
DEVICE="${DEVICE:-cuda}"; QUICK="${QUICK:-}"
python="${PYTHON:-python3}"
log="$OUT/gpu_check.log"; : > "$log"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1

"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEEL_DIR:-.whl}"/*.whl \
  || { echo "installing .whl/ failed: run tools/gpu_wheels.sh here and carry .whl" | tee -a "$log"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fa_python="$(command -v "$python")"

step() {  # step SECONDS NAME COMMAND...: run with a time limit, everything into the log; a failure does not stop the rest
  local limit=$1 name=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
  summary+="$name: exit $rc, $((SECONDS - t0)) s"$'\n'
  [ "$rc" = 0 ] || failed+=" $name"
}
summary="" failed=""

step 30 versions "$python" -c "import torch, torchvision, fastai, fastcore, minifast; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'fastai', fastai.__version__, 'fastcore', fastcore.__version__, 'minifast', minifast.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
[ "$DEVICE" = cuda ] && step 15 nvidia-smi nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem --format=csv
if [ "${1:-}" = followup ]; then
  step 150 gpu-diag "$python" tools/gpu_diag.py --device "$DEVICE"
  step 240 bench-ddp "$python" benchmarks/bench_ddp.py --device "$DEVICE"
  step 120 targets-cuda "$python" -m pytest -q -p no:cacheprovider tests/test_targets_follow.py tests/test_unet.py
else
  step 80 cuda-tests "$python" -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_fp16.py
  step 90 smoke "$python" tools/gpu_smoke.py --device "$DEVICE"
  if [ -n "$QUICK" ]; then aug=(--runs 2 --warmup 1); fp=(--batches 3 --warmup 1 --size 64 --bs 4); vs=(--quick)
  else aug=(); fp=(); vs=(); fi
  step 60 bench-augment "$python" benchmarks/bench_augment.py --device "$DEVICE" "${aug[@]}"
  step 120 bench-fp16 "$python" benchmarks/bench_fp16.py --device "$DEVICE" "${fp[@]}"
  step 190 bench-vs-fastai "$python" benchmarks/bench_vs_fastai.py --device "$DEVICE" --fastai-python "$fa_python" \
    --only fine_tune "${vs[@]}"
fi
echo "== summary" | tee -a "$log"; printf '%s' "$summary" | tee -a "$log"
[ -z "$failed" ] || { echo "failed:$failed" | tee -a "$log"; exit 1; }
