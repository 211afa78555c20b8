"""What the screen says: the HUD, the status panel and the progress figures.

A batched file and a paced live source run through :func:`streamseg.app.run`;
the figures the HUD draws, the panel serves and the progress callback gets
are compared with the rate the test itself measures at the sink (wall clock).
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from live_helpers import RedDiscSegmenter
from stream_media import moving_disc, write_video

import streamseg.app
from streamseg.app import ModelSettings, StreamConfig, run
from streamseg.sinks import FrameList
from streamseg.smoothing import SmoothingSettings
from streamseg.sources import SourceSettings

BATCH_S = 0.5  # the slow segmenter's time per batch


class _SlowSegmenter(RedDiscSegmenter):
    """Takes ``BATCH_S`` per call, whatever the batch size (like a busy CPU)."""

    def segment(self, frames):
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

    def write(self, prediction, image) -> None:
        super().write(prediction, image)
        self.written_s.append(time.monotonic())
        self.figures.append(dict(self.panel[0]()) if self.panel else {})


def _watch(monkeypatch, segmenter):
    """Capture the HUD figures drawn and the panel's status function."""
    huds, panel = [], []
    render = streamseg.app.render

    def recording_render(prediction, style, hud=None, *args, **kwargs):
        huds.append(hud)
        return render(prediction, style, hud, *args, **kwargs)

    live_status = streamseg.app._live_status

    def recording_status(*args, **kwargs):
        panel.append(live_status(*args, **kwargs))
        return panel[-1]

    monkeypatch.setattr("streamseg.app.render", recording_render)
    monkeypatch.setattr("streamseg.app._live_status", recording_status)
    monkeypatch.setattr("streamseg.app._load_segmenter", lambda settings: segmenter)
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
    huds, panel = _watch(monkeypatch, _SlowSegmenter(tiny_spec))
    progress = []
    sink = _Clocked(panel)
    run(
        _config(clip),
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
    huds, panel = _watch(monkeypatch, RedDiscSegmenter(tiny_spec))
    sink = _Clocked(panel)
    stats = run(_config(clip, realtime=True), sinks=[sink])
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
