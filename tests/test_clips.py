"""Event clips: pre/post-roll boundaries, manual recordings, bounded memory, wiring."""

from __future__ import annotations

import dataclasses
import datetime
import json

import numpy as np
import pytest
import torch
from live_helpers import RedDiscSegmenter, use_red_disc_segmenter
from stream_media import decode_video, disc_image, write_video

from streamseg.app import StreamConfig, run
from streamseg.clips import (
    ClipRecorder,
    ClipSettings,
    EncodedFrame,
    JpegEncoder,
    PreRollBuffer,
    wants_clip,
)
from streamseg.findings import Findings
from streamseg.frames import Frame, Prediction
from streamseg.overlay import OverlayStyle, render
from streamseg.segmenter import ModelSettings
from streamseg.sinks import FrameList
from streamseg.sources import SourceSettings

FPS = 25.0
HW = (48, 64)


def _frame(index: int, polyp: bool) -> tuple[Findings, np.ndarray]:
    """Frame ``index`` at 25 fps; its mask is a disc when ``polyp``, else empty."""
    pixels = disc_image(HW, (24, 32), 10)
    mask = np.zeros(HW, np.float32)
    if polyp:
        mask[14:35, 22:43] = 1.0
    prediction = Prediction(
        Frame(index, index / FPS, pixels), torch.from_numpy(mask), 0.5
    )
    findings = Findings.of(prediction)
    return findings, render(findings, OverlayStyle())


class _Clock:
    """Wall clock for clip names: 2026-11-26 23:15:02, one second per call."""

    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 11, 26, 23, 15, 2)

    def __call__(self) -> datetime.datetime:
        value = self.now
        self.now += datetime.timedelta(seconds=1)
        return value


def _recorder(folder, **options) -> ClipRecorder:
    options.setdefault("pre_roll_s", 0.4)
    options.setdefault("post_roll_s", 0.4)
    return ClipRecorder(folder, jpeg=JpegEncoder(90), now=_Clock(), **options)


def _feed(recorder: ClipRecorder, detections: set[int], count: int) -> None:
    for index in range(count):
        recorder.write(*_frame(index, index in detections))


def _clip_indices(path) -> list[int]:
    lines = path.with_suffix(".jsonl").read_text().splitlines()
    return [json.loads(line)["index"] for line in lines]


@pytest.mark.parametrize(
    ("now_s", "manual", "last_detection_s", "expected"),
    [
        (1.0, False, None, False),
        (1.0, True, None, True),
        (1.0, False, 1.0, True),
        (1.4, False, 1.0, True),  # exactly post_roll_s after: still in
        (1.41, False, 1.0, False),
        (9.0, True, 1.0, True),
    ],
)
def test_wants_clip(now_s, manual, last_detection_s, expected):
    assert wants_clip(now_s, manual, last_detection_s, 0.4) is expected


def test_clip_spans_pre_roll_before_the_first_detection_to_post_roll_after_the_last(
    tmp_path,
):
    recorder = _recorder(tmp_path)
    # Detections on frames 40-49 (1.60-1.96 s), with a one-frame gap at 45.
    _feed(recorder, set(range(40, 50)) - {45}, 100)
    recorder.close()

    (clip,) = tmp_path.glob("*.mp4")
    assert clip.name == "clip_20261126T231502.mp4"
    # 0.4 s before 1.60 s is frame 30; 0.4 s after 1.96 s is frame 59.
    assert _clip_indices(clip) == list(range(30, 60))
    images, times = decode_video(clip)
    assert len(images) == 30
    assert times == pytest.approx([i / FPS for i in range(30)], abs=1e-3)
    events = [
        json.loads(x) for x in clip.with_suffix(".jsonl").read_text().split("\n")[:-1]
    ]
    assert [e["polyp_present"] for e in events] == [
        i in set(range(40, 50)) - {45} for i in range(30, 60)
    ]
    # The clip shows the annotated frames (overlay fill inside the mask).
    _, frame40 = _frame(40, True)
    patch = images[10][20:30, 28:38].reshape(-1, 3).mean(axis=0)
    expected = frame40[20:30, 28:38].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch - expected).max() < 10, (patch, expected)
    assert patch[1] > 100, "the disc is green-tinted by the overlay (raw: G = 60)"


def test_separate_detections_make_separate_clips_and_close_ones_merge(tmp_path):
    recorder = _recorder(tmp_path)
    # 10 and 18 are 0.32 s apart (< post-roll): one clip; 60 is far: another.
    _feed(recorder, {10, 18, 60}, 90)
    status = recorder.status()
    recorder.close()
    clips = sorted(tmp_path.glob("clip_*.mp4"))
    assert [c.name for c in clips] == [
        "clip_20261126T231502.mp4",
        "clip_20261126T231503.mp4",
    ]
    assert _clip_indices(clips[0]) == list(range(0, 29))  # pre-roll clipped at start
    assert _clip_indices(clips[1]) == list(range(50, 71))
    assert recorder.clips_saved == 2
    assert status["recording"] is False and status["clips_auto"] is True


def test_manual_recording_keeps_its_pre_roll_and_stops_on_request(tmp_path):
    recorder = _recorder(tmp_path, auto=False)
    _feed(recorder, set(), 20)
    recorder.start_manual()
    assert recorder.status()["recording"] is True
    for index in range(20, 30):
        recorder.write(*_frame(index, True))  # detections do not start clips here
    recorder.stop_manual()
    recorder.write(*_frame(30, False))
    recorder.close()
    (clip,) = tmp_path.glob("*.mp4")
    assert clip.name.startswith("rec_")
    assert _clip_indices(clip) == list(range(10, 30))  # 0.4 s of pre-roll
    assert len(decode_video(clip)[0]) == 20


def test_no_signal_ends_an_event_clip(tmp_path):
    recorder = _recorder(tmp_path, post_roll_s=5.0)
    _feed(recorder, {5, 6}, 8)
    recorder.show_no_signal(np.zeros((*HW, 3), np.uint8))
    assert recorder.status()["recording"] is False
    recorder.close()
    (clip,) = tmp_path.glob("*.mp4")
    assert _clip_indices(clip) == list(range(0, 8))


def test_nothing_is_encoded_or_kept_without_pre_roll_or_recording(tmp_path):
    jpeg = JpegEncoder()
    recorder = ClipRecorder(tmp_path, jpeg=jpeg, auto=False, pre_roll_s=0.0)
    _feed(recorder, {1, 2}, 10)
    recorder.close()
    assert jpeg.encoded == 0 and not list(tmp_path.iterdir())


def test_the_pre_roll_buffer_is_bounded_by_time_and_by_memory():
    by_time = PreRollBuffer(seconds=1.0, max_bytes=10**9)
    for index in range(100):
        by_time.append(EncodedFrame(index / FPS, b"x" * 1000, "{}"))
    assert len(by_time) == 26 and by_time.nbytes == 26_000  # 1.0 s at 25 fps, inclusive
    by_memory = PreRollBuffer(seconds=60.0, max_bytes=50_000)
    for index in range(1000):
        by_memory.append(EncodedFrame(index / FPS, b"x" * 1000, "{}"))
        assert by_memory.nbytes <= 50_000
    assert len(by_memory) == 50
    assert by_memory.since(0.0)[-1].timestamp_s == 999 / FPS
    by_memory.append(EncodedFrame(0.0, b"x", "{}"))  # time went backwards: a new source
    assert len(by_memory) == 1


def test_a_long_session_keeps_memory_bounded(tmp_path):
    # Incompressible 240x320 frames (~200 kB as JPEG), 2 s of pre-roll, 1 MB cap.
    recorder = ClipRecorder(
        tmp_path, jpeg=JpegEncoder(90), pre_roll_s=2.0, buffer_bytes=1_000_000
    )
    rng = np.random.default_rng(0)
    for index in range(60):
        pixels = rng.integers(0, 256, (240, 320, 3), np.uint8)
        prediction = Prediction(
            Frame(index, index / FPS, pixels), torch.zeros(240, 320), 0.5
        )
        recorder.write(Findings.of(prediction), pixels)
        assert recorder._buffer.nbytes <= 1_000_000
    assert 0 < len(recorder._buffer) < 50
    recorder.close()


def test_encoder_reuses_the_bytes_of_the_same_image():
    jpeg = JpegEncoder(80)
    first, second = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    assert jpeg(first) is jpeg(first)
    jpeg(second)
    assert jpeg.encoded == 2
    with pytest.raises(ValueError, match="jpeg_quality"):
        JpegEncoder(0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pre_roll_s", -1.0, "pre_roll_s: expected >= 0"),
        ("post_roll_s", -0.1, "post_roll_s: expected >= 0"),
        ("buffer_mb", 0.0, "buffer_mb: expected > 0"),
    ],
)
def test_clip_settings_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        ClipSettings(**{field: value})


def test_run_with_clips_saves_an_event_clip_with_pre_roll(
    tmp_path, tiny_spec, monkeypatch
):
    # A file whose frames 0-19 are empty and 20-29 show the red disc, at 25 fps.
    empty = np.full((*HW, 3), (40, 20, 10), np.uint8)
    images = [empty] * 20 + [disc_image(HW, (24, 32), 10)] * 10 + [empty] * 20
    clip = write_video(tmp_path / "clip.mp4", images)
    config = StreamConfig(
        source=SourceSettings(uri=str(clip)),
        model=ModelSettings(device="cpu"),
        clips=ClipSettings(folder=tmp_path / "clips", pre_roll_s=0.2, post_roll_s=0.2),
    )
    config = dataclasses.replace(
        config, smoothing=dataclasses.replace(config.smoothing, enabled=False)
    )
    frames = FrameList()
    run(config, segmenter=RedDiscSegmenter(tiny_spec), sinks=[frames])
    (saved,) = (tmp_path / "clips").glob("clip_*.mp4")
    assert _clip_indices(saved) == list(range(15, 35))
    assert len(decode_video(saved)[0]) == 20


def test_cli_clips_option_saves_clips_there(tmp_path, tiny_spec, monkeypatch):
    from stream_media import tiny_model_file

    from streamseg.cli import main

    empty = np.full((*HW, 3), (40, 20, 10), np.uint8)
    images = [empty] * 10 + [disc_image(HW, (24, 32), 10)] * 5 + [empty] * 10
    clip = write_video(tmp_path / "clip.mp4", images)
    use_red_disc_segmenter(monkeypatch, tiny_spec)
    model = tiny_model_file(tiny_spec, tmp_path)
    overrides = [
        "clips.pre_roll_s=0.1",
        "clips.post_roll_s=0.1",
        "smoothing.enabled=false",
    ]
    code = main(
        [
            *["run", str(clip), "--model", str(model), "--clips", str(tmp_path / "c")],
            *[item for value in overrides for item in ("--set", value)],
        ]
    )
    assert code == 0
    (saved,) = (tmp_path / "c").glob("clip_*.mp4")
    # Polyp on frames 10-14 (0.40-0.56 s): 0.32 s (frame 8) to 0.64 s (frame 16).
    assert _clip_indices(saved) == list(range(8, 17))
