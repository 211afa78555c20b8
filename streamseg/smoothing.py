"""Temporal smoothing of predictions, defined in seconds rather than frames.

Three steps, each a pure function that the tests exercise directly:

1. :func:`ema_weight` / :func:`blend`: an exponential moving average of the
   probabilities whose weight comes from the time between frames,
   ``alpha = 1 - exp(-dt / time_constant_s)``. Two frames 20 ms apart move
   the average exactly as far as one frame 40 ms later would, so the filter
   behaves the same at 25, 50 or 60 fps and across dropped frames.
   With ``mode: uncertainty`` (:func:`uncertainty_weights`) each pixel gets
   its own time constant ``time_constant_s * (1 - c)`` with confidence
   ``c = |2p - 1| ** confidence_power`` of the *current* probability ``p``:
   confident pixels (p near 0 or 1) follow the current frame at once,
   uncertain ones (p near 0.5) lean on the past.
2. :func:`hysteresis`: a pixel turns on when the smoothed probability
   reaches the model's threshold (``model.threshold``, or the model file's)
   and stays on until it falls ``hysteresis_gap`` below it; the mask does not
   flicker around a single threshold.
3. :func:`remove_small_regions`: connected regions smaller than a fraction
   of the frame are removed (speckle, specular highlights).

All three run on the probability map as the segmenter made it, at the
network's input size (320x320 for the bundled model), not at the frame's:
the map covers the whole frame, so area fractions are the same, and a 1080p
frame costs no more than a 480p one.

:class:`TemporalSmoother` holds the state between frames and resets it after
a time gap, a non-increasing timestamp or a change of frame or map size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch

from streamseg.frames import Prediction
from streamseg.model import check_threshold
from streamseg.regions import Region, label_regions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmoothingSettings:
    """The ``smoothing`` section of the stream config.

    Attributes:
        enabled: ``false`` passes predictions through unchanged.
        time_constant_s: EMA time constant: after this long a sudden change
            of the probabilities has come through by 63 %. 0 means no
            averaging (hysteresis and the area filter still apply).
        mode: ``ema``: every pixel averages with ``time_constant_s``.
            ``uncertainty``: a pixel's time constant shrinks with the current
            frame's confidence, ``time_constant_s * (1 - |2p - 1| ** k)``
            (k = ``confidence_power``): confident pixels follow the current
            frame, uncertain ones lean on the past.
        confidence_power: k in the ``uncertainty`` mode; larger k keeps more
            pixels on the slow, averaged path (only p very near 0 or 1 is
            followed at once).
        hysteresis_gap: A pixel turns on at the model's threshold
            (``model.threshold``, or the model file's) and off below the
            threshold minus this gap (at least 0.01); 0: a single threshold,
            no hysteresis.
        min_area_fraction: Regions smaller than this fraction of the frame
            are removed (0 keeps every region).
        max_gap_s: A gap between frames longer than this resets the state
            (the scene may have changed completely).
    """

    # Defaults chosen by the sweep in docs/temporal.md (streamseg evaluate-video)
    # for the bundled model: they halve the excess flicker, keep macro Dice within
    # 0.005 and add at most 100 ms of detection delay on the demo clip and on
    # CVC-ClinicDB at 25 fps; of the settings that do, the one that keeps the
    # model's calibrated threshold and counts the polyps most truly. Averaging over time
    # (time_constant_s > 0) cost too much Dice and delay on CVC for every model
    # tried; hysteresis and the area filter do the steadying. Other models may
    # need other values: rerun the sweep.
    enabled: bool = True
    time_constant_s: float = 0.0
    mode: Literal["ema", "uncertainty"] = "ema"
    confidence_power: float = 2.0
    hysteresis_gap: float = 0.2
    min_area_fraction: float = 0.005
    max_gap_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.time_constant_s >= 0:
            raise ValueError(
                f"time_constant_s: expected >= 0, got {self.time_constant_s}"
            )
        if self.mode not in ("ema", "uncertainty"):
            raise ValueError(
                f"mode: expected 'ema' or 'uncertainty', got {self.mode!r}"
            )
        if not self.confidence_power > 0:
            raise ValueError(
                f"confidence_power: expected > 0, got {self.confidence_power}"
            )
        if not 0 <= self.hysteresis_gap < 1:
            raise ValueError(
                f"hysteresis_gap: expected a value in [0, 1), got {self.hysteresis_gap}"
            )
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s: expected > 0, got {self.max_gap_s}")
        if not 0 <= self.min_area_fraction < 1:
            raise ValueError(
                "min_area_fraction: expected a value in [0, 1), "
                f"got {self.min_area_fraction}"
            )

    def thresholds(self, model_threshold: float) -> tuple[float, float]:
        """(on, off): the model's threshold and ``hysteresis_gap`` below it.

        Example:
            >>> SmoothingSettings(hysteresis_gap=0.1).thresholds(0.5)
            (0.5, 0.4)
        """
        check_threshold(model_threshold, "model threshold")
        on = model_threshold
        return on, max(round(on - self.hysteresis_gap, 9), min(on, 0.01))


def ema_weight(dt_s: float, time_constant_s: float) -> float:
    """Weight of the newest sample after ``dt_s`` seconds: ``1 - exp(-dt / tau)``.

    Example:
        >>> round(ema_weight(0.1, 0.1), 4)
        0.6321
    """
    if time_constant_s <= 0:
        return 1.0
    return -math.expm1(-dt_s / time_constant_s)


def confidence(probabilities: torch.Tensor, power: float) -> torch.Tensor:
    """Per-pixel confidence ``|2p - 1| ** power``: 1 at p = 0 or 1, 0 at p = 0.5.

    Example:
        >>> confidence(torch.tensor([0.0, 0.25, 0.5, 1.0]), 2.0).tolist()
        [1.0, 0.25, 0.0, 1.0]
    """
    return (2 * probabilities - 1).abs().pow(power)


def uncertainty_weights(
    dt_s: float, time_constant_s: float, probabilities: torch.Tensor, power: float
) -> torch.Tensor:
    """Per-pixel EMA weights of the newest frame for the ``uncertainty`` mode.

    Each pixel is an EMA with its own time constant, set by how confident the
    current frame is there::

        c     = |2p - 1| ** power                 (p: current probability)
        tau   = time_constant_s * (1 - c)
        alpha = 1 - exp(-dt_s / tau)              (tau = 0: alpha = 1)

    A confident pixel (c = 1) takes the current value; an uncertain one
    (c = 0) moves as the plain EMA does. Because the weight comes from a time
    constant (not ``alpha_base + (1 - alpha_base) * c`` per frame), a pixel
    with steady confidence moves the same way at 25 and at 50 fps.

    Args:
        dt_s: Seconds since the previous frame (> 0).
        time_constant_s: Time constant of a completely uncertain pixel.
        probabilities: (H, W) float, the current frame's probabilities.
        power: Confidence exponent k (> 0).

    Returns:
        (H, W) float32 weights in [0, 1], on the probabilities' device.
    """
    if time_constant_s <= 0:
        return torch.ones_like(probabilities, dtype=torch.float32)
    tau_s = time_constant_s * (1 - confidence(probabilities.float(), power))
    # tau = 0 gives dt / tiny = huge and exp(-huge) = 0: weight exactly 1, no NaN.
    return -torch.expm1(-dt_s / tau_s.clamp_min(1e-12))


def blend(
    previous: torch.Tensor, current: torch.Tensor, weight: float | torch.Tensor
) -> torch.Tensor:
    """``previous + weight * (current - previous)``, as a new tensor.

    ``weight`` is one number or an (H, W) tensor of per-pixel weights.
    """
    return torch.lerp(previous, current, weight)


def hysteresis(
    probabilities: torch.Tensor,
    previous_mask: torch.Tensor | None,
    on: float,
    off: float,
) -> torch.Tensor:
    """Two-threshold mask: on at ``>= on``; an on pixel stays on while ``>= off``.

    Args:
        probabilities: (H, W) float.
        previous_mask: (H, W) bool, the previous result; ``None`` after a reset.
        on: Turn-on threshold.
        off: Turn-off threshold (<= on).

    Returns:
        (H, W) bool tensor on the probabilities' device.
    """
    if probabilities.device.type == "cpu" and probabilities.dtype in (
        torch.float32,
        torch.float64,
    ):
        # NumPy's comparisons are ~3x faster than torch's here; the scalar is
        # compared in the array's dtype, as torch does.
        values = probabilities.numpy()
        held = values >= on
        if previous_mask is not None:
            held |= previous_mask.numpy() & (values >= off)
        return torch.from_numpy(held)
    mask = probabilities >= on
    if previous_mask is not None:
        mask |= previous_mask & (probabilities >= off)
    return mask


def remove_small_regions(mask: torch.Tensor, min_area_px: int) -> torch.Tensor:
    """Remove 8-connected regions smaller than ``min_area_px`` pixels.

    Labelling runs on the CPU (:func:`streamseg.regions.label_regions`: only
    the bounding box of the mask's pixels, exact).

    Args:
        mask: (H, W) bool tensor, any device.
        min_area_px: Smallest region kept.

    Returns:
        (H, W) bool tensor on the mask's device (the input itself if nothing
        was removed).
    """
    return area_filter(mask, min_area_px)[0]


def area_filter(
    mask: torch.Tensor, min_area_px: int
) -> tuple[torch.Tensor, tuple[Region, ...] | None]:
    """:func:`remove_small_regions`, and the regions that survive, largest first.

    The regions come from the one labelling the filter needs anyway, so the
    findings of the frame need not label the mask again; ``None`` when the
    filter is off (``min_area_px <= 1``) and nothing was labelled.
    """
    if min_area_px <= 1:
        return mask, None
    host = mask.to("cpu", torch.bool).contiguous().numpy()
    regions = label_regions(host)
    if regions is None:
        return mask, ()
    keep = regions.areas_px >= min_area_px
    keep[0] = False  # label 0 is the background
    if keep[1:].all():
        return mask, regions.listed()
    kept = torch.from_numpy(regions.mask_of(keep, host.shape)).to(mask.device)
    return kept, regions.listed(keep)


@dataclass(frozen=True, slots=True)
class _State:
    timestamp_s: float
    hw: tuple[tuple[int, int], tuple[int, int]]  # the frame's and the map's
    probabilities: torch.Tensor
    mask: torch.Tensor  # hysteresis result before the area filter


class TemporalSmoother:
    """Smooths a stream of predictions over time (one instance per stream).

    State: the previous frame's timestamp, smoothed probabilities and
    hysteresis mask. It resets when the time since the previous frame is
    ``<= 0`` or ``> max_gap_s``, or when the frame or map size changes.

    Args:
        settings: Time constant, hysteresis gap, area filter, time gap.
        model_threshold: The threshold the model runs at (``model.threshold``,
            or the model file's): a pixel turns on there.

    Example:
        >>> smoother = TemporalSmoother(SmoothingSettings(), model_threshold=0.5)
        >>> # prediction = smoother(segmenter(frame))
    """

    def __init__(self, settings: SmoothingSettings, *, model_threshold: float) -> None:
        self.settings = settings
        self.on_threshold, self.off_threshold = settings.thresholds(model_threshold)
        self.resets = 0
        self._state: _State | None = None

    def reset(self) -> None:
        """Forget the past; the next prediction starts afresh."""
        self._state = None

    @torch.inference_mode()
    def __call__(self, prediction: Prediction) -> Prediction:
        """Return a prediction with smoothed probabilities and a final mask.

        Returns:
            A new :class:`Prediction` for the same frame: smoothed
            ``probabilities``, ``threshold`` = the on threshold, and
            ``mask_override`` = hysteresis + area filter. With
            ``enabled: false``, the input prediction itself.
        """
        if not self.settings.enabled:
            return prediction
        frame = prediction.frame
        current = prediction.probabilities.float()
        state = self._state
        dt_s = None if state is None else frame.timestamp_s - state.timestamp_s
        if (
            state is None
            or dt_s is None
            or state.hw != (frame.hw, prediction.hw)
            or not 0 < dt_s <= self.settings.max_gap_s
        ):
            if state is not None:
                self.resets += 1
                log.debug(
                    "smoothing reset at frame %d (dt %s s, frame %s, map %s)",
                    frame.index,
                    dt_s,
                    frame.hw,
                    prediction.hw,
                )
            smoothed = current
            held = hysteresis(smoothed, None, self.on_threshold, self.off_threshold)
        else:
            weight = self._weight(dt_s, current)
            # No averaging (time_constant_s 0, the default): skip a full-frame op.
            no_memory = isinstance(weight, float) and weight >= 1.0
            smoothed = (
                current if no_memory else blend(state.probabilities, current, weight)
            )
            held = hysteresis(
                smoothed, state.mask, self.on_threshold, self.off_threshold
            )
        self._state = _State(
            frame.timestamp_s, (frame.hw, prediction.hw), smoothed, held
        )
        height, width = prediction.hw
        min_area_px = math.ceil(self.settings.min_area_fraction * height * width)
        mask, regions = area_filter(held, min_area_px)
        return Prediction(
            frame, smoothed, self.on_threshold, mask_override=mask, regions=regions
        )

    def _weight(self, dt_s: float, current: torch.Tensor) -> float | torch.Tensor:
        settings = self.settings
        if settings.mode == "uncertainty":
            return uncertainty_weights(
                dt_s, settings.time_constant_s, current, settings.confidence_power
            )
        return ema_weight(dt_s, settings.time_constant_s)
