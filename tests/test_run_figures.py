"""What the screen says: the HUD, the status panel and the progress figures.

A batched file and a paced live source run through :func:`streamseg.app.run`;
the figures the HUD draws, the panel serves and the progress callback gets
are compared with the rate the test itself measures at the sink (wall clock).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time

import numpy as np
import pytest
from live_helpers import RedDiscSegmenter
from stream_media import disc_image, moving_disc, write_video

import streamseg.app
from streamseg.alerts import AlertSettings
from streamseg.app import StreamConfig, run
from streamseg.segmenter import ModelSettings
from streamseg.sinks import FrameList, OutputSettings
from streamseg.smoothing import SmoothingSettings
from streamseg.sources import SourceSettings

BATCH_S = 0.5  # the slow segmenter's time per batch


class _SlowSegmenter(RedDiscSegmenter):
    """Takes ``BATCH_S`` per call, whatever the batch size (like a busy CPU)."""

    def segment(self, frames, *, tta=None):
        time.sleep(BATCH_S)
        return super().segment(frames)


class _Clocked(FrameList):
    """Notes when each frame reaches the outputs, and the panel's figures then."""

    name = "clocked"

    def __init__(self, panel) -> None:
        super().__init__()
        self.panel = panel
        self.written_s: list[float] = []
        self.figures: list[dict] = []

    def write(self, findings, image) -> None:
        super().write(findings, image)
        self.written_s.append(time.monotonic())
        self.figures.append(dict(self.panel[0]()) if self.panel else {})


def _watch(monkeypatch):
    """Capture the HUD figures drawn and the panel's status function."""
    huds, panel = [], []
    render = streamseg.app.render

    def recording_render(findings, style, hud=None):
        huds.append(hud)
        return render(findings, style, hud)

    live_status = streamseg.app._live_status

    def recording_status(*args, **kwargs):
        panel.append(live_status(*args, **kwargs))
        return panel[-1]

    monkeypatch.setattr("streamseg.app.render", recording_render)
    monkeypatch.setattr("streamseg.app._live_status", recording_status)
    return huds, panel


def _config(clip, **source) -> StreamConfig:
    return StreamConfig(
        source=SourceSettings(uri=str(clip), **source),
        model=ModelSettings(device="cpu", batch_size=4),
        smoothing=SmoothingSettings(enabled=False),
    )


def _measured_fps(written_s: list[float], first: int) -> float:
    """Frames per wall-clock second from frame ``first`` to the last one."""
    return (len(written_s) - 1 - first) / (written_s[-1] - written_s[first])


@pytest.mark.slow
def test_a_batched_file_shows_its_real_speed_and_progress_not_burst_rates(
    tmp_path, tiny_spec, monkeypatch
):
    clip = write_video(tmp_path / "clip.mp4", [f.pixels for f in moving_disc(24)])
    huds, panel = _watch(monkeypatch)
    progress = []
    sink = _Clocked(panel)
    run(
        _config(clip),
        segmenter=_SlowSegmenter(tiny_spec),
        sinks=[sink],
        on_progress=lambda *figures: progress.append(figures),
    )
    # Batches of 4 end every BATCH_S: the frames of one batch reach the
    # outputs a few ms apart, so a rate over single frames would be absurd.
    measured = _measured_fps(sink.written_s, first=7)  # from the end of batch 2
    assert measured == pytest.approx(4 / BATCH_S, rel=0.3)  # the test's own clock
    steady = range(12, 24)  # once the window holds 2 s of batches
    for index in steady:
        hud = huds[index]
        assert hud.fps == pytest.approx(measured, rel=0.25), (index, hud)
        assert hud.latency_ms is None, "a file's queue wait is not shown"
        assert (hud.frames_done, hud.frames_total) == (index + 1, 24)
        assert hud.speed_x == pytest.approx(hud.fps / 25.0, rel=0.1)
        shown = sink.figures[index]
        assert shown["fps"] == pytest.approx(measured, rel=0.25)
        assert shown["latency_ms"] is None
        assert (shown["frames_done"], shown["frames_total"]) == (index + 1, 24)
        assert shown["speed_x"] == pytest.approx(shown["fps"] / 25.0, rel=0.1)
        done, total, figures = progress[index]
        assert (done, total) == (index + 1, 24)
        assert figures.fps == pytest.approx(measured, rel=0.25)


def test_a_paced_live_source_shows_its_frame_rate_and_grab_to_overlay_latency(
    tmp_path, tiny_spec, monkeypatch
):
    clip = write_video(
        tmp_path / "clip.mp4", [f.pixels for f in moving_disc(50)], fps=25.0
    )
    huds, panel = _watch(monkeypatch)
    sink = _Clocked(panel)
    stats = run(
        _config(clip, realtime=True),
        segmenter=RedDiscSegmenter(tiny_spec),
        sinks=[sink],
    )
    assert stats.live and stats.frames_out >= 40
    measured = _measured_fps(sink.written_s, first=10)
    assert measured == pytest.approx(25.0, rel=0.3)
    for index in range(30, stats.frames_out):
        hud = huds[index]
        assert hud.fps == pytest.approx(measured, rel=0.25), (index, hud)
        assert hud.frames_total is None and hud.speed_x is None
        # The frame's own age when its HUD is drawn: at most its age at the sink.
        age_ms = 1000 * (
            sink.written_s[index] - sink.predictions[index].frame.timestamp_s
        )
        assert 0 <= hud.latency_ms <= age_ms
        shown = sink.figures[index]
        assert shown["fps"] == pytest.approx(measured, rel=0.25)
        assert 0 <= shown["latency_ms"] <= age_ms
    assert dataclasses.asdict(stats)["frames_dropped"] == stats.frames_dropped


# --- times a person can use --------------------------------------------------


def _polyp_clip(path, empty_frames=10, polyp_frames=10, fps=25.0):
    hw = (48, 64)
    empty = np.full((*hw, 3), (40, 20, 10), np.uint8)
    disc = disc_image(hw, (24, 32), 10)
    return write_video(path, [empty] * empty_frames + [disc] * polyp_frames, fps=fps)


def _run_with_events(tmp_path, tiny_spec, caplog, **source):
    """Run the polyp clip with an event log and alerts on.

    Returns:
        (run statistics, the JSONL rows, the one alert message).
    """
    caplog.set_level(logging.INFO, logger="streamseg")
    clip = _polyp_clip(tmp_path / "clip.mp4")
    events = tmp_path / "events.jsonl"
    config = dataclasses.replace(
        _config(clip, **source),
        output=OutputSettings(events=events),
        alerts=AlertSettings(flash=True),
    )
    stats = run(config, segmenter=RedDiscSegmenter(tiny_spec))
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    (message,) = [r.getMessage() for r in caplog.records if "appeared" in r.message]
    return stats, rows, message


def test_live_rows_and_alerts_give_stream_time_and_wall_clock_time(
    tmp_path, tiny_spec, caplog
):
    before = datetime.datetime.now().astimezone()
    stats, rows, message = _run_with_events(tmp_path, tiny_spec, caplog, realtime=True)
    after = datetime.datetime.now().astimezone()
    assert stats.live and len(rows) == stats.frames_out >= 5
    times_s = [row["timestamp_s"] for row in rows]
    assert times_s[0] == 0.0, "stream time: seconds since the first frame"
    assert times_s == sorted(times_s) and times_s[-1] < 5.0
    walls = [datetime.datetime.fromisoformat(row["wall_time"]) for row in rows]
    assert all(wall.tzinfo is not None for wall in walls), "ISO 8601 with offset"
    assert before <= walls[0] <= walls[-1] <= after
    for row, wall in zip(rows, walls, strict=True):
        elapsed_s = (wall - walls[0]).total_seconds()
        assert elapsed_s == pytest.approx(row["timestamp_s"], abs=0.002)
    # The alert follows what the user is shown: the first frame with a track.
    first = next(row for row in rows if row["track_ids"])
    assert f"at {first['timestamp_s']:.2f} s" in message, message
    assert first["wall_time"][11:19] in message, message  # hh:mm:ss


def test_file_rows_keep_the_presentation_time_and_no_wall_clock(
    tmp_path, tiny_spec, caplog
):
    _, rows, message = _run_with_events(tmp_path, tiny_spec, caplog)
    assert [row["timestamp_s"] for row in rows] == pytest.approx(
        [i / 25 for i in range(20)], abs=1e-3
    )
    assert not any("wall_time" in row for row in rows)
    # Detected at frame 10 (0.40 s), shown after tracking's 0.04 s minimum.
    assert "at 0.44 s" in message, message
