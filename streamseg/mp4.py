"""Crash-safe video files: fragmented while recording, a regular MP4 after a clean stop.

A regular MP4 keeps its index (the ``moov`` box) in memory and writes it when
the file is closed, so a process killed mid-recording (SIGKILL, the OOM
killer, a power cut) leaves an unplayable file. Recordings are therefore
written as **fragmented MP4**: an empty index up front, then self-contained
fragments (``moof`` + ``mdat``) of at most :data:`FRAGMENT_S` seconds, each
handed to the operating system as soon as it is complete. A killed
recording plays up to its last complete fragment: at most
:data:`FRAGMENT_S` plus the few frames still inside the encoder before the
kill. Keyframes come at least every :data:`KEYFRAME_INTERVAL_S`, so the
partial file seeks too.

On a clean stop (end of source, Ctrl-C, SIGTERM, an error elsewhere) the
fragmented file is remuxed, without re-encoding, into a regular
``faststart`` MP4 (index first: duration and frame count known at once,
streams over HTTP) next to it and atomically renamed over it, so users get
the same kind of file as before. If that fails (disk full), the fragmented
file stays: it plays as it is.

Matroska (``.mkv``) is crash-tolerant by design; it gets clusters of at most
:data:`FRAGMENT_S` seconds, flushed as they complete, and no remux. Other
containers are written as FFmpeg writes them (not crash-safe).

Example:
    >>> muxer_options("out.mp4")["movflags"]
    'frag_keyframe+empty_moov+default_base_moof'
    >>> is_fragmented_mp4("clip.mkv")
    False
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Longest stretch of video held in memory before it reaches the file.
FRAGMENT_S = 0.5
# Longest gap between keyframes (seek granularity; fragments start at them).
KEYFRAME_INTERVAL_S = 1.0

_MP4_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
_MATROSKA_SUFFIXES = frozenset({".mkv", ".webm"})


def is_fragmented_mp4(path: str | Path) -> bool:
    """Whether recordings to ``path`` are written as fragmented MP4 (and remuxed)."""
    return Path(path).suffix.lower() in _MP4_SUFFIXES


def muxer_options(path: str | Path) -> dict[str, str]:
    """FFmpeg muxer options that make a recording to ``path`` survive a kill.

    Args:
        path: The output file; its extension picks the container.

    Returns:
        Options for ``av.open(path, "w", options=...)``. ``flush_packets``
        hands every finished fragment to the operating system at once (FFmpeg
        otherwise keeps up to 32 kB in its own buffer).
    """
    suffix = Path(path).suffix.lower()
    options = {"flush_packets": "1"}
    if suffix in _MP4_SUFFIXES:
        options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        options["frag_duration"] = str(round(FRAGMENT_S * 1_000_000))  # microseconds
    elif suffix in _MATROSKA_SUFFIXES:
        options["cluster_time_limit"] = str(round(FRAGMENT_S * 1000))  # milliseconds
    return options


def finalize(path: str | Path) -> bool:
    """Turn a closed fragmented MP4 into a regular faststart MP4, atomically.

    The packets are copied (no re-encoding) into a hidden file beside
    ``path``, which then replaces ``path`` in one rename: a kill at any
    moment leaves either the fragmented file or the regular one, both
    playable. Matroska and other containers are left as they are.

    Args:
        path: A recording written with :func:`muxer_options`, closed.

    Returns:
        True if ``path`` is now a regular MP4; False if it was left as it
        was (not an MP4, or the remux failed: logged, the fragmented file
        still plays).
    """
    import av

    path = Path(path)
    if not is_fragmented_mp4(path):
        return False
    partial = path.with_name(f".{path.name}.finalizing")
    try:
        with (
            av.open(str(path)) as source,
            av.open(
                str(partial),
                mode="w",
                format="mov" if path.suffix.lower() == ".mov" else "mp4",
                options={"movflags": "faststart"},
            ) as target,
        ):
            video = source.streams.video[0]
            stream = target.add_stream_from_template(video)
            for packet in source.demux(video):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = stream
                target.mux(packet)
        os.replace(partial, path)
    except (OSError, IndexError) as error:  # av.FFmpegError is an OSError
        with contextlib.suppress(OSError):
            partial.unlink()
        log.warning(
            "%s: could not rewrite the recording as a regular MP4 (%s); it stays "
            "a fragmented MP4, which plays as it is",
            path,
            getattr(error, "strerror", None) or error,
        )
        return False
    return True


def trim_incomplete_fragment(path: str | Path) -> int:
    """Cut a fragmented MP4 back to its last complete fragment; bytes removed.

    A write that failed half-way (disk full) leaves the file ending inside a
    fragment; its complete packets would play, but the cut one makes strict
    decoders fail at the end. Top-level boxes are walked by their declared
    sizes; the file ends after the last ``mdat`` whose box is complete.
    Shrinking a file needs no free space.

    Args:
        path: A fragmented MP4 (anything else is left as it is: returns 0).
    """
    path = Path(path)
    if not is_fragmented_mp4(path):
        return 0
    try:
        size = path.stat().st_size
        keep = 0  # end of the last complete ftyp/moov or moof+mdat
        offset = 0
        with open(path, "rb") as file:
            while offset + 8 <= size:
                file.seek(offset)
                header = file.read(16)
                box_size = int.from_bytes(header[:4], "big")
                kind = header[4:8]
                if box_size == 1 and len(header) == 16:  # 64-bit size
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:  # "to the end of the file"
                    box_size = size - offset
                if box_size < 8 or offset + box_size > size:
                    break
                offset += box_size
                if kind in (b"ftyp", b"moov", b"mdat", b"mfra"):
                    keep = offset
        if keep < size:
            os.truncate(path, keep)
        return size - keep
    except OSError as error:
        log.debug("could not trim %s: %s", path, error)
        return 0


def count_frames(path: str | Path) -> int:
    """Video packets (= frames) that can be read back from ``path``; 0 if none.

    Reads the container without decoding (fast), as far as it is readable: a
    recording cut short by a full disk or a kill counts what survived.
    """
    import av

    count = 0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(video=0):
                if packet.dts is not None:
                    count += 1
    except (OSError, IndexError):  # unreadable, or readable only up to here
        pass
    return count
