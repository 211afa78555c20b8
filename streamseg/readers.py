"""Frame readers, one per source kind, and pacing; :mod:`streamseg.sources` opens them.

* :func:`read_video` (files, PyAV: presentation timestamps, rotation
  metadata) and :func:`read_stream` (network streams, PyAV, capture time);
* :func:`list_images` and :func:`read_images` (image folders, natural name
  order, ``index / fps``);
* :func:`read_device` (capture devices through OpenCV, V4L2 on Linux);
* :func:`paced`: recorded frames played at their own timestamps, as if live.

Each yields RGB :class:`~streamseg.frames.Frame` values; BGR exists only here,
at the OpenCV boundary. Failures are :class:`SourceError` with the fix.
"""

from __future__ import annotations

import glob
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from threading import Event

import numpy as np

from streamseg.frames import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Seconds between retries while a camera returns no frame (the failure path only).
_DEVICE_RETRY_S = 0.01


class SourceError(Exception):
    """A source cannot be opened or stopped delivering; the message names the fix."""


# --- files (PyAV) -----------------------------------------------------------


def probe_video(path: str) -> tuple[float | None, int | None]:
    """Check that ``path`` holds a decodable video stream.

    Returns:
        (nominal frames per second or None, frame count or None).

    Raises:
        SourceError: Missing file, not a media file, or no video stream.
    """
    import av

    if "://" not in path:
        _check_file(path)
    container = _open_container(path, {}, None)
    try:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        count = stream.frames or None
        if count is None and fps and stream.duration and stream.time_base:
            count = round(float(stream.duration * stream.time_base) * fps) or None
        return fps, count
    except av.FFmpegError as error:
        raise SourceError(f"{path}: cannot read the video stream ({error})") from error
    finally:
        container.close()


def read_video(path: str) -> Iterator[Frame]:
    """Decode every frame of a video file, in presentation order.

    Args:
        path: Any container/codec FFmpeg reads (mp4, mkv, avi, mov, ...).

    Yields:
        Frames with indices 0..N-1 and the container's presentation times
        (variable frame rate kept; a frame without a timestamp gets the
        previous one plus one nominal frame period).

    Raises:
        SourceError: The file cannot be opened or decoding fails midway.
    """
    container = _open_container(path, {}, None)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame threads: throughput matters for files
        rate = stream.average_rate or stream.guessed_rate
        period_s = 1.0 / float(rate) if rate else 1.0 / 25.0
        previous_s: float | None = None
        for index, decoded in enumerate(_decode(container, stream, path)):
            timestamp_s = decoded.time
            if timestamp_s is None:
                timestamp_s = 0.0 if previous_s is None else previous_s + period_s
            previous_s = timestamp_s
            degrees = round(getattr(decoded, "rotation", 0) or 0)
            if degrees % 90:
                if index == 0:
                    log.warning(
                        "%s: display rotation of %d degrees ignored (only multiples "
                        "of 90 are applied)",
                        path,
                        degrees,
                    )
                degrees = 0
            rgb = _upright(decoded.to_ndarray(format="rgb24"), degrees)
            yield Frame(index, float(timestamp_s), rgb)
    finally:
        container.close()


def _upright(rgb: np.ndarray, degrees: int) -> np.ndarray:
    """``rgb`` (H, W, 3) turned ``degrees`` counter-clockwise (a multiple of 90).

    ``degrees`` is PyAV's ``VideoFrame.rotation``: the display matrix that
    phones write instead of rotating the pixels.
    """
    if degrees % 360 == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=(degrees // 90) % 4))


def redact_uri(uri: str) -> str:
    """``uri`` without the password (and user) of ``scheme://user:pass@host/...``.

    Messages and logs name sources by this form, so credentials embedded in
    a stream URL never reach the terminal or a log file.

    Example:
        >>> redact_uri("rtsp://admin:secret@10.0.0.5:554/live")
        'rtsp://***@10.0.0.5:554/live'
    """
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", uri)


def read_stream(
    url: str,
    *,
    open_timeout_s: float = 10.0,
    stall_timeout_s: float = 5.0,
    options: Mapping[str, str] | None = None,
) -> Iterator[Frame]:
    """Decode a network stream (rtsp, udp, http(s), ...) as it arrives.

    Every frame is decoded (the codec needs them), so when the consumer is
    slower the newest-frame queue drops frames, not the decoder.

    Yields:
        Frames numbered from 0, stamped with ``time.monotonic()`` at decode
        (a sender's clock is unrelated to ours; latency needs ours).

    The iteration ends (with a warning in the log) when the sender closes
    the stream.

    Raises:
        SourceError: Cannot connect, no video, or no data for ``stall_timeout_s``.
    """
    container = _open_container(
        url, dict(options or {}), (open_timeout_s, stall_timeout_s)
    )
    try:
        stream = _video_stream(container, url)
        for index, decoded in enumerate(_decode(container, stream, url, live=True)):
            yield Frame(index, time.monotonic(), decoded.to_ndarray(format="rgb24"))
    finally:
        container.close()
    log.warning("%s: the stream ended (the sender stopped sending)", redact_uri(url))


def _open_container(
    path: str, options: dict[str, str], timeout: tuple[float, float] | None
):
    import av

    name = redact_uri(path)
    try:
        return av.open(path, mode="r", options=options, timeout=timeout)
    except FileNotFoundError as error:
        raise SourceError(f"{name}: no such file; check the path") from error
    except IsADirectoryError as error:
        raise SourceError(
            f"{name}: is a folder; pass --set source.kind=folder for image frames"
        ) from error
    except PermissionError as error:
        raise SourceError(
            f"{name}: permission denied; make the file readable"
        ) from error
    except (av.FFmpegError, OSError) as error:
        if "://" in path:
            # FFmpeg's error names the full URL: keep it out of --debug tracebacks
            # when the URL carries credentials.
            cause = error if name == path else None
            raise SourceError(
                f"{name}: cannot open the stream ({_reason(error)}); check the URL, "
                "the network and that the sender is running"
            ) from cause
        raise SourceError(
            f"{name}: not a video FFmpeg can read ({_reason(error)}); if it is a "
            "video it may be damaged or incomplete: re-encode or copy it again; "
            "otherwise pass a video file (.mp4, .mkv, .avi, ...), a folder of images, "
            "a camera index or a URL"
        ) from error


def _video_stream(container, path: str):
    if not container.streams.video:
        found = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
        raise SourceError(
            f"{redact_uri(path)}: has no video stream (found {found}); pass a file "
            "that contains video"
        )
    return container.streams.video[0]


def _decode(container, stream, path: str, *, live: bool = False) -> Iterator:
    import av

    name = redact_uri(path)
    index = 0
    try:
        for decoded in container.decode(stream):
            yield decoded
            index += 1
    except av.FFmpegError as error:
        if live:
            raise SourceError(
                f"{name}: the stream failed after {index} frames ({_reason(error)}); "
                "check the network and the sender, or raise source.stall_timeout_s"
            ) from error
        raise SourceError(
            f"{name}: decoding failed after frame {index} ({_reason(error)}); the "
            "file may be truncated or damaged: re-encode or copy it again"
        ) from error


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _check_file(path: str) -> None:
    candidate = Path(path)
    if not candidate.exists():
        raise SourceError(
            f"{path}: no such file; check the path (SOURCE may also be a folder of "
            "images, a camera index such as 0, or an rtsp:// URL)"
        )
    if candidate.is_dir():
        raise SourceError(
            f"{path}: is a folder; pass --set source.kind=folder for image frames"
        )


# --- image folders (OpenCV imread) -------------------------------------------


def list_images(uri: str) -> list[Path]:
    """Image files of a folder (or matching a glob), in natural name order.

    Natural order puts ``2.png`` before ``10.png``, as frame exporters number them.

    Raises:
        SourceError: No such folder, or no images in it.
    """
    if any(char in uri for char in "*?["):
        paths = [Path(p) for p in glob.glob(uri)]
        where = f"pattern {uri!r}"
    else:
        folder = Path(uri)
        if not folder.is_dir():
            raise SourceError(f"{uri}: no such folder; check the path")
        paths = list(folder.iterdir())
        where = f"folder {uri}"
    images = sorted(
        (p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=_natural_key,
    )
    if not images:
        raise SourceError(
            f"{where}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point "
            "SOURCE at a video file or a folder of frames"
        )
    return images


def read_images(paths: Iterable[Path], fps: float) -> Iterator[Frame]:
    """Read image files as frames ``index / fps`` seconds apart.

    Raises:
        SourceError: An image cannot be decoded.
    """
    import cv2

    for index, path in enumerate(paths):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(
                f"{path}: cannot decode this image; remove it or convert it to PNG/JPEG"
            )
        yield Frame(index, index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _natural_key(path: Path) -> list[object]:
    return [
        int(part) if part.isdigit() else part.lower()
        for part in re.split(r"(\d+)", path.name)
    ]


# --- capture devices (OpenCV) -----------------------------------------------


def read_device(
    device: int | str,
    *,
    size_wh: tuple[int, int] | None = None,
    fps: float | None = None,
    fourcc: str | None = None,
    open_timeout_s: float = 10.0,
    stall_timeout_s: float = 5.0,
    stop: Event | None = None,
) -> Iterator[Frame]:
    """Grab frames from a camera or capture card as fast as it delivers them.

    The device is opened on the iterating thread and released when the
    generator closes. Requested size and rate are hints; the driver may pick
    the nearest mode it supports (logged).

    Args:
        device: Index (0) or path (/dev/video0); any OpenCV capture target.
        size_wh: Requested (width, height).
        fps: Requested frame rate.
        fourcc: Requested pixel format, e.g. "MJPG".
        open_timeout_s: Wait this long for the first frame.
        stall_timeout_s: Raise once no frame arrived for this long.
        stop: Once set, stop retrying a camera that returns no frame.

    Yields:
        Frames numbered from 0, stamped with ``time.monotonic()`` at grab.

    Raises:
        SourceError: Cannot open the device, or it stalls.
    """
    import cv2

    capture = cv2.VideoCapture(device, cv2.CAP_ANY)
    try:
        if not capture.isOpened():
            raise SourceError(
                f"camera {device}: cannot open it; check that it is connected, not in "
                "use by another program, and readable by you (Linux: the 'video' group)"
            )
        if fourcc is not None:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        if size_wh is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, size_wh[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size_wh[1])
        if fps is not None:
            capture.set(cv2.CAP_PROP_FPS, fps)
        # Keep the driver's own queue short: we want the newest frame, not a backlog.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        log.info(
            "camera %s: %dx%d at %.1f fps (backend %s)",
            device,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            capture.get(cv2.CAP_PROP_FPS),
            capture.getBackendName(),
        )
        index = 0
        last_frame_s = time.monotonic()
        timeout_s = open_timeout_s
        while True:
            ok, bgr = capture.read()
            now_s = time.monotonic()
            if not ok or bgr is None:
                if stop is not None and stop.is_set():
                    return
                if now_s - last_frame_s > timeout_s:
                    what = "no first frame" if index == 0 else "no frame"
                    raise SourceError(
                        f"camera {device}: {what} for {timeout_s:g} s; check the "
                        "cable, power and input selection, or raise "
                        "source.stall_timeout_s"
                    )
                time.sleep(_DEVICE_RETRY_S)
                continue
            yield Frame(index, now_s, _bgr_to_rgb(bgr))
            index += 1
            last_frame_s = now_s
            timeout_s = stall_timeout_s
    finally:
        capture.release()


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    import cv2

    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- playing recorded frames as if live --------------------------------------


def paced(
    frames: Iterable[Frame],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Frame]:
    """Release frames at the pace of their timestamps, re-stamped like a camera.

    Wrapped in a DROP_OLDEST queue this makes a recorded clip behave like an
    endoscope: frames arrive in real time whether or not the consumer keeps up.

    Yields:
        The same frames (same index and pixels), with ``timestamp_s`` set to
        ``clock()`` at release, as :func:`read_device` stamps them.
    """
    start_s: float | None = None
    first_timestamp_s = 0.0
    for frame in frames:
        if start_s is None:
            start_s, first_timestamp_s = clock(), frame.timestamp_s
        delay_s = start_s + (frame.timestamp_s - first_timestamp_s) - clock()
        if delay_s > 0:
            sleep(delay_s)
        yield Frame(frame.index, clock(), frame.pixels)
