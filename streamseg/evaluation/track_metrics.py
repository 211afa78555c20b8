"""How steady and how right the polyp tracks are, against per-frame ground truth.

What a user sees of the tracks is a marker per polyp and a "polyp" indicator,
so the measures are about those, per sequence, pooled over sequences:

* **Toggles per minute**: how often "a polyp is shown" switches on or off
  after it was first shown in a sequence (the per-frame and smoothed
  outputs: the mask is not empty; the tracks: at least one track is
  shown). The first appearance is not counted: it is the detection, whose
  delay is measured separately, not a blink.
* **True episodes**: runs of frames whose truth shows the same polyp. Where
  per-frame polyp ids are known (``--polyp-ids``: the demo clip's
  ``segment`` column) an episode also ends where the id changes; otherwise
  every run of non-empty truth is one polyp (CVC-ClinicDB: one polyp per
  sequence).
* **First-detection delay** of an episode: time from its first frame to the
  first frame on which a shown track's region overlaps the truth (IoU at
  least ``min_detection_iou``); an episode never detected so is **missed**.
* **ID switches**: within an episode, how often the id of the shown track
  covering the truth (the one whose region overlaps it most) changes from
  one covered frame to the next. 0 per episode is ideal.
* **Polyps shown** (distinct ids) against **true polyps** (episodes with
  distinct ids): more ids than polyps means a polyp was counted twice;
  **merged ids** are ids that covered more than one true polyp (two polyps
  counted as one).
* **Dice**: macro Dice of the mask drawn with the tracks: the tracker's
  input, unchanged (the fill shows every region; ids and markers only the
  shown tracks).

:func:`score_tracking` replays cached probabilities through the runtime's
own :class:`~streamseg.smoothing.TemporalSmoother` and
:class:`~streamseg.tracking.Tracker` and fills a :class:`TrackScorer`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from streamseg.detections import FrameRegions, detect
from streamseg.frames import Frame
from streamseg.tracking import Tracker, TrackFrame, TrackingSettings

if TYPE_CHECKING:
    from streamseg.evaluation.video_data import CachedSequence
    from streamseg.smoothing import SmoothingSettings


def toggles(present: Sequence[bool]) -> int:
    """On/off switches after the first "on" (the first appearance is no blink).

    Example:
        >>> toggles([False, True, True, False, True])
        2
    """
    first = next((i for i, p in enumerate(present) if p), len(present))
    return sum(a != b for a, b in itertools.pairwise(present[first:]))


def true_episodes(
    truth_present: Sequence[bool], polyp_ids: Sequence[int | None] | None = None
) -> list[tuple[int, int]]:
    """(start, stop) frame ranges of truth episodes: non-empty truth, same polyp id.

    Example:
        >>> true_episodes([0, 1, 1, 1, 0, 1], [0, 0, 0, 1, 1, 1])
        [(1, 3), (3, 4), (5, 6)]
    """
    spans = []
    start = None
    for i in range(len(truth_present) + 1):
        inside = i < len(truth_present) and bool(truth_present[i])
        same = (
            polyp_ids is None
            or start is None
            or i >= len(truth_present)
            or polyp_ids[i] == polyp_ids[start]
        )
        if start is not None and (not inside or not same):
            spans.append((start, i))
            start = None
        if inside and start is None:
            start = i
    return spans


def id_switches(covering_ids: Sequence[int | None]) -> int:
    """Changes of id between consecutive covered frames (``None``: not covered).

    Example:
        >>> id_switches([None, 1, 1, None, 2, 2, 1])
        2
    """
    seen = [i for i in covering_ids if i is not None]
    return sum(a != b for a, b in itertools.pairwise(seen))


@dataclass
class TrackScores:
    """Summary of the tracks on one dataset (all sequences pooled)."""

    frames: int = 0
    duration_s: float = 0.0
    dice_macro: float = math.nan
    toggles_per_minute: float = math.nan
    per_frame_toggles_per_minute: float = math.nan
    smoothed_toggles_per_minute: float = math.nan
    episodes: int = 0
    missed_episodes: int = 0
    id_switches: int = 0
    id_switches_per_episode: float = math.nan
    mean_delay_ms: float = math.nan
    max_delay_ms: float = math.nan
    added_delay_ms_mean: float = math.nan
    newly_missed_episodes: int = 0
    polyps_shown: int = 0
    true_polyps: int = 0
    merged_ids: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Frame:
    timestamp_s: float
    shown: bool
    per_frame_present: bool
    smoothed_present: bool
    truth_present: bool
    polyp_id: int | None
    detected: bool
    per_frame_detected: bool
    covering_id: int | None
    dice: float


@dataclass
class TrackScorer:
    """Accumulates tracked frames of one or more sequences and summarizes them.

    Args:
        min_detection_iou: IoU with the truth at which a frame detects.
    """

    min_detection_iou: float = 0.0
    _sequences: list[list[_Frame]] = field(default_factory=list)
    _ids: list[set[int]] = field(default_factory=list)

    def start_sequence(self) -> None:
        """Begin an unrelated sequence (no toggle or episode spans the cut)."""
        self._sequences.append([])
        self._ids.append(set())

    def add(
        self,
        frame: TrackFrame,
        regions: FrameRegions,
        truth: np.ndarray,
        per_frame_mask: np.ndarray,
        *,
        polyp_id: int | None = None,
        smoothed_present: bool | None = None,
    ) -> None:
        """Score one frame.

        Args:
            frame: The tracker's output for this frame.
            regions: The regions the tracker was given.
            truth: (H, W) bool truth mask.
            per_frame_mask: (H, W) bool mask of the per-frame output (the
                baseline for delay and toggles).
            polyp_id: Which polyp the truth shows, if known.
            smoothed_present: Whether the smoothed mask (the tracker's
                input) is not empty (None: any region in ``regions``).
        """
        if not self._sequences:
            self.start_sequence()
        truth = truth.astype(bool, copy=False)
        shown = frame.shown_detections()
        tracked = regions.mask_of(shown)
        truth_px = int(np.count_nonzero(truth))
        # The tracks do not change the mask (the fill shows every region,
        # the markers only the shown tracks): Dice is the input mask's.
        dice = _dice(regions.mask_of(frozenset(range(len(regions.detections)))), truth)
        detected = self._detects(tracked, truth)
        per_frame_detected = self._detects(per_frame_mask.astype(bool), truth)
        covering, best = None, 0
        for view in frame.tracks:
            if view.detection is None:
                continue
            region = regions.mask_of({view.detection})
            overlap = int(np.count_nonzero(region & truth))
            if overlap > best:
                covering, best = view.track_id, overlap
        self._ids[-1].update(frame.track_ids)
        self._sequences[-1].append(
            _Frame(
                timestamp_s=frame.timestamp_s,
                shown=frame.present,
                per_frame_present=bool(per_frame_mask.any()),
                smoothed_present=bool(regions.detections)
                if smoothed_present is None
                else smoothed_present,
                truth_present=truth_px > 0,
                polyp_id=polyp_id,
                detected=detected,
                per_frame_detected=per_frame_detected,
                covering_id=covering,
                dice=dice,
            )
        )

    def _detects(self, mask: np.ndarray, truth: np.ndarray) -> bool:
        tp = int(np.count_nonzero(mask & truth))
        if tp == 0:
            return False
        union = int(np.count_nonzero(mask | truth))
        return tp / union >= self.min_detection_iou

    def summary(self) -> TrackScores:
        scores = TrackScores()
        frames = [f for seq in self._sequences for f in seq]
        scores.frames = len(frames)
        if not frames:
            return scores
        scores.dice_macro = float(np.mean([f.dice for f in frames]))
        duration = 0.0
        track_toggles = per_frame_toggles = smoothed_toggles = 0
        delays_ms: list[float] = []
        added_ms: list[float] = []
        for seq, ids in zip(self._sequences, self._ids, strict=True):
            if not seq:
                continue
            times = [f.timestamp_s for f in seq]
            duration += _duration_s(times)
            track_toggles += toggles([f.shown for f in seq])
            per_frame_toggles += toggles([f.per_frame_present for f in seq])
            smoothed_toggles += toggles([f.smoothed_present for f in seq])
            scores.polyps_shown += len(ids)
            polyp_ids = (
                [f.polyp_id for f in seq]
                if any(f.polyp_id is not None for f in seq)
                else None
            )
            spans = true_episodes([f.truth_present for f in seq], polyp_ids)
            scores.episodes += len(spans)
            if polyp_ids is None:
                scores.true_polyps += 1 if spans else 0
            else:
                scores.true_polyps += len(
                    {polyp_ids[a] for a, _ in spans if polyp_ids[a] is not None}
                )
            covered: dict[int, set[object]] = {}
            for number, (start, stop) in enumerate(spans):
                part = seq[start:stop]
                identity = number if polyp_ids is None else polyp_ids[start]
                if polyp_ids is None:
                    identity = 0  # one polyp per sequence
                for f in part:
                    if f.covering_id is not None:
                        covered.setdefault(f.covering_id, set()).add(identity)
                scores.id_switches += id_switches([f.covering_id for f in part])
                hit = next((i for i, f in enumerate(part) if f.detected), None)
                base = next(
                    (i for i, f in enumerate(part) if f.per_frame_detected), None
                )
                if hit is None:
                    scores.missed_episodes += 1
                    if base is not None:
                        scores.newly_missed_episodes += 1
                    continue
                delay_s = part[hit].timestamp_s - part[0].timestamp_s
                delays_ms.append(1000 * delay_s)
                if base is not None:
                    base_s = part[base].timestamp_s - part[0].timestamp_s
                    added_ms.append(1000 * (delay_s - base_s))
            scores.merged_ids += sum(len(v) > 1 for v in covered.values())
        scores.duration_s = duration
        if duration > 0:
            scores.toggles_per_minute = 60.0 * track_toggles / duration
            scores.per_frame_toggles_per_minute = 60.0 * per_frame_toggles / duration
            scores.smoothed_toggles_per_minute = 60.0 * smoothed_toggles / duration
        if scores.episodes:
            scores.id_switches_per_episode = scores.id_switches / scores.episodes
        if delays_ms:
            scores.mean_delay_ms = float(np.mean(delays_ms))
            scores.max_delay_ms = float(np.max(delays_ms))
        scores.added_delay_ms_mean = float(np.mean(added_ms)) if added_ms else 0.0
        return scores


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = int(np.count_nonzero(predicted & truth))
    total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(truth))
    return 1.0 if total == 0 else 2 * tp / total


def _duration_s(timestamps_s: Sequence[float]) -> float:
    if len(timestamps_s) < 2:
        return 0.0
    step = float(np.median(np.diff(timestamps_s)))
    return float(timestamps_s[-1] - timestamps_s[0]) + step


def score_tracking(
    sequences: Sequence[CachedSequence],
    smoothing: SmoothingSettings,
    tracking: TrackingSettings,
    model_threshold: float,
    *,
    polyp_ids: Sequence[Sequence[int | None] | None] | None = None,
    frames: Sequence[Callable[[], Iterator[Frame]]] | None = None,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
) -> TrackScores:
    """Replay cached probabilities through the smoother and the tracker; score them.

    The smoother and the tracker are reset at each sequence; with ``lead_in``
    both first see one all-background frame one frame period earlier (as in
    :func:`streamseg.evaluation.sweep.score_variant`). The baseline for toggles and
    delay is the per-frame output (``probabilities >= model_threshold``).

    Args:
        sequences: From :func:`streamseg.evaluation.video_data.load_dataset`.
        smoothing: The smoothing in front of the tracker (``enabled: false``:
            the tracker sees the per-frame masks).
        tracking: The tracker's settings.
        model_threshold: The model's threshold.
        polyp_ids: Per sequence, per frame, which polyp the truth shows
            (None: one polyp per run of non-empty truth).
        frames: Per sequence, a callable yielding its frames again (they are
            scaled to the evaluation size for the tracker's colour check;
            None: no colour check).
        lead_in: See above.
        min_detection_iou: IoU with the truth at which a frame detects.
    """
    import cv2
    import torch

    from streamseg.frames import Prediction
    from streamseg.regions import scale_mask
    from streamseg.smoothing import TemporalSmoother

    scorer = TrackScorer(min_detection_iou=min_detection_iou)
    smoother = TemporalSmoother(smoothing, model_threshold=model_threshold)
    tracker = Tracker(tracking)
    for number, sequence in enumerate(sequences):
        scorer.start_sequence()
        smoother.reset()
        tracker.reset()
        ids = polyp_ids[number] if polyp_ids is not None else None
        hw = sequence.eval_hw
        map_hw = sequence.probabilities.shape[1:]
        blank = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (*hw, 3))
        times = sequence.timestamps_s
        if lead_in:
            period_s = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            start_s = float(times[0]) - period_s
            out = smoother(
                Prediction(
                    Frame(0, start_s, blank), torch.zeros(map_hw), model_threshold
                )
            )
            tracker(start_s, detect(out.mask.numpy()).scaled(hw))
        images = frames[number]() if frames is not None else None
        for index in range(len(times)):
            pixels = None
            if images is not None:
                source = next(images).pixels
                pixels = cv2.resize(
                    source, (hw[1], hw[0]), interpolation=cv2.INTER_AREA
                )
            frame = Frame(index, float(times[index]), blank)
            current = torch.from_numpy(sequence.probabilities[index]).float()
            out = smoother(Prediction(frame, current, model_threshold))
            # As Findings.tracked: regions on the map, boxes scaled to the frame.
            regions = detect(out.mask.numpy(), pixels).scaled(hw)
            tracked = tracker(float(times[index]), regions)
            scorer.add(
                tracked,
                regions,
                sequence.truth[index],
                scale_mask(current.numpy() >= model_threshold, hw),
                polyp_id=None if ids is None else ids[index],
            )
    return scorer.summary()


def read_polyp_ids(spec: str) -> tuple[int, ...]:
    """Per-frame polyp ids from ``CSV[:COLUMN]`` (one row per frame, in order).

    The column defaults to ``segment`` (``samples/demo_frames.csv``: which
    source image, so which polyp, each frame shows).

    Raises:
        ValueError: No such file or column, or a value that is not an integer.
    """
    import csv
    from pathlib import Path

    path_text, _, column = spec.partition(":")
    column = column or "segment"
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"--polyp-ids {spec}: no such file {path}")
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or column not in rows[0]:
        found = sorted(rows[0]) if rows else "no rows"
        raise ValueError(
            f"--polyp-ids {spec}: no column {column!r} in {path} (found {found}); "
            "name it as CSV:COLUMN"
        )
    try:
        return tuple(int(row[column]) for row in rows)
    except ValueError:
        raise ValueError(
            f"--polyp-ids {spec}: column {column!r} must hold integers"
        ) from None
