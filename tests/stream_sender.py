"""Send a synthetic clip as a live MPEG-TS stream over UDP, in real time.

The tests' "endoscope".

Run as a second process, as a real sender would be::

    python tests/stream_sender.py udp://127.0.0.1:5004 --seconds 2 --fps 25

Frames are a red disc on a dark background (``stream_media.disc_image``):
static (``--static``), so a test knows where the polyp is on every frame,
or moving. H.264 with a short GOP and no B-frames, so a receiver that joins
late starts decoding within a fraction of a second. Frames are paced by the
wall clock (one every ``1 / fps`` s), like a camera.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_media import disc_image

SIZE_HW = (120, 160)
DISC_CENTER_YX = (60.0, 80.0)
DISC_RADIUS = 30.0


def frame_image(index: int, fps: float, static: bool, hw: tuple[int, int]):
    """The disc for frame ``index``: fixed, or sliding across over 2 s."""
    height, width = hw
    scale = height / SIZE_HW[0]
    radius = DISC_RADIUS * scale
    if static:
        center = (DISC_CENTER_YX[0] * scale, DISC_CENTER_YX[1] * scale)
    else:
        phase = (index / fps) % 2.0 / 2.0
        center = (height / 2, radius + (width - 2 * radius) * phase)
    return disc_image(hw, center, radius)


def send(url: str, seconds: float, fps: float, static: bool, hw: tuple[int, int]):
    import av

    container = av.open(url, mode="w", format="mpegts")
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = hw
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, 90_000)
    stream.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "g": str(max(int(fps // 4), 1)),
        "crf": "18",
    }
    start_s = time.monotonic()
    count = round(seconds * fps)
    try:
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(
                frame_image(index, fps, static, hw), format="rgb24"
            )
            frame.pts = round(index / fps * 90_000)
            frame.time_base = Fraction(1, 90_000)
            container.mux(stream.encode(frame))
            delay_s = start_s + (index + 1) / fps - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
        container.mux(stream.encode(None))
    finally:
        container.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. udp://127.0.0.1:5004")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--static", action="store_true", help="the disc stays put")
    parser.add_argument("--height", type=int, default=SIZE_HW[0])
    parser.add_argument("--width", type=int, default=SIZE_HW[1])
    args = parser.parse_args(argv)
    url = args.url
    if url.startswith("udp://") and "pkt_size" not in url:
        url += ("&" if "?" in url else "?") + "pkt_size=1316"  # 7 TS packets
    send(url, args.seconds, args.fps, args.static, (args.height, args.width))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
