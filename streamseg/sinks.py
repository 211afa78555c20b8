"""Where annotated frames go: an MP4 recording, a JSONL event log, mask PNGs, a window.

Every sink has one verb, ``write(findings, image)`` (the frame's
:class:`~streamseg.findings.Findings` and the annotated image), and ``close()``, which
finalizes its output (the app closes sinks in a ``finally``, so an
interrupted run still leaves a playable MP4 and complete JSONL lines). Even
a killed process leaves playable recordings (fragmented MP4 while recording,
:mod:`streamseg.mp4`) and whole JSONL lines (:mod:`streamseg.files`).

* :class:`VideoRecorder`: H.264 (libx264, yuv420p) through PyAV on a
  background thread behind a BLOCK queue (nothing is lost). Presentation
  times are the frames' own timestamps, so the source's timing, variable
  frame rate and drops included, is kept. Written as fragmented MP4 (plays
  after a kill), remuxed into a regular MP4 on a clean stop.
* :class:`EventLog`: one JSON line per frame (:class:`~streamseg.events.FrameEvent`).
* :class:`MaskWriter`: ``<index>.png`` per frame, 0/255.
* :class:`Display`: an OpenCV window, where the installed OpenCV has a GUI.
* :class:`~streamseg.web.WebView`: the browser view (MJPEG over HTTP), with
  record and snapshot buttons (``view: web``).
* :class:`~streamseg.clips.ClipRecorder`: event clips with pre-roll
  (``clips.folder``), also the browser view's recordings.

Live views also have ``show_no_signal(image)``: the app calls it while a live
source delivers nothing (see :meth:`Sinks.show_no_signal`).
* :class:`FrameList`: keeps everything in memory (tests, notebooks).

:func:`streamseg.outputs.open_outputs` creates the sinks a config asks for;
this module imports neither the clip recorder nor the browser view.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from streamseg.background import to_background
from streamseg.events import StreamClock, describe
from streamseg.files import LineWriter, write_atomic
from streamseg.findings import Findings
from streamseg.frames import Prediction
from streamseg.mp4 import (
    KEYFRAME_INTERVAL_S,
    count_frames,
    finalize,
    muxer_options,
    trim_incomplete_fragment,
)

log = logging.getLogger(__name__)

# Presentation-time resolution of recordings: 90 kHz, the MPEG clock; any
# source timestamp is kept to within 6 microseconds.
VIDEO_TIME_BASE = Fraction(1, 90_000)


class OutputError(Exception):
    """An output cannot be written (path, permissions, no display); names the fix."""


@dataclass(frozen=True)
class OutputSettings:
    """The ``output`` section of the stream config.

    Attributes:
        video: Annotated recording (``.mp4``; ``.mkv``/``.mov`` also work).
        events: Per-frame JSON lines.
        tracks: Per-video polyp tracks (``tracks.json``, thumbnails beside
            it; needs ``tracking.enabled``); ``streamseg report`` reads it.
        masks: Folder for one mask PNG per frame.
        view: ``window`` shows the annotated video live (needs an OpenCV with
            a GUI); ``web`` serves it to browsers at ``bind``; ``none`` shows
            nothing.
        bind: ``host:port`` of the browser view. Loopback (127.0.0.1) by
            default; any other address exposes the view (and its record
            button) to the network and is logged as a warning. Port 0 picks
            a free port.
        recordings: Folder for the browser view's recordings and snapshots
            when no ``clips.folder`` is set.
        jpeg_quality: JPEG quality (1-100) of the browser view and of the
            clips' pre-roll buffer.
        video_crf: x264 quality (0 lossless .. 51 worst; 18-23 is visually good).
        video_preset: x264 speed/size trade-off (ultrafast .. veryslow).
            ``ultrafast`` by default: on a CPU the encoder shares the cores
            with inference, and it needs a third of ``veryfast``'s CPU time
            for files about 2.5x larger (docs/benchmarks.md).
        video_queue: Frames that may wait for the encoder before the
            pipeline waits for it.
    """

    video: Path | None = None
    events: Path | None = None
    tracks: Path | None = None
    masks: Path | None = None
    view: Literal["none", "window", "web"] = "none"
    bind: str = "127.0.0.1:8080"
    recordings: Path = Path("recordings")
    jpeg_quality: int = 85
    video_crf: int = 20
    video_preset: str = "ultrafast"
    video_queue: int = 16

    def __post_init__(self) -> None:
        if not 0 <= self.video_crf <= 51:
            raise ValueError(f"video_crf: expected 0-51, got {self.video_crf}")
        presets = (
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
        )
        if self.video_preset not in presets:
            raise ValueError(
                f"video_preset: expected one of {', '.join(presets)}, "
                f"got {self.video_preset!r}"
            )
        if self.video_queue < 1:
            raise ValueError(f"video_queue: expected >= 1, got {self.video_queue}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: expected 1-100, got {self.jpeg_quality}")
        parse_bind(self.bind)


class Sink(Protocol):
    """Anything that takes annotated frames.

    Attributes:
        name: Shown in the timing summary.
        wants_image: Whether ``write`` reads the annotated image. Where no
            sink of a run does (an event log, masks, tracks), the app draws
            no overlay and passes ``None``; a sink without the attribute
            counts as wanting it.
    """

    name: str
    wants_image: bool

    def write(self, findings: Findings, image: np.ndarray | None) -> None:
        """Take one frame: its findings and ``image`` ((H, W, 3) uint8 RGB).

        ``image`` is ``None`` only in runs where no sink wants it.
        """

    def close(self) -> None:
        """Finalize the output; safe to call twice."""


class VideoRecorder:
    """Encode annotated frames to H.264 on a background thread.

    The file is created at the first frame (its size sets the video size;
    odd sizes are padded by one black row/column, as yuv420p needs even
    sizes; later frames of another size are resized to it). Each frame's
    presentation time is its ``timestamp_s`` minus the first one's, on a
    90 kHz clock, so variable frame rate and dropped frames are kept.

    Crash safety (:mod:`streamseg.mp4`): the file is a fragmented MP4 while
    it is written (fragments of at most 0.5 s reach the file as they
    complete; a keyframe at least every second), so a killed process leaves
    a file that plays up to about half a second before the kill; ``close``
    remuxes it into a regular MP4 (atomic rename). A recording deleted while
    it is written (its folder removed) is an :class:`OutputError` within a
    second.

    Args:
        path: Output file; its folder is created.
        nominal_fps: Declared frame rate for the container's metadata
            (players use the timestamps); ``None``: 30.
        crf: x264 constant rate factor.
        preset: x264 preset.
        queue_size: Frames that may wait for the encoder.
    """

    name = "encode enqueue"
    wants_image = True

    def __init__(
        self,
        path: str | Path,
        *,
        nominal_fps: float | None = None,
        crf: int = 20,
        preset: str = "ultrafast",
        queue_size: int = 16,
    ) -> None:
        self.path = Path(path)
        self.nominal_fps = nominal_fps or 30.0
        self.crf = crf
        self.preset = preset
        self.queue_size = queue_size
        self.frames_written = 0
        self.frames_encoded = 0
        _prepare_parent(self.path)
        check_video_path(self.path)
        self._inbox = None
        self._size_wh: tuple[int, int] | None = None
        self._first_timestamp_s = 0.0
        self._last_pts = -1
        self._warned_resize = False

    def write(self, findings: Findings, image: np.ndarray) -> None:
        self.write_image(image, findings.frame.timestamp_s)

    def write_image(self, image: np.ndarray | bytes, timestamp_s: float) -> None:
        """Encode one image shown at ``timestamp_s``.

        Args:
            image: (H, W, 3) uint8 RGB array, or JPEG bytes (decoded on the
                encoder thread: a queue of JPEG frames costs little memory).
            timestamp_s: The frame's timestamp.
        """
        if self._inbox is None:
            self._start(image if isinstance(image, np.ndarray) else _decode_jpeg(image))
            self._first_timestamp_s = timestamp_s
        pts = round((timestamp_s - self._first_timestamp_s) / VIDEO_TIME_BASE)
        if (
            pts <= self._last_pts
        ):  # equal or backward timestamps: keep pts strictly increasing
            pts = self._last_pts + 1
        self._last_pts = pts
        self._inbox.put((image, pts))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, close the file and rewrite it as a regular MP4."""
        if self._inbox is not None:
            inbox, self._inbox = self._inbox, None
            inbox.close()
            log.info("wrote %s (%d frames)", self.path, self.frames_encoded)

    def _start(self, image: np.ndarray) -> None:
        import av

        height, width = image.shape[:2]
        self._size_wh = (width + width % 2, height + height % 2)
        try:
            container = av.open(
                str(self.path), mode="w", options=muxer_options(self.path)
            )
        except (av.FFmpegError, OSError) as error:
            raise OutputError(
                f"{self.path}: cannot create the video ({error}); pick a writable "
                "path ending in .mp4, .mkv or .mov"
            ) from error
        rate = Fraction(self.nominal_fps).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = self._size_wh
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = VIDEO_TIME_BASE
        stream.time_base = VIDEO_TIME_BASE
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        keyframe_ticks = round(KEYFRAME_INTERVAL_S / VIDEO_TIME_BASE)
        file_id = _file_id(self.path)

        def encode(items: Iterator[tuple[np.ndarray | bytes, int]]) -> None:
            last_key_pts: int | None = None
            checked_s = time.monotonic()
            try:
                for image, pts in items:
                    rgb = self._fit(
                        image if isinstance(image, np.ndarray) else _decode_jpeg(image)
                    )
                    frame = yuv420_frame(rgb)
                    frame.pts = pts
                    frame.time_base = VIDEO_TIME_BASE
                    if last_key_pts is None or pts - last_key_pts >= keyframe_ticks:
                        # By time, not by frame count: variable frame rate and
                        # drops cannot stretch the gap (crash safety, seeking).
                        frame.pict_type = av.video.frame.PictureType.I
                        last_key_pts = pts
                    container.mux(stream.encode(frame))
                    self.frames_encoded += 1
                    if time.monotonic() - checked_s >= 1.0:
                        checked_s = time.monotonic()
                        self._check_still_there(file_id)
                container.mux(
                    stream.encode(None)
                )  # flush the frames the encoder holds back
                container.close()  # the last fragment: the file is complete
                self._check_still_there(file_id)
            except OutputError:
                _close_quietly(container)
                raise
            except OSError as error:  # av.FFmpegError is an OSError too (ENOSPC, EIO)
                _close_quietly(container)
                raise OutputError(
                    f"{self.path}: writing the video failed after "
                    f"{self.frames_encoded} frames ({_strerror(error)}); "
                    f"{_kept(self.path)}; free disk space or pick another output path"
                ) from error
            except BaseException:
                _close_quietly(container)
                raise
            finalize(self.path)  # a regular MP4 again, atomically

        self._inbox = to_background(
            encode, maxsize=self.queue_size, name="streamseg-encoder"
        )

    def _check_still_there(self, file_id: tuple[int, int] | None) -> None:
        """Raise :class:`OutputError` if the file was deleted or its folder removed.

        (Writing to a deleted file succeeds on Linux: without this check the
        whole recording would vanish silently at the end.)
        """
        if file_id is not None and _file_id(self.path) != file_id:
            raise OutputError(
                f"{self.path}: the recording was deleted or its folder removed "
                f"while recording (after {self.frames_encoded} frames); keep the "
                "output folder in place, or pick another output path"
            )

    def _fit(self, image: np.ndarray) -> np.ndarray:
        import cv2

        width, height = self._size_wh
        if image.shape[:2] == (height, width):
            return image
        if abs(image.shape[0] - height) <= 1 and abs(image.shape[1] - width) <= 1:
            padded = np.zeros((height, width, 3), np.uint8)
            padded[: image.shape[0], : image.shape[1]] = image
            return padded
        if not self._warned_resize:
            log.warning(
                "%s: frame size changed to %dx%d; resizing to the recording's %dx%d",
                self.path,
                image.shape[1],
                image.shape[0],
                width,
                height,
            )
            self._warned_resize = True
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class EventLog:
    """Write one JSON line per frame, each straight to the file in one system call.

    A killed run keeps every line written before the kill, and never half a
    line (:class:`~streamseg.files.LineWriter`); a full disk is one clear
    error, with the lines before it kept.

    Each line: ``index``, ``timestamp_s`` (stream time: seconds since the
    first frame), ``polyp_present``, ``area_fraction``, ``boxes_xywh`` (source
    pixels), ``max_probability``, ``track_ids``, and for live sources
    ``wall_time`` (ISO 8601); see :class:`~streamseg.events.StreamClock`.
    """

    name = "events"
    wants_image = False

    def __init__(self, path: str | Path, clock: StreamClock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock
        _prepare_parent(self.path)
        try:
            self._lines = LineWriter(self.path)
        except OSError as error:
            raise OutputError(
                f"{self.path}: cannot write the event log ({error.strerror}); "
                "pick a writable path"
            ) from error
        self._checked_s = time.monotonic()

    def write(self, findings: Findings, image: np.ndarray | None) -> None:
        write_line(self._lines, describe(findings, self.clock).to_json(), "event log")
        if time.monotonic() - self._checked_s >= 1.0:
            self._checked_s = time.monotonic()
            check_line_file(self._lines, "event log")

    def close(self) -> None:
        self._lines.close()


def write_line(lines: LineWriter, line: str, what: str) -> None:
    """Append ``line`` to a JSONL output; a failure is one :class:`OutputError` line."""
    try:
        lines.write(line)
    except OSError as error:
        raise OutputError(
            f"{lines.path}: writing the {what} failed after {lines.lines} lines "
            f"({_strerror(error)}); the lines before it are kept; free disk space "
            "or pick another output path"
        ) from error


def check_line_file(lines: LineWriter, what: str) -> None:
    """Raise :class:`OutputError` if a JSONL output was deleted (or its folder)."""
    if not lines.exists():
        raise OutputError(
            f"{lines.path}: the {what} was deleted or its folder removed while "
            f"writing (after {lines.lines} lines); keep the output folder in place, "
            "or pick another output path"
        )


class MaskWriter:
    """Write each frame's final mask as ``<folder>/<index:06d>.png`` (0 or 255).

    Each PNG is written to a temporary file and renamed: a kill never leaves
    a cut image.
    """

    name = "masks"
    wants_image = False

    def __init__(self, folder: str | Path) -> None:
        self.folder = make_output_folder(folder, "mask")

    def write(self, findings: Findings, image: np.ndarray | None) -> None:
        import cv2

        mask = findings.mask.astype(np.uint8) * np.uint8(255)
        path = self.folder / f"{findings.frame.index:06d}.png"
        ok, png = cv2.imencode(".png", mask)
        try:  # whole or not at all, even if the process is killed
            if not ok:
                raise OSError("cannot encode the mask")
            write_atomic(path, png.tobytes(), sync=False)
        except OSError as error:
            raise OutputError(
                f"{path}: cannot write the mask image ({_strerror(error)}); check "
                "free space and permissions"
            ) from error

    def close(self) -> None:
        pass


class FrameList:
    """Keep every frame's findings and annotated image in memory (tests, notebooks)."""

    name = "frame list"
    wants_image = True

    def __init__(self) -> None:
        self.findings: list[Findings] = []
        self.images: list[np.ndarray] = []
        self.closed = False

    @property
    def predictions(self) -> list[Prediction]:
        """The final (smoothed) prediction of each frame."""
        return [findings.prediction for findings in self.findings]

    def write(self, findings: Findings, image: np.ndarray) -> None:
        self.findings.append(findings)
        self.images.append(image)

    def close(self) -> None:
        self.closed = True


class Sinks:
    """A group of sinks, closed together (all of them, even if one fails).

    Use as a context manager; iterate it to write to each sink (the app
    times each one).
    """

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.sinks)

    @property
    def wants_image(self) -> bool:
        """Whether any sink reads the annotated image (else none need be drawn)."""
        return any(getattr(sink, "wants_image", True) for sink in self.sinks)

    @property
    def stopped_by_user(self) -> bool:
        """True once a window was closed (or ``q`` pressed)."""
        return any(getattr(sink, "stopped_by_user", False) for sink in self.sinks)

    def show_no_signal(self, image: np.ndarray) -> None:
        """Hand the NO SIGNAL card to the sinks that show live video.

        Files (recording, event log, masks) get nothing: frames are never
        invented. A clip recorder ends its event clip.
        """
        for sink in self.sinks:
            show = getattr(sink, "show_no_signal", None)
            if show is not None:
                show(image)

    def close(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:
                log.error("closing %s failed: %s", sink.name, error)
                errors.append(error)
        self.sinks = []
        if errors:
            raise errors[0]

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_output_folder(folder: str | Path, what: str) -> None:
    """Check that :func:`make_output_folder` can make ``folder``; create nothing.

    Outputs are checked before the model loads, but a folder appears only
    when something is written into it.

    Args:
        folder: The folder.
        what: How messages name it, e.g. "clips" (the clips folder).

    Raises:
        OutputError: A part of the path is a file, or the nearest existing
            folder is not writable; names the folder and the fix.
    """
    path = Path(folder)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"{path}: cannot create the {what} folder (a part of this path is a "
            "file, not a folder); pick another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = (
            f"the {what} folder is not writable"
            if existing == path
            else f"cannot create the {what} folder ({existing} is not writable)"
        )
        raise OutputError(f"{path}: {problem}; pick a writable path")


def make_output_folder(folder: str | Path, what: str) -> Path:
    """Create an output folder (and its parents) if needed.

    Raises:
        OutputError: It cannot be created; names the folder and the fix.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise OutputError(
            f"{path}: cannot create the {what} folder (a part of this path is a "
            "file, not a folder); pick another path"
        ) from error
    except OSError as error:
        raise OutputError(
            f"{path}: cannot create the {what} folder ({error.strerror}); "
            "pick a writable path"
        ) from error
    return path


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:8080`` for IPv6) into host and port.

    Raises:
        ValueError: Not ``host:port`` with a port in 0-65535.

    Example:
        >>> parse_bind("127.0.0.1:8080"), parse_bind("[::1]:0")
        (('127.0.0.1', 8080), ('::1', 0))
    """
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"bind: expected host:port such as 127.0.0.1:8080, got {bind!r}"
        )
    return host, int(port)


def check_video_path(path: str | Path) -> None:
    """Raise :class:`OutputError` unless FFmpeg has a muxer for ``path``'s extension."""
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in _muxer_extensions():
        raise OutputError(
            f"{path}: no video format for the extension {Path(path).suffix!r}; "
            "pick a path ending in .mp4, .mkv or .mov"
        )


@functools.cache
def _muxer_extensions() -> frozenset[str]:
    """File extensions FFmpeg can write (mp4, mkv, mov, avi, ...)."""
    import av

    extensions: set[str] = set()
    for name in av.formats_available:
        try:
            extensions |= set(av.format.ContainerFormat(name, "w").extensions)
        except ValueError:  # an input-only format
            continue
    return frozenset(extensions)


def check_outputs(settings: OutputSettings) -> None:
    """Check that the file outputs can be created, before any heavy work starts.

    Checks that the outputs' folders exist or can be created, and are
    writable, so a wrong path fails in a second, not after the model loaded.
    Nothing is created here: the sinks create their folders when they open.

    Raises:
        OutputError: An output path cannot be written, with the fix.
    """
    for path in (settings.video, settings.events, settings.tracks):
        if path is not None:
            _check_file_path(Path(path))
    if settings.video is not None:
        check_video_path(settings.video)
    if settings.masks is not None:
        check_output_folder(settings.masks, "mask")


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None if it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _kept(path: Path) -> str:
    """What survived of a recording that failed: said from the file itself."""
    trim_incomplete_fragment(path)
    frames = count_frames(path)
    if frames == 0:
        return "nothing of it could be kept"
    return f"the first {frames} frames are kept (the file plays)"


def _close_quietly(container) -> bool:
    """Close a PyAV output container (writes its index); False if that failed."""
    try:
        container.close()
    except OSError as error:
        log.debug("closing the video failed: %s", error)
        return False
    return True


def _strerror(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def yuv420_frame(rgb: np.ndarray):
    """An ``av.VideoFrame`` in yuv420p (BT.601, limited range) from an RGB image.

    OpenCV's conversion instead of swscale's: the same colours (within 3 code
    values, mean difference about 0.01) for a fifth of the CPU time (1080p:
    1.7 ms instead of 8 ms), on the encoder thread that shares the cores with
    inference.

    Args:
        rgb: (H, W, 3) uint8 RGB, H and W even.
    """
    import av
    import cv2

    return av.VideoFrame.from_ndarray(
        cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p"
    )


def _decode_jpeg(data: bytes) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OutputError("cannot decode a JPEG frame for the recording (a bug)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_file_path(path: Path) -> None:
    """Check that an output file can be written at ``path``; create nothing."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; pass a file path")
    check_output_folder(path.parent, "output")


def _prepare_parent(path: Path) -> None:
    _check_file_path(path)
    make_output_folder(path.parent, "output")
