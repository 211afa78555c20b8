"""Connected regions of a binary mask, labelled inside the mask's bounding box.

One labelling routine, run at most once per frame: the area filter (smoothing)
labels the mask and hands the surviving regions on with its result; only
without an area filter does :class:`~streamseg.findings.Findings` label the
final mask itself. Overlay boxes, events, clips and the web view read
:class:`Region` values from there. Labelling runs only over the bounding box
of the mask's pixels (a polyp rarely fills the frame) and with 16-bit labels
unless OpenCV reports more than 65535 regions; results equal whole-frame
32-bit labelling (tests/test_smoothing.py). At 1080p this took one
polyp-sized mask from 13 ms to under 3 ms (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BoxXYWH = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Region:
    """One 8-connected region of a mask.

    Attributes:
        box_xywh: ``(x, y, width, height)`` of its bounding box, in mask pixels.
        area_px: Its pixel count.
    """

    box_xywh: BoxXYWH
    area_px: int


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

    def listed(self, keep: np.ndarray | None = None) -> tuple[Region, ...]:
        """The regions (those where ``keep[label]``, if given), largest first.

        Args:
            keep: (N + 1,) bool per label, as for :meth:`mask_of`.
        """
        x0, y0 = self.origin_xy
        rows = self.stats[1:].tolist()
        if keep is not None:
            rows = [row for row, kept in zip(rows, keep[1:], strict=True) if kept]
        rows.sort(key=lambda row: -row[4])  # cv2.CC_STAT_AREA
        return tuple(
            Region((int(x + x0), int(y + y0), int(w), int(h)), int(area))
            for x, y, w, h, area in rows
        )

    def boxes_xywh(self) -> tuple[BoxXYWH, ...]:
        """``(x, y, width, height)`` per region in mask pixels, largest first."""
        return tuple(region.box_xywh for region in self.listed())


def scale_box(
    box_xywh: BoxXYWH, from_hw: tuple[int, int], to_hw: tuple[int, int]
) -> BoxXYWH:
    """A box in one image's pixels as the smallest box covering it in another's.

    Example:
        >>> scale_box((1, 2, 3, 4), (10, 10), (20, 40))
        (4, 4, 12, 8)
    """
    x, y, width, height = box_xywh
    sx = to_hw[1] / from_hw[1]
    sy = to_hw[0] / from_hw[0]
    left, top = math.floor(x * sx), math.floor(y * sy)
    right = min(math.ceil((x + width) * sx), to_hw[1])
    bottom = min(math.ceil((y + height) * sy), to_hw[0])
    return left, top, right - left, bottom - top


def scale_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A host bool mask scaled to ``hw`` (bilinear, then cut at one half).

    How a mask made at the network's input size becomes the frame's: the
    same as resizing the 0/1 mask bilinearly (by area when shrinking) and
    keeping values >= 0.5, so outlines come out smooth, not blocky. Returns
    the mask itself when it is already that size.

    Args:
        mask: (h, w) bool array.
        hw: (height, width) wanted.

    Example:
        >>> m = np.zeros((2, 2), bool); m[0, 0] = True
        >>> scale_mask(m, (4, 4)).astype(int).tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """
    import cv2

    height, width = int(hw[0]), int(hw[1])
    if mask.shape == (height, width):
        return mask
    levels = _as_uint8(mask) * np.uint8(255)
    # Shrinking (frames smaller than the network's input): the share of each
    # output pixel the mask covers, as evaluate-video shrinks truth masks.
    if height <= mask.shape[0] and width <= mask.shape[1]:
        scaled = cv2.resize(levels, (width, height), interpolation=cv2.INTER_AREA)
        return scaled >= 128
    # Enlarging: only the part around the mask's pixels is resized (a polyp
    # rarely fills the frame), cut where the two pixel grids line up, so the
    # result equals resizing the whole mask (tests/test_overlay.py).
    x, y, box_w, box_h = cv2.boundingRect(levels)
    scaled = np.zeros((height, width), bool)
    if box_w == 0:
        return scaled
    rows = _aligned_span(y, y + box_h, mask.shape[0], height)
    cols = _aligned_span(x, x + box_w, mask.shape[1], width)
    part = cv2.resize(
        levels[rows[0] : rows[1], cols[0] : cols[1]],
        (cols[3] - cols[2], rows[3] - rows[2]),
        interpolation=cv2.INTER_LINEAR,
    )
    scaled[rows[2] : rows[3], cols[2] : cols[3]] = part >= 128
    return scaled


def _aligned_span(
    start: int, stop: int, size: int, scaled_size: int
) -> tuple[int, int, int, int]:
    """Source ``[a, b)`` around ``[start, stop)`` and its scaled span ``[c, d)``.

    The source span reaches one pixel beyond ``[start, stop)`` (the linear
    interpolation's neighbours) and is cut on multiples of
    ``size / gcd(size, scaled_size)`` source pixels: there the scaled grid
    lines up with the source grid, and resizing the span gives the same
    pixels as resizing the whole line. Outside ``[c, d)`` the whole-line
    result is 0 (both neighbours lie outside ``[start, stop)``).
    """
    common = math.gcd(size, scaled_size)
    step, scaled_step = size // common, scaled_size // common
    first = max(start - 1, 0) // step
    last = min(-(-(stop + 1) // step), common)
    return first * step, last * step, first * scaled_step, last * scaled_step


def find_regions(mask: np.ndarray) -> tuple[Region, ...]:
    """The 8-connected regions of a mask, largest first (``()`` when empty).

    Args:
        mask: (H, W) bool or uint8 array (non-zero = foreground), on the host.

    Example:
        >>> m = np.zeros((4, 5), bool); m[1:3, 2:4] = True
        >>> find_regions(m)
        (Region(box_xywh=(2, 1, 2, 2), area_px=4),)
    """
    regions = label_regions(np.asarray(mask))
    return () if regions is None else regions.listed()


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
