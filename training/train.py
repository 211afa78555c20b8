"""train(config) -> TrainResult: spec, network, Poutyne fit, calibration, model file.

A run folder holds::

    config.yaml          the resolved recipe (the source of truth on --resume)
    splits/train.txt     the stems trained on (official train minus validation)
    splits/val.txt       the seeded validation carve-out
    log.csv              one row per finished epoch (Poutyne AtomicCSVLogger)
    best.safetensors     streamseg model file of the best validation Dice so far
    state.pt             resumable training state after the last finished epoch
    calibration.csv      validation Dice per candidate threshold
    model.safetensors    the final model: best weights, calibrated threshold, provenance
    summary.json         what the run did (epochs, scores, threshold, wall time)

A run killed at any point loses at most the epoch in progress: ``--resume``
restores weights, optimizer, scheduler, gradient scaler, every random
generator and the best score from ``state.pt`` and goes on with the next epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from poutyne import AtomicCSVLogger, Callback, ClipNorm, EpochProgressionCallback, Model
from torch import nn
from torch.utils.data import DataLoader

from streamseg.config import ConfigError, load_config, to_dict
from streamseg.device import (
    Precision,
    autocast,
    configure_backend,
    resolve_precision,
    select_device,
)
from streamseg.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelFileError,
    ModelSpec,
    build_network,
    file_sha256,
    load_model,
    read_spec,
    save_model,
)
from training.augment import train_augmentations
from training.callbacks import (
    BatchLRScheduler,
    EpochLRScheduler,
    EvaluateAveragedWeights,
    ReseedAugmentation,
    SaveModelFile,
    Stateful,
    TrainingStateCheckpoint,
    WeightAverage,
    apply_training_state,
    load_training_state,
    warmup_schedule,
)
from training.config import ModelConfig, TrainConfig, changed_keys, check_resumable
from training.data import (
    CachedImages,
    PolypDataset,
    PolypFolder,
    Splits,
    contents_sha256,
    prepare_splits,
    seed_worker,
)
from training.distill import TeacherMaps
from training.evaluate import iterate_predictions
from training.losses import DistillationLoss, build_loss
from training.metrics import PixelScore, best_threshold, dice_score, threshold_counts

log = logging.getLogger(__name__)

# Schedules stepped after every batch (the others step once per epoch).
BATCH_SCHEDULERS = ("warmup_cosine", "poly")


@dataclass(frozen=True)
class RunPaths:
    """The files of one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.csv"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    Attributes:
        run_dir: The run folder.
        model_path: The final model file.
        epochs: Epochs completed in total (over all resumes).
        resumed_from_epoch: Last epoch finished before this invocation (0 = fresh).
        best_epoch: Epoch whose weights are in the model file.
        best_val_dice_at_05: Validation Dice (micro, network input size,
            threshold 0.5) of that epoch, as monitored during training.
        threshold: Calibrated decision threshold.
        val_dice: Validation Dice at ``threshold`` (micro, full resolution).
        val_dice_at_05: Validation Dice at 0.5 (micro, full resolution).
        encoder_init: How the encoder was initialized.
        wall_s: Seconds this invocation took.
    """

    run_dir: Path
    model_path: Path
    epochs: int
    resumed_from_epoch: int
    best_epoch: int
    best_val_dice_at_05: float
    threshold: float
    val_dice: float
    val_dice_at_05: float
    encoder_init: str
    wall_s: float


def default_run_dir(config: TrainConfig, config_path: str | Path | None) -> Path:
    """``output.runs_dir / (output.name or the config file's stem)``."""
    name = config.output.name or (Path(config_path).stem if config_path else "run")
    return config.output.runs_dir / name


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train, keep the best epoch on validation, calibrate, write the model file.

    Args:
        config: The recipe (``data.root`` must be set).
        run_dir: The run folder (created if needed).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        resume: Continue the run in ``run_dir`` from its last finished epoch
            (starts fresh if the folder holds no training state yet).
        progress: Show Poutyne's per-epoch progress.

    Returns:
        The run's result; the model file is ``run_dir/model.safetensors``.

    Raises:
        ConfigError: Missing data root, a run folder that already holds a run
            (without ``resume``), or a resume with a changed recipe.
        DatasetError: Data folder or split problems.
        RuntimeError: Pretrained weights that cannot be fetched.
        ValueError: Unknown device or an unusable precision for it.
    """
    start = time.monotonic()
    run = RunPaths(Path(run_dir))
    if config.data.root is None:
        raise ConfigError(
            "data.root is not set; pass --data ROOT or set data.root in the config"
        )
    has_state = run.state.is_file()
    if has_state and not resume:
        raise ConfigError(
            f"{run.root} already holds a training run (state.pt); pass --resume to "
            "continue it, or choose another --run-dir"
        )
    if resume and has_state and run.config.is_file():
        saved = load_config(TrainConfig, run.config)
        check_resumable(saved, config)
        if (
            config.optimization.scheduler in ("cosine", "warmup_cosine", "poly")
            and saved.optimization.epochs != config.optimization.epochs
        ):
            raise ConfigError(
                "optimization.epochs: a cosine or poly schedule is fixed to the "
                f"epochs it started with ({saved.optimization.epochs}); resume with "
                "that value or start a new run"
            )
        for key in changed_keys(saved, config):
            log.info("resume: %s changed", key)

    torch_device = select_device(device)
    precision = resolve_precision(torch_device, config.optimization.precision)
    configure_backend(torch_device, threads=config.optimization.threads)
    folder = PolypFolder.open(config.data.root)
    run.root.mkdir(parents=True, exist_ok=True)
    splits = prepare_splits(folder, config.data, run.splits, reuse=resume and has_state)
    _write_yaml(run.config, to_dict(config))

    seed_everything(config.optimization.seed)
    spec, normalization_source = make_spec(config.model)
    network, encoder_init = build_training_network(spec, config.model.encoder_weights)
    parent = None
    if config.model.init_from is not None:
        copied = initialize_from(network, spec, config.model.init_from)
        encoder_init = f"{encoder_init}; {copied}"
        parent = parent_record(config.model.init_from)
    log.info(
        "%s/%s at %dx%d, encoder %s, normalization %s, device %s, precision %s",
        spec.architecture,
        spec.encoder_name,
        *spec.input_hw,
        encoder_init,
        normalization_source,
        torch_device,
        precision.name,
    )
    provenance = base_provenance(
        config, folder, splits, encoder_init, torch_device, precision
    )
    if parent is not None:
        provenance["init_from"] = parent
    spec = dataclasses.replace(spec, provenance=provenance)

    # OpenCV's thread pool does not survive fork(): a DataLoader worker forked after
    # the pool started can deadlock inside cv2. Decoding and augmenting one image
    # per worker needs no pool, so it is switched off before any worker exists.
    cv2.setNumThreads(0)
    augment = train_augmentations(config.augment, seed=config.optimization.seed)
    cache = None
    if config.data.cache_scale is not None:
        cache_hw = tuple(
            round(side * config.data.cache_scale) for side in spec.input_hw
        )
        cache = CachedImages.build(
            folder, splits.train, cache_hw, run.root.parent / ".cache"
        )
        log.info("training images cached at %dx%d (%s)", *cache_hw, cache.images_path)
    loss_function: nn.Module = build_loss(config.optimization)
    teacher = None
    if config.distill.teachers:
        assert cache is not None  # TrainConfig: teachers need data.cache_scale
        teacher = teacher_maps(config, cache, torch_device)
        loss_function = DistillationLoss(loss_function, config.distill.weight)
        spec = dataclasses.replace(
            spec,
            provenance={
                **spec.provenance,
                "distill": describe_distillation(config, teacher),
            },
        )
    train_set = PolypDataset(
        folder, splits.train, spec.input_hw, augment, cache=cache, teacher=teacher
    )
    val_set = PolypDataset(folder, splits.val, spec.input_hw)
    generator = torch.Generator().manual_seed(config.optimization.seed)
    loader_options: dict[str, Any] = {
        "batch_size": config.optimization.batch_size,
        "num_workers": config.data.num_workers,
        "worker_init_fn": seed_worker,
        "pin_memory": torch_device.type == "cuda",
    }
    train_loader = DataLoader(
        train_set, shuffle=True, generator=generator, **loader_options
    )
    # Validation draws its worker seeds from its own generator, so it never
    # perturbs the training stream (and needs no saving).
    val_loader = DataLoader(
        val_set,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
        **loader_options,
    )

    optimizer_class = (
        torch.optim.AdamW
        if config.optimization.optimizer == "adamw"
        else torch.optim.Adam
    )
    optimizer = optimizer_class(
        network.parameters(),
        lr=config.optimization.lr,
        weight_decay=config.optimization.weight_decay,
    )
    scheduler, monitor = make_scheduler(config, optimizer, len(train_loader))
    average = (
        WeightAverage(network, config.optimization.ema_decay)
        if config.optimization.ema_decay is not None
        else None
    )
    model = PrecisionModel(
        network,
        optimizer,
        loss_function,
        epoch_metrics=[("dice", PixelScore("dice")), ("iou", PixelScore("iou"))],
        device=torch_device,
        precision=precision,
        channels_last=config.optimization.channels_last,
        multiscale=config.augment.multiscale if config.augment.enabled else (),
    )
    save_best = SaveModelFile(run.best, spec, monitor="val_dice")
    stateful = Stateful(
        optimizer, generator, save_best, scheduler, model.scaler, average
    )

    initial_epoch = 1
    if resume and has_state:
        state = load_training_state(run.state)
        initial_epoch = apply_training_state(state, network, stateful)
        model.to(torch_device)  # optimizer state tensors follow the weights
        _truncate_log(run.log, initial_epoch - 1)
        log.info(
            "resuming after epoch %d (best val_dice %.4f at epoch %s)",
            initial_epoch - 1,
            save_best.current_best,
            save_best.best_epoch,
        )
    resumed_from = initial_epoch - 1

    callbacks: list[Callback] = [
        ReseedAugmentation(train_set, config.optimization.seed),
        AtomicCSVLogger(str(run.log), append=initial_epoch > 1 and run.log.is_file()),
    ]
    if config.optimization.grad_clip is not None:
        callbacks.append(ClipNorm(network.parameters(), config.optimization.grad_clip))
    callbacks.append(save_best)
    if average is not None:
        # After save_best: validation and the best-model file see the average.
        callbacks.append(EvaluateAveragedWeights(average))
    if scheduler is not None:
        callbacks.append(
            BatchLRScheduler(scheduler)
            if config.optimization.scheduler in BATCH_SCHEDULERS
            else EpochLRScheduler(scheduler, monitor)
        )
    # Last: the state must include this epoch's best score and scheduler step.
    callbacks.append(TrainingStateCheckpoint(run.state, stateful))

    # Live progress bars on a terminal; one plain line per epoch in a log file.
    live = progress and _is_terminal()
    if progress and not live:
        callbacks.insert(0, EpochProgressionCallback(coloring=False))
    if initial_epoch <= config.optimization.epochs:
        model.fit_generator(
            train_loader,
            val_loader,
            epochs=config.optimization.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=live,
        )
    else:
        log.info(
            "all %d epochs already done; recalibrating", config.optimization.epochs
        )
    if save_best.best_epoch is None or not run.best.is_file():
        raise RuntimeError(
            f"{run.best}: no best checkpoint was written; the run has no usable epoch"
        )

    best_network, best_spec = load_model(run.best, torch_device)
    best_val_dice_05 = float(save_best.current_best)
    threshold, val_dice, val_dice_05 = calibrate(
        best_network,
        best_spec,
        folder,
        splits.val,
        torch_device,
        precision,
        config,
        run.calibration,
    )
    # This invocation's provenance (config, revision) describes the whole run, even
    # when the best checkpoint was written before a resume.
    final_provenance = dict(spec.provenance)
    final_provenance.update(
        epochs=str(config.optimization.epochs),
        best_epoch=str(save_best.best_epoch),
        val_dice=f"{val_dice:.4f} (micro, full resolution, threshold {threshold:.2f}, "
        f"{len(splits.val)} validation images)",
        val_dice_at_0_5=f"{val_dice_05:.4f}",
        threshold_calibration=(
            f"best micro Dice over {len(config.calibration.thresholds)} thresholds "
            "on the validation split"
            if config.calibration.enabled
            else "disabled (0.5)"
        ),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    final_spec = dataclasses.replace(
        best_spec, threshold=threshold, provenance=final_provenance
    )
    dtype = torch.float16 if config.output.model_dtype == "float16" else torch.float32
    save_model(run.model, best_network, final_spec, dtype=dtype)

    result = TrainResult(
        run_dir=run.root,
        model_path=run.model,
        epochs=config.optimization.epochs,
        resumed_from_epoch=resumed_from,
        best_epoch=int(save_best.best_epoch),
        best_val_dice_at_05=best_val_dice_05,
        threshold=threshold,
        val_dice=val_dice,
        val_dice_at_05=val_dice_05,
        encoder_init=encoder_init,
        wall_s=time.monotonic() - start,
    )
    run.summary.write_text(
        json.dumps(
            {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(result).items()
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return result


class PrecisionModel(Model):
    """Poutyne ``Model`` with autocast, fp16 gradient scaling and channels_last inputs.

    Poutyne 1.19 has no mixed-precision switch, so this overrides its batch
    step (``_fit_batch``) and forward (``_compute_loss_and_metrics``); both
    are pinned by ``poutyne==1.19.0`` in pyproject.toml.

    Args:
        precision: Autocast dtype for forward passes (training and validation).
        channels_last: Move inputs (and the network) to NHWC.
        multiscale: Scale factors for training batches: each batch is resized
            (image bilinear, mask nearest) to one factor, drawn with torch's
            generator, times the batch's side, rounded to a multiple of 32.
            Empty = off; validation batches are never rescaled.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: nn.Module,
        *,
        epoch_metrics: list,
        device: torch.device,
        precision: Precision,
        channels_last: bool = False,
        multiscale: tuple[float, ...] = (),
    ) -> None:
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        super().__init__(
            network,
            optimizer,
            loss_function,
            epoch_metrics=epoch_metrics,
            device=device,
        )
        self.precision = precision
        self.channels_last = channels_last
        self.multiscale = tuple(multiscale)
        # fp16 gradients underflow without scaling; bf16 has fp32's range: no need.
        self.scaler = (
            torch.amp.GradScaler(device.type)
            if precision.dtype == torch.float16
            else None
        )

    def preprocess_input(self, x, y=None):
        if y is None:
            return self._memory_format(super().preprocess_input(x))
        x, y = super().preprocess_input(x, y)
        return self._memory_format(x), y

    def _memory_format(self, inputs: tuple) -> tuple:
        if not self.channels_last:
            return inputs
        return tuple(
            t.contiguous(memory_format=torch.channels_last)
            if isinstance(t, torch.Tensor) and t.ndim == 4
            else t
            for t in inputs
        )

    def _compute_loss_and_metrics(self, x, y, **kwargs):
        with autocast(self.device, self.precision):
            return super()._compute_loss_and_metrics(x, y, **kwargs)

    def _rescale(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One multiscale draw for a training batch: (N, 3, H, W) and (N, C, H, W).

        The target's first channel (the label) is resized nearest, a second
        (the teachers' probability, when distilling) bilinearly.
        """
        factor = self.multiscale[int(torch.randint(len(self.multiscale), (1,)).item())]
        size = tuple(max(32, round(side * factor / 32) * 32) for side in x.shape[-2:])
        if size == tuple(x.shape[-2:]):
            return x, y
        x = nn.functional.interpolate(
            x, size=size, mode="bilinear", align_corners=False
        )
        label = nn.functional.interpolate(y[:, :1], size=size, mode="nearest-exact")
        if y.shape[1] == 1:
            return x, label
        soft = nn.functional.interpolate(
            y[:, 1:], size=size, mode="bilinear", align_corners=False
        )
        return x, torch.cat([label, soft], dim=1)

    def _fit_batch(
        self,
        x,
        y,
        *,
        callback=None,
        step=None,
        return_pred=False,
        convert_to_numpy=True,
    ):
        if self.multiscale:
            x, y = self._rescale(x, y)
        if self.scaler is None:
            return super()._fit_batch(
                x,
                y,
                callback=callback,
                step=step,
                return_pred=return_pred,
                convert_to_numpy=convert_to_numpy,
            )
        callback = callback if callback is not None else Callback()
        self.optimizer.zero_grad()
        loss_tensor, batch_metrics, pred_y = self._compute_loss_and_metrics(
            x,
            y,
            return_loss_tensor=True,
            return_pred=return_pred,
            convert_to_numpy=convert_to_numpy,
        )
        self.scaler.scale(loss_tensor).backward()
        # Gradient clipping (a callback) must see true, unscaled gradients.
        self.scaler.unscale_(self.optimizer)
        callback.on_backward_end(step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss_tensor.detach()), batch_metrics, pred_y


def teacher_maps(
    config: TrainConfig, cache: CachedImages, device: torch.device
) -> TeacherMaps:
    """The distillation teachers' maps of the run's image cache (computed once).

    ``TrainConfig`` guarantees the cache: teachers need ``data.cache_scale``.
    """
    teacher = TeacherMaps.build(
        cache,
        config.distill.teachers,
        tta=config.distill.tta,
        device=device,
        batch_size=config.optimization.batch_size,
    )
    log.info(
        "teachers' maps: %s (micro Dice against the labels at 0.5: %.4f)",
        teacher.path,
        teacher.dice_against(cache.masks),
    )
    return teacher


def describe_distillation(config: TrainConfig, teacher: TeacherMaps) -> str:
    """The model file's ``distill`` provenance entry."""
    return (
        f"weight {config.distill.weight}, teacher TTA {config.distill.tta}, "
        "teachers (file sha256): " + "; ".join(teacher.teachers)
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def normalization_for(
    model: ModelConfig,
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """RGB mean/std for the encoder: the config's, smp's, timm's, or ImageNet's.

    smp 0.6's ``get_preprocessing_params`` reads a config from the weight hub,
    so it is asked only when ImageNet weights are requested (the hub is needed
    then anyway). Otherwise the answer comes from code only, so a run's
    normalization never depends on network access: timm's pretrained config
    for ``timm-``/``tu-`` encoders (0.5/0.5 for the TF EfficientNet-Lite ports),
    ImageNet statistics for the rest.

    Returns:
        (mean, std, where they came from).
    """
    if model.mean is not None and model.std is not None:
        return tuple(model.mean), tuple(model.std), "from the config"
    if model.encoder_weights == "lite-imagenet":
        pretrained = _pretrained_module()
        try:
            mean, std = pretrained.preprocessing_for(model.encoder_name)
        except ValueError as error:
            raise ConfigError(
                f"model.encoder_weights=lite-imagenet: {error}"
            ) from error
        return tuple(mean), tuple(std), "EfficientNet-Lite (TF) preprocessing"
    if model.encoder_weights == "imagenet":
        ensure_hub_weights(model.encoder_name)  # fail fast, before smp's retries
        try:
            from segmentation_models_pytorch.encoders import get_preprocessing_params

            params = get_preprocessing_params(model.encoder_name)
            return (
                tuple(params["mean"]),
                tuple(params["std"]),
                "smp preprocessing params",
            )
        except (
            Exception
        ) as error:  # hub unreachable: building will fail with a clear message
            log.debug(
                "get_preprocessing_params(%s) failed: %s", model.encoder_name, error
            )
    for prefix in ("timm-", "tu-"):
        if model.encoder_name.startswith(prefix):
            try:
                import timm

                cfg = timm.models.get_pretrained_cfg(model.encoder_name[len(prefix) :])
            except Exception:  # not a timm model name: fall through to ImageNet
                cfg = None
            if (
                cfg is not None
                and getattr(cfg, "mean", None)
                and getattr(cfg, "std", None)
            ):
                return tuple(cfg.mean), tuple(cfg.std), "timm pretrained config"
    return IMAGENET_MEAN, IMAGENET_STD, "ImageNet statistics"


def make_spec(model: ModelConfig) -> tuple[ModelSpec, str]:
    """The model card for a config (threshold 0.5 until calibration)."""
    mean, std, source = normalization_for(model)
    spec = ModelSpec(
        architecture=model.architecture,
        encoder_name=model.encoder_name,
        input_hw=tuple(model.input_hw),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        threshold=0.5,
        class_name=model.class_name,
        model_kwargs=dict(model.model_kwargs),
    )
    return spec, source


def build_training_network(
    spec: ModelSpec, encoder_weights: str | None
) -> tuple[nn.Module, str]:
    """Build the network and initialize its encoder as configured.

    Returns:
        (network, a sentence saying how the encoder was initialized).

    Raises:
        ConfigError: Unknown architecture/encoder or bad model_kwargs.
        RuntimeError: ImageNet weights not reachable (fails fast: a cache and
            hub check precede the download), or the lite initializer is missing.
    """
    if encoder_weights == "imagenet":
        ensure_hub_weights(spec.encoder_name)
    try:
        network = build_network(
            spec, encoder_weights="imagenet" if encoder_weights == "imagenet" else None
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {error}") from error
    if encoder_weights is None:
        return network, "random (no pretrained weights)"
    if encoder_weights == "imagenet":
        return network, "imagenet (segmentation_models_pytorch hub)"
    pretrained = _pretrained_module()
    try:
        return network, str(pretrained.initialize_encoder(network, spec.encoder_name))
    except ValueError as error:
        raise ConfigError(f"model.encoder_weights=lite-imagenet: {error}") from error
    except ImportError as error:
        raise RuntimeError(f"model.encoder_weights=lite-imagenet: {error}") from error


def initialize_from(network: nn.Module, spec: ModelSpec, path: str | Path) -> str:
    """Copy every tensor of a trained model file whose name and shape match.

    The rest of ``network`` keeps its initialization (e.g. a new decoder over
    the copied encoder). The file's normalization must be the run's: the
    copied layers learnt to read images normalized that way.

    Returns:
        A sentence for the provenance: what was copied from which file (sha256).

    Raises:
        ConfigError: Unreadable file, another normalization, or an encoder
            that does not fit whole.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model.init_from: no such model file {path} (a relative path is read "
            "from the folder the command runs in); give an existing .safetensors"
        )
    try:
        source, source_spec = load_model(path)
    except ModelFileError as error:
        raise ConfigError(f"model.init_from: {error}") from error
    if not (
        np.allclose(source_spec.mean, spec.mean, atol=1e-6)
        and np.allclose(source_spec.std, spec.std, atol=1e-6)
    ):
        raise ConfigError(
            f"model.init_from: {path} normalizes with mean {list(source_spec.mean)} "
            f"std {list(source_spec.std)}, this run with mean {list(spec.mean)} "
            f"std {list(spec.std)}; set model.mean and model.std to the file's"
        )
    target = network.state_dict()
    copied = {
        name: tensor
        for name, tensor in source.state_dict().items()
        if name in target and target[name].shape == tensor.shape
    }
    encoder = [name for name in target if name.startswith("segmentation.encoder.")]
    if source_spec.encoder_name != spec.encoder_name or not all(
        name in copied for name in encoder
    ):
        raise ConfigError(
            f"model.init_from: the encoder of {path} ({source_spec.architecture}/"
            f"{source_spec.encoder_name}) does not fit {spec.architecture}/"
            f"{spec.encoder_name}; give a model file with the same encoder"
        )
    network.load_state_dict(copied, strict=False)
    parameters = dict(network.named_parameters())
    copied_params = sum(parameters[n].numel() for n in copied if n in parameters)
    total_params = sum(p.numel() for p in parameters.values())
    sentence = (
        f"{len(copied)} of {len(target)} tensors ({copied_params / total_params:.0%} "
        f"of the parameters) from {path.name} ({source_spec.architecture}/"
        f"{source_spec.encoder_name}, sha256 {file_sha256(path)[:16]})"
    )
    log.info("initialized %s", sentence)
    return sentence


def parent_record(path: str | Path) -> str:
    """The ``init_from`` provenance entry of a run started from the model file ``path``.

    JSON with the file's name, its full sha256 and its own provenance (which
    holds its recipe, and its own ``init_from`` if it had one), so a model file
    carries its whole lineage: ``streamseg info`` shows it, and the recipe of
    every stage can be checked against the configs.
    """
    path = Path(path)
    return json.dumps(
        {
            "file": path.name,
            "sha256": file_sha256(path),
            "provenance": dict(read_spec(path).provenance),
        },
        sort_keys=True,
    )


def _pretrained_module() -> Any:
    """``training.pretrained``, imported only when lite-imagenet weights are wanted."""
    try:
        from training import pretrained
    except ImportError as error:
        raise RuntimeError(
            "model.encoder_weights=lite-imagenet needs training/pretrained.py "
            f"({error}); use null (random init) or imagenet instead"
        ) from error
    return pretrained


def ensure_hub_weights(encoder_name: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after a minute of retries, when ImageNet weights are absent.

    Passes when the weights are in the local Hugging Face cache or the hub
    answers within ``timeout_s``; otherwise raises with the fix.

    Raises:
        RuntimeError: Offline (or HF_HUB_OFFLINE=1) and not cached.
    """
    try:
        from huggingface_hub import try_to_load_from_cache
        from segmentation_models_pytorch.encoders import encoders
    except ImportError:  # pragma: no cover - both come with smp
        return
    settings = (
        encoders.get(encoder_name, {}).get("pretrained_settings", {}).get("imagenet")
    )
    if settings is None:
        return  # tu-/unknown encoders: build_network reports the problem itself
    cached = try_to_load_from_cache(
        settings["repo_id"], "model.safetensors", revision=settings["revision"]
    )
    if isinstance(cached, str):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        host = (
            (os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
            .split("//")[-1]
            .split("/")[0]
        )
        try:
            socket.create_connection(
                (host.split(":")[0], 443), timeout=timeout_s
            ).close()
            return
        except OSError:
            pass
    hub = "disabled (HF_HUB_OFFLINE=1)" if offline else "unreachable"
    raise RuntimeError(
        f"model.encoder_weights=imagenet: the ImageNet weights for {encoder_name!r} "
        f"are not in the local Hugging Face cache and the hub is {hub}; "
        "train from scratch with --set model.encoder_weights=null, use "
        "model.encoder_weights=lite-imagenet with a tu-tf_efficientnet_lite* encoder, "
        "or "
        "run once where huggingface.co is reachable to fill the cache"
    )


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1
) -> tuple[Any | None, str | None]:
    """(torch scheduler or None, the log key a plateau scheduler watches).

    ``warmup_cosine`` and ``poly`` count optimizer steps (``steps_per_epoch``
    batches per epoch) and are stepped after every batch.
    """
    kind = config.optimization.scheduler
    opt = config.optimization
    if kind in BATCH_SCHEDULERS:
        factor = warmup_schedule(
            opt.epochs * steps_per_epoch,
            round(opt.warmup_epochs * steps_per_epoch),
            "cosine" if kind == "warmup_cosine" else "poly",
            min_fraction=opt.min_lr_fraction,
            power=opt.poly_power,
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.optimization.epochs
        ), None
    if kind == "plateau":
        return (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=0.5,
                patience=config.optimization.plateau_patience,
            ),
            "val_dice",
        )
    return None, None


def calibrate(
    network: nn.Module,
    spec: ModelSpec,
    folder: PolypFolder,
    stems: list[str],
    device: torch.device,
    precision: Precision,
    config: TrainConfig,
    table_path: Path,
) -> tuple[float, float, float]:
    """Pick the threshold with the best micro Dice on validation, at full resolution.

    Uses the evaluation path (the runtime's own), so the threshold is chosen
    for exactly the probabilities the deployed model will produce.

    Returns:
        (threshold, Dice at it, Dice at 0.5), micro over the validation pixels.
    """
    thresholds = sorted(set(config.calibration.thresholds) | {0.5})
    counts = np.zeros((len(thresholds), 4), np.int64)
    for _, _, mask, probabilities in iterate_predictions(
        network, spec, folder, stems, device, precision
    ):
        truth = torch.from_numpy(mask).to(probabilities.device).bool()
        counts += threshold_counts(probabilities, truth, thresholds)
    dice = dice_score(counts[:, 0], counts[:, 1], counts[:, 2])
    dice_at = {t: float(dice[i]) for i, t in enumerate(thresholds)}
    candidates = [t for t in thresholds if t in set(config.calibration.thresholds)]
    if config.calibration.enabled:
        index = [thresholds.index(t) for t in candidates]
        threshold, chosen_dice = best_threshold(counts[index], candidates)
    else:
        threshold, chosen_dice = 0.5, dice_at[0.5]
    with open(table_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["threshold", "val_dice_micro", "tp", "fp", "fn", "tn", "chosen"]
        )
        for i, t in enumerate(thresholds):
            writer.writerow(
                [
                    f"{t:.2f}",
                    f"{dice_at[t]:.6f}",
                    *counts[i].tolist(),
                    int(t == threshold),
                ]
            )
    log.info(
        "threshold %.2f: validation Dice %.4f (at 0.5: %.4f)",
        threshold,
        chosen_dice,
        dice_at[0.5],
    )
    return threshold, chosen_dice, dice_at[0.5]


def base_provenance(
    config: TrainConfig,
    folder: PolypFolder,
    splits: Splits,
    encoder_init: str,
    device: torch.device,
    precision: Precision,
) -> dict[str, str]:
    """The provenance strings every model file of this run carries."""
    import poutyne
    import segmentation_models_pytorch as smp

    return {
        "dataset": _describe_dataset(folder, splits, config),
        "train_split": _describe_split(splits.train_file, len(splits.train)),
        "val_split": _describe_split(splits.val_file, len(splits.val)),
        "split_source": (
            f"{config.data.train_split} of the dataset; validation carved with seed "
            f"{config.data.split_seed}, fraction {config.data.val_fraction}"
        ),
        "encoder_init": encoder_init,
        "loss": config.optimization.loss,
        "optimizer": _describe_optimizer(config),
        "training_device": f"{device} ({precision.name})",
        "git_revision": git_revision(),
        "software": f"torch {torch.__version__}, smp {smp.__version__}, "
        f"poutyne {poutyne.__version__}",
        "config": json.dumps(portable_config(to_dict(config)), sort_keys=True),
    }


# Where a run read and wrote its files and how many loader processes it used:
# settings of one machine, left out of the model file's record (the run folder's
# config.yaml keeps them for --resume).
MACHINE_SETTINGS = (("data", "root"), ("data", "num_workers"), ("output", "runs_dir"))


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config as a model file records it: no paths of the training machine.

    Drops :data:`MACHINE_SETTINGS` and shortens any other absolute path (an
    ``init_from`` or a teacher given as one) to its file name; relative paths,
    such as the bundled model's, stay as they are. The model file's
    ``init_from`` provenance names the parent file by its sha256 either way.
    """
    portable = json.loads(json.dumps(config, default=str))
    for section, key in MACHINE_SETTINGS:
        portable.get(section, {}).pop(key, None)

    def shorten(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: shorten(item) for key, item in value.items()}
        if isinstance(value, list):
            return [shorten(item) for item in value]
        if isinstance(value, str) and Path(value).is_absolute():
            return Path(value).name
        return value

    return shorten(portable)


def _describe_dataset(folder: PolypFolder, splits: Splits, config: TrainConfig) -> str:
    """The dataset by folder name and the contents of the files the run learned from."""
    stems = sorted(set(splits.train) | set(splits.val))
    digest = contents_sha256(folder, stems)[:16]
    return (
        f"{folder.root.resolve().name}: the {len(stems)} images and masks of "
        f"{config.data.train_split}, contents sha256 {digest}"
    )


def _describe_optimizer(config: TrainConfig) -> str:
    opt = config.optimization
    name = "AdamW" if opt.optimizer == "adamw" else "Adam"
    parts = [
        f"{name} lr {opt.lr:g}",
        f"batch {opt.batch_size}",
        f"scheduler {opt.scheduler}",
    ]
    if opt.scheduler in BATCH_SCHEDULERS:
        parts.append(f"warm-up {opt.warmup_epochs:g} epochs")
    if opt.weight_decay:
        parts.append(f"weight decay {opt.weight_decay:g}")
    if opt.grad_clip is not None:
        parts.append(f"gradient norm clipped at {opt.grad_clip:g}")
    if opt.ema_decay is not None:
        parts.append(f"weights: EMA, decay {opt.ema_decay:g}")
    return ", ".join(parts)


def git_revision() -> str:
    """``git rev-parse HEAD`` of this checkout (+ "-dirty" with uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head}-dirty" if dirty else head


def _describe_split(path: Path, count: int) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.name}: {count} stems, sha256 {digest}"


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(temporary, path)


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Drop log rows after ``last_epoch`` (logged, but killed before the state save)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
        fields = list(rows[0].keys()) if rows else None
    kept = [row for row in rows if int(float(row["epoch"])) <= last_epoch]
    if fields is None or len(kept) == len(rows):
        return
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(temporary, path)
    log.info(
        "log.csv: dropped %d row(s) of the unfinished epoch", len(rows) - len(kept)
    )


def _is_terminal() -> bool:
    import sys

    return sys.stdout.isatty()
