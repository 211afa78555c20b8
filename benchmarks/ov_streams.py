"""The network alone with one OpenVINO stream against several, idle and under load.

Runs a model's INT8 artefact (default: the bundled model's) through the
runtime's own runner (``streamseg.backends.openvino.OpenVinoRunner``) with
``--threads`` threads, once as one stream (latency hint: every call on all
the threads) and once as ``--streams`` streams (throughput hint: the threads
split between independent streams, that many calls in flight), alternated
``--repeats`` times. ``--load`` adds a busy Python thread that keeps that
fraction of one core busy (5 ms slices), standing in for the pipeline's
decoding, drawing and encoding. Prints frames per second and processor
milliseconds per frame (every thread of this process, the load included).

    python benchmarks/ov_streams.py --threads 2 --repeats 2 --load 0
    python benchmarks/ov_streams.py --threads 2 --repeats 2 --load 0.6
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from streamseg.backends.openvino import OpenVinoRunner, int8_paths
from streamseg.cpu import cpu_info
from streamseg.model import default_model_path, read_spec

SLICE_S = 0.005


def busy(fraction: float, stop: threading.Event) -> None:
    """Keep ``fraction`` of one core busy until ``stop`` is set."""
    while not stop.is_set():
        start_s = time.perf_counter()
        while time.perf_counter() - start_s < SLICE_S * fraction:
            pass
        time.sleep(SLICE_S * (1 - fraction))


def measure(
    runner: OpenVinoRunner, images: torch.Tensor, frames: int, load: float
) -> tuple[float, float]:
    """Frames per second and CPU ms per frame, ``runner.streams`` calls in flight."""
    calls = max(1, frames // len(images))
    stop = threading.Event()
    loader = threading.Thread(target=busy, args=(load, stop), daemon=True)
    if load > 0:
        loader.start()
    try:
        with ThreadPoolExecutor(runner.streams) as pool:
            list(pool.map(runner, [images] * runner.streams))  # warm-up
            start_s, cpu_start_s = time.perf_counter(), time.process_time()
            list(pool.map(runner, [images] * calls))
            wall_s = time.perf_counter() - start_s
            cpu_s = time.process_time() - cpu_start_s
    finally:
        stop.set()
        if loader.is_alive():
            loader.join()
    done = calls * len(images)
    return done / wall_s, cpu_s / done * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="model file with an INT8 artefact (default: the bundled one)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="frames per call")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--load", type=float, default=0.0, help="busy fraction of one core (0-1)"
    )
    args = parser.parse_args()
    if not 0.0 <= args.load < 1.0:
        parser.error("--load: expected a fraction from 0 to below 1")
    model = args.model or default_model_path()
    paths = int8_paths(model)
    if not paths.exist():
        parser.error(f"{paths.xml}: no INT8 artefact; make it with training quantize")
    height, width = read_spec(model).input_hw
    print(cpu_info().describe())
    runners = {
        streams: OpenVinoRunner.int8(paths.xml, threads=args.threads, streams=streams)
        for streams in (1, args.streams)
    }
    images = torch.rand((args.batch, 3, height, width))
    results: dict[int, list[tuple[float, float]]] = {s: [] for s in runners}
    for repeat in range(args.repeats):
        for streams, runner in runners.items():
            fps, cpu_ms = measure(runner, images, args.frames, args.load)
            results[streams].append((fps, cpu_ms))
            print(
                f"repeat {repeat + 1}: {streams} stream(s), batch {args.batch}, "
                f"load {args.load:g}: {fps:.1f} fps, {cpu_ms:.1f} ms CPU/frame",
                flush=True,
            )
    for streams, rows in results.items():
        fps = statistics.median(row[0] for row in rows)
        cpu_ms = statistics.median(row[1] for row in rows)
        print(f"median, {streams} stream(s): {fps:.1f} fps, {cpu_ms:.1f} ms CPU/frame")


if __name__ == "__main__":
    main()
