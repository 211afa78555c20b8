"""Time scaling a network-size mask to the frame: around the mask only, or whole.

A 320x320 map holding one polyp-sized box (80x100 map pixels) is scaled to 720p
and 1080p by ``streamseg.regions.scale_mask`` (only the part around the mask's
pixels is resized) and by one ``cv2.resize`` of the whole mask. Prints the mean
milliseconds of ``--calls`` calls after one warm-up, and whether the two agree.

    python benchmarks/mask_scaling.py --calls 100
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from streamseg.regions import scale_mask


def whole(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    levels = mask.view(np.uint8) * np.uint8(255)
    return cv2.resize(levels, hw[::-1], interpolation=cv2.INTER_LINEAR) >= 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    mask = np.zeros((320, 320), bool)
    mask[100:180, 120:220] = True
    for hw in ((720, 1280), (1080, 1920)):
        timings = {}
        for name, scale in (("around the mask", scale_mask), ("whole mask", whole)):
            scale(mask, hw)
            start_s = time.perf_counter()
            for _ in range(args.calls):
                scale(mask, hw)
            timings[name] = (time.perf_counter() - start_s) / args.calls * 1e3
        same = np.array_equal(scale_mask(mask, hw), whole(mask, hw))
        print(
            f"{hw[1]}x{hw[0]}: "
            + ", ".join(f"{name} {ms:.2f} ms" for name, ms in timings.items())
            + f"; identical: {same}"
        )


if __name__ == "__main__":
    main()
