"""Run statistics: frames in/out/dropped, per-stage timings and end-to-end latency.

:class:`StatsRecorder` is filled by :func:`streamseg.app.run` while frames
flow; :meth:`StatsRecorder.finish` returns the frozen :class:`RunStats`
that the CLI prints as a summary table.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamseg.frames import Frame

# Percentiles are computed over the most recent samples; a day-long live
# session must not grow memory without bound.
MAX_SAMPLES = 100_000
# Window over which the HUD's "recent fps" is measured.
RECENT_FPS_WINDOW_S = 1.0


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

    @property
    def throughput_fps(self) -> float:
        """Frames written per second of wall time."""
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"


class StatsRecorder:
    """Accumulates timings during a run (single-threaded: the main loop only).

    Example:
        >>> stats = StatsRecorder("clip.mp4", live=False)
        >>> with stats.time("inference"):
        ...     pass
        >>> stats.finish("end of source").frames_out
        0
    """

    def __init__(self, source: str, *, live: bool) -> None:
        self.source = source
        self.live = live
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self._last_index: int | None = None
        self._start_s: float | None = None
        self._stage_samples: dict[str, deque[float]] = {}
        self._stage_totals: dict[str, float] = {}
        self._stage_counts: dict[str, int] = {}
        self._latency_s: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._recent_out: deque[float] = deque()
        self.last_latency_s: float | None = None

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
        if stage not in self._stage_samples:
            self._stage_samples[stage] = deque(maxlen=MAX_SAMPLES)
            self._stage_totals[stage] = 0.0
            self._stage_counts[stage] = 0
        per_frame = seconds / max(frames, 1)
        self._stage_samples[stage].extend([per_frame] * max(frames, 1))
        self._stage_totals[stage] += seconds
        self._stage_counts[stage] += max(frames, 1)

    def frame_in(self, frame: Frame) -> None:
        """Count a received frame; a gap in the source index counts as drops."""
        if self._start_s is None:
            self._start_s = time.perf_counter()
        if self._last_index is not None and frame.index > self._last_index + 1:
            self.frames_dropped += frame.index - self._last_index - 1
        self._last_index = frame.index
        self.frames_in += 1

    def frame_out(self, latency_s: float) -> None:
        """Count a frame written ``latency_s`` after it left the source."""
        self.frames_out += 1
        self.last_latency_s = latency_s
        self._latency_s.append(latency_s)
        now = time.perf_counter()
        self._recent_out.append(now)
        while self._recent_out and now - self._recent_out[0] > RECENT_FPS_WINDOW_S:
            self._recent_out.popleft()

    @property
    def recent_fps(self) -> float | None:
        """Frames written per second over the last second (None until measurable)."""
        if len(self._recent_out) < 2:
            return None
        span = self._recent_out[-1] - self._recent_out[0]
        return (len(self._recent_out) - 1) / span if span > 0 else None

    def finish(self, stopped: str) -> RunStats:
        """Freeze the figures into a :class:`RunStats`."""
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
        latency_ms: dict[int, float] = {}
        if self._latency_s:
            values = np.fromiter(self._latency_s, float) * 1000.0
            latency_ms = {q: float(np.percentile(values, q)) for q in (50, 95, 99)}
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
        )
