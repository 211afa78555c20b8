"""The composition root: :func:`run` wires source, segmenter, smoother, overlay, sinks.

This is the only module that knows every stage. The pipeline is a plain
``for`` loop on the calling thread; concurrency comes from
:mod:`streamseg.background` only:

* decoding runs on a producer thread (files: BLOCK queue of ``prefetch``
  frames, lossless; live sources: DROP_OLDEST queue of 1, newest frame wins);
* on the CPU, inference runs on worker threads ahead of the loop: the
  network computes the next batch (with OpenVINO streams, the next
  ``streams`` batches at once, so live frames overlap too) while the loop
  smooths and draws this one; results come back in frame order. On a GPU it
  runs in the loop (a compiled or captured network belongs to the thread
  that prepared it);
* smoothing, findings, tracking and overlay run in the loop, in frame order
  (stateful stages need no locks, and an OpenCV window needs the main thread);
  a run whose outputs are per-frame results only (event log, masks, tracks:
  no sink ``wants_image``) draws no overlay;
* the video encoder runs on a consumer thread behind a BLOCK queue;
* live sources with ``source.live_display: every_frame`` (:class:`_HeldFindings`)
  show every frame as it arrives with the newest finished findings: one
  worker segments the newest frame whenever it is free, and smoothing,
  findings and tracking run on the segmented frames only.

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
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch

from streamseg import live_model
from streamseg.alerts import Alerter, AlertSettings
from streamseg.background import Background, Stalled, WhenFull, in_background
from streamseg.clips import ClipSettings
from streamseg.config import ConfigError
from streamseg.device import synchronize
from streamseg.events import StreamClock
from streamseg.findings import Findings
from streamseg.frames import Frame, Prediction
from streamseg.model import BUNDLED_PREFIX, ModelFileError, resolve_model_path
from streamseg.outputs import open_outputs
from streamseg.overlay import (
    HudText,
    OverlayStyle,
    draw_border,
    no_signal_image,
    render,
)
from streamseg.segmenter import TTA, ModelSettings, Segmenter, prepare_device
from streamseg.sinks import (
    OutputSettings,
    Sink,
    Sinks,
    check_outputs,
)
from streamseg.smoothing import SmoothingSettings, TemporalSmoother
from streamseg.sources import (
    MAX_RECONNECT_BACKOFF_S,
    Source,
    SourceError,
    SourceSettings,
    open_source,
)
from streamseg.stats import FallingBehind, KeepUpCheck, RunStats, StatsRecorder
from streamseg.tracking import Tracker, TrackingSettings
from streamseg.window import check_display

log = logging.getLogger(__name__)


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
    tracking: TrackingSettings = field(default_factory=TrackingSettings)


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A frame and the ``time.monotonic()`` at which its source produced it."""

    frame: Frame
    decoded_s: float


ProgressCallback = Callable[..., None]


class _Closable(Protocol):
    def close(self) -> None: ...


def run(
    config: StreamConfig,
    *,
    segmenter: Segmenter | None = None,
    sinks: Sequence[Sink] = (),
    on_progress: ProgressCallback | None = None,
    infer_ahead: bool | None = None,
) -> RunStats:
    """Run the pipeline until the source ends, ``max_frames``, a window close or Ctrl-C.

    Args:
        config: All settings.
        segmenter: Use this segmenter instead of loading ``config.model``
            (tools and tests inject one; ``config.model.batch_size`` still
            sets the file batch size).
        sinks: Extra sinks besides those ``config.output`` asks for (tests
            pass a :class:`~streamseg.sinks.FrameList`).
        on_progress: Called after each frame with (frames done, frames
            expected or None, the :class:`~streamseg.stats.Figures` shown).
        infer_ahead: Run inference on worker threads, ahead of the loop
            (``segmenter.streams`` batches in flight, at least one);
            ``None``: on the CPU only (benchmarks compare both).

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
    if config.output.tracks is not None and not config.tracking.enabled:
        raise ConfigError(
            "output.tracks needs tracking; drop --tracks or set tracking.enabled=true"
        )
    stop = threading.Event()  # set when the run ends: a reconnecting source stops
    source = open_source(config.source, stop=stop)
    if config.output.view == "window":
        check_display()  # before the model loads: fail fast
    check_outputs(config.output)
    settings = config.source
    stall_limit_s = _stall_limit_s(source, settings)
    # Cameras and streams open now, while the model loads: the frames they
    # deliver meanwhile are dropped (the newest wins) and counted like any
    # other drop. Files (also when played as if live) start once the model is
    # ready: waiting loses nothing.
    frames = None
    if source.kind in ("device", "stream"):
        frames = _in_background(source, settings, stall_limit_s, stop)
    try:
        if segmenter is None:
            device = prepare_device(config.model)
            if source.live and settings.live_display == "every_frame":
                _check_every_frame(config.model, device)
            if source.live and live_model.applies(config.model, device):
                # The one place a live run may swap the model: chosen once, here.
                chosen = _live_model(config.model, device, source)
                config = dataclasses.replace(config, model=chosen.settings)
                segmenter = chosen.segmenter
            else:
                segmenter = Segmenter.from_settings(
                    config.model, device, live=source.live
                )
        try:
            smoother = TemporalSmoother(
                config.smoothing, model_threshold=segmenter.spec.threshold
            )
        except ValueError as error:
            raise ConfigError(str(error)) from error
    except BaseException:
        if frames is not None:
            frames.close()
        raise
    if frames is None:
        frames = _in_background(source, settings, stall_limit_s, stop)
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

    model_label = _model_label(config.model, segmenter)
    batch_size = 1 if source.live else config.model.batch_size
    # Live sources: the newest frame at once, never test-time augmentation.
    live_tta = "none" if source.live else None
    expected = source.frame_count
    if settings.max_frames is not None and expected is not None:
        expected = min(expected, settings.max_frames)
    stats = StatsRecorder(source.name, live=source.live, frames_total=expected)
    hud_inset_px = config.alerts.border_px if config.alerts.flash else 0
    clock = StreamClock(source.live)  # stream and wall-clock times for people
    alerter = Alerter(config.alerts, clock=clock)
    tracker = Tracker(config.tracking) if config.tracking.enabled else None
    stopped = "end of source"
    last_hw: tuple[int, int] | None = None
    last_frame_s = time.monotonic()
    with (
        contextlib.closing(frames),
        open_outputs(
            config.output,
            nominal_fps=source.nominal_fps,
            extra=sinks,
            clips=config.clips,
            status=_live_status(source, stats, alerter, model=model_label),
            clock=clock,
            run_info=None
            if config.output.tracks is None
            else _run_info(config, segmenter, source),
        ) as outputs,
    ):
        batches = _batches(frames, batch_size, settings.max_frames, stats)

        def finalize(prediction: Prediction) -> Findings:
            with stats.time("smoothing"):
                prediction = smoother(prediction)
            with stats.time("findings"):
                findings = Findings.of(prediction)
            if tracker is not None:
                with stats.time("tracking"):
                    findings = findings.tracked(tracker)
            return findings

        every_frame = source.live and settings.live_display == "every_frame"
        # Per-frame results only (event log, masks, tracks): nothing to draw on.
        draw = outputs.wants_image
        # A live run that drops frames says so once, with what to change.
        keep_up = KeepUpCheck() if source.live and not every_frame else None
        if every_frame:
            held = _HeldFindings(
                batches,
                segmenter,
                stats,
                finalize,
                max_outline_age_s=settings.max_outline_age_s,
            )
            predicted: _Closable = held
            steps: Iterable[object] = held
        else:
            ahead = (
                segmenter.device.type == "cpu" if infer_ahead is None else infer_ahead
            )
            predicted = _predicted(batches, segmenter, stats, tta=live_tta, ahead=ahead)
            steps = _finalized(
                _waited(predicted, stats) if ahead else predicted, finalize
            )
        try:
            for step in steps:
                if step is NO_SIGNAL:
                    alerter.signal_lost()
                    silent_s = time.monotonic() - last_frame_s
                    _show_no_signal(outputs, last_hw, config.overlay, silent_s)
                    if outputs.stopped_by_user:
                        stopped = "closed by user"
                        break
                    continue
                batch, found = cast(tuple[list[_Decoded], list[Findings]], step)
                for item, findings in zip(batch, found, strict=True):
                    clock.start(item.frame.timestamp_s)
                    # The HUD's figures also feed the progress bar and status panel.
                    figures = stats.figures(
                        item.frame,
                        segmented=findings.segmented_frame if every_frame else None,
                    )
                    image = None
                    if draw:
                        with stats.time("overlay"):
                            image = render(
                                findings,
                                config.overlay,
                                HudText.of(figures, hud_inset_px),
                            )
                    _alert(alerter, findings, image)
                    for sink in outputs:
                        with stats.time(sink.name):
                            sink.write(findings, image)
                    origin_s = item.frame.timestamp_s if source.live else item.decoded_s
                    last_frame_s = time.monotonic()
                    stats.frame_out(
                        last_frame_s - origin_s,
                        item.frame.timestamp_s,
                        outline_s=last_frame_s - findings.segmented_frame.timestamp_s
                        if every_frame
                        else None,
                        held=findings.held,
                    )
                    last_hw = item.frame.hw
                    behind = keep_up and keep_up.observe(
                        stats.frames_in, stats.frames_dropped, item.frame.timestamp_s
                    )
                    if behind:
                        log.warning(_keep_up_advice(source.name, behind, config.model))
                    if on_progress is not None:
                        on_progress(stats.frames_out, expected, stats.shown)
                stats.batch_out()
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
        finally:
            # The inference worker reads the source: stop the source first
            # (its reader then ends), then the worker.
            stop.set()
            predicted.close()
    if stats.frames_out == 0 and stopped == "end of source" and not source.live:
        raise SourceError(
            f"{source.name}: no video frames could be decoded (empty, damaged or "
            "unsupported video); check it plays, or re-encode it to H.264 MP4"
        )
    _check_complete(source, stats, stopped)
    return dataclasses.replace(stats.finish(stopped), model=model_label)


def _live_model(
    model: ModelSettings, device: torch.device, source: Source
) -> live_model.LiveModel:
    """The bundled model that keeps up with this live source here (logged)."""
    chosen = live_model.choose(
        model,
        source_fps=source.nominal_fps,
        build=lambda settings: Segmenter.from_settings(settings, device, live=True),
        measure=live_model.network_ms,
    )
    level = logging.WARNING if chosen.fell_back else logging.INFO
    log.log(level, "%s: %s", source.name, chosen.describe())
    return chosen


def _keep_up_advice(name: str, behind: FallingBehind, model: ModelSettings) -> str:
    """The one line a live run logs when it segments too few of its frames."""
    ways = [
        "--set source.live_display=every_frame (every frame shown at once, "
        "with the newest finished outline)"
    ]
    if not _runs_fast_model(model):
        ways.insert(0, "--model bundled:fast (half the network's cost on a CPU)")
    return (
        f"{name}: {behind.dropped_fraction:.0%} of the source's frames dropped over "
        f"{behind.over_s:.0f} s ({behind.segmented_fps:.1f} of "
        f"{behind.source_fps:.1f} frames a second segmented); to keep up: "
        + " or ".join(ways)
        + " (docs/benchmarks.md)"
    )


def _runs_fast_model(model: ModelSettings) -> bool:
    if model.path is None:
        return False
    try:
        fast = resolve_model_path("bundled:fast")
        return model.model_path().resolve() == fast.resolve()
    except ModelFileError:  # a build without it
        return False


def _run_info(
    config: StreamConfig, segmenter: Segmenter, source: Source
) -> dict[str, object]:
    """What ``tracks.json`` (and the report made from it) says about the run."""
    from streamseg.model import file_sha256

    path = config.model.model_path()
    spec = segmenter.spec
    info = {
        "source": source.name,
        "model": {
            "path": str(path),
            "sha256": file_sha256(path),
            "architecture": spec.architecture,
            "encoder_name": spec.encoder_name,
            "input_hw": list(spec.input_hw),
            "threshold": spec.threshold,
        },
        "settings": {
            "tracking": dataclasses.asdict(config.tracking),
            "smoothing": dataclasses.asdict(config.smoothing),
        },
    }
    return info


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
# On close, wait this long for a live source's thread: one inside an attempt
# to open a stream ends only with that attempt's timeout, and then by itself.
LIVE_JOIN_TIMEOUT_S = 0.5


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


def _model_label(settings: ModelSettings, segmenter: Segmenter) -> str:
    """The running model as the status panel names it: ``bundled:fast, 256x256``."""
    if settings.path is None:
        name = f"{BUNDLED_PREFIX}default"
    elif str(settings.path).startswith(BUNDLED_PREFIX):
        name = str(settings.path)
    else:
        name = Path(settings.path).name
    height, width = segmenter.spec.input_hw
    return f"{name}, {width}x{height}"


def _live_status(
    source: Source, stats: StatsRecorder, alerter: Alerter, *, model: str
) -> Callable[[], dict[str, object]]:
    """The run figures for the browser view's status panel."""

    def figures() -> dict[str, object]:
        shown = stats.shown  # the figures the HUD of this frame shows
        return {
            "source": source.name,
            "model": model,
            "live": source.live,
            "fps": shown.fps,
            "latency_ms": shown.latency_ms,
            "outline_ms": shown.outline_ms,
            "frames_done": shown.frames_done,
            "frames_total": shown.frames_total,
            "speed_x": shown.speed_x,
            "frames_out": stats.frames_out,
            "frames_dropped": stats.frames_dropped,
            "frames_held": stats.frames_held,
            "alerts": alerter.count,
            "sound": alerter.settings.sound == "browser",
        }

    return figures


def _alert(alerter: Alerter, findings: Findings, image: np.ndarray | None) -> None:
    """Update the alert state; draw the border flash on ``image`` (in place).

    ``image`` is ``None`` where the run draws nothing (no sink shows or
    records the annotated frame); the alert state still follows the frames.
    """
    settings = alerter.settings
    if not settings.enabled:
        return
    timestamp_s = findings.frame.timestamp_s
    alerter.update(findings.shown, timestamp_s)
    if image is not None and alerter.flashing(timestamp_s):
        draw_border(image, settings.border_rgb, settings.border_px)


def _show_no_signal(
    outputs: Sinks, hw: tuple[int, int] | None, style: OverlayStyle, silent_s: float
) -> None:
    """Show the NO SIGNAL card on the live views (files get nothing)."""
    outputs.show_no_signal(no_signal_image(hw, style, silent_s))


def _in_background(
    source: Source,
    settings: SourceSettings,
    stall_limit_s: float | None,
    stop: threading.Event,
) -> Background[_Decoded]:
    """Decode on a worker thread (started now) with the queue policy of the source.

    Files: lossless, ``prefetch`` frames ahead (BLOCK). Live sources: the
    newest frame only (DROP_OLDEST), :data:`NO_SIGNAL` every ``no_signal_s``
    while no frame comes, a stall after ``stall_limit_s``, and no long wait
    on close for a producer inside an attempt to open the source.
    """
    if not source.live:
        return in_background(
            _stamped(source),
            maxsize=settings.prefetch,
            when_full=WhenFull.BLOCK,
            name="streamseg-source",
            stop=stop,
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
        stop=stop,
        join_timeout_s=LIVE_JOIN_TIMEOUT_S,
    )


def _stamped(frames: Iterable[Frame]) -> Iterator[_Decoded]:
    # Runs on the producer thread: the stamp is when the frame left the decoder.
    for frame in frames:
        yield _Decoded(frame, time.monotonic())


def _predicted(
    batches: Iterator[list[_Decoded] | object],
    segmenter: Segmenter,
    stats: StatsRecorder,
    *,
    tta: TTA | None,
    ahead: bool,
) -> Iterator[tuple[list[_Decoded], list[Prediction]] | object]:
    """Each batch with its predictions (:data:`NO_SIGNAL` passed on as it is).

    ``ahead``: on worker threads, ahead of the caller: up to
    ``segmenter.streams`` batches are computed at once (at least one), and
    each comes back in order, as soon as it is done (nothing lost or
    reordered; the caller's wait is timed as ``prediction wait``). To end
    early, set the source's stop event (the reader of the source then ends),
    then close the result. Otherwise on the caller's thread.
    """

    in_flight = max(1, segmenter.streams) if ahead else 1
    # Calls that overlap each take longer than alone: the table says so.
    stage = "inference" if in_flight == 1 else f"inference ({in_flight} at once)"

    def predict(batch: list[_Decoded]) -> list[Prediction]:
        with stats.time(stage, frames=len(batch)):
            predictions = segmenter.segment([item.frame for item in batch], tta=tta)
            synchronize(segmenter.device)
        return predictions

    def infer() -> Iterator[tuple[list[_Decoded], list[Prediction]] | object]:
        for batch in batches:
            if batch is NO_SIGNAL:
                yield batch
            else:
                yield batch, predict(cast(list[_Decoded], batch))

    if not ahead:
        return infer()
    return in_background(
        _submitted(batches, predict, in_flight),
        maxsize=1,
        when_full=WhenFull.BLOCK,
        name="streamseg-inference",
    )


def _check_every_frame(model: ModelSettings, device: torch.device) -> None:
    """Refuse what the ``every_frame`` display's worker thread cannot run.

    Raises:
        ConfigError: A compiled or CUDA-graph network on CUDA (it runs on the
            thread that prepared it, the loop's; ``segmented`` keeps it there).
    """
    if device.type == "cuda" and (model.compile or model.cuda_graphs):
        raise ConfigError(
            "source.live_display=every_frame segments on a worker thread, and a "
            "compiled or CUDA-graph network runs only on the thread that prepared "
            "it; drop model.compile / model.cuda_graphs, or use "
            "source.live_display=segmented"
        )


def _finalized(
    steps: Iterator[tuple[list[_Decoded], list[Prediction]] | object],
    finalize: Callable[[Prediction], Findings],
) -> Iterator[tuple[list[_Decoded], list[Findings]] | object]:
    """Each batch with the findings of its predictions, in order."""
    for step in steps:
        if step is NO_SIGNAL:
            yield step
            continue
        batch, predictions = cast(tuple[list[_Decoded], list[Prediction]], step)
        yield batch, [finalize(prediction) for prediction in predictions]


class _HeldFindings:
    """Every live frame at once, with the newest finished findings (``every_frame``).

    One worker thread segments the newest frame whenever it is free; the
    loop never waits for it while the newest findings are at most
    ``max_outline_age_s`` old and of the frame's size. Otherwise (the first
    frame, a new frame size, an outline too old) it waits for the segmentation
    in flight, and where that is still too old or of another size, for the
    current frame's own: findings drawn on a later frame than their own are
    never older than ``max_outline_age_s``. Frames that arrive meanwhile are
    dropped by the live queue, as in ``segmented`` display. Iterate it for
    ``([item], [findings])`` per frame and :data:`NO_SIGNAL` markers;
    :meth:`close` waits for the segmentation in flight (at most one).
    """

    def __init__(
        self,
        batches: Iterator[list[_Decoded] | object],
        segmenter: Segmenter,
        stats: StatsRecorder,
        finalize: Callable[[Prediction], Findings],
        *,
        max_outline_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._batches = batches
        self._segmenter = segmenter
        self._stats = stats
        self._finalize = finalize
        self._max_age_s = max_outline_age_s
        self._clock = clock
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamseg-infer")
        self._running: Future[list[Prediction]] | None = None
        self._latest: Findings | None = None

    def _predict(self, frame: Frame) -> list[Prediction]:
        with self._stats.time("inference"):
            predictions = self._segmenter.segment([frame], tta="none")
            synchronize(self._segmenter.device)
        return predictions

    def _submit(self, frame: Frame) -> None:
        self._running = self._pool.submit(self._predict, frame)

    def _collect(self, *, wait: bool) -> None:
        """Finalize the segmentation in flight if it is done (or ``wait``)."""
        if self._running is None:
            return
        future = self._running
        if not wait and not future.done():
            return
        start_s = time.perf_counter()
        predictions = future.result()
        if wait:
            self._stats.add("prediction wait", time.perf_counter() - start_s)
        self._running = None
        self._latest = self._finalize(predictions[0])

    def _usable(self, frame: Frame) -> bool:
        latest = self._latest
        if latest is None or latest.segmented_frame.hw != frame.hw:
            return False
        age_s = self._clock() - latest.segmented_frame.timestamp_s
        return age_s <= self._max_age_s

    def __iter__(self) -> Iterator[tuple[list[_Decoded], list[Findings]] | object]:
        for batch in self._batches:
            if batch is NO_SIGNAL:
                yield batch
                continue
            item = cast(list[_Decoded], batch)[0]
            self._collect(wait=False)
            if self._running is None:
                self._submit(item.frame)
            if not self._usable(item.frame):
                self._collect(wait=True)  # the segmentation in flight
                latest = self._latest
                if latest is None or (
                    latest.segmented_frame is not item.frame
                    and not self._usable(item.frame)
                ):
                    # Still too old, or of another size: this frame's own.
                    self._submit(item.frame)
                    self._collect(wait=True)
            findings = cast(Findings, self._latest)
            yield [item], [findings.held_on(item.frame)]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _submitted(
    batches: Iterator[list[_Decoded] | object],
    predict: Callable[[list[_Decoded]], list[Prediction]],
    in_flight: int,
) -> Iterator[tuple[list[_Decoded], Future[list[Prediction]]] | object]:
    """Start ``predict`` on each batch, ``in_flight`` at most at once; yield futures.

    Runs on the inference thread: a batch is read from the source only when
    a worker is free (a live source meanwhile keeps its newest frame).
    """
    free = threading.Semaphore(in_flight)
    # On close the pool waits for the batches still running (at most in_flight).
    with ThreadPoolExecutor(in_flight, thread_name_prefix="streamseg-infer") as pool:
        while True:
            free.acquire()
            batch = next(batches, None)
            if batch is None:
                return
            if batch is NO_SIGNAL:
                free.release()
                yield batch
                continue
            future = pool.submit(predict, cast(list[_Decoded], batch))
            future.add_done_callback(lambda _: free.release())
            yield batch, future


def _waited(
    steps: Iterator[tuple[list[_Decoded], Future[list[Prediction]]] | object],
    stats: StatsRecorder,
) -> Iterator[tuple[list[_Decoded], list[Prediction]] | object]:
    """``steps`` with each future's result, timing the loop's wait for it."""
    while True:
        start_s = time.perf_counter()
        step = next(steps, None)
        if step is None:
            return
        if step is NO_SIGNAL:
            yield step
            continue
        batch, future = cast(tuple[list[_Decoded], Future[list[Prediction]]], step)
        predictions = future.result()
        stats.add("prediction wait", time.perf_counter() - start_s, len(batch))
        yield batch, predictions


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
        if stats.frames_in == 1 and item.frame.index > 0:
            log.info(
                "%s: %d frames arrived while the model was loading (the newest "
                "frame wins: they count as dropped)",
                stats.source,
                item.frame.index,
            )
        if batch and item.frame.hw != batch[0].frame.hw:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
