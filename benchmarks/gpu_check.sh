#!/usr/bin/env bash
# GPU check of the fast paths: the CUDA tests, fp16 agreement with fp32, and the
# benchmark, in one script for a CUDA machine (H100/H200 class) without network access.
# Prepare .gpu/ first with benchmarks/gpu_prepare.sh (on a machine with PyPI access),
# copy the repository with .gpu/ to the GPU machine, then run there:
#   OUT=results bash benchmarks/gpu_check.sh
# It writes to $OUT (default /tmp/streamseg-gpu):
#   env.txt            GPU, driver, versions
#   gpu_tests.log      the @pytest.mark.gpu tests (fp16 vs fp32, CUDA graphs, compile
#                      reduce-overhead, pinned uploads, bench smoke)
#   bench_gpu.json/.log  streamseg bench: model only (fp32, fp16, fp16-cl, fp16-cl-graphs,
#                      fp16-cl-compile), pipeline on 720p and 1080p (file + paced live),
#                      naive loop, ratios
#   validate_gpu.json/.log  fp16 variants vs fp32 on Kvasir-SEG test images
# Every step has its own time limit, so one slow step cannot hold up the others.
# Environment knobs: TIME_MODEL (default random:UnetPlusPlus/efficientnet-b2@352;
# timing does not depend on the weights), FRAMES (600 per clip), PIPELINE_VARIANTS
# (config,fp16-cl-graphs), PY (python3).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/streamseg-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
export STREAMSEG_CACHE_DIR=/tmp/streamseg-cache
PY=${PY:-python3}
TIME_MODEL=${TIME_MODEL:-random:UnetPlusPlus/efficientnet-b2@352}
FRAMES=${FRAMES:-600}
PIPELINE_VARIANTS=${PIPELINE_VARIANTS:-config,fp16-cl-graphs}
step() { echo "== $* (t=${SECONDS}s)"; }

if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
if [[ -f .gpu/model.safetensors ]]; then MODEL=.gpu/model.safetensors; else MODEL=$TIME_MODEL; fi
if [[ -d .gpu/kvasir ]]; then DATA=.gpu/kvasir; else DATA=tests/fixtures/kvasir; fi

step environment
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv
  nproc
  $PY - <<'PYTHON'
import av, onnxruntime, segmentation_models_pytorch as smp, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("smp", smp.__version__, "av", av.__version__, "onnxruntime", onnxruntime.__version__)
PYTHON
  echo "validation model: $MODEL; data: $DATA; timing model: $TIME_MODEL"
} 2>&1 | tee "$OUT/env.txt"
$PY -c "import torch, av, segmentation_models_pytorch; assert torch.cuda.is_available()" \
  || { echo "environment not ready (see env.txt)"; exit 1; }

step "gpu tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_fast_paths.py tests/test_bench.py 2>&1 | tee "$OUT/gpu_tests.log"

step "agreement: fp16 variants vs fp32"
timeout 90 $PY -m streamseg bench --validate --model "$MODEL" --data "$DATA" \
  --device cuda --variants fp16,fp16-cl,fp16-cl-graphs \
  --json "$OUT/validate_gpu.json" 2>&1 | tee "$OUT/validate_gpu.log"

step "benchmark"
timeout 270 $PY -m streamseg bench --model "$TIME_MODEL" --device cuda \
  --synthetic 720p --synthetic 1080p --frames "$FRAMES" --iterations 200 --warmup 20 \
  --warmup-frames 32 --pipeline-variants "$PIPELINE_VARIANTS" --set model.batch_size=8 \
  --work-dir /tmp/streamseg-bench --json "$OUT/bench_gpu.json" 2>&1 \
  | tee "$OUT/bench_gpu.log"
step done
