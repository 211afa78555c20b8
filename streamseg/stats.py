"""Run statistics: frames in/out/dropped, throughput, per-stage timings, latency.

:class:`StatsRecorder` is filled by :func:`streamseg.app.run` while frames
flow; :meth:`StatsRecorder.figures` is what the screen shows now (HUD, status
panel, progress bar) and :meth:`StatsRecorder.finish` returns the frozen
:class:`RunStats` that the CLI prints as a summary table.

The one definition of the figures:

* **throughput** (fps): frames finished per second of wall-clock time over a
  window of at least :data:`RATE_WINDOW_S` seconds *and*
  :data:`RATE_WINDOW_FRAMES` frames, counted between batch ends
  (:func:`windowed_rate`). Files run in batches whose frames are finished
  within a few ms of each other; a window that started inside a batch would
  credit it with frames done before the window, so windows start and end at
  batch ends only. Live sources run in batches of one.
* **speed** (x real time, files): seconds of video finished per second of
  wall-clock time over the same window.
* **latency** (live sources): grab -> overlay, the age of a frame (now minus
  its capture time on the monotonic clock) when its overlay is drawn. For a
  file the time a frame waited in the lossless queue means nothing to a
  user; the run summary still reports it as "decoded -> written".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamseg.frames import Frame

# Percentiles are computed over the most recent samples; a day-long live
# session must not grow memory without bound.
MAX_SAMPLES = 100_000
# The shown frame rate is measured over at least this long and this many frames.
RATE_WINDOW_S = 2.0
RATE_WINDOW_FRAMES = 8


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The end of a batch: when it ended and how far the run had got.

    Attributes:
        time_s: When the batch's last frame was finished (``time.perf_counter``).
        frames: Frames finished so far (cumulative).
        media_s: ``timestamp_s`` of the last frame finished (video time).
    """

    time_s: float
    frames: int
    media_s: float


def windowed_rate(
    checkpoints: Sequence[Checkpoint],
    *,
    window_s: float = RATE_WINDOW_S,
    min_frames: int = RATE_WINDOW_FRAMES,
) -> tuple[float | None, float | None, int]:
    """Frames and video seconds per wall-clock second, between two batch ends.

    The window ends at the newest checkpoint and starts at the newest one at
    least ``window_s`` seconds and ``min_frames`` frames older (or at the
    oldest one, early in a run).

    Args:
        checkpoints: Batch ends, oldest first.
        window_s: Shortest window in seconds.
        min_frames: Fewest frames in the window.

    Returns:
        (frames per second, video seconds per second, index of the window's
        first checkpoint); the rates are None with fewer than two checkpoints.

    Example:
        >>> ends = [Checkpoint(0.5 * k, 4 * k, 0.16 * k) for k in range(1, 7)]
        >>> fps, speed_x, first = windowed_rate(ends)
        >>> round(fps, 3), round(speed_x, 3), first
        (8.0, 0.32, 1)
    """
    if len(checkpoints) < 2:
        return None, None, 0
    last = checkpoints[-1]
    first = 0
    for index in range(len(checkpoints) - 2, -1, -1):
        candidate = checkpoints[index]
        if (
            last.time_s - candidate.time_s >= window_s
            and last.frames - candidate.frames >= min_frames
        ):
            first = index
            break
    start = checkpoints[first]
    span_s = last.time_s - start.time_s
    if span_s <= 0:
        return None, None, first
    fps = (last.frames - start.frames) / span_s
    return fps, (last.media_s - start.media_s) / span_s, first


@dataclass(frozen=True, slots=True)
class Figures:
    """What the screen shows about the run now: HUD, status panel, progress bar.

    Attributes:
        live: Live source (fps and latency shown) or file (progress and speed).
        frames_done: Frames processed, counting the one being shown.
        frames_total: Frames the file holds (``None``: live, or unknown).
        fps: Throughput in frames per second (see the module docstring);
            ``None`` until two batches are done.
        speed_x: Files: video seconds processed per wall-clock second
            (1.0 = real time); ``None`` for live sources.
        latency_ms: Live: grab -> overlay of the frame being shown;
            ``None`` for files.
        outline_ms: Live, ``every_frame`` display: grab of the frame the
            shown outline was computed from -> overlay (``None`` otherwise,
            where it equals ``latency_ms``).
    """

    live: bool
    frames_done: int = 0
    frames_total: int | None = None
    fps: float | None = None
    speed_x: float | None = None
    latency_ms: float | None = None
    outline_ms: float | None = None


@dataclass(frozen=True, slots=True)
class StageTiming:
    """Time one stage took per frame.

    Attributes:
        name: Stage, e.g. "inference".
        frames: Frames measured.
        mean_ms: Mean milliseconds per frame.
        p95_ms: 95th percentile in milliseconds per frame.
        total_s: Total seconds spent in the stage.
    """

    name: str
    frames: int
    mean_ms: float
    p95_ms: float
    total_s: float


@dataclass(frozen=True, slots=True)
class RunStats:
    """What a run did and how fast.

    Attributes:
        source: Source name.
        live: Whether the newest-frame policy was in effect.
        frames_in: Frames the pipeline received from the source.
        frames_out: Frames processed and handed to every output.
        frames_dropped: Source frames never received (gaps in the index):
            skipped by the newest-frame policy on live sources; 0 for files.
        wall_s: Seconds from the first to the last frame (or the end).
        stages: Per-stage timings, in pipeline order.
        latency_ms: End-to-end latency percentiles {50: .., 95: .., 99: ..}
            (live: now - capture time; files: decoded -> written), or empty.
        stopped: Why the run ended: "end of source", "max frames",
            "closed by user" or "interrupted".
        frames_held: Live, ``every_frame`` display: frames written with the
            outline of an earlier frame (0 otherwise).
        outline_ms: Live, ``every_frame`` display: percentiles of the age of
            the outline written with each frame (capture of the frame it was
            computed from -> written), or empty.
        model: The model that ran and its network input, as the status panel
            names it (``bundled:fast, 256x256``); empty where not known.
    """

    source: str
    live: bool
    frames_in: int
    frames_out: int
    frames_dropped: int
    wall_s: float
    stages: tuple[StageTiming, ...]
    latency_ms: dict[int, float]
    stopped: str
    frames_held: int = 0
    outline_ms: dict[int, float] = field(default_factory=dict)
    model: str = ""

    @property
    def throughput_fps(self) -> float:
        """Frames written per second of wall time."""
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"


class StatsRecorder:
    """Accumulates timings during a run.

    Stage times and frame counts may be recorded from two threads (the
    inference worker records decode waits, arrivals and inference; the main
    loop everything else); a lock keeps the tables whole.

    Example:
        >>> stats = StatsRecorder("clip.mp4", live=False)
        >>> with stats.time("inference"):
        ...     pass
        >>> stats.finish("end of source").frames_out
        0
    """

    def __init__(
        self, source: str, *, live: bool, frames_total: int | None = None
    ) -> None:
        self.source = source
        self.live = live
        self.frames_total = None if live else frames_total
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self._lock = threading.Lock()
        # Source indices start at 0: frames a live source delivered before the
        # first one taken (while the model loaded) count as drops too.
        self._last_index = -1
        self._start_s: float | None = None
        self._stage_samples: dict[str, deque[float]] = {}
        self._stage_totals: dict[str, float] = {}
        self._stage_counts: dict[str, int] = {}
        self._latency_s: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._outline_s: deque[float] = deque(maxlen=MAX_SAMPLES)
        self.frames_held = 0
        self._checkpoints: deque[Checkpoint] = deque()
        self._last_media_s = 0.0
        self._batch_frames = 0
        self.last_latency_s: float | None = None
        self.shown = Figures(live, frames_total=self.frames_total)

    @contextlib.contextmanager
    def time(self, stage: str, frames: int = 1) -> Iterator[None]:
        """Time the block as ``frames`` frames of ``stage`` (per frame for batches)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, frames)

    def add(self, stage: str, seconds: float, frames: int = 1) -> None:
        """Record ``seconds`` spent on ``frames`` frames in ``stage``."""
        per_frame = seconds / max(frames, 1)
        with self._lock:
            if stage not in self._stage_samples:
                self._stage_samples[stage] = deque(maxlen=MAX_SAMPLES)
                self._stage_totals[stage] = 0.0
                self._stage_counts[stage] = 0
            self._stage_samples[stage].extend([per_frame] * max(frames, 1))
            self._stage_totals[stage] += seconds
            self._stage_counts[stage] += max(frames, 1)

    def frame_in(self, frame: Frame) -> None:
        """Count a received frame; a gap in the source index counts as drops."""
        with self._lock:
            if self._start_s is None:
                self._start_s = time.perf_counter()
            if frame.index > self._last_index + 1:
                self.frames_dropped += frame.index - self._last_index - 1
            self._last_index = frame.index
            self.frames_in += 1

    def frame_out(
        self,
        latency_s: float,
        timestamp_s: float | None = None,
        *,
        outline_s: float | None = None,
        held: bool = False,
    ) -> None:
        """Count a frame written ``latency_s`` after it left the source.

        Args:
            latency_s: Live: capture -> written; files: decoded -> written.
            timestamp_s: The frame's timestamp (video time, for the speed).
            outline_s: Live, ``every_frame`` display: capture of the frame
                the written outline was computed from -> written.
            held: Written with an earlier frame's outline.
        """
        self.frames_out += 1
        self.last_latency_s = latency_s
        self._latency_s.append(latency_s)
        if outline_s is not None:
            self._outline_s.append(outline_s)
        self.frames_held += held
        if timestamp_s is not None:
            self._last_media_s = timestamp_s

    def batch_out(self) -> None:
        """Mark the end of a batch: every frame taken so far has been written.

        Throughput is measured between batch ends (see :func:`windowed_rate`).
        """
        if self._checkpoints and self._checkpoints[-1].frames == self.frames_out:
            return
        self._checkpoints.append(
            Checkpoint(time.perf_counter(), self.frames_out, self._last_media_s)
        )
        _, _, first = windowed_rate(self._checkpoints)
        for _ in range(first):  # later windows never start earlier
            self._checkpoints.popleft()

    def figures(
        self, frame: Frame | None = None, *, segmented: Frame | None = None
    ) -> Figures:
        """The figures to show with ``frame``, about to be drawn (also kept as
        :attr:`shown`, which the status panel and the progress bar report).

        Args:
            frame: The frame whose overlay is being drawn; for live sources
                its latency is its age now (``time.monotonic()`` minus its
                capture time). ``None``: the figures last shown.
            segmented: Live, ``every_frame`` display: the frame the outline
                was computed from (its age is ``outline_ms``).
        """
        if frame is None:
            return self.shown
        fps, speed_x, _ = windowed_rate(self._checkpoints)
        latency_ms = outline_ms = None
        if self.live:
            now_s = time.monotonic()
            latency_ms = 1000.0 * max(now_s - frame.timestamp_s, 0.0)
            if segmented is not None:
                outline_ms = 1000.0 * max(now_s - segmented.timestamp_s, 0.0)
        self.shown = Figures(
            live=self.live,
            frames_done=self.frames_out + 1,
            frames_total=self.frames_total,
            fps=fps,
            speed_x=None if self.live else speed_x,
            latency_ms=latency_ms,
            outline_ms=outline_ms,
        )
        return self.shown

    def finish(self, stopped: str) -> RunStats:
        """Freeze the figures into a :class:`RunStats`."""
        with self._lock:
            return self._finish(stopped)

    def _finish(self, stopped: str) -> RunStats:
        wall_s = (
            time.perf_counter() - self._start_s if self._start_s is not None else 0.0
        )
        stages = tuple(
            StageTiming(
                name=name,
                frames=self._stage_counts[name],
                mean_ms=1000.0 * self._stage_totals[name] / self._stage_counts[name],
                p95_ms=1000.0 * float(np.percentile(np.fromiter(samples, float), 95)),
                total_s=self._stage_totals[name],
            )
            for name, samples in self._stage_samples.items()
            if samples
        )
        latency_ms = _percentiles_ms(self._latency_s)
        return RunStats(
            source=self.source,
            live=self.live,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            frames_dropped=self.frames_dropped,
            wall_s=wall_s,
            stages=stages,
            latency_ms=latency_ms,
            stopped=stopped,
            frames_held=self.frames_held,
            outline_ms=_percentiles_ms(self._outline_s),
        )


def _percentiles_ms(samples_s: deque[float]) -> dict[int, float]:
    """{50: .., 95: .., 99: ..} milliseconds of ``samples_s``; empty without samples."""
    if not samples_s:
        return {}
    values = np.fromiter(samples_s, float) * 1000.0
    return {q: float(np.percentile(values, q)) for q in (50, 95, 99)}


@dataclass(frozen=True)
class FallingBehind:
    """A live source this run cannot keep up with, measured once."""

    dropped_fraction: float  # of the frames the source delivered
    segmented_fps: float  # frames taken per second of stream time
    source_fps: float  # frames the source delivered per second
    over_s: float  # stream time measured


class KeepUpCheck:
    """Says once whether a live run keeps up with its source.

    ``observe`` is given the run's counts after each frame; once at least
    ``after_s`` seconds of stream time have passed, it compares the frames
    dropped with the frames delivered, once: if more than
    ``max_dropped_fraction`` were dropped it returns a :class:`FallingBehind`
    (the caller says what to do about it), else nothing, now and later.
    """

    def __init__(self, *, after_s: float = 10.0, max_dropped_fraction: float = 0.1):
        self.after_s = after_s
        self.max_dropped_fraction = max_dropped_fraction
        self._first: tuple[int, int, float] | None = None
        self._done = False

    def observe(
        self, frames_in: int, frames_dropped: int, timestamp_s: float
    ) -> FallingBehind | None:
        if self._done:
            return None
        if self._first is None:
            # From the first frame on: frames lost while the model loaded are
            # not the pipeline's rate.
            self._first = (frames_in, frames_dropped, timestamp_s)
            return None
        first_in, first_dropped, first_s = self._first
        over_s = timestamp_s - first_s
        if over_s < self.after_s:
            return None
        taken = frames_in - first_in
        dropped = frames_dropped - first_dropped
        delivered = taken + dropped
        if delivered <= 0:  # nothing new from the source yet: judge later
            return None
        self._done = True
        if dropped / delivered <= self.max_dropped_fraction:
            return None
        return FallingBehind(
            dropped / delivered, taken / over_s, delivered / over_s, over_s
        )
