"""A frame's polyp detections: the regions of its final mask, with box, area and colour.

:func:`detect` turns a host mask (and its labelling, when the caller has it)
into :class:`FrameRegions`; :meth:`FrameRegions.scaled` maps regions found on
the network's map to the frame's pixels. The tracker
(:mod:`streamseg.tracking`) and the track metrics read these values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from streamseg.regions import BoxXYWH, Regions, label_regions, scale_box, scale_mask


@dataclass(frozen=True, slots=True)
class Detection:
    """One region of a frame's mask.

    Attributes:
        box_xywh: Bounding box in pixels.
        area_px: Pixels in the region.
        label: The region's label in :attr:`FrameRegions.regions` (0: none).
        color_lab: Mean colour of its pixels in OpenCV's 8-bit CIELAB
            (L, a, b each 0-255); None when not measured.
    """

    box_xywh: BoxXYWH
    area_px: int
    label: int = 0
    color_lab: tuple[float, float, float] | None = None

    @property
    def center_xy(self) -> tuple[float, float]:
        x, y, w, h = self.box_xywh
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class FrameRegions:
    """The regions of one frame's mask, largest first.

    Attributes:
        hw: The mask's (height, width).
        detections: One :class:`Detection` per region, largest first.
        regions: The labelled regions (None for an empty mask).
        source: For regions found on a smaller map and scaled to the frame
            (:meth:`scaled`): the regions on that map.
    """

    hw: tuple[int, int]
    detections: tuple[Detection, ...]
    regions: Regions | None = field(default=None, repr=False)
    source: FrameRegions | None = field(default=None, repr=False)

    def scaled(self, hw: tuple[int, int]) -> FrameRegions:
        """These regions in the pixels of a ``hw`` frame that the mask covers.

        Boxes become the smallest boxes covering them, areas scale with the
        pixel count; order, labels and colours stay. The regions are those
        of the map: scaling a mask can split a region where it narrows to a
        pixel, scaling the regions cannot.
        """
        if tuple(hw) == self.hw:
            return self
        factor = hw[0] * hw[1] / (self.hw[0] * self.hw[1])
        detections = tuple(
            dataclasses.replace(
                d,
                box_xywh=scale_box(d.box_xywh, self.hw, hw),
                area_px=round(d.area_px * factor),
            )
            for d in self.detections
        )
        return FrameRegions((int(hw[0]), int(hw[1])), detections, None, self)

    def mask_of(self, indices: set[int] | frozenset[int]) -> np.ndarray:
        """(H, W) bool mask of the detections at ``indices`` (positions in
        :attr:`detections`)."""
        if self.source is not None:
            return scale_mask(self.source.mask_of(indices), self.hw)
        if self.regions is None or not indices:
            return np.zeros(self.hw, bool)
        keep = np.zeros(len(self.regions.stats), bool)
        for index in indices:
            keep[self.detections[index].label] = True
        return self.regions.mask_of(keep, self.hw)


def detect(
    mask: np.ndarray,
    pixels: np.ndarray | None = None,
    *,
    labelled: Regions | None = None,
) -> FrameRegions:
    """The 8-connected regions of a host mask as detections, largest first.

    Args:
        mask: (H, W) bool or uint8 array (non-zero = polyp).
        pixels: The frame, (H, W, 3) uint8 RGB: each region's mean colour
            is measured (:func:`region_colors`) for the appearance check.
            The mask may be smaller than the frame (the network's map, which
            covers the frame).
        labelled: ``label_regions(mask)`` when the caller has it already
            (:class:`~streamseg.findings.Findings`); the mask is not
            labelled again.

    Example:
        >>> m = np.zeros((8, 8), bool); m[1:3, 1:4] = True
        >>> detect(m).detections
        (Detection(box_xywh=(1, 1, 3, 2), area_px=6, label=1, color_lab=None),)
    """
    hw = (int(mask.shape[0]), int(mask.shape[1]))
    regions = labelled if labelled is not None else label_regions(np.asarray(mask))
    if regions is None:
        return FrameRegions(hw, ())
    x0, y0 = regions.origin_xy
    colors = region_colors(regions, pixels, hw) if pixels is not None else None
    found = [
        Detection(
            (int(x + x0), int(y + y0), int(w), int(h)),
            int(area),
            label,
            None if colors is None else colors[label],
        )
        for label, (x, y, w, h, area) in enumerate(regions.stats.tolist())
        if label > 0
    ]
    found.sort(key=lambda d: -d.area_px)
    return FrameRegions(hw, tuple(found), regions)


def region_colors(
    regions: Regions, pixels: np.ndarray, mask_hw: tuple[int, int] | None = None
) -> list[tuple[float, float, float] | None]:
    """Mean CIELAB colour of each region's pixels (OpenCV 8-bit Lab, 0-255).

    Measured on every ``step``-th row and column of the regions' bounding box
    (about 16k pixels at most), which is plenty for a mean.

    Args:
        regions: From :func:`streamseg.regions.label_regions`.
        pixels: (H, W, 3) uint8 RGB frame the mask belongs to.
        mask_hw: The labelled mask's (height, width) when it is not the
            frame's: each sampled mask pixel reads the frame pixel under its
            centre.

    Returns:
        One ``(L, a, b)`` per label (index 0, the background, included);
        None for a label with no sampled pixel.
    """
    import cv2

    rows, cols = regions.box
    labels = regions.labels
    step = max(1, math.ceil(math.sqrt(labels.size / 16384)))
    if mask_hw is None or tuple(mask_hw) == pixels.shape[:2]:
        crop = np.ascontiguousarray(pixels[rows, cols][::step, ::step])
    else:
        sy = pixels.shape[0] / mask_hw[0]
        sx = pixels.shape[1] / mask_hw[1]
        ys = ((np.arange(rows.start, rows.stop, step) + 0.5) * sy).astype(np.intp)
        xs = ((np.arange(cols.start, cols.stop, step) + 0.5) * sx).astype(np.intp)
        crop = np.ascontiguousarray(pixels[ys[:, None], xs[None, :]])
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    flat = labels[::step, ::step].reshape(-1).astype(np.int64)
    count = len(regions.stats)
    counts = np.bincount(flat, minlength=count)
    sums = [np.bincount(flat, weights=lab[:, c], minlength=count) for c in range(3)]
    out: list[tuple[float, float, float] | None] = []
    for label in range(count):
        n = counts[label]
        out.append(
            None if n == 0 else tuple(float(sums[c][label] / n) for c in range(3))
        )
    return out
