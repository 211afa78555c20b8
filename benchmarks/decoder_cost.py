"""What the FPN decoder's width costs on this CPU: the bundled network, several widths.

Builds FPN / EfficientNet-Lite2 (random weights: speed does not depend on them)
with each ``PYRAMID/SEGMENTATION`` channel pair of ``--widths`` (the bundled
model: 256/128, smp's defaults), converts it to OpenVINO (fp32, the latency
hint, ``--threads`` threads, one stream) and prints the parameter count and the
median milliseconds of ``--calls`` calls at batch 1 after ``--warmup`` calls; with
``--int8`` also of its INT8 version (NNCF post-training quantization, preset
MIXED as ``python -m training quantize`` makes it, calibrated on 16 random images:
for timing only, the masks mean nothing).

    python benchmarks/decoder_cost.py --threads 2 --calls 30 --int8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from streamseg.backends.openvino import import_openvino
from streamseg.cpu import cpu_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="256/128,128/64,128/32,64/32")
    parser.add_argument("--size", type=int, default=320, help="input side, pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--int8", action="store_true", help="also time INT8")
    args = parser.parse_args()
    import segmentation_models_pytorch as smp

    openvino = import_openvino()
    core = openvino.Core()
    torch.manual_seed(0)
    images = torch.rand(1, 3, args.size, args.size)
    print(cpu_info().describe(), f"| {args.threads} threads | {args.size}x{args.size}")
    print(
        "pyramid/segmentation channels | parameters | median ms per call, fp32"
        + (" | INT8" if args.int8 else "")
    )
    for width in args.widths.split(","):
        pyramid, segmentation = (int(part) for part in width.split("/"))
        network = smp.create_model(
            "FPN",
            encoder_name="tu-tf_efficientnet_lite2",
            encoder_weights=None,
            classes=1,
            decoder_pyramid_channels=pyramid,
            decoder_segmentation_channels=segmentation,
        ).eval()
        parameters = sum(p.numel() for p in network.parameters())
        converted = openvino.convert_model(network, example_input=images)
        timings = [time_calls(core, converted, images.numpy(), args)]
        if args.int8:
            timings.append(
                time_calls(core, quantized(converted, images), images.numpy(), args)
            )
        print(
            f"{pyramid}/{segmentation} | {parameters / 1e6:.2f} M | "
            + " | ".join(f"{ms:.1f}" for ms in timings)
        )


def quantized(model, images: torch.Tensor):
    """The model quantized by NNCF (preset MIXED) on 16 random images."""
    import nncf

    generator = np.random.default_rng(0)
    samples = [
        generator.random(tuple(images.shape), np.float32) * 4 - 2 for _ in range(16)
    ]
    return nncf.quantize(
        model,
        nncf.Dataset(samples),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(samples),
    )


def time_calls(core, model, images: np.ndarray, args: argparse.Namespace) -> float:
    """Median milliseconds of ``args.calls`` calls of ``model`` compiled for latency."""
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": args.threads,
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    request = compiled.create_infer_request()
    for _ in range(args.warmup):
        request.infer({0: images})
    times_s = []
    for _ in range(args.calls):
        start_s = time.perf_counter()
        request.infer({0: images})
        times_s.append(time.perf_counter() - start_s)
    return 1000 * float(np.median(times_s))


if __name__ == "__main__":
    main()
