"""What crash-safe recording costs: size and CPU of fragmented vs regular MP4.

    python benchmarks/recording_formats.py [CLIP.mp4 ...] [--scale WxH] [--repeat N]

Decodes each clip into memory (default: samples/demo.mp4), optionally resized,
then records it three ways with the recorder's settings (libx264 ultrafast,
crf 20, 90 kHz timestamps) to files in a temporary folder:

* ``regular``: a plain MP4 with x264's own keyframe placement (the baseline:
  unplayable after a kill);
* ``fragmented``: :class:`streamseg.sinks.VideoRecorder` as it records,
  timed up to the end of the fragmented file (keyframes every second, 0.5 s
  fragments);
* ``+ remux``: the clean-stop rewrite into a regular faststart MP4
  (:func:`streamseg.mp4.finalize`), timed alone.

Prints process CPU time (user + system, all threads), wall time and bytes
per frame. On a shared machine the times are contended; the sizes are not.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamseg import mp4
from streamseg.sinks import VIDEO_TIME_BASE

REPO = Path(__file__).resolve().parents[1]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def record(path: Path, images, fps: float, *, crash_safe: bool) -> None:
    """Encode like the recorder's encoder thread (regular or crash-safe)."""
    options = mp4.muxer_options(path) if crash_safe else {}
    keyframe_ticks = round(mp4.KEYFRAME_INTERVAL_S / VIDEO_TIME_BASE)
    last_key = None
    height, width = images[0].shape[:2]
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator())
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = VIDEO_TIME_BASE
        stream.time_base = VIDEO_TIME_BASE
        stream.options = {"crf": "20", "preset": "ultrafast"}
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = round(index / fps / VIDEO_TIME_BASE)
            frame.time_base = VIDEO_TIME_BASE
            if crash_safe and (
                last_key is None or frame.pts - last_key >= keyframe_ticks
            ):
                frame.pict_type = av.video.frame.PictureType.I
                last_key = frame.pts
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--scale", help="resize frames to WxH, e.g. 1280x720")
    parser.add_argument("--repeat", type=int, default=1, help="play each clip N times")
    args = parser.parse_args()
    clips = args.clips or [REPO / "samples" / "demo.mp4"]
    folder = Path(tempfile.mkdtemp(prefix="streamseg-recording-"))
    try:
        for clip in clips:
            with av.open(str(clip)) as container:
                stream = container.streams.video[0]
                fps = float(stream.average_rate or 25)
                images = [
                    f.to_ndarray(format="rgb24") for f in container.decode(stream)
                ]
            if args.scale:
                width, height = map(int, args.scale.split("x"))
                images = [
                    cv2.resize(i, (width, height), interpolation=cv2.INTER_AREA)
                    for i in images
                ]
            images = images * args.repeat
            height, width = images[0].shape[:2]
            print(f"{clip.name}: {len(images)} frames {width}x{height} at {fps:g} fps")
            sizes = {}
            for name, crash_safe in (("regular", False), ("fragmented", True)):
                path = folder / f"{name}.mp4"
                cpu0, wall0 = cpu_s(), time.perf_counter()
                record(path, images, fps, crash_safe=crash_safe)
                cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
                sizes[name] = path.stat().st_size
                print(
                    f"  {name:<11} {sizes[name] / len(images) / 1000:7.2f} kB/frame "
                    f"({sizes[name] / 1e6:.2f} MB)  cpu {cpu:6.2f} s  "
                    f"wall {wall:6.2f} s"
                    f"  ({cpu / len(images) * 1000:.2f} ms cpu/frame)"
                )
            path = folder / "fragmented.mp4"
            cpu0, wall0 = cpu_s(), time.perf_counter()
            assert mp4.finalize(path)
            cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
            final = path.stat().st_size
            print(
                f"  + remux    {final / len(images) / 1000:7.2f} kB/frame "
                f"({final / 1e6:.2f} MB)  cpu {cpu:6.2f} s  wall {wall:6.2f} s"
                f"  ({sizes['fragmented'] / 1e6 / max(wall, 1e-9):.0f} MB/s)"
            )
            print(
                f"  size: fragmented / regular = "
                f"{sizes['fragmented'] / sizes['regular']:.3f}, "
                f"final / regular = {final / sizes['regular']:.3f}"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
