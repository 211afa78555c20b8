"""Weight averaging of model files ("model soup"), threshold calibrated on validation.

``python -m training soup --models A B --data ROOT --out M`` averages the
weights of model files of one network (same architecture, encoder, input size,
normalization and tensors), e.g. a model and its fine-tuned descendant (the
average of a network before and after fine-tuning: Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022; of several fine-tunes: "Model
soups", ICML 2022). The ingredients must share the validation carve-out (each
file's provenance records it): the average is then scored, and its threshold
calibrated, on images none of them trained on, at full resolution through the
runtime's own input path, exactly as a training run calibrates its model.

The written file's provenance lists every ingredient (name, sha256, weight and
its own provenance, hence its recipe and lineage) under ``soup``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from streamseg.config import ConfigError
from streamseg.model import (
    ModelFileError,
    ModelSpec,
    file_sha256,
    load_model,
    save_model,
)
from streamseg.segmenter import FP32
from training.config import TrainConfig
from training.data import PolypFolder
from training.quantize import carve_from_provenance
from training.train import calibrate, portable_config

log = logging.getLogger(__name__)

# What must agree between ingredients for their weights to be averaged.
SAME_NETWORK = (
    "architecture",
    "encoder_name",
    "input_hw",
    "mean",
    "std",
    "model_kwargs",
)


@dataclass(frozen=True)
class SoupResult:
    """What :func:`make_soup` wrote and measured."""

    path: Path
    threshold: float
    val_dice: float
    val_dice_at_05: float
    val_images: int
    calibration_csv: Path


def average_states(
    states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of floating tensors (in float32); other tensors from the first.

    Raises:
        ConfigError: The states hold different tensor names or shapes.
    """
    first = states[0]
    for index, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys() or any(
            state[name].shape != tensor.shape for name, tensor in first.items()
        ):
            raise ConfigError(
                f"soup: model {index} has other tensors than model 1 (names or "
                "shapes); only files of one network can be averaged"
            )
    averaged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            averaged[name] = sum(
                weight * state[name].float()
                for weight, state in zip(weights, states, strict=True)
            )
        else:  # e.g. batch-norm counters: not weights
            averaged[name] = tensor.clone()
    return averaged


def check_same_network(specs: Sequence[ModelSpec], paths: Sequence[Path]) -> None:
    """Raises ConfigError when two ingredients are not the same network."""
    for spec, path in zip(specs[1:], paths[1:], strict=True):
        for name in SAME_NETWORK:
            mine, theirs = getattr(spec, name), getattr(specs[0], name)
            if mine != theirs:
                raise ConfigError(
                    f"soup: {path.name} has {name} {mine!r}, {paths[0].name} "
                    f"{theirs!r}; only files of one network can be averaged"
                )


def make_soup(
    paths: Sequence[str | Path],
    data_root: str | Path,
    out: str | Path,
    *,
    weights: Sequence[float] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float16,
) -> SoupResult:
    """Average ``paths``, calibrate on their validation carve-out, write ``out``.

    Args:
        paths: Two or more model files of one network.
        data_root: The dataset the ingredients were trained on.
        out: The model file to write (``<out stem>.calibration.csv`` beside it).
        weights: One per file, summing to 1 (default: equal).
        device: Where the validation images are predicted (default CPU).
        dtype: Weights in the written file.

    Raises:
        ConfigError: Fewer than two files, bad weights, unreadable files,
            different networks, or different validation carve-outs.
    """
    paths = [Path(path) for path in paths]
    if len(paths) < 2:
        raise ConfigError("soup: give two or more model files (--models A B ...)")
    if weights is None:
        weights = [1.0 / len(paths)] * len(paths)
    if len(weights) != len(paths) or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
        raise ConfigError(
            f"soup: --weights needs {len(paths)} non-negative values summing to 1, "
            f"got {list(weights)}"
        )
    device = device or torch.device("cpu")
    networks, specs = [], []
    for path in paths:
        try:
            network, spec = load_model(path)
        except ModelFileError as error:
            raise ConfigError(f"soup: {error}") from error
        networks.append(network)
        specs.append(spec)
    check_same_network(specs, paths)
    folder = PolypFolder.open(data_root)
    carve_outs = [carve_from_provenance(spec, folder) for spec in specs]
    validation = carve_outs[0][1]
    for (_, val, _), path in zip(carve_outs[1:], paths[1:], strict=True):
        if val != validation:
            raise ConfigError(
                f"soup: {path.name} was validated on other images than "
                f"{paths[0].name}; the soup's validation score would include "
                "images an ingredient trained on"
            )
    soup = networks[0]
    soup.load_state_dict(
        average_states([network.state_dict() for network in networks], weights)
    )
    soup.to(device).eval()

    out = Path(out)
    table = out.with_name(f"{out.stem}.calibration.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    # A training run's own calibration: same thresholds, same table.
    defaults = TrainConfig()
    threshold, val_dice, val_dice_05 = calibrate(
        soup, specs[0], folder, validation, device, FP32, defaults, table
    )
    thresholds = defaults.calibration.thresholds

    data = json.loads(specs[0].provenance.get("config", "{}")).get("data", {})
    data = portable_config({"data": data})["data"]
    first = specs[0].provenance
    provenance = {
        key: first[key]
        for key in ("dataset", "train_split", "val_split", "split_source")
        if key in first
    }
    provenance.update(
        encoder_init=f"weight average of {len(paths)} model files (soup)",
        soup=json.dumps(
            [
                {
                    "file": path.name,
                    "sha256": file_sha256(path),
                    "weight": weight,
                    "provenance": dict(spec.provenance),
                }
                for path, weight, spec in zip(paths, weights, specs, strict=True)
            ],
            sort_keys=True,
        ),
        # The carve-out every ingredient shares (what quantize reads); no machine keys.
        config=json.dumps({"data": data}, sort_keys=True),
        val_dice=f"{val_dice:.4f} (micro, full resolution, threshold {threshold:.2f}, "
        f"{len(validation)} validation images)",
        val_dice_at_0_5=f"{val_dice_05:.4f}",
        threshold_calibration=(
            f"best micro Dice over {len(thresholds)} thresholds on the validation split"
        ),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    spec = dataclasses.replace(specs[0], threshold=threshold, provenance=provenance)
    save_model(out, soup, spec, dtype=dtype)
    log.info(
        "soup of %d files -> %s: validation micro Dice %.4f at threshold %.2f",
        len(paths),
        out,
        val_dice,
        threshold,
    )
    return SoupResult(out, threshold, val_dice, val_dice_05, len(validation), table)
