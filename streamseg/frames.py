"""Values passed between pipeline stages: a decoded frame and a prediction on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from streamseg.regions import Region


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    Attributes:
        index: Position in the source, counting from 0. Frames dropped later
            still consume an index, so a gap between consecutive frames means
            frames were skipped.
        timestamp_s: Presentation time (files) or capture time from
            ``time.monotonic()`` (live sources). Only differences are meaningful.
        pixels: RGB image, shape (height, width, 3), dtype uint8.

    Example:
        >>> Frame(0, 0.0, np.zeros((4, 6, 3), np.uint8)).hw
        (4, 6)
    """

    index: int
    timestamp_s: float
    pixels: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.pixels, np.ndarray):
            raise TypeError(
                f"pixels: expected numpy.ndarray, got {type(self.pixels).__name__}"
            )
        if (
            self.pixels.dtype != np.uint8
            or self.pixels.ndim != 3
            or self.pixels.shape[2] != 3
        ):
            raise ValueError(
                "pixels: expected an (H, W, 3) uint8 RGB array, "
                f"got shape {self.pixels.shape} dtype {self.pixels.dtype}"
            )
        if self.index < 0:
            raise ValueError(f"index: expected >= 0, got {self.index}")

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


@dataclass(frozen=True, slots=True)
class Prediction:
    """Foreground probabilities computed from exactly one frame.

    The frame travels with its probabilities, so an overlay can never be drawn
    on a frame it was not computed from.

    Attributes:
        frame: The frame the probabilities were computed from.
        probabilities: (h, w) float32 in [0, 1] covering the whole frame, on
            the inference device: at the network's input size from the
            segmenter (the frame scaled to it, aspect ratio not kept), or at
            the frame's own size. :attr:`hw` is this size.
        threshold: Probability at or above which a pixel is polyp.
        mask_override: Optional (h, w) bool tensor that replaces the plain
            threshold (set by temporal smoothing, which applies hysteresis and
            a minimum area).
        regions: The connected regions of :attr:`mask` (in its pixels),
            largest first, when whoever made the mask has labelled them
            already (the smoother's area filter); ``None``: not labelled yet.
    """

    frame: Frame
    probabilities: torch.Tensor
    threshold: float
    mask_override: torch.Tensor | None = None
    regions: tuple[Region, ...] | None = None

    def __post_init__(self) -> None:
        if self.probabilities.ndim != 2 or min(self.probabilities.shape) < 1:
            raise ValueError(
                "probabilities: expected an (h, w) map, got shape "
                f"{tuple(self.probabilities.shape)}"
            )
        if self.mask_override is not None and (
            self.mask_override.shape != self.probabilities.shape
        ):
            raise ValueError(
                f"mask_override: expected shape {tuple(self.probabilities.shape)} "
                f"(the probabilities'), got {tuple(self.mask_override.shape)}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(
                f"threshold: expected a value in [0, 1], got {self.threshold}"
            )

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) of the probability map (and of :attr:`mask`)."""
        return int(self.probabilities.shape[0]), int(self.probabilities.shape[1])

    @property
    def mask(self) -> torch.Tensor:
        """(h, w) bool tensor at :attr:`hw`, True where polyp."""
        if self.mask_override is not None:
            return self.mask_override
        return self.probabilities >= self.threshold
