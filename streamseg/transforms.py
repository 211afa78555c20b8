"""Pure tensor functions shared by training evaluation and the runtime.

Both the training package and :class:`streamseg.segmenter.Segmenter` convert
and resize images with these functions, so the two can never drift apart.
Normalization is not here as a step to remember: it is the network's first
layer (:class:`Normalize`, used by :func:`streamseg.model.build_network`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def upload(pixels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Upload uint8 RGB pixels to ``device`` as they are (no conversion).

    Args:
        pixels: (H, W, 3) or (N, H, W, 3) uint8 RGB array.
        device: Where the returned tensor lives.

    Returns:
        (N, 3, H, W) uint8 tensor (N = 1 for a single image), a channels-last
        view of the uploaded memory.

    Example:
        >>> upload(np.zeros((2, 3, 3), np.uint8)).shape
        torch.Size([1, 3, 2, 3])
    """
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3 or pixels.ndim not in (3, 4):
        raise ValueError(
            "expected (H, W, 3) or (N, H, W, 3) uint8 RGB pixels, "
            f"got shape {pixels.shape} dtype {pixels.dtype}"
        )
    batch = pixels[None] if pixels.ndim == 3 else pixels
    device = torch.device(device)
    uploaded = torch.from_numpy(np.ascontiguousarray(batch))
    if device.type == "cuda":
        uploaded = uploaded.pin_memory().to(device, non_blocking=True)
    else:
        uploaded = uploaded.to(device)
    return uploaded.permute(0, 3, 1, 2)


def to_tensor(pixels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Upload uint8 RGB pixels once and scale them to [0, 1] on ``device``.

    The copy to the device happens on uint8 data (4x fewer bytes than float),
    and the conversion to float runs where the network runs.

    Args:
        pixels: (H, W, 3) or (N, H, W, 3) uint8 RGB array.
        device: Where the returned tensor lives.

    Returns:
        (N, 3, H, W) float32 tensor in [0, 1] (N = 1 for a single image).

    Example:
        >>> to_tensor(np.full((2, 3, 3), 255, np.uint8)).shape
        torch.Size([1, 3, 2, 3])
    """
    return upload(pixels, device).float().div_(255.0)


def resize(images: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of an (N, C, H, W) float or uint8 tensor to ``size_hw``.

    Downscaling is antialiased (as a camera or JPEG downscale would be), so
    fine texture does not alias when a 1080p frame becomes a 320x320 input.
    Returns the input itself when the size already matches.
    """
    height, width = int(size_hw[0]), int(size_hw[1])
    if images.ndim != 4:
        raise ValueError(
            f"expected an (N, C, H, W) tensor, got shape {tuple(images.shape)}"
        )
    if tuple(images.shape[-2:]) == (height, width):
        return images
    downscale = images.shape[-2] > height or images.shape[-1] > width
    return F.interpolate(
        images,
        size=(height, width),
        mode="bilinear",
        align_corners=False,
        antialias=downscale,
    )


def network_input(images: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor:
    """Images as the network takes them: float32 RGB in [0, 1] at ``input_hw``.

    Args:
        images: (N, 3, H, W) uint8 RGB (as uploaded, any memory layout) or
            float RGB in [0, 1].
        input_hw: The network's input (height, width).

    uint8 images on the CPU are resized before the conversion to float, by
    torch's uint8 antialiased bilinear kernel: about 4x faster for a 1080p
    frame (benchmarks/input_resize.py), and within one grey level of resizing
    the float image (tests/test_transforms.py). Elsewhere (CUDA) they are converted
    first, then resized as floats.

    Example:
        >>> white = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
        >>> network_input(white, (4, 4)).max()
        tensor(1.)
    """
    if images.dtype == torch.uint8:
        if images.device.type == "cpu":
            return resize(images, input_hw).float().div_(255.0)
        images = images.float().div_(255.0)
    return resize(images, input_hw)


class Normalize(nn.Module):
    """Subtract ``mean`` and divide by ``std`` per RGB channel.

    The statistics are non-persistent buffers: they come from the model
    file's spec, never from its tensors, so the spec is their one source.

    Args:
        mean: Three values for pixels in [0, 1], RGB order.
        std: Three values for pixels in [0, 1], RGB order.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {mean} and {std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0, got {std}")
        self.register_buffer(
            "mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std
