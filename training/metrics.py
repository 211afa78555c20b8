"""Segmentation scores over a split, and the Poutyne epoch metric.

The scores themselves are pure functions of pixel counts in
:mod:`streamseg.evaluation.metrics` (shared with the tools and tests); the
conventions are stated there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from poutyne import Metric

from streamseg.evaluation.metrics import (
    dice_score,
    iou_score,
    precision_score,
    recall_score,
)

COUNT_NAMES = ("tp", "fp", "fn", "tn")


@dataclass(frozen=True)
class Scores:
    """Overlap scores in [0, 1]."""

    dice: float
    iou: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def confusion_counts(predicted: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Per-image pixel counts.

    Args:
        predicted: (N, H, W) or (H, W) bool (or {0, 1}) prediction.
        truth: Same shape, bool (or {0, 1}) ground truth.

    Returns:
        (N, 4) int64 array of ``[tp, fp, fn, tn]`` per image.

    Example:
        >>> p = torch.tensor([[1, 1, 0, 0]]).bool()
        >>> t = torch.tensor([[1, 0, 1, 0]]).bool()
        >>> confusion_counts(p, t).tolist()
        [[1, 1, 1, 1]]
    """
    if predicted.shape != truth.shape:
        raise ValueError(
            "prediction and truth differ in shape: "
            f"{tuple(predicted.shape)} vs {tuple(truth.shape)}"
        )
    predicted, truth = predicted.bool(), truth.bool()
    if predicted.ndim == 2:
        predicted, truth = predicted[None], truth[None]
    flat_p, flat_t = predicted.flatten(1), truth.flatten(1)
    tp = (flat_p & flat_t).sum(1)
    fp = (flat_p & ~flat_t).sum(1)
    fn = (~flat_p & flat_t).sum(1)
    tn = flat_p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], 1).cpu().numpy().astype(np.int64)


def scores_from_counts(counts: Sequence[int] | np.ndarray) -> Scores:
    """Scores of one set of ``[tp, fp, fn, tn]`` counts."""
    tp, fp, fn = (int(v) for v in np.asarray(counts)[:3])
    return Scores(
        dice=float(dice_score(tp, fp, fn)),
        iou=float(iou_score(tp, fp, fn)),
        precision=float(precision_score(tp, fp, fn)),
        recall=float(recall_score(tp, fp, fn)),
    )


def micro_scores(counts: np.ndarray) -> Scores:
    """Scores of the pixel counts pooled over images; ``counts`` is (N, 4)."""
    return scores_from_counts(np.asarray(counts, np.int64).reshape(-1, 4).sum(0))


def macro_scores(counts: np.ndarray) -> Scores:
    """Mean over images of the per-image scores; ``counts`` is (N, 4), N >= 1."""
    counts = np.asarray(counts, np.int64).reshape(-1, 4)
    if len(counts) == 0:
        raise ValueError("macro scores need at least one image")
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    return Scores(
        dice=float(dice_score(tp, fp, fn).mean()),
        iou=float(iou_score(tp, fp, fn).mean()),
        precision=float(precision_score(tp, fp, fn).mean()),
        recall=float(recall_score(tp, fp, fn).mean()),
    )


def threshold_counts(
    probabilities: torch.Tensor, truth: torch.Tensor, thresholds: Sequence[float]
) -> np.ndarray:
    """Pooled ``[tp, fp, fn, tn]`` for each candidate threshold.

    Args:
        probabilities: (N, H, W) or (H, W) float probabilities.
        truth: Same shape, bool or {0, 1}.
        thresholds: T candidate thresholds; a pixel is foreground when
            ``probability >= threshold`` (as in :class:`streamseg.frames.Prediction`).

    Returns:
        (T, 4) int64 counts, summed over the images.
    """
    return np.stack(
        [confusion_counts(probabilities >= t, truth).sum(0) for t in thresholds]
    ).astype(np.int64)


def best_threshold(
    counts: np.ndarray, thresholds: Sequence[float]
) -> tuple[float, float]:
    """The threshold with the highest micro Dice; ties go to the one nearest 0.5.

    Args:
        counts: (T, 4) pooled counts from :func:`threshold_counts` (summed
            over as many batches as needed).
        thresholds: The T thresholds in the same order.

    Returns:
        (threshold, micro Dice at that threshold).
    """
    counts = np.asarray(counts, np.int64)
    dice = dice_score(counts[:, 0], counts[:, 1], counts[:, 2])
    best = max(
        range(len(thresholds)), key=lambda i: (dice[i], -abs(thresholds[i] - 0.5))
    )
    return float(thresholds[best]), float(dice[best])


class PixelScore(Metric):
    """Poutyne epoch metric: micro Dice or IoU over all pixels seen in the epoch.

    Args:
        kind: ``"dice"`` or ``"iou"``.
        threshold: Probability at or above which a pixel counts as polyp.

    ``update`` takes (N, 1, H, W) logits and (N, C, H, W) targets whose first
    channel is the {0, 1} label (a second, when distilling, is the teachers'
    probability and is not scored).
    """

    def __init__(self, kind: str = "dice", threshold: float = 0.5) -> None:
        super().__init__()
        if kind not in ("dice", "iou"):
            raise ValueError(f"kind: expected 'dice' or 'iou', got {kind!r}")
        self.kind = kind
        self.threshold = threshold
        self.counts = np.zeros(4, np.int64)

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
        predicted = y_pred.detach().float().sigmoid() >= self.threshold
        self.counts += confusion_counts(
            predicted.flatten(0, 1), y_true[:, :1].detach().flatten(0, 1) > 0.5
        ).sum(0)

    def compute(self) -> float:
        tp, fp, fn = (int(v) for v in self.counts[:3])
        score = dice_score if self.kind == "dice" else iou_score
        return float(score(tp, fp, fn))

    def reset(self) -> None:
        self.counts = np.zeros(4, np.int64)
