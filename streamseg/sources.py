"""Open a video file, capture device, network stream or image folder and yield Frames.

Every source is an ``Iterable[Frame]``: RGB pixels, an index that counts
source frames, and a timestamp in seconds. BGR exists only inside this
module, at the OpenCV boundary.

========  ===========================  ====================================  ======
kind      read with                    timestamp_s                           live
========  ===========================  ====================================  ======
file      PyAV (any FFmpeg format)     presentation time (``frame.time``)    no
folder    OpenCV ``imread``, natural   ``index / folder_fps``                no
          name order (2.png < 10.png)
device    OpenCV (V4L2 on Linux)       ``time.monotonic()`` at grab          yes
stream    PyAV (rtsp, udp, http(s))    ``time.monotonic()`` at decode        yes
========  ===========================  ====================================  ======

Files and folders are read losslessly and in order; variable frame rate is
kept (timestamps come from the container). Live sources are meant to run
behind :func:`streamseg.background.in_background` with the DROP_OLDEST
policy, so the consumer always gets the newest frame and drops show up as
index gaps. No source ever invents or repeats a frame: a live source that
stops delivering raises :class:`SourceError` after ``stall_timeout_s``.
Network streams (and cameras with ``reconnect: true``) are then re-opened by
:func:`reconnecting`, with backoff, until frames flow again or
``reconnect_timeout_s`` has passed.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from threading import Event
from typing import Literal, get_args

from streamseg.frames import Frame
from streamseg.readers import (
    SourceError,
    list_images,
    paced,
    probe_video,
    read_device,
    read_images,
    read_stream,
    read_video,
    redact_uri,
)

log = logging.getLogger(__name__)

SourceKind = Literal["auto", "file", "device", "stream", "folder"]
LiveDisplay = Literal["segmented", "every_frame"]
LIVE_DISPLAYS: tuple[str, ...] = get_args(LiveDisplay)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtp", "srt", "udp", "tcp", "http", "https")
# Longest wait between two reconnection attempts of a live source.
MAX_RECONNECT_BACKOFF_S = 5.0


@dataclass(frozen=True)
class SourceSettings:
    """The ``source`` section of the stream config.

    Attributes:
        uri: What to read: a video file, a folder of images (or a glob such as
            ``frames/*.png``), a camera index (``0``) or ``/dev/videoN``, or a
            URL (``rtsp://``, ``udp://``, ``http(s)://``). Set from the
            ``SOURCE`` argument of ``streamseg run``.
        kind: ``auto`` guesses from ``uri``; force it when the guess is wrong
            (e.g. ``file`` for a recorded clip served over http).
        realtime: Play files and folders at their own speed, as if live
            (newest-frame policy, drops counted): for demos and latency tests.
        folder_fps: Frame rate given to image folders (they have no timing).
        device_fps: Frame rate requested from a camera (``None``: its default).
        device_size_wh: (width, height) requested from a camera (``None``:
            its default).
        device_fourcc: Pixel format requested from a camera, e.g. ``MJPG``
            (many USB capture devices deliver full HD only as MJPG).
        open_timeout_s: Seconds to wait for a camera or stream to deliver its
            first frame, counted from the start of the run (live sources
            open while the model loads; the frames they deliver meanwhile
            are dropped, newest frame wins, and counted as dropped).
        stall_timeout_s: Seconds without a frame after which a live source
            raises :class:`SourceError` (frames are never invented meanwhile).
        prefetch: Frames decoded ahead for files and folders (BLOCK queue).
        stream_options: FFmpeg options for network streams, e.g.
            ``{rtsp_transport: udp}`` (rtsp defaults to tcp).
        max_frames: Stop after this many processed frames (``None``: all).
        no_signal_s: Live: after this long without a frame, live views show
            "NO SIGNAL" (and no stale overlay) until frames return.
        reconnect: Re-open a live source that fails or stalls after it had
            delivered frames (``None``: network streams yes, cameras no). A
            source that never delivered fails at once (a wrong URL should
            fail fast).
        reconnect_timeout_s: Give up reconnecting (:class:`SourceError`) this
            long after the last frame.
        reconnect_backoff_s: First wait between reconnection attempts; it
            doubles after each failed attempt, up to 5 s.
        live_display: Live sources: ``segmented`` shows each frame once the
            network has segmented it, with its own outline (frames that
            arrive meanwhile are dropped, the newest wins); ``every_frame``
            shows every frame as it arrives, drawn with the newest finished
            outline, while the network segments the newest frame whenever it
            is free: the video keeps the source's frame rate on a CPU that
            cannot segment every frame, and the outline is drawn on later
            frames than its own (its age is in the HUD and the statistics,
            its frame in the event log).
        max_outline_age_s: ``every_frame``: an outline is drawn on later
            frames only while it is at most this old (capture of the frame
            it was computed from -> now); beyond that the frame waits for a
            newer outline, its own if need be (frames arriving meanwhile are
            dropped), so a held outline never trails the video by more.
    """

    uri: str | None = None
    kind: SourceKind = "auto"
    realtime: bool = False
    folder_fps: float = 25.0
    device_fps: float | None = None
    device_size_wh: tuple[int, int] | None = None
    device_fourcc: str | None = None
    open_timeout_s: float = 10.0
    stall_timeout_s: float = 5.0
    prefetch: int = 8
    stream_options: Mapping[str, str] = field(default_factory=dict)
    max_frames: int | None = None
    no_signal_s: float = 1.0
    reconnect: bool | None = None
    reconnect_timeout_s: float = 30.0
    reconnect_backoff_s: float = 0.5
    live_display: LiveDisplay = "segmented"
    max_outline_age_s: float = 0.25

    def __post_init__(self) -> None:
        for name in (
            "folder_fps",
            "max_outline_age_s",
            "open_timeout_s",
            "stall_timeout_s",
            "no_signal_s",
            "reconnect_timeout_s",
            "reconnect_backoff_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if self.device_fps is not None and not self.device_fps > 0:
            raise ValueError(f"device_fps: expected > 0 or null, got {self.device_fps}")
        if self.device_size_wh is not None and min(self.device_size_wh) <= 0:
            raise ValueError(
                "device_size_wh: expected positive [width, height], "
                f"got {self.device_size_wh}"
            )
        if self.device_fourcc is not None and len(self.device_fourcc) != 4:
            raise ValueError(
                "device_fourcc: expected 4 characters such as MJPG, "
                f"got {self.device_fourcc!r}"
            )
        if self.prefetch < 1:
            raise ValueError(f"prefetch: expected >= 1, got {self.prefetch}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(
                f"max_frames: expected >= 1 or null, got {self.max_frames}"
            )

    def reconnects(self, kind: str) -> bool:
        """Whether a live source of ``kind`` is re-opened after a failure."""
        if self.reconnect is None:
            return kind == "stream"
        return self.reconnect and kind in ("stream", "device")


@dataclass(frozen=True)
class Source:
    """An opened (checked) source: iterate it for Frames.

    Each iteration starts reading from the beginning (files) or grabbing anew
    (live sources); iterate it on the thread that should own the decoder or
    capture device.

    Attributes:
        name: How messages refer to the source (path, URL or camera).
        kind: ``file``, ``folder``, ``device`` or ``stream``.
        live: True for cameras, streams and ``realtime`` playback: run it
            with the newest-frame policy.
        nominal_fps: The source's declared frame rate, if known (metadata for
            the recording; timing always comes from the timestamps).
        frame_count: Number of frames, if known (files and folders), for
            progress and ETA.
    """

    name: str
    kind: str
    live: bool
    nominal_fps: float | None
    frame_count: int | None
    read: Callable[[], Iterator[Frame]] = field(repr=False)

    def __iter__(self) -> Iterator[Frame]:
        return self.read()


def open_source(settings: SourceSettings, *, stop: Event | None = None) -> Source:
    """Check that ``settings.uri`` can be read and describe it.

    Files and folders are probed here, so a missing or unreadable file fails
    before any model is loaded. Cameras and streams are opened by the
    iterating thread (the one that will own them); their errors arrive with
    the first frame.

    Args:
        settings: The ``source`` section.
        stop: Once set, a live source stops waiting (between reconnection
            attempts, or for a camera's next frame) and ends its iteration.

    Raises:
        SourceError: Missing or unreadable source, with the fix.
    """
    if not settings.uri:
        raise SourceError(
            "no source given; pass SOURCE (a video file, image folder, camera index "
            "or URL)"
        )
    uri = settings.uri
    kind = settings.kind if settings.kind != "auto" else guess_kind(uri)
    if kind == "file":
        nominal_fps, frame_count = probe_video(uri)
        source = Source(
            uri, kind, False, nominal_fps, frame_count, lambda: read_video(uri)
        )
    elif kind == "folder":
        paths = list_images(uri)
        fps = settings.folder_fps
        source = Source(
            uri, kind, False, fps, len(paths), lambda: read_images(paths, fps)
        )
    elif kind == "device":
        device = parse_device(uri)
        source = Source(
            f"camera {uri}",
            kind,
            True,
            settings.device_fps,
            None,
            lambda open_timeout_s=settings.open_timeout_s: read_device(
                device,
                size_wh=settings.device_size_wh,
                fps=settings.device_fps,
                fourcc=settings.device_fourcc,
                open_timeout_s=open_timeout_s,
                stall_timeout_s=settings.stall_timeout_s,
                stop=stop,
            ),
        )
    elif kind == "stream":
        options = dict(settings.stream_options)
        if uri.lower().startswith(("rtsp://", "rtsps://")):
            options.setdefault("rtsp_transport", "tcp")  # UDP is lost behind most NATs
        source = Source(
            redact_uri(uri),
            kind,
            True,
            None,
            None,
            lambda open_timeout_s=settings.open_timeout_s: read_stream(
                uri,
                open_timeout_s=open_timeout_s,
                stall_timeout_s=settings.stall_timeout_s,
                options=options,
            ),
        )
    else:
        raise SourceError(
            f"source.kind {kind!r}: expected auto, file, folder, device or stream"
        )
    if settings.realtime and not source.live:
        unpaced = source.read
        source = Source(
            source.name,
            source.kind,
            True,
            source.nominal_fps,
            source.frame_count,
            lambda: paced(unpaced()),
        )
    elif source.live and settings.reconnects(source.kind):
        source = replace(
            source,
            read=functools.partial(
                reconnecting,
                source.read,
                name=source.name,
                open_timeout_s=settings.open_timeout_s,
                reconnect_timeout_s=settings.reconnect_timeout_s,
                backoff_s=settings.reconnect_backoff_s,
                stop=stop,
            ),
        )
    return source


def guess_kind(uri: str) -> str:
    """``device`` (0, /dev/videoN), ``stream`` (URLs), ``folder`` or ``file``."""
    if uri.isdigit() or re.fullmatch(r"/dev/video\d+", uri):
        return "device"
    scheme, sep, _ = uri.partition("://")
    if sep and scheme.lower() in STREAM_SCHEMES:
        return "stream"
    if Path(uri).is_dir() or any(char in uri for char in "*?["):
        return "folder"
    return "file"


def parse_device(uri: str) -> int | str:
    """Camera index (``"0"`` -> 0) or device path (``/dev/video2``)."""
    return int(uri) if uri.isdigit() else uri


# --- live sources that come back ----------------------------------------------


def reconnecting(
    open_frames: Callable[..., Iterator[Frame]],
    *,
    name: str,
    open_timeout_s: float,
    reconnect_timeout_s: float,
    backoff_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
    stop: Event | None = None,
) -> Iterator[Frame]:
    """Read a live source, and re-open it whenever it fails after delivering frames.

    A failure before the first frame is raised at once (a wrong URL or a
    missing camera fails fast). After that, a :class:`SourceError` (a stall,
    a dropped connection) starts reconnection attempts, ``backoff_s`` apart
    at first and doubling up to :data:`MAX_RECONNECT_BACKOFF_S`, until
    frames flow again or ``reconnect_timeout_s`` has passed since the last
    frame. A clean end of the stream (the sender closed it) ends the
    iteration. Nothing is yielded meanwhile: frames are never invented; the
    consumer sees the silence (and shows "NO SIGNAL").

    Args:
        open_frames: Opens the source; called as
            ``open_frames(open_timeout_s=seconds)``.
        name: How messages refer to the source.
        open_timeout_s: Wait at most this long for each attempt's first frame
            (less when the reconnection deadline is nearer).
        reconnect_timeout_s: Give up this long after the last frame.
        backoff_s: First wait between attempts.
        clock: Monotonic clock in seconds (tests inject a fake one).
        sleep: Sleep function (tests inject a fake one; ``None``: wait on
            ``stop``, or ``time.sleep`` without one).
        stop: Once set, stop: no further attempt, and the wait between
            attempts ends at once (the iteration then ends).

    Yields:
        The source's frames with indices that keep increasing across
        connections (each connection numbers its frames from 0; frames lost
        while disconnected are not counted as drops, their number is unknown).

    Raises:
        SourceError: The first connection fails, or reconnection gave up.
    """
    if sleep is None:
        sleep = stop.wait if stop is not None else time.sleep
    next_index = 0
    lost_s: float | None = None
    delay_s = backoff_s
    last_error: SourceError | None = None
    timeout_s = open_timeout_s
    while True:
        if stop is not None and stop.is_set():
            return
        frames = open_frames(open_timeout_s=timeout_s)
        try:
            for frame in frames:
                if lost_s is not None:
                    log.warning(
                        "%s: reconnected after %.1f s without frames",
                        name,
                        clock() - lost_s,
                    )
                    lost_s, delay_s = None, backoff_s
                yield Frame(next_index, frame.timestamp_s, frame.pixels)
                next_index += 1
            return
        except SourceError as error:
            if stop is not None and stop.is_set():
                return  # stopped while waiting: the failure is moot
            if next_index == 0:
                raise
            last_error = error
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        now_s = clock()
        if lost_s is None:
            # The failure was detected stall_timeout_s after the last frame at
            # most; counting from now errs on the side of trying longer.
            lost_s = now_s
            log.warning("%s; reconnecting", last_error)
        remaining_s = reconnect_timeout_s - (now_s - lost_s)
        if remaining_s <= 0:
            raise SourceError(
                f"{name}: lost the source and could not reconnect within "
                f"{reconnect_timeout_s:g} s (last error: {last_error}); check the "
                "sender and the network, or raise source.reconnect_timeout_s"
            ) from last_error
        sleep(min(delay_s, remaining_s))
        delay_s = min(2 * delay_s, MAX_RECONNECT_BACKOFF_S)
        remaining_s = reconnect_timeout_s - (clock() - lost_s)
        timeout_s = max(min(open_timeout_s, remaining_s), 0.1)
