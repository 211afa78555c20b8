"""Segmentation losses on logits: focal, Dice, BCE, and sums of them (smp.losses)."""

from __future__ import annotations

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

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


def build_loss(config: OptimizationConfig) -> SumOfLosses:
    """Build the configured loss, e.g. ``"focal"`` or ``"focal+dice"``.

    Example:
        >>> loss = build_loss(OptimizationConfig(loss="focal+dice"))
        >>> list(loss.terms)
        ['focal', 'dice']
    """
    factories = {
        "focal": lambda: smp_losses.FocalLoss(
            "binary", alpha=config.focal_alpha, gamma=config.focal_gamma
        ),
        "dice": lambda: smp_losses.DiceLoss("binary", from_logits=True),
        "bce": nn.BCEWithLogitsLoss,
    }
    return SumOfLosses({term: factories[term]() for term in loss_terms(config.loss)})
