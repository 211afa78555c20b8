"""What the training tests share: the Kvasir-SEG fixture and a tiny, fast recipe."""

from __future__ import annotations

from pathlib import Path

import torch

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"
# Overrides for a training run of seconds: Unet/resnet18 at 64x64, no worker process.
TINY = [
    "model.architecture=Unet",
    "model.encoder_name=resnet18",
    "model.input_hw=[64, 64]",
    "model.model_kwargs={encoder_depth: 3, decoder_channels: [32, 16, 8]}",
    "optimization.batch_size=2",
    "data.num_workers=0",
    "calibration.thresholds=[0.3, 0.5, 0.7]",
]


def multiscale_model(scales: tuple[float, ...]):
    """A 1x1-convolution :class:`training.train.PrecisionModel` drawing ``scales``."""
    from streamseg.device import resolve_precision
    from training.train import PrecisionModel

    network = torch.nn.Conv2d(3, 1, 1)
    device = torch.device("cpu")
    return PrecisionModel(
        network,
        torch.optim.Adam(network.parameters()),
        torch.nn.BCEWithLogitsLoss(),
        epoch_metrics=[],
        device=device,
        precision=resolve_precision(device, "fp32"),
        multiscale=scales,
    )
