"""The local engines: one video after another in this process, or ``workers`` processes.

Each process loads the model once (:class:`~streamseg.batch.video.VideoProcessor`)
and reports progress to the driver, which alone writes the run table.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamseg.batch.jobs import VideoJob
from streamseg.batch.settings import BatchProgress, BatchSettings
from streamseg.batch.summary import BatchOutputs
from streamseg.batch.video import Outcome, VideoProcessor

if TYPE_CHECKING:
    from streamseg.app import StreamConfig


class InProcessEngine:
    """One video after another in this process (the default)."""

    name = "local"

    def __init__(
        self,
        config: StreamConfig,
        settings: BatchSettings,
        model_sha256: str,
        progress: BatchProgress | None = None,
    ) -> None:
        self._processor = VideoProcessor(
            config, settings.out, settings.outputs, model_sha256
        )
        self._progress = progress
        self._stopped = False

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]:
        worker = self._processor.worker
        for job in jobs:
            if self._stopped:
                return
            if self._progress is not None:
                self._progress.started(worker, job.video_id)
            on_frames = (
                None
                if self._progress is None
                else lambda d, t: self._progress.frames(worker, d, t)
            )
            outcome = self._processor(job, on_progress=on_frames)
            yield outcome
            if outcome.status == "interrupted":
                raise KeyboardInterrupt

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        pass


class ProcessEngine:
    """``workers`` processes (spawned), each loading the model once.

    On a machine with several GPUs and ``model.device`` ``auto`` or
    ``cuda``, worker ``i`` uses ``cuda:{i mod GPUs}``. Workers ignore Ctrl-C;
    the driver stops them through a shared event (a video in flight is
    abandoned and its partial outputs removed), and a worker whose driver
    died stops by itself. A worker that dies (out of memory, killed) fails
    the videos in flight with a retryable error; the pool is then rebuilt.
    """

    name = "local"

    def __init__(
        self,
        config: StreamConfig,
        settings: BatchSettings,
        model_sha256: str,
        progress: BatchProgress | None = None,
    ) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._messages = self._context.Queue()
        self._progress = progress
        self._count = settings.workers or 1
        self._devices = _worker_devices(config.model.device, self._count)
        self._init = (config, settings.out, settings.outputs, model_sha256)
        self._pool: Any = None

    def _ensure_pool(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            slots = self._context.Queue()
            for device in self._devices:
                slots.put(device)
            self._pool = ProcessPoolExecutor(
                max_workers=self._count,
                mp_context=self._context,
                initializer=_init_worker,
                initargs=(
                    *self._init,
                    slots,
                    self._stop,
                    self._messages,
                    os.getpid(),
                ),
            )
        return self._pool

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = self._ensure_pool()
        futures = {pool.submit(_work, job): job for job in jobs}
        remaining = set(futures)
        broken = False
        while remaining:
            finished, remaining = wait(
                remaining, timeout=0.2, return_when=FIRST_COMPLETED
            )
            self._drain()
            for future in finished:
                job = futures[future]
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken = True
                    yield Outcome(
                        job.video_id,
                        "failed",
                        error="the worker process died (out of memory or killed)",
                        error_kind="internal",
                    )
        self._drain()
        if broken:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _drain(self) -> None:
        import queue

        while True:
            try:
                message = self._messages.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if self._progress is None:
                continue
            if message[0] == "started":
                self._progress.started(message[1], message[2])
            else:
                self._progress.frames(message[1], message[2], message[3])

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _worker_devices(device: str, count: int) -> list[str]:
    """The device for each local worker: GPUs round-robin where the config allows."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [device] * count


_WORKER: dict[str, Any] = {}


def _init_worker(
    config: StreamConfig,
    out: Path,
    outputs: BatchOutputs,
    model_sha256: str,
    slots: Any,
    stop: Any,
    messages: Any,
    parent_pid: int,
) -> None:
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides
    device = slots.get()
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, device=device)
    )
    _WORKER["processor"] = VideoProcessor(config, out, outputs, model_sha256)
    _WORKER["stop"] = stop
    _WORKER["messages"] = messages

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        stop.set()  # the driver died: abandon the video in flight, then exit
        time.sleep(30.0)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


def _work(job: VideoJob) -> Outcome:
    processor: VideoProcessor = _WORKER["processor"]
    stop = _WORKER["stop"]
    messages = _WORKER["messages"]
    worker = processor.worker
    messages.put(("started", worker, job.video_id))
    last = [0.0]

    def on_frames(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] > 0.2 or done == total:
            last[0] = now
            messages.put(("frames", worker, done, total))

    if stop.is_set():
        return Outcome(job.video_id, "interrupted", worker=worker)
    return processor(job, on_progress=on_frames, should_stop=stop.is_set)
