"""What a finished video's folder holds and must match: the summary and the config hash.

* :func:`summarize_events`: the per-frame events -> per-video figures
  (episodes, time with a polyp on screen, max area).
* :func:`config_sha256`: the hash of every setting that changes what a
  video's outputs contain; a rerun redoes a video whose hash differs.
* :func:`is_complete`: whether a video folder is finished and matches.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamseg.config import to_dict

if TYPE_CHECKING:
    from streamseg.app import StreamConfig

SUMMARY_FORMAT = "streamseg-batch-summary/1"
# Settings that change where, how fast or how something is shown live, never
# what a video's output files contain. Every other setting enters the config
# hash, including any section or key a later version adds (a new setting
# redoes videos rather than silently reusing outputs made without it).
# tests/test_batch.py checks that each key named here is a real setting.
UNHASHED: Mapping[str, frozenset[str]] = {
    "source": frozenset(
        {
            "uri",  # the job's source enters the summary, not the hash
            "realtime",  # batch reads files as fast as it can
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
        }
    ),
    "model": frozenset(
        {
            "path",  # replaced by the file's sha256
            "device",
            "threads",
            "batch_size",
            "compile",
            "compile_mode",
            "cuda_graphs",
        }
    ),
    "output": frozenset(
        {
            "video",
            "events",
            "tracks",
            "masks",
            "view",
            "bind",
            "recordings",
            "video_queue",
        }
    ),
    "clips": frozenset({"folder"}),
    "alerts": frozenset({"sound"}),
}


@dataclass(frozen=True)
class BatchOutputs:
    """Which outputs every video gets besides events.jsonl and summary.json.

    Attributes:
        video: The annotated MP4 (``annotated.mp4``).
        masks: One mask PNG per frame (``masks/``).
        clips: Event clips with pre-roll (``clips/``).
        tracks: The polyp tracks (``tracks.json``, thumbnails beside it; needs
            ``tracking.enabled``), which ``streamseg report`` turns into a
            procedure report.
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
    tracks: bool = False
    episode_gap_s: float = 0.5
    keep_partial: bool = False

    def __post_init__(self) -> None:
        if self.episode_gap_s < 0:
            raise ValueError(f"episode_gap_s: expected >= 0, got {self.episode_gap_s}")


def config_sha256(config: StreamConfig, outputs: BatchOutputs) -> str:
    """Hex sha256 of every setting that changes a video's outputs.

    Every section of ``config`` enters except the keys in :data:`UNHASHED`
    (paths, the device, thread counts, batch size, compilation, timeouts:
    they change where or how fast, not what); the model file enters through
    its own sha256, recorded beside this hash. A section or key that a later
    streamseg version adds enters too, so such a version redoes finished
    videos. ``model.precision`` enters as configured: set it explicitly (not
    ``auto``) when reruns may land on different hardware and must not redo
    finished videos.
    """
    data = to_dict(config)
    for section, keys in UNHASHED.items():
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
        ``max_area_timestamp_s``, ``episode_count``, ``episodes`` (each:
        ``start_s``, ``end_s``, ``frames``, ``max_area_fraction``) and
        ``track_count`` (distinct polyp track ids shown, from the events'
        ``track_ids``; 0 when tracking is off).

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
    tracks: set[int] = set()
    for event in events:
        tracks.update(event.get("track_ids") or ())
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
            "track_count": 0,
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
        "track_count": len(tracks),
        "episodes": [
            {k: round(v, 6) if isinstance(v, float) else v for k, v in e.items()}
            for e in episodes
        ],
    }


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds (summaries, the run table)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds")
