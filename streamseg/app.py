"""The composition root: :func:`run` wires source, segmenter, smoother, overlay, sinks.

This is the only module that knows every stage. The pipeline is a plain
``for`` loop on the calling thread; concurrency comes from
:mod:`streamseg.background` only:

* decoding runs on a producer thread (files: BLOCK queue of ``prefetch``
  frames, lossless; live sources: DROP_OLDEST queue of 1, newest frame wins);
* inference, smoothing and overlay run in the loop (stateful stages need no
  locks, and an OpenCV window needs the main thread);
* the video encoder runs on a consumer thread behind a BLOCK queue.

While a live source delivers nothing, the queue hands the loop a
:data:`NO_SIGNAL` marker every ``source.no_signal_s``, and the live views
(window, browser) show a NO SIGNAL card instead of the last frame; files get
nothing (frames are never invented). Network streams reconnect by themselves
(:func:`streamseg.sources.reconnecting`).

Ctrl-C (and SIGTERM, which the CLI turns into the same interrupt) ends the
loop; every output is finalized on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from streamseg.alerts import Alerter, AlertSettings
from streamseg.backends.openvino import Int8ArtefactError, Quantized, choose_backend
from streamseg.background import Stalled, WhenFull, in_background
from streamseg.clips import ClipSettings
from streamseg.config import ConfigError
from streamseg.device import (
    Precision,
    configure_backend,
    resolve_precision,
    select_device,
    synchronize,
)
from streamseg.frames import Frame, Prediction
from streamseg.model import ModelFileError, default_model_path
from streamseg.overlay import (
    HudText,
    OverlayStyle,
    draw_border,
    no_signal_image,
    render,
)
from streamseg.segmenter import Segmenter
from streamseg.sinks import (
    OutputSettings,
    Sink,
    Sinks,
    check_display,
    check_outputs,
    open_sinks,
)
from streamseg.smoothing import SmoothingSettings, TemporalSmoother
from streamseg.sources import (
    MAX_RECONNECT_BACKOFF_S,
    Source,
    SourceError,
    SourceSettings,
    open_source,
)
from streamseg.stats import RunStats, StatsRecorder

log = logging.getLogger(__name__)

NO_DEFAULT_MODEL = (
    "no bundled default model in this build; pass --model FILE "
    "(train one with python -m training train ...)"
)


@dataclass(frozen=True)
class ModelSettings:
    """The ``model`` section of the stream config.

    Attributes:
        path: Model file (``.safetensors``); ``None``: the bundled default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (fp16 on CUDA; bf16 on a CPU with native bf16,
            AMX or AVX-512 BF16, with the torch backend; else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (CUDA only).
        channels_last: NHWC memory format (faster on tensor cores and with
            bf16 on recent CPUs; the same speed for fp32 on a CPU).
        threshold: Overrides the model file's calibrated threshold
            (``None``: use the file's).
        batch_size: Frames per forward pass for files and folders (throughput);
            live sources always use 1 (the newest frame, at once).
        threads: CPU threads for torch (``None``: torch's default, one per
            core). On a CPU shared with other work, fewer threads can be much
            faster (measured on 2 busy cores: a small model ran 8x faster with
            1 thread than with 2); on an idle machine more threads help.
        backend: ``auto`` (OpenVINO with the model file's INT8 artefact on a
            CPU where OpenVINO is installed and the artefact exists; else
            torch), ``torch``, ``onnx`` (ONNX Runtime on the CPU, fp32; needs
            the ``onnx`` extra) or ``openvino`` (CPU; needs the ``openvino``
            extra).
        quantized: ``auto`` (the INT8 artefact where one exists, with backend
            openvino or auto), ``true`` (require it) or ``false`` (fp32).
            The artefact (``<model stem>.int8.xml/.bin/.json``) is made by
            ``python -m training quantize`` and must match the model file.
        compile: Run the network through ``torch.compile`` (compiled at
            start for batch 1 and ``batch_size``; the time is logged, and
            Inductor caches the result on disk for the next start).
        compile_mode: ``default``, ``reduce-overhead`` (CUDA graphs through
            Inductor), ``max-autotune`` or ``max-autotune-no-cudagraphs``.
        cuda_graphs: Capture and replay CUDA graphs (CUDA only; not with
            ``compile``).
    """

    path: Path | None = None
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    threshold: float | None = None
    batch_size: int = 4
    threads: int | None = None
    backend: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    quantized: Quantized = "auto"
    compile: bool = False
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "default"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(
                f"threshold: expected a value in (0, 1) or null, got {self.threshold}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: expected >= 1 or null, got {self.threads}")

    def resolved_precision(self, device: torch.device) -> Precision:
        """The autocast dtype these settings mean on ``device`` (``auto`` resolved).

        Raises:
            ValueError: An unknown precision, or fp16 without CUDA.
        """
        return resolve_precision(
            device, self.precision, cpu_auto_bf16=self.backend in ("torch", "auto")
        )


@dataclass(frozen=True)
class StreamConfig:
    """All that ``streamseg run`` needs: one section per stage (configs/stream.yaml)."""

    source: SourceSettings = field(default_factory=SourceSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    overlay: OverlayStyle = field(default_factory=OverlayStyle)
    output: OutputSettings = field(default_factory=OutputSettings)
    clips: ClipSettings = field(default_factory=ClipSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A frame and the ``time.monotonic()`` at which its source produced it."""

    frame: Frame
    decoded_s: float


ProgressCallback = Callable[[int, int | None], None]


def run(
    config: StreamConfig,
    *,
    sinks: Sequence[Sink] = (),
    on_progress: ProgressCallback | None = None,
) -> RunStats:
    """Run the pipeline until the source ends, ``max_frames``, a window close or Ctrl-C.

    Args:
        config: All settings.
        sinks: Extra sinks besides those ``config.output`` asks for (tests
            pass a :class:`~streamseg.sinks.FrameList`).
        on_progress: Called after each frame with (frames done, frames
            expected or None).

    Returns:
        The run's statistics (``stopped`` says why it ended; an interrupt
        is reported there, not raised).

    Raises:
        ConfigError: Settings that cannot work here (e.g. CUDA requested
            without a GPU).
        SourceError: The source cannot be read or stalls.
        ModelFileError: The model file is missing or invalid.
        OutputError: An output cannot be written.

    Example:
        >>> from streamseg.config import load_config
        >>> config = load_config(
        ...     StreamConfig, "configs/stream.yaml",
        ...     ["source.uri=clip.mp4", "model.path=model.safetensors",
        ...      "output.video=out.mp4"],
        ... )  # doctest: +SKIP
        >>> stats = run(config)  # doctest: +SKIP
        >>> stats.frames_out, stats.latency_ms[95]  # doctest: +SKIP
        (317, 1739.1)
    """
    source = open_source(config.source)
    if config.output.view == "window":
        check_display()  # before the model loads: fail fast
    check_outputs(config.output)
    segmenter = _load_segmenter(config.model)
    try:
        smoother = TemporalSmoother(
            config.smoothing, model_threshold=segmenter.spec.threshold
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    log.info(
        "%s (%s%s) -> %s/%s %dx%d on %s (%s)",
        source.name,
        source.kind,
        ", live" if source.live else "",
        segmenter.spec.architecture,
        segmenter.spec.encoder_name,
        *segmenter.spec.input_hw,
        segmenter.device,
        segmenter.describe(),
    )

    settings = config.source
    batch_size = 1 if source.live else config.model.batch_size
    expected = source.frame_count
    if settings.max_frames is not None and expected is not None:
        expected = min(expected, settings.max_frames)
    stats = StatsRecorder(source.name, live=source.live)
    alerter = Alerter(config.alerts)
    stall_limit_s = _stall_limit_s(source, settings)
    frames = _in_background(source, settings, stall_limit_s)
    stopped = "end of source"
    last_hw: tuple[int, int] | None = None
    last_frame_s = time.monotonic()
    with (
        contextlib.closing(frames),
        open_sinks(
            config.output,
            nominal_fps=source.nominal_fps,
            extra=sinks,
            clips=config.clips,
            status=_live_status(source, stats, alerter),
        ) as outputs,
    ):
        try:
            for batch in _batches(frames, batch_size, settings.max_frames, stats):
                if batch is NO_SIGNAL:
                    alerter.signal_lost()
                    silent_s = time.monotonic() - last_frame_s
                    _show_no_signal(outputs, last_hw, config.overlay, silent_s)
                    if outputs.stopped_by_user:
                        stopped = "closed by user"
                        break
                    continue
                with stats.time("inference", frames=len(batch)):
                    predictions = segmenter.segment([item.frame for item in batch])
                    synchronize(segmenter.device)
                for item, prediction in zip(batch, predictions, strict=True):
                    with stats.time("smoothing"):
                        prediction = smoother(prediction)
                    with stats.time("overlay"):
                        hud = HudText(stats.recent_fps, _ms(stats.last_latency_s))
                        image = render(prediction, config.overlay, hud)
                        _alert(alerter, prediction, image)
                    for sink in outputs:
                        with stats.time(sink.name):
                            sink.write(prediction, image)
                    origin_s = item.frame.timestamp_s if source.live else item.decoded_s
                    last_frame_s = time.monotonic()
                    stats.frame_out(last_frame_s - origin_s)
                    last_hw = item.frame.hw
                    if on_progress is not None:
                        on_progress(stats.frames_out, expected)
                if outputs.stopped_by_user:
                    stopped = "closed by user"
                    break
            else:
                if (
                    settings.max_frames is not None
                    and stats.frames_out >= settings.max_frames
                ):
                    stopped = "max frames"
        except KeyboardInterrupt:
            stopped = "interrupted"
            log.warning(
                "interrupted after %d frames; finalizing the outputs", stats.frames_out
            )
        except Stalled as error:
            raise SourceError(
                f"{source.name}: no frame for {stall_limit_s:g} s; check "
                "the connection, or raise source.stall_timeout_s"
            ) from error
    if stats.frames_out == 0 and stopped == "end of source" and not source.live:
        raise SourceError(
            f"{source.name}: no video frames could be decoded (empty, damaged or "
            "unsupported video); check it plays, or re-encode it to H.264 MP4"
        )
    _check_complete(source, stats, stopped)
    return stats.finish(stopped)


def _check_complete(source: Source, stats: StatsRecorder, stopped: str) -> None:
    """Fail when a file ended well short of the frame count its header announces.

    A truncated MP4 whose index survived decodes without an FFmpeg error and
    simply stops; the outputs (already finalized) hold the frames read. A
    small shortfall is tolerated: estimated counts (duration x rate) and edit
    lists can be off by a frame or two.

    Raises:
        SourceError: Fewer than the announced frames, beyond the tolerance.
    """
    expected = source.frame_count
    if source.live or source.kind != "file" or stopped != "end of source":
        return
    if expected is None or stats.frames_in >= expected - max(2, expected // 100):
        return
    raise SourceError(
        f"{source.name}: ended after {stats.frames_in} of the {expected} frames its "
        "header announces; the file is truncated or damaged: copy or re-encode it "
        f"again (the outputs hold the {stats.frames_out} frames that were read)"
    )


# Handed over by the source queue while a live source delivers nothing.
NO_SIGNAL = object()


def _stall_limit_s(source: Source, settings: SourceSettings) -> float | None:
    """After this long without a frame, a live source is declared stalled.

    A source that reconnects raises its own :class:`SourceError` when it
    gives up; the limit then only catches a driver call that never returns.
    """
    if not source.live:
        return None
    if settings.reconnects(source.kind):
        return (
            settings.stall_timeout_s
            + settings.reconnect_timeout_s
            + settings.open_timeout_s
            + MAX_RECONNECT_BACKOFF_S
        )
    return settings.stall_timeout_s


def _live_status(
    source: Source, stats: StatsRecorder, alerter: Alerter
) -> Callable[[], dict[str, object]]:
    """The run figures for the browser view's status panel."""

    def figures() -> dict[str, object]:
        return {
            "source": source.name,
            "live": source.live,
            "fps": stats.recent_fps,
            "latency_ms": _ms(stats.last_latency_s),
            "frames_out": stats.frames_out,
            "frames_dropped": stats.frames_dropped,
            "alerts": alerter.count,
            "sound": alerter.settings.sound == "browser",
        }

    return figures


def _alert(alerter: Alerter, prediction: Prediction, image: np.ndarray) -> None:
    """Update the alert state; draw the border flash on ``image`` (in place)."""
    settings = alerter.settings
    if not settings.enabled:
        return
    timestamp_s = prediction.frame.timestamp_s
    alerter.update(bool(prediction.mask.any()), timestamp_s)
    if alerter.flashing(timestamp_s):
        draw_border(image, settings.border_rgb, settings.border_px)


def _show_no_signal(
    outputs: Sinks, hw: tuple[int, int] | None, style: OverlayStyle, silent_s: float
) -> None:
    """Show the NO SIGNAL card on the live views (files get nothing)."""
    outputs.show_no_signal(no_signal_image(hw, style, silent_s))


def _load_segmenter(settings: ModelSettings) -> Segmenter:
    """Pick the device and precision (once, at the edge) and load the model file."""
    path = _model_path(settings)
    try:
        device = select_device(settings.device)
        choice = choose_backend(
            settings.backend,
            settings.quantized,
            device,
            path,
            precision=settings.precision,
            torch_options=settings.compile or settings.cuda_graphs,
        )
        settings = replace(settings, backend=choice.backend)
        precision = settings.resolved_precision(device)
    except Int8ArtefactError as error:
        raise ModelFileError(str(error)) from error
    except ValueError as error:
        raise ConfigError(f"model: {error}") from error
    log.info("%s", choice.reason)
    configure_backend(device, threads=settings.threads)
    try:
        return Segmenter.from_file(
            path,
            device,
            precision,
            threshold=settings.threshold,
            channels_last=settings.channels_last,
            backend=settings.backend,
            compile=settings.compile,
            compile_mode=settings.compile_mode,
            cuda_graphs=settings.cuda_graphs,
            batch_sizes=(1, settings.batch_size),
            int8=choice.int8,
        )
    except ValueError as error:  # an option this device or install cannot honour
        raise ConfigError(f"model: {error}") from error


def _in_background(
    source: Source, settings: SourceSettings, stall_limit_s: float | None
) -> Generator[_Decoded, None, None]:
    """Decode on a worker thread with the queue policy of the source's kind.

    Files: lossless, ``prefetch`` frames ahead (BLOCK). Live sources: the
    newest frame only (DROP_OLDEST), :data:`NO_SIGNAL` every ``no_signal_s``
    while no frame comes, and a stall after ``stall_limit_s``.
    """
    if not source.live:
        return in_background(
            _stamped(source),
            maxsize=settings.prefetch,
            when_full=WhenFull.BLOCK,
            name="streamseg-source",
        )
    return in_background(
        _stamped(source),
        maxsize=1,
        when_full=WhenFull.DROP_OLDEST,
        timeout_s=stall_limit_s,
        first_timeout_s=settings.open_timeout_s + (stall_limit_s or 0.0),
        idle_s=settings.no_signal_s,
        idle_item=NO_SIGNAL,
        name="streamseg-source",
    )


def _model_path(settings: ModelSettings) -> Path:
    if settings.path is not None:
        return settings.path
    path = default_model_path()
    if path is None:
        raise ModelFileError(NO_DEFAULT_MODEL)
    return path


def _stamped(frames: Iterable[Frame]) -> Iterator[_Decoded]:
    # Runs on the producer thread: the stamp is when the frame left the decoder.
    for frame in frames:
        yield _Decoded(frame, time.monotonic())


def _batches(
    items: Iterator[_Decoded],
    batch_size: int,
    max_frames: int | None,
    stats: StatsRecorder,
) -> Iterator[list[_Decoded] | object]:
    """Group consecutive same-size frames into batches; time the wait for each frame.

    A :data:`NO_SIGNAL` marker is passed on as it is (after the pending batch).
    """
    batch: list[_Decoded] = []
    taken = 0
    while max_frames is None or taken < max_frames:
        start_s = time.perf_counter()
        item = next(items, None)
        if item is None:
            break
        if item is NO_SIGNAL:
            if batch:
                yield batch
                batch = []
            yield item
            continue
        taken += 1
        stats.add("decode wait", time.perf_counter() - start_s)
        stats.frame_in(item.frame)
        if batch and item.frame.hw != batch[0].frame.hw:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds
