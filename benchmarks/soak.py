"""Soak test: ``streamseg run`` for N minutes at real time from a looping source.

The criterion: 20 minutes at real time with resident memory flat (growth
under 5 %) and no frame-count drift. This script runs the real pipeline
(:func:`streamseg.app.run`: paced newest-frame source, inference, smoothing,
overlay, H.264 recording on its thread, JSONL events) on a clip that loops
with continuing indices and timestamps, samples the process's resident set
size (RSS) every ``--sample-s`` seconds, and reports:

* ``rss_growth_percent``: median RSS of the last 10 % of samples vs the median
  of the samples in the minute after ``--warmup-s`` (allocator and caches
  settle during warm-up);
* ``frame_count_drift``: frames the looping source produced minus frames the
  pipeline accounted for (received + counted as dropped); must be 0;
* ``wall_drift_s``: wall time minus source time (real-time pacing).

Usage (the full 20-minute run; needs an idle machine)::

    .venv/bin/python benchmarks/soak.py --minutes 20 --json soak.json

A quick smoke: ``--minutes 0.5 --warmup-s 5``. Exit code 0; with ``--strict``,
1 when the growth or the drift fails the criteria.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from streamseg import app as app_module  # noqa: E402
from streamseg.app import StreamConfig, run  # noqa: E402
from streamseg.config import load_config  # noqa: E402
from streamseg.frames import Frame  # noqa: E402
from streamseg.sources import Source, paced, read_video  # noqa: E402

GROWTH_LIMIT_PERCENT = 5.0
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * PAGE_BYTES / 1e6


class RssSampler:
    """Sample :func:`rss_mb` every ``period_s`` on a daemon thread."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._start_s = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._start_s, rss_mb()))
            if self._stop.wait(self.period_s):
                return


@dataclasses.dataclass
class LoopingClip:
    """Frames of ``path`` over and over, indices and timestamps continuing, for a while.

    Attributes:
        produced: Frames yielded so far (read by the report).
    """

    path: Path
    duration_s: float
    fps: float
    produced: int = 0

    def frames(self) -> Iterator[Frame]:
        period_s = 1.0 / self.fps
        offset_s = 0.0
        while True:
            last_s = 0.0
            for frame in read_video(str(self.path)):
                timestamp_s = offset_s + frame.timestamp_s
                if timestamp_s >= self.duration_s:
                    return
                yield Frame(self.produced, timestamp_s, frame.pixels)
                self.produced += 1
                last_s = frame.timestamp_s
            offset_s += last_s + period_s


def make_clip(path: Path, fps: float, size_wh: tuple[int, int], seconds: float) -> Path:
    """A clip of a disc drifting over a textured background (H.264, yuv420p)."""
    from fractions import Fraction

    import av
    import numpy as np

    width, height = size_wh
    count = max(int(seconds * fps), 2)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack(
        [60 + 30 * np.sin(xx / 17.0), 30 + 20 * np.cos(yy / 11.0), 20 + 0 * xx], -1
    ).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001)
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for index in range(count):
            image = background.copy()
            cx = width * (0.2 + 0.6 * index / count)
            inside = (xx - cx) ** 2 + (yy - height / 2) ** 2 <= (height / 6) ** 2
            image[inside] = (220, 90, 70)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def tiny_model(folder: Path) -> Path:
    """Random weights (Unet/resnet18 at 64x64): timing and memory only, no accuracy."""
    import torch

    from streamseg.model import ModelSpec, build_network, save_model

    spec = ModelSpec(
        architecture="Unet",
        encoder_name="resnet18",
        input_hw=(64, 64),
        threshold=0.5,
        model_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        provenance={"dataset": "none (soak benchmark, random weights)"},
    )
    torch.manual_seed(0)
    return save_model(folder / "soak-tiny.safetensors", build_network(spec), spec)


def growth_percent(
    samples: list[tuple[float, float]], warmup_s: float
) -> tuple[float, float, float]:
    """(baseline MB, final MB, growth %) from (seconds, MB) samples."""
    after = [mb for t, mb in samples if t >= warmup_s] or [mb for _, mb in samples]
    window = [mb for t, mb in samples if warmup_s <= t < warmup_s + 60] or after[:1]
    tail = after[-max(len(after) // 10, 1) :]
    baseline, final = statistics.median(window), statistics.median(tail)
    return baseline, final, 100.0 * (final - baseline) / baseline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="run length")
    parser.add_argument("--fps", type=float, default=30.0, help="source frame rate")
    parser.add_argument("--size", default="640x480", help="clip size WxH")
    parser.add_argument(
        "--clip", type=Path, help="loop this video (default: synthetic)"
    )
    parser.add_argument(
        "--model", type=Path, help="model file (default: bundled, else tiny random)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sample period")
    parser.add_argument(
        "--warmup-s", type=float, default=60.0, help="RSS baseline starts here"
    )
    parser.add_argument("--no-record", action="store_true", help="no MP4/JSONL output")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a failure")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    from streamseg.model import default_model_path

    duration_s = args.minutes * 60.0
    with tempfile.TemporaryDirectory(prefix="streamseg-soak-") as scratch:
        work = Path(scratch)
        width, height = (int(side) for side in args.size.lower().split("x"))
        clip = args.clip or make_clip(work / "loop.mp4", args.fps, (width, height), 10)
        model = args.model or default_model_path() or tiny_model(work)
        looping = LoopingClip(clip, duration_s, args.fps)
        overrides = [
            f"source.uri={clip}",
            f"model.path={model}",
            f"model.device={args.device}",
        ]
        if args.threads:
            overrides.append(f"model.threads={args.threads}")
        if not args.no_record:
            overrides += [
                f"output.video={work / 'soak.mp4'}",
                f"output.events={work / 'soak.jsonl'}",
            ]
        config = load_config(StreamConfig, None, overrides)

        def open_looping(settings, **_options):
            return Source(
                f"{clip} (looped, {args.minutes:g} min)",
                "file",
                True,
                args.fps,
                None,
                lambda: paced(looping.frames()),
            )

        app_module.open_source = open_looping
        print(
            f"soak: {args.minutes:g} min at {args.fps:g} fps, model {model}, "
            f"{width}x{height}",
            flush=True,
        )
        start_s = time.monotonic()
        with RssSampler(args.sample_s) as sampler:
            stats = run(config)
        wall_s = time.monotonic() - start_s
        recorded = (
            (work / "soak.jsonl").read_text().count("\n")
            if not args.no_record
            else None
        )

    warmup_s = min(args.warmup_s, 0.5 * wall_s)
    baseline, final, growth = growth_percent(sampler.samples, warmup_s)
    accounted = stats.frames_in + stats.frames_dropped
    report = {
        "minutes": args.minutes,
        "fps": args.fps,
        "size_wh": [width, height],
        "model": str(model),
        "device": args.device,
        "wall_s": round(wall_s, 2),
        "wall_drift_s": round(wall_s - duration_s, 2),
        "frames_expected": looping.produced,
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "frames_dropped": stats.frames_dropped,
        "frames_recorded": recorded,
        "frame_count_drift": looping.produced - accounted,
        "throughput_fps": round(stats.throughput_fps, 2),
        "latency_ms": {str(q): round(v, 1) for q, v in stats.latency_ms.items()},
        "rss_baseline_mb": round(baseline, 1),
        "rss_final_mb": round(final, 1),
        "rss_max_mb": round(max(mb for _, mb in sampler.samples), 1),
        "rss_growth_percent": round(growth, 2),
        "rss_samples_mb": [[round(t, 1), round(mb, 1)] for t, mb in sampler.samples],
        "warmup_s": warmup_s,
        "stopped": stats.stopped,
    }
    passed = growth < GROWTH_LIMIT_PERCENT and report["frame_count_drift"] == 0
    if recorded is not None:
        passed = passed and recorded == stats.frames_out
    report["passed"] = passed
    print(
        f"frames: {looping.produced} produced, {stats.frames_in} in, "
        f"{stats.frames_out} out, {stats.frames_dropped} dropped, drift "
        f"{report['frame_count_drift']}; wall {wall_s:.1f} s (drift "
        f"{report['wall_drift_s']:+.2f} s); {stats.throughput_fps:.1f} fps"
    )
    print(
        f"rss growth {growth:+.2f} % (baseline {baseline:.1f} MB after "
        f"{warmup_s:g} s, final {final:.1f} MB, max {report['rss_max_mb']} MB, "
        f"{len(sampler.samples)} samples): {'PASS' if passed else 'FAIL'}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
