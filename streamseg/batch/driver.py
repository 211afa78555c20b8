"""The driver: decide what to do, hand it to an engine, record every outcome.

:func:`run_batch` skips videos whose outputs are complete and match the
model's sha256 and the config hash, retries failed ones while attempts
remain, hands the rest to an engine (in this process, ``workers``
processes, or Ray), appends each outcome to the run table, and stops
cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamseg.batch.jobs import RUN_TABLE, BatchError, VideoJob
from streamseg.batch.settings import BatchProgress, BatchSettings, Engine
from streamseg.batch.summary import config_sha256, is_complete, now_iso
from streamseg.batch.table import RunTable, exclusive, table_row
from streamseg.batch.video import batch_config, remove_stale_temps

if TYPE_CHECKING:
    from streamseg.app import StreamConfig


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
    from streamseg.model import file_sha256, read_spec

    start_s = time.perf_counter()
    if settings.outputs.tracks and not config.tracking.enabled:
        raise BatchError(
            "--tracks needs tracking; drop --tracks or set tracking.enabled=true"
        )
    out = Path(settings.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BatchError(
            f"{out}: cannot create the output folder ({error.strerror}); pick a "
            "writable --out"
        ) from error
    model_path = config.model.model_path()
    read_spec(model_path)  # a bad model file fails here, not once per video
    model_sha256 = file_sha256(model_path)
    config = batch_config(
        dataclasses.replace(
            config, model=dataclasses.replace(config.model, path=model_path)
        )
    )
    table = RunTable(out / RUN_TABLE)
    run_id = f"{now_iso()}-{uuid.uuid4().hex[:6]}"
    with exclusive(out):
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
                        table_row(
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
                    row = table_row(
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
                    remove_stale_temps(out / job.video_id)
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


def _make_engine(
    config: StreamConfig,
    settings: BatchSettings,
    model_sha256: str,
    progress: BatchProgress | None,
) -> Engine:
    if settings.ray is not None:
        from streamseg.batch.ray import RayEngine

        return RayEngine(config, settings, model_sha256)
    from streamseg.batch.local import InProcessEngine, ProcessEngine

    if (settings.workers or 1) > 1:
        return ProcessEngine(config, settings, model_sha256, progress)
    return InProcessEngine(config, settings, model_sha256, progress)


# --- local engines ---------------------------------------------------------------
