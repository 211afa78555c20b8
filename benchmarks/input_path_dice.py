"""A model's Dice through the runtime's uint8 input resize and through a float resize.

The runtime (and ``training evaluate``, ``quantize``, ``soup``) resizes each
uint8 frame to the network's input before converting it to float
(``streamseg.transforms.network_input``); models scored before that change were
scored with the frame converted to float first, then resized. This replays
both on the validation carve-out of the model's run (rebuilt from its
provenance) or on a split file, at full resolution, and prints micro and macro
Dice of each, so that figures measured on the two paths can be compared.

    python benchmarks/input_path_dice.py --model streamseg/assets/default.safetensors \
        --data ../shared/data/kvasir-seg --threads 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from streamseg.model import load_model
from streamseg.segmenter import predict_probabilities
from streamseg.transforms import upload
from training.data import PolypFolder, read_split
from training.quantize import carve_from_provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model file")
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument(
        "--split", help="split file (default: the model run's validation carve-out)"
    )
    parser.add_argument(
        "--threshold", type=float, help="default: the model file's threshold"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network, spec = load_model(args.model)
    network.eval()
    folder = PolypFolder.open(args.data)
    if args.split:
        stems = read_split(args.split)
    else:
        stems = carve_from_provenance(spec, folder)[1]
    threshold = spec.threshold if args.threshold is None else args.threshold
    pooled = {"uint8": np.zeros(3), "float": np.zeros(3)}
    per_image: dict[str, list[float]] = {"uint8": [], "float": []}
    for stem in stems:
        pixels, mask = folder.load_pair(stem)
        truth = torch.from_numpy(mask).bool()
        images = upload(pixels, "cpu")
        with torch.inference_mode():
            for path, inputs in (("uint8", images), ("float", images.float() / 255)):
                predicted = (
                    predict_probabilities(network, inputs, spec.input_hw)[0]
                    >= threshold
                )
                tp = int((predicted & truth).sum())
                fp = int((predicted & ~truth).sum())
                fn = int((~predicted & truth).sum())
                pooled[path] += (tp, fp, fn)
                denominator = 2 * tp + fp + fn
                per_image[path].append(2 * tp / denominator if denominator else 1.0)
    print(f"{args.model}: {len(stems)} images, threshold {threshold:.2f}")
    for path in ("uint8", "float"):
        tp, fp, fn = pooled[path]
        print(
            f"  {path:5s} resize: micro Dice {2 * tp / (2 * tp + fp + fn):.4f}, "
            f"macro Dice {np.mean(per_image[path]):.4f}"
        )


if __name__ == "__main__":
    main()
