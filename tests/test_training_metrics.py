"""Metrics against hand-computed values, empty masks included; losses; thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamseg.evaluation.metrics import (
    dice_score,
    iou_score,
    precision_score,
    recall_score,
)
from training.config import OptimizationConfig
from training.losses import build_loss
from training.metrics import (
    PixelScore,
    best_threshold,
    confusion_counts,
    macro_scores,
    micro_scores,
    scores_from_counts,
    threshold_counts,
)


def _mask(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "#" for c in row] for row in rows])


# prediction, truth, (tp, fp, fn, tn), (dice, iou, precision, recall) worked out by hand
CASES = [
    (  # partial overlap: tp 2, fp 1, fn 2 -> dice 4/7, iou 2/5, prec 2/3, recall 2/4
        ["##.", "#..", "..."],
        ["##.", "...", ".##"],
        (2, 1, 2, 4),
        (4 / 7, 2 / 5, 2 / 3, 1 / 2),
    ),
    (
        ["##.", "...", "..."],
        ["##.", "...", "..."],
        (2, 0, 0, 7),
        (1.0, 1.0, 1.0, 1.0),
    ),  # perfect
    (
        ["...", "...", "..."],
        ["...", "...", "..."],
        (0, 0, 0, 9),
        (1.0, 1.0, 1.0, 1.0),
    ),  # both empty
    (
        ["...", "...", "..."],
        ["#..", "...", "..."],
        (0, 0, 1, 8),
        (0.0, 0.0, 0.0, 0.0),
    ),  # missed polyp
    (
        ["..#", "...", "..."],
        ["...", "...", "..."],
        (0, 1, 0, 8),
        (0.0, 0.0, 0.0, 0.0),
    ),  # false alarm
    (
        ["#..", "...", "..."],
        [".#.", "...", "..."],
        (0, 1, 1, 7),
        (0.0, 0.0, 0.0, 0.0),
    ),  # disjoint
]


@pytest.mark.parametrize(("pred", "truth", "counts", "expected"), CASES)
def test_scores_match_hand_computed_values(pred, truth, counts, expected):
    got_counts = confusion_counts(_mask(pred), _mask(truth))
    assert got_counts.tolist() == [list(counts)]
    scores = scores_from_counts(got_counts[0])
    assert (scores.dice, scores.iou, scores.precision, scores.recall) == pytest.approx(
        expected
    )


def test_elementwise_functions_accept_arrays():
    tp, fp, fn = np.array([2, 0, 0]), np.array([1, 0, 3]), np.array([2, 0, 0])
    np.testing.assert_allclose(dice_score(tp, fp, fn), [4 / 7, 1.0, 0.0])
    np.testing.assert_allclose(iou_score(tp, fp, fn), [2 / 5, 1.0, 0.0])
    np.testing.assert_allclose(precision_score(tp, fp, fn), [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(recall_score(tp, fp, fn), [1 / 2, 1.0, 0.0])


def test_micro_pools_pixels_macro_averages_images():
    # A: tp 2, fp 1, fn 2 (dice 4/7); B: both empty (dice 1); C: tp 10 (dice 1)
    counts = np.array([[2, 1, 2, 4], [0, 0, 0, 9], [10, 0, 0, 0]])
    micro = micro_scores(counts)  # pooled tp 12, fp 1, fn 2
    assert micro.dice == pytest.approx(24 / 27)
    assert micro.iou == pytest.approx(12 / 15)
    assert micro.precision == pytest.approx(12 / 13)
    assert micro.recall == pytest.approx(12 / 14)
    macro = macro_scores(counts)
    assert macro.dice == pytest.approx((4 / 7 + 1 + 1) / 3)
    assert macro.iou == pytest.approx((2 / 5 + 1 + 1) / 3)
    assert macro.precision == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert macro.recall == pytest.approx((1 / 2 + 1 + 1) / 3)


def test_confusion_counts_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_counts(
            torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool)
        )


def test_threshold_sweep_and_choice():
    probabilities = torch.tensor([[0.9, 0.6, 0.4, 0.1]])
    truth = torch.tensor([[1, 1, 0, 0]]).bool()
    thresholds = [0.3, 0.5, 0.7]
    counts = threshold_counts(probabilities, truth, thresholds)
    # >= 0.3: tp 2 fp 1; >= 0.5: tp 2; >= 0.7: tp 1 fn 1
    assert counts.tolist() == [[2, 1, 0, 1], [2, 0, 0, 2], [1, 0, 1, 2]]
    assert best_threshold(counts, thresholds) == (0.5, 1.0)


def test_threshold_ties_go_to_the_one_nearest_half():
    counts = np.array([[1, 0, 0, 3]] * 3)
    assert best_threshold(counts, [0.2, 0.45, 0.9])[0] == 0.45


def test_pixel_score_is_micro_over_the_epoch_from_logits():
    metric = PixelScore("dice")
    # batch 1: tp 1, fp 1; batch 2: fn 1  -> pooled dice 2/(2+1+1) = 0.5
    metric.update(torch.tensor([[[[3.0, 2.0]]]]), torch.tensor([[[[1.0, 0.0]]]]))
    metric.update(torch.tensor([[[[-3.0, -2.0]]]]), torch.tensor([[[[1.0, 0.0]]]]))
    assert metric.compute() == pytest.approx(0.5)
    metric.reset()
    metric.update(torch.tensor([[[[3.0]]]]), torch.tensor([[[[1.0]]]]))
    assert metric.compute() == 1.0
    iou = PixelScore("iou")
    iou.update(
        torch.tensor([[[[3.0, 2.0, -1.0]]]]), torch.tensor([[[[1.0, 0.0, 1.0]]]])
    )
    assert iou.compute() == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("spec", "terms"),
    [("focal", ["focal"]), ("focal+dice", ["focal", "dice"]), ("bce", ["bce"])],
)
def test_loss_sums_its_terms(spec, terms):
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    loss = build_loss(OptimizationConfig(loss=spec))
    assert list(loss.terms) == terms
    expected = sum(
        build_loss(OptimizationConfig(loss=t))(logits, target) for t in terms
    )
    assert torch.allclose(loss(logits, target), expected)


def test_losses_reward_the_right_answer():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good, bad = (target * 2 - 1) * 8, (1 - target * 2) * 8
    for spec in ("focal", "dice", "bce", "focal+dice"):
        loss = build_loss(OptimizationConfig(loss=spec))
        assert loss(good, target) < 0.05 < loss(bad, target)
    # bf16 logits (autocast) are computed in float32 all the same
    loss = build_loss(OptimizationConfig(loss="focal"))
    assert torch.allclose(loss(good.bfloat16(), target), loss(good, target))
