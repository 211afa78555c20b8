"""Augmentation keeps image and mask aligned, changes what it should, is seeded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import train_augmentations
from training.config import AugmentConfig
from training.data import PolypDataset, PolypFolder

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"
ALWAYS = AugmentConfig(hflip_p=1.0, vflip_p=1.0, affine_p=1.0, color_jitter_p=1.0)


def _shape_pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A bright off-centre blob on a dark image and its mask (flips move it)."""
    rows, cols = np.mgrid[:size, :size]
    mask = (((rows - 20) ** 2) / 100 + ((cols - 40) ** 2) / 36 <= 1).astype(np.uint8)
    image = np.full((size, size, 3), 0.1, np.float32)
    image[mask.astype(bool)] = (0.9, 0.8, 0.7)
    return image, mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("seed", range(8))
def test_geometric_steps_move_image_and_mask_together(seed):
    image, mask = _shape_pair()
    out = train_augmentations(ALWAYS, seed=seed)(image=image, mask=mask)
    bright = out["image"].mean(axis=2) > 0.45
    moved = out["mask"].astype(bool)
    assert out["image"].shape == image.shape and out["mask"].shape == mask.shape
    assert set(np.unique(out["mask"])) <= {0, 1}
    assert _iou(bright, moved) > 0.85
    assert _iou(moved, mask.astype(bool)) < 0.9  # it really moved (flips + affine)


def test_colour_steps_leave_the_mask_alone():
    image, mask = _shape_pair()
    config = AugmentConfig(hflip_p=0, vflip_p=0, affine_p=0, color_jitter_p=1.0)
    out = train_augmentations(config, seed=0)(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask)
    assert not np.allclose(out["image"], image)
    assert (
        out["image"].dtype == np.float32
        and 0.0 <= out["image"].min()
        and out["image"].max() <= 1.0
    )


def test_disabled_means_no_pipeline():
    assert (
        train_augmentations(dataclasses.replace(AugmentConfig(), enabled=False)) is None
    )


def test_same_seed_same_augmentation_on_real_images():
    folder = PolypFolder.open(KVASIR)
    stems = folder.paired_stems[:2]
    first = PolypDataset(folder, stems, (64, 64), train_augmentations(ALWAYS, seed=5))
    second = PolypDataset(folder, stems, (64, 64), train_augmentations(ALWAYS, seed=5))
    plain = PolypDataset(folder, stems, (64, 64))
    for index in range(2):
        (a_img, a_mask), (b_img, b_mask) = first[index], second[index]
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
        assert not torch.equal(a_img, plain[index][0])
    first.reseed(6)
    assert not torch.equal(first[0][0], second[0][0])
