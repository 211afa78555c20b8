"""One line of the per-frame JSONL log: polyp present, area, boxes, max probability.

:func:`describe` turns the frame's :class:`~streamseg.findings.Findings` into
a :class:`FrameEvent`; :meth:`FrameEvent.to_json` is one line of the log (the
event log, event clips and the browser view write the same line).
:class:`StreamClock` turns frame timestamps into the times logs and messages
give: stream time (seconds since the first frame) and, for live sources, the
wall-clock time.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass

from streamseg.findings import Findings
from streamseg.regions import BoxXYWH


class StreamClock:
    """Times a person can place in the procedure, from frames' ``timestamp_s``.

    * Stream time: seconds since the first frame of the run. For a file this
      is its presentation time counted from the first frame (the same as the
      annotated recording's timeline; 0-based in almost every file).
    * Wall-clock time (live sources only): when the frame was captured, as
      local time with its UTC offset. Live frames are stamped with
      ``time.monotonic()``; the offset to the wall clock is read once, when
      the clock is made, so a clock adjustment during the run does not make
      times jump.

    Args:
        live: Frames are stamped with ``time.monotonic()`` at capture.
        wall_offset_s: Wall-clock time minus monotonic time (``None``: now).

    Example:
        >>> clock = StreamClock(live=True, wall_offset_s=1_700_000_000.0)
        >>> clock.start(3676.64)
        >>> clock.stream_s(3827.32)
        150.68
        >>> clock.wall_time(3676.64).astimezone(datetime.timezone.utc).isoformat()
        '2023-11-14T23:14:36.640000+00:00'
    """

    def __init__(self, live: bool, *, wall_offset_s: float | None = None) -> None:
        self.live = live
        self.first_timestamp_s: float | None = None
        if wall_offset_s is None:
            wall_offset_s = time.time() - time.monotonic()
        self._wall_offset_s = wall_offset_s

    def start(self, timestamp_s: float) -> None:
        """Take the first frame's timestamp as stream time 0 (later calls: no-op)."""
        if self.first_timestamp_s is None:
            self.first_timestamp_s = timestamp_s

    def stream_s(self, timestamp_s: float) -> float:
        """Seconds since the first frame (rounded to the microsecond)."""
        self.start(timestamp_s)
        return round(timestamp_s - self.first_timestamp_s, 6)

    def wall_time(self, timestamp_s: float) -> datetime.datetime | None:
        """Local wall-clock time of a live frame's capture (``None`` for files)."""
        if not self.live:
            return None
        return datetime.datetime.fromtimestamp(
            timestamp_s + self._wall_offset_s
        ).astimezone()

    def describe(self, timestamp_s: float) -> str:
        """``"12.40 s"`` (files) or ``"12.40 s (14:03:12.345)"`` (live sources)."""
        text = f"{self.stream_s(timestamp_s):.2f} s"
        wall = self.wall_time(timestamp_s)
        if wall is not None:
            text += f" ({wall.isoformat(timespec='milliseconds')[11:23]})"
        return text


def say_when(timestamp_s: float, clock: StreamClock | None) -> str:
    """A frame's time as messages give it: :meth:`StreamClock.describe`, or
    the raw ``timestamp_s`` without a clock.

    Example:
        >>> say_when(12.4, None), say_when(12.4, StreamClock(live=False))
        ('12.40 s', '0.00 s')
    """
    return f"{timestamp_s:.2f} s" if clock is None else clock.describe(timestamp_s)


@dataclass(frozen=True, slots=True)
class FrameEvent:
    """The findings on one frame.

    Attributes:
        index: Source frame index.
        timestamp_s: Stream time: seconds since the first frame (see
            :class:`StreamClock`; without a clock, the frame's own timestamp).
        polyp_present: True if any pixel is in the final mask.
        area_fraction: Mask pixels / frame pixels, in [0, 1].
        boxes_xywh: One ``(x, y, width, height)`` per connected region, in
            source pixels, largest first.
        max_probability: Highest (smoothed, if smoothing is on) probability
            in the frame, in [0, 1].
        wall_time: Live sources: local wall-clock time of the capture, ISO
            8601 with the UTC offset and milliseconds (``None``: files; the
            key is then left out of the JSON line).
        track_ids: Ids of the polyp tracks shown on the frame, ascending
            (empty with tracking off).
        segmented_index: Live, ``every_frame`` display: the source index of
            the earlier frame whose findings this frame shows (``None``: its
            own; the key is then left out of the JSON line).
    """

    index: int
    timestamp_s: float
    polyp_present: bool
    area_fraction: float
    boxes_xywh: tuple[BoxXYWH, ...]
    max_probability: float
    wall_time: str | None = None
    track_ids: tuple[int, ...] = ()
    segmented_index: int | None = None

    def to_json(self) -> str:
        """One JSONL line (no newline).

        Example:
            >>> FrameEvent(3, 0.12, True, 0.25, ((1, 2, 3, 4),), 0.9).to_json()[:40]
            '{"index": 3, "timestamp_s": 0.12, "polyp'
        """
        line = {
            "index": self.index,
            "timestamp_s": round(self.timestamp_s, 6),
            "polyp_present": self.polyp_present,
            "area_fraction": round(self.area_fraction, 6),
            "boxes_xywh": [list(box) for box in self.boxes_xywh],
            "max_probability": round(self.max_probability, 4),
            "track_ids": list(self.track_ids),
        }
        if self.wall_time is not None:
            line["wall_time"] = self.wall_time
        if self.segmented_index is not None:
            line["segmented_index"] = self.segmented_index
        return json.dumps(line)


def describe(findings: Findings, clock: StreamClock | None = None) -> FrameEvent:
    """The log line of a frame's findings (nothing is computed again).

    Args:
        findings: The frame's findings.
        clock: Gives stream time and, live, the wall-clock time (``None``:
            the frame's own timestamp, no wall-clock time).
    """
    frame = findings.frame
    timestamp_s = frame.timestamp_s
    wall = None if clock is None else clock.wall_time(timestamp_s)
    return FrameEvent(
        index=frame.index,
        timestamp_s=timestamp_s if clock is None else clock.stream_s(timestamp_s),
        polyp_present=findings.present,
        area_fraction=findings.area_fraction,
        boxes_xywh=findings.boxes_xywh,
        max_probability=findings.max_probability,
        wall_time=None if wall is None else wall.isoformat(timespec="milliseconds"),
        track_ids=findings.track_ids,
        segmented_index=findings.segmented_frame.index if findings.held else None,
    )
