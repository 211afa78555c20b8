"""Archive jobs: many recorded videos -> the run pipeline each -> outputs, run table.

``streamseg batch INPUT --out OUT`` runs the same pipeline as ``streamseg run``
(same config, model file and smoothing) on every video of a folder (recursive),
a list file or a manifest, and keeps a run table. One module per job:

* :mod:`~streamseg.batch.jobs`: INPUT -> :class:`VideoJob` values (one per
  video; its output folder mirrors the input tree).
* :mod:`~streamseg.batch.summary`: the per-video summary, the config hash and
  the completion check.
* :mod:`~streamseg.batch.video`: :class:`VideoProcessor`, the stage that does
  one video with the model loaded once (temporary folder, ``summary.json``
  last, renamed into place: a folder at its final path is always complete).
* :mod:`~streamseg.batch.table`: ``OUT/runs.jsonl``, one line per attempt
  (the latest line of a video is its state), and the driver's lock.
* :mod:`~streamseg.batch.settings`: :class:`BatchSettings` and the engine
  and progress interfaces.
* :mod:`~streamseg.batch.driver`: :func:`run_batch`, which skips finished
  videos, retries failed ones, hands the rest to an engine and records every
  outcome.
* :mod:`~streamseg.batch.local` (this process, or ``workers`` processes) and
  :mod:`~streamseg.batch.ray` (Ray Data; imported only for ``--ray``): the
  engines.
* :mod:`~streamseg.batch.cli`: the command's arguments, progress and report.

The runtime never imports this package.

Layout under OUT, for an input ``INPUT/2024/p17.mp4``::

    OUT/runs.jsonl                 the run table (all runs, appended)
    OUT/2024/p17/events.jsonl      per-frame JSON lines (as streamseg run --events)
    OUT/2024/p17/summary.json      per-video summary; written last (the marker)
    OUT/2024/p17/annotated.mp4     with --video
    OUT/2024/p17/masks/            with --masks
    OUT/2024/p17/clips/            with --clips
"""

from streamseg.batch.driver import BatchReport, run_batch
from streamseg.batch.jobs import BatchError, VideoJob, plan_jobs
from streamseg.batch.settings import BatchSettings
from streamseg.batch.summary import (
    BatchOutputs,
    config_sha256,
    is_complete,
    summarize_events,
)
from streamseg.batch.table import RunTable
from streamseg.batch.video import Outcome, VideoProcessor

__all__ = [
    "BatchError",
    "BatchOutputs",
    "BatchReport",
    "BatchSettings",
    "Outcome",
    "RunTable",
    "VideoJob",
    "VideoProcessor",
    "config_sha256",
    "is_complete",
    "plan_jobs",
    "run_batch",
    "summarize_events",
]
