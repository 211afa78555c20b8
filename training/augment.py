"""Training augmentation: flips, affine, elastic, colour jitter (albumentations 2.x).

The pipeline runs on an image already resized by the shared
:func:`streamseg.transforms.resize` (see :class:`training.data.PolypDataset`):
to the network input, or, with the training image cache, to a slightly larger
size that is resized to the input after augmentation. Validation and test
images get the shared resize to the input and nothing else.

Strong geometry (EffiSegNet, FCBFormer) is a matter of values: ``rotate_deg``
up to 180, ``scale`` 0.5-1.5, ``shear_deg``, ``elastic_p``.

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
            shear=(-config.shear_deg, config.shear_deg),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=config.affine_p,
        ),
    ]
    if config.elastic_p > 0:
        steps.append(
            A.ElasticTransform(
                alpha=config.elastic_alpha,
                sigma=config.elastic_sigma,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=config.elastic_p,
            )
        )
    steps.append(
        A.ColorJitter(
            brightness=config.brightness,
            contrast=config.contrast,
            saturation=config.saturation,
            hue=config.hue,
            p=config.color_jitter_p,
        )
    )
    return A.Compose(steps, seed=seed)
