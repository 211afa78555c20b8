"""Polyp tracks: a stable id per polyp across frames, on/off times in seconds.

The smoother steadies *pixels*; this stage turns the regions of each frame
into *polyps*. :class:`Tracker` takes a frame's timestamp and its regions
(:func:`streamseg.detections.detect`: 8-connected regions of the final mask)
and returns a frozen :class:`TrackFrame`: the tracks shown on that frame, their
ids, how long each has been on screen, how many distinct polyps have been shown
so far, and the tracks that recently left the view (for the edge arrows of the
overlay).
In a run, :meth:`streamseg.findings.Findings.tracked` calls it once per frame
and the overlay, the event log, the browser view and the tracks log read the
result from the frame's findings.

Association (greedy, per frame):

1. A region continues the track whose last box it overlaps most, if the box
   IoU is at least ``match_iou``; otherwise the track whose last centre is
   nearest, if closer than ``max_center_distance`` (a fraction of the frame
   diagonal). Pairs are taken best first; each track and region once. A
   pair whose mean colours differ by more than ``max_color_change`` is not
   a match: position alone cannot tell a polyp from a different one that
   appears in the same place (the demo clip's cuts; the scope jumping).
2. A region left over that overlaps the box of a track matched on this frame
   is a fragment of that polyp (a mask split in two), not a new polyp.
3. Any other region starts a *tentative* track. It is *confirmed* (gets the
   next id, counts as a distinct polyp) once it has been detected for
   ``min_on_s``.
4. A track is shown while it is confirmed and was detected within the last
   ``keep_s`` (so a marker does not blink off for one missed frame), and it
   ends when it has not been detected for ``max_gap_s``: a polyp seen again
   after that gets a new id.

Why a tracker of our own and not a library's (e.g. supervision's ByteTrack):
its time is counted in frames (``lost_track_buffer``,
``minimum_consecutive_frames``, ``frame_rate``), while our sources have
variable frame rates and live drops and every other setting of streamseg is
in seconds; its Kalman motion model is made for steady motion, which an
endoscope is not; a frame holds one to three regions, so greedy matching is
exact for practical purposes and Hungarian matching gains nothing; and
supervision would bring matplotlib, requests, scipy and more into the
runtime (13 packages by ``pip install --dry-run supervision`` 0.31.2; it no
longer requires a second OpenCV wheel). What is left is plain Python and
NumPy, pure and tested (tests/test_tracking.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from streamseg.detections import Detection, FrameRegions

BoxXYWH = tuple[int, int, int, int]
LIGHTNESS_WEIGHT = 4.0  # lightness changes 4x faster than chroma with exposure


@dataclass(frozen=True)
class TrackingSettings:
    """The ``tracking`` section of the stream config.

    Attributes:
        enabled: ``false``: no tracks (no ids, count, arrows or tracks.json).
        min_on_s: A new polyp is shown (and counted) once it has been
            detected for this long (0: on its first frame).
        keep_s: A shown polyp stays on screen this long after its last
            detection (its marker holds the last box).
        max_gap_s: A track not detected for this long ends; a polyp seen
            again later gets a new id. At least ``keep_s``.
        match_iou: Box IoU at which a region continues a track.
        max_center_distance: Otherwise, the largest distance between a
            region's centre and a track's last centre, as a fraction of the
            frame diagonal.
        arrows: Draw an arrow at the frame edge towards where a tracked polyp
            left the view.
        arrow_window_s: ... for this long after its last detection.
        edge_margin: A polyp "left the view" when its last box came within
            this fraction of the frame size of an edge, or its motion carries
            its centre out of the frame within ``keep_s``.
        max_color_change: A region continues a track only if its mean
            colour (OpenCV 8-bit CIELAB, per channel) differs from the
            track's last detection by at most this much (lightness
            weighted a quarter, :func:`color_change`): a different polyp
            that appears where the last one was (a cut in an edited video,
            the scope jumping) is a new polyp. 255 turns the check off.
        max_area_ratio: ... and only if its area is within this factor of
            the track's last detection (larger or smaller).
    """

    enabled: bool = True
    min_on_s: float = 0.04
    keep_s: float = 0.5
    max_gap_s: float = 1.0
    match_iou: float = 0.1
    max_center_distance: float = 0.5
    arrows: bool = False
    arrow_window_s: float = 3.0
    edge_margin: float = 0.08
    max_color_change: float = 15.0
    max_area_ratio: float = 8.0

    def __post_init__(self) -> None:
        for name in ("min_on_s", "keep_s", "arrow_window_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s: expected > 0, got {self.max_gap_s}")
        if self.max_gap_s < self.keep_s:
            raise ValueError(
                f"max_gap_s ({self.max_gap_s}) must be at least keep_s "
                f"({self.keep_s}); raise max_gap_s or lower keep_s"
            )
        for name in ("match_iou", "max_center_distance"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"{name}: expected a value in [0, 1], got {getattr(self, name)}"
                )
        if not self.max_color_change > 0:
            raise ValueError(
                f"max_color_change: expected > 0, got {self.max_color_change}"
            )
        if not self.max_area_ratio >= 1:
            raise ValueError(
                f"max_area_ratio: expected >= 1, got {self.max_area_ratio}"
            )
        if not 0 <= self.edge_margin < 0.5:
            raise ValueError(
                f"edge_margin: expected a value in [0, 0.5), got {self.edge_margin}"
            )


def color_change(
    a: tuple[float, float, float] | None, b: tuple[float, float, float] | None
) -> float:
    """Largest channel difference of two Lab colours, lightness weighted down.

    Lightness counts a quarter (:data:`LIGHTNESS_WEIGHT`): exposure and the
    distance to the light change it quickly while the scope moves over one
    polyp. 0 if either is unknown.

    Example:
        >>> color_change((100.0, 128.0, 128.0), (160.0, 120.0, 131.0))
        15.0
    """
    if a is None or b is None:
        return 0.0
    return max(abs(a[0] - b[0]) / LIGHTNESS_WEIGHT, abs(a[1] - b[1]), abs(a[2] - b[2]))


@dataclass(frozen=True, slots=True)
class TrackView:
    """One track as shown on one frame.

    Attributes:
        track_id: 1, 2, 3 ... in the order polyps were first shown.
        box_xywh: The region's box (held from the last detection when not
            detected on this frame).
        detected: Whether a region of this frame belongs to it.
        first_shown_s: Timestamp at which it was first shown.
        on_screen_s: Seconds since then.
        area_fraction: Its region's share of the frame (last detection).
        detection: Position of its region in the frame's detections (None
            when not detected on this frame).
    """

    track_id: int
    box_xywh: BoxXYWH
    detected: bool
    first_shown_s: float
    on_screen_s: float
    area_fraction: float
    detection: int | None


@dataclass(frozen=True, slots=True)
class Departure:
    """A shown polyp that left the view recently (an edge arrow points to it).

    Attributes:
        track_id: Its id.
        exit_xy: Where it left, on the frame edge, in pixels.
        direction_xy: Unit vector pointing out of the frame there.
        since_s: Seconds since its last detection.
    """

    track_id: int
    exit_xy: tuple[float, float]
    direction_xy: tuple[float, float]
    since_s: float


@dataclass(frozen=True, slots=True)
class TrackFrame:
    """What the tracker says about one frame.

    Attributes:
        timestamp_s: The frame's timestamp.
        hw: Frame (height, width).
        tracks: The tracks shown on this frame, by id.
        polyps_seen: Distinct polyps shown so far (the largest id).
        departures: Shown polyps that left the view within
            ``arrow_window_s`` (empty unless ``arrows`` is on).
        extra_detections: Positions of detections of this frame that belong
            to a shown track as fragments (drawn with it).
    """

    timestamp_s: float
    hw: tuple[int, int]
    tracks: tuple[TrackView, ...] = ()
    polyps_seen: int = 0
    departures: tuple[Departure, ...] = ()
    extra_detections: tuple[int, ...] = ()

    @property
    def track_ids(self) -> tuple[int, ...]:
        """Ids of the tracks shown, ascending."""
        return tuple(t.track_id for t in self.tracks)

    @property
    def present(self) -> bool:
        """Whether any polyp is shown."""
        return bool(self.tracks)

    def shown_detections(self) -> frozenset[int]:
        """Positions of the frame's detections that belong to shown tracks."""
        own = {t.detection for t in self.tracks if t.detection is not None}
        return frozenset(own | set(self.extra_detections))


@dataclass
class _Track:
    key: int
    box_xywh: BoxXYWH
    first_detected_s: float
    last_detected_s: float
    area_fraction: float
    centers: list[tuple[float, float, float]]  # (t, x, y), the last few detections
    color_lab: tuple[float, float, float] | None = None
    extent_xywh: BoxXYWH | None = None  # its region and fragments, last frame
    track_id: int | None = None  # set when confirmed
    first_shown_s: float | None = None


def box_iou(a: BoxXYWH, b: BoxXYWH) -> float:
    """IoU of two ``(x, y, w, h)`` boxes.

    Example:
        >>> box_iou((0, 0, 2, 2), (1, 0, 2, 2))
        0.3333333333333333
    """
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def _union(a: BoxXYWH, b: BoxXYWH) -> BoxXYWH:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def associate(
    boxes_tracks: list[BoxXYWH],
    boxes_regions: list[BoxXYWH],
    *,
    match_iou: float,
    max_distance_px: float,
    allowed: Callable[[int, int], bool] | None = None,
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of track boxes to region boxes.

    Pairs with IoU >= ``match_iou`` come first (highest IoU first), then
    pairs whose centres are within ``max_distance_px`` (nearest first).
    ``allowed(track, region)`` can veto a pair (the appearance check).

    Returns:
        (track position, region position) pairs.

    Example:
        >>> associate([(0, 0, 10, 10)], [(50, 50, 5, 5), (1, 1, 10, 10)],
        ...           match_iou=0.1, max_distance_px=20)
        [(0, 1)]
    """
    candidates: list[tuple[int, float, int, int]] = []
    for i, tb in enumerate(boxes_tracks):
        tc = (tb[0] + tb[2] / 2, tb[1] + tb[3] / 2)
        for j, rb in enumerate(boxes_regions):
            if allowed is not None and not allowed(i, j):
                continue
            iou = box_iou(tb, rb)
            if iou > 0 and iou >= match_iou:
                candidates.append((0, -iou, i, j))
                continue
            rc = (rb[0] + rb[2] / 2, rb[1] + rb[3] / 2)
            distance = math.dist(tc, rc)
            if distance <= max_distance_px:
                candidates.append((1, distance, i, j))
    candidates.sort()
    used_t: set[int] = set()
    used_r: set[int] = set()
    pairs = []
    for _, _, i, j in candidates:
        if i in used_t or j in used_r:
            continue
        used_t.add(i)
        used_r.add(j)
        pairs.append((i, j))
    return pairs


def exit_point(
    hw: tuple[int, int],
    center_xy: tuple[float, float],
    velocity_xy: tuple[float, float],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a polyp left the frame: the edge point and the outward direction.

    The direction is the polyp's last motion when it has any, else the line
    from the frame centre through its last centre. The point is where a ray
    from the frame centre in that direction meets the frame's edge.

    Example:
        >>> exit_point((100, 200), (190.0, 50.0), (0.0, 0.0))
        ((200.0, 50.0), (1.0, 0.0))
    """
    height, width = hw
    cx, cy = width / 2, height / 2
    dx, dy = velocity_xy
    if math.hypot(dx, dy) < 1e-6:
        dx, dy = center_xy[0] - cx, center_xy[1] - cy
    norm = math.hypot(dx, dy)
    if norm < 1e-6:
        dx, dy, norm = 0.0, -1.0, 1.0
    dx, dy = dx / norm, dy / norm
    # Ray from the centre: the first edge it meets.
    scale = min(
        (cx / abs(dx)) if abs(dx) > 1e-9 else math.inf,
        (cy / abs(dy)) if abs(dy) > 1e-9 else math.inf,
    )
    return (cx + dx * scale, cy + dy * scale), (dx, dy)


class Tracker:
    """Turns each frame's regions into tracked polyps (one instance per stream).

    State: the live tracks (tentative and confirmed), the next id, and the
    recently departed shown tracks. A non-increasing timestamp or a change of
    frame size ends every track (the count of polyps seen is kept).

    Args:
        settings: Times in seconds, matching thresholds, arrows.

    Example:
        >>> import numpy as np
        >>> from streamseg.detections import detect
        >>> tracker = Tracker(TrackingSettings(min_on_s=0.0))
        >>> m = np.zeros((40, 40), bool); m[5:15, 5:15] = True
        >>> tracker(0.0, detect(m)).track_ids
        (1,)
        >>> tracker(0.04, detect(np.zeros((40, 40), bool))).track_ids  # kept
        (1,)
    """

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self.polyps_seen = 0
        self._tracks: list[_Track] = []
        self._departed: list[tuple[_Track, tuple[int, int]]] = []
        self._next_key = 0
        self._last: tuple[float, tuple[int, int]] | None = None

    def reset(self) -> None:
        """End every track (the count of polyps seen stays)."""
        self._tracks = []
        self._departed = []
        self._last = None

    def __call__(self, timestamp_s: float, regions: FrameRegions) -> TrackFrame:
        """Update the tracks with one frame's regions.

        Args:
            timestamp_s: The frame's timestamp (seconds; only differences
                matter).
            regions: The frame's regions (:func:`streamseg.detections.detect`).

        Returns:
            The tracks shown on this frame.
        """
        s = self.settings
        hw = regions.hw
        if self._last is not None and (
            timestamp_s <= self._last[0] or hw != self._last[1]
        ):
            self.reset()
        self._last = (timestamp_s, hw)
        for track in self._tracks:
            if timestamp_s - track.last_detected_s > s.max_gap_s + 1e-9:
                if track.track_id is not None:
                    self._departed.append((track, hw))
        self._tracks = [
            t
            for t in self._tracks
            if timestamp_s - t.last_detected_s <= s.max_gap_s + 1e-9
        ]
        detections = regions.detections
        diagonal = math.hypot(*hw)
        frame_px = hw[0] * hw[1]
        # Confirmed tracks first, so a polyp keeps its id when a tentative
        # track sits on the same spot.
        order = sorted(
            range(len(self._tracks)),
            key=lambda i: (
                self._tracks[i].track_id is None,
                -self._tracks[i].last_detected_s,
            ),
        )
        ordered = [self._tracks[i] for i in order]
        pairs = associate(
            [t.box_xywh for t in ordered],
            [d.box_xywh for d in detections],
            match_iou=s.match_iou,
            max_distance_px=s.max_center_distance * diagonal,
            allowed=lambda i, j: self._alike(ordered[i], detections[j], frame_px),
        )
        matched: dict[int, int] = {}  # detection position -> track key
        by_key = {t.key: t for t in ordered}
        previous: dict[int, BoxXYWH] = {}
        for ti, di in pairs:
            track, found = ordered[ti], detections[di]
            previous[track.key] = track.extent_xywh or track.box_xywh
            self._update(track, found, timestamp_s, frame_px)
            matched[di] = track.key
        continued = dict(matched)  # regions that continue an existing track
        fragments: dict[int, int] = {}
        for di, found in enumerate(detections):
            if di in matched:
                continue
            owner = next(
                (
                    key
                    for dj, key in continued.items()
                    if (
                        box_iou(detections[dj].box_xywh, found.box_xywh) > 0
                        or box_iou(previous[key], found.box_xywh) > 0
                    )
                    and self._alike(by_key[key], found, frame_px)
                ),
                None,
            )
            if owner is not None:
                fragments[di] = owner
                extent = by_key[owner].extent_xywh or found.box_xywh
                by_key[owner].extent_xywh = _union(extent, found.box_xywh)
                continue
            track = _Track(
                key=self._next_key,
                box_xywh=found.box_xywh,
                first_detected_s=timestamp_s,
                last_detected_s=timestamp_s,
                area_fraction=found.area_px / frame_px,
                centers=[(timestamp_s, *found.center_xy)],
                color_lab=found.color_lab,
            )
            self._next_key += 1
            self._tracks.append(track)
            matched[di] = track.key
        for track in self._tracks:
            if (
                track.track_id is None
                and track.last_detected_s == timestamp_s
                and timestamp_s - track.first_detected_s >= s.min_on_s - 1e-9
            ):
                self.polyps_seen += 1
                track.track_id = self.polyps_seen
                track.first_shown_s = timestamp_s
        position = {key: di for di, key in matched.items()}
        views = []
        for track in self._tracks:
            if track.track_id is None or track.first_shown_s is None:
                continue
            if timestamp_s - track.last_detected_s > s.keep_s + 1e-9:
                continue
            views.append(
                TrackView(
                    track_id=track.track_id,
                    box_xywh=track.extent_xywh or track.box_xywh,
                    detected=track.last_detected_s == timestamp_s,
                    first_shown_s=track.first_shown_s,
                    on_screen_s=timestamp_s - track.first_shown_s,
                    area_fraction=track.area_fraction,
                    detection=position.get(track.key)
                    if track.last_detected_s == timestamp_s
                    else None,
                )
            )
        views.sort(key=lambda v: v.track_id)
        shown_keys = {t.key for t in self._tracks if t.track_id is not None}
        extra = tuple(sorted(di for di, key in fragments.items() if key in shown_keys))
        return TrackFrame(
            timestamp_s=timestamp_s,
            hw=hw,
            tracks=tuple(views),
            polyps_seen=self.polyps_seen,
            departures=self._departures(timestamp_s, hw),
            extra_detections=extra,
        )

    def _alike(self, track: _Track, found: Detection, frame_px: int) -> bool:
        """Whether a region may be the same polyp as a track (colour and size)."""
        s = self.settings
        if color_change(track.color_lab, found.color_lab) > s.max_color_change:
            return False
        before = track.area_fraction * frame_px
        ratio = max(before, found.area_px) / max(min(before, found.area_px), 1.0)
        return ratio <= s.max_area_ratio

    def _update(
        self, track: _Track, found: Detection, timestamp_s: float, frame_px: int
    ) -> None:
        track.box_xywh = found.box_xywh
        track.extent_xywh = found.box_xywh
        track.last_detected_s = timestamp_s
        track.area_fraction = found.area_px / frame_px
        if found.color_lab is not None:
            track.color_lab = found.color_lab
        track.centers.append((timestamp_s, *found.center_xy))
        del track.centers[:-8]

    def _departures(
        self, timestamp_s: float, hw: tuple[int, int]
    ) -> tuple[Departure, ...]:
        """Shown tracks that left the view within ``arrow_window_s``."""
        s = self.settings
        if not s.arrows:
            self._departed = []
            return ()
        window = s.arrow_window_s
        self._departed = [
            (t, thw)
            for t, thw in self._departed
            if timestamp_s - t.last_detected_s <= window + 1e-9 and thw == hw
        ]
        out = []
        candidates = [(t, hw) for t in self._tracks] + self._departed
        for track, _ in candidates:
            since_s = timestamp_s - track.last_detected_s
            if track.track_id is None or since_s <= s.keep_s + 1e-9 or since_s > window:
                continue
            left = self._left_view(track, hw)
            if left is None:
                continue
            point, direction = left
            out.append(Departure(track.track_id, point, direction, since_s))
        out.sort(key=lambda d: d.track_id)
        return tuple(out)

    def _left_view(
        self, track: _Track, hw: tuple[int, int]
    ) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """Exit point and direction if the track left through an edge, else None."""
        height, width = hw
        s = self.settings
        t1, x1, y1 = track.centers[-1]
        vx = vy = 0.0
        older = [c for c in track.centers if t1 - c[0] >= 0.1]
        if older:
            t0, x0, y0 = older[-1]
            vx, vy = (x1 - x0) / (t1 - t0), (y1 - y0) / (t1 - t0)
        bx, by, bw, bh = track.box_xywh
        mx, my = s.edge_margin * width, s.edge_margin * height
        near_edge = (
            bx <= mx or by <= my or bx + bw >= width - mx or by + bh >= height - my
        )
        horizon = max(s.keep_s, 0.2)
        ex, ey = x1 + vx * horizon, y1 + vy * horizon
        leaving = not (0 <= ex < width and 0 <= ey < height)
        if not (near_edge or leaving):
            return None
        return exit_point(hw, (x1, y1), (vx, vy) if leaving else (0.0, 0.0))
