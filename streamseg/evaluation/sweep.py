"""Smoothing variants scored against the per-frame output, and the sweep that picks one.

:func:`score_variant` replays cached probabilities through the runtime's
:class:`~streamseg.smoothing.TemporalSmoother` and scores the masks;
:func:`compare` sets a smoothed result against the per-frame one and a
:class:`Target`; :func:`run_sweep` scores a :class:`SweepGrid` of settings and
:func:`choose` picks the default (see docs/temporal.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamseg.evaluation.video_data import (
    CachedSequence,
    ProgressCallback,
)
from streamseg.evaluation.video_metrics import Episode, VideoScorer, VideoScores
from streamseg.frames import Frame, Prediction
from streamseg.regions import scale_mask
from streamseg.smoothing import SmoothingSettings, TemporalSmoother

log = logging.getLogger(__name__)

# Defaults are chosen among sweep variants with on - off <= this (see choose()).
CHOICE_MAX_HYSTERESIS_GAP = 0.2
PER_FRAME = "per-frame"
SMOOTHED = "smoothed"
# --- scoring one smoothing variant ---------------------------------------------


@dataclass(frozen=True)
class VariantResult:
    """Scores of one output (per-frame or a smoothing variant) on one dataset."""

    scores: VideoScores
    episodes: tuple[Episode, ...]

    @property
    def flicker_excess(self) -> float:
        """Predicted flicker minus truth flicker (what real motion does not explain)."""
        return self.scores.flicker_predicted - self.scores.flicker_truth


def score_variant(
    sequences: Sequence[CachedSequence],
    settings: SmoothingSettings,
    model_threshold: float,
    *,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
) -> VariantResult:
    """Replay the cached probabilities through a TemporalSmoother and score them.

    Args:
        sequences: From :func:`load_dataset`.
        settings: The smoothing to evaluate (``enabled: false``: per-frame
            output, ``probabilities >= model_threshold``).
        model_threshold: The model's threshold.
        lead_in: Prime the smoother with one all-background frame one frame
            period before each sequence (see the module docstring).
        min_detection_iou: IoU with the truth at which a frame detects.
    """
    scorer = VideoScorer(min_detection_iou=min_detection_iou)
    smoother = TemporalSmoother(settings, model_threshold=model_threshold)
    for sequence in sequences:
        scorer.start_sequence()
        smoother.reset()
        hw = sequence.eval_hw
        map_hw = sequence.probabilities.shape[1:]
        blank = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (*hw, 3))
        times = sequence.timestamps_s
        if lead_in and settings.enabled:
            period_s = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            frame = Frame(0, float(times[0]) - period_s, blank)
            smoother(Prediction(frame, torch.zeros(map_hw), model_threshold))
        for index in range(len(times)):
            frame = Frame(index, float(times[index]), blank)
            current = torch.from_numpy(sequence.probabilities[index]).float()
            out = smoother(Prediction(frame, current, model_threshold))
            mask = scale_mask(out.mask.numpy(), hw)
            scorer.add(mask, sequence.truth[index], times[index])
    return VariantResult(scorer.summary(), tuple(scorer.episodes()))


# --- comparison against the per-frame output and the target --------------------


@dataclass(frozen=True)
class Target:
    """What smoothing must achieve against the per-frame output.

    Attributes:
        flicker_ratio: Excess flicker at most this share of the per-frame one.
        max_dice_loss: Macro Dice may drop by at most this much.
        max_added_delay_ms: Mean added first-detection delay at most this.
        min_excess_flicker: The flicker target is judged on a dataset only
            where the per-frame excess flicker exceeds this ...
        min_excess_share: ... and this share of the truth's flicker. Below
            both, the per-frame output is as steady as the truth allows and
            there is no instability to halve (the dataset still guards Dice
            and delay).
    """

    flicker_ratio: float = 0.5
    max_dice_loss: float = 0.005
    max_added_delay_ms: float = 100.0
    min_excess_flicker: float = 0.005
    min_excess_share: float = 0.1

    def judges_flicker(self, per_frame: VariantResult) -> bool:
        """Whether the per-frame output has excess flicker worth halving."""
        floor = max(
            self.min_excess_flicker,
            self.min_excess_share * per_frame.scores.flicker_truth,
        )
        return per_frame.flicker_excess > floor


@dataclass(frozen=True)
class Comparison:
    """A variant against the per-frame output on the same dataset.

    Attributes:
        dice_macro_change: Variant minus per-frame macro Dice.
        flicker_judged: Whether the flicker target applies on this dataset
            (:meth:`Target.judges_flicker`).
        flicker_ratio: Variant excess flicker / per-frame excess flicker
            (NaN when the per-frame excess is not positive).
        added_delay_ms_mean: Mean over episodes detected by both.
        added_delay_ms_max: The largest of those.
        added_delay_frames_mean: The same in frames.
        newly_missed_episodes: Episodes only the per-frame output detects.
    """

    dice_macro_change: float
    flicker_judged: bool
    flicker_ratio: float
    added_delay_ms_mean: float
    added_delay_ms_max: float
    added_delay_frames_mean: float
    newly_missed_episodes: int

    def shortfalls(self, target: Target) -> dict[str, float]:
        """By how much each unmet target is missed (empty: all met)."""
        misses = {
            "flicker_ratio": self.flicker_ratio - target.flicker_ratio
            if self.flicker_judged
            else 0.0,
            "dice_loss": -self.dice_macro_change - target.max_dice_loss,
            "added_delay_ms": self.added_delay_ms_mean - target.max_added_delay_ms,
            "newly_missed_episodes": float(self.newly_missed_episodes),
        }
        return {name: value for name, value in misses.items() if value > 1e-12}

    def violation(self, target: Target) -> float:
        """Sum of shortfalls, each relative to its target (0: target met)."""
        scale = {
            "flicker_ratio": target.flicker_ratio,
            "dice_loss": target.max_dice_loss,
            "added_delay_ms": target.max_added_delay_ms,
            "newly_missed_episodes": 1.0,
        }
        return sum(v / scale[k] for k, v in self.shortfalls(target).items())


def compare(
    baseline: VariantResult, variant: VariantResult, target: Target = Target()
) -> Comparison:
    """How a variant differs from the per-frame output (same truth, same episodes)."""
    base, new = baseline.scores, variant.scores
    ratio = (
        variant.flicker_excess / baseline.flicker_excess
        if baseline.flicker_excess > 0
        else math.nan
    )
    added_ms, added_frames, newly_missed = [], [], 0
    for before, after in zip(baseline.episodes, variant.episodes, strict=True):
        if before.delay_frames is None:
            continue
        if after.delay_frames is None:
            newly_missed += 1
            continue
        added_frames.append(after.delay_frames - before.delay_frames)
        added_ms.append(1000 * (after.delay_s - before.delay_s))
    return Comparison(
        dice_macro_change=new.dice_macro - base.dice_macro,
        flicker_judged=target.judges_flicker(baseline),
        flicker_ratio=ratio,
        added_delay_ms_mean=float(np.mean(added_ms)) if added_ms else 0.0,
        added_delay_ms_max=float(np.max(added_ms)) if added_ms else 0.0,
        added_delay_frames_mean=float(np.mean(added_frames)) if added_frames else 0.0,
        newly_missed_episodes=newly_missed,
    )


# --- the sweep -----------------------------------------------------------------


@dataclass(frozen=True)
class SweepGrid:
    """The smoothing settings a sweep tries (every combination).

    Attributes:
        time_constants_s: EMA time constants; 0 = no averaging (thresholds
            and area filter only).
        modes: ``ema`` and/or ``uncertainty``.
        confidence_powers: k values for the ``uncertainty`` mode.
        on_offsets: The threshold the variant runs at (``model.threshold``)
            = the model file's threshold + offset.
        hysteresis_gaps: on - off (0: one threshold, no hysteresis).
        min_area_fractions: Area filter.
    """

    time_constants_s: tuple[float, ...] = (0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.32)
    modes: tuple[str, ...] = ("ema", "uncertainty")
    confidence_powers: tuple[float, ...] = (1.0, 2.0, 4.0)
    on_offsets: tuple[float, ...] = (0.0, 0.1)
    hysteresis_gaps: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)
    min_area_fractions: tuple[float, ...] = (0.0, 0.002, 0.005, 0.01)

    @classmethod
    def from_overrides(cls, overrides: Sequence[str]) -> SweepGrid:
        """A grid from ``name=v1,v2,...`` strings (the defaults for the rest).

        Example:
            >>> SweepGrid.from_overrides(["modes=ema", "time_constants_s=0,0.1"]).modes
            ('ema',)

        Raises:
            ValueError: Unknown name or a value that is not a number (modes:
                ``ema`` / ``uncertainty``).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        changes: dict[str, tuple[Any, ...]] = {}
        for override in overrides:
            name, sep, raw = override.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(
                    f"--grid {override!r}: expected NAME=V1,V2,... with NAME one of "
                    f"{', '.join(names)}"
                )
            items = [item.strip() for item in raw.split(",") if item.strip()]
            if not items:
                raise ValueError(f"--grid {override!r}: no values after '='")
            if name == "modes":
                bad = sorted(set(items) - {"ema", "uncertainty"})
                if bad:
                    raise ValueError(
                        f"--grid modes: expected ema and/or uncertainty, got {bad}"
                    )
                changes[name] = tuple(items)
                continue
            try:
                changes[name] = tuple(float(item) for item in items)
            except ValueError:
                raise ValueError(
                    f"--grid {name}: expected numbers separated by commas, got {raw!r}"
                ) from None
        return cls(**changes)

    def variants(
        self, model_threshold: float, base: SmoothingSettings
    ) -> list[Variant]:
        """Every distinct combination: settings derived from ``base``, each with
        the threshold it runs at."""
        variants = []
        for tau, mode, on_offset, gap, area in itertools.product(
            self.time_constants_s,
            self.modes,
            self.on_offsets,
            self.hysteresis_gaps,
            self.min_area_fractions,
        ):
            if tau == 0 and mode != self.modes[0]:
                continue  # without averaging the modes are identical
            on = min(max(model_threshold + on_offset, 0.01), 0.99)
            powers = (
                self.confidence_powers
                if mode == "uncertainty" and tau > 0
                else (base.confidence_power,)
            )
            for power in powers:
                settings = dataclasses.replace(
                    base,
                    enabled=True,
                    time_constant_s=tau,
                    mode="ema" if tau == 0 else mode,
                    confidence_power=power,
                    hysteresis_gap=min(gap, round(on - 0.01, 4)),
                    min_area_fraction=area,
                )
                variants.append(Variant(settings, round(on, 4)))
        return variants


@dataclass(frozen=True)
class Variant:
    """One point of a sweep: smoothing settings and the threshold they run at.

    The threshold is what ``model.threshold`` would be set to: the smoother
    turns a pixel on there (:meth:`SmoothingSettings.thresholds`).
    """

    settings: SmoothingSettings
    threshold: float


def family(settings: SmoothingSettings) -> str:
    """``per-frame``, ``threshold`` (no averaging), ``ema`` or ``uncertainty k=K``."""
    if not settings.enabled:
        return PER_FRAME
    if settings.time_constant_s == 0:
        return "threshold"
    if settings.mode == "uncertainty":
        return f"uncertainty k={settings.confidence_power:g}"
    return "ema"


def describe(settings: SmoothingSettings, model_threshold: float) -> str:
    """One-line label, e.g. ``ema tau=0.12 on=0.50 off=0.40 area=0.005``."""
    if not settings.enabled:
        return f"per-frame (threshold {model_threshold:.2f})"
    on, off = settings.thresholds(model_threshold)
    return (
        f"{family(settings)} tau={settings.time_constant_s:g} on={on:.2f} "
        f"off={off:.2f} area={settings.min_area_fraction:g}"
    )


@dataclass(frozen=True)
class SweepRow:
    """One variant of the sweep, scored on every dataset.

    ``threshold`` is the threshold the variant ran at (``model.threshold``).
    """

    settings: SmoothingSettings
    threshold: float
    label: str
    results: dict[str, VariantResult]
    comparisons: dict[str, Comparison]

    def violation(self, target: Target) -> float:
        return sum(c.violation(target) for c in self.comparisons.values())

    def meets(self, target: Target) -> bool:
        return all(not c.shortfalls(target) for c in self.comparisons.values())

    def worst_flicker_ratio(self) -> float:
        """Largest excess-flicker ratio where the flicker target applies (else 0)."""
        judged = [
            c.flicker_ratio for c in self.comparisons.values() if c.flicker_judged
        ]
        return max(judged, default=0.0)

    def mean_dice_change(self) -> float:
        return float(np.mean([c.dice_macro_change for c in self.comparisons.values()]))

    def margin(self, target: Target) -> float:
        """The smallest slack to the target, each relative to its limit.

        Over every dataset: ``(limit - value) / limit`` for the flicker ratio
        (where judged), the Dice loss and the added delay. Positive: met with
        that much to spare; 0: on the limit; negative: missed.
        """
        slacks = []
        for c in self.comparisons.values():
            if c.flicker_judged:
                slacks.append(
                    (target.flicker_ratio - c.flicker_ratio) / target.flicker_ratio
                )
            slacks.append(
                (target.max_dice_loss + c.dice_macro_change) / target.max_dice_loss
            )
            slacks.append(
                (target.max_added_delay_ms - c.added_delay_ms_mean)
                / target.max_added_delay_ms
            )
        return min(slacks, default=0.0)

    def rank_key(self, target: Target) -> tuple[float, float, float, float]:
        """Feasible first (violation 0), then the largest margin to the target
        (a default must survive the next model and video), then steadier, then
        more accurate."""
        return (
            round(self.violation(target), 9),
            -round(self.margin(target), 9),
            round(self.worst_flicker_ratio(), 9),
            -self.mean_dice_change(),
        )


def run_sweep(
    datasets: dict[str, list[CachedSequence]],
    baselines: dict[str, VariantResult],
    variants: Sequence[Variant],
    *,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
    target: Target = Target(),
    on_progress: ProgressCallback | None = None,
) -> list[SweepRow]:
    """Score every variant on every dataset (from the cached probabilities)."""
    rows = []
    for done, variant in enumerate(variants, start=1):
        settings = variant.settings
        results = {
            name: score_variant(
                sequences,
                settings,
                variant.threshold,
                lead_in=lead_in,
                min_detection_iou=min_detection_iou,
            )
            for name, sequences in datasets.items()
        }
        rows.append(
            SweepRow(
                settings,
                variant.threshold,
                describe(settings, variant.threshold),
                results,
                {
                    name: compare(baselines[name], r, target)
                    for name, r in results.items()
                },
            )
        )
        if on_progress is not None:
            on_progress(done, len(variants))
        if done % max(1, len(variants) // 10) == 0:
            log.info("sweep: %d of %d variants scored", done, len(variants))
    return rows


def choose(
    rows: Sequence[SweepRow],
    target: Target,
    *,
    max_hysteresis_gap: float | None = None,
) -> SweepRow:
    """The variant to use as default.

    Among the variants that meet the target on every dataset, the one with
    the largest margin (:meth:`SweepRow.margin`: the smallest relative slack
    over datasets and targets), then the steadiest, then the most accurate.
    A variant that only just meets the target on one dataset is a poor
    default for the next model. When none meets it, the one that misses it
    by the least (sum of relative shortfalls).

    Args:
        rows: The scored sweep.
        target: What the smoothing must achieve.
        max_hysteresis_gap: Only variants with ``on - off`` at most this are
            candidates (None: all; if none qualifies, all). A low off
            threshold holds a mask after the model stops seeing it: on data
            with a polyp in nearly every frame that is rewarded and never
            penalised (a mask that lingers after the polyp has gone, or a
            false positive that is held, needs polyp-free frames to show), so
            the sweep alone would drive the gap to the edge of the grid.
    """
    if not rows:
        raise ValueError("no sweep rows to choose from; the grid is empty")
    candidates = within_gap(rows, max_hysteresis_gap)
    return min(candidates or rows, key=lambda row: row.rank_key(target))


def within_gap(
    rows: Sequence[SweepRow], max_hysteresis_gap: float | None
) -> list[SweepRow]:
    """The rows whose ``on - off`` is at most ``max_hysteresis_gap`` (None: all)."""
    if max_hysteresis_gap is None:
        return list(rows)
    return [r for r in rows if _gap(r) <= max_hysteresis_gap + 1e-9]


def _gap(row: SweepRow) -> float:
    """``on - off`` of a row (its ``hysteresis_gap``, less where off hits 0.01)."""
    on, off = row.settings.thresholds(row.threshold)
    return on - off


def best_per_group(rows: Sequence[SweepRow], target: Target) -> list[SweepRow]:
    """The best row (by :meth:`SweepRow.rank_key`) for each (family, time constant)."""
    groups: dict[tuple[str, float], SweepRow] = {}
    for row in rows:
        key = (family(row.settings), row.settings.time_constant_s)
        if key not in groups or row.rank_key(target) < groups[key].rank_key(target):
            groups[key] = row
    return sorted(
        groups.values(), key=lambda r: (family(r.settings), r.settings.time_constant_s)
    )


def variant_key(
    settings: SmoothingSettings, threshold: float, model_threshold: float
) -> tuple[str, float, float, float, float]:
    """What a variant is, independent of the model file's threshold.

    (family, time constant, on - model threshold, on - off, area), so the same
    grid point can be matched across sweeps of models with other thresholds.

    Args:
        settings: The variant's smoothing.
        threshold: The threshold it ran at.
        model_threshold: The model file's threshold.
    """
    on, off = settings.thresholds(threshold)
    return (
        family(settings),
        round(settings.time_constant_s, 6),
        round(on - model_threshold, 3),
        round(on - off, 3),
        round(settings.min_area_fraction, 6),
    )


def load_joint_sweep(
    path: Path,
) -> tuple[str, dict[tuple[str, float, float, float, float], dict[str, Comparison]]]:
    """The comparisons of an earlier sweep (its ``report.json``), keyed by variant.

    Used to choose defaults that meet the target for several models: the
    earlier sweep's comparisons are added to the matching rows of this one,
    named ``<folder>:<dataset>`` (the folder holding the report, e.g.
    ``lite2:demo.mp4`` for ``--joint-with runs/temporal/lite2``).

    Raises:
        ConfigError: No such report, or it holds no sweep.
    """
    from streamseg.config import ConfigError

    report = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(report.read_text())
        threshold = float(data["evaluation"]["model_threshold"])
        label = report.parent.resolve().name
        rows = data["sweep"]["rows"]
    except OSError as error:
        raise ConfigError(
            f"--joint-with {report}: cannot read it ({error.strerror or error}); pass "
            "the --out folder of an earlier evaluate-video --sweep"
        ) from error
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"--joint-with {report}: not an evaluate-video --sweep report ({error!r}); "
            "rerun that sweep with --out"
        ) from error
    fields = [f.name for f in dataclasses.fields(Comparison)]
    table = {}
    for row in rows:
        raw = dict(row["settings"])
        # Reports written before the smoother's own thresholds were removed
        # carry them in the settings: the on threshold is the variant's.
        on = raw.pop("on_threshold", None)
        raw.pop("off_threshold", None)
        settings = SmoothingSettings(**raw)
        ran_at = float(row.get("threshold", on if on is not None else threshold))
        table[variant_key(settings, ran_at, threshold)] = {
            f"{label}:{name}": Comparison(
                **{k: math.nan if values[k] is None else values[k] for k in fields}
            )
            for name, values in row["datasets"].items()
        }
    return label, table


def join_sweeps(
    rows: Sequence[SweepRow], model_threshold: float, joint_path: Path
) -> list[SweepRow]:
    """This sweep's rows with the matching comparisons of another model's sweep.

    Rows that the other sweep lacks are dropped (logged): they could not be
    checked on that model.
    """
    label, table = load_joint_sweep(joint_path)
    joined = []
    for row in rows:
        extra = table.get(variant_key(row.settings, row.threshold, model_threshold))
        if extra is not None:
            joined.append(
                dataclasses.replace(row, comparisons={**row.comparisons, **extra})
            )
    if not joined:
        from streamseg.config import ConfigError

        raise ConfigError(
            f"--joint-with {joint_path}: none of this sweep's variants is in that "
            "sweep; run both with the same --grid"
        )
    if len(joined) < len(rows):
        log.warning(
            "%d of %d variants are not in the sweep of %s and were dropped",
            len(rows) - len(joined),
            len(rows),
            label,
        )
    return joined
