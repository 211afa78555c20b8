"""Fast paths checked against fp32 on a labelled split (``streamseg bench --validate``).

For each variant: micro Dice of it and of fp32 against the ground truth, their
difference, and the share of pixels on which the two masks agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamseg.evaluation.bench_inputs import (
    VARIANTS,
    BenchError,
    resolve_variant,
)
from streamseg.evaluation.datasets import (
    DatasetError,
    read_image,
    read_mask,
    read_split,
)
from streamseg.evaluation.metrics import dice_score
from streamseg.frames import Frame, Prediction
from streamseg.segmenter import ModelSettings, Segmenter
from streamseg.transforms import resize

# --- validation ---------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """A variant compared with fp32 on a labelled split.

    Attributes:
        variant: Variant name.
        runs: How the network ran.
        images: Images compared.
        reference_dice: Micro Dice (pixels pooled over the split) of fp32
            against the ground truth.
        variant_dice: The same for the variant.
        dice_difference: ``variant_dice - reference_dice``.
        reference_dice_macro: Mean per-image Dice of fp32.
        variant_dice_macro: Mean per-image Dice of the variant.
        mask_agreement_pct: Pixels (pooled) where both masks agree, percent.
        worst_image_agreement_pct: The lowest per-image agreement.
        max_probability_difference: Largest absolute difference of
            probabilities over all pixels.
    """

    variant: str
    runs: str
    images: int
    reference_dice: float
    variant_dice: float
    dice_difference: float
    reference_dice_macro: float
    variant_dice_macro: float
    mask_agreement_pct: float
    worst_image_agreement_pct: float
    max_probability_difference: float


def read_labelled_split(
    root: str | Path, split: str = "test", limit: int | None = None
) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) of a Kvasir-SEG-style split (``root/splits/<split>.txt``).

    ``split`` may also be a path to a split file. ``limit`` keeps the first N.

    Raises:
        BenchError: Missing folder, split file, image or mask.
    """
    root = Path(root)
    split_file = (
        Path(split) if Path(split).is_file() else root / "splits" / f"{split}.txt"
    )
    if not split_file.is_file():
        raise BenchError(
            f"{split_file}: no split file; pass --data with a Kvasir-SEG folder "
            "(images/, masks/, splits/test.txt), e.g. ../shared/data/kvasir-seg"
        )
    try:
        stems = read_split(split_file)
    except DatasetError as error:
        raise BenchError(str(error)) from error
    pairs = []
    for stem in stems[:limit] if limit else stems:
        found = []
        for folder in ("images", "masks"):
            matches = sorted((root / folder).glob(f"{stem}.*"))
            if not matches:
                raise BenchError(
                    f"{root / folder}: no file for {stem!r} listed in {split_file}; "
                    "the split does not match this dataset folder"
                )
            found.append(matches[0])
        pairs.append((stem, found[0], found[1]))
    return pairs


def validate(
    model_path: str | Path,
    base: ModelSettings,
    variants: Sequence[str],
    pairs: Sequence[tuple[str, Path, Path]],
) -> list[Agreement]:
    """Compare each variant's masks with fp32's on labelled images.

    Every image goes through :meth:`Segmenter.segment` (the runtime path:
    upload, resize, forward) and its probabilities are resized back to the
    image, as training's test-set evaluation does.

    Args:
        model_path: Model file.
        base: Model settings the variants apply to (device, threads, ...).
        variants: Variant names.
        pairs: (stem, image, mask) from :func:`read_labelled_split`.
    """
    reference = Segmenter.from_settings(
        dataclasses.replace(VARIANTS["fp32"].apply(base), path=Path(model_path))
    )
    candidates = {
        name: Segmenter.from_settings(
            dataclasses.replace(resolve_variant(name, base), path=Path(model_path))
        )
        for name in variants
    }
    threshold = reference.spec.threshold
    counts = {name: np.zeros((len(pairs), 3)) for name in ["fp32", *candidates]}
    agree = {name: np.zeros(len(pairs)) for name in candidates}
    pixels_total = np.zeros(len(pairs))
    max_diff = dict.fromkeys(candidates, 0.0)
    for row, (_stem, image_path, mask_path) in enumerate(pairs):
        pixels, truth_np = read_pair(image_path, mask_path)
        frame = Frame(row, 0.0, pixels)
        truth = torch.from_numpy(truth_np)
        ref_prob = _at_frame_size(reference(frame))
        ref_mask = ref_prob >= threshold
        counts["fp32"][row] = _confusion(ref_mask, truth)
        pixels_total[row] = truth.numel()
        for name, segmenter in candidates.items():
            probability = _at_frame_size(segmenter(frame))
            mask = probability >= threshold
            counts[name][row] = _confusion(mask, truth)
            agree[name][row] = float((mask == ref_mask).sum())
            difference = float((probability - ref_prob).abs().max())
            max_diff[name] = max(max_diff[name], difference)
    ref_micro = float(dice_score(*counts["fp32"].sum(axis=0)))
    ref_macro = float(dice_score(*counts["fp32"].T).mean())
    results = []
    for name, segmenter in candidates.items():
        micro = float(dice_score(*counts[name].sum(axis=0)))
        results.append(
            Agreement(
                variant=name,
                runs=segmenter.describe(),
                images=len(pairs),
                reference_dice=ref_micro,
                variant_dice=micro,
                dice_difference=micro - ref_micro,
                reference_dice_macro=ref_macro,
                variant_dice_macro=float(dice_score(*counts[name].T).mean()),
                mask_agreement_pct=100.0 * agree[name].sum() / pixels_total.sum(),
                worst_image_agreement_pct=float(
                    100.0 * (agree[name] / pixels_total).min()
                ),
                max_probability_difference=max_diff[name],
            )
        )
    return results


def _confusion(mask: torch.Tensor, truth: torch.Tensor) -> tuple[int, int, int]:
    tp = int((mask & truth).sum())
    return tp, int(mask.sum()) - tp, int(truth.sum()) - tp


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB image and (H, W) bool mask of one labelled pair.

    Raises:
        BenchError: Either file cannot be decoded.
    """
    try:
        return read_image(image_path), read_mask(mask_path)
    except DatasetError as error:
        raise BenchError(str(error)) from error


def _at_frame_size(prediction: Prediction) -> torch.Tensor:
    """The prediction's probabilities resized to its frame, on the host.

    As training's test-set evaluation scores them
    (:func:`~streamseg.segmenter.predict_probabilities` at the image's size),
    so the Dice here and there agree.
    """
    probabilities = prediction.probabilities.float()[None, None]
    return resize(probabilities, prediction.frame.hw)[0, 0].cpu()
