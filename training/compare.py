"""Two models scored on the same images: the difference and how sure it is.

``python -m training evaluate`` writes one row of pixel counts per image
(``<split>_per_image.csv``). Two such reports of one split are compared here:
micro Dice (pixels pooled) and macro Dice (mean of per-image scores) of each, the
difference B - A, and a paired bootstrap interval of that difference (the same
images are drawn, with replacement, for both models in each resample), so a
difference inside the noise of a 88- or 120-image split is visible as such.

Images that are not independent (frames of one video sequence, as in
CVC-ClinicDB) are resampled by group instead (``groups``: a cluster
bootstrap, whole sequences drawn with replacement), else the interval is too
narrow.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.metrics import dice_score

COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


class ReportError(ValueError):
    """A per-image report that cannot be read or does not match its partner."""


@dataclass(frozen=True)
class PerImageReport:
    """Pixel counts per image, in the order of ``stems``."""

    path: Path
    stems: tuple[str, ...]
    counts: np.ndarray  # (N, 4) int64: tp, fp, fn, tn


@dataclass(frozen=True)
class Difference:
    """One score of A and B and the paired bootstrap interval of B - A."""

    name: str
    a: float
    b: float
    low: float
    high: float
    confidence: float

    @property
    def delta(self) -> float:
        return self.b - self.a


@dataclass(frozen=True)
class Comparison:
    images: int
    groups: int  # units resampled: images, or the groups they were assigned to
    resamples: int
    micro: Difference
    macro: Difference
    b_better: int  # images where B's Dice is higher
    b_worse: int
    same: int
    share_b_better_micro: float  # share of resamples where B's micro Dice is higher


def read_report(path: Path) -> PerImageReport:
    """Read ``evaluate``'s per-image CSV.

    Raises:
        ReportError: Missing file, missing columns, no rows or repeated images.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(
            f"{path}: no such per-image report; python -m training evaluate writes "
            "<split>_per_image.csv in its --out folder"
        )
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = {"stem", *COUNT_COLUMNS} - set(reader.fieldnames or ())
        if missing:
            raise ReportError(
                f"{path}: not a per-image report of python -m training evaluate "
                f"(missing columns: {', '.join(sorted(missing))})"
            )
        rows = list(reader)
    if not rows:
        raise ReportError(f"{path}: the report has no images")
    stems = tuple(row["stem"] for row in rows)
    if len(set(stems)) != len(stems):
        raise ReportError(f"{path}: an image appears more than once")
    try:
        counts = np.array(
            [[int(row[c]) for c in COUNT_COLUMNS] for row in rows], np.int64
        )
    except ValueError as error:
        raise ReportError(
            f"{path}: a pixel count is not an integer ({error})"
        ) from None
    return PerImageReport(path, stems, counts)


def read_groups(path: Path, stem_column: str, group_column: str) -> dict[str, str]:
    """Image stem -> group from a CSV (e.g. CVC-ClinicDB's ``sequences.csv``).

    Raises:
        ReportError: Missing file or columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such groups file")
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = {stem_column, group_column} - set(reader.fieldnames or ())
        if missing:
            raise ReportError(
                f"{path}: no column {', '.join(sorted(missing))} (columns: "
                f"{', '.join(reader.fieldnames or ())}); name them with "
                "--stem-column and --group-column"
            )
        return {row[stem_column]: row[group_column] for row in reader}


def _micro(counts: np.ndarray) -> np.ndarray:
    """Micro Dice of pooled ``[tp, fp, fn, ...]`` counts (last axis)."""
    return dice_score(counts[..., 0], counts[..., 1], counts[..., 2])


def compare(
    a: PerImageReport,
    b: PerImageReport,
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: dict[str, str] | None = None,
) -> Comparison:
    """Scores of A and B on the same images and the paired bootstrap of B - A.

    Args:
        groups: Image stem -> group; resample whole groups (images that are
            not independent). ``None``: every image is its own group.

    Raises:
        ReportError: The two reports do not cover the same images, or
            ``groups`` misses one of them.
        ValueError: ``resamples`` < 1 or ``confidence`` outside (0, 1).
    """
    if resamples < 1:
        raise ValueError(f"resamples: expected >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected between 0 and 1, got {confidence}")
    if set(a.stems) != set(b.stems):
        only_a = sorted(set(a.stems) - set(b.stems))
        only_b = sorted(set(b.stems) - set(a.stems))
        raise ReportError(
            f"{a.path} and {b.path} do not score the same images "
            f"({len(only_a)} only in the first, {len(only_b)} only in the second, "
            f"e.g. {(only_a or only_b)[0]}); evaluate both models on one split"
        )
    order = {stem: index for index, stem in enumerate(b.stems)}
    counts_a = a.counts
    counts_b = b.counts[[order[stem] for stem in a.stems]]
    for counts, report in ((counts_a, a), (counts_b, b)):
        if np.any(counts < 0):
            raise ReportError(f"{report.path}: a pixel count is negative")
    if not np.array_equal(counts_a[:, [0, 2]].sum(1), counts_b[:, [0, 2]].sum(1)):
        raise ReportError(
            f"{a.path} and {b.path} disagree on the polyp pixels of an image "
            "(tp + fn): they were scored against different masks or sizes"
        )

    dice_a = dice_score(counts_a[:, 0], counts_a[:, 1], counts_a[:, 2])
    dice_b = dice_score(counts_b[:, 0], counts_b[:, 1], counts_b[:, 2])
    n = len(counts_a)
    if groups is None:
        unit = np.arange(n)
    else:
        missing = [stem for stem in a.stems if stem not in groups]
        if missing:
            raise ReportError(
                f"the groups name no group for {len(missing)} of the {n} images "
                f"(e.g. {missing[0]}); check --stem-column"
            )
        names = sorted({groups[stem] for stem in a.stems})
        index = {name: i for i, name in enumerate(names)}
        unit = np.array([index[groups[stem]] for stem in a.stems])
    units = int(unit.max()) + 1
    # Per group: pooled counts (micro), the sum of per-image Dice and the image
    # count (macro); a resample adds up the groups it drew.
    pooled_a = np.zeros((units, 3), np.int64)
    pooled_b = np.zeros((units, 3), np.int64)
    np.add.at(pooled_a, unit, counts_a[:, :3])
    np.add.at(pooled_b, unit, counts_b[:, :3])
    dice_sum_a = np.bincount(unit, dice_a, units)
    dice_sum_b = np.bincount(unit, dice_b, units)
    images = np.bincount(unit, minlength=units)
    drawn = np.random.default_rng(seed).integers(0, units, size=(resamples, units))
    weight = np.zeros((resamples, units), np.int64)  # times each group was drawn
    np.add.at(weight, (np.arange(resamples)[:, None], drawn), 1)
    micro_delta = _micro(weight @ pooled_b) - _micro(weight @ pooled_a)
    count = weight @ images
    macro_delta = (weight @ dice_sum_b - weight @ dice_sum_a) / count
    tail = (1 - confidence) / 2 * 100

    def difference(name: str, a_score: float, b_score: float, deltas: np.ndarray):
        low, high = np.percentile(deltas, [tail, 100 - tail])
        return Difference(name, a_score, b_score, float(low), float(high), confidence)

    return Comparison(
        images=n,
        groups=units,
        resamples=resamples,
        micro=difference(
            "micro Dice",
            float(_micro(counts_a.sum(0))),
            float(_micro(counts_b.sum(0))),
            micro_delta,
        ),
        macro=difference(
            "macro Dice", float(dice_a.mean()), float(dice_b.mean()), macro_delta
        ),
        b_better=int(np.count_nonzero(dice_b > dice_a)),
        b_worse=int(np.count_nonzero(dice_b < dice_a)),
        same=int(np.count_nonzero(dice_b == dice_a)),
        share_b_better_micro=float(np.mean(micro_delta > 0)),
    )
