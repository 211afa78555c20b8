"""INT8 post-training quantization of a model file for the OpenVINO backend.

``python -m training quantize --model M --data ROOT`` makes the INT8 artefact
that ``model.backend: openvino`` / ``auto`` runs:

1. The validation carve-out of the run that made ``M`` is rebuilt from the
   official training split with the fraction and seed recorded in ``M``'s
   provenance (defaults 0.1 and 0 when it has none); the test split is never
   read.
2. ``subset_size`` calibration images are drawn (seeded) from the *training
   part* of that carve-out; each is prepared exactly as the runtime prepares a
   frame (:func:`streamseg.transforms.to_tensor`, resize to ``input_hw``).
3. The network is converted to OpenVINO (fp32) and quantized with NNCF's
   post-training quantization (``preset`` mixed: symmetric weights,
   asymmetric activations; performance: symmetric both).
4. The INT8 and fp32 masks are compared on the validation images at full
   resolution (micro and macro Dice against the ground truth, pixel
   agreement between the two masks); the artefact is written only if the
   micro Dice drop stays within ``max_dice_drop``.
5. ``<stem>.int8.xml/.bin`` and ``<stem>.int8.json`` (provenance: sha256 of
   the model file, sha256 of the sorted calibration stems, preset, subset
   size, toolkit versions, validation scores) are written beside ``M``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamseg.backends import openvino as ov_backend
from streamseg.model import ModelSpec, file_sha256, load_model
from streamseg.segmenter import predict_probabilities
from streamseg.transforms import network_input as to_network_input
from streamseg.transforms import upload
from training.data import PolypFolder, carve_validation, read_split
from training.metrics import confusion_counts, macro_scores, micro_scores

log = logging.getLogger(__name__)

PRESETS = ("mixed", "performance")
DEFAULT_SUBSET = 200
DEFAULT_MAX_DICE_DROP = 0.005
SAMPLE_SEED = 0
NNCF_HINT = "pip install 'streamseg[openvino]' (openvino, nncf)"


class QuantizeError(RuntimeError):
    """The INT8 model disagrees with fp32 beyond the limit (nothing was written)."""


@dataclass(frozen=True)
class Agreement:
    """INT8 against fp32 on labelled images at full resolution.

    Attributes:
        images: Images compared.
        fp32_dice, int8_dice: Micro Dice against the ground truth.
        fp32_dice_macro, int8_dice_macro: Macro Dice against the ground truth.
        mask_agreement_pct: Pixels where both masks agree, pooled, in %.
        worst_image_agreement_pct: The lowest per-image agreement, in %.
    """

    images: int
    fp32_dice: float
    int8_dice: float
    fp32_dice_macro: float
    int8_dice_macro: float
    mask_agreement_pct: float
    worst_image_agreement_pct: float

    @property
    def dice_drop(self) -> float:
        """fp32 micro Dice minus INT8 micro Dice (positive: INT8 is worse)."""
        return self.fp32_dice - self.int8_dice


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_model` wrote and measured."""

    paths: ov_backend.Int8Paths
    provenance: dict[str, Any]
    agreement: Agreement
    calibration_images: int
    seconds: float


def carve_from_provenance(
    spec: ModelSpec, folder: PolypFolder, train_split: str | None = None
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Rebuild (training part, validation part) of the run that made the model.

    Returns:
        Training stems, validation stems, and how they were carved.
    """
    recorded: dict[str, Any] = {}
    with_config = spec.provenance.get("config")
    if with_config:
        try:
            recorded = json.loads(with_config).get("data", {})
        except (ValueError, AttributeError):
            recorded = {}
    fraction = float(recorded.get("val_fraction", 0.1))
    seed = int(recorded.get("split_seed", 0))
    split = train_split or recorded.get("train_split", "splits/train.txt")
    official = read_split(folder.root / split)
    folder.check(official, split)
    train, val = carve_validation(official, fraction, seed)
    how = {"split_file": split, "val_fraction": fraction, "split_seed": seed}
    return train, val, how


def sample_stems(
    stems: Sequence[str], count: int, seed: int = SAMPLE_SEED
) -> list[str]:
    """``count`` stems drawn with a seeded shuffle (all if fewer), sorted."""
    ordered = sorted(stems)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return sorted(ordered[i] for i in order[: min(count, len(ordered))])


def network_input(pixels: np.ndarray, input_hw: Sequence[int]) -> np.ndarray:
    """(1, 3, h, w) float32 at ``input_hw``, as the runtime feeds the network."""
    with torch.inference_mode():
        return to_network_input(upload(pixels), input_hw).numpy()


def compare(
    reference, candidate, spec: ModelSpec, folder: PolypFolder, stems: Sequence[str]
) -> Agreement:
    """Masks of ``candidate`` vs ``reference`` (both runners or networks) on ``stems``.

    Each image goes through :func:`predict_probabilities` at its own
    resolution, thresholded at the model's threshold.
    """
    counts_ref, counts_new, agree, worst = [], [], 0, 100.0
    total = 0
    device = torch.device("cpu")
    for stem in stems:
        pixels, mask = folder.load_pair(stem)
        images = upload(pixels, device)
        truth = torch.from_numpy(mask).bool()
        with torch.inference_mode():
            p_ref = predict_probabilities(reference, images, spec.input_hw)[0]
            p_new = predict_probabilities(candidate, images, spec.input_hw)[0]
        m_ref, m_new = p_ref >= spec.threshold, p_new >= spec.threshold
        counts_ref.append(confusion_counts(m_ref, truth)[0])
        counts_new.append(confusion_counts(m_new, truth)[0])
        same = int((m_ref == m_new).sum())
        agree += same
        total += m_ref.numel()
        worst = min(worst, 100.0 * same / m_ref.numel())
    counts_ref, counts_new = np.stack(counts_ref), np.stack(counts_new)
    return Agreement(
        images=len(stems),
        fp32_dice=micro_scores(counts_ref).dice,
        int8_dice=micro_scores(counts_new).dice,
        fp32_dice_macro=macro_scores(counts_ref).dice,
        int8_dice_macro=macro_scores(counts_new).dice,
        mask_agreement_pct=100.0 * agree / total,
        worst_image_agreement_pct=worst,
    )


def _import_nncf():
    try:
        import nncf
    except ImportError as error:
        raise ValueError(
            f"quantize needs NNCF, which is not installed: {NNCF_HINT}"
        ) from error
    return nncf


def quantize_model(
    model_path: str | Path,
    data_root: str | Path,
    *,
    preset: str = "mixed",
    subset_size: int = DEFAULT_SUBSET,
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP,
    train_split: str | None = None,
    val_limit: int | None = None,
) -> QuantizeResult:
    """Calibrate on training images, check on validation images, write the artefact.

    Args:
        model_path: The fp32 ``.safetensors`` model file.
        data_root: Kvasir-SEG-style folder (``images/``, ``masks/``, splits).
        preset: ``mixed`` or ``performance`` (NNCF quantization preset).
        subset_size: Calibration images (from the training part; all of it
            when it holds fewer).
        max_dice_drop: Largest fp32 - INT8 micro Dice on the validation
            images for which the artefact is written.
        train_split: Official training split file relative to ``data_root``
            (default: the one the model's provenance names).
        val_limit: Compare on the first ``val_limit`` validation images only
            (tests; the provenance records the number used).

    Raises:
        ValueError: Unknown preset, bad subset size, OpenVINO/NNCF missing.
        QuantizeError: INT8 loses more than ``max_dice_drop`` (nothing written).
        DatasetError: Missing or inconsistent data.
        ModelFileError: Invalid model file.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if subset_size < 1:
        raise ValueError(f"subset size: expected >= 1, got {subset_size}")
    openvino = ov_backend.import_openvino()
    nncf = _import_nncf()
    start_s = time.perf_counter()
    model_path = Path(model_path)
    model_sha = file_sha256(model_path)
    network, spec = load_model(model_path)
    folder = PolypFolder.open(data_root)
    train, val, carve = carve_from_provenance(spec, folder, train_split)
    if val_limit is not None:
        val = val[:val_limit]
    calibration = sample_stems(train, subset_size)
    log.info(
        "calibrating on %d of %d training images (%s, validation carve-out of %d "
        "held out; test split unused)",
        len(calibration),
        len(train),
        carve["split_file"],
        len(val),
    )
    inputs = [network_input(folder.load_image(s), spec.input_hw) for s in calibration]
    fp32_model = ov_backend.convert(network, spec)
    chosen = {
        "mixed": nncf.QuantizationPreset.MIXED,
        "performance": nncf.QuantizationPreset.PERFORMANCE,
    }[preset]
    quantized = nncf.quantize(
        fp32_model,
        nncf.Dataset(inputs),
        preset=chosen,
        subset_size=len(inputs),
    )
    calibrated_s = time.perf_counter() - start_s
    log.info(
        "quantized in %.1f s; checking against fp32 on %d images",
        calibrated_s,
        len(val),
    )
    int8_runner = ov_backend.OpenVinoRunner(ov_backend.compile_ir(quantized), "int8")
    agreement = compare(network.eval(), int8_runner, spec, folder, val)
    if agreement.dice_drop > max_dice_drop:
        raise QuantizeError(
            f"INT8 loses {agreement.dice_drop:.4f} micro Dice on {agreement.images} "
            f"validation images (limit {max_dice_drop}); nothing written. Try "
            "--preset mixed, a larger --subset-size, or raise --max-dice-drop"
        )
    provenance = {
        "schema": ov_backend.PROVENANCE_SCHEMA,
        "model_file": model_path.name,
        "model_sha256": model_sha,
        "created_utc": datetime.datetime.now(datetime.timezone.utc)
        .replace(microsecond=0)
        .isoformat(),
        "method": "NNCF post-training quantization of the OpenVINO fp32 conversion "
        "(weights and activations INT8; float layers run in f32)",
        "preset": preset,
        "subset_size": len(calibration),
        "input_hw": list(spec.input_hw),
        "calibration": {
            "images": len(calibration),
            "drawn_from": f"training part of {carve['split_file']} after the "
            f"validation carve-out (fraction {carve['val_fraction']}, seed "
            f"{carve['split_seed']}); seeded sample (seed {SAMPLE_SEED})",
            "training_part_images": len(train),
            "stems_sha256": ov_backend.stems_sha256(calibration),
        },
        "validation": {
            "images": agreement.images,
            "stems_sha256": ov_backend.stems_sha256(val),
            "threshold": spec.threshold,
            **{
                k: round(v, 6)
                for k, v in dataclasses.asdict(agreement).items()
                if k != "images"
            },
        },
        "versions": {
            "openvino": openvino.__version__,
            "nncf": nncf.__version__,
            "torch": torch.__version__,
        },
        "seconds": round(time.perf_counter() - start_s, 1),
    }
    paths = ov_backend.int8_paths(model_path)
    ov_backend.save_ir(quantized, paths.xml)
    _write_json(paths.provenance, provenance)
    return QuantizeResult(
        paths, provenance, agreement, len(calibration), time.perf_counter() - start_s
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(
        prefix=path.name, suffix=".tmp", dir=path.parent
    )
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
    os.chmod(temporary, 0o644)  # mkstemp makes it private; it ships with the model
    os.replace(temporary, path)
