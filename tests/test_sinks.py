"""Sinks: MP4 frame count and timing; JSONL fields; mask PNGs; the window check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stream_media import decode_video, disc_image

from streamseg.findings import Findings
from streamseg.frames import Frame, Prediction
from streamseg.outputs import open_outputs
from streamseg.sinks import (
    EventLog,
    FrameList,
    MaskWriter,
    OutputError,
    OutputSettings,
    Sinks,
    VideoRecorder,
    check_outputs,
)
from streamseg.window import Display, gui_backend


def _prediction(index, timestamp_s, hw=(48, 64), square=None):
    probabilities = torch.zeros(hw)
    if square is not None:
        top, left, size = square
        probabilities[top : top + size, left : left + size] = 0.8
    pixels = disc_image(hw, (hw[0] / 2, 8 + 3 * index), 6)
    return Findings.of(
        Prediction(Frame(index, timestamp_s, pixels), probabilities, 0.5)
    )


def test_recording_keeps_frame_count_and_source_timing(tmp_path):
    # Variable frame rate with a drop (frames 3-5 missing) and a non-zero start.
    indices = [0, 1, 2, 6, 7, 8]
    timestamps_s = [10.0, 10.04, 10.08, 10.24, 10.27, 10.35]
    recorder = VideoRecorder(tmp_path / "out" / "video.mp4", nominal_fps=25)
    written = []
    for index, timestamp_s in zip(indices, timestamps_s, strict=True):
        prediction = _prediction(index, timestamp_s)
        recorder.write(prediction, prediction.frame.pixels)
        written.append(prediction.frame.pixels)
    recorder.close()
    images, times = decode_video(tmp_path / "out" / "video.mp4")
    assert len(images) == len(indices)
    assert times == pytest.approx([t - 10.0 for t in timestamps_s], abs=1e-4)
    # Lossy, but the same pictures in the same order.
    for image, original in zip(images, written, strict=True):
        assert np.abs(image.astype(int) - original).mean() < 4


def test_odd_frame_sizes_are_padded_to_even(tmp_path):
    recorder = VideoRecorder(tmp_path / "odd.mp4")
    for index in range(3):
        prediction = _prediction(index, index / 25, hw=(45, 63))
        recorder.write(prediction, prediction.frame.pixels)
    recorder.close()
    images, _ = decode_video(tmp_path / "odd.mp4")
    assert len(images) == 3 and images[0].shape == (46, 64, 3)


def test_event_log_lines_have_every_field(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.write(_prediction(0, 0.0), None)
    log.write(_prediction(1, 0.04, square=(10, 20, 8)), None)
    log.close()
    lines = [
        json.loads(line)
        for line in (tmp_path / "events.jsonl").read_text().splitlines()
    ]
    assert lines[0] == {
        "index": 0,
        "timestamp_s": 0.0,
        "polyp_present": False,
        "area_fraction": 0.0,
        "boxes_xywh": [],
        "max_probability": 0.0,
        "track_ids": [],
    }
    assert lines[1]["polyp_present"] is True
    assert lines[1]["boxes_xywh"] == [[20, 10, 8, 8]]
    assert lines[1]["area_fraction"] == pytest.approx(64 / (48 * 64), abs=1e-6)
    assert lines[1]["max_probability"] == pytest.approx(0.8)


def test_mask_pngs_hold_the_final_mask(tmp_path):
    import cv2

    writer = MaskWriter(tmp_path / "masks")
    writer.write(_prediction(7, 0.0, square=(10, 20, 8)), None)
    mask = cv2.imread(str(tmp_path / "masks" / "000007.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (48, 64) and set(np.unique(mask)) == {0, 255}
    assert np.count_nonzero(mask) == 64


@pytest.mark.skipif(gui_backend() is not None, reason="this OpenCV has a GUI")
def test_window_without_gui_support_says_what_to_do_instead():
    with pytest.raises(OutputError, match="use --view none"):
        Display()
    with pytest.raises(OutputError, match="use --view none"):
        open_outputs(OutputSettings(view="window"))


def test_sinks_are_all_closed_even_if_one_fails():
    class Broken(FrameList):
        name = "broken"

        def close(self):
            super().close()
            raise OSError("disk full")

    first, broken, last = FrameList(), Broken(), FrameList()
    with pytest.raises(OSError, match="disk full"), Sinks([first, broken, last]):
        pass
    assert first.closed and broken.closed and last.closed


def test_unwritable_output_fails_clearly(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot create the output folder"):
        EventLog(tmp_path / "file" / "events.jsonl")
    with pytest.raises(OutputError, match="is a folder"):
        VideoRecorder(tmp_path)


def test_checking_the_outputs_creates_no_folder_and_still_catches_bad_paths(
    tmp_path,
):
    settings = OutputSettings(
        video=tmp_path / "a" / "out.mp4",
        events=tmp_path / "b" / "events.jsonl",
        masks=tmp_path / "c" / "masks",
    )
    check_outputs(settings)  # before the model loads: nothing is written yet
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    for bad in (
        OutputSettings(video=tmp_path / "file" / "out.mp4"),
        OutputSettings(events=tmp_path / "file" / "x" / "e.jsonl"),
        OutputSettings(masks=tmp_path / "file" / "masks"),
    ):
        with pytest.raises(OutputError, match="a part of this path is a file"):
            check_outputs(bad)
    with pytest.raises(OutputError, match="is a folder"):
        check_outputs(OutputSettings(events=tmp_path))
