"""Archive input -> jobs: a folder, list file or manifest -> :class:`VideoJob` values.

Each job names one video (or image folder) and its output folder under the
output root, which mirrors the input tree (``INPUT/2024/p17.mp4`` ->
``OUT/2024/p17/``) unless a manifest gives an ``id``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from streamseg.app import StreamConfig

log = logging.getLogger(__name__)

# The run table's name under the output root (no video may take it).
RUN_TABLE = "runs.jsonl"
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
