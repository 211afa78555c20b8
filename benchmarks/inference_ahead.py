"""The pipeline with inference one batch ahead on its own thread, against in the loop.

Runs ``streamseg.app.run`` (the shipped defaults from configs/stream.yaml, one
loaded segmenter, annotated MP4 written) on the bench's 720p and 1080p clips,
alternating the two ways ``--repeats`` times, so that a slow spell of a shared
or virtual machine hits both alike. Prints frames per second of every run
(frames written / wall time of the run) and the median per way and clip.

    python benchmarks/inference_ahead.py --threads 2 --frames 150 --repeats 3
"""

from __future__ import annotations

import statistics

from ab_options import ab_clips, ab_parser

from streamseg.app import StreamConfig, run
from streamseg.config import load_config
from streamseg.cpu import cpu_info
from streamseg.evaluation.bench_inputs import DEFAULT_WORK_DIR
from streamseg.segmenter import Segmenter, prepare_device


def main() -> None:
    parser = ab_parser(__doc__)
    args = parser.parse_args()
    clips = ab_clips(args)
    work = DEFAULT_WORK_DIR
    configs = {
        name: load_config(
            StreamConfig,
            args.config,
            [
                f"source.uri={clip}",
                f"output.video={work / 'inference-ahead.mp4'}",
                "output.view=none",
                f"model.threads={args.threads}",
            ],
        )
        for name, clip in clips.items()
    }
    model = next(iter(configs.values())).model
    segmenter = Segmenter.from_settings(model, prepare_device(model))
    print(cpu_info().describe(), "|", segmenter.describe())
    fps: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for name, config in configs.items():
            for way, ahead in (("in the loop", False), ("ahead", True)):
                stats = run(config, segmenter=segmenter, infer_ahead=ahead)
                value = stats.frames_out / stats.wall_s
                fps.setdefault((name, way), []).append(value)
                print(f"repeat {repeat + 1}: {name} {way}: {value:.1f} fps")
    for (name, way), values in fps.items():
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{name} {way}: median {statistics.median(values):.1f} fps ({runs})")


if __name__ == "__main__":
    main()
