"""Sources: lossless ordered files (PyAV), image folders, OpenCV devices, pacing."""

from __future__ import annotations

import contextlib
import itertools
import time

import numpy as np
import pytest
from stream_media import CVC_FRAMES, disc_image, moving_disc, write_video

from streamseg.background import WhenFull, in_background
from streamseg.sources import (
    SourceError,
    SourceSettings,
    guess_kind,
    list_images,
    open_source,
    paced,
    read_device,
    read_video,
)

RED = (220, 20, 20)


def _flat(color, hw=(48, 64)):
    image = np.empty((*hw, 3), np.uint8)
    image[:] = color
    return image


@pytest.fixture
def clip(tmp_path):
    """12 frames at 25 fps; frame 0 is pure red, the rest a moving disc."""
    images = [_flat(RED)] + [frame.pixels for frame in moving_disc(11)]
    return write_video(tmp_path / "clip.mp4", images)


def test_file_frames_keep_order_count_timestamps_and_rgb(clip):
    source = open_source(SourceSettings(uri=str(clip)))
    assert (source.kind, source.live, source.frame_count) == ("file", False, 12)
    assert source.nominal_fps == pytest.approx(25.0)
    frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp_s for f in frames] == pytest.approx(
        [i / 25 for i in range(12)], abs=1e-3
    )
    red = frames[0].pixels.reshape(-1, 3).mean(axis=0)
    assert red[0] > 180 and red[1] < 60 and red[2] < 60, (
        f"expected RGB red, got mean {red}"
    )
    assert frames[0].pixels.shape == (48, 64, 3) and frames[0].pixels.dtype == np.uint8


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    timestamps_s = [0.0, 0.04, 0.1, 0.3, 0.31, 0.9]
    images = [disc_image((32, 32), (16, 4 + 4 * i), 5) for i in range(6)]
    path = write_video(tmp_path / "vfr.mkv", images, timestamps_s)
    frames = list(read_video(str(path)))
    assert [f.timestamp_s for f in frames] == pytest.approx(timestamps_s, abs=1e-3)


def test_other_codecs_and_containers_decode(tmp_path):
    images = [frame.pixels for frame in moving_disc(5)]
    path = write_video(tmp_path / "clip.avi", images, codec="mpeg4")
    assert [f.index for f in open_source(SourceSettings(uri=str(path)))] == list(
        range(5)
    )


def test_real_frames_from_an_image_folder_in_natural_order(tmp_path):
    source = open_source(SourceSettings(uri=str(CVC_FRAMES), folder_fps=10.0))
    assert (source.kind, source.live, source.frame_count) == ("folder", False, 3)
    frames = list(source)
    assert [f.timestamp_s for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert frames[0].hw == (144, 192)
    # Endoscopy is reddish: the red channel dominates (a BGR mix-up would flip it).
    mean = frames[0].pixels.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[2] + 20

    for name in ("10.png", "2.png", "1.png", "notes.txt"):
        (tmp_path / name).write_bytes((CVC_FRAMES / "1.png").read_bytes())
    assert [p.name for p in list_images(str(tmp_path))] == ["1.png", "2.png", "10.png"]
    assert [p.name for p in list_images(str(tmp_path / "1*.png"))] == [
        "1.png",
        "10.png",
    ]


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("0", "device"),
        ("/dev/video2", "device"),
        ("rtsp://10.0.0.5/stream", "stream"),
        ("udp://@:1234", "stream"),
        ("https://example.org/live.m3u8", "stream"),
        ("frames/*.png", "folder"),
        ("clip.mp4", "file"),
    ],
)
def test_kind_is_guessed_from_the_uri(uri, kind):
    assert guess_kind(uri) == kind


def _write_audio_only(path):
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "no such file; check the path"),
        (
            lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4",
            "not a video FFmpeg can read",
        ),
        (
            lambda d: _write_audio_only(d / "sound.wav") or d / "sound.wav",
            "has no video stream",
        ),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
    ],
)
def test_unreadable_sources_fail_with_one_line_naming_the_fix(tmp_path, make, message):
    with pytest.raises(SourceError, match=message) as error:
        open_source(SourceSettings(uri=str(make(tmp_path))))
    assert "\n" not in str(error.value)


def test_device_source_converts_bgr_to_rgb_and_raises_when_it_stalls(clip):
    # OpenCV opens a file like a capture device; after the end it delivers nothing.
    frames = read_device(str(clip), open_timeout_s=1.0, stall_timeout_s=0.2)
    first = next(frames)
    assert first.index == 0
    red = first.pixels.reshape(-1, 3).mean(axis=0)
    assert red[0] > 180 and red[2] < 60, f"expected RGB red, got mean {red}"
    indices = [first.index]
    with pytest.raises(SourceError, match=r"no frame for 0\.2 s"):
        for frame in frames:
            indices.append(frame.index)
    assert indices == list(range(12)), (
        "a stalled device must not repeat or invent frames"
    )


def test_a_missing_device_fails_clearly():
    with pytest.raises(SourceError, match="cannot open it"):
        next(read_device(987, open_timeout_s=0.1))


def test_paced_releases_frames_at_their_timestamps_and_restamps_them():
    frames = moving_disc(5, fps=50.0)
    start = time.monotonic()
    released = list(paced(frames))
    elapsed = time.monotonic() - start
    assert [f.index for f in released] == list(range(5))
    assert elapsed >= 0.075  # 4 intervals of 20 ms
    gaps = np.diff([f.timestamp_s for f in released])
    assert np.all(gaps >= 0.015)
    assert released[0].timestamp_s >= start  # monotonic capture time, like a camera


def test_newest_frame_policy_on_a_simulated_live_source(tmp_path):
    images = [frame.pixels for frame in moving_disc(40, fps=100.0)]
    path = write_video(tmp_path / "fast.mp4", images, fps=100.0)
    source = open_source(SourceSettings(uri=str(path), realtime=True))
    assert source.live
    produced, received = [], []

    def counted():
        for frame in source:
            produced.append(frame.index)
            yield frame

    frames = in_background(counted(), maxsize=1, when_full=WhenFull.DROP_OLDEST)
    with contextlib.closing(frames):
        for frame in frames:
            received.append(frame.index)
            time.sleep(0.035)  # ~3.5 source frames per processed frame
    # The source decoded every frame; the gaps are the queue's drops alone.
    assert produced == list(range(40))
    assert all(b > a for a, b in itertools.pairwise(received))
    assert received[-1] == 39, "the newest (last) frame must be delivered"
    assert len(received) < 30, "a consumer 3.5x slower than the source must drop"


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path over HTTP on localhost; yields the base URL."""
    import functools
    import http.server
    import threading

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_network_stream_is_live_and_stamped_with_our_clock(tmp_path, http_folder):
    images = [frame.pixels for frame in moving_disc(8)]
    write_video(tmp_path / "clip.ts", images)
    source = open_source(
        SourceSettings(uri=f"{http_folder}/clip.ts", open_timeout_s=5.0)
    )
    assert (source.kind, source.live) == ("stream", True)
    before = time.monotonic()
    frames = list(source)  # the sender "stops" at the end of the file
    assert [f.index for f in frames] == list(range(8))
    assert all(before <= f.timestamp_s <= time.monotonic() for f in frames)
    assert np.all(np.diff([f.timestamp_s for f in frames]) >= 0)


def test_an_unreachable_stream_fails_clearly(http_folder):
    source = open_source(
        SourceSettings(uri=f"{http_folder}/missing.ts", open_timeout_s=2.0)
    )
    with pytest.raises(SourceError, match="cannot open the stream"):
        next(iter(source))
