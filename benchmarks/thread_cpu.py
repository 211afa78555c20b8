"""Where the processor time of one pipeline run goes, thread by thread (Linux).

Runs ``streamseg.app.run`` (the shipped defaults from configs/stream.yaml,
annotated MP4 written unless ``--no-video``) on the bench's 720p or 1080p clip,
as a file or paced at its frame rate as a live source, and reads every
thread's processor time from ``/proc/self/task`` every 50 ms. Prints
milliseconds of processor time per frame written, per thread, named by its
Python name where it has one (``streamseg-inference``, ``MainThread``,
``streamseg-encoder``, ``streamseg-source``) and by its system name otherwise:
``python`` for threads started by native libraries (OpenVINO's inference
workers, libx264's encoder threads), ``av:h264:*`` for the decoder's.

    python benchmarks/thread_cpu.py --resolution 720p --mode live --threads 2
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import time

import torch

from streamseg.app import StreamConfig, run
from streamseg.config import load_config
from streamseg.cpu import cpu_info
from streamseg.evaluation.bench_inputs import (
    DEFAULT_WORK_DIR,
    RESOLUTIONS,
    bench_clips,
)
from streamseg.segmenter import Segmenter, prepare_device


def thread_times() -> dict[int, tuple[str, float]]:
    """Every thread of this process: native id -> (system name, processor seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as file:
                name = file.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        # utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
        times[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="720p")
    parser.add_argument("--mode", choices=("file", "live"), default="live")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-video", action="store_true", help="write no MP4")
    parser.add_argument("--config", default="configs/stream.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = DEFAULT_WORK_DIR
    (clip,) = bench_clips(args.frames, (args.resolution,)).values()
    overrides = [
        f"source.uri={clip}",
        "source.kind=file",
        f"source.realtime={'true' if args.mode == 'live' else 'false'}",
        "output.view=none",
        f"model.threads={args.threads}",
    ]
    if not args.no_video:
        overrides.append(f"output.video={work / 'thread-cpu.mp4'}")
    if args.model:
        overrides.append(f"model.path={args.model}")
    config = load_config(StreamConfig, args.config, overrides)
    segmenter = Segmenter.from_settings(config.model, prepare_device(config.model))
    print(cpu_info().describe(), "|", segmenter.describe())

    names: dict[int, str] = {}
    last: dict[int, tuple[str, float]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for thread in threading.enumerate():
                if thread.native_id is not None:
                    names[thread.native_id] = thread.name
            last.update(thread_times())
            time.sleep(0.05)

    before = thread_times()
    sampler = threading.Thread(target=sample, name="sampler")
    sampler.start()
    start_s = time.monotonic()
    stats = run(config, segmenter=segmenter)
    wall_s = time.monotonic() - start_s
    stop.set()
    sampler.join()
    last.update(thread_times())
    per_thread: collections.Counter[str] = collections.Counter()
    for tid, (system_name, seconds) in last.items():
        started_s = before.get(tid, ("", 0.0))[1]
        per_thread[names.get(tid, system_name)] += seconds - started_s
    total_s = sum(per_thread.values())
    frames = max(stats.frames_out, 1)
    print(
        f"{args.resolution} {args.mode}: {stats.frames_out} frames, "
        f"{stats.frames_dropped} dropped, {wall_s:.1f} s, "
        f"{1000 * total_s / frames:.1f} ms of CPU per frame "
        f"({total_s / wall_s:.2f} cores busy, start and end included)"
    )
    for name, seconds in per_thread.most_common():
        if seconds > 0:
            print(f"  {name:24s} {1000 * seconds / frames:6.1f} ms/frame")


if __name__ == "__main__":
    main()
