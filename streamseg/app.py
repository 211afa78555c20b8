"""The composition root: :func:`run` wires source, segmenter, smoother, overlay, sinks.

This is the only module that knows every stage. The pipeline is a plain
``for`` loop on the calling thread; concurrency comes from
:mod:`streamseg.background` only:

* decoding runs on a producer thread (files: BLOCK queue of ``prefetch``
  frames, lossless; live sources: DROP_OLDEST queue of 1, newest frame wins);
* inference, smoothing and overlay run in the loop (stateful stages need no
  locks, and an OpenCV window needs the main thread);
* the video encoder runs on a consumer thread behind a BLOCK queue.

Ctrl-C (and SIGTERM, which the CLI turns into the same interrupt) ends the
loop; every output is finalized on the way out.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streamseg.background import Stalled, WhenFull, in_background
from streamseg.config import ConfigError
from streamseg.device import (
    configure_backend,
    resolve_precision,
    select_device,
    synchronize,
)
from streamseg.frames import Frame
from streamseg.model import ModelFileError, default_model_path
from streamseg.overlay import HudText, OverlayStyle, render
from streamseg.segmenter import Segmenter
from streamseg.sinks import OutputSettings, Sink, check_display, open_sinks
from streamseg.smoothing import SmoothingSettings, TemporalSmoother
from streamseg.sources import Source, SourceError, SourceSettings, open_source
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
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``bf16``
            or ``fp16`` (CUDA only).
        channels_last: NHWC memory format (faster on tensor cores and with
            bf16 on recent CPUs).
        threshold: Overrides the model file's calibrated threshold
            (``None``: use the file's).
        batch_size: Frames per forward pass for files and folders (throughput);
            live sources always use 1 (the newest frame, at once).
        threads: CPU threads for torch (``None``: torch's default, one per
            core). On a CPU shared with other work, fewer threads can be much
            faster (measured on 2 busy cores: a small model ran 8x faster with
            1 thread than with 2); on an idle machine more threads help.
    """

    path: Path | None = None
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    threshold: float | None = None
    batch_size: int = 4
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(
                f"threshold: expected a value in (0, 1) or null, got {self.threshold}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: expected >= 1 or null, got {self.threads}")


@dataclass(frozen=True)
class StreamConfig:
    """All that ``streamseg run`` needs: one section per stage (configs/stream.yaml)."""

    source: SourceSettings = field(default_factory=SourceSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    overlay: OverlayStyle = field(default_factory=OverlayStyle)
    output: OutputSettings = field(default_factory=OutputSettings)


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
        segmenter.precision.name,
    )

    settings = config.source
    batch_size = 1 if source.live else config.model.batch_size
    expected = source.frame_count
    if settings.max_frames is not None and expected is not None:
        expected = min(expected, settings.max_frames)
    stats = StatsRecorder(source.name, live=source.live)
    frames = _in_background(source, settings)
    stopped = "end of source"
    with (
        contextlib.closing(frames),
        open_sinks(
            config.output, nominal_fps=source.nominal_fps, extra=sinks
        ) as outputs,
    ):
        try:
            for batch in _batches(frames, batch_size, settings.max_frames, stats):
                with stats.time("inference", frames=len(batch)):
                    predictions = segmenter.segment([item.frame for item in batch])
                    synchronize(segmenter.device)
                for item, prediction in zip(batch, predictions, strict=True):
                    with stats.time("smoothing"):
                        prediction = smoother(prediction)
                    with stats.time("overlay"):
                        hud = HudText(stats.recent_fps, _ms(stats.last_latency_s))
                        image = render(prediction, config.overlay, hud)
                    for sink in outputs:
                        with stats.time(sink.name):
                            sink.write(prediction, image)
                    origin_s = item.frame.timestamp_s if source.live else item.decoded_s
                    stats.frame_out(time.monotonic() - origin_s)
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
                f"{source.name}: no frame for {settings.stall_timeout_s:g} s; check "
                "the connection, or raise source.stall_timeout_s"
            ) from error
    return stats.finish(stopped)


def _load_segmenter(settings: ModelSettings) -> Segmenter:
    """Pick the device and precision (once, at the edge) and load the model file."""
    try:
        device = select_device(settings.device)
        precision = resolve_precision(device, settings.precision)
    except ValueError as error:
        raise ConfigError(f"model: {error}") from error
    configure_backend(device, threads=settings.threads)
    return Segmenter.from_file(
        _model_path(settings),
        device,
        precision,
        threshold=settings.threshold,
        channels_last=settings.channels_last,
    )


def _in_background(
    source: Source, settings: SourceSettings
) -> Generator[_Decoded, None, None]:
    """Decode on a worker thread with the queue policy of the source's kind.

    Files: lossless, ``prefetch`` frames ahead (BLOCK). Live sources: the
    newest frame only (DROP_OLDEST), and a stall after ``stall_timeout_s``.
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
        timeout_s=settings.stall_timeout_s,
        first_timeout_s=settings.open_timeout_s + settings.stall_timeout_s,
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
) -> Iterator[list[_Decoded]]:
    """Group consecutive same-size frames into batches; time the wait for each frame."""
    limited = items if max_frames is None else itertools.islice(items, max_frames)
    batch: list[_Decoded] = []
    while True:
        start_s = time.perf_counter()
        item = next(limited, None)
        if item is None:
            break
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
