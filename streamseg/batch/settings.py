"""How a batch runs: its settings, and what passes between driver, engines and display.

* :class:`BatchSettings`: output root, optional outputs, retries, engine.
* :class:`Engine`: runs jobs and yields outcomes (in this process, in
  worker processes: :mod:`streamseg.batch.local`; on Ray:
  :mod:`streamseg.batch.ray`).
* :class:`BatchProgress`: what the driver reports while it works (the CLI
  draws it; tests record it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from streamseg.batch.summary import BatchOutputs

if TYPE_CHECKING:
    from streamseg.batch.jobs import VideoJob
    from streamseg.batch.video import Outcome


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


class Engine(Protocol):
    """Runs jobs and yields their outcomes as they finish (in any order)."""

    name: str

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...
