"""Video metrics against hand-made sequences with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamseg.evaluation.video_metrics import (
    VideoScorer,
    detection_episodes,
    dice_iou,
    flicker,
    toggles_per_minute,
)

ON = np.ones((4, 4), bool)
OFF = np.zeros((4, 4), bool)


def _half() -> np.ndarray:
    mask = OFF.copy()
    mask[:2] = True
    return mask


@pytest.mark.parametrize(
    ("masks", "expected"),
    [
        ([ON] * 5, 0.0),
        ([OFF] * 5, 0.0),
        ([ON, OFF] * 3, 1.0),
        ([ON, _half(), ON], 0.5),  # IoU(ON, half) = 8/16
        ([ON], 0.0),
    ],
    ids=["steady", "empty", "blinking", "half", "single"],
)
def test_flicker(masks, expected):
    assert flicker(masks) == pytest.approx(expected)


def test_dice_iou_hand_computed():
    assert dice_iou(0, 0, 0) == (1.0, 1.0)
    assert dice_iou(0, 3, 0) == (0.0, 0.0)
    assert dice_iou(6, 2, 2) == pytest.approx((12 / 16, 6 / 10))


def test_toggles_per_minute():
    # 10 frames at 10 fps = 1 s; on/off alternating = 9 toggles -> 540 per minute.
    assert toggles_per_minute(
        [i % 2 == 0 for i in range(10)], [i / 10 for i in range(10)]
    ) == (pytest.approx(540.0))
    assert toggles_per_minute([True] * 10, [i / 10 for i in range(10)]) == 0.0


@pytest.mark.parametrize("shift", [0, 1, 3, 7])
def test_detection_delay_of_a_shifted_sequence_is_the_shift(shift):
    fps = 25.0
    truth = [False] * 5 + [True] * 20 + [False] * 5
    detected = [False] * (5 + shift) + [True] * (20 - shift) + [False] * 5
    timestamps = [i / fps for i in range(len(truth))]
    (episode,) = detection_episodes(detected, truth, timestamps)
    assert episode.first_index == 5 and episode.length_frames == 20
    assert episode.delay_frames == shift
    assert episode.delay_s == pytest.approx(shift / fps)


def test_missed_episode_and_two_episodes():
    truth = [True, True, False, True, True]
    detected = [False, False, False, False, True]
    first, second = detection_episodes(detected, truth, [0, 1, 2, 3, 4])
    assert first.delay_frames is None and first.delay_s is None
    assert second.delay_frames == 1 and second.delay_s == 1.0


def test_scorer_summary_on_known_sequence():
    scorer = VideoScorer()
    truth = [OFF, OFF, ON, ON, ON, ON]
    predicted = [
        OFF,
        ON,
        OFF,
        ON,
        ON,
        ON,
    ]  # one false-positive frame, detection 1 frame late
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        scorer.add(p, t, i * 0.04)
    scores = scorer.summary()
    assert scores.frames == 6
    assert scores.false_positive_frames == 1 and scores.frames_without_polyp == 2
    assert scores.episodes == 1 and scores.missed_episodes == 0
    assert scores.mean_delay_frames == 1 and scores.mean_delay_ms == pytest.approx(40.0)
    # micro: tp = 48, fp = 16, fn = 16 -> Dice 96/128
    assert scores.dice_micro == pytest.approx(0.75)
    # macro: frames score 1, 0, 0, 1, 1, 1
    assert scores.dice_macro == pytest.approx(4 / 6)
    # predicted: OFF->ON 1, ON->OFF 1, OFF->ON 1, then 0, 0 -> 3/5; truth: 1/5
    assert scores.flicker_predicted == pytest.approx(3 / 5)
    assert scores.flicker_truth == pytest.approx(1 / 5)
    # 3 toggles over 6 frames of 40 ms = 0.24 s -> 750 per minute
    assert scores.toggles_per_minute == pytest.approx(750.0)


def test_scorer_empty_and_shape_mismatch():
    assert math.isnan(VideoScorer().summary().dice_micro)
    with pytest.raises(ValueError, match="differs from truth shape"):
        VideoScorer().add(np.zeros((2, 2), bool), np.zeros((3, 3), bool), 0.0)
