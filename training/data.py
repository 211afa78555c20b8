"""Kvasir-SEG-style folders, split files, and the (image, mask) datasets.

A dataset folder holds ``images/`` and ``masks/`` with the same file stems
(any of .jpg .jpeg .png .bmp .tif .tiff) and split files with one stem per
line. Images, masks (grey level > 127 is polyp) and split files are read by
:mod:`streamseg.evaluation.datasets`, the readers the tools and tests share.

Images reach the network through :mod:`streamseg.transforms` (``upload`` +
``network_input``), exactly as the runtime does; only training adds augmentation on top.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, get_worker_info

from streamseg.evaluation.datasets import (
    DatasetError,
    read_image,
    read_mask,
    read_split,
)
from streamseg.transforms import network_input, resize, upload

if TYPE_CHECKING:  # albumentations is imported only where augmentation is built
    import albumentations as A

    from training.config import DataConfig
    from training.distill import TeacherMaps

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PolypFolder:
    """An indexed Kvasir-SEG-style folder.

    Attributes:
        root: The folder holding ``images/`` and ``masks/``.
        images: Stem -> image file.
        masks: Stem -> mask file.
    """

    root: Path
    images: dict[str, Path]
    masks: dict[str, Path]

    @classmethod
    def open(cls, root: str | Path) -> PolypFolder:
        """Index ``root/images`` and ``root/masks``.

        Raises:
            DatasetError: A folder is missing or empty.
        """
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(
                f"{root}: no such dataset folder; pass --data with a folder holding "
                "images/ and masks/ (e.g. ../shared/data/kvasir-seg)"
            )
        found = {}
        for name in ("images", "masks"):
            folder = root / name
            if not folder.is_dir():
                raise DatasetError(
                    f"{root}: expected a {name}/ folder inside it (Kvasir-SEG layout: "
                    "images/ and masks/ with the same file names)"
                )
            files = {
                path.stem: path
                for path in sorted(folder.iterdir())
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            }
            if not files:
                raise DatasetError(
                    f"{folder}: holds no {'/'.join(IMAGE_SUFFIXES)} files"
                )
            found[name] = files
        return cls(root, found["images"], found["masks"])

    @property
    def paired_stems(self) -> list[str]:
        """Stems that have both an image and a mask, sorted."""
        return sorted(self.images.keys() & self.masks.keys())

    def check(self, stems: Iterable[str], where: str) -> None:
        """Raise unless every stem has an image and a mask.

        Raises:
            DatasetError: Names the first missing stems and the split they came from.
        """
        missing = [s for s in stems if s not in self.images or s not in self.masks]
        if missing:
            raise DatasetError(
                f"{where}: {len(missing)} stem(s) have no image or mask in "
                f"{self.root}, "
                f"e.g. {missing[:3]}; the split file does not match this dataset folder"
            )

    def load_image(self, stem: str) -> np.ndarray:
        """The image as an (H, W, 3) uint8 RGB array."""
        return read_image(self.images[stem])

    def load_mask(self, stem: str) -> np.ndarray:
        """The mask as an (H, W) uint8 array of 0 (background) and 1 (polyp)."""
        return read_mask(self.masks[stem]).view(np.uint8)

    def load_pair(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask of one stem, checked to be the same size.

        Raises:
            DatasetError: The two differ in size.
        """
        image, mask = self.load_image(stem), self.load_mask(stem)
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"{stem}: image is {image.shape[1]}x{image.shape[0]} but mask is "
                f"{mask.shape[1]}x{mask.shape[0]} (width x height); they must match"
            )
        return image, mask


def write_split(path: str | Path, stems: Sequence[str]) -> Path:
    """Write one stem per line, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=path.name, suffix=".tmp", dir=path.parent
    )
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("".join(f"{stem}\n" for stem in stems))
    os.replace(temporary, path)
    return path


def carve_validation(
    stems: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split ``stems`` into (train, validation) with a seeded shuffle.

    The result depends only on the set of stems, ``fraction`` and ``seed``
    (stems are sorted first), so the same inputs always give the same split.

    Returns:
        Sorted training stems and sorted validation stems; validation holds
        ``round(len(stems) * fraction)`` stems, at least one.

    Raises:
        DatasetError: Too few stems to leave both parts non-empty.
    """
    ordered = sorted(stems)
    count = max(1, round(len(ordered) * fraction))
    if count >= len(ordered):
        raise DatasetError(
            f"cannot carve a validation split of {fraction:.0%} from "
            f"{len(ordered)} stems "
            "and keep training stems; lower data.val_fraction or use more images"
        )
    order = np.random.default_rng(seed).permutation(len(ordered))
    validation = sorted(ordered[i] for i in order[:count])
    training = sorted(ordered[i] for i in order[count:])
    return training, validation


@dataclass(frozen=True)
class Splits:
    """The stems a run trains and validates on, and the files that record them."""

    train: list[str]
    val: list[str]
    train_file: Path
    val_file: Path
    source_file: Path


def prepare_splits(
    folder: PolypFolder, config: DataConfig, splits_dir: Path, *, reuse: bool
) -> Splits:
    """Carve validation out of the official training split, or reuse a run's carve-out.

    Args:
        folder: The indexed dataset.
        config: Split file names, fraction and seed.
        splits_dir: ``<run_dir>/splits``; receives ``train.txt`` and ``val.txt``.
        reuse: Read existing files there (a resumed run) instead of carving.

    Raises:
        DatasetError: Missing or inconsistent split files.
    """
    source = folder.root / config.train_split
    train_file, val_file = splits_dir / "train.txt", splits_dir / "val.txt"
    if reuse and train_file.is_file() and val_file.is_file():
        train, val = read_split(train_file), read_split(val_file)
        log.info("reusing the run's splits: %d train, %d val", len(train), len(val))
    else:
        official = read_split(source)
        train, val = carve_validation(official, config.val_fraction, config.split_seed)
        write_split(train_file, train)
        write_split(val_file, val)
        log.info(
            "carved %d validation stems from %d in %s (seed %d) -> %s",
            len(val),
            len(official),
            source,
            config.split_seed,
            splits_dir,
        )
    overlap = set(train) & set(val)
    if overlap:
        raise DatasetError(
            f"{splits_dir}: train and val share stems, e.g. {sorted(overlap)[:3]}"
        )
    folder.check(train, str(train_file))
    folder.check(val, str(val_file))
    return Splits(train, val, train_file, val_file, source)


def resize_mask(mask: np.ndarray, size_hw: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an (H, W) {0, 1} mask to a (1, h, w) float tensor.

    ``nearest-exact`` samples pixel centres, so the mask stays aligned with the
    bilinear image resize (no half-pixel shift) and stays binary.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    if tuple(tensor.shape[-2:]) != (int(size_hw[0]), int(size_hw[1])):
        tensor = F.interpolate(
            tensor, size=tuple(int(s) for s in size_hw), mode="nearest-exact"
        )
    return tensor[0]


CACHE_FORMAT = "streamseg-train-cache/3"


@dataclass(frozen=True)
class CachedImages:
    """Training images and masks decoded once and pre-resized, memory-mapped.

    Decoding full-size JPEGs every epoch dominates a CPU epoch at small input
    sizes; this decodes each training pair once, resizes the image with the
    shared :func:`streamseg.transforms.network_input` and the mask with
    :func:`resize_mask` to ``size_hw`` (chosen a little larger than the network
    input, so augmentation still scales and crops from real pixels), and keeps
    them as uint8 ``.npy`` files. The file name is a hash of the stems, the
    bytes of every image and mask, and ``size_hw``: a changed file or split
    makes a new cache, while the same files copied, moved or touched (a fresh
    download, another mount) reuse it.

    Attributes:
        stems: Stems in array order.
        size_hw: (height, width) of the cached arrays.
        images: (N, h, w, 3) uint8 RGB (memory-mapped).
        masks: (N, h, w) uint8 {0, 1} (memory-mapped).
        images_path: The images ``.npy`` file.
    """

    stems: tuple[str, ...]
    size_hw: tuple[int, int]
    images: np.ndarray
    masks: np.ndarray
    images_path: Path

    @classmethod
    def build(
        cls,
        folder: PolypFolder,
        stems: Sequence[str],
        size_hw: Sequence[int],
        cache_dir: str | Path,
    ) -> CachedImages:
        """Open the cache for these stems at ``size_hw``, writing it first if needed.

        Writing is atomic (temporary files renamed into place), so a run
        killed while caching leaves no half-written cache behind.

        Raises:
            DatasetError: An image or mask cannot be decoded or sizes differ.
        """
        size_hw = (int(size_hw[0]), int(size_hw[1]))
        stems = tuple(stems)
        cache_dir = Path(cache_dir)
        key = cache_key(folder, stems, size_hw)
        base = cache_dir / f"train-{size_hw[0]}x{size_hw[1]}-{key}"
        images_path = base.with_name(base.name + "-images.npy")
        masks_path = base.with_name(base.name + "-masks.npy")
        if not (images_path.is_file() and masks_path.is_file()):
            cache_dir.mkdir(parents=True, exist_ok=True)
            log.info("caching %d training pairs at %dx%d", len(stems), *size_hw)
            shape = (len(stems), *size_hw)
            images_tmp = images_path.with_name(images_path.name + f".{os.getpid()}.tmp")
            masks_tmp = masks_path.with_name(masks_path.name + f".{os.getpid()}.tmp")
            images = np.lib.format.open_memmap(
                images_tmp, mode="w+", dtype=np.uint8, shape=(*shape, 3)
            )
            masks = np.lib.format.open_memmap(
                masks_tmp, mode="w+", dtype=np.uint8, shape=shape
            )
            for index, stem in enumerate(stems):
                pixels, mask = folder.load_pair(stem)
                resized = network_input(upload(pixels), size_hw)[0]
                images[index] = (
                    (resized.permute(1, 2, 0) * 255.0)
                    .round_()
                    .clamp_(0, 255)
                    .byte()
                    .numpy()
                )
                masks[index] = resize_mask(mask, size_hw)[0].byte().numpy()
            images.flush()
            masks.flush()
            del images, masks
            os.replace(masks_tmp, masks_path)
            os.replace(images_tmp, images_path)
            base.with_name(base.name + ".json").write_text(
                json.dumps(
                    {
                        "format": CACHE_FORMAT,
                        "root": str(folder.root),
                        "size_hw": size_hw,
                        "stems": list(stems),
                    }
                )
                + "\n",
                encoding="utf-8",
            )
        return cls(
            stems,
            size_hw,
            np.load(images_path, mmap_mode="r"),
            np.load(masks_path, mmap_mode="r"),
            images_path,
        )

    def index_of(self, stem: str) -> int:
        """Position of ``stem`` in the arrays."""
        return self.stems.index(stem)


def cache_key(folder: PolypFolder, stems: Sequence[str], size_hw: Sequence[int]) -> str:
    """16 hex digits naming (stems, the files' contents, size).

    Hashes the bytes of every image and mask (the Kvasir-SEG training split,
    about 50 MB, in well under a second), not their paths or modification
    times.
    """
    digest = hashlib.sha256()
    digest.update(f"{CACHE_FORMAT}|{tuple(int(s) for s in size_hw)}".encode())
    _hash_contents(digest, folder, stems)
    return digest.hexdigest()[:16]


def contents_sha256(folder: PolypFolder, stems: Sequence[str]) -> str:
    """sha256 (hex) of the stems and the bytes of their images and masks, in order.

    Names what a model learned from independently of where the files lie: a
    copied or re-downloaded dataset with the same files gives the same value.
    """
    digest = hashlib.sha256()
    _hash_contents(digest, folder, stems)
    return digest.hexdigest()


def _hash_contents(digest: Any, folder: PolypFolder, stems: Sequence[str]) -> None:
    for stem in stems:
        digest.update(f"|{stem}".encode())
        for path in (folder.images[stem], folder.masks[stem]):
            digest.update(hashlib.sha256(path.read_bytes()).digest())


class PolypDataset(Dataset):
    """(image, mask) pairs at the network's input size, optionally augmented.

    Every image goes through :func:`streamseg.transforms.upload` and
    :func:`streamseg.transforms.network_input`, the runtime's own functions, so an
    unaugmented item is bit-for-bit what the deployed network sees for that
    image. Normalization is not applied here: it is the network's first layer.

    Args:
        folder: The indexed dataset.
        stems: Which images.
        input_hw: Network input (height, width).
        augment: Albumentations pipeline run after the resize on the float32
            (h, w, 3) image in [0, 1] and the uint8 (h, w) mask, or None.
        cache: Pre-resized pixels of ``stems`` (training only). Items are then
            taken from the cache, augmented at the cache's size and resized
            to ``input_hw`` with the same shared functions.
        teacher: The teachers' probability maps of ``cache``'s images
            (distillation; needs ``cache``). Each map is augmented with its
            image and mask (the same geometry, nearest sampling) and resized to
            ``input_hw`` bilinearly; it becomes the target's second channel.

    Items:
        image: (3, h, w) float32 RGB in [0, 1].
        mask: (1, h, w) float32 in {0, 1}; with ``teacher``, (2, h, w): the
            label, then the teachers' probability in [0, 1].
    """

    def __init__(
        self,
        folder: PolypFolder,
        stems: Sequence[str],
        input_hw: Sequence[int],
        augment: A.Compose | None = None,
        cache: CachedImages | None = None,
        teacher: TeacherMaps | None = None,
    ) -> None:
        self.folder = folder
        self.stems = list(stems)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.augment = augment
        self.cache = cache
        if teacher is not None and cache is None:
            raise ValueError("teacher maps belong to an image cache: pass cache too")
        if teacher is not None and teacher.probabilities.shape != cache.masks.shape:
            raise DatasetError(
                f"{teacher.path}: teacher maps of shape "
                f"{teacher.probabilities.shape} do not fit the image cache "
                f"{cache.images_path} ({cache.masks.shape})"
            )
        self.teacher = teacher
        if cache is not None:
            missing = set(self.stems) - set(cache.stems)
            if missing:
                raise DatasetError(
                    f"{cache.images_path}: the cache lacks {len(missing)} stem(s), "
                    f"e.g. {sorted(missing)[:3]}"
                )
            position = {stem: i for i, stem in enumerate(cache.stems)}
            self._cache_rows = [position[stem] for stem in self.stems]

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            return self._cached_item(index)
        pixels, mask = self.folder.load_pair(self.stems[index])
        image = network_input(upload(pixels), self.input_hw)[0]
        target = resize_mask(mask, self.input_hw)
        if self.augment is not None:
            out = self.augment(
                image=image.permute(1, 2, 0).numpy(),
                mask=target[0].to(torch.uint8).numpy(),
            )
            image = torch.from_numpy(
                np.ascontiguousarray(out["image"].transpose(2, 0, 1))
            )
            target = torch.from_numpy(np.ascontiguousarray(out["mask"]))[None].float()
        return image.float().clamp_(0.0, 1.0), target

    def _cached_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self._cache_rows[index]
        image = np.asarray(self.cache.images[row], np.float32) * (1.0 / 255.0)
        mask = np.array(self.cache.masks[row])
        if self.teacher is not None:
            # One (h, w, 2) mask: the geometric steps move label and map together.
            mask = np.stack([mask, self.teacher.probabilities[row]], axis=-1)
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        image_out = resize(tensor, self.input_hw)[0]
        if self.teacher is None:
            return image_out.float().clamp_(0.0, 1.0), resize_mask(mask, self.input_hw)
        label = resize_mask(mask[..., 0], self.input_hw)
        soft = torch.from_numpy(np.ascontiguousarray(mask[..., 1]))[None, None].float()
        soft = resize(soft * (1.0 / 255.0), self.input_hw)[0]
        target = torch.cat([label, soft.clamp_(0.0, 1.0)])
        return image_out.float().clamp_(0.0, 1.0), target

    def reseed(self, seed: int) -> None:
        """Reseed the augmentation's generators (albumentations keeps its own)."""
        if self.augment is not None:
            self.augment.set_random_seed(seed % 2**32)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: every RNG in a worker from torch's worker seed.

    torch gives each worker ``base_seed + worker_id``, with ``base_seed`` drawn
    from the DataLoader's generator, so shuffling, augmentation and resumed runs
    all follow from the run's seed.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, PolypDataset):
        info.dataset.reseed(seed)
