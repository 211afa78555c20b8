"""Frames to the inference device: reusable (pinned) host buffers on CUDA.

:class:`FrameUploader` is what :class:`streamseg.segmenter.Segmenter` uploads
frames with; on the CPU it is :func:`streamseg.transforms.upload` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from streamseg.transforms import upload


class FrameUploader:
    """Copies batches of uint8 RGB frames to the device, as uint8 (N, 3, H, W).

    On CUDA the frames go through reusable pinned host buffers, so the copy
    is asynchronous and no pinned memory is allocated per frame: two buffers
    per batch shape alternate, and each is refilled only after its previous
    copy has finished (a CUDA event). On the CPU there is nothing to copy
    to: :func:`streamseg.transforms.upload` is called exactly as the
    training evaluation calls it, so the two stay bit-identical.

    Args:
        device: Where the images go.
        staged: Use the reusable buffers (default: on CUDA only; tests turn
            them on for the CPU, unpinned).
    """

    SLOTS = 2
    MAX_SHAPES = 4

    def __init__(self, device: torch.device, *, staged: bool | None = None) -> None:
        self.device = device
        self.staged = device.type == "cuda" if staged is None else staged
        self.pinned = device.type == "cuda"
        self._slots: dict[tuple[int, ...], list[_Slot]] = {}
        self._turn = 0

    def __call__(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """Upload frames.

        Args:
            pixels: Frames of one size, each (H, W, 3) uint8 RGB.

        Returns:
            (N, 3, H, W) uint8 on the device; equal to
            ``upload(np.stack(pixels))``.
        """
        if not self.staged:
            if len(pixels) == 1:
                return upload(pixels[0], self.device)
            return upload(np.stack(pixels), self.device)
        shape = (len(pixels), *pixels[0].shape)
        if pixels[0].dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(
                "expected (H, W, 3) uint8 RGB frames, got shape "
                f"{pixels[0].shape} dtype {pixels[0].dtype}"
            )
        slot = self._slot(shape)
        if slot.copied is not None:
            slot.copied.synchronize()  # the last copy out of this buffer is done
        host = slot.buffer.numpy()
        for index, image in enumerate(pixels):
            host[index] = image
        if self.device.type == "cpu":
            # The staged path on the CPU exists for tests of the CUDA logic:
            # a copy, so a result outlives the buffer's refill as on CUDA.
            uploaded = slot.buffer.clone()
        else:
            uploaded = slot.buffer.to(self.device, non_blocking=self.pinned)
            if slot.copied is not None:
                slot.copied.record()
        # The same layout as transforms.upload.
        return uploaded.permute(0, 3, 1, 2)

    def _slot(self, shape: tuple[int, ...]) -> _Slot:
        slots = self._slots.get(shape)
        if slots is None:
            if len(self._slots) >= self.MAX_SHAPES:  # frame sizes changed: start over
                self._slots.clear()
            slots = [self._new_slot(shape) for _ in range(self.SLOTS)]
            self._slots[shape] = slots
        self._turn = (self._turn + 1) % self.SLOTS
        return slots[self._turn]

    def _new_slot(self, shape: tuple[int, ...]) -> _Slot:
        buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pinned)
        copied = torch.cuda.Event() if self.device.type == "cuda" else None
        return _Slot(buffer, copied)


@dataclasses.dataclass(slots=True)
class _Slot:
    buffer: torch.Tensor
    copied: torch.cuda.Event | None
