"""The tool subcommands of ``streamseg``: ``evaluate-video``, ``bench`` and
``batch`` (their parsers, and handlers that import the tool only when it runs).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from streamseg.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    fail,
    interrupt_on_signals,
    progress_bar,
    with_changes,
)
from streamseg.config import ConfigError, load_config


def add_evaluate_video(commands: Any, common: argparse.ArgumentParser) -> None:
    from streamseg.evaluation import DEFAULT_FPS, DEFAULT_LONG_SIDE_PX

    parser = commands.add_parser(
        "evaluate-video",
        parents=[common],
        help="score per-frame vs smoothed masks against per-frame ground truth",
        description=(
            "Score per-frame and smoothed masks against per-frame ground truth: "
            "Dice/IoU, flicker, false-positive frames, toggles, detection delay. "
            "The network runs once per frame; its probabilities are cached, so "
            "smoothing variants (--sweep) cost no further inference. "
            "See docs/temporal.md."
        ),
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        nargs="?",
        help="video file, frame folder, or a CVC-ClinicDB folder (sequences.csv)",
    )
    parser.add_argument(
        "--truth",
        type=Path,
        metavar="MASKS",
        help="per-frame masks: a folder of images (frame order) or an .npz "
        "(samples/demo_masks.npz layout)",
    )
    parser.add_argument(
        "--cvc",
        type=Path,
        metavar="ROOT",
        help="also evaluate the CVC-ClinicDB sequences under ROOT (sequences.csv)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="model file (.safetensors) or bundled:NAME (default, fast); "
        "default: the bundled default model",
    )
    parser.add_argument("--config", type=Path, help="YAML config (configs/stream.yaml)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set smoothing.mode=uncertainty",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--fps",
        type=float,
        help=f"frame rate of folders and CVC sequences (default {DEFAULT_FPS:g}); "
        "for a video file, replaces its timestamps",
    )
    parser.add_argument(
        "--long-side",
        type=int,
        default=DEFAULT_LONG_SIDE_PX,
        metavar="PX",
        help="score at this long side in pixels (0: full frame size; default "
        f"{DEFAULT_LONG_SIDE_PX})",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="probability cache (default ~/.cache/streamseg/video-eval)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not cache")
    parser.add_argument(
        "--no-lead-in",
        action="store_true",
        help="do not prime the smoother with a background frame before sequences",
    )
    parser.add_argument(
        "--detection-iou",
        type=float,
        default=0.0,
        metavar="IOU",
        help="IoU with the truth at which a frame counts as a detection (0: any "
        "overlap)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="also sweep the smoothing settings"
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep values, e.g. --grid time_constants_s=0,0.1 (repeatable)",
    )
    parser.add_argument(
        "--joint-with",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="the --out folder of another model's sweep (same grid): choose a "
        "default that meets the target there too (repeatable)",
    )
    parser.add_argument(
        "--choice-max-gap",
        type=float,
        metavar="GAP",
        help="choose the default among variants with on - off <= GAP (default "
        "0.2; see docs/temporal.md)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write report.json (and sweep.csv, sweep.md, the plot) here",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="path of the sweep plot"
    )
    parser.add_argument(
        "--polyp-ids",
        metavar="CSV[:COLUMN]",
        help="which polyp each frame of SOURCE shows, for the track measures "
        "(e.g. samples/demo_frames.csv, column segment by default)",
    )


def evaluate_video_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from streamseg.app import StreamConfig
    from streamseg.evaluation import DEFAULT_FPS, sweep, video_data, video_eval
    from streamseg.evaluation.video_report import report_tables, write_outputs

    if args.source is None and args.cvc is None:
        raise ConfigError(
            "evaluate-video: nothing to evaluate; pass SOURCE --truth MASKS, "
            "--cvc ROOT, or both"
        )
    is_cvc_folder = args.source is not None and (
        Path(args.source, "sequences.csv").is_file()
    )
    if args.source is not None and args.truth is None and not is_cvc_folder:
        raise ConfigError(
            f"evaluate-video: {args.source} needs ground truth; pass --truth MASKS "
            "(a folder of mask images or an .npz, one mask per frame)"
        )
    if args.source is None and args.truth is not None:
        raise ConfigError("evaluate-video: --truth needs a SOURCE to go with it")
    for name, value, ok in (
        ("--fps", args.fps, args.fps is None or args.fps > 0),
        ("--long-side", args.long_side, args.long_side >= 0),
        ("--detection-iou", args.detection_iou, 0 <= args.detection_iou <= 1),
    ):
        if not ok:
            raise ConfigError(f"evaluate-video: {name} {value} is out of range")
    config = load_config(StreamConfig, args.config, args.set)
    given = {"path": args.model, "device": args.device}
    model = dataclasses.replace(
        config.model, **{k: v for k, v in given.items() if v is not None}
    )
    try:
        grid = sweep.SweepGrid.from_overrides(args.grid) if args.sweep else None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if (args.grid or args.joint_with) and not args.sweep:
        raise ConfigError("evaluate-video: --grid and --joint-with need --sweep")
    datasets = []
    if args.source is not None:
        dataset = video_data.open_video_dataset(args.source, args.truth, fps=args.fps)
        if args.polyp_ids is not None:
            dataset = _with_polyp_ids(dataset, args.polyp_ids)
        datasets.append(dataset)
    elif args.polyp_ids is not None:
        raise ConfigError("evaluate-video: --polyp-ids needs a SOURCE to go with it")
    if args.cvc is not None:
        datasets.append(
            video_data.open_cvc_dataset(args.cvc, fps=args.fps or DEFAULT_FPS)
        )
    cache = None if args.no_cache else (args.cache or video_data.default_cache_dir())
    with interrupt_on_signals():
        with progress_bar() as on_progress:
            evaluation = video_eval.evaluate_video(
                datasets,
                model,
                config.smoothing,
                long_side_px=args.long_side,
                cache_dir=cache,
                lead_in=not args.no_lead_in,
                min_detection_iou=args.detection_iou,
                sweep=grid,
                choice_max_hysteresis_gap=(
                    sweep.CHOICE_MAX_HYSTERESIS_GAP
                    if args.choice_max_gap is None
                    else args.choice_max_gap
                ),
                joint_sweeps=args.joint_with,
                on_progress=on_progress,
                tracking=config.tracking,
            )
    console = Console(width=max(110, Console().width))
    for table in report_tables(evaluation):
        console.print(table)
    if args.out is not None:
        for path in write_outputs(evaluation, args.out, plot_path=args.plot):
            console.print(f"wrote {path}")
    return EXIT_OK


def _with_polyp_ids(dataset: Any, spec: str) -> Any:
    from streamseg.evaluation.track_metrics import read_polyp_ids

    try:
        ids = read_polyp_ids(spec)
    except ValueError as error:
        raise ConfigError(f"evaluate-video: {error}") from None
    (sequence,) = dataset.sequences
    count = sequence.frame_count or sequence.truth.count
    if len(ids) != count:
        raise ConfigError(
            f"evaluate-video: --polyp-ids {spec} has {len(ids)} rows but "
            f"{dataset.name} has {count} frames; give one row per frame"
        )
    return dataclasses.replace(dataset, polyp_ids=(ids,))


def add_bench(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "bench",
        parents=[common],
        help="measure model-only, pipeline and naive-loop speed; validate fast paths",
        description=(
            "Measure, in one run: model-only throughput and latency per variant "
            "(batch 1 and the file batch size); the full pipeline on 720p and 1080p "
            "clips (file and paced live: fps, per-stage ms, latency p50/p95/p99/max, "
            "drops); and a naive read-infer-draw-write loop, with the ratios. "
            "With --validate: compare each variant's masks with fp32 on a labelled "
            "split (Dice difference, mask agreement). See docs/benchmarks.md."
        ),
    )
    parser.add_argument(
        "--model",
        help="model file, bundled:NAME (a bundled model: default, fast), or "
        "random:ARCH/ENCODER@SIZE for timing with random weights "
        "(e.g. random:UnetPlusPlus/efficientnet-b2@320); default: the bundled model "
        "(its live rows: the model streamseg run would choose for a live source)",
    )
    parser.add_argument(
        "--clip", type=Path, action="append", default=[], help="video file (repeatable)"
    )
    parser.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="RES",
        help="clip made from the demo clip: 720p, 1080p or WxH (repeatable; "
        "default 720p and 1080p when no --clip)",
    )
    parser.add_argument("--frames", type=int, default=300, help="frames per clip")
    parser.add_argument(
        "--variants",
        help="model-only variants, comma-separated (default CPU: "
        "fp32,bf16-cl,bf16-cl-compile,onnx,ov-fp32,ov-int8,ov-int8-1s (OpenVINO "
        "ones where installed, ov-int8 and ov-int8-1s (one stream) where the model "
        "has an INT8 artefact); CUDA: fp32,"
        "fp16,fp16-cl,fp16-cl-graphs,fp16-cl-compile; also fp32-cl, fp32-compile)",
    )
    parser.add_argument(
        "--pipeline-variants",
        default="config",
        help="variants run through the pipeline (config = the model section as "
        "configured)",
    )
    parser.add_argument(
        "--live-display",
        help="source.live_display modes of the live runs, comma-separated: "
        "segmented,every_frame (default: as configured)",
    )
    parser.add_argument("--iterations", type=int, default=50, help="timed calls")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument(
        "--warmup-frames",
        type=int,
        default=8,
        help="frames left out of pipeline/naive throughput",
    )
    for part in ("model-only", "pipeline", "live", "naive"):
        parser.add_argument(f"--no-{part}", action="store_true", help=f"skip {part}")
    parser.add_argument(
        "--results-only",
        action="store_true",
        help="also run each clip as a file with per-frame results only (event "
        "log; no overlay, no annotated video), as streamseg batch without --video",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--config", type=Path, help="YAML config (configs/stream.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write JSON here")
    parser.add_argument("--work-dir", type=Path, help="clips and scratch files")
    parser.add_argument(
        "--validate", action="store_true", help="compare variants with fp32 on --data"
    )
    parser.add_argument("--data", type=Path, help="Kvasir-SEG folder for --validate")
    parser.add_argument("--split", default="test", help="split name or file")
    parser.add_argument("--limit", type=int, help="validate on the first N images")


def batch_command(args: argparse.Namespace) -> int:
    from streamseg.app import StreamConfig
    from streamseg.batch.cli import batch

    config = with_changes(
        load_config(StreamConfig, args.config, args.set),
        {"model": {"path": args.model, "device": args.device}},
    )
    with interrupt_on_signals():
        return batch(args, config)


def add_batch(commands: Any, common: argparse.ArgumentParser) -> None:
    from streamseg.batch.cli import add_arguments

    parser = commands.add_parser(
        "batch",
        parents=[common],
        help="run the pipeline on an archive of videos; resumable, local or on Ray",
        description=(
            "Run the streamseg run pipeline on every video of a folder (recursive), "
            "a list file or a manifest (.csv/.jsonl with a path column). Each video "
            "gets a folder under OUT (mirroring the input tree) with events.jsonl "
            "and summary.json (and the annotated MP4, masks, clips if asked); "
            "OUT/runs.jsonl records every attempt. A rerun skips finished videos "
            "and retries failed ones. See docs/scale.md."
        ),
    )
    add_arguments(parser)


def bench_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from streamseg.app import StreamConfig
    from streamseg.evaluation import bench, bench_inputs
    from streamseg.model import BUNDLED_PREFIX, default_model_path, resolve_model_path

    config = with_changes(
        load_config(StreamConfig, args.config, args.set),
        {"model": {"device": args.device, "threads": args.threads}},
    )
    model = args.model or default_model_path()
    if isinstance(model, str) and model.startswith(BUNDLED_PREFIX):
        model = resolve_model_path(model)
    if model is None:
        raise ConfigError(
            "bench: no bundled default model in this build; pass --model FILE or "
            "--model random:UnetPlusPlus/efficientnet-b2@320 (timing only)"
        )
    try:
        settings = bench.BenchSettings(
            model=str(model),
            clips=tuple(args.clip),
            synthetic=tuple(args.synthetic) or ("720p", "1080p"),
            frames=args.frames,
            variants=bench_inputs.parse_names(args.variants),
            pipeline_variants=bench_inputs.parse_names(args.pipeline_variants) or (),
            iterations=args.iterations,
            warmup=args.warmup,
            warmup_frames=args.warmup_frames,
            model_only=not args.no_model_only,
            pipeline=not args.no_pipeline,
            live=not args.no_live,
            results_only=args.results_only,
            live_displays=bench_inputs.parse_names(args.live_display) or (),
            naive=not args.no_naive,
            **({"work_dir": args.work_dir} if args.work_dir else {}),
            # No model named: live rows run what streamseg run would.
            live_choice=args.model is None and config.model.path is None,
        )
        if args.validate:
            if args.data is None:
                raise bench_inputs.BenchError(
                    "--validate needs --data ROOT (Kvasir-SEG)"
                )
            report = bench.validation_report(
                settings, config, args.data, split=args.split, limit=args.limit
            )
        else:
            report = bench.run_benchmark(settings, config)
    except (bench_inputs.BenchError, ValueError) as error:
        return fail(error, EXIT_USAGE, args.debug)
    console = Console(width=max(120, Console().width))
    for table in bench.report_tables(report):
        console.print(table)
    if args.json is not None:
        console.print(f"wrote {bench.write_json(report, args.json)}")
    return EXIT_OK
