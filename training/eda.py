"""A look at a Kvasir-SEG-style folder: counts, sizes, polyp areas, a picture grid.

Outputs (``write_eda``): ``eda_summary.json`` (everything below),
``eda_images.csv`` (one row per image), ``eda_grid.png`` (images with their
mask outlines, ordered from the smallest to the largest polyp).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.data import DatasetError, PolypFolder, read_split

log = logging.getLogger(__name__)

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass(frozen=True)
class ImageFacts:
    """One image/mask pair.

    Attributes:
        stem: File stem.
        split: ``train``, ``test``, ``both`` or ``none`` (official split files).
        height: Image height, pixels.
        width: Image width, pixels.
        area_fraction: Share of pixels that are polyp (mask > 127).
        polyps: Connected polyp regions (8-connectivity).
    """

    stem: str
    split: str
    height: int
    width: int
    area_fraction: float
    polyps: int


@dataclass(frozen=True)
class EdaReport:
    """Dataset-level facts.

    Attributes:
        root: The dataset folder.
        images: Image files.
        masks: Mask files.
        pairs: Stems with both.
        images_without_mask: Stems, first few.
        masks_without_image: Stems, first few.
        split_counts: Split name -> stems listed (``missing`` if no file).
        split_overlap: Stems listed in both official splits.
        split_unknown_stems: Listed stems with no image/mask pair.
        height_range: (min, max) image height.
        width_range: (min, max) image width.
        common_sizes: Most frequent "WxH" sizes with counts.
        size_mismatches: Stems whose mask size differs from the image's.
        empty_masks: Pairs without any polyp pixel.
        area_quantiles: Split -> {quantile: polyp area fraction}.
        polyps_per_image: Regions per mask -> count of images ("3+" pooled).
    """

    root: str
    images: int
    masks: int
    pairs: int
    images_without_mask: list[str]
    masks_without_image: list[str]
    split_counts: dict[str, int | str]
    split_overlap: int
    split_unknown_stems: int
    height_range: tuple[int, int]
    width_range: tuple[int, int]
    common_sizes: dict[str, int]
    size_mismatches: list[str]
    empty_masks: int
    area_quantiles: dict[str, dict[str, float]]
    polyps_per_image: dict[str, int] = field(default_factory=dict)


def analyze(
    root: str | Path, split_names: Sequence[str] = ("train", "test")
) -> tuple[EdaReport, list[ImageFacts]]:
    """Read every mask (and every image header) of a dataset folder.

    Raises:
        DatasetError: The folder is missing or malformed.
    """
    folder = PolypFolder.open(root)
    splits: dict[str, list[str]] = {}
    split_counts: dict[str, int | str] = {}
    for name in split_names:
        path = folder.root / "splits" / f"{name}.txt"
        if path.is_file():
            splits[name] = read_split(path)
            split_counts[name] = len(splits[name])
        else:
            split_counts[name] = "missing"
    membership: dict[str, list[str]] = {}
    for name, stems in splits.items():
        for stem in stems:
            membership.setdefault(stem, []).append(name)
    facts, mismatches = [], []
    for stem in folder.paired_stems:
        with Image.open(folder.images[stem]) as image:
            width, height = image.size
        mask = folder.load_mask(stem)
        if mask.shape != (height, width):
            mismatches.append(stem)
        regions = cv2.connectedComponents(mask, connectivity=8)[0] - 1
        names = membership.get(stem, [])
        facts.append(
            ImageFacts(
                stem=stem,
                split=names[0] if len(names) == 1 else ("both" if names else "none"),
                height=height,
                width=width,
                area_fraction=float(mask.mean()),
                polyps=int(regions),
            )
        )
    if not facts:
        raise DatasetError(f"{folder.root}: no stem has both an image and a mask")
    paired = set(folder.paired_stems)
    overlap = set(splits.get("train", [])) & set(splits.get("test", []))
    unknown = {s for stems in splits.values() for s in stems} - paired
    quantiles = {"all": _quantiles([f.area_fraction for f in facts])}
    for name in splits:
        values = [f.area_fraction for f in facts if f.split == name]
        if values:
            quantiles[name] = _quantiles(values)
    polyps = Counter("3+" if f.polyps >= 3 else str(f.polyps) for f in facts)
    sizes = Counter(f"{f.width}x{f.height}" for f in facts)
    report = EdaReport(
        root=str(folder.root),
        images=len(folder.images),
        masks=len(folder.masks),
        pairs=len(facts),
        images_without_mask=sorted(folder.images.keys() - folder.masks.keys())[:10],
        masks_without_image=sorted(folder.masks.keys() - folder.images.keys())[:10],
        split_counts=split_counts,
        split_overlap=len(overlap),
        split_unknown_stems=len(unknown),
        height_range=(min(f.height for f in facts), max(f.height for f in facts)),
        width_range=(min(f.width for f in facts), max(f.width for f in facts)),
        common_sizes=dict(sizes.most_common(5)),
        size_mismatches=mismatches[:10],
        empty_masks=sum(f.area_fraction == 0 for f in facts),
        area_quantiles=quantiles,
        polyps_per_image={k: polyps[k] for k in ("0", "1", "2", "3+") if polyps[k]},
    )
    return report, facts


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    points = np.quantile(np.asarray(values, np.float64), QUANTILES)
    return {
        f"q{int(q * 100):02d}": round(float(v), 5)
        for q, v in zip(QUANTILES, points, strict=True)
    }


def render_grid(
    root: str | Path,
    facts: Sequence[ImageFacts],
    count: int = 16,
    columns: int = 4,
    tile_hw: tuple[int, int] = (180, 220),
) -> np.ndarray:
    """Images with green mask outlines, from the smallest to the largest polyp.

    Returns:
        (rows * tile_h, columns * tile_w, 3) uint8 RGB picture.
    """
    folder = PolypFolder.open(root)
    ordered = sorted(facts, key=lambda f: (f.area_fraction, f.stem))
    count = min(count, len(ordered))
    picks = [
        ordered[round(i * (len(ordered) - 1) / max(count - 1, 1))] for i in range(count)
    ]
    height, width = tile_hw
    tiles = []
    for fact in picks:
        pixels, mask = folder.load_pair(fact.stem)
        tile = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
        small = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(
            small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(tile, contours, -1, (40, 255, 40), 2, cv2.LINE_AA)
        label = f"{fact.stem[:12]} {fact.area_fraction:.1%}"
        cv2.rectangle(tile, (0, 0), (width, 18), (0, 0, 0), -1)
        cv2.putText(
            tile,
            label,
            (4, 13),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros((height, width, 3), np.uint8))
    rows = [
        np.concatenate(tiles[i : i + columns], axis=1)
        for i in range(0, len(tiles), columns)
    ]
    return np.concatenate(rows, axis=0)


def write_eda(
    report: EdaReport,
    facts: Sequence[ImageFacts],
    out_dir: str | Path,
    *,
    grid_count: int = 16,
) -> dict[str, Path]:
    """Write the summary JSON, per-image CSV and grid PNG; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / "eda_summary.json",
        "images": out / "eda_images.csv",
        "grid": out / "eda_grid.png",
    }
    summary = asdict(report)
    summary["area_fraction_note"] = (
        "share of an image's pixels that are polyp (mask > 127)"
    )
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with open(paths["images"], "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["stem", "split", "height", "width", "area_fraction", "polyps"])
        for f in facts:
            writer.writerow(
                [f.stem, f.split, f.height, f.width, f"{f.area_fraction:.6f}", f.polyps]
            )
    grid = render_grid(report.root, facts, grid_count)
    if not cv2.imwrite(str(paths["grid"]), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{paths['grid']}: could not write PNG")
    return paths
