"""Connected regions of a binary mask, labelled inside the mask's bounding box.

One labelling routine for the area filter (smoothing), the overlay's boxes and
the event log. Labelling runs only over the bounding box of the mask's pixels
(a polyp rarely fills the frame) and with 16-bit labels unless OpenCV reports
more than 65535 regions; results equal whole-frame 32-bit labelling
(tests/test_smoothing.py, tests/test_events.py). At 1080p this took one
polyp-sized mask from 13 ms to under 3 ms (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Regions:
    """8-connected regions of a mask.

    Attributes:
        labels: (h, w) label image of the mask's bounding box (0: background),
            uint16 or int32.
        stats: (N + 1, 5) OpenCV stats per label (x, y, width, height, area);
            x and y relative to the box; row 0 is the background.
        origin_xy: The box's top-left corner in the mask.
    """

    labels: np.ndarray
    stats: np.ndarray
    origin_xy: tuple[int, int]

    @property
    def box(self) -> tuple[slice, slice]:
        """Row and column slices of the labelled box within the mask."""
        x, y = self.origin_xy
        height, width = self.labels.shape
        return slice(y, y + height), slice(x, x + width)

    @property
    def areas_px(self) -> np.ndarray:
        """Pixel count per label (index 0: background of the box)."""
        import cv2

        return self.stats[:, cv2.CC_STAT_AREA]

    def mask_of(self, keep: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
        """(H, W) bool mask of the regions where ``keep[label]`` is True.

        Typically one or two regions survive among many specks; comparing
        labels inside their boxes is several times cheaper than a gather over
        the whole box.

        Args:
            keep: (N + 1,) bool per label (``keep[0]``, the background, False).
            hw: The full mask's (height, width).
        """
        result = np.zeros(hw, dtype=bool)
        kept = np.flatnonzero(keep)
        if len(kept) > 16:
            result[self.box] = keep[self.labels]
            return result
        inside = result[self.box]  # a view: writes land in result
        for label in kept:
            x, y, width, height = self.stats[label, :4]
            box = (slice(y, y + height), slice(x, x + width))
            inside[box] |= self.labels[box] == label
        return result

    def boxes_xywh(self) -> tuple[tuple[int, int, int, int], ...]:
        """``(x, y, width, height)`` per region in mask pixels, largest first."""
        import cv2

        x0, y0 = self.origin_xy
        rows = sorted(self.stats[1:].tolist(), key=lambda row: -row[cv2.CC_STAT_AREA])
        return tuple(
            (int(x + x0), int(y + y0), int(w), int(h)) for x, y, w, h, _ in rows
        )


def label_regions(mask: np.ndarray) -> Regions | None:
    """Label the 8-connected regions of ``mask``; ``None`` when it is empty.

    Args:
        mask: (H, W) bool or uint8 array (non-zero = foreground), on the host.
    """
    import cv2

    host = _as_uint8(mask)
    x, y, width, height = cv2.boundingRect(host)
    if width == 0 or height == 0:
        return None
    crop = np.ascontiguousarray(host[y : y + height, x : x + width])
    labels, stats = _components(crop)
    return Regions(labels, stats, (x, y))


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A uint8 view (bool) or copy (other dtypes) with non-zero = 1 or more."""
    if mask.dtype == bool and mask.flags.c_contiguous:
        return mask.view(np.uint8)
    if mask.dtype == np.uint8:
        return np.ascontiguousarray(mask)
    return np.ascontiguousarray(mask != 0, dtype=np.uint8)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected component labels and stats of a uint8 mask (OpenCV).

    16-bit labels write half the memory of 32-bit ones. They fit for certain
    when the mask cannot hold more than 65535 regions (two 8-connected
    regions cannot touch, so each 2x2 cell holds at most one: at most
    ceil(h/2) * ceil(w/2) regions); otherwise they are tried, and OpenCV
    raises on overflow, after which 32-bit labels are used.
    """
    import cv2

    height, width = mask.shape
    most = -(-height // 2) * -(-width // 2)
    if most > np.iinfo(np.uint16).max:
        try:
            _, labels, stats, _ = cv2.connectedComponentsWithStats(
                mask, connectivity=8, ltype=cv2.CV_16U
            )
        except cv2.error:  # more than 65535 regions
            _, labels, stats, _ = cv2.connectedComponentsWithStats(
                mask, connectivity=8, ltype=cv2.CV_32S
            )
        return labels, stats
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask, connectivity=8, ltype=cv2.CV_16U
    )
    return labels, stats
