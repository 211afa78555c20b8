"""``streamseg batch``: its arguments, its progress display and its summary.

Parses, builds the typed settings, calls :func:`streamseg.batch.driver.run_batch`,
prints. Exit codes: 0 every video done (now or before); 1 some failed (the
others finished; ``OUT/runs.jsonl`` says why); 2 usage; 130 interrupted (a
rerun resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamseg.batch.jobs import BatchError, plan_jobs
from streamseg.batch.settings import BatchSettings
from streamseg.batch.summary import BatchOutputs
from streamseg.config import ConfigError

if TYPE_CHECKING:
    from streamseg.app import StreamConfig

log = logging.getLogger("streamseg.cli")

# As streamseg.cli (usage errors reach it as ConfigError: exit 2).
EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=Path,
        help="folder of videos (searched recursively), list file (.txt: one path "
        "per line) or manifest (.csv/.jsonl: path[, id, kind, fps, max_frames])",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="OUT", help="output root"
    )
    parser.add_argument(
        "--video", action="store_true", help="also write annotated.mp4 per video"
    )
    parser.add_argument(
        "--masks", action="store_true", help="also write one mask PNG per frame"
    )
    parser.add_argument(
        "--clips", action="store_true", help="also save event clips with pre-roll"
    )
    parser.add_argument(
        "--tracks",
        action="store_true",
        help="also write tracks.json (polyp tracks with thumbnails) per video, "
        "for streamseg report",
    )
    parser.add_argument(
        "--pattern",
        metavar="GLOB",
        help="folder input: files matching this glob (e.g. '**/*.mp4') instead of "
        "every file with a video suffix",
    )
    parser.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="output folders mirror source paths relative to DIR (default: the "
        "input folder, or the list file's folder)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local: N processes, each with the model loaded once (GPUs shared "
        "round-robin; default 1); Ray: N actors (default: one per GPU)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: 'auto' (this machine's cluster, or a new local one) or "
        "a cluster address; needs pip install 'streamseg[cluster]'",
    )
    parser.add_argument(
        "--ray-cpus",
        type=float,
        default=1.0,
        metavar="N",
        help="CPUs each Ray actor reserves (default 1)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="a failed video gets at most 1+N attempts over all runs (default 2)",
    )
    parser.add_argument(
        "--keep-partial",
        action="store_true",
        help="finish a video whose source fails part-way (truncated) with the frames "
        "read (summary: complete false, errors); default: it fails",
    )
    parser.add_argument(
        "--episode-gap",
        type=float,
        default=0.5,
        metavar="S",
        help="polyp episodes closer than S seconds count as one (default 0.5)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="model file (.safetensors) or bundled:NAME (default, fast); "
        "default: the bundled default model",
    )
    parser.add_argument("--config", type=Path, help="YAML config (configs/stream.yaml)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), as for streamseg run",
    )


def batch(args: argparse.Namespace, config: StreamConfig) -> int:
    """Run ``streamseg batch`` with parsed ``args``; returns the exit code.

    Args:
        args: From the parser :func:`add_arguments` filled.
        config: The stream config (YAML, ``--set``, ``--model``, ``--device``),
            built by :mod:`streamseg.cli`, which also turns SIGTERM into
            Ctrl-C around this call.

    Raises:
        ConfigError: Unusable options or input (exit 2, one line).
    """
    from streamseg.batch.driver import run_batch
    from streamseg.batch.table import RunTable

    try:
        settings = BatchSettings(
            out=args.out,
            outputs=BatchOutputs(
                video=args.video,
                masks=args.masks,
                clips=args.clips,
                tracks=args.tracks,
                episode_gap_s=args.episode_gap,
                keep_partial=args.keep_partial,
            ),
            retries=args.retries,
            workers=args.workers,
            ray=args.ray,
            ray_cpus_per_worker=args.ray_cpus,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"batch: {error}") from None
    try:
        jobs = plan_jobs(
            args.input, pattern=args.pattern, root=args.root, exclude=args.out
        )
        with _display() as progress:
            report = run_batch(jobs, config, settings, progress=progress)
    except BatchError as error:
        raise ConfigError(str(error)) from None
    _print_report(report, RunTable(report.table))
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.complete else EXIT_FAILURE


def _print_report(report: Any, table: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    latest = table.latest()
    parts = [f"{report.done} done now"]
    if report.partial:
        parts[0] += f" ({len(report.partial)} partial: the source failed part-way)"
    if report.already_done:
        parts.append(f"{report.already_done} already done")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    if report.interrupted:
        parts.append("interrupted (rerun the same command to resume)")
    head = f"{report.total} videos: " + ", ".join(parts)
    if report.done == 0 and report.already_done == report.total:
        head = f"{report.total} videos: all already done; nothing to do"
    console.print(f"{head} ({report.wall_s:.1f} s); run table: {report.table}")
    for video_id in report.failed[:20]:
        row = latest.get(video_id, {})
        gave_up = " (gave up: attempts used)" if video_id in report.given_up else ""
        console.print(
            f"  failed{gave_up}: {video_id} after {row.get('attempts', '?')} "
            f"attempt(s): {row.get('error')}",
            markup=False,
        )
    if len(report.failed) > 20:
        console.print(f"  ... and {len(report.failed) - 20} more (see the run table)")


class _Progress:
    """Videos (with ETA) and, per worker, frames of the video in hand; or log lines."""

    def __init__(self, bar: Any | None) -> None:
        self.bar = bar
        self.videos: Any = None
        self.workers: dict[str, Any] = {}
        self.count = 0
        self.total = 0

    def planned(self, total: int, to_do: int) -> None:
        self.total = to_do
        done = total - to_do
        log.info("%d videos: %d to do, %d done or given up before", total, to_do, done)
        if self.bar is not None and to_do:
            self.bar.start()
            self.videos = self.bar.add_task("videos", total=to_do, fps="")

    def started(self, worker: str, video_id: str) -> None:
        if self.bar is None:
            return
        task = self.workers.get(worker)
        name = video_id if len(video_id) <= 40 else "..." + video_id[-37:]
        if task is None:
            self.workers[worker] = self.bar.add_task(
                f"  {name}", total=None, fps="  -.- fps"
            )
        else:
            self.bar.reset(task, description=f"  {name}", total=None, fps="  -.- fps")

    def frames(self, worker: str, done: int, total: int | None) -> None:
        task = self.workers.get(worker)
        if self.bar is None or task is None:
            return
        speed = self.bar.tasks[task].speed if task < len(self.bar.tasks) else None
        fps = f"{speed:5.1f} fps" if speed else "  -.- fps"
        if total is not None:  # a header's frame count can be an estimate
            total = max(total, done)
        self.bar.update(task, completed=done, total=total, fps=fps)

    def finished(self, outcome: Any, row: dict[str, Any]) -> None:
        self.count += 1
        if self.bar is not None and self.videos is not None:
            self.bar.advance(self.videos)
        what = (
            f"{row.get('frames')} frames, {row.get('fps') or 0:.1f} fps"
            if outcome.status == "done"
            else row.get("error")
        )
        message = "[%d/%d] %s %s (%s)"
        values = (self.count, self.total, outcome.status, outcome.video_id, what)
        if outcome.status == "done":
            log.info(message, *values)
        else:
            log.warning(message, *values)


@contextlib.contextmanager
def _display() -> Iterator[_Progress]:
    if not sys.stderr.isatty():
        yield _Progress(None)
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

    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    try:
        yield _Progress(bar)
    finally:
        bar.stop()
