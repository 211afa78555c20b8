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
    average: WeightAverage | None = None


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
        "average": stateful.average.state_dict()
        if stateful.average is not None
        else None,
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
    if stateful.average is not None:
        if state.get("average") is None:
            raise RuntimeError(
                "the training state holds no weight average, but "
                "optimization.ema_decay is set; resume with the run's own config.yaml"
            )
        stateful.average.load_state_dict(state["average"])
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


class WeightAverage:
    """Exponential moving average of a network's floating-point state.

    Averages every floating-point entry of ``state_dict()`` (weights and
    BatchNorm running statistics); integer entries (``num_batches_tracked``)
    are copied. The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over
    the first updates (as in TensorFlow's and timm's EMA), so early averages
    are not dominated by the random start.

    Args:
        network: The trained network (its state is read, never written, by
            :meth:`update`).
        decay: Weight of the old average per update, in (0, 1).
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: expected a value in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: value.detach().clone() for name, value in network.state_dict().items()
        }

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        """Fold the network's current state into the average."""
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for name, value in network.state_dict().items():
            average = self.shadow[name]
            if average.is_floating_point():
                average.lerp_(value.detach().to(average.dtype), 1.0 - decay)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


class EvaluateAveragedWeights(Callback):
    """Update a :class:`WeightAverage` after every batch; validate and save with it.

    At validation start the network's own state is set aside and the average
    loaded, so validation Dice, the best-model file (:class:`SaveModelFile`,
    which must come before this callback in the list) and therefore the
    shipped model all use the averaged weights; at epoch end the trained state
    is put back before the training state is captured.
    """

    def __init__(self, average: WeightAverage) -> None:
        super().__init__()
        self.average = average
        self._trained: dict[str, torch.Tensor] | None = None

    def on_train_batch_end(self, batch_number: int, logs: dict) -> None:
        self.average.update(self.model.network)

    def on_valid_begin(self, logs: dict) -> None:
        network = self.model.network
        self._trained = {
            name: value.detach().clone() for name, value in network.state_dict().items()
        }
        network.load_state_dict(self.average.shadow)

    def on_epoch_end(self, epoch_number: int, logs: dict) -> None:
        if self._trained is not None:
            self.model.network.load_state_dict(self._trained)
            self._trained = None


class BatchLRScheduler(Callback):
    """Step a ``torch.optim.lr_scheduler`` after every training batch.

    For schedules defined over optimizer steps (warm-up + cosine, poly).
    """

    def __init__(self, scheduler: Any) -> None:
        super().__init__()
        self.scheduler = scheduler

    def on_train_batch_end(self, batch_number: int, logs: dict) -> None:
        self.scheduler.step()


def warmup_schedule(
    total_steps: int,
    warmup_steps: int,
    kind: str,
    *,
    min_fraction: float = 0.0,
    power: float = 0.9,
) -> Any:
    """The learning-rate multiplier per optimizer step, for ``LambdaLR``.

    Linear warm-up from ``1 / warmup_steps`` to 1 over ``warmup_steps``, then
    ``cosine`` from 1 to ``min_fraction`` or ``poly`` ``(1 - t) ** power``
    (floored at ``min_fraction``) over the remaining steps.

    Example:
        >>> f = warmup_schedule(10, 2, "cosine")
        >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    import math

    if kind not in ("cosine", "poly"):
        raise ValueError(f"kind: expected 'cosine' or 'poly', got {kind!r}")
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / decay_steps)
        if kind == "cosine":
            return min_fraction + (1.0 - min_fraction) * 0.5 * (
                1.0 + math.cos(math.pi * t)
            )
        return max(min_fraction, (1.0 - t) ** power)

    return factor
