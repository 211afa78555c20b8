"""What the ``streamseg`` subcommands share: exit codes, config changes from
options, the progress bar, signal handling and one-line errors.

Used by :mod:`streamseg.cli` (run, info, report) and :mod:`streamseg.cli_tools`
(evaluate-video, bench, batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from streamseg.config import ConfigError

log = logging.getLogger("streamseg.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def with_changes(config: Any, changes: dict[str, dict[str, Any]]) -> Any:
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


@contextlib.contextmanager
def progress_bar() -> Iterator[Any]:
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
def interrupt_on_signals() -> Iterator[None]:
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


def fail(error: BaseException, code: int, debug: bool) -> int:
    if debug:
        log.exception("%s", type(error).__name__)
    sys.stderr.write(f"streamseg: error: {one_line(error)}\n")
    return code


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
