"""Polyp tracks of a run -> ``tracks.json`` -> a self-contained HTML procedure report.

:class:`TrackLog` is a sink: it follows the tracks shown on each frame
(:attr:`~streamseg.findings.Findings.tracks`) and, when the run ends, writes
``tracks.json`` and one small JPEG per polyp (the frame where it looked
largest, cropped around it) into ``<name>_thumbs/`` beside it.

``tracks.json`` (``format: streamseg-tracks/1``)::

    {"format": ..., "source": ..., "created": ISO time,
     "duration_s": seconds of video seen, "frames": N,
     "model": {"path", "sha256", "architecture", "encoder_name", ...},
     "settings": {"tracking": {...}, "smoothing": {...}},
     "tracks": [{"track_id", "first_seen_s", "last_seen_s", "on_screen_s",
                 "detected_frames", "max_area_fraction", "max_box_xywh",
                 "best_timestamp_s", "best_frame_index", "thumbnail",
                 "intervals_s": [[start, end], ...]}, ...]}

Times are the frames' timestamps relative to the first frame of the run.
``on_screen_s`` sums the intervals in which the track was shown (a frame
lasts one frame interval).

:func:`write_report` (``streamseg report``) reads ``tracks.json`` (and,
optionally, the per-frame JSONL for the presence strip) and writes one HTML
file: a timeline of each polyp's presence, one card per polyp with its
thumbnail (embedded as a data URI), times and size, and the run's settings
and model hash. Nothing is loaded from elsewhere, so the file can be mailed
or archived as it is.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamseg.findings import Findings
from streamseg.sinks import OutputError, make_output_folder

log = logging.getLogger(__name__)

TRACKS_FORMAT = "streamseg-tracks/1"
THUMBNAIL_LONG_SIDE_PX = 240
THUMBNAIL_MARGIN = 0.3  # of the box size, on each side
# Tracks detected for less get no card in the report (a speck, or a fragment of
# a polyp in fast motion); they stay on the timeline and in a list.
MIN_DETECTED_S = 0.2


class ReportError(OutputError):
    """The tracks or events file cannot be read, or the report cannot be written."""


@dataclass
class _TrackRecord:
    track_id: int
    first_seen_s: float
    last_seen_s: float
    detected_frames: int = 0
    max_area_fraction: float = 0.0
    max_box_xywh: tuple[int, int, int, int] = (0, 0, 0, 0)
    best_timestamp_s: float = 0.0
    best_frame_index: int = 0
    thumbnail_jpeg: bytes = b""
    intervals: list[list[float]] = field(default_factory=list)


class TrackLog:
    """A sink that collects the polyp tracks of a run and writes ``tracks.json``.

    Args:
        path: The ``.json`` file; thumbnails go into ``<stem>_thumbs/``.
        run_info: What the report shows about the run: ``source``, ``model``
            (path, sha256, architecture ...) and ``settings``.
    """

    name = "tracks"
    wants_image = False  # thumbnails come from the frame's own pixels

    def __init__(
        self, path: str | Path, run_info: dict[str, Any] | None = None
    ) -> None:
        self.path = Path(path)
        make_output_folder(self.path.parent, "tracks")
        self.run_info = dict(run_info or {})
        self._tracks: dict[int, _TrackRecord] = {}
        self._origin_s: float | None = None
        self._last_s: float | None = None
        self._period_s: float | None = None
        self._frames = 0
        self._shown_before: set[int] = set()
        self._closed = False

    def write(self, findings: Findings, image: np.ndarray | None) -> None:
        frame = findings.frame
        if self._origin_s is None:
            self._origin_s = frame.timestamp_s
        t = frame.timestamp_s - self._origin_s
        if self._last_s is not None and t > self._last_s:
            step = t - self._last_s
            self._period_s = (
                step if self._period_s is None else min(self._period_s, step)
            )
        self._last_s = t
        self._frames += 1
        tracks = findings.tracks
        shown = set() if tracks is None else set(tracks.track_ids)
        if tracks is None:
            self._shown_before = shown
            return
        for view in tracks.tracks:
            record = self._tracks.get(view.track_id)
            if record is None:
                record = _TrackRecord(view.track_id, t, t)
                self._tracks[view.track_id] = record
            if view.track_id in self._shown_before and record.intervals:
                record.intervals[-1][1] = t
            else:
                record.intervals.append([t, t])
            if not view.detected:
                continue
            record.last_seen_s = t
            record.detected_frames += 1
            if view.area_fraction > record.max_area_fraction:
                record.max_area_fraction = view.area_fraction
                record.max_box_xywh = view.box_xywh
                record.best_timestamp_s = t
                record.best_frame_index = frame.index
                record.thumbnail_jpeg = thumbnail(frame.pixels, view.box_xywh)
        self._shown_before = shown

    def close(self) -> None:
        """Write ``tracks.json`` and the thumbnails (also after an interrupt)."""
        if self._closed:
            return
        self._closed = True
        period = self._period_s or 0.0
        folder = self.path.with_name(self.path.stem + "_thumbs")
        rows = []
        try:
            if self._tracks:
                make_output_folder(folder, "thumbnail")
            for record in sorted(self._tracks.values(), key=lambda r: r.track_id):
                name = None
                if record.thumbnail_jpeg:
                    thumb = folder / f"polyp_{record.track_id:03d}.jpg"
                    thumb.write_bytes(record.thumbnail_jpeg)
                    name = thumb.relative_to(self.path.parent).as_posix()
                intervals = [[a, b + period] for a, b in record.intervals]
                rows.append(
                    {
                        "track_id": record.track_id,
                        "first_seen_s": round(record.first_seen_s, 4),
                        "last_seen_s": round(record.last_seen_s, 4),
                        "on_screen_s": round(sum(b - a for a, b in intervals), 4),
                        "detected_s": round(record.detected_frames * period, 4),
                        "detected_frames": record.detected_frames,
                        "max_area_fraction": round(record.max_area_fraction, 5),
                        "max_box_xywh": list(record.max_box_xywh),
                        "best_timestamp_s": round(record.best_timestamp_s, 4),
                        "best_frame_index": record.best_frame_index,
                        "thumbnail": name,
                        "intervals_s": [
                            [round(a, 4), round(b, 4)] for a, b in intervals
                        ],
                    }
                )
            document = {
                "format": TRACKS_FORMAT,
                "created": datetime.datetime.now()
                .astimezone()
                .isoformat(timespec="seconds"),
                "frames": self._frames,
                "duration_s": round((self._last_s or 0.0) + period, 4),
                **self.run_info,
                "tracks": rows,
            }
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(
                json.dumps(document, indent=2) + "\n", encoding="utf-8"
            )
            os.replace(temporary, self.path)
        except OSError as error:
            raise OutputError(
                f"{self.path}: cannot write the tracks ({error.strerror}); "
                "check free space and permissions"
            ) from error


def thumbnail(pixels: np.ndarray, box_xywh: tuple[int, int, int, int]) -> bytes:
    """A JPEG of the frame around a box (30 % margin), long side at most 240 px.

    The box is outlined so the card shows what was found.

    Args:
        pixels: (H, W, 3) uint8 RGB frame.
        box_xywh: The polyp's box in pixels.
    """
    import cv2

    height, width = pixels.shape[:2]
    x, y, w, h = box_xywh
    mx, my = int(THUMBNAIL_MARGIN * w) + 4, int(THUMBNAIL_MARGIN * h) + 4
    x0, y0 = max(x - mx, 0), max(y - my, 0)
    x1, y1 = min(x + w + mx, width), min(y + h + my, height)
    crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
    scale = min(1.0, THUMBNAIL_LONG_SIDE_PX / max(crop.shape[:2]))
    if scale < 1.0:
        size = (
            max(1, round(crop.shape[1] * scale)),
            max(1, round(crop.shape[0] * scale)),
        )
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    bx, by = round((x - x0) * scale), round((y - y0) * scale)
    cv2.rectangle(
        bgr,
        (bx, by),
        (bx + max(round(w * scale) - 1, 1), by + max(round(h * scale) - 1, 1)),
        (0, 220, 255),
        1,
        cv2.LINE_AA,
    )
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise OutputError("cannot encode a track thumbnail as JPEG")
    return data.tobytes()


# --- reading ----------------------------------------------------------------------


def load_tracks(path: Path) -> dict[str, Any]:
    """Read a ``tracks.json`` written by :class:`TrackLog`.

    Raises:
        ReportError: Missing, unreadable or not a tracks file.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(
            f"{path}: no such file; write one with streamseg run VIDEO --tracks {path}"
        ) from None
    except (OSError, ValueError) as error:
        raise ReportError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict) or document.get("format") != TRACKS_FORMAT:
        raise ReportError(
            f"{path}: not a streamseg tracks file (expected format {TRACKS_FORMAT}); "
            "write one with streamseg run VIDEO --tracks FILE"
        )
    return document


def load_presence(path: Path) -> list[tuple[float, bool]]:
    """(timestamp_s, polyp_present) per frame of a per-frame JSONL log.

    Raises:
        ReportError: Missing or malformed file (the line is named).
    """
    rows = []
    try:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    rows.append(
                        (float(item["timestamp_s"]), bool(item["polyp_present"]))
                    )
                except (ValueError, KeyError, TypeError):
                    raise ReportError(
                        f"{path}:{number}: not a streamseg event line "
                        "(needs timestamp_s and polyp_present)"
                    ) from None
    except FileNotFoundError:
        raise ReportError(
            f"{path}: no such file; write one with streamseg run VIDEO --events {path}"
        ) from None
    return rows


# --- the HTML report -------------------------------------------------------------


def write_report(
    tracks_path: Path,
    out_path: Path,
    *,
    events_path: Path | None = None,
    min_detected_s: float = MIN_DETECTED_S,
) -> Path:
    """Write the self-contained HTML report of one run.

    Args:
        tracks_path: ``tracks.json`` of the run (thumbnails beside it).
        out_path: The ``.html`` file to write.
        events_path: The run's per-frame JSONL (optional): adds the strip of
            frames with any detection to the timeline.
        min_detected_s: Tracks detected for less than this get no card: they
            are listed as brief detections (still on the timeline).

    Returns:
        ``out_path``.

    Raises:
        ReportError: An input cannot be read or the report cannot be written.
    """
    document = load_tracks(tracks_path)
    presence = load_presence(events_path) if events_path is not None else None
    thumbnails = {}
    for track in document.get("tracks", []):
        name = track.get("thumbnail")
        if not name:
            continue
        path = Path(tracks_path).parent / name
        try:
            thumbnails[track["track_id"]] = base64.b64encode(path.read_bytes()).decode()
        except OSError:
            log.warning("%s: thumbnail missing; the card has no picture", path)
    page = render_report(document, thumbnails, presence, min_detected_s=min_detected_s)
    try:
        make_output_folder(Path(out_path).parent, "report")
        Path(out_path).write_text(page, encoding="utf-8")
    except OSError as error:
        raise ReportError(
            f"{out_path}: cannot write the report ({error.strerror}); "
            "pick a writable path"
        ) from None
    return Path(out_path)


def _clock(seconds: float) -> str:
    """``m:ss.s`` (``h:mm:ss`` past an hour).

    Example:
        >>> _clock(75.25), _clock(3725.0)
        ('1:15.2', '1:02:05')
    """
    if seconds >= 3600:
        hours, rest = divmod(round(seconds), 3600)
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def render_report(
    document: dict[str, Any],
    thumbnails: dict[int, str],
    presence: list[tuple[float, bool]] | None = None,
    *,
    min_detected_s: float = MIN_DETECTED_S,
) -> str:
    """The report page as one HTML string (inline CSS and SVG; no scripts).

    Args:
        document: A tracks file (:func:`load_tracks`).
        thumbnails: Base64 JPEG per track id.
        presence: (timestamp_s, polyp_present) per frame, or None.
        min_detected_s: Tracks detected for less than this are brief
            detections: a row on the timeline and a line in a list, no card.
    """
    esc = html.escape
    tracks = document.get("tracks", [])
    duration = float(document.get("duration_s") or 0.0)
    for track in tracks:
        for _, end in track.get("intervals_s", []):
            duration = max(duration, float(end))
    duration = max(duration, 1e-6)
    model = document.get("model") or {}
    source = document.get("source") or "?"
    title = f"Polyp report: {Path(str(source)).name}"
    polyps = [t for t in tracks if _detected_s(t) >= min_detected_s]
    brief = [t for t in tracks if _detected_s(t) < min_detected_s]
    count = len(polyps)
    summary = (
        f"{count} polyp{'s' if count != 1 else ''} in {_clock(duration)} of video"
        f" ({document.get('frames', 0)} frames)"
        + (
            f"; {len(brief)} brief detection{'s' if len(brief) != 1 else ''} "
            f"(detected for under {min_detected_s:g} s)"
            if brief
            else ""
        )
    )

    # Timeline: one row per track, x = time.
    width, label_w, row_h = 880, 90, 22
    plot_w = width - label_w - 30  # room for the last tick's label
    rows = [("detected", None)] if presence else []
    rows += [(f"polyp #{t['track_id']}", t) for t in tracks]
    height = 30 + row_h * max(len(rows), 1)
    svg = [
        f'<svg id="timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="timeline of polyp presence">'
    ]

    def x_of(t: float) -> float:
        return label_w + plot_w * min(max(t / duration, 0.0), 1.0)

    step = _tick_step(duration)
    tick = 0.0
    while tick <= duration + 1e-9:
        x = x_of(tick)
        svg.append(
            f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height}" class="grid"/>'
            f'<text x="{x:.1f}" y="12" class="tick">{esc(_clock(tick))}</text>'
        )
        tick += step
    for number, (label, track) in enumerate(rows):
        y = 22 + row_h * number
        svg.append(f'<text x="4" y="{y + 14}" class="label">{esc(label)}</text>')
        if track is None and presence:
            period = _period(presence)
            for start, end in _runs(presence, period):
                svg.append(
                    f'<rect x="{x_of(start):.1f}" y="{y + 3}" '
                    f'width="{max(x_of(end) - x_of(start), 1):.1f}" '
                    f'height="{row_h - 8}" '
                    'class="detected"/>'
                )
            continue
        assert track is not None
        for start, end in track.get("intervals_s", []):
            svg.append(
                f'<rect x="{x_of(start):.1f}" y="{y + 2}" '
                f'width="{max(x_of(end) - x_of(start), 1.5):.1f}" height="{row_h - 6}" '
                f'class="{"track" if track in polyps else "brief"}" '
                f'data-track="{int(track["track_id"])}">'
                f"<title>polyp #{int(track['track_id'])}: {esc(_clock(start))} - "
                f"{esc(_clock(end))}</title></rect>"
            )
    svg.append("</svg>")

    cards = []
    for track in polyps:
        track_id = int(track["track_id"])
        picture = thumbnails.get(track_id)
        image = (
            f'<img src="data:image/jpeg;base64,{picture}" alt="polyp #{track_id}">'
            if picture
            else '<div class="nopic">no picture</div>'
        )
        box = track.get("max_box_xywh") or [0, 0, 0, 0]
        cards.append(
            f'<article class="card" data-track="{track_id}">{image}'
            f"<h3>Polyp #{track_id}</h3><dl>"
            f"<dt>first seen</dt><dd>{esc(_clock(float(track['first_seen_s'])))}</dd>"
            f"<dt>last seen</dt><dd>{esc(_clock(float(track['last_seen_s'])))}</dd>"
            f"<dt>on screen</dt><dd>{float(track['on_screen_s']):.1f} s</dd>"
            "<dt>largest</dt>"
            f"<dd>{100 * float(track['max_area_fraction']):.1f} % of the "
            f"frame ({int(box[2])}&times;{int(box[3])} px)</dd>"
            "<dt>picture at</dt>"
            f"<dd>{esc(_clock(float(track['best_timestamp_s'])))}</dd>"
            "</dl></article>"
        )

    brief_html = ""
    if brief:
        items = "".join(
            f"<li>#{int(t['track_id'])}: at {esc(_clock(float(t['first_seen_s'])))}, "
            f"detected for {_detected_s(t):.2f} s, "
            f"{100 * float(t['max_area_fraction']):.1f} % of the frame</li>"
            for t in brief
        )
        brief_html = (
            f'<h3>Brief detections</h3><ul id="brief">{items}</ul>'
            f'<p class="note">Shown for a moment but detected for under '
            f"{min_detected_s:g} s (a speck, or a polyp's fragment in fast motion); "
            "they count in the live view but get no card here.</p>"
        )
    settings_rows = [
        ("source", str(source)),
        ("created", str(document.get("created", "?"))),
        ("model file", str(model.get("path", "?"))),
        ("model sha256", str(model.get("sha256", "?"))),
        (
            "model",
            f"{model.get('architecture', '?')} / {model.get('encoder_name', '?')}, "
            f"input {model.get('input_hw', '?')}, "
            f"threshold {model.get('threshold', '?')}",
        ),
    ]
    for section, values in (document.get("settings") or {}).items():
        if isinstance(values, dict):
            text = ", ".join(f"{k}={_plain(v)}" for k, v in values.items())
        else:
            text = str(values)
        settings_rows.append((f"{section} settings", text))
    settings_html = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in settings_rows
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
  body {{ font: 14px/1.4 system-ui, sans-serif; color: #222; margin: 24px auto;
          max-width: 940px; padding: 0 12px; }}
  h1 {{ font-size: 22px; margin: 0 0 4px; }}
  h2 {{ font-size: 17px; margin: 24px 0 8px; border-bottom: 1px solid #ddd; }}
  #summary {{ color: #555; margin: 0; }}
  #timeline .grid {{ stroke: #e4e4e4; }}
  #timeline .tick {{ font-size: 10px; fill: #777; text-anchor: middle; }}
  #timeline .label {{ font-size: 12px; fill: #333; }}
  #timeline .track {{ fill: #2b7bd6; }}
  #timeline .detected {{ fill: #9a9a9a; }}
  #timeline .brief {{ fill: #b9cbe0; }}
  #brief {{ font-size: 13px; margin: 4px 0; }}
  .note {{ color: #777; font-size: 12px; margin: 2px 0; }}
  #cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
  .card {{ width: 210px; border: 1px solid #ccc; border-radius: 6px; padding: 8px;
           break-inside: avoid; }}
  .card img, .card .nopic {{ width: 100%; height: 150px; object-fit: contain;
           background: #111; border-radius: 4px; display: block; }}
  .card .nopic {{ color: #aaa; text-align: center; line-height: 150px; }}
  .card h3 {{ margin: 6px 0 4px; font-size: 15px; }}
  .card dl {{ display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; margin: 0;
              font-size: 12px; }}
  .card dt {{ color: #777; }} .card dd {{ margin: 0; }}
  #settings th {{ text-align: left; color: #555; padding: 2px 10px 2px 0;
                  vertical-align: top; white-space: nowrap; }}
  #settings td {{ font-family: ui-monospace, monospace; font-size: 12px;
                  word-break: break-all; }}
  footer {{ margin-top: 24px; color: #888; font-size: 12px; }}
</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p id="summary">{esc(summary)}</p>
<h2>Timeline</h2>
{"".join(svg)}
<h2>Polyps</h2>
<section id="cards">{"".join(cards) or "<p>No polyp was shown.</p>"}</section>
{brief_html}
<h2>Run</h2>
<table id="settings">{settings_html}</table>
<footer>streamseg procedure report. Research software, not a medical device.</footer>
</body>
</html>
"""


def _detected_s(track: dict[str, Any]) -> float:
    """Seconds a track was detected (older files: its time on screen)."""
    value = track.get("detected_s")
    return float(track.get("on_screen_s", 0.0) if value is None else value)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _tick_step(duration_s: float) -> float:
    """A round tick spacing giving at most about 10 ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration_s / step <= 10:
            return float(step)
    return float(math.ceil(duration_s / 36000) * 3600)


def _period(presence: list[tuple[float, bool]]) -> float:
    times = [t for t, _ in presence]
    if len(times) < 2:
        return 0.0
    return float(np.median(np.diff(times)))


def _runs(
    presence: list[tuple[float, bool]], period_s: float
) -> list[tuple[float, float]]:
    """(start, end) in seconds from the first frame, of runs of present frames."""
    if not presence:
        return []
    origin = presence[0][0]
    runs: list[tuple[float, float]] = []
    start = None
    last = origin
    for t, present in presence:
        if present and start is None:
            start = t
        elif not present and start is not None:
            runs.append((start - origin, t - origin))
            start = None
        last = t
    if start is not None:
        runs.append((start - origin, last - origin + period_s))
    return runs
