"""The output root's bookkeeping: the run table (``runs.jsonl``) and the driver's lock.

Only the driver writes here; workers write their videos' folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamseg.batch.jobs import RUN_TABLE, BatchError, VideoJob
from streamseg.batch.summary import now_iso
from streamseg.files import LineWriter

if TYPE_CHECKING:
    from streamseg.batch.video import Outcome

__all__ = ["LOCK_FILE", "RUN_TABLE", "RunTable", "exclusive", "table_row"]

LOCK_FILE = ".streamseg-batch.lock"


class RunTable:
    """``runs.jsonl``: one JSON line per outcome, appended; a video's latest line wins.

    Lines go through :class:`~streamseg.files.LineWriter` (a kill never
    leaves half a line) and are fsynced, so a power cut loses at most the
    last row (a torn last line is ignored on reading, and a rerun records a
    finished video again from its summary). Only the driver writes it.

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
        """Add ``row`` as one line and flush it to disk.

        Raises:
            OSError: The table cannot be written (disk full, permissions).
        """
        with LineWriter(self.path, append=True) as lines:
            lines.write(json.dumps(row, separators=(",", ":")))
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def table_row(
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
        "recorded_at": now_iso(),
    }
    if note is not None:
        row["note"] = note
    return row


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
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
