"""Draw a frame's findings over it: translucent fill, contour, boxes and a HUD.

On a GPU, :func:`render` computes the fill and the contour on the
probabilities' device, copies the image to the host, then draws the boxes
(the regions of :class:`~streamseg.findings.Findings`, not labelled again)
and the HUD text with OpenCV. On the CPU
(:func:`render_host`) everything is drawn with OpenCV and a uint8 lookup
table, only inside the bounding box of the mask, so the cost follows the
size of the mask rather than of the frame; both paths give identical pixels.
The input frame is never modified; pixels outside the mask change only where
a box or the HUD is drawn.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from streamseg.findings import Findings
from streamseg.regions import BoxXYWH, find_regions
from streamseg.stats import Figures

if TYPE_CHECKING:
    from streamseg.tracking import TrackFrame

RGB = tuple[int, int, int]
# Behind the HUD's figures.
HUD_BACKGROUND_RGB = (16, 16, 16)


@dataclass(frozen=True)
class OverlayStyle:
    """The ``overlay`` section of the stream config (colours are RGB, 0-255).

    Attributes:
        fill_rgb: Colour blended over mask pixels.
        fill_opacity: 0 (no fill) to 1 (opaque).
        contour_rgb: Colour of the mask's inner edge.
        contour_px: Edge width in pixels (0: no contour).
        boxes: Draw a box around each connected region.
        box_rgb: Box colour.
        box_px: Box line width in pixels.
        box_margin_px: Gap between a region and its box.
        hud: Draw the heads-up display (polyp indicator, fps, latency).
        hud_rgb: HUD text colour.
        alert_rgb: Background of the "POLYP" indicator.
    """

    fill_rgb: tuple[int, int, int] = (0, 255, 0)
    fill_opacity: float = 0.35
    contour_rgb: tuple[int, int, int] = (0, 255, 0)
    contour_px: int = 2
    boxes: bool = True
    box_rgb: tuple[int, int, int] = (255, 220, 0)
    box_px: int = 2
    box_margin_px: int = 3
    hud: bool = True
    hud_rgb: tuple[int, int, int] = (255, 255, 255)
    alert_rgb: tuple[int, int, int] = (220, 30, 30)

    def __post_init__(self) -> None:
        for name in ("fill_rgb", "contour_rgb", "box_rgb", "hud_rgb", "alert_rgb"):
            value = getattr(self, name)
            if len(value) != 3 or not all(0 <= c <= 255 for c in value):
                raise ValueError(
                    f"{name}: expected [r, g, b] with values 0-255, got {list(value)}"
                )
        if not 0.0 <= self.fill_opacity <= 1.0:
            raise ValueError(
                f"fill_opacity: expected a value in [0, 1], got {self.fill_opacity}"
            )
        for name in ("contour_px", "box_px", "box_margin_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class HudText:
    """Run figures shown by the HUD (``None``: not shown).

    Files show progress and speed, live sources frame rate and latency
    (:class:`streamseg.stats.Figures` holds the definitions).

    Attributes:
        fps: Frames processed per second (``None`` with a known mode: "--").
        latency_ms: Live: grab -> overlay latency of this frame.
        outline_ms: Live, ``every_frame`` display: grab of the frame the
            outline was computed from -> overlay.
        frames_done: Files: frames processed, counting this one.
        frames_total: Files: frames in the file (``None``: unknown).
        speed_x: Files: video seconds processed per wall-clock second.
        inset_px: Distance kept from the image's edges (the alert border's
            width), so that a flashing border never covers the HUD.
    """

    fps: float | None = None
    latency_ms: float | None = None
    frames_done: int | None = None
    frames_total: int | None = None
    speed_x: float | None = None
    inset_px: int = 0
    outline_ms: float | None = None

    @classmethod
    def of(cls, figures: Figures, inset_px: int = 0) -> HudText:
        """The HUD for ``figures``: progress and speed (files) or fps and latency."""
        if figures.live:
            return cls(
                figures.fps,
                figures.latency_ms,
                inset_px=inset_px,
                outline_ms=figures.outline_ms,
            )
        return cls(
            figures.fps,
            None,
            figures.frames_done,
            figures.frames_total,
            figures.speed_x,
            inset_px,
        )

    def text(self) -> str:
        """The figures as one line, e.g. ``"120/300  5.8 fps  0.23x real time"``.

        Example:
            >>> HudText(24.96, 85.2).text()
            '25.0 fps  latency 85 ms'
            >>> HudText(5.8, None, 120, 300, 0.232).text()
            '120/300  5.8 fps  0.23x real time'
            >>> HudText(25.0, 12.4, outline_ms=96.0).text()
            '25.0 fps  latency 12 ms  outline 96 ms'
        """
        parts = []
        if self.frames_done is not None:
            total = "" if self.frames_total is None else f"/{self.frames_total}"
            parts.append(f"{self.frames_done}{total}")
        if self.fps is not None:
            parts.append(f"{self.fps:.1f} fps")
        elif self.frames_done is not None or self.latency_ms is not None:
            parts.append("-- fps")
        if self.speed_x is not None:
            parts.append(f"{self.speed_x:.2f}x real time")
        if self.latency_ms is not None:
            parts.append(f"latency {self.latency_ms:.0f} ms")
        if self.outline_ms is not None:
            parts.append(f"outline {self.outline_ms:.0f} ms")
        return "  ".join(parts)


@torch.inference_mode()
def render(
    findings: Findings, style: OverlayStyle, hud: HudText | None = None
) -> np.ndarray:
    """Draw a frame's findings over the frame.

    Args:
        findings: The frame's final mask and regions (:meth:`Findings.of`).
        style: Colours, opacity and what to draw.
        hud: Figures for the HUD (drawn only if ``style.hud``).

    Returns:
        A new (H, W, 3) uint8 RGB array; ``findings.frame.pixels`` is untouched.
    """
    if findings.prediction.mask.device.type == "cpu":
        return render_host(
            findings.frame.pixels,
            findings.mask,
            style,
            hud or HudText(),
            boxes_xywh=findings.boxes_xywh,
            tracks=findings.tracks,
        )
    return render_tensor(findings, style, hud)


@torch.inference_mode()
def render_tensor(
    findings: Findings, style: OverlayStyle, hud: HudText | None = None
) -> np.ndarray:
    """:func:`render` with the fill and contour as tensors on the mask's device.

    The GPU path; on the CPU it gives the same pixels as :func:`render_host`
    (tests compare them), only slower.
    """
    device = findings.prediction.mask.device
    # The frame-sized host mask, uploaded (the prediction's is at the network's size).
    mask = torch.from_numpy(findings.mask).to(device)
    source = findings.frame.pixels
    if (
        not source.flags.writeable
    ):  # torch wants writable memory; we still never write it
        source = source.copy()
    pixels = torch.from_numpy(source).to(device)  # shares memory on CPU: read only here
    image = pixels
    if style.fill_opacity > 0:
        fill = torch.tensor(style.fill_rgb, dtype=torch.float32, device=device)
        blended = (
            torch.lerp(pixels.float(), fill, style.fill_opacity)
            .round_()
            .to(torch.uint8)
        )
        image = torch.where(mask[..., None], blended, image)
    if style.contour_px > 0:
        edge = inner_edge(mask, style.contour_px)
        contour = torch.tensor(style.contour_rgb, dtype=torch.uint8, device=device)
        image = torch.where(edge[..., None], contour, image)
    # OpenCV draws only on C-contiguous memory (a strided mask gives strided output).
    host = np.ascontiguousarray(image.cpu().numpy())
    if np.shares_memory(host, findings.frame.pixels):
        host = (
            host.copy()
        )  # nothing was drawn on the GPU side; never hand out the input
    tracks = findings.tracks
    if tracks is not None:
        draw_tracks(host, tracks, style)
    elif style.boxes and findings.present:
        draw_boxes(host, findings.boxes_xywh, style)
    if style.hud:
        draw_hud(
            host,
            findings.present if tracks is None else tracks.present,
            hud or HudText(),
            style,
            polyps_seen=None if tracks is None else tracks.polyps_seen,
        )
    return host


def render_host(
    pixels: np.ndarray,
    mask: np.ndarray,
    style: OverlayStyle,
    hud: HudText,
    *,
    boxes_xywh: tuple[BoxXYWH, ...] | None = None,
    tracks: TrackFrame | None = None,
) -> np.ndarray:
    """:func:`render` on the host, with OpenCV, limited to the mask's bounding box.

    The fill uses a per-channel uint8 lookup table computed with the same
    float32 ``lerp`` and rounding as the tensor path, so the pixels are
    identical to it.

    Args:
        pixels: (H, W, 3) uint8 RGB frame (not modified).
        mask: (H, W) bool mask.
        style: Colours, opacity and what to draw.
        hud: Figures for the HUD (drawn only if ``style.hud``).
        boxes_xywh: The mask's region boxes (:class:`Findings`); ``None``:
            label the mask here.
        tracks: The polyp tracks of this frame: their boxes, ids and times
            replace the per-region boxes, the HUD shows the count of polyps
            seen, and edge arrows point to polyps that left the view.

    Returns:
        A new (H, W, 3) uint8 RGB array.
    """
    import cv2

    image = np.array(pixels, dtype=np.uint8, order="C", copy=True)
    mask_u8 = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    x, y, width, height = cv2.boundingRect(mask_u8)  # all 0 for an empty mask
    present = width > 0
    if present and (style.fill_opacity > 0 or style.contour_px > 0 or style.boxes):
        # Pad the box by the contour width so that the erosion sees the
        # background (or the frame border, which erodes nothing) around the mask.
        pad = style.contour_px
        top, left = max(y - pad, 0), max(x - pad, 0)
        bottom = min(y + height + pad, mask_u8.shape[0])
        right = min(x + width + pad, mask_u8.shape[1])
        roi = image[top:bottom, left:right]  # a view: drawing on it draws on image
        roi_mask = mask_u8[top:bottom, left:right]
        if style.fill_opacity > 0:
            table = _fill_table(tuple(style.fill_rgb), float(style.fill_opacity))
            blended = cv2.LUT(roi, table)
            cv2.copyTo(blended, roi_mask, roi)
        if style.contour_px > 0:
            size = 2 * style.contour_px + 1
            eroded = cv2.erode(roi_mask, np.ones((size, size), np.uint8))
            roi[(roi_mask != 0) & (eroded == 0)] = style.contour_rgb
        if style.boxes and tracks is None:
            if boxes_xywh is None:
                boxes_xywh = tuple(
                    (x + left, y + top, width, height)
                    for x, y, width, height in (
                        region.box_xywh for region in find_regions(roi_mask)
                    )
                )
            draw_boxes(image, boxes_xywh, style)
    if tracks is not None:
        draw_tracks(image, tracks, style)
        present = tracks.present
    if style.hud:
        draw_hud(
            image,
            present,
            hud,
            style,
            polyps_seen=None if tracks is None else tracks.polyps_seen,
        )
    return image


@functools.lru_cache(maxsize=8)
def _fill_table(fill_rgb: RGB, opacity: float) -> np.ndarray:
    """(1, 256, 3) uint8 table: ``round(lerp(v, fill, opacity))`` per channel.

    Computed with torch's float32 ``lerp`` and ``round`` (the tensor path's
    arithmetic), so a lookup equals the tensor blend bit for bit.
    """
    values = torch.arange(256, dtype=torch.float32)[:, None].expand(256, 3)
    fill = torch.tensor(fill_rgb, dtype=torch.float32)
    table = torch.lerp(values, fill, opacity).round_().to(torch.uint8)
    host = np.ascontiguousarray(table.numpy()[None])
    host.setflags(write=False)  # cached and shared between calls
    return host


def inner_edge(mask: torch.Tensor, width_px: int) -> torch.Tensor:
    """Mask pixels within ``width_px`` (chessboard distance) of a background pixel.

    The edge lies inside the mask, so drawing it changes no pixel outside the
    mask. The frame border does not count as background.

    Args:
        mask: (H, W) bool tensor.
        width_px: Edge width in pixels (>= 1).

    Returns:
        (H, W) bool tensor on the mask's device.
    """
    if mask.device.type != "cpu":
        return inner_edge_pooled(mask, width_px)
    # On the CPU, OpenCV's erosion is ~100x faster than torch's max_pool2d.
    import cv2

    size = 2 * width_px + 1
    host = np.ascontiguousarray(mask.numpy(), dtype=np.uint8)
    eroded = cv2.erode(
        host, np.ones((size, size), np.uint8)
    )  # the border erodes nothing
    return mask & ~torch.from_numpy(eroded.view(bool))


def inner_edge_pooled(mask: torch.Tensor, width_px: int) -> torch.Tensor:
    """:func:`inner_edge` with tensor operations only (runs on the mask's device)."""
    background = (~mask).float()[None, None]
    near_background = F.max_pool2d(
        background, 2 * width_px + 1, stride=1, padding=width_px
    )
    return mask & (near_background[0, 0] > 0)


def draw_boxes(
    image: np.ndarray,
    boxes_xywh: tuple[tuple[int, int, int, int], ...],
    style: OverlayStyle,
) -> None:
    """Draw one rectangle per box, ``box_margin_px`` outside it, in place."""
    import cv2

    if style.box_px == 0:
        return
    margin = style.box_margin_px + (style.box_px + 1) // 2
    for x, y, width, height in boxes_xywh:
        cv2.rectangle(
            image,
            (x - margin, y - margin),
            (x + width - 1 + margin, y + height - 1 + margin),
            style.box_rgb,
            style.box_px,
            cv2.LINE_8,
        )


def draw_hud(
    image: np.ndarray,
    polyp_present: bool,
    hud: HudText,
    style: OverlayStyle,
    *,
    polyps_seen: int | None = None,
) -> None:
    """Draw the polyp indicator and the run figures in the top-left corner, in place.

    Everything stays ``hud.inset_px`` away from the edges (inside the alert
    border). ``polyps_seen`` (distinct polyps so far; None: not shown) goes on
    its own line under the indicator.
    """
    import cv2

    height = image.shape[0]
    scale = max(height / 720.0, 0.35)
    thickness = max(round(2 * scale), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    pad = max(int(8 * scale), 3)
    x = y = pad + max(hud.inset_px, 0)
    if polyp_present:
        (text_w, text_h), baseline = cv2.getTextSize(
            "POLYP", font, 1.2 * scale, thickness + 1
        )
        cv2.rectangle(
            image,
            (x, y),
            (x + text_w + 2 * pad, y + text_h + baseline + pad),
            style.alert_rgb,
            -1,
        )
        cv2.putText(
            image,
            "POLYP",
            (x + pad, y + text_h + pad // 2),
            font,
            1.2 * scale,
            style.hud_rgb,
            thickness + 1,
            cv2.LINE_AA,
        )
        y += text_h + baseline + 2 * pad
    if polyps_seen is not None:
        y = _hud_line(image, f"polyps seen: {polyps_seen}", (x, y), scale, style)
    text = hud.text()
    if text:
        _hud_line(image, text, (x, y), scale, style)


NO_SIGNAL_TEXT = "NO SIGNAL"
# Size of the NO SIGNAL card before any frame has arrived (height, width).
NO_SIGNAL_DEFAULT_HW = (360, 640)


def no_signal_image(
    hw: tuple[int, int] | None, style: OverlayStyle, seconds: float | None = None
) -> np.ndarray:
    """A dark card saying "NO SIGNAL", shown while a live source delivers nothing.

    It is drawn fresh, not over the last frame, so no stale picture and no
    stale mask can be mistaken for the live view.

    Args:
        hw: (height, width) of the card: the last frame's size (``None``:
            640x360, before any frame arrived).
        style: Text in ``style.hud_rgb`` on a band of ``style.alert_rgb``.
        seconds: Time without a frame, shown under the text (``None``: not shown).

    Returns:
        (H, W, 3) uint8 RGB array.
    """
    import cv2

    height, width = hw if hw is not None else NO_SIGNAL_DEFAULT_HW
    image = np.full((height, width, 3), 16, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(min(width / 400.0, height / 220.0), 0.3)
    thickness = max(round(2 * scale), 1)
    (text_w, text_h), baseline = cv2.getTextSize(NO_SIGNAL_TEXT, font, scale, thickness)
    x, y = (width - text_w) // 2, (height + text_h) // 2
    pad = max(int(10 * scale), 2)
    cv2.rectangle(
        image,
        (max(x - pad, 0), max(y - text_h - pad, 0)),
        (min(x + text_w + pad, width - 1), min(y + baseline + pad, height - 1)),
        style.alert_rgb,
        -1,
    )
    cv2.putText(
        image,
        NO_SIGNAL_TEXT,
        (x, y),
        font,
        scale,
        style.hud_rgb,
        thickness,
        cv2.LINE_AA,
    )
    if seconds is not None:
        text = f"{seconds:.0f} s without a frame"
        small = 0.5 * scale
        (small_w, small_h), _ = cv2.getTextSize(text, font, small, 1)
        cv2.putText(
            image,
            text,
            ((width - small_w) // 2, min(y + baseline + pad + 2 * small_h, height - 2)),
            font,
            small,
            style.hud_rgb,
            1,
            cv2.LINE_AA,
        )
    return image


def draw_border(image: np.ndarray, rgb: RGB, width_px: int) -> None:
    """Paint a ``width_px`` frame around the image, in place (the alert flash).

    Args:
        image: (H, W, 3) uint8 RGB array, modified in place.
        rgb: Border colour.
        width_px: Border width in pixels (clipped to half the image).
    """
    height, width = image.shape[:2]
    band = min(width_px, height // 2, width // 2)
    if band <= 0:
        return
    colour = np.asarray(rgb, np.uint8)
    image[:band] = colour
    image[-band:] = colour
    image[:, :band] = colour
    image[:, -band:] = colour


def _hud_line(
    image: np.ndarray, text: str, xy: tuple[int, int], scale: float, style: OverlayStyle
) -> int:
    """Draw one line of HUD text on a dark band at ``xy`` (its top-left), in place.

    The band keeps the text readable on bright mucosa (a thicker dark copy of
    the text does not: its glyphs drift apart).

    Returns:
        The y of the next line.
    """
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(round(2 * scale), 1)
    pad = max(int(8 * scale), 3)
    size = 0.8 * scale
    (text_w, text_h), baseline = cv2.getTextSize(text, font, size, thickness)
    x, y = xy
    bottom = y + text_h + baseline + pad
    cv2.rectangle(image, (x, y), (x + text_w + 2 * pad, bottom), HUD_BACKGROUND_RGB, -1)
    origin = (x + pad, y + text_h + pad // 2)
    cv2.putText(image, text, origin, font, size, style.hud_rgb, thickness, cv2.LINE_AA)
    return bottom + pad


def draw_tracks(image: np.ndarray, tracks: TrackFrame, style: OverlayStyle) -> None:
    """Draw each shown track's box with its id and time on screen, and edge arrows.

    A track held after its last detection (not detected on this frame) keeps
    its box, drawn thinner. Arrows (``tracks.departures``) sit at the frame
    edge and point out of it, where a polyp left the view.

    Args:
        image: (H, W, 3) uint8 RGB, drawn on in place.
        tracks: The tracker's output for this frame.
        style: Box colour and width; label colours from the HUD's.
    """
    import cv2

    height, width = image.shape[:2]
    scale = max(height / 720.0, 0.35)
    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(round(1.5 * scale), 1)
    margin = style.box_margin_px + (style.box_px + 1) // 2
    for view in tracks.tracks:
        x, y, w, h = view.box_xywh
        if style.boxes and style.box_px > 0:
            cv2.rectangle(
                image,
                (x - margin, y - margin),
                (x + w - 1 + margin, y + h - 1 + margin),
                style.box_rgb,
                style.box_px if view.detected else max(style.box_px // 2, 1),
                cv2.LINE_8,
            )
        seconds = view.on_screen_s
        label = (
            f"#{view.track_id} {seconds:.1f}s"
            if seconds < 10
            else (f"#{view.track_id} {int(seconds) // 60}:{int(seconds) % 60:02d}")
        )
        (text_w, text_h), baseline = cv2.getTextSize(
            label, font, 0.7 * scale, thickness
        )
        left = min(max(x - margin, 0), max(width - text_w - 4, 0))
        top = y - margin - text_h - baseline - 4
        if top < 0:  # no room above the box: inside its top edge
            top = max(y - margin, 0) + 2
        cv2.rectangle(
            image,
            (left, top),
            (left + text_w + 4, top + text_h + baseline + 4),
            style.box_rgb,
            -1,
        )
        cv2.putText(
            image,
            label,
            (left + 2, top + text_h + 2),
            font,
            0.7 * scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    length = max(24.0, 0.08 * min(height, width))
    for departure in tracks.departures:
        (ex, ey), (dx, dy) = departure.exit_xy, departure.direction_xy
        inset = 0.6 * length
        tip = (
            min(max(ex - dx * 4, 2), width - 3),
            min(max(ey - dy * 4, 2), height - 3),
        )
        tail = (tip[0] - dx * length, tip[1] - dy * length)
        if math.isnan(tail[0]) or inset <= 0:
            continue
        for colour, width_px in (((0, 0, 0), 7), (style.box_rgb, 4)):
            cv2.arrowedLine(
                image,
                (round(tail[0]), round(tail[1])),
                (round(tip[0]), round(tip[1])),
                colour,
                max(round(width_px * scale), 2),
                cv2.LINE_AA,
                tipLength=0.45,
            )
        cv2.putText(
            image,
            f"#{departure.track_id}",
            (
                round(tail[0] - dx * 0.5 * length) - 10,
                round(tail[1] - dy * 0.5 * length) + 5,
            ),
            font,
            0.6 * scale,
            style.box_rgb,
            thickness,
            cv2.LINE_AA,
        )
