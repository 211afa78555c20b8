"""Poutyne callbacks: the best-model file, the resumable training state, LR schedules.

* :class:`SaveModelFile` writes a streamseg ``.safetensors`` model file each
  time validation Dice improves, so every checkpoint is directly usable by
  ``streamseg run``.
* :class:`TrainingStateCheckpoint` writes everything a killed run needs to go
  on exactly where it stopped (weights, optimizer, scheduler, gradient scaler,
  random generators, best score) after every epoch, atomically. It is our own
  file inside the run folder and never shipped; it is read back with
  ``torch.load(weights_only=True)``, so loading it cannot execute code.

Both inherit Poutyne's atomic write (temporary file + rename): a run killed
mid-save leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from poutyne import Callback, PeriodicSaveCallback

from streamseg.model import ModelSpec, load_model, save_model

log = logging.getLogger(__name__)

STATE_FORMAT = "streamseg-training-state/1"


def _literal(path: Path) -> str:
    # Poutyne formats the file name with the epoch logs; braces in a path are literal.
    return str(path).replace("{", "{{").replace("}", "}}")


class SaveModelFile(PeriodicSaveCallback):
    """Save the network as a streamseg model file whenever ``monitor`` improves.

    The spec's provenance records the checkpoint's epoch and score; the
    threshold stays at the spec's value (calibrated only after training).

    Args:
        path: The ``.safetensors`` file (overwritten at each improvement).
        spec: The model card written with the weights.
        monitor: Log key to maximize, e.g. ``"val_dice"``.
    """

    def __init__(
        self, path: str | Path, spec: ModelSpec, *, monitor: str = "val_dice"
    ) -> None:
        super().__init__(
            _literal(Path(path)), monitor=monitor, mode="max", save_best_only=True
        )
        self.path = Path(path)
        self.spec = spec
        self.best_epoch: int | None = None

    def save_file(self, fd: IO, epoch_number: int, logs: dict) -> None:
        provenance = dict(self.spec.provenance)
        provenance.update(
            checkpoint_epoch=str(epoch_number),
            **{f"checkpoint_{self.monitor}": f"{logs[self.monitor]:.4f}"},
        )
        spec = dataclasses.replace(self.spec, provenance=provenance)
        # Serialize through streamseg's save_model, the one definition of the
        # file format, then hand the bytes to Poutyne's atomic temporary file.
        with tempfile.TemporaryDirectory(dir=self.path.parent) as scratch:
            written = save_model(
                Path(scratch) / self.path.name, self.model.network, spec
            )
            fd.write(written.read_bytes())
        self.best_epoch = epoch_number
        log.info(
            "epoch %d: %s %.4f, saved %s",
            epoch_number,
            self.monitor,
            logs[self.monitor],
            self.path,
        )

    def restore(self, fd: IO) -> None:
        network, _ = load_model(fd.name)
        self.model.network.load_state_dict(network.state_dict())

    def resume_from(self, best_score: float, best_epoch: int | None) -> None:
        """Carry the interrupted run's best score: only a better epoch overwrites it."""
        self.current_best = best_score
        self.best_epoch = best_epoch
        self.best_filename = str(self.path) if best_epoch is not None else None


class EpochLRScheduler(Callback):
    """Step a ``torch.optim.lr_scheduler`` at the end of every epoch.

    Args:
        scheduler: A torch scheduler bound to the training optimizer.
        monitor: For ``ReduceLROnPlateau``, the log key it watches.
    """

    def __init__(self, scheduler: Any, monitor: str | None = None) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.monitor = monitor

    def on_epoch_end(self, epoch_number: int, logs: dict) -> None:
        if self.monitor is not None:
            self.scheduler.step(logs[self.monitor])
        else:
            self.scheduler.step()


class ReseedAugmentation(Callback):
    """Reseed the main process's copy of the augmentation at each epoch start.

    Workers reseed themselves from torch's worker seed (``seed_worker``); with
    ``num_workers=0`` the items are made here, and this makes every epoch's
    augmentation a function of (seed, epoch), so a resumed run repeats it.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.seed = seed

    def on_epoch_begin(self, epoch_number: int, logs: dict) -> None:
        self.dataset.reseed(self.seed * 1_000_003 + epoch_number)


@dataclasses.dataclass
class Stateful:
    """The live objects a training state is taken from and restored into."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    best: SaveModelFile
    scheduler: Any | None = None
    scaler: Any | None = None


class TrainingStateCheckpoint(PeriodicSaveCallback):
    """Write the full training state after every epoch (the last callback of an epoch).

    Args:
        path: The state file inside the run folder.
        stateful: Optimizer, loader generator, best-model callback, scheduler
            and gradient scaler to record.
    """

    def __init__(self, path: str | Path, stateful: Stateful) -> None:
        super().__init__(_literal(Path(path)), save_best_only=False)
        self.stateful = stateful

    def save_file(self, fd: IO, epoch_number: int, logs: dict) -> None:
        torch.save(capture_state(self.model.network, epoch_number, self.stateful), fd)

    def restore(self, fd: IO) -> None:  # pragma: no cover - restore_best is never used
        raise NotImplementedError("use load_training_state + apply_training_state")


def capture_state(
    network: torch.nn.Module, epoch: int, stateful: Stateful
) -> dict[str, Any]:
    """Everything needed to continue after ``epoch``, as tensors and plain values."""
    numpy_state = np.random.get_state()
    best = stateful.best
    return {
        "format": STATE_FORMAT,
        "epoch": int(epoch),
        "network": network.state_dict(),
        "optimizer": stateful.optimizer.state_dict(),
        "scheduler": stateful.scheduler.state_dict()
        if stateful.scheduler is not None
        else None,
        "scaler": stateful.scaler.state_dict() if stateful.scaler is not None else None,
        "best_score": float(best.current_best),
        "best_epoch": best.best_epoch,
        "rng": {
            "python": random.getstate(),
            "numpy": {
                "key": torch.from_numpy(numpy_state[1].astype(np.int64)),
                "pos": int(numpy_state[2]),
                "has_gauss": int(numpy_state[3]),
                "cached_gaussian": float(numpy_state[4]),
            },
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all()
            if torch.cuda.is_available()
            else None,
            "loader": stateful.generator.get_state(),
        },
    }


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a state file without unpickling arbitrary objects.

    Raises:
        RuntimeError: The file is unreadable or of another format.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        raise RuntimeError(
            f"{path}: unreadable training state ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); delete the run "
            "folder's "
            "state.pt to restart from scratch, or use another --run-dir"
        ) from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RuntimeError(
            f"{path}: not a {STATE_FORMAT} file; the run folder was written by "
            "something else"
        )
    return state


def apply_training_state(
    state: dict[str, Any], network: torch.nn.Module, stateful: Stateful
) -> int:
    """Restore a captured state into live objects; returns the next epoch to run."""
    network.load_state_dict(state["network"])
    stateful.optimizer.load_state_dict(state["optimizer"])
    if stateful.scheduler is not None and state["scheduler"] is not None:
        stateful.scheduler.load_state_dict(state["scheduler"])
    if stateful.scaler is not None and state["scaler"] is not None:
        stateful.scaler.load_state_dict(state["scaler"])
    stateful.best.resume_from(state["best_score"], state["best_epoch"])
    rng = state["rng"]
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = rng["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    stateful.generator.set_state(rng["loader"])
    return int(state["epoch"]) + 1
