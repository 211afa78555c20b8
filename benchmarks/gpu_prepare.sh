#!/usr/bin/env bash
# Prepare the offline bundle for benchmarks/gpu_check.sh. Run it on a machine with
# PyPI access, from anywhere:
#
#   bash benchmarks/gpu_prepare.sh [MODEL.safetensors] [N_TEST_IMAGES]
#
# It fills .gpu/ (listed in .git/info/exclude, never committed) with what a CUDA image
# with torch but without network lacks, in at most LIMIT_MB (default 60) MiB so that
# the repository and the bundle fit a small upload:
#   .gpu/wheels/  segmentation-models-pytorch and PyAV wheels for CPython 3.12 (the
#                 image is expected to have torch, onnxruntime, opencv, rich, yaml,
#                 safetensors, timm)
#   .gpu/model.safetensors   the trained model, weights stored as float16 (half the size;
#                 loaded back as float32, so fp32-vs-fp16 agreement is still exact to test)
#   .gpu/kvasir/  the first N (default 60) images of the Kvasir-SEG test split + masks
#                 (DATA: the Kvasir-SEG folder, default ../shared/data/kvasir-seg)
# Then copy the repository with .gpu/ to the GPU machine and run gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-}
COUNT=${2:-60}
DATA=${DATA:-../shared/data/kvasir-seg}
PY=${PY:-.venv/bin/python}
LIMIT_BYTES=$((${LIMIT_MB:-60} * 1024 * 1024))

exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/kvasir/images .gpu/kvasir/masks .gpu/kvasir/splits

av_version=$($PY -c 'import av; print(av.__version__)')
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels \
  "segmentation-models-pytorch==0.6.0" "av==${av_version}"

if [[ -n "$MODEL" ]]; then
  NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $PY - "$MODEL" <<'PYTHON'
import sys

import torch

from streamseg.model import load_model, save_model

network, spec = load_model(sys.argv[1])
save_model(".gpu/model.safetensors", network, spec, dtype=torch.float16)
print(f"model: {spec.architecture}/{spec.encoder_name} {spec.input_hw} -> .gpu/model.safetensors")
PYTHON
fi

if [[ -d "$DATA" ]]; then
  head -n "$COUNT" "$DATA/splits/test.txt" >.gpu/kvasir/splits/test.txt
  while read -r stem; do
    cp "$DATA"/images/"$stem".* .gpu/kvasir/images/
    cp "$DATA"/masks/"$stem".* .gpu/kvasir/masks/
  done <.gpu/kvasir/splits/test.txt
  echo "data: $(wc -l <.gpu/kvasir/splits/test.txt) test images from $DATA"
else
  rm -rf .gpu/kvasir
  echo "no $DATA: gpu_check.sh will validate on tests/fixtures/kvasir instead"
fi

size=$(du -sb .gpu | cut -f1)
echo ".gpu/ holds $((size / 1024 / 1024)) MiB"
if ((size > LIMIT_BYTES)); then
  echo "larger than LIMIT_MB (${LIMIT_MB:-60} MiB): pass fewer images" >&2
  exit 1
fi
