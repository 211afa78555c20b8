"""Video-time quality metrics: accuracy, flicker, false-positive frames, toggles, delay.

All functions are pure and work on per-frame boolean masks (numpy, (H, W))
with timestamps in seconds. :class:`VideoScorer` accumulates them frame by
frame, so a long video never has to be held in memory.

Conventions (stated in every report):

* Dice/IoU *micro*: pixels pooled over all frames; *macro*: mean of
  per-frame scores, where a frame with empty truth and empty prediction
  scores 1 and empty truth with any prediction scores 0.
* Flicker: mean over consecutive frame pairs of ``1 - IoU(mask_t, mask_t-1)``
  (two empty masks: IoU 1, flicker 0). It is reported for the prediction and
  for the ground truth: the truth's flicker is real motion, so the excess over
  it is what the viewer perceives as instability.
* A *detection* of a polyp episode (a run of frames whose truth is not empty)
  is the first frame whose prediction overlaps the truth with IoU >=
  ``min_detection_iou``; the delay is counted from the episode's first frame.
* A scorer may hold several unrelated sequences
  (:meth:`VideoScorer.start_sequence`): no flicker pair, toggle or episode
  spans a cut, and the duration is the sum of the sequences' durations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from streamseg.evaluation.metrics import dice_score, iou_score


def overlap_counts(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) pixel counts."""
    predicted = predicted.astype(bool, copy=False)
    truth = truth.astype(bool, copy=False)
    tp = int(np.count_nonzero(predicted & truth))
    return tp, int(np.count_nonzero(predicted)) - tp, int(np.count_nonzero(truth)) - tp


def dice_iou(tp: int, fp: int, fn: int) -> tuple[float, float]:
    """Dice and IoU from counts; both empty (no positives anywhere) scores (1, 1).

    (:mod:`streamseg.evaluation.metrics`, the scores every report uses.)

    Example:
        >>> dice_iou(2, 1, 1)
        (0.6666666666666666, 0.5)
    """
    return float(dice_score(tp, fp, fn)), float(iou_score(tp, fp, fn))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks give 1."""
    return dice_iou(*overlap_counts(a, b))[1]


def flicker(masks: Sequence[np.ndarray]) -> float:
    """Mean ``1 - IoU`` between consecutive masks (0 for a steady mask).

    Example:
        >>> on, off = np.ones((2, 2), bool), np.zeros((2, 2), bool)
        >>> flicker([on, off, on, off])
        1.0
    """
    if len(masks) < 2:
        return 0.0
    return float(np.mean([1 - mask_iou(a, b) for a, b in itertools.pairwise(masks)]))


def toggles_per_minute(present: Sequence[bool], timestamps_s: Sequence[float]) -> float:
    """How often 'polyp present' switches on or off, per minute of video."""
    if len(present) < 2:
        return 0.0
    toggles = sum(a != b for a, b in itertools.pairwise(present))
    duration_s = _duration_s(timestamps_s)
    return 60.0 * toggles / duration_s if duration_s > 0 else 0.0


def _duration_s(timestamps_s: Sequence[float]) -> float:
    if len(timestamps_s) < 2:
        return 0.0
    # The last frame lasts one typical frame interval.
    step = float(np.median(np.diff(timestamps_s)))
    return float(timestamps_s[-1] - timestamps_s[0]) + step


@dataclass(frozen=True)
class Episode:
    """One run of consecutive frames whose ground truth shows a polyp.

    Attributes:
        first_index: Position (in the scored sequence) of the episode's first frame.
        length_frames: Frames in the episode.
        delay_frames: Frames from the first frame to the first detection
            (None: never detected within the episode).
        delay_s: The same in seconds, from the frames' timestamps.
    """

    first_index: int
    length_frames: int
    delay_frames: int | None
    delay_s: float | None


def detection_episodes(
    detected: Sequence[bool],
    truth_present: Sequence[bool],
    timestamps_s: Sequence[float],
) -> list[Episode]:
    """Split the truth into polyp episodes and measure each one's detection delay.

    Args:
        detected: Per frame, whether the prediction detects the polyp
            (overlap with the truth at the chosen IoU).
        truth_present: Per frame, whether the truth mask is non-empty.
        timestamps_s: Per frame presentation time.

    Example:
        >>> episodes = detection_episodes(
        ...     [0, 0, 1, 1], [0, 1, 1, 1], [0.0, 0.04, 0.08, 0.12]
        ... )
        >>> episodes[0].delay_frames
        1
    """
    if not len(detected) == len(truth_present) == len(timestamps_s):
        raise ValueError(
            "detected, truth_present and timestamps_s must have one entry per frame, "
            f"got {len(detected)}, {len(truth_present)}, {len(timestamps_s)}"
        )
    episodes = []
    start = None
    for i in range(len(truth_present) + 1):
        inside = i < len(truth_present) and bool(truth_present[i])
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            hit = next((j for j in range(start, i) if detected[j]), None)
            episodes.append(
                Episode(
                    first_index=start,
                    length_frames=i - start,
                    delay_frames=None if hit is None else hit - start,
                    delay_s=None
                    if hit is None
                    else float(timestamps_s[hit] - timestamps_s[start]),
                )
            )
            start = None
    return episodes


@dataclass
class VideoScores:
    """Summary of one scored sequence (or several, pooled)."""

    frames: int = 0
    duration_s: float = 0.0
    dice_micro: float = math.nan
    iou_micro: float = math.nan
    dice_macro: float = math.nan
    iou_macro: float = math.nan
    flicker_predicted: float = math.nan
    flicker_truth: float = math.nan
    false_positive_frames: int = 0
    frames_without_polyp: int = 0
    toggles_per_minute: float = math.nan
    episodes: int = 0
    missed_episodes: int = 0
    mean_delay_frames: float = math.nan
    mean_delay_ms: float = math.nan
    max_delay_ms: float = math.nan
    conventions: str = (
        "micro: pixels pooled over frames; macro: mean of per-frame scores "
        "(empty truth and empty prediction = 1); "
        "flicker: mean 1-IoU of consecutive masks"
    )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class VideoScorer:
    """Accumulates per-frame masks of one sequence and summarizes them.

    Memory: one previous mask per stream and a few numbers per frame.

    Args:
        min_detection_iou: IoU with the truth at which a frame counts as a
            detection (0 means any overlap).
    """

    min_detection_iou: float = 0.0
    _counts: list[tuple[int, int, int]] = field(default_factory=list)
    _timestamps_s: list[float] = field(default_factory=list)
    _present: list[bool] = field(default_factory=list)
    _truth_present: list[bool] = field(default_factory=list)
    _detected: list[bool] = field(default_factory=list)
    _flicker_predicted: list[float] = field(default_factory=list)
    _flicker_truth: list[float] = field(default_factory=list)
    _previous: tuple[np.ndarray, np.ndarray] | None = None
    _sequence_starts: list[int] = field(default_factory=list)

    def start_sequence(self) -> None:
        """Begin a new, unrelated sequence (e.g. the next video of a dataset).

        Frames added from now on are pooled into the same Dice/IoU, but no
        flicker pair, on/off toggle or polyp episode spans the cut.
        """
        self._previous = None
        count = len(self._counts)
        if count and (not self._sequence_starts or self._sequence_starts[-1] != count):
            self._sequence_starts.append(count)

    def add(self, predicted: np.ndarray, truth: np.ndarray, timestamp_s: float) -> None:
        """Score one frame: (H, W) bool prediction and truth at the same size."""
        if predicted.shape != truth.shape:
            raise ValueError(
                f"prediction shape {predicted.shape} differs from "
                f"truth shape {truth.shape}"
            )
        predicted = predicted.astype(bool, copy=False)
        truth = truth.astype(bool, copy=False)
        tp, fp, fn = overlap_counts(predicted, truth)
        self._counts.append((tp, fp, fn))
        self._timestamps_s.append(float(timestamp_s))
        self._present.append(tp + fp > 0)
        self._truth_present.append(tp + fn > 0)
        iou = dice_iou(tp, fp, fn)[1]
        self._detected.append(tp > 0 and iou >= self.min_detection_iou)
        if self._previous is not None:
            self._flicker_predicted.append(1 - mask_iou(self._previous[0], predicted))
            self._flicker_truth.append(1 - mask_iou(self._previous[1], truth))
        self._previous = (predicted, truth)

    def summary(self) -> VideoScores:
        scores = VideoScores(frames=len(self._counts))
        if not self._counts:
            return scores
        counts = np.array(self._counts, dtype=np.int64)
        tp, fp, fn = (int(v) for v in counts.sum(axis=0))
        scores.dice_micro, scores.iou_micro = dice_iou(tp, fp, fn)
        scores.dice_macro = float(dice_score(*counts.T).mean())
        scores.iou_macro = float(iou_score(*counts.T).mean())
        spans = self._spans()
        scores.duration_s = sum(_duration_s(self._timestamps_s[a:b]) for a, b in spans)
        if self._flicker_predicted:
            scores.flicker_predicted = float(np.mean(self._flicker_predicted))
            scores.flicker_truth = float(np.mean(self._flicker_truth))
        no_truth = [not t for t in self._truth_present]
        scores.frames_without_polyp = sum(no_truth)
        scores.false_positive_frames = sum(
            p and n for p, n in zip(self._present, no_truth, strict=True)
        )
        toggles = sum(
            sum(p != q for p, q in itertools.pairwise(self._present[a:b]))
            for a, b in spans
        )
        scores.toggles_per_minute = (
            60.0 * toggles / scores.duration_s if scores.duration_s > 0 else 0.0
        )
        episodes = self.episodes()
        scores.episodes = len(episodes)
        found = [e for e in episodes if e.delay_frames is not None]
        scores.missed_episodes = len(episodes) - len(found)
        if found:
            scores.mean_delay_frames = float(np.mean([e.delay_frames for e in found]))
            delays_ms = [1000 * e.delay_s for e in found]
            scores.mean_delay_ms = float(np.mean(delays_ms))
            scores.max_delay_ms = float(np.max(delays_ms))
        return scores

    def episodes(self) -> list[Episode]:
        """The polyp episodes of every sequence, in order, with their delays.

        ``first_index`` counts frames from the first frame added to the scorer.
        """
        episodes = []
        for start, stop in self._spans():
            for episode in detection_episodes(
                self._detected[start:stop],
                self._truth_present[start:stop],
                self._timestamps_s[start:stop],
            ):
                episodes.append(
                    Episode(
                        first_index=episode.first_index + start,
                        length_frames=episode.length_frames,
                        delay_frames=episode.delay_frames,
                        delay_s=episode.delay_s,
                    )
                )
        return episodes

    def _spans(self) -> list[tuple[int, int]]:
        """(start, stop) frame ranges of the sequences."""
        bounds = [0, *self._sequence_starts, len(self._counts)]
        return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
