"""CPU training speed: data loading with and without the image cache; fp32 vs bf16.

Two measurements, at one training setting (default: the reduced ablation setting,
UNet++ / EfficientNet-Lite2 at 160x160, batch 8, the cache at 1.25x the input;
``--architecture`` / ``--encoder`` / ``--input`` change the network):

1. Data: seconds to produce training items (decode or cache read, shared resize,
   the seed recipe's augmentation) in one process, one thread, without and with
   the cache; scaled to one epoch of the training split.
2. Compute: seconds per training step (forward, loss, backward, Adam step) on
   random inputs, fp32 vs bf16 autocast (steps interleaved), channels_last,
   ``--threads`` threads (median).

    python benchmarks/train_speed.py --data ../shared/data/kvasir-seg --out speed.json

The CPU model and its amx / avx512_bf16 / avx512_vnni flags are written with the
figures. On a machine shared with other work the numbers are not benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_description() -> dict[str, object]:
    """lscpu's model name and the flags that decide bf16 speed."""
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"model": platform.processor() or "unknown", "flags": {}}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f")
    return {
        "model": fields.get("Model name", "unknown").strip(),
        "cores": os.cpu_count(),
        "flags": {flag: flag in flags for flag in wanted},
        "load_average_1m": os.getloadavg()[0],
    }


def time_items(dataset, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input", type=int, default=160, help="input side, px")
    parser.add_argument("--cache-scale", type=float, default=1.25)
    parser.add_argument(
        "--items", type=int, default=200, help="items timed per variant"
    )
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per precision"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder", default="tu-tf_efficientnet_lite2")
    parser.add_argument(
        "--architecture", default="UnetPlusPlus", help="smp architecture (e.g. FPN)"
    )
    args = parser.parse_args()

    import cv2
    import torch

    from streamseg.model import ModelSpec, build_network
    from training.augment import train_augmentations
    from training.config import AugmentConfig
    from training.data import CachedImages, PolypDataset, PolypFolder, read_split

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(0)
    folder = PolypFolder.open(args.data)
    stems = read_split(args.data / "splits" / "train.txt")
    epoch_items = round(len(stems) * 0.9)  # the validation carve-out is 10 %
    input_hw = (args.input, args.input)
    augment = train_augmentations(AugmentConfig(), seed=0)
    result: dict[str, object] = {"cpu": cpu_description(), "torch": torch.__version__}

    direct = PolypDataset(folder, stems, input_hw, augment)
    seconds = time_items(direct, args.items)
    data = {"items_timed": args.items, "epoch_items": epoch_items}
    data["decode_every_epoch_s_per_epoch"] = seconds / args.items * epoch_items
    with tempfile.TemporaryDirectory() as scratch:
        cache_hw = tuple(round(args.input * args.cache_scale) for _ in range(2))
        start = time.perf_counter()
        cache = CachedImages.build(folder, stems, cache_hw, scratch)
        data["cache_build_s"] = time.perf_counter() - start
        cached = PolypDataset(folder, stems, input_hw, augment, cache=cache)
        seconds = time_items(cached, args.items)
        data["cached_s_per_epoch"] = seconds / args.items * epoch_items
        data["cache_hw"] = list(cache_hw)
        data["cache_bytes"] = cache.images.nbytes + cache.masks.nbytes
    data["speedup"] = (
        data["decode_every_epoch_s_per_epoch"] / data["cached_s_per_epoch"]
    )
    result["data"] = data

    spec = ModelSpec(
        architecture=args.architecture,
        encoder_name=args.encoder,
        input_hw=input_hw,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        threshold=0.5,
        class_name="polyp",
        model_kwargs={},
    )
    compute = {
        "architecture": args.architecture,
        "batch": 8,
        "threads": args.threads,
        "channels_last": True,
    }
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, *input_hw, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, 1, *input_hw, generator=generator) > 0.7).float()
    # Both precisions step in alternating order, so a change in background load
    # hits them alike; the first step of each (allocation, kernel choice) is dropped.
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        network = build_network(spec, encoder_weights=None)
        network = network.to(memory_format=torch.channels_last).train()
        runs[precision] = (network, torch.optim.Adam(network.parameters(), 1e-3), [])
    for round_index in range(args.steps + 1):
        order = ("fp32", "bf16") if round_index % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            network, optimizer, times = runs[precision]
            start = time.perf_counter()
            with torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled=precision == "bf16"
            ):
                out = network(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    for precision, (_, _, times) in runs.items():
        timed = sorted(times[1:])
        compute[f"{precision}_s_per_step"] = timed[len(timed) // 2]
        compute[f"{precision}_steps_s"] = [round(t, 3) for t in times[1:]]
    compute["bf16_speedup"] = compute["fp32_s_per_step"] / compute["bf16_s_per_step"]
    result["compute"] = compute
    result["cpu"]["load_average_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
