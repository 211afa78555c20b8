"""Kill a recording process at random moments and count what still decodes.

    python benchmarks/kill_recorder.py [--kills 8] [--suffix .mp4] [--size 640x480]

Each round starts a child process that records noise frames (large fragments:
about 100 kB a frame at 640x480) with :class:`streamseg.sinks.VideoRecorder`
at 25 fps in real time, kills it with SIGKILL after a random 1-3 s, and
decodes the file with PyAV. Prints, per kill, the frames handed to the
recorder, the frames decoded and the loss in seconds; the run fails (exit 1)
if any file does not decode to the end or loses more than one second.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0


def child(path: str, width: int, height: int) -> None:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from streamseg.sinks import VideoRecorder

    recorder = VideoRecorder(path, nominal_fps=FPS)
    base = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    start_s = time.monotonic()
    for index in range(1_000_000):
        recorder.write_image(np.roll(base, index * 3, axis=1), index / FPS)
        print(index + 1, flush=True)  # frames handed to the recorder
        time.sleep(max(0.0, start_s + (index + 1) / FPS - time.monotonic()))


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--suffix", default=".mp4", help=".mp4 or .mkv")
    parser.add_argument("--size", default="640x480", help="WxH")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    if args.child:
        child(args.child, width, height)
        return 0
    rng = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="streamseg-kill-") as folder:
        for round_number in range(args.kills):
            path = Path(folder) / f"kill{round_number}{args.suffix}"
            process = subprocess.Popen(
                [sys.executable, __file__, "--child", str(path), "--size", args.size],
                stdout=subprocess.PIPE,
                text=True,
            )
            after_s = rng.uniform(1.0, 3.0)
            first_s, handed = None, 0
            for line in process.stdout:
                handed = int(line)
                first_s = first_s or time.monotonic()
                if time.monotonic() - first_s > after_s:
                    break
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            try:
                decoded, note = decoded_frames(path), ""
            except Exception as error:  # what a strict reader would hit
                decoded, note = -1, f"  DOES NOT DECODE TO THE END: {error}"
            lost_s = (handed - decoded) / FPS
            failures += decoded < 0 or lost_s > 1.0
            print(
                f"kill {round_number + 1}: after {after_s:.2f} s, {handed} frames "
                f"handed over, {decoded} decoded, lost {lost_s:.2f} s, "
                f"{path.stat().st_size / 1e6:.1f} MB{note}"
            )
    print(f"{args.kills - failures} of {args.kills} kills left a file that decodes")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
