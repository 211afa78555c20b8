"""The one definition of the figures shown: fps between batch ends, speed, latency."""

from __future__ import annotations

import numpy as np
import pytest

from streamseg.frames import Frame
from streamseg.stats import Checkpoint, KeepUpCheck, StatsRecorder, windowed_rate


def _ends(period_s: float, batch: int, count: int, fps: float = 25.0):
    """Batch ends every ``period_s``: ``batch`` more frames of 1/fps video each."""
    return [
        Checkpoint(period_s * k, batch * k, batch * k / fps - 1 / fps)
        for k in range(1, count + 1)
    ]


@pytest.mark.parametrize(
    ("checkpoints", "fps", "speed_x", "first"),
    [
        ([], None, None, 0),
        (_ends(0.5, 4, 1), None, None, 0),  # one batch end: no interval yet
        (_ends(0.69, 4, 2), 4 / 0.69, 4 / 25 / 0.69, 0),  # early: oldest end
        (_ends(0.69, 4, 10), 4 / 0.69, 4 / 25 / 0.69, 6),  # >= 2 s and 8 frames
        (_ends(0.04, 1, 100), 25.0, 1.0, 49),  # live: batches of 1 at 25 fps
        (_ends(1.0, 1, 12), 1.0, 0.04, 3),  # slow: 8 frames make the window
        ([Checkpoint(1.0, 4, 0.1), Checkpoint(1.0, 8, 0.2)], None, None, 0),
    ],
    ids=["none", "one", "early", "batched", "live", "slow", "no-time"],
)
def test_windowed_rate(checkpoints, fps, speed_x, first):
    measured = windowed_rate(checkpoints)
    if fps is None:
        assert measured[:2] == (None, None)
    else:
        assert measured[0] == pytest.approx(fps)
        assert measured[1] == pytest.approx(speed_x)
    assert measured[2] == first


def test_a_batch_is_one_step_however_close_its_frames_finish(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("streamseg.stats.time.perf_counter", lambda: now[0])
    stats = StatsRecorder("clip", live=False, frames_total=40)
    pixels = np.zeros((2, 2, 3), np.uint8)
    shown = []
    for batch in range(10):  # one batch of 4 every 0.5 s, written 1 ms apart
        frames = [Frame(4 * batch + i, (4 * batch + i) / 25, pixels) for i in range(4)]
        for frame in frames:
            stats.frame_in(frame)
        now[0] += 0.5
        for frame in frames:
            shown.append(stats.figures(frame))
            stats.frame_out(0.0, frame.timestamp_s)
            now[0] += 0.001
        stats.batch_out()
    assert [f.frames_done for f in shown] == list(range(1, 41))
    assert all(f.fps is None for f in shown[:8])
    for figures in shown[8:]:  # 4 frames per 0.503 s, never a burst rate
        assert figures.fps == pytest.approx(4 / 0.503, rel=0.01)
        assert figures.speed_x == pytest.approx(figures.fps / 25, rel=0.01)
        assert figures.latency_ms is None and figures.frames_total == 40


def test_frames_a_live_source_delivered_before_the_first_one_taken_count_as_drops():
    stats = StatsRecorder("camera", live=True)
    pixels = np.zeros((2, 2, 3), np.uint8)
    stats.frame_in(Frame(37, 0.0, pixels))  # 0-36 went while the model loaded
    stats.frame_in(Frame(40, 0.1, pixels))
    assert (stats.frames_in, stats.frames_dropped) == (2, 39)


def test_keep_up_check_speaks_once_after_its_time_and_only_when_frames_are_lost():
    check = KeepUpCheck(after_s=10.0, max_dropped_fraction=0.1)
    # 25 fps source; the run takes every second frame. The first frame arrives
    # after 7 were lost while the model loaded: those do not count.
    assert check.observe(1, 7, 100.0) is None
    assert check.observe(100, 106, 108.0) is None  # 8 s: too early to judge
    behind = check.observe(126, 132, 110.0)
    assert behind is not None
    assert behind.over_s == pytest.approx(10.0)
    assert behind.dropped_fraction == pytest.approx(125 / 250)
    assert behind.segmented_fps == pytest.approx(12.5)
    assert behind.source_fps == pytest.approx(25.0)
    assert check.observe(500, 600, 130.0) is None  # said once

    keeping_up = KeepUpCheck(after_s=10.0, max_dropped_fraction=0.1)
    keeping_up.observe(1, 0, 0.0)
    assert keeping_up.observe(240, 10, 10.0) is None  # 4 % dropped
    assert keeping_up.observe(250, 500, 30.0) is None  # judged once, at 10 s

    # A frame shown again before the source delivered another is no evidence.
    waiting = KeepUpCheck(after_s=1.0, max_dropped_fraction=0.1)
    waiting.observe(2, 9, 0.0)
    assert waiting.observe(2, 9, 1.5) is None
    behind = waiting.observe(4, 26, 1.6)
    assert behind is not None and behind.dropped_fraction == pytest.approx(17 / 19)
