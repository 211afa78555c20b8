"""Two or more model files through the same pipeline, alternated, file and live.

Runs ``streamseg.app.run`` with the shipped defaults (configs/stream.yaml:
backend auto, so OpenVINO INT8 where a model has its artefact; annotated MP4
written) on the bench's 720p and 1080p clips, once as a file (as fast as
possible) and once paced at 25 fps as a live source (newest frame wins), for
each model in turn, ``--repeats`` times, so that a slow spell of a shared or
virtual machine hits every model alike. Prints, per run and as medians per
model, clip and mode: frames per second after the warm-up frames, frames
dropped, grab -> overlay latency p50 and p99 (live) and processor milliseconds
per frame (every thread of this process).

    python benchmarks/pipeline_ab.py --threads 2 --frames 150 --repeats 3 \
        --models streamseg/assets/default.safetensors,OTHER.safetensors

``--sets`` runs each model once per group of ``model`` settings instead
(comma-separated ``KEY=VALUE`` in a group), e.g. one inference stream
against two:

    python benchmarks/pipeline_ab.py --threads 2 --frames 150 --repeats 3 \
        --sets model.streams=1 model.streams=2

``--models auto`` leaves the model to the tool (``model.path`` unset), as
``streamseg run`` without ``--model``: the bundled default, and for a live
source the choice of :mod:`streamseg.live_model` (made at each run's start,
logged):

    python benchmarks/pipeline_ab.py --threads 2 --frames 150 --repeats 3 \
        --models auto,streamseg/assets/default.safetensors --modes live

or the network at a smaller input than the model file's:

    python benchmarks/pipeline_ab.py --threads 2 --frames 150 --repeats 3 \
        --sets model.input_hw=[320,320] model.input_hw=[256,256]
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import numpy as np
from ab_options import ab_clips, ab_parser

from streamseg.app import StreamConfig, run
from streamseg.config import load_config
from streamseg.cpu import cpu_info
from streamseg.evaluation.bench_inputs import DEFAULT_WORK_DIR
from streamseg.evaluation.bench_timing import (
    LatencyProbe,
    steady_cpu,
    steady_throughput,
)
from streamseg.segmenter import Segmenter, prepare_device

WARMUP_FRAMES = 8
AUTO = "auto"  # --models entry: model.path unset


def main() -> None:
    parser = ab_parser(__doc__)
    parser.add_argument(
        "--models",
        default="streamseg/assets/default.safetensors",
        help="model files, comma-separated, or auto: the model left to the tool "
        "(default: the bundled model)",
    )
    parser.add_argument(
        "--sets",
        nargs="+",
        default=[""],
        help="groups of model settings, each KEY=VALUE[,KEY=VALUE] (default: none)",
    )
    parser.add_argument(
        "--modes", default="file,live", help="file, live or both (default both)"
    )
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    clips = ab_clips(args)
    work = DEFAULT_WORK_DIR
    models = [Path(path) for path in args.models.split(",")]
    segmenters: dict[str, tuple[dict[str, Segmenter | None], list[str]]] = {}
    for path in models:
        for group in args.sets:
            # Commas split settings, except inside brackets: model.input_hw=[256,256].
            overrides = [item for item in re.split(r",(?![^\[]*\])", group) if item]
            if str(path) == AUTO:  # built by each run, as streamseg run does
                name = " ".join([AUTO, *overrides])
                segmenters[name] = (dict.fromkeys(modes), overrides)
                continue
            settings = load_config(
                StreamConfig,
                args.config,
                [f"model.path={path}", f"model.threads={args.threads}", *overrides],
            ).model
            # Two files of one name (default.safetensors twice) keep their paths apart.
            same_name = sum(other.name == path.name for other in models) > 1
            name = " ".join([str(path) if same_name else path.name, *overrides])
            device = prepare_device(settings)
            # As streamseg run builds it for a file and for a live source.
            per_mode = {
                mode: Segmenter.from_settings(settings, device, live=mode == "live")
                for mode in modes
            }
            segmenters[name] = (per_mode, [f"model.path={path}", *overrides])
            for mode, segmenter in per_mode.items():
                print(name, mode, "|", segmenter.describe())
    print(cpu_info().describe())
    rows: dict[tuple[str, str, str], list[tuple[float, ...]]] = {}
    for repeat in range(args.repeats):
        for clip_name, clip in clips.items():
            for name, (per_mode, model_sets) in segmenters.items():
                for mode, segmenter in per_mode.items():
                    config = load_config(
                        StreamConfig,
                        args.config,
                        [
                            f"source.uri={clip}",
                            "source.kind=file",
                            f"source.realtime={'true' if mode == 'live' else 'false'}",
                            f"output.video={work / 'pipeline-ab.mp4'}",
                            "output.view=none",
                            f"model.threads={args.threads}",
                            *model_sets,
                        ],
                    )
                    probe = LatencyProbe(live=mode == "live")
                    stats = run(config, segmenter=segmenter, sinks=[probe])
                    batch = 1 if mode == "live" else config.model.batch_size
                    fps = steady_throughput(probe.done_s, WARMUP_FRAMES, batch)
                    cpu = steady_cpu(probe, WARMUP_FRAMES, batch)
                    p50_ms, p99_ms = (
                        np.percentile(probe.latency_s, [50, 99]) * 1000
                        if probe.latency_s
                        else (float("nan"), float("nan"))
                    )
                    rows.setdefault((clip_name, mode, name), []).append(
                        (fps, stats.frames_dropped, p50_ms, p99_ms, cpu.ms_per_frame)
                    )
                    print(
                        f"repeat {repeat + 1}: {clip_name} {mode} {name}: "
                        f"{fps:.1f} fps, {stats.frames_dropped} dropped, "
                        f"p50 / p99 {p50_ms:.0f} / {p99_ms:.0f} ms, "
                        f"CPU {cpu.ms_per_frame:.1f} ms/frame",
                        flush=True,
                    )
    print("medians (fps, dropped, live p50 / p99 ms, CPU ms/frame):")
    for (clip_name, mode, name), values in rows.items():
        medians = [statistics.median(column) for column in zip(*values, strict=True)]
        print(
            f"  {clip_name} {mode} {name}: {medians[0]:.1f} fps, "
            f"{medians[1]:.0f} dropped, p50 / p99 {medians[2]:.0f} / "
            f"{medians[3]:.0f} ms, CPU {medians[4]:.1f} ms/frame"
        )


if __name__ == "__main__":
    main()
