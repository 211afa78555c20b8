"""Fault injection on the real ``streamseg run`` command, each run in a subprocess.

SIGKILL at three moments (annotated MP4, event clips), a file size limit hit
mid-run (disk full), the output folder removed mid-run, a live source that
stalls past the stall limit and comes back; plus the building blocks
(fragmented recording, whole JSON lines, atomic files) alone. The table of
faults: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from live_helpers import free_port, get_json, sender, wait_until
from stream_media import decode_video, moving_disc, write_video

from streamseg import mp4
from streamseg.files import PAGE_BYTES, LineWriter, write_atomic
from streamseg.model import build_network, save_model
from streamseg.sinks import VideoRecorder

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0


@pytest.fixture(scope="module")
def five_second_clip(tmp_path_factory):
    """5 s of a moving disc at 25 fps, 160x120 (played in real time; conftest's
    ``clip`` is too short to kill a run mid-recording)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = moving_disc(125, hw=(120, 160), fps=FPS, radius=20)
    return write_video(path, [f.pixels for f in frames], fps=FPS)


def _always_polyp_model(spec, folder: Path) -> Path:
    """A model whose every pixel is a polyp (probability ~1): clips start at once."""
    torch.manual_seed(0)
    network = build_network(spec)
    with torch.no_grad():
        head = network.segmentation.segmentation_head[0]
        head.weight.zero_()
        head.bias.fill_(10.0)
    return save_model(folder / "always_polyp.safetensors", network, spec)


def _start(
    source, model: Path, out: Path, events: Path, *argv, preexec_fn=None
) -> subprocess.Popen:
    """``streamseg run SOURCE`` recording ``out`` and ``events``, one CPU thread."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    argv = [source, "--model", model, "--output", out, "--events", events, *argv]
    command = [sys.executable, "-m", "streamseg", "run", *map(str, argv)]
    command += ["--device", "cpu", "--set", "model.threads=1"]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_for_lines(process, path_of, count: int, timeout_s: float = 60.0) -> None:
    """Wait until the JSONL ``path_of()`` names has ``count`` lines."""

    def enough():
        if process.poll() is not None:
            raise AssertionError(f"ended too early: {process.communicate()}")
        path = path_of()
        return path is not None and _lines(path) >= count

    assert wait_until(enough, timeout_s), f"fewer than {count} lines in {timeout_s} s"


def _whole_json_lines(path: Path) -> list[dict]:
    """Every line of a JSONL file; fails on a torn (unterminated or invalid) line."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def _error_lines(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if line.startswith("streamseg: error:")
    ]


# --- SIGKILL ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kill_at_lines", [30, 60, 90])
def test_sigkill_leaves_a_playable_recording_and_event_clip_and_whole_lines(
    kill_at_lines, five_second_clip, tiny_spec, tmp_path
):
    # A model that sees a polyp everywhere: the event clip runs from the start.
    model = _always_polyp_model(tiny_spec, tmp_path)
    out, events, clips = tmp_path / "out.mp4", tmp_path / "events.jsonl", tmp_path / "c"
    process = _start(
        *[five_second_clip, model, out, events],
        *["--clips", clips, "--view", "none", "--set", "source.realtime=true"],
        *["--set", "clips.pre_roll_s=0.2"],
    )
    try:
        _wait_for_lines(process, lambda: events, kill_at_lines)
        process.kill()
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL

    # The annotated recording: plays up to at most one second before the kill
    # (0.5 s fragments), with the timestamps of the JSONL rows.
    rows = _whole_json_lines(events)
    assert len(rows) >= kill_at_lines
    images, times_s = decode_video(out)
    assert len(images) >= len(rows) - FPS * 1.0, (len(images), len(rows))
    assert len(images) <= len(rows) + 1  # the recording never runs ahead of the log
    assert times_s == pytest.approx(
        [row["timestamp_s"] - rows[0]["timestamp_s"] for row in rows[: len(images)]],
        abs=1e-3,
    )

    # The event clip, open at the kill: the same guarantee.
    (clip_events,) = clips.glob("clip_*.jsonl")
    clip_rows = _whole_json_lines(clip_events)
    assert len(clip_rows) >= kill_at_lines - FPS * 1.0
    assert all(row["polyp_present"] for row in clip_rows[5:])
    clip_images, _ = decode_video(clip_events.with_suffix(".mp4"))
    assert len(clip_images) >= len(clip_rows) - FPS * 1.0, (
        len(clip_images),
        len(clip_rows),
    )
    assert not list(clips.glob(".*finalizing"))  # killed while recording, not after


# --- disk full, folder removed ----------------------------------------------------


def test_a_full_disk_mid_run_is_one_line_exit_1_and_what_was_written_plays(
    model_file, tmp_path
):
    # Noise compresses badly: 2 MB hold a few fragments, not the whole clip.
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(100)]
    source = write_video(tmp_path / "noise.mp4", images)
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    limit_bytes = 2_000_000

    def small_disk():  # in the child: files may not grow beyond the limit (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    process = _start(
        *[source, model_file, out, events],
        *["--view", "none", "--set", "output.video_crf=0"],
        preexec_fn=small_disk,
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    (error,) = _error_lines(stderr)
    assert str(out) in error and "File too large" in error, error
    kept = int(error.split("the first ")[1].split(" frames are kept")[0])
    images_kept, _ = decode_video(out)
    assert 1 <= len(images_kept) < 100
    assert len(images_kept) == kept
    assert len(_whole_json_lines(events)) >= len(images_kept)


def test_removing_the_output_folder_mid_run_is_a_clear_error(
    five_second_clip, model_file, tmp_path
):
    folder = tmp_path / "outputs"
    events = folder / "events.jsonl"
    process = _start(
        *[five_second_clip, model_file, folder / "out.mp4", events],
        *["--view", "none", "--set", "source.realtime=true"],
    )
    try:
        _wait_for_lines(process, lambda: events, 15)
        shutil.rmtree(folder)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    (error,) = _error_lines(stderr)
    assert "deleted or its folder removed" in error, error
    assert "keep the output folder in place" in error, error


# --- a live source that stalls and comes back ----------------------------------------


@pytest.mark.slow
def test_a_stall_longer_than_the_limit_shows_no_signal_then_recovers(
    model_file, tmp_path
):
    url = f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    web = free_port()
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    process = _start(
        *[url, model_file, out, events, "--view", "web", "--bind", f"127.0.0.1:{web}"],
        *["--set", "source.stall_timeout_s=0.8", "--set", "source.no_signal_s=0.4"],
        *["--set", "source.reconnect_timeout_s=20"],
        *["--set", "source.open_timeout_s=20"],
    )
    status = f"http://127.0.0.1:{web}/status"

    def view_is_up():
        if process.poll() is not None:
            raise AssertionError(f"ended too early: {process.communicate()}")
        try:
            return get_json(status)
        except OSError:
            return False

    try:
        assert wait_until(view_is_up, 60.0)
        with sender(url, 2.0) as first:
            _wait_for_lines(process, lambda: events, 5)
            first.wait(timeout=10)
        before = _lines(events)
        # Silent for longer than the stall limit: NO SIGNAL, frames stop.
        assert wait_until(lambda: get_json(status)["signal"] is False, 10.0)
        time.sleep(1.5)
        stalled = _lines(events)
        with sender(url, 3.0):
            _wait_for_lines(process, lambda: events, stalled + 10)
            assert get_json(status)["signal"] is True
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "reconnecting" in stderr and "reconnected after" in stderr, stderr
    rows = _whole_json_lines(events)
    assert before >= 5 and len(rows) >= stalled + 10
    indices = [row["index"] for row in rows]
    assert indices == sorted(set(indices)), "frame indices continue after the stall"
    assert len(decode_video(out)[0]) == len(rows)


# --- the building blocks -------------------------------------------------------


def test_a_clean_stop_leaves_a_regular_mp4_with_its_index_first(tmp_path):
    path = tmp_path / "rec.mp4"
    recorder = VideoRecorder(path, nominal_fps=FPS)
    frames = moving_disc(60, hw=(48, 64), fps=FPS)
    for frame in frames:
        recorder.write_image(frame.pixels, frame.timestamp_s)
    recorder.close()
    data = path.read_bytes()
    assert b"moof" not in data  # no longer fragmented
    assert data.index(b"moov") < data.index(b"mdat")  # faststart
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 60
        keyframes_s = [
            float(packet.pts * stream.time_base)
            for packet in container.demux(stream)
            if packet.is_keyframe
        ]
    assert np.diff(keyframes_s).max() <= mp4.KEYFRAME_INTERVAL_S + 1e-6
    assert [p.name for p in tmp_path.iterdir()] == ["rec.mp4"]


def test_keyframes_come_by_time_even_at_a_low_frame_rate(tmp_path):
    # 3 fps for 4 s: a keyframe count of 25 frames would span 8 s.
    path = tmp_path / "slow.mp4"
    recorder = VideoRecorder(path, nominal_fps=25)
    for index, frame in enumerate(moving_disc(12, fps=3.0)):
        recorder.write_image(frame.pixels, index / 3.0)
    recorder.close()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes_s = [
            float(p.pts * stream.time_base)
            for p in container.demux(stream)
            if p.is_keyframe
        ]
    assert keyframes_s[:4] == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_a_failed_remux_keeps_the_fragmented_file(tmp_path, monkeypatch):
    path = tmp_path / "rec.mp4"
    real_open = av.open

    def no_room_for_the_copy(file, mode="r", **kwargs):
        if mode == "w" and str(file).endswith(".finalizing"):
            raise OSError(28, "No space left on device")
        return real_open(file, mode, **kwargs)

    monkeypatch.setattr(av, "open", no_room_for_the_copy)
    recorder = VideoRecorder(path)
    for frame in moving_disc(30):
        recorder.write_image(frame.pixels, frame.timestamp_s)
    recorder.close()
    monkeypatch.undo()
    assert b"moof" in path.read_bytes()  # still fragmented, and it plays
    assert len(decode_video(path)[0]) == 30
    assert [p.name for p in tmp_path.iterdir()] == ["rec.mp4"]


def test_lines_never_straddle_a_page_so_a_kill_cannot_tear_one(tmp_path):
    path = tmp_path / "lines.jsonl"
    rng = np.random.default_rng(0)
    rows = [{"index": i, "pad": "x" * int(rng.integers(0, 300))} for i in range(200)]
    with LineWriter(path) as lines:
        for row in rows:
            lines.write(json.dumps(row))
    data = path.read_bytes()
    assert [json.loads(line) for line in data.splitlines()] == rows
    # Every page ends at the end of a line: a write cut at a page boundary
    # (how Linux stops a write for a fatal signal) leaves whole lines only.
    for boundary in range(PAGE_BYTES, len(data), PAGE_BYTES):
        assert data[boundary - 1 : boundary] == b"\n", boundary


def test_a_failed_line_write_keeps_the_lines_before_it(tmp_path, monkeypatch):
    path = tmp_path / "lines.jsonl"
    lines = LineWriter(path)
    for index in range(40):
        lines.write(json.dumps({"index": index, "pad": "y" * 90}))
    real_pwrite = os.pwrite

    calls = []

    def half_then_full(fd, data, offset):  # what a disk that fills up does
        calls.append(len(data))
        if len(calls) == 1:
            return real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        if len(data) == 1:  # overwriting a byte needs no new space
            return real_pwrite(fd, data, offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(OSError, match="No space"):
        lines.write(json.dumps({"index": 40, "pad": "z" * 4000}))
    monkeypatch.undo()
    lines.close()
    assert [row["index"] for row in _whole_json_lines(path)] == list(range(40))


def test_atomic_writes_replace_the_whole_file_or_nothing(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "summary.json", '{"old": true}\n')

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_atomic(path, '{"new": true}\n')
    monkeypatch.undo()
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_killed_recording_can_be_counted_without_decoding(tmp_path):
    # What the disk-full message reports: packets readable from a cut file.
    path = tmp_path / "rec.mp4"
    images = [frame.pixels for frame in moving_disc(50)]
    write_video(path, images, options=mp4.muxer_options(path))
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"moof") - 4])  # the last fragment is lost
    counted = mp4.count_frames(path)
    assert 0 < counted < 50
    assert counted == len(decode_video(path)[0])
