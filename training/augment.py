"""Training augmentation: flips, affine and colour jitter (albumentations 2.x).

The pipeline runs on an image already resized to the network input by the
shared :func:`streamseg.transforms.resize` (see :class:`training.data.PolypDataset`),
so the resize a model is trained with is the one it is deployed with, and the
geometric steps work on small images (cheap). Validation and test images get
that same resize and nothing else.

There is deliberately no ``A.Normalize`` here: normalization is the first layer
of :class:`streamseg.model.SegmentationNetwork` (mean/std from the model file),
so it cannot be forgotten or applied twice at inference.
"""

from __future__ import annotations

import albumentations as A
import cv2

from training.config import AugmentConfig


def train_augmentations(config: AugmentConfig, seed: int = 0) -> A.Compose | None:
    """Build the pipeline for (h, w, 3) float32 images in [0, 1] and (h, w) masks.

    Every step keeps the image size. Geometric steps move image and mask
    together (the mask with nearest
    interpolation, so it stays binary); colour steps touch the image only.
    Pixels that the affine step uncovers are black in the image and background
    in the mask (endoscopy frames have black borders already).

    Args:
        config: Probabilities and ranges.
        seed: Seed of albumentations' own generators (reseeded per worker and
            per epoch by the training loop).

    Returns:
        The pipeline, or None when augmentation is disabled.

    Example:
        >>> pipeline = train_augmentations(AugmentConfig())
        >>> import numpy as np
        >>> image = np.zeros((64, 64, 3), np.float32)
        >>> out = pipeline(image=image, mask=np.zeros((64, 64), np.uint8))
        >>> out["image"].shape, out["mask"].shape
        ((64, 64, 3), (64, 64))
    """
    if not config.enabled:
        return None
    steps = [
        A.HorizontalFlip(p=config.hflip_p),
        A.VerticalFlip(p=config.vflip_p),
        A.Affine(
            scale=config.scale,
            translate_percent=(-config.translate_fraction, config.translate_fraction),
            rotate=(-config.rotate_deg, config.rotate_deg),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=config.affine_p,
        ),
        A.ColorJitter(
            brightness=config.brightness,
            contrast=config.contrast,
            saturation=config.saturation,
            hue=config.hue,
            p=config.color_jitter_p,
        ),
    ]
    return A.Compose(steps, seed=seed)
