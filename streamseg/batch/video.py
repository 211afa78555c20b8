"""One video: the pipeline into a temporary folder, the summary, then into place.

:class:`VideoProcessor` loads the model once; ``processor(job)`` writes the
video's outputs into a hidden temporary folder beside their destination,
writes ``summary.json`` (the completion marker) last and renames the folder
into place, so a folder at its final path is always complete. Every failure
becomes an :class:`Outcome` with a one-line reason; none escapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from streamseg.batch.jobs import VideoJob
from streamseg.batch.summary import (
    SUMMARY_FORMAT,
    BatchOutputs,
    config_sha256,
    now_iso,
    summarize_events,
)
from streamseg.config import ConfigError
from streamseg.files import write_atomic

if TYPE_CHECKING:
    from streamseg.app import StreamConfig
    from streamseg.segmenter import Segmenter

log = logging.getLogger(__name__)

TEMP_TAG = ".tmp-"


@dataclass(frozen=True)
class Outcome:
    """What one attempt at one video came to (picklable; JSON through :meth:`to_dict`).

    Attributes:
        video_id: The job's id.
        status: ``done``, ``failed`` or ``interrupted`` (stopped by the user:
            nothing kept, not counted as an attempt).
        error: One line naming the problem (failed; or done from a source
            that failed part-way, with ``keep_partial``).
        error_kind: ``source`` (the video itself: unreadable, no video
            stream, truncated), ``output``, ``model``, ``config``,
            ``internal`` or ``worker`` (the worker process died on it, after
            the engine's own retries); only ``internal`` and ``output``
            failures are retried within a run (the others would fail the
            same way), all of them by a rerun.
        started_at: ISO 8601 UTC.
        wall_s: Seconds the attempt took (model loading excluded).
        frames: Frames processed.
        fps: Frames per second achieved.
        worker: ``host:pid`` of the process that ran it.
        summary: The video's summary (done only).
    """

    video_id: str
    status: Literal["done", "failed", "interrupted"]
    error: str | None = None
    error_kind: str | None = None
    started_at: str = ""
    wall_s: float = 0.0
    frames: int = 0
    fps: float | None = None
    worker: str = ""
    summary: dict[str, Any] | None = None

    @property
    def retryable(self) -> bool:
        return self.status == "failed" and self.error_kind in ("internal", "output")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(**data)


ProgressFn = Callable[[int, "int | None"], None]


class VideoProcessor:
    """Run the pipeline on one video at a time, with the model loaded once.

    Args:
        config: The stream config shared by all videos (source, output
            paths and view are set per video).
        out: The output root.
        outputs: Which optional outputs to write.
        model_sha256: The model file's sha256 (recorded in each summary).
        segmenter: A loaded segmenter; ``None``: loaded from
            ``config.model`` now.

    Example:
        >>> processor = VideoProcessor(
        ...     config, Path("out"), BatchOutputs(), sha
        ... )  # doctest: +SKIP
        >>> processor(VideoJob("p17", "/archive/p17.mp4")).status  # doctest: +SKIP
        'done'
    """

    def __init__(
        self,
        config: StreamConfig,
        out: Path,
        outputs: BatchOutputs,
        model_sha256: str,
        *,
        segmenter: Segmenter | None = None,
    ) -> None:
        self.config = batch_config(config)
        self.out = Path(out)
        self.outputs = outputs
        self.model_sha256 = model_sha256
        if segmenter is None:
            from streamseg.segmenter import Segmenter, prepare_device

            _check_model_file(self.config.model.path, model_sha256)
            segmenter = Segmenter.from_settings(
                self.config.model, prepare_device(self.config.model)
            )
        self.segmenter = segmenter
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(
        self,
        job: VideoJob,
        *,
        on_progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Outcome:
        """Process ``job``: afterwards its output folder is complete or absent.

        Args:
            job: The video.
            on_progress: Called after each frame with (frames done, frames
                expected or None).
            should_stop: Polled after each frame; True interrupts the video
                (its partial outputs are removed).
        """
        from streamseg.app import run
        from streamseg.model import ModelFileError
        from streamseg.sinks import OutputError
        from streamseg.sources import SourceError

        started_at = now_iso()
        start_s = time.perf_counter()
        final = self.out / job.video_id

        def outcome(status: Any, **fields: Any) -> Outcome:
            summary = fields.get("summary")
            if summary is not None:
                fields |= {"frames": summary["frames"], "fps": summary["fps_achieved"]}
            return Outcome(
                job.video_id,
                status,
                started_at=started_at,
                wall_s=time.perf_counter() - start_s,
                worker=self.worker,
                **fields,
            )

        try:
            remove_stale_temps(final)
            temp = _temp_folder(final)
        except OSError as error:
            return outcome(
                "failed",
                error=f"{final.parent}: cannot create the output folder "
                f"({error.strerror or error}); check the output root's space and "
                "permissions",
                error_kind="output",
            )

        def progress(done: int, total: int | None, *_: Any) -> None:
            if on_progress is not None:
                on_progress(done, total)
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt

        config = job.config(self.config)
        config = dataclasses.replace(
            config,
            output=dataclasses.replace(
                config.output,
                events=temp / "events.jsonl",
                video=temp / "annotated.mp4" if self.outputs.video else None,
                masks=temp / "masks" if self.outputs.masks else None,
                tracks=temp / "tracks.json" if self.outputs.tracks else None,
            ),
            clips=dataclasses.replace(
                config.clips, folder=temp / "clips" if self.outputs.clips else None
            ),
        )
        warnings = _WarningCollector()
        try:
            with warnings.attached():
                stats = run(config, segmenter=self.segmenter, on_progress=progress)
            if stats.interrupted:
                raise KeyboardInterrupt
            summary = self._finish(
                job,
                config,
                temp,
                final,
                wall_s=stats.wall_s,
                fps=stats.throughput_fps,
                warnings=warnings.messages,
            )
        except SourceError as error:
            message = " ".join(str(error).split())
            partial = None
            if self.outputs.keep_partial and _line_count(temp / "events.jsonl"):
                partial = self._finish_partial(
                    job, config, temp, final, start_s, [*warnings.messages], message
                )
            if partial is None:
                shutil.rmtree(temp, ignore_errors=True)
                return outcome("failed", error=message, error_kind="source")
            # Done with what was read: the summary says complete: false.
            return outcome("done", error=message, error_kind="source", summary=partial)
        except KeyboardInterrupt:
            shutil.rmtree(temp, ignore_errors=True)
            return outcome("interrupted")
        except Exception as error:  # one video's failure never stops the job
            shutil.rmtree(temp, ignore_errors=True)
            kind = "internal"
            if isinstance(error, OutputError):
                kind = "output"
            elif isinstance(error, ConfigError):
                kind = "config"
            elif isinstance(error, ModelFileError):
                kind = "model"
            message = " ".join(str(error).split()) or type(error).__name__
            if kind == "internal":
                message = f"{type(error).__name__}: {message}"
                log.debug("%s failed", job.video_id, exc_info=True)
            return outcome("failed", error=message, error_kind=kind)
        return outcome("done", summary=summary)

    def _finish_partial(
        self,
        job: VideoJob,
        config: StreamConfig,
        temp: Path,
        final: Path,
        start_s: float,
        warnings: list[str],
        error: str,
    ) -> dict[str, Any] | None:
        """Finish with the frames read before the source failed (None: cannot)."""
        wall_s = time.perf_counter() - start_s
        try:
            frames = _line_count(temp / "events.jsonl")
            return self._finish(
                job,
                config,
                temp,
                final,
                wall_s=wall_s,
                fps=frames / wall_s if wall_s > 0 else 0.0,
                warnings=warnings,
                errors=[error],
            )
        except (OSError, ValueError):
            log.debug(
                "%s: cannot keep the partial outputs", job.video_id, exc_info=True
            )
            return None

    def _finish(
        self,
        job: VideoJob,
        config: StreamConfig,
        temp: Path,
        final: Path,
        *,
        wall_s: float,
        fps: float,
        warnings: list[str],
        errors: Sequence[str] = (),
    ) -> dict[str, Any]:
        events = temp / "events.jsonl"
        with open(events, encoding="utf-8") as lines:
            findings = summarize_events(
                (json.loads(line) for line in lines if line.strip()),
                episode_gap_s=self.outputs.episode_gap_s,
            )
        output_bytes = {}
        for name in ("events.jsonl", "annotated.mp4", "tracks.json"):
            if (temp / name).is_file():
                output_bytes[name] = (temp / name).stat().st_size
        summary = {
            "format": SUMMARY_FORMAT,
            "video": job.video_id,
            "source": job.source,
            "source_bytes": _size(job.source),
            "model_sha256": self.model_sha256,
            "config_sha256": config_sha256(config, self.outputs),
            **findings,
            "fps_achieved": round(fps, 3),
            "wall_s": round(wall_s, 3),
            "complete": not errors,
            "errors": list(errors),
            "warnings": warnings,
            "outputs": {
                "events": "events.jsonl",
                "video": "annotated.mp4" if self.outputs.video else None,
                "masks": "masks" if self.outputs.masks else None,
                "clips": "clips" if self.outputs.clips else None,
                "tracks": "tracks.json" if self.outputs.tracks else None,
            },
            "output_bytes": output_bytes,
            "worker": self.worker,
            "finished_at": now_iso(),
        }
        _fsync_tree(temp)
        write_atomic(temp / "summary.json", json.dumps(summary, indent=1) + "\n")
        _replace_folder(temp, final)
        return summary


def batch_config(config: StreamConfig) -> StreamConfig:
    """The shared config with nothing live or interactive left in it."""
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, realtime=False),
        output=dataclasses.replace(config.output, view="none"),
    )


def _check_model_file(path: Path | None, model_sha256: str) -> None:
    """Make sure a worker loads the very file the driver hashed (shared storage)."""
    from streamseg.model import ModelFileError, file_sha256

    if path is None:
        return
    try:
        found = file_sha256(path)
    except OSError as error:
        raise ModelFileError(
            f"{path}: cannot read the model file on worker {socket.gethostname()} "
            f"({error.strerror or error}); put it on storage every node mounts at "
            "the same path"
        ) from error
    if found != model_sha256:
        raise ModelFileError(
            f"{path}: the model file on worker {socket.gethostname()} differs from "
            "the driver's (sha256 mismatch); put it on storage every node mounts at "
            "the same path"
        )


class _WarningCollector(logging.Handler):
    """Collect the streamseg warnings logged while one video runs (for its summary)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 20:
            self.messages.append(" ".join(record.getMessage().split()))

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        logger = logging.getLogger("streamseg")
        logger.addHandler(self)
        try:
            yield
        finally:
            logger.removeHandler(self)


# --- files written safely --------------------------------------------------------


def _temp_folder(final: Path) -> Path:
    temp = final.parent / f".{final.name}{TEMP_TAG}{uuid.uuid4().hex[:12]}"
    temp.mkdir(parents=True)
    return temp


def remove_stale_temps(final: Path) -> None:
    """Remove this video's temporary folders left by a killed run."""
    if final.parent.is_dir():
        for stale in final.parent.glob(f".{final.name}{TEMP_TAG}*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)


def _replace_folder(temp: Path, final: Path) -> None:
    """Move the finished ``temp`` folder to ``final`` (an older one is replaced)."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}{TEMP_TAG}old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(temp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _line_count(path: Path) -> int:
    """Lines in a text file (0 if it does not exist)."""
    try:
        with open(path, "rb") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
