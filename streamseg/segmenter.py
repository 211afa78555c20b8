"""Segmenter: Frame -> Prediction (upload, resize, forward, sigmoid, resize back)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from streamseg.device import Precision, autocast
from streamseg.frames import Frame, Prediction
from streamseg.model import ModelSpec, load_model
from streamseg.transforms import resize, to_tensor


def predict_probabilities(
    network: nn.Module,
    images: torch.Tensor,
    input_hw: Sequence[int],
    precision: Precision = Precision(None),
) -> torch.Tensor:
    """Foreground probabilities at the images' own resolution.

    This is the single inference path: the runtime's :class:`Segmenter` and
    the training package's test-set evaluation both call it.

    Args:
        network: Maps (N, 3, h, w) RGB in [0, 1] to (N, 1, h, w) logits.
        images: (N, 3, H, W) float RGB in [0, 1], on the network's device.
        input_hw: Network input (height, width).
        precision: Autocast dtype; the sigmoid and resize back run in float32.

    Returns:
        (N, H, W) float32 probabilities in [0, 1], on the images' device.
    """
    height, width = images.shape[-2:]
    with autocast(images.device, precision):
        logits = network(resize(images, input_hw))
    return resize(logits.float().sigmoid(), (height, width))[:, 0]


class Segmenter:
    """Runs a trained network on frames.

    Args:
        network: A :class:`streamseg.model.SegmentationNetwork` (or compatible).
        spec: Its model card (input size, threshold).
        device: Where inference runs.
        precision: Autocast dtype (fp32, bf16 or fp16).
        channels_last: Use the NHWC memory format (faster convolutions on
            CPU with bf16 and on tensor-core GPUs).
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        device: torch.device,
        precision: Precision = Precision(None),
        *,
        channels_last: bool = False,
    ) -> None:
        self.spec = spec
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        network = network.to(device).eval()
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        device: torch.device,
        precision: Precision = Precision(None),
        *,
        threshold: float | None = None,
        channels_last: bool = False,
    ) -> Segmenter:
        """Load a model file; ``threshold`` (if given) replaces the file's own."""
        network, spec = load_model(path)
        if threshold is not None:
            spec = dataclasses.replace(spec, threshold=threshold)
        return cls(network, spec, device, precision, channels_last=channels_last)

    @torch.inference_mode()
    def __call__(self, frame: Frame) -> Prediction:
        return self.segment([frame])[0]

    @torch.inference_mode()
    def segment(self, frames: Sequence[Frame]) -> list[Prediction]:
        """Segment a batch of frames of one size (batched for throughput on files)."""
        if not frames:
            return []
        sizes = {frame.hw for frame in frames}
        if len(sizes) != 1:
            raise ValueError(f"a batch must hold frames of one size, got {sorted(sizes)}")
        import numpy as np

        images = to_tensor(np.stack([frame.pixels for frame in frames]), self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        probabilities = predict_probabilities(
            self.network, images, self.spec.input_hw, self.precision
        )
        return [
            Prediction(frame, probabilities[i], self.spec.threshold)
            for i, frame in enumerate(frames)
        ]
