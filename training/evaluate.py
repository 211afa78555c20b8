"""Test-set evaluation of a model file at full resolution, on the runtime's own path.

Each image goes through :func:`streamseg.transforms.upload` and
:func:`streamseg.segmenter.predict_probabilities` (exactly what
:class:`streamseg.segmenter.Segmenter` does), and the probabilities, back at the
image's own size, are compared with the full-resolution mask. So the scores
describe the deployed model, not a resized proxy.

Reports: micro and macro Dice, IoU, precision and recall (conventions in
:mod:`training.metrics`), a per-image CSV, a JSON summary and a PNG of the best
and worst cases. Every report names the split and the averaging convention.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from streamseg.device import Precision, resolve_precision, select_device
from streamseg.model import ModelSpec, check_input_hw, load_model
from streamseg.segmenter import FP32, predict_probabilities
from streamseg.transforms import upload
from training.data import DatasetError, PolypFolder, read_split
from training.metrics import (
    Scores,
    confusion_counts,
    macro_scores,
    micro_scores,
    scores_from_counts,
)

log = logging.getLogger(__name__)

MICRO = "micro: pixels pooled over all images of the split, then one score"
MACRO = "macro: one score per image, then the mean over images"
EMPTY = (
    "a score whose denominator is zero is 1 when the image has no errors "
    "(fp = fn = 0), "
    "else 0 (an image with no polyp and no prediction scores 1)"
)
THUMBNAIL_HW = (192, 240)


def predict_image(
    network: nn.Module,
    pixels: np.ndarray,
    input_hw: Sequence[int],
    device: torch.device,
    precision: Precision = FP32,
    *,
    tta: bool = False,
) -> torch.Tensor:
    """Foreground probabilities for one image, at its own resolution.

    This is exactly ``Segmenter`` (upload, resize, forward, sigmoid, resize
    back), with or without flip TTA (the image, its horizontal and its vertical
    flip, flipped back and averaged: the runtime's ``model.tta: flips``).

    Args:
        network: Eval-mode network on ``device``.
        pixels: (H, W, 3) uint8 RGB.
        input_hw: Network input (height, width).
        device: Where inference runs.
        precision: Autocast dtype.
        tta: Average over flips.

    Returns:
        (H, W) float32 probabilities on ``device``.
    """
    images = upload(pixels, device)
    with torch.inference_mode():
        probabilities = predict_probabilities(
            network, images, input_hw, precision, tta="flips" if tta else "none"
        )
    return probabilities[0]


def iterate_predictions(
    network: nn.Module,
    spec: ModelSpec,
    folder: PolypFolder,
    stems: Sequence[str],
    device: torch.device,
    precision: Precision = FP32,
    *,
    tta: bool = False,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, torch.Tensor]]:
    """Yield (stem, pixels (H, W, 3) uint8, mask (H, W) {0, 1}, probabilities (H, W)).

    Probabilities are float32 on ``device``, at the image's own size.
    """
    yield from _ensemble_predictions(
        [(network, spec)], folder, stems, device, precision, tta=tta
    )


def _ensemble_predictions(
    members: Sequence[tuple[nn.Module, ModelSpec]],
    folder: PolypFolder,
    stems: Sequence[str],
    device: torch.device,
    precision: Precision,
    *,
    tta: bool,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, torch.Tensor]]:
    """:func:`iterate_predictions` with the mean probability of several models."""
    for stem in stems:
        pixels, mask = folder.load_pair(stem)
        predictions = [
            predict_image(network, pixels, spec.input_hw, device, precision, tta=tta)
            for network, spec in members
        ]
        if len(predictions) == 1:
            yield stem, pixels, mask, predictions[0]
        else:
            with torch.inference_mode():
                mean = torch.stack(predictions).mean(dim=0)
            yield stem, pixels, mask, mean


@dataclass(frozen=True)
class ImageResult:
    """Scores of one image (at its full resolution)."""

    stem: str
    height: int
    width: int
    truth_fraction: float
    predicted_fraction: float
    tp: int
    fp: int
    fn: int
    tn: int
    dice: float
    iou: float
    precision: float
    recall: float


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of a model on one split.

    Attributes:
        model: Model file path (an ensemble's joined by `` + ``).
        split: Split name (``test``, ``train`` or the split file's stem).
        split_file: The file listing the split's stems.
        threshold: Decision threshold used (probability >= threshold is polyp).
        tta: Whether flip test-time augmentation was used.
        device: Inference device.
        precision: Autocast dtype name.
        input_hw: Network input size (height, width) of each member, in order.
        input_hw_given: Whether ``input_hw`` replaced the model files' own sizes.
        members: Model files averaged (1: one model).
        micro: Scores of pixels pooled over the split.
        macro: Mean of per-image scores.
        images: Per-image results, in split order.
        wall_s: Seconds spent, loading included.
    """

    model: str
    split: str
    split_file: str
    threshold: float
    tta: bool
    device: str
    precision: str
    input_hw: tuple[tuple[int, int], ...]
    members: int
    micro: Scores
    macro: Scores
    images: tuple[ImageResult, ...]
    wall_s: float
    input_hw_given: bool = False

    def summary(self) -> dict:
        """JSON-friendly summary (no per-image rows)."""
        return {
            "model": self.model,
            "members": self.members,
            "split": self.split,
            "split_file": self.split_file,
            "images": len(self.images),
            "threshold": self.threshold,
            "tta": self.tta,
            "resolution": "full (each image's own size; network input "
            + " + ".join(f"{h}x{w}" for h, w in self.input_hw)
            + (
                " (given, replacing the model "
                if self.input_hw_given
                else " (the model "
            )
            + ("file's)" if self.members == 1 else "files')")
            + ", resized with streamseg.transforms.network_input; probabilities "
            "resized back" + (")" if self.members == 1 else "; the members' mean)"),
            "input_hw": [list(size) for size in self.input_hw],
            "device": self.device,
            "precision": self.precision,
            "micro": {"averaging": MICRO, **self.micro.as_dict()},
            "macro": {"averaging": MACRO, **self.macro.as_dict()},
            "empty_mask_convention": EMPTY,
            "wall_s": round(self.wall_s, 2),
        }


def resolve_split(root: Path, split: str) -> tuple[str, Path]:
    """Map ``test``/``train`` to the dataset's split files; else a split file path.

    Raises:
        DatasetError: Neither a known name nor an existing file.
    """
    if split in ("test", "train"):
        return split, root / "splits" / f"{split}.txt"
    path = Path(split)
    if path.is_file():
        return path.stem, path
    raise DatasetError(
        f"--split {split!r}: expected 'test', 'train' or a split file "
        "(one stem per line), "
        "e.g. <run_dir>/splits/val.txt"
    )


def evaluate_model(
    model_path: str | Path | Sequence[str | Path],
    data_root: str | Path,
    split: str = "test",
    *,
    device: str = "auto",
    precision: str = "fp32",
    tta: bool = False,
    threshold: float | None = None,
    input_hw: Sequence[Sequence[int]] | None = None,
) -> tuple[EvaluationReport, dict[str, np.ndarray]]:
    """Score a model file, or an ensemble of them, on a split at full resolution.

    An ensemble's probability is the mean of its members', each member run at
    its own input size (with ``tta``, each with flips), and cut at the mean of
    their calibrated thresholds unless ``threshold`` is given: what
    ``distill.teachers`` averages for a student, scored.

    Args:
        model_path: A streamseg ``.safetensors`` model file, or several.
        data_root: Kvasir-SEG-style folder.
        split: ``test``, ``train`` or a split file path.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        tta: Flip test-time augmentation.
        threshold: Replaces the model file's calibrated threshold.
        input_hw: Network input sizes (height, width) replacing the model files'
            own: one for every member, or one per member in order (the same file
            given twice at two sizes is an average over input sizes).

    Returns:
        The report, and a (rows, cols, 3) uint8 RGB thumbnail strip
        (image | truth | prediction) per stem for :func:`render_cases`.

    Raises:
        ModelFileError: The model file is missing or invalid.
        DatasetError: The data folder or split is missing or inconsistent.
        ValueError: Unknown device or precision, or input sizes that are not
            multiples of 32 or do not match the number of model files.
    """
    start = time.monotonic()
    torch_device = select_device(device)
    chosen = resolve_precision(torch_device, precision)
    paths = (
        [Path(model_path)]
        if isinstance(model_path, (str, Path))
        else [Path(path) for path in model_path]
    )
    if not paths:
        raise ValueError("model_path: expected at least one model file")
    sizes = _input_sizes(input_hw, len(paths))
    members = [load_model(path, torch_device) for path in paths]
    if sizes is not None:
        members = [
            (network, dataclasses.replace(spec, input_hw=size))
            for (network, spec), size in zip(members, sizes, strict=True)
        ]
    if threshold is None:
        used_threshold = sum(member.threshold for _, member in members) / len(members)
    else:
        used_threshold = float(threshold)
    if not 0.0 < used_threshold < 1.0:
        raise ValueError(f"threshold: expected a value in (0, 1), got {used_threshold}")
    folder = PolypFolder.open(data_root)
    name, split_file = resolve_split(Path(data_root), split)
    stems = read_split(split_file)
    folder.check(stems, str(split_file))
    results, thumbnails = [], {}
    for stem, pixels, mask, probabilities in _ensemble_predictions(
        members, folder, stems, torch_device, chosen, tta=tta
    ):
        predicted = probabilities >= used_threshold
        truth = torch.from_numpy(mask).to(torch_device).bool()
        counts = confusion_counts(predicted, truth)[0]
        scores = scores_from_counts(counts)
        height, width = mask.shape
        results.append(
            ImageResult(
                stem=stem,
                height=height,
                width=width,
                truth_fraction=float(mask.mean()),
                predicted_fraction=float(predicted.float().mean()),
                tp=int(counts[0]),
                fp=int(counts[1]),
                fn=int(counts[2]),
                tn=int(counts[3]),
                **scores.as_dict(),
            )
        )
        thumbnails[stem] = _case_strip(pixels, mask, predicted.cpu().numpy())
    all_counts = np.array([[r.tp, r.fp, r.fn, r.tn] for r in results], np.int64)
    report = EvaluationReport(
        model=" + ".join(str(path) for path in paths),
        split=name,
        split_file=str(split_file),
        threshold=used_threshold,
        tta=tta,
        device=str(torch_device),
        precision=chosen.name,
        input_hw=tuple(tuple(spec.input_hw) for _, spec in members),
        input_hw_given=sizes is not None,
        members=len(members),
        micro=micro_scores(all_counts),
        macro=macro_scores(all_counts),
        images=tuple(results),
        wall_s=time.monotonic() - start,
    )
    return report, thumbnails


def _input_sizes(
    input_hw: Sequence[Sequence[int]] | None, members: int
) -> list[tuple[int, int]] | None:
    """One (height, width) per member from ``evaluate_model``'s ``input_hw``."""
    if input_hw is None:
        return None
    sizes = [tuple(int(v) for v in size) for size in input_hw]
    if len(sizes) not in (1, members):
        raise ValueError(
            f"input_hw: expected one size for every model or one per model "
            f"({members}), got {len(sizes)}"
        )
    for size in sizes:
        check_input_hw(size)
    return [sizes[0]] * members if len(sizes) == 1 else sizes


def write_report(
    report: EvaluationReport,
    thumbnails: dict[str, np.ndarray],
    out_dir: str | Path,
    *,
    cases: int = 4,
) -> dict[str, Path]:
    """Write ``<split>_per_image.csv``, ``_summary.json`` and ``_cases.png``.

    Returns:
        Kind -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_image": out / f"{report.split}_per_image.csv",
        "summary": out / f"{report.split}_summary.json",
        "cases": out / f"{report.split}_cases.png",
    }
    fields = [f.name for f in dataclasses.fields(ImageResult)]
    with open(paths["per_image"], "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["split", *fields])
        for row in report.images:
            writer.writerow([report.split, *(_format(getattr(row, f)) for f in fields)])
    paths["summary"].write_text(
        json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8"
    )
    image = render_cases(report, thumbnails, cases)
    if not cv2.imwrite(str(paths["cases"]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{paths['cases']}: could not write PNG")
    return paths


def _format(value: object) -> object:
    return f"{value:.6f}" if isinstance(value, float) else value


def _case_strip(
    pixels: np.ndarray, mask: np.ndarray, predicted: np.ndarray
) -> np.ndarray:
    """image | truth (white) | prediction (white hit, red false alarm, blue miss)."""
    height, width = THUMBNAIL_HW
    image = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    truth = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST).astype(
        bool
    )
    pred = cv2.resize(
        predicted.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
    ).astype(bool)
    truth_panel = np.zeros_like(image)
    truth_panel[truth] = 255
    pred_panel = np.zeros_like(image)
    pred_panel[truth & pred] = (255, 255, 255)
    pred_panel[~truth & pred] = (230, 40, 40)
    pred_panel[truth & ~pred] = (40, 90, 255)
    gap = np.full((height, 4, 3), 64, np.uint8)
    return np.concatenate([image, gap, truth_panel, gap, pred_panel], axis=1)


def render_cases(
    report: EvaluationReport, thumbnails: dict[str, np.ndarray], cases: int = 4
) -> np.ndarray:
    """The ``cases`` best and worst images by Dice as one RGB picture.

    Each row: image | truth | prediction (white = hit, red = false alarm,
    blue = missed polyp), headed by its rank, stem and Dice.
    """
    ranked = sorted(report.images, key=lambda r: (r.dice, r.stem))
    count = min(cases, max(1, len(ranked) // 2))  # best and worst do not overlap
    worst = ranked[:count]
    best = list(reversed(ranked))[:count]
    rows = []
    title = (
        f"{report.split}: {len(report.images)} images, threshold {report.threshold:.2f}"
        f"{', flip TTA' if report.tta else ''} | micro Dice {report.micro.dice:.4f}, "
        f"macro Dice {report.macro.dice:.4f}"
    )
    width = (
        next(iter(thumbnails.values())).shape[1] if thumbnails else 3 * THUMBNAIL_HW[1]
    )
    rows.append(_label(title, width, scale=0.5))
    rows.append(
        _label(
            "columns: image | truth | prediction "
            "(white hit, red false alarm, blue miss)",
            width,
            scale=0.42,
        )
    )
    for heading, chosen in (("best", best), ("worst", worst)):
        for rank, result in enumerate(chosen, 1):
            rows.append(
                _label(
                    f"{heading} {rank}: {result.stem}  Dice {result.dice:.3f}  "
                    f"IoU {result.iou:.3f}",
                    width,
                )
            )
            rows.append(thumbnails[result.stem])
    return np.concatenate(rows, axis=0)


def _label(text: str, width: int, *, scale: float = 0.45) -> np.ndarray:
    strip = np.full((22, width, 3), 24, np.uint8)
    cv2.putText(
        strip,
        text,
        (6, 16),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (235, 235, 235),
        1,
        cv2.LINE_AA,
    )
    return strip
