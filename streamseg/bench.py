"""Benchmark harness: model-only, the full pipeline and a naive loop, side by side.

One call of :func:`run_benchmark` measures, in the same process and on the
same machine state:

1. **Model only**: :meth:`Segmenter.probabilities` on random input already
   at the model's input size and on the device, at batch 1 and at the file
   batch size, for each variant (fp32, bf16 + channels_last, + compile,
   ONNX Runtime; on CUDA fp16, CUDA graphs, compile reduce-overhead).
   Warm-up calls are excluded; each timed call ends with a device
   synchronize and is measured with ``time.perf_counter`` (monotonic).
2. **Pipeline**: :func:`streamseg.app.run`, the real composition root, on
   720p and 1080p clips with the annotated MP4 being encoded: throughput,
   per-stage time on the main loop, end-to-end latency; then the same clip
   played as a live source (``source.realtime``: paced, newest frame wins):
   frames dropped and latency from grab to overlay ready.
3. **Naive loop**: read a frame, run the fp32 network, draw the overlay,
   encode it; one frame at a time, nothing overlapped. Each stage is timed
   on its own.

Ratios pipeline / model-only and pipeline / naive are computed from these.
Throughput of the pipeline and the naive loop is measured after the first
``warmup_frames`` frames (lazy initialisation excluded), over the rest.

:func:`validate` checks each variant against fp32 on a Kvasir-SEG-style
split: Dice of both against the ground truth, their difference, and the
share of pixels on which the two masks agree.

Timings depend on the machine's load: the report records the load average
before and after, and the CPU/GPU it ran on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamseg.app import ModelSettings, StreamConfig, _load_segmenter, run
from streamseg.backends import openvino as ov_backend
from streamseg.cpu import cpu_info
from streamseg.device import (
    configure_backend,
    select_device,
    synchronize,
)
from streamseg.frames import Frame, Prediction
from streamseg.model import (
    ModelSpec,
    build_network,
    default_model_path,
    load_model,
    save_model,
)
from streamseg.overlay import HudText, OverlayStyle, render
from streamseg.segmenter import Segmenter
from streamseg.sources import probe_video, read_video
from streamseg.transforms import resize, to_tensor

log = logging.getLogger(__name__)

SCHEMA = "streamseg-bench/1"
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
CLIP_FPS = 25
DEMO_CLIP = Path(__file__).resolve().parents[1] / "samples" / "demo.mp4"
RANDOM_PREFIX = "random:"
NAIVE_STAGES = ("decode", "preprocess", "inference", "overlay", "encode")
TARGET_PIPELINE_VS_MODEL = 0.9
TARGET_PIPELINE_VS_NAIVE = 2.0
CONFIG_VARIANT = "config"
# How each figure is measured; written into every JSON report.
METHOD = {
    "clock": "time.perf_counter (monotonic); on CUDA every timed call ends with "
    "torch.cuda.synchronize",
    "model_only": "Segmenter.probabilities on random input already at the model's "
    "input size and on the device, in the memory layout of decoded frames (NHWC; no "
    "upload, no resize); warm-up calls excluded; latency per call (whole batch), "
    "throughput = frames / summed call time",
    "pipeline_file": "streamseg.app.run on the clip, annotated MP4 encoded, batched "
    "inference; throughput over the frames after warmup_frames; latency = frame "
    "decoded -> written (the run's own p50/p95/p99)",
    "pipeline_live": "the same clip played at its frame rate (source.realtime), "
    "newest frame wins, batch 1; latency = frame grabbed -> overlay ready, every "
    "frame; dropped = source frames never processed",
    "stages": "pipeline: time per frame on the main loop (decode and encode run on "
    "their own threads, so only the wait for them shows; inference = upload + "
    "resize + network + resize back); naive: each stage timed on its own",
    "naive": "read_video -> to_tensor + resize -> fp32 network + sigmoid + resize "
    "back -> render -> libx264 encode, one frame at a time, nothing overlapped",
    "load": "machine.load_average_start/end: 1/5/15-minute load averages; "
    "timings are only comparable on an otherwise idle machine",
}


class BenchError(Exception):
    """A benchmark cannot run as asked (unknown variant, no data); names the fix."""


# --- variants -----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A named way of running the network: values for the ``model`` config section.

    Attributes:
        name: Short name used on the command line, e.g. ``bf16-cl``.
        settings: ModelSettings fields this variant sets.
        cuda_only: Only meaningful on CUDA.
    """

    name: str
    settings: Mapping[str, Any]
    cuda_only: bool = False

    def apply(self, base: ModelSettings) -> ModelSettings:
        return dataclasses.replace(base, **dict(self.settings))


def _variant(
    name: str,
    precision: str,
    *,
    channels_last: bool = False,
    backend: str = "torch",
    compile_mode: str | None = None,
    cuda_graphs: bool = False,
    cuda_only: bool = False,
    quantized: bool = False,
) -> Variant:
    settings = {
        "quantized": quantized,
        "precision": precision,
        "channels_last": channels_last,
        "backend": backend,
        "compile": compile_mode is not None,
        "compile_mode": compile_mode or "default",
        "cuda_graphs": cuda_graphs,
    }
    return Variant(name, settings, cuda_only)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _variant("fp32", "fp32"),
        _variant("fp32-cl", "fp32", channels_last=True),
        _variant("bf16", "bf16"),
        _variant("bf16-cl", "bf16", channels_last=True),
        _variant("bf16-cl-compile", "bf16", channels_last=True, compile_mode="default"),
        _variant("fp32-compile", "fp32", compile_mode="default"),
        _variant("onnx", "fp32", backend="onnx"),
        _variant("ov-fp32", "fp32", backend="openvino"),
        _variant("ov-int8", "fp32", backend="openvino", quantized=True),
        _variant("fp16", "fp16", cuda_only=True),
        _variant("fp16-cl", "fp16", channels_last=True, cuda_only=True),
        _variant(
            "fp16-cl-graphs",
            "fp16",
            channels_last=True,
            cuda_graphs=True,
            cuda_only=True,
        ),
        _variant(
            "fp16-cl-compile",
            "fp16",
            channels_last=True,
            compile_mode="reduce-overhead",
            cuda_only=True,
        ),
    )
}
DEFAULT_VARIANTS = {
    "cpu": ("fp32", "bf16-cl", "bf16-cl-compile", "onnx", "ov-fp32", "ov-int8"),
    "cuda": ("fp32", "fp16", "fp16-cl", "fp16-cl-graphs", "fp16-cl-compile"),
}


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``"a,b"`` -> ``("a", "b")``; empty or ``None`` -> ``None``."""
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    return names or None


def variant_names(
    device: torch.device, model_path: str | Path | None = None
) -> tuple[str, ...]:
    """The variants benchmarked by default on ``device`` (for ``model_path``).

    OpenVINO variants are left out where OpenVINO is not installed, and
    ``ov-int8`` where the model file has no INT8 artefact.
    """
    names = DEFAULT_VARIANTS["cuda" if device.type == "cuda" else "cpu"]
    if not ov_backend.available():
        return tuple(n for n in names if not n.startswith("ov-"))
    if model_path is None or not ov_backend.int8_paths(model_path).any_exist():
        return tuple(n for n in names if n != "ov-int8")
    return names


def resolve_variant(name: str, base: ModelSettings) -> ModelSettings:
    """``base`` with a variant applied; ``config`` is ``base`` itself.

    Raises:
        BenchError: Unknown variant name.
    """
    if name == CONFIG_VARIANT:
        return base
    if name not in VARIANTS:
        raise BenchError(
            f"variant {name!r}: expected {CONFIG_VARIANT} or one of "
            f"{', '.join(VARIANTS)}"
        )
    return VARIANTS[name].apply(base)


def resolve_backend(settings: ModelSettings, device: torch.device) -> ModelSettings:
    """``settings`` with ``backend: auto`` and ``quantized`` resolved as
    :func:`streamseg.app.run` resolves them (``quantized``: True for INT8)."""
    path = settings.path or default_model_path()
    if path is None or (
        settings.backend == "openvino" and settings.quantized in (True, False)
    ):
        return settings
    try:
        choice = ov_backend.choose_backend(
            settings.backend,
            settings.quantized,
            device,
            path,
            precision=settings.precision,
            torch_options=settings.compile or settings.cuda_graphs,
        )
    except ValueError:  # loading the segmenter reports it, with the fix
        return settings
    return dataclasses.replace(
        settings, backend=choice.backend, quantized=choice.int8 is not None
    )


def settings_key(settings: ModelSettings, device: torch.device) -> tuple:
    """What decides how the network runs (two variants with one key are one run)."""
    settings = resolve_backend(settings, device)
    precision = settings.resolved_precision(device).name
    onnx = settings.backend != "torch"
    return (
        precision,
        settings.channels_last and not onnx,
        settings.backend,
        settings.quantized is True,
        settings.compile_mode if settings.compile else None,
        settings.cuda_graphs,
    )


# --- clips --------------------------------------------------------------------


def parse_resolution(text: str) -> tuple[int, int]:
    """``720p``, ``1080p`` or ``WIDTHxHEIGHT`` -> (width, height).

    Raises:
        BenchError: Anything else.
    """
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None or min(int(match[1]), int(match[2])) < 16:
        raise BenchError(
            f"resolution {text!r}: expected 720p, 1080p or WIDTHxHEIGHT (e.g. 1280x720)"
        )
    return int(match[1]), int(match[2])


def make_clip(
    size_wh: tuple[int, int],
    frames: int,
    folder: str | Path,
    *,
    source: str | Path | None = DEMO_CLIP,
    fps: int = CLIP_FPS,
) -> Path:
    """Write (or reuse) an H.264 test clip of ``frames`` frames at ``size_wh``.

    The frames come from ``source`` (the bundled demo clip, 640x480 real
    endoscopy imagery), cycled as needed, scaled to the clip's height and
    pillarboxed with black, as endoscopy towers output 16:9 video. Without a
    source, a textured moving disc is drawn instead.

    Returns:
        ``folder/clip-<W>x<H>-<frames>f.mp4`` (reused when it already holds
        ``frames`` frames).
    """
    import av

    width, height = size_wh
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    origin = "demo" if source is not None and Path(source).exists() else "disc"
    path = folder / f"clip-{origin}-{width}x{height}-{frames}f.mp4"
    if path.exists():
        with contextlib.suppress(Exception):
            if probe_video(str(path))[1] == frames:
                return path
    images = _clip_images(source if origin == "demo" else None, size_wh, frames)
    handle, temporary = tempfile.mkstemp(suffix=".mp4", dir=folder)
    os.close(handle)
    try:
        with av.open(temporary, mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for index, image in enumerate(images):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log.info("wrote test clip %s", path)
    return path


def _clip_images(
    source: str | Path | None, size_wh: tuple[int, int], frames: int
) -> Iterator[np.ndarray]:
    if source is None:
        for index in range(frames):
            yield _disc_frame(size_wh, index, frames)
        return
    produced = 0
    while produced < frames:  # cycle through the source as often as needed
        before = produced
        with contextlib.closing(read_video(str(source))) as pictures:
            for frame in pictures:
                if produced >= frames:
                    return
                yield pillarbox(frame.pixels, size_wh)
                produced += 1
        if produced == before:
            raise BenchError(f"{source}: holds no frames; pass another --clip")


def pillarbox(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` to fit ``size_wh`` (aspect kept) and centre it on black.

    Args:
        image: (H, W, 3) uint8 RGB.
        size_wh: Output (width, height).

    Returns:
        (height, width, 3) uint8 RGB.
    """
    import cv2

    width, height = size_wh
    scale = min(height / image.shape[0], width / image.shape[1])
    inner_w = min(width, round(image.shape[1] * scale))
    inner_h = min(height, round(image.shape[0] * scale))
    scaled = cv2.resize(image, (inner_w, inner_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    canvas[top : top + inner_h, left : left + inner_w] = scaled
    return canvas


def _disc_frame(size_wh: tuple[int, int], index: int, frames: int) -> np.ndarray:
    width, height = size_wh
    yy, xx = np.mgrid[0:height, 0:width]
    texture = ((xx // 8 + yy // 8) % 2 * 40 + 60).astype(np.uint8)
    image = np.stack([texture, texture // 2, texture // 3], axis=-1)
    radius = min(width, height) / 6
    cx = radius + (width - 2 * radius) * index / max(frames - 1, 1)
    inside = (yy - height / 2) ** 2 + (xx - cx) ** 2 <= radius**2
    image[inside] = (230, 90, 70)
    return image


# --- model --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """The model benchmarked.

    Attributes:
        path: Model file (for ``random:`` specs, the file written for it).
        architecture: smp architecture.
        encoder: Encoder name.
        input_hw: Network input (height, width).
        random_weights: True when built with random weights (timing only;
            accuracy figures are meaningless then).
    """

    path: str
    architecture: str
    encoder: str
    input_hw: tuple[int, int]
    random_weights: bool


def parse_random_spec(text: str) -> ModelSpec:
    """``random:ARCH/ENCODER@H[xW]`` -> a ModelSpec (random weights, for timing).

    Example:
        >>> parse_random_spec("random:UnetPlusPlus/efficientnet-b2@320").input_hw
        (320, 320)

    Raises:
        BenchError: Malformed text.
    """
    match = re.fullmatch(r"random:([\w.-]+)/([\w.-]+)@(\d+)(?:x(\d+))?", text)
    if match is None:
        raise BenchError(
            f"model {text!r}: expected a .safetensors file or "
            "random:ARCHITECTURE/ENCODER@SIZE, e.g. "
            "random:UnetPlusPlus/efficientnet-b2@320"
        )
    height = int(match[3])
    width = int(match[4]) if match[4] else height
    try:
        return ModelSpec(match[1], match[2], (height, width))
    except ValueError as error:
        raise BenchError(f"model {text!r}: {error}") from error


def prepare_model(model: str | Path, folder: str | Path) -> ModelInfo:
    """Resolve ``model`` (a file or a ``random:`` spec) to a model file.

    Raises:
        BenchError: Malformed ``random:`` spec or unknown architecture.
        ModelFileError: The file is missing or invalid.
    """
    text = str(model)
    if text.startswith(RANDOM_PREFIX):
        spec = parse_random_spec(text)
        height, width = spec.input_hw
        path = Path(folder) / (
            f"random-{spec.architecture}-{spec.encoder_name}-{height}x{width}.safetensors"
        )
        if not path.exists():
            torch.manual_seed(0)
            try:
                network = build_network(spec)
            except ValueError as error:
                raise BenchError(f"model {text!r}: {error}") from error
            save_model(path, network, spec)
        return ModelInfo(
            str(path), spec.architecture, spec.encoder_name, spec.input_hw, True
        )
    from streamseg.model import read_spec

    spec = read_spec(text)
    return ModelInfo(text, spec.architecture, spec.encoder_name, spec.input_hw, False)


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
    batch_size = max(batch_size, 1)
    first = -(-skip // batch_size) * batch_size - 1 if skip > 0 else 0
    if first < 0 or len(times_s) - first < 2:
        first = 0
    span = times_s[-1] - times_s[first]
    return (len(times_s) - 1 - first) / span if span > 0 else math.nan


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
    """

    variant: str
    runs: str
    batch_size: int
    iterations: int
    prepare_s: float
    throughput_fps: float
    latency: LatencySummary


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
) -> ModelOnlyResult:
    """Time :meth:`Segmenter.probabilities` at the model's input size.

    The input is random, already at ``spec.input_hw`` and on the device, so
    no resize or upload is timed, and laid out as frames are
    (:func:`frame_like_input`). Every call is followed by a device
    synchronize before the clock is read.
    """
    if iterations < 1:
        raise BenchError(f"iterations: expected >= 1, got {iterations}")
    height, width = segmenter.spec.input_hw
    with torch.inference_mode():  # the kind of tensor segment() hands over
        images = frame_like_input(batch_size, (height, width), segmenter.device)
    for _ in range(warmup):
        segmenter.probabilities(images)
    synchronize(segmenter.device)
    samples = []
    for _ in range(iterations):
        start_s = clock()
        segmenter.probabilities(images)
        synchronize(segmenter.device)
        samples.append(clock() - start_s)
    total_s = sum(samples)
    return ModelOnlyResult(
        variant=variant,
        runs=segmenter.describe(),
        batch_size=batch_size,
        iterations=iterations,
        prepare_s=segmenter.prepare_s,
        throughput_fps=batch_size * iterations / total_s if total_s > 0 else math.nan,
        latency=LatencySummary.of(samples),
    )


# --- 2. pipeline --------------------------------------------------------------


class LatencyProbe:
    """A sink that notes when each frame's overlay is ready.

    For live sources (frames stamped with ``time.monotonic()`` at grab) it
    also records the latency from grab to overlay ready.
    """

    name = "latency probe"

    def __init__(self, *, live: bool, clock: Callable[[], float] = time.monotonic):
        self.live = live
        self.clock = clock
        self.done_s: list[float] = []
        self.latency_s: list[float] = []

    def write(self, prediction: Prediction, image: np.ndarray) -> None:
        now = self.clock()
        self.done_s.append(now)
        if self.live:
            self.latency_s.append(now - prediction.frame.timestamp_s)

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
        mode: ``file`` (lossless, as fast as possible) or ``live`` (paced at
            the clip's frame rate, newest frame wins).
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


def run_pipeline(
    clip: Path,
    config: StreamConfig,
    *,
    variant: str,
    live: bool,
    max_frames: int | None,
    warmup_frames: int,
    folder: Path,
) -> PipelineResult:
    """Run the real pipeline on ``clip`` with the annotated video being encoded."""
    output = folder / f"pipeline-{clip.stem}-{variant}-{'live' if live else 'file'}.mp4"
    config = dataclasses.replace(
        config,
        source=dataclasses.replace(
            config.source,
            uri=str(clip),
            kind="file",
            realtime=live,
            max_frames=max_frames,
        ),
        output=dataclasses.replace(
            config.output, video=output, events=None, masks=None, view="none"
        ),
    )
    probe = LatencyProbe(live=live)
    segmenter_runs = describe_settings(config.model)
    try:
        stats = run(config, sinks=[probe])
    finally:
        with contextlib.suppress(OSError):
            output.unlink()
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
    return PipelineResult(
        clip=clip.name,
        size_wh=width_height,
        variant=variant,
        runs=segmenter_runs,
        mode="live" if live else "file",
        batch_size=1 if live else config.model.batch_size,
        frames_in=stats.frames_in,
        frames_out=stats.frames_out,
        frames_dropped=stats.frames_dropped,
        wall_s=stats.wall_s,
        throughput_fps=steady_throughput(
            probe.done_s, warmup_frames, 1 if live else config.model.batch_size
        ),
        overall_fps=stats.throughput_fps,
        stages=tuple(
            StageTime(s.name, s.mean_ms, s.p95_ms)
            for s in stats.stages
            if s.name != LatencyProbe.name
        ),
        latency=latency,
    )


def describe_settings(settings: ModelSettings) -> str:
    """How these settings run the network, as ``Segmenter.describe()`` words it."""
    device = select_device(settings.device)
    settings = resolve_backend(settings, device)
    if settings.backend == "openvino":
        return f"{'int8' if settings.quantized is True else 'fp32'}, OpenVINO"
    parts = [settings.resolved_precision(device).name]
    if settings.channels_last and settings.backend == "torch":
        parts.append("channels_last")
    if settings.backend == "onnx":
        parts.append("ONNX Runtime")
    if settings.compile:
        parts.append(f"compiled ({settings.compile_mode})")
    if settings.cuda_graphs:
        parts.append("CUDA graphs")
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
            image = render(
                Prediction(frame, probabilities[0], spec.threshold), style, HudText()
            )
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


# --- validation ---------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """A variant compared with fp32 on a labelled split.

    Attributes:
        variant: Variant name.
        runs: How the network ran.
        images: Images compared.
        reference_dice: Micro Dice (pixels pooled over the split) of fp32
            against the ground truth.
        variant_dice: The same for the variant.
        dice_difference: ``variant_dice - reference_dice``.
        reference_dice_macro: Mean per-image Dice of fp32.
        variant_dice_macro: Mean per-image Dice of the variant.
        mask_agreement_pct: Pixels (pooled) where both masks agree, percent.
        worst_image_agreement_pct: The lowest per-image agreement.
        max_probability_difference: Largest absolute difference of
            probabilities over all pixels.
    """

    variant: str
    runs: str
    images: int
    reference_dice: float
    variant_dice: float
    dice_difference: float
    reference_dice_macro: float
    variant_dice_macro: float
    mask_agreement_pct: float
    worst_image_agreement_pct: float
    max_probability_difference: float


def read_labelled_split(
    root: str | Path, split: str = "test", limit: int | None = None
) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) of a Kvasir-SEG-style split (``root/splits/<split>.txt``).

    ``split`` may also be a path to a split file. ``limit`` keeps the first N.

    Raises:
        BenchError: Missing folder, split file, image or mask.
    """
    root = Path(root)
    split_file = (
        Path(split) if Path(split).is_file() else root / "splits" / f"{split}.txt"
    )
    if not split_file.is_file():
        raise BenchError(
            f"{split_file}: no split file; pass --data with a Kvasir-SEG folder "
            "(images/, masks/, splits/test.txt), e.g. ../shared/data/kvasir-seg"
        )
    stems = [
        line.strip()
        for line in split_file.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pairs = []
    for stem in stems[:limit] if limit else stems:
        found = []
        for folder in ("images", "masks"):
            matches = sorted((root / folder).glob(f"{stem}.*"))
            if not matches:
                raise BenchError(
                    f"{root / folder}: no file for {stem!r} listed in {split_file}; "
                    "the split does not match this dataset folder"
                )
            found.append(matches[0])
        pairs.append((stem, found[0], found[1]))
    return pairs


def _read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    grey = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if bgr is None or grey is None:
        raise BenchError(f"{image_path} or {mask_path}: cannot decode the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), grey > 127  # JPEG masks: threshold


def dice(tp: float, fp: float, fn: float) -> float:
    """2 TP / (2 TP + FP + FN); 1 when there is nothing to find and nothing found."""
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


def validate(
    model_path: str | Path,
    base: ModelSettings,
    variants: Sequence[str],
    pairs: Sequence[tuple[str, Path, Path]],
) -> list[Agreement]:
    """Compare each variant's masks with fp32's on labelled images.

    Every image goes through :meth:`Segmenter.segment` (the runtime path:
    upload, resize, forward, resize back) at its own resolution.

    Args:
        model_path: Model file.
        base: Model settings the variants apply to (device, threads, ...).
        variants: Variant names.
        pairs: (stem, image, mask) from :func:`read_labelled_split`.
    """
    reference = _load_segmenter(
        dataclasses.replace(VARIANTS["fp32"].apply(base), path=Path(model_path))
    )
    candidates = {
        name: _load_segmenter(
            dataclasses.replace(resolve_variant(name, base), path=Path(model_path))
        )
        for name in variants
    }
    threshold = reference.spec.threshold
    counts = {name: np.zeros((len(pairs), 3)) for name in ["fp32", *candidates]}
    agree = {name: np.zeros(len(pairs)) for name in candidates}
    pixels_total = np.zeros(len(pairs))
    max_diff = dict.fromkeys(candidates, 0.0)
    for row, (_stem, image_path, mask_path) in enumerate(pairs):
        pixels, truth_np = _read_pair(image_path, mask_path)
        frame = Frame(row, 0.0, pixels)
        truth = torch.from_numpy(truth_np)
        ref_prob = reference(frame).probabilities.float().cpu()
        ref_mask = ref_prob >= threshold
        counts["fp32"][row] = _confusion(ref_mask, truth)
        pixels_total[row] = truth.numel()
        for name, segmenter in candidates.items():
            probability = segmenter(frame).probabilities.float().cpu()
            mask = probability >= threshold
            counts[name][row] = _confusion(mask, truth)
            agree[name][row] = float((mask == ref_mask).sum())
            difference = float((probability - ref_prob).abs().max())
            max_diff[name] = max(max_diff[name], difference)
    ref_micro = dice(*counts["fp32"].sum(axis=0))
    ref_macro = float(np.mean([dice(*c) for c in counts["fp32"]]))
    results = []
    for name, segmenter in candidates.items():
        micro = dice(*counts[name].sum(axis=0))
        results.append(
            Agreement(
                variant=name,
                runs=segmenter.describe(),
                images=len(pairs),
                reference_dice=ref_micro,
                variant_dice=micro,
                dice_difference=micro - ref_micro,
                reference_dice_macro=ref_macro,
                variant_dice_macro=float(np.mean([dice(*c) for c in counts[name]])),
                mask_agreement_pct=100.0 * agree[name].sum() / pixels_total.sum(),
                worst_image_agreement_pct=float(
                    100.0 * (agree[name] / pixels_total).min()
                ),
                max_probability_difference=max_diff[name],
            )
        )
    return results


def _confusion(mask: torch.Tensor, truth: torch.Tensor) -> tuple[int, int, int]:
    tp = int((mask & truth).sum())
    return tp, int(mask.sum()) - tp, int(truth.sum()) - tp


# --- the whole benchmark ------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """What :func:`run_benchmark` measures.

    Attributes:
        model: Model file or ``random:ARCH/ENCODER@SIZE``.
        clips: Video files for the pipeline and naive runs.
        synthetic: Resolutions (``720p``, ``1080p``, ``WxH``) of clips made
            from the demo clip (used when ``clips`` is empty).
        frames: Frames per clip (synthetic clips have exactly this many;
            given clips are cut after this many).
        variants: Model-only variants (``None``: the device's defaults).
        pipeline_variants: Variants run through the full pipeline
            (``config``: the model section as configured).
        iterations: Timed model-only calls per variant and batch size.
        warmup: Untimed model-only calls before those.
        warmup_frames: Frames excluded from pipeline and naive throughput.
        model_only: Run part 1.
        pipeline: Run part 2 (file mode).
        live: Run part 2 in live mode too.
        naive: Run part 3.
        work_dir: Where clips, the random model and outputs go.
    """

    model: str
    clips: tuple[Path, ...] = ()
    synthetic: tuple[str, ...] = ("720p", "1080p")
    frames: int = 300
    variants: tuple[str, ...] | None = None
    pipeline_variants: tuple[str, ...] = (CONFIG_VARIANT,)
    iterations: int = 50
    warmup: int = 5
    warmup_frames: int = 8
    model_only: bool = True
    pipeline: bool = True
    live: bool = True
    naive: bool = True
    work_dir: Path = field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "streamseg-bench"
    )

    def __post_init__(self) -> None:
        for name in ("frames", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("warmup", "warmup_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for resolution in self.synthetic:
            parse_resolution(resolution)
        for name in (*(self.variants or ()), *self.pipeline_variants):
            resolve_variant(name, ModelSettings())


@dataclass(frozen=True)
class Ratio:
    """Pipeline throughput relative to model-only and to the naive loop, on one clip.

    ``None`` where the counterpart was not measured.
    """

    clip: str
    variant: str
    pipeline_fps: float
    model_only_fps: float | None
    naive_fps: float | None
    pipeline_vs_model_only: float | None
    pipeline_vs_naive: float | None
    target_vs_model_only: float = TARGET_PIPELINE_VS_MODEL
    target_vs_naive: float = TARGET_PIPELINE_VS_NAIVE


@dataclass(frozen=True)
class BenchReport:
    """Everything one benchmark run measured (``to_dict`` for JSON)."""

    machine: Mapping[str, Any]
    model: ModelInfo
    settings: Mapping[str, Any]
    model_only: tuple[ModelOnlyResult, ...] = ()
    pipeline: tuple[PipelineResult, ...] = ()
    naive: tuple[NaiveResult, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    validation: tuple[Agreement, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": METHOD,
            **_jsonable(dataclasses.asdict(self)),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):  # 6 significant digits: small differences stay visible
        return None if math.isnan(value) else float(f"{value:.6g}")
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(report: BenchReport, path: str | Path) -> Path:
    """Write the report as JSON (NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU, GPU, versions, threads and the current load (timings depend on it)."""
    from importlib import metadata

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_flags": facts.flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_start": _load_average(),
    }
    with contextlib.suppress(metadata.PackageNotFoundError):
        info["onnxruntime"] = metadata.version("onnxruntime")
    with contextlib.suppress(metadata.PackageNotFoundError):
        info["openvino"] = metadata.version("openvino")
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def _load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(value, 2) for value in os.getloadavg()]
    return None


def run_benchmark(settings: BenchSettings, config: StreamConfig) -> BenchReport:
    """Measure model-only, pipeline and naive throughput as ``settings`` asks.

    Args:
        settings: What to measure.
        config: The stream config (``--config``/``--set``): model device,
            threads, batch size, overlay and encoder settings all apply.

    Raises:
        BenchError: Unknown variant, variant impossible on this device, or
            no clip.
        ConfigError: A model option this device or install cannot honour.
    """
    folder = Path(settings.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model = prepare_model(settings.model, folder)
    base = dataclasses.replace(config.model, path=Path(model.path))
    config = dataclasses.replace(config, model=base)
    device = select_device(base.device)
    configure_backend(device, threads=base.threads)  # before the threads are reported
    machine = describe_machine(device)
    variants = _model_only_variants(settings, base, device)

    model_only = []
    if settings.model_only:
        for name in variants:
            model_only.extend(_time_variant(name, base, settings))

    clips = list(settings.clips) or [
        make_clip(parse_resolution(r), settings.frames, folder)
        for r in settings.synthetic
    ]
    limit = settings.frames
    pipeline, naive = [], []
    for clip in clips:
        if settings.pipeline:
            for name in settings.pipeline_variants:
                variant_config = dataclasses.replace(
                    config, model=resolve_variant(name, base)
                )
                for live in (False, True) if settings.live else (False,):
                    log.info(
                        "pipeline %s %s (%s)",
                        clip.name,
                        name,
                        "live" if live else "file",
                    )
                    pipeline.append(
                        run_pipeline(
                            clip,
                            variant_config,
                            variant=name,
                            live=live,
                            max_frames=limit,
                            warmup_frames=settings.warmup_frames,
                            folder=folder,
                        )
                    )
        if settings.naive:
            log.info("naive loop %s", clip.name)
            naive.append(
                run_naive(
                    clip,
                    model.path,
                    device,
                    style=config.overlay,
                    crf=config.output.video_crf,
                    preset=config.output.video_preset,
                    max_frames=limit,
                    warmup_frames=settings.warmup_frames,
                    folder=folder,
                )
            )
    machine["load_average_end"] = _load_average()
    return BenchReport(
        machine=machine,
        model=model,
        settings={
            **{
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(settings).items()
            },
            "model_section": dataclasses.asdict(base),
            "batch_size": base.batch_size,
        },
        model_only=tuple(model_only),
        pipeline=tuple(pipeline),
        naive=tuple(naive),
        ratios=tuple(compute_ratios(model_only, pipeline, naive, base, device)),
    )


def _model_only_variants(
    settings: BenchSettings, base: ModelSettings, device: torch.device
) -> list[str]:
    names = list(settings.variants or variant_names(device, base.path))
    for name in settings.pipeline_variants:
        if name not in names:
            names.append(name)
    for name in names:
        resolve_variant(name, base)  # unknown names fail before anything runs
        if name in VARIANTS and VARIANTS[name].cuda_only and device.type != "cuda":
            raise BenchError(
                f"variant {name!r} needs CUDA, but the device is {device}; pick "
                f"from {', '.join(DEFAULT_VARIANTS['cpu'])}"
            )
    # One run per distinct way of running the network ("config" is often fp32).
    unique: dict[tuple, str] = {}
    for name in names:
        unique.setdefault(settings_key(resolve_variant(name, base), device), name)
    return list(unique.values())


def _time_variant(
    name: str, base: ModelSettings, settings: BenchSettings
) -> list[ModelOnlyResult]:
    log.info("model only: %s", name)
    segmenter = _load_segmenter(resolve_variant(name, base))
    return [
        time_model(
            segmenter,
            batch,
            iterations=settings.iterations,
            warmup=settings.warmup,
            variant=name,
        )
        for batch in sorted({1, base.batch_size})
    ]


def compute_ratios(
    model_only: Sequence[ModelOnlyResult],
    pipeline: Sequence[PipelineResult],
    naive: Sequence[NaiveResult],
    base: ModelSettings,
    device: torch.device,
) -> list[Ratio]:
    """Pipeline (file mode) throughput over model-only (same settings and batch
    size) and over the naive loop (same clip)."""
    by_key = {}
    for result in model_only:
        key = (
            settings_key(resolve_variant(result.variant, base), device),
            result.batch_size,
        )
        by_key[key] = result.throughput_fps
    naive_by_clip = {result.clip: result.throughput_fps for result in naive}
    ratios = []
    for result in pipeline:
        if result.mode != "file":
            continue
        key = (
            settings_key(resolve_variant(result.variant, base), device),
            result.batch_size,
        )
        model_fps = by_key.get(key)
        naive_fps = naive_by_clip.get(result.clip)
        ratios.append(
            Ratio(
                clip=result.clip,
                variant=result.variant,
                pipeline_fps=result.throughput_fps,
                model_only_fps=model_fps,
                naive_fps=naive_fps,
                pipeline_vs_model_only=_ratio(result.throughput_fps, model_fps),
                pipeline_vs_naive=_ratio(result.throughput_fps, naive_fps),
            )
        )
    return ratios


def _ratio(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or not denominator > 0 or math.isnan(numerator):
        return None
    return numerator / denominator


def validation_report(
    settings: BenchSettings,
    config: StreamConfig,
    data_root: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
) -> BenchReport:
    """Compare the variants with fp32 on a labelled split (see :func:`validate`)."""
    folder = Path(settings.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model = prepare_model(settings.model, folder)
    base = dataclasses.replace(config.model, path=Path(model.path))
    device = select_device(base.device)
    configure_backend(device, threads=base.threads)  # before the threads are reported
    machine = describe_machine(device)
    names = [
        name
        for name in _model_only_variants(
            dataclasses.replace(settings, pipeline_variants=()), base, device
        )
        if name != "fp32"
    ]
    pairs = read_labelled_split(data_root, split, limit)
    log.info("validating %s against fp32 on %d images", ", ".join(names), len(pairs))
    results = validate(model.path, base, names, pairs)
    machine["load_average_end"] = _load_average()
    return BenchReport(
        machine=machine,
        model=model,
        settings={
            "data": str(data_root),
            "split": split,
            "limit": limit,
            "variants": names,
            "model_section": dataclasses.asdict(base),
        },
        validation=tuple(results),
    )


# --- tables (the CLI prints them) ---------------------------------------------


def report_tables(report: BenchReport) -> list[Any]:
    """Rich tables of the report, in reading order."""
    tables = []
    machine, model = report.machine, report.model
    load = machine.get("load_average_start")
    flags = machine.get("cpu_flags") or {}
    where = machine.get("gpu") or (
        machine["cpu"]
        + "; "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
    )
    title = (
        f"{model.architecture}/{model.encoder} {model.input_hw[0]}x{model.input_hw[1]}"
        f" on {machine['device']} ({where}, {machine['torch_threads']} threads, "
        f"load {load[0] if load else '?'})"
    )
    if report.model_only:
        columns = ["variant", "runs", "batch", "fps", "p50 ms", "p95 ms", "p99 ms"]
        rows = [
            [r.variant, r.runs, str(r.batch_size), _f(r.throughput_fps, 1)]
            + [_f(v) for v in (r.latency.p50_ms, r.latency.p95_ms, r.latency.p99_ms)]
            + [_f(r.latency.max_ms), _f(r.prepare_s, 1)]
            for r in report.model_only
        ]
        columns += ["max ms", "prepare s"]
        tables.append(_table(f"Model only: {title}", columns, rows))
    if report.pipeline:
        columns = ["clip", "variant", "mode", "in/out/dropped", "fps"]
        columns += ["latency p50/p95/p99/max ms", "main loop ms/frame"]
        rows = [
            [
                f"{r.clip} ({r.size_wh[0]}x{r.size_wh[1]})",
                r.variant,
                r.mode,
                f"{r.frames_in}/{r.frames_out}/{r.frames_dropped}",
                _f(r.throughput_fps, 1),
                _percentiles(r.latency),
                ", ".join(f"{s.name} {s.mean_ms:.1f}" for s in r.stages),
            ]
            for r in report.pipeline
        ]
        tables.append(
            _table("Pipeline (streamseg.app.run, MP4 encoded)", columns, rows)
        )
    if report.naive:
        columns = ["clip", "frames", "fps", "latency p50/p95/p99/max ms"]
        columns += ["ms/frame per stage"]
        rows = [
            [
                f"{r.clip} ({r.size_wh[0]}x{r.size_wh[1]})",
                str(r.frames),
                _f(r.throughput_fps, 1),
                _percentiles(r.latency),
                ", ".join(f"{s.name} {s.mean_ms:.1f}" for s in r.stages),
            ]
            for r in report.naive
        ]
        title = "Naive loop (fp32, one frame at a time, nothing overlapped)"
        tables.append(_table(title, columns, rows))
    if report.ratios:
        columns = ["clip", "variant", "pipeline fps", "model-only fps", "naive fps"]
        columns += [
            f"pipeline/model (target >= {TARGET_PIPELINE_VS_MODEL})",
            f"pipeline/naive (target >= {TARGET_PIPELINE_VS_NAIVE})",
        ]
        rows = [
            [
                r.clip,
                r.variant,
                _f(r.pipeline_fps, 1),
                _f(r.model_only_fps, 1),
                _f(r.naive_fps, 1),
                _f(r.pipeline_vs_model_only),
                _f(r.pipeline_vs_naive),
            ]
            for r in report.ratios
        ]
        tables.append(_table("Ratios (file mode)", columns, rows))
    if report.validation:
        first = report.validation[0]
        title = (
            f"Agreement with fp32 on {first.images} images (fp32 micro Dice "
            f"{first.reference_dice:.4f}, macro {first.reference_dice_macro:.4f})"
        )
        columns = ["variant", "runs", "micro Dice", "Dice diff", "macro Dice"]
        columns += ["mask agreement %", "worst image %", "max |dp|"]
        rows = [
            [
                r.variant,
                r.runs,
                _f(r.variant_dice, 4),
                f"{r.dice_difference:+.4f}",
                _f(r.variant_dice_macro, 4),
                _f(r.mask_agreement_pct, 3),
                _f(r.worst_image_agreement_pct, 3),
                _f(r.max_probability_difference, 4),
            ]
            for r in report.validation
        ]
        tables.append(_table(title, columns, rows))
    return tables


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _percentiles(latency: LatencySummary) -> str:
    values = (latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms)
    return "/".join(_f(v, 1) for v in values)


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
