"""The ``streamseg`` command: parse arguments, set up logging, call the library, print.

Subcommands:

* ``streamseg run SOURCE [--model FILE] [--config YAML] [--output OUT.mp4]
  [--events OUT.jsonl] [--masks DIR] [--view window|web|none]
  [--bind HOST:PORT] [--clips DIR] [--device D] [--max-frames N]
  [--set key=value ...] [--debug]``
* ``streamseg info [MODEL]`` (default: the bundled model)
* ``streamseg report --tracks T.json [--events E.jsonl] [--out REPORT.html]``
* ``streamseg evaluate-video [SOURCE --truth MASKS] [--cvc ROOT] [--model FILE]
  [--fps F] [--config YAML] [--set key=value ...] [--sweep] [--out DIR]``
* ``streamseg batch INPUT --out OUT [--video] [--masks] [--clips] [--workers N]
  [--ray auto|ADDRESS] [--retries N] [--model FILE] [--config YAML] [--set ...]``
* ``streamseg bench [--model M] [--clip PATH | --synthetic 720p|1080p] [--frames N]
  [--variants a,b] [--json OUT] [--set key=value ...]``;
  ``streamseg bench --validate --data ROOT [--split test] [--limit N]``

Exit codes: 0 done; 1 runtime failure (source, model, output); 2 usage or
configuration error; 130 interrupted (Ctrl-C or SIGTERM; outputs finalized).
Errors are one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from streamseg.config import ConfigError, load_config
from streamseg.model import ModelFileError

log = logging.getLogger("streamseg.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="debug logging; tracebacks on errors"
    )
    parser = argparse.ArgumentParser(
        prog="streamseg",
        description="Real-time polyp segmentation for endoscopy video.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[common],
        help="overlay polyp masks on a video file, image folder, camera or stream",
        description=(
            "Overlay polyp masks on a video file, image folder, camera or stream."
        ),
    )
    run.add_argument(
        "source",
        metavar="SOURCE",
        help="video file, image folder, camera index (0), /dev/videoN or URL",
    )
    run.add_argument(
        "--model",
        type=Path,
        help="model file (.safetensors); default: the bundled model",
    )
    run.add_argument(
        "--config",
        type=Path,
        help="YAML config (see configs/stream.yaml); default: built-in defaults",
    )
    run.add_argument(
        "--output", type=Path, help="write the annotated video here (.mp4)"
    )
    run.add_argument(
        "--events", type=Path, help="write per-frame JSON lines here (.jsonl)"
    )
    run.add_argument(
        "--tracks",
        type=Path,
        help="write the polyp tracks here (.json, thumbnails beside it); "
        "streamseg report turns it into an HTML report",
    )
    run.add_argument(
        "--masks", type=Path, help="write one mask PNG per frame into this folder"
    )
    run.add_argument(
        "--view",
        choices=("window", "web", "none"),
        help="show a live window (needs an OpenCV GUI), serve the browser view "
        "(web), or nothing",
    )
    run.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help="address of the browser view (default 127.0.0.1:8080; another host "
        "exposes it to the network)",
    )
    run.add_argument(
        "--clips",
        type=Path,
        metavar="DIR",
        help="save a clip (MP4 + JSONL, with pre-roll) around every detection here",
    )
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set smoothing.time_constant_s=0.3 "
        "(repeatable)",
    )

    info = commands.add_parser(
        "info",
        parents=[common],
        help="show what a model file holds (default: the bundled model)",
        description="Show what a model file holds (default: the bundled model).",
    )
    info.add_argument(
        "model",
        metavar="MODEL",
        type=Path,
        nargs="?",
        help="model file (.safetensors); default: the bundled model",
    )
    report = commands.add_parser(
        "report",
        parents=[common],
        help="make a self-contained HTML procedure report from a run's tracks",
        description=(
            "Make one self-contained HTML file from the files of "
            "`streamseg run VIDEO --tracks T.json [--events E.jsonl]`: a timeline "
            "of each polyp's presence, one card per polyp (picture, times, size), "
            "the run's settings and model hash."
        ),
    )
    report.add_argument(
        "--tracks", type=Path, required=True, help="tracks file of the run (.json)"
    )
    report.add_argument(
        "--events",
        type=Path,
        help="per-frame JSON lines of the same run (adds the detection strip)",
    )
    report.add_argument(
        "--out", type=Path, help="the .html to write (default: beside --tracks)"
    )
    report.add_argument(
        "--min-seconds",
        type=float,
        default=0.2,
        metavar="S",
        help="polyps detected for less than S seconds get no card, only a line "
        "under brief detections (default 0.2)",
    )
    _add_evaluate_video(commands, common)
    _add_bench(commands, common)
    _add_batch(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamseg`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    try:
        if args.command == "info":
            return _info(args.model)
        if args.command == "evaluate-video":
            return _evaluate_video(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "batch":
            return _batch(args)
        if args.command == "report":
            return _report(args)
        return _run(args)
    except ConfigError as error:
        return _fail(error, EXIT_USAGE, args.debug)
    except ModelFileError as error:
        return _fail(error, EXIT_FAILURE, args.debug)
    except KeyboardInterrupt:
        sys.stderr.write("streamseg: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:
        from streamseg.sinks import OutputError
        from streamseg.sources import SourceError

        if isinstance(error, (SourceError, OutputError)):
            return _fail(error, EXIT_FAILURE, args.debug)
        if args.debug:
            log.exception("internal error")
        sys.stderr.write(
            f"streamseg: internal error: {type(error).__name__}: {_one_line(error)} "
            "(rerun with --debug for the traceback)\n"
        )
        return EXIT_FAILURE


def _run(args: argparse.Namespace) -> int:
    from streamseg.app import StreamConfig, run

    config = _with_arguments(load_config(StreamConfig, args.config, args.set), args)
    with _interrupt_on_signals(), _progress_bar() as on_progress:
        stats = run(config, on_progress=on_progress)
    _print_summary(stats)
    return EXIT_INTERRUPTED if stats.interrupted else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from streamseg.report import write_report

    out = args.out or args.tracks.with_suffix(".html")
    if not args.min_seconds >= 0:
        raise ConfigError(f"report: --min-seconds {args.min_seconds} must be >= 0")
    path = write_report(
        args.tracks, out, events_path=args.events, min_detected_s=args.min_seconds
    )
    sys.stdout.write(f"wrote {path}\n")
    return EXIT_OK


def _with_arguments(config: Any, args: argparse.Namespace) -> Any:
    """Apply the command-line options on top of the YAML and ``--set`` values."""
    changes = {
        "source": {"uri": args.source, "max_frames": args.max_frames},
        "model": {"path": args.model, "device": args.device},
        "output": {
            "video": args.output,
            "events": args.events,
            "tracks": getattr(args, "tracks", None),
            "masks": args.masks,
            "view": args.view,
            "bind": getattr(args, "bind", None),
        },
        "clips": {"folder": getattr(args, "clips", None)},
    }
    return _with_changes(config, changes)


def _with_changes(config: Any, changes: dict[str, dict[str, Any]]) -> Any:
    """``config`` with each given (not None) value replaced, section by section."""
    for section, values in changes.items():
        given = {key: value for key, value in values.items() if value is not None}
        try:
            config = dataclasses.replace(
                config,
                **{section: dataclasses.replace(getattr(config, section), **given)},
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{section}: {error}") from None
    return config


def _info(path: Path | None) -> int:
    from rich.console import Console
    from rich.table import Table
    from safetensors import safe_open

    from streamseg import model
    from streamseg.model import read_spec

    title = str(path)
    if path is None:
        path = model.default_model_path()
        if path is None:
            raise ConfigError(
                "info: this build has no bundled default model; pass MODEL "
                "(a .safetensors model file)"
            )
        title = f"{path.name} (the bundled default model)"
    spec = read_spec(path)
    count, parameters, dtypes = 0, 0, set()
    with safe_open(str(path), framework="pt") as file:
        for name in file.keys():
            tensor = file.get_slice(name)
            shape = tensor.get_shape()
            count += 1
            size = 1
            for side in shape:
                size *= side
            parameters += size
            dtypes.add(tensor.get_dtype())
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("file size", f"{path.stat().st_size / 1e6:.2f} MB")
    table.add_row(
        "tensors",
        f"{count} ({parameters / 1e6:.2f} M values, {', '.join(sorted(dtypes))})",
    )
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if field.name == "provenance":
            continue
        table.add_row(
            field.name, str(dict(value) if isinstance(value, dict) else value)
        )
    for key, value in sorted(spec.provenance.items()):
        table.add_row(f"provenance.{key}", str(value))
    Console().print(table)
    return EXIT_OK


def _print_summary(stats: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{stats.source}: {stats.frames_out} frames in {stats.wall_s:.1f} s "
        f"({stats.throughput_fps:.1f} fps), {stats.frames_dropped} dropped, "
        f"{stats.stopped}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("mean ms/frame", justify="right")
    table.add_column("p95 ms", justify="right")
    table.add_column("total s", justify="right")
    for stage in stats.stages:
        table.add_row(
            stage.name,
            f"{stage.mean_ms:.2f}",
            f"{stage.p95_ms:.2f}",
            f"{stage.total_s:.2f}",
        )
    if stats.latency_ms:
        what = "capture -> written" if stats.live else "decoded -> written"
        latency = " / ".join(f"{stats.latency_ms[q]:.1f}" for q in (50, 95, 99))
        table.add_row(f"latency p50/p95/p99 ({what})", latency, "", "")
    Console(width=max(100, Console().width)).print(table)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Any]:
    """A rich progress bar (frames, fps, ETA) for sources of known length, on a TTY."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]} fps{task.fields[speed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task: list[Any] = []

    def update(done: int, total: int | None, figures: Any = None) -> None:
        if total is None:
            return
        if not task:
            progress.start()
            task.append(progress.add_task("frames", total=total, fps="  -.-", speed=""))
        # The run's own figures (streamseg.stats) when it gives them: rich's
        # speed estimate counts the frames of one batch as a burst.
        speed = progress.tasks[0].speed if figures is None else figures.fps
        speed_x = getattr(figures, "speed_x", None)
        progress.update(
            task[0],
            completed=done,
            fps=f"{speed:5.1f}" if speed else "  -.-",
            speed=f" ({speed_x:.2f}x real time)" if speed_x else "",
        )

    try:
        yield update
    finally:
        if task:
            progress.stop()


@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    """SIGTERM acts like Ctrl-C; a repeated signal does not cut finalization short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = [0]

    def interrupt(signum: int, _frame: object) -> None:
        received[0] += 1
        if received[0] == 1:
            raise KeyboardInterrupt
        log.warning("already stopping (signal %d); finishing the outputs", signum)

    previous = {
        sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_streamseg", False):
            root.removeHandler(handler)
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=Console(stderr=True), show_path=False
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._streamseg = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("streamseg").setLevel(level)


def _fail(error: BaseException, code: int, debug: bool) -> int:
    if debug:
        log.exception("%s", type(error).__name__)
    sys.stderr.write(f"streamseg: error: {_one_line(error)}\n")
    return code


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _add_evaluate_video(commands: Any, common: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--model", type=Path, help="model file (.safetensors)")
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


def _evaluate_video(args: argparse.Namespace) -> int:
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
    with _interrupt_on_signals():
        with _progress_bar() as on_progress:
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


def _add_bench(commands: Any, common: argparse.ArgumentParser) -> None:
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
        help="model file, or random:ARCH/ENCODER@SIZE for timing with random weights "
        "(e.g. random:UnetPlusPlus/efficientnet-b2@320); default: the bundled model",
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
        "fp32,bf16-cl,bf16-cl-compile,onnx,ov-fp32,ov-int8 (OpenVINO ones where "
        "installed, ov-int8 where the model has an INT8 artefact); CUDA: fp32,"
        "fp16,fp16-cl,fp16-cl-graphs,fp16-cl-compile; also fp32-cl, fp32-compile)",
    )
    parser.add_argument(
        "--pipeline-variants",
        default="config",
        help="variants run through the pipeline (config = the model section as "
        "configured)",
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


def _batch(args: argparse.Namespace) -> int:
    from streamseg.app import StreamConfig
    from streamseg.batch.cli import batch

    config = _with_changes(
        load_config(StreamConfig, args.config, args.set),
        {"model": {"path": args.model, "device": args.device}},
    )
    with _interrupt_on_signals():
        return batch(args, config)


def _add_batch(commands: Any, common: argparse.ArgumentParser) -> None:
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


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from streamseg.app import StreamConfig
    from streamseg.evaluation import bench, bench_inputs
    from streamseg.model import default_model_path

    config = _with_changes(
        load_config(StreamConfig, args.config, args.set),
        {"model": {"device": args.device, "threads": args.threads}},
    )
    model = args.model or default_model_path()
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
            naive=not args.no_naive,
            **({"work_dir": args.work_dir} if args.work_dir else {}),
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
        return _fail(error, EXIT_USAGE, args.debug)
    console = Console(width=max(120, Console().width))
    for table in bench.report_tables(report):
        console.print(table)
    if args.json is not None:
        console.print(f"wrote {bench.write_json(report, args.json)}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
