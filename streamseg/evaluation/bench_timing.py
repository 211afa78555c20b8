"""The three benchmark measurements: model only, the full pipeline, a naive loop.

Each returns a frozen result with throughput, latency percentiles and, for the
pipeline and the naive loop, time per stage. How each figure is measured is
stated in :data:`streamseg.evaluation.bench.METHOD`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from streamseg.app import StreamConfig, run
from streamseg.device import (
    select_device,
    synchronize,
)
from streamseg.evaluation.bench_inputs import (
    CLIP_FPS,
    BenchError,
    resolve_backend,
    resolved_streams,
)
from streamseg.findings import Findings
from streamseg.frames import Prediction
from streamseg.model import load_model
from streamseg.overlay import HudText, OverlayStyle, render
from streamseg.segmenter import ModelSettings, Segmenter
from streamseg.sources import read_video
from streamseg.stats import Checkpoint, windowed_rate
from streamseg.transforms import resize, to_tensor

NAIVE_STAGES = ("decode", "preprocess", "inference", "overlay", "encode")
# Pipeline modes of a file run: the annotated MP4 encoded, or per-frame results only.
FILE_MODE = "file"
RESULTS_ONLY_MODE = "file, results only"
# --- statistics ---------------------------------------------------------------


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of a set of durations, in milliseconds.

    Example:
        >>> LatencySummary.of([0.001, 0.002, 0.003]).p50_ms
        2.0
    """

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        if len(seconds) == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        values = np.asarray(seconds, dtype=float) * 1000.0
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return cls(
            len(values),
            float(values.mean()),
            float(p50),
            float(p95),
            float(p99),
            float(values.max()),
        )


NO_LATENCY = LatencySummary.of(())


def steady_start(count: int, skip: int, batch_size: int = 1) -> int:
    """Index of the frame whose completion starts :func:`steady_throughput`'s span."""
    batch_size = max(batch_size, 1)
    first = -(-skip // batch_size) * batch_size - 1 if skip > 0 else 0
    return 0 if first < 0 or count - first < 2 else first


@dataclass(frozen=True)
class CpuUse:
    """Processor time this process spent, over a span of wall-clock time.

    Counted for every thread of the process (``time.process_time``: decoding,
    the network's threads, encoding), not for other processes.

    Attributes:
        ms_per_frame: Processor milliseconds per frame.
        cores_busy: Processor seconds per wall-clock second (2.0 = two cores
            fully used).
    """

    ms_per_frame: float
    cores_busy: float

    @classmethod
    def of(cls, cpu_s: float, wall_s: float, frames: int) -> CpuUse:
        if frames < 1 or not wall_s > 0:
            return cls(math.nan, math.nan)
        return cls(1000.0 * cpu_s / frames, cpu_s / wall_s)


def steady_throughput(
    times_s: Sequence[float], skip: int, batch_size: int = 1
) -> float:
    """Frames per second between the end of the warm-up and the last completion time.

    Args:
        times_s: Completion time of each frame (monotonic clock).
        skip: Warm-up frames to leave out. The count starts after the batch
            that holds frame ``skip - 1`` (frames of one batch complete in a
            burst, so counting from inside a batch would credit the span with
            work done before it).
        batch_size: Frames per batch.

    Returns:
        Frames per second (NaN with fewer than two frames); with too few
        frames to skip the warm-up, all frames count.
    """
    if len(times_s) < 2:
        return math.nan
    first = steady_start(len(times_s), skip, batch_size)
    # The run's own definition (streamseg.stats): frames between two batch ends.
    ends = [Checkpoint(times_s[i], i + 1, 0.0) for i in (first, len(times_s) - 1)]
    fps, _, _ = windowed_rate(ends, window_s=0.0, min_frames=0)
    return math.nan if fps is None else fps


# --- 1. model only ------------------------------------------------------------


@dataclass(frozen=True)
class ModelOnlyResult:
    """Model-only timing of one variant at one batch size.

    Attributes:
        variant: Variant name.
        runs: How the network ran (``Segmenter.describe()``).
        batch_size: Frames per call.
        iterations: Timed calls (warm-up calls excluded).
        prepare_s: Seconds to prepare the fast path (export, compile,
            capture); 0 for plain eager.
        throughput_fps: Frames per second over the timed calls.
        latency: Per-call latency (the whole batch).
        cpu: Processor time over the timed calls.
    """

    variant: str
    runs: str
    batch_size: int
    iterations: int
    prepare_s: float
    throughput_fps: float
    latency: LatencySummary
    cpu: CpuUse = CpuUse(math.nan, math.nan)


def frame_like_input(
    batch_size: int, size_hw: tuple[int, int], device: torch.device, seed: int = 0
) -> torch.Tensor:
    """Random (N, 3, H, W) float images in [0, 1], laid out as frames arrive.

    Decoded frames are (H, W, 3) uint8; :func:`streamseg.transforms.to_tensor`
    permutes them without a copy, so the network sees NHWC memory (the
    channels_last kernels) even when ``channels_last`` is off. A plain NCHW
    tensor would time a path the pipeline never takes.
    """
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand((batch_size, *size_hw, 3), generator=generator)
    return pixels.to(device).permute(0, 3, 1, 2)


def time_model(
    segmenter: Segmenter,
    batch_size: int,
    *,
    iterations: int,
    warmup: int,
    variant: str = "",
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> ModelOnlyResult:
    """Time :meth:`Segmenter.probabilities` at the model's input size.

    The input is random, already at ``spec.input_hw`` and on the device, so
    no resize or upload is timed, and laid out as frames are
    (:func:`frame_like_input`). Every call is followed by a device
    synchronize before the clock is read. With OpenVINO streams
    (``segmenter.streams`` > 1) that many calls run at once, as the pipeline
    runs them: throughput is then frames over the wall time of all the calls,
    latency still each call's own.
    """
    if iterations < 1:
        raise BenchError(f"iterations: expected >= 1, got {iterations}")
    height, width = segmenter.spec.input_hw
    with torch.inference_mode():  # the kind of tensor segment() hands over
        images = frame_like_input(batch_size, (height, width), segmenter.device)
    for _ in range(warmup):
        segmenter.probabilities(images, tta=segmenter.tta)
    synchronize(segmenter.device)

    def call(_: int = 0) -> float:
        start_s = clock()
        segmenter.probabilities(images, tta=segmenter.tta)
        synchronize(segmenter.device)
        return clock() - start_s

    in_flight = max(1, segmenter.streams)
    cpu_start_s, wall_start_s = cpu_clock(), clock()
    if in_flight == 1:
        samples = [call() for _ in range(iterations)]
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            samples = list(pool.map(call, range(iterations)))
    wall_s = clock() - wall_start_s
    cpu = CpuUse.of(cpu_clock() - cpu_start_s, wall_s, batch_size * iterations)
    total_s = sum(samples) if in_flight == 1 else wall_s
    return ModelOnlyResult(
        variant=variant,
        runs=segmenter.describe(),
        batch_size=batch_size,
        iterations=iterations,
        prepare_s=segmenter.prepare_s,
        throughput_fps=batch_size * iterations / total_s if total_s > 0 else math.nan,
        latency=LatencySummary.of(samples),
        cpu=cpu,
    )


# --- 2. pipeline --------------------------------------------------------------


class LatencyProbe:
    """A sink that notes when each frame's overlay is ready, and the CPU time then.

    The CPU time is the process's (``cpu_clock``: every thread). For live
    sources (frames stamped with ``time.monotonic()`` at grab) it also records
    the latency from grab to overlay ready, and the outline's: from the grab
    of the frame the outline was computed from (the same frame unless the
    ``every_frame`` display drew an earlier frame's outline).
    """

    name = "latency probe"
    wants_image = False

    def __init__(
        self,
        *,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ):
        self.live = live
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.done_s: list[float] = []
        self.cpu_s: list[float] = []
        self.latency_s: list[float] = []
        self.outline_s: list[float] = []

    def write(self, findings: Findings, image: np.ndarray | None) -> None:
        now = self.clock()
        self.done_s.append(now)
        self.cpu_s.append(self.cpu_clock())
        if self.live:
            self.latency_s.append(now - findings.frame.timestamp_s)
            self.outline_s.append(now - findings.segmented_frame.timestamp_s)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class StageTime:
    """Per-frame time of one stage, in milliseconds."""

    name: str
    mean_ms: float
    p95_ms: float


@dataclass(frozen=True)
class PipelineResult:
    """One run of :func:`streamseg.app.run`.

    Attributes:
        clip: Clip name.
        size_wh: Frame size.
        variant: Model variant.
        runs: How the network ran.
        mode: ``file`` (lossless, as fast as possible, annotated MP4
            encoded), ``file, results only`` (the same with per-frame results
            only: an event log, no overlay drawn, no video, as ``streamseg
            batch`` without ``--video``), ``live`` (paced at the clip's frame
            rate, newest frame wins, each frame shown with its own outline)
            or ``live, every frame`` (``source.live_display: every_frame``:
            every frame shown with the newest finished outline).
        batch_size: Frames per forward pass (1 for live).
        frames_in: Frames received from the source.
        frames_out: Frames written.
        frames_dropped: Source frames skipped (live only).
        wall_s: Seconds from the first to the last frame.
        throughput_fps: Frames per second after the warm-up frames.
        overall_fps: Frames per second over the whole run.
        stages: Main-loop time per frame and stage (decode and encode run on
            their own threads: here only the wait for them shows).
        latency: File: decoded -> written (p50/p95/p99 from the run's own
            statistics; no max). Live: grab -> overlay ready, every frame.
        cpu: Processor time of the whole process (all its threads) over the
            span ``throughput_fps`` is measured on.
        frames_held: Frames written with an earlier frame's outline
            (``every_frame`` display; else 0).
        outline: Live: grab of the frame the written outline was computed
            from -> overlay ready, every frame (``latency`` where no frame
            is held); empty for files.
    """

    clip: str
    size_wh: tuple[int, int]
    variant: str
    runs: str
    mode: str
    batch_size: int
    frames_in: int
    frames_out: int
    frames_dropped: int
    wall_s: float
    throughput_fps: float
    overall_fps: float
    stages: tuple[StageTime, ...]
    latency: LatencySummary
    cpu: CpuUse = CpuUse(math.nan, math.nan)
    frames_held: int = 0
    outline: LatencySummary = NO_LATENCY


def run_pipeline(
    clip: Path,
    config: StreamConfig,
    *,
    variant: str,
    live: bool,
    max_frames: int | None,
    warmup_frames: int,
    folder: Path,
    live_display: str | None = None,
    live_choice: bool = False,
    results_only: bool = False,
) -> PipelineResult:
    """Run the real pipeline on ``clip`` with the annotated video being encoded.

    ``results_only``: a file run that writes the per-frame event log instead
    (no overlay is drawn, no video encoded), as an archive job without
    ``--video`` does. ``live_display``: ``source.live_display`` for a live
    run (``None``: as configured). ``live_choice``: a live run leaves the
    model to the tool (``model.path`` unset), as ``streamseg run`` without
    ``--model`` does, so the live model choice (:mod:`streamseg.live_model`)
    applies; ``runs`` then names the model that ran.
    """
    display = live_display or config.source.live_display
    every_frame = live and display == "every_frame"
    if results_only and live:
        raise ValueError("results_only: a file run only (live=False)")
    if live:
        mode = "live, every frame" if every_frame else "live"
    else:
        mode = RESULTS_ONLY_MODE if results_only else FILE_MODE
    name = mode.replace(", ", "-").replace(" ", "-")
    output = folder / f"pipeline-{clip.stem}-{variant}-{name}.mp4"
    events = output.with_suffix(".jsonl")
    config = dataclasses.replace(
        config,
        source=dataclasses.replace(
            config.source,
            uri=str(clip),
            kind="file",
            realtime=live,
            max_frames=max_frames,
            live_display=display,
        ),
        output=dataclasses.replace(
            config.output,
            video=None if results_only else output,
            events=events if results_only else None,
            masks=None,
            view="none",
        ),
    )
    choice = live and live_choice
    if choice:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, path=None)
        )
    probe = LatencyProbe(live=live)
    segmenter_runs = describe_settings(config.model, live=live)
    try:
        stats = run(config, sinks=[probe])
    finally:
        for scratch in (output, events):
            with contextlib.suppress(OSError):
                scratch.unlink()
    if choice:
        segmenter_runs += f"; live choice: {stats.model}"
    if stats.interrupted:  # app.run reports Ctrl-C instead of raising it
        raise KeyboardInterrupt
    if live:
        latency = LatencySummary.of(probe.latency_s)
    else:
        q = stats.latency_ms
        latency = LatencySummary(
            stats.frames_out,
            math.nan,
            q.get(50, math.nan),
            q.get(95, math.nan),
            q.get(99, math.nan),
            math.nan,
        )
    width_height = _clip_size(clip)
    batch_size = 1 if live else config.model.batch_size
    return PipelineResult(
        clip=clip.name,
        size_wh=width_height,
        variant=variant,
        runs=segmenter_runs,
        mode=mode,
        batch_size=batch_size,
        frames_in=stats.frames_in,
        frames_out=stats.frames_out,
        frames_dropped=stats.frames_dropped,
        wall_s=stats.wall_s,
        throughput_fps=steady_throughput(probe.done_s, warmup_frames, batch_size),
        overall_fps=stats.throughput_fps,
        stages=tuple(
            StageTime(s.name, s.mean_ms, s.p95_ms)
            for s in stats.stages
            if s.name != LatencyProbe.name
        ),
        latency=latency,
        cpu=steady_cpu(probe, warmup_frames, batch_size),
        frames_held=stats.frames_held,
        outline=LatencySummary.of(probe.outline_s),
    )


def steady_cpu(probe: LatencyProbe, skip: int, batch_size: int) -> CpuUse:
    """Processor time over the span :func:`steady_throughput` measures."""
    count = len(probe.done_s)
    if count < 2:
        return CpuUse(math.nan, math.nan)
    first = steady_start(count, skip, batch_size)
    return CpuUse.of(
        probe.cpu_s[-1] - probe.cpu_s[first],
        probe.done_s[-1] - probe.done_s[first],
        count - 1 - first,
    )


def describe_settings(settings: ModelSettings, *, live: bool = False) -> str:
    """How these settings run the network, as ``Segmenter.describe()`` words it."""
    device = select_device(settings.device)
    settings = resolve_backend(settings, device)
    if settings.backend == "openvino":
        streams = resolved_streams(settings, live=live)
        described = f"{'int8' if settings.quantized is True else 'fp32'}, OpenVINO"
        return described + (f", {streams} streams" if streams and streams > 1 else "")
    parts = [settings.resolved_precision(device).name]
    if settings.channels_last and settings.backend == "torch":
        parts.append("channels_last")
    if settings.backend == "onnx":
        parts.append("ONNX Runtime")
    if settings.compile:
        parts.append(f"compiled ({settings.compile_mode})")
    if settings.cuda_graphs:
        parts.append("CUDA graphs")
    if settings.tta != "none":
        parts.append(f"{settings.tta} TTA (files)")
    return ", ".join(parts)


def _clip_size(clip: Path) -> tuple[int, int]:
    import av

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        return stream.width, stream.height


# --- 3. naive loop ------------------------------------------------------------


@dataclass(frozen=True)
class NaiveResult:
    """The naive loop on one clip.

    Attributes:
        clip: Clip name.
        size_wh: Frame size.
        frames: Frames processed.
        wall_s: Seconds for all frames (encoder flush included).
        throughput_fps: Frames per second after the warm-up frames.
        stages: Per-frame time of each stage (decode, preprocess = upload +
            resize to the input size, inference = fp32 network + sigmoid +
            resize back, overlay, encode).
        latency: Per frame, decode start to encoded.
    """

    clip: str
    size_wh: tuple[int, int]
    frames: int
    wall_s: float
    throughput_fps: float
    stages: tuple[StageTime, ...]
    latency: LatencySummary


@torch.inference_mode()
def run_naive(
    clip: Path,
    model_path: str | Path,
    device: torch.device,
    *,
    style: OverlayStyle,
    crf: int,
    preset: str,
    max_frames: int | None,
    warmup_frames: int,
    folder: Path,
    clock: Callable[[], float] = time.perf_counter,
) -> NaiveResult:
    """Read, infer (fp32), draw and encode one frame at a time, nothing overlapped."""
    import av

    network, spec = load_model(model_path, device)
    output = folder / f"naive-{clip.stem}.mp4"
    samples: dict[str, list[float]] = {name: [] for name in NAIVE_STAGES}
    done_s: list[float] = []
    frames = read_video(str(clip))
    container = av.open(str(output), mode="w")
    stream = None
    start_s = clock()
    try:
        count = 0
        while max_frames is None or count < max_frames:
            t0 = clock()
            frame = next(frames, None)
            if frame is None:
                break
            t1 = clock()
            images = resize(to_tensor(frame.pixels, device), spec.input_hw)
            synchronize(device)
            t2 = clock()
            logits = network(images)
            probabilities = resize(logits.float().sigmoid(), frame.hw)[:, 0]
            synchronize(device)
            t3 = clock()
            prediction = Prediction(frame, probabilities[0], spec.threshold)
            image = render(Findings.of(prediction), style, HudText())
            t4 = clock()
            if stream is None:
                stream = _naive_stream(container, image.shape, crf, preset)
            encoded = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format="yuv420p"
            )
            encoded.pts = count
            encoded.time_base = Fraction(1, CLIP_FPS)
            container.mux(stream.encode(encoded))
            t5 = clock()
            for name, (a, b) in zip(
                NAIVE_STAGES,
                ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)),
                strict=True,
            ):
                samples[name].append(b - a)
            done_s.append(t5)
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
        wall_s = clock() - start_s
    finally:
        frames.close()
        container.close()
        with contextlib.suppress(OSError):
            output.unlink()
    per_frame = [sum(parts) for parts in zip(*samples.values(), strict=True)]
    return NaiveResult(
        clip=clip.name,
        size_wh=_clip_size(clip),
        frames=len(done_s),
        wall_s=wall_s,
        throughput_fps=steady_throughput(done_s, warmup_frames),
        stages=tuple(_stage_time(name, values) for name, values in samples.items()),
        latency=LatencySummary.of(per_frame),
    )


def _naive_stream(container, shape: tuple[int, ...], crf: int, preset: str):
    stream = container.add_stream("libx264", rate=Fraction(CLIP_FPS))
    stream.height, stream.width = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": preset}
    return stream


def _stage_time(name: str, seconds: Sequence[float]) -> StageTime:
    summary = LatencySummary.of(seconds)
    return StageTime(name, summary.mean_ms, summary.p95_ms)
