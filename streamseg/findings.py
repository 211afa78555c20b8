"""What one frame shows after smoothing: one host-side value, computed once.

:meth:`Findings.of` copies the final mask to the host once and takes its
regions on the network's map, where the smoother's area filter labelled them
(it labels the map itself only when no filter ran). The regions' boxes are
scaled to the frame's pixels (:func:`~streamseg.regions.scale_box`) and the
mask is scaled to the frame for drawing (:func:`~streamseg.regions.scale_mask`).
Regions are counted on the map, where the area filter decided them: scaling a
mask can split a region where it narrows to one pixel, scaling the regions
cannot. The overlay, the alerts, the event log, the mask writer, event clips
and the browser view all read this one value instead of each copying and
labelling the mask again.
With tracking on, :meth:`Findings.tracked` adds the polyp tracks of the frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamseg.frames import Frame, Prediction
from streamseg.regions import (
    BoxXYWH,
    Region,
    Regions,
    label_regions,
    scale_box,
    scale_mask,
)

if TYPE_CHECKING:
    from streamseg.tracking import Tracker, TrackFrame


@dataclass(frozen=True, slots=True)
class Findings:
    """The findings on one frame.

    Attributes:
        prediction: The final (smoothed) prediction; its tensors stay on the
            inference device, at the network's input size.
        mask: (H, W) bool host array, the final mask at the frame's size
            (read only).
        regions: Connected regions of the final mask, largest first, in
            frame pixels (found on the network's map, boxes scaled).
        area_fraction: Mask pixels / frame pixels, in [0, 1].
        max_probability: Highest (smoothed, if smoothing is on) probability
            in the frame, in [0, 1].
        present: True if any pixel is in the mask.
        tracks: What the polyp tracker shows on this frame (ids, boxes,
            times on screen, count, edge arrows; :meth:`tracked`); ``None``
            where no tracker runs.
        shown_on: A later frame of the same size these findings are drawn
            on (:meth:`held_on`: live sources with ``every_frame`` display);
            ``None``: the frame they were computed from.
    """

    prediction: Prediction
    mask: np.ndarray
    regions: tuple[Region, ...]
    area_fraction: float
    max_probability: float
    present: bool
    tracks: TrackFrame | None = None
    labelled: Regions | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    # The final mask on the network's map when it is not the frame's size
    # (``labelled``, when set, labels it); None when the map is the frame.
    map_mask: np.ndarray | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    shown_on: Frame | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mask.shape != self.prediction.frame.hw or self.mask.dtype != bool:
            raise ValueError(
                f"mask: expected a {self.prediction.frame.hw} bool array, got "
                f"{self.mask.shape} {self.mask.dtype}"
            )
        if self.tracks is not None and self.tracks.hw != self.mask.shape:
            raise ValueError(
                f"tracks: expected tracks of a {self.mask.shape} frame, got "
                f"{self.tracks.hw}"
            )

    @property
    def frame(self) -> Frame:
        """The frame these findings are drawn on (see :attr:`segmented_frame`)."""
        return self.prediction.frame if self.shown_on is None else self.shown_on

    @property
    def segmented_frame(self) -> Frame:
        """The frame these findings were computed from: :attr:`frame`, unless held."""
        return self.prediction.frame

    @property
    def held(self) -> bool:
        """Whether these findings are drawn on a later frame than their own."""
        return self.shown_on is not None

    def held_on(self, frame: Frame) -> Findings:
        """These findings, as computed, to be drawn on ``frame``, a later frame.

        Live sources with ``source.live_display: every_frame`` draw each
        frame with the newest finished outline; the mask, regions and tracks
        stay those of :attr:`segmented_frame` (nothing is recomputed).

        Raises:
            ValueError: ``frame`` is not of the segmented frame's size.
        """
        if frame.hw != self.prediction.frame.hw:
            raise ValueError(
                f"frame: expected {self.prediction.frame.hw}, got {frame.hw}"
            )
        if frame is self.prediction.frame:
            return dataclasses.replace(self, shown_on=None)
        return dataclasses.replace(self, shown_on=frame)

    @property
    def track_ids(self) -> tuple[int, ...]:
        """Ids of the polyp tracks shown on this frame, ascending (a marker held
        after its polyp's last detection included); ``()`` without a tracker."""
        return () if self.tracks is None else self.tracks.track_ids

    @property
    def shown(self) -> bool:
        """Whether a polyp is shown to the user on this frame: a shown track
        where a tracker runs (steady: minimum on and off times), else any mask
        pixel. The HUD's POLYP marker and the alerts follow this."""
        return self.present if self.tracks is None else self.tracks.present

    def tracked(self, tracker: Tracker) -> Findings:
        """These findings with the tracks ``tracker`` shows on this frame.

        The tracker reads the host mask and the frame's pixels (each region's
        mean colour); the mask is unchanged.
        """
        from streamseg.detections import detect

        own = self.segmented_frame
        if self.map_mask is None:
            regions = detect(self.mask, own.pixels, labelled=self.labelled)
        else:
            on_map = detect(self.map_mask, own.pixels, labelled=self.labelled)
            regions = on_map.scaled(own.hw)
        frame = tracker(own.timestamp_s, regions)
        return dataclasses.replace(self, tracks=frame)

    @property
    def boxes_xywh(self) -> tuple[BoxXYWH, ...]:
        """``(x, y, width, height)`` per region, in source pixels, largest first."""
        return tuple(region.box_xywh for region in self.regions)

    @classmethod
    @torch.inference_mode()
    def of(cls, prediction: Prediction) -> Findings:
        """Summarize a prediction (one host copy of the mask, scaled to the frame).

        Reductions over host tensors go through NumPy: torch's thread pool
        costs more than the work on frame-sized arrays (1.5 ms for one
        ``max`` of a 640x480 map on 2 busy cores, against well under 1 ms in
        NumPy).

        Example:
            >>> frame = Frame(0, 0.0, np.zeros((4, 5, 3), np.uint8))
            >>> probabilities = torch.zeros(4, 5); probabilities[1:3, 2:4] = 0.9
            >>> findings = Findings.of(Prediction(frame, probabilities, 0.5))
            >>> findings.present, findings.area_fraction, findings.boxes_xywh
            (True, 0.2, ((2, 1, 2, 2),))
        """
        mask = prediction.mask.to("cpu", torch.bool).contiguous().numpy()
        height, width = prediction.frame.hw
        probabilities = prediction.probabilities
        if probabilities.device.type == "cpu" and probabilities.dtype == torch.float32:
            max_probability = float(probabilities.numpy().max())
        else:
            max_probability = float(probabilities.max())
        area_px = int(np.count_nonzero(mask))
        # Regions on the map: the smoother's area filter labelled it already,
        # else label it here (and keep the labels for the tracker).
        labelled = None
        if not area_px:
            on_map: tuple[Region, ...] = ()
        elif prediction.regions is not None:
            on_map = prediction.regions
        else:
            labelled = label_regions(mask)
            on_map = () if labelled is None else labelled.listed()
        map_hw = prediction.hw
        regions, map_mask = on_map, None
        if map_hw != (height, width):
            factor = height * width / (map_hw[0] * map_hw[1])
            regions = tuple(
                Region(
                    scale_box(region.box_xywh, map_hw, (height, width)),
                    round(region.area_px * factor),
                )
                for region in on_map
            )
            map_mask, mask = mask, scale_mask(mask, (height, width))
        return cls(
            prediction=prediction,
            mask=mask,
            regions=regions,
            area_fraction=area_px / (map_hw[0] * map_hw[1]),
            max_probability=max_probability,
            present=area_px > 0,
            labelled=labelled,
            map_mask=map_mask,
        )
