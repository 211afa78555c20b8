"""Dice, IoU, precision and recall as pure functions of pixel counts.

Conventions (used by every report):

* Counts per image are ``[tp, fp, fn, tn]`` pixels, foreground = polyp.
* **micro**: pixel counts are pooled over all images of the split, then one
  score is computed (large polyps weigh more).
* **macro**: a score is computed per image, then averaged (every image weighs
  the same).
* **Empty denominators**: a score whose denominator is zero is 1.0 when the
  image has no errors (fp = fn = 0) and 0.0 otherwise. So an image with no
  polyp and no prediction scores Dice = IoU = precision = recall = 1; predicting
  nothing on an image with a polyp gives precision 0 (not undefined); false
  alarms on an empty image give recall 0.
"""

from __future__ import annotations

import numpy as np


def _ratio(
    numerator: np.ndarray, denominator: np.ndarray, flawless: np.ndarray
) -> np.ndarray:
    numerator, denominator = (
        np.asarray(numerator, np.float64),
        np.asarray(denominator, np.float64),
    )
    empty_score = np.where(flawless, 1.0, 0.0)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, empty_score)


def dice_score(tp, fp, fn) -> np.ndarray:
    """2·tp / (2·tp + fp + fn); 1.0 when truth and prediction are both empty.

    Example:
        >>> float(dice_score(3, 1, 2))
        0.6666666666666666
    """
    tp, fp, fn = (np.asarray(v, np.int64) for v in (tp, fp, fn))
    return _ratio(2 * tp, 2 * tp + fp + fn, (fp == 0) & (fn == 0))


def iou_score(tp, fp, fn) -> np.ndarray:
    """tp / (tp + fp + fn) (Jaccard); 1.0 when truth and prediction are both empty."""
    tp, fp, fn = (np.asarray(v, np.int64) for v in (tp, fp, fn))
    return _ratio(tp, tp + fp + fn, (fp == 0) & (fn == 0))


def precision_score(tp, fp, fn) -> np.ndarray:
    """tp / (tp + fp); nothing predicted: 1.0 if there was nothing to find, else 0.0."""
    tp, fp, fn = (np.asarray(v, np.int64) for v in (tp, fp, fn))
    return _ratio(tp, tp + fp, (fp == 0) & (fn == 0))


def recall_score(tp, fp, fn) -> np.ndarray:
    """tp / (tp + fn); with nothing to find: 1.0 if nothing was predicted, else 0.0."""
    tp, fp, fn = (np.asarray(v, np.int64) for v in (tp, fp, fn))
    return _ratio(tp, tp + fn, (fp == 0) & (fn == 0))
