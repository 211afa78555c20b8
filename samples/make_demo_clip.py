"""Make the demo clip: real Kvasir-SEG test images seen through a simulated endoscope.

Each segment shows one still image from the Kvasir-SEG *test* split through a
virtual camera that pans, zooms and rotates along smooth seeded trajectories,
with motion blur from the camera's own speed, a drifting light (gain, vignette,
tint) and a fast "scope movement" whip between segments. Because the motion is
synthetic, every frame has exact ground truth: the polyp mask goes through the
same affine warp as the image (nearest-neighbour instead of bilinear).

Outputs (``NAME`` defaults to ``demo``)::

    NAME.mp4         H.264 (libx264, yuv420p), constant frame rate
    NAME_masks.npz   "masks": (N, H, W/8) uint8, np.packbits of the bool masks
                     along the width; read with load_masks()
    NAME_frames.csv  index, timestamp_s, source_image, polyp_area_fraction,
                     segment, in_transition, blur_px

Run from the repository root::

    .venv/bin/python samples/make_demo_clip.py \
        --data ../shared/data/kvasir-seg --out samples/

Only numpy, OpenCV and PyAV are used, so the script runs with the runtime
dependencies. The output is a pure function of the images, the arguments and
``--seed`` (masks and CSV bit for bit; the MP4 bit for bit with the same
PyAV/x264 build, since the encoder runs single-threaded).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

logger = logging.getLogger("make_demo_clip")

#: Kvasir-SEG test-split stems shown by default, one segment each (chosen by eye
#: for variety: a small sessile polyp on flat mucosa, a large polyp with a
#: visible pit pattern, a polyp in a fold beside the lumen, a large lobulated
#: polyp with an instrument in view).
DEFAULT_STEMS = (
    "cjyzul1qggwwj07216mhiv5sy",
    "cjyzurzvohqnr0794es1itzek",
    "cju33231uy4gi0993qc7b1jch",
    "cjyzl833ndne80838pzuq6ila",
)
DEFAULT_SEED = 2020
DEFAULT_FPS = 25
DEFAULT_SIZE_WH = (640, 480)
DEFAULT_SECONDS_PER_SEGMENT = 3.0
DEFAULT_CRF = 20

#: Kvasir-SEG frames carry burned-in patient/time text and the scope-guide box
#: in their left part. The virtual camera never looks left of this fraction of
#: the width, so no overlay slides around with the tissue.
OVERLAY_BAND_FRACTION = 0.31
#: ...unless the black margin left of the octagon is at least this wide at every
#: row of the middle half: then the text is on the margin, not on the tissue.
TEXT_MARGIN_FRACTION = 0.18
#: Shutter open time as a fraction of the frame interval (sets blur length).
EXPOSURE_FRACTION = 0.5
#: Sub-frames per output-pixel of motion when integrating blur, and the cap.
SUBFRAMES_PER_PX = 1 / 1.5
MAX_SUBFRAMES = 32
#: The warp never samples the source at scales below this (output px per
#: source px); larger sources are downscaled once with INTER_AREA instead.
MIN_WARP_SCALE = 0.8


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class CameraPose:
    """Where the virtual camera looks in a source image.

    Attributes:
        center_xy: Source pixel (x, y) that appears at the aperture centre.
        angle_deg: Rotation of the view, counter-clockwise on screen.
        scale: Output pixels per source pixel (zoom).
    """

    center_xy: tuple[float, float]
    angle_deg: float
    scale: float


def pose_matrix(pose: CameraPose, output_wh: tuple[int, int]) -> np.ndarray:
    """Affine map from source pixel coordinates to output pixel coordinates.

    ``out = scale * R(angle) @ (src - center) + output_centre``, with pixel
    centres at integer coordinates (OpenCV's convention), so ``cv2.warpAffine``
    can use it directly for both the image and its mask.

    Args:
        pose: The camera pose.
        output_wh: Output (width, height) in pixels.

    Returns:
        (2, 3) float64 matrix.

    Example:
        >>> m = pose_matrix(CameraPose((10.0, 20.0), 0.0, 2.0), (64, 48))
        >>> (m @ [10.0, 20.0, 1.0]).tolist()
        [31.5, 23.5]
    """
    theta = math.radians(pose.angle_deg)
    # y points down on screen, so a counter-clockwise rotation uses -theta here.
    cos, sin = math.cos(theta) * pose.scale, math.sin(theta) * pose.scale
    linear = np.array([[cos, sin], [-sin, cos]])
    out_center = np.array([(output_wh[0] - 1) / 2.0, (output_wh[1] - 1) / 2.0])
    offset = out_center - linear @ np.asarray(pose.center_xy, dtype=np.float64)
    return np.hstack([linear, offset[:, None]])


def warp_image(
    image: np.ndarray, matrix: np.ndarray, output_wh: tuple[int, int]
) -> np.ndarray:
    """Warp an image (bilinear) with a source->output affine matrix.

    Args:
        image: (H, W, C) or (H, W) array (uint8 or float32).
        matrix: (2, 3) source->output affine, e.g. from :func:`pose_matrix`.
        output_wh: Output (width, height).

    Returns:
        Array of shape (output_h, output_w[, C]) and the input's dtype; pixels
        that map outside the source are 0.
    """
    return cv2.warpAffine(
        image, matrix, output_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def warp_mask(
    mask: np.ndarray, matrix: np.ndarray, output_wh: tuple[int, int]
) -> np.ndarray:
    """Warp a binary mask with the same affine as the image (nearest neighbour).

    Args:
        mask: (H, W) bool mask in source coordinates.
        matrix: (2, 3) source->output affine (the one used for the image).
        output_wh: Output (width, height).

    Returns:
        (output_h, output_w) bool mask; False outside the source.
    """
    warped = cv2.warpAffine(
        mask.astype(np.uint8),
        matrix,
        output_wh,
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return warped.astype(bool)


def aperture_mask(output_wh: tuple[int, int]) -> np.ndarray:
    """The scope's visible area: a centred octagon, black around it as on a monitor.

    Its proportions follow the Olympus-style octagon seen in Kvasir-SEG frames
    (slightly wider than tall, corners cut at ~29% of each side).

    Returns:
        (H, W) bool mask, True inside the octagon.
    """
    width, height = output_wh
    half_w, half_h = 0.5 * 1.05 * height * 0.95, 0.5 * height * 0.95
    half_w = min(half_w, 0.5 * width * 0.98)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cut_x, cut_y = 0.58 * half_w, 0.58 * half_h
    corners = [
        (-half_w + cut_x, -half_h),
        (half_w - cut_x, -half_h),
        (half_w, -half_h + cut_y),
        (half_w, half_h - cut_y),
        (half_w - cut_x, half_h),
        (-half_w + cut_x, half_h),
        (-half_w, half_h - cut_y),
        (-half_w, -half_h + cut_y),
    ]
    polygon = np.array([[cx + dx, cy + dy] for dx, dy in corners], dtype=np.float64)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(
        mask, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4
    )
    return mask.astype(bool)


def valid_region(image: np.ndarray) -> np.ndarray:
    """Source pixels the virtual camera may show: tissue, not frame furniture.

    Excludes the black border around the scope's octagon and the teal
    scope-guide box (pixels of either kind connected to the image edge) and the
    left overlay band (burned-in text, scope guide)
    unless the octagon starts right of a wide black margin that holds the text.
    The dark lumen inside the image stays valid: it is not connected to the edge.

    Args:
        image: (H, W, 3) uint8 RGB source image.

    Returns:
        (H, W) bool mask, one connected region.
    """
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    red, green, blue = (image[..., c].astype(np.int16) for c in range(3))
    # Frame furniture: black margins and the teal scope-guide box (tissue is
    # never far more blue-green than red).
    furniture = (gray < 25) | ((green > red + 30) & (blue > red + 30))
    _, labels = cv2.connectedComponents(furniture.astype(np.uint8))
    edge_labels = np.unique(
        np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    )
    border = np.isin(labels, edge_labels[edge_labels > 0])
    border = cv2.morphologyEx(
        border.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)
    )
    tissue = _largest_component((1 - border).astype(np.uint8))
    # Where the octagon starts well right of the edge (wide-screen processors),
    # the text sits on the black margin and the tissue beside it is clean.
    middle_rows = tissue[height // 4 : 3 * height // 4]
    left_margin = int(np.argmax(middle_rows, axis=1).min())
    if left_margin >= TEXT_MARGIN_FRACTION * width:
        return tissue
    tissue[:, : math.ceil(OVERLAY_BAND_FRACTION * width)] = False
    return _largest_component(tissue.astype(np.uint8))


def _largest_component(binary: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary)
    if count < 2:
        raise ValueError(
            "expected tissue in the image, found only black border; "
            "pass an endoscopy image (e.g. from Kvasir-SEG images/)"
        )
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def view_fits(
    valid_small: np.ndarray,
    aperture_small: np.ndarray,
    matrix: np.ndarray,
    factor: float,
) -> bool:
    """Whether every aperture pixel shows valid source pixels (checked at low res).

    Args:
        valid_small: Source valid region, already eroded by a safety margin.
        aperture_small: Aperture at ``factor`` times the output size, dilated.
        matrix: Full-resolution source->output affine.
        factor: Output downscale factor used for the check (e.g. 0.25).
    """
    small = matrix * factor
    small[:, 2] += 0.5 * factor - 0.5  # keep pixel centres consistent
    height, width = aperture_small.shape
    covered = cv2.warpAffine(
        valid_small, small, (width, height), flags=cv2.INTER_NEAREST, borderValue=0
    )
    return not np.any(aperture_small & (covered == 0))


# ------------------------------------------------------------------------ trajectories


@dataclass(frozen=True, slots=True)
class SmoothNoise:
    """A smooth random signal in [-1, 1]: a normalised sum of slow sinusoids.

    Attributes:
        frequencies_hz: (K,) frequencies.
        phases: (K,) phases in radians.
        weights: (K,) non-negative weights summing to 1.
    """

    frequencies_hz: tuple[float, ...]
    phases: tuple[float, ...]
    weights: tuple[float, ...]

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        low_hz: float = 0.08,
        high_hz: float = 0.5,
        count: int = 3,
    ) -> SmoothNoise:
        weights = rng.uniform(0.3, 1.0, count)
        return cls(
            tuple(rng.uniform(low_hz, high_hz, count).tolist()),
            tuple(rng.uniform(0, 2 * math.pi, count).tolist()),
            tuple((weights / weights.sum()).tolist()),
        )

    def __call__(self, time_s: float) -> float:
        return float(
            sum(
                w * math.sin(2 * math.pi * f * time_s + p)
                for f, p, w in zip(
                    self.frequencies_hz, self.phases, self.weights, strict=True
                )
            )
        )


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True, slots=True)
class Lighting:
    """Light falling on one frame.

    Attributes:
        gain: Overall brightness factor.
        vignette: Fall-off strength; brightness is ``1 - vignette * r**2`` at
            normalised radius r from the light centre.
        center_shift: (dx, dy) of the light centre in aperture half-sizes.
        tint_rgb: Per-channel gain factors.
    """

    gain: float
    vignette: float
    center_shift: tuple[float, float]
    tint_rgb: tuple[float, float, float]


@dataclass(frozen=True)
class SegmentPlan:
    """The seeded, continuous-time camera and light trajectories of one segment.

    ``pose(t)`` before the zoom floor is applied; :class:`Segment` adds it.
    Times are seconds from the segment start.
    """

    duration_s: float
    transition_s: float
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    wobble_px: float
    angle0_deg: float
    angle_drift_deg: float
    base_scale: float
    zoom_drift: float
    whip_in_dir: tuple[float, float]
    whip_out_dir: tuple[float, float]
    whip_px: float
    whip_in_deg: float
    whip_out_deg: float
    whip_in_light: float
    whip_out_light: float
    gain0: float
    noise: dict[str, SmoothNoise]

    def whips(self, time_s: float) -> tuple[float, float]:
        """(arrival, departure) whip strengths in [0, 1]: 1 at the cut, 0 elsewhere."""
        arrival = max(0.0, 1.0 - time_s / self.transition_s) ** 2
        departure = max(0.0, 1.0 - (self.duration_s - time_s) / self.transition_s) ** 2
        return arrival, departure

    def raw_pose(self, time_s: float) -> CameraPose:
        n = self.noise
        progress = _smoothstep(time_s / (0.6 * self.duration_s))
        arrival, departure = self.whips(time_s)
        x = self.start_xy[0] + (self.end_xy[0] - self.start_xy[0]) * progress
        y = self.start_xy[1] + (self.end_xy[1] - self.start_xy[1]) * progress
        x += self.wobble_px * n["x"](time_s)
        y += self.wobble_px * n["y"](time_s)
        x += self.whip_px * (
            arrival * self.whip_in_dir[0] + departure * self.whip_out_dir[0]
        )
        y += self.whip_px * (
            arrival * self.whip_in_dir[1] + departure * self.whip_out_dir[1]
        )
        angle = self.angle0_deg + 10.0 * n["angle"](time_s)
        angle += self.angle_drift_deg * time_s / self.duration_s
        angle += arrival * self.whip_in_deg + departure * self.whip_out_deg
        zoom = math.exp(0.12 * n["zoom"](time_s) + self.zoom_drift * progress)
        zoom *= 1.0 + 0.6 * (arrival + departure)
        return CameraPose((x, y), angle, self.base_scale * zoom)

    def lighting(self, time_s: float) -> Lighting:
        n = self.noise
        arrival, departure = self.whips(time_s)
        gain = self.gain0 * math.exp(
            0.15 * n["gain"](time_s)
            + arrival * self.whip_in_light
            + departure * self.whip_out_light
        )
        vignette = 0.32 + 0.14 * n["vignette"](time_s)
        shift = (0.15 * n["light_x"](time_s), 0.15 * n["light_y"](time_s))
        tint = tuple(1.0 + 0.04 * n[f"tint{c}"](time_s) for c in range(3))
        return Lighting(gain, vignette, shift, tint)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class SourceImage:
    """One Kvasir-SEG image prepared for the virtual camera.

    Attributes:
        stem: File stem in Kvasir-SEG.
        pixels: (H, W, 3) uint8 RGB, possibly downscaled from the original.
        mask: (H, W) bool polyp mask (JPEG mask thresholded at > 127).
        valid: (H, W) bool pixels the camera may show (:func:`valid_region`).
        downscale: Factor applied to the original image (1.0 = untouched).
    """

    stem: str
    pixels: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    downscale: float


def load_source(data_dir: Path, stem: str, aperture_hw: tuple[int, int]) -> SourceImage:
    """Read a Kvasir-SEG image and mask; downscale large images once (INTER_AREA).

    The downscale keeps the warp from aliasing: the camera then samples the
    source at >= ``MIN_WARP_SCALE`` output pixels per source pixel.
    """
    image_path = data_dir / "images" / f"{stem}.jpg"
    mask_path = data_dir / "masks" / f"{stem}.jpg"
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    gray_mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if bgr is None or gray_mask is None:
        raise FileNotFoundError(
            f"expected {image_path} and {mask_path}; pass --data pointing at a "
            "Kvasir-SEG folder with images/ and masks/"
        )
    if gray_mask.shape != bgr.shape[:2]:
        raise ValueError(
            f"{stem}: expected the mask to match the image's shape {bgr.shape[:2]}, "
            f"got {gray_mask.shape}"
        )
    pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    valid = valid_region(pixels)
    ys, xs = np.nonzero(valid)
    needed = max(
        aperture_hw[1] / (xs.max() - xs.min() + 1),
        aperture_hw[0] / (ys.max() - ys.min() + 1),
    )
    downscale = min(1.0, needed / MIN_WARP_SCALE)
    mask = gray_mask > 127
    if downscale < 1.0:
        size = (round(pixels.shape[1] * downscale), round(pixels.shape[0] * downscale))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        # Area-weighted coverage >= 0.5 is the downscaled ground truth; the
        # valid region shrinks conservatively (any invalid pixel invalidates).
        mask = (
            cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            >= 0.5
        )
        valid = (
            cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            > 0.999
        )
    return SourceImage(stem, pixels, mask, valid, downscale)


class Segment:
    """A source image plus its camera/light plan, with a zoom floor that keeps
    the aperture filled with tissue at every instant."""

    CHECK_FACTOR = 0.25  # resolution of the fit check relative to the output
    MARGIN_OUT_PX = 3.0  # safety margin between aperture edge and invalid pixels

    def __init__(
        self,
        source: SourceImage,
        index: int,
        seed: int,
        duration_s: float,
        fps: int,
        output_wh: tuple[int, int],
        aperture: np.ndarray,
    ) -> None:
        self.source = source
        self.index = index
        self.output_wh = output_wh
        self.duration_s = duration_s
        self._prepare_fit_check(aperture)
        self.plan = self._plan(np.random.default_rng([seed, index]))
        self._floor_times, self._floor = self._zoom_floor(fps)

    # -- fit check -------------------------------------------------------------

    def _prepare_fit_check(self, aperture: np.ndarray) -> None:
        width, height = self.output_wh
        small_wh = (
            max(8, round(width * self.CHECK_FACTOR)),
            max(8, round(height * self.CHECK_FACTOR)),
        )
        self._factor = small_wh[0] / width
        small = cv2.resize(
            aperture.astype(np.uint8), small_wh, interpolation=cv2.INTER_AREA
        )
        self._aperture_small = (
            cv2.dilate((small > 0).astype(np.uint8), np.ones((3, 3))) > 0
        )
        self._distance = cv2.distanceTransform(
            self.source.valid.astype(np.uint8), cv2.DIST_L2, 5
        )
        # Rough zoom at which the aperture spans the valid region's bounding box;
        # the camera never zooms out much below it, so margins are sized for it.
        ys, xs = np.nonzero(aperture)
        valid_ys, valid_xs = np.nonzero(self.source.valid)
        self._reference_scale = max(
            (xs.max() - xs.min() + 1) / (valid_xs.max() - valid_xs.min() + 1),
            (ys.max() - ys.min() + 1) / (valid_ys.max() - valid_ys.min() + 1),
        )
        # The check samples the source every 1/(factor*scale) px: erode by that
        # much plus the safety margin, so nothing invalid hides between samples.
        margin_px = math.ceil(
            (self.MARGIN_OUT_PX + 1.0 / self._factor) / self._reference_scale
        )
        self._valid_eroded = (self._distance > margin_px).astype(np.uint8)

    def minimal_scale(
        self, center_xy: tuple[float, float], angle_deg: float, hi: float
    ) -> float:
        """Smallest zoom at which the aperture shows only valid pixels (bisection).

        Valid views are nested as the scale grows (the octagon is convex and
        contains its centre), so the feasible scales form an interval [s*, inf).
        Returns ``hi`` when even ``hi`` does not fit.
        """

        def fits(scale: float) -> bool:
            matrix = pose_matrix(
                CameraPose(center_xy, angle_deg, scale), self.output_wh
            )
            return view_fits(
                self._valid_eroded, self._aperture_small, matrix, self._factor
            )

        lo = hi / 16
        if fits(lo):
            return lo
        if not fits(hi):
            return hi
        for _ in range(14):
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi

    # -- planning --------------------------------------------------------------

    def _plan(self, rng: np.random.Generator) -> SegmentPlan:
        source = self.source
        inscribed_px = float(self._distance.max())
        interior_xy = np.array(self._interior_xy())
        polyp = source.mask & source.valid
        if polyp.any():
            ys, xs = np.nonzero(polyp)
            polyp_xy = np.array([xs.mean(), ys.mean()])
        else:
            polyp_xy = interior_xy
        # Aim halfway between the polyp and the valid region's most interior
        # point: the polyp sits off-centre, as it often does, and the view
        # needs less zoom to stay on tissue than when centred on a polyp near
        # the edge.
        target = polyp_xy + 0.5 * (interior_xy - polyp_xy)

        def direction() -> np.ndarray:
            angle = rng.uniform(0, 2 * math.pi)
            return np.array([math.cos(angle), math.sin(angle)])

        start = target + direction() * rng.uniform(0.25, 0.5) * inscribed_px
        end = target + direction() * rng.uniform(0.0, 0.12) * inscribed_px
        start, end = (
            self._pull_inside(start, interior_xy),
            self._pull_inside(end, interior_xy),
        )
        fit_scale = self.minimal_scale(
            tuple(interior_xy), 0.0, hi=16.0 * self._reference_scale
        )
        transition_s = min(0.36, self.duration_s / 4)
        names = ["x", "y", "angle", "zoom", "gain", "vignette", "light_x", "light_y"]
        noise = {name: SmoothNoise.sample(rng) for name in names}
        noise.update({f"tint{c}": SmoothNoise.sample(rng, 0.05, 0.2) for c in range(3)})
        return SegmentPlan(
            duration_s=self.duration_s,
            transition_s=transition_s,
            start_xy=tuple(start.tolist()),
            end_xy=tuple(end.tolist()),
            wobble_px=0.1 * inscribed_px,
            angle0_deg=float(rng.uniform(-30, 30)),
            angle_drift_deg=float(rng.uniform(-20, 20)),
            base_scale=fit_scale * float(rng.uniform(1.0, 1.1)),
            zoom_drift=float(rng.uniform(-0.05, 0.2)),
            whip_in_dir=tuple(direction().tolist()),
            whip_out_dir=tuple(direction().tolist()),
            whip_px=0.5 * inscribed_px,
            whip_in_deg=float(rng.choice([-1, 1]) * rng.uniform(30, 60)),
            whip_out_deg=float(rng.choice([-1, 1]) * rng.uniform(30, 60)),
            whip_in_light=float(rng.choice([-0.8, 0.35])),
            whip_out_light=float(rng.choice([-0.8, 0.35])),
            gain0=float(rng.uniform(0.9, 1.05)),
            noise=noise,
        )

    def _pull_inside(self, point: np.ndarray, interior_xy: np.ndarray) -> np.ndarray:
        """Move ``point`` towards the interior until it is well inside the valid region.

        The first point on the segment to the interior whose (bilinear) distance to
        invalid pixels reaches the threshold, found by a scan and then bisection,
        so a smooth path stays smooth where it is pulled in.
        """
        needed = 0.6 * float(self._distance.max())

        def inside(step: float) -> bool:
            return self._distance_at(point + step * (interior_xy - point)) >= needed

        if inside(0.0):
            return point
        steps = np.linspace(0.0, 1.0, 41)
        first = next((i for i, step in enumerate(steps) if inside(step)), None)
        if first is None:
            return interior_xy
        lo, hi = float(steps[first - 1]), float(steps[first])
        for _ in range(24):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if inside(mid) else (mid, hi)
        return point + hi * (interior_xy - point)

    def _distance_at(self, xy: np.ndarray) -> float:
        """Bilinear sample of the distance-to-invalid map (0 outside the image)."""
        height, width = self._distance.shape
        x, y = float(xy[0]), float(xy[1])
        if not (0.0 <= x <= width - 1 and 0.0 <= y <= height - 1):
            return 0.0
        x0, y0 = min(int(x), width - 2), min(int(y), height - 2)
        fx, fy = x - x0, y - y0
        patch = self._distance[y0 : y0 + 2, x0 : x0 + 2]
        top = patch[0, 0] * (1 - fx) + patch[0, 1] * fx
        bottom = patch[1, 0] * (1 - fx) + patch[1, 1] * fx
        return float(top * (1 - fy) + bottom * fy)

    def _zoom_floor(self, fps: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample the minimal fitting scale on a fine time grid and turn it into a
        smooth floor that is >= it everywhere.

        The floor is a max filter followed by a truncated, normalised Gaussian of
        the same radius: each output is an average of values that all exceed the
        requirement at its own time, so the floor never dips below it.
        """
        step_s = 1.0 / (4 * fps)
        times = np.arange(0.0, self.duration_s + step_s, step_s)
        interior = np.array(self._interior_xy())
        required = np.empty_like(times)
        for i, t in enumerate(times):
            pose = self.plan.raw_pose(float(t))
            center = self._pull_inside(np.array(pose.center_xy), interior)
            required[i] = 1.03 * self.minimal_scale(
                tuple(center), pose.angle_deg, hi=pose.scale * 4
            )
        sigma = max(1, round(0.08 / step_s))
        radius = 3 * sigma
        padded = np.pad(required, radius, mode="edge")
        maxed = np.array(
            [padded[i : i + 2 * radius + 1].max() for i in range(len(times))]
        )
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        floor = np.convolve(np.pad(maxed, radius, mode="edge"), kernel, mode="valid")
        return times, floor

    def _interior_xy(self) -> tuple[float, float]:
        interior = np.unravel_index(
            int(np.argmax(self._distance)), self._distance.shape
        )
        return float(interior[1]), float(interior[0])

    def pose(self, time_s: float) -> CameraPose:
        """The camera pose at ``time_s`` (clamped to the segment)."""
        time_s = min(max(time_s, 0.0), self.duration_s)
        raw = self.plan.raw_pose(time_s)
        center = self._pull_inside(
            np.array(raw.center_xy), np.array(self._interior_xy())
        )
        floor = float(np.interp(time_s, self._floor_times, self._floor))
        return CameraPose(tuple(center.tolist()), raw.angle_deg, max(raw.scale, floor))


# --------------------------------------------------------------------------- rendering


def motion_px(
    first: np.ndarray, second: np.ndarray, aperture_points: np.ndarray
) -> float:
    """Largest screen displacement of aperture points between two camera matrices.

    Args:
        first, second: (2, 3) source->output matrices at the two instants.
        aperture_points: (P, 2) output pixel coordinates to track.

    Returns:
        Maximum displacement in output pixels.
    """
    inverse = cv2.invertAffineTransform(first)
    homogeneous = np.hstack([aperture_points, np.ones((len(aperture_points), 1))])
    source = homogeneous @ inverse.T
    moved = np.hstack([source, np.ones((len(source), 1))]) @ second.T
    return float(np.max(np.linalg.norm(moved - aperture_points, axis=1)))


def apply_lighting(
    image: np.ndarray,
    lighting: Lighting,
    aperture_box: tuple[float, float, float, float],
) -> np.ndarray:
    """Scale an (H, W, 3) float32 RGB image by gain, vignette and tint; returns uint8.

    Args:
        image: (H, W, 3) float32 RGB in [0, 255].
        lighting: The light for this frame.
        aperture_box: (cx, cy, half_w, half_h) of the aperture in pixels; the
            vignette radius is normalised by the half sizes.
    """
    height, width = image.shape[:2]
    cx, cy, half_w, half_h = aperture_box
    xs = (np.arange(width, dtype=np.float32) - cx) / half_w - lighting.center_shift[0]
    ys = (np.arange(height, dtype=np.float32) - cy) / half_h - lighting.center_shift[1]
    radius2 = ys[:, None] ** 2 + xs[None, :] ** 2
    falloff = np.clip(1.0 - lighting.vignette * radius2, 0.0, 1.0)
    channel_gain = np.asarray(lighting.tint_rgb, dtype=np.float32) * lighting.gain
    lit = image * falloff[..., None] * channel_gain[None, None, :]
    return np.clip(lit + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class RenderedFrame:
    """One output frame and its ground truth.

    Attributes:
        index: Frame index from 0.
        timestamp_s: index / fps.
        pixels: (H, W, 3) uint8 RGB.
        mask: (H, W) bool ground truth at the middle of the exposure.
        stem: Source image stem.
        segment: Segment index.
        in_transition: Whether the frame is within a scope-movement whip.
        blur_px: Motion of the fastest aperture point during the exposure.
    """

    index: int
    timestamp_s: float
    pixels: np.ndarray
    mask: np.ndarray
    stem: str
    segment: int
    in_transition: bool
    blur_px: float


def render_segment(
    segment: Segment, first_index: int, fps: int, frame_count: int, aperture: np.ndarray
) -> Iterator[RenderedFrame]:
    """Render ``frame_count`` frames of one segment with motion blur and lighting.

    Motion blur integrates the warp over the shutter time (``EXPOSURE_FRACTION``
    of a frame) with enough sub-frames that consecutive ones move < 1.5 px, so
    blur length follows the camera speed everywhere on screen (rotation blurs
    the rim more than the centre). The mask is the warp at mid-exposure.
    """
    width, height = segment.output_wh
    ys, xs = np.nonzero(aperture)
    aperture_box = (
        (xs.min() + xs.max()) / 2,
        (ys.min() + ys.max()) / 2,
        (xs.max() - xs.min()) / 2,
        (ys.max() - ys.min()) / 2,
    )
    cx, cy, half_w, half_h = aperture_box
    track = np.array(
        [[cx + dx * half_w, cy + dy * half_h] for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    )
    source = segment.source.pixels
    exposure_s = EXPOSURE_FRACTION / fps

    def matrix_at(time_s: float) -> np.ndarray:
        return pose_matrix(segment.pose(time_s), segment.output_wh)

    for local in range(frame_count):
        time_s = local / fps
        opening, closing = (
            matrix_at(time_s - exposure_s / 2),
            matrix_at(time_s + exposure_s / 2),
        )
        blur_px = motion_px(opening, closing, track)
        subframes = int(
            min(MAX_SUBFRAMES, max(1, math.ceil(blur_px * SUBFRAMES_PER_PX)))
        )
        accumulated = np.zeros((height, width, 3), np.float32)
        for k in range(subframes):
            offset = (
                ((k + 0.5) / subframes - 0.5) * exposure_s if subframes > 1 else 0.0
            )
            accumulated += warp_image(
                source, matrix_at(time_s + offset), segment.output_wh
            )
        accumulated /= subframes
        pixels = apply_lighting(
            accumulated, segment.plan.lighting(time_s), aperture_box
        )
        pixels[~aperture] = 0
        mask = (
            warp_mask(segment.source.mask, matrix_at(time_s), segment.output_wh)
            & aperture
        )
        arrival, departure = segment.plan.whips(time_s)
        yield RenderedFrame(
            index=first_index + local,
            timestamp_s=(first_index + local) / fps,
            pixels=pixels,
            mask=mask,
            stem=segment.source.stem,
            segment=segment.index,
            in_transition=bool(arrival > 0 or departure > 0),
            blur_px=blur_px,
        )


# --------------------------------------------------------------------------- outputs


def write_video(frames: Iterator[np.ndarray], path: Path, fps: int, crf: int) -> int:
    """Encode RGB frames to H.264 MP4 with PyAV (libx264, yuv420p, constant rate).

    Returns:
        The number of frames written.
    """
    count = 0
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        # One thread: x264's output then depends on nothing but the input.
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "slow", "x264-params": "keyint=50"}
        time_base = Fraction(1, fps)
        for count, pixels in enumerate(frames, start=1):
            if count == 1:
                stream.width, stream.height = pixels.shape[1], pixels.shape[0]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = count - 1, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return count


def save_masks(masks: np.ndarray, path: Path) -> None:
    """Save (N, H, W) bool masks bit-packed along the width in a compressed npz."""
    np.savez_compressed(
        path, masks=np.packbits(masks, axis=-1), width=np.int64(masks.shape[-1])
    )


def load_masks(path: Path | str) -> np.ndarray:
    """Read masks written by this script.

    Returns:
        (N, H, W) bool array, True = polyp; frame i is ``masks[i]``.

    Example:
        >>> masks = load_masks("samples/demo_masks.npz")  # doctest: +SKIP
    """
    with np.load(path) as data:
        width = int(data["width"])
        return np.unpackbits(data["masks"], axis=-1, count=width).astype(bool)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class ClipSummary:
    """What :func:`make_clip` wrote."""

    video_path: Path
    masks_path: Path
    frames_path: Path
    frame_count: int
    fps: int
    size_wh: tuple[int, int]
    stems: tuple[str, ...]
    seconds: float


def read_split(data_dir: Path, name: str) -> list[str]:
    """Stems listed in ``data_dir/splits/{name}.txt``."""
    path = data_dir / "splits" / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"expected the split file {path}; pass --data pointing at Kvasir-SEG "
            "(images/, masks/, splits/test.txt)"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def make_clip(
    data_dir: Path,
    out_dir: Path,
    *,
    stems: Sequence[str] = DEFAULT_STEMS,
    seed: int = DEFAULT_SEED,
    fps: int = DEFAULT_FPS,
    seconds_per_segment: float = DEFAULT_SECONDS_PER_SEGMENT,
    size_wh: tuple[int, int] = DEFAULT_SIZE_WH,
    crf: int = DEFAULT_CRF,
    name: str = "demo",
) -> ClipSummary:
    """Render the clip, its masks and its frame table into ``out_dir``.

    Args:
        data_dir: Kvasir-SEG folder with images/, masks/ and splits/test.txt.
        out_dir: Where ``{name}.mp4``, ``{name}_masks.npz`` and
            ``{name}_frames.csv`` go (created if missing).
        stems: Test-split image stems, one segment each, in order.
        seed: Seeds every trajectory (segment k uses ``default_rng([seed, k])``).
        fps: Frame rate.
        seconds_per_segment: Duration of each segment.
        size_wh: Output (width, height), both even (yuv420p).
        crf: x264 constant rate factor (lower = larger, better).
        name: File name prefix.

    Raises:
        ValueError: a stem is not in the test split, or an argument is out of range.
    """
    started = time.perf_counter()
    if not stems:
        raise ValueError("expected at least one stem; pass --stems STEM [STEM ...]")
    test_stems = set(read_split(data_dir, "test"))
    outside = [stem for stem in stems if stem not in test_stems]
    if outside:
        raise ValueError(
            f"stems {outside} are not in {data_dir}/splits/test.txt; the demo may "
            "only show test-split images (never training data); pick stems from "
            "test.txt"
        )
    width, height = size_wh
    if width % 2 or height % 2 or width < 32 or height < 32:
        raise ValueError(
            f"size: expected even width and height >= 32, got {width}x{height}"
        )
    if fps <= 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    frames_per_segment = round(seconds_per_segment * fps)
    if frames_per_segment < 2:
        raise ValueError(
            f"seconds_per_segment: expected at least 2 frames per segment, got "
            f"{seconds_per_segment} s at {fps} fps"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    aperture = aperture_mask(size_wh)
    ys, xs = np.nonzero(aperture)
    aperture_hw = (int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    duration_s = frames_per_segment / fps

    masks: list[np.ndarray] = []
    rows: list[dict[str, object]] = []

    def frames() -> Iterator[np.ndarray]:
        for index, stem in enumerate(stems):
            source = load_source(data_dir, stem, aperture_hw)
            segment = Segment(source, index, seed, duration_s, fps, size_wh, aperture)
            logger.info(
                "segment %d: %s (downscale %.2f, base scale %.2f)",
                index,
                stem,
                source.downscale,
                segment.plan.base_scale,
            )
            for frame in render_segment(
                segment, index * frames_per_segment, fps, frames_per_segment, aperture
            ):
                masks.append(frame.mask)
                rows.append(
                    {
                        "index": frame.index,
                        "timestamp_s": f"{frame.timestamp_s:.4f}",
                        "source_image": frame.stem,
                        "polyp_area_fraction": f"{frame.mask.mean():.6f}",
                        "segment": frame.segment,
                        "in_transition": int(frame.in_transition),
                        "blur_px": f"{frame.blur_px:.2f}",
                    }
                )
                yield frame.pixels

    video_path = out_dir / f"{name}.mp4"
    count = write_video(frames(), video_path, fps, crf)
    masks_path = out_dir / f"{name}_masks.npz"
    save_masks(np.stack(masks), masks_path)
    frames_path = out_dir / f"{name}_frames.csv"
    with frames_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return ClipSummary(
        video_path,
        masks_path,
        frames_path,
        count,
        fps,
        size_wh,
        tuple(stems),
        time.perf_counter() - started,
    )


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT like 640x480, got {text!r}"
        ) from None
    return width, height


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/kvasir-seg"),
        help="Kvasir-SEG folder (images/, masks/, splits/test.txt)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("samples"), help="output folder"
    )
    parser.add_argument(
        "--stems",
        nargs="+",
        default=list(DEFAULT_STEMS),
        help="test-split stems, one segment each (default: the documented four)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    parser.add_argument(
        "--seconds-per-segment", type=float, default=DEFAULT_SECONDS_PER_SEGMENT
    )
    parser.add_argument(
        "--size", type=_size, default=DEFAULT_SIZE_WH, help="WIDTHxHEIGHT"
    )
    parser.add_argument(
        "--crf", type=int, default=DEFAULT_CRF, help="x264 quality (lower = larger)"
    )
    parser.add_argument("--name", default="demo", help="output file prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = make_clip(
            args.data,
            args.out,
            stems=args.stems,
            seed=args.seed,
            fps=args.fps,
            seconds_per_segment=args.seconds_per_segment,
            size_wh=args.size,
            crf=args.crf,
            name=args.name,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"make_demo_clip: {error}\n")
    for path in (summary.video_path, summary.masks_path, summary.frames_path):
        print(f"{path}  {path.stat().st_size / 1e6:.3f} MB")
    print(
        f"{summary.frame_count} frames, {summary.fps} fps, "
        f"{summary.size_wh[0]}x{summary.size_wh[1]}, {summary.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
