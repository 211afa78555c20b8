"""Teachers' probability maps for knowledge distillation, computed once per image cache.

A teacher is any model file. Running it on every augmented batch would cost a
forward pass of a larger network per training step; instead each cached
training image (:class:`training.data.CachedImages`) is segmented once, by
every teacher through the runtime's own inference path
(:func:`streamseg.segmenter.predict_probabilities`, optionally with flip
test-time augmentation), at the cache's size. The mean over the teachers is
stored as uint8 (probability x 255) beside the cache, named after the cache,
the teachers' sha256 and the TTA, and memory-mapped. The training dataset then
augments that map together with the image and mask (the same geometry), so the
student is taught on exactly the pixels it sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamseg.config import ConfigError
from streamseg.model import ModelFileError, file_sha256, load_model
from streamseg.segmenter import TTA, predict_probabilities
from training.data import CachedImages

log = logging.getLogger(__name__)

MAPS_FORMAT = "streamseg-teacher-maps/1"


@dataclass(frozen=True)
class TeacherMaps:
    """The teachers' mean foreground probability for each cached training image.

    Attributes:
        probabilities: (N, h, w) uint8, probability x 255, rows in the cache's
            order and at its size (memory-mapped).
        path: The ``.npy`` file.
        teachers: ``name sha256`` of each teacher file, in the given order.
        tta: The test-time augmentation the teachers ran with.
    """

    probabilities: np.ndarray
    path: Path
    teachers: tuple[str, ...]
    tta: TTA

    @classmethod
    def build(
        cls,
        cache: CachedImages,
        teachers: Sequence[str | Path],
        *,
        tta: TTA = "flips",
        device: torch.device | str = "cpu",
        batch_size: int = 8,
    ) -> TeacherMaps:
        """Open the maps for ``cache`` and ``teachers``, computing them if needed.

        Writing is atomic (a temporary file renamed into place), so a run
        killed meanwhile leaves no half-written maps.

        Raises:
            ConfigError: No teacher, or a teacher file that is missing or not
                a model file (named ``distill.teachers``).
        """
        if not teachers:
            raise ConfigError("distill.teachers: expected at least one model file")
        paths = [Path(teacher) for teacher in teachers]
        for path in paths:
            if not path.is_file():
                raise ConfigError(
                    f"distill.teachers: no such model file {path} (a relative path "
                    "is read from the current folder)"
                )
        digests = [file_sha256(path) for path in paths]
        key = hashlib.sha256(
            "|".join([MAPS_FORMAT, cache.images_path.name, tta, *digests]).encode()
        ).hexdigest()[:16]
        stem = cache.images_path.name.removesuffix("-images.npy")
        path = cache.images_path.with_name(f"{stem}-teachers-{key}.npy")
        records = tuple(
            f"{p.name} {digest}" for p, digest in zip(paths, digests, strict=True)
        )
        if not path.is_file():
            cls._write(cache, paths, tta, torch.device(device), batch_size, path)
            path.with_suffix(".json").write_text(
                json.dumps(
                    {
                        "format": MAPS_FORMAT,
                        "cache": cache.images_path.name,
                        "teachers": list(records),
                        "tta": tta,
                    },
                    indent=2,
                )
                + "\n",
                encoding="utf-8",
            )
        return cls(np.load(path, mmap_mode="r"), path, records, tta)

    def dice_against(self, labels: np.ndarray, chunk: int = 64) -> float:
        """Micro Dice of the maps cut at 0.5 against (N, h, w) {0, 1} ``labels``.

        How much the teachers add beyond the labels: near 1 they repeat them
        (a teacher that learned these very images), lower they disagree.
        """
        counts = np.zeros(3, np.int64)  # overlap, predicted, true
        for start in range(0, len(labels), chunk):
            predicted = self.probabilities[start : start + chunk] >= 128
            true = np.asarray(labels[start : start + chunk]) > 0
            counts += (
                int((predicted & true).sum()),
                int(predicted.sum()),
                int(true.sum()),
            )
        total = counts[1] + counts[2]
        return 1.0 if total == 0 else float(2 * counts[0] / total)

    @staticmethod
    def _write(
        cache: CachedImages,
        teachers: Sequence[Path],
        tta: TTA,
        device: torch.device,
        batch_size: int,
        path: Path,
    ) -> None:
        count = len(cache.stems)
        log.info(
            "teachers' maps for %d cached images at %dx%d: %s (tta %s)",
            count,
            *cache.size_hw,
            ", ".join(str(t) for t in teachers),
            tta,
        )
        total = np.zeros((count, *cache.size_hw), np.float32)
        for teacher in teachers:
            try:
                network, spec = load_model(teacher, device)
            except ModelFileError as error:
                raise ConfigError(f"distill.teachers: {error}") from error
            with torch.inference_mode():
                for start in range(0, count, batch_size):
                    pixels = torch.from_numpy(
                        np.array(cache.images[start : start + batch_size])
                    )
                    images = pixels.permute(0, 3, 1, 2).to(device)
                    total[start : start + len(pixels)] += (
                        predict_probabilities(
                            network,
                            images,
                            spec.input_hw,
                            tta=tta,
                            output_hw=cache.size_hw,
                        )
                        .cpu()
                        .numpy()
                    )
        mean = total / len(teachers)
        temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
        maps = np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.uint8, shape=total.shape
        )
        maps[:] = np.clip(np.rint(mean * 255.0), 0, 255).astype(np.uint8)
        maps.flush()
        del maps
        os.replace(temporary, path)
