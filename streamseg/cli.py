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
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamseg.cli_common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    interrupt_on_signals,
    one_line,
    progress_bar,
    with_changes,
)
from streamseg.cli_tools import (
    add_batch,
    add_bench,
    add_evaluate_video,
    batch_command,
    bench_command,
    evaluate_video_command,
)
from streamseg.config import ConfigError, load_config
from streamseg.model import ModelFileError

log = logging.getLogger("streamseg.cli")


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
        help="model file (.safetensors), or bundled:NAME for a model shipped with "
        "streamseg (bundled:default, the accurate one; bundled:fast, half the "
        "network's cost for CPUs without AVX-512); default: bundled:default",
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
        help="model file (.safetensors), or bundled:NAME for a model shipped with "
        "streamseg (bundled:default, the accurate one; bundled:fast, half the "
        "network's cost for CPUs without AVX-512); default: bundled:default",
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
    add_evaluate_video(commands, common)
    add_bench(commands, common)
    add_batch(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamseg`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    try:
        if args.command == "info":
            return _info(args.model)
        if args.command == "evaluate-video":
            return evaluate_video_command(args)
        if args.command == "bench":
            return bench_command(args)
        if args.command == "batch":
            return batch_command(args)
        if args.command == "report":
            return _report(args)
        return _run(args)
    except ConfigError as error:
        return fail(error, EXIT_USAGE, args.debug)
    except ModelFileError as error:
        return fail(error, EXIT_FAILURE, args.debug)
    except KeyboardInterrupt:
        sys.stderr.write("streamseg: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:
        from streamseg.sinks import OutputError
        from streamseg.sources import SourceError

        if isinstance(error, (SourceError, OutputError)):
            return fail(error, EXIT_FAILURE, args.debug)
        if args.debug:
            log.exception("internal error")
        sys.stderr.write(
            f"streamseg: internal error: {type(error).__name__}: {one_line(error)} "
            "(rerun with --debug for the traceback)\n"
        )
        return EXIT_FAILURE


def entry() -> None:
    """The ``streamseg`` command and ``python -m streamseg``: exit with main's code.

    An interrupted run (130) has finalized its outputs by the time ``main``
    returns. Its exit then skips the interpreter's shutdown: a background
    thread still inside native code (torch) at shutdown can abort the process
    there (SIGABRT, "terminate called without an active exception"), which
    turned an orderly 130 into -6 in a test of a batch stopped by SIGTERM.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def _run(args: argparse.Namespace) -> int:
    from streamseg.app import StreamConfig, run

    config = _with_arguments(load_config(StreamConfig, args.config, args.set), args)
    with interrupt_on_signals(), progress_bar() as on_progress:
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
    return with_changes(config, changes)


def _info(path: Path | None) -> int:
    from rich.console import Console
    from rich.table import Table
    from safetensors import safe_open

    from streamseg import model
    from streamseg.model import read_spec

    title = str(path)
    if path is not None:
        path = model.resolve_model_path(path)
        if title.startswith(model.BUNDLED_PREFIX):
            title = f"{path.name} ({title}, a bundled model)"
    else:
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
        if key == "init_from":
            value = _lineage(value)
        elif key == "soup":
            value = _ingredients(value)
        table.add_row(f"provenance.{key}", str(value))
    Console().print(table)
    return EXIT_OK


def _ingredients(record: str) -> str:
    """The ``soup`` provenance entry: each averaged file, its weight and its lineage."""
    import json

    try:
        ingredients = json.loads(record)
        lines = []
        for item in ingredients:
            lines.append(f"weight {item['weight']:g}: {_file_line(item)}")
            parent = item["provenance"].get("init_from", "")
            lines.extend(f"  from {line}" for line in _ancestors(parent))
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(record)  # written by something else: shown as it is
    return "\n".join(lines)


def _lineage(record: str) -> str:
    """The ``init_from`` provenance entry: a line per ancestor, its recipe summed up."""
    return "\n".join(_ancestors(record))


def _ancestors(record: str) -> list[str]:
    """One line per file up an ``init_from`` chain (JSON records, innermost last)."""
    import json

    lines = []
    while record:
        try:
            parent = json.loads(record)
            lines.append(_file_line(parent))
            record = parent["provenance"].get("init_from", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            lines.append(str(record))  # written by something else: shown as it is
            break
    return lines


def _file_line(item: dict[str, Any]) -> str:
    """A model file of a lineage record: name, hash and its recipe summed up."""
    provenance = item["provenance"]
    facts = [
        f"{name} {provenance[name]}"
        for name in ("epochs", "loss", "optimizer", "val_dice")
        if name in provenance
    ]
    line = f"{item['file']} (sha256 {item['sha256'][:16]})"
    return line + (": " + "; ".join(facts) if facts else "")


def _print_summary(stats: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{stats.source}: {stats.frames_out} frames in {stats.wall_s:.1f} s "
        f"({stats.throughput_fps:.1f} fps), {stats.frames_dropped} dropped, "
        + (
            f"{stats.frames_held} with an earlier frame's outline, "
            if stats.frames_held
            else ""
        )
        + f"{stats.stopped}"
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
    if stats.outline_ms:
        outline = " / ".join(f"{stats.outline_ms[q]:.1f}" for q in (50, 95, 99))
        table.add_row(
            "outline age p50/p95/p99 (capture of its frame -> written)", outline, "", ""
        )
    Console(width=max(100, Console().width)).print(table)


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


if __name__ == "__main__":
    entry()
