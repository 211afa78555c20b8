"""What was found in one frame: polyp present, area, boxes, max probability.

:func:`describe` turns a :class:`~streamseg.frames.Prediction` into a
:class:`FrameEvent`; :meth:`FrameEvent.to_json` is one line of the per-frame
JSONL log. :func:`region_boxes` (connected regions of a mask) is shared with
the overlay, which draws the same boxes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from streamseg.frames import Prediction
from streamseg.regions import label_regions

BoxXYWH = tuple[int, int, int, int]


def region_boxes(mask: np.ndarray) -> tuple[BoxXYWH, ...]:
    """Bounding boxes of the 8-connected regions of a mask, largest first.

    Args:
        mask: (H, W) bool or uint8 array (non-zero = foreground), on the host.

    Returns:
        ``(x, y, width, height)`` per region, in pixels of the mask.

    Example:
        >>> m = np.zeros((4, 5), bool); m[1:3, 2:4] = True
        >>> region_boxes(m)
        ((2, 1, 2, 2),)
    """
    regions = label_regions(np.asarray(mask))
    return () if regions is None else regions.boxes_xywh()


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


@torch.inference_mode()
def describe(prediction: Prediction) -> FrameEvent:
    """Summarize a prediction (one copy of the mask to the host).

    Reductions over host tensors go through NumPy: torch's thread pool costs
    more than the work on frame-sized arrays (1.5 ms for one ``max`` of a
    640x480 map on 2 busy cores, against well under 1 ms in NumPy).
    """
    mask = prediction.mask.to("cpu", torch.bool).contiguous().numpy()
    height, width = prediction.frame.hw
    area_px = int(np.count_nonzero(mask))
    probabilities = prediction.probabilities
    if probabilities.device.type == "cpu" and probabilities.dtype == torch.float32:
        max_probability = float(probabilities.numpy().max())
    else:
        max_probability = float(probabilities.max())
    return FrameEvent(
        index=prediction.frame.index,
        timestamp_s=prediction.frame.timestamp_s,
        polyp_present=area_px > 0,
        area_fraction=area_px / (height * width),
        boxes_xywh=region_boxes(mask),
        max_probability=max_probability,
        track_ids=() if prediction.tracks is None else prediction.tracks.track_ids,
    )
