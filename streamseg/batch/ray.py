"""The Ray engine of ``streamseg batch``: Ray Data over the jobs, one row = one video.

Imported only for ``--ray`` (Ray is the optional ``cluster`` extra:
``pip install 'streamseg[cluster]'``). What Ray already does is left to Ray:

* scheduling: a fixed-size actor pool (``ActorPoolStrategy``), one actor per
  GPU (``num_gpus=1``; Ray sets ``CUDA_VISIBLE_DEVICES``), each holding the
  model loaded once (:class:`~streamseg.batch.video.VideoProcessor`);
* restarts and retries: an actor that dies (a crashed decoder, a node lost)
  is restarted and its video retried by Ray Data (``max_restarts=-1``,
  ``max_task_retries=retries``); a video whose retries run out is dropped by
  Ray Data (``max_errored_blocks=-1``) and recorded by the driver as failed;
* progress: Ray Data's own progress bars.

What is ours: one row per video in, one :class:`~streamseg.batch.video.Outcome` per
video out, streamed back to the driver, which alone writes the run table.
Outputs are written by the actors straight to the output root, which must be
storage every node mounts at the same path (see docs/scale.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamseg.batch.jobs import BatchError, VideoJob
from streamseg.batch.settings import BatchSettings
from streamseg.batch.summary import BatchOutputs
from streamseg.batch.video import Outcome, VideoProcessor

if TYPE_CHECKING:
    from streamseg.app import StreamConfig

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'streamseg[cluster]'"


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise BatchError(
            f"--ray needs Ray Data, which is not installed ({error}); {INSTALL_HINT} "
            "on the driver and on every node"
        ) from error
    return ray


class VideoActor:
    """The Ray Data map class: loads the model once, then one video per call.

    Args:
        config: The stream config (``model.device`` as configured; on a GPU
            actor ``auto`` resolves to the GPU Ray assigned).
        out: Output root, as every node mounts it.
        outputs: Optional outputs.
        model_sha256: The model file's sha256.
        threads: torch CPU threads when ``model.threads`` is not set (the
            CPUs the actor reserved).
    """

    def __init__(
        self,
        config: StreamConfig,
        out: str,
        outputs: BatchOutputs,
        model_sha256: str,
        threads: int,
    ) -> None:
        if config.model.threads is None:
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, threads=threads)
            )
        self.processor = VideoProcessor(config, Path(out), outputs, model_sha256)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = []
        for text in batch["job"]:
            job = VideoJob(**json.loads(str(text)))
            outcomes.append(json.dumps(self.processor(job).to_dict()))
        return {"outcome": np.array(outcomes, dtype=object)}


class RayEngine:
    """Run jobs on a Ray cluster with Ray Data (see the module docstring).

    Args:
        config: The stream config (``model.path`` resolved).
        settings: ``settings.ray`` is ``"auto"`` (the cluster this machine
            belongs to, or a new local one) or a cluster address;
            ``settings.workers`` the actor count (default: the cluster's
            GPUs, or 1 on a cluster without GPUs).
        model_sha256: The model file's sha256.
    """

    name = "ray"

    def __init__(
        self, config: StreamConfig, settings: BatchSettings, model_sha256: str
    ) -> None:
        ray = _import_ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            address = None if settings.ray == "auto" else settings.ray
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise BatchError(
                    f"--ray {settings.ray}: cannot connect to the Ray cluster "
                    f"({' '.join(str(error).split())}); start it with ray start "
                    "--head, or pass --ray auto for a local one"
                ) from error
            self._started = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        wants_gpu = config.model.device in ("auto", "cuda") and gpus > 0
        if config.model.device.startswith("cuda") and gpus == 0:
            raise BatchError(
                f"model.device {config.model.device}: the Ray cluster has no GPUs; "
                "add GPU workers or pass --device cpu"
            )
        self._actors = settings.workers or (gpus if wants_gpu else 1)
        self._num_gpus = 1 if wants_gpu or config.model.device.startswith("cuda") else 0
        self._num_cpus = settings.ray_cpus_per_worker
        if config.model.device.startswith("cuda:"):
            # Ray hands each actor its own GPU; inside the actor it is cuda:0.
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, device="cuda")
            )
        self._retries = settings.retries
        self._constructor = {
            "config": config,
            "out": str(Path(settings.out).resolve()),
            "outputs": settings.outputs,
            "model_sha256": model_sha256,
            "threads": max(1, int(self._num_cpus)),
        }
        log.info(
            "Ray: %d actors (%s GPU, %g CPU each) on a cluster with %s",
            self._actors,
            self._num_gpus,
            self._num_cpus,
            {k: v for k, v in resources.items() if k in ("CPU", "GPU")},
        )

    def execute(self, jobs: Sequence[VideoJob]) -> Iterator[Outcome]:
        import ray.data

        context = ray.data.DataContext.get_current()
        previous = context.max_errored_blocks
        # A video whose actor keeps dying (after Ray's retries) must not stop
        # the job: its row is dropped here and reported as failed below.
        context.max_errored_blocks = -1
        try:
            items = [{"job": json.dumps(dataclasses.asdict(job))} for job in jobs]
            dataset = ray.data.from_items(items, override_num_blocks=len(items))
            with warnings.catch_warnings():
                # Ray 2.60 deprecates passing actor options such as
                # max_task_retries here (removal announced for 2.64, hence the
                # pin in pyproject.toml) without a named replacement yet; the
                # default would retry a video that kills its actor forever.
                warnings.filterwarnings("ignore", message=".*ray_remote_args")
                results = dataset.map_batches(
                    VideoActor,
                    fn_constructor_kwargs=self._constructor,
                    batch_size=1,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=self._actors),
                    num_gpus=self._num_gpus,
                    num_cpus=self._num_cpus,
                    max_restarts=-1,
                    max_task_retries=self._retries,
                )
            seen: set[str] = set()
            for row in results.iter_rows():
                outcome = Outcome.from_dict(json.loads(str(row["outcome"])))
                seen.add(outcome.video_id)
                yield outcome
        finally:
            context.max_errored_blocks = previous
        for job in jobs:
            if job.video_id not in seen:
                yield Outcome(
                    job.video_id,
                    "failed",
                    error=f"the Ray worker processing it died {1 + self._retries} "
                    "times (a crash in decoding or out of memory); see the Ray logs",
                    error_kind="worker",
                )

    def stop(self) -> None:
        pass  # leaving execute() shuts the Ray Data pipeline and its actors down

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
