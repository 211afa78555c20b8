"""Archive jobs: many recorded videos -> the run pipeline each -> outputs, run table.

``streamseg batch INPUT --out OUT`` runs the same pipeline as ``streamseg run``
(same config, model file and smoothing) on every video of a folder (recursive),
a list file or a manifest, and keeps a run table. The pieces:

* :func:`plan_jobs`: INPUT -> :class:`VideoJob` values (one per video; its
  output folder mirrors the input tree).
* :class:`VideoProcessor`: the stage that does one video. It loads the model
  once; ``processor(job)`` writes the video's outputs into a temporary folder,
  writes ``summary.json`` (the completion marker) last and renames the folder
  into place, so a folder at its final path is always complete.
* :class:`RunTable`: ``OUT/runs.jsonl``, one JSON line per attempt, appended
  with one write and an fsync; the latest line of a video is its state
  (:meth:`RunTable.latest`).
* :func:`run_batch`: the driver. It decides what to do (complete outputs that
  match the model's sha256 and the config hash are skipped; failed videos are
  retried while attempts remain), hands the work to an engine (in this
  process, ``workers`` processes, or Ray: :mod:`streamseg.batch_ray`),
  records every outcome, and stops cleanly on Ctrl-C or SIGTERM.

Layout under OUT, for an input ``INPUT/2024/p17.mp4``::

    OUT/runs.jsonl                 the run table (all runs, appended)
    OUT/2024/p17/events.jsonl      per-frame JSON lines (as streamseg run --events)
    OUT/2024/p17/summary.json      per-video summary; written last (the marker)
    OUT/2024/p17/annotated.mp4     with --video
    OUT/2024/p17/masks/            with --masks
    OUT/2024/p17/clips/            with --clips
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import difflib
import hashlib
import itertools
import json
import logging
import os
import shutil
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Protocol

from streamseg.config import ConfigError, to_dict

if TYPE_CHECKING:
    from streamseg.app import ModelSettings, StreamConfig
    from streamseg.segmenter import Segmenter

log = logging.getLogger(__name__)

SUMMARY_FORMAT = "streamseg-batch-summary/1"
RUN_TABLE = "runs.jsonl"
LOCK_FILE = ".streamseg-batch.lock"
TEMP_TAG = ".tmp-"
# Files a folder input picks up (any container FFmpeg reads can be listed in a
# manifest or list file; these are the usual ones).
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".avi",
        ".webm",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".wmv",
        ".flv",
        ".vob",
        ".3gp",
        ".ogv",
        ".mxf",
        ".dv",
    }
)
# Manifest columns (CSV header or JSONL keys). Others are ignored with a warning
# (hospital manifests often carry metadata columns).
MANIFEST_COLUMNS = ("path", "id", "kind", "fps", "max_frames")
# Config keys that do not change what a video's outputs contain: they are left
# out of the config hash, so changing them does not redo finished videos.
_UNHASHED = {
    "source": {
        "uri",
        "prefetch",
        "open_timeout_s",
        "stall_timeout_s",
        "no_signal_s",
        "reconnect",
        "reconnect_timeout_s",
        "reconnect_backoff_s",
        "stream_options",
        "device_fps",
        "device_size_wh",
        "device_fourcc",
    },
    "model": {
        "path",  # replaced by the file's sha256
        "device",
        "threads",
        "batch_size",
        "compile",
        "compile_mode",
        "cuda_graphs",
    },
    "output": {"video", "events", "masks", "view", "bind", "recordings", "video_queue"},
    "clips": {"folder"},
}

Status = Literal["done", "failed", "skipped"]


class BatchError(Exception):
    """The batch input or options are unusable (exit 2); the message names the fix."""


# --- what to do ------------------------------------------------------------------


@dataclass(frozen=True)
class VideoJob:
    """One video of an archive job.

    Attributes:
        video_id: Output folder relative to the output root, POSIX form
            (``2024/p17``); the run table's key.
        source: The video file (or image folder) to read.
        kind: ``file`` or ``folder`` (``None``: guessed from the path).
        fps: Frame rate of an image folder (``source.folder_fps``).
        max_frames: Process only the first frames (``source.max_frames``).
    """

    video_id: str
    source: str
    kind: Literal["file", "folder"] | None = None
    fps: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        check_video_id(self.video_id)
        if self.kind not in (None, "file", "folder"):
            raise ValueError(f"kind: expected file or folder, got {self.kind!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps: expected > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames: expected >= 1, got {self.max_frames}")

    def config(self, base: StreamConfig) -> StreamConfig:
        """``base`` with this video's source (and per-video fields) filled in."""
        changes: dict[str, Any] = {"uri": self.source}
        if self.kind is not None:
            changes["kind"] = self.kind
        if self.fps is not None:
            changes["folder_fps"] = self.fps
        if self.max_frames is not None:
            changes["max_frames"] = self.max_frames
        return dataclasses.replace(
            base, source=dataclasses.replace(base.source, **changes)
        )


def check_video_id(video_id: str) -> None:
    """Raise ValueError unless ``video_id`` is a clean relative POSIX path."""
    path = PurePosixPath(video_id)
    if (
        not video_id
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in video_id.split("/"))
        or any(part.startswith(".") for part in path.parts)
        or "\\" in video_id
    ):
        raise ValueError(
            f"id {video_id!r}: expected a relative path such as 2024/p17 (no '..', "
            "no leading '/' or '.')"
        )
    if path.parts[0] == RUN_TABLE:
        raise ValueError(f"id {video_id!r}: {RUN_TABLE} is the run table's name")


def plan_jobs(
    input_path: str | Path,
    *,
    pattern: str | None = None,
    root: Path | None = None,
    exclude: Path | None = None,
) -> list[VideoJob]:
    """The videos an input names, each with its output folder.

    Args:
        input_path: A folder (searched recursively for video files), a list
            file (``.txt``/``.list``: one path per line, ``#`` comments), or a
            manifest (``.csv`` with a header, or ``.jsonl``) with a ``path``
            column and optional ``id``, ``kind`` (file or folder), ``fps``
            (image folders), ``max_frames``. Relative paths in lists and
            manifests are relative to the list file's folder.
        pattern: Folder input only: a glob relative to the folder (e.g.
            ``"**/*.mp4"``) instead of every file with a video suffix.
        root: Output folders mirror the sources' paths relative to this
            folder (default: the input folder; for lists and manifests, the
            list's folder, or the sources' common folder when they lie
            elsewhere).
        exclude: Folder input only: a folder whose files are never inputs
            (the output root, when it lies inside the input folder).

    Returns:
        Jobs in a stable order (sorted by output id).

    Raises:
        BatchError: Missing input, an unreadable or invalid manifest, no
            videos, or two videos that would share an output folder.
    """
    path = Path(input_path)
    if path.is_dir():
        sources = _find_videos(path, pattern)
        if exclude is not None:
            skip = Path(exclude).resolve()
            sources = [p for p in sources if not _is_relative_to(p.resolve(), skip)]
        if not sources:
            what = f"matching {pattern!r}" if pattern else "with a video suffix"
            raise BatchError(
                f"{path}: no files {what} (suffixes: "
                f"{', '.join(sorted(VIDEO_SUFFIXES))}); pass --pattern GLOB, a list "
                "file or a manifest"
            )
        rows = [{"path": str(source.resolve())} for source in sources]
        base = path
    elif path.is_file():
        if pattern is not None:
            raise BatchError("--pattern applies to a folder input only")
        rows = _read_manifest(path)
        base = path.parent
    else:
        raise BatchError(
            f"{path}: no such file or folder; pass a folder of videos, a list file "
            "(.txt) or a manifest (.csv/.jsonl)"
        )
    return _jobs_from_rows(rows, base, root, str(path))


def _find_videos(folder: Path, pattern: str | None) -> list[Path]:
    if pattern is not None:
        found = folder.glob(pattern)
    else:
        found = (
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
        )
    return sorted(p for p in found if p.is_file() and not _is_hidden(p, folder))


def _is_hidden(path: Path, folder: Path) -> bool:
    # Skips dot-folders such as an output root's temporary folders when the
    # output lies inside the input.
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise BatchError(f"{path}: cannot read the list ({error})") from error
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns:
            raise BatchError(
                f"{path}: a manifest needs a 'path' column; its header has "
                f"{', '.join(columns) or 'nothing'}"
            )
        rows = [
            {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()}
            for r in reader
        ]
        rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in rows]
        _warn_unknown(path, columns)
        return [dict(r, _line=i + 2) for i, r in enumerate(rows) if r]
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise BatchError(
                    f"{path}:{number}: not valid JSON ({error.msg})"
                ) from error
            if not isinstance(row, dict) or "path" not in row:
                raise BatchError(
                    f"{path}:{number}: expected an object with a 'path' key"
                )
            rows.append(dict(row, _line=number))
        _warn_unknown(path, sorted({k for r in rows for k in r} - {"_line"}))
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            rows.append({"path": entry, "_line": number})
    return rows


def _warn_unknown(path: Path, columns: Iterable[str]) -> None:
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if unknown:
        hints = []
        for column in unknown:
            close = difflib.get_close_matches(column, MANIFEST_COLUMNS, n=1)
            hints.append(
                f"{column!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        log.warning(
            "%s: ignoring columns %s (known: %s)",
            path,
            ", ".join(hints),
            ", ".join(MANIFEST_COLUMNS),
        )


def _jobs_from_rows(
    rows: list[dict[str, Any]], base: Path, root: Path | None, where: str
) -> list[VideoJob]:
    if not rows:
        raise BatchError(f"{where}: lists no videos")
    sources = [_resolve(base, str(row["path"])) for row in rows]
    if root is None:
        inside = all(_is_relative_to(s, base.resolve()) for s in sources)
        parents = [str(s.parent) for s in sources]
        root = base.resolve() if inside else Path(os.path.commonpath(parents))
    root = root.resolve()
    jobs: list[VideoJob] = []
    owners: dict[str, str] = {}
    for row, source in zip(rows, sources, strict=True):
        label = f"{where}:{row['_line']}" if "_line" in row else str(source)
        try:
            video_id = str(row.get("id") or _mirror_id(source, root))
            job = VideoJob(
                video_id=video_id,
                source=str(source),
                kind=row.get("kind"),
                fps=_number(row.get("fps"), float, "fps"),
                max_frames=_number(row.get("max_frames"), int, "max_frames"),
            )
            if job.fps is not None and (
                job.kind == "file" or (job.kind is None and source.is_file())
            ):
                raise ValueError(
                    "fps applies to image folders (kind folder); a video file "
                    "keeps its own timestamps: leave fps empty for it"
                )
        except ValueError as error:
            raise BatchError(f"{label}: {error}") from None
        if job.video_id in owners:
            raise BatchError(
                f"{owners[job.video_id]} and {source} would share the output folder "
                f"{job.video_id!r}; give them distinct ids in a manifest (an 'id' "
                "column)"
            )
        owners[job.video_id] = str(source)
        jobs.append(job)
    return sorted(jobs, key=lambda j: j.video_id)


def _resolve(base: Path, entry: str) -> Path:
    path = Path(entry).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _is_relative_to(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _mirror_id(source: Path, root: Path) -> str:
    if not _is_relative_to(source, root):
        raise ValueError(
            f"{source} is not under the output mirror root {root}; pass --root or "
            "give it an id in a manifest"
        )
    relative = source.relative_to(root)
    # The output folder is the path without the video's suffix (p17.mp4 -> p17/);
    # image folders keep their name.
    return relative.with_suffix("").as_posix() if source.suffix else relative.as_posix()


def _number(value: Any, kind: type, name: str) -> Any:
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if kind is int and number != float(value):
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    return number


# --- what a finished video's outputs must match ----------------------------------


@dataclass(frozen=True)
class BatchOutputs:
    """Which outputs every video gets besides events.jsonl and summary.json.

    Attributes:
        video: The annotated MP4 (``annotated.mp4``).
        masks: One mask PNG per frame (``masks/``).
        clips: Event clips with pre-roll (``clips/``).
        episode_gap_s: Polyp episodes closer than this are merged into one
            in the summary (a mask that blinks off for a frame or two is
            still the same finding).
        keep_partial: A video whose source fails after some frames were
            processed (a truncated recording) is finished with what was
            read: status done, its summary has ``complete: false`` and the
            reason in ``errors``. Otherwise such a video fails and its
            partial outputs are dropped.
    """

    video: bool = False
    masks: bool = False
    clips: bool = False
    episode_gap_s: float = 0.5
    keep_partial: bool = False

    def __post_init__(self) -> None:
        if self.episode_gap_s < 0:
            raise ValueError(f"episode_gap_s: expected >= 0, got {self.episode_gap_s}")


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def config_sha256(config: StreamConfig, outputs: BatchOutputs) -> str:
    """Hex sha256 of every setting that changes a video's outputs.

    Paths, the device, thread counts, batch size, compilation and timeouts
    are left out (they change where or how fast, not what); the model file
    enters through its own sha256. ``model.precision`` enters as
    configured: set it explicitly (not ``auto``) when reruns may land on
    different hardware and must not redo finished videos.
    """
    data = to_dict(config)
    for section, keys in _UNHASHED.items():
        for key in keys:
            data.get(section, {}).pop(key, None)
    # keep_partial decides what happens on a failure, not what outputs hold.
    data["batch_outputs"] = dataclasses.asdict(
        dataclasses.replace(outputs, keep_partial=False)
    )
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def is_complete(
    folder: Path, *, source: str, model_sha256: str, config_sha256: str
) -> dict[str, Any] | None:
    """The summary of a finished video folder if it matches, else None.

    Complete means: ``summary.json`` (written last) exists and parses, names
    the same source, model sha256 and config hash, and every output it lists
    exists with the listed size.
    """
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(summary, dict)
        or summary.get("format") != SUMMARY_FORMAT
        or summary.get("source") != source
        or summary.get("model_sha256") != model_sha256
        or summary.get("config_sha256") != config_sha256
    ):
        return None
    for name, size in summary.get("output_bytes", {}).items():
        try:
            if (folder / name).stat().st_size != size:
                return None
        except OSError:
            return None
    return summary


# --- one video -------------------------------------------------------------------


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
        self.config = _batch_config(config)
        self.out = Path(out)
        self.outputs = outputs
        self.model_sha256 = model_sha256
        if segmenter is None:
            _check_model_file(self.config.model.path, model_sha256)
            segmenter = load_segmenter(self.config.model)
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

        started_at = _now_iso()
        start_s = time.perf_counter()
        final = self.out / job.video_id
        try:
            _remove_stale_temps(final)
            temp = _temp_folder(final)
        except OSError as error:
            return Outcome(
                job.video_id,
                "failed",
                error=f"{final.parent}: cannot create the output folder "
                f"({error.strerror or error}); check the output root's space and "
                "permissions",
                error_kind="output",
                started_at=started_at,
                worker=self.worker,
            )

        def progress(done: int, total: int | None) -> None:
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
            ),
            clips=dataclasses.replace(
                config.clips, folder=temp / "clips" if self.outputs.clips else None
            ),
        )
        warnings = _WarningCollector()
        kind = "internal"
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
                return Outcome(
                    job.video_id,
                    "failed",
                    error=message,
                    error_kind="source",
                    started_at=started_at,
                    wall_s=time.perf_counter() - start_s,
                    worker=self.worker,
                )
            return Outcome(
                job.video_id,
                "done",
                error=message,
                error_kind="source",
                started_at=started_at,
                wall_s=time.perf_counter() - start_s,
                frames=partial["frames"],
                fps=partial["fps_achieved"],
                worker=self.worker,
                summary=partial,
            )
        except KeyboardInterrupt:
            shutil.rmtree(temp, ignore_errors=True)
            return Outcome(
                job.video_id,
                "interrupted",
                started_at=started_at,
                wall_s=time.perf_counter() - start_s,
                worker=self.worker,
            )
        except Exception as error:  # one video's failure never stops the job
            shutil.rmtree(temp, ignore_errors=True)
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
            return Outcome(
                job.video_id,
                "failed",
                error=message,
                error_kind=kind,
                started_at=started_at,
                wall_s=time.perf_counter() - start_s,
                worker=self.worker,
            )
        return Outcome(
            job.video_id,
            "done",
            started_at=started_at,
            wall_s=time.perf_counter() - start_s,
            frames=summary["frames"],
            fps=summary["fps_achieved"],
            worker=self.worker,
            summary=summary,
        )

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
        for name in ("events.jsonl", "annotated.mp4"):
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
            },
            "output_bytes": output_bytes,
            "worker": self.worker,
            "finished_at": _now_iso(),
        }
        _fsync_tree(temp)
        _write_atomic(temp / "summary.json", json.dumps(summary, indent=1) + "\n")
        _replace_folder(temp, final)
        return summary


def _batch_config(config: StreamConfig) -> StreamConfig:
    """The shared config with nothing live or interactive left in it."""
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, realtime=False),
        output=dataclasses.replace(config.output, view="none"),
    )


def _check_model_file(path: Path | None, model_sha256: str) -> None:
    """Make sure a worker loads the very file the driver hashed (shared storage)."""
    from streamseg.model import ModelFileError

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


def load_segmenter(settings: ModelSettings) -> Segmenter:
    """Pick the device and load the model file once (for many videos)."""
    # The one mapping from settings to a segmenter lives in the app (to be
    # Segmenter.from_settings); a batch worker calls it once.
    from streamseg.app import _load_segmenter

    return _load_segmenter(settings)


def summarize_events(
    events: Iterable[dict[str, Any]], *, episode_gap_s: float = 0.5
) -> dict[str, Any]:
    """Per-video figures from the per-frame events (the lines of events.jsonl).

    Each frame lasts until the next one's timestamp; the last frame lasts the
    median frame period. An episode is a run of frames with a polyp, where
    runs less than ``episode_gap_s`` apart are merged.

    Returns:
        ``frames``, ``duration_s``, ``polyp_frames``, ``polyp_time_s``,
        ``polyp_time_fraction``, ``max_area_fraction``,
        ``max_area_timestamp_s``, ``episode_count`` and ``episodes`` (each:
        ``start_s``, ``end_s``, ``frames``, ``max_area_fraction``).

    Example:
        >>> e = [{"timestamp_s": i / 10, "polyp_present": i in (2, 3, 7),
        ...       "area_fraction": 0.1 * (i == 3)} for i in range(10)]
        >>> s = summarize_events(e, episode_gap_s=0.2)
        >>> s["episode_count"], s["polyp_time_s"], s["duration_s"]
        (2, 0.3, 1.0)
    """
    times: list[float] = []
    present: list[bool] = []
    areas: list[float] = []
    for event in events:
        times.append(float(event["timestamp_s"]))
        present.append(bool(event["polyp_present"]))
        areas.append(float(event["area_fraction"]))
    if not times:
        return {
            "frames": 0,
            "duration_s": 0.0,
            "polyp_frames": 0,
            "polyp_time_s": 0.0,
            "polyp_time_fraction": 0.0,
            "max_area_fraction": 0.0,
            "max_area_timestamp_s": None,
            "episode_count": 0,
            "episodes": [],
        }
    gaps = [b - a for a, b in itertools.pairwise(times)]
    period_s = statistics.median(gaps) if gaps else 0.0
    durations = [*gaps, period_s]
    duration_s = sum(durations)
    episodes: list[dict[str, Any]] = []
    for index, on in enumerate(present):
        if not on:
            continue
        end_s = times[index] + durations[index]
        last = episodes[-1] if episodes else None
        if last is not None and times[index] - last["end_s"] <= episode_gap_s + 1e-9:
            last["end_s"] = end_s
            last["frames"] += 1
            last["max_area_fraction"] = max(last["max_area_fraction"], areas[index])
        else:
            episodes.append(
                {
                    "start_s": times[index],
                    "end_s": end_s,
                    "frames": 1,
                    "max_area_fraction": areas[index],
                }
            )
    polyp_time_s = sum((d for d, on in zip(durations, present, strict=True) if on), 0.0)
    peak = max(range(len(areas)), key=areas.__getitem__)
    return {
        "frames": len(times),
        "duration_s": round(duration_s, 6),
        "polyp_frames": sum(present),
        "polyp_time_s": round(polyp_time_s, 6),
        "polyp_time_fraction": round(polyp_time_s / duration_s, 6)
        if duration_s > 0
        else 0.0,
        "max_area_fraction": round(areas[peak], 6),
        "max_area_timestamp_s": times[peak] if areas[peak] > 0 else None,
        "episode_count": len(episodes),
        "episodes": [
            {k: round(v, 6) if isinstance(v, float) else v for k, v in e.items()}
            for e in episodes
        ],
    }


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


def _remove_stale_temps(final: Path) -> None:
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


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}{TEMP_TAG}{uuid.uuid4().hex[:8]}")
    with open(temp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


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


def _now_iso() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds")


# --- the run table ---------------------------------------------------------------


class RunTable:
    """``runs.jsonl``: one JSON line per outcome, appended; a video's latest line wins.

    Each append is one ``write`` of a complete line followed by ``fsync``, so
    a killed driver leaves whole lines (a torn last line, possible only on
    power loss, is ignored on reading). Only the driver writes it.

    Row keys: ``video``, ``source``, ``status`` (done / failed / skipped),
    ``attempts`` (all runs), ``error``, ``error_kind``, ``started_at``,
    ``wall_s``, ``frames``, ``fps``, ``outputs`` (paths relative to the
    output root), ``model_sha256``, ``config_sha256``, ``run_id``,
    ``engine``, ``worker``, ``recorded_at``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row, oldest first."""
        try:
            file = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return
        with file:
            for line in file:
                if not line.endswith("\n"):
                    break  # torn last line
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict) and "video" in row:
                        yield row

    def latest(self) -> dict[str, dict[str, Any]]:
        """The current row of every video in the table."""
        return {row["video"]: row for row in self.rows()}

    def append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, separators=(",", ":")) + "\n").encode()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, data)
            if written != len(data):
                raise OSError(f"{self.path}: short write ({written} of {len(data)})")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# --- the driver ------------------------------------------------------------------


class BatchProgress(Protocol):
    """What the driver reports while it works (the CLI draws it; tests record it)."""

    def planned(self, total: int, to_do: int) -> None: ...

    def started(self, worker: str, video_id: str) -> None: ...

    def frames(self, worker: str, done: int, total: int | None) -> None: ...

    def finished(self, outcome: Outcome, row: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class BatchSettings:
    """How ``streamseg batch`` runs.

    Attributes:
        out: Output root (a folder; created).
        outputs: Optional outputs and summary settings.
        retries: Extra attempts per failed video: within a run for failures
            that may pass on a second try (a crashed worker, an internal or
            output error), and across reruns for every failure, until a
            video has had ``1 + retries`` attempts in all.
        workers: Local engine: processes, each with its own model copy
            (one per GPU on a multi-GPU machine); 1 runs in this process.
            Ray engine: actors (default: the cluster's GPUs).
        ray: ``None``: the local engine; ``"auto"`` or a Ray address: the
            Ray engine.
        ray_cpus_per_worker: CPUs each Ray actor asks for.
    """

    out: Path
    outputs: BatchOutputs = field(default_factory=BatchOutputs)
    retries: int = 2
    workers: int | None = None
    ray: str | None = None
    ray_cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries: expected >= 0, got {self.retries}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: expected >= 1, got {self.workers}")
        if not self.ray_cpus_per_worker > 0:
            raise ValueError(
                f"ray_cpus_per_worker: expected > 0, got {self.ray_cpus_per_worker}"
            )


@dataclass(frozen=True)
class BatchReport:
    """What a batch run did.

    Attributes:
        total: Videos planned.
        done: Videos done in this run.
        already_done: Videos whose outputs were complete before this run.
        failed: Video ids whose latest attempt failed.
        given_up: Failed videos not tried again (attempts used up).
        partial: Videos done in this run from a source that failed part-way
            (``keep_partial``).
        interrupted: The run was stopped (Ctrl-C / SIGTERM); a rerun resumes.
        wall_s: Seconds this run took.
        table: The run table's path.
    """

    total: int
    done: int
    already_done: int
    failed: tuple[str, ...]
    given_up: tuple[str, ...]
    interrupted: bool
    wall_s: float
    table: Path
    partial: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.done + self.already_done == self.total


class Engine(Protocol):
    """Runs jobs and yields their outcomes as they finish (in any order)."""

    name: str

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


def run_batch(
    jobs: Sequence[VideoJob],
    config: StreamConfig,
    settings: BatchSettings,
    *,
    progress: BatchProgress | None = None,
    engine: Engine | None = None,
) -> BatchReport:
    """Bring every job to done (or failed with its reason); record each outcome.

    Args:
        jobs: From :func:`plan_jobs`.
        config: The stream config for every video (``model.path`` ``None``:
            the bundled model).
        settings: Output root, retries, engine.
        progress: Told what happens (optional).
        engine: Overrides the engine ``settings`` picks (tests).

    Returns:
        The report; a KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one
        by the CLI) ends the run early with ``interrupted`` set, after the
        videos in flight are stopped and their partial outputs removed.

    Raises:
        BatchError: The output root is in use by another batch run or
            cannot be written.
        ModelFileError: The model file is missing or invalid.
    """
    from streamseg.app import _model_path
    from streamseg.model import read_spec

    start_s = time.perf_counter()
    out = Path(settings.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BatchError(
            f"{out}: cannot create the output folder ({error.strerror}); pick a "
            "writable --out"
        ) from error
    model_path = _model_path(config.model)
    read_spec(model_path)  # a bad model file fails here, not once per video
    model_sha256 = file_sha256(model_path)
    config = _batch_config(
        dataclasses.replace(
            config, model=dataclasses.replace(config.model, path=model_path)
        )
    )
    table = RunTable(out / RUN_TABLE)
    run_id = f"{_now_iso()}-{uuid.uuid4().hex[:6]}"
    with _exclusive(out):
        latest = table.latest()
        hashes = {
            job.video_id: config_sha256(job.config(config), settings.outputs)
            for job in jobs
        }
        to_do: list[VideoJob] = []
        already, given_up = 0, []
        attempts = {
            job.video_id: latest.get(job.video_id, {}).get("attempts", 0)
            for job in jobs
        }
        for job in jobs:
            previous = latest.get(job.video_id)
            summary = is_complete(
                out / job.video_id,
                source=job.source,
                model_sha256=model_sha256,
                config_sha256=hashes[job.video_id],
            )
            if summary is not None:
                already += 1
                if previous is None or previous.get("status") not in (
                    "done",
                    "skipped",
                ):
                    # Finished by a run that was killed before it could record it.
                    table.append(
                        _row(
                            job,
                            "skipped",
                            summary=summary,
                            attempts=attempts[job.video_id],
                            run_id=run_id,
                            engine="",
                            model_sha256=model_sha256,
                            config_hash=hashes[job.video_id],
                            note="outputs were already complete",
                        )
                    )
                continue
            failed_before = previous is not None and previous.get("status") == "failed"
            if failed_before and attempts[job.video_id] >= 1 + settings.retries:
                given_up.append(job.video_id)
                continue
            to_do.append(job)
        if progress is not None:
            progress.planned(len(jobs), len(to_do))
        if not to_do:
            return BatchReport(
                len(jobs),
                0,
                already,
                tuple(given_up),
                tuple(given_up),
                False,
                time.perf_counter() - start_s,
                table.path,
            )
        if engine is None:
            engine = _make_engine(config, settings, model_sha256, progress)
        done, failed, interrupted = 0, {}, False
        partial: list[str] = []
        by_id = {job.video_id: job for job in to_do}
        tries = dict.fromkeys(by_id, 0)
        pending = list(to_do)
        try:
            while pending:
                retry: list[VideoJob] = []
                for outcome in engine.execute(pending):
                    job = by_id[outcome.video_id]
                    if outcome.status == "interrupted":
                        interrupted = True
                        continue
                    tries[job.video_id] += 1
                    attempts[job.video_id] += 1
                    row = _row(
                        job,
                        outcome.status,
                        outcome=outcome,
                        summary=outcome.summary,
                        attempts=attempts[job.video_id],
                        run_id=run_id,
                        engine=engine.name,
                        model_sha256=model_sha256,
                        config_hash=hashes[job.video_id],
                    )
                    table.append(row)
                    if outcome.status == "done":
                        done += 1
                        failed.pop(job.video_id, None)
                        if outcome.error:
                            partial.append(job.video_id)
                    else:
                        failed[job.video_id] = outcome.error
                        if (
                            outcome.retryable
                            and attempts[job.video_id] < 1 + settings.retries
                        ):
                            retry.append(job)
                    if progress is not None:
                        progress.finished(outcome, row)
                if interrupted:
                    break
                pending = retry
        except KeyboardInterrupt:
            interrupted = True
            engine.stop()
        finally:
            engine.close()
        if interrupted:
            # Engines remove the partial outputs of the videos they stop; this
            # also catches those of workers that were killed (Ray stops its
            # actors without warning).
            for job in to_do:
                if tries[job.video_id] == 0:
                    _remove_stale_temps(out / job.video_id)
    return BatchReport(
        total=len(jobs),
        done=done,
        already_done=already,
        failed=tuple(sorted(failed)) + tuple(given_up),
        given_up=tuple(given_up),
        interrupted=interrupted,
        wall_s=time.perf_counter() - start_s,
        table=table.path,
        partial=tuple(partial),
    )


def _row(
    job: VideoJob,
    status: str,
    *,
    outcome: Outcome | None = None,
    summary: dict[str, Any] | None,
    attempts: int,
    run_id: str,
    engine: str,
    model_sha256: str,
    config_hash: str,
    note: str | None = None,
) -> dict[str, Any]:
    outputs = None
    if summary is not None:
        outputs = {"summary": f"{job.video_id}/summary.json"} | {
            name: f"{job.video_id}/{value}"
            for name, value in summary.get("outputs", {}).items()
            if value
        }
    row = {
        "video": job.video_id,
        "source": job.source,
        "status": status,
        "attempts": attempts,
        "error": outcome.error if outcome else None,
        "error_kind": outcome.error_kind if outcome else None,
        "started_at": outcome.started_at if outcome else None,
        "wall_s": round(outcome.wall_s, 3)
        if outcome
        else (summary or {}).get("wall_s"),
        "frames": (summary or {}).get("frames"),
        "fps": (summary or {}).get("fps_achieved"),
        "outputs": outputs,
        "model_sha256": model_sha256,
        "config_sha256": config_hash,
        "run_id": run_id,
        "engine": engine,
        "worker": outcome.worker if outcome else (summary or {}).get("worker"),
        "recorded_at": _now_iso(),
    }
    if note is not None:
        row["note"] = note
    return row


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``OUT/.streamseg-batch.lock``: two drivers never share an output root."""
    import fcntl

    path = out / LOCK_FILE
    try:
        file = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise BatchError(
            f"{out}: cannot write to the output folder ({error.strerror}); pick a "
            "writable --out"
        ) from error
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            raise BatchError(
                f"{out}: another streamseg batch run is writing here ({holder}); "
                "wait for it to finish or pick another --out"
            ) from None
        file.truncate(0)
        file.write(f"{socket.gethostname()}:{os.getpid()}\n")
        file.flush()
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _make_engine(
    config: StreamConfig,
    settings: BatchSettings,
    model_sha256: str,
    progress: BatchProgress | None,
) -> Engine:
    if settings.ray is not None:
        from streamseg.batch_ray import RayEngine

        return RayEngine(config, settings, model_sha256)
    if (settings.workers or 1) > 1:
        return ProcessEngine(config, settings, model_sha256, progress)
    return InProcessEngine(config, settings, model_sha256, progress)


# --- local engines ---------------------------------------------------------------


class InProcessEngine:
    """One video after another in this process (the default)."""

    name = "local"

    def __init__(
        self,
        config: StreamConfig,
        settings: BatchSettings,
        model_sha256: str,
        progress: BatchProgress | None = None,
    ) -> None:
        self._processor = VideoProcessor(
            config, settings.out, settings.outputs, model_sha256
        )
        self._progress = progress
        self._stopped = False

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]:
        worker = self._processor.worker
        for job in jobs:
            if self._stopped:
                return
            if self._progress is not None:
                self._progress.started(worker, job.video_id)
            on_frames = (
                None
                if self._progress is None
                else lambda d, t: self._progress.frames(worker, d, t)
            )
            outcome = self._processor(job, on_progress=on_frames)
            yield outcome
            if outcome.status == "interrupted":
                raise KeyboardInterrupt

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        pass


class ProcessEngine:
    """``workers`` processes (spawned), each loading the model once.

    On a machine with several GPUs and ``model.device`` ``auto`` or
    ``cuda``, worker ``i`` uses ``cuda:{i mod GPUs}``. Workers ignore Ctrl-C;
    the driver stops them through a shared event (a video in flight is
    abandoned and its partial outputs removed), and a worker whose driver
    died stops by itself. A worker that dies (out of memory, killed) fails
    the videos in flight with a retryable error; the pool is then rebuilt.
    """

    name = "local"

    def __init__(
        self,
        config: StreamConfig,
        settings: BatchSettings,
        model_sha256: str,
        progress: BatchProgress | None = None,
    ) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._messages = self._context.Queue()
        self._progress = progress
        self._count = settings.workers or 1
        self._devices = _worker_devices(config.model.device, self._count)
        self._init = (config, settings.out, settings.outputs, model_sha256)
        self._pool: Any = None

    def _ensure_pool(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            slots = self._context.Queue()
            for device in self._devices:
                slots.put(device)
            self._pool = ProcessPoolExecutor(
                max_workers=self._count,
                mp_context=self._context,
                initializer=_init_worker,
                initargs=(
                    *self._init,
                    slots,
                    self._stop,
                    self._messages,
                    os.getpid(),
                ),
            )
        return self._pool

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = self._ensure_pool()
        futures = {pool.submit(_work, job): job for job in jobs}
        remaining = set(futures)
        broken = False
        while remaining:
            finished, remaining = wait(
                remaining, timeout=0.2, return_when=FIRST_COMPLETED
            )
            self._drain()
            for future in finished:
                job = futures[future]
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken = True
                    yield Outcome(
                        job.video_id,
                        "failed",
                        error="the worker process died (out of memory or killed)",
                        error_kind="internal",
                    )
        self._drain()
        if broken:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _drain(self) -> None:
        import queue

        while True:
            try:
                message = self._messages.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if self._progress is None:
                continue
            if message[0] == "started":
                self._progress.started(message[1], message[2])
            else:
                self._progress.frames(message[1], message[2], message[3])

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _worker_devices(device: str, count: int) -> list[str]:
    """The device for each local worker: GPUs round-robin where the config allows."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [device] * count


_WORKER: dict[str, Any] = {}


def _init_worker(
    config: StreamConfig,
    out: Path,
    outputs: BatchOutputs,
    model_sha256: str,
    slots: Any,
    stop: Any,
    messages: Any,
    parent_pid: int,
) -> None:
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides
    device = slots.get()
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, device=device)
    )
    _WORKER["processor"] = VideoProcessor(config, out, outputs, model_sha256)
    _WORKER["stop"] = stop
    _WORKER["messages"] = messages

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        stop.set()  # the driver died: abandon the video in flight, then exit
        time.sleep(30.0)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


def _work(job: VideoJob) -> Outcome:
    processor: VideoProcessor = _WORKER["processor"]
    stop = _WORKER["stop"]
    messages = _WORKER["messages"]
    worker = processor.worker
    messages.put(("started", worker, job.video_id))
    last = [0.0]

    def on_frames(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] > 0.2 or done == total:
            last[0] = now
            messages.put(("frames", worker, done, total))

    if stop.is_set():
        return Outcome(job.video_id, "interrupted", worker=worker)
    return processor(job, on_progress=on_frames, should_stop=stop.is_set)
