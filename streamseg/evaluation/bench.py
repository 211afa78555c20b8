"""Benchmark harness: model-only, the full pipeline and a naive loop, side by side.

One call of :func:`run_benchmark` measures, in the same process and on the
same machine state:

1. **Model only**: :meth:`Segmenter.probabilities` on random input already
   at the model's input size and on the device, at batch 1 and at the file
   batch size, for each variant (fp32, bf16 + channels_last, + compile,
   ONNX Runtime; on CUDA fp16, CUDA graphs, compile reduce-overhead).
   Warm-up calls are excluded; each timed call ends with a device
   synchronize and is measured with ``time.perf_counter`` (monotonic).
2. **Pipeline**: :func:`streamseg.app.run`, the real composition root, on
   720p and 1080p clips with the annotated MP4 being encoded: throughput,
   per-stage time on the main loop, end-to-end latency; then the same clip
   played as a live source (``source.realtime``: paced, newest frame wins):
   frames dropped and latency from grab to overlay ready. With
   ``results_only`` each clip also runs as a file with the event log as its
   only output (no overlay, no video).
3. **Naive loop**: read a frame, run the fp32 network, draw the overlay,
   encode it; one frame at a time, nothing overlapped. Each stage is timed
   on its own.

Ratios pipeline / model-only and pipeline / naive are computed from these;
the pipelines' variants are timed model-only once more after the pipeline
runs, and the ratio uses the mean of both timings (their difference shows
whether the machine's speed changed meanwhile).
Throughput of the pipeline and the naive loop is measured after the first
``warmup_frames`` frames (lazy initialisation excluded), over the rest.

:func:`validate` checks each variant against fp32 on a Kvasir-SEG-style
split: Dice of both against the ground truth, their difference, and the
share of pixels on which the two masks agree.

Timings depend on the machine's load: the report records the load average
before and after, and the CPU/GPU it ran on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from streamseg.app import StreamConfig
from streamseg.cpu import cpu_info
from streamseg.evaluation.bench_inputs import (
    DEFAULT_VARIANTS,
    DEFAULT_WORK_DIR,
    VARIANTS,
    BenchError,
    ModelInfo,
    make_clip,
    parse_resolution,
    prepare_model,
    resolve_variant,
    settings_key,
    variant_names,
)
from streamseg.evaluation.bench_timing import (
    FILE_MODE,
    RESULTS_ONLY_MODE,
    LatencySummary,
    ModelOnlyResult,
    NaiveResult,
    PipelineResult,
    run_naive,
    run_pipeline,
    time_model,
)
from streamseg.evaluation.bench_validate import (
    Agreement,
    read_labelled_split,
    validate,
)
from streamseg.files import write_atomic
from streamseg.segmenter import ModelSettings, Segmenter, prepare_device
from streamseg.sources import LIVE_DISPLAYS

log = logging.getLogger(__name__)

SCHEMA = "streamseg-bench/1"
TARGET_PIPELINE_VS_MODEL = 0.9
TARGET_PIPELINE_VS_NAIVE = 4.0
CONFIG_VARIANT = "config"
# How each figure is measured; written into every JSON report.
METHOD = {
    "clock": "time.perf_counter (monotonic); on CUDA every timed call ends with "
    "torch.cuda.synchronize",
    "model_only": "Segmenter.probabilities on random input already at the model's "
    "input size and on the device, in the memory layout of decoded frames (NHWC; no "
    "upload, no resize); warm-up calls excluded; latency per call (whole batch), "
    "throughput = frames / summed call time",
    "pipeline_file": "streamseg.app.run on the clip, annotated MP4 encoded, batched "
    "inference; throughput over the frames after warmup_frames; latency = frame "
    "decoded -> written (the run's own p50/p95/p99)",
    "pipeline_results_only": "as pipeline_file with per-frame results only: the "
    "event log written, no overlay drawn, no video encoded (--results-only)",
    "pipeline_live": "the same clip played at its frame rate (source.realtime), "
    "newest frame wins, batch 1; latency = frame grabbed -> overlay ready, every "
    "frame; dropped = source frames never processed",
    "stages": "pipeline: time per frame on the main loop (decode and encode run on "
    "their own threads, so only the wait for them shows; inference = upload + "
    "resize to the input size + network; smoothing runs at the input size, "
    "findings scale the mask to the frame); naive: each stage timed on its own",
    "naive": "read_video -> to_tensor + resize -> fp32 network + sigmoid + resize "
    "back -> render -> libx264 encode, one frame at a time, nothing overlapped",
    "cpu": "time.process_time (processor time of every thread of this process, "
    "not of other processes) over the timed calls (model-only) or over the span the "
    "pipeline's throughput is measured on; cores_busy = processor seconds per "
    "wall-clock second; network_cpu_share = model-only CPU ms/frame over the "
    "pipeline's",
    "ratios": "pipeline fps over model-only fps of the same settings and batch size; "
    "the pipelines' variants are timed model-only again after the pipeline runs "
    "(model_only_after) and the ratio uses the mean of both timings "
    "(model_only_fps_before / _after: a large difference means the machine's speed "
    "changed during the run)",
    "load": "machine.load_average_start/end: 1/5/15-minute load averages; "
    "timings are only comparable on an otherwise idle machine",
}


# --- the whole benchmark ------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """What :func:`run_benchmark` measures.

    Attributes:
        model: Model file or ``random:ARCH/ENCODER@SIZE``.
        clips: Video files for the pipeline and naive runs.
        synthetic: Resolutions (``720p``, ``1080p``, ``WxH``) of clips made
            from the demo clip (used when ``clips`` is empty).
        frames: Frames per clip (synthetic clips have exactly this many;
            given clips are cut after this many).
        variants: Model-only variants (``None``: the device's defaults).
        pipeline_variants: Variants run through the full pipeline
            (``config``: the model section as configured).
        iterations: Timed model-only calls per variant and batch size.
        warmup: Untimed model-only calls before those.
        warmup_frames: Frames excluded from pipeline and naive throughput.
        model_only: Run part 1.
        pipeline: Run part 2 (file mode).
        live: Run part 2 in live mode too.
        results_only: Run part 2 in file mode a second time with per-frame
            results only (event log; no overlay, no annotated video), as an
            archive job without ``--video``; its ratios are reported too.
        live_displays: ``source.live_display`` modes of the live runs
            (``segmented``, ``every_frame``; empty: as configured).
        naive: Run part 3.
        work_dir: Where clips, the random model and outputs go.
        live_choice: Live runs of the ``config`` variant leave the model to
            the tool, as ``streamseg run`` without ``--model`` does: on a CPU
            the live model choice applies (:mod:`streamseg.live_model`), and
            the row names the model that ran (``bench`` without ``--model``).
    """

    model: str
    clips: tuple[Path, ...] = ()
    synthetic: tuple[str, ...] = ("720p", "1080p")
    frames: int = 300
    variants: tuple[str, ...] | None = None
    pipeline_variants: tuple[str, ...] = (CONFIG_VARIANT,)
    iterations: int = 50
    warmup: int = 5
    warmup_frames: int = 8
    model_only: bool = True
    pipeline: bool = True
    live: bool = True
    results_only: bool = False
    live_displays: tuple[str, ...] = ()
    naive: bool = True
    work_dir: Path = field(default_factory=lambda: DEFAULT_WORK_DIR)
    live_choice: bool = False

    def __post_init__(self) -> None:
        for name in ("frames", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("warmup", "warmup_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for resolution in self.synthetic:
            parse_resolution(resolution)
        for name in (*(self.variants or ()), *self.pipeline_variants):
            resolve_variant(name, ModelSettings())
        for display in self.live_displays:
            if display not in LIVE_DISPLAYS:
                raise ValueError(
                    f"live display {display!r}: expected one of "
                    f"{', '.join(LIVE_DISPLAYS)}"
                )


@dataclass(frozen=True)
class Ratio:
    """Pipeline throughput relative to model-only and to the naive loop, on one clip.

    ``None`` where the counterpart was not measured. ``network_cpu_share``:
    the network's processor time per frame (model-only) over the pipeline's;
    where both keep every core busy, it bounds ``pipeline_vs_model_only``.
    ``mode``: the pipeline row's (``file``, or ``file, results only``).
    ``model_only_fps`` is the mean of the network's timings before and after
    the pipeline runs where both exist (``model_only_fps_before`` /
    ``_after``): a shared or virtual machine's speed can change between the
    two parts, and ``model_only_drift`` (after / before - 1) shows how much.
    """

    clip: str
    variant: str
    pipeline_fps: float
    model_only_fps: float | None
    naive_fps: float | None
    pipeline_vs_model_only: float | None
    pipeline_vs_naive: float | None
    network_cpu_share: float | None = None
    target_vs_model_only: float = TARGET_PIPELINE_VS_MODEL
    target_vs_naive: float = TARGET_PIPELINE_VS_NAIVE
    mode: str = "file"
    model_only_fps_before: float | None = None
    model_only_fps_after: float | None = None

    @property
    def model_only_drift(self) -> float | None:
        """After / before - 1 of the model-only throughput (``None``: not both)."""
        before, after = self.model_only_fps_before, self.model_only_fps_after
        if before is None or after is None or not before > 0:
            return None
        return after / before - 1.0


@dataclass(frozen=True)
class BenchReport:
    """Everything one benchmark run measured (``to_dict`` for JSON)."""

    machine: Mapping[str, Any]
    model: ModelInfo
    settings: Mapping[str, Any]
    model_only: tuple[ModelOnlyResult, ...] = ()
    model_only_after: tuple[ModelOnlyResult, ...] = ()
    pipeline: tuple[PipelineResult, ...] = ()
    naive: tuple[NaiveResult, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    validation: tuple[Agreement, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": METHOD,
            **_jsonable(dataclasses.asdict(self)),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):  # 6 significant digits: small differences stay visible
        return None if math.isnan(value) else float(f"{value:.6g}")
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(report: BenchReport, path: str | Path) -> Path:
    """Write the report as JSON (NaN as null), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU, GPU, versions, threads and the current load (timings depend on it)."""
    from importlib import metadata

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_flags": cpu_info().flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_start": _load_average(),
    }
    with contextlib.suppress(metadata.PackageNotFoundError):
        info["onnxruntime"] = metadata.version("onnxruntime")
    with contextlib.suppress(metadata.PackageNotFoundError):
        info["openvino"] = metadata.version("openvino")
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def _load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(value, 2) for value in os.getloadavg()]
    return None


def run_benchmark(settings: BenchSettings, config: StreamConfig) -> BenchReport:
    """Measure model-only, pipeline and naive throughput as ``settings`` asks.

    Args:
        settings: What to measure.
        config: The stream config (``--config``/``--set``): model device,
            threads, batch size, overlay and encoder settings all apply.

    Raises:
        BenchError: Unknown variant, variant impossible on this device, or
            no clip.
        ConfigError: A model option this device or install cannot honour.
    """
    folder = Path(settings.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model = prepare_model(settings.model, folder)
    base = dataclasses.replace(config.model, path=Path(model.path))
    config = dataclasses.replace(config, model=base)
    device = prepare_device(base)  # before the threads are reported
    machine = describe_machine(device)
    variants = _model_only_variants(settings, base, device)

    model_only = []
    if settings.model_only:
        for name in variants:
            model_only.extend(_time_variant(name, base, settings))

    clips = list(settings.clips) or [
        make_clip(parse_resolution(r), settings.frames, folder)
        for r in settings.synthetic
    ]
    limit = settings.frames
    pipeline, naive = [], []
    for clip in clips:
        if settings.pipeline:
            for name in settings.pipeline_variants:
                variant_config = dataclasses.replace(
                    config, model=resolve_variant(name, base)
                )
                runs: list[tuple[bool, str | None, bool]] = [(False, None, False)]
                if settings.results_only:
                    runs.append((False, None, True))
                if settings.live:
                    runs += [
                        (True, d, False) for d in settings.live_displays or (None,)
                    ]
                for live, display, results_only in runs:
                    log.info(
                        "pipeline %s %s (%s)",
                        clip.name,
                        name,
                        ("live " + (display or "as configured"))
                        if live
                        else ("file, results only" if results_only else "file"),
                    )
                    pipeline.append(
                        run_pipeline(
                            clip,
                            variant_config,
                            variant=name,
                            live=live,
                            max_frames=limit,
                            warmup_frames=settings.warmup_frames,
                            folder=folder,
                            live_display=display,
                            live_choice=settings.live_choice and name == CONFIG_VARIANT,
                            results_only=results_only,
                        )
                    )
        if settings.naive:
            log.info("naive loop %s", clip.name)
            naive.append(
                run_naive(
                    clip,
                    model.path,
                    device,
                    style=config.overlay,
                    crf=config.output.video_crf,
                    preset=config.output.video_preset,
                    max_frames=limit,
                    warmup_frames=settings.warmup_frames,
                    folder=folder,
                )
            )
    # The pipelines' variants once more at the file batch size: the ratios use
    # the mean of both timings, and show the drift between them.
    model_only_after = []
    if model_only and any(result.mode == FILE_MODE for result in pipeline):
        timed = {
            settings_key(resolve_variant(result.variant, base), device)
            for result in model_only
        }
        again: dict[tuple, str] = {}
        for name in settings.pipeline_variants:
            key = settings_key(resolve_variant(name, base), device)
            if key in timed:
                again.setdefault(key, name)
        for name in again.values():
            model_only_after.extend(
                _time_variant(name, base, settings, batches=(base.batch_size,))
            )
    machine["load_average_end"] = _load_average()
    return BenchReport(
        machine=machine,
        model=model,
        settings={
            **{
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(settings).items()
            },
            "model_section": dataclasses.asdict(base),
            "batch_size": base.batch_size,
        },
        model_only=tuple(model_only),
        model_only_after=tuple(model_only_after),
        pipeline=tuple(pipeline),
        naive=tuple(naive),
        ratios=tuple(
            compute_ratios(
                model_only, pipeline, naive, base, device, after=model_only_after
            )
        ),
    )


def _model_only_variants(
    settings: BenchSettings, base: ModelSettings, device: torch.device
) -> list[str]:
    names = list(settings.variants or variant_names(device, base.path))
    for name in settings.pipeline_variants:
        if name not in names:
            names.append(name)
    for name in names:
        resolve_variant(name, base)  # unknown names fail before anything runs
        if name in VARIANTS and VARIANTS[name].cuda_only and device.type != "cuda":
            raise BenchError(
                f"variant {name!r} needs CUDA, but the device is {device}; pick "
                f"from {', '.join(DEFAULT_VARIANTS['cpu'])}"
            )
    # One run per distinct way of running the network ("config" is often fp32).
    unique: dict[tuple, str] = {}
    for name in names:
        unique.setdefault(settings_key(resolve_variant(name, base), device), name)
    return list(unique.values())


def _time_variant(
    name: str,
    base: ModelSettings,
    settings: BenchSettings,
    batches: Sequence[int] | None = None,
) -> list[ModelOnlyResult]:
    """Time one variant at ``batches`` (default: 1 and the file batch size)."""
    log.info("model only: %s", name)
    segmenter = Segmenter.from_settings(resolve_variant(name, base))
    return [
        time_model(
            segmenter,
            batch,
            iterations=settings.iterations,
            warmup=settings.warmup,
            variant=name,
        )
        for batch in sorted(set(batches or (1, base.batch_size)))
    ]


def compute_ratios(
    model_only: Sequence[ModelOnlyResult],
    pipeline: Sequence[PipelineResult],
    naive: Sequence[NaiveResult],
    base: ModelSettings,
    device: torch.device,
    after: Sequence[ModelOnlyResult] = (),
) -> list[Ratio]:
    """Pipeline (file mode, also results only) throughput over model-only (same
    settings and batch size) and over the naive loop (same clip).

    ``after``: the same model-only timings repeated after the pipeline runs;
    where one matches, model-only throughput and processor time are the mean
    of both timings.
    """

    def keyed(results: Sequence[ModelOnlyResult]) -> dict[tuple, ModelOnlyResult]:
        return {
            (
                settings_key(resolve_variant(result.variant, base), device),
                result.batch_size,
            ): result
            for result in results
        }

    by_key, after_by_key = keyed(model_only), keyed(after)
    naive_by_clip = {result.clip: result.throughput_fps for result in naive}
    ratios = []
    for result in pipeline:
        if result.mode not in (FILE_MODE, RESULTS_ONLY_MODE):
            continue
        key = (
            settings_key(resolve_variant(result.variant, base), device),
            result.batch_size,
        )
        model, model_after = by_key.get(key), after_by_key.get(key)
        timings = [m for m in (model, model_after) if m is not None]
        model_fps = (
            statistics.fmean(m.throughput_fps for m in timings) if timings else None
        )
        model_cpu_ms = (
            statistics.fmean(m.cpu.ms_per_frame for m in timings) if timings else None
        )
        naive_fps = naive_by_clip.get(result.clip)
        ratios.append(
            Ratio(
                clip=result.clip,
                variant=result.variant,
                pipeline_fps=result.throughput_fps,
                model_only_fps=model_fps,
                naive_fps=naive_fps,
                pipeline_vs_model_only=_ratio(result.throughput_fps, model_fps),
                pipeline_vs_naive=_ratio(result.throughput_fps, naive_fps),
                network_cpu_share=None
                if model_cpu_ms is None
                else _ratio(model_cpu_ms, result.cpu.ms_per_frame),
                mode=result.mode,
                model_only_fps_before=None if model is None else model.throughput_fps,
                model_only_fps_after=None
                if model_after is None
                else model_after.throughput_fps,
            )
        )
    return ratios


def _ratio(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or not denominator > 0 or math.isnan(numerator):
        return None
    return numerator / denominator


def validation_report(
    settings: BenchSettings,
    config: StreamConfig,
    data_root: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
) -> BenchReport:
    """Compare the variants with fp32 on a labelled split (see :func:`validate`)."""
    folder = Path(settings.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model = prepare_model(settings.model, folder)
    base = dataclasses.replace(config.model, path=Path(model.path))
    device = prepare_device(base)  # before the threads are reported
    machine = describe_machine(device)
    names = [
        name
        for name in _model_only_variants(
            dataclasses.replace(settings, pipeline_variants=()), base, device
        )
        if name != "fp32"
    ]
    pairs = read_labelled_split(data_root, split, limit)
    log.info("validating %s against fp32 on %d images", ", ".join(names), len(pairs))
    results = validate(model.path, base, names, pairs)
    machine["load_average_end"] = _load_average()
    return BenchReport(
        machine=machine,
        model=model,
        settings={
            "data": str(data_root),
            "split": split,
            "limit": limit,
            "variants": names,
            "model_section": dataclasses.asdict(base),
        },
        validation=tuple(results),
    )


# --- tables (the CLI prints them) ---------------------------------------------


def report_tables(report: BenchReport) -> list[Any]:
    """Rich tables of the report, in reading order."""
    tables = []
    machine, model = report.machine, report.model
    load = machine.get("load_average_start")
    flags = machine.get("cpu_flags") or {}
    where = machine.get("gpu") or (
        machine["cpu"]
        + "; "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
    )
    title = (
        f"{model.architecture}/{model.encoder} {model.input_hw[0]}x{model.input_hw[1]}"
        f" on {machine['device']} ({where}, {machine['torch_threads']} threads, "
        f"load {load[0] if load else '?'})"
    )
    if report.model_only:
        columns = ["variant", "runs", "batch", "fps", "p50 ms", "p95 ms", "p99 ms"]
        rows = [
            [r.variant, r.runs, str(r.batch_size), _f(r.throughput_fps, 1)]
            + [_f(v) for v in (r.latency.p50_ms, r.latency.p95_ms, r.latency.p99_ms)]
            + [_f(r.latency.max_ms), _f(r.prepare_s, 1)]
            + [_f(r.cpu.ms_per_frame, 1), _f(r.cpu.cores_busy)]
            for r in report.model_only
        ]
        columns += ["max ms", "prepare s", "CPU ms/frame", "cores busy"]
        tables.append(_table(f"Model only: {title}", columns, rows))
    if report.pipeline:
        columns = ["clip", "variant", "mode", "in/out/dropped", "fps"]
        columns += ["latency p50/p95/p99/max ms"]
        columns += ["outline held, age p50/p95/p99/max ms"]
        columns += ["CPU ms/frame", "cores busy"]
        columns += ["main loop ms/frame"]
        rows = [
            [
                f"{r.clip} ({r.size_wh[0]}x{r.size_wh[1]})",
                r.variant,
                r.mode,
                f"{r.frames_in}/{r.frames_out}/{r.frames_dropped}",
                _f(r.throughput_fps, 1),
                _percentiles(r.latency),
                f"{r.frames_held}, {_percentiles(r.outline)}" if r.frames_held else "-",
                _f(r.cpu.ms_per_frame, 1),
                _f(r.cpu.cores_busy),
                ", ".join(f"{s.name} {s.mean_ms:.1f}" for s in r.stages),
            ]
            for r in report.pipeline
        ]
        tables.append(
            _table(
                "Pipeline (streamseg.app.run; MP4 encoded, except results-only rows: "
                "event log only, no overlay)",
                columns,
                rows,
            )
        )
    if report.naive:
        columns = ["clip", "frames", "fps", "latency p50/p95/p99/max ms"]
        columns += ["ms/frame per stage"]
        rows = [
            [
                f"{r.clip} ({r.size_wh[0]}x{r.size_wh[1]})",
                str(r.frames),
                _f(r.throughput_fps, 1),
                _percentiles(r.latency),
                ", ".join(f"{s.name} {s.mean_ms:.1f}" for s in r.stages),
            ]
            for r in report.naive
        ]
        title = "Naive loop (fp32, one frame at a time, nothing overlapped)"
        tables.append(_table(title, columns, rows))
    if report.ratios:
        columns = ["clip", "variant", "mode", "pipeline fps"]
        columns += ["model-only fps: mean (before / after the pipelines)", "naive fps"]
        columns += [
            f"pipeline/model (target >= {TARGET_PIPELINE_VS_MODEL})",
            f"pipeline/naive (target >= {TARGET_PIPELINE_VS_NAIVE})",
            "network share of pipeline CPU",
        ]
        rows = [
            [
                r.clip,
                r.variant,
                r.mode,
                _f(r.pipeline_fps, 1),
                _model_only_cell(r),
                _f(r.naive_fps, 1),
                _f(r.pipeline_vs_model_only),
                _f(r.pipeline_vs_naive),
                _f(r.network_cpu_share),
            ]
            for r in report.ratios
        ]
        tables.append(_table("Ratios (file mode)", columns, rows))
    if report.validation:
        first = report.validation[0]
        title = (
            f"Agreement with fp32 on {first.images} images (fp32 micro Dice "
            f"{first.reference_dice:.4f}, macro {first.reference_dice_macro:.4f})"
        )
        columns = ["variant", "runs", "micro Dice", "Dice diff", "macro Dice"]
        columns += ["mask agreement %", "worst image %", "max |dp|"]
        rows = [
            [
                r.variant,
                r.runs,
                _f(r.variant_dice, 4),
                f"{r.dice_difference:+.4f}",
                _f(r.variant_dice_macro, 4),
                _f(r.mask_agreement_pct, 3),
                _f(r.worst_image_agreement_pct, 3),
                _f(r.max_probability_difference, 4),
            ]
            for r in report.validation
        ]
        tables.append(_table(title, columns, rows))
    return tables


def _model_only_cell(ratio: Ratio) -> str:
    """``46.1 (46.1 / 44.0, -5 %)``: the mean, both timings and the drift."""
    cell = _f(ratio.model_only_fps, 1)
    drift = ratio.model_only_drift
    if drift is not None:
        cell += (
            f" ({_f(ratio.model_only_fps_before, 1)} / "
            f"{_f(ratio.model_only_fps_after, 1)}, {100 * drift:+.0f} %)"
        )
    return cell


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _percentiles(latency: LatencySummary) -> str:
    values = (latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms)
    return "/".join(_f(v, 1) for v in values)


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
