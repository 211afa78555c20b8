"""Event clips with pre-roll: save the moments around each detection as MP4 + JSONL.

:class:`ClipRecorder` is a sink. It keeps the last ``pre_roll_s`` seconds of
annotated frames in a :class:`PreRollBuffer`, **JPEG-encoded** (about 50x
smaller than raw RGB, and capped at ``buffer_mb``), so memory stays bounded
however long the session. When a polyp is detected (after smoothing), it
starts a clip with the buffered frames from ``pre_roll_s`` before the first
detection, and ends it ``post_roll_s`` after the last detection. Clips can
also be started and stopped by hand (the browser view's record button):
:meth:`ClipRecorder.start_manual` / :meth:`ClipRecorder.stop_manual`, safe
to call from any thread.

Each clip is ``<prefix>_<YYYYmmddTHHMMSS>.mp4`` (local wall-clock time at
its start; ``clip`` for detections, ``rec`` for manual recordings) with a
``.jsonl`` beside it holding one :class:`~streamseg.events.FrameEvent` line
per frame. Frames go to the H.264 encoder as JPEG bytes, decoded on the
encoder's thread; a finished clip is flushed and closed on a background
thread too, so the pipeline never waits for a clip to be written. Clips are
crash-safe like the main recording: a clip open when the process is killed
plays up to about half a second before the kill (fragmented MP4, rewritten
as a regular MP4 once the clip ends), and its JSONL holds whole lines.

The same :class:`JpegEncoder` serves the browser view, so each frame is
JPEG-encoded at most once.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamseg.background import to_background
from streamseg.events import StreamClock, describe, say_when
from streamseg.files import LineWriter
from streamseg.findings import Findings
from streamseg.sinks import (
    OutputError,
    OutputSettings,
    VideoRecorder,
    check_output_folder,
    make_output_folder,
    write_line,
)

log = logging.getLogger(__name__)

# Names of the most recently saved clips that status() reports.
RECENT_CLIPS = 5
# Timestamps are floats (index / fps): a frame a microsecond off a pre- or
# post-roll boundary is on it.
_SLACK_S = 1e-6


@dataclass(frozen=True)
class ClipSettings:
    """The ``clips`` section of the stream config.

    Attributes:
        folder: Where clips are saved (``None``: no event clips). The browser
            view's record button and snapshots also write here when set.
        auto: Start a clip whenever a polyp is detected (``false``: manual
            recordings only).
        pre_roll_s: Seconds kept before the first detection.
        post_roll_s: Seconds kept after the last detection; a detection
            within this time extends the same clip.
        buffer_mb: Memory cap of the pre-roll buffer (JPEG frames); at high
            resolution and frame rate the oldest frames go first, shortening
            the pre-roll (logged once).
    """

    folder: Path | None = None
    auto: bool = True
    pre_roll_s: float = 5.0
    post_roll_s: float = 5.0
    buffer_mb: float = 256.0

    def __post_init__(self) -> None:
        for name in ("pre_roll_s", "post_roll_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not self.buffer_mb > 0:
            raise ValueError(f"buffer_mb: expected > 0, got {self.buffer_mb}")


class JpegEncoder:
    """Encode each annotated image to JPEG once, however many consumers ask.

    The result for the most recent image is cached by identity: the browser
    view and the pre-roll buffer get the same bytes for the same frame.
    Call it from the pipeline thread (the one that writes to the sinks).

    Args:
        quality: JPEG quality, 1-100.

    Example:
        >>> encode = JpegEncoder(80)
        >>> image = np.zeros((8, 8, 3), np.uint8)
        >>> encode(image) is encode(image), encode(image)[:2]
        (True, b'\\xff\\xd8')
    """

    def __init__(self, quality: int = 85) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg_quality: expected 1-100, got {quality}")
        self.quality = quality
        self.encoded = 0
        self._image: np.ndarray | None = None
        self._jpeg = b""

    def __call__(self, image: np.ndarray) -> bytes:
        """JPEG bytes of an (H, W, 3) uint8 RGB image."""
        if image is not self._image:
            self._jpeg = encode_jpeg(image, self.quality)
            self._image = image  # kept, so its id cannot be reused by a new array
            self.encoded += 1
        return self._jpeg


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image (BGR only at the OpenCV boundary)."""
    import cv2

    ok, buffer = cv2.imencode(
        ".jpg",
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, quality],
    )
    if not ok:
        raise ValueError(f"cannot JPEG-encode an image of shape {image.shape}")
    return buffer.tobytes()


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """An annotated frame kept for a clip.

    Attributes:
        timestamp_s: The frame's timestamp.
        jpeg: The annotated image, JPEG-encoded.
        event_json: Its :class:`~streamseg.events.FrameEvent` JSON line.
    """

    timestamp_s: float
    jpeg: bytes
    event_json: str


class PreRollBuffer:
    """The last ``seconds`` of encoded frames, capped at ``max_bytes``.

    Example:
        >>> buffer = PreRollBuffer(seconds=1.0, max_bytes=10_000)
        >>> for t in (0.0, 0.5, 1.0, 1.5):
        ...     buffer.append(EncodedFrame(t, b"x" * 10, "{}"))
        >>> [f.timestamp_s for f in buffer.since(0.7)], len(buffer)
        ([1.0, 1.5], 3)
    """

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._frames: deque[EncodedFrame] = deque()
        self._warned = False

    def __len__(self) -> int:
        return len(self._frames)

    def append(self, frame: EncodedFrame) -> None:
        """Add the newest frame; drop frames older than ``seconds`` or over the cap."""
        frames = self._frames
        if frames and frame.timestamp_s < frames[-1].timestamp_s:
            self.clear()  # time went backwards (a new source): older frames are moot
        frames.append(frame)
        self.nbytes += len(frame.jpeg)
        oldest_s = frame.timestamp_s - self.seconds - _SLACK_S
        while frames and frames[0].timestamp_s < oldest_s:
            self.nbytes -= len(frames.popleft().jpeg)
        while self.nbytes > self.max_bytes and len(frames) > 1:
            self.nbytes -= len(frames.popleft().jpeg)
            if not self._warned:
                self._warned = True
                log.warning(
                    "pre-roll buffer full (%.0f MB): keeping %.1f s instead of %g s; "
                    "raise clips.buffer_mb or lower output.jpeg_quality",
                    self.max_bytes / 1e6,
                    frames[-1].timestamp_s - frames[0].timestamp_s,
                    self.seconds,
                )

    def since(self, start_s: float) -> list[EncodedFrame]:
        """Buffered frames with ``timestamp_s >= start_s``, oldest first."""
        return [f for f in self._frames if f.timestamp_s >= start_s - _SLACK_S]

    def clear(self) -> None:
        self._frames.clear()
        self.nbytes = 0


def wants_clip(
    now_s: float, manual: bool, last_detection_s: float | None, post_roll_s: float
) -> bool:
    """Whether the frame at ``now_s`` belongs in a clip.

    Args:
        now_s: The frame's timestamp.
        manual: A manual recording is on.
        last_detection_s: Timestamp of the latest frame with a polyp (``None``:
            none since the last clip).
        post_roll_s: Seconds kept after the last detection.

    Example:
        >>> wants_clip(10.0, False, 6.0, 5.0), wants_clip(11.5, False, 6.0, 5.0)
        (True, False)
    """
    if manual:
        return True
    if last_detection_s is None:
        return False
    return now_s - last_detection_s <= post_roll_s + _SLACK_S


class _Clip:
    """One clip being written: the MP4 (via :class:`VideoRecorder`) and its JSONL."""

    def __init__(self, stem: Path, recorder: VideoRecorder) -> None:
        self.video_path = stem.with_suffix(".mp4")
        self.events_path = stem.with_suffix(".jsonl")
        self.recorder = recorder
        self.frames = 0
        self.start_s: float | None = None
        self.end_s: float | None = None
        try:
            self._events = LineWriter(self.events_path)
        except OSError as error:
            raise OutputError(
                f"{self.events_path}: cannot write the clip's event log "
                f"({error.strerror}); pick a writable clips folder"
            ) from error

    def add(self, frame: EncodedFrame) -> None:
        self.recorder.write_image(frame.jpeg, frame.timestamp_s)
        write_line(self._events, frame.event_json, "clip's event log")
        self.frames += 1
        if self.start_s is None:
            self.start_s = frame.timestamp_s
        self.end_s = frame.timestamp_s

    def close(self) -> None:
        try:
            self.recorder.close()
        finally:
            self._events.close()


class ClipRecorder:
    """Save clips around detections (with pre-roll) and manual recordings.

    A sink: ``write(findings, image)`` once per frame from the pipeline
    thread; :meth:`start_manual`, :meth:`stop_manual` and :meth:`status` may
    be called from any thread (the browser view's request threads).

    Args:
        folder: Where clips go (created).
        jpeg: The shared encoder (see :class:`JpegEncoder`).
        auto: Start clips on detections.
        pre_roll_s: Seconds of frames kept before a clip's start.
        post_roll_s: Seconds kept after the last detection.
        buffer_bytes: Memory cap of the pre-roll buffer.
        nominal_fps: Declared frame rate of the clips (players use timestamps).
        crf: x264 quality of the clips.
        preset: x264 preset of the clips.
        queue_size: Frames that may wait for a clip's encoder (besides the
            pre-roll, which is queued at once when a clip starts).
        now: Wall clock for clip names (tests inject one).
        clock: Stream and wall-clock times for the clips' JSON lines and
            messages (``None``: the frames' own timestamps).
    """

    name = "clips"
    wants_image = True

    def __init__(
        self,
        folder: str | Path,
        *,
        jpeg: JpegEncoder,
        auto: bool = True,
        pre_roll_s: float = 5.0,
        post_roll_s: float = 5.0,
        buffer_bytes: int = 256_000_000,
        nominal_fps: float | None = None,
        crf: int = 20,
        preset: str = "ultrafast",
        queue_size: int = 16,
        now: Callable[[], datetime.datetime] = datetime.datetime.now,
        clock: StreamClock | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.clock = clock
        # Created with the first clip: a run that records nothing leaves no folder.
        check_output_folder(self.folder, "clips")
        self.auto = auto
        self.pre_roll_s = pre_roll_s
        self.post_roll_s = post_roll_s
        self.nominal_fps = nominal_fps
        self.crf = crf
        self.preset = preset
        self.queue_size = queue_size
        self.clips_saved = 0
        self.jpeg = jpeg
        self._now = now
        self._buffer = PreRollBuffer(pre_roll_s, buffer_bytes)
        self._lock = threading.Lock()
        # The finisher thread takes only this one: the pipeline may wait for
        # the finisher (a full queue) while it holds ``_lock``.
        self._saved_lock = threading.Lock()
        self._manual = False
        self._last_detection_s: float | None = None
        self._clip: _Clip | None = None
        self._used_stems: set[str] = set()
        self._recent: deque[str] = deque(maxlen=RECENT_CLIPS)
        self._finisher = to_background(
            self._finish_clips, maxsize=4, name="streamseg-clip-finisher"
        )
        self._closed = False

    # --- the pipeline thread --------------------------------------------------

    def write(self, findings: Findings, image: np.ndarray) -> None:
        event = describe(findings, self.clock) if self.auto else None
        now_s = findings.frame.timestamp_s
        with self._lock:
            if event is not None and event.polyp_present:
                self._last_detection_s = now_s
            want = wants_clip(
                now_s, self._manual, self._last_detection_s, self.post_roll_s
            )
            if not want:
                self._last_detection_s = None
                if self._clip is not None:
                    self._finish()
            need_jpeg = want or self.pre_roll_s > 0
            if not need_jpeg:
                return
            if event is None:
                event = describe(findings, self.clock)
            frame = EncodedFrame(now_s, self.jpeg(image), event.to_json())
            if want and self._clip is None:
                self._start(now_s, manual=self._manual)
            if self._clip is not None:
                self._clip.add(frame)
            if self.pre_roll_s > 0:
                self._buffer.append(frame)

    def show_no_signal(self, image: np.ndarray) -> None:
        """The source went silent: end an event clip (a manual one stays open)."""
        with self._lock:
            self._last_detection_s = None
            if self._clip is not None and not self._manual:
                self._finish()

    def close(self) -> None:
        """Finish the open clip and wait until every clip is written."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            if self._clip is not None:
                self._finish()
        self._finisher.close()

    # --- any thread -------------------------------------------------------------

    def start_manual(self) -> None:
        """Record from the next frame on (with pre-roll) until :meth:`stop_manual`."""
        with self._lock:
            self._manual = True

    def stop_manual(self) -> None:
        """End the manual recording (an ongoing detection keeps its clip open)."""
        with self._lock:
            self._manual = False

    def status(self) -> dict[str, object]:
        """Recording state for the browser view (JSON-ready)."""
        with self._lock:
            clip, manual = self._clip, self._manual
            state: dict[str, object] = {
                "recording": clip is not None or manual,
                "recording_manual": manual,
                "recording_file": clip.video_path.name if clip is not None else None,
                "recording_frames": clip.frames if clip is not None else 0,
                "clips_auto": self.auto,
            }
        with self._saved_lock:
            state["clips_saved"] = self.clips_saved
            state["recent_clips"] = list(self._recent)
        return state

    # --- internals (called with the lock held) ------------------------------------

    def _start(self, now_s: float, *, manual: bool) -> None:
        pre_roll = self._buffer.since(now_s - self.pre_roll_s)
        stem = self._unique_stem("rec" if manual else "clip")
        recorder = VideoRecorder(
            stem.with_suffix(".mp4"),
            nominal_fps=self.nominal_fps,
            crf=self.crf,
            preset=self.preset,
            # The pre-roll is queued at once; it is JPEG bytes, not raw frames.
            queue_size=self.queue_size + len(pre_roll),
        )
        self._clip = _Clip(stem, recorder)
        log.info(
            "%s: %s started at %s with %.1f s of pre-roll",
            self._clip.video_path,
            "recording" if manual else "clip",
            say_when(now_s, self.clock),
            now_s - pre_roll[0].timestamp_s if pre_roll else 0.0,
        )
        for frame in pre_roll:
            self._clip.add(frame)

    def _finish(self) -> None:
        clip, self._clip = self._clip, None
        if clip is not None:
            self._finisher.put(clip)

    def _finish_clips(self, clips: Iterator[_Clip]) -> None:
        # The finisher thread: flushing an encoder takes a while; the pipeline
        # must not wait for it.
        for clip in clips:
            clip.close()
            with self._saved_lock:
                self.clips_saved += 1
                self._recent.append(clip.video_path.name)
            log.info(
                "saved %s (%d frames, %.1f s)",
                clip.video_path,
                clip.frames,
                (clip.end_s or 0.0) - (clip.start_s or 0.0),
            )

    def _unique_stem(self, prefix: str) -> Path:
        make_output_folder(self.folder, "clips")
        base = f"{prefix}_{self._now():%Y%m%dT%H%M%S}"
        stem, number = base, 1
        while stem in self._used_stems or (self.folder / f"{stem}.mp4").exists():
            number += 1
            stem = f"{base}_{number}"
        self._used_stems.add(stem)
        return self.folder / stem


def open_recorder(
    output: OutputSettings,
    clips: ClipSettings | None,
    *,
    nominal_fps: float | None = None,
    clock: StreamClock | None = None,
) -> ClipRecorder:
    """The recorder for event clips and for the browser view's buttons.

    With ``clips.folder`` set: event clips with pre-roll there (the record
    button adds manual ones). Otherwise: manual recordings only, without
    pre-roll, in ``output.recordings``. The recorder's :class:`JpegEncoder`
    (``recorder.jpeg``) is the one to share with the browser view.
    """
    options = {
        "jpeg": JpegEncoder(output.jpeg_quality),
        "nominal_fps": nominal_fps,
        "crf": output.video_crf,
        "preset": output.video_preset,
        "queue_size": output.video_queue,
        "clock": clock,
    }
    if clips is not None and clips.folder is not None:
        return ClipRecorder(
            clips.folder,
            auto=clips.auto,
            pre_roll_s=clips.pre_roll_s,
            post_roll_s=clips.post_roll_s,
            buffer_bytes=round(clips.buffer_mb * 1e6),
            **options,
        )
    return ClipRecorder(output.recordings, auto=False, pre_roll_s=0.0, **options)
