"""Losses on logits: focal, Dice, BCE, structure loss, their sums, distillation."""

from __future__ import annotations

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn
from torch.nn import functional as F

from training.config import OptimizationConfig, loss_terms


class SumOfLosses(nn.Module):
    """The unweighted sum of named binary losses, each computed in float32.

    Args:
        terms: Name -> loss module taking (logits, target).

    Inputs:
        logits: (N, 1, H, W) raw network outputs (any float dtype; autocast
            may hand over fp16/bf16, which is cast up so the loss is exact).
        target: (N, 1, H, W) float {0, 1}.

    Returns:
        A scalar tensor.
    """

    def __init__(self, terms: dict[str, nn.Module]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("expected at least one loss term")
        self.terms = nn.ModuleDict(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        # Losses take logs and exponentials: keep them out of any autocast region.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            total = torch.zeros((), device=logits.device)
            for term in self.terms.values():
                total = total + term(logits, target)
        return total


class StructureLoss(nn.Module):
    """PraNet's "structure loss": boundary-weighted BCE + weighted IoU, from logits.

    As in PraNet and HarDNet-MSEG (``structure_loss`` in their ``Train.py``):
    each pixel is weighted ``1 + 5 |avgpool_k(mask) - mask|``, so pixels near a
    polyp's boundary (where the local mean differs from the pixel) weigh up to
    6x; the BCE is the weighted mean per image, the IoU term is
    ``1 - (inter + 1) / (union - inter + 1)`` on sigmoid probabilities with the
    same weights; both are averaged over the batch.

    The averaging window is PraNet's 31 px at 352 px input, scaled with the
    target's height (the nearest odd size, at least 3), so the weighting means
    the same at every input size and multiscale draw.

    Args:
        kernel_fraction: Window side as a fraction of the image height.

    Inputs:
        logits: (N, 1, H, W) float32.
        target: (N, 1, H, W) float {0, 1}.

    Returns:
        A scalar tensor.
    """

    def __init__(self, kernel_fraction: float = 31 / 352) -> None:
        super().__init__()
        if not 0.0 < kernel_fraction < 1.0:
            raise ValueError(
                f"kernel_fraction: expected a value in (0, 1), got {kernel_fraction}"
            )
        self.kernel_fraction = kernel_fraction

    def kernel_px(self, height: int) -> int:
        """Odd window side for an image ``height`` pixels high (31 at 352)."""
        return max(3, 2 * round((height * self.kernel_fraction - 1) / 2) + 1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel_px(target.shape[-2])
        local_mean = F.avg_pool2d(
            target,
            kernel_size=kernel,
            stride=1,
            padding=kernel // 2,
            count_include_pad=True,
        )
        weight = 1.0 + 5.0 * torch.abs(local_mean - target)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        weighted_bce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
        probability = torch.sigmoid(logits)
        inter = (probability * target * weight).sum(dim=(2, 3))
        union = ((probability + target) * weight).sum(dim=(2, 3))
        weighted_iou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
        return (weighted_bce + weighted_iou).mean()


class DistillationLoss(nn.Module):
    """A task loss on the label plus BCE towards teachers' probabilities.

    Args:
        task: The loss on the label (e.g. :class:`SumOfLosses`).
        weight: Share of the teacher term, in (0, 1].

    Inputs:
        logits: (N, 1, H, W) raw network outputs.
        target: (N, 2, H, W): the {0, 1} label, then the teachers' probability
            in [0, 1] (:class:`training.data.PolypDataset` with teacher maps);
            or (N, 1, H, W), the label alone (validation), which gets the task
            loss alone, so validation losses stay comparable across runs.

    Returns:
        ``(1 - weight) * task(logits, label) + weight * BCE(logits, teacher)``.
    """

    def __init__(self, task: nn.Module, weight: float) -> None:
        super().__init__()
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight: expected a value in (0, 1], got {weight}")
        self.task = task
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] == 1:
            return self.task(logits, target)
        if target.shape[1] != 2:
            raise ValueError(
                "target: expected 1 or 2 channels (label, teacher), "
                f"got {target.shape[1]}"
            )
        label, teacher = target[:, :1], target[:, 1:]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            soft = F.binary_cross_entropy_with_logits(logits.float(), teacher.float())
        return (1.0 - self.weight) * self.task(logits, label) + self.weight * soft


def build_loss(config: OptimizationConfig) -> SumOfLosses:
    """Build the configured loss, e.g. ``"focal"`` or ``"focal+dice"``.

    Example:
        >>> loss = build_loss(OptimizationConfig(loss="focal+dice"))
        >>> list(loss.terms)
        ['focal', 'dice']
        >>> list(build_loss(OptimizationConfig(loss="structure")).terms)
        ['structure']
    """
    factories = {
        "focal": lambda: smp_losses.FocalLoss(
            "binary", alpha=config.focal_alpha, gamma=config.focal_gamma
        ),
        "dice": lambda: smp_losses.DiceLoss("binary", from_logits=True),
        "bce": nn.BCEWithLogitsLoss,
        "structure": StructureLoss,
    }
    return SumOfLosses({term: factories[term]() for term in loss_terms(config.loss)})
