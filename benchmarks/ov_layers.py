"""Where the OpenVINO network's time goes, layer by layer (CPU plugin's own counters).

Compiles a model's INT8 artefact (default: the bundled model's) the way the
runtime does (latency hint, f32 float layers, ``--threads`` threads) with
OpenVINO's per-node performance counters on, runs ``--calls`` inferences of
random input at the model's input size after ``--warmup`` calls, and prints
the milliseconds per call summed by (layer type, kernel), then the slowest
nodes. The kernel name says the precision each layer ran in (``..._I8`` for
INT8, ``..._f32`` / ``..._FP32`` for float): a large layer left in float is
where quantization has more to give.

    python benchmarks/ov_layers.py --threads 2 --calls 20
    python benchmarks/ov_layers.py --threads 2 --calls 20 --depth 3   # + by module

``--depth N`` also sums the time by the first N parts of each node's module
path (``segmentation.decoder.seg_blocks``, ``segmentation.encoder.model``, ...):
which part of the network costs what.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

from streamseg.backends.openvino import import_openvino, int8_paths
from streamseg.cpu import cpu_info
from streamseg.model import default_model_path, read_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="model file with an INT8 artefact (default: the bundled one)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=15, help="slowest nodes listed")
    parser.add_argument(
        "--depth", type=int, default=0, help="also sum by module path (N parts)"
    )
    args = parser.parse_args()
    model = args.model or default_model_path()
    paths = int8_paths(model)
    if not paths.exist():
        parser.error(f"{paths.xml}: no INT8 artefact; make it with training quantize")
    height, width = read_spec(model).input_hw
    openvino = import_openvino()
    compiled = openvino.Core().compile_model(
        str(paths.xml),
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": args.threads,
            "PERF_COUNT": True,
        },
    )
    request = compiled.create_infer_request()
    images = np.random.default_rng(0).random((1, 3, height, width), np.float32)
    for _ in range(args.warmup):
        request.infer({0: images})
    by_kind: collections.Counter[tuple[str, str]] = collections.Counter()
    by_node: collections.Counter[str] = collections.Counter()
    wall_s = 0.0
    for _ in range(args.calls):
        start_s = time.perf_counter()
        request.infer({0: images})
        wall_s += time.perf_counter() - start_s
        for node in request.profiling_info:
            seconds = node.real_time.total_seconds()
            by_kind[(node.node_type, node.exec_type)] += seconds
            by_node[node.node_name] += seconds
    calls = args.calls
    total_s = sum(by_kind.values())
    print(cpu_info().describe(), "|", paths.xml.name, f"| {args.threads} threads")
    print(
        f"{1000 * wall_s / calls:.1f} ms per call (wall), "
        f"{1000 * total_s / calls:.1f} ms summed over layers"
    )
    print("ms/call  share  layer type / kernel")
    for (kind, kernel), seconds in by_kind.most_common():
        if seconds > 0:
            print(
                f"{1000 * seconds / calls:7.2f}  {100 * seconds / total_s:4.1f} %  "
                f"{kind} / {kernel}"
            )
    if args.depth > 0:
        by_module: collections.Counter[str] = collections.Counter()
        for name, seconds in by_node.items():
            path = name.split("/")[0].removeprefix("__module.").split(".")
            by_module[".".join(path[: args.depth])] += seconds
        print(f"by module (first {args.depth} parts of the path):")
        for module, seconds in by_module.most_common():
            if seconds > 0:
                print(
                    f"{1000 * seconds / calls:7.2f}  {100 * seconds / total_s:4.1f} %  "
                    f"{module}"
                )
    print(f"slowest {args.top} nodes:")
    for name, seconds in by_node.most_common(args.top):
        print(f"{1000 * seconds / calls:7.2f}  {name}")


if __name__ == "__main__":
    main()
