"""Track measures: toggles, true episodes, ID switches, delay, replay from a cache."""

from __future__ import annotations

import numpy as np
import pytest

from streamseg.detections import detect
from streamseg.evaluation.track_metrics import (
    TrackScorer,
    id_switches,
    read_polyp_ids,
    score_tracking,
    toggles,
    true_episodes,
)
from streamseg.evaluation.video_data import CachedSequence
from streamseg.smoothing import SmoothingSettings
from streamseg.tracking import Tracker, TrackingSettings

HW = (48, 64)


def disc(center_xy, radius=8, hw=HW):
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    return (xx - center_xy[0]) ** 2 + (yy - center_xy[1]) ** 2 <= radius**2


def test_counting_helpers():
    assert toggles([True, False, True, True]) == 2
    assert toggles([False, False, True]) == 0  # the first appearance is no blink
    assert true_episodes([1, 1, 0, 1]) == [(0, 2), (3, 4)]
    assert true_episodes([1, 1, 1], [5, 6, 6]) == [(0, 1), (1, 3)]
    assert id_switches([1, None, 1, 2]) == 1


def test_scorer_measures_delay_switches_and_misses():
    truth = [disc((20, 24))] * 10 + [np.zeros(HW, bool)] * 3 + [disc((44, 24))] * 6
    # The model finds the first polyp from frame 2; the second never.
    predicted = (
        [np.zeros(HW, bool)] * 2 + [disc((21, 24))] * 8 + [np.zeros(HW, bool)] * 9
    )
    tracker = Tracker(TrackingSettings(min_on_s=0.04))
    scorer = TrackScorer()
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        regions = detect(p)
        scorer.add(tracker(i / 25, regions), regions, t, p)
    scores = scorer.summary()
    assert scores.episodes == 2 and scores.missed_episodes == 1
    assert scores.newly_missed_episodes == 0
    assert scores.mean_delay_ms == pytest.approx(120.0)  # frame 3: min_on after frame 2
    assert scores.added_delay_ms_mean == pytest.approx(40.0)
    assert scores.id_switches == 0 and scores.polyps_shown == 1
    assert scores.true_polyps == 1  # one sequence, polyp ids unknown


def test_replay_steadies_a_blinking_output_and_costs_no_dice():
    rng = np.random.default_rng(0)
    frames = 50
    probabilities = np.zeros((frames, *HW), np.float16)
    truth = np.zeros((frames, *HW), bool)
    for i in range(frames):
        truth[i] = disc((20 + i // 5, 24))
        if rng.random() > 0.25:  # the model misses a quarter of the frames
            probabilities[i][truth[i]] = 0.9
    sequence = CachedSequence(
        "blinking", np.arange(frames) / 25.0, probabilities, truth, HW
    )
    smoothing = SmoothingSettings(min_area_fraction=0.0, hysteresis_gap=0.0)
    scores = score_tracking([sequence], smoothing, TrackingSettings(), 0.5)
    assert scores.per_frame_toggles_per_minute > 100
    assert scores.toggles_per_minute == 0.0
    assert scores.polyps_shown == 1 and scores.id_switches == 0
    expected = np.mean(
        [
            2 * (p >= 0.5)[t].sum() / ((p >= 0.5).sum() + t.sum())
            for p, t in zip(probabilities, truth, strict=True)
        ]
    )
    assert scores.dice_macro == pytest.approx(expected)


def test_polyp_ids_come_from_a_csv_column(tmp_path):
    path = tmp_path / "frames.csv"
    path.write_text("index,segment\n0,0\n1,0\n2,1\n")
    assert read_polyp_ids(str(path)) == (0, 0, 1)
    with pytest.raises(ValueError, match="no column 'polyp'"):
        read_polyp_ids(f"{path}:polyp")
