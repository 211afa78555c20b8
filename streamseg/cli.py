"""The ``streamseg`` command: parse arguments, set up logging, call the library, print.

Subcommands:

* ``streamseg run SOURCE [--model FILE] [--config YAML] [--output OUT.mp4]
  [--events OUT.jsonl] [--masks DIR] [--view window|none] [--device D]
  [--max-frames N] [--set key=value ...] [--debug]``
* ``streamseg info MODEL``

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
        "--masks", type=Path, help="write one mask PNG per frame into this folder"
    )
    run.add_argument(
        "--view",
        choices=("window", "none"),
        help="show a live window (needs an OpenCV GUI) or nothing",
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
        help="show what a model file holds",
        description="Show what a model file holds.",
    )
    info.add_argument(
        "model", metavar="MODEL", type=Path, help="model file (.safetensors)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamseg`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    try:
        if args.command == "info":
            return _info(args.model)
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


def _with_arguments(config: Any, args: argparse.Namespace) -> Any:
    """Apply the command-line options on top of the YAML and ``--set`` values."""
    changes = {
        "source": {"uri": args.source, "max_frames": args.max_frames},
        "model": {"path": args.model, "device": args.device},
        "output": {
            "video": args.output,
            "events": args.events,
            "masks": args.masks,
            "view": args.view,
        },
    }
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


def _info(path: Path) -> int:
    from rich.console import Console
    from rich.table import Table
    from safetensors import safe_open

    from streamseg.model import read_spec

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
    table = Table(title=str(path), show_header=False, title_justify="left")
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
        TextColumn("{task.fields[fps]} fps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task: list[Any] = []

    def update(done: int, total: int | None) -> None:
        if total is None:
            return
        if not task:
            progress.start()
            task.append(progress.add_task("frames", total=total, fps="  -.-"))
        speed = progress.tasks[0].speed
        progress.update(
            task[0], completed=done, fps=f"{speed:5.1f}" if speed else "  -.-"
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


if __name__ == "__main__":
    raise SystemExit(main())
