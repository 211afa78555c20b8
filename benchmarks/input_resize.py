"""Time the network-input resize of a frame: uint8 path against the float path.

Prints milliseconds per frame (mean of N calls after one warm-up) for
``streamseg.transforms.network_input(upload(frame))`` (uint8 antialiased resize,
then float) and ``resize(to_tensor(frame))`` (float, then resize), and the largest
difference between the two in grey levels.

    python benchmarks/input_resize.py --threads 2 --calls 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from streamseg.transforms import network_input, resize, to_tensor, upload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--input", type=int, default=320, help="input side, px")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.input, args.input)
    rng = np.random.default_rng(0)
    for height, width in ((720, 1280), (1080, 1920)):
        frame = rng.integers(0, 256, (height, width, 3), np.uint8)
        paths = {
            "uint8 resize, then float": lambda f=frame: network_input(upload(f), size),
            "float, then resize": lambda f=frame: resize(to_tensor(f), size),
        }
        results = {}
        for name, run in paths.items():
            results[name] = run()
            start_s = time.perf_counter()
            for _ in range(args.calls):
                run()
            ms = (time.perf_counter() - start_s) / args.calls * 1000
            print(f"{width}x{height} {name}: {ms:.1f} ms")
        a, b = results.values()
        levels = float((a - b).abs().max()) * 255
        print(f"{width}x{height} largest difference: {levels:.2f} grey levels")


if __name__ == "__main__":
    main()
