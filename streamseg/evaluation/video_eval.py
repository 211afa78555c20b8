"""Video-time evaluation of temporal smoothing against per-frame ground truth.

The job: say how steady and how late the overlay is, with and without
smoothing, on videos whose every frame has a truth mask, and find smoothing
settings that make it steady without making it late.

Pipeline::

    EvalDataset (video + masks | frame folder + masks | CVC-ClinicDB layout)
      -> network once per frame (the runtime's Segmenter)
      -> probabilities at the network's input size, float16, cached in an
         .npz keyed by the model file's and the frames' contents
      -> every smoothing variant replayed from the cache through the
         runtime's own TemporalSmoother (at the network's input size, as
         the runtime runs it), the final mask scaled to the evaluation size
         as the runtime scales it to the frame (streamseg.regions.scale_mask)
      -> VideoScorer (streamseg.evaluation.video_metrics) -> report, sweep, plot

Conventions (also written into every report):

* Scores are computed at the evaluation size (the frame scaled so its long
  side is at most ``long_side_px``; truth masks downscaled by area, > 0.5).
* Sequences are independent: the smoother is reset at each one and no
  flicker pair, toggle or episode spans two sequences.
* Lead-in: before each sequence the smoother sees one all-background frame
  (probability 0), one frame period earlier, as when the scope moves onto a
  polyp from normal mucosa. Without it a smoother that starts on the first
  frame of a sequence could never add detection delay, and the delay target
  would be vacuous. The per-frame output is unaffected.
* Excess flicker = predicted flicker - truth flicker (the truth's flicker is
  real motion). "Flicker halved" means the excess is at most half the
  per-frame output's. It is judged only on datasets where the per-frame
  excess exceeds both 0.005 and a tenth of the truth's flicker
  (:meth:`Target.judges_flicker`): below that the per-frame output is as
  steady as the motion allows and there is nothing to halve; such a dataset
  still guards Dice and delay.
* Added delay: mean over polyp episodes detected both with and without
  smoothing of (smoothed delay - per-frame delay); an episode that only the
  per-frame output detects is counted as newly missed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamseg.evaluation import DEFAULT_LONG_SIDE_PX
from streamseg.evaluation.sweep import (
    CHOICE_MAX_HYSTERESIS_GAP,
    PER_FRAME,
    SMOOTHED,
    Comparison,
    SweepGrid,
    SweepRow,
    Target,
    VariantResult,
    choose,
    compare,
    describe,
    family,
    join_sweeps,
    run_sweep,
    score_variant,
)
from streamseg.evaluation.track_metrics import TrackScores, score_tracking
from streamseg.evaluation.video_data import (
    EvalDataset,
    ModelRunner,
    ProgressCallback,
    load_dataset,
)
from streamseg.smoothing import SmoothingSettings, TemporalSmoother
from streamseg.tracking import TrackingSettings

if TYPE_CHECKING:
    from streamseg.segmenter import ModelSettings

log = logging.getLogger(__name__)

DEFAULT_TARGET = Target()

# --- the whole evaluation ------------------------------------------------------


@dataclass(frozen=True)
class DatasetReport:
    """Per-frame and smoothed results on one dataset."""

    name: str
    timing: str
    sequences: int
    frames: int
    frame_hw: tuple[int, int]
    eval_hw: tuple[int, int]
    per_frame: VariantResult
    smoothed: VariantResult
    comparison: Comparison
    tracks: TrackScores | None = None


@dataclass(frozen=True)
class VideoEvaluation:
    """Everything ``streamseg evaluate-video`` reports."""

    model: dict[str, Any]
    smoothing: SmoothingSettings
    model_threshold: float
    long_side_px: int
    lead_in: bool
    min_detection_iou: float
    target: Target
    datasets: tuple[DatasetReport, ...]
    sweep: tuple[SweepRow, ...] = ()
    choice_max_hysteresis_gap: float | None = None
    tracking: TrackingSettings | None = None

    @property
    def chosen(self) -> SweepRow | None:
        """The sweep's choice (:func:`choose`), None without a sweep."""
        if not self.sweep:
            return None
        return choose(
            self.sweep, self.target, max_hysteresis_gap=self.choice_max_hysteresis_gap
        )

    @property
    def steadiest(self) -> SweepRow | None:
        """The choice without the hysteresis-gap bound (for comparison)."""
        return choose(self.sweep, self.target) if self.sweep else None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN becomes None)."""
        chosen = self.chosen
        data: dict[str, Any] = {
            "model": self.model,
            "evaluation": {
                "long_side_px": self.long_side_px,
                "lead_in": self.lead_in,
                "min_detection_iou": self.min_detection_iou,
                "model_threshold": self.model_threshold,
                "target": dataclasses.asdict(self.target),
                "conventions": CONVENTIONS,
            },
            "smoothing": {
                "settings": dataclasses.asdict(self.smoothing),
                "label": describe(self.smoothing, self.model_threshold),
            },
            "tracking": None
            if self.tracking is None
            else dataclasses.asdict(self.tracking),
            "datasets": [
                {
                    "name": d.name,
                    "timing": d.timing,
                    "sequences": d.sequences,
                    "frames": d.frames,
                    "frame_hw": list(d.frame_hw),
                    "eval_hw": list(d.eval_hw),
                    PER_FRAME: _result_dict(d.per_frame),
                    SMOOTHED: _result_dict(d.smoothed),
                    "smoothed_vs_per_frame": dataclasses.asdict(d.comparison),
                    "smoothed_shortfalls": d.comparison.shortfalls(self.target),
                    "tracks": None if d.tracks is None else d.tracks.as_dict(),
                }
                for d in self.datasets
            ],
        }
        if self.sweep:
            data["sweep"] = {
                "variants": len(self.sweep),
                "meeting_target": sum(r.meets(self.target) for r in self.sweep),
                "choice_max_hysteresis_gap": self.choice_max_hysteresis_gap,
                "chosen": _row_dict(chosen, self.target) if chosen else None,
                "steadiest_unbounded": _row_dict(self.steadiest, self.target)
                if self.steadiest
                else None,
                "rows": [_row_dict(r, self.target) for r in self.sweep],
            }
        return _plain(data)


CONVENTIONS = (
    "Scores at the evaluation size (long side <= long_side_px; truth downscaled by "
    "area > 0.5). Sequences are independent (smoother reset, no flicker pair, toggle "
    "or episode across sequences). Lead-in: one all-background frame before each "
    "sequence primes the smoother. micro: pixels pooled over frames; macro: mean of "
    "per-frame scores (empty truth and empty prediction = 1). Flicker: mean 1-IoU of "
    "consecutive masks; excess = predicted - truth; the flicker target is judged where "
    "the per-frame excess > max(0.005, 0.1 x truth flicker). Detection: any overlap "
    "with IoU >= "
    "min_detection_iou; added delay: mean over episodes detected with and without "
    "smoothing."
)


def evaluate_video(
    datasets: Sequence[EvalDataset],
    model_settings: ModelSettings,
    smoothing: SmoothingSettings,
    *,
    long_side_px: int = DEFAULT_LONG_SIDE_PX,
    cache_dir: Path | None = None,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
    target: Target = DEFAULT_TARGET,
    sweep: SweepGrid | None = None,
    choice_max_hysteresis_gap: float | None = CHOICE_MAX_HYSTERESIS_GAP,
    joint_sweeps: Sequence[Path] = (),
    on_progress: ProgressCallback | None = None,
    on_sweep_progress: ProgressCallback | None = None,
    tracking: TrackingSettings | None = None,
) -> VideoEvaluation:
    """Evaluate per-frame vs smoothed output (and optionally sweep) on datasets.

    Args:
        datasets: From :func:`open_video_dataset` / :func:`open_cvc_dataset`.
        model_settings: Model file, device, precision, threshold override.
        smoothing: The smoothing to report beside the per-frame output.
        long_side_px: Evaluation size (0: the frames' own size).
        cache_dir: Where probabilities are cached (None: no cache).
        lead_in: See the module docstring.
        min_detection_iou: IoU with the truth at which a frame detects.
        target: What the smoothing must achieve.
        sweep: A grid to sweep (None: no sweep).
        choice_max_hysteresis_gap: Bound on ``on - off`` of the chosen
            default (see :func:`choose`; None: unbounded).
        joint_sweeps: ``--out`` folders (or ``report.json``) of sweeps of
            other models on the same grid: the choice must also meet the
            target there (:func:`join_sweeps`).
        on_progress: Called with (frames done, frames total) during inference.
        on_sweep_progress: Called with (variants done, variants total).
        tracking: Also score the polyp tracks behind ``smoothing``
            (:func:`streamseg.evaluation.track_metrics.score_tracking`; None
            or ``enabled: false``: no track scores).

    Raises:
        TruthError, SourceError, ModelFileError, ConfigError.

    Example:
        >>> from streamseg.segmenter import ModelSettings
        >>> data = open_video_dataset(
        ...     "samples/demo.mp4", Path("samples/demo_masks.npz")
        ... )  # doctest: +SKIP
        >>> report = evaluate_video(
        ...     [data], ModelSettings(path=Path("m.safetensors")), SmoothingSettings()
        ... )  # doctest: +SKIP
        >>> report.datasets[0].comparison.flicker_ratio  # doctest: +SKIP
        0.41
    """
    if not datasets:
        raise ValueError("no dataset to evaluate; pass SOURCE --truth MASKS or --cvc")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must differ, got {names}")
    model = ModelRunner(model_settings)
    model.configure_backend()
    threshold = model.spec.threshold
    per_frame_settings = dataclasses.replace(smoothing, enabled=False)
    try:  # fail fast on thresholds that do not fit the model's
        TemporalSmoother(smoothing, model_threshold=threshold)
    except ValueError as error:
        from streamseg.config import ConfigError

        raise ConfigError(str(error)) from error
    loaded = {
        d.name: load_dataset(
            d,
            model,
            long_side_px=long_side_px,
            cache_dir=cache_dir,
            on_progress=on_progress,
        )
        for d in datasets
    }
    options = {"lead_in": lead_in, "min_detection_iou": min_detection_iou}
    reports, baselines = [], {}
    for dataset in datasets:
        sequences = loaded[dataset.name]
        baseline = score_variant(sequences, per_frame_settings, threshold, **options)
        smoothed = score_variant(sequences, smoothing, threshold, **options)
        baselines[dataset.name] = baseline
        reports.append(
            DatasetReport(
                name=dataset.name,
                timing=dataset.timing,
                sequences=len(sequences),
                frames=sum(len(s.timestamps_s) for s in sequences),
                frame_hw=sequences[0].frame_hw,
                eval_hw=sequences[0].eval_hw,
                per_frame=baseline,
                smoothed=smoothed,
                comparison=compare(baseline, smoothed, target),
                tracks=score_tracking(
                    sequences,
                    smoothing,
                    tracking,
                    threshold,
                    polyp_ids=dataset.polyp_ids,
                    frames=[source.frames for source in dataset.sequences],
                    **options,
                )
                if tracking is not None and tracking.enabled
                else None,
            )
        )
    rows: list[SweepRow] = []
    if sweep is not None:
        variants = sweep.variants(threshold, smoothing)
        log.info("sweeping %d smoothing variants", len(variants))
        rows = run_sweep(
            loaded,
            baselines,
            variants,
            target=target,
            on_progress=on_sweep_progress,
            **options,
        )
        for path in joint_sweeps:
            rows = join_sweeps(rows, threshold, Path(path))
    return VideoEvaluation(
        model=_model_dict(model),
        smoothing=smoothing,
        model_threshold=threshold,
        long_side_px=long_side_px,
        lead_in=lead_in,
        min_detection_iou=min_detection_iou,
        target=target,
        datasets=tuple(reports),
        sweep=tuple(rows),
        choice_max_hysteresis_gap=choice_max_hysteresis_gap,
        tracking=tracking,
    )


def _model_dict(model: ModelRunner) -> dict[str, Any]:
    spec = model.spec
    return {
        "path": str(model.path),
        "sha256": model.digest,
        "architecture": spec.architecture,
        "encoder_name": spec.encoder_name,
        "input_hw": list(spec.input_hw),
        "threshold": spec.threshold,
        "provenance": dict(spec.provenance),
    }


def _result_dict(result: VariantResult) -> dict[str, Any]:
    data = result.scores.as_dict()
    data.pop("conventions", None)
    data["flicker_excess"] = result.flicker_excess
    data["episode_delays_ms"] = [
        None if e.delay_s is None else 1000 * e.delay_s for e in result.episodes
    ]
    return data


def _row_dict(row: SweepRow, target: Target) -> dict[str, Any]:
    return {
        "label": row.label,
        "family": family(row.settings),
        "settings": dataclasses.asdict(row.settings),
        "threshold": row.threshold,
        "meets_target": row.meets(target),
        "violation": row.violation(target),
        "datasets": {
            name: {
                "dice_macro": r.scores.dice_macro,
                "dice_micro": r.scores.dice_micro,
                "iou_macro": r.scores.iou_macro,
                "flicker_predicted": r.scores.flicker_predicted,
                "flicker_excess": r.flicker_excess,
                "false_positive_frames": r.scores.false_positive_frames,
                "toggles_per_minute": r.scores.toggles_per_minute,
                "mean_delay_ms": r.scores.mean_delay_ms,
                **dataclasses.asdict(row.comparisons[name]),
            }
            for name, r in row.results.items()
        },
        "joint": {
            name: dataclasses.asdict(c)
            for name, c in row.comparisons.items()
            if name not in row.results
        },
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value
