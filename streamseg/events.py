"""One line of the per-frame JSONL log: polyp present, area, boxes, max probability.

:func:`describe` turns the frame's :class:`~streamseg.findings.Findings` into
a :class:`FrameEvent`; :meth:`FrameEvent.to_json` is one line of the log (the
event log, event clips and the browser view write the same line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streamseg.findings import Findings
from streamseg.regions import BoxXYWH


@dataclass(frozen=True, slots=True)
class FrameEvent:
    """The findings on one frame.

    Attributes:
        index: Source frame index.
        timestamp_s: The frame's timestamp (see :class:`~streamseg.frames.Frame`).
        polyp_present: True if any pixel is in the final mask.
        area_fraction: Mask pixels / frame pixels, in [0, 1].
        boxes_xywh: One ``(x, y, width, height)`` per connected region, in
            source pixels, largest first.
        max_probability: Highest (smoothed, if smoothing is on) probability
            in the frame, in [0, 1].
        track_ids: Ids of the polyp tracks shown on the frame, ascending
            (empty with tracking off).
    """

    index: int
    timestamp_s: float
    polyp_present: bool
    area_fraction: float
    boxes_xywh: tuple[BoxXYWH, ...]
    max_probability: float
    track_ids: tuple[int, ...] = ()

    def to_json(self) -> str:
        """One JSONL line (no newline).

        Example:
            >>> FrameEvent(3, 0.12, True, 0.25, ((1, 2, 3, 4),), 0.9).to_json()[:40]
            '{"index": 3, "timestamp_s": 0.12, "polyp'
        """
        return json.dumps(
            {
                "index": self.index,
                "timestamp_s": round(self.timestamp_s, 6),
                "polyp_present": self.polyp_present,
                "area_fraction": round(self.area_fraction, 6),
                "boxes_xywh": [list(box) for box in self.boxes_xywh],
                "max_probability": round(self.max_probability, 4),
                "track_ids": list(self.track_ids),
            }
        )


def describe(findings: Findings) -> FrameEvent:
    """The log line of a frame's findings (nothing is computed again)."""
    frame = findings.frame
    return FrameEvent(
        index=frame.index,
        timestamp_s=frame.timestamp_s,
        polyp_present=findings.present,
        area_fraction=findings.area_fraction,
        boxes_xywh=findings.boxes_xywh,
        max_probability=findings.max_probability,
        track_ids=findings.track_ids,
    )
